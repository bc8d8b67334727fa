//! The database: one [`Store`] over Postgres or SQLite, chosen by the DSN.
//!
//! Every query the rest of WAGO runs lives in this module's files, named
//! after what it does. SQL is written once in the dialect both databases
//! share (`$1` placeholders, `ON CONFLICT`, `RETURNING`); where they differ,
//! a small function asks [`Store::kind`]. Nothing outside `src/store`
//! writes SQL, and nothing here knows about HTTP.
//!
//! [`protocol`] is whatsapp-rust's storage `Backend`, one [`SessionStore`]
//! per WhatsApp session; `lease` decides which node runs a session;
//! `statuses` commits the acks and receipts of all sessions in shared
//! transactions.

mod accepts;
pub mod admin;
mod batch;
pub mod cluster;
pub mod copy;
pub mod fence;
mod lease;
mod link;
mod lock;
pub mod media;
pub mod messages;
pub mod plans;
pub mod protocol;
mod statuses;
pub mod tenants;
pub mod webhooks;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use tokio::sync::Notify;

use crate::types::Dsn;
pub use crate::types::{now_ms, rfc3339};

pub use fence::{Revocation, WriteFence};
pub use lease::{Lease, LeaseHolder, NodeId};
pub use lock::{LockError, ProcessLock};
pub use protocol::{SessionId, SessionStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {dsn}: {source}")]
    Connect {
        dsn: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// True when the statement broke a unique constraint.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sql(sqlx::Error::Database(e)) => e.is_unique_violation(),
            StoreError::Conflict(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// A handle to the database; cheap to clone (it wraps a pool).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where writes go. On a SQLite file, one connection: writers wait
    /// their turn in the pool's queue, handed the connection the moment
    /// it is free, instead of sleeping in SQLite's busy handler. Elsewhere
    /// the same pool as reads.
    writer: AnyPool,
    /// The node's own lease (claim, renewal, fencing others): on Postgres a
    /// small pool apart, so that sessions saturating `pool` cannot make the
    /// node miss a renewal, and not behind the [`WriteFence`]. Elsewhere
    /// the writer.
    control: AnyPool,
    /// Whether this process may still write (see `fence.rs`).
    fence: Arc<WriteFence>,
    kind: DbKind,
    /// Told whenever this process commits webhook events, so the
    /// dispatcher wakes at once instead of at its next poll.
    outbox: Arc<Notify>,
    /// Commits outbound status changes in batches (`statuses.rs`); `None`
    /// in the writer's own copy of the store.
    statuses: Option<Arc<statuses::StatusWriter>>,
    /// Commits the protocol store's writes of all sessions in batches
    /// (`protocol/group.rs`).
    group: Option<Arc<protocol::group::GroupWriter>>,
    /// Writes accepted sends in batches (`accepts.rs`).
    accepts: Option<Arc<accepts::AcceptWriter>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind).finish()
    }
}

impl Store {
    /// Opens a pool on `dsn`. A SQLite file is created if missing and put in
    /// WAL mode, so readers never wait for the writer.
    pub async fn connect(dsn: &Dsn) -> Result<Self> {
        Self::connect_fenced(dsn, Arc::new(WriteFence::new())).await
    }

