//! The send queue of one session: outbound rows in the database, drained in
//! order while the session is connected, at the number's pace.
//!
//! A row is `sent` only when WhatsApp's server acknowledges it: a message
//! the client wrote to a socket that died (or a process killed) before the
//! server took it stays `queued` and goes again. Each row carries its
//! WhatsApp message id from the moment the API accepted it, so a resend
//! reaches the recipient with the same id and is recognised as a repeat.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wacore_binary::jid::Jid;
use waproto::whatsapp as wa;
use whatsapp_rust::client::Client;
use whatsapp_rust::send::SendOptions;

use super::SendPace;
use super::bus::{Bus, Signal};
use super::media::MediaSendError;
use super::pace::Bucket;
use super::{SendOutcome, SessionError, SessionState, SessionStatus};
use crate::media::MediaKind;
use crate::store::messages::{OutboundMessage, StatusChange};
use crate::store::{Store, now_ms};
use crate::tenants::TenantId;
use crate::types::MessageStatus;

type Reply = oneshot::Sender<Result<SendOutcome, SessionError>>;

/// What the session task tells its queue.
pub(super) enum QueueSignal {
    /// Rows may be waiting in the database.
    Wake,
    /// A send accepted on this node: its row as written, and whoever waits
    /// for its outcome.
    Accepted {
        row: OutboundMessage,
        reply: Option<Reply>,
    },
    /// A node waits for this send's outcome: announce it when settled.
    Watch(String),
    /// The server's answer to a sent message: `error` is its nack code.
    Acked { id: String, error: Option<String> },
}

pub(super) struct SendQueue {
    pub tenant: TenantId,
    pub store: Store,
    pub bus: Bus,
    pub client: Arc<Client>,
    pub status: watch::Receiver<SessionStatus>,
    pub signals: mpsc::Receiver<QueueSignal>,
    pub pace: SendPace,
    pub media: super::MediaWork,
    pub stop: CancellationToken,
}

/// Rows read per round; the pace, not this, limits the rate.
const BATCH: i64 = 50;
/// A sent message the server has not acknowledged by then goes again.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// The queue's memory between rounds.
#[derive(Default)]
struct Pending {
    waiters: HashMap<String, Reply>,
    /// Written to the server, not yet acknowledged: since when.
    in_flight: HashMap<String, Instant>,
    /// Sends another node waits for: their outcome is announced.
    watched: HashSet<String>,
    /// Rows handed over as they were accepted here, not yet sent: the
    /// next round sends them without reading the database.
    fresh: Vec<OutboundMessage>,
    /// The sends settled lately and their status, so that a row handed
    /// over after the queue already read, sent and settled it does not go
    /// twice.
    settled: Settled,
    /// Media sends written to the server whose file is kept until their
    /// ack: the ack releases it.
    media_sent: HashSet<String>,
}

/// The last [`SETTLED`] sends settled, by WhatsApp id.
struct Settled(quick_cache::unsync::Cache<String, MessageStatus>);

const SETTLED: usize = 1024;

impl Default for Settled {
    fn default() -> Self {
        Settled(quick_cache::unsync::Cache::new(SETTLED))
    }
}

impl Settled {
    fn get(&self, id: &str) -> Option<MessageStatus> {
        self.0.peek(id).copied()
    }
}

/// Rows handed over and waiting at most; beyond that the queue reads the
/// database (which holds them all).
const FRESH: usize = 256;

/// Acks recorded in one batch at most.
const ACKS_AT_ONCE: usize = 256;

/// Sends watched at once; beyond that a waiter reads the row instead.
const WATCHED: usize = 4096;

/// Media sends awaiting their ack to release their file, at most; a file
/// beyond that is kept until retention deletes it.
const MEDIA_SENT: usize = 4096;

