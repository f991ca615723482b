//! [`RedisStore`] on a Redis Cluster: the client, how a call survives a failover, and the
//! operations that touch keys in more than one hash slot.
//!
//! # What holds on a cluster
//!
//! Every operation on one key, and every script, runs on the node of its key's slot, atomic as
//! on one server. The cache keeps an entry, its Vary list, its lock and its URL's index under
//! one `{hash tag}`, so its scripts stay single steps. Three operations cannot, since their
//! keys live in other slots by design, and run as several steps instead:
//!
//! - **Token indexes** (`index_add`, `index_members`, `index_delete_all`): a user's index and
//!   the token keys it lists live in different slots (a token is looked up by itself alone).
//!   A token is stored before it is indexed and an index only drops members whose keys are
//!   gone, so no live token is ever missing from its user's index; `index_delete_all` deletes
//!   the members it read, then removes exactly those from the index, so a token issued while
//!   it runs stays listed (and revocable) rather than escaping.
//! - **`bump_version`** moves a value between two versions of a key, two slots: `DUMP`,
//!   `RESTORE`, `DEL`, as Django's own `incr_version` does in three steps; of concurrent moves
//!   one reports the move. A write to the old version in between is lost, as in Django.
//! - **`set_many`** is atomic per hash slot: one `MULTI` per slot, all sent at once.
//!
//! # Failover
//!
//! redis-rs re-sends a command whose connection dropped, which would count a rate-limit hit or
//! take a flag twice. The store turns the client's own retries off and retries itself, by what
//! the error says about the command: refused unrun (`MOVED`, `ASK`, `TRYAGAIN`,
//! `CLUSTERDOWN`, `READONLY`, a refused connection) is sent again once the client has learned
//! the new slot map, whatever the command; a dropped connection is retried only for commands
//! whose second run changes nothing (see [`RedisStore`]'s list). All within the command
//! timeout.
//!
//! A `MOVED` or an `ASK` (a slot in the middle of a migration, the key on the importing node
//! or on none yet) is followed at once: the command is sent to the node it names (after
//! `ASKING` in the same write for an `ASK`), scripts and transactions included; a refusal
//! inside a transaction's `EXECABORT` counts as the plain one. The slot map does not change
//! until the
//! migration ends, so sending the command again to the slot's owner would only meet the same
//! `ASK` until the timeout.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    AggregateOp, MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo,
    SingleNodeRoutingInfo, Slot, SlotAddr,
};
use redis::{RedisError, RetryMethod};

use super::lua::Conn;
use super::redis::{Retry, classify};
use super::{RedisStore, StoreError, StoreErrorKind, Ttl};

/// How long a call refused during a topology change waits before sending again: the client
/// refreshes its slot map in the background meanwhile.
const REROUTE_PAUSE: Duration = Duration::from_millis(25);

/// The cluster client and its connection, shared by every call.
#[derive(Clone)]
pub(super) struct ClusterLinks {
    client: ClusterClient,
    conn: ClusterConnection,
    command_timeout: Duration,
}

impl std::fmt::Debug for ClusterLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLinks").finish_non_exhaustive()
    }
}

