//! The API server: Kubernetes on the wire over HTTPS.
//!
//! - [`request`]: paths, query parameters, bodies, replies (the one error → `Status` place).
//! - [`objects`]: pure write rules (create, update, status, patch, delete).
//! - [`api`]: operations over the store, used by HTTP handlers and in-process controllers.
//! - [`handlers`]: authentication and routing; [`authz`]: who may do what.
//! - [`watch`]: streaming watches.
//! - [`logs`]: `pods/{name}/log`, proxied to the pod's node.
//! - [`discovery`]: `/api`, `/apis`, `/version`, `/openapi/v3`.
//! - [`relay`]: streams between nodes that cannot reach each other.
//! - [`registry`]: the cluster's OCI registry (`/v2/`).

pub mod access;
pub mod api;
pub mod authz;
pub mod connect;
pub mod crds;
pub mod dial;
pub mod discovery;
pub mod handlers;
pub mod logs;
pub mod lookups;
pub mod metrics;
pub mod objects;
pub mod quota;
pub mod rbac;
pub mod registry;
pub mod relay;
pub mod request;
pub mod serviceaccounts;
pub mod subresources;
pub mod ui;
pub mod verbs;
pub mod wake;
pub mod watch;

use crate::pki::{Pki, Tokens, identity_from_cert};
use axum::Router;
use axum::routing::{any, get};
use handlers::PeerIdentity;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub struct ServerState {
    pub api: api::Api,
    /// Static bearer tokens (the admin's); join tokens live in the store.
    pub tokens: Tokens,
    pub data_dir: PathBuf,
    /// Signs node certificates; serves `/cacerts`.
    pub pki: Arc<Pki>,
    /// How long a node certificate is valid.
    pub node_cert_ttl: std::time::Duration,
    /// How the server connects to nodes' endpoints (logs): trusts the cluster CA, presents
    /// the API server's client certificate.
    pub kubelet_tls: Arc<rustls::ClientConfig>,
    /// The cluster's OCI registry.
    pub registry: Arc<registry::Registry>,
    /// Whether `/metrics` is open without credentials (`--anonymous-metrics`).
    pub anonymous_metrics: bool,
    /// The latest resource usage of nodes and pods (`metrics.k8s.io`).
    pub metrics: Arc<metrics::Metrics>,
}

pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/healthz", get(handlers::health))
        .route("/livez", get(handlers::health))
        .route("/readyz", get(handlers::health))
        .route("/version", get(handlers::version))
        .route("/cacerts", get(handlers::cacerts))
        .route("/metrics", get(handlers::metrics))
        .route("/ui", get(ui::root))
        .route("/ui/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route("/v2", any(registry::handle))
        .route("/v2/", any(registry::handle))
        .route("/v2/{*rest}", any(registry::handle))
        .fallback(handlers::dispatch)
        .layer(axum::middleware::from_fn(request::negotiate))
        .with_state(state)
}

/// A handler that panics answers 500 with a `Status` instead of dropping the connection (a
/// bug, logged as one: input must never reach a panic; see the hostile-input tests).
async fn guarded(
    fut: impl std::future::Future<Output = Result<axum::response::Response, std::convert::Infallible>>,
) -> axum::response::Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(resp)) => resp,
        Ok(Err(never)) => match never {},
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!("BUG: a request handler panicked: {what}");
            request::error_response(&wasmorch_api::ApiError::new(
                500,
                "InternalError",
                "an internal error occurred while handling the request (logged on the server)",
            ))
        }
    }
}

/// Concurrent HTTP/2 streams a client may open on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 2000;

/// Accept TLS connections until `shutdown`; each connection's verified client certificate
/// (if any) becomes its [`PeerIdentity`]. Open connections are asked to finish gracefully.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    relay: Arc<relay::Relay>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let relay = relay.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    return;
                }
                Err(_) => return,
            };
            let id = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| identity_from_cert(c));
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let (app, relay, id) = (app.clone(), relay.clone(), id.clone());
                async move {
                    // Relay streams never reach the API router.
                    if relay::is_relay(&req) {
                        return Ok(relay.handle(id, req).await.map(axum::body::Body::new));
                    }
                    req.extensions_mut().insert(PeerIdentity(id));
                    Ok::<_, std::convert::Infallible>(guarded(app.oneshot(req)).await)
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A node's requests all share one HTTP/2 connection: its pods' status writes and
            // token requests come in bursts of thousands when it starts many at once, and the
            // group commit folds what is in flight into one fsync. hyper's default (200
            // streams) held a 4 000-pod start to 200 writes in flight.
            builder.http2().max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, "connection: {e}") },
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(6), tracker.wait()).await;
}
