//! Redis Cluster: what only a cluster can show. The conformance suite runs on a cluster too
//! (`redis_cluster` in main.rs), as do the layers' suites and the failover test.

use std::time::Duration;

use bytes::Bytes;
use tower_redis_http::ConfigError;
use tower_redis_http::store::{Expiry, RatePolicy, RedisStore, Store, StoreErrorKind};

use crate::support::{RawRedis, TestCluster, command_calls};

/// A promoted replica has an empty script cache. The store reloads a script on the one node
/// its key lives on (`EVAL`), not with a `SCRIPT LOAD` sent to every node, which a node that
/// is down (a master not yet replaced) would fail for every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_reload_on_their_node_while_another_master_is_down() {
    let mut cluster = TestCluster::start();
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let gcra = RatePolicy::gcra(100, Duration::from_secs(60), 100).unwrap();
    assert!(store.rate_limit("sms", &gcra).await.unwrap().allowed);

    let home = cluster.master_of(":1:sms");
    let other = (0..cluster.nodes.len())
        .find(|&i| {
            i != home
                && cluster
                    .masters()
                    .iter()
                    .any(|m| m.port() == cluster.nodes[i].port())
        })
        .expect("another master");
    cluster.nodes[other].kill();
    // as on a replica just promoted: the node that serves the key has no scripts
    assert_eq!(cluster.nodes[home].command(&["SCRIPT", "FLUSH"]), "OK");
    let evals_before = command_calls(&cluster.nodes[home], "eval");

    let decision = store.rate_limit("sms", &gcra).await.unwrap();
    assert!(decision.allowed);
    assert_eq!(
        command_calls(&cluster.nodes[home], "eval"),
        evals_before + 1,
        "the script was sent with its body to the key's node"
    );
    // and the node has it cached again: the next call goes by digest
    assert!(store.rate_limit("sms", &gcra).await.unwrap().allowed);
    assert_eq!(
        command_calls(&cluster.nodes[home], "eval"),
        evals_before + 1
    );
}

#[tokio::test]
async fn cluster_mistakes_are_configuration_errors() {
    let none = RedisStore::cluster(Vec::<String>::new())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            none,
            ConfigError::InvalidOption {
                option: "cluster",
                ..
            }
        ),
        "{none:?}"
    );
    let database = RedisStore::cluster(["redis://127.0.0.1:7000"])
        .database(2)
        .build()
        .await
        .unwrap_err();
    assert!(database.to_string().contains("database 0"), "{database}");
    let bad = RedisStore::cluster(["http://127.0.0.1:7000"])
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(bad, ConfigError::InvalidLocation { .. }),
        "{bad:?}"
    );
}

/// A node that stops answering (SIGSTOP) fails the calls on its keys within the command
/// timeout, with a timeout error; the cluster's other keys go on being served meanwhile, and
/// its own once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_fails_its_calls_within_the_command_timeout() {
    let cluster = TestCluster::start();
    let timeout = Duration::from_millis(300);
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(timeout)
        .build()
        .await
        .unwrap();
    // keys until one lives on another master than the first key's
    let stalled_key = "k0";
    let home = cluster.master_of(":1:k0");
    let other_key = (1..)
        .map(|n| format!("k{n}"))
        .find(|key| cluster.master_of(&format!(":1:{key}")) != home)
        .unwrap();
    for key in [stalled_key, other_key.as_str()] {
        assert_eq!(store.get(key).await.unwrap(), None);
    }

    cluster.nodes[home].pause();
    let started = std::time::Instant::now();
    let err = store.get(stalled_key).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err.kind(),
        tower_redis_http::store::StoreErrorKind::Timeout,
        "{err}"
    );
    assert!(took < timeout + Duration::from_millis(200), "took {took:?}");
    assert_eq!(store.get(&other_key).await.unwrap(), None);
    cluster.nodes[home].resume();
    // its calls fail at once until the store's ping has its answer, a moment after
    let back = crate::support::eventually(timeout * 20, || async {
        store.get(stalled_key).await.is_ok()
    })
    .await;
    assert!(back, "the node's keys are not served after it resumed");
}

