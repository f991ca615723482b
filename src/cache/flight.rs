//! Single flight in this process: concurrent misses on one key run the handler once, and the
//! others wait for its answer (across processes, the stampede lock of `lock.rs` does).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::entry::Entry;

/// What the leader of a flight ends with: the entry it stored, nothing to share, a failure it
/// met, or nothing at all (it went away first).
#[derive(Clone)]
enum Outcome {
    Pending,
    Done(Option<Arc<Entry>>),
    /// The leader's revalidation failed (a server error, with its status, or the inner
    /// service's error): the stale entry stands.
    Failed(Option<http::StatusCode>),
    /// The leader was dropped before it finished (its client hung up, an outer timeout):
    /// one follower takes its place, the others wait on that one.
    Abandoned,
}

/// How a follower's wait ended.
pub(crate) enum Waited {
    /// The leader finished: its entry, or nothing to share (the follower asks the handler).
    Done(Option<Arc<Entry>>),
    /// The leader's call failed just now, with this status (`None` for an error): a follower
    /// with a stale copy serves it where `stale-if-error` allows, rather than call the
    /// handler after it, or lead a new flight that waits as long again.
    Failed(Option<http::StatusCode>),
    /// The leader went away unfinished: join the flight again, and one follower leads.
    Abandoned,
    /// The leader fell silent (no response head, no piece of its body) for the flight
    /// deadline, or the wait reached its bound in all.
    TimedOut,
}

/// When a flight's leader last showed that it is at work: its start, its response's head, each
/// piece of the body it records, and, while it waits on another instance's lock, each look
/// that finds the lock still held. Followers wait on a leader while its silence stays under
/// the flight deadline, however long the whole takes (a big page from a slow but healthy
/// origin), and the leader's stampede lock is renewed as long.
pub(crate) struct Progress {
    since: tokio::time::Instant,
    /// Milliseconds from `since` to the last sign of work.
    last: AtomicU64,
}

impl Progress {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            since: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// The leader is at work now.
    pub(crate) fn stamp(&self) {
        let elapsed = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(elapsed, Ordering::Relaxed);
    }

    /// When the leader will have been silent for `limit`, if it shows nothing more.
    pub(crate) fn silent_until(&self, limit: Duration) -> tokio::time::Instant {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        // far enough: a limit of years must not overflow the clock
        self.since
            .checked_add(last.saturating_add(limit))
            .unwrap_or_else(|| self.since + Duration::from_secs(100 * 365 * 86_400))
    }
}

/// A flight under way: where its outcome comes, and its leader's progress.
type Flight = (watch::Receiver<Outcome>, Arc<Progress>);

/// The flights under way in this process, by entry key, and the keys whose last answer could
/// not be stored (Varnish's hit-for-miss).
pub(crate) struct Flights {
    flights: Mutex<HashMap<String, Flight>>,
    /// How long a leader may be silent: past it, a request that comes for the key takes the
    /// flight over (the leader's handler hangs, and waiting on it would answer 504 for ever).
    lead_for: Duration,
    /// Keys whose leader's answer was not storable: their requests go straight to the
    /// handler, neither waiting on one another nor taking the lock, until the memo expires or
    /// a storable answer ends it.
    uncacheable: moka::sync::Cache<String, ()>,
}

/// How long a key whose answer was not storable skips the single flight by default, as
/// Varnish's built-in VCL keeps a hit-for-miss object.
pub(crate) const HIT_FOR_MISS: std::time::Duration = std::time::Duration::from_secs(120);

impl Default for Flights {
    fn default() -> Self {
        Self::new(HIT_FOR_MISS, Duration::from_secs(30))
    }
}

/// The role of a request that missed.
pub(crate) enum Role {
    /// Runs the handler; completes the flight when its response is stored, or on drop.
    Leader(FlightGuard),
    /// Waits for the leader.
    Follower(Waiter),
    /// The key's last answer could not be stored: no flight to join or lead.
    Pass,
}

impl Flights {
    /// Flights that remember an unstorable key for `hit_for_miss`.
    pub(crate) fn new(hit_for_miss: Duration, lead_for: Duration) -> Self {
        Self {
            flights: Mutex::default(),
            lead_for,
            uncacheable: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(hit_for_miss)
                .build(),
        }
    }

    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Role {
        if self.uncacheable.contains_key(key) {
            return Role::Pass;
        }
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((receiver, progress)) = flights.get(key) {
            // a finished flight whose guard is being dropped is not worth waiting for, nor is
            // one whose leader has been silent for the flight deadline (its handler hangs):
            // this request takes it over, and its own followers wait on it
            if matches!(*receiver.borrow(), Outcome::Pending)
                && tokio::time::Instant::now() < progress.silent_until(self.lead_for)
            {
                return Role::Follower(Waiter {
                    receiver: receiver.clone(),
                    progress: Arc::clone(progress),
                });
            }
        }
        let (sender, receiver) = watch::channel(Outcome::Pending);
        let progress = Progress::new();
        flights.insert(key.to_owned(), (receiver, Arc::clone(&progress)));
        Role::Leader(FlightGuard {
            flights: Arc::clone(self),
            key: key.to_owned(),
            sender,
            progress,
        })
    }

