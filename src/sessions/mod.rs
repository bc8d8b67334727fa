//! Sessions: every tenant's WhatsApp number, connected.
//!
//! The [`Supervisor`] owns one task per tenant session (see `task.rs`). A
//! task runs one `whatsapp-rust` client over the tenant's protocol store,
//! holds the session's lease while it does, publishes its [`SessionStatus`]
//! on a watch channel and takes [`Command`]s over an mpsc channel. The
//! database is the source of truth: sends are rows the task drains, inbound
//! messages are stored before they are acked, so a task is only a worker
//! and can crash or restart without losing anything.
//!
//! This module knows nothing of HTTP; the handlers in `src/http` call the
//! supervisor and map its errors.

mod client;
mod inbound;
mod pace;
mod phone;
mod send;
mod stores;
mod task;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::Endpoint;
pub use pace::SendPace;
pub use phone::{Phone, new_message_id};

use crate::store::NodeId;
use crate::store::Store;
use crate::tenants::TenantId;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// No device is linked; nothing runs.
    Unpaired,
    /// The client shows QR codes (or waits for a pair code).
    Pairing,
    /// Linked; connecting or logging in.
    Connecting,
    Connected,
    /// Linked, but the connection is down (the client reconnects by itself).
    Disconnected,
    /// The device was unlinked; it waits for a new pairing.
    LoggedOut,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Unpaired => "unpaired",
            SessionState::Pairing => "pairing",
            SessionState::Connecting => "connecting",
            SessionState::Connected => "connected",
            SessionState::Disconnected => "disconnected",
            SessionState::LoggedOut => "logged_out",
        }
    }

    /// A device is linked to a number in this state.
    pub fn is_paired(self) -> bool {
        matches!(
            self,
            SessionState::Connecting | SessionState::Connected | SessionState::Disconnected
        )
    }
}

/// What a session task publishes.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    pub state: SessionState,
    /// The linked device, e.g. `62811...:3@s.whatsapp.net`.
    pub jid: Option<String>,
    pub push_name: Option<String>,
    /// The QR code on show while pairing.
    pub qr: Option<Qr>,
    /// Why the session is not connected, when there is a reason to tell.
    pub error: Option<String>,
    /// The task has read the session's device, so `state` says whether it
    /// is paired (until then it is only a guess).
    pub loaded: bool,
}

