//! Sessions: every tenant's WhatsApp number, connected, on whichever node
//! holds its lease.
//!
//! The [`Supervisor`] owns this node's session tasks (see `task.rs`). A
//! task runs one `whatsapp-rust` client over the tenant's protocol store
//! while it holds the session's lease, publishes its state on a watch
//! channel for this node and in the `session_status` row for every node,
//! and takes [`Command`]s over a bounded channel. `node.rs` is the node's
//! own loop: membership, lease renewal and fencing for all its sessions at
//! once, placement, and commands that other nodes hand over.
//!
//! Every node answers for every session. A call for a session that another
//! node runs becomes a row (a send, a command) plus a [`bus::Signal`] to
//! that node, and waits a bounded time for the outcome, read from rows.
//! The database is the source of truth: a task is only a worker and can
//! crash or move without losing anything.
//!
//! This module knows nothing of HTTP; the handlers in `src/http` call the
//! supervisor and map its errors.

pub mod bus;
mod client;
mod inbound;
mod node;
mod pace;
mod phone;
mod send;
mod stores;
mod task;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use bus::{Bus, Signal};
pub use client::Endpoint;
pub use pace::SendPace;
pub use phone::{Phone, new_message_id};

use crate::store::cluster::{CommandKind, CommandStatus, StoredStatus};
use crate::store::messages::MessageStatus;
use crate::store::{NodeId, SessionId, Store, now_ms};
use crate::tenants::TenantId;

crate::text_enum! {
    /// Where a session is in its life.
    pub enum SessionState {
        /// No device is linked; nothing runs.
        Unpaired = "unpaired",
        /// The client shows QR codes (or waits for a pair code).
        Pairing = "pairing",
        /// Linked; connecting or logging in.
        Connecting = "connecting",
        Connected = "connected",
        /// Linked, but the connection is down (the client reconnects by
        /// itself, or another node takes the session over).
        Disconnected = "disconnected",
        /// The device was unlinked; it waits for a new pairing.
        LoggedOut = "logged_out",
    }
}

impl SessionState {
    /// A device is linked to a number in this state.
    pub fn is_paired(self) -> bool {
        matches!(
            self,
            SessionState::Connecting | SessionState::Connected | SessionState::Disconnected
        )
    }
}

/// What a session task publishes on this node.
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qr {
    pub code: String,
    /// When the code stops being valid (unix ms).
    pub expires_at_ms: i64,
}

impl Qr {
    fn fresh(&self) -> bool {
        self.expires_at_ms > now_ms()
    }
}

/// The session as every node reports it (`GET /session`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub state: SessionState,
    /// The linked device's JID (`62811…:3@s.whatsapp.net`), once paired.
    pub jid: Option<String>,
    /// The account's push name, once known.
    pub push_name: Option<String>,
    /// Why the session last failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the session entered `state` (RFC 3339), if it ever ran.
    pub since: Option<String>,
    /// The node that runs the session, if one does.
    pub node: Option<String>,
    #[serde(skip)]
    pub qr: Option<Qr>,
}

impl SessionView {
    pub fn unpaired() -> Self {
        SessionView {
            state: SessionState::Unpaired,
            jid: None,
            push_name: None,
            error: None,
            since: None,
            node: None,
            qr: None,
        }
    }

    /// What the stored row means now. A row whose owner no longer holds
    /// the lease describes a session nobody runs at the moment.
    pub fn of(stored: StoredStatus) -> Self {
        let f = stored.fields;
        let mut view = SessionView {
            state: stored.state,
            jid: f.jid,
            push_name: f.push_name,
            error: f.error,
            since: Some(crate::store::rfc3339(stored.since)),
            node: stored.live_owner.as_ref().map(|n| n.as_str().to_owned()),
            qr: f.qr.zip(f.qr_expires_at).map(|(code, expires_at_ms)| Qr {
                code,
                expires_at_ms,
            }),
        };
        if stored.live_owner.is_none() {
            view.qr = None;
            match view.state {
                SessionState::Pairing => {
                    view.state = SessionState::Unpaired;
                    view.error = Some("pairing stopped; ask for a new QR code".into());
                }
                s if s.is_paired() => {
                    view.state = SessionState::Disconnected;
                    view.error = Some("no node runs the session now; one takes it over".into());
                }
                _ => {}
            }
        }
        view
    }
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
    /// Sends are waiting; `reply` hears how the one with this WhatsApp id
    /// went, or that the number's pace holds it back.
    Send {
        message_id: String,
        reply: oneshot::Sender<Result<SendOutcome, SessionError>>,
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
            http: reqwest::Client::new(),
        }
    }
}

