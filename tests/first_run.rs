//! A newcomer's first run: `wasmorch up` on a fresh data directory with default flags, then
//! the next steps it prints, run as printed: the built-in hello-http replicas answer `curl` on
//! the node port; the other built-in images run by their references.

mod common;

use common::{Cluster, eventually, http_get};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The commands `up` printed under "Next, in another terminal:".
fn next_steps(c: &Cluster) -> Vec<String> {
    assert!(eventually(Duration::from_secs(10), || c.log().contains("Press Ctrl-C")), "{}", c.log());
    let log = c.log();
    let steps = log.split("Next, in another terminal:\n").nth(1).expect("next steps printed");
    steps.lines().take_while(|l| l.starts_with("  ")).map(|l| l.trim().to_string()).collect()
}

/// Run one printed line with a shell, from the source tree (where `up` was started).
fn run(c: &Cluster, line: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", line])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("KUBECONFIG", c.kubeconfig())
        .env("HOME", c.dir.join("home"))
        .output()
        .unwrap()
}

fn pod_ips(c: &Cluster, selector: &str) -> Vec<String> {
    let list: Value = serde_json::from_str(&c.ok(&["get", "pods", "-l", selector, "-o", "json"])).unwrap();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
        .collect()
}

#[test]
fn the_printed_next_steps_work_on_a_fresh_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    // Default flags but the API port (tests run side by side): node address 127.0.0.1, the
    // default pod and Service ranges, no image built by the test.
    let c = Cluster::start(dir.path());
    let steps = next_steps(&c);
    let curl = steps.iter().find(|s| s.starts_with("curl ")).expect("a curl step").clone();
    assert_eq!(curl, "curl http://127.0.0.1:30080/");
    for step in &steps {
        if step.starts_with("kubectl ") && !common::kubectl_available() {
            continue;
        }
        if *step == curl {
            // The Service's port opens as its endpoints arrive: poll it with a deadline.
            let mut last = None;
            let answered = eventually(Duration::from_secs(30), || {
                let o = run(&c, &format!("curl -sS --max-time 5 {}", &curl[5..]));
                let ok = o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Hello");
                last = Some(o);
                ok
            });
            let o = last.unwrap();
            assert!(answered, "{curl}: {:?} {}", o.status, String::from_utf8_lossy(&o.stderr));
            continue;
        }
        let o = run(&c, step);
        assert!(
            o.status.success(),
            "{step}: {:?}\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Both replicas of the example answer on their own addresses too.
    let ips = pod_ips(&c, "app=hello");
    assert_eq!(ips.len(), 2, "{ips:?}");
    for ip in &ips {
        let (status, body) = http_get(&format!("{ip}:8080"), "/").unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // The image came from the binary: present on the machine, never pulled.
    let events = c.ok(&["get", "events"]);
    assert!(
        events.contains("Container image \"wasmorch.local/hello-http:1.0\" already present on machine"),
        "{events}"
    );
    let node: Value = serde_json::from_str(&c.ok(&["get", "nodes", "-o", "json"])).unwrap();
    let images = node["items"][0]["status"]["images"].to_string();
    for name in ["hello-http", "sdk-demo", "tcp-echo", "batch-job", "pod-roster", "toolbox"] {
        assert!(images.contains(&format!("wasmorch.local/{name}:1.0")), "{images}");
    }

    // What `kubectl create deployment web --image=…` sends: no containerPort. The component
    // serves on 8080. (kubectl itself sends that request as protobuf, which is not served yet.)
    let web = dir.path().join("web.yaml");
    std::fs::write(
        &web,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, labels: {app: web}}\nspec:\n  replicas: 1\n  \
         selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      \
         containers: [{name: sdk-demo, image: wasmorch.local/sdk-demo:1.0}]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: nope}\nspec:\n  containers: [{name: c, image: wasmorch.local/hello-http:9.9}]\n",
    )
    .unwrap();
    c.ok(&["apply", "-f", web.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(60), || pod_ips(&c, "app=web").len() == 1));
    let ip = pod_ips(&c, "app=web").remove(0);
    assert_eq!(http_get(&format!("{ip}:8080"), "/echo").unwrap().0, 200);
    // A tag that is not built in says what is.
    assert!(eventually(Duration::from_secs(30), || {
        let p: Value = serde_json::from_str(&c.ok(&["get", "pod", "nope", "-o", "json"])).unwrap();
        p.pointer("/status/containerStatuses/0/state/waiting/message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.contains("no such tag or digest built into this wasmorch"))
    }));
}
