use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use tower_layer::Layer;

use super::directives::Targeting;
use super::flight::{Flights, WaitLimits};
use super::memo::UnstorableUrls;
use super::policy::HttpRules;
use super::recent::RecentPieces;
use super::status::Fwd;
use super::{QueryOrder, ResponseCache};
use crate::peer::{Network, PeerFn, default_peer};
use crate::store::{AnyStore, MAX_EXPIRY};
use crate::{ConfigError, FailurePolicy};

/// Whether the request's own `Cache-Control` counts.
///
/// # Example
///
/// ```
/// use tower_redis_http::cache::RequestDirectives;
///
/// assert_eq!(RequestDirectives::default(), RequestDirectives::Ignore);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RequestDirectives {
    /// Ignored, as Django's cache middleware does: a client cannot bypass the cache. The
    /// default of the `cache_page` mode.
    #[default]
    Ignore,
    /// The default of the HTTP-cache mode, where RFC 9111 §5.2.1 applies in full: `no-cache`
    /// (or `Pragma: no-cache`) and `max-age` revalidate an entry too old for the client,
    /// `min-fresh` and `max-stale` move the freshness bar, `only-if-cached` answers 504 rather
    /// than forwarding, and `no-store` keeps the response from being stored.
    ///
    /// In the `cache_page` mode, which cannot revalidate: `no-cache`, `max-age=0` and
    /// `Pragma: no-cache` skip the lookup; `no-store` keeps the
    /// response from being stored.
    Honor,
}

/// The bytes of recently written pieces a layer keeps (see [`RecentPieces`]), at the least:
/// enough for the ranged traffic of seconds, and a cap on what a flood of partial responses
/// for distinct URLs can pin.
const RECENT_PIECES_BUDGET: u64 = 16 * 1024 * 1024;

/// How long a request waits at most on a single flight whose leader shows no work.
const DEFAULT_FLIGHT_DEADLINE: Duration = Duration::from_secs(30);

/// How long a request waits at most on a single flight, however its leader works.
const DEFAULT_FLIGHT_MAX_WAIT: Duration = Duration::from_secs(120);

/// The targeted cache-control field of RFC 9213 §3, for CDN caches.
pub(crate) const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The request headers that bypass storing by default: they commonly change what an
/// application answers without being part of the key (web cache poisoning).
pub(crate) const DEFAULT_UNKEYED: &[&str] = &[
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-host",
    "x-original-host",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "front-end-https",
    // read by Rack (`X-Forwarded-Ssl`, `X-Url-Scheme`), Traefik and nginx set-ups
    // (`X-Forwarded-Uri`, `X-Forwarded-Method`, `X-Original-Uri`, `X-Original-Method`) and
    // frameworks on the CGI mapping (`X-Forwarded-Protocol`, `X-Forwarded-Path`)
    "x-forwarded-ssl",
    "x-url-scheme",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-protocol",
    "x-forwarded-path",
    "x-original-uri",
    "x-original-method",
    // Tornado's `xheaders` scheme, and the script root Flask and WSGI set-ups read
    "x-scheme",
    "x-script-name",
];

/// The forwarding headers a trusted proxy sets: keyed from such a proxy, refused otherwise.
pub(crate) const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

