//! NetworkPolicy on this node: what the node knows of policies, namespaces and pods, and the
//! decision for one connection ([`wasmorch_api::netpol::decide`] does the judging).
//!
//! Every connection is judged once, on the node where it starts, where both ends are known:
//! a pod's sockets in its sandbox ([`crate::runtime`]'s socket check, through
//! [`crate::runtime::Cluster`]), a pod's `wasi:http` and every proxied request or stream
//! when the proxy has chosen the endpoint, and an outside client's connection to a node port
//! by its address. The receiving gateway judges again what a peer node sends on behalf of a
//! pod or an outside client (the sender names the source), so a stale view on one side does
//! not open a hole. Traffic from the node itself (probes, the proxy splicing a socket that
//! the sandbox already judged) is allowed, as Kubernetes allows a node to reach its pods.
//!
//! Pods of the whole cluster are followed only while some NetworkPolicy exists: a cluster
//! without policies pays nothing for them.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use wasmorch_api::netpol::{self, Labels, NamedPort, Party, PodView, Traffic};

/// Where a connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This node (or a socket of this machine that was judged where it was opened).
    Node,
    /// A pod or an outside client, by address.
    Ip(IpAddr),
}

pub use wasmorch_api::SOURCE_HEADER;

/// The header on a refusal by NetworkPolicy (a pod's `wasi:http` sees it as a denied request).
pub const DENIED_HEADER: &str = "x-wasmorch-denied";

/// The answer to a request that NetworkPolicies refuse: 403, saying which end refused.
pub fn denied(why: &str) -> hyper::Response<super::ProxyBody> {
    tracing::debug!("refused by NetworkPolicy: {why}");
    let mut r = super::text(403, &format!("{why}\n"));
    r.headers_mut().insert(DENIED_HEADER, http::HeaderValue::from_static("1"));
    r
}

/// A pod as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub node: String,
    pub labels: Labels,
    pub ports: Vec<NamedPort>,
}

/// Of a Pod, what policies need (not its status churn).
pub fn pod_projection(o: &Value) -> Value {
    let ports: Vec<Value> = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .map(|p| json!({"name": p.get("name"), "containerPort": p.get("containerPort"), "protocol": p.get("protocol")}))
        .collect();
    json!({
        "metadata": {
            "name": o.pointer("/metadata/name"),
            "namespace": o.pointer("/metadata/namespace"),
            "labels": o.pointer("/metadata/labels"),
        },
        "node": o.pointer("/spec/nodeName"),
        "ip": o.pointer("/status/podIP"),
        "ports": ports,
    })
}

/// Of a Namespace, its labels.
pub fn namespace_projection(o: &Value) -> Value {
    json!({"metadata": {"name": o.pointer("/metadata/name"), "labels": o.pointer("/metadata/labels")}})
}

