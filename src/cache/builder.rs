//! The layer's builder: each setting, what it changes, and its default.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{Response, StatusCode};

use super::config::RequestDirectives;
use super::directives::Targeting;
use super::key::QueryOrder;
use super::policy::HttpRules;
use super::refusal::{CacheRefusal, RefusalFn};
use crate::FailurePolicy;
use crate::peer::PeerFn;
use crate::store::AnyStore;

/// Configures a [`ResponseCacheLayer`](super::ResponseCacheLayer); start from
/// [`ResponseCacheLayer::cache_page`](super::ResponseCacheLayer::cache_page).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use tower_redis_http::cache::{QueryOrder, ResponseCacheLayer};
/// use tower_redis_http::store::MemoryStore;
///
/// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30))
///     .statuses([StatusCode::OK, StatusCode::NOT_FOUND])
///     .max_body(256 * 1024)
///     .query_order(QueryOrder::Sorted)
///     .patch_response_headers(true)
///     .compute_etag(true)
///     .x_cache_header(true)
///     .build()?;
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[must_use]
pub struct ResponseCacheBuilder {
    pub(super) store: AnyStore,
    pub(super) timeout: Duration,
    pub(super) http: Option<HttpRules>,
    pub(super) statuses: Vec<StatusCode>,
    pub(super) max_body: usize,
    pub(super) query: QueryOrder,
    pub(super) request_directives: RequestDirectives,
    pub(super) store_cookies: bool,
    pub(super) targeted: Targeting,
    pub(super) patch_headers: bool,
    pub(super) x_cache: bool,
    pub(super) status_detail: bool,
    pub(super) name: String,
    pub(super) compute_etag: bool,
    pub(super) compress_above: Option<usize>,
    pub(super) flight_wait: Option<Duration>,
    pub(super) flight_deadline: Duration,
    pub(super) flight_max_wait: Duration,
    pub(super) lock_ttl: Option<Duration>,
    pub(super) on_store_error: FailurePolicy,
    pub(super) refusal: Option<RefusalFn>,
    pub(super) prefix: String,
    pub(super) default_scheme: String,
    pub(super) unkeyed: Vec<HeaderName>,
    pub(super) trusted: Vec<String>,
    pub(super) peer: PeerFn,
    pub(super) hit_for_miss: Duration,
    /// HTTP-cache options set on a `cache_page` builder, refused by `build`.
    pub(super) http_only: Vec<&'static str>,
}

impl std::fmt::Debug for ResponseCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCacheBuilder")
            .field("timeout", &self.timeout)
            .field("statuses", &self.statuses)
            .finish_non_exhaustive()
    }
}

impl ResponseCacheBuilder {
    /// The statuses that may be stored. Defaults to 200 only, as Django, in the `cache_page`
    /// mode; in the HTTP-cache mode to every status the RFC 9111 rules let it store (an empty
    /// list there means the same).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::StatusCode;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30))
    ///     .statuses([StatusCode::OK, StatusCode::MOVED_PERMANENTLY])
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// The largest body stored, in bytes; a larger or longer streaming body passes through,
    /// buffered no further than this. Defaults to 1 MiB.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// How the query string is keyed. Defaults to [`QueryOrder::AsReceived`].
    pub fn query_order(mut self, query: QueryOrder) -> Self {
        self.query = query;
        self
    }

