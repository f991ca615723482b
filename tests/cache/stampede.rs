//! Stampede protection across processes: layer instances sharing one Redis run the handler
//! once for concurrent misses, and a lock holder that dies never blocks a key beyond the
//! lock's expiry.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use tokio::sync::Barrier;
use tower::ServiceBuilder;
use tower::util::BoxCloneService;
use tower_redis_http::cache::{ResponseCacheBuilder, ResponseCacheLayer};

use crate::support::{Backend, TestRedis};
use crate::{App, ReqBody, get, ok, req, send};

/// One application instance: its own layer (own in-process flights), a slow handler that
/// counts its runs in `runs`.
fn instance(builder: ResponseCacheBuilder, name: &'static str, runs: &Arc<AtomicUsize>) -> App {
    let runs = Arc::clone(runs);
    let service = ServiceBuilder::new()
        .layer(builder.build().unwrap())
        .service_fn(move |_request: Request<ReqBody>| {
            let runs = Arc::clone(&runs);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, Infallible>(ok(&format!("rendered by {name}")))
            }
        });
    BoxCloneService::new(service)
}

/// 200 GETs of `path` released at once, alternating between the two instances.
fn burst(one: &App, two: &App, path: &'static str) -> Vec<tokio::task::JoinHandle<crate::Reply>> {
    let barrier = Arc::new(Barrier::new(200));
    (0..200)
        .map(|i| {
            let app = if i % 2 == 0 { one.clone() } else { two.clone() };
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                send(&app, req(get(path))).await
            })
        })
        .collect()
}

