//! The Redis store's `Store` operations.

use bytes::Bytes;

use crate::store::{Expiry, KeyScheme, Store, StoreError, Ttl};

use super::classify::{Retry, to_duration_ms, unexpected_reply};
use super::handle::RedisStore;
use super::transport::Links;
use super::scripts::{BUMP_VERSION, INCREMENT, INDEX_ADD, INDEX_DELETE_ALL, INDEX_MEMBERS};

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
        self.run(
            "PING",
            Retry::OnDroppedConnection,
            move |mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await },
        )
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
                self.run(
                    "DEL",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        redis::cmd("DEL")
                            .arg(key)
                            .query_async::<()>(&mut conn)
                            .await
                    },
                )
                .await
            }
            Some(ms) => {
                self.run(
                    "SET",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        let mut cmd = redis::cmd("SET");
                        cmd.arg(key).arg(value);
                        if let Some(ms) = ms {
                            cmd.arg("PX").arg(ms);
                        }
                        cmd.query_async::<()>(&mut conn).await
                    },
                )
                .await
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
        let pipe = &pipe;
        self.run(
            "MULTI SET",
            Retry::OnDroppedConnection,
            move |mut conn| async move { pipe.query_async::<()>(&mut conn).await },
        )
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
        let reply: Option<String> = self
            .run("SET NX", Retry::Never, move |mut conn| async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(value).arg("NX");
                if let Some(ms) = ms {
                    cmd.arg("PX").arg(ms);
                }
                cmd.query_async(&mut conn).await
            })
            .await?;
        Ok(reply.is_some())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let _written = self.written(key);
        let removed: i64 = self
            .run("DEL", Retry::OnDroppedConnection, move |mut conn| async move {
                redis::cmd("DEL").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(removed > 0)
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let _written = self.written(key);
        let value: Option<Vec<u8>> = self
            .run("GETDEL", Retry::Never, move |mut conn| async move {
                redis::cmd("GETDEL").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        let (index, member) = (self.keys.make(index)?, self.keys.make(member)?);
        let (index, member) = (index.as_str(), member.as_str());
        if let Links::Cluster(_) = &self.transport.links {
            return self.cluster_index_add(index, member).await;
        }
        self.run(
            "index_add script",
            Retry::OnDroppedConnection,
            move |mut conn| async move {
                INDEX_ADD
                    .key(index)
                    .arg(member)
                    .invoke::<()>(&mut conn)
                    .await
            },
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
            .run(
                "index_members script",
                Retry::OnDroppedConnection,
                move |mut conn| async move { INDEX_MEMBERS.key(index).invoke(&mut conn).await },
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
            .run(
                "SREM",
                Retry::OnDroppedConnection,
                move |mut conn| async move {
                    redis::cmd("SREM")
                        .arg(index)
                        .arg(member)
                        .query_async(&mut conn)
                        .await
                },
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
            .run(
                "index_delete_all script",
                Retry::OnDroppedConnection,
                move |mut conn| async move { INDEX_DELETE_ALL.key(index).invoke(&mut conn).await },
            )
            .await?;
        Ok(u64::try_from(deleted).unwrap_or(0))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let _written = self.written(key);
        self.run(
            "increment script",
            Retry::Never,
            move |mut conn| async move { INCREMENT.key(key).arg(delta).invoke(&mut conn).await },
        )
        .await
    }

    async fn ttl(&self, key: &str) -> Result<Ttl, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let ms: i64 = self
            .run("PTTL", Retry::OnDroppedConnection, move |mut conn| async move {
                redis::cmd("PTTL").arg(key).query_async(&mut conn).await
            })
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
            .run(
                "bump_version script",
                Retry::Never,
                move |mut conn| async move {
                    BUMP_VERSION.key(from).key(to).invoke(&mut conn).await
                },
            )
            .await?;
        Ok((moved == 1).then_some(version))
    }
}
