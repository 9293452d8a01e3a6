//! HorizontalPodAutoscaler (`autoscaling/v2`): defaults, validation, and the controller's
//! decisions as pure functions, following Kubernetes' replica calculator and its behavior
//! rules (stabilization windows, scaling policies) exactly, so the controller only gathers
//! inputs and writes results.

use crate::validation::Causes;
use serde_json::{Value, json};
use std::time::Duration;

/// Kubernetes' `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// How long after its start a pod's CPU is not trusted unless it is ready
/// (`--horizontal-pod-autoscaler-cpu-initialization-period`).
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// How long after its start a not-yet-ready pod counts as still starting
/// (`--horizontal-pod-autoscaler-initial-readiness-delay`).
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);
/// Default scale-down stabilization (`--horizontal-pod-autoscaler-downscale-stabilization`).
pub const DOWNSCALE_STABILIZATION: Duration = Duration::from_secs(300);

pub(super) fn set_default(v: &mut Value, key: &str, default: Value) {
    if let Some(m) = v.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), default);
    }
}

/// The scale-up rules' defaults: no stabilization, the larger of 4 pods or 100 % per 15 s.
pub fn default_scale_up() -> Value {
    json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ]})
}

/// The scale-down rules' defaults: a 300 s window, then 100 % per 15 s.
pub fn default_scale_down() -> Value {
    json!({"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]})
}

/// API defaults, as Kubernetes' v2 defaulting: `minReplicas` 1, CPU at 80 % when no metric
/// is given, and a given `behavior`'s missing parts filled in.
pub fn set_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else { return };
    set_default(spec, "minReplicas", json!(1));
    if spec.get("metrics").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    if let Some(b) = spec.get_mut("behavior").filter(|b| b.is_object()) {
        for (key, defaults) in [("scaleUp", default_scale_up()), ("scaleDown", default_scale_down())] {
            set_default(b, key, json!({}));
            let rules = &mut b[key];
            if let Some(d) = defaults.as_object() {
                for (k, v) in d {
                    set_default(rules, k, v.clone());
                }
            }
        }
    }
}

const METRIC_TYPES: [&str; 5] = ["ContainerResource", "External", "Object", "Pods", "Resource"];
const TARGET_TYPES: [&str; 3] = ["AverageValue", "Utilization", "Value"];

/// The member of a metric that holds its details (`resource` for `Resource`, …).
fn member(ty: &str) -> &'static str {
    match ty {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        _ => "external",
    }
}

fn quantity_positive(v: &Value) -> bool {
    match v {
        Value::String(s) => crate::quantity::parse(s).is_some_and(|q| q > 0.0),
        Value::Number(n) => n.as_f64().is_some_and(|q| q > 0.0),
        _ => false,
    }
}

