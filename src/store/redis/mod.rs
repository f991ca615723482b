//! The Redis store: one server, Sentinel or a cluster, over bb8 and redis-rs.
//!
//! Read bottom-up:
//! - `classify` sorts a failure (store error kind, what it says of the connection, whether the
//!   command may be sent again); `scripts` and `lua` are the Lua scripts, `request` a command
//!   as a value;
//! - `pool` (one server's connections, the lease, reachability) and `cluster/` (the cluster
//!   client, redirects, unreachable and stalled nodes) are the two kinds of links;
//! - `outage` and `transport`: [`Transport`](transport::Transport) sends a request within the
//!   deadline, retries where the command's [`Retry`](classify::Retry) allows, and classifies
//!   and counts the failure, on either kind of links;
//! - `handle`: [`RedisStore`] over the transport; `replicated` adds the writes that wait for
//!   a replica (`RedisStore::run` and `RedisStore::call`, which every operation goes through);
//!   `near` and `reads` the near cache;
//! - the operations: `commands` (`Store`), `backend`, `rate`, and, on a cluster,
//!   `multi_slot` and `sweep`;
//! - `builder` (the settings) and `connect` (the store built from them).

mod backend;
mod builder;
mod classify;
mod cluster;
mod commands;
mod connect;
mod handle;
mod lua;
mod multi_slot;
mod near;
mod outage;
mod pool;
mod rate;
mod reads;
mod replicated;
mod request;
mod scripts;
mod sweep;
mod transport;

pub(crate) use self::builder::redact;
pub use self::builder::{MAX_CALL_TIMEOUT, RedisStoreBuilder};
pub use self::handle::RedisStore;
pub use self::near::{NearCache, NearCacheUsage};
