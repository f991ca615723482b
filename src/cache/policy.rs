//! RFC 9111 storability rules for the `cache_page` mode, as pure functions.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};

/// The `Cache-Control` directives this cache acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
}

/// Splits a field value at commas outside quoted strings (`private="a, b"` is one item).
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Parses every `Cache-Control` field of `headers`. Directive names are case-insensitive
/// (RFC 9111 §5.2) and qualified forms (`private="Set-Cookie"`) count as the directive. A
/// repeated or invalid `max-age` takes the most restrictive reading (0 when unparseable).
pub(crate) fn cache_control(headers: &HeaderMap) -> CacheControl {
    let mut cc = CacheControl::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            // an unreadable Cache-Control might say anything: be as strict as it could be
            cc.no_store = true;
            continue;
        };
        for item in split_list(value) {
            let (name, argument) = match item.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (item, None),
            };
            let seconds = || argument.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
            if name.eq_ignore_ascii_case("no-store") {
                cc.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                cc.no_cache = true;
            } else if name.eq_ignore_ascii_case("private") {
                cc.private = true;
            } else if name.eq_ignore_ascii_case("public") {
                cc.public = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                cc.max_age = Some(cc.max_age.map_or(seconds(), |m| m.min(seconds())));
            } else if name.eq_ignore_ascii_case("s-maxage") {
                cc.s_maxage = Some(cc.s_maxage.map_or(seconds(), |m| m.min(seconds())));
            }
        }
    }
    cc
}

/// The response's `Vary`, as sorted lowercase names, or `Err(())` for `Vary: *`.
pub(crate) fn vary(headers: &HeaderMap) -> Result<Vec<HeaderName>, ()> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let Ok(value) = value.to_str() else {
            return Err(());
        };
        for item in split_list(value) {
            if item == "*" {
                return Err(());
            }
            match HeaderName::from_bytes(item.as_bytes()) {
                Ok(name) => names.push(name),
                Err(_) => return Err(()),
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Ok(names)
}

/// Why a response is not stored; also what `Cache-Status` and the logs report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    NoStore,
    Private,
    NoCache,
    SetCookie,
    Authorization,
    VaryStar,
    ZeroTtl,
}

/// The request facts storability depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts {
    pub(crate) has_authorization: bool,
}

/// Whether a response may be stored, and for how long: the layer's timeout, shortened by the
/// response's `s-maxage` (preferred by shared caches, RFC 9111 §5.2.2.10) or `max-age`.
pub(crate) fn storable(
    request: RequestFacts,
    headers: &HeaderMap,
    timeout: Duration,
    store_cookies: bool,
) -> Result<Duration, NotStored> {
    let cc = cache_control(headers);
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if cc.no_cache {
        return Err(NotStored::NoCache);
    }
    if !store_cookies && headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    // RFC 9111 §3.5: a shared cache keeps responses to authorized requests only when the
    // response says so
    if request.has_authorization && !cc.public && cc.s_maxage.is_none() {
        return Err(NotStored::Authorization);
    }
    if vary(headers).is_err() {
        return Err(NotStored::VaryStar);
    }
    let ttl = match cc.s_maxage.or(cc.max_age) {
        Some(seconds) => timeout.min(Duration::from_secs(seconds)),
        None => timeout,
    };
    if ttl.is_zero() {
        return Err(NotStored::ZeroTtl);
    }
    Ok(ttl)
}

