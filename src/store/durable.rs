//! Writes that must reach a replica before they count: what [`Durability`] asks of a Redis
//! store, and the connection such writes share.
//!
//! Redis replicates asynchronously: a master acknowledges a write before any replica has it,
//! and a failover in between loses it. For most of what the crate writes that costs little
//! (a cache entry to fetch again, a rate-limit hit uncounted). For a send flag it is a second
//! SMS code inside the cooldown; for a revocation it is a token that works again. Redis's
//! answer is `WAIT numreplicas timeout`: it blocks until that many replicas acknowledged the
//! writes made *on the same connection*, and blocks that connection meanwhile. So these
//! writes go over a connection of their own (a [`Lane`]), never over the pooled connections
//! every request shares, and the `WAIT` follows the write on it. A refused hit wrote nothing
//! and waits for nothing.
//!
//! The server is asked how many replicas it has at most once a second (`INFO replication`;
//! on a cluster, `CLUSTER NODES`, the fewest any serving master has), so that
//! [`Durability::ReplicaIfAny`] costs nothing where there is no replica to wait for.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;

/// How long a replica count is trusted before the server is asked again.
const REPLICAS_RECHECK: Duration = Duration::from_secs(1);

/// What a write must reach before it counts: the master alone (Redis's own default), or one
/// replica as well, so that a failover cannot take it back.
///
/// The wait is Redis's `WAIT 1 <ms>`, within the command timeout, sent to the master the
/// write went to. A write that no replica acknowledged in time stays on the master, and the
/// call fails with [`StoreErrorKind::NotReplicated`](super::StoreErrorKind::NotReplicated)
/// (or [`Timeout`](super::StoreErrorKind::Timeout) when the master did not answer the wait),
/// except for a rate-limit hit under a rule that fails open: its requests go on whatever the
/// store says, so the hit stays counted on the master and the request is allowed, exactly as
/// under [`Master`](Self::Master) (giving it back would let every request through while a
/// replica lags). Under a rule that fails closed (a cooldown's default) the hit is given back
/// and the failure policy answers: a send flag a failover may lose is never relied on. A
/// revocation is reported so that it can be made again. A request that goes away while its
/// hit waits (its client gone, an outer timeout) has the hit given back.
///
/// [`ReplicaIfAny`](Self::ReplicaIfAny) waits only while the server reports a replica
/// connected: while its one replica is disconnected (restarting, a network blip), writes count
/// on the master alone, and a failover in that moment can lose them. Where even that must not
/// happen, use [`Replica`](Self::Replica), which refuses writes while no replica is connected.
///
/// Set per rate-limit rule with [`Rule::durability`](crate::ratelimit::Rule::durability), per
/// [`RatePolicy`](super::RatePolicy), and for revocations with
/// [`Tokens::durability`](crate::auth::Tokens::durability). The memory store has no replica
/// and ignores it.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::ratelimit::{Key, Rule};
/// use tower_redis_http::store::Durability;
///
/// // the login limit must not reset in a failover either
/// let logins = Rule::fixed_window("login", "10/m", Key::client_ip())
///     .durability(Durability::ReplicaIfAny);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Durability {
    /// The master's acknowledgement is enough: a failover can lose the latest writes. The
    /// default for fixed windows and GCRA, whose loss lets a few requests through once.
    #[default]
    Master,
    /// One replica must acknowledge the write when the server reports at least one connected
    /// (on a cluster: when every serving master has one); the master alone otherwise. The
    /// default for cooldowns and for token revocations.
    ReplicaIfAny,
    /// One replica must acknowledge the write; with none connected, the write is refused
    /// before it is made.
    Replica,
}

impl Durability {
    /// Whether writes under this durability may have to wait for a replica.
    pub(crate) fn waits(self) -> bool {
        self != Self::Master
    }
}

