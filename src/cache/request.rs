//! A cacheable request: what it may look up and store (its plan), its context on the flow,
//! its URL key, how it goes to the inner service, and what its lookup found.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tower_service::Service;

use super::config::{Config, RequestDirectives};
use super::entry::{Entry, Head};
use super::policy::RequestRules;
use super::status::Fwd;
use super::{directives, key};
use crate::decoded::DecodedMemo;
use crate::principal::Credentialed;

/// A cacheable request on its way through the layer.
pub(crate) struct Ctx<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) inner: S,
    pub(crate) request: Request<ReqBody>,
    pub(crate) url: String,
    /// The URL's identity in the unstorable-URL memo.
    pub(crate) url_id: u64,
    pub(crate) store_allowed: bool,
    pub(crate) head: bool,
    /// A `GET` with a `Range`: its answer may be a part, never shared as the whole.
    pub(crate) ranged: bool,
    /// With credentials: `Authorization`, or a token the auth layer accepted.
    pub(crate) credentialed: bool,
    pub(crate) rules: RequestRules,
    pub(crate) config: Arc<Config>,
}

impl<S, ReqBody> Ctx<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// Whether this request's answer may be shared with the others for its key, so that it
    /// may lead or follow a single flight. A request with `Authorization` never waits on
    /// another: its answer is not shared unless it says `public` (RFC 9111 §3.5), and
    /// requests whose answers cannot be shared must not queue behind one another.
    pub(crate) fn joins_flights(&self) -> bool {
        self.store_allowed && !self.ranged && !self.credentialed
    }

    /// Whether this request may wait on a flight another request leads, though it may not
    /// lead one: a `HEAD` or a range request, answered from the whole entry the leader stores
    /// (nginx's cache lock holds them too). Without it, `Range: bytes=0-` on every request
    /// would stampede a slow origin past single flight.
    pub(crate) fn follows_flights(&self) -> bool {
        self.store_allowed && !self.credentialed
    }
}

/// What a lookup of a variant's entry found.
// Short-lived on the stack: boxing the entry would cost every hit an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Found {
    Entry(Entry),
    Missing,
    /// Stored under another Vary list.
    Outdated,
    Unreadable(super::entry::EntryError),
}

impl Found {
    pub(crate) fn read(
        stored: Option<Bytes>,
        vary: &[HeaderName],
        heads: &DecodedMemo<Head>,
    ) -> Self {
        let Some(stored) = stored else {
            return Self::Missing;
        };
        match Entry::decode_kept(&stored, heads) {
            Ok(entry) if entry.vary == vary => Self::Entry(entry),
            Ok(_) => Self::Outdated,
            Err(err) => Self::Unreadable(err),
        }
    }
}

/// A request's URL key, and its identity in the unstorable-URL memo.
pub(crate) struct Url {
    /// Empty when the request went to the handler on the memo, which needs no key.
    pub(crate) key: String,
    pub(crate) id: u64,
}

/// How a request that goes to the inner service got there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Miss {
    pub(crate) fwd: Fwd,
    pub(crate) store_allowed: bool,
    pub(crate) head: bool,
    pub(crate) remembered_unstorable: bool,
    /// A `GET` with a `Range`: an answer other than a whole `200` says nothing of the URL.
    pub(crate) ranged: bool,
    /// With credentials (see [`credentialed`]).
    pub(crate) credentialed: bool,
}

/// Whether a request carries credentials a shared cache must respect (RFC 9111 §3.5):
/// `Authorization`, or a token the auth layer accepted from any source (a cookie, another
/// header, a query parameter), which it marks.
pub(crate) fn credentialed<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(header::AUTHORIZATION)
        || request.extensions().get::<Credentialed>().is_some()
}
impl Config {
    /// Where a cacheable request starts: what may be looked up and stored, and what the
    /// request asks of a stored entry.
    /// Whether the request comes straight from a trusted proxy, whose forwarding headers are
    /// then keyed instead of refused.
    pub(crate) fn comes_through_trusted_proxy(&self, extensions: &http::Extensions) -> bool {
        !self.trusted.is_empty()
            && (self.peer)(extensions)
                .is_some_and(|peer| crate::peer::is_trusted(&self.trusted, peer))
    }

