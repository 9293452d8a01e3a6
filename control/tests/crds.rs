//! CustomResourceDefinitions through the API: a definition serves its kind at its group
//! version paths with discovery, every verb, watch, selectors, status and scale
//! subresources, schema validation (422 naming fields), defaults and pruning, printer
//! columns, several versions on one storage version, and RBAC.

mod common;

use common::*;
use http::Method;
use serde_json::{Value, json};
use wasmorch_control::pki::Identity;

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const V1: &str = "/apis/example.com/v1/namespaces/default/widgets";
const BETA: &str = "/apis/example.com/v1beta1/namespaces/default/widgets";

pub fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                 "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}, {"name": "Color", "type": "string", "jsonPath": ".spec.color"}],
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["size"], "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                        "replicas": {"type": "integer", "minimum": 0}}},
                    "status": {"type": "object", "properties": {"replicas": {"type": "integer"}, "phase": {"type": "string"}}}}}}},
                {"name": "v1beta1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}
            ]
        }
    })
}

fn widget(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name, "labels": {"tier": "a"}}, "spec": spec})
}

#[tokio::test]
async fn a_definition_serves_its_kind() {
    let t = setup().await;
    let (code, v) = t.post(CRDS, widget_crd()).await;
    assert_eq!(code, 201, "{v}");
    assert!(
        v["metadata"]["finalizers"].as_array().unwrap().contains(&json!("customresourcecleanup.apiextensions.k8s.io"))
    );
    // Served as soon as this server's informer has it.
    assert!(t.until(|| async { t.get("/apis/example.com/v1").await.0 == 200 }).await, "never served");
    let (_, list) = t.get("/apis/example.com/v1").await;
    assert_eq!(list["resources"][0]["name"], "widgets");
    assert_eq!(list["resources"][0]["shortNames"], json!(["wd"]));
    let (_, g) = t.get("/apis/example.com").await;
    assert_eq!(g["preferredVersion"]["version"], "v1");
    let (_, all) = t.get("/apis").await;
    assert!(all["groups"].as_array().unwrap().iter().any(|g| g["name"] == "example.com"));

    // Create: defaults applied, unknown fields pruned (a warning; Strict refuses).
    let (code, w) = t.post(V1, widget("a", json!({"size": 3, "bogus": true}))).await;
    assert_eq!(code, 201, "{w}");
    assert_eq!(w["spec"]["color"], "red");
    assert!(w["spec"].get("bogus").is_none());
    let (code, v) =
        t.post(&format!("{V1}?fieldValidation=Strict"), widget("s", json!({"size": 3, "bogus": true}))).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("unknown field \"spec.bogus\""), "{v}");

    // Validation: 422 naming each field; nothing stored.
    let cases = [
        (json!({}), "spec.size: Required value"),
        (json!({"size": "big"}), "spec.size: Invalid value: \"string\": spec.size in body must be of type integer"),
        (json!({"size": 11}), "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"),
        (json!({"size": 2, "color": "green"}), "spec.color: Unsupported value: \"green\""),
    ];
    for (spec, want) in cases {
        let (code, v) = t.post(V1, widget("bad", spec.clone())).await;
        assert_eq!(code, 422, "{spec}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.starts_with("Widget.example.com \"bad\" is invalid") && msg.contains(want), "{spec}: {msg}");
    }
    assert_eq!(t.get(&format!("{V1}/bad")).await.0, 404);

    // Another version: same object, its own apiVersion; writes through it are stored as v1.
    let (_, b) = t.get(&format!("{BETA}/a")).await;
    assert_eq!((b["apiVersion"].as_str(), &b["spec"]["size"]), (Some("example.com/v1beta1"), &json!(3)));
    let beta = json!({"apiVersion": "example.com/v1beta1", "kind": "Widget", "metadata": {"name": "b"}, "spec": {"size": 5, "color": "blue"}});
    assert_eq!(t.post(BETA, beta).await.0, 201);
    let (_, b) = t.get(&format!("{V1}/b")).await;
    assert_eq!((b["apiVersion"].as_str(), &b["spec"]["size"]), (Some("example.com/v1"), &json!(5)));

    // Lists with selectors, Tables with the printer columns.
    let (_, l) = t.get(&format!("{V1}?labelSelector=tier%3Da")).await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    let (_, l) = t.get(&format!("{V1}?fieldSelector=metadata.name%3Db")).await;
    assert_eq!(l["items"][0]["metadata"]["name"], "b");
    assert_eq!(l["kind"], "WidgetList");
    let (_, tab) = t.raw(Method::GET, V1, "", "application/json;as=Table;v=v1;g=meta.k8s.io", vec![]).await;
    let cols: Vec<&str> =
        tab["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(cols, ["Name", "Size", "Color"]);
    assert_eq!(tab["rows"][0]["cells"], json!(["a", 3, "red"]));

    // Status and scale subresources.
    let (code, v) = t.merge(&format!("{V1}/a"), json!({"spec": {"size": 4}, "status": {"phase": "Ready"}})).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!((v["spec"]["size"].as_i64(), v["status"].get("phase")), (Some(4), None), "main writes ignore status");
    let (code, v) = t.merge(&format!("{V1}/a/status"), json!({"status": {"phase": "Ready", "replicas": 1}})).await;
    assert_eq!((code, v["status"]["phase"].as_str()), (200, Some("Ready")), "{v}");
    let (code, s) = t.merge(&format!("{V1}/a/scale"), json!({"spec": {"replicas": 3}})).await;
    assert_eq!((code, &s["spec"]["replicas"], &s["status"]["replicas"]), (200, &json!(3), &json!(1)), "{s}");
    let (_, v) = t.get(&format!("{V1}/a")).await;
    assert_eq!(v["spec"]["replicas"], 3);

    // Watch.
    let mut w = t.watch(&format!("{V1}?watch=true"), "application/json").await;
    let e = w.next().await.unwrap();
    assert_eq!((e["type"].as_str(), e["object"]["kind"].as_str()), (Some("ADDED"), Some("Widget")));

    // RBAC applies: a user with no role may not read them.
    let alice = Who::Cert(Identity { user: "alice".into(), groups: vec!["system:authenticated".into()] });
    let (code, v) = t.call_as(&alice, Method::GET, V1, None).await;
    assert_eq!(code, 403, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("cannot list resource \"widgets\" in API group \"example.com\""),
        "{v}"
    );

    // A bad definition names its fields; a definition for a built-in group is refused.
    let mut bad = widget_crd();
    bad["metadata"]["name"] = json!("gadgets.example.com");
    bad["spec"]["versions"][1]["storage"] = json!(true);
    let (code, v) = t.post(CRDS, bad).await;
    assert_eq!(code, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("exactly one version marked as storage"), "{v}");
    let mut apps = widget_crd();
    apps["metadata"]["name"] = json!("widgets.apps");
    apps["spec"]["group"] = json!("apps");
    assert_eq!(t.post(CRDS, apps).await.0, 422);
    // Its names are fixed once made.
    let (code, _) = t.merge(&format!("{CRDS}/widgets.example.com"), json!({"spec": {"scope": "Cluster"}})).await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn cluster_scoped_definitions_and_preserved_fields() {
    let t = setup().await;
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "regions.geo.example.com"},
        "spec": {"group": "geo.example.com", "scope": "Cluster", "names": {"kind": "Region", "plural": "regions"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    assert_eq!(t.post(CRDS, crd).await.0, 201);
    const REGIONS: &str = "/apis/geo.example.com/v1alpha1/regions";
    assert!(t.until(|| async { t.get(REGIONS).await.0 == 200 }).await, "never served");
    let region = json!({"apiVersion": "geo.example.com/v1alpha1", "kind": "Region", "metadata": {"name": "eu"},
        "spec": {"anything": {"goes": [1, 2]}}, "extra": "kept"});
    let (code, v) = t.post(REGIONS, region).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!((v["extra"].as_str(), v["metadata"].get("namespace")), (Some("kept"), None), "{v}");
    // Cluster-scoped: not under a namespace.
    assert_eq!(t.get("/apis/geo.example.com/v1alpha1/namespaces/default/regions/eu").await.0, 404);
    let (_, l) = t.get(REGIONS).await;
    assert_eq!(l["items"][0]["spec"]["anything"]["goes"], json!([1, 2]));
}

#[tokio::test]
async fn a_namespace_takes_its_custom_resources_with_it() {
    let t = setup().await;
    let mut crd = widget_crd();
    crd["metadata"]["name"] = json!("widgets.ns.example.com");
    crd["spec"]["group"] = json!("ns.example.com");
    assert_eq!(t.post(CRDS, crd).await.0, 201);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}});
    assert_eq!(t.post("/api/v1/namespaces", ns).await.0, 201);
    const TMP: &str = "/apis/ns.example.com/v1/namespaces/tmp/widgets";
    assert!(t.until(|| async { t.get(TMP).await.0 == 200 }).await, "never served");
    let mut w = widget("x", json!({"size": 1}));
    w["apiVersion"] = json!("ns.example.com/v1");
    assert_eq!(t.post(TMP, w).await.0, 201);
    assert!(matches!(t.call(Method::DELETE, "/api/v1/namespaces/tmp", None).await.0, 200 | 202));
    let gone = t.until(|| async { t.get(&format!("{TMP}/x")).await.0 == 404 }).await;
    assert!(gone, "the namespace's custom resource outlived it");
}
