use super::*;

fn attrs(verb: &str, group: &str, resource: &str, ns: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        namespace: ns.into(),
        ..Default::default()
    }
}

/// The default objects (aggregated as the controller would), plus a few of a team's.
fn objects() -> (Vec<Value>, Vec<Value>, Vec<Value>, Vec<Value>) {
    let all = defaults();
    // The aggregation controller's work, to a fixed point.
    let mut roles: Vec<Value> = all.iter().filter(|o| o["kind"] == "ClusterRole").cloned().collect();
    for _ in 0..3 {
        let snapshot = roles.clone();
        for r in roles.iter_mut() {
            if let Some(rules) = aggregated_rules(r, &snapshot) {
                r["rules"] = json!(rules);
            }
        }
    }
    let mut crbs: Vec<Value> = all.into_iter().filter(|o| o["kind"] == "ClusterRoleBinding").collect();
    crbs.push(json!({"metadata": {"name": "ops-edit"},
        "roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "Group", "name": "ops"}]}));
    let local = vec![json!({"metadata": {"name": "cm-reader", "namespace": "team"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["settings"]}]})];
    let rbs = vec![
        json!({"metadata": {"name": "alice-view", "namespace": "team"},
            "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "alice"}]}),
        json!({"metadata": {"name": "robot", "namespace": "team"},
            "roleRef": {"kind": "Role", "name": "cm-reader"}, "subjects": [{"kind": "ServiceAccount", "name": "bot"}]}),
    ];
    (roles, local, crbs, rbs)
}

fn store() -> Snapshot {
    let (cr, r, crb, rb) = objects();
    Snapshot::build(&cr, &r, &crb, &rb)
}

fn cluster_role(name: &str) -> Value {
    objects().0.into_iter().find(|r| r["metadata"]["name"] == name).unwrap()
}

#[test]
fn decisions_follow_the_bindings() {
    let s = store();
    let none: Vec<String> = vec!["system:authenticated".into()];
    let ops: Vec<String> = vec!["ops".into(), "system:authenticated".into()];
    let masters: Vec<String> = vec!["system:masters".into()];
    let alice = Subject { user: "alice", groups: &none };
    let bob = Subject { user: "bob", groups: &ops };
    let root = Subject { user: "root", groups: &masters };
    let bot = Subject { user: "system:serviceaccount:team:bot", groups: &none };
    let table: Vec<(&Subject, Attributes, bool)> = vec![
        (&alice, attrs("list", "", "pods", "team"), true),
        (&alice, attrs("get", "apps", "deployments", "team"), true),
        (&alice, attrs("create", "", "pods", "team"), false),
        (&alice, attrs("list", "", "pods", "other"), false),
        (&alice, attrs("list", "", "pods", ""), false),
        (&alice, attrs("get", "", "secrets", "team"), false),
        (&bob, attrs("create", "apps", "deployments", "anywhere"), true),
        (&bob, attrs("get", "", "secrets", "anywhere"), true),
        (&bob, attrs("create", "rbac.authorization.k8s.io", "roles", "x"), false),
        (&bob, attrs("delete", "", "nodes", ""), false),
        (&root, attrs("delete", "", "nodes", ""), true),
        (&alice, attrs("create", "authorization.k8s.io", "selfsubjectaccessreviews", ""), true),
    ];
    for (who, a, want) in table {
        assert_eq!(s.authorize(who, &a).is_ok(), want, "{} {:?}", who.user, a);
    }
    // resourceNames: only the named object; a list never matches.
    let mut a = attrs("get", "", "configmaps", "team");
    a.name = "settings".into();
    assert!(s.authorize(&bot, &a).is_ok());
    a.name = "other".into();
    assert!(s.authorize(&bot, &a).is_err());
    assert!(s.authorize(&bot, &attrs("list", "", "configmaps", "team")).is_err());
    // Subresources are their own resources; paths are matched as nonResourceURLs.
    let mut log = attrs("get", "", "pods", "team");
    log.subresource = "log".into();
    assert!(s.authorize(&alice, &log).is_ok());
    log.subresource = "exec".into();
    assert!(s.authorize(&alice, &log).is_err());
    let path = Attributes { verb: "get".into(), path: Some("/version".into()), ..Default::default() };
    assert!(s.authorize(&alice, &path).is_ok());
    let metrics = Attributes { verb: "get".into(), path: Some("/metrics".into()), ..Default::default() };
    assert!(s.authorize(&alice, &metrics).is_err());
    assert!(s.authorize(&root, &metrics).unwrap().contains("cluster-admin"));
}

#[test]
fn aggregation_collects_labelled_roles() {
    let view = Rule::of(&cluster_role("view")["rules"][0]);
    assert!(!view.verbs.is_empty(), "view got the rules of system:aggregate-to-view");
    let admin: Vec<Rule> = cluster_role("admin")["rules"].as_array().unwrap().iter().map(Rule::of).collect();
    let edit: Vec<Rule> = cluster_role("edit")["rules"].as_array().unwrap().iter().map(Rule::of).collect();
    assert!(covers(&admin, &edit).is_ok(), "admin ⊇ edit");
    assert!(covers(&edit, &admin).is_err(), "edit ⊉ admin (roles)");
    // A role of one's own, labelled aggregate-to-view, extends view.
    let mine = json!({"metadata": {"name": "crontabs-view", "labels": {aggregate_label("view"): "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["crontabs"], "verbs": ["get"]}]});
    let all = vec![cluster_role("view"), mine.clone()];
    let rules = aggregated_rules(&all[0], &all).unwrap();
    assert_eq!(rules, vec![mine["rules"][0].clone()]);
}

#[test]
fn escalation_is_judged_per_permission() {
    let r = |v: Value| Rule::of(&v);
    let held = vec![
        r(json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]})),
        r(json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]})),
    ];
    assert!(covers(&held, &[r(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}))]).is_ok());
    assert!(
        covers(&held, &[r(json!({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update"]}))])
            .is_ok()
    );
    let e = covers(&held, &[r(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}))]).unwrap_err();
    assert_eq!(e, "get on secrets");
    assert!(
        covers(&held, &[r(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}))]).is_err(),
        "a wildcard needs a wildcard"
    );
    assert!(covers(&held, &[r(json!({"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}))]).is_err());
    let named =
        vec![r(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["a"]}))];
    assert!(
        covers(
            &named,
            &[r(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["a"]}))]
        )
        .is_ok()
    );
    assert!(covers(&named, &[r(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}))]).is_err());
}
