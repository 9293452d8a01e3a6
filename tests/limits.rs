//! A pod's limits hold under concurrency: CPU and memory per container (all instances
//! together), bounded concurrency with a queue, host resources counted, and neighbours that
//! stay on time. Uses the `hostile` workload.
//!
//! The tests of this file run one at a time: the CPU test measures the node process's CPU
//! time, and a busy neighbour cluster on the same 2 cores would only add noise.

mod common;

use common::*;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn apply(c: &Cluster, name: &str, yaml: &str) {
    let f = c.dir.join(format!("{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
}

/// An HTTP pod of the hostile (or another) workload with `resources` and annotations.
fn http_pod(name: &str, wasm: &str, resources: &str, annotations: &str, probe: bool) -> String {
    let image = workloads().join(wasm);
    let probe = if probe {
        "\n      readinessProbe:\n        httpGet: {path: /, port: 8080}\n        periodSeconds: 1\n        failureThreshold: 1\n        timeoutSeconds: 1"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec:\n  nodeName: n1\n  terminationGracePeriodSeconds: 1\n  containers:\n    - name: main\n      image: file://{}\n      ports: [{{containerPort: 8080}}]\n      resources: {resources}{probe}\n",
        image.display()
    )
}

fn ready_addr(c: &Cluster, name: &str) -> String {
    let ok = eventually(Duration::from_secs(60), || {
        get_json(c, &["pod", name]).is_some_and(|p| p["status"]["containerStatuses"][0]["ready"] == true)
    });
    let p = get_json(c, &["pod", name]).unwrap_or(Value::Null);
    assert!(ok, "pod {name} never ready: {}\n{}", p["status"], c.log());
    format!("{}:8080", p["status"]["podIP"].as_str().unwrap())
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 =
        status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024
}

/// Requests to `addr` at ~50/s for `d`; sorted latencies.
fn neighbour_latencies(addr: &str, d: Duration) -> Vec<Duration> {
    let end = Instant::now() + d;
    let mut lat = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        let (code, body) = http_get(addr, "/").unwrap();
        assert_eq!(code, 200, "{body}");
        lat.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    lat.sort();
    lat
}

fn p(lat: &[Duration], q: f64) -> Duration {
    lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)]
}

/// `n` threads sending `path` to `addr` until `stop`; returns the status codes seen.
fn load(addr: &str, path: &str, n: usize, stop: Instant) -> Vec<std::thread::JoinHandle<Vec<u16>>> {
    (0..n)
        .map(|_| {
            let (addr, path) = (addr.to_string(), path.to_string());
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                while Instant::now() < stop {
                    codes.push(http_get(&addr, &path).map(|r| r.0).unwrap_or(0));
                }
                codes
            })
        })
        .collect()
}

/// `up` with node n1, metrics scraped every second and the HPA synced every second (`extra`
/// flags after).
fn metered_cluster(dir: &std::path::Path, extra: &[&str]) -> Cluster {
    let cidr = cluster_cidr();
    let mut args = vec![
        "--node-name",
        "n1",
        "--cluster-cidr",
        &cidr,
        "--metric-resolution",
        "1s",
        "--horizontal-pod-autoscaler-sync-period",
        "1s",
    ];
    args.extend_from_slice(extra);
    Cluster::start_with(dir, &args)
}

