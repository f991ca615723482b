//! Cluster-wide sweeps (`invalidate_matching` and the other pattern deletions) when the
//! cluster is not at rest (the adversary's review of issue 28, finding 12): a slot stuck
//! half-migrated, a migration that runs during the sweep, a master that stalls, dies or
//! announces an address nobody can reach. A sweep either removes every matching key or fails,
//! within one timeout.

use std::time::{Duration, Instant};

use tower_redis_http::store::RedisStore;

use crate::durability::{COMMAND_TIMEOUT, cluster_store};
use crate::support::{RawRedis, TestCluster, eventually, unused_port};

fn invalidator(store: &RedisStore) -> tower_redis_http::cache::CacheInvalidator {
    tower_redis_http::cache::ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(60))
        .build()
        .unwrap()
        .invalidator()
}

fn page(n: usize) -> String {
    format!(":1:cache:{{http://shop.example/a/{n}}}:e")
}

fn remaining(cluster: &TestCluster) -> Vec<String> {
    cluster.nodes[..3]
        .iter()
        .flat_map(|node| {
            node.command(&["KEYS", "*shop.example/a/*"])
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A slot left half-migrated (a resharding that crashed): keys on both sides. The sweep
/// must delete all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_over_a_stuck_migration_deletes_every_key() {
    let cluster = TestCluster::start();
    let store = cluster_store(&cluster).await;
    // many pages in one slot: same hash tag
    let tag_keys: Vec<String> = (0..50)
        .map(|n| format!(":1:cache:{{http://shop.example/a/tag}}:{n}"))
        .collect();
    for k in &tag_keys {
        assert_eq!(cluster.command(&["SET", k, "stale"]), "OK");
    }
    for n in 0..30 {
        assert_eq!(cluster.command(&["SET", &page(n), "stale"]), "OK");
    }
    let source = cluster.master_of(&tag_keys[0]);
    let target = (0..3).find(|&i| i != source).unwrap();
    let slot = cluster.command(&["CLUSTER", "KEYSLOT", &tag_keys[0]]);
    let id = |i: usize| cluster.nodes[i].command(&["CLUSTER", "MYID"]);
    cluster.nodes[target].command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &id(source)]);
    cluster.nodes[source].command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &id(target)]);
    let port = cluster.nodes[target].port().to_string();
    for k in &tag_keys[..25] {
        assert_eq!(
            cluster.nodes[source].command(&[
                "MIGRATE",
                "127.0.0.1",
                &port,
                "",
                "0",
                "5000",
                "KEYS",
                k
            ]),
            "OK"
        );
    }
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        invalidator(&store).invalidate_matching("http://shop.example/a/*"),
    )
    .await
    .expect("bounded");
    let left = remaining(&cluster);
    eprintln!("stuck migration sweep: {r:?}, left {}", left.len());
    assert!(r.is_ok(), "{r:?}");
    assert!(left.is_empty(), "left: {left:?}");
}

/// While the sweep runs (10k pages over every slot, so it takes a while), a migration of a
/// slot holding 300 pages begins, moves every key (MIGRATE one by one: the ASK window) and
/// ends (SETSLOT NODE), possibly from a master not yet swept to one already swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_during_a_live_migration_misses_nothing() {
    let cluster = TestCluster::start();
    let store = cluster_store(&cluster).await;
    for round in 0..2u64 {
        let tag_keys: Vec<String> = (0..300)
            .map(|n| format!(":1:cache:{{http://shop.example/a/r{round}}}:{n}"))
            .collect();
        let mut all: Vec<String> = tag_keys.clone();
        all.extend((0..10_000).map(|n| format!(":1:cache:{{http://shop.example/a/{n}}}:e")));
        let owners = slot_owners(&cluster);
        // write directly on each key's master through redis-cli pipes
        for node in 0..3 {
            let port = cluster.nodes[node].port();
            let mut input = String::new();
            for key in &all {
                if owners[usize::from(key_slot(key))] == node {
                    input.push_str(&format!("SET \"{key}\" stale\n"));
                }
            }
            pipe_to(port, &input);
        }
        let before = remaining(&cluster).len();
        let source = cluster.master_of(&tag_keys[0]);
        let target = (source + 1 + round as usize % 2) % 3;
        let slot = cluster.command(&["CLUSTER", "KEYSLOT", &tag_keys[0]]);
        let id = |i: usize| cluster.nodes[i].command(&["CLUSTER", "MYID"]);
        let (source_id, target_id) = (id(source), id(target));
        let ports: Vec<u16> = cluster.nodes[..3].iter().map(|n| n.port()).collect();
        let delay = Duration::from_millis(50 * round);
        let mover = std::thread::spawn({
            let tag_keys = tag_keys.clone();
            let slot = slot.clone();
            move || {
                std::thread::sleep(delay);
                let (src, dst) = (ports[source], ports[target]);
                pipe_to(
                    dst,
                    &format!("CLUSTER SETSLOT {slot} IMPORTING {source_id}\n"),
                );
                pipe_to(
                    src,
                    &format!("CLUSTER SETSLOT {slot} MIGRATING {target_id}\n"),
                );
                let mut input = String::new();
                for k in &tag_keys {
                    input.push_str(&format!("MIGRATE 127.0.0.1 {dst} \"{k}\" 0 5000\n"));
                }
                pipe_to(src, &input);
                for p in [dst, src].into_iter().chain(ports.iter().copied()) {
                    pipe_to(p, &format!("CLUSTER SETSLOT {slot} NODE {target_id}\n"));
                }
            }
        });
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(40),
            invalidator(&store).invalidate_matching("http://shop.example/a/*"),
        )
        .await
        .expect("bounded");
        let took = started.elapsed();
        mover.join().unwrap();
        let left = remaining(&cluster);
        eprintln!(
            "live migration round {round} ({source}->{target}): {r:?} in {took:?}, keys before {before}, left {}",
            left.len()
        );
        if r.is_ok() {
            assert!(
                left.is_empty(),
                "success but left {} keys: {:?}",
                left.len(),
                &left[..left.len().min(5)]
            );
        }
        assert!(cluster.wait_until_serving(Duration::from_secs(10)));
        // clean up for the next round
        let _ = tokio::time::timeout(
            Duration::from_secs(40),
            invalidator(&store).invalidate_matching("http://shop.example/a/*"),
        )
        .await;
    }
}

