//! Several nodes on one database: membership, the status every node reads,
//! the commands a node hands to a session's owner, and what placement
//! needs to spread sessions.
//!
//! The database is the truth here. A session's owner (the holder of its
//! lease) writes its status row, fenced by its lease token; any node reads
//! it. A node that must act on a session another node runs writes a
//! command row and wakes the owner; the row, not the wake-up, is what
//! counts, so a lost wake-up only delays a command.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::Row;

use super::lease::{now_ms_sql, ttl_ms};
use super::protocol::SessionId;
use super::{DbKind, Lease, NodeId, Result, Store, now_ms};
use crate::sessions::SessionState;
use crate::tenants::TenantId;

crate::text_enum! {
    /// What a command asks of a session's owner.
    pub enum CommandKind {
        Logout = "logout",
        PairCode = "pair_code",
        Stop = "stop",
    }
}

crate::text_enum! {
    /// Where a command is. `pending` ones may still be expired by the node
    /// that wrote them; the owner moves them to `running` before it acts,
    /// so a command is carried out once or not at all.
    pub enum CommandStatus {
        Pending = "pending",
        Running = "running",
        Done = "done",
        Failed = "failed",
        Expired = "expired",
    }
}

/// A node as `GET /admin/nodes` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub id: String,
    pub address: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// Sessions whose live lease it holds.
    pub sessions: i64,
}

/// What a session's owner publishes about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusFields {
    pub jid: Option<String>,
    pub push_name: Option<String>,
    pub error: Option<String>,
    pub qr: Option<String>,
    /// Unix ms.
    pub qr_expires_at: Option<i64>,
}

/// A session's status as stored, with whether its owner still holds the
/// lease.
#[derive(Debug, Clone)]
pub struct StoredStatus {
    pub state: SessionState,
    pub fields: StatusFields,
    /// When `state` was entered (unix ms).
    pub since: i64,
    /// The owner that wrote the row, if it still holds a live lease.
    pub live_owner: Option<NodeId>,
}

/// A command row.
#[derive(Debug, Clone)]
pub struct CommandRow {
    pub id: i64,
    pub tenant: TenantId,
    pub kind: CommandKind,
    pub argument: Option<String>,
    pub status: CommandStatus,
    pub result: Option<String>,
}

/// States in which a session has a linked device and should be running.
const WANTED: &str = "('connecting', 'connected', 'disconnected')";

const STATUS_COLUMNS: &str = "s.state, s.jid, s.push_name, s.error, s.qr, s.qr_expires_at,
    s.since, CASE WHEN l.expires_at > {now} AND l.owner_node = s.node_id
                       AND l.token = s.lease_token
                  THEN s.node_id END";

