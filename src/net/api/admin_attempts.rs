//! Failed admin logins per address: `MAX_FAILURES` within `WINDOW`, and the address is
//! answered 429 for `LOCKOUT` (a good token included: a guesser must not learn that its guess
//! was right). Addresses are keyed as the API's rate limit keys them (IPv6 by /64).
//!
//! Memory is bounded like the API's rate table: at most `MAX_ADDRESSES` entries, and the
//! once-a-second housekeeping drops those whose window and lockout are over. While the table is
//! full, the addresses not in it share one entry, `OVERFLOW_SHARE` times as lenient, so that
//! guessing from a whole network is still limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::rate::bucket_key;

/// Failed attempts an address may make within `WINDOW`.
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long an address that failed too often is refused.
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Most addresses tracked at once.
pub const MAX_ADDRESSES: usize = 65_536;
/// How many addresses' worth of failures the shared overflow entry allows.
pub const OVERFLOW_SHARE: u32 = 64;

#[derive(Clone, Copy, Debug)]
struct Failures {
    /// When the counted window started.
    since: Instant,
    count: u32,
    /// Refused until then.
    locked_until: Option<Instant>,
}

impl Failures {
    fn new(now: Instant) -> Self {
        Failures {
            since: now,
            count: 0,
            locked_until: None,
        }
    }

    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    fn fail(&mut self, limit: u32, now: Instant) {
        if now.saturating_duration_since(self.since) >= WINDOW {
            *self = Failures::new(now);
        }
        self.count = self.count.saturating_add(1);
        if self.count >= limit {
            self.locked_until = Some(now + LOCKOUT);
            self.count = 0;
            self.since = now;
        }
    }

    fn forgettable(&self, now: Instant) -> bool {
        self.locked(now).is_none() && now.saturating_duration_since(self.since) >= WINDOW
    }
}

#[derive(Debug, Default)]
pub struct AdminAttempts {
    failures: HashMap<IpAddr, Failures>,
    overflow: Option<Failures>,
}

impl AdminAttempts {
    /// Seconds `ip` must wait before trying again, if it is locked out.
    pub fn locked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let entry = match self.failures.get(&bucket_key(ip)) {
            Some(entry) => Some(entry),
            None if self.failures.len() >= MAX_ADDRESSES => self.overflow.as_ref(),
            None => None,
        };
        entry
            .and_then(|entry| entry.locked(now))
            .map(|left| left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// `ip` presented no token or a wrong one.
    pub fn fail(&mut self, ip: IpAddr, now: Instant) {
        let key = bucket_key(ip);
        if self.failures.len() < MAX_ADDRESSES || self.failures.contains_key(&key) {
            self.failures
                .entry(key)
                .or_insert_with(|| Failures::new(now))
                .fail(MAX_FAILURES, now);
        } else {
            self.overflow
                .get_or_insert_with(|| Failures::new(now))
                .fail(MAX_FAILURES * OVERFLOW_SHARE, now);
        }
    }

    /// Drops what no longer limits anyone.
    pub fn forget_idle(&mut self, now: Instant) {
        self.failures.retain(|_, entry| !entry.forgettable(now));
        if self.overflow.is_some_and(|entry| entry.forgettable(now)) {
            self.overflow = None;
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_a_minute_lock_an_address_out_for_a_minute() {
        let start = Instant::now();
        let mut attempts = AdminAttempts::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for n in 0..MAX_FAILURES - 1 {
            attempts.fail(a, start + Duration::from_secs(u64::from(n)));
        }
        assert_eq!(attempts.locked(a, start + Duration::from_secs(9)), None);
        attempts.fail(a, start + Duration::from_secs(9));
        assert_eq!(attempts.locked(a, start + Duration::from_secs(9)), Some(60));
        assert_eq!(attempts.locked(b, start), None, "others are not affected");
        assert_eq!(attempts.locked(a, start + Duration::from_secs(68)), Some(1));
        assert_eq!(attempts.locked(a, start + Duration::from_secs(69)), None);
        // Failures spread over more than a minute never lock.
        let later = start + Duration::from_secs(1000);
        for n in 0..30 {
            attempts.fail(b, later + Duration::from_secs(7 * n));
        }
        assert_eq!(attempts.locked(b, later + Duration::from_secs(210)), None);
        attempts.forget_idle(later + Duration::from_secs(400));
        assert_eq!(attempts.tracked(), 0);
    }

    #[test]
    fn a_full_table_shares_one_more_lenient_entry() {
        let start = Instant::now();
        let mut attempts = AdminAttempts::default();
        for n in 0..MAX_ADDRESSES as u32 {
            attempts.fail(IpAddr::from(n.to_be_bytes()), start);
        }
        assert_eq!(attempts.tracked(), MAX_ADDRESSES);
        let newcomer: IpAddr = "198.51.100.1".parse().expect("ip");
        for _ in 0..MAX_FAILURES * OVERFLOW_SHARE - 1 {
            attempts.fail(newcomer, start);
        }
        assert_eq!(attempts.locked(newcomer, start), None);
        attempts.fail(newcomer, start);
        assert!(attempts.locked(newcomer, start).is_some());
        assert_eq!(attempts.tracked(), MAX_ADDRESSES, "no more memory");
        attempts.forget_idle(start + Duration::from_secs(120));
        assert_eq!(attempts.tracked(), 0);
        assert_eq!(
            attempts.locked(newcomer, start + Duration::from_secs(120)),
            None
        );
    }
}