async fn builder(redis: &TestRedis) -> ResponseCacheBuilder {
    ResponseCacheLayer::cache_page(crate::redis_store(redis).await, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_misses_across_two_instances_run_the_handler_once() {
    let redis = TestRedis::start();
    let runs = Arc::new(AtomicUsize::new(0));
    let one = instance(builder(&redis).await, "one", &runs);
    let two = instance(builder(&redis).await, "two", &runs);
    let tasks = burst(&one, &two, "/hot");
    let mut bodies = std::collections::HashSet::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        bodies.insert(reply.body);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        bodies.len(),
        1,
        "every request got the one rendering: {bodies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_that_dies_blocks_the_key_no_longer_than_the_lock_lives() {
    let redis = TestRedis::start();
    let lock = Some(Duration::from_millis(500));
    // instance one takes the lock on a runtime of its own, then "crashes": the runtime goes
    // with every task on it (the lock's renewal too), and nothing releases the lock
    let stuck = ServiceBuilder::new()
        .layer(builder(&redis).await.stampede_lock(lock).build().unwrap())
        .service_fn(|_request: Request<ReqBody>| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(ok("never"))
        });
    let process = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dying = process.spawn(async move {
        let _ = tower::ServiceExt::oneshot(stuck, req(get("/crash"))).await;
    });
    let locked = crate::support::eventually(Duration::from_secs(5), || async {
        redis.command(&["KEYS", "*:lock"]).contains("/crash")
    })
    .await;
    assert!(locked, "the first instance holds the lock");
    std::mem::forget(dying);
    std::thread::spawn(move || process.shutdown_background())
        .join()
        .unwrap();

    let runs = Arc::new(AtomicUsize::new(0));
    let two = instance(builder(&redis).await.stampede_lock(lock), "two", &runs);
    let reply = tokio::time::timeout(Duration::from_secs(10), send(&two, req(get("/crash"))))
        .await
        .expect("the second instance took over once the lock expired");
    assert_eq!(reply.body, "rendered by two");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_no_leftover_lock(&redis).await;
}

/// The lock is released with the entry's write.
async fn assert_no_leftover_lock(redis: &TestRedis) {
    let released = crate::support::eventually(Duration::from_secs(5), || {
        let locks = redis.command(&["KEYS", "*:lock"]);
        async move { locks.trim().is_empty() }
    })
    .await;
    assert!(released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_lock_each_instance_runs_the_handler() {
    // the control experiment: the count above is the lock's doing
    let redis = TestRedis::start();
    let runs = Arc::new(AtomicUsize::new(0));
    let one = instance(builder(&redis).await.stampede_lock(None), "one", &runs);
    let two = instance(builder(&redis).await.stampede_lock(None), "two", &runs);
    let (a, b) = tokio::join!(send(&one, req(get("/p"))), send(&two, req(get("/p"))));
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_entry_is_refreshed_once_across_instances_while_all_are_served_stale() {
    let redis = TestRedis::start();
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let instance = |name: &'static str| {
        let (runs, gate) = (Arc::clone(&runs), Arc::clone(&gate));
        let redis = &redis;
        async move {
            let store = crate::redis_store(redis).await;
            let service = ServiceBuilder::new()
                .layer(ResponseCacheLayer::http_cache(store).build().unwrap())
                .service_fn(move |_request: Request<ReqBody>| {
                    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    let gate = Arc::clone(&gate);
                    async move {
                        let mut response = ok(&format!("run {run} by {name}"));
                        let cache_control = if run == 1 {
                            // stale on arrival (Age 70 of 60), within the window
                            response.headers_mut().insert("age", "70".parse().unwrap());
                            "max-age=60, stale-while-revalidate=600"
                        } else {
                            gate.acquire().await.unwrap().forget();
                            "max-age=60"
                        };
                        response
                            .headers_mut()
                            .insert("cache-control", cache_control.parse().unwrap());
                        Ok::<_, Infallible>(response)
                    }
                });
            BoxCloneService::new(service) as App
        }
    };
    let (one, two) = (instance("one").await, instance("two").await);
    let first = send(&one, req(get("/stale"))).await;
    assert_eq!(first.body, "run 1 by one");
    crate::stored_entries(&redis, 1).await;

    let tasks = burst(&one, &two, "/stale");
    for task in tasks {
        // the refresh is gated: only a stale copy can answer in time
        let reply = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("served without waiting for the refresh")
            .unwrap();
        assert_eq!(reply.body, "run 1 by one");
        assert!(
            reply.cache_status().contains("ttl=-"),
            "{}",
            reply.cache_status()
        );
    }
    let refreshing = crate::support::eventually(Duration::from_secs(5), || {
        let runs = Arc::clone(&runs);
        async move { runs.load(Ordering::SeqCst) == 2 }
    })
    .await;
    assert!(refreshing, "one instance refreshes");

    gate.add_permits(1);
    for app in [&one, &two] {
        let fresh = crate::support::eventually(Duration::from_secs(5), || {
            let app = app.clone();
            async move {
                let reply = send(&app, req(get("/stale"))).await;
                reply.body.starts_with("run 2") && !reply.cache_status().contains("ttl=-")
            }
        })
        .await;
        assert!(fresh, "the refreshed entry reaches every instance");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one refresh in all");
    assert_no_leftover_lock(&redis).await;
}

/// An app whose handler, for requests marked `x-together`, only answers once `together` of
/// them are in it at the same time (or gives up after 10 s): requests that queue behind one
/// another never fill it. Unmarked requests are answered at once.
fn side_by_side(
    builder: ResponseCacheBuilder,
    together: usize,
    cache_control: &'static str,
) -> App {
    let gate = Arc::new(Barrier::new(together));
    let service = ServiceBuilder::new()
        .layer(builder.build().unwrap())
        .service_fn(move |request: Request<ReqBody>| {
            let gate = Arc::clone(&gate);
            async move {
                let body = if request.headers().contains_key("x-together") {
                    let met = tokio::time::timeout(Duration::from_secs(10), gate.wait()).await;
                    if met.is_ok() {
                        "side by side"
                    } else {
                        "queued"
                    }
                } else {
                    "alone"
                };
                let mut response = ok(body);
                response
                    .headers_mut()
                    .insert("cache-control", cache_control.parse().unwrap());
                Ok::<_, Infallible>(response)
            }
        });
    BoxCloneService::new(service)
}

/// `requests` marked requests for `path` at once, with `headers`; their bodies.
async fn together(
    app: &App,
    requests: usize,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> Vec<String> {
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut request = get(path).header("x-together", "1");
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                send(&app, req(request)).await.body
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        bodies.push(task.await.unwrap());
    }
    bodies
}

/// Requests whose answers cannot be shared (`private`) or that carry `Authorization` reach
/// the handler side by side; before, each joined the flight of the one before and waited for
/// an entry that never came.
async fn unshareable_answers_never_queue(backend: &Backend) {
    let builder = || ResponseCacheLayer::cache_page(backend.store(), Duration::from_secs(60));
    let app = side_by_side(builder(), 20, "private, max-age=60");
    // the first answer is `private`: the URL is remembered as hit-for-miss
    assert_eq!(send(&app, req(get("/account"))).await.body, "alone");
    let bodies = together(&app, 20, "/account", &[]).await;
    assert!(
        bodies.iter().all(|body| body == "side by side"),
        "unstorable answers queued behind one another: {bodies:?}"
    );
    // requests with Authorization never wait on one another, memo or not
    let app = side_by_side(builder(), 20, "max-age=60");
    let bodies = together(&app, 20, "/me", &[("authorization", "Bearer t")]).await;
    assert!(
        bodies.iter().all(|body| body == "side by side"),
        "requests with Authorization queued behind one another: {bodies:?}"
    );
}

/// A storable answer ends the hit-for-miss memo. Requests on the memo pass without a
/// check of their answer but one in a few (`RECHECK_EVERY`, 8), and the one that meets the
/// storable answer kept neither its key nor its headers: within a few requests one is
/// looked up again and stores, and the one after that hits.
async fn a_storable_answer_ends_the_hit_for_miss_memo(backend: &Backend) {
    let store = backend.store();
    let storable = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&storable);
    let builder = ResponseCacheLayer::cache_page(store, Duration::from_secs(60));
    let (app, runs) = crate::app(builder, move |_, run| {
        let mut response = ok(&format!("run {run}"));
        let headers = response.headers_mut();
        if flag.load(Ordering::SeqCst) {
            headers.insert("cache-control", "max-age=60".parse().unwrap());
            headers.insert("vary", "accept-language".parse().unwrap());
        } else {
            headers.insert("cache-control", "private".parse().unwrap());
        }
        response
    });
    let page = || req(get("/later").header("accept-language", "fr"));
    send(&app, page()).await;
    send(&app, page()).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    storable.store(true, Ordering::SeqCst);
    let first = send(&app, page()).await;
    assert!(
        !first.cache_status().contains("storing"),
        "{}",
        first.cache_status()
    );
    let mut stored = None;
    for _ in 0..9 {
        let reply = send(&app, page()).await;
        if reply.cache_status().contains("storing") {
            stored = Some(reply);
            break;
        }
    }
    let stored = stored.expect("the memo outlived nine storable answers");
    assert!(
        stored
            .cache_status()
            .contains("fwd=uri-miss; detail=storing"),
        "{}",
        stored.cache_status()
    );
    // the entry is written in the background: a request may still miss before it lands
    let hit = crate::until_hit(&app, page).await;
    let run: usize = hit.body.trim_start_matches("run ").parse().unwrap();
    assert!(run >= 4, "{}", hit.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unstorable_answer_in_one_instance_spares_the_others_the_wait() {
    let redis = TestRedis::start();
    let one = side_by_side(builder(&redis).await, 20, "private, max-age=60");
    let two = side_by_side(builder(&redis).await, 20, "private, max-age=60");
    // instance one learns that /account is not storable, and tells the store
    assert_eq!(send(&one, req(get("/account"))).await.body, "alone");
    let memo_written = crate::support::eventually(Duration::from_secs(5), || async {
        redis.command(&["KEYS", "*:hfm"]).lines().count() == 1
    })
    .await;
    assert!(memo_written, "no hit-for-miss memo in the store");
    // instance two has never seen /account: its requests still do not queue
    let bodies = together(&two, 20, "/account", &[]).await;
    assert!(
        bodies.iter().all(|body| body == "side by side"),
        "the other instance queued behind its own leader: {bodies:?}"
    );
    assert_no_leftover_lock(&redis).await;
}

/// A URL with nothing stored whose answer could not be stored is not looked up again while the
/// memo lasts: a never-storable route costs the handler and no round trip. Before, every
/// request read the URL's Vary list from Redis first.
#[tokio::test]
async fn a_never_storable_url_is_not_looked_up_again() {
    let redis = TestRedis::start();
    let (app, runs) = crate::app(builder(&redis).await, |_, _| ok("mine"));
    let me = || req(get("/me").header("authorization", "Bearer t"));
    send(&app, me()).await;
    let reads = crate::support::command_calls(&redis, "get");
    for _ in 0..50 {
        let reply = send(&app, me()).await;
        assert!(
            reply.cache_status().contains("fwd=uri-miss")
                && !reply.cache_status().contains("storing"),
            "{}",
            reply.cache_status()
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 51);
    assert_eq!(
        crate::support::command_calls(&redis, "get"),
        reads,
        "requests on a remembered unstorable URL read the store"
    );
}

/// Credentialed requests that are never stored do not make the anonymous requests of the same
/// URL skip their lookup: a page that logged-in users get uncached is still served from the
/// cache to everyone else.
async fn credentials_are_remembered_apart(backend: &Backend) {
    let store = backend.store();
    let builder = ResponseCacheLayer::cache_page(store, Duration::from_secs(60));
    let (app, runs) = crate::app(builder, |_, run| ok(&format!("run {run}")));
    let page = || req(get("/page"));
    let credentialed = || req(get("/page").header("authorization", "Bearer t"));
    send(&app, credentialed()).await;
    send(&app, credentialed()).await;
    let stored = send(&app, page()).await;
    assert!(
        stored.cache_status().contains("storing"),
        "{}",
        stored.cache_status()
    );
    // the entry is written in the background: a request may still miss before it lands
    let hit = crate::until_hit(&app, page).await;
    assert!(hit.body != "run 1" && hit.body != "run 2", "{}", hit.body);
    assert!(runs.load(Ordering::SeqCst) >= 3);
}

crate::on_each_backend!(
    a_storable_answer_ends_the_hit_for_miss_memo,
    credentials_are_remembered_apart,
);
crate::on_each_backend!(multi_thread: unshareable_answers_never_queue);
