//! The cache's calls to the store: reads, background writes, and the memos kept beside
//! the entries.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::config::Config;
use super::entry::{Entry, Pieces};
use super::key;
use super::lock::StoreLock;
use super::recent::WriteEnded;
use crate::store::{Backend, CacheWrite, Store, StoreErrorKind};

/// How long a store that refused a write is taken to refuse the next ones.
const WRITES_REFUSED_FOR_MS: u64 = 1_000;

/// Milliseconds since the Unix epoch: the clock the layer's shared deadlines are kept in.
pub(crate) fn unix_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

impl Config {
    /// Stores `entry` (and the URL's Vary list) in the background: a response need not wait
    /// for it.
    pub(crate) fn put(self: &Arc<Self>, entry: Arc<Entry>, url: &str, lock: Option<StoreLock>) {
        let entry_key = key::entry_key(&self.prefix(), url, &entry.variant);
        self.write(entry_key, entry, None, url, lock);
    }

    /// Stores the pieces of a partial response (see [`Entry::encode_partial`]) under
    /// `partial_key`, beside the variant's complete entry, in the background; the URL's
    /// invalidation reaches them too.
    pub(crate) fn put_partial(
        self: &Arc<Self>,
        partial_key: String,
        entry: Entry,
        pieces: Pieces,
        url: &str,
        write_ended: WriteEnded,
    ) {
        self.write(
            partial_key,
            Arc::new(entry),
            Some((pieces, write_ended)),
            url,
            None,
        );
    }

    /// Writes `entry` (with its `pieces`, for a partial one) under `entry_key`, with the URL's
    /// Vary list and index.
    fn write(
        self: &Arc<Self>,
        entry_key: String,
        entry: Arc<Entry>,
        pieces: Option<(Pieces, WriteEnded)>,
        url: &str,
        lock: Option<StoreLock>,
    ) {
        let prefix = self.prefix();
        let vary_key = key::vary_key(&prefix, url);
        let index_key = key::index_key(&prefix, url);
        let config = Arc::clone(self);
        let url = url.to_owned();
        // the write releases the lock in the same atomic step: no instance sees it free
        // before the entry is there
        let unlock = lock.map(StoreLock::released_by_write);
        let mut write = Box::pin(async move {
            // on a store that needs a round trip, encoded (and compressed) in a task of its
            // own rather than in the response body's last poll
            let written = config
                .store
                .cache_put(&CacheWrite {
                    entry_key: &entry_key,
                    entry: match &pieces {
                        Some((pieces, _)) => entry.encode_partial(pieces),
                        None => entry.encode(config.compress_above),
                    },
                    vary_key: &vary_key,
                    vary: Bytes::from(key::encode_vary(&entry.vary)),
                    index_key: &index_key,
                    ttl: entry.keep,
                    unlock: unlock.as_ref().map(|(key, owner)| (key.as_str(), &**owner)),
                })
                .await;
            // the recent pieces now stand beside the store's only while it has them
            drop(pieces);
            if let Err(err) = written {
                if matches!(
                    err.kind(),
                    StoreErrorKind::CapacityExceeded | StoreErrorKind::Server
                ) {
                    config
                        .state
                        .writes_refused_until
                        .store(unix_ms() + WRITES_REFUSED_FOR_MS, Ordering::Relaxed);
                }
                tracing::debug!(url = %crate::failure::Digest(&url), "cache entry not stored");
                crate::failure::log_store_failure(
                    "cache",
                    "cache entry not stored, though its response announced it",
                    None,
                    &err,
                );
            }
        });
        // a store that answers at once (the memory store) writes now: the client's next
        // request, sent as soon as this body ended, finds the entry
        if self.store.answers_at_once() {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if write.as_mut().poll(&mut cx).is_ready() {
                return;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no Tokio runtime to store a cache entry in; not stored");
            return;
        };
        runtime.spawn(write);
    }

    /// Whether a store write failed as refused within the last second: `Cache-Status` then
    /// does not announce `detail=storing` for a write that is likely to fail as well.
    pub(crate) fn writes_refused(&self) -> bool {
        let until = self.state.writes_refused_until.load(Ordering::Relaxed);
        until != 0 && unix_ms() < until
    }

    /// Tells the other instances sharing the store that `key`'s answer could not be stored,
    /// in the background: their leaders then skip the lock instead of waiting on it. A memory
    /// store is this process's own, where the flights' memo is enough.
    pub(crate) fn remember_uncacheable(self: &Arc<Self>, key: &str) {
        if self.store.answers_at_once() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let config = Arc::clone(self);
        let memo = crate::store::hit_for_miss_key(key);
        runtime.spawn(async move {
            let written = config
                .store
                .set(
                    &memo,
                    Bytes::from_static(b"1"),
                    crate::store::Expiry::After(config.hit_for_miss),
                )
                .await;
            if let Err(err) = written {
                tracing::debug!(error = %err, "hit-for-miss memo not stored");
            }
        });
    }

    /// Deletes an entry that could not be read, in the background.
    pub(crate) fn discard(self: &Arc<Self>, key: String) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let config = Arc::clone(self);
            runtime.spawn(async move {
                let _ = config.store.delete(&key).await;
            });
        }
    }
}
