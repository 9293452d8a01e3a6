//! The node host end to end: `wasmorch up` runs a local node; pods bound to it run as wasm
//! components.

mod common;

use common::{Cluster, apply, eventually, get_json, http_get, pod, serve_file, wait_pod, workloads};
use serde_json::Value;
use std::time::Duration;

fn pod_yaml(name: &str, image: &std::path::Path, restart: &str, port: Option<u16>) -> String {
    let ports = port.map(|p| format!("\n      ports:\n        - containerPort: {p}")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: n1\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 5\n  containers:\n    - name: main\n      image: file://{}{ports}\n      env:\n        - name: GREETING\n          value: hi\n",
        image.display()
    )
}

#[test]
fn pods_run_as_wasm_components() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());

    // The node registers and is Ready, reporting wasmtime as its runtime.
    let node_ready = || c.ok(&["get", "nodes"]).lines().any(|l| l.split_whitespace().take(2).eq(["n1", "Ready"]));
    assert!(eventually(Duration::from_secs(30), node_ready), "{}", c.log());
    let node = get_json(&c, &["node", "n1"]).unwrap();
    assert_eq!(node["status"]["nodeInfo"]["containerRuntimeVersion"], "wasmtime://48.0.8");
    assert!(node["metadata"]["labels"]["kubernetes.io/arch"].is_string());
    assert!(get_json(&c, &["lease", "n1", "-n", "kube-node-lease"]).is_some());

    // An HTTP component serves on its pod's port, a fresh instance per request.
    apply(&c, dir.path(), "hello", &pod_yaml("hello", &wasm.join("hello_http.wasm"), "Always", Some(8080)));
    let p = wait_pod(&c, "hello", "ran", |p| {
        p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true
    });
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let addr = format!("{ip}:8080");
    let (code, body) = http_get(&addr, "/x?y=1").unwrap();
    assert_eq!(code, 200);
    assert_eq!(body, "Hello from wasmorch! pod=hello path=/x?y=1\n");
    assert_eq!(http_get(&addr, "/env/GREETING").unwrap().1, "hi\n");
    {
        // HTTP/1.0 without a Host header is answered too.
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /bare HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.0 200") && out.ends_with("path=/bare\n"), "{out}");
    }
    assert_eq!(http_get(&addr, "/env/NODE_NAME").unwrap().1, "n1\n");
    let table = c.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        table.lines().any(|l| l.split_whitespace().take(3).eq(["hello", "1/1", "Running"])) && table.contains(&ip),
        "{table}"
    );

    // A batch job runs to completion; its exit code and output are recorded.
    apply(&c, dir.path(), "job", &pod_yaml("job", &wasm.join("batch-job.wasm"), "Never", None));
    let p = wait_pod(&c, "job", "succeeded", |p| p["status"]["phase"] == "Succeeded");
    let term = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!((term["exitCode"].as_i64(), term["reason"].as_str()), (Some(0), Some("Completed")));
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let log = std::fs::read_to_string(dir.path().join(format!("data/node/pods/default_job_{uid}/main.log"))).unwrap();
    assert_eq!(log, "primes below 100000: 9592\n");
    assert_eq!(c.ok(&["logs", "job"]), "primes below 100000: 9592\n");
    let o = c.cli(&["logs", "job", "-c", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("container nope is not valid for pod job"));

    // A crashing process restarts with back-off and a growing restart count.
    apply(&c, dir.path(), "crash", &pod_yaml("crash", &wasm.join("crasher.wasm"), "Always", None));
    let p = wait_pod(&c, "crash", "restarted twice", |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(2)
    });
    let cs = &p["status"]["containerStatuses"][0];
    // WASI 0.2's `exit` carries success or failure only: any failing exit is reported as 1.
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(c.ok(&["logs", "crash", "--previous"]), "crasher: giving up\n");
    let table = c.ok(&["get", "pod", "crash"]);
    assert!(table.contains("CrashLoopBackOff") || table.contains("Running"), "{table}");

    // Bad images say what is wrong.
    apply(&c, dir.path(), "missing", &pod_yaml("missing", std::path::Path::new("/nonexistent/x.wasm"), "Always", None));
    let p = wait_pod(&c, "missing", "reported the pull failure", |p| {
        matches!(
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
    });
    assert!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/x.wasm")
    );
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, "this is not wasm").unwrap();
    apply(&c, dir.path(), "junk", &pod_yaml("junk", &junk, "Always", None));
    let p = wait_pod(&c, "junk", "rejected the image", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "InvalidImage"
    });
    assert!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly binary")
    );

    // Events tell the story.
    common::events_with(&c, &[], &["Pulled", "Started", "BackOff", "Failed"]);

    // `logs -f` streams what the instances write, as it is written.
    let mut follow = std::process::Command::new(common::BIN)
        .args(["logs", "-f", "hello", "--tail", "1"])
        .env("KUBECONFIG", c.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(l);
        }
    });
    let streamed = eventually(Duration::from_secs(15), || {
        let _ = http_get(&addr, "/followed");
        lines.lock().unwrap().iter().any(|l| l.contains("/followed"))
    });
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(streamed, "logs -f showed: {:?}", lines.lock().unwrap());

    // A workload written with the SDK: request bodies, configuration, logging, and outbound
    // wasi:http, which the node refuses (egress is not granted) with a clear error.
    apply(&c, dir.path(), "sdk", &pod_yaml("sdk", &wasm.join("sdk_demo.wasm"), "Always", Some(9000)));
    let p = wait_pod(&c, "sdk", "ran", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    let sdk = format!("{}:9000", p["status"]["podIP"].as_str().unwrap());
    assert_eq!(common::http_request(&sdk, "POST", "/echo", "ping").unwrap(), (200, "ping".to_string()));
    assert_eq!(http_get(&sdk, "/config/GREETING").unwrap(), (200, "hi".to_string()));
    assert_eq!(http_get(&sdk, "/config/NOPE").unwrap().0, 404);
    let api = c.url.trim_start_matches("https://").to_string();
    let (code, body) = http_get(&sdk, &format!("/fetch?http://{api}/healthz")).unwrap();
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    let logs = c.ok(&["logs", "sdk"]);
    assert!(logs.contains("level=info msg=\"POST /echo\""), "{logs}");
    assert!(logs.contains("level=warn"), "{logs}");

    // Deleting a running pod stops it: a request in flight finishes, then the pod leaves the
    // API and its port closes.
    let slow_addr = addr.clone();
    let slow = std::thread::spawn(move || http_get(&slow_addr, "/sleep/1500"));
    assert!(
        eventually(Duration::from_secs(10), || c.ok(&["logs", "hello"]).contains("/sleep/1500")),
        "the slow request never arrived"
    );
    c.ok(&["delete", "pod", "hello"]);
    assert_eq!(slow.join().unwrap().unwrap(), (200, "slept 1500 ms\n".to_string()), "in-flight request cut off");
    assert!(get_json(&c, &["pod", "hello"]).is_none());
    assert!(eventually(Duration::from_secs(10), || http_get(&addr, "/").is_err()), "port still open after delete");

    // A pod that takes long to stop (a request in flight, a 60 s grace period) holds up no
    // other pod: one applied meanwhile starts while the first is still stopping.
    let yaml = pod_yaml("linger", &wasm.join("hello_http.wasm"), "Always", Some(8080))
        .replace("terminationGracePeriodSeconds: 5", "terminationGracePeriodSeconds: 60");
    apply(&c, dir.path(), "linger", &yaml);
    let p = wait_pod(&c, "linger", "ran", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    let linger = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());
    let mut in_flight = std::net::TcpStream::connect(&linger).unwrap();
    std::io::Write::write_all(&mut in_flight, b"GET /sleep/60000 HTTP/1.0\r\nHost: linger\r\n\r\n").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || c.ok(&["logs", "linger"]).contains("/sleep/60000")),
        "the slow request never arrived"
    );
    c.ok(&["delete", "pod", "linger", "--wait=false"]);
    apply(&c, dir.path(), "next", &pod_yaml("next", &wasm.join("hello_http.wasm"), "Always", Some(8080)));
    wait_pod(&c, "next", "ran", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    let still = get_json(&c, &["pod", "linger"]);
    assert!(
        still.as_ref().is_some_and(|p| p["metadata"]["deletionTimestamp"].is_string()),
        "the stopping pod should still be finishing its request: {still:?}"
    );
    drop(in_flight);
}

