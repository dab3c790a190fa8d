//! The API's per-address rate limit (`--api-rate`, `--api-burst`): a token bucket per client
//! address (behind a trusted proxy, the forwarded one), IPv6 addresses by their /64, since one
//! host usually holds a whole /64.
//!
//! Memory is bounded: at most `MAX_ADDRESSES` buckets, and a bucket that has refilled (its
//! address idle long enough) is dropped by the once-a-second housekeeping, as a new full one
//! is the same. While the table is full, new addresses are refused until buckets are dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::engine::rate::TokenBucket;

/// Most addresses tracked at once (a few MiB at most).
pub const MAX_ADDRESSES: usize = 65_536;

#[derive(Debug)]
pub struct ApiRate {
    /// Requests per second per address; 0 = unlimited.
    rate: f64,
    burst: f64,
    /// Each address's bucket and when it last asked.
    buckets: HashMap<IpAddr, (TokenBucket, Instant)>,
}

impl Default for ApiRate {
    fn default() -> Self {
        ApiRate::new(0.0, 0.0)
    }
}

impl ApiRate {
    pub fn new(rate: f64, burst: f64) -> Self {
        ApiRate {
            rate,
            burst: burst.max(1.0),
            buckets: HashMap::new(),
        }
    }

    /// Takes one request for `ip`; `Err(seconds)` to wait when it is over its rate (or, with
    /// the table full, when it is a new address).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let retry_after = (1.0 / self.rate).ceil().max(1.0) as u64;
        let key = bucket_key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_ADDRESSES {
            return Err(retry_after);
        }
        let (bucket, last) = self
            .buckets
            .entry(key)
            .or_insert_with(|| (TokenBucket::new(self.rate, self.burst, now), now));
        *last = now;
        if bucket.take(1.0, now) {
            Ok(())
        } else {
            Err(retry_after)
        }
    }

    /// Drops the buckets of addresses idle long enough for them to be full again.
    pub fn forget_idle(&mut self, now: Instant) {
        if self.rate <= 0.0 {
            return;
        }
        let refill = Duration::from_secs_f64(self.burst / self.rate);
        self.buckets
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < refill);
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// IPv4 addresses as they are, IPv6 by their /64.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut rate = ApiRate::new(10.0, 20.0);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!((0..20).all(|_| rate.admit(a, start).is_ok()));
        assert_eq!(rate.admit(a, start), Err(1));
        assert!(
            rate.admit(b, start).is_ok(),
            "another address is not affected"
        );
        assert!(rate.admit(a, start + Duration::from_millis(100)).is_ok());
        // Idle buckets are forgotten once full again; busy ones are kept.
        rate.forget_idle(start + Duration::from_secs(1));
        assert_eq!(rate.tracked(), 2);
        rate.forget_idle(start + Duration::from_secs(3));
        assert_eq!(rate.tracked(), 0);
        let mut unlimited = ApiRate::new(0.0, 0.0);
        assert!((0..10_000).all(|_| unlimited.admit(a, start).is_ok()));
        assert_eq!(unlimited.tracked(), 0);
    }

    #[test]
    fn ipv6_hosts_share_their_64_and_the_table_is_capped() {
        let start = Instant::now();
        let mut rate = ApiRate::new(1.0, 1.0);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert!(rate.admit(one, start).is_ok());
        assert!(rate.admit(same_64, start).is_err());
        for n in 0..MAX_ADDRESSES as u32 {
            let _ = rate.admit(IpAddr::from(n.to_be_bytes()), start);
        }
        assert_eq!(rate.tracked(), MAX_ADDRESSES);
        let new: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(rate.admit(new, start).is_err(), "full: new addresses wait");
        rate.forget_idle(start + Duration::from_secs(2));
        assert!(rate.admit(new, start + Duration::from_secs(2)).is_ok());
    }
}
