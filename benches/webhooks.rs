//! Webhook delivery throughput and latency, on SQLite and on Postgres.
//!
//! `cargo bench --features sandbox --bench webhooks` prints, for each
//! database (`BENCH_DB=sqlite|postgres` picks one):
//! - throughput: events recorded as fast as one writer can, deliveries per
//!   second from the first commit to the last receipt (1 tenant; 20);
//! - latency: commit-to-receipt p50/p99 at a steady 100 events/s over 20
//!   tenants, alone and beside one tenant whose receiver takes 2 s per
//!   request (a slow tenant must not delay the others).
//!
//! The receiver runs in this process on loopback. Postgres is reached at
//! WAGO_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres);
//! the bench makes and drops its own database there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use tokio_util::sync::CancellationToken;
use wago::app::App;
use wago::events::Event;
use wago::store::tenants::NewKey;
use wago::store::webhooks::SecretUpdate;
use wago::tenants::{ApiKey, KeySource, TenantId, TenantName};

#[path = "support_db/mod.rs"]
mod support_db;

type Arrivals = Arc<Mutex<HashMap<(String, i64), Instant>>>;

#[tokio::main]
async fn main() {
    support_db::init_tracing();
    let receiver = start_receiver().await;
    support_db::each_database(|label, dsn| {
        let receiver = &receiver;
        async move { run_all(label, &dsn, receiver).await }
    })
    .await;
}

struct Receiver {
    base: String,
    arrivals: Arrivals,
}

async fn start_receiver() -> Receiver {
    let arrivals: Arrivals = Default::default();
    let app = axum::Router::new()
        .route("/{speed}", axum::routing::post(receive))
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { base, arrivals }
}

async fn receive(
    State(arrivals): State<Arrivals>,
    Path(speed): Path<String>,
    body: Bytes,
) -> &'static str {
    let at = Instant::now();
    if speed == "slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let key = (
        v["tenant"].as_str().unwrap_or_default().to_owned(),
        v["sequence"].as_i64().unwrap_or(0),
    );
    arrivals.lock().expect("lock").insert(key, at);
    "ok"
}

async fn run_all(db: &str, dsn: &str, receiver: &Receiver) {
    let config = support_db::webhook_config(dsn);
    let app = App::build(&config).await.expect("app");
    let store = app.store().clone();
    let waker = app.webhook_waker();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));

    let mut n = 0;
    let mut tenants = |count: usize, speed: &'static str| {
        let names: Vec<String> = (0..count)
            .map(|_| {
                n += 1;
                format!("{speed}{n}")
            })
            .collect();
        let store = store.clone();
        let base = receiver.base.clone();
        async move {
            let mut ids = Vec::new();
            for name in names {
                let key = NewKey::for_key(&ApiKey::generate(), KeySource::Admin);
                let t = store
                    .create_tenant(&TenantName::parse(&name).unwrap(), None, &key)
                    .await
                    .expect("tenant");
                let id = t.tenant_id();
                let events = vec!["message.received".to_owned()];
                store
                    .put_webhook(
                        &id,
                        &format!("{base}/{speed}"),
                        SecretUpdate::Set("s"),
                        &events,
                        false,
                    )
                    .await
                    .expect("hook");
                ids.push(id);
            }
            ids
        }
    };

    let run = Run {
        db,
        store: &store,
        waker: &waker,
        arrivals: &receiver.arrivals,
    };
    let one = tenants(1, "fast").await;
    run.measure("throughput, 1 tenant", &one, 1000, None).await;
    let many = tenants(20, "fast").await;
    run.measure("throughput, 20 tenants", &many, 50, None).await;
    let steady = tenants(20, "fast").await;
    run.measure("latency at 100/s, 20 tenants", &steady, 20, Some(100.0))
        .await;
    let slow = tenants(1, "slow").await;
    for _ in 0..20 {
        store
            .record_event(&slow[0], &event())
            .await
            .expect("slow event");
    }
    waker.wake();
    let fresh = tenants(20, "fast").await;
    run.measure(
        "latency at 100/s, 20 tenants + 1 slow one",
        &fresh,
        20,
        Some(100.0),
    )
    .await;

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
}

fn event() -> Event {
    Event::MessageReceived {
        message_id: "3EB0BENCH".into(),
        chat_id: "62811000001@s.whatsapp.net".into(),
        sender_id: "62811000001@s.whatsapp.net".into(),
        text: Some("halo".into()),
        kind: "conversation".into(),
        timestamp_ms: 1_756_718_431_000,
        data: Default::default(),
    }
}

struct Run<'a> {
    db: &'a str,
    store: &'a wago::store::Store,
    waker: &'a wago::webhooks::WebhookWaker,
    arrivals: &'a Arrivals,
}

impl Run<'_> {
    /// Records `per_tenant` events for each tenant (interleaved; at `rate`
    /// per second if given, else as fast as possible), waits for all to
    /// arrive and prints the figures.
    async fn measure(&self, label: &str, tenants: &[TenantId], per_tenant: i64, rate: Option<f64>) {
        let mut committed: HashMap<(String, i64), Instant> = HashMap::new();
        let started = Instant::now();
        let mut n = 0u32;
        for seq in 1..=per_tenant {
            for t in tenants {
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(f64::from(n) / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                n += 1;
                self.store.record_event(t, &event()).await.expect("event");
                committed.insert((t.to_string(), seq), Instant::now());
                self.waker.wake();
            }
        }
        let total = committed.len();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = {
                let a = self.arrivals.lock().expect("lock");
                committed.keys().filter(|k| a.contains_key(*k)).count()
            };
            if done == total || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let elapsed = started.elapsed();
        let a = self.arrivals.lock().expect("lock");
        let mut latencies: Vec<Duration> = committed
            .iter()
            .filter_map(|(k, c)| a.get(k).map(|r| r.saturating_duration_since(*c)))
            .collect();
        latencies.sort();
        let pct = |p: f64| {
            let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            latencies.get(i).copied().unwrap_or_default().as_secs_f64() * 1000.0
        };
        println!(
            "{:8} | {label:42} | {}/{total} delivered in {:.2} s = {:.0} deliveries/s | commit->receipt p50 {:.1} ms, p99 {:.1} ms",
            self.db,
            latencies.len(),
            elapsed.as_secs_f64(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            pct(0.5),
            pct(0.99),
        );
    }
}
