//! Building the store: the pool, TLS, Sentinel and cluster clients, and the near cache's connection.

use std::sync::{Arc, RwLock};

use bb8_redis::RedisConnectionManager;
use redis::{ConnectionInfo, IntoConnectionInfo, RedisError};

use crate::ConfigError;
#[cfg(feature = "tls")]
use crate::store::Pem;
use crate::store::durable::Durability;

use super::builder::{MAX_CALL_TIMEOUT, RedisStoreBuilder, SentinelTopology, redact};
use super::handle::RedisStore;
use super::near::{EPOCH_KEY, Near, NearCache, TrackingConnector, keep_tracking, resp3_client};
use super::pool::{Connector, Reachability, ServerLinks, TrackedManager};
use super::transport::{Links, Transport};

impl RedisStoreBuilder {
    /// The store. Connections open on first use, so a service starts while Redis is down and
    /// its layers apply their failure policy until Redis is back; [`RedisStore::ping`] checks
    /// readiness. Must be called within a Tokio runtime (the pool spawns its reaper there).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidLocation`] for a location that does not parse (a `rediss://`
    /// location needs TLS, which this build lacks), [`ConfigError::InvalidOption`] for a zero
    /// pool size or timeout.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::{ConfigError, store::RedisStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = RedisStore::builder("http://127.0.0.1").build().await.unwrap_err();
    /// assert!(matches!(err, ConfigError::InvalidLocation { .. }));
    /// # }
    /// ```
    pub async fn build(self) -> Result<RedisStore, ConfigError> {
        self.check()?;
        let transport = match &self.cluster {
            Some(nodes) => Transport {
                links: Links::Cluster(Arc::new(self.cluster_links(nodes)?)),
                outage: Arc::default(),
                connect_timeout: self.connect_timeout,
                command_timeout: self.command_timeout,
            },
            None => Transport {
                links: Links::Server(self.server_links().await?),
                outage: Arc::default(),
                connect_timeout: self.connect_timeout,
                command_timeout: self.command_timeout,
            },
        };
        let near = match self.cluster {
            Some(_) => None,
            None => self.start_near_cache()?,
        };
        Ok(RedisStore {
            transport,
            keys: self.keys,
            default_timeout: self.default_timeout,
            near,
            lane: Arc::default(),
            durability: Durability::Master,
        })
    }

