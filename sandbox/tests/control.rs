//! The control API's contract (API.md, "Sandbox control API"): shapes,
//! status codes and `{"error","message"}` bodies.

use crate::support::{Companion, Sandbox};
use base64::Engine as _;
use serde_json::json;

#[tokio::test]
async fn health_and_accounts() {
    let sandbox = Sandbox::start().await;
    assert_eq!(
        sandbox.get("/sandbox/health").await,
        (200, json!({ "ok": true }))
    );

    let a = sandbox.create_phone("+62 811-00000-301").await;
    assert_eq!(a.phone, "6281100000301");
    let b = sandbox.create_phone("6281100000302").await;
    assert_ne!(a.lid, b.lid, "each account has its own LID");
    let (status, body) = sandbox.get("/phones/6281100000301").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({ "phone": "6281100000301", "lid": a.lid, "devices": [0], "online": [] })
    );
}

/// `POST /phones/{from}/messages`.
async fn text(sandbox: &Sandbox, from: &str, to: &str, text: &str) -> (u16, serde_json::Value) {
    let path = format!("/phones/{from}/messages");
    sandbox.post(&path, json!({ "to": to, "text": text })).await
}

#[tokio::test]
async fn errors_are_json_with_the_documented_codes() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000303").await;
    let cases = [
        (
            sandbox
                .post("/phones", json!({ "phone": "62811000303" }))
                .await,
            409,
            "conflict",
        ),
        (
            sandbox.post("/phones", json!({ "phone": "0811" })).await,
            422,
            "invalid_field",
        ),
        (
            sandbox.post("/phones", json!({ "phone": "62-abc" })).await,
            422,
            "invalid_field",
        ),
        (
            sandbox.post("/phones", json!({ "number": "62811" })).await,
            400,
            "bad_request",
        ),
        (sandbox.get("/phones/62811000399").await, 404, "not_found"),
        (sandbox.link("62811000399", "x").await, 404, "not_found"),
        (
            sandbox.link("62811000303", "not,a,qr").await,
            400,
            "bad_request",
        ),
        (sandbox.get("/no/such/route").await, 404, "not_found"),
        // Messages: unknown sender or recipient, bad number, empty text,
        // a body without the fields.
        (
            text(&sandbox, "62811000399", "62811000303", "x").await,
            404,
            "not_found",
        ),
        (
            text(&sandbox, "62811000303", "62811000399", "x").await,
            404,
            "not_found",
        ),
        (
            text(&sandbox, "62811000303", "62-abc", "x").await,
            422,
            "invalid_field",
        ),
        (
            text(&sandbox, "62811000303", "62811000303", "").await,
            422,
            "invalid_field",
        ),
        (
            sandbox
                .post("/phones/62811000303/messages", json!({ "text": "x" }))
                .await,
            400,
            "bad_request",
        ),
        (
            sandbox.get("/phones/62811000399/messages").await,
            404,
            "not_found",
        ),
        (
            sandbox
                .post("/phones/62811000399/read", json!({ "from": "62811000303" }))
                .await,
            404,
            "not_found",
        ),
        (
            sandbox
                .post("/phones/62811000303/read", json!({ "from": "x" }))
                .await,
            422,
            "invalid_field",
        ),
    ];
    for ((status, body), want_status, want_code) in cases {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"], want_code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    let raw = sandbox
        .http
        .post(sandbox.url("/phones"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answer");
    assert_eq!(raw.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_nobody_is_showing_is_409() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000304").await;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let forged = format!("2@nobody,{key},{key},{key},1");
    let (status, body) = sandbox.link("62811000304", &forged).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );

    // A real QR whose keys were swapped for others: also refused.
    let mut companion = Companion::fresh(&sandbox.ws_url()).await;
    let qr = companion.next_qr().await;
    let mut fields: Vec<&str> = qr.split(',').collect();
    fields[1] = &key;
    let (status, body) = sandbox.link("62811000304", &fields.join(",")).await;
    assert_eq!(status, 409, "{body}");
    // The genuine QR still pairs afterwards.
    let (status, body) = sandbox.link("62811000304", &qr).await;
    assert_eq!(status, 200, "{body}");
    companion.connected().await;
    assert_eq!(sandbox.phone("62811000304").await.devices, vec![0, 1]);
    companion.stop().await;
}
