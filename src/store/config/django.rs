//! The django-redis options checked: what this crate does passes, what it cannot do is refused with the reason.

use std::time::Duration;

use crate::ConfigError;
use crate::store::KeyScheme;

use super::options::{PoolArgument, StoreConfig, StoreOptions};

impl StoreConfig {
    /// Refuses one setting given in two places with two values, naming both: django-redis
    /// settles some such pairs one way and this crate did the other, so neither is guessed.
    pub(super) fn no_conflicts(&self, pool: &PoolArguments) -> Result<(), ConfigError> {
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
    pub(super) fn belong_to(&self, backend: Backend) -> Result<(), ConfigError> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    Redis,
    Memory,
}

pub(super) fn seconds(option: &'static str, secs: f64) -> Result<Duration, ConfigError> {
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
pub(super) struct PoolArguments {
    pub(super) max_connections: Option<u32>,
    pub(super) socket_timeout: Option<f64>,
    pub(super) socket_connect_timeout: Option<f64>,
    /// redis-py's TLS files: the CA, and the client certificate and key.
    pub(super) ssl_ca_certs: Option<String>,
    pub(super) ssl_certfile: Option<String>,
    pub(super) ssl_keyfile: Option<String>,
}

impl StoreOptions {
    /// Checks the django-redis options a shared settings file carries: what this crate does
    /// passes, what it cannot do is refused with the reason.
    pub(super) fn django_redis(&self) -> Result<(KeyScheme, PoolArguments), ConfigError> {
        self.check_classes()?;
        self.check_value_format()?;
        Ok((self.key_scheme()?, self.pool_arguments()?))
    }

    /// The client, pool and redis-py classes named, and the sentinel options.
    fn check_classes(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The serializer and compressor: values shared with Django must be plain JSON.
    fn check_value_format(&self) -> Result<(), ConfigError> {
        let refuse = |option, reason: String| Err(ConfigError::InvalidOption { option, reason });
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
        Ok(())
    }

    /// The key layout: Django's `prefix:version:key`, or the raw key.
    fn key_scheme(&self) -> Result<KeyScheme, ConfigError> {
        let refuse = |option, reason: String| Err(ConfigError::InvalidOption { option, reason });
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
        Ok(keys)
    }

    /// The pool arguments of `CONNECTION_POOL_KWARGS` this crate applies; the others it
    /// refuses, naming the ones it takes.
    fn pool_arguments(&self) -> Result<PoolArguments, ConfigError> {
        let refuse = |option, reason: String| Err(ConfigError::InvalidOption { option, reason });
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
        Ok(pool)
    }
}
