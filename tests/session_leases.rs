//! Session leases: one node runs a session; a live lease is never stolen,
//! an expired one is taken over, and a former holder's token stops working.
//! Two "nodes" are two node ids (and two pools) on one database.

mod common;

use std::time::{Duration, Instant};

use common::TestDb;
use wago::store::{NodeId, SessionId, Store};

db_tests!(
    a_live_lease_is_not_taken,
    an_expired_lease_is_taken_over_and_the_old_token_fails,
    a_released_lease_is_free_at_once,
    a_node_takes_back_its_own_lease,
    concurrent_acquires_have_one_winner,
    sessions_have_leases_of_their_own,
);

const LONG: Duration = Duration::from_secs(60);

/// Two nodes, each with its own pool, as two processes would have.
async fn two_nodes(db: &TestDb) -> ((Store, NodeId), (Store, NodeId)) {
    let a = (db.store().await, NodeId::new("node-a"));
    let b = (db.store().await, NodeId::new("node-b"));
    (a, b)
}

fn session() -> SessionId {
    SessionId::from_raw("tenant-1")
}

async fn a_live_lease_is_not_taken(db: TestDb) {
    let ((sa, a), (sb, b)) = two_nodes(&db).await;
    let before = Instant::now();
    let mut lease = sa
        .acquire_session_lease(&session(), &a, LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.token(), 1);
    assert!(lease.valid_until() >= before + LONG && lease.valid_until() <= Instant::now() + LONG);

    assert!(
        sb.acquire_session_lease(&session(), &b, LONG)
            .await
            .unwrap()
            .is_none()
    );
    let holder = sb.session_lease_holder(&session()).await.unwrap().unwrap();
    assert_eq!((&holder.node, holder.token), (&a, 1));
    assert!(holder.expires_in_ms > 50_000, "{holder:?}");

    let old_expiry = lease.expires_at();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(sa.renew_session_lease(&mut lease, LONG).await.unwrap());
    assert!(lease.expires_at() > old_expiry);
    assert!(
        sb.acquire_session_lease(&session(), &b, LONG)
            .await
            .unwrap()
            .is_none()
    );
}

async fn an_expired_lease_is_taken_over_and_the_old_token_fails(db: TestDb) {
    let ((sa, a), (sb, b)) = two_nodes(&db).await;
    let short = Duration::from_millis(300);
    let mut old = sa
        .acquire_session_lease(&session(), &a, short)
        .await
        .unwrap()
        .unwrap();
    assert!(
        sb.acquire_session_lease(&session(), &b, LONG)
            .await
            .unwrap()
            .is_none()
    );

    tokio::time::sleep(Duration::from_millis(450)).await;
    let mut new = sb
        .acquire_session_lease(&session(), &b, LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.token(), 2, "a takeover gets the next token");

    assert!(
        !sa.renew_session_lease(&mut old, LONG).await.unwrap(),
        "stale token"
    );
    assert!(
        sa.acquire_session_lease(&session(), &a, LONG)
            .await
            .unwrap()
            .is_none()
    );
    // The former holder's release leaves the new holder's lease alone.
    sa.release_session_lease(&old).await.unwrap();
    let holder = sa.session_lease_holder(&session()).await.unwrap().unwrap();
    assert_eq!((holder.node, holder.token), (b, 2));
    assert!(holder.expires_in_ms > 50_000);
    assert!(sb.renew_session_lease(&mut new, LONG).await.unwrap());
}

async fn a_released_lease_is_free_at_once(db: TestDb) {
    let ((sa, a), (sb, b)) = two_nodes(&db).await;
    let mut first = sa
        .acquire_session_lease(&session(), &a, LONG)
        .await
        .unwrap()
        .unwrap();
    sa.release_session_lease(&first).await.unwrap();
    let second = sb
        .acquire_session_lease(&session(), &b, LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.token(), 2, "tokens keep growing across releases");
    assert!(!sa.renew_session_lease(&mut first, LONG).await.unwrap());
}

/// A node restarted with the same id need not wait for its own lease.
async fn a_node_takes_back_its_own_lease(db: TestDb) {
    let ((sa, a), (sb, b)) = two_nodes(&db).await;
    let mut before_restart = sa
        .acquire_session_lease(&session(), &a, LONG)
        .await
        .unwrap()
        .unwrap();
    let after_restart = sa
        .acquire_session_lease(&session(), &a, LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after_restart.token(), 2);
    assert!(
        !sa.renew_session_lease(&mut before_restart, LONG)
            .await
            .unwrap()
    );
    assert!(
        sb.acquire_session_lease(&session(), &b, LONG)
            .await
            .unwrap()
            .is_none()
    );
}

async fn concurrent_acquires_have_one_winner(db: TestDb) {
    let store = db.store().await;
    let tries = (0..8).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let node = NodeId::new(format!("node-{n}"));
            store
                .acquire_session_lease(&session(), &node, LONG)
                .await
                .unwrap()
        })
    });
    let mut winners = 0;
    for attempt in tries {
        winners += usize::from(attempt.await.unwrap().is_some());
    }
    assert_eq!(winners, 1);
}

async fn sessions_have_leases_of_their_own(db: TestDb) {
    let ((sa, a), (sb, b)) = two_nodes(&db).await;
    let other = SessionId::from_raw("tenant-2");
    assert!(
        sa.acquire_session_lease(&session(), &a, LONG)
            .await
            .unwrap()
            .is_some()
    );
    let lease = sb
        .acquire_session_lease(&other, &b, LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.token(), 1);
    assert!(
        sa.session_lease_holder(&SessionId::from_raw("never"))
            .await
            .unwrap()
            .is_none()
    );
}
