//! Configuration, read once at start-up from environment variables.
//!
//! Every value is parsed into its final type here, so the rest of the code
//! never looks at a raw string. Bad values are all reported at once, each
//! with the variable's name, instead of failing on the first one.
//!
//! Tests build a [`Config`] from a map they pass in ([`Config::from_lookup`]),
//! never by setting process environment variables.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::types::Dsn;
use crate::types::SendPace;

/// A secret from the environment. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub dsn: Dsn,
    /// The old single-tenant key: makes a tenant named `default` with it.
    pub api_key: Option<Secret>,
    pub webhook_url: Option<url::Url>,
    pub webhook_secret: Option<Secret>,
    pub admin_token: Option<Secret>,
    /// The WhatsApp WebSocket to connect sessions to (a sandbox in tests).
    pub wa_server_url: Option<url::Url>,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    pub log_format: LogFormat,
    pub webhooks: WebhookSettings,
    /// The WhatsApp Web version sessions announce (`WA_VERSION`, e.g.
    /// `2.3000.1023456789`); unset, the client looks up the current one.
    pub wa_version: Option<(u32, u32, u32)>,
    /// How fast one number may send (`SEND_RATE_PER_MINUTE`, `SEND_BURST`).
    pub send_pace: SendPace,
    /// Requests per second per API key, and the burst above it
    /// (`API_RATE_LIMIT`, `API_RATE_BURST`); 0 turns the limit off.
    pub api_rate: ApiRate,
    /// This node's name in session leases (`NODE_ID`). A node restarted
    /// with the same name takes its sessions back at once instead of
    /// waiting for their leases to expire. Unset: `local` on SQLite (one
    /// process per database), a fresh name per process on Postgres.
    pub node_id: Option<String>,
    /// How long a session's lease lasts without renewal
    /// (`SESSION_LEASE_TTL`): how soon another node takes over the
    /// sessions of a node that died. Renewed every third of it.
    pub session_lease_ttl: Duration,
    /// How often a node looks for sends left queued without a wake-up
    /// (`SEND_QUEUE_SWEEP`); sends normally wake their queue at once.
    pub send_queue_sweep: Duration,
    /// A second address serving `GET /metrics` without the admin token
    /// (`METRICS_LISTEN`, e.g. `127.0.0.1:9090`); unset, only the API's
    /// `/metrics` answers, with the admin token.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where media files are kept and how many media jobs run at once.
    pub media: MediaSettings,
}

/// Media storage and work (`MEDIA_DIR`, `MEDIA_JOBS`, `MEDIA_RETENTION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    /// The directory files are kept in on the local disk.
    pub dir: PathBuf,
    /// Media sends (encryption and upload) one node runs at once.
    pub jobs: u32,
    /// Files kept longer are deleted (their messages stay, marked
    /// `expired`); `None` keeps them for ever.
    pub retention: Option<Duration>,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            dir: PathBuf::from("wago-media"),
            jobs: 4,
            retention: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// The tenant API's rate limit per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRate {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for ApiRate {
    fn default() -> Self {
        ApiRate {
            per_second: 20,
            burst: 50,
        }
    }
}

/// How webhooks are delivered (WEBHOOKS.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Delay before each retry; its length is the number of retries.
    pub retry_schedule: Vec<Duration>,
    /// How long one attempt may take before it counts as failed.
    pub timeout: Duration,
    /// Deliver to loopback and private addresses (tenant-set URLs).
    pub allow_private: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        let secs = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
        WebhookSettings {
            retry_schedule: secs.into_iter().map(Duration::from_secs).collect(),
            timeout: Duration::from_secs(15),
            allow_private: false,
        }
    }
}

