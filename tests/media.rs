//! Media end to end: WAGO's media routes, its send queue and the sandbox as
//! WhatsApp's media host. Every kind goes up encrypted over TLS and reaches
//! a simulated phone, which fetches, decrypts and checks it against the
//! bytes the test sent; a file named by URL is fetched; bad input and
//! oversized files change nothing; a crash after the accept sends once; and
//! each sent file is released. Every test runs on SQLite and on Postgres.
#![cfg(feature = "sandbox")]

mod common;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;
mod support_wago;

use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use common::{TestApp, TestDb};
use support_sandbox::{STEP, Sandbox};
use support_wago::{Tenant, spawn};

const ACME: &str = "62811000801";
const BOB: &str = "62812000801";

/// `n` bytes that are not all alike (and not a multiple of the cipher's
/// block), different for each `seed`.
fn file(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| ((i * 7 + seed) % 251) as u8)
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Posts a multipart form to a media route.
async fn post_form(
    app: &TestApp,
    tenant: &Tenant,
    path: &str,
    form: Form,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.url(path))
        .header("X-API-Key", &tenant.key)
        .multipart(form);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn form(to: &str, bytes: Vec<u8>, part_name: &str, part_type: &str) -> Form {
    let part = Part::bytes(bytes)
        .file_name(part_name.to_owned())
        .mime_str(part_type)
        .expect("a MIME type");
    Form::new().text("to", to.to_owned()).part("file", part)
}

