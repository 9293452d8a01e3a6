//! Unit tests of `objects`.

use super::*;
use wasmorch_api::resources::lookup;

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": data})
}

#[test]
fn create_fills_metadata() {
    let (o, w) =
        prepare_create(lookup("cm").unwrap(), Some("default"), cm(json!({"a": "b"})), FieldValidation::Strict).unwrap();
    assert!(w.is_empty());
    assert_eq!(o["metadata"]["generation"], 1);
    assert_eq!(o["metadata"]["uid"].as_str().unwrap().len(), 36);
    let mut g = cm(json!({}));
    g["metadata"] = json!({"generateName": "web-"});
    let (o, _) = prepare_create(lookup("cm").unwrap(), Some("default"), g, FieldValidation::Strict).unwrap();
    assert!(object::name(&o).starts_with("web-") && object::name(&o).len() == 9);
    assert_eq!(
        prepare_create(lookup("cm").unwrap(), Some("other"), cm(json!({})), FieldValidation::Strict).unwrap_err().code,
        400
    );
}

#[test]
fn generation_moves_on_spec_only_and_stale_rv_conflicts() {
    let d = lookup("deploy").unwrap();
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let (mut cur, _) = prepare_create(d, Some("default"), dep, FieldValidation::Strict).unwrap();
    object::set_resource_version(&mut cur, 5);
    let mut new = cur.clone();
    new["metadata"]["labels"] = json!({"x": "y"});
    let Outcome::Put(o) = prepare_update(d, &cur, new.clone(), None, FieldValidation::Strict).unwrap().0 else {
        panic!()
    };
    assert_eq!(o["metadata"]["generation"], 1, "metadata change keeps generation");
    new["spec"]["replicas"] = json!(4);
    let Outcome::Put(o) = prepare_update(d, &cur, new.clone(), None, FieldValidation::Strict).unwrap().0 else {
        panic!()
    };
    assert_eq!(o["metadata"]["generation"], 2);
    new["status"] = json!({"replicas": 9});
    let Outcome::Put(o) = prepare_update(d, &cur, new.clone(), None, FieldValidation::Strict).unwrap().0 else {
        panic!()
    };
    assert!(o.get("status").is_none(), "main resource ignores status");
    new["metadata"]["resourceVersion"] = json!("4");
    assert_eq!(prepare_update(d, &cur, new.clone(), None, FieldValidation::Strict).unwrap_err().code, 409);
    new["metadata"]["resourceVersion"] = json!("5");
    new["spec"]["selector"] = json!({"matchLabels": {"a": "b", "c": "d"}});
    new["spec"]["template"]["metadata"]["labels"] = json!({"a": "b", "c": "d"});
    let e = prepare_update(d, &cur, new, None, FieldValidation::Strict).unwrap_err();
    assert!(e.causes.iter().any(|c| c.field == "spec.selector"), "{e:?}");
}

#[test]
fn unknown_fields_are_judged_once_on_the_body_of_every_write() {
    let r = lookup("cm").unwrap();
    let mut body = cm(json!({"a": "b"}));
    body["bogus"] = json!(1);
    let e = prepare_create(r, Some("default"), body.clone(), FieldValidation::Strict).unwrap_err();
    assert!(e.code == 400 && e.message.contains("unknown field \"bogus\""), "{e:?}");
    let (cur, w) = prepare_create(r, Some("default"), body.clone(), FieldValidation::Warn).unwrap();
    assert_eq!(w, ["unknown field \"bogus\""], "one warning, not one per check");
    let (_, w) = prepare_update(r, &cur, body.clone(), None, FieldValidation::Warn).unwrap();
    assert_eq!(w, ["unknown field \"bogus\""]);
    assert!(prepare_update(r, &cur, body.clone(), None, FieldValidation::Ignore).unwrap().1.is_empty());
    // A type error is found before anything reads the field, defaults included.
    let mut typed = cm(json!({"a": 1}));
    typed["metadata"]["name"] = json!("t");
    let e = prepare_create(r, Some("default"), typed, FieldValidation::Ignore).unwrap_err();
    assert!(e.causes.iter().any(|c| c.field.starts_with("data")), "{e:?}");
    // Status writes are judged on their body too.
    let d = lookup("deploy").unwrap();
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let (cur, _) = prepare_create(d, Some("default"), dep, FieldValidation::Strict).unwrap();
    let mut st = cur.clone();
    st["status"] = json!({"replicas": 1, "bogus": true});
    let (out, w) = prepare_update(d, &cur, st, Some("status"), FieldValidation::Warn).unwrap();
    assert_eq!(w, ["unknown field \"status.bogus\""]);
    let Outcome::Put(out) = out else { panic!() };
    assert_eq!(out["status"]["replicas"], 1);
}

#[test]
fn finalizers_hold_deletion() {
    let r = lookup("cm").unwrap();
    let (mut cur, _) = prepare_create(r, Some("default"), cm(json!({})), FieldValidation::Strict).unwrap();
    cur["metadata"]["finalizers"] = json!(["example.com/hold"]);
    let Outcome::Put(deleting) = prepare_delete(r, &cur, &DeleteOptions::default()).unwrap() else { panic!("held") };
    assert!(object::is_deleting(&deleting));
    let mut released = deleting.clone();
    released["metadata"]["finalizers"] = json!([]);
    assert!(matches!(
        prepare_update(r, &deleting, released, None, FieldValidation::Strict).unwrap().0,
        Outcome::Delete
    ));
    let bad = DeleteOptions { uid: Some("nope".into()), ..Default::default() };
    assert_eq!(prepare_delete(r, &cur, &bad).unwrap_err().code, 409);
}

