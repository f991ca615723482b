use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::{AnyStore, KeyScheme, MemoryStore, Pem, RedisStore, Stores, Timeout};
use crate::ConfigError;

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
    fn seconds(&self) -> Option<f64> {
        match self {
            Self::Integer(n) => Some(*n as f64),
            Self::Float(secs) => Some(*secs),
            _ => None,
        }
    }
}

impl StoreConfig {
    /// Refuses one setting given in two places with two values, naming both: django-redis
    /// settles some such pairs one way and this crate did the other, so neither is guessed.
    fn no_conflicts(&self, pool: &PoolArguments) -> Result<(), ConfigError> {
        let conflict = |option: &'static str, first: &str, second: &str| {
            Err(ConfigError::InvalidOption {
                option,
                reason: format!(
                    "given twice with different values, in {first} and in {second}: keep one"
                ),
            })
        };
        let location = self.primary_location().trim();
        let location_db = location
            .split_once("://")
            .and_then(|(_, rest)| {
                rest.rsplit_once('@')
                    .map_or(Some(rest), |(_, after)| Some(after))
            })
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, path)| path.split(['?', '#']).next().unwrap_or_default())
            .filter(|db| !db.is_empty())
            .and_then(|db| db.parse::<i64>().ok())
            // a socket's database is a query parameter: `unix:///path?db=3`
            .or_else(|| {
                location
                    .split_once('?')
                    .and_then(|(_, query)| {
                        query.split('&').find_map(|pair| pair.strip_prefix("db="))
                    })
                    .and_then(|db| db.parse::<i64>().ok())
            });
        if let (Some(in_location), Some(in_options)) = (location_db, self.options.db)
            && in_location != in_options
        {
            return conflict("db", "LOCATION", "OPTIONS.DB");
        }
        if let (Some(a), Some(b)) = (self.options.max_connections, pool.max_connections)
            && a != b
        {
            return conflict(
                "max_connections",
                "OPTIONS.MAX_CONNECTIONS",
                "CONNECTION_POOL_KWARGS.max_connections",
            );
        }
        if let (Some(a), Some(b)) = (self.options.socket_timeout, pool.socket_timeout)
            && a != b
        {
            return conflict(
                "socket_timeout",
                "OPTIONS.SOCKET_TIMEOUT",
                "CONNECTION_POOL_KWARGS.socket_timeout",
            );
        }
        if let (Some(a), Some(b)) = (
            self.options.socket_connect_timeout,
            pool.socket_connect_timeout,
        ) && a != b
        {
            return conflict(
                "socket_connect_timeout",
                "OPTIONS.SOCKET_CONNECT_TIMEOUT",
                "CONNECTION_POOL_KWARGS.socket_connect_timeout",
            );
        }
        Ok(())
    }
}