fn node_ready(c: &Cluster) -> bool {
    get_json(c, &["node", "n1"]).is_some_and(|n| {
        n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[test]
fn cpu_limit_holds_for_all_instances_together() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    let pid = c.pid().unwrap();
    apply(&c, "busy", &http_pod("busy", "hostile.wasm", "{limits: {cpu: 500m}}", "", false));
    apply(&c, "hello", &http_pod("hello", "hello_http.wasm", "{}", "", true));
    let busy = ready_addr(&c, "busy");
    let hello = ready_addr(&c, "hello");

    // The node's own CPU with only the neighbour's traffic.
    let c0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let idle = neighbour_latencies(&hello, Duration::from_secs(4));
    let baseline = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();

    for concurrency in [1usize, 4, 20] {
        let stop = Instant::now() + Duration::from_secs(8);
        let workers = load(&busy, "/busy?ms=200", concurrency, stop);
        std::thread::sleep(Duration::from_secs(2));
        let c0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let lat = neighbour_latencies(&hello, Duration::from_secs(5));
        let cores = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() - baseline;
        let codes: Vec<u16> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        eprintln!(
            "500m pod, {concurrency} busy requests in flight: {cores:.3} cores (node baseline {baseline:.3}); \
             neighbour p50 {:?} p99 {:?} (idle p50 {:?} p99 {:?}); {} requests",
            p(&lat, 0.5),
            p(&lat, 0.99),
            p(&idle, 0.5),
            p(&idle, 0.99),
            codes.len()
        );
        assert!(codes.iter().all(|c| *c == 200), "busy requests failed: {codes:?}");
        assert!((cores - 0.5).abs() <= 0.05, "{concurrency} in flight used {cores:.3} cores, limit 0.5");
    }
    // The node and the neighbour's probes kept time throughout.
    assert!(node_ready(&c), "node went NotReady");
    let hello_pod = get_json(&c, &["pod", "hello"]).unwrap();
    assert_eq!(hello_pod["status"]["containerStatuses"][0]["ready"], true);
    let events = c.ok(&["get", "events"]);
    assert!(!events.contains("Unhealthy"), "a probe failed under load:\n{events}");
}

#[test]
fn memory_limit_holds_for_concurrent_requests() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    let pid = c.pid().unwrap();
    apply(&c, "hog", &http_pod("hog", "hostile.wasm", "{limits: {memory: 32Mi}}", "", false));
    let hog = ready_addr(&c, "hog");
    // Warm up: the component compiled and cached, one instance run.
    assert_eq!(http_get(&hog, "/").unwrap().0, 200);
    let before = rss_mib(pid);
    let workers: Vec<_> = (0..12)
        .map(|_| {
            let hog = hog.clone();
            std::thread::spawn(move || http_get(&hog, "/hold?mib=24&ms=500").map(|r| r.0).unwrap_or(0))
        })
        .collect();
    let mut peak = before;
    while workers.iter().any(|w| !w.is_finished()) {
        peak = peak.max(rss_mib(pid));
        std::thread::sleep(Duration::from_millis(10));
    }
    let codes: Vec<u16> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let growth = peak.saturating_sub(before);
    eprintln!("12 × 24 MiB holds in a 32Mi pod: codes {codes:?}, node RSS {before} → peak {peak} MiB (+{growth})");
    assert!(codes.iter().all(|c| *c == 200 || *c == 503), "{codes:?}");
    assert!(codes.contains(&200), "no hold succeeded: {codes:?}");
    assert!(codes.contains(&503), "all twelve held 24 MiB in a 32Mi pod: {codes:?}");
    // The limit plus a margin for the node's own buffers and allocator slack.
    assert!(growth <= 32 + 24, "node RSS grew {growth} MiB for a 32Mi pod");
    // Nothing else was killed: the pod runs on and answers; an event says why requests failed.
    let p = get_json(&c, &["pod", "hog"]).unwrap();
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(http_get(&hog, "/").unwrap().0, 200);
    events_with(&c, &[], &["OOMKilled", "memory limit (32 MiB)"]);
    // Footprint-derived concurrency: after a 24 MiB request one instance at a time fits.
    let d = c.ok(&["describe", "pod", "hog"]);
    assert!(d.contains("Concurrency:  0 in flight of 1"), "{d}");
    assert!(d.contains("limit 32Mi"), "{d}");
    // What one instance takes is measured at the component's first start only: another pod
    // of it starts without running an instance, and one whose limit cannot hold an instance
    // still fails at start, OOMKilled.
    let started = node_gauge(&c, "wasmorch_instances_started_total");
    apply(&c, "hog2", &http_pod("hog2", "hostile.wasm", "{limits: {memory: 32Mi}}", "", false));
    ready_addr(&c, "hog2");
    assert_eq!(node_gauge(&c, "wasmorch_instances_started_total"), started, "hog2's start ran an instance");
    apply(&c, "tiny", &http_pod("tiny", "hostile.wasm", "{limits: {memory: 256Ki}}", "", false));
    let oom_killed = |p: &Value| {
        let s = &p["status"]["containerStatuses"][0];
        [&s["state"], &s["lastState"]].iter().any(|st| st["terminated"]["reason"] == "OOMKilled")
    };
    let ok = eventually(Duration::from_secs(60), || get_json(&c, &["pod", "tiny"]).is_some_and(|p| oom_killed(&p)));
    assert!(ok, "tiny never OOMKilled: {}", get_json(&c, &["pod", "tiny"]).unwrap_or(Value::Null)["status"]);
}

/// An unlabelled gauge of the node's `/metrics`, read through the API server.
fn node_gauge(c: &Cluster, name: &str) -> f64 {
    let text = c.kubectl_ok(&["get", "--raw", "/api/v1/nodes/n1/proxy/metrics"]);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the node's metrics:\n{text}"))
}

/// Freed instances' slots keep a bounded amount of memory resident for the next instance
/// (no system call per request to give it back), the node carries that amount in its
/// budget, and repeated load does not grow the node's memory.
#[test]
fn freed_slots_keep_bounded_memory_and_rss_stays_flat() {
    if !kubectl_available() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    let pid = c.pid().unwrap();
    apply(&c, "hello", &http_pod("hello", "hello_http.wasm", "{}", "", false));
    let hello = ready_addr(&c, "hello");
    assert_eq!(http_get(&hello, "/").unwrap().0, 200);
    const CLIENTS: usize = 16;
    let mut after = Vec::new();
    for round in 1..=3 {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let hello = hello.clone();
                std::thread::spawn(move || {
                    (0..150).map(|_| http_get(&hello, "/").map_or(0, |r| r.0)).collect::<Vec<_>>()
                })
            })
            .collect();
        let codes: Vec<u16> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        assert!(codes.iter().all(|c| *c == 200), "round {round}: {:?}", codes.iter().filter(|c| **c != 200).count());
        assert!(
            eventually(Duration::from_secs(10), || node_gauge(&c, "wasmorch_instances") == 0.0),
            "instances still alive after round {round}"
        );
        let (charged, resident) =
            (node_gauge(&c, "wasmorch_node_warm_slot_bytes"), node_gauge(&c, "wasmorch_node_warm_slot_resident_bytes"));
        let rss = rss_mib(pid);
        eprintln!("round {round}: warm slots charged {charged} B, resident {resident} B; node RSS {rss} MiB");
        assert!(resident <= charged, "round {round}: {resident} B resident in free slots, only {charged} B charged");
        // At most one slot per instance ever live at once (the clients, the kubelet's own
        // requests), each at most 4 MiB of memory and a few 64 KiB tables.
        let bound = ((CLIENTS + 4) * ((4 << 20) + 8 * (64 << 10))) as f64;
        assert!(charged <= bound, "round {round}: {charged} B charged for free slots, bound {bound}");
        if cfg!(target_os = "linux") {
            assert!(charged > 0.0, "round {round}: nothing kept resident");
        }
        after.push(rss);
    }
    assert!(after[2] <= after[0] + 8, "node RSS grew across identical rounds: {after:?} MiB");
}

