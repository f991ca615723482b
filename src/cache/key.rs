//! Cache keys: the URL part (readable, hashed only when long or when the host is not plain)
//! and the variant part (a hash of the varied request headers).

use std::borrow::Cow;
use std::hash::{BuildHasher, Hash, Hasher};

use http::Uri;
use http::header::{self, HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use crate::hex::hex_digest;

/// The forwarding headers a trusted proxy sets: keyed from such a proxy, refused otherwise.
pub(crate) const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// Whether the query string is keyed as received or with its parameters sorted.
///
/// # Example
///
/// ```
/// use tower_redis_http::cache::QueryOrder;
///
/// assert_eq!(QueryOrder::default(), QueryOrder::AsReceived);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum QueryOrder {
    /// `?b=2&a=1` and `?a=1&b=2` are different entries, as in Django. Default.
    #[default]
    AsReceived,
    /// Parameters are sorted (bytewise, undecoded) before keying, so both share one entry.
    Sorted,
}

/// URLs longer than this are keyed by their hash, so keys stay bounded.
const MAX_URL_IN_KEY: usize = 512;

/// The URL part of a request's keys: `scheme://host/path?query`, readable (and matchable by
/// `SCAN` patterns) as Django's keys are not; hashed to `#<128-bit hex>` when longer than
/// [`MAX_URL_IN_KEY`] or when the host holds other than host characters. A URI holds no `#`,
/// so the two forms never meet.
///
/// With `forwarded` (the request came from a trusted proxy), a single plain
/// `X-Forwarded-Proto` and `X-Forwarded-Host` stand for the scheme and host, and whatever
/// else the forwarding headers hold (`Forwarded`, `X-Forwarded-Port`, `X-Forwarded-Prefix`,
/// lists) is hashed into the host part: every value an application may build links from is
/// in the key.
pub(crate) fn url_key(
    uri: &Uri,
    headers: &HeaderMap,
    default_scheme: &str,
    query: QueryOrder,
    forwarded: bool,
) -> String {
    url_parts(uri, headers, default_scheme, query, forwarded).key()
}

/// The bytes a plain host is made of: letters, digits and `-._:[]`.
const HOST_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']');
        byte += 1;
    }
    table
};

/// One spelling for every way of writing the same plain host: letters in lower case, no
/// trailing dot, the port as a number and left out when it is the scheme's default
/// (`SHOP.Example.:0080` is `shop.example:80`, which for `http` is `shop.example`). Two
/// spellings would be two entries, and an invalidation of one would leave the others served.
/// Anything but a plain host is left as it came (it is keyed by its hash).
pub(crate) fn normal_host<'a>(host: &'a [u8], scheme: &str) -> Cow<'a, [u8]> {
    if host.is_empty() || !host.iter().all(|&b| HOST_BYTE[usize::from(b)]) {
        return Cow::Borrowed(host);
    }
    let Ok(text) = std::str::from_utf8(host) else {
        return Cow::Borrowed(host);
    };
    let (name, port) = match text.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((address, "")) => (&text[..address.len() + 2], None),
            Some((address, rest)) => match rest.strip_prefix(':') {
                Some(port) => (&text[..address.len() + 2], Some(port)),
                None => return Cow::Borrowed(host),
            },
            None => return Cow::Borrowed(host),
        },
        None => match text.split_once(':') {
            Some((name, port)) if !port.contains(':') => (name, Some(port)),
            Some(_) => return Cow::Borrowed(host),
            None => (text, None),
        },
    };
    let written_port = port;
    let port = match port {
        // `host:` is the host with no port (RFC 3986 §3.2.3)
        Some("") | None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(port) => Some(port),
            Err(_) => return Cow::Borrowed(host),
        },
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    // the usual case, already in its one spelling: no copy on the request path
    let port_is_normal = match (written_port, port) {
        (None, _) => true,
        (Some(written), Some(port)) => port != default_port && !written.starts_with('0'),
        (Some(_), None) => false,
    };
    if port_is_normal && !name.ends_with('.') && !name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Cow::Borrowed(host);
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let port = port.filter(|&port| port != default_port);
    let mut normal = name.to_ascii_lowercase();
    if let Some(port) = port {
        normal.push(':');
        normal.push_str(itoa::Buffer::new().format(port));
    }
    if normal.as_bytes() == host {
        Cow::Borrowed(host)
    } else {
        Cow::Owned(normal.into_bytes())
    }
}