fn labels(v: Option<&Value>) -> Labels {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// What the node knows, rebuilt whenever a policy, namespace or followed pod changes.
#[derive(Debug, Default)]
pub struct Index {
    policies: Vec<Value>,
    namespaces: HashMap<String, Labels>,
    pods: HashMap<IpAddr, PodFacts>,
}

impl Index {
    pub fn build<'a>(
        policies: impl IntoIterator<Item = &'a Value>,
        namespaces: impl IntoIterator<Item = &'a Value>,
        pods: impl IntoIterator<Item = &'a Value>,
    ) -> Index {
        let namespaces = namespaces
            .into_iter()
            .filter_map(|n| {
                Some((n.pointer("/metadata/name")?.as_str()?.to_string(), labels(n.pointer("/metadata/labels"))))
            })
            .collect();
        let pods = pods
            .into_iter()
            .filter_map(|p| {
                let ip: IpAddr = p.get("ip")?.as_str()?.parse().ok()?;
                let ports = p
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|np| {
                        Some(NamedPort {
                            name: np.get("name")?.as_str()?.to_string(),
                            port: u16::try_from(np.get("containerPort")?.as_u64()?).ok()?,
                            protocol: np.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string(),
                        })
                    })
                    .collect();
                let facts = PodFacts {
                    namespace: p.pointer("/metadata/namespace")?.as_str()?.to_string(),
                    node: p.get("node").and_then(Value::as_str).unwrap_or("").to_string(),
                    labels: labels(p.pointer("/metadata/labels")),
                    ports,
                };
                Some((ip, facts))
            })
            .collect();
        Index { policies: policies.into_iter().cloned().collect(), namespaces, pods }
    }

    /// Whether any NetworkPolicy exists (else everything is allowed and pods need not be known).
    pub fn has_policies(&self) -> bool {
        !self.policies.is_empty()
    }

    pub fn pod(&self, ip: IpAddr) -> Option<&PodFacts> {
        self.pods.get(&ip)
    }

    /// May `from` open a connection to `to` (`protocol` `TCP`/`UDP`)? `Err` says why not.
    pub fn decide(&self, from: Source, to: SocketAddr, protocol: &str) -> Result<(), String> {
        let Source::Ip(from) = from else { return Ok(()) };
        if self.policies.is_empty() || from == to.ip() {
            return Ok(());
        }
        static NONE: std::sync::LazyLock<Labels> = std::sync::LazyLock::new(Labels::new);
        let party = |ip: IpAddr| Party {
            ip,
            pod: self.pods.get(&ip).map(|p| PodView {
                namespace: &p.namespace,
                labels: &p.labels,
                namespace_labels: self.namespaces.get(&p.namespace).unwrap_or(&NONE),
                ports: &p.ports,
            }),
        };
        netpol::decide(&self.policies, &party(from), &party(to.ip()), &Traffic { port: to.port(), protocol })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value, ports: Value) -> Value {
        pod_projection(&json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}]},
            "status": {"podIP": ip, "phase": "Running"},
        }))
    }

    fn index(policies: &[Value]) -> Index {
        let pods = [
            pod(
                "np",
                "db",
                "n2",
                "127.64.16.2",
                json!({"app": "db"}),
                json!([{"name": "echo", "containerPort": 7000}]),
            ),
            pod("np", "web", "n1", "127.64.0.2", json!({"role": "client"}), json!([])),
            pod("ops", "tool", "n1", "127.64.0.3", json!({"role": "client"}), json!([])),
        ];
        let nss = [
            namespace_projection(&json!({"metadata": {"name": "np", "labels": {"kubernetes.io/metadata.name": "np"}}})),
            namespace_projection(&json!({"metadata": {"name": "ops", "labels": {"team": "ops"}}})),
        ];
        Index::build(policies, &nss, &pods)
    }

    fn policy(spec: Value) -> Value {
        let mut p = json!({"metadata": {"name": "p", "namespace": "np"}, "spec": spec});
        netpol::set_defaults(&mut p);
        p
    }

    #[test]
    fn the_index_knows_pods_namespaces_and_judges_by_them() {
        let db: SocketAddr = "127.64.16.2:7000".parse().unwrap();
        let web = Source::Ip("127.64.0.2".parse().unwrap());
        let tool = Source::Ip("127.64.0.3".parse().unwrap());
        let outside = Source::Ip("10.9.0.1".parse().unwrap());
        let open = index(&[]);
        assert!(!open.has_policies());
        assert!(open.decide(outside, db, "TCP").is_ok());
        assert_eq!(open.pod("127.64.16.2".parse().unwrap()).map(|p| p.node.as_str()), Some("n2"));

        let named_port = policy(json!({
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}], "ports": [{"port": "echo"}]}],
        }));
        let ix = index(&[named_port]);
        assert!(ix.decide(tool, db, "TCP").is_ok(), "ops may, on the named port");
        assert!(ix.decide(tool, "127.64.16.2:7001".parse().unwrap(), "TCP").is_err(), "another port");
        assert!(ix.decide(tool, db, "UDP").is_err(), "another protocol");
        assert!(ix.decide(web, db, "TCP").unwrap_err().contains("ingress"), "np's own pods may not");
        assert!(ix.decide(outside, db, "TCP").is_err(), "nor an outside client");
        assert!(ix.decide(Source::Node, db, "TCP").is_ok(), "the node always may");
        assert!(ix.decide(Source::Ip(db.ip()), db, "TCP").is_ok(), "a pod reaches itself");
        assert!(ix.decide(web, "127.64.0.3:80".parse().unwrap(), "TCP").is_ok(), "unselected pods stay open");
    }
}
