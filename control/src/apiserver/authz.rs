//! Authorization: who may do what.
//!
//! - `system:masters` (the admin token, admin client certificates): everything.
//! - Nodes (`system:node:<name>` in `system:nodes`, by client certificate): what a kubelet
//!   needs and no more, as Kubernetes' Node authorizer allows it — their own Node and Lease,
//!   the pods bound to them (read, status, finishing deletion), the ConfigMaps, Secrets and
//!   claims those pods use (read), Services and EndpointSlices (read, for the proxy), Ingresses
//!   and IngressClasses (read: every node's proxy is the Ingress controller), Events.
//! - Join tokens (`system:bootstrappers`): only a node certificate (see `membership`).
//!
//! [`node_rule`] is the pure table; [`authorize`] resolves the rules that depend on stored
//! objects (is this pod bound to the node, does one of its pods use this Secret).

use super::api::{Api, ListOptions};
use super::request::Target;
use crate::pki::Identity;
use serde_json::Value;
use wasmorch_api::join::{BOOTSTRAPPERS_GROUP, node_name};
use wasmorch_api::rbac::{Attributes, Subject};
use wasmorch_api::selector::{FieldSelector, LabelSelector};
use wasmorch_api::{ApiError, object, resources};

/// The verb of a request, as Kubernetes names it in authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn of(method: &http::Method, named: bool, watch: bool) -> Verb {
        match (method.as_str(), named) {
            ("GET", _) if watch => Verb::Watch,
            ("GET", true) => Verb::Get,
            ("GET", false) => Verb::List,
            ("POST", _) => Verb::Create,
            ("PUT", _) => Verb::Update,
            ("PATCH", _) => Verb::Patch,
            ("DELETE", true) => Verb::Delete,
            ("DELETE", false) => Verb::DeleteCollection,
            _ => Verb::Get,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
    fn reads(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// What the table says about one node request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Allow,
    Deny(String),
    /// Allowed if the named pod (in the target's namespace) is bound to the node.
    IfPodBound,
    /// Allowed if a pod bound to the node uses this ConfigMap, Secret or claim.
    IfUsedByPod(UseKind),
    /// A token for this service account, bound to a pod on the node that runs as it.
    IfTokenForBoundPod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseKind {
    ConfigMap,
    Secret,
    Claim,
}

/// The pure rule for node `node` doing `verb` on `t`; `body_name` the name in a create's body.
pub fn node_rule(node: &str, t: &Target, verb: Verb, body_name: Option<&str>) -> Rule {
    let sub = t.subresource.as_deref();
    let name = t.name.as_deref().or(if verb == Verb::Create { body_name } else { None });
    let own = name == Some(node);
    match (t.res.group, t.res.plural) {
        ("", "nodes") => match verb {
            v if v.reads() => Rule::Allow,
            Verb::Create | Verb::Update | Verb::Patch if own && sub.is_none_or(|s| s == "status") => Rule::Allow,
            _ => Rule::Deny(format!("node '{node}' can only modify its own Node")),
        },
        ("coordination.k8s.io", "leases") => {
            if t.namespace.as_deref() == Some("kube-node-lease")
                && own
                && matches!(verb, Verb::Get | Verb::Create | Verb::Update | Verb::Patch)
            {
                Rule::Allow
            } else {
                Rule::Deny(format!("node '{node}' can only use its own Lease in kube-node-lease"))
            }
        }
        ("", "pods") => match (verb, sub) {
            // Every pod's labels and address, for NetworkPolicy: the node is the cluster's
            // network agent (as a CNI agent is granted in Kubernetes). Writes stay bound.
            (Verb::List | Verb::Watch, None) => Rule::Allow,
            (Verb::Get, None | Some("status")) => Rule::IfPodBound,
            (Verb::Update | Verb::Patch, Some("status")) => Rule::IfPodBound,
            (Verb::Delete, None) => Rule::IfPodBound,
            _ => Rule::Deny(format!("node '{node}' can only read, report and finish pods bound to it")),
        },
        ("", "events") | ("events.k8s.io", "events") => match verb {
            Verb::Create | Verb::Update | Verb::Patch => Rule::Allow,
            _ => Rule::Deny("nodes may only write events".into()),
        },
        ("", "services")
        | ("", "endpoints")
        | ("discovery.k8s.io", "endpointslices")
        | ("networking.k8s.io", "networkpolicies")
        | ("networking.k8s.io", "ingresses")
        | ("networking.k8s.io", "ingressclasses")
        | ("gateway.networking.k8s.io", "gatewayclasses" | "gateways" | "httproutes" | "referencegrants")
        | ("", "namespaces")
        | ("", "persistentvolumes")
        | ("storage.k8s.io", "storageclasses")
            if verb.reads() =>
        {
            Rule::Allow
        }
        ("", "serviceaccounts") if verb == Verb::Create && sub == Some("token") => Rule::IfTokenForBoundPod,
        ("", "configmaps") if verb == Verb::Get => Rule::IfUsedByPod(UseKind::ConfigMap),
        ("", "secrets") if verb == Verb::Get => Rule::IfUsedByPod(UseKind::Secret),
        ("", "persistentvolumeclaims") if verb == Verb::Get => Rule::IfUsedByPod(UseKind::Claim),
        ("", "configmaps" | "secrets" | "persistentvolumeclaims") => {
            Rule::Deny(format!("node '{node}' can only get {} that pods bound to it use", t.res.plural))
        }
        _ => Rule::Deny(format!("nodes may not {} {}", verb.name(), t.res.plural)),
    }
}

/// Whether `pod` uses the named object of `kind` (env, envFrom, volumes; Secrets also as
/// `imagePullSecrets`).
pub fn pod_uses(pod: &Value, kind: UseKind, name: &str) -> bool {
    // Where each kind is named: env[].valueFrom.<key ref>, envFrom[].<ref>, a volume's source.
    let (key_ref, env_from, volume): (&str, &str, fn(&Value) -> &Value) = match kind {
        UseKind::ConfigMap => ("configMapKeyRef", "configMapRef", |v| &v["configMap"]["name"]),
        UseKind::Secret => ("secretKeyRef", "secretRef", |v| &v["secret"]["secretName"]),
        UseKind::Claim => ("", "", |v| &v["persistentVolumeClaim"]["claimName"]),
    };
    let named = |v: &Value| v.as_str() == Some(name);
    let spec = &pod["spec"];
    let mut containers = ["containers", "initContainers"].into_iter().flat_map(|k| spec[k].as_array()).flatten();
    let in_containers = containers.any(|c| {
        c["env"].as_array().into_iter().flatten().any(|e| named(&e["valueFrom"][key_ref]["name"]))
            || c["envFrom"].as_array().into_iter().flatten().any(|e| named(&e[env_from]["name"]))
    });
    let pulls_with =
        kind == UseKind::Secret && spec["imagePullSecrets"].as_array().into_iter().flatten().any(|s| named(&s["name"]));
    // A projected volume's sources name theirs as `name`.
    let source = match kind {
        UseKind::ConfigMap => "configMap",
        UseKind::Secret => "secret",
        UseKind::Claim => "",
    };
    let projects = |v: &Value| {
        v["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| !source.is_empty() && named(&s[source]["name"]))
    };
    in_containers
        || pulls_with
        || spec["volumes"].as_array().into_iter().flatten().any(|v| named(volume(v)) || projects(v))
}

fn forbidden(id: &Identity, t: &Target, verb: Verb, why: &str) -> ApiError {
    let res = match &t.subresource {
        Some(s) => format!("{}/{s}", t.res.plural),
        None => t.res.plural.to_string(),
    };
    let scope = match &t.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let what = match &t.name {
        Some(n) => format!("{} \"{n}\"", t.res.qualified_plural()),
        None => t.res.qualified_plural(),
    };
    let mut e = ApiError::forbidden(format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}: {why}",
        id.user,
        verb.name(),
        t.res.group
    ));
    e.kind = t.res.plural.to_string();
    e.group = t.res.group.to_string();
    e.name = t.name.clone().unwrap_or_default();
    e
}

/// The RBAC attributes of a request on `t`.
pub fn attributes(t: &Target, verb: Verb) -> Attributes {
    Attributes {
        verb: verb.name().to_string(),
        group: t.res.group.to_string(),
        resource: t.res.plural.to_string(),
        subresource: t.subresource.clone().unwrap_or_default(),
        name: t.name.clone().unwrap_or_default(),
        namespace: if t.res.namespaced { t.namespace.clone().unwrap_or_default() } else { String::new() },
        path: None,
    }
}

/// Whether RBAC lets `id` do `a` (admins always). The one decision for requests that are not
/// on a stored resource (`/metrics`, the metrics API, backups, wake).
pub fn check(api: &Api, id: &Identity, a: &Attributes) -> Result<String, String> {
    if id.is_admin() {
        return Ok("a member of system:masters".into());
    }
    let Some(p) = api.rbac.get() else { return Err("no RBAC policy is loaded".into()) };
    p.snapshot().authorize(&Subject { user: &id.user, groups: &id.groups }, a)
}

/// `check`, as the API's 403 for a request that names no stored resource.
pub fn require(api: &Api, id: &Identity, a: &Attributes) -> Result<(), ApiError> {
    check(api, id, a).map(|_| ()).map_err(|why| {
        let what = match &a.path {
            Some(p) => format!("cannot {} path \"{p}\"", a.verb),
            None => {
                let res = if a.subresource.is_empty() {
                    a.resource.clone()
                } else {
                    format!("{}/{}", a.resource, a.subresource)
                };
                let scope = if a.namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace \"{}\"", a.namespace)
                };
                format!("cannot {} resource \"{res}\" in API group \"{}\" {scope}", a.verb, a.group)
            }
        };
        ApiError::forbidden(format!("User \"{}\" {what}: {why}", id.user))
    })
}

