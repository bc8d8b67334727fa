//! One session's task: lease, client, events, commands.
//!
//! `run` restarts the session with exponential backoff when it fails and
//! returns when it is stopped, logged out, or gives up pairing. While it
//! runs a client it holds the session's lease and renews it; if the lease
//! is lost (another node took it over) the client is stopped at once, so
//! two processes never drive one WhatsApp session.

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

use super::client::{self, Forward};
use super::inbound::Inbound;
use super::send::{SendQueue, Signal, Waiter};
use super::stores::ProtocolStores;
use super::{Command, Qr, SessionError, SessionSettings, SessionState, SessionStatus};
use crate::events::Event;
use crate::store::Store;
use crate::store::protocol::{SessionId, SessionStore};
use crate::store::{Lease, NodeId};
use crate::tenants::TenantId;

pub(super) struct Ctx {
    pub tenant: TenantId,
    /// The main database: messages, events, leases.
    pub store: Store,
    /// Where the tenant's protocol rows live.
    pub protocol: Arc<ProtocolStores>,
    pub node: NodeId,
    pub settings: SessionSettings,
    pub status: watch::Sender<SessionStatus>,
    pub commands: mpsc::Receiver<Command>,
    pub stop: CancellationToken,
}

/// Why a run of the client ended without an error.
enum Ended {
    Stopped,
    LoggedOut(Option<oneshot::Sender<()>>),
    /// Pairing gave up (the QR codes ran out).
    Unpaired,
}

/// A run that lasted this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(300);
/// How long the client gets to close cleanly.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Runs the session until it is stopped or ends; returns its last status.
pub(super) async fn run(mut ctx: Ctx) -> SessionStatus {
    let span = tracing::info_span!("session", tenant_id = %ctx.tenant);
    async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            match run_once(&mut ctx).await {
                Ok(Ended::Stopped) => {
                    tracing::info!("session stopped");
                    break;
                }
                Ok(Ended::LoggedOut(reply)) => {
                    tracing::info!("session logged out; it waits for a new pairing");
                    if let Err(e) = ctx.protocol.forget(&ctx.tenant).await {
                        tracing::error!(error = %e, "cannot delete the logged-out device");
                    }
                    ctx.set_state(SessionState::LoggedOut, Some("logged out"))
                        .await;
                    if let Some(reply) = reply {
                        let _ = reply.send(());
                    }
                    break;
                }
                Ok(Ended::Unpaired) => {
                    tracing::info!("pairing ended without a scan");
                    ctx.set_state(
                        SessionState::Unpaired,
                        Some("no QR code was scanned in time"),
                    )
                    .await;
                    break;
                }
                Err(e @ SessionError::NotASandbox) => {
                    tracing::error!(error = %e, "session cannot start");
                    ctx.status.send_modify(|s| s.error = Some(e.to_string()));
                    break;
                }
                Err(e) => {
                    if started.elapsed() > HEALTHY_RUN {
                        backoff = Duration::from_secs(1);
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "session failed; restarting");
                    ctx.status.send_modify(|s| s.error = Some(e.to_string()));
                    ctx.set_state(SessionState::Disconnected, Some(&e.to_string()))
                        .await;
                    tokio::select! {
                        _ = ctx.stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ctx.settings.max_backoff);
                }
            }
        }
        ctx.status.borrow().clone()
    }
    .instrument(span)
    .await
}

async fn run_once(ctx: &mut Ctx) -> Result<Ended, SessionError> {
    let session = SessionId::from(&ctx.tenant);
    let Some(mut lease) = acquire(ctx, &session).await else {
        return Ok(Ended::Stopped);
    };
    let outcome = match ctx.protocol.of(&ctx.tenant).await {
        Ok(protocol) => {
            let store = protocol.session_store(session);
            with_client(ctx, &store, &mut lease).await
        }
        Err(e) => Err(e.into()),
    };
    if let Err(e) = ctx.store.release_session_lease(&lease).await {
        tracing::warn!(error = %e, "cannot release the session lease; it will expire");
    }
    outcome
}

/// Waits for the session's lease; `None` when stopped first.
async fn acquire(ctx: &Ctx, session: &SessionId) -> Option<Lease> {
    let ttl = ctx.settings.lease_ttl;
    loop {
        match ctx
            .store
            .acquire_session_lease(session, &ctx.node, ttl)
            .await
        {
            Ok(Some(lease)) => return Some(lease),
            Ok(None) => ctx.status.send_modify(|s| {
                s.error = Some("another node runs this session".into());
            }),
            Err(e) => tracing::warn!(error = %e, "cannot take the session lease"),
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return None,
            _ = tokio::time::sleep(ttl / 2) => {}
        }
    }
}

/// What an event asks of the loop.
enum Flow {
    Go,
    End(Ended),
}

