//! HorizontalPodAutoscaler (`autoscaling/v2`): defaults, validation, and the controller's
//! decisions as pure functions, following Kubernetes' replica calculator and its behavior
//! rules (stabilization windows, scaling policies) exactly, so the controller only gathers
//! inputs and writes results.

use crate::object;
use crate::validation::Causes;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;
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

fn set_default(v: &mut Value, key: &str, default: Value) {
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

/// One pod as the replica calculator sees it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub name: String,
    pub phase: String,
    pub deleting: bool,
    pub start: Option<DateTime<Utc>>,
    /// The Ready condition: (status is True, lastTransitionTime).
    pub ready: Option<(bool, Option<DateTime<Utc>>)>,
    /// The pod's request of the resource (sum over the containers asked for), if every one has one.
    pub request: Option<f64>,
}

fn ts(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()?.parse().ok()
}

/// The containers a resource metric looks at: all, or the one named.
fn containers<'a>(pod: &'a Value, container: Option<&'a str>) -> impl Iterator<Item = &'a Value> + 'a {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |c| container.is_none_or(|n| c.get("name").and_then(Value::as_str) == Some(n)))
}

impl PodView {
    /// From a Pod object, with its request of `resource` (in cores for cpu, bytes otherwise).
    pub fn of(pod: &Value, resource: &str, container: Option<&str>) -> PodView {
        let ready = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
            .map(|c| (c.get("status").and_then(Value::as_str) == Some("True"), ts(&c["lastTransitionTime"])));
        let mut request = Some(0.0);
        let mut any = false;
        for c in containers(pod, container) {
            any = true;
            let q = c
                .pointer(&format!("/resources/requests/{resource}"))
                .and_then(Value::as_str)
                .and_then(crate::quantity::parse);
            request = match (request, q) {
                (Some(sum), Some(q)) => Some(sum + q),
                _ => None,
            };
        }
        PodView {
            name: object::name(pod).to_string(),
            phase: object::str_at(pod, "status.phase").unwrap_or("").to_string(),
            deleting: object::is_deleting(pod),
            start: ts(&pod["status"]["startTime"]),
            ready,
            request: request.filter(|_| any),
        }
    }
}

/// A pod's measured value (cores for cpu, bytes for memory, a rate for others), with when
/// and over what window it was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub value: f64,
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
}

/// What a metric asks for per pod.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(f64),
    /// An average value per pod.
    AverageValue(f64),
}

/// The replica calculator's answer for one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Replicas {
    pub replicas: i64,
    /// Percent of requests, for Utilization targets.
    pub utilization: Option<i64>,
    /// Average value per pod over the pods measured.
    pub average: f64,
    pub timestamp: Option<DateTime<Utc>>,
}

/// Kubernetes' grouping of pods: counted ready, unready (starting), missing metrics, ignored.
struct Groups {
    ready: usize,
    unready: Vec<String>,
    missing: Vec<String>,
}

fn group_pods(
    pods: &[PodView],
    metrics: &HashMap<String, Sample>,
    cpu: bool,
    now: DateTime<Utc>,
) -> (Groups, Vec<String>) {
    let mut g = Groups { ready: 0, unready: Vec::new(), missing: Vec::new() };
    let mut ignored = Vec::new();
    let secs = |d: Duration| chrono::Duration::from_std(d).unwrap_or_default();
    for p in pods {
        if p.deleting || p.phase == "Failed" {
            ignored.push(p.name.clone());
            continue;
        }
        if p.phase == "Pending" {
            g.unready.push(p.name.clone());
            continue;
        }
        let Some(m) = metrics.get(&p.name) else {
            g.missing.push(p.name.clone());
            continue;
        };
        if cpu {
            let unready = match (p.start, p.ready) {
                (None, _) | (_, None) => true,
                (Some(start), Some((is_ready, transition))) => {
                    let transition = transition.unwrap_or(start);
                    if start + secs(CPU_INITIALIZATION_PERIOD) > now {
                        // Starting: trusted only once ready and measured after becoming so.
                        !is_ready || m.timestamp < transition + secs(m.window)
                    } else {
                        // Never ready since a start long ago, within the initial delay.
                        !is_ready && start + secs(INITIAL_READINESS_DELAY) > transition
                    }
                }
            };
            if unready {
                g.unready.push(p.name.clone());
                continue;
            }
        }
        g.ready += 1;
    }
    (g, ignored)
}

