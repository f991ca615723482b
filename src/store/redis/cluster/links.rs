//! The cluster client and its retry loop: how one call reaches its key's node, follows a
//! redirect, and survives a topology change within the command timeout.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    AggregateOp, MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo,
    SingleNodeRoutingInfo, SlotAddr,
};
use redis::{RedisError, RetryMethod};
use tokio::time::Instant;

use super::nodes::{Nodes, SlotMap, command_slot};
use super::redirect::Redirect;
use crate::store::redis::classify::{Retry, classify};
use crate::store::redis::lua::Conn;
use crate::store::{StoreError, StoreErrorKind};

/// How long a call refused during a topology change waits before sending again: the client
/// refreshes its slot map in the background meanwhile.
const REROUTE_PAUSE: Duration = Duration::from_millis(25);

/// How many `MOVED` and `ASK` replies one call follows. A call meets one after a slot moved
/// (the client's map is stale), and one or two more while a slot is migrating; more are
/// nodes that disagree on who serves the slot, which sending again does not mend.
const MAX_REDIRECTS: u32 = 5;

/// The cluster client and its connection, shared by every call.
#[derive(Clone)]
pub(in crate::store) struct ClusterLinks {
    client: ClusterClient,
    conn: ClusterConnection,
    connect_timeout: Duration,
    command_timeout: Duration,
    nodes: Arc<Nodes>,
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
            connect_timeout,
            command_timeout,
            nodes: Arc::default(),
        }
    }

    /// Runs `command` on the cluster within `timeout`, sending it again when the cluster
    /// refused it unrun, or when the connection dropped and `retry` allows.
    ///
    /// A call for a key of a node that stopped answering fails at once (see
    /// [`timed_out`](Self::timed_out)); one the cluster redirects to an address that cannot
    /// be reached fails as soon as that is known; one redirected more than
    /// [`MAX_REDIRECTS`] times fails then.
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
        let deadline = Instant::now() + timeout;
        if !self.nodes.map_asked.load(Ordering::Relaxed) {
            self.load_map_later();
        }
        // a call that waited for a stall's node to be named has less than the client's own
        // timeout left, so its first attempt is timed like the later ones
        let mut first = true;
        if self.nodes.any_stalled() {
            match self.stalled_at(name, &command, deadline).await {
                Stalled::Yes(err) => return Err(err),
                Stalled::AfterWaiting => first = false,
                Stalled::No => {}
            }
        }
        let mut resend_if_dropped = retry == Retry::OnDroppedConnection;
        let mut redirects = 0;
        // the node a MOVED or an ASK named, for the next attempt only
        let mut redirect: Option<Redirect> = None;
        // a node a redirect named that the client has no connection to, though it answers
        let mut unconnected: Option<Redirect> = None;
        loop {
            let target = redirect.take();
            let attempt = command(self.connection_to(base, target.as_ref(), name)?);
            let result = bounded(attempt, first, deadline, name).await?;
            let was_first = std::mem::replace(&mut first, false);
            let err = match result {
                Ok(value) => return Ok(value),
                // a transaction refused as a whole shows why inside its EXECABORT
                Err(err) => crate::store::redis::classify::refusal_inside(err),
            };
            if was_first && err.is_timeout() {
                self.timed_out(&command).await;
            }
            if let Some(target) = &target
                && (err.kind() == redis::ErrorKind::ClusterConnectionNotFound
                    || err.is_connection_refusal())
            {
                // the client holds no connection to the node named: a node that serves no
                // slot yet, or one whose announced address cannot be reached
                if let Some((kind, reason)) = target
                    .reach(&self.nodes, self.connect_timeout, deadline)
                    .await
                {
                    return Err(target.unreachable(name, kind, &reason));
                }
                unconnected = Some(target.clone());
            }
            if let Some(next) = Redirect::from_error(&err) {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(next.bounced(name, redirects, unconnected.as_ref()));
                }
                if target.is_none() {
                    // ASK: the slot is migrating and the key is on the importing node (or not
                    // yet anywhere); the slot map stays as it is until the migration ends, so
                    // sending again would meet the same ASK until the timeout. MOVED: the
                    // slot moved; a MOVED seen only inside an EXECABORT does not make the
                    // client learn the new slot map. Either way the command goes once to the
                    // node named, at once (after ASKING for an ASK); a refusal there is
                    // handled below.
                    tracing::debug!(command = name, error = %err, "Redis Cluster redirected a command; following it");
                    redirect = Some(next);
                    continue;
                }
            }
            if refused_unrun(&err) {
                if Instant::now() + REROUTE_PAUSE >= deadline {
                    return Err(not_taken(name, unconnected.as_ref(), err));
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

    /// The connection an attempt goes over: the cluster client, or the node a redirect named,
    /// unless that node was found unreachable a moment ago.
    fn connection_to(
        &self,
        base: &ClusterConnection,
        target: Option<&Redirect>,
        name: &'static str,
    ) -> Result<Conn, StoreError> {
        let Some(target) = target else {
            return Ok(Conn::Cluster(base.clone()));
        };
        if let Some((kind, reason)) = self
            .nodes
            .recently_unreachable(&target.node(), self.connect_timeout)
        {
            return Err(target.unreachable(name, kind, &reason));
        }
        Ok(Conn::Redirected {
            conn: base.clone(),
            node: target.routing(),
            asking: target.asking,
        })
    }

    /// Whether the call's key is on a stalled node (see [`timed_out`](Self::timed_out)).
    /// While a stall's node is still being looked up (no slot map was at hand), the call
    /// waits for that, about one round trip, at most until its deadline.
    async fn stalled_at<T, F, Fut>(
        &self,
        name: &'static str,
        command: &F,
        deadline: Instant,
    ) -> Stalled
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let Some(slot) = dry_run_slot(command).await else {
            return Stalled::No;
        };
        let mut waited = false;
        loop {
            let mut settled = pin!(self.nodes.settled.notified());
            settled.as_mut().enable();
            if let Some(node) = self.nodes.stalled_node(slot) {
                return Stalled::Yes(StoreError::new(
                    StoreErrorKind::Timeout,
                    format!(
                        "Redis {name} not sent: the Redis Cluster node {node} stopped answering within the command timeout; calls for its keys fail at once until it answers a ping"
                    ),
                ));
            }
            if !self.nodes.identifying() {
                break;
            }
            waited = true;
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                break;
            }
        }
        if waited {
            Stalled::AfterWaiting
        } else {
            Stalled::No
        }
    }

    /// A call's first attempt went unanswered for the command timeout: the node that serves
    /// its key is taken as stalled, and calls for any of its keys fail at once, while one
    /// task pings it; the first answer ends it. Redis runs one command at a time, so a
    /// command that waited the timeout means every command behind it waits as long: a
    /// request through three layers would wait three timeouts. Calls for other nodes go on.
    async fn timed_out<T, F, Fut>(&self, command: &F)
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let Some(slot) = dry_run_slot(command).await else {
            return;
        };
        if let Some(probe_slot) = self.nodes.stall(slot) {
            tracing::debug!(
                slot,
                "a Redis Cluster node stopped answering; failing its calls at once until it answers a ping"
            );
            self.probe(probe_slot);
        }
    }

    /// Pings the stalled node of `slot` until it answers, after learning which slots it
    /// serves from a fresh slot map (asked of its replica first, which a stalled master
    /// leaves answering).
    fn probe(&self, slot: u16) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // nobody to ping: the next call finds out
            self.nodes.recover(slot);
            return;
        };
        let nodes = Arc::downgrade(&self.nodes);
        let conn = self.conn.clone();
        runtime.spawn(async move {
            let map = load_map(conn.clone(), Some(slot)).await;
            {
                let Some(nodes) = nodes.upgrade() else {
                    return;
                };
                let keep = nodes.identify(slot, map.as_ref());
                if let Some(map) = map {
                    nodes.set_map(map);
                }
                if !keep {
                    return;
                }
            }
            // ends when the node answers, when the trouble becomes another (a refusal, a
            // moved slot: calls meet it themselves), or when the store is gone; each ping
            // waits at most the command timeout (the client's own bound)
            loop {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot, SlotAddr::Master),
                ));
                let ping = conn
                    .clone()
                    .route_command(redis::cmd("PING"), routing)
                    .await;
                let Some(nodes) = nodes.upgrade() else {
                    return;
                };
                if !ping.is_err_and(|err| err.is_timeout()) {
                    nodes.recover(slot);
                    return;
                }
            }
        });
    }

    /// Loads a first slot map in the background, for the first stall to find its node by.
    fn load_map_later(&self) {
        if self.nodes.map_asked.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let nodes = Arc::downgrade(&self.nodes);
        let conn = self.conn.clone();
        runtime.spawn(async move {
            if let Some(map) = load_map(conn, None).await
                && let Some(nodes) = nodes.upgrade()
            {
                nodes.set_map(map);
            }
        });
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
    /// Whether the master the cluster lists at `host`:`port` can be reached (a TCP
    /// connection within the connect timeout, remembered for as long when it cannot, as for
    /// a node a redirect names): a call addressed to a node the client holds no connection to
    /// is refused until its timeout, so a sweep asks first and fails at once, naming the
    /// address and the settings that announce it.
    pub(in crate::store) async fn reach_listed(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(), StoreError> {
        let node = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let found = match self.nodes.recently_unreachable(&node, self.connect_timeout) {
            Some(found) => Some(found),
            None => {
                let deadline = Instant::now() + self.connect_timeout;
                super::redirect::reach_node(
                    &self.nodes,
                    (host, port),
                    &node,
                    self.connect_timeout,
                    deadline,
                )
                .await
            }
        };
        match found {
            None => Ok(()),
            Some((kind, reason)) => Err(StoreError::new(
                kind,
                format!(
                    "Redis Cluster lists the master {node}, which cannot be reached: {reason}. The node is down, or it announces an address this client cannot reach (cluster-announce-ip, cluster-announce-port or cluster-announce-hostname, as behind NAT or in a container)"
                ),
            )),
        }
    }
    /// `WAIT replicas wait_ms` on `lane`, sent to the master of `slot` (the one that took the
    /// write), and the replicas it counted. A write that names no one slot waits on every
    /// serving master, the fewest counted: its writes may have gone to any. Only the master
    /// written to is asked where it can be, so that a stalled master that took nothing of the
    /// write fails no wait on the others.
    pub(in crate::store) async fn wait_after(
        &self,
        lane: &mut ClusterConnection,
        slot: Option<u16>,
        replicas: u64,
        wait_ms: u64,
    ) -> Result<u64, RedisError> {
        let routing = match slot {
            Some(slot) => RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                slot,
                SlotAddr::Master,
            ))),
            None => RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::Aggregate(AggregateOp::Min)),
            )),
        };
        let reply = lane
            .route_command(
                redis::cmd("WAIT").arg(replicas).arg(wait_ms).clone(),
                routing,
            )
            .await?;
        redis::from_redis_value(reply).map_err(RedisError::from)
    }
}

