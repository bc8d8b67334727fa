//! `--state`: accounts, devices, prekeys and the server's Noise key survive
//! a restart, so a running client logs in again by itself (by IK), and a
//! client holding a stale server key gets the XX-fallback.

use crate::support::{Sandbox, TempState, config, pair};

const PHONE: &str = "62811000101";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_logs_in_again_after_a_restart_with_state() {
    let state = TempState::new();
    let first = Sandbox::start_with(config().with_state_file(&state.0)).await;
    first.create_phone(PHONE).await;
    let (mut companion, device) = pair(&first, PHONE).await;
    let prekeys = first.inner.prekey_count(PHONE, device);
    let addr = first.inner.addr();
    first.inner.shutdown().await.expect("clean shutdown");
    assert!(state.0.exists(), "state file written");

    // Same port, same file: the client (still running) comes back by itself.
    let mut second_config = config().with_state_file(&state.0);
    second_config.listen = addr;
    let second = Sandbox::start_with(second_config).await;
    let view = second.phone(PHONE).await;
    assert_eq!(view.devices, vec![0, device]);
    assert_eq!(second.inner.prekey_count(PHONE, device), prekeys);
    companion.logged_in().await;
    second
        .phone_until(PHONE, "device back online", |v| v.online == [device])
        .await;
    let stats = second.inner.stats();
    assert_eq!(stats.ik_handshakes, 1, "{stats:?}");
    assert_eq!(
        stats.xx_handshakes + stats.fallback_handshakes,
        0,
        "{stats:?}"
    );
    companion.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_server_key_gets_the_xx_fallback() {
    let state = TempState::new();
    let first = Sandbox::start_with(config().with_state_file(&state.0)).await;
    first.create_phone(PHONE).await;
    let (companion, device) = pair(&first, PHONE).await;
    let store = companion.store.clone();
    companion.stop().await;
    let addr = first.inner.addr();
    first.inner.shutdown().await.expect("clean shutdown");

    // The server's key changes (accounts stay): the client's cached chain
    // names the old key, so its IK hello cannot be decrypted.
    let text = std::fs::read_to_string(&state.0).expect("state file");
    let mut file: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let fresh: [u8; 32] = rand::random();
    use base64::Engine as _;
    file["server_key"] = base64::engine::general_purpose::STANDARD
        .encode(fresh)
        .into();
    std::fs::write(&state.0, file.to_string()).expect("state file rewritten");

    let mut second_config = config().with_state_file(&state.0);
    second_config.listen = addr;
    let second = Sandbox::start_with(second_config).await;
    let mut again = crate::support::Companion::start(&second.ws_url(), store).await;
    again.logged_in().await;
    let stats = second.inner.stats();
    assert_eq!(stats.fallback_handshakes, 1, "{stats:?}");
    assert_eq!(stats.ik_handshakes, 0, "{stats:?}");
    second
        .phone_until(PHONE, "device online", |v| v.online == [device])
        .await;
    again.stop().await;
}

#[tokio::test]
async fn an_unwritable_state_file_fails_at_start() {
    let config = config().with_state_file("/nonexistent-dir/wago/state.json");
    let started = wago_sandbox::start(config).await;
    assert!(
        matches!(started, Err(wago_sandbox::SandboxError::State { .. })),
        "{:?}",
        started.err()
    );
}

#[tokio::test]
async fn a_state_file_of_another_version_is_refused_and_left_alone() {
    let state = TempState::new();
    let first = wago_sandbox::start(config().with_state_file(&state.0))
        .await
        .expect("a fresh state file");
    first.create_phone(PHONE).expect("an account");
    first.shutdown().await.expect("state written");

    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state.0).expect("state file")).expect("JSON");
    assert_eq!(file["version"], 1, "the format version is in the file");
    file["version"] = 999.into();
    let written = file.to_string();
    std::fs::write(&state.0, &written).expect("state file rewritten");

    let started = wago_sandbox::start(config().with_state_file(&state.0)).await;
    let error = started.err().expect("a file of another version is refused");
    assert!(
        matches!(
            &error,
            wago_sandbox::SandboxError::State {
                source: wago_sandbox::StateError::Version(999),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .ends_with("unsupported state version 999 (this build reads 1)"),
        "{error}"
    );
    let after = std::fs::read_to_string(&state.0).expect("state file");
    assert_eq!(after, written, "the refused file is not overwritten");
}
