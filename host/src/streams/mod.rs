//! What `kubectl exec`, `attach` and `port-forward` reach on a node. The API server checks
//! the request (who may, which pod, which container), then hops to the pod's node endpoint
//! with the client's upgrade request, as for logs, and splices the two connections:
//! - `GET /exec/{ns}/{pod}/{uid}/{container}?command=…&stdin=…` and
//!   `GET /attach/{ns}/{pod}/{uid}/{container}?…`: WebSocket, Kubernetes' channel protocol
//!   ([`exec`]);
//! - `/portForward/{ns}/{pod}/{uid}`: SPDY/3.1, raw (`Upgrade: SPDY/3.1`) or tunnelled in
//!   WebSocket (`SPDY/3.1+portforward.k8s.io`), as kubectl speaks it ([`portforward`]).
//!
//! Pods and their containers are entered here while they run ([`Registry::pod`],
//! [`Registry::container`]); the guards take them out.

pub mod attach;
pub mod exec;
pub mod portforward;
pub mod spdy;

use crate::runtime::cgroup::Cgroup;
use crate::runtime::process::{Exit, Process};
use crate::runtime::{Cluster, InstanceState, Mount, NetPolicy, Runtime};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use wasmtime_wasi::p2::bindings::CommandPre;

/// What the node endpoint answers the API server with (logs, stats, these streams).
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// The WebSocket subprotocol kubectl tunnels port-forward's SPDY in.
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// The stream protocol of port-forward (`X-Stream-Protocol-Version`).
pub const PORT_FORWARD: &str = "portforward.k8s.io";

/// Loads a debug component on demand (pulled the first time).
pub type LoadDebug =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Result<CommandPre<InstanceState>, String>> + Send + Sync>;

/// What `exec` runs in a container.
pub enum Command {
    /// The container's own command component.
    Own(CommandPre<InstanceState>),
    /// The debug component the pod names (`wasmorch.io/debug-image`), for a container whose
    /// own component has no command (an HTTP component).
    Debug(LoadDebug),
    /// Nothing: why.
    Unavailable(String),
}

/// A running container, as exec needs it: what its instances get.
pub struct ExecTarget {
    pub name: String,
    pub command: Command,
    pub rt: Arc<Runtime>,
    pub env: Vec<(String, String)>,
    pub cgroup: Arc<Cgroup>,
    pub net: Arc<NetPolicy>,
    pub mounts: Arc<[Mount]>,
    pub cluster: Option<Arc<dyn Cluster>>,
    /// The container's life: an exec ends with it.
    pub stop: CancellationToken,
    /// Its current run's input and end, for attach.
    pub attach: Arc<attach::Attach>,
    /// Its log file (the current run's output).
    pub log: std::path::PathBuf,
}

impl ExecTarget {
    /// The command component to run, loading the debug one if that is what the pod names.
    async fn pre(&self) -> Result<CommandPre<InstanceState>, String> {
        match &self.command {
            Command::Own(pre) => Ok(pre.clone()),
            Command::Debug(load) => load().await,
            Command::Unavailable(why) => Err(why.clone()),
        }
    }

    fn process(&self, pre: CommandPre<InstanceState>, args: Vec<String>) -> Process {
        Process {
            rt: self.rt.clone(),
            pre,
            env: self.env.clone(),
            args: std::iter::once(self.name.clone()).chain(args).collect(),
            cgroup: self.cgroup.clone(),
            net: self.net.clone(),
            mounts: self.mounts.clone(),
            cluster: self.cluster.clone(),
            log: None,
        }
    }
}

struct PodEntry {
    ip: IpAddr,
    containers: HashMap<String, Arc<ExecTarget>>,
}

/// The pods running on this node, by uid. std Mutex: held only for map access.
#[derive(Default)]
pub struct Registry {
    pods: Mutex<HashMap<String, PodEntry>>,
}

/// Takes its pod (or container) out of the registry when dropped.
pub struct Entry {
    reg: Arc<Registry>,
    uid: String,
    container: Option<String>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut pods = self.reg.pods.lock().unwrap_or_else(|e| e.into_inner());
        match &self.container {
            None => {
                pods.remove(&self.uid);
            }
            Some(c) => {
                if let Some(p) = pods.get_mut(&self.uid) {
                    p.containers.remove(c);
                }
            }
        }
    }
}

impl Registry {
    pub fn pod(self: &Arc<Self>, uid: &str, ip: IpAddr) -> Entry {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.insert(uid.to_string(), PodEntry { ip, containers: HashMap::new() });
        Entry { reg: self.clone(), uid: uid.to_string(), container: None }
    }

