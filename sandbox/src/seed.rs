//! What a phone writes for its companions on its own, as WhatsApp's phones
//! do: its settings in app state, and an initial history sync.
//!
//! When the first companion of an account links, the phone writes into the
//! account's app state (encrypted with the app-state key it shares with its
//! companions, so they can read and verify it like any device's patch):
//!
//! - its push name, `setting_pushName` in `critical_block` (the push name
//!   the account was made for, or else its number), which an unnamed
//!   client takes as its own;
//! - its NCT salt, `nct_salt_sync` in `regular_high`, when the account's
//!   behaviour delivers it by app state.
//!
//! Each new companion then gets a history-sync notification from the
//! phone with the payload inline, carrying the NCT salt when the account's
//! behaviour delivers it by history sync.
//!
//! A patch's MACs cover the collection's whole state (an LT hash of every
//! value MAC in it), which the server can follow without the key: the
//! value MACs are in the clear at the end of each value blob. So the phone
//! replays the collection's stored patches to find the state its own patch
//! builds on, whoever wrote them.

use std::io::Write as _;

use std::collections::HashMap;

use buffa::Message as _;
use rand::RngExt as _;
use wacore::appstate::hash::{HashState, generate_patch_mac};
use wacore::appstate::keys::{ExpandedAppStateKeys, expand_app_state_keys};
use wacore::appstate::schemas::{self, Schema};
use waproto::whatsapp::{self as wa, message as msg};

use super::accounts::{Account, AccountState, Patch};
use super::deliver;
use super::jid::DeviceAddr;
use super::phone::CompanionBundle;
use super::server::Shared;

/// One setting the phone writes: its schema and value.
struct Setting {
    schema: &'static Schema,
    value: wa::SyncActionValue,
}

/// Writes the phone's settings into the account's app state, once, before
/// its first companion's first sync. Returns whether anything was written.
pub(crate) fn app_state(shared: &Shared, account: &Account) -> bool {
    let keys = account.sim.keys();
    let expanded = expand_app_state_keys(&keys.app_state_key);
    let key_id = keys.app_state_key_id.clone();
    let now_ms = shared.now_millis() as i64;
    let mut state = account.lock();
    if state.seeded {
        return false;
    }
    let mut settings = vec![Setting {
        schema: &schemas::SETTING_PUSH_NAME,
        value: wa::SyncActionValue {
            timestamp: Some(now_ms),
            push_name_setting: buffa::MessageField::some(wa::sync_action_value::PushNameSetting {
                name: Some(display_name(account, &state)),
            }),
            ..Default::default()
        },
    }];
    if state.behaviour.nct_syncd_delivery
        && let Some(salt) = state.nct_salt()
    {
        settings.push(Setting {
            schema: &schemas::NCT_SALT_SYNC,
            value: wa::SyncActionValue {
                timestamp: Some(now_ms),
                nct_salt_sync_action: buffa::MessageField::some(
                    wa::sync_action_value::NctSaltSyncAction {
                        salt: Some(salt.to_vec()),
                    },
                ),
                ..Default::default()
            },
        });
    }
    for setting in settings {
        let collection = setting.schema.collection.as_str();
        let patches = state.app_state.entry(collection.to_owned()).or_default();
        match author(patches, collection, &setting, &expanded, &key_id) {
            Ok(patch) => patches.push(patch),
            Err(e) => {
                tracing::warn!(collection, error = %e, "the phone could not write its setting");
            }
        }
    }
    state.seeded = true;
    drop(state);
    shared.state_changed();
    true
}

/// The name the phone goes by: the push name the account was made for,
/// else its number.
fn display_name(account: &Account, state: &AccountState) -> String {
    state
        .push_name
        .clone()
        .unwrap_or_else(|| format!("+{}", account.phone))
}

/// A patch that sets `setting`, numbered after `stored`.
fn author(
    stored: &[Patch],
    collection: &str,
    setting: &Setting,
    keys: &ExpandedAppStateKeys,
    key_id: &[u8],
) -> anyhow::Result<Patch> {
    let (mut state, values) = replay(stored)?;
    let index = serde_json::to_vec(&[setting.schema.name])?;
    let iv: [u8; 16] = rand::rng().random();
    let (mutation, _) = wacore::appstate::encode_record(
        wa::syncd_mutation::SyncdOperation::SET,
        &index,
        &setting.value,
        keys,
        key_id,
        &iv,
        i32::try_from(setting.schema.version)?,
    );
    let mutations = vec![mutation];
    let (_, updated) = state.update_hash(&mutations, |index_mac, _| {
        Ok(values.get(index_mac).cloned())
    });
    updated?;
    state.version = stored.len() as u64 + 1;
    let mut patch = wa::SyncdPatch {
        snapshot_mac: Some(state.generate_snapshot_mac(collection, &keys.snapshot_mac)),
        key_id: buffa::MessageField::some(wa::KeyId {
            id: Some(key_id.to_vec()),
        }),
        mutations,
        version: buffa::MessageField::some(wa::SyncdVersion {
            version: Some(state.version),
        }),
        ..Default::default()
    };
    patch.patch_mac = Some(generate_patch_mac(
        &patch,
        collection,
        &keys.patch_mac,
        state.version,
    ));
    Ok(Patch(waproto::codec::syncd_patch_to_vec(&patch)))
}

/// The value MAC of each index MAC that is set.
type ValueMacs = HashMap<Vec<u8>, Vec<u8>>;

