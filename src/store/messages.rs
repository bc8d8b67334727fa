//! Messages, inbound and outbound, as the HTTP API reads them.

use serde::Serialize;

use std::collections::HashMap;

use sqlx::Row as _;

use super::webhooks::{enqueue_event, subscriptions, write_event};
use super::{Result, Store, batch, now_ms};
use crate::events::Event;
use crate::tenants::TenantId;
use crate::types::MessageStatus;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InboundMessage {
    pub id: i64,
    pub message_id: String,
    pub chat_id: String,
    pub sender_id: String,
    pub text: Option<String>,
    pub kind: String,
    pub timestamp: i64,
}

/// A page of the persisted inbox, oldest first.
#[derive(Debug, Clone)]
pub struct InboxQuery<'a> {
    pub chat: Option<&'a str>,
    /// Only messages whose numeric id is greater than this.
    pub after: i64,
    pub limit: i64,
}

impl Store {
    pub async fn list_inbound(
        &self,
        tenant: &TenantId,
        query: &InboxQuery<'_>,
    ) -> Result<Vec<InboundMessage>> {
        // `$2 IS NULL` keeps one statement for both the filtered and the
        // unfiltered case; the CAST tells Postgres the parameter's type.
        Ok(sqlx::query_as(
            "SELECT id, message_id, chat_id, sender_id, text, kind, timestamp
             FROM messages
             WHERE tenant_id = $1 AND direction = 'in'
               AND (CAST($2 AS TEXT) IS NULL OR chat_id = $2)
               AND id > $3
             ORDER BY id
             LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(query.chat)
        .bind(query.after)
        .bind(query.limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A message as WhatsApp delivered it, ready to store.
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub message_id: String,
    pub chat_id: String,
    pub sender_id: String,
    pub kind: String,
    pub text: Option<String>,
    /// When WhatsApp says it was sent, unix ms.
    pub timestamp: i64,
    /// Anything else about the message, for the webhook body.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// A media message's file: its row, and where it is kept.
    pub media: Option<super::media::InboundMedia>,
}

/// An outbound message as its row holds it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OutboundMessage {
    pub id: i64,
    pub message_id: String,
    pub chat_id: String,
    pub kind: String,
    pub text: Option<String>,
    pub status: MessageStatus,
    pub error: Option<String>,
    pub created_at: i64,
}

/// One message of either direction, as `GET /messages/{message_id}` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredMessage {
    pub id: i64,
    pub direction: String,
    pub message_id: String,
    pub chat_id: String,
    pub sender_id: String,
    pub kind: String,
    pub text: Option<String>,
    pub status: MessageStatus,
    pub error: Option<String>,
    pub timestamp: i64,
    pub updated_at: i64,
}

/// A status an ack or a receipt brings for one outbound message.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub tenant: TenantId,
    pub message_id: String,
    pub status: MessageStatus,
    /// Why, for `failed`.
    pub error: Option<String>,
}

/// What a [`StatusChange`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advanced {
    /// The row moved forward.
    pub moved: bool,
    /// The row's status afterwards; `None` when there is no such row.
    pub status: Option<MessageStatus>,
}

/// An outbound row while a batch of changes is applied to it.
struct Row {
    status: MessageStatus,
    chat_id: String,
    error: Option<String>,
    moved: bool,
}

/// A send the API accepted, before it is written.
#[derive(Debug, Clone)]
pub struct NewOutbound<'a> {
    pub message_id: &'a str,
    pub chat_id: &'a str,
    pub kind: &'a str,
    pub text: &'a str,
    pub idempotency_key: Option<&'a str>,
}

/// What writing a send came to.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// A new row, status `queued`.
    New(OutboundMessage),
    /// The idempotency key was used within the window: the first send.
    Repeat(OutboundMessage),
}

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

pub(super) const OUTBOUND_COLUMNS: &str =
    "id, message_id, chat_id, kind, text, status, error, created_at";

