//! Deployment: one ReplicaSet per pod template (named and labelled by the template's hash),
//! rolled from old to new by strategy. The arithmetic is pure ([`rolling`], [`recreate`],
//! [`status`]); `reconcile` applies it through the API.

use super::events;
use super::replicaset::{controller_of, merge_patch, owner_ref, target};
use super::runtime::{Action, Informer, Queue, key_of, run_workers};
use crate::apiserver::api::Api;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::selector::LabelSelector;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object, resources};

const COMPONENT: &str = "deployment-controller";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const HASH_LABEL: &str = "pod-template-hash";

/// A short, stable hash of a pod template (the `pod-template-hash` label).
pub fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(HASH_LABEL);
    }
    let d = Sha256::digest(canonical(&t).as_bytes());
    // Digits and consonants only, as Kubernetes' names avoid accidental words.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    d.iter().take(10).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// JSON with object keys sorted at every level and empty members (`null`, `{}`, `[]`)
/// dropped: equal content, equal text, whatever order the keys arrived in and however a
/// client wrote empty fields (Go clients send `creationTimestamp: null`, `resources: {}`).
pub fn canonical(v: &Value) -> String {
    fn empty(v: &Value) -> bool {
        v.is_null() || v.as_object().is_some_and(|m| m.is_empty()) || v.as_array().is_some_and(|a| a.is_empty())
    }
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let b: std::collections::BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sorted(v))).filter(|(_, v)| !empty(v)).collect();
                Value::Object(b.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // With serde_json's key order preserved, inserting sorted keys yields sorted text.
    sorted(v).to_string()
}

/// An int-or-percent against `total`; percentages round up (surge) or down (unavailable).
pub fn resolve(v: &Value, total: i64, round_up: bool, default: &str) -> i64 {
    let s = match v {
        Value::Number(n) => return n.as_i64().unwrap_or(0),
        Value::String(s) => s.as_str(),
        _ => default,
    };
    match s.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
        Some(p) => {
            let x = p * total as f64 / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i64
        }
        None => s.parse().unwrap_or(0),
    }
}

