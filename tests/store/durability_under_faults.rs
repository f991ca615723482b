//! `Durability` when things go wrong (the adversary's review of issue 28): a replica that lags
//! or drops out, a master that stalls, dies or is failed over, a request cancelled during the
//! wait, and, on a cluster, a master that stalls or dies while the others take the writes.
//! Each test pins a case that broke: a fail-open rule that stopped limiting, a flag left
//! behind by a cancelled request or a stalled master, one stalled master failing every
//! durable write on the others.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use tower::{ServiceBuilder, ServiceExt};
use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
use tower_redis_http::store::{Durability, RatePolicy, RedisStore, Store};

use crate::durability::{COMMAND_TIMEOUT, cluster_store, replicated_pair, store_at};
use crate::support::{TestCluster, eventually, unused_port};

/// `layer` around a handler that counts its calls in `calls` (the SMS sent, the login let in).
fn counting_app(
    layer: RateLimitLayer,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Empty<Bytes>>,
    Response = Response<impl http_body::Body>,
    Error = Infallible,
    Future: Send,
> + Clone {
    ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |_req: Request<Empty<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done")))) }
        })
}

/// A logical key whose full key lives on master `nodes[master]`.
fn logical_on(cluster: &TestCluster, store: &RedisStore, master: usize, stem: &str) -> String {
    (0..)
        .map(|n| format!("{stem}{n}"))
        .find(|k| cluster.master_of(&store.key_scheme().make(k).unwrap()) == master)
        .unwrap()
}

/// A request cancelled while its send flag waits for a replica (client hang-up, an outer
/// `TimeoutLayer` shorter than the command timeout) never reached the inner service: its flag
/// is given back, and the user's next request is not refused for it. Before, the flag stayed
/// for the whole interval and the retry got 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_gone_during_the_wait_has_its_flag_given_back() {
    let (master, _replica, relay) = replicated_pair().await;
    let store = store_at(&master).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::builder(store.clone())
        .rule(Rule::cooldown(
            "sms",
            Duration::from_secs(60),
            Key::global(),
        ))
        .build()
        .unwrap();
    let app = counting_app(layer, Arc::clone(&calls));
    // warm the replica count (and the lane) with an unrelated store call
    let sms = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert!(store.rate_limit("warm", &sms).await.unwrap().allowed);

    relay.silence_open_connections();
    // the client gives up after 300 ms, while the flag's WAIT is blocked
    let cancelled = tokio::time::timeout(
        Duration::from_millis(300),
        app.clone().oneshot(Request::new(Empty::new())),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the request should still be waiting for the replica"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the inner service was never called"
    );
    // the wait runs out within the command timeout, and the step's task then gives the hit
    // back; the flag is gone within that and a margin for a loaded machine
    let given_back = eventually(COMMAND_TIMEOUT * 4, || async {
        master.command(&["KEYS", "*sms*"]).is_empty()
    })
    .await;
    let keys = master.command(&["KEYS", "*sms*"]);
    let ttl = if keys.is_empty() {
        String::from("-2")
    } else {
        master.command(&["PTTL", keys.lines().next().unwrap()])
    };
    eprintln!("after cancellation, flag keys on master: {keys:?}, pttl {ttl}");
    // the user retries: the next request is refused for the rest of the minute
    let started = Instant::now();
    let next = tokio::time::timeout(
        COMMAND_TIMEOUT * 3,
        app.clone().oneshot(Request::new(Empty::new())),
    )
    .await
    .expect("bounded")
    .unwrap();
    eprintln!(
        "retry after cancellation answered {} in {:?}; inner calls {}",
        next.status(),
        started.elapsed(),
        calls.load(Ordering::SeqCst)
    );
    assert!(given_back, "the flag stayed: {keys:?}, pttl {ttl}");
    assert_ne!(
        next.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a hit whose request was cancelled before the inner service ran blocks the user (flag pttl {ttl})"
    );
}

