//! Control-loop benchmark:
//! - scheduler: binds per second placing P pods on N registered nodes (Node objects without
//!   agents), from the first create to the last bind;
//! - one replica: apply of a 1-replica Deployment → its pod Running and Ready, p50/p99 over
//!   R runs, cached component (the whole event chain: Deployment → ReplicaSet → Pod →
//!   scheduler → node → status); each run starts once the previous run's pod is deleted;
//! - a D-replica Deployment on one real node: time until all are Ready.
//!
//! Run with `bench/run-controllers.sh`. Knobs: NODES (1000), PODS (10000), RUNS (100),
//! REPLICAS (1000).
//! Binds and readiness are seen through watches, as a client following the cluster sees them.

use futures::{AsyncBufReadExt, StreamExt};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::*;

/// Count pods matching a predicate, by paging through the list.
async fn count_pods(client: &kube::Client, ns: &str, f: impl Fn(&Value) -> bool) -> usize {
    let (_, list) = raw(client, "GET", &format!("/api/v1/namespaces/{ns}/pods"), None).await;
    list["items"].as_array().map_or(0, |a| a.iter().filter(|p| f(p)).count())
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// A watch of `path` from revision `rv`, as lines of JSON events.
async fn watch(
    client: &kube::Client,
    path: &str,
    rv: &str,
) -> std::pin::Pin<Box<dyn futures::Stream<Item = Value> + Send>> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let req = http::Request::builder()
        .uri(format!("{path}{sep}watch=true&allowWatchBookmarks=false&resourceVersion={rv}"))
        .body(Vec::new())
        .unwrap();
    let lines = client.request_stream(req).await.expect("watch").lines();
    Box::pin(lines.filter_map(|l| async move { l.ok().and_then(|l| serde_json::from_str::<Value>(&l).ok()) }))
}

/// The list's resourceVersion: where a watch that misses nothing starts.
async fn list_rv(client: &kube::Client, path: &str) -> String {
    let (_, list) = raw(client, "GET", path, None).await;
    list["metadata"]["resourceVersion"].as_str().expect("list resourceVersion").to_string()
}

