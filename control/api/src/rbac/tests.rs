use super::*;
use std::collections::HashMap;

#[derive(Default)]
struct Store {
    cluster_roles: HashMap<String, Value>,
    roles: HashMap<(String, String), Value>,
    crbs: Vec<Value>,
    rbs: Vec<Value>,
}

impl Policies for Store {
    fn cluster_role(&self, name: &str) -> Option<Value> {
        self.cluster_roles.get(name).cloned()
    }
    fn role(&self, ns: &str, name: &str) -> Option<Value> {
        self.roles.get(&(ns.to_string(), name.to_string())).cloned()
    }
    fn cluster_role_bindings(&self) -> Vec<Value> {
        self.crbs.clone()
    }
    fn role_bindings(&self, ns: &str) -> Vec<Value> {
        self.rbs.iter().filter(|b| b["metadata"]["namespace"] == ns).cloned().collect()
    }
}

fn attrs(verb: &str, group: &str, resource: &str, ns: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        namespace: ns.into(),
        ..Default::default()
    }
}

fn store() -> Store {
    let mut s = Store::default();
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
    for r in roles {
        s.cluster_roles.insert(r["metadata"]["name"].as_str().unwrap().to_string(), r);
    }
    s.crbs = all.into_iter().filter(|o| o["kind"] == "ClusterRoleBinding").collect();
    s.roles.insert(
        ("team".into(), "cm-reader".into()),
        json!({"metadata": {"name": "cm-reader", "namespace": "team"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["settings"]}]}),
    );
    s.rbs.push(json!({"metadata": {"name": "alice-view", "namespace": "team"},
        "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "alice"}]}));
    s.rbs.push(json!({"metadata": {"name": "robot", "namespace": "team"},
        "roleRef": {"kind": "Role", "name": "cm-reader"}, "subjects": [{"kind": "ServiceAccount", "name": "bot"}]}));
    s.crbs.push(json!({"metadata": {"name": "ops-edit"},
        "roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "Group", "name": "ops"}]}));
    s
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
        assert_eq!(authorize(&s, who, &a).is_ok(), want, "{} {:?}", who.user, a);
    }
    // resourceNames: only the named object; a list never matches.
    let mut a = attrs("get", "", "configmaps", "team");
    a.name = "settings".into();
    assert!(authorize(&s, &bot, &a).is_ok());
    a.name = "other".into();
    assert!(authorize(&s, &bot, &a).is_err());
    assert!(authorize(&s, &bot, &attrs("list", "", "configmaps", "team")).is_err());
    // Subresources are their own resources; paths are matched as nonResourceURLs.
    let mut log = attrs("get", "", "pods", "team");
    log.subresource = "log".into();
    assert!(authorize(&s, &alice, &log).is_ok());
    log.subresource = "exec".into();
    assert!(authorize(&s, &alice, &log).is_err());
    let path = Attributes { verb: "get".into(), path: Some("/version".into()), ..Default::default() };
    assert!(authorize(&s, &alice, &path).is_ok());
    let metrics = Attributes { verb: "get".into(), path: Some("/metrics".into()), ..Default::default() };
    assert!(authorize(&s, &alice, &metrics).is_err());
    assert!(authorize(&s, &root, &metrics).unwrap().contains("cluster-admin"));
}

#[test]
fn aggregation_collects_labelled_roles() {
    let s = store();
    let view = Rule::of(&s.cluster_roles["view"]["rules"][0]);
    assert!(!view.verbs.is_empty(), "view got the rules of system:aggregate-to-view");
    let admin: Vec<Rule> = s.cluster_roles["admin"]["rules"].as_array().unwrap().iter().map(Rule::of).collect();
    let edit: Vec<Rule> = s.cluster_roles["edit"]["rules"].as_array().unwrap().iter().map(Rule::of).collect();
    assert!(covers(&admin, &edit).is_ok(), "admin ⊇ edit");
    assert!(covers(&edit, &admin).is_err(), "edit ⊉ admin (roles)");
    // A role of one's own, labelled aggregate-to-view, extends view.
    let mine = json!({"metadata": {"name": "crontabs-view", "labels": {aggregate_label("view"): "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["crontabs"], "verbs": ["get"]}]});
    let all = vec![s.cluster_roles["view"].clone(), mine.clone()];
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
