//! Django's `CACHES` setting into stores.
//!
//! Read bottom-up: `options` (the settings as types, deserialized from a settings document),
//! `django` (the django-redis options checked), `build` (settings into stores).

mod build;
mod django;
mod options;

pub use self::options::{PoolArgument, StoreConfig, StoreOptions, StoresConfig};
