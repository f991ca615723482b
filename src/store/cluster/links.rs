//! The cluster client and its retry loop: how one call reaches its key's node, follows a
//! redirect, and survives a topology change within the command timeout.

use std::future::Future;
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    AggregateOp, MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo,
    SingleNodeRoutingInfo, SlotAddr,
};
use redis::{RedisError, RetryMethod};

use crate::store::lua::Conn;
use crate::store::redis::{Retry, classify};
use crate::store::{StoreError, StoreErrorKind};

/// How long a call refused during a topology change waits before sending again: the client
/// refreshes its slot map in the background meanwhile.
const REROUTE_PAUSE: Duration = Duration::from_millis(25);

/// The cluster client and its connection, shared by every call.
#[derive(Clone)]
pub(in crate::store) struct ClusterLinks {
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
    pub(in crate::store) fn new(
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
    pub(in crate::store) async fn run<T, F, Fut>(
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
    pub(in crate::store) async fn run_on<T, F, Fut>(
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
                Err(err) => crate::store::redis::refusal_inside(err),
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
    pub(in crate::store) async fn dedicated(&self) -> Result<ClusterConnection, StoreError> {
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
    pub(in crate::store) async fn wait_on_masters(
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

pub(super) fn timed_out(name: &'static str) -> StoreError {
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
pub(super) fn master_of(key: &str) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )))
}

/// The cluster connection a cluster-only operation needs (those run on cluster links only).
pub(super) fn cluster_conn(conn: Conn) -> Result<ClusterConnection, RedisError> {
    conn.cluster().ok_or_else(|| {
        RedisError::from((
            redis::ErrorKind::Client,
            "a Redis Cluster operation was sent to a single server",
        ))
    })
}
