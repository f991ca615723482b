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
    let (_store, _tokens, token, app) = setup(&redis).await;
    assert_eq!(send(&app, "/page", &token).await.0, StatusCode::OK);

    let started = Instant::now();
    let clients = load(&app, &token, 8, Duration::from_millis(2500), started);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.pause();
    tokio::time::sleep(5 * timeout).await;
    redis.resume();
    let resumed = started.elapsed();
    let mut slowest = Duration::ZERO;
    let mut unavailable = 0;
    for (at, status, took) in clients.await.unwrap() {
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
    assert!(
        unavailable > 0,
        "auth never failed closed while Redis was stopped"
    );
    assert!(
        slowest < timeout + Duration::from_millis(150),
        "a request took {slowest:?}"
    );
}

/// The store, a token for user 1, and the three-layer stack, on a server of the test's own.
async fn setup(redis: &TestRedis) -> (AnyStore, Tokens<User>, String, App) {
    let timeout = Duration::from_millis(200);
    let store: AnyStore = RedisStore::builder(redis.url())
        .command_timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .await
        .unwrap()
        .into();
    let tokens = Tokens::new(store.clone(), |user: &User| user.id.to_string());
    let token = tokens.issue(&User { id: 1 }).await.unwrap();
    let app = stack(&store);
    (store, tokens, token, app)
}

/// Requests from `clients` tasks for `run_for`, each status with when (after `started`) it
/// was answered and how long it took.
fn load(
    app: &App,
    token: &str,
    clients: usize,
    run_for: Duration,
    started: Instant,
) -> tokio::task::JoinHandle<Vec<(Duration, StatusCode, Duration)>> {
    let (app, token) = (app.clone(), token.to_owned());
    tokio::spawn(async move {
        let tasks: Vec<_> = (0..clients)
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
                        // as a client on a network would: an answer given at once must not
                        // keep this task from giving the runtime's other tasks their turn
                        tokio::task::yield_now().await;
                    }
                    seen
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    })
}

/// Redis killed under load and restarted empty: no request gets anything but an answer of
/// the layers' policies, answers are normal again within 1 s of its return, a token revoked
/// before stays refused, and the empty cache misses rather than errs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_killed_and_restarted_empty_is_recovered_from_within_a_second() {
    let mut redis = TestRedis::start();
    let (_store, tokens, token, app) = setup(&redis).await;
    let revoked = tokens.issue(&User { id: 2 }).await.unwrap();
    assert!(tokens.revoke(&revoked).await.unwrap());
    assert_eq!(send(&app, "/page", &token).await.0, StatusCode::OK);

    let load = load(&app, &token, 8, Duration::from_millis(2500), Instant::now());
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    let back = killed.elapsed() + Duration::from_millis(300);
    for (at, status, _) in load.await.unwrap() {
        // the token died with Redis's memory: 401 is the normal answer after the restart
        assert!(
            [
                StatusCode::OK,
                StatusCode::UNAUTHORIZED,
                StatusCode::SERVICE_UNAVAILABLE
            ]
            .contains(&status),
            "{status} at {at:?}"
        );
        if at > back + Duration::from_secs(1) {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "at {at:?}, Redis back at {back:?}"
            );
        }
    }
    assert_eq!(
        send(&app, "/page", &revoked).await.0,
        StatusCode::UNAUTHORIZED
    );
    // a token issued now is served, through a cache that starts empty
    let fresh = tokens.issue(&User { id: 1 }).await.unwrap();
    assert_eq!(send(&app, "/page/after", &fresh).await.0, StatusCode::OK);
    assert_eq!(send(&app, "/page/after", &fresh).await.0, StatusCode::OK);
}

/// Connections killed (`CLIENT KILL`) and the script cache flushed (`SCRIPT FLUSH`) under load:
/// reads are retried on a new connection, scripts are sent again with their body, and what
/// may not be re-sent falls to a policy that lets the request on; no client sees an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_and_a_flushed_script_cache_reach_no_client() {
    let redis = TestRedis::start();
    let (_store, _tokens, token, app) = setup(&redis).await;
    assert_eq!(send(&app, "/page", &token).await.0, StatusCode::OK);

    let load = load(&app, &token, 8, Duration::from_millis(1500), Instant::now());
    for action in [
        &["CLIENT", "KILL", "TYPE", "normal"][..],
        &["SCRIPT", "FLUSH"],
        &["CLIENT", "KILL", "TYPE", "normal"],
        &["SCRIPT", "FLUSH"],
    ] {
        tokio::time::sleep(Duration::from_millis(250)).await;
        redis.command(action);
    }
    let answers = load.await.unwrap();
    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, status, _)| *status != StatusCode::OK)
        .collect();
    assert!(answers.len() > 100, "only {} requests", answers.len());
    assert!(failed.is_empty(), "{failed:?}");
}
