//! The near cache: values of plain reads kept in process memory, dropped as soon as Redis says
//! they changed (server-assisted client-side caching, Redis 6's `CLIENT TRACKING`).
//!
//! One connection per store speaks RESP3 with opt-in tracking (`CLIENT TRACKING ON OPTIN`).
//! Every read that misses the near cache goes over that connection: an untracked `EXISTS`,
//! then, for a key found, `CLIENT CACHING YES` and the `GET`, so Redis remembers the keys this
//! process holds and pushes an `invalidate` message on the same connection when any client
//! changes, deletes, expires or evicts one of them. A key that was missing is not tracked:
//! reads of client-chosen tokens or URLs that do not exist would otherwise fill Redis's
//! tracking table up to `tracking-table-max-keys`, past which Redis drops tracked keys at
//! random. The pushed message is handled in the connection's reader task, before any later
//! reply on the connection is delivered.
//!
//! Three rules keep it correct:
//! - **A read that raced a change is not kept.** Each miss registers a ticket for its key
//!   before it is sent; an invalidation of the key takes the ticket back, and the reply is
//!   kept only if its ticket is still there (the race the Redis documentation describes: the
//!   invalidation can be handled before the reply that it makes stale). A read dropped
//!   before its reply (a client hanging up) gives its ticket back, so tickets never outlive
//!   their reads whatever keys clients choose.
//! - **No tracking, no near cache.** When the tracking connection drops or stops answering
//!   its heartbeat, every entry is dropped at once and reads go to Redis until a new tracking
//!   connection is up; changes made meanwhile were never announced to anyone.
//! - **Bounded age.** No entry is served after the maximum local age, nor after the key's own
//!   expiry as Redis reported it when it was read.
//! - **The same database.** `SWAPDB` sends no invalidation (Redis tracks keys, not
//!   databases). The heartbeat reads a marker key ([`EPOCH_KEY`]) that a swap takes away with
//!   the rest of the database, and empties the near cache when its value changed, so a swap
//!   is seen within one heartbeat plus the command timeout. A server that refuses the marker's
//!   `SET` (an ACL) leaves only the maximum age to bound a swap.
//!
//! redis-rs's own `cache-aio` client cache was weighed and not used: it keeps one cache per
//! connection (the store shares a pool of them), bounds entries but not bytes, and offers no
//! way to bypass the cache while invalidations cannot arrive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::sync::Cache;
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, RedisError, Value};

/// How often the tracking connection is pinged: a connection that looks open but no longer
/// delivers (a network partition) is found out within this plus the command timeout.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The logical key (under the store's key scheme) whose value the heartbeat reads to tell
/// that the database is still the one the near cache's entries were read from: `SWAPDB`
/// sends no invalidation (Redis tracks keys, not databases), but swaps this key away too.
pub(super) const EPOCH_KEY: &str = "tower-redis-http:near-cache-epoch";

/// The longest [`NearCache::max_age`]: it is the bound on staleness should an invalidation be
/// lost, so a day is already generous.
const MAX_NEAR_AGE: Duration = Duration::from_secs(86_400);

/// The name the tracking connection gives itself (`CLIENT SETNAME`), so that an operator can
/// find it in `CLIENT LIST`.
pub(super) const TRACKING_CLIENT_NAME: &str = "tower-redis-http-near-cache";

/// The settings of a near cache on a [`RedisStore`](super::RedisStore): hot values read from
/// process memory, invalidated by Redis when they change anywhere.
///
/// Only plain reads use it ([`Store::get`](crate::store::Store::get), the auth layer's token
/// lookup (with sliding expiry, only under a
/// [refresh interval](crate::auth::TokenAuthBuilder::sliding_refresh_interval)), the cache
/// layer's entry and generation reads). Rate limits,
/// send flags, scripts and every write always go to Redis. Needs Redis 6 or later, on one
/// server or through Sentinel; a cluster store refuses it.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use tower_redis_http::store::{NearCache, RedisStore};
///
/// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .near_cache(
///         NearCache::new()
///             .max_entries(50_000)
///             .max_bytes(64 * 1024 * 1024)
///             .max_age(Duration::from_secs(30)),
///     )
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearCache {
    max_entries: u64,
    max_bytes: u64,
    max_age: Duration,
}

impl Default for NearCache {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 32 * 1024 * 1024,
            max_age: Duration::from_secs(30),
        }
    }
}

