//! The embedded store: the same operations as Redis, in process, on moka.
//!
//! Read bottom-up:
//! - `slot`: one entry (value, expiry, counter) and the value formats (indexes, counters);
//! - `shares`: the three bounded shares of a store and the sweep of expired rate-limit keys;
//! - `handle`: [`MemoryStore`], a handle on one share, with admission and atomic compute;
//! - `rate`: the rate-limit policies, each one atomic compute on a slot;
//! - `glob`: the glob subset of pattern deletes;
//! - `backend` and `commands`: the `Backend` and [`Store`](super::Store) operations;
//! - `builder`: [`MemoryStoreBuilder`], and the constructors that use it.

mod backend;
mod builder;
mod commands;
mod glob;
mod handle;
mod rate;
mod shares;
mod slot;

pub use self::builder::MemoryStoreBuilder;
pub use self::handle::MemoryStore;
pub use self::shares::MemoryUsage;
