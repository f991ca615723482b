//! `MemoryStoreBuilder`: the bounds and key layout a memory store is built with.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

// tokio's clock, which tests pause and advance (`tokio::time::pause`), so that expiry cases
// need not sleep; outside a paused runtime it is the monotonic clock.
use tokio::time::Instant;

use foldhash::fast::RandomState;
use moka::sync::Cache;

use crate::ConfigError;
use crate::store::{KeyScheme, Timeout};

use super::handle::MemoryStore;
use super::shares::{Expiries, Rooms, Share, Shared};
use super::slot::{SLOT_OVERHEAD, Slot, SlotExpiry};

pub(super) const DEFAULT_MAX_ENTRIES: u64 = 100_000;
pub(super) const DEFAULT_MAX_RATE_LIMIT_KEYS: u64 = 100_000;
pub(super) const DEFAULT_MAX_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl MemoryStore {
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
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
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
    pub(super) max_entries: u64,
    pub(super) max_rate_limit_keys: u64,
    pub(super) max_cache_bytes: u64,
    pub(super) keys: KeyScheme,
    pub(super) default_timeout: Timeout,
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
    /// [`StoreErrorKind::CapacityExceeded`](crate::store::StoreErrorKind::CapacityExceeded) until entries expire, and the rule applies its
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

    /// What [`Expiry::Default`](crate::store::Expiry::Default) means. Defaults to 300 seconds, Django's `TIMEOUT`.
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
            .build_with_hasher(RandomState::default());
        let rate_limits = Cache::builder().build_with_hasher(RandomState::default());
        let cache = Cache::builder()
            .max_capacity(self.max_cache_bytes)
            .weigher(|key: &String, slot: &Slot| {
                let weight = key.len() as u64 + slot.value.len() as u64 + SLOT_OVERHEAD;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .expire_after(SlotExpiry)
            .build_with_hasher(RandomState::default());
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
