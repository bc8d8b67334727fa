//! Sessions through the HTTP API, against the sandbox: pairing by QR, the
//! session's state, logout and pairing again, restarts and crashes that
//! reconnect without pairing, and the checks a send makes before anything
//! is written. Every test runs on SQLite and on Postgres.
#![cfg(feature = "sandbox")]

mod common;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;
mod support_wago;

use serde_json::json;

use common::TestDb;
use support_sandbox::Sandbox;
use support_wago::{Tenant, spawn, text_to};

const PHONE: &str = "62811000100";

async fn pairs_by_qr_and_reports_the_session(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(PHONE).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;

    assert_eq!(acme.state(&app).await, "unpaired");
    acme.pair(&app, &sandbox, PHONE).await;

    let (_, session) = acme.get(&app, "/session").await;
    let jid = session["jid"].as_str().expect("a jid once paired");
    assert!(jid.starts_with(PHONE), "{jid}");
    let account = sandbox.phone(PHONE).await;
    assert_eq!(account.devices, vec![0, 1]);
    assert_eq!(account.online, vec![1]);

    // A paired session has no QR code to give.
    let (status, body) = acme.get(&app, "/session/qr").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "conflict");

    // The admin sees the same, in the tenant list too.
    let (status, admin_view) = app
        .admin_json(
            reqwest::Method::GET,
            &format!("/admin/tenants/{}/session", acme.id),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(admin_view["state"], "connected");
    let (_, list) = app.admin_json(reqwest::Method::GET, "/admin/tenants").await;
    assert_eq!(list["tenants"][0]["session"]["state"], "connected");
}

async fn qr_codes_come_in_every_format(db: TestDb) {
    let sandbox = Sandbox::start().await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;

    let (status, body) = acme.get(&app, "/session/qr").await;
    assert_eq!(status, 200, "{body}");
    let qr = body["qr"].as_str().unwrap();
    assert!(
        qr.split(',').count() >= 4,
        "ref,noise,identity,adv[,platform]: {qr}"
    );
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((1..=60).contains(&expires_in), "{expires_in}");
    assert_eq!(acme.state(&app).await, "pairing");

    for (format, content_type, starts) in [
        ("png", "image/png", &b"\x89PNG"[..]),
        ("svg", "image/svg+xml", &b"<?xml"[..]),
        ("text", "text/plain; charset=utf-8", "\u{2588}".as_bytes()),
    ] {
        let response = app
            .http
            .get(app.url(&format!("/session/qr?format={format}")))
            .header("X-API-Key", &acme.key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{format}");
        assert_eq!(response.headers()["content-type"], content_type);
        let bytes = response.bytes().await.unwrap();
        assert!(
            bytes.windows(starts.len()).any(|w| w == starts),
            "{format}: unexpected body start {:?}",
            &bytes[..bytes.len().min(16)]
        );
    }
    let (status, body) = acme.get(&app, "/session/qr?format=gif").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("format"));
}

async fn logout_unlinks_and_the_tenant_can_pair_again(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(PHONE).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, &sandbox, PHONE).await;

    let (status, body) = acme.post(&app, "/session/logout", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "logged_out");
    sandbox
        .phone_until(PHONE, "device 1 removed", |a| a.devices == vec![0])
        .await;

    // A new pairing gives the account its next device.
    acme.pair(&app, &sandbox, PHONE).await;
    assert_eq!(sandbox.phone(PHONE).await.devices, vec![0, 2]);
}

