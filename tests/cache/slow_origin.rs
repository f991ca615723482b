//! Single flight under a slow origin (issue 35, findings 1 and 2): concurrent misses wait
//! for the one request that calls the origin, however long it takes up to the flight's
//! deadline, in one process and across instances on one Redis; a leader whose client hangs up
//! hands the flight to one follower. Origins here take seconds, as slow origins do: every bound
//! is a multiple of the configured waits.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use tower::ServiceBuilder;
use tower::util::BoxCloneService;
use tower_redis_http::cache::{ResponseCacheBuilder, ResponseCacheLayer};

use crate::support::{Backend, TestRedis};
use crate::{App, ReqBody, get, ok, req, send};

/// How long the origin takes to answer.
const ORIGIN: Duration = Duration::from_secs(3);
/// The flight's patience: far shorter than the origin, as the 5 s default is to an 8 s one.
const PATIENCE: Duration = Duration::from_millis(500);

/// An app whose handler takes `origin` and counts its calls in `runs`.
fn slow_app(builder: ResponseCacheBuilder, origin: Duration, runs: &Arc<AtomicUsize>) -> App {
    let runs = Arc::clone(runs);
    let service = ServiceBuilder::new()
        .layer(builder.single_flight(Some(PATIENCE)).build().unwrap())
        .service_fn(move |_request: Request<ReqBody>| {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(origin).await;
                Ok::<_, Infallible>(ok(&format!("run {run}")))
            }
        });
    BoxCloneService::new(service)
}

fn page(backend: &Backend) -> ResponseCacheBuilder {
    ResponseCacheLayer::cache_page(backend.store(), Duration::from_secs(60))
}

/// `count` GETs of `path` on `app`, one after another only as far as spawning goes.
fn concurrent(
    app: &App,
    path: &'static str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<crate::Reply>> {
    (0..count)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, req(get(path))).await })
        })
        .collect()
}

/// Waits until the handler has been called `calls` times (the leader is at work).
async fn until_called(runs: &AtomicUsize, calls: usize) {
    assert!(
        crate::support::eventually(Duration::from_secs(10), || async {
            runs.load(Ordering::SeqCst) >= calls
        })
        .await,
        "the handler was never called"
    );
}

