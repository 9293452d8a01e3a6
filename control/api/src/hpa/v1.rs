//! `autoscaling/v1` HorizontalPodAutoscaler: the stored `autoscaling/v2` object seen through
//! the older version, which knows only a CPU utilization target.
//!
//! As Kubernetes does, what v1 cannot say travels in annotations, so that a v1 client's
//! read-modify-write keeps it: metrics other than the CPU utilization target, the current
//! values of those metrics, the conditions and `behavior` (each as the JSON of the v2 field).
//! Converting back takes those annotations out again; the stored object never carries them.

use crate::error::Cause;
use serde_json::{Map, Value, json};

/// v2 `spec.metrics` other than the CPU utilization target.
pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// v2 `status.currentMetrics` other than the CPU utilization.
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// v2 `status.conditions`.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// v2 `spec.behavior`.
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

const V1: &str = "autoscaling/v1";
const V2: &str = "autoscaling/v2";

/// A `Resource` metric on `cpu`, and the object under it (`target` or `current`).
fn cpu_part<'a>(metric: &'a Value, part: &str) -> Option<&'a Value> {
    let r = metric.get("resource").filter(|_| metric.get("type").and_then(Value::as_str) == Some("Resource"))?;
    (r.get("name").and_then(Value::as_str) == Some("cpu")).then(|| r.get(part)).flatten()
}

/// The CPU utilization percentage of a v2 metric target, when it is one.
fn cpu_target(metric: &Value) -> Option<i64> {
    let t = cpu_part(metric, "target")?;
    (t.get("type").and_then(Value::as_str) == Some("Utilization")).then(|| t.get("averageUtilization")?.as_i64())?
}

/// The current CPU utilization of a v2 metric status, when it is one.
fn cpu_current(metric: &Value) -> Option<i64> {
    cpu_part(metric, "current")?.get("averageUtilization")?.as_i64()
}

fn copy(from: &Map<String, Value>, to: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k).filter(|v| !v.is_null()) {
            to.insert((*k).into(), v.clone());
        }
    }
}

fn annotations(obj: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    let meta = meta.as_object_mut()?;
    meta.entry("annotations").or_insert_with(|| json!({})).as_object_mut()
}

/// The stored v2 object as v1 sees it.
pub fn from_v2(mut obj: Value) -> Value {
    let Some(o) = obj.as_object_mut() else { return obj };
    o.insert("apiVersion".into(), json!(V1));
    let spec = o.remove("spec").and_then(|s| s.as_object().cloned()).unwrap_or_default();
    let status = o.remove("status").and_then(|s| s.as_object().cloned());
    let mut notes: Vec<(&str, String)> = Vec::new();

    let mut v1 = Map::new();
    copy(&spec, &mut v1, &["scaleTargetRef", "minReplicas", "maxReplicas"]);
    let mut others = Vec::new();
    for m in spec.get("metrics").and_then(Value::as_array).into_iter().flatten() {
        match cpu_target(m) {
            Some(pct) if !v1.contains_key("targetCPUUtilizationPercentage") => {
                v1.insert("targetCPUUtilizationPercentage".into(), json!(pct));
            }
            _ => others.push(m.clone()),
        }
    }
    if !others.is_empty() {
        notes.push((METRICS_ANNOTATION, Value::Array(others).to_string()));
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        notes.push((BEHAVIOR_ANNOTATION, b.to_string()));
    }
    o.insert("spec".into(), Value::Object(v1));

    if let Some(status) = status {
        let mut v1 = Map::new();
        copy(&status, &mut v1, &["observedGeneration", "lastScaleTime"]);
        // Both are required in v1.
        v1.insert("currentReplicas".into(), status.get("currentReplicas").cloned().unwrap_or(json!(0)));
        v1.insert("desiredReplicas".into(), status.get("desiredReplicas").cloned().unwrap_or(json!(0)));
        let mut others = Vec::new();
        for m in status.get("currentMetrics").and_then(Value::as_array).into_iter().flatten() {
            match cpu_current(m) {
                Some(pct) if !v1.contains_key("currentCPUUtilizationPercentage") => {
                    v1.insert("currentCPUUtilizationPercentage".into(), json!(pct));
                }
                _ => others.push(m.clone()),
            }
        }
        if !others.is_empty() {
            notes.push((CURRENT_METRICS_ANNOTATION, Value::Array(others).to_string()));
        }
        if let Some(c) = status.get("conditions").filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
            notes.push((CONDITIONS_ANNOTATION, c.to_string()));
        }
        o.insert("status".into(), Value::Object(v1));
    }
    if !notes.is_empty()
        && let Some(a) = annotations(o)
    {
        for (k, v) in notes {
            a.insert(k.into(), json!(v));
        }
    }
    obj
}

