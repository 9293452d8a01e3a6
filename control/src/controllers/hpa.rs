//! HorizontalPodAutoscaler: every sync period, for each HPA, read its target's `scale`, the
//! usage of the pods its selector picks (the resource metrics the API server scrapes), and
//! set the replica count Kubernetes' algorithm asks for (`wasmorch_api::hpa`: the replica
//! calculator, stabilization and scaling policies), with the status, conditions and events
//! kubectl shows. Recommendations and scale events are remembered in memory, as Kubernetes'
//! controller does (a new leader starts them afresh).

use super::events;
use super::replicaset::target;
use super::runtime::{Action, Informer, Queue, key_of, run_workers, split_key};
use crate::apiserver::api::Api;
use crate::apiserver::metrics::{Metrics, PodUsage};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmorch_api::hpa::{self, History, PodView, Rules, Sample, Target};
use wasmorch_api::selector::LabelSelector;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object, resources};

const COMPONENT: &str = "horizontal-pod-autoscaler";

/// The controller's flags (kube-controller-manager's `--horizontal-pod-autoscaler-*`).
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub sync_period: Duration,
    pub tolerance: f64,
    /// Scale-down stabilization when an HPA's behavior sets none.
    pub downscale_stabilization: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sync_period: Duration::from_secs(15),
            tolerance: hpa::TOLERANCE,
            downscale_stabilization: hpa::DOWNSCALE_STABILIZATION,
        }
    }
}

/// What one metric gave: its desired count, its `currentMetrics` entry, and its name for
/// messages (`cpu resource utilization (percentage of request)`).
struct Computed {
    replicas: i64,
    status: Value,
    name: String,
}

/// Why a metric could not be computed: the ScalingActive reason and the message.
struct MetricError {
    reason: &'static str,
    message: String,
}

fn cpu_quantity(cores: f64) -> String {
    format!("{}m", (cores * 1000.0).round() as i64)
}

fn memory_quantity(bytes: f64) -> String {
    let b = bytes.round() as i64;
    if b % (1 << 20) == 0 {
        format!("{}Mi", b >> 20)
    } else if b % 1024 == 0 {
        format!("{}Ki", b >> 10)
    } else {
        b.to_string()
    }
}

/// A pod's usage of `resource` (cores or bytes) over all its containers or the one named.
fn sample_of(u: &PodUsage, resource: &str, container: Option<&str>) -> Option<Sample> {
    let cs: Vec<_> = u.containers.iter().filter(|c| container.is_none_or(|n| c.name == n)).collect();
    if cs.is_empty() {
        return None;
    }
    let value = match resource {
        "cpu" => cs.iter().map(|c| c.nano_cores as f64 / 1e9).sum(),
        "memory" => cs.iter().map(|c| c.memory as f64).sum(),
        _ => return None,
    };
    Some(Sample { value, timestamp: u.timestamp, window: u.window })
}

/// What every metric's computation reads: the target's current replicas, the pods its
/// selector picks, their usage, and the controller's tolerance and clock.
#[derive(Clone, Copy)]
struct Inputs<'a> {
    current: i64,
    pods: &'a [Value],
    metrics: &'a Metrics,
    ns: &'a str,
    tolerance: f64,
    now: DateTime<Utc>,
}

