//! The API server in-process: the router as a tower service, no sockets.

mod common;

use axum::body::Body;
use common::*;
use http::{Method, Request};
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

fn cm(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "web"}}, "data": data})
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "file:///x.wasm"}]}}}
    })
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn crud_and_optimistic_concurrency() {
    let t = setup().await;
    let (code, created) = t.post(CMS, cm("a", json!({"k": "v"}))).await;
    assert_eq!(code, 201, "{created}");
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    assert_eq!(created["metadata"]["namespace"], "default");
    assert!(created["metadata"]["uid"].is_string());
    assert!(created["metadata"]["creationTimestamp"].is_string());

    let (code, dup) = t.post(CMS, cm("a", json!({}))).await;
    assert_eq!((code, dup["reason"].as_str()), (409, Some("AlreadyExists")));

    let (code, got) = t.get(&format!("{CMS}/a")).await;
    assert_eq!((code, &got["data"]["k"]), (200, &json!("v")));

    // PUT with the current resourceVersion succeeds; the old one then conflicts.
    let mut upd = got.clone();
    upd["data"]["k"] = json!("v2");
    let (code, updated) = t.call(Method::PUT, &format!("{CMS}/a"), Some(upd.clone())).await;
    assert_eq!(code, 200, "{updated}");
    assert_ne!(updated["metadata"]["resourceVersion"], json!(rv));
    let (code, conflict) = t.call(Method::PUT, &format!("{CMS}/a"), Some(upd)).await;
    assert_eq!((code, conflict["reason"].as_str()), (409, Some("Conflict")));

    // Merge patch and JSON patch.
    let (code, p) = t
        .raw(
            Method::PATCH,
            &format!("{CMS}/a"),
            "application/merge-patch+json",
            "application/json",
            br#"{"data":{"n":"1"}}"#.to_vec(),
        )
        .await;
    assert_eq!((code, &p["data"]["n"]), (200, &json!("1")));
    let (code, p) = t
        .raw(
            Method::PATCH,
            &format!("{CMS}/a"),
            "application/json-patch+json",
            "application/json",
            br#"[{"op":"remove","path":"/data/n"}]"#.to_vec(),
        )
        .await;
    assert_eq!(code, 200);
    assert!(p["data"].get("n").is_none());

    let (code, _) = t.call(Method::DELETE, &format!("{CMS}/a"), None).await;
    assert_eq!(code, 200);
    let (code, nf) = t.get(&format!("{CMS}/a")).await;
    assert_eq!((code, nf["message"].as_str()), (404, Some("configmaps \"a\" not found")));
    assert_eq!(nf["kind"], "Status");
}

#[tokio::test]
async fn generation_and_status_subresource() {
    let t = setup().await;
    let base = "/apis/apps/v1/namespaces/default/deployments";
    let (code, d) = t.post(base, deployment("web")).await;
    assert_eq!(code, 201, "{d}");
    assert_eq!(d["metadata"]["generation"], 1);
    let (_, d) = t
        .raw(
            Method::PATCH,
            &format!("{base}/web"),
            "application/merge-patch+json",
            "application/json",
            br#"{"metadata":{"labels":{"x":"y"}}}"#.to_vec(),
        )
        .await;
    assert_eq!(d["metadata"]["generation"], 1);
    let (_, d) = t
        .raw(
            Method::PATCH,
            &format!("{base}/web"),
            "application/merge-patch+json",
            "application/json",
            br#"{"spec":{"replicas":3}}"#.to_vec(),
        )
        .await;
    assert_eq!(d["metadata"]["generation"], 2);
    // Status changes go through /status only, and do not move generation.
    let (_, d) = t
        .raw(
            Method::PATCH,
            &format!("{base}/web/status"),
            "application/merge-patch+json",
            "application/json",
            br#"{"status":{"replicas":3},"spec":{"replicas":9}}"#.to_vec(),
        )
        .await;
    assert_eq!(
        (d["status"]["replicas"].as_i64(), d["spec"]["replicas"].as_i64(), d["metadata"]["generation"].as_i64()),
        (Some(3), Some(3), Some(2))
    );
    let (_, d) = t
        .raw(
            Method::PATCH,
            &format!("{base}/web"),
            "application/merge-patch+json",
            "application/json",
            br#"{"status":{"replicas":7}}"#.to_vec(),
        )
        .await;
    assert_eq!(d["status"]["replicas"], 3, "main resource ignores status");
}

