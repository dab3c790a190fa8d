//! The API's per-address rate limit (`--api-rate`, `--api-burst`): a token bucket per client
//! address (behind a trusted proxy, the forwarded one), IPv6 addresses by their /64, since one
//! host usually holds a whole /64. An IPv4 client of a dual-stack listener (`::ffff:a.b.c.d`)
//! counts as its IPv4 address, not as the /64 every such client shares.
//!
//! Memory is bounded: at most `MAX_ADDRESSES` buckets, and a bucket that has refilled (its
//! address idle long enough) is dropped by the once-a-second housekeeping, as a new full one
//! is the same. While the table is full, the addresses not in it share one overflow bucket
//! worth `OVERFLOW_SHARE` addresses: whoever holds the table (a /48 alone has 65 536 /64s)
//! keeps its own limit, and everyone else is still answered, up to that shared rate, instead
//! of the API being shut to all newcomers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::{MAX_API_LIMIT, MIN_API_RATE};
use crate::engine::rate::TokenBucket;

/// Most addresses tracked at once (a few MiB at most).
pub const MAX_ADDRESSES: usize = 65_536;

/// How many addresses' worth of rate and burst the overflow bucket has.
pub const OVERFLOW_SHARE: f64 = 64.0;

#[derive(Debug)]
pub struct ApiRate {
    /// Requests per second per address; 0 = unlimited.
    rate: f64,
    burst: f64,
    /// Each address's bucket and when it last asked.
    buckets: HashMap<IpAddr, (TokenBucket, Instant)>,
    /// The bucket the addresses not in the full table share, once it has been needed.
    overflow: Option<TokenBucket>,
}

impl Default for ApiRate {
    fn default() -> Self {
        ApiRate::new(0.0, 0.0)
    }
}

impl ApiRate {
    /// `rate` and `burst` as the configuration checks them (`config::api_limits`); anything else (not finite,
    /// negative, below `MIN_API_RATE`) turns the limit off rather than misbehave.
    pub fn new(rate: f64, burst: f64) -> Self {
        let usable = rate.is_finite() && (MIN_API_RATE..=MAX_API_LIMIT).contains(&rate);
        ApiRate {
            rate: if usable { rate } else { 0.0 },
            burst: if burst.is_finite() {
                burst.clamp(1.0, MAX_API_LIMIT)
            } else {
                1.0
            },
            buckets: HashMap::new(),
            overflow: None,
        }
    }

    /// Takes one request for `ip`; `Err(seconds)` to wait when it is over its rate (or, with
    /// the table full, when the shared overflow bucket is empty).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let retry_after = (1.0 / self.rate).ceil().max(1.0) as u64;
        let key = bucket_key(ip);
        let (rate, burst) = (self.rate, self.burst);
        let bucket = if self.buckets.len() < MAX_ADDRESSES || self.buckets.contains_key(&key) {
            let (bucket, last) = self
                .buckets
                .entry(key)
                .or_insert_with(|| (TokenBucket::new(rate, burst, now), now));
            *last = now;
            bucket
        } else {
            self.overflow.get_or_insert_with(|| {
                TokenBucket::new(rate * OVERFLOW_SHARE, burst * OVERFLOW_SHARE, now)
            })
        };
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
        let refill = Duration::try_from_secs_f64(self.burst / self.rate).unwrap_or(Duration::MAX);
        self.buckets
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < refill);
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// IPv4 addresses as they are (also when mapped into IPv6), IPv6 by their /64.
pub(super) fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::from([a, b, c, d, 0, 0, 0, 0])
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
    fn ipv6_hosts_share_their_64() {
        let start = Instant::now();
        let mut rate = ApiRate::new(1.0, 1.0);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert!(rate.admit(one, start).is_ok());
        assert!(rate.admit(same_64, start).is_err());
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_listener_have_their_own_buckets() {
        let start = Instant::now();
        let mut rate = ApiRate::new(1.0, 1.0);
        let a: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        let b: IpAddr = "::ffff:192.0.2.2".parse().expect("ip");
        assert!(rate.admit(a, start).is_ok());
        assert!(
            rate.admit(b, start).is_ok(),
            "not the /64 all of them share"
        );
        assert!(rate.admit(a, start).is_err());
        let plain: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(
            rate.admit(plain, start).is_err(),
            "the same address either way"
        );
        assert_eq!(rate.tracked(), 2);
    }

    #[test]
    fn a_full_table_shares_an_overflow_bucket_instead_of_refusing_everyone() {
        let start = Instant::now();
        let mut rate = ApiRate::new(1.0, 1.0);
        for n in 0..MAX_ADDRESSES as u32 {
            assert!(rate.admit(IpAddr::from(n.to_be_bytes()), start).is_ok());
        }
        assert_eq!(rate.tracked(), MAX_ADDRESSES);
        let tracked = IpAddr::from(7u32.to_be_bytes());
        assert!(
            rate.admit(tracked, start).is_err(),
            "tracked ones keep theirs"
        );
        let newcomers = (0..OVERFLOW_SHARE as u32).map(|n| IpAddr::from([192, 0, 2, n as u8]));
        assert!(
            newcomers.clone().all(|ip| rate.admit(ip, start).is_ok()),
            "full: newcomers are answered from the shared bucket"
        );
        assert_eq!(rate.tracked(), MAX_ADDRESSES, "and take no memory");
        let one_more: IpAddr = "198.51.100.1".parse().expect("ip");
        assert_eq!(rate.admit(one_more, start), Err(1), "up to its burst");
        assert!(rate.admit(one_more, start + Duration::from_secs(1)).is_ok());
        rate.forget_idle(start + Duration::from_secs(2));
        assert_eq!(rate.tracked(), 0);
        assert!(rate.admit(one_more, start + Duration::from_secs(2)).is_ok());
        assert_eq!(rate.tracked(), 1, "a place again once the table has room");
    }

    #[test]
    fn values_the_configuration_would_refuse_turn_the_limit_off_without_panicking() {
        let start = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        for (r, b) in [
            (f64::NAN, 1.0),
            (1e-300, 1.0),
            (-1.0, 1.0),
            (f64::INFINITY, 1.0),
        ] {
            let mut rate = ApiRate::new(r, b);
            assert!((0..100).all(|_| rate.admit(ip, start).is_ok()));
            rate.forget_idle(start);
        }
        let mut huge_burst = ApiRate::new(MIN_API_RATE, f64::INFINITY);
        assert!(huge_burst.admit(ip, start).is_ok());
        huge_burst.forget_idle(start + Duration::from_secs(1));
        assert_eq!(huge_burst.tracked(), 1);
    }
}