fn pod_with(name: &str, image: &std::path::Path, port: Option<u16>, limits: &str, env: &[(&str, &str)]) -> String {
    let mut y = pod_yaml(name, image, "Always", port);
    for (k, v) in env {
        y.push_str(&format!("        - name: {k}\n          value: \"{v}\"\n"));
    }
    if !limits.is_empty() {
        y.push_str(&format!("      resources:\n        limits: {limits}\n"));
    }
    y
}

#[test]
fn hostile_workloads_are_contained() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    apply(&c, dir.path(), "hello", &pod_yaml("hello", &wasm.join("hello_http.wasm"), "Always", Some(8080)));
    let p = wait_pod(&c, "hello", "ran", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    let addr = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());

    // Two busy loops (one without any CPU limit) and a memory hog on the same node.
    apply(&c, dir.path(), "spin1", &pod_with("spin1", &wasm.join("spinner.wasm"), None, "", &[]));
    apply(&c, dir.path(), "spin2", &pod_with("spin2", &wasm.join("spinner.wasm"), None, "{cpu: 200m}", &[]));
    apply(&c, dir.path(), "hog", &pod_with("hog", &wasm.join("memhog.wasm"), None, "{memory: 32Mi}", &[]));
    wait_pod(&c, "spin1", "ran", |p| p["status"]["phase"] == "Running");
    wait_pod(&c, "spin2", "ran", |p| p["status"]["phase"] == "Running");

    // The memory hog fails inside its instance at its limit and is restarted.
    let p = wait_pod(&c, "hog", "hit its memory limit", |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)
    });
    assert_eq!(p["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"], "OOMKilled");
    assert_eq!(p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 137);
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let log = std::fs::read_to_string(dir.path().join(format!("data/node/pods/default_hog_{uid}/main.log"))).unwrap();
    let held: Vec<u64> =
        log.lines().filter_map(|l| l.strip_prefix("memhog: holding ")?.strip_suffix(" MiB")?.parse().ok()).collect();
    assert!(held.iter().all(|m| *m <= 32), "memhog held more than its 32Mi limit: {log}");

    // hello-http keeps answering while they run.
    let mut lat = Vec::new();
    for i in 0..50 {
        let t = std::time::Instant::now();
        let (code, body) = http_get(&addr, &format!("/{i}")).unwrap();
        lat.push(t.elapsed());
        assert_eq!(code, 200, "{body}");
    }
    lat.sort();
    eprintln!("hello-http beside 2 spinners and a memory hog: p50 {:?}, p99 {:?}, max {:?}", lat[25], lat[49], lat[49]);

    // The node stays Ready (its lease is renewed) and the API answers.
    let node = get_json(&c, &["node", "n1"]).unwrap();
    let ready = node["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["status"], "True");

    // Deleting the spinners stops them.
    c.ok(&["delete", "pod", "spin1", "spin2", "hog"]);
    assert!(get_json(&c, &["pod", "spin1"]).is_none());
}

