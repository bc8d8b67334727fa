//! What the database holds, remembered in a bounded cache that a change
//! can empty: a value read before a change is never kept after it.
//!
//! A reader takes [`Remembered::read_at`] before it reads the database and
//! hands it to [`Remembered::fill`]; a writer calls [`Remembered::forget`]
//! (or `forget_all`) after it writes. A fill that raced a forget keeps
//! nothing. The cache itself is made on first use, so an owner that never
//! reads pays nothing.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// When a read of the database began, as [`Remembered`] counts changes.
#[derive(Debug, Clone, Copy)]
pub struct ReadAt(u64);

pub struct Remembered<V> {
    capacity: usize,
    entries: OnceLock<quick_cache::sync::Cache<String, V>>,
    /// Moved by every forget.
    generation: AtomicU64,
}

impl<V: Clone> std::fmt::Debug for Remembered<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.entries.get().map_or(0, |e| e.len());
        f.debug_struct("Remembered").field("len", &len).finish()
    }
}

impl<V: Clone> Remembered<V> {
    /// At most `capacity` entries; the least used go first.
    pub fn new(capacity: usize) -> Self {
        Remembered {
            capacity,
            entries: OnceLock::new(),
            generation: AtomicU64::new(0),
        }
    }

    fn entries(&self) -> &quick_cache::sync::Cache<String, V> {
        self.entries
            .get_or_init(|| quick_cache::sync::Cache::new(self.capacity))
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.entries.get()?.get(key)
    }

    /// Taken before reading the database, handed to [`Remembered::fill`].
    pub fn read_at(&self) -> ReadAt {
        ReadAt(self.generation.load(Ordering::Acquire))
    }

    /// Keeps what a read found, unless a change came since `read_at`.
    pub fn fill(&self, key: &str, value: V, read_at: ReadAt) {
        let entries = self.entries();
        entries.insert(key.to_owned(), value);
        // A forget after this check removes the entry itself.
        if self.read_at().0 != read_at.0 {
            entries.remove(key);
        }
    }

    /// Changes a remembered entry in place; nothing if it is not there.
    pub fn update(&self, key: &str, change: impl FnOnce(&mut V)) {
        if let Some(entries) = self.entries.get()
            && let Some(mut value) = entries.get(key)
        {
            change(&mut value);
            let _ = entries.replace(key.to_owned(), value, true);
        }
    }

    /// After a write to what `key` stands for.
    pub fn forget(&self, key: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = self.entries.get() {
            entries.remove(key);
        }
    }

    /// After a write to any number of entries.
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = self.entries.get() {
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_change_keeps_nothing() {
        let cache = Remembered::new(4);
        assert_eq!(cache.get("a"), None);
        let before = cache.read_at();
        cache.fill("a", 1, before);
        assert_eq!(cache.get("a"), Some(1));
        let raced = cache.read_at();
        cache.forget("a");
        cache.fill("a", 1, raced);
        assert_eq!(cache.get("a"), None, "read before the change");
        cache.fill("a", 2, cache.read_at());
        cache.update("a", |v| *v += 1);
        cache.update("b", |v| *v += 1);
        assert_eq!((cache.get("a"), cache.get("b")), (Some(3), None));
        cache.forget_all();
        assert_eq!(cache.get("a"), None);
    }
}
