//! Webhook delivery against a real receiver on loopback, on both databases:
//! signatures checked independently, retries, dead and replay, timeouts,
//! crashes, 410, Retry-After and the private-address guard.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::receiver::{Receiver, Reply};
use common::{TestApp, TestDb};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use wago::events::Event;
use wago::tenants::TenantId;

db_tests!(
    deliveries_are_signed_ordered_and_listed,
    a_failing_receiver_is_retried_until_it_recovers,
    a_receiver_that_never_recovers_goes_dead_then_replays,
    a_slow_receiver_times_out_and_is_retried,
    an_event_claimed_before_a_crash_is_delivered_after_restart,
    gone_disables_the_endpoint_and_retry_after_is_honoured,
    private_addresses_are_refused_unless_trusted,
    webhook_settings_never_show_the_secret,
);

const WAIT: Duration = Duration::from_secs(15);

fn received(text: &str) -> Event {
    Event::MessageReceived {
        message_id: format!("3EB0{text}"),
        chat_id: "62811000001@s.whatsapp.net".into(),
        sender_id: "62811000001@s.whatsapp.net".into(),
        text: Some(text.into()),
        kind: "conversation".into(),
        timestamp_ms: 1_756_718_431_000,
        data: Default::default(),
    }
}

/// A tenant whose webhook points at `receiver`; returns (id, key).
async fn tenant_with_webhook(
    app: &TestApp,
    name: &str,
    receiver: &Receiver,
    secret: &str,
) -> (TenantId, String) {
    let (id, key) = app.create_tenant(name).await;
    let res = app
        .http
        .put(app.url("/webhook"))
        .header("X-API-Key", &key)
        .json(&json!({ "url": receiver.url(), "secret": secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    (TenantId::from_raw(id), key)
}

async fn record(app: &TestApp, tenant: &TenantId, event: &Event) -> i64 {
    let id = app.store.record_event(tenant, event).await.unwrap();
    app.webhooks.wake();
    id.expect("the tenant's webhook subscribes to the event")
}

/// Polls the delivery list until `done` holds for the delivery `id`.
async fn delivery_until(app: &TestApp, key: &str, id: i64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = app.tenant_get(key, "/webhook/deliveries?limit=1000").await;
        assert_eq!(status, 200);
        let found = body["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .expect("delivery listed");
        if done(&found) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "delivery {id} never got there: {found}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn private_ok() -> [(&'static str, &'static str); 1] {
    [("WEBHOOK_ALLOW_PRIVATE", "true")]
}

async fn deliveries_are_signed_ordered_and_listed(db: TestDb) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&db, &private_ok()).await;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 24])
    );
    let (tenant, key) = tenant_with_webhook(&app, "signed", &receiver, &secret).await;

    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(record(&app, &tenant, &received(&format!("m{i:02}"))).await);
    }
    let got = receiver.wait_for(20, WAIT).await;
    assert_eq!(got.len(), 20, "each event once");

    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    for (i, req) in got.iter().enumerate() {
        // Standard Webhooks, checked by the reference library.
        verifier
            .verify(&req.body, &req.headers)
            .expect("standard signature");
        // Legacy header: a plain HMAC computed here, independently.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&req.body);
        assert_eq!(
            req.header("x-wago-signature"),
            hex::encode(mac.finalize().into_bytes())
        );
        let body = req.json();
        assert_eq!(body["event"], "message.received");
        assert_eq!(body["tenant"], tenant.as_str());
        assert_eq!(body["sequence"], i as i64 + 1, "in the order created");
        assert_eq!(body["text"], format!("m{i:02}"));
        assert_eq!(body["chat_id"], "62811000001@s.whatsapp.net");
        assert_eq!(body["kind"], "conversation");
        assert_eq!(body["timestamp"], "2025-09-01T09:20:31Z");
        assert!(req.header("webhook-id").starts_with("evt_"));
    }

    let d = delivery_until(&app, &key, ids[0], |d| d["status"] == "delivered").await;
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["attempt_log"][0]["status_code"], 200);
    assert_eq!(d["event_id"], got[0].header("webhook-id"));
    let (_, page) = app
        .tenant_get(&key, "/webhook/deliveries?status=delivered&limit=5")
        .await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 5);
    let next = page["next_after"].as_i64().unwrap();
    let (_, rest) = app
        .tenant_get(
            &key,
            &format!("/webhook/deliveries?status=delivered&after={next}"),
        )
        .await;
    assert_eq!(rest["deliveries"].as_array().unwrap().len(), 15);
    let (status, _) = app
        .tenant_get(&key, "/webhook/deliveries?status=lost")
        .await;
    assert_eq!(status, 422);
    app.stop().await;
}

