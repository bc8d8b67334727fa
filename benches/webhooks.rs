//! Webhook delivery throughput and latency, on SQLite and on Postgres.
//!
//! `cargo bench --bench webhooks` prints, for each database:
//! - deliveries per second and commit-to-receipt latency (p50/p99) with
//!   fast receivers (1 tenant, then 20 tenants);
//! - the same for 20 fast tenants while one more tenant's receiver takes
//!   2 s per request (one slow tenant must not delay the others).
//!
//! The receiver runs in this process on loopback. Postgres is reached at
//! WAGO_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres);
//! the bench makes and drops its own database there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use wago::app::App;
use wago::config::Config;
use wago::events::Event;
use wago::store::tenants::NewKey;
use wago::store::webhooks::SecretUpdate;
use wago::tenants::{ApiKey, KeySource, TenantId, TenantName};

type Arrivals = Arc<Mutex<HashMap<(String, i64), Instant>>>;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let only = std::env::var("BENCH_DB").unwrap_or_default();
    let receiver = start_receiver().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    if only.is_empty() || only == "sqlite" {
        run_all("SQLite", &sqlite, &receiver).await;
    }
    if only == "sqlite" {
        return;
    }

    let admin = std::env::var("WAGO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    match sqlx::PgConnection::connect(&admin).await {
        Ok(mut conn) => {
            let name = format!("wago_bench_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create db");
            let mut url = url::Url::parse(&admin).expect("url");
            url.set_path(&name);
            run_all("Postgres", url.as_str(), &receiver).await;
            let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
        Err(e) => println!("Postgres: not measured ({e})"),
    }
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
    let vars: HashMap<String, String> = [
        ("DSN", dsn),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("ADMIN_TOKEN", "bench-admin-token-0123456789"),
        ("WEBHOOK_ALLOW_PRIVATE", "true"),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::from_map(&vars).expect("config");
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

    let one = tenants(1, "fast").await;
    measure(
        db,
        "1 tenant, fast receiver",
        &store,
        &waker,
        &receiver.arrivals,
        &one,
        2000,
    )
    .await;
    let many = tenants(20, "fast").await;
    measure(
        db,
        "20 tenants, fast receivers",
        &store,
        &waker,
        &receiver.arrivals,
        &many,
        100,
    )
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
    measure(
        db,
        "20 fast tenants beside 1 slow (2 s/request)",
        &store,
        &waker,
        &receiver.arrivals,
        &fresh,
        100,
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

/// Records `per_tenant` events for each tenant (interleaved), then waits
/// for all of them to arrive and prints the figures.
async fn measure(
    db: &str,
    label: &str,
    store: &wago::store::Store,
    waker: &wago::webhooks::WebhookWaker,
    arrivals: &Arrivals,
    tenants: &[TenantId],
    per_tenant: i64,
) {
    let mut committed: HashMap<(String, i64), Instant> = HashMap::new();
    let started = Instant::now();
    for seq in 1..=per_tenant {
        for t in tenants {
            store.record_event(t, &event()).await.expect("event");
            committed.insert((t.to_string(), seq), Instant::now());
            waker.wake();
        }
    }
    let total = committed.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let a = arrivals.lock().expect("lock");
            committed.keys().filter(|k| a.contains_key(*k)).count()
        };
        if done == total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let a = arrivals.lock().expect("lock");
    let mut latencies: Vec<Duration> = committed
        .iter()
        .filter_map(|(k, c)| a.get(k).map(|r| r.saturating_duration_since(*c)))
        .collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{db:8} | {label:44} | {}/{total} delivered in {:.2} s = {:.0} deliveries/s | commit->receipt p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
    );
}
