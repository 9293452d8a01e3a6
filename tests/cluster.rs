//! Several node processes: node loss and return, cordon and drain.

mod common;

use common::{Cluster, MultiNode, eventually, get_json, workloads};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn deployment(c: &Cluster, dir: &Path, name: &str, replicas: u32) {
    deployment_of(c, dir, name, replicas, &format!("file://{}", workloads().join("hello_http.wasm").display()));
}

fn deployment_of(c: &Cluster, dir: &Path, name: &str, replicas: u32, image: &str) {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: main\n          image: \"{image}\"\n          ports: [{{containerPort: 8080}}]\n"
    );
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
}

/// The app's pods: name → (node, running and ready, being deleted, uid).
fn pods(c: &Cluster, app: &str) -> BTreeMap<String, (String, bool, bool, String)> {
    let list: Value = get_json(c, &["pods", "-l", &format!("app={app}")]).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let ready = p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true;
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                (
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    ready,
                    p["metadata"]["deletionTimestamp"].is_string(),
                    p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

fn node_status(c: &Cluster, node: &str) -> String {
    c.ok(&["get", "nodes"])
        .lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .and_then(|l| l.split_whitespace().nth(1).map(String::from))
        .unwrap_or_default()
}

#[test]
fn a_lost_node_s_pods_move_and_its_return_leaves_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut m = MultiNode::start(d, 2);
    let c = Cluster::attach(d);
    deployment(&c, d, "web", 4);
    let spread = eventually(Duration::from_secs(60), || {
        let p = pods(&c, "web");
        p.len() == 4 && p.values().all(|v| v.1) && p.values().any(|v| v.0 == "n2")
    });
    assert!(spread, "{:?}", pods(&c, "web"));

    // SIGKILL n2: its replicas run on n1 within the bound (grace 10 s + eviction 2 s).
    m.kill_node(1);
    let t = Instant::now();
    let moved = eventually(Duration::from_secs(40), || {
        let live: Vec<_> = pods(&c, "web").into_values().filter(|v| !v.2).collect();
        live.len() == 4 && live.iter().all(|v| v.0 == "n1" && v.1)
    });
    let took = t.elapsed();
    assert!(moved, "replicas did not move: {:?}", pods(&c, "web"));
    eprintln!("node lost → its pods Running elsewhere in {:.1} s", took.as_secs_f64());
    assert_eq!(node_status(&c, "n2"), "NotReady");
    let node = get_json(&c, &["node", "n2"]).unwrap();
    assert!(node["spec"]["taints"].to_string().contains("node.kubernetes.io/unreachable"), "{node}");

    // n2 comes back: the pods deleted while it was away stop and go; no duplicates remain.
    m.restart_node(1);
    let untainted = || !get_json(&c, &["node", "n2"]).unwrap()["spec"]["taints"].to_string().contains("unreachable");
    let clean = eventually(Duration::from_secs(40), || {
        let p = pods(&c, "web");
        node_status(&c, "n2") == "Ready" && untainted() && p.len() == 4 && p.values().all(|v| v.0 == "n1" && !v.2)
    });
    assert!(clean, "{:?} n2 {}", pods(&c, "web"), node_status(&c, "n2"));
}

#[test]
fn a_quick_node_restart_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A grace period above the nodes' 5 s renewal interval, shorter than the default.
    let mut m = MultiNode::start_with(d, 2, &["--node-monitor-grace-period", "7", "--pod-eviction-timeout", "1"]);
    let c = Cluster::attach(d);
    deployment(&c, d, "web", 4);
    assert!(eventually(Duration::from_secs(60), || {
        let p = pods(&c, "web");
        p.len() == 4 && p.values().all(|v| v.1) && p.values().any(|v| v.0 == "n2")
    }));
    let before = pods(&c, "web");
    m.kill_node(1);
    m.restart_node(1);
    // For longer than grace + eviction timeout, the same pods stay where they are.
    let deadline = Instant::now() + Duration::from_secs(9);
    while Instant::now() < deadline {
        let now = pods(&c, "web");
        let same =
            now.len() == 4 && now.iter().all(|(k, v)| before.get(k).is_some_and(|b| b.3 == v.3 && b.0 == v.0 && !v.2));
        assert!(same, "something moved:\nbefore {before:?}\nnow {now:?}");
        assert_ne!(node_status(&c, "n2"), "NotReady");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(eventually(Duration::from_secs(20), || pods(&c, "web").values().all(|v| v.1)), "{:?}", pods(&c, "web"));
}

#[test]
fn cordon_keeps_pods_off_and_drain_moves_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = MultiNode::start(d, 2);
    let c = &m.cluster;
    assert_eq!(c.ok(&["cordon", "n1"]), "node/n1 cordoned\n");
    assert_eq!(c.ok(&["cordon", "n1"]), "node/n1 already cordoned\n");
    assert_eq!(node_status(c, "n1"), "Ready,SchedulingDisabled");
    deployment(c, d, "web", 3);
    assert!(eventually(Duration::from_secs(60), || {
        let p = pods(c, "web");
        p.len() == 3 && p.values().all(|v| v.1)
    }));
    assert!(pods(c, "web").values().all(|v| v.0 == "n2"), "a pod landed on the cordoned node");
    assert_eq!(c.ok(&["uncordon", "n1"]), "node/n1 uncordoned\n");
    assert_eq!(node_status(c, "n1"), "Ready");

    // A DaemonSet pod on n2: drain refuses without --ignore-daemonsets.
    let ds = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      containers:\n        - name: main\n          image: file://{}\n          ports: [{{containerPort: 9090}}]\n",
        workloads().join("hello_http.wasm").display()
    );
    std::fs::write(d.join("ds.yaml"), ds).unwrap();
    c.ok(&["apply", "-f", d.join("ds.yaml").to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(60), || pods(c, "agent").values().filter(|v| v.1).count() == 2));
    let out = c.cli(&["drain", "n2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/agent-"),
        "{err}"
    );
    assert_eq!(node_status(c, "n2"), "Ready,SchedulingDisabled", "drain cordons first");

    // A disruption budget that allows nothing holds the drain up; one that allows one
    // replica at a time lets it through.
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  minAvailable: 3\n  selector: {matchLabels: {app: web}}\n";
    std::fs::write(d.join("pdb.yaml"), pdb).unwrap();
    c.ok(&["apply", "-f", d.join("pdb.yaml").to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(20), || {
        get_json(c, &["pdb", "web"])
            .is_some_and(|p| p["status"]["currentHealthy"] == 3 && p["status"]["disruptionsAllowed"] == 0)
    }));
    let out = c.cli(&["drain", "n2", "--ignore-daemonsets", "--timeout", "3s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Cannot evict pod as it would violate the pod's disruption budget"), "{err}");
    assert_eq!(pods(c, "web").len(), 3, "nothing was evicted");
    std::fs::write(d.join("pdb.yaml"), pdb.replace("minAvailable: 3", "minAvailable: 2")).unwrap();
    c.ok(&["apply", "-f", d.join("pdb.yaml").to_str().unwrap()]);
    let table = c.ok(&["get", "pdb"]);
    assert!(table.starts_with("NAME   MIN AVAILABLE   MAX UNAVAILABLE   ALLOWED DISRUPTIONS   AGE"), "{table}");

    let out = c.ok(&["drain", "n2", "--ignore-daemonsets", "--timeout", "90s"]);
    assert!(out.contains("evicting pod default/web-") && out.ends_with("node/n2 drained\n"), "{out}");
    assert!(out.contains("Warning: ignoring DaemonSet-managed Pods: default/agent-"), "{out}");
    let moved = eventually(Duration::from_secs(60), || {
        let p = pods(c, "web");
        p.len() == 3 && p.values().all(|v| v.0 == "n1" && v.1)
    });
    assert!(moved, "{:?}", pods(c, "web"));
    assert!(pods(c, "agent").values().any(|v| v.0 == "n2"), "the DaemonSet pod stays");
    assert_eq!(node_status(c, "n2"), "Ready,SchedulingDisabled");
}

