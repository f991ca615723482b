//! Single flight: concurrent misses on one key run the handler once, in one process (a map of
//! flights) and across processes sharing a store (a short lock in the store).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::entry::Entry;
use super::key;
use super::policy::{self, RequestRules, Verdict};
use crate::store::{AnyStore, Backend, CacheLock, Store, StoredNow};

/// What the leader of a flight ends with: the entry it stored, nothing to share, a failure it
/// met, or nothing at all (it went away first).
#[derive(Clone)]
enum Outcome {
    Pending,
    Done(Option<Arc<Entry>>),
    /// The leader's revalidation failed (a server error, with its status, or the inner
    /// service's error): the stale entry stands.
    Failed(Option<http::StatusCode>),
    /// The leader was dropped before it finished (its client hung up, an outer timeout):
    /// one follower takes its place, the others wait on that one.
    Abandoned,
}

/// How a follower's wait ended.
pub(crate) enum Waited {
    /// The leader finished: its entry, or nothing to share (the follower asks the handler).
    Done(Option<Arc<Entry>>),
    /// The leader's call failed just now, with this status (`None` for an error): a follower
    /// with a stale copy serves it where `stale-if-error` allows, rather than call the
    /// handler after it, or lead a new flight that waits as long again.
    Failed(Option<http::StatusCode>),
    /// The leader went away unfinished: join the flight again, and one follower leads.
    Abandoned,
    /// The leader fell silent (no response head, no piece of its body) for the flight
    /// deadline, or the wait reached its bound in all.
    TimedOut,
}

/// When a flight's leader last showed that it is at work: its start, its response's head, each
/// piece of the body it records, and, while it waits on another instance's lock, each look
/// that finds the lock still held. Followers wait on a leader while its silence stays under
/// the flight deadline, however long the whole takes (a big page from a slow but healthy
/// origin), and the leader's stampede lock is renewed as long.
pub(crate) struct Progress {
    since: tokio::time::Instant,
    /// Milliseconds from `since` to the last sign of work.
    last: AtomicU64,
}

impl Progress {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            since: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// The leader is at work now.
    pub(crate) fn stamp(&self) {
        let elapsed = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(elapsed, Ordering::Relaxed);
    }

    /// When the leader will have been silent for `limit`, if it shows nothing more.
    pub(crate) fn silent_until(&self, limit: Duration) -> tokio::time::Instant {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        // far enough: a limit of years must not overflow the clock
        self.since
            .checked_add(last.saturating_add(limit))
            .unwrap_or_else(|| self.since + Duration::from_secs(100 * 365 * 86_400))
    }
}

/// A flight under way: where its outcome comes, and its leader's progress.
type Flight = (watch::Receiver<Outcome>, Arc<Progress>);

/// The flights under way in this process, by entry key, and the keys whose last answer could
/// not be stored (Varnish's hit-for-miss).
pub(crate) struct Flights {
    flights: Mutex<HashMap<String, Flight>>,
    /// How long a leader may be silent: past it, a request that comes for the key takes the
    /// flight over (the leader's handler hangs, and waiting on it would answer 504 for ever).
    lead_for: Duration,
    /// Keys whose leader's answer was not storable: their requests go straight to the
    /// handler, neither waiting on one another nor taking the lock, until the memo expires or
    /// a storable answer ends it.
    uncacheable: moka::sync::Cache<String, ()>,
}

/// How long a key whose answer was not storable skips the single flight by default, as
/// Varnish's built-in VCL keeps a hit-for-miss object.
pub(crate) const HIT_FOR_MISS: std::time::Duration = std::time::Duration::from_secs(120);

impl Default for Flights {
    fn default() -> Self {
        Self::new(HIT_FOR_MISS, Duration::from_secs(30))
    }
}

