//! Discovery documents: `/version`, `/api`, `/apis` (legacy and aggregated v2), resource
//! lists per group version, and `/openapi/v3`: the schemas of every served kind (for
//! `kubectl explain` and patch computation) and the PATCH operations that tell kubectl the
//! server validates fields itself (`fieldValidation`).

use super::metrics;
use serde_json::{Value, json};
use wasmorch_api::resources::{self, Resource};
use wasmorch_api::{KUBE_MAJOR, KUBE_MINOR};

pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0+wasmorch.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, wasmorch_api::kube_arch()),
    })
}

pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|a| a.contains("as=APIGroupDiscoveryList"))
}

/// The resources of one group version.
fn in_group_version<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static Resource> + 'a {
    resources::served().filter(move |r| r.group == group && r.version == version)
}

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn aggregated_resource(r: &Resource) -> Value {
    let mut subs = Vec::new();
    if r.has_status {
        subs.push(json!({"subresource": "status", "responseKind": gvk(r), "verbs": ["get", "patch", "update"]}));
    }
    if r.plural == "pods" {
        subs.push(json!({"subresource": "binding", "responseKind": {"group": "", "version": "v1", "kind": "Binding"}, "verbs": ["create"]}));
        subs.push(json!({"subresource": "eviction", "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "verbs": ["create"]}));
        subs.push(json!({"subresource": "log", "responseKind": {"group": "", "version": "v1", "kind": "Pod"}, "verbs": ["get"]}));
        for connect in super::connect::SUBRESOURCES {
            subs.push(json!({"subresource": connect, "responseKind": {"group": "", "version": "v1", "kind": "PodAttachOptions"}, "verbs": ["create", "get"]}));
        }
    }
    if r.has_scale {
        subs.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
    }
    let mut v = json!({
        "resource": r.plural,
        "responseKind": gvk(r),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": VERBS,
        "subresources": subs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    v
}

/// Groups served but not stored: (group, version, resources as (plural, kind, namespaced,
/// verbs)) — the resource metrics API and the access reviews.
/// A served, not stored, resource: (plural, kind, namespaced, verbs).
type VirtualResource = (&'static str, &'static str, bool, &'static [&'static str]);

const VIRTUAL: [(&str, &str, &[VirtualResource]); 2] = [
    (
        metrics::GROUP,
        metrics::VERSION,
        &[("nodes", "NodeMetrics", false, &["get", "list"]), ("pods", "PodMetrics", true, &["get", "list"])],
    ),
    (
        super::access::GROUP,
        "v1",
        &[
            ("localsubjectaccessreviews", "LocalSubjectAccessReview", true, &["create"]),
            ("selfsubjectaccessreviews", "SelfSubjectAccessReview", false, &["create"]),
            ("selfsubjectrulesreviews", "SelfSubjectRulesReview", false, &["create"]),
            ("subjectaccessreviews", "SubjectAccessReview", false, &["create"]),
        ],
    ),
];

/// The groups served, each with its versions (preferred first): every stored resource's, and
/// the virtual ones.
fn all_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut gs = resources::groups();
    gs.extend(VIRTUAL.iter().map(|(g, v, _)| (*g, vec![*v])));
    gs
}

/// Every served group version, core first.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs = vec![("", "v1")];
    gvs.extend(resources::groups().into_iter().flat_map(|(g, vs)| vs.into_iter().map(move |v| (g, v))));
    gvs
}

fn virtual_resources(group: &str, version: &str) -> Option<&'static [VirtualResource]> {
    VIRTUAL.iter().find(|(g, v, _)| *g == group && *v == version).map(|(_, _, r)| *r)
}

fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"version": v, "resources": aggregated_version(group, v), "freshness": "Current"}))
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

