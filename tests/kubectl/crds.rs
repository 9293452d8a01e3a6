//! CustomResourceDefinitions used from kubectl and as kube-rs dynamic objects.

use super::*;

/// A CustomResourceDefinition through kubectl as a user writes one: apply, `wait --for
/// condition=established`, objects applied and re-applied, `get` with the printer columns and
/// the short name, merge patch, `scale`, `explain`, a 422 naming the field, and deleting the
/// definition deletes its objects and stops serving the kind.
#[test]
fn kubectl_uses_a_custom_resource_definition() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--no-node"]);
    let write = |name: &str, text: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_string()
    };
    let crd = write(
        "crd.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      subresources:\n        status: {}\n        scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}\n      additionalPrinterColumns:\n        - {name: Size, type: integer, jsonPath: .spec.size}\n        - {name: Color, type: string, jsonPath: .spec.color}\n      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n            spec:\n              type: object\n              required: [size]\n              properties:\n                size: {type: integer, minimum: 1, maximum: 10, description: How big the widget is.}\n                color: {type: string, enum: [red, blue], default: red}\n                replicas: {type: integer}\n            status:\n              type: object\n              properties:\n                replicas: {type: integer}\n",
    );
    assert_eq!(
        ok(&c, &["apply", "-f", &crd]).trim(),
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"
    );
    ok(&c, &["wait", "--for", "condition=established", "crd/widgets.example.com", "--timeout=30s"]);
    let widget = |size: u32| {
        write(
            "w.yaml",
            &format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: first}}\nspec: {{size: {size}}}\n"),
        )
    };
    assert_eq!(ok(&c, &["apply", "-f", &widget(3)]).trim(), "widget.example.com/first created");
    assert_eq!(ok(&c, &["apply", "-f", &widget(4)]).trim(), "widget.example.com/first configured");
    let table = ok(&c, &["get", "widgets"]);
    let mut lines = table.lines();
    assert_eq!(lines.next().unwrap().split_whitespace().collect::<Vec<_>>(), ["NAME", "SIZE", "COLOR"], "{table}");
    assert_eq!(lines.next().unwrap().split_whitespace().collect::<Vec<_>>(), ["first", "4", "red"], "{table}");
    ok(&c, &["patch", "wd", "first", "--type", "merge", "-p", r#"{"spec":{"color":"blue"}}"#]);
    assert_eq!(ok(&c, &["scale", "wd", "first", "--replicas=2"]).trim(), "widget.example.com/first scaled");
    assert_eq!(ok(&c, &["get", "wd", "first", "-o", "jsonpath={.spec}"]), r#"{"color":"blue","replicas":2,"size":4}"#);
    let explain = ok(&c, &["explain", "widget.spec"]);
    assert!(explain.contains("How big the widget is."), "{explain}");
    let bad = write("bad.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 99}\n");
    let o = kubectl(&c, &["apply", "-f", &bad]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("spec.size: Invalid value: 99: spec.size in body should be less than or equal to 10"),
        "{err}"
    );

    // The wasmorch CLI learns the custom kinds from the server.
    let mine = c.ok(&["get", "wd"]);
    assert!(mine.starts_with("NAME") && mine.contains("SIZE") && mine.contains("first"), "{mine}");
    assert_eq!(c.ok(&["apply", "-f", &widget(6)]).trim(), "widget.example.com/first configured");
    assert_eq!(ok(&c, &["get", "wd", "first", "-o", "jsonpath={.spec.size}"]), "6");

    assert!(ok(&c, &["delete", "crd", "widgets.example.com", "--timeout=30s"]).contains("deleted"));
    let o = kubectl(&c, &["get", "--raw", "/apis/example.com/v1/namespaces/default/widgets"]);
    assert!(!o.status.success(), "the kind is no longer served");
    // Made again, it starts empty: its objects went with it.
    ok(&c, &["apply", "-f", &crd]);
    ok(&c, &["wait", "--for", "condition=established", "crd/widgets.example.com", "--timeout=30s"]);
    let ok_empty = common::eventually(std::time::Duration::from_secs(10), || {
        let o = kubectl(&c, &["get", "widgets", "-o", "name"]);
        o.status.success() && o.stdout.is_empty()
    });
    assert!(ok_empty, "{}", ok(&c, &["get", "widgets"]));
}

/// kube-rs with custom resources: the definition typed (k8s-openapi's
/// CustomResourceDefinition), its objects as `DynamicObject`s found through discovery:
/// create, list, merge patch, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_dynamic_objects_of_a_custom_resource() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
    use kube::discovery::{ApiResource, Discovery};

    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--no-node"]);
    let client = common::kube_client(&c.kubeconfig()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gizmos.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Gizmo", "plural": "gizmos"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    // Discovery finds the new group once the server serves it.
    let mut found = None;
    for _ in 0..200 {
        let d = Discovery::new(client.clone()).run().await.unwrap();
        if let Some((ar, _)) = d.groups().flat_map(|g| g.recommended_resources()).find(|(ar, _)| ar.kind == "Gizmo") {
            found = Some(ar);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let ar: ApiResource = found.expect("discovery lists Gizmo");
    assert_eq!((ar.group.as_str(), ar.version.as_str(), ar.plural.as_str()), ("example.com", "v1", "gizmos"));
    let gizmos: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut g = DynamicObject::new("g1", &ar);
    g.data = serde_json::json!({"spec": {"n": 1}});
    gizmos.create(&PostParams::default(), &g).await.unwrap();
    let patched = gizmos
        .patch("g1", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"n": 2}})))
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["n"], 2);
    let listed = gizmos.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    gizmos.delete("g1", &DeleteParams::default()).await.unwrap();
}