/// Kubernetes' semantic checks of an HPA spec.
pub(crate) fn validate(spec: &Value, c: &mut Causes) {
    let r = &spec["scaleTargetRef"];
    for f in ["kind", "name"] {
        if r.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
            c.required(format!("spec.scaleTargetRef.{f}"));
        }
    }
    let max = spec.get("maxReplicas").and_then(Value::as_i64);
    match max {
        None => c.required("spec.maxReplicas"),
        Some(m) if m < 1 => c.invalid("spec.maxReplicas", m, "must be greater than 0"),
        _ => {}
    }
    let metrics: Vec<&Value> = spec.get("metrics").and_then(Value::as_array).into_iter().flatten().collect();
    let min = spec.get("minReplicas").and_then(Value::as_i64);
    if let Some(m) = min {
        // Zero (scale to zero, Kubernetes' HPAScaleToZero) needs a metric that does not come
        // from the pods themselves.
        let outside =
            metrics.iter().any(|m| matches!(m.get("type").and_then(Value::as_str), Some("Object" | "External")));
        if m < 0 || (m == 0 && !outside) {
            c.invalid("spec.minReplicas", m, "must be greater than or equal to 1");
        }
        if let Some(x) = max
            && x < m
        {
            c.invalid("spec.maxReplicas", x, "must be greater than or equal to `minReplicas`");
        }
    }
    for (i, m) in metrics.iter().enumerate() {
        let path = format!("spec.metrics[{i}]");
        let Some(ty) = m.get("type").and_then(Value::as_str) else {
            c.required(format!("{path}.type"));
            continue;
        };
        if !METRIC_TYPES.contains(&ty) {
            c.not_supported(format!("{path}.type"), ty, &METRIC_TYPES);
            continue;
        }
        let key = member(ty);
        let Some(details) = m.get(key).filter(|d| d.is_object()) else {
            c.required(format!("{path}.{key}"));
            continue;
        };
        let p = format!("{path}.{key}");
        match ty {
            "Resource" | "ContainerResource" => {
                if details.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                    c.required(format!("{p}.name"));
                }
                if ty == "ContainerResource"
                    && details.get("container").and_then(Value::as_str).is_none_or(str::is_empty)
                {
                    c.required(format!("{p}.container"));
                }
            }
            _ => {
                if details.pointer("/metric/name").and_then(Value::as_str).is_none_or(str::is_empty) {
                    c.required(format!("{p}.metric.name"));
                }
                if ty == "Object"
                    && details.pointer("/describedObject/name").and_then(Value::as_str).is_none_or(str::is_empty)
                {
                    c.required(format!("{p}.describedObject.name"));
                }
            }
        }
        let t = &details["target"];
        let Some(tt) = t.get("type").and_then(Value::as_str) else {
            c.required(format!("{p}.target.type"));
            continue;
        };
        match tt {
            "Utilization" => {
                if !matches!(ty, "Resource" | "ContainerResource") {
                    c.forbidden(
                        format!("{p}.target.type"),
                        "Utilization is only for Resource and ContainerResource metrics",
                    );
                }
                match t.get("averageUtilization").and_then(Value::as_i64) {
                    None => c.required(format!("{p}.target.averageUtilization")),
                    Some(u) if u < 1 => {
                        c.invalid(format!("{p}.target.averageUtilization"), u, "must be greater than 0")
                    }
                    _ => {}
                }
            }
            "AverageValue" | "Value" => {
                let f = if tt == "Value" { "value" } else { "averageValue" };
                if tt == "Value" && matches!(ty, "Resource" | "ContainerResource" | "Pods") {
                    c.not_supported(format!("{p}.target.type"), tt, &["AverageValue", "Utilization"]);
                }
                match t.get(f) {
                    None => c.required(format!("{p}.target.{f}")),
                    Some(v) if !quantity_positive(v) => c.invalid(format!("{p}.target.{f}"), v, "must be positive"),
                    _ => {}
                }
            }
            other => c.not_supported(format!("{p}.target.type"), other, &TARGET_TYPES),
        }
    }
    for dir in ["scaleUp", "scaleDown"] {
        let Some(rules) = spec.pointer(&format!("/behavior/{dir}")).filter(|r| r.is_object()) else { continue };
        let p = format!("spec.behavior.{dir}");
        if let Some(w) = rules.get("stabilizationWindowSeconds").and_then(Value::as_i64)
            && !(0..=3600).contains(&w)
        {
            c.invalid(format!("{p}.stabilizationWindowSeconds"), w, "must be between 0 and 3600");
        }
        if let Some(s) = rules.get("selectPolicy").and_then(Value::as_str)
            && !["Disabled", "Max", "Min"].contains(&s)
        {
            c.not_supported(format!("{p}.selectPolicy"), s, &["Disabled", "Max", "Min"]);
        }
        let policies = rules.get("policies").and_then(Value::as_array).cloned().unwrap_or_default();
        if policies.is_empty() && rules.get("selectPolicy").and_then(Value::as_str) != Some("Disabled") {
            c.required(format!("{p}.policies"));
        }
        for (i, pol) in policies.iter().enumerate() {
            let pp = format!("{p}.policies[{i}]");
            match pol.get("type").and_then(Value::as_str) {
                Some("Pods" | "Percent") => {}
                Some(other) => c.not_supported(format!("{pp}.type"), other, &["Percent", "Pods"]),
                None => c.required(format!("{pp}.type")),
            }
            match pol.get("value").and_then(Value::as_i64) {
                Some(v) if v > 0 => {}
                Some(v) => c.invalid(format!("{pp}.value"), v, "must be greater than zero"),
                None => c.required(format!("{pp}.value")),
            }
            match pol.get("periodSeconds").and_then(Value::as_i64) {
                Some(v) if (1..=1800).contains(&v) => {}
                Some(v) => c.invalid(format!("{pp}.periodSeconds"), v, "must be between 1 and 1800"),
                None => c.required(format!("{pp}.periodSeconds")),
            }
        }
    }
}

/// kubectl's TARGETS column: `cpu: 42%/50%`, `memory: 12Mi/20Mi`, `<unknown>` before the
/// first measurement; a third metric and more as `+ N more...`.
pub fn targets_column(o: &Value) -> String {
    let specs = o.pointer("/spec/metrics").and_then(Value::as_array).cloned().unwrap_or_default();
    let current = o.pointer("/status/currentMetrics").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut parts = Vec::new();
    for (i, m) in specs.iter().enumerate().take(2) {
        let ty = m["type"].as_str().unwrap_or("");
        let key = member(ty);
        let t = &m[key]["target"];
        let cur = current.get(i).map(|c| &c[key]["current"]).unwrap_or(&Value::Null);
        let name = match ty {
            "Resource" | "ContainerResource" => m[key]["name"].as_str().unwrap_or("").to_string(),
            _ => m[key]["metric"]["name"].as_str().unwrap_or("").to_string(),
        };
        let show = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => "<unknown>".to_string(),
        };
        let (now, want) = match t["type"].as_str() {
            Some("Utilization") => (
                cur.get("averageUtilization").map_or("<unknown>".into(), |v| format!("{}%", show(v))),
                format!("{}%", show(&t["averageUtilization"])),
            ),
            Some("Value") => (show(&cur["value"]), show(&t["value"])),
            _ => (show(&cur["averageValue"]), show(&t["averageValue"])),
        };
        let prefix = if name.is_empty() { String::new() } else { format!("{name}: ") };
        parts.push(format!("{prefix}{now}/{want}"));
    }
    let mut s = parts.join(", ");
    if specs.len() > 2 {
        s.push_str(&format!(" + {} more...", specs.len() - 2));
    }
    if s.is_empty() { "<none>".into() } else { s }
}

mod behavior;
mod calculator;
pub mod v1;
pub use behavior::*;
pub use calculator::*;

#[cfg(test)]
mod tests;