/// Whether a call is for a stalled node.
enum Stalled {
    Yes(StoreError),
    /// Not known to be, after waiting for a stall's node to be named.
    AfterWaiting,
    No,
}

/// The slot of the key `command` is for, from a dry run of it (see [`Conn::Dry`]).
pub(in crate::store) async fn dry_run_slot<T, F, Fut>(command: &F) -> Option<u16>
where
    F: Fn(Conn) -> Fut,
    Fut: Future<Output = Result<T, RedisError>>,
{
    let sent = Arc::new(Mutex::new(Vec::new()));
    let _ = command(Conn::Dry(Arc::clone(&sent))).await;
    let sent = sent.lock().ok()?;
    command_slot(&sent)
}

/// One node's `CLUSTER SLOTS`: the replica of `near`'s master when given (a stalled master
/// leaves its replica answering), else any node; within the client's overall timeout.
async fn load_map(mut conn: ClusterConnection, near: Option<u16>) -> Option<SlotMap> {
    let node = match near {
        Some(slot) => {
            SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::ReplicaRequired))
        }
        None => SingleNodeRoutingInfo::Random,
    };
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    let reply = conn
        .route_command(slots, RoutingInfo::SingleNode(node))
        .await
        .ok()?;
    SlotMap::from_reply(&reply)
}

