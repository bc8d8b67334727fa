//! A simulated WhatsApp Web server that the unmodified
//! [`whatsapp-rust`](https://crates.io/crates/whatsapp-rust) client pairs
//! with, logs in to and messages through, with real end-to-end encryption,
//! for tests with no network and no account.
//!
//! Start one in a test's own process on a free loopback port, point a
//! client's transport at [`RunningSandbox::ws_url`], and play the other
//! side through the simulated phones: create them, let one link the
//! client by QR code or pair code, have them send texts and read what
//! they got. The same operations are served over HTTP (the control API,
//! described by `GET /sandbox/openapi.json`) for tests in other languages
//! and for the `wago-sandbox` binary.
//!
//! ```
//! use wago_sandbox::{SandboxConfig, start};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sandbox = start(SandboxConfig::loopback()).await?;
//! assert!(sandbox.ws_url().starts_with("ws://127.0.0.1:"));
//!
//! // Two simulated users; the first one's phone writes to the second.
//! sandbox.create_phone("62811000001")?;
//! sandbox.create_phone("62812000002")?;
//! let id = sandbox.send_text("62811000001", "62812000002", "halo").await?;
//!
//! let inbox = sandbox.inbox("62812000002").await?;
//! assert_eq!((inbox[0].id.as_str(), inbox[0].text.as_str()), (id.as_str(), "halo"));
//! sandbox.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! A client of your own links as a companion device of a simulated phone:
//! it shows a QR code (its `PairingQrCode` event), and
//! [`RunningSandbox::link`] scans it. `examples/echo.rs` pairs a plain
//! `whatsapp-rust` client this way, sends a text to another phone, gets its
//! reply and sees the delivery and read receipts. The client must be built
//! with its `danger-skip-cert-chain-verify` feature (in your
//! `[dev-dependencies]` only): no sandbox can present a certificate signed
//! by WhatsApp's root key.
//!
//! ## How it is built
//!
//! It owns the server side only: the WebSocket and Noise responder, the
//! accounts with their simulated phones (device 0) and companion devices,
//! and the control API that drives the phones. It never opens a connection
//! itself.
//!
//! Map: `server` (listener, router, WebSocket upgrade, shutdown) hands each
//! connection to `conn`, which runs `noise` (handshake, with the certificate
//! chain from `cert`) over `frame`, then either `pairing` (QR flow, pair
//! codes with `pair_code`, and unlinking) or `login` (stanzas, answered by
//! `iq`). `accounts` is the state and `state` its file; `phone` is the
//! simulated primary device; `signal` holds the phones' Signal stores;
//! `media` is the media host (uploads and downloads of encrypted blobs, and
//! the `media_conn` answer), served over TLS on the same port by `tls`;
//! `messages` relays companions' messages and has phones send and read
//! texts, `receipts` routes receipts; `online` reaches logged-in
//! connections and `deliver` queues stanzas for devices; `tokens` issues
//! privacy tokens and guards restricted accounts; `seed` is what a phone
//! writes for its companions on its own (its push name and NCT salt in app
//! state, an initial history sync); `presence` relays
//! presence, typing and about texts; `jid` spells addresses; `control` is
//! the HTTP API, and `mock` the mock-server contract of the client
//! library's own e2e suite.

#![warn(missing_docs)]

mod accounts;
mod background;
mod cert;
mod conn;
mod control;
mod deliver;
mod frame;
mod iq;
mod jid;
mod login;
mod media;
mod messages;
mod mock;
mod noise;
mod online;
mod pair_code;
mod pairing;
mod phone;
mod presence;
mod receipts;
mod seed;
mod server;
mod signal;
mod state;
mod tls;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use accounts::{AccountView, Phone, PhoneError, ReceivedMedia};
pub use background::{BackgroundSandbox, shared};
pub use control::ApiError;
pub use control::{InboxItem, NewMedia};
pub use media::Kind as MediaKind;
pub use pairing::Linked;
pub use server::{RunningSandbox, SandboxError, SandboxStats, start};
pub use state::StateError;