/// The URLs that, with nothing stored for them, were answered with something that could not be
/// stored: their next requests skip the lookup as well as the flight and go straight to the
/// handler (Varnish's hit-for-pass), so a never-storable route costs the handler and no round
/// trip. A storable answer ends the memo, and the request after it is looked up and stored as
/// usual. Requests with and without credentials are remembered apart: a page that logged-in
/// users get uncached must not stop anonymous requests from finding its shared entry.
///
/// In-process only, and bounded: a flood of distinct URLs clears it, which costs lookups, not
/// correctness. An entry another instance stores meanwhile is found once the memo ends.
/// URLs are remembered by their [identity](super::key::UrlParts::identity) under keys random
/// to this process, so that a request need not build its key to be checked.
///
/// Every GET asks the memo, so its answers are read without a shared write where possible:
/// an empty half is seen from a counter, and each thread keeps the memo's last few positive
/// answers until they expire or a URL is forgotten (a lock taken by every request on every
/// core made its cache line travel between them).
pub(crate) struct UnstorableUrls {
    for_how_long: Duration,
    hasher: foldhash::fast::RandomState,
    /// Until when each URL is remembered, for requests without and with credentials.
    urls: [Mutex<HashMap<u64, tokio::time::Instant, Prehashed>>; 2],
    /// How many URLs each half holds, readable without its lock.
    lens: [AtomicUsize; 2],
    /// Tells this memo's answers kept by threads apart from another memo's.
    memo: u64,
    /// Grows whenever a URL leaves the memo before its time: answers kept by threads from
    /// before then are no longer trusted.
    forgotten: AtomicU64,
}

/// A positive answer of a memo kept by one thread.
#[derive(Clone, Copy)]
struct KeptAnswer {
    memo: u64,
    forgotten: u64,
    url: u64,
    credentialed: bool,
    until: tokio::time::Instant,
}

/// How many answers each thread keeps: a few hot unstorable URLs interleaved stay local.
const KEPT_ANSWERS: usize = 4;

thread_local! {
    static KEPT: std::cell::Cell<[Option<KeptAnswer>; KEPT_ANSWERS]> =
        const { std::cell::Cell::new([None; KEPT_ANSWERS]) };
}

/// Numbers the memos of a process, for [`KeptAnswer::memo`].
static MEMOS: AtomicU64 = AtomicU64::new(0);

/// The hasher of a map whose keys are hashes already.
type Prehashed = std::hash::BuildHasherDefault<PrehashedKey>;

#[derive(Default)]
pub(crate) struct PrehashedKey(u64);

impl std::hash::Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // only `write_u64` is used by `u64` keys; any other input is folded in
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

/// One request in this many, on a remembered unstorable URL, has its answer checked for
/// storability (see [`UnstorableUrls::rechecks`]).
pub(crate) const RECHECK_EVERY: u32 = 8;

/// How many URLs each half of [`UnstorableUrls`] holds before it starts over.
const MAX_UNSTORABLE_URLS: usize = 10_000;

impl UnstorableUrls {
    pub(crate) fn new(for_how_long: Duration) -> Self {
        Self {
            for_how_long,
            hasher: foldhash::fast::RandomState::default(),
            urls: Default::default(),
            lens: Default::default(),
            memo: MEMOS.fetch_add(1, Ordering::Relaxed),
            forgotten: AtomicU64::new(0),
        }
    }

    /// The identity `url` is remembered by.
    pub(crate) fn identity(&self, url: &super::key::UrlParts<'_>) -> u64 {
        url.identity(&self.hasher)
    }

    fn half(
        &self,
        credentialed: bool,
    ) -> MutexGuard<'_, HashMap<u64, tokio::time::Instant, Prehashed>> {
        self.urls[usize::from(credentialed)]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the memo holds any URL for requests with (or without) credentials.
    pub(crate) fn holds_any(&self, credentialed: bool) -> bool {
        self.lens[usize::from(credentialed)].load(Ordering::Relaxed) != 0
    }

