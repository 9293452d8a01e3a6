//! Ill-typed input at any depth, for every kind and every write verb, through the real router:
//! each answer is a success or a 4xx `Status` that says what was wrong, never a panic or a 5xx,
//! and a rejected write leaves the stored object exactly as it was.
//!
//! Structure-aware: each case takes a valid object of a kind, picks one of its fields (or an
//! element, at any depth) and replaces it with a value of the wrong shape: a string where an
//! object belongs, an object where a list belongs, huge or negative numbers, deep nesting. The
//! same mutations travel as a create, a PUT, and each patch type (merge, JSON, strategic,
//! apply). A fixed seed keeps failures reproducible; `HOSTILE_CASES` sets the count per kind.

mod common;

use common::*;
use http::Method;
use serde_json::{Value, json};

fn fixtures() -> Vec<(&'static str, Value)> {
    let tpl = |restart: &str| {
        json!({"metadata": {"labels": {"app": "h"}},
               "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "wasmorch.local/hello-http:1.0",
                   "ports": [{"containerPort": 8080, "name": "http"}], "env": [{"name": "A", "value": "b"}],
                   "resources": {"limits": {"memory": "32Mi", "cpu": "500m"}},
                   "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}})
    };
    let sel = json!({"matchLabels": {"app": "h"}});
    vec![
        (
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "h", "labels": {"a": "b"}}}),
        ),
        (
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "h"},
            "spec": {"unschedulable": false, "taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        ),
        (
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "h"},
            "spec": tpl("Always")["spec"].clone()}),
        ),
        (
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "h"},
            "spec": {"type": "NodePort", "selector": {"app": "h"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        ),
        (
            "/api/v1/namespaces/default/endpoints",
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "h"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
        ),
        (
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "h"},
            "data": {"a": "b"}}),
        ),
        (
            "/api/v1/namespaces/default/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "h"},
            "type": "Opaque", "data": {"a": "Yg=="}, "stringData": {"c": "d"}}),
        ),
        (
            "/api/v1/namespaces/default/events",
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "h"},
            "involvedObject": {"kind": "Pod", "name": "h", "namespace": "default"}, "reason": "R", "message": "m",
            "type": "Normal", "count": 1, "firstTimestamp": "2026-01-01T00:00:00Z"}),
        ),
        (
            "/api/v1/namespaces/default/persistentvolumeclaims",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "h"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        ),
        (
            "/api/v1/persistentvolumes",
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "h"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp/h"}}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "h"}, "spec": {"replicas": 1, "selector": sel, "template": tpl("Always"),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}}}),
        ),
        (
            "/api/v1/namespaces/default/resourcequotas",
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "h"},
                "spec": {"hard": {"pods": "100", "requests.memory": "100Gi"}}}),
        ),
        (
            "/api/v1/namespaces/default/limitranges",
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "h"},
                "spec": {"limits": [{"type": "Container", "max": {"memory": "1Gi"}}]}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/replicasets",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "h"}, "spec": {"replicas": 1, "selector": sel, "template": tpl("Always")}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/daemonsets",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "h"}, "spec": {"selector": sel, "template": tpl("Always")}}),
        ),
        (
            "/apis/batch/v1/namespaces/default/jobs",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "h"},
            "spec": {"backoffLimit": 2, "template": {"spec": tpl("Never")["spec"].clone()}}}),
        ),
        (
            "/apis/batch/v1/namespaces/default/cronjobs",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "h"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": tpl("Never")["spec"].clone()}}}}}),
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "h"}, "spec": {"holderIdentity": "x", "leaseDurationSeconds": 15,
            "renewTime": "2026-01-01T00:00:00.000000Z"}}),
        ),
        (
            "/apis/storage.k8s.io/v1/storageclasses",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "h"}, "provisioner": "wasmorch.io/local", "parameters": {"a": "b"}}),
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            json!({"apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice", "metadata": {"name": "h"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}], "ports": [{"port": 80, "name": "http"}]}),
        ),
        (
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "h"}, "spec": {"minAvailable": 1, "selector": sel}}),
        ),
        (
            "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies",
            json!({"apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy", "metadata": {"name": "h"}, "spec": {"podSelector": sel, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": sel}], "ports": [{"port": 80}]}]}}),
        ),
    ]
}

/// xorshift: reproducible without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn hostile(rng: &mut Rng) -> Value {
    // Built by hand: `json!([v])` would copy `v` at every level.
    let deep = (0..200).fold(json!("bottom"), |v, _| Value::Array(vec![v]));
    let deep_obj = (0..200).fold(json!({}), |v, _| Value::Object(serde_json::Map::from_iter([("a".to_string(), v)])));
    let choices = [
        json!("x"),
        json!(""),
        json!(1),
        json!(-1),
        json!(0),
        json!(1e300),
        json!(-9_223_372_036_854_775_808i64),
        json!(18_446_744_073_709_551_615u64),
        json!(2.5),
        json!(true),
        json!(null),
        json!([]),
        json!([1, "a", {}]),
        json!({}),
        json!({"unknown": {"deeper": [1]}}),
        json!("x".repeat(70_000)),
        json!("\u{0}\u{ffff}"),
        deep,
        deep_obj,
    ];
    choices[rng.below(choices.len())].clone()
}