/// Headers never stored: hop-by-hop fields (RFC 9111 §3.1), the ones named by `Connection`,
/// and `Set-Cookie` (never replayed). `Age` is kept: a hit adds its resident time to it.
pub(crate) fn strip_unstorable(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::SET_COOKIE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    const ANON: RequestFacts = RequestFacts {
        has_authorization: false,
    };
    const AUTH: RequestFacts = RequestFacts {
        has_authorization: true,
    };
    const MINUTE: Duration = Duration::from_secs(60);

    type Pairs<'a> = &'a [(&'a str, &'a str)];

    #[test]
    fn never_stored_cases() {
        let cases: &[(Pairs<'_>, RequestFacts, NotStored)] = &[
            (&[("cache-control", "no-store")], ANON, NotStored::NoStore),
            (&[("cache-control", "No-Store")], ANON, NotStored::NoStore),
            (
                &[("cache-control", "max-age=60, NO-STORE")],
                ANON,
                NotStored::NoStore,
            ),
            (&[("cache-control", "private")], ANON, NotStored::Private),
            (&[("cache-control", "PRIVATE")], ANON, NotStored::Private),
            (
                &[("cache-control", r#"private="Set-Cookie, X-Y", max-age=9"#)],
                ANON,
                NotStored::Private,
            ),
            (&[("cache-control", "no-cache")], ANON, NotStored::NoCache),
            (
                &[("cache-control", r#"No-Cache="Set-Cookie""#)],
                ANON,
                NotStored::NoCache,
            ),
            (
                &[("cache-control", "public"), ("cache-control", "no-cache")],
                ANON,
                NotStored::NoCache,
            ),
            (&[("set-cookie", "sessionid=1")], ANON, NotStored::SetCookie),
            (&[], AUTH, NotStored::Authorization),
            (
                &[("cache-control", "max-age=60")],
                AUTH,
                NotStored::Authorization,
            ),
            (&[("vary", "*")], ANON, NotStored::VaryStar),
            (&[("vary", "Accept, *")], ANON, NotStored::VaryStar),
            (&[("cache-control", "max-age=0")], ANON, NotStored::ZeroTtl),
            (
                &[("cache-control", "max-age=abc")],
                ANON,
                NotStored::ZeroTtl,
            ),
        ];
        for (pairs, request, expected) in cases {
            assert_eq!(
                storable(*request, &headers(pairs), MINUTE, false),
                Err(*expected),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn stored_cases_and_their_ttl() {
        let cases: &[(Pairs<'_>, RequestFacts, Duration)] = &[
            (&[], ANON, MINUTE),
            (
                &[("cache-control", "max-age=30")],
                ANON,
                Duration::from_secs(30),
            ),
            (&[("cache-control", "max-age=3600")], ANON, MINUTE),
            (
                &[("cache-control", "max-age=30, max-age=10")],
                ANON,
                Duration::from_secs(10),
            ),
            (
                &[("cache-control", "s-maxage=20, max-age=0")],
                ANON,
                Duration::from_secs(20),
            ),
            (&[("cache-control", "public")], AUTH, MINUTE),
            (
                &[("cache-control", "s-maxage=40")],
                AUTH,
                Duration::from_secs(40),
            ),
            (&[("vary", "Accept-Language")], ANON, MINUTE),
            (
                &[("cache-control", "no-transform, must-revalidate")],
                ANON,
                MINUTE,
            ),
        ];
        for (pairs, request, ttl) in cases {
            assert_eq!(
                storable(*request, &headers(pairs), MINUTE, false),
                Ok(*ttl),
                "{pairs:?}"
            );
        }
        assert_eq!(
            storable(ANON, &headers(&[("set-cookie", "a=1")]), MINUTE, true),
            Ok(MINUTE)
        );
    }

    #[test]
    fn vary_is_sorted_lowercase_and_deduplicated() {
        let names = vary(&headers(&[
            ("vary", "Accept-Language, Accept"),
            ("vary", "accept"),
        ]))
        .unwrap();
        assert_eq!(
            names.iter().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["accept", "accept-language"]
        );
        assert!(vary(&headers(&[("vary", "bad header")])).is_err());
        assert!(vary(&HeaderMap::new()).unwrap().is_empty());
    }

    #[test]
    fn unstorable_headers_are_stripped() {
        let mut map = headers(&[
            ("connection", "x-secret, close"),
            ("x-secret", "1"),
            ("set-cookie", "a=1"),
            ("keep-alive", "timeout=5"),
            ("content-type", "text/plain"),
        ]);
        strip_unstorable(&mut map);
        assert_eq!(
            map.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["content-type"]
        );
    }
}
