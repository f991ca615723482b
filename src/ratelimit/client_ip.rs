//! The client address: the peer, or what trusted proxies say it is.

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use http::HeaderMap;
use http::header::FORWARDED;

use crate::ConfigError;

/// A network such as `10.0.0.0/8` or `::1/128`; a bare address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Network {
    address: IpAddr,
    prefix: u8,
}

impl FromStr for Network {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ConfigError::InvalidOption {
            option: "trusted_proxies",
            reason: format!("`{text}` is not an address or a network such as 10.0.0.0/8"),
        };
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(invalid)?,
            None => max,
        };
        Ok(Self { address, prefix })
    }
}

impl Network {
    fn contains(&self, address: IpAddr) -> bool {
        match (self.address, canonical(address)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are the IPv4 address they carry.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// One hop of `X-Forwarded-For` or `Forwarded: for=`: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`,
/// `"[2001:db8::1]"`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    hop.parse().ok().or_else(|| {
        let (host, port) = hop.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        host.parse().ok()
    })
}

/// The hops a request passed through, nearest last: `Forwarded` when present, else
/// `X-Forwarded-For`. `None` when a hop is unreadable, so that a garbled chain is never
/// trusted.
fn forwarded_chain(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    if headers.contains_key(FORWARDED) {
        let mut hops = Vec::new();
        for value in headers.get_all(FORWARDED) {
            for element in value.to_str().ok()?.split(',') {
                let for_value = element.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim().eq_ignore_ascii_case("for").then_some(value)
                });
                if let Some(value) = for_value {
                    hops.push(parse_hop(value)?);
                }
            }
        }
        return Some(hops);
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        for hop in value.to_str().ok()?.split(',') {
            hops.push(parse_hop(hop)?);
        }
    }
    Some(hops)
}

/// The client address of a request from `peer`: the peer itself unless it is a trusted
/// proxy; then the nearest hop of the forwarding chain that is not a trusted proxy.
pub(crate) fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[Network]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|network| network.contains(address));
    if !is_trusted(peer) {
        return canonical(peer);
    }
    let Some(chain) = forwarded_chain(headers) else {
        return canonical(peer);
    };
    let mut client = canonical(peer);
    for hop in chain.into_iter().rev() {
        client = canonical(hop);
        if !is_trusted(hop) {
            break;
        }
    }
    client
}

/// The key text of an address: IPv6 clients are keyed by their /64, since one subscriber
/// usually holds a whole /64 (as django-ratelimit's default `RATELIMIT_IPV6_MASK`).
pub(crate) fn key_text(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", Ipv6Addr::from(masked))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn networks(list: &[&str]) -> Vec<Network> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_contain() {
        let lan: Network = "10.0.0.0/8".parse().unwrap();
        assert!(lan.contains(ip("10.1.2.3")));
        assert!(lan.contains(ip("::ffff:10.1.2.3")));
        assert!(!lan.contains(ip("11.0.0.1")));
        let one: Network = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Network = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = networks(&["10.0.0.0/8"]);
        let spoof = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(
            resolve(ip("203.0.113.9"), &spoof, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(resolve(ip("203.0.113.9"), &spoof, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_nearest_hop() {
        let trusted = networks(&["10.0.0.0/8", "192.168.0.1"]);
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("x-forwarded-for", "203.0.113.9")], "203.0.113.9"),
            // the client forged the leftmost entry; the proxies appended the real hops
            (
                &[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.7")],
                "203.0.113.9",
            ),
            (
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "203.0.113.9, 192.168.0.1"),
                ],
                "203.0.113.9",
            ),
            (&[("x-forwarded-for", "203.0.113.9:4711")], "203.0.113.9"),
            (&[("x-forwarded-for", "[2001:db8::1]:80")], "2001:db8::1"),
            (
                &[(
                    "forwarded",
                    r#"for=6.6.6.6, for="[2001:db8::2]:443";proto=https"#,
                )],
                "2001:db8::2",
            ),
            (
                &[
                    ("forwarded", "For=203.0.113.9"),
                    ("x-forwarded-for", "6.6.6.6"),
                ],
                "203.0.113.9",
            ),
            // everything trusted: the farthest hop
            (&[("x-forwarded-for", "10.0.0.1, 10.0.0.2")], "10.0.0.1"),
            // nothing forwarded, or garbled: the peer
            (&[], "10.0.0.5"),
            (&[("x-forwarded-for", "not-an-ip, 203.0.113.9")], "10.0.0.5"),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                resolve(ip("10.0.0.5"), &headers(pairs), &trusted),
                ip(expected),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(key_text(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(key_text(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(key_text(ip("2001:db8:1:2:ffff::1")), "2001:db8:1:2::/64");
    }
}
