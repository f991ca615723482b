use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, which tests pause and advance (`tokio::time::pause`), so that expiry cases
// need not sleep; outside a paused runtime it is the monotonic clock.
use tokio::time::Instant;

use bytes::Bytes;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::rate::{PolicyKind, cooldown_decision, gcra_step, new_ticket, window_decision};
use super::value::parse_integer;
use super::{
    Backend, CacheLock, CacheWrite, Expiry, GenerationBump, KeyScheme, RateDecision, RatePolicy,
    Store, StoreError, StoreErrorKind, StoredNow, Timeout, Ttl, ttl_ms_ceil,
};
use crate::ConfigError;

const DEFAULT_MAX_ENTRIES: u64 = 100_000;
const DEFAULT_MAX_RATE_LIMIT_KEYS: u64 = 100_000;
const DEFAULT_MAX_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// What a cache slot costs beyond its key and value, for the cache share's byte bound.
const SLOT_OVERHEAD: u64 = 96;

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
///   user builds): [`max_entries`](MemoryStoreBuilder::max_entries), least useful evicted
///   first. Nothing an anonymous client sends creates entries here through the layers.
/// - the **rate-limit** share ([`RateLimitLayer`](crate::ratelimit::RateLimitLayer)'s
///   counters and flags): [`max_rate_limit_keys`](MemoryStoreBuilder::max_rate_limit_keys).
///   Each rule has a room of that many keys of its own, so one rule's flood never fills
///   another's. A live entry is **never** evicted before it expires; when a rule's room is
///   full, a new key of it is a store failure ([`StoreErrorKind::CapacityExceeded`]) and the
///   rule applies its failure policy (a cooldown answers 503, a window lets the request
///   through uncounted unless it fails closed).
/// - the **cache** share ([`ResponseCacheLayer`](crate::cache::ResponseCacheLayer)'s entries):
///   [`max_cache_bytes`](MemoryStoreBuilder::max_cache_bytes), least useful evicted first.
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
/// [`RedisStore`]: super::RedisStore
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
    shared: Arc<Shared>,
    keys: KeyScheme,
    default_timeout: Timeout,
    share: Share,
}

/// Which share of the store a handle works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    General,
    RateLimits,
    Cache,
}

struct Shared {
    general: Cache<String, Slot>,
    /// Unbounded for moka: the bound is enforced on admission, so that nothing live is evicted.
    /// Without moka's per-entry expiry: see [`Expiries`].
    rate_limits: Cache<String, Slot>,
    rate_limit_expiries: Expiries,
    /// The live keys of each rule's room; each room holds up to `max_rate_limit_keys`.
    rooms: Rooms,
    max_rate_limit_keys: u64,
    /// When the rate-limit share's count was last settled, in ms after `epoch`.
    rate_limits_settled_ms: AtomicU64,
    cache: Cache<String, Slot>,
    /// The memory store's clock for GCRA: microseconds since this instant.
    epoch: Instant,
}

/// How many expired rate-limit entries a write drops: more than one, so that a backlog (a
/// flood of keys that all expire together) drains while new keys keep coming.
const SWEEP_PER_WRITE: usize = 2;
/// How many a full rate-limit share drops before it refuses a new key (at most every 50 ms).
const SWEEP_WHEN_FULL: usize = 4_096;
/// The width of an [`Expiries`] bucket.
const EXPIRY_BUCKET_MS: u128 = 100;

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
struct Expiries {
    queue: Mutex<ExpiryQueue>,
    /// The first queued bucket (`u64::MAX` when none), so that a write with nothing due takes
    /// no lock.
    first: AtomicU64,
}

#[derive(Default)]
struct ExpiryQueue {
    due: BTreeMap<u64, HashSet<Arc<str>>>,
    /// Each queued key's bucket.
    bucket_of: HashMap<Arc<str>, u64>,
}

impl ExpiryQueue {
    fn unqueue(&mut self, key: &str) -> Option<Arc<str>> {
        let (key, bucket) = self.bucket_of.remove_entry(key)?;
        if let Some(keys) = self.due.get_mut(&bucket) {
            keys.remove(&key);
            if keys.is_empty() {
                self.due.remove(&bucket);
            }
        }
        Some(key)
    }

    fn first_bucket(&self) -> u64 {
        self.due
            .first_key_value()
            .map_or(u64::MAX, |(&bucket, _)| bucket)
    }
}