    /// Whether the URL was answered unstorably, for requests like this one, within the
    /// memo's time.
    pub(crate) fn remembers(&self, url: u64, credentialed: bool) -> bool {
        let half = usize::from(credentialed);
        if self.lens[half].load(Ordering::Relaxed) == 0 {
            return false;
        }
        // read before the memo, so that a URL forgotten meanwhile is not kept
        let forgotten = self.forgotten.load(Ordering::Acquire);
        let slot = (url as usize) % KEPT_ANSWERS;
        let now = tokio::time::Instant::now();
        let mut kept = KEPT.get();
        if let Some(answer) = kept[slot]
            && answer.memo == self.memo
            && answer.url == url
            && answer.credentialed == credentialed
            && answer.forgotten == forgotten
            && now < answer.until
        {
            return true;
        }
        let until = self.half(credentialed).get(&url).copied();
        let Some(until) = until.filter(|until| now < *until) else {
            return false;
        };
        kept[slot] = Some(KeptAnswer {
            memo: self.memo,
            forgotten,
            url,
            credentialed,
            until,
        });
        KEPT.set(kept);
        true
    }

    pub(crate) fn remember(&self, url: u64, credentialed: bool) {
        if self.for_how_long.is_zero() {
            return;
        }
        let now = tokio::time::Instant::now();
        let mut urls = self.half(credentialed);
        if urls.len() >= MAX_UNSTORABLE_URLS && !urls.contains_key(&url) {
            urls.retain(|_, until| now < *until);
            if urls.len() >= MAX_UNSTORABLE_URLS {
                urls.clear();
            }
            // the URLs dropped may be kept by threads
            self.forgotten.fetch_add(1, Ordering::Release);
        }
        urls.insert(url, now + self.for_how_long);
        self.lens[usize::from(credentialed)].store(urls.len(), Ordering::Relaxed);
    }

    /// Whether this request on the memo has its answer checked for storability: one in
    /// [`RECHECK_EVERY`] per thread. The others pass without the check, which costs as much
    /// as the rest of the layer; a storable answer then ends the memo within a few requests
    /// rather than at the first.
    pub(crate) fn rechecks(&self) -> bool {
        thread_local! {
            static PASSED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        }
        PASSED.with(|passed| {
            let n = passed.get().wrapping_add(1);
            passed.set(n);
            n % RECHECK_EVERY == 0
        })
    }

    /// A storable answer for the URL: its requests look it up again.
    pub(crate) fn forget(&self, url: u64) {
        for credentialed in [false, true] {
            if self.lens[usize::from(credentialed)].load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut urls = self.half(credentialed);
            if urls.remove(&url).is_some() {
                self.forgotten.fetch_add(1, Ordering::Release);
            }
            self.lens[usize::from(credentialed)].store(urls.len(), Ordering::Relaxed);
        }
    }
}

/// The role of a request that missed.
pub(crate) enum Role {
    /// Runs the handler; completes the flight when its response is stored, or on drop.
    Leader(FlightGuard),
    /// Waits for the leader.
    Follower(Waiter),
    /// The key's last answer could not be stored: no flight to join or lead.
    Pass,
}

impl Flights {
    /// Flights that remember an unstorable key for `hit_for_miss`.
    pub(crate) fn new(hit_for_miss: Duration, lead_for: Duration) -> Self {
        Self {
            flights: Mutex::default(),
            lead_for,
            uncacheable: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(hit_for_miss)
                .build(),
        }
    }

    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Role {
        if self.uncacheable.contains_key(key) {
            return Role::Pass;
        }
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((receiver, progress)) = flights.get(key) {
            // a finished flight whose guard is being dropped is not worth waiting for, nor is
            // one whose leader has been silent for the flight deadline (its handler hangs):
            // this request takes it over, and its own followers wait on it
            if matches!(*receiver.borrow(), Outcome::Pending)
                && tokio::time::Instant::now() < progress.silent_until(self.lead_for)
            {
                return Role::Follower(Waiter {
                    receiver: receiver.clone(),
                    progress: Arc::clone(progress),
                });
            }
        }
        let (sender, receiver) = watch::channel(Outcome::Pending);
        let progress = Progress::new();
        flights.insert(key.to_owned(), (receiver, Arc::clone(&progress)));
        Role::Leader(FlightGuard {
            flights: Arc::clone(self),
            key: key.to_owned(),
            sender,
            progress,
        })
    }