/// The send that used `key` within the window, on `conn`.
async fn idempotent_send(
    conn: &mut sqlx::AnyConnection,
    tenant: &TenantId,
    key: &str,
) -> Result<Option<OutboundMessage>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {OUTBOUND_COLUMNS} FROM messages
         WHERE tenant_id = $1 AND idempotency_key = $2 AND created_at > $3"
    ))
    .bind(tenant.as_str())
    .bind(key)
    .bind(now_ms() - IDEMPOTENCY_WINDOW_MS)
    .fetch_optional(conn)
    .await?)
}

impl Store {
    /// Stores a batch of inbound messages (and their files' rows) with
    /// their webhook events in one transaction. A message already stored
    /// (same chat, sender and id: a redelivery) is skipped, with no second
    /// event. Returns how many were new, and the storage keys of files
    /// that came with a skipped message, which nothing names: the caller
    /// deletes them.
    pub async fn store_inbound(
        &self,
        tenant: &TenantId,
        batch: &[NewInbound],
    ) -> Result<(usize, Vec<String>)> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let mut new = 0;
        let mut unused = Vec::new();
        // Whether a webhook event was written: only then is the dispatcher woken.
        let mut queued = false;
        for m in batch {
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO messages (tenant_id, direction, message_id, chat_id, sender_id, kind,
                                       text, status, timestamp, created_at, updated_at)
                 VALUES ($1, 'in', $2, $3, $4, $5, $6, 'received', $7, $8, $8)
                 ON CONFLICT DO NOTHING
                 RETURNING id",
            )
            .bind(tenant.as_str())
            .bind(&m.message_id)
            .bind(&m.chat_id)
            .bind(&m.sender_id)
            .bind(&m.kind)
            .bind(m.text.as_deref())
            .bind(m.timestamp)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = inserted else {
                unused.extend(m.media.as_ref().and_then(|f| f.storage_key.clone()));
                continue;
            };
            new += 1;
            if let Some(file) = &m.media {
                super::media::insert_media(&mut tx, tenant, row, &file.as_new(), now).await?;
            }
            let event = Event::MessageReceived {
                message_id: m.message_id.clone(),
                chat_id: m.chat_id.clone(),
                sender_id: m.sender_id.clone(),
                text: m.text.clone(),
                kind: m.kind.clone(),
                timestamp_ms: m.timestamp,
                data: m.data.clone(),
            };
            queued |= enqueue_event(&mut tx, tenant, &event).await?.is_some();
        }
        tx.commit().await?;
        if queued {
            self.wake_outbox();
        }
        Ok((new, unused))
    }

    /// Writes an accepted send as a `queued` row, unless its idempotency key
    /// was used within the window, in which case the first send is returned
    /// and nothing is written.
    pub async fn accept_outbound(
        &self,
        tenant: &TenantId,
        sender_id: &str,
        send: &NewOutbound<'_>,
    ) -> Result<Accepted> {
        let Some(key) = send.idempotency_key else {
            // One statement, atomic by itself, shared with the sends that
            // arrive meanwhile (`accepts.rs`).
            let row = match &self.accepts {
                Some(writer) => {
                    let send = super::accepts::NewSend {
                        tenant: tenant.clone(),
                        sender_id: sender_id.to_owned(),
                        message_id: send.message_id.to_owned(),
                        chat_id: send.chat_id.to_owned(),
                        kind: send.kind.to_owned(),
                        text: send.text.to_owned(),
                        now: now_ms(),
                    };
                    writer.accept(send).await?
                }
                None => insert_outbound(self.writer(), tenant, sender_id, send, now_ms()).await?,
            };
            return Ok(Accepted::New(row));
        };
        self.accept_in_transaction(tenant, sender_id, send, Some(key), None)
            .await
    }

    /// Writes a send in a transaction of its own: its idempotency key
    /// checked and taken, and its media row beside it.
    pub(super) async fn accept_in_transaction(
        &self,
        tenant: &TenantId,
        sender_id: &str,
        send: &NewOutbound<'_>,
        key: Option<&str>,
        media: Option<&super::media::NewMedia<'_>>,
    ) -> Result<Accepted> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if let Some(key) = key {
            if let Some(first) = idempotent_send(&mut tx, tenant, key).await? {
                return Ok(Accepted::Repeat(first));
            }
            // An expired use of the key gives it up; only an expired one: a
            // request with the same key that committed meanwhile keeps it,
            // and this insert then fails on the unique index (below).
            sqlx::query(
                "UPDATE messages SET idempotency_key = NULL
                 WHERE tenant_id = $1 AND idempotency_key = $2 AND created_at <= $3",
            )
            .bind(tenant.as_str())
            .bind(key)
            .bind(now - IDEMPOTENCY_WINDOW_MS)
            .execute(&mut *tx)
            .await?;
        }
        let row = match insert_outbound(&mut *tx, tenant, sender_id, send, now).await {
            Ok(row) => row,
            // A request with the same key committed first (Postgres lets two
            // transactions look for the key at once): answer as it did.
            Err(e) if e.is_unique_violation() && key.is_some() => {
                drop(tx);
                let key = key.unwrap_or_default();
                return match self.find_idempotent_send(tenant, key).await? {
                    Some(first) => Ok(Accepted::Repeat(first)),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        if let Some(media) = media {
            super::media::insert_media(&mut tx, tenant, row.id, media, now).await?;
        }
        tx.commit().await?;
        Ok(Accepted::New(row))
    }

    /// The send that used `key` within the window, if any.
    pub async fn find_idempotent_send(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<OutboundMessage>> {
        let mut conn = self.pool.acquire().await?;
        idempotent_send(&mut conn, tenant, key).await
    }

    /// The tenant's sends still waiting for their session, oldest first.
    pub async fn queued_outbound(
        &self,
        tenant: &TenantId,
        limit: i64,
    ) -> Result<Vec<OutboundMessage>> {
        Ok(sqlx::query_as(&queued_outbound_sql(self.kind()))
            .bind(tenant.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Every tenant that has sends still queued.
    pub async fn tenants_with_queued_sends(&self) -> Result<Vec<TenantId>> {
        let tenants: Vec<String> = sqlx::query_scalar(tenants_with_queued_sql(self.kind()))
            .fetch_all(&self.pool)
            .await?;
        Ok(tenants.into_iter().map(TenantId::from_raw).collect())
    }

    /// Moves an outbound message forward to `status` (never back: a late
    /// delivery receipt does not undo `read`) and records the change as an
    /// event in the same transaction. Returns whether it moved.
    pub async fn advance_outbound(
        &self,
        tenant: &TenantId,
        message_id: &str,
        status: MessageStatus,
        error: Option<&str>,
    ) -> Result<bool> {
        let change = StatusChange {
            tenant: tenant.clone(),
            message_id: message_id.to_owned(),
            status,
            error: error.map(str::to_owned),
        };
        let advanced = self.advance_outbound_many(vec![change]).await?;
        Ok(advanced.first().is_some_and(|a| a.moved))
    }

    /// Applies `changes` in order, each as [`Store::advance_outbound`]
    /// would, committed together with the changes other callers ask for
    /// meanwhile (see `statuses.rs`). One answer per change, in order.
    pub async fn advance_outbound_many(&self, changes: Vec<StatusChange>) -> Result<Vec<Advanced>> {
        match &self.statuses {
            Some(writer) => writer.apply(changes).await,
            None => {
                let mut conn = self.writer().acquire().await?;
                self.apply_status_changes(&mut conn, &changes).await
            }
        }
    }

    /// Applies a batch of status changes in one transaction: the rows are
    /// locked and read in one statement, moved in another, and each step
    /// is an event for the webhooks that want it.
    pub(super) async fn apply_status_changes(
        &self,
        conn: &mut sqlx::AnyConnection,
        changes: &[StatusChange],
    ) -> Result<Vec<Advanced>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.tenant.as_str(), c.message_id.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut tx = super::link::begin_write(conn, self.kind()).await?;
        // The rows, locked in key order on Postgres (so that two batches
        // never wait for each other in a cycle).
        let mut rows: HashMap<(String, String), Row> = HashMap::new();
        for chunk in keys.chunks(batch::CHUNK) {
            let width = batch::width(chunk.len());
            let sql = lock_outbound_sql(self.kind(), width);
            // Planned for each run: a plan kept from when `messages` was
            // small would read the whole table once it is large.
            let mut query = sqlx::query(&sql).persistent(OUTBOUND_BATCH_PREPARED);
            for (tenant, message_id) in batch::padded(chunk, width) {
                query = query.bind(*tenant).bind(*message_id);
            }
            for row in query.fetch_all(&mut *tx).await? {
                let key = (row.try_get("tenant_id")?, row.try_get("message_id")?);
                let status = row.try_get("status")?;
                let chat_id = row.try_get("chat_id")?;
                rows.insert(
                    key,
                    Row {
                        status,
                        chat_id,
                        error: None,
                        moved: false,
                    },
                );
            }
        }
        // Each change in turn, as if applied alone.
        let mut events: Vec<(&TenantId, Event)> = Vec::new();
        let mut advanced = Vec::with_capacity(changes.len());
        for change in changes {
            let key = (change.tenant.as_str().to_owned(), change.message_id.clone());
            let Some(row) = rows.get_mut(&key) else {
                advanced.push(Advanced {
                    moved: false,
                    status: None,
                });
                continue;
            };
            let steps = row.status.steps_to(change.status);
            let moved = !steps.is_empty();
            let mut before = row.status;
            for step in steps {
                let event = Event::MessageStatus {
                    message_id: change.message_id.clone(),
                    chat_id: row.chat_id.clone(),
                    status: step,
                    previous_status: Some(before),
                    error: change
                        .error
                        .clone()
                        .filter(|_| step == MessageStatus::Failed),
                };
                events.push((&change.tenant, event));
                before = step;
            }
            if moved {
                row.status = change.status;
                row.error.clone_from(&change.error);
                row.moved = true;
            }
            advanced.push(Advanced {
                moved,
                status: Some(row.status),
            });
        }
        let moved: Vec<(&(String, String), &Row)> = {
            let mut moved: Vec<_> = rows.iter().filter(|(_, r)| r.moved).collect();
            moved.sort_unstable_by(|a, b| a.0.cmp(b.0));
            moved
        };
        let now = now_ms();
        for chunk in moved.chunks(batch::CHUNK) {
            let width = batch::width(chunk.len());
            let sql = update_outbound_sql(self.kind(), width);
            let mut query = sqlx::query(&sql)
                .persistent(OUTBOUND_BATCH_PREPARED)
                .bind(now);
            for ((tenant, message_id), row) in batch::padded(chunk, width) {
                query = query
                    .bind(tenant.as_str())
                    .bind(message_id.as_str())
                    .bind(row.status)
                    .bind(row.error.as_deref());
            }
            query.execute(&mut *tx).await?;
        }
        let steps: Vec<MessageStatus> = events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::MessageStatus { status, .. } => Some(*status),
                _ => None,
            })
            .collect();
        let queued = self.write_status_events(&mut tx, events).await?;
        tx.commit().await?;
        if queued {
            self.wake_outbox();
        }
        steps.into_iter().for_each(crate::metrics::message_status);
        Ok(advanced)
    }

    /// Writes the events their tenants' webhooks want, tenant by tenant
    /// (the order in which their rows are locked) and in order within a
    /// tenant. True if any was written.
    async fn write_status_events(
        &self,
        tx: &mut sqlx::AnyConnection,
        mut events: Vec<(&TenantId, Event)>,
    ) -> Result<bool> {
        if events.is_empty() {
            return Ok(false);
        }
        events.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut tenants: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
        tenants.dedup();
        let wanted = subscriptions(tx, &tenants).await?;
        let mut queued = false;
        for (tenant, event) in &events {
            if wanted.get(tenant.as_str()).is_some_and(|s| s.wants(event)) {
                write_event(tx, tenant, event).await?;
                queued = true;
            }
        }
        Ok(queued)
    }

    /// One message by its WhatsApp id; the outbound one first when both
    /// directions use the id.
    /// `tenant`'s latest messages of both directions, newest first: the
    /// newest `limit` of each direction through `messages_by_tenant`,
    /// merged.
    pub async fn recent_messages(
        &self,
        tenant: &TenantId,
        limit: i64,
    ) -> Result<Vec<StoredMessage>> {
        let mut all: Vec<StoredMessage> = Vec::new();
        for direction in ["in", "out"] {
            let rows: Vec<StoredMessage> = sqlx::query_as(
                "SELECT id, direction, message_id, chat_id, sender_id, kind, text, status, error,
                        timestamp, updated_at
                   FROM messages WHERE tenant_id = $1 AND direction = $2
                  ORDER BY id DESC LIMIT $3",
            )
            .bind(tenant.as_str())
            .bind(direction)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            all.extend(rows);
        }
        all.sort_by_key(|m| std::cmp::Reverse(m.id));
        all.truncate(limit.max(0) as usize);
        Ok(all)
    }

    /// Messages of every tenant since `since_ms`: (received, sent), by
    /// WhatsApp's timestamps, through `messages_by_time`.
    pub async fn messages_since(&self, since_ms: i64) -> Result<(i64, i64)> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT direction, COUNT(*) FROM messages WHERE timestamp >= $1 GROUP BY direction",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        let count = |d: &str| rows.iter().find(|r| r.0 == d).map_or(0, |r| r.1);
        Ok((count("in"), count("out")))
    }

    pub async fn get_message(
        &self,
        tenant: &TenantId,
        message_id: &str,
    ) -> Result<Option<StoredMessage>> {
        Ok(sqlx::query_as(GET_MESSAGE)
            .bind(tenant.as_str())
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// Inserts an accepted send, `queued`.
async fn insert_outbound<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    tenant: &TenantId,
    sender_id: &str,
    send: &NewOutbound<'_>,
    now: i64,
) -> Result<OutboundMessage> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO messages (tenant_id, direction, message_id, chat_id, sender_id, kind, text,
                               status, idempotency_key, timestamp, created_at, updated_at)
         VALUES ($1, 'out', $2, $3, $4, $5, $6, 'queued', $7, $8, $8, $8)
         RETURNING {OUTBOUND_COLUMNS}"
    ))
    .bind(tenant.as_str())
    .bind(send.message_id)
    .bind(send.chat_id)
    .bind(sender_id)
    .bind(send.kind)
    // A media send without a caption has no text.
    .bind(Some(send.text).filter(|t| !t.is_empty()))
    .bind(send.idempotency_key)
    .bind(now)
    .fetch_one(executor)
    .await?)
}

