//! What the cluster client knows about nodes beyond redis-rs's routing: which slot a call is
//! for, which node serves a slot, nodes that stopped answering, and addresses that the
//! cluster named but cannot be reached.
//!
//! redis-rs routes each command by its key's slot but tells its callers neither the slot nor
//! the node. The store needs both to give a stalled node one timeout rather than one per call,
//! so it reads the slot from the commands a call sends (see [`command_slot`]) and keeps a slot
//! map of its own (`CLUSTER SLOTS`), which only a stall consults.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::{Cmd, Value};

use crate::store::StoreErrorKind;

/// The number of hash slots of a Redis Cluster.
pub(super) const SLOTS: u16 = 16384;

/// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its `{hash tag}` when it has a
/// non-empty one, modulo 16384, as Redis computes it (redis-rs keeps its own to itself).
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let tag = key.iter().position(|&byte| byte == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&byte| byte == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tag.unwrap_or(key)) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc
}

/// The slot of the first command in `sent` that names a key, as redis-rs routes it: the key
/// after `numkeys` for a script, the first argument of a keyed command, none for commands
/// without keys (the store's own `PING`, `INFO`, `CLUSTER`, `SCAN`, a transaction's frame).
pub(super) fn command_slot(sent: &[Cmd]) -> Option<u16> {
    sent.iter().find_map(|cmd| {
        let args: Vec<&[u8]> = cmd
            .args_iter()
            .filter_map(|arg| match arg {
                redis::Arg::Simple(arg) => Some(arg),
                _ => None,
            })
            .collect();
        let name = args.first()?.to_ascii_uppercase();
        let key = match name.as_slice() {
            b"PING" | b"ECHO" | b"INFO" | b"CLUSTER" | b"SCAN" | b"MULTI" | b"EXEC"
            | b"DISCARD" | b"ASKING" | b"READONLY" | b"READWRITE" | b"WAIT" | b"CLIENT"
            | b"SCRIPT" | b"CONFIG" | b"DBSIZE" | b"TIME" | b"ROLE" | b"HELLO" | b"AUTH" => None,
            b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
                let keys: u64 = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
                if keys == 0 { None } else { args.get(3) }
            }
            _ => args.get(1),
        }?;
        Some(key_slot(key))
    })
}

/// Which master serves each slot, by one node's `CLUSTER SLOTS`.
#[derive(Debug)]
pub(super) struct SlotMap {
    /// Per slot, an index into `nodes`; `u16::MAX` for a slot no master serves.
    owners: Vec<u16>,
    /// `host:port` of each master.
    nodes: Vec<String>,
}

impl SlotMap {
    /// The map from a `CLUSTER SLOTS` reply:
    /// `[[start, end, [host, port, id, ...], replicas...], ...]`.
    pub(super) fn from_reply(reply: &Value) -> Option<Self> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut map = Self {
            owners: vec![u16::MAX; usize::from(SLOTS)],
            nodes: Vec::new(),
        };
        for range in ranges {
            let Value::Array(range) = range else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (range.first(), range.get(1), range.get(2))
            else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(host) => String::from_utf8_lossy(host).into_owned(),
                Value::SimpleString(host) => host.clone(),
                _ => return None,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return None;
            };
            let node = format!("{host}:{port}");
            let index = match map.nodes.iter().position(|known| *known == node) {
                Some(index) => index,
                None => {
                    map.nodes.push(node);
                    map.nodes.len() - 1
                }
            };
            let index = u16::try_from(index).ok()?;
            let (start, end) = (u16::try_from(*start).ok()?, u16::try_from(*end).ok()?);
            for slot in start..=end.min(SLOTS - 1) {
                map.owners[usize::from(slot)] = index;
            }
        }
        Some(map)
    }

    /// The master that serves `slot`, and every slot it serves, as ranges.
    fn node_of(&self, slot: u16) -> Option<(&str, Vec<(u16, u16)>)> {
        let owner = *self.owners.get(usize::from(slot))?;
        let node = self.nodes.get(usize::from(owner))?;
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for (slot, &other) in (0..SLOTS).zip(&self.owners) {
            if other != owner {
                continue;
            }
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == slot => *end = slot,
                _ => ranges.push((slot, slot)),
            }
        }
        Some((node, ranges))
    }
}

/// A node that stopped answering: calls for its slots fail at once until a ping answers.
#[derive(Debug)]
struct Stall {
    /// `host:port`, or which slot, while the node is not known.
    node: String,
    slots: Vec<(u16, u16)>,
    /// The slot whose call timed out, which the probe pings through.
    probe_slot: u16,
    /// Whether `slots` are the node's own from a slot map, rather than the one slot.
    identified: bool,
}