/// The master stalls (SIGSTOP) while an allowed flag waits for the replica: the caller hears
/// back within one command timeout (before: two, and a misleading `NotReplicated`), and the
/// flag it was told failed is given back once the master answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_stalled_during_the_wait_costs_one_timeout_and_keeps_no_flag() {
    let (master, _replica, relay) = replicated_pair().await;
    let store = store_at(&master).await;
    let sms = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert!(store.rate_limit("warm", &sms).await.unwrap().allowed);
    relay.silence_open_connections();
    let started = Instant::now();
    let hit = tokio::spawn({
        let store = store.clone();
        async move { store.rate_limit("sms:2", &sms).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    master.pause();
    let result = tokio::time::timeout(COMMAND_TIMEOUT * 6, hit).await;
    let elapsed = started.elapsed();
    master.resume();
    let result = result.expect("bounded at all").unwrap();
    let flag = store.key_scheme().make("sms:2").unwrap();
    eprintln!(
        "stalled-mid-wait answered {result:?} after {elapsed:?}; after resume the flag pttl is {}",
        master.command(&["PTTL", &flag])
    );
    assert!(result.is_err());
    // given back in the background: the attempt under way when the master resumed may wait
    // out its own timeout first, and the next follows half a second later
    assert!(
        eventually(COMMAND_TIMEOUT * 3, || async {
            master.command(&["EXISTS", &flag]) == "0"
        })
        .await,
        "the caller was told the hit failed (503), yet its flag stays and blocks the number"
    );
    assert!(
        elapsed < COMMAND_TIMEOUT + COMMAND_TIMEOUT / 2,
        "a master stalled mid-WAIT cost {elapsed:?} (command timeout {COMMAND_TIMEOUT:?})"
    );
}

/// `Durability::ReplicaIfAny` counts on the master alone while its replica is away (its
/// documented gap); `Durability::Replica` closes it: the replica's link drops, the flag is
/// refused rather than set on the master alone, the master dies and the replica is promoted:
/// one code in the interval, never two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_durability_a_replica_away_then_promoted_lets_no_second_code_out() {
    let (master, replica, relay) = replicated_pair().await;
    let store = store_at(&master).await;
    let sms = RatePolicy::cooldown(Duration::from_secs(60))
        .unwrap()
        .with_durability(Durability::Replica);
    assert!(store.rate_limit("warm", &sms).await.unwrap().allowed);
    // the replication link drops and the replica cannot reconnect for a moment
    relay.retarget(unused_port());
    master.command(&["CLIENT", "KILL", "TYPE", "replica"]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            master
                .command(&["INFO", "replication"])
                .contains("connected_slaves:0")
        })
        .await
    );
    let first = store.rate_limit("sms:2", &sms).await;
    eprintln!("hit while the replica is disconnected: {first:?}");
    let mut master = master;
    master.kill();
    assert_eq!(replica.command(&["REPLICAOF", "NO", "ONE"]), "OK");
    assert!(
        !first.as_ref().is_ok_and(|d| d.allowed),
        "a flag set on the master alone under Durability::Replica: {first:?}"
    );
    // the promoted master has no replica of its own: asked without the wait, the number is
    // free, and this is the interval's one code
    let promoted = store_at(&replica).await;
    let second = promoted
        .rate_limit("sms:2", &sms.with_durability(Durability::Master))
        .await
        .unwrap();
    assert!(second.allowed);
}

/// Strict `Durability::Replica`, with the replica count cached at 1, and the replica then
/// partitioned: every one of eight concurrent hits for one key is refused or fails, none is
/// allowed while the others' flags are being given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hits_on_a_partitioned_replica_grant_nothing() {
    let (master, _replica, relay) = replicated_pair().await;
    let store = store_at(&master).await;
    let sms = RatePolicy::cooldown(Duration::from_secs(60))
        .unwrap()
        .with_durability(Durability::Replica);
    assert!(store.rate_limit("warm", &sms).await.unwrap().allowed);
    relay.silence_open_connections();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::timeout(COMMAND_TIMEOUT * 4, store.rate_limit("sms:9", &sms)).await
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Ok(d)) if d.allowed => allowed += 1,
            Ok(other) => eprintln!("race result {other:?}"),
            Err(_) => panic!("a durable hit hung past 4 timeouts"),
        }
    }
    assert_eq!(allowed, 0, "an unreplicated flag was reported allowed");
}

