//! The client address: the peer, or what trusted proxies say it is.

use std::net::{IpAddr, Ipv6Addr};

use http::header::FORWARDED;
use http::{HeaderMap, HeaderName};

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

/// The request header that names the client when the peer is a trusted proxy: the one the
/// deployment's proxy writes. A client can send any header itself; only the one its proxy
/// writes (or appends to) says who it is, so the choice is configured, never inferred from
/// what a request carries.
///
/// # Example
///
/// ```
/// use tower_redis_http::ratelimit::{ClientAddressHeader, Key, RateLimitLayer, Rule};
/// use tower_redis_http::store::MemoryStore;
///
/// // behind Envoy set to write RFC 7239 `Forwarded`
/// let limit = RateLimitLayer::builder(MemoryStore::new())
///     .rule(Rule::fixed_window("login", "10/m", Key::client_ip()))
///     .trusted_proxies(["10.0.0.0/8"])
///     .client_address_header(ClientAddressHeader::Forwarded)
///     .build()?;
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAddressHeader {
    /// `X-Forwarded-For`, which nginx (`$proxy_add_x_forwarded_for`), HAProxy, AWS ALB,
    /// Heroku and Google Cloud load balancers append the client to. Default. A `Forwarded`
    /// header is then ignored: those proxies pass the client's own through.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for=` parameters, for proxies set to write it (Envoy,
    /// nginx with a `Forwarded` map). `X-Forwarded-For` is then ignored.
    Forwarded,
    /// Another header, read as `X-Forwarded-For` is (a list of addresses, the nearest
    /// last): `X-Real-IP`, `True-Client-IP`, `CF-Connecting-IP`, `Fly-Client-IP`, which a
    /// proxy sets to the one address it saw.
    Named(HeaderName),
}

/// Who a request comes from: an address, or the identifier a trusted proxy reported for a
/// client it would not or could not name by address (`unknown`, an obfuscated `_hidden`,
/// garbage the client sent that the proxy passed on), or nobody: a trusted proxy that named
/// no client at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client<'a> {
    Address(IpAddr),
    Opaque(&'a str),
    /// The peer is a trusted proxy and the configured header names no client: the proxy
    /// does not write that header. Keyed by the proxy's address, every client behind it
    /// would share one bucket, and one client would exhaust everyone's limit.
    Unnamed,
}

/// The hop texts of the configured header, nearest last; `None` for a hop that is not text.
fn forwarded_hops<'a>(headers: &'a HeaderMap, from: &ClientAddressHeader) -> Vec<Option<&'a str>> {
    let mut hops = Vec::new();
    let name = match from {
        ClientAddressHeader::Forwarded => {
            for value in headers.get_all(FORWARDED) {
                for element in value.as_bytes().split(|&b| b == b',') {
                    let for_value = element.split(|&b| b == b';').find_map(|pair| {
                        let at = pair.iter().position(|&b| b == b'=')?;
                        let (name, value) = (&pair[..at], &pair[at + 1..]);
                        name.trim_ascii()
                            .eq_ignore_ascii_case(b"for")
                            .then(|| std::str::from_utf8(value).ok())
                    });
                    // an element without `for=` is a hop that names nobody: kept, so the
                    // walk stops there instead of reading what the client wrote before it
                    hops.push(for_value.unwrap_or(Some("")));
                }
            }
            return hops;
        }
        ClientAddressHeader::XForwardedFor => &X_FORWARDED_FOR,
        ClientAddressHeader::Named(name) => name,
    };
    for value in headers.get_all(name) {
        hops.extend(
            value
                .as_bytes()
                .split(|&b| b == b',')
                .map(|hop| std::str::from_utf8(hop).ok()),
        );
    }
    hops
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What stands for a hop that is not text, as the client's identifier.
const NOT_TEXT: &str = "non-text";