#[test]
fn host_resources_and_other_abuse_are_contained() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    let pid = c.pid().unwrap();
    apply(&c, "leak", &http_pod("leak", "hostile.wasm", "{limits: {memory: 32Mi}}", "", false));
    let leak = ready_addr(&c, "leak");
    assert_eq!(http_get(&leak, "/").unwrap().0, 200);
    let before = rss_mib(pid);
    // Header maps of 32 KiB each, without end: host memory, not linear memory.
    let (code, body) = http_get(&leak, "/leak").unwrap();
    let after = rss_mib(pid);
    eprintln!("host-resource leak in a 32Mi pod: {code} {body:?}; node RSS {before} → {after} MiB");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("could not get memory") && body.contains("OOMKilled"), "{body}");
    assert!(after.saturating_sub(before) <= 32 + 24, "node RSS grew {before} → {after} MiB");
    // A bounded leak within the limit is fine, and its memory is returned with the instance.
    let (code, body) = http_get(&leak, "/leak?n=200").unwrap();
    assert_eq!((code, body.as_str()), (200, "leaked 200 header maps\n"));
    // Stack overflow traps that request only.
    let (code, body) = http_get(&leak, "/overflow").unwrap();
    assert_eq!(code, 500, "{body}");
    // A trap or a return before answering is a 500 that says which.
    let (code, body) = http_get(&leak, "/trap").unwrap();
    assert!(code == 500 && body.contains("the workload trapped"), "{code} {body}");
    let (code, body) = http_get(&leak, "/silent").unwrap();
    assert!(code == 500 && body.contains("returned without setting a response"), "{code} {body}");
    // A client that goes away does not cut its instance off mid-handler: it runs to its end.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&leak).unwrap();
        write!(s, "GET /late?ms=300 HTTP/1.1\r\nHost: leak\r\n\r\n").unwrap();
    }
    let finished = eventually(Duration::from_secs(10), || c.ok(&["logs", "leak"]).contains("hostile: answering late"));
    assert!(finished, "the instance of a request whose client left did not finish:\n{}", c.ok(&["logs", "leak"]));
    // An instance still writing its body after answering finishes it (in a task of its own).
    let (code, body) = http_get(&leak, "/stream?chunks=3&ms=50").unwrap();
    assert_eq!((code, body.as_str()), (200, "chunk 0\nchunk 1\nchunk 2\n"));
    // A log flood is cut by rotation (10 MiB × 5 per run).
    let (code, _) = http_get(&leak, "/flood?lines=600000").unwrap();
    assert_eq!(code, 200);
    let p = get_json(&c, &["pod", "leak"]).unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let pod_dir = dir.path().join(format!("data/node/pods/default_leak_{uid}"));
    let logged: u64 = std::fs::read_dir(&pod_dir).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    assert!(logged <= 51 << 20, "{logged} bytes of logs");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(http_get(&leak, "/").unwrap().0, 200);
    assert!(node_ready(&c));
}