impl Stall {
    fn covers(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(low, high)| (low..=high).contains(&slot))
    }
}

/// A node address that the cluster named and that could not be reached.
#[derive(Debug)]
struct Unreachable {
    at: Instant,
    kind: StoreErrorKind,
    reason: String,
}

/// The cluster's nodes as the store has found them: shared by the calls and by the tasks
/// that probe stalled nodes.
#[derive(Debug, Default)]
pub(super) struct Nodes {
    map: RwLock<Option<Arc<SlotMap>>>,
    /// Set once a first slot map was asked for.
    pub(super) map_asked: AtomicBool,
    stalls: RwLock<Vec<Stall>>,
    any_stalled: AtomicBool,
    /// Woken when a stall's node becomes known, or the stall ends.
    pub(super) settled: tokio::sync::Notify,
    unreachable: Mutex<HashMap<String, Unreachable>>,
}

impl Nodes {
    pub(super) fn set_map(&self, map: SlotMap) {
        if let Ok(mut current) = self.map.write() {
            *current = Some(Arc::new(map));
        }
    }

    /// Whether any node is stalled now: the one check on every call's path.
    pub(super) fn any_stalled(&self) -> bool {
        self.any_stalled.load(Ordering::Relaxed)
    }

    /// A call for `slot` timed out: the node that serves it (by the slot map, when there is
    /// one; the slot alone until then) is stalled. Returns the slot a new probe pings
    /// through, or `None` when that node was known stalled already.
    pub(super) fn stall(&self, slot: u16) -> Option<u16> {
        let map = self.map.read().ok().and_then(|map| map.clone());
        let mut stalls = self.stalls.write().ok()?;
        if stalls.iter().any(|stall| stall.covers(slot)) {
            return None;
        }
        let stall = match map.as_deref().and_then(|map| map.node_of(slot)) {
            Some((node, slots)) => Stall {
                node: node.to_owned(),
                slots,
                probe_slot: slot,
                identified: true,
            },
            None => Stall {
                node: format!("serving slot {slot}"),
                slots: vec![(slot, slot)],
                probe_slot: slot,
                identified: false,
            },
        };
        stalls.push(stall);
        self.any_stalled.store(true, Ordering::Relaxed);
        Some(slot)
    }

    /// The stall probed through `probe_slot` takes the node and slots that `map` gives that
    /// slot (the stall was marked from an older map, or from the slot alone). Returns `false`
    /// when another stall covers that node already, which ends this one (its probe too).
    pub(super) fn identify(&self, probe_slot: u16, map: Option<&SlotMap>) -> bool {
        let keep = {
            let Ok(mut stalls) = self.stalls.write() else {
                return false;
            };
            let found = map.and_then(|map| map.node_of(probe_slot));
            let duplicate = found.as_ref().is_some_and(|(node, _)| {
                stalls
                    .iter()
                    .any(|stall| stall.probe_slot != probe_slot && stall.node == *node)
            });
            if duplicate {
                stalls.retain(|stall| stall.probe_slot != probe_slot);
                false
            } else if let Some(stall) = stalls
                .iter_mut()
                .find(|stall| stall.probe_slot == probe_slot)
            {
                if let Some((node, slots)) = found {
                    stall.node = node.to_owned();
                    stall.slots = slots;
                }
                // without a map the stall stays the one slot: waiting for a node that cannot
                // be named would hold up calls to every node
                stall.identified = true;
                true
            } else {
                false
            }
        };
        self.settled.notify_waiters();
        keep
    }

    /// The stall probed through `probe_slot` is over: its node answered.
    pub(super) fn recover(&self, probe_slot: u16) {
        if let Ok(mut stalls) = self.stalls.write() {
            stalls.retain(|stall| stall.probe_slot != probe_slot);
            self.any_stalled
                .store(!stalls.is_empty(), Ordering::Relaxed);
        }
        self.settled.notify_waiters();
    }

    /// The stalled node that serves `slot`, if any.
    pub(super) fn stalled_node(&self, slot: u16) -> Option<String> {
        let stalls = self.stalls.read().ok()?;
        stalls
            .iter()
            .find(|stall| stall.covers(slot))
            .map(|stall| stall.node.clone())
    }

    /// Whether a stall's node is still being looked up (its slots are the one slot so far).
    pub(super) fn identifying(&self) -> bool {
        self.stalls
            .read()
            .is_ok_and(|stalls| stalls.iter().any(|stall| !stall.identified))
    }

