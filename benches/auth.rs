//! An authenticated request through `TokenAuthLayer` against the same service without it, at
//! 64 concurrent tasks, in one run:
//!
//! - `plain_service`: the handler alone (the ceiling);
//! - `handwritten_redis_get`: the handler doing the lookup itself, one GET over one shared
//!   `MultiplexedConnection` and a JSON decode (the floor for one round trip);
//! - `layer_redis` / `layer_memory`: the handler behind the layer.
//!
//! `cargo bench --bench auth`, then `scripts/bench-ratio.py auth_64_tasks handwritten_redis_get`.

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
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_redis_http::auth::{Authenticated, TokenAuthLayer, Tokens};
use tower_redis_http::store::{AnyStore, MemoryStore, RedisStore};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    username: String,
    is_active: bool,
}

fn body() -> Bytes {
    Bytes::from(vec![b'x'; 1024])
}

async fn handler(request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = request.extensions().get::<Authenticated<User>>();
    Ok(Response::new(Full::new(body())))
}

fn request(token: &str) -> Request<Full<Bytes>> {
    Request::get("/me/")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends an authenticated request through `service` on each task and checks the answer.
fn run<S, B>(rt: &tokio::runtime::Runtime, iters: u64, service: S, token: &str) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    let token = token.to_owned();
    concurrent(rt, iters, move || {
        let (service, request) = (service.clone(), request(&token));
        async move {
            let response = service.oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    })
}

fn auth(c: &mut Criterion) {
    let redis = support::TestRedis::start();
    let rt = common::runtime();
    let user = User {
        id: 1,
        username: "alice".into(),
        is_active: true,
    };
    let (redis_store, token) = rt.block_on(async {
        let store = RedisStore::builder(redis.url()).build().await.unwrap();
        let token = Tokens::new(store.clone(), |u: &User| u.id.to_string())
            .issue(&user)
            .await
            .unwrap();
        (store, token)
    });
    let memory = MemoryStore::new();
    let memory_token = rt.block_on(async {
        Tokens::new(memory.clone(), |u: &User| u.id.to_string())
            .issue(&user)
            .await
            .unwrap()
    });
    let conn = rt.block_on(async {
        redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    });

    let layered = |store: AnyStore| {
        ServiceBuilder::new()
            .layer(TokenAuthLayer::<User>::bearer(store).build().unwrap())
            .service_fn(handler)
    };
    let handwritten = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let mut conn = conn.clone();
        async move {
            let token = request.headers()["authorization"]
                .to_str()
                .unwrap()
                .strip_prefix("Bearer ")
                .unwrap()
                .to_owned();
            let stored: Vec<u8> = redis::cmd("GET")
                .arg(format!(":1:{token}"))
                .query_async(&mut conn)
                .await
                .unwrap();
            let _user: User = serde_json::from_slice(&stored).unwrap();
            Ok::<_, Infallible>(Response::new(Full::new(body())))
        }
    });

    let mut group = c.benchmark_group("auth_64_tasks");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(6));
    group.bench_function("plain_service", |b| {
        b.iter_custom(|iters| run(&rt, iters, tower::service_fn(handler), &token));
    });
    group.bench_function("handwritten_redis_get", |b| {
        b.iter_custom(|iters| run(&rt, iters, handwritten.clone(), &token));
    });
    group.bench_function("layer_redis", |b| {
        b.iter_custom(|iters| run(&rt, iters, layered(redis_store.clone().into()), &token));
    });
    group.bench_function("layer_memory", |b| {
        b.iter_custom(|iters| run(&rt, iters, layered(memory.clone().into()), &memory_token));
    });
    group.finish();
}

criterion_group!(benches, auth);
criterion_main!(benches);