async fn a_failing_receiver_is_retried_until_it_recovers(db: TestDb) {
    let receiver = Receiver::start().await;
    receiver.then([Reply::status(500), Reply::status(502)]);
    let app = TestApp::spawn(
        &db,
        &[
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_RETRY_SCHEDULE", "200ms,200ms,200ms"),
        ],
    )
    .await;
    let (tenant, key) = tenant_with_webhook(&app, "flaky", &receiver, "s3cret").await;
    let id = record(&app, &tenant, &received("retry me")).await;

    let got = receiver.wait_for(3, WAIT).await;
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one webhook-id across retries: {ids:?}"
    );
    let d = delivery_until(&app, &key, id, |d| d["status"] == "delivered").await;
    assert_eq!(d["attempts"], 3);
    let codes: Vec<i64> = d["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 502, 200]);
    app.stop().await;
}

async fn a_receiver_that_never_recovers_goes_dead_then_replays(db: TestDb) {
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::status(503));
    let app = TestApp::spawn(
        &db,
        &[
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_RETRY_SCHEDULE", "100ms,100ms"),
        ],
    )
    .await;
    let (tenant, key) = tenant_with_webhook(&app, "down", &receiver, "s").await;
    let first = record(&app, &tenant, &received("a")).await;
    let d = delivery_until(&app, &key, first, |d| d["status"] == "dead").await;
    assert_eq!(d["attempts"], 3, "the first try and two retries");
    assert_eq!(d["last_status_code"], 503);
    assert!(d["next_attempt_at"].is_null());

    receiver.otherwise(Reply::status(200));
    let res = app
        .http
        .post(app.url(&format!("/webhook/deliveries/{first}/replay")))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    delivery_until(&app, &key, first, |d| d["status"] == "delivered").await;

    receiver.otherwise(Reply::status(503));
    let more = [
        record(&app, &tenant, &received("b")).await,
        record(&app, &tenant, &received("c")).await,
    ];
    for id in more {
        delivery_until(&app, &key, id, |d| d["status"] == "dead").await;
    }
    receiver.otherwise(Reply::status(204));
    let res = app
        .http
        .post(app.url("/webhook/deliveries/replay"))
        .header("X-API-Key", &key)
        .json(&json!({ "status": "dead" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "replayed": 2 }));
    for id in more {
        delivery_until(&app, &key, id, |d| d["status"] == "delivered").await;
    }
    // Another tenant cannot replay these.
    let (_, other) = app.create_tenant("nosy").await;
    let res = app
        .http
        .post(app.url(&format!("/webhook/deliveries/{first}/replay")))
        .header("X-API-Key", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    app.stop().await;
}

async fn a_slow_receiver_times_out_and_is_retried(db: TestDb) {
    let receiver = Receiver::start().await;
    receiver.then([Reply::status(200).after(Duration::from_secs(3))]);
    let app = TestApp::spawn(
        &db,
        &[
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_TIMEOUT", "500ms"),
            ("WEBHOOK_RETRY_SCHEDULE", "100ms"),
        ],
    )
    .await;
    let (tenant, key) = tenant_with_webhook(&app, "slow", &receiver, "s").await;
    let id = record(&app, &tenant, &received("slow")).await;
    let d = delivery_until(&app, &key, id, |d| d["status"] == "delivered").await;
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert!(
        log[0]["error"].as_str().unwrap().contains("timed out"),
        "{}",
        log[0]
    );
    assert!(log[0]["latency_ms"].as_i64().unwrap() < 2000);
    app.stop().await;
}

