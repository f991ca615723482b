//! The load benchmark's peers: other crates' layers doing the work of a scenario of
//! `bench/server.rs`, served the same way (axum, `route_layer`, 1 KiB bodies) on the same
//! Redis, so that `bench/run.sh` reports each beside its equivalent.
//!
//! `REDIS_URL` (required) and `ADDR` (default 127.0.0.1:3200). `GET /runs` tells how often
//! each cached route's handler ran, for `bench/run.sh` to check that the cache scenarios hit
//! before it times them.
//!
//! A separate crate, with its own lock file, so that the peers' dependency trees never enter
//! the crate's own build.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::convert::Infallible;

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::http::{Request, Response, StatusCode, header};
use axum::routing::get;
use http_body_util::Full;
use http_cache::{MokaCache, MokaManager};
use http_cache_tower_server::ServerCacheLayer;
use tower::ServiceBuilder;
use tower_http_cache::prelude::{CacheLayer, InMemoryBackend, RedisBackend};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often each cached route's handler ran.
#[derive(Default)]
struct Runs {
    tower_http_cache_memory: AtomicUsize,
    tower_http_cache_redis: AtomicUsize,
    http_cache_tower_server_moka: AtomicUsize,
}

/// The page every route serves: 1 KiB, shareable for an hour (what the HTTP-semantics caches
/// need to store it; `bench/server.rs`'s cache_page scenario stores it without asking). A
/// service rather than an axum handler: tower-http-cache needs a `Sync` response body, which
/// axum's is not.
fn page(
    runs: Arc<Runs>,
    counter: fn(&Runs) -> &AtomicUsize,
) -> impl tower::Service<
    Request<axum::body::Body>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: Request<axum::body::Body>| {
        counter(&runs).fetch_add(1, Ordering::Relaxed);
        let response = Response::builder()
            .header(header::CACHE_CONTROL, "public, max-age=3600")
            .body(Full::new(Bytes::from_static(&[b'x'; 1024])))
            .expect("a valid response");
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

/// A peer's layer errors are boxed; axum wants infallible services.
async fn failed(_: BoxError) -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("REDIS_URL").map_err(|_| "REDIS_URL is required")?;
    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3200".into())
        .parse()?;
    let manager = redis::Client::open(url.as_str())?
        .get_connection_manager()
        .await?;
    let runs = Arc::new(Runs::default());
    let hour = Duration::from_secs(3600);

    let tower_http_cache_memory = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(failed))
        .layer(
            CacheLayer::builder(InMemoryBackend::new(10_000))
                .ttl(hour)
                .build(),
        )
        .service(page(Arc::clone(&runs), |runs| {
            &runs.tower_http_cache_memory
        }));
    let tower_http_cache_redis = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(failed))
        .layer(
            CacheLayer::builder(RedisBackend::new(manager))
                .ttl(hour)
                .build(),
        )
        .service(page(Arc::clone(&runs), |runs| &runs.tower_http_cache_redis));
    let http_cache_tower_server_moka = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(failed))
        .layer(ServerCacheLayer::new(MokaManager::new(MokaCache::new(
            10_000,
        ))))
        .service(page(Arc::clone(&runs), |runs| {
            &runs.http_cache_tower_server_moka
        }));
    let counts = {
        let runs = Arc::clone(&runs);
        get(move || async move {
            format!(
                "tower_http_cache_memory {}\ntower_http_cache_redis {}\nhttp_cache_tower_server_moka {}\n",
                runs.tower_http_cache_memory.load(Ordering::Relaxed),
                runs.tower_http_cache_redis.load(Ordering::Relaxed),
                runs.http_cache_tower_server_moka.load(Ordering::Relaxed),
            )
        })
    };
    let app = Router::new()
        .route(
            "/plain",
            get(|| async { Bytes::from_static(&[b'x'; 1024]) }),
        )
        .route("/runs", counts)
        .route_service("/peers/tower-http-cache/memory", tower_http_cache_memory)
        .route_service("/peers/tower-http-cache/redis", tower_http_cache_redis)
        .route_service(
            "/peers/http-cache-tower-server/moka",
            http_cache_tower_server_moka,
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