impl ClusterLinks {
    /// Links over `client`, whose connections open in the background on first use, so that a
    /// service starts while the cluster is down. The client bounds each request with its
    /// overall response timeout (queueing, reconnects and redirects included), the command
    /// timeout; the nodes' connections get no timer of their own, which would be a second
    /// one per request.
    pub(super) fn new(
        client: ClusterClient,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Self {
        let config = redis::cluster::ClusterConfig::new().set_connection_timeout(connect_timeout);
        let conn = client.get_pending_async_connection_with_config(config);
        Self {
            client,
            conn,
            command_timeout,
        }
    }

    /// Runs `command` on the cluster within `timeout`, sending it again when the cluster
    /// refused it unrun, or when the connection dropped and `retry` allows.
    pub(super) async fn run<T, F, Fut>(
        &self,
        name: &'static str,
        retry: Retry,
        timeout: Duration,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.run_on(&self.conn, name, retry, timeout, command).await
    }

    /// [`run`](Self::run) over `base`: the shared connection, or a durable write's lane.
    pub(super) async fn run_on<T, F, Fut>(
        &self,
        base: &ClusterConnection,
        name: &'static str,
        retry: Retry,
        timeout: Duration,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut resend_if_dropped = retry == Retry::OnDroppedConnection;
        let mut first = true;
        // the node a MOVED or an ASK named, for the next attempt only
        let mut redirect: Option<(SingleNodeRoutingInfo, bool)> = None;
        loop {
            let conn = match redirect.take() {
                Some((node, asking)) => Conn::Redirected {
                    conn: base.clone(),
                    node,
                    asking,
                },
                None => Conn::Cluster(base.clone()),
            };
            let redirected = matches!(conn, Conn::Redirected { .. });
            let attempt = command(conn);
            // the first attempt is bounded by the client's overall response timeout; a second
            // timer per call costs throughput, so only the sends after it arm one
            let result = if first {
                attempt.await
            } else {
                tokio::time::timeout_at(deadline, attempt)
                    .await
                    .map_err(|_| timed_out(name))?
            };
            first = false;
            let err = match result {
                Ok(value) => return Ok(value),
                // a transaction refused as a whole shows why inside its EXECABORT
                Err(err) => super::redis::refusal_inside(err),
            };
            if !redirected && let Some(target) = redirect_target(&err) {
                // ASK: the slot is migrating and the key is on the importing node (or not yet
                // anywhere); the slot map stays as it is until the migration ends, so sending
                // again would meet the same ASK until the timeout. MOVED: the slot moved; a
                // MOVED seen only inside an EXECABORT does not make the client learn the new
                // slot map. Either way the command goes once to the node named, at once (after
                // ASKING for an ASK); a refusal there is handled below.
                tracing::debug!(command = name, error = %err, "Redis Cluster redirected a command; following it");
                redirect = Some(target);
                continue;
            }
            if refused_unrun(&err) {
                if tokio::time::Instant::now() + REROUTE_PAUSE >= deadline {
                    // a slot without a master for longer than the command timeout: the
                    // cluster is failing over, which is the connection's trouble, not the
                    // command's
                    return Err(StoreError::with_source(
                        StoreErrorKind::Connection,
                        format!("Redis Cluster did not take {name} within the command timeout"),
                        err,
                    ));
                }
                tracing::debug!(command = name, error = %err, "Redis Cluster refused a command during a topology change; sending it again");
                tokio::time::sleep(REROUTE_PAUSE).await;
                continue;
            }
            if err.is_connection_dropped() && resend_if_dropped {
                resend_if_dropped = false;
                tracing::debug!(command = name, error = %err, "Redis Cluster connection dropped; retrying");
                continue;
            }
            return Err(classify(name, err));
        }
    }

    /// A connection of its own, for a command that blocks its connection (`WAIT`): the
    /// shared one carries every request's commands.
    pub(super) async fn dedicated(&self) -> Result<ClusterConnection, StoreError> {
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(self.command_timeout)
            .set_response_timeout(self.command_timeout);
        tokio::time::timeout(
            self.command_timeout,
            self.client.get_async_connection_with_config(config),
        )
        .await
        .map_err(|_| timed_out("cluster connection"))?
        .map_err(|err| classify("cluster connection", err))
    }
}

impl ClusterLinks {
    /// `WAIT replicas wait_ms` on every serving master of `lane`, and the fewest replicas any
    /// of them counted: the lane's writes may have gone to any master, and `WAIT` on a master
    /// the lane wrote nothing to answers at once.
    pub(super) async fn wait_on_masters(
        &self,
        lane: &mut ClusterConnection,
        replicas: u64,
        wait_ms: u64,
    ) -> Result<u64, RedisError> {
        let reply = lane
            .route_command(
                redis::cmd("WAIT").arg(replicas).arg(wait_ms).clone(),
                RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::Aggregate(AggregateOp::Min)),
                )),
            )
            .await?;
        redis::from_redis_value(reply).map_err(RedisError::from)
    }
}

