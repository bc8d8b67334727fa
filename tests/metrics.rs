//! `GET /metrics`, scraped and parsed as Prometheus would, on both
//! databases: behind the admin token on the API's port, open on
//! `METRICS_LISTEN`, and moving with what the server does.
//!
//! The recorder is one per process and the tests of this file share it, so
//! counters are compared before and after, never read as absolutes; the
//! gauges read from the database are this test's own.

mod common;

use std::time::{Duration, Instant};

use common::receiver::{Receiver, Reply};
use common::{ADMIN_TOKEN, TestApp, TestDb};
use prometheus_parse::{Sample, Scrape, Value as Metric};
use reqwest::Method;
use serde_json::json;
use wago::events::Event;
use wago::tenants::TenantId;

db_tests!(
    metrics_are_guarded_parsed_and_move_with_the_work,
    metrics_listen_serves_without_the_token,
);

const WAIT: Duration = Duration::from_secs(20);

async fn scrape(app: &TestApp) -> Scrape {
    let res = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&res.text().await.unwrap())
}

fn parse(text: &str) -> Scrape {
    // The parser skips lines it cannot read; every line must be readable.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        let name_end = series.find('{').unwrap_or(series.len());
        let (name, labels) = series.split_at(name_end);
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if !labels.is_empty() {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
            let inner = inner.unwrap_or_else(|| panic!("{line}"));
            assert!(
                !inner.contains(['{', '}']),
                "a label value holds a brace: {line}"
            );
        }
    }
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    Scrape::parse(lines).unwrap_or_else(|e| panic!("not the Prometheus text format: {e}\n{text}"))
}

/// The value of the one sample of `name` whose labels include `labels`;
/// 0 when there is none yet (a counter not yet incremented).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} is ambiguous: {matching:#?}"
    );
    matching.first().map_or(0.0, |s| match &s.value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
        Metric::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        Metric::Summary(_) => panic!("{name} is a summary"),
    })
}

fn present(scrape: &Scrape, name: &str) -> bool {
    scrape.samples.iter().any(|s| s.metric == name)
}

async fn metrics_are_guarded_parsed_and_move_with_the_work(db: TestDb) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(
        &db,
        &[
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_RETRY_SCHEDULE", "1s,1s"),
        ],
    )
    .await;

    // The token is required, as for the rest of the admin API.
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        app.bearer_status("/metrics", "wrong-token-0123456789")
            .await,
        401
    );

    let before = scrape(&app).await;
    let database = if db.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(
        value(
            &before,
            "wago_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("database", database)
            ]
        ),
        1.0
    );
    for state in [
        "unpaired",
        "pairing",
        "connecting",
        "connected",
        "disconnected",
        "logged_out",
    ] {
        assert!(
            before
                .samples
                .iter()
                .any(|s| s.metric == "wago_sessions" && s.labels.get("state") == Some(state)),
            "wago_sessions{{state={state}}}"
        );
        assert!(
            before
                .samples
                .iter()
                .any(|s| s.metric == "wago_node_sessions" && s.labels.get("state") == Some(state)),
            "wago_node_sessions{{state={state}}}"
        );
    }
    assert_eq!(value(&before, "wago_webhook_outbox_waiting", &[]), 0.0);
    assert!(value(&before, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(
        value(
            &before,
            "wago_db_pool_connections",
            &[("pool", "main"), ("state", "idle")]
        ) >= 0.0
    );
    assert!(present(&before, "wago_db_pool_connections"));

    // Requests are counted under their route's template, not their path.
    let (tenant, key) = app.create_tenant("metered").await;
    let (status, _) = app
        .admin_json(Method::GET, &format!("/admin/tenants/{tenant}"))
        .await;
    assert_eq!(status, 200);
    let created = [
        ("method", "POST"),
        ("route", "/admin/tenants"),
        ("status", "201"),
    ];
    let shown = [
        ("method", "GET"),
        ("route", "/admin/tenants/:id"),
        ("status", "200"),
    ];
    let after = scrape(&app).await;
    assert!(
        value(&after, "wago_http_requests_total", &created)
            >= value(&before, "wago_http_requests_total", &created) + 1.0
    );
    assert!(
        value(&after, "wago_http_requests_total", &shown)
            >= value(&before, "wago_http_requests_total", &shown) + 1.0
    );
    assert!(
        !after
            .samples
            .iter()
            .any(|s| s.labels.get("route").is_some_and(|r| r.contains(&tenant))),
        "an id made a series of its own"
    );
    let duration = [("method", "POST"), ("route", "/admin/tenants")];
    assert!(value(&after, "wago_http_request_duration_seconds", &duration) >= 1.0);

    // A send accepted while the session is down: answered `queued`, timed.
    let queued = [("status", "queued")];
    let res = app
        .http
        .post(app.url("/send-text"))
        .header("X-API-Key", &key)
        .json(&json!({ "to": "62812000002", "text": "halo", "queue": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let after_send = scrape(&app).await;
    assert!(
        value(&after_send, "wago_send_duration_seconds", &queued)
            >= value(&after, "wago_send_duration_seconds", &queued) + 1.0
    );

    // Webhook attempts by outcome, and the backlog while a receiver fails.
    receiver.then([Reply::status(500)]);
    receiver.otherwise(Reply::status(200));
    let res = app
        .http
        .put(app.url("/webhook"))
        .header("X-API-Key", &key)
        .json(&json!({ "url": receiver.url(), "events": ["message.received"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tenant = TenantId::from_raw(tenant);
    let event = Event::MessageReceived {
        message_id: "3EB0METRICS".into(),
        chat_id: "62811000001@s.whatsapp.net".into(),
        sender_id: "62811000001@s.whatsapp.net".into(),
        text: Some("halo".into()),
        kind: "conversation".into(),
        timestamp_ms: 1_756_718_431_000,
        data: Default::default(),
    };
    app.store.record_event(&tenant, &event).await.unwrap();
    app.webhooks.wake();
    let retry = [("outcome", "retry")];
    let deadline = Instant::now() + WAIT;
    let failed = loop {
        let now = scrape(&app).await;
        if value(&now, "wago_webhook_attempts_total", &retry)
            > value(&after_send, "wago_webhook_attempts_total", &retry)
        {
            break now;
        }
        assert!(Instant::now() < deadline, "no failed attempt was counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The failed delivery waits for its retry (1 s here).
    assert_eq!(value(&failed, "wago_webhook_outbox_waiting", &[]), 1.0);
    assert!(value(&failed, "wago_webhook_attempt_duration_seconds", &[]) >= 1.0);
    let delivered = [("outcome", "delivered")];
    let deadline = Instant::now() + WAIT;
    loop {
        let now = scrape(&app).await;
        if value(&now, "wago_webhook_attempts_total", &delivered)
            > value(&failed, "wago_webhook_attempts_total", &delivered)
            && value(&now, "wago_webhook_outbox_waiting", &[]) == 0.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retry was not counted as delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receiver.received().len(), 2, "one failure, one success");
}

async fn metrics_listen_serves_without_the_token(db: TestDb) {
    let app = TestApp::spawn(&db, &[("METRICS_LISTEN", "127.0.0.1:0")]).await;
    let addr = app.metrics_addr.expect("METRICS_LISTEN is bound");
    assert_ne!(addr.port(), app.addr.port());
    let res = app
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let scrape = parse(&res.text().await.unwrap());
    assert!(present(&scrape, "wago_build_info"));
    // Nothing else is served there.
    let res = app
        .http
        .get(format!("http://{addr}/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // The API's own /metrics still wants the token.
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 401);
}