/// A cluster behind TLS (`rediss://` seed nodes, `tls-cluster yes`), as managed clusters with
/// encryption in transit run: the client learns the nodes' TLS ports, trusts the given CA,
/// and every operation reaches its key's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_speaks_tls_to_every_node() {
    let cluster = TestCluster::start_tls();
    let store = RedisStore::cluster(cluster.tls_seeds())
        .tls_root_certificate(tower_redis_http::store::Pem::file(
            crate::support::TestCertificates::get().path("ca.pem"),
        ))
        .build()
        .await
        .unwrap();
    let flag = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    // keys in every third of the slots
    for key in ["a", "b", "c", "d", "e", "f"] {
        store
            .set(
                key,
                bytes::Bytes::from_static(b"v"),
                tower_redis_http::store::Expiry::Never,
            )
            .await
            .unwrap();
        assert_eq!(store.get(key).await.unwrap().as_deref(), Some(&b"v"[..]));
        let flag_key = format!("flag-{key}");
        assert!(store.rate_limit(&flag_key, &flag).await.unwrap().allowed);
        assert!(!store.rate_limit(&flag_key, &flag).await.unwrap().allowed);
    }
    assert_eq!(
        crate::support::RawRedis::command(&cluster, &["DBSIZE"]),
        "12"
    );

    let untrusted = RedisStore::cluster(cluster.tls_seeds())
        .tls_root_certificate(tower_redis_http::store::Pem::file(
            crate::support::TestCertificates::get().path("other-ca.pem"),
        ))
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    assert!(
        untrusted.get("a").await.is_err(),
        "a server the CA did not sign was trusted"
    );
}

/// A slot in the middle of a migration (`CLUSTER SETSLOT ... MIGRATING/IMPORTING`, some keys
/// moved with `MIGRATE`): the source node answers `ASK` for every key it no longer holds, and
/// the store follows it with `ASKING` on the target node, once, within the command timeout,
/// for reads, writes and scripts alike (issue 28, finding 9: the `ASK` was re-sent to the
/// source until the timeout, and the login limit failed open during a resharding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_ask_during_a_slot_migration() {
    let cluster = TestCluster::start();
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let v = |text: &'static str| Bytes::from_static(text.as_bytes());
    for key in ["{mig}moved", "{mig}stays"] {
        store.set(key, v(key), Expiry::Never).await.unwrap();
    }
    let migration = SlotMigration::begin(&cluster, ":1:{mig}moved");
    migration.moves(":1:{mig}moved");

    // mid-migration: a moved key, a key not moved yet, a new key, a script on a new key
    assert_eq!(
        store.get("{mig}moved").await.unwrap(),
        Some(v("{mig}moved"))
    );
    assert_eq!(
        store.get("{mig}stays").await.unwrap(),
        Some(v("{mig}stays"))
    );
    store
        .set("{mig}new", v("new"), Expiry::Never)
        .await
        .unwrap();
    assert_eq!(store.get("{mig}new").await.unwrap(), Some(v("new")));
    // a transaction (the cooldown's MULTI) on a new key: its ASK shows inside the EXECABORT.
    // (A transaction over several keys of the slot is refused with TRYAGAIN until the
    // migration ends, as Redis documents: it fails within the timeout.)
    let cooldown = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert!(
        store
            .rate_limit("{mig}sms", &cooldown)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !store
            .rate_limit("{mig}sms", &cooldown)
            .await
            .unwrap()
            .allowed
    );
    let login = RatePolicy::fixed_window(10, Duration::from_secs(60)).unwrap();
    let mut allowed = 0;
    for _ in 0..15 {
        allowed += usize::from(
            store
                .rate_limit("{mig}login", &login)
                .await
                .unwrap()
                .allowed,
        );
    }
    assert_eq!(
        allowed, 10,
        "a fixed window of 10 let {allowed} of 15 through"
    );

    // the migration ends: every node learns the slot's new owner, and MOVED takes over
    migration.moves(":1:{mig}stays");
    migration.ends();
    assert_eq!(
        store.get("{mig}stays").await.unwrap(),
        Some(v("{mig}stays"))
    );
    assert!(
        !store
            .rate_limit("{mig}login", &login)
            .await
            .unwrap()
            .allowed
    );
}

