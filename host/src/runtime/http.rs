//! Serving an HTTP workload: one fresh instance per request, on the pod's port.

use super::admission::Admission;
use super::cgroup::Cgroup;
use super::memory::oom_message;
use super::{InstanceState, NetPolicy, Runtime};
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Host memory an instance is assumed to cost besides its linear memory (store, WASI and
/// HTTP contexts, resource table), for the concurrency limit.
pub const INSTANCE_OVERHEAD: usize = 64 << 10;

/// An HTTP component ready to instantiate, and the memory one instance of it takes once
/// instantiated: the same for every pod that runs it, so measured at its first start only.
/// Shared (and dropped) with the runtime's loaded component.
#[derive(Clone)]
pub struct HttpComponent {
    pub pre: ProxyPre<InstanceState>,
    footprint: Arc<std::sync::OnceLock<usize>>,
}

impl HttpComponent {
    pub fn new(pre: ProxyPre<InstanceState>) -> HttpComponent {
        HttpComponent { pre, footprint: Arc::default() }
    }
}

/// Everything needed to answer requests for one container.
pub struct HttpWorkload {
    pub rt: Arc<Runtime>,
    pub pre: ProxyPre<InstanceState>,
    pub env: Vec<(String, String)>,
    /// The container's CPU account and memory budget, shared by all its instances.
    pub cgroup: Arc<Cgroup>,
    /// How many requests run at once, and the queue before them.
    pub admission: Arc<Admission>,
    pub net: Arc<NetPolicy>,
    /// The container's volume mounts, held open for this run or opened per instance.
    pub mounts: super::ContainerMounts,
    /// The cluster's Services as this pod reaches them.
    pub cluster: Option<Arc<dyn super::Cluster>>,
    /// Deadline of one request (queue + instantiate + handle until the response head is set).
    pub timeout: Duration,
    /// Where the instances' stdout and stderr go.
    pub log: Option<super::output::LogSink>,
    /// Requests served; for status and tests.
    pub served: AtomicU64,
    /// Requests answered 503 because they could not get memory.
    pub oom: AtomicU64,
    /// Time from a request's arrival to its response head (queue and instance included).
    pub latency: prometheus_client::metrics::histogram::Histogram,
    /// Requests let in and not yet finished, from a socket or in process. Closed when the
    /// container stops: later requests are refused before any instance runs (so the proxy
    /// sends them to another replica), and the pod's volumes outlive every instance that
    /// had them open.
    pub open: OpenRequests,
}

/// The requests a container let in and has not finished; see [`HttpWorkload::open`].
#[derive(Default)]
pub struct OpenRequests(TaskTracker);

impl OpenRequests {
    /// A place among the open requests, unless the container is stopping.
    pub fn enter(&self) -> Option<TaskTrackerToken> {
        // The token first, then the check: a `drained` begun after `close` cannot miss it.
        let token = self.0.token();
        (!self.0.is_closed()).then_some(token)
    }

    /// Refuse requests from now on.
    pub fn close(&self) {
        self.0.close();
    }

    /// Once closed: when the last request let in has finished.
    pub async fn drained(&self) {
        self.0.wait().await
    }
}

/// A request let in: its place in the container's admission and among its open requests.
pub struct Admitted {
    start: std::time::Instant,
    deadline: tokio::time::Instant,
    ticket: super::admission::Ticket,
    open: TaskTrackerToken,
}

/// Buckets of [`HttpWorkload::latency`]: 50 µs … ~26 s.
pub fn latency_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 20,
    ))
}

fn text(status: u16, msg: String) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(msg)).map_err(|never| match never {}).boxed_unsync();
    let mut r = hyper::Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// The header that marks a 503 the node gave before any instance ran (safe to retry). Its
/// value is [`STOPPING`] when the container is stopping, "1" when it is full.
pub const OVERLOADED: &str = "x-wasmorch-overloaded";

/// [`OVERLOADED`]'s value from a stopping container: its endpoint is going.
pub const STOPPING: &str = "stopping";

/// Whether `r` is a refusal from a stopping container.
pub fn refused_stopping<B>(r: &hyper::Response<B>) -> bool {
    r.headers().get(OVERLOADED).is_some_and(|v| v == STOPPING)
}

fn unavailable(msg: String, refused: Option<&'static str>) -> hyper::Response<HyperOutgoingBody> {
    let mut r = text(503, msg);
    r.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    if let Some(why) = refused {
        r.headers_mut().insert(OVERLOADED, http::HeaderValue::from_static(why));
    }
    r
}