struct Handle {
    status: watch::Receiver<SessionStatus>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    stop: CancellationToken,
    /// When the task started.
    started: tokio::time::Instant,
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
    bus: Bus,
    sessions: Mutex<HashMap<TenantId, Handle>>,
    /// The fence of every session task still running here, by task number:
    /// those handing over too, which `sessions` no longer lists.
    live: Mutex<HashMap<u64, transport::Fence>>,
    /// How many of them; 0 once every session here has ended.
    live_count: watch::Sender<usize>,
    next_task: std::sync::atomic::AtomicU64,
    /// Wakes placement (a session here ended, so it may take another).
    placement: Arc<Notify>,
}

/// How long `qr` waits for the client's first code.
const QR_WAIT: Duration = Duration::from_secs(20);
/// Commands queued for one session task.
const COMMANDS: usize = 64;
/// How often a waiter re-reads rows when no signal came (signals can be
/// lost; rows cannot).
const REREAD: Duration = Duration::from_secs(1);

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
                bus: Bus::new(node.clone(), store.clone()),
                store,
                node,
                settings,
                shutdown,
                sessions: Mutex::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
                live_count: watch::Sender::new(0),
                next_task: std::sync::atomic::AtomicU64::new(0),
                placement: Arc::new(Notify::new()),
            }),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    /// This process's claim on the node: its write fence's tag.
    pub fn instance(&self) -> &str {
        self.inner.store.write_fence().tag()
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// Runs this node: membership, leases, placement and commands from
    /// other nodes, until `stop`; then leaves the cluster and hands its
    /// sessions over. `url` is the database's (for `LISTEN`).
    pub async fn run_node(&self, address: String, url: Option<String>, stop: CancellationToken) {
        node::run(self.clone(), address, url, stop).await
    }

    /// The session's status as every node reports it.
    pub async fn status(&self, tenant: &TenantId) -> Result<SessionView, SessionError> {
        Ok(match self.inner.store.session_status(tenant).await? {
            Some(stored) => SessionView::of(stored),
            None => SessionView::unpaired(),
        })
    }

    /// The session's state and linked device, as a send needs them: from
    /// the task itself when it runs here (no query), else from the status
    /// row.
    pub async fn state_for_send(
        &self,
        tenant: &TenantId,
    ) -> Result<(SessionState, Option<String>), SessionError> {
        let local = self.sessions().get(tenant).and_then(|h| {
            let status = h.status.borrow();
            (h.running() && status.loaded).then(|| (status.state, status.jid.clone()))
        });
        if let Some(local) = local {
            return Ok(local);
        }
        let view = self.status(tenant).await?;
        Ok((view.state, view.jid))
    }

    /// Starts the session's task here unless it runs here; returns its
    /// status feed. The task ends at once if another node holds the lease.
    pub fn ensure_running(&self, tenant: &TenantId, mode: Mode) -> watch::Receiver<SessionStatus> {
        let mut sessions = self.sessions();
        if let Some(handle) = sessions.get(tenant)
            && handle.running()
        {
            return handle.status.clone();
        }
        let stop = self.inner.shutdown.child_token();
        let (status_tx, status) = watch::channel(SessionStatus::new(SessionState::Connecting));
        let (commands, command_rx) = mpsc::channel(COMMANDS);
        let fence = transport::Fence::default();
        let ctx = task::Ctx {
            tenant: tenant.clone(),
            mode,
            store: self.inner.store.clone(),
            protocol: self.inner.protocol.clone(),
            node: self.inner.node.clone(),
            instance: self.instance().to_owned(),
            placement: self.inner.placement.clone(),
            settings: self.inner.settings.clone(),
            bus: self.inner.bus.clone(),
            status: status_tx,
            commands: command_rx,
            stop: stop.clone(),
            lease: None,
            persisted: None,
            fence: fence.clone(),
        };
        let number = self
            .inner
            .next_task
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.set_live(number, Some(fence.clone()));
        let supervisor = self.clone();
        let task = tokio::spawn(async move {
            task::run(ctx).await;
            supervisor.set_live(number, None);
            supervisor.inner.placement.notify_one();
        });
        sessions.insert(
            tenant.clone(),
            Handle {
                status: status.clone(),
                commands,
                task,
                stop,
                started: tokio::time::Instant::now(),
            },
        );
        status
    }

    /// A QR code to pair the session with, starting pairing here if no
    /// node runs the session, or read from the status row of the node that
    /// does.
    pub async fn qr(&self, tenant: &TenantId) -> Result<Qr, SessionError> {
        let deadline = tokio::time::Instant::now() + QR_WAIT;
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(SessionError::NoQr(QR_WAIT));
            }
            let view = self.status(tenant).await?;
            if view.state.is_paired() {
                return Err(SessionError::AlreadyPaired);
            }
            if self.runs_elsewhere(tenant, &view) {
                match self.remote_qr(tenant, deadline).await? {
                    Some(qr) => return Ok(qr),
                    None => continue, // its node stopped it: pair here
                }
            }
            let mut status = self.ensure_running(tenant, Mode::Pair);
            let wait = status.wait_for(|s| {
                s.loaded
                    && (s.qr.as_ref().is_some_and(Qr::fresh)
                        || s.state.is_paired()
                        || s.error.is_some())
            });
            let waited = tokio::time::timeout_at(deadline, wait)
                .await
                .map(|r| r.map(|s| s.clone()));
            let found = match waited {
                Ok(Ok(s)) => s,
                // The task ended: another node took the lease first, or
                // pairing could not start. The status row tells which.
                Ok(Err(_)) => {
                    let view = self.status(tenant).await?;
                    if !self.runs_elsewhere(tenant, &view) {
                        return Err(match view.error {
                            Some(e) => SessionError::Client(e),
                            None => SessionError::Stopped,
                        });
                    }
                    continue;
                }
                Err(_) => return Err(SessionError::NoQr(QR_WAIT)),
            };
            if let Some(qr) = found.qr {
                return Ok(qr);
            }
            if found.state.is_paired() {
                return Err(SessionError::AlreadyPaired);
            }
            return Err(SessionError::Client(found.error.unwrap_or_default()));
        }
    }

    /// Asks the session for a pair code for `phone` (digits).
    pub async fn pair_code(
        &self,
        tenant: &TenantId,
        phone: String,
    ) -> Result<String, SessionError> {
        // The client asks the server for the code, so it must be connected:
        // it is once it shows its first QR code.
        self.qr(tenant).await?;
        if let Some(commands) = self.local_commands(tenant) {
            let (reply, answer) = oneshot::channel();
            commands
                .send(Command::PairCode { phone, reply })
                .await
                .map_err(|_| SessionError::Stopped)?;
            return answer.await.map_err(|_| SessionError::Stopped)?;
        }
        let code = self
            .remote_command(tenant, CommandKind::PairCode, Some(&phone))
            .await?;
        Ok(code.unwrap_or_default())
    }

    /// Unlinks the device. The session ends in `logged_out`.
    pub async fn logout(&self, tenant: &TenantId) -> Result<(), SessionError> {
        if self.logout_here(tenant).await? {
            return Ok(());
        }
        let view = self.status(tenant).await?;
        if self.runs_elsewhere(tenant, &view) {
            self.remote_command(tenant, CommandKind::Logout, None)
                .await?;
            return Ok(());
        }
        // Nobody runs it: forget the device here, under the lease.
        let session = SessionId::from(tenant);
        let store = &self.inner.store;
        let Some(lease) = store
            .acquire_session_lease(&session, &self.inner.node, self.instance())
            .await?
        else {
            // Another node started it meanwhile.
            self.remote_command(tenant, CommandKind::Logout, None)
                .await?;
            return Ok(());
        };
        let outcome = async {
            self.inner.protocol.forget(tenant).await?;
            let fields = crate::store::cluster::StatusFields {
                error: Some("logged out".into()),
                ..Default::default()
            };
            store
                .write_session_status(tenant, &lease, SessionState::LoggedOut, &fields)
                .await?;
            Ok::<_, crate::store::StoreError>(())
        }
        .await;
        store.release_session_lease(&lease).await?;
        outcome?;
        self.inner
            .bus
            .publish(Signal::Status {
                tenant: tenant.as_str().to_owned(),
            })
            .await;
        Ok(())
    }

    /// Sends a logout to the task here, if one runs; waits for it to end.
    async fn logout_here(&self, tenant: &TenantId) -> Result<bool, SessionError> {
        let Some(commands) = self.local_commands(tenant) else {
            return Ok(false);
        };
        let (reply, done) = oneshot::channel();
        if commands.send(Command::Logout { reply }).await.is_err() {
            return Ok(false);
        }
        let _ = done.await;
        if let Some(task) = self.take_task(tenant) {
            let _ = task.await;
        }
        Ok(true)
    }

    /// Hands an accepted send to the session, wherever it runs, and waits
    /// up to `wait` for WhatsApp's answer, or until the number's pace holds
    /// it back. `Timeout` while it is still queued.
    pub(crate) async fn submit(
        &self,
        tenant: &TenantId,
        message_id: &str,
        wait: Option<Duration>,
    ) -> Result<SendOutcome, SessionError> {
        if let Some(commands) = self.local_commands(tenant) {
            let Some(wait) = wait else {
                // A full channel already holds a wake-up.
                let _ = commands.try_send(Command::Wake);
                return Ok(SendOutcome::Settled(None));
            };
            let asked = async {
                let (reply, outcome) = oneshot::channel();
                let message_id = message_id.to_owned();
                commands
                    .send(Command::Send { message_id, reply })
                    .await
                    .map_err(|_| SessionError::NotConnected)?;
                outcome.await.map_err(|_| SessionError::NotConnected)?
            };
            // The whole wait is bounded, the queueing of the ask included.
            return tokio::time::timeout(wait, asked).await.unwrap_or_else(|_| {
                Err(SessionError::Timeout(format!(
                    "not sent within {wait:?}; it stays queued"
                )))
            });
        }
        // Elsewhere, or nowhere yet: the row waits for whoever runs it.
        let mut signals = self.inner.bus.subscribe();
        self.inner
            .bus
            .publish(Signal::Send {
                tenant: tenant.as_str().to_owned(),
                awaited: wait.map(|_| message_id.to_owned()),
            })
            .await;
        let Some(wait) = wait else {
            return Ok(SendOutcome::Settled(None));
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut held = None;
        loop {
            let row = self.inner.store.get_message(tenant, message_id).await?;
            if let Some(row) = row.filter(|r| r.status != MessageStatus::Queued) {
                return Ok(SendOutcome::Settled(Some(row.status)));
            }
            if let Some(until_ms) = held {
                return Ok(SendOutcome::Held { until_ms });
            }
            let heard = |s: &Signal| match s {
                Signal::Settled { message_id: m, .. } => m == message_id,
                Signal::Held { message_id: m, .. } => m == message_id,
                Signal::Resync => true,
                _ => false,
            };
            match wait_for_signal(&mut signals, heard, deadline).await {
                Woken::Deadline => {
                    return Err(SessionError::Timeout(format!(
                        "not sent within {wait:?}; it stays queued"
                    )));
                }
                Woken::Heard(Signal::Held { until_ms, .. }) => held = Some(until_ms),
                Woken::Heard(_) | Woken::Reread => {}
            }
        }
    }

    /// Deletes the tenant's protocol rows where they live (the tenant is
    /// being deleted; stop its session first).
    pub async fn forget(&self, tenant: &TenantId) -> Result<(), SessionError> {
        Ok(self.inner.protocol.forget(tenant).await?)
    }

    /// Stops a tenant's session without unlinking, wherever it runs (the
    /// tenant is being deleted).
    pub async fn stop(&self, tenant: &TenantId) -> Result<(), SessionError> {
        if self.stop_here(tenant).await {
            return Ok(());
        }
        let view = self.status(tenant).await?;
        if self.runs_elsewhere(tenant, &view) {
            self.remote_command(tenant, CommandKind::Stop, None).await?;
        }
        Ok(())
    }

    /// Stops the session's task here, if one runs; true if one did.
    pub(crate) async fn stop_here(&self, tenant: &TenantId) -> bool {
        let handle = self.sessions().remove(tenant);
        let Some(handle) = handle else { return false };
        handle.stop.cancel();
        let _ = handle.task.await;
        true
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

    /// Records a session task as running (with its fence) or ended.
    fn set_live(&self, number: u64, fence: Option<transport::Fence>) {
        let mut live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        match fence {
            Some(fence) => live.insert(number, fence),
            None => live.remove(&number),
        };
        let count = live.len();
        drop(live);
        self.inner.live_count.send_replace(count);
    }

    /// The fences of every session task still running here.
    fn live_fences(&self) -> Vec<transport::Fence> {
        let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        live.values().cloned().collect()
    }

    /// Returns once no session task runs here.
    async fn all_sessions_ended(&self) {
        let mut count = self.inner.live_count.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// Whether every session task here ended within `limit`.
    async fn wait_sessions_ended(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.all_sessions_ended())
            .await
            .is_ok()
    }

    /// Another node holds the session's live lease.
    fn runs_elsewhere(&self, tenant: &TenantId, view: &SessionView) -> bool {
        view.node
            .as_deref()
            .is_some_and(|n| n != self.inner.node.as_str())
            && self.local_commands(tenant).is_none()
    }

    /// Waits for the owner's QR code to show in the status row; `None`
    /// once no node runs the session any more.
    async fn remote_qr(
        &self,
        tenant: &TenantId,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Qr>, SessionError> {
        let mut signals = self.inner.bus.subscribe();
        loop {
            let view = self.status(tenant).await?;
            if let Some(qr) = view.qr.filter(Qr::fresh) {
                return Ok(Some(qr));
            }
            if view.state.is_paired() {
                return Err(SessionError::AlreadyPaired);
            }
            if view.node.is_none() {
                return Ok(None);
            }
            let changed = |s: &Signal| {
                matches!(s, Signal::Status { tenant: t } if t == tenant.as_str())
                    || *s == Signal::Resync
            };
            if let Woken::Deadline = wait_for_signal(&mut signals, changed, deadline).await {
                return Err(SessionError::NoQr(QR_WAIT));
            }
        }
    }

    /// Hands a command to the node that runs the session and waits for
    /// its outcome, at most `remote_wait`. A command nobody took by then is
    /// withdrawn, so it is carried out once or not at all.
    async fn remote_command(
        &self,
        tenant: &TenantId,
        kind: CommandKind,
        argument: Option<&str>,
    ) -> Result<Option<String>, SessionError> {
        let store = &self.inner.store;
        let mut signals = self.inner.bus.subscribe();
        let id = store.insert_command(tenant, kind, argument).await?;
        self.inner
            .bus
            .publish(Signal::Command {
                tenant: tenant.as_str().to_owned(),
            })
            .await;
        let wait = self.inner.settings.remote_wait;
        let mut deadline = tokio::time::Instant::now() + wait;
        let mut taken_late = false;
        loop {
            let row = store.get_command(id).await?;
            match row.as_ref().map(|r| r.status) {
                Some(CommandStatus::Done) => return Ok(row.and_then(|r| r.result)),
                Some(CommandStatus::Failed) => {
                    let why = row.and_then(|r| r.result).unwrap_or_default();
                    return Err(match kind {
                        CommandKind::PairCode => SessionError::PairCode(why),
                        _ => SessionError::Client(why),
                    });
                }
                Some(CommandStatus::Expired) | None => {
                    return Err(SessionError::Timeout(format!(
                        "the node that runs the session did not take the {kind} command \
                         within {wait:?}; nothing was done"
                    )));
                }
                Some(CommandStatus::Pending | CommandStatus::Running) => {}
            }
            let done = |s: &Signal| *s == Signal::CommandDone { id } || *s == Signal::Resync;
            if !matches!(
                wait_for_signal(&mut signals, done, deadline).await,
                Woken::Deadline
            ) {
                continue;
            }
            if taken_late {
                return Err(SessionError::Timeout(format!(
                    "the {kind} command is still running on the session's node"
                )));
            }
            if store.expire_command(id).await? {
                continue; // reads `expired` and answers
            }
            // The owner took it just now: give it one more wait to finish.
            taken_late = true;
            deadline = tokio::time::Instant::now() + wait;
        }
    }

    /// The command channel of the session's task here, if one runs.
    fn local_commands(&self, tenant: &TenantId) -> Option<mpsc::Sender<Command>> {
        match self.sessions().get(tenant) {
            Some(handle) if handle.running() => Some(handle.commands.clone()),
            _ => None,
        }
    }

    fn take_task(&self, tenant: &TenantId) -> Option<JoinHandle<()>> {
        self.sessions().remove(tenant).map(|h| h.task)
    }

    /// The state of every session running here (for metrics).
    pub fn local_states(&self) -> Vec<SessionState> {
        self.sessions()
            .values()
            .filter(|h| h.running())
            .map(|h| h.status.borrow().state)
            .collect()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Handle>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`wait_for_signal`] woke up to.
enum Woken {
    /// A signal `wanted` accepted.
    Heard(Signal),
    /// `REREAD` passed, or signals were lost: read the rows again.
    Reread,
    /// The deadline passed.
    Deadline,
}

/// Waits until a signal `wanted` accepts arrives, `REREAD` passes (rows
/// are re-read then, as signals may be lost) or the deadline.
async fn wait_for_signal(
    signals: &mut broadcast::Receiver<Signal>,
    wanted: impl Fn(&Signal) -> bool,
    deadline: tokio::time::Instant,
) -> Woken {
    let reread = (tokio::time::Instant::now() + REREAD).min(deadline);
    let at_reread = || {
        if tokio::time::Instant::now() < deadline {
            Woken::Reread
        } else {
            Woken::Deadline
        }
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(reread) => return at_reread(),
            signal = signals.recv() => match signal {
                Ok(s) if wanted(&s) => return Woken::Heard(s),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Woken::Reread,
                Err(broadcast::error::RecvError::Closed) => {
                    tokio::time::sleep_until(reread).await;
                    return at_reread();
                }
            },
        }
    }
}
