//! Cluster membership benchmark:
//! - a node joining with a token (CA fetch and pin check, key, certificate, mTLS) until its
//!   Node is Ready, over `JOINS` fresh nodes;
//! - node loss: SIGKILL the node holding a Deployment's replicas until they all run on the
//!   other node, over `TRIALS` trials (p50 and max), beside Kubernetes' default timings.

#[path = "common.rs"]
mod common;

use common::{Proc, env_num, percentile, raw};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("wasmorch")
}

async fn admin(dir: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(dir.join("admin.kubeconfig")).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn node(url: &str, token: &str, name: &str, dir: &Path, prefix: &str) -> Proc {
    Proc(
        Command::new(bin())
            .args(["node", "--server", url, "--token", token, "--name", name, "--data-dir"])
            .arg(dir.join(name))
            .args(["--address", &format!("{prefix}.255.254")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node"),
    )
}

async fn ready(client: &kube::Client, name: &str) -> bool {
    let (code, n) = raw(client, "GET", &format!("/api/v1/nodes/{name}"), None).await;
    code == 200
        && n["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Ready, and no longer tainted unreachable (the lifecycle controller lifts the taint a
/// moment after the node reports again), so new pods may land on it.
async fn schedulable(client: &kube::Client, name: &str) -> bool {
    let (_, n) = raw(client, "GET", &format!("/api/v1/nodes/{name}"), None).await;
    ready(client, name).await && !n["spec"]["taints"].to_string().contains("unreachable")
}

async fn until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live (not deleting) pods of app=web: (node, running and ready).
async fn web_pods(client: &kube::Client) -> Vec<(String, bool)> {
    let (_, list) = raw(client, "GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb", None).await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ok = p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true;
            (p["spec"]["nodeName"].as_str().unwrap_or("").to_string(), ok)
        })
        .collect()
}

fn stats(name: &str, v: &mut [f64]) -> (f64, f64) {
    let p50 = percentile(v, 0.5);
    let max = v.iter().cloned().fold(0.0, f64::max);
    println!("{name}: n={} p50 {p50:.2} s, max {max:.2} s", v.len());
    (p50, max)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let sdir = tmp.path().join("server");
    let mut server = Command::new(bin())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&sdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = {
        use std::io::BufRead;
        let out = server.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        let url = loop {
            let l = lines.next().expect("server output").unwrap();
            if let Some(u) = l.split("listening on ").nth(1) {
                break u.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        url
    };
    let _server = Proc(server);
    let client = admin(&sdir).await;
    let token = std::fs::read_to_string(sdir.join("join.token")).unwrap().trim().to_string();

    // Join → Ready.
    let joins = env_num("JOINS", 10);
    let mut join_s = Vec::new();
    for i in 0..joins {
        let name = format!("j{i}");
        let t = Instant::now();
        let p = node(&url, &token, &name, tmp.path(), &format!("127.{}", 160 + i));
        until("the joining node to be Ready", Duration::from_secs(30), async || ready(&client, &name).await).await;
        join_s.push(t.elapsed().as_secs_f64());
        drop(p);
        raw(&client, "DELETE", &format!("/api/v1/nodes/{name}"), None).await;
    }
    let (join_p50, join_max) = stats("join → Ready", &mut join_s);

    // Node loss.
    let names = ["a", "b"];
    let prefixes = ["127.190", "127.191"];
    let mut nodes: Vec<Option<Proc>> =
        (0..2).map(|i| Some(node(&url, &token, names[i], tmp.path(), prefixes[i]))).collect();
    for n in names {
        until("both nodes to be Ready", Duration::from_secs(30), async || ready(&client, n).await).await;
    }
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/target/wasm32-wasip2/release/hello_http.wasm");
    let deploy: Value = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
                "image": format!("file://{}", wasm.display()), "ports": [{"containerPort": 8080}]}]}}}});
    let (code, body) = raw(&client, "POST", "/apis/apps/v1/namespaces/default/deployments", Some(deploy)).await;
    assert_eq!(code, 201, "{body}");
    until("4 replicas Running", Duration::from_secs(60), async || {
        let p = web_pods(&client).await;
        p.len() == 4 && p.iter().all(|x| x.1)
    })
    .await;
    let trials = env_num("TRIALS", 10);
    let mut loss_s = Vec::new();
    for _ in 0..trials {
        // The node holding most replicas goes.
        let p = web_pods(&client).await;
        let victim = (0..2).max_by_key(|i| p.iter().filter(|x| x.0 == names[*i]).count()).unwrap();
        let other = names[1 - victim];
        let t = Instant::now();
        nodes[victim] = None; // SIGKILL
        until("the replicas to run on the other node", Duration::from_secs(60), async || {
            let p = web_pods(&client).await;
            p.len() == 4 && p.iter().all(|x| x.0 == other && x.1)
        })
        .await;
        loss_s.push(t.elapsed().as_secs_f64());
        nodes[victim] = Some(node(&url, &token, names[victim], tmp.path(), prefixes[victim]));
        until("the killed node to return", Duration::from_secs(60), async || schedulable(&client, names[victim]).await)
            .await;
        // Spread the replicas over both nodes again for the next trial.
        raw(&client, "DELETE", "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb", None).await;
        until("the replicas to spread again", Duration::from_secs(60), async || {
            let p = web_pods(&client).await;
            p.len() == 4 && p.iter().all(|x| x.1) && p.iter().any(|x| x.0 == names[victim])
        })
        .await;
    }
    let (loss_p50, loss_max) = stats("node lost → its pods Running elsewhere", &mut loss_s);
    println!();
    println!("| figure | wasmorch (this run) | Kubernetes defaults (stated, not measured) |");
    println!("|---|---|---|");
    println!(
        "| node lost → its pods Running elsewhere ({trials} trials) | p50 {loss_p50:.1} s, max {loss_max:.1} s | node-monitor-grace-period 40 s + default not-ready/unreachable toleration 300 s ≈ 340 s |"
    );
    println!(
        "| join with a token → Node Ready ({joins} nodes) | p50 {join_p50:.2} s, max {join_max:.2} s | no peer measured: k3s and kubeadm are not installable from this machine's registries |"
    );
}
