//! The routing table of a node's proxy, built from Services and EndpointSlices. Pure.

use super::balancer::Algorithm;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// One port of a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct SvcPort {
    pub name: String,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Spoken at layer 7 (`appProtocol: http`, or a port named `http`/`http-…`); `None`:
    /// decided by looking at the first bytes of each connection.
    pub http: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub ns: String,
    pub name: String,
    /// `None` for headless Services.
    pub cluster_ip: Option<Ipv4Addr>,
    pub ty: String,
    pub ports: Vec<SvcPort>,
    pub affinity: Option<Duration>,
    pub algorithm: Algorithm,
}

/// One endpoint of a Service port.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub node: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// Where a listener of this node sends its connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub ns: String,
    pub name: String,
    /// Index into the Service's ports.
    pub port: usize,
}

#[derive(Debug, Default, Clone)]
pub struct Table {
    pub services: BTreeMap<(String, String), Service>,
    /// Per Service and port name: its endpoints.
    pub endpoints: HashMap<(String, String, String), Vec<Endpoint>>,
    /// Per Service port: where its traffic goes, computed with the table (each request
    /// reads it in place).
    routes: HashMap<Route, Targets>,
}

/// Where a Service port's traffic goes ([`Table::targets`]), and how to choose among them.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    pub endpoints: Vec<Endpoint>,
    /// The endpoints' addresses, in the same order.
    pub addrs: Vec<SocketAddr>,
    pub algorithm: Algorithm,
    pub affinity: Option<Duration>,
}

fn http_hint(p: &Value) -> Option<bool> {
    let app = p["appProtocol"].as_str().unwrap_or("").to_ascii_lowercase();
    let name = p["name"].as_str().unwrap_or("").to_ascii_lowercase();
    if matches!(app.as_str(), "http" | "kubernetes.io/h2c") || name == "http" || name.starts_with("http-") {
        return Some(true);
    }
    if !app.is_empty() || name == "tcp" || name.starts_with("tcp-") {
        return Some(false);
    }
    None
}

/// Parse a Service object (ExternalName and non-TCP ports are not proxied).
pub fn service(o: &Value) -> Option<Service> {
    let spec = &o["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return None;
    }
    let ports = spec["ports"]
        .as_array()?
        .iter()
        .filter(|p| p["protocol"].as_str().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            Some(SvcPort {
                name: p["name"].as_str().unwrap_or("").to_string(),
                port: u16::try_from(p["port"].as_u64()?).ok()?,
                node_port: p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()),
                http: http_hint(p),
            })
        })
        .collect();
    let affinity = (spec["sessionAffinity"] == "ClientIP").then(|| {
        Duration::from_secs(spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"].as_u64().unwrap_or(10_800))
    });
    Some(Service {
        ns: o["metadata"]["namespace"].as_str().unwrap_or("default").to_string(),
        name: o["metadata"]["name"].as_str()?.to_string(),
        cluster_ip: spec["clusterIP"].as_str().and_then(|ip| ip.parse().ok()),
        ty,
        ports,
        affinity,
        algorithm: Algorithm::parse(o["metadata"]["annotations"]["wasmorch.io/load-balancer"].as_str()),
    })
}

