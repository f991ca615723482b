//! The cross-process stampede lock: across instances sharing a store, one runs the handler
//! for a key while the others wait for its entry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::entry::Entry;
use super::flight::Progress;
use super::key;
use super::policy::{self, RequestRules, Verdict};
use crate::store::{AnyStore, Backend, CacheLock, Store, StoredNow};

/// The cross-process stampede lock an instance holds on an entry key: `SET NX PX` with an
/// owner token, released by its owner only (with the entry's write, or on drop), and expiring
/// by itself if the holder dies. While it is held, a task renews it every third of its life
/// for as long as the holder shows work within the flight deadline ([`Progress`]), so that an
/// origin slower than the lock's life does not let another instance call it too: the other
/// instances wait while the holder is at work, and take over once it is not.
pub(crate) struct StoreLock {
    pub(crate) store: AnyStore,
    pub(crate) key: String,
    pub(crate) owner: Arc<str>,
    progress: Arc<Progress>,
    released: bool,
    renewal: Option<tokio::task::AbortHandle>,
}

impl StoreLock {
    /// The lock `owner` just took on `key` for `ttl`, renewed from now on until the holder's
    /// `progress` has been silent for `silence` (the flight deadline, after which its waiters
    /// give up anyway: a handler that hangs must not hold the key for ever).
    fn held(
        store: AnyStore,
        key: String,
        owner: Arc<str>,
        ttl: Duration,
        progress: Arc<Progress>,
        silence: Duration,
    ) -> Self {
        let renewal = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (store, key, owner) = (store.clone(), key.clone(), Arc::clone(&owner));
            let progress = Arc::clone(&progress);
            runtime
                .spawn(async move {
                    loop {
                        tokio::time::sleep(ttl / 3).await;
                        if tokio::time::Instant::now() >= progress.silent_until(silence) {
                            return;
                        }
                        // lost (expired and taken) or unreachable: the lock's own life ends it
                        if !matches!(store.renew_lock(&key, &owner, ttl).await, Ok(true)) {
                            return;
                        }
                    }
                })
                .abort_handle()
        });
        Self {
            store,
            key,
            owner,
            progress,
            released: false,
            renewal,
        }
    }

    /// Where the holder shows that it is at work.
    pub(crate) fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Marks the lock as released by the entry's write, which carries the release.
    pub(crate) fn released_by_write(mut self) -> (String, Arc<str>) {
        self.released = true;
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        (std::mem::take(&mut self.key), Arc::clone(&self.owner))
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key, owner) = (
                self.store.clone(),
                std::mem::take(&mut self.key),
                Arc::clone(&self.owner),
            );
            runtime.spawn(async move {
                let _ = store.unlock(&key, &owner).await;
            });
        }
    }
}

/// What an instance that leads its in-process flight learns from the store.
pub(crate) enum Locked {
    /// It holds the lock (or the store failed, or waiting timed out): it runs the handler.
    Lead(Option<StoreLock>),
    /// Another instance stored a fresh entry meanwhile.
    Entry(Entry),
    /// Another instance holds the lock and the stale copy may be served meanwhile.
    ServeStale,
    /// The entry's last answer (in any instance) could not be stored: no lock, no waiting.
    Uncacheable,
    /// Another instance still held the lock when this wait reached its bound in all
    /// ([`single_flight_max_wait`](super::ResponseCacheBuilder::single_flight_max_wait)).
    TimedOut,
}

/// What a lock attempt needs to know.
pub(crate) struct LockAttempt {
    pub(crate) store: AnyStore,
    /// The entry the lock guards (the lock is this key with `:lock`).
    pub(crate) entry_key: String,
    pub(crate) lock_ttl: Duration,
    /// Where the holder's entry will appear: the URL's Vary list and the entry keys it
    /// leads to for this request's headers.
    pub(crate) vary_key: String,
    pub(crate) prefix: String,
    pub(crate) url: String,
    pub(crate) request_headers: http::HeaderMap,
    /// What the request asks of an entry: one that turns up must satisfy it as it stands.
    pub(crate) rules: RequestRules,
    pub(crate) serve_stale_meanwhile: bool,
    /// The leader's progress in this process, which waiting on a live lock keeps up.
    pub(crate) progress: Arc<Progress>,
    /// The flight deadline: the longest the leader may be silent.
    pub(crate) silence: Duration,
    /// When waiting on another instance's lock ends, however its holder works.
    pub(crate) gives_up_at: tokio::time::Instant,
}

impl LockAttempt {
    /// Takes the lock, or waits for the holder's entry: polling with a growing interval until
    /// the entry appears or the lock is free (the holder finished without storing, or died or
    /// hung and its lock, no longer renewed, expired: this instance takes over). A lock still
    /// held is renewed only while its holder is at work, so each look that finds it held
    /// counts as progress for this process's followers.
    pub(crate) async fn run(self) -> Locked {
        let started = std::time::Instant::now();
        let locked = self.acquire().await;
        // an entry another instance stored while this one waited: a request collapsed
        // across processes
        if matches!(locked, Locked::Entry(_)) {
            crate::observe::cache("collapsed");
        }
        crate::observe::cache_lock_wait(started.elapsed());
        locked
    }

