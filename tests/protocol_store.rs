//! The protocol store (whatsapp-rust's `Backend`) against both databases:
//! every trait method round-trips, overwrites, deletes and batches as
//! wacore's reference in-memory store does, and sessions never see each
//! other's rows.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use common::TestDb;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::Device;
use wacore::store::traits::*;
use wago::store::{DbKind, SessionId, SessionStore, Store};

db_tests!(
    identities_round_trip_overwrite_delete_and_batch,
    signal_sessions_round_trip_and_batch,
    signal_state_for_user_matches_whole_users_only,
    prekeys_store_load_mark_and_remove,
    prekey_batches_larger_than_one_statement,
    signed_prekeys_and_sender_keys,
    app_state_sync_keys_and_the_latest_one,
    app_state_versions_round_trip,
    mutation_macs_are_kept_per_collection,
    sender_key_devices_per_group,
    lid_mappings_both_ways,
    base_keys_compare_and_delete,
    device_lists_round_trip_and_batch,
    group_metadata_round_trip,
    tc_tokens_put_get_delete_and_expiry,
    tc_tokens_newer_wins_and_sender_bucket_only_advances,
    sent_messages_are_taken_once,
    pending_inbound_buffer,
    pending_inbound_is_durable_before_the_signal_state_that_decrypted_it,
    msg_secrets_merge_their_windows,
    device_create_load_save,
    whatsapp_rust_keeps_its_device_across_restarts,
    corrupt_rows_are_errors_not_panics,
    sessions_are_isolated_and_deleted_alone,
    deleting_a_tenant_deletes_its_protocol_rows,
);

async fn session(db: &TestDb, id: &str) -> (Store, SessionStore) {
    let store = db.store().await;
    let session = store.session_store(SessionId::from_raw(id));
    (store, session)
}

fn arc(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn now_secs() -> i64 {
    wago::store::now_ms() / 1000
}

const ALICE: &str = "15550000001.0:1@s.whatsapp.net";
const BOB: &str = "15550000002.0:2@s.whatsapp.net";

async fn identities_round_trip_overwrite_delete_and_batch(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    assert_eq!(s.load_identity(ALICE).await.unwrap(), None);
    s.put_identity(ALICE, [1; 32]).await.unwrap();
    assert_eq!(s.load_identity(ALICE).await.unwrap(), Some([1; 32]));
    s.put_identity(ALICE, [2; 32]).await.unwrap();
    assert_eq!(s.load_identity(ALICE).await.unwrap(), Some([2; 32]));

    // A batch inserts and overwrites; a repeated address keeps its last key.
    s.put_identities_batch(&[
        (arc(ALICE), [3; 32]),
        (arc(BOB), [4; 32]),
        (arc(BOB), [5; 32]),
    ])
    .await
    .unwrap();
    assert_eq!(s.load_identity(ALICE).await.unwrap(), Some([3; 32]));
    assert_eq!(s.load_identity(BOB).await.unwrap(), Some([5; 32]));
    s.put_identities_batch(&[]).await.unwrap();

    s.delete_identity(ALICE).await.unwrap();
    assert_eq!(s.load_identity(ALICE).await.unwrap(), None);
    assert_eq!(s.load_identity(BOB).await.unwrap(), Some([5; 32]));
}

async fn signal_sessions_round_trip_and_batch(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    assert_eq!(s.get_session(ALICE).await.unwrap(), None);
    assert!(!s.has_session(ALICE).await.unwrap());
    s.put_session(ALICE, b"first").await.unwrap();
    assert!(s.has_session(ALICE).await.unwrap());
    s.put_session(ALICE, b"second").await.unwrap();
    assert_eq!(s.get_session(ALICE).await.unwrap().unwrap(), &b"second"[..]);

    s.put_sessions_batch(&[
        (arc(ALICE), Bytes::from_static(b"batched")),
        (arc(BOB), Bytes::from_static(b"bob")),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.get_session(ALICE).await.unwrap().unwrap(),
        &b"batched"[..]
    );
    assert_eq!(s.get_session(BOB).await.unwrap().unwrap(), &b"bob"[..]);

    s.delete_session(ALICE).await.unwrap();
    assert_eq!(s.get_session(ALICE).await.unwrap(), None);
    assert!(!s.has_session(ALICE).await.unwrap());
    assert!(s.has_session(BOB).await.unwrap());
}

async fn signal_state_for_user_matches_whole_users_only(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    assert!(!s.has_signal_state_for_user("1555").await.unwrap());
    s.put_session("1555:3@s.whatsapp.net", b"r").await.unwrap();
    s.put_identity("1666@lid", [9; 32]).await.unwrap();
    assert!(s.has_signal_state_for_user("1555").await.unwrap());
    assert!(s.has_signal_state_for_user("1666").await.unwrap());
    // A prefix of a user is not that user, and LIKE wildcards mean nothing.
    assert!(!s.has_signal_state_for_user("155").await.unwrap());
    assert!(!s.has_signal_state_for_user("15_5").await.unwrap());
    assert!(!s.has_signal_state_for_user("%").await.unwrap());
}

async fn prekeys_store_load_mark_and_remove(db: TestDb) {
    let (store, s) = session(&db, "s1").await;
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 0);
    s.store_prekey(7, b"seven", false).await.unwrap();
    s.store_prekey(7, b"seven again", false).await.unwrap();
    assert_eq!(
        s.load_prekey(7).await.unwrap().unwrap(),
        &b"seven again"[..]
    );
    assert_eq!(s.load_prekey(8).await.unwrap(), None);

    let keys: Vec<(u32, Bytes)> = (10..15)
        .map(|id| (id, Bytes::from(format!("key {id}"))))
        .collect();
    s.store_prekeys_batch(&keys, false).await.unwrap();
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 14);
    let loaded = s.load_prekeys_batch(&[14, 99, 7, 10]).await.unwrap();
    let ids: Vec<u32> = loaded.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [14, 7, 10], "only stored keys, in the order asked");
    assert_eq!(loaded[0].1, &b"key 14"[..]);
    assert!(s.load_prekeys_batch(&[]).await.unwrap().is_empty());

    // Marking is UPDATE-only: a key removed before the mark stays removed.
    s.remove_prekey(11).await.unwrap();
    s.mark_prekeys_uploaded(&[10, 11, 12]).await.unwrap();
    assert_eq!(s.load_prekey(11).await.unwrap(), None);
    assert_eq!(uploaded_ids(&store, "s1").await, [10, 12]);
    s.mark_prekeys_uploaded(&[]).await.unwrap();

    // Stored as uploaded from the start.
    s.store_prekeys_batch(&[(20, Bytes::from_static(b"up"))], true)
        .await
        .unwrap();
    assert_eq!(uploaded_ids(&store, "s1").await, [10, 12, 20]);
    s.remove_prekey(20).await.unwrap();
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 14);
}

