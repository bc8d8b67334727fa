//! Tenants and keys through the admin and tenant APIs, on both databases.

mod common;

use common::{ADMIN_TOKEN, TestApp, TestDb};
use reqwest::Method;
use serde_json::{Value, json};

db_tests!(
    tenant_lifecycle,
    key_rotation_and_revocation,
    unauthorized_requests,
    api_key_env_makes_the_default_tenant,
    generated_admin_token_is_shown_once_and_works,
    bad_input_gets_json_errors_and_changes_nothing,
    health_reports_the_database,
);

/// How long another node may take to hear that keys changed: the time a
/// `NOTIFY` takes, far below the 60 s an entry is otherwise remembered.
const HEARD_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether node `app` refuses `key` within [`HEARD_WITHIN`].
async fn refused_soon(app: &TestApp, key: &str) -> bool {
    let start = std::time::Instant::now();
    loop {
        if app.tenant_get(key, "/messages").await.0 == 401 {
            return true;
        }
        if start.elapsed() > HEARD_WITHIN {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Nodes remember keys; a key that stops working stops on every node as
/// soon as the bus reaches it (the `NOTIFY` sent at the change's commit),
/// not when the remembered entry would have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_stops_working_on_every_node_at_once() {
    let db = TestDb::postgres().await;
    let a = TestApp::spawn(&db, &[("NODE_ID", "node-a"), ("API_KEY", "first-env-key")]).await;
    let b = TestApp::spawn(&db, &[("NODE_ID", "node-b")]).await;
    let (id, first) = a.create_tenant("everywhere").await;
    let second: Value = a
        .admin_json(Method::POST, &format!("/admin/tenants/{id}/keys"))
        .await
        .1;
    let second = second["api_key"].as_str().unwrap().to_owned();
    let first_id = a
        .admin_json(Method::GET, &format!("/admin/tenants/{id}"))
        .await
        .1["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Each key known to node B, so remembered there.
    for key in [&first, &second, "first-env-key"] {
        assert_eq!(b.tenant_get(key, "/messages").await.0, 200);
        assert_eq!(b.tenant_get(key, "/messages").await.0, 200);
    }

    let revoked = a
        .admin(
            Method::DELETE,
            &format!("/admin/tenants/{id}/keys/{first_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert!(refused_soon(&b, &first).await, "revoked on A");
    assert_eq!(b.tenant_get(&second, "/messages").await.0, 200);

    let deleted = a
        .admin(Method::DELETE, &format!("/admin/tenants/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(refused_soon(&b, &second).await, "deleted on A");

    // A node started with another API_KEY replaces the old one everywhere.
    a.stop().await;
    let c = TestApp::spawn(&db, &[("NODE_ID", "node-c"), ("API_KEY", "second-env-key")]).await;
    assert!(refused_soon(&b, "first-env-key").await, "replaced on C");
    assert_eq!(b.tenant_get("second-env-key", "/messages").await.0, 200);
    c.stop().await;
    b.stop().await;
}

async fn tenant_lifecycle(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    let (id, key) = app.create_tenant("acme").await;
    assert!(key.starts_with("wago_"), "{key}");

    let list: Value = app.admin_json(Method::GET, "/admin/tenants").await.1;
    let names: Vec<&str> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme"]);

    let detail = app
        .admin(Method::GET, &format!("/admin/tenants/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(detail.status(), 200);
    let text = detail.text().await.unwrap();
    assert!(!text.contains(&key), "the key itself is never shown again");
    let detail: Value = serde_json::from_str(&text).unwrap();
    let keys = detail["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(key.starts_with(keys[0]["prefix"].as_str().unwrap()));
    assert!(keys[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(keys[0].get("key_hash").is_none());

    let (status, body) = app.tenant_get(&key, "/messages").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "messages": [], "next_after": 0 }));

    let deleted = app
        .admin(Method::DELETE, &format!("/admin/tenants/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .admin(Method::GET, &format!("/admin/tenants/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(gone.json::<Value>().await.unwrap()["error"], "not_found");
    let (status, _) = app.tenant_get(&key, "/messages").await;
    assert_eq!(status, 401, "a deleted tenant's key stops working");
    app.stop().await;
}

async fn key_rotation_and_revocation(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    let (id, first) = app.create_tenant("rotating").await;
    let res = app
        .admin(Method::POST, &format!("/admin/tenants/{id}/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let second: Value = res.json().await.unwrap();
    let (second_id, second_key) = (
        second["id"].as_str().unwrap(),
        second["api_key"].as_str().unwrap(),
    );
    assert_ne!(second_key, first);
    assert_eq!(app.tenant_get(&first, "/messages").await.0, 200);
    assert_eq!(app.tenant_get(second_key, "/messages").await.0, 200);

    let detail: Value = app
        .admin_json(Method::GET, &format!("/admin/tenants/{id}"))
        .await
        .1;
    let first_id = detail["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] != second_id)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let revoke = |key_id: String| {
        app.admin(
            Method::DELETE,
            &format!("/admin/tenants/{id}/keys/{key_id}"),
        )
        .send()
    };
    assert_eq!(revoke(first_id.clone()).await.unwrap().status(), 204);
    assert_eq!(
        app.tenant_get(&first, "/messages").await.0,
        401,
        "revoked at once"
    );
    assert_eq!(app.tenant_get(second_key, "/messages").await.0, 200);
    assert_eq!(revoke(first_id.clone()).await.unwrap().status(), 404);

    // Key use is recorded (asynchronously, so wait for it briefly).
    let mut seen = Value::Null;
    for _ in 0..50 {
        let detail: Value = app
            .admin_json(Method::GET, &format!("/admin/tenants/{id}"))
            .await
            .1;
        let key = detail["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == second_id)
            .cloned()
            .unwrap();
        let revoked = detail["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == first_id.as_str())
            .cloned()
            .unwrap();
        assert!(revoked["revoked_at"].is_string());
        assert!(key["revoked_at"].is_null());
        seen = key["last_used_at"].clone();
        if seen.is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen.is_string(), "last_used_at recorded: {seen}");

    // A key of one tenant cannot revoke into another tenant's keys.
    let (other_id, other_key) = app.create_tenant("other").await;
    let res = app
        .admin(
            Method::DELETE,
            &format!("/admin/tenants/{other_id}/keys/{second_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(app.tenant_get(second_key, "/messages").await.0, 200);
    assert_eq!(app.tenant_get(&other_key, "/messages").await.0, 200);
    app.stop().await;
}

async fn unauthorized_requests(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    let (_, key) = app.create_tenant("acme").await;

    // (path, header name, header value) of requests that must be refused.
    let refused = [
        ("/messages", None, None),
        (
            "/messages",
            Some("X-API-Key"),
            Some("wago_not_a_real_key".to_owned()),
        ),
        (
            "/messages",
            Some("Authorization"),
            Some("Basic Zm9vOmJhcg==".to_owned()),
        ),
        // A tenant key is no admin token, and the admin token no tenant key.
        (
            "/admin/tenants",
            Some("Authorization"),
            Some(format!("Bearer {key}")),
        ),
        (
            "/messages",
            Some("Authorization"),
            Some(format!("Bearer {ADMIN_TOKEN}")),
        ),
        ("/admin/tenants", None, None),
    ];
    for (path, name, value) in refused {
        let mut req = app.http.get(app.url(path));
        if let (Some(name), Some(value)) = (name, value) {
            req = req.header(name, value);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{path} {name:?}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(body["message"].as_str().unwrap().len() > 10);
    }

    // The Bearer form works for tenant keys too.
    assert_eq!(app.bearer_status("/messages", &key).await, 200);
    app.stop().await;
}

async fn api_key_env_makes_the_default_tenant(db: TestDb) {
    let tenants = |app: &TestApp| {
        let req = app.admin(Method::GET, "/admin/tenants").send();
        async move {
            let body: Value = req.await.unwrap().json().await.unwrap();
            body["tenants"].as_array().unwrap().clone()
        }
    };

    let app = TestApp::spawn(&db, &[("API_KEY", "old-server-key")]).await;
    assert_eq!(app.tenant_get("old-server-key", "/messages").await.0, 200);
    let list = tenants(&app).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "default");
    let default_id = list[0]["id"].as_str().unwrap().to_owned();
    // An admin-made key on the default tenant must survive API_KEY changes.
    let extra: Value = app
        .admin_json(Method::POST, &format!("/admin/tenants/{default_id}/keys"))
        .await
        .1;
    let extra_key = extra["api_key"].as_str().unwrap().to_owned();
    app.stop().await;

    // Same value again: nothing new.
    let app = TestApp::spawn(&db, &[("API_KEY", "old-server-key")]).await;
    let list = tenants(&app).await;
    assert_eq!(list.len(), 1);
    let detail: Value = app
        .admin_json(Method::GET, &format!("/admin/tenants/{default_id}"))
        .await
        .1;
    assert_eq!(detail["keys"].as_array().unwrap().len(), 2);
    app.stop().await;

    // A new value replaces the old key.
    let app = TestApp::spawn(&db, &[("API_KEY", "rotated-key")]).await;
    assert_eq!(app.tenant_get("old-server-key", "/messages").await.0, 401);
    assert_eq!(app.tenant_get("rotated-key", "/messages").await.0, 200);
    assert_eq!(app.tenant_get(&extra_key, "/messages").await.0, 200);
    assert_eq!(tenants(&app).await.len(), 1);
    app.stop().await;
}

async fn generated_admin_token_is_shown_once_and_works(db: TestDb) {
    let config = common::test_config(&db, &[]);
    let config = wago::config::Config {
        admin_token: None,
        ..config
    };
    let app = TestApp::spawn_with(config.clone()).await;
    let token = app
        .generated_admin_token
        .clone()
        .expect("first start makes one");
    assert_eq!(app.bearer_status("/admin/tenants", &token).await, 200);
    app.stop().await;

    let app = TestApp::spawn_with(config).await;
    assert!(app.generated_admin_token.is_none(), "shown only once");
    assert_eq!(
        app.bearer_status("/admin/tenants", &token).await,
        200,
        "the stored token still works"
    );

    let new_token = wago::app::reset_admin_token(&app.store).await.unwrap();
    assert_eq!(
        app.bearer_status("/admin/tenants", &token).await,
        401,
        "reset applies at once"
    );
    assert_eq!(app.bearer_status("/admin/tenants", &new_token).await, 200);
    app.stop().await;
}

async fn bad_input_gets_json_errors_and_changes_nothing(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    app.create_tenant("taken").await;

    let post = |body: &str, content_type: &str| {
        app.http
            .post(app.url("/admin/tenants"))
            .bearer_auth(ADMIN_TOKEN)
            .header("Content-Type", content_type)
            .body(body.to_owned())
            .send()
    };
    let expect = |res: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(res.status(), status);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], code, "{body}");
        body["message"].as_str().unwrap().to_owned()
    };

    expect(
        post("{\"name\":", "application/json").await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect(
        post("{\"name\":\"x\"}", "text/plain").await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    let m = expect(
        post("{}", "application/json").await.unwrap(),
        422,
        "invalid_field",
    )
    .await;
    assert!(m.starts_with("name"), "{m}");
    let m = expect(
        post("{\"name\": 5}", "application/json").await.unwrap(),
        422,
        "invalid_field",
    )
    .await;
    assert!(m.starts_with("name"), "{m}");
    let m = expect(
        post("{\"name\": \"no spaces\"}", "application/json")
            .await
            .unwrap(),
        422,
        "invalid_field",
    )
    .await;
    assert!(m.starts_with("name"), "{m}");
    let m = expect(
        post(
            "{\"name\": \"x\", \"store_dsn\": \"mysql://h/db\"}",
            "application/json",
        )
        .await
        .unwrap(),
        422,
        "invalid_field",
    )
    .await;
    assert!(m.starts_with("store_dsn"), "{m}");
    expect(
        post("{\"name\": \"taken\"}", "application/json")
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(70 * 1024));
    expect(
        post(&huge, "application/json").await.unwrap(),
        413,
        "payload_too_large",
    )
    .await;

    let res = app
        .http
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    expect(res, 404, "not_found").await;
    let res = app.http.put(app.url("/health")).send().await.unwrap();
    expect(res, 405, "method_not_allowed").await;

    let (_, key) = app.create_tenant("reader").await;
    let res = app
        .http
        .get(app.url("/messages?limit=0"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    let m = expect(res, 422, "invalid_field").await;
    assert!(m.starts_with("limit"), "{m}");

    let list: Value = app.admin_json(Method::GET, "/admin/tenants").await.1;
    assert_eq!(list["tenants"].as_array().unwrap().len(), 2, "nothing made");
    app.stop().await;
}

async fn health_reports_the_database(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    let res = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "ok": true }));

    app.store.close().await;
    let res = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.json::<Value>().await.unwrap()["ok"], false);
    drop(app);
}
