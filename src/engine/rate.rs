//! Token buckets for per-connection flood protection.
//!
//! Time comes in from the caller (the event loop's clock), so tests drive buckets directly.

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket. A rate of zero disables the limit.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            refilled_at: now,
        }
    }

    /// Takes `cost` tokens; false when the bucket cannot pay for them (the caller closes).
    pub fn take(&mut self, cost: f64, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.refilled_at);
        if elapsed > Duration::ZERO {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
            self.refilled_at = now;
        }
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_available_then_refills_at_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 20.0, start);
        for _ in 0..20 {
            assert!(bucket.take(1.0, start));
        }
        assert!(!bucket.take(1.0, start));
        let later = start + Duration::from_millis(500);
        for _ in 0..5 {
            assert!(bucket.take(1.0, later));
        }
        assert!(!bucket.take(1.0, later));
    }

    #[test]
    fn refill_never_exceeds_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000.0, 3.0, start);
        let later = start + Duration::from_secs(60);
        assert!(bucket.take(3.0, later));
        assert!(!bucket.take(1.0, later));
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0.0, 0.0, start);
        assert!(bucket.take(1e12, start));
    }
}