    async fn acquire(self) -> Locked {
        let owner = crate::store::new_ticket();
        let lock_key = key::lock_key(&self.entry_key);
        let mut interval = Duration::from_millis(10);
        loop {
            let attempt = CacheLock {
                lock_key: &lock_key,
                owner: &owner,
                ttl: self.lock_ttl,
                vary_key: &self.vary_key,
                entry_key: &self.entry_key,
            };
            match self.store.lock_and_read(&attempt).await {
                Ok(Some(stored)) if stored.uncacheable => return Locked::Uncacheable,
                Ok(Some(stored)) => {
                    let lock = StoreLock::held(
                        self.store.clone(),
                        lock_key,
                        owner,
                        self.lock_ttl,
                        Arc::clone(&self.progress),
                        self.silence,
                    );
                    // a holder that stored and released between this request's lookup and
                    // now: its entry is served (and the lock dropped), not rendered again
                    return match self.new_entry(stored).await {
                        Some(entry) => Locked::Entry(entry),
                        None => Locked::Lead(Some(lock)),
                    };
                }
                Ok(None) if self.serve_stale_meanwhile => return Locked::ServeStale,
                // the holder is at work (or its lock has not expired yet): calling the handler
                // beside it would double the load on a slow origin
                Ok(None) => self.progress.stamp(),
                // fail open: the cache is an optimisation, the handler is the truth
                Err(_) => return Locked::Lead(None),
            }
            if tokio::time::Instant::now() + interval > self.gives_up_at {
                return Locked::TimedOut;
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 3 / 2).min(Duration::from_millis(200));
            if let Some(entry) = self.stored_entry().await {
                return Locked::Entry(entry);
            }
        }
    }

    /// A fresh entry for this request among what was read with the lock.
    async fn new_entry(&self, stored: StoredNow) -> Option<Entry> {
        let vary = key::decode_vary(&stored.vary?)?;
        let key = self.variant_key(&vary);
        let entry = if key == self.entry_key {
            stored.entry?
        } else {
            // stored under a Vary list this request did not know: one read where it leads
            self.store.get(&key).await.ok()??
        };
        self.usable(&entry, &vary)
    }

    /// A fresh entry for this request, if one is stored now (a flight that ended between
    /// this request's lookup and its joining stored it).
    pub(crate) async fn fresh_entry(&self) -> Option<Entry> {
        self.stored_entry().await
    }

    /// A fresh entry for this request, if the holder has stored one.
    async fn stored_entry(&self) -> Option<Entry> {
        let vary = key::decode_vary(&self.store.get(&self.vary_key).await.ok()??)?;
        let stored = self.store.get(&self.variant_key(&vary)).await.ok()??;
        self.usable(&stored, &vary)
    }

    /// The key of this request's entry under the Vary list `vary`.
    fn variant_key(&self, vary: &[http::HeaderName]) -> String {
        let variant = key::variant_hash(vary, &self.request_headers);
        key::entry_key(&self.prefix, &self.url, &variant)
    }

    /// `stored` decoded, if it is stored under `vary` and fresh enough for the request (the
    /// stale entry the request set out to refresh is not; nor is any under `no-cache`).
    fn usable(&self, stored: &bytes::Bytes, vary: &[http::HeaderName]) -> Option<Entry> {
        let entry = Entry::decode(stored).ok()?;
        let verdict = policy::verdict(
            entry.age(SystemTime::now()),
            entry.freshness,
            &entry.reuse,
            &self.rules,
        );
        (entry.vary == vary && verdict == Verdict::Fresh).then_some(entry)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;
    use crate::store::{CacheWrite, MemoryStore};

    const URL: &str = "http://shop/a";

    fn attempt(store: &AnyStore, rules: RequestRules) -> LockAttempt {
        LockAttempt {
            store: store.clone(),
            entry_key: key::entry_key("cache:", URL, "-"),
            lock_ttl: Duration::from_secs(10),
            vary_key: key::vary_key("cache:", URL),
            prefix: "cache:".to_owned(),
            url: URL.to_owned(),
            request_headers: HeaderMap::new(),
            rules,
            serve_stale_meanwhile: false,
            progress: Progress::new(),
            silence: Duration::from_secs(1),
            gives_up_at: tokio::time::Instant::now() + Duration::from_secs(1),
        }
    }

    /// What a holder that stored and released its lock leaves behind.
    async fn stored_by_another_holder(store: &AnyStore) {
        let entry = Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"rendered once"),
            stored_at: SystemTime::now(),
            initial_age: Duration::ZERO,
            freshness: Duration::from_secs(60),
            keep: Duration::from_secs(60),
            reuse: policy::Reuse::default(),
            vary: Vec::new(),
            variant: "-".to_owned(),
        };
        store
            .cache_put(&CacheWrite {
                entry_key: &key::entry_key("cache:", URL, "-"),
                entry: entry.encode(None),
                vary_key: &key::vary_key("cache:", URL),
                vary: Bytes::from(key::encode_vary(&[])),
                index_key: &key::index_key("cache:", URL),
                ttl: entry.keep,
                unlock: None,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_entry_stored_between_lookup_and_lock_is_served_and_the_lock_given_back() {
        let store = AnyStore::from(MemoryStore::new());
        stored_by_another_holder(&store).await;
        let Locked::Entry(entry) = attempt(&store, RequestRules::default()).run().await else {
            panic!("the stored entry is served instead of rendering again");
        };
        assert_eq!(entry.body, "rendered once");
        tokio::task::yield_now().await;
        let lock = key::lock_key(&key::entry_key("cache:", URL, "-"));
        assert_eq!(
            store.get(&lock).await.unwrap(),
            None,
            "the lock is released"
        );
    }

    #[tokio::test]
    async fn a_request_that_demands_revalidation_takes_the_lock_whatever_is_stored() {
        let store = AnyStore::from(MemoryStore::new());
        stored_by_another_holder(&store).await;
        let no_cache = RequestRules {
            no_cache: true,
            ..RequestRules::default()
        };
        assert!(matches!(
            attempt(&store, no_cache).run().await,
            Locked::Lead(Some(_))
        ));
    }
}
