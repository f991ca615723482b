//! Which host a request is for (one value, which the cache keys and the origin gets), and the
//! forwarding fields that tell the origin the client's address, scheme and host.
//!
//! The proxy answers for a fixed set of public hosts. Without `PROXY_HOSTS` it is one,
//! `PUBLIC_HOST` (by default the origin's own authority), and every request is taken to be
//! for it: a client's `Host` changes nothing. With `PROXY_HOSTS`, a request is for the listed
//! host its target or `Host` names (behind a trusted proxy, its `X-Forwarded-Host`), and a
//! request for any other host is refused with `421 Misdirected Request`. Either way the
//! request reaches the cache and the origin with `Host` set to the host as configured, so the
//! key, the origin's links and redirects, and RFC 9111 §4.4 invalidation through `Location`
//! all name the same host, and no spelling of `Host` makes another entry.

use std::net::{IpAddr, SocketAddr};

use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, Version, header};

/// The name the proxy gives itself in `Via` (a pseudonym, RFC 9110 §7.6.3: it says nothing
/// of the machine).
pub const VIA_NAME: &str = "tower-redis-http";

/// The forwarding fields this proxy writes, or keys from a trusted proxy: from any other peer
/// the client's own are dropped before the cache, so that a client cannot speak for a proxy.
const FORWARDING: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// What else a proxy in front tells an application about the original request (its host,
/// scheme, path, method or client address) under names frameworks read: IIS and Symfony take
/// the path from `X-Original-URL`, Rack the scheme from `X-Forwarded-Ssl`, many apps the
/// client from `X-Real-IP`. From a peer that is not a trusted proxy they are claims nobody
/// vouches for, so they are dropped before the cache, as the forwarding fields are: the origin
/// never acts on a client's word for them (an access rule on `/admin` passed with
/// `X-Original-URL: /admin`, a rate limit keyed on a forged `X-Real-IP`). Method overrides
/// (`X-HTTP-Method-Override`) are the client's own convention, not a proxy's claim: they pass,
/// and the cache never stores an answer to a request that carries one.
const PROXY_CLAIMS: &[&str] = &[
    // the original request's host, scheme, path or method
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-method",
    "x-forwarded-protocol",
    "x-original-proto",
    "x-url-scheme",
    "x-scheme",
    "x-script-name",
    "front-end-https",
    "x-host",
    "x-original-host",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-rewrite-url",
    // the client (django-ipware, CDNs, Envoy read these)
    "x-real-ip",
    "x-real-port",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "x-forwarded",
    "forwarded-for",
    "x-original-forwarded-for",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-originating-ip",
    "x-proxyuser-ip",
    "x-envoy-external-address",
    // a client certificate's identity, as a TLS-terminating proxy vouches for it
    "x-forwarded-client-cert",
];

/// Whether `name`, with `_` read as `-` as CGI and WSGI servers read it, is one of `names`.
fn is_one_of(name: &HeaderName, names: &[&str]) -> bool {
    let name = name.as_str();
    names.iter().any(|listed| {
        listed.len() == name.len()
            && listed
                .bytes()
                .zip(name.bytes())
                .all(|(l, n)| l == n || (l == b'-' && n == b'_'))
    })
}

/// What `X-Forwarded-For` becomes on the way to the origin (`FORWARDED_FOR`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedFor {
    /// The peer's address appended to the client's list, as nginx's
    /// `$proxy_add_x_forwarded_for`: the origin must trust only the addresses its own proxies
    /// added, counted from the right. The default.
    #[default]
    Append,
    /// The peer's address alone, unless the peer is a trusted proxy (whose list is appended
    /// to): for a proxy that faces clients directly.
    Replace,
}

impl std::str::FromStr for ForwardedFor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "append" => Ok(Self::Append),
            "replace" => Ok(Self::Replace),
            _ => Err(format!("FORWARDED_FOR={text:?}: say append or replace")),
        }
    }
}