impl Store {
    /// Registers this node, or refreshes its heartbeat: live for `ttl`.
    pub async fn heartbeat_node(
        &self,
        node: &NodeId,
        address: &str,
        started_at: i64,
        ttl: Duration,
    ) -> Result<()> {
        let sql = self.with_now(
            "INSERT INTO nodes (id, address, started_at, heartbeat_at, expires_at)
             VALUES ($1, $2, $3, {now}, {now} + $4)
             ON CONFLICT (id) DO UPDATE
                SET address = excluded.address, started_at = excluded.started_at,
                    heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at",
        );
        sqlx::query(&sql)
            .bind(node.as_str())
            .bind(address)
            .bind(started_at)
            .bind(ttl_ms(ttl))
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Milliseconds until sessions may next become free to take: the first
    /// other live node's row lapses unless it heartbeats again, or a lease
    /// of a node that is no longer live runs out.
    pub async fn next_lapse(&self, node: &NodeId) -> Result<Option<i64>> {
        let nodes = self.with_now(
            "SELECT MIN(expires_at) - {now} FROM nodes WHERE expires_at > {now} AND id <> $1",
        );
        let orphans = self.with_now(
            "SELECT MIN(l.expires_at) - {now} FROM session_leases l
              WHERE l.expires_at > {now} AND l.owner_node <> $1
                AND NOT EXISTS (SELECT 1 FROM nodes n
                                 WHERE n.id = l.owner_node AND n.expires_at > {now})",
        );
        let mut next: Option<i64> = None;
        for sql in [nodes, orphans] {
            let ms: Option<i64> = sqlx::query_scalar(&sql)
                .bind(node.as_str())
                .fetch_one(self.pool())
                .await?;
            next = match (next, ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(next)
    }

    /// Ends every lease `node` holds: called at start, when whatever held
    /// them under this node's id (a process killed before a restart) is
    /// gone. Their status rows stop counting as running at once.
    pub async fn release_node_leases(&self, node: &NodeId) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE session_leases SET expires_at = 0 WHERE owner_node = $1 AND expires_at > 0",
        )
        .bind(node.as_str())
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// Forgets nodes gone for a day, and commands untouched for an hour
    /// (finished, or left by a node that died).
    pub async fn prune_cluster_rows(&self) -> Result<()> {
        let now = now_ms();
        sqlx::query("DELETE FROM nodes WHERE expires_at < $1")
            .bind(now - 24 * 3600 * 1000)
            .execute(self.writer())
            .await?;
        // Finished rows, and rows no one will finish: a `running` one whose
        // node died, a `pending` one nobody took.
        sqlx::query("DELETE FROM session_commands WHERE updated_at < $1")
            .bind(now - 3600 * 1000)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Marks this node gone at once (a clean shutdown).
    pub async fn leave_node(&self, node: &NodeId) -> Result<()> {
        sqlx::query("UPDATE nodes SET expires_at = 0 WHERE id = $1")
            .bind(node.as_str())
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// The live nodes, by id, with how many sessions each runs.
    pub async fn live_nodes(&self) -> Result<Vec<NodeInfo>> {
        let sql = self.with_now(
            "SELECT n.id, n.address, n.started_at, n.heartbeat_at,
                    (SELECT COUNT(*) FROM session_leases l
                      WHERE l.owner_node = n.id AND l.expires_at > {now})
               FROM nodes n WHERE n.expires_at > {now} ORDER BY n.id",
        );
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(NodeInfo {
                    id: r.try_get(0)?,
                    address: r.try_get(1)?,
                    started_at: r.try_get(2)?,
                    heartbeat_at: r.try_get(3)?,
                    sessions: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Renews, in one statement, the leases `node` holds on `sessions`;
    /// returns the sessions whose lease it still holds. A session missing
    /// from the answer was taken over (or released): stop it at once.
    /// `valid_until` is when the renewed leases end by this process's clock
    /// (measured from before the statement was sent).
    pub async fn renew_node_leases(
        &self,
        node: &NodeId,
        sessions: &[SessionId],
        ttl: Duration,
    ) -> Result<(Vec<SessionId>, Instant)> {
        let sent_at = Instant::now();
        if sessions.is_empty() {
            return Ok((Vec::new(), sent_at + ttl));
        }
        let list =
            serde_json::to_string(&sessions.iter().map(SessionId::as_str).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".into());
        let held: Vec<String> = sqlx::query_scalar(&renew_leases_sql(self.kind()))
            .bind(node.as_str())
            .bind(ttl_ms(ttl))
            .bind(list)
            .fetch_all(self.writer())
            .await?;
        Ok((
            held.iter().map(|s| SessionId::from_raw(s)).collect(),
            sent_at + ttl,
        ))
    }

    /// Writes a session's status, as the holder of `lease`. A node that
    /// lost the lease writes nothing: the row belongs to the new owner.
    /// `since` moves only when the state changes.
    pub async fn write_session_status(
        &self,
        tenant: &TenantId,
        lease: &Lease,
        state: SessionState,
        fields: &StatusFields,
    ) -> Result<bool> {
        let sql = self.with_now(
            "INSERT INTO session_status (tenant_id, state, jid, push_name, error, qr,
                                         qr_expires_at, node_id, lease_token, since, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $11, $9, $9)
             ON CONFLICT (tenant_id) DO UPDATE
                SET state = excluded.state, jid = excluded.jid,
                    push_name = excluded.push_name, error = excluded.error,
                    qr = excluded.qr, qr_expires_at = excluded.qr_expires_at,
                    node_id = excluded.node_id, lease_token = excluded.lease_token,
                    updated_at = excluded.updated_at,
                    since = CASE WHEN session_status.state = excluded.state
                                 THEN session_status.since ELSE excluded.since END
              WHERE EXISTS (SELECT 1 FROM session_leases
                             WHERE session_id = $10 AND owner_node = $8 AND token = $11
                               AND expires_at > 0)",
        );
        let done = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(state)
            .bind(fields.jid.as_deref())
            .bind(fields.push_name.as_deref())
            .bind(fields.error.as_deref())
            .bind(fields.qr.as_deref())
            .bind(fields.qr_expires_at)
            .bind(lease.node().as_str())
            .bind(now_ms())
            .bind(lease.session().as_str())
            .bind(lease.token())
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The stored status of one session.
    pub async fn session_status(&self, tenant: &TenantId) -> Result<Option<StoredStatus>> {
        let row = sqlx::query(&session_status_sql(self.kind()))
            .bind(tenant.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(stored_status).transpose()
    }

    /// The stored statuses of `tenants` (a page of the tenant list).
    pub async fn session_statuses_of(
        &self,
        tenants: &[String],
    ) -> Result<HashMap<String, StoredStatus>> {
        if tenants.is_empty() {
            return Ok(HashMap::new());
        }
        let marks: Vec<String> = (1..=tenants.len()).map(|i| format!("${i}")).collect();
        let sql = self.with_now(&format!(
            "SELECT {STATUS_COLUMNS}, s.tenant_id FROM session_status s
               LEFT JOIN session_leases l ON l.session_id = s.tenant_id
              WHERE s.tenant_id IN ({})",
            marks.join(", ")
        ));
        let mut query = sqlx::query(&sql);
        for id in tenants {
            query = query.bind(id.as_str());
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(8)?, stored_status(r)?)))
            .collect()
    }

    /// Every stored session status, by tenant id (the tenant list).
    pub async fn session_statuses(&self) -> Result<HashMap<String, StoredStatus>> {
        let sql = self.with_now(&format!(
            "SELECT {STATUS_COLUMNS}, s.tenant_id FROM session_status s
               LEFT JOIN session_leases l ON l.session_id = s.tenant_id"
        ));
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(8)?, stored_status(r)?)))
            .collect()
    }

    /// How many sessions are in each state, as recorded (for metrics): an
    /// index-only count over `session_status_by_state`.
    pub async fn session_state_counts(&self) -> Result<Vec<(SessionState, i64)>> {
        let rows: Vec<(SessionState, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM session_status GROUP BY state")
                .fetch_all(self.pool())
                .await?;
        Ok(rows)
    }

    /// Gives a tenant without a status row its first one: `connecting` when
    /// its device is linked (so that placement starts it), else `unpaired`.
    /// A row an owner wrote meanwhile is kept.
    pub async fn seed_session_status(&self, tenant: &TenantId, linked: bool) -> Result<()> {
        let state = if linked {
            SessionState::Connecting
        } else {
            SessionState::Unpaired
        };
        sqlx::query(
            "INSERT INTO session_status (tenant_id, state, since, updated_at)
             VALUES ($1, $2, $3, $3) ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(state)
        .bind(now_ms())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Tenants that have no status row yet.
    pub async fn tenants_without_status(&self) -> Result<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT t.id FROM tenants t
              WHERE NOT EXISTS (SELECT 1 FROM session_status s WHERE s.tenant_id = t.id)",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(ids.into_iter().map(TenantId::from_raw).collect())
    }

    /// How many sessions have a linked device (placement spreads these).
    pub async fn count_wanted_sessions(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM session_status WHERE state IN {WANTED}"
        ))
        .fetch_one(self.pool())
        .await?)
    }

    /// Sessions with a linked device that no live lease covers.
    pub async fn unplaced_sessions(&self, limit: i64) -> Result<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar(&unplaced_sql(self.kind()))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(ids.into_iter().map(TenantId::from_raw).collect())
    }

    /// Hands a command to a session's owner; returns its id.
    pub async fn insert_command(
        &self,
        tenant: &TenantId,
        kind: CommandKind,
        argument: Option<&str>,
    ) -> Result<i64> {
        let now = now_ms();
        Ok(sqlx::query_scalar(
            "INSERT INTO session_commands (tenant_id, kind, argument, status, created_at, updated_at)
             VALUES ($1, $2, $3, 'pending', $4, $4) RETURNING id",
        )
        .bind(tenant.as_str())
        .bind(kind)
        .bind(argument)
        .bind(now)
        .fetch_one(self.writer())
        .await?)
    }

    /// Takes the session's pending commands, oldest first, moving them to
    /// `running`; a command expired meanwhile is not taken.
    /// Takes the session's pending commands that are younger than
    /// `max_age`, the longest their requesters wait; older ones are
    /// withdrawn (`expired`) in the same transaction: nobody waits for them
    /// any more (a requester that died never withdrew its own), and a stale
    /// logout must not log a number out hours later.
    pub async fn claim_commands(
        &self,
        tenant: &TenantId,
        max_age: std::time::Duration,
    ) -> Result<Vec<CommandRow>> {
        let now = now_ms();
        let oldest = now - max_age.as_millis() as i64;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE session_commands SET status = 'expired', updated_at = $2
              WHERE tenant_id = $1 AND status = 'pending' AND created_at < $3",
        )
        .bind(tenant.as_str())
        .bind(now)
        .bind(oldest)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "UPDATE session_commands SET status = 'running', updated_at = $2
              WHERE tenant_id = $1 AND status = 'pending' AND created_at >= $3
              RETURNING id, tenant_id, kind, argument, status, result",
        )
        .bind(tenant.as_str())
        .bind(now)
        .bind(oldest)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut commands: Vec<CommandRow> = rows.iter().map(command_row).collect::<Result<_>>()?;
        commands.sort_by_key(|c| c.id);
        Ok(commands)
    }

