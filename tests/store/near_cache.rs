//! The near cache on a real Redis: two store instances on one server, as two processes of one
//! service would be; the conformance suite also runs on a store with a near cache.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tower_redis_http::ConfigError;
use tower_redis_http::store::{Expiry, NearCache, RatePolicy, RedisStore, Store, StoreErrorKind};

use crate::support::{TestRedis, command_calls, eventually, wait_until_near_cache_serves};

/// How soon another instance's change must be seen.
const VISIBLE_WITHIN: Duration = Duration::from_millis(50);

async fn plain(redis: &TestRedis) -> RedisStore {
    RedisStore::builder(redis.url())
        .build()
        .await
        .expect("build a store")
}

async fn near(redis: &TestRedis, settings: NearCache) -> RedisStore {
    let store = RedisStore::builder(redis.url())
        .command_timeout(Duration::from_millis(500))
        .near_cache(settings)
        .build()
        .await
        .expect("build a store with a near cache");
    wait_until_near_cache_serves(&store).await;
    store
}

fn value(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Polls `store.get(key)` until it returns `expected`; how long that took, or `None` if it
/// did not within a second.
async fn time_until(store: &RedisStore, key: &str, expected: Option<&str>) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let got = store.get(key).await.expect("get");
        if got.as_deref() == expected.map(str::as_bytes) {
            return Some(started.elapsed());
        }
        tokio::task::yield_now().await;
    }
    None
}

