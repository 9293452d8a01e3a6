//! ReplicaSet (and ReplicationController, a ReplicaSet with an equality selector): keep
//! exactly `replicas` matching pods. The decision is [`plan`], a pure function of the set,
//! the pods of its namespace and the time, or, when the set's pod counts suffice,
//! [`plan_from_counts`] of the counts a [`tally::Tally`] keeps; `reconcile` carries it out
//! through the API. One controller runs per kind ([`start`] takes the kind's informer).

pub mod tally;

use super::events;
use super::runtime::{Action, Index, Informer, Queue, key_of, run_workers};
use crate::apiserver::api::Api;
use crate::apiserver::request::Target;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::selector::LabelSelector;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object, resources};

/// The controller owner reference of an object, if any: (kind, name, uid).
pub fn controller_of(obj: &Value) -> Option<(&str, &str, &str)> {
    obj.get("metadata")?
        .get("ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| (field(r, "kind"), field(r, "name"), field(r, "uid")))
}

/// A string field of an object, `""` when absent or not a string.
fn field<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or("")
}

/// An owner reference to `owner` as its controller.
pub fn owner_ref(owner: &Value) -> Value {
    json!({"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": object::name(owner),
        "uid": object::uid(owner), "controller": true, "blockOwnerDeletion": true})
}

pub fn is_ready(pod: &Value) -> bool {
    let ready = |c: &Value| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    };
    pod.get("status").and_then(|s| s.get("conditions")).and_then(Value::as_array).is_some_and(|c| c.iter().any(ready))
}

fn ready_since(pod: &Value) -> Option<DateTime<Utc>> {
    let c = pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready" && c["status"] == "True")?;
    c["lastTransitionTime"].as_str()?.parse().ok()
}

/// Ready for at least `min_ready` (Kubernetes' "available").
pub fn is_available(pod: &Value, min_ready: Duration, now: DateTime<Utc>) -> bool {
    is_ready(pod)
        && (min_ready.is_zero()
            || ready_since(pod).is_some_and(|t| now.signed_duration_since(t).to_std().unwrap_or_default() >= min_ready))
}

fn terminal(p: &Value) -> bool {
    matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// What to do for one ReplicaSet.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: usize,
    /// The first slow-start batch: 1 for a set without pods, else as many as it has (up to
    /// a burst). A set whose pods were created has shown that its template and quota work;
    /// starting each pass of a 10 000-pod scale-up at 1 again made every pass of 500 nine
    /// round trips, and the creations ran at a tenth of what the API server takes.
    pub first_batch: usize,
    /// Names of pods to delete, in order.
    pub delete: Vec<String>,
    /// Orphans that match: to adopt.
    pub adopt: Vec<String>,
    /// Owned pods that no longer match: to release.
    pub release: Vec<String>,
    pub status: Value,
    /// When to look again (a pod becomes available after minReadySeconds).
    pub requeue: Option<Duration>,
}

/// Order for scale-down: unscheduled, then pending, then not ready, then the most restarted,
/// then the newest — the pods whose loss hurts least go first.
fn deletion_rank(p: &Value) -> (u8, u8, u8, i64, std::cmp::Reverse<String>) {
    let unscheduled = p["spec"]["nodeName"].as_str().unwrap_or("").is_empty();
    let pending = p["status"]["phase"] != "Running";
    let ready = is_ready(p);
    let restarts: i64 = p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum();
    (
        !unscheduled as u8,
        !pending as u8,
        ready as u8,
        -restarts,
        std::cmp::Reverse(p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string()),
    )
}

/// At most this many pods are created or deleted per reconcile, as Kubernetes' `burstReplicas`:
/// a set scaled to 10 000 writes its status (and so shows its pods turning ready) between
/// rounds of 500 instead of once after all its creations, and one set does not hold a worker
/// for the whole scale-up. The set is looked at again at once while pods are still missing.
pub const BURST_REPLICAS: usize = 500;

fn wanted(rs: &Value) -> usize {
    rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize
}

fn min_ready(rs: &Value) -> Duration {
    Duration::from_secs(rs["spec"]["minReadySeconds"].as_u64().unwrap_or(0))
}

/// What follows from a set's counts alone: how many pods to create, the first batch, whether
/// to come back at once for more, and the status.
fn sized(rs: &Value, c: tally::Counts, available: usize) -> Plan {
    let (want, deleting) = (wanted(rs), object::is_deleting(rs));
    Plan {
        create: if deleting { 0 } else { want.saturating_sub(c.active).min(BURST_REPLICAS) },
        first_batch: c.active.clamp(1, BURST_REPLICAS),
        requeue: (c.active.abs_diff(want) > BURST_REPLICAS && !deleting).then_some(Duration::ZERO),
        status: json!({
            "replicas": c.active,
            "fullyLabeledReplicas": c.labeled,
            "readyReplicas": c.ready,
            "availableReplicas": available,
            "observedGeneration": rs["metadata"]["generation"],
        }),
        ..Plan::default()
    }
}

