//! Instructions per request of each layer on the memory store, counted by callgrind: the
//! deterministic complement to the wrk runs, for finding and checking CPU work in the crate.
//! `bench/instructions.sh` runs it; by hand:
//!
//! ```text
//! valgrind --tool=callgrind target/release/examples/bench_instructions SCENARIO REQUESTS
//! ```
//!
//! Each request goes through an axum `Router` in process (no sockets), so the count is the
//! router, the layer and the handler: the layer's cost is the difference to `plain`.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::get;
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::GlobalKeyExtractor;
use tower_redis_http::auth::TokenAuthLayer;
use tower_redis_http::cache::ResponseCacheLayer;
use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
use tower_redis_http::store::{Expiry, MemoryStore, Store, value};

/// The scenarios, in the order `bench/instructions.sh` reports them.
const SCENARIOS: &[&str] = &[
    "plain",
    "plain_layered",
    "auth",
    "cache",
    "uncacheable",
    "gcra",
    "gcra_bare",
    "window",
    "cooldown",
    "governor",
];

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    username: String,
    is_active: bool,
}

async fn plain() -> Bytes {
    Bytes::from_static(&[b'x'; 1024])
}

fn router(scenario: &str, store: &MemoryStore) -> Option<Router> {
    let route = Router::new().route("/items/{n}", get(plain));
    let limit = |rule| {
        RateLimitLayer::builder(store.clone())
            .rule(rule)
            .build()
            .expect("valid")
    };
    Some(match scenario {
        "plain" => route,
        "plain_layered" => route.route_layer(tower::layer::util::Identity::new()),
        "auth" => route.route_layer(TokenAuthLayer::<User>::bearer(store.clone()).build().ok()?),
        "cache" => route.route_layer(
            ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(3600))
                .build()
                .ok()?,
        ),
        "uncacheable" => route.route_layer(
            ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(3600))
                .build()
                .ok()?,
        ),
        "gcra" => route.route_layer(limit(Rule::gcra(
            "g",
            "1000000/s",
            1_000_000,
            Key::global(),
        ))),
        // what tower_governor does: the limit without the informational RateLimit fields
        "gcra_bare" => route.route_layer(
            RateLimitLayer::builder(store.clone())
                .rule(Rule::gcra("g", "1000000/s", 1_000_000, Key::global()))
                .informational_headers(false)
                .build()
                .expect("valid"),
        ),
        "window" => route.route_layer(limit(Rule::fixed_window(
            "w",
            "1000000000/h",
            Key::global(),
        ))),
        "cooldown" => route.route_layer(limit(Rule::cooldown(
            "c",
            Duration::from_secs(60),
            Key::path_segment("/items/{n}", "n"),
        ))),
        "governor" => route.route_layer(GovernorLayer::new(
            GovernorConfigBuilder::default()
                .per_nanosecond(1)
                .burst_size(u32::MAX)
                .key_extractor(GlobalKeyExtractor)
                .finish()?,
        )),
        _ => return None,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_default();
    let requests: usize = args.next().map_or(Ok(10_000), |n| n.parse())?;
    let store = MemoryStore::new();
    let user = User {
        id: 1,
        username: "bench".into(),
        is_active: true,
    };
    store
        .set("token", value::encode(&user)?, Expiry::Never)
        .await?;
    let Some(router) = router(&scenario, &store) else {
        return Err(format!("scenario must be one of {SCENARIOS:?}").into());
    };
    let mut service = router.into_service::<Body>();
    for i in 0..requests {
        // distinct paths for every scenario, so that all build the same requests
        let mut request = http::Request::builder()
            .uri(format!("/items/{i}"))
            .header("host", "localhost");
        if scenario == "auth" || scenario == "uncacheable" {
            request = request.header("authorization", "Bearer token");
        }
        if scenario == "cache" || scenario == "uncacheable" {
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
        // the scenario is what its name says: checked on the last request, outside the count
        // of the others
        if i + 1 == requests {
            let status = response
                .headers()
                .get("cache-status")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            let wrong = match scenario.as_str() {
                "cache" => !status.contains("; hit"),
                "uncacheable" => !status.contains("fwd=") || status.contains("storing"),
                _ => false,
            };
            if wrong {
                return Err(format!(
                    "{scenario} is not what its name says: Cache-Status: {status:?}"
                )
                .into());
            }
        }
        std::hint::black_box(response.into_body().collect().await?);
        if i == 0 {
            // the cache stores its first response from a spawned task: let it run
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}
