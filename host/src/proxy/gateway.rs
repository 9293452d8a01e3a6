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

use super::policy::SOURCE_HEADER;
use super::{BoxError, Proxy, ProxyBody, text};
use crate::membership::Membership;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Marks a gateway answer given before any pod saw the request.
pub const UNREACHABLE: &str = "x-wasmorch-unreachable";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a CONNECT on a pooled connection waits for the far gateway's answer (it dials a
/// local pod, within [`CONNECT_TIMEOUT`]) before the peer is taken to have vanished: the
/// connection is dropped and the stream goes through the relay, instead of waiting for the
/// keep-alive (about 8 s) to find the connection dead.
const STREAM_TIMEOUT: Duration = Duration::from_secs(3);

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

/// How long a peer whose gateway could not be reached is relayed before the direct path
/// is tried again (in the background: streams keep taking the relay meanwhile).
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The pool key of the connection to the control plane's relay.
const RELAY_KEY: &str = "\0relay";

/// How this node reaches a peer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRoute {
    Direct,
    Relay,
}

impl PeerRoute {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRoute::Direct => "direct",
            PeerRoute::Relay => "relay",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct RouteState {
    route: PeerRoute,
    /// When relayed: when the direct path is tried next, and whether a try is under way.
    probe_at: Instant,
    probing: bool,
}

/// The caller's side: one pooled HTTP/2 connection per peer node, and one to the control
/// plane's relay for peers whose gateway cannot be reached.
pub struct Gateways {
    member: Option<Arc<Membership>>,
    /// Per (node, gateway address). Pruned to the known nodes by [`Gateways::retain`].
    conns: Mutex<HashMap<(String, String), Slot>>,
    routes: Mutex<HashMap<String, RouteState>>,
}

/// The host and port of the server URL (`https://host:port`).
fn server_host_port(url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
    Some((host, uri.port_u16().unwrap_or(443)))
}

impl Gateways {
    /// This node's membership (its certificate, the cluster CA).
    pub fn member(&self) -> Option<&Arc<Membership>> {
        self.member.as_ref()
    }

    pub fn new(member: Option<Arc<Membership>>) -> Arc<Gateways> {
        Arc::new(Gateways { member, conns: Mutex::new(HashMap::new()), routes: Mutex::new(HashMap::new()) })
    }

