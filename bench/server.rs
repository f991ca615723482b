//! The load-benchmark server: one axum binary, one route per scenario, each route with its own
//! layers, all on the same runtime. `bench/run.sh` starts it and drives it with wrk.
//!
//! `REDIS_URL` (required), `REDIS_CLUSTER` (seed node URLs, comma-separated: the cluster
//! scenarios under `/cluster/`) and `ADDR` (default 127.0.0.1:3100). Every response body is
//! 1 KiB. The scenarios under `/near/` run on a Redis store with a near cache; `bench/run.sh`
//! revokes [`REVOKED_TOKEN`] behind its back to check that the near cache hears of it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::GlobalKeyExtractor;
use tower_redis_http::auth::TokenAuthLayer;
use tower_redis_http::cache::ResponseCacheLayer;
use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
use tower_redis_http::store::{AnyStore, Expiry, MemoryStore, NearCache, RedisStore, Store, value};

/// The token every authenticated scenario presents.
const TOKEN: &str = "bench-token-0123456789abcdef";

/// A second token, which `bench/run.sh` deletes from Redis with `redis-cli` (another client,
/// as another instance of the service would) after the near cache holds it.
const REVOKED_TOKEN: &str = "bench-revoked-0123456789abcdef";

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    username: String,
    is_active: bool,
}

fn body() -> Bytes {
    Bytes::from_static(&[b'x'; 1024])
}

async fn plain() -> Bytes {
    body()
}

/// The plain page, marked shareable for a cache in front of requests with `Authorization`
/// (RFC 9111 §3.5): what the full stack serves, so that it really hits.
async fn public_page() -> ([(http::HeaderName, &'static str); 1], Bytes) {
    (
        [(http::header::CACHE_CONTROL, "public, max-age=3600")],
        body(),
    )
}

/// Scenario 2, the floor: the lookup written by hand, one GET on one shared connection (on a
/// cluster, redis-rs's cluster connection, which routes it to the key's node).
async fn floor<C: ConnectionLike + Clone>(
    State(conn): State<C>,
    headers: HeaderMap,
) -> Result<Bytes, StatusCode> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let mut conn = conn;
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!(":1:{token}"))
        .query_async(&mut conn)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let stored = stored.ok_or(StatusCode::UNAUTHORIZED)?;
    let _user: User = serde_json::from_slice(&stored).map_err(|_| StatusCode::UNAUTHORIZED)?;
    Ok(body())
}

fn auth(store: &AnyStore) -> TokenAuthLayer<User> {
    TokenAuthLayer::bearer(store.clone())
        .build()
        .expect("valid")
}

fn cache(store: &AnyStore) -> ResponseCacheLayer {
    ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(3600))
        .build()
        .expect("valid")
}

/// A quota no benchmark exhausts, so every request is an allowed one.
fn limit(store: &AnyStore, rule: Rule) -> RateLimitLayer {
    RateLimitLayer::builder(store.clone())
        .rule(rule)
        .build()
        .expect("valid")
}

fn gcra() -> Rule {
    Rule::gcra("gcra", "1000000/s", 1_000_000, Key::global())
}

fn window() -> Rule {
    Rule::fixed_window("window", "1000000000/h", Key::global())
}

fn cooldown() -> Rule {
    // distinct keys: wrk puts a new number in the path of every request
    Rule::cooldown(
        "cooldown",
        Duration::from_secs(60),
        Key::path_segment("/rl/cooldown/{store}/{n}", "n"),
    )
}

