//! Webhook delivery: the outbox dispatcher.
//!
//! The [`Dispatcher`] claims due outbox rows under a lease, signs and POSTs
//! them, and records every attempt, retrying on the configured schedule
//! until a delivery succeeds or is `dead`. It owns no events: they are
//! written to the outbox with the facts they report (`store::webhooks`), so
//! a crash loses nothing; an expired lease hands the row to the next try.
//!
//! Concurrency is bounded overall (tenants served at once) and per tenant
//! (one delivery at a time, in event order), so a slow receiver delays only
//! its own tenant.

pub mod guard;
pub mod sign;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::WebhookSettings;
use crate::metrics::AttemptOutcome;
use crate::store::webhooks::{AttemptRecord, Claimed, Hold, NextStep, Settled, WebhookEndpoint};
use crate::store::{Store, now_ms};
use crate::tenants::TenantId;

/// How many tenants are delivered to at once.
const TENANTS_AT_ONCE: usize = 32;
/// How many of one tenant's deliveries one claim covers at most.
const PER_TENANT_BATCH: i64 = 100;
/// How long attempts wait in memory before they are written together.
/// A crash loses at most this much record; the events go out again.
const SETTLE_EVERY: Duration = Duration::from_millis(250);
/// How often the outbox is looked at when nothing wakes the dispatcher:
/// retries coming due, and events written by other nodes while this one's
/// own dispatcher is busy. Events this process commits wake it at once.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Lease slack beyond the attempt timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How much of a receiver's answer is kept with the attempt.
const RESPONSE_PREFIX_BYTES: usize = 256;

/// Wakes the dispatcher when an event was just committed.
#[derive(Clone, Debug, Default)]
pub struct WebhookWaker(Arc<Notify>);

impl WebhookWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

pub struct Dispatcher {
    store: Store,
    settings: WebhookSettings,
    /// For tenant-set URLs: refuses private addresses after DNS.
    guarded: reqwest::Client,
    /// For the operator's own URL (and all URLs with WEBHOOK_ALLOW_PRIVATE).
    trusted: reqwest::Client,
    waker: WebhookWaker,
}

impl Dispatcher {
    pub fn new(store: Store, settings: WebhookSettings) -> Result<Self, reqwest::Error> {
        let client = |guard: bool| {
            let builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(settings.timeout)
                .user_agent(concat!("wago-webhooks/", env!("CARGO_PKG_VERSION")));
            if guard {
                builder
                    .dns_resolver(Arc::new(guard::GuardedResolver))
                    .build()
            } else {
                builder.build()
            }
        };
        Ok(Dispatcher {
            guarded: client(!settings.allow_private)?,
            trusted: client(false)?,
            store,
            settings,
            waker: WebhookWaker::default(),
        })
    }

    pub fn waker(&self) -> WebhookWaker {
        self.waker.clone()
    }