impl HttpWorkload {
    /// The memory one instance takes once instantiated (before any request), under the
    /// container's limits: the concurrency limit starts from it. An error means no instance
    /// can run (an `OOMKilled` message when the limit is too small).
    ///
    /// The component's first start instantiates it; later starts (a Deployment's other
    /// replicas) check that what it took fits in the container's budget now, and only
    /// instantiate when it does not, for the error that names why.
    pub async fn measure(
        rt: &Arc<Runtime>,
        component: &HttpComponent,
        cgroup: &Arc<Cgroup>,
        net: &Arc<NetPolicy>,
    ) -> anyhow::Result<usize> {
        if let Some(&peak) = component.footprint.get()
            && cgroup.memory.has_room(peak)
        {
            return Ok(peak);
        }
        let wasi = wasmtime_wasi::WasiCtxBuilder::new().build();
        let mut store = rt.store(wasi, cgroup, net.clone(), None);
        let pre = component.pre.clone();
        let r = cgroup.run(async move {
            pre.instantiate_async(&mut store).await?;
            anyhow::Ok(store.data().limits.peak())
        });
        let peak = match r.await {
            Ok(r) => r?,
            Err(oom) => return Err(anyhow::anyhow!(oom)),
        };
        let _ = component.footprint.set(peak);
        Ok(peak)
    }

    /// Answer one request with a fresh instance (from a socket, or in process from the
    /// node's proxy), once the container's admission lets it in.
    pub async fn handle<B>(self: Arc<Self>, req: hyper::Request<B>) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        match self.admit().await {
            Ok(a) => self.run(a, req).await,
            Err(refused) => refused,
        }
    }

    /// Let one request in, waiting in the queue if need be. Refused (a 503 marked
    /// [`OVERLOADED`], safe to send elsewhere: nothing ran) when the container is stopping,
    /// its queue is full or the wait outlasts the request timeout.
    pub async fn admit(&self) -> Result<Admitted, hyper::Response<HyperOutgoingBody>> {
        let start = std::time::Instant::now();
        self.served.fetch_add(1, Ordering::Relaxed);
        let Some(open) = self.open.enter() else {
            self.latency.observe(start.elapsed().as_secs_f64());
            return Err(unavailable("the pod is stopping\n".into(), Some(STOPPING)));
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let Some(ticket) = self.admission.enter(deadline).await else {
            let s = self.admission.stats();
            self.latency.observe(start.elapsed().as_secs_f64());
            return Err(unavailable(
                format!(
                    "the pod is at its concurrency limit ({} in flight, {} queued of {})\n",
                    s.in_flight, s.queued, s.queue_limit
                ),
                Some("1"),
            ));
        };
        Ok(Admitted { start, deadline, ticket, open })
    }

    /// Answer a request [`admit`](Self::admit) let in, with a fresh instance.
    pub async fn run<B>(self: Arc<Self>, a: Admitted, req: hyper::Request<B>) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let start = a.start;
        let latency = self.latency.clone();
        let resp = self.answer(a, req).await;
        latency.observe(start.elapsed().as_secs_f64());
        resp
    }

    async fn answer<B>(self: Arc<Self>, a: Admitted, req: hyper::Request<B>) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let Admitted { deadline, ticket, open, .. } = a;
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let pre = self.pre.clone();
        let w = self.clone();
        // The instance holds its place until it returns, which may be after the response
        // head was sent (the body is still being written). Its context is made inside its
        // future, so that work is charged to the container with the instance's own.
        let instance = async move {
            let _held = (ticket, open);
            let run = w.cgroup.run(async {
                let fs = match w.mounts.preopens() {
                    Ok(fs) => fs,
                    Err(e) => {
                        let _ = tx.send(Ok(text(500, format!("{e:#}\n"))));
                        return (Ok(()), 0);
                    }
                };
                let wasi =
                    super::wasi_ctx(&w.env, &[], w.log.as_ref(), None, &w.net, &fs, w.cluster.as_ref(), &w.rt.ports);
                let mut store = w.rt.store(wasi, &w.cgroup, w.net.clone(), w.cluster.clone());
                let r = async {
                    let mut http = store.data_mut().http();
                    let req = match http.new_incoming_request(Scheme::Http, req) {
                        Ok(req) => req,
                        Err(e) => {
                            let _ = tx.send(Ok(text(400, format!("bad request: {e:#}\n"))));
                            return Ok(());
                        }
                    };
                    let out = http.new_response_outparam(tx)?;
                    let proxy = pre.instantiate_async(&mut store).await?;
                    proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
                }
                .await;
                (r, store.data().limits.peak())
            });
            match run.await {
                Ok((r, peak)) => {
                    w.admission.observe(peak + INSTANCE_OVERHEAD);
                    r.map_err(|e| format!("{e:#}"))
                }
                Err(oom) => Err(oom),
            }
        };
        // The instance runs in this task (most answer and return within one poll: no task
        // spawned, no wake-up, no timer); one still writing its body when the head is set
        // goes on in a task of its own, as does one whose client went away.
        let mut instance: Running<_> = Running(Some(Box::pin(std::panic::AssertUnwindSafe(instance).catch_unwind())));
        let outcome = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                biased;
                done = &mut instance => rx.try_recv().map_err(|_| done),
                head = &mut rx => match head {
                    Ok(head) => Ok(head),
                    // Gone without an answer: what the instance returns says why.
                    Err(_) => Err((&mut instance).await),
                },
            }
        })
        .await;
        let returned = match outcome {
            Err(_) => {
                instance.abort();
                return text(504, format!("the workload did not answer within {:?}\n", self.timeout));
            }
            Ok(Ok(head)) => return answered(head),
            Ok(Err(returned)) => returned,
        };
        match returned {
            Ok(Ok(())) => text(500, "the workload returned without setting a response\n".into()),
            Ok(Err(e)) if oom_message(&e).is_some() => {
                self.oom.fetch_add(1, Ordering::Relaxed);
                let why = oom_message(&e).unwrap_or_default();
                unavailable(format!("the request could not get memory: {why}\n"), None)
            }
            Ok(Err(e)) => text(500, format!("the workload trapped: {e}\n")),
            Err(_) => text(500, "the workload's host code failed\n".into()),
        }
    }
}

