//! What the node knows of its containers' resource use, served as the kubelet's Summary API
//! (`GET /stats/summary` on the node endpoint; through the API server at
//! `/api/v1/nodes/{node}/proxy/stats/summary`). Each container also carries a `wasmorch`
//! section: its memory limit, host memory, throttled polls and, for HTTP containers, the
//! concurrency limit and current use (`wasmorch describe pod` shows it).

use crate::runtime::cgroup::Cgroup;
use crate::runtime::http::HttpWorkload;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerKey {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
}

struct Entry {
    cgroup: Weak<Cgroup>,
    http: Option<Weak<HttpWorkload>>,
    started: String,
    /// The CPU total at the previous sample, for a rate.
    sample: Option<(Instant, Duration)>,
    nano_cores: u64,
}

/// Containers running on this node. Entries whose container ended are dropped when read.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<Entries>,
}

/// The containers, and how many there may be before ended ones are swept out on a register
/// (twice as many as were live at the last sweep: a node starting 10 000 containers sweeps
/// about 14 times, not 10 000 times over a growing map).
#[derive(Default)]
struct Entries {
    map: HashMap<ContainerKey, Entry>,
    sweep_at: usize,
}

impl Entries {
    fn sweep(&mut self) {
        self.map.retain(|_, e| e.cgroup.strong_count() > 0);
        self.sweep_at = (self.map.len() * 2).max(64);
    }
}

/// One container's figures at one moment.
#[derive(Debug, Clone)]
pub struct ContainerStats {
    pub key: ContainerKey,
    pub started: String,
    pub cpu_total: Duration,
    pub nano_cores: u64,
    pub memory_bytes: u64,
    pub memory_limit: u64,
    pub host_bytes: u64,
    pub throttled: u64,
    pub waiting: u32,
    pub concurrency: Option<crate::runtime::admission::AdmissionStats>,
    pub oom_refused: u64,
    /// Requests an HTTP container has received since it started (cumulative).
    pub requests: Option<u64>,
    /// HTTP containers: their request latency.
    pub latency: Option<prometheus_client::metrics::histogram::Histogram>,
}

/// CPU rate between two samples, in nanocores.
pub fn rate(before: (Instant, Duration), after: (Instant, Duration)) -> u64 {
    let dt = after.0.saturating_duration_since(before.0).as_nanos();
    if dt == 0 {
        return 0;
    }
    let used = after.1.saturating_sub(before.1).as_nanos();
    (used * 1_000_000_000 / dt).min(u64::MAX as u128) as u64
}

impl Registry {
    pub fn register(&self, key: ContainerKey, http: Option<Arc<HttpWorkload>>, cgroup: Arc<Cgroup>) {
        let e = Entry {
            cgroup: Arc::downgrade(&cgroup),
            http: http.as_ref().map(Arc::downgrade),
            started: wasmorch_api::object::now_rfc3339(),
            sample: None,
            nano_cores: 0,
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Ended containers go here too, not only when someone reads the figures.
        if entries.map.len() >= entries.sweep_at {
            entries.sweep();
        }
        entries.map.insert(key, e);
    }

    /// Every live container's figures (CPU rates are taken against the previous read, at
    /// least a second before).
    pub fn snapshot(&self) -> Vec<ContainerStats> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.sweep();
        let mut out = Vec::with_capacity(entries.map.len());
        for (k, e) in entries.map.iter_mut() {
            let Some(cg) = e.cgroup.upgrade() else { continue };
            let cpu = cg.cpu.usage();
            match e.sample {
                Some(prev) if now.saturating_duration_since(prev.0) < Duration::from_secs(1) => {}
                Some(prev) => {
                    e.nano_cores = rate(prev, (now, cpu.total));
                    e.sample = Some((now, cpu.total));
                }
                None => e.sample = Some((now, cpu.total)),
            }
            let http = e.http.as_ref().and_then(Weak::upgrade);
            out.push(ContainerStats {
                key: k.clone(),
                started: e.started.clone(),
                cpu_total: cpu.total,
                nano_cores: e.nano_cores,
                memory_bytes: cg.memory.used() as u64,
                memory_limit: cg.memory.limit().min(u64::MAX as usize) as u64,
                host_bytes: cg.host_bytes() as u64,
                throttled: cpu.throttled,
                waiting: cpu.waiting,
                concurrency: http.as_ref().map(|w| w.admission.stats()),
                oom_refused: http.as_ref().map_or(0, |w| w.oom.load(std::sync::atomic::Ordering::Relaxed)),
                requests: http.as_ref().map(|w| w.served.load(std::sync::atomic::Ordering::Relaxed)),
                latency: http.as_ref().map(|w| w.latency.clone()),
            });
        }
        out.sort_by(|a, b| {
            (&a.key.namespace, &a.key.pod, &a.key.container).cmp(&(&b.key.namespace, &b.key.pod, &b.key.container))
        });
        out
    }
}

