//! The relay: streams between nodes that cannot reach each other, carried through the
//! control plane over connections the nodes make to it.
//!
//! - A node registers with `GET /wasmorch/v1/relay` (`Upgrade: wasmorch-relay`, its node
//!   certificate). After the 101 the roles turn: the server is the HTTP/2 client on that
//!   connection, the node serves its gateway on it. One registration per node; a newer one
//!   replaces the older.
//! - A node that cannot reach node B directly sends the server
//!   `CONNECT <podIP>:<port>` with `x-wasmorch-relay-to: B`. The server opens the same
//!   CONNECT on B's registration, adding `x-wasmorch-relay-from: <caller>` (the caller's
//!   certificate name: B admits or refuses it as if it had called directly), and splices
//!   the two streams.
//!
//! Only node certificates may register or relay.

use crate::pki::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const PATH: &str = "/wasmorch/v1/relay";
pub const UPGRADE: &str = "wasmorch-relay";
pub const TO: &str = "x-wasmorch-relay-to";
pub const FROM: &str = "x-wasmorch-relay-from";

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A node's registration: its number, and the HTTP/2 client on its connection.
type Registration = (u64, SendRequest<Empty<Bytes>>);

#[derive(Default)]
pub struct Relay {
    nodes: Mutex<HashMap<String, Registration>>,
    next: AtomicU64,
    /// Streams relayed (for tests and figures).
    pub relayed: AtomicU64,
}

fn reply(status: u16, msg: &str) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(format!("{msg}\n"))).map_err(|e| match e {}).boxed_unsync());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r
}

/// The node a verified client certificate names, if it is a node's.
pub fn node_of(id: Option<&Identity>) -> Option<&str> {
    let id = id?;
    let name = id.user.strip_prefix(wasmorch_api::join::NODE_USER_PREFIX)?;
    (!name.is_empty() && id.groups.iter().any(|g| g == wasmorch_api::join::NODES_GROUP)).then_some(name)
}

/// Whether a request is the relay's to answer (it never reaches the API router).
pub fn is_relay(req: &hyper::Request<Incoming>) -> bool {
    req.method() == http::Method::CONNECT && req.headers().contains_key(TO) || req.uri().path() == PATH
}

impl Relay {
    pub async fn handle(
        self: std::sync::Arc<Self>,
        id: Option<Identity>,
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<Body> {
        let Some(node) = node_of(id.as_ref()).map(String::from) else {
            return reply(403, "only cluster nodes use the relay");
        };
        if req.uri().path() == PATH && req.method() == http::Method::GET {
            return self.register(node, req);
        }
        if req.method() == http::Method::CONNECT {
            return self.connect(node, req).await;
        }
        reply(405, "the relay takes GET (with Upgrade) and CONNECT")
    }

    fn register(self: std::sync::Arc<Self>, node: String, req: hyper::Request<Incoming>) -> hyper::Response<Body> {
        let asks = req.headers().get(http::header::UPGRADE).and_then(|v| v.to_str().ok()) == Some(UPGRADE);
        if !asks {
            return reply(400, &format!("registering with the relay needs Upgrade: {UPGRADE}"));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let up = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => return tracing::debug!(node, "relay upgrade: {e}"),
            };
            let hs = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .handshake::<_, Empty<Bytes>>(up)
                .await;
            let (send, conn) = match hs {
                Ok(x) => x,
                Err(e) => return tracing::debug!(node, "relay handshake: {e}"),
            };
            self.nodes.lock().unwrap_or_else(|e| e.into_inner()).insert(node.clone(), (n, send));
            tracing::info!(node, "registered with the relay");
            if let Err(e) = conn.await {
                tracing::debug!(node, "relay connection: {e}");
            }
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            if nodes.get(&node).is_some_and(|(m, _)| *m == n) {
                nodes.remove(&node);
            }
        });
        let mut r = hyper::Response::new(Empty::new().map_err(|e| match e {}).boxed_unsync());
        *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
        r.headers_mut().insert(http::header::UPGRADE, http::HeaderValue::from_static(UPGRADE));
        r
    }

    async fn connect(self: std::sync::Arc<Self>, from: String, req: hyper::Request<Incoming>) -> hyper::Response<Body> {
        let Some(to) = req.headers().get(TO).and_then(|v| v.to_str().ok()).map(String::from) else {
            return reply(400, &format!("a relayed CONNECT names its node in {TO}"));
        };
        let Some(target) = req.uri().authority().map(|a| a.to_string()) else {
            return reply(400, "CONNECT needs podIP:port");
        };
        let sender = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).get(&to).map(|(_, s)| s.clone());
        let Some(mut sender) = sender else {
            return reply(502, &format!("node {to} is not connected to the relay"));
        };
        let mut fwd =
            http::Request::builder().method(http::Method::CONNECT).uri(target.as_str()).header(FROM, from.as_str());
        // The source the caller names, for the far node's NetworkPolicy check.
        if let Some(src) = req.headers().get(wasmorch_api::SOURCE_HEADER) {
            fwd = fwd.header(wasmorch_api::SOURCE_HEADER, src);
        }
        let Ok(fwd) = fwd.body(Empty::<Bytes>::new()) else {
            return reply(400, "bad CONNECT target");
        };
        if sender.ready().await.is_err() {
            return reply(502, &format!("node {to}'s relay connection is closed"));
        }
        let resp = match sender.send_request(fwd).await {
            Ok(r) => r,
            Err(e) => return reply(502, &format!("node {to} via the relay: {e}")),
        };
        if resp.status() != http::StatusCode::OK {
            // The far node's refusal, as it gave it.
            return resp
                .map(|b| b.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) }).boxed_unsync());
        }
        self.relayed.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let (a, b) = tokio::join!(hyper::upgrade::on(req), hyper::upgrade::on(resp));
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
                }
                (a, b) => tracing::debug!(from, to, "relay upgrade: {:?} {:?}", a.err(), b.err()),
            }
        });
        reply(200, "").map(|_| Full::new(Bytes::new()).map_err(|e| match e {}).boxed_unsync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_node_certificates_use_the_relay() {
        let node = Identity { user: "system:node:pi".into(), groups: vec!["system:nodes".into()] };
        assert_eq!(node_of(Some(&node)), Some("pi"));
        let claims = Identity { user: "system:node:pi".into(), groups: vec![] };
        assert_eq!(node_of(Some(&claims)), None, "the name without the nodes group");
        let admin = Identity::admin();
        assert_eq!(node_of(Some(&admin)), None);
        assert_eq!(node_of(None), None);
    }
}
