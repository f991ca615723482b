//! What only a real Redis can show: wire compatibility with django-redis, no PING per call,
//! recovery from restarts, bounded calls against a stalled server, connection options.

use std::time::Duration;

use bytes::Bytes;
use tower_redis_http::store::{Expiry, RatePolicy, RedisStore, Store, StoreErrorKind, value};

use crate::support::{TestRedis, TestRelay, command_calls, eventually};

/// How long a test waits for a call that must not hang before declaring it hung: far above
/// every configured timeout, so it only trips on a real hang.
const HANG_GUARD: Duration = Duration::from_secs(10);

async fn store_for(redis: &TestRedis) -> RedisStore {
    RedisStore::builder(redis.url()).build().await.unwrap()
}

#[tokio::test]
async fn reads_what_django_redis_wrote() {
    let redis = TestRedis::start();
    // What `cache.set(...)` leaves in Redis with django-redis's JSONSerializer and defaults.
    redis.command(&["SET", ":1:visits", "42"]);
    redis.command(&[
        "SET",
        ":1:user",
        r#"{"id": 1, "username": "alice", "is_active": true}"#,
    ]);
    redis.command(&["SET", "shop:2:greeting", r#""hello""#]);
    let store = store_for(&redis).await;

    let visits: i64 = value::decode(&store.get("visits").await.unwrap().unwrap()).unwrap();
    assert_eq!(visits, 42);
    assert_eq!(store.increment("visits", 1).await.unwrap(), Some(43));
    let user: serde_json::Value =
        value::decode(&store.get("user").await.unwrap().unwrap()).unwrap();
    assert_eq!(user["username"], "alice");
    let shop = RedisStore::builder(redis.url())
        .key_prefix("shop")
        .version(2)
        .build()
        .await
        .unwrap();
    let greeting: String = value::decode(&shop.get("greeting").await.unwrap().unwrap()).unwrap();
    assert_eq!(greeting, "hello");
}

#[tokio::test]
async fn writes_what_django_redis_reads() {
    let redis = TestRedis::start();
    let store = store_for(&redis).await;
    store
        .set(
            "code",
            value::encode(&123_456).unwrap(),
            Duration::from_secs(300).into(),
        )
        .await
        .unwrap();
    store
        .set(
            "profile",
            value::encode(&serde_json::json!({"id": 7})).unwrap(),
            Expiry::Never,
        )
        .await
        .unwrap();
    assert_eq!(redis.command(&["GET", ":1:code"]), "123456");
    assert_eq!(redis.command(&["GET", ":1:profile"]), r#"{"id":7}"#);
    let ttl_ms: i64 = redis.command(&["PTTL", ":1:code"]).parse().unwrap();
    assert!(ttl_ms > 290_000 && ttl_ms <= 300_000, "{ttl_ms}");
    assert_eq!(redis.command(&["TTL", ":1:profile"]), "-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_is_one_command_and_checkouts_send_no_ping() {
    let redis = TestRedis::start();
    let store = store_for(&redis).await;
    store
        .set("k", Bytes::from_static(b"v"), Expiry::Never)
        .await
        .unwrap();
    redis.command(&["CONFIG", "RESETSTAT"]);

    let calls = 500;
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get("k").await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().as_deref(), Some(&b"v"[..]));
    }
    assert_eq!(command_calls(&redis, "get"), calls);
    assert_eq!(command_calls(&redis, "ping"), 0, "a checkout sent PING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_by_itself_after_a_redis_restart() {
    let mut redis = TestRedis::start();
    let store = store_for(&redis).await;
    store
        .set("before", Bytes::from_static(b"1"), Expiry::Never)
        .await
        .unwrap();

    redis.restart();

    // The pooled connection died with the old server. A read retries once on a new
    // connection, so the first request after the restart already succeeds.
    assert_eq!(
        store.get("before").await.unwrap(),
        None,
        "the new server starts empty"
    );
    store
        .set("after", Bytes::from_static(b"2"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(redis.command(&["GET", ":1:after"]), "2");
    let policy = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert!(store.rate_limit("sms", &policy).await.unwrap().allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retried_calls_recover_after_at_most_one_failure_per_connection() {
    let mut redis = TestRedis::start();
    let store = store_for(&redis).await;
    store
        .set("warm", Bytes::from_static(b"1"), Expiry::Never)
        .await
        .unwrap();
    redis.restart();

    let policy = RatePolicy::fixed_window(100, Duration::from_secs(60)).unwrap();
    let mut failures = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match store.rate_limit("rl", &policy).await {
            Ok(decision) => {
                assert!(decision.allowed);
                break;
            }
            Err(err) => {
                assert_eq!(err.kind(), StoreErrorKind::Connection, "{err}");
                failures += 1;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not replace its broken connection"
        );
    }
    assert!(
        failures <= 1,
        "{failures} failures: the broken connection was reused"
    );
}

/// A store with a 200 ms command timeout (and whatever `builder` adds) that has written `k`,
/// on a server that is then stopped (SIGSTOP).
async fn stalled(
    builder: impl FnOnce(String) -> tower_redis_http::store::RedisStoreBuilder,
) -> (TestRedis, RedisStore) {
    let redis = TestRedis::start();
    let store = builder(redis.url())
        .command_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    store
        .set("k", Bytes::from_static(b"v"), Expiry::Never)
        .await
        .unwrap();
    redis.pause();
    (redis, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_gives_a_timeout_error_not_a_hang() {
    let (redis, store) = stalled(RedisStore::builder).await;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { tokio::time::timeout(HANG_GUARD, store.get("k")).await })
        })
        .collect();
    for call in calls {
        let result = call
            .await
            .unwrap()
            .expect("the call hung past the command timeout");
        let err = result.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Timeout, "{err}");
        assert!(err.is_timeout());
    }
    let policy = RatePolicy::cooldown(Duration::from_secs(1)).unwrap();
    let result = tokio::time::timeout(HANG_GUARD, store.rate_limit("r", &policy))
        .await
        .expect("rate_limit hung");
    assert_eq!(result.unwrap_err().kind(), StoreErrorKind::Timeout);

    redis.resume();
    let back = eventually(Duration::from_secs(5), || async {
        store.get("k").await.ok().flatten().is_some()
    })
    .await;
    assert!(back, "the store did not come back after the server resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_during_a_stall_end_within_the_command_timeout_not_the_connect_timeout() {
    let (redis, store) =
        stalled(|url| RedisStore::builder(url).connect_timeout(Duration::from_secs(20))).await;
    // waves of calls: the first find the connection silent, later ones must open a new one
    // from bb8, which waits on the stalled server; none may wait for the connect timeout
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let result = tokio::time::timeout(HANG_GUARD, store.get("k")).await;
                    (started.elapsed(), result)
                })
            })
            .collect();
        for call in calls {
            let (took, result) = call.await.unwrap();
            let err = result.expect("hung").unwrap_err();
            assert!(err.is_timeout(), "{err}");
            slowest = slowest.max(took);
        }
    }
    redis.resume();
    // the connect timeout is 20 s; the old bound was connect plus command timeout
    assert!(
        slowest < Duration::from_secs(5),
        "a call waited {slowest:?}, past its 200 ms command timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_client_kill_every_call_is_retried_on_a_new_connection() {
    let redis = TestRedis::start();
    let store = RedisStore::builder(redis.url())
        .max_connections(8)
        .build()
        .await
        .unwrap();
    for round in 0..5 {
        // concurrent calls open several pooled connections, all dropped by the kill
        let warm: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .set(&format!("k{i}"), Bytes::from_static(b"v"), Expiry::Never)
                        .await
                })
            })
            .collect();
        for call in warm {
            call.await.unwrap().unwrap();
        }
        redis.command(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
        let calls: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.get(&format!("k{i}")).await })
            })
            .collect();
        let mut timed_out = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(Some(_)) => {}
                // A request handed to redis-rs's multiplexed connection just as the kill's EOF
                // reaches it is neither answered nor failed, and only its response timeout ends
                // it (seen about once in 300 calls under the full suite's load). It is the first
                // attempt, on the lease the kill dropped; no retry is involved.
                Err(err) if err.is_timeout() => timed_out += 1,
                // a retry that landed on another connection the kill dropped: the bug this pins
                other => panic!("round {round}: a call failed after the kill: {other:?}"),
            }
        }
        assert!(timed_out <= 1, "round {round}: {timed_out} calls timed out");
    }
}

