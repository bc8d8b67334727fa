//! Start-up: from a [`Config`] to a bound, running server.
//!
//! [`App::build`] does everything that can fail before the first request
//! (lock, database, migrations, admin token, `API_KEY` tenant, binding the
//! port), so a misconfigured server stops at once with a clear message.
//! [`App::run`] then serves until its cancellation token fires.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Dsn};
use crate::events::EVENT_NAMES;
use crate::http::{self, AppState};
use crate::sessions::{Endpoint, SessionSettings, Supervisor};
use crate::store::NodeId;
use crate::store::webhooks::SecretUpdate;
use crate::store::{LockError, ProcessLock, Store, StoreError};
use crate::tenants::{ApiKey, DEFAULT_TENANT, KeyHash, TenantName};
use crate::webhooks::{Dispatcher, WebhookWaker};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("API_KEY: {0}")]
    ApiKey(String),
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
    #[error(
        "NODE_ID {node} is in use by another running process (its address: {address}); \
         give each process its own NODE_ID, or stop that one first"
    )]
    NodeInUse { node: String, address: String },
}

impl StartupError {
    /// The exit code `wago serve` ends with: 3 when the node id is in use
    /// (restarting will not help until the other process stops), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::NodeInUse { .. } => 3,
            _ => 1,
        }
    }
}

pub struct App {
    listener: TcpListener,
    /// `METRICS_LISTEN`: `/metrics` without the admin token.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    /// The database's URL, for `LISTEN` (Postgres only).
    listen_url: Option<String>,
    sessions_stop: CancellationToken,
    dispatcher: Dispatcher,
    _lock: Option<ProcessLock>,
    generated_admin_token: Option<String>,
    /// `MEDIA_RETENTION`: the node sweeps out files older than this.
    media_retention: Option<std::time::Duration>,
}

impl App {
    pub async fn build(config: &Config) -> Result<Self, StartupError> {
        let lock = match &config.dsn {
            Dsn::Sqlite(path) if path.as_os_str() != ":memory:" => {
                Some(ProcessLock::acquire(path)?)
            }
            _ => None,
        };
        let store = Store::connect(&config.dsn).await?;
        store.migrate().await?;
        tracing::info!(database = %config.dsn, "database ready");

        let generated_admin_token = match &config.admin_token {
            Some(_) => None,
            None => first_admin_token(&store).await?,
        };
        let keys_replaced = match &config.api_key {
            Some(raw) => ensure_api_key_tenant(&store, raw.expose()).await?,
            None => false,
        };
        if let Some(url) = &config.webhook_url {
            set_operator_webhook(&store, url, config.webhook_secret.as_ref()).await?;
        }
        let dispatcher = Dispatcher::new(store.clone(), config.webhooks.clone())
            .map_err(|e| StartupError::Http(e.to_string()))?;

        let sessions_stop = CancellationToken::new();
        let node = match (&config.node_id, &config.dsn) {
            (Some(id), _) => NodeId::new(id.clone()),
            // The flock makes this the only process on the database.
            (None, Dsn::Sqlite(_)) => NodeId::new("local"),
            (None, Dsn::Postgres(_)) => NodeId::generate(),
        };
        store.prune_cluster_rows().await?;

        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let address = listener
            .local_addr()
            .map_or_else(|_| "unknown".to_owned(), |a| format!("http://{a}"));
        claim_node(&store, &node, &address, config.session_lease_ttl).await?;
        let media = crate::sessions::MediaWork::new(
            Arc::new(crate::media::DiskStorage::new(&config.media.dir)),
            config.media.jobs,
        );
        let sessions = Supervisor::new(
            store.clone(),
            node,
            session_settings(config, media.clone()).await?,
            sessions_stop.clone(),
        );
        if keys_replaced {
            sessions.bus().publish(crate::sessions::Signal::Keys).await;
        }
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
            ),
            None => None,
        };
        crate::metrics::install();
        let state = AppState {
            store,
            admin_token_hash: config.admin_token.as_ref().map(|t| KeyHash::of(t.expose())),
            body_limit: config.body_limit,
            webhooks: dispatcher.waker(),
            allow_private_webhooks: config.webhooks.allow_private,
            sessions,
            api_rate: config.api_rate,
            login_limiter: crate::http::admin_ui::login_limiter(),
            keys: Default::default(),
            media,
            media_fetch: crate::media::fetch_client(config.webhooks.allow_private)
                .map_err(|e| StartupError::Http(e.to_string()))?,
        };
        let listen_url = match &config.dsn {
            Dsn::Postgres(url) => Some(url.clone()),
            Dsn::Sqlite(_) => None,
        };
        Ok(App {
            listener,
            metrics_listener,
            state,
            listen_url,
            sessions_stop,
            dispatcher,
            _lock: lock,
            generated_admin_token,
            media_retention: config.media.retention,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `METRICS_LISTEN` is bound, when it is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref()?.local_addr().ok()
    }

    /// The admin token made on this first start, to be shown once.
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    pub fn store(&self) -> &crate::store::Store {
        &self.state.store
    }

    /// Wakes the webhook dispatcher (after recording an event by hand).
    pub fn webhook_waker(&self) -> WebhookWaker {
        self.state.webhooks.clone()
    }

    pub fn sessions(&self) -> &Supervisor {
        &self.state.sessions
    }

    /// Serves until `shutdown` is cancelled, then lets requests and webhook
    /// attempts in flight finish, leaves the cluster, closes every session's
    /// client (releasing its lease, so another node takes it over at once)
    /// and closes the database.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let store = self.state.store.clone();
        let sessions = self.state.sessions.clone();
        let address = self
            .listener
            .local_addr()
            .map_or_else(|_| "unknown".to_owned(), |a| format!("http://{a}"));
        let node = {
            let sessions = sessions.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { sessions.run_node(address, self.listen_url, stop).await })
        };
        let dispatcher = tokio::spawn(self.dispatcher.run(shutdown.clone()));
        let retention = self.media_retention.map(|retention| {
            let store = store.clone();
            let storage = self.state.media.storage.clone();
            tokio::spawn(crate::media::retention::run(
                store,
                storage,
                retention,
                shutdown.clone(),
            ))
        });
        let keys = {
            let keys = self.state.keys.clone();
            let signals = sessions.bus().subscribe();
            let stop = shutdown.clone();
            tokio::spawn(async move { keys.follow(signals, stop).await })
        };
        let metrics = self.metrics_listener.map(|listener| {
            let router = crate::metrics::listener_router(self.state.clone());
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            })
        });
        let router = http::router(self.state);
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        // If serving failed, the rest must stop too.
        shutdown.cancel();
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        if let Err(e) = node.await {
            tracing::error!(error = %e, "the node's loop ended abnormally");
        }
        self.sessions_stop.cancel();
        sessions.wait().await;
        sessions
            .bus()
            .publish(crate::sessions::Signal::Placement)
            .await;
        let _ = keys.await;
        if let Some(retention) = retention {
            let _ = retention.await;
        }
        if let Err(e) = dispatcher.await {
            tracing::error!(error = %e, "webhook dispatcher ended abnormally");
        }
        store.close().await;
        tracing::info!("server stopped");
        served
    }
}

