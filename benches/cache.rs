//! A cache hit against calling the inner service directly, at 64 concurrent tasks, 1 KiB body,
//! in one run: `inner_service` (the handler alone), `hit_redis`, `hit_memory`.
//!
//! `cargo bench --bench cache`, then `scripts/bench-ratio.py cache_64_tasks inner_service`.

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
use http_body_util::{BodyExt, Empty, Full};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_redis_http::cache::ResponseCacheLayer;
use tower_redis_http::store::{AnyStore, MemoryStore, RedisStore};

async fn handler(_request: Request<Empty<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 1024]))))
}

fn request() -> Request<Empty<Bytes>> {
    Request::get("/articles/")
        .header("host", "bench.example")
        .body(Empty::new())
        .unwrap()
}

/// Sends a request through `service` on each task, reading the whole body.
fn run<S, B>(rt: &tokio::runtime::Runtime, iters: u64, service: S) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    concurrent(rt, iters, move || {
        let service = service.clone();
        async move {
            let response = service.oneshot(request()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), 1024);
        }
    })
}

fn cache(c: &mut Criterion) {
    let redis = support::TestRedis::start();
    let rt = common::runtime();
    let cached = |store: AnyStore| {
        let service = ServiceBuilder::new()
            .layer(
                ResponseCacheLayer::cache_page(store, Duration::from_secs(3600))
                    .build()
                    .unwrap(),
            )
            .service_fn(handler);
        // warm: store the entry, and wait until it is a hit
        rt.block_on(async {
            for _ in 0..1000 {
                let response = service.clone().oneshot(request()).await.unwrap();
                let hit = response.headers()["cache-status"]
                    .to_str()
                    .unwrap()
                    .contains("hit");
                response.into_body().collect().await.unwrap();
                if hit {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("the bench entry was never stored");
        });
        service
    };
    let redis_store =
        rt.block_on(async { RedisStore::builder(redis.url()).build().await.unwrap() });
    let on_redis = cached(redis_store.into());
    let on_memory = cached(MemoryStore::new().into());

    let mut group = c.benchmark_group("cache_64_tasks");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(6));
    group.bench_function("inner_service", |b| {
        b.iter_custom(|iters| run(&rt, iters, tower::service_fn(handler)));
    });
    group.bench_function("hit_redis", |b| {
        b.iter_custom(|iters| run(&rt, iters, on_redis.clone()));
    });
    group.bench_function("hit_memory", |b| {
        b.iter_custom(|iters| run(&rt, iters, on_memory.clone()));
    });
    group.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
