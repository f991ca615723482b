//! Writes that must reach a replica before they count (issue 28, finding 11): a send flag or
//! a revocation the master acknowledged but lost in a failover gave a second SMS code out, or
//! brought a revoked token back. Each case runs a master with a real replica that replicates
//! through a relay; silencing the relay makes the replication link lose every write from then
//! on while both ends still take it as connected (a partition), and the replica is promoted
//! once the master is gone.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tower_redis_http::auth::{TokenError, Tokens};
use tower_redis_http::store::{Durability, RatePolicy, RedisStore, Store, StoreErrorKind};

use crate::support::{TestCluster, TestRedis, TestRelay, eventually};

/// Long enough that a loaded machine's replica answers a healthy wait well within it.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A master, and a replica that replicates through a relay and has caught up with it.
pub(crate) async fn replicated_pair() -> (TestRedis, TestRedis, TestRelay) {
    let master = TestRedis::start();
    let relay = TestRelay::start(master.port());
    let replica = TestRedis::start_with(&["--replicaof", "127.0.0.1", &relay.port().to_string()]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            master
                .command(&["INFO", "replication"])
                .contains("connected_slaves:1")
                && master.replicas_caught_up()
        })
        .await,
        "the replica never caught up"
    );
    (master, replica, relay)
}

pub(crate) async fn store_at(redis: &TestRedis) -> RedisStore {
    RedisStore::builder(redis.url())
        .command_timeout(COMMAND_TIMEOUT)
        .build()
        .await
        .unwrap()
}

/// A store on `cluster`, with the same command timeout.
pub(crate) async fn cluster_store(cluster: &TestCluster) -> RedisStore {
    RedisStore::cluster(cluster.seeds())
        .command_timeout(COMMAND_TIMEOUT)
        .build()
        .await
        .unwrap()
}

/// The replica takes over: the master dies with whatever only it had.
fn fail_over(mut master: TestRedis, replica: &TestRedis) {
    master.kill();
    assert_eq!(replica.command(&["REPLICAOF", "NO", "ONE"]), "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_flag_no_replica_took_is_given_back_and_one_code_survives_the_failover() {
    let (master, replica, relay) = replicated_pair().await;
    let store = store_at(&master).await;
    let sms = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert_eq!(sms.durability(), Durability::ReplicaIfAny);

    // acknowledged by the replica before the call returns: it holds the flag at once
    assert!(store.rate_limit("sms:1", &sms).await.unwrap().allowed);
    let flag_1 = store.key_scheme().make("sms:1").unwrap();
    assert_eq!(replica.command(&["EXISTS", &flag_1]), "1");

    // the replication link goes silent: the next number's flag cannot reach the replica
    relay.silence_open_connections();
    let started = Instant::now();
    let waiting = tokio::spawn({
        let (store, sms) = (store.clone(), sms);
        async move { store.rate_limit("sms:2", &sms).await }
    });
    // while that hit waits for the replica (its `WAIT` blocks the lane), a hit the flag
    // already refuses is answered at once: it never queues behind another hit's wait (the
    // adversary's review: such refusals took 3/4 of the timeout, or failed as timeouts)
    tokio::time::sleep(COMMAND_TIMEOUT / 10).await;
    let refused_at = Instant::now();
    assert!(!store.rate_limit("sms:1", &sms).await.unwrap().allowed);
    assert!(
        refused_at.elapsed() < COMMAND_TIMEOUT / 4,
        "a refusal waited {:?} behind another hit's wait",
        refused_at.elapsed()
    );
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NotReplicated, "{err}");
    // the wait is bounded by the command timeout, plus the give-back (one more call)
    assert!(
        started.elapsed() < COMMAND_TIMEOUT * 3,
        "took {:?}",
        started.elapsed()
    );
    // given back on the master: the client may try again at once
    let flag_2 = store.key_scheme().make("sms:2").unwrap();
    assert_eq!(master.command(&["EXISTS", &flag_2]), "0");
    // a refused hit wrote nothing and waits for nothing, replica or not
    let started = Instant::now();
    assert!(!store.rate_limit("sms:1", &sms).await.unwrap().allowed);
    assert!(started.elapsed() < COMMAND_TIMEOUT, "a refusal waited");

    fail_over(master, &replica);
    let promoted = store_at(&replica).await;
    // number 1's code went out before the failover, and its flag survived it
    assert!(!promoted.rate_limit("sms:1", &sms).await.unwrap().allowed);
    // number 2 was told no (the layer answers with its failure policy), so this is its first
    assert!(promoted.rate_limit("sms:2", &sms).await.unwrap().allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_needs_no_replica_never_waits_and_one_that_needs_one_refuses_without() {
    let (master, replica, relay) = replicated_pair().await;
    let store = store_at(&master).await;
    relay.silence_open_connections();
    let window = RatePolicy::fixed_window(5, Duration::from_secs(60)).unwrap();
    assert_eq!(window.durability(), Durability::Master);
    let started = Instant::now();
    assert!(store.rate_limit("api", &window).await.unwrap().allowed);
    assert!(started.elapsed() < COMMAND_TIMEOUT, "a window hit waited");
    // a window asked to wait waits, and gives its hit back when nothing acknowledged it
    let durable = window.with_durability(Durability::ReplicaIfAny);
    let err = store.rate_limit("login", &durable).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NotReplicated, "{err}");
    let counter = store.key_scheme().make("login").unwrap();
    assert_eq!(master.command(&["GET", &counter]), "0");
    // the replica connects again and catches up: the wait is acknowledged
    master.command(&["CLIENT", "KILL", "TYPE", "replica"]);
    assert_eq!(replica.command(&["REPLICAOF", "NO", "ONE"]), "OK");
    let relayed = relay.port().to_string();
    assert_eq!(replica.command(&["REPLICAOF", "127.0.0.1", &relayed]), "OK");
    assert!(
        eventually(Duration::from_secs(10), || async {
            master
                .command(&["INFO", "replication"])
                .contains("connected_slaves:1")
                && master.replicas_caught_up()
        })
        .await,
        "the replica never caught up again"
    );
    assert!(store.rate_limit("login", &durable).await.unwrap().allowed);

    // a lone server: ReplicaIfAny is the master alone, Replica refuses before writing
    let lone = TestRedis::start();
    let store = store_at(&lone).await;
    let sms = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert!(store.rate_limit("sms:1", &sms).await.unwrap().allowed);
    let strict = sms.with_durability(Durability::Replica);
    let err = store.rate_limit("sms:2", &strict).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NotReplicated, "{err}");
    let flag = store.key_scheme().make("sms:2").unwrap();
    assert_eq!(lone.command(&["EXISTS", &flag]), "0", "the write was made");
}

