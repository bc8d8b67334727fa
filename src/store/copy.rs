//! Copying a whole database to another (`wago migrate-db`): SQLite to
//! Postgres as a deployment grows, or back.
//!
//! Both dialects' migrations make the same tables with the same columns,
//! so a row is read from the source by the target's column list and kinds,
//! and written in multi-row inserts, table by table in an order that
//! satisfies the foreign keys. Rows that describe running processes rather
//! than data (live nodes, their session leases, commands in flight) are not
//! copied: the servers started on the target make their own.

use futures_util::TryStreamExt;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{DbKind, Result, Store, StoreError};

/// The tables of the control plane that hold data, parents before
/// children.
const CONTROL_TABLES: &[&str] = &[
    "settings",
    "admin_sessions",
    "tenants",
    "api_keys",
    "messages",
    "media",
    "webhook_endpoints",
    "webhook_outbox",
    "webhook_attempts",
    "webhook_queues",
    "session_status",
];

/// Every table that holds data, in an order that satisfies the foreign
/// keys: the control plane's, then the WhatsApp protocol store's.
pub fn copied_tables() -> Vec<&'static str> {
    CONTROL_TABLES
        .iter()
        .chain(super::protocol::SESSION_TABLES.iter())
        .copied()
        .collect()
}

/// Tables of running processes, left behind: live nodes, the leases they
/// hold, commands between them.
pub const SKIPPED_TABLES: &[&str] = &[
    "nodes",
    "session_leases",
    "session_commands",
    "placement_queue",
];

/// How a column's values are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Integer,
    Text,
    Bytes,
}

impl ColumnKind {
    /// From a declared type: Postgres' `information_schema` names or
    /// SQLite's declarations (by SQLite's own affinity rules).
    fn of(declared: &str) -> std::result::Result<Self, String> {
        let t = declared.to_ascii_lowercase();
        if t.contains("int") {
            Ok(ColumnKind::Integer)
        } else if t.contains("char") || t.contains("text") || t.contains("clob") {
            Ok(ColumnKind::Text)
        } else if t.contains("blob") || t == "bytea" {
            Ok(ColumnKind::Bytes)
        } else {
            Err(format!(
                "a column of type {declared:?}, which the copy does not know"
            ))
        }
    }
}

/// Parameters in one multi-row insert, under both databases' limits.
const MAX_PARAMS: usize = 900;

impl Store {
    /// The tables of this database, migrations' bookkeeping aside.
    pub async fn table_names(&self) -> Result<Vec<String>> {
        let sql = match self.kind() {
            DbKind::Postgres => {
                "SELECT table_name::text FROM information_schema.tables
                  WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
                    AND table_name <> '_sqlx_migrations' ORDER BY 1"
            }
            DbKind::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table'
                    AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY 1"
            }
        };
        Ok(sqlx::query_scalar(sql).fetch_all(self.pool()).await?)
    }

    /// A table's columns, in order, with how to copy each.
    pub async fn columns(&self, table: &str) -> Result<Vec<(String, ColumnKind)>> {
        let rows: Vec<(String, String)> = match self.kind() {
            DbKind::Postgres => {
                sqlx::query_as(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns
                      WHERE table_schema = current_schema() AND table_name = $1
                      ORDER BY ordinal_position",
                )
                .bind(table)
                .fetch_all(self.pool())
                .await?
            }
            DbKind::Sqlite => {
                sqlx::query_as("SELECT name, type FROM pragma_table_info($1) ORDER BY cid")
                    .bind(table)
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.into_iter()
            .map(|(name, declared)| {
                ColumnKind::of(&declared)
                    .map(|kind| (name, kind))
                    .map_err(|e| StoreError::Conflict(format!("{table}.{e}")))
            })
            .collect()
    }

    pub async fn count_rows(&self, table: &str) -> Result<i64> {
        Ok(
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quoted(table)))
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Deletes every row of `tables`, children first, in one transaction.
    pub async fn clear_tables(&self, tables: &[&str]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for table in tables.iter().rev() {
            sqlx::query(&format!("DELETE FROM {}", quoted(table)))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Copies every row of `table` from `source` into this (empty) table,
    /// in one transaction; `progress` hears the running count after each
    /// batch. Returns the number of rows copied.
    pub async fn copy_table_from(
        &self,
        source: &Store,
        table: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<u64> {
        let columns = self.columns(table).await?;
        if columns.is_empty() {
            return Err(StoreError::Conflict(format!(
                "the target has no table {table}"
            )));
        }
        let names: Vec<String> = columns.iter().map(|(n, _)| quoted(n)).collect();
        let select = format!("SELECT {} FROM {}", names.join(", "), quoted(table));
        let per_batch = (MAX_PARAMS / columns.len()).max(1);
        let mut rows = sqlx::query(&select).fetch(source.pool());
        let mut tx = self.begin_write().await?;
        let mut batch: Vec<AnyRow> = Vec::with_capacity(per_batch);
        let mut copied = 0u64;
        loop {
            let next = rows.try_next().await?;
            let done = next.is_none();
            if let Some(row) = next {
                batch.push(row);
            }
            if batch.len() == per_batch || (done && !batch.is_empty()) {
                insert_rows(&mut tx, table, &names, &columns, &batch).await?;
                copied += batch.len() as u64;
                batch.clear();
                progress(copied);
            }
            if done {
                break;
            }
        }
        tx.commit().await?;
        Ok(copied)
    }

    /// After rows came with their ids: each identity column's next value
    /// follows the largest id copied (Postgres; SQLite's AUTOINCREMENT
    /// follows by itself).
    pub async fn reset_identities(&self) -> Result<()> {
        if self.kind() != DbKind::Postgres {
            return Ok(());
        }
        let identities: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
              WHERE table_schema = current_schema()
                AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')",
        )
        .fetch_all(self.pool())
        .await?;
        for (table, column) in identities {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                               COALESCE((SELECT MAX({c}) FROM {t}), 0) + 1, false)",
                t = quoted(&table),
                c = quoted(&column),
            );
            sqlx::query(&sql).execute(self.writer()).await?;
        }
        Ok(())
    }
}

async fn insert_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &str,
    names: &[String],
    columns: &[(String, ColumnKind)],
    rows: &[AnyRow],
) -> Result<()> {
    let width = columns.len();
    let values: Vec<String> = (0..rows.len())
        .map(|r| {
            let marks: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", marks.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        quoted(table),
        names.join(", "),
        values.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for row in rows {
        for (i, (name, kind)) in columns.iter().enumerate() {
            let read = |e: sqlx::Error| {
                StoreError::Conflict(format!("cannot read {table}.{name} from the source: {e}"))
            };
            query = match kind {
                ColumnKind::Integer => query.bind(row.try_get::<Option<i64>, _>(i).map_err(read)?),
                ColumnKind::Text => query.bind(row.try_get::<Option<String>, _>(i).map_err(read)?),
                ColumnKind::Bytes => {
                    query.bind(row.try_get::<Option<Vec<u8>>, _>(i).map_err(read)?)
                }
            };
        }
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// A table or column name as an identifier. Names come from the
/// database's own catalogue, never from a request.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
