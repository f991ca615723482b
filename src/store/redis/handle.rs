//! `RedisStore`, the handle every operation goes through, and its links to one server or a cluster.

use std::sync::Arc;

use crate::store::durable::{Durability, Lane};
use crate::store::{Expiry, KeyScheme, Timeout, ttl_ms_ceil};

use super::near::Near;
use super::transport::{Links, Transport};

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
///   the command. A second `READONLY` is a [`StoreErrorKind::Connection`](crate::store::StoreErrorKind::Connection) error, so the
///   layers' failure policy applies.
/// - **Every call is bounded by one deadline**, the command timeout, from checkout to reply,
///   retry included. A stalled server gives [`StoreErrorKind::Timeout`](crate::store::StoreErrorKind::Timeout), never a hung
///   request; the connect timeout only bounds bb8's own connection attempts in the background.
/// - **One timeout for a stalled server, not one per call.** After a call timed out, calls
///   fail at once with [`StoreErrorKind::Timeout`](crate::store::StoreErrorKind::Timeout) while one task pings the server; the first
///   answer ends it. A request through three layers waits one timeout, not three. A call that
///   times out on a connection already known bad (flagged by another call, or opened before a
///   drop was seen, as after a `CLIENT KILL`) fails alone: the store has moved to a new
///   connection on which the server answers, so that timeout is no sign of a stall.
/// - **Fail fast while Redis is down.** When the latest connection attempt failed within the
///   connect timeout and no connection is open, calls fail at once instead of each waiting out
///   the timeout: [`StoreErrorKind::Connection`](crate::store::StoreErrorKind::Connection) when the server refused,
///   [`StoreErrorKind::Timeout`](crate::store::StoreErrorKind::Timeout) when it did not answer. bb8 keeps reconnecting in the
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
    pub(super) transport: Transport,
    pub(super) keys: KeyScheme,
    pub(super) default_timeout: Timeout,
    /// The near cache, when the store has one.
    pub(super) near: Option<Arc<Near>>,
    /// The connection writes that wait for a replica go over, shared by every clone.
    pub(super) lane: Arc<Lane>,
    /// What this handle's writes must reach (see [`AnyStore::durable`](super::AnyStore)).
    pub(super) durability: Durability,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.keys)
            .field("default_timeout", &self.default_timeout)
            .field("command_timeout", &self.transport.command_timeout)
            .field("links", &self.transport.links)
            .field("near", &self.near)
            .finish()
    }
}

impl RedisStore {
    /// The cluster's links, on a cluster store.
    pub(super) fn cluster_links(&self) -> Option<&super::cluster::ClusterLinks> {
        match &self.transport.links {
            Links::Cluster(links) => Some(links),
            Links::Server(_) => None,
        }
    }

    pub(super) fn expiry_ms(&self, expiry: Expiry) -> Option<Option<u64>> {
        match expiry.resolve(self.default_timeout) {
            Expiry::After(ttl) if ttl.is_zero() => None,
            Expiry::After(ttl) => Some(Some(ttl_ms_ceil(ttl))),
            Expiry::Never | Expiry::Default => Some(None),
        }
    }

    /// The same store, with every write made through this handle under `durability`.
    pub(in crate::store) fn with_durability(&self, durability: Durability) -> Self {
        Self {
            durability,
            ..self.clone()
        }
    }
}