async fn uploaded_ids(store: &Store, session: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT prekey_id FROM wa_prekeys WHERE session_id = $1 AND uploaded = 1 ORDER BY prekey_id",
    )
    .bind(session)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// More rows than one statement takes: the chunks must add up.
async fn prekey_batches_larger_than_one_statement(db: TestDb) {
    let (store, s) = session(&db, "s1").await;
    let keys: Vec<(u32, Bytes)> = (1..=2500)
        .map(|id: u32| (id, Bytes::from(id.to_be_bytes().to_vec())))
        .collect();
    s.store_prekeys_batch(&keys, false).await.unwrap();
    let ids: Vec<u32> = (1..=2600).collect();
    let loaded = s.load_prekeys_batch(&ids).await.unwrap();
    assert_eq!(loaded.len(), 2500);
    assert_eq!(
        loaded[2499],
        (2500, Bytes::from(2500u32.to_be_bytes().to_vec()))
    );
    s.mark_prekeys_uploaded(&ids).await.unwrap();
    assert_eq!(uploaded_ids(&store, "s1").await.len(), 2500);
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 2500);
}

async fn signed_prekeys_and_sender_keys(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    assert!(s.load_all_signed_prekeys().await.unwrap().is_empty());
    s.store_signed_prekey(2, b"two").await.unwrap();
    s.store_signed_prekey(1, b"one").await.unwrap();
    s.store_signed_prekey(2, b"two again").await.unwrap();
    assert_eq!(
        s.load_signed_prekey(2).await.unwrap().unwrap(),
        b"two again"
    );
    assert_eq!(
        s.load_all_signed_prekeys().await.unwrap(),
        [(1, b"one".to_vec()), (2, b"two again".to_vec())]
    );
    s.remove_signed_prekey(1).await.unwrap();
    assert_eq!(s.load_signed_prekey(1).await.unwrap(), None);

    let group = "120363000000000001@g.us::15550000001:0";
    s.put_sender_key(group, b"sk1").await.unwrap();
    s.put_sender_key(group, b"sk2").await.unwrap();
    assert_eq!(s.get_sender_key(group).await.unwrap().unwrap(), b"sk2");
    s.put_sender_keys_batch(&[
        (arc(group), Bytes::from_static(b"sk3")),
        (arc("other"), Bytes::from_static(b"o")),
    ])
    .await
    .unwrap();
    assert_eq!(s.get_sender_key(group).await.unwrap().unwrap(), b"sk3");
    s.delete_sender_key(group).await.unwrap();
    assert_eq!(s.get_sender_key(group).await.unwrap(), None);
    assert_eq!(s.get_sender_key("other").await.unwrap().unwrap(), b"o");
}

fn sync_key(tag: u8) -> AppStateSyncKey {
    AppStateSyncKey {
        key_data: vec![tag; 32],
        fingerprint: vec![tag, tag],
        timestamp: 1_700_000_000 + i64::from(tag),
    }
}

async fn app_state_sync_keys_and_the_latest_one(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    assert!(s.get_sync_key(b"k1").await.unwrap().is_none());
    assert_eq!(s.get_latest_sync_key_id().await.unwrap(), None);

    s.set_sync_key(b"k2", sync_key(2)).await.unwrap();
    s.set_sync_key(b"k1", sync_key(1)).await.unwrap();
    // Latest by when it was stored, not by id or timestamp.
    assert_eq!(s.get_latest_sync_key_id().await.unwrap().unwrap(), b"k1");
    let got = s.get_sync_key(b"k2").await.unwrap().unwrap();
    assert_eq!(
        (got.key_data, got.fingerprint, got.timestamp),
        (vec![2; 32], vec![2, 2], 1_700_000_002)
    );

    s.set_sync_key(b"k2", sync_key(9)).await.unwrap();
    assert_eq!(s.get_latest_sync_key_id().await.unwrap().unwrap(), b"k2");
    assert_eq!(
        s.get_sync_key(b"k2").await.unwrap().unwrap().key_data,
        vec![9; 32]
    );
}

