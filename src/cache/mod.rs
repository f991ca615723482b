//! Whole responses cached in the store, akin to Django's `cache_page`, with the rules a shared
//! cache in front of many users must follow.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_redis_http::cache::ResponseCacheLayer;
//! use tower_redis_http::store::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30)).build()?;
//! let app = ServiceBuilder::new().layer(cache).service_fn(|_req: Request<String>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from("articles"))))
//! });
//!
//! let first = app.clone().oneshot(Request::get("/articles/").body(String::new())?).await?;
//! assert!(first.headers()["cache-status"].to_str()?.contains("fwd=uri-miss"));
//! // let the miss's body go by: that is when it is stored
//! http_body_util::BodyExt::collect(first.into_body()).await?;
//! # tokio::task::yield_now().await;
//! let second = app.oneshot(Request::get("/articles/").body(String::new())?).await?;
//! assert!(second.headers()["cache-status"].to_str()?.contains("hit"));
//! # Ok(()) }
//! ```
//!
//! # What is cached
//!
//! `GET` and `HEAD` requests (`HEAD` answered from the `GET` entry; `HEAD` responses are never
//! stored). Other methods pass through untouched. A response is stored when:
//!
//! - its status is one of the configured ones (200 by default, like Django);
//! - its body is at most the bound (1 MiB by default); a larger or longer streaming body passes
//!   through, buffered no further than the bound;
//! - it has no `Cache-Control: private`, `no-store` or `no-cache` (names compared
//!   case-insensitively, qualified forms such as `private="Set-Cookie"` included);
//! - it sets no cookie (unless [`ResponseCacheBuilder::store_responses_setting_cookies`]; a hit
//!   never replays `Set-Cookie`);
//! - the request had no credentials, or the response says `public` or `s-maxage` (RFC 9111
//!   §3.5). A credential is `Authorization`, or a token the crate's auth layer accepted from
//!   any source (a cookie, another header, a query parameter): the layer marks the request,
//!   which a cache inside it sees, and the response, which a cache outside it sees. A query
//!   parameter the auth layer reads tokens from is never part of a key;
//! - it has no `Vary: *`;
//! - the request carries none of the unkeyed headers below, and no body.
//!
//! Interim (1xx) responses are never stored, whatever [`ResponseCacheBuilder::statuses`]
//! lists: a `tower` service answers with its final response only, so the one stored is that,
//! without the fields of any `103 Early Hints` before it. Passing a `103` on to the client is
//! the server's part; hyper's server (1.x) sends no 1xx but `100 Continue`, which reaches a
//! client that waits for it as soon as the request body is read.
//!
//! The entry lives for the layer's timeout, shortened by the response's `s-maxage` or
//! `max-age`; a zero lifetime stores nothing. Hop-by-hop headers and `Set-Cookie` are not
//! stored. The request's own `Cache-Control` is ignored unless [`RequestDirectives::Honor`].
//!
//! # The HTTP-cache mode
//!
//! [`ResponseCacheLayer::http_cache`] makes the layer a shared HTTP cache (RFC 9111), as
//! squid or Varnish in front of a service, instead of Django's `cache_page`:
//!
//! - **Freshness** comes from the response: `s-maxage`, then `max-age`, then `Expires` minus
//!   `Date` (an invalid `Expires` is already stale). Without them a response is stored only
//!   when it has a validator (`ETag`, `Last-Modified`), and is then revalidated before every
//!   use, unless [`ResponseCacheBuilder::heuristic_freshness`] is on (statuses of RFC 9110
//!   §15.1, or `public`, only).
//! - **Storing** follows RFC 9111 §3: any status but 1xx, 206 (kept as pieces, below) and
//!   304; no `no-store` (unless
//!   `must-understand` on a status it understands); `private` and `no-cache` qualified with
//!   field names store the response without those fields, unqualified `private` is never
//!   stored and unqualified `no-cache` only with a validator; an `Authorization`ed request's
//!   response only with `public`, `s-maxage` or `must-revalidate`. A cache adds the `Date` a
//!   response lacks (RFC 9110 §6.6.1).
//! - **Targeted fields** (RFC 9213): `CDN-Cache-Control` (or the fields of
//!   [`ResponseCacheBuilder::targeted_cache_control`], in their order) replaces
//!   `Cache-Control` and `Expires` for this cache when it has a valid, non-empty value: a
//!   response with `Cache-Control: no-store` and `CDN-Cache-Control: max-age=60` is stored
//!   for a minute. What keeps a response from other users stays `Cache-Control`'s to say
//!   (see [Security](#security)). The field is forwarded downstream, for a CDN in front. Off
//!   in the `cache_page` mode unless asked for.
//! - **Requests** are heard ([`RequestDirectives::Honor`] is this mode's default): `no-cache`
//!   or `Pragma: no-cache` and a `max-age` the entry exceeds revalidate it; `min-fresh`
//!   demands freshness left; `max-stale` accepts a stale copy (not one marked
//!   `must-revalidate`, `proxy-revalidate` or `s-maxage`); `only-if-cached` answers `504`
//!   rather than forwarding; `no-store` keeps the response from being stored.
//! - **Age** is RFC 9111 §4.2.3's `current_age`: the larger of the handler's `Age` plus the
//!   time it took and the apparent age from `Date`, plus the time spent in the store.
//! - **Revalidation**: entries are kept past their freshness
//!   ([`ResponseCacheBuilder::keep_stale`], 10 minutes by default, or the RFC 5861 windows).
//!   A stale entry with a validator is revalidated by sending the request on with
//!   `If-None-Match` / `If-Modified-Since` in place of the client's; a `304` updates the
//!   stored fields and freshness and the stored body is served
//!   (`Cache-Status: ...; fwd=stale; fwd-status=304`); any other answer replaces the entry
//!   as a miss would. A `HEAD` over a stale entry (or one the client asks to revalidate) goes
//!   on too, and its `200` or `410` freshens the stored `GET` response when the status,
//!   `ETag`, `Last-Modified` and `Content-Length` match; any other answer but a server error
//!   deletes it (RFC 9111 §4.3.5).
//! - **`stale-while-revalidate`**: within the window, every request is served the stale copy
//!   at once (`ttl` negative in `Cache-Status`), and the first to find it stale revalidates it
//!   in a spawned Tokio task: its own request, made conditional, goes on to the inner service
//!   and the answer is stored as above. One refresh runs per process (the single flight) and,
//!   with the stampede lock, one across processes. A refresh that fails (a 5xx or an error)
//!   leaves the entry as it was: the next request in the window is served it at once and
//!   refreshes again. This is why the service asks for `Send + 'static` inner service,
//!   futures and bodies, as `axum` and `hyper` servers have anyway.
//! - **`stale-if-error`**: when the revalidation fails with a 5xx or an error, the stale copy
//!   is served within the window (`fwd=stale; fwd-status=503`). `must-revalidate` and
//!   `proxy-revalidate` forbid every stale use: their failures pass through.
//!
//! # Ranges
//!
//! A `GET` with a `Range` of `bytes` (RFC 9110 §14) is answered from a stored `200` in both
//! modes: `206` with `Content-Range` for one range (first-last, open-ended `500-`, suffix
//! `-500`), `multipart/byteranges` for several (overlapping and adjacent ones merged), `416`
//! with `Content-Range: bytes */<length>` when none is satisfiable. `If-Range` gets the
//! range only with the stored strong `ETag`, or the exact `Last-Modified` when it is strong
//! (a minute or more before `Date`); otherwise the whole `200`. Another unit, more than 16
//! ranges, or an invalid range set is ignored, as if absent. `HEAD` ignores `Range`.
//!
//! With no complete entry, the request goes on as it came, in no single flight. In the
//! HTTP-cache mode its `206` is kept (RFC 9111 §3.3) under the rules of the whole response,
//! when its `Content-Range` names the whole's length and that fits the body bound: later
//! ranges those pieces cover are answered from them, and pieces of the same representation
//! (the same strong `ETag`, or strong `Last-Modified`) combine (§3.4), the newest piece's
//! fields replacing the stored ones of the same name and the others kept. Once the pieces
//! make up the whole, they become the complete entry, which a plain `GET` then hits. Pieces
//! of another representation replace the stored ones. A stale complete entry is revalidated
//! whole (without the `Range`), and its `304` answers the range. `Request-Range`, the
//! pre-standard spelling some origins still answer, counts as a range request for storing.
//!
//! A representation keeps at most 32 pieces: a partial response that would make more
//! starts them anew. Invalidating a URL drops every variant's pieces, in the store and in
//! each process. A range request already on its way to the origin when an invalidation
//! lands stores its piece after it, combined with the pieces it read before: harmless when
//! the origin changes its strong validator with its bytes, as RFC 9110 §8.8.1 requires of
//! a strong validator, and stale bytes under the old one if it does not.
//!
//! # What forms a key
//!
//! The **scheme** (the URI's, else the configured default), the **host** the application sees
//! (the URI authority, else `Host`; lowercased; **never** `X-Forwarded-Host`), the **path** and
//! the **query** (as received, or with parameters sorted); the store's namespace (prefix and
//! version); and the values of the request headers the response names in `Vary`, normalised as
//! RFC 9111 §4.1 allows: lines joined and trimmed, whitespace inside `Accept`-style lists
//! dropped, and `Accept-Language` / `Accept-Encoding` lowercased and sorted by weight (equal
//! weights by name), so `en-US, fr;q=0.5` and `fr;q=0.50,EN-us` share an entry. The Vary
//! list is learned per URL and stored beside the entries (as Django's
//! `learn_cache_key` does); each entry records its Vary list and the hash of its varied values,
//! and is served only to requests whose values match. Keys are
//! `<prefix>{<url>}:<variant hash>`, for example `cache:{https://shop.example/a?x=1}:-`: the
//! URL readable, so `redis-cli --scan --pattern` finds a site's entries, and one Redis Cluster
//! slot per URL. A URL longer than 512 bytes, or whose host holds other than host characters, is
//! replaced by `#` and its 128-bit SHA-256, so keys stay bounded and distinct.
//!
//! # Security
//!
//! Every request input that is not in the key is a cache-poisoning surface if the application
//! reflects it. Requests carrying `Forwarded`, `X-Forwarded-Host`, `X-Forwarded-Server`,
//! `X-Forwarded-Scheme`, `X-Forwarded-Proto`, `X-Forwarded-Port`, `X-Forwarded-Prefix`,
//! `X-Host`, `X-Original-Host`, `X-Original-URL`, `X-Rewrite-URL`, a method-override header
//! or another name frameworks read the scheme, host or path from (`X-Forwarded-Ssl`,
//! `X-Url-Scheme`, `X-Scheme`, `X-Script-Name`, `X-Forwarded-Uri`, ...; spelled with `_` for
//! `-` too, as CGI and WSGI servers read them) are answered from the cache but their
//! responses are never stored, so they cannot plant an entry for other users
//! ([`ResponseCacheBuilder::unkeyed_request_headers`] lists them all, and changes the list).
//! Behind a reverse proxy that adds forwarding headers to every request, name it in
//! [`ResponseCacheBuilder::trusted_proxies`]: from its address, `X-Forwarded-Proto` and
//! `X-Forwarded-Host` become the key's scheme and host and the other forwarding headers are
//! keyed by their values, so pages are stored again; from any other peer they stay refused.
//! Nor is the answer to a request whose absolute-form target names another host than its
//! `Host` (`GET http://victim.example/p` with `Host: evil.example`): the key takes the
//! target's authority (RFC 9112 §3.2.2), while an application building links from `Host`
//! would write the other one into the page.
//! Nor is the answer to a `GET` or `HEAD` that carries a body (a "fat GET": a non-zero
//! `Content-Length` or a `Transfer-Encoding`, or over HTTP/2 and 3, where a body needs no
//! length, a request body not at its end): the body is not in the key, and an application
//! that reads it would store what the attacker sent. Over HTTP/2, a request body type that
//! cannot tell it has ended (one that keeps `http_body::Body`'s default `is_end_stream`)
//! counts as a body, so such requests are not stored.
//! Storing is decided from the response's status and headers, never from the URL's extension
//! (web cache deception). Place the cache **inside** the auth layer for per-user pages that
//! vary on `Authorization`, or rely on the `Authorization` rule above.
//!
//! **`Set-Cookie` is the one RFC 9111 permission this layer does not take by default.** A
//! shared cache may store a response that sets a cookie and replay the cookie to everyone it
//! serves the entry to; a session or CSRF cookie so replayed logs every later visitor in as
//! the first, the classic cache-poisoning failure of shared caches in front of frameworks that
//! set a cookie on any page. So a response with `Set-Cookie` is not stored (it is passed
//! through, `Cache-Status: ...; detail=set-cookie`).
//! [`ResponseCacheBuilder::store_responses_setting_cookies`] stores such responses without
//! the cookie, and, in the HTTP-cache mode only, [`ResponseCacheBuilder::replay_set_cookie`]
//! stores and replays it as RFC 9111 allows: for origins whose cookies are the same for
//! everyone, or that mark per-user ones `private` or `no-cache="Set-Cookie"` (those are never
//! stored, whatever the setting).
//!
//! **A targeted field never makes a private response shared by default.** RFC 9213 lets
//! `CDN-Cache-Control` replace `Cache-Control` whole, but a targeted field is usually set for
//! a whole site (a CDN rule, a framework setting) while `private` is set page by page: obeyed
//! whole, a site-wide `CDN-Cache-Control: max-age=60` would store one user's `private` page
//! and serve it to the next. So under a targeted field, `Cache-Control`'s `private` still
//! keeps the response unstored, the fields its `private="..."` and `no-cache="..."` name
//! (`Set-Cookie`) are still never stored or replayed, and the answer to a request with
//! `Authorization` is still stored only when `Cache-Control` itself says `public`, `s-maxage`
//! or `must-revalidate`; the targeted field decides freshness and the rest.
//! [`ResponseCacheBuilder::targeted_cache_control_overrides_private`] obeys RFC 9213 in full.
//!
//! **`must-revalidate` lets a response to an `Authorization`ed request be stored** in the
//! HTTP-cache mode, as RFC 9111 §3.5 says, and it is then served to any request for the URL
//! while fresh, whoever sends it. The key does not hold `Authorization`: an origin whose
//! per-user pages say `must-revalidate` (without `private`) must vary on the credential, or
//! the cache must sit inside the auth layer with the user in the key.
//!
//! # Hits
//!
//! A hit answers the stored status, headers and body, with `Age` (resident time plus any `Age`
//! the handler sent), `Cache-Status: tower-redis-http; hit; ttl=<seconds left>` (RFC 9211), and
//! optionally `X-Cache: HIT`. `If-None-Match` (against the stored `ETag`) and
//! `If-Modified-Since` (against `Last-Modified`) are answered `304 Not Modified`;
//! [`ResponseCacheBuilder::compute_etag`] gives entries without an `ETag` a strong one. The
//! body is served as a slice of the bytes the store returned. A miss carries
//! `Cache-Status: ...; fwd=uri-miss` or `fwd=vary-miss`, with `detail=storing` when the
//! response is being stored.
//!
//! `detail=storing` means that the response is storable and its body is being recorded: the
//! header leaves before the body has gone by, so the entry is written only once it has, whole.
//! A body that ends in an error (an origin that truncates it, a connection that drops) is not
//! stored, and neither is a write the store then refuses (Redis out of memory, a read-only
//! replica after a failover: logged at `WARN` with the URL, and for a second after such a
//! refusal misses no longer say `storing`). RFC 9211's `stored` is not sent, since at the
//! header's time no write is certain. An empty body is stored at once, since servers may never
//! poll it.
//!
//! A hit costs one store round trip (the Vary list of each URL is also kept in process for up
//! to a minute); a miss that stores costs three on Redis: the lookup, the stampede lock, and
//! one script that stores the entry and releases the lock (two without the lock).
//!
//! # Single flight and stampedes
//!
//! Concurrent misses on one key in one process run the handler once, and the others wait for
//! its answer. Across processes sharing a Redis, the one request per process that would run
//! the handler first takes a short lock in Redis ([`ResponseCacheBuilder::stampede_lock`],
//! `SET NX PX` with an owner token): only the holder runs the handler, the other instances
//! poll for its entry (or serve the stale copy within `stale-while-revalidate`). The entry's
//! write releases the lock in the same atomic step. Taking the lock reads the entry in the
//! same script, so a request whose lookup came just before another instance's write serves
//! that entry rather than rendering it again.
//!
//! A slow origin is when this matters most, so a waiting request never calls the handler
//! beside a leader that is still at work:
//! - past the flight wait ([`ResponseCacheBuilder::single_flight`], 5 s) a waiter is counted
//!   as slow (`flight_slow`) and keeps waiting; the lock holder renews its lock every third
//!   of the lock's life, so the other instances keep waiting too;
//! - the flight deadline ([`ResponseCacheBuilder::single_flight_deadline`], 30 s) bounds the
//!   leader's silence, not its whole time: its response's head and each piece of its body
//!   count as work, so a big page from a slow but healthy origin is waited for to its end,
//!   up to [`ResponseCacheBuilder::single_flight_max_wait`] (2 minutes) in all, so that a
//!   body that trickles forever does not hold every other request for the page.
//!   A leader silent for the deadline is taken to hang: its waiters are answered with the
//!   stale copy where `stale-if-error` allows one, else `504`, the next request leads a new
//!   flight, and the holder stops renewing its lock, so that a handler that hangs holds the
//!   key no longer (an instance waiting on the lock takes over once it expires);
//! - a leader whose revalidation fails (a server error, or the handler's error) and that is
//!   answered with its stale copy under `stale-if-error` tells its followers, which serve
//!   their stale copies at once under the same rule (else revalidate themselves), rather than
//!   lead a new flight each that waits as long again;
//! - a leader whose request goes away unfinished (its client hung up, or the handler failed)
//!   hands the flight on: in the process, one waiter leads and the others wait on it; across
//!   processes, its lock is released (or, if the process died, expires within its life) and
//!   one waiting instance takes it.
//!
//! # Invalidation
//!
//! A non-error response to any method not known to be safe (`POST`, `PUT`, `DELETE`, `PATCH`,
//! and extension methods such as `PURGE` or `M-SEARCH`; `GET`, `HEAD`, `OPTIONS`, `TRACE` and
//! the registry's safe `PROPFIND`, `REPORT`, `SEARCH` and `PRI` are not) invalidates every
//! stored variant of the target URL, and of its `Location` and `Content-Location` when they are on the same
//! origin (RFC 9111 §4.4), before the response goes out. [`CacheInvalidator`] (from
//! [`ResponseCacheLayer::invalidator`]) invalidates one URL, a URL pattern (with `SCAN`), or
//! the whole namespace by a generation bump.
//!
//! # Failures
//!
//! Fail open by default: a store error or timeout sends the request to the inner service as if
//! there were no cache, within the store's command timeout. A stored entry that cannot be read
//! (corrupt, truncated, another format or version) is logged, deleted and treated as a miss.
//! Storing happens in a spawned Tokio task after the body has gone by.

