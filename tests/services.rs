//! Services end to end: endpoints, cluster addresses, node ports, the proxy's balancing and
//! failover, and discovery from inside wasm pods. The examples in `manifests/services/`.

mod common;

use common::{Cluster, eventually, get_json, http_get, workloads};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// `up` with its node on an address of its own and a cluster-address range of its own, so
/// that clusters of tests running side by side never answer each other's addresses.
/// Returns the cluster and the node's address.
fn cluster(dir: &Path) -> (Cluster, String) {
    cluster_with(dir, &[])
}

fn cluster_with(dir: &Path, extra: &[&str]) -> (Cluster, String) {
    let prefix = common::pod_ip_prefix();
    let n: u32 = prefix.rsplit('.').next().unwrap().parse().unwrap();
    let node = format!("{prefix}.255.254");
    let cidr = format!("127.{}.0.0/16", n + 100);
    let c = Cluster::start_with(
        dir,
        &[
            "--node-name",
            "n1",
            "--backoff-base",
            "1",
            "--cluster-cidr",
            &format!("{prefix}.0.0/16"),
            "--node-address",
            &node,
            "--service-cidr",
            &cidr,
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
    );
    (c, node)
}

fn apply_example(c: &Cluster, file: &str) {
    let f = common::manifests_dir().join("services").join(file);
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
}

fn apply_text(c: &Cluster, dir: &Path, name: &str, text: &str) {
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, text).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
}

/// Ready endpoints of a Service, from its EndpointSlices.
fn ready_endpoints(c: &Cluster, svc: &str) -> Vec<String> {
    let Some(list) = get_json(c, &["endpointslices", "-l", &format!("kubernetes.io/service-name={svc}")]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in list["items"].as_array().into_iter().flatten() {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            if e["conditions"]["ready"] == true {
                out.push(e["addresses"][0].as_str().unwrap_or("").to_string());
            }
        }
    }
    out.sort();
    out
}

fn wait_endpoints(c: &Cluster, svc: &str, n: usize) -> Vec<String> {
    let mut last = Vec::new();
    let ok = eventually(Duration::from_secs(60), || {
        last = ready_endpoints(c, svc);
        last.len() == n
    });
    assert!(ok, "service {svc} never had {n} ready endpoints: {last:?}\n{}", c.log());
    last
}

fn cluster_ip(c: &Cluster, svc: &str) -> String {
    get_json(c, &["svc", svc]).unwrap()["spec"]["clusterIP"].as_str().unwrap().to_string()
}

