//! `AnyStore`, the run-time choice of backend, and `Stores`, named stores as Django's `CACHES`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{
    Backend, CacheLock, CacheWrite, Expiring, Expiry, GenerationBump, KeyScheme, MemoryStore,
    RateDecision, RatePolicy, RedisStore, Store, StoreError, StoredNow, Ttl, at_once,
};
use crate::ConfigError;

/// A store whose backend is chosen at run time, from configuration or the environment.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::{AnyStore, MemoryStore, RedisStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower_redis_http::ConfigError> {
/// let store: AnyStore = match std::env::var("REDIS_URL") {
///     Ok(url) => RedisStore::builder(url).build().await?.into(),
///     Err(_) => MemoryStore::new().into(),
/// };
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// Redis.
    Redis(RedisStore),
    /// The embedded in-memory store.
    Memory(MemoryStore),
}

impl From<RedisStore> for AnyStore {
    fn from(store: RedisStore) -> Self {
        Self::Redis(store)
    }
}

impl From<MemoryStore> for AnyStore {
    fn from(store: MemoryStore) -> Self {
        Self::Memory(store)
    }
}

/// Forwards a `Store` or `Backend` method to whichever backend this is.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Redis($store) => $call,
            AnyStore::Memory($store) => $call,
        }
    };
}

impl AnyStore {
    /// A readiness check for health endpoints: [`RedisStore::ping`] (`PING`, within the
    /// command timeout), or [`MemoryStore::ping`] (always ready).
    ///
    /// # Errors
    ///
    /// The [`StoreError`] of a Redis that did not answer.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{AnyStore, MemoryStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let store = AnyStore::from(MemoryStore::new());
    /// assert!(store.ping().await.is_ok());
    /// # }
    /// ```
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, store => store.ping().await)
    }
}

/// The shares of a memory store the layers keep their state in.
impl AnyStore {
    /// Where the rate-limit layer keeps its state: the memory store's rate-limit share, whose
    /// live entries are never evicted; Redis as it is.
    pub(crate) fn for_rate_limits(&self) -> Self {
        match self {
            Self::Memory(store) => Self::Memory(store.for_rate_limits()),
            Self::Redis(_) => self.clone(),
        }
    }

    /// How many changes a Redis store's near cache has been told of (or made) so far; `None`
    /// without a near cache.
    #[inline]
    pub(crate) fn near_cache_changes(&self) -> Option<u64> {
        match self {
            Self::Redis(store) => store.near_cache_changes(),
            Self::Memory(_) => None,
        }
    }

    /// The same store, with every write made through the returned handle under
    /// `durability` (see [`Durability`](super::Durability)); the memory store as it is.
    pub(crate) fn durable(&self, durability: super::Durability) -> Self {
        match self {
            Self::Redis(store) => Self::Redis(store.with_durability(durability)),
            Self::Memory(_) => self.clone(),
        }
    }

    /// [`Store::get`](super::Store::get) of a key this process wants to hear about even while
    /// it does not exist (the cache's namespace generation): on a Redis store with a near
    /// cache the read is tracked whatever it finds, so another instance creating the key is
    /// announced. Only for keys the crate names itself, a handful per layer: a key that does
    /// not exist stays in Redis's tracking table until it is written.
    pub(crate) async fn get_watched(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self {
            Self::Redis(store) => store.get_watched(key).await,
            Self::Memory(store) => store.get(key).await,
        }
    }

    /// Whether reads may be answered from process memory without being the memory store: a
    /// Redis store with a near cache.
    #[inline]
    pub(crate) fn has_near_cache(&self) -> bool {
        matches!(self, Self::Redis(store) if store.has_near_cache())
    }

    /// `operation` on the memory store, decided at once (its futures are ready at their first
    /// poll), so that a layer answers within `call`; `None` on Redis, whose answer needs a
    /// round trip (the operation is then not started).
    #[inline(always)]
    pub(crate) fn now<'a, F: Future>(
        &'a self,
        operation: impl FnOnce(&'a MemoryStore) -> F,
    ) -> Option<F::Output> {
        match self {
            Self::Memory(store) => at_once(operation(store)),
            Self::Redis(_) => None,
        }
    }

