//! `kubectl exec`, `attach` and `port-forward` against wasm pods, with the real kubectl:
//! exec runs a fresh instance of the container's command component (or of the pod's debug
//! component) with the arguments, stdin and environment given; port-forward reaches a pod's
//! port through the API server and the pod's node, wherever that runs.

mod common;

use common::{Cluster, apply, eventually, get_json, kubectl_available, workloads};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn kubectl(c: &Cluster, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", c.kubeconfig())
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(text) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn pods_yaml() -> String {
    let w = workloads();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: tools}}
spec:
  containers:
    - name: box
      image: file://{toolbox}
      args: [sleep]
      env: [{{name: GREETING, value: hello}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
    - {{name: main, image: "file://{hello}", ports: [{{containerPort: 8080}}]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-debug
  annotations: {{wasmorch.io/debug-image: "file://{toolbox}"}}
spec:
  containers:
    - name: main
      image: file://{hello}
      ports: [{{containerPort: 8080}}]
      env: [{{name: MODE, value: debugging}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  restartPolicy: Never
  containers:
    - {{name: cat, image: "file://{toolbox}", args: [cat], stdin: true, stdinOnce: true}}
"#,
        toolbox = w.join("toolbox.wasm").display(),
        hello = w.join("hello_http.wasm").display()
    )
}

fn wait_running(c: &Cluster, names: &[&str]) {
    let running = || {
        names.iter().all(|n| {
            get_json(c, &["pod", n])
                .is_some_and(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
        })
    };
    assert!(eventually(Duration::from_secs(60), running), "{}", c.ok(&["get", "pods", "-o", "wide"]));
}

#[test]
fn exec_runs_a_fresh_instance_with_arguments_stdin_environment_and_exit_status() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = Cluster::with_node(d);
    apply(&c, d, "pods.yaml", &pods_yaml());
    wait_running(&c, &["tools", "web", "web-debug", "reader"]);

    // Arguments, on stdout; exit status 0.
    let o = kubectl(&c, &["exec", "tools", "--", "echo", "hi", "there"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hi there\n");
    // The container's environment.
    let o = kubectl(&c, &["exec", "tools", "-c", "box", "--", "env", "GREETING"], None);
    assert_eq!(text(&o.stdout), "hello\n", "{}", text(&o.stderr));
    // stdin, to its end.
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let o = kubectl(&c, &["exec", "-i", "tools", "--", "cat"], Some(&input));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), input);
    // stderr and a failure's exit status.
    let o = kubectl(&c, &["exec", "tools", "--", "fail", "oops"], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("oops") && err.contains("command terminated with exit code 1"), "{err}");
    // An HTTP component has no command: the error says what to do.
    let o = kubectl(&c, &["exec", "web", "--", "echo", "x"], None);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("wasmorch.io/debug-image"), "{}", text(&o.stderr));
    // With a debug component named, that runs in the container's environment.
    let o = kubectl(&c, &["exec", "web-debug", "--", "env", "MODE"], None);
    assert_eq!(text(&o.stdout), "debugging\n", "{}", text(&o.stderr));
    // A container that is not there.
    let o = kubectl(&c, &["exec", "tools", "-c", "nope", "--", "echo"], None);
    assert!(text(&o.stderr).contains("container nope is not valid for pod tools"), "{}", text(&o.stderr));
    // attach: the running process's stdin and its output; with stdinOnce, the end of this
    // input is the process's, so it finishes.
    let o = kubectl(&c, &["attach", "-i", "reader"], Some("to the running process\n"));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("to the running process"), "{}", text(&o.stdout));
    let done = || {
        get_json(&c, &["pod", "reader"])
            .is_some_and(|p| p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0)
    };
    assert!(eventually(Duration::from_secs(30), done), "{}", c.ok(&["get", "pod", "reader", "-o", "yaml"]));
    assert_eq!(c.ok(&["logs", "reader"]), "to the running process\n");
    // A container started without stdin takes none.
    let o = kubectl(&c, &["attach", "-i", "tools"], Some("x"));
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("takes no input"), "{}", text(&o.stderr));
    // Without an upgrade, a Status says what is missing.
    let o = kubectl(&c, &["get", "--raw", "/api/v1/namespaces/default/pods/tools/exec?command=echo&stdout=true"], None);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("Upgrade request required"), "{}", text(&o.stderr));
    // The pod's own process went on through all of it.
    let pod = get_json(&c, &["pod", "tools"]).unwrap();
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
}

