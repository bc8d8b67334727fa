//! Webhook endpoints, the event outbox and its delivery attempts.
//!
//! Events enter the outbox in the transaction of the fact they report
//! ([`enqueue_event`]), which also marks the tenant's queue due. Dispatchers
//! claim due tenants under a lease ([`Store::claim_queues`]), read each
//! one's first due rows ([`Store::due_deliveries`]) and record attempts in
//! batches ([`Store::settle_deliveries`]). The claim reads the small queue
//! table, never the backlog, so it costs what it takes. A lease token
//! fences a dispatcher whose lease ran out: its late results are not
//! written over a newer holder's.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::batch::placeholders;
use super::{DbKind, Result, Store, now_ms};
use crate::events::Event;
use crate::tenants::TenantId;

#[derive(Debug, Clone, Serialize)]
pub struct WebhookEndpoint {
    pub url: String,
    #[serde(skip)]
    pub secret: Option<String>,
    pub events: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// Set by the operator: exempt from the private-address guard.
    pub trusted: bool,
    pub updated_at: i64,
}

/// What to do with a stored secret when the endpoint is set again.
pub enum SecretUpdate<'a> {
    Keep,
    Set(&'a str),
    Remove,
}

/// A claimed delivery: the bytes to send and who holds it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub tenant_id: TenantId,
    pub event_id: String,
    pub event: String,
    pub payload: String,
    pub attempts: i64,
}

/// The result of one attempt, and what happens to the delivery next.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub attempted_at: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_prefix: Option<String>,
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(i64),
    Dead,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub event: String,
    pub sequence: i64,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub attempt_log: Vec<Attempt>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    #[serde(skip)]
    pub outbox_id: i64,
    pub attempted_at: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_prefix: Option<String>,
}

/// What waits to be delivered, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    /// Deliveries never tried, or failed and waiting for a retry.
    pub waiting: i64,
    /// When the earliest of them is (or was) due, unix ms.
    pub earliest_due_ms: Option<i64>,
}

/// Delivery statuses, as stored and as filtered on.
pub const STATUSES: [&str; 4] = ["pending", "failed", "delivered", "dead"];

