//! Settings into stores: the location read, the options applied, the store built.

use crate::ConfigError;
use crate::store::{AnyStore, KeyScheme, MemoryStore, Pem, RedisStore, RedisStoreBuilder, Stores};

use super::django::{Backend, PoolArguments, seconds};
use super::options::{PoolArgument, StoreConfig, StoresConfig};

impl StoreConfig {
    /// The location: the first of a list.
    pub(super) fn primary_location(&self) -> &str {
        self.location.first().map_or("", |location| location.trim())
    }

    /// Whether the settings name a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
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
    pub(super) fn sentinel_builder(&self) -> Result<crate::store::RedisStoreBuilder, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidLocation {
            location: crate::store::redis::redact(self.primary_location()),
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

    pub(super) fn backend(&self) -> Result<Backend, ConfigError> {
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
        let keys = self.key_layout(keys)?;
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
            Backend::Redis => Ok(AnyStore::Redis(
                self.redis_builder(keys, &pool)?.build().await?,
            )),
        }
    }

    /// The key scheme of the settings: the layout the options name, with `KEY_PREFIX` and
    /// `VERSION`, refused when it leaves no room for a key.
    fn key_layout(&self, keys: KeyScheme) -> Result<KeyScheme, ConfigError> {
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
        Ok(keys)
    }

    /// A Redis store's builder: one server, Sentinel or a cluster, with the pool arguments
    /// and options applied.
    fn redis_builder(
        &self,
        keys: KeyScheme,
        pool: &PoolArguments,
    ) -> Result<RedisStoreBuilder, ConfigError> {
        let options = &self.options;
        let mut builder = if self.is_cluster() {
            if !options.sentinels.is_empty() {
                return Err(ConfigError::InvalidOption {
                    option: "sentinels",
                    reason:
                        "a Redis Cluster fails over by itself; name either sentinels or a cluster"
                            .to_owned(),
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
                builder = builder.tls_client_certificate(Pem::file(certificate), Pem::file(key));
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
        Ok(builder)
    }
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
    use std::time::Duration;

    use super::*;
    use crate::store::Timeout;

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
