//! Custom resources against a built-in kind: creates per second of a custom resource (a
//! CustomResourceDefinition with a structural schema: defaults, pruning and validation run
//! on every write) and of a ConfigMap carrying the same payload, in the same run against the
//! same server, alternating twice. COUNT creates per pass (default 3000), CONCURRENCY at a
//! time (64). Run with `bench/run-crd.sh`.

use serde_json::{Value, json};
use std::time::Instant;

#[path = "common.rs"]
mod common;
use common::*;

async fn creates(
    client: &kube::Client,
    path: &'static str,
    make: fn(usize) -> Value,
    from: usize,
    count: usize,
    concurrency: usize,
) -> f64 {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in from..from + count {
        if set.len() >= concurrency {
            set.join_next().await;
        }
        let client = client.clone();
        set.spawn(async move {
            let (code, v) = raw(&client, "POST", path, Some(make(i))).await;
            assert_eq!(code, 201, "{v}");
        });
    }
    while set.join_next().await.is_some() {}
    count as f64 / start.elapsed().as_secs_f64()
}

/// The payload both kinds carry: eight string fields of 32 bytes.
fn payload() -> serde_json::Map<String, Value> {
    (0..8).map(|i| (format!("field{i}"), json!(format!("{i:032}")))).collect()
}

fn widget(i: usize) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": format!("w{i}")}, "spec": payload()})
}

fn config_map(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}, "data": payload()})
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = std::env::var("WASMORCH_BIN").unwrap_or_else(|_| "target/release/wasmorch".into());
    let count = env_num("COUNT", 3000);
    let concurrency = env_num("CONCURRENCY", 64);
    let dir = tempfile::tempdir().unwrap();
    let (_server, admin, _) = server(&bin, dir.path()).await;
    let fields: serde_json::Map<String, Value> =
        (0..8).map(|i| (format!("field{i}"), json!({"type": "string", "maxLength": 64}))).collect();
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": fields}}}}}]}});
    assert_eq!(raw(&admin, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Some(crd)).await.0, 201);
    const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";
    const CMS: &str = "/api/v1/namespaces/default/configmaps";
    // Served once the server's informer has the definition.
    while raw(&admin, "GET", WIDGETS, None).await.0 != 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    creates(&admin, WIDGETS, widget, 0, 300, concurrency).await;
    creates(&admin, CMS, config_map, 0, 300, concurrency).await;
    println!("crd: {count} creates per pass, {concurrency} in flight, same payload (8 × 32-byte strings), one server");
    let (mut w, mut c) = (Vec::new(), Vec::new());
    for pass in 0..2 {
        let from = 1000 + pass * count;
        w.push(creates(&admin, WIDGETS, widget, from, count, concurrency).await);
        c.push(creates(&admin, CMS, config_map, from, count, concurrency).await);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "  custom resource (schema: defaults, pruning, validation): {:.0} creates/s ({:.0}, {:.0})",
        mean(&w),
        w[0],
        w[1]
    );
    println!("  ConfigMap (typed built-in): {:.0} creates/s ({:.0}, {:.0})", mean(&c), c[0], c[1]);
    println!("  custom resource vs ConfigMap: {:+.1} %", (mean(&w) / mean(&c) - 1.0) * 100.0);
}