async fn app_state_versions_round_trip(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    let fresh = s.get_version("regular").await.unwrap();
    assert_eq!((fresh.version, fresh.hash), (0, [0; 128]));

    let mut state = HashState {
        version: 42,
        hash: [7; 128],
        index_value_map: HashMap::from([("idx".to_owned(), vec![1, 2, 3])]),
        mac_mismatch_fatal: true,
    };
    s.set_version("regular", state.clone()).await.unwrap();
    let got = s.get_version("regular").await.unwrap();
    assert_eq!((got.version, got.hash), (42, [7; 128]));
    assert_eq!(got.index_value_map, state.index_value_map);
    assert!(got.mac_mismatch_fatal);
    assert_eq!(s.get_version("critical_block").await.unwrap().version, 0);

    state.version = 43;
    state.index_value_map.clear();
    s.set_version("regular", state).await.unwrap();
    let got = s.get_version("regular").await.unwrap();
    assert_eq!(got.version, 43);
    assert!(got.index_value_map.is_empty());
}

fn mac(index: u8, value: u8) -> AppStateMutationMAC {
    AppStateMutationMAC {
        index_mac: vec![index; 32],
        value_mac: vec![value; 32],
    }
}

async fn mutation_macs_are_kept_per_collection(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    let value_of = |collection: &'static str, index: u8| {
        let s = s.clone();
        async move { s.get_mutation_mac(collection, &[index; 32]).await.unwrap() }
    };
    s.put_mutation_macs("regular", 1, &[mac(1, 10), mac(2, 20), mac(1, 11)])
        .await
        .unwrap();
    let critical = [mac(1, 99)];
    s.put_mutation_macs("critical", 1, &critical).await.unwrap();
    assert_eq!(value_of("regular", 1).await, Some(vec![11; 32]));
    assert_eq!(value_of("critical", 1).await, Some(vec![99; 32]));
    assert_eq!(value_of("regular", 3).await, None);

    let asked = [[1; 32], [2; 32], [3; 32]];
    let found = s.get_mutation_macs("regular", &asked).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[&[2; 32]], vec![20; 32]);
    assert!(
        s.get_mutation_macs("regular", &[])
            .await
            .unwrap()
            .is_empty()
    );

    s.put_mutation_macs("regular", 2, &[mac(2, 21)])
        .await
        .unwrap();
    assert_eq!(value_of("regular", 2).await, Some(vec![21; 32]));

    s.delete_mutation_macs("regular", &[vec![1; 32]])
        .await
        .unwrap();
    assert_eq!(value_of("regular", 1).await, None);
    assert!(value_of("critical", 1).await.is_some());

    s.clear_mutation_macs("regular").await.unwrap();
    assert_eq!(value_of("regular", 2).await, None);
    assert!(value_of("critical", 1).await.is_some());
}

async fn sender_key_devices_per_group(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    let (g1, g2) = ("1@g.us", "2@g.us");
    assert!(s.get_sender_key_devices(g1).await.unwrap().is_empty());
    s.set_sender_key_status(g1, &[("a:1@lid", true), ("b:2@lid", false)])
        .await
        .unwrap();
    s.set_sender_key_status(g1, &[("b:2@lid", true), ("c:3@lid", false)])
        .await
        .unwrap();
    s.set_sender_key_status(g2, &[("a:1@lid", true)])
        .await
        .unwrap();
    let devices = |v: &[(&str, bool)]| -> Vec<(String, bool)> {
        v.iter().map(|(d, k)| (d.to_string(), *k)).collect()
    };
    assert_eq!(
        s.get_sender_key_devices(g1).await.unwrap(),
        devices(&[("a:1@lid", true), ("b:2@lid", true), ("c:3@lid", false)])
    );

    s.delete_sender_key_device_rows(&["a:1@lid"]).await.unwrap();
    assert_eq!(
        s.get_sender_key_devices(g1).await.unwrap(),
        devices(&[("b:2@lid", true), ("c:3@lid", false)])
    );
    assert!(
        s.get_sender_key_devices(g2).await.unwrap().is_empty(),
        "across groups"
    );

    s.set_sender_key_status(g2, &[("d:4@lid", true)])
        .await
        .unwrap();
    s.clear_sender_key_devices(g1).await.unwrap();
    assert!(s.get_sender_key_devices(g1).await.unwrap().is_empty());
    assert_eq!(s.get_sender_key_devices(g2).await.unwrap().len(), 1);
    s.clear_all_sender_key_devices().await.unwrap();
    assert!(s.get_sender_key_devices(g2).await.unwrap().is_empty());
}

fn lid(lid: &str, phone: &str, at: i64) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.to_owned(),
        phone_number: phone.to_owned(),
        created_at: at,
        updated_at: at,
        learning_source: "usync".to_owned(),
    }
}

async fn lid_mappings_both_ways(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    assert!(s.get_lid_mapping("100").await.unwrap().is_none());
    s.put_lid_mapping(&lid("100", "5511", 10)).await.unwrap();
    let got = s.get_lid_mapping("100").await.unwrap().unwrap();
    assert_eq!(
        (
            got.phone_number.as_str(),
            got.created_at,
            got.updated_at,
            got.learning_source.as_str()
        ),
        ("5511", 10, 10, "usync")
    );
    assert_eq!(s.get_pn_mapping("5511").await.unwrap().unwrap().lid, "100");

    // A second LID for the phone, learned later, is the current one.
    s.put_lid_mapping(&lid("200", "5511", 20)).await.unwrap();
    assert_eq!(s.get_pn_mapping("5511").await.unwrap().unwrap().lid, "200");
    assert_eq!(
        s.get_lid_mapping("100")
            .await
            .unwrap()
            .unwrap()
            .phone_number,
        "5511"
    );

    // Moving LID 200 to another phone leaves 100 as 5511's LID.
    s.put_lid_mappings(&[lid("200", "5522", 30), lid("300", "5533", 30)])
        .await
        .unwrap();
    assert_eq!(s.get_pn_mapping("5511").await.unwrap().unwrap().lid, "100");
    assert_eq!(s.get_pn_mapping("5522").await.unwrap().unwrap().lid, "200");
    assert!(s.get_pn_mapping("5599").await.unwrap().is_none());

    let all: Vec<(String, String)> = s
        .get_all_lid_mappings()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.lid, e.phone_number))
        .collect();
    assert_eq!(
        all,
        [("100", "5511"), ("200", "5522"), ("300", "5533")].map(|(l, p)| (l.into(), p.into()))
    );
}

