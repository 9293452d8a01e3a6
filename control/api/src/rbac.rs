//! Role-based access control (`rbac.authorization.k8s.io/v1`), as pure rules: which policy
//! rules a subject holds through (Cluster)RoleBindings, whether they allow a request, and
//! whether one set of rules covers another (escalation: you cannot grant what you do not
//! hold). Kubernetes' semantics: rules only allow, never deny; `*` matches everything;
//! `resources` name `plural` or `plural/subresource`; `resourceNames` limits to named
//! objects; `nonResourceURLs` apply to paths (with a trailing `*` as a prefix).

use serde_json::{Value, json};

/// What a request asks, as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    pub verb: String,
    /// Empty for the core group.
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// Empty for cluster-scoped resources and for requests across all namespaces.
    pub namespace: String,
    /// Set instead of a resource for paths like `/metrics` or `/healthz`.
    pub path: Option<String>,
}

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub groups: Vec<String>,
    pub resources: Vec<String>,
    pub names: Vec<String>,
    pub urls: Vec<String>,
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

impl Rule {
    pub fn of(v: &Value) -> Rule {
        Rule {
            verbs: strings(v, "verbs"),
            groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            names: strings(v, "resourceNames"),
            urls: strings(v, "nonResourceURLs"),
        }
    }

    pub fn to_value(&self) -> Value {
        let mut o = json!({"verbs": self.verbs});
        if !self.urls.is_empty() {
            o["nonResourceURLs"] = json!(self.urls);
        } else {
            o["apiGroups"] = json!(self.groups);
            o["resources"] = json!(self.resources);
            if !self.names.is_empty() {
                o["resourceNames"] = json!(self.names);
            }
        }
        o
    }

    fn verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn resource(&self, resource: &str, sub: &str) -> bool {
        let full = if sub.is_empty() { resource.to_string() } else { format!("{resource}/{sub}") };
        self.resources.iter().any(|r| {
            r == "*" || *r == full || (sub.is_empty() && r == resource) || (!sub.is_empty() && *r == format!("*/{sub}"))
        })
    }

    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !self.verb(&a.verb) {
            return false;
        }
        if let Some(path) = &a.path {
            return self
                .urls
                .iter()
                .any(|u| u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p)));
        }
        self.groups.iter().any(|g| g == "*" || *g == a.group)
            && self.resource(&a.resource, &a.subresource)
            && (self.names.is_empty() || (!a.name.is_empty() && self.names.contains(&a.name)))
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
}

/// Whether a binding's subject list names `s` (a ServiceAccount as its user name
/// `system:serviceaccount:NS:NAME`; a subject's namespace defaults to the binding's).
pub fn binds(binding: &Value, s: &Subject<'_>) -> bool {
    let ns = binding.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    binding.get("subjects").and_then(Value::as_array).into_iter().flatten().any(|sub| {
        let name = sub.get("name").and_then(Value::as_str).unwrap_or("");
        match sub.get("kind").and_then(Value::as_str) {
            Some("User") => name == s.user,
            Some("Group") => s.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => {
                let sns = sub.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty()).unwrap_or(ns);
                s.user == format!("system:serviceaccount:{sns}:{name}")
            }
            _ => false,
        }
    })
}

/// What the authorizer reads: every ClusterRole, Role, ClusterRoleBinding and RoleBinding.
pub trait Policies {
    fn cluster_role(&self, name: &str) -> Option<Value>;
    fn role(&self, namespace: &str, name: &str) -> Option<Value>;
    fn cluster_role_bindings(&self) -> Vec<Value>;
    fn role_bindings(&self, namespace: &str) -> Vec<Value>;
}

fn rules_of(role: Option<Value>) -> Vec<Rule> {
    role.map(|r| r.get("rules").and_then(Value::as_array).into_iter().flatten().map(Rule::of).collect())
        .unwrap_or_default()
}