/// The desired count for one `Resource` or `ContainerResource` metric.
fn resource_metric(spec: &Value, ty: &str, inp: &Inputs<'_>) -> Result<Computed, MetricError> {
    let Inputs { current, pods, metrics, ns, tolerance, now } = *inp;
    let key = if ty == "Resource" { "resource" } else { "containerResource" };
    let m = &spec[key];
    let resource = m["name"].as_str().unwrap_or("");
    let container = m["container"].as_str();
    let fail = |message: String| MetricError {
        reason: if ty == "Resource" { "FailedGetResourceMetric" } else { "FailedGetContainerResourceMetric" },
        message,
    };
    if !matches!(resource, "cpu" | "memory") {
        return Err(fail(format!("unable to get metrics for resource {resource}: only cpu and memory are measured")));
    }
    let t = &m["target"];
    let target = match t["type"].as_str() {
        Some("Utilization") => Target::Utilization(t["averageUtilization"].as_f64().unwrap_or(0.0)),
        _ => {
            let q = t["averageValue"].as_str().and_then(wasmorch_api::quantity::parse).or(t["averageValue"].as_f64());
            Target::AverageValue(q.unwrap_or(0.0))
        }
    };
    let views: Vec<PodView> = pods.iter().map(|p| PodView::of(p, resource, container)).collect();
    let samples: HashMap<String, Sample> = pods
        .iter()
        .filter_map(|p| {
            let u = metrics.pod(ns, object::name(p))?;
            Some((object::name(p).to_string(), sample_of(&u, resource, container)?))
        })
        .collect();
    let what = match target {
        Target::Utilization(_) => "utilization",
        Target::AverageValue(_) => "usage",
    };
    let r = hpa::replicas_for(current, &views, &samples, target, resource == "cpu", tolerance, now)
        .map_err(|e| fail(format!("failed to get {resource} {what}: {e}")))?;
    let average = if resource == "cpu" { cpu_quantity(r.average) } else { memory_quantity(r.average) };
    let mut current_value = json!({"averageValue": average});
    if let Some(u) = r.utilization {
        current_value["averageUtilization"] = json!(u);
    }
    let mut status = json!({"name": resource, "current": current_value});
    if let Some(c) = container {
        status["container"] = json!(c);
    }
    let scope = if ty == "Resource" { "resource" } else { "container resource" };
    let name = match target {
        Target::Utilization(_) => format!("{resource} {scope} utilization (percentage of request)"),
        Target::AverageValue(_) => format!("{resource} {scope}"),
    };
    Ok(Computed { replicas: r.replicas, status: json!({"type": ty, key: status}), name })
}

/// The per-pod metrics the proxy's counters give (for `Pods` and `Object` metrics).
pub const REQUESTS_PER_SECOND: &str = "requests_per_second";
pub const REQUESTS_IN_FLIGHT: &str = "requests_in_flight";

/// A pod's value of a request metric (summed over its HTTP containers).
fn request_sample(u: &PodUsage, metric: &str) -> Option<Sample> {
    let values: Vec<f64> = u
        .containers
        .iter()
        .filter_map(|c| match metric {
            REQUESTS_PER_SECOND => c.requests_per_second,
            REQUESTS_IN_FLIGHT => c.in_flight.map(|n| n as f64),
            _ => None,
        })
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(Sample { value: values.iter().sum(), timestamp: u.timestamp, window: u.window })
}

fn quantity(v: &Value) -> Option<f64> {
    v.as_str().and_then(wasmorch_api::quantity::parse).or(v.as_f64())
}

/// A rate or count as a quantity: whole units from 10 up (`1523`), else thousandths (`2500m`).
fn plain_quantity(v: f64) -> String {
    if v >= 10.0 {
        return (v.round() as i64).to_string();
    }
    let milli = (v * 1000.0).round() as i64;
    if milli % 1000 == 0 { (milli / 1000).to_string() } else { format!("{milli}m") }
}

fn unknown_metric(name: &str) -> String {
    format!("unable to get metric {name}: the metrics served are {REQUESTS_PER_SECOND} and {REQUESTS_IN_FLIGHT}")
}

/// The desired count for a `Pods` metric: the average per pod of a request metric.
fn pods_metric(spec: &Value, inp: &Inputs<'_>) -> Result<Computed, MetricError> {
    let Inputs { current, pods, metrics, ns, tolerance, now } = *inp;
    let m = &spec["pods"];
    let name = m["metric"]["name"].as_str().unwrap_or("");
    let fail = |message: String| MetricError { reason: "FailedGetPodsMetric", message };
    if ![REQUESTS_PER_SECOND, REQUESTS_IN_FLIGHT].contains(&name) {
        return Err(fail(unknown_metric(name)));
    }
    let target = Target::AverageValue(quantity(&m["target"]["averageValue"]).unwrap_or(0.0));
    let views: Vec<PodView> = pods.iter().map(|p| PodView::of(p, "cpu", None)).collect();
    let samples: HashMap<String, Sample> = pods
        .iter()
        .filter_map(|p| Some((object::name(p).to_string(), request_sample(&metrics.pod(ns, object::name(p))?, name)?)))
        .collect();
    let r = hpa::replicas_for(current, &views, &samples, target, false, tolerance, now)
        .map_err(|e| fail(format!("failed to get pods metric value: {e}")))?;
    let status = json!({"type": "Pods", "pods": {"metric": {"name": name}, "current": {"averageValue": plain_quantity(r.average)}}});
    Ok(Computed { replicas: r.replicas, status, name: format!("pods metric {name}") })
}

