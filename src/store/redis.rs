use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

use bb8_redis::RedisConnectionManager;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionInfo, IntoConnectionInfo, RedisError};

use super::durable::{Durability, Lane, LaneConn};
use super::lua::{Conn, Lua};
use super::near::{Near, NearCache, NearCacheUsage, TrackingConnector};

use super::rate::{PolicyKind, cooldown_decision, gcra_decision, new_ticket, window_decision};
use super::{
    Backend, CacheLock, CacheWrite, Expiry, GenerationBump, KeyScheme, Pem, RateDecision,
    RatePolicy, Store, StoreError, StoreErrorKind, StoredNow, Timeout, Ttl, ttl_ms_ceil,
};
use crate::ConfigError;

static INCREMENT: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/increment.lua")));
static BUMP_VERSION: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("scripts/bump_version.lua")));
static FIXED_WINDOW: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("scripts/fixed_window.lua")));
static INDEX_ADD: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/index_add.lua")));
static INDEX_MEMBERS: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("scripts/index_members.lua")));
static INDEX_DELETE_ALL: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("scripts/index_delete_all.lua")));
static RELEASE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/release.lua")));
static CACHE_PUT: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/cache_put.lua")));
static LOCK_AND_READ: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("scripts/lock_and_read.lua")));
static UNLOCK: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/unlock.lua")));
static RENEW_LOCK: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("scripts/renew_lock.lua")));
static GCRA: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/gcra.lua")));

const DEFAULT_MAX_CONNECTIONS: u32 = 16;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// The Redis backend: a [bb8] pool of [bb8-redis] connections, shared by request futures.
///
/// # How connections are used
///
/// bb8-redis pools `redis::aio::MultiplexedConnection`s, which pipeline concurrent commands over
/// one socket. Holding a pooled connection for a whole command, as a plain bb8 checkout does,
/// gives each connection one command at a time and throws that away (0.4 of the throughput of
/// one shared connection at 64 concurrent requests, see `benches/store_ratio.rs`). Instead the store
/// takes a connection from bb8, keeps a clone of its multiplexed handle as a *lease* that every
/// call shares for up to a second, and hands the connection straight back. Concurrent requests
/// share round trips, the pool's locks stay off the per-call path, and bb8 still owns every
/// connection's lifecycle (opening, bounds, lifetime and idle reaping): a lease never outlives
/// a second, nor the connection's health.
///
/// - **No PING on checkout.** bb8's default test-on-checkout would add a round trip to every
///   request; it is off.
/// - **Broken connections are replaced.** bb8-redis never reports a connection as broken, so
///   each connection carries a flag that a call sets when its command failed because the
///   connection dropped or timed out; bb8 discards flagged connections and opens new ones.
///   One dropped connection makes every connection opened before it suspect (a `CLIENT
///   KILL`, a restart or a failover drops them all), so they are replaced too rather than
///   tried one after another.
/// - **Safe retries.** Calls whose second run changes nothing the first did not retry once
///   on a new connection when the first one turns out dropped, so a Redis restart does not
///   fail requests that arrive after it is back: reads (`ping`, `get`, `ttl`,
///   `index_members`), idempotent writes (`set`, `set_many`, `delete`, `index_add`,
///   `index_remove`, `index_delete_all`, `invalidate_matching`'s `SCAN` and `UNLINK`, the
///   cache's entry write, `get_and_refresh`'s `GETEX`), and the cooldown flag
///   (whose `SET NX` value names the request, so a retry can tell its own earlier write).
///   Never retried, since a lost reply cannot tell whether they ran: `set_if_absent`, `take`,
///   `increment`, `bump_version`, the fixed-window and GCRA scripts, the cache's lock, unlock
///   and release scripts, and `get_and_refresh` with a zero TTL (`GETDEL`).
/// - **A demoted master is left at once.** A `READONLY` reply (a failover behind one endpoint,
///   such as a managed "primary endpoint" or a moved DNS name, leaves old sockets on a
///   replica), also one inside a refused `MULTI`/`EXEC` (`EXECABORT`), breaks the connection and makes every connection opened before it suspect; the
///   refused command, which Redis did not run, is sent once more on a new connection, whatever
///   the command. A second `READONLY` is a [`StoreErrorKind::Connection`] error, so the
///   layers' failure policy applies.
/// - **Every call is bounded by one deadline**, the command timeout, from checkout to reply,
///   retry included. A stalled server gives [`StoreErrorKind::Timeout`], never a hung
///   request; the connect timeout only bounds bb8's own connection attempts in the background.
/// - **One timeout for a stalled server, not one per call.** After a call timed out, calls
///   fail at once with [`StoreErrorKind::Timeout`] while one task pings the server; the first
///   answer ends it. A request through three layers waits one timeout, not three. A call that
///   times out on a connection already known bad (flagged by another call, or opened before a
///   drop was seen, as after a `CLIENT KILL`) fails alone: the store has moved to a new
///   connection on which the server answers, so that timeout is no sign of a stall.
/// - **Fail fast while Redis is down.** When the latest connection attempt failed within the
///   connect timeout and no connection is open, calls fail at once instead of each waiting out
///   the timeout: [`StoreErrorKind::Connection`] when the server refused,
///   [`StoreErrorKind::Timeout`] when it did not answer. bb8 keeps reconnecting in the
///   background, and calls go through again from its first success.
/// - Scripts are sent by SHA; one the server has forgotten (a restart, a promoted replica) is
///   sent once with its body, to its key's node.
/// - **On a Redis Cluster** ([`RedisStore::cluster`]) the same rules hold, with redis-rs's
///   cluster client in place of the pool: its own retries are off (it would re-send any
///   command after a dropped connection), a command the cluster refused unrun (`MOVED`,
///   `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `READONLY`, an unreachable node) is sent again once the
///   client knows the new slot map (an `ASK` at once to the node it names, after `ASKING`),
///   and one whose connection dropped is retried only where the list above allows, all
///   within the command timeout. A stalled node costs one timeout as above, node by node;
///   a call the cluster sends to an address that cannot be reached fails at once, naming
///   it; and a call follows at most five redirects (see [`RedisStore::cluster`]).
///
/// [bb8]: https://docs.rs/bb8
/// [bb8-redis]: https://docs.rs/bb8-redis
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use tower_redis_http::store::{RedisStore, Store};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379/1")
///     .max_connections(256)
///     .command_timeout(Duration::from_millis(250))
///     .build()
///     .await?;
/// let token = store.get("a1b2c3").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    links: Links,
    outage: Arc<Outage>,
    connect_timeout: Duration,
    keys: KeyScheme,
    default_timeout: Timeout,
    pub(super) command_timeout: Duration,
    /// The near cache, when the store has one.
    near: Option<Arc<Near>>,
    /// The connection writes that wait for a replica go over, shared by every clone.
    lane: Arc<Lane>,
    /// What this handle's writes must reach (see [`AnyStore::durable`](super::AnyStore)).
    durability: Durability,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.keys)
            .field("default_timeout", &self.default_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("links", &self.links)
            .field("near", &self.near)
            .finish()
    }
}

/// Whether calls are failing because Redis is out of reach, so that the log says once when
/// they succeed again.
#[derive(Default)]
struct Outage {
    failing: AtomicBool,
    failed_calls: AtomicU64,
    /// When the calls began failing, and when the latest recovery was logged.
    times: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Outage {
    fn failed(&self) {
        self.failed_calls.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed)
            && let Ok(mut times) = self.times.lock()
        {
            times.0.get_or_insert_with(Instant::now);
        }
    }

    /// One `INFO` line, at most every [`SUMMARY_EVERY`](crate::observe::SUMMARY_EVERY), so
    /// that a flapping network does not log a line per call either.
    fn recovered(&self) {
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

/// How a store reaches Redis.
#[derive(Clone)]
enum Links {
    /// One server, straight or found through Sentinel: a bb8 pool of multiplexed connections.
    Server(ServerLinks),
    /// A Redis Cluster: redis-rs's cluster client, which keeps one multiplexed connection per
    /// node and routes each command to the node that serves its key's slot.
    Cluster(Arc<super::cluster::ClusterLinks>),
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(links) => f.debug_tuple("Server").field(&links.pool.state()).finish(),
            Self::Cluster(links) => f.debug_tuple("Cluster").field(links).finish(),
        }
    }
}

/// The pool of connections to one server, the lease calls share, and what the latest
/// connection attempts found.
#[derive(Clone)]
struct ServerLinks {
    pool: bb8::Pool<TrackedManager>,
    lease: Arc<RwLock<Option<Lease>>>,
    reachability: Arc<Reachability>,
    stall: Arc<Stall>,
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
struct Stall {
    stalled: AtomicBool,
    probing: AtomicBool,
}

/// How long calls reuse the connection handle last taken from the pool before asking bb8
/// again. Short enough that bb8's lifetime and idle rules still govern every connection in
/// use; long enough that the pool's locks leave the per-call path.
const LEASE: Duration = Duration::from_secs(1);

/// The multiplexed handle calls share between two visits to the pool.
struct Lease {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
    opened_at: Instant,
    taken_at: Instant,
}

/// A pooled multiplexed connection and the flag that tells bb8 it broke.
struct TrackedConnection {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
    opened_at: Instant,
}

/// A multiplexed handle for one call: the connection, its broken flag, and when it opened.
struct Handle {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
    opened_at: Instant,
}

struct TrackedManager {
    inner: Connector,
    command_timeout: Duration,
    reachability: Arc<Reachability>,
}

/// The outcome of the latest connection attempt, so that calls fail at once while Redis is
/// known to be unreachable instead of each waiting out the connect timeout; and since when
/// connections are suspect of having been dropped.
struct Reachability {
    last_failure: Mutex<Option<ConnectFailure>>,
    epoch: Instant,
    /// Nanoseconds after `epoch` before which every connection opened is suspect (0: none).
    /// One dropped connection usually means all of them went (a `CLIENT KILL`, a restart, a
    /// failover): a retry must not pick another connection that the same event dropped.
    suspect_before: AtomicU64,
    /// The database connections select, for what a refused `SELECT` says.
    database: i64,
}

impl Default for Reachability {
    fn default() -> Self {
        Self::selecting(0)
    }
}

struct ConnectFailure {
    at: Instant,
    /// `Timeout` for a server that did not answer in time (stalled, or a silent network),
    /// `Connection` for one that refused or reset.
    kind: StoreErrorKind,
    reason: String,
}

impl Reachability {
    /// For connections that select `database`.
    fn selecting(database: i64) -> Self {
        Self {
            last_failure: Mutex::default(),
            epoch: Instant::now(),
            suspect_before: AtomicU64::new(0),
            database,
        }
    }

