//! What a client learns about other accounts through the sandbox: device
//! lists by phone number or LID (device 0 and the companions, with the
//! signed key-index list), prekey bundles for any device, each handing out
//! its own one-time prekey, and nothing for numbers that have no account.

use wacore::iq::prekeys::PreKeyFetchSpec;
use wacore::iq::usync::DeviceListSpec;
use whatsapp_rust::Jid;

use crate::support::{Sandbox, pair};

const A: &str = "62811000301";
const C: &str = "62811000303";
const NOBODY: &str = "62899000009";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_lists_of_another_account_by_number_and_by_lid() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(A).await;
    let c = sandbox.create_phone(C).await;
    let (a, _) = pair(&sandbox, A).await;
    let (c1, _) = pair(&sandbox, C).await;

    let asked = vec![Jid::pn(C), Jid::lid(c.lid.as_str()), Jid::pn(NOBODY)];
    let answer = a
        .client()
        .execute(DeviceListSpec::new(asked, "test"))
        .await
        .expect("a usync answer");
    let mut users: Vec<String> = answer
        .device_lists
        .iter()
        .map(|l| l.user.to_string())
        .collect();
    users.sort();
    let mut expected = vec![format!("{C}@s.whatsapp.net"), format!("{}@lid", c.lid)];
    expected.sort();
    assert_eq!(users, expected, "the unknown number is left out");
    for list in &answer.device_lists {
        let ids: Vec<u16> = list.devices.iter().map(|d| d.device).collect();
        assert_eq!(ids, [0, 1], "{}", list.user);
        assert!(list.key_index_bytes.is_some(), "{}", list.user);
    }
    a.stop().await;
    c1.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bundle_of_a_phone_hands_out_a_new_one_time_prekey() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(A).await;
    sandbox.create_phone(C).await;
    let (a, _) = pair(&sandbox, A).await;

    let mut ids = Vec::new();
    for _ in 0..2 {
        let phone = Jid::pn_device(C, 0);
        let outcome = a
            .client()
            .execute(PreKeyFetchSpec::new(vec![
                phone.clone(),
                Jid::pn_device(NOBODY, 0),
            ]))
            .await
            .expect("bundles");
        let bundle = outcome.bundles.get(&phone).expect("the phone's bundle");
        ids.push(
            bundle
                .pre_key_id()
                .expect("a bundle")
                .expect("a one-time prekey"),
        );
        assert_eq!(outcome.bundles.len(), 1, "nothing for an unknown number");
    }
    assert_ne!(ids[0], ids[1]);
    a.stop().await;
}
