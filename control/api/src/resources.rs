//! The registry of kinds wasmorch serves, as discovery and routing see them.

use std::collections::HashMap;

/// Which typed `k8s-openapi` schema validates a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Namespace,
    Node,
    Pod,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    ServiceAccount,
    Event,
    Deployment,
    ReplicaSet,
    ReplicationController,
    ResourceQuota,
    LimitRange,
    DaemonSet,
    Job,
    CronJob,
    Lease,
    PersistentVolumeClaim,
    PersistentVolume,
    StorageClass,
    EndpointSlice,
    PodDisruptionBudget,
    NetworkPolicy,
    Ingress,
    IngressClass,
    HorizontalPodAutoscaler,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
    CustomResourceDefinition,
    /// A kind a CustomResourceDefinition defines (see [`crate::custom`]).
    Custom,
}

/// One served resource: where it lives on the wire and how it behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    pub kind_id: ResourceKind,
    /// API group; empty for the legacy core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Whether it has a `status` subresource (and `status` is ignored on main-resource writes).
    pub has_status: bool,
    /// Whether it has a `scale` subresource.
    pub has_scale: bool,
    pub categories: &'static [&'static str],
}

const ALL: &[&str] = &["all"];

macro_rules! res {
    ($id:ident, $g:expr, $v:expr, $k:expr, $p:expr, $s:expr, $ns:expr, $short:expr, $st:expr, $sc:expr, $cat:expr) => {
        Resource {
            kind_id: ResourceKind::$id,
            group: $g,
            version: $v,
            kind: $k,
            plural: $p,
            singular: $s,
            namespaced: $ns,
            short_names: $short,
            has_status: $st,
            has_scale: $sc,
            categories: $cat,
        }
    };
}

/// Every served resource, in discovery order.
pub static RESOURCES: &[Resource] = &[
    res!(Namespace, "", "v1", "Namespace", "namespaces", "namespace", false, &["ns"], true, false, &[]),
    res!(Node, "", "v1", "Node", "nodes", "node", false, &["no"], true, false, &[]),
    res!(Pod, "", "v1", "Pod", "pods", "pod", true, &["po"], true, false, ALL),
    res!(Service, "", "v1", "Service", "services", "service", true, &["svc"], true, false, ALL),
    res!(Endpoints, "", "v1", "Endpoints", "endpoints", "endpoints", true, &["ep"], false, false, &[]),
    res!(ConfigMap, "", "v1", "ConfigMap", "configmaps", "configmap", true, &["cm"], false, false, &[]),
    res!(Secret, "", "v1", "Secret", "secrets", "secret", true, &[], false, false, &[]),
    res!(
        ServiceAccount,
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
        false,
        false,
        &[]
    ),
    res!(Event, "", "v1", "Event", "events", "event", true, &["ev"], false, false, &[]),
    res!(
        ResourceQuota,
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        true,
        &["quota"],
        true,
        false,
        &[]
    ),
    res!(LimitRange, "", "v1", "LimitRange", "limitranges", "limitrange", true, &["limits"], false, false, &[]),
    res!(
        ReplicationController,
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        true,
        &["rc"],
        true,
        true,
        ALL
    ),
    res!(Deployment, "apps", "v1", "Deployment", "deployments", "deployment", true, &["deploy"], true, true, ALL),
    res!(ReplicaSet, "apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, &["rs"], true, true, ALL),
    res!(DaemonSet, "apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, &["ds"], true, false, ALL),
    res!(Job, "batch", "v1", "Job", "jobs", "job", true, &[], true, false, ALL),
    res!(CronJob, "batch", "v1", "CronJob", "cronjobs", "cronjob", true, &["cj"], true, false, ALL),
    res!(Lease, "coordination.k8s.io", "v1", "Lease", "leases", "lease", true, &[], false, false, &[]),
    res!(
        PersistentVolumeClaim,
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        &["pvc"],
        true,
        false,
        &[]
    ),
    res!(
        PersistentVolume,
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        false,
        &["pv"],
        true,
        false,
        &[]
    ),
    res!(
        EndpointSlice,
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        &[],
        false,
        false,
        &[]
    ),
    res!(
        PodDisruptionBudget,
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        &["pdb"],
        true,
        false,
        &[]
    ),
    res!(
        NetworkPolicy,
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        true,
        &["netpol"],
        false,
        false,
        &[]
    ),
    res!(Ingress, "networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, &["ing"], true, false, &[]),
    res!(
        IngressClass,
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        false,
        &[],
        false,
        false,
        &[]
    ),
    HPA,
    res!(Role, "rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, &[], false, false, &[]),
    res!(
        ClusterRole,
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
        &[],
        false,
        false,
        &[]
    ),
    res!(
        RoleBinding,
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        &[],
        false,
        false,
        &[]
    ),
    res!(
        ClusterRoleBinding,
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        &[],
        false,
        false,
        &[]
    ),
    res!(
        CustomResourceDefinition,
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        false,
        &["crd", "crds"],
        true,
        false,
        &[]
    ),
    res!(
        StorageClass,
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        "storageclass",
        false,
        &["sc"],
        false,
        false,
        &[]
    ),
];

/// Versions served besides the one a kind is stored in: the same objects, converted on the
/// way in and out by [`crate::convert`]. Each shares its stored resource's plural, scope and
/// store keys; only `version` (and so the wire form) differs.
pub static ALTERNATES: &[Resource] = &[Resource { version: "v1", ..HPA }];

/// HorizontalPodAutoscalers, stored as `autoscaling/v2`.
const HPA: Resource = res!(
    HorizontalPodAutoscaler,
    "autoscaling",
    "v2",
    "HorizontalPodAutoscaler",
    "horizontalpodautoscalers",
    "horizontalpodautoscaler",
    true,
    &["hpa"],
    true,
    false,
    ALL
);

/// Every served resource in every served version: the built-in stored versions first, then
/// their alternates, then the custom resources CustomResourceDefinitions define.
pub fn served() -> impl Iterator<Item = &'static Resource> {
    let custom = crate::custom::versions();
    let custom: Vec<&'static Resource> = custom.iter().map(|v| v.res).collect();
    RESOURCES.iter().chain(ALTERNATES.iter()).chain(custom)
}

/// Every stored resource: the built-in ones, and each custom kind in its storage version.
pub fn stored() -> Vec<&'static Resource> {
    let custom = crate::custom::versions();
    RESOURCES.iter().chain(custom.iter().filter(|v| std::ptr::eq(v.res, v.storage)).map(|v| v.res)).collect()
}

/// API groups other than core, in discovery order, each with its served versions, the
/// preferred (stored) one first.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in served().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) if !vs.contains(&r.version) => vs.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    for (_, vs) in out.iter_mut() {
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    }
    out
}

