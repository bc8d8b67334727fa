//! `wago`: the command line. Only `wago sandbox` exists on this branch; the
//! server commands come with the rest of the crate.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wago",
    version,
    about = "Multi-tenant HTTP API server for WhatsApp"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the simulated WhatsApp network (WebSocket and control API).
    #[cfg(feature = "sandbox")]
    Sandbox(wago::sandbox::SandboxArgs),
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => {
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            wago::sandbox::run(args, stop).await?;
        }
        Command::Version => println!("wago {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
