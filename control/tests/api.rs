//! The API server in-process: the router as a tower service, no sockets.

use axum::Router;
use axum::body::Body;
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmorch_control::apiserver::api::Api;
use wasmorch_control::apiserver::{self, ServerState};
use wasmorch_control::pki::{Identity, Tokens};
use wasmorch_control::store::Store;

const TOKEN: &str = "test-admin-token";

struct T {
    app: Router,
    api: Api,
    pki: Arc<wasmorch_control::pki::Pki>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

enum Who {
    Bearer(String),
    Cert(Identity),
}

fn node_identity(name: &str) -> Who {
    Who::Cert(Identity {
        user: format!("system:node:{name}"),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
    })
}

impl Drop for T {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let shutdown = CancellationToken::new();
    let mut api = Api::new(store, shutdown.clone());
    api.bookmark_interval = Duration::from_millis(200);
    wasmorch_control::server::bootstrap(&api).await.unwrap();
    tokio::spawn(wasmorch_control::controllers::namespace::run(api.clone()));
    let mut tokens = Tokens::default();
    tokens.add(TOKEN, Identity::admin());
    let pki = Arc::new(wasmorch_control::pki::Pki::load_or_create(&dir.path().join("pki"), &[]).unwrap());
    let state = Arc::new(ServerState {
        api: api.clone(),
        tokens,
        data_dir: dir.path().to_path_buf(),
        kubelet_tls: pki.kubelet_client_config().unwrap(),
        pki: pki.clone(),
        node_cert_ttl: Duration::from_secs(3600),
    });
    T { app: apiserver::router(state), api, pki, shutdown, _dir: dir }
}

impl T {
    async fn raw(&self, method: Method, path: &str, ct: &str, accept: &str, body: Vec<u8>) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", ct)
            .header("accept", accept)
            .body(Body::from(body))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
    /// A request as someone else: a bearer token, or a verified client certificate's identity
    /// (what the TLS accept loop attaches).
    async fn call_as(&self, who: &Who, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let ct = if method == Method::PATCH { "application/merge-patch+json" } else { "application/json" };
        let mut req = Request::builder().method(method).uri(path).header("content-type", ct);
        if let Who::Bearer(t) = who {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(Body::from(body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default())).unwrap();
        if let Who::Cert(id) = who {
            req.extensions_mut().insert(apiserver::handlers::PeerIdentity(Some(id.clone())));
        }
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let b = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
        self.raw(method, path, "application/json", "application/json", b).await
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    /// Open a watch and return a reader of its events.
    async fn watch(&self, path: &str, accept: &str) -> Watch {
        let req = Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("accept", accept)
            .body(Body::empty())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        Watch { body: resp.into_body(), buf: Vec::new() }
    }
}

struct Watch {
    body: Body,
    buf: Vec<u8>,
}

impl Watch {
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("watch event within 10s")?;
            if let Ok(d) = frame.unwrap().into_data() {
                self.buf.extend_from_slice(&d);
            }
        }
    }
}

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

#[tokio::test]
async fn discovery_documents() {
    let t = setup().await;
    let (_, v) = t.get("/api").await;
    assert_eq!(v["versions"], json!(["v1"]));
    let (_, v) = t
        .raw(
            Method::GET,
            "/apis",
            "",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
            vec![],
        )
        .await;
    assert_eq!(v["kind"], "APIGroupDiscoveryList");
    let groups: Vec<&str> =
        v["items"].as_array().unwrap().iter().map(|g| g["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(groups, ["apps", "batch", "coordination.k8s.io", "discovery.k8s.io", "policy", "storage.k8s.io"]);
    let (_, v) = t.get("/apis/apps/v1").await;
    assert!(v["resources"].as_array().unwrap().iter().any(|r| r["name"] == "deployments" && r["namespaced"] == true));
    let (_, v) = t.get("/openapi/v3").await;
    let url = v["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap().to_string();
    let (_, v) = t.get(&url).await;
    let patch = &v["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
    let (code, v) = t.get("/version").await;
    assert_eq!((code, v["major"].as_str()), (200, Some("1")));
}

fn pod_on(name: &str, node: &str, secret: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "file:///x.wasm",
            "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}]}})
}

#[tokio::test]
async fn node_credentials_reach_only_their_node_s_objects() {
    let t = setup().await;
    for (pod, node, secret) in [("p1", "n1", "s1"), ("p2", "n2", "s2")] {
        assert_eq!(
            t.call(Method::POST, "/api/v1/namespaces/default/pods", Some(pod_on(pod, node, secret))).await.0,
            201
        );
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "stringData": {"k": "v"}});
        assert_eq!(t.call(Method::POST, "/api/v1/namespaces/default/secrets", Some(s)).await.0, 201);
    }
    let n1 = node_identity("n1");
    let status = json!({"status": {"phase": "Running"}});
    let cases: Vec<(Method, &str, Option<Value>, u16)> = vec![
        (Method::PATCH, "/api/v1/namespaces/default/pods/p1/status", Some(status.clone()), 200),
        (Method::PATCH, "/api/v1/namespaces/default/pods/p2/status", Some(status.clone()), 403),
        (Method::PATCH, "/api/v1/namespaces/default/pods/p1", Some(json!({"metadata": {"labels": {"a": "b"}}})), 403),
        (Method::DELETE, "/api/v1/namespaces/default/pods/p2", None, 403),
        (Method::GET, "/api/v1/namespaces/default/pods/p2", None, 403),
        (Method::GET, "/api/v1/namespaces/default/pods/p1", None, 200),
        (Method::GET, "/api/v1/pods", None, 403),
        (Method::GET, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", None, 200),
        (Method::GET, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2", None, 403),
        (Method::GET, "/api/v1/namespaces/default/secrets/s1", None, 200),
        (Method::GET, "/api/v1/namespaces/default/secrets/s2", None, 403),
        (Method::GET, "/api/v1/namespaces/default/secrets", None, 403),
        (Method::GET, "/api/v1/secrets?watch=true", None, 403),
        (
            Method::POST,
            "/api/v1/nodes",
            Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})),
            201,
        ),
        (
            Method::POST,
            "/api/v1/nodes",
            Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}})),
            403,
        ),
        (Method::PATCH, "/api/v1/nodes/n1/status", Some(json!({"status": {"phase": "Running"}})), 200),
        (Method::PATCH, "/api/v1/nodes/n1", Some(json!({"spec": {"unschedulable": true}})), 200),
        (Method::DELETE, "/api/v1/nodes/n1", None, 403),
        (
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            Some(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"}})),
            201,
        ),
        (
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            Some(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n2"}})),
            403,
        ),
        (Method::POST, "/apis/apps/v1/namespaces/default/deployments", Some(json!({})), 403),
        (Method::GET, "/api/v1/services", None, 200),
        (Method::GET, "/wasmorch/v1/backup", None, 403),
    ];
    for (m, path, body, want) in cases {
        let (code, out) = t.call_as(&n1, m.clone(), path, body).await;
        assert_eq!(code, want, "{m} {path}: {out}");
        if want == 403 {
            let msg = out["message"].as_str().unwrap_or("");
            assert!(msg.contains("User \"system:node:n1\" cannot"), "{m} {path}: {msg}");
        }
    }
    // The pod bound elsewhere is untouched.
    let (_, p2) = t.get("/api/v1/namespaces/default/pods/p2").await;
    assert!(p2["status"]["phase"] != "Running" && p2["metadata"]["deletionTimestamp"].is_null(), "{p2}");
}

