//! The unstorable-URL memo (Varnish's hit-for-pass): URLs whose answers could not be stored
//! skip the lookup and the flight for a while.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::flight::HIT_FOR_MISS;

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
}
