//! The admin page: signing in with the token or the password, the session
//! cookie and its CSRF token, sign-out on every node, throttled failures,
//! the paged tenant list and the live session stream, on both databases;
//! and the page itself in Chromium, pairing a number with the sandbox.
#![cfg(feature = "sandbox")]

mod common;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;
mod support_wago;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, TestApp, TestDb};
use reqwest::Method;
use serde_json::{Value, json};
use support_sandbox::Sandbox;

db_tests!(
    signing_in_sets_a_guarded_cookie_that_ends_at_sign_out,
    tenant_keys_and_ended_sessions_never_open_the_admin_api,
    the_admin_sees_a_tenants_webhook_messages_and_the_dashboard,
    failed_sign_ins_are_slowed_and_limited,
    the_tenant_list_pages_and_searches,
    the_session_stream_says_the_state_now_and_at_each_change,
);

async fn login(app: &TestApp, body: Value) -> reqwest::Response {
    app.http
        .post(app.url("/admin/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Signs in with the token; returns (cookie header value, CSRF token).
async fn signed_in(app: &TestApp) -> (String, String) {
    let res = login(app, json!({ "token": ADMIN_TOKEN })).await;
    assert_eq!(res.status(), 200);
    let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    let pair = set.split(';').next().unwrap().to_owned();
    (pair, body["csrf_token"].as_str().unwrap().to_owned())
}

async fn signing_in_sets_a_guarded_cookie_that_ends_at_sign_out(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    let res = login(&app, json!({ "token": "wrong-token-0123456789" })).await;
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("set-cookie").is_none());

    let res = login(&app, json!({ "token": ADMIN_TOKEN })).await;
    assert_eq!(res.status(), 200);
    let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    let body: Value = res.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();

    // The cookie reads; a change needs the CSRF token as well.
    let get = |path: &str| app.http.get(app.url(path)).header("cookie", &cookie);
    assert_eq!(get("/admin/tenants").send().await.unwrap().status(), 200);
    let me: Value = get("/admin/me").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["csrf_token"], csrf.as_str());
    let create = |csrf: Option<&str>| {
        let mut req = app
            .http
            .post(app.url("/admin/tenants"))
            .header("cookie", &cookie)
            .json(&json!({ "name": "via-page" }));
        if let Some(token) = csrf {
            req = req.header("x-csrf-token", token);
        }
        req
    };
    let res = create(None).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let res = create(Some("not-the-token")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        app.admin_json(Method::GET, "/admin/tenants").await.1["tenants"],
        json!([])
    );
    let res = create(Some(&csrf)).send().await.unwrap();
    assert_eq!(res.status(), 201);

    // Sign-out ends the session for every node: it is a row.
    let res = app
        .http
        .post(app.url("/admin/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(get("/admin/tenants").send().await.unwrap().status(), 401);

    // The password, once set, signs in too; a wrong one does not.
    let res = login(&app, json!({ "password": "correct horse battery" })).await;
    assert_eq!(res.status(), 401, "no password is set yet");
    let hash = wago::http::admin_ui::hash_password("correct horse battery").unwrap();
    app.store.set_admin_password_hash(&hash).await.unwrap();
    assert_eq!(
        login(&app, json!({ "password": "correct horse battery" }))
            .await
            .status(),
        200
    );
    assert_eq!(
        login(&app, json!({ "password": "correct horse" }))
            .await
            .status(),
        401
    );
    assert_eq!(
        login(&app, json!({ "token": ADMIN_TOKEN, "password": "x" }))
            .await
            .status(),
        422
    );
}

async fn tenant_keys_and_ended_sessions_never_open_the_admin_api(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    let (_, key) = app.create_tenant("someone").await;
    for path in ["/admin/tenants", "/admin/dashboard", "/admin/me"] {
        let res = app
            .http
            .get(app.url(path))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path} with a tenant key");
        assert_eq!(
            app.bearer_status(path, &key).await,
            401,
            "{path} with a tenant key as bearer"
        );
        let res = app
            .http
            .get(app.url(path))
            .header("cookie", "wago_admin=forged")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path} with a forged cookie");
    }
    // A session past its end is refused, though its row is still there.
    let (cookie, _) = signed_in(&app).await;
    sqlx::query("UPDATE admin_sessions SET expires_at = 1")
        .execute(app.store.pool())
        .await
        .unwrap();
    let res = app
        .http
        .get(app.url("/admin/tenants"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

async fn the_admin_sees_a_tenants_webhook_messages_and_the_dashboard(db: TestDb) {
    let receiver = common::receiver::Receiver::start().await;
    let app = TestApp::spawn(&db, &[("WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let (id, key) = app.create_tenant("watched").await;
    let base = format!("/admin/tenants/{id}");
    let (status, _) = app
        .admin_json(Method::POST, &format!("{base}/webhook/test"))
        .await;
    assert_eq!(status, 404, "no webhook yet");
    let res = app
        .admin(Method::PUT, &format!("{base}/webhook"))
        .json(&json!({ "url": receiver.url(), "events": ["message.status"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_, hook) = app.tenant_get(&key, "/webhook").await;
    assert_eq!(
        hook["url"],
        receiver.url().as_str(),
        "the tenant sees what the admin set"
    );

    // A test event goes whatever the subscription, and can be replayed.
    let (status, queued) = app
        .admin_json(Method::POST, &format!("{base}/webhook/test"))
        .await;
    assert_eq!(status, 202);
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["event"], "webhook.test");
    assert!(!got[0].header("webhook-id").is_empty());
    let delivery = queued["delivery"].as_i64().unwrap();
    let (status, _) = app
        .admin_json(
            Method::POST,
            &format!("{base}/webhook/deliveries/{delivery}/replay"),
        )
        .await;
    assert_eq!(status, 200);
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1].json()["event"], "webhook.test");
    let (_, list) = app
        .admin_json(Method::GET, &format!("{base}/webhook/deliveries"))
        .await;
    assert_eq!(list["deliveries"][0]["event"], "webhook.test");
    // The tenant's own route does the same.
    let res = app
        .http
        .post(app.url("/webhook/test"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    // A send, queued while the session is down, is among the recent messages.
    let res = app
        .http
        .post(app.url("/send-text"))
        .header("X-API-Key", &key)
        .json(&json!({ "to": "62812000002", "text": "watched send", "queue": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let (_, recent) = app
        .admin_json(Method::GET, &format!("{base}/messages"))
        .await;
    assert_eq!(recent["messages"][0]["text"], "watched send");
    assert_eq!(recent["messages"][0]["direction"], "outbound");
    assert_eq!(recent["messages"][0]["status"], "queued");

    let (status, dash) = app.admin_json(Method::GET, "/admin/dashboard").await;
    assert_eq!(status, 200);
    assert!(dash["last_hour"]["sent"].as_i64().unwrap() >= 1, "{dash}");
    assert!(
        dash["node"]["webhook_delivered"].as_u64().unwrap() >= 2,
        "{dash}"
    );
    assert!(dash["sessions"].is_array());
}

async fn failed_sign_ins_are_slowed_and_limited(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    // Eleven at once: the limiter admits ten attempts a minute.
    let attempts = (0..11).map(|_| login(&app, json!({ "token": "wrong-token-0123456789" })));
    let answers = futures_util::future::join_all(attempts).await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let limited = answers.iter().find(|r| r.status() == 429).unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    // Even the right token waits now.
    assert_eq!(
        login(&app, json!({ "token": ADMIN_TOKEN })).await.status(),
        429
    );
}

async fn the_tenant_list_pages_and_searches(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    for name in [
        "delta",
        "alpha",
        "echo",
        "Bravo-shop",
        "charlie",
        "foxtrot",
        "golf-shop",
    ] {
        app.create_tenant(name).await;
    }
    let page = |query: &str| {
        let query = query.to_owned();
        let app = &app;
        async move {
            app.admin_json(Method::GET, &format!("/admin/tenants?{query}"))
                .await
                .1
        }
    };
    let names = |list: &Value| -> Vec<String> {
        list["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // By name, three at a time, to the end.
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let list = page(&format!("limit=3&after={after}")).await;
        assert!(list["counts"].is_array());
        all.extend(names(&list));
        match list["next_after"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        all,
        [
            "Bravo-shop",
            "alpha",
            "charlie",
            "delta",
            "echo",
            "foxtrot",
            "golf-shop"
        ]
    );
    // Any case; `%` and `_` are plain characters.
    assert_eq!(names(&page("q=SHOP").await), ["Bravo-shop", "golf-shop"]);
    assert!(names(&page("q=%25").await).is_empty());
    assert!(names(&page("q=_").await).is_empty());
    // Without paging, every tenant as before.
    assert_eq!(names(&page("").await).len(), 7);
    let (status, _) = app.admin_json(Method::GET, "/admin/tenants?limit=0").await;
    assert_eq!(status, 422);
}

async fn the_session_stream_says_the_state_now_and_at_each_change(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000900").await;
    let app = support_wago::spawn(&db, &sandbox, &[]).await;
    let (id, _) = app.create_tenant("live").await;
    let (cookie, _) = signed_in(&app).await;
    let mut stream = app
        .http
        .get(app.url(&format!("/admin/tenants/{id}/session/events")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut seen = String::new();
    let mut next_update = async || -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(end) = seen.find("\n\n") {
                let event: String = seen.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    assert!(event.contains("event: session"), "{event}");
                    return serde_json::from_str(data).unwrap();
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, stream.chunk())
                .await
                .expect("an event within 20 s")
                .unwrap()
                .expect("the stream stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    assert_eq!(next_update().await["state"], "unpaired");
    // Pairing starts: the stream shows the QR code, then the scan.
    let (status, qr) = app
        .admin_json(Method::GET, &format!("/admin/tenants/{id}/session/qr"))
        .await;
    assert_eq!(status, 200);
    let mut update = next_update().await;
    while update["qr"].is_null() {
        update = next_update().await;
    }
    assert_eq!(update["state"], "pairing");
    let (status, linked) = sandbox
        .link("62811000900", update["qr"].as_str().unwrap())
        .await;
    assert_eq!(status, 200, "{linked} (the API's QR was {qr})");
    while update["state"] != "connected" {
        update = next_update().await;
    }
    assert!(
        update["jid"].as_str().unwrap().starts_with("62811000900"),
        "{update}"
    );
    assert!(update["qr"].is_null());
}

/// `wago serve --sandbox` as a process: the API and a sandbox in one, as
/// the README's first steps run it. Returns it with its API's and its
/// sandbox control API's addresses, read from what it prints.
fn serve_with_sandbox(data: &std::path::Path) -> (ChildGuard, String, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wago"))
        .args(["serve", "--sandbox"])
        .env("DSN", format!("sqlite://{}/wago.db", data.display()))
        .env("SANDBOX_STATE", data.join("sandbox.json"))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("WEBHOOK_ALLOW_PRIVATE", "true")
        .env("SEND_RATE_PER_MINUTE", "0")
        .env("API_RATE_LIMIT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wago serve --sandbox starts");
    let stderr = child.stderr.take().unwrap();
    let guard = ChildGuard(child);
    // Read on a thread for as long as the server runs: a closed pipe would
    // stop it at its next log line.
    let (lines, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let (mut api, mut control) = (None, None);
    let mut said = Vec::new();
    while let Ok(line) = heard.recv_timeout(std::time::Duration::from_secs(30)) {
        if let Some(rest) = line.strip_prefix("wago: listening on ") {
            api = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.split("(control API ").nth(1) {
            control = rest
                .split(')')
                .next()
                .map(|u| u.trim_end_matches('/').to_owned());
        }
        said.push(line);
        if api.is_some() && control.is_some() {
            break;
        }
    }
    match (api, control) {
        (Some(api), Some(control)) => (guard, api, control),
        _ => panic!(
            "wago serve --sandbox did not say where it listens:\n{}",
            said.join("\n")
        ),
    }
}

/// Kills the process when the test ends, however it ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The page in Chromium, against `wago serve --sandbox`: sign in (a wrong
/// token and a wrong password refused), create a tenant, pair it by QR
/// with a sandbox phone and see it connect live, set its webhook, send a
/// test event and replay it, and more (tests/browser/admin_ui.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_pairs_a_number_in_a_browser() {
    let data = tempfile::tempdir().unwrap();
    let (_server, api, control) = tokio::task::block_in_place(|| serve_with_sandbox(data.path()));
    let http = reqwest::Client::new();
    for phone in ["62811000901", "62812000901"] {
        let res = http
            .post(format!("{control}/phones"))
            .json(&json!({ "phone": phone }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shots = dir.join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut command = std::process::Command::new("node");
    command
        .arg(dir.join("tests/browser/admin_ui.mjs"))
        .current_dir(dir.join("tests/browser"))
        .env("BASE_URL", &api)
        .env("SANDBOX_URL", &control)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("PHONE", "62811000901")
        .env("FRIEND", "62812000901")
        .env("SCREENSHOT", &shots);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("node runs (scripts/test installs it, Chromium and playwright-core)");
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("admin_ui: done"), "{said}");
}