#[test]
fn concurrency_limit_queues_then_refuses_with_retry_after() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    let ann = "wasmorch.io/max-concurrency: \"1\", wasmorch.io/max-queue: \"1\"";
    apply(&c, "one", &http_pod("one", "hostile.wasm", "{limits: {memory: 64Mi}}", ann, false));
    let one = ready_addr(&c, "one");
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let one = one.clone();
            std::thread::spawn(move || http_get(&one, "/busy?ms=1500").map(|r| r.0).unwrap_or(0))
        })
        .collect();
    // Both places taken (one running, one queued): the describe output says so.
    let mut d = String::new();
    let full = eventually(Duration::from_secs(5), || {
        d = c.ok(&["describe", "pod", "one"]);
        d.contains("Concurrency:  1 in flight of 1, 1 queued of 1")
    });
    assert!(full, "{d}");
    // A third finds the queue full: 503 at once, with Retry-After.
    let mut s = std::net::TcpStream::connect(&one).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.0 503"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("retry-after: 1"), "{resp}");
    assert!(resp.contains("concurrency limit"), "{resp}");
    assert_eq!(slow.into_iter().map(|t| t.join().unwrap()).collect::<Vec<_>>(), vec![200, 200]);
    events_with(&c, &[], &["Overloaded"]);
    // The pod's own request timeout: a request past it is answered 504, its instance stopped.
    let ann = "wasmorch.io/request-timeout: \"300ms\"";
    apply(&c, "brief", &http_pod("brief", "hostile.wasm", "{limits: {memory: 64Mi}}", ann, false));
    let brief = ready_addr(&c, "brief");
    let (code, body) = http_get(&brief, "/late?ms=5000").unwrap();
    assert!(code == 504 && body.contains("did not answer within 300ms"), "{code} {body}");
    assert_eq!(http_get(&brief, "/late?ms=1").unwrap(), (200, "late\n".to_string()));
    // A setting the node could not use is refused at apply, naming the annotation.
    let f = c.dir.join("bad.yaml");
    let ann = "wasmorch.io/request-timeout: \"soon\"";
    std::fs::write(&f, http_pod("bad", "hostile.wasm", "{}", ann, false)).unwrap();
    let out = c.cli(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "applied: {err}");
    assert!(
        err.contains("metadata.annotations[wasmorch.io/request-timeout]") && err.contains("invalid duration"),
        "{err}"
    );
}

