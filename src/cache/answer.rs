//! What the cache answers from an entry or by itself: hits, 304s, stale copies, refusals,
//! and the `Cache-Status` each carries.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::config::Config;
use super::entry::{Entry, Pieces};
use super::policy::{self, NotStored, RequestRules, Verdict};
use super::ranges::{self, ByteRanges};
use super::refusal::CacheRefusal;
use super::status::{CACHE_STATUS, Fwd, X_CACHE};
use super::validators::{EntityTag, IfNoneMatch};

impl Config {
    /// A response from `entry` (a hit, a shared single-flight result, a revalidated or a
    /// stale entry), or 304 when the request's validators match. Takes the entry by value so
    /// a hit moves its headers and body instead of copying them.
    pub(crate) fn serve(
        &self,
        entry: Entry,
        request: &HeaderMap,
        head: bool,
        served: Served,
    ) -> Response<Bytes> {
        let age = entry.age(SystemTime::now());
        let ttl_left = i128::from(entry.freshness.as_secs()) - i128::from(age.as_secs());

        let mut response = if not_modified(request, &entry.headers) {
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            // RFC 9110 §15.4.5: what a 304 carries
            for name in [
                header::CACHE_CONTROL,
                header::CONTENT_LOCATION,
                header::DATE,
                header::ETAG,
                header::EXPIRES,
                header::LAST_MODIFIED,
                header::VARY,
            ] {
                for value in entry.headers.get_all(&name) {
                    response.headers_mut().append(name.clone(), value.clone());
                }
            }
            response
        } else if let Some(response) = ranged_answer(request, &entry, head) {
            response
        } else {
            let body = if head { Bytes::new() } else { entry.body };
            let mut response = Response::new(body);
            *response.status_mut() = entry.status;
            *response.headers_mut() = entry.headers;
            response
        };
        self.mark_served(response.headers_mut(), age, ttl_left, served);
        response
    }

    /// The answer to a range request from the stored pieces of a representation: `206` when
    /// they hold every range asked, `416` when none is satisfiable; `None` when they do not
    /// cover it or its `If-Range` does not hold, and the request goes on.
    pub(crate) fn serve_pieces(
        &self,
        entry: &Entry,
        pieces: &Pieces,
        request: &HeaderMap,
    ) -> Option<Response<Bytes>> {
        let ranges = ByteRanges::from_headers(request)?;
        if !ranges::if_range_holds(request, &entry.headers) {
            return None;
        }
        let mut response = ranges::answer(
            &ranges,
            entry.headers.clone(),
            pieces.complete_len,
            |range| pieces.covering(range),
        )?;
        let age = entry.age(SystemTime::now());
        let ttl_left = i128::from(entry.freshness.as_secs()) - i128::from(age.as_secs());
        self.mark_served(response.headers_mut(), age, ttl_left, Served::Hit);
        Some(response)
    }

    /// What every answer from an entry carries: its `Age`, replacing any the entry held (RFC
    /// 9111 §5.1), `Cache-Status`, and `X-Cache` when asked.
    fn mark_served(
        &self,
        headers: &mut HeaderMap,
        age: std::time::Duration,
        ttl_left: i128,
        served: Served,
    ) {
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
        self.cache_status_served(headers, served, ttl_left);
        if self.x_cache {
            headers.insert(
                X_CACHE,
                HeaderValue::from_static(if served == Served::Hit { "HIT" } else { "MISS" }),
            );
        }
    }

    /// Appends this cache's member to `Cache-Status` (RFC 9211 §2: the cache nearest the
    /// client comes last).
    pub(crate) fn cache_status(&self, headers: &mut HeaderMap, params: &str) {
        if let Ok(value) = HeaderValue::from_str(&format!("{}; {params}", self.name)) {
            headers.append(CACHE_STATUS, value);
        }
    }

    /// `Cache-Status` for a response from the inner service, `<name>; fwd=<why>[; detail=storing]`:
    /// built once with the layer, as it is on every miss.
    pub(crate) fn forwarded_status(&self, fwd: Fwd, stored: bool) -> HeaderValue {
        self.forwarded_statuses[fwd.index()][usize::from(stored)].clone()
    }

    /// `Cache-Status` for a response from the inner service that was not stored,
    /// `<name>; fwd=<why>; detail=<why not stored>`, or without the detail when the layer
    /// was built with [`cache_status_detail(false)`](super::ResponseCacheBuilder::cache_status_detail).
    pub(crate) fn unstored_status(&self, fwd: Fwd, unstored: NotStored) -> HeaderValue {
        match self.unstored_statuses {
            Some(statuses) => statuses[fwd.index()][unstored.index()].clone(),
            None => self.forwarded_status(fwd, false),
        }
    }

