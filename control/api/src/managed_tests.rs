//! Unit tests of `managed`.

use super::*;

fn deploy(replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"a": "b"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}})
}

#[test]
fn sets_use_merge_keys_from_the_upstream_markers() {
    let s = field_set(&deploy(1, "i"));
    let c = &s["f:spec"]["f:template"]["f:spec"]["f:containers"][r#"k:{"name":"c"}"#];
    assert_eq!(c, &json!({".": {}, "f:image": {}, "f:name": {}}));
    assert_eq!(s["f:metadata"], json!({"f:labels": {"f:a": {}}}));
    let svc = json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}});
    assert!(field_set(&svc)["f:spec"]["f:ports"].get(r#"k:{"port":80,"protocol":"TCP"}"#).is_some());
}

#[test]
fn updates_own_the_same_fields_as_when_every_field_is_compared() {
    let now = "2026-01-01T00:00:00Z";
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "d", "uid": "u", "resourceVersion": "1", "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "r"}]},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 8080}]}]}});
    type Step = (&'static str, Option<&'static str>, fn(&mut Value));
    let steps: Vec<Step> = vec![
        ("kubelet", Some("status"), |o| {
            o["status"] = json!({"phase": "Running", "podIP": "10.0.0.1"});
            o["metadata"]["resourceVersion"] = json!("2");
        }),
        ("scheduler", Some("binding"), |o| o["spec"]["nodeName"] = json!("n1")),
        ("g", None, |o| {
            o["metadata"]["managedFields"] = json!([{"manager": "client", "operation": "Update",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}}}]);
        }),
        ("h", None, |o| o["metadata"]["managedFields"][0]["fieldsV1"] = json!({})),
        ("b", None, |o| o["metadata"]["labels"]["x"] = json!("y")),
        ("b", None, |o| o["metadata"]["annotations"] = json!({"k": "v"})),
        ("c", None, |o| {
            o["metadata"].as_object_mut().unwrap().remove("annotations");
        }),
        ("c", None, |o| o["metadata"]["finalizers"] = json!(["f"])),
        ("d", None, |o| o["spec"]["containers"][0]["image"] = json!("j")),
        ("d", None, |o| {
            let c = o["spec"]["containers"].as_array_mut().unwrap();
            c.push(json!({"name": "side", "image": "s"}));
            c.reverse();
        }),
        ("e", None, |o| o["data"] = json!({"extra": "top-level field unknown to the type"})),
        ("e", None, |o| {
            o.as_object_mut().unwrap().remove("data");
        }),
        ("f", None, |o| {
            o["spec"].as_object_mut().unwrap().remove("nodeName");
            o["status"]["phase"] = json!("Failed");
        }),
        ("h", None, |o| o["apiVersion"] = json!("v2")),
        ("i", None, |o| {
            o["metadata"]["uid"] = json!("v");
            o["metadata"]["generation"] = json!(3);
        }),
        ("i", None, |o| {
            o["metadata"].as_object_mut().unwrap().remove("managedFields");
        }),
    ];
    let mut live = pod;
    record_update_everywhere(None, &mut live, "creator", now, None);
    let mut most = 0;
    for (i, (manager, sub, change)) in steps.into_iter().enumerate() {
        let mut next = live.clone();
        change(&mut next);
        let (mut pruned, mut whole) = (next.clone(), next);
        record_update(Some(&live), &mut pruned, manager, now, sub);
        record_update_everywhere(Some(&live), &mut whole, manager, now, sub);
        assert_eq!(pruned, whole, "step {i} by {manager}");
        live = whole;
        most = most.max(live.pointer("/metadata/managedFields").and_then(Value::as_array).map_or(0, Vec::len));
    }
    // The steps moved ownership between managers (so the comparisons compared something).
    assert!(most >= 4, "{most}");
}

#[test]
fn random_writes_own_the_same_fields_as_when_every_field_is_compared() {
    let now = "2026-01-01T00:00:00Z";
    // Places a write may touch (existing or not) and values it may put there.
    let places = [
        "/metadata/labels/app",
        "/metadata/labels/x",
        "/metadata/annotations",
        "/metadata/annotations/k",
        "/metadata/finalizers",
        "/metadata/ownerReferences",
        "/metadata/resourceVersion",
        "/spec/nodeName",
        "/spec/containers/0/image",
        "/spec/containers/0/env",
        "/spec/containers/0/ports/0/containerPort",
        "/spec/containers/0/ports",
        "/spec/containers/1",
        "/spec/containers",
        "/spec/tolerations",
        "/spec/volumes/0/configMap/name",
        "/spec/nodeSelector/zone",
        "/status/phase",
        "/status/conditions",
        "/data/extra",
        "/spec",
        "/metadata/labels",
    ];
    let values = [
        json!("a"),
        json!("b"),
        json!(3),
        json!({}),
        json!({"x": "y"}),
        json!(["f", "g"]),
        json!([]),
        json!([{"name": "c", "image": "k"}, {"name": "d", "image": "l"}]),
        json!([{"key": "t", "operator": "Exists"}]),
        json!({"name": "c", "image": "m"}),
        Value::Null,
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut live = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "d", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 8080}]}],
            "volumes": [{"name": "v", "configMap": {"name": "cm"}}]}});
    record_update_everywhere(None, &mut live, "creator", now, None);
    let managers = ["a", "b", "c"];
    let mut moved = 0;
    for round in 0..600 {
        let mut next_obj = live.clone();
        for _ in 0..1 + next(3) {
            let place = places[next(places.len())];
            let (parent, key) = place.rsplit_once('/').unwrap();
            let value = values[next(values.len())].clone();
            match next_obj.pointer_mut(parent) {
                Some(Value::Object(m)) if value.is_null() => {
                    m.remove(key);
                }
                Some(Value::Object(m)) => {
                    m.insert(key.to_string(), value);
                }
                Some(Value::Array(a)) => match key.parse::<usize>() {
                    Ok(i) if i < a.len() && !value.is_null() => a[i] = value,
                    Ok(i) if i < a.len() => {
                        a.remove(i);
                    }
                    _ => a.push(value),
                },
                _ => {}
            }
        }
        let (manager, sub) = (managers[next(3)], [None, Some("status")][next(2)]);
        let (mut pruned, mut whole) = (next_obj.clone(), next_obj);
        record_update(Some(&live), &mut pruned, manager, now, sub);
        record_update_everywhere(Some(&live), &mut whole, manager, now, sub);
        assert_eq!(pruned, whole, "round {round} by {manager}, from {live}");
        moved += usize::from(whole["metadata"]["managedFields"] != live["metadata"]["managedFields"]);
        live = whole;
    }
    assert!(moved > 100, "{moved} of 600 writes changed ownership");
}