/// A connection goes silent (half-open, as when a `CLIENT KILL`'s close never reaches the
/// client) while the server answers: the calls on it time out, the store moves to a new
/// connection, and the later timeouts of calls still waiting on the silent one fail those
/// calls only. They say nothing about the server, which answers on the new connection, so they
/// must not make the calls sent there fail at once as during a stall (issue 28, finding 15:
/// under load, the suite saw 50 of 200 requests answered 503 after one such timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_on_a_connection_already_replaced_fail_only_the_calls_on_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let redis = TestRedis::start();
    let relay = TestRelay::start(redis.port());
    let timeout = Duration::from_millis(300);
    let store = RedisStore::builder(relay.url())
        .command_timeout(timeout)
        .build()
        .await
        .unwrap();
    store
        .set("k", Bytes::from_static(b"v"), Expiry::Never)
        .await
        .unwrap();
    relay.silence_open_connections();

    // Events are numbered in order (a send, an answer) rather than timed. A read starts every
    // millisecond (the load's shape, not a synchronisation) until every read sent on the silent
    // connection has timed out: those were all sent within one timeout of the silence.
    let events = Arc::new(AtomicU64::new(0));
    let first_answer = Arc::new(AtomicU64::new(u64::MAX));
    let mut calls = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let load_for = 3 * timeout;
    let started = tokio::time::Instant::now();
    while started.elapsed() < load_for {
        tick.tick().await;
        let (store, events, first_answer) = (
            store.clone(),
            Arc::clone(&events),
            Arc::clone(&first_answer),
        );
        calls.push(tokio::spawn(async move {
            let sent = events.fetch_add(1, Ordering::SeqCst);
            let result = tokio::time::timeout(HANG_GUARD, store.get("k"))
                .await
                .expect("a call hung past the command timeout");
            let done = events.fetch_add(1, Ordering::SeqCst);
            if result.is_ok() {
                first_answer.fetch_min(done, Ordering::SeqCst);
            }
            (sent, result)
        }));
    }
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    let recovered = first_answer.load(Ordering::SeqCst);
    assert_ne!(recovered, u64::MAX, "the store never answered again");
    let failed_after: Vec<_> = results
        .iter()
        .filter(|(sent, result)| *sent > recovered && result.is_err())
        .map(|(_, result)| result.as_ref().unwrap_err().to_string())
        .collect();
    assert!(
        failed_after.is_empty(),
        "{} of {} calls sent after the store answered on a new connection failed: {:?}",
        failed_after.len(),
        results.len(),
        &failed_after[..failed_after.len().min(3)]
    );
    // the silent connection did carry calls, which timed out: the case was met
    assert!(
        results
            .iter()
            .any(|(_, result)| result.as_ref().is_err_and(|err| err.is_timeout())),
        "no call met the silent connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stalled_before_the_first_connection_also_times_out() {
    let redis = TestRedis::start();
    redis.pause();
    let store = RedisStore::builder(redis.url())
        .command_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let result = tokio::time::timeout(HANG_GUARD, store.get("k"))
        .await
        .expect("the call hung while connecting");
    assert_eq!(result.unwrap_err().kind(), StoreErrorKind::Timeout);
    redis.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_gone_fails_within_the_bound() {
    let mut redis = TestRedis::start();
    let store = RedisStore::builder(redis.url())
        .command_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    redis.kill();
    let result = tokio::time::timeout(HANG_GUARD, store.get("k"))
        .await
        .expect("the call hung with the server gone");
    let err = result.unwrap_err();
    assert!(err.is_timeout() || err.is_connection(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_fast_while_redis_is_down_and_recover_when_it_is_back() {
    let mut redis = TestRedis::start();
    let store = RedisStore::builder(redis.url())
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    store
        .set("k", Bytes::from_static(b"v"), Expiry::Never)
        .await
        .unwrap();
    redis.kill();

    // The first call finds the connection gone and a reconnect refused.
    let first = tokio::time::timeout(HANG_GUARD, store.get("k"))
        .await
        .unwrap();
    assert!(first.is_err());
    // From then on calls are refused at once as unreachable rather than timing out, which is
    // what each would do if it waited for a connection.
    for _ in 0..20 {
        let err = tokio::time::timeout(HANG_GUARD, store.get("k"))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Connection, "{err}");
        assert!(err.to_string().contains("unreachable"), "{err}");
    }

    redis.restart();
    let back = eventually(Duration::from_secs(10), || async {
        store
            .set("k", Bytes::from_static(b"again"), Expiry::Never)
            .await
            .is_ok()
    })
    .await;
    assert!(back, "the store did not reconnect after Redis came back");
    assert_eq!(redis.command(&["GET", ":1:k"]), "again");
}

#[tokio::test]
async fn password_and_database_apply_when_the_url_has_none() {
    let redis = TestRedis::start_with(&["--requirepass", "s3cret"]);
    let store = RedisStore::builder(redis.url())
        .password("s3cret")
        .database(3)
        .build()
        .await
        .unwrap();
    store
        .set("k", Bytes::from_static(b"in db 3"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(redis.command(&["AUTH", "s3cret"]), "OK");

    // the URL's own database wins over the option
    let url_db = RedisStore::builder(format!("redis://:s3cret@127.0.0.1:{}/5", redis.port()))
        .database(3)
        .build()
        .await
        .unwrap();
    url_db
        .set("k", Bytes::from_static(b"in db 5"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(
        store.get("k").await.unwrap().as_deref(),
        Some(&b"in db 3"[..])
    );
    assert_eq!(
        url_db.get("k").await.unwrap().as_deref(),
        Some(&b"in db 5"[..])
    );

    let no_password = RedisStore::builder(redis.url())
        .command_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    assert!(no_password.get("k").await.is_err());
}

#[tokio::test]
async fn unix_socket_locations_work() {
    let redis = TestRedis::start_with(&[
        "--unixsocket",
        "{dir}/redis.sock",
        "--unixsocketperm",
        "700",
    ]);
    let socket = redis.dir().join("redis.sock");
    for location in [
        format!("unix://{}", socket.display()),
        format!("redis+unix://{}", socket.display()),
    ] {
        let store = RedisStore::builder(&location).build().await.unwrap();
        store
            .set("via", Bytes::from_static(b"socket"), Expiry::Never)
            .await
            .unwrap();
        store.ping().await.unwrap();
    }
    assert_eq!(redis.command(&["GET", ":1:via"]), "socket");
}

#[tokio::test]
async fn scripts_reload_after_the_script_cache_is_flushed() {
    let redis = TestRedis::start();
    let store = store_for(&redis).await;
    let policy = RatePolicy::gcra(10, Duration::from_secs(1), 5).unwrap();
    assert!(store.rate_limit("g", &policy).await.unwrap().allowed);
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]), "OK");
    assert!(store.rate_limit("g", &policy).await.unwrap().allowed);
    assert_eq!(store.increment("missing", 1).await.unwrap(), None);
}

#[tokio::test]
async fn gcra_runs_on_the_server_clock() {
    let redis = TestRedis::start();
    let store = store_for(&redis).await;
    let policy = RatePolicy::gcra(1, Duration::from_secs(10), 0).unwrap();
    assert!(store.rate_limit("clock", &policy).await.unwrap().allowed);
    // The stored theoretical arrival time is one interval past Redis's own TIME.
    let time = redis.command(&["TIME"]);
    let mut parts = time.lines().map(|part| part.parse::<u64>().unwrap());
    let server_now_us = parts.next().unwrap() * 1_000_000 + parts.next().unwrap();
    let tat: u64 = redis.command(&["GET", ":1:clock"]).parse().unwrap();
    assert!(
        tat > server_now_us && tat <= server_now_us + 10_000_000,
        "tat {tat}, now {server_now_us}"
    );
}

#[tokio::test]
async fn invalid_locations_are_config_errors_with_the_password_redacted() {
    for location in [
        "http://127.0.0.1",
        "redis://:hunter2@[bad",
        "rediss://:hunter2@[bad",
    ] {
        let err = RedisStore::builder(location).build().await.unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("invalid store location"), "{text}");
        assert!(!text.contains("hunter2"), "password leaked: {text}");
    }
}

#[tokio::test]
async fn a_write_refused_for_lack_of_memory_is_capacity_exceeded() {
    let redis = TestRedis::start();
    let store = store_for(&redis).await;
    assert_eq!(redis.command(&["CONFIG", "SET", "maxmemory", "1"]), "OK");
    let err = store
        .set("k", Bytes::from_static(b"v"), Expiry::Never)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::CapacityExceeded, "{err}");
}

/// A failover behind one endpoint (a managed "primary endpoint", a moved DNS name) leaves
/// the store's sockets on a replica, which answers every write `READONLY`: the store drops
/// those connections instead of writing through them forever, and sends the refused command
/// once more on a new connection (Redis ran nothing, so even a counter cannot count twice).
#[tokio::test]
async fn a_demoted_master_s_connections_are_replaced() {
    let server = TestRedis::start();
    let other = TestRedis::start();
    let store = store_for(&server).await;
    let connections = || -> u64 {
        let info = server.command(&["INFO", "stats"]);
        info.lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap()
    };
    store
        .set("before", Bytes::from_static(b"1"), Expiry::Never)
        .await
        .unwrap();
    let port = other.port().to_string();
    assert_eq!(server.command(&["REPLICAOF", "127.0.0.1", &port]), "OK");

    let opened = connections();
    let write = store.set("during", Bytes::from_static(b"1"), Expiry::Never);
    let err = tokio::time::timeout(HANG_GUARD, write)
        .await
        .expect("a refused write answers")
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Connection, "{err}");
    assert!(
        connections() > opened,
        "the refused write was sent again on a new connection"
    );
    // a command that is never retried after a dropped connection is refused the same way
    let opened = connections();
    let claimed = store
        .set_if_absent("claim", Bytes::from_static(b"1"), Expiry::Never)
        .await
        .unwrap_err();
    assert_eq!(claimed.kind(), StoreErrorKind::Connection, "{claimed}");
    assert!(connections() > opened);
    let limited = store
        .rate_limit(
            "gcra",
            &RatePolicy::gcra(10, Duration::from_secs(1), 10).unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(limited.kind(), StoreErrorKind::Connection, "{limited}");

    // promoted back: the next write goes through at once, on a connection opened since
    assert_eq!(server.command(&["REPLICAOF", "NO", "ONE"]), "OK");
    store
        .set("after", Bytes::from_static(b"1"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(server.command(&["GET", ":1:after"]), "1");
}

/// A failover behind one endpoint while a cooldown's transaction (`MULTI` `SET NX` `PTTL`
/// `GET` `EXEC`) is the first write: the demoted master refuses the queued `SET` with
/// `READONLY`, which only shows inside the `EXECABORT`. It is the same refusal as a plain
/// `READONLY`: the connections are replaced and the transaction sent once more, where the
/// endpoint now leads (issue 28, finding 10: the flag answered 503 until a script met a plain
/// `READONLY`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readonly_inside_a_transaction_is_a_demoted_master_too() {
    let old = TestRedis::start();
    let new = TestRedis::start();
    let relay = TestRelay::start(old.port());
    let store = RedisStore::builder(relay.url()).build().await.unwrap();
    let cooldown = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert!(store.rate_limit("sms:1", &cooldown).await.unwrap().allowed);

    assert_eq!(
        old.command(&["REPLICAOF", "127.0.0.1", &new.port().to_string()]),
        "OK"
    );
    relay.retarget(new.port());
    let decision = tokio::time::timeout(HANG_GUARD, store.rate_limit("sms:2", &cooldown))
        .await
        .expect("the refused transaction answers");
    assert!(decision.unwrap().allowed);
    assert!(!store.rate_limit("sms:2", &cooldown).await.unwrap().allowed);
}
