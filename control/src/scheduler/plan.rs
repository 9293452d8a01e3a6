//! Scheduling as pure functions over a snapshot: filter the nodes a pod may run on, score the
//! rest, pick the best. No I/O here; `super::run` feeds snapshots and binds.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use wasmorch_api::object;
use wasmorch_api::quantity;
use wasmorch_api::selector::LabelSelector;

/// How to score fitting nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Least allocated first: spread load (Kubernetes' default).
    #[default]
    Spread,
    /// Most allocated first: pack nodes, keep others empty.
    BinPack,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spread" | "LeastAllocated" => Ok(Strategy::Spread),
            "binpack" | "MostAllocated" => Ok(Strategy::BinPack),
            _ => Err(format!("unknown scheduling strategy {s:?} (spread or binpack)")),
        }
    }
}

/// cpu in millicores, memory in bytes, and a pod count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    fn add(&mut self, o: &Resources) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.pods += o.pods;
    }
}

fn cpu_milli(v: &Value) -> i64 {
    v.as_str().and_then(quantity::parse).map_or(0, |c| (c * 1000.0).ceil() as i64)
}

fn bytes(v: &Value) -> i64 {
    v.as_str().and_then(quantity::parse).map_or(0, |b| b.ceil() as i64)
}

/// What a pod asks for: the sum of its containers' requests (a limit without a request
/// counts as the request, as Kubernetes defaults it), and one pod slot.
pub fn pod_requests(pod: &Value) -> Resources {
    let mut r = Resources { pods: 1, ..Default::default() };
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let res = &c["resources"];
        let pick = |k: &str| if res["requests"][k].is_null() { &res["limits"][k] } else { &res["requests"][k] };
        r.cpu += cpu_milli(pick("cpu"));
        r.memory += bytes(pick("memory"));
    }
    r
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// A node as the scheduler sees it, with what is already placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub ready: bool,
    pub allocatable: Resources,
    pub requested: Resources,
    /// Labels (with namespace) of the pods bound here, for topology spreading.
    pub pods: Vec<(String, BTreeMap<String, String>)>,
}

impl NodeInfo {
    pub fn from_node(node: &Value) -> NodeInfo {
        let st = &node["status"];
        let alloc = if st["allocatable"].is_object() { &st["allocatable"] } else { &st["capacity"] };
        NodeInfo {
            name: object::name(node).to_string(),
            labels: object::labels(node),
            taints: node["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| Taint {
                    key: t["key"].as_str().unwrap_or("").into(),
                    value: t["value"].as_str().unwrap_or("").into(),
                    effect: t["effect"].as_str().unwrap_or("").into(),
                })
                .collect(),
            unschedulable: node["spec"]["unschedulable"] == true,
            ready: st["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")),
            allocatable: Resources {
                cpu: cpu_milli(&alloc["cpu"]),
                memory: bytes(&alloc["memory"]),
                pods: alloc["pods"].as_str().and_then(|p| p.parse().ok()).unwrap_or(110),
            },
            requested: Resources::default(),
            pods: Vec::new(),
        }
    }

    /// Account a pod placed on this node.
    pub fn add_pod(&mut self, pod: &Value) {
        self.requested.add(&pod_requests(pod));
        self.pods.push((object::namespace(pod).to_string(), object::labels(pod)));
    }
}

/// Why a node does not fit, in Kubernetes' words (they are counted and sorted in the event).
fn tolerates(tolerations: &[Value], t: &Taint) -> bool {
    tolerations.iter().any(|tol| {
        let key = tol["key"].as_str().unwrap_or("");
        let op = tol["operator"].as_str().unwrap_or("Equal");
        let effect = tol["effect"].as_str().unwrap_or("");
        (key.is_empty() && op == "Exists" || key == t.key)
            && (op == "Exists" || tol["value"].as_str().unwrap_or("") == t.value)
            && (effect.is_empty() || effect == t.effect)
    })
}