    pub fn container(self: &Arc<Self>, uid: &str, target: ExecTarget) -> Entry {
        let name = target.name.clone();
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pods.get_mut(uid) {
            p.containers.insert(name.clone(), Arc::new(target));
        }
        Entry { reg: self.clone(), uid: uid.to_string(), container: Some(name) }
    }

    fn ip(&self, uid: &str) -> Option<IpAddr> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).get(uid).map(|p| p.ip)
    }

    fn target(&self, uid: &str, container: &str) -> Option<Arc<ExecTarget>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).get(uid).and_then(|p| p.containers.get(container).cloned())
    }

    /// Serve `/exec/…`, `/attach/…` or `/portForward/…` (the caller has checked the path's
    /// first part).
    pub async fn handle(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
        ports: Arc<crate::runtime::ports::PortMap>,
        stop: CancellationToken,
    ) -> hyper::Response<Body> {
        let path = req.uri().path().to_string();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if !parts.iter().skip(1).all(|p| safe(p)) {
            return reply(400, "bad path\n");
        }
        match parts.as_slice() {
            ["exec", _ns, pod, uid, container] => self.exec(req, pod, uid, container).await,
            ["attach", _ns, pod, uid, container] => self.attach(req, pod, uid, container),
            ["portForward", ns, pod, uid] => {
                let Some(ip) = self.ip(uid) else {
                    return reply(404, &format!("pod {ns}/{pod} is not running on this node\n"));
                };
                port_forward(req, ip, ports, format!("pod {ns}/{pod}"), stop)
            }
            _ => reply(404, "not found\n"),
        }
    }

    fn attach(&self, req: hyper::Request<Incoming>, pod: &str, uid: &str, container: &str) -> hyper::Response<Body> {
        let Some(target) = self.target(uid, container) else {
            return reply(404, &format!("container {container} is not running in pod {pod}\n"));
        };
        let opts = exec::Options::parse(req.uri().query().unwrap_or(""));
        if opts.stdin && !target.attach.stdin {
            return reply(
                400,
                &format!(
                    "container {container} in pod {pod} takes no input: only a process container started with \
                     stdin: true does (kubectl exec -i gives a fresh instance input)\n"
                ),
            );
        }
        let (resp, v5) = match channel_upgrade(&req, "attach") {
            Ok(x) => x,
            Err(why) => return reply(400, &why),
        };
        tokio::spawn(async move {
            let Some(ws) = websocket(req).await else { return };
            let (a, log, stop) = (target.attach.clone(), target.log.clone(), target.stop.clone());
            attach::session(ws, v5, opts, a, log, stop).await;
        });
        resp
    }

    async fn exec(
        &self,
        req: hyper::Request<Incoming>,
        pod: &str,
        uid: &str,
        container: &str,
    ) -> hyper::Response<Body> {
        let Some(target) = self.target(uid, container) else {
            return reply(404, &format!("container {container} is not running in pod {pod}\n"));
        };
        let opts = exec::Options::parse(req.uri().query().unwrap_or(""));
        if opts.command.is_empty() {
            return reply(400, "exec needs a command: kubectl exec POD -- NAME ARGS…\n");
        }
        if !opts.stdout && !opts.stderr && !opts.stdin {
            return reply(400, "you must specify at least 1 of stdin, stdout, stderr\n");
        }
        let pre = match target.pre().await {
            Ok(p) => p,
            Err(why) => return reply(400, &format!("container {container} in pod {pod}: {why}\n")),
        };
        let (resp, v5) = match channel_upgrade(&req, "exec") {
            Ok(x) => x,
            Err(why) => return reply(400, &why),
        };
        tokio::spawn(async move {
            let Some(ws) = websocket(req).await else { return };
            let args = opts.command.clone();
            exec::session(ws, v5, opts, move |stdio, gone| async move {
                let stop = target.stop.child_token();
                let s = stop.clone();
                let watch = tokio::spawn(async move {
                    gone.cancelled().await;
                    s.cancel();
                });
                let exit: Exit = target.process(pre, args).run_with(Some(stdio), stop).await;
                watch.abort();
                Ok(exit)
            })
            .await;
        });
        resp
    }
}