/// The resource metrics API: `kubectl top` (and `wasmorch top`) show a spinner's CPU at its
/// limit and a memhog's memory at what it holds, from the node's own accounting.
#[test]
fn top_shows_cpu_at_the_limit_and_memory_held() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = metered_cluster(dir.path(), &[]);
    let pod = |name: &str, wasm: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n    - name: main\n      image: file://{}\n{extra}",
            workloads().join(wasm).display()
        )
    };
    apply(&c, "spin", &pod("spin", "spinner.wasm", "      resources: {limits: {cpu: 300m}}\n"));
    let hog = "      env: [{name: HOLD_MIB, value: \"24\"}]\n      resources: {limits: {memory: 64Mi}}\n";
    apply(&c, "hog", &pod("hog", "memhog.wasm", hog));

    // wasmorch top: spin near 300m, hog near 24 MiB (a scrape each second; the first window
    // is from the container's start).
    let figures = |out: &str, name: &str| -> Option<(u64, u64)> {
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(name))?;
        let cols: Vec<&str> = line.split_whitespace().collect();
        Some((cols.get(1)?.strip_suffix('m')?.parse().ok()?, cols.get(2)?.strip_suffix("Mi")?.parse().ok()?))
    };
    let mut last = String::new();
    let settled = eventually(Duration::from_secs(30), || {
        last = c.cli(&["top", "pods"]).stdout.iter().map(|b| *b as char).collect();
        matches!(figures(&last, "spin"), Some((cpu, _)) if (270..=330).contains(&cpu))
            && matches!(figures(&last, "hog"), Some((_, mem)) if (24..=27).contains(&mem))
    });
    assert!(settled, "wasmorch top pods:\n{last}");
    let nodes = c.ok(&["top", "nodes"]);
    assert!(nodes.lines().next().unwrap().starts_with("NAME"), "{nodes}");
    assert!(nodes.contains("n1"), "{nodes}");

    let selected = c.ok(&["top", "pods", "-l", "app=spin"]);
    assert!(figures(&selected, "spin").is_some() && figures(&selected, "hog").is_none(), "{selected}");

    // The API kubectl reads, with labels and selectors, and kubectl top itself.
    if kubectl_available() {
        let kubectl = |args: &[&str]| {
            let o = std::process::Command::new("kubectl")
                .args(args)
                .env("KUBECONFIG", c.kubeconfig())
                .env("HOME", c.dir.join("home"))
                .output()
                .unwrap();
            assert!(o.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let raw =
            kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dspin"]);
        let list: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(list["kind"], "PodMetricsList");
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{raw}");
        assert_eq!(list["items"][0]["metadata"]["labels"]["app"], "spin");
        assert!(list["items"][0]["window"].as_str().unwrap().ends_with('s'));
        let api = kubectl(&["api-resources", "--api-group", "metrics.k8s.io"]);
        assert!(api.contains("PodMetrics") && api.contains("NodeMetrics"), "{api}");
        let pods = kubectl(&["top", "pods"]);
        let (cpu, _) = figures(&pods, "spin").unwrap_or_else(|| panic!("{pods}"));
        assert!((250..=350).contains(&cpu), "kubectl top pods:\n{pods}");
        let (_, mem) = figures(&pods, "hog").unwrap_or_else(|| panic!("{pods}"));
        assert!((24..=27).contains(&mem), "kubectl top pods:\n{pods}");
        let nodes = kubectl(&["top", "nodes"]);
        assert!(nodes.contains("n1") && nodes.contains("CPU(%)"), "{nodes}");
        let containers = kubectl(&["top", "pods", "-A", "--containers", "-l", "app=hog"]);
        assert!(containers.contains("default") && containers.contains("main"), "{containers}");
    }
}

/// HorizontalPodAutoscaler on CPU: `kubectl autoscale` (or the same object applied), a
/// CPU-bound HTTP workload under a bounded load scales up within the sync period, and back
/// to its minimum once the load stops and the (shortened) stabilization window passes, with
/// Kubernetes' events and conditions.
#[test]
fn hpa_scales_a_deployment_up_under_cpu_load_and_back_down() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = metered_cluster(dir.path(), &["--horizontal-pod-autoscaler-downscale-stabilization", "5s"]);
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: main\n          image: file://{}\n          ports: [{{containerPort: 8080}}]\n          resources: {{requests: {{cpu: 100m}}, limits: {{cpu: 400m}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n",
        workloads().join("hostile.wasm").display()
    );
    apply(&c, "web", &yaml);
    let hpa = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 1\n  maxReplicas: 4\n  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}}]\n";
    if kubectl_available() {
        let o = std::process::Command::new("kubectl")
            .args(["autoscale", "deployment", "web", "--cpu=50%", "--min=1", "--max=4"])
            .env("KUBECONFIG", c.kubeconfig())
            .env("HOME", c.dir.join("home"))
            .output()
            .unwrap();
        assert!(o.status.success(), "kubectl autoscale: {}", String::from_utf8_lossy(&o.stderr));
    } else {
        apply(&c, "hpa", hpa);
    }
    let replicas = || get_json(&c, &["deploy", "web"]).and_then(|d| d["spec"]["replicas"].as_i64()).unwrap_or(0);
    let ready = eventually(Duration::from_secs(60), || {
        get_json(&c, &["deploy", "web"]).is_some_and(|d| d["status"]["readyReplicas"] == 1)
    });
    assert!(ready, "{}", c.ok(&["get", "pods"]));
    let svc = get_json(&c, &["svc", "web"]).unwrap();
    let addr = format!("{}:80", svc["spec"]["clusterIP"].as_str().unwrap());

    // Load: 4 requests of 100 ms of CPU each at all times, far above 50 % of 100m.
    let stop = Instant::now() + Duration::from_secs(120);
    let halt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (addr, halt) = (addr.clone(), halt.clone());
            std::thread::spawn(move || {
                while Instant::now() < stop && !halt.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = http_get(&addr, "/busy?ms=100");
                }
            })
        })
        .collect();
    let up = eventually(Duration::from_secs(60), || replicas() > 1);
    let hpa_now = get_json(&c, &["hpa", "web"]).unwrap_or(Value::Null);
    assert!(up, "no scale-up: {}", hpa_now["status"]);
    let events =
        events_with(&c, &["--field-selector", "involvedObject.kind=HorizontalPodAutoscaler"], &["SuccessfulRescale"]);
    assert!(events.contains("above target"), "{events}");
    let table = c.ok(&["get", "hpa"]);
    assert!(table.contains("Deployment/web") && table.contains("cpu: "), "{table}");
    let conditions = |h: &Value, ty: &str| -> String {
        h["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == ty)
            .map_or(String::new(), |c| {
                format!("{} {}", c["status"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or(""))
            })
    };
    let h = get_json(&c, &["hpa", "web"]).unwrap();
    assert_eq!(conditions(&h, "ScalingActive"), "True ValidMetricFound", "{}", h["status"]);
    assert!(h["status"]["lastScaleTime"].is_string(), "{}", h["status"]);

    // The load stops: back to the minimum once the 5 s window has passed.
    halt.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let down = eventually(Duration::from_secs(60), || replicas() == 1);
    let h = get_json(&c, &["hpa", "web"]).unwrap_or(Value::Null);
    assert!(down, "no scale-down: {}", h["status"]);
    let events = events_with(
        &c,
        &["--field-selector", "involvedObject.kind=HorizontalPodAutoscaler"],
        &["All metrics below target"],
    );
    assert!(events.contains("New size: 1"), "{events}");
}

/// HPA on what the proxy counts: requests per second per replica (a `Pods` metric) scales a
/// Deployment up under paced load; the same figure for a whole Service (an `Object` metric)
/// is read as well.
#[test]
fn hpa_scales_on_requests_per_second() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = metered_cluster(dir.path(), &[]);
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: main\n          image: file://{}\n          ports: [{{containerPort: 8080}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: web}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  minReplicas: 1\n  maxReplicas: 6\n  metrics: [{{type: Pods, pods: {{metric: {{name: requests_per_second}}, target: {{type: AverageValue, averageValue: \"10\"}}}}}}]\n",
        workloads().join("hello_http.wasm").display()
    );
    apply(&c, "web", &yaml);
    let ready = eventually(Duration::from_secs(60), || {
        get_json(&c, &["deploy", "web"]).is_some_and(|d| d["status"]["readyReplicas"] == 1)
    });
    assert!(ready, "{}", c.ok(&["get", "pods"]));
    let svc = get_json(&c, &["svc", "web"]).unwrap();
    let addr = format!("{}:80", svc["spec"]["clusterIP"].as_str().unwrap());

    // About 60 requests per second (paced, not as fast as possible): 6 × the target of 10.
    let halt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pacers: Vec<_> = (0..3)
        .map(|_| {
            let (addr, halt) = (addr.clone(), halt.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                while Instant::now() < deadline && !halt.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = http_get(&addr, "/");
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    let replicas = || get_json(&c, &["deploy", "web"]).and_then(|d| d["spec"]["replicas"].as_i64()).unwrap_or(0);
    let up = eventually(Duration::from_secs(60), || replicas() >= 3);
    let h = get_json(&c, &["hpa", "web"]).unwrap_or(Value::Null);
    assert!(up, "no scale-up on requests per second: {}", h["status"]);
    assert_eq!(h["status"]["currentMetrics"][0]["pods"]["metric"]["name"], "requests_per_second");
    let events =
        events_with(&c, &["--field-selector", "involvedObject.kind=HorizontalPodAutoscaler"], &["SuccessfulRescale"]);
    assert!(events.contains("pods metric requests_per_second above target"), "{events}");

    // The Service's total as an Object metric.
    let object = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 1\n  maxReplicas: 6\n  metrics: [{type: Object, object: {describedObject: {apiVersion: v1, kind: Service, name: web}, metric: {name: requests_per_second}, target: {type: Value, value: \"1000\"}}}]\n";
    apply(&c, "object", object);
    let read = eventually(Duration::from_secs(30), || {
        get_json(&c, &["hpa", "web"]).is_some_and(|h| {
            h["status"]["currentMetrics"][0]["type"] == "Object"
                && h["status"]["currentMetrics"][0]["object"]["current"]["value"].is_string()
        })
    });
    let h = get_json(&c, &["hpa", "web"]).unwrap_or(Value::Null);
    assert!(read, "{}", h["status"]);
    halt.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in pacers {
        p.join().unwrap();
    }
}