fn expr_matches(e: &Value, labels: &BTreeMap<String, String>, name: &str, field: bool) -> bool {
    let key = e["key"].as_str().unwrap_or("");
    let val = if field { (key == "metadata.name").then_some(name) } else { labels.get(key).map(String::as_str) };
    let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let num = |s: &str| s.parse::<i64>().ok();
    match e["operator"].as_str().unwrap_or("") {
        "In" => val.is_some_and(|v| values.contains(&v)),
        "NotIn" => val.is_none_or(|v| !values.contains(&v)),
        "Exists" => val.is_some(),
        "DoesNotExist" => val.is_none(),
        "Gt" => matches!((val.and_then(num), values.first().and_then(|v| num(v))), (Some(a), Some(b)) if a > b),
        "Lt" => matches!((val.and_then(num), values.first().and_then(|v| num(v))), (Some(a), Some(b)) if a < b),
        _ => false,
    }
}

/// A node selector term: all its expressions and fields hold.
fn term_matches(term: &Value, n: &NodeInfo) -> bool {
    let exprs = term["matchExpressions"].as_array().into_iter().flatten();
    let fields = term["matchFields"].as_array().into_iter().flatten();
    let mut any = false;
    for e in exprs {
        any = true;
        if !expr_matches(e, &n.labels, &n.name, false) {
            return false;
        }
    }
    for e in fields {
        any = true;
        if !expr_matches(e, &n.labels, &n.name, true) {
            return false;
        }
    }
    any
}

/// What placement reads from a pod's spec, read once per pod instead of once per node (a
/// pod is weighed against hundreds of nodes).
struct Terms<'a> {
    tolerations: &'a [Value],
    node_selector: Option<&'a serde_json::Map<String, Value>>,
    /// The required node affinity's terms (any one must match), if it has them.
    required: Option<&'a [Value]>,
    preferred: &'a [Value],
}

impl<'a> Terms<'a> {
    fn of(pod: &'a Value) -> Terms<'a> {
        let spec = &pod["spec"];
        let affinity = &spec["affinity"]["nodeAffinity"];
        Terms {
            tolerations: spec["tolerations"].as_array().map(Vec::as_slice).unwrap_or(&[]),
            node_selector: spec["nodeSelector"].as_object(),
            required: affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                .as_array()
                .map(Vec::as_slice),
            preferred: affinity["preferredDuringSchedulingIgnoredDuringExecution"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        }
    }

    /// The node's first NoSchedule/NoExecute taint the pod does not tolerate.
    fn untolerated<'n>(&self, n: &'n NodeInfo) -> Option<&'n Taint> {
        n.taints
            .iter()
            .find(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerates(self.tolerations, t))
    }

    /// The node matches the nodeSelector and the required node affinity.
    fn select(&self, n: &NodeInfo) -> bool {
        self.node_selector.is_none_or(|m| m.iter().all(|(k, v)| n.labels.get(k).map(String::as_str) == v.as_str()))
            && self.required.is_none_or(|terms| terms.iter().any(|t| term_matches(t, n)))
    }

    /// The preferred node affinity's share of weight the node matches, in 0..=100.
    fn preference(&self, n: &NodeInfo) -> f64 {
        let (mut got, mut total) = (0.0, 0.0);
        for p in self.preferred {
            let w = p["weight"].as_f64().unwrap_or(1.0);
            total += w;
            if term_matches(&p["preference"], n) {
                got += w;
            }
        }
        if total > 0.0 { got / total * 100.0 } else { 0.0 }
    }
}

/// Whether every NoSchedule/NoExecute taint of the node is tolerated by the pod.
pub fn taints_tolerated(pod: &Value, n: &NodeInfo) -> bool {
    Terms::of(pod).untolerated(n).is_none()
}

/// Whether the node matches the pod's nodeSelector and required node affinity.
pub fn selector_and_affinity(pod: &Value, n: &NodeInfo) -> bool {
    Terms::of(pod).select(n)
}

/// Topology spread constraints of a pod, with the domain counts they need.
struct Spread<'a> {
    key: &'a str,
    max_skew: i64,
    hard: bool,
    counts: HashMap<String, i64>,
}

