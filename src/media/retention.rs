//! Retention: files kept longer than `MEDIA_RETENTION` are deleted, oldest
//! first, and their messages stay, marked `expired`. Each node sweeps now
//! and then; a sweep reads the oldest kept files through their index, a
//! batch at a time, so its cost is what it deletes, not what is kept.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::MediaStorage;
use crate::store::{Result, Store, now_ms};

/// Files expired per statement.
const BATCH: i64 = 100;

/// How often a node sweeps: a tenth of the retention, within 1 s and 10 min.
pub fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// Sweeps every [`interval`] until `stop`.
pub async fn run(
    store: Store,
    storage: Arc<dyn MediaStorage>,
    retention: Duration,
    stop: CancellationToken,
) {
    loop {
        match sweep(&store, storage.as_ref(), retention).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "media files past their retention deleted"),
            Err(e) => tracing::warn!(error = %e, "the media retention sweep failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval(retention)) => {}
        }
    }
}

/// Expires every file kept longer than `retention`; returns how many.
pub async fn sweep(
    store: &Store,
    storage: &dyn MediaStorage,
    retention: Duration,
) -> Result<usize> {
    let before = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut expired = 0;
    loop {
        let keys = store.expire_media(before, BATCH).await?;
        for key in &keys {
            if let Err(e) = storage.delete(key).await {
                tracing::warn!(error = %e, key, "cannot delete an expired file");
            }
        }
        expired += keys.len();
        if (keys.len() as i64) < BATCH {
            return Ok(expired);
        }
    }
}