pub(crate) struct Config {
    pub(crate) store: AnyStore,
    /// `cache_page`'s timeout, or the HTTP-cache mode's bound on how long entries are kept.
    pub(crate) timeout: Duration,
    /// The HTTP-cache mode's rules; `None` in the `cache_page` mode.
    pub(crate) http: Option<HttpRules>,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) max_body: usize,
    pub(crate) query: QueryOrder,
    pub(crate) request_directives: RequestDirectives,
    pub(crate) store_cookies: bool,
    /// The targeted cache-control fields this cache obeys (RFC 9213), and how far they reach.
    pub(crate) targeted: Targeting,
    pub(crate) patch_headers: bool,
    pub(crate) x_cache: bool,
    pub(crate) name: String,
    pub(crate) compute_etag: bool,
    pub(crate) compress_above: Option<usize>,
    pub(crate) flight_wait: Option<Duration>,
    pub(crate) flight_deadline: Duration,
    pub(crate) flight_max_wait: Duration,
    pub(crate) lock_ttl: Option<Duration>,
    pub(crate) on_store_error: FailurePolicy,
    /// Replaces the answers the cache gives by itself (see [`CacheRefusal`]).
    pub(crate) refusal: Option<RefusalFn>,
    pub(crate) prefix: String,
    pub(crate) default_scheme: String,
    pub(crate) unkeyed: Vec<HeaderName>,
    /// The proxies whose forwarding headers are keyed rather than refused.
    pub(crate) trusted: Vec<Network>,
    pub(crate) peer: PeerFn,
    pub(crate) hit_for_miss: Duration,
    pub(crate) flights: Arc<Flights>,
    pub(crate) unstorable: UnstorableUrls,
    /// The namespace generation (see `CacheInvalidator::invalidate_all`), and when to reread
    /// it (milliseconds since the Unix epoch).
    pub(crate) generation: AtomicU64,
    pub(crate) generation_due: AtomicU64,
    /// The near cache's count of changes when this layer last looked (see
    /// `recheck_generation`).
    pub(crate) near_changes_seen: AtomicU64,
    /// Until when (milliseconds since the Unix epoch) the store is taken to refuse writes,
    /// after it refused one (out of memory, a read-only replica): misses meanwhile do not
    /// announce `detail=storing` in `Cache-Status`.
    pub(crate) writes_refused_until: AtomicU64,
    /// The pieces of partial responses this process stored last, by their key, for a few
    /// seconds: a store write ends after its response, so the client's next range request
    /// could otherwise read the pieces from before it, and its own write would drop them.
    /// The pieces of partial responses this process wrote last, until their writes land.
    pub(crate) recent_pieces: RecentPieces,
    /// The learned Vary list per URL, so that a hit costs one round trip.
    pub(crate) vary_lists: moka::sync::Cache<String, Arc<Vec<HeaderName>>>,
    /// `Cache-Status` of a response from the inner service, by `fwd` reason and whether it
    /// is stored (see `Config::forwarded_status`).
    pub(crate) forwarded_statuses: &'static [[HeaderValue; 2]; 5],
    /// The same with why a response was not stored, unless the layer leaves that out.
    pub(crate) unstored_statuses: Option<&'static super::status::NotStoredStatuses>,
}

impl Config {
    /// How long a request arriving now waits on flights.
    pub(crate) fn wait_limits(&self) -> WaitLimits {
        let now = tokio::time::Instant::now();
        WaitLimits {
            silence: self.flight_deadline,
            // bounded at build; a clock near its end waits the deadline alone
            gives_up_at: now
                .checked_add(self.flight_max_wait)
                .unwrap_or(now + self.flight_deadline),
        }
    }

    /// Whether stored entries keep `Set-Cookie`, and hits replay it.
    pub(crate) fn replays_cookies(&self) -> bool {
        self.http.is_some_and(|rules| rules.replay_cookies)
    }
}

/// A replacement for the answers the cache gives by itself.
pub(crate) type RefusalFn = Arc<dyn Fn(&CacheRefusal) -> Response<Bytes> + Send + Sync>;

/// Why the cache answers a request by itself instead of forwarding it.
///
/// # Example
///
/// ```
/// use tower_redis_http::cache::CacheRefusal;
///
/// assert_eq!(CacheRefusal::OnlyIfCached.status(), 504);
/// assert_eq!(CacheRefusal::StoreUnavailable.response().status(), 503);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheRefusal {
    /// The store failed and the layer fails closed ([`FailurePolicy::Closed`]): 503.
    StoreUnavailable,
    /// The request said `only-if-cached` and nothing stored satisfies it (RFC 9111
    /// §5.2.1.7): 504.
    OnlyIfCached,
    /// Another request for the same page was still waiting on the origin when the
    /// [single flight's deadline](ResponseCacheBuilder::single_flight_deadline) passed, and no
    /// stale copy may be served: 504.
    OriginTooSlow,
}

impl CacheRefusal {
    /// The status of the default answer.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::cache::CacheRefusal;
    ///
    /// assert_eq!(CacheRefusal::StoreUnavailable.status(), 503);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::OnlyIfCached | Self::OriginTooSlow => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The message of the default answer.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::cache::CacheRefusal;
    ///
    /// assert_eq!(CacheRefusal::StoreUnavailable.detail(), "The cache is temporarily unavailable.");
    /// ```
    #[must_use]
    pub fn detail(&self) -> &'static str {
        match self {
            Self::StoreUnavailable => "The cache is temporarily unavailable.",
            Self::OnlyIfCached => "No stored response satisfies only-if-cached.",
            Self::OriginTooSlow => "The origin did not answer this page in time.",
        }
    }

    /// The default answer: [`status`](Self::status) and `{"detail": "<detail>"}`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::cache::CacheRefusal;
    ///
    /// let response = CacheRefusal::OnlyIfCached.response();
    /// assert_eq!(response.headers()["content-type"], "application/json");
    /// ```
    #[must_use]
    pub fn response(&self) -> Response<Bytes> {
        crate::json::detail(self.status(), self.detail())
    }
}

