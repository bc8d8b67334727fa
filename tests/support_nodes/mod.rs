//! Several `wago serve` processes on one database and one sandbox, driven
//! through their HTTP APIs: starting nodes, pairing tenants, and waiting
//! for placement. Used by `tests/nodes.rs` and `benches/nodes.rs`.
#![allow(dead_code)] // each user takes its own subset

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support_sandbox::{Control, STEP};

pub const ADMIN: &str = "an-admin-token-for-node-tests";

/// One `wago serve` process.
pub struct Node {
    pub name: String,
    pub child: Child,
    pub api: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

impl Node {
    pub fn start(name: &str, dsn: &str, sandbox: &Control, lease: &str) -> Node {
        Self::start_with(name, dsn, sandbox, lease, &[])
    }

    /// `start`, with more environment (or settings overridden).
    pub fn start_with(
        name: &str,
        dsn: &str,
        sandbox: &Control,
        lease: &str,
        extra: &[(&str, &str)],
    ) -> Node {
        let (child, log, listening) = Self::spawn(name, dsn, sandbox, lease, extra);
        let line = listening
            .recv_timeout(STEP)
            .expect("the node says where it listens");
        let api = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .expect("an address")
            .to_owned();
        Node {
            name: name.to_owned(),
            child,
            api,
            log,
            http: reqwest::Client::new(),
        }
    }

    /// A `wago serve` process as started, before it listens (it may never):
    /// the child, its log so far, and where its "listening on" line arrives.
    pub fn spawn(
        name: &str,
        dsn: &str,
        sandbox: &Control,
        lease: &str,
        extra: &[(&str, &str)],
    ) -> (
        Child,
        Arc<Mutex<Vec<String>>>,
        std::sync::mpsc::Receiver<String>,
    ) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wago"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DSN", dsn)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("ADMIN_TOKEN", ADMIN)
            .env("WA_SERVER_URL", sandbox.ws_url())
            .env("SEND_RATE_PER_MINUTE", "0")
            .env("API_RATE_LIMIT", "0")
            .env("WEBHOOK_ALLOW_PRIVATE", "true")
            .env("NODE_ID", name)
            .env("SESSION_LEASE_TTL", lease)
            .env("RUST_LOG", "info,sqlx=warn,whatsapp_rust=warn,wacore=warn")
            .envs(extra.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wago starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(line.clone());
                }
                lines.lock().unwrap().push(line);
            }
        });
        (child, log, rx)
    }

    /// A request to this node; status 0 when it does not answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: (&str, &str),
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .header(auth.0, auth.1)
            .timeout(Duration::from_secs(60));
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let bearer = format!("Bearer {ADMIN}");
        self.call(method, path, ("Authorization", &bearer), body, &[])
            .await
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, ("X-API-Key", key), None, &[])
            .await
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            path,
            ("X-API-Key", key),
            Some(body),
            &[],
        )
        .await
    }

    /// SIGTERM, then waits for the process to end.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The node's log, when the test failed (its end) or when asked
        // for (`WAGO_TEST_NODE_LOGS=1`, all of it).
        let all = std::env::var_os("WAGO_TEST_NODE_LOGS").is_some();
        if std::thread::panicking() || all {
            let log = self.log.lock().unwrap();
            let tail = if all { 0 } else { log.len().saturating_sub(60) };
            eprintln!("--- last lines of {} ---", self.name);
            for line in &log[tail..] {
                eprintln!("{line}");
            }
        }
    }
}

/// A tenant and the sandbox phone its session is paired to.
#[derive(Clone)]
pub struct Tenant {
    pub id: String,
    pub key: String,
    pub phone: String,
}