/// Take an annotation holding JSON out of the object; a value that is not JSON names the
/// annotation.
fn take_note(o: &mut Map<String, Value>, key: &str) -> Result<Option<Value>, Cause> {
    let Some(a) = o.get_mut("metadata").and_then(|m| m.get_mut("annotations")).and_then(Value::as_object_mut) else {
        return Ok(None);
    };
    let Some(raw) = a.remove(key) else { return Ok(None) };
    let field = format!("metadata.annotations[{key}]");
    let text = raw.as_str().ok_or_else(|| Cause::invalid(&field, raw.to_string(), "must be a string"))?;
    serde_json::from_str(text).map(Some).map_err(|e| Cause::invalid(&field, text, &format!("not valid JSON: {e}")))
}

/// A v1 object (already checked against the v1 schema) as the stored v2 object.
pub fn to_v2(mut obj: Value) -> Result<Value, Cause> {
    let Some(o) = obj.as_object_mut() else { return Ok(obj) };
    o.insert("apiVersion".into(), json!(V2));
    let metrics = take_note(o, METRICS_ANNOTATION)?;
    let behavior = take_note(o, BEHAVIOR_ANNOTATION)?;
    let current = take_note(o, CURRENT_METRICS_ANNOTATION)?;
    let conditions = take_note(o, CONDITIONS_ANNOTATION)?;
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut)
        && m.get("annotations").and_then(Value::as_object).is_some_and(Map::is_empty)
    {
        m.remove("annotations");
    }

    let spec = o.remove("spec").and_then(|s| s.as_object().cloned()).unwrap_or_default();
    let mut v2 = Map::new();
    copy(&spec, &mut v2, &["scaleTargetRef", "minReplicas", "maxReplicas"]);
    let mut list = Vec::new();
    if let Some(pct) = spec.get("targetCPUUtilizationPercentage").filter(|v| !v.is_null()) {
        list.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": pct}}}));
    }
    list.extend(metrics.and_then(|m| m.as_array().cloned()).unwrap_or_default());
    if !list.is_empty() {
        v2.insert("metrics".into(), Value::Array(list));
    }
    if let Some(b) = behavior {
        v2.insert("behavior".into(), b);
    }
    o.insert("spec".into(), Value::Object(v2));

    if let Some(status) = o.remove("status").and_then(|s| s.as_object().cloned()) {
        let mut v2 = Map::new();
        copy(&status, &mut v2, &["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"]);
        let mut list = Vec::new();
        if let Some(pct) = status.get("currentCPUUtilizationPercentage").filter(|v| !v.is_null()) {
            list.push(json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": pct}}}));
        }
        list.extend(current.and_then(|m| m.as_array().cloned()).unwrap_or_default());
        if !list.is_empty() {
            v2.insert("currentMetrics".into(), Value::Array(list));
        }
        if let Some(c) = conditions {
            v2.insert("conditions".into(), c);
        }
        o.insert("status".into(), Value::Object(v2));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 10,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "10"}}}
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 75}}}],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"}]
            }
        })
    }

    #[test]
    fn v2_seen_as_v1_keeps_the_rest_in_annotations() {
        let v1 = from_v2(v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["spec"]["maxReplicas"], 10);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 75);
        assert_eq!(v1["status"]["desiredReplicas"], 3);
        let a = &v1["metadata"]["annotations"];
        assert_eq!(a["team"], "a");
        assert!(a[METRICS_ANNOTATION].as_str().unwrap().contains("requests_per_second"));
        assert!(a[BEHAVIOR_ANNOTATION].as_str().unwrap().contains("60"));
        assert!(a[CONDITIONS_ANNOTATION].as_str().unwrap().contains("AbleToScale"));
        // The v1 typed schema accepts it.
        serde_json::from_value::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(v1).unwrap();
    }

    #[test]
    fn round_trip_is_lossless() {
        let back = to_v2(from_v2(v2())).unwrap();
        assert_eq!(back, v2());
    }

    #[test]
    fn plain_v1_converts_to_a_cpu_metric() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "w"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "w"}, "maxReplicas": 4, "targetCPUUtilizationPercentage": 60}});
        let v2 = to_v2(v1).unwrap();
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 60);
        assert!(v2["metadata"].get("annotations").is_none());
        // No target at all: no metrics (v2 defaulting then applies its 80 % CPU).
        let bare = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "w"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "w"}, "maxReplicas": 4}});
        assert!(to_v2(bare).unwrap()["spec"].get("metrics").is_none());
    }

    #[test]
    fn a_bad_annotation_names_itself() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "w", "annotations": {METRICS_ANNOTATION: "[not json"}},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "w"}, "maxReplicas": 4}});
        let c = to_v2(v1).unwrap_err();
        assert!(c.field.contains(METRICS_ANNOTATION), "{c:?}");
    }
}
