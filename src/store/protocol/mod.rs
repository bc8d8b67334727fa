//! The WhatsApp protocol store: whatsapp-rust's storage `Backend` on sqlx.
//!
//! A [`SessionStore`] is the store of one WhatsApp session (today: one
//! tenant). It owns every row that session's client keeps: its device and
//! keys, Signal sessions and prekeys, app-state keys and versions, device
//! lists, LID mappings, pending inbound messages and the rest. Every row
//! carries the session id, so many sessions share one database and one pool
//! without seeing each other's data. It implements wacore's traits and
//! nothing else: it knows nothing of tenants, HTTP or the supervisor, and it
//! must not interpret what it stores beyond what the traits ask.
//!
//! Semantics follow wacore's `InMemoryBackend`, the reference: the notes on
//! each method say where SQL does it differently and why. Batched methods are
//! multi-row statements (chunked below the parameter limits, in one
//! transaction), never one round trip per row.

mod appsync;
mod device;
pub(crate) mod group;
mod msg_secrets;
mod pending;
mod protocol_store;
mod signal;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyPool};
use wacore::store::error::StoreError as WaError;
use wacore::store::traits::TcTokenEntry;

use super::{Result as StoreResult, Revocation, Store, WriteFence};
use crate::cache::Remembered;
use crate::tenants::TenantId;

type Result<T, E = WaError> = std::result::Result<T, E>;
type AnyQuery<'q> = sqlx::query::Query<'q, Any, AnyArguments<'q>>;

