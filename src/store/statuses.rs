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

use super::link::{Asked, Batch, Batcher, Link, Source};
use super::messages::{Advanced, StatusChange};
use super::{Result, Store, StoreError};

/// Changes committed together at most.
const MAX_BATCH: usize = 1024;

/// The handle callers use (see [`Batcher`]).
pub(super) struct StatusWriter(Batcher<Statuses>);

/// The writer's side: the store it applies the batches with.
struct Statuses {
    store: Store,
}

impl StatusWriter {
    /// Starts the writer over `store`, which must have no writer of its
    /// own (it applies the batches directly), on a connection from
    /// `source` (`link.rs`).
    pub(super) fn start(store: Store, source: Source) -> Self {
        debug_assert!(store.statuses.is_none());
        let link = Link::new(source, store.fence.clone());
        StatusWriter(Batcher::start(Statuses { store }, link))
    }

    /// Applies `changes` with whatever else is waiting; answers once they
    /// are committed.
    pub(super) async fn apply(&self, changes: Vec<StatusChange>) -> Result<Vec<Advanced>> {
        self.0
            .ask(changes)
            .await
            .unwrap_or_else(|| Err(StoreError::Conflict("the status writer has stopped".into())))
    }

    /// Ends the task and closes its connection; what is queued fails.
    pub(super) fn close(&self) {
        self.0.close();
    }
}

impl Batch for Statuses {
    type Ask = Vec<StatusChange>;
    type Answer = Result<Vec<Advanced>>;
    const MOST: usize = MAX_BATCH;

    fn weight(changes: &Self::Ask) -> usize {
        changes.len()
    }

    /// Commits one batch and answers its callers.
    async fn commit(&mut self, link: &mut Link, batch: Vec<Asked<Self>>) {
        let store = &self.store;
        if batch.len() > 1 {
            let changes: Vec<StatusChange> = batch
                .iter()
                .flat_map(|(changes, _)| changes.iter().cloned())
                .collect();
            match apply(store, link, &changes).await {
                Ok(advanced) => {
                    let mut advanced = advanced.into_iter();
                    for (changes, done) in batch {
                        let answer = advanced.by_ref().take(changes.len()).collect();
                        let _ = done.send(Ok(answer));
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, changes = changes.len(),
                        "a batch of status changes failed; trying each caller's alone");
                }
            }
        }
        for (changes, done) in batch {
            let _ = done.send(apply(store, link, &changes).await);
        }
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
