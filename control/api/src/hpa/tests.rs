use super::*;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

/// Ready pods started long ago, each requesting `req` cores, measured at `levels` (millicores;
/// `None`: no measurement).
fn case(req: &[f64], levels: &[Option<i64>]) -> (Vec<PodView>, HashMap<String, Sample>) {
    let pods: Vec<PodView> = req
        .iter()
        .enumerate()
        .map(|(i, r)| PodView {
            name: format!("p{i}"),
            phase: "Running".into(),
            deleting: false,
            start: Some(t(-3600)),
            ready: Some((true, Some(t(-3500)))),
            request: Some(*r),
        })
        .collect();
    let samples = levels
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            Some((
                format!("p{i}"),
                Sample { value: (*l)? as f64 / 1000.0, timestamp: t(0), window: Duration::from_secs(15) },
            ))
        })
        .collect();
    (pods, samples)
}

fn calc(current: i64, pods: &[PodView], samples: &HashMap<String, Sample>, target: Target) -> i64 {
    replicas_for(current, pods, samples, target, true, TOLERANCE, t(0)).unwrap().replicas
}

#[test]
fn replica_calculator_follows_kubernetes_cases() {
    // Scale up: 1500m of 3 cores = 50 % against 30 % → ceil(1.67 × 3) = 5.
    let (p, s) = case(&[1.0; 3], &[Some(300), Some(500), Some(700)]);
    let r = replicas_for(3, &p, &s, Target::Utilization(30.0), true, TOLERANCE, t(0)).unwrap();
    assert_eq!((r.replicas, r.utilization), (5, Some(50)));
    // Scale down: 1400m of 5 cores = 28 % against 50 % → ceil(0.56 × 5) = 3.
    let (p, s) = case(&[1.0; 5], &[Some(100), Some(300), Some(500), Some(250), Some(250)]);
    assert_eq!(calc(5, &p, &s, Target::Utilization(50.0)), 3);
    // Within the tolerance: 3060m of 3 cores = 102 % against 100 % → no change.
    let (p, s) = case(&[0.9, 1.0, 1.1], &[Some(1010), Some(1030), Some(1020)]);
    assert_eq!(calc(3, &p, &s, Target::Utilization(100.0)), 3);
    // The docs' example: 200m against 100m average doubles, 50m halves.
    let (p, s) = case(&[1.0; 4], &[Some(200); 4]);
    assert_eq!(calc(4, &p, &s, Target::AverageValue(0.1)), 8);
    let (p, s) = case(&[1.0; 4], &[Some(50); 4]);
    assert_eq!(calc(4, &p, &s, Target::AverageValue(0.1)), 2);
}

#[test]
fn starting_pods_count_as_idle_on_a_scale_up() {
    // One pod not yet ready: the ready two are at 60 % (ratio 2), but the third counts as 0 %:
    // 1200m of 3 cores = 40 % against 30 % → ceil(1.33 × 3) = 4, not 6.
    let (mut p, s) = case(&[1.0; 3], &[Some(300), Some(500), Some(700)]);
    p[0].ready = Some((false, Some(t(-10))));
    p[0].start = Some(t(-20));
    assert_eq!(calc(3, &p, &s, Target::Utilization(30.0)), 4);
    // A pending pod too; a deleting or failed one is not counted at all.
    let (mut p, s) = case(&[1.0; 3], &[Some(300), Some(500), Some(700)]);
    p[0].phase = "Pending".into();
    assert_eq!(calc(3, &p, &s, Target::Utilization(30.0)), 4);
    let (mut p, s) = case(&[1.0; 3], &[Some(300), Some(500), Some(700)]);
    p[0].deleting = true;
    assert_eq!(calc(3, &p, &s, Target::Utilization(30.0)), 4, "ceil(2 × 2 ready)");
}

#[test]
fn missing_measurements_move_the_count_the_least() {
    // Scale up with a pod unmeasured: it counts as 0 %. 1600m on 2 ready pods is 80 % of
    // 50 % (ratio 1.6); with the third at 0: 53 % → ratio 1.07, within the tolerance.
    let (p, s) = case(&[1.0; 3], &[Some(800), Some(800), None]);
    assert_eq!(calc(3, &p, &s, Target::Utilization(50.0)), 3);
    // Scale down with one unmeasured: it counts as using its request (100 %), which turns
    // 10 % (ratio 0.2) into 55 % (1.1): direction flips → no change.
    let (p, s) = case(&[1.0; 2], &[Some(100), None]);
    assert_eq!(calc(2, &p, &s, Target::Utilization(50.0)), 2);
    // No measurement at all is an error, as is a pod without a request.
    let (p, s) = case(&[1.0; 2], &[None, None]);
    assert!(
        replicas_for(2, &p, &s, Target::Utilization(50.0), true, TOLERANCE, t(0))
            .unwrap_err()
            .contains("did not receive metrics")
    );
    let (mut p, s) = case(&[1.0; 2], &[Some(100), Some(100)]);
    p[1].request = None;
    assert!(
        replicas_for(2, &p, &s, Target::Utilization(50.0), true, TOLERANCE, t(0))
            .unwrap_err()
            .contains("missing request")
    );
}

fn rules(window: u64, select: &str, policies: &[(&str, i64, u64)]) -> Rules {
    Rules {
        window: Duration::from_secs(window),
        select: select.into(),
        policies: policies.iter().map(|(k, v, p)| (k.to_string(), *v, Duration::from_secs(*p))).collect(),
    }
}

