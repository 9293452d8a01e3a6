//! PodDisruptionBudgets: how many of the pods a budget selects may be disrupted now. Pure;
//! used by `pods/eviction` and by the budget's status.

use crate::object;
use crate::selector::LabelSelector;
use serde_json::{Value, json};

/// The state of one budget over the pods of its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub expected: i64,
    pub healthy: i64,
    pub desired_healthy: i64,
    pub allowed: i64,
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Whether `pod` counts toward the budget's healthy pods.
pub fn healthy(pod: &Value) -> bool {
    ready(pod) && !object::is_deleting(pod)
}

/// Whether the budget selects `pod`.
pub fn selects(pdb: &Value, pod: &Value) -> bool {
    object::namespace(pdb) == object::namespace(pod)
        && LabelSelector::from_object(&pdb["spec"]["selector"]).is_ok_and(|s| s.selects(pod))
        && pdb["spec"]["selector"].is_object()
}

/// An int-or-percent of `of`, rounded up (as Kubernetes does for budgets).
fn scaled(v: &Value, of: i64) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let p: i64 = v.as_str()?.strip_suffix('%')?.parse().ok()?;
    Some((p * of + 99) / 100)
}

pub fn budget(pdb: &Value, pods: &[Value]) -> Budget {
    let mine: Vec<&Value> = pods
        .iter()
        .filter(|p| selects(pdb, p))
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .collect();
    let expected = mine.len() as i64;
    let healthy = mine.iter().filter(|p| healthy(p)).count() as i64;
    let spec = &pdb["spec"];
    let desired_healthy = match (spec.get("minAvailable"), spec.get("maxUnavailable")) {
        (Some(m), _) if !m.is_null() => scaled(m, expected).unwrap_or(expected),
        (_, Some(m)) if !m.is_null() => expected - scaled(m, expected).unwrap_or(0),
        _ => expected,
    }
    .max(0);
    Budget { expected, healthy, desired_healthy, allowed: (healthy - desired_healthy).max(0) }
}

/// The budget's `status`.
pub fn status(pdb: &Value, b: Budget, now: &str) -> Value {
    let ok = b.allowed > 0;
    json!({
        "observedGeneration": pdb["metadata"]["generation"],
        "expectedPods": b.expected, "currentHealthy": b.healthy, "desiredHealthy": b.desired_healthy,
        "disruptionsAllowed": b.allowed,
        "conditions": [{"type": "DisruptionAllowed", "status": if ok { "True" } else { "False" },
            "reason": if ok { "SufficientPods" } else { "InsufficientPods" }, "message": "",
            "observedGeneration": pdb["metadata"]["generation"], "lastTransitionTime": now}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "web"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pdb(spec: Value) -> Value {
        let mut s = spec;
        s["selector"] = json!({"matchLabels": {"app": "web"}});
        json!({"metadata": {"name": "b", "namespace": "d", "generation": 1}, "spec": s})
    }

    #[test]
    fn budgets_count_healthy_pods_against_min_available_or_max_unavailable() {
        let pods = [pod("a", true), pod("b", true), pod("c", true), pod("d", false)];
        assert_eq!(
            budget(&pdb(json!({"minAvailable": 2})), &pods),
            Budget { expected: 4, healthy: 3, desired_healthy: 2, allowed: 1 }
        );
        assert_eq!(budget(&pdb(json!({"minAvailable": 3})), &pods).allowed, 0);
        assert_eq!(budget(&pdb(json!({"minAvailable": "50%"})), &pods).desired_healthy, 2);
        assert_eq!(budget(&pdb(json!({"maxUnavailable": 1})), &pods).desired_healthy, 3);
        assert_eq!(budget(&pdb(json!({"maxUnavailable": 1})), &pods).allowed, 0);
        assert_eq!(budget(&pdb(json!({"maxUnavailable": "50%"})), &pods).allowed, 1);
        let mut going = pod("a", true);
        going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(budget(&pdb(json!({"minAvailable": 2})), &[going, pod("b", true)]).allowed, 0);
        let mut other = pod("x", true);
        other["metadata"]["labels"]["app"] = json!("db");
        assert!(!selects(&pdb(json!({})), &other));
        let st = status(&pdb(json!({"minAvailable": 3})), budget(&pdb(json!({"minAvailable": 3})), &pods), "t");
        assert_eq!(st["disruptionsAllowed"], 0);
        assert_eq!(st["conditions"][0]["reason"], "InsufficientPods");
    }
}