/// The rules `s` holds in `namespace` (cluster-wide ones only when it is empty), with the
/// binding that grants each (for the reason of a decision).
pub fn rules_for(p: &dyn Policies, s: &Subject<'_>, namespace: &str) -> Vec<(String, Rule)> {
    let mut out = Vec::new();
    for b in p.cluster_role_bindings() {
        if !binds(&b, s) || b.pointer("/roleRef/kind").and_then(Value::as_str) != Some("ClusterRole") {
            continue;
        }
        let role = b.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or("");
        let why = format!("ClusterRoleBinding \"{}\" of ClusterRole \"{role}\"", crate::object::name(&b));
        out.extend(rules_of(p.cluster_role(role)).into_iter().map(|r| (why.clone(), r)));
    }
    if !namespace.is_empty() {
        for b in p.role_bindings(namespace) {
            if !binds(&b, s) {
                continue;
            }
            let name = b.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or("");
            let (kind, role) = match b.pointer("/roleRef/kind").and_then(Value::as_str) {
                Some("ClusterRole") => ("ClusterRole", p.cluster_role(name)),
                Some("Role") => ("Role", p.role(namespace, name)),
                _ => continue,
            };
            let why = format!("RoleBinding \"{namespace}/{}\" of {kind} \"{name}\"", crate::object::name(&b));
            out.extend(rules_of(role).into_iter().map(|r| (why.clone(), r)));
        }
    }
    out
}

/// Whether `s` may do `a`; `Ok` carries the reason (the binding that allows it).
pub fn authorize(p: &dyn Policies, s: &Subject<'_>, a: &Attributes) -> Result<String, String> {
    rules_for(p, s, &a.namespace)
        .into_iter()
        .find(|(_, r)| r.allows(a))
        .map(|(why, _)| format!("allowed by {why}"))
        .ok_or_else(|| "no RBAC policy matched".to_string())
}