/// The state after `stored`: the LT hash of the live value MACs, and the
/// value MAC of each index MAC still set.
fn replay(stored: &[Patch]) -> anyhow::Result<(HashState, ValueMacs)> {
    let mut state = HashState::default();
    let mut values = ValueMacs::new();
    for (number, patch) in stored.iter().enumerate() {
        let patch = waproto::codec::syncd_patch_decode(&patch.0)?;
        let (_, updated) = state.update_hash(&patch.mutations, |index_mac, _| {
            Ok(values.get(index_mac).cloned())
        });
        updated?;
        for mutation in &patch.mutations {
            let record = mutation.record.as_option();
            let index_mac = record
                .and_then(|r| r.index.as_option())
                .and_then(|i| i.blob.clone());
            let Some(index_mac) = index_mac else {
                continue;
            };
            let value_mac = record
                .and_then(|r| r.value.blob.as_deref())
                .filter(|blob| blob.len() >= 32)
                .map(|blob| blob[blob.len() - 32..].to_vec());
            let removing = mutation
                .operation
                .is_some_and(|op| op == wa::syncd_mutation::SyncdOperation::REMOVE);
            match value_mac {
                Some(mac) if !removing => values.insert(index_mac, mac),
                _ => values.remove(&index_mac),
            };
        }
        state.version = number as u64 + 1;
    }
    Ok((state, values))
}

/// The phone's initial history sync for a new companion, queued after the
/// key share: inline, with the account's NCT salt when it delivers it so.
/// Accounts that deliver nothing by history sync get none.
pub(crate) async fn history_sync(
    shared: &Shared,
    account: &Account,
    device: u16,
    companion: CompanionBundle,
) {
    let salt = {
        let state = account.lock();
        let by_history = state.behaviour.nct_history_delivery;
        state.nct_salt().filter(|_| by_history).map(<[u8]>::to_vec)
    };
    let Some(salt) = salt else {
        return;
    };
    let message = match history_sync_message(salt) {
        Ok(message) => message,
        Err(e) => {
            tracing::warn!(error = %e, "could not build the history sync");
            return;
        }
    };
    let to = DeviceAddr::new(account.phone, device);
    match account.sim.seal(to, Some(companion), &message).await {
        Ok((sealed, plaintext)) => deliver::from_phone(shared, account, device, sealed, plaintext),
        Err(e) => tracing::warn!(error = %e, "could not encrypt the history sync"),
    }
}

fn history_sync_message(salt: Vec<u8>) -> std::io::Result<wa::Message> {
    let sync = wa::HistorySync {
        sync_type: wa::history_sync::HistorySyncType::INITIAL_BOOTSTRAP,
        nct_salt: Some(salt),
        ..Default::default()
    };
    let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    deflate.write_all(&sync.encode_to_vec())?;
    let payload = deflate.finish()?;
    let notification = msg::HistorySyncNotification {
        sync_type: Some(msg::HistorySyncType::INITIAL_BOOTSTRAP),
        chunk_order: Some(1),
        progress: Some(100),
        file_length: Some(payload.len() as u64),
        initial_hist_bootstrap_inline_payload: Some(payload),
        ..Default::default()
    };
    Ok(wa::Message {
        protocol_message: buffa::MessageField::some(msg::ProtocolMessage {
            r#type: Some(msg::protocol_message::Type::HISTORY_SYNC_NOTIFICATION),
            history_sync_notification: buffa::MessageField::some(notification),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (ExpandedAppStateKeys, Vec<u8>) {
        (expand_app_state_keys(&[7u8; 32]), vec![1, 2, 3])
    }

    fn push_name(name: &str) -> Setting {
        Setting {
            schema: &schemas::SETTING_PUSH_NAME,
            value: wa::SyncActionValue {
                push_name_setting: buffa::MessageField::some(
                    wa::sync_action_value::PushNameSetting {
                        name: Some(name.into()),
                    },
                ),
                ..Default::default()
            },
        }
    }

    /// The client library's own patch processing, MACs checked, accepts
    /// the phone's patches in order, on top of another device's patch.
    #[test]
    fn authored_patches_verify_as_a_chain() {
        let (keys, key_id) = keys();
        let mut stored = Vec::new();
        for name in ["first", "second", "third"] {
            let patch =
                author(&stored, "critical_block", &push_name(name), &keys, &key_id).unwrap();
            stored.push(patch);
        }
        let keys = std::sync::Arc::new(keys);
        let mut state = HashState::default();
        let mut macs: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut names = Vec::new();
        for patch in &stored {
            let patch = waproto::codec::syncd_patch_decode(&patch.0).unwrap();
            let done = wacore::appstate::processor::process_patch(
                &patch,
                &mut state,
                |_| Ok(keys.clone()),
                |index_mac| Ok(macs.get(index_mac).cloned()),
                true,
                "critical_block",
            )
            .unwrap();
            state = done.state;
            for removed in done.removed_index_macs {
                macs.remove(&removed);
            }
            for added in done.added_macs {
                macs.insert(added.index_mac, added.value_mac);
            }
            let value = done.mutations[0].action_value.as_ref().unwrap();
            names.push(value.push_name_setting.name.clone().unwrap());
        }
        assert_eq!(names, ["first", "second", "third"]);
        assert_eq!(state.version, 3);
        assert_eq!(macs.len(), 1, "one index, set three times");
    }
}