#[tokio::test]
async fn bad_input_is_rejected_and_nothing_is_stored() {
    let t = setup().await;
    let rev0 = t.api.store.current_rev();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (CMS, "application/json", b"{not json".to_vec(), 400, ""),
        (CMS, "application/yaml", b"a: [unclosed".to_vec(), 400, ""),
        (CMS, "application/json", serde_json::to_vec(&cm("Bad_Name", json!({}))).unwrap(), 422, "metadata.name"),
        (
            CMS,
            "application/json",
            serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": 5}}),
            )
            .unwrap(),
            422,
            "data.k",
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            "application/json",
            serde_json::to_vec(&{
                let mut d = deployment("w");
                d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
                d
            })
            .unwrap(),
            422,
            "spec.template.spec.containers[0].image",
        ),
        (
            CMS,
            "application/json",
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})).unwrap(),
            400,
            "",
        ),
        ("/api/v1/namespaces/default/widgets", "application/json", b"{}".to_vec(), 404, ""),
        (
            "/api/v1/namespaces/nope/configmaps",
            "application/json",
            serde_json::to_vec(&cm("x", json!({}))).unwrap(),
            404,
            "",
        ),
    ];
    for (path, ct, body, code, field) in cases {
        let (got, status) = t.raw(Method::POST, path, ct, "application/json", body).await;
        assert_eq!(got, code, "{path} {status}");
        assert_eq!(status["kind"], "Status", "{status}");
        if !field.is_empty() {
            let causes = status["details"]["causes"].as_array().unwrap();
            assert!(causes.iter().any(|c| c["field"] == field), "{field} not in {status}");
        }
    }
    // Over 3 MiB: 413.
    let big = cm("big", json!({"k": "x".repeat(3 * 1024 * 1024 + 10)}));
    let (code, status) = t.post(CMS, big).await;
    assert_eq!((code, status["reason"].as_str()), (413, Some("RequestEntityTooLarge")));
    // A YAML alias bomb fails fast.
    let mut bomb = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\na: &a [x,x,x,x,x,x,x,x,x]\n");
    let mut prev = 'a';
    for c in 'b'..='m' {
        bomb.push_str(&format!("{c}: &{c} [{}]\n", vec![format!("*{prev}"); 9].join(",")));
        prev = c;
    }
    let started = std::time::Instant::now();
    let (code, _) = t.raw(Method::POST, CMS, "application/yaml", "application/json", bomb.into_bytes()).await;
    assert_eq!(code, 400);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Strict field validation names the unknown field.
    let mut unknown = cm("u", json!({}));
    unknown["spec"] = json!({"x": 1});
    let (code, status) = t
        .raw(
            Method::POST,
            &format!("{CMS}?fieldValidation=Strict"),
            "application/json",
            "application/json",
            serde_json::to_vec(&unknown).unwrap(),
        )
        .await;
    assert_eq!(code, 400);
    assert!(status["message"].as_str().unwrap().contains("unknown field \"spec\""), "{status}");
    assert_eq!(t.api.store.current_rev(), rev0, "no rejected request stored anything");
    let (_, list) = t.get(CMS).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    // Unauthenticated requests are refused; health is anonymous.
    let resp = t.app.clone().oneshot(Request::builder().uri(CMS).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = t.app.clone().oneshot(Request::builder().uri("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn dry_run_and_generate_name() {
    let t = setup().await;
    let (code, o) = t.call(Method::POST, &format!("{CMS}?dryRun=All"), Some(cm("dry", json!({})))).await;
    assert_eq!(code, 201);
    assert_eq!(o["metadata"]["name"], "dry");
    assert_eq!(t.get(&format!("{CMS}/dry")).await.0, 404);
    let (code, o) =
        t.post(CMS, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}})).await;
    assert_eq!(code, 201);
    assert!(o["metadata"]["name"].as_str().unwrap().starts_with("gen-"));
}

