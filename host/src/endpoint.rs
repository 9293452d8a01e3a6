//! The node's endpoint: one TLS listener on the node's address (its port is in the Node's
//! `status.daemonEndpoints`), mutual TLS with certificates from the cluster CA. Who may use
//! it is decided by the peer's certificate, per connection:
//! - the API server (CN `wasmorch:apiserver-kubelet-client`): logs and the Summary API
//!   ([`crate::logs`]), exec, attach and port-forward ([`crate::streams`]);
//! - another node (CN `system:node:<name>`): the node-to-node gateway
//!   ([`crate::proxy::gateway`]), HTTP/2;
//! - anyone else: 403.

use crate::logs::LogServer;
use crate::membership::peer_common_name;
use crate::proxy::{BoxError, Proxy, ProxyBody};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Who is calling, from the certificate's common name.
#[derive(Debug, PartialEq, Eq)]
pub enum Caller {
    ApiServer,
    Node(String),
    Other,
}

pub fn caller(cn: Option<&str>) -> Caller {
    match cn {
        Some(wasmorch_api::join::APISERVER_CLIENT) => Caller::ApiServer,
        Some(cn) => match cn.strip_prefix(wasmorch_api::join::NODE_USER_PREFIX) {
            Some(node) if !node.is_empty() => Caller::Node(node.to_string()),
            _ => Caller::Other,
        },
        None => Caller::Other,
    }
}

/// Serve the endpoint until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    logs: Arc<LogServer>,
    proxy: Arc<Proxy>,
    tls: Arc<rustls::ServerConfig>,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            _ = stop.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        let (logs, proxy, stop, acceptor) = (logs.clone(), proxy.clone(), stop.clone(), acceptor.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "node endpoint TLS: {e}");
                    return;
                }
                Err(_) => return,
            };
            let cn = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| peer_common_name(c));
            let who = Arc::new(caller(cn.as_deref()));
            let svc = hyper::service::service_fn(move |req| {
                let (logs, proxy, stop, who) = (logs.clone(), proxy.clone(), stop.clone(), who.clone());
                async move {
                    let resp: hyper::Response<ProxyBody> = match &*who {
                        Caller::ApiServer => logs
                            .handle(req, stop)
                            .await
                            .map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()),
                        Caller::Node(name) => crate::proxy::gateway::serve(proxy, name.clone(), req).await,
                        Caller::Other => {
                            crate::proxy::text(403, "only the API server and cluster nodes are served here\n")
                        }
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_told_apart_by_their_certificate() {
        assert_eq!(caller(Some("wasmorch:apiserver-kubelet-client")), Caller::ApiServer);
        assert_eq!(caller(Some("system:node:pi-1")), Caller::Node("pi-1".into()));
        assert_eq!(caller(Some("system:node:")), Caller::Other);
        assert_eq!(caller(Some("admin")), Caller::Other);
        assert_eq!(caller(None), Caller::Other);
    }
}
