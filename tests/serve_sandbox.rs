//! `wago serve --sandbox` as a newcomer runs it: one process with the API
//! and an embedded sandbox. A simulated phone pairs the `default` tenant
//! through the API; after `kill -9` and a restart in the same directory the
//! session reconnects without pairing; Ctrl-C stops it cleanly.
#![cfg(feature = "sandbox")]

#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support_sandbox::{Control, STEP};

const KEY: &str = "legacy-single-tenant-key";

/// A `wago serve --sandbox` process and the addresses it printed.
struct Served {
    child: Child,
    api: String,
    sandbox: Control,
}

fn start(dir: &std::path::Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wago"))
        .args(["serve", "--sandbox"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("API_KEY", KEY)
        .env("ADMIN_TOKEN", "an-admin-token-for-tests")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("wago starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut api, mut control) = (None, None);
    let deadline = Instant::now() + STEP;
    while api.is_none() || control.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("wago prints where it listens");
        let url_after = |marker: &str| {
            line.split(marker)
                .nth(1)
                .and_then(|rest| rest.split([' ', ')']).next())
                .map(str::to_owned)
        };
        if line.contains("control API") {
            control = url_after("control API http://");
        }
        if line.contains("listening on") {
            api = url_after("listening on ");
        }
    }
    let addr: SocketAddr = control.unwrap().parse().expect("a control address");
    Served {
        child,
        api: api.unwrap(),
        sandbox: Control::new(addr),
    }
}

impl Served {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.api))
            .header("X-API-Key", KEY)
            .send()
            .await
            .expect("the API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.api))
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
            .await
            .expect("the API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn wait_connected(&self) {
        let start = Instant::now();
        loop {
            let (_, session) = self.get("/session").await;
            if session["state"] == "connected" {
                return;
            }
            assert!(start.elapsed() < STEP, "never connected: {session}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    async fn exit(mut self) -> std::process::ExitStatus {
        let exited = tokio::task::spawn_blocking(move || self.child.wait());
        tokio::time::timeout(STEP, exited)
            .await
            .expect("exits in time")
            .expect("waiter")
            .expect("exit status")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_an_embedded_sandbox_pairs_and_survives_kill_9() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let served = start(dir.path());
    served.sandbox.create_phone("62811000601").await;

    let (status, qr) = served.get("/session/qr").await;
    assert_eq!(status, 200, "{qr}");
    let (status, linked) = served
        .sandbox
        .link("62811000601", qr["qr"].as_str().unwrap())
        .await;
    assert_eq!(status, 200, "{linked}");
    served.wait_connected().await;

    // The first message, as the README shows it.
    served.sandbox.create_phone("62812000602").await;
    let (status, sent) = served
        .post("/send-text", json!({ "to": "62812000602", "text": "halo" }))
        .await;
    assert_eq!(status, 200, "{sent}");
    let asked = Instant::now();
    loop {
        let (_, inbox) = served.sandbox.get("/phones/62812000602/messages").await;
        if inbox[0]["text"] == "halo" {
            break;
        }
        assert!(asked.elapsed() < STEP, "the phone never got it: {inbox}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The sandbox writes its state file shortly after a change.
    tokio::time::sleep(Duration::from_secs(1)).await;

    served.signal("-KILL");
    let killed = served.exit().await;
    assert!(!killed.success());

    let served = start(dir.path());
    served.wait_connected().await;
    let account = served.sandbox.phone("62811000601").await;
    assert_eq!(account.devices, vec![0, 1], "reconnected without pairing");

    served.signal("-INT");
    let exit = served.exit().await;
    assert!(exit.success(), "{exit:?}");
}

/// `wago pair` shows the `default` tenant's QR code in the terminal (and
/// as text), and exits once a phone has scanned it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wago_pair_pairs_the_default_tenant_from_a_terminal() {
    let sandbox = support_sandbox::Sandbox::start().await;
    sandbox.create_phone("62811000701").await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wago"))
        .arg("pair")
        .current_dir(dir.path())
        .env_clear()
        .env("API_KEY", KEY)
        .env("ADMIN_TOKEN", "an-admin-token-for-tests")
        .env("WA_SERVER_URL", sandbox.ws_url())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("wago pair starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let marker = "The code as text (for a sandbox's /link): ";
    let qr = loop {
        let line = rx.recv_timeout(STEP).expect("wago pair shows a QR code");
        if let Some(code) = line.strip_prefix(marker) {
            break code.trim().to_owned();
        }
    };
    let (status, linked) = sandbox.link("62811000701", &qr).await;
    assert_eq!(status, 200, "{linked}");

    let exited = tokio::task::spawn_blocking(move || child.wait());
    let exit = tokio::time::timeout(STEP, exited)
        .await
        .expect("exits once paired")
        .expect("waiter")
        .expect("exit status");
    assert!(exit.success(), "{exit:?}");
    let said: Vec<String> = rx.try_iter().collect();
    assert!(
        said.iter().any(|l| l.contains("paired 62811000701")),
        "{said:?}"
    );
    assert_eq!(sandbox.phone("62811000701").await.devices, vec![0, 1]);
}
