//! One server's connections: the bb8 pool, the shared lease, and what a stall or a dropped connection marks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bb8_redis::RedisConnectionManager;
use redis::RedisError;
use redis::aio::MultiplexedConnection;

use crate::store::{StoreError, StoreErrorKind};

use super::classify::refused_select;

/// The pool of connections to one server, the lease calls share, and what the latest
/// connection attempts found.
#[derive(Clone)]
pub(super) struct ServerLinks {
    pub(super) pool: bb8::Pool<TrackedManager>,
    pub(super) lease: Arc<RwLock<Option<Lease>>>,
    pub(super) reachability: Arc<Reachability>,
    pub(super) stall: Arc<Stall>,
}

/// Whether the server stopped answering. After a call timed out, calls fail at once (and each
/// layer's failure policy answers at once) instead of each waiting out the command timeout,
/// so that a request through three layers waits one timeout, not three; meanwhile one task
/// pings the server, one ping after another, and the first answer ends the stall (a ping
/// that was waiting when the server came back is answered at once).
///
/// Redis runs one command at a time: a call that took longer than the command timeout means
/// every other call waited as long, so one timeout is reason enough, but only on a connection
/// that was healthy: a call still waiting on a connection already known dropped or silent
/// (see [`RedisStore::timed_out`]) learns nothing about the server.
#[derive(Default)]
pub(super) struct Stall {
    pub(super) stalled: AtomicBool,
    pub(super) probing: AtomicBool,
}

/// How long calls reuse the connection handle last taken from the pool before asking bb8
/// again. Short enough that bb8's lifetime and idle rules still govern every connection in
/// use; long enough that the pool's locks leave the per-call path.
pub(super) const LEASE: Duration = Duration::from_secs(1);

/// The multiplexed handle calls share between two visits to the pool.
pub(super) struct Lease {
    pub(super) conn: MultiplexedConnection,
    pub(super) broken: Arc<AtomicBool>,
    pub(super) opened_at: Instant,
    pub(super) taken_at: Instant,
}

/// A pooled multiplexed connection and the flag that tells bb8 it broke.
pub(super) struct TrackedConnection {
    pub(super) conn: MultiplexedConnection,
    pub(super) broken: Arc<AtomicBool>,
    pub(super) opened_at: Instant,
}

/// A multiplexed handle for one call: the connection, its broken flag, and when it opened.
pub(super) struct Handle {
    pub(super) conn: MultiplexedConnection,
    pub(super) broken: Arc<AtomicBool>,
    pub(super) opened_at: Instant,
}

pub(super) struct TrackedManager {
    pub(super) inner: Connector,
    pub(super) command_timeout: Duration,
    pub(super) reachability: Arc<Reachability>,
}

/// The outcome of the latest connection attempt, so that calls fail at once while Redis is
/// known to be unreachable instead of each waiting out the connect timeout; and since when
/// connections are suspect of having been dropped.
pub(super) struct Reachability {
    pub(super) last_failure: Mutex<Option<ConnectFailure>>,
    pub(super) epoch: Instant,
    /// Nanoseconds after `epoch` before which every connection opened is suspect (0: none).
    /// One dropped connection usually means all of them went (a `CLIENT KILL`, a restart, a
    /// failover): a retry must not pick another connection that the same event dropped.
    pub(super) suspect_before: AtomicU64,
    /// The database connections select, for what a refused `SELECT` says.
    pub(super) database: i64,
}

impl Default for Reachability {
    fn default() -> Self {
        Self::selecting(0)
    }
}

pub(super) struct ConnectFailure {
    pub(super) at: Instant,
    /// `Timeout` for a server that did not answer in time (stalled, or a silent network),
    /// `Connection` for one that refused or reset.
    pub(super) kind: StoreErrorKind,
    pub(super) reason: String,
}

impl Reachability {
    /// For connections that select `database`.
    pub(super) fn selecting(database: i64) -> Self {
        Self {
            last_failure: Mutex::default(),
            epoch: Instant::now(),
            suspect_before: AtomicU64::new(0),
            database,
        }
    }

