//! DaemonSet: one pod on every eligible node (its node selector, affinity and the node's
//! taints decide), placed directly on the node; nodes that join get one, nodes that leave or
//! stop matching lose theirs. A template change rolls out node by node, at most
//! `maxUnavailable` (default 1) nodes without a ready pod at a time.

use super::deployment::{resolve, template_hash};
use super::events;
use super::replicaset::{controller_of, is_ready, merge_patch, pod_from_template, target};
use super::runtime::{Action, Informer, Queue, key_of, run_workers};
use crate::apiserver::api::Api;
use crate::scheduler::plan::{NodeInfo, selector_and_affinity, taints_tolerated};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object, resources};

const COMPONENT: &str = "daemonset-controller";
pub const HASH_LABEL: &str = "controller-revision-hash";

/// Tolerations every daemon pod gets, as Kubernetes adds them: daemons keep running on
/// nodes that are unreachable, not ready, cordoned or under pressure.
fn with_default_tolerations(template: &Value) -> Value {
    let mut t = template.clone();
    let mut tols = t["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ] {
        if !tols.iter().any(|x| x["key"] == key) {
            tols.push(json!({"key": key, "operator": "Exists", "effect": effect}));
        }
    }
    t["spec"]["tolerations"] = json!(tols);
    t
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create a pod on.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    pub status: Value,
}

pub fn plan(ds: &Value, nodes: &[Value], pods: &[Value]) -> Plan {
    let mut p = Plan::default();
    let uid = object::uid(ds);
    let template = with_default_tolerations(&ds["spec"]["template"]);
    let probe_pod = json!({"metadata": {"namespace": object::namespace(ds)}, "spec": template["spec"]});
    let hash = template_hash(&ds["spec"]["template"]);
    let mut by_node: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for pod in pods {
        if controller_of(pod).is_some_and(|(_, _, u)| u == uid) && !object::is_deleting(pod) {
            by_node.entry(pod["spec"]["nodeName"].as_str().unwrap_or("")).or_default().push(pod);
        }
    }
    let eligible: Vec<String> = nodes
        .iter()
        .map(NodeInfo::from_node)
        .filter(|n| selector_and_affinity(&probe_pod, n) && taints_tolerated(&probe_pod, n))
        .map(|n| n.name)
        .collect();
    let desired = eligible.len() as i64;
    let max_unavailable =
        resolve(&ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], desired, false, "1").max(1);
    let on_delete = ds["spec"]["updateStrategy"]["type"] == "OnDelete";
    let mut misscheduled = 0;
    for (node, pods) in &by_node {
        if !eligible.iter().any(|e| e == node) {
            misscheduled += 1;
            p.delete.extend(pods.iter().map(|x| object::name(x).to_string()));
        }
    }
    let (mut current, mut ready, mut updated, mut unavailable) = (0, 0, 0, 0);
    let mut outdated: Vec<&Value> = Vec::new();
    for node in &eligible {
        let here = by_node.get(node.as_str()).cloned().unwrap_or_default();
        match here.as_slice() {
            [] => {
                p.create.push(node.clone());
                unavailable += 1;
            }
            [one, extra @ ..] => {
                current += 1;
                p.delete.extend(extra.iter().map(|x| object::name(x).to_string()));
                let is_new = one["metadata"]["labels"][HASH_LABEL] == hash.as_str();
                if is_new {
                    updated += 1;
                } else {
                    outdated.push(one);
                }
                if is_ready(one) {
                    ready += 1;
                } else {
                    unavailable += 1;
                }
            }
        }
    }
    // Rolling update: replace outdated pods while the unavailable budget allows, not-ready
    // ones first (replacing them costs nothing).
    if !on_delete {
        outdated.sort_by_key(|x| is_ready(x));
        let mut budget = max_unavailable - unavailable;
        for pod in outdated {
            if !is_ready(pod) {
                p.delete.push(object::name(pod).to_string());
            } else if budget > 0 {
                budget -= 1;
                p.delete.push(object::name(pod).to_string());
            }
        }
    }
    p.status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": (desired - ready).max(0),
        "updatedNumberScheduled": updated,
        "observedGeneration": ds["metadata"]["generation"],
    });
    p
}

struct Ctl {
    api: Api,
    sets: Arc<Informer>,
    nodes: Arc<Informer>,
    pods: Arc<Informer>,
}