    /// Delivers until `shutdown` fires, then gives attempts in flight one
    /// timeout to finish; unfinished rows are retried after their lease.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let written = this.store.outbox_written();
        let mut workers = JoinSet::new();
        tracing::info!("webhook dispatcher started");
        // Whether deliveries may be due that no claim has seen: at the
        // start, after an event was written, when a tenant was let go with
        // more due, after a full claim, and at each slow poll.
        let mut look = true;
        loop {
            while let Some(done) = workers.try_join_next() {
                look |= done.unwrap_or(true);
            }
            let free = TENANTS_AT_ONCE.saturating_sub(workers.len());
            let mut claimed_full = false;
            if look && free > 0 && !shutdown.is_cancelled() {
                look = false;
                match this.claim(free).await {
                    Ok((token, tenants)) => {
                        claimed_full = tenants.len() == free;
                        for tenant in tenants {
                            let span = tracing::info_span!("webhook", tenant_id = %tenant);
                            let work = this.clone().deliver_tenant(
                                token.clone(),
                                tenant,
                                shutdown.clone(),
                            );
                            workers.spawn(work.instrument(span));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot claim webhook deliveries"),
                }
            }
            if claimed_full {
                // More may be due than one claim took.
                look = true;
                if workers.len() < TENANTS_AT_ONCE {
                    continue;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = this.waker.0.notified() => look = true,
                _ = written.notified() => look = true,
                Some(done) = workers.join_next(), if !workers.is_empty() => {
                    look |= done.unwrap_or(true);
                }
                _ = tokio::time::sleep(POLL_INTERVAL) => look = true,
            }
        }
        let grace = this.settings.timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            workers.abort_all();
        }
        tracing::info!("webhook dispatcher stopped");
    }

    fn lease_len(&self) -> Duration {
        self.settings.timeout + LEASE_MARGIN
    }

    /// Claims up to `free` tenants with deliveries due, under one token.
    async fn claim(&self, free: usize) -> crate::store::Result<(String, Vec<TenantId>)> {
        let token = uuid::Uuid::new_v4().to_string();
        let lease_until = now_ms() + self.lease_len().as_millis() as i64;
        let tenants = self
            .store
            .claim_queues(&token, lease_until, free as i64)
            .await?;
        Ok((token, tenants))
    }

    /// Delivers a claimed tenant's first due rows in order, recording the
    /// attempts every [`SETTLE_EVERY`] and at the end, when the tenant is
    /// let go. Rows left untried (a shutdown) stay due. True when the
    /// tenant was let go with deliveries due already.
    async fn deliver_tenant(
        self: Arc<Self>,
        token: String,
        tenant: TenantId,
        stop: CancellationToken,
    ) -> bool {
        let rows = match self.store.due_deliveries(&tenant, PER_TENANT_BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read due webhook deliveries; retrying later");
                return false;
            }
        };
        let mut endpoint = if rows.is_empty() {
            None
        } else {
            match self.store.get_webhook(&tenant).await {
                Ok(e) => e.filter(|e| e.enabled),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the webhook endpoint; retrying later");
                    return false;
                }
            }
        };
        let mut done: Vec<(i64, AttemptRecord)> = Vec::with_capacity(rows.len());
        let mut lease_until = Instant::now() + self.lease_len();
        let mut settled_at = Instant::now();
        for row in &rows {
            if stop.is_cancelled() {
                break;
            }
            let lease_short =
                Instant::now() + self.settings.timeout + Duration::from_secs(1) > lease_until;
            if lease_short || (!done.is_empty() && settled_at.elapsed() >= SETTLE_EVERY) {
                let until = now_ms() + self.lease_len().as_millis() as i64;
                if self
                    .settle(&tenant, &token, &done, Hold::Until(until))
                    .await
                    .is_none()
                {
                    return false;
                }
                done.clear();
                lease_until = Instant::now() + self.lease_len();
                settled_at = Instant::now();
            }
            let record = match &endpoint {
                Some(ep) => self.attempt(row, ep).await,
                None => AttemptRecord {
                    attempted_at: now_ms(),
                    status_code: None,
                    error: Some("the tenant has no enabled webhook".into()),
                    latency_ms: 0,
                    response_prefix: None,
                    next: NextStep::Dead,
                },
            };
            if record.status_code == Some(410) {
                tracing::warn!(
                    "webhook answered 410 Gone: endpoint disabled until it is set again"
                );
                if let Err(e) = self
                    .store
                    .disable_webhook(&tenant, "the receiver answered 410 Gone")
                    .await
                {
                    tracing::warn!(error = %e, "cannot disable the webhook");
                }
                endpoint = None;
            }
            log_attempt(row, &record);
            done.push((row.id, record));
        }
        let settled = self.settle(&tenant, &token, &done, Hold::Release).await;
        matches!(settled, Some(Settled::Released { due_now: true }))
    }

    /// Writes attempts under the tenant's lease; `None` when they could
    /// not be (the lease was lost, or the database failed: the rows come
    /// due again once the lease runs out).
    async fn settle(
        &self,
        tenant: &TenantId,
        token: &str,
        done: &[(i64, AttemptRecord)],
        hold: Hold,
    ) -> Option<Settled> {
        match self
            .store
            .settle_deliveries(tenant, token, done, hold)
            .await
        {
            Ok(Settled::Lost) => {
                tracing::warn!(
                    attempts = done.len(),
                    "lease lost before the attempts were recorded"
                );
                None
            }
            Ok(settled) => Some(settled),
            Err(e) => {
                tracing::warn!(attempts = done.len(), error = %e, "cannot record webhook attempts");
                None
            }
        }
    }

    /// One signed POST, and what it means for the delivery.
    async fn attempt(&self, row: &Claimed, endpoint: &WebhookEndpoint) -> AttemptRecord {
        let attempted_at = now_ms();
        let started = Instant::now();
        let outcome = self.post(row, endpoint).await;
        let latency_ms = started.elapsed().as_millis() as i64;
        let (status_code, error, response_prefix, retry_after) = match outcome {
            Ok(answer) => {
                let error = (!answer.status.is_success())
                    .then(|| format!("HTTP {}", answer.status.as_u16()));
                (
                    Some(answer.status.as_u16()),
                    error,
                    Some(answer.prefix),
                    answer.retry_after,
                )
            }
            Err(error) => (None, Some(error), None, None),
        };
        let next = match status_code {
            Some(code) if (200..300).contains(&code) => NextStep::Delivered,
            Some(410) => NextStep::Dead,
            _ => self.retry_step(row.attempts, retry_after),
        };
        AttemptRecord {
            attempted_at,
            status_code,
            error,
            latency_ms,
            response_prefix,
            next,
        }
    }

    /// After `tries_so_far` failed tries (this one included in the count
    /// only afterwards), the next try time, or dead past the schedule.
    fn retry_step(&self, tries_so_far: i64, retry_after: Option<Duration>) -> NextStep {
        let Some(delay) = self
            .settings
            .retry_schedule
            .get(tries_so_far.max(0) as usize)
        else {
            return NextStep::Dead;
        };
        let jitter = rand::rng().random_range(0.9..1.1);
        let delay = delay.mul_f64(jitter).max(retry_after.unwrap_or_default());
        NextStep::RetryAt(now_ms() + delay.as_millis() as i64)
    }

    async fn post(&self, row: &Claimed, endpoint: &WebhookEndpoint) -> Result<Answer, String> {
        let url = url::Url::parse(&endpoint.url).map_err(|e| format!("bad URL: {e}"))?;
        let guarded = !endpoint.trusted && !self.settings.allow_private;
        if guarded {
            guard::check_literal(&url)?;
        }
        let client = if guarded {
            &self.guarded
        } else {
            &self.trusted
        };
        let timestamp = now_ms() / 1000;
        let body = row.payload.as_bytes();
        let mut request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &row.event_id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(secret) = endpoint.secret.as_deref().filter(|s| !s.is_empty()) {
            request = request
                .header("X-Wago-Signature", sign::legacy_signature(secret, body))
                .header(
                    "webhook-signature",
                    sign::standard_signature(secret, &row.event_id, timestamp, body),
                );
        }
        let mut response = request
            .body(row.payload.clone())
            .send()
            .await
            .map_err(describe_error)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut prefix = Vec::new();
        while prefix.len() < RESPONSE_PREFIX_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => prefix.extend_from_slice(&chunk),
                _ => break,
            }
        }
        prefix.truncate(RESPONSE_PREFIX_BYTES);
        Ok(Answer {
            status,
            prefix: String::from_utf8_lossy(&prefix).into_owned(),
            retry_after,
        })
    }
}