impl StoreOptions {
    /// Refuses every option set that `backend` would not use: a Redis option on the memory
    /// store (each process would quietly get a store of its own, with limits and tokens no
    /// other process sees), a memory-store bound on Redis.
    fn belong_to(&self, backend: Backend) -> Result<(), ConfigError> {
        let set: &[(&'static str, bool)] = match backend {
            Backend::Memory => &[
                ("password", self.password.is_some()),
                ("username", self.username.is_some()),
                ("db", self.db.is_some()),
                ("max_connections", self.max_connections.is_some()),
                (
                    "socket_connect_timeout",
                    self.socket_connect_timeout.is_some(),
                ),
                ("socket_timeout", self.socket_timeout.is_some()),
                ("client_class", self.client_class.is_some()),
                ("serializer", self.serializer.is_some()),
                ("compressor", self.compressor.is_some()),
                (
                    "connection_pool_kwargs",
                    !self.connection_pool_kwargs.is_empty(),
                ),
                (
                    "connection_pool_class",
                    self.connection_pool_class.is_some(),
                ),
                ("sentinels", !self.sentinels.is_empty()),
                ("sentinel_kwargs", !self.sentinel_kwargs.is_empty()),
                ("cluster", self.cluster),
                ("redis_client_class", self.redis_client_class.is_some()),
            ],
            Backend::Redis => &[
                ("max_entries", self.max_entries.is_some()),
                ("max_rate_limit_keys", self.max_rate_limit_keys.is_some()),
                ("max_cache_bytes", self.max_cache_bytes.is_some()),
            ],
        };
        match set.iter().find(|(_, set)| *set) {
            Some((option, _)) => Err(ConfigError::InvalidOption {
                option,
                reason: match backend {
                    Backend::Memory => "applies to Redis, and this store is the embedded memory \
                                        one (an empty or memory:// location, or a LocMemCache \
                                        BACKEND)"
                        .to_owned(),
                    Backend::Redis => "bounds the embedded memory store; Redis bounds itself \
                                       (maxmemory)"
                        .to_owned(),
                },
            }),
            None => Ok(()),
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
                    .map(|location| super::redis::redact(location))
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Redis,
    Memory,
}

fn seconds(option: &'static str, secs: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(secs).map_err(|_| ConfigError::InvalidOption {
        option,
        reason: if secs.is_nan() || secs < 0.0 {
            format!("must be 0 or more seconds, got {secs}")
        } else {
            "is past any real use: a call timeout is at most an hour".to_owned()
        },
    })
}

/// The pool arguments this crate applies, read from `CONNECTION_POOL_KWARGS`.
#[derive(Default)]
struct PoolArguments {
    max_connections: Option<u32>,
    socket_timeout: Option<f64>,
    socket_connect_timeout: Option<f64>,
    /// redis-py's TLS files: the CA, and the client certificate and key.
    ssl_ca_certs: Option<String>,
    ssl_certfile: Option<String>,
    ssl_keyfile: Option<String>,
}

impl StoreOptions {
    /// Checks the django-redis options a shared settings file carries: what this crate does
    /// passes, what it cannot do is refused with the reason.
    fn django_redis(&self) -> Result<(KeyScheme, PoolArguments), ConfigError> {
        let refuse = |option, reason: String| Err(ConfigError::InvalidOption { option, reason });
        if let Some(class) = &self.client_class {
            let name = class.rsplit('.').next().unwrap_or(class);
            match name {
                "DefaultClient" => {}
                "SentinelClient" if self.sentinels.is_empty() => {
                    return refuse(
                        "client_class",
                        format!("`{class}` needs the sentinels, `OPTIONS.SENTINELS`"),
                    );
                }
                "SentinelClient" => {}
                // the cluster clients Django projects use (django-redis-cluster's, or a
                // DefaultClient subclass over redis-py's RedisCluster)
                name if name.contains("Cluster") => {}
                "HerdClient" => {
                    return refuse(
                        "client_class",
                        format!(
                            "`{class}` stores pickled (marker, value, expiry) tuples the Rust side cannot read; the cache layer has its own stampede protection"
                        ),
                    );
                }
                "ShardClient" => {
                    return refuse(
                        "client_class",
                        format!(
                            "`{class}` shards keys on the client side, which this crate does not do"
                        ),
                    );
                }
                _ => {
                    return refuse(
                        "client_class",
                        format!("`{class}` is not a django-redis client this crate knows"),
                    );
                }
            }
        }
        if let Some(class) = &self.connection_pool_class {
            let name = class.rsplit('.').next().unwrap_or(class);
            if !matches!(
                name,
                "ConnectionPool"
                    | "SentinelConnectionPool"
                    | "BlockingConnectionPool"
                    | "ClusterConnectionPool"
            ) {
                return refuse(
                    "connection_pool_class",
                    format!("`{class}` is not a redis-py pool this crate can stand in for"),
                );
            }
        }
        if let Some(class) = &self.redis_client_class {
            let name = class.rsplit('.').next().unwrap_or(class);
            if !matches!(
                name,
                "Redis" | "StrictRedis" | "RedisCluster" | "StrictRedisCluster"
            ) {
                return refuse(
                    "redis_client_class",
                    format!("`{class}` is not a redis-py client this crate can stand in for"),
                );
            }
        }
        if let Some(other) = self.sentinel_kwargs.keys().find(|name| *name != "password") {
            return refuse(
                "sentinel_kwargs",
                format!("`{other}` is not a sentinel option this crate takes (password)"),
            );
        }
        if let Some(serializer) = &self.serializer
            && !serializer.ends_with("JSONSerializer")
        {
            return refuse(
                "serializer",
                format!(
                    "`{serializer}`: values it writes cannot be read from Rust; use django_redis.serializers.json.JSONSerializer on both sides"
                ),
            );
        }
        if let Some(compressor) = &self.compressor
            && !compressor.ends_with("IdentityCompressor")
        {
            return refuse(
                "compressor",
                format!(
                    "`{compressor}`: compressed values cannot be shared; use the identity compressor"
                ),
            );
        }
        let keys = match self.key_layout.as_deref() {
            None | Some("django") => KeyScheme::default(),
            Some("raw") => KeyScheme::raw(),
            Some(other) => {
                return refuse(
                    "key_layout",
                    format!("`{other}` is not \"django\" or \"raw\""),
                );
            }
        };
        let mut pool = PoolArguments::default();
        for (name, value) in &self.connection_pool_kwargs {
            let bad = || {
                Err(ConfigError::InvalidOption {
                    option: "connection_pool_kwargs",
                    reason: format!("`{name}`: {value:?} is not a value it takes"),
                })
            };
            match name.as_str() {
                "max_connections" => match value {
                    PoolArgument::Integer(n) => match u32::try_from(*n) {
                        Ok(n) => pool.max_connections = Some(n),
                        Err(_) => return bad(),
                    },
                    _ => return bad(),
                },
                "socket_timeout" => match value.seconds() {
                    Some(secs) => pool.socket_timeout = Some(secs),
                    None => return bad(),
                },
                "socket_connect_timeout" => match value.seconds() {
                    Some(secs) => pool.socket_connect_timeout = Some(secs),
                    None => return bad(),
                },
                "ssl_ca_certs" | "ssl_certfile" | "ssl_keyfile" => {
                    let PoolArgument::Text(path) = value else {
                        return bad();
                    };
                    let slot = match name.as_str() {
                        "ssl_ca_certs" => &mut pool.ssl_ca_certs,
                        "ssl_certfile" => &mut pool.ssl_certfile,
                        _ => &mut pool.ssl_keyfile,
                    };
                    *slot = Some(path.clone());
                }
                // certificates are always checked: redis-py's default, and the only safe one
                "ssl_cert_reqs" if matches!(value, PoolArgument::Text(v) if v == "required") => {}
                "ssl_cert_reqs" => {
                    return refuse(
                        "connection_pool_kwargs",
                        format!(
                            "`ssl_cert_reqs`: {value:?}; the server's certificate is always checked (\"required\")"
                        ),
                    );
                }
                // a dropped connection is retried once, safely, whatever this says; a timed-out
                // command is never resent, since it may still land
                "retry_on_timeout" if matches!(value, PoolArgument::Bool(_)) => {}
                // connections are checked by use: a dropped one is replaced on its first error
                "health_check_interval" if value.seconds().is_some() => {}
                "retry_on_timeout" | "health_check_interval" => return bad(),
                other => {
                    return refuse(
                        "connection_pool_kwargs",
                        format!(
                            "`{other}` is not a pool argument this crate takes (max_connections, socket_timeout, socket_connect_timeout, retry_on_timeout, health_check_interval, ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs)"
                        ),
                    );
                }
            }
        }
        Ok((keys, pool))
    }
}

/// `LOCATION` as a string, or a non-empty list (a master and its replicas, or a cluster's
/// seed nodes).
fn locations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
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

impl StoreConfig {
    /// The location: the first of a list.
    fn primary_location(&self) -> &str {
        self.location.first().map_or("", |location| location.trim())
    }

