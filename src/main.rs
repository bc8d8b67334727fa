//! `wago`: the command line.
//!
//! - `wago serve`: the HTTP API server (the default when no command is given).
//! - `wago migrate`: apply database migrations and exit.
//! - `wago admin reset-token`: replace the stored admin token.
//! - `wago sandbox`: the simulated WhatsApp network (builds with the
//!   `sandbox` feature only).
//!
//! Configuration is environment variables, read and checked by
//! `config::Config` (README.md lists them). Logs go to standard error
//! through `tracing`: `RUST_LOG` picks the levels, `LOG_FORMAT=json` makes
//! them JSON lines.

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use wago::app::{self, App};
use wago::config::{Config, LogFormat};
use wago::store::Store;

#[derive(Parser)]
#[command(
    name = "wago",
    version,
    about = "Multi-tenant HTTP API server for WhatsApp"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API server.
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Administration tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Serve the simulated WhatsApp network (WebSocket and control API).
    #[cfg(feature = "sandbox")]
    Sandbox(wago::sandbox::SandboxArgs),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Make a new admin token, print it once, and store only its hash.
    ResetToken,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "sandbox")]
    if let Some(Command::Sandbox(args)) = cli.command {
        // The sandbox needs none of the server's configuration.
        return sandbox(args).await;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wago: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match run(cli.command.unwrap_or(Command::Serve), config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wago: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "sandbox")]
async fn sandbox(args: wago::sandbox::SandboxArgs) -> std::process::ExitCode {
    let format = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    init_logging(format);
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match wago::sandbox::run(args, shutdown.cancelled_owned()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wago sandbox: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        #[cfg(feature = "sandbox")]
        Command::Sandbox(_) => unreachable!("handled before the configuration is read"),
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let store = Store::connect(&config.dsn).await?;
            store.migrate().await?;
            eprintln!("wago: migrations applied to {}", config.dsn);
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::ResetToken,
        } => {
            let store = Store::connect(&config.dsn).await?;
            store.migrate().await?;
            let token = app::reset_admin_token(&store).await?;
            eprintln!("wago: new admin token (shown only now): {token}");
            if config.admin_token.is_some() {
                eprintln!("wago: note: ADMIN_TOKEN is set, and it wins over the stored token");
            }
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(&config).await?;
    let addr = app.local_addr().context("reading the bound address")?;
    if let Some(token) = app.generated_admin_token() {
        // Standard error, not the log: the log may be shipped elsewhere.
        eprintln!(
            "\nwago: generated an admin token (shown only now; only its hash is stored):\n\n    {token}\n\n\
             Use it as `Authorization: Bearer <token>` on /admin routes; \
             `wago admin reset-token` makes a new one.\n"
        );
    }
    let shown = if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    tracing::info!(%addr, database = %config.dsn, "WAGO listening");
    eprintln!("wago: listening on {shown} (try {shown}/health)");

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    app.run(shutdown).await.context("serving HTTP")
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn stop_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
    token.cancel();
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,whatsapp_rust=warn,wacore=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