async fn base_keys_compare_and_delete(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    assert!(!s.has_same_base_key(ALICE, "m1", b"k").await.unwrap());
    s.save_base_key(ALICE, "m1", b"k").await.unwrap();
    assert!(s.has_same_base_key(ALICE, "m1", b"k").await.unwrap());
    assert!(!s.has_same_base_key(ALICE, "m1", b"other").await.unwrap());
    assert!(!s.has_same_base_key(ALICE, "m2", b"k").await.unwrap());
    s.save_base_key(ALICE, "m1", b"k2").await.unwrap();
    assert!(s.has_same_base_key(ALICE, "m1", b"k2").await.unwrap());
    s.delete_base_key(ALICE, "m1").await.unwrap();
    assert!(!s.has_same_base_key(ALICE, "m1", b"k2").await.unwrap());
}

fn device_list(user: &str, devices: &[u32], raw_id: Option<u32>) -> DeviceListRecord {
    DeviceListRecord {
        user: user.to_owned(),
        devices: devices
            .iter()
            .map(|&d| DeviceInfo::new(d, Some(d + 100)).with_hosting(d == 99))
            .collect(),
        timestamp: 1_700_000_000,
        phash: Some("2:abc".to_owned()),
        raw_id,
    }
}

async fn device_lists_round_trip_and_batch(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    assert!(s.get_devices("5511").await.unwrap().is_none());
    s.update_device_list(device_list("5511", &[0, 99], Some(7)))
        .await
        .unwrap();
    let got = s.get_devices("5511").await.unwrap().unwrap();
    assert_eq!(got.user, "5511");
    let ids: Vec<(u32, Option<u32>, bool)> = got
        .devices
        .iter()
        .map(|d| (d.device_id, d.key_index, d.is_hosted))
        .collect();
    assert_eq!(ids, [(0, Some(100), false), (99, Some(199), true)]);
    assert_eq!(
        (got.timestamp, got.phash.as_deref(), got.raw_id),
        (1_700_000_000, Some("2:abc"), Some(7))
    );

    s.update_device_lists(vec![
        device_list("5511", &[0], None),
        device_list("5522", &[0, 1], None),
    ])
    .await
    .unwrap();
    let got = s.get_devices("5511").await.unwrap().unwrap();
    assert_eq!((got.devices.len(), got.raw_id), (1, None));
    assert_eq!(
        s.get_devices("5522").await.unwrap().unwrap().devices.len(),
        2
    );
    s.update_device_lists(Vec::new()).await.unwrap();

    s.delete_devices("5511").await.unwrap();
    assert!(s.get_devices("5511").await.unwrap().is_none());
    assert!(s.get_devices("5522").await.unwrap().is_some());
}

async fn group_metadata_round_trip(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    let group = "120363000000000001@g.us";
    assert!(s.get_group_metadata(group).await.unwrap().is_none());
    s.put_group_metadata(group, b"v1").await.unwrap();
    s.put_group_metadata(group, b"v2").await.unwrap();
    assert_eq!(s.get_group_metadata(group).await.unwrap().unwrap(), b"v2");
    s.delete_group_metadata(group).await.unwrap();
    assert!(s.get_group_metadata(group).await.unwrap().is_none());
}

fn tc(token: &[u8], at: i64, sender: Option<i64>) -> TcTokenEntry {
    TcTokenEntry {
        token: token.to_vec(),
        token_timestamp: at,
        sender_timestamp: sender,
    }
}

fn tc_fields(e: Option<TcTokenEntry>) -> Option<(Vec<u8>, i64, Option<i64>)> {
    e.map(|e| (e.token, e.token_timestamp, e.sender_timestamp))
}

async fn tc_tokens_put_get_delete_and_expiry(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    assert!(s.get_tc_token("a@lid").await.unwrap().is_none());
    s.put_tc_token("a@lid", &tc(b"t1", 100, Some(50)))
        .await
        .unwrap();
    s.put_tc_token("a@lid", &tc(b"t2", 200, None))
        .await
        .unwrap();
    assert_eq!(
        tc_fields(s.get_tc_token("a@lid").await.unwrap()),
        Some((b"t2".to_vec(), 200, None)),
        "put overwrites every field"
    );
    s.put_tc_token("b@lid", &tc(b"", 10, Some(900)))
        .await
        .unwrap();
    s.put_tc_token("c@lid", &tc(b"t", 10, None)).await.unwrap();
    s.put_tc_token("d@lid", &tc(b"t", 10, Some(10)))
        .await
        .unwrap();
    assert_eq!(
        s.get_all_tc_token_jids().await.unwrap(),
        ["a@lid", "b@lid", "c@lid", "d@lid"]
    );

    // Kept: a live token (a), a live sender bucket (b). Gone: both stale (c, d).
    assert_eq!(s.delete_expired_tc_tokens(100, 500).await.unwrap(), 2);
    assert_eq!(s.get_all_tc_token_jids().await.unwrap(), ["a@lid", "b@lid"]);

    s.delete_tc_token("a@lid").await.unwrap();
    assert!(s.get_tc_token("a@lid").await.unwrap().is_none());
}