#[test]
fn patches() {
    let cur = json!({"a": 1, "b": {"c": 2}});
    assert_eq!(
        apply_patch(&cur, "application/merge-patch+json", &json!({"b": {"c": null, "d": 3}})).unwrap(),
        json!({"a": 1, "b": {"d": 3}})
    );
    assert_eq!(
        apply_patch(&cur, "application/json-patch+json", &json!([{"op": "replace", "path": "/a", "value": 5}]))
            .unwrap()["a"],
        5
    );
    assert_eq!(
        apply_patch(&cur, "application/json-patch+json", &json!([{"op": "test", "path": "/a", "value": 9}]))
            .unwrap_err()
            .code,
        422
    );
    assert_eq!(
        apply_patch(&cur, "application/strategic-merge-patch+json", &json!({"b": {"c": null}})).unwrap(),
        json!({"a": 1, "b": {}})
    );
    assert_eq!(apply_patch(&cur, "application/apply-patch+yaml", &json!({"b": {"d": 4}})).unwrap()["b"]["d"], 4);
    assert_eq!(apply_patch(&cur, "application/cbor-patch", &json!({})).unwrap_err().code, 415);
}

#[test]
fn a_status_write_checks_its_status_and_all_else_it_changes() {
    let res = lookup("pods").unwrap();
    let (cur, _) = prepare_create(
        res,
        Some("default"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        FieldValidation::Strict,
    )
    .unwrap();
    let write = |change: &dyn Fn(&mut Value), mode| {
        let mut new = cur.clone();
        change(&mut new);
        prepare_update_by(res, &cur, new, Some("status"), mode, &WriteOpts::default())
    };
    // Only the status is new: it alone is round-tripped, and it is stored.
    let new_status = |o: &mut Value| o["status"] = json!({"phase": "Running"});
    assert!(status_only_of(&cur, new_status).is_some());
    match write(&new_status, FieldValidation::Strict).unwrap().0 {
        Outcome::Put(o) => assert_eq!(o["status"]["phase"], "Running"),
        Outcome::Delete => panic!("a status write deleted"),
    }
    // A wrongly typed status, or an unknown field in it, is still refused.
    let bad_type = write(&|o: &mut Value| o["status"] = json!({"phase": 7}), FieldValidation::Strict);
    assert_eq!(bad_type.unwrap_err().code, 422);
    let unknown =
        write(&|o: &mut Value| o["status"] = json!({"phase": "Running", "bogus": 1}), FieldValidation::Strict);
    assert!(unknown.unwrap_err().message.contains("bogus"));
    // An older resourceVersion sent along is the same object (refused as a conflict below).
    assert!(status_only_of(&cur, |o| o["metadata"]["resourceVersion"] = json!("1")).is_some());
    // Anything else that changes is checked as before: an unknown field in the spec.
    let spec = |o: &mut Value| o["spec"]["bogus"] = json!(1);
    assert!(status_only_of(&cur, spec).is_none());
    assert!(write(&spec, FieldValidation::Strict).unwrap_err().message.contains("bogus"));
    assert!(status_only(None, &cur, &cur).is_none(), "not a status write");
}

fn status_only_of(cur: &Value, change: impl Fn(&mut Value)) -> Option<Value> {
    let mut new = cur.clone();
    change(&mut new);
    status_only(Some("status"), cur, &new)
}

/// A status write stores the stored object with the status sent, whatever else its body
/// changed, added or left out.
#[test]
fn a_status_write_keeps_all_but_the_status_of_the_stored_object() {
    let cur = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}});
    let mut new = cur.clone();
    new["spec"]["nodeName"] = json!("n2");
    new["metadata"]["labels"]["a"] = json!("c");
    new["extra"] = json!(1);
    new.as_object_mut().unwrap().remove("kind");
    new["status"] = json!({"phase": "Running"});
    let mut want = cur.clone();
    want["status"] = json!({"phase": "Running"});
    assert_eq!(with_status_of(&cur, new), want);
    let mut no_status = cur.clone();
    no_status.as_object_mut().unwrap().remove("status");
    want["status"] = Value::Null;
    assert_eq!(with_status_of(&cur, no_status), want, "a body without status clears it, as before");
    assert_eq!(with_status_of(&cur, json!("not an object"))["spec"], cur["spec"]);
}

/// A status write judges the status only: a stored object that a rule added since would
/// refuse still has its status written, and its other fields stay as stored.
#[test]
fn status_writes_are_not_stopped_by_rules_added_after_the_object_was_stored() {
    let p = lookup("pods").unwrap();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let (mut cur, _) = prepare_create(p, Some("default"), pod, FieldValidation::Strict).unwrap();
    // As stored before the API server checked the annotation.
    cur["metadata"]["annotations"] = json!({"wasmorch.io/max-concurrency": "0"});
    object::set_resource_version(&mut cur, 7);
    let mut new = cur.clone();
    assert!(
        prepare_update(p, &cur, new.clone(), None, FieldValidation::Strict).is_err(),
        "a spec write is judged whole"
    );
    new["status"] = json!({"phase": "Running"});
    for (body, what) in
        [(new.clone(), "the stored object with a status"), (json!({"status": {"phase": "Running"}}), "a status alone")]
    {
        let Outcome::Put(o) = prepare_update(p, &cur, body, Some("status"), FieldValidation::Strict).unwrap().0 else {
            panic!("{what}")
        };
        assert_eq!(o["status"]["phase"], "Running", "{what}");
        assert_eq!(o["spec"], cur["spec"], "{what}");
        assert_eq!(o["metadata"]["annotations"], cur["metadata"]["annotations"], "{what}");
    }
}