    /// Forget connections and routes of nodes that are gone.
    pub fn retain(&self, known: impl Fn(&str) -> bool) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).retain(|(n, _), _| n == RELAY_KEY || known(n));
        self.routes.lock().unwrap_or_else(|e| e.into_inner()).retain(|n, _| known(n));
    }

    /// How each peer this node has talked to is reached.
    pub fn routes(&self) -> std::collections::BTreeMap<String, PeerRoute> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(n, s)| (n.clone(), s.route)).collect()
    }

    fn set_route(&self, node: &str, route: PeerRoute) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let before = routes.get(node).map(|s| s.route);
        routes.insert(node.to_string(), RouteState { route, probe_at: Instant::now() + PROBE_EVERY, probing: false });
        if before != Some(route) {
            tracing::info!(
                peer = node,
                "pods of node {node} are reached {}",
                match route {
                    PeerRoute::Direct => "directly",
                    PeerRoute::Relay => "through the control plane's relay",
                }
            );
        }
    }

    /// Whether `node` is relayed now; when its direct path is due for a try, start one.
    fn relayed(self: &Arc<Self>, node: &str, at: SocketAddr) -> bool {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = routes.get_mut(node).filter(|s| s.route == PeerRoute::Relay) else { return false };
        if !s.probing && Instant::now() >= s.probe_at {
            s.probing = true;
            let (this, node) = (self.clone(), node.to_string());
            tokio::spawn(async move {
                match this.sender(&node, at).await {
                    Ok(_) => this.set_route(&node, PeerRoute::Direct),
                    Err(_) => this.set_route(&node, PeerRoute::Relay),
                }
            });
        }
        true
    }

    fn tls(&self, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
        let member = self.member.as_ref().ok_or("this node has no certificate for the gateway")?;
        member.client_tls(&[alpn])
    }

    /// A TLS connection to `addr` with this node's certificate, the callee's naming `name`.
    async fn dial_tls(
        &self,
        name: &str,
        addr: &str,
        alpn: &[u8],
        what: &str,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Failure> {
        let server = ServerName::try_from(name.to_string()).map_err(|e| Failure::early(format!("{what}: {e}")))?;
        let tls = self.tls(alpn).map_err(Failure::early)?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| Failure::early(format!("{what} at {addr}: connect timed out")))?
            .map_err(|e| Failure::early(format!("{what} at {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_rustls::TlsConnector::from(tls).connect(server, tcp))
            .await
            .map_err(|_| Failure::early(format!("{what} at {addr}: TLS timed out")))?
            .map_err(|e| Failure::early(format!("{what} at {addr}: TLS: {e}")))
    }

    /// The pooled HTTP/2 connection under `key` to `addr`, whose certificate must name `name`.
    async fn pooled(
        &self,
        key: (String, String),
        name: &str,
        addr: &str,
        what: &str,
    ) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let slot = self.conns.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone();
        // Held while connecting: concurrent first requests share one connection.
        let mut held = slot.lock().await;
        if let Some(s) = held.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let stream = self.dial_tls(name, addr, b"h2", what).await?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // A peer that vanished is noticed within about 8 s (then: reconnect, or relay).
            .keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true)
            .adaptive_window(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::early(format!("{what} at {addr}: {e}")))?;
        let peer = what.to_string();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer, "connection: {e}");
            }
        });
        *held = Some(send.clone());
        Ok(send)
    }

    /// The connection to `node`'s gateway at `at`.
    async fn sender(&self, node: &str, at: SocketAddr) -> Result<SendRequest<Full<Bytes>>, Failure> {
        self.pooled((node.to_string(), at.to_string()), node, &at.to_string(), &format!("gateway of {node}")).await
    }

    /// The connection to the control plane's relay.
    async fn relay_sender(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let member = self.member.as_ref().ok_or_else(|| Failure::early("this node has no relay".into()))?;
        let server = member.server();
        let (host, port) =
            server_host_port(&server).ok_or_else(|| Failure::early(format!("server URL {server:?} has no host")))?;
        let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        self.pooled((RELAY_KEY.to_string(), addr.clone()), &host, &addr, "the relay").await
    }

    /// A byte stream to `target` on `node`, through the relay.
    async fn relay_connect(
        &self,
        node: &str,
        target: SocketAddr,
        source: Option<&http::HeaderValue>,
    ) -> Result<hyper::upgrade::Upgraded, Failure> {
        let mut send = self.relay_sender().await?;
        let req = connect_request(target, source, Some(node))?;
        open_stream(&mut send, req, &format!("node {node} via the relay")).await
    }

    /// A byte stream to `target` (a pod of `node`): through `node`'s gateway, or the relay
    /// when that cannot be reached.
    pub async fn connect(
        self: &Arc<Self>,
        node: &str,
        at: SocketAddr,
        target: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, Failure> {
        let source = source.and_then(|ip| http::HeaderValue::from_str(&ip.to_string()).ok());
        let source = source.as_ref();
        if self.relayed(node, at) {
            return self.relay_connect(node, target, source).await.map(TokioIo::new);
        }
        let mut send = match self.sender(node, at).await {
            Ok(s) => s,
            Err(f) => {
                tracing::debug!("{}; relaying", f.message);
                self.set_route(node, PeerRoute::Relay);
                return self.relay_connect(node, target, source).await.map(TokioIo::new);
            }
        };
        self.set_route_if_new(node);
        let req = connect_request(target, source, None)?;
        match tokio::time::timeout(STREAM_TIMEOUT, open_stream(&mut send, req, &format!("gateway of {node}"))).await {
            Ok(opened) => opened.map(TokioIo::new),
            Err(_) => {
                tracing::debug!("gateway of {node}: no answer in {STREAM_TIMEOUT:?}; relaying");
                self.forget(node, at);
                self.set_route(node, PeerRoute::Relay);
                self.relay_connect(node, target, source).await.map(TokioIo::new)
            }
        }
    }

    /// Drop the pooled connection to `node`'s gateway at `at` (the next stream dials anew).
    fn forget(&self, node: &str, at: SocketAddr) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&(node.to_string(), at.to_string()));
    }

    fn set_route_if_new(&self, node: &str) {
        let known = self.routes.lock().unwrap_or_else(|e| e.into_inner()).contains_key(node);
        if !known {
            self.set_route(node, PeerRoute::Direct);
        }
    }

    /// One HTTP request to `target` (a pod of `node`), whose body is already buffered:
    /// a stream of the pooled connection to `node`'s gateway, or, relayed, HTTP/1.1 over a
    /// relayed byte stream.
    pub async fn request(
        self: &Arc<Self>,
        node: &str,
        at: SocketAddr,
        target: SocketAddr,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, Failure> {
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let direct = if self.relayed(node, at) {
            None
        } else {
            match self.sender(node, at).await {
                Ok(s) => {
                    self.set_route_if_new(node);
                    Some(s)
                }
                Err(f) => {
                    tracing::debug!("{}; relaying", f.message);
                    self.set_route(node, PeerRoute::Relay);
                    None
                }
            }
        };
        let resp = match direct {
            Some(mut send) => {
                let req = resend(parts, format!("http://{target}{path}"), body).map_err(Failure::early)?;
                send.ready().await.map_err(|e| Failure::early(format!("gateway of {node}: {e}")))?;
                send.send_request(req).await.map_err(|e| Failure {
                    // A stream the peer refused before reading it never reached a pod.
                    before_pod: e.is_canceled(),
                    message: format!("gateway of {node}: {e}"),
                })?
            }
            None => {
                let stream = self.relay_connect(node, target, parts.headers.get(SOURCE_HEADER)).await?;
                let (mut send, conn) = hyper::client::conn::http1::handshake(stream)
                    .await
                    .map_err(|e| Failure::early(format!("node {node} via the relay: {e}")))?;
                tokio::spawn(conn);
                let mut req = resend(parts, path.to_string(), body).map_err(Failure::early)?;
                // Said on the CONNECT; the pod's socket need not see it.
                req.headers_mut().remove(SOURCE_HEADER);
                if let Ok(host) = http::HeaderValue::from_str(&target.to_string())
                    && !req.headers().contains_key(http::header::HOST)
                {
                    req.headers_mut().insert(http::header::HOST, host);
                }
                send.send_request(req)
                    .await
                    .map_err(|e| Failure { before_pod: false, message: format!("node {node} via the relay: {e}") })?
            }
        };
        if resp.headers().contains_key(UNREACHABLE) {
            let why = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(Failure::early(String::from_utf8_lossy(&why).trim().to_string()));
        }
        Ok(resp)
    }
}