    /// Whether the settings name a Redis Cluster.
    fn is_cluster(&self) -> bool {
        let options = &self.options;
        let names_cluster = |class: &Option<String>| {
            class.as_deref().is_some_and(|class| {
                class
                    .rsplit('.')
                    .next()
                    .unwrap_or(class)
                    .contains("Cluster")
            })
        };
        options.cluster
            || names_cluster(&options.redis_client_class)
            || names_cluster(&options.client_class)
            || names_cluster(&options.connection_pool_class)
            || names_cluster(&self.backend)
    }

    /// A store through Sentinel: the location names the service and the database,
    /// `redis://<service>/<db>`, as django-redis's `SentinelClient` reads it.
    fn sentinel_builder(&self) -> Result<crate::store::RedisStoreBuilder, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidLocation {
            location: super::redis::redact(self.primary_location()),
            reason: reason.to_owned(),
            source: None,
        };
        let rest = self
            .primary_location()
            .strip_prefix("redis://")
            .ok_or_else(|| invalid("with sentinels, the location is `redis://<service>/<db>`"))?;
        let (service, db) = rest.split_once('/').unwrap_or((rest, ""));
        if service.is_empty() || service.contains(['@', ':']) {
            return Err(invalid(
                "with sentinels, the location names the master's service, `redis://<service>/<db>`",
            ));
        }
        let password = match self.options.sentinel_kwargs.get("password") {
            None => None,
            Some(PoolArgument::Text(password)) => Some(password.as_str()),
            Some(_) => {
                return Err(ConfigError::InvalidOption {
                    option: "sentinel_kwargs",
                    reason: "`password` is not text".to_owned(),
                });
            }
        };
        let nodes = self
            .options
            .sentinels
            .iter()
            .map(|(host, port)| {
                // an IPv6 address written without brackets, as redis-py takes it
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                (host, port)
            })
            .map(|(host, port)| match password {
                Some(password) => {
                    let password = percent_encoding::utf8_percent_encode(
                        password,
                        percent_encoding::NON_ALPHANUMERIC,
                    );
                    format!("redis://:{password}@{host}:{port}")
                }
                None => format!("{host}:{port}"),
            });
        let mut builder = RedisStore::sentinel(nodes, service);
        let db = db.trim_end_matches('/');
        if !db.is_empty() {
            let db = db
                .parse()
                .map_err(|_| invalid("the database after the service is a number"))?;
            builder = builder.database(db);
        }
        Ok(builder)
    }