#[test]
fn a_create_owns_exactly_what_an_update_from_nothing_would() {
    let now = "2026-01-01T00:00:00Z";
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "annotations": {"k": "v"}},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}});
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
    let bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "empty"}});
    for obj in [deploy(2, "i"), svc, cm, bare] {
        let (mut created, mut from_nothing) = (obj.clone(), obj);
        record_update(None, &mut created, "m", now, None);
        record_update(Some(&json!({})), &mut from_nothing, "m", now, None);
        assert_eq!(created, from_nothing);
        let owned = created.pointer("/metadata/managedFields/0/fieldsV1").cloned();
        assert_eq!(owned.is_some(), created["metadata"]["name"] != "empty", "{created}");
    }
}

#[test]
fn updates_own_what_they_change_and_nothing_else() {
    let now = "2026-01-01T00:00:00Z";
    let mut live = deploy(1, "i");
    record_update(None, &mut live, "a", now, None);
    let owned_by = |o: &Value, who: &str| {
        o["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == who)
            .map(|e| e["fieldsV1"].clone())
    };
    let sets = |o: &Value| o["metadata"]["managedFields"].as_array().unwrap().len();

    // A status write (and server-set metadata) changes no one's fields.
    let mut status = live.clone();
    status["status"] = json!({"replicas": 1});
    status["metadata"]["resourceVersion"] = json!("7");
    record_update(Some(&live), &mut status, "node", now, Some("status"));
    assert_eq!(status["metadata"]["managedFields"], live["metadata"]["managedFields"]);

    // A new label is b's alone; a keeps the rest.
    let mut labelled = status.clone();
    labelled["metadata"]["labels"]["x"] = json!("y");
    record_update(Some(&status), &mut labelled, "b", now, None);
    assert_eq!(owned_by(&labelled, "b"), Some(json!({"f:metadata": {"f:labels": {"f:x": {}}}})));
    assert_eq!(owned_by(&labelled, "a"), owned_by(&live, "a"));

    // Changing a's image makes it b's; removing replicas takes it from a's set.
    let mut changed = labelled.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("j");
    changed["spec"].as_object_mut().unwrap().remove("replicas");
    record_update(Some(&labelled), &mut changed, "b", now, None);
    let a = owned_by(&changed, "a").unwrap();
    let b = owned_by(&changed, "b").unwrap();
    let image: Path =
        ["f:spec", "f:template", "f:spec", "f:containers", r#"k:{"name":"c"}"#, "f:image"].map(String::from).to_vec();
    assert!(contains(&b, &image) && !contains(&a, &image), "a {a} b {b}");
    assert!(!contains(&a, &["f:spec".into(), "f:replicas".into()]), "{a}");
    assert!(contains(&a, &["f:spec".into(), "f:selector".into()]), "{a}");
    assert_eq!(sets(&changed), 2);
}

#[test]
fn apply_conflicts_force_and_removal() {
    let now = "2026-01-01T00:00:00Z";
    let mut live = deploy(1, "i");
    record_update(None, &mut live, "creator", now, None);
    // Another manager's apply that changes replicas conflicts with the creator.
    let cfg =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
    let mut merged = live.clone();
    merged["spec"]["replicas"] = json!(3);
    let err = apply(&live, &cfg, merged.clone(), "ssa", false, now).unwrap_err();
    assert_eq!(
        conflict_message(&err),
        "Apply failed with 1 conflict: conflict with \"creator\" using apps/v1: .spec.replicas"
    );
    let forced = apply(&live, &cfg, merged, "ssa", true, now).unwrap();
    let mf = forced["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(mf[0]["manager"], "ssa");
    assert!(!contains(&mf[1]["fieldsV1"], &["f:spec".into(), "f:replicas".into()]));
    // Applying again without a label it applied before removes the label (no one else owns it).
    let cfg2 = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"x": "y"}}, "spec": {"replicas": 3}});
    let mut m2 = forced.clone();
    m2["metadata"]["labels"]["x"] = json!("y");
    let with_label = apply(&forced, &cfg2, m2, "ssa", false, now).unwrap();
    let m3 = with_label.clone();
    let without = apply(&with_label, &cfg, m3, "ssa", false, now).unwrap();
    assert!(without["metadata"]["labels"].get("x").is_none(), "{}", without["metadata"]);
    assert_eq!(without["metadata"]["labels"]["a"], "b", "owned by the creator: kept");
}