/// `n2=direct,n3=relay`, by node name.
pub fn describe_routes(routes: &std::collections::BTreeMap<String, PeerRoute>) -> String {
    routes.iter().map(|(n, r)| format!("{n}={}", r.as_str())).collect::<Vec<_>>().join(",")
}

/// `CONNECT target`, naming the source (for the receiver's NetworkPolicy check) and, through
/// the relay, the node it is for.
fn connect_request(
    target: SocketAddr,
    source: Option<&http::HeaderValue>,
    relay_to: Option<&str>,
) -> Result<http::Request<Full<Bytes>>, Failure> {
    let mut b = http::Request::builder().method(http::Method::CONNECT).uri(target.to_string());
    if let Some(src) = source {
        b = b.header(SOURCE_HEADER, src);
    }
    if let Some(node) = relay_to {
        b = b.header(RELAY_TO, node);
    }
    b.body(Full::new(Bytes::new())).map_err(|e| Failure::early(format!("request: {e}")))
}

/// Send a CONNECT on `send` and take the stream it opens.
async fn open_stream(
    send: &mut SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
    what: &str,
) -> Result<hyper::upgrade::Upgraded, Failure> {
    send.ready().await.map_err(|e| Failure::early(format!("{what}: {e}")))?;
    let resp = send.send_request(req).await.map_err(|e| Failure::early(format!("{what}: {e}")))?;
    if resp.status() != http::StatusCode::OK {
        let why = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(Failure::early(format!("{what}: {}", String::from_utf8_lossy(&why).trim())));
    }
    hyper::upgrade::on(resp).await.map_err(|e| Failure::early(format!("{what}: {e}")))
}

/// The header of a relayed CONNECT that names the node it is for (the control plane's
/// `relay::TO`), and the one the relay adds naming the caller.
pub const RELAY_TO: &str = "x-wasmorch-relay-to";
pub const RELAY_FROM: &str = "x-wasmorch-relay-from";

/// A request like `parts` (method, end-to-end headers) to `uri`, with a buffered body: what
/// every hop of the proxy and the gateway sends on.
pub fn resend(parts: &http::request::Parts, uri: String, body: Bytes) -> Result<http::Request<Full<Bytes>>, String> {
    let mut b = http::Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) {
            b = b.header(k, v);
        }
    }
    b.body(Full::new(body)).map_err(|e| format!("request: {e}"))
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