/// The kubelet Summary API document for `node` from a snapshot. Pure.
pub fn summary(node: &str, now: &str, containers: &[ContainerStats], node_cpu: Duration, node_memory: u64) -> Value {
    let mut pods: Vec<Value> = Vec::new();
    let mut index: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for c in containers {
        let k = (c.key.namespace.as_str(), c.key.pod.as_str(), c.key.uid.as_str());
        let i = *index.entry(k).or_insert_with(|| {
            pods.push(json!({
                "podRef": {"name": c.key.pod, "namespace": c.key.namespace, "uid": c.key.uid},
                "startTime": c.started,
                "containers": [],
                "cpu": {"time": now, "usageNanoCores": 0u64, "usageCoreNanoSeconds": 0u64},
                "memory": {"time": now, "workingSetBytes": 0u64, "usageBytes": 0u64},
            }));
            pods.len() - 1
        });
        let mut w = json!({
            "memoryLimitBytes": c.memory_limit,
            "hostMemoryBytes": c.host_bytes,
            "throttledPolls": c.throttled,
            "waitingInstances": c.waiting,
        });
        if let Some(a) = &c.concurrency {
            w["concurrency"] = json!(a);
            w["memoryRefusedRequests"] = json!(c.oom_refused);
        }
        if let Some(n) = c.requests {
            w["requests"] = json!(n);
        }
        let ns_total = c.cpu_total.as_nanos().min(u64::MAX as u128) as u64;
        let container = json!({
            "name": c.key.container,
            "startTime": c.started,
            "cpu": {"time": now, "usageNanoCores": c.nano_cores, "usageCoreNanoSeconds": ns_total},
            "memory": {"time": now, "workingSetBytes": c.memory_bytes, "usageBytes": c.memory_bytes},
            "wasmorch": w,
        });
        let pod = &mut pods[i];
        let add = |v: &mut Value, path: [&str; 2], n: u64| {
            let cur = v[path[0]][path[1]].as_u64().unwrap_or(0);
            v[path[0]][path[1]] = json!(cur.saturating_add(n));
        };
        add(pod, ["cpu", "usageNanoCores"], c.nano_cores);
        add(pod, ["cpu", "usageCoreNanoSeconds"], ns_total);
        add(pod, ["memory", "workingSetBytes"], c.memory_bytes);
        add(pod, ["memory", "usageBytes"], c.memory_bytes);
        if let Some(list) = pod["containers"].as_array_mut() {
            list.push(container);
        }
    }
    json!({
        "node": {
            "nodeName": node,
            "cpu": {"time": now, "usageCoreNanoSeconds": node_cpu.as_nanos().min(u64::MAX as u128) as u64},
            "memory": {"time": now, "workingSetBytes": node_memory, "usageBytes": node_memory},
        },
        "pods": pods,
    })
}

/// The node's figures as Prometheus metrics (`GET /metrics` on the node endpoint), read
/// from a snapshot at each scrape.
#[derive(Debug)]
pub struct NodeMetrics {
    pub containers: Vec<ContainerStats>,
    /// (instances started, instances alive, components compiled, loaded from the code cache).
    pub runtime: (u64, i64, u64, u64),
    /// Memory charged to the node's budget: containers' and the free slots' kept pages.
    pub memory_used: u64,
    /// Of which the pages kept resident in free instance slots (an upper bound), and what
    /// of them is resident now.
    pub warm: (u64, u64),
}