async fn tc_tokens_newer_wins_and_sender_bucket_only_advances(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    let get = |jid: &'static str| {
        let s = s.clone();
        async move { tc_fields(s.get_tc_token(jid).await.unwrap()) }
    };
    // A touch on nothing makes a token-less placeholder.
    s.touch_tc_token_sender_timestamp("a@lid", 100)
        .await
        .unwrap();
    assert_eq!(get("a@lid").await, Some((vec![], 100, Some(100))));
    // The first real token replaces a placeholder whatever its time.
    s.store_received_tc_token("a@lid", b"real", 50)
        .await
        .unwrap();
    assert_eq!(get("a@lid").await, Some((b"real".to_vec(), 50, Some(100))));
    // An older token does not replace a real one; a newer or equal one does.
    s.store_received_tc_token("a@lid", b"stale", 40)
        .await
        .unwrap();
    assert_eq!(get("a@lid").await, Some((b"real".to_vec(), 50, Some(100))));
    s.store_received_tc_token("a@lid", b"fresh", 50)
        .await
        .unwrap();
    assert_eq!(get("a@lid").await, Some((b"fresh".to_vec(), 50, Some(100))));
    // The sender bucket moves forward only, and never touches the token.
    s.touch_tc_token_sender_timestamp("a@lid", 90)
        .await
        .unwrap();
    assert_eq!(get("a@lid").await, Some((b"fresh".to_vec(), 50, Some(100))));
    s.touch_tc_token_sender_timestamp("a@lid", 300)
        .await
        .unwrap();
    assert_eq!(get("a@lid").await, Some((b"fresh".to_vec(), 50, Some(300))));
    // A first received token has no sender bucket.
    s.store_received_tc_token("b@lid", b"t", 5).await.unwrap();
    assert_eq!(get("b@lid").await, Some((b"t".to_vec(), 5, None)));
}

async fn sent_messages_are_taken_once(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    let chat = "5511@s.whatsapp.net";
    s.store_sent_message(chat, "m1", b"one").await.unwrap();
    s.store_sent_message(chat, "m1", b"one again")
        .await
        .unwrap();
    s.store_sent_message(chat, "m2", b"two").await.unwrap();
    assert_eq!(
        s.take_sent_message(chat, "m1").await.unwrap().unwrap(),
        b"one again"
    );
    assert_eq!(
        s.take_sent_message(chat, "m1").await.unwrap(),
        None,
        "taken once"
    );
    assert_eq!(
        s.take_sent_message("other@s.whatsapp.net", "m2")
            .await
            .unwrap(),
        None
    );

    // Two concurrent takes of one message: exactly one gets it.
    s.store_sent_message(chat, "m3", b"three").await.unwrap();
    let (a, b) = tokio::join!(
        s.take_sent_message(chat, "m3"),
        s.take_sent_message(chat, "m3")
    );
    assert_eq!(a.unwrap().is_some() as u8 + b.unwrap().is_some() as u8, 1);

    let (an_hour_ago, soon) = (now_secs() - 3600, now_secs() + 10);
    assert_eq!(
        s.delete_expired_sent_messages(an_hour_ago).await.unwrap(),
        0
    );
    assert_eq!(s.delete_expired_sent_messages(soon).await.unwrap(), 1);
    assert_eq!(s.take_sent_message(chat, "m2").await.unwrap(), None);
}

async fn pending_inbound_buffer(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    let (chat, sender) = ("1@g.us", "5511@s.whatsapp.net");
    assert_eq!(
        s.get_pending_inbound(chat, sender, "m1").await.unwrap(),
        None
    );
    s.store_pending_inbound(chat, sender, "m1", b"one")
        .await
        .unwrap();
    s.store_pending_inbound(chat, sender, "m1", b"one again")
        .await
        .unwrap();
    assert_eq!(
        s.get_pending_inbound(chat, sender, "m1")
            .await
            .unwrap()
            .unwrap(),
        b"one again"
    );
    // The key is (chat, sender, id): the same id elsewhere is another message.
    assert_eq!(
        s.get_pending_inbound(chat, "other", "m1").await.unwrap(),
        None
    );
    s.delete_pending_inbound(chat, sender, "m1").await.unwrap();
    assert_eq!(
        s.get_pending_inbound(chat, sender, "m1").await.unwrap(),
        None
    );

    let rows: Vec<PendingInboundRow> = ["m2", "m3", "m4", "m2"]
        .iter()
        .map(|id| PendingInboundRow {
            chat,
            sender,
            id,
            message: id.as_bytes(),
        })
        .collect();
    s.store_pending_inbound_batch(&rows).await.unwrap();
    for id in ["m2", "m3", "m4"] {
        assert_eq!(
            s.get_pending_inbound(chat, sender, id)
                .await
                .unwrap()
                .unwrap(),
            id.as_bytes()
        );
    }
    let keys = ["m2", "m3", "nope"].map(|id| PendingInboundKey { chat, sender, id });
    s.delete_pending_inbound_batch(&keys).await.unwrap();
    assert_eq!(
        s.get_pending_inbound(chat, sender, "m2").await.unwrap(),
        None
    );
    assert_eq!(
        s.get_pending_inbound(chat, sender, "m3").await.unwrap(),
        None
    );
    assert!(
        s.get_pending_inbound(chat, sender, "m4")
            .await
            .unwrap()
            .is_some()
    );
    s.delete_pending_inbound_batch(&[]).await.unwrap();
    s.store_pending_inbound_batch(&[]).await.unwrap();

    let (an_hour_ago, soon) = (now_secs() - 3600, now_secs() + 10);
    assert_eq!(
        s.delete_expired_pending_inbound(an_hour_ago).await.unwrap(),
        0
    );
    assert_eq!(s.delete_expired_pending_inbound(soon).await.unwrap(), 1);
    assert_eq!(
        s.get_pending_inbound(chat, sender, "m4").await.unwrap(),
        None
    );
}

