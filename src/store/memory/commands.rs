//! The memory store's `Store` operations.

use std::sync::atomic::Ordering;
use std::time::Duration;

// tokio's clock, which tests pause and advance (`tokio::time::pause`), so that expiry cases
// need not sleep; outside a paused runtime it is the monotonic clock.
use tokio::time::Instant;

use bytes::Bytes;
use moka::ops::compute::Op;

use crate::store::{Expiry, KeyScheme, Store, StoreError, Ttl};

use super::handle::MemoryStore;
use super::shares::Share;
use super::slot::{Deadline, Slot, deadline, decode_index, increment_value, index_write};

impl Store for MemoryStore {
    fn key_scheme(&self) -> &KeyScheme {
        &self.keys
    }

    fn with_key_scheme(&self, keys: KeyScheme) -> Self {
        Self {
            keys,
            ..self.clone()
        }
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<(), StoreError> {
        let key = self.keys.make(key)?;
        let expiry = expiry.resolve(self.default_timeout);
        self.owner(&key)
            .compute(key, |_, now| match deadline(expiry, now) {
                Deadline::AlreadyExpired => (Op::Remove, ()),
                Deadline::At(expires_at) => (
                    Op::Put(Slot {
                        value,
                        expires_at,
                        counter: None,
                        room: None,
                        index: false,
                    }),
                    (),
                ),
            });
        Ok(())
    }

    async fn set_many(&self, entries: &[(&str, Bytes, Expiry)]) -> Result<(), StoreError> {
        // keys first, so that a bad key writes nothing, as in a failed MULTI
        let keys = entries
            .iter()
            .map(|(key, _, _)| self.keys.make(key))
            .collect::<Result<Vec<_>, _>>()?;
        for (key, (_, value, expiry)) in keys.into_iter().zip(entries) {
            let expiry = expiry.resolve(self.default_timeout);
            let value = value.clone();
            self.owner(&key)
                .compute(key, |_, now| match deadline(expiry, now) {
                    Deadline::AlreadyExpired => (Op::Remove, ()),
                    Deadline::At(expires_at) => (
                        Op::Put(Slot {
                            value,
                            expires_at,
                            counter: None,
                            room: None,
                            index: false,
                        }),
                        (),
                    ),
                });
        }
        Ok(())
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
    ) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let expiry = expiry.resolve(self.default_timeout);
        Ok(self
            .owner(&key)
            .compute(key, |slot, now| match (slot, deadline(expiry, now)) {
                (Some(_), _) | (None, Deadline::AlreadyExpired) => (Op::Nop, false),
                (None, Deadline::At(expires_at)) => (
                    Op::Put(Slot {
                        value,
                        expires_at,
                        counter: None,
                        room: None,
                        index: false,
                    }),
                    true,
                ),
            }))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let mut existed = self.compute(key.clone(), |slot, _| (Op::Remove, slot.is_some()));
        for share in self.layers_shares() {
            existed |= share.compute(key.clone(), |slot, _| (Op::Remove, slot.is_some()));
        }
        Ok(existed)
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let key = self.keys.make(key)?;
        let take = |slot: Option<&Slot>, _| match slot.map(Slot::value) {
            None => (Op::Nop, Ok(None)),
            Some(Ok(value)) => (Op::Remove, Ok(Some(value))),
            Some(Err(err)) => (Op::Nop, Err(err)),
        };
        let taken = self.compute(key.clone(), take)?;
        if taken.is_some() {
            return Ok(taken);
        }
        for share in self.layers_shares() {
            let taken = share.compute(key.clone(), take)?;
            if taken.is_some() {
                return Ok(taken);
            }
        }
        Ok(None)
    }

    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        let (index, member) = (self.keys.make(index)?, self.keys.make(member)?);
        self.owner(&index).compute(index, |slot, now| {
            let mut members = match slot.map(decode_index).transpose() {
                Ok(members) => members.unwrap_or_default(),
                Err(err) => return (Op::Nop, Err(err)),
            };
            if !members.contains(&member) {
                members.push(member);
            }
            members.retain(|member| self.live_slot(member, now).is_some());
            (index_write(&members), Ok(()))
        })
    }

    async fn index_members(&self, index: &str) -> Result<Vec<(String, Ttl)>, StoreError> {
        let index = self.keys.make(index)?;
        self.owner(&index).compute(index, |slot, now| {
            let Some(slot) = slot else {
                return (Op::Nop, Ok(Vec::new()));
            };
            let members = match decode_index(slot) {
                Ok(members) => members,
                Err(err) => return (Op::Nop, Err(err)),
            };
            let live: Vec<(String, Ttl)> = members
                .into_iter()
                .filter_map(|member| {
                    let ttl = match self.live_slot(&member, now)?.remaining_ms(now) {
                        None => Ttl::Persistent,
                        Some(ms) => Ttl::Expires(Duration::from_millis(ms)),
                    };
                    Some((member, ttl))
                })
                .collect();
            let names: Vec<String> = live.iter().map(|(member, _)| member.clone()).collect();
            (index_write(&names), Ok(live))
        })
    }

    async fn index_remove(&self, index: &str, member: &str) -> Result<bool, StoreError> {
        let (index, member) = (self.keys.make(index)?, self.keys.make(member)?);
        self.owner(&index).compute(index, |slot, _| {
            let Some(slot) = slot else {
                return (Op::Nop, Ok(false));
            };
            match decode_index(slot) {
                Ok(mut members) => {
                    let before = members.len();
                    members.retain(|m| *m != member);
                    let removed = members.len() < before;
                    (index_write(&members), Ok(removed))
                }
                Err(err) => (Op::Nop, Err(err)),
            }
        })
    }

    async fn index_delete_all(&self, index: &str) -> Result<u64, StoreError> {
        let index = self.keys.make(index)?;
        let entries = &self.entries();
        self.owner(&index).compute(index, |slot, now| {
            let Some(slot) = slot else {
                return (Op::Nop, Ok(0));
            };
            match decode_index(slot) {
                Ok(members) => {
                    let deleted = members
                        .iter()
                        .filter(|member| {
                            entries
                                .remove(member.as_str())
                                .is_some_and(|slot| slot.is_live(now))
                        })
                        .count();
                    (Op::Remove, Ok(deleted as u64))
                }
                Err(err) => (Op::Nop, Err(err)),
            }
        })
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        let key = self.keys.make(key)?;
        self.owner(&key).compute(key, |slot, _| {
            let Some(slot) = slot else {
                return (Op::Nop, Ok(None));
            };
            if let Some(counter) = &slot.counter {
                // in place, so that concurrent rate-limit hits on the same counter are kept
                let mut current = counter.load(Ordering::Acquire);
                loop {
                    let next = i64::try_from(current)
                        .ok()
                        .and_then(|n| n.checked_add(delta))
                        .and_then(|n| u64::try_from(n).ok());
                    let Some(next) = next else {
                        break;
                    };
                    match counter.compare_exchange_weak(
                        current,
                        next,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return (Op::Nop, Ok(i64::try_from(next).ok())),
                        Err(actual) => current = actual,
                    }
                }
            }
            match increment_value(&slot.data(), delta) {
                Ok(next) => (
                    Op::Put(Slot {
                        value: Bytes::from(next.to_string()),
                        expires_at: slot.expires_at,
                        counter: None,
                        room: None,
                        index: false,
                    }),
                    Ok(Some(next)),
                ),
                Err(err) => (Op::Nop, Err(err)),
            }
        })
    }

    async fn ttl(&self, key: &str) -> Result<Ttl, StoreError> {
        let key = self.keys.make(key)?;
        let now = Instant::now();
        let slot = self.live_slot(&key, now).or_else(|| {
            self.layers_shares()
                .find_map(|share| share.live_slot(&key, now))
        });
        Ok(match slot {
            None => Ttl::Missing,
            Some(slot) => match slot.remaining_ms(now) {
                None => Ttl::Persistent,
                Some(ms) => Ttl::Expires(Duration::from_millis(ms)),
            },
        })
    }

    async fn bump_version(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        let (from, to, version) = self.keys.bumped(key, delta)?;
        let entries = &self.entries();
        // The new key is written while the old one's lock is held, so readers see the value
        // under one version or both, never neither, and concurrent bumps move it once.
        Ok(self.owner(&from).compute(from, |slot, _| match slot {
            None => (Op::Nop, None),
            Some(slot) => {
                if let (Share::RateLimits, Some(at)) = (self.share, slot.expires_at) {
                    self.shared
                        .rate_limit_expiries
                        .expect(&to, at, self.shared.epoch);
                }
                entries.insert(to, slot.clone());
                (Op::Remove, Some(version))
            }
        }))
    }
}
