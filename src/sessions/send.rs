//! The send queue of one session: outbound rows in the database, drained in
//! order while the session is connected, at the number's pace.
//!
//! Each row already carries its WhatsApp message id (fixed when the API
//! accepted it), so a row sent just before a crash and sent again after it
//! reaches the recipient with the same id, and is recognised as a repeat.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use wacore_binary::jid::Jid;
use waproto::whatsapp as wa;
use whatsapp_rust::client::Client;
use whatsapp_rust::send::SendOptions;

use super::pace::{Bucket, SendPace};
use super::{SessionError, SessionState, SessionStatus};
use crate::store::Store;
use crate::store::messages::OutboundMessage;
use crate::tenants::TenantId;

/// Someone waiting for one send's outcome.
pub(super) struct Waiter {
    pub message_id: String,
    pub reply: oneshot::Sender<Result<(), SessionError>>,
}

pub(super) struct SendQueue {
    pub tenant: TenantId,
    pub store: Store,
    pub client: Arc<Client>,
    pub status: watch::Receiver<SessionStatus>,
    pub wake: mpsc::UnboundedReceiver<Option<Waiter>>,
    pub pace: SendPace,
    pub stop: CancellationToken,
}

/// Rows read per round; the pace, not this, limits the rate.
const BATCH: i64 = 50;
/// How often the queue is looked at without a wake-up (sends accepted by
/// another node, or left by a crash).
const POLL: Duration = Duration::from_secs(2);

impl SendQueue {
    pub async fn run(mut self) {
        let mut bucket = Bucket::new(self.pace, tokio::time::Instant::now());
        let mut waiters: HashMap<String, oneshot::Sender<Result<(), SessionError>>> =
            HashMap::new();
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if !self.connected() {
                fail_all(&mut waiters, || SessionError::NotConnected);
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    changed = self.status.changed() => if changed.is_err() { return },
                    woken = self.wake.recv() => match woken {
                        None => return,
                        Some(w) => self.register(&mut waiters, w).await,
                    },
                }
                continue;
            }
            let rows = match self.store.queued_outbound(&self.tenant, BATCH).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the send queue");
                    Vec::new()
                }
            };
            if rows.is_empty() {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = self.status.changed() => {}
                    woken = self.wake.recv() => match woken {
                        None => return,
                        Some(w) => self.register(&mut waiters, w).await,
                    },
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            for row in rows {
                while let Ok(w) = self.wake.try_recv() {
                    self.register(&mut waiters, w).await;
                }
                let wait = bucket.take(tokio::time::Instant::now());
                if !wait.is_zero() {
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    bucket.take(tokio::time::Instant::now());
                }
                if !self.connected() {
                    break;
                }
                let outcome = self.send_one(&row).await;
                let failed = outcome.is_err();
                if let Some(reply) = waiters.remove(&row.message_id) {
                    let _ = reply.send(outcome);
                }
                if failed {
                    // Left queued: tried again after a pause.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }

    fn connected(&self) -> bool {
        self.status.borrow().state == SessionState::Connected
    }

    /// Keeps a waiter, unless its row was settled already.
    async fn register(
        &self,
        waiters: &mut HashMap<String, oneshot::Sender<Result<(), SessionError>>>,
        waiter: Option<Waiter>,
    ) {
        let Some(waiter) = waiter else { return };
        match self
            .store
            .get_message(&self.tenant, &waiter.message_id)
            .await
        {
            Ok(Some(row)) if row.status == "queued" => {
                waiters.insert(waiter.message_id, waiter.reply);
            }
            Ok(Some(row)) if row.status == "failed" => {
                let error = row.error.unwrap_or_default();
                let _ = waiter.reply.send(Err(SessionError::Client(error)));
            }
            Ok(_) => {
                let _ = waiter.reply.send(Ok(()));
            }
            Err(e) => {
                let _ = waiter.reply.send(Err(e.into()));
            }
        }
    }

    /// Sends one row and records the outcome. A recipient that cannot be a
    /// JID fails the row for good; anything else leaves it queued.
    async fn send_one(&self, row: &OutboundMessage) -> Result<(), SessionError> {
        let to = match Jid::from_str(&row.chat_id) {
            Ok(jid) => jid,
            Err(e) => {
                let error = format!("bad recipient {}: {e}", row.chat_id);
                self.store
                    .advance_outbound(&self.tenant, &row.message_id, "failed", Some(&error))
                    .await?;
                return Err(SessionError::Client(error));
            }
        };
        let message = wa::Message {
            conversation: row.text.clone(),
            ..Default::default()
        };
        let options = SendOptions::default().with_message_id(row.message_id.clone());
        match self
            .client
            .send_message_with_options(to, message, options)
            .await
        {
            Ok(_) => {
                self.store
                    .advance_outbound(&self.tenant, &row.message_id, "sent", None)
                    .await?;
                tracing::debug!(message_id = %row.message_id, "sent");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(message_id = %row.message_id, error = %e, "send failed; will retry");
                Err(SessionError::Client(e.to_string()))
            }
        }
    }
}

fn fail_all(
    waiters: &mut HashMap<String, oneshot::Sender<Result<(), SessionError>>>,
    error: impl Fn() -> SessionError,
) {
    for (_, reply) in waiters.drain() {
        let _ = reply.send(Err(error()));
    }
}