    fn backend(&self) -> Result<Backend, ConfigError> {
        let location = self.primary_location().trim();
        let is_memory = |location: &str| {
            location
                .get(..9)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("memory://"))
        };
        if is_memory(location) && self.location.len() > 1 {
            return Err(ConfigError::InvalidOption {
                option: "location",
                reason: "the embedded memory store is one process's own: a list after \
                         `memory://` has nothing to name"
                    .to_owned(),
            });
        }
        let from_location = if location.is_empty() || is_memory(location) {
            Backend::Memory
        } else {
            Backend::Redis
        };
        let Some(backend) = &self.backend else {
            // an empty location is a mistake more often than a wish for a per-process store,
            // whose limits and tokens no other process sees (django-redis refuses it too)
            if location.is_empty() {
                return Err(ConfigError::InvalidOption {
                    option: "location",
                    reason: "is empty: name a redis:// or unix:// location, or `memory://` \
                             (or a LocMemCache BACKEND) for the embedded per-process store"
                        .to_owned(),
                });
            }
            return Ok(from_location);
        };
        let named = if backend.contains("LocMemCache") || backend.eq_ignore_ascii_case("memory") {
            Backend::Memory
        } else if backend.contains("Redis") || backend.eq_ignore_ascii_case("redis") {
            Backend::Redis
        } else {
            return Err(ConfigError::InvalidOption {
                option: "backend",
                reason: format!("`{backend}` is neither a Redis nor a local-memory backend"),
            });
        };
        // Django's LocMemCache uses LOCATION as an instance name, not a URL.
        if named == Backend::Redis && from_location == Backend::Memory {
            return Err(ConfigError::InvalidOption {
                option: "location",
                reason: "a Redis backend needs a redis:// or unix:// location".to_owned(),
            });
        }
        Ok(named)
    }

    /// Builds the store this configuration describes, through the backend's builder.
    ///
    /// # Errors
    ///
    /// The builder's [`ConfigError`], or [`ConfigError::InvalidOption`] for an option the
    /// backend cannot take.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{AnyStore, StoreConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = StoreConfig::memory().build().await?;
    /// assert!(matches!(store, AnyStore::Memory(_)));
    /// # Ok(()) }
    /// ```
    pub async fn build(&self) -> Result<AnyStore, ConfigError> {
        let (keys, pool) = self.options.django_redis()?;
        let keys = if keys.is_raw() {
            if !self.key_prefix.is_empty() {
                return Err(ConfigError::InvalidOption {
                    option: "key_prefix",
                    reason: "the raw key layout writes keys as given, without a prefix".to_owned(),
                });
            }
            if self.version != 1 {
                return Err(ConfigError::InvalidOption {
                    option: "version",
                    reason: "the raw key layout writes keys as given, without a version".to_owned(),
                });
            }
            keys
        } else {
            KeyScheme::django(self.key_prefix.as_str(), self.version)
        };
        // a prefix that leaves no room for a key makes every call fail: refused now instead
        if keys.make("k").is_err() {
            return Err(ConfigError::InvalidOption {
                option: "key_prefix",
                reason: "leaves no room for a key within the key length bound".to_owned(),
            });
        }
        if let Some(db) = self.options.db
            && !(0..=i64::from(i32::MAX)).contains(&db)
        {
            return Err(ConfigError::InvalidOption {
                option: "db",
                reason: format!("{db} is not a database number (0 or more)"),
            });
        }
        let backend = self.backend()?;
        self.options.belong_to(backend)?;
        self.no_conflicts(&pool)?;
        match backend {
            Backend::Memory => {
                let mut builder = MemoryStore::builder()
                    .key_scheme(keys)
                    .default_timeout(self.timeout);
                let options = &self.options;
                if let Some(max) = options.max_entries {
                    builder = builder.max_entries(max);
                }
                if let Some(max) = options.max_rate_limit_keys {
                    builder = builder.max_rate_limit_keys(max);
                }
                if let Some(max) = options.max_cache_bytes {
                    builder = builder.max_cache_bytes(max);
                }
                Ok(AnyStore::Memory(builder.build()?))
            }
            Backend::Redis => {
                let options = &self.options;
                let mut builder = if self.is_cluster() {
                    if !options.sentinels.is_empty() {
                        return Err(ConfigError::InvalidOption {
                            option: "sentinels",
                            reason: "a Redis Cluster fails over by itself; name either sentinels or a cluster".to_owned(),
                        });
                    }
                    RedisStore::cluster(self.location.iter().map(|node| node.trim()))
                } else if options.sentinels.is_empty() {
                    RedisStore::builder(self.primary_location())
                } else {
                    self.sentinel_builder()?
                }
                .key_scheme(keys)
                .default_timeout(self.timeout);
                if let Some(max) = options.max_connections.or(pool.max_connections) {
                    builder = builder.max_connections(max);
                }
                if let Some(secs) = pool.socket_connect_timeout {
                    builder = builder.connect_timeout(seconds("socket_connect_timeout", secs)?);
                }
                if let Some(secs) = pool.socket_timeout {
                    builder = builder.command_timeout(seconds("socket_timeout", secs)?);
                }
                if let Some(ca) = &pool.ssl_ca_certs {
                    builder = builder.tls_root_certificate(Pem::file(ca));
                }
                match (&pool.ssl_certfile, &pool.ssl_keyfile) {
                    (Some(certificate), Some(key)) => {
                        builder =
                            builder.tls_client_certificate(Pem::file(certificate), Pem::file(key));
                    }
                    (None, None) => {}
                    _ => {
                        return Err(ConfigError::InvalidOption {
                            option: "connection_pool_kwargs",
                            reason: "`ssl_certfile` and `ssl_keyfile` go together".to_owned(),
                        });
                    }
                }
                if let Some(password) = &options.password {
                    builder = builder.password(password.as_str());
                }
                if let Some(username) = &options.username {
                    builder = builder.username(username.as_str());
                }
                if let Some(db) = options.db {
                    builder = builder.database(db);
                }
                if let Some(secs) = options.socket_connect_timeout {
                    builder = builder.connect_timeout(seconds("socket_connect_timeout", secs)?);
                }
                if let Some(secs) = options.socket_timeout {
                    builder = builder.command_timeout(seconds("socket_timeout", secs)?);
                }
                Ok(AnyStore::Redis(builder.build().await?))
            }
        }
    }
}

