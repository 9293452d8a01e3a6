//! ServiceAccounts and bound tokens through the API: TokenRequest, authentication by token,
//! RBAC for service accounts, binding to a pod, and pod admission.

mod common;

use common::*;
use http::Method;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const SAS: &str = "/api/v1/namespaces/default/serviceaccounts";

fn pod(name: &str, node: Option<&str>, spec_extra: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "file:///x.wasm"}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    for (k, v) in spec_extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

async fn token(t: &T, sa: &str, spec: Value) -> (u16, Value) {
    t.post(
        &format!("{SAS}/{sa}/token"),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
    )
    .await
}

#[tokio::test]
async fn tokens_authenticate_service_accounts_until_what_they_are_bound_to_is_gone() {
    let t = setup().await;
    let (code, _) =
        t.post(SAS, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"}})).await;
    assert_eq!(code, 201);

    // A token, with Kubernetes' defaults, that authenticates as the account.
    let (code, tr) = token(&t, "bot", json!({})).await;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    let bot = Who::Bearer(tr["status"]["token"].as_str().unwrap().to_string());
    let (code, v) = t.call_as(&bot, Method::GET, PODS, None).await;
    assert_eq!(code, 403, "no role yet: {v}");
    assert!(v["message"].as_str().unwrap().contains("system:serviceaccount:default:bot"), "{v}");
    // (A Role of its own: the aggregated `view` is filled by a controller this harness does not run.)
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]});
    assert_eq!(t.post("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", role).await.0, 201);
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "bot-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "default"}]});
    assert_eq!(t.post("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", binding).await.0, 201);
    let allowed = t.until(|| async { t.call_as(&bot, Method::GET, PODS, None).await.0 == 200 }).await;
    assert!(allowed, "the role lets it list pods");
    assert_eq!(t.call_as(&bot, Method::DELETE, &format!("{PODS}/x"), None).await.0, 403, "but not delete them");
    let group = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "default"}}});
    let (_, v) =
        t.call_as(&bot, Method::POST, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", Some(group)).await;
    assert_eq!(v["status"]["allowed"], true, "{v}");

    // Bound to a pod: valid while that pod exists.
    assert_eq!(t.post(PODS, pod("p1", None, json!({"serviceAccountName": "bot"}))).await.0, 201);
    let (code, tr) =
        token(&t, "bot", json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p1"}})).await;
    assert_eq!(code, 201, "{tr}");
    assert!(!tr["spec"]["boundObjectRef"]["uid"].as_str().unwrap().is_empty());
    let bound = Who::Bearer(tr["status"]["token"].as_str().unwrap().to_string());
    assert_eq!(t.call_as(&bound, Method::GET, PODS, None).await.0, 200);
    assert_eq!(t.call(Method::DELETE, &format!("{PODS}/p1?gracePeriodSeconds=0"), None).await.0, 200);
    assert_eq!(t.get(&format!("{PODS}/p1")).await.0, 404);
    assert_eq!(t.call_as(&bound, Method::GET, PODS, None).await.0, 401, "the pod is gone");
    // A pod of the same name is another pod.
    assert_eq!(t.post(PODS, pod("p1", None, json!({"serviceAccountName": "bot"}))).await.0, 201);
    assert_eq!(t.call_as(&bound, Method::GET, PODS, None).await.0, 401);

    // What TokenRequest refuses, naming why.
    let (code, v) = token(&t, "bot", json!({"expirationSeconds": 60})).await;
    assert!(code == 422 && v["message"].as_str().unwrap().contains("spec.expirationSeconds"), "{v}");
    let (code, _) = token(&t, "bot", json!({"boundObjectRef": {"kind": "Pod", "name": "ghost"}})).await;
    assert_eq!(code, 404);
    let (code, _) = token(&t, "nobody", json!({})).await;
    assert_eq!(code, 404);
    // Forged and foreign tokens.
    let forged = format!("{}x", tr["status"]["token"].as_str().unwrap());
    assert_eq!(t.call_as(&Who::Bearer(forged), Method::GET, PODS, None).await.0, 401);
    assert_eq!(t.call_as(&Who::Bearer("eyJ.eyJ.x".into()), Method::GET, PODS, None).await.0, 401);

    // Deleting the account ends its tokens.
    assert_eq!(t.call(Method::DELETE, &format!("{SAS}/bot"), None).await.0, 200);
    assert_eq!(t.call_as(&bot, Method::GET, PODS, None).await.0, 401);
}

#[tokio::test]
async fn nodes_get_tokens_only_for_their_pods_accounts() {
    let t = setup().await;
    t.post(SAS, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"}})).await;
    t.post(PODS, pod("on1", Some("n1"), json!({"serviceAccountName": "bot"}))).await;
    t.post(PODS, pod("on2", Some("n2"), json!({"serviceAccountName": "bot"}))).await;
    let n1 = node_identity("n1");
    let req = |pod: &str| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod}}})
    };
    let path = format!("{SAS}/bot/token");
    assert_eq!(t.call_as(&n1, Method::POST, &path, Some(req("on1"))).await.0, 201);
    assert_eq!(t.call_as(&n1, Method::POST, &path, Some(req("on2"))).await.0, 403, "another node's pod");
    let unbound = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}});
    assert_eq!(t.call_as(&n1, Method::POST, &path, Some(unbound)).await.0, 403, "not bound to a pod");
    // The pod runs as `bot`, not as `default`.
    t.post(SAS, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})).await;
    let other = format!("{SAS}/default/token");
    assert_eq!(t.call_as(&n1, Method::POST, &other, Some(req("on1"))).await.0, 403);
    // And the cluster CA ConfigMap its token volume projects is readable by that node.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "x"}});
    t.post("/api/v1/namespaces/default/configmaps", cm).await;
    assert_eq!(
        t.call_as(&n1, Method::GET, "/api/v1/namespaces/default/configmaps/kube-root-ca.crt", None).await.0,
        200
    );
}

#[tokio::test]
async fn pods_are_admitted_with_their_account_and_token_volume() {
    let t = setup().await;
    let (code, p) = t.post(PODS, pod("plain", None, json!({}))).await;
    assert_eq!(code, 201, "{p}");
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    let vol = &p["spec"]["volumes"][0];
    assert!(vol["name"].as_str().unwrap().starts_with("kube-api-access-"), "{p}");
    let mount = &p["spec"]["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/var/run/secrets/kubernetes.io/serviceaccount");
    // Opted out on the pod.
    let (_, p) = t.post(PODS, pod("quiet", None, json!({"automountServiceAccountToken": false}))).await;
    assert!(p["spec"].get("volumes").is_none_or(Value::is_null), "{p}");
    // A missing account other than `default` is refused.
    let (code, v) = t.post(PODS, pod("lost", None, json!({"serviceAccountName": "ghost"}))).await;
    assert_eq!(code, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("serviceaccount \"ghost\" not found"), "{v}");
    // Tables for `kubectl get sa`.
    t.post(SAS, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"}})).await;
    let (_, tab) = t.raw(Method::GET, SAS, "", "application/json;as=Table;v=v1;g=meta.k8s.io", vec![]).await;
    let cols: Vec<&str> =
        tab["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(cols, ["Name", "Secrets", "Age"]);
}
