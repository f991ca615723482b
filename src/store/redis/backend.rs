//! The Redis store's `Backend`: the operations the layers use beyond `Store`.

use std::time::Duration;

use bytes::Bytes;

use crate::store::{
    Backend, CacheLock, CacheWrite, Expiring, GenerationBump, RateDecision, RatePolicy, StoreError,
    StoreErrorKind, StoredNow, ttl_ms_ceil,
};

use super::classify::{Retry, classify, connected_replicas};
use super::handle::RedisStore;
use super::reads::Track;
use super::scripts::{CACHE_PUT, LOCK_AND_READ, RENEW_LOCK, UNLOCK};
use super::transport::Links;

impl Backend for RedisStore {
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, StoreError>> {
        self.get_now_expiring(key)
            .map(|found| found.map(|held| held.map(|(value, _)| value)))
    }

    fn get_now_expiring(&self, key: &str) -> Option<Result<Option<Expiring>, StoreError>> {
        let held = self.near.as_ref()?.get_expiring(key);
        crate::observe::near_cache(if held.is_some() { "hit" } else { "miss" });
        Some(Ok(Some(held?)))
    }

    async fn get_expiring_full(&self, key: &str) -> Result<Option<Expiring>, StoreError> {
        if let Some(near) = &self.near {
            if let Some(held) = near.get_expiring(key) {
                crate::observe::near_cache("hit");
                return Ok(Some(held));
            }
            crate::observe::near_cache("miss");
            if let Some(read) = self.get_tracked_expiring(near, key, Track::IfFound).await {
                return read;
            }
        }
        self.get_untracked_expiring(key).await
    }

    /// [`Store::get`] on a full key.
    async fn get_full(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if let Some(near) = &self.near {
            if let Some(value) = near.get(key) {
                crate::observe::near_cache("hit");
                return Ok(Some(value));
            }
            crate::observe::near_cache("miss");
            if let Some(read) = self.get_tracked(near, key, Track::IfFound).await {
                return read;
            }
        }
        self.get_untracked(key).await
    }

    /// [`Store::get_and_refresh`] on a full key.
    async fn get_and_refresh_full(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Bytes>, StoreError> {
        let _written = self.written(key);
        let value: Option<Vec<u8>> = if ttl.is_zero() {
            self.call("GETDEL", Retry::Never, redis::cmd("GETDEL").arg(key))
                .await?
        } else {
            // past the longest expiry: none, as `set` takes it
            let ms = (ttl <= crate::store::MAX_EXPIRY).then(|| ttl_ms_ceil(ttl));
            let mut getex = redis::cmd("GETEX");
            getex.arg(key);
            match ms {
                Some(ms) => getex.arg("PX").arg(ms),
                None => getex.arg("PERSIST"),
            };
            self.call("GETEX", Retry::OnDroppedConnection, getex)
                .await?
        };
        Ok(value.map(Bytes::from))
    }

    /// Stores a cache entry, see [`CacheWrite`].
    async fn cache_put(&self, write: &CacheWrite<'_>) -> Result<(), StoreError> {
        let entry = self.keys.make(write.entry_key)?;
        let vary = self.keys.make(write.vary_key)?;
        let index = self.keys.make(write.index_key)?;
        let memo = self
            .keys
            .make(&crate::store::hit_for_miss_key(write.entry_key))?;
        let lock = write
            .unlock
            .map(|(key, owner)| self.keys.make(key).map(|key| (key, owner)))
            .transpose()?;
        let _written = (
            self.written(&entry),
            self.written(&vary),
            self.written(&memo),
        );
        let mut invocation = CACHE_PUT.key(&entry);
        invocation
            .key(&vary)
            .key(&index)
            .key(&memo)
            .arg(&write.entry[..])
            .arg(&write.vary[..])
            .arg(crate::store::ttl_ms_ceil(write.ttl).max(1));
        if let Some((key, owner)) = &lock {
            invocation.key(key).arg(*owner);
        }
        self.call("cache put script", Retry::OnDroppedConnection, invocation)
            .await
    }

    /// Takes a cache entry's stampede lock and reads its Vary list and entry in one script.
    async fn lock_and_read(&self, lock: &CacheLock<'_>) -> Result<Option<StoredNow>, StoreError> {
        let lock_key = self.keys.make(lock.lock_key)?;
        let vary = self.keys.make(lock.vary_key)?;
        let entry = self.keys.make(lock.entry_key)?;
        let memo = self
            .keys
            .make(&crate::store::hit_for_miss_key(lock.entry_key))?;
        let mut invocation = LOCK_AND_READ.key(&lock_key);
        invocation
            .key(&vary)
            .key(&entry)
            .key(&memo)
            .arg(lock.owner)
            .arg(crate::store::ttl_ms_ceil(lock.ttl).max(1));
        // not retried: a lost reply to a lock that was taken would read as "held by another"
        // nil when another owner holds the lock, else the Vary list, the entry and whether
        // the entry's hit-for-miss memo stood in the way
        type Read = Option<(Option<Vec<u8>>, Option<Vec<u8>>, i64)>;
        let stored: Read = self.call("lock script", Retry::Never, invocation).await?;
        Ok(stored.map(|(vary, entry, memo)| StoredNow {
            vary: vary.map(Bytes::from),
            entry: entry.map(Bytes::from),
            uncacheable: memo == 1,
        }))
    }

    /// Releases a lock `owner` holds.
    async fn unlock(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let released: i64 = self
            .call("unlock script", Retry::Never, UNLOCK.key(key).arg(owner))
            .await?;
        Ok(released == 1)
    }

    /// Extends a lock `owner` holds.
    async fn renew_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let renewed: i64 = self
            .call(
                "renew lock script",
                Retry::OnDroppedConnection,
                RENEW_LOCK.key(key).arg(owner).arg(ttl_ms),
            )
            .await?;
        Ok(renewed == 1)
    }