/// Whether `id` may do `verb` on `t`. Admins may do anything; nodes follow [`node_rule`]
/// (Kubernetes' Node authorizer); join tokens may only ask for a node certificate; everyone
/// else is judged by RBAC.
pub async fn authorize(api: &Api, id: &Identity, t: &Target, verb: Verb, body: Option<&Value>) -> Result<(), ApiError> {
    if id.is_admin() {
        return Ok(());
    }
    if id.groups.iter().any(|g| g == BOOTSTRAPPERS_GROUP) {
        return Err(forbidden(id, t, verb, "a join token may only request a node certificate"));
    }
    let Some(node) = node_name(&id.user, &id.groups) else {
        return check(api, id, &attributes(t, verb)).map(|_| ()).map_err(|why| forbidden(id, t, verb, &why));
    };
    let body_name = body.map(object::name).filter(|n| !n.is_empty());
    let deny = |why: &str| Err(forbidden(id, t, verb, why));
    match node_rule(node, t, verb, body_name) {
        Rule::Allow => Ok(()),
        Rule::Deny(why) => deny(&why),
        Rule::IfPodBound => {
            // From the server's pod cache first, as Kubernetes' node authorizer reads its
            // graph from informers: a node starting 10 000 pods writes each one's status, and
            // a store read per write was a twentieth of the server's time. A binding never
            // changes; only a "no" reads the store, so a pod bound a moment ago is found.
            let (ns, name) = (t.namespace.as_deref().unwrap_or(""), t.name.as_deref().unwrap_or(""));
            let bound_here = |p: &Value| object::str_at(p, "spec.nodeName") == Some(node);
            if api.cached_with(resources::ResourceKind::Pod, ns, name, bound_here) == Some(true) {
                return Ok(());
            }
            let mut pod_t = t.clone();
            pod_t.subresource = None;
            match api.get(&pod_t).await {
                Ok(pod) if object::str_at(&pod, "spec.nodeName") == Some(node) => Ok(()),
                // Not telling a node whether another node's pod exists.
                Ok(_) | Err(_) => deny(&format!("node '{node}' can only use pods bound to it")),
            }
        }
        Rule::IfUsedByPod(kind) => {
            let name = t.name.as_deref().unwrap_or("");
            let uses = |p: &Value| {
                object::str_at(p, "spec.nodeName") == Some(node)
                    && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                    && pod_uses(p, kind, name)
            };
            // From the server's pod cache first: every pod of a node reads its ConfigMaps
            // and Secrets again every few seconds, and listing the namespace's pods from the
            // store for each read grew with pods² (1 000 pods on one node took minutes to
            // start). Only a "no" reads the store, so a pod bound a moment ago is found.
            if api.cached_any(resources::ResourceKind::Pod, t.namespace.as_deref(), uses) {
                return Ok(());
            }
            let pods = resources::of(resources::ResourceKind::Pod);
            let opts = ListOptions {
                labels: LabelSelector::default(),
                fields: FieldSelector::parse(&format!("spec.nodeName={node}"), pods)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
                limit: 0,
                continue_token: None,
            };
            let list = api.list(pods, t.namespace.as_deref(), &opts).await?;
            let used = list["items"].as_array().into_iter().flatten().any(uses);
            if used {
                return Ok(());
            }
            // Every node serves Ingresses: it may read the TLS Secrets they name.
            if kind == UseKind::Secret {
                let ingresses = resources::of(resources::ResourceKind::Ingress);
                let list = api.list(ingresses, t.namespace.as_deref(), &ListOptions::default()).await?;
                if list["items"].as_array().into_iter().flatten().any(|i| ingress_uses(i, name)) {
                    return Ok(());
                }
                // And the Gateways' listeners (the Gateway API's kinds are built-in
                // definitions), from any namespace a ReferenceGrant here opens to them.
                let served = |plural: &str| {
                    wasmorch_api::custom::versions()
                        .iter()
                        .find(|v| v.res.group == wasmorch_api::gateway::GROUP && v.res.plural == plural)
                        .map(|v| v.storage)
                };
                if let (Some(gateways), Some(grants)) = (served("gateways"), served("referencegrants")) {
                    let ns = t.namespace.as_deref().unwrap_or("");
                    let gws = api.list(gateways, None, &ListOptions::default()).await?;
                    let grants = api.list(grants, Some(ns), &ListOptions::default()).await?;
                    let grants = wasmorch_api::gateway::Grants::new(grants["items"].as_array().into_iter().flatten());
                    if gws["items"].as_array().into_iter().flatten().any(|g| gateway_uses(g, ns, name, &grants)) {
                        return Ok(());
                    }
                }
            }
            deny(&format!("no pod bound to node '{node}' uses it"))
        }
        Rule::IfTokenForBoundPod => {
            let r = body.and_then(|b| b.pointer("/spec/boundObjectRef"));
            let pod = r
                .filter(|r| r.get("kind").and_then(Value::as_str) == Some("Pod"))
                .and_then(|r| r.get("name").and_then(Value::as_str))
                .unwrap_or("");
            let pod_t = Target::object(resources::ResourceKind::Pod, t.namespace.as_deref().unwrap_or(""), pod);
            let runs_as = |p: &Value| {
                object::str_at(p, "spec.nodeName") == Some(node)
                    && object::str_at(p, "spec.serviceAccountName") == t.name.as_deref()
            };
            let ns = t.namespace.as_deref().unwrap_or("");
            if !pod.is_empty() && api.cached_with(resources::ResourceKind::Pod, ns, pod, runs_as) == Some(true) {
                return Ok(());
            }
            match api.get(&pod_t).await {
                Ok(p) if !pod.is_empty() && runs_as(&p) => Ok(()),
                _ => deny(&format!(
                    "node '{node}' may only request tokens bound to pods on it that run as this service account"
                )),
            }
        }
    }
}

