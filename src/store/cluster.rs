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
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;

use super::lease::{LIVE, now_ms_sql, ttl_ms};
use super::{DbKind, Lease, NodeId, Result, Store, now_ms};
use crate::tenants::TenantId;
use crate::types::SessionState;

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
    /// Sessions it runs, as of its last renewal.
    pub sessions: i64,
    /// It is shutting down: placement gives it nothing more.
    pub leaving: bool,
}

/// The outcome of claiming a node's row at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This instance holds it now, until the database's clock passes
    /// `expires_at` (unix ms) unless renewed.
    Claimed { expires_at: i64 },
    /// Another process holds it and its claim has not lapsed.
    Held(NodeClaim),
}

/// Another process's hold on a node's row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeClaim {
    pub instance: String,
    pub address: String,
    /// Its last renewal (unix ms, database clock).
    pub heartbeat_at: i64,
    /// Milliseconds until its claim lapses unless renewed.
    pub expires_in_ms: i64,
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

/// The status row `s` describes a running session: the lease it was
/// written under is still held, by a live node (see `STATUS_JOINS`).
macro_rules! owner_live {
    () => {
        "l.held > 0 AND l.owner_node = s.node_id AND l.token = s.lease_token
         AND n.expires_at > {now}"
    };
}

const STATUS_COLUMNS: &str = concat!(
    "s.state, s.jid, s.push_name, s.error, s.qr, s.qr_expires_at, s.since,
     CASE WHEN ",
    owner_live!(),
    " THEN s.node_id END"
);

/// The lease `l` of status row `s`, with its holder's node row `n`.
const STATUS_JOINS: &str = "LEFT JOIN session_leases l ON l.session_id = s.tenant_id
    LEFT JOIN nodes n ON n.id = l.owner_node AND n.instance = l.instance";

impl Store {
    /// Claims `node`'s row for this process's `instance`, live for `ttl`.
    /// It succeeds when the row is new, when this instance holds it, or when
    /// the previous holder lapsed and was fenced (this fences it first).
    /// The leases the node held before (under any instance) are released in
    /// the same transaction: whatever ran them is gone or has stopped them.
    /// While another process holds the row, nothing changes and its claim
    /// is returned.
    pub async fn claim_node(
        &self,
        node: &NodeId,
        instance: &str,
        address: &str,
        started_at: i64,
        ttl: Duration,
    ) -> Result<Claim> {
        if self.kind() == DbKind::Postgres
            && let Some(held) = self.node_claim(node).await?
            && held.instance != instance
            && held.expires_in_ms <= 0
        {
            self.fence_node(node, &held.instance).await?;
        }
        let claim = self
            .with_now(
                "INSERT INTO nodes (id, instance, address, started_at, heartbeat_at, expires_at,
                                fenced, leaving, sessions)
             VALUES ($1, $2, $3, $4, {now}, {now} + $5, 0, 0, 0)
             ON CONFLICT (id) DO UPDATE
                SET instance = excluded.instance, address = excluded.address,
                    started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                    expires_at = excluded.expires_at, fenced = 0, leaving = 0, sessions = 0
              WHERE nodes.instance = excluded.instance
                 OR (nodes.expires_at <= excluded.heartbeat_at AND nodes.fenced = 1)
                 OR {only_process}
             RETURNING expires_at",
            )
            // On SQLite the flock already proved the previous process gone.
            .replace(
                "{only_process}",
                if self.kind() == DbKind::Sqlite {
                    "1 = 1"
                } else {
                    "1 = 0"
                },
            );
        let mut tx = self.control().begin().await?;
        let expires_at: Option<i64> = sqlx::query_scalar(&claim)
            .bind(node.as_str())
            .bind(instance)
            .bind(address)
            .bind(started_at)
            .bind(ttl_ms(ttl))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(expires_at) = expires_at else {
            tx.rollback().await?;
            // Deleted meanwhile (an empty claim): the next try inserts it.
            let held = self.node_claim(node).await?.unwrap_or_default();
            return Ok(Claim::Held(held));
        };
        sqlx::query(&queue_held_sql(self.kind(), "l.owner_node = $1"))
            .bind(node.as_str())
            .execute(&mut *tx)
            .await?;
        let released =
            sqlx::query("UPDATE session_leases SET held = 0 WHERE owner_node = $1 AND held > 0")
                .bind(node.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        if released > 0 {
            tracing::info!(%node, sessions = released, "released the leases of this node's previous run");
        }
        Ok(Claim::Claimed { expires_at })
    }

