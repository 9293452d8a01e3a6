//! CronJob: create a Job from `jobTemplate` at each time `schedule` (standard five-field cron,
//! UTC, `@hourly`-style aliases) names, under `concurrencyPolicy`, within
//! `startingDeadlineSeconds`; keep `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`
//! finished Jobs. Missed runs collapse into one, as Kubernetes does. The decision is [`plan`].

use super::events;
use super::replicaset::{controller_of, merge_patch, owner_ref, target};
use super::runtime::{Action, Informer, Queue, key_of, run_workers};
use crate::apiserver::api::Api;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object, resources};

const COMPONENT: &str = "cronjob-controller";

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Create a Job for this scheduled time.
    pub run_at: Option<DateTime<Utc>>,
    /// Jobs to delete (replaced, or beyond the history limits).
    pub delete: Vec<String>,
    pub status: Value,
    pub next: Option<DateTime<Utc>>,
    /// Why a due run was skipped (an event).
    pub skipped: Option<String>,
}

fn ts(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()?.parse().ok()
}

fn finished(job: &Value) -> Option<&'static str> {
    let c = job["status"]["conditions"].as_array()?;
    if c.iter().any(|c| c["type"] == "Complete" && c["status"] == "True") {
        Some("Complete")
    } else if c.iter().any(|c| c["type"] == "Failed" && c["status"] == "True") {
        Some("Failed")
    } else {
        None
    }
}

pub fn parse_schedule(s: &str) -> Result<croner::Cron, String> {
    if s.split_whitespace().count() != 5 && !s.starts_with('@') {
        return Err(format!("invalid schedule {s:?}: expected 5 fields (minute hour day-of-month month day-of-week)"));
    }
    s.parse::<croner::Cron>().map_err(|e| format!("invalid schedule {s:?}: {e}"))
}

/// The Job name for a scheduled time: `<cronjob>-<minutes since the epoch>`, as Kubernetes.
pub fn job_name(cj: &Value, at: DateTime<Utc>) -> String {
    format!("{}-{}", object::name(cj), at.timestamp() / 60)
}

