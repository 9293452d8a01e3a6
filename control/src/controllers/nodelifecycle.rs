//! Node lifecycle: a node whose Lease is not renewed within the grace period is marked
//! `Ready=Unknown` and tainted `node.kubernetes.io/unreachable:NoExecute`; its pods are
//! evicted (deleted, so their controllers replace them elsewhere) once their toleration of
//! that taint runs out — `tolerationSeconds`, or the eviction timeout for pods without one.
//! A node renewing again loses the taint. Defaults suit edge clusters: lost node → pods
//! running elsewhere in about 12 s, where Kubernetes' defaults (40 s grace + 300 s toleration)
//! take about 6 minutes. [`plan`] is pure.

use super::replicaset::target;
use super::runtime::Informer;
use crate::apiserver::api::Api;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{object, resources};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How long a node's Lease may go unrenewed before the node is unreachable.
    pub grace: Duration,
    /// How long pods without their own toleration stay on an unreachable node.
    pub eviction_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { grace: Duration::from_secs(10), eviction_timeout: Duration::from_secs(2) }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to mark `Ready=Unknown` and taint unreachable.
    pub unreachable: Vec<String>,
    /// Nodes back: remove the taint.
    pub reachable: Vec<String>,
    /// Pods (namespace, name) to evict.
    pub evict: Vec<(String, String)>,
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()?.parse().ok()
}

/// The last time the node showed life: its Lease's renewal, or its Ready heartbeat.
fn last_seen(node: &Value, lease: Option<&Value>) -> Option<DateTime<Utc>> {
    let renew = lease.and_then(|l| time(&l["spec"]["renewTime"]));
    let beat = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| time(&c["lastHeartbeatTime"]));
    renew.max(beat).or_else(|| time(&node["metadata"]["creationTimestamp"]))
}

fn taint_added(node: &Value) -> Option<Option<DateTime<Utc>>> {
    node["spec"]["taints"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == UNREACHABLE && t["effect"] == "NoExecute")
        .map(|t| time(&t["timeAdded"]))
}

/// How long `pod` tolerates the unreachable taint: `None` forever.
fn tolerates_for(pod: &Value, default: Duration) -> Option<Duration> {
    let tols = pod["spec"]["tolerations"].as_array();
    let matching = tols.into_iter().flatten().find(|t| {
        let key_ok = t["key"] == UNREACHABLE || (t["key"].is_null() && t["operator"] == "Exists");
        let effect_ok = t["effect"].is_null() || t["effect"] == "NoExecute";
        key_ok && effect_ok
    });
    match matching {
        Some(t) => t["tolerationSeconds"].as_i64().map(|s| Duration::from_secs(s.max(0) as u64)),
        None => Some(default),
    }
}

/// What to do now. When every node is silent at once, the likelier cause is the control
/// plane itself having been away (a laptop waking up, a partition on its side), so nothing is
/// tainted or evicted — Kubernetes' "full disruption" rule.
pub fn plan<'a>(
    nodes: impl IntoIterator<Item = &'a Value> + Clone,
    leases: impl IntoIterator<Item = &'a Value>,
    pods: impl IntoIterator<Item = &'a Value>,
    now: DateTime<Utc>,
    cfg: Config,
) -> Plan {
    let mut p = Plan::default();
    let leases: std::collections::HashMap<&str, &Value> = leases
        .into_iter()
        .filter(|l| object::namespace(l) == "kube-node-lease")
        .map(|l| (object::name(l), l))
        .collect();
    let silent_of = |n: &Value| {
        let lease = leases.get(object::name(n)).copied();
        last_seen(n, lease).is_none_or(|t| now.signed_duration_since(t).to_std().unwrap_or_default() > cfg.grace)
    };
    let mut all = nodes.clone().into_iter().peekable();
    if all.peek().is_some() && all.all(silent_of) {
        return p;
    }
    // Nodes tainted for a while and still silent, with how long: their pods may be due.
    let mut tainted: std::collections::HashMap<&str, Duration> = std::collections::HashMap::new();
    for n in nodes {
        let name = object::name(n);
        match (silent_of(n), taint_added(n)) {
            (true, None) => p.unreachable.push(name.to_string()),
            (false, Some(_)) => p.reachable.push(name.to_string()),
            (true, Some(added)) => {
                let since = added.unwrap_or(now);
                tainted.insert(name, now.signed_duration_since(since).to_std().unwrap_or_default());
            }
            (false, None) => {}
        }
    }
    if tainted.is_empty() {
        return p;
    }
    for pod in pods {
        let Some(tainted_for) = pod.pointer("/spec/nodeName").and_then(Value::as_str).and_then(|n| tainted.get(n))
        else {
            continue;
        };
        if object::is_deleting(pod) || matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            continue;
        }
        if tolerates_for(pod, cfg.eviction_timeout).is_some_and(|t| *tainted_for >= t) {
            p.evict.push((object::namespace(pod).to_string(), object::name(pod).to_string()));
        }
    }
    p
}

