//! Serving an HTTP workload: one fresh instance per request, on the pod's port.

use super::{InstanceState, Limits, NetPolicy, Runtime};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Everything needed to answer requests for one container.
pub struct HttpWorkload {
    pub rt: Arc<Runtime>,
    pub pre: ProxyPre<InstanceState>,
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    pub net: Arc<NetPolicy>,
    /// The container's volume mounts.
    pub mounts: Arc<[crate::pod::volumes::Mount]>,
    /// The cluster's Services as this pod reaches them.
    pub cluster: Option<Arc<crate::proxy::ClusterView>>,
    /// Deadline of one request (instantiate + handle until the response head is set).
    pub timeout: Duration,
    /// Where the instances' stdout and stderr go.
    pub log: Option<super::output::LogSink>,
    /// Requests served; for status and tests.
    pub served: AtomicU64,
}

fn text(status: u16, msg: String) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(msg)).map_err(|never| match never {}).boxed_unsync();
    let mut r = hyper::Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

impl HttpWorkload {
    /// Answer one request with a fresh instance (from a socket, or in process from the
    /// node's proxy).
    pub async fn handle<B>(self: Arc<Self>, req: hyper::Request<B>) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        self.served.fetch_add(1, Ordering::Relaxed);
        let wasi =
            match super::wasi_ctx(&self.env, &[], self.log.as_ref(), &self.net, &self.mounts, self.cluster.as_ref()) {
                Ok(w) => w,
                Err(e) => return text(500, format!("{e:#}\n")),
            };
        let mut store = self.rt.store(wasi, self.limits, self.net.clone(), self.cluster.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let prepared = (|| -> anyhow::Result<_> {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http, req)?;
            let out = store.data_mut().http().new_response_outparam(tx)?;
            Ok((req, out))
        })();
        let (req, out) = match prepared {
            Ok(x) => x,
            Err(e) => return text(400, format!("bad request: {e:#}\n")),
        };
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
        });
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(resp))) => resp,
            Ok(Ok(Err(code))) => text(500, format!("the workload failed: {code:?}\n")),
            Ok(Err(_)) => {
                let why = match task.await {
                    Ok(Ok(())) => "the workload returned without setting a response".to_string(),
                    Ok(Err(e)) => format!("the workload trapped: {e:#}"),
                    Err(e) => format!("the workload task failed: {e}"),
                };
                text(500, format!("{why}\n"))
            }
            Err(_) => {
                task.abort();
                text(504, format!("the workload did not answer within {:?}\n", self.timeout))
            }
        }
    }
}

/// Accept connections until `stop`, then finish in-flight requests (up to `grace`).
pub async fn serve(listener: TcpListener, w: Arc<HttpWorkload>, stop: CancellationToken, grace: Duration) {
    let tracker = TaskTracker::new();
    // HTTP/1.0 clients may omit Host; wasi:http needs an authority, so the pod's own is used.
    let local = listener.local_addr().ok().and_then(|a| http::HeaderValue::from_str(&a.to_string()).ok());
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let w = w.clone();
        let stop = stop.clone();
        let local = local.clone();
        tracker.spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let w = w.clone();
                if req.uri().authority().is_none()
                    && !req.headers().contains_key(http::header::HOST)
                    && let Some(h) = &local
                {
                    req.headers_mut().insert(http::header::HOST, h.clone());
                }
                async move { Ok::<_, std::convert::Infallible>(w.handle(req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    let _ = tokio::time::timeout(grace, tracker.wait()).await;
}