impl NearCache {
    /// The defaults: 10,000 entries, 32 MiB of keys and values, 30 s of local age.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::NearCache;
    ///
    /// let near = NearCache::new();
    /// assert_eq!(near, NearCache::default());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many entries (the least recently used go first).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::NearCache;
    ///
    /// let near = NearCache::new().max_entries(1_000);
    /// ```
    #[must_use]
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// At most this many bytes of keys and values together.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::NearCache;
    ///
    /// let near = NearCache::new().max_bytes(8 * 1024 * 1024);
    /// ```
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// No entry is served longer than this after it was read from Redis, invalidated or not:
    /// the bound on staleness if an invalidation were ever lost, and on a `SWAPDB` when the
    /// store may not write the heartbeat's marker key (otherwise a swap is seen within about
    /// a second and a half). Defaults to 30 s; at most a day.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::store::NearCache;
    ///
    /// let near = NearCache::new().max_age(Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Why these settings cannot work, if they cannot.
    pub(super) fn problem(&self) -> Option<&'static str> {
        if self.max_entries == 0 || self.max_bytes == 0 {
            Some("a near cache needs room for at least one entry")
        } else if self.max_age.is_zero() {
            Some("a near cache's max_age must be longer than zero")
        } else if self.max_age > MAX_NEAR_AGE {
            Some("a near cache's max_age is at most a day: it bounds how stale a value may be")
        } else {
            None
        }
    }
}

/// What a near cache holds now, from [`RedisStore::near_cache_usage`](super::RedisStore::near_cache_usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearCacheUsage {
    /// Entries held (approximate while moka's bookkeeping catches up).
    pub entries: u64,
    /// Whether reads are served from process memory: the tracking connection is up.
    pub serving: bool,
    /// How many times a lost tracking connection emptied the near cache.
    pub flushes: u64,
    /// Reads under way over the tracking connection (each holds a ticket until it returns or
    /// is dropped).
    pub reads_in_flight: u64,
}

/// A value read from Redis and when it stops being served.
#[derive(Clone)]
struct NearValue {
    value: Bytes,
    until: Instant,
    /// When the key expires in Redis, as its `PTTL` said when it was read; `None` without
    /// expiry.
    expires: Option<Instant>,
}

/// The tracking connection in use, and which one it is.
struct Link {
    conn: MultiplexedConnection,
    id: u64,
}

/// A near cache's state, shared by every clone of its store.
pub(super) struct Near {
    settings: NearCache,
    /// Hashed with foldhash, seeded per process, as the memory store's entries are.
    entries: Cache<String, NearValue, foldhash::fast::RandomState>,
    /// Mirrors `link.is_some()` for the read path, which should not take a lock.
    serving: AtomicBool,
    link: RwLock<Option<Link>>,
    /// The reads in flight over the tracking connection: key to ticket.
    fills: Mutex<HashMap<String, u64>>,
    next_ticket: AtomicU64,
    next_link: AtomicU64,
    /// How many keys (or whole flushes) were dropped so far, for layers that keep values
    /// derived from stored ones (the cache's namespace generation).
    changes: AtomicU64,
    /// See [`NearCacheUsage::flushes`].
    flushes: AtomicU64,
    /// Wakes the task that keeps the tracking connection when it is lost.
    lost: tokio::sync::Notify,
    /// The full key of [`EPOCH_KEY`], and the value it held when the entries were read
    /// (`None`: Redis refused to keep one, and only `PING` is checked).
    epoch_key: String,
    epoch: Mutex<Option<String>>,
}

impl std::fmt::Debug for Near {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Near")
            .field("settings", &self.settings)
            .field("serving", &self.serving.load(Ordering::Relaxed))
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

/// A read registered before it was sent: which key, which ticket, over which connection.
/// Dropped before [`finish`](Self::finish) or [`failed`](Self::failed) (the request went away
/// mid-read), it gives its ticket back, so that reads of client-chosen keys cannot pile
/// tickets up.
pub(super) struct Fill<'a> {
    near: &'a Near,
    key: &'a str,
    conn: MultiplexedConnection,
    ticket: u64,
    link: u64,
    /// The ticket was dealt with already.
    settled: bool,
}