fn spreads<'a>(pod: &'a Value, eligible: &[&NodeInfo]) -> Vec<Spread<'a>> {
    let ns = object::namespace(pod);
    pod["spec"]["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let key = c["topologyKey"].as_str()?;
            let sel = LabelSelector::from_object(&c["labelSelector"]).ok()?;
            let mut counts: HashMap<String, i64> = HashMap::new();
            for n in eligible {
                let Some(domain) = n.labels.get(key) else { continue };
                let here = n.pods.iter().filter(|(pns, l)| pns == ns && sel.matches(l)).count() as i64;
                *counts.entry(domain.clone()).or_insert(0) += here;
            }
            Some(Spread {
                key,
                max_skew: c["maxSkew"].as_i64().unwrap_or(1).max(1),
                hard: c["whenUnsatisfiable"].as_str().unwrap_or("DoNotSchedule") == "DoNotSchedule",
                counts,
            })
        })
        .collect()
}

/// Whether a node passes every filter, or the reason it does not.
pub fn filter(pod: &Value, n: &NodeInfo) -> Result<(), String> {
    filter_with(&Terms::of(pod), &pod_requests(pod), n)
}

fn filter_with(terms: &Terms, want: &Resources, n: &NodeInfo) -> Result<(), String> {
    if !n.ready {
        return Err("node(s) were not ready".into());
    }
    if n.unschedulable
        && !tolerates(
            terms.tolerations,
            &Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                value: String::new(),
                effect: "NoSchedule".into(),
            },
        )
    {
        return Err("node(s) were unschedulable".into());
    }
    if let Some(t) = terms.untolerated(n) {
        return Err(format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value));
    }
    if !terms.select(n) {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    let free = |a: i64, r: i64| a - r;
    if want.pods + n.requested.pods > n.allocatable.pods {
        return Err("Too many pods".into());
    }
    if want.cpu > 0 && want.cpu > free(n.allocatable.cpu, n.requested.cpu) {
        return Err("Insufficient cpu".into());
    }
    if want.memory > 0 && want.memory > free(n.allocatable.memory, n.requested.memory) {
        return Err("Insufficient memory".into());
    }
    Ok(())
}

fn ratio(used: i64, total: i64) -> f64 {
    if total <= 0 { 1.0 } else { (used as f64 / total as f64).clamp(0.0, 1.0) }
}

/// Score in 0..=100 per part; higher is better.
pub fn score(pod: &Value, n: &NodeInfo, strategy: Strategy) -> f64 {
    score_with(&Terms::of(pod), &pod_requests(pod), n, strategy)
}

fn score_with(terms: &Terms, want: &Resources, n: &NodeInfo, strategy: Strategy) -> f64 {
    let cpu = ratio(n.requested.cpu + want.cpu, n.allocatable.cpu);
    let mem = ratio(n.requested.memory + want.memory, n.allocatable.memory);
    let pods = ratio(n.requested.pods + 1, n.allocatable.pods);
    // Wasm pods often request nothing; the pod count keeps spreading meaningful then.
    let used = (cpu + mem + pods) / 3.0;
    let resource = match strategy {
        Strategy::Spread => (1.0 - used) * 100.0,
        Strategy::BinPack => used * 100.0,
    };
    resource + terms.preference(n)
}

/// The node a pod should go to, or Kubernetes' "0/N nodes are available: …" message.
pub fn schedule(pod: &Value, nodes: &[NodeInfo], strategy: Strategy) -> Result<String, String> {
    schedule_from(pod, nodes, strategy, 0, nodes.len()).0
}

/// How many feasible nodes to find before scoring, as Kubernetes' adaptive
/// `percentageOfNodesToScore`: all of a small cluster, then a shrinking share (50% minus one
/// point per 125 nodes, at least 5%), never fewer than 100.
pub fn nodes_to_find(total: usize) -> usize {
    if total <= 100 {
        return total;
    }
    let pct = (50 - (total / 125) as i64).max(5) as usize;
    (total * pct / 100).max(100)
}

