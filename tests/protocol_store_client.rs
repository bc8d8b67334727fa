//! The protocol store under the real client: a `whatsapp-rust` client pairs
//! with the sandbox on a session's `SessionStore`, the process "restarts"
//! (client shut down, pool closed, a new `Store` on the same DSN), and a new
//! client comes back from the database alone, without pairing again. Two
//! sessions in one database come back each as itself.
#![cfg(feature = "sandbox")]

mod common;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;

use std::sync::Arc;

use common::TestDb;
use support_sandbox::{Companion, Sandbox, pair, pair_on};
use wacore::store::Device;
use wacore::store::traits::{Backend, DeviceStore};
use wago::sandbox::SandboxStats;
use wago::store::{SessionId, Store};

db_tests!(
    a_paired_client_comes_back_from_the_store_alone,
    two_sessions_in_one_database_come_back_each_as_itself,
    a_lost_app_state_key_comes_back_from_the_phone,
);

/// A session paired with a sandbox account, as the sandbox named it.
struct Paired {
    session: &'static str,
    phone: &'static str,
    lid: String,
    device: u16,
}

impl Paired {
    fn jid(&self) -> String {
        format!("{}:{}@s.whatsapp.net", self.phone, self.device)
    }

    /// `device` (the store's or the client's) is this pairing's.
    fn assert_is(&self, device: &Device, whose: &str) {
        let pn = device.pn.as_ref().map(ToString::to_string);
        assert_eq!(pn, Some(self.jid()), "{whose} device of {}", self.session);
        let lid = device.lid.as_ref().map(|jid| jid.user.to_string());
        assert_eq!(
            lid,
            Some(self.lid.clone()),
            "{whose} LID of {}",
            self.session
        );
        assert!(
            device.account.is_some(),
            "{whose} device of {} has no account",
            self.session
        );
    }
}

fn backend(store: &Store, session: &str) -> Arc<dyn Backend> {
    Arc::new(store.session_store(SessionId::from_raw(session)))
}

/// What the store holds as `session`'s device (None before pairing).
async fn stored_device(store: &Store, session: &str) -> Option<Device> {
    let session = store.session_store(SessionId::from_raw(session));
    session.load().await.expect("the device loads")
}

/// The store holds no device for `session` (another session's included).
async fn assert_unpaired(store: &Store, session: &str) {
    let device = stored_device(store, session).await.map(|d| d.pn);
    assert!(
        device.is_none(),
        "{session} has a device already: {device:?}"
    );
}

/// Between `before` and `after`, `logins` clients logged in with the
/// server key they kept (IK), and none went through a full handshake.
fn assert_resumed(before: &SandboxStats, after: &SandboxStats, logins: u64) {
    assert_eq!(
        after.ik_handshakes,
        before.ik_handshakes + logins,
        "{after:?}"
    );
    assert_eq!(after.xx_handshakes, before.xx_handshakes, "{after:?}");
}

/// Pairs a new client on `session` of `store` with a new account `phone`,
/// and waits until the sandbox shows it online.
async fn pair_session(
    sandbox: &Sandbox,
    store: &Store,
    session: &'static str,
    phone: &'static str,
) -> (Companion, Paired) {
    let view = sandbox.create_phone(phone).await;
    let (companion, device) = pair_on(sandbox, phone, backend(store, session)).await;
    sandbox
        .phone_until(phone, "the companion online", |v| v.online == [device])
        .await;
    let paired = Paired {
        session,
        phone,
        lid: view.lid,
        device,
    };
    (companion, paired)
}

/// Shuts `companion` down and waits until the sandbox shows it offline.
async fn stop(sandbox: &Sandbox, companion: Companion, paired: &Paired) {
    companion.stop().await;
    sandbox
        .phone_until(paired.phone, "the companion offline", |v| {
            v.online.is_empty()
        })
        .await;
}

/// The restart of a process: the old pool closed, a new one on the same
/// database.
async fn restart(db: &TestDb, old: Store) -> Store {
    old.close().await;
    db.store().await
}

/// The sandbox still knows `paired` as its phone's single companion, and
/// shows it online again.
async fn assert_back_online(sandbox: &Sandbox, paired: &Paired) {
    let view = sandbox
        .phone_until(paired.phone, "the companion back online", |v| {
            v.online == [paired.device]
        })
        .await;
    assert_eq!(view.devices, [0, paired.device], "{}", paired.session);
}

fn identity(device: &Device) -> Vec<u8> {
    device.identity_key.public_key.public_key_bytes().to_vec()
}