    /// A waiter on the flight under way for `key`, if there is one and its leader is at
    /// work: for a request that may wait on a flight but not lead one (a `HEAD`, a range).
    pub(crate) fn follow(&self, key: &str) -> Option<Waiter> {
        let flights = self
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (receiver, progress) = flights.get(key)?;
        (matches!(*receiver.borrow(), Outcome::Pending)
            && tokio::time::Instant::now() < progress.silent_until(self.lead_for))
        .then(|| Waiter {
            receiver: receiver.clone(),
            progress: Arc::clone(progress),
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
    progress: Arc<Progress>,
}

impl FlightGuard {
    /// Where the leader shows that it is at work.
    pub(crate) fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Shares `entry` with the followers; a storable answer ends the key's hit-for-miss memo.
    pub(crate) fn complete(self, entry: Arc<Entry>) {
        self.flights.uncacheable.invalidate(&self.key);
        self.sender.send_replace(Outcome::Done(Some(entry)));
    }

    /// The key this flight is for.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The leader's revalidation failed (`status`, or `None` for an error), whether or not
    /// its stale copy could be served in its place: the followers are told, and the key is not
    /// remembered as unstorable, since its entry stands.
    pub(crate) fn failed(self, status: Option<http::StatusCode>) {
        self.sender.send_replace(Outcome::Failed(status));
    }

    /// The leader's answer cannot be stored: the followers are released to the handler, and
    /// later requests for the key skip the flight while the memo lasts.
    pub(crate) fn uncacheable(self) {
        self.flights.uncacheable.insert(self.key.clone(), ());
        self.sender.send_replace(Outcome::Done(None));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // unfinished: its request went away, or the handler failed. A follower takes over,
        // one at a time, rather than all of them calling the handler at once.
        self.sender.send_if_modified(|outcome| {
            if matches!(outcome, Outcome::Pending) {
                *outcome = Outcome::Abandoned;
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
            .is_some_and(|(receiver, _)| receiver.same_channel(&self.sender.subscribe()))
        {
            flights.remove(&self.key);
        }
    }
}

/// How long a request waits on flights: while the leader's silence stays under `silence`,
/// and until `gives_up_at` at most, counted from the request's arrival however many flights
/// it waits on (a leader that goes away hands the flight on).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitLimits {
    pub(crate) silence: Duration,
    pub(crate) gives_up_at: tokio::time::Instant,
}

/// A follower's view of the flight.
pub(crate) struct Waiter {
    receiver: watch::Receiver<Outcome>,
    progress: Arc<Progress>,
}

impl Waiter {
    /// Waits for the leader while it shows work at least once per `limits.silence` (the
    /// flight deadline), until `limits.gives_up_at` at most. A leader still at work after `patience`
    /// is noted as slow (a metric and a log line), and waited for all the same: calling the
    /// handler beside it would add load exactly when the origin is slow.
    pub(crate) async fn wait(mut self, patience: Duration, limits: WaitLimits) -> Waited {
        let progress = self.progress;
        let now = tokio::time::Instant::now();
        let (silence, gives_up_at) = (limits.silence, limits.gives_up_at);
        let finished = self
            .receiver
            .wait_for(|outcome| !matches!(outcome, Outcome::Pending));
        let mut finished = std::pin::pin!(finished);
        let patience_ends = (now + patience)
            .min(progress.silent_until(silence))
            .min(gives_up_at);
        let within_patience = tokio::time::timeout_at(patience_ends, &mut finished)
            .await
            .map(|outcome| outcome.map(|outcome| outcome.clone()));
        let outcome = match within_patience {
            Ok(outcome) => outcome,
            Err(_) => {
                crate::observe::cache("flight_slow");
                tracing::debug!(
                    "a single flight's leader is still at work after the flight wait; waiting on"
                );
                loop {
                    let until = progress.silent_until(silence).min(gives_up_at);
                    match tokio::time::timeout_at(until, &mut finished).await {
                        Ok(outcome) => break outcome.map(|outcome| outcome.clone()),
                        // the leader showed work meanwhile: its silence is counted anew
                        Err(_)
                            if tokio::time::Instant::now()
                                < progress.silent_until(silence).min(gives_up_at) => {}
                        Err(_) => return Waited::TimedOut,
                    }
                }
            }
        };
        match outcome {
            Ok(Outcome::Done(entry)) => Waited::Done(entry),
            Ok(Outcome::Failed(status)) => Waited::Failed(status),
            // the leader's guard is gone without a word: as good as abandoned
            Ok(Outcome::Abandoned | Outcome::Pending) | Err(_) => Waited::Abandoned,
        }
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
        let waiting = tokio::spawn(waiter.wait(Duration::from_secs(5), limits(10)));
        guard.complete(entry());
        assert!(matches!(waiting.await.unwrap(), Waited::Done(Some(_))));
        assert_eq!(flights.len(), 0);
        assert!(
            matches!(flights.join("k"), Role::Leader(_)),
            "a finished flight starts anew"
        );
    }

    /// A leader whose call failed (and which served its stale copy) tells every follower at
    /// once, with the status, and leaves no hit-for-miss memo: the entry stands.
    #[tokio::test]
    async fn followers_learn_of_the_leaders_failure_at_once() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(guard) = flights.join("k") else {
            panic!("first is the leader")
        };
        let followers: Vec<Waiter> = (0..3)
            .map(|_| match flights.join("k") {
                Role::Follower(waiter) => waiter,
                _ => panic!("a follower"),
            })
            .collect();
        guard.failed(Some(StatusCode::GATEWAY_TIMEOUT));
        for waiter in followers {
            assert!(matches!(
                waiter.wait(Duration::from_secs(5), limits(10)).await,
                Waited::Failed(Some(StatusCode::GATEWAY_TIMEOUT))
            ));
        }
        assert!(matches!(flights.join("k"), Role::Leader(_)), "no memo");
    }

    /// A leader dropped unfinished (its client hung up) hands the flight on: each follower
    /// joins again, the first leads and the others follow it, so one handler call replaces
    /// the lost one, not one per follower (issue 35, finding 2).
    #[tokio::test]
    async fn a_dropped_leader_hands_the_flight_to_one_follower() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(guard) = flights.join("k") else {
            panic!()
        };
        let followers: Vec<Waiter> = (0..3)
            .map(|_| match flights.join("k") {
                Role::Follower(waiter) => waiter,
                _ => panic!("a follower"),
            })
            .collect();
        drop(guard);
        let mut leaders = 0;
        let mut guards = Vec::new();
        for waiter in followers {
            assert!(matches!(
                waiter.wait(Duration::from_secs(5), limits(10)).await,
                Waited::Abandoned
            ));
            match flights.join("k") {
                Role::Leader(guard) => {
                    leaders += 1;
                    guards.push(guard);
                }
                Role::Follower(_) => {}
                Role::Pass => panic!("no memo was set"),
            }
        }
        assert_eq!(leaders, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_waits_past_its_patience_for_a_working_leader_until_the_deadline() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(guard) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(waiter) = flights.join("k") else {
            panic!()
        };
        let waiting = tokio::spawn(waiter.wait(Duration::from_secs(5), limits(30)));
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(!waiting.is_finished(), "gave up at its patience");
        guard.complete(entry());
        assert!(matches!(waiting.await.unwrap(), Waited::Done(Some(_))));

        let Role::Leader(_guard) = flights.join("j") else {
            panic!()
        };
        let Role::Follower(waiter) = flights.join("j") else {
            panic!()
        };
        assert!(matches!(
            waiter.wait(Duration::from_secs(5), limits(30)).await,
            Waited::TimedOut
        ));
    }

    /// A leader that keeps showing work (a slow body, piece by piece) is waited on past the
    /// deadline, as long as no silence reaches it; the first silence that does ends the wait.
    #[tokio::test(start_paused = true)]
    async fn a_leader_at_work_is_waited_on_past_the_deadline_until_it_falls_silent() {
        let flights = Arc::new(Flights::new(HIT_FOR_MISS, Duration::from_secs(30)));
        let Role::Leader(guard) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(waiter) = flights.join("k") else {
            panic!()
        };
        let waiting = tokio::spawn(waiter.wait(Duration::from_secs(5), limits(30)));
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            guard.progress().stamp();
        }
        assert!(
            !waiting.is_finished(),
            "gave up on a leader at work after 80 s"
        );
        // a request arriving now follows too: the leader is not taken to hang
        assert!(matches!(flights.join("k"), Role::Follower(_)));
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(matches!(waiting.await.unwrap(), Waited::TimedOut));
        assert!(
            matches!(flights.join("k"), Role::Leader(_)),
            "a silent leader is taken over"
        );
        drop(guard);
    }

    fn limits(silence: u64) -> WaitLimits {
        WaitLimits {
            silence: Duration::from_secs(silence),
            gives_up_at: tokio::time::Instant::now() + Duration::from_secs(3600),
        }
    }

    /// However its leader works, a follower waits its total bound at most: a body that
    /// trickles forever does not hold it.
    #[tokio::test(start_paused = true)]
    async fn a_follower_gives_up_at_its_total_bound_however_the_leader_works() {
        let flights = Arc::new(Flights::new(HIT_FOR_MISS, Duration::from_secs(30)));
        let Role::Leader(guard) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(waiter) = flights.join("k") else {
            panic!()
        };
        let started = tokio::time::Instant::now();
        let bound = WaitLimits {
            silence: Duration::from_secs(30),
            gives_up_at: started + Duration::from_secs(120),
        };
        let waiting = tokio::spawn(waiter.wait(Duration::from_secs(5), bound));
        while !waiting.is_finished() {
            tokio::time::sleep(Duration::from_secs(10)).await;
            guard.progress().stamp();
        }
        assert!(matches!(waiting.await.unwrap(), Waited::TimedOut));
        assert!(
            started.elapsed() <= Duration::from_secs(130),
            "{:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() >= Duration::from_secs(120),
            "{:?}",
            started.elapsed()
        );
    }
}
