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
//! Options, from the environment:
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
//! - `TRUSTED_PROXIES`: the proxies in front of this one whose forwarding headers are keyed.

#[path = "../common/mod.rs"]
pub mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceBuilder;
use tower_redis_http::cache::ResponseCacheLayer;
use tower_redis_http::store::{AnyStore, MemoryStore};

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Why the proxy stopped serving.
pub type ServeError = Box<dyn std::error::Error + Send + Sync>;

/// Where requests go: the origin's scheme and authority.
#[derive(Clone, Debug)]
pub struct Origin {
    scheme: Scheme,
    authority: Authority,
}

impl std::str::FromStr for Origin {
    type Err = String;

    /// An absolute plain-HTTP URI such as `http://127.0.0.1:8000` (a path is ignored).
    fn from_str(origin: &str) -> Result<Self, String> {
        let uri: Uri = origin
            .parse()
            .map_err(|err| format!("{origin:?} is not a URI: {err}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err("the origin must be absolute, as http://host:port".to_owned());
        };
        if scheme != Scheme::HTTP {
            return Err("this example forwards over plain HTTP only".to_owned());
        }
        Ok(Self { scheme, authority })
    }
}

fn bad_gateway(detail: &str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(format!(r#"{{"detail":"{detail}"}}"#)))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Removes the fields that belong to one connection (RFC 9110 §7.6.1): those `Connection`
/// names, and the hop-by-hop fields themselves, so neither the client's nor the origin's
/// reach the other side (a `Proxy-Authorization` meant for this hop, a `Connection:
/// X-Secret` that hides a field from the next). Hyper frames each side's body itself.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<http::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Sends `request` on to the origin, keeping its method, path, query, headers and body.
async fn forward(
    client: Client<HttpConnector, Incoming>,
    origin: Origin,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(origin.scheme);
    parts.authority = Some(origin.authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    let Ok(uri) = Uri::from_parts(parts) else {
        return bad_gateway("Cannot build the origin URI.");
    };
    *request.uri_mut() = uri;
    if let Ok(host) = HeaderValue::from_str(origin.authority.as_str()) {
        request.headers_mut().insert(header::HOST, host);
    }
    strip_hop_by_hop(request.headers_mut());
    match client.request(request).await {
        Ok(mut response) => {
            // the origin's HTTP version is its own hop's; this hop answers in its own
            *response.version_mut() = http::Version::HTTP_11;
            strip_hop_by_hop(response.headers_mut());
            response.map(BodyExt::boxed)
        }
        Err(err) => {
            tracing::warn!(error = %err, "origin request failed");
            bad_gateway("The origin did not answer.")
        }
    }
}

/// How the proxy's cache is set up beyond what the origin's headers decide.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The proxies whose `X-Forwarded-Host` / `-Proto` are part of the key instead of refused.
    pub trusted_proxies: Vec<String>,
    /// Heuristic freshness up to this bound, for responses without explicit freshness.
    pub heuristic_freshness: Option<Duration>,
    /// Store responses that set cookies and replay their `Set-Cookie` on hits.
    pub replay_set_cookie: bool,
    /// The targeted cache-control fields obeyed, most precedent first; `None` keeps the
    /// layer's default, `CDN-Cache-Control`.
    pub targeted_cache_control: Option<Vec<http::HeaderName>>,
    /// Let a targeted field replace `Cache-Control`'s `private`, field-qualified `private` /
    /// `no-cache` and the credentials rule too (RFC 9213 in full; see the cache module's
    /// security notes before turning it on).
    pub targeted_cache_control_overrides_private: bool,
}

impl Options {
    /// `TRUSTED_PROXIES`, `HEURISTIC_FRESHNESS_SECS`, `TARGETED_CACHE_CONTROL`,
    /// `TARGETED_CACHE_CONTROL_OVERRIDES_PRIVATE` and `REPLAY_SET_COOKIE`.
    pub fn from_env() -> Result<Self, String> {
        let heuristic_freshness = match std::env::var("HEURISTIC_FRESHNESS_SECS") {
            Ok(seconds) => Some(Duration::from_secs(seconds.trim().parse().map_err(
                |_| format!("HEURISTIC_FRESHNESS_SECS={seconds:?} is not a number of seconds"),
            )?)),
            Err(_) => None,
        };
        let targeted_cache_control = match std::env::var("TARGETED_CACHE_CONTROL") {
            Ok(names) => Some(
                names
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(|name| {
                        http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                            format!("TARGETED_CACHE_CONTROL: {name:?} is not a field name")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Err(_) => None,
        };
        Ok(Self {
            targeted_cache_control,
            trusted_proxies: common::trusted_proxies_from_env(),
            heuristic_freshness,
            replay_set_cookie: std::env::var("REPLAY_SET_COOKIE").is_ok_and(|on| on == "1"),
            targeted_cache_control_overrides_private: std::env::var(
                "TARGETED_CACHE_CONTROL_OVERRIDES_PRIVATE",
            )
            .is_ok_and(|on| on == "1"),
        })
    }
}

/// Serves the proxy on `listener`: the cache layer in HTTP-cache mode, storing in `store`,
/// in front of a handler that forwards every request to `origin`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    origin: Origin,
    store: AnyStore,
    options: &Options,
) -> Result<(), ServeError> {
    let mut cache = ResponseCacheLayer::http_cache(store)
        .keep_stale(Duration::from_secs(3600))
        .x_cache_header(true)
        .trusted_proxies(options.trusted_proxies.iter().map(String::as_str))
        .replay_set_cookie(options.replay_set_cookie)
        .targeted_cache_control_overrides_private(options.targeted_cache_control_overrides_private);
    if let Some(bound) = options.heuristic_freshness {
        cache = cache.heuristic_freshness(bound);
    }
    if let Some(names) = &options.targeted_cache_control {
        cache = cache.targeted_cache_control(names.iter().cloned());
    }
    let cache = cache.build()?;
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    let service =
        ServiceBuilder::new()
            .layer(cache)
            .service_fn(move |request: Request<Incoming>| {
                let (client, origin) = (client.clone(), origin.clone());
                async move { Ok::<_, Infallible>(forward(client, origin, request).await) }
            });
    // bodies stream through to the origin unbuffered; the header still needs a bound
    common::serve_tower(listener, service, common::Limits::default().header_read).await?;
    Ok(())
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
    // REDIS_CLUSTER, REDIS_SENTINELS or REDIS_URL (see `common::redis_from_env`)
    let (store, backend): (AnyStore, _) = match common::redis_from_env() {
        Some((redis, backend)) => (redis().build().await?.into(), backend),
        None => (MemoryStore::new().into(), "memory"),
    };
    let addr = std::env::var("ADDR")
        .ok()
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| "127.0.0.1:3002".parse().expect("a valid default address"));
    let listener = tokio::net::TcpListener::bind::<std::net::SocketAddr>(addr).await?;
    println!(
        "caching proxy on http://{} for {}://{} (store: {backend})",
        listener.local_addr()?,
        origin.scheme,
        origin.authority
    );
    serve(listener, origin, store, &Options::from_env()?).await
}
