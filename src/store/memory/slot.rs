//! One entry of the store: its value, expiry and counter, and what reads and writes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// tokio's clock, which tests pause and advance (`tokio::time::pause`), so that expiry cases
// need not sleep; outside a paused runtime it is the monotonic clock.
use tokio::time::Instant;

use bytes::Bytes;
use moka::ops::compute::Op;

use crate::store::value::parse_integer;
use crate::store::{Expiry, StoreError, StoreErrorKind, ttl_ms_ceil};

/// What a cache slot costs beyond its key and value, for the cache share's byte bound.
pub(super) const SLOT_OVERHEAD: u64 = 96;

#[derive(Clone, Default)]
pub(super) struct Slot {
    pub(super) value: Bytes,
    pub(super) expires_at: Option<Instant>,
    /// A rate-limit count or GCRA time, updated in place by compare-and-swap so that a hit
    /// reads the entry without writing a new one (a moka write costs about seven reads).
    /// When set, it is the slot's value and `value` is unused.
    pub(super) counter: Option<Arc<AtomicU64>>,
    /// The rate-limit room the key is counted in (see [`Rooms`]).
    pub(super) room: Option<u64>,
    /// An index (a set of keys, kept as Redis keeps a set), not a value: value reads refuse
    /// it, and index operations refuse a value, as Redis answers `WRONGTYPE` for either.
    pub(super) index: bool,
}

impl Slot {
    pub(super) fn counter(number: u64, expires_at: Option<Instant>) -> Self {
        Self {
            counter: Some(Arc::new(AtomicU64::new(number))),
            expires_at,
            ..Self::default()
        }
    }

    /// The value as stored bytes (a counter as decimal text, as Redis keeps it).
    pub(super) fn data(&self) -> Bytes {
        match &self.counter {
            Some(counter) => Bytes::from(counter.load(Ordering::Acquire).to_string()),
            None => self.value.clone(),
        }
    }

    /// The value, unless the slot holds an index.
    pub(super) fn value(&self) -> Result<Bytes, StoreError> {
        if self.index {
            return Err(wrong_type("key holds an index, not a value"));
        }
        Ok(self.data())
    }

    /// The value as a non-negative counter, if it is one.
    pub(super) fn number(&self) -> Option<u64> {
        match &self.counter {
            Some(counter) => Some(counter.load(Ordering::Acquire)),
            None => parse_integer(&self.value).and_then(|n| u64::try_from(n).ok()),
        }
    }

    pub(super) fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    pub(super) fn remaining_ms(&self, now: Instant) -> Option<u64> {
        self.expires_at
            .map(|at| duration_ms_floor(at.saturating_duration_since(now)))
    }
}

/// Hands moka each entry's own deadline, so that it evicts expired entries on its own.
pub(super) struct SlotExpiry;

/// moka counts the time left on its own (real) clock: a test that advances a paused clock
/// finds an entry expired by its deadline here before moka evicts it.
impl moka::Expiry<String, Slot> for SlotExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        slot: &Slot,
        _moka_now: std::time::Instant,
    ) -> Option<Duration> {
        slot.expires_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        slot: &Slot,
        _moka_now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        slot.expires_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

pub(super) fn duration_ms_floor(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Where a write with `expiry` leaves the key: a deadline, no deadline, or gone.
pub(super) enum Deadline {
    At(Option<Instant>),
    AlreadyExpired,
}

pub(super) fn deadline(expiry: Expiry, now: Instant) -> Deadline {
    match expiry {
        Expiry::Never | Expiry::Default => Deadline::At(None),
        Expiry::After(ttl) if ttl.is_zero() => Deadline::AlreadyExpired,
        Expiry::After(ttl) => {
            Deadline::At(now.checked_add(Duration::from_millis(ttl_ms_ceil(ttl))))
        }
    }
}

/// An index's members, stored as a JSON array of full keys in a slot marked as an index.
pub(super) fn decode_index(slot: &Slot) -> Result<Vec<String>, StoreError> {
    if !slot.index {
        return Err(wrong_type("key holds a value, not an index"));
    }
    serde_json::from_slice(&slot.value).map_err(|err| {
        StoreError::with_source(
            StoreErrorKind::InvalidValue,
            "key does not hold an index",
            err,
        )
    })
}

pub(super) fn index_slot(members: &[String]) -> Slot {
    Slot {
        value: Bytes::from(serde_json::to_vec(members).expect("a list of strings serializes")),
        index: true,
        ..Slot::default()
    }
}

/// An index left with `members`: gone when there are none, as Redis deletes an empty set
/// (an emptied index kept would stay for ever, one per user who ever had one).
pub(super) fn index_write(members: &[String]) -> Op<Slot> {
    if members.is_empty() {
        Op::Remove
    } else {
        Op::Put(index_slot(members))
    }
}

/// A value read as an index or an index as a value: what Redis answers `WRONGTYPE` for.
pub(super) fn wrong_type(detail: &'static str) -> StoreError {
    StoreError::new(StoreErrorKind::InvalidValue, detail)
}

pub(super) fn not_a_counter() -> StoreError {
    StoreError::new(
        StoreErrorKind::InvalidValue,
        "rate-limit key holds a value that is not a counter",
    )
}

pub(super) fn increment_value(value: &[u8], delta: i64) -> Result<i64, StoreError> {
    let current = parse_integer(value).ok_or_else(|| {
        StoreError::new(
            StoreErrorKind::InvalidValue,
            "value is not an integer or out of range",
        )
    })?;
    current.checked_add(delta).ok_or_else(|| {
        StoreError::new(
            StoreErrorKind::InvalidValue,
            "increment or decrement would overflow",
        )
    })
}