fn port_forward(
    req: hyper::Request<Incoming>,
    ip: IpAddr,
    ports: Arc<crate::runtime::ports::PortMap>,
    what: String,
    stop: CancellationToken,
) -> hyper::Response<Body> {
    let offered = header(&req, "sec-websocket-protocol");
    let upgrade = header(&req, "upgrade");
    if upgrade.eq_ignore_ascii_case("websocket") {
        if !offered.split(',').any(|p| p.trim() == SPDY_TUNNEL) {
            return reply(400, &format!("port-forward over WebSocket speaks {SPDY_TUNNEL}; offered: {offered:?}\n"));
        }
        let Some(resp) = websocket_accept(&req, SPDY_TUNNEL) else {
            return reply(400, "port-forward needs a WebSocket upgrade\n");
        };
        tokio::spawn(async move {
            let Some(ws) = websocket(req).await else { return };
            portforward::serve(ws_bytes(ws), ip, ports as Arc<dyn portforward::Dialer>, what, stop).await;
        });
        return resp;
    }
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        let versions: Vec<String> = req
            .headers()
            .get_all("x-stream-protocol-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
            .collect();
        if !versions.iter().any(|v| v == PORT_FORWARD) {
            return reply(400, &format!("port-forward speaks {PORT_FORWARD}; offered: {versions:?}\n"));
        }
        let mut resp = reply(101, "");
        let h = resp.headers_mut();
        h.insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
        h.insert(http::header::UPGRADE, http::HeaderValue::from_static("SPDY/3.1"));
        h.insert("x-stream-protocol-version", http::HeaderValue::from_static(PORT_FORWARD));
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(up) => {
                    portforward::serve(TokioIo::new(up), ip, ports as Arc<dyn portforward::Dialer>, what, stop).await
                }
                Err(e) => tracing::debug!("port-forward upgrade: {e}"),
            }
        });
        return resp;
    }
    reply(400, "port-forward needs an upgrade to WebSocket or SPDY/3.1\n")
}

/// The 101 answer to a channel-protocol WebSocket handshake (exec, attach) and whether it
/// speaks v5; else why not (a 400's message).
fn channel_upgrade(req: &hyper::Request<Incoming>, what: &str) -> Result<(hyper::Response<Body>, bool), String> {
    let offered = header(req, "sec-websocket-protocol");
    let Some(protocol) = exec::pick_protocol(&offered) else {
        return Err(format!("{what} speaks WebSocket with {} or {}; offered: {offered:?}\n", exec::V5, exec::V4));
    };
    match websocket_accept(req, protocol) {
        Some(resp) => Ok((resp, protocol == exec::V5)),
        None => Err(format!("{what} needs a WebSocket upgrade\n")),
    }
}

/// The 101 answer to a WebSocket handshake speaking `protocol`, if the request is one.
fn websocket_accept(req: &hyper::Request<Incoming>, protocol: &'static str) -> Option<hyper::Response<Body>> {
    if !header(req, "upgrade").eq_ignore_ascii_case("websocket") {
        return None;
    }
    let key = req.headers().get("sec-websocket-key")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = reply(101, "");
    let h = resp.headers_mut();
    h.insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
    h.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
    h.insert("sec-websocket-accept", http::HeaderValue::from_str(&accept).ok()?);
    h.insert("sec-websocket-protocol", http::HeaderValue::from_static(protocol));
    Some(resp)
}

/// The WebSocket once the 101 has gone out.
async fn websocket(req: hyper::Request<Incoming>) -> Option<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
    match hyper::upgrade::on(req).await {
        Ok(up) => Some(WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await),
        Err(e) => {
            tracing::debug!("WebSocket upgrade: {e}");
            None
        }
    }
}

/// The bytes a WebSocket's binary messages carry, as a stream (port-forward's SPDY tunnel):
/// every message read is appended, every write becomes a message.
fn ws_bytes<S>(ws: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let up = async move {
            while let Some(Ok(m)) = stream.next().await {
                let ok = match m {
                    Message::Binary(b) => wr.write_all(&b).await.is_ok(),
                    Message::Close(_) => false,
                    _ => true,
                };
                if !ok {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        let down = async move {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        };
        tokio::join!(up, down);
    });
    ours
}

fn header(req: &hyper::Request<Incoming>, name: &str) -> String {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// Whether a path part is a plain name (namespace, pod, uid, container): no separators, not
/// `.` or `..`.
pub(crate) fn safe(part: &str) -> bool {
    !part.is_empty()
        && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && part != ".."
        && part != "."
}

/// A plain-text answer.
pub(crate) fn reply(code: u16, msg: &str) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(msg.to_string())).map_err(|never| match never {}).boxed());
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r
}
