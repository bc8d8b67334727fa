//! The node's own loop: membership, leases, fencing, placement, commands.
//!
//! - **Membership and leases.** The node's row in `nodes`, claimed at start
//!   (`app.rs`), is renewed every third of the lease time in one statement
//!   on a pool of its own; that renews every session lease the node holds,
//!   however many. If renewals fail (the database is unreachable, slow, or
//!   this process was paused), every session is stopped and the
//!   [`WriteFence`](crate::store::WriteFence) closed a quarter of the lease
//!   time before the claim can lapse, so nothing of this node runs or
//!   writes when another node may take its sessions. The node then claims
//!   its row again (cutting its own old connections first) and starts
//!   over. On SQLite only this process can use the database (the flock),
//!   so nothing is fenced there.
//! - **Placement.** Sessions with a linked device are spread evenly over
//!   the live nodes, ordered by id: with `total` sessions and `n` nodes,
//!   the node at position `i` runs `total / n`, plus one if `i < total % n`.
//!   A node below its share takes sessions that nobody holds (released
//!   cleanly, or whose node lapsed and was fenced), a bounded number at a
//!   time; a node above it hands sessions over once another node has room.
//! - **Commands.** Other nodes' commands for sessions that run here are
//!   taken from their rows and carried out by the session's task.
//! - **Send queues.** A session's queue sleeps until a send wakes it (in
//!   process, or by `NOTIFY`); every `SEND_QUEUE_SWEEP` one query finds
//!   the tenants with sends still queued and wakes those running here, in
//!   case a wake-up was lost. An idle session costs no query and no timer.
//! - **Shutdown.** The node says it is leaving (placement stops counting
//!   it), stops its sessions while it keeps renewing their leases, and
//!   leaves once they have released them.

use std::collections::HashSet;
use std::time::Duration;

use rand::RngExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use super::bus::Signal;
use super::{Command, Mode, SessionError, Supervisor};
use crate::store::cluster::{Claim, CommandKind, CommandRow, CommandStatus, NodeInfo};
use crate::store::{DbKind, now_ms};
use crate::tenants::TenantId;

/// Sessions this node starts at once before any of them has connected.
const STARTING_AT_ONCE: usize = 64;
/// How long a session counts as starting (against `STARTING_AT_ONCE`)
/// while it has not connected.
const START_WINDOW: Duration = Duration::from_secs(30);
/// The longest placement goes without walking every session, in case a
/// freed one never reached the placement queue (a crash between two
/// statements). Each walk reads every session row, so it is rare.
const FULL_ROUND: Duration = Duration::from_secs(3600);
/// Sessions handed over in one round.
const HANDOVER_AT_ONCE: usize = 16;
/// After a failed renewal, the next try comes this soon.
const RETRY: Duration = Duration::from_secs(1);
/// How long stopped sessions get to close (and release their leases)
/// before the node claims again or leaves; their tasks are ended then.
const CLOSE_WAIT: Duration = Duration::from_secs(20);

