//! Server-side apply: field ownership, conflicts, kube-rs's apply and the migration from
//! client-side apply.

use super::*;

/// Server-side apply with field ownership, with the real kubectl: conflicts with another
/// manager (409 naming the field and manager), --force-conflicts, a dropped field removed, a
/// keyed list (containers by name, env by name) shared between two appliers.
#[test]
fn server_side_apply_tracks_field_ownership() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let f = dir.path().join("d.yaml");
    let write = |labels: &str, env: &str| {
        std::fs::write(
            &f,
            format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {labels}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n        - name: web\n          image: wasmorch.local/hello-http:1.0\n{env}"),
        )
        .unwrap();
    };
    let file = f.to_str().unwrap().to_string();
    let apply = |extra: &[&str]| {
        let mut args = vec!["apply", "--server-side", "--field-manager=alice", "-f", &file];
        args.extend_from_slice(extra);
        kubectl(&c, &args)
    };
    write("{a: '1', b: '2'}", "          env: [{name: X, value: '1'}]\n");
    assert!(apply(&[]).status.success());
    let managers = ok(
        &c,
        &["get", "deploy", "web", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}"],
    );
    // The deployment controller's own writes (the revision annotation) are its own.
    assert_eq!(managers.split(' ').next(), Some("alice"), "{managers}");

    assert!(
        ok(&c, &["patch", "deploy", "web", "--type=merge", "-p", r#"{"spec":{"replicas":3}}"#]).contains("patched")
    );
    let o = apply(&[]);
    assert!(!o.status.success(), "a conflicting apply must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(r#"conflict with "kubectl-patch""#) && err.contains(".spec.replicas"), "{err}");
    assert_eq!(ok(&c, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "3", "nothing changed");
    assert!(apply(&["--force-conflicts"]).status.success());
    assert_eq!(ok(&c, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "2");

    // Dropping a label and an env entry from the configuration removes them.
    write("{a: '1'}", "");
    let o = apply(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ok(&c, &["get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"]), r#"{"a":"1"}"#);
    assert_eq!(ok(&c, &["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].env}"]), "");

    // A second applier adds an env entry to the same container (merged by name): both kept.
    let bob = dir.path().join("bob.yaml");
    std::fs::write(&bob, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          env: [{name: 'Y', value: '2'}]\n").unwrap();
    let o = kubectl(&c, &["apply", "--server-side", "--field-manager=bob", "-f", bob.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let containers = ok(
        &c,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={range .spec.template.spec.containers[*]}{.name} {.image} {.env[*].name};{end}",
        ],
    );
    assert_eq!(containers, "web wasmorch.local/hello-http:1.0 Y;");
    let managers = ok(
        &c,
        &["get", "deploy", "web", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}"],
    );
    assert!(managers.contains("alice") && managers.contains("bob"), "{managers}");
    assert!(ok(&c, &["rollout", "status", "deployment/web", "--timeout=60s"]).ends_with("successfully rolled out\n"));
}

/// kube-rs `Patch::Apply`: ownership, a conflict between two managers (409), force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_server_side_apply() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let client = common::kube_client(&c.kubeconfig()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cfg = |v: &str| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": v}});
    let a = cms.patch("ssa", &PatchParams::apply("one"), &Patch::Apply(cfg("1"))).await.unwrap();
    let mf = a.metadata.managed_fields.unwrap();
    assert_eq!((mf[0].manager.as_deref(), mf[0].operation.as_deref()), (Some("one"), Some("Apply")));
    let err = cms.patch("ssa", &PatchParams::apply("two"), &Patch::Apply(cfg("2"))).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(s.message.contains(r#"conflict with "one""#) && s.message.contains(".data.k"), "{}", s.message);
        }
        e => panic!("{e}"),
    }
    let b = cms.patch("ssa", &PatchParams::apply("two").force(), &Patch::Apply(cfg("2"))).await.unwrap();
    assert_eq!(b.data.unwrap()["k"], "2");
}

/// From client-side to server-side apply, as kubectl migrates: the second apply takes over
/// the fields the first recorded (no conflict), and a field later dropped from the file goes.
#[test]
fn client_side_apply_migrates_to_server_side() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let f = dir.path().join("cm.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mig\ndata:\n  a: '1'\n  b: '2'\n").unwrap();
    let file = f.to_str().unwrap();
    assert_eq!(ok(&c, &["apply", "-f", file]).trim(), "configmap/mig created");
    assert_eq!(ok(&c, &["apply", "--server-side", "-f", file]).trim(), "configmap/mig serverside-applied");
    std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mig\ndata:\n  a: '1'\n").unwrap();
    assert_eq!(ok(&c, &["apply", "--server-side", "-f", file]).trim(), "configmap/mig serverside-applied");
    assert_eq!(ok(&c, &["get", "cm", "mig", "-o", "jsonpath={.data}"]), r#"{"a":"1"}"#);
}
