//! The rate-limit policies on the memory store (send flag, fixed window, GCRA), each one atomic compute.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// tokio's clock, which tests pause and advance (`tokio::time::pause`), so that expiry cases
// need not sleep; outside a paused runtime it is the monotonic clock.
use tokio::time::Instant;

use bytes::Bytes;
use moka::ops::compute::Op;

use crate::store::rate::{cooldown_decision, gcra_step, new_ticket, window_decision};
use crate::store::{RateDecision, StoreError, ttl_ms_ceil};

use super::handle::MemoryStore;
use super::slot::{Slot, duration_ms_floor, not_a_counter, wrong_type};

impl MemoryStore {
    /// A send flag: set when absent, for `interval_ms`.
    #[inline]
    pub(super) fn cooldown(
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
    pub(super) fn fixed_window(
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
    pub(super) fn in_window(
        &self,
        mut decision: RateDecision,
        window_end: Option<Instant>,
    ) -> RateDecision {
        if decision.allowed {
            decision.window_end_ms = self.window_mark(window_end);
        }
        decision
    }

    /// A window's end as milliseconds after the store's epoch.
    pub(super) fn window_mark(&self, window_end: Option<Instant>) -> Option<u64> {
        window_end.map(|at| {
            u64::try_from(at.saturating_duration_since(self.shared.epoch).as_millis())
                .unwrap_or(u64::MAX)
        })
    }

    /// A GCRA's theoretical arrival time, stepped in place while its slot outlives it.
    #[inline]
    pub(super) fn gcra(
        &self,
        key: &str,
        room: Option<u64>,
        emission_us: u64,
        tolerance_us: u64,
        burst: u64,
    ) -> Result<RateDecision, StoreError> {
        let now = Instant::now();
        let now_us = self.micros_at(now);
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
}

/// Counts a hit on a live window counter unless it is full.
pub(super) fn count_hit(counter: &AtomicU64, limit: u64, ttl_ms: u64) -> RateDecision {
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
pub(super) fn give_back(slot: &Slot, amount: u64) -> bool {
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
