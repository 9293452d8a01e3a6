//! Authorization cost: GETs of one ConfigMap per second as an admin (`system:masters`: no
//! RBAC evaluation) and as a user whose access comes from a RoleBinding of `view` (RBAC
//! decides each request, among 100 other bindings), in the same run against the same server,
//! alternating twice. COUNT requests per pass (default 5000), CONCURRENCY at a time (16).
//! Run with `bench/run-rbac.sh`.

use serde_json::json;
use std::time::Instant;

#[path = "common.rs"]
mod common;
use common::*;

async fn gets(client: &kube::Client, count: usize, concurrency: usize) -> f64 {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..count {
        if set.len() >= concurrency {
            set.join_next().await;
        }
        let client = client.clone();
        set.spawn(async move {
            let (code, _) = raw(&client, "GET", "/api/v1/namespaces/bench/configmaps/settings", None).await;
            assert_eq!(code, 200);
        });
    }
    while set.join_next().await.is_some() {}
    count as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = std::env::var("WASMORCH_BIN").unwrap_or_else(|_| "target/release/wasmorch".into());
    let count = env_num("COUNT", 5000);
    let concurrency = env_num("CONCURRENCY", 16);
    let dir = tempfile::tempdir().unwrap();
    let (_server, admin, _) = server(&bin, dir.path()).await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}});
    assert_eq!(raw(&admin, "POST", "/api/v1/namespaces", Some(ns)).await.0, 201);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"k": "v"}});
    assert_eq!(raw(&admin, "POST", "/api/v1/namespaces/bench/configmaps", Some(cm)).await.0, 201);
    for i in 0..100 {
        let b = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("other-{i}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "User", "name": format!("someone-{i}")}]});
        raw(&admin, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings", Some(b)).await;
    }
    let kc = dir.path().join("alice.kubeconfig");
    let ok = std::process::Command::new(&bin)
        .args(["kubeconfig", "user", "alice", "--clusterrole", "view", "-n", "bench", "-o"])
        .arg(&kc)
        .env("KUBECONFIG", dir.path().join("admin.kubeconfig"))
        .status()
        .unwrap();
    assert!(ok.success());
    let cfg =
        kube::Config::from_custom_kubeconfig(kube::config::Kubeconfig::read_from(&kc).unwrap(), &Default::default())
            .await
            .unwrap();
    let alice = kube::Client::try_from(cfg).unwrap();
    gets(&admin, 500, concurrency).await;
    gets(&alice, 500, concurrency).await;
    println!("rbac: {count} GETs of one ConfigMap per pass, {concurrency} at a time, one server");
    let (mut a, mut r) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        a.push(gets(&admin, count, concurrency).await);
        r.push(gets(&alice, count, concurrency).await);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("  admin (no RBAC evaluation): {:.0} req/s ({:.0}, {:.0})", mean(&a), a[0], a[1]);
    println!("  view user (RBAC, 101 bindings in the namespace): {:.0} req/s ({:.0}, {:.0})", mean(&r), r[0], r[1]);
    println!("  RBAC cost: {:+.1} %", (mean(&r) / mean(&a) - 1.0) * 100.0);
}