pub async fn create_tenants(node: &Node, sandbox: &Control, n: usize) -> Vec<Tenant> {
    let mut tenants = Vec::new();
    for i in 0..n {
        let (status, body) = node
            .admin(
                reqwest::Method::POST,
                "/admin/tenants",
                Some(json!({ "name": format!("tenant-{i}") })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let phone = format!("6281{:07}", 1_000_000 + i);
        sandbox.create_phone(&phone).await;
        tenants.push(Tenant {
            id: body["id"].as_str().unwrap().to_owned(),
            key: body["api_key"].as_str().unwrap().to_owned(),
            phone,
        });
    }
    tenants
}

/// Pairs every tenant by QR through `node`, `at_once` at a time.
pub async fn pair_all(node: &Node, sandbox: &Control, tenants: &[Tenant], at_once: usize) {
    for chunk in tenants.chunks(at_once) {
        let pairings = chunk.iter().map(|t| async move {
            let (status, body) = node.get(&t.key, "/session/qr").await;
            assert_eq!(status, 200, "GET /session/qr: {body}");
            let (status, linked) = sandbox.link(&t.phone, body["qr"].as_str().unwrap()).await;
            assert_eq!(status, 200, "link: {linked}");
            wait_state(node, t, "connected").await;
        });
        futures_util::future::join_all(pairings).await;
    }
}

/// Polls `GET /session` on `node` until the state is `want`.
pub async fn wait_state(node: &Node, tenant: &Tenant, want: &str) -> Value {
    let start = Instant::now();
    loop {
        let (_, body) = node.get(&tenant.key, "/session").await;
        if body["state"] == want {
            return body;
        }
        assert!(
            start.elapsed() < STEP,
            "{}: session never became {want} on {}: {body}",
            tenant.id,
            node.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /admin/nodes` as (node, sessions), by node id.
pub async fn placement(node: &Node) -> BTreeMap<String, i64> {
    let (status, body) = node.admin(reqwest::Method::GET, "/admin/nodes", None).await;
    assert_eq!(status, 200, "{body}");
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                n["sessions"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Waits until `nodes` live nodes hold `total` sessions within one of even;
/// returns how long it took.
pub async fn wait_spread(node: &Node, nodes: usize, total: i64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = placement(node).await;
        let counts: Vec<i64> = now.values().copied().collect();
        let even = counts.len() == nodes
            && counts.iter().sum::<i64>() == total
            && counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1;
        if even {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "sessions never spread over {nodes} nodes: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every tenant's session is `connected` on a live node other
/// than `gone`; returns how long it took.
pub async fn wait_all_connected(
    node: &Node,
    tenants: &[Tenant],
    gone: Option<&str>,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = node
            .admin(reqwest::Method::GET, "/admin/tenants", None)
            .await;
        assert_eq!(status, 200, "{body}");
        let ours: HashSet<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
        let waiting: Vec<&Value> = body["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| ours.contains(t["id"].as_str().unwrap()))
            .filter(|t| {
                let session = &t["session"];
                session["state"] != "connected"
                    || session["node"].is_null()
                    || gone.is_some_and(|g| session["node"] == g)
            })
            .collect();
        if waiting.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{} sessions not connected, e.g. {}",
            waiting.len(),
            waiting[0]
        );
        tokio::time::sleep(poll_every(tenants.len())).await;
    }
}

/// Waits until the node's counts by state show `n` sessions `connected`
/// on live nodes, and returns how long that took. Reads one page of one
/// tenant and the counts, not every session, so that waiting for many
/// does not load the node being measured.
pub async fn wait_connected_count(node: &Node, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = node
            .admin(reqwest::Method::GET, "/admin/tenants?limit=1", None)
            .await;
        assert_eq!(status, 200, "{body}");
        let connected = body["counts"]
            .as_array()
            .expect("counts by state")
            .iter()
            .find(|c| c["state"] == "connected")
            .map_or(0, |c| c["sessions"].as_u64().unwrap_or(0));
        if connected as usize >= n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{connected} of {n} sessions connected: {}",
            body["counts"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How often to list every tenant while waiting: often for a few, rarely
/// for many, so that the listing does not load the node being measured.
fn poll_every(tenants: usize) -> Duration {
    Duration::from_millis(if tenants <= 100 { 50 } else { 500 })
}

/// `wago sandbox` in a process of its own.
pub struct SandboxProcess {
    pub child: Child,
    pub control: Control,
}

impl SandboxProcess {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(env!("CARGO_BIN_EXE_wago"))
            .args(["sandbox", "--listen", &addr.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("wago sandbox starts");
        let control = Control::new(addr);
        let started = Instant::now();
        while control
            .http
            .get(control.url("/phones"))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the sandbox never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SandboxProcess { child, control }
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
