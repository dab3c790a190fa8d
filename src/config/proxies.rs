//! `--trust-proxy`: which peers may name the client's address in `X-Forwarded-For`.
//!
//! A list of addresses and networks (`127.0.0.1`, `10.0.0.0/8`, `::1`). The older switch form
//! (a bare `--trust-proxy`, `STRATUS_TRUST_PROXY=1`, `trust-proxy = true` in the file) still
//! works and means loopback, where a proxy on the same machine connects from; `false`, `0`,
//! `no`, `off` trust nobody. A peer outside the list is its own address whatever it sends, so
//! a client that reaches the port directly cannot pick its address or pass for a local one.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One trusted network: an address and how many of its leading bits must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// An address (`1.2.3.4`, `::1`) or a network (`10.0.0.0/8`); `None` for anything else.
    /// The admin API's address bans are read with it too.
    pub fn parse(text: &str) -> Option<Network> {
        parse_network(text).ok()
    }

    /// Whether it names one address rather than a network.
    pub fn single_address(&self) -> Option<IpAddr> {
        let full = if self.address.is_ipv4() { 32 } else { 128 };
        (self.prefix == full).then_some(self.address)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.address.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.address)
        } else {
            write!(f, "{}/{}", self.address, self.prefix)
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` are equal.
fn prefix_matches(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let mut bits_left = usize::from(prefix);
    for (x, y) in a.iter().zip(b) {
        if bits_left == 0 {
            return true;
        }
        let take = bits_left.min(8);
        // `take` is 1..=8: the mask keeps the byte's leading `take` bits.
        let mask = 0xffu8 << (8 - take);
        if x & mask != y & mask {
            return false;
        }
        bits_left -= take;
    }
    true
}

/// The peers trusted to name the client: empty trusts nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<Network>,
}

impl TrustedProxies {
    /// What the switch form means: a proxy on this machine.
    pub fn loopback() -> Self {
        TrustedProxies {
            networks: vec![
                Network {
                    address: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                    prefix: 8,
                },
                Network {
                    address: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    prefix: 128,
                },
            ],
        }
    }

    /// Whether any peer is trusted at all.
    pub fn is_enabled(&self) -> bool {
        !self.networks.is_empty()
    }

    /// Whether a connection from `peer` may name its client. A unix-socket peer (`None`) is on
    /// this machine: trusted whenever any proxy is.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        match peer {
            None => self.is_enabled(),
            Some(ip) => self.networks.iter().any(|net| net.contains(ip)),
        }
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for net in &self.networks {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// `--trust-proxy`'s value: comma-separated addresses and networks, or a switch word.
pub fn parse_trusted_proxies(text: &str) -> Result<TrustedProxies, String> {
    let mut proxies = TrustedProxies::default();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => {
                proxies.networks.extend(TrustedProxies::loopback().networks)
            }
            "false" | "no" | "off" | "0" => {}
            _ => proxies.networks.push(parse_network(item)?),
        }
    }
    Ok(proxies)
}

fn parse_network(item: &str) -> Result<Network, String> {
    let bad = || {
        format!("{item:?} is not an address or network (127.0.0.1, 10.0.0.0/8, ::1, or true for loopback)")
    };
    let (address, prefix) = match item.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (item, None),
    };
    let address: IpAddr = address.parse().map_err(|_| bad())?;
    let full = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= full)
            .ok_or_else(bad)?,
        None => full,
    };
    Ok(Network { address, prefix })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn switch_words_mean_loopback_or_nobody() {
        for on in ["true", "1", "yes", "ON"] {
            assert_eq!(
                parse_trusted_proxies(on).unwrap(),
                TrustedProxies::loopback()
            );
        }
        for off in ["false", "0", "no", "off", ""] {
            assert!(!parse_trusted_proxies(off).unwrap().is_enabled());
        }
    }

    #[test]
    fn networks_match_their_prefix_only() {
        let trusted = parse_trusted_proxies("10.1.0.0/16, 192.0.2.7,fd00::/8").unwrap();
        assert!(trusted.trusts(ip("10.1.200.3")));
        assert!(!trusted.trusts(ip("10.2.0.1")));
        assert!(trusted.trusts(ip("192.0.2.7")));
        assert!(!trusted.trusts(ip("192.0.2.8")));
        assert!(trusted.trusts(ip("fd12::1")));
        assert!(!trusted.trusts(ip("fe80::1")));
        assert!(trusted.trusts(ip("::ffff:10.1.0.9")));
        assert!(!trusted.trusts(ip("127.0.0.1")));
        assert!(trusted.trusts(None));
        let loopback = TrustedProxies::loopback();
        assert!(loopback.trusts(ip("127.0.0.2")) && loopback.trusts(ip("::1")));
        assert!(!loopback.trusts(ip("192.168.1.1")));
        assert!(!TrustedProxies::default().trusts(None));
        assert!(parse_trusted_proxies("0.0.0.0/0")
            .unwrap()
            .trusts(ip("8.8.8.8")));
    }

    #[test]
    fn bad_items_are_refused() {
        for bad in [
            "maybe",
            "10.0.0.0/33",
            "10.0.0.0/",
            "::1/129",
            "host.example",
        ] {
            assert!(parse_trusted_proxies(bad).is_err(), "{bad}");
        }
    }
}
