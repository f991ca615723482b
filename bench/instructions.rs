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
//!
//! A scenario named `redis_<layer>` runs the layer on a `RedisStore` (`near_<layer>`: with a
//! near cache) at `REDIS_URL`; `redis_floor` is the one-GET floor handler, its baseline:
//! callgrind counts this process only, so these are the client side's instructions.

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
use tower_redis_http::store::{AnyStore, Expiry, MemoryStore, NearCache, RedisStore, Store, value};

/// The scenarios on the memory store, in the order `bench/instructions.sh` reports them; each
/// but `plain*` and `governor` also runs as `redis_<name>` and `near_<name>`.
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
    "redis_floor",
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

/// The floor on Redis: the token's lookup written by hand, one GET on a shared
/// `MultiplexedConnection`, then the page.
async fn floor(
    axum::extract::State(conn): axum::extract::State<redis::aio::MultiplexedConnection>,
    headers: http::HeaderMap,
) -> Result<Bytes, http::StatusCode> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(http::StatusCode::UNAUTHORIZED)?;
    let mut conn = conn;
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!(":1:{token}"))
        .query_async(&mut conn)
        .await
        .map_err(|_| http::StatusCode::SERVICE_UNAVAILABLE)?;
    let stored = stored.ok_or(http::StatusCode::UNAUTHORIZED)?;
    let _user: User =
        serde_json::from_slice(&stored).map_err(|_| http::StatusCode::UNAUTHORIZED)?;
    Ok(Bytes::from_static(&[b'x'; 1024]))
}

fn router(scenario: &str, store: &AnyStore) -> Option<Router> {
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
    let named = args.next().unwrap_or_default();
    let requests: usize = args.next().map_or(Ok(10_000), |n| n.parse())?;
    let redis_url = || std::env::var("REDIS_URL").map_err(|_| "REDIS_URL is required");
    let (scenario, store): (&str, AnyStore) = if let Some(layer) = named.strip_prefix("redis_") {
        (
            layer,
            RedisStore::builder(redis_url()?).build().await?.into(),
        )
    } else if let Some(layer) = named.strip_prefix("near_") {
        let store = RedisStore::builder(redis_url()?)
            .near_cache(NearCache::new())
            .build()
            .await?;
        (layer, store.into())
    } else {
        (named.as_str(), MemoryStore::new().into())
    };
    let user = User {
        id: 1,
        username: "bench".into(),
        is_active: true,
    };
    store
        .set("token", value::encode(&user)?, Expiry::Never)
        .await?;
    let router = if named == "redis_floor" {
        let client = redis::Client::open(redis_url()?)?;
        let conn = client.get_multiplexed_async_connection().await?;
        Some(
            Router::new()
                .route("/items/{n}", get(floor))
                .with_state(conn),
        )
    } else {
        router(scenario, &store)
    };
    let Some(router) = router else {
        return Err(format!(
            "scenario must be one of {SCENARIOS:?}, or redis_/near_ and one of them"
        )
        .into());
    };
    let scenario = scenario.to_owned();
    let mut service = router.into_service::<Body>();
    for i in 0..requests {
        // every scenario builds the same request, so that building it is in the baseline: a
        // distinct path and a token (which the cache scenario carries in another standard
        // field, as cheap to build, since `cache_page` stores no page asked for with
        // `Authorization`)
        let token_header = if scenario == "cache" {
            "from"
        } else {
            "authorization"
        };
        let mut request = http::Request::builder()
            .uri(format!("/items/{i}"))
            .header("host", "localhost")
            .header(token_header, "Bearer token");
        if scenario == "cache" || scenario == "uncacheable" {
            request = request.uri("/items/1");
        }
        let on_redis = named.starts_with("near_") || named.starts_with("redis_");
        if i + 1 == requests && on_redis {
            reset_redis_stats(&redis_url()?).await?;
        }
        let response = service
            .ready()
            .await?
            .call(request.body(Body::empty())?)
            .await?;
        if i + 1 == requests && on_redis {
            // a scenario on Redis is what its name says: a near-cache one's warm request reads
            // no key; one on Redis (but the never-storable URL, which the memo keeps away from
            // it) sends its command there
            let stats = redis_stats(&redis_url()?).await?;
            let sent = [
                "cmdstat_get:",
                "cmdstat_getex:",
                "cmdstat_evalsha:",
                "cmdstat_exec:",
            ]
            .iter()
            .any(|command| stats.contains(command));
            let wrong = if named.starts_with("near_") {
                stats.contains("cmdstat_get:") || stats.contains("cmdstat_getex:")
            } else {
                sent == (named == "redis_uncacheable")
            };
            if wrong {
                return Err(format!("{named} is not what its name says:\n{stats}").into());
            }
        }
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
            // the cache stores its first response from a spawned task: let it run (its Redis
            // round trips too, slowed by callgrind); the check on the last request tells
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

async fn reset_redis_stats(url: &str) -> Result<(), redis::RedisError> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
}

async fn redis_stats(url: &str) -> Result<String, redis::RedisError> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
}
