//! The OpenAPI document against the server that serves it: every route is
//! described, every described operation is served, and real answers (and
//! webhook bodies) validate against their schemas.

mod common;
mod support_openapi;

use std::collections::BTreeSet;

use common::{TestApp, TestDb};
use reqwest::Method;
use serde_json::{Value, json};
use support_openapi::{Checker, collect_refs, operations, probe_routes};

db_tests!(
    every_operation_is_served_and_nothing_else,
    real_answers_match_the_document,
);

async fn document(app: &TestApp) -> Value {
    let res = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    res.json().await.unwrap()
}

async fn every_operation_is_served_and_nothing_else(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    // Every reference resolves.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut refs = BTreeSet::new();
    collect_refs(&doc, &mut refs);
    for r in &refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(schemas.contains_key(name), "unresolved {r}");
    }
    for event in ["message.received", "message.status", "session.status"] {
        assert!(
            doc["webhooks"][event]["post"]["requestBody"].is_object(),
            "{event}"
        );
    }

    let ops = operations(&doc);
    assert!(ops.len() >= 26, "{} operations", ops.len());
    for (path, method) in &ops {
        let op = &doc["paths"][path][method];
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{method} {path} has a tag"
        );
        assert!(
            op["responses"]["500"].is_object(),
            "{method} {path} documents 500"
        );
        if op["security"].is_array() {
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} documents 401"
            );
        }
    }
    probe_routes(&app.http, &app.url(""), &doc, "no such route").await;

    // The reference page draws this document.
    let page = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("openapi.json"));
}

/// Routes can only be added with `routes!`, which documents them: a plain
/// axum `.route(` in the HTTP layer would serve an undocumented route.
#[test]
fn the_http_layer_registers_routes_only_through_the_document() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).unwrap();
            assert!(
                !source.contains(".route(") && !source.contains(".route_service("),
                "{} adds a route without describing it: use `.routes(routes!(handler))`",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "read {checked} files of {}", dir.display());
}

/// `docs/openapi.json` is the document the code makes, so that the
/// repository's copy never drifts from the server's.
#[test]
fn the_committed_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let current = format!("{}\n", wago::http::openapi::document_pretty());
    assert!(
        committed == current,
        "docs/openapi.json is out of date: run `cargo run -- openapi > docs/openapi.json`"
    );
}