/// The control API's OpenAPI 3.1 document, as `GET /sandbox/openapi.json`
/// serves it.
pub fn control_document() -> utoipa::openapi::OpenApi {
    control::document().clone()
}

/// `wago sandbox`: serve the simulated WhatsApp network on one port.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Address for the WebSocket (`/ws/chat`) and the control API.
    #[arg(long, env = "SANDBOX_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// Keep accounts, devices, prekeys and the server key in this JSON file
    /// across restarts (in memory only without it).
    #[arg(long, env = "SANDBOX_STATE")]
    pub state: Option<PathBuf>,
    /// How long a typing state waits for a recipient that is offline.
    #[arg(long, env = "CHATSTATE_TTL_SECS", default_value_t = 10)]
    pub chatstate_ttl_secs: u64,
    /// How long the server takes to answer a new connection's hello, as a
    /// server a network round trip away does (0 for at once).
    #[arg(long, env = "SANDBOX_CONNECT_LATENCY_MS", default_value_t = 20)]
    pub connect_latency_ms: u64,
    /// How many megabytes of uploaded (encrypted) media the media host
    /// keeps in memory; the oldest blobs go first.
    #[arg(long, env = "SANDBOX_MEDIA_CAPACITY_MB", default_value_t = 512)]
    pub media_capacity_mb: usize,
}

/// How a sandbox is started; `SandboxConfig::new` gives the defaults.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The address of the WebSocket and the control API (port 0: any free
    /// port).
    pub listen: SocketAddr,
    /// Where the state is kept across restarts (in memory only without).
    pub state_file: Option<PathBuf>,
    /// A client must finish the Noise handshake within this time.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed (clients
    /// send a keepalive at least every 30 s).
    pub idle_timeout: Duration,
    /// How long `POST /phones/{phone}/link` waits for the companion to
    /// answer the pairing.
    pub pairing_timeout: Duration,
    /// How long a typing state waits for a recipient that is offline.
    pub chatstate_ttl: Duration,
    /// How long the server waits before it answers a new connection's
    /// hello. A real server is a network round trip away, so a client that
    /// reconnects is seen offline for at least that long; on loopback,
    /// without it, a reconnect can be over before anything notices.
    pub connect_latency: Duration,
    /// Bytes of uploaded media kept in memory, the oldest dropped first.
    pub media_capacity: usize,
}

impl SandboxConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            state_file: None,
            handshake_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(120),
            pairing_timeout: Duration::from_secs(20),
            chatstate_ttl: Duration::from_secs(10),
            connect_latency: Duration::from_millis(20),
            media_capacity: 512 * 1024 * 1024,
        }
    }

    /// The defaults, on a free port of `127.0.0.1` (what a test wants).
    pub fn loopback() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Keeps the sandbox's state in this file across restarts (see
    /// [`StateError`] for the files it refuses).
    pub fn with_state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }
}

impl From<SandboxArgs> for SandboxConfig {
    fn from(args: SandboxArgs) -> Self {
        let mut config = SandboxConfig::new(args.listen);
        config.state_file = args.state;
        config.chatstate_ttl = Duration::from_secs(args.chatstate_ttl_secs);
        config.connect_latency = Duration::from_millis(args.connect_latency_ms);
        config.media_capacity = args.media_capacity_mb.saturating_mul(1024 * 1024);
        config
    }
}

/// Runs `wago sandbox` until `shutdown` resolves, then stops cleanly (the
/// state file, if any, is written one last time).
pub async fn run(
    args: SandboxArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SandboxError> {
    let sandbox = start(args.into()).await?;
    // On stdout, not only in the log: scripts read the port from here.
    println!(
        "wago sandbox: WebSocket {} , control API {}",
        sandbox.ws_url(),
        sandbox.http_url()
    );
    tracing::info!(addr = %sandbox.addr(), "sandbox listening");
    shutdown.await;
    sandbox.shutdown().await
}