#[test]
fn a_second_control_plane_waits_as_a_standby_and_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sdir = d.join("server");
    let args = ["server", "--listen", "127.0.0.1:0", "--data-dir", sdir.to_str().unwrap()];
    let mut leader = common::Daemon::spawn(&args);
    leader.wait_line("listening on https://");
    leader.wait_line("leading: ");
    let standby = common::Daemon::spawn(&args);
    standby.wait_line("standby: the store");
    std::fs::copy(sdir.join("admin.kubeconfig"), d.join("kubeconfig")).unwrap();
    let c = Cluster::attach(d);
    let renewed = || -> String {
        let l = get_json(&c, &["lease", "wasmorch-control-plane", "-n", "kube-system"]).unwrap();
        l["spec"]["renewTime"].as_str().unwrap_or("").to_string()
    };
    let first = renewed();
    assert!(eventually(Duration::from_secs(10), || renewed() != first), "the leader does not renew its Lease");
    let log = standby.log.lock().unwrap().join("\n");
    assert!(!log.contains("listening on") && !log.contains("leading:"), "the standby acted: {log}");

    // The leader dies; the standby takes the store, serves, and its controllers act.
    leader.kill();
    standby.wait_line("listening on https://");
    standby.wait_line("leading: ");
    std::fs::copy(sdir.join("admin.kubeconfig"), d.join("kubeconfig")).unwrap();
    deployment(&c, d, "after", 2);
    let acted = eventually(Duration::from_secs(20), || {
        get_json(&c, &["replicasets", "-l", "app=after"])
            .is_some_and(|l| l["items"].as_array().is_some_and(|i| i.len() == 1))
            && pods(&c, "after").len() == 2
    });
    assert!(acted, "the new leader's controllers did not act");
}