/// Every environment variable `wago serve` reads: its name, its default
/// and what it does. `wago serve --help` prints this table; a test checks
/// that it, the README and `deploy/wago.env.example` name every variable
/// this module reads.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("PORT", "8080", "HTTP port"),
    ("HOST", "0.0.0.0", "IP address to listen on"),
    (
        "DSN",
        "sqlite://wago.db",
        "database: sqlite://PATH or postgres://USER@HOST/DB",
    ),
    ("DATABASE_URL", "", "the same as DSN (set one of them)"),
    (
        "ADMIN_TOKEN",
        "generated at first start",
        "the admin API's bearer token, 16+ characters",
    ),
    (
        "API_KEY",
        "",
        "the old single-tenant key: makes a tenant named `default`",
    ),
    ("WEBHOOK_URL", "", "the `default` tenant's webhook"),
    ("WEBHOOK_SECRET", "", "its signing secret"),
    (
        "WEBHOOK_RETRY_SCHEDULE",
        "5s,5m,30m,2h,5h,10h,10h",
        "delay before each webhook retry",
    ),
    (
        "WEBHOOK_TIMEOUT",
        "15s",
        "how long one webhook attempt may take",
    ),
    (
        "WEBHOOK_ALLOW_PRIVATE",
        "false",
        "let webhooks point at private addresses",
    ),
    (
        "WA_SERVER_URL",
        "WhatsApp",
        "the WhatsApp WebSocket sessions connect to",
    ),
    (
        "WA_VERSION",
        "looked up",
        "the WhatsApp Web version sessions announce",
    ),
    (
        "SEND_RATE_PER_MINUTE",
        "60",
        "one number's sends per minute, on average (0: no pace)",
    ),
    ("SEND_BURST", "10", "one number's sends at once"),
    (
        "API_RATE_LIMIT",
        "20",
        "requests per second per API key (0: no limit)",
    ),
    ("API_RATE_BURST", "50", "requests at once per API key"),
    (
        "SESSION_LEASE_TTL",
        "30s",
        "how long a session's lease lasts unrenewed",
    ),
    (
        "SEND_QUEUE_SWEEP",
        "60s",
        "how often a node looks for sends left without a wake-up",
    ),
    (
        "NODE_ID",
        "local on SQLite, fresh on Postgres",
        "this node's name in session leases",
    ),
    ("BODY_LIMIT", "65536", "largest request body, in bytes"),
    (
        "MEDIA_DIR",
        "wago-media",
        "directory media files are kept in until sent",
    ),
    ("MEDIA_JOBS", "4", "media uploads one node runs at once"),
    (
        "MEDIA_RETENTION",
        "30d",
        "how long media files are kept (0: for ever)",
    ),
    (
        "METRICS_LISTEN",
        "",
        "an address serving /metrics without the admin token",
    ),
    ("LOG_FORMAT", "text", "text or json"),
    (
        "RUST_LOG",
        "info,sqlx=warn,whatsapp_rust=warn,wacore=warn",
        "log levels",
    ),
];

/// [`VARIABLES`] as the text after `wago serve --help`.
pub fn variables_help() -> String {
    let width = VARIABLES.iter().map(|v| v.0.len()).max().unwrap_or(0);
    let mut out = String::from("Environment variables (all optional):\n");
    for (name, default, meaning) in VARIABLES {
        let default = if default.is_empty() {
            String::new()
        } else {
            format!(" [default: {default}]")
        };
        out.push_str(&format!("  {name:width$}  {meaning}{default}\n"));
    }
    out
}

/// Every bad variable, each on its own line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<String>);

pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    /// Reads every variable through `lookup`. Empty values count as unset,
    /// as they do for most shells' `VAR= cmd`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut errors = Errors::default();

        let host = get("HOST").map_or(Ok(IpAddr::from([0, 0, 0, 0])), |v| {
            v.trim()
                .parse()
                .map_err(|_| format!("{v:?} is not an IP address (e.g. 0.0.0.0 or 127.0.0.1)"))
        });
        let host = errors.check("HOST", host);
        let port = get("PORT").map_or(Ok(8080), |v| {
            v.trim()
                .parse::<u16>()
                .map_err(|_| format!("{v:?} is not a port number (0-65535)"))
        });
        let port = errors.check("PORT", port);

        let dsn = match (get("DSN"), get("DATABASE_URL")) {
            (Some(a), Some(b)) if a.trim() != b.trim() => {
                Err("DSN and DATABASE_URL are both set and differ; set only one of them".to_owned())
            }
            (Some(v), _) | (None, Some(v)) => Dsn::parse(&v),
            (None, None) => Ok(Dsn::Sqlite(PathBuf::from(Dsn::DEFAULT_SQLITE_FILE))),
        };
        let dsn = errors.check("DSN", dsn);

        let webhook_url = get("WEBHOOK_URL").map(|v| parse_url(&v, &["http", "https"]));
        let webhook_url = webhook_url.and_then(|r| errors.check("WEBHOOK_URL", r));
        let wa_server_url = get("WA_SERVER_URL").map(|v| parse_url(&v, &["ws", "wss"]));
        let wa_server_url = wa_server_url.and_then(|r| errors.check("WA_SERVER_URL", r));

        let admin_token = get("ADMIN_TOKEN").map(|v| {
            if v.len() < MIN_ADMIN_TOKEN_LEN {
                Err(format!(
                    "must be at least {MIN_ADMIN_TOKEN_LEN} characters (it guards every tenant)"
                ))
            } else {
                Ok(Secret(v))
            }
        });
        let admin_token = admin_token.and_then(|r| errors.check("ADMIN_TOKEN", r));

        let body_limit = get("BODY_LIMIT").map_or(Ok(DEFAULT_BODY_LIMIT), |v| {
            match v.trim().parse::<usize>() {
                Ok(n) if n >= 1024 => Ok(n),
                _ => Err(format!("{v:?} is not a byte count of at least 1024")),
            }
        });
        let body_limit = errors.check("BODY_LIMIT", body_limit);

        let log_format = match get("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!("{other:?} is not one of: text, json")),
        };
        let log_format = errors.check("LOG_FORMAT", log_format);

        let defaults = WebhookSettings::default();
        let retry_schedule =
            get("WEBHOOK_RETRY_SCHEDULE").map_or(Ok(defaults.retry_schedule), |v| {
                v.split(',')
                    .map(parse_duration)
                    .collect::<Result<Vec<_>, _>>()
            });
        let retry_schedule = errors.check("WEBHOOK_RETRY_SCHEDULE", retry_schedule);
        let timeout = get("WEBHOOK_TIMEOUT").map_or(Ok(defaults.timeout), |v| {
            parse_duration(&v).and_then(|d| {
                if d.is_zero() {
                    Err("must be longer than 0".to_owned())
                } else {
                    Ok(d)
                }
            })
        });
        let timeout = errors.check("WEBHOOK_TIMEOUT", timeout);
        let allow_private = get("WEBHOOK_ALLOW_PRIVATE").map_or(Ok(false), |v| parse_bool(&v));
        let allow_private = errors.check("WEBHOOK_ALLOW_PRIVATE", allow_private);

        let lease_ttl = get("SESSION_LEASE_TTL")
            .map_or(Ok(Duration::from_secs(30)), |v| parse_whole_seconds(&v));
        let session_lease_ttl = errors
            .check("SESSION_LEASE_TTL", lease_ttl)
            .unwrap_or(Duration::from_secs(30));
        let sweep = get("SEND_QUEUE_SWEEP")
            .map_or(Ok(Duration::from_secs(60)), |v| parse_whole_seconds(&v));
        let send_queue_sweep = errors
            .check("SEND_QUEUE_SWEEP", sweep)
            .unwrap_or(Duration::from_secs(60));
        let metrics_listen = get("METRICS_LISTEN").map(|v| {
            v.trim()
                .parse::<std::net::SocketAddr>()
                .map_err(|_| format!("{v:?} is not an address and port (e.g. 127.0.0.1:9090)"))
        });
        let metrics_listen = metrics_listen.and_then(|r| errors.check("METRICS_LISTEN", r));
        let wa_version = get("WA_VERSION").map(|v| parse_version(&v));
        let wa_version = wa_version.and_then(|r| errors.check("WA_VERSION", r));
        let count = |name: &str, default: u32, errors: &mut Errors| {
            let parsed = get(name).map_or(Ok(default), |v| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{v:?} is not a whole number (0 or more)"))
            });
            errors.check(name, parsed).unwrap_or(default)
        };
        let pace = SendPace::default();
        let send_pace = SendPace {
            per_minute: count("SEND_RATE_PER_MINUTE", pace.per_minute, &mut errors),
            burst: count("SEND_BURST", pace.burst, &mut errors),
        };
        let media_defaults = MediaSettings::default();
        let media_jobs = count("MEDIA_JOBS", media_defaults.jobs, &mut errors);
        if media_jobs == 0 {
            errors.0.push("MEDIA_JOBS: must be at least 1".into());
        }
        let retention = get("MEDIA_RETENTION").map_or(Ok(media_defaults.retention), |v| {
            parse_duration(&v).map(|d| (!d.is_zero()).then_some(d))
        });
        let media = MediaSettings {
            dir: get("MEDIA_DIR").map_or(media_defaults.dir, |v| PathBuf::from(v.trim())),
            jobs: media_jobs,
            retention: errors
                .check("MEDIA_RETENTION", retention)
                .unwrap_or(media_defaults.retention),
        };
        let rate = ApiRate::default();
        let api_rate = ApiRate {
            per_second: count("API_RATE_LIMIT", rate.per_second, &mut errors),
            burst: count("API_RATE_BURST", rate.burst, &mut errors),
        };

        if get("WEBHOOK_SECRET").is_some() && get("WEBHOOK_URL").is_none() {
            errors
                .0
                .push("WEBHOOK_SECRET: set without WEBHOOK_URL; set both or neither".into());
        }

        let webhooks = match (retry_schedule, timeout, allow_private) {
            (Some(retry_schedule), Some(timeout), Some(allow_private)) => Some(WebhookSettings {
                retry_schedule,
                timeout,
                allow_private,
            }),
            _ => None,
        };
        match (host, port, dsn, body_limit, log_format, webhooks) {
            (
                Some(host),
                Some(port),
                Some(dsn),
                Some(body_limit),
                Some(log_format),
                Some(webhooks),
            ) if errors.0.is_empty() => Ok(Config {
                host,
                port,
                dsn,
                api_key: get("API_KEY").map(|v| Secret(v.trim().to_owned())),
                webhook_url,
                webhook_secret: get("WEBHOOK_SECRET").map(Secret),
                admin_token,
                wa_server_url,
                body_limit,
                log_format,
                webhooks,
                wa_version,
                send_pace,
                api_rate,
                node_id: get("NODE_ID").map(|v| v.trim().to_owned()),
                session_lease_ttl,
                send_queue_sweep,
                metrics_listen,
                media,
            }),
            _ => Err(ConfigError(errors.0)),
        }
    }
}

