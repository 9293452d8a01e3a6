//! The node's service proxy (kube-proxy's job, in the node process).
//!
//! It follows Services, EndpointSlices and Nodes and listens, on this node, on every
//! Service's cluster address (inside 127/8), node ports and load-balancer ports (on the
//! node's address). A connection is proxied at layer 7 when the port says HTTP
//! (`appProtocol: http`, a port named `http…`) or its first bytes are an HTTP request line,
//! and spliced at layer 4 otherwise. Outgoing `wasi:http` requests from pods to a Service
//! take the same layer-7 path ([`cluster::ClusterView`]).
//!
//! Every node's proxy is also the cluster's Ingress and Gateway API controller: the edge
//! ([`edge`]) listens where outside traffic comes in, routed by Ingresses ([`ingress`]) and
//! HTTPRoutes ([`routes`]).
//!
//! Every request or connection picks an endpoint ([`balancer`]), and one dialer reaches it
//! the way its node calls for ([`dial::way`]): on this node an HTTP workload is answered in
//! process (no socket), other endpoints here and on this machine's other node processes
//! through their socket, endpoints on other machines through their node's gateway
//! ([`gateway`]). A request whose connection fails is retried once on another endpoint; an
//! endpoint that keeps failing is ejected for a while. The rules are the same whatever the
//! way.

pub mod balancer;
pub mod cluster;
pub mod dial;
mod edge;
mod forward;
pub mod gateway;
mod ingress;
pub mod ingress_tls;
mod listen;
pub mod policy;
mod routes;
pub mod table;
mod tunnel;
pub mod wake;

pub use tunnel::TUNNEL_WAIT;

use crate::client::Client;
use crate::reflector::{Projection, follow, whole};
use crate::runtime::http::HttpWorkload;
use crate::runtime::ports::PortMap;
use balancer::{Balancer, Pick};
use bytes::Bytes;
use dial::{Peer, Way};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use table::{Route, Table};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Largest request body buffered for a retry; larger ones are refused with 413.
pub const MAX_BUFFERED: usize = 16 << 20;

/// How long a request whose endpoint was gone or stopping waits for the table to name
/// another (see [`Proxy::elsewhere`]).
pub const REPICK_WAIT: Duration = Duration::from_secs(2);

/// Anything a layer-4 connection can be spliced to.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// An endpoint chosen for one request or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub addr: SocketAddr,
    pub node: String,
}

/// A node and its pod range (network, prefix length).
type PodRange = (String, (IpAddr, u8));

/// Why an upstream gave no answer.
struct Failed {
    /// Nothing reached the endpoint: safe to try another.
    before_endpoint: bool,
    message: String,
}

pub struct Proxy {
    node: String,
    node_ip: IpAddr,
    table: RwLock<Arc<Table>>,
    /// NetworkPolicies and what they need to know of namespaces and pods.
    policy: RwLock<Arc<policy::Index>>,
    /// Every node's pod range (this one's too): whose pod an address is.
    ranges: RwLock<Arc<Vec<PodRange>>>,
    /// Other nodes by name: how to reach their pods.
    peers: RwLock<Arc<HashMap<String, Peer>>>,
    /// std Mutexes: held only for map access, never across an await.
    balancers: Mutex<HashMap<Route, Balancer>>,
    /// HTTP workloads on this node by pod address and port, answered in process.
    local: Mutex<HashMap<SocketAddr, Arc<HttpWorkload>>>,
    /// Addresses of the pods this node runs (the gateway opens streams only to them).
    pods: Mutex<HashSet<IpAddr>>,
    listeners: Mutex<HashMap<SocketAddr, (Route, CancellationToken)>>,
    /// Tunnels waiting for their pod's socket, by address, with the pod's address (see
    /// [`Proxy::tunnel`]).
    tunnels: Mutex<HashMap<SocketAddr, IpAddr>>,
    client: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    /// Where this node's pod and cluster addresses are served (see `runtime::ports`).
    pub ports: Arc<PortMap>,
    pub gateways: Arc<gateway::Gateways>,
    /// Wakes workloads scaled to zero behind a Service (see [`wake`]).
    waker: wake::Waker,
    /// Signalled whenever the table is rebuilt.
    table_changed: Notify,
    /// The Ingresses served here, compiled (see [`ingress`]), and the port they are served on.
    ingress: RwLock<Arc<wasmorch_api::ingress::Router>>,
    /// The Gateway API's routes served here, compiled (see [`routes`]).
    routes: RwLock<Arc<wasmorch_api::gateway::Table>>,
    pub ingress_port: std::sync::atomic::AtomicU16,
    pub ingress_https_port: std::sync::atomic::AtomicU16,
    seed: AtomicU64,
    /// Requests answered in process, through a socket, and sent through a gateway; streams
    /// this node's gateway admitted (for tests and figures).
    pub in_process: AtomicU64,
    pub forwarded: AtomicU64,
    pub via_gateway: AtomicU64,
    pub gateway_streams: AtomicU64,
}

