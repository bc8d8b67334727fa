//! The listener: one axum router serving the control API and the WebSocket
//! upgrade at `/ws/chat`, the state every connection shares, and an orderly
//! shutdown (stop accepting, end every connection task, write the state
//! file one last time).
//!
//! Every task the sandbox spawns is tracked here and stops on its
//! cancellation token; nothing outlives `RunningSandbox::shutdown`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::accounts::{AccountView, Directory, Phone};
use super::control::InboxItem;
use super::deliver::Routes;
use super::media::MediaStore;
use super::noise::ServerKey;
use super::online::Online;
use super::pairing::{self, Linked, PairingDesk};
use super::presence::Presence;
use super::state::{self, StateError};
use super::tls::{self, Tls};
use super::tokens::Tokens;
use super::{SandboxConfig, conn, control, media};

/// Why a sandbox did not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The state file could not be read or written.
    #[error("state file {path}: {source}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What was wrong with it.
        source: StateError,
    },
    /// Serving failed (or, for a [`crate::BackgroundSandbox`], its thread).
    #[error("the sandbox server failed: {0}")]
    Serve(std::io::Error),
}

/// Running totals, for tests, the benchmark and operators.
#[derive(Default)]
pub(crate) struct Counters {
    pub xx: AtomicU64,
    pub ik: AtomicU64,
    pub fallback: AtomicU64,
    pub logins: AtomicU64,
    /// Iqs answered with 501: what the sandbox does not implement.
    pub unimplemented: AtomicU64,
    /// Connection tasks alive now (a gauge).
    pub open: AtomicU64,
    /// Messages from other accounts' companions that phones decrypted.
    pub phone_received_pkmsg: AtomicU64,
    pub phone_received_msg: AtomicU64,
    /// Messages phones encrypted to companions, by `<enc>` type.
    pub phone_sent_pkmsg: AtomicU64,
    pub phone_sent_msg: AtomicU64,
    /// Copies of companions' messages queued for other companions.
    pub relayed: AtomicU64,
    /// Copies a phone could not decrypt (answered with a retry receipt).
    pub decrypt_failures: AtomicU64,
}

/// A snapshot of the sandbox's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxStats {
    /// Noise XX handshakes completed (a first connection).
    pub xx_handshakes: u64,
    /// Noise IK handshakes completed (a registered client logging in).
    pub ik_handshakes: u64,
    /// IK handshakes that fell back to XX.
    pub fallback_handshakes: u64,
    /// Logins accepted (each ends in `<success>`).
    pub logins: u64,
    /// Iqs answered `501 feature-not-implemented`.
    pub unimplemented_iqs: u64,
    /// Connection tasks alive, logged in or not.
    pub open_connections: u64,
    /// Devices logged in now.
    pub online_devices: usize,
    /// Messages from other accounts' companions that the simulated phones
    /// decrypted as `pkmsg` (starting a session).
    pub phone_received_pkmsg: u64,
    /// The same, as `msg` (on an existing session).
    pub phone_received_msg: u64,
    /// Messages the simulated phones encrypted to companions as `pkmsg`.
    pub phone_sent_pkmsg: u64,
    /// The same, as `msg`.
    pub phone_sent_msg: u64,
    /// Copies of companions' messages queued for other companions.
    pub relayed: u64,
    /// Copies a phone could not decrypt.
    pub decrypt_failures: u64,
    /// Encrypted media blobs the media host holds now.
    pub media_blobs: usize,
    /// Their size in bytes.
    pub media_bytes: usize,
}

/// What every connection and handler of one sandbox shares.
pub(crate) struct Shared {
    pub config: SandboxConfig,
    pub key: ServerKey,
    pub directory: Directory,
    pub online: Online,
    pub desk: PairingDesk,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    pub counters: Counters,
    pub routes: Routes,
    pub presence: Presence,
    pub tokens: Tokens,
    /// The media host's blobs and auth.
    pub media: MediaStore,
    /// The certificate of the port's TLS side (the media host).
    pub tls: Tls,
    /// Counts the texts phones received, so a wait for one wakes.
    texts: tokio::sync::watch::Sender<u64>,
    saves: tokio::sync::Notify,
    conn_seq: AtomicU64,
}

