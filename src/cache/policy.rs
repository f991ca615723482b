//! RFC 9111 storability and freshness rules, for the `cache_page` and HTTP-cache modes, as
//! pure functions.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName};

use super::directives::{
    CacheControl, ResponseDirectives, Targeting, response_directives, split_list, vary,
};

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
    /// A status this cache does not store (1xx, 206, 304, or one `must-understand` names).
    Status,
    /// Neither explicit freshness nor a status or `public` that allows a heuristic.
    NoFreshness,
    /// A body over the layer's bound.
    TooLarge,
    /// Arrived older than it may be kept.
    StaleOnArrival,
    /// A `Vary` that names no header this cache can read.
    VaryUnreadable,
}

impl NotStored {
    pub(crate) const ALL: [Self; 12] = [
        Self::NoStore,
        Self::Private,
        Self::NoCache,
        Self::SetCookie,
        Self::Authorization,
        Self::VaryStar,
        Self::ZeroTtl,
        Self::Status,
        Self::NoFreshness,
        Self::TooLarge,
        Self::StaleOnArrival,
        Self::VaryUnreadable,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The `detail` of the response's `Cache-Status` (RFC 9211 §2.8): each names something
    /// the response or the request showed, or that it arrived older than it may be kept.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::NoCache => "no-cache",
            Self::SetCookie => "set-cookie",
            Self::Authorization => "authorization",
            Self::VaryStar => "vary-star",
            Self::ZeroTtl => "zero-ttl",
            Self::Status => "status",
            Self::NoFreshness => "no-freshness",
            Self::TooLarge => "too-large",
            Self::StaleOnArrival => "stale-on-arrival",
            Self::VaryUnreadable => "vary-unreadable",
        }
    }
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
    targeted: &Targeting,
) -> Result<Duration, NotStored> {
    let directives = response_directives(headers, targeted);
    let cc = &directives.cc;
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
    let sharing = directives.sharing;
    if request.has_authorization && !sharing.public && !sharing.s_maxage {
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

/// The statuses RFC 9110 §15.1 lets a cache store with heuristic freshness, and the ones
/// this cache understands for `must-understand` (RFC 9111 §5.2.2.3).
pub(crate) const HEURISTICALLY_CACHEABLE: [u16; 12] =
    [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// The settings of the HTTP-cache mode that storing depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpRules {
    /// The heuristic freshness bound, when heuristics are on.
    pub(crate) heuristic: Option<Duration>,
    /// How long an entry with a validator outlives its freshness, for revalidation.
    pub(crate) keep_stale: Duration,
    /// No entry is kept longer than this.
    pub(crate) max_ttl: Duration,
    pub(crate) store_cookies: bool,
    /// Responses that set cookies are stored with their `Set-Cookie`, and hits replay it.
    pub(crate) replay_cookies: bool,
}

/// How a stored response may be reused once stale, from its `Cache-Control`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reuse {
    /// `no-cache`: revalidated before every reuse (RFC 9111 §5.2.2.4).
    pub(crate) always_revalidate: bool,
    /// `must-revalidate` / `proxy-revalidate`: never served stale (§5.2.2.2, §5.2.2.8).
    pub(crate) never_stale: bool,
    /// `s-maxage`: a client's `max-stale` does not apply (§5.2.2.10).
    pub(crate) refuse_max_stale: bool,
    /// RFC 5861 windows past freshness.
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
}

/// What storing a response under the HTTP-cache rules takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Storage {
    /// The freshness lifetime (RFC 9111 §4.2.1).
    pub(crate) freshness: Duration,
    /// How long the store keeps the entry: freshness plus the time it may serve stale or be
    /// revalidated.
    pub(crate) keep: Duration,
    pub(crate) reuse: Reuse,
    /// Fields named by `private="..."` / `no-cache="..."`, not stored.
    pub(crate) strip: Vec<HeaderName>,
}

/// The request's directives the HTTP-cache mode acts on (RFC 9111 §5.2.1); all off unless
/// the layer honours request directives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RequestRules {
    /// `no-cache`, or `Pragma: no-cache` without `Cache-Control`.
    pub(crate) no_cache: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) max_stale: Option<Option<u64>>,
    pub(crate) min_fresh: Option<u64>,
    pub(crate) only_if_cached: bool,
}

