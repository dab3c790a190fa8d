//! Failed admin logins per address: `MAX_FAILURES` within a sliding `WINDOW`, and the address
//! is answered 429 for `LOCKOUT` (a good token included: a guesser must not learn that its
//! guess was right). Addresses are keyed as the API's rate limit keys them (IPv6 by /64).
//!
//! The window slides: the failures of the previous window count in proportion to how much of
//! it still lies within the last `WINDOW`, so a burst across a window's boundary is limited
//! like any other (one count and one weight per address, no list of times).
//!
//! Memory is bounded like the API's rate table: at most `MAX_ADDRESSES` entries, and the
//! once-a-second housekeeping drops those whose failures and lockout are over. While the table
//! is full, the addresses not in it share one entry, `OVERFLOW_SHARE` times as lenient, so that
//! guessing from a whole network is still limited. Filling the table (an IPv6 /48 holds 65 536
//! /64s) must not lock the operators out, so two kinds of address never count into nor are
//! refused by the shared entry: loopback addresses, and addresses that presented a valid token
//! within `TRUSTED_FOR` (at most `MAX_TRUSTED` of them, the least recent forgotten first).

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
/// How long an address that presented a valid token is spared the shared overflow entry.
pub const TRUSTED_FOR: Duration = Duration::from_secs(24 * 60 * 60);
/// Most such addresses remembered at once.
pub const MAX_TRUSTED: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Failures {
    /// When the current window started.
    since: Instant,
    count: u32,
    /// Failures in the window before the current one.
    previous: u32,
    /// Refused until then.
    locked_until: Option<Instant>,
}

impl Failures {
    fn new(now: Instant) -> Self {
        Failures {
            since: now,
            count: 0,
            previous: 0,
            locked_until: None,
        }
    }

    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Moves the window on to the one `now` is in.
    fn slide(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= WINDOW + WINDOW {
            *self = Failures {
                locked_until: self.locked_until,
                ..Failures::new(now)
            };
        } else if elapsed >= WINDOW {
            self.previous = self.count;
            self.count = 0;
            self.since += WINDOW;
        }
    }

    fn fail(&mut self, limit: u32, now: Instant) {
        self.slide(now);
        self.count = self.count.saturating_add(1);
        // previous × (the part of the previous window still within WINDOW) + count ≥ limit,
        // in milliseconds and integers.
        let window = WINDOW.as_millis();
        let into = now
            .saturating_duration_since(self.since)
            .as_millis()
            .min(window);
        let weighted =
            u128::from(self.previous) * (window - into) + u128::from(self.count) * window;
        if weighted >= u128::from(limit) * window {
            *self = Failures {
                locked_until: Some(now + LOCKOUT),
                ..Failures::new(now)
            };
        }
    }

    fn forgettable(&self, now: Instant) -> bool {
        self.locked(now).is_none() && now.saturating_duration_since(self.since) >= WINDOW + WINDOW
    }
}

#[derive(Debug, Default)]
pub struct AdminAttempts {
    failures: HashMap<IpAddr, Failures>,
    overflow: Option<Failures>,
    /// Addresses (keyed) that presented a valid token, and when they last did.
    trusted: HashMap<IpAddr, Instant>,
}

