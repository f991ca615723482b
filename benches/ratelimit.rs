//! An allowed request through `RateLimitLayer` against the bare service, at 64 concurrent
//! tasks, in one run: GCRA on Redis and on the memory store, a fixed window on the memory
//! store, and tower_governor's in-memory GCRA beside them (one global key each, a quota no
//! request exhausts), plus the memory-store GCRA spread over 64 keys as per-client limits are.
//!
//! `cargo bench --bench ratelimit`, then `scripts/bench-ratio.py ratelimit_64_tasks bare_service`.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use common::{TASKS, concurrent};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::GlobalKeyExtractor;
use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
use tower_redis_http::store::{AnyStore, MemoryStore, RedisStore};

async fn handler(_request: Request<Empty<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 1024]))))
}

/// The same handler with axum's body, which tower_governor's rejections convert into.
async fn axum_handler(
    _request: Request<Empty<Bytes>>,
) -> Result<Response<axum::body::Body>, Infallible> {
    Ok(Response::new(axum::body::Body::from(vec![b'x'; 1024])))
}

fn run<S, B>(rt: &tokio::runtime::Runtime, iters: u64, service: S) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    concurrent(rt, iters, move || {
        let service = service.clone();
        async move {
            let response = service
                .oneshot(Request::get("/api/").body(Empty::new()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    })
}

fn ratelimit(c: &mut Criterion) {
    let redis = support::TestRedis::start();
    let rt = common::runtime();
    let redis_store: AnyStore = rt.block_on(async {
        RedisStore::builder(redis.url())
            .build()
            .await
            .unwrap()
            .into()
    });
    // a quota no request exhausts: one per microsecond, with a burst of a million
    let limited = |store: AnyStore, rule: Rule| {
        ServiceBuilder::new()
            .layer(RateLimitLayer::builder(store).rule(rule).build().unwrap())
            .service_fn(handler)
    };
    let gcra = || Rule::gcra("bench", "1000000/s", 1_000_000, Key::global());
    let window = || Rule::fixed_window("bench", "1000000000/h", Key::global());
    let governor = {
        let config = GovernorConfigBuilder::default()
            .per_nanosecond(1)
            .burst_size(u32::MAX)
            .key_extractor(GlobalKeyExtractor)
            .finish()
            .unwrap();
        ServiceBuilder::new()
            .layer(GovernorLayer::new(config))
            .service_fn(axum_handler)
    };

    let mut group = c.benchmark_group("ratelimit_64_tasks");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(6));
    group.bench_function("bare_service", |b| {
        b.iter_custom(|iters| run(&rt, iters, tower::service_fn(handler)));
    });
    group.bench_function("gcra_redis", |b| {
        let service = limited(redis_store.clone(), gcra());
        b.iter_custom(|iters| run(&rt, iters, service.clone()));
    });
    group.bench_function("gcra_memory", |b| {
        let service = limited(MemoryStore::new().into(), gcra());
        b.iter_custom(|iters| run(&rt, iters, service.clone()));
    });
    group.bench_function("gcra_memory_64_keys", |b| {
        // per-client limits spread over many keys; this spreads over 64
        let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let spread = Key::custom(move |_| {
            Some((next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64).to_string())
        });
        let service = limited(
            MemoryStore::new().into(),
            Rule::gcra("bench", "1000000/s", 1_000_000, spread),
        );
        b.iter_custom(|iters| run(&rt, iters, service.clone()));
    });
    group.bench_function("fixed_window_memory", |b| {
        let service = limited(MemoryStore::new().into(), window());
        b.iter_custom(|iters| run(&rt, iters, service.clone()));
    });
    group.bench_function("tower_governor_memory", |b| {
        b.iter_custom(|iters| run(&rt, iters, governor.clone()));
    });
    group.finish();
}

criterion_group!(benches, ratelimit);
criterion_main!(benches);
