//! `MemoryStore`, a handle on one share: admission, atomic compute, and reads through to the share a key belongs to.

use std::sync::Arc;
use std::sync::atomic::Ordering;

// tokio's clock, which tests pause and advance (`tokio::time::pause`), so that expiry cases
// need not sleep; outside a paused runtime it is the monotonic clock.
use tokio::time::Instant;

use bytes::Bytes;
use moka::ops::compute::Op;

use crate::store::{Expiring, KeyScheme, StoreError, StoreErrorKind, Timeout};

use super::shares::{Entries, MemoryUsage, SWEEP_PER_WRITE, SWEEP_WHEN_FULL, Share, Shared};
use super::slot::Slot;

/// The embedded store: in-process, bounded in entries, TTL-aware, with [`RedisStore`]'s
/// semantics.
///
/// Built on [moka](https://docs.rs/moka)'s concurrent cache. Every write goes through moka's
/// per-key atomic compute, so `set_if_absent`, `increment` and the rate-limit policies are
/// exactly as atomic as their Redis scripts. Expiry is kept per entry and checked on every
/// read, so an expired key is never returned, whatever moka's eviction timing.
///
/// # Three shares, bounded apart
///
/// One bounded map for everything would let anonymous traffic evict security state: 100,000
/// distinct `/sms_codes/<n>/` or `/articles/?q=<n>` requests (seconds of traffic) would push
/// out logged-in users' tokens and live send flags. So a store holds three shares, each with
/// its own bound, and the layers each use their own:
///
/// - the **general** share (tokens, sessions, the application's own keys; every handle a
///   user builds): [`max_entries`](crate::store::MemoryStoreBuilder::max_entries), least useful evicted
///   first. Nothing an anonymous client sends creates entries here through the layers.
/// - the **rate-limit** share ([`RateLimitLayer`](crate::ratelimit::RateLimitLayer)'s
///   counters and flags): [`max_rate_limit_keys`](crate::store::MemoryStoreBuilder::max_rate_limit_keys).
///   Each rule has a room of that many keys of its own, so one rule's flood never fills
///   another's. A live entry is **never** evicted before it expires; when a rule's room is
///   full, a new key of it is a store failure ([`StoreErrorKind::CapacityExceeded`]) and the
///   rule applies its failure policy (a cooldown answers 503, a window lets the request
///   through uncounted unless it fails closed).
/// - the **cache** share ([`ResponseCacheLayer`](crate::cache::ResponseCacheLayer)'s entries):
///   [`max_cache_bytes`](crate::store::MemoryStoreBuilder::max_cache_bytes), least useful evicted first.
///
/// The layers reach their share through [`for_rate_limits`](MemoryStore::for_rate_limits)
/// and [`for_cache`](MemoryStore::for_cache). The store is still one keyspace, as a Redis
/// database is: a general handle (the one the application holds) reads, times, clears and
/// takes the layers' keys too (`get`, `ttl`, `delete`, `take` look in the layers' shares when
/// its own has nothing), so clearing a send flag is `store.delete(key)` on either store.
/// Writes through a general handle stay in the general share.
///
/// Each `MemoryStore` (and its clones) is its own space; two instances share nothing, as two
/// processes would not.
///
/// [`RedisStore`]: crate::store::RedisStore
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use tower_redis_http::store::{MemoryStore, Store, Ttl};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::builder().max_entries(10_000).build()?;
/// store.set("sms_13800138000", Bytes::from_static(b"123456"), Duration::from_secs(300).into()).await?;
/// assert!(matches!(store.ttl("sms_13800138000").await?, Ttl::Expires(_)));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    pub(super) shared: Arc<Shared>,
    pub(super) keys: KeyScheme,
    pub(super) default_timeout: Timeout,
    pub(super) share: Share,
}

impl MemoryStore {
    /// Ready, always: the embedded store has nothing to reach. There for health endpoints
    /// that check every store alike (see [`AnyStore::ping`](crate::store::AnyStore::ping)).
    ///
    /// # Errors
    ///
    /// None; the `Result` is the one every store's ping returns.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert!(MemoryStore::new().ping().await.is_ok());
    /// # }
    /// ```
    #[allow(clippy::unused_async)]
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// How many entries this handle's share holds, expired ones not yet evicted included.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// assert_eq!(MemoryStore::new().entry_count(), 0);
    /// ```
    #[must_use]
    pub fn entry_count(&self) -> u64 {
        self.entries().run_pending_tasks();
        self.entries().entry_count()
    }

