//! OpenAPI v3 schemas of the served kinds, from the same upstream message definitions the
//! protobuf codec uses ([`crate::protobuf`]): field names, types, descriptions, and the list
//! and patch markers (`x-kubernetes-patch-merge-key`, `x-kubernetes-list-map-keys`, …) that
//! `kubectl explain`, `kubectl apply` and server-side apply clients read.

use crate::protobuf::{self, Field, MapValue, Message, Ty};
use crate::resources::Resource;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The schema name Kubernetes uses: `io.k8s.api.core.v1.Pod`.
pub fn schema_name(m: &Message) -> String {
    let n = m.name;
    if let Some(rest) = n.strip_prefix("apiextensions_apiserver.") {
        format!("io.k8s.apiextensions-apiserver.{rest}")
    } else if let Some(rest) = n.strip_prefix("kube_aggregator.") {
        format!("io.k8s.kube-aggregator.{rest}")
    } else {
        format!("io.k8s.{n}")
    }
}

fn reference(m: &Message) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", schema_name(m))})
}

fn message(i: usize) -> Option<&'static Message> {
    protobuf::messages().get(i)
}

/// Schemas of messages whose JSON form is not an object of fields.
fn special(m: &Message) -> Option<Value> {
    Some(match m.name {
        "apimachinery.pkg.api.resource.Quantity" => json!({"type": "string"}),
        "apimachinery.pkg.util.intstr.IntOrString" => {
            json!({"type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": true})
        }
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            json!({"type": "string", "format": "date-time"})
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => json!({"type": "string"}),
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        }
        _ => return None,
    })
}

fn scalar(ty: Ty, refs: &mut Vec<usize>) -> Value {
    match ty {
        Ty::String => json!({"type": "string"}),
        Ty::Bytes => json!({"type": "string", "format": "byte"}),
        Ty::Int32 => json!({"type": "integer", "format": "int32"}),
        Ty::Int64 => json!({"type": "integer", "format": "int64"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Double => json!({"type": "number", "format": "double"}),
        Ty::Message(i) => match message(i) {
            Some(m) => {
                refs.push(i);
                json!({"allOf": [reference(m)]})
            }
            None => json!({"type": "object"}),
        },
        Ty::Map(mv) => {
            let inner = match mv {
                MapValue::String => json!({"type": "string"}),
                MapValue::Bytes => json!({"type": "string", "format": "byte"}),
                MapValue::Message(i) => scalar(Ty::Message(i), refs),
            };
            json!({"type": "object", "additionalProperties": inner})
        }
    }
}

fn property(f: &Field, refs: &mut Vec<usize>) -> Value {
    let mut p = scalar(f.ty, refs);
    if f.repeated {
        p = json!({"type": "array", "items": p});
    }
    let Some(o) = p.as_object_mut() else { return p };
    if !f.doc.is_empty() {
        o.insert("description".into(), json!(f.doc));
    }
    if let Some(k) = f.marker("patchMergeKey").next() {
        o.insert("x-kubernetes-patch-merge-key".into(), json!(k));
    }
    if let Some(s) = f.marker("patchStrategy").next() {
        o.insert("x-kubernetes-patch-strategy".into(), json!(s));
    }
    if let Some(t) = f.marker("listType").next() {
        o.insert("x-kubernetes-list-type".into(), json!(t));
        let keys: Vec<&str> = f.marker("listMapKey").collect();
        if t == "map" && !keys.is_empty() {
            o.insert("x-kubernetes-list-map-keys".into(), json!(keys));
        }
    }
    if let Some(t) = f.marker("mapType").next() {
        o.insert("x-kubernetes-map-type".into(), json!(t));
    }
    p
}

/// The properties of `m`, with embedded messages' fields in place.
fn properties(m: &Message, out: &mut Map<String, Value>, refs: &mut Vec<usize>, depth: usize) {
    for f in m.fields {
        if f.json.is_empty() {
            if let Ty::Message(i) = f.ty
                && let Some(child) = message(i)
                && depth < 8
            {
                properties(child, out, refs, depth + 1);
            }
            continue;
        }
        out.insert(f.json.to_string(), property(f, refs));
    }
}

fn schema(m: &Message, refs: &mut Vec<usize>) -> Value {
    let mut s = special(m).unwrap_or_else(|| {
        let mut props = Map::new();
        properties(m, &mut props, refs, 0);
        json!({"type": "object", "properties": props})
    });
    if !m.doc.is_empty()
        && let Some(o) = s.as_object_mut()
    {
        o.insert("description".into(), json!(m.doc));
    }
    s
}

/// `components.schemas` for the kinds of one group version: each kind and its list (with
/// `apiVersion`, `kind` and `x-kubernetes-group-version-kind`), and every schema they reach.
pub fn schemas(kinds: &[&Resource]) -> Map<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    let mut queue: Vec<usize> = Vec::new();
    for r in kinds {
        for kind in [r.kind.to_string(), format!("{}List", r.kind)] {
            let Some(m) = protobuf::message_for(&r.api_version(), &kind) else { continue };
            let mut refs = Vec::new();
            let mut s = schema(m, &mut refs);
            if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            }
            if let Some(o) = s.as_object_mut() {
                o.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": r.group, "version": r.version, "kind": kind}]),
                );
            }
            out.insert(schema_name(m), s);
            queue.extend(refs);
        }
    }
    while let Some(i) = queue.pop() {
        let Some(m) = message(i) else { continue };
        let name = schema_name(m);
        if out.contains_key(&name) {
            continue;
        }
        let mut refs = Vec::new();
        let s = schema(m, &mut refs);
        out.insert(name, s);
        queue.extend(refs);
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;

    #[test]
    fn pod_schema_has_upstream_fields_descriptions_and_merge_keys() {
        let core: Vec<&Resource> = RESOURCES.iter().filter(|r| r.group.is_empty()).collect();
        let s = schemas(&core);
        let pod = &s["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        let spec = &s["io.k8s.api.core.v1.PodSpec"]["properties"];
        assert_eq!(spec["containers"]["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            spec["containers"]["items"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        assert!(spec["containers"]["description"].as_str().unwrap().starts_with("List of containers"));
        let ports = &s["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-list-map-keys"], json!(["port", "protocol"]));
        // Embedded messages: a Probe's handler fields are the Probe's.
        assert!(s["io.k8s.api.core.v1.Probe"]["properties"]["httpGet"].is_object());
        assert_eq!(s["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"], "int-or-string");
        // Every reference resolves.
        let text = serde_json::to_string(&s).unwrap();
        for r in text.split("#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(s.contains_key(name), "dangling reference {name}");
        }
    }
}
