//! `RedisStoreBuilder`: where the store connects and how, for one server, Sentinel or a cluster.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{KeyScheme, Pem, Timeout};

use super::handle::RedisStore;
use super::near::NearCache;

pub(super) const DEFAULT_MAX_CONNECTIONS: u32 = 16;
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub(super) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

impl RedisStore {
    /// A builder for a store at `location`: `redis://[user][:password@]host[:port][/db]`,
    /// `unix:///path/to/redis.sock[?db=N]` or `redis+unix:///path`.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::RedisStore;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::builder("redis://127.0.0.1:6379").database(2).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(location: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            location: location.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            username: None,
            password: None,
            database: None,
            keys: KeyScheme::default(),
            default_timeout: Timeout::default(),
            tls_root: None,
            tls_client: None,
            sentinel: None,
            cluster: None,
            near: None,
        }
    }

    /// A builder for a store on the master that Redis Sentinel names `service`, asking the
    /// `sentinels` (`host:port`, or `redis://[:password@]host:port` for a sentinel with a
    /// password) which server that is. Each new connection asks again and checks the server's
    /// role, so after a failover the store writes to the promoted replica: connections to the
    /// old master break (it is down, or answers `READONLY` once demoted) and are replaced.
    /// The builder's password, user and database are the master's.
    ///
    /// With TLS certificates given ([`tls_root_certificate`](RedisStoreBuilder::tls_root_certificate),
    /// [`tls_client_certificate`](RedisStoreBuilder::tls_client_certificate)), or sentinels
    /// given as `rediss://host:port`, the master is reached over TLS (the `tls` feature);
    /// `rediss://` sentinels are reached over TLS too, with the same certificates.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::RedisStore;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::sentinel(["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"], "mymaster")
    ///     .password("s3cret")
    ///     .database(1)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn sentinel<T: Into<String>>(
        sentinels: impl IntoIterator<Item = T>,
        service: impl Into<String>,
    ) -> RedisStoreBuilder {
        let service = service.into();
        let mut builder = Self::builder(format!("redis+sentinel://{service}"));
        builder.sentinel = Some(SentinelTopology {
            nodes: sentinels.into_iter().map(Into::into).collect(),
            service,
        });
        builder
    }

    /// A builder for a store on a Redis Cluster, found through `seed_nodes`
    /// (`redis://[:password@]host:port`, or `rediss://` for TLS): any reachable node tells the
    /// client the others and which slots each serves. Every command goes to the node that
    /// serves its key, and follows the slots when a replica is promoted; see "Production
    /// topologies" in the crate docs for what holds on a cluster. The builder's password and
    /// user are the nodes'; a cluster has only database 0, and one connection per node
    /// ([`max_connections`](RedisStoreBuilder::max_connections) does not apply).
    ///
    /// Operations on one key and the scripts run on their key's node, atomic as on one server;
    /// the cache keeps each URL's keys in one slot. Three operations span slots and run as
    /// several steps:
    /// - the `index_*` operations (a user's tokens): a member is added after its key is
    ///   stored and dropped only once its key is gone, and `index_delete_all` deletes the
    ///   members it read, then removes exactly those, so no live member escapes its index;
    /// - [`bump_version`](crate::store::Store::bump_version): `DUMP`, `RESTORE`, `DEL`, as Django's
    ///   `incr_version` does it in three steps;
    /// - [`set_many`](crate::store::Store::set_many): atomic per hash slot.
    ///
    /// A pattern invalidation
    /// ([`CacheInvalidator::invalidate_matching`](crate::cache::CacheInvalidator::invalidate_matching))
    /// runs `SCAN` master by master. When slots move while it runs (a resharding, a
    /// failover), it sweeps again, at most three times in all, and then fails with
    /// [`StoreErrorKind::Connection`](crate::store::StoreErrorKind::Connection) rather than report success while keys that moved past it
    /// may remain.
    ///
    /// A call follows at most five `MOVED` or `ASK` redirects, then fails with
    /// [`StoreErrorKind::Connection`](crate::store::StoreErrorKind::Connection): nodes that disagree on who serves a slot would bounce
    /// it until the timeout. A node that announces an address this client cannot reach
    /// (`cluster-announce-ip`, `-port` or `-hostname`, behind NAT or in a container) fails the
    /// calls sent there at once, with an error that names the address: the store tries a TCP
    /// connection to an address the cluster names and the client holds no connection to, and
    /// remembers a refusal, or a silence as long as the connect timeout, for the connect
    /// timeout.
    ///
    /// A node that stops answering costs its keys one command timeout, not one per call: after
    /// a call for one of its keys timed out, calls for any of its keys fail at once with
    /// [`StoreErrorKind::Timeout`](crate::store::StoreErrorKind::Timeout) until it answers a ping, a moment after it is back; calls
    /// for other nodes go on.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::RedisStore;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])
    ///     .password("s3cret")
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster<T: Into<String>>(seed_nodes: impl IntoIterator<Item = T>) -> RedisStoreBuilder {
        let nodes: Vec<String> = seed_nodes.into_iter().map(Into::into).collect();
        let mut builder = Self::builder(nodes.join(","));
        builder.cluster = Some(nodes);
        builder
    }
}
/// The longest connect or command timeout a store takes: every call's deadline is now plus
/// one of them, and a longer wait is a misconfiguration, not a timeout.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use tower_redis_http::store::RedisStore;
///
/// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
/// let store = RedisStore::builder("redis://cache.internal:6379")
///     .password("s3cret")
///     .database(1)
///     .max_connections(256)
///     .connect_timeout(Duration::from_secs(2))
///     .command_timeout(Duration::from_millis(250))
///     .key_prefix("shop")
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct RedisStoreBuilder {
    pub(super) location: String,
    pub(super) max_connections: u32,
    pub(super) connect_timeout: Duration,
    pub(super) command_timeout: Duration,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) database: Option<i64>,
    pub(super) keys: KeyScheme,
    pub(super) default_timeout: Timeout,
    pub(super) tls_root: Option<Pem>,
    pub(super) tls_client: Option<(Pem, Pem)>,
    pub(super) sentinel: Option<SentinelTopology>,
    /// The seed nodes of a Redis Cluster.
    pub(super) cluster: Option<Vec<String>>,
    pub(super) near: Option<NearCache>,
}

