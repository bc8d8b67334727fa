//! The client's connection to WhatsApp, behind a switch the node holds.
//!
//! A node that can no longer renew its lease must have closed its
//! sessions' connections before the lease lapses, whatever each session's
//! task is doing at that moment (its graceful shutdown flushes state to
//! the database first, which is exactly what may hang then). The
//! [`Fence`] closes the live connection at once and refuses new ones, so
//! the client's own reconnects cannot open another; and every frame the
//! client sends passes it, so a process that was paused past its lease
//! (and resumes mid-send) sends nothing: not while the session is fenced,
//! and not once the node's [`WriteFence`] has closed.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wacore::net::{Transport, TransportEvent, TransportFactory};

use crate::store::{Revocation, WriteFence};

/// Creates the session's connections through `inner` until fenced.
pub(super) struct FencedFactory<F> {
    inner: F,
    fence: Fence,
    node: Arc<WriteFence>,
}

impl<F> FencedFactory<F> {
    pub fn new(inner: F, fence: Fence, node: Arc<WriteFence>) -> Self {
        FencedFactory { inner, fence, node }
    }

    fn may_run(&self) -> bool {
        !self.fence.is_closed() && self.node.is_open()
    }
}

/// Closes a session's connection and keeps it closed.
#[derive(Clone, Default)]
pub(crate) struct Fence {
    inner: Arc<FenceState>,
}

#[derive(Default)]
struct FenceState {
    /// Revoked when the fence closes; each run of the session's client
    /// writes through a child of it (see [`Revocation`]).
    closed: Revocation,
    current: Mutex<Option<Arc<dyn Transport>>>,
}

impl Fence {
    /// What revokes the session's protocol store when the fence closes.
    pub fn revocation(&self) -> &Revocation {
        &self.inner.closed
    }

    /// Closes the live connection, if any, and refuses new ones.
    pub async fn close(&self) {
        self.inner.closed.revoke();
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
        self.inner.closed.is_revoked()
    }
}

/// A connection whose every frame passes the fences first.
struct FencedTransport {
    inner: Arc<dyn Transport>,
    fence: Fence,
    node: Arc<WriteFence>,
}

#[async_trait::async_trait]
impl Transport for FencedTransport {
    async fn send(&self, data: Bytes) -> Result<(), anyhow::Error> {
        if self.fence.is_closed() || !self.node.is_open() {
            anyhow::bail!("the session was fenced off; nothing more is sent");
        }
        self.inner.send(data).await
    }

    async fn disconnect(&self) {
        self.inner.disconnect().await
    }

    fn resource_report(&self) -> Option<wacore::stats::TransportResourceReport> {
        self.inner.resource_report()
    }
}

#[async_trait::async_trait]
impl<F: TransportFactory> TransportFactory for FencedFactory<F> {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        anyhow::ensure!(self.may_run(), "the session was fenced off");
        let (inner, events) = self.inner.create_transport().await?;
        let transport: Arc<dyn Transport> = Arc::new(FencedTransport {
            inner,
            fence: self.fence.clone(),
            node: self.node.clone(),
        });
        let fenced = {
            let mut current = self
                .fence
                .inner
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if self.may_run() {
                *current = Some(transport.clone());
            }
            !self.may_run()
        };
        // Fenced while connecting: this connection must not live either.
        if fenced {
            transport.disconnect().await;
            anyhow::bail!("the session was fenced off");
        }
        Ok((transport, events))
    }
}