impl Ctl {
    async fn reconcile(&self, key: String) -> Result<Action, ApiError> {
        let Some(ds) = self.sets.cache.get(&key) else { return Ok(Action::AwaitChange) };
        if object::is_deleting(&ds) {
            return Ok(Action::AwaitChange);
        }
        let ns = object::namespace(&ds).to_string();
        let plan = plan(&ds, &self.nodes.cache.list(None), &self.pods.cache.list(Some(&ns)));
        let pres = resources::of(resources::ResourceKind::Pod);
        let hash = template_hash(&ds["spec"]["template"]);
        for node in &plan.create {
            let mut pod = pod_from_template(&ds, &with_default_tolerations(&ds["spec"]["template"]), object::name(&ds));
            if !pod["metadata"]["labels"].is_object() {
                pod["metadata"]["labels"] = json!({});
            }
            pod["metadata"]["labels"][HASH_LABEL] = json!(hash);
            pod["spec"]["nodeName"] = json!(node);
            let w = self.api.create(pres, Some(&ns), pod, FieldValidation::Ignore, false).await?;
            let msg = format!("Created pod: {}", object::name(&w.object));
            self.pods.cache.assume(w.object);
            events::record(&self.api, &ds, "Normal", "SuccessfulCreate", msg, COMPONENT).await;
        }
        for name in &plan.delete {
            match self.api.delete(&target(pres, &ns, name, None), Default::default(), false).await {
                Ok(w) => self.pods.cache.assume(w.object),
                Err(ApiError { code: 404, .. }) => {}
                Err(e) => return Err(e),
            }
            events::record(&self.api, &ds, "Normal", "SuccessfulDelete", format!("Deleted pod: {name}"), COMPONENT)
                .await;
        }
        if ds["status"] != plan.status {
            let res = resources::of(resources::ResourceKind::DaemonSet);
            let o = merge_patch(
                &self.api,
                &target(res, &ns, object::name(&ds), Some("status")),
                json!({"status": plan.status}),
            )
            .await?;
            self.sets.cache.assume(o);
        }
        Ok(Action::AwaitChange)
    }
}

pub fn start(api: Api, sets: Arc<Informer>, nodes: Arc<Informer>, pods: Arc<Informer>) -> impl Future<Output = ()> {
    let queue = Queue::new();
    {
        let q = queue.clone();
        sets.on_change(Arc::new(move |_, new| {
            if let Some(d) = new {
                q.add(key_of(d));
            }
        }));
    }
    {
        let q = queue.clone();
        pods.on_change(Arc::new(move |old, new| {
            for p in [old, new].into_iter().flatten() {
                if let Some(("DaemonSet", name, _)) = controller_of(p) {
                    q.add(format!("{}/{name}", object::namespace(p)));
                }
            }
        }));
    }
    {
        // Any node change may make a node (in)eligible for every DaemonSet.
        let (q, s) = (queue.clone(), sets.clone());
        nodes.on_change(Arc::new(move |old, new| {
            let relevant = match (old, new) {
                (Some(o), Some(n)) => {
                    o["metadata"]["labels"] != n["metadata"]["labels"] || o["spec"]["taints"] != n["spec"]["taints"]
                }
                _ => true,
            };
            if relevant {
                for d in s.cache.list(None) {
                    q.add(key_of(&d));
                }
            }
        }));
    }
    let ctl = Arc::new(Ctl { api: api.clone(), sets: sets.clone(), nodes: nodes.clone(), pods: pods.clone() });
    async move {
        for i in [&sets, &nodes, &pods] {
            i.cache.wait_synced().await;
        }
        run_workers(api, "daemonset", queue, 2, move |k| {
            let c = ctl.clone();
            async move { c.reconcile(k).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn ds() -> Value {
        json!({"metadata": {"name": "agent", "namespace": "kube-system", "uid": "D", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": {"edge": "true"}, "containers": [{"name": "a", "image": "x"}]}}}})
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "labels": {HASH_LABEL: hash},
            "ownerReferences": [{"kind": "DaemonSet", "name": "agent", "uid": "D", "controller": true}]},
            "spec": {"nodeName": node},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let nodes = [
            node("a", json!({"edge": "true"}), json!([])),
            node("b", json!({"edge": "true"}), json!([{"key": "gpu", "value": "", "effect": "NoSchedule"}])),
            node("c", json!({}), json!([])),
            node(
                "d",
                json!({"edge": "true"}),
                json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
            ),
        ];
        let h = template_hash(&ds()["spec"]["template"]);
        let p = plan(&ds(), &nodes, &[pod("on-c", "c", &h, true)]);
        assert_eq!(
            p.create,
            vec!["a", "d"],
            "b's taint is not tolerated, c does not match; d's is tolerated by default"
        );
        assert_eq!(p.delete, vec!["on-c"], "misscheduled");
        assert_eq!(p.status["desiredNumberScheduled"], 2);
        assert_eq!(p.status["numberMisscheduled"], 1);
    }

    #[test]
    fn rolls_out_within_max_unavailable() {
        let nodes: Vec<Value> = ["a", "b", "c"].iter().map(|n| node(n, json!({"edge": "true"}), json!([]))).collect();
        let pods = [pod("pa", "a", "old", true), pod("pb", "b", "old", true), pod("pc", "c", "old", false)];
        let p = plan(&ds(), &nodes, &pods);
        // pc is not ready (uses the one unavailable slot) and outdated: replaced first, and
        // no ready pod may go in the same step.
        assert_eq!(p.delete, vec!["pc"]);
        let pods = [pod("pa", "a", "old", true), pod("pb", "b", "old", true), pod("pc", "c", "old", true)];
        assert_eq!(plan(&ds(), &nodes, &pods).delete.len(), 1);
    }
}
