//! The `--state` file: the server's Noise key and every account, device and
//! uploaded prekey, each device's queue, each phone's Signal sessions,
//! identities and prekeys and the texts it received, as JSON, so clients
//! log in again after a restart, get what was queued for them, and their
//! sessions with the phones keep working.
//!
//! Written whole, to a temporary file that is synced and then renamed over
//! the old one, so a crash leaves the old state or the new, never half.
//! Which device sent which message (for routing receipts) is not kept.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::accounts::{Account, AccountState, Directory, Lid, Phone, b64};
use super::noise::ServerKey;
use super::phone::{PhoneKeys, SimPhone};
use super::server::Shared;
use super::signal::SignalState;

const VERSION: u32 = 1;

/// What is wrong with a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// It is not JSON of the state file's shape.
    #[error("not a sandbox state file: {0}")]
    Format(#[from] serde_json::Error),
    /// It was written by a sandbox with another format version (it carries
    /// that version); it is refused, never misread.
    #[error("unsupported state version {0} (this build reads {VERSION})")]
    Version(u32),
    /// A key in it is not a valid key.
    #[error("invalid key: {0}")]
    Key(String),
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(with = "b64")]
    server_key: [u8; 32],
    next_lid: u64,
    accounts: Vec<AccountRecord>,
}

#[derive(Serialize, Deserialize)]
struct AccountRecord {
    phone: Phone,
    lid: Lid,
    phone_keys: PhoneKeys,
    // Not flattened: serde's flatten cannot read integer map keys back.
    state: AccountState,
    #[serde(default)]
    signal: SignalState,
}

/// Reads the state file; a missing file is a fresh start (`true`).
pub(crate) async fn load(path: &Path) -> Result<(ServerKey, Directory, bool), StateError> {
    let text = match tokio::fs::read(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((ServerKey::generate(), Directory::new(), true));
        }
        Err(e) => return Err(e.into()),
    };
    let file: StateFile = serde_json::from_slice(&text)?;
    if file.version != VERSION {
        return Err(StateError::Version(file.version));
    }
    let key = ServerKey::from_private(&file.server_key).map_err(StateError::Key)?;
    let directory = Directory::new();
    for record in file.accounts {
        let sim = SimPhone::from_keys(record.phone_keys, &record.signal)
            .map_err(|e| StateError::Key(e.to_string()))?;
        directory.restore(Account::new(record.phone, record.lid, sim, record.state));
    }
    directory.set_next_lid(file.next_lid);
    Ok((key, directory, false))
}

/// Writes the whole state now (no-op without a state file).
pub(crate) async fn save(shared: &Shared) -> Result<(), StateError> {
    let Some(path) = shared.config.state_file.clone() else {
        return Ok(());
    };
    let file = snapshot(shared).await;
    tokio::task::spawn_blocking(move || write_atomically(&path, &file))
        .await
        .map_err(|e| StateError::Io(std::io::Error::other(e)))?
}

async fn snapshot(shared: &Shared) -> StateFile {
    let mut accounts = Vec::new();
    for account in shared.directory.all() {
        // The lock is std's: taken and released before the await.
        let state = account.lock().clone();
        accounts.push(AccountRecord {
            phone: account.phone,
            lid: account.lid,
            phone_keys: account.sim.keys().clone(),
            state,
            signal: account.sim.signal_state().await,
        });
    }
    accounts.sort_by_key(|a| a.phone);
    StateFile {
        version: VERSION,
        server_key: shared.key.private_bytes(),
        next_lid: shared.directory.next_lid(),
        accounts,
    }
}

fn write_atomically(path: &Path, file: &StateFile) -> Result<(), StateError> {
    use std::io::Write as _;
    let bytes = serde_json::to_vec(file)?;
    let temp = temp_path(path);
    let mut out = std::fs::File::create(&temp)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&temp, path)?;
    Ok(())
}

/// `state.json` -> `.state.json.tmp`, beside it (rename stays on one disk).
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sandbox-state".into());
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{Device, PreKey, SignedPreKey};

    #[test]
    fn an_account_with_devices_reads_back_as_written() {
        let mut state: AccountState = serde_json::from_value(serde_json::json!({
            "created_at": 1, "next_device": 3, "next_key_index": 3,
            "devices": {}, "removed": [1]
        }))
        .unwrap();
        let key = SignedPreKey {
            id: 1,
            public: [2; 32],
            signature: vec![3; 64],
        };
        let device = Device {
            id: 2,
            key_index: 2,
            noise_key: [4; 32],
            identity: [5; 32],
            registration_id: 6,
            signed_prekey: key,
            prekeys: [PreKey {
                id: 7,
                public: [8; 32],
            }]
            .into(),
            adv_identity: vec![9; 10],
            push_name: "x".into(),
            paired_at: 1,
            outbox: Default::default(),
        };
        state.devices.insert(2, device);
        let record = AccountRecord {
            phone: Phone::parse("62811000001").unwrap(),
            lid: Lid(100_000_000_000_001),
            phone_keys: SimPhone::generate().keys().clone(),
            state,
            signal: SignalState::default(),
        };
        let text = serde_json::to_string(&record).unwrap();
        let back: AccountRecord = serde_json::from_str(&text).unwrap();
        let device = &back.state.devices[&2];
        assert_eq!(device.prekeys[0].public, [8; 32]);
        assert_eq!(device.noise_key, [4; 32]);
        assert!(back.state.removed.contains(&1));
    }
}
