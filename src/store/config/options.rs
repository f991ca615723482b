//! The settings of Django's `CACHES`, as types: a store's location, timeout, key layout and django-redis options.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::store::Timeout;

/// Named stores, shaped like Django's `CACHES` setting: a map from alias to [`StoreConfig`].
///
/// Field names follow Django (lower case, with the upper-case Django spellings accepted too),
/// so a settings dict translates line by line. Values this crate writes are JSON (integers as
/// decimal text), as django-redis's `JSONSerializer` writes them: a Django process reading the
/// same keys must use that serializer, since under django-redis's default (pickle) its
/// `cache.get` fails on them.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::{Stores, StoresConfig};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config: StoresConfig = serde_json::from_str(r#"{
///     "default":      {"location": "memory://", "timeout": 600},
///     "verify_codes": {"LOCATION": "memory://", "KEY_PREFIX": "codes", "TIMEOUT": 300}
/// }"#)?;
/// let stores = Stores::from_config(&config).await?;
/// assert_eq!(stores.aliases().collect::<Vec<_>>(), ["default", "verify_codes"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
#[non_exhaustive]
pub struct StoresConfig {
    /// The stores by alias.
    pub stores: BTreeMap<String, StoreConfig>,
}

/// One store's configuration, Django's `CACHES["alias"]`.
///
/// | field | Django | meaning |
/// |---|---|---|
/// | `backend` | `BACKEND` | optional; `...RedisCache` or `...LocMemCache`; otherwise the location decides |
/// | `location` | `LOCATION` | `redis://...`, `unix://...`, or `memory://` for the embedded store (empty only with a LocMemCache `BACKEND`); a list: a master and its replicas (the first is used), or a cluster's seed nodes |
/// | `key_prefix` | `KEY_PREFIX` | default `""` |
/// | `version` | `VERSION` | default `1` |
/// | `timeout` | `TIMEOUT` | seconds, or `null`/`"never"`; default `300` |
/// | `options` | `OPTIONS` | see [`StoreOptions`] |
///
/// # Example
///
/// ```
/// use tower_redis_http::store::StoreConfig;
///
/// let config: StoreConfig = toml::from_str(r#"
///     location = "redis://127.0.0.1:6379/1"
///     key_prefix = "shop"
///     timeout = 600
///     [options]
///     max_connections = 256
///     password = "s3cret"
/// "#)?;
/// assert_eq!(config.options.max_connections, Some(256));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The Django backend path, if given.
    #[serde(alias = "BACKEND")]
    pub backend: Option<String>,
    /// Where the store is: one location, or a list. A list, as django-redis takes a master
    /// followed by its replicas, is read as its first entry: every read goes to the master
    /// too, so none sees a replica's stale copy. For a Redis Cluster (see
    /// [`StoreOptions::cluster`]) the list is the seed nodes.
    #[serde(alias = "LOCATION", deserialize_with = "locations")]
    pub location: Vec<String>,
    /// The key prefix.
    #[serde(alias = "KEY_PREFIX")]
    pub key_prefix: String,
    /// The key version.
    #[serde(alias = "VERSION")]
    pub version: i64,
    /// The default timeout.
    #[serde(alias = "TIMEOUT")]
    pub timeout: Timeout,
    /// Backend options.
    #[serde(alias = "OPTIONS")]
    pub options: StoreOptions,
}

impl StoreConfig {
    /// The embedded memory store (`LOCATION: "memory://"`), with the defaults otherwise.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::StoreConfig;
    ///
    /// assert_eq!(StoreConfig::memory().location, ["memory://"]);
    /// ```
    #[must_use]
    pub fn memory() -> Self {
        Self {
            location: vec!["memory://".to_owned()],
            ..Self::default()
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: None,
            location: Vec::new(),
            key_prefix: String::new(),
            version: 1,
            timeout: Timeout::default(),
            options: StoreOptions::default(),
        }
    }
}