/// Whose protocol rows these are: one WhatsApp session. A tenant's session
/// is named by the tenant's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// Trusts `raw` like [`TenantId::from_raw`]: an unknown id finds nothing.
    pub fn from_raw(raw: &str) -> Self {
        SessionId(Arc::from(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&TenantId> for SessionId {
    fn from(tenant: &TenantId) -> Self {
        SessionId::from_raw(tenant.as_str())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One session's protocol store: whatsapp-rust's `Backend` over a [`Store`].
/// Cheap to clone; give the client an `Arc` of it.
#[derive(Clone)]
pub struct SessionStore {
    store: Store,
    session: SessionId,
    /// Once revoked, every write is refused (see `fence.rs`).
    revoked: Revocation,
    /// The tc-tokens read lately, by chat (`None`: no row). The client
    /// reads its chat's token before every send, and this session, the
    /// lease's holder, is the only writer of its rows.
    tc_tokens: Arc<Remembered<Option<TcTokenEntry>>>,
    /// Inbound messages awaiting the hook, not yet written (`pending.rs`).
    pending: Arc<pending::Staged>,
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStore")
            .field("session", &self.session)
            .field("kind", &self.store.kind())
            .finish()
    }
}

/// Chats whose tc-token a session remembers at most.
const TC_TOKENS: usize = 256;

/// Every table that holds a session's protocol rows.
pub(crate) const SESSION_TABLES: [&str; 18] = [
    "wa_devices",
    "wa_identities",
    "wa_signal_sessions",
    "wa_prekeys",
    "wa_signed_prekeys",
    "wa_sender_keys",
    "wa_app_state_keys",
    "wa_app_state_versions",
    "wa_app_state_mutation_macs",
    "wa_sender_key_devices",
    "wa_lid_mappings",
    "wa_base_keys",
    "wa_device_lists",
    "wa_group_metadata",
    "wa_tc_tokens",
    "wa_sent_messages",
    "wa_pending_inbound",
    "wa_msg_secrets",
];

impl Store {
    /// The protocol store of `session`, in this database.
    pub fn session_store(&self, session: SessionId) -> SessionStore {
        SessionStore {
            store: self.clone(),
            session,
            revoked: Revocation::default(),
            tc_tokens: Arc::new(Remembered::new(TC_TOKENS)),
            pending: Default::default(),
        }
    }

    /// Deletes every protocol row of `session`, in one transaction. Its
    /// lease stays (a logout keeps the session's fencing token growing). For a tenant in the shared database
    /// [`Store::delete_tenant`] does this itself; a tenant with its own
    /// store DSN needs this called on that database.
    pub async fn delete_protocol_rows(&self, session: &SessionId) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        delete_protocol_rows_in(&mut tx, session).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// [`Store::delete_protocol_rows`] inside a caller's transaction.
pub(super) async fn delete_protocol_rows_in(
    tx: &mut sqlx::Transaction<'_, Any>,
    session: &SessionId,
) -> StoreResult<()> {
    for table in SESSION_TABLES {
        sqlx::query(&format!("DELETE FROM {table} WHERE session_id = $1"))
            .bind(session.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl SessionStore {
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// This store, writing nothing once `revoked` is (a session's run ends
    /// or is fenced, while the client's own tasks may still call it).
    pub fn revocable(mut self, revoked: Revocation) -> Self {
        self.revoked = revoked;
        self
    }

    /// The process's write fence (see `fence.rs`).
    pub fn write_fence(&self) -> &Arc<WriteFence> {
        self.store.write_fence()
    }

    /// A connection to write on, once the session may still write. Checked
    /// after the wait for the connection, right before the statement goes.
    async fn writer_conn(&self) -> Result<sqlx::pool::PoolConnection<Any>> {
        // Fails at once when fenced, rather than in the pool's connect
        // retries, which would hold a fenced session's end for its timeout.
        if !self.write_fence().is_open() {
            return Err(db_error(WriteFence::refused()));
        }
        let conn = self.writer().acquire().await.map_err(db_error)?;
        if self.revoked.is_revoked() {
            return Err(WaError::Connection(Box::new(std::io::Error::other(
                "the session stopped or was fenced off; its store writes nothing more",
            ))));
        }
        Ok(conn)
    }

    fn pool(&self) -> &AnyPool {
        self.store.pool()
    }

    fn writer(&self) -> &AnyPool {
        self.store.writer()
    }

    fn id(&self) -> &str {
        self.session.as_str()
    }

    /// Commits `writes` in one transaction, with what the node's other
    /// sessions write meanwhile (`group.rs`).
    async fn commit(&self, writes: Vec<group::Write>) -> Result<()> {
        if !self.write_fence().is_open() {
            return Err(db_error(WriteFence::refused()));
        }
        if self.revoked.is_revoked() {
            return Err(WaError::Connection(Box::new(std::io::Error::other(
                "the session stopped or was fenced off; its store writes nothing more",
            ))));
        }
        self.store
            .group_writer()
            .write(self.session.clone(), self.revoked.clone(), writes)
            .await
    }

    async fn execute(&self, query: AnyQuery<'_>) -> Result<u64> {
        let mut conn = self.writer_conn().await?;
        let done = query.execute(&mut *conn).await.map_err(db_error)?;
        Ok(done.rows_affected())
    }

    /// A statement that writes and returns a row (`DELETE … RETURNING`).
    async fn take_optional(&self, query: AnyQuery<'_>) -> Result<Option<AnyRow>> {
        let mut conn = self.writer_conn().await?;
        query.fetch_optional(&mut *conn).await.map_err(db_error)
    }

    async fn fetch_optional(&self, query: AnyQuery<'_>) -> Result<Option<AnyRow>> {
        query.fetch_optional(self.pool()).await.map_err(db_error)
    }

    async fn fetch_all(&self, query: AnyQuery<'_>) -> Result<Vec<AnyRow>> {
        query.fetch_all(self.pool()).await.map_err(db_error)
    }

    /// The blob stored under `key` in a [`BlobTable`].
    async fn get_blob<'q, K>(&'q self, table: &BlobTable, key: K) -> Result<Option<Vec<u8>>>
    where
        K: sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send + 'q,
    {
        let query = sqlx::query(table.get).bind(self.id()).bind(key);
        self.fetch_optional(query)
            .await?
            .map(|row| column(&row, 0))
            .transpose()
    }

    async fn put_blob<'q, K>(&'q self, table: &BlobTable, key: K, value: &'q [u8]) -> Result<()>
    where
        K: sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send + 'q,
    {
        let query = sqlx::query(table.upsert.one).bind(self.id()).bind(key);
        self.execute(query.bind(value)).await?;
        Ok(())
    }

    async fn delete_blob<'q, K>(&'q self, table: &BlobTable, key: K) -> Result<()>
    where
        K: sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send + 'q,
    {
        let query = sqlx::query(table.delete).bind(self.id()).bind(key);
        self.execute(query).await?;
        Ok(())
    }

    /// Runs `statement` over `rows`, as few statements as the parameter
    /// limit allows: one on its own (atomic by itself), or several in one
    /// transaction. `bind` binds one row's values (after the session id,
    /// which every row repeats as `$1`); what it binds must come from the
    /// row or be owned.
    async fn write_rows<R>(
        &self,
        statement: &Rows,
        rows: &[&R],
        bind: impl for<'q> Fn(AnyQuery<'q>, &'q R) -> AnyQuery<'q>,
    ) -> Result<()> {
        let per_statement = rows_per_statement(statement.width);
        let mut conn = self.writer_conn().await?;
        if rows.len() <= per_statement {
            return self.write_chunk(statement, rows, &bind, &mut *conn).await;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(db_error)?;
        for chunk in rows.chunks(per_statement) {
            self.write_chunk(statement, chunk, &bind, &mut *tx).await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn write_chunk<'c, R>(
        &self,
        statement: &Rows,
        chunk: &[&R],
        bind: &impl for<'q> Fn(AnyQuery<'q>, &'q R) -> AnyQuery<'q>,
        executor: impl sqlx::Executor<'c, Database = Any>,
    ) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let (width, rows) = (statement.width, chunk.len());
        let sql: Cow<str> = match rows {
            1 => statement.one.into(),
            _ => format!(
                "{}{}{}",
                statement.head,
                values_rows(rows, width),
                statement.tail
            )
            .into(),
        };
        let query = sqlx::query(&sql)
            .bind(self.id())
            .persistent(worth_caching(rows, width));
        let query = chunk.iter().fold(query, |query, row| bind(query, row));
        query.execute(executor).await.map_err(db_error)?;
        Ok(())
    }
}

/// A statement with an `IN ({in})` list, run once per chunk of keys:
/// `$1` is the session id, `$2` the `scope` if given (a collection, say),
/// then the chunk's keys.
struct InList<'a> {
    template: &'static str,
    scope: Option<&'a str>,
}

impl InList<'_> {
    fn sql(&self, keys: usize) -> String {
        let first = if self.scope.is_some() { 3 } else { 2 };
        self.template.replace("{in}", &placeholders(first, keys))
    }

    fn chunk_size(&self) -> usize {
        rows_per_statement(1) - 1
    }
}

impl SessionStore {
    /// Runs `list` over `keys` and returns every row found.
    async fn fetch_in<K>(
        &self,
        list: &InList<'_>,
        keys: &[K],
        bind: impl for<'q> Fn(AnyQuery<'q>, &'q K) -> AnyQuery<'q>,
    ) -> Result<Vec<AnyRow>> {
        let mut rows = Vec::new();
        for chunk in keys.chunks(list.chunk_size()) {
            let sql = list.sql(chunk.len());
            let query = self.in_list_query(list, &sql, chunk, &bind);
            rows.extend(self.fetch_all(query).await?);
        }
        Ok(rows)
    }

    /// Runs `list` (an UPDATE or DELETE) over `keys`: one statement, or
    /// several in one transaction.
    async fn execute_in<K>(
        &self,
        list: &InList<'_>,
        keys: &[K],
        bind: impl for<'q> Fn(AnyQuery<'q>, &'q K) -> AnyQuery<'q>,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        if keys.len() <= list.chunk_size() {
            let sql = list.sql(keys.len());
            let query = self.in_list_query(list, &sql, keys, &bind);
            return self.execute(query).await.map(drop);
        }
        let mut conn = self.writer_conn().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(db_error)?;
        for chunk in keys.chunks(list.chunk_size()) {
            let sql = list.sql(chunk.len());
            let query = self.in_list_query(list, &sql, chunk, &bind);
            query.execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    /// `sql`, the statement of `list` for `chunk`, with every value bound.
    fn in_list_query<'q, K>(
        &'q self,
        list: &InList<'q>,
        sql: &'q str,
        chunk: &'q [K],
        bind: &impl for<'b> Fn(AnyQuery<'b>, &'b K) -> AnyQuery<'b>,
    ) -> AnyQuery<'q> {
        let mut query = sqlx::query(sql).bind(self.id()).persistent(false);
        if let Some(scope) = list.scope {
            query = query.bind(scope);
        }
        chunk.iter().fold(query, bind)
    }
}

/// The statements of a table that maps `(session_id, key)` to one blob.
struct BlobTable {
    get: &'static str,
    delete: &'static str,
    upsert: Rows,
}

/// A statement over a list of rows, like `INSERT ... VALUES <rows> ON
/// CONFLICT ...`: the text before and after the rows, plus the statement
/// for one row. Rows start with `$1`, the session id, followed by `width`
/// values of their own.
struct Rows {
    head: &'static str,
    tail: &'static str,
    width: usize,
    one: &'static str,
}

/// A [`BlobTable`] from the table and its key and value columns; the SQL is
/// spelled out at compile time so the hot single-row paths allocate nothing.
macro_rules! blob_table {
    ($table:literal, $key:literal, $value:literal) => {
        $crate::store::protocol::BlobTable {
            get: concat!(
                "SELECT ",
                $value,
                " FROM ",
                $table,
                " WHERE session_id = $1 AND ",
                $key,
                " = $2"
            ),
            delete: concat!(
                "DELETE FROM ",
                $table,
                " WHERE session_id = $1 AND ",
                $key,
                " = $2"
            ),
            upsert: $crate::store::protocol::rows!(
                concat!(
                    "INSERT INTO ",
                    $table,
                    " (session_id, ",
                    $key,
                    ", ",
                    $value,
                    ") VALUES "
                ),
                concat!(
                    " ON CONFLICT (session_id, ",
                    $key,
                    ") DO UPDATE SET ",
                    $value,
                    " = excluded.",
                    $value
                ),
                2
            ),
        }
    };
}

/// [`Rows`] from its head, its tail and the width of a row.
macro_rules! rows {
    ($head:expr, $tail:expr, 2) => {
        $crate::store::protocol::rows!(@ $head, $tail, 2, "($1, $2, $3)")
    };
    ($head:expr, $tail:expr, 3) => {
        $crate::store::protocol::rows!(@ $head, $tail, 3, "($1, $2, $3, $4)")
    };
    ($head:expr, $tail:expr, 4) => {
        $crate::store::protocol::rows!(@ $head, $tail, 4, "($1, $2, $3, $4, $5)")
    };
    ($head:expr, $tail:expr, 5) => {
        $crate::store::protocol::rows!(@ $head, $tail, 5, "($1, $2, $3, $4, $5, $6)")
    };
    ($head:expr, $tail:expr, 6) => {
        $crate::store::protocol::rows!(@ $head, $tail, 6, "($1, $2, $3, $4, $5, $6, $7)")
    };
    (@ $head:expr, $tail:expr, $width:literal, $row:literal) => {
        $crate::store::protocol::Rows {
            head: $head,
            tail: $tail,
            width: $width,
            one: concat!($head, $row, $tail),
        }
    };
}
pub(crate) use {blob_table, rows};

/// Both databases take thousands of parameters per statement (SQLite
/// 32766, Postgres 65535); staying below 1000 keeps statements small and
/// works with any SQLite build.
const MAX_PARAMS: usize = 999;

fn rows_per_statement(width: usize) -> usize {
    ((MAX_PARAMS - 1) / width).max(1)
}

/// sqlx keeps 100 prepared statements per connection. A batch of any
/// length makes a statement of its own, so only the common shapes are kept
/// (small batches and full chunks), leaving room for the single-row ones.
fn worth_caching(rows: usize, width: usize) -> bool {
    rows <= 4 || rows == rows_per_statement(width)
}

/// `($1, $2, $3), ($1, $4, $5)`: `rows` rows of the session id and `width`
/// values each.
fn values_rows(rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * (width * 6 + 6));
    let mut next = 2;
    for row in 0..rows {
        sql.push_str(if row == 0 { "($1" } else { ", ($1" });
        for _ in 0..width {
            sql.push_str(&format!(", ${next}"));
            next += 1;
        }
        sql.push(')');
    }
    sql
}

/// `$first, $first+1, ...`: `count` placeholders, for an `IN (...)` list.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The last row for each key, in first-seen order. Postgres refuses an
/// upsert that touches one row twice, and a later row overwrites an
/// earlier one anyway (as in the reference store).
fn last_per_key<'r, R, K: Eq + Hash>(rows: &'r [R], key: impl Fn(&'r R) -> K) -> Vec<&'r R> {
    let mut slot: HashMap<K, usize> = HashMap::with_capacity(rows.len());
    let mut kept: Vec<&R> = Vec::with_capacity(rows.len());
    for row in rows {
        match slot.get(&key(row)) {
            Some(&i) => kept[i] = row,
            None => {
                slot.insert(key(row), kept.len());
                kept.push(row);
            }
        }
    }
    kept
}

/// Reads column `index` of `row`; a value of the wrong type is corrupt data.
fn column<'r, T>(row: &'r AnyRow, index: usize) -> Result<T>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    use sqlx::Row;
    row.try_get(index).map_err(db_error)
}

/// A stored integer that must fit `T` (ids are u32, flags 0 or 1).
fn narrow<T: TryFrom<i64>>(value: i64, what: &str) -> Result<T> {
    T::try_from(value).map_err(|_| corrupt(format!("{what} out of range: {value}")))
}

fn corrupt(message: String) -> WaError {
    WaError::Validation(message)
}

fn json_error(e: serde_json::Error) -> WaError {
    WaError::Serialization(Box::new(e))
}

/// Maps sqlx's errors onto wacore's: lost connections apart from failed
/// statements, and undecodable values as serialisation errors.
fn db_error(e: sqlx::Error) -> WaError {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => WaError::Connection(Box::new(e)),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            WaError::Serialization(Box::new(e))
        }
        _ => WaError::Database(Box::new(e)),
    }
}

/// Unix seconds, the unit whatsapp-rust's expiry cut-offs use.
fn now_secs() -> i64 {
    super::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_rows_repeat_the_session_and_number_the_rest() {
        assert_eq!(values_rows(1, 2), "($1, $2, $3)");
        assert_eq!(values_rows(2, 1), "($1, $2), ($1, $3)");
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }

    #[test]
    fn chunks_stay_below_the_parameter_limit() {
        for width in 1..=6 {
            // The session id is one more parameter.
            assert!(rows_per_statement(width) * width < MAX_PARAMS);
        }
    }

    #[test]
    fn last_per_key_keeps_the_last_value_in_first_seen_order() {
        let rows = [("a", 1), ("b", 2), ("a", 3)];
        let kept = last_per_key(&rows, |r| r.0);
        assert_eq!(kept, [&("a", 3), &("b", 2)]);
    }
}