    /// Tenants with commands nobody has taken yet.
    pub async fn tenants_with_pending_commands(&self) -> Result<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar(PENDING_COMMANDS)
            .fetch_all(self.pool())
            .await?;
        Ok(ids.into_iter().map(TenantId::from_raw).collect())
    }

    /// Records a command's outcome.
    pub async fn finish_command(
        &self,
        id: i64,
        status: CommandStatus,
        result: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE session_commands SET status = $2, result = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(result)
        .bind(now_ms())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Withdraws a command nobody has taken yet; false if it was taken.
    pub async fn expire_command(&self, id: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE session_commands SET status = 'expired', updated_at = $2
              WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(now_ms())
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn get_command(&self, id: i64) -> Result<Option<CommandRow>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, kind, argument, status, result
               FROM session_commands WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(command_row).transpose()
    }

    fn with_now(&self, template: &str) -> String {
        with_now(self.kind(), template)
    }
}

fn with_now(kind: DbKind, template: &str) -> String {
    template.replace("{now}", now_ms_sql(kind))
}

/// One session's status with its owner's liveness: `$1` tenant.
pub(super) fn session_status_sql(kind: DbKind) -> String {
    with_now(
        kind,
        &format!(
            "SELECT {STATUS_COLUMNS} FROM session_status s
               LEFT JOIN session_leases l ON l.session_id = s.tenant_id
              WHERE s.tenant_id = $1"
        ),
    )
}

