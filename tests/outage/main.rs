//! Redis breaking on purpose while requests run through the layers: stopped, killed and
//! restarted empty, its connections killed, its scripts flushed, its memory full. Each layer
//! answers by its failure policy within its bound, and serves again once Redis is back.

#[path = "../support/mod.rs"]
mod support;

use std::convert::Infallible;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Empty;
use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_redis_http::auth::{TokenAuthLayer, Tokens};
use tower_redis_http::store::{AnyStore, RedisStore};

use support::TestRedis;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
}

/// The three layers in front of a page: auth (fails closed), a fixed window (fails open),
/// and the cache (fails open), as a stack a service runs.
fn stack(store: &AnyStore) -> App {
    use tower_redis_http::cache::ResponseCacheLayer;
    use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .map_response(|response: Response<_>| response.map(|_| ()))
            .layer(
                TokenAuthLayer::<User>::bearer(store.clone())
                    .build()
                    .unwrap(),
            )
            .layer(
                RateLimitLayer::builder(store.clone())
                    .rule(Rule::fixed_window("pages", "1000000/m", Key::global()))
                    .build()
                    .unwrap(),
            )
            .layer(
                ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(60))
                    .build()
                    .unwrap(),
            )
            .service_fn(|request: Request<Empty<Bytes>>| async move {
                let path = request.uri().path().to_owned();
                Ok::<_, Infallible>(
                    Response::builder()
                        .header(header::CACHE_CONTROL, "public, max-age=60")
                        .body(http_body_util::Full::new(Bytes::from(path)))
                        .unwrap(),
                )
            }),
    )
}

type App = BoxCloneSyncService<Request<Empty<Bytes>>, Response<()>, Infallible>;

async fn send(app: &App, path: &str, token: &str) -> (StatusCode, Duration) {
    let request = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap();
    let started = Instant::now();
    let status = app.clone().oneshot(request).await.unwrap().status();
    (status, started.elapsed())
}

/// Redis stopped (SIGSTOP) for five command timeouts while requests run through all three
/// layers: each request is answered by the layers' policies within a bound, and the next
/// requests after SIGCONT are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_redis_is_met_by_each_layer_s_policy_within_the_bound() {
    let redis = TestRedis::start();
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
    let app = stack(&store);
    assert_eq!(send(&app, "/page", &token).await.0, StatusCode::OK);

    let run_for = Duration::from_millis(2500);
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (app, token) = (app.clone(), token.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut n = 0;
                while started.elapsed() < run_for {
                    n += 1;
                    let path = format!("/page/{client}/{}", n % 5);
                    let (status, took) = send(&app, &path, &token).await;
                    seen.push((started.elapsed(), status, took));
                    // as a client on a network would: an answer given at once must not keep
                    // this task from giving the runtime's other tasks their turn
                    tokio::task::yield_now().await;
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.pause();
    tokio::time::sleep(5 * timeout).await;
    redis.resume();
    let resumed = started.elapsed();
    let mut slowest = Duration::ZERO;
    let mut unavailable = 0;
    for client in clients {
        for (at, status, took) in client.await.unwrap() {
            slowest = slowest.max(took);
            assert!(
                status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                "{status} at {at:?}"
            );
            unavailable += usize::from(status == StatusCode::SERVICE_UNAVAILABLE);
            // served again once Redis runs: the store's ping is answered a moment after
            // SIGCONT, and requests answered 100 ms later are served
            if at > resumed + Duration::from_millis(100) {
                assert_eq!(status, StatusCode::OK, "at {at:?}, resumed at {resumed:?}");
            }
        }
    }
    assert!(
        unavailable > 0,
        "auth never failed closed while Redis was stopped"
    );
    assert!(
        slowest < timeout + Duration::from_millis(150),
        "a request took {slowest:?}"
    );
}
