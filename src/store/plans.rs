//! The statements on the hot paths, with sample parameters, so that their
//! plans can be checked: each must be served by an index, whatever the
//! size of its table.

use sqlx::Row;

use super::{DbKind, Result, Store, cluster, media, messages, webhooks};

/// A sample parameter.
#[derive(Debug, Clone)]
pub enum Sample {
    Text(&'static str),
    Int(i64),
}

/// A statement the store runs on a hot path.
#[derive(Debug, Clone)]
pub struct HotQuery {
    pub name: &'static str,
    pub sql: String,
    pub params: Vec<Sample>,
    /// The indexes that serve it: one of each group must be in its plan.
    pub indexes: &'static [&'static [&'static str]],
    /// Why it may read rows in proportion to its table, when it does; a
    /// query without one must cost the same at any table size.
    pub grows: Option<&'static str>,
    /// Whether the store runs it as a prepared statement, which Postgres
    /// may come to run with a generic plan; one that is not is planned
    /// for each run with its values.
    pub prepared: bool,
}

impl Store {
    /// The hot paths' statements, exactly as the store runs them.
    pub fn hot_queries(&self) -> Vec<HotQuery> {
        use Sample::{Int, Text};
        let kind = self.kind();
        let q = |name, sql: String, params: Vec<Sample>, indexes| HotQuery {
            name,
            sql,
            params,
            indexes,
            grows: None,
            prepared: true,
        };
        vec![
            q(
                "a queued send's file",
                media::media_of_row_sql(),
                vec![Int(5)],
                &[&["media_pkey", "sqlite_autoindex_media_1"]],
            ),
            q(
                "a sent file, to release",
                media::SENT_FILE.to_owned(),
                vec![Text("t1"), Text("m5")],
                &[
                    &["messages_by_message_id", "messages_once"],
                    &["media_pkey", "sqlite_autoindex_media_1"],
                ],
            ),
            q(
                "files kept longest (retention)",
                media::kept_longest_sql(kind),
                vec![Int(50), Int(100)],
                &[&["media_kept_by_time"]],
            ),
            q(
                "queued sends",
                messages::queued_outbound_sql(kind),
                vec![Text("t1"), Int(50)],
                &[&["messages_queued"]],
            ),
            q(
                "tenants with queued sends",
                messages::tenants_with_queued_sql(kind).to_owned(),
                vec![],
                &[&["messages_queued"]],
            ),
            HotQuery {
                prepared: messages::OUTBOUND_BATCH_PREPARED,
                ..q(
                    "outbound messages by their WhatsApp ids, locked",
                    messages::lock_outbound_sql(kind, 2),
                    vec![Text("t1"), Text("m1"), Text("t2"), Text("m2")],
                    &[&["messages_by_message_id"]],
                )
            },
            HotQuery {
                prepared: messages::OUTBOUND_BATCH_PREPARED,
                ..q(
                    "outbound messages moved to a new status",
                    messages::update_outbound_sql(kind, 2),
                    vec![
                        Int(0),
                        Text("t1"),
                        Text("m1"),
                        Text("sent"),
                        Text("no error"),
                        Text("t2"),
                        Text("m2"),
                        Text("read"),
                        Text("no error"),
                    ],
                    &[&["messages_by_message_id"]],
                )
            },
            q(
                "a message by its WhatsApp id",
                messages::GET_MESSAGE.to_owned(),
                vec![Text("t1"), Text("m1")],
                &[&["messages_by_message_id"]],
            ),
            q(
                "webhook subscriptions of several tenants",
                webhooks::subscriptions_sql(2),
                vec![Text("t1"), Text("t2")],
                &[&[
                    "webhook_endpoints_pkey",
                    "sqlite_autoindex_webhook_endpoints_1",
                ]],
            ),
            q(
                "tenants with webhook deliveries due",
                webhooks::claim_queues_sql(kind),
                vec![Int(1), Text("token"), Int(0), Int(32)],
                &[&["webhook_queues_due"]],
            ),
            q(
                "a tenant's due deliveries",
                webhooks::DUE_DELIVERIES.to_owned(),
                vec![Text("t1"), Int(0), Int(100)],
                &[&["webhook_outbox_pending"], &["webhook_outbox_retrying"]],
            ),
            q(
                "a tenant's next due delivery",
                webhooks::RELEASE_QUEUE.to_owned(),
                vec![Text("t1"), Int(0)],
                &[&["webhook_outbox_pending"], &["webhook_outbox_retrying"]],
            ),
            q(
                "a session's status",
                cluster::session_status_sql(kind),
                vec![Text("t1")],
                &[&["session_status_pkey", "sqlite_autoindex_session_status_1"]],
            ),
            q(
                "a node's renewal (all its leases)",
                cluster::renew_node_sql(kind),
                vec![Text("node-1"), Text("wago:x"), Int(30_000), Int(10)],
                &[&["nodes_pkey", "sqlite_autoindex_nodes_1"]],
            ),
            HotQuery {
                grows: Some(
                    "a walk over the linked sessions from where the last one stopped until \
                     `$1` free ones are found: a full pass when few are free. Placement walks \
                     once at start and then every hour; other rounds take from the \
                     placement queue",
                ),
                ..q(
                    "sessions to place",
                    cluster::unplaced_sql(kind),
                    vec![Int(64), Text("t5")],
                    &[&[
                        "session_status_by_state",
                        "session_status_pkey",
                        "sqlite_autoindex_session_status_1",
                    ]],
                )
            },
            q(
                "sessions taken off the placement queue",
                cluster::take_queued_sql(kind),
                vec![Text("wago:x"), Int(64), Int(30_000)],
                &[&["placement_queue_by_time"]],
            ),
            q(
                "whether a session waits on the placement queue",
                cluster::queue_waiting_sql(kind),
                vec![Int(30_000)],
                &[&[
                    "placement_queue_pkey",
                    "placement_queue_by_time",
                    "sqlite_autoindex_placement_queue_1",
                ]],
            ),
            // Reads the queue whole: the sessions waiting to move, which
            // is why its cost follows them and not the tables.
            q(
                "sessions waiting on the placement queue",
                cluster::COUNT_QUEUED.to_owned(),
                vec![],
                &[&[
                    "placement_queue_pkey",
                    "placement_queue_by_time",
                    "sqlite_autoindex_placement_queue_1",
                ]],
            ),
            q(
                "a released session queued for placement",
                cluster::queue_released_sql(kind),
                vec![Text("t1")],
                &[&["session_status_pkey", "sqlite_autoindex_session_status_1"]],
            ),
            HotQuery {
                grows: Some(
                    "a fenced node's sessions, every one of which moves: its cost follows \
                     the sessions placed elsewhere",
                ),
                ..q(
                    "a fenced node's sessions queued for placement",
                    cluster::queue_held_sql(kind, "l.owner_node = $1 AND l.instance = $2"),
                    vec![Text("node-1"), Text("wago:1")],
                    &[&["session_leases_held"]],
                )
            },
            q(
                "pending commands",
                cluster::PENDING_COMMANDS.to_owned(),
                vec![],
                &[&["session_commands_pending"]],
            ),
        ]
    }