/// The version a sandbox build announces when `WA_VERSION` is unset: a
/// sandbox does not care, and the client must not look one up online.
#[cfg(feature = "sandbox")]
const SANDBOX_WA_VERSION: (u32, u32, u32) = (2, 3000, 1_023_000_000);

async fn session_settings(
    config: &Config,
    media: crate::sessions::MediaWork,
) -> Result<SessionSettings, StartupError> {
    let endpoint = match &config.wa_server_url {
        Some(url) => Endpoint::Url(url.to_string()),
        None => Endpoint::WhatsApp,
    };
    let mut settings = SessionSettings::new(endpoint);
    settings.media = media;
    #[cfg(feature = "sandbox")]
    if let Some(url) = &config.wa_server_url {
        settings.http = sandbox_media_client(url).await?;
    }
    settings.version = config.wa_version;
    #[cfg(feature = "sandbox")]
    if settings.version.is_none() {
        settings.version = Some(SANDBOX_WA_VERSION);
    }
    settings.pace = config.send_pace;
    settings.lease_ttl = config.session_lease_ttl;
    settings.queue_sweep = config.send_queue_sweep;
    Ok(settings)
}

/// Sessions' HTTP client in a sandbox build: it trusts the certificate
/// of the sandbox's media host (which the sandbox makes at start and
/// serves on its control API), so media goes over real TLS to it. Only
/// the sessions' client does; a sandbox that does not answer leaves media
/// failing with TLS errors, and nothing else.
#[cfg(feature = "sandbox")]
async fn sandbox_media_client(ws: &url::Url) -> Result<reqwest::Client, StartupError> {
    let http = |e: reqwest::Error| StartupError::Http(e.to_string());
    let mut control = ws.clone();
    let _ = control.set_scheme(if ws.scheme() == "wss" {
        "https"
    } else {
        "http"
    });
    control.set_path("/sandbox/media-certificate");
    control.set_query(None);
    let fetched = reqwest::Client::new()
        .get(control.clone())
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    let pem = match fetched {
        Ok(answer) => answer.bytes().await.map_err(http)?,
        Err(e) => {
            tracing::warn!(url = %control, error = %e, "the sandbox's media certificate is unavailable; media sends will fail");
            return Ok(crate::sessions::session_http(reqwest::Client::builder()));
        }
    };
    let certificate = reqwest::Certificate::from_pem(&pem).map_err(http)?;
    Ok(crate::sessions::session_http(
        reqwest::Client::builder().add_root_certificate(certificate),
    ))
}