/// A [`Layer`] that caches whole responses in the store, akin to Django's `cache_page`.
///
/// See the [module docs](super) for what is cached, how keys are built and what a hit
/// answers.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_redis_http::cache::ResponseCacheLayer;
/// use tower_redis_http::store::MemoryStore;
///
/// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30)).build()?;
/// let service = ServiceBuilder::new().layer(cache).service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
/// });
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct ResponseCacheLayer {
    config: Arc<Config>,
}

impl std::fmt::Debug for ResponseCacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCacheLayer")
            .field("store", &self.config.store)
            .field("timeout", &self.config.timeout)
            .field("statuses", &self.config.statuses)
            .field("max_body", &self.config.max_body)
            .finish_non_exhaustive()
    }
}

impl ResponseCacheLayer {
    /// A builder for a cache that keeps responses for `timeout`, Django's
    /// `cache_page(timeout)`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(60)).build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn cache_page(store: impl Into<AnyStore>, timeout: Duration) -> ResponseCacheBuilder {
        ResponseCacheBuilder {
            store: store.into(),
            timeout,
            http: None,
            statuses: vec![StatusCode::OK],
            max_body: 1024 * 1024,
            query: QueryOrder::default(),
            request_directives: RequestDirectives::default(),
            store_cookies: false,
            targeted: Targeting::default(),
            patch_headers: false,
            x_cache: false,
            status_detail: true,
            name: "tower-redis-http".to_owned(),
            compute_etag: false,
            compress_above: None,
            flight_wait: Some(Duration::from_secs(5)),
            flight_deadline: DEFAULT_FLIGHT_DEADLINE,
            flight_max_wait: DEFAULT_FLIGHT_MAX_WAIT,
            lock_ttl: Some(Duration::from_secs(10)),
            on_store_error: FailurePolicy::Open,
            refusal: None,
            prefix: "cache:".to_owned(),
            default_scheme: "http".to_owned(),
            unkeyed: DEFAULT_UNKEYED
                .iter()
                .map(|name| HeaderName::from_static(name))
                .collect(),
            trusted: Vec::new(),
            peer: Arc::new(default_peer),
            hit_for_miss: super::flight::HIT_FOR_MISS,
            http_only: Vec::new(),
        }
    }
}

impl ResponseCacheLayer {
    /// A builder for a shared HTTP cache (RFC 9111), as squid or Varnish run in front of a
    /// service: freshness comes from the response (`s-maxage`, `max-age`, `Expires` minus
    /// `Date`), stale entries are revalidated with conditional requests, `stale-while-revalidate`
    /// and `stale-if-error` are honoured, and so are the request's own directives. Any status
    /// the rules allow is stored; entries are kept at most a day
    /// ([`max_ttl`](ResponseCacheBuilder::max_ttl)).
    ///
    /// See the [module docs](super#the-http-cache-mode) for the rules.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::http_cache(MemoryStore::new()).build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn http_cache(store: impl Into<AnyStore>) -> ResponseCacheBuilder {
        let mut builder = Self::cache_page(store, Duration::from_secs(24 * 3600));
        builder.http = Some(HttpRules {
            heuristic: None,
            keep_stale: Duration::from_secs(600),
            max_ttl: builder.timeout,
            store_cookies: false,
            replay_cookies: false,
        });
        builder.statuses = Vec::new();
        builder.request_directives = RequestDirectives::Honor;
        builder.targeted.fields = vec![CDN_CACHE_CONTROL];
        builder
    }
}

impl ResponseCacheLayer {
    /// A handle that invalidates this layer's entries: one URL, a pattern, or everything.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let layer = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(60)).build()?;
    /// let invalidator = layer.invalidator();
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn invalidator(&self) -> super::CacheInvalidator {
        super::CacheInvalidator::new(Arc::clone(&self.config))
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCache::new(inner, Arc::clone(&self.config))
    }
}

