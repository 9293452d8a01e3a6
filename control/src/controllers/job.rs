//! Job: run pods until `completions` succeed, `parallelism` at a time, giving up after
//! `backoffLimit` failures or `activeDeadlineSeconds`; removed `ttlSecondsAfterFinished`
//! after it finishes. The decision is the pure [`plan`].

use super::events;
use super::replicaset::{controller_of, merge_patch, pod_from_template, target};
use super::runtime::{Action, Informer, Queue, key_of, run_workers};
use crate::apiserver::api::Api;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object, resources};

const COMPONENT: &str = "job-controller";

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: usize,
    /// Active pods to delete (over parallelism, or the job ended).
    pub delete: Vec<String>,
    pub status: Value,
    /// Delete the Job itself (its TTL after finishing has passed).
    pub delete_job: bool,
    pub requeue: Option<Duration>,
    /// A condition reached in this step: (type, reason, message), for an event.
    pub finished: Option<(&'static str, &'static str, String)>,
}

fn ts(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()?.parse().ok()
}

fn finished_cond(job: &Value) -> Option<&Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

pub fn plan(job: &Value, pods: &[Value], now: DateTime<Utc>) -> Plan {
    let mut p = Plan::default();
    let uid = object::uid(job);
    let spec = &job["spec"];
    let owned: Vec<&Value> = pods.iter().filter(|pod| controller_of(pod).is_some_and(|(_, _, u)| u == uid)).collect();
    let phase = |pod: &Value| pod["status"]["phase"].as_str().unwrap_or("").to_string();
    let succeeded = owned.iter().filter(|pod| phase(pod) == "Succeeded").count() as i64;
    let restarts: i64 = owned
        .iter()
        .flat_map(|pod| pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default())
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let failed = owned.iter().filter(|pod| phase(pod) == "Failed").count() as i64 + restarts;
    let active: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|pod| !object::is_deleting(pod) && !matches!(phase(pod).as_str(), "Succeeded" | "Failed"))
        .collect();
    let ready = active.iter().filter(|pod| super::replicaset::is_ready(pod)).count();
    let start = ts(&job["status"]["startTime"]).unwrap_or(now);
    let mut status = json!({
        "active": active.len(), "succeeded": succeeded, "failed": failed, "ready": ready,
        "startTime": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "conditions": job["status"]["conditions"].clone(),
    });
    if let Some(ct) = job["status"]["completionTime"].as_str() {
        status["completionTime"] = json!(ct);
    }
    // Finished already: only the TTL is left to honour.
    if let Some(c) = finished_cond(job) {
        status["active"] = json!(0);
        p.delete = active.iter().map(|pod| object::name(pod).to_string()).collect();
        if let Some(ttl) = spec["ttlSecondsAfterFinished"].as_i64() {
            let done = ts(&c["lastTransitionTime"]).unwrap_or(now);
            let at = done + chrono::Duration::seconds(ttl);
            if at <= now {
                p.delete_job = true;
            } else {
                p.requeue = (at - now).to_std().ok();
            }
        }
        p.status = status;
        return p;
    }
    let completions = spec["completions"].as_i64();
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
    let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
    let now_s = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut finish = |t: &'static str, reason: &'static str, msg: String, status: &mut Value| {
        let mut conds = status["conditions"].as_array().cloned().unwrap_or_default();
        conds.push(json!({"type": t, "status": "True", "reason": reason, "message": msg,
            "lastProbeTime": now_s, "lastTransitionTime": now_s}));
        status["conditions"] = json!(conds);
        p.finished = Some((t, reason, msg));
    };
    let deadline = spec["activeDeadlineSeconds"].as_i64();
    if failed > backoff_limit {
        finish("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit".into(), &mut status);
    } else if deadline.is_some_and(|d| now >= start + chrono::Duration::seconds(d)) {
        finish("Failed", "DeadlineExceeded", "Job was active longer than specified deadline".into(), &mut status);
    } else if completions.is_some_and(|c| succeeded >= c)
        || (completions.is_none() && succeeded > 0 && active.is_empty())
    {
        finish("Complete", "Completed", "Job completed".into(), &mut status);
        status["completionTime"] = json!(now_s);
    }
    if p.finished.is_some() {
        p.delete = active.iter().map(|pod| object::name(pod).to_string()).collect();
        status["active"] = json!(0);
        p.requeue = spec["ttlSecondsAfterFinished"].as_i64().map(|t| Duration::from_secs(t.max(0) as u64));
    } else {
        let remaining = completions.map_or(parallelism, |c| (c - succeeded).max(0));
        let want = parallelism.min(remaining) as usize;
        if active.len() < want {
            p.create = want - active.len();
        } else if active.len() > want {
            p.delete = active.iter().rev().take(active.len() - want).map(|pod| object::name(pod).to_string()).collect();
        }
        if let Some(d) = deadline {
            p.requeue = (start + chrono::Duration::seconds(d) - now).to_std().ok();
        }
    }
    p.status = status;
    p
}