    fn record(&self, outcome: Result<(), &RedisError>) {
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
    fn dropped_before(&self, seen_at: Instant) {
        let nanos = u64::try_from(seen_at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX);
        self.suspect_before.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Whether a connection opened at `opened_at` may have been dropped with another one.
    fn is_suspect(&self, opened_at: Instant) -> bool {
        let before = self.suspect_before.load(Ordering::Relaxed);
        before != 0
            && u64::try_from(opened_at.saturating_duration_since(self.epoch).as_nanos())
                .unwrap_or(u64::MAX)
                < before
    }

    /// The error for calls while the latest attempt failed within `window`.
    fn recent_failure(&self, window: Duration) -> Option<StoreError> {
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

/// What the server said when it refused a new connection's `SELECT`, if that is how the
/// connection failed (redis-rs reports it as "refused to switch database").
fn refused_select(err: &RedisError) -> Option<String> {
    Some(err.to_string())
        .filter(|text| text.contains("refused to switch database"))
        .map(|text| {
            text.rsplit_once(": ")
                .map_or(text.clone(), |(_, detail)| detail.to_owned())
        })
}

/// How new connections reach the master: straight to one address, or through Sentinel.
enum Connector {
    Direct(RedisConnectionManager),
    /// Asks the sentinels for the current master (and checks its role) on every connect, so
    /// that connections opened after a failover reach the promoted replica.
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

impl Connector {
    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        use bb8::ManageConnection;
        match self {
            Self::Direct(manager) => manager.connect().await,
            Self::Sentinel(client) => client.lock().await.get_async_connection().await,
        }
    }

    async fn is_valid(&self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
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

/// Drops near-cache entries when a write returns, however it returns: see
/// [`RedisStore::written`].
struct Written<'a> {
    near: Option<&'a Near>,
    /// `None`: every key.
    key: Option<&'a str>,
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        match (self.near, self.key) {
            (Some(near), Some(key)) => near.forget(key.as_bytes()),
            (Some(near), None) => near.forget_all(),
            (None, _) => {}
        }
    }
}

/// Whether a command may be sent a second time when the first attempt found the connection
/// dropped: only if running it twice has the effect of running it once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    OnDroppedConnection,
    Never,
}

impl RedisStore {
    /// A builder for a store at `location`: `redis://[user][:password@]host[:port][/db]`,
    /// `unix:///path/to/redis.sock[?db=N]` or `redis+unix:///path`.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::RedisStore;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::builder("redis://127.0.0.1:6379").database(2).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(location: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            location: location.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            username: None,
            password: None,
            database: None,
            keys: KeyScheme::default(),
            default_timeout: Timeout::default(),
            tls_root: None,
            tls_client: None,
            sentinel: None,
            cluster: None,
            near: None,
        }
    }

    /// A builder for a store on the master that Redis Sentinel names `service`, asking the
    /// `sentinels` (`host:port`, or `redis://[:password@]host:port` for a sentinel with a
    /// password) which server that is. Each new connection asks again and checks the server's
    /// role, so after a failover the store writes to the promoted replica: connections to the
    /// old master break (it is down, or answers `READONLY` once demoted) and are replaced.
    /// The builder's password, user and database are the master's.
    ///
    /// With TLS certificates given ([`tls_root_certificate`](RedisStoreBuilder::tls_root_certificate),
    /// [`tls_client_certificate`](RedisStoreBuilder::tls_client_certificate)), or sentinels
    /// given as `rediss://host:port`, the master is reached over TLS (the `tls` feature);
    /// `rediss://` sentinels are reached over TLS too, with the same certificates.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::RedisStore;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::sentinel(["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"], "mymaster")
    ///     .password("s3cret")
    ///     .database(1)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn sentinel<T: Into<String>>(
        sentinels: impl IntoIterator<Item = T>,
        service: impl Into<String>,
    ) -> RedisStoreBuilder {
        let service = service.into();
        let mut builder = Self::builder(format!("redis+sentinel://{service}"));
        builder.sentinel = Some(SentinelTopology {
            nodes: sentinels.into_iter().map(Into::into).collect(),
            service,
        });
        builder
    }

    /// A builder for a store on a Redis Cluster, found through `seed_nodes`
    /// (`redis://[:password@]host:port`, or `rediss://` for TLS): any reachable node tells the
    /// client the others and which slots each serves. Every command goes to the node that
    /// serves its key, and follows the slots when a replica is promoted; see "Production
    /// topologies" in the crate docs for what holds on a cluster. The builder's password and
    /// user are the nodes'; a cluster has only database 0, and one connection per node
    /// ([`max_connections`](RedisStoreBuilder::max_connections) does not apply).
    ///
    /// Operations on one key and the scripts run on their key's node, atomic as on one server;
    /// the cache keeps each URL's keys in one slot. Three operations span slots and run as
    /// several steps:
    /// - the `index_*` operations (a user's tokens): a member is added after its key is
    ///   stored and dropped only once its key is gone, and `index_delete_all` deletes the
    ///   members it read, then removes exactly those, so no live member escapes its index;
    /// - [`bump_version`](Store::bump_version): `DUMP`, `RESTORE`, `DEL`, as Django's
    ///   `incr_version` does it in three steps;
    /// - [`set_many`](Store::set_many): atomic per hash slot.
    ///
    /// A pattern invalidation
    /// ([`CacheInvalidator::invalidate_matching`](crate::cache::CacheInvalidator::invalidate_matching))
    /// runs `SCAN` master by master. When slots move while it runs (a resharding, a
    /// failover), it sweeps again, at most three times in all, and then fails with
    /// [`StoreErrorKind::Connection`] rather than report success while keys that moved past it
    /// may remain.
    ///
    /// A call follows at most five `MOVED` or `ASK` redirects, then fails with
    /// [`StoreErrorKind::Connection`]: nodes that disagree on who serves a slot would bounce
    /// it until the timeout. A node that announces an address this client cannot reach
    /// (`cluster-announce-ip`, `-port` or `-hostname`, behind NAT or in a container) fails the
    /// calls sent there at once, with an error that names the address: the store tries a TCP
    /// connection to an address the cluster names and the client holds no connection to, and
    /// remembers a refusal, or a silence as long as the connect timeout, for the connect
    /// timeout.
    ///
    /// A node that stops answering costs its keys one command timeout, not one per call: after
    /// a call for one of its keys timed out, calls for any of its keys fail at once with
    /// [`StoreErrorKind::Timeout`] until it answers a ping, a moment after it is back; calls
    /// for other nodes go on.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::RedisStore;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])
    ///     .password("s3cret")
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster<T: Into<String>>(seed_nodes: impl IntoIterator<Item = T>) -> RedisStoreBuilder {
        let nodes: Vec<String> = seed_nodes.into_iter().map(Into::into).collect();
        let mut builder = Self::builder(nodes.join(","));
        builder.cluster = Some(nodes);
        builder
    }

    /// Sends `PING` and waits for the answer: a readiness check for health endpoints.
    ///
    /// # Errors
    ///
    /// The [`StoreError`] of a call that failed or timed out.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::RedisStore;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = RedisStore::builder("redis://127.0.0.1").build().await?;
    /// store.ping().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(
            "PING",
            Retry::OnDroppedConnection,
            move |mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await },
        )
        .await
    }

    /// A new lease: a multiplexed handle from bb8 (within `deadline`), which later calls share
    /// while it is fresh and unbroken (see [`leased`](Self::leased)).
    async fn lease_from_pool(
        &self,
        links: &ServerLinks,
        deadline: tokio::time::Instant,
    ) -> Result<Handle, StoreError> {
        let handle = tokio::time::timeout_at(deadline, self.checkout_from_pool(links))
            .await
            .map_err(|_| {
                links
                    .reachability
                    .recent_failure(self.connect_timeout)
                    .unwrap_or_else(|| {
                        StoreError::new(
                            StoreErrorKind::Timeout,
                            "no Redis connection could be had within the command timeout",
                        )
                    })
            })??;
        if let Ok(mut lease) = links.lease.write() {
            *lease = Some(Lease {
                conn: handle.conn.clone(),
                broken: Arc::clone(&handle.broken),
                opened_at: handle.opened_at,
                taken_at: Instant::now(),
            });
        }
        Ok(handle)
    }

    fn leased(links: &ServerLinks) -> Option<Handle> {
        let lease = links.lease.read().ok()?;
        let lease = lease.as_ref()?;
        if lease.broken.load(Ordering::Relaxed)
            || lease.taken_at.elapsed() > LEASE
            || links.reachability.is_suspect(lease.opened_at)
        {
            return None;
        }
        Some(Handle {
            conn: lease.conn.clone(),
            broken: Arc::clone(&lease.broken),
            opened_at: lease.opened_at,
        })
    }

    /// A handle from bb8, skipping connections flagged broken or suspect of having been
    /// dropped with another one (dropping their guard hands them back to bb8, which discards
    /// them).
    async fn checkout_from_pool(&self, links: &ServerLinks) -> Result<Handle, StoreError> {
        // While the latest connection attempt failed recently and no connection is open,
        // waiting for bb8 would only wait out the timeout. bb8 keeps retrying in the
        // background, and each failure renews the record; the first success clears it.
        if links.pool.state().idle_connections == 0
            && let Some(err) = links.reachability.recent_failure(self.connect_timeout)
        {
            return Err(err);
        }
        loop {
            let pooled = links.pool.get().await.map_err(|err| match err {
                bb8::RunError::User(err) => {
                    match links.reachability.recent_failure(self.connect_timeout) {
                        Some(failure) if failure.kind() == StoreErrorKind::Unsupported => failure,
                        _ => classify("connect", err),
                    }
                }
                bb8::RunError::TimedOut => {
                    match links.reachability.recent_failure(self.connect_timeout) {
                        Some(err) => err,
                        None => StoreError::new(
                            StoreErrorKind::Timeout,
                            "no Redis connection could be had within the connect timeout",
                        ),
                    }
                }
            })?;
            if pooled.broken.load(Ordering::Relaxed)
                || links.reachability.is_suspect(pooled.opened_at)
            {
                pooled.broken.store(true, Ordering::Relaxed);
                continue;
            }
            return Ok(Handle {
                conn: pooled.conn.clone(),
                broken: Arc::clone(&pooled.broken),
                opened_at: pooled.opened_at,
            });
        }
    }

    /// Runs `command` on a pooled connection, flags the connection when it broke or went
    /// silent, and retries once on a new one where `retry` allows.
    ///
    /// One deadline, the command timeout, bounds the whole call from checkout to reply,
    /// retry included. On the usual path (a leased connection) that bound is the connection's
    /// own response timeout, with no timer of its own: a second timer per call cost about a
    /// tenth of the throughput (see `benches/store_ratio.rs`). Only a call that has to go to
    /// the pool (a new lease, a retry) arms a timer for what is left of the deadline.
    ///
    /// On a handle made [durable](Self::with_durability), the call goes over the store's
    /// lane and waits for a replica (see [`run_replicated`](Self::run_replicated)).
    pub(super) async fn run<T, F, Fut>(
        &self,
        name: &'static str,
        retry: Retry,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if self.durability.waits() {
            // boxed: rare, and every store call's future would otherwise carry it inline
            let replicated =
                Box::pin(self.run_replicated(name, retry, self.durability, command, |_| true))
                    .await?;
            return replicated.value_if_acknowledged(name);
        }
        self.run_master(name, retry, command).await
    }

    /// [`run`](Self::run) for a write the master's acknowledgement is enough for.
    pub(super) async fn run_master<T, F, Fut>(
        &self,
        name: &'static str,
        retry: Retry,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let started = crate::observe::TIMES_STORE_CALLS.then(Instant::now);
        let result = match &self.links {
            Links::Server(links) => {
                if links.stall.stalled.load(Ordering::Relaxed) {
                    Err(StoreError::new(
                        StoreErrorKind::Timeout,
                        format!(
                            "Redis {name} not sent: Redis stopped answering within the command timeout; calls fail at once until it answers a ping"
                        ),
                    ))
                } else {
                    self.run_on_server(links, name, retry, command).await
                }
            }
            Links::Cluster(links) => links.run(name, retry, self.command_timeout, command).await,
        };
        if let Some(started) = started {
            crate::observe::store_call(name, started.elapsed());
        }
        if let Err(err) = &result {
            crate::observe::store_error(name, err.kind().label());
        }
        match &result {
            Ok(_) => {
                if self.outage.failing.load(Ordering::Relaxed) {
                    self.outage.recovered();
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    StoreErrorKind::Timeout | StoreErrorKind::Connection
                ) =>
            {
                self.outage.failed();
            }
            Err(_) => {}
        }
        result
    }

    /// A call on `handle` went unanswered for the command timeout: the connection is
    /// flagged broken, and the server is taken as stalled unless the connection was known bad
    /// before (flagged by another call, or opened before a drop was seen). A timeout on a
    /// connection already replaced says nothing about the server, which answers on the new
    /// one: a `CLIENT KILL` whose close never reached one waiting call must fail that call
    /// only, not every call until a ping answers.
    fn timed_out(&self, links: &ServerLinks, handle: &Handle) {
        let known_bad = handle.broken.swap(true, Ordering::Relaxed)
            || links.reachability.is_suspect(handle.opened_at);
        if !known_bad {
            self.stalled(links);
        }
    }

    /// A call timed out: calls fail at once from now on, while one task pings until the server
    /// answers (see [`Stall`]).
    fn stalled(&self, links: &ServerLinks) {
        links.stall.stalled.store(true, Ordering::Relaxed);
        if links.stall.probing.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // nobody to ping: the next call finds out
            links.stall.stalled.store(false, Ordering::Relaxed);
            links.stall.probing.store(false, Ordering::Relaxed);
            return;
        };
        let store = self.clone();
        runtime.spawn(async move {
            let Links::Server(links) = &store.links else {
                return;
            };
            // ends when the server answers, when the trouble becomes another (a refused
            // connection has its own fail-fast), or when this task holds the last handle
            loop {
                let ping =
                    store
                        .run_on_server(
                            links,
                            "PING",
                            Retry::OnDroppedConnection,
                            |mut conn| async move {
                                redis::cmd("PING").query_async::<()>(&mut conn).await
                            },
                        )
                        .await;
                let still_stalled = ping.is_err_and(|err| err.kind() == StoreErrorKind::Timeout);
                if !still_stalled || Arc::strong_count(&links.stall) == 1 {
                    break;
                }
                // a ping refused at once (the pool's own fail-fast) must not spin
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            links.stall.stalled.store(false, Ordering::Relaxed);
            links.stall.probing.store(false, Ordering::Relaxed);
        });
    }

    /// [`run`](Self::run) on one server.
    async fn run_on_server<T, F, Fut>(
        &self,
        links: &ServerLinks,
        name: &'static str,
        retry: Retry,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.command_timeout);
        let mut tries_left = if retry == Retry::OnDroppedConnection {
            2
        } else {
            1
        };
        let mut refused_once = false;
        loop {
            tries_left -= 1;
            let (handle, result) = match Self::leased(links) {
                Some(handle) => {
                    let result = command(Conn::Server(handle.conn.clone())).await;
                    (handle, result)
                }
                None => {
                    let handle = match self.lease_from_pool(links, deadline).await {
                        Ok(handle) => handle,
                        Err(err) => {
                            if err.kind() == StoreErrorKind::Timeout {
                                // no connection within the deadline: nothing answered
                                self.stalled(links);
                            }
                            return Err(err);
                        }
                    };
                    let attempt = command(Conn::Server(handle.conn.clone()));
                    match tokio::time::timeout_at(deadline, attempt).await {
                        Ok(result) => (handle, result),
                        Err(_) => {
                            self.timed_out(links, &handle);
                            return Err(StoreError::new(
                                StoreErrorKind::Timeout,
                                format!("Redis {name} took longer than the command timeout"),
                            ));
                        }
                    }
                }
            };
            let err = match result {
                Ok(value) => return Ok(value),
                // a transaction refused as a whole shows why inside its EXECABORT
                Err(err) => refusal_inside(err),
            };
            if is_demoted(&err) {
                // The server this connection reaches is a replica now (a failover behind a
                // managed "primary endpoint" or a moved DNS name): every connection opened
                // before may reach it too, and writing through them would fail forever.
                // Redis refused the command without running it, so sending it once more, on
                // a new connection, cannot run it twice, whatever the command.
                handle.broken.store(true, Ordering::Relaxed);
                links.reachability.dropped_before(Instant::now());
                if !refused_once {
                    refused_once = true;
                    tries_left = tries_left.max(1);
                    tracing::debug!(command = name, error = %err, "Redis answered READONLY; retrying on a new connection");
                    continue;
                }
                return Err(classify(name, err));
            }
            if err.is_timeout() {
                // A connection that stays silent past the timeout may be half-open (a peer
                // gone without a reset); replacing it costs one reconnect, keeping it may
                // cost every later call a timeout.
                self.timed_out(links, &handle);
            } else if breaks_connection(&err) {
                handle.broken.store(true, Ordering::Relaxed);
                if err.is_connection_dropped() {
                    // Every connection opened before the drop was seen may have gone with
                    // it; a healthy one among them costs one reconnect, a dead one a retry.
                    links.reachability.dropped_before(Instant::now());
                    if tries_left > 0 {
                        tracing::debug!(command = name, error = %err, "Redis connection dropped; retrying on a new one");
                        continue;
                    }
                }
            }
            return Err(classify(name, err));
        }
    }

    fn expiry_ms(&self, expiry: Expiry) -> Option<Option<u64>> {
        match expiry.resolve(self.default_timeout) {
            Expiry::After(ttl) if ttl.is_zero() => None,
            Expiry::After(ttl) => Some(Some(ttl_ms_ceil(ttl))),
            Expiry::Never | Expiry::Default => Some(None),
        }
    }
}