impl prometheus_client::collector::Collector for NodeMetrics {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let labels = |c: &ContainerStats| {
            [("namespace", c.key.namespace.clone()), ("pod", c.key.pod.clone()), ("container", c.key.container.clone())]
        };
        type Pick = fn(&ContainerStats) -> Option<f64>;
        let per_container: [(&str, &str, MetricType, Pick); 5] = [
            ("wasmorch_pod_cpu_seconds", "CPU time a container's instances ran", MetricType::Counter, |c| {
                Some(c.cpu_total.as_secs_f64())
            }),
            (
                "wasmorch_pod_memory_bytes",
                "Memory charged to a container (linear memories and host memory)",
                MetricType::Gauge,
                |c| Some(c.memory_bytes as f64),
            ),
            ("wasmorch_pod_requests", "Requests an HTTP container received", MetricType::Counter, |c| {
                c.requests.map(|n| n as f64)
            }),
            (
                "wasmorch_pod_requests_in_flight",
                "Requests an HTTP container is answering now",
                MetricType::Gauge,
                |c| c.concurrency.map(|a| f64::from(a.in_flight)),
            ),
            (
                "wasmorch_pod_throttled_polls",
                "Times a container was held back by its CPU limit",
                MetricType::Counter,
                |c| Some(c.throttled as f64),
            ),
        ];
        for (name, help, ty, pick) in per_container {
            let mut m = enc.encode_descriptor(name, help, None, ty)?;
            for c in &self.containers {
                let Some(v) = pick(c) else { continue };
                let l = labels(c);
                let e = m.encode_family(&l)?;
                match ty {
                    MetricType::Counter => ConstCounter::new(v).encode(e)?,
                    _ => ConstGauge::new(v).encode(e)?,
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "wasmorch_pod_request_duration_seconds",
            "Time from a request's arrival at a pod to its response head",
            None,
            MetricType::Histogram,
        )?;
        for c in &self.containers {
            if let Some(h) = &c.latency {
                let l = labels(c);
                h.encode(m.encode_family(&l)?)?;
            }
        }
        let (started, live, compiled, cached) = self.runtime;
        let node: [(&str, &str, MetricType, f64); 7] = [
            (
                "wasmorch_instances_started",
                "Wasm instances started (one per request, or per process run)",
                MetricType::Counter,
                started as f64,
            ),
            ("wasmorch_instances", "Wasm instances alive now", MetricType::Gauge, live as f64),
            (
                "wasmorch_components_compiled",
                "Components compiled to machine code",
                MetricType::Counter,
                compiled as f64,
            ),
            (
                "wasmorch_component_cache_loads",
                "Components loaded from the compiled-code cache",
                MetricType::Counter,
                cached as f64,
            ),
            (
                "wasmorch_node_pod_memory_bytes",
                "Memory charged to all containers of the node",
                MetricType::Gauge,
                self.memory_used.saturating_sub(self.warm.0) as f64,
            ),
            (
                "wasmorch_node_warm_slot_bytes",
                "Memory free instance slots may keep resident for the next instance, charged to the node",
                MetricType::Gauge,
                self.warm.0 as f64,
            ),
            (
                "wasmorch_node_warm_slot_resident_bytes",
                "Memory free instance slots keep resident now",
                MetricType::Gauge,
                self.warm.1 as f64,
            ),
        ];
        for (name, help, ty, v) in node {
            let m = enc.encode_descriptor(name, help, None, ty)?;
            match ty {
                MetricType::Counter => ConstCounter::new(v).encode(m)?,
                _ => ConstGauge::new(v).encode(m)?,
            }
        }
        Ok(())
    }
}

impl NodeMetrics {
    /// The Prometheus text exposition.
    pub fn render(self) -> String {
        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(self));
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &r).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let t = Instant::now();
        assert_eq!(rate((t, Duration::ZERO), (t + Duration::from_secs(2), Duration::from_secs(1))), 500_000_000);
        assert_eq!(rate((t, Duration::ZERO), (t, Duration::from_secs(1))), 0);
    }

    #[test]
    fn ended_containers_are_swept_as_others_register() {
        use crate::runtime::{cgroup::Cgroup, cpu, memory::MemoryBudget};
        let node_cpu = cpu::NodeCpu::new(2, 2000);
        let node_mem = MemoryBudget::root(1 << 30);
        let group = || Cgroup::new(node_cpu.group(cpu::CpuSpec::default()), MemoryBudget::child(&node_mem, None));
        let key = |i: usize| ContainerKey {
            namespace: "d".into(),
            pod: format!("p{i}"),
            uid: format!("u{i}"),
            container: "c".into(),
        };
        let r = Registry::default();
        let live: Vec<_> = (0..10).map(|_| group()).collect();
        for (i, g) in live.iter().enumerate() {
            r.register(key(i), None, g.clone());
        }
        // 1 000 containers that start and end: the map never holds many more than the live ones.
        for i in 10..1010 {
            let g = group();
            r.register(key(i), None, g.clone());
            drop(g);
            let held = r.entries.lock().unwrap().map.len();
            assert!(held <= 64.max(2 * live.len()) + 1, "{held} entries for {} live containers", live.len());
        }
        assert_eq!(r.snapshot().len(), live.len());
    }

    #[test]
    fn summary_groups_containers_by_pod() {
        let c = |pod: &str, name: &str, ns_cpu: u64| ContainerStats {
            key: ContainerKey {
                namespace: "default".into(),
                pod: pod.into(),
                uid: format!("u-{pod}"),
                container: name.into(),
            },
            started: "2026-01-01T00:00:00Z".into(),
            cpu_total: Duration::from_nanos(ns_cpu),
            nano_cores: ns_cpu,
            memory_bytes: 10,
            memory_limit: 100,
            host_bytes: 1,
            throttled: 0,
            waiting: 0,
            concurrency: None,
            oom_refused: 0,
            requests: Some(3),
            latency: None,
        };
        let s = summary("n1", "now", &[c("a", "x", 5), c("a", "y", 7), c("b", "x", 1)], Duration::ZERO, 0);
        let pods = s["pods"].as_array().unwrap();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0]["podRef"]["name"], "a");
        assert_eq!(pods[0]["cpu"]["usageNanoCores"], 12);
        assert_eq!(pods[0]["memory"]["workingSetBytes"], 20);
        assert_eq!(pods[0]["containers"].as_array().unwrap().len(), 2);
        assert_eq!(pods[1]["containers"][0]["wasmorch"]["memoryLimitBytes"], 100);
        assert_eq!(pods[1]["containers"][0]["wasmorch"]["requests"], 3);
    }
}