async fn with_client(
    ctx: &mut Ctx,
    store: &SessionStore,
    lease: &mut Lease,
) -> Result<Ended, SessionError> {
    let device = store
        .load()
        .await
        .map_err(|e| SessionError::Client(e.to_string()))?;
    let paired = device.as_ref().and_then(|d| d.pn.as_ref()).is_some();
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

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let inbound = Inbound {
        store: ctx.store.clone(),
        tenant: ctx.tenant.clone(),
    };
    let handle = client::start(&ctx.settings, store.clone(), inbound, Forward(events_tx)).await?;
    let client = handle.client();

    let queue_stop = ctx.stop.child_token();
    let (signals, signals_rx) = mpsc::unbounded_channel();
    let queue = tokio::spawn(
        SendQueue {
            tenant: ctx.tenant.clone(),
            store: ctx.store.clone(),
            client: client.clone(),
            status: ctx.status.subscribe(),
            signals: signals_rx,
            pace: ctx.settings.pace,
            stop: queue_stop.clone(),
        }
        .run()
        .in_current_span(),
    );

    let mut renew = tokio::time::interval(ctx.settings.lease_ttl / 3);
    renew.tick().await;
    let outcome = loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break Ok(Ended::Stopped),
            event = events.recv() => {
                let Some(event) = event else {
                    break Err(SessionError::Client("the client stopped".into()));
                };
                if let WaEvent::ServerAck(ack) = event.as_ref()
                    && ack.class.as_deref() == Some("message")
                {
                    let _ = signals.send(Signal::Acked {
                        id: ack.id.clone(),
                        error: ack.error.clone(),
                    });
                }
                if let Flow::End(ended) = ctx.on_event(&client, &event).await {
                    break Ok(ended);
                }
            }
            command = ctx.commands.recv() => match command {
                None => break Ok(Ended::Stopped),
                Some(Command::Send { message_id, reply }) => {
                    let waiter = reply.map(|reply| Waiter { message_id, reply });
                    let _ = signals.send(Signal::Wake(waiter));
                }
                Some(Command::PairCode { phone, reply }) => pair_code(&client, phone, reply),
                Some(Command::Logout { reply }) => {
                    client.logout().await;
                    break Ok(Ended::LoggedOut(Some(reply)));
                }
            },
            _ = renew.tick() => {
                if !renew_lease(ctx, lease).await {
                    break Err(SessionError::Client("lost the session lease to another node".into()));
                }
            }
        }
    };
    queue_stop.cancel();
    let _ = queue.await;
    close(handle, store, !matches!(outcome, Ok(Ended::LoggedOut(_)))).await;
    outcome
}

/// Stops the client, then saves its device once more: whatsapp-rust's own
/// last save can be cut short by the shutdown.
async fn close(handle: BotHandle, store: &SessionStore, save: bool) {
    let client = handle.client();
    if tokio::time::timeout(CLOSE_WAIT, handle.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the client did not close within {CLOSE_WAIT:?}");
    }
    if save {
        let device = client.persistence_manager().get_device_snapshot();
        if device.pn.is_some()
            && let Err(e) = store.save(&device).await
        {
            tracing::warn!(error = %e, "cannot save the device at shutdown");
        }
    }
}

async fn renew_lease(ctx: &Ctx, lease: &mut Lease) -> bool {
    match ctx
        .store
        .renew_session_lease(lease, ctx.settings.lease_ttl)
        .await
    {
        Ok(renewed) => renewed,
        Err(e) => {
            tracing::warn!(error = %e, "cannot renew the session lease");
            Instant::now() < lease.valid_until()
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
                let expires_at = Instant::now() + qr.timeout;
                self.status.send_modify(|s| {
                    s.state = SessionState::Pairing;
                    s.qr = Some(Qr {
                        code: qr.code.clone(),
                        expires_at,
                    });
                });
            }
            WaEvent::PairSuccess(paired) => {
                tracing::info!(jid = %paired.id, "paired");
                self.status.send_modify(|s| {
                    s.jid = Some(paired.id.to_string());
                    s.qr = None;
                });
                self.set_state(SessionState::Connecting, None).await;
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
            ReceiptType::Delivered => "delivered",
            ReceiptType::Read => "read",
            _ => return,
        };
        for id in &receipt.message_ids {
            if let Err(e) = self
                .store
                .advance_outbound(&self.tenant, id.as_str(), status, None)
                .await
            {
                tracing::warn!(message_id = %id, error = %e, "cannot record a receipt");
            }
        }
    }

    /// Publishes a new state and, when it changed, records it as an event.
    async fn set_state(&self, state: SessionState, reason: Option<&str>) {
        let mut previous = None;
        self.status.send_if_modified(|s| {
            if s.state == state {
                return false;
            }
            previous = Some(s.state);
            s.state = state;
            true
        });
        let Some(previous) = previous else { return };
        tracing::info!(
            state = state.as_str(),
            previous = previous.as_str(),
            "session state"
        );
        let event = Event::SessionStatus {
            state: state.as_str().to_owned(),
            previous_state: Some(previous.as_str().to_owned()),
            jid: self.status.borrow().jid.clone(),
            reason: reason.map(str::to_owned),
        };
        if let Err(e) = self.store.record_event(&self.tenant, &event).await {
            tracing::warn!(error = %e, "cannot record the session's state change");
        }
    }
}
