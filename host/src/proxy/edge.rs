//! The node's edge: the ports of the node's address where traffic from outside the cluster
//! comes in by host name and path — the Ingresses' ([`super::ingress`]) and the Gateways'
//! listeners ([`super::routes`]). One loop follows both kinds and keeps one listener per
//! port, so a port the two share is served by one socket that asks the Gateway routes
//! first, then the Ingress rules:
//!
//! - `--ingress-http-port` (80) while some Ingress is served, `--ingress-https-port` (443)
//!   while some served Ingress has `spec.tls`;
//! - every port of a listener of a Gateway of wasmorch's class (HTTP, or HTTPS with the
//!   certificates its listeners name).
//!
//! A port wanted both plain and with TLS is served as the Ingresses (then the oldest
//! Gateway) want it first. A Gateway listener on a port a Service takes on this address (a
//! node port, a load-balancer port) is not served (its status says `PortUnavailable`). TLS certificates are per port, chosen by SNI; the Secrets are
//! read again every [`tls::REFRESH`] while any is in use, so a rotated certificate is
//! served on new connections.

use super::ingress_tls as tls;
use super::{Proxy, ProxyBody, text};
use crate::client::Client;
use crate::reflector::{Projection, follow, whole};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wasmorch_api::gateway;
use wasmorch_api::ingress::{self, Router};

type Certificate = Arc<rustls::sign::CertifiedKey>;

/// Secrets read so far: (namespace, name) → (resourceVersion, certificate).
#[derive(Default)]
struct Certificates(HashMap<(String, String), (String, Certificate)>);

impl Certificates {
    /// The certificate of Secret `ns/name`, read again when it changed; the last good one
    /// while it cannot be read.
    async fn get(&mut self, client: &Client, ns: &str, name: &str) -> Option<Certificate> {
        let key = (ns.to_string(), name.to_string());
        match client.get(&format!("/api/v1/namespaces/{ns}/secrets/{name}")).await {
            Ok(secret) => {
                let rv = secret.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("");
                if self.0.get(&key).is_none_or(|(have, _)| have != rv) {
                    match tls::certified_key(&secret) {
                        Ok(k) => {
                            self.0.insert(key.clone(), (rv.to_string(), k));
                        }
                        Err(e) => tracing::warn!("edge TLS: Secret {ns}/{name}: {e}"),
                    }
                }
            }
            Err(e) => tracing::debug!("edge TLS: Secret {ns}/{name}: {e}"),
        }
        self.0.get(&key).map(|(_, k)| k.clone())
    }
}

/// What the edge should serve, decided from what the node follows.
struct Wanted {
    router: Router,
    routes: gateway::Table,
    /// Port → TLS entries (Secret namespace, name, host names; none: the default).
    tls: BTreeMap<u16, Vec<tls::TlsEntry>>,
    /// Port → whether it is served with TLS.
    ports: BTreeMap<u16, bool>,
}

/// What the node follows for the edge, as last seen.
#[derive(Default)]
struct Seen {
    ingresses: Vec<Value>,
    ingress_classes: Vec<Value>,
    gateway_classes: Vec<Value>,
    gateways: Vec<Value>,
    routes: Vec<Value>,
    grants: Vec<Value>,
    namespaces: HashMap<String, Value>,
}

