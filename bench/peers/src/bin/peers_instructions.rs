//! Instructions per request of the peers' caches on a hit, counted by callgrind beside the
//! crate's own (`bench/instructions.sh` runs both): the same axum `Router` in process, the
//! same 1 KiB page, the same requests as `bench/instructions.rs`, so "ahead of the peers" is
//! a count, not a load run's ratio.
//!
//! ```text
//! valgrind --tool=callgrind bench/peers/target/release/peers_instructions SCENARIO REQUESTS
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::http::{Request, Response, StatusCode, header};
use axum::routing::get;
use http_body_util::{BodyExt, Full};
use http_cache::{MokaCache, MokaManager};
use http_cache_tower_server::ServerCacheLayer;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http_cache::prelude::{CacheLayer, InMemoryBackend};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The scenarios, in the order `bench/instructions.sh` reports them. `plain` is the crate's
/// own baseline handler; `plain_service` the page as a service, which the peers wrap (their
/// bodies must be `Sync`, which axum's handler bodies are not): a peer's cost is counted over
/// `plain_service`.
const SCENARIOS: &[&str] = &[
    "plain",
    "plain_service",
    "tower_http_cache",
    "http_cache_tower_server",
];

/// The page: 1 KiB, shareable for an hour, and how often it was made.
fn page(
    runs: Arc<AtomicUsize>,
) -> impl Service<
    Request<Body>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: Request<Body>| {
        runs.fetch_add(1, Ordering::Relaxed);
        let response = Response::builder()
            .header(header::CACHE_CONTROL, "public, max-age=3600")
            .body(Full::new(Bytes::from_static(&[b'x'; 1024])))
            .expect("a valid response");
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

async fn plain() -> Bytes {
    Bytes::from_static(&[b'x'; 1024])
}

async fn failed(_: BoxError) -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

fn router(scenario: &str, runs: &Arc<AtomicUsize>) -> Option<Router> {
    let route = Router::new();
    Some(match scenario {
        "plain" => route.route("/items/{n}", get(plain)),
        "plain_service" => route.route_service("/items/{n}", page(Arc::clone(runs))),
        "tower_http_cache" => route.route_service(
            "/items/{n}",
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(failed))
                .layer(
                    CacheLayer::builder(InMemoryBackend::new(10_000))
                        .ttl(Duration::from_secs(3600))
                        .build(),
                )
                .service(page(Arc::clone(runs))),
        ),
        "http_cache_tower_server" => route.route_service(
            "/items/{n}",
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(failed))
                .layer(ServerCacheLayer::new(MokaManager::new(MokaCache::new(
                    10_000,
                ))))
                .service(page(Arc::clone(runs))),
        ),
        _ => return None,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_default();
    let requests: usize = args.next().map_or(Ok(10_000), |n| n.parse())?;
    let runs = Arc::new(AtomicUsize::new(0));
    let Some(router) = router(&scenario, &runs) else {
        return Err(format!("scenario must be one of {SCENARIOS:?}").into());
    };
    let caches = scenario != "plain" && scenario != "plain_service";
    let mut service = router.into_service::<Body>();
    for i in 0..requests {
        // the requests of bench/instructions.rs: distinct paths, one path for the caches
        let mut request = Request::builder()
            .uri(format!("/items/{i}"))
            .header("host", "localhost");
        if caches {
            request = request.uri("/items/1");
        }
        let response = service
            .ready()
            .await?
            .call(request.body(Body::empty())?)
            .await?;
        if !response.status().is_success() {
            return Err(format!("{scenario}: request {i} answered {}", response.status()).into());
        }
        std::hint::black_box(response.into_body().collect().await?);
        if i == 0 {
            // a cache that stores from a spawned task gets the time to
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // the scenario is what its name says: a cache's page was made once, then served
    let made = runs.load(Ordering::Relaxed);
    if caches && made != 1 {
        return Err(format!("{scenario} is not a hit: the page was made {made} times").into());
    }
    Ok(())
}