// The folder reads bottom-up. `directives`, `policy`, `validators` and `status` are the pure
// HTTP rules (Cache-Control read, storing and freshness decided, entity tags compared,
// `Cache-Status` values made); `entry` is the stored format (pieces included), `key` the keys,
// `ranges` the Range answers. `flight`, `lock`, `memo` and `refusal` coordinate requests (in
// this process, across processes, for unstorable URLs, in answers of the cache's own);
// `recent` keeps the pieces this process wrote. `config` is the hub: settings and run-time
// state, importing none of the files that extend it. Above it `answer` (hits and refusals),
// `storage` and `recorder` (writes), `invalidate`, `request` (a request's plan and context)
// and `origin` (the inner service's answer made the client's); then `flow` (lookup, flight,
// lock, call), `future` and `service`. `builder` collects the settings, and `layer` checks
// them into a `config` and wraps the service.
mod answer;
mod builder;
mod config;
mod directives;
mod entry;
mod flight;
mod flow;
mod future;
mod invalidate;
mod key;
mod layer;
mod lock;
mod memo;
mod origin;
mod policy;
mod ranges;
mod recent;
mod recorder;
mod refusal;
mod request;
mod service;
mod status;
mod storage;
mod validators;
#[cfg(any(fuzzing, test))]
pub(crate) use self::{directives::cache_control, entry::Entry, ranges::answer_ranges};

pub use self::builder::ResponseCacheBuilder;
pub use self::config::RequestDirectives;
pub use self::future::ResponseFuture;
pub use self::invalidate::{CacheInvalidator, escape_pattern};
pub use self::key::QueryOrder;
pub use self::layer::ResponseCacheLayer;
pub use self::refusal::CacheRefusal;
pub use self::service::ResponseCache;
pub use crate::body::ResponseBody;
