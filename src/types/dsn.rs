//! Where the database lives.

use std::fmt;
use std::path::PathBuf;

/// Where the database lives, parsed from `DSN` / `DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum Dsn {
    /// A SQLite file. `:memory:` is allowed for throwaway runs.
    Sqlite(PathBuf),
    /// A Postgres URL, kept as given (it may hold a password: never log it).
    Postgres(String),
}

impl Dsn {
    pub const DEFAULT_SQLITE_FILE: &'static str = "wago.db";

    /// Accepts `sqlite://PATH`, `sqlite:PATH`, the old server's
    /// `sqlite3://file:PATH?...` and `postgres://` / `postgresql://` URLs.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            url::Url::parse(raw).map_err(|e| format!("not a valid Postgres URL: {e}"))?;
            return Ok(Dsn::Postgres(raw.to_owned()));
        }
        let path = if let Some(rest) = raw.strip_prefix("sqlite3://") {
            // The old form: sqlite3://file:session.db?_foreign_keys=on. Its
            // query parameters are ignored: WAGO sets its own pragmas.
            let rest = rest.strip_prefix("file:").unwrap_or(rest);
            rest.split('?').next().unwrap_or_default()
        } else if let Some(rest) = raw.strip_prefix("sqlite://") {
            rest.split('?').next().unwrap_or_default()
        } else if let Some(rest) = raw.strip_prefix("sqlite:") {
            rest.split('?').next().unwrap_or_default()
        } else {
            return Err(
                "expected sqlite://PATH, sqlite3://file:PATH or postgres://USER@HOST/DB".into(),
            );
        };
        if path.is_empty() {
            return Err("the SQLite path is empty".into());
        }
        Ok(Dsn::Sqlite(PathBuf::from(path)))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Dsn::Postgres(_))
    }
}

/// Shows the DSN without any password, for logs and start-up messages.
impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dsn::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Dsn::Postgres(raw) => match url::Url::parse(raw) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    write!(f, "{url}")
                }
                Err(_) => f.write_str("postgres://(unparsable)"),
            },
        }
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
