//! Operations over every master: `SCAN` runs node by node, since a cluster has no
//! cluster-wide keyspace to iterate, and a sweep checks that no slot moved past it.
//!
//! A key leaves a master only through a slot migration: while the slot is `MIGRATING` on the
//! master and `IMPORTING` on another, `MIGRATE` moves its keys, and `CLUSTER SETSLOT .. NODE`
//! ends it. A sweep that reads every master's own account of itself (its `myself` line of
//! `CLUSTER NODES`: slots, config epoch, migration markers) before and after scanning, and
//! finds them unchanged, saw every migration that could move a key during the scans:
//!
//! - one that began and ended in between changed the slots of the master that gave the slot
//!   away; one that moved a slot away and back bumped the config epoch of a master that took it
//!   (Redis bumps the epoch of a node that takes over a slot it imported, unless it already
//!   has the highest), so the same slots are not the same account;
//! - one under way before and after is in the markers: the sweep scans the migrating master
//!   before the importing one, so a key moving between them is found on one or the other
//!   (keys only move towards the importing master).
//!
//! A sweep that sees a change sweeps again, with the new accounts, up to [`SWEEP_PASSES`]
//! times. The masters it scans are those the cluster lists; one it does not know of (a node
//! the listing node has not heard of yet) shows as slots the listing assigns that no master
//! scanned claims.

use std::collections::{HashMap, HashSet};

use redis::RedisError;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};

use super::classify::Retry;
use super::cluster::cluster_conn;
use super::handle::RedisStore;
use crate::store::{StoreError, StoreErrorKind};

/// How many times a pattern deletion sweeps the masters before it gives up on a cluster
/// whose slots keep moving. One pass is enough while no slot moves; a resharding that moved
/// slots during three passes in a row is one that moves slots all along, and the sweep says
/// so rather than guess.
const SWEEP_PASSES: usize = 3;

/// The number of hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// A node as the cluster listing (`CLUSTER NODES`) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    host: String,
    port: u16,
    master: bool,
    /// `fail`, `handshake` or `noaddr`: a node that cannot serve.
    failed: bool,
    /// Set when this is the node's own line (`myself`).
    myself: bool,
    id: String,
    config_epoch: u64,
    slots: Vec<(u16, u16)>,
    /// Slots it hands over, and the id of the node each goes to (`[slot->-id]`, shown only
    /// in the migrating node's own line).
    migrating: Vec<(u16, String)>,
    /// Slots it takes over, and the id of the node each comes from (`[slot-<-id]`).
    importing: Vec<(u16, String)>,
}

/// One line of `CLUSTER NODES`:
/// `id ip:port@cport[,hostname] flags master-id ping pong config-epoch link slot...`.
fn parse_line(line: &str) -> Option<Listed> {
    let fields: Vec<&str> = line.split(' ').collect();
    if fields.len() < 8 {
        return None;
    }
    let address = fields[1].split(['@', ',']).next()?;
    let (host, port) = address.rsplit_once(':')?;
    let flags: Vec<&str> = fields[2].split(',').collect();
    let mut listed = Listed {
        host: host.to_owned(),
        port: port.parse().ok()?,
        master: flags.contains(&"master"),
        failed: flags
            .iter()
            .any(|flag| matches!(*flag, "fail" | "handshake" | "noaddr")),
        myself: flags.contains(&"myself"),
        id: fields[0].to_owned(),
        config_epoch: fields[6].parse().ok()?,
        slots: Vec::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
    };
    for field in &fields[8..] {
        if let Some(marker) = field.strip_prefix('[').and_then(|f| f.strip_suffix(']')) {
            if let Some((slot, target)) = marker.split_once("->-") {
                listed
                    .migrating
                    .push((slot.parse().ok()?, target.to_owned()));
            } else if let Some((slot, source)) = marker.split_once("-<-") {
                listed
                    .importing
                    .push((slot.parse().ok()?, source.to_owned()));
            }
            continue;
        }
        let (low, high) = field.split_once('-').unwrap_or((field, field));
        listed.slots.push((low.parse().ok()?, high.parse().ok()?));
    }
    Some(listed)
}

