//! [`RedisStore`] on a Redis Cluster: the client, how a call survives a failover, and the
//! operations that touch keys in more than one hash slot.
//!
//! # What holds on a cluster
//!
//! Every operation on one key, and every script, runs on the node of its key's slot, atomic as
//! on one server. The cache keeps an entry, its Vary list, its lock and its URL's index under
//! one `{hash tag}`, so its scripts stay single steps. Three operations cannot, since their
//! keys live in other slots by design, and run as several steps instead:
//!
//! - **Token indexes** (`index_add`, `index_members`, `index_delete_all`): a user's index and
//!   the token keys it lists live in different slots (a token is looked up by itself alone).
//!   A token is stored before it is indexed and an index only drops members whose keys are
//!   gone, so no live token is ever missing from its user's index; `index_delete_all` deletes
//!   the members it read, then removes exactly those from the index, so a token issued while
//!   it runs stays listed (and revocable) rather than escaping.
//! - **`bump_version`** moves a value between two versions of a key, two slots: `DUMP`,
//!   `RESTORE`, `DEL`, as Django's own `incr_version` does in three steps; of concurrent moves
//!   one reports the move. A write to the old version in between is lost, as in Django.
//! - **`set_many`** is atomic per hash slot: one `MULTI` per slot, all sent at once.
//!
//! **Pattern deletion** (the cache's `invalidate_matching`) runs `SCAN` master by master: a
//! cluster has no keyspace-wide cursor. A slot that moves while it runs can carry keys from a
//! master not yet swept to one already swept. So a sweep reads every master's own account of
//! itself (its slots, config epoch and migration markers) before and after, sweeps a master
//! that migrates a slot before the one that imports it, and sweeps again when the accounts
//! changed, when a master it did not sweep serves slots (one failed, or one the listing node
//! had not heard of), or when slots migrate to a node it did not sweep; at most three passes,
//! each command within the command timeout. A cluster whose slots still move after the third
//! fails the call with [`StoreErrorKind::Connection`](super::StoreErrorKind::Connection), whose
//! message says how many keys were deleted and that matching keys may remain: never a success
//! that left keys behind. See `sweep.rs` for why an unchanged account means no key slipped past.
//!
//! # Failover
//!
//! redis-rs re-sends a command whose connection dropped, which would count a rate-limit hit or
//! take a flag twice. The store turns the client's own retries off and retries itself, by what
//! the error says about the command: refused unrun (`MOVED`, `ASK`, `TRYAGAIN`,
//! `CLUSTERDOWN`, `READONLY`, a refused connection) is sent again once the client has learned
//! the new slot map, whatever the command; a dropped connection is retried only for commands
//! whose second run changes nothing (see [`RedisStore`]'s list). All within the command
//! timeout.
//!
//! A `MOVED` or an `ASK` (a slot in the middle of a migration, the key on the importing node
//! or on none yet) is followed at once: the command is sent to the node it names (after
//! `ASKING` in the same write for an `ASK`), scripts and transactions included; a refusal
//! inside a transaction's `EXECABORT` counts as the plain one. The slot map does not change
//! until the migration ends, so sending the command again to the slot's owner would only meet
//! the same `ASK` until the timeout.
//!
//! A call follows at most five `MOVED` and `ASK` replies: a slot that moved costs one, a
//! migration one or two more. More mean nodes that disagree on who serves the slot (each
//! naming the other), and the call fails with
//! [`StoreErrorKind::Connection`](super::StoreErrorKind::Connection) saying so, instead of
//! bouncing between them until the timeout.
//!
//! # Nodes that cannot be reached
//!
//! Nodes tell clients their addresses (`CLUSTER SLOTS`, `MOVED`, `ASK`). A node behind NAT or
//! in a container can announce one that clients cannot reach (`cluster-announce-ip`,
//! `cluster-announce-port`, `cluster-announce-hostname`), and the client then holds no
//! connection to it. A call the cluster sends to such a node is checked at once: the store
//! opens a TCP connection to the address, within the connect timeout and the call's deadline.
//! Refused, or silent for the whole connect timeout, the call fails with an error that names
//! the address and those settings (`Connection` when refused, `Timeout` when silent), and calls
//! sent there within the next connect timeout fail at once with the same. An address that
//! answers is a node the client has not connected to yet (one that serves no slot yet), and
//! the call is sent again, as before, until its deadline.
//!
//! # Nodes that stop answering
//!
//! A node that stops answering (stalled, paused, a silent network) costs its keys one command
//! timeout, not one per call, as one server does (see [`RedisStore`]): after a call's first
//! attempt timed out, calls for any key of that node fail at once with `Timeout` while one
//! task pings the node; the first answer ends it, a moment after the node is back. Calls for
//! the other nodes go on. redis-rs does not say where it sent a command, so the store reads
//! the slot from the commands a call sends (a dry run, only while a node is stalled or after
//! a timeout) and finds the node in a slot map of its own (`CLUSTER SLOTS`, loaded once in the
//! background, and again by each probe, from the stalled master's replica). Before the first
//! map is in, a timeout stops its one slot, and calls wait for the probe's map, about one
//! round trip, to tell whether they are for that node.