/// An address or a network such as `10.0.0.0/8`, as `TRUSTED_PROXIES` lists them (the cache
/// layer reads the same list the same way).
#[derive(Clone, Copy, Debug)]
struct Network {
    address: IpAddr,
    prefix: u32,
}

impl Network {
    fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("TRUSTED_PROXIES: {text:?} is not an address or a network");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let address = canonical(address);
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => Some(prefix)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u32>().ok())
                .filter(|&p| p <= max)
                .ok_or_else(invalid)?,
            None => max,
        };
        let network = Self { address, prefix };
        // `127.0.0.1/0` trusts every address, though it reads like one: an address with bits
        // past its prefix is a typo, and trusting the world by one is how spoofing starts
        if !network.contains_only_its_network() {
            return Err(format!(
                "TRUSTED_PROXIES: {text:?} has address bits past its /{prefix}: write the \
                 network's first address, or the address alone"
            ));
        }
        Ok(network)
    }

    /// Whether the address has no bits set past the prefix (`10.0.0.0/8`, not `10.1.2.3/8`).
    fn contains_only_its_network(&self) -> bool {
        match self.address {
            IpAddr::V4(net) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
                u32::from(net) & !mask == 0
            }
            IpAddr::V6(net) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix).unwrap_or(0);
                u128::from(net) & !mask == 0
            }
        }
    }

    fn contains(&self, address: IpAddr) -> bool {
        match (self.address, canonical(address)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`, as a dual-stack listener reports it)
/// is the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `host` is a DNS name (labels of letters, digits and inner `-`, 63 bytes each, 253
/// in all, the last not all digits) or an IP address (`[v6]` in brackets). `*`, `%`, empty
/// labels, `999.999.999.999` and `0x7f.1` parse as an authority's host, and match nothing a
/// client sends, or something else than meant.
fn is_host_name_or_address(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    host.len() <= 253
        && host.split('.').all(label)
        && host
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `port` is a port as written in a URL: 1 to 65535, digits only, no leading zero.
fn is_port(port: &str) -> bool {
    !port.starts_with('0')
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|port| port > 0)
}

/// A host the proxy answers for, as configured.
#[derive(Clone, Debug)]
struct Listed {
    host: String,
    port: Option<u16>,
    value: HeaderValue,
}

impl Listed {
    fn parse(text: &str, option: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        let invalid =
            || format!("{option}: {text:?} is not a host, as shop.example or shop.example:8080");
        let authority: Authority = text.parse().map_err(|_| invalid())?;
        let host = authority.host();
        let port = authority
            .as_str()
            .strip_prefix(host)
            .and_then(|rest| rest.strip_prefix(':'));
        if text.contains('@') || !is_host_name_or_address(host) || !port.is_none_or(is_port) {
            return Err(invalid());
        }
        Ok(Self {
            host: authority.host().to_owned(),
            port: authority.port_u16(),
            value: HeaderValue::from_str(&text).map_err(|_| invalid())?,
        })
    }

    /// Whether `host`:`port` is this host, a missing port being the scheme's default.
    fn is(&self, host: &str, port: Option<u16>, default_port: u16) -> bool {
        self.host == host && self.port.unwrap_or(default_port) == port.unwrap_or(default_port)
    }
}

/// The hosts the proxy answers for.
#[derive(Clone, Debug)]
pub struct Hosts {
    listed: Vec<Listed>,
    /// Whether the list is `PROXY_HOSTS` (others refused), rather than the one public host
    /// every request is taken to be for.
    allow_list: bool,
}

impl Hosts {
    /// `allowed` when it lists any (`PROXY_HOSTS`), else the one `public` host
    /// (`PUBLIC_HOST`), else the origin's authority.
    ///
    /// # Errors
    ///
    /// A listed host that is not a host, or both `allowed` and `public` given.
    pub fn new(
        allowed: &[String],
        public: Option<&str>,
        origin: &Authority,
    ) -> Result<Self, String> {
        if !allowed.is_empty() {
            if public.is_some() {
                return Err("set PROXY_HOSTS or PUBLIC_HOST, not both".to_owned());
            }
            let listed: Vec<Listed> = allowed
                .iter()
                .map(|host| Listed::parse(host, "PROXY_HOSTS"))
                .collect::<Result<_, _>>()?;
            for (n, host) in listed.iter().enumerate() {
                if listed[..n]
                    .iter()
                    .any(|before| before.host == host.host && before.port == host.port)
                {
                    return Err(format!(
                        "PROXY_HOSTS lists {:?} twice",
                        host.value.to_str().unwrap_or_default()
                    ));
                }
            }
            return Ok(Self {
                listed,
                allow_list: true,
            });
        }
        let one = match public {
            Some(public) => Listed::parse(public, "PUBLIC_HOST")?,
            None => Listed::parse(origin.as_str(), "the origin")?,
        };
        Ok(Self {
            listed: vec![one],
            allow_list: false,
        })
    }

    /// The `Host` a request for `claimed` (over `scheme`) goes on with, as configured; `None`
    /// when the proxy does not answer for it.
    fn resolve(&self, claimed: Option<&str>, scheme: &str) -> Option<HeaderValue> {
        if !self.allow_list {
            return self.listed.first().map(|one| one.value.clone());
        }
        let claimed = claimed?.trim().to_ascii_lowercase();
        let authority: Authority = claimed.parse().ok().filter(|_| !claimed.contains('@'))?;
        let default_port = if scheme == "https" { 443 } else { 80 };
        self.listed
            .iter()
            .find(|listed| listed.is(authority.host(), authority.port_u16(), default_port))
            .map(|listed| listed.value.clone())
    }
}

/// The proxies whose forwarding fields are believed (`TRUSTED_PROXIES`).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<Network>);

impl TrustedProxies {
    /// # Errors
    ///
    /// An entry that is neither an address nor a network.
    pub fn parse(networks: &[String]) -> Result<Self, String> {
        networks
            .iter()
            .map(|text| Network::parse(text))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(address))
    }
}

/// Why a request is refused before the cache, with the status it is answered.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub detail: &'static str,
}

/// How the proxy tells the origin about a request's way here: decided before the cache (the
/// key must agree with it), written after it, on the way to the origin, so that the cache
/// never sees this proxy's own forwarding fields on the request it keys.
#[derive(Clone, Debug)]
pub struct Forwarding {
    forwarded_for: Option<HeaderValue>,
    proto: &'static str,
    host: HeaderValue,
    via: HeaderValue,
}

impl Forwarding {
    /// Writes `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `Via` into the
    /// request going to the origin.
    pub fn write(&self, headers: &mut HeaderMap) {
        match &self.forwarded_for {
            Some(chain) => headers.insert("x-forwarded-for", chain.clone()),
            None => headers.remove("x-forwarded-for"),
        };
        headers.insert("x-forwarded-proto", HeaderValue::from_static(self.proto));
        headers.insert("x-forwarded-host", self.host.clone());
        headers.insert(header::VIA, self.via.clone());
    }
}

/// Readies `request` for the cache: the host it is for set as `Host` (the target made
/// origin-form), the client's forwarding fields dropped unless a trusted proxy sent them;
/// and what the origin will be told. Hop-by-hop fields are stripped beforehand.
///
/// # Errors
///
/// `400` for a request with several `Host` fields (RFC 9112 §3.2), `421` for a host the
/// proxy does not answer for.
pub fn prepare<B>(
    request: &mut Request<B>,
    hosts: &Hosts,
    proxies: &TrustedProxies,
    forwarded_for: ForwardedFor,
) -> Result<Forwarding, Refused> {
    if request.headers().get_all(header::HOST).iter().count() > 1 {
        return Err(Refused {
            status: StatusCode::BAD_REQUEST,
            detail: "A request has one Host.",
        });
    }
    let peer = request
        .extensions()
        .get::<SocketAddr>()
        .map(|peer| canonical(peer.ip()));
    let trusted = peer.is_some_and(|peer| proxies.contains(peer));
    let headers = request.headers_mut();
    // names that CGI and WSGI servers read as the forwarding fields (`X_Forwarded_For`):
    // nobody writes them but a client speaking for a proxy; and the other claims, unless a
    // trusted proxy made them
    let unvouched: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            (name.as_str().contains('_') && is_one_of(name, &FORWARDING))
                || (!trusted && is_one_of(name, PROXY_CLAIMS))
        })
        .cloned()
        .collect();
    for name in unvouched {
        headers.remove(name);
    }
    // the client's own list is kept when appending, or when a trusted proxy wrote it
    let chain = (trusted || forwarded_for == ForwardedFor::Append)
        .then(|| joined(headers, "x-forwarded-for"))
        .flatten();
    let proto = match trusted
        .then(|| single_token(headers, "x-forwarded-proto"))
        .flatten()
    {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let claimed = trusted
        .then(|| single_token(headers, "x-forwarded-host"))
        .flatten()
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .map(str::to_owned)
        });
    let host = hosts.resolve(claimed.as_deref(), proto).ok_or(Refused {
        status: StatusCode::MISDIRECTED_REQUEST,
        detail: "This proxy does not serve that host.",
    })?;
    let via = appended(
        request.headers(),
        header::VIA.as_str(),
        &format!("{} {VIA_NAME}", protocol(request.version())),
    );
    let forwarded_for = match peer {
        Some(peer) => {
            let peer = peer.to_string();
            Some(match chain {
                Some(chain) => format!("{chain}, {peer}"),
                None => peer,
            })
        }
        None => chain,
    }
    .and_then(|chain| HeaderValue::from_str(&chain).ok());

    let headers = request.headers_mut();
    if trusted {
        // the trusted proxy's scheme, as the cache keys it; its host is now `Host`
        headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
        headers.remove("x-forwarded-host");
    } else {
        for name in FORWARDING {
            headers.remove(name);
        }
    }
    headers.insert(header::HOST, host.clone());
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
    Ok(Forwarding {
        forwarded_for,
        proto,
        host,
        via,
    })
}