/// The sentinels to ask, and the name of the master they watch.
#[derive(Clone)]
pub(super) struct SentinelTopology {
    pub(super) nodes: Vec<String>,
    pub(super) service: String,
}

impl std::fmt::Debug for SentinelTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTopology")
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|node| redact(node))
                    .collect::<Vec<_>>(),
            )
            .field("service", &self.service)
            .finish()
    }
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("location", &redact(&self.location))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("keys", &self.keys)
            .field("default_timeout", &self.default_timeout)
            .field("tls_root", &self.tls_root)
            .field("tls_client", &self.tls_client)
            .field("sentinel", &self.sentinel)
            .field(
                "cluster",
                &self
                    .cluster
                    .as_ref()
                    .map(|nodes| nodes.iter().map(|node| redact(node)).collect::<Vec<_>>()),
            )
            .field("near", &self.near)
            .finish()
    }
}

impl RedisStoreBuilder {
    /// The most connections the pool opens. Defaults to 16.
    ///
    /// Each connection multiplexes many concurrent commands, so a handful carries a busy
    /// service; a higher bound (Django deployments often set 256) only allows more.
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// How long opening a connection (TCP, TLS, `HELLO`, `SELECT`) may take; bb8 keeps
    /// opening connections in the background within it. A call never waits longer than the
    /// [command timeout](Self::command_timeout), even while a connection is being opened.
    /// Defaults to 1 s.
    ///
    /// At most [`MAX_CALL_TIMEOUT`] (an hour): `build` refuses a longer one.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a store call may take, from getting a connection to the reply, a retry after
    /// a dropped connection included. Defaults to 500 ms.
    ///
    /// At most [`MAX_CALL_TIMEOUT`] (an hour): `build` refuses a longer one.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The ACL user name, when the location names none. Defaults to none.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password, when the location has none (django-redis's `PASSWORD` option). Defaults
    /// to none.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The database number, when the location names none (or names database 0). Defaults to
    /// the location's, else 0. A negative number is refused at build; one the server does not
    /// have (past its `databases` setting, 16 by default) fails every call with
    /// [`StoreErrorKind::Unsupported`](crate::store::StoreErrorKind::Unsupported) and a message naming the database, as the
    /// configuration error it is, not an outage: every layer answers it `503` whatever its
    /// [failure policy](crate::FailurePolicy), so that no rule is switched off by a typo.
    pub fn database(mut self, database: i64) -> Self {
        self.database = Some(database);
        self
    }

