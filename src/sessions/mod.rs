//! Sessions: every tenant's WhatsApp number, connected, on whichever node
//! holds its lease.
//!
//! The [`Supervisor`] (`supervisor.rs`) owns this node's session tasks
//! (`task.rs`). A
//! task runs one `whatsapp-rust` client over the tenant's protocol store
//! while it holds the session's lease, publishes its state on a watch
//! channel for this node and in the `session_status` row for every node,
//! and takes [`Command`]s over a bounded channel. `node.rs` is the node's
//! own loop: membership, lease renewal and fencing for all its sessions at
//! once, placement, and commands that other nodes hand over.
//!
//! Every node answers for every session. A call for a session that another
//! node runs becomes a row (a send, a command) plus a [`bus::Signal`] to
//! that node, and waits a bounded time for the outcome, read from rows
//! (`remote.rs`). What a caller sees of a session is a [`SessionView`]
//! (`view.rs`).
//! The database is the source of truth: a task is only a worker and can
//! crash or move without losing anything.
//!
//! This module knows nothing of HTTP; the handlers in `src/http` call the
//! supervisor and map its errors.

pub mod bus;
mod client;
mod inbound;
mod media;
mod node;
mod pace;
mod phone;
mod remote;
mod send;
mod stores;
mod supervisor;
mod task;
mod transport;
mod view;

use std::time::Duration;

use tokio::sync::oneshot;

pub use crate::types::{SendPace, SessionState};
pub use bus::{Bus, Signal};
pub use client::Endpoint;
pub use media::MediaWork;
pub use phone::{Phone, new_message_id};
pub use supervisor::Supervisor;
pub use view::{Qr, SessionStatus, SessionView};

use crate::types::MessageStatus;

/// Why a call on a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the session is already paired")]
    AlreadyPaired,
    #[error("the session is not connected")]
    NotConnected,
    #[error("no QR code came from the client within {0:?}")]
    NoQr(Duration),
    #[error(
        "this is a sandbox build: it connects sessions only to a sandbox on a loopback address \
         (set WA_SERVER_URL to one, or run `wago serve --sandbox`)"
    )]
    NotASandbox,
    #[error("the session is shutting down")]
    Stopped,
    #[error("pair code: {0}")]
    PairCode(String),
    #[error("WhatsApp client: {0}")]
    Client(String),
    /// The node that runs the session did not answer in time.
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Asks a session task to act.
#[derive(Debug)]
pub(crate) enum Command {
    /// Sends are waiting in the database.
    Wake,
    /// A node waits for this send's outcome: announce it when settled.
    Watch(String),
    /// A send was accepted here: its row, as written, so the queue need
    /// not read it back. `reply`, when someone waits, hears how it went or
    /// that the number's pace holds it back.
    Send {
        row: crate::store::messages::OutboundMessage,
        reply: Option<oneshot::Sender<Result<SendOutcome, SessionError>>>,
    },
    PairCode {
        phone: String,
        reply: oneshot::Sender<Result<String, SessionError>>,
    },
    Logout {
        reply: oneshot::Sender<()>,
    },
}

/// What became of a send someone waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// It left `queued`: sent, or failed. The row's status then, when the
    /// session knows it (else read the row).
    Settled(Option<MessageStatus>),
    /// The number's pace holds it back; it is expected to go at about
    /// this time (unix ms).
    Held { until_ms: i64 },
}

/// Why a session task is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Placement: connect a linked device; a session without one ends.
    Resume,
    /// Someone asked for a QR code: pair if no device is linked.
    Pair,
}

/// How sessions run; from the configuration.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub endpoint: Endpoint,
    /// The WhatsApp Web version to announce; `None` lets the client look up
    /// the current one.
    pub version: Option<(u32, u32, u32)>,
    pub push_name: Option<String>,
    pub pace: SendPace,
    /// How long a session's lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How often queued sends are looked for, in case a wake-up was lost.
    pub queue_sweep: Duration,
    /// The longest wait between restarts of a failing session.
    pub max_backoff: Duration,
    /// How long a call waits for another node's answer.
    pub remote_wait: Duration,
    pub http: reqwest::Client,
    /// Where media files are kept, and how many media sends run at once.
    pub media: MediaWork,
}

/// The sessions' HTTP client (media, version lookup) from `builder`: a
/// host that stops answering fails the call instead of holding a blocking
/// thread (uploads and downloads stream on one) for ever.
pub fn session_http(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}

impl SessionSettings {
    pub fn new(endpoint: Endpoint) -> Self {
        SessionSettings {
            endpoint,
            version: None,
            push_name: None,
            pace: SendPace::default(),
            lease_ttl: Duration::from_secs(30),
            queue_sweep: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            remote_wait: Duration::from_secs(15),
            http: session_http(reqwest::Client::builder()),
            media: MediaWork::new(
                std::sync::Arc::new(crate::media::DiskStorage::new("wago-media")),
                4,
            ),
        }
    }
}