/// What a stored entry may do for a request (RFC 9111 §4.2 and §4.2.4, RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Fresh enough: serve it.
    Fresh,
    /// Stale, but the client's `max-stale` accepts it.
    StaleAccepted,
    /// To be revalidated (or fetched anew) before use. `serve_stale_meanwhile`: within
    /// `stale-while-revalidate`, so requests other than the one refreshing it may be served
    /// the stale copy.
    Refresh { serve_stale_meanwhile: bool },
}

/// The verdict on an entry of the given `age`, `freshness` and `reuse` for `request`.
pub(crate) fn verdict(
    age: Duration,
    freshness: Duration,
    reuse: &Reuse,
    request: &RequestRules,
) -> Verdict {
    let seconds = Duration::from_secs;
    let forced = reuse.always_revalidate
        || request.no_cache
        || request.max_age.is_some_and(|max| age > seconds(max));
    let left = freshness.checked_sub(age).filter(|left| !left.is_zero());
    if !forced {
        match left {
            Some(left) if request.min_fresh.is_none_or(|min| left >= seconds(min)) => {
                return Verdict::Fresh;
            }
            Some(_) => {}
            None => {
                let staleness = age - freshness;
                let accepted = request
                    .max_stale
                    .is_some_and(|limit| limit.is_none_or(|limit| staleness <= seconds(limit)));
                if accepted && !reuse.never_stale && !reuse.refuse_max_stale {
                    return Verdict::StaleAccepted;
                }
            }
        }
    }
    let serve_stale_meanwhile = !forced
        && !reuse.never_stale
        && left.is_none()
        && age - freshness < reuse.stale_while_revalidate;
    Verdict::Refresh {
        serve_stale_meanwhile,
    }
}

/// Whether a stale entry of the given `age` may stand in for an error (RFC 5861 §4).
pub(crate) fn stale_if_error(age: Duration, freshness: Duration, reuse: &Reuse) -> bool {
    !reuse.never_stale
        && age.saturating_sub(freshness) <= reuse.stale_if_error
        && !reuse.stale_if_error.is_zero()
}

/// The HTTP date in the field `name`, when it holds one.
pub(crate) fn header_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    parse_http_date(headers.get(name)?.to_str().ok()?)
}

/// An HTTP date in any of the three formats of RFC 9110 §5.6.7 (IMF-fixdate, RFC 850, ANSI C
/// `asctime`), whatever the letter case of its weekday, month and zone: recipients are asked
/// to accept the obsolete formats, and origins send `gmt` and `JAN`.
pub(crate) fn parse_http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value)
        .ok()
        .or_else(|| httpdate::parse_http_date(&usual_case(value)).ok())
}

/// `value` with each run of letters as dates write it: `Mon`, `Jan`, `Sunday`, `GMT`.
fn usual_case(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else {
            let mut letters = word.chars();
            if let Some(first) = letters.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(letters.map(|c| c.to_ascii_lowercase()));
            }
        }
        word.clear();
    };
    for c in value.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// What RFC 9111 §1.2.2 has a cache take for a delta-seconds value too large to represent.
const LARGEST_AGE: Duration = Duration::from_secs(2_147_483_648);

/// The `Age` a response came with (RFC 9111 §5.1): the first member of a list-based value
/// (other members and other field lines discarded), zero without one or when that member is
/// not a delta-seconds (`abc`, `-7200`, `7200.0`, `3;x`): §5.1 has a cache ignore an invalid
/// `Age`, so it cannot make a fresh response stale, nor a stale one fresh.
fn age_value(headers: &HeaderMap) -> Duration {
    let first = headers
        .get(header::AGE)
        .and_then(|age| age.to_str().ok())
        .and_then(|value| split_list(value).next());
    match first {
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse::<u64>().map_or(LARGEST_AGE, |seconds| {
                Duration::from_secs(seconds).min(LARGEST_AGE)
            })
        }
        _ => Duration::ZERO,
    }
}