    /// Who holds `node`'s row, if anyone ever did.
    pub async fn node_claim(&self, node: &NodeId) -> Result<Option<NodeClaim>> {
        let sql = self.with_now(
            "SELECT instance, address, heartbeat_at, expires_at - {now} FROM nodes WHERE id = $1",
        );
        let row = sqlx::query(&sql)
            .bind(node.as_str())
            .fetch_optional(self.control())
            .await?;
        row.map(|r| {
            Ok(NodeClaim {
                instance: r.try_get(0)?,
                address: r.try_get(1)?,
                heartbeat_at: r.try_get(2)?,
                expires_in_ms: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Renews this node's claim, and with it every session lease it holds,
    /// for `ttl`: one row, however many sessions. On SQLite, where the flock
    /// makes this the only process, a late renewal still counts (unless
    /// another node fenced it meanwhile, which only a test can do). `sessions` is how many it
    /// runs, for placement. Returns when the claim now ends (unix ms,
    /// database clock), or `None` if it had lapsed or another process holds
    /// the row: then every session here must stop, and the node claim
    /// again.
    pub async fn renew_node(
        &self,
        node: &NodeId,
        instance: &str,
        ttl: Duration,
        sessions: i64,
    ) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(&renew_node_sql(self.kind()))
            .bind(node.as_str())
            .bind(instance)
            .bind(ttl_ms(ttl))
            .bind(sessions)
            .fetch_optional(self.control())
            .await?)
    }

    /// Cuts the database connections of `node`'s lapsed `instance` and
    /// waits until they are gone, then marks it fenced: from then on its
    /// sessions may be taken, and nothing it sent before can still land
    /// (see `fence.rs`). False if the claim is live again, or the
    /// connections did not end in time.
    pub async fn fence_node(&self, node: &NodeId, instance: &str) -> Result<bool> {
        let lapsed = self.with_now(
            "SELECT COUNT(*) FROM nodes WHERE id = $1 AND instance = $2 AND expires_at <= {now}",
        );
        let still_lapsed: i64 = sqlx::query_scalar(&lapsed)
            .bind(node.as_str())
            .bind(instance)
            .fetch_one(self.control())
            .await?;
        if still_lapsed == 0 {
            return Ok(false);
        }
        if !self.cut_connections(instance).await? {
            tracing::warn!(%node, %instance, "a connection of a lapsed node did not end in time");
            return Ok(false);
        }
        let mark = self.with_now(
            "UPDATE nodes SET fenced = 1
              WHERE id = $1 AND instance = $2 AND expires_at <= {now}",
        );
        // Its sessions go on the placement queue with the mark.
        let mut tx = self.control().begin().await?;
        let done = sqlx::query(&mark)
            .bind(node.as_str())
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(&queue_held_sql(
            self.kind(),
            "l.owner_node = $1 AND l.instance = $2",
        ))
        .bind(node.as_str())
        .bind(instance)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends the database connections tagged `instance` (a process's, see
    /// `fence.rs`) and waits until they are gone, up to 5 s each; false if
    /// one outlived that. Nothing to do on SQLite, which has one process.
    pub async fn cut_connections(&self, instance: &str) -> Result<bool> {
        if self.kind() != DbKind::Postgres || instance.is_empty() {
            return Ok(true);
        }
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
              WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(instance)
        .fetch_all(self.control())
        .await?;
        if !ended.is_empty() {
            tracing::warn!(%instance, connections = ended.len(), "cut the database connections of a lapsed node");
        }
        Ok(ended.iter().all(|e| *e))
    }

    /// Fences every node whose claim lapsed while it held sessions (one
    /// query over the few node rows); returns how many were fenced.
    pub async fn fence_lapsed_nodes(&self) -> Result<usize> {
        let sql = self
            .with_now("SELECT id, instance FROM nodes WHERE expires_at <= {now} AND fenced = 0");
        let lapsed: Vec<(String, String)> = sqlx::query_as(&sql).fetch_all(self.control()).await?;
        let mut fenced = 0;
        for (id, instance) in lapsed {
            if self.fence_node(&NodeId::new(id), &instance).await? {
                fenced += 1;
            }
        }
        Ok(fenced)
    }

    /// Milliseconds until another node's claim lapses unless it renews:
    /// then its sessions become free to take.
    pub async fn next_lapse(&self, node: &NodeId) -> Result<Option<i64>> {
        let sql = self.with_now(
            "SELECT MIN(expires_at) - {now} FROM nodes WHERE expires_at > {now} AND id <> $1",
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(node.as_str())
            .fetch_one(self.pool())
            .await?)
    }

    /// Forgets nodes gone for a day, and commands untouched for an hour
    /// (finished, or left by a node that died).
    pub async fn prune_cluster_rows(&self) -> Result<()> {
        let now = now_ms();
        sqlx::query("DELETE FROM nodes WHERE expires_at < $1 AND fenced = 1")
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

    /// Says this node is shutting down: placement elsewhere stops giving
    /// it sessions and counting it, while it still holds (and renews) the
    /// ones it is closing.
    pub async fn mark_node_leaving(&self, node: &NodeId, instance: &str) -> Result<()> {
        sqlx::query("UPDATE nodes SET leaving = 1 WHERE id = $1 AND instance = $2")
            .bind(node.as_str())
            .bind(instance)
            .execute(self.control())
            .await?;
        Ok(())
    }

    /// Marks this node gone at once (a clean shutdown, every session
    /// closed): nothing of it remains to fence.
    pub async fn leave_node(&self, node: &NodeId, instance: &str) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET expires_at = 0, fenced = 1, sessions = 0
              WHERE id = $1 AND instance = $2",
        )
        .bind(node.as_str())
        .bind(instance)
        .execute(self.control())
        .await?;
        Ok(())
    }

    /// The live nodes, by id, with how many sessions each runs.
    pub async fn live_nodes(&self) -> Result<Vec<NodeInfo>> {
        let sql = self.with_now(
            "SELECT id, address, started_at, heartbeat_at, sessions, leaving
               FROM nodes WHERE expires_at > {now} ORDER BY id",
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
                    leaving: r.try_get::<i64, _>(5)? > 0,
                })
            })
            .collect()
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
            &"INSERT INTO session_status (tenant_id, state, jid, push_name, error, qr,
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
              WHERE EXISTS (SELECT 1 FROM session_leases l
                             WHERE l.session_id = $10 AND l.owner_node = $8
                               AND l.instance = $12 AND l.token = $11 AND {live})"
                .replace("{live}", LIVE),
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
            .bind(lease.instance())
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
            "SELECT {STATUS_COLUMNS}, s.tenant_id FROM session_status s {STATUS_JOINS}
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
            "SELECT {STATUS_COLUMNS}, s.tenant_id FROM session_status s {STATUS_JOINS}"
        ));
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(8)?, stored_status(r)?)))
            .collect()
    }

    /// How many sessions are in each state as every node reports them
    /// (`SessionView::of`): a row whose owner's lease is no longer live
    /// counts as `disconnected` (or `unpaired`, if it was pairing). One
    /// pass over the status rows with their leases, for the admin list
    /// and metrics.
    pub async fn session_state_counts(&self) -> Result<Vec<(SessionState, i64)>> {
        let sql = self.with_now(&format!(
            "SELECT CASE WHEN {live} THEN s.state
                         WHEN s.state = 'pairing' THEN 'unpaired'
                         WHEN s.state IN {WANTED} THEN 'disconnected'
                         ELSE s.state END AS shown,
                    COUNT(*)
               FROM session_status s {STATUS_JOINS}
              GROUP BY shown",
            live = owner_live!(),
        ));
        let rows: Vec<(SessionState, i64)> = sqlx::query_as(&sql).fetch_all(self.pool()).await?;
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
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO session_status (tenant_id, state, since, updated_at)
             VALUES ($1, $2, $3, $3) ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(state)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query(&queue_released_sql(self.kind()))
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
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

    /// How many sessions wait on the placement queue, taken or not (a
    /// taken one is not yet counted by its taker's node row). Reads the
    /// queue, so it costs what is waiting to move.
    pub async fn count_queued_sessions(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(COUNT_QUEUED)
            .fetch_one(self.pool())
            .await?)
    }

    /// Up to `limit` sessions with a linked device that no live lease
    /// covers, by id, after `after` if given (where the last look stopped).
    pub async fn unplaced_sessions(
        &self,
        limit: i64,
        after: Option<&str>,
    ) -> Result<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar(&unplaced_sql(self.kind()))
            .bind(limit)
            .bind(after.unwrap_or(""))
            .fetch_all(self.pool())
            .await?;
        Ok(ids.into_iter().map(TenantId::from_raw).collect())
    }

    /// Takes up to `limit` sessions off the placement queue for
    /// `instance` to start, oldest first: rows nobody took, or took more
    /// than `retake_after` ago (the taker died before it held the lease).
    /// A row leaves the queue when its lease is taken.
    pub async fn take_queued_sessions(
        &self,
        instance: &str,
        limit: i64,
        retake_after: Duration,
    ) -> Result<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar(&take_queued_sql(self.kind()))
            .bind(instance)
            .bind(limit)
            .bind(ttl_ms(retake_after))
            .fetch_all(self.writer())
            .await?;
        Ok(ids.into_iter().map(TenantId::from_raw).collect())
    }

    /// Whether a session waits on the placement queue that a node may
    /// take now: untaken, or taken more than `retake_after` ago.
    pub async fn queue_waiting(&self, retake_after: Duration) -> Result<bool> {
        let waiting: Option<i32> = sqlx::query_scalar(&queue_waiting_sql(self.kind()))
            .bind(ttl_ms(retake_after))
            .fetch_optional(self.pool())
            .await?;
        Ok(waiting.is_some())
    }

    /// Puts rows `instance` took back on the queue for any node to take
    /// at once: sessions it took but cannot start now (its own task for
    /// one is still closing).
    pub async fn give_back_queued(&self, instance: &str, tenants: &[TenantId]) -> Result<()> {
        for tenant in tenants {
            sqlx::query(
                "UPDATE placement_queue SET taken_by = NULL, taken_at = NULL
                  WHERE tenant_id = $1 AND taken_by = $2",
            )
            .bind(tenant.as_str())
            .bind(instance)
            .execute(self.writer())
            .await?;
        }
        Ok(())
    }

    /// Drops the session's queue row if a node holds its lease live (a row
    /// left behind by a crash between taking the lease and dropping it).
    pub async fn drop_placed(&self, tenant: &TenantId) -> Result<()> {
        sqlx::query(&self.with_now(&format!(
            "DELETE FROM placement_queue
              WHERE tenant_id = $1
                AND EXISTS (SELECT 1 FROM session_leases l WHERE l.session_id = $1 AND {LIVE})"
        )))
        .bind(tenant.as_str())
        .execute(self.writer())
        .await?;
        Ok(())
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
            "SELECT {STATUS_COLUMNS} FROM session_status s {STATUS_JOINS}
              WHERE s.tenant_id = $1"
        ),
    )
}

