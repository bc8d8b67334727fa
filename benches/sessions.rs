//! WAGO end to end through its HTTP API, against an in-process sandbox:
//! `cargo bench --features sandbox --bench sessions`.
//!
//! For each database (`BENCH_DB=sqlite|postgres` picks one), with
//! `BENCH_TENANTS` tenants (default 10) paired to simulated phones:
//! - sends: `BENCH_MESSAGES` (default 500) `POST /send-text` requests, 8 in
//!   flight per tenant, no send pace: requests per second, p50/p99 request
//!   time (written, sent through the session, answered), and the time until
//!   the last one is in the recipient phone's inbox;
//! - receives: as many texts from a phone to the tenants: messages per
//!   second, and p50/p99 from the phone's send to the message being stored
//!   (seen through `GET /messages`) and to its webhook arriving at a
//!   receiver on loopback.

#[allow(dead_code)] // the bench needs only its plain receiver
#[path = "../tests/common/receiver.rs"]
mod receiver;
#[path = "support_db/mod.rs"]
mod support_db;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wago::app::App;
use wago::config::Config;

const ADMIN: &str = "bench-admin-token-0123456789";
const RECIPIENT: &str = "628129990000";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    support_sandbox::init_logs();
    support_db::each_database(|label, dsn| async move { run(label, &dsn).await }).await;
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: (&str, &str),
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(auth.0, auth.1);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

