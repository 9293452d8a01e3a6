//! The scheduler: watches pods without a node and binds each to the best node that fits,
//! through `pods/binding`. One worker, so placements never race each other; the snapshot of
//! nodes and their placed pods is kept incrementally (a bind is accounted at once, before the
//! watch reports it) and rebuilt from the informers' caches when something else changes it.

pub mod plan;
#[cfg(test)]
mod tests;
pub mod volumes;

use crate::apiserver::api::Api;
use crate::controllers::events;
use crate::controllers::replicaset::target;
use crate::controllers::runtime::{Action, Informer, Queue, key_of, run_workers, split_key};
use plan::{NodeInfo, Strategy};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmorch_api::{ApiError, object, resources};

pub const NAME: &str = "default-scheduler";

#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    pub strategy: Strategy,
}

#[derive(Default)]
struct Snapshot {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Bound pods already counted in `nodes`.
    accounted: HashSet<String>,
    dirty: bool,
    /// Where the next search for feasible nodes starts (round robin over the nodes).
    next_start: usize,
}

struct Scheduler {
    api: Api,
    pods: Arc<Informer>,
    nodes: Arc<Informer>,
    cfg: Config,
    /// std Mutex: the worker holds it only while computing, never across an await.
    snap: Mutex<Snapshot>,
    /// Pods that did not fit; retried when nodes or placed pods change.
    waiting: Mutex<HashSet<String>>,
    /// The last FailedScheduling message per pod, so a retry does not repeat the same event.
    told: Mutex<HashMap<String, String>>,
    /// Binds in flight.
    binds: Arc<tokio::sync::Semaphore>,
    queue: Arc<Queue>,
    self_ref: std::sync::Weak<Scheduler>,
}