/// Whether Redis refused a write because the server is a replica (`READONLY`, also inside a
/// script's error): the connection reaches a demoted master.
fn is_demoted(err: &RedisError) -> bool {
    err.code() == Some("READONLY")
        || err
            .detail()
            .is_some_and(|detail| detail.contains("READONLY"))
}

/// The refusal inside a transaction Redis refused as a whole (`EXECABORT`): a queued command
/// answered `READONLY` (a demoted master), `MOVED`, `ASK`, `TRYAGAIN` or `CLUSTERDOWN` (a
/// cluster's topology change). Nothing in the transaction ran, so it is the same refusal as
/// the plain error, and is handled as one; any other error is returned as it is.
pub(super) fn refusal_inside(err: RedisError) -> RedisError {
    if !matches!(
        err.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort)
    ) {
        return err;
    }
    let refusal = err.clone().into_server_errors().and_then(|errors| {
        errors.iter().find_map(|(_, inner)| {
            let inner = RedisError::from(inner.clone());
            let refused = is_demoted(&inner)
                || matches!(
                    inner.retry_method(),
                    redis::RetryMethod::MovedRedirect
                        | redis::RetryMethod::AskRedirect
                        | redis::RetryMethod::RefreshSlotsAndRetry
                        | redis::RetryMethod::WaitAndRetry
                );
            refused.then_some(inner)
        })
    });
    refusal.unwrap_or(err)
}

fn breaks_connection(err: &RedisError) -> bool {
    err.is_connection_dropped()
        || err.is_unrecoverable_error()
        || err.is_timeout()
        || err.is_io_error()
}

pub(super) fn classify(command: &'static str, err: RedisError) -> StoreError {
    let kind = if err.is_timeout() {
        StoreErrorKind::Timeout
    } else if breaks_connection(&err) || is_demoted(&err) {
        StoreErrorKind::Connection
    } else if err.code() == Some("OOM") {
        StoreErrorKind::CapacityExceeded
    } else if err.code() == Some("INVALIDVALUE")
        // a value read as an index, or the reverse: the memory store's kind for it too; inside
        // a transaction's replies it comes without a code of its own
        || err.code() == Some("WRONGTYPE")
        || err.to_string().contains("WRONGTYPE")
        || err
            .detail()
            .is_some_and(|detail| detail.contains("not an integer") || detail.contains("overflow"))
    {
        StoreErrorKind::InvalidValue
    } else if err.code().is_some() {
        StoreErrorKind::Server
    } else {
        StoreErrorKind::Connection
    };
    StoreError::with_source(kind, format!("Redis {command} failed"), err)
}

fn unexpected_reply(command: &'static str, detail: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Server,
        format!("Redis {command} gave an unexpected reply: {detail}"),
    )
}

/// The replicas a master's `INFO replication` counts.
pub(super) fn connected_replicas(info: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn to_duration_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Which near-cache reads Redis is asked to track: see [`RedisStore::get_tracked`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Track {
    /// Only a key that exists: the keys clients choose.
    IfFound,
    /// Whatever the read finds: a key the crate names itself and wants to hear created.
    Always,
}

/// The longest connect or command timeout a store takes: every call's deadline is now plus
/// one of them, and a longer wait is a misconfiguration, not a timeout.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// The error of a read that outlasted its deadline, as redis-rs reports its own timeouts.
fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

impl RedisStore {
    /// `GET` over the pool, bypassing the near cache.
    async fn get_untracked(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let value: Option<Vec<u8>> = self
            .run("GET", Retry::OnDroppedConnection, move |mut conn| async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(value.map(Bytes::from))
    }

    /// `GET` (with `PTTL`, to bound the entry's age) over the near cache's tracking connection,
    /// so that Redis announces the key's next change; the value is kept unless the key changed
    /// while the read was under way. `None` while there is no tracking connection.
    ///
    /// Tracking is opt-in (`CLIENT TRACKING ON OPTIN`), and `track` says for which reads:
    /// [`Track::IfFound`] sends an untracked `EXISTS` first and reads (tracked) only a key that
    /// exists, because keys are mostly chosen by clients (tokens, URLs) and every key read
    /// tracked stays in Redis's tracking table until it is written: unknown tokens would fill
    /// it up to `tracking-table-max-keys`, past which Redis evicts tracked keys at random.
    /// A fill of a key found costs one round trip more; an unknown key costs one, as before.
    async fn get_tracked(
        &self,
        near: &Near,
        key: &str,
        track: Track,
    ) -> Option<Result<Option<Bytes>, StoreError>> {
        let fill = near.start_fill(key)?;
        let mut conn = fill.conn();
        let tracked_read = |mut conn: MultiplexedConnection| async move {
            redis::pipe()
                .cmd("CLIENT")
                .arg("CACHING")
                .arg("YES")
                .ignore()
                .cmd("GET")
                .arg(key)
                .cmd("PTTL")
                .arg(key)
                .query_async::<(Option<Vec<u8>>, i64)>(&mut conn)
                .await
        };
        let read: Result<(Option<Vec<u8>>, i64), RedisError> = match track {
            Track::Always => tracked_read(conn).await,
            Track::IfFound => {
                // both round trips within one command timeout, as any other read
                let deadline = tokio::time::Instant::now() + self.command_timeout;
                match redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<bool>(&mut conn)
                    .await
                {
                    Ok(false) => Ok((None, -2)),
                    Ok(true) => tokio::time::timeout_at(deadline, tracked_read(conn))
                        .await
                        .unwrap_or_else(|_| Err(timed_out())),
                    Err(err) => Err(err),
                }
            }
        };
        match read {
            Ok((value, pttl)) => {
                let value = value.map(Bytes::from);
                fill.finish(value.as_ref().map(|value| (value, pttl)));
                if self.outage.failing.load(Ordering::Relaxed) {
                    self.outage.recovered();
                }
                Some(Ok(value))
            }
            Err(err) => {
                fill.failed(&err);
                if err.is_timeout() {
                    // Redis stopped answering: the store's own stall handling takes over
                    // rather than a second wait on the pool
                    let err = classify("GET", err);
                    if let Links::Server(links) = &self.links {
                        self.stalled(links);
                    }
                    self.outage.failed();
                    return Some(Err(err));
                }
                // only the tracking connection failed, or it did with the others, or Redis
                // refused the read (a key of another type, reported inside the pipeline's
                // error): the pool finds out which, with its own retry and error kinds
                None
            }
        }
    }

    /// [`Store::get`], tracked by the near cache even while the key does not exist, so that
    /// its creation by another instance is announced: see [`AnyStore::get_watched`](super::AnyStore).
    pub(super) async fn get_watched(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let key = self.keys.make(key)?;
        if let Some(near) = &self.near {
            if let Some(value) = near.get(&key) {
                return Ok(Some(value));
            }
            if let Some(read) = self.get_tracked(near, &key, Track::Always).await {
                return read;
            }
        }
        self.get_untracked(&key).await
    }

    /// A guard for a write to `key`: when the write returns, what the near cache holds for
    /// the key is dropped at once rather than when Redis's invalidation arrives, so that this
    /// process reads its own writes.
    fn written<'a>(&'a self, key: &'a str) -> Written<'a> {
        Written {
            near: self.near.as_deref(),
            key: Some(key),
        }
    }

    /// [`written`](Self::written) for a write to keys the store cannot name one by one.
    fn written_many(&self) -> Written<'_> {
        Written {
            near: self.near.as_deref(),
            key: None,
        }
    }

    pub(super) fn near_cache_changes(&self) -> Option<u64> {
        self.near.as_ref().map(|near| near.changes())
    }

    pub(super) fn has_near_cache(&self) -> bool {
        self.near.is_some()
    }

    /// What the near cache holds now, and whether it is serving; `None` without one.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::{NearCache, RedisStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::builder("redis://127.0.0.1").near_cache(NearCache::new()).build().await?;
    /// if let Some(usage) = store.near_cache_usage() {
    ///     println!("{} entries, serving: {}", usage.entries, usage.serving);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn near_cache_usage(&self) -> Option<NearCacheUsage> {
        self.near.as_ref().map(|near| near.usage())
    }
}

/// How long an unreplicated hit is tried to be given back while the master does not answer,
/// at most (a hit that resets sooner is not worth giving back past its reset).
const GIVE_BACK_FOR: Duration = Duration::from_secs(60);

/// What a call that may wait for a replica found: its value, and whether the writes it made
/// reached a replica (or needed not).
pub(super) struct Replicated<T> {
    value: T,
    acknowledged: Acknowledged,
}

/// Whether a write reached a replica.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Acknowledged {
    /// A replica has it, or none was needed.
    Yes,
    /// The master answered the wait: no replica had it in time.
    Short,
    /// The master did not answer the wait (stalled, or the connection broke): whether a
    /// replica has the write is unknown.
    NoAnswer,
}

