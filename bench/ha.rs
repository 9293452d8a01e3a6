//! HA control plane benchmark: two `wasmorch server`s on one etcd member and a node that
//! knows both. Leader failover: SIGKILL the leading server, then time until the first pod of
//! a Deployment created through the survivor is Running (p50/max over the trials, beside the
//! lease duration); the killed server comes back as the standby before the next trial. Node
//! failover: requests to a NodePort while the node's API server is killed (failures, expected
//! 0).
//!
//! Run with `bench/run-ha.sh` (builds release with the etcd engine; needs Debian's etcd-server).

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::*;

const LEASE: &str = "5s";

/// A process whose output lines are kept.
struct Logged {
    _proc: Proc,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn spawn(bin: &str, args: &[String]) -> Logged {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
        }
        Logged { _proc: Proc(child), lines }
    }

    fn count(&self, needle: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    fn wait(&self, needle: &str, at_least: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count(needle) < at_least {
            assert!(Instant::now() < deadline, "no {needle:?} in {:?}", self.lines.lock().unwrap());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

struct Server {
    args: Vec<String>,
    data: PathBuf,
    port: u16,
    p: Option<Logged>,
}

impl Server {
    fn start(&mut self, bin: &str) {
        self.p = Some(Logged::spawn(bin, &self.args));
        self.p.as_ref().unwrap().wait("listening on https://", 1);
    }
    fn leading(&self) -> usize {
        self.p.as_ref().map(|p| p.count("leading: ")).unwrap_or(0)
    }
}

async fn client(kc: &Path) -> kube::Client {
    let cfg =
        kube::Config::from_custom_kubeconfig(kube::config::Kubeconfig::read_from(kc).unwrap(), &Default::default())
            .await
            .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn deployment(name: &str, wasm: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": wasm, "ports": [{"containerPort": 8080}]}]}}}})
}

async fn running(c: &kube::Client, app: &str) -> bool {
    let (code, list) = raw(c, "GET", &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"), None).await;
    code == 200
        && list["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|p| p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true)
        })
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = std::env::var("WASMORCH_BIN").unwrap_or_else(|_| "target/release/wasmorch".into());
    let trials = env_num("TRIALS", 5);
    let tmp = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let d = tmp.path();
    let (_etcd, cport) = start_etcd(&d.join("etcd"));
    let endpoint = format!("http://127.0.0.1:{cport}");
    let mut servers: Vec<Server> = (0..2)
        .map(|i| {
            let port = free_port();
            let data = d.join(format!("s{i}"));
            let args: Vec<String> = [
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                data.to_str().unwrap(),
                "--datastore-endpoint",
                &endpoint,
                "--leader-elect-lease-duration",
                LEASE,
                "--token",
                "bench-server-token",
                "--cluster-cidr",
                "127.91.0.0/16",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            Server { args, data, port, p: None }
        })
        .collect();
    servers[0].start(&bin);
    servers[0].p.as_ref().unwrap().wait("leading: ", 1);
    servers[1].start(&bin);
    let urls = servers.iter().map(|s| format!("https://127.0.0.1:{}", s.port)).collect::<Vec<_>>().join(",");
    let join = std::fs::read_to_string(servers[0].data.join("join.token")).unwrap();
    let node_addr = std::env::var("NODE_ADDRESS").unwrap_or_else(|_| "127.90.255.254".into());
    let node = Logged::spawn(
        &bin,
        &[
            "node",
            "--server",
            &urls,
            "--token",
            join.trim(),
            "--name",
            "n1",
            "--data-dir",
            d.join("n1").to_str().unwrap(),
            "--address",
            &node_addr,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    );
    let clients = [
        client(&servers[0].data.join("admin.kubeconfig")).await,
        client(&servers[1].data.join("admin.kubeconfig")).await,
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, n) = raw(&clients[0], "GET", "/api/v1/nodes/n1", None).await;
        if n["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the node did not become Ready: {:?}", node.lines.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wasm = "wasmorch.local/hello-http:1.0";

    // A NodePort served throughout.
    let (code, _) =
        raw(&clients[0], "POST", "/apis/apps/v1/namespaces/default/deployments", Some(deployment("web", wasm))).await;
    assert_eq!(code, 201);
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}});
    let (code, svc) = raw(&clients[0], "POST", "/api/v1/namespaces/default/services", Some(svc)).await;
    assert_eq!(code, 201, "{svc}");
    let target = format!("{node_addr}:{}", svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_ok(&target) {
        assert!(Instant::now() < deadline, "the NodePort did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, target) = (stop.clone(), ok.clone(), failed.clone(), target.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if http_ok(&target) { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut times = Vec::new();
    let mut node_switches = 0;
    for t in 0..trials {
        let leader = if servers[0].leading() > servers[1].leading() || servers[1].p.is_none() { 0 } else { 1 };
        let (survivor, before) = (1 - leader, servers[1 - leader].leading());
        let switched = node.count("API server unreachable: switched");
        let start = Instant::now();
        servers[leader].p = None; // SIGKILL
        let name = format!("trial-{t}");
        loop {
            let (code, _) = raw(
                &clients[survivor],
                "POST",
                "/apis/apps/v1/namespaces/default/deployments",
                Some(deployment(&name, wasm)),
            )
            .await;
            if code == 201 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while !running(&clients[survivor], &name).await {
            assert!(start.elapsed() < Duration::from_secs(90), "trial {t}: no pod Running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!(servers[survivor].leading() > before, "trial {t}: the survivor did not lead");
        node_switches += node.count("API server unreachable: switched") - switched;
        println!("  trial {t}: first pod Running {took:.2} s after the leader was killed");
        times.push(took);
        servers[leader].start(&bin);
        servers[leader].p.as_ref().unwrap().wait("standby: control plane", 1);
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let max = times.iter().cloned().fold(0.0, f64::max);
    let p50 = percentile(&mut times, 0.5);
    println!("leader failover (SIGKILL → first pod of a new Deployment Running), {trials} trials:");
    println!(
        "  p50 {p50:.2} s, max {max:.2} s; lease duration {LEASE} (the floor: a killed leader's Lease must expire)"
    );
    println!(
        "node failover: {} NodePort requests during the {trials} kills, {} failed; the node switched server {node_switches} times",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
}
