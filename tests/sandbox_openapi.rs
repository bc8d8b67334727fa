//! The sandbox control API's OpenAPI document against the sandbox that
//! serves it: every described operation is served and nothing else on its
//! paths, and real answers validate against their schemas.
#![cfg(feature = "sandbox")]

mod support_openapi;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support_openapi::{Checker, collect_refs, operations, probe_routes};
use support_sandbox::{Companion, STEP, Sandbox};

async fn document(sandbox: &Sandbox) -> Value {
    let res = sandbox
        .http
        .get(sandbox.url("/sandbox/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_served_and_nothing_else() {
    let sandbox = Sandbox::start().await;
    let doc = document(&sandbox).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "WAGO sandbox control API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    // The Rust twin is the served document.
    let twin = serde_json::to_value(wago::sandbox::control_document()).unwrap();
    assert_eq!(twin, doc);

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

    let ops = operations(&doc);
    let want: BTreeSet<(String, String)> = [
        ("/phones", "post"),
        ("/phones/{phone}", "get"),
        ("/phones/{phone}/link", "post"),
        ("/phones/{phone}/link-code", "post"),
        ("/phones/{phone}/unlink", "post"),
        ("/phones/{phone}/messages", "get"),
        ("/phones/{phone}/messages", "post"),
        ("/phones/{phone}/read", "post"),
        ("/phones/{phone}/media", "post"),
        ("/sandbox/health", "get"),
        ("/sandbox/media-certificate", "get"),
        ("/sandbox/connections", "get"),
        ("/sandbox/openapi.json", "get"),
        ("/admin/mock-phone/scan-qr", "post"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m.to_owned()))
    .collect();
    assert_eq!(ops.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(
        doc["paths"]["/admin/mock-phone/scan-qr"]["post"]["requestBody"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["text/plain"],
        "the scan takes the raw QR"
    );

    for (path, method) in &ops {
        let op = &doc["paths"][path][method];
        assert_eq!(op["tags"], json!(["sandbox"]), "{method} {path}");
        assert!(
            op["responses"]
                .as_object()
                .is_some_and(|r| r.keys().any(|s| s.starts_with('2'))),
            "{method} {path} documents its success"
        );
        // Every error answer is the one error body.
        for (status, response) in op["responses"].as_object().unwrap() {
            if !status.starts_with('2') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        if path.contains('{') {
            assert!(
                op["responses"]["404"].is_object(),
                "{method} {path} documents an unknown phone"
            );
        }
        if op["requestBody"].is_object() {
            assert!(
                op["responses"]["400"].is_object(),
                "{method} {path} documents a bad body"
            );
        }
    }
    probe_routes(
        &sandbox.http,
        &sandbox.url(""),
        &doc,
        "no such route in the sandbox",
    )
    .await;
}

/// Routes can only be added with `routes!`, which documents them: a plain
/// axum `.route(` in the control API would serve an undocumented route.
#[test]
fn the_control_api_registers_routes_only_through_the_document() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox/src");
    for file in ["control.rs", "mock.rs"] {
        let path = dir.join(file);
        let source = std::fs::read_to_string(&path).unwrap();
        assert!(
            !source.contains(".route(") && !source.contains(".route_service("),
            "{} adds a route without describing it: use `.routes(routes!(handler))`",
            path.display()
        );
    }
}

/// Validates answers against the document: a schema for each (path,
/// method, status), with undocumented fields refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_document() {
    let sandbox = Sandbox::start().await;
    let mut c = Checker::new(document(&sandbox).await);
    // The checker refuses what the document does not say.
    let account = json!({ "$ref": "#/components/schemas/Account" });
    let fine = json!({ "phone": "62811", "lid": "1", "devices": [0], "online": [] });
    assert!(c.errors(&account, &fine).is_empty());
    for wrong in [
        json!({ "phone": "62811", "lid": "1", "devices": [0], "online": [], "extra": 1 }),
        json!({ "phone": "62811", "lid": "1", "devices": [0] }),
        json!({ "phone": 62811, "lid": "1", "devices": [0], "online": [] }),
    ] {
        assert!(
            !c.errors(&account, &wrong).is_empty(),
            "{wrong} was accepted"
        );
    }
    let error = json!({ "$ref": "#/components/schemas/ErrorBody" });
    assert!(
        !c.errors(&error, &json!({ "error": "oops", "message": "x" }))
            .is_empty()
    );

    let url = |p: &str| sandbox.url(p);
    let http = &sandbox.http;
    let post = |p: &str, body: Value| http.post(url(p)).json(&body);
    let get = |p: &str| http.get(url(p));
    let (a, b) = ("62811000501", "62811000502");

    c.call(get("/sandbox/health"), "/sandbox/health", 200).await;
    let pem = c
        .call_text(
            get("/sandbox/media-certificate"),
            "/sandbox/media-certificate",
            200,
        )
        .await;
    assert_eq!(pem, sandbox.inner.media_certificate_pem());
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    c.call(get("/sandbox/openapi.json"), "/sandbox/openapi.json", 200)
        .await;
    c.call(get("/sandbox/connections"), "/sandbox/connections", 200)
        .await;

    // Accounts.
    c.call(post("/phones", json!({ "phone": a })), "/phones", 201)
        .await;
    c.call(
        post("/phones", json!({ "phone": "+62 811-0005-02" })),
        "/phones",
        201,
    )
    .await;
    c.call(post("/phones", json!({ "phone": a })), "/phones", 409)
        .await;
    c.call(
        post("/phones", json!({ "phone": "62-abc" })),
        "/phones",
        422,
    )
    .await;
    c.call(post("/phones", json!({ "number": a })), "/phones", 400)
        .await;
    c.call(
        http.post(url("/phones"))
            .header("content-type", "application/json")
            .body("{not json"),
        "/phones",
        400,
    )
    .await;
    c.call(http.post(url("/phones")).body(a), "/phones", 400)
        .await;
    c.call(get(&format!("/phones/{a}")), "/phones/{phone}", 200)
        .await;
    c.call(get("/phones/62811000599"), "/phones/{phone}", 404)
        .await;
    c.call(get("/phones/not-a-number"), "/phones/{phone}", 404)
        .await;

    // Linking by QR: a companion, and the refusals.
    let mut companion = Companion::fresh(&sandbox.ws_url()).await;
    let qr = companion.next_qr().await;
    let link = format!("/phones/{a}/link");
    let linked = c
        .call(
            post(&link, json!({ "qr": qr })),
            "/phones/{phone}/link",
            200,
        )
        .await;
    assert_eq!(linked["device"], 1, "{linked}");
    companion.connected().await;
    c.call(
        post(&link, json!({ "qr": "not,a,qr" })),
        "/phones/{phone}/link",
        400,
    )
    .await;
    c.call(post(&link, json!({})), "/phones/{phone}/link", 400)
        .await;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let forged = format!("2@nobody,{key},{key},{key},1");
    c.call(
        post(&link, json!({ "qr": forged })),
        "/phones/{phone}/link",
        409,
    )
    .await;
    c.call(
        post("/phones/62811000599/link", json!({ "qr": forged })),
        "/phones/{phone}/link",
        404,
    )
    .await;

    // Pair codes, refused (a real one is `sandbox_pair_code`'s).
    let link_code = format!("/phones/{b}/link-code");
    c.call(
        post(&link_code, json!({ "code": "0000" })),
        "/phones/{phone}/link-code",
        422,
    )
    .await;
    c.call(
        post(&link_code, json!({ "code": "ABCD-EFGH" })),
        "/phones/{phone}/link-code",
        409,
    )
    .await;
    c.call(
        post(
            "/phones/62811000599/link-code",
            json!({ "code": "ABCD-EFGH" }),
        ),
        "/phones/{phone}/link-code",
        404,
    )
    .await;
    c.call(
        post(&link_code, json!({ "qr": "x" })),
        "/phones/{phone}/link-code",
        400,
    )
    .await;

    // The mock contract's scan.
    let mut named = Companion::named(&sandbox.ws_url(), "openapi_1").await;
    let named_qr = named.next_qr().await;
    let scanned = c
        .call(
            http.post(url("/admin/mock-phone/scan-qr"))
                .header("content-type", "text/plain")
                .body(named_qr),
            "/admin/mock-phone/scan-qr",
            200,
        )
        .await;
    assert_eq!(scanned["device"], 1, "{scanned}");
    named.connected().await;
    c.call(
        http.post(url("/admin/mock-phone/scan-qr")).body("not a qr"),
        "/admin/mock-phone/scan-qr",
        400,
    )
    .await;
    c.call(
        http.post(url("/admin/mock-phone/scan-qr"))
            .body(vec![0xff_u8, 0xfe]),
        "/admin/mock-phone/scan-qr",
        400,
    )
    .await;
    c.call(
        http.post(url("/admin/mock-phone/scan-qr")).body(forged),
        "/admin/mock-phone/scan-qr",
        409,
    )
    .await;

    // Texts: b's phone writes to a, a's phone lists and reads them.
    let messages = format!("/phones/{b}/messages");
    let sent = c
        .call(
            post(&messages, json!({ "to": a, "text": "halo" })),
            "/phones/{phone}/messages",
            200,
        )
        .await;
    c.call(
        post(&messages, json!({ "to": "62811000599", "text": "halo" })),
        "/phones/{phone}/messages",
        404,
    )
    .await;
    c.call(
        post(&messages, json!({ "to": a, "text": "" })),
        "/phones/{phone}/messages",
        422,
    )
    .await;
    c.call(
        post(&messages, json!({ "to": "62-abc", "text": "halo" })),
        "/phones/{phone}/messages",
        422,
    )
    .await;
    c.call(
        post(&messages, json!({ "text": "halo" })),
        "/phones/{phone}/messages",
        400,
    )
    .await;
    // A file: the body, described by the query.
    let media = |query: &str| {
        http.post(url(&format!("/phones/{b}/media?{query}")))
            .body(vec![1u8; 1000])
    };
    let file = c
        .call(
            media(&format!("to={a}&kind=document&file_name=a.pdf")),
            "/phones/{phone}/media",
            200,
        )
        .await;
    assert!(file["id"].is_string(), "{file}");
    c.call(
        media(&format!("to={a}&kind=hologram")),
        "/phones/{phone}/media",
        400,
    )
    .await;
    c.call(
        media("to=62811000599&kind=image"),
        "/phones/{phone}/media",
        404,
    )
    .await;
    c.call(
        http.post(url(&format!("/phones/{b}/media?to={a}&kind=image"))),
        "/phones/{phone}/media",
        422,
    )
    .await;
    let inbox = c
        .call(
            get(&format!("/phones/{a}/messages")),
            "/phones/{phone}/messages",
            200,
        )
        .await;
    assert_eq!(inbox[0]["id"], sent["id"], "{inbox}");
    assert_eq!(inbox[0]["from"], b, "{inbox}");
    c.call(
        get("/phones/62811000599/messages"),
        "/phones/{phone}/messages",
        404,
    )
    .await;
    let read = format!("/phones/{a}/read");
    let count = c
        .call(
            post(&read, json!({ "from": b })),
            "/phones/{phone}/read",
            200,
        )
        .await;
    // The text and the file.
    assert_eq!(count, json!({ "read": 2 }));
    c.call(
        post(&read, json!({ "from": "x" })),
        "/phones/{phone}/read",
        422,
    )
    .await;
    c.call(post(&read, json!({})), "/phones/{phone}/read", 400)
        .await;
    c.call(
        post("/phones/62811000599/read", json!({ "from": b })),
        "/phones/{phone}/read",
        404,
    )
    .await;

    // Unlinking, and the connections it ended.
    let unlinked = c
        .call(
            http.post(url(&format!("/phones/{a}/unlink"))),
            "/phones/{phone}/unlink",
            200,
        )
        .await;
    assert_eq!(unlinked, json!({ "phone": a, "removed": [1] }));
    c.call(
        http.post(url("/phones/62811000599/unlink")),
        "/phones/{phone}/unlink",
        404,
    )
    .await;
    companion.logged_out().await;
    let start = Instant::now();
    loop {
        let logins = c
            .call(get("/sandbox/connections"), "/sandbox/connections", 200)
            .await;
        let logins = logins.as_array().unwrap();
        let closed = logins.iter().any(|l| l["closed_ms"].is_u64());
        let open = logins.iter().any(|l| l["closed_ms"].is_null());
        if closed && open {
            break;
        }
        assert!(
            start.elapsed() < STEP,
            "no closed and open logins: {logins:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    companion.stop().await;
    named.stop().await;

    // Every operation was checked, with its errors.
    let every: BTreeSet<(String, String)> = operations(&c.doc).into_iter().collect();
    assert_eq!(c.operations, every);
    assert!(c.checked.len() >= 30, "{:#?}", c.checked);
}