async fn a_paired_client_comes_back_from_the_store_alone(db: TestDb) {
    let sandbox = Sandbox::start().await;
    let store = db.store().await;
    assert_unpaired(&store, "tenant-a").await;
    let (companion, paired) = pair_session(&sandbox, &store, "tenant-a", "62811000301").await;
    let stored = stored_device(&store, "tenant-a")
        .await
        .expect("a device stored after pairing");
    paired.assert_is(&stored, "the stored");

    // Everything in memory goes: the client, then the pool. Only what
    // pairing stored is compared afterwards: whatsapp-rust 0.7 may lose the
    // last device save at shutdown (its saver's final flush takes the dirty
    // flag from `disconnect`'s, and is aborted when the client drops).
    stop(&sandbox, companion, &paired).await;
    let store = restart(&db, store).await;
    let before = sandbox.inner.stats();

    let mut again = Companion::start(&sandbox.ws_url(), backend(&store, "tenant-a")).await;
    again.logged_in().await;
    assert_resumed(&before, &sandbox.inner.stats(), 1);
    assert_back_online(&sandbox, &paired).await;
    let device = again.client().persistence_manager().get_device_snapshot();
    paired.assert_is(&device, "the restarted client's");
    assert_eq!(identity(&device), identity(&stored), "identity key changed");
    again.stop().await;
}

async fn two_sessions_in_one_database_come_back_each_as_itself(db: TestDb) {
    let sandbox = Sandbox::start().await;
    let store = db.store().await;
    let (first, a) = pair_session(&sandbox, &store, "tenant-a", "62811000311").await;
    assert_unpaired(&store, "tenant-b").await;
    let (second, b) = pair_session(&sandbox, &store, "tenant-b", "62811000312").await;
    let stored_a = stored_device(&store, a.session).await.expect("a's device");
    let stored_b = stored_device(&store, b.session).await.expect("b's device");
    a.assert_is(&stored_a, "the stored");
    b.assert_is(&stored_b, "the stored");
    assert_ne!(identity(&stored_a), identity(&stored_b), "one identity key");

    stop(&sandbox, first, &a).await;
    stop(&sandbox, second, &b).await;
    let store = restart(&db, store).await;

    // Both at once, on one pool.
    let before = sandbox.inner.stats();
    let ws_url = sandbox.ws_url();
    let (mut first, mut second) = tokio::join!(
        Companion::start(&ws_url, backend(&store, a.session)),
        Companion::start(&ws_url, backend(&store, b.session)),
    );
    tokio::join!(first.logged_in(), second.logged_in());
    assert_resumed(&before, &sandbox.inner.stats(), 2);
    let restarted = [(&first, &a, &stored_a), (&second, &b, &stored_b)];
    for (companion, paired, stored) in restarted {
        assert_back_online(&sandbox, paired).await;
        let device = companion
            .client()
            .persistence_manager()
            .get_device_snapshot();
        paired.assert_is(&device, "the restarted client's");
        assert_eq!(identity(&device), identity(stored), "{}", paired.session);
    }
    first.stop().await;
    second.stop().await;
}

/// How many app-state keys the store holds for `session`.
async fn app_state_keys(store: &Store, session: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM wa_app_state_keys WHERE session_id = '{session}'");
    sqlx::query_scalar(&sql)
        .fetch_one(store.pool())
        .await
        .expect("the keys counted")
}

/// A companion whose store lost the account's app-state key asks its phone
/// (and its sibling) for it when a patch needs it: the phone shares it
/// again, and the patch applies.
async fn a_lost_app_state_key_comes_back_from_the_phone(db: TestDb) {
    let sandbox = Sandbox::start().await;
    let store = db.store().await;
    let (first, paired) = pair_session(&sandbox, &store, "tenant-a", "62811000321").await;
    let started = std::time::Instant::now();
    while app_state_keys(&store, "tenant-a").await == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no key stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (sibling, sibling_device) = pair(&sandbox, paired.phone).await;

    first.stop().await;
    sandbox
        .phone_until(paired.phone, "the first companion offline", |v| {
            v.online == [sibling_device]
        })
        .await;
    let sql = "DELETE FROM wa_app_state_keys WHERE session_id = 'tenant-a'";
    sqlx::query(sql)
        .execute(store.pool())
        .await
        .expect("keys deleted");
    assert_eq!(app_state_keys(&store, "tenant-a").await, 0);

    let mut again = Companion::start(&sandbox.ws_url(), backend(&store, "tenant-a")).await;
    again.logged_in().await;
    let from_phone = again.client().wait_for_node(
        whatsapp_rust::NodeFilter::tag("message")
            .attr("from", format!("{}@s.whatsapp.net", paired.phone))
            .attr("category", "peer"),
    );
    sibling
        .client()
        .profile()
        .set_push_name("Found Again")
        .await
        .expect("the sibling renames the account");
    tokio::time::timeout(std::time::Duration::from_secs(15), from_phone)
        .await
        .expect("the phone's key share in time")
        .expect("the phone's key share");
    let started = std::time::Instant::now();
    while again.client().push_name() != "Found Again" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the patch was not applied: {:?}",
            again.client().push_name()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        app_state_keys(&store, "tenant-a").await > 0,
        "the key is stored again"
    );
    again.stop().await;
    sibling.stop().await;
}