fn aggregated_version(group: &str, version: &str) -> Vec<Value> {
    match virtual_resources(group, version) {
        Some(list) => list
            .iter()
            .map(|(plural, kind, namespaced, verbs)| {
                json!({
                    "resource": plural,
                    "responseKind": {"group": group, "version": version, "kind": kind},
                    "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": "",
                    "verbs": verbs,
                })
            })
            .collect(),
        None => in_group_version(group, version).map(aggregated_resource).collect(),
    }
}

/// `/api` in either form.
pub fn core(aggregated: bool) -> Value {
    if aggregated {
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": [aggregated_group("", &["v1"])]})
    } else {
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
    }
}

fn group_doc(group: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "preferredVersion": gvs[0].clone(), "versions": gvs})
}

/// `/apis` in either form.
pub fn groups(aggregated: bool) -> Value {
    let gs = all_groups();
    if aggregated {
        let items: Vec<Value> = gs.iter().map(|(g, vs)| aggregated_group(g, vs)).collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    } else {
        let groups: Vec<Value> = gs.iter().map(|(g, vs)| group_doc(g, vs)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }
}

/// `/apis/{group}`.
pub fn group(name: &str) -> Option<Value> {
    all_groups().into_iter().find(|(g, _)| *g == name).map(|(g, vs)| {
        let mut d = group_doc(g, &vs);
        d["kind"] = json!("APIGroup");
        d["apiVersion"] = json!("v1");
        d
    })
}

/// `/api/v1` or `/apis/{group}/{version}`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if let Some(list) = virtual_resources(group, version) {
        let list: Vec<Value> = list
            .iter()
            .map(|(plural, kind, namespaced, verbs)| {
                json!({"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs})
            })
            .collect();
        return Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": list}),
        );
    }
    let rs: Vec<&Resource> = in_group_version(group, version).collect();
    if rs.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in rs {
        let mut v = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": VERBS});
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        list.push(v);
        if r.has_status {
            list.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
        if r.has_scale {
            list.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if r.plural == "pods" {
            list.push(json!({"name": "pods/binding", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
            list.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// `/openapi/v3`: one entry per group version.
pub fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions() {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", env!("CARGO_PKG_VERSION"))}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/{api/v1 | apis/g/v}`: the item paths with their PATCH operations.
pub fn openapi_group_version(path: &str) -> Option<Value> {
    let (g, v) = group_versions().into_iter().find(|(g, v)| gv_path(g, v) == path)?;
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}
    ]);
    let mut paths = serde_json::Map::new();
    let kinds: Vec<&Resource> = in_group_version(g, v).collect();
    for r in in_group_version(g, v) {
        let item = if r.namespaced {
            format!("/{}/namespaces/{{namespace}}/{}/{{name}}", gv_path(g, v), r.plural)
        } else {
            format!("/{}/{}/{{name}}", gv_path(g, v), r.plural)
        };
        let op = json!({
            "operationId": format!("patch{}", r.kind),
            "parameters": params,
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk(r),
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(item, json!({"patch": op}));
    }
    let mut schemas = wasmorch_api::openapi::schemas(&kinds);
    // A custom resource's schema is its definition's (`kubectl explain` reads it).
    for cv in wasmorch_api::custom::versions().iter().filter(|c| c.res.group == g && c.res.version == v) {
        let mut s = if cv.schema.is_object() {
            cv.schema.clone()
        } else {
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        };
        if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
            props.entry("apiVersion").or_insert(json!({"type": "string"}));
            props.entry("kind").or_insert(json!({"type": "string"}));
            props.entry("metadata").or_insert(json!({"type": "object"}));
        }
        s["x-kubernetes-group-version-kind"] = json!([gvk(cv.res)]);
        let reversed: Vec<&str> = cv.res.group.split('.').rev().collect();
        schemas.insert(format!("{}.{}.{}", reversed.join("."), cv.res.version, cv.res.kind), s);
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "wasmorch", "version": format!("v{KUBE_MAJOR}.{KUBE_MINOR}")}, "paths": paths, "components": {"schemas": schemas}}),
    )
}
