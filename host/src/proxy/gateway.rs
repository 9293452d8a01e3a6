//! The node-to-node gateway: how a pod on another machine is reached.
//!
//! Every node serves its gateway on its endpoint (the address and port in its Node's
//! `status.daemonEndpoints`), over the mutual TLS of the join: the caller presents its node
//! certificate (`system:node:<name>` from the cluster CA) and checks that the callee's names
//! the node it meant to reach. One HTTP/2 connection per peer carries every stream:
//! - `CONNECT <podIP>:<port>`: a byte stream to the pod's socket (layer 4: the proxy's
//!   spliced connections);
//! - any other request, its URI's authority `<podIP>:<port>`: one HTTP request to the pod,
//!   answered in process when an HTTP workload serves it there (no socket on either side).
//!
//! The receiving side ([`serve`]) admits a stream only from a node it knows (a Node object
//! of that name) and only to a pod it runs ([`admit`]). A refusal or a failed dial answers
//! 502 with [`UNREACHABLE`], which the caller treats like a failed connection: the request
//! is safe to send to another endpoint.

use super::{BoxError, Proxy, ProxyBody, text};
use crate::membership::Membership;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Marks a gateway answer given before any pod saw the request.
pub const UNREACHABLE: &str = "x-wasmorch-unreachable";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a stream could not be opened.
#[derive(Debug)]
pub struct Failure {
    /// Nothing reached the pod: another endpoint may be tried.
    pub before_pod: bool,
    pub message: String,
}