/// Every JSON pointer in `v` (objects and arrays at any depth), the root excluded.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        _ => {}
    }
}

/// `obj` with the value at `ptr` replaced (or one more key beside it).
fn mutate(obj: &Value, rng: &mut Rng) -> (String, Value) {
    let mut ps = Vec::new();
    pointers(obj, String::new(), &mut ps);
    // Never the identity of the object: those are other tests' business (404/409/400).
    ps.retain(|p| !matches!(p.as_str(), "/apiVersion" | "/kind" | "/metadata/name" | "/metadata/namespace"));
    let ptr = ps[rng.below(ps.len())].clone();
    let mut out = obj.clone();
    let value = hostile(rng);
    if let Some(slot) = out.pointer_mut(&ptr) {
        if rng.below(5) == 0
            && let Value::Object(m) = slot
        {
            m.insert("surprise".into(), value);
        } else {
            *slot = value;
        }
    }
    (ptr, out)
}

/// The merge patch that sets `ptr` to what `mutated` has there.
fn merge_patch_for(ptr: &str, mutated: &Value) -> Value {
    let mut patch = mutated.pointer(ptr).cloned().unwrap_or(Value::Null);
    let parts: Vec<&str> = ptr.split('/').skip(1).collect();
    for (i, key) in parts.iter().enumerate().rev() {
        if key.parse::<usize>().is_ok() {
            // A merge patch replaces lists whole: send the parent list as mutated.
            let parent = format!("/{}", parts[..i].join("/"));
            patch = mutated.pointer(&parent).cloned().unwrap_or(Value::Null);
            continue;
        }
        patch = json!({ key.replace("~1", "/").replace("~0", "~"): patch });
    }
    patch
}

/// Sets a metadata field if metadata is still an object (the mutation may have made it not).
fn set_meta(v: &mut Value, key: &str, value: Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert(key.into(), value);
    }
}