fn terminal(p: &Value) -> bool {
    matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

fn ours(p: &Value) -> bool {
    p["spec"]["schedulerName"].as_str().is_none_or(|s| s == NAME)
}

fn unscheduled(p: &Value) -> bool {
    p["spec"]["nodeName"].as_str().is_none_or(str::is_empty) && !object::is_deleting(p) && ours(p) && !terminal(p)
}

impl Scheduler {
    fn rebuild(&self, s: &mut Snapshot) {
        let mut nodes: Vec<NodeInfo> = self.nodes.cache.list(None).iter().map(NodeInfo::from_node).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let index: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        let mut accounted = HashSet::new();
        self.pods.cache.for_each(|p| {
            let node = p["spec"]["nodeName"].as_str().unwrap_or("");
            if node.is_empty() || terminal(p) {
                return;
            }
            if let Some(i) = index.get(node) {
                nodes[*i].add_pod(p);
            }
            accounted.insert(key_of(p));
        });
        let next_start = s.next_start;
        *s = Snapshot { nodes, index, accounted, dirty: false, next_start };
    }

    fn wake_waiting(&self, queue: &Queue) {
        for k in self.waiting.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            queue.add(k);
        }
    }

    async fn reconcile(&self, key: String) -> Result<Action, ApiError> {
        let Some(pod) = self.pods.cache.entry(&key) else { return Ok(Action::AwaitChange) };
        if !unscheduled(&pod) {
            return Ok(Action::AwaitChange);
        }
        // Claims first: a bound claim pins the pod to its volume's node; unbound ones are
        // provisioned on the node chosen.
        let mut unbound = Vec::new();
        let mut claims_err = None;
        let mut planned = None;
        if volumes::has_claims(&pod) {
            match volumes::claims(&self.api, &pod).await {
                Ok(c) => {
                    unbound = c.unbound;
                    if let Some(n) = c.node {
                        let mut p = Value::clone(&pod);
                        p["spec"]["nodeSelector"]["kubernetes.io/hostname"] = json!(n);
                        planned = Some(p);
                    }
                }
                Err(msg) => claims_err = Some(msg),
            }
        }
        let claim_wait = claims_err.is_some();
        let decided = std::time::Instant::now();
        let choice = if let Some(msg) = claims_err {
            Err(msg)
        } else {
            let plan_pod = planned.as_ref().unwrap_or(&pod);
            let mut s = self.snap.lock().unwrap_or_else(|e| e.into_inner());
            if s.dirty || s.nodes.is_empty() {
                self.rebuild(&mut s);
            }
            let limit = plan::nodes_to_find(s.nodes.len());
            let (choice, next) = plan::schedule_from(plan_pod, &s.nodes, self.cfg.strategy, s.next_start, limit);
            s.next_start = next;
            // Account the placement before the bind is written, so the watch event of the
            // bind finds it accounted (a failed bind marks the snapshot for a rebuild).
            if let Ok(node) = &choice
                && let Some(i) = s.index.get(node).copied()
            {
                s.nodes[i].add_pod(&pod);
                s.accounted.insert(key.clone());
            }
            choice
        };
        let t = crate::telemetry::get();
        t.schedule_seconds.observe(decided.elapsed().as_secs_f64());
        let result = if choice.is_ok() { "scheduled" } else { "unschedulable" };
        t.schedule_attempts.get_or_create(&crate::telemetry::Result_ { result: result.into() }).inc();
        let node = match choice {
            Ok(n) => n,
            Err(msg) => {
                self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone());
                let repeat = self.told.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), msg.clone())
                    == Some(msg.clone());
                if !repeat {
                    events::record(&self.api, &pod, "Warning", "FailedScheduling", msg.clone(), NAME).await;
                    self.mark_unschedulable(&pod, &msg).await;
                }
                // Retried on any change to nodes or placed pods, and now and then regardless
                // (soon when waiting for a claim: claims are not watched here).
                let again = if claim_wait { Duration::from_secs(2) } else { Duration::from_secs(30) };
                return Ok(Action::Requeue(again));
            }
        };
        let (ns, name) = split_key(&key);
        let t = target(resources::of(resources::ResourceKind::Pod), ns.unwrap_or(""), name, Some("binding"));
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
        // The placement is decided and accounted; the write goes on without holding up the
        // next decision, so many binds share one durable commit. A bounded number in flight.
        let permit = self.binds.clone().acquire_owned().await.map_err(|_| ApiError::internal("scheduler stopping"))?;
        let this = self.self_ref.upgrade().ok_or_else(|| ApiError::internal("scheduler stopping"))?;
        tokio::spawn(async move {
            let _permit = permit;
            if !unbound.is_empty() {
                let node_obj = this.nodes.cache.get(&node).unwrap_or_else(|| json!({"metadata": {"name": node}}));
                for claim in &unbound {
                    match volumes::provision(&this.api, claim, &node_obj).await {
                        Ok(true) => {}
                        // Bound elsewhere meanwhile, or the write failed: place the pod again.
                        other => {
                            if let Err(e) = other {
                                tracing::warn!("provisioning {} for {key}: {e}", object::name(claim));
                            }
                            this.snap.lock().unwrap_or_else(|e| e.into_inner()).dirty = true;
                            this.queue.add_after(key, Duration::from_millis(200));
                            return;
                        }
                    }
                }
            }
            match this.api.bind(&t, binding, false).await {
                Ok(w) => {
                    this.told.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                    let msg = format!("Successfully assigned {key} to {node}");
                    events::record(&this.api, &w.object, "Normal", "Scheduled", msg, NAME).await;
                    this.pods.cache.assume(w.object);
                }
                // Bound meanwhile by someone else, or gone: the snapshot is rebuilt.
                Err(e) if e.code == 409 || e.code == 404 => {
                    this.snap.lock().unwrap_or_else(|e| e.into_inner()).dirty = true;
                }
                Err(e) => {
                    tracing::warn!("binding {key} to {node}: {e}");
                    this.snap.lock().unwrap_or_else(|e| e.into_inner()).dirty = true;
                    this.queue.add_after(key, Duration::from_millis(200));
                }
            }
        });
        Ok(Action::AwaitChange)
    }

    /// Record `PodScheduled=False, reason Unschedulable` on the pod, as Kubernetes does.
    async fn mark_unschedulable(&self, pod: &Value, msg: &str) {
        let pods = resources::of(resources::ResourceKind::Pod);
        let t = target(pods, object::namespace(pod), object::name(pod), Some("status"));
        let cond = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
            "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339()});
        let patch = json!({"status": {"phase": "Pending", "conditions": object::with_condition(&pod["status"]["conditions"], cond)}});
        let r = self
            .api
            .patch(&t, "application/merge-patch+json", patch, wasmorch_api::validation::FieldValidation::Ignore, false)
            .await;
        if let Err(e) = r {
            tracing::debug!("marking {} unschedulable: {e}", object::name(pod));
        }
    }
}