pub(crate) fn text(status: u16, msg: &str) -> hyper::Response<ProxyBody> {
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
    /// The proxy of node `node` at `node_ip`; `member` gives the certificate its gateway
    /// connections present (without one, pods on other machines are out of reach).
    pub fn new(
        node: String,
        node_ip: IpAddr,
        member: Option<Arc<crate::membership::Membership>>,
        ports: Arc<PortMap>,
    ) -> Arc<Proxy> {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(conn);
        Arc::new(Proxy {
            node: node.clone(),
            node_ip,
            table: RwLock::new(Arc::new(Table::default())),
            policy: RwLock::new(Arc::default()),
            peers: RwLock::new(Arc::default()),
            ranges: RwLock::new(Arc::default()),
            balancers: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            pods: Mutex::new(HashSet::new()),
            listeners: Mutex::new(HashMap::new()),
            tunnels: Mutex::new(HashMap::new()),
            client,
            ports,
            gateways: gateway::Gateways::new(member),
            waker: Default::default(),
            table_changed: Notify::new(),
            ingress: RwLock::new(Arc::default()),
            routes: RwLock::new(Arc::default()),
            ingress_port: std::sync::atomic::AtomicU16::new(80),
            ingress_https_port: std::sync::atomic::AtomicU16::new(443),
            // Random per process: nodes must not all make the same sequence of choices.
            seed: AtomicU64::new(std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                &node,
            )),
            in_process: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            via_gateway: AtomicU64::new(0),
            gateway_streams: AtomicU64::new(0),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn policy(&self) -> Arc<policy::Index> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Where a client connection to a listener comes from: an address of this machine is
    /// the node (a pod's socket there was judged in its sandbox), any other a client.
    fn source_of(&self, peer: IpAddr) -> policy::Source {
        if peer.is_loopback() || peer == self.node_ip { policy::Source::Node } else { policy::Source::Ip(peer) }
    }

    /// The node whose pod range holds `ip`, if it is a pod address of the cluster.
    pub fn pod_node(&self, ip: IpAddr) -> Option<String> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner()).clone();
        ranges.iter().find(|(_, r)| dial::in_range(ip, *r)).map(|(n, _)| n.clone())
    }

    /// Whether NetworkPolicies let `from` reach the endpoint `to` (TCP).
    fn judge(&self, from: policy::Source, to: SocketAddr) -> Result<(), String> {
        self.policy().decide(from, to, "TCP")
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serve from `table` now; requests waiting for a change look again.
    fn set_table(&self, table: Arc<Table>) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        self.table_changed.notify_waiters();
    }

    fn peers(&self) -> Arc<HashMap<String, Peer>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `name` is a Node of the cluster (this one included).
    pub fn knows_node(&self, name: &str) -> bool {
        name == self.node || self.peers().contains_key(name)
    }

    /// An HTTP workload of this node starts serving on `addr`.
    pub fn register(&self, addr: SocketAddr, w: Arc<HttpWorkload>) {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).insert(addr, w);
    }

    pub fn unregister(&self, addr: SocketAddr) {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).remove(&addr);
    }

    /// This node runs a pod at `ip` (until [`Proxy::pod_ended`]).
    pub fn pod_started(&self, ip: IpAddr) {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(ip);
    }

    pub fn pod_ended(&self, ip: IpAddr) {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).remove(&ip);
    }

    /// Whether this node runs a pod at `ip`.
    pub fn runs(&self, ip: IpAddr) -> bool {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).contains(&ip)
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
    pub fn choose(&self, route: &Route, client: Option<IpAddr>, exclude: Option<SocketAddr>) -> Option<Chosen> {
        let table = self.table();
        let to = table.route(route)?;
        let busy: Vec<SocketAddr> = {
            let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            to.addrs.iter().copied().filter(|a| local.get(a).is_some_and(|w| w.admission.is_full())).collect()
        };
        let pick = Pick {
            busy,
            algorithm: to.algorithm,
            affinity: to.affinity.and_then(|t| client.map(|c| (c, t))),
            exclude,
            now: Instant::now(),
            random: self.random(),
        };
        let addr = {
            let mut b = self.balancers.lock().unwrap_or_else(|e| e.into_inner());
            // The route is copied (two strings) only for a Service's first request.
            if !b.contains_key(route) {
                b.insert(route.clone(), Default::default());
            }
            let bal = b.get_mut(route)?;
            let a = bal.pick(&to.addrs, &pick)?;
            bal.start(a);
            a
        };
        let node = to.endpoints.iter().find(|e| e.addr == addr).map(|e| e.node.clone()).unwrap_or_default();
        Some(Chosen { addr, node })
    }

    /// Another endpoint than `tried` for a retry, if there is one NetworkPolicies let `from` reach.
    fn next_allowed(
        &self,
        route: &Route,
        client: Option<IpAddr>,
        tried: SocketAddr,
        from: policy::Source,
    ) -> Option<Chosen> {
        let next = self.choose(route, client, Some(tried))?;
        if self.judge(from, next.addr).is_err() {
            self.done(route, next.addr, true);
            return None;
        }
        Some(next)
    }

    /// Another endpoint than `tried`, which is gone or stopping: when the table lists none
    /// yet, wait for it to change, up to [`REPICK_WAIT`]. A rollout stops the old replica as
    /// soon as the new one is Ready, and this node may hear of the old one's going (at its
    /// pod) before the new one's endpoint arrives (through the EndpointSlice).
    async fn elsewhere(
        &self,
        route: &Route,
        client: Option<IpAddr>,
        tried: SocketAddr,
        from: policy::Source,
    ) -> Option<Chosen> {
        let deadline = tokio::time::Instant::now() + REPICK_WAIT;
        loop {
            let changed = self.table_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(next) = self.next_allowed(route, client, tried, from) {
                return Some(next);
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    pub fn done(&self, route: &Route, addr: SocketAddr, connected: bool) {
        if let Some(b) = self.balancers.lock().unwrap_or_else(|e| e.into_inner()).get_mut(route) {
            b.finish(addr, connected, Instant::now());
        }
    }

    fn local_workload(&self, addr: SocketAddr) -> Option<Arc<HttpWorkload>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).get(&addr).cloned()
    }

    fn way(&self, to: &Chosen) -> Way {
        dial::way(&self.node, &to.node, &self.peers())
    }

    /// Follow Services, EndpointSlices and Nodes until `stop`, keeping the table, the peers
    /// and the listeners in step.
    pub async fn run(self: Arc<Self>, client: Client, stop: CancellationToken) {
        self.waker.set_client(client.clone());
        tokio::spawn(self.clone().run_policies(client.clone(), stop.clone()));
        tokio::spawn(self.clone().run_edge(client.clone(), stop.clone()));
        let changed = Arc::new(Notify::new());
        let followed: [(&'static str, crate::reflector::Project); 3] = [
            ("/api/v1/services", whole),
            ("/apis/discovery.k8s.io/v1/endpointslices", whole),
            ("/api/v1/nodes", dial::node_projection),
        ];
        let [s, e, n] = followed.map(|(path, project)| {
            let mut p = Projection::new(project, changed.clone());
            let map = p.map.clone();
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move { follow(&client, path, "", &mut p, &stop).await });
            map
        });
        // Whether a node address is this machine's, asked once per address.
        let mut addresses: HashMap<IpAddr, bool> = HashMap::new();
        loop {
            tokio::select! {
                _ = changed.notified() => {}
                _ = stop.cancelled() => break,
            }
            let table = {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                let e = e.lock().unwrap_or_else(|e| e.into_inner());
                Arc::new(Table::build(s.values(), e.values()))
            };
            let nodes: Vec<serde_json::Value> = n.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
            let mut seen = HashMap::new();
            let peers: HashMap<String, Peer> = nodes
                .iter()
                .filter_map(|o| {
                    let name = o.pointer("/metadata/name")?.as_str()?.to_string();
                    let p = dial::peer(o, self.ports.mapped(), |ip| {
                        let local = addresses.get(&ip).copied().unwrap_or_else(|| dial::is_local_address(ip));
                        seen.insert(ip, local);
                        local
                    });
                    (name != self.node).then_some((name, p))
                })
                .collect();
            addresses = seen;
            let ranges: Vec<PodRange> = nodes
                .iter()
                .filter_map(|o| Some((o.pointer("/metadata/name")?.as_str()?.to_string(), dial::pod_range(o)?)))
                .collect();
            *self.ranges.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ranges);
            self.gateways.retain(|n| peers.contains_key(n));
            *self.peers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(peers);
            let live: Vec<SocketAddr> = table.endpoints.values().flatten().map(|e| e.addr).collect();
            // A deleted Service's balancer goes with it (once nothing is in flight through it).
            self.balancers.lock().unwrap_or_else(|e| e.into_inner()).retain(|route, b| {
                b.retain(&live);
                table.services.contains_key(&(route.ns.clone(), route.name.clone())) || b.in_flight() > 0
            });
            self.set_table(table.clone());
            self.reconcile_listeners(&table, &stop).await;
        }
        for (_, (_, t)) in self.listeners.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            t.cancel();
        }
    }

    /// Follow NetworkPolicies and Namespaces until `stop`, and all pods while some policy
    /// exists, keeping the policy index in step.
    async fn run_policies(self: Arc<Self>, client: Client, stop: CancellationToken) {
        let changed = Arc::new(Notify::new());
        let spawn = |path: &'static str, project: crate::reflector::Project, stop: CancellationToken| {
            let mut p = Projection::new(project, changed.clone());
            let map = p.map.clone();
            let client = client.clone();
            tokio::spawn(async move { follow(&client, path, "", &mut p, &stop).await });
            map
        };
        let policies = spawn("/apis/networking.k8s.io/v1/networkpolicies", whole, stop.clone());
        let namespaces = spawn("/api/v1/namespaces", policy::namespace_projection, stop.clone());
        // While some policy exists: every pod (projected), and the token that stops following them.
        let mut pods: Option<(crate::reflector::Map, CancellationToken)> = None;
        loop {
            tokio::select! {
                _ = changed.notified() => {}
                _ = stop.cancelled() => break,
            }
            let any = !policies.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
            match (&pods, any) {
                (None, true) => {
                    let tok = stop.child_token();
                    pods = Some((spawn("/api/v1/pods", policy::pod_projection, tok.clone()), tok));
                }
                (Some((_, tok)), false) => {
                    tok.cancel();
                    pods = None;
                }
                _ => {}
            }
            let index = {
                let p = policies.lock().unwrap_or_else(|e| e.into_inner());
                let n = namespaces.lock().unwrap_or_else(|e| e.into_inner());
                let empty = HashMap::new();
                let guard = pods.as_ref().map(|(m, _)| m.lock().unwrap_or_else(|e| e.into_inner()));
                let pods = guard.as_deref().unwrap_or(&empty);
                policy::Index::build(p.values(), n.values(), pods.values())
            };
            *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        }
        if let Some((_, tok)) = pods {
            tok.cancel();
        }
    }

    /// A byte stream to an endpoint: its socket, or a stream through its node's gateway.
    async fn open(&self, to: &Chosen, from: policy::Source) -> Result<Box<dyn Stream>, String> {
        match self.way(to) {
            Way::Here | Way::Direct => {
                let at = self.ports.dialable(to.addr);
                match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(at)).await {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        Ok(Box::new(s))
                    }
                    Ok(Err(e)) => Err(format!("{}: {e}", to.addr)),
                    Err(_) => Err(format!("{}: connect timed out", to.addr)),
                }
            }
            Way::Gateway { node, at } => {
                self.via_gateway.fetch_add(1, Ordering::Relaxed);
                let source = match from {
                    policy::Source::Ip(ip) => Some(ip),
                    policy::Source::Node => None,
                };
                match self.gateways.connect(&node, at, to.addr, source).await {
                    Ok(s) => Ok(Box::new(s)),
                    Err(f) => Err(f.message),
                }
            }
            Way::Unreachable(why) => Err(why),
        }
    }

    /// Layer 4: connect to an endpoint (once more elsewhere if that fails) and copy both ways.
    async fn splice(&self, mut tcp: TcpStream, peer: SocketAddr, route: &Route) {
        let mut exclude = None;
        let from = self.source_of(peer.ip());
        for attempt in 0..2 {
            let mut to = self.choose(route, Some(peer.ip()), exclude);
            if to.is_none() && attempt == 0 && self.hold(route).await.is_ok() {
                to = self.choose(route, Some(peer.ip()), exclude);
            }
            let Some(to) = to else { return };
            if let Err(why) = self.judge(from, to.addr) {
                tracing::debug!("service {}/{}: {why}", route.ns, route.name);
                self.done(route, to.addr, true);
                return;
            }
            match self.open(&to, from).await {
                Ok(mut up) => {
                    self.forwarded.fetch_add(1, Ordering::Relaxed);
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
                    self.done(route, to.addr, true);
                    return;
                }
                Err(e) => {
                    tracing::debug!("service {}/{}: {e}", route.ns, route.name);
                    self.done(route, to.addr, false);
                    exclude = Some(to.addr);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Service `d/web` with the endpoints `(address, ready, terminating)`.
    fn table(endpoints: &[(&str, bool, bool)]) -> Arc<Table> {
        let svc = json!({"metadata": {"name": "web", "namespace": "d"},
            "spec": {"clusterIP": "127.43.0.5", "ports": [{"name": "http", "port": 80}]}});
        let eps: Vec<_> = endpoints
            .iter()
            .map(|(a, ready, terminating)| {
                json!({"addresses": [a], "nodeName": "n",
                "conditions": {"ready": ready, "serving": true, "terminating": terminating}})
            })
            .collect();
        let slice = json!({"metadata": {"namespace": "d", "labels": {"kubernetes.io/service-name": "web"}},
            "ports": [{"name": "http", "port": 8080}], "endpoints": eps});
        Arc::new(Table::build([svc].iter(), [slice].iter()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_endpoint_went_waits_for_the_table_to_name_another() {
        let p = Proxy::new("n".into(), "127.0.0.1".parse().unwrap(), None, Arc::new(PortMap::new(false)));
        let route = Route { ns: "d".into(), name: "web".into(), port: 0 };
        let old: SocketAddr = "127.64.0.1:8080".parse().unwrap();
        p.set_table(table(&[("127.64.0.1", true, false)]));
        let waiting = {
            let (p, route) = (p.clone(), route.clone());
            tokio::spawn(async move { p.elsewhere(&route, None, old, policy::Source::Node).await })
        };
        // A change that still names only the old endpoint: it keeps waiting.
        tokio::time::sleep(REPICK_WAIT / 4).await;
        p.set_table(table(&[("127.64.0.1", false, true)]));
        tokio::time::sleep(REPICK_WAIT / 4).await;
        assert!(!waiting.is_finished());
        // The successor's endpoint arrives: it is taken.
        p.set_table(table(&[("127.64.0.1", false, true), ("127.64.0.4", true, false)]));
        let next = waiting.await.unwrap().expect("the new endpoint");
        assert_eq!(next.addr.to_string(), "127.64.0.4:8080");
        // Nothing arrives: no endpoint, after REPICK_WAIT.
        p.set_table(table(&[("127.64.0.1", true, false)]));
        let started = tokio::time::Instant::now();
        assert!(p.elsewhere(&route, None, old, policy::Source::Node).await.is_none());
        assert_eq!(started.elapsed(), REPICK_WAIT);
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
