//! Store benchmark: durable creates/s of ~1 KB objects through the wasmorch API at
//! concurrency 1 and 64 on the embedded store and on etcd, beside etcd (its JSON gateway)
//! doing the same puts on the same disk, in the same run; watch delivery latency; idle RSS
//! of `wasmorch server`.
//!
//! Run with `bench/run-store.sh` (builds release with the etcd engine, installs Debian's
//! etcd-server if missing).
//! Figures depend on the disk; both peers are measured back to back on it.

use bytes::Bytes;
use futures::{AsyncBufReadExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "common.rs"]
mod common;
use common::*;

const PAYLOAD: usize = 1000;
const RUN: Duration = Duration::from_secs(5);

/// `wasmorch server` with `extra` flags, once its admin kubeconfig answers.
async fn start_server(bin: &str, data: &std::path::Path, extra: &[&str]) -> (Proc, kube::Client) {
    let port = free_port();
    let server = Proc(
        Command::new(bin)
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wasmorch server"),
    );
    let kc = data.join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kc.exists() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cfg =
        kube::Config::from_custom_kubeconfig(kube::config::Kubeconfig::read_from(&kc).unwrap(), &Default::default())
            .await
            .unwrap();
    (server, kube::Client::try_from(cfg).unwrap())
}

async fn drive<F, Fut>(concurrency: usize, f: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (f, counter, done) = (f.clone(), counter.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < RUN {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if f(i).await {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    panic!("request {i} failed");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Writes and commits of the store so far (its `wasmorch_store_commit_batch_size` histogram).
async fn commits(client: &kube::Client) -> (f64, f64) {
    let req = http::Request::builder().uri("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.expect("GET /metrics");
    let metric = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
            .unwrap_or_else(|| panic!("/metrics has no {name}"))
    };
    (metric("wasmorch_store_commit_batch_size_sum "), metric("wasmorch_store_commit_batch_size_count "))
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = std::env::var("WASMORCH_BIN").unwrap_or_else(|_| "target/release/wasmorch".into());
    let tmp = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let payload = "x".repeat(PAYLOAD);

    // wasmorch server on its embedded store
    let (server, client) = start_server(&bin, &tmp.path().join("wasmorch"), &[]).await;
    let idle_rss = rss_kb(server.0.id());
    let create = |client: kube::Client, payload: String, prefix: &'static str| {
        move |i: u64| {
            let client = client.clone();
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{prefix}-{i}")}, "data": {"payload": payload.clone()}});
            async move {
                let req = http::Request::builder()
                    .method("POST")
                    .uri("/api/v1/namespaces/default/configmaps")
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap();
                matches!(client.send(req).await, Ok(r) if r.status() == 201)
            }
        }
    };
    let b0 = commits(&client).await;
    let w1 = drive(1, create(client.clone(), payload.clone(), "c1")).await;
    let b1 = commits(&client).await;
    let w64 = drive(64, create(client.clone(), payload.clone(), "c64")).await;
    let b64 = commits(&client).await;

    // Watch delivery latency: create objects stamped with their send time, measure on receipt.
    let (_, list) = {
        let req = http::Request::builder()
            .uri("/api/v1/namespaces/default/configmaps?limit=1")
            .body(kube::client::Body::from(Vec::new()))
            .unwrap();
        let r = client.send(req).await.unwrap();
        let b = r.into_body().collect_bytes().await.unwrap();
        ((), serde_json::from_slice::<Value>(&b).unwrap())
    };
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let req = http::Request::builder()
        .uri(format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"))
        .body(Vec::new())
        .unwrap();
    let mut lines = client.request_stream(req).await.unwrap().lines();
    let n_watch = 1000;
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..n_watch {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos().to_string();
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("w-{i}")}, "data": {"sent": now}});
                let req = http::Request::builder()
                    .method("POST")
                    .uri("/api/v1/namespaces/default/configmaps")
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap();
                client.send(req).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut lat = Vec::new();
    while lat.len() < n_watch {
        let line = lines.next().await.unwrap().unwrap();
        let e: Value = serde_json::from_str(&line).unwrap();
        if let Some(sent) = e["object"]["data"]["sent"].as_str() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            lat.push((now - sent.parse::<u128>().unwrap()) as f64 / 1e6);
        }
    }
    writer.await.unwrap();
    let after_rss = rss_kb(server.0.id());
    drop(server);

    // etcd on the same disk, through its JSON gateway, same payload and concurrency.
    let (etcd, cport) = start_etcd(&tmp.path().join("etcd"));
    let http: HttpClient<_, Full<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).pool_max_idle_per_host(128).build_http();
    let url = format!("http://127.0.0.1:{cport}/v3/kv/put");
    let put = |http: HttpClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
               url: String,
               payload: String,
               prefix: &'static str| {
        move |i: u64| {
            use base64::Engine;
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            let body =
                json!({"key": b64(&format!("/registry/configmaps/default/{prefix}-{i}")), "value": b64(&payload)})
                    .to_string();
            let req = http::Request::post(url.clone()).body(Full::new(Bytes::from(body))).unwrap();
            let http = http.clone();
            async move {
                match http.request(req).await {
                    Ok(r) if r.status() == 200 => r.into_body().collect().await.is_ok(),
                    _ => false,
                }
            }
        }
    };
    let e1 = drive(1, put(http.clone(), url.clone(), payload.clone(), "c1")).await;
    let e64 = drive(64, put(http.clone(), url.clone(), payload.clone(), "c64")).await;
    drop(etcd);

    // wasmorch on a fresh etcd member, same disk, same creates.
    let (etcd, cport) = start_etcd(&tmp.path().join("etcd-2"));
    let endpoint = format!("http://127.0.0.1:{cport}");
    let (server, client) =
        start_server(&bin, &tmp.path().join("wasmorch-etcd"), &["--datastore-endpoint", &endpoint]).await;
    let o1 = drive(1, create(client.clone(), payload.clone(), "c1")).await;
    let o64 = drive(64, create(client.clone(), payload.clone(), "c64")).await;
    drop(server);
    drop(etcd);

    let p50 = percentile(&mut lat, 0.5);
    let p99 = percentile(&mut lat, 0.99);
    println!("durable creates/s (~1 KB objects, {}s each)", RUN.as_secs());
    println!(
        "  {:<12} {:>10} {:>10} {:>10} {:>13} {:>13}",
        "concurrency", "wasmorch", "on etcd", "etcd 3.4", "embedded/etcd", "on-etcd/etcd"
    );
    for (c, w, o, e) in [(1, w1, o1, e1), (64, w64, o64, e64)] {
        println!("  {:<12} {:>10.0} {:>10.0} {:>10.0} {:>12.2}x {:>12.2}x", c, w, o, e, w / e, o / e);
    }
    println!("  (wasmorch: the API on its embedded store; on etcd: the same API on --datastore-endpoint)");
    for (c, (w0, n0), (w1, n1)) in [(1, b0, b1), (64, b1, b64)] {
        let (writes, n) = (w1 - w0, n1 - n0);
        println!(
            "  group commit at concurrency {c}: {:.1} writes per commit ({:.0} commits/s)",
            writes / n.max(1.0),
            n / RUN.as_secs_f64()
        );
    }
    println!("watch delivery latency over {n_watch} events: p50 {p50:.2} ms, p99 {p99:.2} ms");
    println!("wasmorch server RSS: idle {} KB, after the run {} KB", idle_rss, after_rss);
}