pub fn plan(cj: &Value, jobs: &[Value], now: DateTime<Utc>) -> Result<Plan, String> {
    let mut p = Plan::default();
    let cron = parse_schedule(cj["spec"]["schedule"].as_str().unwrap_or(""))?;
    let uid = object::uid(cj);
    let mut owned: Vec<&Value> = jobs.iter().filter(|j| controller_of(j).is_some_and(|(_, _, u)| u == uid)).collect();
    owned.sort_by_key(|j| j["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string());
    let active: Vec<&Value> =
        owned.iter().copied().filter(|j| finished(j).is_none() && !object::is_deleting(j)).collect();
    // History limits.
    for (kind, limit) in [
        ("Complete", cj["spec"]["successfulJobsHistoryLimit"].as_i64().unwrap_or(3)),
        ("Failed", cj["spec"]["failedJobsHistoryLimit"].as_i64().unwrap_or(1)),
    ] {
        let done: Vec<&&Value> = owned.iter().filter(|j| finished(j) == Some(kind)).collect();
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        p.delete.extend(done[..extra].iter().map(|j| object::name(j).to_string()));
    }
    let last =
        ts(&cj["status"]["lastScheduleTime"]).or_else(|| ts(&cj["metadata"]["creationTimestamp"])).unwrap_or(now);
    // The most recent scheduled time in (last, now], if any.
    let mut due = None;
    let mut t = last;
    for _ in 0..1000 {
        match cron.find_next_occurrence(&t, false) {
            Ok(n) if n <= now => {
                due = Some(n);
                t = n;
            }
            _ => break,
        }
    }
    p.next = cron.find_next_occurrence(&now, false).ok();
    let mut last_schedule = cj["status"]["lastScheduleTime"].clone();
    if let Some(at) = due
        && cj["spec"]["suspend"] != true
    {
        let deadline = cj["spec"]["startingDeadlineSeconds"].as_i64();
        let policy = cj["spec"]["concurrencyPolicy"].as_str().unwrap_or("Allow");
        let name = job_name(cj, at);
        let exists = owned.iter().any(|j| object::name(j) == name);
        if deadline.is_some_and(|d| (now - at).num_seconds() > d) {
            p.skipped = Some(format!("Missed scheduled time to start a job: {}", at.to_rfc3339()));
            last_schedule = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        } else if !exists {
            match policy {
                "Forbid" if !active.is_empty() => {
                    p.skipped = Some(
                        "Not starting job because prior execution is still running and concurrency policy is Forbid"
                            .into(),
                    );
                }
                _ => {
                    if policy == "Replace" {
                        p.delete.extend(active.iter().map(|j| object::name(j).to_string()));
                    }
                    p.run_at = Some(at);
                    last_schedule = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                }
            }
        }
    }
    let last_success = owned
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j["status"]["completionTime"].as_str())
        .max()
        .map(|s| json!(s))
        .unwrap_or_else(|| cj["status"]["lastSuccessfulTime"].clone());
    let active_refs: Vec<Value> = active
        .iter()
        .map(|j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": object::name(j), "namespace": object::namespace(j), "uid": object::uid(j)}))
        .collect();
    let mut status = json!({"lastScheduleTime": last_schedule, "lastSuccessfulTime": last_success});
    if !active_refs.is_empty() {
        status["active"] = json!(active_refs);
    }
    p.status = status;
    Ok(p)
}

struct Ctl {
    api: Api,
    crons: Arc<Informer>,
    jobs: Arc<Informer>,
}

impl Ctl {
    async fn reconcile(&self, key: String) -> Result<Action, ApiError> {
        let Some(cj) = self.crons.cache.get(&key) else { return Ok(Action::AwaitChange) };
        if object::is_deleting(&cj) {
            return Ok(Action::AwaitChange);
        }
        let ns = object::namespace(&cj).to_string();
        let now = Utc::now();
        let plan = match plan(&cj, &self.jobs.cache.list(Some(&ns)), now) {
            Ok(p) => p,
            Err(msg) => {
                events::record(&self.api, &cj, "Warning", "UnparseableSchedule", msg, COMPONENT).await;
                return Ok(Action::AwaitChange);
            }
        };
        let jres = resources::of(resources::ResourceKind::Job);
        for name in &plan.delete {
            match self.api.delete(&target(jres, &ns, name, None), Default::default(), false).await {
                Ok(_) | Err(ApiError { code: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(at) = plan.run_at {
            let t = &cj["spec"]["jobTemplate"];
            let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
                    "name": job_name(&cj, at), "namespace": ns,
                    "labels": t["metadata"]["labels"], "annotations": t["metadata"]["annotations"],
                    "ownerReferences": [owner_ref(&cj)]},
                "spec": t["spec"]});
            match self.api.create(jres, Some(&ns), job, FieldValidation::Ignore, false).await {
                Ok(w) => {
                    let msg = format!("Created job {}", object::name(&w.object));
                    self.jobs.cache.assume(w.object);
                    events::record(&self.api, &cj, "Normal", "SuccessfulCreate", msg, COMPONENT).await;
                }
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(why) = &plan.skipped {
            events::record(&self.api, &cj, "Warning", "JobNotStarted", why.clone(), COMPONENT).await;
        }
        let differs = ["lastScheduleTime", "lastSuccessfulTime", "active"]
            .iter()
            .any(|k| cj["status"][k] != plan.status[k] && !(cj["status"][k].is_null() && plan.status[k].is_null()));
        if differs {
            let cres = resources::of(resources::ResourceKind::CronJob);
            let mut st = plan.status.clone();
            if st.get("active").is_none() {
                st["active"] = Value::Null;
            }
            let o =
                merge_patch(&self.api, &target(cres, &ns, object::name(&cj), Some("status")), json!({"status": st}))
                    .await?;
            self.crons.cache.assume(o);
        }
        let wait = plan.next.and_then(|n| (n - now).to_std().ok()).unwrap_or(Duration::from_secs(60));
        Ok(Action::Requeue(wait + Duration::from_millis(100)))
    }
}

pub fn start(api: Api, crons: Arc<Informer>, jobs: Arc<Informer>) -> impl Future<Output = ()> {
    let queue = Queue::new();
    {
        let q = queue.clone();
        crons.on_change(Arc::new(move |_, new| {
            if let Some(c) = new {
                q.add(key_of(c));
            }
        }));
    }
    {
        let q = queue.clone();
        jobs.on_change(Arc::new(move |old, new| {
            for j in [old, new].into_iter().flatten() {
                if let Some(("CronJob", name, _)) = controller_of(j) {
                    q.add(format!("{}/{name}", object::namespace(j)));
                }
            }
        }));
    }
    let ctl = Arc::new(Ctl { api: api.clone(), crons: crons.clone(), jobs: jobs.clone() });
    async move {
        crons.cache.wait_synced().await;
        jobs.cache.wait_synced().await;
        run_workers(api, "cronjob", queue, 1, move |k| {
            let c = ctl.clone();
            async move { c.reconcile(k).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cj(schedule: &str, policy: &str, last: &str) -> Value {
        json!({"metadata": {"name": "nightly", "namespace": "d", "uid": "C", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"schedule": schedule, "concurrencyPolicy": policy, "jobTemplate": {"spec": {}}},
            "status": {"lastScheduleTime": last}})
    }

    fn job(name: &str, state: Option<&str>) -> Value {
        let mut j = json!({"metadata": {"name": name, "namespace": "d", "creationTimestamp": name,
            "ownerReferences": [{"kind": "CronJob", "name": "nightly", "uid": "C", "controller": true}]}, "status": {}});
        if let Some(s) = state {
            j["status"]["conditions"] = json!([{"type": s, "status": "True"}]);
        }
        j
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn runs_the_latest_missed_time_once() {
        let c = cj("*/5 * * * *", "Allow", "2026-03-01T10:00:00Z");
        let p = plan(&c, &[], t("2026-03-01T10:17:30Z")).unwrap();
        assert_eq!(p.run_at, Some(t("2026-03-01T10:15:00Z")), "three were missed; only the latest runs");
        assert_eq!(p.status["lastScheduleTime"], "2026-03-01T10:15:00Z");
        assert_eq!(p.next, Some(t("2026-03-01T10:20:00Z")));
        let none = plan(&c, &[], t("2026-03-01T10:04:00Z")).unwrap();
        assert_eq!(none.run_at, None);
        assert!(parse_schedule("* * *").unwrap_err().contains("expected 5 fields"));
        assert!(parse_schedule("@hourly").is_ok());
    }

    #[test]
    fn concurrency_policies_and_deadlines() {
        let now = t("2026-03-01T10:05:10Z");
        let running = [job("2026-03-01T10:00:00Z", None)];
        assert!(plan(&cj("*/5 * * * *", "Forbid", "2026-03-01T10:00:00Z"), &running, now).unwrap().run_at.is_none());
        let p = plan(&cj("*/5 * * * *", "Replace", "2026-03-01T10:00:00Z"), &running, now).unwrap();
        assert_eq!(p.delete, vec!["2026-03-01T10:00:00Z"]);
        assert!(p.run_at.is_some());
        assert!(plan(&cj("*/5 * * * *", "Allow", "2026-03-01T10:00:00Z"), &running, now).unwrap().run_at.is_some());
        let mut late = cj("*/5 * * * *", "Allow", "2026-03-01T10:00:00Z");
        late["spec"]["startingDeadlineSeconds"] = json!(5);
        let p = plan(&late, &[], now).unwrap();
        assert!(p.run_at.is_none() && p.skipped.is_some(), "10 s late with a 5 s deadline");
    }

    #[test]
    fn keeps_history_limits() {
        let jobs: Vec<Value> = (0..5)
            .map(|i| job(&format!("2026-03-01T10:0{i}:00Z"), Some("Complete")))
            .chain([job("2026-03-01T09:00:00Z", Some("Failed")), job("2026-03-01T09:30:00Z", Some("Failed"))])
            .collect();
        let p = plan(&cj("0 0 1 1 *", "Allow", "2026-03-01T10:00:00Z"), &jobs, t("2026-03-01T10:10:00Z")).unwrap();
        assert_eq!(p.delete, vec!["2026-03-01T10:00:00Z", "2026-03-01T10:01:00Z", "2026-03-01T09:00:00Z"]);
    }
}
