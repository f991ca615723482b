//! The three shares a store holds (general, rate-limit, cache), their bounds and the sweep of expired rate-limit keys.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

// tokio's clock, which tests pause and advance (`tokio::time::pause`), so that expiry cases
// need not sleep; outside a paused runtime it is the monotonic clock.
use tokio::time::Instant;

use moka::ops::compute::Op;
use moka::sync::Cache;

use super::slot::Slot;

/// How the store's maps hash keys: foldhash, seeded per process as hashbrown's default is.
/// SipHash (moka's and std's default) cost more than the rest of a rate-limit hit's lookup.
pub(super) type Hashing = foldhash::fast::RandomState;

/// One share's entries.
pub(super) type Entries = Cache<String, Slot, Hashing>;

/// Which share of the store a handle works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Share {
    General,
    RateLimits,
    Cache,
}

pub(super) struct Shared {
    pub(super) general: Entries,
    /// Unbounded for moka: the bound is enforced on admission, so that nothing live is evicted.
    /// Without moka's per-entry expiry: see [`Expiries`].
    pub(super) rate_limits: Entries,
    pub(super) rate_limit_expiries: Expiries,
    /// The live keys of each rule's room; each room holds up to `max_rate_limit_keys`.
    pub(super) rooms: Rooms,
    pub(super) max_rate_limit_keys: u64,
    /// When the rate-limit share's count was last settled, in ms after `epoch`.
    pub(super) rate_limits_settled_ms: AtomicU64,
    pub(super) cache: Entries,
    /// The memory store's clock for GCRA: microseconds since this instant.
    pub(super) epoch: Instant,
}

/// How many expired rate-limit entries a write drops: more than one, so that a backlog (a
/// flood of keys that all expire together) drains while new keys keep coming.
pub(super) const SWEEP_PER_WRITE: usize = 2;
/// How many a full rate-limit share drops before it refuses a new key (at most every 50 ms).
pub(super) const SWEEP_WHEN_FULL: usize = 4_096;
/// The width of an [`Expiries`] bucket.
pub(super) const EXPIRY_BUCKET_MS: u128 = 100;

/// The rate-limit share's entries by when they expire, in 100 ms buckets.
///
/// moka's own per-entry expiry removes every entry that expired in one maintenance run, and
/// while it runs, every other writer sleeps in a loop waiting for room in moka's write log: a
/// flood of cooldown keys (one per phone number) all expire one interval later, and then
/// stall the store (a p99 of 795 ms measured at 64 connections, 60 s after 180,000 keys). The
/// share instead drops expired entries itself, [`SWEEP_PER_WRITE`] on each write, so no
/// write pays for more than a few.
///
/// Each key holds one place, in the bucket of its current deadline, and gives it up when it
/// is removed (a give-back, a delete): the queue is bounded by the live keys, not by the
/// write rate (150,000 given-back sends once queued 27 MB of keys with none live).
#[derive(Default)]
pub(super) struct Expiries {
    pub(super) queue: Mutex<ExpiryQueue>,
    /// The first queued bucket (`u64::MAX` when none), so that a write with nothing due takes
    /// no lock.
    pub(super) first: AtomicU64,
}

#[derive(Default)]
pub(super) struct ExpiryQueue {
    pub(super) due: BTreeMap<u64, HashSet<Arc<str>, Hashing>>,
    /// Each queued key's bucket.
    pub(super) bucket_of: HashMap<Arc<str>, u64, Hashing>,
}

impl ExpiryQueue {
    pub(super) fn unqueue(&mut self, key: &str) -> Option<Arc<str>> {
        let (key, bucket) = self.bucket_of.remove_entry(key)?;
        if let Some(keys) = self.due.get_mut(&bucket) {
            keys.remove(&key);
            if keys.is_empty() {
                self.due.remove(&bucket);
            }
        }
        Some(key)
    }

    pub(super) fn first_bucket(&self) -> u64 {
        self.due
            .first_key_value()
            .map_or(u64::MAX, |(&bucket, _)| bucket)
    }
}

impl Expiries {
    /// Queues `key` to be checked once `at` has passed, in place of its earlier place.
    pub(super) fn expect(&self, key: &str, at: Instant, epoch: Instant) {
        // the bucket after the one `at` falls in: a bucket is due once all its keys expired
        let bucket = at.saturating_duration_since(epoch).as_millis() / EXPIRY_BUCKET_MS + 1;
        let bucket = u64::try_from(bucket).unwrap_or(u64::MAX);
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        if queue.bucket_of.get(key) == Some(&bucket) {
            return;
        }
        let key = queue.unqueue(key).unwrap_or_else(|| Arc::from(key));
        queue
            .due
            .entry(bucket)
            .or_default()
            .insert(Arc::clone(&key));
        queue.bucket_of.insert(key, bucket);
        // under the lock, so that a concurrent `take_due` cannot be overwritten
        self.first.store(queue.first_bucket(), Ordering::Relaxed);
    }

