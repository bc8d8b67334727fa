//! Session leases: one process runs a session at a time.
//!
//! Each `wago serve` process claims its node's row in `nodes` under an
//! instance of its own (`cluster.rs`); a second process with the same
//! `NODE_ID` waits until the first's claim lapses, or refuses to start
//! while it lives. A session's lease belongs to the instance that took
//! it and lives exactly as long as that node's row: renewing the node's
//! row renews every session it runs, one statement per node however many
//! sessions it has. A lease is live by the database's clock, so nodes need
//! not agree on the time.
//!
//! A second node never takes a live lease. It takes a released one, or one
//! whose node lapsed, and then only after that node's database connections
//! were cut (`fence.rs`), so nothing the old holder sent can still land. A
//! takeover adds one to the fencing token, which every status write checks.
//!
//! Postgres is where this matters: several `wago serve` nodes on one
//! database divide the sessions between them. SQLite has one process per
//! database (the `<db>.lock` flock), so there the lease always goes to that
//! process; it uses the same table and code, which keeps one path to test.
//! This module decides who runs a session; it does not run it.

use sqlx::Row;
use std::fmt;

use super::protocol::SessionId;
use super::{DbKind, Result, Store};

/// A node that runs sessions, e.g. `host-1234-9f2c`: one process at a time
/// (its claimed instance), and the same id across its restarts.
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

/// The right to run one session: held by one node instance (one process)
/// for as long as that node's own lease lives, or until released. A node
/// renews every session lease it holds by renewing its own row.
#[derive(Debug, Clone)]
pub struct Lease {
    session: SessionId,
    node: NodeId,
    instance: String,
    token: i64,
}

impl Lease {
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The process that holds it (see [`Store::claim_node`]).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The fencing token: larger for every new holder of the session.
    pub fn token(&self) -> i64 {
        self.token
    }
}

/// Who holds a session's lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub node: NodeId,
    pub token: i64,
    /// Whether it is live: held, by the instance whose node lease lives.
    pub live: bool,
    /// Milliseconds until the holder's node lease ends (negative once it
    /// has; `None` when the lease was released or its instance is gone).
    pub expires_in_ms: Option<i64>,
}

/// Whether the lease `l` is live: held, by the node instance that holds
/// its node's row, which has not lapsed.
pub(super) const LIVE: &str = "l.held > 0 AND EXISTS (
    SELECT 1 FROM nodes n
     WHERE n.id = l.owner_node AND n.instance = l.instance AND n.expires_at > {now})";

/// Takes the lease if nobody holds it, its holder's node lapsed and was
/// fenced (its connections cut, see `fence.rs`), its instance is gone, or
/// this instance holds it already. The taker's own node lease must be
/// live. A new holder gets the next token.
const ACQUIRE: &str = "
    INSERT INTO session_leases (session_id, owner_node, instance, token, held, acquired_at)
    SELECT $1, $2, $3, 1, 1, {now}
     WHERE EXISTS (SELECT 1 FROM nodes WHERE id = $2 AND instance = $3 AND expires_at > {now})
    ON CONFLICT (session_id) DO UPDATE
       SET owner_node = excluded.owner_node, instance = excluded.instance,
           token = session_leases.token + 1, held = 1, acquired_at = excluded.acquired_at
     WHERE session_leases.held = 0
        OR (session_leases.owner_node = excluded.owner_node
            AND session_leases.instance = excluded.instance)
        OR NOT EXISTS (SELECT 1 FROM nodes n
                        WHERE n.id = session_leases.owner_node
                          AND n.instance = session_leases.instance
                          AND (n.expires_at > excluded.acquired_at OR n.fenced = 0))
    RETURNING token";

/// Ends the lease but keeps the row, so the token keeps growing.
const RELEASE: &str = "
    UPDATE session_leases SET held = 0
     WHERE session_id = $1 AND owner_node = $2 AND instance = $3 AND token = $4";

const HOLDER: &str = "
    SELECT l.owner_node, l.token, l.held,
           CASE WHEN n.instance = l.instance THEN 1 ELSE 0 END, n.expires_at - {now}
      FROM session_leases l LEFT JOIN nodes n ON n.id = l.owner_node
     WHERE l.session_id = $1";

impl Store {
    /// The lease of `session` for `node`'s claimed `instance`, or `None`
    /// while another node holds it (logged, with who and for how long) or
    /// this node's own lease has lapsed.
    pub async fn acquire_session_lease(
        &self,
        session: &SessionId,
        node: &NodeId,
        instance: &str,
    ) -> Result<Option<Lease>> {
        let token: Option<i64> = sqlx::query_scalar(&self.lease_sql(ACQUIRE))
            .bind(session.as_str())
            .bind(node.as_str())
            .bind(instance)
            .fetch_optional(self.writer())
            .await?;
        let Some(token) = token else {
            self.log_live_elsewhere(session, node).await?;
            return Ok(None);
        };
        // Placed: off the placement queue (a separate statement; a row left
        // by a crash here is dropped by whoever next finds the lease live).
        sqlx::query("DELETE FROM placement_queue WHERE tenant_id = $1")
            .bind(session.as_str())
            .execute(self.writer())
            .await?;
        let lease = Lease {
            session: session.clone(),
            node: node.clone(),
            instance: instance.to_owned(),
            token,
        };
        tracing::info!(%session, %node, token, "acquired the session lease");
        Ok(Some(lease))
    }

    /// Gives the lease up, so another node may take the session at once.
    /// A lease lost meanwhile is left to its new holder.
    /// A session that still has a linked device is queued for placement
    /// in the same transaction.
    pub async fn release_session_lease(&self, lease: &Lease) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(RELEASE)
            .bind(lease.session.as_str())
            .bind(lease.node.as_str())
            .bind(&lease.instance)
            .bind(lease.token)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() > 0 {
            sqlx::query(&super::cluster::queue_released_sql(self.kind()))
                .bind(lease.session.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
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
        let held = row.try_get::<i64, _>(2)? > 0;
        let same_instance = row.try_get::<i64, _>(3)? == 1;
        let expires_in_ms = (held && same_instance)
            .then(|| row.try_get::<Option<i64>, _>(4))
            .transpose()?
            .flatten();
        Ok(Some(LeaseHolder {
            node: NodeId(row.try_get(0)?),
            token: row.try_get(1)?,
            live: expires_in_ms.is_some_and(|ms| ms > 0),
            expires_in_ms,
        }))
    }

    async fn log_live_elsewhere(&self, session: &SessionId, node: &NodeId) -> Result<()> {
        if let Some(holder) = self.session_lease_holder(session).await? {
            tracing::info!(
                %session, %node, holder = %holder.node, expires_in_ms = holder.expires_in_ms,
                "session is live on another node (or this node's lease lapsed); not starting it here"
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

pub(super) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}
