//! Cluster membership through the API: what a node credential may do, and what a join
//! token buys.

mod common;

use axum::body::Body;
use common::*;
use http::{Method, Request};
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

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
        // Every pod, for NetworkPolicy (labels and addresses), as a CNI agent reads them.
        (Method::GET, "/api/v1/pods", None, 200),
        (Method::GET, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", None, 200),
        (Method::GET, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2", None, 200),
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
