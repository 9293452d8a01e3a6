//! Role-based access control (`rbac.authorization.k8s.io/v1`), as pure rules: which policy
//! rules a subject holds through (Cluster)RoleBindings, whether they allow a request, and
//! whether one set of rules covers another (escalation: you cannot grant what you do not
//! hold). Kubernetes' semantics: rules only allow, never deny; `*` matches everything;
//! `resources` name `plural` or `plural/subresource`; `resourceNames` limits to named
//! objects; `nonResourceURLs` apply to paths (with a trailing `*` as a prefix).

use serde_json::{Value, json};
use std::collections::HashMap;

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
    Bound::of(binding).is_some_and(|b| b.names(s))
}

/// A subject of a binding, resolved: a user name (ServiceAccounts as theirs) or a group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    User(String),
    Group(String),
}

/// A binding as the authorizer reads it.
#[derive(Debug, Clone)]
struct Bound {
    why: String,
    subjects: Vec<Who>,
    /// (`Role` or `ClusterRole`, name).
    role: (bool, String),
}

impl Bound {
    fn of(b: &Value) -> Option<Bound> {
        let ns = b.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        let name = crate::object::name(b);
        let role_name = b.pointer("/roleRef/name").and_then(Value::as_str)?.to_string();
        let cluster = match b.pointer("/roleRef/kind").and_then(Value::as_str)? {
            "ClusterRole" => true,
            "Role" if !ns.is_empty() => false,
            _ => return None,
        };
        let kind = if cluster { "ClusterRole" } else { "Role" };
        let why = if ns.is_empty() {
            format!("ClusterRoleBinding \"{name}\" of {kind} \"{role_name}\"")
        } else {
            format!("RoleBinding \"{ns}/{name}\" of {kind} \"{role_name}\"")
        };
        let subjects = b
            .get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|sub| {
                let n = sub.get("name").and_then(Value::as_str)?.to_string();
                match sub.get("kind").and_then(Value::as_str)? {
                    "User" => Some(Who::User(n)),
                    "Group" => Some(Who::Group(n)),
                    "ServiceAccount" => {
                        let sns = sub.get("namespace").and_then(Value::as_str).filter(|x| !x.is_empty()).unwrap_or(ns);
                        Some(Who::User(format!("system:serviceaccount:{sns}:{n}")))
                    }
                    _ => None,
                }
            })
            .collect();
        Some(Bound { why, subjects, role: (cluster, role_name) })
    }

    fn names(&self, s: &Subject<'_>) -> bool {
        self.subjects.iter().any(|w| match w {
            Who::User(u) => u == s.user,
            Who::Group(g) => s.groups.iter().any(|x| x == g),
        })
    }
}

/// Every role and binding, compiled for deciding without touching JSON: rules parsed,
/// bindings by namespace. Rebuilt when any of them changes.
#[derive(Debug, Default)]
pub struct Snapshot {
    cluster_roles: HashMap<String, Vec<Rule>>,
    roles: HashMap<(String, String), Vec<Rule>>,
    cluster_bindings: Vec<Bound>,
    bindings: HashMap<String, Vec<Bound>>,
}

fn rules_of(role: &Value) -> Vec<Rule> {
    role.get("rules").and_then(Value::as_array).into_iter().flatten().map(Rule::of).collect()
}

impl Snapshot {
    /// From the stored objects of the four kinds.
    pub fn build<'a>(
        cluster_roles: impl IntoIterator<Item = &'a Value>,
        roles: impl IntoIterator<Item = &'a Value>,
        cluster_bindings: impl IntoIterator<Item = &'a Value>,
        bindings: impl IntoIterator<Item = &'a Value>,
    ) -> Snapshot {
        let mut s = Snapshot::default();
        for r in cluster_roles {
            s.cluster_roles.insert(crate::object::name(r).to_string(), rules_of(r));
        }
        for r in roles {
            let key = (crate::object::namespace(r).to_string(), crate::object::name(r).to_string());
            s.roles.insert(key, rules_of(r));
        }
        // A ClusterRoleBinding may only name a ClusterRole.
        s.cluster_bindings = cluster_bindings.into_iter().filter_map(Bound::of).filter(|b| b.role.0).collect();
        for b in bindings {
            if let Some(bound) = Bound::of(b) {
                s.bindings.entry(crate::object::namespace(b).to_string()).or_default().push(bound);
            }
        }
        s
    }

    /// The rules of a role; `None` if it does not exist.
    pub fn role_rules(&self, namespace: Option<&str>, name: &str) -> Option<&[Rule]> {
        match namespace {
            Some(ns) => self.roles.get(&(ns.to_string(), name.to_string())),
            None => self.cluster_roles.get(name),
        }
        .map(Vec::as_slice)
    }

    fn bound_rules<'a>(&'a self, b: &'a Bound, namespace: &str) -> &'a [Rule] {
        let rules = if b.role.0 {
            self.cluster_roles.get(&b.role.1)
        } else {
            self.roles.get(&(namespace.to_string(), b.role.1.clone()))
        };
        rules.map_or(&[], Vec::as_slice)
    }

    /// The rules `s` holds in `namespace` (cluster-wide ones only when it is empty), each with
    /// the binding that grants it.
    pub fn rules_for<'a>(&'a self, s: &Subject<'_>, namespace: &str) -> Vec<(&'a str, &'a Rule)> {
        let mut out = Vec::new();
        for b in self.cluster_bindings.iter().filter(|b| b.names(s)) {
            out.extend(self.bound_rules(b, "").iter().map(|r| (b.why.as_str(), r)));
        }
        if !namespace.is_empty() {
            for b in self.bindings.get(namespace).into_iter().flatten().filter(|b| b.names(s)) {
                out.extend(self.bound_rules(b, namespace).iter().map(|r| (b.why.as_str(), r)));
            }
        }
        out
    }

    /// Whether `s` may do `a`; `Ok` carries the reason (the binding that allows it).
    pub fn authorize(&self, s: &Subject<'_>, a: &Attributes) -> Result<String, String> {
        let allowed_by = |b: &Bound, ns: &str| b.names(s) && self.bound_rules(b, ns).iter().any(|r| r.allows(a));
        let found = self.cluster_bindings.iter().find(|b| allowed_by(b, "")).or_else(|| {
            if a.namespace.is_empty() {
                return None;
            }
            self.bindings.get(&a.namespace).into_iter().flatten().find(|b| allowed_by(b, &a.namespace))
        });
        found.map(|b| format!("allowed by {}", b.why)).ok_or_else(|| "no RBAC policy matched".to_string())
    }
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
        rule(&[""], &["pods/exec", "pods/attach", "pods/portforward"], &["create", "get"]),
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
