//! How this node reaches an endpoint, decided from the endpoint's node. Pure.
//!
//! Pod addresses are loopback addresses of their node's machine (unique in the cluster by
//! node IPAM, see `wasmorch_api::ipam`). So a pod address is dialled directly only when its
//! node runs on this machine (this node, or another node process whose address is one of
//! this machine's); a pod on another machine is reached through that node's gateway
//! ([`super::gateway`]), over the node-to-node mTLS connection.

use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// What the proxy knows of another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's address (`InternalIP`).
    pub ip: Option<IpAddr>,
    /// Its endpoint (which serves the gateway), when it reports one.
    pub gateway: Option<SocketAddr>,
    /// Whether its pods' sockets are this machine's: it runs here (its address is one of
    /// this machine's) and pod ports are not mapped (mapped, they are known to it alone).
    pub same_machine: bool,
}

/// Of a Node, what routing needs: its name, addresses and endpoint port (not heartbeats,
/// which change every few seconds and must not rebuild the routing table).
pub fn node_projection(o: &Value) -> Value {
    serde_json::json!({
        "metadata": {"name": o.pointer("/metadata/name")},
        "spec": {"podCIDR": o.pointer("/spec/podCIDR")},
        "status": {
            "addresses": o.pointer("/status/addresses"),
            "daemonEndpoints": o.pointer("/status/daemonEndpoints"),
        },
    })
}

/// A peer from a (projected) Node; `is_local(ip)` says whether an address is this machine's,
/// `mapped` whether pod ports are mapped here (see `runtime::ports`).
pub fn peer(node: &Value, mapped: bool, mut is_local: impl FnMut(IpAddr) -> bool) -> Peer {
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .find_map(|a| a.get("address").and_then(Value::as_str)?.parse::<IpAddr>().ok());
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0);
    Peer {
        ip,
        gateway: ip.zip(port).map(|(ip, p)| SocketAddr::new(ip, p)),
        same_machine: !mapped && ip.is_some_and(|ip| ip.is_loopback() || is_local(ip)),
    }
}

/// A node's pod range (`spec.podCIDR`): network and prefix length.
pub fn pod_range(node: &Value) -> Option<(IpAddr, u8)> {
    let (net, bits) = node.pointer("/spec/podCIDR")?.as_str()?.split_once('/')?;
    Some((net.parse().ok()?, bits.parse().ok()?))
}

/// Whether `ip` lies in the range `net/bits`.
pub fn in_range(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    wasmorch_api::netpol::in_block(ip, net, u32::from(bits))
}

/// Whether `ip` is an address of this machine (a socket can be bound to it).
pub fn is_local_address(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The way to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Way {
    /// On this node: in process when an HTTP workload serves it, else its socket.
    Here,
    /// On another node process of this machine: its socket.
    Direct,
    /// On another machine: a stream through that node's gateway.
    Gateway { node: String, at: SocketAddr },
    /// Nowhere known (the node is gone or reports no endpoint).
    Unreachable(String),
}

/// How to reach an endpoint on `node`, seen from node `me`.
pub fn way(me: &str, node: &str, peers: &HashMap<String, Peer>) -> Way {
    // An endpoint without a node (a hand-made EndpointSlice) is taken to be local.
    if node.is_empty() || node == me {
        return Way::Here;
    }
    match peers.get(node) {
        Some(p) if p.same_machine => Way::Direct,
        Some(Peer { gateway: Some(at), .. }) => Way::Gateway { node: node.to_string(), at: *at },
        Some(_) => Way::Unreachable(format!("node {node} reports no endpoint")),
        None => Way::Unreachable(format!("node {node} is not known")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ip: &str, port: u64) -> Value {
        json!({"metadata": {"name": name}, "status": {
            "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "conditions": [{"type": "Ready", "lastHeartbeatTime": "now"}]}})
    }

    #[test]
    fn the_way_follows_the_node() {
        let here = |ip: IpAddr| ip == "10.0.0.1".parse::<IpAddr>().unwrap();
        let peers: HashMap<String, Peer> = [
            ("twin", node("twin", "127.0.0.1", 10250)),
            ("lan", node("lan", "10.0.0.1", 10251)),
            ("pi", node("pi", "10.0.0.7", 10250)),
            ("mute", node("mute", "10.0.0.8", 0)),
        ]
        .into_iter()
        .map(|(n, o)| (n.to_string(), peer(&node_projection(&o), false, here)))
        .collect();
        assert_eq!(way("me", "me", &peers), Way::Here);
        assert_eq!(way("me", "", &peers), Way::Here);
        assert_eq!(way("me", "twin", &peers), Way::Direct, "a loopback node address is this machine");
        assert_eq!(way("me", "lan", &peers), Way::Direct, "so is an address of this machine");
        assert_eq!(way("me", "pi", &peers), Way::Gateway { node: "pi".into(), at: "10.0.0.7:10250".parse().unwrap() });
        assert!(matches!(way("me", "mute", &peers), Way::Unreachable(m) if m.contains("no endpoint")));
        assert!(matches!(way("me", "gone", &peers), Way::Unreachable(m) if m.contains("not known")));

        // Mapped pod ports: another node process's pods are reached through its gateway.
        let twin = peer(&node_projection(&node("twin", "127.0.0.1", 10250)), true, here);
        let peers = HashMap::from([("twin".to_string(), twin)]);
        assert_eq!(
            way("me", "twin", &peers),
            Way::Gateway { node: "twin".into(), at: "127.0.0.1:10250".parse().unwrap() }
        );
    }

    #[test]
    fn a_heartbeat_leaves_the_projection_alone() {
        let mut a = node("pi", "10.0.0.7", 10250);
        let before = node_projection(&a);
        a["status"]["conditions"][0]["lastHeartbeatTime"] = json!("later");
        assert_eq!(node_projection(&a), before);
    }
}