/// After a slot moved (`MIGRATE` of its keys, `CLUSTER SETSLOT ... NODE`), the store's slot
/// map is stale until some plain command meets a `MOVED`. A cooldown's transaction and a
/// `set_many` are the first commands on the slot: the old owner refuses each queued command
/// with `MOVED`, which only shows inside the `EXECABORT`. It is the same refusal as a plain
/// `MOVED`, and is followed to the node it names (issue 28, finding 10: the send flag answered
/// 503 until another command refreshed the slot map).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_inside_a_transaction_is_followed() {
    let cluster = TestCluster::start();
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let cooldown = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
    assert!(
        store
            .rate_limit("{mv}sms:1", &cooldown)
            .await
            .unwrap()
            .allowed
    );
    let migration = SlotMigration::begin(&cluster, ":1:{mv}sms:1");
    migration.moves(":1:{mv}sms:1");
    migration.ends();

    let decision = store.rate_limit("{mv}sms:2", &cooldown).await;
    assert!(decision.unwrap().allowed);
    assert!(
        !store
            .rate_limit("{mv}sms:1", &cooldown)
            .await
            .unwrap()
            .allowed
    );
    store
        .set_many(&[
            ("{mv}a", Bytes::from_static(b"1"), Expiry::Never),
            ("{mv}b", Bytes::from_static(b"2"), Expiry::Never),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get("{mv}b").await.unwrap(),
        Some(Bytes::from_static(b"2"))
    );
}

/// A cached page's key (the cache layer's default layout) whose URL, its hash tag, lives on
/// the master `nodes[master]`.
fn page_on(cluster: &TestCluster, master: usize) -> String {
    (0..)
        .map(|n| format!(":1:cache:{{http://shop.example/a/{n}}}:e"))
        .find(|key| cluster.master_of(key) == master)
        .expect("a URL on every master")
}

/// Runs a pattern invalidation while the test holds each master's first `SCAN` in its relay,
/// and releases them one by one in the order the sweep reaches them. `last` runs when the
/// sweep reaches its last master, before that master's `SCAN`, with the masters in the order
/// swept. Returns what the invalidation answered.
async fn sweep_stepped(
    cluster: &TestCluster,
    relays: &[crate::support::TestRelay],
    store: &RedisStore,
    last: impl FnOnce(&[usize]),
) -> Result<u64, tower_redis_http::store::StoreError> {
    let layer = tower_redis_http::cache::ResponseCacheLayer::cache_page(
        store.clone(),
        Duration::from_secs(60),
    )
    .build()
    .unwrap();
    let invalidator = layer.invalidator();
    for relay in relays {
        relay.hold(b"SCAN");
    }
    let sweep = tokio::spawn(async move {
        invalidator
            .invalidate_matching("http://shop.example/a/*")
            .await
    });
    let mut order: Vec<usize> = Vec::new();
    let mut last = Some(last);
    while order.len() < relays.len() {
        let mut reached = None;
        let found = crate::support::eventually(Duration::from_secs(20), || {
            // a relay released a moment ago may not have let its request go yet
            reached = (0..relays.len()).find(|i| !order.contains(i) && relays[*i].held() > 0);
            let found = reached.is_some();
            async move { found }
        })
        .await;
        assert!(found, "the sweep sent no SCAN after masters {order:?}");
        let reached = reached.expect("found");
        order.push(reached);
        if order.len() == relays.len() {
            (last.take().expect("runs once"))(&order);
        }
        relays[reached].release();
    }
    let _ = cluster;
    sweep.await.expect("the sweep does not panic")
}

/// A pattern invalidation sweeps the masters one after another (`SCAN` is per node). A slot
/// that moves, during the sweep, from a master not swept yet to one already swept takes its
/// keys out of the sweep's reach. The sweep notices that the slots moved and sweeps again,
/// so the moved page is deleted too (issue 28, finding 12: it was left, and served stale).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_deletes_a_page_whose_slot_moved_to_a_master_already_swept() {
    let cluster = TestCluster::start();
    let relays = cluster.masters_behind_relays();
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let pages: Vec<String> = (0..3).map(|master| page_on(&cluster, master)).collect();
    for page in &pages {
        assert_eq!(cluster.command(&["SET", page, "stale"]), "OK");
    }

    let deleted = sweep_stepped(&cluster, &relays, &store, |order| {
        // the last master's page moves to the first master swept, slot and all
        let (first, last) = (order[0], order[2]);
        let migration = SlotMigration::begin_to(&cluster, &pages[last], first);
        migration.moves(&pages[last]);
        migration.ends();
    })
    .await
    .unwrap();

    for page in &pages {
        assert_eq!(cluster.command(&["EXISTS", page]), "0", "{page} was left");
    }
    assert_eq!(deleted, 3);
}