    /// The URL parts `request` is keyed by: a token the auth layer reads from the query never
    /// becomes part of a key.
    pub(crate) fn url_parts<'a, B>(
        &'a self,
        request: &'a Request<B>,
        forwarded: bool,
    ) -> key::UrlParts<'a> {
        let parts = key::url_parts(
            request.uri(),
            request.headers(),
            &self.default_scheme,
            self.query,
            forwarded,
        );
        match request.extensions().get::<Credentialed>() {
            Some(mark) if !mark.query_tokens.is_empty() => {
                parts.without_parameters(&mark.query_tokens)
            }
            _ => parts,
        }
    }

    /// Whether the request carries directives this layer honours (`Cache-Control`, or
    /// `Pragma`), which the plan must read.
    pub(crate) fn reads_directives(&self, headers: &http::HeaderMap) -> bool {
        self.request_directives == RequestDirectives::Honor
            && (headers.contains_key(header::CACHE_CONTROL) || headers.contains_key(header::PRAGMA))
    }

    pub(crate) fn plan<B: http_body::Body>(&self, request: &Request<B>, forwarded: bool) -> Plan {
        let (mut lookup, mut store, mut rules) = (true, true, RequestRules::default());
        if self.request_directives == RequestDirectives::Honor {
            let cc = directives::cache_control(request.headers());
            // RFC 9111 §5.4: Pragma counts only without Cache-Control
            let pragma_no_cache = !request.headers().contains_key(header::CACHE_CONTROL)
                && request
                    .headers()
                    .get(header::PRAGMA)
                    .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"no-cache"));
            if self.http.is_some() {
                rules = RequestRules {
                    no_cache: cc.no_cache || pragma_no_cache,
                    max_age: cc.max_age,
                    max_stale: cc.max_stale,
                    min_fresh: cc.min_fresh,
                    only_if_cached: cc.only_if_cached,
                };
            } else {
                lookup = !(cc.no_cache || cc.max_age == Some(0) || pragma_no_cache);
            }
            store = !cc.no_store;
        }
        // one pass over the request's fields: cheaper than hashing each unkeyed name into the
        // map, and requests carry few headers
        if request.headers().iter().any(|(name, value)| {
            (self.unkeyed.contains(name)
                && !(forwarded && key::FORWARDING.contains(&name.as_str())))
                || self.unkeyed_spelled_with_underscores(name)
                || announces_body(name, value)
        }) || carries_body_without_length(request)
            || target_and_host_disagree(request)
        {
            store = false;
        }
        Plan {
            lookup,
            store,
            rules,
        }
    }
}

impl Config {
    /// Whether `name` is an unkeyed header spelled with `_` for `-` (`X_Forwarded_Host`):
    /// CGI and WSGI servers, and frameworks on them (Werkzeug's `ProxyFix`), read it as the
    /// dashed name, so it would poison the entry as the dashed one does. Never keyed, even
    /// from a trusted proxy, which writes the dashed names.
    fn unkeyed_spelled_with_underscores(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        name.contains('_')
            && self.unkeyed.iter().any(|unkeyed| {
                unkeyed.as_str().len() == name.len()
                    && unkeyed
                        .as_str()
                        .bytes()
                        .zip(name.bytes())
                        .all(|(u, n)| u == n || (u == b'-' && n == b'_'))
            })
    }
}

pub(crate) struct Plan {
    pub(crate) lookup: bool,
    pub(crate) store: bool,
    pub(crate) rules: RequestRules,
}

/// Whether a request field announces a body: a `Transfer-Encoding`, or a `Content-Length`
/// other than 0 (RFC 9112 §6.3). A body on a `GET` or `HEAD` is not in the key, so its answer
/// is never stored ("fat GET" poisoning); an unreadable length counts as a body.
fn announces_body(name: &HeaderName, value: &HeaderValue) -> bool {
    *name == header::TRANSFER_ENCODING
        || (*name == header::CONTENT_LENGTH && value.as_bytes().iter().any(|&b| b != b'0'))
}

/// Whether an absolute-form target (`GET http://victim.example/p`, or HTTP/2's
/// `:authority`) names another host than the request's `Host`. The key takes the target's
/// authority, as RFC 9112 §3.2.2 tells a server to, but an application that builds links from
/// `Host` would write the other host into the entry the target's users get; so such an
/// answer is not stored. Hosts are compared as the key spells them
/// ([`key::normal_host`]): letter case, a trailing dot and the default port do not count.
fn target_and_host_disagree<B>(request: &Request<B>) -> bool {
    let Some(authority) = request.uri().authority() else {
        return false;
    };
    let Some(host) = request.headers().get(header::HOST) else {
        return false;
    };
    // compared in the one spelling the key uses: no copy in the usual case (HTTP/2 has an
    // authority on every request)
    let scheme = request.uri().scheme_str().unwrap_or("http");
    key::normal_host(authority.as_str().as_bytes(), scheme)
        != key::normal_host(host.as_bytes(), scheme)
}

/// Whether an HTTP/2 or HTTP/3 request carries a body it announced no length for: DATA
/// frames need no `Content-Length` there, so the framing headers do not tell. HTTP/1 bodies
/// are always framed by a header ([`announces_body`]), so only later versions ask the body,
/// and a body type that cannot tell it has ended (one keeping `http_body::Body`'s default
/// `is_end_stream`, as some wrappers do) counts as carrying one: not storing is the safe side.
fn carries_body_without_length<B: http_body::Body>(request: &Request<B>) -> bool {
    matches!(
        request.version(),
        http::Version::HTTP_2 | http::Version::HTTP_3
    ) && !request.body().is_end_stream()
}

/// Whether a `GET` asks for ranges: `Request-Range` is the pre-standard spelling Apache httpd
/// and Squid still read, and the answer to it is no more the whole than the answer to a
/// `Range`.
// inline: on every miss, and written in `call` before it was a function of its own
#[inline]
pub(crate) fn asks_ranges(headers: &HeaderMap) -> bool {
    headers.contains_key(header::RANGE) || headers.contains_key("request-range")
}
