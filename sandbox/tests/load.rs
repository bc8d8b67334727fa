//! Two hundred real clients pair and reach `Connected` at the same time.

use std::sync::Arc;

use crate::support::{Sandbox, pair};

const CLIENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_pair_and_connect_concurrently() {
    let sandbox = Arc::new(Sandbox::start().await);
    let phones: Vec<String> = (0..CLIENTS).map(|i| format!("62812{i:07}")).collect();
    for phone in &phones {
        sandbox.create_phone(phone).await;
    }
    let mut pairing = tokio::task::JoinSet::new();
    for phone in phones.clone() {
        let sandbox = sandbox.clone();
        pairing.spawn(async move { pair(&sandbox, &phone).await });
    }
    let mut companions = Vec::with_capacity(CLIENTS);
    while let Some(paired) = pairing.join_next().await {
        let (companion, device) = paired.expect("pairing task");
        assert_eq!(device, 1);
        companions.push(companion);
    }
    assert_eq!(companions.len(), CLIENTS);

    let stats = sandbox.inner.stats();
    assert_eq!(stats.online_devices, CLIENTS, "{stats:?}");
    assert_eq!(stats.logins, CLIENTS as u64, "{stats:?}");
    assert_eq!(stats.unimplemented_iqs, 0, "{stats:?}");
    for phone in &phones {
        let view = sandbox.phone(phone).await;
        assert_eq!(
            (view.devices, view.online),
            (vec![0, 1], vec![1]),
            "{phone}"
        );
    }
    for companion in companions {
        companion.stop().await;
    }
}