async fn the_admin_pairs_and_logs_out_any_tenant(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(PHONE).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;

    let (status, body) = app
        .admin_json(
            reqwest::Method::GET,
            &format!("/admin/tenants/{}/session/qr", acme.id),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = sandbox.link(PHONE, body["qr"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    acme.wait_state(&app, "connected").await;

    let (status, body) = app
        .admin_json(
            reqwest::Method::POST,
            &format!("/admin/tenants/{}/session/logout", acme.id),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(acme.state(&app).await, "logged_out");

    let (status, _) = app
        .admin_json(reqwest::Method::GET, "/admin/tenants/nope/session")
        .await;
    assert_eq!(status, 404);
}

async fn a_restart_reconnects_without_pairing(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(PHONE).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, &sandbox, PHONE).await;

    app.stop().await;
    sandbox
        .phone_until(PHONE, "the companion offline", |a| a.online.is_empty())
        .await;
    let app = spawn(&db, &sandbox, &[]).await;
    acme.wait_state(&app, "connected").await;
    assert_eq!(
        sandbox.phone(PHONE).await.devices,
        vec![0, 1],
        "no new pairing"
    );

    // And after a crash (no graceful anything), the same.
    app.crash();
    let app = spawn(&db, &sandbox, &[]).await;
    acme.wait_state(&app, "connected").await;
    let account = sandbox.phone(PHONE).await;
    assert_eq!(account.devices, vec![0, 1], "no new pairing");
    assert_eq!(account.online, vec![1]);
}

/// A database from before session status rows (an upgrade): the linked
/// session has a device but no status row, and still reconnects.
async fn a_session_linked_before_status_rows_resumes(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(PHONE).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, &sandbox, PHONE).await;
    app.stop().await;

    let store = db.store().await;
    sqlx::query("DELETE FROM session_status")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let app = spawn(&db, &sandbox, &[]).await;
    acme.wait_state(&app, "connected").await;
    assert_eq!(
        sandbox.phone(PHONE).await.devices,
        vec![0, 1],
        "no new pairing"
    );
}

async fn two_tenants_pair_two_numbers(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(PHONE).await;
    sandbox.create_phone("62811000200").await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    let globex = Tenant::create(&app, "globex").await;
    acme.pair(&app, &sandbox, PHONE).await;
    globex.pair(&app, &sandbox, "62811000200").await;

    let (_, a) = acme.get(&app, "/session").await;
    let (_, g) = globex.get(&app, "/session").await;
    assert!(a["jid"].as_str().unwrap().starts_with(PHONE));
    assert!(g["jid"].as_str().unwrap().starts_with("62811000200"));
}

async fn sends_are_checked_before_anything_is_written(db: TestDb) {
    let sandbox = Sandbox::start().await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;

    for (body, field) in [
        (json!({ "to": "0812", "text": "hi" }), "to"),
        (json!({ "to": "62812abc", "text": "hi" }), "to"),
        (json!({ "to": "628120000001", "text": "  " }), "text"),
        (json!({ "to": "628120000001" }), "text"),
    ] {
        let (status, answer) = acme.post(&app, "/send-text", body.clone()).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    for (body, field) in [
        (json!({ "to": "628120000001", "code": "12 34" }), "code"),
        (
            json!({ "to": "628120000001", "code": "1234", "template": "no slot" }),
            "template",
        ),
        (
            json!({ "to": "628120000001", "code": "1234", "template": "%s and %s" }),
            "template",
        ),
    ] {
        let (status, answer) = acme.post(&app, "/send-otp", body.clone()).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }

    // Not connected, not asked to queue: 503, and no row.
    let (status, answer) = acme
        .post(&app, "/send-text", text_to("628120000001", "hi"))
        .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "session_not_connected");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

async fn queued_sends_are_idempotent(db: TestDb) {
    let sandbox = Sandbox::start().await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    let body = json!({ "to": "+62 812-0000-0001", "text": "hi", "queue": true });

    let key = [("Idempotency-Key", "order-42")];
    let (status, first) = acme.post_with(&app, "/send-text", body.clone(), &key).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "queued");
    let id = first["message_id"].as_str().unwrap().to_owned();

    let (status, again) = acme.post_with(&app, "/send-text", body.clone(), &key).await;
    assert_eq!(status, 202);
    assert_eq!(again["message_id"], id.as_str(), "the same send");
    let (_, other) = acme.post(&app, "/send-text", body).await;
    assert_ne!(other["message_id"], id.as_str(), "no key: a new send");

    let (status, shown) = acme.get(&app, &format!("/messages/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["status"], "queued");
    assert_eq!(shown["chat_id"], "6281200000001@s.whatsapp.net");
    assert_eq!(shown["direction"], "outbound");
    assert_eq!(acme.get(&app, "/messages/3EB0NOPE").await.0, 404);

    // Another tenant neither sees it nor shares the key.
    let globex = Tenant::create(&app, "globex").await;
    assert_eq!(globex.get(&app, &format!("/messages/{id}")).await.0, 404);
    let (_, theirs) = globex
        .post_with(
            &app,
            "/send-text",
            json!({"to": "6281200000001", "text": "x", "queue": true}),
            &key,
        )
        .await;
    assert_ne!(theirs["message_id"], id.as_str());
}

async fn deleting_a_tenant_unlinks_its_device(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(PHONE).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;
    let hook = common::receiver::Receiver::start().await;
    acme.webhook(&app, &hook.url(), &["session.status"]).await;
    acme.pair(&app, &sandbox, PHONE).await;
    let start = std::time::Instant::now();
    loop {
        let states: Vec<String> = hook
            .received()
            .iter()
            .map(|e| e.json()["state"].as_str().unwrap().to_owned())
            .collect();
        if states.last().is_some_and(|s| s == "connected") {
            assert_eq!(states[0], "connecting", "{states:?}");
            break;
        }
        assert!(start.elapsed() < support_sandbox::STEP, "{states:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let (status, _) = app
        .admin_json(
            reqwest::Method::DELETE,
            &format!("/admin/tenants/{}", acme.id),
        )
        .await;
    assert_eq!(status, 204);
    sandbox
        .phone_until(PHONE, "the device unlinked", |a| a.devices == vec![0])
        .await;
    assert_eq!(acme.get(&app, "/session").await.0, 401);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM wa_devices")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "no protocol rows left");
}

async fn a_tenant_with_its_own_store_keeps_its_device_there(db: TestDb) {
    let own = TestDb::sqlite().await;
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(PHONE).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let res = app
        .admin(reqwest::Method::POST, "/admin/tenants")
        .json(&json!({ "name": "apart", "store_dsn": own.dsn() }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: serde_json::Value = res.json().await.unwrap();
    let apart = Tenant {
        id: body["id"].as_str().unwrap().to_owned(),
        key: body["api_key"].as_str().unwrap().to_owned(),
    };
    apart.pair(&app, &sandbox, PHONE).await;

    let devices = |store: wago::store::Store| async move {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM wa_devices")
            .fetch_one(store.pool())
            .await
            .unwrap();
        n
    };
    assert_eq!(
        devices(app.store.clone()).await,
        0,
        "nothing in the main database"
    );
    assert_eq!(devices(own.store().await).await, 1, "the device in its own");

    app.stop().await;
    let app = spawn(&db, &sandbox, &[]).await;
    apart.wait_state(&app, "connected").await;
    assert_eq!(
        sandbox.phone(PHONE).await.devices,
        vec![0, 1],
        "no new pairing"
    );

    let (status, _) = app
        .admin_json(
            reqwest::Method::DELETE,
            &format!("/admin/tenants/{}", apart.id),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        devices(own.store().await).await,
        0,
        "its own store is emptied"
    );
}

/// When this node finds its claim lapsed (here: as if another node had
/// fenced it), every client stops at once, so two processes never drive
/// one session; then the node claims its row again and reconnects its
/// sessions under new lease tokens, without pairing.
async fn a_lapsed_claim_stops_every_client_until_the_node_claims_again(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(PHONE).await;
    let app = spawn(&db, &sandbox, &[("SESSION_LEASE_TTL", "2s")]).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, &sandbox, PHONE).await;
    acme.wait_state(&app, "connected").await;
    let token = || async {
        sqlx::query_scalar::<_, i64>("SELECT token FROM session_leases WHERE session_id = $1")
            .bind(&acme.id)
            .fetch_one(app.store.pool())
            .await
            .unwrap()
    };
    let before = token().await;

    sqlx::query("UPDATE nodes SET expires_at = 0, fenced = 1 WHERE id = 'test-node'")
        .execute(app.store.pool())
        .await
        .unwrap();
    // The first connection ends and a second one logs in, in that order.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = sandbox.get("/sandbox/connections").await;
        assert_eq!(status, 200, "{body}");
        let logins = body.as_array().unwrap();
        if logins.len() >= 2 {
            let (first, second) = (&logins[logins.len() - 2], &logins[logins.len() - 1]);
            assert_eq!(second["overlapped"], false, "{body}");
            let closed = first["closed_ms"].as_u64().expect("the first ended");
            assert!(closed <= second["opened_ms"].as_u64().unwrap(), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no new login: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    acme.wait_state(&app, "connected").await;
    assert!(token().await > before, "taken afresh after the claim");
    let holder: String =
        sqlx::query_scalar("SELECT owner_node FROM session_leases WHERE session_id = $1")
            .bind(&acme.id)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(holder, "test-node");
}

db_tests!(
    a_lapsed_claim_stops_every_client_until_the_node_claims_again,
    a_session_linked_before_status_rows_resumes,
    a_tenant_with_its_own_store_keeps_its_device_there,
    deleting_a_tenant_unlinks_its_device,
    pairs_by_qr_and_reports_the_session,
    qr_codes_come_in_every_format,
    logout_unlinks_and_the_tenant_can_pair_again,
    the_admin_pairs_and_logs_out_any_tenant,
    a_restart_reconnects_without_pairing,
    two_tenants_pair_two_numbers,
    sends_are_checked_before_anything_is_written,
    queued_sends_are_idempotent,
);

/// The API limit per key: over the burst, 429 with `Retry-After`; another
/// key is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_rate_limit() {
    let db = TestDb::sqlite().await;
    let sandbox = Sandbox::start().await;
    let app = spawn(
        &db,
        &sandbox,
        &[("API_RATE_LIMIT", "1"), ("API_RATE_BURST", "3")],
    )
    .await;
    let acme = Tenant::create(&app, "acme").await;
    let globex = Tenant::create(&app, "globex").await;

    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(acme.get(&app, "/session").await.0);
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");
    let response = app
        .http
        .get(app.url("/session"))
        .header("X-API-Key", &acme.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");

    assert_eq!(globex.get(&app, "/session").await.0, 200);
    // The admin API and health are not limited by tenant keys.
    assert_eq!(
        app.http
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
