use super::plan::*;
use serde_json::{Value, json};

fn node(name: &str, cpu: &str, mem: &str, pods: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": pods},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn pod(cpu: &str, mem: &str) -> Value {
    json!({"metadata": {"name": "p", "namespace": "default", "labels": {"app": "a"}}, "spec": {"containers": [
        {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
}

fn info(v: &Value) -> NodeInfo {
    NodeInfo::from_node(v)
}

#[test]
fn messages_count_reasons_like_kubernetes() {
    let mut cordoned = info(&node("a", "2", "1Gi", "110"));
    cordoned.unschedulable = true;
    let small1 = info(&node("b", "2", "64Mi", "110"));
    let small2 = info(&node("c", "2", "64Mi", "110"));
    let e = schedule(&pod("100m", "128Mi"), &[cordoned, small1, small2], Strategy::Spread).unwrap_err();
    assert_eq!(e, "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient memory.");
    assert_eq!(schedule(&pod("1", "1"), &[], Strategy::Spread).unwrap_err(), "0/0 nodes are available.");
}

#[test]
fn taints_tolerations_selectors_and_affinity() {
    let mut tainted = node("t", "2", "1Gi", "110");
    tainted["spec"]["taints"] = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    let n = info(&tainted);
    let mut p = pod("0", "0");
    assert_eq!(filter(&p, &n).unwrap_err(), "node(s) had untolerated taint {dedicated: gpu}");
    p["spec"]["tolerations"] =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    assert!(filter(&p, &n).is_ok());
    p["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
    assert!(filter(&p, &n).is_ok(), "an empty key with Exists tolerates everything");

    let mut arm = node("arm", "4", "4Gi", "110");
    arm["metadata"]["labels"]["kubernetes.io/arch"] = json!("arm64");
    let arm = info(&arm);
    let mut p = pod("0", "0");
    p["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": "amd64"});
    assert_eq!(filter(&p, &arm).unwrap_err(), "node(s) didn't match Pod's node affinity/selector");
    p["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": "arm64"});
    assert!(filter(&p, &arm).is_ok());
    p["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "NotIn", "values": ["arm64"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["other"]}]}
    ]}}});
    assert!(filter(&p, &arm).is_err());
    p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][1]["matchFields"]
        [0]["values"] = json!(["arm"]);
    assert!(filter(&p, &arm).is_ok(), "terms are ORed");
}

#[test]
fn spread_binpack_and_preferred_affinity() {
    let mut busy = info(&node("busy", "4", "4Gi", "110"));
    busy.add_pod(&pod("2", "2Gi"));
    let idle = info(&node("idle", "4", "4Gi", "110"));
    let p = pod("100m", "64Mi");
    assert_eq!(schedule(&p, &[busy.clone(), idle.clone()], Strategy::Spread).unwrap(), "idle");
    assert_eq!(schedule(&p, &[busy.clone(), idle.clone()], Strategy::BinPack).unwrap(), "busy");
    let mut p2 = p.clone();
    p2["spec"]["affinity"] = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["busy"]}]}}
    ]}});
    assert_eq!(schedule(&p2, &[busy, idle], Strategy::Spread).unwrap(), "busy");
}

#[test]
fn topology_spread_keeps_skew() {
    let mut nodes: Vec<NodeInfo> = ["a", "b"].iter().map(|n| info(&node(n, "8", "8Gi", "110"))).collect();
    nodes[0].labels.insert("topology.kubernetes.io/zone".into(), "z1".into());
    nodes[1].labels.insert("topology.kubernetes.io/zone".into(), "z2".into());
    let mut p = pod("0", "0");
    p["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "a"}}}]);
    // Binpacking would put everything on one node; the constraint alternates zones.
    let mut placed = Vec::new();
    for _ in 0..6 {
        let n = schedule(&p, &nodes, Strategy::BinPack).unwrap();
        nodes.iter_mut().find(|x| x.name == n).unwrap().add_pod(&p);
        placed.push(n);
    }
    let a = placed.iter().filter(|n| *n == "a").count();
    assert_eq!(a, 3, "{placed:?}");
    // With zone b full, the skew forbids a fourth pod in a beyond the limit.
    nodes[1].unschedulable = true;
    nodes[0].add_pod(&p);
    assert!(schedule(&p, &nodes, Strategy::Spread).unwrap_err().contains("topology spread"));
}

/// Property: across random clusters and pods, a placement never exceeds a node's allocatable
/// and never lands on a cordoned, not-ready or intolerant node.
#[test]
fn never_overcommits_or_ignores_cordons_and_taints() {
    let mut seed: u64 = 0x5eed;
    let mut rnd = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..200 {
        let mut nodes: Vec<NodeInfo> = (0..(1 + rnd(6)))
            .map(|i| {
                let mut v = node(
                    &format!("n{i}"),
                    &format!("{}m", 500 + rnd(4000)),
                    &format!("{}Mi", 64 + rnd(4096)),
                    &format!("{}", 1 + rnd(20)),
                );
                if rnd(5) == 0 {
                    v["spec"]["unschedulable"] = json!(true);
                }
                if rnd(5) == 0 {
                    v["spec"]["taints"] = json!([{"key": "k", "value": "v", "effect": "NoExecute"}]);
                }
                if rnd(8) == 0 {
                    v["status"]["conditions"][0]["status"] = json!("Unknown");
                }
                info(&v)
            })
            .collect();
        for _ in 0..60 {
            let p = pod(&format!("{}m", rnd(800)), &format!("{}Mi", rnd(512)));
            if let Ok(n) = schedule(&p, &nodes, Strategy::BinPack) {
                let node = nodes.iter_mut().find(|x| x.name == n).unwrap();
                assert!(!node.unschedulable && node.ready && node.taints.is_empty(), "placed on an ineligible node");
                node.add_pod(&p);
                assert!(node.requested.cpu <= node.allocatable.cpu, "cpu overcommitted on {n}");
                assert!(node.requested.memory <= node.allocatable.memory, "memory overcommitted on {n}");
                assert!(node.requested.pods <= node.allocatable.pods, "pod count overcommitted on {n}");
            }
        }
    }
}

#[test]
fn large_clusters_score_a_rotating_sample() {
    assert_eq!(nodes_to_find(50), 50);
    assert_eq!(nodes_to_find(1000), 420, "50% - 8 points");
    assert_eq!(nodes_to_find(5000), 500, "50% - 40 points");
    assert_eq!(nodes_to_find(10000), 500, "floor of 5%");
    assert_eq!(nodes_to_find(150), 100, "never fewer than 100");
    let nodes: Vec<NodeInfo> = (0..300).map(|i| info(&node(&format!("n{i:03}"), "4", "4Gi", "110"))).collect();
    let p = pod("100m", "64Mi");
    let (first, next) = schedule_from(&p, &nodes, Strategy::Spread, 0, 100);
    assert_eq!(next, 100, "stopped after 100 feasible nodes");
    assert!(first.unwrap().as_str() < "n100", "chosen among the first 100");
    let (second, next) = schedule_from(&p, &nodes, Strategy::Spread, next, 100);
    assert_eq!(next, 200);
    assert!(second.unwrap().as_str() >= "n100");
    // With nothing feasible every node is examined and every reason counted.
    let big = pod("64", "1Gi");
    let (e, _) = schedule_from(&big, &nodes, Strategy::Spread, 250, 100);
    assert_eq!(e.unwrap_err(), "0/300 nodes are available: 300 Insufficient cpu.");
}
