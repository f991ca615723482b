//! Writes that wait for a replica (`WAIT`), and rate-limit hits given back when none acknowledged them.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{FromRedisValue, RedisError};

use crate::store::durable::{Durability, LaneConn};
use crate::store::{RatePolicy, StoreError, StoreErrorKind};

use super::classify::{
    Retry, breaks_connection, classify, connected_replicas, is_demoted, refusal_inside,
    unexpected_reply,
};
use super::cluster::ClusterLinks;
use super::cluster::cluster_conn;
use super::handle::RedisStore;
use super::lua::Conn;
use super::pool::ServerLinks;
use super::request::Request;
use super::transport::Links;

/// How long an unreplicated hit is tried to be given back while the master does not answer,
/// at most (a hit that resets sooner is not worth giving back past its reset).
pub(super) const GIVE_BACK_FOR: Duration = Duration::from_secs(60);

/// What a call that may wait for a replica found: its value, and whether the writes it made
/// reached a replica (or needed not).
pub(super) struct Replicated<T> {
    pub(super) value: T,
    pub(super) acknowledged: Acknowledged,
}

/// Whether a write reached a replica.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Acknowledged {
    /// A replica has it, or none was needed.
    Yes,
    /// The master answered the wait: no replica had it in time.
    Short,
    /// The master did not answer the wait (stalled, or the connection broke): whether a
    /// replica has the write is unknown.
    NoAnswer,
}

impl<T> Replicated<T> {
    pub(super) fn done(value: T) -> Self {
        Self {
            value,
            acknowledged: Acknowledged::Yes,
        }
    }

    pub(super) fn value_if_acknowledged(self, name: &'static str) -> Result<T, StoreError> {
        match self.acknowledged {
            Acknowledged::Yes => Ok(self.value),
            Acknowledged::Short => Err(not_replicated(name)),
            Acknowledged::NoAnswer => Err(wait_unanswered(name)),
        }
    }
}

pub(super) fn wait_unanswered(name: &'static str) -> StoreError {
    crate::observe::store_error(name, StoreErrorKind::Timeout.label());
    StoreError::new(
        StoreErrorKind::Timeout,
        format!(
            "Redis {name}: the master did not answer the wait for a replica within the command timeout"
        ),
    )
}

pub(super) fn not_replicated(name: &'static str) -> StoreError {
    crate::observe::store_error(name, StoreErrorKind::NotReplicated.label());
    StoreError::new(
        StoreErrorKind::NotReplicated,
        format!(
            "Redis {name}: no replica acknowledged the write within the command timeout; a failover now could lose it"
        ),
    )
}

/// Writes that wait for a replica: see [`Durability`].
impl RedisStore {
    /// Sends `command` over the [transport](super::transport::Transport::send), within its deadline and retry
    /// rule.
    ///
    /// On a handle made [durable](Self::with_durability), the call goes over the store's
    /// lane and waits for a replica (see [`run_replicated`](Self::run_replicated)).
    pub(super) async fn run<T, F, Fut>(
        &self,
        name: &'static str,
        retry: Retry,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if self.durability.waits() {
            // boxed: rare, and every store call's future would otherwise carry it inline
            let replicated =
                Box::pin(self.run_replicated(name, retry, self.durability, command, |_| true))
                    .await?;
            return replicated.value_if_acknowledged(name);
        }
        self.transport.send(name, retry, command).await
    }

    /// [`run`](Self::run) for a request built once and sent as it is on every attempt: the
    /// form every command takes unless its routing is special.
    pub(super) async fn call<T: FromRedisValue>(
        &self,
        name: &'static str,
        retry: Retry,
        request: impl Into<Request>,
    ) -> Result<T, StoreError> {
        let request = request.into();
        self.run(name, retry, |conn| request.send(conn)).await
    }

    /// How many replicas a write under `durability` waits for: `None` when the master's
    /// acknowledgement is enough (asked for, or no replica to wait for).
    ///
    /// On a cluster the count is asked of the master of `slot` (the write's), so that a
    /// stalled master elsewhere costs the write nothing; of any node without one.
    pub(super) async fn replicas_to_wait_for(
        &self,
        durability: Durability,
        slot: Option<u16>,
    ) -> Result<Option<u64>, StoreError> {
        if !durability.waits() {
            return Ok(None);
        }
        let replicas = match self.lane.known_replicas() {
            Some(replicas) => replicas,
            None => {
                let replicas = match &self.transport.links {
                    Links::Server(_) => {
                        let info = Request::from(redis::cmd("INFO").arg("replication"));
                        let info: String = self
                            .transport
                            .send("INFO replication", Retry::OnDroppedConnection, |conn| {
                                info.send(conn)
                            })
                            .await?;
                        connected_replicas(&info)
                    }
                    Links::Cluster(_) => self.cluster_fewest_replicas(slot).await?,
                };
                self.lane.set_replicas(replicas);
                replicas
            }
        };
        match (durability, replicas) {
            (_, 1..) => Ok(Some(1)),
            (Durability::Replica, _) => {
                crate::observe::store_error("durable write", StoreErrorKind::NotReplicated.label());
                Err(StoreError::new(
                    StoreErrorKind::NotReplicated,
                    "Redis has no replica connected to acknowledge the write; it was not made",
                ))
            }
            _ => Ok(None),
        }
    }

