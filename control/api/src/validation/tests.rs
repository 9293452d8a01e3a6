use super::*;
use crate::resources::lookup;
use serde_json::json;

fn deploy() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "hello", "image": "file:///hello.wasm", "ports": [{"containerPort": 8080}]}]}
            }
        }
    })
}

fn set(mut v: Value, ptr: &str, new: Value) -> Value {
    let (parent, key) = ptr.rsplit_once('/').unwrap();
    let p = v.pointer_mut(parent).unwrap_or_else(|| panic!("{ptr}"));
    match p {
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = new,
        _ => p[key] = new,
    }
    v
}

#[test]
fn valid_deployment_passes() {
    assert_eq!(validate(lookup("deploy").unwrap(), &deploy(), FieldValidation::Strict).unwrap(), Vec::<String>::new());
}

/// Each invalid object is rejected, and the error names the field.
#[test]
fn invalid_objects_name_their_field() {
    let d = lookup("deploy").unwrap();
    let cases: Vec<(Value, u16, &str)> = vec![
        (set(deploy(), "/metadata/name", json!("Web_1")), 422, "metadata.name"),
        (set(deploy(), "/metadata/name", json!("")), 422, "metadata.name"),
        (set(deploy(), "/spec/replicas", json!("two")), 422, "spec.replicas"),
        (set(deploy(), "/spec/replicas", json!(-1)), 422, "spec.replicas"),
        (
            set(deploy(), "/spec/template/spec/containers/0/image", json!("")),
            422,
            "spec.template.spec.containers[0].image",
        ),
        (set(deploy(), "/spec/template/spec/containers", json!([])), 422, "spec.template.spec.containers"),
        (
            set(deploy(), "/spec/template/spec/containers/0/ports/0/containerPort", json!(70000)),
            422,
            "spec.template.spec.containers[0].ports[0].containerPort",
        ),
        (
            set(deploy(), "/spec/template/metadata/labels", json!({"app": "other"})),
            422,
            "spec.template.metadata.labels",
        ),
        (set(deploy(), "/spec/selector", json!({})), 422, "spec.selector"),
        (
            set(deploy(), "/spec/template/spec/containers/0", json!({"image": "x"})),
            422,
            "spec.template.spec.containers[0].name",
        ),
        (set(deploy(), "/metadata/labels", json!({"bad key": "x"})), 422, "metadata.labels"),
        (set(deploy(), "/spec/strategy", json!({"type": "Sometimes"})), 422, "spec.strategy.type"),
        (
            set(deploy(), "/spec/template/spec/containers/0/resources", json!({"limits": {"memory": "lots"}})),
            422,
            "spec.template.spec.containers[0].resources.limits[memory]",
        ),
        (
            set(deploy(), "/spec/template/metadata/annotations", json!({"wasmorch.io/max-concurrency": "0"})),
            422,
            "spec.template.metadata.annotations[wasmorch.io/max-concurrency]",
        ),
    ];
    for (obj, code, field) in cases {
        let err = validate(d, &obj, FieldValidation::Strict).expect_err(field);
        assert_eq!(err.code, code, "{field}: {}", err.message);
        assert!(err.causes.iter().any(|c| c.field == field), "{field} not named in {:?}", err.causes);
    }
}

/// A pod's serving annotations are checked on the pod and on every template.
#[test]
fn serving_annotations_are_checked_where_pods_are_written() {
    let bad = json!({"wasmorch.io/request-timeout": "2h"});
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": bad},
        "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"metadata": {"annotations": bad},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}});
    for (plural, obj, field) in [
        ("pods", pod, "metadata.annotations[wasmorch.io/request-timeout]"),
        ("jobs", job, "spec.template.metadata.annotations[wasmorch.io/request-timeout]"),
    ] {
        let err = validate(lookup(plural).unwrap(), &obj, FieldValidation::Strict).expect_err(plural);
        assert!(err.causes.iter().any(|c| c.field == field && c.message.contains("at most 3600s")), "{:?}", err.causes);
    }
}

#[test]
fn unknown_fields_by_mode() {
    let d = lookup("deploy").unwrap();
    let obj = set(deploy(), "/spec/replicaz", json!(3));
    let err = validate(d, &obj, FieldValidation::Strict).unwrap_err();
    assert_eq!(err.code, 400);
    assert!(err.message.contains("unknown field \"spec.replicaz\""), "{}", err.message);
    let w = validate(d, &obj, FieldValidation::Warn).unwrap();
    assert_eq!(w, vec!["unknown field \"spec.replicaz\"".to_string()]);
    assert!(validate(d, &obj, FieldValidation::Ignore).unwrap().is_empty());
}

