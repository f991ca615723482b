//! Single flight: concurrent misses on one key run the handler once, in one process (a map of
//! flights) and across processes sharing a store (a short lock in the store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::entry::Entry;
use crate::store::{AnyStore, Store};

/// What the leader of a flight ends with: the entry it stored, or nothing to share.
#[derive(Clone)]
enum Outcome {
    Pending,
    Done(Option<Arc<Entry>>),
}

/// The flights under way in this process, by entry key.
#[derive(Default)]
pub(crate) struct Flights {
    flights: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
}

/// The role of a request that missed.
pub(crate) enum Role {
    /// Runs the handler; completes the flight when its response is stored, or on drop.
    Leader(FlightGuard),
    /// Waits for the leader.
    Follower(Waiter),
}

impl Flights {
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Role {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(receiver) = flights.get(key) {
            // a finished flight whose guard is being dropped is not worth waiting for
            if matches!(*receiver.borrow(), Outcome::Pending) {
                return Role::Follower(Waiter {
                    receiver: receiver.clone(),
                });
            }
        }
        let (sender, receiver) = watch::channel(Outcome::Pending);
        flights.insert(key.to_owned(), receiver);
        Role::Leader(FlightGuard {
            flights: Arc::clone(self),
            key: key.to_owned(),
            sender,
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
}

impl FlightGuard {
    /// Shares `entry` with the followers.
    pub(crate) fn complete(self, entry: Arc<Entry>) {
        self.sender.send_replace(Outcome::Done(Some(entry)));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.sender.send_if_modified(|outcome| {
            if matches!(outcome, Outcome::Pending) {
                *outcome = Outcome::Done(None);
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
            .is_some_and(|receiver| receiver.same_channel(&self.sender.subscribe()))
        {
            flights.remove(&self.key);
        }
    }
}

/// A follower's view of the flight.
pub(crate) struct Waiter {
    receiver: watch::Receiver<Outcome>,
}

impl Waiter {
    /// The leader's entry, or `None` when the leader had nothing to share or `wait` passed.
    pub(crate) async fn wait(mut self, wait: std::time::Duration) -> Option<Arc<Entry>> {
        let done = tokio::time::timeout(
            wait,
            self.receiver
                .wait_for(|outcome| matches!(outcome, Outcome::Done(_))),
        )
        .await;
        match done {
            Ok(Ok(outcome)) => match &*outcome {
                Outcome::Done(entry) => entry.clone(),
                Outcome::Pending => None,
            },
            _ => None,
        }
    }
}

/// The cross-process stampede lock an instance holds on an entry key: `SET NX PX` with an
/// owner token, released by its owner only (with the entry's write, or on drop), and expiring
/// by itself if the holder dies.
pub(crate) struct StoreLock {
    pub(crate) store: AnyStore,
    pub(crate) key: String,
    pub(crate) owner: Arc<str>,
    released: bool,
}

impl StoreLock {
    /// Marks the lock as released by the entry's write, which carries the release.
    pub(crate) fn released_by_write(mut self) -> (String, Arc<str>) {
        self.released = true;
        (std::mem::take(&mut self.key), Arc::clone(&self.owner))
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
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
}

/// What a lock attempt needs to know.
pub(crate) struct LockAttempt {
    pub(crate) store: AnyStore,
    pub(crate) lock_key: String,
    pub(crate) lock_ttl: Duration,
    /// Where the holder's entry will appear: the URL's Vary list and the entry keys it
    /// leads to for this request's headers.
    pub(crate) vary_key: String,
    pub(crate) prefix: String,
    pub(crate) url: String,
    pub(crate) request_headers: http::HeaderMap,
    pub(crate) serve_stale_meanwhile: bool,
    pub(crate) wait: Duration,
}

impl LockAttempt {
    /// Takes the lock, or waits for the holder's entry: polling with a growing interval until
    /// the entry appears, the lock is free (the holder finished without storing, or died and
    /// the lock expired) or `wait` passes.
    pub(crate) async fn run(self) -> Locked {
        let owner = crate::store::new_ticket();
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut interval = Duration::from_millis(10);
        loop {
            match self
                .store
                .set_if_absent(
                    &self.lock_key,
                    Bytes::copy_from_slice(owner.as_bytes()),
                    self.lock_ttl.into(),
                )
                .await
            {
                Ok(true) => {
                    return Locked::Lead(Some(StoreLock {
                        store: self.store,
                        key: self.lock_key,
                        owner,
                        released: false,
                    }));
                }
                Ok(false) if self.serve_stale_meanwhile => return Locked::ServeStale,
                Ok(false) => {}
                // fail open: the cache is an optimisation, the handler is the truth
                Err(_) => return Locked::Lead(None),
            }
            if tokio::time::Instant::now() + interval > deadline {
                return Locked::Lead(None);
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 3 / 2).min(Duration::from_millis(200));
            if let Some(entry) = self.stored_entry().await {
                return Locked::Entry(entry);
            }
        }
    }

    /// A fresh entry for this request, if the holder has stored one.
    async fn stored_entry(&self) -> Option<Entry> {
        let list = self.store.get(&self.vary_key).await.ok()??;
        let vary = super::key::decode_vary(&list)?;
        let variant = super::key::variant_hash(&vary, &self.request_headers);
        let key = super::key::entry_key(&self.prefix, &self.url, &variant);
        let stored = self.store.get(&key).await.ok()??;
        let entry = Entry::decode(&stored).ok()?;
        (entry.vary == vary && entry.age(std::time::SystemTime::now()) < entry.freshness)
            .then_some(entry)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;

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
        let waiting = tokio::spawn(waiter.wait(Duration::from_secs(10)));
        guard.complete(entry());
        assert!(waiting.await.unwrap().is_some());
        assert_eq!(flights.len(), 0);
        assert!(
            matches!(flights.join("k"), Role::Leader(_)),
            "a finished flight starts anew"
        );
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers_empty_handed() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(guard) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(waiter) = flights.join("k") else {
            panic!()
        };
        drop(guard);
        assert!(waiter.wait(Duration::from_secs(10)).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn followers_stop_waiting_after_the_bound() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(_guard) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(waiter) = flights.join("k") else {
            panic!()
        };
        assert!(waiter.wait(Duration::from_millis(100)).await.is_none());
    }
}
