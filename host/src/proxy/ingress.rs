//! The node's Ingress controller: every node's proxy serves the Ingresses of the `wasmorch`
//! class (or of no class while it is the default) on `NODE_ADDRESS:--ingress-http-port`
//! (80 by default), and those with `spec.tls` on `--ingress-https-port` (443; certificates by
//! SNI from their Secrets: [`super::ingress_tls`]); the listeners are the edge's
//! ([`super::edge`]). A request's host and path pick a backend
//! (`wasmorch_api::ingress::Router`, Kubernetes' precedence); it then takes the same path as
//! a request to that Service ([`Proxy::forward`]: load balancing, in-process answers, a
//! retry on another endpoint, NetworkPolicies, wake-up of a sleeping workload).

use super::{Proxy, ProxyBody, text};
use hyper::body::Incoming;
use std::net::SocketAddr;

/// The host a request names: `Host` (HTTP/1.1), else the URI's authority (HTTP/2).
pub(super) fn host_of<B>(req: &hyper::Request<B>) -> String {
    req.headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

impl Proxy {
    /// One request through the Ingress: route by host and path, then as to the Service.
    pub async fn ingress_request(&self, peer: SocketAddr, req: hyper::Request<Incoming>) -> hyper::Response<ProxyBody> {
        let host = host_of(&req);
        let router = self.ingress_router();
        let Some(backend) = router.route(&host, req.uri().path()) else {
            return text(404, &format!("no Ingress rule matches {host}{}\n", req.uri().path()));
        };
        let Some(route) = self.table().route_to(backend) else {
            return text(
                503,
                &format!("the Ingress backend {}/{} has no such Service port\n", backend.namespace, backend.service),
            );
        };
        self.forward(&route, self.source_of(peer.ip()), Some(peer.ip()), req).await
    }
}