impl<T> Replicated<T> {
    fn done(value: T) -> Self {
        Self {
            value,
            acknowledged: Acknowledged::Yes,
        }
    }

    fn value_if_acknowledged(self, name: &'static str) -> Result<T, StoreError> {
        match self.acknowledged {
            Acknowledged::Yes => Ok(self.value),
            Acknowledged::Short => Err(not_replicated(name)),
            Acknowledged::NoAnswer => Err(wait_unanswered(name)),
        }
    }
}

fn wait_unanswered(name: &'static str) -> StoreError {
    crate::observe::store_error(name, StoreErrorKind::Timeout.label());
    StoreError::new(
        StoreErrorKind::Timeout,
        format!(
            "Redis {name}: the master did not answer the wait for a replica within the command timeout"
        ),
    )
}

fn not_replicated(name: &'static str) -> StoreError {
    crate::observe::store_error(name, StoreErrorKind::NotReplicated.label());
    StoreError::new(
        StoreErrorKind::NotReplicated,
        format!(
            "Redis {name}: no replica acknowledged the write within the command timeout; a failover now could lose it"
        ),
    )
}

impl RedisStore {
    /// The cluster's links, on a cluster store.
    pub(super) fn cluster_links(&self) -> Option<&super::cluster::ClusterLinks> {
        match &self.links {
            Links::Cluster(links) => Some(links),
            Links::Server(_) => None,
        }
    }
}

/// Writes that wait for a replica: see [`Durability`].
impl RedisStore {
    /// The same store, with every write made through this handle under `durability`.
    pub(super) fn with_durability(&self, durability: Durability) -> Self {
        Self {
            durability,
            ..self.clone()
        }
    }

    /// How many replicas a write under `durability` waits for: `None` when the master's
    /// acknowledgement is enough (asked for, or no replica to wait for).
    ///
    /// On a cluster the count is asked of the master of `slot` (the write's), so that a
    /// stalled master elsewhere costs the write nothing; of any node without one.
    async fn replicas_to_wait_for(
        &self,
        durability: Durability,
        slot: Option<u16>,
    ) -> Result<Option<u64>, StoreError> {
        if !durability.waits() {
            return Ok(None);
        }
        let replicas = match self.lane.known_replicas() {
            Some(replicas) => replicas,
            None => {
                let replicas = match &self.links {
                    Links::Server(_) => {
                        let info: String = self
                            .run_master(
                                "INFO replication",
                                Retry::OnDroppedConnection,
                                |mut conn| async move {
                                    redis::cmd("INFO")
                                        .arg("replication")
                                        .query_async(&mut conn)
                                        .await
                                },
                            )
                            .await?;
                        connected_replicas(&info)
                    }
                    Links::Cluster(_) => self.cluster_fewest_replicas(slot).await?,
                };
                self.lane.set_replicas(replicas);
                replicas
            }
        };
        match (durability, replicas) {
            (_, 1..) => Ok(Some(1)),
            (Durability::Replica, _) => {
                crate::observe::store_error("durable write", StoreErrorKind::NotReplicated.label());
                Err(StoreError::new(
                    StoreErrorKind::NotReplicated,
                    "Redis has no replica connected to acknowledge the write; it was not made",
                ))
            }
            _ => Ok(None),
        }
    }

    /// Runs `command` over the store's lane and, when `wrote` says its reply changed
    /// something, waits (`WAIT`) on the same connection for a replica to have it, all within
    /// the command timeout. Where `durability` needs no replica, an ordinary call.
    pub(super) async fn run_replicated<T, F, Fut>(
        &self,
        name: &'static str,
        retry: Retry,
        durability: Durability,
        command: F,
        wrote: impl Fn(&T) -> bool,
    ) -> Result<Replicated<T>, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let deadline = tokio::time::Instant::now() + self.command_timeout;
        // the write's slot on a cluster: its master alone is asked, for the count and the wait
        let slot = match &self.links {
            Links::Cluster(_) => super::cluster::dry_run_slot(&command).await,
            Links::Server(_) => None,
        };
        let Some(replicas) = self.replicas_to_wait_for(durability, slot).await? else {
            let value = self.run_master(name, retry, command).await?;
            return Ok(Replicated::done(value));
        };
        let timeout = || {
            StoreError::new(
                StoreErrorKind::Timeout,
                format!("Redis {name} took longer than the command timeout"),
            )
        };
        let result = match &self.links {
            Links::Server(links) => {
                if links.stall.stalled.load(Ordering::Relaxed) {
                    return Err(timeout());
                }
                self.run_on_lane_server(links, name, retry, deadline, &command)
                    .await
            }
            Links::Cluster(links) => {
                let lane = self.lane.connection(|| async {
                    Ok::<_, StoreError>(LaneConn::Cluster(links.dedicated().await?))
                });
                let lane = tokio::time::timeout_at(deadline, lane)
                    .await
                    .map_err(|_| timeout())??;
                let LaneConn::Cluster(conn) = lane else {
                    return Err(unexpected_reply(
                        name,
                        "a cluster store holds a server lane",
                    ));
                };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let value = links.run_on(&conn, name, retry, left, &command).await;
                value.map(|value| (value, LaneConn::Cluster(conn)))
            }
        };
        let (value, lane) = result.inspect_err(|_| self.lane.reset())?;
        if !wrote(&value) {
            return Ok(Replicated::done(value));
        }
        // the wait leaves room within the deadline for the reply
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait_ms = u64::try_from(left.as_millis() * 3 / 4)
            .unwrap_or(u64::MAX)
            .max(1);
        let wait = async {
            match (lane, &self.links) {
                (LaneConn::Server(mut conn), _) => {
                    redis::cmd("WAIT")
                        .arg(replicas)
                        .arg(wait_ms)
                        .query_async::<u64>(&mut conn)
                        .await
                }
                (LaneConn::Cluster(mut conn), Links::Cluster(links)) => {
                    links.wait_after(&mut conn, slot, replicas, wait_ms).await
                }
                (LaneConn::Cluster(_), Links::Server(_)) => Ok(0),
            }
        };
        let acknowledged = match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(count)) if count >= replicas => Acknowledged::Yes,
            Ok(Ok(_)) => Acknowledged::Short,
            // no answer, or a broken connection: the write may or may not have reached a
            // replica, which is not the promise
            _ => {
                // a server lane is one connection, blocked while its WAIT lasts; a cluster
                // lane holds one per node and reconnects by itself, and opening another would
                // wait on a stalled node again
                if matches!(self.links, Links::Server(_)) {
                    self.lane.reset();
                }
                Acknowledged::NoAnswer
            }
        };
        if acknowledged == Acknowledged::Short && durability == Durability::ReplicaIfAny {
            // the count may be a second old: a failover can have left this master with no
            // replica, and then the master alone is all that was asked for. Asked only of a
            // master that answers: one that did not would cost a second timeout.
            self.lane.forget_replicas();
            if let Ok(None) = self.replicas_to_wait_for(durability, slot).await {
                return Ok(Replicated::done(value));
            }
        }
        if acknowledged != Acknowledged::Yes {
            tracing::warn!(
                command = name,
                ?acknowledged,
                "a write that must reach a replica did not within the command timeout"
            );
        }
        Ok(Replicated {
            value,
            acknowledged,
        })
    }

    /// Whether a hit under `policy` may have to wait for a replica (not when it needs none,
    /// nor when the server was just seen to have none to wait for).
    fn may_wait_for_replica(&self, policy: &RatePolicy) -> bool {
        let durability = policy.durability();
        durability.waits()
            && !(durability == Durability::ReplicaIfAny && self.lane.known_replicas() == Some(0))
    }

    /// A rate-limit step under `policy`'s durability; `wrote` tells from its reply whether
    /// the hit was allowed (a refused hit wrote nothing, and waits for nothing).
    async fn run_step<T, F, Fut>(
        &self,
        policy: &RatePolicy,
        name: &'static str,
        retry: Retry,
        command: F,
        wrote: impl Fn(&T) -> bool,
    ) -> Result<Replicated<T>, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let durability = policy.durability();
        if self.may_wait_for_replica(policy) {
            // boxed, so that a hit that needs no replica carries none of it in its future
            return Box::pin(self.run_replicated(name, retry, durability, command, wrote)).await;
        }
        let value = self.run_master(name, retry, command).await?;
        Ok(Replicated::done(value))
    }

    /// `decision`, unless its hit was allowed and did not reach a replica in time. A policy
    /// whose requests go on whatever the store says
    /// ([`keeps_unreplicated_hits`](RatePolicy::keeps_unreplicated_hits)) keeps the hit on the
    /// master and answers the decision: limiting as strict as [`Durability::Master`], never
    /// less. Otherwise the hit is given back (a send flag a failover may lose is not one to
    /// rely on, and the client may try again) and the call fails: as not replicated when the
    /// master answered the wait, as a timeout when it did not, whose give-back goes on in the
    /// background rather than cost the request a second timeout.
    async fn kept(
        &self,
        key: &str,
        policy: &RatePolicy,
        decision: RateDecision,
        acknowledged: Acknowledged,
    ) -> Result<RateDecision, StoreError> {
        if acknowledged == Acknowledged::Yes {
            return Ok(decision);
        }
        if policy.keeps_unreplicated_hits() {
            crate::observe::store_error("rate-limit step", StoreErrorKind::NotReplicated.label());
            return Ok(decision);
        }
        if acknowledged == Acknowledged::Short {
            if let Err(err) = self.release_full(key, policy, &decision).await {
                tracing::warn!(error = %err, "an unreplicated rate-limit hit could not be given back");
            }
            return Err(not_replicated("rate-limit step"));
        }
        self.give_back_later(key, policy, decision);
        Err(wait_unanswered("rate-limit step"))
    }

    /// Gives `decision`'s hit back in the background, trying again while the master does not
    /// answer (a stall outlasts one timeout), for as long as the hit itself would count.
    fn give_back_later(&self, key: &str, policy: &RatePolicy, decision: RateDecision) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, key, policy) = (self.clone(), key.to_owned(), *policy);
        runtime.spawn(async move {
            let gives_up = tokio::time::Instant::now() + decision.reset.min(GIVE_BACK_FOR);
            loop {
                match store.release_full(&key, &policy, &decision).await {
                    Ok(_) => return,
                    Err(err) if tokio::time::Instant::now() >= gives_up => {
                        tracing::warn!(error = %err, "an unreplicated rate-limit hit could not be given back");
                        return;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
    }

    /// [`rate_limit_full`](Backend::rate_limit_full) for a hit that may wait for a replica:
    /// run in a task of its own, so that a request dropped during the wait (its client gone,
    /// an outer timeout) does not leave its hit counted for a request that never went on: the
    /// task gives it back.
    async fn rate_limit_durably(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> Result<RateDecision, StoreError> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Box::pin(self.rate_limit_step(key, policy)).await;
        };
        let (store, owned_key, owned_policy) = (self.clone(), key.to_owned(), *policy);
        let (answer, answered) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let decided = store.rate_limit_step(&owned_key, &owned_policy).await;
            if let Err(Ok(decision)) = answer.send(decided)
                && decision.allowed
            {
                tracing::debug!(
                    "a request went away while its hit waited for a replica; given back"
                );
                let _ = store
                    .release_full(&owned_key, &owned_policy, &decision)
                    .await;
            }
        });
        answered.await.unwrap_or_else(|_| {
            Err(unexpected_reply(
                "rate-limit step",
                "no answer from its task",
            ))
        })
    }

    /// `command` on the lane to one server, opened when there is none, and once more on a
    /// new one when the connection dropped and `retry` allows.
    async fn run_on_lane_server<T, F, Fut>(
        &self,
        links: &ServerLinks,
        name: &'static str,
        retry: Retry,
        deadline: tokio::time::Instant,
        command: &F,
    ) -> Result<(T, LaneConn), StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut tries_left = if retry == Retry::OnDroppedConnection {
            2
        } else {
            1
        };
        loop {
            tries_left -= 1;
            let attempt = async {
                let lane = self
                    .lane
                    .connection(|| async {
                        let conn = links
                            .pool
                            .dedicated_connection()
                            .await
                            .map_err(|err| classify("durable write connection", err))?;
                        Ok::<_, StoreError>(LaneConn::Server(conn.conn))
                    })
                    .await?;
                let LaneConn::Server(conn) = lane else {
                    return Err(unexpected_reply(
                        name,
                        "a server store holds a cluster lane",
                    ));
                };
                match command(Conn::Server(conn.clone())).await {
                    Ok(value) => Ok(Ok((value, LaneConn::Server(conn)))),
                    Err(err) => Ok(Err(refusal_inside(err))),
                }
            };
            let err = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(Ok(done))) => return Ok(done),
                Ok(Ok(Err(err))) => err,
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    return Err(StoreError::new(
                        StoreErrorKind::Timeout,
                        format!("Redis {name} took longer than the command timeout"),
                    ));
                }
            };
            if breaks_connection(&err) || is_demoted(&err) {
                self.lane.reset();
                if tries_left > 0 && (err.is_connection_dropped() || is_demoted(&err)) {
                    continue;
                }
            }
            return Err(classify(name, err));
        }
    }
}

