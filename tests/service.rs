//! The `wago` binary run the way `deploy/wago.service` runs it: the
//! example env file (as systemd's `EnvironmentFile=` reads it), the data
//! directory as the working directory, an unprivileged user where the
//! test runs as root, SIGTERM to stop. Checks a clean start, JSON logs
//! that name the request and the tenant, a clean stop, the exit codes of a
//! bad configuration and of a second server on the same database, and that
//! nothing is written outside the data directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "service-test-admin-token-0123";
/// The uid and gid the server runs as when the test runs as root.
const NOBODY: u32 = 65534;

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// `KEY=VALUE` lines as systemd's `EnvironmentFile=` reads them: blank
/// lines and `#` comments skipped, surrounding quotes removed, later lines
/// winning.
fn environment_file(text: &str) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
        let value = value.trim().trim_matches('"').to_owned();
        vars.retain(|(k, _)| k != key.trim());
        vars.push((key.trim().to_owned(), value));
    }
    vars
}

/// A host laid out for the unit: a data directory the server's user owns,
/// and a home and temporary directory that must stay empty.
struct Host {
    _root: tempfile::TempDir,
    data: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    env: Vec<(String, String)>,
}

impl Host {
    fn new(extra: &[(&str, &str)]) -> Self {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("var-lib-wago");
        let home = root.path().join("home");
        let tmp = root.path().join("tmp");
        for dir in [&data, &home, &tmp] {
            std::fs::create_dir(dir).unwrap();
        }
        if running_as_root() {
            // Only the data directory is the server user's; the others
            // stay root's, as under ProtectSystem=strict.
            std::os::unix::fs::chown(root.path(), Some(0), Some(0)).unwrap();
            std::fs::set_permissions(
                root.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/wago.env.example"),
        )
        .unwrap();
        // The example as an operator fills it in: the database in the data
        // directory, a port of its own, a token.
        let text = format!(
            "{example}\nDSN=sqlite://{}/wago.db\nPORT=0\nADMIN_TOKEN={ADMIN_TOKEN}\nLOG_FORMAT=json\n{}",
            data.display(),
            extra
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>(),
        );
        let env = environment_file(&text);
        Host {
            _root: root,
            data,
            home,
            tmp,
            env,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let binary = env!("CARGO_BIN_EXE_wago");
        let mut command = if running_as_root() {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--",
                binary,
            ]);
            c
        } else {
            Command::new(binary)
        };
        command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("TMPDIR", &self.tmp)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

/// A running server and its standard error, line by line.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start(host: &Host) -> Self {
        let mut child = host.command(&["serve"]).spawn().expect("wago starts");
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (seen before or arriving within 20 s) that `find`
    /// takes.
    fn line<T>(&mut self, find: impl Fn(&str) -> Option<T>) -> T {
        if let Some(found) = self.seen.iter().find_map(|l| find(l)) {
            return found;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = find(&line);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(_) => panic!("no such line; the server said:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn address(&mut self) -> String {
        self.line(|l| {
            l.strip_prefix("wago: listening on ")
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        })
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 30 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            out.extend(
                files_under(&entry.path())
                    .into_iter()
                    .map(|f| format!("{name}/{f}")),
            );
        } else {
            out.push(name);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_the_unit_runs_it_and_stops_cleanly() {
    let host = Host::new(&[]);
    let mut server = Server::start(&host);
    let base = server.address();
    let http = reqwest::Client::new();

    let health: Value = http
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({ "ok": true }));
    let version: Value = http
        .get(format!("{base}/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["database"], "sqlite");

    // Log lines inside a request carry its id and, once known, the tenant.
    let res = http
        .post(format!("{base}/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "unit" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let tenant: Value = res.json().await.unwrap();
    let id = tenant["id"].as_str().unwrap().to_owned();
    let res = http
        .post(format!("{base}/admin/tenants/{id}/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "req-service-test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-request-id"], "req-service-test");
    let line = server.line(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["fields"]["message"] == "key created").then_some(v)
    });
    assert_eq!(line["span"]["request_id"], "req-service-test", "{line}");
    assert_eq!(line["span"]["tenant_id"], id.as_str(), "{line}");

    // A second server on the same database refuses to start.
    let second = host.command(&["serve"]).output().unwrap();
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("lock"),
        "{second:?}"
    );

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "a clean stop");
    server.line(|l| l.contains("server stopped").then_some(()));

    // Only the data directory was written to, and only the database.
    assert!(
        files_under(&host.home).is_empty(),
        "{:?}",
        files_under(&host.home)
    );
    assert!(
        files_under(&host.tmp).is_empty(),
        "{:?}",
        files_under(&host.tmp)
    );
    let written = files_under(&host.data);
    assert!(written.contains(&"wago.db".to_owned()), "{written:?}");
    assert!(
        written.iter().all(|f| f.starts_with("wago.db")),
        "{written:?}"
    );
}

#[test]
fn a_bad_variable_is_named_and_exits_with_code_2() {
    let host = Host::new(&[("PORT", "eighty"), ("SEND_BURST", "-1")]);
    let out = host.command(&["serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PORT") && stderr.contains("SEND_BURST"),
        "{stderr}"
    );
    assert!(
        files_under(&host.data).is_empty(),
        "nothing was created: {:?}",
        files_under(&host.data)
    );
}