/// What a request's URL key is made of, borrowed from the request where it can be: the key
/// ([`UrlParts::key`]) and its in-process identity ([`UrlParts::identity`]) come from it.
pub(crate) struct UrlParts<'a> {
    scheme: &'a str,
    host: Cow<'a, [u8]>,
    path: &'a str,
    query: Option<Cow<'a, str>>,
}

/// The parts of [`url_key`], without joining them.
pub(crate) fn url_parts<'a>(
    uri: &'a Uri,
    headers: &'a HeaderMap,
    default_scheme: &'a str,
    query: QueryOrder,
    forwarded: bool,
) -> UrlParts<'a> {
    let scheme = forwarded
        .then(|| forwarded_scheme(headers))
        .flatten()
        .unwrap_or_else(|| uri.scheme_str().unwrap_or(default_scheme));
    // the host the application sees: the URI's authority, else Host; X-Forwarded-Host only
    // from a trusted proxy
    let forwarded_host = forwarded
        .then(|| single_token(headers, "x-forwarded-host"))
        .flatten()
        .map(str::as_bytes);
    let host = match forwarded_host {
        Some(host) => host,
        None => uri
            .authority()
            .map(|authority| authority.as_str().as_bytes())
            .or_else(|| headers.get(header::HOST).map(|h| h.as_bytes()))
            .unwrap_or_default(),
    };
    let host = normal_host(host, scheme);
    // forwarding values that are not a plain scheme or host: appended after a space, which
    // makes the host non-plain, so the URL is keyed by its hash
    let host = match forwarded.then(|| forwarding_rest(headers)).flatten() {
        Some(rest) => {
            let mut both = host.into_owned();
            both.push(b' ');
            both.extend_from_slice(&rest);
            Cow::Owned(both)
        }
        None => host,
    };
    let query = match (uri.query(), query) {
        (Some(q), QueryOrder::Sorted) => {
            let mut pairs: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
            pairs.sort_unstable();
            Some(Cow::Owned(pairs.join("&")))
        }
        (q, _) => q.map(Cow::Borrowed),
    };
    UrlParts {
        scheme,
        host,
        path: uri.path(),
        query,
    }
}

impl UrlParts<'_> {
    /// The URL without the query parameters `names` (names compared percent-decoded), such
    /// as those an auth layer reads tokens from: a token is never part of a key in the store.
    pub(crate) fn without_parameters(mut self, names: &[std::sync::Arc<str>]) -> Self {
        let Some(query) = &self.query else {
            return self;
        };
        let unkeyed = |pair: &&str| {
            form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_some_and(|(name, _)| names.iter().any(|unkeyed| **unkeyed == *name))
        };
        if !query.split('&').any(|pair| unkeyed(&pair)) {
            return self;
        }
        let kept = query
            .split('&')
            .filter(|pair| !unkeyed(pair))
            .collect::<Vec<_>>()
            .join("&");
        self.query = (!kept.is_empty()).then_some(Cow::Owned(kept));
        self
    }

    /// A Host of anything but host characters is keyed by the hash of its raw bytes, never
    /// rewritten: two different Host values must never share an entry (cache poisoning).
    fn plain_host(&self) -> Option<&str> {
        let plain = self.host.iter().all(|&b| HOST_BYTE[usize::from(b)]);
        plain.then(|| std::str::from_utf8(&self.host).unwrap_or_default())
    }

    fn readable_len(&self) -> usize {
        self.scheme.len()
            + 3
            + self.host.len()
            + self.path.len()
            + self.query.as_ref().map_or(0, |q| q.len() + 1)
    }

    /// The URL key.
    pub(crate) fn key(&self) -> String {
        let len = self.readable_len();
        let host = match self.plain_host() {
            Some(host) if len <= MAX_URL_IN_KEY => host,
            _ => {
                let mut hasher = Sha256::new();
                hasher.update(self.scheme.as_bytes());
                hasher.update(b"://");
                hasher.update(self.host.to_ascii_lowercase());
                hasher.update(self.path.as_bytes());
                if let Some(q) = &self.query {
                    hasher.update(b"?");
                    hasher.update(q.as_bytes());
                }
                let mut key = String::with_capacity(33);
                key.push('#');
                key.push_str(&hex_digest(&hasher.finalize()[..16]));
                return key;
            }
        };
        let mut key = String::with_capacity(len);
        key.push_str(self.scheme);
        key.push_str("://");
        // a plain host is ASCII: copied whole, then lowercased in place
        let start = key.len();
        key.push_str(host);
        key[start..].make_ascii_lowercase();
        key.push_str(self.path);
        if let Some(q) = &self.query {
            key.push('?');
            key.push_str(q);
        }
        key
    }

    /// A 64-bit identity of the key under `hasher`, computed without building the key: equal
    /// keys have equal identities, different keys collide as rarely as the hash allows. The
    /// key is a function of the scheme, the lowercased host, the path and the query (readable
    /// or hashed), so those are hashed as they are, the host lowercased only when it has an
    /// uppercase byte.
    pub(crate) fn identity(&self, hasher: &impl BuildHasher) -> u64 {
        let mut state = hasher.build_hasher();
        // lengths keep the parts apart: `http` + `shop` is not `https` + `hop`
        state.write_usize(self.scheme.len());
        state.write(self.scheme.as_bytes());
        state.write_usize(self.host.len());
        if self.host.iter().any(u8::is_ascii_uppercase) {
            state.write(&self.host.to_ascii_lowercase());
        } else {
            state.write(&self.host);
        }
        // a path holds no `?`, so the query's mark keeps it apart from the path
        state.write(self.path.as_bytes());
        if let Some(query) = &self.query {
            state.write_u8(b'?');
            state.write(query.as_bytes());
        }
        state.finish()
    }
}

