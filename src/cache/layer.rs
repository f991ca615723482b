//! The layer: its two presets, `build` (settings checked, run-time state made), and the
//! service it wraps around an inner one.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::StatusCode;
use http::header::HeaderName;
use tower_layer::Layer;

use super::builder::ResponseCacheBuilder;
use super::config::{Config, RequestDirectives, State};
use super::directives::Targeting;
use super::flight::Flights;
use super::key::QueryOrder;
use super::memo::UnstorableUrls;
use super::policy::HttpRules;
use super::recent::RecentPieces;
use super::service::ResponseCache;
use super::status::Fwd;
use crate::decoded::DecodedMemo;
use crate::peer::default_peer;
use crate::store::{AnyStore, MAX_EXPIRY};
use crate::{ConfigError, FailurePolicy};

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

impl ResponseCacheBuilder {
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
                hit_for_miss,
                state: State {
                    flights: Arc::new(Flights::new(hit_for_miss, bounded(self.flight_deadline))),
                    unstorable: UnstorableUrls::new(hit_for_miss),
                    generation: AtomicU64::new(0),
                    generation_due: AtomicU64::new(0),
                    near_changes_seen: AtomicU64::new(0),
                    writes_refused_until: AtomicU64::new(0),
                    heads: DecodedMemo::new(),
                    recent_pieces: RecentPieces::new(
                        RECENT_PIECES_BUDGET.max(2 * self.max_body as u64),
                    ),
                    vary_lists: moka::sync::Cache::builder()
                        .max_capacity(10_000)
                        .time_to_live(Duration::from_secs(60).min(self.timeout))
                        .build(),
                },
            }),
        })
    }
}
