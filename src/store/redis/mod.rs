//! The Redis store: one server, Sentinel or a cluster, over bb8 and redis-rs.

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