impl AdminAttempts {
    /// Seconds `ip` must wait before trying again, if it is locked out.
    pub fn locked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let entry = match self.failures.get(&bucket_key(ip)) {
            Some(entry) => Some(entry),
            None if self.failures.len() >= MAX_ADDRESSES && !self.spared(ip, now) => {
                self.overflow.as_ref()
            }
            None => None,
        };
        entry
            .and_then(|entry| entry.locked(now))
            .map(|left| left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// `ip` presented a wrong token.
    pub fn fail(&mut self, ip: IpAddr, now: Instant) {
        let key = bucket_key(ip);
        if self.failures.len() < MAX_ADDRESSES || self.failures.contains_key(&key) {
            self.failures
                .entry(key)
                .or_insert_with(|| Failures::new(now))
                .fail(MAX_FAILURES, now);
        } else if !self.spared(ip, now) {
            self.overflow
                .get_or_insert_with(|| Failures::new(now))
                .fail(MAX_FAILURES * OVERFLOW_SHARE, now);
        }
    }

    /// `ip` presented a valid token: spared the shared overflow entry for `TRUSTED_FOR`.
    pub fn succeed(&mut self, ip: IpAddr, now: Instant) {
        let key = bucket_key(ip);
        if let Some(last) = self.trusted.get_mut(&key) {
            *last = now;
            return;
        }
        if self.trusted.len() >= MAX_TRUSTED {
            // Rare (more operators' addresses than MAX_TRUSTED in a day): a scan is fine.
            let least_recent = self
                .trusted
                .iter()
                .min_by_key(|(_, last)| **last)
                .map(|(key, _)| *key);
            if let Some(least_recent) = least_recent {
                self.trusted.remove(&least_recent);
            }
        }
        self.trusted.insert(key, now);
    }

    /// Never counted into nor refused by the shared overflow entry.
    fn spared(&self, ip: IpAddr, now: Instant) -> bool {
        ip.to_canonical().is_loopback()
            || self
                .trusted
                .get(&bucket_key(ip))
                .is_some_and(|last| now.saturating_duration_since(*last) < TRUSTED_FOR)
    }

    /// Drops what no longer limits anyone.
    pub fn forget_idle(&mut self, now: Instant) {
        self.failures.retain(|_, entry| !entry.forgettable(now));
        if self.overflow.is_some_and(|entry| entry.forgettable(now)) {
            self.overflow = None;
        }
        self.trusted
            .retain(|_, last| now.saturating_duration_since(*last) < TRUSTED_FOR);
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

    #[test]
    fn the_window_slides_so_a_burst_across_its_boundary_is_limited() {
        let start = Instant::now();
        let mut attempts = AdminAttempts::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..MAX_FAILURES - 1 {
            attempts.fail(a, start);
        }
        let next_window = start + WINDOW;
        assert_eq!(attempts.locked(a, next_window), None);
        attempts.fail(a, next_window);
        assert!(
            attempts.locked(a, next_window).is_some(),
            "ten failures within a minute"
        );
        // Half a window on, half of the previous window's failures still count.
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..MAX_FAILURES - 1 {
            attempts.fail(b, start);
        }
        let half_on = start + WINDOW + WINDOW / 2;
        for _ in 0..5 {
            attempts.fail(b, half_on);
        }
        assert_eq!(attempts.locked(b, half_on), None, "4.5 + 5 < 10");
        attempts.fail(b, half_on);
        assert!(attempts.locked(b, half_on).is_some(), "4.5 + 6 ≥ 10");
    }

    #[test]
    fn a_full_table_never_locks_out_loopback_or_an_address_that_had_a_valid_token() {
        let start = Instant::now();
        let mut attempts = AdminAttempts::default();
        let operator: IpAddr = "2001:db8:1::7".parse().expect("ip");
        attempts.succeed(operator, start);
        // An attacker's /48 fills the table, then locks the shared entry.
        for n in 0..=u16::MAX {
            let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x99, n, 0, 0, 0, 1);
            attempts.fail(IpAddr::V6(ip), start);
        }
        let stranger: IpAddr = "198.51.100.1".parse().expect("ip");
        for _ in 0..MAX_FAILURES * OVERFLOW_SHARE {
            attempts.fail(stranger, start);
        }
        assert!(attempts.locked(stranger, start).is_some());
        let later = start + Duration::from_secs(30);
        for spared in [
            operator,
            "::1".parse().expect("ip"),
            "127.0.0.1".parse().expect("ip"),
        ] {
            assert_eq!(attempts.locked(spared, later), None, "{spared}");
            attempts.fail(spared, later);
            assert_eq!(attempts.locked(spared, later), None, "{spared}");
        }
        assert!(attempts.locked(stranger, later).is_some());
        assert_eq!(attempts.tracked(), MAX_ADDRESSES, "no more memory");
        // A valid token long ago spares no more.
        let next_day = start + TRUSTED_FOR;
        attempts.forget_idle(next_day);
        assert_eq!(attempts.tracked(), 0);
        assert!(!attempts.spared(operator, next_day));
    }

    #[test]
    fn remembered_valid_token_addresses_are_bounded() {
        let start = Instant::now();
        let mut attempts = AdminAttempts::default();
        for n in 0..MAX_TRUSTED as u32 + 10 {
            let at = start + Duration::from_secs(u64::from(n));
            attempts.succeed(IpAddr::from((n + 1).to_be_bytes()), at);
        }
        assert_eq!(attempts.trusted.len(), MAX_TRUSTED);
        let now = start + Duration::from_secs(2000);
        assert!(
            !attempts.spared(IpAddr::from(1u32.to_be_bytes()), now),
            "least recent forgotten"
        );
        assert!(attempts.spared(IpAddr::from(11u32.to_be_bytes()), now));
    }
}