    /// Whether the request's `Cache-Control` counts. Defaults to [`RequestDirectives::Ignore`].
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::{RequestDirectives, ResponseCacheLayer};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30))
    ///     .request_directives(RequestDirectives::Honor)
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn request_directives(mut self, directives: RequestDirectives) -> Self {
        self.request_directives = directives;
        self
    }

    /// Stores responses that set cookies, without their `Set-Cookie` fields: a hit never
    /// replays a cookie. Defaults to not storing them at all.
    pub fn store_responses_setting_cookies(mut self, on: bool) -> Self {
        self.store_cookies = on;
        self
    }

    /// The targeted cache-control fields (RFC 9213) this cache obeys, most precedent first:
    /// the first of them a response carries with a valid, non-empty value decides storing and
    /// reuse for this cache (`max-age`, `s-maxage`, `no-store`, `no-cache`, `private`,
    /// `must-revalidate`, the RFC 5861 windows, ...), and its `Cache-Control` and `Expires`
    /// are then ignored, but for what keeps a response from other users: `Cache-Control`'s
    /// `private`, its field-qualified `private` / `no-cache`, and the permission to share the
    /// answer to a request with credentials keep their effect unless
    /// [`targeted_cache_control_overrides_private`](Self::targeted_cache_control_overrides_private).
    /// A field that is not a valid Structured Fields dictionary (a
    /// non-integer `max-age`, a stray character) is ignored as if absent; directive names are
    /// read in any letter case.
    ///
    /// Defaults to `CDN-Cache-Control` in the HTTP-cache mode, and to none in the
    /// `cache_page` mode. A deployment-specific name (`Acme-Cache-Control`) goes first to
    /// override `CDN-Cache-Control` for this cache only; an empty list turns targeting off.
    ///
    /// The fields are **forwarded** with the response, stored ones included: this cache does
    /// not consume them, so a CDN in front of it applies the same policy, and browsers ignore
    /// them. Strip them in the origin's or the edge's configuration to hide them.
    ///
    /// # Example
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::http_cache(MemoryStore::new())
    ///     .targeted_cache_control([
    ///         HeaderName::from_static("acme-cache-control"),
    ///         HeaderName::from_static("cdn-cache-control"),
    ///     ])
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn targeted_cache_control(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.targeted.fields = names.into_iter().collect();
        self
    }

    /// Lets a targeted field (see [`targeted_cache_control`](Self::targeted_cache_control))
    /// replace **all** of `Cache-Control`, as RFC 9213 has it: its `private`, its
    /// field-qualified `private` and `no-cache` (such as `no-cache="Set-Cookie"`), and the
    /// permission a response to a request with credentials needs to be shared (RFC 9111
    /// §3.5). Defaults to off.
    ///
    /// Off, a targeted field sets freshness and storing for this cache, but a response whose
    /// `Cache-Control` says `private` is still never stored, the fields it names in
    /// `private="..."` or `no-cache="..."` are still never stored or replayed, and the answer
    /// to a request with `Authorization` is still stored only when `Cache-Control` itself says
    /// `public`, `s-maxage` or `must-revalidate`. Targeted fields are often set for a whole
    /// site (a CDN rule, a framework setting) while `private` is set page by page: with the
    /// override on, one user's page marked `private` is served to the next user as soon as a
    /// site-wide `CDN-Cache-Control: max-age=60` reaches it. Turn it on only when every
    /// targeted field is written with the page's privacy in mind.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::http_cache(MemoryStore::new())
    ///     .targeted_cache_control_overrides_private(true)
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn targeted_cache_control_overrides_private(mut self, on: bool) -> Self {
        self.targeted.overrides_private = on;
        self
    }

    /// Stores responses that set cookies **with** their `Set-Cookie` fields, and replays them
    /// on every hit, as RFC 9111 lets a shared cache do. HTTP-cache mode only. Defaults to
    /// off.
    ///
    /// This is the one RFC 9111 behaviour the layer leaves off by default: a response that
    /// sets a session or CSRF cookie, stored and replayed, hands one user's cookie to every
    /// user after them (see the [security notes](super#security)). Turn it on only in front
    /// of an origin whose cookies are the same for everyone (a consent banner's, a load
    /// balancer's affinity cookie), or that marks per-user responses `private` or
    /// `no-cache="Set-Cookie"`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::http_cache(MemoryStore::new())
    ///     .replay_set_cookie(true)
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn replay_set_cookie(mut self, on: bool) -> Self {
        match &mut self.http {
            Some(rules) => rules.replay_cookies = on,
            None if on => self.http_only.push("replay_set_cookie"),
            None => {}
        }
        self
    }

    /// Adds `Cache-Control: max-age` (the smaller of the handler's and the timeout) and
    /// `Expires` (only if absent) to responses it stores, like Django's
    /// `patch_response_headers`. Defaults to off.
    pub fn patch_response_headers(mut self, on: bool) -> Self {
        self.patch_headers = on;
        self
    }

    /// Adds `X-Cache: HIT` or `MISS`, for tools that read it. Defaults to off
    /// (`Cache-Status` is always sent).
    pub fn x_cache_header(mut self, on: bool) -> Self {
        self.x_cache = on;
        self
    }

    /// Whether a response that was not stored says why in `Cache-Status`, with RFC 9211's
    /// `detail` parameter: `tower-redis-http; fwd=uri-miss; detail=private`. The reasons
    /// restate what the response or the request showed (`no-store`, `private`, `no-cache`,
    /// `set-cookie`, `authorization`, `vary-star`, `zero-ttl`, `status`, `no-freshness`,
    /// `too-large`, `stale-on-arrival`, `vary-unreadable`), which a client can see anyway,
    /// except `too-large`, which tells the layer's body bound, and `authorization`, which
    /// tells that credentials keep a page out of a shared cache: turn it off where even that
    /// says too much to clients. A response passed by the memo of URLs known to be
    /// uncacheable says `fwd=uri-miss` alone. Defaults to on.
    pub fn cache_status_detail(mut self, on: bool) -> Self {
        self.status_detail = on;
        self
    }

    /// The cache's name in `Cache-Status` (an RFC 8941 token). Defaults to `tower-redis-http`.
    pub fn cache_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Gives stored entries without an `ETag` a strong one computed from the body, so hits can
    /// answer `If-None-Match` with 304. Defaults to off.
    pub fn compute_etag(mut self, on: bool) -> Self {
        self.compute_etag = on;
        self
    }

    /// Stores bodies of at least `threshold` bytes LZ4-compressed when that makes them
    /// smaller, as django-redis's compressor option does: less Redis memory and network for
    /// large pages, at the price of a decompression (and a copy) per hit. Each entry records
    /// how its body is stored, so entries written before the setting changed stay readable.
    /// Defaults to off, so hits serve the stored bytes without copying them.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30))
    ///     .compress_above(4096)
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn compress_above(mut self, threshold: usize) -> Self {
        self.compress_above = Some(threshold);
        self
    }

    /// Single flight: concurrent misses on one key (in this process, and across instances
    /// sharing a Redis through the [stampede lock](Self::stampede_lock)) run the handler once,
    /// and the others wait for its answer. `wait` is the flight's patience: a leader still at
    /// work after it is counted as slow (`cache="flight_slow"`) and waited for all the same,
    /// up to the [deadline](Self::single_flight_deadline). A follower never calls the handler
    /// itself while the leader works, since that is when the origin is slow. A leader whose
    /// request goes away unfinished (its client hung up) hands the flight to one follower.
    /// `None` turns single flight off. Defaults to 5 seconds.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30))
    ///     .single_flight(Some(Duration::from_secs(2)))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn single_flight(mut self, wait: Option<Duration>) -> Self {
        self.flight_wait = wait;
        self
    }

    /// The longest a request waits on a [single flight](Self::single_flight) whose leader
    /// shows no work: no response head yet, or no piece of its body since the last. A leader
    /// at work is waited for to its end, however long a slow body takes. When the leader has
    /// been silent this long, the request gets the stale copy where its `stale-if-error`
    /// allows one (a slow origin is an error to the client, RFC 5861 §4), else `504 Gateway
    /// Timeout`; it does not call the handler beside the leader. Such a leader is taken to
    /// hang: the next request for the page leads a new flight (in another instance, once the
    /// leader's lock, no longer renewed, expires), so one hung handler cannot keep a page
    /// answering 504. Defaults to 30 seconds.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// // an origin that may take a minute under load: wait for it rather than pile on
    /// let cache = ResponseCacheLayer::http_cache(MemoryStore::new())
    ///     .single_flight_deadline(Duration::from_secs(60))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn single_flight_deadline(mut self, deadline: Duration) -> Self {
        self.flight_deadline = deadline;
        self
    }

    /// The longest a request waits on a [single flight](Self::single_flight) in all, however
    /// its leader works: a body that trickles forever (a byte now and then, never silent for
    /// the [deadline](Self::single_flight_deadline)) must not hold every other request for
    /// the page with it. When it passes, the request is answered as at the deadline (the
    /// stale copy where `stale-if-error` allows, else `504`); the leader goes on. Never
    /// shorter than the deadline. Defaults to 2 minutes.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// // pages of tens of megabytes from a slow origin: wait up to ten minutes for one
    /// let cache = ResponseCacheLayer::http_cache(MemoryStore::new())
    ///     .single_flight_max_wait(Duration::from_secs(600))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn single_flight_max_wait(mut self, max_wait: Duration) -> Self {
        self.flight_max_wait = max_wait;
        self
    }

    /// How long the cross-process stampede lock lives: with many instances on one Redis, a
    /// miss or a stale entry makes one instance run the handler while the others wait (while
    /// the lock lives) for its entry, or serve
    /// the stale copy within `stale-while-revalidate`. The holder renews the lock every third
    /// of this while it works, however slow the origin, as long as it is never silent for its
    /// flight deadline; the lock is released with the entry's write, and expires by itself
    /// within this time if its holder dies or hangs, after which a waiting instance takes
    /// over. `None` turns it off (a miss then costs one round trip less). A memory store,
    /// being per process, needs none. Defaults to 10 seconds.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30))
    ///     .stampede_lock(Some(Duration::from_secs(3)))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn stampede_lock(mut self, ttl: Option<Duration>) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// What a store failure does. Defaults to [`FailurePolicy::Open`]: the request goes to the
    /// inner service as if there were no cache.
    pub fn on_store_error(mut self, policy: FailurePolicy) -> Self {
        self.on_store_error = policy;
        self
    }

    /// Replaces the answers the cache gives by itself ([`CacheRefusal`]: 503 while the store
    /// fails under [`FailurePolicy::Closed`], 504 for `only-if-cached` with nothing stored).
    /// The layer adds its `Cache-Status` member to what `respond` returns. Defaults to
    /// [`CacheRefusal::response`], Django REST framework's JSON shape.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use tower_redis_http::cache::{CacheRefusal, ResponseCacheLayer};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::http_cache(MemoryStore::new())
    ///     .refusal_response(|refusal: &CacheRefusal| {
    ///         let mut response = http::Response::new(Bytes::from(refusal.detail()));
    ///         *response.status_mut() = refusal.status();
    ///         response
    ///     })
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn refusal_response(
        mut self,
        respond: impl Fn(&CacheRefusal) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.refusal = Some(Arc::new(respond));
        self
    }

    /// The key prefix inside the store's namespace. Defaults to `cache:`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The scheme keyed for requests whose URI has none (origin-form, as servers receive
    /// them). Defaults to `http`.
    pub fn default_scheme(mut self, scheme: impl Into<String>) -> Self {
        self.default_scheme = scheme.into();
        self
    }

    /// The request headers whose presence keeps a response from being stored, because
    /// applications may answer differently for them without the key knowing. Defaults to
    /// `Forwarded`, `X-Forwarded-Host`, `X-Forwarded-Server`, `X-Forwarded-Scheme`,
    /// `X-Forwarded-Proto`, `X-Forwarded-Port`, `X-Forwarded-Prefix`, `X-Host`,
    /// `X-Original-Host`, `X-Original-URL`, `X-Rewrite-URL`, `X-HTTP-Method-Override`,
    /// `X-HTTP-Method`, `X-Method-Override`, `Front-End-Https`, `X-Forwarded-Ssl`,
    /// `X-Url-Scheme`, `X-Forwarded-Uri`, `X-Forwarded-Method`, `X-Forwarded-Protocol`,
    /// `X-Forwarded-Path`, `X-Original-Uri`, `X-Original-Method`: the headers frameworks
    /// (Django, Rails and Rack, Werkzeug, IIS, Traefik and nginx set-ups) read to build
    /// absolute URLs, links and redirects, so an application that reflects one would store
    /// the attacker's value for the next client. Names are compared with `_` taken as `-`
    /// (`X_Forwarded_Host`), since CGI and WSGI servers read both spellings as one. Replacing
    /// the list drops these defaults.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::HeaderName;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// // behind a proxy that always sets X-Forwarded-Host, and an app that ignores it
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30))
    ///     .unkeyed_request_headers([HeaderName::from_static("x-original-url")])
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn unkeyed_request_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.unkeyed = names.into_iter().collect();
        self
    }

    /// How long a URL (or variant) whose answer could not be stored skips the single flight
    /// and the stampede lock, so that its requests go to the handler side by side instead of
    /// queueing behind one another for an entry that never comes (Varnish's hit-for-miss).
    /// A URL with nothing stored for it skips the lookup too, in this process (Varnish's
    /// hit-for-pass): a route that is never storable then costs no store round trip at all.
    /// Requests with and without `Authorization` are remembered apart, so a page that
    /// logged-in users get uncached is still looked up for everyone else.
    ///
    /// A storable answer ends the memo: one request in eight on the memo has its answer
    /// checked (the others pass with only `Cache-Status` added, which keeps a never-storable
    /// route nearly as cheap as no cache), and after a storable one the next request is
    /// looked up and stores as usual. An entry another instance stores while this one remembers the URL is found once
    /// the memo ends. Defaults to 2 minutes, as Varnish's built-in VCL; `Duration::ZERO`
    /// turns the memo off.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30))
    ///     .hit_for_miss(Duration::from_secs(30))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn hit_for_miss(mut self, memo: Duration) -> Self {
        self.hit_for_miss = memo;
        self
    }

    /// The reverse proxies (addresses or networks) whose forwarding headers are part of the
    /// key instead of a reason not to store. Defaults to none.
    ///
    /// Traefik, ingress-nginx and most load balancers add `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` to every request; without this, no response behind them is ever
    /// stored. From a trusted peer, `X-Forwarded-Proto` and `X-Forwarded-Host` stand for the
    /// key's scheme and host (the URL the page really has), and `Forwarded`,
    /// `X-Forwarded-Port` and `X-Forwarded-Prefix` are keyed by their values. From any other
    /// peer they stay a poisoning attempt: answered, never stored. The peer address is read as
    /// [`peer_address`](Self::peer_address) says.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30))
    ///     .trusted_proxies(["10.0.0.0/8"])
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn trusted_proxies<T: Into<String>>(
        mut self,
        networks: impl IntoIterator<Item = T>,
    ) -> Self {
        self.trusted = networks.into_iter().map(Into::into).collect();
        self
    }

    /// Where the peer address is found in the request extensions. Defaults to a
    /// `std::net::SocketAddr` or `IpAddr` extension, or (with the `axum` feature) axum's
    /// `ConnectInfo<SocketAddr>`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// #[derive(Clone)]
    /// struct Peer(IpAddr);
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30))
    ///     .trusted_proxies(["127.0.0.1"])
    ///     .peer_address(|ext| ext.get::<Peer>().map(|p| p.0))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn peer_address(
        mut self,
        peer: impl Fn(&http::Extensions) -> Option<std::net::IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.peer = Arc::new(peer);
        self
    }

    /// Turns on heuristic freshness (RFC 9111 §4.2.2) for responses without explicit
    /// freshness whose status RFC 9110 §15.1 marks heuristically cacheable (or that say
    /// `public`): 10% of the time since `Last-Modified`, at most `bound`; `bound` when there is
    /// no `Last-Modified`. HTTP-cache mode only. Defaults to off: such responses are stored only
    /// when they carry a validator, and are then revalidated before every use.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::http_cache(MemoryStore::new())
    ///     .heuristic_freshness(Duration::from_secs(300))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn heuristic_freshness(mut self, bound: Duration) -> Self {
        match &mut self.http {
            Some(rules) => rules.heuristic = Some(bound),
            None => self.http_only.push("heuristic_freshness"),
        }
        self
    }

    /// How long an entry with a validator (`ETag` or `Last-Modified`) is kept past its
    /// freshness, so that it can be revalidated with a conditional request (a 304 and no body)
    /// instead of fetched anew. HTTP-cache mode only. Defaults to 10 minutes.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::http_cache(MemoryStore::new())
    ///     .keep_stale(Duration::from_secs(3600))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn keep_stale(mut self, keep: Duration) -> Self {
        match &mut self.http {
            Some(rules) => rules.keep_stale = keep,
            None => self.http_only.push("keep_stale"),
        }
        self
    }

    /// The longest an entry is kept, whatever its freshness says. HTTP-cache mode only (the
    /// `cache_page` mode takes its timeout up front). Defaults to one day.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::http_cache(MemoryStore::new())
    ///     .max_ttl(Duration::from_secs(3600))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn max_ttl(mut self, max_ttl: Duration) -> Self {
        match &mut self.http {
            Some(rules) => {
                rules.max_ttl = max_ttl;
                self.timeout = max_ttl;
            }
            None => self.http_only.push("max_ttl"),
        }
        self
    }
}