async fn run(label: &str, dsn: &str) {
    let tenants = env_usize("BENCH_TENANTS", 10);
    let messages = env_usize("BENCH_MESSAGES", 500);
    let sandbox = support_sandbox::Sandbox::start().await;
    let vars: HashMap<String, String> = [
        ("DSN", dsn.to_owned()),
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        ("ADMIN_TOKEN", ADMIN.into()),
        ("WA_SERVER_URL", sandbox.ws_url()),
        ("SEND_RATE_PER_MINUTE", "0".into()),
        ("API_RATE_LIMIT", "0".into()),
        ("WEBHOOK_ALLOW_PRIVATE", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = Config::from_map(&vars).expect("bench config");
    let app = App::build(&config).await.expect("app starts");
    let api = Api {
        base: format!("http://{}", app.local_addr().expect("bound")),
        http: reqwest::Client::new(),
    };
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(app.run(shutdown.clone()));

    sandbox.create_phone(RECIPIENT).await;
    let admin = ("Authorization", format!("Bearer {ADMIN}"));
    let mut keys = Vec::new();
    let paired_at = Instant::now();
    for i in 0..tenants {
        let phone = format!("6281100{i:05}");
        sandbox.create_phone(&phone).await;
        let (_, tenant) = api
            .call(
                reqwest::Method::POST,
                "/admin/tenants",
                (admin.0, &admin.1),
                Some(json!({ "name": format!("t{i}") })),
            )
            .await;
        let key = tenant["api_key"].as_str().expect("a key").to_owned();
        let (_, qr) = api
            .call(
                reqwest::Method::GET,
                "/session/qr",
                ("X-API-Key", &key),
                None,
            )
            .await;
        let (status, _) = sandbox.link(&phone, qr["qr"].as_str().expect("a QR")).await;
        assert_eq!(status, 200);
        loop {
            let (_, s) = api
                .call(reqwest::Method::GET, "/session", ("X-API-Key", &key), None)
                .await;
            if s["state"] == "connected" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        keys.push((phone, key));
    }
    println!(
        "{label}: {tenants} tenants paired through the API in {:?}",
        paired_at.elapsed()
    );

    sends(label, &api, &sandbox, &keys, messages).await;
    let hooks = receiver::Receiver::start().await;
    for (_, key) in &keys {
        let body = json!({ "url": hooks.url(), "events": ["message.received"] });
        let (status, _) = api
            .call(
                reqwest::Method::PUT,
                "/webhook",
                ("X-API-Key", key),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "PUT /webhook");
    }
    receives(label, &api, &sandbox, &keys, messages, &hooks).await;

    shutdown.cancel();
    let _ = served.await;
}

async fn sends(
    label: &str,
    api: &Api,
    sandbox: &support_sandbox::Sandbox,
    keys: &[(String, String)],
    messages: usize,
) {
    let per_tenant = messages / keys.len();
    let started = Instant::now();
    let mut workers = Vec::new();
    for (_, key) in keys {
        for lane in 0..8 {
            let (http, base, key) = (api.http.clone(), api.base.clone(), key.clone());
            workers.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for n in (lane..per_tenant).step_by(8) {
                    let asked = Instant::now();
                    let response = http
                        .post(format!("{base}/send-text"))
                        .header("X-API-Key", &key)
                        .json(&json!({ "to": RECIPIENT, "text": format!("bench {n}") }))
                        .send()
                        .await
                        .expect("answered");
                    assert_eq!(response.status(), 200);
                    times.push(asked.elapsed());
                }
                times
            }));
        }
    }
    let mut times = Vec::new();
    for w in workers {
        times.extend(w.await.expect("worker"));
    }
    let answered = started.elapsed();
    let total = times.len();
    loop {
        let inbox = sandbox.inner.inbox(RECIPIENT).await.expect("inbox");
        if inbox.len() >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = started.elapsed();
    times.sort();
    println!(
        "{label}: sends: {total} in {answered:?} = {:.0}/s answered; request p50 {:?} p99 {:?}; all at the phone after {delivered:?} ({:.0}/s)",
        total as f64 / answered.as_secs_f64(),
        times[total / 2],
        times[total * 99 / 100],
        total as f64 / delivered.as_secs_f64(),
    );
}

async fn receives(
    label: &str,
    api: &Api,
    sandbox: &support_sandbox::Sandbox,
    keys: &[(String, String)],
    messages: usize,
    hooks: &receiver::Receiver,
) {
    let per_tenant = messages / keys.len();
    let started = Instant::now();
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    for n in 0..per_tenant {
        for (phone, _) in keys {
            let text = format!("in {phone} {n}");
            sandbox
                .inner
                .send_text(RECIPIENT, phone, &text)
                .await
                .expect("phone sends");
            sent_at.insert(text, Instant::now());
        }
    }
    let sent = started.elapsed();
    let mut latencies = Vec::new();
    let mut cursors = vec![0i64; keys.len()];
    while latencies.len() < sent_at.len() {
        for (i, (_, key)) in keys.iter().enumerate() {
            let path = format!("/messages?after={}&limit=1000", cursors[i]);
            let (_, page) = api
                .call(reqwest::Method::GET, &path, ("X-API-Key", key), None)
                .await;
            let now = Instant::now();
            for m in page["messages"].as_array().into_iter().flatten() {
                if let Some(at) = m["text"].as_str().and_then(|t| sent_at.get(t)) {
                    latencies.push(now.saturating_duration_since(*at));
                }
            }
            cursors[i] = page["next_after"].as_i64().unwrap_or(cursors[i]);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored = started.elapsed();
    latencies.sort();
    let total = latencies.len();
    println!(
        "{label}: receives: {total} sent by phones in {sent:?}, all stored after {stored:?} ({:.0}/s); phone send to stored p50 {:?} p99 {:?}",
        total as f64 / stored.as_secs_f64(),
        latencies[total / 2],
        latencies[total * 99 / 100],
    );
    let received = hooks.wait_for(total, Duration::from_secs(120)).await;
    let mut to_hook: Vec<Duration> = received
        .iter()
        .filter_map(|r| {
            let body = r.json();
            let text = body["text"].as_str()?.to_owned();
            Some(r.at.saturating_duration_since(*sent_at.get(&text)?))
        })
        .collect();
    to_hook.sort();
    let n = to_hook.len();
    println!(
        "{label}: receives: {n} webhooks; phone send to webhook at the receiver p50 {:?} p99 {:?}",
        to_hook[n / 2],
        to_hook[n * 99 / 100],
    );
}