/// A node's renewal: `$1` node, `$2` instance, `$3` ttl (ms), `$4` how
/// many sessions it runs.
pub(super) fn renew_node_sql(kind: DbKind) -> String {
    let in_time = match kind {
        DbKind::Postgres => "AND expires_at > {now}",
        DbKind::Sqlite => "AND fenced = 0",
    };
    with_now(
        kind,
        &format!(
            "UPDATE nodes SET heartbeat_at = {{now}}, expires_at = {{now}} + $3, sessions = $4
              WHERE id = $1 AND instance = $2 {in_time}
              RETURNING expires_at"
        ),
    )
}

/// Linked sessions no live lease covers: `$1` how many, `$2` after which
/// id (`''` for the first).
pub(super) fn unplaced_sql(kind: DbKind) -> String {
    with_now(
        kind,
        &format!(
            "SELECT s.tenant_id FROM session_status s
              WHERE s.state IN {WANTED} AND s.tenant_id > $2
                AND NOT EXISTS (SELECT 1 FROM session_leases l
                                 WHERE l.session_id = s.tenant_id AND {LIVE})
              ORDER BY s.tenant_id LIMIT $1"
        ),
    )
}

/// Puts the held leases that `filter` (a condition on `l`, binding `$1`
/// and maybe `$2`) chooses on the placement queue, those with a linked
/// device.
pub(super) fn queue_held_sql(kind: DbKind, filter: &str) -> String {
    with_now(
        kind,
        &format!(
            "INSERT INTO placement_queue (tenant_id, queued_at)
             SELECT l.session_id, {{now}} FROM session_leases l
              WHERE {filter} AND l.held > 0
                AND EXISTS (SELECT 1 FROM session_status s
                             WHERE s.tenant_id = l.session_id AND s.state IN {WANTED})
             ON CONFLICT (tenant_id) DO NOTHING"
        ),
    )
}