/// The client id of the near cache's tracking connection, from `CLIENT LIST`.
fn tracking_client_id(redis: &TestRedis) -> String {
    let clients = redis.command(&["CLIENT", "LIST"]);
    clients
        .lines()
        .find(|line| line.contains("name=tower-redis-http-near-cache"))
        .and_then(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("no tracking connection in CLIENT LIST:\n{clients}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_value_is_read_from_process_memory_after_the_first_get() {
    let redis = TestRedis::start();
    let b = near(&redis, NearCache::new()).await;
    b.set("token", value("alice"), Expiry::Never).await.unwrap();
    let before = command_calls(&redis, "GET");
    for _ in 0..100 {
        assert_eq!(b.get("token").await.unwrap(), Some(value("alice")));
    }
    assert_eq!(
        command_calls(&redis, "GET") - before,
        1,
        "one GET fills the near cache, the other 99 reads are local"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_another_instance_is_seen_within_50_ms() {
    let redis = TestRedis::start();
    let a = plain(&redis).await;
    let b = near(&redis, NearCache::new()).await;
    a.set("token", value("alice"), Expiry::Never).await.unwrap();
    assert_eq!(b.get("token").await.unwrap(), Some(value("alice")));
    assert_eq!(b.get("token").await.unwrap(), Some(value("alice")));

    // revoked on A
    assert!(a.delete("token").await.unwrap());
    let took = time_until(&b, "token", None).await;
    assert!(
        took.is_some_and(|took| took < VISIBLE_WITHIN),
        "B saw the deletion after {took:?}"
    );

    // replaced on A
    a.set("token", value("bob"), Expiry::Never).await.unwrap();
    assert_eq!(b.get("token").await.unwrap(), Some(value("bob")));
    a.set("token", value("carol"), Expiry::Never).await.unwrap();
    let took = time_until(&b, "token", Some("carol")).await;
    assert!(
        took.is_some_and(|took| took < VISIBLE_WITHIN),
        "B saw the new value after {took:?}"
    );

    // the whole database flushed by someone else
    assert_eq!(b.get("token").await.unwrap(), Some(value("carol")));
    redis.command(&["FLUSHDB"]);
    let took = time_until(&b, "token", None).await;
    assert!(
        took.is_some_and(|took| took < VISIBLE_WITHIN),
        "B saw FLUSHDB after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_tracking_connection_stops_local_serving_at_once() {
    let redis = TestRedis::start();
    let b = near(&redis, NearCache::new()).await;
    b.set("token", value("alice"), Expiry::Never).await.unwrap();
    assert_eq!(b.get("token").await.unwrap(), Some(value("alice")));
    assert_eq!(b.near_cache_usage().unwrap().entries, 1);

    let id = tracking_client_id(&redis);
    assert_eq!(redis.command(&["CLIENT", "KILL", "ID", &id]), "1");
    let killed = Instant::now();
    // a change nobody will announce to B: its tracking connection is gone
    redis.command(&["SET", ":1:token", "mallory"]);
    // (a new tracking connection may already be up by the time this looks: what counts is
    // that the old one's entries are gone)
    let emptied = eventually(VISIBLE_WITHIN, || async {
        b.near_cache_usage().unwrap().flushes == 1
    })
    .await;
    assert!(
        emptied,
        "B still held its entries {:?} after its tracking connection was killed",
        killed.elapsed()
    );
    assert_eq!(b.near_cache_usage().unwrap().entries, 0, "emptied");
    assert_eq!(b.get("token").await.unwrap(), Some(value("mallory")));

    // a new tracking connection comes up, and serving resumes with fresh values
    wait_until_near_cache_serves(&b).await;
    assert_ne!(tracking_client_id(&redis), id);
    assert_eq!(b.get("token").await.unwrap(), Some(value("mallory")));
    let before = command_calls(&redis, "GET");
    assert_eq!(b.get("token").await.unwrap(), Some(value("mallory")));
    assert_eq!(command_calls(&redis, "GET"), before, "served locally again");
    redis.command(&["SET", ":1:token", "alice"]);
    let took = time_until(&b, "token", Some("alice")).await;
    assert!(
        took.is_some_and(|took| took < VISIBLE_WITHIN),
        "the new tracking connection announced the change after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gone_means_nothing_served_from_memory() {
    let mut redis = TestRedis::start();
    let b = near(&redis, NearCache::new()).await;
    b.set("token", value("alice"), Expiry::Never).await.unwrap();
    assert_eq!(b.get("token").await.unwrap(), Some(value("alice")));
    redis.kill();
    let stopped = eventually(VISIBLE_WITHIN, || async {
        !b.near_cache_usage().unwrap().serving
    })
    .await;
    assert!(stopped, "the near cache kept serving with Redis gone");
    let err = b.get("token").await.expect_err("no Redis, no value");
    assert!(
        matches!(
            err.kind(),
            StoreErrorKind::Connection | StoreErrorKind::Timeout
        ),
        "{err}"
    );
    redis.restart();
    wait_until_near_cache_serves(&b).await;
    assert_eq!(
        b.get("token").await.unwrap(),
        None,
        "a restarted Redis is empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_entry_is_served_past_the_maximum_local_age() {
    let redis = TestRedis::start();
    let b = near(&redis, NearCache::new().max_age(Duration::from_millis(300))).await;
    b.set("token", value("alice"), Expiry::Never).await.unwrap();
    let before = command_calls(&redis, "GET");
    b.get("token").await.unwrap();
    b.get("token").await.unwrap();
    assert_eq!(command_calls(&redis, "GET") - before, 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    b.get("token").await.unwrap();
    assert_eq!(
        command_calls(&redis, "GET") - before,
        2,
        "read from Redis again once the local age ran out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_expiring_in_redis_is_not_served_after_its_expiry() {
    let redis = TestRedis::start();
    let b = near(&redis, NearCache::new()).await;
    // no active expiry: only the key's own deadline, as Redis reported it, ends the entry
    redis.command(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    b.set("code", value("4711"), Duration::from_millis(200).into())
        .await
        .unwrap();
    assert_eq!(b.get("code").await.unwrap(), Some(value("4711")));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(b.get("code").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_near_cache_is_bounded_in_entries_and_in_bytes() {
    let redis = TestRedis::start();
    let by_entries = near(&redis, NearCache::new().max_entries(10)).await;
    let by_bytes = near(
        &redis,
        NearCache::new().max_entries(1_000).max_bytes(10_000),
    )
    .await;
    let kilobyte = Bytes::from(vec![b'x'; 1_000]);
    for i in 0..100 {
        let key = format!("key{i}");
        by_entries
            .set(&key, kilobyte.clone(), Expiry::Never)
            .await
            .unwrap();
        by_entries.get(&key).await.unwrap();
        by_bytes.get(&key).await.unwrap();
    }
    let held = by_entries.near_cache_usage().unwrap().entries;
    assert!((1..=10).contains(&held), "{held} entries held, at most 10");
    // 1,000 bytes of value and 4 or 5 of key each: at most 9 fit in 10,000 bytes
    let held = by_bytes.near_cache_usage().unwrap().entries;
    assert!(
        (1..=9).contains(&held),
        "{held} entries held in 10,000 bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_racing_a_write_never_leaves_a_stale_value_behind() {
    let redis = TestRedis::start();
    let a = plain(&redis).await;
    let b = near(&redis, NearCache::new()).await;
    for round in 0..20 {
        let key = format!("raced{round}");
        let writer = {
            let a = a.clone();
            let key = key.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    a.set(&key, value(&i.to_string()), Expiry::Never)
                        .await
                        .unwrap();
                }
            })
        };
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    for _ in 0..200 {
                        b.get(&key).await.unwrap();
                    }
                })
            })
            .collect();
        writer.await.unwrap();
        for reader in readers {
            reader.await.unwrap();
        }
        let took = time_until(&b, &key, Some("199")).await;
        assert!(
            took.is_some_and(|took| took < VISIBLE_WITHIN),
            "round {round}: B held a stale value for {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_instance_reads_its_own_writes_at_once() {
    let redis = TestRedis::start();
    let b = near(&redis, NearCache::new()).await;
    for i in 0..200 {
        let text = i.to_string();
        b.set("mine", value(&text), Expiry::Never).await.unwrap();
        assert_eq!(b.get("mine").await.unwrap(), Some(value(&text)));
        assert_eq!(b.get("mine").await.unwrap(), Some(value(&text)));
    }
    assert_eq!(b.take("mine").await.unwrap(), Some(value("199")));
    assert_eq!(b.get("mine").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_stay_exact_across_instances() {
    let redis = TestRedis::start();
    let a = near(&redis, NearCache::new()).await;
    let b = near(&redis, NearCache::new()).await;
    let policy = RatePolicy::fixed_window(5, Duration::from_secs(60)).unwrap();
    let mut allowed = 0;
    for i in 0..20 {
        let store = if i % 2 == 0 { &a } else { &b };
        if store
            .rate_limit("sms:13800138000", &policy)
            .await
            .unwrap()
            .allowed
        {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
    assert_eq!(a.near_cache_usage().unwrap().entries, 0);
    assert_eq!(b.near_cache_usage().unwrap().entries, 0);
}

fn assert_refused(built: Result<RedisStore, ConfigError>) {
    let err = built.expect_err("a near cache it cannot keep is refused");
    assert!(
        matches!(
            err,
            ConfigError::InvalidOption {
                option: "near_cache",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_cluster_or_an_empty_near_cache_is_refused() {
    assert_refused(
        RedisStore::cluster(["redis://127.0.0.1:1"])
            .near_cache(NearCache::new())
            .build()
            .await,
    );
    for settings in [
        NearCache::new().max_entries(0),
        NearCache::new().max_bytes(0),
        NearCache::new().max_age(Duration::ZERO),
    ] {
        assert_refused(
            RedisStore::builder("redis://127.0.0.1:1")
                .near_cache(settings)
                .build()
                .await,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_cache_finds_its_server_through_sentinel() {
    let master = TestRedis::start();
    let sentinel =
        TestRedis::start_sentinel(crate::support::TestSentinels::SERVICE, master.port(), 1);
    let b = RedisStore::sentinel(
        [format!("127.0.0.1:{}", sentinel.port())],
        crate::support::TestSentinels::SERVICE,
    )
    .near_cache(NearCache::new())
    .build()
    .await
    .expect("build a store with a near cache through the sentinel");
    wait_until_near_cache_serves(&b).await;
    b.set("token", value("alice"), Expiry::Never).await.unwrap();
    let before = command_calls(&master, "GET");
    for _ in 0..10 {
        assert_eq!(b.get("token").await.unwrap(), Some(value("alice")));
    }
    assert_eq!(
        command_calls(&master, "GET") - before,
        1,
        "read once, then held"
    );
    master.command(&["SET", ":1:token", "bob"]);
    let took = time_until(&b, "token", Some("bob")).await;
    assert!(
        took.is_some_and(|took| took < VISIBLE_WITHIN),
        "the master's change reached the near cache after {took:?}"
    );
}

/// A server that refuses `CLIENT` (as some managed services do) has no tracking to give: the
/// near cache never serves, and every read goes to Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_tracking_leaves_every_read_to_redis() {
    let redis = TestRedis::start_with(&["--rename-command", "CLIENT", ""]);
    let b = RedisStore::builder(redis.url())
        .near_cache(NearCache::new())
        .build()
        .await
        .expect("build a store with a near cache");
    b.set("token", value("alice"), Expiry::Never).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = command_calls(&redis, "GET");
    for _ in 0..10 {
        assert_eq!(b.get("token").await.unwrap(), Some(value("alice")));
    }
    assert_eq!(command_calls(&redis, "GET") - before, 10);
    let usage = b.near_cache_usage().unwrap();
    assert!(!usage.serving && usage.entries == 0, "{usage:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_another_type_is_an_invalid_value_and_keeps_the_near_cache() {
    let redis = TestRedis::start();
    let b = near(&redis, NearCache::new()).await;
    redis.command(&["SADD", ":1:members", "a"]);
    let err = b.get("members").await.expect_err("GET on a set fails");
    // `WRONGTYPE`: the kind the memory store answers for an index read as a value
    assert_eq!(err.kind(), StoreErrorKind::InvalidValue, "{err}");
    let usage = b.near_cache_usage().unwrap();
    assert!(
        usage.serving && usage.flushes == 0,
        "a refused read keeps the tracking connection: {usage:?}"
    );
}

/// A read dropped before its reply (a client hanging up, a layer's timeout) gives its ticket
/// back: keys are chosen by clients (tokens, URLs), so a ticket left behind per dropped read
/// would grow the process without bound (issue 28, finding 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_dropped_mid_flight_leaves_no_ticket_behind() {
    let redis = TestRedis::start();
    let store = near(&redis, NearCache::new()).await;
    let mut dropped = 0;
    for i in 0..1_000 {
        // polled once: the read is registered and sent, then dropped before its reply (the
        // rare one answered within that poll is simply done)
        let key = format!("token:{i}");
        dropped += tokio::select! {
            biased;
            _ = store.get(&key) => 0,
            () = std::future::ready(()) => 1,
        };
    }
    assert!(
        dropped > 0,
        "no read was dropped mid-flight: the case was not met"
    );
    assert_eq!(
        store.near_cache_usage().unwrap().reads_in_flight,
        0,
        "{dropped} reads dropped"
    );
    // and the near cache still serves
    store.set("k", value("v"), Expiry::Never).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(value("v")));
    assert_eq!(store.near_cache_usage().unwrap().reads_in_flight, 0);
}

/// `SWAPDB` sends no invalidation (Redis tracks keys, not databases): a token removed by
/// swapping in another database was served from the near cache for its whole maximum age
/// (issue 28, finding 13). The heartbeat finds the swap: nothing held is served longer than
/// one heartbeat plus the command timeout after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapdb_empties_the_near_cache_within_a_heartbeat() {
    let redis = TestRedis::start();
    let command_timeout = Duration::from_millis(500);
    let store = near(&redis, NearCache::new()).await;
    store
        .set("token", value("alice"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(store.get("token").await.unwrap(), Some(value("alice")));
    assert_eq!(store.near_cache_usage().unwrap().entries, 1, "held");
    // database 1 is empty: the token is gone from database 0
    assert_eq!(redis.command(&["SWAPDB", "0", "1"]), "OK");
    // the heartbeat's period (1 s) plus its reply's bound, twice over for a loaded machine
    let within = 2 * (Duration::from_secs(1) + command_timeout);
    let gone = eventually(within, || async {
        store.get("token").await.unwrap().is_none()
    })
    .await;
    assert!(
        gone,
        "the swapped-out token was still served {within:?} after SWAPDB"
    );
    // and the near cache serves again afterwards
    store
        .set("token", value("bob"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(store.get("token").await.unwrap(), Some(value("bob")));
    assert!(
        eventually(within, || async {
            store.near_cache_usage().unwrap().serving
        })
        .await
    );
}

/// The number of keys Redis tracks for client-side caching (`INFO stats`).
fn tracked_keys(redis: &TestRedis) -> u64 {
    redis
        .command(&["INFO", "stats"])
        .lines()
        .find_map(|line| line.strip_prefix("tracking_total_keys:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("tracking_total_keys in INFO stats")
}

/// A read of a key that does not exist leaves nothing in Redis's tracking table: tokens and
/// URLs are chosen by clients, and a table filled with their misses (up to
/// `tracking-table-max-keys`) makes Redis evict tracked keys at random, dropping the hits
/// (issue 28, finding 8). A key that exists is still tracked, and its change still seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_missing_keys_leave_nothing_tracked() {
    let redis = TestRedis::start();
    let store = near(&redis, NearCache::new()).await;
    let writer = plain(&redis).await;
    for i in 0..1_000 {
        assert_eq!(store.get(&format!("token:{i}")).await.unwrap(), None);
    }
    assert_eq!(tracked_keys(&redis), 0, "misses were tracked");

    writer.set("k", value("v1"), Expiry::Never).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(value("v1")));
    assert_eq!(tracked_keys(&redis), 1, "a hit was not tracked");
    assert_eq!(store.near_cache_usage().unwrap().entries, 1);
    writer.set("k", value("v2"), Expiry::Never).await.unwrap();
    assert!(
        time_until(&store, "k", Some("v2")).await.is_some(),
        "the change of a tracked key was not seen"
    );
}