    /// The bump and a `WAIT` for the replicas the server has, in one pipeline on a
    /// connection of its own: `WAIT` waits for the writes of its connection and blocks it
    /// meanwhile, which must not stall the connections that requests share. Not retried: a
    /// lost reply cannot tell whether the bump ran (a second bump would only invalidate again).
    async fn bump_generation(&self, key: &str) -> Result<GenerationBump, StoreError> {
        let key = self.keys.make(key)?;
        let _written = self.written(&key);
        // the wait leaves room within the command timeout for the bump and the reply
        let wait_ms = u64::try_from(self.transport.command_timeout.as_millis() * 3 / 4)
            .unwrap_or(u64::MAX)
            .max(1);
        let links = match &self.transport.links {
            Links::Cluster(links) => {
                let (generation, acknowledged, replicas) =
                    self.cluster_bump_generation(links, &key, wait_ms).await?;
                return Ok(GenerationBump {
                    generation,
                    replicated: acknowledged >= replicas,
                });
            }
            Links::Server(links) => links,
        };
        let info: String = self
            .call(
                "INFO replication",
                Retry::OnDroppedConnection,
                redis::cmd("INFO").arg("replication"),
            )
            .await?;
        let replicas = connected_replicas(&info);
        let bump = async {
            let mut conn = links.pool.dedicated_connection().await?;
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(&key).arg(0).arg("NX").ignore();
            pipe.cmd("INCR").arg(&key);
            // with no replica, WAIT 0 answers at once
            pipe.cmd("WAIT").arg(replicas).arg(wait_ms);
            pipe.query_async::<(i64, u64)>(&mut conn.conn).await
        };
        let (generation, acknowledged) = tokio::time::timeout(self.transport.command_timeout, bump)
            .await
            .map_err(|_| {
                StoreError::new(
                    StoreErrorKind::Timeout,
                    "Redis generation bump took longer than the command timeout",
                )
            })?
            .map_err(|err| classify("generation bump", err))?;
        Ok(GenerationBump {
            generation,
            replicated: acknowledged >= replicas,
        })
    }

    /// Deletes every key matching the glob `pattern` (full-key form), with `SCAN`, never
    /// `KEYS`; returns how many were deleted.
    async fn delete_matching(&self, pattern: &str) -> Result<u64, StoreError> {
        let _written = self.written_many();
        if let Links::Cluster(_) = &self.transport.links {
            return self.cluster_delete_matching(pattern).await;
        }
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .call(
                    "SCAN",
                    Retry::OnDroppedConnection,
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            if !keys.is_empty() {
                let keys = &keys;
                let removed: u64 = self
                    .call(
                        "UNLINK",
                        Retry::OnDroppedConnection,
                        redis::cmd("UNLINK").arg(keys),
                    )
                    .await?;
                deleted += removed;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// [`Store::release`] on a full key.
    async fn release_full(
        &self,
        key: &str,
        policy: &RatePolicy,
        decision: &RateDecision,
    ) -> Result<bool, StoreError> {
        self.give_back(key, policy, decision).await
    }

    /// [`Store::rate_limit`] on a full key.
    async fn rate_limit_full(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> Result<RateDecision, StoreError> {
        if self.may_wait_for_replica(policy) {
            // boxed, so that a hit that needs no replica carries none of it in its future
            return Box::pin(self.rate_limit_durably(key, policy)).await;
        }
        self.rate_limit_step(key, policy).await
    }
}