/// The client of a request from `peer`: the peer itself unless it is a trusted proxy; then
/// the configured header's chain is walked from the nearest hop, skipping trusted proxies,
/// and the first hop that is not one is the client.
///
/// Hops are read only as far as the walk goes: what a client wrote further left (a forged
/// address, garbage) is never read. A hop that is not an address is the client's identifier
/// as the proxy reported it, so clients behind one proxy never share its bucket because of one
/// odd value. A trusted peer whose header names no hop at all, or whose walk meets a hop that
/// names nobody, is [`Client::Unnamed`].
pub(crate) fn resolve<'a>(
    peer: IpAddr,
    headers: &'a HeaderMap,
    trusted: &[Network],
    from: &ClientAddressHeader,
) -> Client<'a> {
    let mut client = Client::Address(canonical(peer));
    if !is_trusted(trusted, peer) {
        return client;
    }
    let hops = forwarded_hops(headers, from);
    if hops.is_empty() {
        return Client::Unnamed;
    }
    for hop in hops.into_iter().rev() {
        let Some(hop) = hop else {
            client = Client::Opaque(NOT_TEXT);
            break;
        };
        // a hop that names nobody (an empty list member, an element without `for=`): what
        // lies further left is the client's own writing, never read
        if hop.trim().is_empty() {
            return Client::Unnamed;
        }
        match parse_hop(hop) {
            Some(address) => {
                client = Client::Address(canonical(address));
                if !is_trusted(trusted, address) {
                    break;
                }
            }
            None => {
                client = Client::Opaque(hop.trim().trim_matches('"'));
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
        Client::Unnamed => "unnamed".to_owned(),
    }
}

/// The key text of an address: IPv6 clients are keyed by their /64, since one subscriber
/// usually holds a whole /64 (as django-ratelimit's default `RATELIMIT_IPV6_MASK`), except
/// those whose address embeds the IPv4 one they come from, which are keyed by it as an IPv4
/// client is: behind NAT64 every IPv4 client shares `64:ff9b::/64`, and a 6to4 site or a
/// Teredo client could pick among many /64s.
pub(crate) fn key_text(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => v4.to_string(),
            None => {
                let masked = u128::from(v6) & (u128::MAX << 64);
                format!("{}/64", Ipv6Addr::from(masked))
            }
        },
    }
}

