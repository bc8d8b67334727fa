//! Node claims and session leases: one process per node id, one node per
//! session; a live lease is never taken, a lapsed node's sessions are taken
//! only once it is fenced, and a former holder's token and connections stop
//! working. Each "node" here has a store of its own (its own pool and
//! connection tag, as a process of its own would have) on one database.

mod common;

use std::time::Duration;

use common::TestDb;
use wago::store::cluster::Claim;
use wago::store::{Lease, NodeId, SessionId, Store};

db_tests!(
    a_live_lease_is_not_taken,
    a_lapsed_node_is_fenced_before_its_sessions_are_taken,
    a_released_lease_is_free_at_once,
    a_second_process_cannot_claim_a_live_node,
    a_node_that_lapsed_claims_again_and_starts_over,
    concurrent_acquires_have_one_winner,
    sessions_have_leases_of_their_own,
    a_fenced_process_writes_nothing,
    a_command_nobody_waits_for_is_withdrawn_not_run,
    freed_sessions_wait_on_the_placement_queue,
    counts_by_state_show_what_every_node_reports,
);

const LONG: Duration = Duration::from_secs(60);

/// A node: its own store (as a process of its own would have), its id,
/// and its claim on the id.
struct Node {
    store: Store,
    id: NodeId,
}

impl Node {
    async fn new(db: &TestDb, id: &str) -> Self {
        let node = Node {
            store: db.store().await,
            id: NodeId::new(id),
        };
        assert_eq!(
            node.claim().await,
            Claim::Claimed {
                expires_at: node.expires_at().await
            }
        );
        node
    }

    fn instance(&self) -> &str {
        self.store.write_fence().tag()
    }

    async fn claim(&self) -> Claim {
        let claim = self
            .store
            .claim_node(&self.id, self.instance(), "http://test", 0, LONG);
        claim.await.unwrap()
    }

    /// After another node cut this node's connections. Its own fence
    /// closed before that (its claim lapsed by its clock first), and here
    /// opens again as if its clock were wrong: what it does next reaches
    /// the database's half of fencing, which must refuse it alone. The
    /// connections cut meanwhile are not used again.
    fn was_cut_off(&self) {
        let fence = self.store.write_fence();
        fence.close();
        fence.open_until(std::time::Instant::now() + LONG);
    }

