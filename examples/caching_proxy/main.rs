//! A shared HTTP cache in front of any origin: the cache layer in HTTP-cache mode (RFC 9111)
//! around a handler that forwards every request to the origin given on the command line.
//!
//! ```text
//! cargo run --example caching_proxy -- http://127.0.0.1:8000
//! curl -si http://127.0.0.1:3002/some/page     # Cache-Status: ...; fwd=uri-miss; detail=storing
//! curl -si http://127.0.0.1:3002/some/page     # Cache-Status: ...; hit; ttl=...
//! ```
//!
//! What is stored, for how long and when it is revalidated is the origin's call
//! (`Cache-Control`, `CDN-Cache-Control`, `Expires`, validators). It listens on `ADDR`
//! (127.0.0.1:3002 by default) and stores in Redis at `REDIS_URL`, or in memory without it.
//! The proxy speaks plain HTTP/1.1 to the origin.
//!
//! # Hosts
//!
//! The cache keys, and the origin gets, one `Host`: the public host the request is for, as
//! configured. Without `PROXY_HOSTS` the proxy has one public host, `PUBLIC_HOST` (by
//! default the origin's own authority), and every request is taken to be for it, whatever
//! its `Host` says. With `PROXY_HOSTS` (comma-separated, `shop.example,api.example:8080`)
//! a request is for the listed host its target or `Host` names (letter case and the default
//! port do not count), or, from a proxy in `TRUSTED_PROXIES`, its `X-Forwarded-Host`; a
//! request for any other host is answered `421 Misdirected Request`, and one with two
//! `Host` fields `400`. So no `Host` value makes a second copy of a page, the origin's links
//! and redirects name the public host, and a `Location` the origin sends after a `POST`
//! invalidates the page it names (RFC 9111 §4.4).
//!
//! # Forwarded fields
//!
//! On its way to the origin (after the cache, which never sees them) a request gets
//! `X-Forwarded-For` with the peer's address appended (`FORWARDED_FOR=append`, the default)
//! or alone (`FORWARDED_FOR=replace`, unless the peer is a trusted proxy, whose list is
//! appended to), `X-Forwarded-Proto` (`http`, or a trusted proxy's `https`),
//! `X-Forwarded-Host` (the public host) and `Via: 1.1 tower-redis-http`; responses get
//! `Via` too. A client's own `Forwarded` and `X-Forwarded-Host`, `-Proto`, `-Port` and
//! `-Prefix` are dropped before the cache unless a trusted proxy sent them, and so is any of
//! these names spelled with `_`, as CGI servers would read it.
//!
//! Hop-by-hop fields (RFC 9110 §7.6.1: `Connection` and the fields it names, `Keep-Alive`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Connection`,
//! `Proxy-Authorization`, `Proxy-Authenticate`) are removed from requests before the cache
//! and from the origin's responses before the cache stores them, so a miss, a hit, a
//! revalidation and a stale copy answer the same fields.
//!
//! # Timeouts
//!
//! Each from the environment, in whole seconds from 1 to 86400, defaulting to nginx's 60:
//!
//! - `ORIGIN_CONNECT_TIMEOUT_SECS`: to open a connection to the origin;
//! - `ORIGIN_SEND_TIMEOUT_SECS`: between two pieces of a request body the origin takes
//!   while the proxy has the next one (an origin that stops reading an upload);
//! - `ORIGIN_READ_TIMEOUT_SECS`: for the origin's response header, once it has the whole
//!   request;
//! - `ORIGIN_BODY_IDLE_TIMEOUT_SECS`: between two pieces of the response body (a body that
//!   stalls longer fails, and the client sees it cut short; the cache does not store it), and
//!   the longest a WebSocket tunnel may be silent both ways.
//!
//! A connect, send or read timeout is answered `504 Gateway Timeout`, which the cache replaces
//! with a stale copy where the stored response's `stale-if-error` allows;
//! within `stale-while-revalidate` the stale copy is served at once and the refresh times
//! out on its own. Concurrent requests for one URL wait for the first one's origin call (the
//! cache's single-flight deadline is the connect and read timeouts and a second more). A
//! client's request body may stall for 10 s between pieces before the proxy answers `408`.
//!
//! # Upgrades and `CONNECT`
//!
//! A WebSocket handshake (`GET`, `Connection: upgrade`, `Upgrade: websocket`) goes past the
//! cache to the origin, and after its `101 Switching Protocols` both connections are spliced
//! until either closes; it is never stored. Any other `Upgrade` (such as `h2c`) is ignored,
//! as RFC 9110 §7.8 allows, and the request served as a plain one. `CONNECT` is answered
//! `501 Not Implemented`: this is a reverse proxy for one origin, not a tunnel to any host.
//!
//! # Other options, from the environment
//!
//! - `HEURISTIC_FRESHNESS_SECS`: heuristic freshness (RFC 9111 §4.2.2) up to this many
//!   seconds for responses without explicit freshness whose status RFC 9110 §15.1 marks
//!   heuristically cacheable; off by default.
//! - `REPLAY_SET_COOKIE=1`: store responses that set cookies and replay their `Set-Cookie`
//!   to every client served the entry, as RFC 9111 allows. Off by default, and for good
//!   reason: read the crate's cache security notes first.
//! - `TARGETED_CACHE_CONTROL`: the targeted cache-control fields (RFC 9213) obeyed, most
//!   precedent first, comma-separated; `CDN-Cache-Control` by default. They are forwarded
//!   with responses, so a CDN in front applies them too.
//! - `MAX_TUNNELS`: how many WebSocket tunnels may be open at once (1024 by default); a
//!   handshake beyond is answered `503 Service Unavailable` with `Retry-After: 1`.
//! - `TRUSTED_PROXIES`: the proxies in front of this one (addresses or networks,
//!   comma-separated) whose forwarding fields are keyed and believed.
//!
//! The example reads bottom-up: `answer` (the proxy's own answers), `body` (bodies with an
//! idle timeout), `hop` (hop-by-hop fields), `hosts` (the host model and forwarded fields),
//! `origin` (the client and its timeouts), `tunnel` (WebSocket and `CONNECT`), then this
//! file, which puts them in front of the cache.