/// Usage ratio of `metrics` against the target, and the utilization (percent) or average.
fn ratio(
    metrics: &HashMap<String, f64>,
    requests: &HashMap<String, f64>,
    target: Target,
) -> Result<(f64, Option<i64>, f64), String> {
    let n = metrics.len().max(1) as f64;
    let total: f64 = metrics.values().sum();
    match target {
        Target::Utilization(t) => {
            let mut req = 0.0;
            for name in metrics.keys() {
                req += requests.get(name).copied().ok_or_else(|| format!("missing request for pod {name}"))?;
            }
            if req <= 0.0 {
                return Err("no pod has a request".into());
            }
            let util = 100.0 * total / req;
            Ok((util / t, Some(util as i64), total / n))
        }
        Target::AverageValue(t) => Ok((total / (t * n), None, total / n)),
    }
}

/// Kubernetes' replica calculator for a per-pod metric (`GetResourceReplicas` and
/// `GetMetricReplicas`): `ceil(current × usage / target)` over the ready pods, within the
/// tolerance; pods starting (for CPU) and pods without a measurement are counted in the
/// direction that moves least (as 0 on a scale-up, as at their request or the target on a
/// scale-down), and a change that would flip the direction is no change. `resource` is
/// `cpu` for the CPU readiness rules.
pub fn replicas_for(
    current: i64,
    pods: &[PodView],
    samples: &HashMap<String, Sample>,
    target: Target,
    cpu: bool,
    tolerance: f64,
    now: DateTime<Utc>,
) -> Result<Replicas, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let (groups, ignored) = group_pods(pods, samples, cpu, now);
    let mut metrics: HashMap<String, f64> = samples
        .iter()
        .filter(|(n, _)| !ignored.contains(n) && !groups.unready.contains(n) && pods.iter().any(|p| &p.name == *n))
        .map(|(n, s)| (n.clone(), s.value))
        .collect();
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let timestamp = samples.values().map(|s| s.timestamp).min();
    let requests: HashMap<String, f64> = pods.iter().filter_map(|p| Some((p.name.clone(), p.request?))).collect();
    if matches!(target, Target::Utilization(_))
        && let Some(p) = pods.iter().find(|p| metrics.contains_key(&p.name) && p.request.is_none())
    {
        return Err(format!(
            "missing request for {} in container(s) of pod {}",
            if cpu { "cpu" } else { "the resource" },
            p.name
        ));
    }
    let (usage, utilization, average) = ratio(&metrics, &requests, target)?;
    let result = |replicas| Replicas { replicas, utilization, average, timestamp };
    let rebalance_ignored = !groups.unready.is_empty() && usage > 1.0;
    if !rebalance_ignored && groups.missing.is_empty() {
        if (1.0 - usage).abs() <= tolerance {
            return Ok(result(current));
        }
        return Ok(result((usage * groups.ready as f64).ceil() as i64));
    }
    if !groups.missing.is_empty() {
        for name in &groups.missing {
            let v = if usage < 1.0 {
                // Scale-down: a missing pod counts as using its request (or the target above 100 %).
                match target {
                    Target::Utilization(t) => requests.get(name).copied().unwrap_or(0.0) * t.max(100.0) / 100.0,
                    Target::AverageValue(t) => t,
                }
            } else {
                0.0
            };
            if usage != 1.0 {
                metrics.insert(name.clone(), v);
            }
        }
    }
    if rebalance_ignored {
        for name in &groups.unready {
            metrics.insert(name.clone(), 0.0);
        }
    }
    let (new_usage, _, _) = ratio(&metrics, &requests, target)?;
    if (1.0 - new_usage).abs() <= tolerance || (usage < 1.0 && new_usage > 1.0) || (usage > 1.0 && new_usage < 1.0) {
        return Ok(result(current));
    }
    let replicas = (new_usage * metrics.len() as f64).ceil() as i64;
    if (new_usage < 1.0 && replicas > current) || (new_usage > 1.0 && replicas < current) {
        return Ok(result(current));
    }
    Ok(result(replicas))
}

