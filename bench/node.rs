//! Node benchmark, each figure beside a peer measured in the same run:
//! - pod start: a pod bound to the node (`spec.nodeName`) → Ready, p50/p99 over N pods with the
//!   component's code cached, and the first start of components never compiled on this node;
//!   peer: `wasmtime serve` from process start to its first answer (cached code via
//!   `wasmtime compile` + `--allow-precompiled`, and compiling at start);
//! - HTTP: requests/s and latency of one hello-http pod vs `wasmtime serve -S cli` on the same
//!   component, both driven by `wrk` with the same settings;
//! - memory: the node's idle RSS, and RSS per idle HTTP pod with M pods on the node.
//!
//! Run with `bench/run-node.sh` (builds release and the workloads; needs `wrk` and
//! `wasmtime` 48 on PATH or in WASMTIME). Knobs: PODS (default 100), IDLE_PODS (1000),
//! WRK_SECS (10), WRK_CONNS (32).

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::*;

fn pod(name: &str, node: &str, image: &Path, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "nodeName": node, "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": format!("file://{}", image.display()), "ports": [{"containerPort": port}]}]
    }})
}

fn ready(p: &Value) -> bool {
    p["status"]["containerStatuses"][0]["ready"] == true
}

/// Create a pod and wait until it is Ready; returns the time it took.
async fn start_pod(client: &kube::Client, body: Value) -> (Duration, Value) {
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    let t = Instant::now();
    let (code, created) = raw(client, "POST", "/api/v1/namespaces/default/pods", Some(body)).await;
    assert_eq!(code, 201, "{created}");
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    // Watch from the creation on: no polling interval in the figure.
    let path = format!(
        "/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3D{name}&timeoutSeconds=60"
    );
    let req = http::Request::builder().uri(path).body(Vec::new()).unwrap();
    let lines = client.request_events::<Value>(req).await.unwrap();
    use futures::TryStreamExt;
    let mut lines = std::pin::pin!(lines);
    while let Some(ev) = lines.try_next().await.expect("watch") {
        if let kube::api::WatchEvent::Modified(p) = ev
            && ready(&p)
        {
            return (t.elapsed(), p);
        }
    }
    panic!("pod {name} did not become ready within 60 s");
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = std::env::var("WASMORCH_BIN").unwrap_or_else(|_| "target/release/wasmorch".into());
    let wasm =
        PathBuf::from(std::env::var("WORKLOADS").unwrap_or_else(|_| "workloads/target/wasm32-wasip2/release".into()))
            .canonicalize()
            .expect("built workloads");
    let hello = wasm.join("hello_http.wasm");
    let tmp = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let pods = env_num("PODS", 100);
    let idle_pods = env_num("IDLE_PODS", 1000);

    let port = free_port();
    let sdir = tmp.path().join("server");
    let _server = Proc(
        Command::new(&bin)
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(&sdir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wasmorch server"),
    );
    let kc = sdir.join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kc.exists() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = std::fs::read_to_string(sdir.join("join.token")).unwrap();
    let node = Proc(
        Command::new(&bin)
            .args(["node", "--server", &format!("https://127.0.0.1:{port}"), "--name", "bench", "--token"])
            .arg(token.trim())
            .arg("--ca-file")
            .arg(sdir.join("pki/ca.crt"))
            .arg("--data-dir")
            .arg(tmp.path().join("node"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wasmorch node"),
    );
    let cfg =
        kube::Config::from_custom_kubeconfig(kube::config::Kubeconfig::read_from(&kc).unwrap(), &Default::default())
            .await
            .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, n) = raw(&client, "GET", "/api/v1/nodes/bench", None).await;
        let is_ready = n["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if code == 200 && is_ready {
            break;
        }
        assert!(Instant::now() < deadline, "node did not become Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let node_idle_kb = rss_kb(node.0.id());

    // --- Pod start ---------------------------------------------------------------------------
    println!("== pod start (bound → Ready) ==");
    for (i, name) in ["hello_http.wasm", "sdk_demo.wasm"].iter().enumerate() {
        let (d, _) = start_pod(&client, pod(&format!("first-{i}"), "bench", &wasm.join(name), 8080)).await;
        println!("wasmorch   first start of {name:<18} (compile + cache): {:>8.1} ms", d.as_secs_f64() * 1e3);
    }
    let mut times = Vec::new();
    for i in 0..pods {
        let (d, _) = start_pod(&client, pod(&format!("start-{i}"), "bench", &hello, 8080)).await;
        times.push(d.as_secs_f64() * 1e3);
    }
    let (p50, p99) = (percentile(&mut times, 0.5), percentile(&mut times, 0.99));
    println!("wasmorch   cached start of hello-http over {pods} pods: p50 {p50:.1} ms, p99 {p99:.1} ms");

    let cwasm = tmp.path().join("hello.cwasm");
    let st = Command::new(wasmtime_bin()).arg("compile").arg(&hello).arg("-o").arg(&cwasm).status();
    let have_wasmtime = st.is_ok_and(|s| s.success());
    if have_wasmtime {
        let (_p, _, cold) = wasmtime_start(&["-S", "cli"], &hello);
        println!("wasmtime   serve, compiling at start:                  {:>8.1} ms", cold.as_secs_f64() * 1e3);
        let mut t = Vec::new();
        for _ in 0..10 {
            let (_p, _, d) = wasmtime_start(&["-S", "cli", "--allow-precompiled"], &cwasm);
            t.push(d.as_secs_f64() * 1e3);
        }
        println!(
            "wasmtime   serve --allow-precompiled, spawn → first 200, 10 runs: p50 {:.1} ms, p99 {:.1} ms",
            percentile(&mut t, 0.5),
            percentile(&mut t, 0.99)
        );
    } else {
        println!("wasmtime   (not found: set WASMTIME=/path/to/wasmtime 48 for the peer figures)");
    }

    // --- HTTP throughput ---------------------------------------------------------------------
    println!("== HTTP: one hello-http pod vs wasmtime serve, wrk -t2 -c{} ==", env_num("WRK_CONNS", 32));
    let (_, p) = start_pod(&client, pod("wrk-target", "bench", &hello, 8080)).await;
    let addr = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());
    let ours = wrk(&addr);
    println!("wasmorch   {:>9.0} req/s   p50 {:.2} ms   p99 {:.2} ms", ours.rps, ours.p50_ms, ours.p99_ms);
    if have_wasmtime {
        let (_p, waddr, _) = wasmtime_start(&["-S", "cli", "--allow-precompiled"], &cwasm);
        let theirs = wrk(&waddr);
        println!("wasmtime   {:>9.0} req/s   p50 {:.2} ms   p99 {:.2} ms", theirs.rps, theirs.p50_ms, theirs.p99_ms);
        println!("ratio      {:.2}× requests/s", ours.rps / theirs.rps);
    }

    // --- Memory with many idle pods ------------------------------------------------------------
    println!("== memory: {idle_pods} idle hello-http pods on one node ==");
    for i in 0..pods {
        raw(&client, "DELETE", &format!("/api/v1/namespaces/default/pods/start-{i}"), None).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = rss_kb(node.0.id());
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    for i in 0..idle_pods {
        let (client, sem, body) = (client.clone(), sem.clone(), pod(&format!("idle-{i}"), "bench", &hello, 8080));
        set.spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let (code, v) = raw(&client, "POST", "/api/v1/namespaces/default/pods", Some(body)).await;
            assert_eq!(code, 201, "{v}");
        });
    }
    while set.join_next().await.is_some() {}
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, list) = raw(&client, "GET", "/api/v1/namespaces/default/pods?labelSelector=", None).await;
        let n = list["items"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("idle-")) && ready(p))
                .count()
        });
        if n == idle_pods {
            break;
        }
        assert!(Instant::now() < deadline, "only {n}/{idle_pods} pods became ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_ready = t.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kb(node.0.id());
    let (_, p) = raw(&client, "GET", "/api/v1/namespaces/default/pods/idle-0", None).await;
    let idle_addr = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());
    assert!(http_ok(&idle_addr), "idle pod at {idle_addr} does not answer: {p}");
    println!("wasmorch   node idle RSS (no pods): {:.1} MB", node_idle_kb as f64 / 1024.0);
    println!(
        "wasmorch   {idle_pods} pods ready in {:.1} s; node RSS {:.1} MB → {:.1} MB: {:.1} KB per idle pod",
        all_ready.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / idle_pods as f64
    );
    if have_wasmtime {
        let (p, _, _) = wasmtime_start(&["-S", "cli", "--allow-precompiled"], &cwasm);
        std::thread::sleep(Duration::from_millis(500));
        println!(
            "wasmtime   one idle `wasmtime serve` process (the per-app cost without an orchestrator): {:.1} MB RSS",
            rss_kb(p.0.id()) as f64 / 1024.0
        );
    }
}