/// A node's lease renewal: `$1` node, `$2` ttl (ms), `$3` its sessions as a
/// JSON array.
pub(super) fn renew_leases_sql(kind: DbKind) -> String {
    let elements = match kind {
        DbKind::Postgres => "SELECT jsonb_array_elements_text(CAST($3 AS jsonb))",
        DbKind::Sqlite => "SELECT value FROM json_each($3)",
    };
    with_now(
        kind,
        &format!(
            "UPDATE session_leases SET expires_at = {{now}} + $2
              WHERE owner_node = $1 AND expires_at > 0 AND session_id IN ({elements})
              RETURNING session_id"
        ),
    )
}

/// Linked sessions no live lease covers: `$1` how many.
pub(super) fn unplaced_sql(kind: DbKind) -> String {
    with_now(
        kind,
        &format!(
            "SELECT s.tenant_id FROM session_status s
               LEFT JOIN session_leases l ON l.session_id = s.tenant_id
              WHERE s.state IN {WANTED}
                AND (l.session_id IS NULL OR l.expires_at <= {{now}})
              ORDER BY s.tenant_id LIMIT $1"
        ),
    )
}

/// Tenants with commands nobody has taken yet.
pub(super) const PENDING_COMMANDS: &str =
    "SELECT DISTINCT tenant_id FROM session_commands WHERE status = 'pending'";

fn stored_status(r: &sqlx::any::AnyRow) -> Result<StoredStatus> {
    Ok(StoredStatus {
        state: r.try_get(0)?,
        fields: StatusFields {
            jid: r.try_get(1)?,
            push_name: r.try_get(2)?,
            error: r.try_get(3)?,
            qr: r.try_get(4)?,
            qr_expires_at: r.try_get(5)?,
        },
        since: r.try_get(6)?,
        live_owner: r.try_get::<Option<String>, _>(7)?.map(NodeId::new),
    })
}

fn command_row(r: &sqlx::any::AnyRow) -> Result<CommandRow> {
    Ok(CommandRow {
        id: r.try_get(0)?,
        tenant: TenantId::from_raw(r.try_get::<String, _>(1)?),
        kind: r.try_get(2)?,
        argument: r.try_get(3)?,
        status: r.try_get(4)?,
        result: r.try_get(5)?,
    })
}