/// The connection durable writes share, and what is known of the replicas.
#[derive(Default)]
pub(super) struct Lane {
    /// Held while a connection is opened, so that concurrent writes open one, not many.
    conn: tokio::sync::Mutex<Option<LaneConn>>,
    /// How many replicas the server had, and when it said so.
    replicas: Mutex<Option<(u64, Instant)>>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").finish_non_exhaustive()
    }
}

/// A lane's connection: to one server, or a cluster client of its own.
#[derive(Clone)]
pub(super) enum LaneConn {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Lane {
    /// The lane's connection, opened with `open` when there is none.
    pub(super) async fn connection<F, Fut, E>(&self, open: F) -> Result<LaneConn, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<LaneConn, E>>,
    {
        let mut conn = self.conn.lock().await;
        if let Some(conn) = conn.as_ref() {
            return Ok(conn.clone());
        }
        let opened = open().await?;
        *conn = Some(opened.clone());
        Ok(opened)
    }

    /// Forgets the connection (it broke, or a wait on it ran out): the next write opens
    /// another rather than queue behind a `WAIT` that may still block this one.
    pub(super) fn reset(&self) {
        if let Ok(mut conn) = self.conn.try_lock() {
            *conn = None;
        }
    }

    /// The replica count last seen, if seen within the last second.
    pub(super) fn known_replicas(&self) -> Option<u64> {
        let replicas = self.replicas.lock().ok()?;
        replicas
            .filter(|(_, at)| at.elapsed() < REPLICAS_RECHECK)
            .map(|(count, _)| count)
    }

    /// The replica count is to be asked again before it is used.
    pub(super) fn forget_replicas(&self) {
        if let Ok(mut replicas) = self.replicas.lock() {
            *replicas = None;
        }
    }

    pub(super) fn set_replicas(&self, count: u64) {
        if let Ok(mut replicas) = self.replicas.lock() {
            *replicas = Some((count, Instant::now()));
        }
    }
}

/// The fewest healthy replicas any serving master has, from `CLUSTER NODES`: a durable
/// write may land on any master, so a wait is worth asking for only when every one of them
/// has a replica to answer it.
pub(super) fn fewest_replicas(nodes: &str) -> u64 {
    let healthy = |flags: &str| {
        !flags
            .split(',')
            .any(|flag| matches!(flag, "fail" | "fail?" | "handshake" | "noaddr"))
    };
    let mut counts: Vec<(&str, u64)> = nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (id, flags) = (*fields.first()?, *fields.get(2)?);
            // a master that serves slots: its line lists at least one past the 8 fixed fields
            (flags.split(',').any(|flag| flag == "master") && healthy(flags) && fields.len() > 8)
                .then_some((id, 0))
        })
        .collect();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(flags), Some(master)) = (fields.get(2), fields.get(3)) else {
            continue;
        };
        if flags.split(',').any(|flag| flag == "slave")
            && healthy(flags)
            && let Some((_, count)) = counts.iter_mut().find(|(id, _)| id == master)
        {
            *count += 1;
        }
    }
    counts.iter().map(|(_, count)| *count).min().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::fewest_replicas;

    #[test]
    fn the_fewest_replicas_counts_healthy_replicas_of_serving_masters() {
        let nodes = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383
d 127.0.0.1:7003@17003 slave a 0 0 1 connected
e 127.0.0.1:7004@17004 slave b 0 0 2 connected
f 127.0.0.1:7005@17005 slave,fail c 0 0 3 connected
";
        assert_eq!(fewest_replicas(nodes), 0, "c's only replica failed");
        let healed = nodes.replace("slave,fail c", "slave c");
        assert_eq!(fewest_replicas(&healed), 1);
        // a master without slots (just added, or emptied) takes no writes
        let spare = format!("{healed}g 127.0.0.1:7006@17006 master - 0 0 4 connected\n");
        assert_eq!(fewest_replicas(&spare), 1);
        assert_eq!(fewest_replicas(""), 0);
    }
}
