//! The resource metrics API (`metrics.k8s.io/v1beta1`), what metrics-server serves: the API
//! server scrapes every node's Summary API (`/stats/summary` on the node endpoint) every
//! `--metric-resolution` (15 s by default) and keeps the latest usage in memory, nothing in
//! the store. CPU is a rate: the difference of each container's cumulative CPU time
//! (`usageCoreNanoSeconds`, time its instances actually ran) between two scrapes, over the
//! time between them (the `window`); a container seen for the first time is measured from its
//! start. Memory is the container's working set: its instances' linear memories plus the host
//! memory charged to it. A node's usage is the sum of its pods' (wasmorch's own overhead is
//! not counted, as the kubelet's node figure would count it).
//!
//! `kubectl top nodes|pods` and `wasmorch top` read it; the HorizontalPodAutoscaler will.

use super::ServerState;
use super::api::ListOptions;
use crate::pki::Identity;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::selector::{FieldSelector, LabelSelector};
use wasmorch_api::{ApiError, object};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// How long one node's scrape may take (metrics-server: 10 s).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// metrics-server's default `--metric-resolution`.
pub const DEFAULT_RESOLUTION: Duration = Duration::from_secs(15);

/// One container's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    pub nano_cores: u64,
    pub memory: u64,
    /// HTTP containers: requests per second over the window, and requests in flight now.
    pub requests_per_second: Option<f64>,
    pub in_flight: Option<u64>,
}

/// A pod's usage as of one scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    pub node: String,
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
    pub containers: Vec<ContainerUsage>,
    /// When an HTTP container of the pod last received a request (or started, if none has);
    /// `None` for pods without HTTP containers.
    pub last_request: Option<DateTime<Utc>>,
}

/// A node's usage: the sum of its pods'.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUsage {
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
    pub nano_cores: u64,
    pub memory: u64,
}

/// A container's cumulative counters at one scrape, by (pod uid, container).
type Cumulative = HashMap<(String, String), Counters>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counters {
    /// CPU time (ns) and requests received, since the container started.
    cpu: u64,
    requests: Option<u64>,
    at: DateTime<Utc>,
    /// When the request count last went up.
    last_request: Option<DateTime<Utc>>,
}

/// What one scrape of a node gives, with the cumulative counters for the next one.
#[derive(Debug, Default)]
pub struct Scrape {
    pub node: Option<NodeUsage>,
    pub pods: Vec<((String, String), PodUsage)>,
    pub cumulative: Cumulative,
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The usage in a node's Summary document scraped at `now`, against the counters of the
/// previous scrape. Pure.
pub fn usage_of(node: &str, doc: &Value, prev: &Cumulative, now: DateTime<Utc>) -> Scrape {
    let mut out = Scrape::default();
    let (mut node_cpu, mut node_mem, mut window) = (0u64, 0u64, Duration::ZERO);
    for p in doc.get("pods").and_then(Value::as_array).into_iter().flatten() {
        let Some(r) = p.get("podRef") else { continue };
        let field = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (ns, name, uid) = (field("namespace"), field("name"), field("uid"));
        if ns.is_empty() || name.is_empty() {
            continue;
        }
        let mut containers = Vec::new();
        let mut pod_window = Duration::ZERO;
        let mut last_request: Option<DateTime<Utc>> = None;
        for c in p.get("containers").and_then(Value::as_array).into_iter().flatten() {
            let Some(cname) = c.get("name").and_then(Value::as_str) else { continue };
            let total = c.pointer("/cpu/usageCoreNanoSeconds").and_then(Value::as_u64).unwrap_or(0);
            let memory = c.pointer("/memory/workingSetBytes").and_then(Value::as_u64).unwrap_or(0);
            let requests = c.pointer("/wasmorch/requests").and_then(Value::as_u64);
            let in_flight = c.pointer("/wasmorch/concurrency/inFlight").and_then(Value::as_u64);
            let started = c
                .get("startTime")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc));
            let key = (uid.clone(), cname.to_string());
            let before = prev.get(&key).filter(|b| b.cpu <= total && b.requests <= requests).copied();
            // Since the previous scrape; else since the container started.
            let since = before.map(|b| (b.cpu, b.requests.unwrap_or(0), b.at)).or_else(|| started.map(|t| (0, 0, t)));
            let last = match (before, requests) {
                (_, None) => None,
                (Some(b), Some(n)) if b.requests == Some(n) => b.last_request,
                (Some(_), Some(_)) => Some(now),
                // First seen: idle since its start if it has had no request yet.
                (None, Some(0)) => started.or(Some(now)),
                (None, Some(_)) => Some(now),
            };
            out.cumulative.insert(key, Counters { cpu: total, requests, at: now, last_request: last });
            last_request = last_request.max(last);
            let Some((cpu_before, requests_before, at)) = since else { continue };
            let Ok(dt) = (now - at).to_std() else { continue };
            if dt.is_zero() {
                continue;
            }
            let nano_cores = ((total - cpu_before) as f64 / seconds(dt)).round() as u64;
            let requests_per_second = requests.map(|n| n.saturating_sub(requests_before) as f64 / seconds(dt));
            pod_window = pod_window.max(dt);
            containers.push(ContainerUsage {
                name: cname.to_string(),
                nano_cores,
                memory,
                requests_per_second,
                in_flight,
            });
        }
        if containers.is_empty() {
            continue;
        }
        node_cpu += containers.iter().map(|c| c.nano_cores).sum::<u64>();
        node_mem += containers.iter().map(|c| c.memory).sum::<u64>();
        window = window.max(pod_window);
        out.pods.push((
            (ns, name),
            PodUsage { node: node.to_string(), timestamp: now, window: pod_window, containers, last_request },
        ));
    }
    out.node = Some(NodeUsage { timestamp: now, window, nano_cores: node_cpu, memory: node_mem });
    out
}