#[path = "../common/mod.rs"]
pub mod common;

mod answer;
mod body;
mod hop;
mod hosts;
mod origin;
mod tunnel;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};
use tower_redis_http::cache::{ResponseBody, ResponseCacheLayer};
use tower_redis_http::store::{AnyStore, MemoryStore};

use self::answer::{ProxyBody, answer};
pub use self::hosts::ForwardedFor;
use self::hosts::{Hosts, TrustedProxies};
use self::origin::Upstream;
pub use self::origin::{Origin, Timeouts};

/// Why the proxy stopped serving.
pub type ServeError = Box<dyn std::error::Error + Send + Sync>;

/// How the proxy is set up beyond what the origin's headers decide.
#[derive(Clone, Debug)]
pub struct Options {
    /// The proxies whose `X-Forwarded-Host` / `-Proto` are part of the key instead of refused,
    /// and whose forwarding fields go on to the origin.
    pub trusted_proxies: Vec<String>,
    /// The hosts the proxy answers for (`PROXY_HOSTS`); others are refused with `421`. Empty
    /// for one public host that every request is taken to be for.
    pub hosts: Vec<String>,
    /// That one public host (`PUBLIC_HOST`); `None` for the origin's authority.
    pub public_host: Option<String>,
    /// What `X-Forwarded-For` becomes on the way to the origin (`FORWARDED_FOR`).
    pub forwarded_for: ForwardedFor,
    /// How long the origin and a client's upload are waited for.
    pub timeouts: Timeouts,
    /// Heuristic freshness up to this bound, for responses without explicit freshness.
    pub heuristic_freshness: Option<Duration>,
    /// Store responses that set cookies and replay their `Set-Cookie` on hits.
    pub replay_set_cookie: bool,
    /// The targeted cache-control fields obeyed, most precedent first; `None` keeps the
    /// layer's default, `CDN-Cache-Control`.
    pub targeted_cache_control: Option<Vec<http::HeaderName>>,
    /// How many WebSocket tunnels may be open at once (`MAX_TUNNELS`); a handshake past it
    /// is answered `503`.
    pub max_tunnels: usize,
    /// Let a targeted field replace `Cache-Control`'s `private`, field-qualified `private` /
    /// `no-cache` and the credentials rule too (RFC 9213 in full; see the cache module's
    /// security notes before turning it on).
    pub targeted_cache_control_overrides_private: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            hosts: Vec::new(),
            public_host: None,
            forwarded_for: ForwardedFor::default(),
            timeouts: Timeouts::default(),
            heuristic_freshness: None,
            replay_set_cookie: false,
            targeted_cache_control: None,
            max_tunnels: DEFAULT_MAX_TUNNELS,
            targeted_cache_control_overrides_private: false,
        }
    }
}

