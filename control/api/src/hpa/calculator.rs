//! Kubernetes' replica calculator: how many replicas a per-pod or per-object metric asks for.

use super::{CPU_INITIALIZATION_PERIOD, INITIAL_READINESS_DELAY};
use crate::object;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

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
