//! `wago`: the command line.
//!
//! - `wago serve`: the HTTP API server (the default when no command is given).
//! - `wago serve --sandbox`: the same, with an embedded sandbox that its
//!   sessions connect to (sandbox builds only).
//! - `wago pair`: pair the `default` tenant's number from this terminal.
//! - `wago migrate`: apply database migrations and exit.
//! - `wago openapi`: print the API's OpenAPI document.
//! - `wago migrate-db --from DSN --to DSN`: copy one database into another.
//! - `wago admin reset-token`: replace the stored admin token.
//! - `wago admin set-password`: set the admin page's password.
//! - `wago sandbox`: the simulated WhatsApp network (builds with the
//!   `sandbox` feature only).
//!
//! Configuration is environment variables, read and checked by
//! `config::Config` (README.md lists them). Logs go to standard error
//! through `tracing`: `RUST_LOG` picks the levels, `LOG_FORMAT=json` makes
//! them JSON lines.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
    Serve(ServeArgs),
    /// Pair the `default` tenant (the one `API_KEY` makes) by QR code shown
    /// in this terminal, then exit. Stop `wago serve` first on SQLite.
    Pair,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Copy every table that holds data (WhatsApp keys included) from one
    /// database to another, e.g. SQLite to Postgres, then count both
    /// sides. Stop every server on both first.
    MigrateDb(MigrateDbArgs),
    /// Print the API's OpenAPI 3.1 document (as `GET /openapi.json` serves
    /// it), then exit.
    Openapi,
    /// Administration tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Serve the simulated WhatsApp network (WebSocket and control API).
    #[cfg(feature = "sandbox")]
    Sandbox(wago::sandbox::SandboxArgs),
}

#[derive(Debug, clap::Args)]
struct MigrateDbArgs {
    /// The database to copy: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long)]
    from: String,
    /// The database to fill: created and migrated if new, and refused
    /// when it holds data, unless --replace.
    #[arg(long)]
    to: String,
    /// Delete what the target holds before copying.
    #[arg(long)]
    replace: bool,
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// Run a simulated WhatsApp network in this process and connect every
    /// session to it: pair simulated phones and send without WhatsApp.
    /// It listens on `SANDBOX_LISTEN` (a free loopback port by default) and
    /// keeps its state in `SANDBOX_STATE` (default `wago-sandbox.json`).
    #[cfg(feature = "sandbox")]
    #[arg(long)]
    sandbox: bool,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Make a new admin token, print it once, and store only its hash.
    ResetToken,
    /// Set the password that signs the admin page in (read from standard
    /// input, one line, at least 12 characters); only its argon2id hash
    /// is stored.
    SetPassword,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `wago serve --help` lists the environment variables it reads.
    let command = Cli::command().mut_subcommand("serve", |serve| {
        serve.after_help(wago::config::variables_help())
    });
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    #[cfg(feature = "sandbox")]
    if let Some(Command::Sandbox(args)) = cli.command {
        // The sandbox needs none of the server's configuration.
        return sandbox(args).await;
    }
    if let Some(Command::Openapi) = cli.command {
        println!("{}", wago::http::openapi::document_pretty());
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(Command::MigrateDb(args)) = &cli.command {
        return migrate_db(args).await;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wago: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeArgs::default()));
    match run(command, config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wago: {e:#}");
            let code = e
                .downcast_ref::<wago::app::StartupError>()
                .map_or(1, wago::app::StartupError::exit_code);
            std::process::ExitCode::from(code)
        }
    }
}