/// Kubernetes' replica calculator for a metric of one object (`GetObjectMetricReplicas`):
/// a `Value` target scales by `value / target`, an `AverageValue` target by the value over
/// the target per replica.
pub fn replicas_for_object(
    current: i64,
    ready_pods: i64,
    value: f64,
    target: Target,
    average: bool,
    tolerance: f64,
) -> i64 {
    let t = match target {
        Target::AverageValue(t) | Target::Utilization(t) => t,
    };
    if average {
        let usage = value / (t * current.max(1) as f64);
        if (1.0 - usage).abs() <= tolerance {
            return current;
        }
        return (value / t).ceil() as i64;
    }
    let usage = value / t;
    if (1.0 - usage).abs() <= tolerance {
        return current;
    }
    (usage * ready_pods as f64).ceil() as i64
}

/// One direction's scaling rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub window: Duration,
    /// `Max`, `Min` or `Disabled`.
    pub select: String,
    /// (`Pods` or `Percent`, value, period).
    pub policies: Vec<(String, i64, Duration)>,
}

impl Rules {
    /// From `spec.behavior.scaleUp`/`scaleDown` (defaults filled in), `default_window` when it
    /// sets none.
    pub fn of(v: Option<&Value>, defaults: Value, default_window: Duration) -> Rules {
        let mut r = v.cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
        if let Some(d) = defaults.as_object() {
            for (k, dv) in d {
                set_default(&mut r, k, dv.clone());
            }
        }
        let secs = |v: &Value| Duration::from_secs(v.as_i64().unwrap_or(0).max(0) as u64);
        Rules {
            window: r.get("stabilizationWindowSeconds").map_or(default_window, secs),
            select: r["selectPolicy"].as_str().unwrap_or("Max").to_string(),
            policies: r["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["type"].as_str().unwrap_or("").to_string(),
                        p["value"].as_i64().unwrap_or(0),
                        secs(&p["periodSeconds"]),
                    )
                })
                .collect(),
        }
    }
}

/// A recommendation or a scale event, at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamped {
    pub at: DateTime<Utc>,
    pub value: i64,
}

/// What the controller remembers per HPA between syncs (as Kubernetes' controller does, in
/// memory): recent recommendations and scale events.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub recommendations: Vec<Stamped>,
    pub ups: Vec<Stamped>,
    pub downs: Vec<Stamped>,
}

/// The result of normalizing a desired count: the count, and the reasons for the
/// `AbleToScale` and `ScalingLimited` conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub replicas: i64,
    pub able: (&'static str, &'static str),
    /// (limited, reason, message).
    pub limited: (bool, &'static str, &'static str),
}

fn change_in(period: Duration, events: &[Stamped], now: DateTime<Utc>) -> i64 {
    let cutoff = now - chrono::Duration::from_std(period).unwrap_or_default();
    events.iter().filter(|e| e.at > cutoff).map(|e| e.value).sum()
}

fn up_limit(current: i64, h: &History, r: &Rules, now: DateTime<Utc>) -> i64 {
    if r.select == "Disabled" {
        return current;
    }
    let min = r.select == "Min";
    let mut result = if min { i64::MAX } else { i64::MIN };
    for (ty, value, period) in &r.policies {
        let start = current - change_in(*period, &h.ups, now) + change_in(*period, &h.downs, now);
        let proposed =
            if ty == "Pods" { start + value } else { (start as f64 * (1.0 + *value as f64 / 100.0)).ceil() as i64 };
        result = if min { result.min(proposed) } else { result.max(proposed) };
    }
    result
}

