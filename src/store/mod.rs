//! The storage every layer shares: a [`Store`] trait with two backends.
//!
//! - [`RedisStore`]: Redis through a [bb8] pool of [bb8-redis] multiplexed connections.
//! - [`MemoryStore`]: in-process, bounded and TTL-aware, with the same semantics, so examples
//!   and unit tests need no server.
//! - [`AnyStore`] chooses between them at run time, and [`Stores`] holds named stores
//!   (`default`, `session`, `verify_codes`, ...) the way Django's `CACHES` setting does,
//!   built from code or from a [`StoresConfig`] document.
//!
//! [bb8]: https://docs.rs/bb8
//! [bb8-redis]: https://docs.rs/bb8-redis
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use tower_redis_http::store::{Expiry, MemoryStore, Store};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::builder().key_prefix("app").build()?;
//!
//! // One phone number, one code per minute: an atomic send flag.
//! let first = store.set_if_absent("send_flag_13800138000", Bytes::from_static(b"1"), Duration::from_secs(60).into()).await?;
//! let second = store.set_if_absent("send_flag_13800138000", Bytes::from_static(b"1"), Duration::from_secs(60).into()).await?;
//! assert!(first && !second);
//!
//! store.set("visits", Bytes::from_static(b"41"), Expiry::Never).await?;
//! assert_eq!(store.increment("visits", 1).await?, Some(42));
//! # Ok(()) }
//! ```
//!
//! # Keys
//!
//! Every operation takes the *logical* key and applies the store's [`KeyScheme`] to it, by
//! default Django's `prefix:version:key`, so `MemoryStore` and `RedisStore` agree and a Rust
//! service reads the keys django-redis wrote (`:1:abc` when the prefix is empty). See
//! [`KeyScheme`] for the raw and custom layouts, and [`value`] for how values are encoded.
//!
//! # Atomicity, and Redis Cluster
//!
//! Each operation is atomic on its own: a single Redis command or a Lua script, and a per-key
//! compute in the memory store. No operation checks and then sets across two round trips. Every
//! operation touches one key, except [`Store::bump_version`], which moves one logical key
//! between two versions, and the `index_*` operations, which read or delete the keys an index
//! names. On a Redis Cluster ([`RedisStore::cluster`]) those keys live in different slots, and
//! these operations run as several steps, ordered so that no live member escapes its index;
//! [`Store::set_many`] is atomic per slot there. [`RedisStore::cluster`] says what holds.
//!
//! # Failures
//!
//! A store call fails with a [`StoreError`] whose [`kind`](StoreError::kind) tells a timeout
//! from a lost connection or a refused command. Every Redis call is bounded: by the connect
//! timeout while it waits for a connection, and by the command timeout for the reply. What a layer does with the error is its
//! [`FailurePolicy`](crate::FailurePolicy).

// Read bottom-up: the leaves say what a backend is asked and answers (`error`, `key`,
// `value`, `expiry`, `rate`, `durable`, `tls`); `backend` is the one internal interface every
// backend implements once, and the `Store` trait below is written on it; `memory/` and
// `redis/` are the two backends; `named` chooses between them at run time, and `config/`
// turns Django's `CACHES` into stores.

mod backend;
mod config;
mod durable;
mod error;
mod expiry;
mod key;
mod memory;
mod named;
mod rate;
mod redis;
mod tls;
pub mod value;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

pub(crate) use self::backend::{
    Backend, CacheLock, CacheWrite, Expiring, GenerationBump, StoredNow, at_once, hit_for_miss_key,
};
pub use self::config::{PoolArgument, StoreConfig, StoreOptions, StoresConfig};
pub use self::durable::Durability;
pub use self::error::{StoreError, StoreErrorKind};
pub(crate) use self::expiry::ttl_ms_ceil;
pub use self::expiry::{Expiry, MAX_EXPIRY, Timeout, Ttl};
pub(crate) use self::key::escape_glob;
pub use self::key::{KeyFn, KeyScheme};
pub use self::memory::{MemoryStore, MemoryStoreBuilder, MemoryUsage};
pub use self::named::{AnyStore, Stores, StoresBuilder};
pub(crate) use self::rate::new_ticket;
pub use self::rate::{RateDecision, RatePolicy};
pub use self::redis::{MAX_CALL_TIMEOUT, NearCache, NearCacheUsage, RedisStore, RedisStoreBuilder};
pub use self::tls::Pem;

/// The operations the layers need, each atomic on its own.
///
/// Keys are logical keys: the store applies its [`KeyScheme`] (prefix, version) itself. Values
/// are raw bytes; [`value`] has the encoding that django-redis's JSON serializer shares.
///
/// The methods return `impl Future + Send`, so the trait is not object-safe; [`AnyStore`] is
/// the run-time choice between backends. Implementations are cheap to clone (handles onto a
/// shared pool or cache).
///
/// The trait is **sealed**: [`RedisStore`], [`MemoryStore`] and [`AnyStore`] implement it,
/// and nothing outside this crate can. It is here to be *called* (code generic over the
/// backend, as below), not to bring another client: the layers also need operations this
/// trait does not show (the cache's atomic write-and-unlock, its stampede lock, the
/// rate-limit scripts' exact semantics on a server clock), which the two backends provide
/// with the guarantees the layers are tested against. Each backend implements every
/// operation once, behind a crate-internal interface that this trait requires; the methods
/// with a full-key form (`get`, `get_and_refresh`, `rate_limit`, `release`) are written once
/// on top of it for every backend.
///
/// # Example
///
/// Code generic over the backend:
///
/// ```
/// use bytes::Bytes;
/// use tower_redis_http::store::{Expiry, MemoryStore, Store, StoreError};
///
/// async fn remember_login<S: Store>(store: &S, token: &str, user_json: &str) -> Result<(), StoreError> {
///     let ttl = std::time::Duration::from_secs(72 * 3600);
///     store.set(token, Bytes::copy_from_slice(user_json.as_bytes()), ttl.into()).await
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// remember_login(&store, "abc123", r#"{"id":1}"#).await?;
/// assert_eq!(store.get("abc123").await?.as_deref(), Some(&br#"{"id":1}"#[..]));
/// # Ok(()) }
/// ```
pub trait Store: backend::Backend {
    /// The key layout this store applies to every key.
    fn key_scheme(&self) -> &KeyScheme;