    async fn expires_at(&self) -> i64 {
        sqlx::query_scalar("SELECT expires_at FROM nodes WHERE id = $1")
            .bind(self.id.as_str())
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    async fn renew(&self) -> bool {
        let renewed = self.store.renew_node(&self.id, self.instance(), LONG, 1);
        renewed.await.unwrap().is_some()
    }

    /// Makes the node's claim lapse, as if it had stopped renewing an hour
    /// ago (the database's clock decides, so no waiting is needed).
    async fn lapse(&self) {
        sqlx::query("UPDATE nodes SET expires_at = expires_at - 7200000 WHERE id = $1")
            .bind(self.id.as_str())
            .execute(self.store.pool())
            .await
            .unwrap();
    }

    async fn acquire_for(&self, session: &SessionId) -> Option<Lease> {
        let lease = self
            .store
            .acquire_session_lease(session, &self.id, self.instance());
        lease.await.unwrap()
    }

    async fn acquire(&self) -> Option<Lease> {
        self.acquire_for(&tenant()).await
    }

    async fn release(&self, lease: &Lease) {
        self.store.release_session_lease(lease).await.unwrap()
    }

    /// (holder, token, live) of the tenant's lease.
    async fn holder(&self) -> (NodeId, i64, bool) {
        let holder = self.store.session_lease_holder(&tenant()).await.unwrap();
        let holder = holder.expect("a lease row");
        (holder.node, holder.token, holder.live)
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
    let lease = a.acquire().await.expect("a free lease");
    assert_eq!(lease.token(), 1);
    assert_eq!(lease.instance(), a.instance());

    assert!(b.acquire().await.is_none());
    assert_eq!(b.holder().await, (a.id.clone(), 1, true));
    let holder = b.store.session_lease_holder(&tenant()).await.unwrap();
    let expires_in_ms = holder.unwrap().expires_in_ms.unwrap();
    assert!(expires_in_ms > 50_000, "{expires_in_ms}");

    // Renewing the node renews the lease: one row, whatever it holds.
    let before = a.expires_at().await;
    assert!(a.renew().await);
    assert!(a.expires_at().await >= before);
    assert!(b.acquire().await.is_none());
}

async fn a_lapsed_node_is_fenced_before_its_sessions_are_taken(db: TestDb) {
    let (a, b) = (
        Node::new(&db, "node-a").await,
        Node::new(&db, "node-b").await,
    );
    let old = a.acquire().await.unwrap();
    a.lapse().await;
    assert_eq!(a.holder().await, (a.id.clone(), 1, false));
    assert!(
        b.acquire().await.is_none(),
        "not before its connections are cut"
    );
    assert_eq!(b.store.fence_lapsed_nodes().await.unwrap(), 1);
    assert_eq!(b.store.fence_lapsed_nodes().await.unwrap(), 0, "once");
    a.was_cut_off();
    let new = b.acquire().await.expect("a fenced node's lease");
    assert_eq!(new.token(), 2, "a takeover gets the next token");

    assert!(!a.renew().await, "a lapsed claim renews nothing");
    assert!(a.acquire().await.is_none());
    // The former holder's release leaves the new holder's lease alone.
    a.release(&old).await;
    assert_eq!(a.holder().await, (b.id.clone(), 2, true));
}

async fn a_released_lease_is_free_at_once(db: TestDb) {
    let (a, b) = (
        Node::new(&db, "node-a").await,
        Node::new(&db, "node-b").await,
    );
    let first = a.acquire().await.unwrap();
    a.release(&first).await;
    assert_eq!(a.holder().await, (a.id.clone(), 1, false));
    let second = b.acquire().await.expect("a released lease");
    assert_eq!(second.token(), 2, "tokens keep growing across releases");
}

/// Two processes with one `NODE_ID`: the second gets the first's claim
/// back, changes nothing, and may claim only once the first has lapsed
/// (fencing it); the first then renews nothing and its leases are gone.
async fn a_second_process_cannot_claim_a_live_node(db: TestDb) {
    let first = Node::new(&db, "node-a").await;
    let lease = first.acquire().await.unwrap();
    let second = Node {
        store: db.store().await,
        id: NodeId::new("node-a"),
    };
    if !db.is_postgres() {
        // SQLite: the flock on the database file already proved the first
        // process gone, so the claim goes to the newest at once.
        assert!(matches!(second.claim().await, Claim::Claimed { .. }));
        assert!(!first.renew().await);
        assert!(!first.holder().await.2, "released at the claim");
        return;
    }
    let Claim::Held(held) = second.claim().await else {
        panic!("a live claim was taken");
    };
    assert_eq!(held.instance, first.instance());
    assert!(held.expires_in_ms > 50_000);
    assert!(second.acquire().await.is_none());
    assert!(first.renew().await, "the first runs on");
    assert_eq!(first.holder().await, (first.id.clone(), 1, true));

    first.lapse().await;
    assert!(matches!(second.claim().await, Claim::Claimed { .. }));
    first.was_cut_off();
    assert!(!first.renew().await);
    assert!(!first.holder().await.2, "released at the claim");
    let taken = second.acquire().await.expect("the session, afresh");
    assert_eq!(taken.token(), lease.token() + 1);
}

/// A node cut off past its claim (its sessions stopped) claims its row
/// again under the same instance: the leases it held are released, so
/// they are taken afresh, with new tokens.
async fn a_node_that_lapsed_claims_again_and_starts_over(db: TestDb) {
    let a = Node::new(&db, "node-a").await;
    let old = a.acquire().await.unwrap();
    a.lapse().await;
    if db.is_postgres() {
        // SQLite has one process (the flock): a late renewal still counts.
        assert!(!a.renew().await);
    }
    assert!(matches!(a.claim().await, Claim::Claimed { .. }));
    assert_eq!(a.holder().await, (a.id.clone(), 1, false));
    let new = a.acquire().await.unwrap();
    assert_eq!(new.token(), old.token() + 1);
}

async fn concurrent_acquires_have_one_winner(db: TestDb) {
    let mut nodes = Vec::new();
    for n in 0..8 {
        nodes.push(std::sync::Arc::new(
            Node::new(&db, &format!("node-{n}")).await,
        ));
    }
    // Collected first, so all eight are running before any is awaited.
    let tries: Vec<_> = nodes
        .iter()
        .map(|node| {
            let node = node.clone();
            tokio::spawn(async move { node.acquire().await })
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
    assert!(a.acquire().await.is_some());
    let other = SessionId::from_raw("tenant-2");
    let lease = b.acquire_for(&other).await.expect("another session");
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

/// Once a process's write fence closes, or a session's store is revoked,
/// nothing more is written; on Postgres, a transaction a lapsed node began
/// in time is cut when another node fences it, and never commits.
async fn a_fenced_process_writes_nothing(db: TestDb) {
    use wacore::store::traits::SignalStore;
    use wago::store::Revocation;
    let (a, b) = (
        Node::new(&db, "node-a").await,
        Node::new(&db, "node-b").await,
    );
    let run = Revocation::default();
    let protocol = a.store.session_store(tenant()).revocable(run.clone());
    protocol
        .put_identity("x@s.whatsapp.net", [1; 32])
        .await
        .unwrap();
    run.revoke();
    assert!(
        protocol
            .put_identity("y@s.whatsapp.net", [2; 32])
            .await
            .is_err()
    );
    let fresh = a.store.session_store(tenant());
    fresh
        .put_identity("y@s.whatsapp.net", [2; 32])
        .await
        .unwrap();

    a.store.write_fence().close();
    assert!(
        fresh
            .put_identity("z@s.whatsapp.net", [3; 32])
            .await
            .is_err()
    );
    let written: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM wa_identities")
        .fetch_one(b.store.pool())
        .await
        .unwrap();
    assert_eq!(written, 2, "nothing past the fence");

    if db.is_postgres() {
        let c = Node::new(&db, "node-c").await;
        // Its protocol store's writer holds a connection of its own.
        c.store
            .session_store(tenant())
            .put_identity("c@s.whatsapp.net", [5; 32])
            .await
            .unwrap();
        let mut tx = c.store.pool().begin().await.unwrap();
        sqlx::query(
            "INSERT INTO wa_identities (session_id, address, identity_key) VALUES ($1, $2, $3)",
        )
        .bind("tenant-1")
        .bind("late@s.whatsapp.net")
        .bind(vec![4u8; 32])
        .execute(&mut *tx)
        .await
        .unwrap();
        c.lapse().await;
        assert_eq!(b.store.fence_lapsed_nodes().await.unwrap(), 1);
        assert!(
            tx.commit().await.is_err(),
            "the lapsed node's connection was cut"
        );
        let late: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM wa_identities WHERE address = 'late@s.whatsapp.net'",
        )
        .fetch_one(b.store.pool())
        .await
        .unwrap();
        assert_eq!(late, 0);
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(c.store.write_fence().tag())
                .fetch_one(b.store.pool())
                .await
                .unwrap();
        assert_eq!(open, 0, "every connection of the lapsed node was cut");
    }
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

/// A session with a linked device that no node runs waits on the placement
/// queue: seeded, released, or left by a node that lapsed and was fenced;
/// not once it is logged out. A row goes to one taker at a time (another
/// may retake it once the first took too long) and leaves the queue when a
/// node takes the session's lease.
async fn freed_sessions_wait_on_the_placement_queue(db: TestDb) {
    use wago::store::tenants::NewKey;
    use wago::tenants::{ApiKey, KeySource, TenantId, TenantName};
    let (a, b) = (
        Node::new(&db, "node-a").await,
        Node::new(&db, "node-b").await,
    );
    let mut tenants = Vec::new();
    for name in ["q1", "q2", "q3"] {
        let tenant = a
            .store
            .create_tenant(
                &TenantName::parse(name).unwrap(),
                None,
                &NewKey::for_key(&ApiKey::generate(), KeySource::Admin),
            )
            .await
            .unwrap()
            .tenant_id();
        a.store.seed_session_status(&tenant, true).await.unwrap();
        tenants.push(tenant);
    }
    let session = |i: usize| SessionId::from(&tenants[i]);
    let queued = || async {
        let mut ids: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM placement_queue")
            .fetch_all(a.store.pool())
            .await
            .unwrap();
        ids.sort();
        // Placement's count of what waits, taken rows included.
        let counted = a.store.count_queued_sessions().await.unwrap();
        assert_eq!(counted, ids.len() as i64, "{ids:?}");
        ids
    };
    let ids = |picked: &[usize]| {
        let mut ids: Vec<String> = picked
            .iter()
            .map(|i| tenants[*i].as_str().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |taken: Vec<TenantId>| {
        let mut ids: Vec<String> = taken.iter().map(|t| t.as_str().to_owned()).collect();
        ids.sort();
        ids
    };
    assert_eq!(queued().await, ids(&[0, 1, 2]), "seeded as linked");
    assert!(a.store.queue_waiting(LONG).await.unwrap());

    // One taker at a time; a take that is too old may be taken again.
    let took = a
        .store
        .take_queued_sessions(a.instance(), 2, LONG)
        .await
        .unwrap();
    assert_eq!(took.len(), 2);
    let rest = b
        .store
        .take_queued_sessions(b.instance(), 5, LONG)
        .await
        .unwrap();
    assert_eq!(
        rest.len(),
        1,
        "the rows node-a took are not given out again"
    );
    assert!(
        !a.store.queue_waiting(LONG).await.unwrap(),
        "every row is taken"
    );
    // A row given back goes to the next taker at once.
    a.store
        .give_back_queued(a.instance(), &took[..1])
        .await
        .unwrap();
    assert!(a.store.queue_waiting(LONG).await.unwrap());
    let given = b
        .store
        .take_queued_sessions(b.instance(), 5, LONG)
        .await
        .unwrap();
    assert_eq!(sorted(given), sorted(took[..1].to_vec()));
    // As if they had been taken two minutes ago.
    sqlx::query("UPDATE placement_queue SET taken_at = taken_at - 120000")
        .execute(a.store.pool())
        .await
        .unwrap();
    let retaken = b
        .store
        .take_queued_sessions(b.instance(), 5, LONG)
        .await
        .unwrap();
    assert_eq!(sorted(retaken), ids(&[0, 1, 2]));

    // Taking the lease takes the row off; releasing puts it back.
    let first = a.acquire_for(&session(0)).await.unwrap();
    assert_eq!(queued().await, ids(&[1, 2]));
    a.release(&first).await;
    assert_eq!(queued().await, ids(&[0, 1, 2]));

    // Logged out: released, not queued.
    let second = a.acquire_for(&session(1)).await.unwrap();
    sqlx::query("UPDATE session_status SET state = 'logged_out' WHERE tenant_id = $1")
        .bind(tenants[1].as_str())
        .execute(a.store.pool())
        .await
        .unwrap();
    a.release(&second).await;
    assert_eq!(queued().await, ids(&[0, 2]));

    // A node that lapses with sessions: they are queued when it is fenced.
    a.acquire_for(&session(0)).await.unwrap();
    a.acquire_for(&session(2)).await.unwrap();
    assert!(queued().await.is_empty());
    a.lapse().await;
    assert!(queued().await.is_empty(), "not before it is fenced");
    assert_eq!(b.store.fence_lapsed_nodes().await.unwrap(), 1);
    a.was_cut_off();
    assert_eq!(queued().await, ids(&[0, 2]));
    b.acquire_for(&session(0))
        .await
        .expect("a fenced node's session");
    assert_eq!(queued().await, ids(&[2]));
}

/// The counts by state (admin list, metrics) follow the same rule as a
/// session's own view: a row written by a node that has lapsed no longer
/// says `connected`.
async fn counts_by_state_show_what_every_node_reports(db: TestDb) {
    use wago::store::cluster::StatusFields;
    use wago::store::tenants::NewKey;
    use wago::tenants::{ApiKey, KeySource, TenantName};
    use wago::types::SessionState;
    let a = Node::new(&db, "node-a").await;
    let tenant = a
        .store
        .create_tenant(
            &TenantName::parse("counted").unwrap(),
            None,
            &NewKey::for_key(&ApiKey::generate(), KeySource::Admin),
        )
        .await
        .unwrap()
        .tenant_id();
    let lease = a.acquire_for(&SessionId::from(&tenant)).await.unwrap();
    a.store
        .write_session_status(
            &tenant,
            &lease,
            SessionState::Connected,
            &StatusFields::default(),
        )
        .await
        .unwrap();
    let counts = || async { a.store.session_state_counts().await.unwrap() };
    assert_eq!(counts().await, [(SessionState::Connected, 1)]);
    a.lapse().await;
    assert_eq!(counts().await, [(SessionState::Disconnected, 1)]);
}
