//! Cluster networking across machines. Machines are network namespaces this test makes
//! (see `common::netns`): the control plane on machine 0, node `n<i>` on machine `i`. Pod
//! addresses are loopback addresses of their machine, so a pod on another machine is
//! reachable only through its node's gateway.

mod common;

use common::net::Net;
use common::netns::available;
use common::{Daemon, eventually, workloads};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const BACKEND: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: backend}
spec:
  replicas: 3
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: backend}}}
      containers:
        - name: main
          image: file://WASM
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  type: NodePort
  selector: {app: backend}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
";

const FRONT: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: front}
spec:
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: file://WASM
          ports: [{containerPort: 8080}]
";

/// The backend manifest with its replicas pinned to one node instead of spread.
fn pinned(yaml: &str, node: &str) -> String {
    let spread = yaml.find("      topologySpreadConstraints:\n").expect("a spread manifest");
    let end = spread + yaml[spread..].find("}}}\n").expect("the constraint's end") + 4;
    format!("{}      nodeSelector: {{kubernetes.io/hostname: {node}}}\n{}", &yaml[..spread], &yaml[end..])
}

/// Which backend pod answered, from `… pod=<name> …`.
fn answered_by(body: &str) -> Option<String> {
    body.split_whitespace().find_map(|w| w.strip_prefix("pod=")).map(String::from)
}

/// Open a gateway stream to `target` at node `to`'s gateway, presenting `cert`/`key`; the
/// first line of the answer, or why TLS failed.
fn gateway_probe(net: &Net, from: usize, to: &str, cert: &str, key: &str, target: &str) -> String {
    const SCRIPT: &str = r#"
import socket, ssl, sys
host, port, name, ca, cert, key, target = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
try:
    s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=name)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.lower().split(b"\r\n") if l.startswith(b"content-length:")]
    while length and len(body) < length[0]:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    print(head.split(b"\r\n")[0].decode(), body.decode(errors="replace").strip())
except (ssl.SSLError, ConnectionError, OSError) as e:
    print("TLS refused:", e)