    /// A waiter on the flight under way for `key`, if there is one and its leader is at
    /// work: for a request that may wait on a flight but not lead one (a `HEAD`, a range).
    pub(crate) fn follow(&self, key: &str) -> Option<Waiter> {
        let flights = self
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (receiver, progress) = flights.get(key)?;
        (matches!(*receiver.borrow(), Outcome::Pending)
            && tokio::time::Instant::now() < progress.silent_until(self.lead_for))
        .then(|| Waiter {
            receiver: receiver.clone(),
            progress: Arc::clone(progress),
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.flights.lock().unwrap().len()
    }
}

/// The leader's hold on a flight. Dropping it without [`complete`](Self::complete) releases
/// the followers to run the handler themselves.
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: String,
    sender: watch::Sender<Outcome>,
    progress: Arc<Progress>,
}

impl FlightGuard {
    /// Where the leader shows that it is at work.
    pub(crate) fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Shares `entry` with the followers; a storable answer ends the key's hit-for-miss memo.
    pub(crate) fn complete(self, entry: Arc<Entry>) {
        self.flights.uncacheable.invalidate(&self.key);
        self.sender.send_replace(Outcome::Done(Some(entry)));
    }

    /// The key this flight is for.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The leader's revalidation failed (`status`, or `None` for an error), whether or not
    /// its stale copy could be served in its place: the followers are told, and the key is not
    /// remembered as unstorable, since its entry stands.
    pub(crate) fn failed(self, status: Option<http::StatusCode>) {
        self.sender.send_replace(Outcome::Failed(status));
    }

    /// The leader's answer cannot be stored: the followers are released to the handler, and
    /// later requests for the key skip the flight while the memo lasts.
    pub(crate) fn uncacheable(self) {
        self.flights.uncacheable.insert(self.key.clone(), ());
        self.sender.send_replace(Outcome::Done(None));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // unfinished: its request went away, or the handler failed. A follower takes over,
        // one at a time, rather than all of them calling the handler at once.
        self.sender.send_if_modified(|outcome| {
            if matches!(outcome, Outcome::Pending) {
                *outcome = Outcome::Abandoned;
                true
            } else {
                false
            }
        });
        let mut flights = self
            .flights
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // only our own flight: a newer one may hold the key by now
        if flights
            .get(&self.key)
            .is_some_and(|(receiver, _)| receiver.same_channel(&self.sender.subscribe()))
        {
            flights.remove(&self.key);
        }
    }
}

/// How long a request waits on flights: while the leader's silence stays under `silence`,
/// and until `gives_up_at` at most, counted from the request's arrival however many flights
/// it waits on (a leader that goes away hands the flight on).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitLimits {
    pub(crate) silence: Duration,
    pub(crate) gives_up_at: tokio::time::Instant,
}

/// A follower's view of the flight.
pub(crate) struct Waiter {
    receiver: watch::Receiver<Outcome>,
    progress: Arc<Progress>,
}