/// The desired count for an `Object` metric: a request metric of a Service, the sum over the
/// pods it selects.
fn object_metric(
    spec: &Value,
    inp: &Inputs<'_>,
    pods_of: impl Fn(&LabelSelector) -> Vec<Value>,
    services: &Informer,
) -> Result<Computed, MetricError> {
    let Inputs { current, pods, metrics, ns, tolerance, .. } = *inp;
    let ready = pods.iter().filter(|p| super::replicaset::is_ready(p)).count() as i64;
    let m = &spec["object"];
    let name = m["metric"]["name"].as_str().unwrap_or("");
    let fail = |message: String| MetricError { reason: "FailedGetObjectMetric", message };
    let (kind, obj) =
        (m["describedObject"]["kind"].as_str().unwrap_or(""), m["describedObject"]["name"].as_str().unwrap_or(""));
    if kind != "Service" {
        return Err(fail(format!("unable to get metric {name}: only Services are described ({kind} given)")));
    }
    if ![REQUESTS_PER_SECOND, REQUESTS_IN_FLIGHT].contains(&name) {
        return Err(fail(unknown_metric(name)));
    }
    let svc =
        services.cache.get(&format!("{ns}/{obj}")).ok_or_else(|| fail(format!("service {ns}/{obj} not found")))?;
    let selector = svc["spec"]["selector"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","));
    let sel = selector
        .filter(|s| !s.is_empty())
        .and_then(|s| LabelSelector::parse(&s).ok())
        .ok_or_else(|| fail(format!("service {ns}/{obj} has no selector")))?;
    let value: f64 = pods_of(&sel)
        .iter()
        .filter_map(|p| request_sample(&metrics.pod(ns, object::name(p))?, name))
        .map(|s| s.value)
        .sum();
    let t = &m["target"];
    let average = t["type"] == "AverageValue";
    let want = quantity(if average { &t["averageValue"] } else { &t["value"] }).unwrap_or(0.0);
    if want <= 0.0 {
        return Err(fail("the target must be positive".into()));
    }
    let replicas = hpa::replicas_for_object(current, ready, value, Target::AverageValue(want), average, tolerance);
    let mut current_value = json!({"value": plain_quantity(value)});
    if average {
        current_value = json!({"averageValue": plain_quantity(value / current.max(1) as f64)});
    }
    let status = json!({"type": "Object", "object": {"metric": {"name": name}, "describedObject": m["describedObject"], "current": current_value}});
    Ok(Computed { replicas, status, name: format!("{name} on Service/{obj} (target value)") })
}

