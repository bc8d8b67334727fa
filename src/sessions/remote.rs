//! Calls that the node running the session answers, wherever it is: here
//! through the task's command channel, elsewhere through a row and a
//! signal, waited for a bounded time and read back from rows.

use std::time::Duration;

use tokio::sync::{broadcast, oneshot};

use super::supervisor::{QR_WAIT, REREAD};
use super::{Command, Mode, Qr, SendOutcome, SessionError, SessionState, Signal, Supervisor};
use crate::store::SessionId;
use crate::store::cluster::{CommandKind, CommandStatus};
use crate::store::messages::OutboundMessage;
use crate::tenants::TenantId;
use crate::types::MessageStatus;

/// How long a send that nobody waits for waits to be handed to its queue.
const HAND_OVER_WAIT: Duration = Duration::from_secs(5);

impl Supervisor {
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
    pub(super) async fn logout_here(&self, tenant: &TenantId) -> Result<bool, SessionError> {
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
    /// it back. `Timeout` while it is still queued. A session running here
    /// is handed the row itself; elsewhere, its node reads it.
    pub(crate) async fn submit(
        &self,
        tenant: &TenantId,
        row: &OutboundMessage,
        wait: Option<Duration>,
    ) -> Result<SendOutcome, SessionError> {
        let message_id = row.message_id.as_str();
        if let Some(commands) = self.local_commands(tenant) {
            let Some(wait) = wait else {
                let send = Command::Send {
                    row: row.clone(),
                    reply: None,
                };
                // Waits for room while the task is behind. A hand-over that
                // cannot be made in time leaves the row to the sweep.
                let handed = tokio::time::timeout(HAND_OVER_WAIT, commands.send(send)).await;
                if !matches!(handed, Ok(Ok(()))) {
                    tracing::warn!(
                        message_id,
                        "the session is behind; its sweep will send this"
                    );
                }
                return Ok(SendOutcome::Settled(None));
            };
            let asked = async {
                let (reply, outcome) = oneshot::channel();
                let send = Command::Send {
                    row: row.clone(),
                    reply: Some(reply),
                };
                commands
                    .send(send)
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

    /// Waits for the owner's QR code to show in the status row; `None`
    /// once no node runs the session any more.
    pub(super) async fn remote_qr(
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
    pub(super) async fn remote_command(
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