/// Claims the node's row for this process. A previous process under the
/// same id that is gone (killed, crashed) holds it until its claim lapses:
/// this waits that long, at most the lease time, then takes the node over
/// with its sessions. One that is still running renews its claim meanwhile:
/// this refuses to start rather than run every session twice.
async fn claim_node(
    store: &Store,
    node: &NodeId,
    address: &str,
    ttl: std::time::Duration,
) -> Result<(), StartupError> {
    use crate::store::cluster::Claim;
    let instance = store.write_fence().tag().to_owned();
    let started_at = crate::store::now_ms();
    let mut seen: Option<(String, i64)> = None;
    loop {
        let held = match store
            .claim_node(node, &instance, address, started_at, ttl)
            .await?
        {
            Claim::Claimed { .. } => {
                tracing::info!(%node, %instance, "claimed the node");
                return Ok(());
            }
            Claim::Held(held) => held,
        };
        match &seen {
            Some((other, heartbeat))
                if *other == held.instance && held.heartbeat_at > *heartbeat =>
            {
                return Err(StartupError::NodeInUse {
                    node: node.to_string(),
                    address: held.address,
                });
            }
            Some(_) => {}
            None => tracing::warn!(
                %node, other = %held.address, lapses_in_ms = held.expires_in_ms,
                "another process holds this node id; waiting until its claim lapses \
                 (it renews it if it still runs, and then this one stops)"
            ),
        }
        if seen
            .as_ref()
            .is_none_or(|(other, _)| *other != held.instance)
        {
            seen = Some((held.instance.clone(), held.heartbeat_at));
        }
        // Until it lapses, or long enough to see a renewal (a third of the
        // lease time), whichever comes first.
        let lapse = std::time::Duration::from_millis(held.expires_in_ms.max(0) as u64 + 50);
        tokio::time::sleep(lapse.min(ttl / 3 + std::time::Duration::from_millis(500))).await;
    }
}

/// Makes an admin token if none is stored yet; returns it so it can be
/// shown once. Only its hash is kept.
async fn first_admin_token(store: &Store) -> Result<Option<String>, StoreError> {
    if store.admin_token_hash().await?.is_some() {
        return Ok(None);
    }
    let token = new_admin_token();
    let stored = store.init_admin_token_hash(&KeyHash::of(&token)).await?;
    Ok(stored.then_some(token))
}

/// Replaces the stored admin token (`wago admin reset-token`).
pub async fn reset_admin_token(store: &Store) -> Result<String, StoreError> {
    let token = new_admin_token();
    store.set_admin_token_hash(&KeyHash::of(&token)).await?;
    Ok(token)
}

fn new_admin_token() -> String {
    let key = ApiKey::generate();
    format!("wago_admin_{}", &key.expose()[ApiKey::PREFIX.len()..])
}

/// `WEBHOOK_URL` / `WEBHOOK_SECRET`: the `default` tenant's webhook, set by
/// the operator and so trusted (exempt from the private-address guard).
async fn set_operator_webhook(
    store: &Store,
    url: &url::Url,
    secret: Option<&crate::config::Secret>,
) -> Result<(), StoreError> {
    let Some(tenant) = store.get_tenant_by_name(DEFAULT_TENANT).await? else {
        tracing::warn!(
            "WEBHOOK_URL is set but there is no tenant \"default\" (set API_KEY to make one); ignored"
        );
        return Ok(());
    };
    let secret = match secret {
        Some(s) => SecretUpdate::Set(s.expose()),
        None => SecretUpdate::Remove,
    };
    let events: Vec<String> = EVENT_NAMES.iter().map(|e| (*e).to_owned()).collect();
    store
        .put_webhook(&tenant.tenant_id(), url.as_str(), secret, &events, true)
        .await
}

/// True when `API_KEY` replaced the tenant's key: other nodes may still
/// remember the old one.
async fn ensure_api_key_tenant(store: &Store, raw: &str) -> Result<bool, StartupError> {
    let key = ApiKey::from_presented(raw)
        .ok_or_else(|| StartupError::ApiKey("must be 1 to 512 characters".into()))?;
    let name = TenantName::parse(DEFAULT_TENANT).map_err(StartupError::ApiKey)?;
    let (tenant, changed) = store
        .ensure_env_key(&name, &key)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => StartupError::ApiKey(m),
            other => StartupError::Store(other),
        })?;
    if changed {
        tracing::info!(tenant_id = %tenant.id, "API_KEY is now the key of tenant \"default\"");
    }
    Ok(changed)
}