    /// The database's plan for `query`, one line per step. On Postgres
    /// sequential scans are priced out (`enable_seqscan = off`), so a small
    /// test table shows the plan a large one would get.
    pub async fn explain(&self, query: &HotQuery) -> Result<String> {
        let mut tx = self.pool().begin().await?;
        let sql = match self.kind() {
            DbKind::Postgres => {
                sqlx::query("SET LOCAL enable_seqscan = off")
                    .execute(&mut *tx)
                    .await?;
                format!("EXPLAIN {}", query.sql)
            }
            DbKind::Sqlite => format!("EXPLAIN QUERY PLAN {}", query.sql),
        };
        let rows = query.bound(&sql).fetch_all(&mut *tx).await?;
        tx.rollback().await?;
        let column = match self.kind() {
            DbKind::Postgres => 0,
            DbKind::Sqlite => 3,
        };
        let lines: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>(column))
            .collect::<std::result::Result<_, _>>()?;
        Ok(lines.join("\n"))
    }
}

impl Store {
    /// The buffers (8 KiB pages, from cache or disk) Postgres touches to
    /// run `query` once, planning aside: `EXPLAIN (ANALYZE, BUFFERS)` in
    /// a transaction that is rolled back, so a write changes nothing.
    /// `None` on SQLite, which does not count them.
    pub async fn buffers(&self, query: &HotQuery) -> Result<Option<i64>> {
        if self.kind() != DbKind::Postgres {
            return Ok(None);
        }
        let mut tx = self.pool().begin().await?;
        let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", query.sql);
        let rows = query.bound(&sql).fetch_all(&mut *tx).await?;
        tx.rollback().await?;
        let lines: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Some(buffers_in(&lines)))
    }
}