impl RedisStore {
    /// The fewest healthy replicas any serving master has (`CLUSTER NODES` on any node).
    pub(super) async fn cluster_fewest_replicas(&self) -> Result<u64, StoreError> {
        let nodes: String = self
            .run_master(
                "CLUSTER NODES",
                Retry::OnDroppedConnection,
                move |conn| async move {
                    let reply = cluster_conn(conn)?
                        .route_command(
                            redis::cmd("CLUSTER").arg("NODES").clone(),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                        )
                        .await?;
                    redis::from_redis_value(reply).map_err(RedisError::from)
                },
            )
            .await?;
        Ok(super::durable::fewest_replicas(&nodes))
    }
}

fn timed_out(name: &'static str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Timeout,
        format!("Redis {name} took longer than the command timeout"),
    )
}

/// Whether the cluster refused the command without running it: a slot that moved or is
/// moving, a node that is a replica now, a cluster without a quorum, or a node that could not
/// be reached at all. Sending it again cannot run it twice.
fn refused_unrun(err: &RedisError) -> bool {
    matches!(
        err.retry_method(),
        RetryMethod::MovedRedirect
            | RetryMethod::AskRedirect
            | RetryMethod::RefreshSlotsAndRetry
            | RetryMethod::WaitAndRetry
            | RetryMethod::ReconnectFromInitialConnections
    ) || err.is_connection_refusal()
}

/// The node a `MOVED` or `ASK` redirection names (`ASK <slot> <host>:<port>`), and whether
/// it was an `ASK` (the command must follow `ASKING`).
fn redirect_target(err: &RedisError) -> Option<(SingleNodeRoutingInfo, bool)> {
    let asking = match err.retry_method() {
        RetryMethod::AskRedirect => true,
        RetryMethod::MovedRedirect => false,
        _ => return None,
    };
    let (address, _slot) = err.redirect_node()?;
    let (host, port) = address.rsplit_once(':')?;
    let node = SingleNodeRoutingInfo::ByAddress {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: port.parse().ok()?,
    };
    Some((node, asking))
}

/// The master that serves `key`'s slot.
fn master_of(key: &str) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )))
}

/// The cluster connection a cluster-only operation needs (those run on cluster links only).
fn cluster_conn(conn: Conn) -> Result<ClusterConnection, RedisError> {
    conn.cluster().ok_or_else(|| {
        RedisError::from((
            redis::ErrorKind::Client,
            "a Redis Cluster operation was sent to a single server",
        ))
    })
}

/// The masters (`host`, `port`) that `CLUSTER NODES` lists as serving, failed ones left out.
fn masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master")
                || flags
                    .iter()
                    .any(|flag| matches!(*flag, "fail" | "fail?" | "handshake" | "noaddr"))
            {
                return None;
            }
            // ip:port@cport[,hostname]
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

