//! Tenant API keys, remembered: a request's key is looked up in the
//! database once, then answered from memory.
//!
//! Whatever makes a key stop working (a revocation, a tenant's deletion,
//! `API_KEY` replaced at a node's start) sends [`Signal::Keys`] over the
//! bus: the node that made the change forgets every key before it answers,
//! every other node as the signal reaches it (on Postgres, by `NOTIFY` at
//! the commit). A node whose listener may have missed signals hears
//! `Resync` and forgets too; an entry older than [`MAX_AGE`] is looked up
//! again in any case, which bounds what a lost signal could cost.

use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cache::Remembered;
use crate::sessions::Signal;
use crate::store::tenants::KeyOwner;
use crate::store::{Result, Store};
use crate::tenants::KeyHash;

/// Keys remembered at most; the least used go first.
const CAPACITY: usize = 10_000;
/// An entry is looked up again after this long, whatever the bus said.
pub const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Entry {
    owner: KeyOwner,
    fetched: Instant,
}

/// Key owners by key hash.
#[derive(Debug)]
pub struct KeyCache(Remembered<Entry>);

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache(Remembered::new(CAPACITY))
    }
}

impl KeyCache {
    /// The live key with this hash and its tenant, from memory when known.
    pub async fn owner(&self, store: &Store, hash: &KeyHash) -> Result<Option<KeyOwner>> {
        if let Some(entry) = self.0.get(hash.as_str())
            && entry.fetched.elapsed() < MAX_AGE
        {
            return Ok(Some(entry.owner));
        }
        let read_at = self.0.read_at();
        let owner = store.find_key_owner(hash).await?;
        if let Some(owner) = &owner {
            let entry = Entry {
                owner: owner.clone(),
                fetched: Instant::now(),
            };
            self.0.fill(hash.as_str(), entry, read_at);
        }
        Ok(owner)
    }

    /// Notes that the key's use was recorded at `at` (unix ms).
    pub fn used(&self, hash: &KeyHash, at: i64) {
        self.0
            .update(hash.as_str(), |entry| entry.owner.last_used_at = Some(at));
    }

    /// Forgets every key: the next request of each is looked up again.
    pub fn forget_all(&self) {
        self.0.forget_all();
    }

    /// Forgets every key whenever the bus says keys changed or that
    /// signals may have been lost, until `stop`.
    pub async fn follow(&self, mut signals: broadcast::Receiver<Signal>, stop: CancellationToken) {
        loop {
            let signal = tokio::select! {
                _ = stop.cancelled() => return,
                signal = signals.recv() => signal,
            };
            match signal {
                Ok(Signal::Keys | Signal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.forget_all()
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
