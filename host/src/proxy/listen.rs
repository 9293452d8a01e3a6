//! The proxy's listeners: one per Service address and port (cluster IP, node ports), each
//! connection answered at layer 7 when it speaks HTTP, else spliced at layer 4. With mapped
//! pod ports (`runtime::ports`) a cluster address's listener is on a port of 127.0.0.1 that
//! only this node's pods' sockets reach.

use super::table::{Route, Table};
use super::{Proxy, looks_like_http};
pub(super) use crate::runtime::http::accept_each;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Bind a Service listener. Node processes sharing a machine all listen on the Services'
/// cluster addresses; with `SO_REUSEPORT` (Unix) each gets its share of the connections
/// instead of the second failing to bind.
pub(super) fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    s.set_reuseaddr(true)?;
    #[cfg(unix)]
    s.set_reuseport(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

impl Proxy {
    pub(super) async fn reconcile_listeners(self: &Arc<Self>, table: &Table, stop: &CancellationToken) {
        let want = table.listeners(self.node_ip);
        let mut to_bind = Vec::new();
        {
            let mut have = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
            have.retain(|addr, (route, tok)| {
                let keep = want.get(addr) == Some(route);
                if !keep {
                    tok.cancel();
                    self.ports.remove(*addr);
                }
                keep
            });
            for (addr, route) in &want {
                if !have.contains_key(addr) {
                    to_bind.push((*addr, route.clone()));
                }
            }
        }
        for (addr, route) in to_bind {
            // Mapped pod ports: a cluster address is virtual too, served on a port of 127.0.0.1
            // for pods' sockets (node ports stay on the node's address).
            let at = if addr.ip() == self.node_ip { addr } else { self.ports.bind_addr(addr) };
            match bind_shared(at) {
                Ok(l) => {
                    if let Ok(real) = l.local_addr() {
                        self.ports.insert(addr, real);
                    }
                    let tok = stop.child_token();
                    self.listeners.lock().unwrap_or_else(|e| e.into_inner()).insert(addr, (route.clone(), tok.clone()));
                    tokio::spawn(self.clone().accept(l, route, tok));
                }
                Err(e) => tracing::warn!("service {}/{}: listening on {addr}: {e}", route.ns, route.name),
            }
        }
    }

    async fn accept(self: Arc<Self>, l: TcpListener, route: Route, stop: CancellationToken) {
        accept_each(l, stop, |tcp, peer| {
            tokio::spawn(self.clone().connection(tcp, peer, route.clone()));
        })
        .await;
    }

    async fn connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, route: Route) {
        let hint = self.table().service(&route).and_then(|s| s.ports.get(route.port)).and_then(|p| p.http);
        let http = match hint {
            Some(h) => h,
            None => {
                let mut buf = [0u8; 16];
                match tokio::time::timeout(Duration::from_millis(200), tcp.peek(&mut buf)).await {
                    Ok(Ok(n)) => looks_like_http(&buf[..n]),
                    // The client waits for the server to speak first: a byte stream.
                    _ => false,
                }
            }
        };
        if http {
            let this = self.clone();
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let (this, route) = (this.clone(), route.clone());
                let from = this.source_of(peer.ip());
                async move { Ok::<_, std::convert::Infallible>(this.forward(&route, from, Some(peer.ip()), req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        } else {
            self.splice(tcp, peer, &route).await;
        }
    }
}
