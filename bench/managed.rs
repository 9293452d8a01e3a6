//! Field-ownership benchmark: the cost of recording one write's managedFields, as the API
//! server does on every update and patch, by the algorithm it runs (`record_update`: each
//! object's field set built beside the other, skipping fields whose value is the same in
//! both) beside the general one (`record_update_everywhere`: both objects' whole sets built
//! and compared leaf by leaf), on the same objects in the same run. The writes are a
//! node's pod status write (the most common write of all: every pod start and readiness
//! change), the scheduler's binding, and a label change. Pure CPU, no server:
//! `cargo run --release --example bench-managed` (ROUNDS, default 20 000).

use serde_json::{Value, json};
use std::hint::black_box;
use std::time::Instant;
use wasmorch_api::managed::{record_update, record_update_everywhere};

const NOW: &str = "2026-01-01T00:00:00Z";

/// A pod as the API server stores it after a ReplicaSet created it (defaults applied).
fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d9f8-abcde", "generateName": "web-7d9f8-", "namespace": "default",
            "uid": "0b0c1d2e-3f40-4152-8364-758697a8b9ca", "resourceVersion": "1042", "creationTimestamp": NOW,
            "labels": {"app": "web", "pod-template-hash": "7d9f8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8",
                "uid": "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"containers": [{"name": "web", "image": "wasmorch.local/hello-http:1.0", "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "env": [{"name": "GREETING", "value": "hello"}, {"name": "MODE", "value": "serve"}],
                "resources": {"limits": {"memory": "32Mi", "cpu": "500m"}, "requests": {"memory": "32Mi", "cpu": "500m"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http", "scheme": "HTTP"}, "periodSeconds": 1,
                    "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "schedulerName": "default-scheduler", "securityContext": {},
            "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
        "status": {"phase": "Pending", "qosClass": "Guaranteed"}})
}

fn running(mut p: Value) -> Value {
    p["metadata"]["resourceVersion"] = json!("1044");
    p["status"] = json!({"phase": "Running", "qosClass": "Guaranteed", "hostIP": "10.0.0.2", "podIP": "10.244.1.7",
        "podIPs": [{"ip": "10.244.1.7"}], "startTime": NOW,
        "conditions": [{"type": "Initialized", "status": "True", "lastTransitionTime": NOW},
            {"type": "Ready", "status": "True", "lastTransitionTime": NOW},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": NOW},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": NOW}],
        "containerStatuses": [{"name": "web", "ready": true, "started": true, "restartCount": 0,
            "image": "wasmorch.local/hello-http:1.0", "imageID": "sha256:0123456789abcdef",
            "state": {"running": {"startedAt": NOW}}}]});
    p
}

/// Mean nanoseconds per call of `record` on (old, new) over `rounds`.
fn time(
    rounds: u32,
    old: &Value,
    new: &Value,
    sub: Option<&str>,
    record: fn(Option<&Value>, &mut Value, &str, &str, Option<&str>),
) -> f64 {
    let start = Instant::now();
    for _ in 0..rounds {
        let mut n = new.clone();
        record(Some(black_box(old)), &mut n, "writer", NOW, sub);
        black_box(n);
    }
    let with_record = start.elapsed().as_nanos() as f64;
    // The clone each round is the same for both; it is measured and taken out.
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(new.clone());
    }
    (with_record - start.elapsed().as_nanos() as f64) / rounds as f64
}

fn main() {
    let rounds: u32 = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(20_000);
    let mut created = pod();
    record_update(None, &mut created, "kube-controller-manager", NOW, None);
    let mut bound = created.clone();
    bound["spec"]["nodeName"] = json!("n1");
    let status = running(bound.clone());
    let mut labelled = status.clone();
    labelled["metadata"]["labels"]["canary"] = json!("yes");
    let writes = [
        ("pod status write (node)", &bound, &status, Some("status")),
        ("binding (scheduler)", &created, &bound, Some("binding")),
        ("label change", &status, &labelled, None),
    ];
    println!("managedFields per write, {rounds} rounds each (mean µs; the same objects for both)");
    for (what, old, new, sub) in writes {
        // Both give the same result (the unit tests hold that over many writes); checked here too.
        let (mut a, mut b) = (new.clone(), new.clone());
        record_update(Some(old), &mut a, "writer", NOW, sub);
        record_update_everywhere(Some(old), &mut b, "writer", NOW, sub);
        assert_eq!(a, b, "{what}");
        let pruned = time(rounds, old, new, sub, record_update);
        let whole = time(rounds, old, new, sub, record_update_everywhere);
        println!(
            "  {what:<26} pruned {:>7.2} µs   whole sets {:>7.2} µs   ({:.1}× less)",
            pruned / 1000.0,
            whole / 1000.0,
            whole / pruned.max(1.0)
        );
    }
}