impl Backend for RedisStore {
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, StoreError>> {
        let value = self.near.as_ref()?.get(key);
        crate::observe::near_cache(if value.is_some() { "hit" } else { "miss" });
        Some(Ok(Some(value?)))
    }

    /// [`Store::get`] on a full key.
    async fn get_full(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if let Some(near) = &self.near {
            if let Some(value) = near.get(key) {
                crate::observe::near_cache("hit");
                return Ok(Some(value));
            }
            crate::observe::near_cache("miss");
            if let Some(read) = self.get_tracked(near, key, Track::IfFound).await {
                return read;
            }
        }
        self.get_untracked(key).await
    }

    /// [`Store::get_and_refresh`] on a full key.
    async fn get_and_refresh_full(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Bytes>, StoreError> {
        let _written = self.written(key);
        let value: Option<Vec<u8>> = if ttl.is_zero() {
            self.run("GETDEL", Retry::Never, move |mut conn| async move {
                redis::cmd("GETDEL").arg(key).query_async(&mut conn).await
            })
            .await?
        } else {
            // past the longest expiry: none, as `set` takes it
            let ms = (ttl <= super::MAX_EXPIRY).then(|| ttl_ms_ceil(ttl));
            self.run(
                "GETEX",
                Retry::OnDroppedConnection,
                move |mut conn| async move {
                    let mut getex = redis::cmd("GETEX");
                    getex.arg(key);
                    match ms {
                        Some(ms) => getex.arg("PX").arg(ms),
                        None => getex.arg("PERSIST"),
                    };
                    getex.query_async(&mut conn).await
                },
            )
            .await?
        };
        Ok(value.map(Bytes::from))
    }

    /// Stores a cache entry, see [`CacheWrite`].
    async fn cache_put(&self, write: &CacheWrite<'_>) -> Result<(), StoreError> {
        let entry = self.keys.make(write.entry_key)?;
        let vary = self.keys.make(write.vary_key)?;
        let index = self.keys.make(write.index_key)?;
        let memo = self
            .keys
            .make(&crate::store::hit_for_miss_key(write.entry_key))?;
        let lock = write
            .unlock
            .map(|(key, owner)| self.keys.make(key).map(|key| (key, owner)))
            .transpose()?;
        let _written = (
            self.written(&entry),
            self.written(&vary),
            self.written(&memo),
        );
        let mut invocation = CACHE_PUT.key(&entry);
        invocation
            .key(&vary)
            .key(&index)
            .key(&memo)
            .arg(&write.entry[..])
            .arg(&write.vary[..])
            .arg(crate::store::ttl_ms_ceil(write.ttl).max(1));
        if let Some((key, owner)) = &lock {
            invocation.key(key).arg(*owner);
        }
        let invocation = &invocation;
        self.run(
            "cache put script",
            Retry::OnDroppedConnection,
            move |mut conn| async move { invocation.invoke::<()>(&mut conn).await },
        )
        .await
    }

    /// Takes a cache entry's stampede lock and reads its Vary list and entry in one script.
    async fn lock_and_read(&self, lock: &CacheLock<'_>) -> Result<Option<StoredNow>, StoreError> {
        let lock_key = self.keys.make(lock.lock_key)?;
        let vary = self.keys.make(lock.vary_key)?;
        let entry = self.keys.make(lock.entry_key)?;
        let memo = self
            .keys
            .make(&crate::store::hit_for_miss_key(lock.entry_key))?;
        let mut invocation = LOCK_AND_READ.key(&lock_key);
        invocation
            .key(&vary)
            .key(&entry)
            .key(&memo)
            .arg(lock.owner)
            .arg(crate::store::ttl_ms_ceil(lock.ttl).max(1));
        let invocation = &invocation;
        // not retried: a lost reply to a lock that was taken would read as "held by another"
        // nil when another owner holds the lock, else the Vary list, the entry and whether
        // the entry's hit-for-miss memo stood in the way
        type Read = Option<(Option<Vec<u8>>, Option<Vec<u8>>, i64)>;
        let stored: Read = self
            .run("lock script", Retry::Never, move |mut conn| async move {
                invocation.invoke(&mut conn).await
            })
            .await?;
        Ok(stored.map(|(vary, entry, memo)| StoredNow {
            vary: vary.map(Bytes::from),
            entry: entry.map(Bytes::from),
            uncacheable: memo == 1,
        }))
    }

    /// Releases a lock `owner` holds.
    async fn unlock(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let released: i64 = self
            .run("unlock script", Retry::Never, move |mut conn| async move {
                UNLOCK.key(key).arg(owner).invoke(&mut conn).await
            })
            .await?;
        Ok(released == 1)
    }

    /// Extends a lock `owner` holds.
    async fn renew_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let renewed: i64 = self
            .run(
                "renew lock script",
                Retry::OnDroppedConnection,
                move |mut conn| async move {
                    RENEW_LOCK
                        .key(key)
                        .arg(owner)
                        .arg(ttl_ms)
                        .invoke(&mut conn)
                        .await
                },
            )
            .await?;
        Ok(renewed == 1)
    }