/// What the edge serves, given what it sees, the Ingress ports (HTTP, HTTPS) and the ports
/// Services take on this address.
fn wanted(seen: &Seen, (http_port, https_port): (u16, u16), reserved: &BTreeSet<u16>) -> Wanted {
    let default_class = seen.ingress_classes.iter().any(ingress::is_default_class);
    let ingresses = &seen.ingresses;
    let namespaces = &seen.namespaces;
    let classes: Vec<&str> =
        seen.gateway_classes.iter().filter(|c| gateway::status::is_ours(c)).map(wasmorch_api::object::name).collect();
    let gateways = seen
        .gateways
        .iter()
        .filter(|g| g.pointer("/spec/gatewayClassName").and_then(Value::as_str).is_some_and(|c| classes.contains(&c)));
    let routes = &seen.routes;
    let grants = &seen.grants;
    let ours: Vec<&Value> = ingresses.iter().filter(|i| ingress::is_ours(i, default_class)).collect();
    let router = Router::build(ours.iter().copied());
    let labels = |ns: &str| namespaces.get(ns).map(wasmorch_api::object::labels);
    // Backends are resolved per request against the Services this node follows.
    let grants = gateway::Grants::new(grants);
    let refs = gateway::Refs { service_exists: &|_, _| true, grants: &grants };
    let table = gateway::Table::build(gateways, routes, &labels, &refs);
    let mut ports = BTreeMap::new();
    let mut tls_entries: BTreeMap<u16, Vec<tls::TlsEntry>> = BTreeMap::new();
    if !router.is_empty() {
        ports.insert(http_port, false);
    }
    let ingress_tls = tls::entries(ours.iter().copied());
    if !ingress_tls.is_empty() {
        ports.entry(https_port).or_insert(true);
        tls_entries.insert(https_port, ingress_tls);
    }
    // A Service's node port or load-balancer port on this address is the Service's: a
    // Gateway listener there would take a share of its connections (SO_REUSEPORT).
    for (port, t) in table.ports.iter().filter(|(p, _)| !reserved.contains(p)) {
        ports.entry(*port).or_insert(t.protocol == Some(gateway::Protocol::Https));
    }
    for (port, host, (ns, name)) in table.certificates.iter().filter(|(p, _, _)| !reserved.contains(p)) {
        tls_entries.entry(*port).or_default().push((ns.clone(), name.clone(), host.iter().cloned().collect()));
    }
    Wanted { router, routes: table, tls: tls_entries, ports }
}

/// A listener serving one port.
struct Running {
    tls: bool,
    stop: CancellationToken,
}

