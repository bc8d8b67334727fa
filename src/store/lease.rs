//! Session leases: one process runs a session at a time.
//!
//! A node that wants to run a session acquires its lease, renews it well
//! within the time to live, and releases it when it stops the session. A
//! lease is live until `expires_at` by the database's clock, so nodes need
//! not agree on the time. A second node never takes a live lease; it takes
//! over an expired one, and a takeover adds one to the fencing token, so the
//! former holder's renewals fail from then on and it must stop the session.
//!
//! Postgres is where this matters: several `wago serve` nodes on one
//! database divide the sessions between them. SQLite has one process per
//! database (the `<db>.lock` flock), so there the lease always goes to that
//! process; it uses the same table and code, which keeps one path to test.
//! This module decides who runs a session; it does not run it.

use std::fmt;
use std::time::{Duration, Instant};

use sqlx::Row;

use super::protocol::SessionId;
use super::{DbKind, Result, Store};

/// A process that runs sessions, e.g. `host-1234-9f2c`. Must be unique per
/// process: a node may take back its own live lease at once (after a
/// restart with the same id), which two processes sharing an id would fight
/// over.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        NodeId(id.into())
    }

    /// A fresh id for this process.
    pub fn generate() -> Self {
        let short = uuid::Uuid::new_v4().simple().to_string();
        NodeId(format!("node-{}-{}", std::process::id(), &short[..8]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The right to run one session, until renewed or lost.
#[derive(Debug, Clone)]
pub struct Lease {
    session: SessionId,
    node: NodeId,
    token: i64,
    expires_at: i64,
    valid_until: Instant,
}

impl Lease {
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The fencing token: larger for every new holder of the session.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// When the lease ends unless renewed (unix ms, database clock).
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    /// The same end by this process's monotonic clock, measured from before
    /// the request was sent, so it never falls after the database's. Stop
    /// the session if it passes before a renewal succeeds.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }
}

/// Who holds a session's lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub node: NodeId,
    pub token: i64,
    pub expires_at: i64,
    /// Milliseconds until it expires (negative once expired).
    pub expires_in_ms: i64,
}

/// Takes the lease if nobody holds it, it has expired, or this node holds
/// it already; a new holder gets the next token. `{now}` is the database's
/// clock in unix ms (see [`now_ms_sql`]).
const ACQUIRE: &str = "
    INSERT INTO session_leases (session_id, owner_node, token, expires_at, acquired_at)
    VALUES ($1, $2, 1, {now} + $3, {now})
    ON CONFLICT (session_id) DO UPDATE
       SET owner_node = excluded.owner_node, token = session_leases.token + 1,
           expires_at = excluded.expires_at, acquired_at = excluded.acquired_at
     WHERE session_leases.expires_at <= excluded.acquired_at
        OR session_leases.owner_node = excluded.owner_node
    RETURNING token, expires_at";

/// Only the holder of this very token may renew, even past expiry (if
/// nobody took the lease over meanwhile, nobody else ran the session), but
/// not once released (`expires_at = 0`).
const RENEW: &str = "
    UPDATE session_leases SET expires_at = {now} + $4
     WHERE session_id = $1 AND owner_node = $2 AND token = $3 AND expires_at > 0
    RETURNING expires_at";

/// Ends the lease but keeps the row, so the token keeps growing.
const RELEASE: &str = "
    UPDATE session_leases SET expires_at = 0
     WHERE session_id = $1 AND owner_node = $2 AND token = $3";

const HOLDER: &str = "
    SELECT owner_node, token, expires_at, {now} FROM session_leases WHERE session_id = $1";

impl Store {
    /// The lease of `session` for `node`, or `None` while another node holds
    /// it (logged, with who and for how long).
    pub async fn acquire_session_lease(
        &self,
        session: &SessionId,
        node: &NodeId,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let sent_at = Instant::now();
        let row = sqlx::query(&self.lease_sql(ACQUIRE))
            .bind(session.as_str())
            .bind(node.as_str())
            .bind(ttl_ms(ttl))
            .fetch_optional(self.writer())
            .await?;
        let Some(row) = row else {
            self.log_live_elsewhere(session, node).await?;
            return Ok(None);
        };
        let lease = Lease {
            session: session.clone(),
            node: node.clone(),
            token: row.try_get(0)?,
            expires_at: row.try_get(1)?,
            valid_until: sent_at + ttl,
        };
        tracing::info!(%session, %node, token = lease.token, "acquired the session lease");
        Ok(Some(lease))
    }

    /// Extends `lease` by `ttl` from now. False if it was lost: another
    /// node took it over (or it was released), and this node must stop the
    /// session at once.
    pub async fn renew_session_lease(&self, lease: &mut Lease, ttl: Duration) -> Result<bool> {
        let sent_at = Instant::now();
        let row = sqlx::query(&self.lease_sql(RENEW))
            .bind(lease.session.as_str())
            .bind(lease.node.as_str())
            .bind(lease.token)
            .bind(ttl_ms(ttl))
            .fetch_optional(self.writer())
            .await?;
        let Some(row) = row else {
            tracing::warn!(
                session = %lease.session, node = %lease.node, token = lease.token,
                "lost the session lease to another node; this node must stop the session"
            );
            return Ok(false);
        };
        lease.expires_at = row.try_get(0)?;
        lease.valid_until = sent_at + ttl;
        Ok(true)
    }

    /// Gives the lease up, so another node may take the session at once.
    /// A lease lost meanwhile is left to its new holder.
    pub async fn release_session_lease(&self, lease: &Lease) -> Result<()> {
        let done = sqlx::query(RELEASE)
            .bind(lease.session.as_str())
            .bind(lease.node.as_str())
            .bind(lease.token)
            .execute(self.writer())
            .await?;
        if done.rows_affected() > 0 {
            tracing::info!(session = %lease.session, node = %lease.node, "released the session lease");
        }
        Ok(())
    }

    /// Who holds the lease of `session`, if anyone ever did.
    pub async fn session_lease_holder(&self, session: &SessionId) -> Result<Option<LeaseHolder>> {
        let row = sqlx::query(&self.lease_sql(HOLDER))
            .bind(session.as_str())
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let expires_at: i64 = row.try_get(2)?;
        let now: i64 = row.try_get(3)?;
        Ok(Some(LeaseHolder {
            node: NodeId(row.try_get(0)?),
            token: row.try_get(1)?,
            expires_at,
            expires_in_ms: expires_at - now,
        }))
    }

    async fn log_live_elsewhere(&self, session: &SessionId, node: &NodeId) -> Result<()> {
        if let Some(holder) = self.session_lease_holder(session).await? {
            tracing::info!(
                %session, %node, holder = %holder.node, expires_in_ms = holder.expires_in_ms,
                "session is live on another node; not starting it here"
            );
        }
        Ok(())
    }

    fn lease_sql(&self, template: &str) -> String {
        template.replace("{now}", now_ms_sql(self.kind()))
    }
}

/// The database's clock in unix milliseconds, as an SQL expression.
pub(super) fn now_ms_sql(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Postgres => "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
        // julianday counts days from noon, 24 Nov 4714 BC; the unix epoch is
        // day 2440587.5. One `now` per statement, as on Postgres.
        DbKind::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

pub(super) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}