async fn an_event_claimed_before_a_crash_is_delivered_after_restart(db: TestDb) {
    let receiver = Receiver::start().await;
    // The first attempt hangs: the crash comes while it is in flight.
    receiver.then([Reply::status(200).after(Duration::from_secs(60))]);
    let vars = [("WEBHOOK_ALLOW_PRIVATE", "true"), ("WEBHOOK_TIMEOUT", "1s")];
    let app = TestApp::spawn(&db, &vars).await;
    let (tenant, key) = tenant_with_webhook(&app, "crashy", &receiver, "s").await;
    let id = record(&app, &tenant, &received("survive")).await;
    let first = receiver.wait_for(1, WAIT).await[0].clone();
    app.crash();

    let app = TestApp::spawn(&db, &vars).await;
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got[1].header("webhook-id"), first.header("webhook-id"));
    assert_eq!(got[1].body, first.body, "the same bytes");
    let d = delivery_until(&app, &key, id, |d| d["status"] == "delivered").await;
    assert_eq!(d["attempts"], 1, "the crashed attempt was never recorded");
    app.stop().await;
}

async fn gone_disables_the_endpoint_and_retry_after_is_honoured(db: TestDb) {
    let receiver = Receiver::start().await;
    receiver.then([
        Reply::status(429).retry_after("2"),
        Reply::status(200),
        Reply::status(410),
    ]);
    let app = TestApp::spawn(
        &db,
        &[
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_RETRY_SCHEDULE", "100ms"),
        ],
    )
    .await;
    let (tenant, key) = tenant_with_webhook(&app, "gone", &receiver, "s").await;
    let first = record(&app, &tenant, &received("later")).await;
    delivery_until(&app, &key, first, |d| d["status"] == "delivered").await;
    let got = receiver.received();
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "Retry-After 2 s honoured, waited {gap:?}"
    );

    let second = record(&app, &tenant, &received("gone")).await;
    let d = delivery_until(&app, &key, second, |d| d["status"] == "dead").await;
    assert_eq!(d["last_status_code"], 410);
    let (_, hook) = app.tenant_get(&key, "/webhook").await;
    assert_eq!(hook["enabled"], false);
    assert!(hook["disabled_reason"].as_str().unwrap().contains("410"));
    assert_eq!(
        app.store
            .record_event(&tenant, &received("x"))
            .await
            .unwrap(),
        None
    );

    // Setting the URL again turns delivery back on.
    tenant_with_webhook_again(&app, &key, &receiver).await;
    let (_, hook) = app.tenant_get(&key, "/webhook").await;
    assert_eq!(hook["enabled"], true);
    assert!(
        app.store
            .record_event(&tenant, &received("y"))
            .await
            .unwrap()
            .is_some()
    );
    app.stop().await;
}