#[test]
fn escaper_reaches_nothing_it_was_not_granted() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    // Something real to try to reach: the API server itself.
    let api = c.url.trim_start_matches("https://").to_string();
    let mut y = pod_yaml("escaper", &wasm.join("escaper.wasm"), "Never", None);
    y.push_str(&format!("        - name: ESCAPE_ADDR\n          value: \"{api}\"\n"));
    apply(&c, dir.path(), "escaper", &y);
    let p = wait_pod(&c, "escaper", "finished", |p| p["status"]["phase"] == "Succeeded");
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let log =
        std::fs::read_to_string(dir.path().join(format!("data/node/pods/default_escaper_{uid}/main.log"))).unwrap();
    assert!(log.contains("escaper: done"), "{log}");
    let reached: Vec<&str> = log.lines().filter(|l| l.starts_with("reached")).collect();
    assert!(reached.is_empty(), "escaper reached: {reached:?}\n{log}");
    for what in ["file /etc/passwd", "file ../../../../etc/passwd", &format!("tcp {api}"), "bind 0.0.0.0:7777"] {
        assert!(log.contains(&format!("denied {what}")), "no denial of {what} in:\n{log}");
    }
}

/// `wasmorch server` and `wasmorch node` as separate processes: the node joins with its token
/// and the server's CA; when the control plane dies, running pods keep serving; when it
/// returns, the node resyncs and carries out what changed.
#[test]
fn pods_keep_serving_while_the_control_plane_is_down() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("server");
    let sdir_s = sdir.to_str().unwrap().to_string();
    let pods = common::cluster_cidr();
    let mut server =
        common::Daemon::spawn(&["server", "--listen", "127.0.0.1:0", "--data-dir", &sdir_s, "--cluster-cidr", &pods]);
    let line = server.wait_line("listening on https://");
    let url = line.split("listening on ").nth(1).unwrap().trim().to_string();
    let port = url.rsplit(':').next().unwrap().to_string();
    let token = std::fs::read_to_string(sdir.join("join.token")).unwrap();
    let ca = sdir.join("pki/ca.crt");
    let ndir = dir.path().join("node");
    let _node = common::Daemon::spawn(&[
        "node",
        "--server",
        &url,
        "--token",
        token.trim(),
        "--ca-file",
        ca.to_str().unwrap(),
        "--name",
        "n1",
        "--data-dir",
        ndir.to_str().unwrap(),
        "--backoff-base",
        "1",
    ]);
    // Client commands use the server's admin kubeconfig.
    std::fs::copy(sdir.join("admin.kubeconfig"), dir.path().join("kubeconfig")).unwrap();
    let c = Cluster::attach(dir.path());
    assert!(eventually(Duration::from_secs(30), || c.ok(&["get", "nodes"]).contains("Ready")));

    apply(&c, dir.path(), "hello", &pod_yaml("hello", &wasm.join("hello_http.wasm"), "Always", Some(8080)));
    let p = wait_pod(&c, "hello", "ran", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    let addr = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());
    assert_eq!(http_get(&addr, "/").unwrap().0, 200);

    server.kill();
    for i in 0..20 {
        assert_eq!(
            http_get(&addr, &format!("/while-down/{i}")).unwrap().0,
            200,
            "pod stopped serving without its control plane"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let listen = format!("127.0.0.1:{port}");
    let server =
        common::Daemon::spawn(&["server", "--listen", &listen, "--data-dir", &sdir_s, "--cluster-cidr", &pods]);
    server.wait_line("listening on https://");
    c.ok(&["delete", "pod", "hello", "--timeout", "30"]);
    assert!(
        eventually(Duration::from_secs(15), || http_get(&addr, "/").is_err()),
        "deleted pod still serving after resync"
    );
}

/// Read a pod's container status by container name.
fn container_status(p: &Value, name: &str) -> Value {
    p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn sockets_multi_container_pods_and_egress_grants() {
    use std::io::{Read, Write};
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    let api = c.url.trim_start_matches("https://").to_string();
    let (plain, _) = serve_file(b"ok".to_vec());
    // Two containers: a wasi:sockets server, and a sidecar that reaches it on the pod's own
    // address, is refused the API server, and may reach the one address the pod was granted.
    let duo = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: duo\n  annotations:\n    wasmorch.io/egress: \"{plain}\"\nspec:\n  nodeName: n1\n  restartPolicy: OnFailure\n  containers:\n    - name: echo\n      image: file://{echo}\n      ports:\n        - containerPort: 7000\n    - name: sidecar\n      image: file://{esc}\n      env:\n        - name: ESCAPE_ADDR\n          value: \"$(POD_IP):7000,{api},{plain}\"\n",
        echo = wasm.join("tcp-echo.wasm").display(),
        esc = wasm.join("escaper.wasm").display(),
    );
    apply(&c, dir.path(), "duo", &duo);
    let p = wait_pod(&c, "duo", "ran both containers", |p| {
        container_status(p, "echo")["ready"] == true
            && container_status(p, "sidecar")["state"]["terminated"]["reason"] == "Completed"
    });
    assert_eq!(p["status"]["phase"], "Running");
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let log =
        std::fs::read_to_string(dir.path().join(format!("data/node/pods/default_duo_{uid}/sidecar.log"))).unwrap();
    assert!(log.contains(&format!("reached tcp {ip}:7000")), "{log}");
    assert!(log.contains(&format!("reached tcp {plain}")), "{log}");
    assert!(log.contains(&format!("denied tcp {api}")), "{log}");
    assert!(log.contains("denied bind 0.0.0.0:7777"), "{log}");

    // The echo server answers clients from outside, several at once.
    let mut a = std::net::TcpStream::connect(format!("{ip}:7000")).unwrap();
    let mut b = std::net::TcpStream::connect(format!("{ip}:7000")).unwrap();
    for s in [&mut a, &mut b] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    a.write_all(b"first\n").unwrap();
    b.write_all(b"second\n").unwrap();
    let mut buf = [0u8; 7];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"second\n");
    a.read_exact(&mut buf[..6]).unwrap();
    assert_eq!(&buf[..6], b"first\n");

    // Outgoing wasi:http follows the same grant.
    let sdk = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sdk\n  annotations:\n    wasmorch.io/egress: \"{plain}\"\nspec:\n  nodeName: n1\n  containers:\n    - name: main\n      image: file://{}\n      ports:\n        - containerPort: 9000\n",
        wasm.join("sdk_demo.wasm").display()
    );
    apply(&c, dir.path(), "sdk", &sdk);
    let p = wait_pod(&c, "sdk", "ran", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    let sdk = format!("{}:9000", p["status"]["podIP"].as_str().unwrap());
    assert_eq!(http_get(&sdk, &format!("/fetch?http://{plain}/x")).unwrap(), (200, "fetched: 200".to_string()));
    let (code, body) = http_get(&sdk, &format!("/fetch?http://{api}/healthz")).unwrap();
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // A bad grant is a configuration error that names it.
    let bad = duo.replace("name: duo", "name: bad").replace(&format!("\"{plain}\""), "\"10.0.0.0/99\"");
    apply(&c, dir.path(), "bad", &bad);
    let p = wait_pod(&c, "bad", "refused its egress grant", |p| {
        container_status(p, "echo")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    let msg = container_status(&p, "echo")["state"]["waiting"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("wasmorch.io/egress") && msg.contains("10.0.0.0/99"), "{msg}");
}

#[test]
fn probes_drive_readiness_and_restarts() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    // Readiness: not ready until the server listens, ready while it does, not ready after.
    let flip = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: flip\nspec:\n  nodeName: n1\n  containers:\n    - name: main\n      image: file://{}\n      ports:\n        - {{name: echo, containerPort: 7000}}\n      env:\n        - {{name: READY_AFTER_SECS, value: \"2\"}}\n        - {{name: STOP_AFTER_SECS, value: \"4\"}}\n      readinessProbe:\n        tcpSocket: {{port: echo}}\n        periodSeconds: 1\n        failureThreshold: 1\n",
        wasm.join("tcp-echo.wasm").display()
    );
    apply(&c, dir.path(), "flip", &flip);
    let mut seen: Vec<bool> = Vec::new();
    let flipped = eventually(Duration::from_secs(40), || {
        let p = pod(&c, "flip");
        if p["status"]["containerStatuses"][0]["state"]["running"].is_object() {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if seen.last() != Some(&ready) {
                seen.push(ready);
            }
        }
        seen.ends_with(&[false, true, false])
    });
    assert!(flipped, "readiness went {seen:?}\n{}", c.log());
    common::events_with(&c, &["--field-selector", "involvedObject.name=flip"], &["Readiness probe failed"]);
    assert_eq!(pod(&c, "flip")["status"]["containerStatuses"][0]["restartCount"], 0, "readiness never restarts");

    // Liveness: a failing check restarts the container, with the probe's reason recorded.
    let sick = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sick\nspec:\n  nodeName: n1\n  containers:\n    - name: main\n      image: file://{}\n      ports:\n        - containerPort: 8080\n      startupProbe:\n        httpGet: {{path: /, port: 8080}}\n        periodSeconds: 1\n      livenessProbe:\n        httpGet: {{path: /env/NOT_SET, port: 8080}}\n        periodSeconds: 1\n        failureThreshold: 2\n",
        wasm.join("hello_http.wasm").display()
    );
    apply(&c, dir.path(), "sick", &sick);
    let p = wait_pod(&c, "sick", "restarted after failing liveness", |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)
    });
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137);
    assert!(
        last["message"].as_str().unwrap().contains("Liveness probe failed: HTTP probe failed with statuscode: 404"),
        "{last}"
    );
    common::events_with(
        &c,
        &["--field-selector", "involvedObject.name=sick"],
        &["failed liveness probe, will be restarted"],
    );

    // Startup passes and, without a readiness probe, the container is ready.
    let fine = sick.replace("name: sick", "name: fine").replace("/env/NOT_SET", "/");
    apply(&c, dir.path(), "fine", &fine);
    let p = wait_pod(&c, "fine", "started", |p| {
        p["status"]["containerStatuses"][0]["started"] == true && p["status"]["containerStatuses"][0]["ready"] == true
    });
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
}
