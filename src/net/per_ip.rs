//! Open connections per client address, so one address cannot take every slot.
//!
//! The loop admits a connection's address when it is known: at accept for direct clients, after
//! the request head for clients behind a trusted proxy (`X-Forwarded-For`). Each admitted
//! address is released exactly once: when its connection is removed, or, when the connection
//! left a parked MultiStudio session behind, when that session ends (`dialect::resume`).

use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Default)]
pub struct PerIp {
    /// 0 = no limit (and nothing is counted).
    max: usize,
    open: HashMap<IpAddr, u32>,
    /// Connections refused since start, for logs.
    pub refused: u64,
}

impl PerIp {
    pub fn new(max: usize) -> Self {
        PerIp {
            max,
            ..PerIp::default()
        }
    }

    /// Counts one more connection from `ip`; false (and nothing counted) when it has `max`.
    pub fn admit(&mut self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let open = self.open.entry(ip).or_insert(0);
        if *open as usize >= self.max {
            self.refused += 1;
            if open == &0 {
                self.open.remove(&ip);
            }
            return false;
        }
        *open += 1;
        true
    }

    /// Whether `ip` has as many connections as it may.
    pub fn is_full(&self, ip: IpAddr) -> bool {
        self.max > 0
            && self
                .open
                .get(&ip)
                .is_some_and(|&open| open as usize >= self.max)
    }

    /// A connection admitted for `ip` is gone.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(open) = self.open.get_mut(&ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_and_a_slot_back_when_one_closes() {
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        let mut per_ip = PerIp::new(2);
        assert!(per_ip.admit(ip) && per_ip.admit(ip));
        assert!(!per_ip.admit(ip));
        assert!(per_ip.admit(other));
        per_ip.release(ip);
        assert!(per_ip.admit(ip));
        assert_eq!(per_ip.refused, 1);
        per_ip.release(ip);
        per_ip.release(ip);
        per_ip.release(other);
        assert!(
            per_ip.open.is_empty(),
            "no entry is left for gone addresses"
        );
        let mut unlimited = PerIp::new(0);
        assert!((0..10_000).all(|_| unlimited.admit(ip)));
        assert!(unlimited.open.is_empty());
    }
}