/// `corrected_initial_age` of RFC 9111 §4.2.3: the age the response had when it arrived, from
/// its `Age`, its `Date` and the time the inner service took.
pub(crate) fn initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = age_value(headers);
    let apparent_age = header_date(headers, &header::DATE)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or_default();
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    apparent_age.max(age_value + response_delay)
}

/// The freshness lifetime (RFC 9111 §4.2.1): `s-maxage`, then `max-age`, then `Expires` minus
/// `Date` (an invalid `Expires` means already stale), then the heuristic when it is allowed:
/// 10% of the time since `Last-Modified`, bounded by `heuristic` (`heuristic` itself without a
/// `Last-Modified`). `None` when nothing gives one.
fn freshness(
    cc: &CacheControl,
    expires_counts: bool,
    headers: &HeaderMap,
    heuristic: Option<Duration>,
    response_time: SystemTime,
) -> Option<Duration> {
    if let Some(seconds) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(seconds));
    }
    if expires_counts && headers.contains_key(header::EXPIRES) {
        let date = header_date(headers, &header::DATE).unwrap_or(response_time);
        return Some(
            header_date(headers, &header::EXPIRES)
                .and_then(|expires| expires.duration_since(date).ok())
                .unwrap_or_default(),
        );
    }
    let bound = heuristic?;
    let date = header_date(headers, &header::DATE).unwrap_or(response_time);
    Some(
        match header_date(headers, &header::LAST_MODIFIED)
            .and_then(|modified| date.duration_since(modified).ok())
        {
            Some(since) => (since / 10).min(bound),
            None => bound,
        },
    )
}

/// Whether a response may be stored under the HTTP-cache rules (RFC 9111 §3), and how.
pub(crate) fn storable_http(
    request: RequestFacts,
    status: StatusCode,
    headers: &HeaderMap,
    rules: &HttpRules,
    targeted: &Targeting,
    response_time: SystemTime,
) -> Result<Storage, NotStored> {
    // 206 needs range handling and 304 updates rather than stores: neither is understood here
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStored::Status);
    }
    let ResponseDirectives {
        cc,
        expires_counts,
        sharing,
    } = response_directives(headers, targeted);
    let understood = HEURISTICALLY_CACHEABLE.contains(&status.as_u16());
    if cc.must_understand {
        // §5.2.2.3: a cache that understands the status ignores no-store, one that does not
        // stores nothing
        if !understood {
            return Err(NotStored::Status);
        }
    } else if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private_all {
        return Err(NotStored::Private);
    }
    let mut strip = cc.private_fields.clone();
    strip.extend(cc.no_cache_fields.iter().cloned());
    if !rules.store_cookies
        && !rules.replay_cookies
        && headers.contains_key(header::SET_COOKIE)
        && !strip.contains(&header::SET_COOKIE)
    {
        return Err(NotStored::SetCookie);
    }
    // §3.5
    if request.has_authorization && !sharing.public && !sharing.s_maxage && !sharing.must_revalidate
    {
        return Err(NotStored::Authorization);
    }
    if vary(headers).is_err() {
        return Err(NotStored::VaryStar);
    }
    let has_validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    let always_revalidate = cc.no_cache_all;
    if always_revalidate && !has_validator {
        return Err(NotStored::NoCache);
    }
    let heuristic = rules.heuristic.filter(|_| understood || cc.public);
    let Some(freshness) = freshness(&cc, expires_counts, headers, heuristic, response_time)
        .or_else(|| (understood || cc.public).then_some(Duration::ZERO))
    else {
        return Err(NotStored::NoFreshness);
    };
    if freshness.is_zero() && !has_validator {
        return Err(NotStored::ZeroTtl);
    }
    let reuse = Reuse {
        always_revalidate,
        never_stale: cc.must_revalidate || cc.proxy_revalidate,
        refuse_max_stale: cc.s_maxage.is_some(),
        stale_while_revalidate: Duration::from_secs(cc.stale_while_revalidate.unwrap_or(0)),
        stale_if_error: Duration::from_secs(cc.stale_if_error.unwrap_or(0)),
    };
    let revalidation = if has_validator {
        rules.keep_stale
    } else {
        Duration::ZERO
    };
    let stale = if reuse.never_stale {
        revalidation
    } else {
        revalidation
            .max(reuse.stale_while_revalidate)
            .max(reuse.stale_if_error)
    };
    let keep = freshness.saturating_add(stale).min(rules.max_ttl);
    if keep.is_zero() {
        return Err(NotStored::ZeroTtl);
    }
    Ok(Storage {
        freshness,
        keep,
        reuse,
        strip,
    })
}