/// Kubernetes' version order (the preferred version of a group is the highest): GA above
/// beta above alpha, then by major and minor number; other names last.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else { return (0, 0, 0) };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let Ok(major) = rest[..digits].parse::<u32>() else { return (0, 0, 0) };
    let tail = &rest[digits..];
    let stage = |s: &str, rank: u8| tail.strip_prefix(s).and_then(|n| n.parse::<u32>().ok()).map(|n| (rank, major, n));
    if tail.is_empty() { (3, major, 0) } else { stage("beta", 2).or_else(|| stage("alpha", 1)).unwrap_or((0, 0, 0)) }
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }
    /// `deployments.apps`, `pods`: the name Kubernetes uses in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
    /// `deployment.apps`, `pod`: the kubectl `-o name` prefix.
    pub fn qualified_singular(&self) -> String {
        let k = self.kind.to_lowercase();
        if self.group.is_empty() { k } else { format!("{k}.{}", self.group) }
    }
    /// Path of the collection (`/apis/apps/v1/namespaces/ns/deployments`); `ns` ignored when cluster-scoped.
    pub fn collection_path(&self, ns: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{base}/namespaces/{ns}/{}", self.plural),
            _ => format!("{base}/{}", self.plural),
        }
    }
    /// Store key prefix for this resource (and namespace, when given).
    pub fn key_prefix(&self, ns: Option<&str>) -> String {
        let g = if self.group.is_empty() { "core" } else { self.group };
        match ns {
            Some(ns) if self.namespaced => format!("/{g}/{}/{ns}/", self.plural),
            _ => format!("/{g}/{}/", self.plural),
        }
    }
    /// Store key of one object.
    pub fn key(&self, ns: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}{name}", self.key_prefix(Some(ns)))
        } else {
            format!("{}{name}", self.key_prefix(None))
        }
    }
}

/// Find a resource by API group, version and plural (routing), in any served version.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    // Every request is routed here: the built-in resources by plural, then group and version
    // among the few sharing it (a scan of the table compared ~60 groups per request).
    static BY_PLURAL: std::sync::LazyLock<HashMap<&'static str, Vec<&'static Resource>>> =
        std::sync::LazyLock::new(|| {
            let mut m: HashMap<&'static str, Vec<&'static Resource>> = HashMap::new();
            for r in RESOURCES.iter().chain(ALTERNATES.iter()) {
                m.entry(r.plural).or_default().push(r);
            }
            m
        });
    let mut builtin = BY_PLURAL.get(plural).into_iter().flatten().copied();
    builtin.find(|r| r.group == group && r.version == version).or_else(|| {
        let custom = crate::custom::versions();
        custom.iter().map(|v| v.res).find(|r| r.group == group && r.version == version && r.plural == plural)
    })
}

