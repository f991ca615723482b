//! Redis Sentinel: a store built from sentinel addresses and a service name finds the master,
//! and follows a failover. The conformance suite runs through a sentinel too (`redis_sentinel`
//! in main.rs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tower_redis_http::store::{Expiry, RatePolicy, RedisStore, Store};

use crate::support::{TestRedis, TestSentinels};

#[tokio::test]
async fn the_store_writes_to_the_master_the_sentinels_name() {
    let master = TestRedis::start();
    let sentinel = TestRedis::start_sentinel(TestSentinels::SERVICE, master.port(), 1);
    let store = RedisStore::sentinel(
        [format!("127.0.0.1:{}", sentinel.port())],
        TestSentinels::SERVICE,
    )
    .database(2)
    .build()
    .await
    .unwrap();
    store
        .set("greeting", Bytes::from_static(b"hi"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(master.command(&["SELECT", "2"]), "OK");
    assert_eq!(
        store.get("greeting").await.unwrap().as_deref(),
        Some(&b"hi"[..])
    );
}

#[tokio::test]
async fn sentinel_mistakes_are_configuration_errors() {
    let none = RedisStore::sentinel(Vec::<String>::new(), "mymaster")
        .build()
        .await
        .unwrap_err();
    assert!(none.to_string().contains("sentinel"), "{none}");
}

/// The master dies while writers run: every call answers within the command timeout (plus
/// scheduling), writes go through again within 5 s of the promotion, and what is written
/// afterwards is on the promoted replica; a send flag still admits exactly one of 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_follows_a_failover() {
    let mut topology = TestSentinels::start();
    assert!(
        topology.wait_until_ready(Duration::from_secs(30)),
        "the sentinels never saw the replica and each other"
    );
    let timeout = Duration::from_millis(500);
    let store = RedisStore::sentinel(topology.addresses(), TestSentinels::SERVICE)
        .command_timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .await
        .unwrap();
    store
        .set("before", Bytes::from_static(b"1"), Expiry::Never)
        .await
        .unwrap();
    let replica_port = topology.replica.port();

    topology.master.kill();
    let killed_at = Instant::now();
    let store = Arc::new(store);
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                let mut first_success_after = None;
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(20) {
                    let call = Instant::now();
                    let written = store
                        .set(
                            &format!("w{writer}"),
                            Bytes::from_static(b"1"),
                            Expiry::Never,
                        )
                        .await;
                    slowest = slowest.max(call.elapsed());
                    if written.is_ok() {
                        first_success_after = Some(started.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (slowest, first_success_after)
            })
        })
        .collect();
    let mut promoted_at = None;
    while killed_at.elapsed() < Duration::from_secs(20) {
        if topology.master_port() == Some(replica_port) {
            promoted_at = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted_at = promoted_at.expect("the sentinels promoted the replica");
    for writer in writers {
        let (slowest, success) = writer.await.unwrap();
        // a call waits out at most the command timeout (a connect included), with room for
        // two busy cores
        assert!(
            slowest < timeout + Duration::from_secs(1),
            "a call took {slowest:?}"
        );
        let success = success.expect("writes go through again after the failover");
        assert!(
            success < promoted_at + Duration::from_secs(5),
            "writes resumed {success:?} after the kill, the promotion was at {promoted_at:?}"
        );
    }
    assert_eq!(topology.replica.command(&["GET", ":1:w0"]), "1");

    let flag = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let hits: Vec<_> = (0..100)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.rate_limit("sms", &flag).await })
        })
        .collect();
    let mut admitted = 0;
    for hit in hits {
        admitted += usize::from(hit.await.unwrap().unwrap().allowed);
    }
    assert_eq!(admitted, 1);
}

/// django-redis's Sentinel settings, as users have them: `SentinelClient`, the sentinels as
/// `[host, port]` pairs, the service and database in the location.
#[tokio::test]
async fn django_sentinel_settings_reach_the_master() {
    use tower_redis_http::store::{Stores, StoresConfig};

    let master = TestRedis::start_with(&["--requirepass", "master-pw"]);
    let sentinel = TestRedis::start_with_sentinel_password(master.port(), "sentinel-pw");
    let config: StoresConfig = serde_json::from_value(serde_json::json!({
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": format!("redis://{}/3", TestSentinels::SERVICE),
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_POOL_CLASS": "redis.sentinel.SentinelConnectionPool",
                "SENTINELS": [["127.0.0.1", sentinel.port()]],
                "SENTINEL_KWARGS": {"password": "sentinel-pw"},
                "PASSWORD": "master-pw"
            }
        }
    }))
    .unwrap();
    let store = Stores::from_config(&config)
        .await
        .unwrap()
        .get("default")
        .unwrap();
    store
        .set("flag", Bytes::from_static(b"1"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(store.get("flag").await.unwrap().as_deref(), Some(&b"1"[..]));
    // the master asks for its password: the store sent the one in the settings
    assert!(master.command(&["GET", "x"]).starts_with("ERR:NOAUTH"));

    let missing: StoresConfig = serde_json::from_value(serde_json::json!({
        "default": {
            "LOCATION": "redis://mymaster/0",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.SentinelClient"}
        }
    }))
    .unwrap();
    let err = Stores::from_config(&missing).await.unwrap_err();
    assert!(err.to_string().contains("client_class"), "{err}");
}

/// TLS through Sentinel: the sentinels over `rediss://`, and the master they name over TLS,
/// both trusting the given CA; plain sentinels with a TLS master when certificates are given.
#[tokio::test]
async fn the_store_reaches_a_tls_master_through_tls_sentinels() {
    let master = TestRedis::start_tls(false);
    let sentinel = TestRedis::start_tls_sentinel(master.tls_port());
    let ca = || {
        tower_redis_http::store::Pem::file(crate::support::TestCertificates::get().path("ca.pem"))
    };
    for sentinels in [sentinel.tls_url(), format!("127.0.0.1:{}", sentinel.port())] {
        let store = RedisStore::sentinel([sentinels.clone()], TestSentinels::SERVICE)
            .tls_root_certificate(ca())
            .build()
            .await
            .unwrap();
        store
            .set("greeting", Bytes::from_static(b"hi"), Expiry::Never)
            .await
            .unwrap_or_else(|err| panic!("through {sentinels}: {err}"));
        assert_eq!(master.command(&["GET", ":1:greeting"]), "hi");
        assert_eq!(master.command(&["DEL", ":1:greeting"]), "1");
    }
    // without the CA, the test master's certificate is not trusted
    let untrusted = RedisStore::sentinel([sentinel.tls_url()], TestSentinels::SERVICE)
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    assert!(untrusted.get("greeting").await.is_err());
}
