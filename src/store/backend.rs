//! The operations the layers send to a store, on full keys (the key scheme already applied),
//! written once per backend.
//!
//! [`Backend`] is the crate's one interface to a backend: each store implements every
//! operation once, as a future. The public [`Store`](super::Store) methods that have a
//! full-key form are written once on top of it, and [`AnyStore`](super::AnyStore) forwards to
//! whichever backend it holds. The memory store's futures are ready at their first poll:
//! [`at_once`] polls one there, which is how a layer decides within `call` without a second
//! version of the operation.
//!
//! The trait is public in this private module, so that [`Store`](super::Store) can require it
//! (which seals `Store`) while nothing outside the crate can name or implement it.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use super::{RateDecision, RatePolicy, StoreError};

/// A value and how long it has left to live in the store (`None`: no expiry).
pub(crate) type Expiring = (Bytes, Option<Duration>);

/// A backend of the crate's stores: the operations the layers send, on full keys.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Whether every future of this backend is ready at its first poll (the memory store), so
    /// that [`at_once`] may decide a request within `call`.
    fn answers_at_once(&self) -> bool {
        false
    }

    /// The value under a full key if it can be had without waiting: always from the memory
    /// store, from a Redis store's near cache when it holds the key; `None` when only a round
    /// trip can tell (then nothing was started).
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, StoreError>>;

    /// [`get_now`](Self::get_now), with how long the value has left to live in the store as
    /// far as it is known without a round trip (`None`: no expiry). The near cache knows it
    /// from the `PTTL` read with the value; it is a bound taken when the value was read, so a
    /// key written since has left the near cache (Redis told it) rather than kept a stale
    /// expiry. `None` where only a round trip can tell.
    fn get_now_expiring(&self, key: &str) -> Option<Result<Option<Expiring>, StoreError>> {
        let _ = key;
        None
    }

    /// The value under a full key, with how long it has left to live (`None`: no expiry), in
    /// one round trip (`GET` and `PTTL`); through the near cache, which it fills.
    fn get_expiring_full(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Expiring>, StoreError>> + Send;

    /// The value under a full key.
    fn get_full(&self, key: &str)
    -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;

    /// The value under a full key, its expiry pushed out to `ttl` from now in the same step.
    fn get_and_refresh_full(
        &self,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;

    /// Counts a hit on a full key under `policy`, in one atomic step.
    fn rate_limit_full(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> impl Future<Output = Result<RateDecision, StoreError>> + Send;

    /// Gives back the hit an allowed `decision` counted on a full key.
    fn release_full(
        &self,
        key: &str,
        policy: &RatePolicy,
        decision: &RateDecision,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The cache's write: see [`CacheWrite`] (logical keys, the store applies its scheme).
    fn cache_put(
        &self,
        write: &CacheWrite<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The cache's stampede lock, taken with a read of what is stored now in one step; `None`
    /// when another owner holds it. See [`CacheLock`].
    fn lock_and_read(
        &self,
        lock: &CacheLock<'_>,
    ) -> impl Future<Output = Result<Option<StoredNow>, StoreError>> + Send;

    /// Releases the cache lock under the logical `key` if `owner` still holds it.
    fn unlock(
        &self,
        key: &str,
        owner: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the cache lock under the logical `key` `ttl` more to live, if `owner` still
    /// holds it: a holder at work past the lock's life keeps the others waiting on it.
    fn renew_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Adds one to the cache's namespace generation under the logical `key` (created at 0),
    /// and tells whether every replica of the server has the new number: a bump that only
    /// the master holds can be lost with it, and an older generation come back.
    fn bump_generation(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<GenerationBump, StoreError>> + Send;

    /// Deletes every key whose full form matches the glob `pattern` (`*`, `?` and `\`
    /// escapes, as Redis `SCAN MATCH` reads them; `SCAN`, never `KEYS`, on Redis), and tells
    /// how many were deleted.
    fn delete_matching(
        &self,
        pattern: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The output of `future` if it is ready at its first poll. Only for the futures of a backend
/// that [answers at once](Backend::answers_at_once): any other future polled here would
/// register no waker worth having and be dropped half done.
// inlined, so that the memory store's future is built and polled in place
#[inline(always)]
pub(crate) fn at_once<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// A cache entry to store in one atomic step: the entry, its URL's Vary list, their record in
/// the URL's index (so every variant can be invalidated at once; the index lives as long as
/// its longest-lived member), and the release of the stampede lock the writer holds.
#[derive(Debug)]
pub struct CacheWrite<'a> {
    pub entry_key: &'a str,
    pub entry: Bytes,
    pub vary_key: &'a str,
    pub vary: Bytes,
    pub index_key: &'a str,
    pub ttl: Duration,
    /// The lock's key and its owner's token.
    pub unlock: Option<(&'a str, &'a str)>,
}

/// A cache entry's stampede lock to take, and the keys to read in the same atomic step.
#[derive(Debug)]
pub struct CacheLock<'a> {
    pub lock_key: &'a str,
    pub owner: &'a str,
    pub ttl: Duration,
    pub vary_key: &'a str,
    pub entry_key: &'a str,
}

/// A bumped generation, see [`Backend::bump_generation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationBump {
    pub generation: i64,
    /// Whether every replica acknowledged it (always, without replicas).
    pub replicated: bool,
}

/// What was stored when a [`CacheLock`] was taken.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StoredNow {
    pub vary: Option<Bytes>,
    pub entry: Option<Bytes>,
    /// The lock was not taken: the entry's last answer could not be stored (its
    /// hit-for-miss memo, see [`hit_for_miss_key`]), so nobody waits for an entry.
    pub uncacheable: bool,
}

/// Where the memo that an entry's last answer could not be stored lives: beside the entry, in
/// its hash slot.
pub(crate) fn hit_for_miss_key(entry_key: &str) -> String {
    let mut key = String::with_capacity(entry_key.len() + 4);
    key.push_str(entry_key);
    key.push_str(":hfm");
    key
}