"#;
    let (ip, port) = net.gateway_of(to);
    let ca = net.dir.path().join("n1/pki/ca.crt");
    let out = net.m.run(
        from,
        "python3",
        &["-c", SCRIPT, &ip, &port.to_string(), to, ca.to_str().unwrap(), cert, key, target],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn services_span_machines_through_the_node_gateways() {
    if !available() {
        return;
    }
    let mut net = Net::start("gw", 3);
    let w = workloads();
    net.apply(&BACKEND.replace("WASM", &w.join("hello_http.wasm").display().to_string()));
    net.apply(&FRONT.replace("WASM", &w.join("sdk_demo.wasm").display().to_string()));
    let settled = eventually(Duration::from_secs(90), || {
        let b = net.pods("app=backend");
        let f = net.pods("app=front");
        let nodes: std::collections::BTreeSet<&str> = b.values().map(|v| v.0.as_str()).collect();
        b.len() == 3 && nodes.len() == 3 && f.len() == 3 && b.values().chain(f.values()).all(|v| v.2)
    });
    assert!(settled, "{:?} {:?}", net.pods("app=backend"), net.pods("app=front"));
    let backends = net.pods("app=backend");
    let fronts = net.pods("app=front");
    let svc: Value = serde_json::from_str(&net.get(&["get", "svc", "backend", "-o", "json"]).unwrap()).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();

    // From a pod on each machine: the Service by name (wasi:http) and by its cluster address.
    let mut share: BTreeMap<String, usize> = BTreeMap::new();
    for i in 1..=3 {
        let node = format!("n{i}");
        let (_, (_, front_ip, _)) = fronts.iter().find(|(_, v)| v.0 == node).unwrap();
        let mut urls: Vec<String> = (0..30).map(|_| format!("http://{front_ip}:8080/call/backend/")).collect();
        urls.push(format!("http://{front_ip}:8080/fetch?http://{cluster_ip}/"));
        let answers = net.m.get_all(i, &urls);
        for (status, body) in &answers[..30] {
            assert_eq!(*status, 200, "from {node}: {body}");
            *share.entry(answered_by(body).unwrap_or_else(|| panic!("{body}"))).or_default() += 1;
        }
        assert_eq!(answers[30], (200, "fetched: 200".to_string()), "cluster address from {node}");
    }
    eprintln!("calls from pods per backend: {share:?}");
    assert_eq!(share.keys().cloned().collect::<Vec<_>>(), backends.keys().cloned().collect::<Vec<_>>());
    assert!(share.values().all(|n| *n >= 15), "every replica gets a fair share of 90: {share:?}");

    // By NodePort on each machine's address, from the control plane's machine.
    let mut share: BTreeMap<String, usize> = BTreeMap::new();
    let urls: Vec<String> =
        (1..=3).flat_map(|i| (0..20).map(move |_| i)).map(|i| format!("http://{}:30080/", net.m.addrs[i])).collect();
    for (status, body) in net.m.get_all(0, &urls) {
        assert_eq!(status, 200, "{body}");
        *share.entry(answered_by(&body).unwrap()).or_default() += 1;
    }
    eprintln!("node port calls per backend: {share:?}");
    assert!(share.len() == 3 && share.values().all(|n| *n >= 10), "{share:?}");

    // The gateway: a node's certificate opens streams only to pods the callee runs.
    let pki = |n: &str| {
        let d = net.dir.path().join(n).join("pki");
        (d.join("node.crt").display().to_string(), d.join("node.key").display().to_string())
    };
    let (c1, k1) = pki("n1");
    let on = |n: &str| backends.values().find(|v| v.0 == n).map(|v| format!("{}:8080", v.1)).unwrap();
    let ok = gateway_probe(&net, 1, "n2", &c1, &k1, &on("n2"));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let elsewhere = gateway_probe(&net, 1, "n2", &c1, &k1, &on("n1"));
    assert!(elsewhere.contains("403") && elsewhere.contains("runs no pod"), "{elsewhere}");
    // A certificate not from the cluster CA does not get past TLS.
    let fake = net.dir.path().join("fake");
    std::fs::create_dir_all(&fake).unwrap();
    let (fc, fk) = (fake.join("c.pem").display().to_string(), fake.join("k.pem").display().to_string());
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=system:node:n1", "-keyout", &fk, "-out", &fc])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let forged = gateway_probe(&net, 1, "n2", &fc, &fk, &on("n2"));
    assert!(forged.starts_with("TLS refused"), "{forged}");
    // A node that is no longer a Node of the cluster is refused, certificate or not.
    net.nodes[2] = None;
    net.get(&["delete", "node", "n3"]).expect("delete node");
    let (c3, k3) = pki("n3");
    let gone = eventually(Duration::from_secs(20), || {
        gateway_probe(&net, 3, "n2", &c3, &k3, &on("n2")).contains("not a node of this cluster")
    });
    assert!(gone, "{}", gateway_probe(&net, 3, "n2", &c3, &k3, &on("n2")));
}

/// Requests from machine `i` to `url`, one after another, until `stop` exists; prints
/// `{"ok": n, "failed": [..]}`.
const LOAD: &str = r#"
import json, os, sys, time, urllib.request, urllib.error
url, stop = sys.argv[1], sys.argv[2]
ok, failed = 0, []
while not os.path.exists(stop):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
            ok += 1
    except urllib.error.HTTPError as e:
        failed.append("%d %s" % (e.code, e.read().decode(errors="replace").strip()))
    except Exception as e:
        failed.append(str(e))
print(json.dumps({"ok": ok, "failed": failed[:20], "failures": len(failed)}))
"#;

#[test]
fn a_rolling_update_on_another_machine_loses_no_request() {
    if !available() {
        return;
    }
    let net = Net::start("roll", 2);
    let yaml = pinned(&BACKEND.replace("WASM", &workloads().join("hello_http.wasm").display().to_string()), "n2");
    assert!(yaml.contains("nodeSelector"));
    net.apply(&yaml);
    let ready = |n: usize| {
        let p = net.pods("app=backend");
        p.len() == n && p.values().all(|v| v.0 == "n2" && v.2)
    };
    assert!(eventually(Duration::from_secs(60), || ready(3)), "{:?}", net.pods("app=backend"));
    let before: Vec<String> = net.pods("app=backend").into_keys().collect();

    // Steady load from machine 1 through its own node port: every request crosses to n2.
    let stop = net.dir.path().join("stop-load");
    let url = format!("http://{}:30080/", net.m.addrs[1]);
    let load = std::process::Command::new("ip")
        .args(["netns", "exec", &net.m.names[1], "python3", "-c", LOAD, &url, stop.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let answered = eventually(Duration::from_secs(20), || net.m.get_all(1, std::slice::from_ref(&url))[0].0 == 200);
    assert!(answered, "{:?}", net.m.get_all(1, std::slice::from_ref(&url)));
    net.get(&["rollout", "restart", "deployment/backend"]).expect("rollout restart");
    let replaced = eventually(Duration::from_secs(90), || {
        let p = net.pods("app=backend");
        ready(3) && p.keys().all(|k| !before.contains(k))
    });
    std::fs::write(&stop, "").unwrap();
    let out = load.wait_with_output().unwrap();
    assert!(replaced, "{:?}", net.pods("app=backend"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("rolling update under load from another machine: {v}");
    assert!(v["ok"].as_u64().unwrap() > 20, "{v}");
    assert_eq!(v["failures"], 0, "{v}");
}

const ECHO: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {kubernetes.io/hostname: n2}
      containers:
        - name: main
          image: file://WASM
          ports: [{containerPort: 7000}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{name: tcp, port: 7000, nodePort: 30070}]
";

/// Send `line` over TCP to `addr` from machine `i`; what came back.
fn echo(net: &Net, i: usize, addr: &str, line: &str) -> String {
    const SCRIPT: &str = r#"
import socket, sys
host, port, line = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(line.encode())
    got = b""
    while len(got) < len(line):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    print(got.decode(errors="replace"))
except Exception as e:
    print("error:", e)
"#;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = net.m.run(i, "python3", &["-c", SCRIPT, host, port, line]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn peer_routes(net: &Net, node: &str) -> String {
    net.node_json(node)["metadata"]["annotations"]["wasmorch.io/peer-routes"].as_str().unwrap_or("").to_string()
}

#[test]
fn nodes_that_cannot_reach_each_other_are_relayed_until_the_direct_path_returns() {
    if !available() {
        return;
    }
    let net = Net::start("relay", 2);
    // Machines 1 and 2 reach the control plane's machine, not each other.
    net.m.cut(1, 2, true);
    let w = workloads();
    let web = pinned(&BACKEND.replace("WASM", &w.join("hello_http.wasm").display().to_string()), "n2");
    net.apply(&web);
    net.apply(&ECHO.replace("WASM", &w.join("tcp-echo.wasm").display().to_string()));
    let ready = eventually(Duration::from_secs(60), || {
        let (b, e) = (net.pods("app=backend"), net.pods("app=echo"));
        b.len() == 3 && e.len() == 2 && b.values().chain(e.values()).all(|v| v.0 == "n2" && v.2)
    });
    assert!(ready, "{:?} {:?}", net.pods("app=backend"), net.pods("app=echo"));

    // From machine 1, through its own node's ports, to replicas only on machine 2.
    let web_url = format!("http://{}:30080/", net.m.addrs[1]);
    let echo_addr = format!("{}:30070", net.m.addrs[1]);
    let urls: Vec<String> = (0..20).map(|_| web_url.clone()).collect();
    let served = eventually(Duration::from_secs(30), || net.m.get_all(1, &urls).iter().all(|(s, _)| *s == 200));
    assert!(served, "{:?}", net.m.get_all(1, &urls[..1]));
    assert_eq!(echo(&net, 1, &echo_addr, "over the relay"), "over the relay");
    assert!(
        eventually(Duration::from_secs(10), || peer_routes(&net, "n1") == "n2=relay"),
        "{:?}",
        peer_routes(&net, "n1")
    );
    let described = net.get(&["describe", "node", "n1"]).unwrap_or_default();
    assert!(described.contains("n2=relay"), "{described}");

    // The link comes back: new streams go direct.
    net.m.cut(1, 2, false);
    assert!(
        eventually(Duration::from_secs(30), || {
            let _ = net.m.get_all(1, &urls[..2]);
            peer_routes(&net, "n1") == "n2=direct"
        }),
        "{:?}",
        peer_routes(&net, "n1")
    );
    assert!(net.m.get_all(1, &urls).iter().all(|(s, _)| *s == 200));
    assert_eq!(echo(&net, 1, &echo_addr, "direct again"), "direct again");

    // Cut while the pooled direct connection looks alive: a stream that gets no answer from
    // the gateway goes through the relay at once (3 s), within the client's 5 s, instead of
    // waiting for the keep-alive to find the connection dead (about 8 s).
    net.m.cut(1, 2, true);
    assert_eq!(echo(&net, 1, &echo_addr, "cut mid-use"), "cut mid-use");
    assert!(
        eventually(Duration::from_secs(10), || peer_routes(&net, "n1") == "n2=relay"),
        "{:?}",
        peer_routes(&net, "n1")
    );
}

const HEADLESS: &str = "apiVersion: v1
kind: Service
metadata: {name: echo-pods}
spec:
  clusterIP: None
  selector: {app: echo}
  ports: [{name: tcp, port: 7000}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: echo-closed}
spec:
  podSelector: {matchLabels: {app: echo}}
  policyTypes: [Ingress]
";

#[test]
fn pod_sockets_reach_pod_addresses_on_other_machines_and_headless_names_give_every_pod() {
    if !available() {
        return;
    }
    let net = Net::start("sock", 2);
    let w = workloads();
    net.apply(&ECHO.replace("WASM", &w.join("tcp-echo.wasm").display().to_string()));
    net.apply(&FRONT.replace("WASM", &w.join("sdk_demo.wasm").display().to_string()));
    let (headless, closed) = HEADLESS.split_once("---\n").unwrap();
    net.apply(headless);
    let ready = eventually(Duration::from_secs(60), || {
        let (e, f) = (net.pods("app=echo"), net.pods("app=front"));
        e.len() == 2 && f.len() == 2 && e.values().all(|v| v.0 == "n2") && e.values().chain(f.values()).all(|v| v.2)
    });
    assert!(ready, "{:?} {:?}", net.pods("app=echo"), net.pods("app=front"));
    let echoes: Vec<String> = net.pods("app=echo").into_values().map(|v| v.1).collect();
    let front = |n: &str| net.pods("app=front").into_values().find(|v| v.0 == n).map(|v| v.1).unwrap();
    let (front1, front2) = (front("n1"), front("n2"));
    let svc: Value = serde_json::from_str(&net.get(&["get", "svc", "echo", "-o", "json"]).unwrap()).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();

    // Names: a headless Service stands for every ready pod, a Service for its cluster address.
    let mut sorted = echoes.clone();
    sorted.sort();
    let names = eventually(Duration::from_secs(20), || {
        net.m.get_all(1, &[format!("http://{front1}:8080/resolve?echo-pods")])[0] == (200, sorted.join(","))
    });
    assert!(names, "{:?}", net.m.get_all(1, &[format!("http://{front1}:8080/resolve?echo-pods.default.svc")]));
    let urls = [format!("http://{front1}:8080/resolve?echo.default.svc.cluster.local")];
    assert_eq!(net.m.get_all(1, &urls)[0], (200, cluster_ip));

    // A socket from machine 1 to each pod address on machine 2 (through n2's gateway), by
    // name too; the socket says it reached the address it asked for. From machine 2: local.
    let mut urls: Vec<String> =
        echoes.iter().map(|ip| format!("http://{front1}:8080/connect?{ip}:7000&peer")).collect();
    urls.push(format!("http://{front1}:8080/connect?echo-pods:7000"));
    let got = net.m.get_all(1, &urls);
    for (ip, answer) in echoes.iter().zip(&got) {
        assert_eq!(*answer, (200, format!("connected: ping (peer {ip}:7000)")), "to {ip} from machine 1");
    }
    assert_eq!(got[2], (200, "connected: ping".to_string()), "by headless name");
    let local = net.m.get_all(2, &[format!("http://{front2}:8080/connect?{}:7000", echoes[0])]);
    assert_eq!(local[0], (200, "connected: ping".to_string()));

    // NetworkPolicy judges them: ingress to the echo pods closed, the socket is refused.
    net.apply(closed);
    let refused = eventually(Duration::from_secs(20), || {
        let got = net.m.get_all(1, &urls[..1]);
        got[0].0 == 502 && got[0].1.contains("connect")
    });
    assert!(refused, "{:?}", net.m.get_all(1, &urls[..1]));
    net.get(&["delete", "networkpolicy", "echo-closed"]).expect("delete the policy");
    let open = eventually(Duration::from_secs(20), || net.m.get_all(1, &urls[..1])[0].0 == 200);
    assert!(open, "{:?}", net.m.get_all(1, &urls[..1]));
}

/// wrk from machine `i`: (requests/s, p50 ms, p99 ms, non-2xx + socket errors).
fn wrk(net: &Net, i: usize, conns: usize, secs: u64, url: &str) -> (f64, f64, f64, u64) {
    let c = conns.to_string();
    let d = format!("{secs}s");
    let out = net.m.run(i, "wrk", &["-t1", "-c", &c, "-d", &d, "--latency", url]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |key: &str| text.lines().find_map(|l| l.trim().strip_prefix(key).map(|r| r.trim().to_string()));
    let ms = |v: Option<String>| {
        let v = v.unwrap_or_default();
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().unwrap_or(f64::NAN)
        } else if let Some(x) = v.strip_suffix('s') {
            x.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
        } else {
            f64::NAN
        }
    };
    let rps = field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let errors: u64 = field("Non-2xx or 3xx responses:").and_then(|v| v.parse().ok()).unwrap_or(0)
        + text.lines().filter(|l| l.contains("Socket errors")).count() as u64;
    (rps, ms(field("50%")), ms(field("99%")), errors)
}

/// CPU seconds a process has used (user + system), from `/proc/PID/stat`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // Fields 14 and 15 (utime, stime), counted from `state` as field 3; clock ticks of 1/100 s.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// Resident memory of a process in MiB, from `/proc/PID/status`.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
    kb.and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

/// Benchmark (not in CI; `bench/run-network.sh`): a NodePort on machine 1 with its replicas
/// in process on machine 1, on machine 2 through the gateway, and through the relay; beside
/// nginx on machine 1 proxying to machine 2's node port. The nodes' CPU and memory per
/// 1,000 req/s, beside Istio ztunnel's published figure. Service call latency from a pod on
/// node n1 to replicas in process, on a second node process of machine 1 (`n1b`), on machine
/// 2 through the gateway, and through the relay.
#[test]
#[ignore]
fn bench_gateway() {
    if !available() {
        return;
    }
    let mut net = Net::start("bench", 2);
    let twin = net.node(1, "n1b");
    net.nodes.push(Some(twin));
    assert!(eventually(Duration::from_secs(40), || net.node_json("n1b")["spec"]["podCIDR"].is_string()));
    let w = workloads().join("hello_http.wasm").display().to_string();
    let on = |name: &str, node: &str, port: u16| {
        let yaml = BACKEND
            .replace("WASM", &w)
            .replace("backend", name)
            .replace("replicas: 3", "replicas: 2")
            .replace("nodePort: 30080", &format!("nodePort: {port}"));
        pinned(&yaml, node)
    };
    net.apply(&on("here", "n1", 30081));
    net.apply(&on("there", "n2", 30082));
    net.apply(&on("twin", "n1b", 30083));
    net.apply(&FRONT.replace("WASM", &workloads().join("sdk_demo.wasm").display().to_string()));
    let ready = eventually(Duration::from_secs(60), || {
        let (a, b, c, f) = (net.pods("app=here"), net.pods("app=there"), net.pods("app=twin"), net.pods("app=front"));
        a.len() == 2 && b.len() == 2 && c.len() == 2 && f.len() == 3 && a.values().chain(b.values()).all(|v| v.2)
    });
    assert!(ready);
    let a = &net.m.addrs[1];
    let b = &net.m.addrs[2];
    let here = format!("http://{a}:30081/");
    let there = format!("http://{a}:30082/");
    let _ = net.m.get_all(1, &[here.clone(), there.clone()]);
    // nginx on machine 1 proxying to machine 2's node port (keep-alive upstream).
    let conf = net.dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1; daemon off; pid {pid}; error_log stderr;\nevents {{ worker_connections 4096; }}\nhttp {{ access_log off; upstream b {{ server {b}:30082; keepalive 64; }}\n server {{ listen {a}:18080; location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
            pid = net.dir.path().join("nginx.pid").display()
        ),
    )
    .unwrap();
    let _nginx =
        Daemon::spawn_program("ip", &["netns", "exec", &net.m.names[1], "nginx", "-c", conf.to_str().unwrap()]);
    let via_nginx = format!("http://{a}:18080/");
    assert!(eventually(Duration::from_secs(10), || net.m.get_all(1, std::slice::from_ref(&via_nginx))[0].0 == 200));
    let secs = std::env::var("WRK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let pids: Vec<u32> = net.nodes[..2].iter().map(|d| d.as_ref().unwrap().pid()).collect();
    // Requests/s, latency at one connection, and the two nodes' CPU and memory under 16.
    let report = |what: &str, url: &str| {
        let (_, p50, p99, e1) = wrk(&net, 1, 1, secs, url);
        let cpu0: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
        let (rps, _, _, e2) = wrk(&net, 1, 16, secs, url);
        let cores = (pids.iter().map(|p| cpu_secs(*p)).sum::<f64>() - cpu0) / secs as f64;
        let rss: f64 = pids.iter().map(|p| rss_mib(*p)).sum();
        eprintln!(
            "{what:<48} p50 {p50:>6.3} ms  p99 {p99:>6.3} ms (1 conn)   {rps:>8.0} req/s (16 conns)  \
             nodes n1+n2: {:.3} vCPU and {rss:.0} MiB RSS, {:.3} vCPU per 1,000 req/s  errors {}",
            cores,
            cores / (rps / 1000.0),
            e1 + e2
        );
        cores / (rps / 1000.0)
    };
    eprintln!("NodePort on machine 1, hello-http replicas:");
    let local_cost = report("in process on machine 1", &here);
    let gateway_cost = report("on machine 2 through the gateway", &there);
    report("peer: nginx on machine 1 → machine 2's node port", &via_nginx);
    eprintln!(
        "the gateway's share (both ends): {:.3} vCPU per 1,000 req/s of hello-http (~60-byte answers); \
         Istio ztunnel publishes ≈ 0.06 vCPU and 12 MB per 1,000 req/s of 1 KB requests",
        gateway_cost - local_cost
    );

    // Service calls from a pod (sdk-demo's /time: N sequential wasi:http requests, timed in the pod).
    let front = net.pods("app=front").into_values().find(|v| v.0 == "n1").unwrap().1;
    let n = 2000;
    let timed = |what: &str, svc: &str| {
        let got = net.m.get_all(1, &[format!("http://{front}:8080/time?{n}&http://{svc}/")]);
        eprintln!("  {what:<46} {} (µs, {n} calls)", got[0].1);
    };
    eprintln!("Service call latency from a pod on n1 (wasi:http by name):");
    timed("replicas in process on n1", "here");
    timed("replicas on n1b, another node process of machine 1", "twin");
    timed("replicas on machine 2 through the gateway", "there");

    net.m.cut(1, 2, true);
    // The pooled direct connection is found dead by its keep-alive (~8 s); then the relay.
    let t = std::time::Instant::now();
    assert!(eventually(Duration::from_secs(40), || {
        let _ = net.m.get_all(1, std::slice::from_ref(&there));
        peer_routes(&net, "n1").contains("n2=relay")
    }));
    eprintln!("link cut → relayed after {:.1} s", t.elapsed().as_secs_f64());
    timed("replicas on machine 2 through the relay", "there");
    report("on machine 2 through the control plane's relay", &there);
}
