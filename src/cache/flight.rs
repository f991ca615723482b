//! In-process single flight: concurrent misses on one key run the handler once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::entry::Entry;

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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

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
