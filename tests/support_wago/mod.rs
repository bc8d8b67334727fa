//! WAGO end to end: the real server (its HTTP API) with its sessions
//! connected to an in-process sandbox, and helpers to pair tenants through
//! the API the way a user would.
//!
//! A test file using this also declares `mod common;` and
//! `mod support_sandbox;`.

#![allow(dead_code)] // each test file uses its own subset

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{TestApp, TestDb, test_config};
use crate::support_sandbox::{STEP, Sandbox};

/// The server's configuration for these tests: sessions go to `sandbox`,
/// no send pace, no API rate limit, webhooks to loopback allowed.
pub fn vars(sandbox: &Sandbox) -> Vec<(&'static str, String)> {
    vec![
        ("WA_SERVER_URL", sandbox.ws_url()),
        ("SEND_RATE_PER_MINUTE", "0".into()),
        ("API_RATE_LIMIT", "0".into()),
        ("WEBHOOK_ALLOW_PRIVATE", "true".into()),
        ("NODE_ID", "test-node".into()),
    ]
}

pub async fn spawn(db: &TestDb, sandbox: &Sandbox, extra: &[(&str, &str)]) -> TestApp {
    let mut all: Vec<(&str, String)> = vars(sandbox);
    for (k, v) in extra {
        all.retain(|(name, _)| name != k);
        all.push((k, (*v).to_owned()));
    }
    let borrowed: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_with(test_config(db, &borrowed)).await
}

/// A tenant of the server under test.
pub struct Tenant {
    pub id: String,
    pub key: String,
}

impl Tenant {
    pub async fn create(app: &TestApp, name: &str) -> Self {
        let (id, key) = app.create_tenant(name).await;
        Tenant { id, key }
    }

    pub async fn get(&self, app: &TestApp, path: &str) -> (u16, Value) {
        app.tenant_get(&self.key, path).await
    }

    pub async fn post(&self, app: &TestApp, path: &str, body: Value) -> (u16, Value) {
        self.post_with(app, path, body, &[]).await
    }

    pub async fn post_with(
        &self,
        app: &TestApp,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = app
            .http
            .post(app.url(path))
            .header("X-API-Key", &self.key)
            .json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `PUT /webhook` to `url` for `events`, which must succeed.
    pub async fn webhook(&self, app: &TestApp, url: &str, events: &[&str]) {
        let response = app
            .http
            .put(app.url("/webhook"))
            .header("X-API-Key", &self.key)
            .json(&json!({ "url": url, "events": events }))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), 200, "PUT /webhook");
    }

    pub async fn state(&self, app: &TestApp) -> String {
        let (status, body) = self.get(app, "/session").await;
        assert_eq!(status, 200, "GET /session: {body}");
        body["state"].as_str().unwrap_or_default().to_owned()
    }

    /// Polls `GET /session` until the state is `want`.
    pub async fn wait_state(&self, app: &TestApp, want: &str) -> Value {
        let start = Instant::now();
        loop {
            let (_, body) = self.get(app, "/session").await;
            if body["state"] == want {
                return body;
            }
            assert!(
                start.elapsed() < STEP,
                "session never became {want}: still {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pairs this tenant's session to `phone`'s account by QR, through the
    /// API and the sandbox's control API, and waits for `connected`.
    pub async fn pair(&self, app: &TestApp, sandbox: &Sandbox, phone: &str) {
        let (status, body) = self.get(app, "/session/qr").await;
        assert_eq!(status, 200, "GET /session/qr: {body}");
        let qr = body["qr"].as_str().expect("a QR string").to_owned();
        let (status, linked) = sandbox.link(phone, &qr).await;
        assert_eq!(status, 200, "link: {linked}");
        self.wait_state(app, "connected").await;
    }
}

/// `{"to": .., "text": ..}`
pub fn text_to(to: &str, text: &str) -> Value {
    json!({ "to": to, "text": text })
}