impl Shared {
    /// Unix seconds.
    pub fn now(&self) -> u64 {
        now_millis() / 1000
    }

    pub fn now_millis(&self) -> u64 {
        now_millis()
    }

    /// A phone received a text: wakes whoever waits for one, and saves it.
    pub fn text_received(&self) {
        self.texts.send_modify(|n| *n += 1);
        self.state_changed();
    }

    /// Something the state file keeps has changed; the saver writes it soon.
    pub fn state_changed(&self) {
        if self.config.state_file.is_some() {
            self.saves.notify_one();
        }
    }

    pub fn view(&self, phone: Phone) -> Option<AccountView> {
        let account = self.directory.get(phone)?;
        let devices = account.lock().device_ids();
        // A removed device's connection lingers while it is being closed;
        // it is no longer a device of the account, so it is not online.
        let mut online = self.online.devices_of(phone);
        online.retain(|d| devices.contains(d));
        Some(AccountView {
            phone: phone.to_string(),
            lid: account.lid.to_string(),
            devices,
            online,
        })
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a client connects to a sandbox listening on `addr`.
pub(crate) fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws/chat")
}

/// The base of the control API of a sandbox listening on `addr`.
pub(crate) fn http_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A sandbox serving on its port; dropping it stops it without the final
/// state write (use `shutdown` for that).
pub struct RunningSandbox {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a sandbox: loads the state file if there is one, binds, serves.
pub async fn start(config: SandboxConfig) -> Result<RunningSandbox, SandboxError> {
    let (key, directory, fresh) = match &config.state_file {
        Some(path) => state::load(path)
            .await
            .map_err(|source| SandboxError::State {
                path: path.clone(),
                source,
            })?,
        None => (ServerKey::generate(), Directory::new(), true),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| SandboxError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(SandboxError::Serve)?;
    let tls = Tls::generate().map_err(SandboxError::Serve)?;
    let media = MediaStore::new(addr, config.media_capacity);
    let shared = Arc::new(Shared {
        config,
        key,
        directory,
        online: Online::default(),
        desk: PairingDesk::default(),
        cancel: CancellationToken::new(),
        tasks: TaskTracker::new(),
        counters: Counters::default(),
        routes: Routes::default(),
        presence: Presence::default(),
        tokens: Tokens::default(),
        media,
        tls,
        texts: tokio::sync::watch::Sender::new(0),
        saves: tokio::sync::Notify::new(),
        conn_seq: AtomicU64::new(1),
    });
    if let (true, Some(path)) = (fresh, &shared.config.state_file) {
        // The server key must be on disk before any client pins it, and an
        // unwritable path should fail here, not in a log line later.
        state::save(&shared)
            .await
            .map_err(|source| SandboxError::State {
                path: path.clone(),
                source,
            })?;
    }
    shared.tasks.spawn(save_loop(shared.clone()));
    let app = router(shared.clone());
    let stop = shared.cancel.clone();
    let listener = tls::sort(listener, &shared.tls, &shared.tasks, stop.clone())
        .map_err(SandboxError::Serve)?;
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    Ok(RunningSandbox {
        shared,
        addr,
        server: Some(server),
    })
}

impl RunningSandbox {
    /// The address it listens on (the port the system chose, for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws/chat`, for the client's transport.
    pub fn ws_url(&self) -> String {
        ws_url(self.addr)
    }

    /// `http://ADDR`, the base of the control API.
    pub fn http_url(&self) -> String {
        http_url(self.addr)
    }

    /// The certificate the port's TLS side (the media host) presents,
    /// PEM-encoded: what a client that verifies certificates trusts to
    /// upload and download media here.
    pub fn media_certificate_pem(&self) -> &str {
        self.shared.tls.certificate_pem()
    }

    /// The `auth` that `media_conn` gives clients, which the media host
    /// wants on every upload (a client gets it from the iq by itself).
    pub fn media_auth(&self) -> &str {
        self.shared.media.auth()
    }

    /// Creates an account (as `POST /phones`).
    pub fn create_phone(&self, phone: &str) -> Result<AccountView, control::ApiError> {
        control::create_phone(&self.shared, phone)
    }

    /// An account as `GET /phones/{phone}` shows it.
    pub fn phone(&self, phone: &str) -> Option<AccountView> {
        self.shared.view(Phone::parse(phone).ok()?)
    }

    /// That account's phone scans `qr` (as `POST /phones/{phone}/link`).
    pub async fn link(&self, phone: &str, qr: &str) -> Result<Linked, control::ApiError> {
        Ok(pairing::link(&self.shared, phone, qr).await?)
    }

    /// That account's phone enters a pair code (as `POST
    /// /phones/{phone}/link-code`).
    pub async fn link_code(&self, phone: &str, code: &str) -> Result<Linked, control::ApiError> {
        Ok(pairing::link_code(&self.shared, phone, code).await?)
    }

    /// The QR is scanned by the account of the push name the companion
    /// presents (as `POST /admin/mock-phone/scan-qr`).
    pub async fn scan_qr(&self, qr: &str) -> Result<Linked, control::ApiError> {
        super::mock::scan(&self.shared, qr).await
    }

    /// Removes the account's companions (as `POST /phones/{phone}/unlink`).
    pub fn unlink(&self, phone: &str) -> Result<Vec<u16>, control::ApiError> {
        control::unlink_phone(&self.shared, phone)
    }

    /// The sandbox's counters now.
    pub fn stats(&self) -> SandboxStats {
        let c = &self.shared.counters;
        let (media_blobs, media_bytes) = self.shared.media.usage();
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        SandboxStats {
            xx_handshakes: get(&c.xx),
            ik_handshakes: get(&c.ik),
            fallback_handshakes: get(&c.fallback),
            logins: get(&c.logins),
            unimplemented_iqs: get(&c.unimplemented),
            open_connections: get(&c.open),
            online_devices: self.shared.online.count(),
            phone_received_pkmsg: get(&c.phone_received_pkmsg),
            phone_received_msg: get(&c.phone_received_msg),
            phone_sent_pkmsg: get(&c.phone_sent_pkmsg),
            phone_sent_msg: get(&c.phone_sent_msg),
            relayed: get(&c.relayed),
            decrypt_failures: get(&c.decrypt_failures),
            media_blobs,
            media_bytes,
        }
    }

    /// The phone of `from_phone` sends `text` to `to` (as `POST
    /// /phones/{phone}/messages`); returns the message id.
    pub async fn send_text(
        &self,
        from_phone: &str,
        to: &str,
        text: &str,
    ) -> Result<String, control::ApiError> {
        control::send_text(&self.shared, from_phone, to, text).await
    }

    /// The phone of `from_phone` sends a file (as `POST
    /// /phones/{phone}/media`); returns the message id.
    pub async fn send_media(
        &self,
        from_phone: &str,
        media: control::NewMedia,
        bytes: Vec<u8>,
    ) -> Result<String, control::ApiError> {
        control::send_media(&self.shared, from_phone, media, bytes).await
    }

    /// The texts that phone received (as `GET /phones/{phone}/messages`).
    pub async fn inbox(&self, phone: &str) -> Result<Vec<InboxItem>, control::ApiError> {
        control::inbox(&self.shared, phone)
    }

    /// Waits until the phone of `phone` has received a text that `matches`
    /// accepts (one it got before the call counts), and returns it.
    ///
    /// Fails with [`ApiError::NotFound`](crate::ApiError::NotFound) when
    /// there is no such account, and with
    /// [`ApiError::Timeout`](crate::ApiError::Timeout) when no such text
    /// came within `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use wago_sandbox::{SandboxConfig, start};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sandbox = start(SandboxConfig::loopback()).await?;
    /// sandbox.create_phone("15550100001")?;
    /// sandbox.create_phone("15550100002")?;
    /// sandbox.send_text("15550100001", "15550100002", "are you there?").await?;
    ///
    /// let from_first = |t: &wago_sandbox::InboxItem| t.from == "15550100001";
    /// let text = sandbox.wait_for_text("15550100002", Duration::from_secs(5), from_first).await?;
    /// assert_eq!(text.text, "are you there?");
    /// // The phone reads it; the sender's devices get read receipts.
    /// assert_eq!(sandbox.read("15550100002", "15550100001").await?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_for_text(
        &self,
        phone: &str,
        timeout: Duration,
        matches: impl Fn(&InboxItem) -> bool,
    ) -> Result<InboxItem, control::ApiError> {
        let mut texts = self.shared.texts.subscribe();
        let found = tokio::time::timeout(timeout, async {
            loop {
                texts.borrow_and_update();
                let inbox = control::inbox(&self.shared, phone)?;
                if let Some(text) = inbox.into_iter().find(|t| matches(t)) {
                    return Ok(text);
                }
                // The sender lives as long as the sandbox, which `self` holds.
                let _ = texts.changed().await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            Err(control::ApiError::Timeout(format!(
                "phone {phone} got no such text within {timeout:?}"
            )))
        })
    }

    /// That phone reads every text from `from` (as `POST
    /// /phones/{phone}/read`); returns how many texts were read.
    pub async fn read(&self, phone: &str, from: &str) -> Result<usize, control::ApiError> {
        control::read(&self.shared, phone, from)
    }

    /// Stanzas queued for a device and not yet settled.
    pub fn queued(&self, phone: &str, device: u16) -> Option<usize> {
        let account = self.shared.directory.get(Phone::parse(phone).ok()?)?;
        let state = account.lock();
        state.devices.get(&device).map(|d| d.outbox.len())
    }

    /// One-time prekeys the sandbox holds for a device.
    pub fn prekey_count(&self, phone: &str, device: u16) -> Option<usize> {
        let account = self.shared.directory.get(Phone::parse(phone).ok()?)?;
        let state = account.lock();
        state.devices.get(&device).map(|d| d.prekeys.len())
    }

    /// Stops accepting, ends every connection, writes the state file.
    pub async fn shutdown(mut self) -> Result<(), SandboxError> {
        self.shared.cancel.cancel();
        let served = match self.server.take() {
            Some(server) => server.await.unwrap_or(Ok(())),
            None => Ok(()),
        };
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        if let Some(path) = &self.shared.config.state_file {
            state::save(&self.shared)
                .await
                .map_err(|source| SandboxError::State {
                    path: path.clone(),
                    source,
                })?;
        }
        served.map_err(SandboxError::Serve)
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// Writes the state file shortly after changes, batching bursts of them.
async fn save_loop(shared: Arc<Shared>) {
    const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = shared.saves.notified() => {}
            _ = shared.cancel.cancelled() => return,
        }
        tokio::time::sleep(SETTLE).await;
        if let Err(e) = state::save(&shared).await {
            tracing::error!(error = %e, "could not write the sandbox state file");
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ws/chat", get(upgrade))
        .merge(media::routes())
        .merge(control::routes())
        .with_state(shared)
}

/// Answers the WebSocket handshake and hands the upgraded socket to a
/// connection task.
async fn upgrade(State(shared): State<Arc<Shared>>, mut request: Request) -> Response {
    let Some(accept) = websocket_accept(request.headers()) else {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let conn = shared.conn_seq.fetch_add(1, Ordering::Relaxed);
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => conn::serve(shared, TokioIo::new(upgraded), conn).await,
            Err(e) => tracing::debug!(conn, error = %e, "upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// The `Sec-WebSocket-Accept` value for a valid upgrade request.
fn websocket_accept(headers: &HeaderMap) -> Option<HeaderValue> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return None;
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION)? != "13" {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).ok()
}
