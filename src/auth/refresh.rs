//! The sliding tokens this process refreshed lately, so that most requests only read.

use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, which tests pause and advance
use tokio::time::Instant;

/// How many tokens' last refresh a layer remembers: a token forgotten (another one took its
/// slot) is refreshed on its next request, which costs a write, never an early expiry.
const SLOTS: usize = 1024;

/// A store key and when its last refresh was sent.
type Refreshed = (String, Instant);

/// When this process last pushed each sliding token's expiry out, for
/// [`sliding_refresh_interval`](super::TokenAuthBuilder::sliding_refresh_interval): a token
/// refreshed less than `interval` ago is looked up with a plain read, which the memory store
/// and a near cache answer at once, instead of `GETEX`.
///
/// Safe by construction: a refresh recorded at `t` (taken before the refresh was sent) left
/// the token at least `ttl` to live from `t`, and the interval is shorter than `ttl`, so a
/// token skipped until `t + interval` still has `ttl - interval` left when it is refreshed
/// again. A slot holds the whole store key, so one token's refresh never stands for another's.
pub(crate) struct Refreshes {
    interval: Duration,
    hasher: foldhash::fast::RandomState,
    slots: Box<[Mutex<Option<Refreshed>>]>,
}

impl Refreshes {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            hasher: foldhash::fast::RandomState::default(),
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The refresh interval.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether `key` was refreshed by this process less than the interval before `now`.
    pub(crate) fn is_recent(&self, key: &str, now: Instant) -> bool {
        match &*lock(self.slot(key)) {
            Some((refreshed, at)) => {
                refreshed == key && now.saturating_duration_since(*at) < self.interval
            }
            None => false,
        }
    }

    /// Records that `key` was refreshed by a command sent at `at` (or later).
    pub(crate) fn record(&self, key: &str, at: Instant) {
        let mut slot = lock(self.slot(key));
        match &mut *slot {
            Some((refreshed, when)) if refreshed == key => *when = (*when).max(at),
            other => *other = Some((key.to_owned(), at)),
        }
    }

    fn slot(&self, key: &str) -> &Mutex<Option<Refreshed>> {
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, key);
        &self.slots[(hash >> 48) as usize % SLOTS]
    }
}

/// A slot's lock: a panic while one was held leaves a whole record or none.
fn lock<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_refresh_is_recent_for_the_interval_and_for_its_own_key_only() {
        let refreshes = Refreshes::new(Duration::from_secs(60));
        let start = Instant::now();
        assert!(!refreshes.is_recent("t:a", start));
        refreshes.record("t:a", start);
        assert!(refreshes.is_recent("t:a", start));
        assert!(refreshes.is_recent("t:a", start + Duration::from_millis(59_999)));
        assert!(!refreshes.is_recent("t:a", start + Duration::from_secs(60)));
        assert!(!refreshes.is_recent("t:b", start));
        // an earlier refresh answering late does not move the record back
        refreshes.record("t:a", start + Duration::from_secs(30));
        refreshes.record("t:a", start);
        assert!(refreshes.is_recent("t:a", start + Duration::from_secs(89)));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_sharing_a_slot_are_each_refreshed() {
        let refreshes = Refreshes::new(Duration::from_secs(60));
        let now = Instant::now();
        let keys: Vec<String> = (0..SLOTS * 4).map(|i| format!("t:{i}")).collect();
        for key in &keys {
            refreshes.record(key, now);
        }
        // the last of each slot's keys is remembered; none stands for another
        let recent = keys
            .iter()
            .filter(|key| refreshes.is_recent(key, now))
            .count();
        assert!(recent <= SLOTS);
        assert!(refreshes.is_recent(keys.last().unwrap(), now));
    }
}