struct Ctl {
    api: Api,
    jobs: Arc<Informer>,
    pods: Arc<Informer>,
}

impl Ctl {
    async fn reconcile(&self, key: String) -> Result<Action, ApiError> {
        let Some(job) = self.jobs.cache.get(&key) else { return Ok(Action::AwaitChange) };
        if object::is_deleting(&job) || job["spec"]["suspend"] == true {
            return Ok(Action::AwaitChange);
        }
        let ns = object::namespace(&job).to_string();
        let plan = plan(&job, &self.pods.cache.list(Some(&ns)), Utc::now());
        let jres = resources::of(resources::ResourceKind::Job);
        let pres = resources::of(resources::ResourceKind::Pod);
        if plan.delete_job {
            match self.api.delete(&target(jres, &ns, object::name(&job), None), Default::default(), false).await {
                Ok(_) | Err(ApiError { code: 404, .. }) => return Ok(Action::AwaitChange),
                Err(e) => return Err(e),
            }
        }
        for _ in 0..plan.create {
            let mut pod = pod_from_template(&job, &job["spec"]["template"], object::name(&job));
            let labels = &mut pod["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["job-name"] = json!(object::name(&job));
            labels["batch.kubernetes.io/job-name"] = json!(object::name(&job));
            labels["controller-uid"] = json!(object::uid(&job));
            labels["batch.kubernetes.io/controller-uid"] = json!(object::uid(&job));
            let w = self.api.create(pres, Some(&ns), pod, FieldValidation::Ignore, false).await?;
            let msg = format!("Created pod: {}", object::name(&w.object));
            self.pods.cache.assume(w.object);
            events::record(&self.api, &job, "Normal", "SuccessfulCreate", msg, COMPONENT).await;
        }
        for name in &plan.delete {
            match self.api.delete(&target(pres, &ns, name, None), Default::default(), false).await {
                Ok(_) | Err(ApiError { code: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some((t, reason, msg)) = &plan.finished {
            let kind = if *t == "Complete" { "Normal" } else { "Warning" };
            events::record(&self.api, &job, kind, reason, msg.clone(), COMPONENT).await;
        }
        if job["status"] != plan.status {
            let o = merge_patch(
                &self.api,
                &target(jres, &ns, object::name(&job), Some("status")),
                json!({"status": plan.status}),
            )
            .await?;
            self.jobs.cache.assume(o);
        }
        Ok(plan.requeue.map_or(Action::AwaitChange, |d| Action::Requeue(d + Duration::from_millis(50))))
    }
}

pub fn start(api: Api, jobs: Arc<Informer>, pods: Arc<Informer>) -> impl Future<Output = ()> {
    let queue = Queue::new();
    {
        let q = queue.clone();
        jobs.on_change(Arc::new(move |_, new| {
            if let Some(j) = new {
                q.add(key_of(j));
            }
        }));
    }
    {
        let q = queue.clone();
        pods.on_change(Arc::new(move |old, new| {
            for p in [old, new].into_iter().flatten() {
                if let Some(("Job", name, _)) = controller_of(p) {
                    q.add(format!("{}/{name}", object::namespace(p)));
                }
            }
        }));
    }
    let ctl = Arc::new(Ctl { api: api.clone(), jobs: jobs.clone(), pods: pods.clone() });
    async move {
        jobs.cache.wait_synced().await;
        pods.cache.wait_synced().await;
        run_workers(api, "job", queue, 2, move |k| {
            let c = ctl.clone();
            async move { c.reconcile(k).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(completions: i64, parallelism: i64) -> Value {
        json!({"metadata": {"name": "j", "namespace": "d", "uid": "J"}, "spec": {"completions": completions,
            "parallelism": parallelism, "backoffLimit": 2, "template": {"spec": {"containers": [{"name": "c"}]}}}})
    }

    fn pod(name: &str, phase: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "d", "ownerReferences": [{"kind": "Job", "name": "j", "uid": "J", "controller": true}]},
            "status": {"phase": phase}})
    }

    #[test]
    fn runs_parallelism_at_a_time_until_completions() {
        let now = Utc::now();
        assert_eq!(plan(&job(5, 2), &[], now).create, 2);
        let pods = [pod("a", "Succeeded"), pod("b", "Succeeded"), pod("c", "Succeeded"), pod("d", "Running")];
        let p = plan(&job(5, 2), &pods, now);
        assert_eq!(p.create, 1, "one more runs beside d");
        let pods = [
            pod("a", "Succeeded"),
            pod("b", "Succeeded"),
            pod("c", "Succeeded"),
            pod("d", "Succeeded"),
            pod("e", "Running"),
        ];
        assert_eq!(plan(&job(5, 2), &pods, now).create, 0, "only one completion left and it is running");
        let pods: Vec<Value> = (0..5).map(|i| pod(&format!("p{i}"), "Succeeded")).collect();
        let p = plan(&job(5, 2), &pods, now);
        assert_eq!(p.finished.as_ref().map(|f| f.0), Some("Complete"));
        assert_eq!(p.status["succeeded"], 5);
        assert!(p.status["completionTime"].is_string());
    }

    #[test]
    fn gives_up_after_the_backoff_limit_and_the_deadline() {
        let now = Utc::now();
        let pods = [pod("a", "Failed"), pod("b", "Failed"), pod("c", "Failed"), pod("d", "Running")];
        let p = plan(&job(1, 1), &pods, now);
        assert_eq!(p.finished.as_ref().map(|f| f.1), Some("BackoffLimitExceeded"));
        assert_eq!(p.delete, vec!["d"], "active pods stop when the job fails");
        let mut j = job(1, 1);
        j["spec"]["activeDeadlineSeconds"] = json!(10);
        j["status"]["startTime"] = json!((now - chrono::Duration::seconds(11)).to_rfc3339());
        assert_eq!(plan(&j, &[pod("a", "Running")], now).finished.as_ref().map(|f| f.1), Some("DeadlineExceeded"));
    }

    #[test]
    fn finished_jobs_go_after_their_ttl() {
        let now = Utc::now();
        let mut j = job(1, 1);
        j["spec"]["ttlSecondsAfterFinished"] = json!(5);
        j["status"]["conditions"] = json!([{"type": "Complete", "status": "True",
            "lastTransitionTime": (now - chrono::Duration::seconds(2)).to_rfc3339()}]);
        let p = plan(&j, &[pod("a", "Succeeded")], now);
        assert!(!p.delete_job);
        let d = p.requeue.unwrap();
        assert!(d > Duration::from_secs(2) && d <= Duration::from_secs(3), "{d:?}");
        j["status"]["conditions"][0]["lastTransitionTime"] = json!((now - chrono::Duration::seconds(6)).to_rfc3339());
        assert!(plan(&j, &[], now).delete_job);
    }
}