    /// The bump and a `WAIT` for the replicas the server has, in one pipeline on a
    /// connection of its own: `WAIT` waits for the writes of its connection and blocks it
    /// meanwhile, which must not stall the connections that requests share. Not retried: a
    /// lost reply cannot tell whether the bump ran (a second bump would only invalidate again).
    async fn bump_generation(&self, key: &str) -> Result<GenerationBump, StoreError> {
        let key = self.keys.make(key)?;
        let _written = self.written(&key);
        // the wait leaves room within the command timeout for the bump and the reply
        let wait_ms = u64::try_from(self.command_timeout.as_millis() * 3 / 4)
            .unwrap_or(u64::MAX)
            .max(1);
        let links = match &self.links {
            Links::Cluster(links) => {
                let (generation, acknowledged, replicas) =
                    self.cluster_bump_generation(links, &key, wait_ms).await?;
                return Ok(GenerationBump {
                    generation,
                    replicated: acknowledged >= replicas,
                });
            }
            Links::Server(links) => links,
        };
        let info: String = self
            .run(
                "INFO replication",
                Retry::OnDroppedConnection,
                move |mut conn| async move {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut conn)
                        .await
                },
            )
            .await?;
        let replicas = connected_replicas(&info);
        let bump = async {
            let mut conn = links.pool.dedicated_connection().await?;
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(&key).arg(0).arg("NX").ignore();
            pipe.cmd("INCR").arg(&key);
            // with no replica, WAIT 0 answers at once
            pipe.cmd("WAIT").arg(replicas).arg(wait_ms);
            pipe.query_async::<(i64, u64)>(&mut conn.conn).await
        };
        let (generation, acknowledged) = tokio::time::timeout(self.command_timeout, bump)
            .await
            .map_err(|_| {
                StoreError::new(
                    StoreErrorKind::Timeout,
                    "Redis generation bump took longer than the command timeout",
                )
            })?
            .map_err(|err| classify("generation bump", err))?;
        Ok(GenerationBump {
            generation,
            replicated: acknowledged >= replicas,
        })
    }

    /// Deletes every key matching the glob `pattern` (full-key form), with `SCAN`, never
    /// `KEYS`; returns how many were deleted.
    async fn delete_matching(&self, pattern: &str) -> Result<u64, StoreError> {
        let _written = self.written_many();
        if let Links::Cluster(_) = &self.links {
            return self.cluster_delete_matching(pattern).await;
        }
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    "SCAN",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut conn)
                            .await
                    },
                )
                .await?;
            if !keys.is_empty() {
                let keys = &keys;
                let removed: u64 = self
                    .run(
                        "UNLINK",
                        Retry::OnDroppedConnection,
                        move |mut conn| async move {
                            redis::cmd("UNLINK").arg(keys).query_async(&mut conn).await
                        },
                    )
                    .await?;
                deleted += removed;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// [`Store::release`] on a full key.
    async fn release_full(
        &self,
        key: &str,
        policy: &RatePolicy,
        decision: &RateDecision,
    ) -> Result<bool, StoreError> {
        if !decision.allowed {
            return Ok(false);
        }
        let (kind, argument, window_ms) = match policy.kind() {
            PolicyKind::Cooldown { .. } => match &decision.ticket {
                Some(ticket) => ("cooldown", ticket.to_string(), 0),
                None => return Ok(false),
            },
            // the window the hit was counted in, so a give-back never lands in a later one
            PolicyKind::FixedWindow { window_ms, .. } => (
                "window",
                decision
                    .window_end_ms
                    .map(|end| end.to_string())
                    .unwrap_or_default(),
                window_ms,
            ),
            PolicyKind::Gcra { emission_us, .. } => ("gcra", emission_us.to_string(), 0),
        };
        let argument = argument.as_str();
        let released: i64 = self
            .run("release script", Retry::Never, move |mut conn| async move {
                RELEASE
                    .key(key)
                    .arg(kind)
                    .arg(argument)
                    .arg(window_ms)
                    .invoke(&mut conn)
                    .await
            })
            .await?;
        Ok(released == 1)
    }

    /// [`Store::rate_limit`] on a full key.
    async fn rate_limit_full(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> Result<RateDecision, StoreError> {
        if self.may_wait_for_replica(policy) {
            // boxed, so that a hit that needs no replica carries none of it in its future
            return Box::pin(self.rate_limit_durably(key, policy)).await;
        }
        self.rate_limit_step(key, policy).await
    }
}

impl RedisStore {
    /// One rate-limit step under `policy`: a cooldown's flag, a window's count or GCRA's
    /// time, set or refused in one atomic call.
    async fn rate_limit_step(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> Result<RateDecision, StoreError> {
        match policy.kind() {
            PolicyKind::Cooldown { interval_ms } => {
                // A flag that waits for a replica is set over the store's lane, which a `WAIT`
                // blocks while a replica is slow: a hit the flag already refuses is answered
                // from the pool first, so refusals never queue behind another hit's wait.
                if self.may_wait_for_replica(policy) {
                    let held_ms: i64 = self
                        .run_master(
                            "cooldown flag",
                            Retry::OnDroppedConnection,
                            move |mut conn| async move {
                                redis::cmd("PTTL").arg(key).query_async(&mut conn).await
                            },
                        )
                        .await?;
                    if let Ok(held_ms) = u64::try_from(held_ms)
                        && held_ms > 0
                    {
                        return Ok(cooldown_decision(interval_ms, Some(held_ms), new_ticket()));
                    }
                }
                let ticket = new_ticket();
                let ticket_text: &str = &ticket;
                // A transaction, not a script: SET NX, PTTL and GET are all a send flag
                // needs, and MULTI/EXEC costs Redis a fraction of a script call. The GET makes
                // the step safe to send twice: when a dropped connection lost the reply to a
                // SET that landed, the retry finds the flag holding this hit's own ticket and
                // answers "allowed" instead of refusing the request its own flag.
                let step = self
                    .run_step(
                        policy,
                        "cooldown flag",
                        Retry::OnDroppedConnection,
                        move |mut conn| async move {
                            redis::pipe()
                                .atomic()
                                .cmd("SET")
                                .arg(key)
                                .arg(ticket_text)
                                .arg("NX")
                                .arg("PX")
                                .arg(interval_ms)
                                .cmd("PTTL")
                                .arg(key)
                                .cmd("GET")
                                .arg(key)
                                .query_async::<(Option<String>, i64, Option<String>)>(&mut conn)
                                .await
                        },
                        |(set, _, holder)| set.is_some() || holder.as_deref() == Some(ticket_text),
                    )
                    .await?;
                let (set, ttl_ms, holder) = &step.value;
                if set.is_some() || holder.as_deref() == Some(ticket_text) {
                    let mut decision = cooldown_decision(interval_ms, None, Arc::clone(&ticket));
                    if let Ok(ttl_ms) = u64::try_from(*ttl_ms) {
                        decision.reset = Duration::from_millis(ttl_ms);
                    }
                    return self.kept(key, policy, decision, step.acknowledged).await;
                }
                let ttl_ms = *ttl_ms;
                let ttl_ms = match u64::try_from(ttl_ms) {
                    Ok(ttl_ms) => ttl_ms,
                    // -1: a flag someone stored without expiry would block forever; -2: it
                    // expired between the two commands. Either way: one interval from now.
                    Err(_) => {
                        if ttl_ms == -1 {
                            self.run(
                                "cooldown flag expiry",
                                Retry::OnDroppedConnection,
                                |mut conn| async move {
                                    redis::cmd("PEXPIRE")
                                        .arg(key)
                                        .arg(interval_ms)
                                        .query_async::<i64>(&mut conn)
                                        .await
                                },
                            )
                            .await?;
                        }
                        interval_ms
                    }
                };
                Ok(cooldown_decision(interval_ms, Some(ttl_ms), ticket))
            }
            PolicyKind::FixedWindow { limit, window_ms } => {
                let step = self
                    .run_step(
                        policy,
                        "fixed window script",
                        Retry::Never,
                        move |mut conn| async move {
                            FIXED_WINDOW
                                .key(key)
                                .arg(limit)
                                .arg(window_ms)
                                .invoke::<(i64, i64, i64)>(&mut conn)
                                .await
                        },
                        |(count, _, _)| *count > 0,
                    )
                    .await?;
                let (count, ttl_ms, window_end_ms) = step.value;
                // the count after an allowed hit, or minus the count a denied one found
                let allowed = count > 0;
                let mut decision = window_decision(
                    limit,
                    allowed,
                    count.unsigned_abs(),
                    u64::try_from(ttl_ms).unwrap_or(window_ms),
                );
                decision.window_end_ms =
                    allowed.then(|| u64::try_from(window_end_ms).ok()).flatten();
                self.kept(key, policy, decision, step.acknowledged).await
            }
            PolicyKind::Gcra {
                emission_us,
                tolerance_us,
                burst,
            } => {
                let step = self
                    .run_step(
                        policy,
                        "GCRA script",
                        Retry::Never,
                        move |mut conn| async move {
                            GCRA.key(key)
                                .arg(emission_us)
                                .arg(tolerance_us)
                                .invoke::<i64>(&mut conn)
                                .await
                        },
                        |ttl_us| *ttl_us > 0,
                    )
                    .await?;
                // the new TTL of an allowed hit, or minus the current TTL for a denied one
                let ttl_us = step.value;
                let decision = gcra_decision(
                    emission_us,
                    tolerance_us,
                    burst,
                    ttl_us > 0,
                    ttl_us.unsigned_abs(),
                );
                self.kept(key, policy, decision, step.acknowledged).await
            }
        }
    }
}

impl Store for RedisStore {
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
        let key = key.as_str();
        let _written = self.written(key);
        let value = &value[..];
        match self.expiry_ms(expiry) {
            None => {
                self.run(
                    "DEL",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        redis::cmd("DEL")
                            .arg(key)
                            .query_async::<()>(&mut conn)
                            .await
                    },
                )
                .await
            }
            Some(ms) => {
                self.run(
                    "SET",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        let mut cmd = redis::cmd("SET");
                        cmd.arg(key).arg(value);
                        if let Some(ms) = ms {
                            cmd.arg("PX").arg(ms);
                        }
                        cmd.query_async::<()>(&mut conn).await
                    },
                )
                .await
            }
        }
    }

    async fn set_many(&self, entries: &[(&str, Bytes, Expiry)]) -> Result<(), StoreError> {
        let _written = self.written_many();
        if let Links::Cluster(_) = &self.links {
            let writes = entries
                .iter()
                .map(|(key, value, expiry)| {
                    Ok((self.keys.make(key)?, value.clone(), self.expiry_ms(*expiry)))
                })
                .collect::<Result<_, StoreError>>()?;
            return self.cluster_set_many(writes).await;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, value, expiry) in entries {
            let key = self.keys.make(key)?;
            match self.expiry_ms(*expiry) {
                None => {
                    pipe.cmd("DEL").arg(&key).ignore();
                }
                Some(ms) => {
                    let cmd = pipe.cmd("SET").arg(&key).arg(&value[..]);
                    if let Some(ms) = ms {
                        cmd.arg("PX").arg(ms);
                    }
                    cmd.ignore();
                }
            }
        }
        let pipe = &pipe;
        self.run(
            "MULTI SET",
            Retry::OnDroppedConnection,
            move |mut conn| async move { pipe.query_async::<()>(&mut conn).await },
        )
        .await
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
    ) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let value = &value[..];
        let Some(ms) = self.expiry_ms(expiry) else {
            return Ok(false);
        };
        let _written = self.written(key);
        // Not retried: if the first SET NX landed but its reply was lost, a retry would answer
        // "taken" for the caller's own write.
        let reply: Option<String> = self
            .run("SET NX", Retry::Never, move |mut conn| async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(value).arg("NX");
                if let Some(ms) = ms {
                    cmd.arg("PX").arg(ms);
                }
                cmd.query_async(&mut conn).await
            })
            .await?;
        Ok(reply.is_some())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let _written = self.written(key);
        let removed: i64 = self
            .run("DEL", Retry::OnDroppedConnection, move |mut conn| async move {
                redis::cmd("DEL").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(removed > 0)
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let _written = self.written(key);
        let value: Option<Vec<u8>> = self
            .run("GETDEL", Retry::Never, move |mut conn| async move {
                redis::cmd("GETDEL").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        let (index, member) = (self.keys.make(index)?, self.keys.make(member)?);
        let (index, member) = (index.as_str(), member.as_str());
        if let Links::Cluster(_) = &self.links {
            return self.cluster_index_add(index, member).await;
        }
        self.run(
            "index_add script",
            Retry::OnDroppedConnection,
            move |mut conn| async move {
                INDEX_ADD
                    .key(index)
                    .arg(member)
                    .invoke::<()>(&mut conn)
                    .await
            },
        )
        .await
    }

    async fn index_members(&self, index: &str) -> Result<Vec<(String, Ttl)>, StoreError> {
        let index = self.keys.make(index)?;
        let index = index.as_str();
        if let Links::Cluster(_) = &self.links {
            return self.cluster_index_members(index).await;
        }
        let flat: Vec<String> = self
            .run(
                "index_members script",
                Retry::OnDroppedConnection,
                move |mut conn| async move { INDEX_MEMBERS.key(index).invoke(&mut conn).await },
            )
            .await?;
        flat.chunks_exact(2)
            .map(|pair| {
                let ms: i64 = pair[1].parse().map_err(|_| {
                    unexpected_reply("index_members script", "PTTL is not a number")
                })?;
                let ttl = if ms < 0 {
                    Ttl::Persistent
                } else {
                    Ttl::Expires(to_duration_ms(ms))
                };
                Ok((pair[0].clone(), ttl))
            })
            .collect()
    }

    async fn index_remove(&self, index: &str, member: &str) -> Result<bool, StoreError> {
        let (index, member) = (self.keys.make(index)?, self.keys.make(member)?);
        let (index, member) = (index.as_str(), member.as_str());
        let removed: i64 = self
            .run(
                "SREM",
                Retry::OnDroppedConnection,
                move |mut conn| async move {
                    redis::cmd("SREM")
                        .arg(index)
                        .arg(member)
                        .query_async(&mut conn)
                        .await
                },
            )
            .await?;
        Ok(removed > 0)
    }

    async fn index_delete_all(&self, index: &str) -> Result<u64, StoreError> {
        let index = self.keys.make(index)?;
        let index = index.as_str();
        // the members it deletes are not named here
        let _written = self.written_many();
        if let Links::Cluster(_) = &self.links {
            return self.cluster_index_delete_all(index).await;
        }
        let deleted: i64 = self
            .run(
                "index_delete_all script",
                Retry::OnDroppedConnection,
                move |mut conn| async move { INDEX_DELETE_ALL.key(index).invoke(&mut conn).await },
            )
            .await?;
        Ok(u64::try_from(deleted).unwrap_or(0))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let _written = self.written(key);
        self.run(
            "increment script",
            Retry::Never,
            move |mut conn| async move { INCREMENT.key(key).arg(delta).invoke(&mut conn).await },
        )
        .await
    }

    async fn ttl(&self, key: &str) -> Result<Ttl, StoreError> {
        let key = self.keys.make(key)?;
        let key = key.as_str();
        let ms: i64 = self
            .run("PTTL", Retry::OnDroppedConnection, move |mut conn| async move {
                redis::cmd("PTTL").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(match ms {
            -2 => Ttl::Missing,
            -1 => Ttl::Persistent,
            ms => Ttl::Expires(to_duration_ms(ms)),
        })
    }

    async fn bump_version(&self, key: &str, delta: i64) -> Result<Option<i64>, StoreError> {
        let (from, to, version) = self.keys.bumped(key, delta)?;
        let (from, to) = (from.as_str(), to.as_str());
        let _written = (self.written(from), self.written(to));
        if matches!(self.links, Links::Cluster(_))
            && redis::cluster_routing::Slot::for_key(from)
                != redis::cluster_routing::Slot::for_key(to)
        {
            return Ok(self.cluster_move(from, to).await?.then_some(version));
        }
        let moved: i64 = self
            .run(
                "bump_version script",
                Retry::Never,
                move |mut conn| async move {
                    BUMP_VERSION.key(from).key(to).invoke(&mut conn).await
                },
            )
            .await?;
        Ok((moved == 1).then_some(version))
    }
}

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use tower_redis_http::store::RedisStore;
///
/// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
/// let store = RedisStore::builder("redis://cache.internal:6379")
///     .password("s3cret")
///     .database(1)
///     .max_connections(256)
///     .connect_timeout(Duration::from_secs(2))
///     .command_timeout(Duration::from_millis(250))
///     .key_prefix("shop")
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct RedisStoreBuilder {
    location: String,
    max_connections: u32,
    connect_timeout: Duration,
    command_timeout: Duration,
    username: Option<String>,
    password: Option<String>,
    database: Option<i64>,
    keys: KeyScheme,
    default_timeout: Timeout,
    tls_root: Option<Pem>,
    tls_client: Option<(Pem, Pem)>,
    sentinel: Option<SentinelTopology>,
    /// The seed nodes of a Redis Cluster.
    cluster: Option<Vec<String>>,
    near: Option<NearCache>,
}

/// The sentinels to ask, and the name of the master they watch.
#[derive(Clone)]
struct SentinelTopology {
    nodes: Vec<String>,
    service: String,
}

impl std::fmt::Debug for SentinelTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTopology")
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|node| redact(node))
                    .collect::<Vec<_>>(),
            )
            .field("service", &self.service)
            .finish()
    }
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("location", &redact(&self.location))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("keys", &self.keys)
            .field("default_timeout", &self.default_timeout)
            .field("tls_root", &self.tls_root)
            .field("tls_client", &self.tls_client)
            .field("sentinel", &self.sentinel)
            .field(
                "cluster",
                &self
                    .cluster
                    .as_ref()
                    .map(|nodes| nodes.iter().map(|node| redact(node)).collect::<Vec<_>>()),
            )
            .field("near", &self.near)
            .finish()
    }
}

