//! The node a `MOVED` or `ASK` reply names, what a call says when it cannot go there, and
//! whether it can be reached at all.

use std::time::Duration;

use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{RedisError, RetryMethod};
use tokio::time::Instant;

use super::nodes::Nodes;
use crate::store::{StoreError, StoreErrorKind};

/// The node a `MOVED` or `ASK` reply names (`ASK <slot> <host>:<port>`).
#[derive(Debug, Clone)]
pub(super) struct Redirect {
    host: String,
    port: u16,
    slot: u16,
    /// An `ASK`: the command must follow `ASKING`.
    pub(super) asking: bool,
}

impl Redirect {
    pub(super) fn from_error(err: &RedisError) -> Option<Self> {
        let asking = match err.retry_method() {
            RetryMethod::AskRedirect => true,
            RetryMethod::MovedRedirect => false,
            _ => return None,
        };
        let (address, slot) = err.redirect_node()?;
        let (host, port) = address.rsplit_once(':')?;
        Some(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: port.parse().ok()?,
            slot,
            asking,
        })
    }

    pub(super) fn routing(&self) -> SingleNodeRoutingInfo {
        SingleNodeRoutingInfo::ByAddress {
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// `host:port`, as the cluster writes it.
    pub(super) fn node(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn reply(&self) -> &'static str {
        if self.asking { "ASK" } else { "MOVED" }
    }

    /// The error for a call sent to this node, which cannot be reached.
    pub(super) fn unreachable(
        &self,
        name: &'static str,
        kind: StoreErrorKind,
        reason: &str,
    ) -> StoreError {
        StoreError::new(
            kind,
            format!(
                "Redis {name} not sent: Redis Cluster named {} for slot {} ({}), which cannot be reached: {reason}. The node is down, or it announces an address this client cannot reach (cluster-announce-ip, cluster-announce-port or cluster-announce-hostname, as behind NAT or in a container)",
                self.node(),
                self.slot,
                self.reply(),
            ),
        )
    }

    /// The error for a call redirected `times` times, this the last.
    pub(super) fn bounced(
        &self,
        name: &'static str,
        times: u32,
        unconnected: Option<&Self>,
    ) -> StoreError {
        let why = match unconnected {
            Some(node) => format!(
                "{} answers but is not among the nodes the client connects to (a node that serves no slot yet)",
                node.node()
            ),
            None => format!("its nodes disagree on which serves slot {}", self.slot),
        };
        StoreError::new(
            StoreErrorKind::Connection,
            format!(
                "Redis Cluster redirected {name} {times} times, the last time to {} ({}): {why}",
                self.node(),
                self.reply(),
            ),
        )
    }

    /// Whether the node named can be reached (a TCP connection, within the connect
    /// timeout and the call's deadline): `None` if so, else how it failed. A refusal, or a
    /// silence that lasted the whole connect timeout, is remembered for the connect timeout,
    /// so that the calls sent there meanwhile fail at once.
    pub(super) async fn reach(
        &self,
        nodes: &Nodes,
        connect_timeout: Duration,
        deadline: Instant,
    ) -> Option<(StoreErrorKind, String)> {
        reach_node(
            nodes,
            (&self.host, self.port),
            &self.node(),
            connect_timeout,
            deadline,
        )
        .await
    }
}

/// Whether `node` (at `host`, `port`) can be reached: see [`Redirect::reach`].
pub(super) async fn reach_node(
    nodes: &Nodes,
    (host, port): (&str, u16),
    node: &str,
    connect_timeout: Duration,
    deadline: Instant,
) -> Option<(StoreErrorKind, String)> {
    let wait = connect_timeout.min(deadline.saturating_duration_since(Instant::now()));
    if wait.is_zero() {
        return None;
    }
    let connect = tokio::net::TcpStream::connect((host, port));
    let (kind, reason) = match tokio::time::timeout(wait, connect).await {
        Ok(Ok(_)) => return None,
        Ok(Err(err)) => (StoreErrorKind::Connection, err.to_string()),
        Err(_) => (
            StoreErrorKind::Timeout,
            format!("no answer within {} ms", wait.as_millis()),
        ),
    };
    if kind == StoreErrorKind::Connection || wait == connect_timeout {
        nodes.unreachable(node, kind, reason.clone());
    }
    Some((kind, reason))
}

#[cfg(test)]
mod tests {
    use super::Redirect;

    fn reply(text: &str) -> redis::RedisError {
        redis::parse_redis_value(text.as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    #[test]
    fn moved_and_ask_name_their_node() {
        let moved = Redirect::from_error(&reply("-MOVED 3999 127.0.0.1:6381\r\n")).unwrap();
        assert_eq!(
            (moved.node(), moved.slot, moved.asking),
            ("127.0.0.1:6381".to_owned(), 3999, false)
        );
        let ask = Redirect::from_error(&reply("-ASK 12 [::1]:7000\r\n")).unwrap();
        assert_eq!(
            (ask.node(), ask.host.as_str(), ask.asking),
            ("[::1]:7000".to_owned(), "::1", true)
        );
        assert!(Redirect::from_error(&reply("-TRYAGAIN later\r\n")).is_none());
    }

    #[test]
    fn the_errors_name_the_node_and_why() {
        let moved = Redirect::from_error(&reply("-MOVED 3999 10.0.0.9:6379\r\n")).unwrap();
        let unreachable = moved
            .unreachable("GET", crate::store::StoreErrorKind::Connection, "refused")
            .to_string();
        assert!(unreachable.contains("10.0.0.9:6379"), "{unreachable}");
        assert!(unreachable.contains("cluster-announce-ip"), "{unreachable}");
        let bounced = moved.bounced("GET", 6, None).to_string();
        assert!(bounced.contains("6 times"), "{bounced}");
        assert!(bounced.contains("disagree"), "{bounced}");
    }
}