/// A pending message is held in memory while its hook runs, and written
/// before any Signal state is: after a crash (here, another store of the
/// same session, as the next process would have) a message whose ratchet
/// step was kept is always there to replay, and one whose step was lost
/// needs no replay (the server's copy decrypts again).
async fn pending_inbound_is_durable_before_the_signal_state_that_decrypted_it(db: TestDb) {
    let (store, s) = session(&db, "s1").await;
    let after_crash = || store.session_store(SessionId::from_raw("s1"));
    let (chat, sender) = ("5511@s.whatsapp.net", "5511@s.whatsapp.net");
    s.store_pending_inbound(chat, sender, "m1", b"one")
        .await
        .unwrap();
    assert_eq!(
        s.get_pending_inbound(chat, sender, "m1")
            .await
            .unwrap()
            .unwrap(),
        b"one"
    );
    assert_eq!(
        after_crash()
            .get_pending_inbound(chat, sender, "m1")
            .await
            .unwrap(),
        None,
        "not written while no Signal state was"
    );
    // Committed by the hook, then deleted: never written at all.
    s.delete_pending_inbound(chat, sender, "m1").await.unwrap();

    s.store_pending_inbound(chat, sender, "m2", b"two")
        .await
        .unwrap();
    s.put_sessions_batch(&[(arc("5511.0:1"), Bytes::from_static(b"ratchet"))])
        .await
        .unwrap();
    assert_eq!(
        after_crash()
            .get_pending_inbound(chat, sender, "m2")
            .await
            .unwrap()
            .unwrap(),
        b"two",
        "written with the session that decrypted it"
    );
    s.delete_pending_inbound(chat, sender, "m2").await.unwrap();
    assert_eq!(
        after_crash()
            .get_pending_inbound(chat, sender, "m2")
            .await
            .unwrap(),
        None,
        "and deleted from the database once the hook committed"
    );
    for write in 0..3 {
        s.store_pending_inbound(chat, sender, "m3", b"three")
            .await
            .unwrap();
        match write {
            0 => s.put_session("5511.0:1", b"ratchet").await.unwrap(),
            1 => s.remove_prekey(7).await.unwrap(),
            _ => s
                .put_sender_key("g@g.us::5511.0:1", b"chain")
                .await
                .unwrap(),
        }
        assert!(
            after_crash()
                .get_pending_inbound(chat, sender, "m3")
                .await
                .unwrap()
                .is_some(),
            "before write {write}"
        );
        s.delete_pending_inbound(chat, sender, "m3").await.unwrap();
    }
}

fn secret(id: &str, tag: u8, expires_at: i64, message_ts: i64) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: arc("1@g.us"),
        sender: arc("5511@s.whatsapp.net"),
        msg_id: arc(id),
        secret: [tag; 32],
        expires_at,
        message_ts,
    }
}