/// As above, with the slot still migrating when the sweep ends: the page is on the
/// importing master, already swept, while its slot's owner no longer has it. A sweep that
/// sees a slot migrating sweeps the migrating master before the importing one, and deletes a
/// page found on the importing master there (`ASKING`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_deletes_a_page_moved_to_an_importing_master_already_swept() {
    let cluster = TestCluster::start();
    let relays = cluster.masters_behind_relays();
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let pages: Vec<String> = (0..3).map(|master| page_on(&cluster, master)).collect();
    for page in &pages {
        assert_eq!(cluster.command(&["SET", page, "stale"]), "OK");
    }

    let mut moved = None;
    let deleted = sweep_stepped(&cluster, &relays, &store, |order| {
        let (first, last) = (order[0], order[2]);
        let migration = SlotMigration::begin_to(&cluster, &pages[last], first);
        migration.moves(&pages[last]);
        moved = Some((last, first));
    })
    .await
    .unwrap();

    let (from, to) = moved.expect("the sweep reached every master");
    assert!(
        cluster.nodes[to]
            .command(&["CLUSTER", "NODES"])
            .contains("-<-"),
        "the slot is still importing"
    );
    // KEYS on each master: a node answers for the keys it holds, served or importing
    for page in &pages {
        for (i, node) in cluster.nodes[..3].iter().enumerate() {
            assert_eq!(
                node.command(&["KEYS", page]),
                "",
                "{page} was left on node {i}"
            );
        }
    }
    assert_eq!(deleted, 3, "{from} -> {to}");
}

/// A resharding that moves slots all through the sweep, pass after pass: the invalidation
/// gives up after a bounded number of sweeps with an error that says keys may remain, rather
/// than report success (issue 28, finding 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_fails_while_slots_move_through_every_sweep() {
    let cluster = TestCluster::start();
    let relays = cluster.masters_behind_relays();
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    for master in 0..3 {
        let page = page_on(&cluster, master);
        assert_eq!(cluster.command(&["SET", &page, "stale"]), "OK");
    }
    let invalidator = tower_redis_http::cache::ResponseCacheLayer::cache_page(
        store.clone(),
        Duration::from_secs(60),
    )
    .build()
    .unwrap()
    .invalidator();
    for relay in &relays {
        relay.hold(b"SCAN");
    }
    let sweep = tokio::spawn(async move {
        invalidator
            .invalidate_matching("http://shop.example/a/*")
            .await
    });
    // before each master's first SCAN of each pass, an empty slot moves to another master
    let mut seen = [0; 3];
    let mut moves = 0;
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !sweep.is_finished() {
        assert!(std::time::Instant::now() < until, "the sweep did not end");
        for (i, relay) in relays.iter().enumerate() {
            if relay.held_so_far() > seen[i] {
                seen[i] += 1;
                // a slot of its own each time: one moved back at once may meet the gossip
                // of its first move
                let migration = SlotMigration::begin(&cluster, &format!(":1:{{spin{moves}}}"));
                migration.ends();
                moves += 1;
                relay.let_go();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for relay in &relays {
        relay.release();
    }
    let err = sweep.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Connection, "{err}");
    assert!(err.to_string().contains("may remain"), "{err}");
    assert!(moves >= 3, "{moves} moves");
}

/// A logical key (`:1:` prefix in the cluster), a hash tag alone (`{k7}`), whose slot
/// `nodes[master]` serves, other than `taken`'s slots.
fn key_on(cluster: &TestCluster, master: usize, taken: &[String]) -> String {
    let slot = |key: &str| cluster.command(&["CLUSTER", "KEYSLOT", &format!(":1:{key}")]);
    let slots: Vec<String> = taken.iter().map(|key| slot(key)).collect();
    (0..)
        .map(|n| format!("{{k{n}}}"))
        .find(|key| {
            cluster.master_of(&format!(":1:{key}")) == master && !slots.contains(&slot(key))
        })
        .expect("a key on every master")
}

/// How many times `node` refused `command` before running it (a `MOVED`, an `ASK`), by
/// `INFO commandstats`.
fn rejected_calls(node: &crate::support::TestRedis, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:");
    node.command(&["INFO", "commandstats"])
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|field| field.strip_prefix("rejected_calls=")?.parse().ok())
        })
        .unwrap_or(0)
}

