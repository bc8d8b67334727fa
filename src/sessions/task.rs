//! One session's task: lease, client, events, commands.
//!
//! `run` restarts the session with exponential backoff when it fails and
//! returns when it is stopped, logged out, gives up pairing, or finds the
//! lease held by another node. While it runs a client it holds the
//! session's lease; the node renews every lease it holds in one statement
//! and stops a task whose lease it lost or cannot renew in time (see
//! `node.rs`), so two processes never drive one WhatsApp session. Every
//! change of state is written to the session's status row, fenced by the
//! lease, for every node to read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wacore::store::traits::DeviceStore;
use wacore::types::events::Event as WaEvent;
use wacore::types::presence::ReceiptType;
use whatsapp_rust::bot::BotHandle;
use whatsapp_rust::client::Client;
use whatsapp_rust::pair_code::PairCodeOptions;

use super::bus::{Bus, Signal as BusSignal};
use super::client::{self, Forward, StateEvents};
use super::inbound::Inbound;
use super::send::{QueueSignal, SendQueue};
use super::stores::ProtocolStores;
use super::transport::Fence;
use super::{Command, Mode, Qr, SessionError, SessionSettings, SessionState, SessionStatus};
use crate::events::Event;
use crate::store::cluster::StatusFields;
use crate::store::messages::StatusChange;
use crate::store::protocol::{SessionId, SessionStore};
use crate::store::{Lease, NodeId, Revocation, Store, now_ms};
use crate::tenants::TenantId;
use crate::types::MessageStatus;

pub(super) struct Ctx {
    pub tenant: TenantId,
    pub mode: Mode,
    /// The main database: messages, events, leases.
    pub store: Store,
    /// Where the tenant's protocol rows live.
    pub protocol: Arc<ProtocolStores>,
    pub node: NodeId,
    /// This process's claim on the node (leases are taken under it).
    pub instance: String,
    /// Wakes this node's placement.
    pub placement: Arc<tokio::sync::Notify>,
    pub settings: SessionSettings,
    pub bus: Bus,
    pub status: watch::Sender<SessionStatus>,
    pub commands: mpsc::Receiver<Command>,
    pub stop: CancellationToken,
    /// The lease while the task holds it: status rows are written under it.
    pub lease: Option<Lease>,
    /// The status last written to the row.
    pub persisted: Option<(SessionState, StatusFields)>,
    /// The switch on the client's connection (see `transport.rs`).
    pub fence: Fence,
}

/// Why a run of the client ended without an error.
enum Ended {
    Stopped,
    LoggedOut(Option<oneshot::Sender<()>>),
    /// Pairing gave up (the QR codes ran out).
    Unpaired,
    /// Placement started it, but no device is linked.
    NotPaired,
    /// Another node holds the lease.
    Elsewhere,
}

/// A run that lasted this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(300);
/// How long the client gets to close cleanly.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// The longest a status write or a lease release may wait for the
/// database: a session must be able to end while the database is gone.
const DB_WAIT: Duration = Duration::from_secs(5);
/// Client events waiting for the task; the client never blocks on them.
const EVENTS: usize = 4096;
/// Signals waiting for the send queue.
const QUEUE_SIGNALS: usize = 1024;

/// Runs the session until it is stopped or ends.
pub(super) async fn run(mut ctx: Ctx) {
    let span = tracing::info_span!("session", tenant_id = %ctx.tenant);
    async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            // What this run's protocol store writes under, until it ends.
            let run = ctx.fence.revocation().child();
            let outcome = run_once(&mut ctx, &run).await;
            let failed = outcome.is_err();
            // Final states are written while the lease is still held; the
            // client's own tasks write nothing more once it is released.
            let again = ctx.after(outcome).await;
            run.revoke();
            ctx.release().await;
            if !again {
                break;
            }
            if failed && started.elapsed() > HEALTHY_RUN {
                backoff = Duration::from_secs(1);
            }
            tokio::select! {
                _ = ctx.stop.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(ctx.settings.max_backoff);
        }
    }
    .instrument(span)
    .await
}