mod links;
mod nodes;
mod redirect;
mod sweep;

use std::time::Duration;

use bytes::Bytes;
use redis::RedisError;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};

pub(super) use self::links::{ClusterLinks, dry_run_slot};
use self::links::{cluster_conn, master_of, timed_out};
use super::redis::{Retry, classify};
use super::{RedisStore, StoreError, Ttl};

impl RedisStore {
    /// The fewest healthy replicas any serving master has (`CLUSTER NODES`, asked of the
    /// master of `slot` when given, else of any node: a node picked at random may be the one
    /// that stalls).
    pub(super) async fn cluster_fewest_replicas(
        &self,
        slot: Option<u16>,
    ) -> Result<u64, StoreError> {
        let node = match slot {
            Some(slot) => SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)),
            None => SingleNodeRoutingInfo::Random,
        };
        let nodes: String = self
            .run_master("CLUSTER NODES", Retry::OnDroppedConnection, move |conn| {
                let node = node.clone();
                async move {
                    let reply = cluster_conn(conn)?
                        .route_command(
                            redis::cmd("CLUSTER").arg("NODES").clone(),
                            RoutingInfo::SingleNode(node),
                        )
                        .await?;
                    redis::from_redis_value(reply).map_err(RedisError::from)
                }
            })
            .await?;
        Ok(super::durable::fewest_replicas(&nodes))
    }
}