/// A master that announces a port nothing listens on (`cluster-announce-port`, as a node in a
/// container or behind NAT announces an address clients cannot reach): the slot map and every
/// `MOVED` name that address. A call for its keys fails at once with an error that names the
/// address, rather than being sent again until the timeout; so does an `ASK` to it during a
/// migration; the other masters' keys are served (issue 28, finding 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_announcing_an_unreachable_address_fails_its_calls_at_once_naming_it() {
    let cluster = TestCluster::start();
    let closed = crate::support::unused_port();
    let away = 1;
    cluster.announce_port(away, closed);
    let timeout = Duration::from_secs(2);
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(timeout)
        .build()
        .await
        .unwrap();
    let here = key_on(&cluster, 0, &[]);
    let there = key_on(&cluster, away, &[]);
    assert_eq!(store.get(&here).await.unwrap(), None);

    let started = std::time::Instant::now();
    for _ in 0..5 {
        let err = store.get(&there).await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{closed}")),
            "the error does not name the address: {err}"
        );
        assert!(err.to_string().contains("announce"), "{err}");
        assert_eq!(err.kind(), StoreErrorKind::Connection, "{err}");
    }
    let took = started.elapsed();
    assert!(took < timeout, "5 calls took {took:?}");
    assert_eq!(store.get(&here).await.unwrap(), None);

    // a slot migrating to that node: the ASK names the address clients cannot reach
    let migration = SlotMigration::begin_to(&cluster, &format!(":1:{here}"), away);
    let started = std::time::Instant::now();
    let err = store
        .set(
            &format!("{here}new"),
            Bytes::from_static(b"v"),
            Expiry::Never,
        )
        .await;
    let _ = migration;
    let took = started.elapsed();
    let err = err.unwrap_err();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{closed}")),
        "the error does not name the address: {err}"
    );
    assert!(took < timeout, "took {took:?}");
}

/// Two masters that disagree on who serves a slot (each names the other, as a botched manual
/// `CLUSTER SETSLOT` leaves them) bounce a command back and forth. The store follows a bounded
/// number of redirects and then fails with an error that says so, instead of bouncing until
/// the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_between_nodes_that_disagree_are_bounded() {
    let cluster = TestCluster::start();
    let timeout = Duration::from_secs(2);
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(timeout)
        .build()
        .await
        .unwrap();
    let key = key_on(&cluster, 0, &[]);
    assert_eq!(store.get(&key).await.unwrap(), None);
    let slot = cluster.command(&["CLUSTER", "KEYSLOT", &format!(":1:{key}")]);
    let other_id = cluster.nodes[1].command(&["CLUSTER", "MYID"]);
    // node 0 hands the slot to node 1, which goes on naming node 0 as its owner
    assert_eq!(
        cluster.nodes[0].command(&["CLUSTER", "SETSLOT", &slot, "NODE", &other_id]),
        "OK"
    );
    let refused = |node: usize| rejected_calls(&cluster.nodes[node], "get");
    let before = refused(0) + refused(1);

    let started = std::time::Instant::now();
    let err = store.get(&key).await.unwrap_err();
    let took = started.elapsed();
    let sent = refused(0) + refused(1) - before;
    assert!(err.to_string().contains("redirect"), "{err}");
    assert!(sent <= 8, "the GET was sent {sent} times");
    assert!(took < timeout, "took {took:?}");
}