/// `Via`'s received-protocol for a message of `version` (RFC 9110 §7.6.3).
pub fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `name`'s lines joined by `, `, with `member` after them: how a list field grows by one.
pub fn appended(headers: &HeaderMap, name: &str, member: &str) -> HeaderValue {
    let value = match joined(headers, name) {
        Some(list) => format!("{list}, {member}"),
        None => member.to_owned(),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| {
        HeaderValue::from_str(member).expect("the member is built from valid header text")
    })
}

/// `name`'s lines joined by `, `; `None` when it has none, or none in visible ASCII.
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let lines: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

/// The value of `name` when it occurs once and is a single token (no list), as the cache
/// layer reads a trusted proxy's `X-Forwarded-Host` and `-Proto`.
fn single_token<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?.to_str().ok()?.trim();
    (values.next().is_none() && !value.is_empty() && !value.contains([',', ' '])).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Authority {
        Authority::from_static("127.0.0.1:8000")
    }

    fn request(peer: &str, pairs: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::get("/p?q=1").body(()).unwrap();
        for (name, value) in pairs {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        request
            .extensions_mut()
            .insert(peer.parse::<SocketAddr>().unwrap());
        request
    }

    fn written(forwarding: &Forwarding) -> HeaderMap {
        let mut headers = HeaderMap::new();
        forwarding.write(&mut headers);
        headers
    }

    #[test]
    fn one_public_host_is_every_request_s() {
        let hosts = Hosts::new(&[], None, &origin()).unwrap();
        let proxies = TrustedProxies::default();
        for host in ["127.0.0.1:8000", "evil.example", "EVIL.example:80"] {
            let mut request = request("192.0.2.1:5000", &[("host", host)]);
            let forwarding = prepare(&mut request, &hosts, &proxies, ForwardedFor::Append).unwrap();
            assert_eq!(request.headers()["host"], "127.0.0.1:8000", "{host}");
            assert_eq!(written(&forwarding)["x-forwarded-host"], "127.0.0.1:8000");
        }
        let public = Hosts::new(&[], Some("Shop.Example"), &origin()).unwrap();
        let mut request = request("192.0.2.1:5000", &[("host", "other")]);
        prepare(&mut request, &public, &proxies, ForwardedFor::Append).unwrap();
        assert_eq!(request.headers()["host"], "shop.example");
    }

    #[test]
    fn listed_hosts_are_allowed_in_any_spelling_and_others_misdirected() {
        let listed = ["shop.example".to_owned(), "api.example:8080".to_owned()];
        let hosts = Hosts::new(&listed, None, &origin()).unwrap();
        let proxies = TrustedProxies::default();
        for (host, to) in [
            ("shop.example", Some("shop.example")),
            ("SHOP.example:80", Some("shop.example")),
            ("user@shop.example", None),
            ("shop.example:8080", None),
            ("api.example:8080", Some("api.example:8080")),
            ("api.example", None),
            ("evil.example", None),
            ("", None),
        ] {
            let mut request = request("192.0.2.1:5000", &[("host", host)]);
            let prepared = prepare(&mut request, &hosts, &proxies, ForwardedFor::Append);
            match to {
                Some(to) => {
                    assert!(prepared.is_ok(), "{host}");
                    assert_eq!(request.headers()["host"], to, "{host}");
                }
                None => assert_eq!(
                    prepared.unwrap_err().status,
                    StatusCode::MISDIRECTED_REQUEST,
                    "{host}"
                ),
            }
        }
        // an absolute-form target names the host, whatever Host says (RFC 9112 §3.2.2)
        let mut absolute = request("192.0.2.1:5000", &[("host", "shop.example")]);
        *absolute.uri_mut() = "http://evil.example/p".parse().unwrap();
        let refused = prepare(&mut absolute, &hosts, &proxies, ForwardedFor::Append);
        assert_eq!(refused.unwrap_err().status, StatusCode::MISDIRECTED_REQUEST);
        let mut two = request("192.0.2.1:5000", &[("host", "shop.example"), ("host", "x")]);
        let refused = prepare(&mut two, &hosts, &proxies, ForwardedFor::Append);
        assert_eq!(refused.unwrap_err().status, StatusCode::BAD_REQUEST);
        assert!(Hosts::new(&listed, Some("shop.example"), &origin()).is_err());
        for bad in [
            "a@b",
            "*",
            "shop.example:99999",
            "shop%2eexample",
            "[::1",
            "",
            "shop.example:0",
            "shop.example:+80",
            "shop.example:080",
            ".",
            "..",
            "-",
            "shop..example",
            "-shop-.example",
            "shop.example.",
            "999.999.999.999",
            "0x7f.1",
            "shop_1.example",
        ] {
            assert!(
                Hosts::new(&[bad.to_owned()], None, &origin()).is_err(),
                "PROXY_HOSTS={bad}"
            );
            assert!(
                Hosts::new(&[], Some(bad), &origin()).is_err(),
                "PUBLIC_HOST={bad}"
            );
        }
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(Hosts::new(&[long_label], None, &origin()).is_err());
        for good in [
            "[::1]:8080",
            "127.0.0.1",
            "shop.example:65535",
            "xn--bcher-kva.example",
        ] {
            assert!(
                Hosts::new(&[good.to_owned()], None, &origin()).is_ok(),
                "{good}"
            );
        }
        let twice = ["shop.example".to_owned(), "SHOP.example".to_owned()];
        assert!(Hosts::new(&twice, None, &origin()).is_err());
        for bad in [
            "127.0.0.1/0",
            "10.1.2.3/8",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "::1/0",
        ] {
            assert!(
                TrustedProxies::parse(&[bad.to_owned()]).is_err(),
                "TRUSTED_PROXIES={bad}"
            );
        }
        for good in ["10.0.0.0/8", "0.0.0.0/0", "192.0.2.7", "2001:db8::/32"] {
            assert!(TrustedProxies::parse(&[good.to_owned()]).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_client_s_forwarding_fields_never_reach_the_origin_as_a_proxy_s() {
        let hosts = Hosts::new(&[], None, &origin()).unwrap();
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".to_owned()]).unwrap();
        let claims = [
            ("x-forwarded-for", "198.51.100.1"),
            ("x_forwarded_for", "198.51.100.2"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-prefix", "/evil"),
            ("forwarded", "for=198.51.100.3"),
            ("via", "1.0 front"),
        ];
        let mut appended = request("192.0.2.1:5000", &claims);
        let forwarding = prepare(&mut appended, &hosts, &proxies, ForwardedFor::Append).unwrap();
        for name in [
            "x_forwarded_for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "forwarded",
        ] {
            assert!(!appended.headers().contains_key(name), "{name}");
        }
        assert!(!appended.headers().contains_key("x-forwarded-prefix"));
        assert_eq!(appended.uri(), "/p?q=1");
        let out = written(&forwarding);
        assert_eq!(out["x-forwarded-for"], "198.51.100.1, 192.0.2.1");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["via"], "1.0 front, 1.1 tower-redis-http");

        let mut replaced = request("192.0.2.1:5000", &claims);
        let forwarding = prepare(&mut replaced, &hosts, &proxies, ForwardedFor::Replace).unwrap();
        assert_eq!(written(&forwarding)["x-forwarded-for"], "192.0.2.1");

        // a trusted proxy's fields stand, and its host and scheme are the request's
        let listed = Hosts::new(&["shop.example".to_owned()], None, &origin()).unwrap();
        let mut trusted = request(
            "[::ffff:10.1.2.3]:5000",
            &[
                ("host", "internal"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-host", "shop.example"),
                ("x-forwarded-proto", "HTTPS"),
            ],
        );
        let forwarding = prepare(&mut trusted, &listed, &proxies, ForwardedFor::Replace).unwrap();
        assert_eq!(trusted.headers()["host"], "shop.example");
        assert_eq!(trusted.headers()["x-forwarded-proto"], "https");
        assert!(!trusted.headers().contains_key("x-forwarded-host"));
        let out = written(&forwarding);
        assert_eq!(out["x-forwarded-for"], "203.0.113.7, 10.1.2.3");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-forwarded-host"], "shop.example");
    }

    /// The names frameworks read the original request's path, scheme, method or client from
    /// reach the origin from a trusted proxy only, in either spelling; a method override is
    /// the client's own and passes.
    #[test]
    fn other_claims_about_the_request_are_believed_from_a_trusted_proxy_alone() {
        let hosts = Hosts::new(&[], None, &origin()).unwrap();
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".to_owned()]).unwrap();
        let claims = [
            ("x-original-url", "/admin"),
            ("x_rewrite_url", "/admin"),
            ("x-real-ip", "127.0.0.1"),
            ("true-client-ip", "127.0.0.1"),
            ("x-forwarded-ssl", "on"),
            ("x_url_scheme", "https"),
            ("x-http-method-override", "DELETE"),
        ];
        let mut from_client = request("192.0.2.1:5000", &claims);
        prepare(&mut from_client, &hosts, &proxies, ForwardedFor::Append).unwrap();
        for (name, _) in &claims[..6] {
            assert!(!from_client.headers().contains_key(*name), "{name}");
        }
        assert_eq!(from_client.headers()["x-http-method-override"], "DELETE");

        let mut from_proxy = request("10.0.0.9:5000", &claims);
        prepare(&mut from_proxy, &hosts, &proxies, ForwardedFor::Append).unwrap();
        for (name, value) in claims {
            assert_eq!(from_proxy.headers()[name], value, "{name}");
        }
    }
}