impl RedisStore {
    /// [`Store::index_add`](super::Store::index_add) across slots: the member is added,
    /// then members whose keys are gone are dropped.
    pub(super) async fn cluster_index_add(
        &self,
        index: &str,
        member: &str,
    ) -> Result<(), StoreError> {
        self.run(
            "SADD",
            Retry::OnDroppedConnection,
            move |mut conn| async move {
                redis::cmd("SADD")
                    .arg(index)
                    .arg(member)
                    .query_async::<()>(&mut conn)
                    .await
            },
        )
        .await?;
        let members = self.cluster_index_read(index).await?;
        if members.is_empty() {
            return Ok(());
        }
        // one key at a time: a command the client splits by slot and sends to several nodes
        // at once (MGET, a many-key DEL) is not retried part by part by the store, and right
        // after a failover one part can fail or miscount
        let mut gone = Vec::new();
        for member in &members {
            let exists: i64 = self
                .run(
                    "EXISTS",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        redis::cmd("EXISTS")
                            .arg(member)
                            .query_async(&mut conn)
                            .await
                    },
                )
                .await?;
            if exists == 0 {
                gone.push(member);
            }
        }
        self.cluster_index_forget(index, &gone).await
    }

    /// [`Store::index_members`](super::Store::index_members) across slots.
    pub(super) async fn cluster_index_members(
        &self,
        index: &str,
    ) -> Result<Vec<(String, Ttl)>, StoreError> {
        let members = self.cluster_index_read(index).await?;
        let mut live = Vec::with_capacity(members.len());
        let mut gone = Vec::new();
        for member in &members {
            let ms: i64 = self
                .run(
                    "PTTL",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        redis::cmd("PTTL").arg(member).query_async(&mut conn).await
                    },
                )
                .await?;
            match ms {
                -2 => gone.push(member),
                -1 => live.push((member.clone(), Ttl::Persistent)),
                ms => live.push((
                    member.clone(),
                    Ttl::Expires(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
                )),
            }
        }
        self.cluster_index_forget(index, &gone).await?;
        Ok(live)
    }

    /// [`Store::index_delete_all`](super::Store::index_delete_all) across slots: deletes the
    /// members read, then removes exactly those from the index, so that a member added
    /// meanwhile stays listed.
    pub(super) async fn cluster_index_delete_all(&self, index: &str) -> Result<u64, StoreError> {
        let members = self.cluster_index_read(index).await?;
        if members.is_empty() {
            return Ok(0);
        }
        let mut deleted = 0;
        for member in &members {
            let removed: u64 = self
                .run(
                    "DEL",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        redis::cmd("DEL").arg(member).query_async(&mut conn).await
                    },
                )
                .await?;
            deleted += removed;
        }
        let all: Vec<&String> = members.iter().collect();
        self.cluster_index_forget(index, &all).await?;
        Ok(deleted)
    }

    async fn cluster_index_read(&self, index: &str) -> Result<Vec<String>, StoreError> {
        self.run(
            "SMEMBERS",
            Retry::OnDroppedConnection,
            move |mut conn| async move {
                redis::cmd("SMEMBERS")
                    .arg(index)
                    .query_async(&mut conn)
                    .await
            },
        )
        .await
    }

    async fn cluster_index_forget(&self, index: &str, gone: &[&String]) -> Result<(), StoreError> {
        if gone.is_empty() {
            return Ok(());
        }
        self.run(
            "SREM",
            Retry::OnDroppedConnection,
            move |mut conn| async move {
                redis::cmd("SREM")
                    .arg(index)
                    .arg(gone)
                    .query_async::<()>(&mut conn)
                    .await
            },
        )
        .await
    }

    /// [`Store::bump_version`](super::Store::bump_version) between two slots.
    pub(super) async fn cluster_move(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let (dump, ttl_ms): (Option<Vec<u8>>, i64) = self
            .run(
                "DUMP",
                Retry::OnDroppedConnection,
                move |mut conn| async move {
                    redis::pipe()
                        .cmd("DUMP")
                        .arg(from)
                        .cmd("PTTL")
                        .arg(from)
                        .query_async(&mut conn)
                        .await
                },
            )
            .await?;
        let Some(dump) = dump else {
            return Ok(false);
        };
        // RESTORE's 0 keeps no expiry; an expiry that ran out meanwhile stays short
        let ttl_ms = u64::try_from(ttl_ms).map_or(0, |ms| ms.max(1));
        let dump = &dump[..];
        self.run(
            "RESTORE",
            Retry::OnDroppedConnection,
            move |mut conn| async move {
                redis::cmd("RESTORE")
                    .arg(to)
                    .arg(ttl_ms)
                    .arg(dump)
                    .arg("REPLACE")
                    .query_async::<()>(&mut conn)
                    .await
            },
        )
        .await?;
        // of concurrent moves, the one whose DEL removed the old key moved it; the others
        // restored the same value
        let removed: i64 = self
            .run("DEL", Retry::Never, move |mut conn| async move {
                redis::cmd("DEL").arg(from).query_async(&mut conn).await
            })
            .await?;
        Ok(removed == 1)
    }

    /// [`Store::set_many`](super::Store::set_many): one `MULTI` per hash slot.
    pub(super) async fn cluster_set_many(
        &self,
        writes: Vec<(String, Bytes, Option<Option<u64>>)>,
    ) -> Result<(), StoreError> {
        let mut slots: Vec<(Slot, redis::Pipeline)> = Vec::new();
        for (key, value, expiry) in &writes {
            let slot = Slot::for_key(key);
            let pipe = match slots.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, pipe)) => pipe,
                None => {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    slots.push((slot, pipe));
                    &mut slots.last_mut().expect("just pushed").1
                }
            };
            match expiry {
                None => {
                    pipe.cmd("DEL").arg(key).ignore();
                }
                Some(ms) => {
                    let cmd = pipe.cmd("SET").arg(key).arg(&value[..]);
                    if let Some(ms) = ms {
                        cmd.arg("PX").arg(*ms);
                    }
                    cmd.ignore();
                }
            }
        }
        for (_, pipe) in &slots {
            self.run(
                "MULTI SET",
                Retry::OnDroppedConnection,
                move |mut conn| async move { pipe.query_async::<()>(&mut conn).await },
            )
            .await?;
        }
        Ok(())
    }

    /// The replicas that serve `key`'s master, and a bump acknowledged by them, on a
    /// connection of its own (`WAIT` blocks its connection).
    pub(super) async fn cluster_bump_generation(
        &self,
        links: &ClusterLinks,
        key: &str,
        wait_ms: u64,
    ) -> Result<(i64, u64, u64), StoreError> {
        let info: String = self
            .run(
                "INFO replication",
                Retry::OnDroppedConnection,
                move |conn| async move {
                    let reply = cluster_conn(conn)?
                        .route_command(
                            redis::cmd("INFO").arg("replication").clone(),
                            master_of(key),
                        )
                        .await?;
                    redis::from_redis_value(reply).map_err(RedisError::from)
                },
            )
            .await?;
        let replicas = super::redis::connected_replicas(&info);
        let bump = async {
            let mut conn = links.dedicated().await?;
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(key).arg(0).arg("NX").ignore();
            pipe.cmd("INCR").arg(key);
            pipe.cmd("WAIT").arg(replicas).arg(wait_ms);
            pipe.query_async::<(i64, u64)>(&mut conn)
                .await
                .map_err(|err| classify("generation bump", err))
        };
        let (generation, acknowledged) = tokio::time::timeout(self.command_timeout, bump)
            .await
            .map_err(|_| timed_out("generation bump"))??;
        Ok((generation, acknowledged, replicas))
    }
}
