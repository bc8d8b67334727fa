//! Wake-ups between the parts of one node and between nodes.
//!
//! A [`Signal`] says that something changed in the database: sends wait,
//! a send settled, a session's status row moved, a command waits or is
//! done. Signals carry no data that matters; whoever receives one reads the
//! rows. Within a process they go over a bounded broadcast channel; on
//! Postgres they also go to every other node by `NOTIFY wago`, and each
//! node's listener feeds what the others sent into its own channel. A lost
//! signal only delays work until the slow fallback poll finds it.

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::{DbKind, NodeId, Store};

/// The Postgres channel every node listens on.
const CHANNEL: &str = "wago";
/// Signals buffered for a slow receiver before it lags (and re-reads).
const CAPACITY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Signal {
    /// Sends of this tenant wait in the database; `awaited` is one whose
    /// outcome a node waits for (it hears `Settled` for that one).
    Send {
        tenant: String,
        awaited: Option<String>,
    },
    /// An awaited send left `queued`: sent, or failed.
    Settled { tenant: String, message_id: String },
    /// An awaited send waits for the number's pace; it should go at about
    /// `until_ms` (unix ms).
    Held {
        tenant: String,
        message_id: String,
        until_ms: i64,
    },
    /// The status row of a session that is (or was just) pairing changed:
    /// a new QR code, or the end of pairing.
    Status { tenant: String },
    /// Commands for this tenant's session wait in the database.
    Command { tenant: String },
    /// A command finished.
    CommandDone { id: i64 },
    /// Sessions were released, or a node joined or left: placement looks
    /// again.
    Placement,
    /// API keys stopped working (revoked, their tenant deleted, or
    /// replaced): nodes forget the keys they remember.
    Keys,
    /// Signals may have been lost (the listener reconnected): look at
    /// everything again.
    Resync,
}

/// What goes over `NOTIFY`: the signal and who sent it.
#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    signal: Signal,
}

#[derive(Clone)]
pub struct Bus {
    node: NodeId,
    store: Store,
    local: broadcast::Sender<Signal>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("node", &self.node).finish()
    }
}

impl Bus {
    pub fn new(node: NodeId, store: Store) -> Self {
        Bus {
            node,
            store,
            local: broadcast::channel(CAPACITY).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.local.subscribe()
    }

    /// Tells this node at once and, on Postgres, every other node.
    pub async fn publish(&self, signal: Signal) {
        let _ = self.local.send(signal.clone());
        if self.store.kind() != DbKind::Postgres {
            return;
        }
        let envelope = Envelope {
            from: self.node.as_str().to_owned(),
            signal,
        };
        let Ok(payload) = serde_json::to_string(&envelope) else {
            return;
        };
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(self.store.pool())
            .await
        {
            tracing::warn!(error = %e, "cannot signal the other nodes");
        }
    }

    /// Feeds what other nodes publish into this node's channel until
    /// `stop`. Postgres only; returns at once on SQLite (one node).
    pub async fn listen(self, url: String, stop: CancellationToken) {
        if self.store.kind() != DbKind::Postgres {
            return;
        }
        loop {
            let listener = async {
                let mut listener = PgListener::connect(&url).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                _ = stop.cancelled() => return,
                l = listener => match l {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for other nodes' signals; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        }
                    }
                },
            };
            // Anything sent while we were not listening is lost.
            let _ = self.local.send(Signal::Resync);
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    Ok(Some(notification)) => self.relay(notification.payload()),
                    // The connection dropped and came back.
                    Ok(None) => {
                        let _ = self.local.send(Signal::Resync);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the signal listener; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    fn relay(&self, payload: &str) {
        match serde_json::from_str::<Envelope>(payload) {
            Ok(envelope) if envelope.from == self.node.as_str() => {}
            Ok(envelope) => {
                let _ = self.local.send(envelope.signal);
            }
            Err(e) => tracing::debug!(error = %e, "ignoring an unknown signal"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_through_their_envelope() {
        let envelope = Envelope {
            from: "node-a".into(),
            signal: Signal::Settled {
                tenant: "t".into(),
                message_id: "3EB0".into(),
            },
        };
        let json = serde_json::to_string(&envelope).unwrap();
        assert_eq!(
            json,
            r#"{"from":"node-a","k":"settled","tenant":"t","message_id":"3EB0"}"#
        );
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back.signal, envelope.signal);
    }
}
