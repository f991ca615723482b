//! Store hot path at 64 concurrent tasks: `RedisStore::get` against the same GET through one
//! shared `redis::aio::MultiplexedConnection` (the floor for one round trip), a bb8-redis pool
//! checked out per request with and without bb8's checkout PING, and the memory store.
//!
//! Run with `cargo bench --bench store`; `scripts/bench-ratio.py get_64_tasks multiplexed_connection` prints each
//! scenario's throughput as a ratio to the multiplexed baseline of the same run.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use bytes::Bytes;
use common::{TASKS, concurrent};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower_redis_http::store::{Expiry, MemoryStore, RedisStore, Store};

const BODY: &[u8] = &[b'x'; 1024];

fn store_get(c: &mut Criterion) {
    let redis = support::TestRedis::start();
    let rt = common::runtime();

    let store = rt.block_on(async {
        let store = RedisStore::builder(redis.url()).build().await.unwrap();
        store
            .set("bench", Bytes::from_static(BODY), Expiry::Never)
            .await
            .unwrap();
        store
    });
    let multiplexed = rt.block_on(async {
        redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    });
    let pool_for = |ping: bool| {
        rt.block_on(async {
            bb8::Pool::builder()
                .max_size(16)
                .test_on_check_out(ping)
                .build(RedisConnectionManager::new(redis.url()).unwrap())
                .await
                .unwrap()
        })
    };
    let checkout_pool = pool_for(false);
    let checkout_ping_pool = pool_for(true);
    let memory = rt.block_on(async {
        let memory = MemoryStore::new();
        memory
            .set("bench", Bytes::from_static(BODY), Expiry::Never)
            .await
            .unwrap();
        memory
    });

    let mut group = c.benchmark_group("get_64_tasks");
    group.throughput(Throughput::Elements(TASKS));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(6));

    group.bench_function("multiplexed_connection", |b| {
        b.iter_custom(|iters| {
            let conn = multiplexed.clone();
            concurrent(&rt, iters, move || {
                let mut conn = conn.clone();
                async move {
                    let value: Vec<u8> = redis::cmd("GET")
                        .arg(":1:bench")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    assert_eq!(value.len(), BODY.len());
                }
            })
        });
    });
    group.bench_function("redis_store", |b| {
        b.iter_custom(|iters| {
            let store = store.clone();
            concurrent(&rt, iters, move || {
                let store = store.clone();
                async move {
                    let value = store.get("bench").await.unwrap().unwrap();
                    assert_eq!(value.len(), BODY.len());
                }
            })
        });
    });
    for (name, pool) in [
        ("bb8_checkout_per_request", &checkout_pool),
        ("bb8_checkout_per_request_with_ping", &checkout_ping_pool),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let pool = pool.clone();
                concurrent(&rt, iters, move || {
                    let pool = pool.clone();
                    async move {
                        let mut conn = pool.get().await.unwrap();
                        let value: Vec<u8> = redis::cmd("GET")
                            .arg(":1:bench")
                            .query_async(&mut *conn)
                            .await
                            .unwrap();
                        assert_eq!(value.len(), BODY.len());
                    }
                })
            });
        });
    }
    group.bench_function("memory_store", |b| {
        b.iter_custom(|iters| {
            let memory = memory.clone();
            concurrent(&rt, iters, move || {
                let memory = memory.clone();
                async move {
                    let value = memory.get("bench").await.unwrap().unwrap();
                    assert_eq!(value.len(), BODY.len());
                }
            })
        });
    });
    group.finish();
}

criterion_group!(benches, store_get);
criterion_main!(benches);
