//! The node's service proxy (kube-proxy's job, in the node process).
//!
//! It follows Services and EndpointSlices and listens, on this node, on every Service's
//! cluster address (inside 127/8: every node can bind it without privileges), node ports and
//! load-balancer ports (on the node's address). A connection is proxied at layer 7 when the
//! port says HTTP (`appProtocol: http`, a port named `http…`) or its first bytes are an HTTP
//! request line, and spliced at layer 4 otherwise.
//!
//! Layer 7: every request picks an endpoint ([`balancer`]); one on this node is answered in
//! process (the workload's handler is called directly, no socket), others through a pooled
//! keep-alive client. A request whose connection fails is retried once on another endpoint;
//! an endpoint that keeps failing is ejected for a while. Outgoing `wasi:http` requests from
//! pods to a Service name take the same path ([`ClusterView`]).

pub mod balancer;
pub mod table;

use crate::client::Client;
use crate::runtime::http::HttpWorkload;
use balancer::{Balancer, Pick};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use table::{Route, Table};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Largest request body buffered for a retry; larger ones are refused with 413.
const MAX_BUFFERED: usize = 16 << 20;

pub struct Proxy {
    node: String,
    node_ip: IpAddr,
    table: RwLock<Arc<Table>>,
    /// std Mutexes: held only for map access, never across an await.
    balancers: Mutex<HashMap<Route, Balancer>>,
    /// HTTP workloads on this node by pod address and port, answered in process.
    local: Mutex<HashMap<SocketAddr, Arc<HttpWorkload>>>,
    listeners: Mutex<HashMap<SocketAddr, (Route, CancellationToken)>>,
    client: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    seed: AtomicU64,
    /// Requests answered in process and through a socket (for tests and figures).
    pub in_process: AtomicU64,
    pub forwarded: AtomicU64,
}

fn text(status: u16, msg: &str) -> hyper::Response<ProxyBody> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(msg.to_string())).map_err(|e| match e {}).boxed_unsync());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r
}

/// Whether the first bytes of a connection are an HTTP/1 request line.
pub fn looks_like_http(b: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] =
        [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"PATCH ", b"OPTIONS ", b"CONNECT ", b"TRACE "];
    METHODS.iter().any(|m| b.starts_with(m)) || b.starts_with(b"PRI * HTTP/2")
}

impl Proxy {
    pub fn new(node: String, node_ip: IpAddr) -> Arc<Proxy> {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(conn);
        Arc::new(Proxy {
            node,
            node_ip,
            table: RwLock::new(Arc::new(Table::default())),
            balancers: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
            client,
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            in_process: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        })
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// An HTTP workload of this node starts serving on `addr`.
    pub fn register(&self, addr: SocketAddr, w: Arc<HttpWorkload>) {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).insert(addr, w);
    }