/// The value of `name` when it occurs once and is a single token (no list).
fn single_token<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?.to_str().ok()?.trim();
    (values.next().is_none() && !value.is_empty() && !value.contains([',', ' '])).then_some(value)
}

/// A single `X-Forwarded-Proto` of `http` or `https`, lowercased.
fn forwarded_scheme(headers: &HeaderMap) -> Option<&'static str> {
    match single_token(headers, "x-forwarded-proto")? {
        scheme if scheme.eq_ignore_ascii_case("https") => Some("https"),
        scheme if scheme.eq_ignore_ascii_case("http") => Some("http"),
        _ => None,
    }
}

/// The forwarding values not taken as scheme and host, as `name=value` lines, or `None`
/// when there are none.
fn forwarding_rest(headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut rest = Vec::new();
    for &name in FORWARDING {
        let taken = match name {
            "x-forwarded-proto" => forwarded_scheme(headers).is_some(),
            "x-forwarded-host" => single_token(headers, name).is_some(),
            _ => false,
        };
        if taken {
            continue;
        }
        for value in headers.get_all(name) {
            rest.extend_from_slice(name.as_bytes());
            rest.push(b'=');
            rest.extend_from_slice(value.as_bytes());
            rest.push(b'\n');
        }
    }
    (!rest.is_empty()).then_some(rest)
}

/// The variant part: the names the response varies on and the request's values for them,
/// normalised as RFC 9111 §4.1 lets a cache match selecting fields (see [`selecting_value`]);
/// absent and empty headers differ.
pub(crate) fn variant_hash(vary: &[HeaderName], headers: &HeaderMap) -> Cow<'static, str> {
    if vary.is_empty() {
        return Cow::Borrowed("-");
    }
    let mut hasher = Sha256::new();
    for name in vary {
        hasher.update(name.as_str().as_bytes());
        match selecting_value(name, headers) {
            Some(value) => {
                hasher.update(b"\x00");
                hasher.update(&value);
            }
            None => hasher.update(b"\x01"),
        }
        hasher.update(b"\x02");
    }
    Cow::Owned(hex_digest(&hasher.finalize()[..16]))
}