/// A tenant's queued sends, oldest first (the send queue's read). SQLite's
/// planner prefers the tenant's whole history in id order to the small
/// partial index of queued rows, so it is told which index to use.
pub(super) fn queued_outbound_sql(kind: super::DbKind) -> String {
    let index = match kind {
        super::DbKind::Postgres => "",
        super::DbKind::Sqlite => " INDEXED BY messages_queued",
    };
    format!(
        "SELECT {OUTBOUND_COLUMNS} FROM messages{index}
         WHERE tenant_id = $1 AND direction = 'out' AND status = 'queued'
         ORDER BY id LIMIT $2"
    )
}

/// The tenants with sends still queued (the node's sweep for lost
/// wake-ups). Postgres skips from tenant to tenant through the partial
/// index instead of reading every queued row.
pub(super) fn tenants_with_queued_sql(kind: super::DbKind) -> &'static str {
    match kind {
        super::DbKind::Postgres => {
            "WITH RECURSIVE queued(tenant_id) AS (
                 (SELECT tenant_id FROM messages
                  WHERE direction = 'out' AND status = 'queued'
                  ORDER BY tenant_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT m.tenant_id FROM messages m
                         WHERE m.direction = 'out' AND m.status = 'queued'
                           AND m.tenant_id > q.tenant_id
                         ORDER BY m.tenant_id LIMIT 1)
                 FROM queued q WHERE q.tenant_id IS NOT NULL)
             SELECT tenant_id FROM queued WHERE tenant_id IS NOT NULL"
        }
        // SQLite skips through the index by itself.
        super::DbKind::Sqlite => {
            "SELECT DISTINCT tenant_id FROM messages INDEXED BY messages_queued
             WHERE direction = 'out' AND status = 'queued'"
        }
    }
}