    /// Gives up `key`'s place: it was removed, or no longer expires.
    pub(super) fn forget(&self, key: &str) {
        if let Ok(mut queue) = self.queue.lock()
            && queue.unqueue(key).is_some()
        {
            self.first.store(queue.first_bucket(), Ordering::Relaxed);
        }
    }

    /// How many keys hold a place.
    pub(super) fn len(&self) -> usize {
        self.queue.lock().map_or(0, |queue| queue.bucket_of.len())
    }

    /// Up to `limit` queued keys whose bucket is due at `now`, their places given up.
    pub(super) fn take_due(&self, now: Instant, epoch: Instant, limit: usize) -> Vec<Arc<str>> {
        let current = now.saturating_duration_since(epoch).as_millis() / EXPIRY_BUCKET_MS;
        let current = u64::try_from(current).unwrap_or(u64::MAX);
        if self.first.load(Ordering::Relaxed) > current {
            return Vec::new();
        }
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        while taken.len() < limit {
            let Some(mut bucket) = queue.due.first_entry() else {
                break;
            };
            if *bucket.key() > current {
                break;
            }
            let keys = bucket.get_mut();
            let wanted = limit - taken.len();
            if keys.len() <= wanted {
                taken.extend(keys.drain());
                bucket.remove();
            } else {
                let some: Vec<Arc<str>> = keys.iter().take(wanted).cloned().collect();
                for key in &some {
                    keys.remove(key);
                }
                taken.extend(some);
            }
        }
        for key in &taken {
            queue.bucket_of.remove(key);
        }
        self.first.store(queue.first_bucket(), Ordering::Relaxed);
        taken
    }
}

/// The rate-limit share's rooms: one per rule (the layer names each rule's room in its
/// [`RatePolicy`]), each counting its live keys and holding up to the share's bound on its
/// own. A flood of one rule's keys (a code for each of 100,000 phone numbers) fills that
/// rule's room only: the others (the login limit per address) go on admitting new keys.
#[derive(Default)]
pub(super) struct Rooms {
    pub(super) counts: std::sync::RwLock<HashMap<u64, Arc<AtomicU64>, Hashing>>,
    /// The live keys of all rooms together.
    pub(super) total: AtomicU64,
}

impl Rooms {
    /// The live-key count of `room`.
    pub(super) fn count(&self, room: u64) -> Arc<AtomicU64> {
        if let Ok(rooms) = self.counts.read()
            && let Some(count) = rooms.get(&room)
        {
            return Arc::clone(count);
        }
        let Ok(mut rooms) = self.counts.write() else {
            return Arc::new(AtomicU64::new(0));
        };
        Arc::clone(rooms.entry(room).or_default())
    }

    /// A key joined (`true`) or left `room`.
    pub(super) fn change(&self, room: Option<u64>, joined: bool) {
        let Some(room) = room else {
            return;
        };
        for count in [&*self.count(room), &self.total] {
            if joined {
                count.fetch_add(1, Ordering::Relaxed);
            } else {
                // saturating: a count never wraps below zero
                let _ =
                    count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
    }
}

impl Shared {
    /// Drops up to `limit` rate-limit entries that have expired (see [`Expiries`]).
    pub(super) fn sweep_rate_limits(&self, limit: usize) {
        let now = Instant::now();
        for key in self.rate_limit_expiries.take_due(now, self.epoch, limit) {
            let mut live_until = None;
            let mut left = None;
            self.rate_limits
                .entry(key.to_string())
                .and_compute_with(|entry| match entry {
                    Some(entry) if !entry.value().is_live(now) => {
                        left = Some(entry.value().room);
                        Op::Remove
                    }
                    Some(entry) => {
                        live_until = entry.value().expires_at;
                        Op::Nop
                    }
                    None => Op::Nop,
                });
            if let Some(room) = left {
                self.rooms.change(room, false);
            }
            // written again since it was queued, and queued again then: keep its place
            if let Some(at) = live_until {
                self.rate_limit_expiries.expect(&key, at, self.epoch);
            }
        }
    }
}

/// How full each share of a [`MemoryStore`](crate::store::MemoryStore) is, from [`MemoryStore::usage`](crate::store::MemoryStore::usage).
///
/// # Example
///
/// ```
/// use tower_redis_http::store::MemoryStore;
///
/// let usage = MemoryStore::new().usage();
/// assert_eq!(usage.entries + usage.rate_limit_keys + usage.cache_entries, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryUsage {
    /// Entries in the general share (tokens, application keys).
    pub entries: u64,
    /// Keys in the rate-limit share.
    pub rate_limit_keys: u64,
    /// Entries in the cache share (entries, Vary lists, URL indexes).
    pub cache_entries: u64,
    /// The cache share's weight: keys, values and per-entry overhead, in bytes.
    pub cache_bytes: u64,
    /// Rate-limit keys queued to be dropped when they expire: at most one place per key that
    /// is live or was live at its last write.
    pub expiring_rate_limit_keys: u64,
}