    pub(super) fn record(&self, outcome: Result<(), &RedisError>) {
        // A connection dropped during its handshake (reset, broken pipe) was made to a server
        // that is there, as when a `CLIENT KILL` catches a connection being opened: that is
        // no reason to fail calls fast, only a refusal or a silence is.
        let outcome = outcome.or_else(|err| {
            if err.is_connection_dropped() && !err.is_connection_refusal() && !err.is_timeout() {
                Ok(())
            } else {
                Err(err)
            }
        });
        if let Ok(mut last) = self.last_failure.lock() {
            *last = outcome.err().map(|err| match refused_select(err) {
                // a server that answers and refuses the database is there: the configuration
                // is wrong, which no waiting mends, and the layers must not take it for an
                // outage
                Some(detail) => ConnectFailure {
                    at: Instant::now(),
                    kind: StoreErrorKind::Unsupported,
                    reason: format!(
                        "Redis refused to select database {} ({detail}): the server has fewer \
                         databases (its `databases` setting) than the database option names, or \
                         this user may not select it",
                        self.database
                    ),
                },
                None => ConnectFailure {
                    at: Instant::now(),
                    kind: if err.is_timeout() {
                        StoreErrorKind::Timeout
                    } else {
                        StoreErrorKind::Connection
                    },
                    reason: err.to_string(),
                },
            });
        }
    }

    /// Marks every connection opened before `seen_at` (when a call found its connection
    /// dropped) as suspect.
    pub(super) fn dropped_before(&self, seen_at: Instant) {
        let nanos = u64::try_from(seen_at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX);
        self.suspect_before.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Whether a connection opened at `opened_at` may have been dropped with another one.
    pub(super) fn is_suspect(&self, opened_at: Instant) -> bool {
        let before = self.suspect_before.load(Ordering::Relaxed);
        before != 0
            && u64::try_from(opened_at.saturating_duration_since(self.epoch).as_nanos())
                .unwrap_or(u64::MAX)
                < before
    }

    /// The error for calls while the latest attempt failed within `window`.
    pub(super) fn recent_failure(&self, window: Duration) -> Option<StoreError> {
        let last = self.last_failure.lock().ok()?;
        let failure = last
            .as_ref()
            .filter(|failure| failure.at.elapsed() < window)?;
        let detail = match failure.kind {
            StoreErrorKind::Timeout => format!("Redis does not answer: {}", failure.reason),
            StoreErrorKind::Unsupported => failure.reason.clone(),
            _ => format!("Redis is unreachable: {}", failure.reason),
        };
        Some(StoreError::new(failure.kind, detail))
    }
}

/// How new connections reach the master: straight to one address, or through Sentinel.
pub(super) enum Connector {
    Direct(RedisConnectionManager),
    /// Asks the sentinels for the current master (and checks its role) on every connect, so
    /// that connections opened after a failover reach the promoted replica.
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

impl Connector {
    pub(super) async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        use bb8::ManageConnection;
        match self {
            Self::Direct(manager) => manager.connect().await,
            Self::Sentinel(client) => client.lock().await.get_async_connection().await,
        }
    }

    pub(super) async fn is_valid(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(conn).await
    }
}

impl bb8::ManageConnection for TrackedManager {
    type Connection = TrackedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<TrackedConnection, RedisError> {
        let connected = self.inner.connect().await;
        self.reachability.record(connected.as_ref().map(|_| ()));
        if connected.is_ok() {
            crate::observe::store_reconnect();
        }
        let mut conn = connected?;
        conn.set_response_timeout(self.command_timeout);
        Ok(TrackedConnection {
            conn,
            broken: Arc::new(AtomicBool::new(false)),
            opened_at: Instant::now(),
        })
    }

    async fn is_valid(&self, conn: &mut TrackedConnection) -> Result<(), RedisError> {
        self.inner.is_valid(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut TrackedConnection) -> bool {
        conn.broken.load(Ordering::Relaxed) || self.reachability.is_suspect(conn.opened_at)
    }
}
