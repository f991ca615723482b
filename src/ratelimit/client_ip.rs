//! The client address: the peer, or what trusted proxies say it is.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;
use http::header::FORWARDED;

use crate::peer::{Network, canonical, is_trusted};

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

/// Who a request comes from: an address, or the identifier a trusted proxy reported for a
/// client it would not or could not name by address (`unknown`, an obfuscated `_hidden`,
/// garbage the client sent that the proxy passed on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client<'a> {
    Address(IpAddr),
    Opaque(&'a str),
}

/// The hop texts a request passed through, nearest last: the `for=` values of `Forwarded`
/// when present, else `X-Forwarded-For`. `None` when a field is not text at all.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<&str>> {
    let mut hops = Vec::new();
    if headers.contains_key(FORWARDED) {
        for value in headers.get_all(FORWARDED) {
            for element in value.to_str().ok()?.split(',') {
                let for_value = element.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim().eq_ignore_ascii_case("for").then_some(value)
                });
                hops.extend(for_value);
            }
        }
        return Some(hops);
    }
    for value in headers.get_all("x-forwarded-for") {
        hops.extend(value.to_str().ok()?.split(','));
    }
    Some(hops)
}

/// The client of a request from `peer`: the peer itself unless it is a trusted proxy; then
/// the forwarding chain is walked from the nearest hop, skipping trusted proxies, and the
/// first hop that is not one is the client.
///
/// Hops are read only as far as the walk goes: what a client wrote further left (a forged
/// address, garbage) is never read. A hop that is not an address is the client's identifier
/// as the proxy reported it, so clients behind one proxy never share its bucket because of one
/// odd value.
pub(crate) fn resolve<'a>(peer: IpAddr, headers: &'a HeaderMap, trusted: &[Network]) -> Client<'a> {
    let mut client = Client::Address(canonical(peer));
    if !is_trusted(trusted, peer) {
        return client;
    }
    let Some(hops) = forwarded_hops(headers) else {
        return client;
    };
    for hop in hops.into_iter().rev() {
        match parse_hop(hop) {
            Some(address) => {
                client = Client::Address(canonical(address));
                if !is_trusted(trusted, address) {
                    break;
                }
            }
            None => {
                let text = hop.trim().trim_matches('"');
                if !text.is_empty() {
                    client = Client::Opaque(text);
                }
                break;
            }
        }
    }
    client
}

/// The key text of a client: an address, or `hop:` and the identifier a proxy reported.
pub(crate) fn client_key_text(client: Client<'_>) -> String {
    match client {
        Client::Address(address) => key_text(address),
        Client::Opaque(text) => format!("hop:{text}"),
    }
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

    fn address(text: &str) -> Client<'static> {
        Client::Address(ip(text))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = networks(&["10.0.0.0/8"]);
        let spoof = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(
            resolve(ip("203.0.113.9"), &spoof, &trusted),
            address("203.0.113.9")
        );
        assert_eq!(
            resolve(ip("203.0.113.9"), &spoof, &[]),
            address("203.0.113.9")
        );
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_nearest_hop() {
        let trusted = networks(&["10.0.0.0/8", "192.168.0.1"]);
        let cases: &[(&[(&str, &str)], Client<'_>)] = &[
            (
                &[("x-forwarded-for", "203.0.113.9")],
                address("203.0.113.9"),
            ),
            // the client forged the leftmost entry; the proxies appended the real hops
            (
                &[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.7")],
                address("203.0.113.9"),
            ),
            (
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "203.0.113.9, 192.168.0.1"),
                ],
                address("203.0.113.9"),
            ),
            (
                &[("x-forwarded-for", "203.0.113.9:4711")],
                address("203.0.113.9"),
            ),
            (
                &[("x-forwarded-for", "[2001:db8::1]:80")],
                address("2001:db8::1"),
            ),
            (
                &[(
                    "forwarded",
                    r#"for=6.6.6.6, for="[2001:db8::2]:443";proto=https"#,
                )],
                address("2001:db8::2"),
            ),
            (
                &[
                    ("forwarded", "For=203.0.113.9"),
                    ("x-forwarded-for", "6.6.6.6"),
                ],
                address("203.0.113.9"),
            ),
            // everything trusted: the farthest hop
            (
                &[("x-forwarded-for", "10.0.0.1, 10.0.0.2")],
                address("10.0.0.1"),
            ),
            // nothing forwarded: the peer
            (&[], address("10.0.0.5")),
            // garbage left of the client is never read
            (
                &[("x-forwarded-for", "not-an-ip, 203.0.113.9")],
                address("203.0.113.9"),
            ),
            // a hop that is not an address is the client as the proxy names it
            (
                &[("x-forwarded-for", "203.0.113.9, unknown, 10.0.0.7")],
                Client::Opaque("unknown"),
            ),
            (
                &[("forwarded", "for=_hidden7;proto=https")],
                Client::Opaque("_hidden7"),
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                resolve(ip("10.0.0.5"), &headers(pairs), &trusted),
                *expected,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn one_odd_hop_does_not_put_everyone_behind_a_proxy_in_one_bucket() {
        let trusted = networks(&["10.0.0.0/8"]);
        let a = headers(&[("x-forwarded-for", "garbage, 203.0.113.1")]);
        let b = headers(&[("x-forwarded-for", "203.0.113.2")]);
        let odd = headers(&[("x-forwarded-for", "_obf1")]);
        let keys: Vec<String> = [&a, &b, &odd]
            .iter()
            .map(|h| client_key_text(resolve(ip("10.0.0.5"), h, &trusted)))
            .collect();
        assert_eq!(keys, ["203.0.113.1", "203.0.113.2", "hop:_obf1"]);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(key_text(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(key_text(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(key_text(ip("2001:db8:1:2:ffff::1")), "2001:db8:1:2::/64");
    }
}