/// Headers never stored: hop-by-hop fields (RFC 9111 §3.1), the ones named by `Connection`,
/// and `Set-Cookie` unless the layer replays it. `Age` is kept: a hit adds its resident time
/// to it.
pub(crate) fn strip_unstorable(headers: &mut HeaderMap, replay_cookies: bool) {
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
    ] {
        headers.remove(name);
    }
    if !replay_cookies {
        headers.remove(header::SET_COOKIE);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::cache::directives::cache_control;

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
    fn delta_seconds_follow_rfc_9111() {
        let max_age = |value: &str| cache_control(&headers(&[("cache-control", value)])).max_age;
        assert_eq!(max_age("max-age=60"), Some(60));
        assert_eq!(max_age("max-age = 60"), Some(60), "spaces around =");
        assert_eq!(max_age(r#"max-age="60""#), Some(60));
        assert_eq!(
            max_age("max-age=60, max-age=10"),
            Some(10),
            "the most restrictive"
        );
        assert_eq!(max_age("max-age=1.5"), Some(0), "a decimal is invalid");
        assert_eq!(max_age("max-age=-5"), Some(0));
        assert_eq!(max_age("max-age=60s"), Some(0));
        assert_eq!(max_age("max-age="), Some(0));
        assert_eq!(
            max_age("max-age=99999999999999999999999"),
            Some(2_147_483_648),
            "too large: RFC 9111 §1.2.2's value"
        );
    }

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
                storable(
                    *request,
                    &headers(pairs),
                    MINUTE,
                    false,
                    &Targeting::default()
                ),
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
                storable(
                    *request,
                    &headers(pairs),
                    MINUTE,
                    false,
                    &Targeting::default()
                ),
                Ok(*ttl),
                "{pairs:?}"
            );
        }
        assert_eq!(
            storable(
                ANON,
                &headers(&[("set-cookie", "a=1")]),
                MINUTE,
                true,
                &Targeting::default()
            ),
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
        let mut replayed = map.clone();
        strip_unstorable(&mut map, false);
        assert_eq!(
            map.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["content-type"]
        );
        strip_unstorable(&mut replayed, true);
        assert_eq!(
            replayed.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["set-cookie", "content-type"]
        );
    }

    const RULES: HttpRules = HttpRules {
        heuristic: None,
        keep_stale: Duration::from_secs(600),
        max_ttl: Duration::from_secs(86_400),
        store_cookies: false,
        replay_cookies: false,
    };

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn date(seconds: u64) -> String {
        httpdate::fmt_http_date(at(seconds))
    }

    fn http(pairs: &[(&str, &str)], status: u16, rules: &HttpRules) -> Result<Storage, NotStored> {
        storable_http(
            ANON,
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            rules,
            &Targeting::default(),
            at(0),
        )
    }

    #[test]
    fn freshness_comes_from_s_maxage_then_max_age_then_expires_minus_date() {
        let secs = Duration::from_secs;
        let (now, later, earlier) = (date(0), date(300), date(0));
        let cases: Vec<(Vec<(&str, &str)>, Duration)> = vec![
            (
                vec![("cache-control", "max-age=60, s-maxage=120")],
                secs(120),
            ),
            (vec![("cache-control", "max-age=60")], secs(60)),
            (
                vec![("cache-control", "max-age=60"), ("expires", &later)],
                secs(60),
            ),
            (vec![("date", &now), ("expires", &later)], secs(300)),
            // without Date, Expires counts from the response time
            (vec![("expires", &later)], secs(300)),
        ];
        for (pairs, freshness) in cases {
            let storage = http(&pairs, 200, &RULES).unwrap();
            assert_eq!(storage.freshness, freshness, "{pairs:?}");
        }
        // an invalid or past Expires means stale at once: stored only with a validator
        for expires in ["0", "garbage", earlier.as_str()] {
            assert_eq!(
                http(&[("date", &later), ("expires", expires)], 200, &RULES),
                Err(NotStored::ZeroTtl),
                "{expires}"
            );
            let storage = http(&[("expires", expires), ("etag", "\"a\"")], 200, &RULES).unwrap();
            assert_eq!(storage.freshness, Duration::ZERO, "{expires}");
            assert_eq!(storage.keep, RULES.keep_stale);
        }
    }

    #[test]
    fn without_explicit_freshness_heuristics_decide_and_only_for_cacheable_statuses() {
        let modified = date(0);
        let date_now = date(1000);
        let plain: &[(&str, &str)] = &[("date", &date_now), ("last-modified", &modified)];
        // off: a validator makes it storable (revalidated on each use), nothing else does
        assert_eq!(http(&[], 200, &RULES), Err(NotStored::ZeroTtl));
        assert_eq!(http(plain, 200, &RULES).unwrap().freshness, Duration::ZERO);
        let on = HttpRules {
            heuristic: Some(Duration::from_secs(60)),
            ..RULES
        };
        // on: 10% of the time since Last-Modified, bounded
        assert_eq!(
            http(plain, 200, &on).unwrap().freshness,
            Duration::from_secs(60)
        );
        let recent = date(100);
        assert_eq!(
            http(
                &[("date", &date(200)), ("last-modified", &recent)],
                404,
                &on
            )
            .unwrap()
            .freshness,
            Duration::from_secs(10)
        );
        assert_eq!(
            http(&[], 200, &on).unwrap().freshness,
            Duration::from_secs(60)
        );
        // statuses outside RFC 9110 §15.1 need explicit freshness
        for status in [201, 302, 500] {
            assert_eq!(
                http(&[], status, &on),
                Err(NotStored::NoFreshness),
                "{status}"
            );
            assert!(http(&[("cache-control", "max-age=5")], status, &on).is_ok());
        }
        assert!(http(&[("cache-control", "public")], 302, &on).is_ok());
    }

    #[test]
    fn http_mode_storing_rules() {
        let validator = ("etag", "\"v\"");
        // no-cache: only with a validator, then revalidated before every use
        assert_eq!(
            http(&[("cache-control", "no-cache, max-age=60")], 200, &RULES),
            Err(NotStored::NoCache)
        );
        let storage = http(
            &[("cache-control", "no-cache, max-age=60"), validator],
            200,
            &RULES,
        )
        .unwrap();
        assert!(storage.reuse.always_revalidate);
        // qualified private / no-cache: stored without the named fields
        let storage = http(
            &[
                (
                    "cache-control",
                    r#"private="Set-Cookie, X-User", no-cache="x-debug", max-age=60"#,
                ),
                ("set-cookie", "a=1"),
            ],
            200,
            &RULES,
        )
        .unwrap();
        assert!(!storage.reuse.always_revalidate);
        assert_eq!(
            storage
                .strip
                .iter()
                .map(HeaderName::as_str)
                .collect::<Vec<_>>(),
            ["set-cookie", "x-user", "x-debug"]
        );
        assert_eq!(
            http(&[("cache-control", "private, max-age=60")], 200, &RULES),
            Err(NotStored::Private)
        );
        assert_eq!(
            http(&[("cache-control", "no-store, max-age=60")], 200, &RULES),
            Err(NotStored::NoStore)
        );
        // must-understand on an understood status overrides no-store
        assert!(
            http(
                &[("cache-control", "must-understand, no-store, max-age=60")],
                200,
                &RULES
            )
            .is_ok()
        );
        assert_eq!(
            http(
                &[("cache-control", "must-understand, no-store, max-age=60")],
                418,
                &RULES
            ),
            Err(NotStored::Status)
        );
        for status in [206, 304] {
            assert_eq!(
                http(&[("cache-control", "max-age=60")], status, &RULES),
                Err(NotStored::Status)
            );
        }
        // §3.5 in this mode also accepts must-revalidate
        for cc in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            assert!(
                storable_http(
                    AUTH,
                    StatusCode::OK,
                    &headers(&[("cache-control", cc)]),
                    &RULES,
                    &Targeting::default(),
                    at(0)
                )
                .is_ok(),
                "{cc}"
            );
        }
        assert_eq!(
            storable_http(
                AUTH,
                StatusCode::OK,
                &headers(&[("cache-control", "max-age=60")]),
                &RULES,
                &Targeting::default(),
                at(0)
            ),
            Err(NotStored::Authorization)
        );
        // the store keeps it through its stale windows, within max_ttl
        let storage = http(
            &[(
                "cache-control",
                "max-age=60, stale-while-revalidate=30, stale-if-error=300",
            )],
            200,
            &RULES,
        )
        .unwrap();
        assert_eq!(storage.keep, Duration::from_secs(360));
        let storage = http(
            &[(
                "cache-control",
                "max-age=60, must-revalidate, stale-if-error=300",
            )],
            200,
            &RULES,
        )
        .unwrap();
        assert_eq!(storage.keep, Duration::from_secs(60));
        assert!(storage.reuse.never_stale);
        let short = HttpRules {
            max_ttl: Duration::from_secs(10),
            ..RULES
        };
        assert_eq!(
            http(&[("cache-control", "max-age=60")], 200, &short)
                .unwrap()
                .keep,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn a_targeted_field_replaces_cache_control_and_expires_when_it_parses() {
        let cdn = Targeting {
            fields: vec![HeaderName::from_static("cdn-cache-control")],
            overrides_private: false,
        };
        let directives = |pairs: &[(&str, &str)]| {
            let d = response_directives(&headers(pairs), &cdn);
            (d.cc, d.expires_counts)
        };
        let general = ("cache-control", "max-age=3600");
        let (cc, expires_counts) = directives(&[general, ("cdn-cache-control", "max-age=5")]);
        assert_eq!((cc.max_age, expires_counts), (Some(5), false));
        let (cc, _) = directives(&[general, ("cdn-cache-control", "No-Store, MAX-AGE=9")]);
        assert!(cc.no_store);
        assert_eq!(cc.max_age, Some(9));
        // a boolean false turns a directive off; parameters change nothing
        let (cc, _) = directives(&[("cdn-cache-control", "no-store=?0, max-age=7;foo=1")]);
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(7));
        // ignored when empty or not a dictionary: Cache-Control and Expires count
        for invalid in [
            "",
            "max-age=ten",
            "max-age=1.5",
            "max age",
            "\"x\"",
            "a=\"open",
        ] {
            let (cc, expires_counts) = directives(&[general, ("cdn-cache-control", invalid)]);
            assert_eq!(
                (cc.max_age, expires_counts),
                (Some(3600), true),
                "{invalid:?}"
            );
        }
        // the first field on the list with a valid value wins
        let both = Targeting {
            fields: vec![
                HeaderName::from_static("acme-cache-control"),
                HeaderName::from_static("cdn-cache-control"),
            ],
            overrides_private: false,
        };
        let cdn_only = Targeting {
            fields: both.fields[1..].to_vec(),
            overrides_private: false,
        };
        let pairs = headers(&[
            ("acme-cache-control", "max-age=70"),
            ("cdn-cache-control", "max-age=5"),
        ]);
        assert_eq!(response_directives(&pairs, &both).cc.max_age, Some(70));
        assert_eq!(response_directives(&pairs, &cdn_only).cc.max_age, Some(5));
        // and Expires no longer counts for freshness
        let storage = storable_http(
            ANON,
            StatusCode::OK,
            &headers(&[
                ("cdn-cache-control", "public"),
                ("expires", &date(300)),
                ("etag", "\"v\""),
            ]),
            &RULES,
            &cdn,
            at(0),
        )
        .unwrap();
        assert_eq!(storage.freshness, Duration::ZERO);
    }

    /// Issue 28, finding 1: a site-wide targeted field must not undo a page's `private`.
    #[test]
    fn a_targeted_field_keeps_cache_control_privacy_unless_told_to_override_it() {
        let cdn = |overrides_private| Targeting {
            fields: vec![HeaderName::from_static("cdn-cache-control")],
            overrides_private,
        };
        let rules = HttpRules {
            replay_cookies: true,
            ..RULES
        };
        let store = |pairs: &[(&str, &str)], request, overrides| {
            storable_http(
                request,
                StatusCode::OK,
                &headers(pairs),
                &rules,
                &cdn(overrides),
                at(0),
            )
        };
        let targeted = ("cdn-cache-control", "max-age=60");
        let cookie = ("set-cookie", "session=alice");
        for private in ["private", "PRIVATE, max-age=0", "private, private=\"x\""] {
            let pairs = [("cache-control", private), targeted];
            assert_eq!(
                store(&pairs, ANON, false),
                Err(NotStored::Private),
                "{private}"
            );
            assert_eq!(store(&pairs, ANON, true).unwrap().freshness, MINUTE);
            assert_eq!(
                storable(ANON, &headers(&pairs), MINUTE, false, &cdn(false)),
                Err(NotStored::Private)
            );
        }
        // the fields named by a qualified private or no-cache are never stored or replayed
        for qualified in ["private=\"set-cookie\"", "no-cache=\"Set-Cookie\""] {
            let pairs = [("cache-control", qualified), targeted, cookie];
            let storage = store(&pairs, ANON, false).unwrap();
            assert!(storage.strip.contains(&header::SET_COOKIE), "{qualified}");
            assert_eq!(storage.freshness, MINUTE);
            assert!(
                !store(&pairs, ANON, true)
                    .unwrap()
                    .strip
                    .contains(&header::SET_COOKIE)
            );
        }
        // an answer to a request with credentials needs Cache-Control's own permission
        assert_eq!(
            store(&[("cdn-cache-control", "public, max-age=60")], AUTH, false),
            Err(NotStored::Authorization)
        );
        assert!(store(&[("cdn-cache-control", "public, max-age=60")], AUTH, true).is_ok());
        for permission in ["public", "s-maxage=5", "must-revalidate"] {
            let pairs = [("cache-control", permission), targeted];
            assert_eq!(
                store(&pairs, AUTH, false).unwrap().freshness,
                MINUTE,
                "{permission}"
            );
        }
        // no-store is still the targeted field's to replace (RFC 9213 §2.1)
        assert!(store(&[("cache-control", "no-store"), targeted], ANON, false).is_ok());
    }

    /// The adversary's review of issue 28: escaped, empty and broken field lists.
    #[test]
    fn qualified_directives_are_read_as_strictly_as_they_could_mean() {
        let cc = |value: &str| cache_control(&headers(&[("cache-control", value)]));
        let escaped = cc("private=\"Set\\-Cookie\", max-age=60");
        assert_eq!(escaped.private_fields, [header::SET_COOKIE]);
        assert!(!escaped.private_all);
        assert_eq!(
            cc("no-cache=\"X-User\\-Id\"").no_cache_fields,
            ["x-user-id"]
        );
        for whole in [
            "private=\"\"",
            "private=",
            "private=\"\\\"\"",
            "private, private=\"x\"",
        ] {
            assert!(cc(whole).private_all, "{whole}");
        }
        assert!(cc("no-cache=\"\"").no_cache_all);
        let broken = cc("foo=\"unterminated, private");
        assert!(broken.private_all && broken.no_store);
    }

    #[test]
    fn dates_parse_in_all_three_formats_and_any_letter_case() {
        let expected = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "sun, 06 nov 1994 08:49:37 gmt",
            "SUN, 06 NOV 1994 08:49:37 GMT",
            "SUNDAY, 06-NOV-94 08:49:37 gmt",
            "sun nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(value), Some(expected), "{value}");
        }
        // what the httpdate crate alone refuses
        assert!(httpdate::parse_http_date("sun, 06 nov 1994 08:49:37 gmt").is_err());
        assert_eq!(parse_http_date("tomorrow"), None);
        assert_eq!(parse_http_date("0"), None);
    }

    #[test]
    fn age_follows_rfc_9111_section_4_2_3() {
        let secs = Duration::from_secs;
        // Age plus the time the inner service took
        assert_eq!(
            initial_age(&headers(&[("age", "10")]), at(0), at(2)),
            secs(12)
        );
        // the apparent age from Date when it is larger
        assert_eq!(
            initial_age(
                &headers(&[("age", "1"), ("date", &date(0))]),
                at(29),
                at(30)
            ),
            secs(30)
        );
        // a Date in the future and no Age: zero
        assert_eq!(
            initial_age(&headers(&[("date", &date(100))]), at(0), at(0)),
            Duration::ZERO
        );
        // RFC 9111 §5.1: a list uses its first member; an invalid value is ignored
        for (value, seconds) in [
            ("0, 0", 0),
            ("0, 7200", 0),
            ("7200, 0", 7200),
            ("abc", 0),
            ("-7200", 0),
            ("7200.0", 0),
            ("old, 0", 0),
            ("3;x", 0),
            ("", 0),
            (" 7 ", 7),
        ] {
            assert_eq!(
                initial_age(&headers(&[("age", value)]), at(0), at(0)),
                secs(seconds),
                "{value:?}"
            );
        }
        // a second field line is discarded with the other members
        let mut two_lines = headers(&[("age", "5")]);
        two_lines.append(header::AGE, HeaderValue::from_static("9000"));
        assert_eq!(initial_age(&two_lines, at(0), at(0)), secs(5));
        // too large to represent: the largest value RFC 9111 §1.2.2 names
        assert_eq!(
            initial_age(&headers(&[("age", "99999999999999999999")]), at(0), at(0)),
            LARGEST_AGE
        );
    }

    #[test]
    fn verdicts_follow_request_and_response_directives() {
        let secs = Duration::from_secs;
        let plain = Reuse::default();
        let swr = Reuse {
            stale_while_revalidate: secs(30),
            ..Reuse::default()
        };
        let strict = Reuse {
            never_stale: true,
            stale_while_revalidate: secs(30),
            ..Reuse::default()
        };
        let none = RequestRules::default();
        let fresh = Verdict::Fresh;
        let refresh = Verdict::Refresh {
            serve_stale_meanwhile: false,
        };
        let meanwhile = Verdict::Refresh {
            serve_stale_meanwhile: true,
        };
        let rules = |f: fn(&mut RequestRules)| {
            let mut rules = RequestRules::default();
            f(&mut rules);
            rules
        };
        let no_cache = Reuse {
            always_revalidate: true,
            ..Reuse::default()
        };
        let s_maxage = Reuse {
            refuse_max_stale: true,
            ..Reuse::default()
        };
        let cases: Vec<(u64, &Reuse, RequestRules, Verdict)> = vec![
            (10, &plain, none, fresh),
            (60, &plain, none, refresh),
            (70, &swr, none, meanwhile),
            (95, &swr, none, refresh),
            (70, &strict, none, refresh),
            (10, &no_cache, none, refresh),
            (10, &plain, rules(|r| r.no_cache = true), refresh),
            (10, &plain, rules(|r| r.max_age = Some(5)), refresh),
            (10, &plain, rules(|r| r.max_age = Some(10)), fresh),
            (10, &plain, rules(|r| r.min_fresh = Some(55)), refresh),
            (10, &plain, rules(|r| r.min_fresh = Some(50)), fresh),
            (
                70,
                &plain,
                rules(|r| r.max_stale = Some(None)),
                Verdict::StaleAccepted,
            ),
            (
                70,
                &plain,
                rules(|r| r.max_stale = Some(Some(10))),
                Verdict::StaleAccepted,
            ),
            (75, &plain, rules(|r| r.max_stale = Some(Some(10))), refresh),
            (70, &strict, rules(|r| r.max_stale = Some(None)), refresh),
            (70, &s_maxage, rules(|r| r.max_stale = Some(None)), refresh),
        ];
        for (age, reuse, request, expected) in cases {
            assert_eq!(
                verdict(secs(age), secs(60), reuse, &request),
                expected,
                "{age} {reuse:?} {request:?}"
            );
        }
        let sie = Reuse {
            stale_if_error: secs(100),
            ..Reuse::default()
        };
        assert!(stale_if_error(secs(150), secs(60), &sie));
        assert!(!stale_if_error(secs(170), secs(60), &sie));
        assert!(!stale_if_error(secs(70), secs(60), &plain));
        assert!(!stale_if_error(
            secs(70),
            secs(60),
            &Reuse {
                never_stale: true,
                ..sie
            }
        ));
    }
}