/// [`schedule`] over at most `limit` feasible nodes, starting the search at `start` (callers
/// rotate it so every node gets its turn). Returns where the next search should start.
pub fn schedule_from(
    pod: &Value,
    nodes: &[NodeInfo],
    strategy: Strategy,
    start: usize,
    limit: usize,
) -> (Result<String, String>, usize) {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut fit: Vec<&NodeInfo> = Vec::new();
    let want = pod_requests(pod);
    let terms = Terms::of(pod);
    let len = nodes.len();
    let mut next = start;
    for i in 0..len {
        let n = &nodes[(start + i) % len];
        next = (start + i + 1) % len.max(1);
        match filter_with(&terms, &want, n) {
            Ok(()) => fit.push(n),
            Err(r) => *reasons.entry(r).or_insert(0) += 1,
        }
        if fit.len() >= limit.max(1) {
            break;
        }
    }
    (schedule_among(pod, (&terms, &want), nodes, strategy, fit, reasons), next)
}

/// The choice among the feasible nodes `fit`; `(terms, want)` are the pod's, as
/// [`schedule_from`] read them.
fn schedule_among(
    pod: &Value,
    (terms, want): (&Terms, &Resources),
    nodes: &[NodeInfo],
    strategy: Strategy,
    mut fit: Vec<&NodeInfo>,
    mut reasons: BTreeMap<String, usize>,
) -> Result<String, String> {
    // Topology spread: domains are those of nodes matching the pod's node selector and
    // affinity (as Kubernetes' default policy: cordons and taints do not remove a domain).
    let has_spread = pod["spec"]["topologySpreadConstraints"].as_array().is_some_and(|a| !a.is_empty());
    let constraints = if has_spread {
        let domain_nodes: Vec<&NodeInfo> = nodes.iter().filter(|n| terms.select(n)).collect();
        spreads(pod, &domain_nodes)
    } else {
        Vec::new()
    };
    let mut soft_penalty: HashMap<&str, f64> = HashMap::new();
    if !constraints.is_empty() {
        let mut kept = Vec::new();
        for n in fit {
            let mut ok = true;
            for s in &constraints {
                let Some(domain) = n.labels.get(s.key) else {
                    if s.hard {
                        ok = false;
                        *reasons
                            .entry(
                                "node(s) didn't match pod topology spread constraints (missing required label)".into(),
                            )
                            .or_insert(0) += 1;
                    }
                    continue;
                };
                let min = s.counts.values().copied().min().unwrap_or(0);
                let skew = s.counts.get(domain).copied().unwrap_or(0) + 1 - min;
                if skew > s.max_skew {
                    if s.hard {
                        ok = false;
                        *reasons.entry("node(s) didn't match pod topology spread constraints".into()).or_insert(0) += 1;
                    } else {
                        *soft_penalty.entry(&n.name).or_insert(0.0) += 50.0;
                    }
                }
            }
            if ok {
                kept.push(n);
            }
        }
        fit = kept;
    }
    let best = fit
        .iter()
        .map(|n| {
            // Spreading within the allowed skew: fewer matching pods in the domain is better.
            let spread_bonus: f64 = constraints
                .iter()
                .filter_map(|s| n.labels.get(s.key).map(|d| s.counts.get(d).copied().unwrap_or(0)))
                .map(|c| -(c as f64))
                .sum();
            let s = score_with(terms, want, n, strategy) + spread_bonus
                - soft_penalty.get(n.name.as_str()).copied().unwrap_or(0.0);
            (s, n)
        })
        // Ties go to the name first in order, so plans are deterministic.
        .max_by(|(a, na), (b, nb)| {
            a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal).then_with(|| nb.name.cmp(&na.name))
        });
    match best {
        Some((_, n)) => Ok(n.name.clone()),
        None => {
            let mut parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
            parts.sort();
            let mut msg = format!("0/{} nodes are available", nodes.len());
            if !parts.is_empty() {
                msg.push_str(": ");
                msg.push_str(&parts.join(", "));
            }
            msg.push('.');
            Err(msg)
        }
    }
}
