//! Scale to zero: a Deployment annotated `wasmorch.io/scale-to-zero-after: <duration>` goes
//! to zero replicas once none of its pods has received a request for that long, and comes
//! back (to the count it had) when a request reaches one of its Services: the node's proxy
//! holds the request and asks the API server to wake the Deployment
//! (`POST /wasmorch/v1/namespaces/{ns}/services/{name}/wake`). The decisions, pure.

use crate::object;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

/// The opt-in, with the idle period (`60s`, `5m`).
pub const AFTER: &str = "wasmorch.io/scale-to-zero-after";
/// Set while scaled to zero: when it went, and the replicas it had.
pub const SCALED_AT: &str = "wasmorch.io/scaled-to-zero-at";
pub const REPLICAS_BEFORE: &str = "wasmorch.io/replicas-before-zero";
/// When it was last woken (no scale to zero within the idle period after).
pub const WOKEN_AT: &str = "wasmorch.io/woken-at";

/// The idle period a Deployment asks for; `Err` names what is wrong with the annotation.
pub fn idle_period(deploy: &Value) -> Option<Result<Duration, String>> {
    let v = deploy.pointer("/metadata/annotations")?.get(AFTER)?.as_str()?;
    Some(object::parse_duration(v).map_err(|e| format!("{AFTER}: {e}")).and_then(|d| {
        if d < Duration::from_secs(1) { Err(format!("{AFTER}: {v:?} is under a second")) } else { Ok(d) }
    }))
}

fn annotation_time(obj: &Value, key: &str) -> Option<DateTime<Utc>> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()?.parse().ok()
}

/// Whether a Deployment should go to zero now: it opted in, runs replicas, was not woken
/// within the period, and every one of its pods reports its last request (or its start) more
/// than the period ago. `last_requests` has one entry per pod: `None` where the pod's usage is
/// not known yet or it serves no HTTP (never idle, then). Pure.
pub fn should_sleep(deploy: &Value, last_requests: &[Option<DateTime<Utc>>], now: DateTime<Utc>) -> Option<Duration> {
    let period = idle_period(deploy)?.ok()?;
    let replicas = deploy.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    if replicas == 0 || last_requests.is_empty() {
        return None;
    }
    let cutoff = now - chrono::Duration::from_std(period).ok()?;
    if annotation_time(deploy, WOKEN_AT).is_some_and(|t| t > cutoff) {
        return None;
    }
    last_requests.iter().all(|l| l.is_some_and(|t| t <= cutoff)).then_some(period)
}

/// Whether a Deployment sleeps (scaled to zero by the idler, not by hand).
pub fn sleeping(deploy: &Value) -> bool {
    deploy.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0) && annotation_time(deploy, SCALED_AT).is_some()
}

/// The replicas to wake a sleeping Deployment to: what it had, at least one.
pub fn wake_replicas(deploy: &Value) -> i64 {
    deploy
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(REPLICAS_BEFORE))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Waiting reasons that mean a woken pod will not become ready soon.
const STUCK: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerError",
    "RunContainerError",
];

/// Why a pod will not serve soon, if it will not: `pod p: ErrImagePull: …`. Pure.
pub fn stuck(pod: &Value) -> Option<String> {
    if object::str_at(pod, "status.phase") == Some("Failed") {
        let why = object::str_at(pod, "status.reason").unwrap_or("Failed");
        return Some(format!("pod {}: {why}", object::name(pod)));
    }
    pod.pointer("/status/containerStatuses").and_then(Value::as_array).into_iter().flatten().find_map(|c| {
        let w = c.pointer("/state/waiting")?;
        let reason = w.get("reason").and_then(Value::as_str)?;
        STUCK.contains(&reason).then(|| {
            let msg = w.get("message").and_then(Value::as_str).unwrap_or("");
            format!("pod {}: {reason}: {msg}", object::name(pod)).trim_end_matches(": ").to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn deploy(replicas: i64, annotations: Value) -> Value {
        json!({"metadata": {"name": "web", "annotations": annotations}, "spec": {"replicas": replicas}})
    }

    #[test]
    fn idle_for_the_period_on_every_pod() {
        let d = deploy(2, json!({AFTER: "60s"}));
        assert_eq!(should_sleep(&d, &[Some(t(0)), Some(t(-30))], t(60)), Some(Duration::from_secs(60)));
        assert_eq!(should_sleep(&d, &[Some(t(0)), Some(t(1))], t(60)), None, "one pod was asked 59 s ago");
        assert_eq!(should_sleep(&d, &[Some(t(0)), None], t(600)), None, "a pod not measured yet");
        assert_eq!(should_sleep(&d, &[], t(600)), None, "no pods: nothing to judge");
        assert_eq!(should_sleep(&deploy(2, json!({})), &[Some(t(0))], t(600)), None, "not opted in");
        assert_eq!(should_sleep(&deploy(0, json!({AFTER: "60s"})), &[Some(t(0))], t(600)), None);
        let woken = deploy(1, json!({AFTER: "60s", WOKEN_AT: "2027-01-15T08:00:30Z"}));
        let woke = DateTime::parse_from_rfc3339("2027-01-15T08:00:30Z").unwrap().with_timezone(&Utc);
        let at = |s: i64| woke + chrono::Duration::seconds(s);
        assert_eq!(should_sleep(&woken, &[Some(at(-100))], at(30)), None, "woken 30 s ago");
        assert!(should_sleep(&woken, &[Some(at(-100))], at(61)).is_some());
    }

    #[test]
    fn annotations_are_checked() {
        assert!(idle_period(&deploy(1, json!({AFTER: "soon"}))).unwrap().unwrap_err().contains(AFTER));
        assert!(idle_period(&deploy(1, json!({AFTER: "0s"}))).unwrap().is_err());
        assert_eq!(idle_period(&deploy(1, json!({AFTER: "5m"}))).unwrap(), Ok(Duration::from_secs(300)));
        assert_eq!(wake_replicas(&deploy(0, json!({REPLICAS_BEFORE: "3"}))), 3);
        assert_eq!(wake_replicas(&deploy(0, json!({REPLICAS_BEFORE: "x"}))), 1);
        assert!(sleeping(&deploy(0, json!({SCALED_AT: "2026-01-01T00:00:00Z"}))));
        assert!(!sleeping(&deploy(0, json!({}))), "scaled to zero by hand: not woken by requests");
    }

    #[test]
    fn stuck_pods_say_why() {
        let p = json!({"metadata": {"name": "web-1"}, "status": {"phase": "Pending", "containerStatuses": [
            {"state": {"waiting": {"reason": "ErrImagePull", "message": "no such image"}}}]}});
        assert_eq!(stuck(&p).unwrap(), "pod web-1: ErrImagePull: no such image");
        let starting = json!({"metadata": {"name": "web-2"}, "status": {"containerStatuses": [
            {"state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(stuck(&starting), None);
    }
}