impl RedisStore {
    /// [`Store::index_add`](super::Store::index_add) across slots: the member is added,
    /// then members whose keys are gone are dropped.
    pub(super) async fn cluster_index_add(
        &self,
        index: &str,
        member: &str,
    ) -> Result<(), StoreError> {
        self.run(
            "SADD",
            Retry::OnDroppedConnection,
            move |mut conn| async move {
                redis::cmd("SADD")
                    .arg(index)
                    .arg(member)
                    .query_async::<()>(&mut conn)
                    .await
            },
        )
        .await?;
        let members = self.cluster_index_read(index).await?;
        if members.is_empty() {
            return Ok(());
        }
        // one key at a time: a command the client splits by slot and sends to several nodes
        // at once (MGET, a many-key DEL) is not retried part by part by the store, and right
        // after a failover one part can fail or miscount
        let mut gone = Vec::new();
        for member in &members {
            let exists: i64 = self
                .run(
                    "EXISTS",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        redis::cmd("EXISTS")
                            .arg(member)
                            .query_async(&mut conn)
                            .await
                    },
                )
                .await?;
            if exists == 0 {
                gone.push(member);
            }
        }
        self.cluster_index_forget(index, &gone).await
    }

    /// [`Store::index_members`](super::Store::index_members) across slots.
    pub(super) async fn cluster_index_members(
        &self,
        index: &str,
    ) -> Result<Vec<(String, Ttl)>, StoreError> {
        let members = self.cluster_index_read(index).await?;
        let mut live = Vec::with_capacity(members.len());
        let mut gone = Vec::new();
        for member in &members {
            let ms: i64 = self
                .run(
                    "PTTL",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        redis::cmd("PTTL").arg(member).query_async(&mut conn).await
                    },
                )
                .await?;
            match ms {
                -2 => gone.push(member),
                -1 => live.push((member.clone(), Ttl::Persistent)),
                ms => live.push((
                    member.clone(),
                    Ttl::Expires(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
                )),
            }
        }
        self.cluster_index_forget(index, &gone).await?;
        Ok(live)
    }

    /// [`Store::index_delete_all`](super::Store::index_delete_all) across slots: deletes the
    /// members read, then removes exactly those from the index, so that a member added
    /// meanwhile stays listed.
    pub(super) async fn cluster_index_delete_all(&self, index: &str) -> Result<u64, StoreError> {
        let members = self.cluster_index_read(index).await?;
        if members.is_empty() {
            return Ok(0);
        }
        let mut deleted = 0;
        for member in &members {
            let removed: u64 = self
                .run(
                    "DEL",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        redis::cmd("DEL").arg(member).query_async(&mut conn).await
                    },
                )
                .await?;
            deleted += removed;
        }
        let all: Vec<&String> = members.iter().collect();
        self.cluster_index_forget(index, &all).await?;
        Ok(deleted)
    }

    async fn cluster_index_read(&self, index: &str) -> Result<Vec<String>, StoreError> {
        self.run(
            "SMEMBERS",
            Retry::OnDroppedConnection,
            move |mut conn| async move {
                redis::cmd("SMEMBERS")
                    .arg(index)
                    .query_async(&mut conn)
                    .await
            },
        )
        .await
    }

    async fn cluster_index_forget(&self, index: &str, gone: &[&String]) -> Result<(), StoreError> {
        if gone.is_empty() {
            return Ok(());
        }
        self.run(
            "SREM",
            Retry::OnDroppedConnection,
            move |mut conn| async move {
                redis::cmd("SREM")
                    .arg(index)
                    .arg(gone)
                    .query_async::<()>(&mut conn)
                    .await
            },
        )
        .await
    }

    /// [`Store::bump_version`](super::Store::bump_version) between two slots.
    pub(super) async fn cluster_move(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let (dump, ttl_ms): (Option<Vec<u8>>, i64) = self
            .run(
                "DUMP",
                Retry::OnDroppedConnection,
                move |mut conn| async move {
                    redis::pipe()
                        .cmd("DUMP")
                        .arg(from)
                        .cmd("PTTL")
                        .arg(from)
                        .query_async(&mut conn)
                        .await
                },
            )
            .await?;
        let Some(dump) = dump else {
            return Ok(false);
        };
        // RESTORE's 0 keeps no expiry; an expiry that ran out meanwhile stays short
        let ttl_ms = u64::try_from(ttl_ms).map_or(0, |ms| ms.max(1));
        let dump = &dump[..];
        self.run(
            "RESTORE",
            Retry::OnDroppedConnection,
            move |mut conn| async move {
                redis::cmd("RESTORE")
                    .arg(to)
                    .arg(ttl_ms)
                    .arg(dump)
                    .arg("REPLACE")
                    .query_async::<()>(&mut conn)
                    .await
            },
        )
        .await?;
        // of concurrent moves, the one whose DEL removed the old key moved it; the others
        // restored the same value
        let removed: i64 = self
            .run("DEL", Retry::Never, move |mut conn| async move {
                redis::cmd("DEL").arg(from).query_async(&mut conn).await
            })
            .await?;
        Ok(removed == 1)
    }

    /// [`Store::set_many`](super::Store::set_many): one `MULTI` per hash slot.
    pub(super) async fn cluster_set_many(
        &self,
        writes: Vec<(String, Bytes, Option<Option<u64>>)>,
    ) -> Result<(), StoreError> {
        let mut slots: Vec<(Slot, redis::Pipeline)> = Vec::new();
        for (key, value, expiry) in &writes {
            let slot = Slot::for_key(key);
            let pipe = match slots.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, pipe)) => pipe,
                None => {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    slots.push((slot, pipe));
                    &mut slots.last_mut().expect("just pushed").1
                }
            };
            match expiry {
                None => {
                    pipe.cmd("DEL").arg(key).ignore();
                }
                Some(ms) => {
                    let cmd = pipe.cmd("SET").arg(key).arg(&value[..]);
                    if let Some(ms) = ms {
                        cmd.arg("PX").arg(*ms);
                    }
                    cmd.ignore();
                }
            }
        }
        for (_, pipe) in &slots {
            self.run(
                "MULTI SET",
                Retry::OnDroppedConnection,
                move |mut conn| async move { pipe.query_async::<()>(&mut conn).await },
            )
            .await?;
        }
        Ok(())
    }

    /// [`Backend::delete_matching`](super::Backend::delete_matching) on every master.
    pub(super) async fn cluster_delete_matching(&self, pattern: &str) -> Result<u64, StoreError> {
        let nodes: String = self
            .run(
                "CLUSTER NODES",
                Retry::OnDroppedConnection,
                |mut conn| async move {
                    redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query_async(&mut conn)
                        .await
                },
            )
            .await?;
        let mut deleted = 0;
        for (host, port) in masters(&nodes) {
            let mut cursor: u64 = 0;
            loop {
                let host = host.as_str();
                let (next, keys): (u64, Vec<String>) = self
                    .run("SCAN", Retry::OnDroppedConnection, move |conn| async move {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000);
                        let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.to_owned(),
                            port,
                        });
                        let reply = cluster_conn(conn)?.route_command(scan, node).await?;
                        redis::from_redis_value(reply).map_err(RedisError::from)
                    })
                    .await?;
                deleted += self.cluster_unlink(keys).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }

    /// Unlinks `keys`, one `UNLINK` per hash slot (a cluster refuses one across slots, and the
    /// store retries one slot's command as a whole).
    async fn cluster_unlink(&self, keys: Vec<String>) -> Result<u64, StoreError> {
        let mut slots: std::collections::HashMap<Slot, Vec<String>> =
            std::collections::HashMap::new();
        for key in keys {
            slots.entry(Slot::for_key(&key)).or_default().push(key);
        }
        let mut unlinked = 0;
        for same_slot in slots.values() {
            let removed: u64 = self
                .run(
                    "UNLINK",
                    Retry::OnDroppedConnection,
                    move |mut conn| async move {
                        redis::cmd("UNLINK")
                            .arg(same_slot)
                            .query_async(&mut conn)
                            .await
                    },
                )
                .await?;
            unlinked += removed;
        }
        Ok(unlinked)
    }

    /// The replicas that serve `key`'s master, and a bump acknowledged by them, on a
    /// connection of its own (`WAIT` blocks its connection).
    pub(super) async fn cluster_bump_generation(
        &self,
        links: &ClusterLinks,
        key: &str,
        wait_ms: u64,
    ) -> Result<(i64, u64, u64), StoreError> {
        let info: String = self
            .run(
                "INFO replication",
                Retry::OnDroppedConnection,
                move |conn| async move {
                    let reply = cluster_conn(conn)?
                        .route_command(
                            redis::cmd("INFO").arg("replication").clone(),
                            master_of(key),
                        )
                        .await?;
                    redis::from_redis_value(reply).map_err(RedisError::from)
                },
            )
            .await?;
        let replicas = super::redis::connected_replicas(&info);
        let bump = async {
            let mut conn = links.dedicated().await?;
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(key).arg(0).arg("NX").ignore();
            pipe.cmd("INCR").arg(key);
            pipe.cmd("WAIT").arg(replicas).arg(wait_ms);
            pipe.query_async::<(i64, u64)>(&mut conn)
                .await
                .map_err(|err| classify("generation bump", err))
        };
        let (generation, acknowledged) = tokio::time::timeout(self.command_timeout, bump)
            .await
            .map_err(|_| timed_out("generation bump"))??;
        Ok((generation, acknowledged, replicas))
    }
}

#[cfg(test)]
mod tests {
    use super::masters;

    #[test]
    fn masters_are_the_serving_masters_of_cluster_nodes() {
        let nodes = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,,tls-port=0 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 1426238316232 0 3 disconnected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001,host.example myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(
            masters(nodes),
            [
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30001)
            ]
        );
    }
}
