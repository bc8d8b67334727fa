//! The files in `deploy/` against the binary and the configuration they
//! describe: systemd accepts the unit, and the example env file and the
//! README document every variable the server reads.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `systemd-analyze verify` checks the unit's syntax, its settings and
/// that `ExecStart` can run: here it runs this build's binary.
#[test]
fn systemd_accepts_the_unit() {
    let unit = read("deploy/wago.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/wago serve"),
        "the unit runs `wago serve`"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("wago.service");
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/wago",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_wago")),
    );
    std::fs::write(&copy, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs (scripts/test installs systemd where it is missing)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("wago.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {stderr}"
    );

    // A broken unit is refused, so the check above means something.
    let broken = std::fs::read_to_string(&copy)
        .unwrap()
        .replace("Restart=always", "Restart=sometimes");
    std::fs::write(&copy, broken).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wago.service"),
        "a bad Restart= passed: {stderr}"
    );
}

/// Every variable `config.rs` reads is in `config::VARIABLES` (which
/// `wago serve --help` prints), the env example and the README.
#[test]
fn every_variable_is_documented() {
    let config = read("src/config.rs");
    let mut names: Vec<&str> = Vec::new();
    for call in ["get(\"", "count(\""] {
        for piece in config.split(call).skip(1) {
            let name = piece.split('"').next().unwrap();
            if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    assert!(names.len() >= 20, "found {names:?}");
    let listed: Vec<&str> = wago::config::VARIABLES.iter().map(|v| v.0).collect();
    for name in &names {
        assert!(
            listed.contains(name),
            "config::VARIABLES (`wago serve --help`) lacks {name}"
        );
    }
    let example = read("deploy/wago.env.example");
    let readme = read("README.md");
    for name in listed {
        assert!(
            example.contains(&format!("{name}=")),
            "deploy/wago.env.example lacks {name}"
        );
        assert!(
            readme.contains(&format!("`{name}`")),
            "README.md lacks {name}"
        );
    }
}

/// `wago serve --help` lists the variables; `wago --version` names the
/// version.
#[test]
fn help_lists_the_variables_and_version_names_the_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_wago"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (name, _, _) in wago::config::VARIABLES {
        assert!(
            help.contains(name),
            "`wago serve --help` lacks {name}:\n{help}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_wago"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("wago {}", env!("CARGO_PKG_VERSION"))
    );
}