/// The masters that `CLUSTER NODES` lists, failed ones left out. One only suspected by the
/// listing node (`fail?`) is kept: it may serve, and its keys must be swept if it does.
fn masters(nodes: &str) -> Vec<Listed> {
    nodes
        .lines()
        .filter_map(parse_line)
        .filter(|node| node.master && !node.failed)
        .collect()
}

/// The slots that `CLUSTER NODES` says some master serves, failed or not.
fn assigned(nodes: &str) -> Vec<bool> {
    let mut assigned = vec![false; SLOTS];
    for node in nodes
        .lines()
        .filter_map(parse_line)
        .filter(|node| node.master)
    {
        for &(low, high) in &node.slots {
            for slot in low..=high.min(SLOTS as u16 - 1) {
                assigned[usize::from(slot)] = true;
            }
        }
    }
    assigned
}

/// The order to scan `masters` (their own accounts) in: a master migrating a slot before the
/// master importing it, so that a key moving between them is found on one or the other; and
/// whether that order exists and covers every node a migration names. Slots migrating both
/// ways between masters, or to a node not among them, leave it `false`.
fn sweep_order(masters: &[Listed]) -> (Vec<usize>, bool) {
    let index: HashMap<&str, usize> = masters
        .iter()
        .enumerate()
        .map(|(i, master)| (master.id.as_str(), i))
        .collect();
    let mut complete = true;
    // (from, to): `from` is scanned before `to`
    let mut edges: HashSet<(usize, usize)> = HashSet::new();
    for (i, master) in masters.iter().enumerate() {
        for (_, target) in &master.migrating {
            if let Some(&to) = index.get(target.as_str()) {
                edges.insert((i, to));
            } else {
                complete = false;
            }
        }
        for (_, source) in &master.importing {
            if let Some(&from) = index.get(source.as_str()) {
                edges.insert((from, i));
            } else {
                complete = false;
            }
        }
    }
    let mut order = Vec::with_capacity(masters.len());
    let mut left: Vec<usize> = (0..masters.len()).collect();
    while !left.is_empty() {
        let ready = left.iter().position(|&to| {
            !edges
                .iter()
                .any(|&(from, t)| t == to && left.contains(&from))
        });
        // a cycle: scan the rest as listed, and sweep again
        let next = ready.unwrap_or_else(|| {
            complete = false;
            0
        });
        order.push(left.remove(next));
    }
    (order, complete)
}

/// Whether every slot that the listing assigns is one that a master scanned claims: a master
/// missing from the scan (one the listing node has not heard of, a failed one) leaves its
/// slots unclaimed.
fn claimed(assigned: &[bool], masters: &[Listed]) -> bool {
    let mut claimed = vec![false; SLOTS];
    for master in masters.iter().filter(|master| master.master) {
        for &(low, high) in &master.slots {
            for slot in low..=high.min(SLOTS as u16 - 1) {
                claimed[usize::from(slot)] = true;
            }
        }
    }
    assigned
        .iter()
        .zip(&claimed)
        .all(|(&assigned, &claimed)| !assigned || claimed)
}

impl RedisStore {
    /// [`Backend::delete_matching`](crate::store::Backend::delete_matching) on every master,
    /// swept again while the slots move (see the module docs).
    pub(in crate::store) async fn cluster_delete_matching(
        &self,
        pattern: &str,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let mut moving = String::new();
        for pass in 1..=SWEEP_PASSES {
            let listing = self.cluster_nodes(None).await?;
            let listed = masters(&listing);
            let before = self.own_accounts(&listed).await?;
            let (order, ordered) = sweep_order(&before);
            // keys of a migrating slot live on two nodes: deleting several in one command
            // meets TRYAGAIN until the migration ends
            let migrating: HashSet<Slot> = before
                .iter()
                .flat_map(|master| master.migrating.iter().chain(&master.importing))
                .filter_map(|(slot, _)| Slot::new(*slot))
                .collect();
            for i in order {
                deleted += self
                    .sweep_master(&listed[i].host, listed[i].port, pattern, &migrating)
                    .await?;
            }
            let after = self.own_accounts(&listed).await?;
            let covered = claimed(&assigned(&listing), &before);
            if ordered && covered && before == after {
                return Ok(deleted);
            }
            moving = if !covered {
                "some slots are served by no master swept".to_owned()
            } else if !ordered {
                "slots are migrating to a node not swept, or both ways".to_owned()
            } else {
                "slots moved during the sweep".to_owned()
            };
            tracing::debug!(pass, reason = %moving, "Redis Cluster pattern deletion sweeps again");
        }
        Err(StoreError::new(
            StoreErrorKind::Connection,
            format!(
                "Redis Cluster pattern deletion swept every master {SWEEP_PASSES} times and \
                 deleted {deleted} keys, but {moving} each time: keys matching the pattern may \
                 remain; call it again once the resharding or failover is over"
            ),
        ))
    }

