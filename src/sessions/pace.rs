//! The per-number send pace: a token bucket, so one tenant cannot burst its
//! number into WhatsApp's spam detection. Sends wait for a token; they are
//! never refused here (the API's own rate limit is per key, elsewhere).

use std::time::Duration;

use tokio::time::Instant;

use crate::types::SendPace;

pub(super) struct Bucket {
    pace: SendPace,
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    pub fn new(pace: SendPace, now: Instant) -> Self {
        Bucket {
            pace,
            tokens: f64::from(pace.burst.max(1)),
            refilled_at: now,
        }
    }

    /// How long after `now` the next send may go; takes its token when
    /// that is at once (zero).
    pub fn take(&mut self, now: Instant) -> Duration {
        if self.pace.per_minute == 0 {
            return Duration::ZERO;
        }
        let rate = f64::from(self.pace.per_minute) / 60.0;
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.pace.burst.max(1)));
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_and_the_rest_at_the_rate() {
        let start = Instant::now();
        let pace = SendPace {
            per_minute: 60,
            burst: 3,
        };
        let mut bucket = Bucket::new(pace, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Duration::ZERO);
        }
        let wait = bucket.take(start);
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(bucket.take(start + Duration::from_secs(1)), Duration::ZERO);
        // Idle time refills up to the burst, no further.
        let later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Duration::ZERO);
        }
        assert!(!bucket.take(later).is_zero());
    }

    #[test]
    fn zero_means_no_pace() {
        let now = Instant::now();
        let mut bucket = Bucket::new(
            SendPace {
                per_minute: 0,
                burst: 0,
            },
            now,
        );
        for _ in 0..1000 {
            assert_eq!(bucket.take(now), Duration::ZERO);
        }
    }
}
