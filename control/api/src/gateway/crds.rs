//! The CustomResourceDefinitions wasmorch serves the Gateway API by (built in, as k3s
//! bundles them): GatewayClass, Gateway and HTTPRoute at `v1` (stored) and `v1beta1`, and
//! ReferenceGrant at `v1beta1`.
//!
//! The schemas are wasmorch's own, structural, covering the fields it serves with the
//! specification's types, enums and bounds; each object keeps fields it does not know
//! (`x-kubernetes-preserve-unknown-fields`), so nothing written is silently dropped.
//! kubectl's columns follow the upstream definitions.

use super::GROUP;
use serde_json::{Value, json};

fn string() -> Value {
    json!({"type": "string"})
}

fn bounded(max: u64) -> Value {
    json!({"type": "string", "maxLength": max})
}

fn hostname() -> Value {
    json!({"type": "string", "maxLength": 253,
        "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"})
}

fn port() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": 65535})
}

fn duration() -> Value {
    json!({"type": "string", "pattern": "^([0-9]{1,5}(h|m|s|ms)){1,4}$"})
}

fn open(properties: Value, required: &[&str]) -> Value {
    let mut s = json!({"type": "object", "properties": properties, "x-kubernetes-preserve-unknown-fields": true});
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    s
}

fn list(items: Value, max: u64) -> Value {
    json!({"type": "array", "items": items, "maxItems": max})
}

fn header_modifier() -> Value {
    let pair = open(json!({"name": bounded(256), "value": bounded(4096)}), &["name", "value"]);
    open(json!({"set": list(pair.clone(), 16), "add": list(pair, 16), "remove": list(bounded(256), 16)}), &[])
}

fn path_modifier() -> Value {
    open(
        json!({
            "type": {"type": "string", "enum": ["ReplaceFullPath", "ReplacePrefixMatch"]},
            "replaceFullPath": bounded(1024),
            "replacePrefixMatch": bounded(1024),
        }),
        &["type"],
    )
}

fn filters() -> Value {
    list(
        open(
            json!({
                "type": {"type": "string", "enum": ["RequestHeaderModifier", "ResponseHeaderModifier",
                    "RequestMirror", "RequestRedirect", "URLRewrite", "CORS", "ExtensionRef"]},
                "requestHeaderModifier": header_modifier(),
                "responseHeaderModifier": header_modifier(),
                "requestRedirect": open(json!({
                    "scheme": {"type": "string", "enum": ["http", "https"]},
                    "hostname": hostname(),
                    "path": path_modifier(),
                    "port": port(),
                    "statusCode": {"type": "integer", "enum": [301, 302, 303, 307, 308], "default": 302},
                }), &[]),
                "urlRewrite": open(json!({"hostname": hostname(), "path": path_modifier()}), &[]),
            }),
            &["type"],
        ),
        16,
    )
}

fn parent_ref() -> Value {
    open(
        json!({"group": string(), "kind": string(), "namespace": bounded(63), "name": bounded(253),
            "sectionName": bounded(253), "port": port()}),
        &["name"],
    )
}

fn value_match() -> Value {
    open(
        json!({"type": {"type": "string", "enum": ["Exact", "RegularExpression"], "default": "Exact"},
            "name": bounded(256), "value": bounded(4096)}),
        &["name", "value"],
    )
}