impl Ctx {
    /// Records how a run ended; true if the session should run again.
    async fn after(&mut self, outcome: Result<Ended, SessionError>) -> bool {
        match outcome {
            Ok(Ended::Stopped) => tracing::info!("session stopped"),
            Ok(Ended::Elsewhere) => {
                tracing::info!("another node runs the session");
                // It was placed, so off the placement queue if still there.
                if let Err(e) = self.store.drop_placed(&self.tenant).await {
                    tracing::warn!(error = %e, "cannot update the placement queue");
                }
            }
            Ok(Ended::NotPaired) => self.set_state(SessionState::Unpaired, None).await,
            Ok(Ended::LoggedOut(reply)) => {
                tracing::info!("session logged out; it waits for a new pairing");
                if let Err(e) = self.protocol.forget(&self.tenant).await {
                    tracing::error!(error = %e, "cannot delete the logged-out device");
                }
                self.status.send_modify(|s| {
                    s.jid = None;
                    s.push_name = None;
                    s.qr = None;
                    s.error = Some("logged out".into());
                });
                self.set_state(SessionState::LoggedOut, Some("logged out"))
                    .await;
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            Ok(Ended::Unpaired) => {
                tracing::info!("pairing ended without a scan");
                let why = "no QR code was scanned in time";
                self.status.send_modify(|s| {
                    s.qr = None;
                    s.error = Some(why.into());
                });
                self.set_state(SessionState::Unpaired, Some(why)).await;
            }
            Err(e @ SessionError::NotASandbox) => {
                tracing::error!(error = %e, "session cannot start");
                self.status.send_modify(|s| s.error = Some(e.to_string()));
                let state = self.status.borrow().state;
                self.set_state(state, None).await;
            }
            Err(e) if self.stop.is_cancelled() => {
                tracing::info!(error = %e, "session stopped");
            }
            Err(e) => {
                tracing::warn!(error = %e, "session failed; restarting");
                self.status.send_modify(|s| s.error = Some(e.to_string()));
                self.set_state(SessionState::Disconnected, Some(&e.to_string()))
                    .await;
                return true;
            }
        }
        false
    }

    /// Gives the lease up, if held.
    async fn release(&mut self) {
        if let Some(lease) = self.lease.take()
            && self.store.write_fence().is_open()
            && let Err(e) = tokio::time::timeout(DB_WAIT, self.store.release_session_lease(&lease))
                .await
                .unwrap_or_else(|_| Err(timed_out()))
        {
            tracing::warn!(error = %e, "cannot release the session lease; it will expire");
        }
    }
}

async fn run_once(ctx: &mut Ctx, run: &Revocation) -> Result<Ended, SessionError> {
    let session = SessionId::from(&ctx.tenant);
    match ctx
        .store
        .acquire_session_lease(&session, &ctx.node, &ctx.instance)
        .await?
    {
        Some(lease) => {
            ctx.lease = Some(lease);
            // Another node may have written the row since.
            ctx.persisted = None;
        }
        None => return Ok(Ended::Elsewhere),
    }
    match ctx.protocol.of(&ctx.tenant).await {
        Ok(protocol) => {
            let store = protocol.session_store(session).revocable(run.clone());
            with_client(ctx, &store).await
        }
        Err(e) => Err(e.into()),
    }
}

/// What an event asks of the loop.
enum Flow {
    Go,
    End(Ended),
}

async fn with_client(ctx: &mut Ctx, store: &SessionStore) -> Result<Ended, SessionError> {
    let device = store
        .load()
        .await
        .map_err(|e| SessionError::Client(e.to_string()))?;
    let paired = device.as_ref().and_then(|d| d.pn.as_ref()).is_some();
    if !paired && ctx.mode == Mode::Resume {
        return Ok(Ended::NotPaired);
    }
    ctx.status.send_modify(|s| {
        s.state = if paired {
            SessionState::Connecting
        } else {
            SessionState::Pairing
        };
        s.jid = device
            .as_ref()
            .and_then(|d| d.pn.as_ref())
            .map(|j| j.to_string());
        s.qr = None;
        s.error = None;
        s.loaded = true;
    });
    let state = ctx.status.borrow().state;
    ctx.set_state(state, None).await;

    let (events_tx, mut events) = mpsc::channel(EVENTS);
    let states = StateEvents::default();
    let inbound = Inbound {
        store: ctx.store.clone(),
        tenant: ctx.tenant.clone(),
        media: ctx.settings.media.clone(),
    };
    let handle = client::start(
        &ctx.settings,
        store.clone(),
        inbound,
        Forward {
            acks: events_tx,
            states: states.clone(),
        },
        ctx.fence.clone(),
    )
    .await?;
    let client = handle.client();

    let queue_stop = ctx.stop.child_token();
    let (signals, signals_rx) = mpsc::channel(QUEUE_SIGNALS);
    let mut queue = tokio::spawn(
        SendQueue {
            tenant: ctx.tenant.clone(),
            store: ctx.store.clone(),
            bus: ctx.bus.clone(),
            client: client.clone(),
            status: ctx.status.subscribe(),
            signals: signals_rx,
            pace: ctx.settings.pace,
            media: ctx.settings.media.clone(),
            stop: queue_stop.clone(),
        }
        .run()
        .in_current_span(),
    );

    let outcome = loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break Ok(Ended::Stopped),
            // State events: never shed, taken in the order they came.
            taken = states.next() => {
                let mut ended = None;
                for event in taken {
                    if let Flow::End(end) = ctx.on_event(&client, &event).await {
                        ended = Some(end);
                        break;
                    }
                }
                if let Some(ended) = ended {
                    break Ok(ended);
                }
            }
            event = events.recv() => {
                let Some(event) = event else {
                    break Err(SessionError::Client("the client stopped".into()));
                };
                if let WaEvent::ServerAck(ack) = event.as_ref()
                    && ack.class.as_deref() == Some("message")
                {
                    let acked = QueueSignal::Acked {
                        id: ack.id.clone(),
                        error: ack.error.clone(),
                    };
                    if signals.send(acked).await.is_err() {
                        break Err(SessionError::Client("the send queue stopped".into()));
                    }
                }
                if let Flow::End(ended) = ctx.on_event(&client, &event).await {
                    break Ok(ended);
                }
            }
            command = ctx.commands.recv() => match command {
                None => break Ok(Ended::Stopped),
                Some(command @ (Command::Wake | Command::Send { .. } | Command::Watch(_))) => {
                    let signal = match command {
                        Command::Send { row, reply } => QueueSignal::Accepted { row, reply },
                        Command::Watch(message_id) => QueueSignal::Watch(message_id),
                        _ => QueueSignal::Wake,
                    };
                    if signals.send(signal).await.is_err() {
                        break Err(SessionError::Client("the send queue stopped".into()));
                    }
                }
                Some(Command::PairCode { phone, reply }) => pair_code(&client, phone, reply),
                Some(Command::Logout { reply }) => {
                    client.logout().await;
                    break Ok(Ended::LoggedOut(Some(reply)));
                }
            },
        }
    };
    // The client first: the queue may be waiting on an unreachable database.
    queue_stop.cancel();
    close(handle, store, !matches!(outcome, Ok(Ended::LoggedOut(_)))).await;
    if tokio::time::timeout(CLOSE_WAIT, &mut queue).await.is_err() {
        tracing::warn!("the send queue did not stop within {CLOSE_WAIT:?}");
        queue.abort();
    }
    outcome
}