/// `wago migrate-db`: exit code 2 for a DSN that does not parse, 1 when
/// the copy fails (the target may then hold part of it: run again with
/// --replace).
async fn migrate_db(args: &MigrateDbArgs) -> std::process::ExitCode {
    let parse = |flag: &str, raw: &str| {
        wago::config::Dsn::parse(raw).map_err(|e| eprintln!("wago migrate-db: {flag}: {e}"))
    };
    let (Ok(from), Ok(to)) = (parse("--from", &args.from), parse("--to", &args.to)) else {
        return std::process::ExitCode::from(2);
    };
    match wago::migrate_db::migrate_db(&from, &to, args.replace, &mut std::io::stderr()).await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wago migrate-db: {e:#}");
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
        Command::Openapi | Command::MigrateDb(_) => {
            unreachable!("handled before the configuration is read")
        }
        Command::Serve(args) => serve(args, config).await,
        Command::Pair => pair(config).await,
        Command::Migrate => {
            let store = Store::connect(&config.dsn).await?;
            store.migrate().await?;
            eprintln!("wago: migrations applied to {}", config.dsn);
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::SetPassword,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.chars().count() < 12 {
                anyhow::bail!("the password must be at least 12 characters");
            }
            let hash = wago::http::admin_ui::hash_password(password)
                .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
            let store = Store::connect(&config.dsn).await?;
            store.migrate().await?;
            store.set_admin_password_hash(&hash).await?;
            eprintln!("wago: the admin password is set; sign in at /admin");
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

async fn serve(args: ServeArgs, config: Config) -> anyhow::Result<()> {
    #[cfg(feature = "sandbox")]
    let (_sandbox, config) = embedded_sandbox(&args, config).await?;
    #[cfg(not(feature = "sandbox"))]
    let _ = args;
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

/// `serve --sandbox`: starts the sandbox and points sessions at it.
#[cfg(feature = "sandbox")]
async fn embedded_sandbox(
    args: &ServeArgs,
    mut config: Config,
) -> anyhow::Result<(Option<wago::sandbox::RunningSandbox>, Config)> {
    if !args.sandbox {
        return Ok((None, config));
    }
    let listen = match std::env::var("SANDBOX_LISTEN") {
        Ok(raw) if !raw.trim().is_empty() => raw
            .trim()
            .parse()
            .context("SANDBOX_LISTEN: not an address like 127.0.0.1:7000")?,
        _ => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let state = std::env::var("SANDBOX_STATE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "wago-sandbox.json".to_owned());
    let sandbox_config = wago::sandbox::SandboxConfig::new(listen).with_state_file(state);
    let sandbox = wago::sandbox::start(sandbox_config)
        .await
        .context("starting the embedded sandbox")?;
    eprintln!(
        "wago: sandbox on {} (control API {}); sessions connect to it",
        sandbox.ws_url(),
        sandbox.http_url()
    );
    config.wa_server_url = Some(
        sandbox
            .ws_url()
            .parse()
            .context("the sandbox's WebSocket URL")?,
    );
    Ok((Some(sandbox), config))
}

/// `wago pair`: shows the `default` tenant's QR codes here until a phone
/// scans one and the session connects.
async fn pair(config: Config) -> anyhow::Result<()> {
    use wago::sessions::{Mode, SessionState};
    let app = App::build(&config).await?;
    let tenant = app
        .store()
        .get_tenant_by_name(wago::tenants::DEFAULT_TENANT)
        .await?
        .context("there is no tenant \"default\": set API_KEY to make it")?
        .tenant_id();
    let sessions = app.sessions().clone();
    let mut status = sessions.ensure_running(&tenant, Mode::Pair);
    let mut shown = String::new();
    let outcome = loop {
        let now = status.borrow_and_update().clone();
        match now.state {
            SessionState::Connected => break Ok(now),
            SessionState::Unpaired | SessionState::LoggedOut if now.error.is_some() => {
                break Err(anyhow::anyhow!(now.error.unwrap_or_default()));
            }
            _ => {}
        }
        if let Some(qr) = now.qr.filter(|q| q.code != shown) {
            let code = qrcode::QrCode::new(qr.code.as_bytes()).context("encoding the QR code")?;
            let art = code
                .render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build();
            eprintln!(
                "{art}\nScan this in WhatsApp > Linked devices > Link a device.\n\
                 The code as text (for a sandbox's /link): {}\n",
                qr.code
            );
            shown = qr.code;
        }
        if status.changed().await.is_err() {
            break Err(anyhow::anyhow!("the session ended before it connected"));
        }
    };
    sessions.stop(&tenant).await?;
    let status = outcome?;
    eprintln!(
        "wago: paired {}; `wago serve` will connect it",
        status.jid.unwrap_or_default()
    );
    Ok(())
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