/// A master that stops answering (SIGSTOP) costs the calls for its keys one command timeout,
/// not one each: after a call timed out there, calls for any key of that node fail at once
/// until it answers a ping, while the other masters serve as before; once it is back, its
/// keys are served again (issue 28, finding 12: a request through three layers waited three
/// timeouts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_node_costs_its_keys_one_timeout_not_one_per_call() {
    let cluster = TestCluster::start();
    // no failover while the node is stopped: this is about a stall, not a failover
    cluster.command(&["CONFIG", "SET", "cluster-node-timeout", "60000"]);
    let timeout = Duration::from_millis(500);
    let store = RedisStore::cluster(cluster.seeds())
        .command_timeout(timeout)
        .build()
        .await
        .unwrap();
    let (tasks, calls_each) = (4, 6);
    let mut stalled_keys = Vec::new();
    for _ in 0..tasks * calls_each {
        let key = key_on(&cluster, 0, &stalled_keys);
        stalled_keys.push(key);
    }
    let mut healthy_keys = Vec::new();
    for master in [1, 2] {
        for _ in 0..tasks * calls_each / 2 {
            let key = key_on(&cluster, master, &healthy_keys);
            healthy_keys.push(key);
        }
    }
    for key in stalled_keys.iter().chain(&healthy_keys) {
        assert_eq!(store.get(key).await.unwrap(), None);
    }

    cluster.nodes[0].pause();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(tasks * 2));
    let mut stalled = Vec::new();
    let mut healthy = Vec::new();
    for task in 0..tasks {
        let keys: Vec<String> = stalled_keys[task * calls_each..(task + 1) * calls_each].to_vec();
        let (one, start) = (store.clone(), barrier.clone());
        stalled.push(tokio::spawn(async move {
            start.wait().await;
            let started = std::time::Instant::now();
            let mut waited = 0;
            for key in &keys {
                let err = one.get(key).await.unwrap_err();
                assert_eq!(err.kind(), StoreErrorKind::Timeout, "{err}");
                waited += usize::from(!err.to_string().contains("not sent"));
            }
            (waited, started.elapsed())
        }));
        let keys: Vec<String> = healthy_keys[task * calls_each..(task + 1) * calls_each].to_vec();
        let (one, start) = (store.clone(), barrier.clone());
        healthy.push(tokio::spawn(async move {
            start.wait().await;
            for key in &keys {
                assert_eq!(one.get(key).await.unwrap(), None, "{key}");
            }
        }));
    }
    let mut waited = 0;
    let mut longest = Duration::ZERO;
    for task in stalled {
        let (task_waited, took) = task.await.unwrap();
        waited += task_waited;
        longest = longest.max(took);
    }
    for task in healthy {
        task.await.unwrap();
    }
    cluster.nodes[0].resume();
    // each task's first call may have waited, all at once; none after
    assert!(
        waited <= tasks,
        "{waited} of {} calls waited for the stalled node",
        tasks * calls_each
    );
    assert!(longest < timeout * 3, "a task took {longest:?}");

    let back = crate::support::eventually(timeout * 20, || async {
        store.get(&stalled_keys[0]).await.is_ok()
    })
    .await;
    assert!(back, "the node's keys are not served after it resumed");
    for key in &stalled_keys {
        assert_eq!(store.get(key).await.unwrap(), None, "{key}");
    }
}

/// One slot moving from its master to another, step by step as `redis-cli --cluster
/// reshard` moves it.
struct SlotMigration<'a> {
    cluster: &'a TestCluster,
    source: usize,
    slot: String,
    target_id: String,
    target_port: String,
}

impl<'a> SlotMigration<'a> {
    /// Starts moving the slot of `key` (a full key) to another master: `IMPORTING` on the
    /// target, `MIGRATING` on the source.
    fn begin(cluster: &'a TestCluster, key: &str) -> Self {
        let source = cluster.master_of(key);
        let target = (0..cluster.nodes.len())
            .find(|&i| {
                i != source
                    && cluster
                        .masters()
                        .iter()
                        .any(|m| m.port() == cluster.nodes[i].port())
            })
            .expect("another master");
        Self::begin_to(cluster, key, target)
    }

    /// Starts moving the slot of `key` (a full key) to the master `nodes[target]`.
    fn begin_to(cluster: &'a TestCluster, key: &str, target: usize) -> Self {
        let source = cluster.master_of(key);
        assert_ne!(source, target, "the slot is on the target already");
        let slot = cluster.command(&["CLUSTER", "KEYSLOT", key]);
        let id = |i: usize| cluster.nodes[i].command(&["CLUSTER", "MYID"]);
        let (source_id, target_id) = (id(source), id(target));
        assert_eq!(
            cluster.nodes[target].command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id]),
            "OK"
        );
        assert_eq!(
            cluster.nodes[source].command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id]),
            "OK"
        );
        Self {
            cluster,
            source,
            slot,
            target_id,
            target_port: cluster.nodes[target].port().to_string(),
        }
    }

    /// Moves `key` (a full key of the slot) to the target with `MIGRATE`.
    fn moves(&self, key: &str) {
        assert_eq!(
            self.cluster.nodes[self.source].command(&[
                "MIGRATE",
                "127.0.0.1",
                &self.target_port,
                "",
                "0",
                "5000",
                "KEYS",
                key
            ]),
            "OK"
        );
    }

    /// Ends the migration: every master learns the slot's new owner.
    fn ends(&self) {
        for node in self.cluster.masters() {
            assert_eq!(
                node.command(&["CLUSTER", "SETSLOT", &self.slot, "NODE", &self.target_id]),
                "OK"
            );
        }
    }
}