    pub fn unregister(&self, addr: SocketAddr) {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).remove(&addr);
    }

    fn random(&self) -> (u64, u64) {
        // xorshift; contention-free enough for load balancing.
        let mut x = self.seed.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x, x.rotate_left(32))
    }

    /// Choose an endpoint for `route`, counted as outstanding until [`Proxy::done`].
    pub fn choose(&self, route: &Route, client: Option<IpAddr>, exclude: Option<SocketAddr>) -> Option<SocketAddr> {
        let table = self.table();
        let svc = table.service(route)?;
        let targets: Vec<SocketAddr> = table.targets(route).iter().map(|e| e.addr).collect();
        let busy: Vec<SocketAddr> = {
            let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            targets.iter().copied().filter(|a| local.get(a).is_some_and(|w| w.admission.is_full())).collect()
        };
        let pick = Pick {
            busy,
            algorithm: svc.algorithm,
            affinity: svc.affinity.and_then(|t| client.map(|c| (c, t))),
            exclude,
            now: Instant::now(),
            random: self.random(),
        };
        let mut b = self.balancers.lock().unwrap_or_else(|e| e.into_inner());
        let bal = b.entry(route.clone()).or_default();
        let a = bal.pick(&targets, &pick)?;
        bal.start(a);
        Some(a)
    }

    pub fn done(&self, route: &Route, addr: SocketAddr, connected: bool) {
        if let Some(b) = self.balancers.lock().unwrap_or_else(|e| e.into_inner()).get_mut(route) {
            b.finish(addr, connected, Instant::now());
        }
    }

    fn local_workload(&self, addr: SocketAddr) -> Option<Arc<HttpWorkload>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).get(&addr).cloned()
    }

    /// Follow Services, EndpointSlices and Nodes until `stop`, keeping the table and the listeners
    /// in step.
    pub async fn run(self: Arc<Self>, client: Client, stop: CancellationToken) {
        let services = Arc::new(Mutex::new(HashMap::new()));
        let slices = Arc::new(Mutex::new(HashMap::new()));
        let nodes = Arc::new(Mutex::new(HashMap::new()));
        let changed = Arc::new(Notify::new());
        tokio::spawn(follow(
            client.clone(),
            "/api/v1/services",
            whole,
            services.clone(),
            changed.clone(),
            stop.clone(),
        ));
        tokio::spawn(follow(
            client.clone(),
            "/api/v1/nodes",
            node_addresses,
            nodes.clone(),
            changed.clone(),
            stop.clone(),
        ));
        tokio::spawn(follow(
            client,
            "/apis/discovery.k8s.io/v1/endpointslices",
            whole,
            slices.clone(),
            changed.clone(),
            stop.clone(),
        ));
        loop {
            tokio::select! {
                _ = changed.notified() => {}
                _ = stop.cancelled() => break,
            }
            let table = {
                let s = services.lock().unwrap_or_else(|e| e.into_inner());
                let e = slices.lock().unwrap_or_else(|e| e.into_inner());
                let same_machine =
                    same_machine_nodes(&self.node, nodes.lock().unwrap_or_else(|e| e.into_inner()).values());
                Arc::new(Table::build(s.values(), e.values(), |n| n.is_empty() || same_machine.contains(n)))
            };
            let live: Vec<SocketAddr> = table.endpoints.values().flatten().map(|e| e.addr).collect();
            for b in self.balancers.lock().unwrap_or_else(|e| e.into_inner()).values_mut() {
                b.retain(&live);
            }
            *self.table.write().unwrap_or_else(|e| e.into_inner()) = table.clone();
            self.reconcile_listeners(&table, &stop).await;
        }
        for (_, (_, t)) in self.listeners.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            t.cancel();
        }
    }

    async fn reconcile_listeners(self: &Arc<Self>, table: &Table, stop: &CancellationToken) {
        let want = table.listeners(self.node_ip);
        let mut to_bind = Vec::new();
        {
            let mut have = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
            have.retain(|addr, (route, tok)| {
                let keep = want.get(addr) == Some(route);
                if !keep {
                    tok.cancel();
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
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    let tok = stop.child_token();
                    self.listeners.lock().unwrap_or_else(|e| e.into_inner()).insert(addr, (route.clone(), tok.clone()));
                    tokio::spawn(self.clone().accept(l, route, tok));
                }
                Err(e) => tracing::warn!("service {}/{}: listening on {addr}: {e}", route.ns, route.name),
            }
        }
    }

    async fn accept(self: Arc<Self>, l: TcpListener, route: Route, stop: CancellationToken) {
        loop {
            let (tcp, peer) = tokio::select! {
                r = l.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(self.clone().connection(tcp, peer, route.clone()));
        }
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
                async move { Ok::<_, std::convert::Infallible>(this.forward(&route, Some(peer.ip()), req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        } else {
            self.splice(tcp, peer, &route).await;
        }
    }

    /// Layer 4: connect to an endpoint (once more elsewhere if that fails) and copy both ways.
    async fn splice(&self, mut tcp: TcpStream, peer: SocketAddr, route: &Route) {
        let mut exclude = None;
        for _ in 0..2 {
            let Some(addr) = self.choose(route, Some(peer.ip()), exclude) else { return };
            match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
                Ok(Ok(mut up)) => {
                    self.forwarded.fetch_add(1, Ordering::Relaxed);
                    let _ = up.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
                    self.done(route, addr, true);
                    return;
                }
                _ => {
                    self.done(route, addr, false);
                    exclude = Some(addr);
                }
            }
        }
    }

    /// Layer 7: one request to the Service behind `route`.
    pub async fn forward(
        &self,
        route: &Route,
        client: Option<IpAddr>,
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<ProxyBody> {
        let Some(first) = self.choose(route, client, None) else {
            return text(503, &format!("no endpoints available for service \"{}/{}\"\n", route.ns, route.name));
        };
        // On this node: in process, no socket hop.
        if let Some(w) = self.local_workload(first) {
            self.in_process.fetch_add(1, Ordering::Relaxed);
            let resp = w.cgroup.clone().charged(w.handle(req)).await;
            self.done(route, first, true);
            return resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
        }
        // Elsewhere: buffer the body so a failed connection can be retried on another endpoint.
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_BUFFERED).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(413, &format!("request body: {e}\n")),
        };
        let mut addr = first;
        for attempt in 0..2 {
            let mut b = http::Request::builder().method(parts.method.clone()).version(http::Version::HTTP_11);
            let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            b = b.uri(format!("http://{addr}{path}"));
            for (k, v) in &parts.headers {
                if k != http::header::CONNECTION {
                    b = b.header(k, v);
                }
            }
            let Ok(up) = b.body(Full::new(body.clone())) else { return text(400, "bad request\n") };
            self.forwarded.fetch_add(1, Ordering::Relaxed);
            match self.client.request(up).await {
                Ok(resp) if attempt == 0 && resp.headers().contains_key(crate::runtime::http::OVERLOADED) => {
                    // Refused before any instance ran: another replica may have room.
                    self.done(route, addr, true);
                    match self.choose(route, client, Some(addr)) {
                        Some(next) => addr = next,
                        None => return resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()),
                    }
                }
                Ok(resp) => {
                    self.done(route, addr, true);
                    return resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
                }
                Err(e) => {
                    // Only a request that never reached a server is safe to send again.
                    let retry = e.is_connect() || parts.method.is_idempotent();
                    self.done(route, addr, !e.is_connect());
                    if attempt == 1 || !retry {
                        return text(502, &format!("upstream {addr}: {e}\n"));
                    }
                    match self.choose(route, client, Some(addr)) {
                        Some(next) => addr = next,
                        None => return text(502, &format!("upstream {addr}: {e}\n")),
                    }
                }
            }
        }
        text(502, "no endpoint answered\n")
    }
}

