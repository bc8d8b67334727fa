//! Inbound messages awaiting the durability hook, held in memory until a
//! write needs them in the database.
//!
//! The client stores each decrypted inbound message as a pending row, runs
//! the hook (WAGO's commit of the message), then deletes the row. The row
//! matters only if the Signal state that decrypted the message becomes
//! durable before the hook commits: a redelivered copy could then not be
//! decrypted again, and the client replays it from the row. So rows are
//! staged here, and written by [`SessionStore::settle_pending`] before any
//! write of Signal state (see `signal.rs`). The hook commits within
//! milliseconds and the client writes Signal state later (its coalesced
//! flush), so a row is usually deleted before it was ever written. A crash
//! loses staged rows only together with the Signal state written after
//! them, so the server's redelivery decrypts again.

use std::collections::HashMap;
use std::sync::Mutex;

use wacore::store::traits::{PendingInboundKey, PendingInboundRow};

/// Staged at most per session; beyond, rows are written at once.
const MAX_ROWS: usize = 1024;
const MAX_BYTES: usize = 4 << 20;

type Key = (String, String, String);

/// One staged row.
pub(super) struct Row {
    pub chat: String,
    pub sender: String,
    pub id: String,
    pub message: Vec<u8>,
    pub stored_at: i64,
}

#[derive(Default)]
struct Rows {
    by_key: HashMap<Key, Row>,
    bytes: usize,
}

#[derive(Default)]
pub(super) struct Staged(Mutex<Rows>);

fn key(chat: &str, sender: &str, id: &str) -> Key {
    (chat.to_owned(), sender.to_owned(), id.to_owned())
}

impl Staged {
    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stages `rows`, all or none: false when they do not fit.
    pub fn stage(&self, rows: &[PendingInboundRow<'_>], now: i64) -> bool {
        let mut staged = self.rows();
        let bytes: usize = rows.iter().map(|r| r.message.len()).sum();
        if staged.by_key.len() + rows.len() > MAX_ROWS || staged.bytes + bytes > MAX_BYTES {
            return false;
        }
        for r in rows {
            let row = Row {
                chat: r.chat.to_owned(),
                sender: r.sender.to_owned(),
                id: r.id.to_owned(),
                message: r.message.to_vec(),
                stored_at: now,
            };
            staged.bytes += row.message.len();
            if let Some(old) = staged.by_key.insert(key(r.chat, r.sender, r.id), row) {
                staged.bytes -= old.message.len();
            }
        }
        true
    }

    pub fn get(&self, chat: &str, sender: &str, id: &str) -> Option<Vec<u8>> {
        let staged = self.rows();
        staged
            .by_key
            .get(&key(chat, sender, id))
            .map(|row| row.message.clone())
    }

    /// Drops the staged rows of `keys`; returns the keys that were not
    /// staged (their rows, if any, are in the database).
    pub fn unstage<'k>(&self, keys: &'k [PendingInboundKey<'k>]) -> Vec<&'k PendingInboundKey<'k>> {
        let mut staged = self.rows();
        let mut written = Vec::new();
        for k in keys {
            match staged.by_key.remove(&key(k.chat, k.sender, k.id)) {
                Some(row) => staged.bytes -= row.message.len(),
                None => written.push(k),
            }
        }
        written
    }

    /// Drops staged rows stored before `cutoff` (unix seconds).
    pub fn expire(&self, cutoff: i64) -> u32 {
        let mut staged = self.rows();
        let before = staged.by_key.len();
        staged.by_key.retain(|_, row| row.stored_at >= cutoff);
        staged.bytes = staged.by_key.values().map(|r| r.message.len()).sum();
        (before - staged.by_key.len()) as u32
    }

    /// Every staged row, taken out to be written.
    pub fn take_all(&self) -> Vec<Row> {
        let mut staged = self.rows();
        staged.bytes = 0;
        staged.by_key.drain().map(|(_, row)| row).collect()
    }

    /// Rows [`Staged::take_all`] took but could not write: staged again,
    /// unless staged anew meanwhile.
    pub fn restore(&self, rows: Vec<Row>) {
        let mut staged = self.rows();
        for row in rows {
            let k = key(&row.chat, &row.sender, &row.id);
            if !staged.by_key.contains_key(&k) {
                staged.bytes += row.message.len();
                staged.by_key.insert(k, row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(id: &'a str, message: &'a [u8]) -> PendingInboundRow<'a> {
        PendingInboundRow {
            chat: "c@s.whatsapp.net",
            sender: "s@s.whatsapp.net",
            id,
            message,
        }
    }

    fn k(id: &str) -> PendingInboundKey<'_> {
        PendingInboundKey {
            chat: "c@s.whatsapp.net",
            sender: "s@s.whatsapp.net",
            id,
        }
    }

    #[test]
    fn rows_are_staged_read_and_unstaged_and_the_rest_go_to_the_database() {
        let staged = Staged::default();
        assert!(staged.stage(&[row("a", b"one"), row("b", b"two")], 100));
        assert_eq!(
            staged
                .get("c@s.whatsapp.net", "s@s.whatsapp.net", "a")
                .unwrap(),
            b"one"
        );
        let keys = [k("a"), k("z")];
        let written: Vec<&str> = staged.unstage(&keys).iter().map(|k| k.id).collect();
        assert_eq!(written, ["z"], "not staged: deleted in the database");
        assert!(
            staged
                .get("c@s.whatsapp.net", "s@s.whatsapp.net", "a")
                .is_none()
        );
        let taken = staged.take_all();
        assert_eq!(taken.len(), 1);
        assert!(staged.take_all().is_empty());
        staged.restore(taken);
        assert_eq!(staged.expire(101), 1, "stored at 100");
    }

    #[test]
    fn staging_is_bounded_in_rows_and_bytes() {
        let staged = Staged::default();
        let big = vec![0u8; MAX_BYTES];
        assert!(staged.stage(&[row("big", &big)], 0));
        assert!(!staged.stage(&[row("more", b"x")], 0), "over the bytes");
        staged.take_all();
        let ids: Vec<String> = (0..=MAX_ROWS).map(|i| i.to_string()).collect();
        let rows: Vec<_> = ids.iter().map(|id| row(id, b"x")).collect();
        assert!(!staged.stage(&rows, 0), "over the rows: none staged");
        assert!(staged.take_all().is_empty());
        assert!(staged.stage(&rows[..MAX_ROWS], 0));
    }
}
