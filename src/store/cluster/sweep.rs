//! Operations over every master: `SCAN` runs node by node, since a cluster has no
//! cluster-wide keyspace to iterate.

use redis::RedisError;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};

use super::links::cluster_conn;
use crate::store::redis::Retry;
use crate::store::{RedisStore, StoreError};

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
    /// [`Backend::delete_matching`](crate::store::Backend::delete_matching) on every master.
    pub(in crate::store) async fn cluster_delete_matching(
        &self,
        pattern: &str,
    ) -> Result<u64, StoreError> {
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