/// 1 + 7 misses on an origin six times slower than the flight's patience: one origin call,
/// and every follower gets its answer. Before, each follower gave up at the patience and
/// called the origin itself: 8 calls, each follower answered after patience + origin.
async fn a_slow_origin_is_called_once_for_concurrent_misses(backend: &Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = slow_app(page(backend), ORIGIN, &runs);
    let leader = concurrent(&app, "/slow", 1);
    until_called(&runs, 1).await;
    let followers = concurrent(&app, "/slow", 7);
    for reply in leader.into_iter().chain(followers) {
        let reply = reply.await.unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "run 1")
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Past the flight's deadline a follower is answered 504, and calls nothing beside the leader.
async fn past_the_deadline_a_follower_gets_504_not_a_call_of_its_own(backend: &Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let deadline = ORIGIN / 3;
    let app = slow_app(
        page(backend).single_flight_deadline(deadline),
        ORIGIN,
        &runs,
    );
    let leader = concurrent(&app, "/slower", 1);
    until_called(&runs, 1).await;
    let started = tokio::time::Instant::now();
    for reply in concurrent(&app, "/slower", 3) {
        let reply = reply.await.unwrap();
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
    }
    assert!(
        started.elapsed() < ORIGIN,
        "the followers waited for the origin"
    );
    assert_eq!(
        leader.into_iter().next().unwrap().await.unwrap().body,
        "run 1"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The leader's client hangs up while the origin works: one follower takes over (one more
/// origin call), the others wait on it. Before, every follower was released to the origin:
/// 1 + 6 calls.
async fn a_leader_whose_client_hangs_up_hands_the_flight_to_one_follower(backend: &Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = slow_app(page(backend), ORIGIN, &runs);
    let leader = concurrent(&app, "/left", 1);
    until_called(&runs, 1).await;
    let followers = concurrent(&app, "/left", 6);
    // the followers join the flight before the leader goes
    tokio::time::sleep(PATIENCE / 2).await;
    for task in &leader {
        task.abort();
    }
    for reply in followers {
        let reply = reply.await.unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "run 2")
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A handler that never answers must not keep its page answering 504 (the adversary's
/// review of issue 35): its followers get 504 at the deadline, and once the leader has led
/// past it, a new request leads a flight of its own. Before, every request for the page
/// waited out the deadline and got 504, for as long as the hung call lasted.
async fn a_hung_leader_is_taken_over_once_it_has_led_past_the_deadline(backend: &Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let deadline = Duration::from_secs(1);
    let lock = Duration::from_secs(1);
    let service = ServiceBuilder::new()
        .layer(
            page(backend)
                .single_flight(Some(PATIENCE))
                .single_flight_deadline(deadline)
                .stampede_lock(Some(lock))
                .build()
                .unwrap(),
        )
        .service_fn(move |_request: Request<ReqBody>| {
            let run = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if run == 1 {
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>(ok(&format!("run {run}")))
            }
        });
    let app: App = BoxCloneService::new(service);
    let _hung = concurrent(&app, "/hung", 1);
    until_called(&runs, 1).await;
    for reply in concurrent(&app, "/hung", 2) {
        let reply = reply.await.unwrap();
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(reply.body.contains("did not answer"), "{}", reply.body);
    }
    // past the leader's deadline (and, on Redis, its lock's life once no longer renewed)
    let mut answered = None;
    for _ in 0..50 {
        let reply = send(&app, req(get("/hung"))).await;
        if reply.status == StatusCode::OK {
            answered = Some(reply.body);
            break;
        }
        tokio::time::sleep(deadline / 10).await;
    }
    assert_eq!(
        answered.as_deref(),
        Some("run 2"),
        "the page stayed blocked"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A stale entry (`stale-if-error=60`) whose revalidation fails after the origin's time: the
/// leader and every follower waiting on it get the stale copy as soon as the leader's call
/// fails, with one origin call (issue 35, finding 3: a timed-out origin behind the caching
/// proxy). Before, the leader's guard ended unfinished, a follower led a new flight and
/// waited as long again, then the next: one call and one origin's time more per follower.
async fn followers_of_a_failed_revalidation_get_the_stale_copy_at_once(backend: &Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let service = ServiceBuilder::new()
        .layer(
            ResponseCacheLayer::http_cache(backend.store())
                .single_flight(Some(PATIENCE))
                .build()
                .unwrap(),
        )
        .service_fn(move |_request: Request<ReqBody>| {
            let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if run == 1 {
                    // stale at once, kept a minute for errors, with a validator to revalidate
                    let mut page = ok("run 1");
                    let headers = page.headers_mut();
                    headers.insert(
                        "cache-control",
                        "max-age=0, stale-if-error=60".parse().unwrap(),
                    );
                    headers.insert("etag", "\"1\"".parse().unwrap());
                    return Ok::<_, Infallible>(page);
                }
                tokio::time::sleep(ORIGIN).await;
                let mut down = ok("down");
                *down.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok(down)
            }
        });
    let app: App = BoxCloneService::new(service);
    assert_eq!(send(&app, req(get("/flaky"))).await.body, "run 1");
    crate::stored(backend, 1).await;
    let started = tokio::time::Instant::now();
    let leader = concurrent(&app, "/flaky", 1);
    until_called(&runs, 2).await;
    let followers = concurrent(&app, "/flaky", 3);
    for reply in leader.into_iter().chain(followers) {
        let reply = reply.await.unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "run 1"),
            "{}",
            reply.cache_status()
        );
        assert!(
            reply.cache_status().contains("fwd-status=503"),
            "{}",
            reply.cache_status()
        );
    }
    assert!(
        started.elapsed() < ORIGIN * 2,
        "the followers waited out the origin again: {:?}",
        started.elapsed()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one revalidation for all");
}

/// Within `stale-while-revalidate`, a refresh that fails (here a `503`, behind the caching
/// proxy a `504` from its read timeout) leaves the stale copy served at once to the requests
/// after it, each refreshing in turn. Before, the failed refresh marked the key unstorable
/// (hit-for-miss), and for two minutes every request skipped the flight and waited on the
/// failing origin for its error.
async fn a_failed_refresh_leaves_the_stale_copy_served_at_once(backend: &Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let service = ServiceBuilder::new()
        .layer(
            ResponseCacheLayer::http_cache(backend.store())
                .build()
                .unwrap(),
        )
        .service_fn(move |_request: Request<ReqBody>| {
            let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if run > 1 {
                    let mut down = ok("down");
                    *down.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    return Ok::<_, Infallible>(down);
                }
                let mut page = ok("run 1");
                let headers = page.headers_mut();
                headers.insert(
                    "cache-control",
                    "max-age=0, stale-while-revalidate=60".parse().unwrap(),
                );
                headers.insert("etag", "\"1\"".parse().unwrap());
                Ok(page)
            }
        });
    let app: App = BoxCloneService::new(service);
    assert_eq!(send(&app, req(get("/grace"))).await.body, "run 1");
    crate::stored(backend, 1).await;
    // until three refreshes have failed, each request is served the stale copy
    for _ in 0..500 {
        if runs.load(Ordering::SeqCst) >= 4 {
            return;
        }
        let reply = send(&app, req(get("/grace"))).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "run 1"),
            "after {} refreshes: {}",
            runs.load(Ordering::SeqCst) - 1,
            reply.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the stale copy was never refreshed three times");
}

/// A handler that answers at once and then trickles its body: `PIECES` pieces, one every
/// `GAP`, several times the flight deadline in all; it counts its calls in `runs`.
fn trickling_app(builder: ResponseCacheBuilder, runs: &Arc<AtomicUsize>) -> App {
    let runs = Arc::clone(runs);
    let service = ServiceBuilder::new()
        .layer(
            builder
                .single_flight(Some(PATIENCE))
                .single_flight_deadline(GAP * 3)
                .build()
                .unwrap(),
        )
        .service_fn(move |_request: Request<ReqBody>| {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            let pieces = (0..PIECES)
                .map(|n| bytes::Bytes::from(format!("run {run} piece {n};")))
                .collect();
            async move {
                Ok::<_, Infallible>(http::Response::new(crate::TestBody::trickling(pieces, GAP)))
            }
        });
    BoxCloneService::new(service)
}

/// The time between two pieces of [`trickling_app`]'s body.
const GAP: Duration = Duration::from_millis(250);
/// How many pieces: 16 x 250 ms, over five times the 750 ms flight deadline.
const PIECES: usize = 16;

fn trickled(run: usize) -> String {
    (0..PIECES)
        .map(|n| format!("run {run} piece {n};"))
        .collect()
}

/// A leader whose origin answers at once and then sends a big body slowly (the adversary's
/// review of issue 35): its followers wait to the end, never silent past the deadline, and
/// get its entry; one origin call. Before, each follower got 504 at the deadline counted from
/// its arrival, though the leader was streaming all along.
async fn followers_wait_on_a_leader_whose_body_is_slow_but_flowing(backend: &Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = trickling_app(page(backend), &runs);
    let leader = concurrent(&app, "/big", 1);
    until_called(&runs, 1).await;
    let followers = concurrent(&app, "/big", 3);
    for reply in leader.into_iter().chain(followers) {
        let reply = reply.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body, trickled(1));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// `HEAD` and range requests that come while a GET leads the page's flight wait for its
/// entry and are answered from it (the adversary's review of issue 35): one origin call.
/// Before, neither could join a flight, and each went to the slow origin beside the leader
/// (`Range: bytes=0-` on every request stampeded it).
async fn head_and_range_requests_wait_on_the_get_that_leads(backend: &Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = slow_app(page(backend), ORIGIN, &runs);
    let leader = concurrent(&app, "/media", 1);
    until_called(&runs, 1).await;
    let heads: Vec<_> = (0..3)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let request = http::Request::head("/media")
                    .header("host", "shop.example")
                    .body(ReqBody::new())
                    .unwrap();
                send(&app, request).await
            })
        })
        .collect();
    let ranges: Vec<_> = (0..3)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                send(&app, req(get("/media").header("range", "bytes=0-3"))).await
            })
        })
        .collect();
    assert_eq!(
        leader.into_iter().next().unwrap().await.unwrap().body,
        "run 1"
    );
    for head in heads {
        let head = head.await.unwrap();
        assert_eq!((head.status, head.body.as_str()), (StatusCode::OK, ""));
    }
    for range in ranges {
        let range = range.await.unwrap();
        assert_eq!(
            (range.status, range.body.as_str()),
            (StatusCode::PARTIAL_CONTENT, "run ")
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A streamed body (no length to judge it by) that outgrows the cache's bound mid-way: every
/// follower goes to the origin at once, as for a body whose declared length is too large, and
/// the next request skips the flight (the adversary's review of issue 35). Before, the leader's
/// flight passed to one follower after another, each waiting for the body to outgrow the
/// bound again: when the leader's body ended, two of the four requests had reached the origin.
async fn a_body_that_outgrows_the_bound_releases_every_follower_at_once(backend: &Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    // each piece is about 16 bytes: the bound is passed at the tenth, 2.5 s in
    let app = trickling_app(page(backend).max_body(150), &runs);
    let leader = concurrent(&app, "/huge", 1);
    until_called(&runs, 1).await;
    let followers = concurrent(&app, "/huge", 3);
    let leader = leader.into_iter().next().unwrap().await.unwrap();
    assert_eq!(leader.body, trickled(1));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "every follower reached the origin by the end of the leader's body"
    );
    for reply in followers {
        assert_eq!(reply.await.unwrap().status, StatusCode::OK);
    }
    let next = send(&app, req(get("/huge"))).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(runs.load(Ordering::SeqCst), 5);
}

/// The same across two instances on one Redis, with a lock that lives a fraction of the
/// body's time: the holder renews it while its body flows, and the other instance waits for
/// its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn across_instances_a_slow_body_is_waited_on_while_it_flows() {
    let redis = TestRedis::start();
    let runs = Arc::new(AtomicUsize::new(0));
    let builder = || async {
        ResponseCacheLayer::cache_page(crate::redis_store(&redis).await, Duration::from_secs(60))
            .stampede_lock(Some(GAP * 2))
    };
    let one = trickling_app(builder().await, &runs);
    let two = trickling_app(builder().await, &runs);
    let leader = concurrent(&one, "/big-shared", 1);
    until_called(&runs, 1).await;
    let others: Vec<_> = concurrent(&two, "/big-shared", 3)
        .into_iter()
        .chain(concurrent(&one, "/big-shared", 2))
        .collect();
    for reply in leader.into_iter().chain(others) {
        let reply = reply.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body, trickled(1));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

crate::on_each_backend!(
    on_redis_and_memory:
    a_slow_origin_is_called_once_for_concurrent_misses,
    past_the_deadline_a_follower_gets_504_not_a_call_of_its_own,
    a_leader_whose_client_hangs_up_hands_the_flight_to_one_follower,
    a_hung_leader_is_taken_over_once_it_has_led_past_the_deadline,
    followers_of_a_failed_revalidation_get_the_stale_copy_at_once,
    a_failed_refresh_leaves_the_stale_copy_served_at_once,
    followers_wait_on_a_leader_whose_body_is_slow_but_flowing,
    a_body_that_outgrows_the_bound_releases_every_follower_at_once,
    head_and_range_requests_wait_on_the_get_that_leads,
);

/// Two instances on one Redis, a lock that lives half the origin's time: the holder
/// renews it while it works, and the other instance waits for its entry rather than taking
/// the expired lock and calling the origin again. Before: the lock expired (and the wait
/// ended) long before the origin answered, and every request in the second instance called it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn across_instances_a_slow_origin_is_called_once_while_the_lock_holder_works() {
    let redis = TestRedis::start();
    let runs = Arc::new(AtomicUsize::new(0));
    let builder = || async {
        ResponseCacheLayer::cache_page(crate::redis_store(&redis).await, Duration::from_secs(60))
            .stampede_lock(Some(ORIGIN / 2))
    };
    let one = slow_app(builder().await, ORIGIN, &runs);
    let two = slow_app(builder().await, ORIGIN, &runs);
    let leader = concurrent(&one, "/shared", 1);
    until_called(&runs, 1).await;
    let others: Vec<_> = concurrent(&two, "/shared", 3)
        .into_iter()
        .chain(concurrent(&one, "/shared", 2))
        .collect();
    for reply in leader.into_iter().chain(others) {
        let reply = reply.await.unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "run 1")
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The lock holder's instance goes away (its request dropped, the lock released): the other
/// instance takes the lock over and calls the origin once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn across_instances_a_holder_that_goes_away_hands_over_to_one_waiter() {
    let redis = TestRedis::start();
    let runs = Arc::new(AtomicUsize::new(0));
    let builder = || async {
        ResponseCacheLayer::cache_page(crate::redis_store(&redis).await, Duration::from_secs(60))
    };
    let one = slow_app(builder().await, ORIGIN, &runs);
    let two = slow_app(builder().await, ORIGIN, &runs);
    let leader = concurrent(&one, "/handed", 1);
    until_called(&runs, 1).await;
    let others = concurrent(&two, "/handed", 3);
    tokio::time::sleep(PATIENCE / 2).await;
    for task in &leader {
        task.abort();
    }
    for reply in others {
        let reply = reply.await.unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "run 2")
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
