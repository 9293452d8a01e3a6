//! What each instance's `Store` holds: WASI context, wasi:http context, resource table,
//! limits, and the egress hook.

use super::NetPolicy;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

pub struct InstanceState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limits: super::memory::InstanceMemory,
    pub hooks: EgressHooks,
    /// Sockets connected to pods on other machines through a tunnel, or, with mapped pod
    /// ports, to a mapped address.
    pub tunnels: super::tunnel::Tunnels,
    /// With mapped pod ports: sockets bound to a port of 127.0.0.1 in place of the pod's address.
    pub binds: super::tunnel::Tunnels,
    /// The node's map of pod addresses to real sockets.
    pub ports: Arc<super::ports::PortMap>,
    /// Counts this instance among the live ones.
    pub live: super::Live,
}

/// Outgoing `wasi:http` requests do not pass through WASI's socket checks, so the pod's
/// network policy is enforced here too: allowed destinations are sent, others refused.
pub struct EgressHooks {
    pub net: Arc<NetPolicy>,
    /// Requests to a Service name or cluster address go through the node's proxy.
    pub cluster: Option<Arc<dyn Cluster>>,
}

pub type SendResult = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;
pub type SendFuture = std::pin::Pin<Box<dyn Future<Output = SendResult> + Send>>;

/// The cluster as an instance reaches it: Services by name and cluster address. The node's
/// proxy implements it; the runtime knows only this trait (it sits below the proxy).
pub trait Cluster: Send + Sync {
    /// Whether `addr` is inside the cluster: a Service's cluster address and port, or a pod
    /// address. Pods reach the cluster without an egress grant, under NetworkPolicy.
    fn in_cluster(&self, addr: std::net::SocketAddr) -> bool;
    /// Whether NetworkPolicies let this pod open a connection to `addr` (`TCP`/`UDP`); for
    /// a Service's address, to every endpoint behind it.
    fn policy_allows(&self, addr: std::net::SocketAddr, protocol: &str) -> Result<(), String>;
    /// The addresses a cluster name stands for (`NAME[.NS[.svc[.cluster.local]]]`): the
    /// Service's cluster address, or the ready pod addresses of a headless one.
    fn resolve(&self, name: &str) -> Option<Vec<std::net::IpAddr>>;
    /// A socket connection to `to` goes to this local address instead: for a pod address on
    /// another machine, a one-connection tunnel through the far node's gateway, which only
    /// this pod may connect to; with mapped pod ports, the real socket of a pod or cluster
    /// address this node serves. `None`: connect to `to` as it is.
    fn tunnel(&self, to: std::net::SocketAddr) -> Option<std::net::SocketAddr>;
    /// Whether any NetworkPolicy exists (else [`Cluster::policy_allows`] allows everything).
    fn has_policies(&self) -> bool;
    /// Route an outgoing `wasi:http` request whose host names a Service or a pod address;
    /// `Err` gives the request back when it names neither.
    #[allow(clippy::result_large_err)]
    fn send(
        &self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
    ) -> Result<SendFuture, http::Request<wasmtime_wasi_http::WasiBody>>;
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        // Cluster Services are reachable by default.
        let request = match &self.cluster {
            Some(c) => match c.send(request, options) {
                Ok(routed) => return Box::new(routed),
                Err(r) => r,
            },
            None => request,
        };
        let uri = request.uri();
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        let allowed = uri.host().is_some_and(|h| self.net.may_request(h, port));
        if !allowed {
            tracing::debug!(uri = %uri, "outgoing wasi:http request refused by the pod's egress policy");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // Outside the cluster, an egress NetworkPolicy (ipBlock) has its say too: on every
        // address the name stands for.
        let judge = self.cluster.clone().filter(|c| c.has_policies());
        let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_string();
        Box::new(async move {
            use http_body_util::BodyExt;
            if let Some(c) = judge {
                let addrs: Vec<std::net::SocketAddr> = match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => vec![std::net::SocketAddr::new(ip, port)],
                    Err(_) => {
                        tokio::net::lookup_host((host.as_str(), port)).await.map(Iterator::collect).unwrap_or_default()
                    }
                };
                if let Some(why) = addrs.iter().find_map(|a| c.policy_allows(*a, "TCP").err()) {
                    tracing::debug!("outgoing wasi:http request refused: {why}");
                    return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
                }
            }
            let (resp, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((resp.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}