    /// Runs `command` over the store's lane and, when `wrote` says its reply changed
    /// something, waits (`WAIT`) on the same connection for a replica to have it, all within
    /// the command timeout. Where `durability` needs no replica, an ordinary call.
    pub(super) async fn run_replicated<T, F, Fut>(
        &self,
        name: &'static str,
        retry: Retry,
        durability: Durability,
        command: F,
        wrote: impl Fn(&T) -> bool,
    ) -> Result<Replicated<T>, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let deadline = tokio::time::Instant::now() + self.transport.command_timeout;
        // the write's slot on a cluster: its master alone is asked, for the count and the wait
        let slot = match &self.transport.links {
            Links::Cluster(_) => super::cluster::dry_run_slot(&command).await,
            Links::Server(_) => None,
        };
        let Some(replicas) = self.replicas_to_wait_for(durability, slot).await? else {
            let value = self.transport.send(name, retry, command).await?;
            return Ok(Replicated::done(value));
        };
        let result = match &self.transport.links {
            Links::Server(links) => {
                if links.stall.stalled.load(Ordering::Relaxed) {
                    return Err(StoreError::new(
                        StoreErrorKind::Timeout,
                        format!("Redis {name} took longer than the command timeout"),
                    ));
                }
                self.run_on_lane_server(links, name, retry, deadline, &command)
                    .await
            }
            Links::Cluster(links) => {
                self.run_on_lane_cluster(links, name, retry, deadline, &command)
                    .await
            }
        };
        let (value, lane) = result.inspect_err(|_| self.lane.reset())?;
        if !wrote(&value) {
            return Ok(Replicated::done(value));
        }
        // the wait leaves room within the deadline for the reply
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait_ms = u64::try_from(left.as_millis() * 3 / 4)
            .unwrap_or(u64::MAX)
            .max(1);
        let wait = async {
            match (lane, &self.transport.links) {
                (LaneConn::Server(mut conn), _) => {
                    redis::cmd("WAIT")
                        .arg(replicas)
                        .arg(wait_ms)
                        .query_async::<u64>(&mut conn)
                        .await
                }
                (LaneConn::Cluster(mut conn), Links::Cluster(links)) => {
                    links.wait_after(&mut conn, slot, replicas, wait_ms).await
                }
                (LaneConn::Cluster(_), Links::Server(_)) => Ok(0),
            }
        };
        let acknowledged = match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(count)) if count >= replicas => Acknowledged::Yes,
            Ok(Ok(_)) => Acknowledged::Short,
            // no answer, or a broken connection: the write may or may not have reached a
            // replica, which is not the promise
            _ => {
                // a server lane is one connection, blocked while its WAIT lasts; a cluster
                // lane holds one per node and reconnects by itself, and opening another would
                // wait on a stalled node again
                if matches!(self.transport.links, Links::Server(_)) {
                    self.lane.reset();
                }
                Acknowledged::NoAnswer
            }
        };
        if acknowledged == Acknowledged::Short && durability == Durability::ReplicaIfAny {
            // the count may be a second old: a failover can have left this master with no
            // replica, and then the master alone is all that was asked for. Asked only of a
            // master that answers: one that did not would cost a second timeout.
            self.lane.forget_replicas();
            if let Ok(None) = self.replicas_to_wait_for(durability, slot).await {
                return Ok(Replicated::done(value));
            }
        }
        if acknowledged != Acknowledged::Yes {
            tracing::warn!(
                command = name,
                ?acknowledged,
                "a write that must reach a replica did not within the command timeout"
            );
        }
        Ok(Replicated {
            value,
            acknowledged,
        })
    }

    /// Whether a hit under `policy` may have to wait for a replica (not when it needs none,
    /// nor when the server was just seen to have none to wait for).
    pub(super) fn may_wait_for_replica(&self, policy: &RatePolicy) -> bool {
        let durability = policy.durability();
        durability.waits()
            && !(durability == Durability::ReplicaIfAny && self.lane.known_replicas() == Some(0))
    }

    /// A rate-limit step under `policy`'s durability; `wrote` tells from its reply whether
    /// the hit was allowed (a refused hit wrote nothing, and waits for nothing).
    pub(super) async fn run_step<T: FromRedisValue>(
        &self,
        policy: &RatePolicy,
        name: &'static str,
        retry: Retry,
        request: impl Into<Request>,
        wrote: impl Fn(&T) -> bool,
    ) -> Result<Replicated<T>, StoreError> {
        let request = request.into();
        let command = |conn| request.send(conn);
        let durability = policy.durability();
        if self.may_wait_for_replica(policy) {
            // boxed, so that a hit that needs no replica carries none of it in its future
            return Box::pin(self.run_replicated(name, retry, durability, command, wrote)).await;
        }
        let value = self.transport.send(name, retry, command).await?;
        Ok(Replicated::done(value))
    }

    /// `command` on the lane to a cluster (a connection of its own, since `WAIT` blocks the
    /// connection it is sent on), opened when there is none.
    async fn run_on_lane_cluster<T, F, Fut>(
        &self,
        links: &ClusterLinks,
        name: &'static str,
        retry: Retry,
        deadline: tokio::time::Instant,
        command: &F,
    ) -> Result<(T, LaneConn), StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let lane = self.lane.connection(|| async {
            Ok::<_, StoreError>(LaneConn::Cluster(links.dedicated().await?))
        });
        let lane = tokio::time::timeout_at(deadline, lane)
            .await
            .map_err(|_| {
                StoreError::new(
                    StoreErrorKind::Timeout,
                    format!("Redis {name} took longer than the command timeout"),
                )
            })??;
        let LaneConn::Cluster(conn) = lane else {
            return Err(unexpected_reply(
                name,
                "a cluster store holds a server lane",
            ));
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let value = links.run_on(&conn, name, retry, left, command).await;
        value.map(|value| (value, LaneConn::Cluster(conn)))
    }

    /// `command` on the lane to one server, opened when there is none, and once more on a
    /// new one when the connection dropped and `retry` allows.
    pub(super) async fn run_on_lane_server<T, F, Fut>(
        &self,
        links: &ServerLinks,
        name: &'static str,
        retry: Retry,
        deadline: tokio::time::Instant,
        command: &F,
    ) -> Result<(T, LaneConn), StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut tries_left = if retry == Retry::OnDroppedConnection {
            2
        } else {
            1
        };
        loop {
            tries_left -= 1;
            let attempt = async {
                let lane = self
                    .lane
                    .connection(|| async {
                        let conn = links
                            .pool
                            .dedicated_connection()
                            .await
                            .map_err(|err| classify("durable write connection", err))?;
                        Ok::<_, StoreError>(LaneConn::Server(conn.conn))
                    })
                    .await?;
                let LaneConn::Server(conn) = lane else {
                    return Err(unexpected_reply(
                        name,
                        "a server store holds a cluster lane",
                    ));
                };
                match command(Conn::Server(conn.clone())).await {
                    Ok(value) => Ok(Ok((value, LaneConn::Server(conn)))),
                    Err(err) => Ok(Err(refusal_inside(err))),
                }
            };
            let err = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(Ok(done))) => return Ok(done),
                Ok(Ok(Err(err))) => err,
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    return Err(StoreError::new(
                        StoreErrorKind::Timeout,
                        format!("Redis {name} took longer than the command timeout"),
                    ));
                }
            };
            if breaks_connection(&err) || is_demoted(&err) {
                self.lane.reset();
                if tries_left > 0 && (err.is_connection_dropped() || is_demoted(&err)) {
                    continue;
                }
            }
            return Err(classify(name, err));
        }
    }
}

impl RedisStore {
    /// The fewest healthy replicas any serving master has (`CLUSTER NODES`, asked of the
    /// master of `slot` when given, else of any node: a node picked at random may be the one
    /// that stalls).
    pub(super) async fn cluster_fewest_replicas(
        &self,
        slot: Option<u16>,
    ) -> Result<u64, StoreError> {
        let node = match slot {
            Some(slot) => SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)),
            None => SingleNodeRoutingInfo::Random,
        };
        let nodes: String = self
            .transport
            .send("CLUSTER NODES", Retry::OnDroppedConnection, move |conn| {
                let node = node.clone();
                async move {
                    let reply = cluster_conn(conn)?
                        .route_command(
                            redis::cmd("CLUSTER").arg("NODES").clone(),
                            RoutingInfo::SingleNode(node),
                        )
                        .await?;
                    redis::from_redis_value(reply).map_err(RedisError::from)
                }
            })
            .await?;
        Ok(crate::store::durable::fewest_replicas(&nodes))
    }
}
