//! `wago-sandbox`: the simulated WhatsApp network as a program of its own.
//! It takes the same flags and variables as `wago sandbox` (see
//! `wago-sandbox --help`) and stops cleanly on SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wago_sandbox::SandboxArgs;

/// A simulated WhatsApp Web server for tests: the unmodified whatsapp-rust
/// client pairs with it, logs in to it and messages through it.
#[derive(Debug, Parser)]
#[command(name = "wago-sandbox", version)]
struct Cli {
    #[command(flatten)]
    args: SandboxArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        logs.json().init();
    } else {
        logs.init();
    }
    match wago_sandbox::run(cli.args, stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wago-sandbox: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stop signal received, shutting down");
}