/// Backend options, Django's `OPTIONS`. Unset options keep the builders' defaults. An option
/// the chosen backend would not use is refused by name when the store is built: the Redis
/// ones (`PASSWORD`, `DB`, the timeouts, the pool and TLS arguments, `SENTINELS`, `CLUSTER`,
/// ...) on the memory store, and the memory store's bounds (`MAX_ENTRIES`,
/// `MAX_RATE_LIMIT_KEYS`, `MAX_CACHE_BYTES`) on Redis.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::StoreOptions;
///
/// let options: StoreOptions = serde_json::from_str(
///     r#"{"MAX_CONNECTIONS": 256, "SOCKET_TIMEOUT": 0.25, "PASSWORD": "s3cret"}"#,
/// )?;
/// assert_eq!(options.socket_timeout, Some(0.25));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Redis: the pool's bound on connections.
    #[serde(alias = "MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Redis: the password, when the location has none.
    #[serde(alias = "PASSWORD", deserialize_with = "secret")]
    pub password: Option<String>,
    /// Redis: the ACL user name, when the location has none.
    #[serde(alias = "USERNAME")]
    pub username: Option<String>,
    /// Redis: the database, when the location names none.
    #[serde(alias = "DB")]
    pub db: Option<i64>,
    /// Redis: seconds to wait for a connection (`SOCKET_CONNECT_TIMEOUT`).
    #[serde(alias = "SOCKET_CONNECT_TIMEOUT")]
    pub socket_connect_timeout: Option<f64>,
    /// Redis: seconds each call may take (`SOCKET_TIMEOUT`).
    #[serde(alias = "SOCKET_TIMEOUT")]
    pub socket_timeout: Option<f64>,
    /// Memory: the bound on entries of the general share (Django's `MAX_ENTRIES`).
    #[serde(alias = "MAX_ENTRIES")]
    pub max_entries: Option<u64>,
    /// Memory: the bound on live keys of the rate-limit share.
    #[serde(alias = "MAX_RATE_LIMIT_KEYS")]
    pub max_rate_limit_keys: Option<u64>,
    /// Memory: the bound on bytes of the cache share.
    #[serde(alias = "MAX_CACHE_BYTES")]
    pub max_cache_bytes: Option<u64>,
    /// django-redis's client class. `django_redis.client.DefaultClient` (or unset) is what
    /// this crate does; the others are refused, each with the reason.
    #[serde(alias = "CLIENT_CLASS")]
    pub client_class: Option<String>,
    /// django-redis's serializer. Only `django_redis.serializers.json.JSONSerializer` (or
    /// unset, when the Rust side reads only integers and its own values) can be shared.
    #[serde(alias = "SERIALIZER")]
    pub serializer: Option<String>,
    /// django-redis's compressor: only the identity compressor (or unset) can be shared.
    #[serde(alias = "COMPRESSOR")]
    pub compressor: Option<String>,
    /// redis-py's pool arguments, django-redis's `CONNECTION_POOL_KWARGS`:
    /// `max_connections`, `socket_timeout`, `socket_connect_timeout`, `retry_on_timeout`
    /// / `health_check_interval` (accepted, see [`StoreConfig::build`]), and for a
    /// `rediss://` location `ssl_ca_certs`, `ssl_certfile` / `ssl_keyfile` and
    /// `ssl_cert_reqs` (`"required"` only; needs the `tls` feature); others are refused.
    #[serde(alias = "CONNECTION_POOL_KWARGS")]
    pub connection_pool_kwargs: BTreeMap<String, PoolArgument>,
    /// django-redis's pool class: `ConnectionPool` or `SentinelConnectionPool` (or unset);
    /// the store has its own pool, so the name is only checked.
    #[serde(alias = "CONNECTION_POOL_CLASS")]
    pub connection_pool_class: Option<String>,
    /// Redis Sentinel, as django-redis's `SentinelClient` takes it: the sentinels as
    /// `[host, port]` pairs. The location then names the master's service and database,
    /// `redis://<service>/<db>`.
    #[serde(alias = "SENTINELS")]
    pub sentinels: Vec<(String, u16)>,
    /// The sentinels' own connection options (`SENTINEL_KWARGS`): `password` is read, and
    /// anything else is refused.
    #[serde(alias = "SENTINEL_KWARGS")]
    pub sentinel_kwargs: BTreeMap<String, PoolArgument>,
    /// A Redis Cluster, whose seed nodes the location lists. Also set by the ways Django
    /// settings name a cluster: a `REDIS_CLIENT_CLASS` of `redis.cluster.RedisCluster` (or
    /// redis-py-cluster's `rediscluster.RedisCluster`), or a `CLIENT_CLASS`, `BACKEND` or
    /// `CONNECTION_POOL_CLASS` with `Cluster` in its name.
    #[serde(alias = "CLUSTER")]
    pub cluster: bool,
    /// django-redis's redis-py client class: `redis.Redis` (or unset), or a cluster class.
    #[serde(alias = "REDIS_CLIENT_CLASS")]
    pub redis_client_class: Option<String>,
    /// The key layout: `"django"` (`prefix:version:key`, the default) or `"raw"`, the keys
    /// as given, as `get_redis_connection()` users write them.
    #[serde(alias = "KEY_LAYOUT")]
    pub key_layout: Option<String>,
}