/// Stops the client, then saves its device once more: whatsapp-rust's own
/// last save can be cut short by the shutdown. Each step is bounded: an
/// unreachable database must not keep the client alive.
async fn close(mut handle: BotHandle, store: &SessionStore, save: bool) {
    let client = handle.client();
    let disconnected = tokio::time::timeout(CLOSE_WAIT, client.disconnect()).await;
    if disconnected.is_err() || tokio::time::timeout(CLOSE_WAIT, &mut handle).await.is_err() {
        tracing::warn!("the client did not close within {CLOSE_WAIT:?}; aborted");
        handle.abort();
    }
    if save {
        let device = client.persistence_manager().get_device_snapshot();
        if device.pn.is_some() {
            match tokio::time::timeout(CLOSE_WAIT, store.save(&device)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot save the device at shutdown"),
                Err(_) => tracing::warn!("saving the device at shutdown timed out"),
            }
        }
    }
}

/// Asks for a pair code off the loop: it waits for the server's answer.
fn pair_code(
    client: &Arc<Client>,
    phone: String,
    reply: oneshot::Sender<Result<String, SessionError>>,
) {
    let client = client.clone();
    tokio::spawn(
        async move {
            let options = PairCodeOptions {
                phone_number: phone,
                ..Default::default()
            };
            let code = client
                .pair_with_code(options)
                .await
                .map_err(|e| SessionError::PairCode(e.to_string()));
            let _ = reply.send(code);
        }
        .in_current_span(),
    );
}

