//! An authenticated request through `TokenAuthLayer` on Redis as a ratio to the same handler
//! doing the lookup by hand (one GET over one shared `MultiplexedConnection`, JSON decode),
//! interleaved in one process (A B B A ...) so that machine noise cancels out; 64 concurrent
//! tasks, median and spread of 12 rounds.
//!
//! `cargo bench --bench auth_ratio`

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_redis_http::auth::{Authenticated, TokenAuthLayer, Tokens};
use tower_redis_http::store::RedisStore;

const REQUESTS_PER_TASK: usize = 1_000;
const ROUNDS: usize = 12;

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    username: String,
    is_active: bool,
}

async fn throughput<S, B>(service: S, token: &str) -> f64
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..common::TASKS)
        .map(|_| {
            let (service, header) = (service.clone(), format!("Bearer {token}"));
            tokio::spawn(async move {
                for _ in 0..REQUESTS_PER_TASK {
                    let request = Request::get("/me/")
                        .header("authorization", header.as_str())
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let response = service.clone().oneshot(request).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task panicked");
    }
    (common::TASKS as usize * REQUESTS_PER_TASK) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`; measure only when asked.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let redis = support::TestRedis::start();
    common::runtime().block_on(async {
        let store = RedisStore::builder(redis.url()).build().await.unwrap();
        let user = User { id: 1, username: "alice".into(), is_active: true };
        let token = Tokens::new(store.clone(), |u: &User| u.id.to_string())
            .issue(&user)
            .await
            .unwrap();
        let conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();

        let by_hand = tower::service_fn(move |request: Request<Full<Bytes>>| {
            let mut conn = conn.clone();
            async move {
                let token = request.headers()["authorization"].to_str().unwrap()["Bearer ".len()..].to_owned();
                let stored: Vec<u8> = redis::cmd("GET")
                    .arg(format!(":1:{token}"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let _user: User = serde_json::from_slice(&stored).unwrap();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }
        });
        let layered = ServiceBuilder::new()
            .layer(TokenAuthLayer::<User>::bearer(store).build().unwrap())
            .service_fn(|request: Request<Full<Bytes>>| async move {
                assert!(request.extensions().get::<Authenticated<User>>().is_some());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            });

        throughput(by_hand.clone(), &token).await;
        throughput(layered.clone(), &token).await;
        let mut ratios = Vec::with_capacity(ROUNDS);
        println!("{:>5} {:>14} {:>14} {:>7}", "round", "by_hand/s", "layer/s", "ratio");
        for round in 0..ROUNDS {
            let (hand, layer) = if round % 2 == 0 {
                let hand = throughput(by_hand.clone(), &token).await;
                (hand, throughput(layered.clone(), &token).await)
            } else {
                let layer = throughput(layered.clone(), &token).await;
                (throughput(by_hand.clone(), &token).await, layer)
            };
            println!("{round:>5} {hand:>14.0} {layer:>14.0} {:>7.3}", layer / hand);
            ratios.push(layer / hand);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "layer_redis / handwritten_redis_get at {} tasks: median {:.3} (min {:.3}, max {:.3}, {ROUNDS} rounds)",
            common::TASKS,
            (ratios[ROUNDS / 2 - 1] + ratios[ROUNDS / 2]) / 2.0,
            ratios[0],
            ratios[ROUNDS - 1]
        );
    });
}