    /// Where the cache layer keeps its entries: the memory store's cache share, bounded in
    /// bytes apart from tokens and rate-limit state; Redis as it is.
    pub(crate) fn for_cache(&self) -> Self {
        match self {
            Self::Memory(store) => Self::Memory(store.for_cache()),
            Self::Redis(_) => self.clone(),
        }
    }
}

impl Backend for AnyStore {
    fn answers_at_once(&self) -> bool {
        dispatch!(self, store => store.answers_at_once())
    }

    #[inline]
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, StoreError>> {
        dispatch!(self, store => store.get_now(key))
    }

    #[inline]
    fn get_now_expiring(&self, key: &str) -> Option<Result<Option<Expiring>, StoreError>> {
        dispatch!(self, store => store.get_now_expiring(key))
    }

    async fn get_expiring_full(&self, key: &str) -> Result<Option<Expiring>, StoreError> {
        dispatch!(self, store => store.get_expiring_full(key).await)
    }

    async fn get_full(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        dispatch!(self, store => store.get_full(key).await)
    }

    async fn get_and_refresh_full(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Bytes>, StoreError> {
        dispatch!(self, store => store.get_and_refresh_full(key, ttl).await)
    }

    async fn rate_limit_full(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> Result<RateDecision, StoreError> {
        dispatch!(self, store => store.rate_limit_full(key, policy).await)
    }

    async fn release_full(
        &self,
        key: &str,
        policy: &RatePolicy,
        decision: &RateDecision,
    ) -> Result<bool, StoreError> {
        dispatch!(self, store => store.release_full(key, policy, decision).await)
    }

    async fn cache_put(&self, write: &CacheWrite<'_>) -> Result<(), StoreError> {
        dispatch!(self, store => store.cache_put(write).await)
    }

    async fn lock_and_read(&self, lock: &CacheLock<'_>) -> Result<Option<StoredNow>, StoreError> {
        dispatch!(self, store => store.lock_and_read(lock).await)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        dispatch!(self, store => store.unlock(key, owner).await)
    }

    async fn renew_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        dispatch!(self, store => store.renew_lock(key, owner, ttl).await)
    }

    async fn bump_generation(&self, key: &str) -> Result<GenerationBump, StoreError> {
        dispatch!(self, store => store.bump_generation(key).await)
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64, StoreError> {
        dispatch!(self, store => store.delete_matching(pattern).await)
    }
}

impl Store for AnyStore {
    fn key_scheme(&self) -> &KeyScheme {
        dispatch!(self, store => store.key_scheme())
    }

    fn with_key_scheme(&self, keys: KeyScheme) -> Self {
        dispatch!(self, store => store.with_key_scheme(keys).into())
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<(), StoreError> {
        dispatch!(self, store => store.set(key, value, expiry).await)
    }

    async fn set_many(&self, entries: &[(&str, Bytes, Expiry)]) -> Result<(), StoreError> {
        dispatch!(self, store => store.set_many(entries).await)
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
    ) -> Result<bool, StoreError> {
        dispatch!(self, store => store.set_if_absent(key, value, expiry).await)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        dispatch!(self, store => store.delete(key).await)
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        dispatch!(self, store => store.take(key).await)
    }

    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        dispatch!(self, store => store.index_add(index, member).await)
    }

    async fn index_members(&self, index: &str) -> Result<Vec<(String, Ttl)>, StoreError> {
        dispatch!(self, store => store.index_members(index).await)
    }

    async fn index_remove(&self, index: &str, member: &str) -> Result<bool, StoreError> {
        dispatch!(self, store => store.index_remove(index, member).await)
    }

    async fn index_delete_all(&self, index: &str) -> Result<u64, StoreError> {
        dispatch!(self, store => store.index_delete_all(index).await)
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        dispatch!(self, store => store.increment(key, delta).await)
    }

    async fn ttl(&self, key: &str) -> Result<Ttl, StoreError> {
        dispatch!(self, store => store.ttl(key).await)
    }

    async fn bump_version(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        dispatch!(self, store => store.bump_version(key, delta).await)
    }
}

/// Stores by alias, as Django's `caches["verify_codes"]`.
///
/// Cheap to clone; build it once at start-up and hand each layer the alias it uses.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::{MemoryStore, Stores};
///
/// let stores = Stores::builder()
///     .store("default", MemoryStore::new())
///     .store("verify_codes", MemoryStore::builder().key_prefix("codes").build()?)
///     .build();
/// let codes = stores.get("verify_codes")?;
/// let err = stores.get("sessions").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "unknown store alias `sessions`; configured aliases: default, verify_codes"
/// );
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Stores {
    stores: Arc<BTreeMap<String, AnyStore>>,
}

impl Stores {
    /// A builder to add stores to.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::Stores;
    ///
    /// assert_eq!(Stores::builder().build().aliases().count(), 0);
    /// ```
    pub fn builder() -> StoresBuilder {
        StoresBuilder::default()
    }

    /// The store named `alias`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownAlias`], naming the alias and the configured ones.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{MemoryStore, Stores};
    ///
    /// let stores = Stores::builder().store("default", MemoryStore::new()).build();
    /// assert!(stores.get("default").is_ok());
    /// ```
    pub fn get(&self, alias: &str) -> Result<AnyStore, ConfigError> {
        self.stores
            .get(alias)
            .cloned()
            .ok_or_else(|| ConfigError::UnknownAlias {
                alias: alias.to_owned(),
                known: self.stores.keys().cloned().collect(),
            })
    }

    /// The configured aliases, sorted.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{MemoryStore, Stores};
    ///
    /// let stores = Stores::builder().store("b", MemoryStore::new()).store("a", MemoryStore::new()).build();
    /// assert_eq!(stores.aliases().collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    /// Pings every store at once ([`AnyStore::ping`]) and gives each alias its answer: what a
    /// readiness endpoint reports. Each ping is bounded by its store's command timeout, so the
    /// whole check takes no longer than the slowest timeout.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{MemoryStore, Stores};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let stores = Stores::builder().store("default", MemoryStore::new()).build();
    /// let answers = stores.ping().await;
    /// assert_eq!(answers.len(), 1);
    /// assert!(answers[0].1.is_ok());
    /// # }
    /// ```
    pub async fn ping(&self) -> Vec<(&str, Result<(), StoreError>)> {
        // at once where a Tokio runtime runs this, one after another elsewhere
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let mut answers = Vec::with_capacity(self.stores.len());
            for (alias, store) in self.stores.iter() {
                answers.push((alias.as_str(), store.ping().await));
            }
            return answers;
        };
        let pings: Vec<_> = self
            .stores
            .iter()
            .map(|(alias, store)| {
                let store = store.clone();
                (
                    alias.as_str(),
                    runtime.spawn(async move { store.ping().await }),
                )
            })
            .collect();
        let mut answers = Vec::with_capacity(pings.len());
        for (alias, ping) in pings {
            let answer = ping.await.unwrap_or_else(|err| {
                Err(StoreError::new(
                    crate::store::StoreErrorKind::Connection,
                    format!("the ping task failed: {err}"),
                ))
            });
            answers.push((alias, answer));
        }
        answers
    }
}

/// Collects stores for [`Stores`].
///
/// # Example
///
/// ```
/// use tower_redis_http::store::{MemoryStore, Stores};
///
/// let stores = Stores::builder().store("default", MemoryStore::new()).build();
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct StoresBuilder {
    stores: BTreeMap<String, AnyStore>,
}

impl StoresBuilder {
    /// Adds `store` under `alias`, replacing any store of that alias.
    pub fn store(mut self, alias: impl Into<String>, store: impl Into<AnyStore>) -> Self {
        self.stores.insert(alias.into(), store.into());
        self
    }

    /// The finished set of stores.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::Stores;
    ///
    /// let stores = Stores::builder().build();
    /// ```
    pub fn build(self) -> Stores {
        Stores {
            stores: Arc::new(self.stores),
        }
    }
}