/// The IPv4 address an IPv6 one stands for: IPv4-mapped `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2),
/// the NAT64 well-known prefix `64:ff9b::/96` (RFC 6052 §2.1), 6to4 `2002:AABB:CCDD::/48`
/// (RFC 3056 §2), and Teredo `2001:0::/32`, whose last 32 bits are the client's public IPv4
/// inverted (RFC 4380 §4).
fn embedded_ipv4(v6: Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let bits = u128::from(v6);
    // the truncations keep exactly the 32 bits each layout puts the IPv4 address in
    let (low, after_2002) = (bits as u32, (bits >> 80) as u32);
    let segments = v6.segments();
    if let Some(v4) = v6.to_ipv4_mapped() {
        Some(v4)
    } else if bits >> 32 == 0x0064_ff9b_u128 << 64 {
        Some(low.into())
    } else if segments[0] == 0x2002 {
        Some(after_2002.into())
    } else if segments[0] == 0x2001 && segments[1] == 0 {
        Some((!low).into())
    } else {
        None
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

    const XFF: ClientAddressHeader = ClientAddressHeader::XForwardedFor;

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = networks(&["10.0.0.0/8"]);
        let spoof = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        for from in [XFF, ClientAddressHeader::Forwarded] {
            assert_eq!(
                resolve(ip("203.0.113.9"), &spoof, &trusted, &from),
                address("203.0.113.9")
            );
            assert_eq!(
                resolve(ip("203.0.113.9"), &spoof, &[], &from),
                address("203.0.113.9")
            );
        }
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_nearest_hop() {
        let trusted = networks(&["10.0.0.0/8", "192.168.0.1"]);
        let forwarded = ClientAddressHeader::Forwarded;
        let real_ip = ClientAddressHeader::Named(HeaderName::from_static("x-real-ip"));
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            &'a ClientAddressHeader,
            Client<'a>,
        );
        let cases: &[Case<'_>] = &[
            (
                &[("x-forwarded-for", "203.0.113.9")],
                &XFF,
                address("203.0.113.9"),
            ),
            // the client forged the leftmost entry; the proxies appended the real hops
            (
                &[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.7")],
                &XFF,
                address("203.0.113.9"),
            ),
            (
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "203.0.113.9, 192.168.0.1"),
                ],
                &XFF,
                address("203.0.113.9"),
            ),
            (
                &[("x-forwarded-for", "203.0.113.9:4711")],
                &XFF,
                address("203.0.113.9"),
            ),
            (
                &[("x-forwarded-for", "[2001:db8::1]:80")],
                &XFF,
                address("2001:db8::1"),
            ),
            (
                &[(
                    "forwarded",
                    r#"for=6.6.6.6, for="[2001:db8::2]:443";proto=https"#,
                )],
                &forwarded,
                address("2001:db8::2"),
            ),
            // issue 29, finding 1: the client's own Forwarded, passed through by a proxy
            // that appends to X-Forwarded-For, is never read
            (
                &[
                    ("forwarded", "for=6.6.6.6"),
                    ("x-forwarded-for", "203.0.113.9"),
                ],
                &XFF,
                address("203.0.113.9"),
            ),
            // and the other way round, behind a proxy that writes Forwarded
            (
                &[
                    ("forwarded", "For=203.0.113.9"),
                    ("x-forwarded-for", "6.6.6.6"),
                ],
                &forwarded,
                address("203.0.113.9"),
            ),
            (
                &[("x-real-ip", "203.0.113.9"), ("x-forwarded-for", "6.6.6.6")],
                &real_ip,
                address("203.0.113.9"),
            ),
            // everything trusted: the farthest hop
            (
                &[("x-forwarded-for", "10.0.0.1, 10.0.0.2")],
                &XFF,
                address("10.0.0.1"),
            ),
            // garbage left of the client is never read
            (
                &[("x-forwarded-for", "not-an-ip, 203.0.113.9")],
                &XFF,
                address("203.0.113.9"),
            ),
            // a hop that is not an address is the client as the proxy names it
            (
                &[("x-forwarded-for", "203.0.113.9, unknown, 10.0.0.7")],
                &XFF,
                Client::Opaque("unknown"),
            ),
            (
                &[("forwarded", "for=_hidden7;proto=https")],
                &forwarded,
                Client::Opaque("_hidden7"),
            ),
            // issue 29, finding 1: a trusted proxy that names no client (no header, or a
            // Forwarded without for=) is not every client at once
            (&[], &XFF, Client::Unnamed),
            (&[("forwarded", "for=203.0.113.9")], &XFF, Client::Unnamed),
            (
                &[("forwarded", "proto=https;by=10.0.0.5")],
                &forwarded,
                Client::Unnamed,
            ),
            (&[("x-forwarded-for", " , ")], &XFF, Client::Unnamed),
            // the adversary's review of issue 29: the nearest hop names nobody, and what the
            // client wrote to its left is not read
            (&[("x-forwarded-for", "10.43.0.1,,")], &XFF, Client::Unnamed),
            (&[("x-forwarded-for", "10.43.0.1, ")], &XFF, Client::Unnamed),
            (
                &[("x-forwarded-for", "10.43.0.1"), ("x-forwarded-for", "")],
                &XFF,
                Client::Unnamed,
            ),
            (
                &[("forwarded", "for=10.98.0.1, proto=https")],
                &forwarded,
                Client::Unnamed,
            ),
            (
                &[
                    ("forwarded", "for=10.98.0.1"),
                    ("forwarded", "proto=https;host=x"),
                ],
                &forwarded,
                Client::Unnamed,
            ),
        ];
        for (pairs, from, expected) in cases {
            assert_eq!(
                resolve(ip("10.0.0.5"), &headers(pairs), &trusted, from),
                *expected,
                "{pairs:?} from {from:?}"
            );
        }
        // a hop that is not text is the client's identifier, not the proxy
        let mut odd = HeaderMap::new();
        odd.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff, 203.0.113.9").unwrap(),
        );
        assert_eq!(
            resolve(ip("10.0.0.5"), &odd, &trusted, &XFF),
            address("203.0.113.9")
        );
        odd.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"203.0.113.9, \xff").unwrap(),
        );
        assert_eq!(
            resolve(ip("10.0.0.5"), &odd, &trusted, &XFF),
            Client::Opaque(NOT_TEXT)
        );
    }

    #[test]
    fn one_odd_hop_does_not_put_everyone_behind_a_proxy_in_one_bucket() {
        let trusted = networks(&["10.0.0.0/8"]);
        let a = headers(&[("x-forwarded-for", "garbage, 203.0.113.1")]);
        let b = headers(&[("x-forwarded-for", "203.0.113.2")]);
        let odd = headers(&[("x-forwarded-for", "_obf1")]);
        let keys: Vec<String> = [&a, &b, &odd]
            .iter()
            .map(|h| client_key_text(resolve(ip("10.0.0.5"), h, &trusted, &XFF)))
            .collect();
        assert_eq!(keys, ["203.0.113.1", "203.0.113.2", "hop:_obf1"]);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(key_text(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(key_text(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(key_text(ip("2001:db8:1:2:ffff::1")), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv6_clients_that_embed_an_ipv4_address_are_keyed_by_it() {
        // issue 29, finding 8c: every IPv4 client behind NAT64 shared `64:ff9b::/64`, and
        // a 6to4 site held 65,536 /64s
        for (v6, v4) in [
            ("64:ff9b::203.0.113.9", "203.0.113.9"),
            ("64:ff9b::198.51.100.1", "198.51.100.1"),
            ("2002:cb00:7109::1", "203.0.113.9"),
            ("2002:cb00:7109:ffff:1:2:3:4", "203.0.113.9"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
            // Teredo: the client's public address, inverted, in the last 32 bits
            ("2001:0:4136:e378:8000:63bf:34ff:8cf6", "203.0.115.9"),
        ] {
            assert_eq!(key_text(ip(v6)), v4, "{v6}");
        }
        // the same prefix with other bits set is not NAT64's
        assert_eq!(key_text(ip("64:ff9b:1::1")), "64:ff9b:1::/64");
        assert_eq!(key_text(ip("2001:db8::1")), "2001:db8::/64");
    }
}
