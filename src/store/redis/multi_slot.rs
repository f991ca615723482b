//! The operations whose keys live in more than one hash slot, on a cluster (see `cluster`'s docs).

use std::time::Duration;

use bytes::Bytes;
use redis::RedisError;
use redis::cluster_routing::Slot;

use super::classify::{Retry, classify};
use super::cluster::{ClusterLinks, cluster_conn, master_of, timed_out};
use super::handle::RedisStore;
use crate::store::{StoreError, Ttl};

impl RedisStore {
    /// [`Store::index_add`](super::Store::index_add) across slots: the member is added,
    /// then members whose keys are gone are dropped.
    pub(super) async fn cluster_index_add(
        &self,
        index: &str,
        member: &str,
    ) -> Result<(), StoreError> {
        self.call::<()>(
            "SADD",
            Retry::OnDroppedConnection,
            redis::cmd("SADD").arg(index).arg(member),
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
                .call(
                    "EXISTS",
                    Retry::OnDroppedConnection,
                    redis::cmd("EXISTS").arg(member),
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
                .call(
                    "PTTL",
                    Retry::OnDroppedConnection,
                    redis::cmd("PTTL").arg(member),
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
                .call(
                    "DEL",
                    Retry::OnDroppedConnection,
                    redis::cmd("DEL").arg(member),
                )
                .await?;
            deleted += removed;
        }
        let all: Vec<&String> = members.iter().collect();
        self.cluster_index_forget(index, &all).await?;
        Ok(deleted)
    }

    async fn cluster_index_read(&self, index: &str) -> Result<Vec<String>, StoreError> {
        self.call(
            "SMEMBERS",
            Retry::OnDroppedConnection,
            redis::cmd("SMEMBERS").arg(index),
        )
        .await
    }

    async fn cluster_index_forget(&self, index: &str, gone: &[&String]) -> Result<(), StoreError> {
        if gone.is_empty() {
            return Ok(());
        }
        self.call::<()>(
            "SREM",
            Retry::OnDroppedConnection,
            redis::cmd("SREM").arg(index).arg(gone),
        )
        .await
    }

    /// [`Store::bump_version`](super::Store::bump_version) between two slots.
    pub(super) async fn cluster_move(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let (dump, ttl_ms): (Option<Vec<u8>>, i64) = self
            .call(
                "DUMP",
                Retry::OnDroppedConnection,
                redis::pipe().cmd("DUMP").arg(from).cmd("PTTL").arg(from),
            )
            .await?;
        let Some(dump) = dump else {
            return Ok(false);
        };
        // RESTORE's 0 keeps no expiry; an expiry that ran out meanwhile stays short
        let ttl_ms = u64::try_from(ttl_ms).map_or(0, |ms| ms.max(1));
        let dump = &dump[..];
        self.call::<()>(
            "RESTORE",
            Retry::OnDroppedConnection,
            redis::cmd("RESTORE")
                .arg(to)
                .arg(ttl_ms)
                .arg(dump)
                .arg("REPLACE"),
        )
        .await?;
        // of concurrent moves, the one whose DEL removed the old key moved it; the others
        // restored the same value
        let removed: i64 = self
            .call("DEL", Retry::Never, redis::cmd("DEL").arg(from))
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
        for (_, pipe) in slots {
            self.call::<()>("MULTI SET", Retry::OnDroppedConnection, pipe)
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
        let replicas = super::classify::connected_replicas(&info);
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
        let (generation, acknowledged) = tokio::time::timeout(self.transport.command_timeout, bump)
            .await
            .map_err(|_| timed_out("generation bump"))??;
        Ok((generation, acknowledged, replicas))
    }
}