/// A cluster: cooldowns for keys on master 0 while an unrelated master (2) is stalled
/// (SIGSTOP) for 8 s, with the cluster's node timeout at 10 s, so no failover happens
/// meanwhile: every flag is set and waited for on master 0 alone. Before, the wait went to
/// every master, and each durable write failed for as long as the stall lasted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_stalled_master_fails_no_durable_flag_on_the_others() {
    let cluster = TestCluster::start();
    for node in &cluster.nodes {
        assert_eq!(
            node.command(&["CONFIG", "SET", "cluster-node-timeout", "10000"]),
            "OK"
        );
    }
    let store = cluster_store(&cluster).await;
    let sms = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let window = RatePolicy::fixed_window(100, Duration::from_secs(60)).unwrap();
    let keys: Vec<String> = (0..12)
        .map(|i| logical_on(&cluster, &store, 0, &format!("sms{i}:")))
        .collect();
    // warm: replica count cached, lane open
    let warm = logical_on(&cluster, &store, 0, "warm:");
    assert!(store.rate_limit(&warm, &sms).await.unwrap().allowed);
    cluster.nodes[2].pause();
    let begun = Instant::now();
    let mut timeline = Vec::new();
    let mut failed = 0;
    for key in &keys {
        if begun.elapsed() > Duration::from_secs(8) {
            break;
        }
        let started = Instant::now();
        let r = tokio::time::timeout(COMMAND_TIMEOUT * 4, store.rate_limit(key, &sms)).await;
        let window_started = Instant::now();
        let window_key = format!("{key}window");
        let w =
            tokio::time::timeout(COMMAND_TIMEOUT * 4, store.rate_limit(&window_key, &window)).await;
        if !matches!(r, Ok(Ok(ref d)) if d.allowed) {
            failed += 1;
        }
        timeline.push(format!(
            "t={:?} flag took {:?} -> {} | Master-durability window hit took {:?} -> {}",
            started.duration_since(begun),
            started.elapsed() - window_started.elapsed(),
            match r {
                Ok(Ok(d)) => format!("allowed={}", d.allowed),
                Ok(Err(e)) => format!("{:?}", e.kind()),
                Err(_) => "hung".into(),
            },
            window_started.elapsed(),
            match w {
                Ok(Ok(d)) => format!("allowed={}", d.allowed),
                Ok(Err(e)) => format!("{:?}", e.kind()),
                Err(_) => "hung".into(),
            },
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.nodes[2].resume();
    eprintln!("master 2 stalled:\n{}", timeline.join("\n"));
    assert_eq!(
        failed, 0,
        "durable flags for a healthy master failed because another master stalled"
    );
}

/// Revocations on a cluster with an unrelated master stalled: the token's own master takes
/// the revocation and its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_stalled_master_fails_no_revocation_on_the_others() {
    use serde::{Deserialize, Serialize};
    use tower_redis_http::auth::Tokens;
    #[derive(Serialize, Deserialize)]
    struct User {
        id: u64,
    }
    let cluster = TestCluster::start();
    let store = cluster_store(&cluster).await;
    let tokens = Tokens::new(store.clone(), |user: &User| user.id.to_string());
    let mut issued = Vec::new();
    for id in 0..20 {
        issued.push(tokens.issue(&User { id }).await.unwrap());
    }
    // a revocation to warm the lane and the replica count
    assert!(tokens.revoke(&issued[0]).await.unwrap());
    // find a token whose key is not on master 2 by asking each master directly
    let on_master_2 = |t: &str| {
        !cluster.nodes[2]
            .command(&["KEYS", &format!("*{t}*")])
            .is_empty()
    };
    let victim = issued[1..]
        .iter()
        .find(|t| !on_master_2(t))
        .expect("a token elsewhere")
        .clone();
    cluster.nodes[2].pause();
    let started = Instant::now();
    let r = tokio::time::timeout(COMMAND_TIMEOUT * 4, tokens.revoke(&victim)).await;
    let took = started.elapsed();
    cluster.nodes[2].resume();
    eprintln!("revoke of a token off master 2 with master 2 stalled: {r:?} in {took:?}");
    assert!(matches!(r, Ok(Ok(true))), "revocation failed: {r:?}");
}

/// The master's connection drops (killed) while a flag waits: an error well within the
/// command timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_during_the_wait_fails_within_the_timeout() {
    let (master, _replica, relay) = replicated_pair().await;
    let store = store_at(&master).await;
    let sms = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert!(store.rate_limit("warm", &sms).await.unwrap().allowed);
    relay.silence_open_connections();
    let started = Instant::now();
    let hit = tokio::spawn({
        let store = store.clone();
        async move { store.rate_limit("sms:2", &sms).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut master = master;
    master.kill();
    let result = tokio::time::timeout(COMMAND_TIMEOUT * 4, hit)
        .await
        .expect("bounded")
        .unwrap();
    let elapsed = started.elapsed();
    eprintln!("killed-mid-wait answered {result:?} after {elapsed:?}");
    assert!(result.is_err());
    assert!(
        elapsed < COMMAND_TIMEOUT + COMMAND_TIMEOUT / 2,
        "took {elapsed:?}"
    );
}

/// A cluster: an unrelated master (2) is killed; until the cluster fails it over, durable
/// flags for keys on healthy master 0 are set as before (one hit every 250 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_dead_master_fails_no_durable_flag_on_the_others() {
    let mut cluster = TestCluster::start();
    let store = cluster_store(&cluster).await;
    let sms = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let warm = logical_on(&cluster, &store, 0, "warm:");
    assert!(store.rate_limit(&warm, &sms).await.unwrap().allowed);
    let keys: Vec<String> = (0..16)
        .map(|i| logical_on(&cluster, &store, 0, &format!("down{i}:")))
        .collect();
    cluster.nodes[2].kill();
    let begun = Instant::now();
    let mut timeline = Vec::new();
    let mut failed = 0;
    for key in &keys {
        let started = Instant::now();
        let r = tokio::time::timeout(COMMAND_TIMEOUT * 4, store.rate_limit(key, &sms)).await;
        let ok = matches!(r, Ok(Ok(ref d)) if d.allowed);
        if !ok {
            failed += 1;
        }
        timeline.push(format!(
            "t={:?} took {:?} -> {}",
            started.duration_since(begun),
            started.elapsed(),
            match r {
                Ok(Ok(d)) => format!("allowed={}", d.allowed),
                Ok(Err(e)) => format!("{:?}: {}", e.kind(), e),
                Err(_) => "hung".into(),
            }
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "flags on master 0 while master 2 is down:\n{}",
        timeline.join("\n")
    );
    assert_eq!(
        failed, 0,
        "durable flags for a healthy master failed while another master was down"
    );
}

/// The README's advice: "A login limit that must not reset can ask for
/// `Durability::ReplicaIfAny`". A window fails open by default. With the replication link
/// partitioned (the master healthy and still counting its replica), a hit no replica took
/// stays counted on the master, so the rule limits as it would without the wait. Before,
/// each hit was given back and the open policy let the request through uncounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_window_that_fails_open_still_limits_when_the_replica_lags() {
    let (master, _replica, relay) = replicated_pair().await;
    let store = store_at(&master).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::builder(store.clone())
        .rule(
            Rule::fixed_window("login", "3/m", Key::global()).durability(Durability::ReplicaIfAny),
        )
        .build()
        .unwrap();
    let app = counting_app(layer, Arc::clone(&calls));
    // one hit while healthy: counted and replicated
    let first = app
        .clone()
        .oneshot(Request::new(Empty::new()))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    relay.silence_open_connections();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        let response = tokio::time::timeout(
            COMMAND_TIMEOUT * 4,
            app.clone().oneshot(Request::new(Empty::new())),
        )
        .await
        .expect("bounded")
        .unwrap();
        statuses.push((response.status().as_u16(), started.elapsed()));
    }
    // and 30 at once
    let sequential = calls.load(Ordering::SeqCst);
    let burst: Vec<_> = (0..30)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                tokio::time::timeout(COMMAND_TIMEOUT * 4, app.oneshot(Request::new(Empty::new())))
                    .await
            })
        })
        .collect();
    let burst_started = Instant::now();
    for task in burst {
        task.await.unwrap().expect("bounded").unwrap();
    }
    eprintln!(
        "a burst of 30 login attempts passed {} in {:?}",
        calls.load(Ordering::SeqCst) - sequential,
        burst_started.elapsed()
    );
    let counter = master.command(&["KEYS", "*login*"]);
    eprintln!(
        "login attempts during a replica partition: {statuses:?}; inner calls {}; counter keys {counter:?} = {}",
        calls.load(Ordering::SeqCst),
        counter
            .lines()
            .next()
            .map(|k| master.command(&["GET", k]))
            .unwrap_or_default()
    );
    assert!(
        calls.load(Ordering::SeqCst) <= 3,
        "a 3/m login limit let {} attempts through while the master was healthy",
        calls.load(Ordering::SeqCst)
    );
}

/// The same with a cooldown a user set to fail open: one request per interval, not one per
/// request (before, each flag was given back and every request went through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_cooldown_that_fails_open_still_limits_when_the_replica_lags() {
    let (master, _replica, relay) = replicated_pair().await;
    let store = store_at(&master).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::builder(store.clone())
        .rule(
            Rule::cooldown("resend", Duration::from_secs(60), Key::global())
                .on_store_error(tower_redis_http::FailurePolicy::Open),
        )
        .build()
        .unwrap();
    let app = counting_app(layer, Arc::clone(&calls));
    let warm = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert!(store.rate_limit("warm", &warm).await.unwrap().allowed);
    relay.silence_open_connections();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = tokio::time::timeout(
            COMMAND_TIMEOUT * 4,
            app.clone().oneshot(Request::new(Empty::new())),
        )
        .await
        .expect("bounded")
        .unwrap();
        statuses.push(response.status().as_u16());
    }
    eprintln!(
        "open cooldown during a replica partition: {statuses:?}; sends {}",
        calls.load(Ordering::SeqCst)
    );
    assert!(
        calls.load(Ordering::SeqCst) <= 1,
        "{} sends inside one cooldown",
        calls.load(Ordering::SeqCst)
    );
}
