//! Wire benchmark: creates per second and server CPU per create with JSON bodies and with
//! protobuf bodies (and protobuf replies), in the same run against the same server.
//! Pods are created (the richest kind served), COUNT of each (default 2000), CONCURRENCY at
//! a time (default 16). Run with `bench/run-wire.sh`.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wasmorch_api::protobuf;

#[path = "common.rs"]
mod common;
use common::*;

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "wasmorch.local/hello-http:1.0",
            "ports": [{"containerPort": 8080, "name": "http"}], "env": [{"name": "A", "value": "b"}, {"name": "C", "value": "d"}],
            "resources": {"limits": {"memory": "32Mi", "cpu": "500m"}},
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}]}})
}

async fn run(client: &kube::Client, ns: &str, protobuf_bodies: bool, count: usize, concurrency: usize) -> Duration {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        if set.len() >= concurrency {
            set.join_next().await;
        }
        let client = client.clone();
        let path = format!("/api/v1/namespaces/{ns}/pods");
        let obj = pod(&format!("p{i}"));
        set.spawn(async move {
            let (ct, accept, body) = if protobuf_bodies {
                (
                    protobuf::MEDIA_TYPE,
                    "application/vnd.kubernetes.protobuf, application/json",
                    protobuf::encode(&obj).unwrap(),
                )
            } else {
                ("application/json", "application/json", serde_json::to_vec(&obj).unwrap())
            };
            let req = http::Request::builder()
                .method("POST")
                .uri(path)
                .header("content-type", ct)
                .header("accept", accept)
                .body(kube::client::Body::from(body))
                .unwrap();
            let resp = client.send(req).await.unwrap();
            assert_eq!(resp.status().as_u16(), 201);
            resp.into_body().collect_bytes().await.unwrap();
        });
    }
    while set.join_next().await.is_some() {}
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = std::env::var("WASMORCH_BIN").unwrap_or_else(|_| "target/release/wasmorch".into());
    let count = env_num("COUNT", 2000);
    let concurrency = env_num("CONCURRENCY", 16);
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = server(&bin, dir.path()).await;
    let pid = server.0.id();
    for ns in ["warm", "json", "pb"] {
        let (code, v) = raw(
            &client,
            "POST",
            "/api/v1/namespaces",
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
        )
        .await;
        assert_eq!(code, 201, "{v}");
    }
    run(&client, "warm", true, 200, concurrency).await;
    println!("wire: {count} pod creates per encoding, {concurrency} at a time, one server");
    for (label, ns, pb) in [("JSON", "json", false), ("protobuf", "pb", true)] {
        let cpu0 = cpu_seconds(pid);
        let took = run(&client, ns, pb, count, concurrency).await;
        let cpu = cpu_seconds(pid) - cpu0;
        println!(
            "  {label:<9} {:>7.0} creates/s   server CPU {:>6.1} µs per create",
            count as f64 / took.as_secs_f64(),
            cpu * 1e6 / count as f64
        );
    }
    let sample = pod("sample");
    println!(
        "  body size: JSON {} bytes, protobuf {} bytes",
        serde_json::to_vec(&sample).unwrap().len(),
        protobuf::encode(&sample).unwrap().len()
    );
}