/// A request's value for a selecting field, in a form two requests share exactly when RFC
/// 9111 §4.1 lets their values match; `None` when the field is absent.
///
/// - Every field: its lines joined by commas (combining lines is allowed for any field sent
///   more than once), each line without surrounding whitespace.
/// - The content negotiation lists (`Accept`, `Accept-Charset`, `Accept-Encoding`,
///   `Accept-Language`): members without whitespace around commas and semicolons.
/// - `Accept-Encoding` and `Accept-Language`, whose members are case-insensitive tokens
///   ranked by weight: lowercased, `q` written in its shortest form (`q=1` dropped), and
///   sorted by weight, then by name. The order of equal weights is taken as not significant,
///   as RFC 9110 §12.4.2 defines preference by weight alone; `en, fr` and `fr, en` share one
///   entry.
fn selecting_value(name: &HeaderName, headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let weighted = *name == header::ACCEPT_LANGUAGE || *name == header::ACCEPT_ENCODING;
    let list = weighted || *name == header::ACCEPT || *name == header::ACCEPT_CHARSET;
    let texts: Option<Vec<&str>> = headers
        .get_all(name)
        .iter()
        .map(|line| line.to_str().ok())
        .collect();
    match texts {
        Some(texts) if list => Some(normalised_list(&texts, weighted).into_bytes()),
        // a field of another syntax (or not text): only the whitespace around each line
        _ => {
            let mut joined = Vec::new();
            for (i, line) in lines.enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                joined.extend_from_slice(line.as_bytes().trim_ascii());
            }
            Some(joined)
        }
    }
}

/// The members of a negotiation list, as [`selecting_value`] describes.
fn normalised_list(lines: &[&str], weighted: bool) -> String {
    let mut members: Vec<(u16, String)> = lines
        .iter()
        .flat_map(|line| super::directives::split_list(line))
        .map(|member| {
            let mut weight = 1000;
            let mut parts = Vec::new();
            for (i, part) in member.split(';').map(str::trim).enumerate() {
                if part.is_empty() {
                    continue;
                }
                if weighted {
                    let part = part.to_ascii_lowercase();
                    match part.strip_prefix("q=").filter(|_| i > 0) {
                        Some(q) => weight = qvalue(q).unwrap_or(weight),
                        None => parts.push(part),
                    }
                } else {
                    parts.push(part.to_owned());
                }
            }
            (weight, parts.join(";"))
        })
        .collect();
    if weighted {
        members.sort_by(|(wa, a), (wb, b)| wb.cmp(wa).then_with(|| a.cmp(b)));
    }
    let mut out = String::new();
    for (i, (weight, member)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(member);
        if weighted && *weight < 1000 {
            out.push_str(";q=");
            out.push_str(&format!("{:.3}", f64::from(*weight) / 1000.0));
            while out.ends_with('0') {
                out.pop();
            }
            if out.ends_with('.') {
                out.pop();
            }
        }
    }
    out
}

/// A weight (RFC 9110 §12.4.2: `0`, `1`, up to three decimals) in thousandths; `None` when it
/// is not one, and the member keeps the default weight.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, decimals) = text.split_once('.').unwrap_or((text, ""));
    if decimals.len() > 3
        || !matches!(whole, "0" | "1")
        || !decimals.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut thousandths = u16::from(whole == "1") * 1000;
    for (digit, scale) in decimals.bytes().zip([100, 10, 1]) {
        thousandths += u16::from(digit - b'0') * scale;
    }
    (thousandths <= 1000).then_some(thousandths)
}

/// Keys under the layer's prefix. The URL hash is a `{hash tag}`, so an entry and its Vary
/// list sit in one Redis Cluster slot.
pub(crate) fn vary_key(prefix: &str, url: &str) -> String {
    entry_key(prefix, url, "vary")
}

pub(crate) fn entry_key(prefix: &str, url: &str, variant: &str) -> String {
    // built by hand: `format!` costs as much as the rest of a memory-store hit's key work
    let mut key = String::with_capacity(prefix.len() + url.len() + variant.len() + 3);
    key.push_str(prefix);
    key.push('{');
    key.push_str(url);
    key.push_str("}:");
    key.push_str(variant);
    key
}

/// Where the pieces of a variant's partial responses are kept, beside its complete entry.
pub(crate) fn partial_key(entry_key: &str) -> String {
    let mut key = String::with_capacity(entry_key.len() + 8);
    key.push_str(entry_key);
    key.push_str(":partial");
    key
}

/// The set of a URL's entry keys, so that every variant can be invalidated at once.
pub(crate) fn index_key(prefix: &str, url: &str) -> String {
    entry_key(prefix, url, "index")
}