/// Whether a Gateway's listeners name Secret `ns/name` for TLS, and may (the same
/// namespace, or a ReferenceGrant in `ns`).
fn gateway_uses(gw: &Value, ns: &str, name: &str, grants: &wasmorch_api::gateway::Grants) -> bool {
    wasmorch_api::gateway::listeners(gw).0.iter().any(|l| {
        l.certificates.iter().any(|(cns, n)| {
            cns == ns
                && n == name
                && grants.allows((wasmorch_api::gateway::GROUP, "Gateway", &l.namespace), ("", "Secret", ns, name))
        })
    })
}

/// Whether an Ingress names Secret `name` for TLS.
fn ingress_uses(ing: &Value, name: &str) -> bool {
    ing.pointer("/spec/tls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|t| t.get("secretName").and_then(Value::as_str) == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_read_the_tls_secrets_ingresses_name() {
        let ing = json!({"spec": {"tls": [{"hosts": ["a.com"], "secretName": "a-cert"}, {"secretName": "b-cert"}]}});
        assert!(ingress_uses(&ing, "b-cert") && !ingress_uses(&ing, "db"));
        assert!(!ingress_uses(&json!({"spec": {"tls": "junk"}}), "a-cert"));
        let gw = json!({"metadata": {"namespace": "web"}, "spec": {"listeners": [{"name": "s", "port": 443, "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": "site"}, {"name": "far", "namespace": "other"}]}}]}});
        let none = wasmorch_api::gateway::Grants::default();
        assert!(gateway_uses(&gw, "web", "site", &none) && !gateway_uses(&gw, "web", "db", &none));
        assert!(!gateway_uses(&gw, "other", "far", &none), "another namespace needs a grant");
        let grant = json!({"metadata": {"namespace": "other"}, "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "web"}],
            "to": [{"group": "", "kind": "Secret", "name": "far"}]}});
        let grants = wasmorch_api::gateway::Grants::new([&grant]);
        assert!(gateway_uses(&gw, "other", "far", &grants) && !gateway_uses(&gw, "other", "site", &grants));
    }

    use serde_json::json;

    fn target(plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> Target {
        Target {
            res: resources::lookup(plural).unwrap(),
            namespace: ns.map(String::from),
            name: name.map(String::from),
            subresource: sub.map(String::from),
            watch_path: false,
        }
    }

    #[test]
    fn a_node_may_change_only_its_own_node_and_lease() {
        let own = target("nodes", None, Some("n1"), Some("status"));
        assert_eq!(node_rule("n1", &own, Verb::Patch, None), Rule::Allow);
        let other = target("nodes", None, Some("n2"), Some("status"));
        assert!(matches!(node_rule("n1", &other, Verb::Patch, None), Rule::Deny(_)));
        assert!(matches!(node_rule("n1", &other, Verb::Delete, None), Rule::Deny(_)));
        assert_eq!(node_rule("n1", &other, Verb::Get, None), Rule::Allow);
        let create = target("nodes", None, None, None);
        assert_eq!(node_rule("n1", &create, Verb::Create, Some("n1")), Rule::Allow);
        assert!(matches!(node_rule("n1", &create, Verb::Create, Some("n2")), Rule::Deny(_)));
        let lease = target("leases", Some("kube-node-lease"), Some("n1"), None);
        assert_eq!(node_rule("n1", &lease, Verb::Patch, None), Rule::Allow);
        let lease2 = target("leases", Some("kube-node-lease"), Some("n2"), None);
        assert!(matches!(node_rule("n1", &lease2, Verb::Patch, None), Rule::Deny(_)));
        let elsewhere = target("leases", Some("kube-system"), Some("n1"), None);
        assert!(matches!(node_rule("n1", &elsewhere, Verb::Patch, None), Rule::Deny(_)));
    }

    #[test]
    fn pods_are_read_by_every_node_and_changed_only_when_bound() {
        let all = target("pods", None, None, None);
        // Every pod's labels and address: NetworkPolicy needs them on every node.
        assert_eq!(node_rule("n1", &all, Verb::Watch, None), Rule::Allow);
        assert_eq!(node_rule("n1", &all, Verb::List, None), Rule::Allow);
        let status = target("pods", Some("default"), Some("p"), Some("status"));
        assert_eq!(node_rule("n1", &status, Verb::Patch, None), Rule::IfPodBound);
        let pod = target("pods", Some("default"), Some("p"), None);
        assert!(matches!(node_rule("n1", &pod, Verb::Patch, None), Rule::Deny(_)), "spec is not the node's");
        assert_eq!(node_rule("n1", &pod, Verb::Delete, None), Rule::IfPodBound);
        let create = target("pods", Some("default"), None, None);
        assert!(matches!(node_rule("n1", &create, Verb::Create, Some("p")), Rule::Deny(_)));
        let evict = target("pods", Some("default"), Some("p"), Some("eviction"));
        assert!(matches!(node_rule("n1", &evict, Verb::Create, None), Rule::Deny(_)));
    }

    #[test]
    fn secrets_only_by_use_and_never_listed() {
        let s = target("secrets", Some("default"), Some("db"), None);
        assert_eq!(node_rule("n1", &s, Verb::Get, None), Rule::IfUsedByPod(UseKind::Secret));
        let all = target("secrets", Some("default"), None, None);
        assert!(matches!(node_rule("n1", &all, Verb::List, None), Rule::Deny(_)));
        assert!(matches!(node_rule("n1", &all, Verb::Watch, None), Rule::Deny(_)));
        assert!(matches!(node_rule("n1", &s, Verb::Update, None), Rule::Deny(_)));
        let deploy = target("deployments", Some("default"), None, None);
        assert!(matches!(node_rule("n1", &deploy, Verb::List, None), Rule::Deny(_)));
    }

    #[test]
    fn references_from_env_env_from_and_volumes() {
        let pod = json!({"spec": {
            "containers": [{"name": "a",
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}},
                        {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "c1", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "s2"}}, {"configMapRef": {"name": "c2"}}]}],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s3"}}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "s4"}}, {"name": "w", "configMap": {"name": "c3"}},
                        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
            "imagePullSecrets": [{"name": "s5"}, {"name": "c4"}]}});
        assert!(!pod_uses(&pod, UseKind::ConfigMap, "c4"), "pull secrets are Secrets");
        for s in ["s1", "s2", "s3", "s4", "s5"] {
            assert!(pod_uses(&pod, UseKind::Secret, s), "{s}");
        }
        for c in ["c1", "c2", "c3"] {
            assert!(pod_uses(&pod, UseKind::ConfigMap, c), "{c}");
        }
        assert!(pod_uses(&pod, UseKind::Claim, "data"));
        assert!(!pod_uses(&pod, UseKind::Secret, "c1"), "a ConfigMap of that name is not a Secret");
        assert!(!pod_uses(&pod, UseKind::Secret, "other"));
    }
}