    /// The same backend (the same pool or entries) seen through another key scheme.
    #[must_use]
    fn with_key_scheme(&self, keys: KeyScheme) -> Self;

    /// The same backend, with `version` in its key scheme (Django's `version=` argument).
    #[must_use]
    fn with_version(&self, version: i64) -> Self {
        self.with_key_scheme(self.key_scheme().with_version(version))
    }

    /// The value under `key`, or `None`.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send {
        async move { self.get_full(&self.key_scheme().make(key)?).await }
    }

    /// The value under `key`, with its expiry pushed out to `ttl` from now in the same atomic
    /// step (sliding sessions; Redis `GETEX ... PX`). A missing key stays missing.
    fn get_and_refresh(
        &self,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send {
        async move {
            self.get_and_refresh_full(&self.key_scheme().make(key)?, ttl)
                .await
        }
    }

    /// Stores `value` under `key`, replacing any value and expiry it had.
    fn set(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores several values in one atomic step and one round trip (a `MULTI` pipeline in
    /// Redis): a cache entry and the list of headers it varies on, for instance. Zero expiries
    /// delete, as in [`set`](Store::set). On a Redis Cluster: one atomic step per hash slot.
    fn set_many(
        &self,
        entries: &[(&str, Bytes, Expiry)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores `value` only if `key` holds nothing, and tells whether it did (Django's `add`,
    /// Redis `SET NX`). Of many concurrent callers exactly one gets `true`. A zero expiry stores
    /// nothing and returns `false`.
    fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Removes `key`, telling whether it existed.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Removes `key` and returns the value it held, in one atomic step (Redis `GETDEL`): of
    /// concurrent callers, one gets the value.
    fn take(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;

    /// Adds the key `member` to the set of keys under `index` (a user's live tokens, say), and
    /// drops members whose keys no longer exist, in one atomic step. Indexes never expire by
    /// themselves; pruning keeps them as small as their live members. On a Redis Cluster, the
    /// add and the pruning are separate steps (see [`RedisStore::cluster`]).
    fn index_add(
        &self,
        index: &str,
        member: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The members of `index` whose keys still exist, with their remaining lifetimes (members
    /// whose keys are gone are dropped on the way).
    fn index_members(
        &self,
        index: &str,
    ) -> impl Future<Output = Result<Vec<(String, Ttl)>, StoreError>> + Send;

    /// Removes `member` from `index`, telling whether it was there.
    fn index_remove(
        &self,
        index: &str,
        member: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes every member's key and the index itself in one atomic step, returning how many
    /// member keys existed. A member added after this step is not affected. On a Redis
    /// Cluster, the members read are deleted and then removed from the index, so a member
    /// added meanwhile stays listed.
    fn index_delete_all(&self, index: &str)
    -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Adds `delta` to the integer under `key`, keeping its expiry, and returns the new value;
    /// `None` when the key does not exist (Django raises `ValueError` there). A value that is not
    /// a decimal integer is an error of kind [`StoreErrorKind::InvalidValue`].
    fn increment(
        &self,
        key: &str,
        delta: i64,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// The remaining lifetime of `key`.
    fn ttl(&self, key: &str) -> impl Future<Output = Result<Ttl, StoreError>> + Send;

    /// Moves the value under `key` from this store's version to `version + delta`, keeping its
    /// expiry and replacing what the new version held, and returns the new version; `None` when
    /// the key does not exist. This is Django's `incr_version`, but atomic. Read the moved value
    /// through [`with_version`](Store::with_version).
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Unsupported`] when the key scheme ignores the version
    /// ([`KeyScheme::raw`]), because the key would move onto itself.
    fn bump_version(
        &self,
        key: &str,
        delta: i64,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// Counts one hit against `key` under `policy` and tells whether it is allowed, in one atomic
    /// step. Redis evaluates it on the server's clock, so instances with skewed clocks share one
    /// limit. A denied hit is not counted.
    fn rate_limit(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> impl Future<Output = Result<RateDecision, StoreError>> + Send {
        async move {
            self.rate_limit_full(&self.key_scheme().make(key)?, policy)
                .await
        }
    }

    /// Gives back the hit an allowed `decision` counted (commit on success: a failed SMS send
    /// does not use up the minute), telling whether anything was given back. A cooldown flag is
    /// cleared only if it is still the one this hit set, so a release never frees a slot that a
    /// later request holds. On Redis a window hit is given back only to the window it was
    /// counted in, never to a later one.
    fn release(
        &self,
        key: &str,
        policy: &RatePolicy,
        decision: &RateDecision,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            if !decision.allowed {
                return Ok(false);
            }
            self.release_full(&self.key_scheme().make(key)?, policy, decision)
                .await
        }
    }
}