impl Fill<'_> {
    pub(super) fn conn(&self) -> MultiplexedConnection {
        self.conn.clone()
    }

    /// Keeps what the read found, unless the key changed since it was registered, or the
    /// connection it went over is no longer the one in use.
    pub(super) fn finish(mut self, found: Option<(&Bytes, i64)>) {
        self.near.finish_fill(&self, found);
        self.settled = true;
    }

    /// The read failed: give the ticket back, and forget the connection if it broke.
    pub(super) fn failed(self, err: &RedisError) {
        if err.is_connection_dropped() || err.is_timeout() || err.is_io_error() {
            self.near.lose(self.link, "a read over it failed");
        }
    }
}

impl Drop for Fill<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.near.take_ticket(self.key, self.ticket);
        }
    }
}

impl Near {
    pub(super) fn new(settings: NearCache, epoch_key: String) -> Self {
        // Every entry weighs at least max_bytes / max_entries, so that one weight bound keeps
        // both the byte and the entry bound.
        let least_weight = (settings.max_bytes / settings.max_entries).max(1);
        let entries = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(move |key: &String, value: &NearValue| {
                let bytes = (key.len() + value.value.len()) as u64;
                u32::try_from(bytes.max(least_weight)).unwrap_or(u32::MAX)
            })
            .time_to_live(settings.max_age)
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            settings,
            entries,
            serving: AtomicBool::new(false),
            link: RwLock::new(None),
            fills: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(0),
            next_link: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            lost: tokio::sync::Notify::new(),
            epoch_key,
            epoch: Mutex::new(None),
        }
    }

    pub(super) fn usage(&self) -> NearCacheUsage {
        self.entries.run_pending_tasks();
        NearCacheUsage {
            entries: self.entries.entry_count(),
            serving: self.serving.load(Ordering::Acquire),
            flushes: self.flushes.load(Ordering::Relaxed),
            reads_in_flight: self.fills.lock().map_or(0, |fills| fills.len() as u64),
        }
    }

    /// The value held for `key`, if the near cache is serving and holds a live one.
    #[inline]
    pub(super) fn get(&self, key: &str) -> Option<Bytes> {
        self.get_expiring(key).map(|(value, _)| value)
    }

    /// [`get`](Self::get), with how long the key has left to live in Redis.
    pub(super) fn get_expiring(&self, key: &str) -> Option<(Bytes, Option<Duration>)> {
        if !self.serving.load(Ordering::Acquire) {
            return None;
        }
        let held = self.entries.get(key)?;
        let now = Instant::now();
        let left = held.expires.map(|at| at.saturating_duration_since(now));
        (held.until > now).then_some((held.value, left))
    }

    /// Registers a read of `key` over the tracking connection; `None` while there is none
    /// (the read goes to Redis the usual way).
    pub(super) fn start_fill<'a>(&'a self, key: &'a str) -> Option<Fill<'a>> {
        let (conn, link) = {
            let link = self.link.read().ok()?;
            let link = link.as_ref()?;
            (link.conn.clone(), link.id)
        };
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.fills.lock().ok()?.insert(key.to_owned(), ticket);
        Some(Fill {
            near: self,
            key,
            conn,
            ticket,
            link,
            settled: false,
        })
    }

    /// Removes `key`'s ticket if it is still `ticket` (a later read of the key may hold it).
    fn take_ticket(&self, key: &str, ticket: u64) {
        if let Ok(mut fills) = self.fills.lock()
            && fills.get(key) == Some(&ticket)
        {
            fills.remove(key);
        }
    }

    /// See [`Fill::finish`].
    fn finish_fill(&self, fill: &Fill<'_>, found: Option<(&Bytes, i64)>) {
        let key = fill.key;
        // held until the value is in: an invalidation handled meanwhile would otherwise drop
        // nothing and leave the stale value behind
        let Ok(mut fills) = self.fills.lock() else {
            return;
        };
        if fills.get(key) != Some(&fill.ticket) {
            return;
        }
        fills.remove(key);
        let Some((value, pttl_ms)) = found else {
            return;
        };
        let current = self
            .link
            .read()
            .is_ok_and(|link| link.as_ref().is_some_and(|link| link.id == fill.link));
        if !current {
            return;
        }
        // PTTL: -1 for a key without expiry; -2 (gone meanwhile) does not get here with a value
        let max_age = match u64::try_from(pttl_ms) {
            Ok(ms) => self.settings.max_age.min(Duration::from_millis(ms)),
            Err(_) => self.settings.max_age,
        };
        let now = Instant::now();
        let expires = u64::try_from(pttl_ms)
            .ok()
            .map(|ms| now + Duration::from_millis(ms));
        self.entries.insert(
            key.to_owned(),
            NearValue {
                value: value.clone(),
                until: now + max_age,
                expires,
            },
        );
    }

    /// Drops what is held for `key`: Redis said it changed, or this process just changed it.
    pub(super) fn forget(&self, key: &[u8]) {
        let Ok(key) = std::str::from_utf8(key) else {
            // the crate's keys are text; another client's binary key is nothing held here
            return;
        };
        if let Ok(mut fills) = self.fills.lock() {
            fills.remove(key);
            self.entries.invalidate(key);
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// See [`Near::changes`](field@Near::changes).
    pub(super) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Drops everything held (a `FLUSHDB` anywhere, or a change this process made to keys it
    /// cannot name one by one).
    pub(super) fn forget_all(&self) {
        if let Ok(mut fills) = self.fills.lock() {
            fills.clear();
            self.entries.invalidate_all();
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// The tracking connection `link` is gone or unreliable: stop serving, drop everything,
    /// and wake the task that opens a new one. A report about an older connection is ignored.
    pub(super) fn lose(&self, link: u64, why: &str) {
        {
            let Ok(mut current) = self.link.write() else {
                return;
            };
            if current.as_ref().is_none_or(|current| current.id != link) {
                return;
            }
            self.serving.store(false, Ordering::Release);
            *current = None;
        }
        // not under the link's lock: a fill holds the fills' lock while it reads the link
        self.forget_all();
        self.flushes.fetch_add(1, Ordering::Relaxed);
        crate::observe::near_cache_flush();
        tracing::info!(
            why,
            "near cache bypassed and emptied: its invalidation connection is lost"
        );
        self.lost.notify_one();
    }

    fn link_up(&self, conn: MultiplexedConnection, id: u64) {
        if let Ok(mut current) = self.link.write() {
            *current = Some(Link { conn, id });
            self.serving.store(true, Ordering::Release);
        }
    }

    fn epoch(&self) -> Option<String> {
        self.epoch.lock().ok()?.clone()
    }

    fn set_epoch(&self, epoch: Option<String>) {
        if let Ok(mut current) = self.epoch.lock() {
            *current = epoch;
        }
    }

    fn current_link(&self) -> Option<(MultiplexedConnection, u64)> {
        let link = self.link.read().ok()?;
        link.as_ref().map(|link| (link.conn.clone(), link.id))
    }

    /// What Redis pushes on the tracking connection.
    fn pushed(&self, link: u64, push: &PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            self.forget(key);
                        }
                    }
                }
                // a nil list: the whole database was flushed
                _ => self.forget_all(),
            },
            PushKind::Disconnection => self.lose(link, "the connection closed"),
            _ => {}
        }
    }
}