async fn act(api: &Api, p: Plan) {
    let nodes = resources::of(resources::ResourceKind::Node);
    let pods = resources::of(resources::ResourceKind::Pod);
    let now = object::now_rfc3339();
    for name in p.unreachable {
        tracing::warn!("node {name} stopped renewing its lease: marking it unreachable");
        let t = target(nodes, "", &name, None);
        let Ok(node) = api.get(&t).await else { continue };
        let mut taints = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
        taints.push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now}));
        let patch = json!({"spec": {"taints": taints}});
        if let Err(e) = api.patch(&t, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await {
            tracing::warn!("tainting node {name}: {e}");
        }
        let cond = json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": node["status"]["conditions"]
                .as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready")).map(|c| c["lastHeartbeatTime"].clone()),
            "lastTransitionTime": now});
        let conds = object::with_condition(&node["status"]["conditions"], cond);
        let st = target(nodes, "", &name, Some("status"));
        let patch = json!({"status": {"conditions": conds}});
        if let Err(e) = api.patch(&st, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await {
            tracing::warn!("marking node {name} Ready=Unknown: {e}");
        }
        super::events::record(
            api,
            &node,
            "Normal",
            "NodeNotReady",
            format!("Node {name} status is now: NodeNotReady"),
            "node-controller",
        )
        .await;
    }
    for name in p.reachable {
        tracing::info!("node {name} renews its lease again");
        let t = target(nodes, "", &name, None);
        let Ok(node) = api.get(&t).await else { continue };
        let taints: Vec<Value> = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| !(t["key"] == UNREACHABLE && t["effect"] == "NoExecute"))
            .cloned()
            .collect();
        let patch = json!({"spec": {"taints": if taints.is_empty() { Value::Null } else { json!(taints) }}});
        if let Err(e) = api.patch(&t, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await {
            tracing::warn!("untainting node {name}: {e}");
        }
    }
    for (ns, name) in p.evict {
        let t = target(pods, &ns, &name, None);
        match api.delete(&t, Default::default(), false).await {
            Ok(w) => {
                let msg = format!("Marking for deletion Pod {ns}/{name}");
                super::events::record(
                    api,
                    &w.object,
                    "Normal",
                    "TaintManagerEviction",
                    msg,
                    "taint-eviction-controller",
                )
                .await;
            }
            Err(e) if e.code == 404 => {}
            Err(e) => tracing::warn!("evicting {ns}/{name}: {e}"),
        }
    }
}

/// Check every second until shutdown.
pub async fn start(api: Api, nodes: Arc<Informer>, pods: Arc<Informer>, leases: Arc<Informer>, cfg: Config) {
    nodes.cache.wait_synced().await;
    pods.cache.wait_synced().await;
    leases.cache.wait_synced().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = api.shutdown.cancelled() => return,
        }
        // Read in place: at 10 000 pods a copy of each cache every second was a tenth of the
        // API server's CPU. The plan is pure and quick; the three read locks are taken in one
        // order and writers take one at a time.
        let now = Utc::now();
        let p = nodes.cache.with_all(|n| leases.cache.with_all(|l| pods.cache.with_all(|p| plan(n, l, p, now, cfg))));
        if p != Plan::default() {
            act(&api, p).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, beat: &str, taint: Option<&str>) -> Value {
        let mut n = json!({"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": beat}]}, "spec": {}});
        if let Some(t) = taint {
            n["spec"]["taints"] = json!([{"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": t}]);
        }
        n
    }

    fn pod(name: &str, node: &str, tols: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"nodeName": node, "tolerations": tols}, "status": {"phase": "Running"}})
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn silent_nodes_are_tainted_and_come_back() {
        let cfg = Config::default();
        let nodes = [node("a", "2026-01-01T00:00:00Z", None), node("b", "2026-01-01T00:00:09Z", None)];
        let p = plan(&nodes, &[], &[], at("2026-01-01T00:00:11Z"), cfg);
        assert_eq!(p.unreachable, ["a"]);
        // Every node silent: the control plane was away; nothing is done.
        assert_eq!(plan(&nodes, &[], &[], at("2026-01-01T00:01:00Z"), cfg), Plan::default());
        // A fresh Lease counts as life even when the heartbeat is old.
        let lease = json!({"metadata": {"name": "a", "namespace": "kube-node-lease"}, "spec": {"renewTime": "2026-01-01T00:00:10.5Z"}});
        assert_eq!(plan(&nodes, &[lease], &[], at("2026-01-01T00:00:11Z"), cfg), Plan::default());
        let back = [node("a", "2026-01-01T00:00:20Z", Some("2026-01-01T00:00:11Z"))];
        assert_eq!(plan(&back, &[], &[], at("2026-01-01T00:00:21Z"), cfg).reachable, ["a"]);
    }

    #[test]
    fn pods_are_evicted_when_their_toleration_runs_out() {
        let cfg = Config::default();
        let nodes =
            [node("a", "2026-01-01T00:00:00Z", Some("2026-01-01T00:00:11Z")), node("b", "2026-01-01T00:02:00Z", None)];
        let pods = [
            pod("plain", "a", json!(null)),
            pod(
                "patient",
                "a",
                json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]),
            ),
            pod("daemon", "a", json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}])),
            pod("elsewhere", "b", json!(null)),
        ];
        let early = plan(&nodes, &[], &pods, at("2026-01-01T00:00:12Z"), cfg);
        assert!(early.evict.is_empty(), "{early:?}");
        let p = plan(&nodes, &[], &pods, at("2026-01-01T00:00:13Z"), cfg);
        assert_eq!(p.evict, [("d".to_string(), "plain".to_string())]);
        let p = plan(&nodes, &[], &pods, at("2026-01-01T00:01:11Z"), cfg);
        assert_eq!(p.evict.len(), 2, "the patient one too, never the daemon: {p:?}");
        let mut deleting = pods[0].clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:13Z");
        assert!(plan(&nodes, &[], &[deleting], at("2026-01-01T00:00:14Z"), cfg).evict.is_empty());
    }
}
