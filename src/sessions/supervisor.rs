//! The supervisor: this process's session tasks, started, watched and
//! stopped here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    Bus, Command, Mode, SessionError, SessionSettings, SessionState, SessionStatus, SessionView,
    node, stores, task, transport,
};
use crate::store::cluster::CommandKind;
use crate::store::{NodeId, Store};
use crate::tenants::TenantId;

pub(super) struct Handle {
    pub(super) status: watch::Receiver<SessionStatus>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) task: JoinHandle<()>,
    pub(super) stop: CancellationToken,
    /// When the task started.
    pub(super) started: tokio::time::Instant,
    /// Why it was started.
    pub(super) mode: Mode,
}

impl Handle {
    pub(super) fn running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// Owns every session task of this process.
#[derive(Clone)]
pub struct Supervisor {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("node", &self.inner.node)
            .field("sessions", &self.sessions().len())
            .finish()
    }
}

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) protocol: Arc<stores::ProtocolStores>,
    pub(super) node: NodeId,
    pub(super) settings: SessionSettings,
    pub(super) shutdown: CancellationToken,
    pub(super) bus: Bus,
    pub(super) sessions: Mutex<HashMap<TenantId, Handle>>,
    /// The fence of every session task still running here, by task number:
    /// those handing over too, which `sessions` no longer lists.
    pub(super) live: Mutex<HashMap<u64, transport::Fence>>,
    /// How many of them; 0 once every session here has ended.
    pub(super) live_count: watch::Sender<usize>,
    pub(super) next_task: std::sync::atomic::AtomicU64,
    /// Wakes placement (a session here ended, so it may take another).
    pub(super) placement: Arc<Notify>,
}

/// How long `qr` waits for the client's first code.
pub(super) const QR_WAIT: Duration = Duration::from_secs(20);
/// Commands queued for one session task.
pub(super) const COMMANDS: usize = 64;
/// How often a waiter re-reads rows when no signal came (signals can be
/// lost; rows cannot).
pub(super) const REREAD: Duration = Duration::from_secs(1);

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
                mode,
            },
        );
        status
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
    pub(super) fn set_live(&self, number: u64, fence: Option<transport::Fence>) {
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
    pub(super) fn live_fences(&self) -> Vec<transport::Fence> {
        let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        live.values().cloned().collect()
    }

    /// Returns once no session task runs here.
    pub(super) async fn all_sessions_ended(&self) {
        let mut count = self.inner.live_count.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// Whether every session task here ended within `limit`.
    pub(super) async fn wait_sessions_ended(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.all_sessions_ended())
            .await
            .is_ok()
    }

    /// Another node holds the session's live lease.
    pub(super) fn runs_elsewhere(&self, tenant: &TenantId, view: &SessionView) -> bool {
        view.node
            .as_deref()
            .is_some_and(|n| n != self.inner.node.as_str())
            && self.local_commands(tenant).is_none()
    }

    /// The command channel of the session's task here, if one runs.
    pub(super) fn local_commands(&self, tenant: &TenantId) -> Option<mpsc::Sender<Command>> {
        match self.sessions().get(tenant) {
            Some(handle) if handle.running() => Some(handle.commands.clone()),
            _ => None,
        }
    }

    pub(super) fn take_task(&self, tenant: &TenantId) -> Option<JoinHandle<()>> {
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

    pub(super) fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Handle>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