impl SessionStatus {
    fn new(state: SessionState) -> Self {
        SessionStatus {
            state,
            jid: None,
            push_name: None,
            qr: None,
            error: None,
            loaded: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Qr {
    pub code: String,
    pub expires_at: Instant,
}

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
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Asks a session task to act.
#[derive(Debug)]
pub(crate) enum Command {
    /// Sends are waiting in the database; `reply` (if any) hears how the
    /// one with this WhatsApp id went.
    Send {
        message_id: String,
        reply: Option<oneshot::Sender<Result<(), SessionError>>>,
    },
    PairCode {
        phone: String,
        reply: oneshot::Sender<Result<String, SessionError>>,
    },
    Logout {
        reply: oneshot::Sender<()>,
    },
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
    /// The longest wait between restarts of a failing session.
    pub max_backoff: Duration,
    pub http: reqwest::Client,
}

impl SessionSettings {
    pub fn new(endpoint: Endpoint) -> Self {
        SessionSettings {
            endpoint,
            version: None,
            push_name: None,
            pace: SendPace::default(),
            lease_ttl: Duration::from_secs(30),
            max_backoff: Duration::from_secs(60),
            http: reqwest::Client::new(),
        }
    }
}

struct Handle {
    status: watch::Receiver<SessionStatus>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl Handle {
    fn running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// Owns every session task of this process.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("node", &self.inner.node)
            .field("sessions", &self.sessions().len())
            .finish()
    }
}

struct Inner {
    store: Store,
    protocol: Arc<stores::ProtocolStores>,
    node: NodeId,
    settings: SessionSettings,
    shutdown: CancellationToken,
    sessions: Mutex<HashMap<TenantId, Handle>>,
    /// The last status of sessions whose task has ended (logged out, QR
    /// codes ran out), so the API can still tell.
    ended: Mutex<HashMap<TenantId, SessionStatus>>,
}

/// How long `qr` waits for the client's first code.
const QR_WAIT: Duration = Duration::from_secs(20);

impl Supervisor {
    pub fn new(
        store: Store,
        node: NodeId,
        settings: SessionSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Supervisor {
            inner: Arc::new(Inner {
                protocol: Arc::new(stores::ProtocolStores::new(store.clone())),
                store,
                node,
                settings,
                shutdown,
                sessions: Mutex::new(HashMap::new()),
                ended: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts the session of every tenant with a linked device.
    pub async fn start_paired(&self) -> Result<usize, SessionError> {
        let paired = self.inner.store.paired_sessions().await?;
        let known = self.inner.store.list_tenants().await?;
        let mut started = 0;
        for tenant in known {
            let id = tenant.tenant_id();
            let is_paired = match tenant.store_dsn {
                None => paired.iter().any(|s| s.as_str() == id.as_str()),
                Some(_) => match self.inner.protocol.is_paired(&id).await {
                    Ok(paired) => paired,
                    Err(e) => {
                        tracing::error!(tenant_id = %id, error = %e, "cannot open the tenant's own store");
                        false
                    }
                },
            };
            if is_paired {
                self.ensure_running(&id);
                started += 1;
            }
        }
        tracing::info!(sessions = started, node = %self.inner.node, "sessions started");
        Ok(started)
    }

    /// The session's status; `unpaired` when it never ran here.
    pub fn status(&self, tenant: &TenantId) -> SessionStatus {
        if let Some(handle) = self.sessions().get(tenant) {
            return handle.status.borrow().clone();
        }
        self.ended()
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| SessionStatus::new(SessionState::Unpaired))
    }

    /// Starts the session's task unless it runs; returns its status feed.
    pub fn ensure_running(&self, tenant: &TenantId) -> watch::Receiver<SessionStatus> {
        let mut sessions = self.sessions();
        if let Some(handle) = sessions.get(tenant)
            && handle.running()
        {
            return handle.status.clone();
        }
        let stop = self.inner.shutdown.child_token();
        let (status_tx, status) = watch::channel(SessionStatus::new(SessionState::Connecting));
        let (commands, command_rx) = mpsc::channel(64);
        let ctx = task::Ctx {
            tenant: tenant.clone(),
            store: self.inner.store.clone(),
            protocol: self.inner.protocol.clone(),
            node: self.inner.node.clone(),
            settings: self.inner.settings.clone(),
            status: status_tx,
            commands: command_rx,
            stop: stop.clone(),
        };
        let supervisor = self.clone();
        let tenant_id = tenant.clone();
        let task = tokio::spawn(async move {
            let last = task::run(ctx).await;
            supervisor.ended().insert(tenant_id, last);
        });
        self.ended().remove(tenant);
        sessions.insert(
            tenant.clone(),
            Handle {
                status: status.clone(),
                commands,
                task,
                stop,
            },
        );
        status
    }

    /// A QR code to pair the session with, starting pairing if needed.
    pub async fn qr(&self, tenant: &TenantId) -> Result<Qr, SessionError> {
        if self.status(tenant).state.is_paired() {
            return Err(SessionError::AlreadyPaired);
        }
        let mut status = self.ensure_running(tenant);
        let wait = status.wait_for(|s| {
            s.loaded
                && (s.qr.as_ref().is_some_and(|q| q.expires_at > Instant::now())
                    || s.state.is_paired()
                    || s.error.is_some())
        });
        let found = match tokio::time::timeout(QR_WAIT, wait).await {
            Ok(Ok(s)) => s.clone(),
            Ok(Err(_)) => return Err(self.ended_error(tenant)),
            Err(_) => return Err(SessionError::NoQr(QR_WAIT)),
        };
        if let Some(qr) = found.qr {
            return Ok(qr);
        }
        if found.state.is_paired() {
            return Err(SessionError::AlreadyPaired);
        }
        Err(SessionError::Client(found.error.unwrap_or_default()))
    }

    /// Asks the session for a pair code for `phone` (digits).
    pub async fn pair_code(
        &self,
        tenant: &TenantId,
        phone: String,
    ) -> Result<String, SessionError> {
        if self.status(tenant).state.is_paired() {
            return Err(SessionError::AlreadyPaired);
        }
        let mut status = self.ensure_running(tenant);
        // The client asks the server for the code, so it must be connected
        // (it is once it shows its first QR code).
        let ready = status
            .wait_for(|s| s.loaded && (s.qr.is_some() || s.error.is_some() || s.state.is_paired()));
        match tokio::time::timeout(QR_WAIT, ready).await {
            Ok(Ok(s)) if s.qr.is_some() => {}
            Ok(Ok(s)) if s.state.is_paired() => return Err(SessionError::AlreadyPaired),
            Ok(Ok(s)) => return Err(SessionError::Client(s.error.clone().unwrap_or_default())),
            Ok(Err(_)) => return Err(self.ended_error(tenant)),
            Err(_) => return Err(SessionError::NoQr(QR_WAIT)),
        }
        let (reply, answer) = oneshot::channel();
        self.command(tenant, Command::PairCode { phone, reply })
            .await?;
        answer.await.map_err(|_| SessionError::Stopped)?
    }

    /// Unlinks the device. The session ends in `logged_out`.
    pub async fn logout(&self, tenant: &TenantId) -> Result<(), SessionError> {
        let (reply, done) = oneshot::channel();
        if self
            .command(tenant, Command::Logout { reply })
            .await
            .is_err()
        {
            // Nothing runs: forget the device all the same.
            self.inner.protocol.forget(tenant).await?;
            self.ended()
                .insert(tenant.clone(), SessionStatus::new(SessionState::LoggedOut));
            return Ok(());
        }
        let _ = done.await;
        if let Some(task) = self.take_task(tenant) {
            let _ = task.await;
        }
        Ok(())
    }

    /// Tells the session that a send is waiting; `reply` hears its outcome.
    pub(crate) async fn send(
        &self,
        tenant: &TenantId,
        message_id: String,
        reply: Option<oneshot::Sender<Result<(), SessionError>>>,
    ) -> Result<(), SessionError> {
        self.command(tenant, Command::Send { message_id, reply })
            .await
    }

    /// Deletes the tenant's protocol rows where they live (the tenant is
    /// being deleted; stop its session first).
    pub async fn forget(&self, tenant: &TenantId) -> Result<(), SessionError> {
        Ok(self.inner.protocol.forget(tenant).await?)
    }

    /// Stops a tenant's session without unlinking (the tenant is deleted,
    /// or its task must end here).
    pub async fn stop(&self, tenant: &TenantId) {
        let handle = self.sessions().remove(tenant);
        if let Some(handle) = handle {
            handle.stop.cancel();
            let _ = handle.task.await;
        }
        self.ended().remove(tenant);
    }

    /// Waits for every session task to end (after the shutdown token).
    pub async fn wait(&self) {
        let tasks: Vec<JoinHandle<()>> = self
            .sessions()
            .drain()
            .map(|(_, handle)| handle.task)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    async fn command(&self, tenant: &TenantId, command: Command) -> Result<(), SessionError> {
        let sender = match self.sessions().get(tenant) {
            Some(handle) if handle.running() => handle.commands.clone(),
            _ => return Err(SessionError::NotConnected),
        };
        sender
            .send(command)
            .await
            .map_err(|_| SessionError::Stopped)
    }

    fn take_task(&self, tenant: &TenantId) -> Option<JoinHandle<()>> {
        self.sessions().remove(tenant).map(|h| h.task)
    }

    fn ended_error(&self, tenant: &TenantId) -> SessionError {
        match self.status(tenant).error {
            Some(e) => SessionError::Client(e),
            None => SessionError::Stopped,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Handle>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, SessionStatus>> {
        self.inner.ended.lock().unwrap_or_else(|e| e.into_inner())
    }
}