/// Puts `event` in the tenant's outbox if its webhook wants it, on
/// `conn` (usually inside the transaction that records the fact).
/// Returns the outbox id, or None when no enabled endpoint subscribes.
pub async fn enqueue_event(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    event: &Event,
) -> Result<Option<i64>> {
    let events: Option<String> = sqlx::query_scalar(
        "SELECT events FROM webhook_endpoints WHERE tenant_id = $1 AND enabled = 1",
    )
    .bind(tenant.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    if !Subscription::parse(events.as_deref()).wants(event) {
        return Ok(None);
    }
    write_event(conn, tenant, event).await.map(Some)
}

/// The events an enabled endpoint subscribes to (none without one).
#[derive(Debug, Clone, Default)]
pub(super) struct Subscription(Vec<String>);

impl Subscription {
    /// From the endpoint's stored `events` column.
    pub(super) fn parse(events: Option<&str>) -> Self {
        Subscription(
            events
                .and_then(|e| serde_json::from_str::<Vec<String>>(e).ok())
                .unwrap_or_default(),
        )
    }

    pub(super) fn wants(&self, event: &Event) -> bool {
        !self.0.is_empty() && (event.kind().is_none() || self.0.iter().any(|n| n == event.name()))
    }
}

/// The enabled endpoints' subscriptions of several tenants at once, on
/// `conn`: tenants without one are left out.
pub(super) async fn subscriptions(
    conn: &mut AnyConnection,
    tenants: &[&str],
) -> Result<std::collections::HashMap<String, Subscription>> {
    let mut found = std::collections::HashMap::new();
    for chunk in tenants.chunks(super::batch::CHUNK) {
        let width = super::batch::width(chunk.len());
        let sql = subscriptions_sql(width);
        let mut query = sqlx::query(&sql);
        for tenant in super::batch::padded(chunk, width) {
            query = query.bind(*tenant);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let tenant: String = row.try_get("tenant_id")?;
            let events: Option<String> = row.try_get("events")?;
            found.insert(tenant, Subscription::parse(events.as_deref()));
        }
    }
    Ok(found)
}

/// The enabled endpoints' subscriptions of `width` tenants.
pub(super) fn subscriptions_sql(width: usize) -> String {
    format!(
        "SELECT tenant_id, events FROM webhook_endpoints
         WHERE enabled = 1 AND tenant_id IN ({})",
        placeholders(1, width)
    )
}

/// Writes `event` to the tenant's outbox, unconditionally, and marks the
/// tenant's queue due. Returns the outbox id.
pub(super) async fn write_event(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    event: &Event,
) -> Result<i64> {
    // Row lock on the tenant: concurrent events get distinct, increasing
    // sequence numbers in commit order.
    let sequence: i64 = sqlx::query_scalar(
        "UPDATE tenants SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let now = now_ms();
    let payload = event.body(tenant, sequence, now).to_string();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_outbox (tenant_id, event_id, event, sequence, payload, status,
                                     attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)
         RETURNING id",
    )
    .bind(tenant.as_str())
    .bind(format!("evt_{}", uuid::Uuid::new_v4().simple()))
    .bind(event.name())
    .bind(sequence)
    .bind(payload)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    mark_due(conn, tenant, now).await?;
    Ok(id)
}

impl Store {
    /// Records an event on its own (for facts that have no row of their
    /// own, such as a session's state change).
    pub async fn record_event(&self, tenant: &TenantId, event: &Event) -> Result<Option<i64>> {
        let mut tx = self.begin_write().await?;
        let id = enqueue_event(&mut tx, tenant, event).await?;
        tx.commit().await?;
        if id.is_some() {
            self.wake_outbox();
        }
        Ok(id)
    }

    pub async fn get_webhook(&self, tenant: &TenantId) -> Result<Option<WebhookEndpoint>> {
        let row = sqlx::query(
            "SELECT url, secret, events, enabled, disabled_reason, trusted, updated_at
             FROM webhook_endpoints WHERE tenant_id = $1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let events: String = row.try_get("events")?;
            Ok(WebhookEndpoint {
                url: row.try_get("url")?,
                secret: row.try_get("secret")?,
                events: serde_json::from_str(&events).unwrap_or_default(),
                enabled: row.try_get::<i64, _>("enabled")? != 0,
                disabled_reason: row.try_get("disabled_reason")?,
                trusted: row.try_get::<i64, _>("trusted")? != 0,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    /// Sets the tenant's webhook; setting it (again) re-enables delivery.
    pub async fn put_webhook(
        &self,
        tenant: &TenantId,
        url: &str,
        secret: SecretUpdate<'_>,
        events: &[String],
        trusted: bool,
    ) -> Result<()> {
        let (keep, value) = match secret {
            SecretUpdate::Keep => (1_i64, None),
            SecretUpdate::Set(s) => (0, Some(s)),
            SecretUpdate::Remove => (0, None),
        };
        let now = now_ms();
        sqlx::query(
            "INSERT INTO webhook_endpoints (tenant_id, url, secret, events, enabled, trusted,
                                            created_at, updated_at)
             VALUES ($1, $2, $3, $4, 1, $5, $6, $6)
             ON CONFLICT (tenant_id) DO UPDATE SET
                 url = excluded.url,
                 secret = CASE WHEN $7 = 1 THEN webhook_endpoints.secret ELSE excluded.secret END,
                 events = excluded.events,
                 enabled = 1,
                 disabled_reason = NULL,
                 trusted = excluded.trusted,
                 updated_at = excluded.updated_at",
        )
        .bind(tenant.as_str())
        .bind(url)
        .bind(value)
        .bind(serde_json::to_string(events).unwrap_or_else(|_| "[]".into()))
        .bind(i64::from(trusted))
        .bind(now)
        .bind(keep)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn delete_webhook(&self, tenant: &TenantId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Stops delivery to the tenant's endpoint (it answered 410 Gone).
    pub async fn disable_webhook(&self, tenant: &TenantId, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $1, updated_at = $2
             WHERE tenant_id = $3",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(tenant.as_str())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Claims up to `limit` tenants with deliveries due, longest waiting
    /// first, leasing each to `token` until `lease_until`. A tenant held
    /// under a live lease is skipped, so one dispatcher at a time delivers
    /// a tenant's events, in order. Costs what it claims, however long the
    /// backlog.
    pub async fn claim_queues(
        &self,
        token: &str,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<TenantId>> {
        let tenants: Vec<String> = sqlx::query_scalar(&claim_queues_sql(self.kind))
            .bind(lease_until)
            .bind(token)
            .bind(now_ms())
            .bind(limit)
            .fetch_all(&self.writer)
            .await?;
        Ok(tenants.into_iter().map(TenantId::from_raw).collect())
    }

    /// The first `limit` deliveries of a claimed tenant that are due:
    /// never-tried ones and due retries, in the order they were written.
    pub async fn due_deliveries(&self, tenant: &TenantId, limit: i64) -> Result<Vec<Claimed>> {
        let rows = sqlx::query(DUE_DELIVERIES)
            .bind(tenant.as_str())
            .bind(now_ms())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Claimed {
                    id: row.try_get("id")?,
                    tenant_id: tenant.clone(),
                    event_id: row.try_get("event_id")?,
                    event: row.try_get("event")?,
                    payload: row.try_get("payload")?,
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Records the attempts made under `token`'s hold on the tenant's
    /// queue, in one transaction, then keeps holding it (`Hold::Until`) or
    /// lets it go, due again when its earliest remaining delivery is.
    /// Nothing is written when the hold was lost.
    pub async fn settle_deliveries(
        &self,
        tenant: &TenantId,
        token: &str,
        attempts: &[(i64, AttemptRecord)],
        hold: Hold,
    ) -> Result<Settled> {
        let now = now_ms();
        let until = match hold {
            Hold::Until(until) => until,
            Hold::Release => now,
        };
        let mut tx = self.begin_write().await?;
        // The queue row's lock comes first: events committed before it are
        // seen by the release below, later ones wait for this commit.
        let held = sqlx::query(
            "UPDATE webhook_queues SET locked_until = $3 WHERE tenant_id = $1 AND lease_token = $2",
        )
        .bind(tenant.as_str())
        .bind(token)
        .bind(until)
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() == 0 {
            return Ok(Settled::Lost);
        }
        for (id, attempt) in attempts {
            record_attempt(&mut tx, tenant, *id, attempt).await?;
        }
        let settled = match hold {
            Hold::Until(_) => Settled::Kept,
            Hold::Release => {
                let due_at: Option<i64> = sqlx::query_scalar(RELEASE_QUEUE)
                    .bind(tenant.as_str())
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                Settled::Released {
                    due_now: due_at.is_some_and(|due| due <= now),
                }
            }
        };
        tx.commit().await?;
        Ok(settled)
    }

    /// A page of the tenant's deliveries, oldest first, with their attempts.
    pub async fn list_deliveries(
        &self,
        tenant: &TenantId,
        status: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT id, event_id, event, sequence, status, attempts, next_attempt_at,
                    last_status_code, last_error, created_at, delivered_at
             FROM webhook_outbox
             WHERE tenant_id = $1 AND (CAST($2 AS TEXT) IS NULL OR status = $2) AND id > $3
             ORDER BY id LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(status)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut deliveries = rows
            .into_iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                let waiting = matches!(status.as_str(), "pending" | "failed");
                Ok(Delivery {
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    event: row.try_get("event")?,
                    sequence: row.try_get("sequence")?,
                    next_attempt_at: waiting
                        .then(|| row.try_get("next_attempt_at"))
                        .transpose()?,
                    status,
                    attempts: row.try_get("attempts")?,
                    last_status_code: row.try_get("last_status_code")?,
                    last_error: row.try_get("last_error")?,
                    created_at: row.try_get("created_at")?,
                    delivered_at: row.try_get("delivered_at")?,
                    attempt_log: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let sql = format!(
            "SELECT outbox_id, attempted_at, status_code, error, latency_ms, response_prefix
             FROM webhook_attempts WHERE outbox_id IN ({}) ORDER BY id",
            placeholders(1, deliveries.len())
        );
        let mut query = sqlx::query_as::<_, Attempt>(&sql);
        for d in &deliveries {
            query = query.bind(d.id);
        }
        for attempt in query.fetch_all(&self.pool).await? {
            if let Some(d) = deliveries.iter_mut().find(|d| d.id == attempt.outbox_id) {
                d.attempt_log.push(attempt);
            }
        }
        Ok(deliveries)
    }

    /// Queues one delivery again with a fresh retry schedule. False if the
    /// tenant has no such delivery.
    pub async fn replay_delivery(&self, tenant: &TenantId, id: i64) -> Result<bool> {
        Ok(self.requeue(tenant, "id = $3", id).await? > 0)
    }

    /// Queues every delivery in `status` again; returns how many.
    pub async fn replay_deliveries(&self, tenant: &TenantId, status: &str) -> Result<u64> {
        self.requeue(tenant, "status = $3", status.to_owned()).await
    }

    /// Makes the tenant's deliveries matching `filter` (on `$3 = value`)
    /// pending again, due now, with a fresh retry schedule.
    async fn requeue<T>(&self, tenant: &TenantId, filter: &str, value: T) -> Result<u64>
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + Send,
    {
        let sql = format!(
            "UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = $1
             WHERE tenant_id = $2 AND {filter}"
        );
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(&sql)
            .bind(now)
            .bind(tenant.as_str())
            .bind(value)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() > 0 {
            mark_due(&mut tx, tenant, now).await?;
        }
        tx.commit().await?;
        if done.rows_affected() > 0 {
            self.wake_outbox();
        }
        Ok(done.rows_affected())
    }
}

/// What [`Store::settle_deliveries`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Nothing: the hold was lost (another dispatcher has the tenant now).
    Lost,
    /// Recorded; the queue is still held.
    Kept,
    /// Recorded and let go; `due_now` when deliveries are due already
    /// (events written meanwhile, or more than one batch).
    Released { due_now: bool },
}

/// Whether a dispatcher keeps a tenant's queue after recording attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Keeps it, leased until then (unix ms).
    Until(i64),
    /// Lets it go.
    Release,
}

/// The claim of tenants with deliveries due: `$1` lease end, `$2` token,
/// `$3` now, `$4` how many.
pub(super) fn claim_queues_sql(kind: DbKind) -> String {
    // Postgres: concurrent dispatchers skip each other's rows instead of
    // waiting on them. SQLite has one writer at a time anyway.
    let skip_locked = match kind {
        DbKind::Postgres => "FOR UPDATE SKIP LOCKED",
        DbKind::Sqlite => "",
    };
    format!(
        "UPDATE webhook_queues SET locked_until = $1, lease_token = $2
         WHERE tenant_id IN (
             SELECT tenant_id FROM webhook_queues
             WHERE due_at <= $3 AND (locked_until IS NULL OR locked_until < $3)
             ORDER BY due_at LIMIT $4 {skip_locked})
         RETURNING tenant_id"
    )
}

/// A claimed tenant's first due rows: `$1` tenant, `$2` now, `$3` how
/// many. Each branch reads its own small partial index.
pub(super) const DUE_DELIVERIES: &str = "
    SELECT id, event_id, event, payload, attempts FROM webhook_outbox
    WHERE id IN (
        SELECT id FROM (SELECT id FROM webhook_outbox
                        WHERE tenant_id = $1 AND status = 'pending'
                        ORDER BY id LIMIT $3) AS fresh
        UNION ALL
        SELECT id FROM (SELECT id FROM webhook_outbox
                        WHERE tenant_id = $1 AND status = 'failed' AND next_attempt_at <= $2
                        ORDER BY next_attempt_at LIMIT $3) AS retries)
    ORDER BY id LIMIT $3";

/// Lets a tenant's queue go, due when its earliest waiting row is: now if
/// a row was never tried, else at its first retry. `$1` tenant, `$2` now.
pub(super) const RELEASE_QUEUE: &str = "
    UPDATE webhook_queues SET
        due_at = CASE
            WHEN EXISTS (SELECT 1 FROM webhook_outbox
                         WHERE tenant_id = $1 AND status = 'pending') THEN $2
            ELSE (SELECT MIN(next_attempt_at) FROM webhook_outbox
                  WHERE tenant_id = $1 AND status = 'failed')
        END,
        locked_until = NULL, lease_token = NULL
    WHERE tenant_id = $1
    RETURNING due_at";

/// Marks the tenant's queue due at `now` (an event was written, or
/// deliveries were queued again), unless it is due sooner already.
async fn mark_due(conn: &mut AnyConnection, tenant: &TenantId, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_queues (tenant_id, due_at) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET due_at = excluded.due_at
         WHERE webhook_queues.due_at IS NULL OR webhook_queues.due_at > excluded.due_at",
    )
    .bind(tenant.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One attempt: the row moves on and the attempt is logged.
async fn record_attempt(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    id: i64,
    attempt: &AttemptRecord,
) -> Result<()> {
    let (status, next_at, delivered_at) = match attempt.next {
        NextStep::Delivered => (
            "delivered",
            attempt.attempted_at,
            Some(attempt.attempted_at),
        ),
        NextStep::RetryAt(at) => ("failed", at, None),
        NextStep::Dead => ("dead", attempt.attempted_at, None),
    };
    let updated = sqlx::query(
        "UPDATE webhook_outbox SET
             status = $1, attempts = attempts + 1, next_attempt_at = $2, delivered_at = $3,
             last_status_code = $4, last_error = $5
         WHERE id = $6 AND tenant_id = $7 AND status IN ('pending', 'failed')",
    )
    .bind(status)
    .bind(next_at)
    .bind(delivered_at)
    .bind(attempt.status_code.map(i64::from))
    .bind(&attempt.error)
    .bind(id)
    .bind(tenant.as_str())
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        // Deleted meanwhile: nothing to log the attempt on.
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO webhook_attempts (outbox_id, attempted_at, status_code, error,
                                       latency_ms, response_prefix)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(attempt.attempted_at)
    .bind(attempt.status_code.map(i64::from))
    .bind(&attempt.error)
    .bind(attempt.latency_ms)
    .bind(&attempt.response_prefix)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// The webhook backlog: the rows still to deliver (through the partial
    /// indexes on waiting rows, so it costs what waits, not what was
    /// delivered) and the earliest due time of any tenant's queue.
    pub async fn webhook_backlog(&self) -> Result<Backlog> {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM webhook_outbox WHERE status = 'pending')
                  + (SELECT COUNT(*) FROM webhook_outbox WHERE status = 'failed')",
        )
        .fetch_one(self.pool())
        .await?;
        let earliest_due_ms: Option<i64> =
            sqlx::query_scalar("SELECT MIN(due_at) FROM webhook_queues WHERE due_at IS NOT NULL")
                .fetch_one(self.pool())
                .await?;
        Ok(Backlog {
            waiting,
            earliest_due_ms,
        })
    }
}
