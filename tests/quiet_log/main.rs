//! A Redis outage as the log sees it: the log says that the store fails, then how often, then
//! that it is back, without a line per request.
//!
//! A binary of its own, with one test: the log's summaries are per process, and tracing's
//! per-callsite caches do not mix a test's own subscriber with other tests' threads.

#[path = "../support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Empty;
use serde::{Deserialize, Serialize};
use tower::{ServiceBuilder, ServiceExt};
use tower_redis_http::auth::{TokenAuthLayer, Tokens};
use tower_redis_http::store::{AnyStore, RedisStore};

use support::TestRedis;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
}

/// What the subscriber wrote, line by line.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self, level: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains(level))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A Redis outage under a steady stream of requests logs its first failure, one summary every
/// 5 s with the count of the failures it did not log, and one line when Redis is back.
#[tokio::test(flavor = "current_thread")]
async fn an_outage_logs_a_few_lines_not_one_per_request() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut redis = TestRedis::start();
    let timeout = Duration::from_millis(200);
    let store: AnyStore = RedisStore::builder(redis.url())
        .command_timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .await
        .unwrap()
        .into();
    let token = Tokens::new(store.clone(), |user: &User| user.id.to_string())
        .issue(&User { id: 1 })
        .await
        .unwrap();
    let app = ServiceBuilder::new()
        .layer(TokenAuthLayer::<User>::bearer(store).build().unwrap())
        .service_fn(|_request: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
    let get = || {
        let app = app.clone();
        let request = Request::get("/me/")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())
            .unwrap();
        async move { app.oneshot(request).await.unwrap().status() }
    };
    assert_eq!(get().await, StatusCode::OK);
    // each decision is a DEBUG event with bounded fields, in the layer's decision span
    let decided = captured.lines("tower_redis_http::decision");
    assert!(
        decided
            .iter()
            .any(|line| line.contains("decision{layer=\"auth\"}")
                && line.contains("outcome=\"authenticated\"")),
        "{decided:#?}"
    );

    redis.kill();
    let down = Instant::now();
    let mut failed = 0;
    while down.elapsed() < Duration::from_secs(6) {
        // auth fails closed
        assert_eq!(get().await, StatusCode::SERVICE_UNAVAILABLE);
        failed += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let warnings = captured.lines(" WARN ");
    assert!(failed > 100, "only {failed} requests in the outage");
    assert_eq!(
        warnings.len(),
        2,
        "one line at the first failure, one summary after 5 s, for {failed} failures: {warnings:#?}"
    );
    assert!(warnings[0].contains("layer=\"auth\""), "{}", warnings[0]);
    assert!(warnings[0].contains("store call failed"), "{}", warnings[0]);
    assert!(
        warnings[1].contains("more times in the last 5s"),
        "{}",
        warnings[1]
    );
    let summed: u64 = warnings[1]
        .split("failed=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the summary counts the failures");
    assert!(summed > 50, "{}", warnings[1]);

    // restarted empty: it knows no token, and says so
    redis.restart();
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            get().await == StatusCode::UNAUTHORIZED
        })
        .await,
        "answered again"
    );
    for _ in 0..20 {
        assert_eq!(get().await, StatusCode::UNAUTHORIZED);
    }
    assert!(
        captured.lines(&token).is_empty(),
        "the token is in the log: {:#?}",
        captured.lines(&token)
    );
    let back = captured.lines(" INFO ");
    assert_eq!(back.len(), 1, "{back:#?}");
    assert!(back[0].contains("Redis answers again"), "{}", back[0]);
}