fn down_limit(current: i64, h: &History, r: &Rules, now: DateTime<Utc>) -> i64 {
    if r.select == "Disabled" {
        return current;
    }
    let min = r.select == "Min";
    let mut result = if min { i64::MIN } else { i64::MAX };
    for (ty, value, period) in &r.policies {
        let start = current - change_in(*period, &h.ups, now) + change_in(*period, &h.downs, now);
        let proposed = if ty == "Pods" { start - value } else { (start as f64 * (1.0 - *value as f64 / 100.0)) as i64 };
        result = if min { result.max(proposed) } else { result.min(proposed) };
    }
    result
}

/// Kubernetes' `normalizeDesiredReplicasWithBehaviors`: stabilize the desired count over each
/// direction's window (recording it in `h`), then limit the rate by the policies and keep it
/// within [min, max].
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    h: &mut History,
    current: i64,
    desired: i64,
    min: i64,
    max: i64,
    up: &Rules,
    down: &Rules,
    now: DateTime<Utc>,
) -> Normalized {
    let cut = |w: Duration| now - chrono::Duration::from_std(w).unwrap_or_default();
    let (up_cut, down_cut) = (cut(up.window), cut(down.window));
    let (mut up_rec, mut down_rec) = (desired, desired);
    let mut old = None;
    for (i, r) in h.recommendations.iter().enumerate() {
        if r.at > up_cut {
            up_rec = up_rec.min(r.value);
        }
        if r.at > down_cut {
            down_rec = down_rec.max(r.value);
        }
        if r.at < up_cut && r.at < down_cut {
            old = Some(i);
        }
    }
    let stabilized = current.max(up_rec).min(down_rec);
    match old {
        Some(i) => h.recommendations[i] = Stamped { at: now, value: desired },
        None => h.recommendations.push(Stamped { at: now, value: desired }),
    }
    // Entries past both windows are replaced one per sync; drop the rest of them.
    h.recommendations.retain(|r| r.at >= up_cut.min(down_cut) || r.at == now);
    let able = if stabilized != desired {
        if desired >= current {
            (
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        }
    } else {
        ("ReadyForNewScale", "recommended size matches current size")
    };
    let within = (false, "DesiredWithinRange", "the desired count is within the acceptable range");
    let (replicas, limited) = if stabilized > current {
        let limit = up_limit(current, h, up, now).max(current);
        let (allowed, reason, msg) = if max > limit {
            (limit, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
        } else {
            (max, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        };
        if stabilized > allowed { (allowed, (true, reason, msg)) } else { (stabilized, within) }
    } else if stabilized < current {
        let limit = down_limit(current, h, down, now).min(current);
        let (allowed, reason, msg) = if min < limit {
            (limit, "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
        } else {
            (min, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        };
        if stabilized < allowed { (allowed, (true, reason, msg)) } else { (stabilized, within) }
    } else {
        (stabilized, within)
    };
    Normalized { replicas, able, limited }
}

/// Record a rescale from `from` to `to` in `h`, forgetting events older than the longest
/// policy period.
pub fn record_scale(h: &mut History, from: i64, to: i64, up: &Rules, down: &Rules, now: DateTime<Utc>) {
    let keep = |r: &Rules| r.policies.iter().map(|p| p.2).max().unwrap_or_default();
    let (ku, kd) = (keep(up), keep(down));
    h.ups.retain(|e| now - chrono::Duration::from_std(ku).unwrap_or_default() < e.at);
    h.downs.retain(|e| now - chrono::Duration::from_std(kd).unwrap_or_default() < e.at);
    if to > from {
        h.ups.push(Stamped { at: now, value: to - from });
    } else if to < from {
        h.downs.push(Stamped { at: now, value: from - to });
    }
}

#[cfg(test)]
mod tests;