impl SendQueue {
    pub async fn run(mut self) {
        let mut bucket = Bucket::new(self.pace, Instant::now());
        let mut pending = Pending::default();
        // The queue is read only when it may hold rows not yet read: at the
        // start, when woken by an accept, after a reconnect, when a send
        // must go again, and while a read came back full.
        let mut stale = true;
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if !self.connected() {
                // Unacknowledged sends go again after the reconnect.
                pending.in_flight.clear();
                pending.fresh.clear();
                fail_all(&mut pending.waiters);
                stale = true;
                if self.idle(&mut pending, None).await.is_none() {
                    return;
                }
                continue;
            }
            let before = pending.in_flight.len();
            pending
                .in_flight
                .retain(|_, since| since.elapsed() < ACK_WAIT);
            stale |= pending.in_flight.len() < before;
            if !stale && pending.fresh.is_empty() {
                // An idle queue sleeps until woken: by a send accepted here
                // or on another node, by a reconnect, or by the node's
                // sweep for a lost wake-up. Only a send awaiting its ack
                // sets a timer, to go again if none comes.
                let resend = pending
                    .in_flight
                    .values()
                    .min()
                    .map(|sent| (*sent + ACK_WAIT).saturating_duration_since(Instant::now()));
                match self.idle(&mut pending, resend).await {
                    None => return,
                    Some(woken) => stale = woken,
                }
                continue;
            }
            let rows = if stale {
                // Whatever was handed over so far is committed, so this
                // read returns it too (or, when full, a later one does).
                pending.fresh.clear();
                let rows = match self.store.queued_outbound(&self.tenant, BATCH).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the send queue");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                stale = rows.len() as i64 == BATCH;
                self.settle_strays(&mut pending, &rows).await;
                rows
            } else {
                std::mem::take(&mut pending.fresh)
            };
            let rows: Vec<OutboundMessage> = rows
                .into_iter()
                .filter(|r| {
                    !pending.in_flight.contains_key(&r.message_id)
                        && pending.settled.get(&r.message_id).is_none()
                })
                .collect();
            for (i, row) in rows.iter().enumerate() {
                while let Ok(signal) = self.signals.try_recv() {
                    stale |= self.handle(&mut pending, signal).await;
                }
                let wait = bucket.take(Instant::now());
                if !wait.is_zero() {
                    let until = Instant::now() + wait;
                    // Nobody waits on the pace: whoever waits for this row
                    // or a later one hears when it should go.
                    let mut held = Held::new(&rows[i..], wait, self.pace);
                    self.hold(&mut pending, &mut held).await;
                    // Acks and waiters keep being handled meanwhile.
                    loop {
                        tokio::select! {
                            _ = self.stop.cancelled() => return,
                            _ = tokio::time::sleep_until(until) => break,
                            signal = self.signals.recv() => match signal {
                                None => return,
                                Some(signal) => {
                                    stale |= self.handle(&mut pending, signal).await;
                                    self.hold(&mut pending, &mut held).await;
                                }
                            },
                        }
                    }
                    bucket.take(Instant::now());
                }
                if !self.connected() {
                    break;
                }
                match self.send_one(row).await {
                    Ok(()) => {
                        pending
                            .in_flight
                            .insert(row.message_id.clone(), Instant::now());
                        if MediaKind::of_message_kind(&row.kind).is_some()
                            && pending.media_sent.len() < MEDIA_SENT
                        {
                            pending.media_sent.insert(row.message_id.clone());
                        }
                    }
                    Err(e) => {
                        if let Some(reply) = pending.waiters.remove(&row.message_id) {
                            let _ = reply.send(Err(e));
                        }
                        // Left queued: tried again after a pause.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        stale = true;
                        break;
                    }
                }
            }
        }
    }

    /// Answers the waiters whose row a fresh read of the queue did not
    /// return and that are not awaiting their ack: their row was settled
    /// before they registered (rare: the accept wakes the queue first).
    async fn settle_strays(&self, pending: &mut Pending, rows: &[OutboundMessage]) {
        let queued: HashSet<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
        let strays: Vec<String> = pending
            .waiters
            .keys()
            .filter(|id| !queued.contains(id.as_str()) && !pending.in_flight.contains_key(*id))
            .cloned()
            .collect();
        for id in strays {
            let outcome = match self.store.get_message(&self.tenant, &id).await {
                // Beyond a full read: it goes in a later round.
                Ok(Some(row)) if row.status == MessageStatus::Queued => continue,
                Ok(Some(row)) if row.status == MessageStatus::Failed => {
                    Err(SessionError::Client(row.error.unwrap_or_default()))
                }
                Ok(row) => Ok(SendOutcome::Settled(row.map(|r| r.status))),
                Err(e) => Err(e.into()),
            };
            if let Some(reply) = pending.waiters.remove(&id) {
                let _ = reply.send(outcome);
            }
        }
    }

    fn connected(&self) -> bool {
        self.status.borrow().state == SessionState::Connected
    }

    /// Waits for a signal, a state change or `timeout`: `None` when the
    /// queue must end, else whether the queue must be read again.
    async fn idle(&mut self, pending: &mut Pending, timeout: Option<Duration>) -> Option<bool> {
        let timeout = timeout.unwrap_or(Duration::MAX);
        tokio::select! {
            _ = self.stop.cancelled() => None,
            changed = self.status.changed() => changed.is_ok().then_some(true),
            signal = self.signals.recv() => match signal {
                None => None,
                Some(signal) => Some(self.handle(pending, signal).await),
            },
            _ = tokio::time::sleep(timeout) => Some(true),
        }
    }

    /// Handles a signal; true when it may have brought rows to read. Acks
    /// waiting behind an ack are recorded with it, in one batch.
    async fn handle(&mut self, pending: &mut Pending, signal: QueueSignal) -> bool {
        let QueueSignal::Acked { id, error } = signal else {
            return self.handle_one(pending, signal).await;
        };
        let mut acks = vec![(id, error)];
        let mut later = Vec::new();
        while acks.len() < ACKS_AT_ONCE {
            match self.signals.try_recv() {
                Ok(QueueSignal::Acked { id, error }) => acks.push((id, error)),
                Ok(other) => later.push(other),
                Err(_) => break,
            }
        }
        self.record(pending, acks).await;
        let mut woken = false;
        for signal in later {
            woken |= self.handle_one(pending, signal).await;
        }
        woken
    }

    async fn handle_one(&self, pending: &mut Pending, signal: QueueSignal) -> bool {
        match signal {
            QueueSignal::Wake => return true,
            QueueSignal::Accepted { row, reply } => {
                if let Some(status) = pending.settled.get(&row.message_id) {
                    // Read, sent and settled before it was handed over.
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(SendOutcome::Settled(Some(status))));
                    }
                    return false;
                }
                // Answered when its ack comes, or by a read that finds its
                // row no longer queued.
                if let Some(reply) = reply {
                    pending.waiters.insert(row.message_id.clone(), reply);
                }
                if pending.in_flight.contains_key(&row.message_id) {
                    return false;
                }
                if pending.fresh.len() < FRESH {
                    pending.fresh.push(row);
                    return false;
                }
                return true;
            }
            // Another node accepted a send and asks to hear how it went.
            QueueSignal::Watch(id) => {
                let queued = self.store.get_message(&self.tenant, &id).await;
                match queued {
                    Ok(Some(row)) if row.status == MessageStatus::Queued => {
                        if pending.watched.len() < WATCHED {
                            pending.watched.insert(id);
                        }
                        return true;
                    }
                    // Settled before the watch came.
                    _ => self.settled(&id).await,
                }
            }
            QueueSignal::Acked { id, error } => self.record(pending, vec![(id, error)]).await,
        }
        false
    }

    /// Answers everyone waiting for a row the pace holds back (not one
    /// written already and awaiting its ack) with when it should go.
    async fn hold(&self, pending: &mut Pending, held: &mut Held) {
        let waiting: Vec<String> = pending
            .waiters
            .keys()
            .chain(pending.watched.iter())
            .filter(|id| !pending.in_flight.contains_key(*id))
            .cloned()
            .collect();
        for id in waiting {
            let until_ms = held.expected(&id);
            if let Some(reply) = pending.waiters.remove(&id) {
                let _ = reply.send(Ok(SendOutcome::Held { until_ms }));
            }
            if pending.watched.remove(&id) {
                let signal = Signal::Held {
                    tenant: self.tenant.as_str().to_owned(),
                    message_id: id,
                    until_ms,
                };
                self.bus.publish(signal).await;
            }
        }
    }

    /// Tells the node that waits for this send that it settled.
    async fn settled(&self, id: &str) {
        let signal = Signal::Settled {
            tenant: self.tenant.as_str().to_owned(),
            message_id: id.to_owned(),
        };
        self.bus.publish(signal).await;
    }

    /// Records the server's answers (`sent`, or `failed` with the nack
    /// code) in one batch, then tells whoever waits for those sends.
    /// Settled even when no longer in flight (the ack came after a
    /// reconnect): a row already moved on is left as it is.
    async fn record(&self, pending: &mut Pending, acks: Vec<(String, Option<String>)>) {
        let changes: Vec<StatusChange> = acks
            .iter()
            .map(|(id, error)| StatusChange {
                tenant: self.tenant.clone(),
                message_id: id.clone(),
                status: match error {
                    None => MessageStatus::Sent,
                    Some(_) => MessageStatus::Failed,
                },
                error: error
                    .as_ref()
                    .map(|code| format!("WhatsApp refused the message (error {code})")),
            })
            .collect();
        let recorded = self.store.advance_outbound_many(changes).await;
        let recorded_ids: Vec<String> = match &recorded {
            Ok(_) => acks.iter().map(|(id, _)| id.clone()).collect(),
            Err(_) => Vec::new(),
        };
        if let Err(e) = &recorded {
            tracing::warn!(error = %e, acks = acks.len(), "cannot record acks");
        }
        for (i, (id, error)) in acks.into_iter().enumerate() {
            pending.in_flight.remove(&id);
            let outcome = match &recorded {
                Ok(advanced) => {
                    let advanced = advanced.get(i).copied();
                    if let Some(status) = advanced.and_then(|a| a.status) {
                        pending.settled.0.insert(id.clone(), status);
                    }
                    match &error {
                        Some(code) if advanced.is_some_and(|a| a.moved) => {
                            tracing::warn!(message_id = %id, code, "message refused");
                        }
                        Some(_) => {}
                        None => tracing::debug!(message_id = %id, "sent"),
                    }
                    Ok(SendOutcome::Settled(advanced.and_then(|a| a.status)))
                }
                Err(e) => Err(SessionError::Client(format!("cannot record the send: {e}"))),
            };
            if pending.watched.remove(&id) {
                self.settled(&id).await;
            }
            if let Some(reply) = pending.waiters.remove(&id) {
                let _ = reply.send(outcome);
            }
        }
        self.release_media(pending, &recorded_ids).await;
    }

    /// Lets go of the files of media sends WhatsApp answered (taken or
    /// refused: either way they never go again): the rows forget them
    /// first, then the storage deletes them.
    async fn release_media(&self, pending: &mut Pending, acked: &[String]) {
        let sent: Vec<&str> = acked
            .iter()
            .filter(|id| pending.media_sent.remove(*id))
            .map(String::as_str)
            .collect();
        if sent.is_empty() {
            return;
        }
        let keys = match self.store.release_sent_media(&self.tenant, &sent).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "cannot release sent media; the files stay until retention");
                return;
            }
        };
        for key in keys {
            if let Err(e) = self.media.storage.delete(&key).await {
                tracing::warn!(error = %e, key, "cannot delete a sent file");
            }
        }
    }

    /// Fails a row that can never go, and says why.
    async fn fail(&self, row: &OutboundMessage, error: String) -> SessionError {
        let failed = self
            .store
            .advance_outbound(
                &self.tenant,
                &row.message_id,
                MessageStatus::Failed,
                Some(&error),
            )
            .await;
        match failed {
            Ok(_) => SessionError::Client(error),
            Err(e) => e.into(),
        }
    }

    /// Writes one row to the server. A recipient that cannot be a JID fails
    /// the row for good; anything else leaves it queued.
    async fn send_one(&self, row: &OutboundMessage) -> Result<(), SessionError> {
        let to = match Jid::from_str(&row.chat_id) {
            Ok(jid) => jid,
            Err(e) => {
                let error = format!("bad recipient {}: {e}", row.chat_id);
                return Err(self.fail(row, error).await);
            }
        };
        let message = match MediaKind::of_message_kind(&row.kind) {
            None => wa::Message {
                conversation: row.text.clone(),
                ..Default::default()
            },
            Some(kind) => {
                match super::media::outbound_message(
                    &self.media,
                    &self.store,
                    &self.client,
                    row,
                    kind,
                )
                .await
                {
                    Ok(message) => message,
                    Err(MediaSendError::Lost(why)) => {
                        self.store.media_lost(row.id, &why).await?;
                        let error = format!("the file cannot be sent: {why}");
                        return Err(self.fail(row, error).await);
                    }
                    Err(MediaSendError::Retry(why)) => {
                        tracing::warn!(message_id = %row.message_id, error = %why, "media send failed; will retry");
                        return Err(SessionError::Client(why));
                    }
                }
            }
        };
        let options = SendOptions::default().with_message_id(row.message_id.clone());
        match self
            .client
            .send_message_with_options(to, message, options)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(message_id = %row.message_id, error = %e, "send failed; will retry");
                Err(SessionError::Client(e.to_string()))
            }
        }
    }
}