/// Whether the status batch's statements stay prepared (see
/// [`HotQuery::prepared`](super::plans::HotQuery)): not, as Postgres keeps
/// a generic plan for a prepared statement after five runs, and the one it
/// makes for these while `messages` is new and small joins the batch
/// against every outbound row once the table has grown.
pub(super) const OUTBOUND_BATCH_PREPARED: bool = false;

/// Outbound messages' statuses, locked on Postgres (acks and receipts),
/// for `width` (tenant, WhatsApp id) pairs.
pub(super) fn lock_outbound_sql(kind: super::DbKind, width: usize) -> String {
    // Receipts and the send's own result race: lock the rows so that
    // neither overwrites the other (SQLite's write transaction already
    // holds the whole database).
    let lock = match kind {
        super::DbKind::Postgres => " FOR UPDATE OF m",
        super::DbKind::Sqlite => "",
    };
    format!(
        "SELECT m.tenant_id, m.message_id, m.status, m.chat_id
           FROM (VALUES {}) AS v
           JOIN messages m ON m.tenant_id = v.column1 AND m.message_id = v.column2
          WHERE m.direction = 'out'
          ORDER BY m.tenant_id, m.message_id{lock}",
        batch::row_placeholders(1, width, 2)
    )
}

/// Moves `width` outbound messages to their new status and error; `$1` is
/// the time. SQLite would otherwise search a tenant's whole outbound
/// history through `messages_once`.
pub(super) fn update_outbound_sql(kind: super::DbKind, width: usize) -> String {
    let index = match kind {
        super::DbKind::Postgres => "",
        super::DbKind::Sqlite => " INDEXED BY messages_by_message_id",
    };
    format!(
        "UPDATE messages{index} SET status = v.column3, error = v.column4, updated_at = $1
           FROM (VALUES {}) AS v
          WHERE messages.tenant_id = v.column1 AND messages.direction = 'out'
            AND messages.message_id = v.column2",
        batch::row_placeholders(2, width, 4)
    )
}

/// One message by its WhatsApp id, the outbound one first.
pub(super) const GET_MESSAGE: &str = "
    SELECT id, direction, message_id, chat_id, sender_id, kind, text, status, error,
           timestamp, updated_at
      FROM messages WHERE tenant_id = $1 AND message_id = $2
     ORDER BY direction DESC, id LIMIT 1";

#[cfg(test)]
mod status_tests {
    use super::MessageStatus::*;

    #[test]
    fn statuses_move_forward_and_only_a_queued_send_can_fail() {
        assert_eq!(Queued.steps_to(Failed), [Failed]);
        for acknowledged in [Sent, Delivered, Read] {
            assert!(
                acknowledged.steps_to(Failed).is_empty(),
                "{acknowledged} -> failed"
            );
        }
        assert!(Failed.steps_to(Sent).is_empty());
        assert_eq!(Queued.steps_to(Read), [Sent, Delivered, Read]);
        assert!(Read.steps_to(Delivered).is_empty());
    }
}
