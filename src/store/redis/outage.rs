//! An outage of the whole store, logged once when it starts and once when it ends.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether calls are failing because Redis is out of reach, so that the log says once when
/// they succeed again.
#[derive(Default)]
pub(super) struct Outage {
    pub(super) failing: AtomicBool,
    pub(super) failed_calls: AtomicU64,
    /// When the calls began failing, and when the latest recovery was logged.
    pub(super) times: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Outage {
    pub(super) fn failed(&self) {
        self.failed_calls.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed)
            && let Ok(mut times) = self.times.lock()
        {
            times.0.get_or_insert_with(Instant::now);
        }
    }

    /// One `INFO` line, at most every [`SUMMARY_EVERY`](crate::observe::SUMMARY_EVERY), so
    /// that a flapping network does not log a line per call either.
    pub(super) fn recovered(&self) {
        // one caller per recovery goes on; a suppressed line leaves its count to the next
        if !self.failing.swap(false, Ordering::Relaxed) {
            return;
        }
        let Ok(mut times) = self.times.lock() else {
            return;
        };
        let now = Instant::now();
        if times
            .1
            .is_some_and(|logged| now.duration_since(logged) < crate::observe::SUMMARY_EVERY)
        {
            return;
        }
        let failed = self.failed_calls.swap(0, Ordering::Relaxed);
        let lasted = times.0.take().map_or(Duration::ZERO, |since| now - since);
        times.1 = Some(now);
        tracing::info!(
            failed,
            for_ms = u64::try_from(lasted.as_millis()).unwrap_or(u64::MAX),
            "Redis answers again after {failed} failed calls over {:.1}s",
            lasted.as_secs_f64()
        );
    }
}
