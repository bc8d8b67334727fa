//! The client's connection to WhatsApp, behind a switch the node holds.
//!
//! A node that can no longer renew a session's lease must have closed the
//! session's connection before the lease lapses, whatever the session's
//! task is doing at that moment (its graceful shutdown flushes state to
//! the database first, which is exactly what may hang then). The
//! [`Fence`] closes the live connection at once and refuses new ones, so
//! the client's own reconnects cannot open another.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use wacore::net::{Transport, TransportEvent, TransportFactory};

/// Creates the session's connections through `inner` until fenced.
pub(super) struct FencedFactory<F> {
    inner: F,
    fence: Fence,
}

impl<F> FencedFactory<F> {
    pub fn new(inner: F, fence: Fence) -> Self {
        FencedFactory { inner, fence }
    }
}

/// Closes a session's connection and keeps it closed.
#[derive(Clone, Default)]
pub(crate) struct Fence {
    inner: Arc<FenceState>,
}

#[derive(Default)]
struct FenceState {
    closed: AtomicBool,
    current: Mutex<Option<Arc<dyn Transport>>>,
}

impl Fence {
    /// Closes the live connection, if any, and refuses new ones.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let current = self
            .inner
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(transport) = current {
            transport.disconnect().await;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl<F: TransportFactory> TransportFactory for FencedFactory<F> {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        anyhow::ensure!(!self.fence.is_closed(), "the session was fenced off");
        let (transport, events) = self.inner.create_transport().await?;
        let fenced = {
            let mut current = self
                .fence
                .inner
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !self.fence.is_closed() {
                *current = Some(transport.clone());
            }
            self.fence.is_closed()
        };
        // Fenced while connecting: this connection must not live either.
        if fenced {
            transport.disconnect().await;
            anyhow::bail!("the session was fenced off");
        }
        Ok((transport, events))
    }
}