pub(super) async fn run(
    sup: Supervisor,
    address: String,
    url: Option<String>,
    stop: CancellationToken,
) {
    let mut signals = sup.bus().subscribe();
    let mut tasks = JoinSet::new();
    if let Some(url) = url {
        tasks.spawn(sup.bus().clone().listen(url, stop.child_token()));
    }
    let store = sup.inner.store.clone();
    let ttl = sup.inner.settings.lease_ttl;
    let every = ttl / 3;
    let margin = ttl / 4;
    // SQLite: this process is the only one (the flock); timing cannot let
    // another take its sessions, so nothing is fenced.
    let fencing = store.kind() == DbKind::Postgres;
    let started_at = now_ms();
    // When this node's claim ends by its own clock, as of the last renewal.
    let mut deadline: Option<Instant> = None;
    // False once the claim may have lapsed: claim again before running.
    let mut claimed = true;
    let mut next_keep = Instant::now();
    let mut next_place = Instant::now() + every;
    let mut round = Placement::new();
    let sweep = sup.inner.settings.queue_sweep;
    let mut next_sweep = Instant::now() + sweep;
    let mut registered = false;
    tracing::info!(node = %sup.node(), %address, "node started");
    loop {
        let fence_at = deadline.filter(|_| fencing).map(|d| d - margin);
        // No step of the loop may run past the moment to fence.
        let bound =
            |d: Duration| fence_at.map_or(Instant::now() + d, |f| f.min(Instant::now() + d));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until(fence_at.unwrap_or(next_keep)), if fence_at.is_some() => {
                sup.fence_all("the database did not answer in time to renew this node's claim", &mut tasks);
                deadline = None;
                claimed = false;
                registered = false;
            }
            _ = sleep_until(next_keep) => {
                if !claimed {
                    claimed = sup.claim_again(&address, started_at).await;
                    next_keep = if claimed { Instant::now() } else { Instant::now() + RETRY };
                    continue;
                }
                let sent_at = Instant::now();
                match timeout_at(bound(every), sup.renew()).await {
                    Ok(Ok(true)) => {
                        deadline = Some(sent_at + ttl);
                        if fencing {
                            store.write_fence().open_until((sent_at + ttl - margin).into_std());
                        } else {
                            store.write_fence().disarm();
                        }
                        next_keep = Instant::now() + every;
                        // Commands whose signal was lost.
                        match timeout_at(bound(every), sup.pending_commands(&mut tasks)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::warn!(error = %e, "cannot look for commands"),
                            Err(_) => tracing::warn!("looking for commands timed out"),
                        }
                        // Joined, or back after losing the database: the
                        // others make room.
                        if !registered {
                            registered = true;
                            round.touch();
                            next_place = Instant::now();
                            let joined = sup.bus().publish(Signal::Placement);
                            let _ = timeout_at(bound(every), joined).await;
                        }
                    }
                    Ok(Ok(false)) => {
                        sup.fence_all("this node's claim lapsed before it was renewed", &mut tasks);
                        deadline = None;
                        claimed = false;
                        registered = false;
                        next_keep = Instant::now();
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot renew this node's claim");
                        next_keep = Instant::now() + RETRY;
                    }
                    Err(_) => {
                        tracing::warn!("renewing this node's claim timed out");
                        next_keep = Instant::now() + RETRY;
                    }
                }
            }
            _ = sleep_until(next_place), if claimed => {
                next_place = match timeout_at(bound(every), sup.place(&mut tasks, &mut round)).await {
                    Ok(Ok(next)) => next,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "placement failed");
                        Instant::now() + every
                    }
                    Err(_) => Instant::now() + every,
                };
            }
            _ = sleep_until(next_sweep) => {
                next_sweep = Instant::now() + sweep;
                match timeout_at(bound(every), store.tenants_with_queued_sends()).await {
                    Ok(Ok(tenants)) => {
                        for tenant in tenants {
                            sup.wake_queue(&tenant);
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot look for queued sends"),
                    Err(_) => tracing::warn!("looking for queued sends timed out"),
                }
            }
            _ = sup.inner.placement.notified() => {
                round.touch();
                next_place = next_place.min(soon());
            }
            signal = signals.recv() => match signal {
                Ok(Signal::Send { tenant, awaited }) => {
                    let tenant = TenantId::from_raw(tenant);
                    match awaited {
                        Some(id) => sup.watch_send(&tenant, id),
                        None => sup.wake_queue(&tenant),
                    }
                }
                Ok(Signal::Command { tenant }) => {
                    let tenant = TenantId::from_raw(tenant);
                    if sup.local_commands(&tenant).is_some() {
                        tasks.spawn(sup.clone().run_commands(tenant));
                    }
                }
                Ok(Signal::Placement) => {
                    round.touch();
                    next_place = next_place.min(soon());
                }
                Ok(Signal::Resync) | Err(RecvError::Lagged(_)) => {
                    sup.wake_all_queues();
                    next_keep = next_keep.min(Instant::now());
                    round.touch();
                    next_place = soon();
                }
                Ok(_) => {}
                Err(RecvError::Closed) => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    if claimed {
        sup.leave(deadline, fencing.then_some(margin), &mut tasks)
            .await;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// What placement remembers between rounds.
struct Placement {
    /// Something may have changed since the last round that settled.
    dirty: bool,
    /// The live nodes, by id, as of the last round.
    members: Vec<String>,
    /// Sessions with a linked device, counted once per round until it
    /// settles.
    total: Option<i64>,
    /// Where the last look of a walk stopped.
    cursor: Option<String>,
    /// When the last walk of every session settled; `None` before the
    /// first.
    walked_at: Option<Instant>,
}

impl Placement {
    fn new() -> Self {
        Placement {
            dirty: true,
            members: Vec::new(),
            total: None,
            cursor: None,
            walked_at: None,
        }
    }

    /// Something may have changed: the next round takes from the queue.
    fn touch(&mut self) {
        self.dirty = true;
        self.total = None;
    }

    /// Whether this round walks every session instead of the queue.
    fn walk_due(&self) -> bool {
        self.cursor.is_some() || self.walked_at.is_none_or(|at| at.elapsed() >= FULL_ROUND)
    }

    /// A round found nothing more to do.
    fn settled(&mut self, walked: bool) {
        self.dirty = false;
        self.total = None;
        self.cursor = None;
        if walked {
            self.walked_at = Some(Instant::now());
        }
    }
}

/// Node `i`'s share of `total` sessions spread over `nodes` nodes.
fn share_of(total: i64, nodes: usize, i: usize) -> i64 {
    let n = nodes as i64;
    total / n + i64::from((i as i64) < total % n)
}

/// Whether node `me`, holding `mine`, holds more than its share of `total`
/// while another of `nodes` holds less than its own.
fn over_share(nodes: &[NodeInfo], me: usize, mine: i64, total: i64) -> bool {
    let share = |i: usize| share_of(total, nodes.len(), i);
    mine > share(me)
        && nodes
            .iter()
            .enumerate()
            .any(|(i, n)| i != me && n.sessions < share(i))
}

/// A moment soon, with jitter, so that nodes woken together do not race
/// for the same sessions.
fn soon() -> Instant {
    Instant::now() + Duration::from_millis(rand::rng().random_range(20..250))
}

impl Supervisor {
    /// One renewal of the node's claim, which renews every lease it holds;
    /// false if the claim had lapsed.
    async fn renew(&self) -> Result<bool, SessionError> {
        let ttl = self.inner.settings.lease_ttl;
        let (placed, _) = self.placed();
        let renewed = self
            .inner
            .store
            .renew_node(self.node(), self.instance(), ttl, placed)
            .await?;
        Ok(renewed.is_some())
    }

    /// Carries out the commands left for sessions here whose signal was
    /// lost.
    async fn pending_commands(&self, tasks: &mut JoinSet<()>) -> Result<(), SessionError> {
        for tenant in self.inner.store.tenants_with_pending_commands().await? {
            if self.local_commands(&tenant).is_some() {
                tasks.spawn(self.clone().run_commands(tenant));
            }
        }
        Ok(())
    }

    /// After a lapse: once every session here has ended, cuts this
    /// process's own old connections (a write sent before the lapse must not
    /// land after another node took the session) and claims the node
    /// again, releasing its old leases. False to try again later.
    async fn claim_again(&self, address: &str, started_at: i64) -> bool {
        let store = &self.inner.store;
        store.close_writes();
        if !self.wait_sessions_ended(RETRY).await {
            return false;
        }
        let ttl = self.inner.settings.lease_ttl;
        let instance = self.instance();
        match store.cut_connections(instance).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot cut this node's old connections");
                return false;
            }
        }
        match store
            .claim_node(self.node(), instance, address, started_at, ttl)
            .await
        {
            Ok(Claim::Claimed { .. }) => {
                tracing::info!(node = %self.node(), "claimed the node again");
                true
            }
            Ok(Claim::Held(other)) => {
                tracing::error!(
                    node = %self.node(), other = %other.address,
                    "another process took this node id while this one was cut off; \
                     this one runs no session until it lapses"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the node again");
                false
            }
        }
    }

    /// A clean shutdown: says the node is leaving, stops its sessions while
    /// it keeps renewing their leases, and leaves once they have ended.
    async fn leave(
        &self,
        mut deadline: Option<Instant>,
        margin: Option<Duration>,
        tasks: &mut JoinSet<()>,
    ) {
        let store = &self.inner.store;
        let (node, instance) = (self.node(), self.instance());
        let ttl = self.inner.settings.lease_ttl;
        let every = ttl / 3;
        match timeout(every, store.mark_node_leaving(node, instance)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot mark this node as leaving"),
            Err(_) => tracing::warn!("marking this node as leaving timed out"),
        }
        self.inner.shutdown.cancel();
        let give_up = Instant::now() + CLOSE_WAIT;
        loop {
            let fence_at = match (deadline, margin) {
                (Some(d), Some(m)) => d - m,
                _ => give_up,
            };
            let next = (Instant::now() + every).min(fence_at).min(give_up);
            tokio::select! {
                _ = self.all_sessions_ended() => break,
                _ = sleep_until(next) => {}
            }
            if Instant::now() >= fence_at.min(give_up) {
                self.fence_all(
                    "shutting down, and the sessions did not close in time",
                    tasks,
                );
                break;
            }
            let sent_at = Instant::now();
            match timeout(every, store.renew_node(node, instance, ttl, 0)).await {
                Ok(Ok(Some(_))) => {
                    deadline = Some(sent_at + ttl);
                    if let Some(m) = margin {
                        store
                            .write_fence()
                            .open_until((sent_at + ttl - m).into_std());
                    }
                }
                Ok(Ok(None)) => {
                    self.fence_all("this node's claim lapsed while it shut down", tasks);
                    return;
                }
                _ => tracing::warn!("cannot renew this node's claim while shutting down"),
            }
        }
        match timeout(every, store.leave_node(node, instance)).await {
            Ok(Ok(())) => tracing::info!(%node, "node left"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot mark this node gone"),
            Err(_) => tracing::warn!("marking this node gone timed out"),
        }
    }

    /// Stops every session here, closing their connections at once and
    /// refusing every write of this process: its claim may lapse before it
    /// can renew it.
    fn fence_all(&self, why: &str, tasks: &mut JoinSet<()>) {
        self.inner.store.close_writes();
        let sessions = self.sessions();
        let running = sessions.values().filter(|h| h.running()).count();
        if running > 0 {
            tracing::error!(
                sessions = running,
                "{why}; stopping every session of this node"
            );
        }
        for handle in sessions.values() {
            handle.stop.cancel();
        }
        drop(sessions);
        // Every task still running, those handing over included.
        for fence in self.live_fences() {
            tasks.spawn(async move { fence.close().await });
        }
    }

    fn wake_queue(&self, tenant: &TenantId) {
        if let Some(commands) = self.local_commands(tenant) {
            let _ = commands.try_send(Command::Wake);
        }
    }

    /// Wakes the session's queue and has it announce when `message_id`
    /// settles (a request on another node waits for it).
    fn watch_send(&self, tenant: &TenantId, message_id: String) {
        if let Some(commands) = self.local_commands(tenant) {
            // A full channel: the waiter reads the row within a second.
            let _ = commands.try_send(Command::Watch(message_id));
        }
    }

    fn wake_all_queues(&self) {
        let all: Vec<TenantId> = self.sessions().keys().cloned().collect();
        for tenant in all {
            self.wake_queue(&tenant);
        }
    }

    /// One round of placement; returns when to look again. A round reads
    /// the few node rows; only when something may have changed (a signal,
    /// a node joined, left or lapsed, work left from the last round, a
    /// node over its share by the counts the nodes report) does it take
    /// sessions, and then from the placement queue, where freed sessions
    /// wait: its cost follows the sessions that move. The sessions to
    /// spread are those the live nodes report plus those queued. Once at
    /// start and then every `FULL_ROUND` it walks every session instead,
    /// from where the last look stopped, so taking N sessions in rounds of
    /// 64 reads each row about once.
    async fn place(
        &self,
        tasks: &mut JoinSet<()>,
        round: &mut Placement,
    ) -> Result<Instant, SessionError> {
        let store = &self.inner.store;
        let slow = Instant::now() + self.inner.settings.lease_ttl;
        // A lapsed node's sessions are free once its connections are cut.
        if store.fence_lapsed_nodes().await? > 0 {
            round.dirty = true;
            self.bus().publish(Signal::Placement).await;
        }
        let live = store.live_nodes().await?;
        let me_id = self.node().as_str();
        // Leaving nodes' sessions too: they are about to be queued.
        let elsewhere: i64 = live
            .iter()
            .filter(|n| n.id != me_id)
            .map(|n| n.sessions)
            .sum();
        let nodes: Vec<NodeInfo> = live.into_iter().filter(|n| !n.leaving).collect();
        let Some(me) = nodes.iter().position(|n| n.id == me_id) else {
            return Ok(slow); // not registered yet
        };
        // A node that stops renewing is taken over the moment it lapses.
        let lapse = store.next_lapse(self.node()).await?;
        let slow = match lapse {
            Some(ms) => slow.min(Instant::now() + Duration::from_millis(ms.max(0) as u64 + 100)),
            None => slow,
        };
        let members: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        if members != round.members {
            round.members = members;
            round.dirty = true;
        }
        let (mine, starting) = self.placed();
        let walk = round.walk_due();
        if !round.dirty && !walk {
            // Pairings here may have put this node over its share; or a
            // session waits that the last rounds left (their counts were
            // stale, or a signal was lost): look again, once a lease TTL.
            if !over_share(&nodes, me, mine, mine + elsewhere)
                && !store.queue_waiting(START_WINDOW).await?
            {
                return Ok(slow);
            }
            round.dirty = true;
        }
        if round.total.is_none() && walk {
            self.seed_statuses().await?;
        }
        let total = match round.total {
            Some(total) => total,
            None if walk => *round.total.insert(store.count_wanted_sessions().await?),
            None => *round
                .total
                .insert(mine + elsewhere + store.count_queued_sessions().await?),
        };
        let share = |i: usize| share_of(total, nodes.len(), i);
        let target = share(me);
        if mine < target {
            let room = (target - mine).min(STARTING_AT_ONCE.saturating_sub(starting) as i64);
            if room <= 0 {
                return Ok(soon());
            }
            let from = round.cursor.take();
            let free = if walk {
                let free = store.unplaced_sessions(room, from.as_deref()).await?;
                round.cursor = free.last().map(|t| t.as_str().to_owned());
                free
            } else {
                store
                    .take_queued_sessions(self.instance(), room, START_WINDOW)
                    .await?
            };
            let took = free.len() as i64;
            let mut busy = Vec::new();
            for tenant in free {
                if self.local_commands(&tenant).is_none() {
                    self.ensure_running(&tenant, Mode::Resume);
                } else {
                    busy.push(tenant);
                }
            }
            // Released here a moment ago, its task not yet gone: left for
            // whoever takes it next, not held for `START_WINDOW`.
            if !walk && !busy.is_empty() {
                store.give_back_queued(self.instance(), &busy).await?;
            }
            if took > 0 {
                tracing::info!(took, target, "took sessions");
                // Others balance by this count: tell them now, not at the
                // next renewal.
                self.renew().await?;
            }
            if took == room {
                return Ok(soon());
            }
            if walk && from.is_some() {
                // The end of the list: look again from its start.
                round.cursor = None;
                return Ok(soon());
            }
            round.settled(walk);
            return Ok(slow);
        }
        if over_share(&nodes, me, mine, total) {
            let give = ((mine - target) as usize).min(HANDOVER_AT_ONCE);
            let handles = self.hand_over(give);
            tracing::info!(sessions = handles.len(), target, "handing sessions over");
            let this = self.clone();
            tasks.spawn(async move {
                for handle in handles {
                    let _ = handle.await;
                }
                if let Err(e) = this.renew().await {
                    tracing::warn!(error = %e, "cannot report this node's sessions");
                }
                this.bus().publish(Signal::Placement).await;
            });
            return Ok(slow);
        }
        round.settled(walk);
        Ok(slow)
    }

    /// Gives every tenant without a status row one, once: a tenant made
    /// since the last round, or sessions linked before status rows
    /// existed (in the main database or a tenant's own store).
    async fn seed_statuses(&self) -> Result<(), SessionError> {
        let store = &self.inner.store;
        let missing = store.tenants_without_status().await?;
        if missing.is_empty() {
            return Ok(());
        }
        let paired: HashSet<String> = store
            .paired_sessions()
            .await?
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        for tenant in missing {
            let own_store = store
                .get_tenant(&tenant)
                .await?
                .is_some_and(|t| t.store_dsn.is_some());
            let linked = paired.contains(tenant.as_str())
                || (own_store
                    && self
                        .inner
                        .protocol
                        .is_paired(&tenant)
                        .await
                        .unwrap_or(false));
            store.seed_session_status(&tenant, linked).await?;
        }
        Ok(())
    }

    /// (sessions placed here, of which still starting): running tasks
    /// with a linked device, or started by placement and not yet loaded;
    /// starting are those not yet connected within `START_WINDOW` of their
    /// start.
    fn placed(&self) -> (i64, usize) {
        let sessions = self.sessions();
        let mut placed = 0;
        let mut starting = 0;
        for handle in sessions.values().filter(|h| h.running()) {
            let status = handle.status.borrow();
            // Placement started it (its device is being read), or it runs
            // a linked device; a task started to pair is not placed.
            if (!status.loaded && handle.mode == Mode::Resume)
                || (status.loaded && status.state.is_paired())
            {
                placed += 1;
            }
            // One still connecting long after its start (WhatsApp is
            // unreachable, say) retries on its own; it must not hold up the
            // placement of others.
            let connecting = !status.loaded || status.state == super::SessionState::Connecting;
            if connecting && handle.started.elapsed() < START_WINDOW {
                starting += 1;
            }
        }
        (placed, starting)
    }

    /// Stops `n` linked sessions here so that another node takes them;
    /// returns their tasks. Their leases are released as they end.
    fn hand_over(&self, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
        let mut sessions = self.sessions();
        let mut linked: Vec<TenantId> = sessions
            .iter()
            .filter(|(_, h)| {
                let status = h.status.borrow();
                // Not one still reading its device: it may be pairing.
                h.running() && status.loaded && status.state.is_paired()
            })
            .map(|(t, _)| t.clone())
            .collect();
        linked.sort_by(|a, b| b.as_str().cmp(a.as_str()));
        linked
            .into_iter()
            .take(n)
            .filter_map(|t| sessions.remove(&t))
            .map(|handle| {
                handle.stop.cancel();
                handle.task
            })
            .collect()
    }

    /// Carries out the commands other nodes left for a session here.
    async fn run_commands(self, tenant: TenantId) {
        let store = self.inner.store.clone();
        // Only what a requester may still wait for (`remote_command`).
        let max_age = self.inner.settings.remote_wait;
        let commands = match store.claim_commands(&tenant, max_age).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "cannot read the session's commands");
                return;
            }
        };
        for command in commands {
            let id = command.id;
            let (status, result) = match self.carry_out(&command).await {
                Ok(result) => (CommandStatus::Done, result),
                Err(e) => (CommandStatus::Failed, Some(e.to_string())),
            };
            if let Err(e) = store.finish_command(id, status, result.as_deref()).await {
                tracing::warn!(command = id, error = %e, "cannot record a command's outcome");
            }
            self.bus().publish(Signal::CommandDone { id }).await;
        }
    }

    async fn carry_out(&self, command: &CommandRow) -> Result<Option<String>, SessionError> {
        let tenant = &command.tenant;
        tracing::info!(tenant_id = %tenant, kind = %command.kind, "command from another node");
        match command.kind {
            CommandKind::Logout => {
                if self.logout_here(tenant).await? {
                    Ok(None)
                } else {
                    Err(moved())
                }
            }
            CommandKind::Stop => {
                self.stop_here(tenant).await;
                Ok(None)
            }
            CommandKind::PairCode => {
                let commands = self.local_commands(tenant).ok_or_else(moved)?;
                let phone = command.argument.clone().unwrap_or_default();
                let (reply, answer) = tokio::sync::oneshot::channel();
                commands
                    .send(Command::PairCode { phone, reply })
                    .await
                    .map_err(|_| moved())?;
                let code = answer.await.map_err(|_| moved())??;
                Ok(Some(code))
            }
        }
    }
}

fn moved() -> SessionError {
    SessionError::Client("the session stopped on its node; try again".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, sessions: i64) -> NodeInfo {
        NodeInfo {
            id: id.to_owned(),
            address: String::new(),
            started_at: 0,
            heartbeat_at: 0,
            sessions,
            leaving: false,
        }
    }

    #[test]
    fn shares_add_up_and_differ_by_one_at_most() {
        for total in [0, 1, 2, 7, 10_000] {
            for nodes in 1..5 {
                let shares: Vec<i64> = (0..nodes).map(|i| share_of(total, nodes, i)).collect();
                assert_eq!(shares.iter().sum::<i64>(), total, "{shares:?}");
                let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(hi - lo <= 1, "{shares:?}");
            }
        }
    }

    #[test]
    fn a_node_is_over_its_share_only_while_another_is_under_its_own() {
        // 3 sessions on 2 nodes: node 0's share is 2, node 1's is 1.
        let even = [node("a", 2), node("b", 1)];
        assert!(!over_share(&even, 0, 2, 3));
        assert!(!over_share(&even, 1, 1, 3));
        // Pairings on b put it over: b hands over, a does not.
        let skewed = [node("a", 1), node("b", 2)];
        assert!(over_share(&skewed, 1, 2, 3));
        assert!(!over_share(&skewed, 0, 1, 3));
        // Over its share, but nobody else has room (counts not yet
        // reported): nothing to hand over to.
        let stale = [node("a", 5), node("b", 5)];
        assert!(!over_share(&stale, 1, 5, 6));
    }
}
