//! The memory store's `Backend`: the operations the layers use beyond `Store`.

use std::time::Duration;

// tokio's clock, which tests pause and advance (`tokio::time::pause`), so that expiry cases
// need not sleep; outside a paused runtime it is the monotonic clock.
use tokio::time::Instant;

use bytes::Bytes;
use moka::ops::compute::Op;

use crate::store::rate::PolicyKind;
use crate::store::{
    Backend, CacheLock, CacheWrite, Expiring, Expiry, GenerationBump, RateDecision, RatePolicy,
    Store, StoreError, StoredNow,
};

use super::glob::glob_match;
use super::handle::MemoryStore;
use super::rate::give_back;
use super::shares::Share;
use super::slot::{Deadline, Slot, deadline, decode_index, index_slot, wrong_type};

// Every future here is ready at its first poll: the memory store decides at once, which
// `at_once` relies on.
impl Backend for MemoryStore {
    fn answers_at_once(&self) -> bool {
        true
    }

    #[inline]
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, StoreError>> {
        Some(self.read_through(key))
    }

    #[inline]
    fn get_now_expiring(&self, key: &str) -> Option<Result<Option<Expiring>, StoreError>> {
        Some(self.read_through_expiring(key))
    }

    async fn get_expiring_full(&self, key: &str) -> Result<Option<Expiring>, StoreError> {
        self.read_through_expiring(key)
    }

    async fn get_full(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.read_through(key)
    }