impl Proxy {
    pub fn ingress_router(&self) -> Arc<Router> {
        self.ingress.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn gateway_routes(&self) -> Arc<gateway::Table> {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Follow Ingresses, IngressClasses and the Gateway API's kinds until `stop`, keeping the
    /// routing tables, the TLS certificates and the listeners in step.
    pub(super) async fn run_edge(self: Arc<Self>, client: Client, stop: CancellationToken) {
        let changed = Arc::new(Notify::new());
        let spawn = |path: &'static str| {
            let mut p = Projection::new(whole, changed.clone());
            let map = p.map.clone();
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move { follow(&client, path, "", &mut p, &stop).await });
            map
        };
        let ingresses = spawn("/apis/networking.k8s.io/v1/ingresses");
        let ingress_classes = spawn("/apis/networking.k8s.io/v1/ingressclasses");
        let classes = spawn("/apis/gateway.networking.k8s.io/v1/gatewayclasses");
        let gateways = spawn("/apis/gateway.networking.k8s.io/v1/gateways");
        let routes = spawn("/apis/gateway.networking.k8s.io/v1/httproutes");
        let grants = spawn("/apis/gateway.networking.k8s.io/v1beta1/referencegrants");
        let namespaces = spawn("/api/v1/namespaces");
        let mut certificates = Certificates::default();
        let mut resolvers: HashMap<u16, (Arc<tls::Resolver>, Arc<rustls::ServerConfig>)> = HashMap::new();
        let mut running: HashMap<u16, Running> = HashMap::new();
        let mut uses_tls = false;
        let mut reserved = BTreeSet::new();
        let mut truncated = false;
        loop {
            // While some certificate is served, its Secret is read again every REFRESH.
            let refresh = if uses_tls { tls::REFRESH } else { Duration::from_secs(3600) };
            let services_changed = tokio::select! {
                _ = changed.notified() => false,
                _ = self.table_changed.notified() => true,
                _ = tokio::time::sleep(refresh) => false,
                _ = stop.cancelled() => break,
            };
            let now_reserved: BTreeSet<u16> = self
                .table()
                .listeners(self.node_ip)
                .keys()
                .filter(|a| a.ip() == self.node_ip)
                .map(|a| a.port())
                .collect();
            // Endpoints change often; only the Services' ports on this address matter here.
            if services_changed && now_reserved == reserved {
                continue;
            }
            reserved = now_reserved;
            let lock = |m: &Arc<std::sync::Mutex<HashMap<String, Value>>>| {
                m.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect::<Vec<Value>>()
            };
            let seen = Seen {
                ingresses: lock(&ingresses),
                ingress_classes: lock(&ingress_classes),
                gateway_classes: lock(&classes),
                gateways: lock(&gateways),
                routes: lock(&routes),
                grants: lock(&grants),
                namespaces: namespaces.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            };
            let ports = (
                self.ingress_port.load(std::sync::atomic::Ordering::Relaxed),
                self.ingress_https_port.load(std::sync::atomic::Ordering::Relaxed),
            );
            let want = wanted(&seen, ports, &reserved);
            if want.routes.truncated && !truncated {
                tracing::warn!(
                    "gateway: a port holds {} route entries, the most served; the newest HTTPRoutes are left out",
                    gateway::MAX_ENTRIES
                );
            }
            truncated = want.routes.truncated;
            // Certificates per TLS port.
            uses_tls = want.tls.values().any(|e| !e.is_empty());
            let mut in_use = std::collections::HashSet::new();
            for (port, entries) in &want.tls {
                let mut table = tls::SniTable::default();
                for (ns, name, hosts) in entries {
                    in_use.insert((ns.clone(), name.clone()));
                    if let Some(k) = certificates.get(&client, ns, name).await {
                        table.add(hosts, k);
                    }
                }
                if !resolvers.contains_key(port) {
                    let r = Arc::new(tls::Resolver::default());
                    match tls::server_config(r.clone()) {
                        Ok(c) => {
                            resolvers.insert(*port, (r, c));
                        }
                        Err(e) => tracing::warn!("edge TLS: {e}"),
                    }
                }
                if let Some((r, _)) = resolvers.get(port) {
                    *r.table.write().unwrap_or_else(|e| e.into_inner()) = table;
                }
            }
            certificates.0.retain(|k, _| in_use.contains(k));
            resolvers.retain(|p, _| want.tls.contains_key(p));
            *self.ingress.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(want.router);
            *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(want.routes);
            // Listeners: stop those no longer wanted (or wanted otherwise), start the rest.
            running.retain(|port, r| {
                let keep = want.ports.get(port) == Some(&r.tls);
                if !keep {
                    r.stop.cancel();
                }
                keep
            });
            for (port, tls) in &want.ports {
                if running.contains_key(port) {
                    continue;
                }
                let config = if *tls {
                    match resolvers.get(port) {
                        Some((r, c)) if !r.table.read().unwrap_or_else(|e| e.into_inner()).is_empty() => {
                            Some(c.clone())
                        }
                        // No certificate yet: not served until one is read.
                        _ => continue,
                    }
                } else {
                    None
                };
                if let Some(t) = self.clone().listen_edge(*port, config, &stop) {
                    running.insert(*port, Running { tls: *tls, stop: t });
                }
            }
        }
        for r in running.values() {
            r.stop.cancel();
        }
    }