/// A password as text; anything else is refused without its value in the message (serde's
/// own message would echo a password written as a number).
fn secret<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
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

impl Stores {
    /// Builds every store of `config`.
    ///
    /// # Errors
    ///
    /// The first store that fails to build, its alias named in the reason.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{Stores, StoresConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config: StoresConfig = toml::from_str(r#"
    ///     [default]
    ///     location = "memory://"
    ///     [verify_codes]
    ///     location = "memory://"
    ///     key_prefix = "codes"
    /// "#)?;
    /// let stores = Stores::from_config(&config).await?;
    /// assert!(stores.get("verify_codes").is_ok());
    /// # Ok(()) }
    /// ```
    pub async fn from_config(config: &StoresConfig) -> Result<Self, ConfigError> {
        let mut builder = Self::builder();
        for (alias, store) in &config.stores {
            let built = store.build().await.map_err(|err| match err {
                ConfigError::InvalidOption { option, reason } => ConfigError::InvalidOption {
                    option,
                    reason: format!("store `{alias}`: {reason}"),
                },
                ConfigError::InvalidLocation {
                    location,
                    reason,
                    source,
                } => ConfigError::InvalidLocation {
                    location,
                    reason: format!("store `{alias}`: {reason}"),
                    source,
                },
                other => other,
            })?;
            builder = builder.store(alias.clone(), built);
        }
        Ok(builder.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn django_caches_dict_translates_line_by_line() {
        let config: StoresConfig = serde_json::from_str(
            r#"{
                "default": {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": "redis://127.0.0.1:6379/1",
                    "KEY_PREFIX": "shop",
                    "VERSION": 2,
                    "TIMEOUT": null,
                    "OPTIONS": {"MAX_CONNECTIONS": 256, "PASSWORD": "pw", "SOCKET_TIMEOUT": 0.5}
                },
                "session": {"location": "memory://", "timeout": 259200}
            }"#,
        )
        .unwrap();
        let default = &config.stores["default"];
        assert_eq!(default.backend().unwrap(), Backend::Redis);
        assert_eq!(default.version, 2);
        assert_eq!(default.timeout, Timeout::Never);
        assert_eq!(default.options.socket_timeout, Some(0.5));
        let session = &config.stores["session"];
        assert_eq!(session.backend().unwrap(), Backend::Memory);
        assert_eq!(
            session.timeout,
            Timeout::After(Duration::from_secs(259_200))
        );
        assert_eq!(session.version, 1);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<StoreConfig>(r#"{"locaton": "redis://x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `locaton`"), "{err}");
        let err =
            serde_json::from_str::<StoreConfig>(r#"{"options": {"max_conns": 1}}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `max_conns`"),
            "{err}"
        );
    }

    #[test]
    fn timeouts_parse_as_django_writes_them() {
        let parse = |text: &str| serde_json::from_str::<Timeout>(text);
        assert_eq!(parse("0").unwrap(), Timeout::After(Duration::ZERO));
        assert_eq!(
            parse("1.5").unwrap(),
            Timeout::After(Duration::from_millis(1500))
        );
        assert_eq!(parse("\"never\"").unwrap(), Timeout::Never);
        assert!(parse("-1").is_err());
        assert!(parse("\"soon\"").is_err());
    }

    /// An IPv6 sentinel written without brackets (redis-py takes it so) is one address, not
    /// `::1:26379` read as a host `:` and the rest.
    #[test]
    fn an_ipv6_sentinel_without_brackets_is_one_address() {
        let config: StoreConfig = serde_json::from_str(
            r#"{"LOCATION": "redis://mymaster/0", "OPTIONS": {"SENTINELS": [["::1", 26379]]}}"#,
        )
        .unwrap();
        let builder = format!("{:?}", config.sentinel_builder().unwrap());
        assert!(builder.contains("[::1]:26379"), "{builder}");
    }

    #[test]
    fn backend_and_location_must_agree() {
        let config = StoreConfig {
            backend: Some("django_redis.cache.RedisCache".into()),
            ..StoreConfig::default()
        };
        assert!(config.backend().is_err());
        let config = StoreConfig {
            backend: Some("django.core.cache.backends.locmem.LocMemCache".into()),
            location: vec!["unique-snowflake".into()],
            ..StoreConfig::default()
        };
        assert_eq!(config.backend().unwrap(), Backend::Memory);
        let config = StoreConfig {
            backend: Some("memcached".into()),
            ..StoreConfig::default()
        };
        assert!(config.backend().is_err());
    }
}