/// Node IPAM: `up` and two more node processes on one machine, all with default flags, get
/// distinct pod ranges; a 6-replica Deployment on port 8080 runs with no address clash; a
/// range cannot be changed, and a deleted Node's range goes to the next node.
#[test]
fn node_processes_on_one_machine_get_their_own_pod_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The only test on the default cluster range (the others each take a range of their own).
    let c = Cluster::start_with(d, &["--node-name", "n1"]);
    let node = |name: &str| common::Daemon::node(&c, d, name);
    let _n2 = node("n2");
    let mut n3 = node("n3");
    let cidr = |n: &str| get_json(&c, &["node", n]).and_then(|o| o["spec"]["podCIDR"].as_str().map(String::from));
    let all_ready = || {
        c.ok(&["get", "nodes"]).lines().filter(|l| l.split_whitespace().nth(1) == Some("Ready")).count() == 3
            && ["n1", "n2", "n3"].iter().all(|n| cidr(n).is_some())
    };
    assert!(eventually(Duration::from_secs(30), all_ready), "{}", c.ok(&["get", "nodes"]));
    let ranges: BTreeMap<String, String> =
        ["n1", "n2", "n3"].iter().map(|n| (n.to_string(), cidr(n).unwrap())).collect();
    let mut blocks: Vec<&String> = ranges.values().collect();
    blocks.sort();
    assert_eq!(blocks, ["127.64.0.0/20", "127.64.16.0/20", "127.64.32.0/20"], "{ranges:?}");
    let n = get_json(&c, &["node", "n2"]).unwrap();
    assert_eq!(n["spec"]["podCIDRs"], serde_json::json!([ranges["n2"]]));

    deployment(&c, d, "web", 6);
    let running = || {
        let pods = get_json(&c, &["pods", "-l", "app=web"]).unwrap_or(Value::Null);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let ok = items.len() == 6 && items.iter().all(|p| p["status"]["containerStatuses"][0]["ready"] == true);
        ok.then_some(items)
    };
    assert!(eventually(Duration::from_secs(60), || running().is_some()), "{}", c.ok(&["get", "pods", "-o", "wide"]));
    let pods = running().unwrap();
    let mut ips: Vec<&str> = pods.iter().map(|p| p["status"]["podIP"].as_str().unwrap()).collect();
    for p in &pods {
        let (ip, node) = (p["status"]["podIP"].as_str().unwrap(), p["spec"]["nodeName"].as_str().unwrap());
        let range: wasmorch_api::services::IpRange = ranges[node].parse().unwrap();
        assert!(range.contains(ip.parse().unwrap()), "pod {ip} on {node} outside its range {range}");
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "addresses clash: {ips:?}");

    // A range is the node's for its life.
    let kc = c.kubeconfig();
    let patch = std::process::Command::new("kubectl")
        .args(["patch", "node", "n2", "-p", r#"{"spec":{"podCIDR":"127.64.48.0/20"}}"#])
        .env("KUBECONFIG", &kc)
        .output();
    if let Ok(out) = patch {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("field is immutable"), "{err}");
    }
    assert_eq!(cidr("n2").as_deref(), Some(ranges["n2"].as_str()));

    // n3 leaves and its Node is deleted: the next node gets its range.
    n3.kill();
    c.ok(&["delete", "node", "n3"]);
    let _n4 = node("n4");
    assert!(eventually(Duration::from_secs(30), || cidr("n4").is_some()));
    assert_eq!(cidr("n4"), Some(ranges["n3"].clone()));
}

