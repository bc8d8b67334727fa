//! Group commit for outbound status changes.
//!
//! Every send moves through `sent`, `delivered` and `read`, each step an
//! ack or a receipt arriving on some session. Committed one by one, those
//! steps cost three transactions (and three disk syncs) per message. The
//! store's status writer instead takes whatever changes the node's
//! sessions asked for while it committed the last batch and applies them
//! in one transaction: a lone change goes at once, a busy node's changes
//! share commits. Nothing waits on a timer.
//!
//! A caller waits until its changes are committed, so what it answers
//! afterwards is durable. When a batch fails as a whole, each caller's
//! changes are tried again in a transaction of their own, so one bad
//! change (or a deadlock with a tenant being deleted) fails only its own
//! caller.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::link::{Link, Source};
use super::messages::{Advanced, StatusChange};
use super::{Result, Store, StoreError};

/// Callers waiting at once; beyond that `apply` waits for room.
const QUEUE: usize = 4096;
/// Changes committed together at most.
const MAX_BATCH: usize = 1024;

struct Request {
    changes: Vec<StatusChange>,
    done: oneshot::Sender<Result<Vec<Advanced>>>,
}

/// The handle callers use; the task ends when the last handle is gone.
pub(super) struct StatusWriter {
    queue: mpsc::Sender<Request>,
    closed: CancellationToken,
    /// Owned here; it ends by itself once `queue` closes.
    _task: JoinHandle<()>,
}

impl StatusWriter {
    /// Starts the writer over `store`, which must have no writer of its
    /// own (it applies the batches directly), on a connection from
    /// `source` (`link.rs`).
    pub(super) fn start(store: Store, source: Source) -> Self {
        debug_assert!(store.statuses.is_none());
        let (queue, requests) = mpsc::channel(QUEUE);
        let link = Link::new(source, store.fence.clone());
        let closed = CancellationToken::new();
        let task = tokio::spawn(run(store, link, requests, closed.clone()));
        StatusWriter {
            queue,
            closed,
            _task: task,
        }
    }

    /// Applies `changes` with whatever else is waiting; answers once they
    /// are committed.
    pub(super) async fn apply(&self, changes: Vec<StatusChange>) -> Result<Vec<Advanced>> {
        let (done, answer) = oneshot::channel();
        let stopped = || StoreError::Conflict("the status writer has stopped".into());
        self.queue
            .send(Request { changes, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Ends the task and closes its connection; what is queued fails.
    pub(super) fn close(&self) {
        self.closed.cancel();
    }
}

async fn run(
    store: Store,
    mut link: Link,
    mut requests: mpsc::Receiver<Request>,
    closed: CancellationToken,
) {
    let mut batch: Vec<Request> = Vec::new();
    loop {
        let first = tokio::select! {
            _ = closed.cancelled() => break,
            request = requests.recv() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let mut size = first.changes.len();
        batch.push(first);
        while size < MAX_BATCH {
            match requests.try_recv() {
                Ok(next) => {
                    size += next.changes.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        commit(&store, &mut link, std::mem::take(&mut batch)).await;
    }
    link.close().await;
}

/// Commits one batch and answers its callers.
async fn commit(store: &Store, link: &mut Link, batch: Vec<Request>) {
    if batch.len() > 1 {
        let changes: Vec<StatusChange> = batch
            .iter()
            .flat_map(|r| r.changes.iter().cloned())
            .collect();
        match apply(store, link, &changes).await {
            Ok(advanced) => {
                let mut advanced = advanced.into_iter();
                for request in batch {
                    let answer = advanced.by_ref().take(request.changes.len()).collect();
                    let _ = request.done.send(Ok(answer));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, changes = changes.len(),
                    "a batch of status changes failed; trying each caller's alone");
            }
        }
    }
    for request in batch {
        let answer = apply(store, link, &request.changes).await;
        let _ = request.done.send(answer);
    }
}

/// Applies `changes` on the link's connection.
async fn apply(store: &Store, link: &mut Link, changes: &[StatusChange]) -> Result<Vec<Advanced>> {
    let mut conn = link.connection().await?;
    let applied = store.apply_status_changes(conn.get(), changes).await;
    drop(conn);
    if let Err(StoreError::Sql(e)) = &applied {
        link.failed(e);
    }
    applied
}
