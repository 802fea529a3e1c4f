//! The Redis topology as operators need to see it: every data node with its role, its master
//! and replication id, each master's replicas and how far behind they are, and which master
//! serves which slots (so which node holds which sale). Read on demand from the nodes
//! themselves: `CLUSTER NODES` and each node's `INFO replication` on a cluster, the primary the
//! Sentinels name and its `INFO replication` under Sentinel, `INFO replication` of the one node
//! otherwise.

use std::time::Duration;

use redis::IntoConnectionInfo;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::redis::RedisConnection;
use crate::runtime::settings::{RedisSettings, RedisShape};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// `node`, `cluster` or `sentinel`.
    pub shape: &'static str,
    pub nodes: Vec<NodeView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// `host:port`.
    pub address: String,
    /// `master` or `replica`; `unreachable` when it did not answer.
    pub role: String,
    /// A replica's master (`host:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The replication id: it changes when a replica is promoted or a node restarts.
    pub replid: String,
    pub offset: i64,
    /// A master's replicas as it sees them.
    pub replicas: Vec<ReplicaView>,
    /// Slot ranges a cluster master serves (inclusive).
    pub slots: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaView {
    pub address: String,
    /// Bytes of the replication stream the replica has not acknowledged.
    pub behind_bytes: i64,
    /// Seconds since its last acknowledgement.
    pub lag_secs: i64,
}

impl NodeView {
    /// A node that did not answer.
    fn unreachable(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            role: "unreachable".into(),
            master: None,
            replid: String::new(),
            offset: 0,
            replicas: Vec::new(),
            slots: Vec::new(),
        }
    }
}

impl Topology {
    /// The master serving `slot` (on a cluster), or the one master.
    pub fn master_of_slot(&self, slot: u16) -> Option<&NodeView> {
        let mut masters = self.nodes.iter().filter(|n| n.role == "master");
        match self.shape {
            "cluster" => masters.find(|n| n.slots.iter().any(|(from, to)| (*from..=*to).contains(&slot))),
            _ => masters.next(),
        }
    }
}

/// One node's `INFO replication`, parsed.
fn parse_replication(address: &str, info: &str) -> NodeView {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .map(str::trim)
    };
    let role = match field("role") {
        Some("slave") => "replica",
        Some(role) => role,
        None => "unknown",
    };
    let offset = field("master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let master = (role == "replica")
        .then(|| Some(format!("{}:{}", field("master_host")?, field("master_port")?)))
        .flatten();
    let replicas = info
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains("ip="))
        .filter_map(|l| {
            let (_, fields) = l.split_once(':')?;
            let get = |key: &str| fields.split(',').find_map(|f| f.strip_prefix(key));
            let replica_offset: i64 = get("offset=")?.parse().ok()?;
            Some(ReplicaView {
                address: format!("{}:{}", get("ip=")?, get("port=")?),
                behind_bytes: (offset - replica_offset).max(0),
                lag_secs: get("lag=")?.parse().ok()?,
            })
        })
        .collect();
    NodeView {
        address: address.to_owned(),
        role: role.to_owned(),
        master,
        replid: field("master_replid").unwrap_or_default().to_owned(),
        offset,
        replicas,
        slots: Vec::new(),
    }
}

/// `INFO replication` of one node, asked directly (a short-lived connection).
async fn node_view(settings: &RedisSettings, address: &str) -> NodeView {
    let asked = async {
        let mut info = settings.url.expose_secret().into_connection_info()?;
        let (host, port) = address.rsplit_once(':').unwrap_or((address, "6379"));
        let port: u16 = port.parse().unwrap_or(6379);
        info = info.set_addr(redis::ConnectionAddr::Tcp(host.to_owned(), port));
        let client = redis::Client::open(info)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg("replication")
            .query_async::<String>(&mut conn)
            .await
    };
    match tokio::time::timeout(Duration::from_millis(settings.connect_timeout_ms), asked).await {
        Ok(Ok(info)) => parse_replication(address, &info),
        _ => NodeView::unreachable(address),
    }
}

/// Read the topology now (see the module docs).
pub async fn read(settings: &RedisSettings, conn: &RedisConnection) -> redis::RedisResult<Topology> {
    let mut conn = conn.clone();
    match settings.shape() {
        RedisShape::Node => {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await?;
            let address = settings
                .url
                .expose_secret()
                .into_connection_info()
                .map(|i| i.addr().to_string())
                .unwrap_or_default();
            Ok(Topology {
                shape: "node",
                nodes: vec![parse_replication(&address, &info)],
            })
        }
        RedisShape::Sentinel => {
            let RedisConnection::Sentinel(link) = &conn else {
                return Ok(Topology {
                    shape: "sentinel",
                    nodes: Vec::new(),
                });
            };
            let primary = node_view(settings, &link.address()).await;
            let mut nodes = vec![primary.clone()];
            for replica in &primary.replicas {
                nodes.push(node_view(settings, &replica.address).await);
            }
            Ok(Topology {
                shape: "sentinel",
                nodes,
            })
        }
        RedisShape::Cluster => {
            let listing: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await?;
            let mut nodes = Vec::new();
            for line in listing.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 8 {
                    continue;
                }
                let address = fields[1].split('@').next().unwrap_or_default();
                let mut view = if fields[2].contains("fail") && !fields[2].contains("fail?") {
                    NodeView::unreachable(address)
                } else {
                    node_view(settings, address).await
                };
                view.slots = fields[8..]
                    .iter()
                    .filter(|range| !range.starts_with('['))
                    .filter_map(|range| {
                        let (from, to) = range.split_once('-').unwrap_or((range, range));
                        Some((from.parse().ok()?, to.parse().ok()?))
                    })
                    .collect();
                nodes.push(view);
            }
            nodes.sort_by(|a, b| a.address.cmp(&b.address));
            Ok(Topology {
                shape: "cluster",
                nodes,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masters_replication_section_lists_its_replicas_and_how_far_behind_they_are() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
                    slave0:ip=127.0.0.1,port=17003,state=online,offset=900,lag=1\r\n\
                    master_replid:abc123\r\nmaster_repl_offset:1000\r\n";
        let view = parse_replication("127.0.0.1:17000", info);
        assert_eq!(
            (view.role.as_str(), view.replid.as_str(), view.offset),
            ("master", "abc123", 1000)
        );
        assert_eq!(
            view.replicas,
            vec![ReplicaView {
                address: "127.0.0.1:17003".into(),
                behind_bytes: 100,
                lag_secs: 1
            }]
        );
        let replica = parse_replication(
            "127.0.0.1:17003",
            "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:17000\r\nmaster_replid:abc123\r\n",
        );
        assert_eq!(
            (replica.role.as_str(), replica.master.as_deref()),
            ("replica", Some("127.0.0.1:17000"))
        );
    }
}