fn check(what: &str, code: u16, body: &Value) {
    assert!(code < 500, "{what}: answered {code}: {body}");
    if code >= 400 {
        assert_eq!(body["kind"], "Status", "{what}: a {code} without a Status: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ill_typed_input_at_any_depth_is_a_status_for_every_kind_and_verb() {
    let t = setup().await;
    let per_kind: usize = std::env::var("HOSTILE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut cases, mut rejected) = (0usize, 0usize);
    // The two inputs the issue names, first.
    let (code, body) = t
        .post(
            "/apis/batch/v1/namespaces/default/cronjobs",
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "bad"}, "spec": {"schedule": "* * * * *", "jobTemplate": 1}}),
        )
        .await;
    assert_eq!((code, body["details"]["causes"][0]["field"].as_str()), (422, Some("spec.jobTemplate")), "{body}");
    let (code, body) = t
        .post(
            "/api/v1/namespaces/default/persistentvolumeclaims",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "bad"}, "spec": "x"}),
        )
        .await;
    assert_eq!((code, body["details"]["causes"][0]["field"].as_str()), (422, Some("spec")), "{body}");

    for (collection, valid) in fixtures() {
        let (code, stored) = t.post(collection, valid.clone()).await;
        assert_eq!(code, 201, "{collection}: the valid fixture must be accepted: {stored}");
        let item = format!("{collection}/h");
        for _ in 0..per_kind {
            let (ptr, bad) = mutate(&valid, &mut rng);
            let (_, before) = t.get(&item).await;
            let verb = rng.below(6);
            let what = format!("{} {ptr} verb {verb}", valid["kind"].as_str().unwrap_or(""));
            let (code, body) = match verb {
                0 => {
                    let mut create = bad.clone();
                    set_meta(&mut create, "name", json!(format!("c{cases}")));
                    t.post(collection, create).await
                }
                1 => {
                    let mut put = bad.clone();
                    set_meta(&mut put, "resourceVersion", before["metadata"]["resourceVersion"].clone());
                    t.call(Method::PUT, &item, Some(put)).await
                }
                2 => {
                    let b = serde_json::to_vec(&merge_patch_for(&ptr, &bad)).unwrap();
                    t.raw(Method::PATCH, &item, "application/merge-patch+json", "application/json", b).await
                }
                3 => {
                    let op = json!([{"op": if rng.below(2) == 0 { "replace" } else { "add" }, "path": ptr,
                        "value": bad.pointer(&ptr).cloned().unwrap_or(Value::Null)}]);
                    let b = serde_json::to_vec(&op).unwrap();
                    t.raw(Method::PATCH, &item, "application/json-patch+json", "application/json", b).await
                }
                4 => {
                    let b = serde_json::to_vec(&merge_patch_for(&ptr, &bad)).unwrap();
                    t.raw(Method::PATCH, &item, "application/strategic-merge-patch+json", "application/json", b).await
                }
                _ => {
                    let b = serde_json::to_vec(&bad).unwrap();
                    let path = format!("{item}?fieldManager=hostile&force=true");
                    t.raw(Method::PATCH, &path, "application/apply-patch+yaml", "application/json", b).await
                }
            };
            check(&what, code, &body);
            cases += 1;
            if code >= 400 {
                rejected += 1;
                let (_, after) = t.get(&item).await;
                assert_eq!(after, before, "{what}: a rejected write changed the object");
            }
            // Created copies are not needed again.
            if verb == 0 && code == 201 {
                let _ = t.call(Method::DELETE, &format!("{collection}/c{}", cases - 1), None).await;
            }
        }
    }
    eprintln!("{cases} hostile writes, {rejected} rejected with a Status, none panicked or answered 5xx");
    assert!(rejected * 2 > cases, "most mutations must be rejected, or the mutator is not hostile: {rejected}/{cases}");
}

/// YAML that is not UTF-8, and bodies that are not objects: 400, each saying why.
#[tokio::test]
async fn malformed_bodies_are_400() {
    let t = setup().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    for (ct, body) in [
        ("application/yaml", b"kind: ConfigMap\nmetadata: {name: \xff\xfe}\n".to_vec()),
        ("application/json", b"[1, 2]".to_vec()),
        ("application/json", b"{\"a\": ".to_vec()),
        ("application/json", b"\"just a string\"".to_vec()),
        ("application/vnd.kubernetes.protobuf", b"not protobuf".to_vec()),
    ] {
        let (code, status) = t.raw(Method::POST, cms, ct, "application/json", body).await;
        assert_eq!(code, 400, "{ct}: {status}");
        assert_eq!(status["kind"], "Status");
    }
}

/// Errors are written in kube-apiserver's field order: some clients compare them as strings.
#[tokio::test]
async fn status_fields_in_kube_apiserver_order() {
    let t = setup().await;
    let req = http::Request::builder()
        .uri("/api/v1/namespaces/default/configmaps/missing")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(axum::body::Body::empty())
        .unwrap();
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let resp = t.app.clone().oneshot(req).await.unwrap();
    let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(
        body,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"missing\" not found","reason":"NotFound","details":{"name":"missing","kind":"configmaps"},"code":404}"#
    );
}