    /// Makes the cluster client open its connection to `master` if it has none yet: a command
    /// routed by address goes only over a connection the client holds (else it is refused
    /// with `ClusterConnectionNotFound` until the timeout), while one routed by slot opens
    /// it. A `PING` by one of the master's slots. A master that does not answer it fails the
    /// sweep now, within one command timeout, rather than once more on the next call.
    async fn open_connection_to(&self, master: &Listed) -> Result<(), StoreError> {
        let Some(&(slot, _)) = master.slots.first() else {
            return Ok(());
        };
        self.run("PING", Retry::OnDroppedConnection, move |conn| async move {
            let reply = cluster_conn(conn)?
                .route_command(
                    redis::cmd("PING"),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                        slot,
                        SlotAddr::Master,
                    ))),
                )
                .await?;
            redis::from_redis_value::<String>(reply).map_err(RedisError::from)
        })
        .await
        .map(drop)
    }

    /// `CLUSTER NODES`, from `node` (`host`, `port`) or from any node.
    async fn cluster_nodes(&self, node: Option<(&str, u16)>) -> Result<String, StoreError> {
        self.run(
            "CLUSTER NODES",
            Retry::OnDroppedConnection,
            move |conn| async move {
                let mut nodes = redis::cmd("CLUSTER");
                nodes.arg("NODES");
                let routing = match node {
                    Some((host, port)) => SingleNodeRoutingInfo::ByAddress {
                        host: host.to_owned(),
                        port,
                    },
                    None => SingleNodeRoutingInfo::Random,
                };
                let reply = cluster_conn(conn)?
                    .route_command(nodes, RoutingInfo::SingleNode(routing))
                    .await?;
                redis::from_redis_value(reply).map_err(RedisError::from)
            },
        )
        .await
    }

    /// Each of `masters`' own account of itself, in the same order.
    async fn own_accounts(&self, masters: &[Listed]) -> Result<Vec<Listed>, StoreError> {
        let mut accounts = Vec::with_capacity(masters.len());
        for master in masters {
            if let Some(links) = self.cluster_links() {
                links.reach_listed(&master.host, master.port).await?;
            }
            self.open_connection_to(master).await?;
            let nodes = self
                .cluster_nodes(Some((&master.host, master.port)))
                .await?;
            let own = nodes
                .lines()
                .filter_map(parse_line)
                .find(|node| node.myself)
                .ok_or_else(|| {
                    StoreError::new(
                        StoreErrorKind::Server,
                        format!(
                            "Redis Cluster node {}:{} listed no line of its own in CLUSTER NODES",
                            master.host, master.port
                        ),
                    )
                })?;
            accounts.push(own);
        }
        Ok(accounts)
    }

    /// Deletes the keys matching `pattern` on the master at `host`:`port`; keys of the
    /// `migrating` slots one at a time.
    async fn sweep_master(
        &self,
        host: &str,
        port: u16,
        pattern: &str,
        migrating: &HashSet<Slot>,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run("SCAN", Retry::OnDroppedConnection, move |conn| async move {
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000);
                    let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.to_owned(),
                        port,
                    });
                    let reply = cluster_conn(conn)?.route_command(scan, node).await?;
                    redis::from_redis_value(reply).map_err(RedisError::from)
                })
                .await?;
            deleted += self.cluster_unlink(keys, migrating).await?;
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Unlinks `keys`, one `UNLINK` per hash slot (a cluster refuses one across slots, and the
    /// store retries one slot's command as a whole), one per key in a `migrating` slot.
    async fn cluster_unlink(
        &self,
        keys: Vec<String>,
        migrating: &HashSet<Slot>,
    ) -> Result<u64, StoreError> {
        let mut slots: HashMap<Slot, Vec<String>> = HashMap::new();
        let mut alone = Vec::new();
        for key in keys {
            let slot = Slot::for_key(&key);
            if migrating.contains(&slot) {
                alone.push(vec![key]);
            } else {
                slots.entry(slot).or_default().push(key);
            }
        }
        let mut unlinked = 0;
        for same_slot in slots.values().chain(&alone) {
            let removed: u64 = self
                .call(
                    "UNLINK",
                    Retry::OnDroppedConnection,
                    redis::cmd("UNLINK").arg(same_slot),
                )
                .await?;
            unlinked += removed;
        }
        Ok(unlinked)
    }
}