/// A duration of at least a second (`30s`, `2m`).
fn parse_whole_seconds(value: &str) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(d)
}

/// A duration such as `500ms`, `5s`, `5m`, `2h`, `30d` (a bare number is
/// seconds).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 500ms, 5s, 5m or 2h"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => {
            return Err(format!(
                "{raw:?}: unknown unit {other:?} (use ms, s, m, h or d)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{raw:?} is out of range"))
}

/// `2.3000.1023456789`: WhatsApp Web's three-part version.
fn parse_version(raw: &str) -> Result<(u32, u32, u32), String> {
    let parts: Vec<u32> = raw
        .trim()
        .split('.')
        .map(|p| p.parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{raw:?} is not a version like 2.3000.1023456789"))?;
    match parts[..] {
        [a, b, c] => Ok((a, b, c)),
        _ => Err(format!("{raw:?} is not a version like 2.3000.1023456789")),
    }
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{raw:?} is not true or false")),
    }
}

/// Collects the bad variables so all are reported together.
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn check<T>(&mut self, name: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|e| self.0.push(format!("{name}: {e}"))).ok()
    }
}

fn parse_url(raw: &str, schemes: &[&str]) -> Result<url::Url, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "{raw:?} must start with {}",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("{raw:?} has no host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&vars)
    }

    #[test]
    fn defaults_use_sqlite_in_the_working_directory() {
        let c = config(&[]).unwrap();
        assert_eq!(c.dsn, Dsn::Sqlite("wago.db".into()));
        assert_eq!(c.port, 8080);
        assert_eq!(c.body_limit, 64 * 1024);
        assert!(c.api_key.is_none() && c.admin_token.is_none());
    }

    #[test]
    fn session_settings_parse_and_bad_ones_are_named() {
        let c = config(&[
            ("WA_VERSION", "2.3000.1023456789"),
            ("SEND_RATE_PER_MINUTE", "0"),
            ("API_RATE_LIMIT", "5"),
            ("SESSION_LEASE_TTL", "10s"),
        ])
        .unwrap();
        assert_eq!(c.wa_version, Some((2, 3000, 1_023_456_789)));
        assert_eq!(c.send_pace.per_minute, 0);
        assert_eq!(c.send_pace.burst, 10, "the default stays");
        assert_eq!(
            c.api_rate,
            ApiRate {
                per_second: 5,
                burst: 50
            }
        );
        assert_eq!(c.session_lease_ttl, Duration::from_secs(10));
        let err = config(&[
            ("WA_VERSION", "2.3000"),
            ("SEND_BURST", "-1"),
            ("API_RATE_BURST", "many"),
            ("SESSION_LEASE_TTL", "10ms"),
        ])
        .unwrap_err()
        .to_string();
        for name in [
            "WA_VERSION",
            "SEND_BURST",
            "API_RATE_BURST",
            "SESSION_LEASE_TTL",
        ] {
            assert!(err.contains(&format!("- {name}:")), "{name} in {err}");
        }
    }

    #[test]
    fn the_send_queue_sweep_defaults_to_a_minute_and_takes_whole_seconds() {
        assert_eq!(
            config(&[]).unwrap().send_queue_sweep,
            Duration::from_secs(60)
        );
        let c = config(&[("SEND_QUEUE_SWEEP", "5s")]).unwrap();
        assert_eq!(c.send_queue_sweep, Duration::from_secs(5));
        let err = config(&[("SEND_QUEUE_SWEEP", "500ms")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("- SEND_QUEUE_SWEEP:"), "{err}");
    }

    #[test]
    fn old_sqlite3_form_means_the_same_file() {
        let d = Dsn::parse("sqlite3://file:session.db?_foreign_keys=on").unwrap();
        assert_eq!(d, Dsn::Sqlite("session.db".into()));
        assert_eq!(
            Dsn::parse("sqlite://data/w.db?mode=rwc").unwrap(),
            Dsn::Sqlite("data/w.db".into())
        );
        assert_eq!(
            Dsn::parse("sqlite:w.db").unwrap(),
            Dsn::Sqlite("w.db".into())
        );
    }

    #[test]
    fn dsn_wins_only_when_both_agree() {
        let c = config(&[("DATABASE_URL", "postgres://u@h/db")]).unwrap();
        assert!(c.dsn.is_postgres());
        let err = config(&[("DSN", "sqlite://a.db"), ("DATABASE_URL", "sqlite://b.db")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("both set and differ"), "{err}");
    }

    #[test]
    fn every_bad_value_is_reported_by_name() {
        let err = config(&[
            ("PORT", "eighty"),
            ("DSN", "mysql://x"),
            ("WEBHOOK_URL", "ftp://x"),
            ("ADMIN_TOKEN", "short"),
            ("WA_SERVER_URL", "http://127.0.0.1/ws"),
            ("LOG_FORMAT", "xml"),
        ])
        .unwrap_err();
        let names: Vec<&str> = err.0.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "PORT",
                "DSN",
                "WEBHOOK_URL",
                "WA_SERVER_URL",
                "ADMIN_TOKEN",
                "LOG_FORMAT"
            ]
        );
    }

    #[test]
    fn webhook_schedule_and_timeout_are_parsed() {
        let c = config(&[
            ("WEBHOOK_RETRY_SCHEDULE", "1s, 500ms,2m,1h"),
            ("WEBHOOK_TIMEOUT", "3s"),
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
        ])
        .unwrap();
        let w = c.webhooks;
        assert_eq!(
            w.retry_schedule,
            [1_000, 500, 120_000, 3_600_000].map(Duration::from_millis)
        );
        assert_eq!(w.timeout, Duration::from_secs(3));
        assert!(w.allow_private);
        assert_eq!(config(&[]).unwrap().webhooks.retry_schedule.len(), 7);
        let err = config(&[
            ("WEBHOOK_RETRY_SCHEDULE", "1s,soon"),
            ("WEBHOOK_TIMEOUT", "0s"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("WEBHOOK_RETRY_SCHEDULE") && err.contains("WEBHOOK_TIMEOUT"),
            "{err}"
        );
    }

    #[test]
    fn postgres_password_is_hidden_when_shown() {
        let d = Dsn::parse("postgres://wago:hunter2@db.example/wago").unwrap();
        let shown = d.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(format!("{:?}", Secret::new("hunter2")).contains("***"));
    }
}