/// How the tracking connection reaches Redis: straight, or through Sentinel to the master.
pub(super) enum TrackingConnector {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

impl TrackingConnector {
    async fn connect(
        &self,
        near: &Arc<Near>,
        link: u64,
        command_timeout: Duration,
    ) -> Result<MultiplexedConnection, RedisError> {
        let client = match self {
            Self::Direct(client) => client.clone(),
            Self::Sentinel(sentinel) => {
                let master = sentinel.lock().await.async_get_client().await?;
                resp3_client(master.get_connection_info().clone())?
            }
        };
        let weak: Weak<Near> = Arc::downgrade(near);
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(command_timeout))
            .set_push_sender(move |push: PushInfo| {
                if let Some(near) = weak.upgrade() {
                    near.pushed(link, &push);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::pipe()
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg(TRACKING_CLIENT_NAME)
            .ignore()
            .cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("OPTIN")
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(conn)
    }
}

/// A client for `info` that speaks RESP3, which push messages need.
pub(super) fn resp3_client(info: redis::ConnectionInfo) -> Result<redis::Client, RedisError> {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

/// Keeps a tracking connection open for `near` while any store handle holds it: opens one
/// (with growing pauses while Redis is away), pings it every [`HEARTBEAT`], and opens a new
/// one when it is lost.
pub(super) async fn keep_tracking(
    near: Weak<Near>,
    connector: TrackingConnector,
    connect_timeout: Duration,
    command_timeout: Duration,
) {
    let mut pause = Duration::from_millis(50);
    let mut warned = false;
    loop {
        let Some(strong) = near.upgrade() else {
            return;
        };
        let id = strong.next_link.fetch_add(1, Ordering::Relaxed);
        let connected = tokio::time::timeout(
            connect_timeout,
            connector.connect(&strong, id, command_timeout),
        )
        .await;
        match connected {
            Ok(Ok(mut conn)) => {
                let epoch = tokio::time::timeout(
                    command_timeout,
                    claim_epoch(&mut conn, &strong.epoch_key),
                )
                .await;
                match epoch {
                    Ok(Ok(epoch)) => strong.set_epoch(epoch),
                    // refused (an ACL on the key, a read-only replica): PING alone
                    Ok(Err(err)) if err.code().is_some() => strong.set_epoch(None),
                    // no answer in time: try a new connection
                    _ => {
                        drop(strong);
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(HEARTBEAT);
                        continue;
                    }
                }
                strong.link_up(conn, id);
                pause = Duration::from_millis(50);
            }
            Ok(Err(err)) => {
                // A server that refuses tracking (Redis before 6, a managed service that
                // forbids CLIENT) will refuse it every time: say so once, loudly enough.
                if err.code().is_some() && !warned {
                    warned = true;
                    tracing::warn!(error = %err, "near cache off: Redis refused client tracking; reads go to Redis");
                } else {
                    tracing::debug!(error = %err, "near cache: no tracking connection yet");
                }
                drop(strong);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(HEARTBEAT);
                continue;
            }
            Err(_) => {
                drop(strong);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(HEARTBEAT);
                continue;
            }
        }
        drop(strong);
        watch(&near, id, command_timeout).await;
    }
}

/// Pings the tracking connection `id` until it is lost, or every store handle is gone.
async fn watch(near: &Weak<Near>, id: u64, command_timeout: Duration) {
    loop {
        let Some(strong) = near.upgrade() else {
            return;
        };
        let Some((mut conn, current)) = strong.current_link() else {
            return;
        };
        if current != id {
            return;
        }
        if tokio::time::timeout(HEARTBEAT, strong.lost.notified())
            .await
            .is_ok()
        {
            continue;
        }
        let expected = strong.epoch();
        let beat = tokio::time::timeout(command_timeout, async {
            match &expected {
                // GETRANGE rather than GET, so that Redis's command statistics keep counting
                // the application's reads alone
                Some(_) => redis::cmd("GETRANGE")
                    .arg(&strong.epoch_key)
                    .arg(0)
                    .arg(-1)
                    .query_async::<String>(&mut conn)
                    .await
                    .map(|seen| Some(seen).filter(|seen| !seen.is_empty())),
                None => redis::cmd("PING")
                    .query_async::<()>(&mut conn)
                    .await
                    .map(|()| None),
            }
        })
        .await;
        match beat {
            Ok(Ok(seen)) if expected.is_some() && seen != expected => {
                // another database was swapped in (`SWAPDB`), or this one flushed: what is
                // held was read from a database this one no longer is
                strong.forget_all();
                strong.flushes.fetch_add(1, Ordering::Relaxed);
                crate::observe::near_cache_flush();
                tracing::info!(
                    "near cache emptied: its database changed under it (SWAPDB or a flush)"
                );
                match tokio::time::timeout(
                    command_timeout,
                    claim_epoch(&mut conn, &strong.epoch_key),
                )
                .await
                {
                    Ok(Ok(epoch)) => strong.set_epoch(epoch),
                    Ok(Err(err)) if err.code().is_some() => strong.set_epoch(None),
                    _ => strong.lose(id, "it did not answer within the command timeout"),
                }
            }
            Ok(Ok(_)) => {}
            _ => strong.lose(
                id,
                "it did not answer a heartbeat within the command timeout",
            ),
        }
    }
}

/// Makes sure [`EPOCH_KEY`] holds a value (a new random one unless another instance already
/// set it) and returns it. Not tracked (tracking is opt-in): the heartbeat rereads it.
async fn claim_epoch(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> Result<Option<String>, RedisError> {
    let mut candidate = [0u8; 16];
    // a value that differs between databases is all that is needed; the process id and time
    // stand in should the system's randomness be unavailable
    let candidate = match getrandom::fill(&mut candidate) {
        Ok(()) => candidate
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        Err(_) => format!(
            "{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
        ),
    };
    let (epoch,): (Option<String>,) = redis::pipe()
        .cmd("SET")
        .arg(key)
        .arg(candidate)
        .arg("NX")
        .ignore()
        .cmd("GETRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    Ok(epoch.filter(|epoch| !epoch.is_empty()))
}