impl Ctx {
    async fn on_event(&mut self, client: &Arc<Client>, event: &WaEvent) -> Flow {
        match event {
            WaEvent::PairingQrCode(qr) => {
                let expires_at_ms = now_ms() + qr.timeout.as_millis() as i64;
                self.status.send_modify(|s| {
                    s.qr = Some(Qr {
                        code: qr.code.clone(),
                        expires_at_ms,
                    });
                });
                self.set_state(SessionState::Pairing, None).await;
            }
            WaEvent::PairSuccess(paired) => {
                tracing::info!(jid = %paired.id, "paired");
                self.status.send_modify(|s| {
                    s.jid = Some(paired.id.to_string());
                    s.qr = None;
                });
                self.set_state(SessionState::Connecting, None).await;
                // One more linked session to spread: this node looks
                // whether it now holds more than its share (and hands over,
                // which tells the others), not every node at once.
                self.placement.notify_one();
            }
            WaEvent::Connected(_) => {
                let device = client.persistence_manager().get_device_snapshot();
                self.status.send_modify(|s| {
                    s.jid = device.pn.as_ref().map(|j| j.to_string());
                    s.push_name = Some(device.push_name.clone()).filter(|n| !n.is_empty());
                    s.qr = None;
                    s.error = None;
                });
                self.set_state(SessionState::Connected, None).await;
            }
            WaEvent::Disconnected(_) => {
                self.set_state(SessionState::Disconnected, Some("connection lost"))
                    .await;
            }
            WaEvent::LoggedOut(_) => return Flow::End(Ended::LoggedOut(None)),
            WaEvent::PairingQrCodesExhausted(_) => return Flow::End(Ended::Unpaired),
            WaEvent::Receipt(receipt) => self.on_receipt(receipt).await,
            _ => {}
        }
        Flow::Go
    }

    async fn on_receipt(&self, receipt: &wacore::types::events::Receipt) {
        let status = match receipt.r#type {
            ReceiptType::Delivered => MessageStatus::Delivered,
            ReceiptType::Read => MessageStatus::Read,
            _ => return,
        };
        // All of a receipt's messages in one batch.
        let changes = receipt
            .message_ids
            .iter()
            .map(|id| StatusChange {
                tenant: self.tenant.clone(),
                message_id: id.to_string(),
                status,
                error: None,
            })
            .collect();
        if let Err(e) = self.store.advance_outbound_many(changes).await {
            tracing::warn!(error = %e, messages = receipt.message_ids.len(), "cannot record a receipt");
        }
    }

    /// Publishes a new state (with the status fields as they are now) on
    /// this node and in the status row, and records a change of state as
    /// an event.
    async fn set_state(&mut self, state: SessionState, reason: Option<&str>) {
        let mut previous = None;
        self.status.send_if_modified(|s| {
            if s.state == state {
                return false;
            }
            previous = Some(s.state);
            s.state = state;
            true
        });
        self.persist().await;
        let Some(previous) = previous else { return };
        tracing::info!(
            state = state.as_str(),
            previous = previous.as_str(),
            "session state"
        );
        let event = Event::SessionStatus {
            state,
            previous_state: Some(previous),
            jid: self.status.borrow().jid.clone(),
            reason: reason.map(str::to_owned),
        };
        if !self.store.write_fence().is_open() {
            // Fenced: the session's next owner reports its state.
            return;
        }
        let recorded = tokio::time::timeout(DB_WAIT, self.store.record_event(&self.tenant, &event));
        if let Err(e) = recorded.await.unwrap_or_else(|_| Err(timed_out())) {
            tracing::warn!(error = %e, "cannot record the session's state change");
        }
    }

    /// Writes the status row, under the lease, if anything changed; then
    /// tells the other nodes.
    async fn persist(&mut self) {
        let Some(lease) = &self.lease else { return };
        if !self.store.write_fence().is_open() {
            return; // fenced: nothing may be written (see `fence.rs`)
        }
        let now = {
            let s = self.status.borrow();
            let fields = StatusFields {
                jid: s.jid.clone(),
                push_name: s.push_name.clone(),
                error: s.error.clone(),
                qr: s.qr.as_ref().map(|q| q.code.clone()),
                qr_expires_at: s.qr.as_ref().map(|q| q.expires_at_ms),
            };
            (s.state, fields)
        };
        if self.persisted.as_ref() == Some(&now) {
            return;
        }
        let write = self
            .store
            .write_session_status(&self.tenant, lease, now.0, &now.1);
        match tokio::time::timeout(DB_WAIT, write)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
        {
            Ok(true) => {
                // Only requests waiting for a QR code listen for this: a
                // mass reconnect sends no signal per session.
                let pairing = |state: SessionState| state == SessionState::Pairing;
                let waited_for =
                    pairing(now.0) || self.persisted.as_ref().is_some_and(|p| pairing(p.0));
                self.persisted = Some(now);
                if waited_for {
                    let tenant = self.tenant.as_str().to_owned();
                    self.bus.publish(BusSignal::Status { tenant }).await;
                }
            }
            Ok(false) => tracing::warn!("the session's lease is gone; its status is not written"),
            Err(e) => tracing::warn!(error = %e, "cannot write the session's status"),
        }
    }
}

fn timed_out() -> crate::store::StoreError {
    crate::store::StoreError::Sql(sqlx::Error::PoolTimedOut)
}