/// (maxSurge, maxUnavailable) of a rolling update, as Kubernetes resolves them.
pub fn surge_unavailable(d: &Value) -> (i64, i64) {
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let surge = resolve(&ru["maxSurge"], replicas, true, "25%");
    let mut unavailable = resolve(&ru["maxUnavailable"], replicas, false, "25%");
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

fn spec_replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn available(rs: &Value) -> i64 {
    rs["status"]["availableReplicas"].as_i64().unwrap_or(0)
}

pub fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"][REVISION].as_str().and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// New replica counts (name → replicas) for one step of a rolling update. `old` is oldest
/// first. Follows Kubernetes: scale the new set up within `replicas + maxSurge`, then scale
/// old sets down — unhealthy replicas first — without going below `replicas - maxUnavailable`
/// available.
pub fn rolling(d: &Value, new: &Value, old: &[Value]) -> Vec<(String, i64)> {
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let (surge, unavail) = surge_unavailable(d);
    let mut changes = Vec::new();
    let mut new_replicas = spec_replicas(new);
    let total: i64 = spec_replicas(new) + old.iter().map(spec_replicas).sum::<i64>();
    // Scale up.
    if new_replicas < replicas {
        let room = replicas + surge - total;
        if room > 0 {
            new_replicas = (new_replicas + room).min(replicas);
            changes.push((object::name(new).to_string(), new_replicas));
        }
    } else if new_replicas > replicas {
        new_replicas = replicas;
        changes.push((object::name(new).to_string(), replicas));
    }
    // Scale down.
    let min_available = replicas - unavail;
    let all_pods: i64 = new_replicas + old.iter().map(spec_replicas).sum::<i64>();
    let new_unavailable = (new_replicas - available(new)).max(0);
    let mut max_down = all_pods - min_available - new_unavailable;
    let mut sizes: Vec<i64> = old.iter().map(spec_replicas).collect();
    // Unhealthy old replicas first: removing them costs no availability.
    for (i, rs) in old.iter().enumerate() {
        if max_down <= 0 {
            break;
        }
        let unhealthy = (sizes[i] - available(rs)).max(0).min(max_down);
        sizes[i] -= unhealthy;
        max_down -= unhealthy;
    }
    // Then healthy ones, oldest first, as far as availability allows.
    let all_available: i64 =
        available(new) + old.iter().enumerate().map(|(i, rs)| available(rs).min(sizes[i])).sum::<i64>();
    let mut can_remove = (all_available - min_available).max(0);
    for s in sizes.iter_mut() {
        if can_remove <= 0 {
            break;
        }
        let n = (*s).min(can_remove);
        *s -= n;
        can_remove -= n;
    }
    for (rs, s) in old.iter().zip(sizes) {
        if s != spec_replicas(rs) {
            changes.push((object::name(rs).to_string(), s));
        }
    }
    changes
}

/// Order a Deployment's sets oldest first (by revision, then creation), as a rollout scales
/// them down.
fn oldest_first(sets: &mut [Value]) {
    sets.sort_by_key(|r| (revision(r), r["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string()));
}

/// The size a new set is created with: what a rolling update's first step would scale it to
/// (`owned` are the Deployment's other sets); a Recreate starts it at zero, scaled up once
/// the old pods are gone.
pub fn initial_replicas(d: &Value, new: &Value, owned: &[Value]) -> i64 {
    if d["spec"]["strategy"]["type"] == "Recreate" {
        return 0;
    }
    let mut old: Vec<Value> = owned.to_vec();
    oldest_first(&mut old);
    let name = object::name(new);
    rolling(d, new, &old).into_iter().find(|(n, _)| n == name).map_or(0, |(_, r)| r)
}

/// Recreate: old sets to zero; the new one scaled up only once no old pod remains.
pub fn recreate(d: &Value, new: &Value, old: &[Value], old_pods_left: usize) -> Vec<(String, i64)> {
    let mut changes: Vec<(String, i64)> =
        old.iter().filter(|rs| spec_replicas(rs) > 0).map(|rs| (object::name(rs).to_string(), 0)).collect();
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    if changes.is_empty() && old_pods_left == 0 && spec_replicas(new) != replicas {
        changes.push((object::name(new).to_string(), replicas));
    }
    changes
}

/// Status of a Deployment from its sets (after this step's changes).
pub fn status(d: &Value, new: Option<&Value>, all: &[Value], now: &str) -> Value {
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let sum = |f: &dyn Fn(&Value) -> i64| all.iter().map(f).sum::<i64>();
    let st_replicas = sum(&|rs| rs["status"]["replicas"].as_i64().unwrap_or(0));
    let ready = sum(&|rs| rs["status"]["readyReplicas"].as_i64().unwrap_or(0));
    let avail = sum(&available);
    let updated = new.map_or(0, |n| n["status"]["replicas"].as_i64().unwrap_or(0));
    let (_, unavail) = surge_unavailable(d);
    let recreate = d["spec"]["strategy"]["type"] == "Recreate";
    let min_avail = if recreate { replicas } else { replicas - unavail };
    let complete = updated == replicas
        && st_replicas == replicas
        && avail == replicas
        && new.is_some_and(|n| available(n) == replicas);
    let old_conds = d["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let cond = |t: &str, ok: bool, reason: &str, msg: String| {
        let prev = old_conds.iter().find(|c| c["type"] == t);
        let status = if ok { "True" } else { "False" };
        let transition = match prev {
            Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
            _ => json!(now),
        };
        let update = match prev {
            Some(p) if p["reason"] == reason && p["status"] == status => p["lastUpdateTime"].clone(),
            _ => json!(now),
        };
        json!({"type": t, "status": status, "reason": reason, "message": msg, "lastTransitionTime": transition, "lastUpdateTime": update})
    };
    let new_name = new.map(|n| object::name(n).to_string()).unwrap_or_default();
    let available_c = if avail >= min_avail {
        cond("Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability.".into())
    } else {
        cond("Available", false, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into())
    };
    let deadline = d["spec"]["progressDeadlineSeconds"].as_i64().unwrap_or(600);
    let prev_progress = old_conds.iter().find(|c| c["type"] == "Progressing").cloned();
    let progressing = if d["spec"]["paused"] == true {
        cond("Progressing", true, "DeploymentPaused", "Deployment is paused".into())
    } else if complete {
        cond(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else {
        let stalled = prev_progress.as_ref().is_some_and(|p| {
            p["reason"] == "ReplicaSetUpdated"
                && p["lastUpdateTime"]
                    .as_str()
                    .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                    .is_some_and(|t| {
                        now.parse::<chrono::DateTime<chrono::Utc>>().is_ok_and(|n| (n - t).num_seconds() > deadline)
                    })
        }) || prev_progress.as_ref().is_some_and(|p| p["reason"] == "ProgressDeadlineExceeded");
        if stalled {
            cond(
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            )
        } else {
            cond("Progressing", true, "ReplicaSetUpdated", format!("ReplicaSet \"{new_name}\" is progressing."))
        }
    };
    json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": st_replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": avail,
        "unavailableReplicas": (replicas - avail).max(0),
        "conditions": [available_c, progressing],
    })
}

struct Ctl {
    api: Api,
    deployments: Arc<Informer>,
    sets: Arc<Informer>,
    pods: Arc<Informer>,
}

fn rs_res() -> &'static resources::Resource {
    resources::of(resources::ResourceKind::ReplicaSet)
}

impl Ctl {
    async fn reconcile(&self, key: String) -> Result<Action, ApiError> {
        let Some(d) = self.deployments.cache.get(&key) else { return Ok(Action::AwaitChange) };
        if object::is_deleting(&d) {
            return Ok(Action::AwaitChange);
        }
        let ns = object::namespace(&d).to_string();
        let uid = object::uid(&d).to_string();
        let selector = LabelSelector::from_object(&d["spec"]["selector"]).unwrap_or_default();
        let mut owned: Vec<Value> = Vec::new();
        for rs in self.sets.cache.list(Some(&ns)) {
            match controller_of(&rs) {
                Some((_, _, u)) if u == uid => owned.push(rs),
                None if !selector.is_empty()
                    && selector.matches(&object::string_map(rs["spec"]["template"]["metadata"].get("labels")))
                    && !object::is_deleting(&rs) =>
                {
                    // Adopt an orphaned set of ours.
                    let patch = json!({"metadata": {"ownerReferences": [owner_ref(&d)]}});
                    let o = merge_patch(&self.api, &target(rs_res(), &ns, object::name(&rs), None), patch)
                        .await?
                        .into_owned();
                    self.sets.cache.assume(o.clone());
                    owned.push(o);
                }
                _ => {}
            }
        }
        let hash = template_hash(&d["spec"]["template"]);
        let max_rev = owned.iter().map(revision).max().unwrap_or(0);
        let mut new = owned.iter().find(|rs| rs["metadata"]["labels"][HASH_LABEL] == hash.as_str()).cloned();
        let paused = d["spec"]["paused"] == true;
        if new.is_none() && !paused {
            let mut template = d["spec"]["template"].clone();
            template["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let mut sel = d["spec"]["selector"].clone();
            sel["matchLabels"][HASH_LABEL] = json!(hash);
            let mut annotations = serde_json::Map::new();
            annotations.insert(REVISION.into(), json!((max_rev + 1).to_string()));
            if let Some(cause) = d["metadata"]["annotations"]["kubernetes.io/change-cause"].as_str() {
                annotations.insert("kubernetes.io/change-cause".into(), json!(cause));
            }
            let name = format!("{}-{hash}", object::name(&d));
            let mut rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
                    "name": name, "namespace": ns,
                    "labels": template["metadata"]["labels"], "annotations": annotations,
                    "ownerReferences": [owner_ref(&d)]},
                "spec": {"replicas": 0, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                    "selector": sel, "template": template}});
            // Born at the size the rollout's first step gives it, as Kubernetes does (one
            // write and one watch hop less before the first pods).
            let initial = initial_replicas(&d, &rs, &owned);
            rs["spec"]["replicas"] = json!(initial);
            let created = match self.api.create(rs_res(), Some(&ns), rs, FieldValidation::Ignore, false).await {
                Ok(w) => {
                    if initial > 0 {
                        let msg = format!("Scaled up replica set {name} from 0 to {initial}");
                        events::record(&self.api, &d, "Normal", "ScalingReplicaSet", msg, COMPONENT).await;
                    }
                    w.object.into_owned()
                }
                Err(e) if e.code == 409 => {
                    // A set of that name exists but is not ours (or the cache lags): look again soon.
                    return Ok(Action::Requeue(Duration::from_millis(200)));
                }
                Err(e) => return Err(e),
            };
            self.sets.cache.assume(created.clone());
            owned.push(created.clone());
            new = Some(created);
        } else if let Some(n) = &new
            && revision(n) < max_rev
            && !paused
        {
            // A rollback to an older template: that set becomes the newest revision.
            let patch = json!({"metadata": {"annotations": {REVISION: (max_rev + 1).to_string()}}});
            let o = merge_patch(&self.api, &target(rs_res(), &ns, object::name(n), None), patch).await?.into_owned();
            self.sets.cache.assume(o.clone());
            owned.retain(|r| object::uid(r) != object::uid(&o));
            owned.push(o.clone());
            new = Some(o);
        }
        let new_uid = new.as_ref().map(|n| object::uid(n).to_string()).unwrap_or_default();
        let mut old: Vec<Value> = owned.iter().filter(|r| object::uid(r) != new_uid).cloned().collect();
        oldest_first(&mut old);
        // Scale.
        let changes = match (&new, paused) {
            (_, true) | (None, _) => Vec::new(),
            (Some(n), false) if d["spec"]["strategy"]["type"] == "Recreate" => {
                let old_uids: Vec<&str> = old.iter().map(object::uid).collect();
                let left = self
                    .pods
                    .cache
                    .list(Some(&ns))
                    .iter()
                    .filter(|p| controller_of(p).is_some_and(|(_, _, u)| old_uids.contains(&u)))
                    .count();
                recreate(&d, n, &old, left)
            }
            (Some(n), false) => rolling(&d, n, &old),
        };
        for (name, replicas) in &changes {
            let patch = json!({"spec": {"replicas": replicas}});
            let o = merge_patch(&self.api, &target(rs_res(), &ns, name, None), patch).await?.into_owned();
            let before = owned.iter().find(|r| object::name(r) == name).map(spec_replicas).unwrap_or(0);
            let verb = if *replicas > before { "up" } else { "down" };
            let msg = format!("Scaled {verb} replica set {name} from {before} to {replicas}");
            events::record(&self.api, &d, "Normal", "ScalingReplicaSet", msg, COMPONENT).await;
            self.sets.cache.assume(o.clone());
            for r in owned.iter_mut().chain(old.iter_mut()) {
                if object::name(r) == name {
                    *r = o.clone();
                }
            }
            if let Some(n) = new.as_mut()
                && object::name(n) == name
            {
                *n = o.clone();
            }
        }
        // History: keep revisionHistoryLimit old sets that are scaled to zero.
        let limit = d["spec"]["revisionHistoryLimit"].as_i64().unwrap_or(10).max(0) as usize;
        let idle: Vec<&Value> = old
            .iter()
            .filter(|r| spec_replicas(r) == 0 && r["status"]["replicas"].as_i64().unwrap_or(0) == 0)
            .collect();
        if idle.len() > limit {
            for r in &idle[..idle.len() - limit] {
                match self.api.delete(&target(rs_res(), &ns, object::name(r), None), Default::default(), false).await {
                    Ok(_) | Err(ApiError { code: 404, .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Status and the revision annotation.
        let now = object::now_rfc3339();
        let st = status(&d, new.as_ref(), &owned, &now);
        let rev = new.as_ref().map(revision).unwrap_or(0);
        if rev > 0 && d["metadata"]["annotations"][REVISION].as_str() != Some(&rev.to_string()) {
            let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
            let dres = resources::of(resources::ResourceKind::Deployment);
            let o = merge_patch(&self.api, &target(dres, &ns, object::name(&d), None), patch).await?;
            self.deployments.cache.assume(o);
        }
        let same = {
            // Compare without the timestamps that change every pass.
            let strip = |v: &Value| {
                let mut v = v.clone();
                for c in v["conditions"].as_array_mut().into_iter().flatten() {
                    c.as_object_mut().map(|m| m.remove("lastUpdateTime"));
                    c.as_object_mut().map(|m| m.remove("lastTransitionTime"));
                }
                v
            };
            strip(&d["status"]) == strip(&st)
        };
        if !same {
            let dres = resources::of(resources::ResourceKind::Deployment);
            let o = merge_patch(&self.api, &target(dres, &ns, object::name(&d), Some("status")), json!({"status": st}))
                .await?;
            self.deployments.cache.assume(o);
        }
        // Progress deadlines are noticed by looking again.
        let complete = st["conditions"][1]["reason"] == "NewReplicaSetAvailable";
        Ok(if complete || paused { Action::AwaitChange } else { Action::Requeue(Duration::from_secs(5)) })
    }
}

pub fn start(
    api: Api,
    deployments: Arc<Informer>,
    sets: Arc<Informer>,
    pods: Arc<Informer>,
) -> impl Future<Output = ()> {
    let queue = Queue::new();
    {
        let q = queue.clone();
        deployments.on_change(Arc::new(move |_, new| {
            if let Some(d) = new {
                q.add(key_of(d));
            }
        }));
    }
    {
        let q = queue.clone();
        sets.on_change(Arc::new(move |old, new| {
            for rs in [old, new].into_iter().flatten() {
                if let Some(("Deployment", name, _)) = controller_of(rs) {
                    q.add(format!("{}/{name}", object::namespace(rs)));
                }
            }
        }));
    }
    {
        // Recreate waits for old pods to go: their deletion is a reason to look again.
        let (q, s) = (queue.clone(), sets.clone());
        pods.on_change(Arc::new(move |old, new| {
            if new.is_some() {
                return;
            }
            if let Some(("ReplicaSet", rs, _)) = old.and_then(controller_of) {
                let ns = object::namespace(old.unwrap_or(&Value::Null));
                let owner = s.cache.with(&format!("{ns}/{rs}"), |rs| match controller_of(rs) {
                    Some(("Deployment", d, _)) => Some(format!("{ns}/{d}")),
                    _ => None,
                });
                if let Some(d) = owner.flatten() {
                    q.add(d);
                }
            }
        }));
    }
    let ctl =
        Arc::new(Ctl { api: api.clone(), deployments: deployments.clone(), sets: sets.clone(), pods: pods.clone() });
    async move {
        deployments.cache.wait_synced().await;
        sets.cache.wait_synced().await;
        pods.cache.wait_synced().await;
        run_workers(api, "deployment", queue, 2, move |k| {
            let c = ctl.clone();
            async move { c.reconcile(k).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, surge: Value, unavail: Value) -> Value {
        json!({"metadata": {"name": "web", "generation": 1}, "spec": {"replicas": replicas,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}}}})
    }

    fn rs(name: &str, spec: i64, avail: i64) -> Value {
        json!({"metadata": {"name": name}, "spec": {"replicas": spec}, "status": {"replicas": spec, "readyReplicas": avail, "availableReplicas": avail}})
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        // 25% of 10: surge rounds up to 3, unavailable down to 2.
        assert_eq!(surge_unavailable(&deploy(10, json!("25%"), json!("25%"))), (3, 2));
        assert_eq!(surge_unavailable(&deploy(3, json!("25%"), json!("25%"))), (1, 0));
        assert_eq!(surge_unavailable(&deploy(3, json!(0), json!(0))), (0, 1), "both zero: one may be unavailable");
        assert_eq!(surge_unavailable(&json!({"spec": {"replicas": 4}})), (1, 1), "defaults are 25%");
        assert_eq!(resolve(&json!("50%"), 3, true, "0"), 2);
        assert_eq!(resolve(&json!("50%"), 3, false, "0"), 1);
    }

    #[test]
    fn a_new_set_is_born_at_its_first_rollout_size() {
        let d = deploy(3, json!(1), json!(0));
        assert_eq!(initial_replicas(&d, &rs("new", 0, 0), &[]), 3, "a first rollout: every replica at once");
        assert_eq!(initial_replicas(&d, &rs("new", 0, 0), &[rs("old", 3, 3)]), 1, "an update: within the surge");
        let recreate = json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}});
        assert_eq!(initial_replicas(&recreate, &rs("new", 0, 0), &[]), 0, "Recreate waits for the old pods");
    }

    #[test]
    fn rolling_update_respects_surge_and_availability() {
        let d = deploy(3, json!(1), json!(0));
        // Start: old has 3 available; new 0. Surge allows one new pod; nothing may go down yet.
        let ch = rolling(&d, &rs("new", 0, 0), &[rs("old", 3, 3)]);
        assert_eq!(ch, vec![("new".to_string(), 1)]);
        // New pod available: one old may go.
        let ch = rolling(&d, &rs("new", 1, 1), &[rs("old", 3, 3)]);
        assert_eq!(ch, vec![("old".to_string(), 2)]);
        // New pod not yet available: nothing more.
        assert!(rolling(&d, &rs("new", 1, 0), &[rs("old", 3, 3)]).is_empty());
        // End: new at 3 all available, old to 0.
        let ch = rolling(&d, &rs("new", 3, 3), &[rs("old", 1, 1)]);
        assert_eq!(ch, vec![("old".to_string(), 0)]);
    }

    #[test]
    fn unhealthy_old_replicas_go_first_and_availability_never_drops() {
        let d = deploy(4, json!(0), json!(1));
        // Old set has 2 broken pods: of the one pod that may go (4 - 3 available needed), a
        // broken one goes first, costing no availability.
        let ch = rolling(&d, &rs("new", 0, 0), &[rs("old", 4, 2)]);
        assert_eq!(ch, vec![("old".to_string(), 3)]);
        // With room to surge, the new set grows; its not-yet-available pods use up the
        // unavailability budget, so only one broken old pod goes.
        let d2 = deploy(4, json!(2), json!(1));
        let ch = rolling(&d2, &rs("new", 0, 0), &[rs("old", 4, 2)]);
        assert_eq!(ch, vec![("new".to_string(), 2), ("old".to_string(), 3)]);
        // Property over a simulated rollout: available never below replicas - maxUnavailable
        // once it reached it, and the rollout completes.
        for (replicas, surge, unav) in [(3, 1, 0), (5, 2, 1), (10, 3, 2), (4, 0, 1), (6, 1, 1)] {
            let d = deploy(replicas, json!(surge), json!(unav));
            let mut new = rs("new", 0, 0);
            let mut old = rs("old", replicas, replicas);
            for _ in 0..100 {
                for (n, r) in rolling(&d, &new, std::slice::from_ref(&old)) {
                    let t = if n == "new" { &mut new } else { &mut old };
                    t["spec"]["replicas"] = json!(r);
                    // Scale-down is immediate; scale-up becomes available on the next step.
                    let a = t["status"]["availableReplicas"].as_i64().unwrap().min(r);
                    t["status"]["availableReplicas"] = json!(a);
                }
                let avail = available(&new) + available(&old);
                assert!(avail >= replicas - unav, "availability fell to {avail} ({replicas},{surge},{unav})");
                assert!(spec_replicas(&new) + spec_replicas(&old) <= replicas + surge, "surge exceeded");
                new["status"]["availableReplicas"] = new["spec"]["replicas"].clone();
                if spec_replicas(&old) == 0 && available(&new) == replicas {
                    break;
                }
            }
            assert_eq!((spec_replicas(&new), spec_replicas(&old)), (replicas, 0), "rollout did not complete");
        }
    }

    #[test]
    fn recreate_waits_for_old_pods() {
        let d = json!({"spec": {"replicas": 2, "strategy": {"type": "Recreate"}}});
        assert_eq!(recreate(&d, &rs("new", 0, 0), &[rs("old", 2, 2)], 2), vec![("old".to_string(), 0)]);
        assert!(recreate(&d, &rs("new", 0, 0), &[rs("old", 0, 0)], 1).is_empty(), "old pods still terminating");
        assert_eq!(recreate(&d, &rs("new", 0, 0), &[rs("old", 0, 0)], 0), vec![("new".to_string(), 2)]);
    }

    #[test]
    fn template_hash_is_stable_and_ignores_its_own_label() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let mut labelled = t.clone();
        labelled["metadata"]["labels"][HASH_LABEL] = json!("x");
        assert_eq!(template_hash(&t), template_hash(&labelled));
        let reordered: Value = serde_json::from_str(
            r#"{"spec": {"containers": [{"image": "a", "name": "c"}]}, "metadata": {"labels": {"app": "web"}}}"#,
        )
        .unwrap();
        assert_eq!(template_hash(&t), template_hash(&reordered), "key order does not matter");
        let mut with_null = t.clone();
        with_null["metadata"]["creationTimestamp"] = Value::Null;
        with_null["spec"]["containers"][0]["resources"] = json!({});
        assert_eq!(template_hash(&t), template_hash(&with_null), "null members do not matter");
        let mut other = t.clone();
        other["spec"]["containers"][0]["image"] = json!("b");
        assert_ne!(template_hash(&t), template_hash(&other));
        assert_eq!(template_hash(&t).len(), 10);
    }
}