/// The latest usage of every node and pod.
#[derive(Default)]
pub struct Metrics {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, NodeUsage>,
    pods: BTreeMap<(String, String), PodUsage>,
    cumulative: HashMap<String, Cumulative>,
}

impl Metrics {
    /// Take one node's scrape (`None`: the node could not be scraped; its figures go).
    pub fn record(&self, node: &str, doc: Option<&Value>, now: DateTime<Utc>) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.pods.retain(|_, p| p.node != node);
        let Some(doc) = doc else {
            s.nodes.remove(node);
            s.cumulative.remove(node);
            return;
        };
        let empty = Cumulative::new();
        let scrape = usage_of(node, doc, s.cumulative.get(node).unwrap_or(&empty), now);
        s.cumulative.insert(node.to_string(), scrape.cumulative);
        if let Some(n) = scrape.node {
            s.nodes.insert(node.to_string(), n);
        }
        s.pods.extend(scrape.pods);
    }

    /// Nodes that are gone take their figures with them.
    pub fn retain_nodes(&self, live: &[String]) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.nodes.retain(|n, _| live.contains(n));
        s.pods.retain(|_, p| live.contains(&p.node));
        s.cumulative.retain(|n, _| live.contains(n));
    }

    pub fn node(&self, name: &str) -> Option<NodeUsage> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).nodes.get(name).cloned()
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<PodUsage> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).pods.get(&(ns.to_string(), name.to_string())).cloned()
    }
}

/// Scrape every node with an endpoint every `resolution`, until `stop`.
pub async fn scrape_loop(state: Arc<ServerState>, resolution: Duration, stop: CancellationToken) {
    let nodes = resources::of(ResourceKind::Node);
    loop {
        let list = state.api.list(nodes, None, &ListOptions::default()).await;
        let names: Vec<String> = list
            .ok()
            .and_then(|l| l.get("items").and_then(Value::as_array).cloned())
            .into_iter()
            .flatten()
            .map(|n| object::name(&n).to_string())
            .collect();
        state.metrics.retain_nodes(&names);
        let scrapes = names.iter().map(|n| {
            let state = state.clone();
            async move {
                let doc =
                    match tokio::time::timeout(SCRAPE_TIMEOUT, super::logs::node_json(&state, n, "/stats/summary"))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(format!("no answer within {SCRAPE_TIMEOUT:?}")),
                    };
                if let Err(e) = &doc {
                    tracing::debug!("metrics: node {n}: {e}");
                }
                state.metrics.record(n, doc.ok().as_ref(), Utc::now());
            }
        });
        futures::future::join_all(scrapes).await;
        tokio::select! {
            _ = tokio::time::sleep(resolution) => {}
            _ = stop.cancelled() => return,
        }
    }
}

fn quantity_cpu(n: u64) -> String {
    format!("{n}n")
}

fn quantity_memory(b: u64) -> String {
    format!("{}Ki", b / 1024)
}

fn window(d: Duration) -> String {
    format!("{:.3}s", seconds(d))
}