    /// The key prefix of the Django layout. Defaults to `""`.
    pub fn key_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.keys = KeyScheme::django(prefix, self.keys.version());
        self
    }

    /// The version of the Django layout. Defaults to 1.
    pub fn version(mut self, version: i64) -> Self {
        self.keys = self.keys.with_version(version);
        self
    }

    /// Any key scheme, replacing prefix and version. Defaults to [`KeyScheme::default`].
    pub fn key_scheme(mut self, keys: KeyScheme) -> Self {
        self.keys = keys;
        self
    }

    /// What [`Expiry::Default`](crate::store::Expiry::Default) means. Defaults to 300 seconds, Django's `TIMEOUT`.
    pub fn default_timeout(mut self, timeout: Timeout) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The certificate authority a `rediss://` server's certificate must chain to, instead of
    /// the system's roots: for a managed Redis with a private CA, or a self-hosted one.
    /// Defaults to the system's roots. Needs the `tls` feature; without it, or with a location
    /// that is not `rediss://`, [`build`](Self::build) says so.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::{Pem, RedisStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::builder("rediss://cache.internal:6380")
    ///     .tls_root_certificate(Pem::file("/etc/redis/ca.pem"))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_root_certificate(mut self, ca: Pem) -> Self {
        self.tls_root = Some(ca);
        self
    }

    /// A client certificate and its private key, for a server that asks for one (mutual TLS,
    /// Redis's `tls-auth-clients yes`). Defaults to none. Needs the `tls` feature.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::{Pem, RedisStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::builder("rediss://cache.internal:6380")
    ///     .tls_root_certificate(Pem::file("/etc/redis/ca.pem"))
    ///     .tls_client_certificate(Pem::file("/etc/redis/client.pem"), Pem::file("/etc/redis/client.key"))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_client_certificate(mut self, certificate: Pem, key: Pem) -> Self {
        self.tls_client = Some((certificate, key));
        self
    }

    /// Keeps hot values in process memory, invalidated by Redis when they change anywhere
    /// (Redis 6+ client tracking): see [`NearCache`] for what uses it and what bounds it. Off
    /// by default. Not on a cluster: [`build`](Self::build) refuses it there.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_redis_http::store::{NearCache, RedisStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tower_redis_http::ConfigError> {
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .near_cache(NearCache::new())
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn near_cache(mut self, near: NearCache) -> Self {
        self.near = Some(near);
        self
    }
}

/// Whether `authority` reads as `host`, `host:port`, `[v6]` or `[v6]:port`, so that it may be
/// shown: anything else may be part of a password.
pub(super) fn is_host_and_port(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => (host, Some(port.strip_prefix(':').unwrap_or("x"))),
            None => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b))
        && (authority.starts_with('[') || !host.contains(':'));
    let port_ok =
        port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// What errors and `Debug` say of a location: for each URL of a comma-separated list,
/// `scheme://host:port/db` built from its parts alone, never the text as written, so that no
/// password (and no part of one: unencoded, it may hold `/`, `@`, `,` or anything else) can
/// reach a log. A URL whose host cannot be read this way is shown as `scheme://<unreadable>`.
pub(crate) fn redact(location: &str) -> String {
    location
        .split(',')
        .map(|url| describe_url(url.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn describe_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // a sentinel written `host:port`
        return if is_host_and_port(url) {
            url.to_owned()
        } else {
            "<not a URL>".to_owned()
        };
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return "<not a URL>".to_owned();
    }
    if scheme.ends_with("unix") {
        // a socket path, and a database among the query's parameters
        let path = rest.rsplit_once('@').map_or(rest, |(_, path)| path);
        let path = path.split(['?', '#']).next().unwrap_or_default();
        return if path.bytes().all(|b| b.is_ascii_graphic()) {
            format!("{scheme}://{path}")
        } else {
            format!("{scheme}://<unreadable>")
        };
    }
    // the user-info ends at the last `@`, whatever it holds
    let after_userinfo = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    let (authority, path) = after_userinfo
        .split_once('/')
        .unwrap_or((after_userinfo, ""));
    if !is_host_and_port(authority) {
        return format!("{scheme}://<unreadable>");
    }
    let db = path.split(['?', '#']).next().unwrap_or_default();
    if !db.is_empty() && db.bytes().all(|b| b.is_ascii_digit()) {
        format!("{scheme}://{authority}/{db}")
    } else {
        format!("{scheme}://{authority}")
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_shows_scheme_host_port_and_database_only() {
        let cases = [
            ("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/1"),
            ("redis://:s3cret@host:6379/0", "redis://host:6379/0"),
            ("redis://user:s3cret@host", "redis://host"),
            ("redis://token@host", "redis://host"),
            ("redis://:p@ss@word@host/2", "redis://host/2"),
            // issue 29, finding 7: unencoded `/`, `?` and `#` in the password
            ("redis://:pa/ss?wo#rd@host:6379/0", "redis://host:6379/0"),
            ("redis://user:a/b@host", "redis://host"),
            ("rediss://us/er:secret@host", "rediss://host"),
            ("redis://:s3cret?@host/1?protocol=resp3", "redis://host/1"),
            ("unix:///tmp/redis.sock?db=2", "unix:///tmp/redis.sock"),
            ("not a url", "<not a URL>"),
            // issue 36, finding 1: a Sentinel master, and every URL of a list
            ("redis://:pw@mymaster/0", "redis://mymaster/0"),
            (
                "redis://:pw1@a:1,redis://:pw2@b:2,redis://:pw3@c:3/0",
                "redis://a:1,redis://b:2,redis://c:3/0",
            ),
            // a password with a comma or a slash and no `@` after it cannot be told apart
            // from the host: shown as unreadable, never in part
            ("redis://:pw,x/y", "redis://<unreadable>,<not a URL>"),
            ("redis://:s3cr3t", "redis://<unreadable>"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }
}