/// The condition `ty` set to `status`, keeping its transition time while its status holds.
fn condition(prev: &Value, ty: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    let s = if status { "True" } else { "False" };
    let old = prev.as_array().into_iter().flatten().find(|c| c["type"] == ty);
    let since = match old {
        Some(c) if c["status"] == s => c["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    json!({"type": ty, "status": s, "lastTransitionTime": since, "reason": reason, "message": message})
}

/// The scalable resource an HPA's `scaleTargetRef` names.
fn scale_target(r: &Value) -> Result<&'static resources::Resource, String> {
    let kind = r["kind"].as_str().unwrap_or("");
    let group = r["apiVersion"].as_str().and_then(|v| v.rsplit_once('/')).map_or("", |(g, _)| g);
    resources::stored()
        .into_iter()
        .find(|res| res.kind == kind && res.has_scale && (group.is_empty() || res.group == group))
        .ok_or_else(|| format!("no matches for kind \"{kind}\" in group \"{group}\" with a scale subresource"))
}

struct Controller {
    api: Api,
    hpas: Arc<Informer>,
    pods: Arc<Informer>,
    services: Arc<Informer>,
    metrics: Arc<Metrics>,
    cfg: Config,
    history: Mutex<HashMap<String, History>>,
}

impl Controller {
    async fn reconcile(&self, key: String) -> Result<Action, ApiError> {
        let Some(h) = self.hpas.cache.get(&key) else {
            self.history.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            return Ok(Action::AwaitChange);
        };
        if object::is_deleting(&h) {
            return Ok(Action::AwaitChange);
        }
        let (ns, name) = split_key(&key);
        let ns = ns.unwrap_or("default");
        let now = Utc::now();
        let now_s = object::now_rfc3339();
        let spec = &h["spec"];
        let prev = &h["status"]["conditions"];
        let min = spec["minReplicas"].as_i64().unwrap_or(1);
        let max = spec["maxReplicas"].as_i64().unwrap_or(1);
        let mut status = json!({
            "observedGeneration": h["metadata"]["generation"],
            "currentReplicas": h["status"]["currentReplicas"].as_i64().unwrap_or(0),
            "desiredReplicas": h["status"]["desiredReplicas"].as_i64().unwrap_or(0),
        });
        if let Some(t) = h["status"].get("lastScaleTime") {
            status["lastScaleTime"] = t.clone();
        }
        if let Some(m) = h["status"].get("currentMetrics") {
            status["currentMetrics"] = m.clone();
        }
        let mut conds: Vec<Value> = Vec::new();

        // The target's scale.
        let scale = match scale_target(&spec["scaleTargetRef"]) {
            Ok(res) => {
                let t = target(res, ns, spec["scaleTargetRef"]["name"].as_str().unwrap_or(""), Some("scale"));
                self.api.get_scale(&t).await.map(|s| (t, s)).map_err(|e| e.message)
            }
            Err(e) => Err(e),
        };
        let (scale_t, scale) = match scale {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("the HPA controller was unable to get the target's current scale: {e}");
                events::record(&self.api, &h, "Warning", "FailedGetScale", e, COMPONENT).await;
                conds.push(condition(prev, "AbleToScale", false, "FailedGetScale", &msg, &now_s));
                return self.write_status(&h, ns, name, status, conds).await;
            }
        };
        let current = scale["spec"]["replicas"].as_i64().unwrap_or(0);
        status["currentReplicas"] = json!(scale["status"]["replicas"].as_i64().unwrap_or(current));
        let selector = scale["status"]["selector"].as_str().unwrap_or("");

        let got_scale = || {
            let msg = "the HPA controller was able to get the target's current scale";
            condition(prev, "AbleToScale", true, "SucceededGetScale", msg, &now_s)
        };
        let behavior = &spec["behavior"];
        let up = Rules::of(behavior.get("scaleUp"), hpa::default_scale_up(), self.cfg.downscale_stabilization);
        let down = Rules::of(behavior.get("scaleDown"), hpa::default_scale_down(), self.cfg.downscale_stabilization);
        let (desired, reason) = if current == 0 && min != 0 {
            conds.push(got_scale());
            conds.push(condition(
                prev,
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
                &now_s,
            ));
            (0, None)
        } else if current > max || current < min {
            let (n, why, limit) = if current > max {
                (max, "Current number of replicas above Spec.MaxReplicas", "TooManyReplicas")
            } else {
                (min, "Current number of replicas below Spec.MinReplicas", "TooFewReplicas")
            };
            conds.push(got_scale());
            conds.push(condition(prev, "ScalingLimited", true, limit, why, &now_s));
            (n, Some(why.to_string()))
        } else {
            let Ok(sel) = LabelSelector::parse(selector) else {
                conds.push(condition(
                    prev,
                    "ScalingActive",
                    false,
                    "InvalidSelector",
                    &format!("couldn't convert selector into a corresponding internal selector object: {selector}"),
                    &now_s,
                ));
                return self.write_status(&h, ns, name, status, conds).await;
            };
            let pods: Vec<Value> = self.pods.cache.list(Some(ns)).into_iter().filter(|p| sel.selects(p)).collect();
            let mut best: Option<Computed> = None;
            let mut statuses = Vec::new();
            let mut failure: Option<MetricError> = None;
            for m in spec["metrics"].as_array().into_iter().flatten() {
                let ty = m["type"].as_str().unwrap_or("");
                let inp =
                    Inputs { current, pods: &pods, metrics: &self.metrics, ns, tolerance: self.cfg.tolerance, now };
                let r = match ty {
                    "Resource" | "ContainerResource" => resource_metric(m, ty, &inp),
                    "Pods" => pods_metric(m, &inp),
                    "Object" => {
                        let pods_of = |sel: &LabelSelector| -> Vec<Value> {
                            self.pods.cache.list(Some(ns)).into_iter().filter(|p| sel.selects(p)).collect()
                        };
                        object_metric(m, &inp, pods_of, &self.services)
                    }
                    other => Err(MetricError {
                        reason: "FailedGetExternalMetric",
                        message: format!(
                            "metrics of type {other} are not served by this cluster (Resource, ContainerResource, Pods and Object are)"
                        ),
                    }),
                };
                match r {
                    Ok(c) => {
                        statuses.push(c.status.clone());
                        if best.as_ref().is_none_or(|b| c.replicas > b.replicas) {
                            best = Some(c);
                        }
                    }
                    Err(e) => {
                        statuses.push(json!({"type": ty}));
                        failure.get_or_insert(e);
                    }
                }
            }
            status["currentMetrics"] = json!(statuses);
            let Some(best) = best else {
                let e =
                    failure.unwrap_or(MetricError { reason: "FailedGetResourceMetric", message: "no metrics".into() });
                events::record(&self.api, &h, "Warning", e.reason, e.message.clone(), COMPONENT).await;
                events::record(
                    &self.api,
                    &h,
                    "Warning",
                    "FailedComputeMetricsReplicas",
                    format!(
                        "invalid metrics ({} invalid out of {}), first error is: {}",
                        statuses.len(),
                        statuses.len(),
                        e.message
                    ),
                    COMPONENT,
                )
                .await;
                conds.push(got_scale());
                conds.push(condition(prev, "ScalingActive", false, e.reason, &e.message, &now_s));
                return self.write_status(&h, ns, name, status, conds).await;
            };
            conds.push(condition(
                prev,
                "ScalingActive",
                true,
                "ValidMetricFound",
                &format!("the HPA was able to successfully calculate a replica count from {}", best.name),
                &now_s,
            ));
            let n = {
                let mut hist = self.history.lock().unwrap_or_else(|e| e.into_inner());
                hpa::normalize(hist.entry(key.clone()).or_default(), current, best.replicas, min, max, &up, &down, now)
            };
            conds.push(condition(prev, "AbleToScale", true, n.able.0, n.able.1, &now_s));
            conds.push(condition(prev, "ScalingLimited", n.limited.0, n.limited.1, n.limited.2, &now_s));
            let why = match n.replicas.cmp(&current) {
                std::cmp::Ordering::Greater => Some(format!("{} above target", best.name)),
                std::cmp::Ordering::Less => Some("All metrics below target".to_string()),
                std::cmp::Ordering::Equal => None,
            };
            (n.replicas, why)
        };
        status["desiredReplicas"] = json!(desired);
        if let Some(why) = reason.filter(|_| desired != current) {
            let want = desired;
            let r = self
                .api
                .set_scale(&scale_t, false, move |cur| {
                    let mut s = cur.clone();
                    s["spec"]["replicas"] = json!(want);
                    Ok(s)
                })
                .await;
            match r {
                Ok(_) => {
                    let msg = format!("New size: {desired}; reason: {why}");
                    events::record(&self.api, &h, "Normal", "SuccessfulRescale", msg, COMPONENT).await;
                    status["lastScaleTime"] = json!(now_s);
                    let mut hist = self.history.lock().unwrap_or_else(|e| e.into_inner());
                    hpa::record_scale(hist.entry(key.clone()).or_default(), current, desired, &up, &down, now);
                    drop(hist);
                    let msg = format!("the HPA controller was able to update the target scale to {desired}");
                    conds.retain(|c| c["type"] != "AbleToScale");
                    conds.push(condition(prev, "AbleToScale", true, "SucceededRescale", &msg, &now_s));
                }
                Err(e) => {
                    let msg = format!("the HPA controller was unable to update the target scale: {}", e.message);
                    events::record(
                        &self.api,
                        &h,
                        "Warning",
                        "FailedRescale",
                        format!("New size: {desired}; reason: {why}; error: {}", e.message),
                        COMPONENT,
                    )
                    .await;
                    conds.retain(|c| c["type"] != "AbleToScale");
                    conds.push(condition(prev, "AbleToScale", false, "FailedUpdateScale", &msg, &now_s));
                }
            }
        }
        self.write_status(&h, ns, name, status, conds).await
    }

    /// Write `status` with `conds` (other conditions kept) unless nothing but times changed.
    async fn write_status(
        &self,
        h: &Value,
        ns: &str,
        name: &str,
        mut status: Value,
        conds: Vec<Value>,
    ) -> Result<Action, ApiError> {
        let mut all = h["status"]["conditions"].clone();
        if !all.is_array() {
            all = json!([]);
        }
        for c in conds {
            all = object::with_condition(&all, c);
        }
        if let Some(list) = all.as_array_mut() {
            let order = |t: &Value| {
                ["AbleToScale", "ScalingActive", "ScalingLimited"].iter().position(|x| *x == t).unwrap_or(3)
            };
            list.sort_by_key(|c| order(&c["type"]));
        }
        status["conditions"] = all;
        if status != h["status"] {
            let res = resources::of(resources::ResourceKind::HorizontalPodAutoscaler);
            let t = target(res, ns, name, Some("status"));
            // The whole status: currentMetrics is a list a merge patch replaces.
            let mut obj = h.clone();
            obj["status"] = status;
            match self.api.update(&t, obj, FieldValidation::Ignore, false).await {
                Ok(w) => self.hpas.cache.assume(w.object),
                Err(e) if e.code == 409 || e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Action::Requeue(self.cfg.sync_period))
    }
}

pub async fn start(
    api: Api,
    hpas: Arc<Informer>,
    pods: Arc<Informer>,
    services: Arc<Informer>,
    metrics: Arc<Metrics>,
    cfg: Config,
) {
    let queue = Queue::new();
    {
        let q = queue.clone();
        hpas.on_change(Arc::new(move |old, new| {
            // Status writes (this controller's own) do not change the spec: no extra sync.
            if let Some(n) = new
                && old.is_none_or(|o| {
                    o["spec"] != n["spec"] || o["metadata"]["generation"] != n["metadata"]["generation"]
                })
            {
                q.add(key_of(n));
            }
            if let (Some(o), None) = (old, new) {
                q.add(key_of(o));
            }
        }));
    }
    hpas.cache.wait_synced().await;
    pods.cache.wait_synced().await;
    services.cache.wait_synced().await;
    let c = Arc::new(Controller {
        api: api.clone(),
        hpas,
        pods,
        services,
        metrics,
        cfg,
        history: Mutex::new(HashMap::new()),
    });
    run_workers(api, "horizontal-pod-autoscaler", queue, 2, move |key| {
        let c = c.clone();
        async move { c.reconcile(key).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_targets() {
        assert_eq!(cpu_quantity(0.2104), "210m");
        assert_eq!(memory_quantity(24.0 * 1048576.0), "24Mi");
        assert_eq!(memory_quantity(1536.0), "1536");
        assert_eq!(memory_quantity(3072.0), "3Ki");
        assert_eq!(plain_quantity(1522.817), "1523");
        assert_eq!(plain_quantity(2.5), "2500m");
        assert_eq!(plain_quantity(3.0), "3");
        let r = scale_target(&json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"})).unwrap();
        assert_eq!(r.plural, "deployments");
        assert!(scale_target(&json!({"apiVersion": "v1", "kind": "Pod"})).unwrap_err().contains("no matches"));
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_it_holds() {
        let prev = json!([{"type": "ScalingActive", "status": "True", "lastTransitionTime": "t0"}]);
        assert_eq!(condition(&prev, "ScalingActive", true, "ValidMetricFound", "m", "t1")["lastTransitionTime"], "t0");
        assert_eq!(
            condition(&prev, "ScalingActive", false, "FailedGetResourceMetric", "m", "t1")["lastTransitionTime"],
            "t1"
        );
    }
}
