//! What a pod sees of the cluster's Services: `wasi:http` requests to a Service name or
//! cluster address take the proxy's layer-7 path ([`super::Proxy::forward`]).

use super::Proxy;
use super::table::Route;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use wasmtime_wasi_http::WasiBody;

/// A pod's view: its namespace (for short names) and the node's proxy.
pub struct ClusterView {
    pub proxy: Arc<Proxy>,
    pub namespace: String,
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
    fn is_service_addr(&self, addr: SocketAddr) -> bool {
        self.proxy.table().is_service_addr(addr)
    }

    fn send(
        &self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
    ) -> Result<crate::runtime::SendFuture, http::Request<WasiBody>> {
        let Some(route) = self.route(request.uri()) else { return Err(request) };
        let proxy = self.proxy.clone();
        Ok(Box::pin(async move {
            if proxy.table().targets(&route).is_empty() {
                return Err(wasmtime_wasi_http::p2::bindings::http::types::ErrorCode::DestinationUnavailable.into());
            }
            let resp = proxy.forward(&route, None, request).await;
            let resp = resp
                .map(|b| b.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))).boxed_unsync());
            let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> = Box::new(async { Ok(()) });
            Ok((resp, io))
        }))
    }
}
