//! Prometheus metrics (`GET /metrics`).
//!
//! Counters and histograms are recorded where things happen, through the
//! `metrics` facade: HTTP requests, messages stored and statuses reached,
//! sends answered, webhook attempts. Gauges that describe state (sessions
//! by state, the webhook backlog, the database pools, memory) are read when
//! the metrics are scraped, so they cost nothing between scrapes.
//!
//! The recorder is process-wide: a process that runs several servers (the
//! tests) shares one set of counters.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::sessions::{SessionState, Supervisor};
use crate::store::Store;
use crate::types::MessageStatus;

/// Seconds: from a millisecond to a minute, for requests, sends and
/// webhook attempts alike.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// Installs the recorder once per process; later calls get the same one.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is installed: then that one
        // gets the figures and this handle renders only the gauges.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows gauges only");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "wago_http_requests_total",
        "HTTP requests answered, by method, route and status."
    );
    describe_histogram!(
        "wago_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route."
    );
    describe_counter!(
        "wago_messages_received_total",
        "Inbound messages stored (each once, however often WhatsApp delivered it)."
    );
    describe_counter!(
        "wago_message_status_total",
        "Outbound messages reaching a status: sent, delivered, read or failed."
    );
    describe_histogram!(
        "wago_send_duration_seconds",
        Unit::Seconds,
        "From a send request's arrival to its answer, by the status answered."
    );
    describe_counter!(
        "wago_client_events_shed_total",
        "Client events shed because a session fell behind: acks and receipts \
         (recovered from rows), and QR codes a newer one replaced. State events are never shed."
    );
    describe_counter!(
        "wago_webhook_attempts_total",
        "Webhook delivery attempts, by outcome: delivered, retry or dead."
    );
    describe_histogram!(
        "wago_webhook_attempt_duration_seconds",
        Unit::Seconds,
        "Time a webhook receiver took to answer one attempt."
    );
}

/// Counts and times every request under its route's template, so that
/// ids in paths do not make a series each. Parameters are written `:id`
/// (`/admin/tenants/:id`): braces in label values trip some scrapers.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| route_label(p.as_str()));
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("wago_http_request_duration_seconds", "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("wago_http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

fn route_label(template: &str) -> String {
    template.replace('{', ":").replace('}', "")
}

/// This process's counts, for the admin dashboard: the same events as the
/// counters of the same names in `/metrics`.
pub mod totals {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub static RECEIVED: AtomicU64 = AtomicU64::new(0);
    pub static SENT: AtomicU64 = AtomicU64::new(0);
    pub static FAILED: AtomicU64 = AtomicU64::new(0);
    pub static DELIVERED: AtomicU64 = AtomicU64::new(0);
    pub static RETRIED: AtomicU64 = AtomicU64::new(0);
    pub static DEAD: AtomicU64 = AtomicU64::new(0);

    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A client event the session task could not take in time, by kind.
pub fn client_event_shed(kind: &'static str) {
    metrics::counter!("wago_client_events_shed_total", "kind" => kind).increment(1);
}

pub fn messages_received(new: usize) {
    totals::add(&totals::RECEIVED, new as u64);
    metrics::counter!("wago_messages_received_total").increment(new as u64);
}

pub fn message_status(status: MessageStatus) {
    match status {
        MessageStatus::Sent => totals::add(&totals::SENT, 1),
        MessageStatus::Failed => totals::add(&totals::FAILED, 1),
        _ => {}
    }
    metrics::counter!("wago_message_status_total", "status" => status.as_str()).increment(1);
}

pub fn send_answered(status: MessageStatus, took: Duration) {
    metrics::histogram!("wago_send_duration_seconds", "status" => status.as_str())
        .record(took.as_secs_f64());
}

crate::text_enum! {
    /// What became of one webhook attempt.
    pub enum AttemptOutcome {
        Delivered = "delivered",
        /// Failed; tried again later.
        Retry = "retry",
        /// Failed for the last time (or the endpoint is gone).
        Dead = "dead",
    }
}

pub fn webhook_attempt(outcome: AttemptOutcome, latency_ms: i64) {
    let total = match outcome {
        AttemptOutcome::Delivered => &totals::DELIVERED,
        AttemptOutcome::Retry => &totals::RETRIED,
        AttemptOutcome::Dead => &totals::DEAD,
    };
    totals::add(total, 1);
    metrics::counter!("wago_webhook_attempts_total", "outcome" => outcome.as_str()).increment(1);
    metrics::histogram!("wago_webhook_attempt_duration_seconds")
        .record(latency_ms.max(0) as f64 / 1000.0);
}

/// The router of `METRICS_LISTEN`: `/metrics` alone, without a token
/// (keep that address private). The API's own `/metrics` takes the admin
/// token.
pub fn listener_router(state: crate::http::AppState) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(state): axum::extract::State<crate::http::AppState>| async move {
                    crate::http::metrics_answer(&state).await
                },
            ),
        )
        .with_state(state)
}