/// Each memory-store scenario gets a store of its own: the cooldown scenario writes hundreds of
/// thousands of distinct keys, which a shared bounded store would make room for by evicting
/// the other scenarios' entries (the benchmark token among them).
fn scenarios(
    redis: &AnyStore,
    near: &AnyStore,
    memory_auth: &AnyStore,
    conn: MultiplexedConnection,
) -> Router {
    // room for every distinct cooldown key a run writes: a full rate-limit share would fail
    // the cooldown closed (503) instead of measuring it
    let memory = || {
        AnyStore::from(
            MemoryStore::builder()
                .max_rate_limit_keys(5_000_000)
                .build()
                .expect("valid"),
        )
    };
    let route = |path: &str| Router::new().route(path, get(plain));
    let governor = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .key_extractor(GlobalKeyExtractor)
        .finish()
        .expect("valid");
    Router::new()
        .route("/plain", get(plain))
        // the baselines again on distinct paths, for the distinct-key scenarios: wrk's path
        // script costs CPU on the same two cores
        .route("/plain/{n}", get(plain))
        // the plain handler behind a layer that does nothing: what `route_layer` itself costs
        .merge(route("/plain-layered").route_layer(tower::layer::util::Identity::new()))
        .merge(
            Router::new()
                .route("/floor", get(floor::<MultiplexedConnection>))
                .route("/floor/{n}", get(floor::<MultiplexedConnection>))
                .with_state(conn),
        )
        .merge(route("/auth/redis").route_layer(auth(redis)))
        .merge(route("/auth/memory").route_layer(auth(memory_auth)))
        .merge(route("/cache/redis").route_layer(cache(redis)))
        .merge(route("/cache/memory").route_layer(cache(&memory())))
        .merge(route("/cache-miss/redis/{n}").route_layer(cache(redis)))
        // one URL whose requests carry Authorization: never stored, so never a hit
        .merge(route("/cache-uncacheable/redis").route_layer(cache(redis)))
        .merge(route("/cache-uncacheable/memory").route_layer(cache(&memory())))
        .merge(route("/rl/cooldown/redis/{n}").route_layer(limit(redis, cooldown())))
        .merge(route("/rl/cooldown/memory/{n}").route_layer(limit(&memory(), cooldown())))
        .merge(route("/rl/window/redis").route_layer(limit(redis, window())))
        .merge(route("/rl/window/memory").route_layer(limit(&memory(), window())))
        .merge(route("/rl/gcra/redis").route_layer(limit(redis, gcra())))
        .merge(route("/rl/gcra/memory").route_layer(limit(&memory(), gcra())))
        // the same without the informational RateLimit fields: the work tower_governor does
        .merge(
            route("/rl/gcra/memory-bare").route_layer(
                RateLimitLayer::builder(memory())
                    .rule(gcra())
                    .informational_headers(false)
                    .build()
                    .expect("valid"),
            ),
        )
        .merge(route("/rl/governor").route_layer(GovernorLayer::new(governor)))
        .merge(full_stack("/full/redis", redis))
        .merge(route("/near/auth").route_layer(auth(near)))
        .merge(route("/near/cache").route_layer(cache(near)))
        .merge(full_stack("/near/full", near))
}

/// Auth, a per-user GCRA limit and a cache hit, composed on `store`.
fn full_stack(path: &str, store: &AnyStore) -> Router {
    Router::new()
        .route(path, get(public_page))
        .route_layer(cache(store))
        .route_layer(limit(
            store,
            Rule::gcra(
                "user",
                "1000000/s",
                1_000_000,
                Key::principal(|u: &User| u.id.to_string()),
            ),
        ))
        .route_layer(auth(store))
}

/// The single-layer scenarios again on a Redis Cluster, against a floor on the cluster.
fn cluster_scenarios(cluster: &AnyStore, conn: ClusterConnection) -> Router {
    let route = |path: &str| Router::new().route(path, get(plain));
    let cooldown = Rule::cooldown(
        "cooldown",
        Duration::from_secs(60),
        Key::path_segment("/cluster/rl/cooldown/{n}", "n"),
    );
    Router::new()
        .merge(
            Router::new()
                .route("/cluster/floor", get(floor::<ClusterConnection>))
                .route("/cluster/floor/{n}", get(floor::<ClusterConnection>))
                .with_state(conn),
        )
        .merge(route("/cluster/auth").route_layer(auth(cluster)))
        .merge(route("/cluster/cache").route_layer(cache(cluster)))
        .merge(route("/cluster/rl/cooldown/{n}").route_layer(limit(cluster, cooldown)))
        .merge(route("/cluster/rl/window").route_layer(limit(cluster, window())))
        .merge(route("/cluster/rl/gcra").route_layer(limit(cluster, gcra())))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").map_err(|_| "REDIS_URL is required")?;
    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3100".into())
        .parse()?;
    let redis: AnyStore = RedisStore::builder(&url).build().await?.into();
    let near: AnyStore = RedisStore::builder(&url)
        .near_cache(NearCache::new())
        .build()
        .await?
        .into();
    let memory: AnyStore = MemoryStore::new().into();
    let user = User {
        id: 1,
        username: "bench".into(),
        is_active: true,
    };
    for store in [&redis, &memory] {
        store
            .set(TOKEN, value::encode(&user)?, Expiry::Never)
            .await?;
    }
    redis
        .set(REVOKED_TOKEN, value::encode(&user)?, Expiry::Never)
        .await?;
    let conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let mut app = scenarios(&redis, &near, &memory, conn);
    let seeds: Vec<String> = std::env::var("REDIS_CLUSTER")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|seed| !seed.is_empty())
        .map(str::to_owned)
        .collect();
    if !seeds.is_empty() {
        let cluster: AnyStore = RedisStore::cluster(seeds.clone()).build().await?.into();
        cluster
            .set(TOKEN, value::encode(&user)?, Expiry::Never)
            .await?;
        let conn = redis::cluster::ClusterClient::new(seeds)?
            .get_async_connection()
            .await?;
        app = app.merge(cluster_scenarios(&cluster, conn));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok::<(), Box<dyn std::error::Error>>(())
}