#[derive(Serialize, Deserialize)]
struct User {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_no_replica_took_is_reported_and_one_it_took_survives_the_failover() {
    let (master, replica, relay) = replicated_pair().await;
    let store = store_at(&master).await;
    let tokens = Tokens::new(store.clone(), |user: &User| user.id.to_string());
    let kept = tokens.issue(&User { id: 1 }).await.unwrap();
    let doubtful = tokens.issue(&User { id: 2 }).await.unwrap();
    // issuing does not wait for the replica: let it catch up
    assert!(
        eventually(Duration::from_secs(10), || async {
            master.replicas_caught_up()
        })
        .await
    );

    assert!(tokens.revoke(&kept).await.unwrap());
    relay.silence_open_connections();
    match tokens.revoke(&doubtful).await {
        Err(TokenError::Store(err)) => {
            assert_eq!(err.kind(), StoreErrorKind::NotReplicated, "{err}")
        }
        other => panic!("a revocation no replica took was not reported: {other:?}"),
    }

    fail_over(master, &replica);
    let promoted = store_at(&replica).await;
    let tokens = Tokens::new(promoted.clone(), |user: &User| user.id.to_string());
    // the acknowledged revocation held through the failover
    assert!(
        !tokens.revoke(&kept).await.unwrap(),
        "a revoked token came back"
    );
    // the one reported as not replicated is back, as the error warned; revoking again works
    assert!(tokens.revoke(&doubtful).await.unwrap());
}

/// On a cluster a durable write waits on every master of the lane, each for its own replica:
/// a flag no replica took is given back there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_send_flag_waits_for_the_replica_of_its_master() {
    let cluster = TestCluster::start();
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(COMMAND_TIMEOUT)
        .build()
        .await
        .unwrap();
    let sms = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    let flag_1 = store.key_scheme().make("sms:1").unwrap();
    assert!(store.rate_limit("sms:1", &sms).await.unwrap().allowed);
    let replicas: Vec<&TestRedis> = cluster
        .nodes
        .iter()
        .filter(|node| {
            node.command(&["INFO", "replication"])
                .contains("role:slave")
        })
        .collect();
    assert_eq!(replicas.len(), 3);
    // the replica of the flag's master had it before the call returned
    let held: usize = replicas
        .iter()
        .filter(|replica| {
            replica.command(&["CLUSTER", "COUNTKEYSINSLOT", &slot_of(&cluster, &flag_1)]) == "1"
        })
        .count();
    assert_eq!(held, 1, "no replica held the flag when the call returned");

    // replicas that stop answering: once the cluster marks them failing (its node timeout)
    // `ReplicaIfAny` counts none and takes the master alone, so the strict durability is what
    // shows the wait whatever the timing
    let strict = sms.with_durability(Durability::Replica);
    for replica in &replicas {
        replica.pause();
    }
    let err = store.rate_limit("sms:2", &strict).await.unwrap_err();
    for replica in &replicas {
        replica.resume();
    }
    assert_eq!(err.kind(), StoreErrorKind::NotReplicated, "{err}");
    let flag_2 = store.key_scheme().make("sms:2").unwrap();
    let master = cluster.master_of(&flag_2);
    assert_eq!(cluster.nodes[master].command(&["EXISTS", &flag_2]), "0");
}

fn slot_of(cluster: &TestCluster, key: &str) -> String {
    cluster.nodes[0].command(&["CLUSTER", "KEYSLOT", key])
}

/// The replica count is trusted for a second: a replica gone within it (a failover that left
/// the new master alone) must not fail writes that only wait when there is a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_gone_since_it_was_counted_does_not_fail_the_next_flag() {
    let (master, replica, _relay) = replicated_pair().await;
    let store = store_at(&master).await;
    let sms = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert!(store.rate_limit("sms:1", &sms).await.unwrap().allowed);
    assert_eq!(replica.command(&["REPLICAOF", "NO", "ONE"]), "OK");
    assert!(
        eventually(Duration::from_secs(10), || async {
            master
                .command(&["INFO", "replication"])
                .contains("connected_slaves:0")
        })
        .await
    );
    assert!(store.rate_limit("sms:2", &sms).await.unwrap().allowed);
}
