//! Conversion between a kind's stored version and the other versions it is served in
//! ([`crate::resources::ALTERNATES`]). The API server converts a body written through an
//! alternate version to the stored one before anything else reads it, and converts what it
//! answers (objects, lists, tables, watch events) back; everything between sees only the
//! stored version.

use crate::error::ApiError;
use crate::resources::{Resource, ResourceKind, storage_of};
use crate::validation::{self, FieldValidation};
use crate::{hpa, object};
use serde_json::{Value, json};

/// Whether `served` is an alternate version (something to convert).
pub fn converts(served: &'static Resource) -> bool {
    storage_of(served).version != served.version
}

/// A body sent to `served` as the stored object: checked against `served`'s own schema (so
/// errors and unknown-field warnings speak of what the client sent), then converted.
/// A body without `apiVersion`/`kind` takes `served`'s. Returns the object and warnings.
pub fn to_storage(
    served: &'static Resource,
    mut obj: Value,
    mode: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    if !converts(served) {
        return Ok((obj, Vec::new()));
    }
    if let Some(m) = obj.as_object_mut() {
        for (k, v) in [("apiVersion", served.api_version()), ("kind", served.kind.to_string())] {
            if m.get(k).is_none_or(|x| x.is_null() || x == "") {
                m.insert(k.into(), json!(v));
            }
        }
    }
    if served.kind_id == ResourceKind::Custom {
        return custom_to_storage(served, obj, mode);
    }
    let warnings = validation::check_served(served, &obj, mode)?;
    let name = object::name(&obj).to_string();
    let stored = match served.kind_id {
        ResourceKind::HorizontalPodAutoscaler => hpa::v1::to_v2(obj),
        _ => Ok(obj),
    }
    .map_err(|c| ApiError::invalid(served.group, served.kind, &name, vec![c]))?;
    Ok((stored, warnings))
}

/// A custom resource sent in a version other than its storage version: checked (defaults,
/// pruning, validation) by that version's schema, then stored as the storage version
/// (conversion `None`: only `apiVersion` changes).
fn custom_to_storage(
    served: &'static Resource,
    mut obj: Value,
    mode: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if av != served.api_version() || obj.get("kind").and_then(Value::as_str) != Some(served.kind) {
        return Err(ApiError::bad_request(format!(
            "the object's apiVersion/kind ({av:?}, {:?}) does not match the resource ({}, {})",
            obj.get("kind").and_then(Value::as_str).unwrap_or(""),
            served.api_version(),
            served.kind
        )));
    }
    let Some(v) = crate::custom::version_of(served) else { return Ok((obj, Vec::new())) };
    let warnings = crate::custom::admit_write(&v, &mut obj, mode)?;
    obj["apiVersion"] = json!(v.storage.api_version());
    Ok((obj, warnings))
}

/// What the server answers, as `served` shows it: an object of the stored kind, a list of
/// them, or a Table whose rows carry them. Anything else (a `Status`) passes unchanged.
pub fn from_storage(served: &'static Resource, mut v: Value) -> Value {
    if !converts(served) {
        return v;
    }
    let stored = storage_of(served);
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    if kind == stored.kind {
        return one(served, v);
    }
    if kind == format!("{}List", stored.kind) {
        v["apiVersion"] = json!(served.api_version());
        if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
            for it in items.iter_mut() {
                *it = one(served, it.take());
            }
        }
        return v;
    }
    if kind == "Table"
        && let Some(rows) = v.get_mut("rows").and_then(Value::as_array_mut)
    {
        for row in rows.iter_mut() {
            if let Some(o) =
                row.get_mut("object").filter(|o| o.get("kind").and_then(Value::as_str) == Some(stored.kind))
            {
                *o = one(served, o.take());
            }
        }
    }
    v
}

fn one(served: &'static Resource, mut obj: Value) -> Value {
    match served.kind_id {
        ResourceKind::HorizontalPodAutoscaler => hpa::v1::from_v2(obj),
        ResourceKind::Custom => {
            obj["apiVersion"] = json!(served.api_version());
            obj
        }
        _ => obj,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_path;

    #[test]
    fn stored_versions_pass_through() {
        let d = by_path("apps", "v1", "deployments").unwrap();
        assert!(!converts(d));
        let o = json!({"kind": "Deployment", "x": 1});
        assert_eq!(from_storage(d, o.clone()), o);
    }

    #[test]
    fn lists_tables_and_statuses() {
        let v1 = by_path("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        assert!(converts(v1));
        let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "a"}, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}});
        let list =
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList", "items": [hpa.clone()]});
        let out = from_storage(v1, list);
        assert_eq!(out["apiVersion"], "autoscaling/v1");
        assert_eq!(out["items"][0]["spec"]["targetCPUUtilizationPercentage"], 70);
        let table = json!({"kind": "Table", "rows": [{"cells": [], "object": hpa}]});
        assert_eq!(from_storage(v1, table)["rows"][0]["object"]["apiVersion"], "autoscaling/v1");
        let status = json!({"kind": "Status", "code": 404});
        assert_eq!(from_storage(v1, status.clone()), status);
    }

    #[test]
    fn writes_are_checked_as_sent() {
        let v1 = by_path("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let body = json!({"metadata": {"name": "a"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "a"},
            "maxReplicas": 3, "targetCPUUtilizationPercentage": 40, "bogus": 1}});
        let (stored, warnings) = to_storage(v1, body.clone(), FieldValidation::Warn).unwrap();
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(warnings, vec!["unknown field \"spec.bogus\"".to_string()]);
        assert_eq!(to_storage(v1, body, FieldValidation::Strict).unwrap_err().code, 400);
        let wrong = json!({"metadata": {"name": "a"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "a"},
            "maxReplicas": "three"}});
        let e = to_storage(v1, wrong, FieldValidation::Warn).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("spec.maxReplicas"), "{}", e.message);
    }
}
