//! `/metrics` in the Prometheus text format, parsed and counted.

use super::*;

/// Samples of a Prometheus text exposition as parsed by the official Python client's parser:
/// (sample name, labels, value). Panics if the text does not parse.
fn parse_prometheus(text: &str) -> Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> {
    const SCRIPT: &str = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families\nout = []\nfor f in text_string_to_metric_families(sys.stdin.read()):\n    for s in f.samples:\n        out.append([s.name, s.labels, s.value])\nprint(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "the exposition does not parse: {}\n{text}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> = serde_json::from_slice(&o.stdout).unwrap();
    v
}

fn sum(
    samples: &[(String, serde_json::Map<String, serde_json::Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).and_then(|x| x.as_str()) == Some(*v)))
        .map(|s| s.2)
        .sum()
}

/// `/metrics` on the API server and, through it, on a node: Prometheus text that the
/// official parser reads, counters that move with requests, and no anonymous access.
#[test]
fn prometheus_metrics_parse_and_count() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = common::node_address();
    let c = node_cluster(dir.path(), &node);
    let before = parse_prometheus(&ok(&c, &["get", "--raw", "/metrics"]));
    for _ in 0..3 {
        ok(&c, &["get", "pods"]);
    }
    let after = parse_prometheus(&ok(&c, &["get", "--raw", "/metrics"]));
    let lists = |s: &[_]| sum(s, "apiserver_request_total", &[("verb", "list"), ("resource", "pods"), ("code", "200")]);
    assert!(lists(&after) >= lists(&before) + 3.0, "{} → {}", lists(&before), lists(&after));
    assert!(sum(&after, "wasmorch_store_commit_batch_size_count", &[]) > 0.0);
    assert!(after.iter().any(|m| m.0 == "wasmorch_store_watch_history_records_total"), "history read by watches");
    assert!(sum(&after, "apiserver_registered_watchers", &[]) > 0.0, "the node's watches");

    // A node's: requests to its pods counted and timed.
    let hello = common::manifests_dir().join("hello.yaml");
    ok(&c, &["apply", "-f", hello.to_str().unwrap()]);
    ok(&c, &["rollout", "status", "deployment/hello", "--timeout=60s"]);
    let api = parse_prometheus(&ok(&c, &["get", "--raw", "/metrics"]));
    assert!(sum(&api, "scheduler_schedule_attempts_total", &[("result", "scheduled")]) >= 2.0, "two replicas placed");
    assert!(sum(&api, "workqueue_processed_total", &[("name", "deployment")]) > 0.0);
    let node_metrics = || parse_prometheus(&ok(&c, &["get", "--raw", "/api/v1/nodes/n1/proxy/metrics"]));
    let first = node_metrics();
    let served = common::eventually(std::time::Duration::from_secs(20), || {
        common::http_get(&format!("{node}:30080"), "/").is_ok_and(|r| r.0 == 200)
    });
    assert!(served);
    for _ in 0..4 {
        assert_eq!(common::http_get(&format!("{node}:30080"), "/").unwrap().0, 200);
    }
    let then = node_metrics();
    let reqs = |s: &[_]| sum(s, "wasmorch_pod_requests_total", &[("namespace", "default")]);
    assert!(reqs(&then) >= reqs(&first) + 5.0, "{} → {}", reqs(&first), reqs(&then));
    let timed = |s: &[_]| sum(s, "wasmorch_pod_request_duration_seconds_count", &[]);
    assert!(timed(&then) >= timed(&first) + 5.0);
    assert!(sum(&then, "wasmorch_instances_started_total", &[]) >= 5.0);

    // Without credentials: 401, as for the rest of the API.
    let anonymous = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/metrics", c.url)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
}