impl Failure {
    fn early(message: String) -> Failure {
        Failure { before_pod: true, message }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>>;

/// The caller's side: one pooled HTTP/2 connection per peer node.
pub struct Gateways {
    member: Option<Arc<Membership>>,
    /// Per (node, gateway address). Pruned to the known nodes by [`Gateways::retain`].
    conns: Mutex<HashMap<(String, SocketAddr), Slot>>,
}

impl Gateways {
    pub fn new(member: Option<Arc<Membership>>) -> Gateways {
        Gateways { member, conns: Mutex::new(HashMap::new()) }
    }

    /// Forget connections to nodes that are gone.
    pub fn retain(&self, known: impl Fn(&str) -> bool) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).retain(|(n, _), _| known(n));
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let member = self.member.as_ref().ok_or("this node has no certificate for the gateway")?;
        let creds = member.current();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(creds.ca_pem.as_bytes()) {
            roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(creds.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes()).map_err(|e| e.to_string())?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| e.to_string())?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The connection to `node` at `at`, made when there is none (or it broke).
    async fn sender(&self, node: &str, at: SocketAddr) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let slot =
            self.conns.lock().unwrap_or_else(|e| e.into_inner()).entry((node.to_string(), at)).or_default().clone();
        // Held while connecting: concurrent first requests share one connection.
        let mut held = slot.lock().await;
        if let Some(s) = held.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let name = ServerName::try_from(node.to_string()).map_err(|e| Failure::early(format!("node name: {e}")))?;
        let tls = self.tls().map_err(Failure::early)?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(at))
            .await
            .map_err(|_| Failure::early(format!("gateway of {node} at {at}: connect timed out")))?
            .map_err(|e| Failure::early(format!("gateway of {node} at {at}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio_rustls::TlsConnector::from(tls).connect(name, tcp))
            .await
            .map_err(|_| Failure::early(format!("gateway of {node} at {at}: TLS timed out")))?
            .map_err(|e| Failure::early(format!("gateway of {node} at {at}: TLS: {e}")))?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .adaptive_window(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::early(format!("gateway of {node} at {at}: {e}")))?;
        let peer = node.to_string();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer, "gateway connection: {e}");
            }
        });
        *held = Some(send.clone());
        Ok(send)
    }

    /// One HTTP request to `target` (a pod of `node`), whose body is already buffered.
    pub async fn request(
        &self,
        node: &str,
        at: SocketAddr,
        target: SocketAddr,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, Failure> {
        let mut send = self.sender(node, at).await?;
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut b = http::Request::builder().method(parts.method.clone()).uri(format!("http://{target}{path}"));
        for (k, v) in &parts.headers {
            if !hop_by_hop(k) {
                b = b.header(k, v);
            }
        }
        let req = b.body(Full::new(body)).map_err(|e| Failure::early(format!("request: {e}")))?;
        send.ready().await.map_err(|e| Failure::early(format!("gateway of {node}: {e}")))?;
        let resp = send.send_request(req).await.map_err(|e| Failure {
            // A stream the peer refused before reading it never reached a pod.
            before_pod: e.is_canceled(),
            message: format!("gateway of {node}: {e}"),
        })?;
        if resp.headers().contains_key(UNREACHABLE) {
            let why = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(Failure::early(String::from_utf8_lossy(&why).trim().to_string()));
        }
        Ok(resp)
    }

    /// A byte stream to `target` (a pod of `node`).
    pub async fn connect(
        &self,
        node: &str,
        at: SocketAddr,
        target: SocketAddr,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, Failure> {
        let mut send = self.sender(node, at).await?;
        let req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(target.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| Failure::early(format!("request: {e}")))?;
        send.ready().await.map_err(|e| Failure::early(format!("gateway of {node}: {e}")))?;
        let resp = send.send_request(req).await.map_err(|e| Failure::early(format!("gateway of {node}: {e}")))?;
        if resp.status() != http::StatusCode::OK {
            let why = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(Failure::early(String::from_utf8_lossy(&why).trim().to_string()));
        }
        let up = hyper::upgrade::on(resp).await.map_err(|e| Failure::early(format!("gateway of {node}: {e}")))?;
        Ok(TokioIo::new(up))
    }
}

/// Headers that belong to one connection, not to the request.
pub fn hop_by_hop(k: &http::HeaderName) -> bool {
    use http::header::*;
    k == CONNECTION
        || k == TRANSFER_ENCODING
        || k == UPGRADE
        || k == TE
        || k == PROXY_AUTHORIZATION
        || k.as_str() == "keep-alive"
        || k.as_str() == "proxy-connection"
}

/// Whether the receiving node lets `peer` open a stream to `target`. Pure.
pub fn admit(
    peer: &str,
    peer_known: bool,
    target: Option<SocketAddr>,
    runs: impl Fn(IpAddr) -> bool,
) -> Result<SocketAddr, String> {
    if !peer_known {
        return Err(format!("node {peer:?} is not a node of this cluster"));
    }
    let Some(t) = target else { return Err("the request names no pod address (want podIP:port)".into()) };
    if !runs(t.ip()) {
        return Err(format!("this node runs no pod at {}", t.ip()));
    }
    Ok(t)
}

fn refuse(status: u16, msg: &str) -> hyper::Response<ProxyBody> {
    let mut r = text(status, &format!("{msg}\n"));
    r.headers_mut().insert(UNREACHABLE, http::HeaderValue::from_static("1"));
    r
}

/// Answer one gateway stream opened by node `peer`.
pub async fn serve(proxy: Arc<Proxy>, peer: String, req: hyper::Request<Incoming>) -> hyper::Response<ProxyBody> {
    let target = req.uri().authority().and_then(|a| a.as_str().parse::<SocketAddr>().ok());
    let target = match admit(&peer, proxy.knows_node(&peer), target, |ip| proxy.runs(ip)) {
        Ok(t) => t,
        Err(why) => {
            tracing::debug!(peer, "gateway refused: {why}");
            return refuse(403, &why);
        }
    };
    proxy.gateway_streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if req.method() == http::Method::CONNECT {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return refuse(502, &format!("pod {target}: {e}")),
            Err(_) => return refuse(502, &format!("pod {target}: connect timed out")),
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(up) => {
                    let mut tcp = tcp;
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(up), &mut tcp).await;
                }
                Err(e) => tracing::debug!(peer, "gateway CONNECT upgrade: {e}"),
            }
        });
        return text(200, "");
    }
    if let Some(w) = proxy.local_workload(target) {
        proxy.in_process.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = w.cgroup.clone().charged(w.handle(req)).await;
        return resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
    }
    // Not an HTTP workload (a socket server speaking HTTP): its socket.
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut b = http::Request::builder().method(parts.method.clone()).uri(format!("http://{target}{path}"));
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) {
            b = b.header(k, v);
        }
    }
    let body = match http_body_util::Limited::new(body, super::MAX_BUFFERED).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(413, &format!("request body: {e}\n")),
    };
    let Ok(up) = b.body(Full::new(body)) else { return text(400, "bad request\n") };
    match proxy.client.request(up).await {
        Ok(resp) => resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()),
        Err(e) if e.is_connect() => refuse(502, &format!("pod {target}: {e}")),
        Err(e) => text(502, &format!("pod {target}: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_nodes_reach_only_pods_run_here() {
        let here: IpAddr = "127.64.16.2".parse().unwrap();
        let runs = |ip: IpAddr| ip == here;
        let pod: SocketAddr = "127.64.16.2:8080".parse().unwrap();
        assert_eq!(admit("n2", true, Some(pod), runs), Ok(pod));
        assert!(admit("intruder", false, Some(pod), runs).unwrap_err().contains("not a node of this cluster"));
        let other: SocketAddr = "127.64.32.2:8080".parse().unwrap();
        assert!(admit("n2", true, Some(other), runs).unwrap_err().contains("runs no pod at 127.64.32.2"));
        assert!(admit("n2", true, None, runs).unwrap_err().contains("names no pod address"));
    }

    #[test]
    fn connection_headers_stay_behind() {
        assert!(hop_by_hop(&http::header::CONNECTION));
        assert!(hop_by_hop(&http::HeaderName::from_static("keep-alive")));
        assert!(!hop_by_hop(&http::header::HOST));
        assert!(!hop_by_hop(&http::header::CONTENT_TYPE));
    }
}
