//! Test helpers for the sandbox: an in-process sandbox on a random loopback
//! port with an HTTP client for its control API, and a real `whatsapp-rust`
//! client ("companion") pointed at it, on any storage backend, whose events
//! the test reads.
//!
//! The client never reaches for the internet: its version is pinned and its
//! HTTP client refuses every request.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use wacore::store::InMemoryBackend;
use wacore::types::events::{Event, EventHandler};
use wago_sandbox::{AccountView, RunningSandbox, SandboxConfig};
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;

/// Long enough for a pairing on a loaded 2-core machine, short enough that
/// a hang fails the test rather than the CI job.
pub const STEP: Duration = Duration::from_secs(30);

/// An in-process sandbox and a client for its control API.
pub struct Sandbox {
    pub inner: RunningSandbox,
    pub control: Control,
}

impl Sandbox {
    pub async fn start() -> Self {
        Self::start_with(config()).await
    }

    pub async fn start_with(config: SandboxConfig) -> Self {
        init_logs();
        let inner = wago_sandbox::start(config).await.expect("sandbox starts");
        let control = Control::new(inner.addr());
        Self { inner, control }
    }
}

impl std::ops::Deref for Sandbox {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

/// The control API of a sandbox (in this process or another one).
pub struct Control {
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
}

impl Control {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            addr,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.http.post(self.url(path)).json(&body).send().await;
        read(response.expect("control API answers")).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await;
        read(response.expect("control API answers")).await
    }

    /// `POST /phones`, which must succeed.
    pub async fn create_phone(&self, phone: &str) -> AccountView {
        let (status, body) = self.post("/phones", json!({ "phone": phone })).await;
        assert_eq!(status, 201, "POST /phones: {body}");
        serde_json::from_value(body).expect("an account view")
    }

    /// `GET /phones/{phone}`, which must succeed.
    pub async fn phone(&self, phone: &str) -> AccountView {
        let (status, body) = self.get(&format!("/phones/{phone}")).await;
        assert_eq!(status, 200, "GET /phones/{phone}: {body}");
        serde_json::from_value(body).expect("an account view")
    }

    /// `POST /phones/{phone}/link`: status and body.
    pub async fn link(&self, phone: &str, qr: &str) -> (u16, Value) {
        self.post(&format!("/phones/{phone}/link"), json!({ "qr": qr }))
            .await
    }

    /// `POST /admin/mock-phone/scan-qr` with the QR as the raw body.
    pub async fn scan_qr(&self, qr: &str) -> (u16, Value) {
        let url = self.url("/admin/mock-phone/scan-qr");
        let response = self.http.post(url).body(qr.to_owned()).send().await;
        read(response.expect("control API answers")).await
    }