const MAPPED: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: file://DIR/hello_http.wasm
          ports: [{containerPort: 8080}]
          readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: echo}
spec:
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: file://DIR/tcp-echo.wasm
          ports: [{containerPort: 7000}]
          readinessProbe: {tcpSocket: {port: 7000}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: front}
spec:
  replicas: 1
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {kubernetes.io/hostname: n1}
      containers:
        - name: main
          image: file://DIR/sdk_demo.wasm
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 7000}]
---
apiVersion: v1
kind: Service
metadata: {name: front}
spec:
  type: NodePort
  selector: {app: front}
  ports: [{port: 80, targetPort: 8080, nodePort: 30082}]
";

/// Mapped pod ports (`--pod-addressing mapped`, the scheme for macOS, where only 127.0.0.1
/// is local), tried on Linux with two node processes: no socket listens on a pod address,
/// yet probes pass, Services reach pods on both nodes (the other one through its gateway),
/// and a pod's sockets reach pod addresses, cluster addresses and Service names.
#[test]
fn mapped_pod_ports_serve_pods_and_services_without_their_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let m = MultiNode::start_full(dir.path(), 2, &[], &["--pod-addressing", "mapped"]);
    let c = &m.cluster;
    let node: Value = get_json(c, &["node", "n1"]).unwrap();
    assert_eq!(node["metadata"]["annotations"]["wasmorch.io/pod-addressing"], "mapped");
    let f = dir.path().join("mapped.yaml");
    std::fs::write(&f, MAPPED.replace("DIR", &workloads().display().to_string())).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let ready = |app: &str, n: usize| {
        let p = pods(c, app);
        p.len() == n && p.values().all(|v| v.1)
    };
    let all = eventually(Duration::from_secs(60), || ready("web", 2) && ready("echo", 2) && ready("front", 1));
    assert!(all, "{}", c.ok(&["get", "pods", "-o", "wide"]));
    let ips = |app: &str| -> Vec<String> {
        let list: Value = get_json(c, &["pods", "-l", &format!("app={app}")]).unwrap();
        list["items"].as_array().unwrap().iter().map(|p| p["status"]["podIP"].as_str().unwrap().to_string()).collect()
    };

    // Nothing of this machine listens on a pod address: the probes reached the pods' real sockets.
    for (app, port) in [("web", 8080), ("echo", 7000)] {
        for ip in ips(app) {
            let r =
                std::net::TcpStream::connect_timeout(&format!("{ip}:{port}").parse().unwrap(), Duration::from_secs(2));
            assert!(r.is_err(), "{app} pod {ip}:{port} has a socket of its own");
        }
    }

    // A NodePort on n1 reaches the web pods of both nodes (n2's through its gateway).
    let web = format!("{}:30081", m.addresses[0]);
    let mut seen = std::collections::BTreeSet::new();
    let both = eventually(Duration::from_secs(30), || {
        if let Ok((200, body)) = common::http_get(&web, "/") {
            seen.extend(body.split_whitespace().filter_map(|w| w.strip_prefix("pod=")).map(String::from));
        }
        seen.len() == 2
    });
    assert!(both, "answered by {seen:?}");

    // The front pod's sockets: to each echo pod by address (one here, one on n2), to the
    // echo Service's cluster address and by its name; the socket names the address it asked for.
    let front = format!("{}:30082", m.addresses[0]);
    let svc: Value = get_json(c, &["svc", "echo"]).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    for ip in ips("echo") {
        let got = common::http_get(&front, &format!("/connect?{ip}:7000&peer")).unwrap();
        assert_eq!(got, (200, format!("connected: ping (peer {ip}:7000)")), "to echo pod {ip}");
    }
    let got = common::http_get(&front, &format!("/connect?{cluster_ip}:7000&peer")).unwrap();
    assert_eq!(got, (200, format!("connected: ping (peer {cluster_ip}:7000)")), "to the cluster address");
    assert_eq!(common::http_get(&front, "/connect?echo:7000").unwrap(), (200, "connected: ping".to_string()));
    // And its wasi:http reaches the web Service.
    let (status, body) = common::http_get(&front, "/call/web/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("web said: Hello from wasmorch!"), "{body}");
}