async fn msg_secrets_merge_their_windows(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    let (chat, sender) = ("1@g.us", "5511@s.whatsapp.net");
    assert_eq!(s.get_msg_secret(chat, sender, "m1").await.unwrap(), None);
    s.put_msg_secret(chat, sender, "m0", &[9; 32])
        .await
        .unwrap();
    assert_eq!(
        s.get_msg_secret_with_ts(chat, sender, "m0").await.unwrap(),
        Some((vec![9; 32], 0))
    );

    let stored = s
        .put_msg_secrets(vec![secret("m1", 1, 1000, 500), secret("m2", 2, 2000, 0)])
        .await
        .unwrap();
    assert_eq!(stored, 2);
    assert_eq!(
        s.get_msg_secret(chat, sender, "m1").await.unwrap().unwrap(),
        vec![1; 32]
    );
    assert_eq!(s.get_msg_secret(chat, "other", "m1").await.unwrap(), None);

    // Re-put: new secret, the later deadline and the known parent time stay.
    // In one batch, repeats of a key merge the same way.
    s.put_msg_secrets(vec![
        secret("m1", 3, 900, 0),
        secret("m2", 4, 2500, 700),
        secret("m2", 5, 2400, 600),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.get_msg_secret_with_ts(chat, sender, "m1").await.unwrap(),
        Some((vec![3; 32], 500))
    );
    assert_eq!(
        s.get_msg_secret_with_ts(chat, sender, "m2").await.unwrap(),
        Some((vec![5; 32], 700))
    );

    // Expiry: m1 ends at 1000, m2 at 2500, m0 never (0 beats any deadline).
    s.put_msg_secrets(vec![secret("m3", 6, 1500, 0), secret("m3", 6, 0, 0)])
        .await
        .unwrap();
    assert_eq!(s.delete_expired_msg_secrets(999).await.unwrap(), 0);
    assert_eq!(s.delete_expired_msg_secrets(1000).await.unwrap(), 1);
    assert_eq!(s.get_msg_secret(chat, sender, "m1").await.unwrap(), None);
    assert_eq!(s.delete_expired_msg_secrets(i64::MAX).await.unwrap(), 1);
    for id in ["m0", "m3"] {
        assert!(
            s.get_msg_secret(chat, sender, id).await.unwrap().is_some(),
            "{id} never expires"
        );
    }
}

async fn device_create_load_save(db: TestDb) {
    let (_, s) = session(&db, "s1").await;
    assert!(!s.exists().await.unwrap());
    assert!(s.load().await.unwrap().is_none());
    let id = s.create().await.unwrap();
    assert_eq!(id, 1);
    assert!(s.exists().await.unwrap());
    let created = s.load().await.unwrap().unwrap();

    // create() again must not replace the keys.
    s.create().await.unwrap();
    let again = s.load().await.unwrap().unwrap();
    assert_eq!(identity_public(&again), identity_public(&created));

    let mut device = Device::new();
    device.push_name = "Acme".to_owned();
    device.pn = Some("15550000001:3@s.whatsapp.net".parse().unwrap());
    device.login_counter = 7;
    device.next_pre_key_id = 812;
    s.save(&device).await.unwrap();
    let loaded = s.load().await.unwrap().unwrap();
    assert_eq!(identity_public(&loaded), identity_public(&device));
    assert_eq!(
        loaded.identity_key.private_key.serialize(),
        device.identity_key.private_key.serialize()
    );
    assert_eq!(
        loaded.noise_key.public_key.public_key_bytes(),
        device.noise_key.public_key.public_key_bytes()
    );
    assert_eq!(loaded.registration_id, device.registration_id);
    assert_eq!(
        loaded.signed_pre_key_signature,
        device.signed_pre_key_signature
    );
    assert_eq!(loaded.adv_secret_key, device.adv_secret_key);
    assert_eq!(loaded.push_name, "Acme");
    assert_eq!(loaded.pn, device.pn);
    assert_eq!((loaded.login_counter, loaded.next_pre_key_id), (7, 812));
}

/// whatsapp-rust's own persistence layer on this store: the first start
/// creates the device, a later one (a new process) finds the same keys.
async fn whatsapp_rust_keeps_its_device_across_restarts(db: TestDb) {
    use whatsapp_rust::store::persistence_manager::PersistenceManager;
    let (_, s) = session(&db, "s1").await;
    let backend: Arc<dyn Backend> = Arc::new(s.clone());
    let first = PersistenceManager::new(backend).await.unwrap();
    let identity = identity_public(&first.get_device_snapshot());
    first
        .modify_device(|d| d.push_name = "Acme".to_owned())
        .await;
    first.flush().await.unwrap();
    drop(first);

    let again = PersistenceManager::new(Arc::new(s.clone())).await.unwrap();
    let device = again.get_device_snapshot();
    assert_eq!(identity_public(&device), identity);
    assert_eq!(device.push_name, "Acme");
}

fn identity_public(device: &Device) -> Vec<u8> {
    device.identity_key.public_key.public_key_bytes().to_vec()
}

async fn corrupt_rows_are_errors_not_panics(db: TestDb) {
    let (store, s) = session(&db, "s1").await;
    let exec = |sql: &'static str| {
        let pool = store.pool().clone();
        async move { sqlx::query(sql).execute(&pool).await.unwrap() }
    };
    exec("INSERT INTO wa_devices VALUES ('s1', 'not json', 0)").await;
    assert!(s.load().await.is_err());
    s.put_identity(ALICE, [1; 32]).await.unwrap();
    sqlx::query("UPDATE wa_identities SET identity_key = $1")
        .bind(vec![1u8; 5])
        .execute(store.pool())
        .await
        .unwrap();
    assert!(s.load_identity(ALICE).await.is_err());
    exec("INSERT INTO wa_app_state_versions VALUES ('s1', 'regular', '{')").await;
    assert!(s.get_version("regular").await.is_err());
    exec("INSERT INTO wa_device_lists VALUES ('s1', 'u', '[{}]', 0, NULL, NULL)").await;
    assert!(s.get_devices("u").await.is_err());
    exec("INSERT INTO wa_prekeys VALUES ('s1', 5000000000, 'x', 0)").await;
    assert!(s.get_max_prekey_id().await.is_err());
}

/// One row in every table of `s`, its values marked by `tag`.
async fn fill(s: &SessionStore, tag: u8) {
    let t = i64::from(tag);
    let blob = [tag; 32];
    s.save(&Device::new()).await.unwrap();
    s.put_identity(ALICE, blob).await.unwrap();
    s.put_session(ALICE, &blob).await.unwrap();
    s.store_prekey(1, &blob, false).await.unwrap();
    s.store_signed_prekey(1, &blob).await.unwrap();
    s.put_sender_key(ALICE, &blob).await.unwrap();
    s.set_sync_key(b"k", sync_key(tag)).await.unwrap();
    let state = HashState {
        version: u64::from(tag),
        ..HashState::default()
    };
    s.set_version("regular", state).await.unwrap();
    s.put_mutation_macs("regular", 1, &[mac(1, tag)])
        .await
        .unwrap();
    s.set_sender_key_status("g", &[("d", tag.is_multiple_of(2))])
        .await
        .unwrap();
    s.put_lid_mapping(&lid("100", &format!("55{tag}"), t))
        .await
        .unwrap();
    s.save_base_key(ALICE, "m", &blob).await.unwrap();
    s.update_device_list(device_list("u", &[u32::from(tag)], None))
        .await
        .unwrap();
    s.put_group_metadata("g", &blob).await.unwrap();
    s.put_tc_token("j", &tc(&blob, t, None)).await.unwrap();
    s.store_sent_message("c", "m", &blob).await.unwrap();
    s.store_pending_inbound("c", "s", "m", &blob).await.unwrap();
    s.put_msg_secrets(vec![secret("m", tag, 10_000 + t, t)])
        .await
        .unwrap();
}

