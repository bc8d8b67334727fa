//! Session leases: one node runs a session; a live lease is never stolen,
//! an expired one is taken over, and a former holder's token stops working.
//! Two "nodes" are two node ids, each with its own pool, on one database.

mod common;

use std::time::{Duration, Instant};

use common::TestDb;
use wago::store::{Lease, NodeId, SessionId, Store};

db_tests!(
    a_live_lease_is_not_taken,
    an_expired_lease_is_taken_over_and_the_old_token_fails,
    a_released_lease_is_free_at_once,
    a_node_takes_back_its_own_lease,
    concurrent_acquires_have_one_winner,
    sessions_have_leases_of_their_own,
    a_command_nobody_waits_for_is_withdrawn_not_run,
);

const LONG: Duration = Duration::from_secs(60);

/// A node: its own pool (as a process of its own would have) and its id.
struct Node {
    store: Store,
    id: NodeId,
}

impl Node {
    async fn new(db: &TestDb, id: &str) -> Self {
        Node {
            store: db.store().await,
            id: NodeId::new(id),
        }
    }

    async fn acquire_for(&self, session: &SessionId, ttl: Duration) -> Option<Lease> {
        let lease = self.store.acquire_session_lease(session, &self.id, ttl);
        lease.await.unwrap()
    }

    async fn acquire(&self, ttl: Duration) -> Option<Lease> {
        self.acquire_for(&tenant(), ttl).await
    }

    async fn renew(&self, lease: &mut Lease) -> bool {
        self.store.renew_session_lease(lease, LONG).await.unwrap()
    }

    async fn release(&self, lease: &Lease) {
        self.store.release_session_lease(lease).await.unwrap()
    }

    /// (holder, token, ms until it expires) of the tenant's lease.
    async fn holder(&self) -> (NodeId, i64, i64) {
        let holder = self.store.session_lease_holder(&tenant()).await.unwrap();
        let holder = holder.expect("a lease row");
        (holder.node, holder.token, holder.expires_in_ms)
    }
}

fn tenant() -> SessionId {
    SessionId::from_raw("tenant-1")
}

async fn a_live_lease_is_not_taken(db: TestDb) {
    let (a, b) = (
        Node::new(&db, "node-a").await,
        Node::new(&db, "node-b").await,
    );
    let before = Instant::now();
    let mut lease = a.acquire(LONG).await.expect("a free lease");
    assert_eq!(lease.token(), 1);
    assert!(lease.valid_until() >= before + LONG);
    assert!(lease.valid_until() <= Instant::now() + LONG);

    assert!(b.acquire(LONG).await.is_none());
    let (holder, token, expires_in_ms) = b.holder().await;
    assert_eq!((holder, token), (a.id.clone(), 1));
    assert!(expires_in_ms > 50_000, "{expires_in_ms}");

    let old_expiry = lease.expires_at();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(a.renew(&mut lease).await);
    assert!(lease.expires_at() > old_expiry);
    assert!(b.acquire(LONG).await.is_none());
}

async fn an_expired_lease_is_taken_over_and_the_old_token_fails(db: TestDb) {
    let (a, b) = (
        Node::new(&db, "node-a").await,
        Node::new(&db, "node-b").await,
    );
    let mut old = a.acquire(Duration::from_millis(300)).await.unwrap();
    assert!(b.acquire(LONG).await.is_none());

    tokio::time::sleep(Duration::from_millis(450)).await;
    let mut new = b.acquire(LONG).await.expect("an expired lease");
    assert_eq!(new.token(), 2, "a takeover gets the next token");

    assert!(!a.renew(&mut old).await, "a stale token renews nothing");
    assert!(a.acquire(LONG).await.is_none());
    // The former holder's release leaves the new holder's lease alone.
    a.release(&old).await;
    let (holder, token, expires_in_ms) = a.holder().await;
    assert_eq!((holder, token), (b.id.clone(), 2));
    assert!(expires_in_ms > 50_000);
    assert!(b.renew(&mut new).await);
}