    /// The settings that no connection needs to refuse: a database number, a pool size, the
    /// timeouts, and a near cache where one can work.
    fn check(&self) -> Result<(), ConfigError> {
        if let Some(database) = self.database
            && !(0..=i64::from(i32::MAX)).contains(&database)
        {
            return Err(ConfigError::InvalidOption {
                option: "database",
                reason: format!("{database} is not a database number (0 or more)"),
            });
        }
        if self.max_connections == 0 {
            return Err(ConfigError::InvalidOption {
                option: "max_connections",
                reason: "the pool needs at least one connection".to_owned(),
            });
        }
        for (option, value) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::InvalidOption {
                    option,
                    reason: "must be longer than zero".to_owned(),
                });
            }
            if value > MAX_CALL_TIMEOUT {
                return Err(ConfigError::InvalidOption {
                    option,
                    reason: format!(
                        "{value:?} is past the bound of {MAX_CALL_TIMEOUT:?}: a call that may wait \
                         longer holds every request behind it"
                    ),
                });
            }
        }
        if let Some(problem) = self.near.as_ref().and_then(NearCache::problem) {
            return Err(ConfigError::InvalidOption {
                option: "near_cache",
                reason: problem.to_owned(),
            });
        }
        if self.cluster.is_some() && self.near.is_some() {
            return Err(ConfigError::InvalidOption {
                option: "near_cache",
                reason: "a near cache needs one server or Sentinel: on a cluster each node \
                         would need its own tracking connection, which this store does not \
                         keep"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// One server's pool, reached directly or through Sentinel.
    async fn server_links(&self) -> Result<ServerLinks, ConfigError> {
        // one server's connection settings, read once for the pool and its database
        let (inner, database) = match &self.sentinel {
            None => {
                let info = self.direct_info()?;
                let database = info.redis_settings().db();
                let manager = RedisConnectionManager::new(info).map_err(|err| {
                    self.invalid_location("rejected by the Redis client", Some(err))
                })?;
                (Connector::Direct(manager), database)
            }
            Some(sentinel) => (
                Connector::Sentinel(tokio::sync::Mutex::new(self.sentinel_client(sentinel)?)),
                self.settings(redis::RedisConnectionInfo::default()).db(),
            ),
        };
        let reachability = Arc::new(Reachability::selecting(database));
        let manager = TrackedManager {
            inner,
            command_timeout: self.command_timeout,
            reachability: Arc::clone(&reachability),
        };
        let pool = bb8::Pool::builder()
            .max_size(self.max_connections)
            .test_on_check_out(false)
            .connection_timeout(self.connect_timeout)
            .build(manager)
            .await
            .map_err(|err| self.invalid_location("the pool could not start", Some(err)))?;
        Ok(ServerLinks {
            pool,
            lease: Arc::new(RwLock::new(None)),
            reachability,
            stall: Arc::default(),
        })
    }

    /// The near cache, with the task that keeps its tracking connection, when one is asked for.
    fn start_near_cache(&self) -> Result<Option<Arc<Near>>, ConfigError> {
        let Some(settings) = self.near else {
            return Ok(None);
        };
        let connector = match &self.sentinel {
            None => {
                TrackingConnector::Direct(resp3_client(self.direct_info()?).map_err(|err| {
                    self.invalid_location("rejected by the Redis client", Some(err))
                })?)
            }
            Some(sentinel) => TrackingConnector::Sentinel(tokio::sync::Mutex::new(
                self.sentinel_client(sentinel)?,
            )),
        };
        // the key whose value tells the heartbeat the database is still the one read
        let epoch_key = self
            .keys
            .make(EPOCH_KEY)
            .map_err(|err| ConfigError::InvalidOption {
                option: "key_prefix",
                reason: err.to_string(),
            })?;
        let near = Arc::new(Near::new(settings, epoch_key));
        tokio::spawn(keep_tracking(
            Arc::downgrade(&near),
            connector,
            self.connect_timeout,
            self.command_timeout,
        ));
        Ok(Some(near))
    }

    pub(super) fn invalid_location(&self, reason: &str, source: Option<RedisError>) -> ConfigError {
        ConfigError::InvalidLocation {
            location: redact(&self.location),
            reason: reason.to_owned(),
            source: source.map(|err| Box::new(err) as Box<dyn std::error::Error + Send + Sync>),
        }
    }

    /// The database, user and password of the builder, where the location names none.
    pub(super) fn settings(
        &self,
        mut settings: redis::RedisConnectionInfo,
    ) -> redis::RedisConnectionInfo {
        if let (None, Some(password)) = (settings.password(), &self.password) {
            settings = settings.set_password(password);
        }
        if let (None, Some(username)) = (settings.username(), &self.username) {
            settings = settings.set_username(username);
        }
        if let (0, Some(database)) = (settings.db(), self.database) {
            settings = settings.set_db(database);
        }
        settings
    }

    /// Where connections straight to the location go, with the builder's settings.
    pub(super) fn direct_info(&self) -> Result<ConnectionInfo, ConfigError> {
        if !cfg!(feature = "tls") && self.location.trim_start().starts_with("rediss://") {
            return Err(self.invalid_location("`rediss://` needs this crate's `tls` feature", None));
        }
        let info = self
            .location
            .as_str()
            .into_connection_info()
            .map_err(|err| {
                self.invalid_location("not a Redis URL this build can use", Some(err))
            })?;
        let settings = self.settings(info.redis_settings().clone());
        self.with_tls_certificates(info.set_redis_settings(settings))
    }

    /// Links to the cluster that `nodes` belong to.
    pub(super) fn cluster_links(
        &self,
        nodes: &[String],
    ) -> Result<super::cluster::ClusterLinks, ConfigError> {
        if nodes.is_empty() {
            return Err(ConfigError::InvalidOption {
                option: "cluster",
                reason: "name at least one seed node".to_owned(),
            });
        }
        if self.database.is_some_and(|db| db != 0) {
            return Err(ConfigError::InvalidOption {
                option: "database",
                reason: "a Redis Cluster has only database 0".to_owned(),
            });
        }
        let mut infos = Vec::with_capacity(nodes.len());
        for node in nodes {
            let node = if node.contains("://") {
                node.clone()
            } else {
                format!("redis://{node}")
            };
            if !cfg!(feature = "tls") && node.trim_start().starts_with("rediss://") {
                return Err(
                    self.invalid_location("`rediss://` needs this crate's `tls` feature", None)
                );
            }
            let info = node.as_str().into_connection_info().map_err(|err| {
                self.invalid_location("not a Redis URL this build can use", Some(err))
            })?;
            let settings = self.settings(info.redis_settings().clone());
            infos.push(info.set_redis_settings(settings));
        }
        // a retry the client makes by itself may send a rate-limit hit twice: the store
        // retries instead, knowing which commands may run twice
        let mut client = redis::cluster::ClusterClient::builder(infos)
            .retries(0)
            .overall_response_timeout(Some(self.command_timeout));
        if let Some(password) = &self.password {
            client = client.password(password);
        }
        if let Some(username) = &self.username {
            client = client.username(username);
        }
        client = self.with_cluster_certificates(client)?;
        let client = client
            .build()
            .map_err(|err| self.invalid_location("rejected by the Redis client", Some(err)))?;
        Ok(super::cluster::ClusterLinks::new(
            client,
            self.connect_timeout,
            self.command_timeout,
        ))
    }

    /// A client that asks `sentinel`'s nodes for its service's master.
    pub(super) fn sentinel_client(
        &self,
        sentinel: &SentinelTopology,
    ) -> Result<redis::sentinel::SentinelClient, ConfigError> {
        if sentinel.nodes.is_empty() {
            return Err(ConfigError::InvalidOption {
                option: "sentinels",
                reason: "name at least one sentinel".to_owned(),
            });
        }
        let nodes: Vec<String> = sentinel
            .nodes
            .iter()
            .map(|node| {
                if node.contains("://") {
                    node.clone()
                } else {
                    format!("redis://{node}")
                }
            })
            .collect();
        let tls_sentinels = nodes
            .iter()
            .any(|node| node.trim_start().starts_with("rediss://"));
        if tls_sentinels || self.tls_root.is_some() || self.tls_client.is_some() {
            #[cfg(not(feature = "tls"))]
            return Err(self.invalid_location(
                "TLS through Sentinel needs this crate's `tls` feature",
                None,
            ));
            #[cfg(feature = "tls")]
            return self.sentinel_client_over_tls(&nodes, &sentinel.service, tls_sentinels);
        }
        let master = redis::sentinel::SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(self.settings(redis::RedisConnectionInfo::default()));
        redis::sentinel::SentinelClient::build(
            nodes,
            sentinel.service.clone(),
            Some(master),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|err| {
            self.invalid_location("not sentinel addresses this build can use", Some(err))
        })
    }

    /// A sentinel client that reaches the master over TLS (with the configured certificates,
    /// else the system's roots), and the sentinels over TLS too when they are `rediss://`.
    #[cfg(feature = "tls")]
    pub(super) fn sentinel_client_over_tls(
        &self,
        nodes: &[String],
        service: &str,
        tls_sentinels: bool,
    ) -> Result<redis::sentinel::SentinelClient, ConfigError> {
        use redis::TlsMode;
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};

        let refused =
            |err| self.invalid_location("not sentinel addresses this build can use", Some(err));
        let mut addresses = Vec::with_capacity(nodes.len());
        let mut sentinel_auth = None;
        for node in nodes {
            let info = node.as_str().into_connection_info().map_err(refused)?;
            let settings = info.redis_settings();
            if let Some(password) = settings.password() {
                sentinel_auth = Some((settings.username().map(str::to_owned), password.to_owned()));
            }
            addresses.push(info.addr().clone());
        }
        let mut client = SentinelClientBuilder::new(addresses, service, SentinelServerType::Master)
            .map_err(refused)?
            .set_client_to_redis_tls_mode(TlsMode::Secure);
        let master = self.settings(redis::RedisConnectionInfo::default());
        if let Some(password) = master.password() {
            client = client.set_client_to_redis_password(password);
        }
        if let Some(username) = master.username() {
            client = client.set_client_to_redis_username(username);
        }
        if master.db() != 0 {
            client = client.set_client_to_redis_db(master.db());
        }
        if tls_sentinels {
            client = client.set_client_to_sentinel_tls_mode(TlsMode::Secure);
        }
        if let Some((username, password)) = sentinel_auth {
            client = client.set_client_to_sentinel_password(password);
            if let Some(username) = username {
                client = client.set_client_to_sentinel_username(username);
            }
        }
        if self.tls_root.is_some() || self.tls_client.is_some() {
            let certificates = self.tls_certificates()?;
            if tls_sentinels {
                client = client.set_client_to_sentinel_certificates(certificates.clone());
            }
            client = client.set_client_to_redis_certificates(certificates);
        } else {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        client.build().map_err(refused)
    }

    /// `info` with the configured certificates, read now (a missing file is a configuration
    /// error, found where the store is built).
    pub(super) fn with_tls_certificates(
        &self,
        info: ConnectionInfo,
    ) -> Result<ConnectionInfo, ConfigError> {
        if self.tls_root.is_none() && self.tls_client.is_none() {
            return Ok(info);
        }
        #[cfg(not(feature = "tls"))]
        return Err(tls_needs_feature());
        #[cfg(feature = "tls")]
        {
            if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                return Err(self.certificates_without_tls());
            }
            let client = redis::Client::build_with_tls(info, self.tls_certificates()?)
                .map_err(|err| self.certificates_refused(err))?;
            Ok(client.get_connection_info().clone())
        }
    }

    /// `client` with the configured certificates, for `rediss://` seed nodes.
    pub(super) fn with_cluster_certificates(
        &self,
        client: redis::cluster::ClusterClientBuilder,
    ) -> Result<redis::cluster::ClusterClientBuilder, ConfigError> {
        if self.tls_root.is_none() && self.tls_client.is_none() {
            return Ok(client);
        }
        #[cfg(not(feature = "tls"))]
        return Err(tls_needs_feature());
        #[cfg(feature = "tls")]
        {
            let all_tls = self
                .cluster
                .iter()
                .flatten()
                .all(|node| node.trim_start().starts_with("rediss://"));
            if !all_tls {
                return Err(self.certificates_without_tls());
            }
            Ok(client.certs(self.tls_certificates()?))
        }
    }

    #[cfg(feature = "tls")]
    pub(super) fn certificates_without_tls(&self) -> ConfigError {
        ConfigError::InvalidOption {
            option: "tls_root_certificate",
            reason: format!(
                "TLS certificates were given for `{}`, which is not a `rediss://` location",
                redact(&self.location)
            ),
        }
    }

    #[cfg(feature = "tls")]
    pub(super) fn certificates_refused(&self, err: RedisError) -> ConfigError {
        ConfigError::InvalidLocation {
            location: redact(&self.location),
            reason: "its TLS certificates were refused".to_owned(),
            source: Some(Box::new(err)),
        }
    }

    /// The configured certificates, read and checked now.
    #[cfg(feature = "tls")]
    pub(super) fn tls_certificates(&self) -> Result<redis::TlsCertificates, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        // the client takes PEM without a certificate in it and fails every handshake
        // later: what the PEM holds is checked here, where the mistake is made
        let certificates = |pem: &Pem, option| {
            let bytes = pem.read(option)?;
            let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
            match parsed {
                Ok(found) if !found.is_empty() => Ok(bytes),
                _ => Err(ConfigError::InvalidOption {
                    option,
                    reason: format!("{pem:?} holds no PEM certificate"),
                }),
            }
        };
        let root_cert = self
            .tls_root
            .as_ref()
            .map(|ca| certificates(ca, "tls_root_certificate"))
            .transpose()?;
        let client_tls = match &self.tls_client {
            Some((certificate, key)) => {
                let client_key = key.read("tls_client_certificate")?;
                if PrivateKeyDer::from_pem_slice(&client_key).is_err() {
                    return Err(ConfigError::InvalidOption {
                        option: "tls_client_certificate",
                        reason: format!("{key:?} holds no PEM private key"),
                    });
                }
                Some(redis::ClientTlsConfig {
                    client_cert: certificates(certificate, "tls_client_certificate")?,
                    client_key,
                })
            }
            None => None,
        };
        // rustls picks its process-wide provider; an application that has not installed
        // one (or links two) gets ring, which this feature brings
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

#[cfg(not(feature = "tls"))]
pub(super) fn tls_needs_feature() -> ConfigError {
    ConfigError::InvalidOption {
        option: "tls_root_certificate",
        reason: "TLS certificates need this crate's `tls` feature".to_owned(),
    }
}