/// Queues session `$1` for placement if it has a linked device.
pub(super) fn queue_released_sql(kind: DbKind) -> String {
    with_now(
        kind,
        &format!(
            "INSERT INTO placement_queue (tenant_id, queued_at)
             SELECT tenant_id, {{now}} FROM session_status
              WHERE tenant_id = $1 AND state IN {WANTED}
             ON CONFLICT (tenant_id) DO NOTHING"
        ),
    )
}

/// Takes up to `$2` queue rows for instance `$1`: untaken, or taken more
/// than `$3` ms ago. The outer condition is checked again on a row another
/// node took meanwhile, so no row goes to two nodes at once.
pub(super) fn take_queued_sql(kind: DbKind) -> String {
    // SQLite's planner would read the (small) table rather than look up
    // the few ids; it is told to look them up.
    let table = match kind {
        DbKind::Postgres => "placement_queue",
        DbKind::Sqlite => "placement_queue INDEXED BY sqlite_autoindex_placement_queue_1",
    };
    with_now(
        kind,
        &format!(
            "UPDATE {table} SET taken_by = $1, taken_at = {{now}}
          WHERE tenant_id IN (SELECT tenant_id FROM placement_queue
                               WHERE taken_by IS NULL OR taken_at < {{now}} - $3
                               ORDER BY queued_at LIMIT $2)
            AND (taken_by IS NULL OR taken_at < {{now}} - $3)
         RETURNING tenant_id"
        ),
    )
}

/// One row of the queue a node may take now (`$1`: the age after which a
/// taken row may be taken again, in ms).
pub(super) fn queue_waiting_sql(kind: DbKind) -> String {
    with_now(
        kind,
        "SELECT 1 FROM placement_queue
          WHERE taken_by IS NULL OR taken_at < {now} - $1
          ORDER BY queued_at LIMIT 1",
    )
}

/// The sessions on the placement queue.
pub(super) const COUNT_QUEUED: &str = "SELECT COUNT(*) FROM placement_queue";

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