#[tokio::test]
async fn selectors_and_paging() {
    let t = setup().await;
    for i in 0..7 {
        let mut c = cm(&format!("c{i}"), json!({}));
        c["metadata"]["labels"] = json!({"tier": if i % 2 == 0 { "even" } else { "odd" }, "i": i.to_string()});
        assert_eq!(t.post(CMS, c).await.0, 201);
    }
    let (_, l) = t.get(&format!("{CMS}?labelSelector=tier%3Deven")).await;
    assert_eq!(l["items"].as_array().unwrap().len(), 4);
    let (_, l) = t.get(&format!("{CMS}?labelSelector=tier%3Deven%2Ci+notin+(0%2C2)")).await;
    assert_eq!(l["items"].as_array().unwrap().len(), 2);
    let (_, l) = t.get(&format!("{CMS}?fieldSelector=metadata.name%3Dc3")).await;
    assert_eq!(l["items"][0]["metadata"]["name"], "c3");
    assert_eq!(t.get(&format!("{CMS}?fieldSelector=spec.nodeName%3Dx")).await.0, 400);
    assert_eq!(t.get(&format!("{CMS}?labelSelector=a+in+(")).await.0, 400);
    // Pages of 3 with a selector: 4 even items → 3 + 1.
    let (_, p1) = t.get(&format!("{CMS}?labelSelector=tier%3Deven&limit=3")).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 3);
    let cont = p1["metadata"]["continue"].as_str().unwrap();
    let (_, p2) = t.get(&format!("{CMS}?labelSelector=tier%3Deven&limit=3&continue={cont}")).await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert!(p2["metadata"].get("continue").is_none());
}

