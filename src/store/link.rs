//! What the batch writers share: the connection they write on, and the
//! task that gathers their callers' asks into batches ([`Batcher`]).
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
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// A writer that commits what its callers ask in batches: whatever they
/// asked while it committed the last batch goes in the next, up to
/// [`Batch::MOST`] (an ask is never split); nothing waits on a timer.
pub(crate) trait Batch: Send + 'static {
    type Ask: Send + 'static;
    type Answer: Send + 'static;
    /// How much of a batch's room `ask` takes.
    const MOST: usize;
    fn weight(ask: &Self::Ask) -> usize;
    /// Commits `batch` on `link` and answers each caller.
    fn commit(
        &mut self,
        link: &mut Link,
        batch: Vec<Asked<Self>>,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// An ask and where its answer goes.
pub(crate) type Asked<B> = (<B as Batch>::Ask, oneshot::Sender<<B as Batch>::Answer>);

/// Callers waiting at once; beyond that an ask waits for room.
const QUEUE: usize = 4096;

/// The handle callers use; its task ends when closed or when the last
/// handle is gone, and closes its connection.
pub(crate) struct Batcher<B: Batch> {
    queue: mpsc::Sender<Asked<B>>,
    closed: CancellationToken,
    /// Owned here; it ends by itself once `queue` closes.
    _task: JoinHandle<()>,
}

impl<B: Batch> Batcher<B> {
    pub(crate) fn start(writer: B, link: Link) -> Self {
        let (queue, asks) = mpsc::channel(QUEUE);
        let closed = CancellationToken::new();
        let task = tokio::spawn(run(writer, link, asks, closed.clone()));
        Batcher {
            queue,
            closed,
            _task: task,
        }
    }

    /// `ask` committed with whatever else is waiting; `None` once the
    /// writer has stopped.
    pub(crate) async fn ask(&self, ask: B::Ask) -> Option<B::Answer> {
        let (done, answer) = oneshot::channel();
        self.queue.send((ask, done)).await.ok()?;
        answer.await.ok()
    }

    /// Ends the task and closes its connection; what is queued fails.
    pub(crate) fn close(&self) {
        self.closed.cancel();
    }
}

async fn run<B: Batch>(
    mut writer: B,
    mut link: Link,
    mut asks: mpsc::Receiver<Asked<B>>,
    closed: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = closed.cancelled() => break,
            ask = asks.recv() => match ask {
                Some(ask) => ask,
                None => break,
            },
        };
        let mut size = B::weight(&first.0);
        let mut batch = vec![first];
        while size < B::MOST {
            match asks.try_recv() {
                Ok(next) => {
                    size += B::weight(&next.0);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        writer.commit(&mut link, batch).await;
    }
    link.close().await;
}