/// A request's instance being polled where the request is served. Dropped before it
/// returns — its response head sent while it still writes the body, or its client gone
/// (the request's future dropped) — it finishes in a task of its own: an instance is cut
/// off mid-handler only at the request's deadline ([`Running::abort`]).
struct Running<O: Send + 'static>(Option<std::pin::Pin<Box<dyn Future<Output = O> + Send>>>);

impl<O: Send + 'static> Running<O> {
    /// Drop the instance where it is.
    fn abort(mut self) {
        self.0 = None;
    }
}

impl<O: Send + 'static> Future for Running<O> {
    type Output = O;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<O> {
        let Some(f) = self.0.as_mut() else { return std::task::Poll::Pending };
        let r = f.as_mut().poll(cx);
        if r.is_ready() {
            self.0 = None;
        }
        r
    }
}

impl<O: Send + 'static> Drop for Running<O> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(f);
        }
    }
}

/// The response a workload set: its own, or a 500 naming the error code it gave instead.
fn answered(
    head: Result<hyper::Response<HyperOutgoingBody>, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>,
) -> hyper::Response<HyperOutgoingBody> {
    match head {
        Ok(resp) => resp,
        Err(code) => text(500, format!("the workload failed: {code:?}\n")),
    }
}

/// Accept connections on `l` until `stop`, handing each (no Nagle delay) to `on`; a failed
/// accept (out of file descriptors, say) is retried after a pause.
pub async fn accept_each(
    l: TcpListener,
    stop: CancellationToken,
    mut on: impl FnMut(tokio::net::TcpStream, std::net::SocketAddr),
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        on(tcp, peer);
    }
}

/// Accept connections until `stop`, then refuse new requests and finish those in flight,
/// from sockets and in process (up to `grace`).
pub async fn serve(listener: TcpListener, w: Arc<HttpWorkload>, stop: CancellationToken, grace: Duration) {
    let tracker = TaskTracker::new();
    // HTTP/1.0 clients may omit Host; wasi:http needs an authority, so the pod's own is used.
    let local = listener.local_addr().ok().and_then(|a| http::HeaderValue::from_str(&a.to_string()).ok());
    accept_each(listener, stop.clone(), |tcp, _| {
        let w = w.clone();
        let stop = stop.clone();
        let local = local.clone();
        let cgroup = w.cgroup.clone();
        tracker.spawn(cgroup.charged(async move {
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
        }));
    })
    .await;
    // The listener is closed now (accept_each dropped it).
    tracker.close();
    w.open.close();
    let _ = tokio::time::timeout(grace, async { tokio::join!(tracker.wait(), w.open.drained()) }).await;
}

#[cfg(test)]
mod tests {
    use super::OpenRequests;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    fn ready<F: Future>(f: std::pin::Pin<&mut F>) -> bool {
        matches!(f.poll(&mut Context::from_waker(Waker::noop())), Poll::Ready(_))
    }

    #[test]
    fn a_stopping_container_refuses_new_requests_and_waits_for_those_let_in() {
        let open = OpenRequests::default();
        let first = open.enter().expect("open before close");
        open.close();
        assert!(open.enter().is_none(), "a request after close is refused");
        let drained = open.drained();
        let mut drained = std::pin::pin!(drained);
        assert!(!ready(drained.as_mut()), "the request let in is still running");
        drop(first);
        assert!(ready(drained.as_mut()), "drained once it finished");
    }
}