#[cfg(test)]
mod tests {
    use super::{Listed, assigned, claimed, masters, parse_line, sweep_order};

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,,tls-port=0 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 1426238316232 0 3 disconnected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001,host.example myself,master - 0 0 1 connected 0-5460
";

    #[test]
    fn masters_are_the_serving_masters_of_cluster_nodes() {
        let listed: Vec<(String, u16)> = masters(NODES)
            .into_iter()
            .map(|node| (node.host, node.port))
            .collect();
        assert_eq!(
            listed,
            [
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30001)
            ]
        );
    }

    #[test]
    fn a_line_tells_slots_epoch_and_migrations() {
        let line = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 7 connected 0-5460 7000 [7001->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1] [9000-<-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]";
        let node = parse_line(line).unwrap();
        assert!(node.myself && node.master && !node.failed);
        assert_eq!(node.config_epoch, 7);
        assert_eq!(node.slots, [(0, 5460), (7000, 7000)]);
        assert_eq!(
            node.migrating,
            [(7001, "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1".to_owned())]
        );
        assert_eq!(
            node.importing,
            [(9000, "292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f".to_owned())]
        );
    }

    fn master(id: &str, slots: &[(u16, u16)]) -> Listed {
        Listed {
            host: "127.0.0.1".to_owned(),
            port: 7000,
            master: true,
            failed: false,
            myself: true,
            id: id.to_owned(),
            config_epoch: 1,
            slots: slots.to_vec(),
            migrating: Vec::new(),
            importing: Vec::new(),
        }
    }

    #[test]
    fn a_migrating_master_is_swept_before_the_importing_one() {
        let mut masters = vec![master("a", &[]), master("b", &[]), master("c", &[])];
        // c hands a slot to a; a takes it from c
        masters[2].migrating.push((1, "a".to_owned()));
        masters[0].importing.push((1, "c".to_owned()));
        let (order, complete) = sweep_order(&masters);
        assert!(complete);
        let place = |i: usize| order.iter().position(|&o| o == i).unwrap();
        assert!(place(2) < place(0), "{order:?}");
        assert_eq!(order.len(), 3);
    }

    #[test]
    fn migrations_both_ways_or_to_a_node_not_swept_are_incomplete() {
        let mut both = vec![master("a", &[]), master("b", &[])];
        both[0].migrating.push((1, "b".to_owned()));
        both[1].migrating.push((2, "a".to_owned()));
        let (order, complete) = sweep_order(&both);
        assert!(!complete);
        assert_eq!(order.len(), 2);

        let mut elsewhere = vec![master("a", &[])];
        elsewhere[0].migrating.push((1, "new".to_owned()));
        assert!(!sweep_order(&elsewhere).1);
    }

    #[test]
    fn slots_assigned_to_a_master_not_swept_are_unclaimed() {
        let assigned = assigned(NODES);
        let swept = [master("a", &[(0, 5460)]), master("b", &[(5461, 10922)])];
        // the failed master's slots
        assert!(!claimed(&assigned, &swept));
        let all = [
            master("a", &[(0, 5460)]),
            master("b", &[(5461, 10922)]),
            master("c", &[(10923, 16383)]),
        ];
        assert!(claimed(&assigned, &all));
    }
}