    async fn get_and_refresh_full(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Bytes>, StoreError> {
        let expiry = Expiry::After(ttl).resolve(self.default_timeout);
        self.owner(key).compute(key.to_owned(), |slot, now| {
            match (slot, deadline(expiry, now)) {
                (None, _) => (Op::Nop, Ok(None)),
                (Some(slot), _) if slot.index => (Op::Nop, slot.value().map(Some)),
                (Some(slot), Deadline::AlreadyExpired) => (Op::Remove, Ok(Some(slot.data()))),
                (Some(slot), Deadline::At(expires_at)) => (
                    Op::Put(Slot {
                        expires_at,
                        ..slot.clone()
                    }),
                    Ok(Some(slot.data())),
                ),
            }
        })
    }

    async fn rate_limit_full(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> Result<RateDecision, StoreError> {
        let room = policy.room();
        self.admits(key, room)?;
        match policy.kind() {
            PolicyKind::Cooldown { interval_ms } => {
                self.owner(key).cooldown(key, room, interval_ms)
            }
            PolicyKind::FixedWindow { limit, window_ms } => {
                self.owner(key).fixed_window(key, room, limit, window_ms)
            }
            PolicyKind::Gcra {
                emission_us,
                tolerance_us,
                burst,
            } => self
                .owner(key)
                .gcra(key, room, emission_us, tolerance_us, burst),
        }
    }

    async fn release_full(
        &self,
        key: &str,
        policy: &RatePolicy,
        decision: &RateDecision,
    ) -> Result<bool, StoreError> {
        if !decision.allowed {
            return Ok(false);
        }
        self.owner(key).compute(key.to_owned(), |slot, _| {
            let Some(slot) = slot else {
                return (Op::Nop, Ok(false));
            };
            if slot.index {
                return (
                    Op::Nop,
                    Err(wrong_type("key holds an index, not a rate-limit hit")),
                );
            }
            let released = match policy.kind() {
                // only the hit that set the flag may clear it
                PolicyKind::Cooldown { .. } => match &decision.ticket {
                    Some(ticket) if slot.value == ticket.as_bytes() => {
                        return (Op::Remove, Ok(true));
                    }
                    _ => false,
                },
                // only into the window the hit was counted in: that window's counter has the
                // same end; a later one would take back a hit it never counted
                PolicyKind::FixedWindow { .. }
                    if decision.window_end_ms.is_some()
                        && decision.window_end_ms != self.window_mark(slot.expires_at) =>
                {
                    false
                }
                PolicyKind::FixedWindow { .. } => give_back(slot, 1),
                PolicyKind::Gcra { emission_us, .. } => give_back(slot, emission_us),
            };
            (Op::Nop, Ok(released))
        })
    }

    async fn cache_put(&self, write: &CacheWrite<'_>) -> Result<(), StoreError> {
        let entry = self.keys.make(write.entry_key)?;
        let vary = self.keys.make(write.vary_key)?;
        let index = self.keys.make(write.index_key)?;
        // a storable answer ends the entry's hit-for-miss memo
        self.entries().invalidate(
            &self
                .keys
                .make(&crate::store::hit_for_miss_key(write.entry_key))?,
        );
        let lock = write
            .unlock
            .map(|(key, owner)| self.keys.make(key).map(|key| (key, owner)))
            .transpose()?;
        let expires_at = Instant::now().checked_add(write.ttl);
        for (key, value) in [(&entry, &write.entry), (&vary, &write.vary)] {
            self.entries().insert(
                key.clone(),
                Slot {
                    value: value.clone(),
                    expires_at,
                    counter: None,
                    room: None,
                    index: false,
                },
            );
        }
        self.compute(index, |slot, _| {
            let mut members = slot
                .and_then(|slot| decode_index(slot).ok())
                .unwrap_or_default();
            for key in [&entry, &vary] {
                if !members.contains(key) {
                    members.push(key.clone());
                }
            }
            let mut updated = index_slot(&members);
            updated.expires_at = match slot.map(|slot| slot.expires_at) {
                Some(None) => None,
                Some(Some(at)) => expires_at.max(Some(at)),
                None => expires_at,
            };
            (Op::Put(updated), ())
        });
        if let Some((key, owner)) = lock {
            self.release_lock(key, owner);
        }
        Ok(())
    }

    async fn lock_and_read(&self, lock: &CacheLock<'_>) -> Result<Option<StoredNow>, StoreError> {
        let lock_key = self.keys.make(lock.lock_key)?;
        let vary = self.keys.make(lock.vary_key)?;
        let entry = self.keys.make(lock.entry_key)?;
        let memo = self
            .keys
            .make(&crate::store::hit_for_miss_key(lock.entry_key))?;
        if self.live_value(&memo).is_some() {
            return Ok(Some(StoredNow {
                uncacheable: true,
                ..StoredNow::default()
            }));
        }
        let owner = Bytes::copy_from_slice(lock.owner.as_bytes());
        let taken = self.compute(lock_key, |slot, now| match slot {
            Some(_) => (Op::Nop, false),
            None => (
                Op::Put(Slot {
                    value: owner,
                    expires_at: now.checked_add(lock.ttl),
                    counter: None,
                    room: None,
                    index: false,
                }),
                true,
            ),
        });
        Ok(taken.then(|| StoredNow {
            vary: self.live_value(&vary),
            entry: self.live_value(&entry),
            uncacheable: false,
        }))
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        Ok(self.release_lock(self.keys.make(key)?, owner))
    }

    async fn renew_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.compute(self.keys.make(key)?, |slot, now| match slot {
            Some(slot) if slot.value == owner.as_bytes() => (
                Op::Put(Slot {
                    value: slot.value.clone(),
                    expires_at: now.checked_add(ttl),
                    counter: None,
                    room: None,
                    index: false,
                }),
                true,
            ),
            _ => (Op::Nop, false),
        }))
    }

    async fn bump_generation(&self, key: &str) -> Result<GenerationBump, StoreError> {
        self.set_if_absent(key, Bytes::from_static(b"0"), Expiry::Never)
            .await?;
        let generation = self.increment(key, 1).await?.unwrap_or(1);
        Ok(GenerationBump {
            generation,
            replicated: true,
        })
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64, StoreError> {
        let now = Instant::now();
        let mut deleted = 0;
        for (key, slot) in self.entries() {
            if glob_match(pattern.as_bytes(), key.as_bytes()) {
                self.entries().invalidate(key.as_str());
                if self.share == Share::RateLimits {
                    self.shared.rate_limit_expiries.forget(&key);
                    self.shared.rooms.change(slot.room, false);
                }
                deleted += u64::from(slot.is_live(now));
            }
        }
        Ok(deleted)
    }
}