/// The source a peer names: none (the peer node itself), an outside client, or one of the
/// peer's own pods (a peer may not speak for another node's pods). Pure.
pub fn source_of(
    peer: &str,
    header: Option<&http::HeaderValue>,
    index: &super::policy::Index,
) -> Result<super::policy::Source, String> {
    use super::policy::Source;
    let Some(v) = header else { return Ok(Source::Node) };
    let ip: IpAddr = v
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{SOURCE_HEADER}: {v:?} is not an address"))?;
    match index.pod(ip) {
        Some(p) if p.node != peer => Err(format!("node {peer:?} may not send for pod {ip} of node {:?}", p.node)),
        _ => Ok(Source::Ip(ip)),
    }
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
    // What the sending node said it sends for, judged again here (its view may be stale).
    let policy = proxy.policy();
    let source = match source_of(&peer, req.headers().get(SOURCE_HEADER), &policy) {
        Ok(s) => s,
        Err(why) => return refuse(403, &why),
    };
    if let Err(why) = policy.decide(source, target, "TCP") {
        return super::policy::denied(&why);
    }
    let mut req = req;
    req.headers_mut().remove(SOURCE_HEADER);
    proxy.gateway_streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if req.method() == http::Method::CONNECT {
        let at = proxy.ports.dialable(target);
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(at)).await {
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
        // The instance's task charges the container for its request (`HttpWorkload::answer`).
        let resp = w.handle(req).await;
        return resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
    }
    // Not an HTTP workload (a socket server speaking HTTP): its socket.
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, super::MAX_BUFFERED).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(413, &format!("request body: {e}\n")),
    };
    let Ok(up) = proxy.to_socket(&parts, target, body) else { return text(400, "bad request\n") };
    match proxy.client.request(up).await {
        Ok(resp) => resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()),
        Err(e) if e.is_connect() => refuse(502, &format!("pod {target}: {e}")),
        Err(e) => text(502, &format!("pod {target}: {e}\n")),
    }
}

/// Keep this node registered with the control plane's relay until `stop`: over a TLS
/// connection to the server, `GET /wasmorch/v1/relay` with `Upgrade`, then serve the
/// gateway on that connection, for streams the relay brings from nodes that cannot reach
/// this one. Reconnects after a pause when the connection ends.
pub async fn relay_registration(proxy: Arc<Proxy>, stop: tokio_util::sync::CancellationToken) {
    loop {
        let r = tokio::select! {
            r = register_once(&proxy) => r,
            _ = stop.cancelled() => return,
        };
        if let Err(e) = r {
            tracing::debug!("relay registration: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn register_once(proxy: &Arc<Proxy>) -> Result<(), String> {
    let g = &proxy.gateways;
    let member = g.member.as_ref().ok_or("no credentials")?;
    let (host, port) = server_host_port(&member.server()).ok_or("server URL has no host")?;
    let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let tls = g.dial_tls(&host, &addr, b"http/1.1", "the relay").await.map_err(|f| f.message)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn.with_upgrades());
    let req = http::Request::get(RELAY_PATH)
        .header(http::header::HOST, host.as_str())
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, RELAY_UPGRADE)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("the server answered {}", resp.status()));
    }
    let up = hyper::upgrade::on(resp).await.map_err(|e| e.to_string())?;
    tracing::info!("registered with the control plane's relay");
    let p = proxy.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let p = p.clone();
        async move {
            // The relay names the caller (it checked the caller's certificate).
            let from = req.headers().get(RELAY_FROM).and_then(|v| v.to_str().ok()).map(String::from);
            Ok::<_, std::convert::Infallible>(match from {
                Some(from) => serve(p, from, req).await,
                None => refuse(400, &format!("a relayed stream names its caller in {RELAY_FROM}")),
            })
        }
    });
    let r = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .serve_connection(up, svc)
        .await;
    conn.abort();
    r.map_err(|e| e.to_string())
}

/// The relay's path and upgrade token (the control plane's `relay::PATH`, `relay::UPGRADE`).
const RELAY_PATH: &str = "/wasmorch/v1/relay";
const RELAY_UPGRADE: &str = "wasmorch-relay";

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
    fn a_peer_speaks_only_for_its_own_pods() {
        use super::super::policy::{Index, Source, pod_projection};
        let p = pod_projection(&serde_json::json!({
            "metadata": {"namespace": "a", "name": "p"}, "spec": {"nodeName": "n1"}, "status": {"podIP": "127.64.0.2"}
        }));
        let index = Index::build([], [], [&p]);
        let h = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert_eq!(source_of("n1", None, &index), Ok(Source::Node));
        assert_eq!(source_of("n1", Some(&h("127.64.0.2")), &index), Ok(Source::Ip("127.64.0.2".parse().unwrap())));
        assert!(source_of("n2", Some(&h("127.64.0.2")), &index).unwrap_err().contains("may not send for pod"));
        assert_eq!(source_of("n2", Some(&h("10.0.0.9")), &index), Ok(Source::Ip("10.0.0.9".parse().unwrap())));
        assert!(source_of("n2", Some(&h("nonsense")), &index).is_err());
    }

    #[test]
    fn connection_headers_stay_behind() {
        assert!(hop_by_hop(&http::header::CONNECTION));
        assert!(hop_by_hop(&http::HeaderName::from_static("keep-alive")));
        assert!(!hop_by_hop(&http::header::HOST));
        assert!(!hop_by_hop(&http::header::CONTENT_TYPE));
    }
}