/// The cross-process stampede lock of one entry key.
pub(crate) fn lock_key(entry_key: &str) -> String {
    let mut key = String::with_capacity(entry_key.len() + 5);
    key.push_str(entry_key);
    key.push_str(":lock");
    key
}

/// A learned Vary list as stored: names joined by commas.
pub(crate) fn encode_vary(names: &[HeaderName]) -> String {
    names
        .iter()
        .map(HeaderName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn decode_vary(text: &[u8]) -> Option<Vec<HeaderName>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(|&b| b == b',')
        .map(|name| HeaderName::from_bytes(name).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling of one host is one key (the adversary's review of issue 35): each
    /// spelling was an entry of its own, and an invalidation of one left the others served.
    #[test]
    fn every_spelling_of_a_host_is_one() {
        let one = |host: &str, scheme: &str| {
            String::from_utf8(normal_host(host.as_bytes(), scheme).into_owned()).unwrap()
        };
        for spelling in [
            "shop.example",
            "SHOP.Example",
            "shop.example.",
            "shop.example:80",
            "shop.example:0080",
            "Shop.Example.:80",
            "shop.example:",
        ] {
            assert_eq!(one(spelling, "http"), "shop.example", "{spelling}");
        }
        assert_eq!(one("shop.example:443", "https"), "shop.example");
        assert_eq!(one("shop.example:443", "http"), "shop.example:443");
        assert_eq!(one("shop.example:08080", "http"), "shop.example:8080");
        assert_eq!(one("[::1]:80", "http"), "[::1]");
        assert_eq!(one("[::1]:0443", "http"), "[::1]:443");
        // not plain, or not a port: left as it came, to be keyed by its hash
        for raw in [
            "shop.example:99999",
            "shop.example:x",
            "a:b:c",
            "evil host",
            "[::1",
        ] {
            assert_eq!(one(raw, "http"), raw);
        }
        assert!(matches!(
            normal_host(b"shop.example", "http"),
            Cow::Borrowed(_)
        ));
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut request = http::Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn key(uri: &str, headers: &[(&str, &str)], query: QueryOrder) -> String {
        let parts = parts(uri, headers);
        url_key(&parts.uri, &parts.headers, "http", query, false)
    }

    fn forwarded_key(headers: &[(&str, &str)]) -> String {
        let parts = parts("/a?x=1", headers);
        url_key(
            &parts.uri,
            &parts.headers,
            "http",
            QueryOrder::AsReceived,
            true,
        )
    }

    /// The memo's identity follows the key: equal keys (the host's case aside) are one URL,
    /// different keys are not, in the readable and in the hashed form alike.
    #[test]
    fn a_url_s_identity_follows_its_key() {
        let hasher = foldhash::fast::RandomState::default();
        let identity = |uri: &str, host: &str| {
            let parts = parts(uri, &[("host", host)]);
            url_parts(
                &parts.uri,
                &parts.headers,
                "http",
                QueryOrder::AsReceived,
                false,
            )
            .identity(&hasher)
        };
        let long = format!("/{}", "a".repeat(600));
        assert_eq!(
            identity("/a?x=1", "Shop.Example"),
            identity("/a?x=1", "shop.example")
        );
        assert_eq!(
            identity(&long, "shop.example"),
            identity(&long, "SHOP.example")
        );
        let different = [
            identity("/a?x=1", "shop.example"),
            identity("/a?x=2", "shop.example"),
            identity("/a", "shop.example"),
            identity("/a?", "shop.example"),
            identity("/a?x=1", "shop.example:8080"),
            identity("/ab?", "shop.example"),
            identity("/a?b", "shop.example"),
            identity("/a?x=1", "shop.example evil"),
            identity(&long, "shop.example"),
            identity(&format!("{long}b"), "shop.example"),
        ];
        for (i, one) in different.iter().enumerate() {
            for other in &different[i + 1..] {
                assert_ne!(one, other);
            }
        }
    }

    #[test]
    fn a_trusted_proxy_s_forwarded_scheme_and_host_are_the_key_s() {
        let host = ("host", "10.0.0.5:8080");
        assert_eq!(
            forwarded_key(&[
                host,
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "Shop.Example")
            ]),
            "https://shop.example/a?x=1"
        );
        // without them, as a direct request
        assert_eq!(forwarded_key(&[host]), "http://10.0.0.5:8080/a?x=1");
        // anything else they hold is in the key, hashed: each value its own entry
        let others = [
            vec![host, ("x-forwarded-host", "a.example, b.example")],
            vec![
                host,
                ("x-forwarded-host", "shop.example"),
                ("x-forwarded-prefix", "/p"),
            ],
            vec![
                host,
                ("x-forwarded-host", "shop.example"),
                ("x-forwarded-port", "8443"),
            ],
            vec![host, ("forwarded", "host=shop.example;proto=https")],
            vec![host, ("x-forwarded-proto", "gopher")],
        ];
        let keys: Vec<String> = others.iter().map(|h| forwarded_key(h)).collect();
        for (key, headers) in keys.iter().zip(&others) {
            assert!(key.starts_with('#'), "{headers:?}: {key}");
        }
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn url_key_covers_scheme_host_path_and_query() {
        let base = key(
            "/a?x=1",
            &[("host", "shop.example")],
            QueryOrder::AsReceived,
        );
        assert_eq!(base, "http://shop.example/a?x=1");
        assert_eq!(
            base,
            key(
                "/a?x=1",
                &[("host", "SHOP.example")],
                QueryOrder::AsReceived
            )
        );
        assert_eq!(
            base,
            key("http://shop.example/a?x=1", &[], QueryOrder::AsReceived)
        );
        for other in [
            key(
                "/a?x=2",
                &[("host", "shop.example")],
                QueryOrder::AsReceived,
            ),
            key(
                "/b?x=1",
                &[("host", "shop.example")],
                QueryOrder::AsReceived,
            ),
            key("/a", &[("host", "shop.example")], QueryOrder::AsReceived),
            key(
                "/a?x=1",
                &[("host", "evil.example")],
                QueryOrder::AsReceived,
            ),
            key("https://shop.example/a?x=1", &[], QueryOrder::AsReceived),
        ] {
            assert_ne!(base, other);
        }
        // X-Forwarded-Host is never part of the key
        assert_eq!(
            base,
            key(
                "/a?x=1",
                &[("host", "shop.example"), ("x-forwarded-host", "evil")],
                QueryOrder::AsReceived
            )
        );
    }

    #[test]
    fn long_urls_are_keyed_by_their_hash() {
        let long = format!("/{}", "a".repeat(600));
        let hashed = key(&long, &[("host", "h")], QueryOrder::AsReceived);
        assert_eq!(hashed.len(), 33);
        assert!(hashed.starts_with('#'));
        let other = key(
            &format!("{long}b"),
            &[("host", "h")],
            QueryOrder::AsReceived,
        );
        assert_ne!(hashed, other);
        assert_eq!(hashed, key(&long, &[("host", "H")], QueryOrder::AsReceived));
    }

    #[test]
    fn a_host_of_other_than_host_characters_is_hashed_not_rewritten() {
        let clean = key("/a", &[("host", "shop.example")], QueryOrder::AsReceived);
        for odd in [
            "shop.exa mple",
            "shop.example\t",
            "shop%2eexample",
            "shop.example/x",
        ] {
            let odd_key = key("/a", &[("host", odd)], QueryOrder::AsReceived);
            assert!(odd_key.starts_with('#'), "{odd:?}: {odd_key}");
            assert_ne!(odd_key, clean, "{odd:?}");
        }
        assert_eq!(
            key("/a", &[("host", "[::1]:8080")], QueryOrder::AsReceived),
            "http://[::1]:8080/a"
        );
    }

    #[test]
    fn query_order_is_normalized_only_when_asked() {
        let h = &[("host", "h")];
        assert_ne!(
            key("/?b=2&a=1", h, QueryOrder::AsReceived),
            key("/?a=1&b=2", h, QueryOrder::AsReceived)
        );
        assert_eq!(
            key("/?b=2&a=1", h, QueryOrder::Sorted),
            key("/?a=1&b=2", h, QueryOrder::Sorted)
        );
        assert_ne!(
            key("/?a=1&b=2", h, QueryOrder::Sorted),
            key("/?a=1&b=3", h, QueryOrder::Sorted)
        );
    }

    #[test]
    fn variant_hash_depends_on_the_varied_values_only() {
        let vary = [HeaderName::from_static("accept-language")];
        let mut en = HeaderMap::new();
        en.insert("accept-language", "en".parse().unwrap());
        en.insert("user-agent", "a".parse().unwrap());
        let mut en2 = en.clone();
        en2.insert("user-agent", "b".parse().unwrap());
        let mut fr = HeaderMap::new();
        fr.insert("accept-language", "fr".parse().unwrap());
        let mut empty = HeaderMap::new();
        empty.insert("accept-language", "".parse().unwrap());
        assert_eq!(variant_hash(&vary, &en), variant_hash(&vary, &en2));
        assert_ne!(variant_hash(&vary, &en), variant_hash(&vary, &fr));
        assert_ne!(
            variant_hash(&vary, &HeaderMap::new()),
            variant_hash(&vary, &empty)
        );
        assert_eq!(variant_hash(&[], &en), "-");
    }

    fn normalised(name: &'static str, lines: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(name, line.parse().unwrap());
        }
        String::from_utf8(selecting_value(&HeaderName::from_static(name), &headers).unwrap())
            .unwrap()
    }

    #[test]
    fn selecting_values_are_normalised_as_rfc_9111_section_4_1_allows() {
        let language = "en-us,fr;q=0.5";
        for same in [
            &["en-US, fr;q=0.5"][..],
            &["fr;q=0.50,EN-us"],
            &[" en-US ", "fr ; q=0.500"],
            &["en-us;q=1.0", "FR;Q=0.5"],
        ] {
            assert_eq!(normalised("accept-language", same), language, "{same:?}");
        }
        assert_eq!(normalised("accept-language", &["fr, en-US"]), "en-us,fr");
        assert_eq!(normalised("accept-language", &["en-US, fr"]), "en-us,fr");
        assert_eq!(
            normalised("accept-language", &["da, en-gb;q=0.8, en;q=0.7, *;q=0"]),
            "da,en-gb;q=0.8,en;q=0.7,*;q=0"
        );
        // a weight that is not one leaves the default
        assert_eq!(normalised("accept-language", &["de;q=2"]), "de");
        assert_eq!(
            normalised("accept-encoding", &["gzip, deflate, br"]),
            normalised("accept-encoding", &["br,GZIP ,deflate"])
        );
        // Accept keeps its order and case; only whitespace goes
        assert_eq!(
            normalised("accept", &["text/html ; level=1, application/json"]),
            "text/html;level=1,application/json"
        );
        // other fields: each line trimmed, lines joined
        assert_eq!(normalised("x-tenant", &["  acme  "]), "acme");
        assert_eq!(normalised("x-tenant", &["a", " b"]), "a,b");
        assert_eq!(qvalue("0.001"), Some(1));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("1.5"), None);
    }

    #[test]
    fn vary_lists_round_trip() {
        let names = vec![
            HeaderName::from_static("accept"),
            HeaderName::from_static("cookie"),
        ];
        assert_eq!(decode_vary(encode_vary(&names).as_bytes()).unwrap(), names);
        assert_eq!(decode_vary(b"").unwrap(), Vec::<HeaderName>::new());
        assert!(decode_vary(b"bad name").is_none());
        assert_eq!(entry_key("cache:", "ab", "-"), "cache:{ab}:-");
        assert_eq!(vary_key("cache:", "ab"), "cache:{ab}:vary");
    }

    /// Issue 29, finding 5: a token read from the query is never part of a key.
    #[test]
    fn token_parameters_are_left_out_of_the_key() {
        let names: Vec<std::sync::Arc<str>> = vec!["token".into(), "access_token".into()];
        let key = |uri: &str| {
            let parts = parts(uri, &[("host", "shop.example")]);
            url_parts(
                &parts.uri,
                &parts.headers,
                "http",
                QueryOrder::AsReceived,
                false,
            )
            .without_parameters(&names)
            .key()
        };
        assert_eq!(key("/me/?token=s3cret"), key("/me/"));
        assert_eq!(key("/me/?page=2&tok%65n=s3cret"), key("/me/?page=2"));
        assert_eq!(key("/me/?access_token=s3cret&page=2"), key("/me/?page=2"));
        assert!(!key("/me/?page=2&token=s3cret").contains("s3cret"));
        assert_ne!(key("/me/?tokens=1"), key("/me/"));
    }
}