impl Table {
    /// The table of `services` and their endpoint `slices`. Every endpoint keeps its node:
    /// the dialer decides by it how to reach the endpoint (see [`super::dial`]).
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Value>,
        slices: impl IntoIterator<Item = &'a Value>,
    ) -> Table {
        let mut t = Table::default();
        for s in services.into_iter().filter_map(service) {
            t.services.insert((s.ns.clone(), s.name.clone()), s);
        }
        for sl in slices {
            let ns = sl["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
            let Some(svc) = sl["metadata"]["labels"]["kubernetes.io/service-name"].as_str() else { continue };
            for p in sl["ports"].as_array().into_iter().flatten() {
                let Some(port) = p["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else { continue };
                let pname = p["name"].as_str().unwrap_or("").to_string();
                let list = t.endpoints.entry((ns.clone(), svc.to_string(), pname)).or_default();
                for e in sl["endpoints"].as_array().into_iter().flatten() {
                    let Some(ip) = e["addresses"][0].as_str().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
                    let node = e["nodeName"].as_str().unwrap_or("");
                    let c = &e["conditions"];
                    let ready = c["ready"].as_bool().unwrap_or(true);
                    list.push(Endpoint {
                        addr: SocketAddr::new(ip, port),
                        node: node.to_string(),
                        ready,
                        serving: c["serving"].as_bool().unwrap_or(ready),
                        terminating: c["terminating"].as_bool().unwrap_or(false),
                    });
                }
            }
        }
        for list in t.endpoints.values_mut() {
            list.sort_by_key(|e| e.addr);
        }
        t.index();
        t
    }

    /// Compute each Service port's targets: its ready endpoints; when none is ready, the
    /// terminating ones still serving (better than failing while a rollout finishes).
    fn index(&mut self) {
        self.routes.clear();
        for s in self.services.values() {
            for (i, port) in s.ports.iter().enumerate() {
                let all = self.endpoints.get(&(s.ns.clone(), s.name.clone(), port.name.clone()));
                let all = all.map_or(&[][..], Vec::as_slice);
                let mut endpoints: Vec<Endpoint> = all.iter().filter(|e| e.ready).cloned().collect();
                if endpoints.is_empty() {
                    endpoints = all.iter().filter(|e| e.serving && e.terminating).cloned().collect();
                }
                let targets = Targets {
                    addrs: endpoints.iter().map(|e| e.addr).collect(),
                    endpoints,
                    algorithm: s.algorithm,
                    affinity: s.affinity,
                };
                self.routes.insert(Route { ns: s.ns.clone(), name: s.name.clone(), port: i }, targets);
            }
        }
    }

    /// Where traffic for a Service port goes: ready endpoints; when none is ready, the
    /// terminating ones still serving.
    pub fn targets(&self, r: &Route) -> &[Endpoint] {
        self.routes.get(r).map_or(&[], |t| &t.endpoints)
    }

    /// The same, with how to choose among them; `None` for a port the table does not have.
    pub fn route(&self, r: &Route) -> Option<&Targets> {
        self.routes.get(r)
    }

    pub fn service(&self, r: &Route) -> Option<&Service> {
        self.services.get(&(r.ns.clone(), r.name.clone()))
    }

    /// The route to an Ingress backend: Service `ns/name`, its port by number or name.
    pub fn route_to(&self, b: &wasmorch_api::ingress::Backend) -> Option<Route> {
        use wasmorch_api::ingress::PortRef;
        let svc = self.services.get(&(b.namespace.clone(), b.service.clone()))?;
        let port = svc.ports.iter().position(|p| match &b.port {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(name) => p.name == *name,
        })?;
        Some(Route { ns: b.namespace.clone(), name: b.service.clone(), port })
    }

    /// Every address this node listens on for Services: cluster addresses (on loopback),
    /// and node ports and load-balancer ports on `node_ip`.
    pub fn listeners(&self, node_ip: IpAddr) -> BTreeMap<SocketAddr, Route> {
        let mut out = BTreeMap::new();
        for s in self.services.values() {
            for (i, p) in s.ports.iter().enumerate() {
                let route = Route { ns: s.ns.clone(), name: s.name.clone(), port: i };
                if let Some(ip) = s.cluster_ip {
                    out.insert(SocketAddr::new(IpAddr::V4(ip), p.port), route.clone());
                }
                if let Some(np) = p.node_port {
                    out.insert(SocketAddr::new(node_ip, np), route.clone());
                }
                if s.ty == "LoadBalancer" {
                    out.entry(SocketAddr::new(node_ip, p.port)).or_insert(route);
                }
            }
        }
        out
    }

    /// The Service a host name or address names, as seen from namespace `from`: `NAME`,
    /// `NAME.NS`, `NAME.NS.svc`, `NAME.NS.svc.cluster.local`, or its cluster IP.
    pub fn resolve(&self, host: &str, from: &str) -> Option<&Service> {
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return self.services.values().find(|s| s.cluster_ip == Some(ip));
        }
        let host = host.trim_end_matches('.');
        let host = host.strip_suffix(".svc.cluster.local").or_else(|| host.strip_suffix(".svc")).unwrap_or(host);
        let (name, ns) = match host.split_once('.') {
            Some((n, ns)) if !ns.contains('.') => (n, ns),
            Some(_) => return None,
            None => (host, from),
        };
        self.services.get(&(ns.to_string(), name.to_string()))
    }

    /// Whether a socket may connect to `addr`: a Service's cluster address and port.
    pub fn is_service_addr(&self, addr: SocketAddr) -> bool {
        self.route_at(addr).is_some()
    }

    /// The route of a Service's cluster address and port.
    pub fn route_at(&self, addr: SocketAddr) -> Option<Route> {
        let IpAddr::V4(ip) = addr.ip() else { return None };
        self.services.values().filter(|s| s.cluster_ip == Some(ip)).find_map(|s| {
            let port = s.ports.iter().position(|p| p.port == addr.port())?;
            Some(Route { ns: s.ns.clone(), name: s.name.clone(), port })
        })
    }

    /// Kubernetes' service environment variables for the Services of namespace `ns`, and
    /// for the API server's `kubernetes` Service in `default` in every namespace
    /// (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`, …).
    pub fn env(&self, ns: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let api = |s: &&Service| s.ns == "default" && s.name == "kubernetes";
        for s in self.services.values().filter(|s| s.ns == ns || api(s)) {
            let (Some(ip), Some(first)) = (s.cluster_ip, s.ports.first()) else { continue };
            let n = s.name.to_ascii_uppercase().replace('-', "_");
            out.push((format!("{n}_SERVICE_HOST"), ip.to_string()));
            out.push((format!("{n}_SERVICE_PORT"), first.port.to_string()));
            for p in s.ports.iter().filter(|p| !p.name.is_empty()) {
                out.push((
                    format!("{n}_SERVICE_PORT_{}", p.name.to_ascii_uppercase().replace('-', "_")),
                    p.port.to_string(),
                ));
            }
            out.push((format!("{n}_PORT"), format!("tcp://{ip}:{}", first.port)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ingress_backend_names_a_service_port_by_number_or_name() {
        use wasmorch_api::ingress::{Backend, PortRef};
        let svc = serde_json::json!({"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 80}]}});
        let t = super::Table::build([&svc], []);
        let b = |port| Backend { namespace: "shop".into(), service: "web".into(), port };
        assert_eq!(t.route_to(&b(PortRef::Number(80))).map(|r| r.port), Some(1));
        assert_eq!(t.route_to(&b(PortRef::Name("metrics".into()))).map(|r| r.port), Some(0));
        assert!(t.route_to(&b(PortRef::Number(81))).is_none());
        assert!(t.route_to(&Backend { namespace: "other".into(), ..b(PortRef::Number(80)) }).is_none());
    }

    use super::*;
    use serde_json::json;

    fn table() -> Table {
        let svcs = [
            json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {"type": "NodePort", "clusterIP": "127.43.0.5",
                "sessionAffinity": "ClientIP", "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "raw", "port": 9000}]}}),
            json!({"metadata": {"name": "db", "namespace": "e"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}),
            json!({"metadata": {"name": "lb", "namespace": "d"}, "spec": {"type": "LoadBalancer", "clusterIP": "127.43.0.6",
                "ports": [{"port": 443, "nodePort": 31443, "appProtocol": "https"}]}}),
            json!({"metadata": {"name": "ext", "namespace": "d"}, "spec": {"type": "ExternalName", "externalName": "x.y"}}),
        ];
        let slices = [json!({"metadata": {"namespace": "d", "labels": {"kubernetes.io/service-name": "web"}},
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["127.100.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "n1"},
            {"addresses": ["127.100.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "n2"},
            {"addresses": ["127.100.16.3"], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "elsewhere"},
        ]})];
        Table::build(svcs.iter(), slices.iter())
    }

    #[test]
    fn endpoints_keep_their_node() {
        let t = table();
        let mut all: Vec<&str> = t.endpoints.values().flatten().map(|e| e.node.as_str()).collect();
        all.sort();
        assert_eq!(all, ["elsewhere", "n1", "n2"]);
    }

    #[test]
    fn names_resolve_from_a_namespace() {
        let t = table();
        assert_eq!(t.resolve("web", "d").unwrap().name, "web");
        assert!(t.resolve("web", "e").is_none());
        for h in ["web.d", "web.d.svc", "web.d.svc.cluster.local", "web.d.svc.cluster.local.", "127.43.0.5"] {
            assert_eq!(t.resolve(h, "e").map(|s| s.name.as_str()), Some("web"), "{h}");
        }
        assert!(t.resolve("web.d.example.com", "d").is_none());
        assert!(t.resolve("ext", "d").is_none(), "ExternalName is not proxied");
        let web = t.resolve("web", "d").unwrap();
        assert_eq!(web.affinity, Some(Duration::from_secs(10_800)));
        assert_eq!(web.ports[0].http, Some(true));
        assert_eq!(web.ports[1].http, None);
        assert_eq!(t.resolve("lb", "d").unwrap().ports[0].http, Some(false));
    }

    #[test]
    fn targets_prefer_ready_then_terminating_and_listeners_cover_every_type() {
        let mut t = table();
        let r = Route { ns: "d".into(), name: "web".into(), port: 0 };
        let ready: Vec<_> = t.targets(&r).iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(ready, ["127.100.0.2:8080", "127.100.16.3:8080"]);
        for e in t.endpoints.values_mut().flatten() {
            e.ready = false;
        }
        t.index();
        let term: Vec<_> = t.targets(&r).iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(term, ["127.100.0.1:8080"], "only the terminating one still serving");
        assert!(t.targets(&Route { port: 1, ..r.clone() }).is_empty());
        let l = t.listeners("10.1.1.1".parse().unwrap());
        let keys: Vec<String> = l.keys().map(|a| a.to_string()).collect();
        assert_eq!(
            keys,
            ["10.1.1.1:443", "10.1.1.1:30080", "10.1.1.1:31443", "127.43.0.5:80", "127.43.0.5:9000", "127.43.0.6:443"]
        );
        assert!(t.is_service_addr("127.43.0.5:9000".parse().unwrap()));
        assert!(!t.is_service_addr("127.43.0.5:9001".parse().unwrap()));
        let env = t.env("d");
        assert!(env.contains(&("WEB_SERVICE_HOST".into(), "127.43.0.5".into())));
        assert!(env.contains(&("WEB_SERVICE_PORT".into(), "80".into())));
        assert!(env.contains(&("WEB_SERVICE_PORT_RAW".into(), "9000".into())));
        assert!(env.contains(&("LB_PORT".into(), "tcp://127.43.0.6:443".into())));
    }
}