struct Answer {
    status: reqwest::StatusCode,
    prefix: String,
    retry_after: Option<Duration>,
}

fn describe_error(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The innermost cause says most (refused, private address, TLS...).
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{kind}: {cause}")
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    at.duration_since(std::time::SystemTime::now()).ok()
}

fn log_attempt(row: &Claimed, record: &AttemptRecord) {
    let (id, event, code, error) = (
        row.id,
        &row.event,
        record.status_code,
        record.error.as_deref(),
    );
    let outcome = match record.next {
        NextStep::Delivered => AttemptOutcome::Delivered,
        NextStep::RetryAt(_) => AttemptOutcome::Retry,
        NextStep::Dead => AttemptOutcome::Dead,
    };
    crate::metrics::webhook_attempt(outcome, record.latency_ms);
    match record.next {
        NextStep::Delivered => {
            tracing::debug!(delivery = id, %event, ?code, latency_ms = record.latency_ms, "webhook delivered")
        }
        NextStep::RetryAt(at) => {
            tracing::info!(delivery = id, %event, ?code, ?error, retry_in_ms = at - now_ms(), "webhook attempt failed; will retry")
        }
        NextStep::Dead => {
            tracing::warn!(delivery = id, %event, ?code, ?error, "webhook delivery is dead; replay it once the receiver is fixed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(parsed > Duration::from_secs(3500) && parsed <= Duration::from_secs(3600));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