/// What [`fill`] wrote with `tag` is what `s` reads, in every table.
async fn assert_filled(s: &SessionStore, tag: u8) {
    let t = i64::from(tag);
    let blob = [tag; 32];
    assert!(s.exists().await.unwrap());
    assert_eq!(s.load_identity(ALICE).await.unwrap(), Some(blob));
    assert_eq!(s.get_session(ALICE).await.unwrap().unwrap(), &blob[..]);
    assert_eq!(s.load_prekey(1).await.unwrap().unwrap(), &blob[..]);
    assert_eq!(s.load_signed_prekey(1).await.unwrap().unwrap(), blob);
    assert_eq!(s.get_sender_key(ALICE).await.unwrap().unwrap(), blob);
    assert_eq!(
        s.get_sync_key(b"k").await.unwrap().unwrap().key_data,
        vec![tag; 32]
    );
    assert_eq!(
        s.get_version("regular").await.unwrap().version,
        u64::from(tag)
    );
    assert_eq!(
        s.get_mutation_mac("regular", &[1; 32])
            .await
            .unwrap()
            .unwrap(),
        vec![tag; 32]
    );
    assert_eq!(
        s.get_sender_key_devices("g").await.unwrap(),
        [("d".to_owned(), tag.is_multiple_of(2))]
    );
    assert_eq!(
        s.get_lid_mapping("100")
            .await
            .unwrap()
            .unwrap()
            .phone_number,
        format!("55{tag}")
    );
    assert!(s.has_same_base_key(ALICE, "m", &blob).await.unwrap());
    assert_eq!(
        s.get_devices("u").await.unwrap().unwrap().devices[0].device_id,
        u32::from(tag)
    );
    assert_eq!(s.get_group_metadata("g").await.unwrap().unwrap(), blob);
    assert_eq!(
        s.get_tc_token("j").await.unwrap().unwrap().token_timestamp,
        t
    );
    assert_eq!(
        s.get_pending_inbound("c", "s", "m").await.unwrap().unwrap(),
        blob
    );
    assert_eq!(
        s.get_msg_secret_with_ts("1@g.us", "5511@s.whatsapp.net", "m")
            .await
            .unwrap(),
        Some((blob.to_vec(), t))
    );
}

/// Nothing of `session` is left in any table that has a session_id
/// column (found in the schema, so a new table cannot be forgotten), but
/// for the tables in `kept`.
async fn assert_empty(store: &Store, session: &str, kept: &[&str]) {
    let tables_sql = if store.kind() == DbKind::Postgres {
        "SELECT CAST(table_name AS TEXT) FROM information_schema.columns
         WHERE table_schema = 'public' AND column_name = 'session_id'"
    } else {
        "SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) c
         WHERE m.type = 'table' AND c.name = 'session_id'"
    };
    let tables: Vec<String> = sqlx::query_scalar(tables_sql)
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(tables.len(), 19, "{tables:?}");
    for table in tables.iter().filter(|t| !kept.contains(&t.as_str())) {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE session_id = $1");
        let count: i64 = sqlx::query_scalar(&sql)
            .bind(session)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(count, 0, "{table} still holds rows of {session}");
    }
}

async fn sessions_are_isolated_and_deleted_alone(db: TestDb) {
    let store = db.store().await;
    let a = store.session_store(SessionId::from_raw("a"));
    let b = store.session_store(SessionId::from_raw("b"));
    fill(&a, 1).await;
    fill(&b, 2).await;
    assert_filled(&a, 1).await;
    assert_filled(&b, 2).await;

    // Session-wide operations stay within the session.
    a.clear_all_sender_key_devices().await.unwrap();
    assert_eq!(b.get_sender_key_devices("g").await.unwrap().len(), 1);
    assert_eq!(a.delete_expired_msg_secrets(i64::MAX).await.unwrap(), 1);
    a.store_sent_message("c", "m2", b"x").await.unwrap();
    assert_eq!(b.take_sent_message("c", "m2").await.unwrap(), None);
    assert_eq!(a.get_all_tc_token_jids().await.unwrap(), ["j"]);
    assert_eq!(b.get_all_lid_mappings().await.unwrap().len(), 1);

    let node = wago::store::NodeId::new("n1");
    let instance = store.write_fence().tag().to_owned();
    let ttl = std::time::Duration::from_secs(30);
    let claim = store.claim_node(&node, &instance, "http://test", 0, ttl);
    claim.await.unwrap();
    let lease = store.acquire_session_lease(a.session(), &node, &instance);
    assert!(lease.await.unwrap().is_some());
    store.delete_protocol_rows(a.session()).await.unwrap();
    // The lease outlives a logout, so the session's fencing token only grows.
    assert_empty(&store, "a", &["session_leases"]).await;
    let holder = store.session_lease_holder(a.session()).await.unwrap();
    assert_eq!(holder.map(|h| h.token), Some(1));
    assert!(!a.exists().await.unwrap());
    assert_filled(&b, 2).await;
}

async fn deleting_a_tenant_deletes_its_protocol_rows(db: TestDb) {
    use wago::store::tenants::NewKey;
    use wago::tenants::{ApiKey, KeySource, TenantName};
    let store = db.store().await;
    let mut tenants = Vec::new();
    for name in ["gone", "kept"] {
        let key = NewKey::for_key(&ApiKey::generate(), KeySource::Admin);
        let name = TenantName::parse(name).unwrap();
        tenants.push(store.create_tenant(&name, None, &key).await.unwrap());
    }
    let sessions: Vec<SessionStore> = tenants
        .iter()
        .map(|t| store.session_store(SessionId::from(&t.tenant_id())))
        .collect();
    fill(&sessions[0], 1).await;
    fill(&sessions[1], 2).await;
    assert!(store.delete_tenant(&tenants[0].tenant_id()).await.unwrap());
    assert_empty(&store, &tenants[0].id, &[]).await;
    assert_filled(&sessions[1], 2).await;
}