/// A value of django-redis's `CONNECTION_POOL_KWARGS`, as a settings file holds it.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::{PoolArgument, StoreOptions};
///
/// let options: StoreOptions = serde_json::from_str(
///     r#"{"CONNECTION_POOL_KWARGS": {"max_connections": 100, "retry_on_timeout": true}}"#,
/// )?;
/// assert_eq!(options.connection_pool_kwargs["max_connections"], PoolArgument::Integer(100));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum PoolArgument {
    /// `True` / `False`.
    Bool(bool),
    /// A whole number.
    Integer(i64),
    /// A number with a fraction (seconds).
    Float(f64),
    /// Text.
    Text(String),
}

impl PoolArgument {
    pub(super) fn seconds(&self) -> Option<f64> {
        match self {
            Self::Integer(n) => Some(*n as f64),
            Self::Float(secs) => Some(*secs),
            _ => None,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field(
                "location",
                &self
                    .location
                    .iter()
                    .map(|location| crate::store::redis::redact(location))
                    .collect::<Vec<_>>(),
            )
            .field("key_prefix", &self.key_prefix)
            .field("version", &self.version)
            .field("timeout", &self.timeout)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("max_connections", &self.max_connections)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("username", &self.username)
            .field("db", &self.db)
            .field("socket_connect_timeout", &self.socket_connect_timeout)
            .field("socket_timeout", &self.socket_timeout)
            .field("max_entries", &self.max_entries)
            .field("max_rate_limit_keys", &self.max_rate_limit_keys)
            .field("max_cache_bytes", &self.max_cache_bytes)
            .field("client_class", &self.client_class)
            .field("serializer", &self.serializer)
            .field("compressor", &self.compressor)
            // their values may hold a password, which is refused at build but must not reach
            // a log before that
            .field(
                "connection_pool_kwargs",
                &self.connection_pool_kwargs.keys().collect::<Vec<_>>(),
            )
            .field("key_layout", &self.key_layout)
            .field("connection_pool_class", &self.connection_pool_class)
            .field("sentinels", &self.sentinels)
            .field(
                "sentinel_kwargs",
                &self.sentinel_kwargs.keys().collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("redis_client_class", &self.redis_client_class)
            .finish()
    }
}

/// `LOCATION` as a string, or a non-empty list (a master and its replicas, or a cluster's
/// seed nodes).
pub(super) fn locations<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Location {
        One(String),
        List(Vec<String>),
    }
    match Location::deserialize(deserializer)? {
        Location::One(location) if location.trim().is_empty() => Ok(Vec::new()),
        // django-redis's comma-separated list: a master and its replicas, or seed nodes
        Location::One(location) => Ok(location
            .split(',')
            .map(|one| one.trim().to_owned())
            .collect()),
        Location::List(list) if list.is_empty() => Err(serde::de::Error::custom(
            "LOCATION is an empty list; name the master (or the cluster's seed nodes)",
        )),
        Location::List(list) => Ok(list),
    }
}

/// A password as text; anything else is refused without its value in the message (serde's
/// own message would echo a password written as a number).
pub(super) fn secret<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct Secret;

    impl<'de> serde::de::Visitor<'de> for Secret {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a password as text")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some(text.to_owned()))
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(
            self,
            inner: D,
        ) -> Result<Self::Value, D::Error> {
            inner.deserialize_any(Secret)
        }

        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom("PASSWORD must be text (in quotes), not a number"))
        }

        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom("PASSWORD must be text (in quotes), not a number"))
        }

        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom("PASSWORD must be text (in quotes), not a number"))
        }

        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(
                "PASSWORD must be text (in quotes), not true or false",
            ))
        }
    }

    deserializer.deserialize_any(Secret)
}
