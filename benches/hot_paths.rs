//! The pure hot paths, one request or call at a time: what the layers do before and after the
//! store round trip.
//!
//! - `auth/*`: path normalization and matching plus token extraction, through the auth layer
//!   on requests it answers without the store (an allow-listed path; a malformed token; a
//!   path bypass attempt).
//! - `cache/hit_memory`: cache key building and entry decoding, through a hit on the memory
//!   store.
//! - `ratelimit/rate_parse`, `store/*`: rate strings, key building, value decoding and each
//!   memory-store policy.
//!
//! `cargo bench --bench hot_paths`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_redis_http::auth::TokenAuthLayer;
use tower_redis_http::cache::ResponseCacheLayer;
use tower_redis_http::ratelimit::Rate;
use tower_redis_http::store::{Expiry, KeyScheme, MemoryStore, RatePolicy, Store, value};

async fn handler(_request: Request<Empty<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the runtime")
}

async fn call<S, B>(service: &S, request: Request<Empty<Bytes>>)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = service.clone().oneshot(request).await.unwrap();
    black_box(response.into_body().collect().await.unwrap());
}

fn auth(c: &mut Criterion) {
    let rt = runtime();
    let service = ServiceBuilder::new()
        .layer(
            TokenAuthLayer::<u64>::bearer(MemoryStore::new())
                .allow("/login/")
                .allow("/sms_codes/{mobile}/")
                .allow_prefix("/static/")
                .optional("/articles/")
                .build()
                .unwrap(),
        )
        .service_fn(handler);
    let mut group = c.benchmark_group("auth");
    group.bench_function("allow_listed_pattern", |b| {
        b.to_async(&rt).iter(|| {
            call(
                &service,
                Request::get("/sms_codes/13800138000/")
                    .body(Empty::new())
                    .unwrap(),
            )
        });
    });
    group.bench_function("malformed_token_rejected", |b| {
        b.to_async(&rt).iter(|| {
            call(
                &service,
                Request::get("/me/")
                    .header("authorization", "Bearer a b")
                    .body(Empty::new())
                    .unwrap(),
            )
        });
    });
    group.bench_function("bypass_attempt_rejected", |b| {
        b.to_async(&rt).iter(|| {
            call(
                &service,
                Request::get("/login/%2e%2e/admin")
                    .body(Empty::new())
                    .unwrap(),
            )
        });
    });
    group.finish();
}

fn cache(c: &mut Criterion) {
    let rt = runtime();
    let service = ServiceBuilder::new()
        .layer(
            ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(3600))
                .build()
                .unwrap(),
        )
        .service_fn(|_request: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'x'; 1024]))))
        });
    let request = || {
        Request::get("/articles/?page=2")
            .header("host", "bench.example")
            .body(Empty::new())
            .unwrap()
    };
    rt.block_on(async {
        call(&service, request()).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    c.bench_function("cache/hit_memory", |b| {
        b.to_async(&rt).iter(|| call(&service, request()))
    });
}

fn store_and_rates(c: &mut Criterion) {
    let rt = runtime();
    c.bench_function("ratelimit/rate_parse", |b| {
        b.iter(|| black_box("100/5m").parse::<Rate>().unwrap())
    });
    let scheme = KeyScheme::django("shop", 2);
    c.bench_function("store/key_scheme_make", |b| {
        b.iter(|| scheme.make(black_box("a1b2c3d4e5f6")).unwrap())
    });
    let user = value::encode(&serde_json::json!({"id": 1, "username": "alice", "is_active": true}))
        .unwrap();
    c.bench_function("store/value_decode", |b| {
        b.iter(|| value::decode::<serde_json::Value>(black_box(&user)).unwrap());
    });

    let memory = MemoryStore::new();
    rt.block_on(memory.set("token", user.clone(), Expiry::Never))
        .unwrap();
    c.bench_function("store/memory_get", |b| {
        b.to_async(&rt).iter(|| memory.get(black_box("token")))
    });
    let policies = [
        (
            "store/memory_fixed_window",
            RatePolicy::fixed_window(u64::MAX, Duration::from_secs(3600)).unwrap(),
        ),
        (
            "store/memory_gcra",
            RatePolicy::gcra(1_000_000, Duration::from_secs(1), 1_000_000).unwrap(),
        ),
    ];
    for (name, policy) in policies {
        c.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| memory.rate_limit(black_box("k"), &policy))
        });
    }
    let cooldown = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let mut n = 0_u64;
    c.bench_function("store/memory_cooldown_distinct_keys", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let key = format!("sms:{n}");
            let memory = memory.clone();
            async move { memory.rate_limit(&key, &cooldown).await }
        });
    });
}

criterion_group!(benches, auth, cache, store_and_rates);
criterion_main!(benches);