impl RedisStoreBuilder {
    /// The most connections the pool opens. Defaults to 16.
    ///
    /// Each connection multiplexes many concurrent commands, so a handful carries a busy
    /// service; a higher bound (Django deployments often set 256) only allows more.
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// How long opening a connection (TCP, TLS, `HELLO`, `SELECT`) may take; bb8 keeps
    /// opening connections in the background within it. A call never waits longer than the
    /// [command timeout](Self::command_timeout), even while a connection is being opened.
    /// Defaults to 1 s.
    ///
    /// At most [`MAX_CALL_TIMEOUT`] (an hour): `build` refuses a longer one.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a store call may take, from getting a connection to the reply, a retry after
    /// a dropped connection included. Defaults to 500 ms.
    ///
    /// At most [`MAX_CALL_TIMEOUT`] (an hour): `build` refuses a longer one.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The ACL user name, when the location names none. Defaults to none.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password, when the location has none (django-redis's `PASSWORD` option). Defaults
    /// to none.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The database number, when the location names none (or names database 0). Defaults to
    /// the location's, else 0. A negative number is refused at build; one the server does not
    /// have (past its `databases` setting, 16 by default) fails every call with
    /// [`StoreErrorKind::Unsupported`] and a message naming the database, as the
    /// configuration error it is, not an outage: every layer answers it `503` whatever its
    /// [failure policy](crate::FailurePolicy), so that no rule is switched off by a typo.
    pub fn database(mut self, database: i64) -> Self {
        self.database = Some(database);
        self
    }

    /// The key prefix of the Django layout. Defaults to `""`.
    pub fn key_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.keys = KeyScheme::django(prefix, self.keys.version());
        self
    }

    /// The version of the Django layout. Defaults to 1.
    pub fn version(mut self, version: i64) -> Self {
        self.keys = self.keys.with_version(version);
        self
    }

    /// Any key scheme, replacing prefix and version. Defaults to [`KeyScheme::default`].
    pub fn key_scheme(mut self, keys: KeyScheme) -> Self {
        self.keys = keys;
        self
    }

    /// What [`Expiry::Default`] means. Defaults to 300 seconds, Django's `TIMEOUT`.
    pub fn default_timeout(mut self, timeout: Timeout) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The certificate authority a `rediss://` server's certificate must chain to, instead of
    /// the system's roots: for a managed Redis with a private CA, or a self-hosted one.
    /// Defaults to the system's roots. Needs the `tls` feature; without it, or with a location
    /// that is not `rediss://`, [`build`](Self::build) says so.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::{Pem, RedisStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::builder("rediss://cache.internal:6380")
    ///     .tls_root_certificate(Pem::file("/etc/redis/ca.pem"))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_root_certificate(mut self, ca: Pem) -> Self {
        self.tls_root = Some(ca);
        self
    }

    /// A client certificate and its private key, for a server that asks for one (mutual TLS,
    /// Redis's `tls-auth-clients yes`). Defaults to none. Needs the `tls` feature.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::{Pem, RedisStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::builder("rediss://cache.internal:6380")
    ///     .tls_root_certificate(Pem::file("/etc/redis/ca.pem"))
    ///     .tls_client_certificate(Pem::file("/etc/redis/client.pem"), Pem::file("/etc/redis/client.key"))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_client_certificate(mut self, certificate: Pem, key: Pem) -> Self {
        self.tls_client = Some((certificate, key));
        self
    }

    /// Keeps hot values in process memory, invalidated by Redis when they change anywhere
    /// (Redis 6+ client tracking): see [`NearCache`] for what uses it and what bounds it. Off
    /// by default. Not on a cluster: [`build`](Self::build) refuses it there.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::{NearCache, RedisStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .near_cache(NearCache::new())
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn near_cache(mut self, near: NearCache) -> Self {
        self.near = Some(near);
        self
    }

    /// The store. Connections open on first use, so a service starts while Redis is down and
    /// its layers apply their failure policy until Redis is back; [`RedisStore::ping`] checks
    /// readiness. Must be called within a Tokio runtime (the pool spawns its reaper there).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidLocation`] for a location that does not parse (a `rediss://`
    /// location needs TLS, which this build lacks), [`ConfigError::InvalidOption`] for a zero
    /// pool size or timeout.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::{ConfigError, store::RedisStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = RedisStore::builder("http://127.0.0.1").build().await.unwrap_err();
    /// assert!(matches!(err, ConfigError::InvalidLocation { .. }));
    /// # }
    /// ```
    pub async fn build(self) -> Result<RedisStore, ConfigError> {
        if let Some(database) = self.database
            && !(0..=i64::from(i32::MAX)).contains(&database)
        {
            return Err(ConfigError::InvalidOption {
                option: "database",
                reason: format!("{database} is not a database number (0 or more)"),
            });
        }
        if self.max_connections == 0 {
            return Err(ConfigError::InvalidOption {
                option: "max_connections",
                reason: "the pool needs at least one connection".to_owned(),
            });
        }
        for (option, value) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::InvalidOption {
                    option,
                    reason: "must be longer than zero".to_owned(),
                });
            }
            if value > MAX_CALL_TIMEOUT {
                return Err(ConfigError::InvalidOption {
                    option,
                    reason: format!(
                        "{value:?} is past the bound of {MAX_CALL_TIMEOUT:?}: a call that may wait \
                         longer holds every request behind it"
                    ),
                });
            }
        }
        if let Some(problem) = self.near.as_ref().and_then(NearCache::problem) {
            return Err(ConfigError::InvalidOption {
                option: "near_cache",
                reason: problem.to_owned(),
            });
        }
        if let Some(nodes) = &self.cluster {
            if self.near.is_some() {
                return Err(ConfigError::InvalidOption {
                    option: "near_cache",
                    reason: "a near cache needs one server or Sentinel: on a cluster each node \
                             would need its own tracking connection, which this store does not \
                             keep"
                        .to_owned(),
                });
            }
            let links = self.cluster_links(nodes)?;
            return Ok(RedisStore {
                links: Links::Cluster(Arc::new(links)),
                outage: Arc::default(),
                connect_timeout: self.connect_timeout,
                keys: self.keys,
                default_timeout: self.default_timeout,
                command_timeout: self.command_timeout,
                near: None,
                lane: Arc::default(),
                durability: Durability::Master,
            });
        }
        let (inner, tracking) = match &self.sentinel {
            None => {
                let info = self.direct_info()?;
                let manager = RedisConnectionManager::new(info.clone()).map_err(|err| {
                    self.invalid_location("rejected by the Redis client", Some(err))
                })?;
                let tracking = match self.near {
                    Some(_) => Some(TrackingConnector::Direct(
                        super::near::resp3_client(info).map_err(|err| {
                            self.invalid_location("rejected by the Redis client", Some(err))
                        })?,
                    )),
                    None => None,
                };
                (Connector::Direct(manager), tracking)
            }
            Some(sentinel) => {
                let tracking = match self.near {
                    Some(_) => Some(TrackingConnector::Sentinel(tokio::sync::Mutex::new(
                        self.sentinel_client(sentinel)?,
                    ))),
                    None => None,
                };
                let client = self.sentinel_client(sentinel)?;
                (
                    Connector::Sentinel(tokio::sync::Mutex::new(client)),
                    tracking,
                )
            }
        };
        let near = match (self.near, tracking) {
            (Some(settings), Some(connector)) => {
                // the key whose value tells the heartbeat the database is still the one read
                let epoch_key = self.keys.make(super::near::EPOCH_KEY).map_err(|err| {
                    ConfigError::InvalidOption {
                        option: "key_prefix",
                        reason: err.to_string(),
                    }
                })?;
                let near = Arc::new(Near::new(settings, epoch_key));
                tokio::spawn(super::near::keep_tracking(
                    Arc::downgrade(&near),
                    connector,
                    self.connect_timeout,
                    self.command_timeout,
                ));
                Some(near)
            }
            _ => None,
        };
        let database = match &self.sentinel {
            None => self.direct_info()?.redis_settings().db(),
            Some(_) => self.settings(redis::RedisConnectionInfo::default()).db(),
        };
        let reachability = Arc::new(Reachability::selecting(database));
        let manager = TrackedManager {
            inner,
            command_timeout: self.command_timeout,
            reachability: Arc::clone(&reachability),
        };
        let pool = bb8::Pool::builder()
            .max_size(self.max_connections)
            .test_on_check_out(false)
            .connection_timeout(self.connect_timeout)
            .build(manager)
            .await
            .map_err(|err| self.invalid_location("the pool could not start", Some(err)))?;
        Ok(RedisStore {
            outage: Arc::default(),
            links: Links::Server(ServerLinks {
                pool,
                lease: Arc::new(RwLock::new(None)),
                reachability,
                stall: Arc::default(),
            }),
            connect_timeout: self.connect_timeout,
            keys: self.keys,
            default_timeout: self.default_timeout,
            command_timeout: self.command_timeout,
            near,
            lane: Arc::default(),
            durability: Durability::Master,
        })
    }
}

/// Whether `authority` reads as `host`, `host:port`, `[v6]` or `[v6]:port`, so that it may be
/// shown: anything else may be part of a password.
fn is_host_and_port(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => (host, Some(port.strip_prefix(':').unwrap_or("x"))),
            None => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b))
        && (authority.starts_with('[') || !host.contains(':'));
    let port_ok =
        port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// What errors and `Debug` say of a location: for each URL of a comma-separated list,
