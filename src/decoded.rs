//! Values decoded from stored bytes, kept by those bytes so that a hit does not decode again.

use std::sync::Mutex;

/// How many decoded values a memo keeps: enough for the hot tokens or pages of a process.
const SLOTS: usize = 256;

/// The largest stored value a memo keeps the decoding of, so that a memo holds at most
/// `SLOTS` times this many bytes of stored values (1 MiB).
const MAX_BYTES: usize = 4096;

/// Who the value is for (see [`DecodedMemo::get_or_decode`]), the stored bytes, copied (a
/// slice of a stored page would keep the whole page alive), and the value they decode to.
type Decoded<T> = (Box<str>, Box<[u8]>, T);

/// Values decoded from stored bytes (a principal's JSON, a cache entry), kept by the exact
/// bytes they came from: a request whose lookup answers bytes decoded before gets a copy of
/// the value without decoding them again.
///
/// Keyed by content (and by an owner, see [`get_or_decode`](Self::get_or_decode)), so
/// nothing can go stale: a value changed in Redis (or in the memory store) comes back as other
/// bytes, which miss, and are decoded. The decoding must be a function of the bytes alone. A direct-mapped table of [`SLOTS`] entries, placed
/// by a hash seeded per process: two values that land in one slot take turns, which costs a
/// decode, never a wrong answer, since a hit compares the whole bytes.
pub(crate) struct DecodedMemo<T> {
    hasher: foldhash::fast::RandomState,
    slots: Box<[Mutex<Option<Decoded<T>>>]>,
}

impl<T: Clone> DecodedMemo<T> {
    pub(crate) fn new() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The value `stored` decodes to for `owner`: kept from an earlier decoding of the same
    /// bytes for the same owner, or `decode`d now and kept. A failed decoding is not kept (it
    /// is the rare case, and is logged by the caller every time).
    ///
    /// `owner` keeps values apart that must not be shared: a value is cloned for every
    /// request, so a value holding shared state (an `Arc<Mutex<_>>` a principal type skips in
    /// its JSON) would carry one request's state into another's. The auth layer passes the
    /// token's store key, so two users whose stored JSON is equal never share a principal.
    pub(crate) fn get_or_decode<E>(
        &self,
        owner: &str,
        stored: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<T, E> {
        if stored.len() > MAX_BYTES {
            return decode(stored);
        }
        let slot = &self.slots[self.slot_of(owner, stored)];
        if let Some((kept_owner, bytes, value)) = &*lock(slot)
            && **bytes == *stored
            && **kept_owner == *owner
        {
            return Ok(value.clone());
        }
        let value = decode(stored)?;
        *lock(slot) = Some((owner.into(), stored.into(), value.clone()));
        Ok(value)
    }

    fn slot_of(&self, owner: &str, stored: &[u8]) -> usize {
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, (owner, stored));
        // the high bits: foldhash mixes them best
        (hash >> 56) as usize % SLOTS
    }
}

/// A slot's lock: a panic while one was held (in a `Clone` of the value) leaves a whole
/// value or none, so the slot stays usable.
fn lock<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T> std::fmt::Debug for DecodedMemo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedMemo").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use bytes::Bytes;

    use super::*;

    fn decode_counting(calls: &Cell<usize>) -> impl Fn(&[u8]) -> Result<String, ()> + '_ {
        move |bytes| {
            calls.set(calls.get() + 1);
            String::from_utf8(bytes.to_vec()).map_err(|_| ())
        }
    }

    #[test]
    fn the_same_bytes_decode_once_and_other_bytes_decode_anew() {
        let memo = DecodedMemo::new();
        let calls = Cell::new(0);
        let alice = Bytes::from_static(b"alice");
        assert_eq!(
            memo.get_or_decode("", &alice, decode_counting(&calls)),
            Ok("alice".into())
        );
        // equal bytes in another buffer, as a Redis reply brings them each time
        let again = Bytes::from(b"alice".to_vec());
        assert_eq!(
            memo.get_or_decode("", &again, decode_counting(&calls)),
            Ok("alice".into())
        );
        assert_eq!(calls.get(), 1);
        // the value changed in the store: other bytes, decoded
        let changed = Bytes::from_static(b"alice, admin");
        assert_eq!(
            memo.get_or_decode("", &changed, decode_counting(&calls)),
            Ok("alice, admin".into())
        );
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn equal_bytes_of_two_owners_are_decoded_for_each() {
        let memo = DecodedMemo::new();
        let calls = Cell::new(0);
        let guest = Bytes::from_static(b"guest");
        for owner in [
            ":1:alice-token",
            ":1:bob-token",
            ":1:alice-token",
            ":1:bob-token",
        ] {
            assert_eq!(
                memo.get_or_decode(owner, &guest, decode_counting(&calls)),
                Ok("guest".into())
            );
        }
        // each owner decoded at least once; they never share one decoding
        assert!(calls.get() >= 2, "{}", calls.get());
    }

    #[test]
    fn values_sharing_a_slot_never_answer_for_each_other() {
        let memo = DecodedMemo::new();
        let calls = Cell::new(0);
        // more values than slots: some share one, and each still gets its own decoding
        let values: Vec<Bytes> = (0..SLOTS * 3)
            .map(|i| Bytes::from(format!("user {i}")))
            .collect();
        for _ in 0..2 {
            for value in &values {
                let decoded = memo.get_or_decode("", value, decode_counting(&calls));
                assert_eq!(
                    decoded.as_deref(),
                    std::str::from_utf8(value).map_err(|_| &())
                );
            }
        }
    }

    #[test]
    fn failures_and_large_values_are_not_kept() {
        let memo = DecodedMemo::new();
        let calls = Cell::new(0);
        let bad = Bytes::from_static(b"\xff");
        for _ in 0..2 {
            assert_eq!(
                memo.get_or_decode("", &bad, decode_counting(&calls)),
                Err(())
            );
        }
        assert_eq!(calls.get(), 2);
        let large = Bytes::from(vec![b'a'; MAX_BYTES + 1]);
        for _ in 0..2 {
            assert!(
                memo.get_or_decode("", &large, decode_counting(&calls))
                    .is_ok()
            );
        }
        assert_eq!(calls.get(), 4);
    }
}
