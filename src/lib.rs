//! Tower middleware backed by Redis, for any web stack built on [`tower`](https://docs.rs/tower): axum, hyper, warp
//! and the rest.
//!
//! What Python teams get from django-redis, Django's `cache_page` and Django REST framework's
//! Redis token authentication, as layers:
//!
//! - **Token authentication** with path allow-lists: [`auth`].
//! - **Response caching** akin to `cache_page`, following the rules of a shared HTTP cache:
//!   [`cache`].
//! - **Per-key rate limiting** and send flags, atomic in Redis: [`ratelimit`].
//!
//! This release lays the ground they share: the [`store`] module, with a [`Store`](store::Store)
//! trait implemented by [`RedisStore`](store::RedisStore) (a bb8 pool of multiplexed
//! connections) and [`MemoryStore`](store::MemoryStore) (embedded, for examples and tests),
//! Django-compatible keys and values, named stores configured like Django's `CACHES`, and the
//! [`FailurePolicy`] every layer applies when its store fails.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use tower_redis_http::store::{MemoryStore, Store, value};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let user = value::encode(&serde_json::json!({"id": 1, "username": "alice"}))?;
//! store.set("token:abc", user, Duration::from_secs(72 * 3600).into()).await?;
//!
//! let stored = store.get("token:abc").await?.expect("just stored");
//! let user: serde_json::Value = value::decode(&stored)?;
//! assert_eq!(user["username"], "alice");
//! # Ok(()) }
//! ```
//!
//! # Django mapping
//!
//! | Django | here |
//! |---|---|
//! | `CACHES = {"default": {...}}` | [`StoresConfig`](store::StoresConfig), [`Stores`](store::Stores) |
//! | `cache.get/set/add/delete/incr/ttl` | [`Store`](store::Store) methods |
//! | `cache.incr_version` | [`Store::bump_version`](store::Store::bump_version) |
//! | `KEY_FUNCTION`, `KEY_PREFIX`, `VERSION` | [`KeyScheme`](store::KeyScheme) |
//! | django-redis `JSONSerializer` | [`store::value`] |
//! | `IGNORE_EXCEPTIONS` | [`FailurePolicy::Open`] |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod body;
pub mod cache;
mod error;
mod failure;
pub mod ratelimit;
pub mod store;

pub use error::ConfigError;
pub use failure::FailurePolicy;