    /// Listen on `port` of the node's address (with TLS when `tls` is given); `None` when
    /// the port cannot be had (said in the log).
    fn listen_edge(
        self: Arc<Self>,
        port: u16,
        tls: Option<Arc<rustls::ServerConfig>>,
        stop: &CancellationToken,
    ) -> Option<CancellationToken> {
        let addr = SocketAddr::new(self.node_ip, port);
        let l = match super::listen::bind_shared(addr) {
            Ok(l) => l,
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE: give the node --ingress-http-port 8080 --ingress-https-port 8443, and Gateway listeners ports above 1023)"
                } else {
                    ""
                };
                tracing::warn!("edge: listening on {addr}: {e}{hint}");
                return None;
            }
        };
        let tok = stop.child_token();
        let t = tok.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(super::listen::accept_each(l, t, move |tcp, peer| {
            let (this, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                let secure = acceptor.is_some();
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let this = this.clone();
                    async move { Ok::<_, std::convert::Infallible>(this.edge_request(port, secure, peer, req).await) }
                });
                let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    None => {
                        let _ = server.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    Some(a) => match tokio::time::timeout(Duration::from_secs(10), a.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = server.serve_connection(TokioIo::new(tls), svc).await;
                        }
                        Ok(Err(e)) => tracing::debug!("edge TLS handshake from {peer}: {e}"),
                        Err(_) => tracing::debug!("edge TLS handshake from {peer}: timed out"),
                    },
                }
            });
        }));
        Some(tok)
    }

    /// One request at the edge: the Gateway routes of this port first, then the Ingresses
    /// (on their ports); 404 when neither has a rule for it.
    pub async fn edge_request(
        &self,
        port: u16,
        secure: bool,
        peer: SocketAddr,
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<ProxyBody> {
        let req = match self.gateway_request(port, secure, peer, req).await {
            Ok(resp) => return resp,
            Err(req) => req,
        };
        let ingress_port = if secure { &self.ingress_https_port } else { &self.ingress_port };
        if ingress_port.load(std::sync::atomic::Ordering::Relaxed) == port {
            return self.ingress_request(peer, req).await;
        }
        let host = super::ingress::host_of(&req);
        text(404, &format!("no route matches {host}{}\n", req.uri().path()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seen() -> Seen {
        let ing = json!({"metadata": {"name": "i", "namespace": "web"}, "spec": {"ingressClassName": "wasmorch",
            "rules": [{"host": "a.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "a", "port": {"number": 80}}}}]}}],
            "tls": [{"hosts": ["a.com"], "secretName": "a-cert"}]}});
        let class = json!({"metadata": {"name": "wasmorch"}, "spec": {"controllerName": gateway::CONTROLLER}});
        let other = json!({"metadata": {"name": "other"}, "spec": {"controllerName": "example.com/x"}});
        let gw = |name: &str, class: &str, listeners: Value| json!({"metadata": {"name": name, "namespace": "web"}, "spec": {"gatewayClassName": class, "listeners": listeners}});
        Seen {
            ingresses: vec![ing],
            gateway_classes: vec![class, other],
            gateways: vec![
                gw(
                    "ours",
                    "wasmorch",
                    json!([
                    {"name": "h", "port": 8080, "protocol": "HTTP"},
                    {"name": "s", "port": 443, "protocol": "HTTPS", "hostname": "b.com", "tls": {"certificateRefs": [{"name": "b-cert"}]}},
                    {"name": "n", "port": 30080, "protocol": "HTTP"}]),
                ),
                gw("theirs", "other", json!([{"name": "h", "port": 9090, "protocol": "HTTP"}])),
            ],
            ..Seen::default()
        }
    }

    #[test]
    fn the_edge_serves_ingress_and_gateway_ports_but_not_a_services() {
        let w = wanted(&seen(), (80, 443), &BTreeSet::from([30080]));
        // Ingress HTTP on 80 and TLS on 443 (shared with the Gateway's HTTPS listener), the
        // Gateway's HTTP on 8080; not another class's 9090, nor a Service's 30080.
        assert_eq!(w.ports, BTreeMap::from([(80, false), (443, true), (8080, false)]));
        let on_443: Vec<(String, Vec<String>)> = w.tls[&443].iter().map(|(_, n, h)| (n.clone(), h.clone())).collect();
        assert_eq!(
            on_443,
            [("a-cert".to_string(), vec!["a.com".to_string()]), ("b-cert".to_string(), vec!["b.com".to_string()])]
        );
        assert!(!w.router.is_empty() && w.routes.ports.contains_key(&8080));
        // Without Ingresses, nothing listens on their ports.
        let none = Seen { ingresses: vec![], ..seen() };
        assert_eq!(
            wanted(&none, (80, 443), &BTreeSet::new()).ports.keys().copied().collect::<Vec<_>>(),
            [443, 8080, 30080]
        );
    }
}