/// Whether `held` covers every permission of `wanted` (Kubernetes' escalation check: a
/// Role may only be written, or bound, by someone holding all it grants). Each wanted rule is
/// split into single (verb, group, resource, name) permissions, and each must be allowed.
pub fn covers(held: &[Rule], wanted: &[Rule]) -> Result<(), String> {
    for w in wanted {
        if !w.urls.is_empty() {
            for verb in &w.verbs {
                for url in &w.urls {
                    let a = Attributes { verb: verb.clone(), path: Some(url.clone()), ..Default::default() };
                    let ok = held.iter().any(|h| h.allows(&a) || (h.verb(verb) && h.urls.iter().any(|u| u == "*")));
                    if !ok {
                        return Err(format!("{verb} on {url}"));
                    }
                }
            }
            continue;
        }
        let names = if w.names.is_empty() { vec![String::new()] } else { w.names.clone() };
        for verb in &w.verbs {
            for group in &w.groups {
                for res in &w.resources {
                    for name in &names {
                        let (resource, sub) = res.split_once('/').unwrap_or((res.as_str(), ""));
                        let ok = held.iter().any(|h| {
                            h.verb(verb)
                                && (h.verbs.iter().any(|v| v == "*") || verb != "*")
                                && h.groups.iter().any(|g| g == "*" || g == group)
                                && (h.resources.iter().any(|r| r == "*")
                                    || (resource != "*" && h.resource(resource, sub)))
                                && (h.names.is_empty() || (!name.is_empty() && h.names.contains(name)))
                        });
                        if !ok {
                            let what = if group.is_empty() { res.clone() } else { format!("{res}.{group}") };
                            let named = if name.is_empty() { String::new() } else { format!(" named {name:?}") };
                            return Err(format!("{verb} on {what}{named}"));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Label that makes a ClusterRole's rules part of the default role of that name.
pub fn aggregate_label(role: &str) -> String {
    format!("rbac.authorization.k8s.io/aggregate-to-{role}")
}

/// The rules an aggregated ClusterRole should hold: those of every ClusterRole its
/// `aggregationRule.clusterRoleSelectors` select (itself excluded), in name order, without
/// repeats. `None` for a role that is not aggregated. Pure.
pub fn aggregated_rules(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    let selectors = role.pointer("/aggregationRule/clusterRoleSelectors")?.as_array()?;
    let me = crate::object::name(role);
    let parsed: Vec<crate::selector::LabelSelector> =
        selectors.iter().filter_map(|s| crate::selector::LabelSelector::from_object(s).ok()).collect();
    let mut picked: Vec<&Value> = all
        .iter()
        .filter(|r| crate::object::name(r) != me && parsed.iter().any(|s| s.matches(&crate::object::labels(r))))
        .collect();
    picked.sort_by_key(|r| crate::object::name(r).to_string());
    let mut out: Vec<Value> = Vec::new();
    for r in picked {
        for rule in r.get("rules").and_then(Value::as_array).into_iter().flatten() {
            if !out.contains(rule) {
                out.push(rule.clone());
            }
        }
    }
    Some(out)
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

/// The default ClusterRoles (Kubernetes' user-facing roles over what wasmorch serves) and the
/// binding that makes `system:masters` cluster admins.
pub fn defaults() -> Vec<Value> {
    let core_read = [
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "pods",
        "pods/log",
        "pods/status",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "services",
        "services/status",
        "events",
        "limitranges",
        "resourcequotas",
        "namespaces",
        "namespaces/status",
        "serviceaccounts",
    ];
    let core_write = [
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "pods",
        "pods/eviction",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "services",
        "serviceaccounts",
    ];
    let apps = [
        "daemonsets",
        "deployments",
        "deployments/scale",
        "deployments/rollback",
        "replicasets",
        "replicasets/scale",
        "statefulsets",
    ];
    let view_rules = vec![
        rule(&[""], &core_read, READ),
        rule(&["apps"], &apps, READ),
        rule(&["batch"], &["jobs", "cronjobs"], READ),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], READ),
        rule(&["policy"], &["poddisruptionbudgets"], READ),
        rule(&["networking.k8s.io"], &["networkpolicies", "ingresses"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(&["metrics.k8s.io"], &["pods", "nodes"], READ),
    ];
    let edit_rules = vec![
        rule(&[""], &core_write, WRITE),
        rule(&[""], &["secrets"], &["get", "list", "watch", "create", "delete", "deletecollection", "patch", "update"]),
        rule(&["apps"], &apps, WRITE),
        rule(&["batch"], &["jobs", "cronjobs"], WRITE),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(&["networking.k8s.io"], &["networkpolicies", "ingresses"], WRITE),
    ];
    let admin_rules = vec![
        rule(
            &["rbac.authorization.k8s.io"],
            &["roles", "rolebindings"],
            &["get", "list", "watch", "create", "delete", "deletecollection", "patch", "update"],
        ),
        rule(&["authorization.k8s.io"], &["localsubjectaccessreviews"], &["create"]),
    ];
    let role = |name: &str, rules: Vec<Value>, aggregate: &[&str]| {
        let mut labels = serde_json::Map::new();
        labels.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
        for a in aggregate {
            labels.insert(aggregate_label(a), json!("true"));
        }
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels,
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": rules})
    };
    // view, edit and admin are aggregated (their rules are the union of the ClusterRoles
    // labelled aggregate-to-ROLE, kept by the aggregation controller), as in Kubernetes.
    let aggregated = |name: &str, to: &[&str]| {
        let mut r = role(name, vec![], to);
        r["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {aggregate_label(name): "true"}}]});
        r
    };
    let basic = vec![
        rule(&["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"], &["create"]),
        json!({"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/version", "/version/", "/openapi", "/openapi/*"], "verbs": ["get"]}),
    ];
    vec![
        role(
            "cluster-admin",
            vec![
                json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
                json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
            ],
            &[],
        ),
        aggregated("admin", &[]),
        aggregated("edit", &["admin"]),
        aggregated("view", &["edit"]),
        role("system:aggregate-to-admin", admin_rules, &["admin"]),
        role("system:aggregate-to-edit", edit_rules, &["edit"]),
        role("system:aggregate-to-view", view_rules, &["view"]),
        role("system:basic-user", basic, &[]),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:basic-user", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:basic-user"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]}),
    ]
}

#[cfg(test)]
mod tests;