#[test]
fn default_behavior_scales_up_by_4_pods_or_double_per_15_s() {
    let up = Rules::of(None, default_scale_up(), DOWNSCALE_STABILIZATION);
    let down = Rules::of(None, default_scale_down(), DOWNSCALE_STABILIZATION);
    assert_eq!(up, rules(0, "Max", &[("Pods", 4, 15), ("Percent", 100, 15)]));
    assert_eq!(down.window, Duration::from_secs(300));
    let mut h = History::default();
    // From 1 the larger change is +4 pods: 5, though 20 are wanted.
    let n = normalize(&mut h, 1, 20, 1, 50, &up, &down, t(0));
    assert_eq!(n.replicas, 5);
    assert_eq!(
        n.limited,
        (true, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
    );
    record_scale(&mut h, 1, 5, &up, &down, t(0));
    // Within the same 15 s: the period started at 1, so still at most 5.
    assert_eq!(normalize(&mut h, 5, 20, 1, 50, &up, &down, t(5)).replicas, 5);
    // After it: from 5, double (10) beats +4 (9).
    assert_eq!(normalize(&mut h, 5, 20, 1, 50, &up, &down, t(16)).replicas, 10);
    // The maximum caps it.
    let n = normalize(&mut History::default(), 5, 20, 1, 8, &up, &down, t(0));
    assert_eq!((n.replicas, n.limited.1), (8, "TooManyReplicas"));
}

#[test]
fn scale_down_waits_for_the_stabilization_window() {
    let up = Rules::of(None, default_scale_up(), DOWNSCALE_STABILIZATION);
    let down = Rules::of(None, default_scale_down(), Duration::from_secs(60));
    let mut h = History::default();
    assert_eq!(normalize(&mut h, 6, 6, 1, 10, &up, &down, t(0)).replicas, 6);
    // Load drops: 2 are enough, but 6 was recommended within the window.
    let n = normalize(&mut h, 6, 2, 1, 10, &up, &down, t(15));
    assert_eq!((n.replicas, n.able.0), (6, "ScaleDownStabilized"));
    assert_eq!(normalize(&mut h, 6, 2, 1, 10, &up, &down, t(45)).replicas, 6);
    // Once the 6 is older than the window, the highest recent recommendation (2) wins.
    let n = normalize(&mut h, 6, 2, 1, 10, &up, &down, t(61));
    assert_eq!((n.replicas, n.limited.0), (2, false));
    // The minimum holds it.
    let n = normalize(&mut History::default(), 6, 0, 3, 10, &up, &rules(0, "Max", &[("Percent", 100, 15)]), t(0));
    assert_eq!((n.replicas, n.limited.1), (3, "TooFewReplicas"));
}

#[test]
fn policies_as_the_kubernetes_docs_describe() {
    // Scale down by at most 10 % or 5 pods a minute, whichever is more: from 80, 8 go.
    let down = rules(0, "Max", &[("Percent", 10, 60), ("Pods", 5, 60)]);
    let up = rules(0, "Max", &[("Pods", 4, 15)]);
    let n = normalize(&mut History::default(), 80, 10, 1, 100, &up, &down, t(0));
    assert_eq!((n.replicas, n.limited.1), (72, "ScaleDownLimit"));
    // selectPolicy Min: the smaller change, 5.
    let down = rules(0, "Min", &[("Percent", 10, 60), ("Pods", 5, 60)]);
    assert_eq!(normalize(&mut History::default(), 80, 10, 1, 100, &up, &down, t(0)).replicas, 75);
    // Disabled: no scale-down at all.
    let down = rules(0, "Disabled", &[]);
    assert_eq!(normalize(&mut History::default(), 80, 10, 1, 100, &up, &down, t(0)).replicas, 80);
}

#[test]
fn defaults_and_validation() {
    let mut o = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}});
    set_defaults(&mut o);
    assert_eq!(o["spec"]["minReplicas"], 1);
    assert_eq!(o["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
    assert_eq!(o["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 30);
    assert_eq!(o["spec"]["behavior"]["scaleDown"]["policies"][0]["value"], 100);
    assert_eq!(o["spec"]["behavior"]["scaleUp"]["policies"][0]["value"], 4);
    let mut c = Causes::default();
    validate(&o["spec"], &mut c);
    assert!(c.0.is_empty(), "{:?}", c.0);

    let bad = json!({"scaleTargetRef": {"kind": "Deployment"}, "minReplicas": 5, "maxReplicas": 2, "metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}},
        {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "Utilization", "averageUtilization": 5}}},
        {"type": "Bogus"}],
        "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 4000}]}}});
    let mut c = Causes::default();
    validate(&bad, &mut c);
    let fields: Vec<&str> = c.0.iter().map(|c| c.field.as_str()).collect();
    for f in [
        "spec.scaleTargetRef.name",
        "spec.maxReplicas",
        "spec.metrics[0].resource.target.averageUtilization",
        "spec.metrics[1].pods.target.type",
        "spec.metrics[2].type",
        "spec.behavior.scaleUp.policies[0].value",
        "spec.behavior.scaleUp.policies[0].periodSeconds",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    // Zero replicas only with a metric from outside the pods.
    let mut c = Causes::default();
    validate(
        &json!({"scaleTargetRef": {"kind": "Deployment", "name": "w"}, "minReplicas": 0, "maxReplicas": 2}),
        &mut c,
    );
    assert_eq!(c.0[0].field, "spec.minReplicas");
}

#[test]
fn targets_column_reads_like_kubectl() {
    let o = json!({"spec": {"metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
        {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]},
        "status": {"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 42, "averageValue": "210m"}}}]}});
    assert_eq!(targets_column(&o), "cpu: 42%/50%, memory: <unknown>/100Mi + 1 more...");
}
