use super::*;

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                 "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["size"], "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                        "replicas": {"type": "integer"},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                        "port": {"x-kubernetes-int-or-string": true},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                    "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}}}},
                {"name": "v1beta1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
            ]
        }
    })
}

fn version(v: &str) -> Version {
    definition(&crd()).into_iter().find(|x| x.res.version == v).unwrap()
}

#[test]
fn a_definition_serves_each_version_on_the_storage_keys() {
    let vs = definition(&crd());
    assert_eq!(vs.len(), 2);
    let v1 = &vs[0];
    assert_eq!(
        (v1.res.group, v1.res.kind, v1.res.plural, v1.res.namespaced),
        ("example.com", "Widget", "widgets", true)
    );
    assert!(v1.res.has_status && v1.res.has_scale);
    assert_eq!(v1.res.short_names, ["wd"]);
    assert!(std::ptr::eq(vs[1].storage, v1.res), "v1beta1 is stored as v1");
    // Loading again gives the same interned resources.
    assert!(std::ptr::eq(definition(&crd())[0].res, v1.res));
}

#[test]
fn defaults_pruning_and_validation() {
    let v = version("v1");
    let mut ok = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "a"},
        "spec": {"size": 3, "bogus": 1, "port": "http", "extra": {"anything": [1]}, "labels": {"x": "y"}}, "junk": true});
    let pruned = admit(&v, &mut ok).unwrap();
    assert_eq!(pruned, vec!["junk".to_string(), "spec.bogus".to_string()]);
    assert_eq!(ok["spec"]["color"], "red", "default applied");
    assert_eq!(ok["spec"]["extra"]["anything"], json!([1]), "preserved");
    assert!(ok.get("junk").is_none());

    let cases: Vec<(Value, &str)> = vec![
        (json!({"spec": {}}), "spec.size: Required value"),
        (
            json!({"spec": {"size": "3"}}),
            "spec.size: Invalid value: \"string\": spec.size in body must be of type integer",
        ),
        (json!({"spec": {"size": 0}}), "spec.size in body should be greater than or equal to 1"),
        (json!({"spec": {"size": 11}}), "spec.size in body should be less than or equal to 10"),
        (
            json!({"spec": {"size": 1, "color": "green"}}),
            "spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\"",
        ),
        (json!({"spec": {"size": 1, "name": "Abc"}}), "spec.name in body should match '^[a-z]+$'"),
        (json!({"spec": {"size": 1, "name": "abcdefghij"}}), "spec.name: Too long"),
        (json!({"spec": {"size": 1, "tags": ["a", "b", "c"]}}), "spec.tags: Too many"),
        (json!({"spec": {"size": 1, "tags": [1]}}), "spec.tags[0]: Invalid value: \"integer\""),
        (
            json!({"spec": {"size": 1, "port": true}}),
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer or string",
        ),
        (json!({"spec": {"size": 1, "labels": {"a": 1}}}), "spec.labels.a: Invalid value: \"integer\""),
    ];
    for (mut obj, want) in cases {
        let causes = admit(&v, &mut obj).expect_err(want);
        let text: Vec<String> = causes.iter().map(Cause::describe).collect();
        assert!(text.iter().any(|t| t.contains(want)), "{obj}: {text:?} lacks {want:?}");
    }
    // A schema that preserves everything prunes nothing.
    let mut loose = json!({"spec": {"anything": 1}, "other": 2});
    assert!(admit(&version("v1beta1"), &mut loose).unwrap().is_empty());
}

#[test]
fn printer_columns_and_paths() {
    let v = version("v1");
    let cols: Vec<String> = column_definitions(&v).iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(cols, ["Name", "Size"]);
    let obj = json!({"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "w"}}, "spec": {"size": 4, "tags": ["x"]}});
    assert_eq!(cells(&v, &obj, chrono::Utc::now()), vec![json!("a"), json!(4)]);
    assert_eq!(at_path(&obj, ".spec.tags[0]"), Some(&json!("x")));
    assert_eq!(at_path(&obj, ".metadata.labels['app.kubernetes.io/name']"), Some(&json!("w")));
    assert_eq!(at_path(&obj, ".spec.missing"), None);
    // Filters and wildcards take the first element that has the rest of the path.
    let st = json!({"status": {"conditions": [{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "False"}],
        "addresses": [{"type": "Hostname"}, {"value": "10.0.0.1"}, {"value": "10.0.0.2"}]}});
    assert_eq!(at_path(&st, ".status.conditions[?(@.type==\"Programmed\")].status"), Some(&json!("False")));
    assert_eq!(at_path(&st, ".status.conditions[?(@.type=='Accepted')].status"), Some(&json!("True")));
    assert_eq!(at_path(&st, ".status.conditions[?(@.type==\"Ready\")].status"), None);
    assert_eq!(at_path(&st, ".status.addresses[*].value"), Some(&json!("10.0.0.1")));
    assert_eq!(at_path(&st, ".status.conditions[?(@.type==\"x\""), None);
    let mut listed = v.clone();
    listed.columns[0].json_path = ".spec.tags".into();
    listed.columns[0].ty = "string".into();
    assert_eq!(cells(&listed, &obj, chrono::Utc::now())[1], json!("[\"x\"]"));
    let mut o = json!({});
    assert!(set_path(&mut o, ".spec.replicas", json!(3)));
    assert_eq!(o, json!({"spec": {"replicas": 3}}));
    let beta = version("v1beta1");
    let cols: Vec<String> = column_definitions(&beta).iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(cols, ["Name", "Age"]);
}

#[test]
fn definitions_are_checked() {
    let check = |crd: &Value| {
        let mut c = Vec::new();
        validate_definition(crd, &["apps", "metrics.k8s.io"], &mut c);
        c.iter().map(Cause::describe).collect::<Vec<_>>().join("; ")
    };
    assert_eq!(check(&crd()), "");
    let mut bad = crd();
    bad["metadata"]["name"] = json!("wrong");
    bad["spec"]["versions"][1]["storage"] = json!(true);
    bad["spec"]["scope"] = json!("Global");
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["name"]["pattern"] =
        json!("([");
    let text = check(&bad);
    for want in
        ["metadata.name", "exactly one version marked as storage", "spec.scope", "must be a valid regular expression"]
    {
        assert!(text.contains(want), "{text}");
    }
    let mut apps = crd();
    apps["spec"]["group"] = json!("apps");
    assert!(check(&apps).contains("spec.group"));
}