/// Wire the scheduler to the informers (before they start) and run it until shutdown.
pub fn start(api: Api, pods: Arc<Informer>, nodes: Arc<Informer>, cfg: Config) -> impl Future<Output = ()> {
    let queue = Queue::new();
    let s = Arc::new_cyclic(|me| Scheduler {
        api: api.clone(),
        pods: pods.clone(),
        nodes: nodes.clone(),
        cfg,
        snap: Mutex::new(Snapshot { dirty: true, ..Default::default() }),
        waiting: Mutex::new(HashSet::new()),
        told: Mutex::new(HashMap::new()),
        binds: Arc::new(tokio::sync::Semaphore::new(256)),
        queue: queue.clone(),
        self_ref: me.clone(),
    });
    {
        let (s, q) = (s.clone(), queue.clone());
        pods.on_change(Arc::new(move |old, new| {
            match new {
                Some(p) if unscheduled(p) => q.add(key_of(p)),
                Some(p) => {
                    let bound = !p["spec"]["nodeName"].as_str().unwrap_or("").is_empty();
                    let mut snap = s.snap.lock().unwrap_or_else(|e| e.into_inner());
                    let newly_terminal = terminal(p) && old.is_some_and(|o| !terminal(o));
                    if bound && (!snap.accounted.contains(&key_of(p)) || newly_terminal) {
                        snap.dirty = true;
                        drop(snap);
                        if newly_terminal {
                            s.wake_waiting(&q);
                        }
                    }
                }
                None => {
                    // A placed pod went away: room may have opened.
                    if old.is_some_and(|o| !o["spec"]["nodeName"].as_str().unwrap_or("").is_empty()) {
                        s.snap.lock().unwrap_or_else(|e| e.into_inner()).dirty = true;
                        s.wake_waiting(&q);
                    }
                    if let Some(o) = old {
                        s.told.lock().unwrap_or_else(|e| e.into_inner()).remove(&key_of(o));
                        s.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&key_of(o));
                    }
                }
            }
        }));
    }
    {
        let (s, q) = (s.clone(), queue.clone());
        nodes.on_change(Arc::new(move |old, new| {
            // Heartbeats change a node's status every few seconds; only what placement reads
            // makes the snapshot stale.
            let placement = |n: &Value| {
                let ready = n["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .map(|c| c["status"].clone());
                json!([n["metadata"]["labels"], n["spec"], n["status"]["allocatable"], n["status"]["capacity"], ready])
            };
            if let (Some(o), Some(n)) = (old, new)
                && placement(o) == placement(n)
            {
                return;
            }
            {
                let mut snap = s.snap.lock().unwrap_or_else(|e| e.into_inner());
                // A known node changed: refresh it in place, keeping what is placed on it.
                // Nodes joining or leaving rebuild the snapshot.
                match new.map(|n| (n, snap.index.get(object::name(n)).copied())) {
                    Some((n, Some(i))) => {
                        let mut fresh = NodeInfo::from_node(n);
                        fresh.requested = snap.nodes[i].requested;
                        fresh.pods = std::mem::take(&mut snap.nodes[i].pods);
                        snap.nodes[i] = fresh;
                    }
                    _ => snap.dirty = true,
                }
            }
            s.wake_waiting(&q);
        }));
    }
    async move {
        pods.cache.wait_synced().await;
        nodes.cache.wait_synced().await;
        run_workers(api, "scheduler", queue, 1, move |key| {
            let s = s.clone();
            async move { s.reconcile(key).await }
        })
        .await
    }
}