async fn tenant_with_webhook_again(app: &TestApp, key: &str, receiver: &Receiver) {
    let res = app
        .http
        .put(app.url("/webhook"))
        .header("X-API-Key", key)
        .json(&json!({ "url": receiver.url() }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn private_addresses_are_refused_unless_trusted(db: TestDb) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(
        &db,
        &[
            ("API_KEY", "legacy-key"),
            ("WEBHOOK_URL", &receiver.url()),
            ("WEBHOOK_SECRET", "legacy-secret"),
        ],
    )
    .await;
    let (_, key) = app.create_tenant("tenant").await;
    let put = |url: String| {
        app.http
            .put(app.url("/webhook"))
            .header("X-API-Key", &key)
            .json(&json!({ "url": url }))
            .send()
    };
    let res = put(receiver.url()).await.unwrap();
    assert_eq!(res.status(), 422, "a loopback literal is refused when set");
    assert!(res.text().await.unwrap().contains("WEBHOOK_ALLOW_PRIVATE"));

    // A name is only resolved at delivery: refused then, never sent.
    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    assert_eq!(put(by_name).await.unwrap().status(), 200);
    let (tenant_id, _) = {
        let (_, list) = app.admin_json(reqwest::Method::GET, "/admin/tenants").await;
        let t = list["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "tenant")
            .unwrap()
            .clone();
        (TenantId::from_raw(t["id"].as_str().unwrap()), t)
    };
    let id = record(&app, &tenant_id, &received("nope")).await;
    let d = delivery_until(&app, &key, id, |d| d["attempts"] == 1).await;
    assert!(d["last_error"].as_str().unwrap().contains("private"), "{d}");

    // The operator's WEBHOOK_URL is trusted: the default tenant's events arrive.
    let (_, list) = app.admin_json(reqwest::Method::GET, "/admin/tenants").await;
    let default = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "default")
        .unwrap();
    let default_id = TenantId::from_raw(default["id"].as_str().unwrap());
    record(&app, &default_id, &received("hello")).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "only the trusted delivery arrived");
    assert_eq!(got[0].json()["text"], "hello");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"legacy-secret").unwrap();
    mac.update(&got[0].body);
    assert_eq!(
        got[0].header("x-wago-signature"),
        hex::encode(mac.finalize().into_bytes())
    );
    app.stop().await;
}