/// Configures a [`ResponseCacheLayer`]; start from [`ResponseCacheLayer::cache_page`].
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
    store: AnyStore,
    timeout: Duration,
    http: Option<HttpRules>,
    statuses: Vec<StatusCode>,
    max_body: usize,
    query: QueryOrder,
    request_directives: RequestDirectives,
    store_cookies: bool,
    targeted: Targeting,
    patch_headers: bool,
    x_cache: bool,
    status_detail: bool,
    name: String,
    compute_etag: bool,
    compress_above: Option<usize>,
    flight_wait: Option<Duration>,
    flight_deadline: Duration,
    flight_max_wait: Duration,
    lock_ttl: Option<Duration>,
    on_store_error: FailurePolicy,
    refusal: Option<RefusalFn>,
    prefix: String,
    default_scheme: String,
    unkeyed: Vec<HeaderName>,
    trusted: Vec<String>,
    peer: PeerFn,
    hit_for_miss: Duration,
    /// HTTP-cache options set on a `cache_page` builder, refused by `build`.
    http_only: Vec<&'static str>,
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

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidOption`] for a zero timeout, no cacheable status, or a cache
    /// name that is not a token.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// assert!(ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::ZERO).build().is_err());
    /// ```
    pub fn build(self) -> Result<ResponseCacheLayer, ConfigError> {
        let invalid = |option, reason: &str| ConfigError::InvalidOption {
            option,
            reason: reason.to_owned(),
        };
        if self.timeout < Duration::from_millis(1) {
            return Err(invalid("timeout", "must be at least 1ms"));
        }
        if self.statuses.is_empty() && self.http.is_none() {
            return Err(invalid("statuses", "at least one status must be cacheable"));
        }
        if let Some(option) = self.http_only.first() {
            return Err(invalid(option, "applies to the HTTP-cache mode only"));
        }
        // durations past the longest a store keeps anything mean "for ever" (`cache_page`'s
        // timeout as Django's `None`): saturated, so that no deadline or date overflows
        let bounded = |duration: Duration| duration.min(MAX_EXPIRY);
        let http = self.http.map(|rules| HttpRules {
            store_cookies: self.store_cookies,
            heuristic: rules.heuristic.map(bounded),
            keep_stale: bounded(rules.keep_stale),
            max_ttl: bounded(rules.max_ttl),
            ..rules
        });
        let hit_for_miss = bounded(self.hit_for_miss);
        let token = |name: &str| {
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '*')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b))
        };
        if !token(&self.name) {
            return Err(invalid("cache_name", "must be an RFC 8941 token"));
        }
        Ok(ResponseCacheLayer {
            config: Arc::new(Config {
                store: self.store.for_cache(),
                timeout: bounded(self.timeout),
                http,
                statuses: self.statuses,
                max_body: self.max_body,
                query: self.query,
                request_directives: self.request_directives,
                store_cookies: self.store_cookies,
                targeted: self.targeted,
                patch_headers: self.patch_headers,
                x_cache: self.x_cache,
                forwarded_statuses: Fwd::statuses_for(&self.name),
                unstored_statuses: self
                    .status_detail
                    .then(|| Fwd::unstored_statuses_for(&self.name)),
                name: self.name,
                compute_etag: self.compute_etag,
                compress_above: self.compress_above,
                flight_wait: self.flight_wait.map(bounded),
                flight_deadline: bounded(self.flight_deadline),
                // never shorter than the deadline, which it bounds from above
                flight_max_wait: bounded(self.flight_max_wait.max(self.flight_deadline)),
                lock_ttl: self.lock_ttl.map(bounded),
                on_store_error: self.on_store_error,
                refusal: self.refusal,
                prefix: self.prefix,
                default_scheme: self.default_scheme,
                unkeyed: self.unkeyed,
                trusted: crate::peer::networks(&self.trusted)?,
                peer: self.peer,
                flights: Arc::new(Flights::new(hit_for_miss, bounded(self.flight_deadline))),
                unstorable: UnstorableUrls::new(hit_for_miss),
                hit_for_miss,
                generation: AtomicU64::new(0),
                generation_due: AtomicU64::new(0),
                near_changes_seen: AtomicU64::new(0),
                writes_refused_until: AtomicU64::new(0),
                recent_pieces: RecentPieces::new(
                    RECENT_PIECES_BUDGET.max(2 * self.max_body as u64),
                ),
                vary_lists: moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(60).min(self.timeout))
                    .build(),
            }),
        })
    }
}