impl Waiter {
    /// Waits for the leader while it shows work at least once per `limits.silence` (the
    /// flight deadline), until `limits.gives_up_at` at most. A leader still at work after `patience`
    /// is noted as slow (a metric and a log line), and waited for all the same: calling the
    /// handler beside it would add load exactly when the origin is slow.
    pub(crate) async fn wait(mut self, patience: Duration, limits: WaitLimits) -> Waited {
        let progress = self.progress;
        let now = tokio::time::Instant::now();
        let (silence, gives_up_at) = (limits.silence, limits.gives_up_at);
        let finished = self
            .receiver
            .wait_for(|outcome| !matches!(outcome, Outcome::Pending));
        let mut finished = std::pin::pin!(finished);
        let patience_ends = (now + patience)
            .min(progress.silent_until(silence))
            .min(gives_up_at);
        let within_patience = tokio::time::timeout_at(patience_ends, &mut finished)
            .await
            .map(|outcome| outcome.map(|outcome| outcome.clone()));
        let outcome = match within_patience {
            Ok(outcome) => outcome,
            Err(_) => {
                crate::observe::cache("flight_slow");
                tracing::debug!(
                    "a single flight's leader is still at work after the flight wait; waiting on"
                );
                loop {
                    let until = progress.silent_until(silence).min(gives_up_at);
                    match tokio::time::timeout_at(until, &mut finished).await {
                        Ok(outcome) => break outcome.map(|outcome| outcome.clone()),
                        // the leader showed work meanwhile: its silence is counted anew
                        Err(_)
                            if tokio::time::Instant::now()
                                < progress.silent_until(silence).min(gives_up_at) => {}
                        Err(_) => return Waited::TimedOut,
                    }
                }
            }
        };
        match outcome {
            Ok(Outcome::Done(entry)) => Waited::Done(entry),
            Ok(Outcome::Failed(status)) => Waited::Failed(status),
            // the leader's guard is gone without a word: as good as abandoned
            Ok(Outcome::Abandoned | Outcome::Pending) | Err(_) => Waited::Abandoned,
        }
    }
}

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
    use std::time::SystemTime;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;

    #[test]
    fn one_request_in_eight_on_the_memo_has_its_answer_checked() {
        let urls = UnstorableUrls::new(HIT_FOR_MISS);
        let checked = (0..8 * 10).filter(|_| urls.rechecks()).count();
        assert_eq!(checked, 10);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_url_forgotten_on_another_thread_is_not_remembered_from_this_threads_copy() {
        let urls = Arc::new(UnstorableUrls::new(HIT_FOR_MISS));
        urls.remember(7, true);
        urls.remember(8, true);
        // kept by this thread
        assert!(urls.remembers(7, true));
        assert!(urls.remembers(7, true));
        assert!(!urls.remembers(7, false), "the halves are apart");
        let other = Arc::clone(&urls);
        std::thread::spawn(move || other.forget(7)).join().unwrap();
        assert!(!urls.remembers(7, true));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_kept_answer_ends_with_the_memo_time_and_two_memos_keep_apart() {
        let urls = UnstorableUrls::new(Duration::from_secs(10));
        let other = UnstorableUrls::new(Duration::from_secs(10));
        urls.remember(3, false);
        assert!(urls.remembers(3, false));
        other.remember(4, false);
        assert!(!other.remembers(3, false), "another memo never saw URL 3");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!urls.remembers(3, false));
    }
    use crate::store::{CacheWrite, MemoryStore};

    fn entry() -> Arc<Entry> {
        Arc::new(Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"x"),
            stored_at: SystemTime::now(),
            initial_age: Duration::ZERO,
            freshness: Duration::from_secs(1),
            keep: Duration::from_secs(1),
            reuse: crate::cache::policy::Reuse::default(),
            vary: Vec::new(),
            variant: "-".to_owned(),
        })
    }

    #[tokio::test]
    async fn followers_get_the_leaders_entry() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(guard) = flights.join("k") else {
            panic!("first is the leader")
        };
        let Role::Follower(waiter) = flights.join("k") else {
            panic!("second follows")
        };
        let waiting = tokio::spawn(waiter.wait(Duration::from_secs(5), limits(10)));
        guard.complete(entry());
        assert!(matches!(waiting.await.unwrap(), Waited::Done(Some(_))));
        assert_eq!(flights.len(), 0);
        assert!(
            matches!(flights.join("k"), Role::Leader(_)),
            "a finished flight starts anew"
        );
    }

    /// A leader whose call failed (and which served its stale copy) tells every follower at
    /// once, with the status, and leaves no hit-for-miss memo: the entry stands.
    #[tokio::test]
    async fn followers_learn_of_the_leaders_failure_at_once() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(guard) = flights.join("k") else {
            panic!("first is the leader")
        };
        let followers: Vec<Waiter> = (0..3)
            .map(|_| match flights.join("k") {
                Role::Follower(waiter) => waiter,
                _ => panic!("a follower"),
            })
            .collect();
        guard.failed(Some(StatusCode::GATEWAY_TIMEOUT));
        for waiter in followers {
            assert!(matches!(
                waiter.wait(Duration::from_secs(5), limits(10)).await,
                Waited::Failed(Some(StatusCode::GATEWAY_TIMEOUT))
            ));
        }
        assert!(matches!(flights.join("k"), Role::Leader(_)), "no memo");
    }

    /// A leader dropped unfinished (its client hung up) hands the flight on: each follower
    /// joins again, the first leads and the others follow it, so one handler call replaces
    /// the lost one, not one per follower (issue 35, finding 2).
    #[tokio::test]
    async fn a_dropped_leader_hands_the_flight_to_one_follower() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(guard) = flights.join("k") else {
            panic!()
        };
        let followers: Vec<Waiter> = (0..3)
            .map(|_| match flights.join("k") {
                Role::Follower(waiter) => waiter,
                _ => panic!("a follower"),
            })
            .collect();
        drop(guard);
        let mut leaders = 0;
        let mut guards = Vec::new();
        for waiter in followers {
            assert!(matches!(
                waiter.wait(Duration::from_secs(5), limits(10)).await,
                Waited::Abandoned
            ));
            match flights.join("k") {
                Role::Leader(guard) => {
                    leaders += 1;
                    guards.push(guard);
                }
                Role::Follower(_) => {}
                Role::Pass => panic!("no memo was set"),
            }
        }
        assert_eq!(leaders, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_waits_past_its_patience_for_a_working_leader_until_the_deadline() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(guard) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(waiter) = flights.join("k") else {
            panic!()
        };
        let waiting = tokio::spawn(waiter.wait(Duration::from_secs(5), limits(30)));
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(!waiting.is_finished(), "gave up at its patience");
        guard.complete(entry());
        assert!(matches!(waiting.await.unwrap(), Waited::Done(Some(_))));

        let Role::Leader(_guard) = flights.join("j") else {
            panic!()
        };
        let Role::Follower(waiter) = flights.join("j") else {
            panic!()
        };
        assert!(matches!(
            waiter.wait(Duration::from_secs(5), limits(30)).await,
            Waited::TimedOut
        ));
    }

    /// A leader that keeps showing work (a slow body, piece by piece) is waited on past the
    /// deadline, as long as no silence reaches it; the first silence that does ends the wait.
    #[tokio::test(start_paused = true)]
    async fn a_leader_at_work_is_waited_on_past_the_deadline_until_it_falls_silent() {
        let flights = Arc::new(Flights::new(HIT_FOR_MISS, Duration::from_secs(30)));
        let Role::Leader(guard) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(waiter) = flights.join("k") else {
            panic!()
        };
        let waiting = tokio::spawn(waiter.wait(Duration::from_secs(5), limits(30)));
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            guard.progress().stamp();
        }
        assert!(
            !waiting.is_finished(),
            "gave up on a leader at work after 80 s"
        );
        // a request arriving now follows too: the leader is not taken to hang
        assert!(matches!(flights.join("k"), Role::Follower(_)));
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(matches!(waiting.await.unwrap(), Waited::TimedOut));
        assert!(
            matches!(flights.join("k"), Role::Leader(_)),
            "a silent leader is taken over"
        );
        drop(guard);
    }

    fn limits(silence: u64) -> WaitLimits {
        WaitLimits {
            silence: Duration::from_secs(silence),
            gives_up_at: tokio::time::Instant::now() + Duration::from_secs(3600),
        }
    }

    /// However its leader works, a follower waits its total bound at most: a body that
    /// trickles forever does not hold it.
    #[tokio::test(start_paused = true)]
    async fn a_follower_gives_up_at_its_total_bound_however_the_leader_works() {
        let flights = Arc::new(Flights::new(HIT_FOR_MISS, Duration::from_secs(30)));
        let Role::Leader(guard) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(waiter) = flights.join("k") else {
            panic!()
        };
        let started = tokio::time::Instant::now();
        let bound = WaitLimits {
            silence: Duration::from_secs(30),
            gives_up_at: started + Duration::from_secs(120),
        };
        let waiting = tokio::spawn(waiter.wait(Duration::from_secs(5), bound));
        while !waiting.is_finished() {
            tokio::time::sleep(Duration::from_secs(10)).await;
            guard.progress().stamp();
        }
        assert!(matches!(waiting.await.unwrap(), Waited::TimedOut));
        assert!(
            started.elapsed() <= Duration::from_secs(130),
            "{:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() >= Duration::from_secs(120),
            "{:?}",
            started.elapsed()
        );
    }

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