async fn a_released_lease_is_free_at_once(db: TestDb) {
    let (a, b) = (
        Node::new(&db, "node-a").await,
        Node::new(&db, "node-b").await,
    );
    let mut first = a.acquire(LONG).await.unwrap();
    a.release(&first).await;
    assert!(
        !a.renew(&mut first).await,
        "a released lease stays released"
    );
    let second = b.acquire(LONG).await.expect("a released lease");
    assert_eq!(second.token(), 2, "tokens keep growing across releases");
}

/// A node restarted with the same id need not wait for its own lease.
async fn a_node_takes_back_its_own_lease(db: TestDb) {
    let (a, b) = (
        Node::new(&db, "node-a").await,
        Node::new(&db, "node-b").await,
    );
    let mut before_restart = a.acquire(LONG).await.unwrap();
    let after_restart = a.acquire(LONG).await.expect("its own lease");
    assert_eq!(after_restart.token(), 2);
    assert!(!a.renew(&mut before_restart).await);
    assert!(b.acquire(LONG).await.is_none());
}

async fn concurrent_acquires_have_one_winner(db: TestDb) {
    let store = db.store().await;
    // Collected first, so all eight are running before any is awaited.
    let tries: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let node = NodeId::new(format!("node-{n}"));
                let session = tenant();
                let lease = store.acquire_session_lease(&session, &node, LONG);
                lease.await.unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for attempt in tries {
        winners += usize::from(attempt.await.unwrap().is_some());
    }
    assert_eq!(winners, 1);
}

async fn sessions_have_leases_of_their_own(db: TestDb) {
    let (a, b) = (
        Node::new(&db, "node-a").await,
        Node::new(&db, "node-b").await,
    );
    assert!(a.acquire(LONG).await.is_some());
    let other = SessionId::from_raw("tenant-2");
    let lease = b.acquire_for(&other, LONG).await.expect("another session");
    assert_eq!(lease.token(), 1);
    let never = SessionId::from_raw("never");
    assert!(
        a.store
            .session_lease_holder(&never)
            .await
            .unwrap()
            .is_none()
    );
}

/// A command whose requester stopped waiting (it died, say, before it
/// could withdraw it) is withdrawn when the session next looks, never
/// carried out: a stale logout must not log a number out hours later.
async fn a_command_nobody_waits_for_is_withdrawn_not_run(db: TestDb) {
    use wago::store::cluster::{CommandKind, CommandStatus};
    use wago::store::tenants::NewKey;
    use wago::tenants::{ApiKey, KeySource, TenantName};
    let store = db.store().await;
    let tenant = store
        .create_tenant(
            &TenantName::parse("commanded").unwrap(),
            None,
            &NewKey::for_key(&ApiKey::generate(), KeySource::Admin),
        )
        .await
        .unwrap()
        .tenant_id();
    let stale = store
        .insert_command(&tenant, CommandKind::Logout, None)
        .await
        .unwrap();
    sqlx::query("UPDATE session_commands SET created_at = created_at - 3600000 WHERE id = $1")
        .bind(stale)
        .execute(store.pool())
        .await
        .unwrap();
    let fresh = store
        .insert_command(&tenant, CommandKind::Stop, None)
        .await
        .unwrap();

    let claimed = store
        .claim_commands(&tenant, Duration::from_secs(15))
        .await
        .unwrap();
    let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    assert_eq!(ids, [fresh], "only the command someone may still wait for");
    let status = |id| {
        let store = &store;
        async move { store.get_command(id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(stale).await, CommandStatus::Expired);
    assert_eq!(status(fresh).await, CommandStatus::Running);
    // Claimed once: nothing is left to take.
    assert!(
        store
            .claim_commands(&tenant, Duration::from_secs(15))
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}