/// The pod name hello-http reports in its greeting.
fn pod_of(body: &str) -> String {
    body.split("pod=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("").to_string()
}

/// GET until it answers 200 (the proxy starts listening once it has seen the Service).
fn get_ok(addr: &str, path: &str) -> String {
    let mut last = None;
    let ok = eventually(Duration::from_secs(20), || {
        last = Some(http_get(addr, path));
        matches!(&last, Some(Ok((200, _))))
    });
    assert!(ok, "GET http://{addr}{path}: {last:?}");
    http_get(addr, path).unwrap().1
}

#[test]
fn services_route_balance_and_are_discovered_from_pods() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (c, node) = cluster(d);
    apply_example(&c, "frontend-backend.yaml");
    let backends = wait_endpoints(&c, "backend", 3);
    let node_port = format!("{node}:30080");
    wait_endpoints(&c, "frontend", 1);

    // Cluster addresses are allocated from the range; node ports as asked.
    let ip = cluster_ip(&c, "backend");
    assert!(ip.starts_with("127.2"), "{ip}");
    let fe = get_json(&c, &["svc", "frontend"]).unwrap();
    assert_eq!(fe["spec"]["ports"][0]["nodePort"], 30080);
    let table = c.ok(&["get", "svc", "backend"]);
    assert!(table.contains(&ip), "{table}");
    let eps = get_json(&c, &["endpoints", "backend"]).unwrap();
    assert_eq!(eps["subsets"][0]["addresses"].as_array().unwrap().len(), 3);
    assert_eq!(eps["subsets"][0]["ports"][0]["port"], 8080, "targetPort resolved by name");

    // A frontend calls the backend by name, from outside through the node port.
    let body = get_ok(&node_port, "/call/backend/hi");
    assert!(body.starts_with("backend said: Hello from wasmorch! pod=backend-"), "{body}");
    for name in ["backend.default", "backend.default.svc", "backend.default.svc.cluster.local"] {
        let body = get_ok(&node_port, &format!("/call/{name}/x"));
        assert!(body.starts_with(&format!("{name} said: Hello")), "{name}: {body}");
    }
    // Kubernetes' service variables are set (the frontend started after the backend Service).
    let fe_addr = format!("{}:80", cluster_ip(&c, "frontend"));
    let host = get_ok(&fe_addr, "/config/BACKEND_SERVICE_HOST");
    assert_eq!(host, ip);
    assert_eq!(get_ok(&fe_addr, "/config/BACKEND_SERVICE_PORT"), "80");

    // 3 replicas share 3,000 requests fairly: each within ±20% of a third.
    let addr = format!("{ip}:80");
    get_ok(&addr, "/");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..3000 {
        let (code, body) = http_get(&addr, "/").unwrap();
        assert_eq!(code, 200);
        *counts.entry(pod_of(&body)).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (pod, n) in &counts {
        assert!((800..=1200).contains(n), "{pod} got {n} of 3000: {counts:?}");
    }

    // Pod addresses are in the cluster, open as in Kubernetes until a NetworkPolicy closes them.
    let direct = format!("/fetch?http://{}:8080/", backends[0]);
    assert_eq!(http_get(&fe_addr, &direct).unwrap(), (200, "fetched: 200".to_string()));
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec:\n  podSelector: {matchLabels: {app: backend}}\n";
    let f = d.join("deny.yaml");
    std::fs::write(&f, deny).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let mut last = (0, String::new());
    let closed = eventually(Duration::from_secs(20), || {
        last = http_get(&fe_addr, &direct).unwrap();
        last.0 == 502 && last.1.contains("HttpRequestDenied")
    });
    assert!(closed, "{last:?}");
    // The README's example: the frontend may call the backend again, by name and by address.
    apply_example(&c, "network-policy.yaml");
    c.ok(&["delete", "netpol", "deny"]);
    assert!(eventually(Duration::from_secs(20), || http_get(&fe_addr, &direct).unwrap().0 == 200));
    assert_eq!(http_get(&fe_addr, "/call/backend/").unwrap().0, 200);
    c.ok(&["delete", "netpol", "backend-from-frontend"]);

    // Headless, sticky and LoadBalancer Services.
    apply_example(&c, "kinds.yaml");
    let headless = get_json(&c, &["svc", "backend-headless"]).unwrap();
    assert_eq!(headless["spec"]["clusterIP"], "None");
    wait_endpoints(&c, "backend-headless", 3);
    wait_endpoints(&c, "backend-sticky", 3);
    let sticky = format!("{}:80", cluster_ip(&c, "backend-sticky"));
    let first = pod_of(&get_ok(&sticky, "/"));
    for _ in 0..50 {
        assert_eq!(pod_of(&http_get(&sticky, "/").unwrap().1), first, "ClientIP affinity");
    }
    let lb_ready = eventually(Duration::from_secs(20), || {
        get_json(&c, &["svc", "backend-lb"])
            .is_some_and(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"] == node.as_str())
    });
    assert!(lb_ready, "{:?}", get_json(&c, &["svc", "backend-lb"]));
    let lb = format!("{node}:18080");
    let body = get_ok(&lb, "/");
    assert!(body.starts_with("Hello from wasmorch! pod=backend-"), "{body}");
    // Round robin over the LoadBalancer: three requests, three replicas.
    let seen: std::collections::HashSet<String> = (0..3).map(|_| pod_of(&http_get(&lb, "/").unwrap().1)).collect();
    assert_eq!(seen.len(), 3, "{seen:?}");

    // Layer 4: a TCP echo server behind a Service, reached by a socket client inside a pod
    // through the cluster address (and refused a pod address it was not granted).
    let w = workloads();
    let echo = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: echo\n  labels: {{app: echo}}\nspec:\n  containers:\n    - name: echo\n      image: file://{}\n      ports: [{{containerPort: 7000}}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: echo\nspec:\n  selector: {{app: echo}}\n  ports: [{{name: tcp, port: 7000}}]\n",
        w.join("tcp-echo.wasm").display()
    );
    apply_text(&c, d, "echo", &echo);
    let echo_ip = wait_endpoints(&c, "echo", 1)[0].clone();
    {
        use std::io::{Read, Write};
        let addr = format!("{}:7000", cluster_ip(&c, "echo"));
        let mut s = None;
        assert!(eventually(Duration::from_secs(20), || {
            s = std::net::TcpStream::connect(&addr).ok();
            s.is_some()
        }));
        let mut s = s.unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"ping\n").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping\n");
    }
    let escaper = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: escaper\nspec:\n  restartPolicy: Never\n  containers:\n    - name: e\n      image: file://{}\n      env:\n        - {{name: ESCAPE_ADDR, value: \"$(ECHO_SERVICE_HOST):7000,{echo_ip}:7000\"}}\n",
        w.join("escaper.wasm").display()
    );
    apply_text(&c, d, "escaper", &escaper);
    let done = eventually(Duration::from_secs(60), || {
        get_json(&c, &["pod", "escaper"]).is_some_and(|p| p["status"]["phase"] == "Succeeded")
    });
    assert!(done, "{:?}", get_json(&c, &["pod", "escaper"]));
    let log = c.ok(&["logs", "escaper"]);
    let svc_ip = cluster_ip(&c, "echo");
    assert!(log.contains(&format!("reached tcp {svc_ip}:7000: connected")), "{log}");
    // A pod address is in the cluster: open, as in Kubernetes, until a NetworkPolicy closes it.
    assert!(log.contains(&format!("reached tcp {echo_ip}:7000: connected")), "{log}");
}