/// Rows the pace holds back, in the order they will go, and when.
struct Held {
    /// The WhatsApp ids of the rows read, from the held one on.
    order: Vec<String>,
    /// When the first of them goes (unix ms).
    first_ms: i64,
    /// The time between two sends at the pace.
    interval_ms: i64,
    /// Waiters for rows beyond those read: they queue behind.
    behind: i64,
}

impl Held {
    fn new(rows: &[OutboundMessage], wait: Duration, pace: SendPace) -> Self {
        Held {
            order: rows.iter().map(|r| r.message_id.clone()).collect(),
            first_ms: now_ms() + wait.as_millis() as i64,
            interval_ms: 60_000 / i64::from(pace.per_minute.max(1)),
            behind: 0,
        }
    }

    /// When the row with this id is expected to go.
    fn expected(&mut self, id: &str) -> i64 {
        let place = match self.order.iter().position(|o| o == id) {
            Some(place) => place as i64,
            None => {
                self.behind += 1;
                self.order.len() as i64 + self.behind - 1
            }
        };
        self.first_ms + place * self.interval_ms
    }
}

fn fail_all(waiters: &mut HashMap<String, Reply>) {
    for (_, reply) in waiters.drain() {
        let _ = reply.send(Err(SessionError::NotConnected));
    }
}