/// An attempt within the call's deadline. The first is bounded by the client's overall
/// response timeout; a second timer per call costs throughput, so only the sends after it
/// arm one.
async fn bounded<T>(
    attempt: impl Future<Output = Result<T, RedisError>>,
    first: bool,
    deadline: Instant,
    name: &'static str,
) -> Result<Result<T, RedisError>, StoreError> {
    if first {
        return Ok(attempt.await);
    }
    tokio::time::timeout_at(deadline, attempt)
        .await
        .map_err(|_| timed_out(name))
}

/// A command the cluster kept refusing unrun past the command timeout: a slot without a
/// master that long is a failover under way, the connection's trouble rather than the
/// command's.
fn not_taken(name: &'static str, unconnected: Option<&Redirect>, err: RedisError) -> StoreError {
    let detail = match unconnected {
        Some(node) => format!(
            "Redis Cluster did not take {name} within the command timeout: it sent it to {}, which answers but is not among the nodes the client connects to (a node that serves no slot yet)",
            node.node()
        ),
        None => format!("Redis Cluster did not take {name} within the command timeout"),
    };
    StoreError::with_source(StoreErrorKind::Connection, detail, err)
}

pub(in crate::store) fn timed_out(name: &'static str) -> StoreError {
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

/// The master that serves `key`'s slot.
pub(in crate::store) fn master_of(key: &str) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )))
}

/// The cluster connection a cluster-only operation needs (those run on cluster links only).
pub(in crate::store) fn cluster_conn(conn: Conn) -> Result<ClusterConnection, RedisError> {
    conn.cluster().ok_or_else(|| {
        RedisError::from((
            redis::ErrorKind::Client,
            "a Redis Cluster operation was sent to a single server",
        ))
    })
}