fn http_route_spec() -> Value {
    let backend = open(
        json!({"group": string(), "kind": string(), "name": bounded(253), "namespace": bounded(63), "port": port(),
            "weight": {"type": "integer", "minimum": 0, "maximum": 1_000_000, "default": 1}, "filters": filters()}),
        &["name"],
    );
    let path = open(
        json!({"type": {"type": "string", "enum": ["Exact", "PathPrefix", "RegularExpression"], "default": "PathPrefix"},
            "value": {"type": "string", "maxLength": 1024, "default": "/"}}),
        &[],
    );
    let m = open(
        json!({"path": path, "headers": list(value_match(), 16), "queryParams": list(value_match(), 16),
            "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]}}),
        &[],
    );
    let rule = open(
        json!({"name": bounded(253), "matches": list(m, 64), "filters": filters(), "backendRefs": list(backend, 16),
            "timeouts": open(json!({"request": duration(), "backendRequest": duration()}), &[])}),
        &[],
    );
    open(json!({"parentRefs": list(parent_ref(), 32), "hostnames": list(hostname(), 16), "rules": list(rule, 16)}), &[])
}

fn gateway_spec() -> Value {
    let cert =
        open(json!({"group": string(), "kind": string(), "name": bounded(253), "namespace": bounded(63)}), &["name"]);
    let listener = open(
        json!({
            "name": bounded(253),
            "hostname": hostname(),
            "port": port(),
            "protocol": {"type": "string", "maxLength": 255},
            "tls": open(json!({"mode": {"type": "string", "enum": ["Terminate", "Passthrough"], "default": "Terminate"},
                "certificateRefs": list(cert, 64)}), &[]),
            "allowedRoutes": open(json!({
                "namespaces": open(json!({"from": {"type": "string", "enum": ["All", "Selector", "Same"], "default": "Same"},
                    "selector": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}), &[]),
                "kinds": list(open(json!({"group": string(), "kind": string()}), &["kind"]), 8),
            }), &[]),
        }),
        &["name", "port", "protocol"],
    );
    let mut listeners = list(listener, 64);
    listeners["minItems"] = json!(1);
    open(json!({"gatewayClassName": bounded(253), "listeners": listeners}), &["gatewayClassName", "listeners"])
}

fn class_spec() -> Value {
    open(json!({"controllerName": bounded(253), "description": bounded(64)}), &["controllerName"])
}

fn definition(kind: &str, plural: &str, scope: &str, short: &[&str], spec: Value, columns: Value) -> Value {
    let schema = json!({"type": "object", "properties": {
        "apiVersion": string(), "kind": string(), "metadata": {"type": "object"},
        "spec": spec,
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    }, "required": ["spec"]});
    let version = |name: &str, storage: bool| {
        json!({"name": name, "served": true, "storage": storage,
            "schema": {"openAPIV3Schema": schema},
            "subresources": {"status": {}},
            "additionalPrinterColumns": columns})
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{GROUP}"),
            "annotations": {"gateway.networking.k8s.io/bundle-version": "v1.2.0",
                "wasmorch.io/built-in": "true"}},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural,
                "singular": kind.to_lowercase(), "shortNames": short, "categories": ["gateway-api"]},
            "scope": scope,
            "versions": [version("v1", true), version("v1beta1", false)],
        }
    })
}

fn column(name: &str, ty: &str, path: &str) -> Value {
    json!({"name": name, "type": ty, "jsonPath": path})
}

fn reference_grant_spec() -> Value {
    let from = open(
        json!({"group": bounded(253), "kind": bounded(63), "namespace": bounded(63)}),
        &["group", "kind", "namespace"],
    );
    let to = open(json!({"group": bounded(253), "kind": bounded(63), "name": bounded(253)}), &["group", "kind"]);
    let (mut from, mut to) = (list(from, 16), list(to, 16));
    from["minItems"] = json!(1);
    to["minItems"] = json!(1);
    open(json!({"from": from, "to": to}), &["from", "to"])
}

/// The built-in definitions.
pub fn all() -> Vec<Value> {
    vec![
        definition(
            "GatewayClass",
            "gatewayclasses",
            "Cluster",
            &["gc"],
            class_spec(),
            json!([
                column("Controller", "string", ".spec.controllerName"),
                column("Accepted", "string", ".status.conditions[?(@.type==\"Accepted\")].status"),
                column("Age", "date", ".metadata.creationTimestamp"),
                {"name": "Description", "type": "string", "jsonPath": ".spec.description", "priority": 1},
            ]),
        ),
        definition(
            "Gateway",
            "gateways",
            "Namespaced",
            &["gtw"],
            gateway_spec(),
            json!([
                column("Class", "string", ".spec.gatewayClassName"),
                column("Address", "string", ".status.addresses[*].value"),
                column("Programmed", "string", ".status.conditions[?(@.type==\"Programmed\")].status"),
                column("Age", "date", ".metadata.creationTimestamp"),
            ]),
        ),
        {
            // ReferenceGrant is v1beta1 only (stored there); no status.
            let mut d = definition(
                "ReferenceGrant",
                "referencegrants",
                "Namespaced",
                &["refgrant"],
                reference_grant_spec(),
                json!([column("Age", "date", ".metadata.creationTimestamp"),]),
            );
            let mut v = d["spec"]["versions"][1].take();
            v["storage"] = json!(true);
            if let Some(m) = v.as_object_mut() {
                m.remove("subresources");
            }
            d["spec"]["versions"] = json!([v]);
            d
        },
        definition(
            "HTTPRoute",
            "httproutes",
            "Namespaced",
            &[],
            http_route_spec(),
            json!([
                column("Hostnames", "string", ".spec.hostnames"),
                column("Age", "date", ".metadata.creationTimestamp"),
            ]),
        ),
    ]
}