#[tokio::test]
async fn join_tokens_buy_a_node_certificate_and_nothing_else() {
    use wasmorch_api::join::JoinToken;
    let t = setup().await;
    let live = JoinToken::from_random(&t.pki.ca_hash(), &[1; 22]);
    wasmorch_control::membership::create_token(&t.api, &live, Some(Duration::from_secs(600)), "").await.unwrap();
    let expired = JoinToken::from_random(&t.pki.ca_hash(), &[2; 22]);
    let past = expired.secret(Some(chrono::Utc::now() - chrono::Duration::seconds(5)), "");
    assert_eq!(t.call(Method::POST, "/api/v1/namespaces/kube-system/secrets", Some(past)).await.0, 201);

    let key = rcgen::KeyPair::generate().unwrap();
    let csr = |k: &rcgen::KeyPair| {
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(k).unwrap().pem().unwrap()
    };
    let body = json!({"nodeName": "n1", "csr": csr(&key)});
    let path = "/wasmorch/v1/node-certificates";
    let bearer = Who::Bearer(live.credential());

    assert_eq!(t.call_as(&Who::Bearer(expired.credential()), Method::POST, path, Some(body.clone())).await.0, 401);
    let wrong = JoinToken { secret: "0000000000000000".into(), ..live.clone() };
    assert_eq!(t.call_as(&Who::Bearer(wrong.credential()), Method::POST, path, Some(body.clone())).await.0, 401);
    let (code, out) = t.call_as(&bearer, Method::POST, "/api/v1/namespaces/default/pods", None).await;
    assert_eq!(code, 403, "{out}");

    let (code, out) = t.call_as(&bearer, Method::POST, path, Some(body.clone())).await;
    assert_eq!(code, 200, "{out}");
    let pem = out["certificate"].as_str().unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|d: rustls::pki_types::CertificateDer| d.to_vec())
        .unwrap();
    let id = wasmorch_control::pki::identity_from_cert(&der).unwrap();
    assert_eq!(id.user, "system:node:n1");
    assert!(id.groups.contains(&"system:nodes".to_string()));
    assert!(!id.is_admin());
    assert_eq!(out["ca"].as_str(), Some(t.pki.ca_pem.as_str()));

    // The same name with another key is refused; with the same key it is a rejoin.
    let other = json!({"nodeName": "n1", "csr": csr(&rcgen::KeyPair::generate().unwrap())});
    let (code, out) = t.call_as(&bearer, Method::POST, path, Some(other)).await;
    assert_eq!(code, 403, "{out}");
    assert!(out["message"].as_str().unwrap().contains("joined before with another key"), "{out}");
    assert_eq!(t.call_as(&bearer, Method::POST, path, Some(body.clone())).await.0, 200);
    // An admin may give the name a new key; the old key is then the stranger.
    let rekey = json!({"nodeName": "n4", "csr": csr(&rcgen::KeyPair::generate().unwrap())});
    assert_eq!(t.call_as(&bearer, Method::POST, path, Some(json!({"nodeName": "n4", "csr": csr(&key)}))).await.0, 200);
    assert_eq!(t.call(Method::POST, path, Some(rekey)).await.0, 200);
    let (code, _) = t.call_as(&bearer, Method::POST, path, Some(json!({"nodeName": "n4", "csr": csr(&key)}))).await;
    assert_eq!(code, 403, "the replaced key still worked");
    // A node renews for itself only.
    let renew_other = json!({"nodeName": "n2", "csr": csr(&key)});
    assert_eq!(t.call_as(&node_identity("n1"), Method::POST, path, Some(renew_other)).await.0, 403);
    assert_eq!(t.call_as(&node_identity("n1"), Method::POST, path, Some(body)).await.0, 200);
    // A request that is not a CSR says so.
    let (code, out) = t.call_as(&bearer, Method::POST, path, Some(json!({"nodeName": "n3", "csr": "nope"}))).await;
    assert_eq!(code, 400);
    assert!(out["message"].as_str().unwrap().contains("certificate request is not valid"), "{out}");
    // The CA is public.
    let req = Request::builder().uri("/cacerts").body(Body::empty()).unwrap();
    let resp = t.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
}
