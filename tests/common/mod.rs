//! Test helpers: a fresh database per test (SQLite file or Postgres
//! database), the real app spawned on a random port, and `db_tests!`,
//! which runs one test body against both databases.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;

use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use wago::app::App;
use wago::config::Config;

pub mod receiver;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Where the Postgres tests create their databases. Tests never skip when
/// it is down: they fail, saying so.
fn postgres_admin_url() -> String {
    std::env::var("WAGO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test and is removed after it.
pub enum TestDb {
    Sqlite {
        dir: tempfile::TempDir,
    },
    Postgres {
        name: String,
        admin_url: String,
        /// Where the server keeps media files (`MEDIA_DIR`).
        media: tempfile::TempDir,
    },
}

impl TestDb {
    pub async fn sqlite() -> Self {
        TestDb::Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub async fn postgres() -> Self {
        let admin_url = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Postgres tests need a server at {admin_url} ({e}); \
                     run ./scripts/test, which starts it"
                )
            });
        sweep_leftovers(&mut conn).await;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!("wago_test_{secs}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        TestDb::Postgres {
            name,
            admin_url,
            media: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The server's `MEDIA_DIR`, removed with the database.
    pub fn media_dir(&self) -> std::path::PathBuf {
        match self {
            TestDb::Sqlite { dir } => dir.path().join("media"),
            TestDb::Postgres { media, .. } => media.path().to_owned(),
        }
    }

    pub fn dsn(&self) -> String {
        match self {
            TestDb::Sqlite { dir } => format!("sqlite://{}", dir.path().join("wago.db").display()),
            TestDb::Postgres {
                name, admin_url, ..
            } => {
                let mut url = url::Url::parse(admin_url).expect("admin url");
                url.set_path(name);
                url.to_string()
            }
        }
    }

    /// This database's store, migrated, without the app around it.
    pub async fn store(&self) -> wago::store::Store {
        let dsn = wago::config::Dsn::parse(&self.dsn()).expect("test dsn");
        let store = wago::store::Store::connect(&dsn).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres {
            name, admin_url, ..
        } = self
        else {
            return;
        };
        let (name, admin_url) = (name.clone(), admin_url.clone());
        // Drop cannot await; a short-lived runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Drops test databases older than an hour: leftovers of killed runs.
async fn sweep_leftovers(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'wago_test_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for name in names {
        let created: Option<u64> = name.split('_').nth(2).and_then(|s| s.parse().ok());
        if created.is_some_and(|t| t + 3600 < now) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// The configuration a test server starts with, plus the test's own vars.
pub fn test_config(db: &TestDb, extra: &[(&str, &str)]) -> Config {
    let media = db.media_dir().display().to_string();
    let mut vars: HashMap<String, String> = [
        ("DSN", db.dsn().as_str()),
        ("MEDIA_DIR", media.as_str()),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_map(&vars).expect("test config")
}

/// The real app, serving on a random loopback port, on a runtime of its
/// own so that a test can crash it: `crash()` drops every task at once,
/// as `kill -9` would, without a graceful anything.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `METRICS_LISTEN`'s address, when the test set it.
    pub metrics_addr: Option<SocketAddr>,
    pub http: reqwest::Client,
    pub store: wago::store::Store,
    pub generated_admin_token: Option<String>,
    pub webhooks: wago::webhooks::WebhookWaker,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestApp {
    pub async fn spawn(db: &TestDb, extra: &[(&str, &str)]) -> Self {
        Self::spawn_with(test_config(db, extra)).await
    }

    pub async fn spawn_with(config: Config) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("app runtime");
        // After `crash()` the old runtime's threads may still be dropping
        // its tasks, and with them the SQLite lock: wait for that, as a
        // process restarted after `kill -9` never has to.
        let app = runtime
            .spawn(async move {
                let start = std::time::Instant::now();
                loop {
                    match App::build(&config).await {
                        Err(wago::app::StartupError::Lock(_))
                            if start.elapsed() < std::time::Duration::from_secs(10) =>
                        {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await
                        }
                        built => break built,
                    }
                }
            })
            .await
            .expect("build task")
            .expect("app starts");
        let addr = app.local_addr().expect("bound");
        let metrics_addr = app.metrics_addr();
        let store = app.store().clone();
        let webhooks = app.webhook_waker();
        let generated_admin_token = app.generated_admin_token().map(str::to_owned);
        let shutdown = CancellationToken::new();
        let task = runtime.spawn(app.run(shutdown.clone()));
        TestApp {
            addr,
            metrics_addr,
            http: reqwest::Client::new(),
            store,
            generated_admin_token,
            webhooks,
            shutdown,
            task: Some(task),
            runtime: Some(runtime),
        }
    }

    /// Ends the app abruptly: no request, attempt or transaction in flight
    /// gets to finish. Its database handles are dead afterwards.
    pub fn crash(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server gracefully and waits until it has let go of the
    /// database.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// GET with `Authorization: Bearer <token>`; returns the status.
    pub async fn bearer_status(&self, path: &str, token: &str) -> u16 {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await;
        res.unwrap().status().as_u16()
    }

    /// An admin call without a body; returns the status and the JSON body.
    pub async fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> (u16, serde_json::Value) {
        let res = self.admin(method, path).send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Creates a tenant through the admin API; returns (id, api key).
    pub async fn create_tenant(&self, name: &str) -> (String, String) {
        let res = self
            .admin(reqwest::Method::POST, "/admin/tenants")
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "create tenant {name}");
        let body: serde_json::Value = res.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["api_key"].as_str().unwrap().to_owned(),
        )
    }

    /// GET as a tenant; returns the status and the JSON body.
    pub async fn tenant_get(&self, key: &str, path: &str) -> (u16, serde_json::Value) {
        let res = self
            .http
            .get(self.url(path))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs each named `async fn(TestDb)` once on SQLite and once on Postgres.
#[macro_export]
macro_rules! db_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::TestDb::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::TestDb::postgres().await).await
                }
            )*
        }
    };
}

/// Send answers the number's pace held back: each `202 queued`, with an
/// `expected_at` later than the one before.
pub fn assert_held_in_order(answers: &[(u16, serde_json::Value)]) {
    let mut last = String::new();
    for (status, body) in answers {
        assert_eq!(*status, 202, "held back by the pace: {answers:?}");
        assert_eq!(body["status"], "queued");
        let expected = body["expected_at"]
            .as_str()
            .expect("expected_at")
            .to_owned();
        assert!(expected > last, "later and later: {answers:?}");
        last = expected;
    }
}