/// The plan for `rs` from its pods' counts (see [`tally`]) when they are enough: nothing to
/// adopt, release or delete (those need names), no `minReadySeconds` to time and the set
/// not being deleted. `None` otherwise: then [`plan`] reads the pods. Where it answers, it
/// answers as [`plan`] would.
pub fn plan_from_counts(rs: &Value, c: tally::Counts, adoptable: bool) -> Option<Plan> {
    let simple =
        !object::is_deleting(rs) && min_ready(rs).is_zero() && c.strays == 0 && !adoptable && c.active <= wanted(rs);
    simple.then(|| sized(rs, c, c.ready))
}

pub fn plan<'a>(rs: &Value, pods: impl IntoIterator<Item = &'a Value>, now: DateTime<Utc>) -> Plan {
    let uid = object::uid(rs);
    let selector = LabelSelector::of_workload(rs).unwrap_or_default();
    let want = wanted(rs);
    let min_ready = min_ready(rs);
    let (mut adopt, mut release) = (Vec::new(), Vec::new());
    let mut active: Vec<&Value> = Vec::new();
    let mut counts = tally::Counts::default();
    for pod in pods {
        match controller_of(pod) {
            Some((_, _, owner)) if owner == uid => {}
            Some(_) => continue,
            None => {
                let matches = !selector.is_empty() && selector.selects(pod);
                if !matches || object::is_deleting(pod) || object::is_deleting(rs) {
                    continue;
                }
                adopt.push(object::name(pod).to_string());
            }
        }
        // What a pod adds to its set's counts is the tally's rule, read once per pod: a set
        // of 10 000 may be planned here on every change of one of its pods.
        let c = tally::Counts::of_pod(pod, &selector);
        counts.add(c);
        if c.strays > 0 {
            release.push(object::name(pod).to_string());
        } else if c.active > 0 {
            active.push(pod);
        }
    }
    let available = if min_ready.is_zero() {
        counts.ready
    } else {
        active.iter().filter(|p| is_available(p, min_ready, now)).count()
    };
    let mut p = Plan { adopt, release, ..sized(rs, counts, available) };
    if !object::is_deleting(rs) && active.len() > want {
        let mut order = active.clone();
        order.sort_by_key(|p| deletion_rank(p));
        let n = (active.len() - want).min(BURST_REPLICAS);
        p.delete = order.iter().take(n).map(|p| object::name(p).to_string()).collect();
    }
    if p.requeue.is_none() && available < counts.ready && !min_ready.is_zero() {
        // Wake up when the earliest ready pod crosses minReadySeconds.
        p.requeue = active
            .iter()
            .filter_map(|p| ready_since(p))
            .map(|t| (t + chrono::Duration::from_std(min_ready).unwrap_or_default() - now).to_std().unwrap_or_default())
            .filter(|d| !d.is_zero())
            .min()
            .map(|d| d + Duration::from_millis(50));
    }
    p
}

/// A pod from a ReplicaSet's template.
pub fn pod_from_template(owner: &Value, template: &Value, name_prefix: &str) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"].clone(), "spec": template["spec"].clone()});
    let m = pod["metadata"].as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut meta = serde_json::Map::new();
    for k in ["labels", "annotations"] {
        if let Some(v) = m.get(k) {
            meta.insert(k.into(), v.clone());
        }
    }
    meta.insert("generateName".into(), json!(format!("{name_prefix}-")));
    meta.insert("namespace".into(), json!(object::namespace(owner)));
    meta.insert("ownerReferences".into(), json!([owner_ref(owner)]));
    pod["metadata"] = Value::Object(meta);
    pod
}

fn pods_res() -> &'static resources::Resource {
    resources::of(resources::ResourceKind::Pod)
}

pub fn target(res: &'static resources::Resource, ns: &str, name: &str, sub: Option<&str>) -> Target {
    Target {
        res,
        namespace: (!ns.is_empty()).then(|| ns.to_string()),
        name: Some(name.to_string()),
        subresource: sub.map(String::from),
        watch_path: false,
    }
}