    /// Records that `node` (`host:port`) could not be reached.
    pub(super) fn unreachable(&self, node: &str, kind: StoreErrorKind, reason: String) {
        if let Ok(mut unreachable) = self.unreachable.lock() {
            unreachable.insert(
                node.to_owned(),
                Unreachable {
                    at: Instant::now(),
                    kind,
                    reason,
                },
            );
        }
    }

    /// How `node` failed to be reached within the last `window`, if it did.
    pub(super) fn recently_unreachable(
        &self,
        node: &str,
        window: Duration,
    ) -> Option<(StoreErrorKind, String)> {
        let mut unreachable = self.unreachable.lock().ok()?;
        // the table holds what the cluster named, a few addresses; expired ones go here
        unreachable.retain(|_, found| found.at.elapsed() < window);
        let found = unreachable.get(node)?;
        Some((
            found.kind,
            format!(
                "{} ({} ms ago)",
                found.reason,
                found.at.elapsed().as_millis()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;
    use redis::cluster_routing::{Route, SlotAddr};

    use super::{Nodes, SlotMap, command_slot, key_slot};

    #[test]
    fn key_slots_are_those_redis_rs_routes_by() {
        let keys: [&[u8]; 12] = [
            b"",
            b"foo",
            b":1:cache:{http://shop.example/a/0}:e",
            b"{user1000}.following",
            b"{}tagless",
            b"{a",
            b"a}{b}",
            b"x{}{y}",
            b"{{nested}}",
            b"123456789",
            "ünïcode".as_bytes(),
            &[0xff, 0x00, b'{', 0x01, b'}'],
        ];
        for key in keys {
            assert_eq!(
                Route::new(key_slot(key), SlotAddr::Master),
                Route::with_key(key, SlotAddr::Master),
                "{key:?}"
            );
        }
        // the CRC16/XMODEM check value
        assert_eq!(super::crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn a_calls_slot_is_its_first_keys() {
        let slot = |cmds: &[redis::Cmd]| command_slot(cmds);
        assert_eq!(
            slot(&[redis::cmd("GET").arg("k").clone()]),
            Some(key_slot(b"k"))
        );
        let mut script = redis::cmd("EVALSHA");
        script.arg("abc").arg(2).arg("first").arg("second").arg(1);
        assert_eq!(slot(&[script]), Some(key_slot(b"first")));
        assert_eq!(
            slot(&[redis::cmd("EVAL").arg("return 1").arg(0).clone()]),
            None
        );
        let transaction = [
            redis::cmd("MULTI"),
            redis::cmd("SET").arg("t").arg(1).clone(),
            redis::cmd("EXEC"),
        ];
        assert_eq!(slot(&transaction), Some(key_slot(b"t")));
        assert_eq!(slot(&[redis::cmd("INFO").arg("replication").clone()]), None);
    }

    fn slots_reply() -> Value {
        let node = |port: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |start: i64, end: i64, port: i64| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                node(port),
                node(9),
            ])
        };
        Value::Array(vec![
            range(0, 99, 7000),
            range(100, 16383, 7001),
            range(200, 200, 7000),
        ])
    }

    #[test]
    fn a_stall_covers_its_nodes_slots_once_the_map_is_known() {
        let map = SlotMap::from_reply(&slots_reply()).unwrap();
        let nodes = Nodes::default();
        // no map yet: the slot alone, not yet identified
        assert_eq!(nodes.stall(50), Some(50));
        assert!(nodes.identifying());
        assert_eq!(nodes.stalled_node(51), None);
        assert!(nodes.identify(50, Some(&map)));
        assert!(!nodes.identifying());
        assert_eq!(nodes.stalled_node(200).as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(nodes.stalled_node(150), None);
        // a second timeout on the same node is the same stall
        assert_eq!(nodes.stall(0), None);
        nodes.recover(50);
        assert!(!nodes.any_stalled());

        nodes.set_map(map);
        assert_eq!(nodes.stall(300), Some(300));
        assert_eq!(nodes.stalled_node(16383).as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(nodes.stalled_node(99), None);
    }

    #[test]
    fn two_stalls_found_to_be_one_node_become_one() {
        let map = SlotMap::from_reply(&slots_reply()).unwrap();
        let nodes = Nodes::default();
        assert_eq!(nodes.stall(1), Some(1));
        assert_eq!(nodes.stall(2), Some(2));
        assert!(nodes.identify(1, Some(&map)));
        assert!(!nodes.identify(2, Some(&map)), "the second probe ends");
        nodes.recover(1);
        assert!(!nodes.any_stalled());
    }
}
