//! The store's read path as a ratio to the floor, measured so that machine noise cancels out:
//! `RedisStore::get` and the same GET through one shared `redis::aio::MultiplexedConnection`
//! run interleaved in one process (A B B A ...), 64 concurrent tasks each, and the ratio of
//! their throughputs is reported per round with the median and spread.
//!
//! `cargo bench --bench store_ratio` (the target: median at least 0.90).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use bytes::Bytes;
use tower_redis_http::store::{Expiry, RedisStore, Store};

const TASKS: usize = 64;
const OPS_PER_TASK: usize = 1_000;
const ROUNDS: usize = 12;

async fn throughput<F, Fut>(op: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..OPS_PER_TASK {
                    op().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task panicked");
    }
    (TASKS * OPS_PER_TASK) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent; measure only when asked.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let redis = support::TestRedis::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the runtime");
    rt.block_on(async {
        let store = RedisStore::builder(redis.url()).build().await.unwrap();
        store
            .set("bench", Bytes::from(vec![b'x'; 1024]), Expiry::Never)
            .await
            .unwrap();
        let conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();

        let floor = move || {
            let mut conn = conn.clone();
            async move {
                let value: Vec<u8> = redis::cmd("GET")
                    .arg(":1:bench")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(value.len(), 1024);
            }
        };
        let ours = move || {
            let store = store.clone();
            async move {
                let value = store.get("bench").await.unwrap().unwrap();
                assert_eq!(value.len(), 1024);
            }
        };

        // warm both paths up (connections, allocator, scripts)
        throughput(floor.clone()).await;
        throughput(ours.clone()).await;

        let mut ratios = Vec::with_capacity(ROUNDS);
        println!("{:>5} {:>16} {:>16} {:>7}", "round", "multiplexed/s", "redis_store/s", "ratio");
        for round in 0..ROUNDS {
            let (floor_ops, our_ops) = if round % 2 == 0 {
                let a = throughput(floor.clone()).await;
                (a, throughput(ours.clone()).await)
            } else {
                let b = throughput(ours.clone()).await;
                (throughput(floor.clone()).await, b)
            };
            let ratio = our_ops / floor_ops;
            println!("{round:>5} {floor_ops:>16.0} {our_ops:>16.0} {ratio:>7.3}");
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        let median = (ratios[ROUNDS / 2 - 1] + ratios[ROUNDS / 2]) / 2.0;
        println!(
            "redis_store / multiplexed_connection at {TASKS} tasks: median {median:.3} (min {:.3}, max {:.3}, {ROUNDS} rounds)",
            ratios[0],
            ratios[ROUNDS - 1]
        );
    });
}