/// Find a resource by `apiVersion` and `kind` (manifests), in any served version.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    served().find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The stored resource behind a served one (itself, unless it is an alternate version).
pub fn storage_of(served: &'static Resource) -> &'static Resource {
    if served.kind_id == ResourceKind::Custom {
        return crate::custom::version_of(served).map_or(served, |v| v.storage);
    }
    of(served.kind_id)
}

/// Resolve what a user types (`deploy`, `deployments`, `Deployment`, `deployments.apps`, `deployment.apps`).
/// The served resource of a kind. Every `ResourceKind` is served (a unit test checks), so
/// this never fails; it falls back to the first resource rather than panic.
pub fn of(kind: ResourceKind) -> &'static Resource {
    RESOURCES.iter().find(|r| r.kind_id == kind).unwrap_or(&RESOURCES[0])
}

pub fn lookup(name: &str) -> Option<&'static Resource> {
    let lower = name.to_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (lower.clone(), None),
    };
    let custom = crate::custom::versions();
    let custom: Vec<&'static Resource> =
        custom.iter().filter(|v| std::ptr::eq(v.res, v.storage)).map(|v| v.res).collect();
    RESOURCES.iter().chain(custom).find(|r| {
        group.as_deref().is_none_or(|g| g == r.group)
            && (r.plural == base
                || r.singular == base
                || r.kind.to_lowercase() == base
                || r.short_names.contains(&base.as_str()))
    })
}

/// Which resource a store key belongs to (for the change feed).
pub fn by_key(key: &str) -> Option<&'static Resource> {
    let mut parts = key.trim_start_matches('/').splitn(3, '/');
    let g = parts.next()?;
    let plural = parts.next()?;
    let g = if g == "core" { "" } else { g };
    RESOURCES.iter().find(|r| r.group == g && r.plural == plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_version_is_found_by_its_path_and_no_other() {
        for r in RESOURCES.iter().chain(ALTERNATES.iter()) {
            assert!(std::ptr::eq(by_path(r.group, r.version, r.plural).unwrap(), r), "{}", r.plural);
        }
        assert_eq!(by_path("autoscaling", "v2", "horizontalpodautoscalers").map(|r| r.version), Some("v2"));
        assert_eq!(by_path("autoscaling", "v1", "horizontalpodautoscalers").map(|r| r.version), Some("v1"));
        assert!(by_path("apps", "v1", "pods").is_none());
        assert!(by_path("", "v2", "pods").is_none());
        assert!(by_path("", "v1", "pod").is_none());
    }

    #[test]
    fn every_kind_is_served() {
        use ResourceKind::*;
        for k in [
            Namespace,
            Node,
            Pod,
            Service,
            Endpoints,
            ConfigMap,
            Secret,
            ServiceAccount,
            Event,
            Deployment,
            ReplicaSet,
            ReplicationController,
            ResourceQuota,
            LimitRange,
            DaemonSet,
            Job,
            CronJob,
            Lease,
            PersistentVolumeClaim,
            PersistentVolume,
            StorageClass,
            EndpointSlice,
            PodDisruptionBudget,
            NetworkPolicy,
            Ingress,
            IngressClass,
            HorizontalPodAutoscaler,
            Role,
            ClusterRole,
            RoleBinding,
            ClusterRoleBinding,
            CustomResourceDefinition,
        ] {
            assert_eq!(of(k).kind_id, k);
        }
        assert_eq!(of(Node).plural, "nodes");
    }

    #[test]
    fn versions_sort_as_kubernetes_prefers_them() {
        let mut vs = vec!["v1alpha1", "v1beta2", "v2", "v1", "v1beta1", "foo"];
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(vs, ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }

    #[test]
    fn lookup_accepts_what_kubectl_accepts() {
        for n in ["deploy", "deployments", "Deployment", "deployment.apps", "deployments.apps"] {
            assert_eq!(lookup(n).unwrap().kind, "Deployment", "{n}");
        }
        assert_eq!(lookup("po").unwrap().kind, "Pod");
        assert!(lookup("widgets").is_none());
        assert!(lookup("deployments.batch").is_none());
    }

    #[test]
    fn keys_round_trip() {
        let d = by_kind("apps/v1", "Deployment").unwrap();
        let k = d.key("default", "web");
        assert_eq!(k, "/apps/deployments/default/web");
        assert_eq!(by_key(&k).unwrap().kind, "Deployment");
        let n = by_kind("v1", "Node").unwrap();
        assert_eq!(n.key("ignored", "n1"), "/core/nodes/n1");
        assert_eq!(n.collection_path(Some("x")), "/api/v1/nodes");
        assert_eq!(d.collection_path(Some("x")), "/apis/apps/v1/namespaces/x/deployments");
    }
}