    /// `Cache-Status` for a response from an entry, built without the formatting machinery:
    /// it is on every hit. `ttl` is negative once the entry is stale (RFC 9211 §2.5).
    fn cache_status_served(&self, headers: &mut HeaderMap, served: Served, ttl_left: i128) {
        let mut value = String::with_capacity(self.name.len() + 48);
        value.push_str(&self.name);
        crate::observe::cache(match served {
            Served::Hit => "hit",
            Served::Revalidated => "revalidated",
            Served::StaleOnError(_) => "stale",
        });
        match served {
            Served::Hit => value.push_str("; hit"),
            Served::Revalidated => value.push_str("; fwd=stale; fwd-status=304"),
            Served::StaleOnError(Some(status)) => {
                value.push_str("; fwd=stale; fwd-status=");
                value.push_str(status.as_str());
            }
            Served::StaleOnError(None) => value.push_str("; fwd=stale"),
        }
        value.push_str("; ttl=");
        value.push_str(itoa::Buffer::new().format(ttl_left));
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
            headers.append(CACHE_STATUS, value);
        }
    }

    /// The answer the cache gives by itself for `refusal`: the configured one, or the
    /// default.
    fn refuse(&self, refusal: CacheRefusal) -> Response<Bytes> {
        match &self.refusal {
            Some(respond) => respond(&refusal),
            None => refusal.response(),
        }
    }

    /// RFC 9111 §5.2.1.7: `only-if-cached` and nothing usable stored.
    pub(crate) fn gateway_timeout(&self) -> Response<Bytes> {
        let mut response = self.refuse(CacheRefusal::OnlyIfCached);
        self.cache_status(response.headers_mut(), "fwd=miss; detail=only-if-cached");
        response
    }

    /// A single flight's leader did not finish within the flight deadline.
    pub(crate) fn origin_too_slow(&self) -> Response<Bytes> {
        let mut response = self.refuse(CacheRefusal::OriginTooSlow);
        self.cache_status(response.headers_mut(), "fwd=miss; detail=flight-deadline");
        response
    }

    /// The store failed and the layer fails closed.
    pub(crate) fn unavailable(&self) -> Response<Bytes> {
        self.refuse(CacheRefusal::StoreUnavailable)
    }

    /// What `entry` may do for a request with `rules`.
    pub(crate) fn verdict(&self, entry: &Entry, rules: &RequestRules) -> Verdict {
        policy::verdict(
            entry.age(SystemTime::now()),
            entry.freshness,
            &entry.reuse,
            rules,
        )
    }
}

/// How a response from an entry came about, for `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// From the store without asking the inner service.
    Hit,
    /// The inner service answered 304 to a conditional request.
    Revalidated,
    /// The inner service failed (with this status, or an error): stale copy served.
    StaleOnError(Option<StatusCode>),
}

/// RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` (weak comparison, entity tags parsed whole,
/// so a comma inside quotes stays in its tag) wins over `If-Modified-Since`. A present
/// `If-None-Match` that cannot be read asks for nothing a `304` could answer: the full
/// response is always a correct answer.
fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        return IfNoneMatch::from_headers(request)
            .is_some_and(|condition| condition.matches(EntityTag::of(stored)));
    }
    let Some(since) = policy::header_date(request, &header::IF_MODIFIED_SINCE) else {
        return false;
    };
    policy::header_date(stored, &header::LAST_MODIFIED).is_some_and(|modified| modified <= since)
}

/// The `206` or `416` answer to the ranges a `GET` asks of a stored `200` (RFC 9110 §14.2),
/// when its `If-Range` holds; `None` for the full response: other statuses and `HEAD` ignore
/// `Range`.
fn ranged_answer(request: &HeaderMap, entry: &Entry, head: bool) -> Option<Response<Bytes>> {
    if head || entry.status != StatusCode::OK || !request.contains_key(header::RANGE) {
        return None;
    }
    let ranges = ByteRanges::from_headers(request)?;
    if !ranges::if_range_holds(request, &entry.headers) {
        return None;
    }
    let body = &entry.body;
    ranges::answer(&ranges, entry.headers.clone(), body.len() as u64, |range| {
        Some(body.slice(range.start as usize..range.end as usize))
    })
}

/// `time` as an HTTP date (`Date`, `Expires`).
pub(crate) fn http_date(time: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(time)).expect("an HTTP date is a valid value")
}

#[cfg(test)]
mod tests {
    use http::header::HeaderName;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    #[test]
    fn conditional_requests_follow_rfc_9110() {
        let stored = map(&[
            ("etag", "\"v1\""),
            ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("if-none-match", "\"v1\"")], true),
            (&[("if-none-match", "W/\"v1\"")], true),
            (&[("if-none-match", "\"v0\", \"v1\"")], true),
            (&[("if-none-match", "*")], true),
            (&[("if-none-match", "\"v2\"")], false),
            // an unquoted tag is no entity tag, and the field cannot be read
            (&[("if-none-match", "v1")], false),
            (
                &[
                    ("if-none-match", "v1"),
                    ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ],
                false,
            ),
            // If-None-Match wins over If-Modified-Since
            (
                &[
                    ("if-none-match", "\"v2\""),
                    ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ],
                false,
            ),
            (
                &[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")],
                true,
            ),
            (
                &[("if-modified-since", "Thu, 22 Oct 2015 07:28:00 GMT")],
                true,
            ),
            (
                &[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")],
                false,
            ),
            (&[("if-modified-since", "not a date")], false),
            (&[], false),
        ];
        for (request, expected) in cases {
            assert_eq!(
                not_modified(&map(request), &stored),
                *expected,
                "{request:?}"
            );
        }
        // `*` is false whenever a current representation exists (RFC 9110 §13.1.2), and a
        // stored entry is one, with or without an ETag
        assert!(not_modified(
            &map(&[("if-none-match", "*")]),
            &HeaderMap::new()
        ));
    }
}
