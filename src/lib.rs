//! Tower middleware backed by Redis, for any web stack built on [`tower`](https://docs.rs/tower):
//! axum, hyper, warp and the rest.
//!
//! What Python teams get from django-redis, Django's `cache_page` and Django REST framework's
//! Redis token authentication, as three layers over one storage layer:
//!
//! - [`auth`]: **token authentication** with path allow-lists. A token from `Authorization`, a
//!   query parameter or a cookie is looked up in one store round trip; the decoded principal
//!   goes into the request's extensions; everyone else gets 401, except on open paths.
//! - [`cache`]: **response caching** akin to `cache_page`, with the rules a shared cache must
//!   follow (Vary, Cache-Control, Set-Cookie, Authorization, Age, conditional requests).
//! - [`ratelimit`]: **per-key rate limits** and send flags, each decided in one atomic step.
//! - [`store`]: the [`Store`](store::Store) they share: [`RedisStore`](store::RedisStore) (a bb8
//!   pool of multiplexed connections) or [`MemoryStore`](store::MemoryStore) (embedded, same
//!   semantics), named stores configured like Django's `CACHES`, and the [`FailurePolicy`]
//!   each layer applies when its store fails.
//!
//! # Example
//!
//! The three layers around one service, on the memory store:
//!
//! ```
//! use std::time::Duration;
//! use http::{Method, Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_redis_http::auth::{TokenAuthLayer, Tokens};
//! use tower_redis_http::cache::ResponseCacheLayer;
//! use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
//! use tower_redis_http::store::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let app = ServiceBuilder::new()
//!     .layer(TokenAuthLayer::<u64>::bearer(store.clone()).allow_for([Method::POST], "/login/").build()?)
//!     .layer(RateLimitLayer::builder(store.clone()).rule(Rule::fixed_window("user", "100/m", Key::principal(|id: &u64| id.to_string()))).build()?)
//!     .layer(ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(30)).build()?)
//!     .service_fn(|_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from("hello"))))
//!     });
//!
//! let token = Tokens::new(store, |id: &u64| id.to_string()).issue(&1).await?;
//! let request = Request::get("/me/").header("authorization", format!("Bearer {token}")).body(String::new())?;
//! assert_eq!(app.clone().oneshot(request).await?.status(), StatusCode::OK);
//! assert_eq!(app.oneshot(Request::get("/me/").body(String::new())?).await?.status(), StatusCode::UNAUTHORIZED);
//! # Ok(()) }
//! ```
//!
//! # How the layers compose
//!
//! Layers wrap each other like an onion; a request passes them from the outside in:
//!
//! ```text
//!  request ──▶ auth ──▶ rate limit ──▶ cache ──▶ handler
//!            (401s)     (429s)        (hits)
//! ```
//!
//! - **Auth outside the cache** (the order above) authenticates every request, hits
//!   included. Pages behind it may be cached: a request carrying `Authorization` has its
//!   response stored only when the response says `public` or `s-maxage` (RFC 9111 §3.5), so a
//!   per-user page such as `/me/` is never served to someone else. This is the safe default.
//! - **Cache outside auth** answers hits before authentication runs, saving its round trip,
//!   but then anything cached is served to anyone: only do this for routes that are public
//!   anyway (allow-listed), never for protected ones.
//! - **Rate limit outside the cache** counts every request, hits included; inside, it counts
//!   only the requests that reach the handler. A route with side effects (sending an SMS)
//!   must not be cached at all: answer it with `Cache-Control: no-store`, or leave it out of
//!   the cached routes.
//! - With axum, `Router::layer` wraps every route and `route_layer` only matched routes; a
//!   layer on one route (`get(handler).layer(cache)`) caches just that route.
//!
//! # Feature flags
//!
//! | feature | adds |
//! |---|---|
//! | `axum` | `auth::Principal` and `auth::OptionalPrincipal` extractors (on axum-core), and axum's `ConnectInfo<SocketAddr>` read as the peer address by the rate limiter and the cache |
//! | `warp` | `auth::warp` filters for the principal, and a `recover` for their rejection |
//! | `tls` | TLS to Redis (`rediss://`) on rustls with the ring provider, no OpenSSL: the system's roots or a given CA ([`store::RedisStoreBuilder::tls_root_certificate`]), client certificates for mutual TLS ([`store::RedisStoreBuilder::tls_client_certificate`]), and django-redis's `ssl_*` pool arguments |
//!
//! | `metrics` | counters and histograms through the [`metrics`](https://docs.rs/metrics) facade, for the exporter the application already uses: each layer's decisions (auth outcomes; cache hits, misses, stores and why not; rate-limit outcomes per rule), store call latency per operation, store errors by kind, connections opened and script reloads. Labels are bounded: never a token, key, path or user |
//!
//! All are off by default; the core depends on no framework and no TLS library, and refuses a
//! `rediss://` location without `tls`.
//!
//! # Production topologies
//!
//! | need | topology | store |
//! |---|---|---|
//! | one Redis, or a managed one behind a single endpoint | plain | [`RedisStore::builder`](store::RedisStore::builder)`("redis://...")` |
//! | managed Redis that needs encryption | TLS (`tls` feature) | `RedisStore::builder("rediss://...")`, with [`tls_root_certificate`](store::RedisStoreBuilder::tls_root_certificate) for a private CA |
//! | self-hosted high availability | Sentinel | [`RedisStore::sentinel`](store::RedisStore::sentinel) |
//! | more data or load than one Redis holds | Redis Cluster | [`RedisStore::cluster`](store::RedisStore::cluster) |
//!
//! [`store::StoresConfig`] takes each from Django settings. That includes django-redis's
//! `SentinelClient` options, redis-py's `ssl_*` pool arguments, and a `LOCATION` list of
//! cluster seed nodes with `REDIS_CLIENT_CLASS: "redis.cluster.RedisCluster"`.
//!
//! On a cluster each command goes to its key's node, one round trip per layer as on one
//! server. The cache keeps each URL's keys under one `{hash tag}`, so its scripts stay atomic;
//! rate limits touch one key. A user's token index and `bump_version` span slots and run as
//! several steps, ordered so that no live token escapes its index. A pattern invalidation
//! sweeps master by master, and sweeps again (or fails, after three passes) when slots moved
//! under it, so a resharding cannot hide a key from it (see [`store::RedisStore::cluster`]
//! and the README).
//!
//! On a failover, the store replaces broken connections and connections to a demoted master
//! (a `READONLY` reply). A command the server refused unrun (`READONLY`, and on a cluster
//! `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`) is sent once more; one whose connection dropped
//! is re-sent only when a second run changes nothing, so rate-limit hits and locks never
//! count twice. Until the promotion, each call fails within the command timeout and each layer applies
//! its failure policy:
//! - auth fails closed (503) by default;
//! - the cache fails open;
//! - cooldowns fail closed, while windows and GCRA fail open.
//!
//! A whole-cache invalidation waits until the replicas have the new generation, so that a
//! failover cannot bring back what it invalidated.
//!
//! A server that stops answering costs one command timeout, not one per call: calls fail at
//! once until it answers a ping. On a cluster this holds node by node, and a call the cluster
//! sends to an address that cannot be reached (a node announcing one behind NAT) fails at
//! once with an error naming it.
//!
//! The README's "Production topologies" section has the full table and the environment
//! variables the examples read.
//!
//! # A near cache
//!
//! A [`RedisStore`](store::RedisStore) built with a [`NearCache`](store::NearCache) keeps hot
//! tokens and cache entries in process memory, and Redis (6+, client tracking) tells it when one
//! changes anywhere: a revocation on another instance is refused here within milliseconds.
//! When that news could be missed (the tracking connection is lost or silent), the near cache
//! is emptied and bypassed until it is back; no entry outlives its maximum local age. Rate
//! limits never use it. See [`NearCache`](store::NearCache).
//!
//! # Security
//!
//! Each layer's default is the safe reading of its standard, and where the standard allows
//! something unsafe in practice, the layer leaves it off until asked:
//!
//! - **`Set-Cookie` is never stored or replayed by default.** RFC 9111 lets a shared cache
//!   store a response that sets a cookie and replay the cookie to everyone it serves; a
//!   session or CSRF cookie replayed that way hands one user's session to the next, the
//!   classic cache-poisoning failure in front of frameworks that set a cookie on any page.
//!   Such responses pass through unstored.
//!   [`store_responses_setting_cookies`](cache::ResponseCacheBuilder::store_responses_setting_cookies)
//!   stores them without the cookie, and
//!   [`replay_set_cookie`](cache::ResponseCacheBuilder::replay_set_cookie) (HTTP-cache mode
//!   only) replays it, as the RFC allows.
//! - **A targeted field (`CDN-Cache-Control`) never overrides `private`** or the
//!   credentials rule by default: it sets freshness, while `Cache-Control`'s `private`,
//!   `private="Set-Cookie"` and `no-cache="Set-Cookie"` keep one user's page and cookie from
//!   the next;
//!   [`targeted_cache_control_overrides_private`](cache::ResponseCacheBuilder::targeted_cache_control_overrides_private)
//!   obeys RFC 9213 in full.
//! - The cache keys only what it can see: requests carrying forwarding or method-override
//!   headers, or a body on a `GET`, are answered but not stored, unless they come from a
//!   trusted proxy; responses to `Authorization`ed requests are stored only when they say so.
//! - Tokens never reach the logs; URLs and cache keys only as short digests.
//!
//! The [cache module's security notes](cache#security) give the details.
//!
//! # Conventions
//!
//! - Every layer is made by a builder whose defaults are the safe choice; `build()` reports
//!   every configuration mistake as one [`ConfigError`], so setters never fail and a bad
//!   value (a rate of `"5/fortnight"`, a proxy network of `"10.0.0.0/99"`) is found where
//!   the layer is built. Value types that stand alone (`store::RatePolicy`) check
//!   themselves when made.
//! - A switch takes a `bool` (`.compute_etag(true)`, `.informational_headers(false)`), so the
//!   same call reads right whichever its default.
//! - Every answer a layer gives by itself is JSON, `{"detail": "..."}`, as Django REST
//!   framework's, and replaceable: the auth layer's through
//!   [`RejectionResponse`](auth::RejectionResponse), the rate limiter's through
//!   [`LimitedResponse`](ratelimit::LimitedResponse) (`limited` for 429, `refused` for the
//!   rest), the cache's through
//!   [`refusal_response`](cache::ResponseCacheBuilder::refusal_response).
//! - Option enums that may grow are `#[non_exhaustive]`.
//! - Each builder's own example shows its setters chained; a setter carries an example of
//!   its own only where its argument needs showing (a key template, a status list), not one
//!   that would only repeat the call.
//!
//! # Django mapping
//!
//! | Django / DRF / django-redis | here |
//! |---|---|
//! | `CACHES = {"default": {...}, "verify_codes": {...}}` | [`StoresConfig`](store::StoresConfig), [`Stores`](store::Stores) |
//! | `KEY_PREFIX`, `VERSION`, `KEY_FUNCTION` | [`KeyScheme`](store::KeyScheme): `prefix:version:key` by default |
//! | `cache.get/set/add/delete/incr/ttl` | [`Store`](store::Store) methods |
//! | `cache.incr_version` | [`Store::bump_version`](store::Store::bump_version) |
//! | django-redis `JSONSerializer` | [`store::value`] (both sides read each other's entries) |
//! | `IGNORE_EXCEPTIONS` | [`FailurePolicy::Open`] |
//! | `@cache_page(30)` | [`ResponseCacheLayer::cache_page`](cache::ResponseCacheLayer::cache_page) |
//! | DRF `TokenAuthentication` (+ Redis token table) | [`TokenAuthLayer::drf`](auth::TokenAuthLayer::drf), [`Tokens`](auth::Tokens) |
//! | `cache.set(token, user.id, 72 * 3600)` at login | [`Tokens::issue`](auth::Tokens::issue), or `P = u64` for existing entries |
//! | `send_flag_<mobile>` check, then `SETEX` | [`Rule::cooldown`](ratelimit::Rule::cooldown): one atomic `SET NX PX` |
//! | django-ratelimit `@ratelimit(key="ip", rate="5/m")` | [`Rule::fixed_window`](ratelimit::Rule::fixed_window) with [`Key::client_ip`](ratelimit::Key::client_ip) |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod body;
pub mod cache;
mod decoded;
mod error;
mod failure;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(all(test, not(fuzzing)))]
mod fuzzing;
mod gate;
mod hex;
mod json;
mod observe;
mod path;
mod peer;
mod principal;
pub mod ratelimit;
pub mod store;

pub use error::ConfigError;
pub use failure::FailurePolicy;
