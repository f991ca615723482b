//! The Redis store's `Store` operations.

use bytes::Bytes;

use crate::store::{Expiry, KeyScheme, Store, StoreError, Ttl};

use super::classify::{Retry, to_duration_ms, unexpected_reply};
use super::handle::RedisStore;
use super::scripts::{BUMP_VERSION, INCREMENT, INDEX_ADD, INDEX_DELETE_ALL, INDEX_MEMBERS};
use super::transport::Links;

impl RedisStore {
    /// Sends `PING` and waits for the answer: a readiness check for health endpoints.
    ///
    /// # Errors
    ///
    /// The [`StoreError`] of a call that failed or timed out.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::RedisStore;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = RedisStore::builder("redis://127.0.0.1").build().await?;
    /// store.ping().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call::<()>("PING", Retry::OnDroppedConnection, redis::cmd("PING"))
            .await
    }
}
impl Store for RedisStore {
    fn key_scheme(&self) -> &KeyScheme {
        &self.keys
    }

    fn with_key_scheme(&self, keys: KeyScheme) -> Self {
        Self {
            keys,
            ..self.clone()
        }
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<(), StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let _written = self.written(key);
        let value = &value[..];
        match self.expiry_ms(expiry) {
            None => {
                self.call::<()>(
                    "DEL",
                    Retry::OnDroppedConnection,
                    redis::cmd("DEL").arg(key),
                )
                .await
            }
            Some(ms) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(value);
                if let Some(ms) = ms {
                    cmd.arg("PX").arg(ms);
                }
                self.call("SET", Retry::OnDroppedConnection, cmd).await
            }
        }
    }

    async fn set_many(&self, entries: &[(&str, Bytes, Expiry)]) -> Result<(), StoreError> {
        let _written = self.written_many();
        if let Links::Cluster(_) = &self.transport.links {
            let writes = entries
                .iter()
                .map(|(key, value, expiry)| {
                    Ok((self.keys.make(key)?, value.clone(), self.expiry_ms(*expiry)))
                })
                .collect::<Result<_, StoreError>>()?;
            return self.cluster_set_many(writes).await;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, value, expiry) in entries {
            let key = self.keys.make(key)?;
            match self.expiry_ms(*expiry) {
                None => {
                    pipe.cmd("DEL").arg(&key).ignore();
                }
                Some(ms) => {
                    let cmd = pipe.cmd("SET").arg(&key).arg(&value[..]);
                    if let Some(ms) = ms {
                        cmd.arg("PX").arg(ms);
                    }
                    cmd.ignore();
                }
            }
        }
        self.call("MULTI SET", Retry::OnDroppedConnection, pipe)
            .await
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
    ) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let value = &value[..];
        let Some(ms) = self.expiry_ms(expiry) else {
            return Ok(false);
        };
        let _written = self.written(key);
        // Not retried: if the first SET NX landed but its reply was lost, a retry would answer
        // "taken" for the caller's own write.
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX");
        if let Some(ms) = ms {
            cmd.arg("PX").arg(ms);
        }
        let reply: Option<String> = self.call("SET NX", Retry::Never, cmd).await?;
        Ok(reply.is_some())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let _written = self.written(key);
        let removed: i64 = self
            .call(
                "DEL",
                Retry::OnDroppedConnection,
                redis::cmd("DEL").arg(key),
            )
            .await?;
        Ok(removed > 0)
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let _written = self.written(key);
        let value: Option<Vec<u8>> = self
            .call("GETDEL", Retry::Never, redis::cmd("GETDEL").arg(key))
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        let (index, member) = (self.keys.make(index)?, self.keys.make(member)?);
        let (index, member) = (index.as_str(), member.as_str());
        if let Links::Cluster(_) = &self.transport.links {
            return self.cluster_index_add(index, member).await;
        }
        self.call::<()>(
            "index_add script",
            Retry::OnDroppedConnection,
            INDEX_ADD.key(index).arg(member),
        )
        .await
    }

    async fn index_members(&self, index: &str) -> Result<Vec<(String, Ttl)>, StoreError> {
        let index = self.keys.make(index)?;
        let index = index.as_str();
        if let Links::Cluster(_) = &self.transport.links {
            return self.cluster_index_members(index).await;
        }
        let flat: Vec<String> = self
            .call(
                "index_members script",
                Retry::OnDroppedConnection,
                INDEX_MEMBERS.key(index),
            )
            .await?;
        flat.chunks_exact(2)
            .map(|pair| {
                let ms: i64 = pair[1].parse().map_err(|_| {
                    unexpected_reply("index_members script", "PTTL is not a number")
                })?;
                let ttl = if ms < 0 {
                    Ttl::Persistent
                } else {
                    Ttl::Expires(to_duration_ms(ms))
                };
                Ok((pair[0].clone(), ttl))
            })
            .collect()
    }

    async fn index_remove(&self, index: &str, member: &str) -> Result<bool, StoreError> {
        let (index, member) = (self.keys.make(index)?, self.keys.make(member)?);
        let (index, member) = (index.as_str(), member.as_str());
        let removed: i64 = self
            .call(
                "SREM",
                Retry::OnDroppedConnection,
                redis::cmd("SREM").arg(index).arg(member),
            )
            .await?;
        Ok(removed > 0)
    }

    async fn index_delete_all(&self, index: &str) -> Result<u64, StoreError> {
        let index = self.keys.make(index)?;
        let index = index.as_str();
        // the members it deletes are not named here
        let _written = self.written_many();
        if let Links::Cluster(_) = &self.transport.links {
            return self.cluster_index_delete_all(index).await;
        }
        let deleted: i64 = self
            .call(
                "index_delete_all script",
                Retry::OnDroppedConnection,
                INDEX_DELETE_ALL.key(index),
            )
            .await?;
        Ok(u64::try_from(deleted).unwrap_or(0))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let _written = self.written(key);
        self.call(
            "increment script",
            Retry::Never,
            INCREMENT.key(key).arg(delta),
        )
        .await
    }

    async fn ttl(&self, key: &str) -> Result<Ttl, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let ms: i64 = self
            .call(
                "PTTL",
                Retry::OnDroppedConnection,
                redis::cmd("PTTL").arg(key),
            )
            .await?;
        Ok(match ms {
            -2 => Ttl::Missing,
            -1 => Ttl::Persistent,
            ms => Ttl::Expires(to_duration_ms(ms)),
        })
    }

    async fn bump_version(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        let (from, to, version) = self.keys.bumped(key, delta)?;
        let (from, to) = (from.as_str(), to.as_str());
        let _written = (self.written(from), self.written(to));
        if matches!(self.transport.links, Links::Cluster(_))
            && redis::cluster_routing::Slot::for_key(from)
                != redis::cluster_routing::Slot::for_key(to)
        {
            return Ok(self.cluster_move(from, to).await?.then_some(version));
        }
        let moved: i64 = self
            .call(
                "bump_version script",
                Retry::Never,
                BUMP_VERSION.key(from).key(to),
            )
            .await?;
        Ok((moved == 1).then_some(version))
    }
}