/// The buffers an `EXPLAIN (ANALYZE, BUFFERS)` output says the statement
/// touched: the first `Buffers:` line is the top node's, its children
/// included; the planner's own come after `Planning:`.
pub fn buffers_in(plan: &[String]) -> i64 {
    for line in plan {
        let line = line.trim();
        if line.starts_with("Planning") {
            break;
        }
        if let Some(counts) = line.strip_prefix("Buffers:") {
            return counts
                .split_whitespace()
                .filter_map(|part| part.split_once('='))
                .filter(|(what, _)| matches!(*what, "hit" | "read"))
                .filter_map(|(_, n)| n.parse::<i64>().ok())
                .sum();
        }
    }
    0
}

impl HotQuery {
    /// `sql` (this query's text, perhaps behind `EXPLAIN`) with the
    /// sample parameters bound.
    fn bound<'q>(
        &'q self,
        sql: &'q str,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        self.params
            .iter()
            .fold(sqlx::query(sql), |statement, param| match param {
                Sample::Text(t) => statement.bind(*t),
                Sample::Int(i) => statement.bind(*i),
            })
    }

    /// The sample parameters as SQL literals, `('t1', 50)`, for an
    /// `EXECUTE` of this statement prepared by name (empty without any).
    pub fn literals(&self) -> String {
        if self.params.is_empty() {
            return String::new();
        }
        let values: Vec<String> = self
            .params
            .iter()
            .map(|param| match param {
                Sample::Text(t) => format!("'{}'", t.replace('\'', "''")),
                Sample::Int(i) => i.to_string(),
            })
            .collect();
        format!("({})", values.join(", "))
    }

    /// What is wrong with `plan` for this query, if anything: none of its
    /// indexes is used, or a table is read whole (a Postgres `Seq Scan`, a
    /// SQLite `SCAN table` without an index).
    pub fn fault(&self, plan: &str) -> Option<String> {
        if let Some(group) = self
            .indexes
            .iter()
            .find(|group| !group.iter().any(|i| plan.contains(i)))
        {
            return Some(format!("uses none of {group:?}"));
        }
        // SQLite scans the rows a subquery produced by the subquery's name.
        let subqueries: Vec<&str> = plan
            .lines()
            .map(str::trim)
            .filter_map(|line| {
                line.strip_prefix("CO-ROUTINE ")
                    .or_else(|| line.strip_prefix("MATERIALIZE "))
            })
            .collect();
        let whole_table = plan.lines().map(str::trim).find(|line| {
            line.contains("Seq Scan")
                || line.strip_prefix("SCAN ").is_some_and(|scanned| {
                    !scanned.contains(" USING ")
                        && !scanned.starts_with('(')
                        && !scanned.contains("VIRTUAL TABLE")
                        // The rows a statement names itself.
                        && !scanned.ends_with("VALUES CLAUSE")
                        && !subqueries.contains(&scanned)
                })
        });
        whole_table.map(|line| format!("reads a whole table: {line}"))
    }
}