    /// [`Store::connect`], behind `fence`: the process's own, for a second
    /// database its sessions write to (a tenant's own protocol store).
    pub async fn connect_fenced(dsn: &Dsn, fence: Arc<WriteFence>) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let connect_error = |source| StoreError::Connect {
            dsn: dsn.to_string(),
            source,
        };
        let (url, kind) = match dsn {
            Dsn::Sqlite(path) => (sqlite_url(path), DbKind::Sqlite),
            Dsn::Postgres(url) => (tagged(url, fence.tag()), DbKind::Postgres),
        };
        let options = AnyConnectOptions::from_str(&url).map_err(connect_error)?;
        // The batch writers' own connections (`link.rs`), tagged like the pool's.
        let own = options.clone();
        let in_memory = matches!(dsn, Dsn::Sqlite(p) if p.as_os_str() == ":memory:");
        let pool_options = || {
            let on_connect = fence.clone();
            let on_acquire = fence.clone();
            AnyPoolOptions::new()
                .after_connect(move |conn, _meta| {
                    let fence = on_connect.clone();
                    Box::pin(async move {
                        if !fence.is_open() {
                            return Err(WriteFence::refused());
                        }
                        if kind == DbKind::Sqlite {
                            // sqlx already turns on foreign keys and a 5 s busy
                            // timeout; WAL is ours to ask for.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                        }
                        Ok(())
                    })
                })
                // No ping before a connection is handed out: a round trip
                // per statement. A connection open while the fence was
                // closed may have been cut by another node, so it goes;
                // any other broken one fails the statement that uses it.
                .test_before_acquire(false)
                .before_acquire(move |_conn, meta| {
                    let usable = on_acquire.is_open() && !on_acquire.outlived(meta.age);
                    Box::pin(async move { Ok(usable) })
                })
        };
        let pool = pool_options()
            // Each connection to ":memory:" would be a database of its own.
            .max_connections(if in_memory { 1 } else { 16 })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout((!in_memory).then_some(Duration::from_secs(600)))
            .max_lifetime((!in_memory).then_some(Duration::from_secs(1800)))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(connect_error)?;
        let writer = if kind == DbKind::Sqlite && !in_memory {
            pool_options()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await
                .map_err(connect_error)?
        } else {
            pool.clone()
        };
        let control = match dsn {
            Dsn::Postgres(url) => AnyPoolOptions::new()
                .max_connections(2)
                .idle_timeout(Duration::from_secs(600))
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(
                    AnyConnectOptions::from_str(&tagged(url, &control_tag(fence.tag())))
                        .map_err(connect_error)?,
                ),
            Dsn::Sqlite(_) => writer.clone(),
        };
        let mut store = Store {
            pool,
            writer,
            control,
            fence,
            kind,
            outbox: Arc::new(Notify::new()),
            statuses: None,
            group: None,
            accepts: None,
        };
        let source = match kind {
            DbKind::Postgres => link::Source::Own(own),
            DbKind::Sqlite => link::Source::Pool(store.writer.clone()),
        };
        store.statuses = Some(Arc::new(statuses::StatusWriter::start(
            store.clone(),
            source.clone(),
        )));
        store.accepts = Some(Arc::new(accepts::AcceptWriter::start(
            source.clone(),
            store.fence.clone(),
        )));
        store.group = Some(Arc::new(protocol::group::GroupWriter::start(
            source,
            kind,
            store.fence.clone(),
        )));
        Ok(store)
    }

    /// Applies every pending migration of this database's dialect.
    pub async fn migrate(&self) -> Result<()> {
        match self.kind {
            DbKind::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            DbKind::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Notified after this process commits webhook events.
    pub fn outbox_written(&self) -> Arc<Notify> {
        self.outbox.clone()
    }

    pub(crate) fn wake_outbox(&self) {
        self.outbox.notify_one();
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for statements that write (see [`Store`]'s `writer`).
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// The pool of the node's own lease (see [`Store`]'s `control`).
    pub(crate) fn control(&self) -> &AnyPool {
        &self.control
    }

    /// The protocol store's group writer.
    pub(crate) fn group_writer(&self) -> &protocol::group::GroupWriter {
        self.group
            .as_deref()
            .expect("a connected store has a group writer")
    }

    /// Whether this process may still write.
    pub fn write_fence(&self) -> &Arc<WriteFence> {
        &self.fence
    }

    /// Refuses every write of this process until the node has claimed its
    /// row again. Not on SQLite: there the flock makes this the only
    /// process, and the node's own claim goes through the same writer.
    pub fn close_writes(&self) {
        if self.kind == DbKind::Postgres {
            self.fence.close();
        }
    }

    /// Starts a transaction that will write. On SQLite it takes the write
    /// lock up front (`BEGIN IMMEDIATE`): a transaction that read first and
    /// wrote later could otherwise fail at once with "database is locked"
    /// when another connection wrote in between, instead of waiting.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.kind {
            DbKind::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.writer.begin().await?,
        })
    }

    /// The pools by name, for metrics: `main`, and on SQLite `writer`.
    pub fn pools(&self) -> Vec<(&'static str, &AnyPool)> {
        match self.kind {
            DbKind::Sqlite => vec![("main", &self.pool), ("writer", &self.writer)],
            DbKind::Postgres => vec![("main", &self.pool)],
        }
    }

    /// A round trip to the database, for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(group) = &self.group {
            group.close();
        }
        if let Some(statuses) = &self.statuses {
            statuses.close();
        }
        if let Some(accepts) = &self.accepts {
            accepts.close();
        }
        if self.kind == DbKind::Postgres {
            self.control.close().await;
        }
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// `url` with `application_name` set to `tag`, replacing any it had: the
/// node that fences this process finds its connections by it.
fn tagged(url: &str, tag: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != "application_name")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("application_name", tag);
    parsed.into()
}

/// The tag of the control pool's connections: never cut by a fence.
fn control_tag(tag: &str) -> String {
    format!("{tag}:control")
}

fn sqlite_url(path: &std::path::Path) -> String {
    if path.as_os_str() == ":memory:" {
        "sqlite::memory:".to_owned()
    } else {
        // mode=rwc: create the file on first start.
        format!("sqlite://{}?mode=rwc", path.display())
    }
}