#[test]
fn unknown_fields_are_named_at_any_depth_and_nulls_are_not_fields() {
    let d = lookup("deploy").unwrap();
    let obj = set(deploy(), "/spec/template/spec/containers/0/imagez", json!("x"));
    let obj =
        set(obj, "/spec/template/spec/containers/0/resources", json!({"limits": {"cpu": "1"}, "extra": {"a": 1}}));
    let obj = set(obj, "/metadata/labelz", json!(null));
    let obj = set(obj, "/statuz", json!(null));
    let w = validate(d, &obj, FieldValidation::Warn).unwrap();
    assert_eq!(
        w,
        vec![
            "unknown field \"spec.template.spec.containers[0].imagez\"".to_string(),
            "unknown field \"spec.template.spec.containers[0].resources.extra\"".to_string(),
        ]
    );
    // Known fields, empty or null, are not unknown.
    let obj = set(deploy(), "/spec/template/spec/volumes", json!([]));
    let obj = set(obj, "/metadata/finalizers", json!(null));
    assert!(validate(d, &obj, FieldValidation::Strict).unwrap().is_empty());
}

#[test]
fn other_kinds() {
    let svc =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 0}]}});
    let e = validate(lookup("svc").unwrap(), &svc, FieldValidation::Strict).unwrap_err();
    assert!(e.causes.iter().any(|c| c.field == "spec.ports[0].port"));

    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let e = validate(lookup("job").unwrap(), &job, FieldValidation::Strict).unwrap_err();
    assert!(e.causes.iter().any(|c| c.field == "spec.template.spec.restartPolicy"), "{:?}", e.causes);

    let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
        "spec": {"schedule": "61 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}});
    let e = validate(lookup("cj").unwrap(), &cj, FieldValidation::Strict).unwrap_err();
    assert!(e.causes.iter().any(|c| c.field == "spec.schedule"), "{:?}", e.causes);

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"../x": "y"}});
    let e = validate(lookup("cm").unwrap(), &cm, FieldValidation::Strict).unwrap_err();
    assert!(e.causes.iter().any(|c| c.field == "data[../x]"));

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}});
    let e = validate(lookup("secret").unwrap(), &secret, FieldValidation::Strict).unwrap_err();
    assert!(e.causes.iter().any(|c| c.field == "data.k"), "{:?}", e.causes);

    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}});
    assert!(validate(lookup("ns").unwrap(), &ns, FieldValidation::Strict).is_err());

    let wrong_kind = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}});
    assert_eq!(validate(lookup("cm").unwrap(), &wrong_kind, FieldValidation::Strict).unwrap_err().code, 400);
}

#[test]
fn cron_expressions() {
    for ok in ["*/5 * * * *", "0 3 * * mon-fri", "@hourly", "0,30 8-17 1 1-12 0"] {
        assert!(kinds::check_cron(ok).is_ok(), "{ok}");
    }
    for bad in ["* * * *", "60 * * * *", "*/0 * * * *", "@often"] {
        assert!(kinds::check_cron(bad).is_err(), "{bad}");
    }
}

fn netpol(spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

#[test]
fn network_policies_are_checked_field_by_field_and_defaulted() {
    let np = lookup("netpol").unwrap();
    let mut good = netpol(json!({
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {}},
                              {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                     "ports": [{"port": "pg"}, {"port": 7000, "endPort": 7010}]}],
        "egress": [{}]
    }));
    crate::defaults::apply(np.kind_id, &mut good);
    validate(np, &good, FieldValidation::Strict).unwrap();
    assert_eq!(good["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(good["spec"]["ingress"][0]["ports"][1]["protocol"], "TCP");

    let bad: Vec<(Value, &str)> = vec![
        (json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}), "spec.podSelector"),
        (json!({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}), "spec.ingress[0].ports[0].port"),
        (json!({"podSelector": {}, "ingress": [{"ports": [{"port": "Not_A_Name"}]}]}), "spec.ingress[0].ports[0].port"),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 79}]}]}),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": "web", "endPort": 90}]}]}),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}),
            "spec.ingress[0].ports[0].protocol",
        ),
        (json!({"podSelector": {}, "ingress": [{"from": [{}]}]}), "spec.ingress[0].from[0]"),
        (
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
            "spec.egress[0].to[0].ipBlock.cidr",
        ),
        (
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]}),
            "spec.egress[0].to[0].ipBlock.except[0]",
        ),
        (
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
            "spec.egress[0].to[0]",
        ),
        (json!({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]}), "spec.policyTypes[1]"),
        (json!({"podSelector": {}, "policyTypes": ["Egress", "Egress"]}), "spec.policyTypes[1]"),
    ];
    for (spec, field) in bad {
        let mut obj = netpol(spec.clone());
        crate::defaults::apply(np.kind_id, &mut obj);
        let e = validate(np, &obj, FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, 422, "{spec}");
        assert!(e.causes.iter().any(|c| c.field.starts_with(field)), "{spec}: {:?}", e.causes);
    }
    // A body of the wrong shape is refused, not a panic.
    let mut odd = netpol(json!("x"));
    crate::defaults::apply(np.kind_id, &mut odd);
    assert!(validate(np, &odd, FieldValidation::Strict).is_err());
}