pub async fn merge_patch(api: &Api, t: &Target, patch: Value) -> Result<crate::store::Stored, ApiError> {
    api.patch(t, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await.map(|w| w.object)
}

struct Ctl {
    api: Api,
    /// ReplicaSet or ReplicationController.
    res: &'static resources::Resource,
    sets: Arc<Informer>,
    pods: Arc<Informer>,
    /// The sets' pod counts, an index of the pods cache.
    tally: Arc<tally::Tally>,
}

impl Ctl {
    /// The event source, as Kubernetes names these controllers.
    fn component(&self) -> &'static str {
        if self.res.kind == "ReplicaSet" { "replicaset-controller" } else { "replication-controller" }
    }

    async fn reconcile(&self, key: String) -> Result<Action, ApiError> {
        let Some(rs) = self.sets.cache.get(&key) else { return Ok(Action::AwaitChange) };
        let ns = object::namespace(&rs).to_string();
        let now = Utc::now();
        let counted =
            self.tally.of(&rs, &self.pods.cache).and_then(|(c, adoptable)| plan_from_counts(&rs, c, adoptable));
        let plan = match counted {
            Some(p) => p,
            None => self.pods.cache.with_ns(Some(&ns), |pods| plan(&rs, pods, now)),
        };
        let pr = pods_res();
        for name in &plan.adopt {
            let patch = json!({"metadata": {"ownerReferences": [owner_ref(&rs)]}});
            match merge_patch(&self.api, &target(pr, &ns, name, None), patch).await {
                Ok(p) => self.pods.cache.assume(p),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        for name in &plan.release {
            let patch = json!({"metadata": {"ownerReferences": null}});
            match merge_patch(&self.api, &target(pr, &ns, name, None), patch).await {
                Ok(p) => self.pods.cache.assume(p),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        // Slow start, as Kubernetes: batches of 1, 2, 4 … created concurrently, stopping at
        // the first failure (a quota or a bad template fails once, not a thousand times).
        let mut left = plan.create;
        let mut batch = plan.first_batch;
        while left > 0 {
            let n = batch.min(left);
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..n {
                let (api, pod) = (self.api.clone(), pod_from_template(&rs, &rs["spec"]["template"], object::name(&rs)));
                set.spawn(async move {
                    api.create(pr, Some(object::namespace(&pod)), pod.clone(), FieldValidation::Ignore, false).await
                });
            }
            let mut failed = None;
            while let Some(r) = set.join_next().await {
                match r.map_err(|e| ApiError::internal(e.to_string())).and_then(|r| r) {
                    Ok(w) => {
                        let msg = format!("Created pod: {}", object::name(&w.object));
                        self.pods.cache.assume(w.object);
                        events::record(&self.api, &rs, "Normal", "SuccessfulCreate", msg, self.component()).await;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            left -= n;
            batch *= 2;
        }
        for name in &plan.delete {
            match self.api.delete(&target(pr, &ns, name, None), Default::default(), false).await {
                Ok(w) => {
                    if w.event != Some(crate::store::EventType::Deleted) {
                        self.pods.cache.assume(w.object);
                    }
                }
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            events::record(
                &self.api,
                &rs,
                "Normal",
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
                self.component(),
            )
            .await;
        }
        if rs["status"] != plan.status && !object::is_deleting(&rs) {
            match merge_patch(
                &self.api,
                &target(self.res, &ns, object::name(&rs), Some("status")),
                json!({"status": plan.status}),
            )
            .await
            {
                Ok(o) => self.sets.cache.assume(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(plan.requeue.map_or(Action::AwaitChange, Action::Requeue))
    }
}

/// Enqueue the owner (or, for orphans, every matching ReplicaSet) of a pod.
fn owners_of_pod(kind: &str, sets: &Informer, pod: &Value) -> Vec<String> {
    let ns = object::namespace(pod);
    match controller_of(pod) {
        Some((k, name, _)) if k == kind => vec![format!("{ns}/{name}")],
        Some(_) => vec![],
        None => sets
            .cache
            .list(Some(ns))
            .iter()
            .filter(|rs| LabelSelector::of_workload(rs).is_ok_and(|s| !s.is_empty() && s.selects(pod)))
            .map(key_of)
            .collect(),
    }
}

pub fn start(api: Api, sets: Arc<Informer>, pods: Arc<Informer>) -> impl Future<Output = ()> {
    let queue = Queue::new();
    // Fed by the pods cache for as long as this controller (a leadership term) lives.
    let tally = Arc::new(tally::Tally::default());
    pods.cache.index(&(tally.clone() as Arc<dyn Index>));
    {
        let (q, tally) = (queue.clone(), tally.clone());
        sets.on_change(Arc::new(move |old, new| match (old, new) {
            (_, Some(rs)) => q.add(key_of(rs)),
            (Some(gone), None) => tally.forget(object::uid(gone)),
            (None, None) => {}
        }));
    }
    {
        let (q, s) = (queue.clone(), sets.clone());
        let kind = sets.res.kind;
        pods.on_change(Arc::new(move |old, new| {
            for p in [old, new].into_iter().flatten() {
                for k in owners_of_pod(kind, &s, p) {
                    q.add(k);
                }
            }
        }));
    }
    let res = sets.res;
    let ctl = Arc::new(Ctl { api: api.clone(), res, sets: sets.clone(), pods: pods.clone(), tally });
    async move {
        sets.cache.wait_synced().await;
        pods.cache.wait_synced().await;
        let name = if res.kind == "ReplicaSet" { "replicaset" } else { "replicationcontroller" };
        run_workers(api, name, queue, 2, move |k| {
            let c = ctl.clone();
            async move { c.reconcile(k).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "d", "uid": "u1", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    }

    fn pod(name: &str, owner: Option<&str>, ready: bool, node: &str, created: &str) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "web"}, "creationTimestamp": created},
            "spec": {"nodeName": node}, "status": {"phase": if node.is_empty() { "Pending" } else { "Running" },
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        if let Some(o) = owner {
            p["metadata"]["ownerReferences"] =
                json!([{"kind": "ReplicaSet", "name": "web", "uid": o, "controller": true}]);
        }
        p
    }

    #[test]
    fn creates_the_missing_and_adopts_orphans() {
        let now = Utc::now();
        let pods = vec![
            pod("a", Some("u1"), true, "n", "2026-01-01T00:00:00Z"),
            pod("orphan", None, true, "n", "2026-01-01T00:00:00Z"),
            pod("other", Some("u2"), true, "n", "2026-01-01T00:00:00Z"),
        ];
        let p = plan(&rs(4), &pods, now);
        assert_eq!(p.adopt, vec!["orphan"]);
        assert_eq!(p.create, 2, "a and the adopted orphan count; another controller's pod does not");
        assert_eq!(p.status["replicas"], 2);
        assert_eq!(p.status["readyReplicas"], 2);
        assert_eq!(p.status["observedGeneration"], 2);
    }

    #[test]
    fn creates_and_deletes_at_most_a_burst_per_reconcile_and_comes_back_for_the_rest() {
        let now = Utc::now();
        let p = plan(&rs(1200), &[], now);
        assert_eq!((p.create, p.requeue, p.first_batch), (BURST_REPLICAS, Some(Duration::ZERO), 1));
        assert_eq!(p.status["replicas"], 0, "the status is written between rounds");
        let p = plan(&rs(BURST_REPLICAS as i64), &[], now);
        assert_eq!((p.create, p.requeue), (BURST_REPLICAS, None), "the last round is not looked at again");
        let pods: Vec<Value> = (0..BURST_REPLICAS + 3)
            .map(|i| pod(&format!("p{i}"), Some("u1"), true, "n", "2026-01-01T00:00:00Z"))
            .collect();
        let p = plan(&rs(1), &pods, now);
        assert_eq!((p.delete.len(), p.requeue), (BURST_REPLICAS, Some(Duration::ZERO)));
        // The next pass of a scale-up starts its slow start from the pods the set has.
        let p = plan(&rs(1200), &pods[..3], now);
        assert_eq!((p.create, p.first_batch), (BURST_REPLICAS, 3));
        let p = plan(&rs(1200), &pods, now);
        assert_eq!((p.create, p.first_batch), (BURST_REPLICAS, BURST_REPLICAS));
    }

    #[test]
    fn scale_down_removes_unscheduled_then_not_ready_then_newest() {
        let pods = vec![
            pod("old-ready", Some("u1"), true, "n", "2026-01-01T00:00:00Z"),
            pod("new-ready", Some("u1"), true, "n", "2026-01-02T00:00:00Z"),
            pod("not-ready", Some("u1"), false, "n", "2026-01-01T00:00:00Z"),
            pod("unscheduled", Some("u1"), false, "", "2026-01-01T00:00:00Z"),
        ];
        let p = plan(&rs(1), &pods, Utc::now());
        assert_eq!(p.delete, vec!["unscheduled", "not-ready", "new-ready"]);
        assert_eq!(p.create, 0);
    }

    #[test]
    fn releases_pods_that_stop_matching_and_waits_for_min_ready() {
        let mut moved = pod("moved", Some("u1"), true, "n", "2026-01-01T00:00:00Z");
        moved["metadata"]["labels"]["app"] = json!("other");
        let mut r = rs(1);
        r["spec"]["minReadySeconds"] = json!(30);
        let mut fresh = pod("fresh", Some("u1"), true, "n", "2026-01-01T00:00:00Z");
        let now = Utc::now();
        fresh["status"]["conditions"][0]["lastTransitionTime"] =
            json!((now - chrono::Duration::seconds(10)).to_rfc3339());
        let p = plan(&r, &[moved, fresh], now);
        assert_eq!(p.release, vec!["moved"]);
        assert_eq!(p.status["availableReplicas"], 0);
        assert_eq!(p.status["readyReplicas"], 1);
        let d = p.requeue.unwrap();
        assert!(d > Duration::from_secs(19) && d < Duration::from_secs(21), "{d:?}");
    }
}