/// Two servers on one etcd: the second adopts the first's CA and keys (never its own), both
/// serve the same objects; when the leader is killed, the node (given both servers) moves to
/// the other while its pods keep serving a NodePort without one failed request, and the
/// other server takes the Lease over: its controllers and scheduler run a new Deployment.
#[cfg(feature = "etcd")]
#[test]
fn servers_on_etcd_share_the_cluster_and_a_standby_takes_over() {
    use wasmorch_control::store::etcd::testing;
    if !testing::required() {
        return;
    }
    let etcd = testing::Member::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n0: u32 = common::pod_ip_prefix().rsplit('.').next().unwrap().parse().unwrap();
    let (services, pods_cidr) = (format!("127.{}.0.0/16", n0 + 100), common::cluster_cidr());
    let server = |name: &str, extra: &[&str]| {
        let sdir = d.join(name);
        let mut args = vec![
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            sdir.to_str().unwrap(),
            "--datastore-endpoint",
            &etcd.client_url,
            "--leader-elect-lease-duration",
            "3s",
            "--service-cidr",
            &services,
            "--cluster-cidr",
            &pods_cidr,
        ];
        args.extend_from_slice(extra);
        let s = common::Daemon::spawn(&args);
        let line = s.wait_line("listening on https://");
        (s, line.split("listening on ").nth(1).unwrap().trim().to_string())
    };
    let (mut a, _) = server("a", &[]);
    a.wait_line("leading: ");
    let token = std::fs::read_to_string(d.join("a/server.token")).unwrap();
    let (b, b_url) = server("b", &["--token", token.trim()]);
    b.wait_line("joined the cluster in the datastore");
    b.wait_line("standby: control plane");
    for f in ["pki/ca.crt", "pki/sa.key", "state.key", "admin.token"] {
        assert_eq!(std::fs::read(d.join("a").join(f)).unwrap(), std::fs::read(d.join("b").join(f)).unwrap(), "{f}");
    }
    // Each server's clients, one cluster: a write through A is read through B.
    let (ca, cb) = (d.join("ca"), d.join("cb"));
    for (c, s) in [(&ca, "a"), (&cb, "b")] {
        std::fs::create_dir_all(c).unwrap();
        std::fs::copy(d.join(s).join("admin.kubeconfig"), c.join("kubeconfig")).unwrap();
    }
    let (via_a, via_b) = (Cluster::attach(&ca), Cluster::attach(&cb));
    // And a client given both servers, A first (`config set-servers`): kubectl's `server` is A.
    let cboth = d.join("cboth");
    std::fs::create_dir_all(&cboth).unwrap();
    std::fs::copy(d.join("a/admin.kubeconfig"), cboth.join("kubeconfig")).unwrap();
    let via_both = Cluster::attach(&cboth);
    let cm = d.join("cm.yaml");
    std::fs::write(&cm, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: through-a}\ndata: {k: v}\n").unwrap();
    via_a.ok(&["apply", "-f", cm.to_str().unwrap()]);
    assert!(via_b.ok(&["get", "configmap", "through-a", "-o", "name"]).contains("configmap/through-a"));
    // A node told of A alone: it learns B from the `kubernetes` Service's endpoints, where
    // every live server keeps itself listed.
    let a_url = a.wait_line("listening on https://").split("listening on ").nth(1).unwrap().trim().to_string();
    let join = std::fs::read_to_string(d.join("b/join.token")).unwrap();
    let address = format!("{}.255.254", common::pod_ip_prefix());
    let ndir = d.join("node1");
    let both = format!("{a_url},{b_url}");
    via_both.ok(&["config", "set-servers", &both]);
    let kc = std::fs::read_to_string(cboth.join("kubeconfig")).unwrap();
    assert!(kc.contains(&format!("server: {a_url}")) && kc.contains("wasmorch.io/servers"), "{kc}");
    assert!(via_both.ok(&["get", "configmap", "through-a", "-o", "name"]).contains("configmap/through-a"));
    let node = common::Daemon::spawn(&[
        "node",
        "--server",
        &a_url,
        "--token",
        join.trim(),
        "--name",
        "n1",
        "--data-dir",
        ndir.to_str().unwrap(),
        "--backoff-base",
        "1",
        "--address",
        &address,
    ]);
    let ready = eventually(Duration::from_secs(30), || via_b.ok(&["get", "nodes"]).contains(" Ready "));
    assert!(ready, "the node did not become Ready: {}", via_b.ok(&["get", "nodes"]));
    let endpoints = |c: &Cluster| get_json(c, &["endpoints", "kubernetes"]).unwrap_or_default();
    let listed =
        eventually(Duration::from_secs(20), || wasmorch_api::services::api_server_urls(&endpoints(&via_a)).len() == 2);
    assert!(listed, "the kubernetes Service does not list both servers: {}", endpoints(&via_a));
    // An image pushed through A is copied to B at once (and pulled through B once A is gone).
    let image = format!("{}/demo/ha:1.0", a_url.trim_start_matches("https://"));
    let pushed = via_a.ok(&["push", workloads().join("hello_http.wasm").to_str().unwrap(), &image]);
    assert!(pushed.contains("pushed"), "{pushed}");
    let copied = eventually(Duration::from_secs(20), || {
        std::fs::read_dir(d.join("b/registry/repos/demo/ha/_manifests")).is_ok_and(|mut e| e.next().is_some())
    });
    assert!(copied, "the image pushed through A was not copied to B");
    // A replica behind a NodePort, served by the node whichever server it talks to.
    deployment(&via_a, d, "before", 1);
    let svc = d.join("svc.yaml");
    std::fs::write(
        &svc,
        "apiVersion: v1\nkind: Service\nmetadata: {name: before}\nspec:\n  type: NodePort\n  selector: {app: before}\n  ports: [{port: 80, targetPort: 8080}]\n",
    )
    .unwrap();
    via_a.ok(&["apply", "-f", svc.to_str().unwrap()]);
    let port = get_json(&via_a, &["service", "before"]).unwrap()["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let target = format!("{address}:{port}");
    let serving = eventually(Duration::from_secs(30), || matches!(common::http_get(&target, "/"), Ok((200, _))));
    assert!(serving, "the NodePort did not answer");
    // The leader dies without releasing its Lease: the node moves to B, and B takes over the
    // Lease after its duration. Requests to the NodePort go on meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, target) = (stop.clone(), target.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match common::http_get(&target, "/") {
                    Ok((200, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    a.kill();
    b.wait_line("leading: ");
    // To B, which it was never told of.
    let switched = node.wait_line("API server unreachable: switched");
    assert!(switched.contains(&b_url), "{switched}");
    // The dead server leaves the endpoints once its Lease expires (15 s).
    let b_only = eventually(Duration::from_secs(40), || {
        wasmorch_api::services::api_server_urls(&endpoints(&via_b)) == [b_url.clone()]
    });
    assert!(b_only, "the dead server is still listed: {}", endpoints(&via_b));
    // The client that lists both servers goes on working through B.
    assert!(via_both.ok(&["get", "configmap", "through-a", "-o", "name"]).contains("configmap/through-a"));
    deployment(&via_b, d, "after", 2);
    let running = eventually(Duration::from_secs(30), || {
        let p = pods(&via_b, "after");
        p.len() == 2 && p.values().all(|(node, ready, _, _)| node == "n1" && *ready)
    });
    assert!(running, "the new leader did not run the Deployment: {:?}", pods(&via_b, "after"));
    // The image pushed through the dead server, named by its address, comes from B.
    deployment_of(&via_b, d, "pulled", 1, &image);
    let pulled = eventually(Duration::from_secs(30), || {
        let p = pods(&via_b, "pulled");
        p.len() == 1 && p.values().all(|(_, ready, _, _)| *ready)
    });
    assert!(
        pulled,
        "the pushed image did not run through B: {}",
        via_b.ok(&["get", "pods", "-l", "app=pulled", "-o", "yaml"])
    );
    // The node's heartbeats go on, through B.
    let renewed = || -> String {
        let l = get_json(&via_b, &["lease", "n1", "-n", "kube-node-lease"]).unwrap_or_default();
        l["spec"]["renewTime"].as_str().unwrap_or("").to_string()
    };
    let first = renewed();
    assert!(eventually(Duration::from_secs(20), || renewed() != first), "the node's heartbeats stopped");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(ok > 0 && failed.is_empty(), "{ok} requests answered, failed: {failed:?}");
    eprintln!("NodePort during the server failover: {ok} requests, none failed");

    // A backup through the survivor restores into a fresh etcd: a server there (with the
    // cluster's sealing key and server token) serves the same objects.
    let snapshot = d.join("snapshot.redb");
    via_b.ok(&["backup", snapshot.to_str().unwrap()]);
    let fresh = testing::Member::start().unwrap();
    let cdir = d.join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    for f in ["state.key", "server.token"] {
        std::fs::copy(d.join("b").join(f), cdir.join(f)).unwrap();
    }
    let c = common::Daemon::spawn(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        cdir.to_str().unwrap(),
        "--datastore-endpoint",
        &fresh.client_url,
        "--restore",
        snapshot.to_str().unwrap(),
    ]);
    c.wait_line("restored ");
    c.wait_line("listening on https://");
    assert_eq!(std::fs::read(cdir.join("pki/ca.crt")).unwrap(), std::fs::read(d.join("b/pki/ca.crt")).unwrap());
    let cc = d.join("cc");
    std::fs::create_dir_all(&cc).unwrap();
    std::fs::copy(cdir.join("admin.kubeconfig"), cc.join("kubeconfig")).unwrap();
    let via_c = Cluster::attach(&cc);
    assert!(via_c.ok(&["get", "configmap", "through-a", "-o", "name"]).contains("configmap/through-a"));
    assert!(via_c.ok(&["get", "deployments", "-o", "name"]).contains("deployment.apps/after"));
}
