//! Reads through the near cache: tracked `GET`s, and writes that drop what it holds.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use redis::RedisError;
use redis::aio::MultiplexedConnection;

use crate::store::{Expiring, StoreError};

use super::classify::{Retry, classify, timed_out};
use super::handle::RedisStore;
use super::near::{Near, NearCacheUsage};
use super::transport::Links;

/// Drops near-cache entries when a write returns, however it returns: see
/// [`RedisStore::written`].
pub(super) struct Written<'a> {
    pub(super) near: Option<&'a Near>,
    /// `None`: every key.
    pub(super) key: Option<&'a str>,
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        match (self.near, self.key) {
            (Some(near), Some(key)) => near.forget(key.as_bytes()),
            (Some(near), None) => near.forget_all(),
            (None, _) => {}
        }
    }
}

/// Which near-cache reads Redis is asked to track: see [`RedisStore::get_tracked`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Track {
    /// Only a key that exists: the keys clients choose.
    IfFound,
    /// Whatever the read finds: a key the crate names itself and wants to hear created.
    Always,
}

impl RedisStore {
    /// `GET` over the pool, bypassing the near cache.
    pub(super) async fn get_untracked(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let value: Option<Vec<u8>> = self
            .call(
                "GET",
                Retry::OnDroppedConnection,
                redis::cmd("GET").arg(key),
            )
            .await?;
        Ok(value.map(Bytes::from))
    }

    /// `GET` (with `PTTL`, to bound the entry's age) over the near cache's tracking connection,
    /// so that Redis announces the key's next change; the value is kept unless the key changed
    /// while the read was under way. `None` while there is no tracking connection.
    ///
    /// Tracking is opt-in (`CLIENT TRACKING ON OPTIN`), and `track` says for which reads:
    /// [`Track::IfFound`] sends an untracked `EXISTS` first and reads (tracked) only a key that
    /// exists, because keys are mostly chosen by clients (tokens, URLs) and every key read
    /// tracked stays in Redis's tracking table until it is written: unknown tokens would fill
    /// it up to `tracking-table-max-keys`, past which Redis evicts tracked keys at random.
    /// A fill of a key found costs one round trip more; an unknown key costs one, as before.
    pub(super) async fn get_tracked(
        &self,
        near: &Near,
        key: &str,
        track: Track,
    ) -> Option<Result<Option<Bytes>, StoreError>> {
        self.get_tracked_expiring(near, key, track)
            .await
            .map(|read| read.map(|found| found.map(|(value, _)| value)))
    }

    /// [`get_tracked`](Self::get_tracked), with how long the key has left to live.
    pub(super) async fn get_tracked_expiring(
        &self,
        near: &Near,
        key: &str,
        track: Track,
    ) -> Option<Result<Option<Expiring>, StoreError>> {
        let fill = near.start_fill(key)?;
        let mut conn = fill.conn();
        let tracked_read = |mut conn: MultiplexedConnection| async move {
            redis::pipe()
                .cmd("CLIENT")
                .arg("CACHING")
                .arg("YES")
                .ignore()
                .cmd("GET")
                .arg(key)
                .cmd("PTTL")
                .arg(key)
                .query_async::<(Option<Vec<u8>>, i64)>(&mut conn)
                .await
        };
        let read: Result<(Option<Vec<u8>>, i64), RedisError> = match track {
            Track::Always => tracked_read(conn).await,
            Track::IfFound => {
                // both round trips within one command timeout, as any other read
                let deadline = tokio::time::Instant::now() + self.transport.command_timeout;
                match redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<bool>(&mut conn)
                    .await
                {
                    Ok(false) => Ok((None, -2)),
                    Ok(true) => tokio::time::timeout_at(deadline, tracked_read(conn))
                        .await
                        .unwrap_or_else(|_| Err(timed_out())),
                    Err(err) => Err(err),
                }
            }
        };
        match read {
            Ok((value, pttl)) => {
                let value = value.map(Bytes::from);
                fill.finish(value.as_ref().map(|value| (value, pttl)));
                if self.transport.outage.failing.load(Ordering::Relaxed) {
                    self.transport.outage.recovered();
                }
                Some(Ok(value.map(|value| (value, time_left(pttl)))))
            }
            Err(err) => {
                fill.failed(&err);
                if err.is_timeout() {
                    // Redis stopped answering: the store's own stall handling takes over
                    // rather than a second wait on the pool
                    let err = classify("GET", err);
                    if let Links::Server(links) = &self.transport.links {
                        self.transport.stalled(links);
                    }
                    self.transport.outage.failed();
                    return Some(Err(err));
                }
                // only the tracking connection failed, or it did with the others, or Redis
                // refused the read (a key of another type, reported inside the pipeline's
                // error): the pool finds out which, with its own retry and error kinds
                None
            }
        }
    }

    /// `GET` and `PTTL` over the pool, in one round trip, bypassing the near cache.
    pub(super) async fn get_untracked_expiring(
        &self,
        key: &str,
    ) -> Result<Option<Expiring>, StoreError> {
        let (value, pttl): (Option<Vec<u8>>, i64) = self
            .call(
                "GET",
                Retry::OnDroppedConnection,
                redis::pipe().cmd("GET").arg(key).cmd("PTTL").arg(key),
            )
            .await?;
        Ok(value.map(|value| (Bytes::from(value), time_left(pttl))))
    }

    /// [`Store::get`], tracked by the near cache even while the key does not exist, so that
    /// its creation by another instance is announced: see [`AnyStore::get_watched`](super::AnyStore).
    pub(in crate::store) async fn get_watched(
        &self,
        key: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        let key = self.keys.make(key)?;
        if let Some(near) = &self.near {
            if let Some(value) = near.get(&key) {
                return Ok(Some(value));
            }
            if let Some(read) = self.get_tracked(near, &key, Track::Always).await {
                return read;
            }
        }
        self.get_untracked(&key).await
    }

    /// A guard for a write to `key`: when the write returns, what the near cache holds for
    /// the key is dropped at once rather than when Redis's invalidation arrives, so that this
    /// process reads its own writes.
    pub(super) fn written<'a>(&'a self, key: &'a str) -> Written<'a> {
        Written {
            near: self.near.as_deref(),
            key: Some(key),
        }
    }

    /// [`written`](Self::written) for a write to keys the store cannot name one by one.
    pub(super) fn written_many(&self) -> Written<'_> {
        Written {
            near: self.near.as_deref(),
            key: None,
        }
    }

    pub(in crate::store) fn near_cache_changes(&self) -> Option<u64> {
        self.near.as_ref().map(|near| near.changes())
    }

    pub(in crate::store) fn has_near_cache(&self) -> bool {
        self.near.is_some()
    }

    /// What the near cache holds now, and whether it is serving; `None` without one.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::{NearCache, RedisStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::builder("redis://127.0.0.1").near_cache(NearCache::new()).build().await?;
    /// if let Some(usage) = store.near_cache_usage() {
    ///     println!("{} entries, serving: {}", usage.entries, usage.serving);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn near_cache_usage(&self) -> Option<NearCacheUsage> {
        self.near.as_ref().map(|near| near.usage())
    }
}

/// A key's time left from its `PTTL`: `None` for a key without expiry (`-1`), and for one
/// gone meanwhile (`-2`, which has no value to go with it).
fn time_left(pttl_ms: i64) -> Option<Duration> {
    u64::try_from(pttl_ms).ok().map(Duration::from_millis)
}