/// Requests keep succeeding while replicas go away: a replica deleted mid-load, then a
/// rolling update of the backend under wrk.
#[test]
fn no_request_is_lost_while_replicas_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (c, _) = cluster(d);
    apply_example(&c, "frontend-backend.yaml");
    wait_endpoints(&c, "backend", 3);
    let addr = format!("{}:80", cluster_ip(&c, "backend"));
    get_ok(&addr, "/");

    // Delete one replica while requests flow: every GET answers 200.
    let pods: Value = get_json(&c, &["pods", "-l", "app=backend"]).unwrap();
    let victim = pods["items"][0]["metadata"]["name"].as_str().unwrap().to_string();
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let loader = {
        let (addr, stop, done) = (addr.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match http_get(&addr, "/") {
                    Ok((200, _)) => drop(done.fetch_add(1, Ordering::Relaxed)),
                    other => bad.push(format!("{other:?}")),
                }
            }
            bad
        })
    };
    assert!(eventually(Duration::from_secs(10), || done.load(Ordering::Relaxed) > 20), "the load never started");
    c.ok(&["delete", "pod", &victim]);
    wait_endpoints(&c, "backend", 3);
    let before = done.load(Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(10), || done.load(Ordering::Relaxed) > before + 20));
    stop.store(true, Ordering::Relaxed);
    let bad = loader.join().unwrap();
    let ok = done.load(Ordering::Relaxed);
    assert!(bad.is_empty(), "{ok} ok, failures: {bad:?}");

    // A rolling update under steady load: no non-2xx response, no socket error.
    let wrk = std::process::Command::new("wrk").arg("--version").output();
    if wrk.is_err() {
        assert!(std::env::var("WASMORCH_REQUIRE_PEERS").is_err(), "wrk is required (apt-get install wrk)");
        eprintln!("SKIPPED: wrk not installed");
        return;
    }
    let url = format!("http://{addr}/");
    let load = std::process::Command::new("wrk")
        .args(["-t2", "-c16", "-d12s", "--latency", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.ok(&["rollout", "restart", "deployment/backend"]);
    let out = c.ok(&["rollout", "status", "deployment/backend", "--timeout", "60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = load.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    let requests = common::wrk_requests(&report);
    assert!(requests > 1000, "{report}");
    // Every replica was replaced while the load ran.
    let pods: Value = get_json(&c, &["pods", "-l", "app=backend"]).unwrap();
    let names: Vec<&str> =
        pods["items"].as_array().unwrap().iter().filter_map(|p| p["metadata"]["name"].as_str()).collect();
    assert!(!names.contains(&victim.as_str()));
}

/// Two node processes: the node port answers on both, and each reaches the replica on the
/// other node as well as its own.
#[test]
fn node_ports_answer_on_every_node_and_route_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = common::MultiNode::start(d, 2);
    let c = &m.cluster;
    apply_example(c, "frontend-backend.yaml");
    let eps = wait_endpoints(c, "backend", 3);
    wait_endpoints(c, "frontend", 1);
    let pods: Value = get_json(c, &["pods", "-l", "app=backend"]).unwrap();
    let nodes: std::collections::HashSet<&str> =
        pods["items"].as_array().unwrap().iter().filter_map(|p| p["spec"]["nodeName"].as_str()).collect();
    assert_eq!(nodes.len(), 2, "replicas spread over both nodes: {eps:?}");
    for addr in &m.addresses {
        let np = format!("{addr}:30080");
        let mut seen = std::collections::HashSet::new();
        let ok = eventually(Duration::from_secs(20), || {
            if let Ok((200, body)) = http_get(&np, "/call/backend/") {
                seen.insert(pod_of(&body));
            }
            seen.len() == 3
        });
        assert!(ok, "through {np} the frontend reached only {seen:?}");
    }
}

/// Scale to zero: an idle Deployment goes to zero replicas; the first request afterwards is
/// held by the proxy and answered 200 once a replica is up; so is a burst of 200 concurrent
/// requests; a workload whose pod cannot start gets a 503 naming the reason, not a hang.
#[test]
fn idle_deployments_sleep_and_requests_wake_them() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _node) = cluster_with(dir.path(), &["--metric-resolution", "1s"]);
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nap\n  annotations: {{wasmorch.io/scale-to-zero-after: 3s}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: nap}}}}\n  template:\n    metadata: {{labels: {{app: nap}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: main\n          image: file://{}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: nap}}\nspec:\n  selector: {{app: nap}}\n  ports: [{{port: 80, targetPort: 8080}}]\n",
        workloads().join("hello_http.wasm").display()
    );
    apply_text(&c, dir.path(), "nap", &yaml);
    wait_endpoints(&c, "nap", 2);
    let addr = format!("{}:80", cluster_ip(&c, "nap"));
    get_ok(&addr, "/");
    let replicas = || get_json(&c, &["deploy", "nap"]).and_then(|d| d["spec"]["replicas"].as_i64()).unwrap_or(-1);

    for round in 0..2 {
        // Idle: to zero, its pods gone, with an event saying why.
        let asleep = eventually(Duration::from_secs(60), || replicas() == 0 && ready_endpoints(&c, "nap").is_empty());
        assert!(asleep, "round {round}: still {} replicas", replicas());
        let pods_gone = eventually(Duration::from_secs(30), || {
            get_json(&c, &["pods", "-l", "app=nap"]).is_some_and(|l| l["items"].as_array().is_some_and(Vec::is_empty))
        });
        assert!(pods_gone, "{}", c.ok(&["get", "pods"]));
        let d = get_json(&c, &["deploy", "nap"]).unwrap();
        assert_eq!(d["metadata"]["annotations"]["wasmorch.io/replicas-before-zero"], "2");
        common::events_with(&c, &["--field-selector", "involvedObject.name=nap"], &["ScaledToZero"]);

        if round == 0 {
            // One request wakes it: 200, not 503.
            let (status, body) = http_get(&addr, "/").unwrap();
            assert_eq!(status, 200, "{body}");
            assert!(body.starts_with("Hello from wasmorch!"), "{body}");
        } else {
            // A burst of 200 at once: every one answered.
            let burst: Vec<_> = (0..200)
                .map(|_| {
                    let addr = addr.clone();
                    std::thread::spawn(move || http_get(&addr, "/").map(|r| r.0).unwrap_or(0))
                })
                .collect();
            let codes: Vec<u16> = burst.into_iter().map(|t| t.join().unwrap()).collect();
            assert!(codes.iter().all(|c| *c == 200), "{:?}", codes.iter().filter(|c| **c != 200).collect::<Vec<_>>());
        }
        assert_eq!(replicas(), 2, "woken to the replicas it had");
        common::events_with(&c, &["--field-selector", "involvedObject.name=nap"], &["Woken"]);
    }

    // A workload that cannot start, created asleep: 503 with the reason, well before the timeout.
    let broken = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\n  annotations: {wasmorch.io/scale-to-zero-after: 1m, wasmorch.io/scaled-to-zero-at: \"2026-01-01T00:00:00Z\", wasmorch.io/replicas-before-zero: \"1\"}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: broken}}\n  template:\n    metadata: {labels: {app: broken}}\n    spec:\n      containers:\n        - name: main\n          image: wasmorch.local/no-such-component:1.0\n---\napiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec:\n  selector: {app: broken}\n  ports: [{port: 80, targetPort: 8080}]\n";
    apply_text(&c, dir.path(), "broken", broken);
    let addr = format!("{}:80", cluster_ip(&c, "broken"));
    let mut last = None;
    let answered = eventually(Duration::from_secs(20), || {
        last = http_get(&addr, "/").ok();
        last.as_ref().is_some_and(|(s, b)| *s == 503 && b.contains("ErrImagePull"))
    });
    assert!(answered, "{last:?}");
    // And a Service with nothing asleep behind it still answers 503 at once.
    let plain = "apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec:\n  selector: {app: nobody}\n  ports: [{port: 80, targetPort: 8080}]\n";
    apply_text(&c, dir.path(), "empty", plain);
    let addr = format!("{}:80", cluster_ip(&c, "empty"));
    let ok = eventually(Duration::from_secs(20), || {
        http_get(&addr, "/").is_ok_and(|(s, b)| s == 503 && b.contains("no endpoints available"))
    });
    assert!(ok, "{:?}", http_get(&addr, "/"));
}
