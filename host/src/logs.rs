//! What the API server reads from a node's endpoint ([`crate::endpoint`]), for its
//! `pods/{name}/log` and `nodes/{name}/proxy`:
//! `GET /containerLogs/{namespace}/{pod}/{uid}/{container}?follow=&tailLines=&previous=`
//! and `GET /stats/summary` (the kubelet's Summary API, see [`crate::stats`]). Each
//! container's output is one file per run under
//! `<node-data>/pods/{ns}_{pod}_{uid}/{container}.log`; the run before is `….log.previous`.

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use crate::streams::Body;
use crate::streams::{reply, safe};

pub struct LogServer {
    pub data_dir: PathBuf,
    pub node: String,
    /// Containers' resource figures, for `/stats/summary`.
    pub stats: Arc<crate::stats::Registry>,
    pub rt: Arc<crate::runtime::Runtime>,
    /// Running pods, for exec, attach and port-forward ([`crate::streams`]).
    pub streams: Arc<crate::streams::Registry>,
}

/// The log file of a container run.
pub fn log_path(pod_dir: &Path, container: &str, previous: bool) -> PathBuf {
    pod_dir.join(if previous { format!("{container}.log.previous") } else { format!("{container}.log") })
}

/// The last `n` lines of `text`.
pub fn tail(text: &[u8], n: usize) -> &[u8] {
    let mut count = 0;
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return &text[i + 1..];
            }
        }
    }
    if n == 0 { &text[text.len()..] } else { text }
}

impl LogServer {
    pub async fn handle(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
        stop: CancellationToken,
    ) -> hyper::Response<Body> {
        let path = req.uri().path().to_string();
        if ["/exec/", "/attach/", "/portForward/"].iter().any(|p| path.starts_with(p)) {
            return self.streams.clone().handle(req, self.rt.ports.clone(), stop).await;
        }
        if path == "/metrics" {
            let c = &self.rt.counts;
            use std::sync::atomic::Ordering::Relaxed;
            let text = crate::stats::NodeMetrics {
                containers: self.stats.snapshot(),
                runtime: (
                    c.instances_started.load(Relaxed),
                    c.instances_live.load(Relaxed),
                    c.compiled.load(Relaxed),
                    c.cache_loads.load(Relaxed),
                ),
                memory_used: self.rt.memory.used() as u64,
                warm: {
                    let (charged, resident) = self.rt.warm_bytes();
                    (charged as u64, resident as u64)
                },
            }
            .render();
            let mut r = reply(200, &text);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return r;
        }
        if path == "/stats/summary" {
            let snap = self.stats.snapshot();
            let node_cpu: Duration = snap.iter().map(|c| c.cpu_total).sum();
            let doc = crate::stats::summary(
                &self.node,
                &wasmorch_api::object::now_rfc3339(),
                &snap,
                node_cpu,
                self.rt.memory.used() as u64,
            );
            let mut r = reply(200, &doc.to_string());
            r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            return r;
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let ["containerLogs", ns, pod, uid, container] = parts.as_slice() else {
            return reply(404, "not found\n");
        };
        if ![ns, pod, uid, container].iter().all(|p| safe(p)) {
            return reply(400, "bad path\n");
        }
        let q: std::collections::HashMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let follow = q.get("follow").is_some_and(|v| v == "true");
        let previous = q.get("previous").is_some_and(|v| v == "true");
        let tail_lines = q.get("tailLines").and_then(|v| v.parse::<usize>().ok());
        let file = log_path(&self.data_dir.join("pods").join(format!("{ns}_{pod}_{uid}")), container, previous);
        let Ok(data) = tokio::fs::read(&file).await else {
            let what = if previous { "previous terminated container" } else { "container" };
            return reply(404, &format!("{what} \"{container}\" in pod \"{pod}\" has no logs\n"));
        };
        let first = Bytes::copy_from_slice(match tail_lines {
            Some(n) => tail(&data, n),
            None => &data,
        });
        if !follow || previous {
            return reply(200, "").map(|_| http_body_util::Full::new(first).map_err(|never| match never {}).boxed());
        }
        // Follow: send what is there, then what is appended, until the client goes away, the
        // node stops, or the file is removed with its pod.
        let offset = data.len() as u64;
        let more = crate::runtime::output::follow(file, offset, stop);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
        tokio::spawn(async move {
            let mut more = more;
            let mut next = Some(first);
            while let Some(b) = next {
                if tx.send(Ok(Frame::data(b))).await.is_err() {
                    return;
                }
                next = more.recv().await;
            }
        });
        let body = StreamBody::new(tokio_stream_wrappers(rx));
        hyper::Response::new(BodyExt::boxed(body))
    }
}

fn tokio_stream_wrappers(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
    }
}