/// The nodes whose pods this node can dial: itself, and nodes whose address is a loopback
/// address (node processes on this machine). Pods elsewhere are out of reach until traffic
/// between machines goes through a node-to-node gateway.
fn same_machine_nodes<'a>(me: &str, nodes: impl Iterator<Item = &'a Value>) -> std::collections::HashSet<String> {
    let mut out: std::collections::HashSet<String> = nodes
        .filter(|n| {
            n["status"]["addresses"].as_array().into_iter().flatten().any(|a| {
                a["type"] == "InternalIP"
                    && a["address"].as_str().and_then(|ip| ip.parse::<IpAddr>().ok()).is_some_and(|ip| ip.is_loopback())
            })
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
        .collect();
    out.insert(me.to_string());
    out
}

/// Keep `map` (key → object) in step with a collection: list, then watch; relist on errors.
/// Keep all of an object.
fn whole(o: &Value) -> Value {
    o.clone()
}

/// Of a Node, what routing needs: its name and addresses (not its heartbeats, which change
/// every few seconds and would rebuild the table each time).
fn node_addresses(o: &Value) -> Value {
    serde_json::json!({"metadata": {"name": o["metadata"]["name"]}, "status": {"addresses": o["status"]["addresses"]}})
}

async fn follow(
    client: Client,
    path: &'static str,
    project: fn(&Value) -> Value,
    map: Arc<Mutex<HashMap<String, Value>>>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let key = |o: &Value| {
        format!(
            "{}/{}",
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap_or("")
        )
    };
    loop {
        let result: anyhow::Result<()> = async {
            let list = client.get(path).await?;
            let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
            {
                let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
                m.clear();
                for o in list["items"].as_array().into_iter().flatten() {
                    m.insert(key(o), project(o));
                }
            }
            changed.notify_one();
            let mut events =
                client.watch(&format!("{path}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true")).await?;
            loop {
                let ev = tokio::select! {
                    ev = events.next() => ev,
                    _ = stop.cancelled() => return Ok(()),
                };
                let Some(ev) = ev else { anyhow::bail!("watch closed") };
                let ev = ev?;
                let o = &ev["object"];
                // Only a change of what is kept wakes the table builder.
                let changed_here = match ev["type"].as_str() {
                    Some("ADDED" | "MODIFIED") => {
                        let v = project(o);
                        map.lock().unwrap_or_else(|e| e.into_inner()).insert(key(o), v.clone()) != Some(v)
                    }
                    Some("DELETED") => map.lock().unwrap_or_else(|e| e.into_inner()).remove(&key(o)).is_some(),
                    Some("ERROR") => anyhow::bail!("watch error: {}", o["message"]),
                    _ => false,
                };
                if changed_here {
                    changed.notify_one();
                }
            }
        }
        .await;
        if stop.is_cancelled() {
            return;
        }
        if let Err(e) = result {
            tracing::debug!("following {path}: {e:#}; relisting");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// What a pod sees of the cluster's Services: its namespace and the node's proxy.
pub struct ClusterView {
    pub proxy: Arc<Proxy>,
    pub namespace: String,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl ClusterView {
    pub fn is_service_addr(&self, addr: SocketAddr) -> bool {
        self.proxy.table().is_service_addr(addr)
    }

    /// Route an outgoing `wasi:http` request whose host names a Service; `Err` gives the
    /// request back when it does not.
    #[allow(clippy::result_large_err)]
    pub fn send(
        &self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
    ) -> Result<std::pin::Pin<Box<dyn Future<Output = SendResult> + Send>>, http::Request<wasmtime_wasi_http::WasiBody>>
    {
        let table = self.proxy.table();
        let Some(host) = request.uri().host().map(str::to_string) else { return Err(request) };
        let Some(svc) = table.resolve(&host, &self.namespace) else { return Err(request) };
        // `http://NAME/` without a port reaches a one-port Service on its port.
        let port = request.uri().port_u16();
        let idx = match port {
            Some(p) => svc.ports.iter().position(|sp| sp.port == p),
            None if svc.ports.len() == 1 => Some(0),
            None => svc.ports.iter().position(|sp| sp.port == 80),
        };
        let route = Route { ns: svc.ns.clone(), name: svc.name.clone(), port: idx.unwrap_or(usize::MAX) };
        let proxy = self.proxy.clone();
        Ok(Box::pin(async move {
            use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
            let Some(addr) = proxy.choose(&route, None, None) else {
                return Err(ErrorCode::DestinationUnavailable.into());
            };
            if let Some(w) = proxy.local_workload(addr) {
                proxy.in_process.fetch_add(1, Ordering::Relaxed);
                let resp = w.cgroup.clone().charged(w.handle(request)).await;
                proxy.done(&route, addr, true);
                let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> = Box::new(async { Ok(()) });
                return Ok((resp, io));
            }
            let pq = request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
            *request.uri_mut() = match format!("http://{addr}{pq}").parse() {
                Ok(u) => u,
                Err(_) => return Err(ErrorCode::HttpRequestUriInvalid.into()),
            };
            proxy.forwarded.fetch_add(1, Ordering::Relaxed);
            let r = wasmtime_wasi_http::default_send_request(request, options).await;
            proxy.done(&route, addr, r.is_ok());
            let (resp, io) = r?;
            Ok((resp.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        }))
    }

    /// Service environment variables for a container of this namespace.
    pub fn env(&self) -> Vec<(String, String)> {
        self.proxy.table().env(&self.namespace)
    }

    pub fn node(&self) -> &str {
        &self.proxy.node
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_nodes_on_this_machine_are_dialled() {
        let nodes = [
            serde_json::json!({"metadata": {"name": "n2"}, "status": {"addresses": [{"type": "InternalIP", "address": "127.111.255.254"}]}}),
            serde_json::json!({"metadata": {"name": "pi"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.7"}]}}),
        ];
        let reach = super::same_machine_nodes("me", nodes.iter());
        assert!(reach.contains("me") && reach.contains("n2") && !reach.contains("pi"), "{reach:?}");
    }

    #[test]
    fn http_is_recognised_by_its_request_line() {
        assert!(super::looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(super::looks_like_http(b"POST /x HTTP/1.1"));
        assert!(!super::looks_like_http(b"\x16\x03\x01"));
        assert!(!super::looks_like_http(b"hello"));
        assert!(!super::looks_like_http(b""));
    }
}
