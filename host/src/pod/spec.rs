//! What the node reads from a pod's spec and status, as pure functions: the copy it keeps,
//! restart counts, containers, the HTTP port, the network policy, `$(VAR)` expansion, and a
//! pod's refresh offset.

use crate::runtime::NetPolicy;
use serde_json::Value;
use std::time::Duration;

/// What of a bound pod the node keeps while the pod runs: everything but its status (read
/// once, at the start) and its field managers (the API server's bookkeeping). One copy per
/// pod, shared by its tasks: on a node of ten thousand pods the copies were most of its memory.
pub(super) fn kept_for_node(mut pod: Value) -> Value {
    if let Some(o) = pod.as_object_mut() {
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    pod
}

/// Restart counts by container name, from a pod's reported status (they survive a node
/// restart).
pub(super) fn restart_counts(pod: &Value) -> Vec<(String, u32)> {
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    statuses
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let name = s.get("name").and_then(Value::as_str)?;
            let n = s.get("restartCount").and_then(Value::as_u64).unwrap_or(0);
            Some((name.to_string(), u32::try_from(n).unwrap_or(u32::MAX)))
        })
        .collect()
}

/// The pod's containers (an empty slice when its spec names none).
pub(super) fn containers_of(pod: &Value) -> &[Value] {
    pod.pointer("/spec/containers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// A pod's place in a period: a delay in `[0, period)` fixed by its uid.
pub(super) fn spread(uid: &str, period: Duration) -> Duration {
    let h = uid.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(h % ms)
}

/// The pod's network policy: its address, every port its containers declare, its egress grants.
pub(super) fn net_policy(pod: &Value, ip: &str) -> Result<NetPolicy, String> {
    let ports = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["containerPort"].as_u64().and_then(|p| u16::try_from(p).ok()))
        .collect();
    let egress = pod["metadata"]["annotations"][crate::runtime::policy::EGRESS_ANNOTATION].as_str();
    NetPolicy::new(ip.parse().ok(), ports, egress)
}

/// Expand `$(VAR)` references to variables defined earlier, as Kubernetes does; `$$(VAR)` is
/// a literal `$(VAR)`, unknown references stay as written.
pub fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = a;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[i..i + 3 + end]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Where an HTTP component serves when its container declares no port (as Spin and
/// `wasmtime serve` do).
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// The port an HTTP container serves on: its first declared `containerPort`, else
/// [`DEFAULT_HTTP_PORT`].
pub(super) fn http_port(c: &Value) -> u16 {
    c.get("ports")
        .and_then(Value::as_array)
        .and_then(|p| p.first())
        .and_then(|p| p.get("containerPort"))
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(DEFAULT_HTTP_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_node_keeps_a_pod_without_its_status_and_field_managers() {
        let pod = json!({
            "metadata": {"name": "p", "annotations": {"a": "b"}, "managedFields": [{"manager": "m"}]},
            "spec": {"containers": [{"name": "c"}, {"name": "d"}]},
            "status": {"containerStatuses": [{"name": "d", "restartCount": 3}, {"name": "c"}, {"restartCount": 9}]},
        });
        assert_eq!(restart_counts(&pod), vec![("d".to_string(), 3), ("c".to_string(), 0)]);
        let kept = kept_for_node(pod);
        assert_eq!(
            kept,
            json!({"metadata": {"name": "p", "annotations": {"a": "b"}}, "spec": {"containers": [{"name": "c"}, {"name": "d"}]}})
        );
        assert_eq!(containers_of(&kept).len(), 2);
        assert!(containers_of(&json!({"spec": {"containers": "x"}})).is_empty());
        assert!(restart_counts(&json!({"status": 1})).is_empty());
        assert_eq!(kept_for_node(json!("odd")), json!("odd"));
    }

    #[test]
    fn refreshes_are_spread_over_the_period_by_uid() {
        let period = Duration::from_secs(5);
        let delays: Vec<Duration> = (0..200).map(|i| spread(&format!("uid-{i}"), period)).collect();
        assert!(delays.iter().all(|d| *d < period));
        assert_eq!(spread("uid-7", period), delays[7], "fixed for a pod");
        let first_half = delays.iter().filter(|d| **d < period / 2).count();
        assert!((60..=140).contains(&first_half), "{first_half} of 200 in the first half");
        assert_eq!(spread("u", Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn http_components_serve_on_their_first_port_or_8080() {
        assert_eq!(http_port(&json!({"ports": [{"containerPort": 9000}, {"containerPort": 9001}]})), 9000);
        assert_eq!(http_port(&json!({"name": "hello"})), DEFAULT_HTTP_PORT);
        assert_eq!(http_port(&json!({"ports": []})), DEFAULT_HTTP_PORT);
        assert_eq!(http_port(&json!({"ports": "bad"})), DEFAULT_HTTP_PORT);
    }
}
