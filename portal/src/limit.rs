//! Rate limiting: a token bucket per key, the SHA-256 of who is asking (a verified reader,
//! or a client address; see `rate_key` in lib.rs), so no token or address is kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// Buckets kept before idle ones (full again) are dropped.
const PRUNE_AT: usize = 10_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub(crate) struct Limiter {
    rate: RateLimit,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

impl Limiter {
    pub(crate) fn new(rate: RateLimit) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub(crate) fn take(&self, key: [u8; 32]) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = f64::from(self.rate.burst);
        let per_second = self.rate.per_second;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst
            });
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_second).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_refills_at_the_rate() {
        let l = Limiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let k = [7u8; 32];
        for _ in 0..3 {
            assert_eq!(l.take(k), Ok(()));
        }
        let wait = l.take(k).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another token has its own bucket.
        assert_eq!(l.take([8u8; 32]), Ok(()));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(l.take(k), Ok(()));
        assert!(l.take(k).is_err());
    }
}