/// Which of nodes 0..3 serves each slot, by each master's own account.
fn slot_owners(cluster: &TestCluster) -> Vec<usize> {
    let mut owners = vec![usize::MAX; 16384];
    for (i, node) in cluster.nodes[..3].iter().enumerate() {
        let nodes = node.command(&["CLUSTER", "NODES"]);
        let own = nodes.lines().find(|l| l.contains("myself")).unwrap();
        if !own.contains("master") {
            continue;
        }
        for field in own.split(' ').skip(8) {
            if field.starts_with('[') {
                continue;
            }
            let (lo, hi) = field.split_once('-').unwrap_or((field, field));
            owners[lo.parse::<usize>().unwrap()..=hi.parse::<usize>().unwrap()].fill(i);
        }
    }
    owners
}

fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

fn pipe_to(port: u16, input: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait().unwrap();
}

/// One master stalled (SIGSTOP) during an invalidation: an error, within about one command
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_with_a_stalled_master_fails_within_one_timeout() {
    let cluster = TestCluster::start();
    let store = cluster_store(&cluster).await;
    for n in 0..30 {
        cluster.command(&["SET", &page(n), "stale"]);
    }
    let inv = invalidator(&store);
    inv.invalidate_matching("http://shop.example/a/*")
        .await
        .unwrap();
    for n in 0..30 {
        cluster.command(&["SET", &page(n), "stale"]);
    }
    let mut out = Vec::new();
    cluster.nodes[1].pause();
    for _ in 0..2 {
        let started = Instant::now();
        let r = tokio::time::timeout(
            COMMAND_TIMEOUT * 8,
            inv.invalidate_matching("http://shop.example/a/*"),
        )
        .await;
        out.push((format!("{r:?}"), started.elapsed()));
    }
    cluster.nodes[1].resume();
    eprintln!("sweeps with master 1 stalled: {out:#?}");
    for (r, took) in &out {
        assert!(r.starts_with("Ok(Err"), "not an error: {r}");
        assert!(
            *took < COMMAND_TIMEOUT + COMMAND_TIMEOUT / 2,
            "a sweep with one stalled master took {took:?} (timeout {COMMAND_TIMEOUT:?})"
        );
    }
}

/// A master that announces an address nobody listens on: the sweep fails at once, naming it
/// (before: a full command timeout each time, `ClusterConnectionNotFound`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_with_an_unreachable_announced_master_fails_at_once() {
    let cluster = TestCluster::start();
    let store = cluster_store(&cluster).await;
    for n in 0..30 {
        cluster.command(&["SET", &page(n), "stale"]);
    }
    let dead = unused_port();
    cluster.announce_port(1, dead);
    let inv = invalidator(&store);
    let mut out = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let r = tokio::time::timeout(
            COMMAND_TIMEOUT * 8,
            inv.invalidate_matching("http://shop.example/a/*"),
        )
        .await;
        out.push((format!("{r:?}"), started.elapsed()));
    }
    eprintln!("sweeps with master 1 announcing :{dead}: {out:#?}");
    for (r, took) in &out {
        assert!(r.starts_with("Ok(Err"), "not an error: {r}");
        // README: "fails the calls sent there at once, with an error that names the address
        // and those settings", and remembers it for the connect timeout
        assert!(
            *took < COMMAND_TIMEOUT / 2,
            "an unreachable announced master cost {took:?}: {r}"
        );
    }
}

/// A master killed (no failover yet), then its replica promoted: errors while down, a
/// complete sweep once promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_fails_while_a_master_is_dead_and_completes_after_the_failover() {
    let mut cluster = TestCluster::start();
    let store = cluster_store(&cluster).await;
    for n in 0..60 {
        cluster.command(&["SET", &page(n), "stale"]);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            cluster.nodes[1].replicas_caught_up()
        })
        .await
    );
    cluster.nodes[1].kill();
    let inv = invalidator(&store);
    let started = Instant::now();
    let r = tokio::time::timeout(
        COMMAND_TIMEOUT * 8,
        inv.invalidate_matching("http://shop.example/a/*"),
    )
    .await;
    eprintln!("sweep right after a kill: {r:?} in {:?}", started.elapsed());
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
    // wait for the failover
    assert!(cluster.wait_until_serving(Duration::from_secs(20)));
    let ok = eventually(Duration::from_secs(20), || async {
        inv.invalidate_matching("http://shop.example/a/*")
            .await
            .is_ok()
    })
    .await;
    let left = cluster
        .masters()
        .iter()
        .map(|m| m.command(&["KEYS", "*shop.example/a/*"]))
        .collect::<Vec<_>>()
        .concat();
    eprintln!("after failover: ok={ok}, left on masters {left:?}");
    assert!(left.is_empty());
    assert!(ok);
    // replicas may still hold them briefly: check masters only
    let _ = &mut cluster;
}
