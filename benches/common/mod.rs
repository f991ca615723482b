//! Shared by the benchmarks: concurrent load on one runtime, and a test Redis.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

/// Concurrent tasks per measurement, as in the load figures the crate is judged by.
pub const TASKS: u64 = 64;

/// A two-worker runtime, like the machines the figures come from.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the runtime")
}

/// Runs `op` `iters` times on each of [`TASKS`] tasks at once and returns the elapsed time, so
/// criterion's time per iteration is the time per `TASKS` concurrent operations.
pub fn concurrent<F, Fut>(rt: &Runtime, iters: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let op = op.clone();
                tokio::spawn(async move {
                    for _ in 0..iters {
                        op().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("bench task panicked");
        }
        start.elapsed()
    })
}