/// `scheme://host:port/db` built from its parts alone, never the text as written, so that no
/// password (and no part of one: unencoded, it may hold `/`, `@`, `,` or anything else) can
/// reach a log. A URL whose host cannot be read this way is shown as `scheme://<unreadable>`.
pub(crate) fn redact(location: &str) -> String {
    location
        .split(',')
        .map(|url| describe_url(url.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn describe_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // a sentinel written `host:port`
        return if is_host_and_port(url) {
            url.to_owned()
        } else {
            "<not a URL>".to_owned()
        };
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return "<not a URL>".to_owned();
    }
    if scheme.ends_with("unix") {
        // a socket path, and a database among the query's parameters
        let path = rest.rsplit_once('@').map_or(rest, |(_, path)| path);
        let path = path.split(['?', '#']).next().unwrap_or_default();
        return if path.bytes().all(|b| b.is_ascii_graphic()) {
            format!("{scheme}://{path}")
        } else {
            format!("{scheme}://<unreadable>")
        };
    }
    // the user-info ends at the last `@`, whatever it holds
    let after_userinfo = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    let (authority, path) = after_userinfo
        .split_once('/')
        .unwrap_or((after_userinfo, ""));
    if !is_host_and_port(authority) {
        return format!("{scheme}://<unreadable>");
    }
    let db = path.split(['?', '#']).next().unwrap_or_default();
    if !db.is_empty() && db.bytes().all(|b| b.is_ascii_digit()) {
        format!("{scheme}://{authority}/{db}")
    } else {
        format!("{scheme}://{authority}")
    }
}

impl RedisStoreBuilder {
    fn invalid_location(&self, reason: &str, source: Option<RedisError>) -> ConfigError {
        ConfigError::InvalidLocation {
            location: redact(&self.location),
            reason: reason.to_owned(),
            source: source.map(|err| Box::new(err) as Box<dyn std::error::Error + Send + Sync>),
        }
    }

    /// The database, user and password of the builder, where the location names none.
    fn settings(&self, mut settings: redis::RedisConnectionInfo) -> redis::RedisConnectionInfo {
        if let (None, Some(password)) = (settings.password(), &self.password) {
            settings = settings.set_password(password);
        }
        if let (None, Some(username)) = (settings.username(), &self.username) {
            settings = settings.set_username(username);
        }
        if let (0, Some(database)) = (settings.db(), self.database) {
            settings = settings.set_db(database);
        }
        settings
    }

    /// Where connections straight to the location go, with the builder's settings.
    fn direct_info(&self) -> Result<ConnectionInfo, ConfigError> {
        if !cfg!(feature = "tls") && self.location.trim_start().starts_with("rediss://") {
            return Err(self.invalid_location("`rediss://` needs this crate's `tls` feature", None));
        }
        let info = self
            .location
            .as_str()
            .into_connection_info()
            .map_err(|err| {
                self.invalid_location("not a Redis URL this build can use", Some(err))
            })?;
        let settings = self.settings(info.redis_settings().clone());
        self.with_tls_certificates(info.set_redis_settings(settings))
    }

    /// Links to the cluster that `nodes` belong to.
    fn cluster_links(&self, nodes: &[String]) -> Result<super::cluster::ClusterLinks, ConfigError> {
        if nodes.is_empty() {
            return Err(ConfigError::InvalidOption {
                option: "cluster",
                reason: "name at least one seed node".to_owned(),
            });
        }
        if self.database.is_some_and(|db| db != 0) {
            return Err(ConfigError::InvalidOption {
                option: "database",
                reason: "a Redis Cluster has only database 0".to_owned(),
            });
        }
        let mut infos = Vec::with_capacity(nodes.len());
        for node in nodes {
            let node = if node.contains("://") {
                node.clone()
            } else {
                format!("redis://{node}")
            };
            if !cfg!(feature = "tls") && node.trim_start().starts_with("rediss://") {
                return Err(
                    self.invalid_location("`rediss://` needs this crate's `tls` feature", None)
                );
            }
            let info = node.as_str().into_connection_info().map_err(|err| {
                self.invalid_location("not a Redis URL this build can use", Some(err))
            })?;
            let settings = self.settings(info.redis_settings().clone());
            infos.push(info.set_redis_settings(settings));
        }
        // a retry the client makes by itself may send a rate-limit hit twice: the store
        // retries instead, knowing which commands may run twice
        let mut client = redis::cluster::ClusterClient::builder(infos)
            .retries(0)
            .overall_response_timeout(Some(self.command_timeout));
        if let Some(password) = &self.password {
            client = client.password(password);
        }
        if let Some(username) = &self.username {
            client = client.username(username);
        }
        client = self.with_cluster_certificates(client)?;
        let client = client
            .build()
            .map_err(|err| self.invalid_location("rejected by the Redis client", Some(err)))?;
        Ok(super::cluster::ClusterLinks::new(
            client,
            self.connect_timeout,
            self.command_timeout,
        ))
    }

    /// A client that asks `sentinel`'s nodes for its service's master.
    fn sentinel_client(
        &self,
        sentinel: &SentinelTopology,
    ) -> Result<redis::sentinel::SentinelClient, ConfigError> {
        if sentinel.nodes.is_empty() {
            return Err(ConfigError::InvalidOption {
                option: "sentinels",
                reason: "name at least one sentinel".to_owned(),
            });
        }
        let nodes: Vec<String> = sentinel
            .nodes
            .iter()
            .map(|node| {
                if node.contains("://") {
                    node.clone()
                } else {
                    format!("redis://{node}")
                }
            })
            .collect();
        let tls_sentinels = nodes
            .iter()
            .any(|node| node.trim_start().starts_with("rediss://"));
        if tls_sentinels || self.tls_root.is_some() || self.tls_client.is_some() {
            #[cfg(not(feature = "tls"))]
            return Err(self.invalid_location(
                "TLS through Sentinel needs this crate's `tls` feature",
                None,
            ));
            #[cfg(feature = "tls")]
            return self.sentinel_client_over_tls(&nodes, &sentinel.service, tls_sentinels);
        }
        let master = redis::sentinel::SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(self.settings(redis::RedisConnectionInfo::default()));
        redis::sentinel::SentinelClient::build(
            nodes,
            sentinel.service.clone(),
            Some(master),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|err| {
            self.invalid_location("not sentinel addresses this build can use", Some(err))
        })
    }

    /// A sentinel client that reaches the master over TLS (with the configured certificates,
    /// else the system's roots), and the sentinels over TLS too when they are `rediss://`.
    #[cfg(feature = "tls")]
    fn sentinel_client_over_tls(
        &self,
        nodes: &[String],
        service: &str,
        tls_sentinels: bool,
    ) -> Result<redis::sentinel::SentinelClient, ConfigError> {
        use redis::TlsMode;
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};

        let refused =
            |err| self.invalid_location("not sentinel addresses this build can use", Some(err));
        let mut addresses = Vec::with_capacity(nodes.len());
        let mut sentinel_auth = None;
        for node in nodes {
            let info = node.as_str().into_connection_info().map_err(refused)?;
            let settings = info.redis_settings();
            if let Some(password) = settings.password() {
                sentinel_auth = Some((settings.username().map(str::to_owned), password.to_owned()));
            }
            addresses.push(info.addr().clone());
        }
        let mut client = SentinelClientBuilder::new(addresses, service, SentinelServerType::Master)
            .map_err(refused)?
            .set_client_to_redis_tls_mode(TlsMode::Secure);
        let master = self.settings(redis::RedisConnectionInfo::default());
        if let Some(password) = master.password() {
            client = client.set_client_to_redis_password(password);
        }
        if let Some(username) = master.username() {
            client = client.set_client_to_redis_username(username);
        }
        if master.db() != 0 {
            client = client.set_client_to_redis_db(master.db());
        }
        if tls_sentinels {
            client = client.set_client_to_sentinel_tls_mode(TlsMode::Secure);
        }
        if let Some((username, password)) = sentinel_auth {
            client = client.set_client_to_sentinel_password(password);
            if let Some(username) = username {
                client = client.set_client_to_sentinel_username(username);
            }
        }
        if self.tls_root.is_some() || self.tls_client.is_some() {
            let certificates = self.tls_certificates()?;
            if tls_sentinels {
                client = client.set_client_to_sentinel_certificates(certificates.clone());
            }
            client = client.set_client_to_redis_certificates(certificates);
        } else {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        client.build().map_err(refused)
    }

    /// `info` with the configured certificates, read now (a missing file is a configuration
    /// error, found where the store is built).
    fn with_tls_certificates(&self, info: ConnectionInfo) -> Result<ConnectionInfo, ConfigError> {
        if self.tls_root.is_none() && self.tls_client.is_none() {
            return Ok(info);
        }
        #[cfg(not(feature = "tls"))]
        return Err(tls_needs_feature());
        #[cfg(feature = "tls")]
        {
            if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                return Err(self.certificates_without_tls());
            }
            let client = redis::Client::build_with_tls(info, self.tls_certificates()?)
                .map_err(|err| self.certificates_refused(err))?;
            Ok(client.get_connection_info().clone())
        }
    }

    /// `client` with the configured certificates, for `rediss://` seed nodes.
    fn with_cluster_certificates(
        &self,
        client: redis::cluster::ClusterClientBuilder,
    ) -> Result<redis::cluster::ClusterClientBuilder, ConfigError> {
        if self.tls_root.is_none() && self.tls_client.is_none() {
            return Ok(client);
        }
        #[cfg(not(feature = "tls"))]
        return Err(tls_needs_feature());
        #[cfg(feature = "tls")]
        {
            let all_tls = self
                .cluster
                .iter()
                .flatten()
                .all(|node| node.trim_start().starts_with("rediss://"));
            if !all_tls {
                return Err(self.certificates_without_tls());
            }
            Ok(client.certs(self.tls_certificates()?))
        }
    }

    #[cfg(feature = "tls")]
    fn certificates_without_tls(&self) -> ConfigError {
        ConfigError::InvalidOption {
            option: "tls_root_certificate",
            reason: format!(
                "TLS certificates were given for `{}`, which is not a `rediss://` location",
                redact(&self.location)
            ),
        }
    }

    #[cfg(feature = "tls")]
    fn certificates_refused(&self, err: RedisError) -> ConfigError {
        ConfigError::InvalidLocation {
            location: redact(&self.location),
            reason: "its TLS certificates were refused".to_owned(),
            source: Some(Box::new(err)),
        }
    }

    /// The configured certificates, read and checked now.
    #[cfg(feature = "tls")]
    fn tls_certificates(&self) -> Result<redis::TlsCertificates, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        // the client takes PEM without a certificate in it and fails every handshake
        // later: what the PEM holds is checked here, where the mistake is made
        let certificates = |pem: &Pem, option| {
            let bytes = pem.read(option)?;
            let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
            match parsed {
                Ok(found) if !found.is_empty() => Ok(bytes),
                _ => Err(ConfigError::InvalidOption {
                    option,
                    reason: format!("{pem:?} holds no PEM certificate"),
                }),
            }
        };
        let root_cert = self
            .tls_root
            .as_ref()
            .map(|ca| certificates(ca, "tls_root_certificate"))
            .transpose()?;
        let client_tls = match &self.tls_client {
            Some((certificate, key)) => {
                let client_key = key.read("tls_client_certificate")?;
                if PrivateKeyDer::from_pem_slice(&client_key).is_err() {
                    return Err(ConfigError::InvalidOption {
                        option: "tls_client_certificate",
                        reason: format!("{key:?} holds no PEM private key"),
                    });
                }
                Some(redis::ClientTlsConfig {
                    client_cert: certificates(certificate, "tls_client_certificate")?,
                    client_key,
                })
            }
            None => None,
        };
        // rustls picks its process-wide provider; an application that has not installed
        // one (or links two) gets ring, which this feature brings
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

#[cfg(not(feature = "tls"))]
fn tls_needs_feature() -> ConfigError {
    ConfigError::InvalidOption {
        option: "tls_root_certificate",
        reason: "TLS certificates need this crate's `tls` feature".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_shows_scheme_host_port_and_database_only() {
        let cases = [
            ("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/1"),
            ("redis://:s3cret@host:6379/0", "redis://host:6379/0"),
            ("redis://user:s3cret@host", "redis://host"),
            ("redis://token@host", "redis://host"),
            ("redis://:p@ss@word@host/2", "redis://host/2"),
            // issue 29, finding 7: unencoded `/`, `?` and `#` in the password
            ("redis://:pa/ss?wo#rd@host:6379/0", "redis://host:6379/0"),
            ("redis://user:a/b@host", "redis://host"),
            ("rediss://us/er:secret@host", "rediss://host"),
            ("redis://:s3cret?@host/1?protocol=resp3", "redis://host/1"),
            ("unix:///tmp/redis.sock?db=2", "unix:///tmp/redis.sock"),
            ("not a url", "<not a URL>"),
            // issue 36, finding 1: a Sentinel master, and every URL of a list
            ("redis://:pw@mymaster/0", "redis://mymaster/0"),
            (
                "redis://:pw1@a:1,redis://:pw2@b:2,redis://:pw3@c:3/0",
                "redis://a:1,redis://b:2,redis://c:3/0",
            ),
            // a password with a comma or a slash and no `@` after it cannot be told apart
            // from the host: shown as unreadable, never in part
            ("redis://:pw,x/y", "redis://<unreadable>,<not a URL>"),
            ("redis://:s3cr3t", "redis://<unreadable>"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }
}
