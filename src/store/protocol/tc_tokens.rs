//! The tc-tokens a session has read, kept in memory: the client reads its
//! token for a chat before every send to it, and the session that owns the
//! lease is the only writer of its rows, so every change passes here.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use wacore::store::traits::TcTokenEntry;

/// Chats remembered per session at most.
const CAPACITY: usize = 256;

/// What the session's rows hold per chat (`None`: no row), for the chats
/// read lately. Made on first use: an idle session pays nothing.
#[derive(Default)]
pub(super) struct TcTokens {
    entries: OnceLock<quick_cache::sync::Cache<String, Option<TcTokenEntry>>>,
    /// Moved by every write: a read that began before one keeps nothing.
    generation: AtomicU64,
}

impl TcTokens {
    fn entries(&self) -> &quick_cache::sync::Cache<String, Option<TcTokenEntry>> {
        self.entries
            .get_or_init(|| quick_cache::sync::Cache::new(CAPACITY))
    }

    /// What is known of `jid`'s row: `None` when it must be read.
    pub fn get(&self, jid: &str) -> Option<Option<TcTokenEntry>> {
        self.entries.get()?.get(jid)
    }

    /// Taken before reading the database, handed to [`TcTokens::fill`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps what a read found, unless a write came meanwhile.
    pub fn fill(&self, jid: &str, row: Option<TcTokenEntry>, read_at: u64) {
        let entries = self.entries();
        entries.insert(jid.to_owned(), row);
        // A write after this check forgets the entry itself.
        if self.generation() != read_at {
            entries.remove(jid);
        }
    }

    /// After a write to `jid`'s row: read it again next time.
    pub fn forget(&self, jid: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = self.entries.get() {
            entries.remove(jid);
        }
    }

    /// After a write to any number of rows.
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = self.entries.get() {
            entries.clear();
        }
    }
}