async fn webhook_settings_never_show_the_secret(db: TestDb) {
    let app = TestApp::spawn(&db, &private_ok()).await;
    let res = app
        .admin(reqwest::Method::POST, "/admin/tenants")
        .json(&json!({ "name": "hooked", "webhook_url": "https://example.com/hook", "webhook_secret": "whsec_c2VjcmV0c2VjcmV0" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let key = res.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, hook) = app.tenant_get(&key, "/webhook").await;
    assert_eq!(status, 200);
    assert_eq!(hook["url"], "https://example.com/hook");
    assert_eq!(hook["secret"], "whsec_c2V…");
    assert_eq!(hook["events"].as_array().unwrap().len(), 3);

    // Omitting the secret keeps it; unknown events are refused.
    let put = |body: Value| {
        app.http
            .put(app.url("/webhook"))
            .header("X-API-Key", &key)
            .json(&body)
            .send()
    };
    let res = put(json!({ "url": "https://example.org/h", "events": ["message.status"] }))
        .await
        .unwrap();
    let hook: Value = res.json().await.unwrap();
    assert_eq!(hook["secret"], "whsec_c2V…");
    assert_eq!(hook["events"], json!(["message.status"]));
    let res = put(json!({ "url": "https://example.org/h", "events": ["message.sent"] }))
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = put(json!({ "url": "ftp://example.org/h" })).await.unwrap();
    assert_eq!(res.status(), 422);
    let (_, hook) = app.tenant_get(&key, "/webhook").await;
    assert_eq!(
        hook["url"], "https://example.org/h",
        "refused input changed nothing"
    );

    // A bad webhook at creation creates nothing.
    let res = app
        .admin(reqwest::Method::POST, "/admin/tenants")
        .json(&json!({ "name": "never", "webhook_url": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("webhook_url"));
    let (_, list) = app.admin_json(reqwest::Method::GET, "/admin/tenants").await;
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);

    // DELETE removes it: no settings, and events are no longer queued.
    let delete = |key: &str| {
        app.http
            .delete(app.url("/webhook"))
            .header("X-API-Key", key)
            .send()
    };
    let res = delete(&key).await.unwrap();
    assert_eq!(res.status(), 200);
    let (_, hook) = app.tenant_get(&key, "/webhook").await;
    assert_eq!(hook["url"], Value::Null);
    assert_eq!(hook["enabled"], false);
    let tenant = TenantId::from_raw(list["tenants"][0]["id"].as_str().unwrap());
    let queued = app
        .store
        .record_event(&tenant, &received("after delete"))
        .await;
    assert_eq!(queued.unwrap(), None, "no endpoint, no delivery");
    assert_eq!(
        delete(&key).await.unwrap().status(),
        404,
        "nothing left to delete"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_on_one_postgres_never_deliver_an_event_twice() {
    let db = TestDb::postgres().await;
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::status(200).after(Duration::from_millis(5)));
    let a = TestApp::spawn(&db, &private_ok()).await;
    let b = TestApp::spawn(&db, &private_ok()).await;
    let mut tenants = Vec::new();
    for i in 0..4 {
        tenants.push(
            tenant_with_webhook(&a, &format!("t{i}"), &receiver, "s")
                .await
                .0,
        );
    }
    for i in 0..120 {
        let tenant = &tenants[i % tenants.len()];
        let app = if i % 2 == 0 { &a } else { &b };
        record(app, tenant, &received(&format!("{i}"))).await;
    }
    let got = receiver.wait_for(120, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120, "every event arrived");
    assert_eq!(
        receiver.received().len(),
        120,
        "and none twice (got {})",
        got.len()
    );
    a.stop().await;
    b.stop().await;
}

mod many {
    use super::*;
    db_tests!(many_tenants_are_served_at_once);

    async fn many_tenants_are_served_at_once(db: TestDb) {
        let receiver = Receiver::start().await;
        let app = TestApp::spawn(&db, &private_ok()).await;
        let mut tenants = Vec::new();
        for i in 0..20 {
            tenants.push(
                tenant_with_webhook(&app, &format!("t{i}"), &receiver, "s")
                    .await
                    .0,
            );
        }
        for round in 0..50 {
            for t in &tenants {
                record(&app, t, &received(&format!("{round}"))).await;
            }
        }
        let got = receiver.wait_for(1000, Duration::from_secs(60)).await;
        // Each tenant's events arrived in order.
        for t in &tenants {
            let seqs: Vec<i64> = got
                .iter()
                .map(|r| r.json())
                .filter(|b| b["tenant"] == t.as_str())
                .map(|b| b["sequence"].as_i64().unwrap())
                .collect();
            assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        }
        app.stop().await;
    }
}

/// The queue a dispatcher claims from, driven through the store alone.
mod queues {
    use super::*;
    use wago::store::Store;
    use wago::store::now_ms;
    use wago::store::tenants::NewKey;
    use wago::store::webhooks::{AttemptRecord, Hold, NextStep, SecretUpdate, Settled};
    use wago::tenants::{ApiKey, KeySource, TenantName};

    db_tests!(
        a_dispatcher_that_lost_its_hold_writes_nothing,
        a_waiting_retry_holds_back_no_later_event,
    );

    async fn tenant(store: &Store, name: &str) -> TenantId {
        let key = NewKey::for_key(&ApiKey::generate(), KeySource::Admin);
        let t = store
            .create_tenant(&TenantName::parse(name).unwrap(), None, &key)
            .await
            .unwrap();
        let id = TenantId::from_raw(t.id);
        let events = vec!["message.received".to_owned()];
        store
            .put_webhook(
                &id,
                "http://127.0.0.1:9/",
                SecretUpdate::Remove,
                &events,
                true,
            )
            .await
            .unwrap();
        id
    }

    fn attempt(next: NextStep) -> AttemptRecord {
        AttemptRecord {
            attempted_at: now_ms(),
            status_code: Some(if next == NextStep::Delivered {
                200
            } else {
                500
            }),
            error: None,
            latency_ms: 1,
            response_prefix: None,
            next,
        }
    }

    async fn a_dispatcher_that_lost_its_hold_writes_nothing(db: TestDb) {
        let store = db.store().await;
        let t = tenant(&store, "fenced").await;
        store.record_event(&t, &received("a")).await.unwrap();
        // The first dispatcher's lease is over as soon as it is taken.
        let first = store.claim_queues("first", now_ms() - 1, 10).await.unwrap();
        assert_eq!(first, vec![t.clone()]);
        let rows = store.due_deliveries(&t, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        let second = store
            .claim_queues("second", now_ms() + 60_000, 10)
            .await
            .unwrap();
        assert_eq!(second, vec![t.clone()], "an expired hold is claimed again");
        assert!(
            store
                .claim_queues("third", now_ms() + 60_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "a live hold is not"
        );
        let late = [(rows[0].id, attempt(NextStep::Delivered))];
        let written = store
            .settle_deliveries(&t, "first", &late, Hold::Release)
            .await
            .unwrap();
        assert_eq!(
            written,
            Settled::Lost,
            "the late dispatcher is told it lost the tenant"
        );
        let again = store.due_deliveries(&t, 10).await.unwrap();
        assert_eq!(again.len(), 1, "and its attempt changed nothing");
        assert_eq!(
            store
                .settle_deliveries(&t, "second", &late, Hold::Release)
                .await
                .unwrap(),
            Settled::Released { due_now: false }
        );
        assert!(store.due_deliveries(&t, 10).await.unwrap().is_empty());
        assert!(
            store
                .claim_queues("fourth", now_ms() + 60_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "nothing is due once all is delivered"
        );
    }

    async fn a_waiting_retry_holds_back_no_later_event(db: TestDb) {
        let store = db.store().await;
        let t = tenant(&store, "retrying").await;
        store.record_event(&t, &received("a")).await.unwrap();
        let claimed = store
            .claim_queues("d", now_ms() + 60_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let rows = store.due_deliveries(&t, 10).await.unwrap();
        let later = now_ms() + 3_600_000;
        let failed = [(rows[0].id, attempt(NextStep::RetryAt(later)))];
        assert_eq!(
            store
                .settle_deliveries(&t, "d", &failed, Hold::Release)
                .await
                .unwrap(),
            Settled::Released { due_now: false },
            "due when the retry is"
        );
        assert!(
            store
                .claim_queues("d", now_ms() + 60_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "nothing is due before the retry"
        );
        store.record_event(&t, &received("b")).await.unwrap();
        assert_eq!(
            store
                .claim_queues("d", now_ms() + 60_000, 10)
                .await
                .unwrap(),
            vec![t.clone()],
            "a new event makes the tenant due at once"
        );
        let rows = store.due_deliveries(&t, 10).await.unwrap();
        assert_eq!(rows.len(), 1, "only the new event, not the waiting retry");
        assert!(rows[0].payload.contains("\"b\""));
        // An event written while the tenant is held: let go, it is due
        // now, and the dispatcher that let it go knows without a claim.
        store.record_event(&t, &received("c")).await.unwrap();
        let ok = [(rows[0].id, attempt(NextStep::Delivered))];
        assert_eq!(
            store
                .settle_deliveries(&t, "d", &ok, Hold::Until(now_ms() + 60_000))
                .await
                .unwrap(),
            Settled::Kept
        );
        assert_eq!(
            store
                .settle_deliveries(&t, "d", &[], Hold::Release)
                .await
                .unwrap(),
            Settled::Released { due_now: true }
        );
        let rows = store.due_deliveries(&t, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].payload.contains("\"c\""));
        let claimed = store
            .claim_queues("e", now_ms() + 60_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed, vec![t.clone()]);
        let ok = [(rows[0].id, attempt(NextStep::Delivered))];
        assert_eq!(
            store
                .settle_deliveries(&t, "e", &ok, Hold::Release)
                .await
                .unwrap(),
            Settled::Released { due_now: false }
        );
        let due_at: Option<i64> =
            sqlx::query_scalar("SELECT due_at FROM webhook_queues WHERE tenant_id = $1")
                .bind(t.as_str())
                .fetch_one(store.pool())
                .await
                .unwrap();
        let due_at = due_at.expect("the retry still waits");
        assert!(
            (later - 1..=later + 1).contains(&due_at),
            "due again when the retry is ({due_at} vs {later})"
        );
    }
}