/// The phone's inbox entry for message `id`, once it is there.
async fn phone_got(sandbox: &Sandbox, phone: &str, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (status, inbox) = sandbox.get(&format!("/phones/{phone}/messages")).await;
        assert_eq!(status, 200, "{inbox}");
        let found: Vec<&Value> = inbox
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["id"] == id)
            .collect();
        if let [one] = found.as_slice() {
            return (*one).clone();
        }
        assert!(found.len() < 2, "{id} reached the phone twice: {inbox}");
        assert!(
            start.elapsed() < STEP,
            "{id} never reached {phone}: {inbox}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Files kept in the media directory (spooled ones aside).
fn kept_files(db: &TestDb) -> Vec<String> {
    let mut kept = Vec::new();
    let Ok(tenants) = std::fs::read_dir(db.media_dir()) else {
        return kept;
    };
    for tenant in tenants.flatten() {
        if tenant.file_name() == ".spool" {
            continue;
        }
        for file in std::fs::read_dir(tenant.path()).unwrap().flatten() {
            kept.push(file.path().display().to_string());
        }
    }
    kept
}

fn spooled_files(db: &TestDb) -> Vec<String> {
    std::fs::read_dir(db.media_dir().join(".spool"))
        .map(|dir| {
            dir.flatten()
                .map(|f| f.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn media_row(app: &TestApp, message_id: &str) -> (String, Option<String>, i64, String) {
    sqlx::query_as(
        "SELECT md.state, md.storage_key, md.size, md.sha256
           FROM media md JOIN messages m ON m.id = md.message_row
          WHERE m.message_id = $1",
    )
    .bind(message_id)
    .fetch_one(app.store.pool())
    .await
    .expect("the media row")
}

/// Polls until the send's file is released (its ack recorded).
async fn released(app: &TestApp, message_id: &str) {
    let start = Instant::now();
    loop {
        let (state, key, _, _) = media_row(app, message_id).await;
        if state == "released" {
            assert_eq!(key, None);
            return;
        }
        assert!(start.elapsed() < STEP, "{message_id} is still {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn paired(db: &TestDb, sandbox: &Sandbox, extra: &[(&str, &str)]) -> (TestApp, Tenant) {
    sandbox.create_phone(ACME).await;
    sandbox.create_phone(BOB).await;
    let app = spawn(db, sandbox, extra).await;
    let acme = Tenant::create(&app, "acme").await;
    acme.pair(&app, sandbox, ACME).await;
    (app, acme)
}

async fn every_kind_reaches_the_phone_and_is_then_released(db: TestDb) {
    let sandbox = Sandbox::start().await;
    let (app, acme) = paired(&db, &sandbox, &[]).await;

    struct Case {
        path: &'static str,
        kind: &'static str,
        bytes: Vec<u8>,
        form: Form,
        mimetype: &'static str,
        caption: &'static str,
        file_name: Option<&'static str>,
        voice: bool,
    }
    let image = file(70_001, 1);
    let document = file(300_003, 2);
    let voice = file(20_005, 3);
    let video = file(120_007, 4);
    let sticker = file(9_009, 5);
    let cases = vec![
        Case {
            path: "/send-image",
            kind: "image",
            form: form(BOB, image.clone(), "photo.png", "image/png").text("caption", "a photo"),
            bytes: image,
            mimetype: "image/png",
            caption: "a photo",
            file_name: None,
            voice: false,
        },
        Case {
            path: "/send-document",
            kind: "document",
            form: form(
                BOB,
                document.clone(),
                "upload.bin",
                "application/octet-stream",
            )
            .text("file_name", "invoice 42.pdf")
            .text("mimetype", "application/pdf")
            .text("caption", "your invoice"),
            bytes: document,
            mimetype: "application/pdf",
            caption: "your invoice",
            file_name: Some("invoice 42.pdf"),
            voice: false,
        },
        Case {
            path: "/send-audio",
            kind: "audio",
            form: form(BOB, voice.clone(), "note.ogg", "audio/ogg; codecs=opus")
                .text("voice", "true"),
            bytes: voice,
            mimetype: "audio/ogg; codecs=opus",
            caption: "",
            file_name: None,
            voice: true,
        },
        Case {
            path: "/send-video",
            kind: "video",
            form: form(BOB, video.clone(), "clip.mp4", "video/mp4"),
            bytes: video,
            mimetype: "video/mp4",
            caption: "",
            file_name: None,
            voice: false,
        },
        Case {
            path: "/send-sticker",
            kind: "sticker",
            form: form(BOB, sticker.clone(), "s.webp", "image/webp"),
            bytes: sticker,
            mimetype: "image/webp",
            caption: "",
            file_name: None,
            voice: false,
        },
    ];
    for case in cases {
        let (status, sent) = post_form(&app, &acme, case.path, case.form, &[]).await;
        assert_eq!(status, 200, "{}: {sent}", case.path);
        assert_eq!(sent["status"], "sent", "{}: {sent}", case.path);
        let id = sent["message_id"].as_str().unwrap();

        let got = phone_got(&sandbox, BOB, id).await;
        assert_eq!(got["from"], ACME);
        assert_eq!(got["text"], case.caption, "{}", case.path);
        let media = &got["media"];
        assert_eq!(media["kind"], case.kind, "{got}");
        assert_eq!(media["verified"], true, "{got}");
        assert_eq!(media["sha256"], sha256(&case.bytes), "{got}");
        assert_eq!(media["size"], case.bytes.len(), "{got}");
        assert_eq!(media["mimetype"], case.mimetype, "{got}");
        assert_eq!(media["file_name"].as_str(), case.file_name, "{got}");
        assert_eq!(
            media["voice"].as_bool().unwrap_or(false),
            case.voice,
            "{got}"
        );

        // WAGO recorded what it sent, then let the file go.
        let (_, message) = acme.get(&app, &format!("/messages/{id}")).await;
        assert_eq!(
            message["kind"],
            format!("{}Message", case.kind),
            "{message}"
        );
        released(&app, id).await;
        let (_, _, size, hash) = media_row(&app, id).await;
        assert_eq!(size, case.bytes.len() as i64);
        assert_eq!(hash, sha256(&case.bytes));
    }
    assert_eq!(
        kept_files(&db),
        Vec::<String>::new(),
        "sent files are deleted"
    );
    assert_eq!(
        spooled_files(&db),
        Vec::<String>::new(),
        "nothing is left spooled"
    );
    app.stop().await;
}

async fn a_repeated_idempotency_key_sends_one_file_once(db: TestDb) {
    let sandbox = Sandbox::start().await;
    let (app, acme) = paired(&db, &sandbox, &[]).await;
    let bytes = file(40_000, 9);
    let key = [("Idempotency-Key", "media-once")];
    let (status, first) = post_form(
        &app,
        &acme,
        "/send-image",
        form(BOB, bytes.clone(), "a.jpg", "image/jpeg"),
        &key,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = post_form(
        &app,
        &acme,
        "/send-image",
        form(BOB, bytes.clone(), "a.jpg", "image/jpeg"),
        &key,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["message_id"], first["message_id"]);
    let id = first["message_id"].as_str().unwrap();
    phone_got(&sandbox, BOB, id).await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM media")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
    released(&app, id).await;
    assert_eq!(kept_files(&db), Vec::<String>::new());
    app.stop().await;
}

/// Serves `bytes` at `/files/{name}` on a loopback port, and answers 404
/// for anything else.
async fn file_server(bytes: Vec<u8>, content_type: &'static str) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/files/{name}",
        axum::routing::get(move || {
            let bytes = bytes.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, content_type)], bytes) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn a_file_named_by_url_is_fetched_and_sent(db: TestDb) {
    let sandbox = Sandbox::start().await;
    let (app, acme) = paired(&db, &sandbox, &[]).await;
    let bytes = file(150_000, 11);
    let server = file_server(bytes.clone(), "application/pdf").await;
    let url = format!("http://{server}/files/report%20Q3.pdf");
    let body = json!({ "to": BOB, "url": url, "caption": "the report" });
    let (status, sent) = acme.post(&app, "/send-document", body).await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["message_id"].as_str().unwrap();
    let got = phone_got(&sandbox, BOB, id).await;
    assert_eq!(got["text"], "the report");
    assert_eq!(got["media"]["verified"], true, "{got}");
    assert_eq!(got["media"]["sha256"], sha256(&bytes));
    assert_eq!(got["media"]["mimetype"], "application/pdf");
    assert_eq!(got["media"]["file_name"], "report Q3.pdf");

    // A URL that does not answer with a file is refused, naming why.
    let missing = json!({ "to": BOB, "url": format!("http://{server}/nothing") });
    let (status, refused) = acme.post(&app, "/send-document", missing).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("404"),
        "{refused}"
    );
    // Too large for its kind: refused once the download passes the limit.
    let big = file_server(file(512 * 1024 + 1, 1), "image/webp").await;
    let body = json!({ "to": BOB, "url": format!("http://{big}/files/s.webp") });
    let (status, refused) = acme.post(&app, "/send-sticker", body).await;
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["error"], "payload_too_large");
    let outbound: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE direction = 'out'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(outbound, 1, "only the fetched document was written");
    app.stop().await;

    // Without WEBHOOK_ALLOW_PRIVATE a loopback URL is refused outright.
    let guarded = spawn(&db, &sandbox, &[("WEBHOOK_ALLOW_PRIVATE", "false")]).await;
    let body = json!({ "to": BOB, "url": format!("http://{server}/files/a.pdf") });
    let (status, refused) = acme.post(&guarded, "/send-document", body).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().starts_with("url: "),
        "{refused}"
    );
    guarded.stop().await;
}

async fn bad_media_sends_are_refused_and_change_nothing(db: TestDb) {
    let sandbox = Sandbox::start().await;
    let (app, acme) = paired(&db, &sandbox, &[]).await;
    let small = || file(1_000, 1);

    // One byte over WhatsApp's limit for images.
    let over = file(16 * 1024 * 1024 + 1, 3);
    let (status, body) = post_form(
        &app,
        &acme,
        "/send-image",
        form(BOB, over, "big.jpg", "image/jpeg"),
        &[],
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "payload_too_large");
    assert_eq!(
        body["message"],
        "the image is larger than 16777216 bytes, WhatsApp's limit for its kind"
    );

    let cases: Vec<(&str, Form, &str)> = vec![
        (
            "/send-image",
            Form::new().part("file", Part::bytes(small()).file_name("a.jpg")),
            "to: is required",
        ),
        (
            "/send-image",
            Form::new().text("to", BOB),
            "file: is required",
        ),
        (
            "/send-image",
            form("not a number", small(), "a.jpg", "image/jpeg"),
            "to: ",
        ),
        (
            "/send-audio",
            form(BOB, small(), "a.ogg", "audio/ogg").text("caption", "hi"),
            "caption: a audio carries no caption",
        ),
        (
            "/send-image",
            form(BOB, small(), "a.jpg", "image/jpeg").text("mimetype", "video/mp4"),
            "mimetype: video/mp4 is not a type for a image",
        ),
        (
            "/send-image",
            form(BOB, small(), "a.jpg", "image/jpeg").text("voice", "true"),
            "voice: only audio",
        ),
        (
            "/send-document",
            form(BOB, small(), "a.pdf", "application/pdf").text("file_name", "../etc/passwd"),
            "file_name: must not hold slashes",
        ),
        (
            "/send-image",
            form(BOB, Vec::new(), "a.jpg", "image/jpeg"),
            "file: the file is empty",
        ),
        (
            "/send-image",
            form(BOB, small(), "a.jpg", "image/jpeg").text("colour", "red"),
            "colour: is not a field",
        ),
    ];
    for (path, form, want) in cases {
        let (status, body) = post_form(&app, &acme, path, form, &[]).await;
        assert_eq!(status, 422, "{path} {want}: {body}");
        assert_eq!(body["error"], "invalid_field", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with(want), "{path}: {message} (want {want})");
    }
    let response = app
        .http
        .post(app.url("/send-image"))
        .header("X-API-Key", &acme.key)
        .header("Content-Type", "text/plain")
        .body("a picture")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let outbound: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(outbound, 0, "no refused send was written");
    assert_eq!(
        kept_files(&db),
        Vec::<String>::new(),
        "no refused file is kept"
    );
    assert_eq!(spooled_files(&db), Vec::<String>::new(), "nor left spooled");
    app.stop().await;
}

async fn a_media_send_accepted_before_a_crash_goes_once_after_it(db: TestDb) {
    let sandbox = Sandbox::start().await;
    // One send a minute: the first goes, the media send behind it waits.
    let paced = [("SEND_RATE_PER_MINUTE", "1"), ("SEND_BURST", "1")];
    let (app, acme) = paired(&db, &sandbox, &paced).await;
    let (status, first) = acme
        .post(&app, "/send-text", json!({ "to": BOB, "text": "first" }))
        .await;
    assert_eq!(status, 200, "{first}");
    let bytes = file(250_000, 21);
    let (status, held) = post_form(
        &app,
        &acme,
        "/send-document",
        form(BOB, bytes.clone(), "held.pdf", "application/pdf"),
        &[],
    )
    .await;
    assert_eq!(status, 202, "{held}");
    assert_eq!(held["status"], "queued");
    let id = held["message_id"].as_str().unwrap().to_owned();
    assert_eq!(kept_files(&db).len(), 1, "the file is kept while queued");
    app.crash();

    let app = spawn(&db, &sandbox, &[]).await;
    acme.wait_state(&app, "connected").await;
    let got = phone_got(&sandbox, BOB, &id).await;
    assert_eq!(got["media"]["verified"], true, "{got}");
    assert_eq!(got["media"]["sha256"], sha256(&bytes));
    assert_eq!(got["media"]["file_name"], "held.pdf");
    released(&app, &id).await;
    assert_eq!(kept_files(&db), Vec::<String>::new());
    app.stop().await;
}

/// Polls `GET /messages/{id}` until the message is there.
async fn message_until(app: &TestApp, tenant: &Tenant, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = tenant.get(app, &format!("/messages/{id}")).await;
        if status == 200 {
            return body;
        }
        assert!(start.elapsed() < STEP, "{id} never stored: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_media(app: &TestApp, tenant: &Tenant, id: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/messages/{id}/media")))
        .header("X-API-Key", &tenant.key)
        .send()
        .await
        .expect("the server answers")
}

async fn what_the_phone_sends_is_fetched_stored_and_served(db: TestDb) {
    use wago_sandbox::{MediaKind, NewMedia};
    let sandbox = Sandbox::start().await;
    let (app, acme) = paired(&db, &sandbox, &[]).await;
    let hook = common::receiver::Receiver::start().await;
    acme.webhook(&app, &hook.url(), &["message.received"]).await;

    let media = |kind, mimetype: &str, file_name: Option<&str>, caption: Option<&str>| NewMedia {
        to: ACME.into(),
        kind,
        mimetype: Some(mimetype.into()),
        file_name: file_name.map(Into::into),
        caption: caption.map(Into::into),
        voice: false,
        tamper: false,
    };
    let cases = [
        (
            media(MediaKind::Image, "image/png", None, Some("look")),
            file(33_333, 1),
        ),
        (
            media(
                MediaKind::Document,
                "application/pdf",
                Some("contract v2.pdf"),
                None,
            ),
            file(210_000, 2),
        ),
        (
            NewMedia {
                voice: true,
                ..media(MediaKind::Audio, "audio/ogg; codecs=opus", None, None)
            },
            file(12_345, 3),
        ),
        (
            media(MediaKind::Video, "video/mp4", None, None),
            file(99_999, 4),
        ),
        (
            media(MediaKind::Sticker, "image/webp", None, None),
            file(7_777, 5),
        ),
    ];
    let mut sent = Vec::new();
    for (meta, bytes) in cases {
        let expect = (
            meta.kind,
            meta.mimetype.clone(),
            meta.file_name.clone(),
            meta.voice,
        );
        let id = sandbox
            .inner
            .send_media(BOB, meta, bytes.clone())
            .await
            .expect("the phone sends");
        sent.push((id, bytes, expect));
    }
    for (id, bytes, (kind, mimetype, file_name, voice)) in &sent {
        let message = message_until(&app, &acme, id).await;
        let kind_name = format!("{kind:?}").to_lowercase();
        assert_eq!(message["kind"], format!("{kind_name}Message"), "{message}");
        let media = &message["media"];
        assert_eq!(media["state"], "stored", "{message}");
        assert_eq!(media["kind"], kind_name);
        assert_eq!(media["sha256"], sha256(bytes));
        assert_eq!(media["size"], bytes.len());
        assert_eq!(media["voice"], *voice);
        assert_eq!(media["url"], format!("/messages/{id}/media"));
        let served = get_media(&app, &acme, id).await;
        assert_eq!(served.status(), 200);
        let content_type = served.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(Some(content_type), mimetype.clone());
        let disposition = served
            .headers()
            .get("content-disposition")
            .map(|v| v.to_str().unwrap().to_owned());
        match file_name {
            Some(name) => assert!(
                disposition
                    .as_deref()
                    .is_some_and(|d| d.contains(&format!("\"{name}\""))),
                "{disposition:?}"
            ),
            None => assert_eq!(disposition, None),
        }
        assert_eq!(
            served.bytes().await.unwrap().to_vec(),
            *bytes,
            "{id}'s bytes"
        );
    }
    // The inbox lists them with their files; the webhook told of each.
    let (_, page) = acme.get(&app, "/messages").await;
    let listed = page["messages"].as_array().unwrap();
    assert_eq!(listed.len(), sent.len());
    for m in listed {
        assert_eq!(m["media"]["state"], "stored", "{m}");
    }
    let events = hook.wait_for(sent.len(), STEP).await;
    for (event, (id, bytes, _)) in events.iter().zip(&sent) {
        let body = event.json();
        assert_eq!(body["message_id"], *id);
        assert_eq!(body["data"]["media"]["sha256"], sha256(bytes), "{body}");
        assert_eq!(
            body["data"]["media"]["url"],
            format!("/messages/{id}/media")
        );
    }

    // A blob that does not decrypt: the message is stored, its file
    // refused with why, after the attempts it is given.
    let tampered = NewMedia {
        tamper: true,
        ..media(MediaKind::Image, "image/jpeg", None, Some("broken"))
    };
    let id = sandbox
        .inner
        .send_media(BOB, tampered, file(5_000, 6))
        .await
        .expect("sent");
    let message = message_until(&app, &acme, &id).await;
    assert_eq!(message["text"], "broken");
    assert_eq!(message["media"]["state"], "failed", "{message}");
    let error = message["media"]["error"].as_str().unwrap();
    assert!(error.starts_with("the download failed"), "{error}");
    let refused = get_media(&app, &acme, &id).await;
    assert_eq!(refused.status(), 410);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "gone");
    // No file of the refused one is kept, and none is left spooled.
    assert_eq!(kept_files(&db).len(), sent.len());
    assert_eq!(spooled_files(&db), Vec::<String>::new());

    // A text is not a file; an unknown id is not a message.
    let (status, _) = sandbox
        .post(
            &format!("/phones/{BOB}/messages"),
            json!({ "to": ACME, "text": "plain" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, sent_text) = acme
        .post(&app, "/send-text", json!({ "to": BOB, "text": "hi" }))
        .await;
    let text_id = sent_text["message_id"].as_str().unwrap();
    assert_eq!(get_media(&app, &acme, text_id).await.status(), 404);
    assert_eq!(get_media(&app, &acme, "3EB0NOSUCH").await.status(), 404);

    // Deleting the tenant deletes its files.
    let deleted = app
        .admin(
            reqwest::Method::DELETE,
            &format!("/admin/tenants/{}", acme.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(kept_files(&db), Vec::<String>::new());
    app.stop().await;
}

async fn files_past_their_retention_are_deleted_and_their_messages_stay(db: TestDb) {
    use wago_sandbox::{MediaKind, NewMedia};
    let sandbox = Sandbox::start().await;
    // A node sweeps every second with a retention this short.
    let (app, acme) = paired(&db, &sandbox, &[("MEDIA_RETENTION", "1s")]).await;
    let photo = NewMedia {
        to: ACME.into(),
        kind: MediaKind::Image,
        mimetype: None,
        file_name: None,
        caption: Some("old news".into()),
        voice: false,
        tamper: false,
    };
    let id = sandbox
        .inner
        .send_media(BOB, photo, file(2_000, 8))
        .await
        .expect("sent");
    let start = Instant::now();
    let message = loop {
        let message = message_until(&app, &acme, &id).await;
        if message["media"]["state"] == "expired" {
            break message;
        }
        assert_eq!(message["media"]["state"], "stored", "{message}");
        assert!(start.elapsed() < STEP, "never expired: {message}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(message["text"], "old news", "the message stays");
    let gone = get_media(&app, &acme, &id).await;
    assert_eq!(gone.status(), 410);
    let body: Value = gone.json().await.unwrap();
    assert_eq!(body["message"], "the file was deleted by retention");
    assert_eq!(kept_files(&db), Vec::<String>::new());
    app.stop().await;
}

db_tests!(
    files_past_their_retention_are_deleted_and_their_messages_stay,
    what_the_phone_sends_is_fetched_stored_and_served,
    every_kind_reaches_the_phone_and_is_then_released,
    a_repeated_idempotency_key_sends_one_file_once,
    a_file_named_by_url_is_fetched_and_sent,
    bad_media_sends_are_refused_and_change_nothing,
    a_media_send_accepted_before_a_crash_goes_once_after_it,
);
