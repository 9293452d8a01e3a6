//! What a pod sees of the cluster: `wasi:http` requests to a Service name or cluster address
//! take the proxy's layer-7 path ([`super::Proxy::forward`]), requests to a pod address go
//! to that pod wherever it runs ([`super::Proxy::to_pod`]), and its sockets ask here what
//! NetworkPolicies allow.

use super::Proxy;
use super::policy::Source;
use super::table::Route;
use http_body_util::BodyExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use wasmtime_wasi_http::WasiBody;

/// A pod's view: its namespace (for short names), its address (the source policies judge)
/// and the node's proxy.
pub struct ClusterView {
    pub proxy: Arc<Proxy>,
    pub namespace: String,
    pub pod_ip: Option<IpAddr>,
}

impl ClusterView {
    /// Service environment variables for a container of this namespace.
    pub fn env(&self) -> Vec<(String, String)> {
        self.proxy.table().env(&self.namespace)
    }

    /// The route of a request whose host names a Service; `http://NAME/` without a port
    /// reaches a one-port Service on its port (or port 80 of a Service with several).
    fn route(&self, uri: &http::Uri) -> Option<Route> {
        let table = self.proxy.table();
        let svc = table.resolve(uri.host()?, &self.namespace)?;
        let idx = match uri.port_u16() {
            Some(p) => svc.ports.iter().position(|sp| sp.port == p),
            None if svc.ports.len() == 1 => Some(0),
            None => svc.ports.iter().position(|sp| sp.port == 80),
        };
        Some(Route { ns: svc.ns.clone(), name: svc.name.clone(), port: idx.unwrap_or(usize::MAX) })
    }
}

impl crate::runtime::Cluster for ClusterView {
    fn in_cluster(&self, addr: SocketAddr) -> bool {
        self.proxy.table().is_service_addr(addr) || self.proxy.pod_node(addr.ip()).is_some() || self.own_tunnel(addr)
    }

    fn policy_allows(&self, addr: SocketAddr, protocol: &str) -> Result<(), String> {
        let index = self.proxy.policy();
        // A tunnel's destination was judged before the tunnel was made.
        if !index.has_policies() || self.own_tunnel(addr) {
            return Ok(());
        }
        let from = self.source();
        let table = self.proxy.table();
        match table.route_at(addr) {
            // A socket to a Service reaches whichever endpoint the proxy picks: each must be allowed.
            Some(route) => table.targets(&route).iter().try_for_each(|e| index.decide(from, e.addr, protocol)),
            None => index.decide(from, addr, protocol),
        }
    }

    fn resolve(&self, name: &str) -> Option<Vec<IpAddr>> {
        if name.parse::<IpAddr>().is_ok() {
            return None;
        }
        let table = self.proxy.table();
        let svc = table.resolve(name, &self.namespace)?;
        match svc.cluster_ip {
            Some(ip) => Some(vec![IpAddr::V4(ip)]),
            None => {
                let route = super::table::Route { ns: svc.ns.clone(), name: svc.name.clone(), port: 0 };
                let mut addrs: Vec<IpAddr> = Vec::new();
                for e in table.targets(&route).iter() {
                    if !addrs.contains(&e.addr.ip()) {
                        addrs.push(e.addr.ip());
                    }
                }
                Some(addrs)
            }
        }
    }

    fn tunnel(&self, to: SocketAddr) -> Option<SocketAddr> {
        // Mapped pod ports: a pod or cluster address this node serves is a port of 127.0.0.1.
        if let Some(real) = self.proxy.ports.real(to) {
            return Some(real);
        }
        let from = self.pod_ip?;
        let to = super::Chosen { addr: to, node: self.proxy.pod_node(to.ip())? };
        match self.proxy.tunnel(from, to) {
            Ok(at) => at,
            Err(e) => {
                tracing::warn!("a tunnel for a socket of pod {from}: {e}");
                None
            }
        }
    }

    fn has_policies(&self) -> bool {
        self.proxy.policy().has_policies()
    }

    fn send(
        &self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
    ) -> Result<crate::runtime::SendFuture, http::Request<WasiBody>> {
        let (from, client) = (self.source(), self.pod_ip);
        let proxy = self.proxy.clone();
        let Some(route) = self.route(request.uri()) else {
            let Some(to) = self.pod_addr(request.uri()) else { return Err(request) };
            return Ok(Box::pin(async move { answer(proxy.to_pod(from, to, request).await) }));
        };
        if route.ns == "default" && route.name == "kubernetes" {
            return Ok(Box::pin(async move { answer(proxy.to_api(&route, from, request).await) }));
        }
        Ok(Box::pin(async move {
            if proxy.table().targets(&route).is_empty() && proxy.hold(&route).await.is_err() {
                return Err(wasmtime_wasi_http::p2::bindings::http::types::ErrorCode::DestinationUnavailable.into());
            }
            answer(proxy.forward(&route, from, client, request).await)
        }))
    }
}

impl ClusterView {
    /// Whether `addr` is a tunnel this pod's socket is to connect to (it speaks for this pod:
    /// no other may use it).
    fn own_tunnel(&self, addr: SocketAddr) -> bool {
        self.pod_ip.is_some() && self.proxy.tunnel_owner(addr) == self.pod_ip
    }

    fn source(&self) -> Source {
        self.pod_ip.map_or(Source::Node, Source::Ip)
    }

    /// The pod a request's host names by address (`http://POD_IP:PORT/`), with its node.
    fn pod_addr(&self, uri: &http::Uri) -> Option<super::Chosen> {
        let ip: IpAddr = uri.host()?.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
        let node = self.proxy.pod_node(ip)?;
        Some(super::Chosen { addr: SocketAddr::new(ip, uri.port_u16().unwrap_or(80)), node })
    }
}

/// The proxy's answer as `wasi:http` gives it to the pod: a NetworkPolicy refusal is a
/// denied request, not a response.
fn answer(resp: hyper::Response<super::ProxyBody>) -> crate::runtime::SendResult {
    if resp.headers().contains_key(super::policy::DENIED_HEADER) {
        return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
    }
    let resp =
        resp.map(|b| b.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))).boxed_unsync());
    let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> = Box::new(async { Ok(()) });
    Ok((resp, io))
}
