//! The connection a batch writer writes on.
//!
//! The group writers (`statuses.rs`, `protocol/group.rs`) commit one batch
//! at a time. On Postgres each keeps a connection of its own: a pooled one
//! would be pinged by sqlx each time it went back, a round trip per batch.
//! That connection carries the process's tag like the pool's, so a fence
//! cuts it too, and it is checked against the [`WriteFence`] before every
//! batch as the pool checks its own. On SQLite a writer takes the one
//! writer connection for the length of a batch: a second connection would
//! only wait on SQLite's lock, and a ping there never leaves the process.

use std::sync::Arc;
use std::time::Instant;

use sqlx::any::AnyConnectOptions;
use sqlx::{Any, AnyConnection, AnyPool, Connection};

use super::{DbKind, WriteFence};

/// Where a writer's connection comes from.
#[derive(Clone)]
pub(crate) enum Source {
    /// Postgres: a connection of its own, opened with these options.
    Own(AnyConnectOptions),
    /// SQLite: the one writer connection, for the length of a batch.
    Pool(AnyPool),
}

pub(crate) struct Link {
    source: Source,
    fence: Arc<WriteFence>,
    /// The connection of its own and when it was opened.
    own: Option<(AnyConnection, Instant)>,
}

/// A connection for one batch: the writer's own, or one from the pool.
pub(crate) enum Conn<'a> {
    Own(&'a mut AnyConnection),
    Pooled(sqlx::pool::PoolConnection<Any>),
}

impl Conn<'_> {
    pub(crate) fn get(&mut self) -> &mut AnyConnection {
        match self {
            Conn::Own(conn) => conn,
            Conn::Pooled(conn) => conn,
        }
    }
}

impl Link {
    pub(crate) fn new(source: Source, fence: Arc<WriteFence>) -> Self {
        Link {
            source,
            fence,
            own: None,
        }
    }

    /// The connection to write on, once this process may still write.
    pub(crate) async fn connection(&mut self) -> Result<Conn<'_>, sqlx::Error> {
        if !self.fence.is_open() {
            return Err(WriteFence::refused());
        }
        let options = match &self.source {
            Source::Pool(pool) => return pool.acquire().await.map(Conn::Pooled),
            Source::Own(options) => options,
        };
        // A connection open while the fence was closed may have been cut by
        // another node: it goes.
        if self
            .own
            .as_ref()
            .is_some_and(|(_, opened)| self.fence.outlived(opened.elapsed()))
        {
            self.own = None;
        }
        if self.own.is_none() {
            let conn = AnyConnection::connect_with(options).await?;
            if !self.fence.is_open() {
                return Err(WriteFence::refused());
            }
            self.own = Some((conn, Instant::now()));
        }
        let (conn, _) = self.own.as_mut().expect("opened above");
        Ok(Conn::Own(conn))
    }

    /// Notes how a statement on the connection ended: one that found it
    /// broken means the next batch opens a new one.
    pub(crate) fn check<T>(&mut self, result: &Result<T, sqlx::Error>) {
        if let Err(e) = result {
            self.failed(e);
        }
    }

    /// Notes an error a statement on the connection ended with.
    pub(crate) fn failed(&mut self, e: &sqlx::Error) {
        if is_broken(e) {
            self.own = None;
        }
    }

    pub(crate) async fn close(&mut self) {
        if let Some((conn, _)) = self.own.take() {
            let _ = conn.close().await;
        }
    }
}

/// A transaction on `conn` that will write (on SQLite it takes the write
/// lock up front, as [`super::Store::begin_write`] does).
pub(crate) async fn begin_write(
    conn: &mut AnyConnection,
    kind: DbKind,
) -> Result<sqlx::Transaction<'_, Any>, sqlx::Error> {
    match kind {
        DbKind::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await,
        DbKind::Postgres => conn.begin().await,
    }
}

/// A connection that failed this way is not used again.
pub(crate) fn is_broken(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)
    )
}