impl Expiries {
    /// Queues `key` to be checked once `at` has passed, in place of its earlier place.
    fn expect(&self, key: &str, at: Instant, epoch: Instant) {
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
    fn forget(&self, key: &str) {
        if let Ok(mut queue) = self.queue.lock()
            && queue.unqueue(key).is_some()
        {
            self.first.store(queue.first_bucket(), Ordering::Relaxed);
        }
    }

    /// How many keys hold a place.
    fn len(&self) -> usize {
        self.queue.lock().map_or(0, |queue| queue.bucket_of.len())
    }

    /// Up to `limit` queued keys whose bucket is due at `now`, their places given up.
    fn take_due(&self, now: Instant, epoch: Instant, limit: usize) -> Vec<Arc<str>> {
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
struct Rooms {
    counts: std::sync::RwLock<HashMap<u64, Arc<AtomicU64>>>,
    /// The live keys of all rooms together.
    total: AtomicU64,
}

impl Rooms {
    /// The live-key count of `room`.
    fn count(&self, room: u64) -> Arc<AtomicU64> {
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
    fn change(&self, room: Option<u64>, joined: bool) {
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
    fn sweep_rate_limits(&self, limit: usize) {
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

/// How full each share of a [`MemoryStore`] is, from [`MemoryStore::usage`].
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

#[derive(Clone, Default)]
struct Slot {
    value: Bytes,
    expires_at: Option<Instant>,
    /// A rate-limit count or GCRA time, updated in place by compare-and-swap so that a hit
    /// reads the entry without writing a new one (a moka write costs about seven reads).
    /// When set, it is the slot's value and `value` is unused.
    counter: Option<Arc<AtomicU64>>,
    /// The rate-limit room the key is counted in (see [`Rooms`]).
    room: Option<u64>,
    /// An index (a set of keys, kept as Redis keeps a set), not a value: value reads refuse
    /// it, and index operations refuse a value, as Redis answers `WRONGTYPE` for either.
    index: bool,
}

impl Slot {
    fn counter(number: u64, expires_at: Option<Instant>) -> Self {
        Self {
            counter: Some(Arc::new(AtomicU64::new(number))),
            expires_at,
            ..Self::default()
        }
    }

    /// The value as stored bytes (a counter as decimal text, as Redis keeps it).
    fn data(&self) -> Bytes {
        match &self.counter {
            Some(counter) => Bytes::from(counter.load(Ordering::Acquire).to_string()),
            None => self.value.clone(),
        }
    }

    /// The value, unless the slot holds an index.
    fn value(&self) -> Result<Bytes, StoreError> {
        if self.index {
            return Err(wrong_type("key holds an index, not a value"));
        }
        Ok(self.data())
    }

    /// The value as a non-negative counter, if it is one.
    fn number(&self) -> Option<u64> {
        match &self.counter {
            Some(counter) => Some(counter.load(Ordering::Acquire)),
            None => parse_integer(&self.value).and_then(|n| u64::try_from(n).ok()),
        }
    }

    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    fn remaining_ms(&self, now: Instant) -> Option<u64> {
        self.expires_at
            .map(|at| duration_ms_floor(at.saturating_duration_since(now)))
    }
}

/// Hands moka each entry's own deadline, so that it evicts expired entries on its own.
struct SlotExpiry;

/// moka counts the time left on its own (real) clock: a test that advances a paused clock
/// finds an entry expired by its deadline here before moka evicts it.
impl moka::Expiry<String, Slot> for SlotExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        slot: &Slot,
        _moka_now: std::time::Instant,
    ) -> Option<Duration> {
        slot.expires_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        slot: &Slot,
        _moka_now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        slot.expires_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

fn duration_ms_floor(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Where a write with `expiry` leaves the key: a deadline, no deadline, or gone.
enum Deadline {
    At(Option<Instant>),
    AlreadyExpired,
}

fn deadline(expiry: Expiry, now: Instant) -> Deadline {
    match expiry {
        Expiry::Never | Expiry::Default => Deadline::At(None),
        Expiry::After(ttl) if ttl.is_zero() => Deadline::AlreadyExpired,
        Expiry::After(ttl) => {
            Deadline::At(now.checked_add(Duration::from_millis(ttl_ms_ceil(ttl))))
        }
    }
}

impl MemoryStore {
    /// Ready, always: the embedded store has nothing to reach. There for health endpoints
    /// that check every store alike (see [`AnyStore::ping`](super::AnyStore::ping)).
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

    /// A store with the defaults: 100 000 entries, Django's key layout, a 300 s default
    /// timeout.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{MemoryStore, Store};
    ///
    /// assert_eq!(MemoryStore::new().key_scheme().version(), 1);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default memory store configuration is valid")
    }

    /// A builder for a configured store.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let store = MemoryStore::builder().key_prefix("test").version(2).build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
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
    /// [`max_rate_limit_keys`](MemoryStoreBuilder::max_rate_limit_keys), and never evicting a
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
    /// keeps its entries: bounded by [`max_cache_bytes`](MemoryStoreBuilder::max_cache_bytes).
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

    fn entries(&self) -> &Cache<String, Slot> {
        match self.share {
            Share::General => &self.shared.general,
            Share::RateLimits => &self.shared.rate_limits,
            Share::Cache => &self.shared.cache,
        }
    }

    /// Whether `key` may be written in this handle's share: always, except in a full
    /// rate-limit share, where only keys that are already there may (live entries are never
    /// evicted to make room).
    fn admits(&self, key: &str, room: Option<u64>) -> Result<(), StoreError> {
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
    fn compute<R>(
        &self,
        key: String,
        f: impl FnOnce(Option<&Slot>, Instant) -> (Op<Slot>, R),
    ) -> R {
        self.compute_in(key, None, f)
    }

    /// [`compute`](Self::compute), a key it creates counted in `room` of the rate-limit
    /// share (a key keeps the room it was created in).
    fn compute_in<R>(
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

    fn live_slot(&self, full_key: &str, now: Instant) -> Option<Slot> {
        self.entries()
            .get(full_key)
            .filter(|slot| slot.is_live(now))
    }

    /// The layers' shares, which a general handle reads and clears through: within one
    /// store the three shares are one keyspace, as a Redis database is, so the application's
    /// own handle sees a send flag the rate-limit layer set (and can clear it) on either
    /// store. Empty for a layer's own handle.
    fn layers_shares(&self) -> impl Iterator<Item = Self> + '_ {
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
    fn owner(&self, key: &str) -> std::borrow::Cow<'_, Self> {
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
    fn read_through(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
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

    /// The live value under a full key.
    fn live_value(&self, key: &str) -> Option<Bytes> {
        self.live_slot(key, Instant::now()).map(|slot| slot.data())
    }

    /// Releases a cache lock (a full key) if `owner` holds it.
    fn release_lock(&self, key: String, owner: &str) -> bool {
        self.compute(key, |slot, _| match slot {
            Some(slot) if slot.value == owner.as_bytes() => (Op::Remove, true),
            _ => (Op::Nop, false),
        })
    }

    /// A send flag: set when absent, for `interval_ms`.
    #[inline]
    fn cooldown(
        &self,
        key: &str,
        room: Option<u64>,
        interval_ms: u64,
    ) -> Result<RateDecision, StoreError> {
        let ticket = new_ticket();
        self.compute_in(key.to_owned(), room, |slot, now| match slot {
            // Redis's GET of the flag answers WRONGTYPE: the index is left as it is
            Some(slot) if slot.index => {
                (Op::Nop, Err(wrong_type("key holds an index, not a flag")))
            }
            Some(slot) => match slot.remaining_ms(now) {
                Some(ttl) => (
                    Op::Nop,
                    Ok(cooldown_decision(interval_ms, Some(ttl), ticket)),
                ),
                // a flag stored without expiry would block forever: give it the interval
                None => (
                    Op::Put(Slot {
                        value: slot.value.clone(),
                        expires_at: now.checked_add(Duration::from_millis(interval_ms)),
                        counter: None,
                        room: None,
                        index: false,
                    }),
                    Ok(cooldown_decision(interval_ms, Some(interval_ms), ticket)),
                ),
            },
            None => (
                Op::Put(Slot {
                    value: Bytes::copy_from_slice(ticket.as_bytes()),
                    expires_at: now.checked_add(Duration::from_millis(interval_ms)),
                    counter: None,
                    room: None,
                    index: false,
                }),
                Ok(cooldown_decision(interval_ms, None, ticket)),
            ),
        })
    }

    /// A fixed-window counter, counted in place while it lives.
    #[inline]
    fn fixed_window(
        &self,
        key: &str,
        room: Option<u64>,
        limit: u64,
        window_ms: u64,
    ) -> Result<RateDecision, StoreError> {
        // fast path: a live counter is counted in place, without a cache write
        let now = Instant::now();
        if let Some(slot) = self.live_slot(key, now)
            && let (Some(counter), Some(expires_at)) = (&slot.counter, slot.expires_at)
        {
            let ttl_ms = duration_ms_floor(expires_at.saturating_duration_since(now));
            return Ok(self.in_window(count_hit(counter, limit, ttl_ms), Some(expires_at)));
        }
        self.compute_in(key.to_owned(), room, |slot, now| {
            let window_end = || now.checked_add(Duration::from_millis(window_ms));
            let (op, decision) = match slot {
                Some(slot) => {
                    let expires_at = slot.expires_at.or_else(window_end);
                    let ttl_ms = expires_at.map_or(window_ms, |at| {
                        duration_ms_floor(at.saturating_duration_since(now))
                    });
                    if let Some(counter) = &slot.counter {
                        let decision = count_hit(counter, limit, ttl_ms);
                        return (Op::Nop, Ok(self.in_window(decision, expires_at)));
                    }
                    let Some(count) = slot.number() else {
                        return (Op::Nop, Err(not_a_counter()));
                    };
                    if count >= limit {
                        // a counter without expiry gets the window, as the script does
                        let put = Slot::counter(count, expires_at);
                        return (
                            Op::Put(put),
                            Ok(window_decision(limit, false, count, ttl_ms)),
                        );
                    }
                    (
                        Op::Put(Slot::counter(count + 1, expires_at)),
                        self.in_window(window_decision(limit, true, count + 1, ttl_ms), expires_at),
                    )
                }
                None if limit == 0 => (Op::Nop, window_decision(limit, false, 0, window_ms)),
                None => (
                    Op::Put(Slot::counter(1, window_end())),
                    self.in_window(window_decision(limit, true, 1, window_ms), window_end()),
                ),
            };
            (op, Ok(decision))
        })
    }

    /// `decision` with the end of the window it was counted in, when allowed: a give-back
    /// lands only in that window, never in the next (issue 29, finding 8e).
    fn in_window(&self, mut decision: RateDecision, window_end: Option<Instant>) -> RateDecision {
        if decision.allowed {
            decision.window_end_ms = self.window_mark(window_end);
        }
        decision
    }

    /// A window's end as milliseconds after the store's epoch.
    fn window_mark(&self, window_end: Option<Instant>) -> Option<u64> {
        window_end.map(|at| {
            u64::try_from(at.saturating_duration_since(self.shared.epoch).as_millis())
                .unwrap_or(u64::MAX)
        })
    }

    /// A GCRA's theoretical arrival time, stepped in place while its slot outlives it.
    #[inline]
    fn gcra(
        &self,
        key: &str,
        room: Option<u64>,
        emission_us: u64,
        tolerance_us: u64,
        burst: u64,
    ) -> Result<RateDecision, StoreError> {
        let now_us = self.micros_now();
        let now = Instant::now();
        // fast path: step the stored time in place while the slot outlives it
        if let Some(slot) = self.live_slot(key, now)
            && let (Some(counter), Some(expires_at)) = (&slot.counter, slot.expires_at)
        {
            let lives_until_us = now_us.saturating_add(
                u64::try_from(expires_at.saturating_duration_since(now).as_micros())
                    .unwrap_or(u64::MAX),
            );
            let mut stored = counter.load(Ordering::Acquire);
            loop {
                let step = gcra_step(emission_us, tolerance_us, burst, now_us, Some(stored));
                match step.new_tat_us {
                    None => return Ok(step.decision),
                    Some(tat) if tat <= lives_until_us => {
                        match counter.compare_exchange_weak(
                            stored,
                            tat,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => return Ok(step.decision),
                            Err(actual) => stored = actual,
                        }
                    }
                    Some(_) => break,
                }
            }
        }
        self.compute_in(key.to_owned(), room, |slot, now| {
            // the slot lives for the tolerance, which the stored time never passes
            // (an allowed time is at most `now + tolerance`), so the state is never
            // dropped while it limits anything
            let expires_at = now.checked_add(Duration::from_millis(ttl_ms_ceil(
                Duration::from_micros(tolerance_us),
            )));
            let counter = match slot {
                None => None,
                Some(slot) => match (&slot.counter, slot.number()) {
                    (Some(counter), _) => Some(Arc::clone(counter)),
                    (None, Some(tat)) => Some(Arc::new(AtomicU64::new(tat))),
                    (None, None) => return (Op::Nop, Err(not_a_counter())),
                },
            };
            let Some(counter) = counter else {
                let step = gcra_step(emission_us, tolerance_us, burst, now_us, None);
                let op = step
                    .new_tat_us
                    .map_or(Op::Nop, |tat| Op::Put(Slot::counter(tat, expires_at)));
                return (op, Ok(step.decision));
            };
            let mut stored = counter.load(Ordering::Acquire);
            loop {
                let step = gcra_step(emission_us, tolerance_us, burst, now_us, Some(stored));
                let Some(tat) = step.new_tat_us else {
                    return (Op::Nop, Ok(step.decision));
                };
                // the same counter, so that hits counted in place meanwhile are kept
                if counter
                    .compare_exchange_weak(stored, tat, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    let slot = Slot {
                        counter: Some(Arc::clone(&counter)),
                        expires_at,
                        ..Slot::default()
                    };
                    return (Op::Put(slot), Ok(step.decision));
                }
                stored = counter.load(Ordering::Acquire);
            }
        })
    }

    fn micros_now(&self) -> u64 {
        u64::try_from(self.shared.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
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

// Every future here is ready at its first poll: the memory store decides at once, which
// `at_once` relies on.
impl Backend for MemoryStore {
    fn answers_at_once(&self) -> bool {
        true
    }

    #[inline]
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, StoreError>> {
        Some(self.read_through(key))
    }

    async fn get_full(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.read_through(key)
    }

    async fn get_and_refresh_full(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Bytes>, StoreError> {
        let expiry = Expiry::After(ttl).resolve(self.default_timeout);
        self.owner(key).compute(key.to_owned(), |slot, now| {
            match (slot, deadline(expiry, now)) {
                (None, _) => (Op::Nop, Ok(None)),
                (Some(slot), _) if slot.index => (Op::Nop, slot.value().map(Some)),
                (Some(slot), Deadline::AlreadyExpired) => (Op::Remove, Ok(Some(slot.data()))),
                (Some(slot), Deadline::At(expires_at)) => (
                    Op::Put(Slot {
                        expires_at,
                        ..slot.clone()
                    }),
                    Ok(Some(slot.data())),
                ),
            }
        })
    }

    async fn rate_limit_full(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> Result<RateDecision, StoreError> {
        let room = policy.room();
        self.admits(key, room)?;
        match policy.kind() {
            PolicyKind::Cooldown { interval_ms } => {
                self.owner(key).cooldown(key, room, interval_ms)
            }
            PolicyKind::FixedWindow { limit, window_ms } => {
                self.owner(key).fixed_window(key, room, limit, window_ms)
            }
            PolicyKind::Gcra {
                emission_us,
                tolerance_us,
                burst,
            } => self
                .owner(key)
                .gcra(key, room, emission_us, tolerance_us, burst),
        }
    }

    async fn release_full(
        &self,
        key: &str,
        policy: &RatePolicy,
        decision: &RateDecision,
    ) -> Result<bool, StoreError> {
        if !decision.allowed {
            return Ok(false);
        }
        self.owner(key).compute(key.to_owned(), |slot, _| {
            let Some(slot) = slot else {
                return (Op::Nop, Ok(false));
            };
            if slot.index {
                return (
                    Op::Nop,
                    Err(wrong_type("key holds an index, not a rate-limit hit")),
                );
            }
            let released = match policy.kind() {
                // only the hit that set the flag may clear it
                PolicyKind::Cooldown { .. } => match &decision.ticket {
                    Some(ticket) if slot.value == ticket.as_bytes() => {
                        return (Op::Remove, Ok(true));
                    }
                    _ => false,
                },
                // only into the window the hit was counted in: that window's counter has the
                // same end; a later one would take back a hit it never counted
                PolicyKind::FixedWindow { .. }
                    if decision.window_end_ms.is_some()
                        && decision.window_end_ms != self.window_mark(slot.expires_at) =>
                {
                    false
                }
                PolicyKind::FixedWindow { .. } => give_back(slot, 1),
                PolicyKind::Gcra { emission_us, .. } => give_back(slot, emission_us),
            };
            (Op::Nop, Ok(released))
        })
    }

    async fn cache_put(&self, write: &CacheWrite<'_>) -> Result<(), StoreError> {
        let entry = self.keys.make(write.entry_key)?;
        let vary = self.keys.make(write.vary_key)?;
        let index = self.keys.make(write.index_key)?;
        // a storable answer ends the entry's hit-for-miss memo
        self.entries().invalidate(
            &self
                .keys
                .make(&crate::store::hit_for_miss_key(write.entry_key))?,
        );
        let lock = write
            .unlock
            .map(|(key, owner)| self.keys.make(key).map(|key| (key, owner)))
            .transpose()?;
        let expires_at = Instant::now().checked_add(write.ttl);
        for (key, value) in [(&entry, &write.entry), (&vary, &write.vary)] {
            self.entries().insert(
                key.clone(),
                Slot {
                    value: value.clone(),
                    expires_at,
                    counter: None,
                    room: None,
                    index: false,
                },
            );
        }
        self.compute(index, |slot, _| {
            let mut members = slot
                .and_then(|slot| decode_index(slot).ok())
                .unwrap_or_default();
            for key in [&entry, &vary] {
                if !members.contains(key) {
                    members.push(key.clone());
                }
            }
            let mut updated = index_slot(&members);
            updated.expires_at = match slot.map(|slot| slot.expires_at) {
                Some(None) => None,
                Some(Some(at)) => expires_at.max(Some(at)),
                None => expires_at,
            };
            (Op::Put(updated), ())
        });
        if let Some((key, owner)) = lock {
            self.release_lock(key, owner);
        }
        Ok(())
    }

    async fn lock_and_read(&self, lock: &CacheLock<'_>) -> Result<Option<StoredNow>, StoreError> {
        let lock_key = self.keys.make(lock.lock_key)?;
        let vary = self.keys.make(lock.vary_key)?;
        let entry = self.keys.make(lock.entry_key)?;
        let memo = self
            .keys
            .make(&crate::store::hit_for_miss_key(lock.entry_key))?;
        if self.live_value(&memo).is_some() {
            return Ok(Some(StoredNow {
                uncacheable: true,
                ..StoredNow::default()
            }));
        }
        let owner = Bytes::copy_from_slice(lock.owner.as_bytes());
        let taken = self.compute(lock_key, |slot, now| match slot {
            Some(_) => (Op::Nop, false),
            None => (
                Op::Put(Slot {
                    value: owner,
                    expires_at: now.checked_add(lock.ttl),
                    counter: None,
                    room: None,
                    index: false,
                }),
                true,
            ),
        });
        Ok(taken.then(|| StoredNow {
            vary: self.live_value(&vary),
            entry: self.live_value(&entry),
            uncacheable: false,
        }))
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        Ok(self.release_lock(self.keys.make(key)?, owner))
    }

    async fn renew_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.compute(self.keys.make(key)?, |slot, now| match slot {
            Some(slot) if slot.value == owner.as_bytes() => (
                Op::Put(Slot {
                    value: slot.value.clone(),
                    expires_at: now.checked_add(ttl),
                    counter: None,
                    room: None,
                    index: false,
                }),
                true,
            ),
            _ => (Op::Nop, false),
        }))
    }

    async fn bump_generation(&self, key: &str) -> Result<GenerationBump, StoreError> {
        self.set_if_absent(key, Bytes::from_static(b"0"), Expiry::Never)
            .await?;
        let generation = self.increment(key, 1).await?.unwrap_or(1);
        Ok(GenerationBump {
            generation,
            replicated: true,
        })
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64, StoreError> {
        let now = Instant::now();
        let mut deleted = 0;
        for (key, slot) in self.entries() {
            if glob_match(pattern.as_bytes(), key.as_bytes()) {
                self.entries().invalidate(key.as_str());
                if self.share == Share::RateLimits {
                    self.shared.rate_limit_expiries.forget(&key);
                    self.shared.rooms.change(slot.room, false);
                }
                deleted += u64::from(slot.is_live(now));
            }
        }
        Ok(deleted)
    }
}

impl Store for MemoryStore {
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
        let expiry = expiry.resolve(self.default_timeout);
        self.owner(&key)
            .compute(key, |_, now| match deadline(expiry, now) {
                Deadline::AlreadyExpired => (Op::Remove, ()),
                Deadline::At(expires_at) => (
                    Op::Put(Slot {
                        value,
                        expires_at,
                        counter: None,
                        room: None,
                        index: false,
                    }),
                    (),
                ),
            });
        Ok(())
    }

    async fn set_many(&self, entries: &[(&str, Bytes, Expiry)]) -> Result<(), StoreError> {
        // keys first, so that a bad key writes nothing, as in a failed MULTI
        let keys = entries
            .iter()
            .map(|(key, _, _)| self.keys.make(key))
            .collect::<Result<Vec<_>, _>>()?;
        for (key, (_, value, expiry)) in keys.into_iter().zip(entries) {
            let expiry = expiry.resolve(self.default_timeout);
            let value = value.clone();
            self.owner(&key)
                .compute(key, |_, now| match deadline(expiry, now) {
                    Deadline::AlreadyExpired => (Op::Remove, ()),
                    Deadline::At(expires_at) => (
                        Op::Put(Slot {
                            value,
                            expires_at,
                            counter: None,
                            room: None,
                            index: false,
                        }),
                        (),
                    ),
                });
        }
        Ok(())
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
    ) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let expiry = expiry.resolve(self.default_timeout);
        Ok(self
            .owner(&key)
            .compute(key, |slot, now| match (slot, deadline(expiry, now)) {
                (Some(_), _) | (None, Deadline::AlreadyExpired) => (Op::Nop, false),
                (None, Deadline::At(expires_at)) => (
                    Op::Put(Slot {
                        value,
                        expires_at,
                        counter: None,
                        room: None,
                        index: false,
                    }),
                    true,
                ),
            }))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let mut existed = self.compute(key.clone(), |slot, _| (Op::Remove, slot.is_some()));
        for share in self.layers_shares() {
            existed |= share.compute(key.clone(), |slot, _| (Op::Remove, slot.is_some()));
        }
        Ok(existed)
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let key = self.keys.make(key)?;
        let take = |slot: Option<&Slot>, _| match slot.map(Slot::value) {
            None => (Op::Nop, Ok(None)),
            Some(Ok(value)) => (Op::Remove, Ok(Some(value))),
            Some(Err(err)) => (Op::Nop, Err(err)),
        };
        let taken = self.compute(key.clone(), take)?;
        if taken.is_some() {
            return Ok(taken);
        }
        for share in self.layers_shares() {
            let taken = share.compute(key.clone(), take)?;
            if taken.is_some() {
                return Ok(taken);
            }
        }
        Ok(None)
    }

    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        let (index, member) = (self.keys.make(index)?, self.keys.make(member)?);
        self.owner(&index).compute(index, |slot, now| {
            let mut members = match slot.map(decode_index).transpose() {
                Ok(members) => members.unwrap_or_default(),
                Err(err) => return (Op::Nop, Err(err)),
            };
            if !members.contains(&member) {
                members.push(member);
            }
            members.retain(|member| self.live_slot(member, now).is_some());
            (index_write(&members), Ok(()))
        })
    }

    async fn index_members(&self, index: &str) -> Result<Vec<(String, Ttl)>, StoreError> {
        let index = self.keys.make(index)?;
        self.owner(&index).compute(index, |slot, now| {
            let Some(slot) = slot else {
                return (Op::Nop, Ok(Vec::new()));
            };
            let members = match decode_index(slot) {
                Ok(members) => members,
                Err(err) => return (Op::Nop, Err(err)),
            };
            let live: Vec<(String, Ttl)> = members
                .into_iter()
                .filter_map(|member| {
                    let ttl = match self.live_slot(&member, now)?.remaining_ms(now) {
                        None => Ttl::Persistent,
                        Some(ms) => Ttl::Expires(Duration::from_millis(ms)),
                    };
                    Some((member, ttl))
                })
                .collect();
            let names: Vec<String> = live.iter().map(|(member, _)| member.clone()).collect();
            (index_write(&names), Ok(live))
        })
    }

    async fn index_remove(&self, index: &str, member: &str) -> Result<bool, StoreError> {
        let (index, member) = (self.keys.make(index)?, self.keys.make(member)?);
        self.owner(&index).compute(index, |slot, _| {
            let Some(slot) = slot else {
                return (Op::Nop, Ok(false));
            };
            match decode_index(slot) {
                Ok(mut members) => {
                    let before = members.len();
                    members.retain(|m| *m != member);
                    let removed = members.len() < before;
                    (index_write(&members), Ok(removed))
                }
                Err(err) => (Op::Nop, Err(err)),
            }
        })
    }

    async fn index_delete_all(&self, index: &str) -> Result<u64, StoreError> {
        let index = self.keys.make(index)?;
        let entries = &self.entries();
        self.owner(&index).compute(index, |slot, now| {
            let Some(slot) = slot else {
                return (Op::Nop, Ok(0));
            };
            match decode_index(slot) {
                Ok(members) => {
                    let deleted = members
                        .iter()
                        .filter(|member| {
                            entries
                                .remove(member.as_str())
                                .is_some_and(|slot| slot.is_live(now))
                        })
                        .count();
                    (Op::Remove, Ok(deleted as u64))
                }
                Err(err) => (Op::Nop, Err(err)),
            }
        })
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        let key = self.keys.make(key)?;
        self.owner(&key).compute(key, |slot, _| {
            let Some(slot) = slot else {
                return (Op::Nop, Ok(None));
            };
            if let Some(counter) = &slot.counter {
                // in place, so that concurrent rate-limit hits on the same counter are kept
                let mut current = counter.load(Ordering::Acquire);
                loop {
                    let next = i64::try_from(current)
                        .ok()
                        .and_then(|n| n.checked_add(delta))
                        .and_then(|n| u64::try_from(n).ok());
                    let Some(next) = next else {
                        break;
                    };
                    match counter.compare_exchange_weak(
                        current,
                        next,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return (Op::Nop, Ok(i64::try_from(next).ok())),
                        Err(actual) => current = actual,
                    }
                }
            }
            match increment_value(&slot.data(), delta) {
                Ok(next) => (
                    Op::Put(Slot {
                        value: Bytes::from(next.to_string()),
                        expires_at: slot.expires_at,
                        counter: None,
                        room: None,
                        index: false,
                    }),
                    Ok(Some(next)),
                ),
                Err(err) => (Op::Nop, Err(err)),
            }
        })
    }

    async fn ttl(&self, key: &str) -> Result<Ttl, StoreError> {
        let key = self.keys.make(key)?;
        let now = Instant::now();
        let slot = self.live_slot(&key, now).or_else(|| {
            self.layers_shares()
                .find_map(|share| share.live_slot(&key, now))
        });
        Ok(match slot {
            None => Ttl::Missing,
            Some(slot) => match slot.remaining_ms(now) {
                None => Ttl::Persistent,
                Some(ms) => Ttl::Expires(Duration::from_millis(ms)),
            },
        })
    }

    async fn bump_version(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        let (from, to, version) = self.keys.bumped(key, delta)?;
        let entries = &self.entries();
        // The new key is written while the old one's lock is held, so readers see the value
        // under one version or both, never neither, and concurrent bumps move it once.
        Ok(self.owner(&from).compute(from, |slot, _| match slot {
            None => (Op::Nop, None),
            Some(slot) => {
                if let (Share::RateLimits, Some(at)) = (self.share, slot.expires_at) {
                    self.shared
                        .rate_limit_expiries
                        .expect(&to, at, self.shared.epoch);
                }
                entries.insert(to, slot.clone());
                (Op::Remove, Some(version))
            }
        }))
    }
}

/// Counts a hit on a live window counter unless it is full.
fn count_hit(counter: &AtomicU64, limit: u64, ttl_ms: u64) -> RateDecision {
    let mut current = counter.load(Ordering::Acquire);
    loop {
        if current >= limit {
            return window_decision(limit, false, current, ttl_ms);
        }
        match counter.compare_exchange_weak(
            current,
            current + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return window_decision(limit, true, current + 1, ttl_ms),
            Err(actual) => current = actual,
        }
    }
}

/// Takes `amount` off a counter slot (a window count, a GCRA time), in place.
fn give_back(slot: &Slot, amount: u64) -> bool {
    let Some(counter) = &slot.counter else {
        return false;
    };
    let mut current = counter.load(Ordering::Acquire);
    loop {
        if current == 0 {
            return false;
        }
        let next = current.saturating_sub(amount);
        match counter.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

/// Redis's glob subset the cache's patterns use: `*`, `?` and `\` escapes (character
/// classes are escaped by the layer, never produced).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // iterative, backtracking to the last `*` only: linear-ish whatever the pattern
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((star_p, star_t)) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// An index's members, stored as a JSON array of full keys in a slot marked as an index.
fn decode_index(slot: &Slot) -> Result<Vec<String>, StoreError> {
    if !slot.index {
        return Err(wrong_type("key holds a value, not an index"));
    }
    serde_json::from_slice(&slot.value).map_err(|err| {
        StoreError::with_source(
            StoreErrorKind::InvalidValue,
            "key does not hold an index",
            err,
        )
    })
}

fn index_slot(members: &[String]) -> Slot {
    Slot {
        value: Bytes::from(serde_json::to_vec(members).expect("a list of strings serializes")),
        index: true,
        ..Slot::default()
    }
}

/// An index left with `members`: gone when there are none, as Redis deletes an empty set
/// (an emptied index kept would stay for ever, one per user who ever had one).
fn index_write(members: &[String]) -> Op<Slot> {
    if members.is_empty() {
        Op::Remove
    } else {
        Op::Put(index_slot(members))
    }
}

/// A value read as an index or an index as a value: what Redis answers `WRONGTYPE` for.
fn wrong_type(detail: &'static str) -> StoreError {
    StoreError::new(StoreErrorKind::InvalidValue, detail)
}

fn not_a_counter() -> StoreError {
    StoreError::new(
        StoreErrorKind::InvalidValue,
        "rate-limit key holds a value that is not a counter",
    )
}

fn increment_value(value: &[u8], delta: i64) -> Result<i64, StoreError> {
    let current = parse_integer(value).ok_or_else(|| {
        StoreError::new(
            StoreErrorKind::InvalidValue,
            "value is not an integer or out of range",
        )
    })?;
    current.checked_add(delta).ok_or_else(|| {
        StoreError::new(
            StoreErrorKind::InvalidValue,
            "increment or decrement would overflow",
        )
    })
}

/// Builds a [`MemoryStore`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::store::{MemoryStore, Timeout};
///
/// let store = MemoryStore::builder()
///     .max_entries(1_000)
///     .key_prefix("shop")
///     .default_timeout(Timeout::After(Duration::from_secs(60)))
///     .build()?;
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_entries: u64,
    max_rate_limit_keys: u64,
    max_cache_bytes: u64,
    keys: KeyScheme,
    default_timeout: Timeout,
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_rate_limit_keys: DEFAULT_MAX_RATE_LIMIT_KEYS,
            max_cache_bytes: DEFAULT_MAX_CACHE_BYTES,
            keys: KeyScheme::default(),
            default_timeout: Timeout::default(),
        }
    }
}

impl MemoryStoreBuilder {
    /// The most entries of the general share (tokens, application keys) kept before the least
    /// useful are evicted. Defaults to 100 000.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// assert!(MemoryStore::builder().max_entries(0).build().is_err());
    /// ```
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// The most live keys of each rule in the rate-limit share (and of the keys written
    /// through the store API without a rule). Defaults to 100 000.
    ///
    /// Each rule of a [`RateLimitLayer`](crate::ratelimit::RateLimitLayer) has a room of this
    /// size of its own: a flood of one rule's keys (a code for each of 100,000 numbers) never
    /// fills another's (the login limit per address). A live counter or flag is never evicted
    /// to make room: when a rule's room is full, a new key of that rule fails with
    /// [`StoreErrorKind::CapacityExceeded`] until entries expire, and the rule applies its
    /// failure policy; a rule that guards a secret (a login limit) should fail closed.
    pub fn max_rate_limit_keys(mut self, max: u64) -> Self {
        self.max_rate_limit_keys = max;
        self
    }

    /// The most bytes of the cache share (keys, stored responses, per-entry overhead) kept
    /// before the least useful entries are evicted. Defaults to 64 MiB.
    pub fn max_cache_bytes(mut self, max: u64) -> Self {
        self.max_cache_bytes = max;
        self
    }

    /// The key prefix of the Django layout. Defaults to `""`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{MemoryStore, Store};
    ///
    /// let store = MemoryStore::builder().key_prefix("shop").build()?;
    /// assert_eq!(store.key_scheme().make("a").unwrap(), "shop:1:a");
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn key_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.keys = KeyScheme::django(prefix, self.keys.version());
        self
    }

    /// The version of the Django layout. Defaults to 1.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{MemoryStore, Store};
    ///
    /// let store = MemoryStore::builder().version(3).build()?;
    /// assert_eq!(store.key_scheme().make("a").unwrap(), ":3:a");
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn version(mut self, version: i64) -> Self {
        self.keys = self.keys.with_version(version);
        self
    }

    /// Any key scheme, replacing prefix and version. Defaults to [`KeyScheme::default`].
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{KeyScheme, MemoryStore, Store};
    ///
    /// let store = MemoryStore::builder().key_scheme(KeyScheme::raw()).build()?;
    /// assert!(store.key_scheme().is_raw());
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn key_scheme(mut self, keys: KeyScheme) -> Self {
        self.keys = keys;
        self
    }

    /// What [`Expiry::Default`] means. Defaults to 300 seconds, Django's `TIMEOUT`.
    pub fn default_timeout(mut self, timeout: Timeout) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The store.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidOption`] when `max_entries`, `max_rate_limit_keys` or
    /// `max_cache_bytes` is 0.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let store = MemoryStore::builder().build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn build(self) -> Result<MemoryStore, ConfigError> {
        for (option, value) in [
            ("max_entries", self.max_entries),
            ("max_rate_limit_keys", self.max_rate_limit_keys),
            ("max_cache_bytes", self.max_cache_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::InvalidOption {
                    option,
                    reason: "a memory store needs room for at least one entry".to_owned(),
                });
            }
        }
        let general = Cache::builder()
            .max_capacity(self.max_entries)
            .expire_after(SlotExpiry)
            .build();
        let rate_limits = Cache::builder().build();
        let cache = Cache::builder()
            .max_capacity(self.max_cache_bytes)
            .weigher(|key: &String, slot: &Slot| {
                let weight = key.len() as u64 + slot.value.len() as u64 + SLOT_OVERHEAD;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .expire_after(SlotExpiry)
            .build();
        Ok(MemoryStore {
            shared: Arc::new(Shared {
                general,
                rate_limits,
                rate_limit_expiries: Expiries::default(),
                rooms: Rooms::default(),
                max_rate_limit_keys: self.max_rate_limit_keys,
                rate_limits_settled_ms: AtomicU64::new(0),
                cache,
                epoch: Instant::now(),
            }),
            keys: self.keys,
            default_timeout: self.default_timeout,
            share: Share::General,
        })
    }
}