async fn create_ns(client: &kube::Client, ns: &str) {
    let (code, v) = raw(
        client,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
    )
    .await;
    assert_eq!(code, 201, "{v}");
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = std::env::var("WASMORCH_BIN").unwrap_or_else(|_| "target/release/wasmorch".into());
    let wasm =
        PathBuf::from(std::env::var("WORKLOADS").unwrap_or_else(|_| "workloads/target/wasm32-wasip2/release".into()))
            .canonicalize()
            .expect("built workloads");
    let tmp = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();

    // --- Scheduler throughput --------------------------------------------------------------
    {
        let (n, p) = (env_num("NODES", 1000), env_num("PODS", 10000));
        let (_s, client, _) = server(&bin, &tmp.path().join("sched")).await;
        println!("== scheduler: {p} pods onto {n} nodes (API objects, no agents) ==");
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let client = client.clone();
            set.spawn(async move {
                let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("fake-{i:04}"),
                    "labels": {"kubernetes.io/hostname": format!("fake-{i:04}"), "topology.kubernetes.io/zone": format!("z{}", i % 3)}},
                    "spec": {}});
                let (code, v) = raw(&client, "POST", "/api/v1/nodes", Some(node)).await;
                assert_eq!(code, 201, "{v}");
                // Not Ready yet: pods queue up first, then all nodes turn Ready at once, so
                // the bind rate is measured apart from the create rate.
                let status = json!({"status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "False"}]}});
                merge_patch(&client, &format!("/api/v1/nodes/fake-{i:04}/status"), &status).await;
            });
        }
        while set.join_next().await.is_some() {}
        create_ns(&client, "sched").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = Instant::now();
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
        for i in 0..p {
            let (client, sem) = (client.clone(), sem.clone());
            set.spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{i:05}")},
                    "spec": {"containers": [{"name": "c", "image": "file:///none.wasm",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
                let (code, v) = raw(&client, "POST", "/api/v1/namespaces/sched/pods", Some(pod)).await;
                assert_eq!(code, 201, "{v}");
            });
        }
        while set.join_next().await.is_some() {}
        let created = t.elapsed();
        // Let the scheduler find nothing fits, then make every node Ready.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rv = list_rv(&client, "/api/v1/namespaces/sched/pods?limit=1").await;
        let mut events = watch(&client, "/api/v1/namespaces/sched/pods", &rv).await;
        let t = Instant::now();
        for i in 0..n {
            let client = client.clone();
            set.spawn(async move {
                let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
                merge_patch(&client, &format!("/api/v1/nodes/fake-{i:04}/status"), &status).await;
            });
        }
        while set.join_next().await.is_some() {}
        // Count binds as a watching client sees them (polling a list would load the server).
        let mut bound = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while bound.len() < p {
            let ev = tokio::time::timeout_at(deadline, events.next()).await.expect("pods still unbound after 600 s");
            let ev = ev.expect("watch ended");
            let pod = &ev["object"];
            if pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
                bound.insert(pod["metadata"]["name"].as_str().unwrap_or("").to_string());
            }
        }
        let all = t.elapsed();
        println!(
            "wasmorch   {p} pending pods (created in {:.2} s) all bound {:.2} s after the nodes turned Ready: {:.0} binds/s",
            created.as_secs_f64(),
            all.as_secs_f64(),
            p as f64 / all.as_secs_f64()
        );
    }

    // --- One replica and many replicas on a real node ----------------------------------------
    let (_s, client, url) = server(&bin, &tmp.path().join("chain")).await;
    let sdir = tmp.path().join("chain");
    let token = std::fs::read_to_string(sdir.join("join.token")).unwrap();
    let _node = Proc(
        Command::new(&bin)
            .args(["node", "--server", &url, "--name", "bench", "--token"])
            .arg(token.trim())
            .arg("--ca-file")
            .arg(sdir.join("pki/ca.crt"))
            .arg("--data-dir")
            .arg(tmp.path().join("node"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, n) = raw(&client, "GET", "/api/v1/nodes/bench", None).await;
        if code == 200
            && n["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "node not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let image = format!("file://{}", wasm.join("hello_http.wasm").display());
    let deployment = |name: &str, replicas: usize| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                {"name": "web", "image": image, "ports": [{"containerPort": 8080}]}]}}}})
    };
    // Warm the node's cache for the component.
    let runs = env_num("RUNS", 100);
    println!("== one replica: apply → Ready, {runs} runs ==");
    let mut times = Vec::new();
    // When the pod was first seen created, bound and Running (ms after the apply).
    let (mut created, mut bound, mut running) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=runs {
        let name = format!("one-{i}");
        // Watch for the pod turning Ready (a watching client, not one polling lists).
        let rv = list_rv(&client, "/api/v1/namespaces/default/pods?limit=1").await;
        let mut events =
            watch(&client, &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{name}"), &rv).await;
        let t = Instant::now();
        let (code, v) =
            raw(&client, "POST", "/apis/apps/v1/namespaces/default/deployments", Some(deployment(&name, 1))).await;
        assert_eq!(code, 201, "{v}");
        let mut stages: [Option<f64>; 3] = [None; 3];
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(60), events.next()).await;
            let ev = ev.unwrap_or_else(|_| panic!("{name} never ready")).expect("watch ended");
            let o = &ev["object"];
            if o["metadata"]["labels"]["app"] != name.as_str() {
                continue;
            }
            let now = t.elapsed().as_secs_f64() * 1e3;
            let seen = [true, o["spec"]["nodeName"].is_string(), o["status"]["phase"] == "Running"];
            for (stage, seen) in stages.iter_mut().zip(seen) {
                if seen && stage.is_none() {
                    *stage = Some(now);
                }
            }
            if ready(o) {
                break;
            }
        }
        if i > 0 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let [c, b, r] = stages.map(|s| s.unwrap_or(f64::NAN));
            created.push(c);
            bound.push(b);
            running.push(r);
        }
        // Delete it and wait until its pod is gone, so each run measures a start on a quiet
        // cluster rather than one racing the previous run's cascading deletion.
        raw(&client, "DELETE", &format!("/apis/apps/v1/namespaces/default/deployments/{name}"), None).await;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(60), events.next()).await;
            let ev = ev.unwrap_or_else(|_| panic!("{name}'s pod never went away")).expect("watch ended");
            if ev["type"] == "DELETED" {
                break;
            }
        }
    }
    println!(
        "wasmorch   p50 {:.1} ms, p99 {:.1} ms (Kubernetes' SLO: pod startup p99 ≤ 5 s)",
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99)
    );
    println!(
        "  stages, p50 (p99) ms after the apply: pod created {:.1} ({:.1}), bound {:.1} ({:.1}), Running {:.1} ({:.1})",
        percentile(&mut created, 0.5),
        percentile(&mut created, 0.99),
        percentile(&mut bound, 0.5),
        percentile(&mut bound, 0.99),
        percentile(&mut running, 0.5),
        percentile(&mut running, 0.99)
    );

    let replicas = env_num("REPLICAS", 1000);
    println!("== a {replicas}-replica Deployment on one node ==");
    create_ns(&client, "big").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = Instant::now();
    let (code, v) =
        raw(&client, "POST", "/apis/apps/v1/namespaces/big/deployments", Some(deployment("big", replicas))).await;
    assert_eq!(code, 201, "{v}");
    let deadline = Instant::now() + Duration::from_secs(env_num("BIG_DEADLINE", 600) as u64);
    loop {
        let n = count_pods(&client, "big", ready).await;
        if n == replicas {
            break;
        }
        if Instant::now() >= deadline {
            let (_, list) = raw(&client, "GET", "/api/v1/namespaces/big/pods", None).await;
            for p in list["items"].as_array().into_iter().flatten().filter(|p| !ready(p)) {
                eprintln!("not ready: {}", serde_json::to_string(&p["status"]).unwrap_or_default());
            }
            let (_, all) = raw(&client, "GET", "/api/v1/pods", None).await;
            for p in all["items"].as_array().into_iter().flatten().filter(|p| p["metadata"]["namespace"] != "big") {
                eprintln!(
                    "other pod: {} {} {:?} {}",
                    p["metadata"]["namespace"],
                    p["metadata"]["name"],
                    p["metadata"]["deletionTimestamp"].as_str(),
                    p["status"]["phase"]
                );
            }
            panic!("only {n}/{replicas} ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("wasmorch   all {replicas} Ready in {:.2} s", t.elapsed().as_secs_f64());
}