    /// How full each share is.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::store::{MemoryStore, RatePolicy, Store};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = MemoryStore::new();
    /// let flags = store.for_rate_limits();
    /// flags.rate_limit("sms:13800138000", &RatePolicy::cooldown(Duration::from_secs(60))?).await?;
    /// assert_eq!(store.usage().rate_limit_keys, 1);
    /// assert_eq!(store.usage().entries, 0);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn usage(&self) -> MemoryUsage {
        let shared = &self.shared;
        for share in [&shared.general, &shared.rate_limits, &shared.cache] {
            share.run_pending_tasks();
        }
        MemoryUsage {
            entries: shared.general.entry_count(),
            rate_limit_keys: shared.rate_limits.entry_count(),
            cache_entries: shared.cache.entry_count(),
            cache_bytes: shared.cache.weighted_size(),
            expiring_rate_limit_keys: shared.rate_limit_expiries.len() as u64,
        }
    }

    /// This store's rate-limit share, where [`RateLimitLayer`](crate::ratelimit::RateLimitLayer)
    /// keeps its counters and flags: bounded by
    /// [`max_rate_limit_keys`](crate::store::MemoryStoreBuilder::max_rate_limit_keys), and never evicting a
    /// live entry.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{MemoryStore, Store};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = MemoryStore::new();
    /// // lift the send flag of one number, as an operator might
    /// store.for_rate_limits().delete("rl:sms:13800138000").await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn for_rate_limits(&self) -> Self {
        Self {
            share: Share::RateLimits,
            ..self.clone()
        }
    }

    /// This store's cache share, where [`ResponseCacheLayer`](crate::cache::ResponseCacheLayer)
    /// keeps its entries: bounded by [`max_cache_bytes`](crate::store::MemoryStoreBuilder::max_cache_bytes).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let store = MemoryStore::new();
    /// assert_eq!(store.for_cache().entry_count(), 0);
    /// ```
    #[must_use]
    pub fn for_cache(&self) -> Self {
        Self {
            share: Share::Cache,
            ..self.clone()
        }
    }

    pub(super) fn entries(&self) -> &Entries {
        match self.share {
            Share::General => &self.shared.general,
            Share::RateLimits => &self.shared.rate_limits,
            Share::Cache => &self.shared.cache,
        }
    }

    /// Whether `key` may be written in this handle's share: always, except in a full
    /// rate-limit share, where only keys that are already there may (live entries are never
    /// evicted to make room).
    pub(super) fn admits(&self, key: &str, room: Option<u64>) -> Result<(), StoreError> {
        if self.share != Share::RateLimits {
            return Ok(());
        }
        let shared = &self.shared;
        let max = shared.max_rate_limit_keys;
        // while all rooms together hold fewer keys than a room may, none is full: a hit
        // takes no lock (the count is exact, unlike the map's own)
        if room.is_some() && shared.rooms.total.load(Ordering::Relaxed) < max {
            return Ok(());
        }
        let room_count = room.map(|room| shared.rooms.count(room));
        let has_room = || match &room_count {
            Some(count) => count.load(Ordering::Relaxed) < max,
            None => shared.rate_limits.entry_count() < max,
        };
        if has_room() || self.live_slot(key, Instant::now()).is_some() {
            return Ok(());
        }
        // The count trails writes and keeps expired entries until moka's upkeep: settle it,
        // at most every 50 ms, so that a flood against a full share does not pay it per
        // request.
        let now_ms = u64::try_from(shared.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = shared.rate_limits_settled_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 50
            && shared
                .rate_limits_settled_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            shared.sweep_rate_limits(SWEEP_WHEN_FULL);
            shared.rate_limits.run_pending_tasks();
            if has_room() {
                return Ok(());
            }
        }
        Err(StoreError::new(
            StoreErrorKind::CapacityExceeded,
            match room {
                Some(_) => format!(
                    "this rule's room in the memory store's rate-limit share is full ({max} live keys)"
                ),
                None => format!("the memory store's rate-limit share is full ({max} live keys)"),
            },
        ))
    }

    /// Runs `f` on the live slot of `key` (or `None`) under moka's per-key lock, and applies
    /// the returned operation.
    pub(super) fn compute<R>(
        &self,
        key: String,
        f: impl FnOnce(Option<&Slot>, Instant) -> (Op<Slot>, R),
    ) -> R {
        self.compute_in(key, None, f)
    }

    /// [`compute`](Self::compute), a key it creates counted in `room` of the rate-limit
    /// share (a key keeps the room it was created in).
    pub(super) fn compute_in<R>(
        &self,
        key: String,
        room: Option<u64>,
        f: impl FnOnce(Option<&Slot>, Instant) -> (Op<Slot>, R),
    ) -> R {
        let mut out = None;
        let mut expires = None;
        let mut removed = false;
        let mut room_change = None;
        let rate_limits = self.share == Share::RateLimits;
        let expiring_key = rate_limits.then(|| key.clone());
        self.entries().entry(key).and_compute_with(|entry| {
            let now = Instant::now();
            let live = entry.as_ref().map(|e| e.value()).filter(|s| s.is_live(now));
            let (op, result) = f(live, now);
            // An expired leftover with nothing to put in its place goes now rather than later.
            let op = match (op, entry.is_some() && live.is_none()) {
                (Op::Nop, true) => Op::Remove,
                (op, _) => op,
            };
            let old_room = entry.as_ref().and_then(|entry| entry.value().room);
            let op = match op {
                Op::Put(mut slot) => {
                    expires = slot.expires_at;
                    slot.room = if entry.is_some() { old_room } else { room };
                    if entry.is_none() {
                        room_change = Some((slot.room, true));
                    }
                    Op::Put(slot)
                }
                Op::Remove => {
                    removed = true;
                    if entry.is_some() {
                        room_change = Some((old_room, false));
                    }
                    Op::Remove
                }
                Op::Nop => Op::Nop,
            };
            out = Some(result);
            op
        });
        if let Some((room, joined)) = room_change {
            self.shared.rooms.change(room, joined);
        }
        if let Some(key) = expiring_key {
            let expiries = &self.shared.rate_limit_expiries;
            match expires {
                Some(at) => {
                    expiries.expect(&key, at, self.shared.epoch);
                    self.shared.sweep_rate_limits(SWEEP_PER_WRITE);
                }
                // removed, or kept without a deadline: no place to hold
                None if removed => expiries.forget(&key),
                None => {}
            }
        }
        out.expect("moka runs the compute closure exactly once")
    }

    pub(super) fn live_slot(&self, full_key: &str, now: Instant) -> Option<Slot> {
        self.entries()
            .get(full_key)
            .filter(|slot| slot.is_live(now))
    }

    /// The layers' shares, which a general handle reads and clears through: within one
    /// store the three shares are one keyspace, as a Redis database is, so the application's
    /// own handle sees a send flag the rate-limit layer set (and can clear it) on either
    /// store. Empty for a layer's own handle.
    pub(super) fn layers_shares(&self) -> impl Iterator<Item = Self> + '_ {
        let shares: &[Share] = match self.share {
            Share::General => &[Share::RateLimits, Share::Cache],
            Share::RateLimits | Share::Cache => &[],
        };
        shares.iter().map(|&share| Self {
            share,
            ..self.clone()
        })
    }

    /// The handle an operation on `key` (a full key) works through: a general handle's own,
    /// unless its share has nothing live under the key and a layer's share has: then that
    /// share's, so that the application's writes act on the send flag or counter the layer
    /// holds, as on one Redis database. A layer's own handle is always its own.
    pub(super) fn owner(&self, key: &str) -> std::borrow::Cow<'_, Self> {
        if self.share != Share::General {
            return std::borrow::Cow::Borrowed(self);
        }
        let now = Instant::now();
        if self.live_slot(key, now).is_some() {
            return std::borrow::Cow::Borrowed(self);
        }
        match self
            .layers_shares()
            .find(|share| share.live_slot(key, now).is_some())
        {
            Some(share) => std::borrow::Cow::Owned(share),
            None => std::borrow::Cow::Borrowed(self),
        }
    }

    /// The live value under a full key, in this handle's share or, from a general handle,
    /// in a layer's; an index is refused.
    pub(super) fn read_through(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let now = Instant::now();
        if let Some(slot) = self.live_slot(key, now) {
            return slot.value().map(Some);
        }
        for share in self.layers_shares() {
            if let Some(slot) = share.live_slot(key, now) {
                return slot.value().map(Some);
            }
        }
        Ok(None)
    }

    /// [`read_through`](Self::read_through), with how long the value has left to live.
    pub(super) fn read_through_expiring(&self, key: &str) -> Result<Option<Expiring>, StoreError> {
        let now = Instant::now();
        let slot = match self.live_slot(key, now) {
            Some(slot) => Some(slot),
            None => self
                .layers_shares()
                .find_map(|share| share.live_slot(key, now)),
        };
        slot.map(|slot| {
            let left = slot.expires_at.map(|at| at.saturating_duration_since(now));
            Ok((slot.value()?, left))
        })
        .transpose()
    }

    /// The live value under a full key.
    pub(super) fn live_value(&self, key: &str) -> Option<Bytes> {
        self.live_slot(key, Instant::now()).map(|slot| slot.data())
    }

    /// Releases a cache lock (a full key) if `owner` holds it.
    pub(super) fn release_lock(&self, key: String, owner: &str) -> bool {
        self.compute(key, |slot, _| match slot {
            Some(slot) if slot.value == owner.as_bytes() => (Op::Remove, true),
            _ => (Op::Nop, false),
        })
    }

    pub(super) fn micros_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.shared.epoch).as_micros())
            .unwrap_or(u64::MAX)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.keys)
            .field("default_timeout", &self.default_timeout)
            .field("share", &self.share)
            .field("max_entries", &self.shared.general.policy().max_capacity())
            .field("max_rate_limit_keys", &self.shared.max_rate_limit_keys)
            .field(
                "max_cache_bytes",
                &self.shared.cache.policy().max_capacity(),
            )
            .finish_non_exhaustive()
    }
}
