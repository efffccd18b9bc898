//! Token-bucket rate limits per key (device or IP address).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A sustained rate with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: f64,
}

impl RateLimit {
    /// `n` per second, with a burst of `2n`.
    pub fn per_second(n: u32) -> Self {
        Self {
            per_second: f64::from(n),
            burst: f64::from(n) * 2.0,
        }
    }
}

/// The longest wait a refusal advises (a zero rate never panics: it waits this long).
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(60);

/// Buckets by key.
pub(crate) struct Limiter<K> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Eq + Hash + Clone> Limiter<K> {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        self.charge(key, 1.0)
    }

    /// Takes `cost` tokens (at most a full bucket) for `key`, or says how long until they are
    /// available (at most [`MAX_RETRY`]).
    pub(crate) fn charge(&self, key: &K, cost: f64) -> Result<(), Duration> {
        let cost = cost.clamp(0.0, self.limit.burst.max(1.0));
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let (tokens, last) = buckets
            .entry(key.clone())
            .or_insert((self.limit.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.limit.per_second)
            .min(self.limit.burst);
        *last = now;
        if *tokens >= cost {
            *tokens -= cost;
            Ok(())
        } else {
            let wait = (cost - *tokens) / self.limit.per_second;
            Err(Duration::try_from_secs_f64(wait).map_or(MAX_RETRY, |d| d.min(MAX_RETRY)))
        }
    }

    /// Forgets buckets that have refilled (idle keys).
    pub(crate) fn prune(&self) {
        let now = Instant::now();
        if let Ok(mut b) = self.buckets.lock() {
            let limit = self.limit;
            b.retain(|_, (tokens, last)| {
                *tokens + now.duration_since(*last).as_secs_f64() * limit.per_second < limit.burst
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_rate_refuses_without_panicking() {
        let l = Limiter::new(RateLimit {
            per_second: 0.0,
            burst: 1.0,
        });
        assert_eq!(l.check(&1), Ok(()));
        assert_eq!(l.check(&1), Err(MAX_RETRY));
        let empty = Limiter::new(RateLimit {
            per_second: 0.0,
            burst: 0.0,
        });
        assert_eq!(empty.check(&1), Err(MAX_RETRY));
    }

    #[test]
    fn a_charge_takes_its_cost_at_most_a_bucket() {
        let l = Limiter::new(RateLimit::per_second(1));
        // The bucket holds 2: a cost of 1.5 fits once.
        assert_eq!(l.charge(&1, 1.5), Ok(()));
        assert!(l.charge(&1, 1.5).is_err());
        // A cost above the bucket is charged as a full bucket, so it can pass at all.
        let l = Limiter::new(RateLimit::per_second(1));
        assert_eq!(l.charge(&2, 100.0), Ok(()));
        assert!(l.check(&2).is_err());
    }
}
