//! The node's Ingress controller: every node's proxy serves the Ingresses of the `wasmorch`
//! class (or of no class while it is the default) on `NODE_ADDRESS:--ingress-http-port`
//! (80 by default), and those with `spec.tls` on `--ingress-https-port` (443; certificates by
//! SNI from their Secrets: [`super::ingress_tls`]). A request's host and path pick a backend
//! (`wasmorch_api::ingress::Router`, Kubernetes' precedence); it then takes the same path as
//! a request to that Service ([`Proxy::forward`]: load balancing, in-process answers, a
//! retry on another endpoint, NetworkPolicies, wake-up of a sleeping workload). The listener
//! exists while some Ingress is served.

use super::ingress_tls as tls;
use super::{Proxy, ProxyBody, text};
use crate::client::Client;
use crate::reflector::{Projection, follow, whole};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wasmorch_api::ingress::{self, Router};

/// Start or stop a listener so that one runs exactly while `want`.
fn toggle(slot: &mut Option<CancellationToken>, want: bool, start: impl FnOnce() -> Option<CancellationToken>) {
    match (slot.is_some(), want) {
        (false, true) => *slot = start(),
        (true, false) => {
            if let Some(t) = slot.take() {
                t.cancel();
            }
        }
        _ => {}
    }
}

/// The host a request names: `Host` (HTTP/1.1), else the URI's authority (HTTP/2).
fn host_of<B>(req: &hyper::Request<B>) -> String {
    req.headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

impl Proxy {
    pub fn ingress_router(&self) -> Arc<Router> {
        self.ingress.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Follow Ingresses and IngressClasses until `stop`, keeping the router, the TLS
    /// certificates and the listeners in step.
    pub(super) async fn run_ingress(self: Arc<Self>, client: Client, stop: CancellationToken) {
        let changed = Arc::new(Notify::new());
        let spawn = |path: &'static str| {
            let mut p = Projection::new(whole, changed.clone());
            let map = p.map.clone();
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move { follow(&client, path, "", &mut p, &stop).await });
            map
        };
        let ingresses = spawn("/apis/networking.k8s.io/v1/ingresses");
        let classes = spawn("/apis/networking.k8s.io/v1/ingressclasses");
        let resolver = Arc::new(tls::Resolver::default());
        let tls_config = match tls::server_config(resolver.clone()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("ingress TLS: {e}");
                None
            }
        };
        // Secrets read so far: (namespace, name) → (resourceVersion, certificate).
        let mut secrets: HashMap<(String, String), (String, Arc<rustls::sign::CertifiedKey>)> = HashMap::new();
        let (mut http, mut https): (Option<CancellationToken>, Option<CancellationToken>) = (None, None);
        let mut entries: Vec<tls::TlsEntry> = Vec::new();
        loop {
            // While some Ingress has TLS, its Secrets are read again every REFRESH.
            let refresh = if entries.is_empty() { Duration::from_secs(3600) } else { tls::REFRESH };
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(refresh) => {}
                _ = stop.cancelled() => break,
            }
            let default = classes.lock().unwrap_or_else(|e| e.into_inner()).values().any(ingress::is_default_class);
            let (router, tls_entries) = {
                let all = ingresses.lock().unwrap_or_else(|e| e.into_inner());
                let ours: Vec<&serde_json::Value> = all.values().filter(|i| ingress::is_ours(i, default)).collect();
                (Arc::new(Router::build(ours.iter().copied())), tls::entries(ours.iter().copied()))
            };
            entries = tls_entries;
            let mut table = tls::SniTable::default();
            let mut wanted = std::collections::HashSet::new();
            for (ns, name, hosts) in &entries {
                let key = (ns.clone(), name.clone());
                wanted.insert(key.clone());
                match client.get(&format!("/api/v1/namespaces/{ns}/secrets/{name}")).await {
                    Ok(secret) => {
                        let rv = secret.pointer("/metadata/resourceVersion").and_then(|v| v.as_str()).unwrap_or("");
                        if secrets.get(&key).is_none_or(|(have, _)| have != rv) {
                            match tls::certified_key(&secret) {
                                Ok(k) => {
                                    secrets.insert(key.clone(), (rv.to_string(), k));
                                }
                                Err(e) => tracing::warn!("ingress TLS: Secret {ns}/{name}: {e}"),
                            }
                        }
                    }
                    // Unreadable now (deleted, or the server away): the last good one stays.
                    Err(e) => tracing::debug!("ingress TLS: Secret {ns}/{name}: {e}"),
                }
                if let Some((_, k)) = secrets.get(&key) {
                    table.add(hosts, k.clone());
                }
            }
            secrets.retain(|k, _| wanted.contains(k));
            let serve_tls = !table.is_empty() && tls_config.is_some();
            *resolver.table.write().unwrap_or_else(|e| e.into_inner()) = table;
            let serve = !router.is_empty();
            *self.ingress.write().unwrap_or_else(|e| e.into_inner()) = router;
            let http_port = self.ingress_port.load(std::sync::atomic::Ordering::Relaxed);
            let https_port = self.ingress_https_port.load(std::sync::atomic::Ordering::Relaxed);
            toggle(&mut http, serve, || self.clone().listen_ingress(http_port, None, &stop));
            toggle(&mut https, serve_tls, || self.clone().listen_ingress(https_port, tls_config.clone(), &stop));
        }
        for t in [http, https].into_iter().flatten() {
            t.cancel();
        }
    }

    /// Listen on `port` of the node's address (with TLS when `tls` is given) and serve the
    /// Ingresses there; `None` when the port cannot be had (said in the log).
    fn listen_ingress(
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
                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE: give the node --ingress-http-port 8080 --ingress-https-port 8443)"
                } else {
                    ""
                };
                tracing::warn!("ingress: listening on {addr}: {e}{hint}");
                return None;
            }
        };
        let tok = stop.child_token();
        let t = tok.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(super::listen::accept_each(l, t, move |tcp, peer| {
            let (this, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let this = this.clone();
                    async move { Ok::<_, std::convert::Infallible>(this.ingress_request(peer, req).await) }
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
                        Ok(Err(e)) => tracing::debug!("ingress TLS handshake from {peer}: {e}"),
                        Err(_) => tracing::debug!("ingress TLS handshake from {peer}: timed out"),
                    },
                }
            });
        }));
        Some(tok)
    }

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