/// `kubectl port-forward TARGET PORTS…` in the background: its child and the local ports it
/// listens on, in order.
fn port_forward(c: &Cluster, args: &[&str], ports: usize) -> (std::process::Child, Vec<u16>) {
    let mut child = Command::new("kubectl")
        .arg("port-forward")
        .args(args)
        .env("KUBECONFIG", c.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut found = Vec::new();
    while found.len() < ports {
        let Some(Ok(line)) = lines.next() else {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("kubectl port-forward {args:?} ended: {err}");
        };
        // "Forwarding from 127.0.0.1:PORT -> 8080"
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            found.push(rest.split_whitespace().next().unwrap().parse().unwrap());
        }
    }
    // Keep reading (kubectl logs each connection) so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, found)
}

fn get(port: u16, path: &str) -> (u16, String) {
    common::http_get(&format!("127.0.0.1:{port}"), path).unwrap()
}

fn deployment(dir: &Path, c: &Cluster) {
    let w = workloads();
    apply(
        c,
        dir,
        "web.yaml",
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: main
          image: file://{hello}
          ports: [{{containerPort: 8080}}]
          env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: far}}
spec:
  nodeName: n2
  containers:
    - name: main
      image: file://{hello}
      ports: [{{containerPort: 8080}}]
      env: [{{name: POD_NAME, value: far}}]
"#,
            hello = w.join("hello_http.wasm").display()
        ),
    );
}

#[test]
fn port_forward_reaches_pods_deployments_and_services_on_any_node() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = Cluster::with_node(d);
    let _n2 = common::Daemon::node(&c, d, "n2");
    deployment(d, &c);
    let ready = || {
        let pods = get_json(&c, &["pods"]).unwrap_or_default();
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        items.len() == 2 && items.iter().all(|p| p["status"]["containerStatuses"][0]["ready"] == true)
    };
    assert!(eventually(Duration::from_secs(60), ready), "{}", c.ok(&["get", "pods", "-o", "wide"]));
    let far = get_json(&c, &["pod", "far"]).unwrap();
    assert_eq!(far["spec"]["nodeName"], "n2");
    let web = get_json(&c, &["pods", "-l", "app=web"]).unwrap()["items"][0].clone();
    let web_name = web["metadata"]["name"].as_str().unwrap().to_string();

    // A pod, by name; two local ports to its one port; several connections, some at once.
    let (mut pf, ports) = port_forward(&c, &[&format!("pod/{web_name}"), ":8080", ":8080"], 2);
    for p in &ports {
        let (code, body) = get(*p, "/");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(&format!("pod={web_name}")), "{body}");
    }
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let port = ports[i % 2];
            std::thread::spawn(move || get(port, "/"))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().0, 200);
    }
    pf.kill().unwrap();
    pf.wait().unwrap();

    // A Deployment and a Service (its port 80 maps to the pod's 8080).
    for (target, remote) in [("deploy/web", ":8080"), ("svc/web", ":80")] {
        let (mut pf, ports) = port_forward(&c, &[target, remote], 1);
        let (code, body) = get(ports[0], "/");
        assert_eq!(code, 200, "{target}: {body}");
        assert!(body.contains("pod=web-"), "{target}: {body}");
        pf.kill().unwrap();
        pf.wait().unwrap();
    }

    // A pod on the other node process.
    let (mut pf, ports) = port_forward(&c, &["pod/far", ":8080"], 1);
    let (code, body) = get(ports[0], "/");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("pod=far"), "{body}");
    // A large answer comes through whole (hello-http's /bytes/N).
    let (code, body) = get(ports[0], "/bytes/1000000");
    assert_eq!((code, body.len()), (200, 1_000_000));
    pf.kill().unwrap();
    pf.wait().unwrap();

    // A port nothing listens on: kubectl reports the pod's node's error, and goes on.
    let (mut pf, ports) = port_forward(&c, &[&format!("pod/{web_name}"), ":9999"], 1);
    let refused = common::http_get(&format!("127.0.0.1:{}", ports[0]), "/");
    assert!(refused.is_err() || refused.unwrap().0 == 0);
    pf.kill().unwrap();
    let mut err = String::new();
    pf.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("error forwarding port 9999"), "{err}");
}