/// The text a scrape gets: the recorded figures, then the gauges read now.
pub async fn render(store: &Store, sessions: &Supervisor) -> String {
    let handle = install();
    handle.run_upkeep();
    let mut out = handle.render();
    let gauge = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    };

    gauge(
        &mut out,
        "wago_build_info",
        "The running version and database kind (always 1).",
    );
    let _ = writeln!(
        out,
        "wago_build_info{{version=\"{}\",database=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        match store.kind() {
            crate::store::DbKind::Postgres => "postgres",
            crate::store::DbKind::Sqlite => "sqlite",
        }
    );

    gauge(
        &mut out,
        "wago_node_sessions",
        "Sessions this node runs, by state.",
    );
    let local = sessions.local_states();
    for state in SessionState::ALL {
        let n = local.iter().filter(|s| *s == state).count();
        let _ = writeln!(out, "wago_node_sessions{{state=\"{state}\"}} {n}");
    }

    match store.session_state_counts().await {
        Ok(counts) => {
            gauge(
                &mut out,
                "wago_sessions",
                "Sessions of every node, by state as every node reports them (one whose node is gone is disconnected).",
            );
            for state in SessionState::ALL {
                let n = counts.iter().find(|(s, _)| s == state).map_or(0, |c| c.1);
                let _ = writeln!(out, "wago_sessions{{state=\"{state}\"}} {n}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count sessions"),
    }

    match store.webhook_backlog().await {
        Ok(backlog) => {
            gauge(
                &mut out,
                "wago_webhook_outbox_waiting",
                "Webhook deliveries waiting: never tried, or failed and due for a retry.",
            );
            let _ = writeln!(out, "wago_webhook_outbox_waiting {}", backlog.waiting);
            gauge(
                &mut out,
                "wago_webhook_outbox_oldest_due_age_seconds",
                "How long the earliest due delivery has been due (0 when none is).",
            );
            let age = backlog.earliest_due_ms.map_or(0.0, |due| {
                (crate::store::now_ms() - due).max(0) as f64 / 1000.0
            });
            let _ = writeln!(out, "wago_webhook_outbox_oldest_due_age_seconds {age}");
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot measure the webhook backlog"),
    }

    gauge(
        &mut out,
        "wago_db_pool_connections",
        "Database connections, by pool (`main`; on SQLite also `writer`, its one writer connection) and state (idle, busy).",
    );
    for (name, pool) in store.pools() {
        let (size, idle) = (pool.size() as usize, pool.num_idle());
        let busy = size.saturating_sub(idle);
        let _ = writeln!(
            out,
            "wago_db_pool_connections{{pool=\"{name}\",state=\"idle\"}} {idle}\n\
             wago_db_pool_connections{{pool=\"{name}\",state=\"busy\"}} {busy}"
        );
    }

    if let Some(rss) = resident_bytes() {
        gauge(
            &mut out,
            "process_resident_memory_bytes",
            "Resident memory of this process.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
    out
}

/// `VmRSS` from `/proc/self/status` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