/// Open WebSocket tunnels at most, by default: each holds two sockets and a task for as long
/// as it lives, so a client must not be able to open them without end.
pub const DEFAULT_MAX_TUNNELS: usize = 1024;

impl Options {
    /// Checks what needs the origin to check (the hosts, the trusted proxies), so that a bad
    /// value is said before the store is connected and the port taken.
    ///
    /// # Errors
    ///
    /// The first option that does not hold, named.
    pub fn check(&self, origin: &Origin) -> Result<(), String> {
        Hosts::new(&self.hosts, self.public_host.as_deref(), origin.authority())?;
        TrustedProxies::parse(&self.trusted_proxies)?;
        Ok(())
    }

    /// `TRUSTED_PROXIES`, `PROXY_HOSTS`, `PUBLIC_HOST`, `FORWARDED_FOR`,
    /// `ORIGIN_CONNECT_TIMEOUT_SECS`, `ORIGIN_SEND_TIMEOUT_SECS`, `ORIGIN_READ_TIMEOUT_SECS`,
    /// `ORIGIN_BODY_IDLE_TIMEOUT_SECS`, `MAX_TUNNELS`, `HEURISTIC_FRESHNESS_SECS`, `TARGETED_CACHE_CONTROL`,
    /// `TARGETED_CACHE_CONTROL_OVERRIDES_PRIVATE` and `REPLAY_SET_COOKIE`.
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) on the variables `var` gives.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let heuristic_freshness = match var("HEURISTIC_FRESHNESS_SECS") {
            Some(seconds) => Some(Duration::from_secs(seconds.trim().parse().map_err(
                |_| format!("HEURISTIC_FRESHNESS_SECS={seconds:?} is not a number of seconds"),
            )?)),
            None => None,
        };
        let listed = |name: &str| -> Vec<String> {
            var(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let targeted_cache_control = match var("TARGETED_CACHE_CONTROL") {
            Some(_) => Some(
                listed("TARGETED_CACHE_CONTROL")
                    .iter()
                    .map(|name| {
                        http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                            format!("TARGETED_CACHE_CONTROL: {name:?} is not a field name")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };
        let defaults = Timeouts::default();
        let seconds = |name: &str, default: Duration| -> Result<Duration, String> {
            let Some(text) = var(name) else {
                return Ok(default);
            };
            // a day at most: beyond, a timeout is no bound, and deadlines built on it overflow
            match text.trim().parse::<u64>() {
                Ok(seconds @ 1..=86_400) => Ok(Duration::from_secs(seconds)),
                _ => Err(format!(
                    "{name}={text:?}: a whole number of seconds from 1 to 86400"
                )),
            }
        };
        let timeouts = Timeouts {
            connect: seconds("ORIGIN_CONNECT_TIMEOUT_SECS", defaults.connect)?,
            send: seconds("ORIGIN_SEND_TIMEOUT_SECS", defaults.send)?,
            read: seconds("ORIGIN_READ_TIMEOUT_SECS", defaults.read)?,
            body_idle: seconds("ORIGIN_BODY_IDLE_TIMEOUT_SECS", defaults.body_idle)?,
            ..defaults
        };
        Ok(Self {
            targeted_cache_control,
            trusted_proxies: listed("TRUSTED_PROXIES"),
            hosts: listed("PROXY_HOSTS"),
            public_host: var("PUBLIC_HOST").filter(|host| !host.trim().is_empty()),
            forwarded_for: match var("FORWARDED_FOR") {
                Some(mode) => mode.parse()?,
                None => ForwardedFor::default(),
            },
            timeouts,
            max_tunnels: match var("MAX_TUNNELS") {
                Some(text) => match text.trim().parse::<usize>() {
                    Ok(count @ 1..=1_000_000) => count,
                    _ => return Err(format!("MAX_TUNNELS={text:?}: a count from 1 to 1000000")),
                },
                None => DEFAULT_MAX_TUNNELS,
            },
            heuristic_freshness,
            replay_set_cookie: var("REPLAY_SET_COOKIE").is_some_and(|on| on == "1"),
            targeted_cache_control_overrides_private: var(
                "TARGETED_CACHE_CONTROL_OVERRIDES_PRIVATE",
            )
            .is_some_and(|on| on == "1"),
        })
    }
}

/// What the proxy does before the cache: `CONNECT` refused, the host checked and set, the
/// hop-by-hop fields stripped, the forwarding fields decided, WebSocket handshakes tunnelled;
/// every other request goes through `cache` to the origin.
#[derive(Clone)]
struct Front {
    cache: CacheService,
    upstream: Upstream,
    hosts: Arc<Hosts>,
    proxies: Arc<TrustedProxies>,
    forwarded_for: ForwardedFor,
    tunnels: Arc<tokio::sync::Semaphore>,
}

/// The cache in front of the origin, its type erased (one allocation per request, which
/// spares the front its closure types).
type CacheService =
    BoxCloneService<Request<Incoming>, Response<ResponseBody<ProxyBody>>, Infallible>;

impl Front {
    async fn handle(
        self,
        mut request: Request<Incoming>,
    ) -> Response<Either<ResponseBody<ProxyBody>, ProxyBody>> {
        if request.method() == Method::CONNECT {
            return tunnel::refuse_connect().map(Either::Right);
        }
        let websocket = hop::asks_for_websocket(&request);
        hop::strip_hop_by_hop(request.headers_mut());
        let forwarding =
            match hosts::prepare(&mut request, &self.hosts, &self.proxies, self.forwarded_for) {
                Ok(forwarding) => forwarding,
                Err(refused) => return answer(refused.status, refused.detail).map(Either::Right),
            };
        request.extensions_mut().insert(forwarding);
        if websocket {
            let Ok(room) = Arc::clone(&self.tunnels).try_acquire_owned() else {
                return tunnel::refuse_over_cap().map(Either::Right);
            };
            return tunnel::websocket(self.upstream, request, room)
                .await
                .map(Either::Right);
        }
        match self.cache.oneshot(request).await {
            Ok(response) => response.map(Either::Left),
            Err(never) => match never {},
        }
    }
}

/// The proxy, its options checked and its parts built, ready to serve.
pub struct Proxy {
    front: Front,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Proxy {
    /// The cache layer in HTTP-cache mode, storing in `store`, in front of a handler that
    /// forwards every request to `origin`.
    ///
    /// # Errors
    ///
    /// An option the proxy cannot run with.
    pub fn new(origin: Origin, store: AnyStore, options: &Options) -> Result<Self, ServeError> {
        let timeouts = options.timeouts;
        let mut cache = ResponseCacheLayer::http_cache(store)
            .keep_stale(Duration::from_secs(3600))
            .x_cache_header(true)
            .trusted_proxies(options.trusted_proxies.iter().map(String::as_str))
            .replay_set_cookie(options.replay_set_cookie)
            .targeted_cache_control_overrides_private(
                options.targeted_cache_control_overrides_private,
            )
            // requests for a URL being fetched wait for that fetch, however long the timeouts
            // let it take, rather than time out before it does
            .single_flight_deadline(
                timeouts
                    .connect
                    .saturating_add(timeouts.read)
                    .saturating_add(Duration::from_secs(1)),
            );
        if let Some(bound) = options.heuristic_freshness {
            cache = cache.heuristic_freshness(bound);
        }
        if let Some(names) = &options.targeted_cache_control {
            cache = cache.targeted_cache_control(names.iter().cloned());
        }
        let cache = cache.build()?;
        let hosts = Hosts::new(
            &options.hosts,
            options.public_host.as_deref(),
            origin.authority(),
        )?;
        let proxies = TrustedProxies::parse(&options.trusted_proxies)?;
        let upstream = Upstream::new(origin, timeouts);
        let to_origin = upstream.clone();
        let cache =
            ServiceBuilder::new()
                .layer(cache)
                .service_fn(move |request: Request<Incoming>| {
                    let upstream = to_origin.clone();
                    async move { Ok::<_, Infallible>(upstream.forward(request).await) }
                });
        Ok(Self {
            front: Front {
                cache: BoxCloneService::new(cache),
                upstream,
                hosts: Arc::new(hosts),
                proxies: Arc::new(proxies),
                forwarded_for: options.forwarded_for,
                tunnels: Arc::new(tokio::sync::Semaphore::new(options.max_tunnels)),
            },
        })
    }

    /// Serves on `listener` until it fails.
    ///
    /// # Errors
    ///
    /// A listener that fails.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> Result<(), ServeError> {
        let front = self.front;
        let service = tower::service_fn(move |request: Request<Incoming>| {
            let front = front.clone();
            async move { Ok::<_, Infallible>(front.handle(request).await) }
        });
        // bodies stream through to the origin unbuffered; the header still needs a bound
        common::serve_tower(listener, service, common::Limits::default().header_read).await?;
        Ok(())
    }
}

/// Serves the proxy on `listener`: [`Proxy::new`], then [`Proxy::serve`].
///
/// # Errors
///
/// An option the proxy cannot run with, or a listener that fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    origin: Origin,
    store: AnyStore,
    options: &Options,
) -> Result<(), ServeError> {
    Proxy::new(origin, store, options)?.serve(listener).await
}

#[tokio::main]
async fn main() -> Result<(), ServeError> {
    common::init_tracing();
    let Some(origin) = std::env::args().nth(1) else {
        eprintln!(
            "usage: cargo run --example caching_proxy -- <origin, e.g. http://127.0.0.1:8000>"
        );
        std::process::exit(2);
    };
    let origin: Origin = origin.parse()?;
    let options = Options::from_env()?;
    options.check(&origin)?;
    let addr = common::addr(3002)?;
    // REDIS_CLUSTER, REDIS_SENTINELS or REDIS_URL (see `common::redis_from_env`)
    let (store, backend): (AnyStore, _) = match common::redis_from_env() {
        Some((redis, backend)) => (redis().build().await?.into(), backend),
        None => (MemoryStore::new().into(), "memory"),
    };
    let origin_authority = origin.authority().clone();
    // every option checked before the port is taken
    let proxy = Proxy::new(origin, store, &options)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "caching proxy on http://{} for http://{} (store: {backend})",
        listener.local_addr()?,
        origin_authority,
    );
    proxy.serve(listener).await
}
