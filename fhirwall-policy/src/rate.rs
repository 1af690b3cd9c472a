//! Per-integration token buckets. Kept out of `decide()`, which stays pure: the proxy asks the
//! limiter after an Allow, passing the time, and answers 429 when the bucket is empty.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::{Policy, integration::RateLimit};

/// What the limiter says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateOutcome {
    /// A token was taken (or the integration has no limit).
    Pass,
    /// The bucket is empty: retry after this long (for `Retry-After`).
    Limited { retry_after: Duration },
}

#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> RateOutcome {
        let rate = f64::from(self.limit.per_second);
        let burst = f64::from(self.limit.burst);
        // A `now` older than `last` (callers on several threads) refills nothing.
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            RateOutcome::Pass
        } else {
            let wait = (1.0 - self.tokens) / rate;
            RateOutcome::Limited {
                retry_after: Duration::from_secs_f64(wait),
            }
        }
    }
}

/// Token buckets for every integration with a `rate_limit`, keyed by name. Shared by the data
/// plane threads (`&self`); each bucket has its own lock, held for a few arithmetic steps.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, Mutex<Bucket>>,
}

impl RateLimiter {
    /// Full buckets for every limited integration of `policy`.
    #[must_use]
    pub fn new(policy: &Policy, now: Instant) -> RateLimiter {
        RateLimiter::default().updated(policy, now)
    }

    /// The limiter for a reloaded policy: buckets of integrations whose limit did not change
    /// keep their level (a reload must not hand out a fresh burst); others start full.
    #[must_use]
    pub fn updated(&self, policy: &Policy, now: Instant) -> RateLimiter {
        let buckets = policy
            .integrations
            .iter()
            .filter_map(|i| Some((i.name.clone(), i.rate_limit?)))
            .map(|(name, limit)| {
                let kept = self
                    .buckets
                    .get(&name)
                    .map(|b| b.lock().unwrap_or_else(PoisonError::into_inner))
                    .filter(|b| b.limit == limit)
                    .map(|b| (b.tokens, b.last));
                let (tokens, last) = kept.unwrap_or((f64::from(limit.burst), now));
                let bucket = Bucket {
                    limit,
                    tokens,
                    last,
                };
                (name, Mutex::new(bucket))
            })
            .collect();
        RateLimiter { buckets }
    }

    /// Takes a token for `integration` at `now`.
    pub fn check(&self, integration: &str, now: Instant) -> RateOutcome {
        match self.buckets.get(integration) {
            // A poisoned lock only means another thread panicked mid-update of two floats;
            // the values are still usable.
            Some(bucket) => bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(now),
            None => RateOutcome::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32, start: Instant) -> RateLimiter {
        let bucket = Bucket {
            limit: RateLimit { per_second, burst },
            tokens: f64::from(burst),
            last: start,
        };
        RateLimiter {
            buckets: HashMap::from([("lab".to_owned(), Mutex::new(bucket))]),
        }
    }

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let l = limiter(10, 3, t0);
        for _ in 0..3 {
            assert_eq!(l.check("lab", t0), RateOutcome::Pass);
        }
        let RateOutcome::Limited { retry_after } = l.check("lab", t0) else {
            panic!("the burst is spent");
        };
        let ms = retry_after.as_secs_f64() * 1000.0;
        assert!((99.9..=100.1).contains(&ms), "{retry_after:?}");
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            l.check("lab", later),
            RateOutcome::Pass,
            "one token refilled"
        );
        assert!(matches!(l.check("lab", later), RateOutcome::Limited { .. }));
        let much_later = t0 + Duration::from_mins(1);
        for _ in 0..3 {
            assert_eq!(l.check("lab", much_later), RateOutcome::Pass);
        }
        assert!(
            matches!(l.check("lab", much_later), RateOutcome::Limited { .. }),
            "capped at burst"
        );
        assert_eq!(l.check("unlimited", t0), RateOutcome::Pass);
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let l = limiter(1, 1, t0);
        assert_eq!(l.check("lab", t0), RateOutcome::Pass);
        let earlier = t0
            .checked_sub(Duration::from_secs(5))
            .expect("t0 is 10 s ahead");
        assert!(matches!(
            l.check("lab", earlier),
            RateOutcome::Limited { .. }
        ));
    }
}