#[tokio::test]
async fn watch_in_order_resume_and_gone() {
    let t = setup().await;
    let (_, c) = t.post(CMS, cm("w", json!({"v": "0"}))).await;
    let rv0: u64 = c["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let mut w = t.watch(&format!("{CMS}?watch=true&resourceVersion={rv0}"), "application/json").await;
    for i in 1..=3 {
        let body = format!(r#"{{"data":{{"v":"{i}"}}}}"#);
        t.raw(
            Method::PATCH,
            &format!("{CMS}/w"),
            "application/merge-patch+json",
            "application/json",
            body.into_bytes(),
        )
        .await;
    }
    t.call(Method::DELETE, &format!("{CMS}/w"), None).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = w.next().await.unwrap();
        seen.push((e["type"].as_str().unwrap().to_string(), e["object"]["data"]["v"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        seen,
        [("MODIFIED", "1"), ("MODIFIED", "2"), ("MODIFIED", "3"), ("DELETED", "3")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // Without a resourceVersion: current objects as ADDED first.
    t.post(CMS, cm("x", json!({}))).await;
    let mut w = t.watch(&format!("{CMS}?watch=true"), "application/json").await;
    let e = w.next().await.unwrap();
    assert_eq!((e["type"].as_str(), e["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("x")));

    // WatchList: initial events, then a bookmark marking their end.
    let mut w = t
        .watch(
            &format!(
                "{CMS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"
            ),
            "application/json",
        )
        .await;
    assert_eq!(w.next().await.unwrap()["type"], "ADDED");
    let b = w.next().await.unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");

    // A selector transition: an object that stops matching is DELETED for this watcher.
    let mut w = t.watch(&format!("{CMS}?watch=true&labelSelector=app%3Dweb"), "application/json").await;
    assert_eq!(w.next().await.unwrap()["type"], "ADDED");
    t.raw(
        Method::PATCH,
        &format!("{CMS}/x"),
        "application/merge-patch+json",
        "application/json",
        br#"{"metadata":{"labels":{"app":"other"}}}"#.to_vec(),
    )
    .await;
    let e = w.next().await.unwrap();
    assert_eq!((e["type"].as_str(), e["object"]["metadata"]["name"].as_str()), (Some("DELETED"), Some("x")));

    // Compacted history: 410 Gone as an ERROR event.
    let now = t.api.store.current_rev();
    t.api.store.compact(0).await.unwrap();
    let mut w = t.watch(&format!("{CMS}?watch=true&resourceVersion={}", now - 2), "application/json").await;
    let e = w.next().await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["code"].as_i64(), e["object"]["reason"].as_str()),
        (Some("ERROR"), Some(410), Some("Expired"))
    );
}

#[tokio::test]
async fn bookmarks_and_table_watch() {
    let t = setup().await;
    t.post(CMS, cm("a", json!({}))).await;
    let mut w = t
        .watch(&format!("{CMS}?watch=true&allowWatchBookmarks=true"), "application/json;as=Table;v=v1;g=meta.k8s.io")
        .await;
    let first = w.next().await.unwrap();
    assert_eq!(first["object"]["kind"], "Table");
    assert_eq!(first["object"]["columnDefinitions"][0]["name"], "Name");
    assert_eq!(first["object"]["rows"][0]["cells"][0], "a");
    let b = w.next().await.unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert!(b["object"]["metadata"]["resourceVersion"].is_string());
}

#[tokio::test]
async fn tables_have_kubectl_columns_for_every_kind() {
    let t = setup().await;
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json";
    let expected: &[(&str, &[&str])] = &[
        ("/api/v1/namespaces", &["Name", "Status", "Age"]),
        ("/api/v1/nodes", &["Name", "Status", "Roles", "Age", "Version"]),
        ("/api/v1/namespaces/default/pods", &["Name", "Ready", "Status", "Restarts", "Age"]),
        ("/api/v1/namespaces/default/services", &["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]),
        ("/api/v1/namespaces/default/endpoints", &["Name", "Endpoints", "Age"]),
        ("/api/v1/namespaces/default/configmaps", &["Name", "Data", "Age"]),
        ("/api/v1/namespaces/default/secrets", &["Name", "Type", "Data", "Age"]),
        ("/api/v1/namespaces/default/events", &["Last Seen", "Type", "Reason", "Object", "Message"]),
        ("/apis/apps/v1/namespaces/default/deployments", &["Name", "Ready", "Up-to-date", "Available", "Age"]),
        ("/apis/apps/v1/namespaces/default/replicasets", &["Name", "Desired", "Current", "Ready", "Age"]),
        (
            "/apis/apps/v1/namespaces/default/daemonsets",
            &["Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age"],
        ),
        ("/apis/batch/v1/namespaces/default/jobs", &["Name", "Status", "Completions", "Duration", "Age"]),
        (
            "/apis/batch/v1/namespaces/default/cronjobs",
            &["Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age"],
        ),
        ("/apis/coordination.k8s.io/v1/namespaces/default/leases", &["Name", "Holder", "Age"]),
    ];
    for (path, cols) in expected {
        let (code, v) = t.raw(Method::GET, path, "application/json", table, vec![]).await;
        assert_eq!(code, 200, "{path}");
        assert_eq!(v["kind"], "Table", "{path}");
        let got: Vec<&str> = v["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(&got, cols, "{path}");
    }
    let (_, v) = t.raw(Method::GET, "/api/v1/namespaces", "application/json", table, vec![]).await;
    let names: Vec<&str> = v["rows"].as_array().unwrap().iter().map(|r| r["cells"][0].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-public", "kube-system"]);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() {
    let t = setup().await;
    assert_eq!(
        t.post("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}))
            .await
            .0,
        201
    );
    for i in 0..3 {
        assert_eq!(t.post("/api/v1/namespaces/team/configmaps", cm(&format!("c{i}"), json!({}))).await.0, 201);
    }
    assert_eq!(t.post("/apis/apps/v1/namespaces/team/deployments", deployment("d")).await.0, 201);
    let (code, ns) = t.call(Method::DELETE, "/api/v1/namespaces/team", None).await;
    assert_eq!(code, 202);
    assert_eq!(ns["status"]["phase"], "Terminating");
    // New content is refused while it terminates (or the namespace is already gone).
    let (code, _) = t.post("/api/v1/namespaces/team/configmaps", cm("late", json!({}))).await;
    assert!(code == 403 || code == 404, "{code}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if t.get("/api/v1/namespaces/team").await.0 == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "namespace not removed in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(t.get("/api/v1/namespaces/team/configmaps").await.1["items"].as_array().unwrap().len(), 0);
    assert_eq!(t.get("/apis/apps/v1/namespaces/team/deployments").await.1["items"].as_array().unwrap().len(), 0);
}

/// Admission reads namespaces, quotas and limit ranges from caches: what this server has just
/// written must apply to the very next request, every time.
#[tokio::test]
async fn admission_sees_a_namespace_quota_or_limit_range_written_a_moment_before() {
    let t = setup().await;
    for i in 0..20 {
        let ns = format!("fresh{i}");
        let base = format!("/api/v1/namespaces/{ns}");
        let (code, body) = t
            .post("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .await;
        assert_eq!(code, 201, "{body}");
        let (code, body) = t.post(&format!("{base}/configmaps"), cm("first", json!({}))).await;
        assert_eq!(code, 201, "round {i}: a namespace created a moment before: {body}");
        let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
            "spec": {"hard": {"count/configmaps": "2"}}});
        assert_eq!(t.post(&format!("{base}/resourcequotas"), quota).await.0, 201);
        let range = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l"},
            "spec": {"limits": [{"type": "Container", "max": {"memory": "64Mi"}}]}});
        assert_eq!(t.post(&format!("{base}/limitranges"), range).await.0, 201);
        assert_eq!(t.post(&format!("{base}/configmaps"), cm("second", json!({}))).await.0, 201);
        let (code, body) = t.post(&format!("{base}/configmaps"), cm("third", json!({}))).await;
        assert_eq!(code, 403, "round {i}: the quota written a moment before was not applied: {body}");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
            "spec": {"containers": [{"name": "c", "image": "file:///x.wasm",
                "resources": {"limits": {"memory": "128Mi"}}}]}});
        let (code, body) = t.post(&format!("{base}/pods"), pod).await;
        assert_eq!(code, 403, "round {i}: the LimitRange written a moment before was not applied: {body}");
        // Raising the quota applies at once too.
        let (code, _) = t
            .raw(
                Method::PATCH,
                &format!("{base}/resourcequotas/q"),
                "application/merge-patch+json",
                "application/json",
                br#"{"spec":{"hard":{"count/configmaps":"3"}}}"#.to_vec(),
            )
            .await;
        assert_eq!(code, 200);
        let (code, body) = t.post(&format!("{base}/configmaps"), cm("third", json!({}))).await;
        assert_eq!(code, 201, "round {i}: the raised quota was not applied: {body}");
        assert_eq!(t.call(Method::DELETE, &base, None).await.0, 202);
        let (code, _) = t.post(&format!("{base}/configmaps"), cm("late", json!({}))).await;
        assert!(code == 403 || code == 404, "round {i}: a create in a namespace being deleted got {code}");
    }
}

#[tokio::test]
async fn finalizers_hold_an_object_until_removed() {
    let t = setup().await;
    let mut c = cm("f", json!({}));
    c["metadata"]["finalizers"] = json!(["example.com/hold"]);
    t.post(CMS, c).await;
    let (code, o) = t.call(Method::DELETE, &format!("{CMS}/f"), None).await;
    assert_eq!(code, 202);
    assert!(o["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(t.get(&format!("{CMS}/f")).await.0, 200);
    t.raw(
        Method::PATCH,
        &format!("{CMS}/f"),
        "application/merge-patch+json",
        "application/json",
        br#"{"metadata":{"finalizers":null}}"#.to_vec(),
    )
    .await;
    assert_eq!(t.get(&format!("{CMS}/f")).await.0, 404);
}

/// Two API servers on one etcd: Services created through both at once never share a
/// cluster IP or node port, and evictions through both never spend more disruptions than the
/// budget allows.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn api_servers_sharing_etcd_never_double_allocate_or_overspend() {
    use wasmorch_control::store::{EtcdConfig, etcd::testing, open_etcd};
    if !testing::required() {
        return;
    }
    let member = tokio::task::spawn_blocking(testing::Member::start).await.unwrap().unwrap();
    let cfg = EtcdConfig::from_endpoints(&member.client_url).unwrap();
    let mut servers = Vec::new();
    let key = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        // One sealing key for both, as servers of one cluster share it.
        let store = open_etcd(&cfg, &key.path().join("state.key")).await.unwrap();
        servers.push(std::sync::Arc::new(setup_on(store, dir).await));
    }
    // 24 NodePort Services, alternately through each server, all at once.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let t = servers[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{i}")},
                "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}});
            let (code, body) = t.post("/api/v1/namespaces/default/services", svc).await;
            assert_eq!(code, 201, "{body}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, list) = servers[0].get("/api/v1/namespaces/default/services").await;
    let items = list["items"].as_array().unwrap();
    let ips: std::collections::HashSet<&str> =
        items.iter().filter_map(|s| s["spec"]["clusterIP"].as_str()).filter(|ip| *ip != "None").collect();
    let ports: std::collections::HashSet<u64> =
        items.iter().filter_map(|s| s["spec"]["ports"][0]["nodePort"].as_u64()).collect();
    let created = items.iter().filter(|s| s["metadata"]["name"].as_str().is_some_and(|n| n.starts_with('s'))).count();
    assert_eq!(created, 24);
    assert_eq!(ips.len(), items.len(), "a cluster IP was handed out twice");
    assert_eq!(ports.len(), 24, "a node port was handed out twice");

    // Six ready pods under a budget that allows one disruption; each evicted at once.
    for i in 0..6 {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "labels": {"app": "db"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "wasmorch.local/hello-http:1.0"}]}});
        let (code, body) = servers[0].post("/api/v1/namespaces/default/pods", pod).await;
        assert_eq!(code, 201, "{body}");
        let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let (code, body) = servers[0].merge(&format!("/api/v1/namespaces/default/pods/p{i}/status"), status).await;
        assert_eq!(code, 200, "{body}");
    }
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "db"},
        "spec": {"minAvailable": 5, "selector": {"matchLabels": {"app": "db"}}}});
    let (code, body) = servers[0].post("/apis/policy/v1/namespaces/default/poddisruptionbudgets", pdb).await;
    assert_eq!(code, 201, "{body}");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let t = servers[i % 2].clone();
        let pod = format!("p{i}");
        tasks.push(tokio::spawn(async move {
            let ev = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}});
            t.post(&format!("/api/v1/namespaces/default/pods/{pod}/eviction"), ev).await.0
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let evicted = codes.iter().filter(|c| **c == 200 || **c == 201).count();
    assert_eq!(evicted, 1, "one disruption allowed, evictions answered {codes:?}");
    assert!(codes.iter().all(|c| [200, 201, 429].contains(c)), "{codes:?}");
}
