//! A sandbox on a thread and runtime of its own, for callers that have no
//! runtime to lend it or whose runtime ends before the sandbox should: a
//! test binary whose every `#[tokio::test]` makes and drops its own runtime
//! shares one sandbox for the whole process this way.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{SandboxConfig, SandboxError, server, start};

/// A sandbox serving from its own thread until it is dropped. Reach it over
/// its WebSocket and its control API ([`ws_url`](Self::ws_url),
/// [`http_url`](Self::http_url)).
///
/// ```
/// let sandbox = wago_sandbox::BackgroundSandbox::start(wago_sandbox::SandboxConfig::loopback())?;
/// assert!(sandbox.ws_url().ends_with("/ws/chat"));
/// drop(sandbox); // stops it (and writes its state file, if it has one)
/// # Ok::<(), wago_sandbox::SandboxError>(())
/// ```
#[derive(Debug)]
pub struct BackgroundSandbox {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundSandbox {
    /// Starts a sandbox on a new thread with its own Tokio runtime and
    /// returns once it listens. Callable from anywhere, inside a runtime or
    /// not.
    pub fn start(config: SandboxConfig) -> Result<Self, SandboxError> {
        let (started, listening) = mpsc::sync_channel(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wago-sandbox".into())
            .spawn(move || serve(config, started, stopped))
            .map_err(SandboxError::Serve)?;
        let addr = match listening.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            // The thread ended without a word: it panicked.
            Err(_) => {
                let _ = thread.join();
                return Err(SandboxError::Serve(std::io::Error::other(
                    "the sandbox thread stopped before it listened",
                )));
            }
        };
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws/chat`, for the client's transport.
    pub fn ws_url(&self) -> String {
        server::ws_url(self.addr)
    }

    /// `http://ADDR`, the base of the control API.
    pub fn http_url(&self) -> String {
        server::http_url(self.addr)
    }
}

impl Drop for BackgroundSandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    config: SandboxConfig,
    started: mpsc::SyncSender<Result<SocketAddr, SandboxError>>,
    stopped: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wago-sandbox-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = started.send(Err(SandboxError::Serve(e)));
            return;
        }
    };
    runtime.block_on(async move {
        let sandbox = match start(config).await {
            Ok(sandbox) => sandbox,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let _ = started.send(Ok(sandbox.addr()));
        // Dropped or told to stop: either way, stop cleanly.
        let _ = stopped.await;
        if let Err(e) = sandbox.shutdown().await {
            tracing::warn!(error = %e, "the background sandbox did not stop cleanly");
        }
    });
}

/// One sandbox for the whole process, started on first use on a free
/// loopback port: what a test suite that reads the server's URL from one
/// place needs (the client library's own end-to-end suite, for one).
/// `CHATSTATE_TTL_SECS`, when set, is its typing-state lifetime.
///
/// # Panics
///
/// When the sandbox cannot start (no loopback port, no thread): the
/// message says why. [`BackgroundSandbox::start`] returns the error instead.
pub fn shared() -> &'static BackgroundSandbox {
    static SHARED: OnceLock<BackgroundSandbox> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut config = SandboxConfig::loopback();
        if let Some(secs) = std::env::var("CHATSTATE_TTL_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.chatstate_ttl = Duration::from_secs(secs);
        }
        BackgroundSandbox::start(config)
            .unwrap_or_else(|e| panic!("the process's shared sandbox did not start: {e}"))
    })
}
