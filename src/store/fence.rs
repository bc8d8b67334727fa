//! Fencing: once this process's node lease may have ended, nothing it
//! sends to the database can land.
//!
//! Two halves, one on each side of the wire:
//!
//! - **Here.** A [`WriteFence`] is open until a moment by this process's
//!   monotonic clock that falls before its node lease can end by the
//!   database's clock. Past it, the pool hands out no connection (idle ones
//!   are closed, new ones refused), so no statement can *start* late. A
//!   [`Revocation`] does the same for one session's protocol store the
//!   moment the session is fenced or stops, for the client's own tasks that
//!   may outlive it.
//! - **In the database.** Every connection of the pool carries the
//!   process's tag as its `application_name`. Before any node takes over the
//!   sessions of a node whose lease lapsed, it cuts that node's tagged
//!   connections and waits until they are gone (`cluster.rs`), and only
//!   then marks the node fenced, which taking its leases requires. So a
//!   statement sent in time but delayed on the way (a slow network, a
//!   paused process) finds its connection closed, and a transaction begun
//!   in time is rolled back: it can never overwrite the new owner's rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Whether this process may still write, and the tag its connections
/// carry. One per process (shared by the main store and the tenants' own
/// stores); unarmed until the node claims its lease.
#[derive(Debug)]
pub struct WriteFence {
    /// `wago:<uuid>`: the `application_name` of every fenced connection.
    tag: String,
    base: Instant,
    armed: AtomicBool,
    /// Milliseconds after `base` until which writes may start.
    open_until: AtomicU64,
    /// One plus the milliseconds after `base` when the fence last opened
    /// after being closed (zero: never): connections older than that may
    /// have been cut meanwhile.
    reopened: AtomicU64,
}

impl WriteFence {
    pub fn new() -> Self {
        WriteFence {
            tag: format!("wago:{}", uuid::Uuid::new_v4().simple()),
            base: Instant::now(),
            armed: AtomicBool::new(false),
            open_until: AtomicU64::new(0),
            reopened: AtomicU64::new(0),
        }
    }

    /// The `application_name` of this process's connections; also the
    /// node instance it claims.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Lets writes start until `until` (and arms the fence, if it was not).
    pub fn open_until(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.base).as_millis() as u64;
        let now = self.now_ms();
        let before = self.open_until.swap(ms, Ordering::SeqCst);
        if self.armed.swap(true, Ordering::SeqCst) && before <= now {
            // Plus one: zero means never.
            self.reopened.store(now + 1, Ordering::SeqCst);
        }
    }

    /// True for a connection `age` old that was open while the fence was
    /// closed: other nodes may have cut it, so it is not used again.
    pub fn outlived(&self, age: std::time::Duration) -> bool {
        let reopened = self.reopened.load(Ordering::SeqCst);
        reopened > 0 && (age.as_millis() as u64) >= (self.now_ms() + 1).saturating_sub(reopened)
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Opens the fence for good: this process needs none (SQLite, where
    /// the flock makes it the only one).
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Refuses every write from now on, until opened again.
    pub fn close(&self) {
        self.open_until.store(0, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// True while writes may start: never armed (a tool, a test, a
    /// database only this process uses), or before the moment set.
    pub fn is_open(&self) -> bool {
        if !self.armed.load(Ordering::SeqCst) {
            return true;
        }
        self.now_ms() < self.open_until.load(Ordering::SeqCst)
    }

    /// The error a fenced write gets.
    pub fn refused() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::other(
            "this node's lease may have ended: it writes nothing until it has claimed it again",
        ))
    }
}

impl Default for WriteFence {
    fn default() -> Self {
        Self::new()
    }
}

/// Revoked once a session stops or is fenced: its protocol store writes
/// nothing more, whoever calls it. A child is revoked with its parent (a
/// session's fence) or on its own (one run of the session's client).
#[derive(Debug, Clone, Default)]
pub struct Revocation {
    own: Arc<AtomicBool>,
    parent: Option<Arc<AtomicBool>>,
}

impl Revocation {
    pub fn child(&self) -> Revocation {
        Revocation {
            own: Arc::default(),
            parent: Some(self.own.clone()),
        }
    }

    pub fn revoke(&self) {
        self.own.store(true, Ordering::SeqCst);
    }

    pub fn is_revoked(&self) -> bool {
        self.own.load(Ordering::SeqCst)
            || self
                .parent
                .as_ref()
                .is_some_and(|p| p.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_unarmed_fence_is_open_and_an_armed_one_closes_on_time() {
        let fence = WriteFence::new();
        assert!(fence.is_open());
        fence.open_until(Instant::now() + Duration::from_secs(60));
        assert!(fence.is_open());
        fence.open_until(Instant::now() - Duration::from_millis(1));
        assert!(!fence.is_open());
        fence.close();
        assert!(!fence.is_open());
        assert!(fence.tag().starts_with("wago:"));
    }

    #[test]
    fn connections_from_before_a_closed_fence_reopened_are_outlived() {
        let fence = WriteFence::new();
        let old = Duration::from_secs(3600);
        // Armed for the first time: nothing was cut before.
        fence.open_until(Instant::now() + Duration::from_secs(60));
        fence.open_until(Instant::now() + Duration::from_secs(60));
        assert!(!fence.outlived(old));
        fence.close();
        fence.open_until(Instant::now() + Duration::from_secs(60));
        assert!(fence.outlived(old), "open while the fence was closed");
    }

    #[test]
    fn a_child_revocation_ends_with_its_parent_or_alone() {
        let parent = Revocation::default();
        let (a, b) = (parent.child(), parent.child());
        a.revoke();
        assert!(a.is_revoked() && !b.is_revoked() && !parent.is_revoked());
        parent.revoke();
        assert!(b.is_revoked());
    }
}