    /// Polls `GET /phones/{phone}` until `check` holds (or panics).
    pub async fn phone_until(
        &self,
        phone: &str,
        what: &str,
        check: impl Fn(&AccountView) -> bool,
    ) -> AccountView {
        let start = Instant::now();
        loop {
            let view = self.phone(phone).await;
            if check(&view) {
                return view;
            }
            assert!(start.elapsed() < STEP, "{what}: account is still {view:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A state file path of its own in the temp dir, removed on drop.
pub struct TempState(pub std::path::PathBuf);

impl TempState {
    pub fn new() -> Self {
        let name = format!("wago-sandbox-test-{}.json", uuid::Uuid::new_v4());
        Self(std::env::temp_dir().join(name))
    }
}

impl Drop for TempState {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn config() -> SandboxConfig {
    SandboxConfig::new("127.0.0.1:0".parse().expect("an address"))
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// An HTTP client that refuses everything: the client must need none.
struct NoInternet;

#[async_trait::async_trait]
impl wacore::net::HttpClient for NoInternet {
    async fn execute(
        &self,
        request: wacore::net::HttpRequest,
    ) -> anyhow::Result<wacore::net::HttpResponse> {
        anyhow::bail!("tests have no internet (asked for {})", request.url)
    }
}

/// An HTTP client for the sandbox's media host: it trusts the sandbox's own
/// certificate and no other, so nothing leaves the machine.
pub struct MediaHttp(reqwest::Client);

impl MediaHttp {
    pub fn trusting(certificate_pem: &str) -> Self {
        let certificate =
            reqwest::Certificate::from_pem(certificate_pem.as_bytes()).expect("a PEM certificate");
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(certificate)
            .build()
            .expect("an HTTP client");
        Self(client)
    }
}

#[async_trait::async_trait]
impl wacore::net::HttpClient for MediaHttp {
    async fn execute(
        &self,
        request: wacore::net::HttpRequest,
    ) -> anyhow::Result<wacore::net::HttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
        let mut call = self.0.request(method, &request.url);
        for (name, value) in &request.headers {
            call = call.header(name, value);
        }
        if let Some(body) = request.body {
            call = call.body(body);
        }
        let response = call.send().await?;
        let status_code = response.status().as_u16();
        let body = response.bytes().await?.to_vec();
        Ok(wacore::net::HttpResponse { status_code, body })
    }
}

/// Forwards the client's events to the test.
struct Forward(mpsc::UnboundedSender<Arc<Event>>);

impl EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
        let _ = self.0.send(event);
    }
}

/// An inbound durability hook that always commits, or always fails.
struct Durability {
    commits: bool,
}

#[async_trait::async_trait]
impl whatsapp_rust::types::durability_hook::InboundDurabilityHook for Durability {
    async fn on_messages(
        &self,
        _client: Arc<whatsapp_rust::Client>,
        _batch: &[whatsapp_rust::types::durability_hook::InboundMessage],
    ) -> anyhow::Result<()> {
        anyhow::ensure!(self.commits, "the test's store is down");
        Ok(())
    }
}

/// A real `whatsapp-rust` client talking to the sandbox.
pub struct Companion {
    handle: Option<BotHandle>,
    events: mpsc::UnboundedReceiver<Arc<Event>>,
    /// Message, receipt and ack events no wait has taken yet: a test may
    /// wait for a receipt while texts arrive, and look for those later.
    stash: std::collections::VecDeque<Arc<Event>>,
    pub store: Arc<dyn Backend>,
}

/// A text the client received.
#[derive(Debug, Clone)]
pub struct Text {
    pub id: String,
    /// The sending device, as the client saw it.
    pub sender: whatsapp_rust::Jid,
    /// The same device in the other namespace (its number or its LID).
    pub sender_alt: Option<whatsapp_rust::Jid>,
    pub text: String,
    pub offline: bool,
}

/// The texts in a `Messages` event, if it has any.
pub fn texts_of(event: &Event) -> Option<Vec<Text>> {
    let Event::Messages(batch) = event else {
        return None;
    };
    let texts: Vec<Text> = batch
        .messages
        .iter()
        .filter_map(|m| {
            let text = m.message.conversation.clone().or_else(|| {
                m.message
                    .extended_text_message
                    .as_option()
                    .and_then(|e| e.text.clone())
            })?;
            Some(Text {
                id: m.info.id.to_string(),
                sender: m.info.source.sender.clone(),
                sender_alt: m.info.source.sender_alt.clone(),
                text,
                offline: m.info.is_offline,
            })
        })
        .collect();
    (!texts.is_empty()).then_some(texts)
}

fn is_stashed(event: &Event) -> bool {
    matches!(
        event,
        Event::Messages(_) | Event::Receipt(_) | Event::ServerAck(_)
    )
}

impl Companion {
    /// A client with an empty store: it will show QR codes.
    pub async fn fresh(ws_url: &str) -> Self {
        Self::start(ws_url, Arc::new(InMemoryBackend::new())).await
    }

    /// A client on an existing store (a paired one logs in).
    pub async fn start(ws_url: &str, store: Arc<dyn Backend>) -> Self {
        Self::start_with(ws_url, store, None).await
    }

    /// A client whose inbound durability hook commits (`Some(true)`) or
    /// fails (`Some(false)`) every message: a failing one never confirms a
    /// message, as a crash before the commit would.
    pub async fn start_with(ws_url: &str, store: Arc<dyn Backend>, commits: Option<bool>) -> Self {
        Self::start_as(ws_url, store, commits, "sandbox test").await
    }

    /// A fresh client presenting `push_name` when it pairs.
    pub async fn named(ws_url: &str, push_name: &str) -> Self {
        let store = Arc::new(InMemoryBackend::new());
        Self::start_as(ws_url, store, None, push_name).await
    }

    /// A fresh client that reaches the sandbox's media host through `http`.
    pub async fn with_media(ws_url: &str, http: MediaHttp) -> Self {
        let store = Arc::new(InMemoryBackend::new());
        Self::build(ws_url, store, None, "sandbox test", http).await
    }

    async fn start_as(
        ws_url: &str,
        store: Arc<dyn Backend>,
        commits: Option<bool>,
        push_name: &str,
    ) -> Self {
        Self::build(ws_url, store, commits, push_name, NoInternet).await
    }

    async fn build(
        ws_url: &str,
        store: Arc<dyn Backend>,
        commits: Option<bool>,
        push_name: &str,
        http: impl wacore::net::HttpClient + 'static,
    ) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let mut builder = Bot::builder();
        if let Some(commits) = commits {
            builder = builder.with_inbound_durability_hook(Durability { commits });
        }
        let bot = builder
            .with_backend_arc(store.clone())
            .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(ws_url))
            .with_http_client(http)
            .with_runtime(whatsapp_rust::TokioRuntime)
            .with_version((2, 3000, 1_023_000_000))
            .with_push_name(push_name)
            .with_event_handler(Forward(tx))
            .build()
            .await
            .expect("client builds");
        Self {
            handle: Some(bot.spawn()),
            events,
            stash: Default::default(),
            store,
        }
    }

    /// Waits for the first event `pick` accepts; panics naming `what` if the
    /// client's events end or `limit` passes first.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        if let Some(at) = self.stash.iter().position(|e| pick(e).is_some()) {
            let event = self.stash.remove(at).expect("a stashed event");
            return pick(&event).expect("picked before");
        }
        let stash = &mut self.stash;
        let events = &mut self.events;
        let found = tokio::time::timeout(limit, async {
            while let Some(event) = events.recv().await {
                if let Some(found) = pick(&event) {
                    return Some(found);
                }
                if is_stashed(&event) {
                    stash.push_back(event);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(found)) => found,
            Ok(None) => panic!("client stopped before {what}"),
            Err(_) => panic!("no {what} within {limit:?}"),
        }
    }

    pub async fn next_qr(&mut self) -> String {
        self.wait_for("QR code", STEP, |e| match e {
            Event::PairingQrCode(qr) => Some(qr.code.clone()),
            _ => None,
        })
        .await
    }

    pub async fn connected(&mut self) {
        self.wait_for("Connected", STEP, |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await
    }

    /// `Connected` without pairing: a QR code or a pairing on the way fails
    /// the test.
    pub async fn logged_in(&mut self) {
        self.wait_for("Connected", STEP, |e| match e {
            Event::PairingQrCode(_) => panic!("the client asked to pair again"),
            Event::PairSuccess(_) | Event::PairError(_) => panic!("the client paired again"),
            Event::Connected(_) => Some(()),
            _ => None,
        })
        .await
    }

    /// Waits until the client's prekeys are on the server. The client
    /// uploads them from a task of its own after `Connected`, which nothing
    /// signals; a test that counts prekeys or fetches bundles waits for it.
    pub async fn prekeys_uploaded(&self) {
        let deadline = Instant::now() + STEP;
        let store = self.client().persistence_manager();
        while !store.get_device_snapshot().server_has_prekeys {
            assert!(
                Instant::now() < deadline,
                "the client never uploaded its prekeys"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn logged_out(&mut self) {
        self.wait_for("LoggedOut", STEP, |e| {
            matches!(e, Event::LoggedOut(_)).then_some(())
        })
        .await
    }

    /// The next `n` texts, in the order the client got them.
    pub async fn texts(&mut self, n: usize) -> Vec<Text> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let what = format!("text {} of {n}", out.len() + 1);
            out.extend(self.wait_for(&what, STEP, texts_of).await);
        }
        out
    }

    /// Waits for a receipt of `kind` naming message `id`.
    pub async fn receipt(
        &mut self,
        id: &str,
        kind: wacore::types::presence::ReceiptType,
    ) -> wacore::types::events::Receipt {
        let what = format!("{kind:?} receipt for {id}");
        self.wait_for(&what, STEP, |e| match e {
            Event::Receipt(r) if r.r#type == kind && r.message_ids.iter().any(|m| m == id) => {
                Some(r.clone())
            }
            _ => None,
        })
        .await
    }

    /// Sends a text to a phone number; returns the message id.
    pub async fn send_text(&self, to: &str, text: &str) -> String {
        let to = whatsapp_rust::Jid::pn(to);
        let sent = self.client().send_text(to, text).await;
        sent.expect("the client sends").message_id
    }

    pub fn client(&self) -> Arc<whatsapp_rust::Client> {
        self.handle.as_ref().expect("a running client").client()
    }

    /// Stops the client and waits for it to be gone.
    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }
}

/// A fresh client, paired to `phone` through the control API, `Connected`.
/// Returns it and its device id.
pub async fn pair(sandbox: &Control, phone: &str) -> (Companion, u16) {
    pair_on(sandbox, phone, Arc::new(InMemoryBackend::new())).await
}

/// [`pair`], for a client on `store` (which must hold no device yet).
pub async fn pair_on(sandbox: &Control, phone: &str, store: Arc<dyn Backend>) -> (Companion, u16) {
    let companion = Companion::start(&sandbox.ws_url(), store).await;
    link_companion(sandbox, phone, companion).await
}

/// Links a fresh `companion` to `phone` through the control API and waits
/// for it to be `Connected`. Returns it and its device id.
pub async fn link_companion(
    sandbox: &Control,
    phone: &str,
    mut companion: Companion,
) -> (Companion, u16) {
    let qr = companion.next_qr().await;
    let (status, linked) = sandbox.link(phone, &qr).await;
    assert_eq!(status, 200, "link: {linked}");
    let device = linked["device"].as_u64().expect("a device id") as u16;
    companion.connected().await;
    companion.prekeys_uploaded().await;
    (companion, device)
}

/// Runs a sandbox program (`wago-sandbox`, or `wago sandbox`) as a user
/// does: it prints where it listens, serves the control API, and on Ctrl-C
/// writes its state file and exits cleanly.
pub async fn serves_and_keeps_its_state(mut program: Command) {
    let state = TempState::new();
    let mut child = program
        .args(["--listen", "127.0.0.1:0", "--state"])
        .arg(&state.0)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the sandbox program starts");
    let stdout = child.stdout.take().expect("stdout");
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("a line in time")
        .expect("reader")
        .expect("stdout line");
    let control_url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no control URL in {line:?}"));
    let addr = control_url
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let control = Control::new(addr);

    assert_eq!(
        control.get("/sandbox/health").await,
        (200, json!({ "ok": true }))
    );
    let created = control.create_phone("62811000501").await;

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || child.wait());
    let exit = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .expect("exits in time")
        .expect("waiter")
        .expect("exit status");
    assert!(exit.success(), "{exit:?}");

    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state.0).expect("state file")).expect("JSON");
    let accounts = saved["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["phone"], "62811000501");
    assert_eq!(accounts[0]["lid"].to_string(), created.lid);
}