async fn real_answers_match_the_document(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    let mut c = Checker::new(document(&app).await);
    // The checker refuses what the document does not say: a field it
    // does not list, a value outside an enum, a missing required field.
    let session = json!({ "$ref": "#/components/schemas/SessionView" });
    let fine = json!({ "state": "connected", "jid": null, "push_name": null, "since": null, "node": null });
    assert!(c.errors(&session, &fine).is_empty());
    for wrong in [
        json!({ "state": "connected", "jid": null, "push_name": null, "since": null, "node": null, "extra": 1 }),
        json!({ "state": "asleep", "jid": null, "push_name": null, "since": null, "node": null }),
        json!({ "jid": null }),
        json!({ "state": "connected", "jid": 7 }),
    ] {
        assert!(
            !c.errors(&session, &wrong).is_empty(),
            "{wrong} was accepted"
        );
    }
    let admin = |m: Method, p: &str| app.admin(m, p);
    let tenant = |m: Method, p: &str, key: &str| {
        app.http
            .request(m, app.url(p))
            .header("X-API-Key", key.to_owned())
    };

    c.call(app.http.get(app.url("/health")), "/health", 200)
        .await;

    let created = c
        .call(
            admin(Method::POST, "/admin/tenants").json(&json!({ "name": "acme" })),
            "/admin/tenants",
            201,
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["api_key"].as_str().unwrap().to_owned();
    c.call(
        admin(Method::POST, "/admin/tenants").json(&json!({ "name": "acme" })),
        "/admin/tenants",
        409,
    )
    .await;
    c.call(
        admin(Method::POST, "/admin/tenants").json(&json!({ "name": 7 })),
        "/admin/tenants",
        422,
    )
    .await;
    c.call(
        admin(Method::POST, "/admin/tenants")
            .header("content-type", "application/json")
            .body("{"),
        "/admin/tenants",
        400,
    )
    .await;
    c.call(
        app.http
            .get(app.url("/admin/tenants"))
            .bearer_auth("wrong-token-0123456789"),
        "/admin/tenants",
        401,
    )
    .await;
    c.call(admin(Method::GET, "/admin/tenants"), "/admin/tenants", 200)
        .await;
    c.call(
        admin(Method::GET, &format!("/admin/tenants/{id}")),
        "/admin/tenants/{id}",
        200,
    )
    .await;
    c.call(
        admin(Method::GET, "/admin/tenants/nobody"),
        "/admin/tenants/{id}",
        404,
    )
    .await;
    let second = c
        .call(
            admin(Method::POST, &format!("/admin/tenants/{id}/keys")),
            "/admin/tenants/{id}/keys",
            201,
        )
        .await;
    c.call(
        admin(
            Method::DELETE,
            &format!(
                "/admin/tenants/{id}/keys/{}",
                second["id"].as_str().unwrap()
            ),
        ),
        "/admin/tenants/{id}/keys/{key_id}",
        204,
    )
    .await;
    c.call(admin(Method::GET, "/admin/nodes"), "/admin/nodes", 200)
        .await;
    c.call(
        admin(Method::GET, &format!("/admin/tenants/{id}/session")),
        "/admin/tenants/{id}/session",
        200,
    )
    .await;

    // The tenant's own routes.
    c.call(tenant(Method::GET, "/session", &key), "/session", 200)
        .await;
    c.call(
        tenant(Method::GET, "/session", "wago_nope"),
        "/session",
        401,
    )
    .await;
    c.call(
        tenant(Method::GET, "/session/qr?format=gif", &key),
        "/session/qr",
        422,
    )
    .await;
    c.call(tenant(Method::GET, "/webhook", &key), "/webhook", 200)
        .await;
    c.call(tenant(Method::DELETE, "/webhook", &key), "/webhook", 404)
        .await;
    c.call(
        tenant(Method::PUT, "/webhook", &key)
            .json(&json!({ "url": "https://example.org/hook", "secret": "whsec_c2VjcmV0", "events": ["message.status"] })),
        "/webhook",
        200,
    )
    .await;
    c.call(tenant(Method::GET, "/webhook", &key), "/webhook", 200)
        .await;
    c.call(
        tenant(Method::PUT, "/webhook", &key).json(&json!({ "url": "ftp://example.org" })),
        "/webhook",
        422,
    )
    .await;

    c.call(
        tenant(Method::POST, "/send-text", &key)
            .json(&json!({ "to": "62812000002", "text": "halo" })),
        "/send-text",
        503,
    )
    .await;
    let queued = c
        .call(
            tenant(Method::POST, "/send-text", &key)
                .json(&json!({ "to": "62812000002", "text": "halo", "queue": true })),
            "/send-text",
            202,
        )
        .await;
    c.call(
        tenant(Method::POST, "/send-otp", &key)
            .header("Idempotency-Key", "otp-1")
            .json(&json!({ "to": "62812000002", "code": "123456", "queue": true })),
        "/send-otp",
        202,
    )
    .await;
    c.call(
        tenant(Method::POST, "/send-otp", &key)
            .json(&json!({ "to": "62812000002", "code": "no spaces" })),
        "/send-otp",
        422,
    )
    .await;
    let message_id = queued["message_id"].as_str().unwrap();
    c.call(
        tenant(Method::GET, &format!("/messages/{message_id}"), &key),
        "/messages/{message_id}",
        200,
    )
    .await;
    c.call(
        tenant(Method::GET, "/messages/nope", &key),
        "/messages/{message_id}",
        404,
    )
    .await;
    c.call(
        tenant(Method::GET, "/messages?limit=5", &key),
        "/messages",
        200,
    )
    .await;
    c.call(
        tenant(Method::GET, "/messages?limit=-1", &key),
        "/messages",
        422,
    )
    .await;
    c.call(
        tenant(Method::GET, "/webhook/deliveries", &key),
        "/webhook/deliveries",
        200,
    )
    .await;
    c.call(
        tenant(Method::POST, "/webhook/deliveries/replay", &key).json(&json!({ "status": "dead" })),
        "/webhook/deliveries/replay",
        200,
    )
    .await;
    c.call(
        tenant(Method::POST, "/webhook/deliveries/12345/replay", &key),
        "/webhook/deliveries/{id}/replay",
        404,
    )
    .await;
    c.call(tenant(Method::DELETE, "/webhook", &key), "/webhook", 200)
        .await;
    c.call(
        admin(Method::DELETE, &format!("/admin/tenants/{id}")),
        "/admin/tenants/{id}",
        204,
    )
    .await;
    assert!(c.checked.len() >= 30, "{:#?}", c.checked);

    // Webhook bodies, as the outbox writes them, match `webhooks`.
    let tenant_id = wago::tenants::TenantId::from_raw("t1");
    let events = [
        wago::events::Event::MessageReceived {
            message_id: "3EB0".into(),
            chat_id: "62812000002@s.whatsapp.net".into(),
            sender_id: "62812000002@s.whatsapp.net".into(),
            text: Some("halo".into()),
            kind: "conversation".into(),
            timestamp_ms: 1_700_000_000_000,
            data: serde_json::Map::new(),
        },
        wago::events::Event::MessageStatus {
            message_id: "3EB0".into(),
            chat_id: "62812000002@s.whatsapp.net".into(),
            status: wago::types::MessageStatus::Read,
            previous_status: Some(wago::types::MessageStatus::Sent),
            error: None,
        },
        wago::events::Event::SessionStatus {
            state: wago::sessions::SessionState::Connected,
            previous_state: None,
            jid: Some("62811000001:3@s.whatsapp.net".into()),
            reason: None,
        },
    ];
    for event in events {
        let body = event.body(&tenant_id, 7, 1_700_000_000_000);
        let schema = c.doc["webhooks"][event.name()]["post"]["requestBody"]["content"]
            ["application/json"]["schema"]
            .clone();
        c.schema_validates(&schema, &body, event.name());
    }
}