fn meta(obj: &Value) -> Value {
    let mut m = json!({
        "name": object::name(obj),
        "creationTimestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let Some(ns) = obj.pointer("/metadata/namespace") {
        m["namespace"] = ns.clone();
    }
    if let Some(l) = obj.pointer("/metadata/labels") {
        m["labels"] = l.clone();
    }
    m
}

/// A NodeMetrics object for `node` (the Node object) with its usage. Pure.
pub fn node_metrics(node: &Value, u: &NodeUsage) -> Value {
    json!({
        "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": meta(node),
        "timestamp": u.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "window": window(u.window),
        "usage": {"cpu": quantity_cpu(u.nano_cores), "memory": quantity_memory(u.memory)},
    })
}

/// A PodMetrics object for `pod` (the Pod object) with its usage. Pure.
pub fn pod_metrics(pod: &Value, u: &PodUsage) -> Value {
    let containers: Vec<Value> = u
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "usage": {"cpu": quantity_cpu(c.nano_cores), "memory": quantity_memory(c.memory)}}))
        .collect();
    json!({
        "kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": meta(pod),
        "timestamp": u.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "window": window(u.window),
        "containers": containers,
    })
}

/// `GET /apis/metrics.k8s.io/v1beta1/…`: `nodes[/NAME]`, `pods`,
/// `namespaces/NS/pods[/NAME]`, with `labelSelector` and `fieldSelector` on lists.
pub async fn serve(state: &ServerState, id: &Identity, rest: &[&str], query: Option<&str>) -> Result<Value, ApiError> {
    let p = super::request::Params::parse(query);
    let (kind, ns, name) = match rest {
        ["nodes"] => (ResourceKind::Node, None, None),
        ["nodes", n] => (ResourceKind::Node, None, Some(*n)),
        ["pods"] => (ResourceKind::Pod, None, None),
        ["namespaces", ns, "pods"] => (ResourceKind::Pod, Some(*ns), None),
        ["namespaces", ns, "pods", n] => (ResourceKind::Pod, Some(*ns), Some(*n)),
        _ => return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource")),
    };
    // Under RBAC like any resource (the `view` role reads it).
    let a = wasmorch_api::rbac::Attributes {
        verb: if name.is_some() { "get" } else { "list" }.into(),
        group: GROUP.into(),
        resource: if kind == ResourceKind::Node { "nodes" } else { "pods" }.into(),
        name: name.unwrap_or("").into(),
        namespace: ns.unwrap_or("").into(),
        ..Default::default()
    };
    super::authz::require(&state.api, id, &a)?;
    let res = resources::of(kind);
    let of = |obj: &Value| -> Option<Value> {
        match kind {
            ResourceKind::Node => state.metrics.node(object::name(obj)).map(|u| node_metrics(obj, &u)),
            _ => state.metrics.pod(object::namespace(obj), object::name(obj)).map(|u| pod_metrics(obj, &u)),
        }
    };
    let what = if kind == ResourceKind::Node { "nodemetrics" } else { "podmetrics" };
    if let Some(name) = name {
        let t = super::request::Target {
            res,
            namespace: ns.map(String::from),
            name: Some(name.to_string()),
            subresource: None,
            watch_path: false,
        };
        let obj = state.api.get(&t).await?;
        return of(&obj).ok_or_else(|| ApiError::new(404, "NotFound", format!("{what}.{GROUP} \"{name}\" not found")));
    }
    let labels = LabelSelector::parse(p.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("labelSelector: {e}")))?;
    let fields = FieldSelector::parse(p.get("fieldSelector").unwrap_or(""), res)
        .map_err(|e| ApiError::bad_request(format!("fieldSelector: {e}")))?;
    let opts = ListOptions { labels, fields, limit: 0, continue_token: None };
    let list = state.api.list(res, ns, &opts).await?;
    let items: Vec<Value> = list.get("items").and_then(Value::as_array).into_iter().flatten().filter_map(of).collect();
    let kind = if kind == ResourceKind::Node { "NodeMetricsList" } else { "PodMetricsList" };
    Ok(json!({"kind": kind, "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(cpu_ns: u64, mem: u64, start: &str) -> Value {
        json!({"node": {"nodeName": "n1"}, "pods": [{
            "podRef": {"name": "spin", "namespace": "default", "uid": "u1"},
            "containers": [{"name": "main", "startTime": start,
                "cpu": {"usageCoreNanoSeconds": cpu_ns}, "memory": {"workingSetBytes": mem}}],
        }]})
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cpu_is_a_rate_between_scrapes_and_first_from_the_start() {
        // First seen: 2 s of CPU over the 10 s since it started = 200m.
        let first = usage_of(
            "n1",
            &doc(2_000_000_000, 4 << 20, "2026-01-01T00:00:00Z"),
            &HashMap::new(),
            t("2026-01-01T00:00:10Z"),
        );
        let (key, pod) = &first.pods[0];
        assert_eq!(key, &("default".to_string(), "spin".to_string()));
        assert_eq!(
            pod.containers[0],
            ContainerUsage {
                name: "main".into(),
                nano_cores: 200_000_000,
                memory: 4 << 20,
                requests_per_second: None,
                in_flight: None
            }
        );
        assert_eq!(pod.window, Duration::from_secs(10));
        // Then: 7.5 s more over 15 s = 500m; the node sums its pods.
        let next = usage_of(
            "n1",
            &doc(9_500_000_000, 8 << 20, "2026-01-01T00:00:00Z"),
            &first.cumulative,
            t("2026-01-01T00:00:25Z"),
        );
        assert_eq!(next.pods[0].1.containers[0].nano_cores, 500_000_000);
        assert_eq!(next.pods[0].1.window, Duration::from_secs(15));
        let node = next.node.unwrap();
        assert_eq!((node.nano_cores, node.memory, node.window), (500_000_000, 8 << 20, Duration::from_secs(15)));
        // A restarted container (its counter went back) is measured from its new start.
        let again =
            usage_of("n1", &doc(1_000_000_000, 1, "2026-01-01T00:00:20Z"), &next.cumulative, t("2026-01-01T00:00:30Z"));
        assert_eq!(again.pods[0].1.containers[0].nano_cores, 100_000_000);
    }

    #[test]
    fn requests_give_a_rate_and_the_time_of_the_last_one() {
        let doc = |n: u64| {
            json!({"pods": [{"podRef": {"name": "web", "namespace": "default", "uid": "u1"},
                "containers": [{"name": "main", "startTime": "2026-01-01T00:00:00Z",
                    "cpu": {"usageCoreNanoSeconds": 0}, "memory": {"workingSetBytes": 0},
                    "wasmorch": {"requests": n, "concurrency": {"inFlight": 2}}}]}]})
        };
        // Never asked: idle since it started.
        let a = usage_of("n1", &doc(0), &HashMap::new(), t("2026-01-01T00:00:10Z"));
        assert_eq!(a.pods[0].1.last_request, Some(t("2026-01-01T00:00:00Z")));
        // 30 requests in 15 s: 2/s, the last one seen at this scrape.
        let b = usage_of("n1", &doc(30), &a.cumulative, t("2026-01-01T00:00:25Z"));
        let c = &b.pods[0].1.containers[0];
        assert_eq!((c.requests_per_second, c.in_flight), (Some(2.0), Some(2)));
        assert_eq!(b.pods[0].1.last_request, Some(t("2026-01-01T00:00:25Z")));
        // None since: the time stays.
        let d = usage_of("n1", &doc(30), &b.cumulative, t("2026-01-01T00:01:25Z"));
        assert_eq!(d.pods[0].1.last_request, Some(t("2026-01-01T00:00:25Z")));
        assert_eq!(d.pods[0].1.containers[0].requests_per_second, Some(0.0));
    }

    #[test]
    fn bad_documents_give_nothing_rather_than_fail() {
        let now = t("2026-01-01T00:00:10Z");
        for d in [json!(null), json!({"pods": "x"}), json!({"pods": [{"podRef": 3}, {"containers": []}]})] {
            let s = usage_of("n1", &d, &HashMap::new(), now);
            assert!(s.pods.is_empty(), "{d}");
        }
        // No start time and no previous scrape: no rate yet, but the counter is kept.
        let d = json!({"pods": [{"podRef": {"name": "a", "namespace": "d", "uid": "u"},
            "containers": [{"name": "c", "cpu": {"usageCoreNanoSeconds": 5}}]}]});
        let s = usage_of("n1", &d, &HashMap::new(), now);
        assert!(s.pods.is_empty());
        assert_eq!(s.cumulative.len(), 1);
    }

    #[test]
    fn objects_have_the_metrics_server_shape() {
        let u = PodUsage {
            node: "n1".into(),
            timestamp: t("2026-01-01T00:00:10Z"),
            window: Duration::from_millis(15_012),
            containers: vec![ContainerUsage {
                name: "main".into(),
                nano_cores: 195_000_000,
                memory: 3 << 20,
                requests_per_second: None,
                in_flight: None,
            }],
            last_request: None,
        };
        let pod = json!({"metadata": {"name": "spin", "namespace": "default", "labels": {"app": "spin"}}});
        let m = pod_metrics(&pod, &u);
        assert_eq!(m["kind"], "PodMetrics");
        assert_eq!(m["metadata"]["labels"]["app"], "spin");
        assert_eq!(m["window"], "15.012s");
        assert_eq!(m["timestamp"], "2026-01-01T00:00:10Z");
        assert_eq!(m["containers"][0]["usage"], json!({"cpu": "195000000n", "memory": "3072Ki"}));
        let n = node_metrics(
            &json!({"metadata": {"name": "n1"}}),
            &NodeUsage { timestamp: u.timestamp, window: u.window, nano_cores: 1, memory: 2048 },
        );
        assert_eq!(n["usage"], json!({"cpu": "1n", "memory": "2Ki"}));
    }
}
