//! The node host end to end: `wasmorch up` runs a local node; pods bound to it run as wasm
//! components.

mod common;

use common::{Cluster, eventually, get_json, http_get, workloads};
use serde_json::Value;
use std::time::Duration;

fn pod_yaml(name: &str, image: &std::path::Path, restart: &str, port: Option<u16>) -> String {
    let ports = port.map(|p| format!("\n      ports:\n        - containerPort: {p}")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: n1\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 5\n  containers:\n    - name: main\n      image: file://{}{ports}\n      env:\n        - name: GREETING\n          value: hi\n",
        image.display()
    )
}

fn apply(c: &Cluster, dir: &std::path::Path, name: &str, yaml: &str) {
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
}

fn pod(c: &Cluster, name: &str) -> Value {
    get_json(c, &["pod", name]).unwrap_or(Value::Null)
}

fn wait_pod(c: &Cluster, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let ok = eventually(Duration::from_secs(60), || f(&pod(c, name)));
    let p = pod(c, name);
    assert!(ok, "pod {name} never {what}: {}\n{}", serde_json::to_string_pretty(&p["status"]).unwrap(), c.log());
    p
}

#[test]
fn pods_run_as_wasm_components() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--backoff-base", "1"]);

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

    // A crashing process restarts with back-off and a growing restart count.
    apply(&c, dir.path(), "crash", &pod_yaml("crash", &wasm.join("crasher.wasm"), "Always", None));
    let p = wait_pod(&c, "crash", "restarted twice", |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(2)
    });
    let cs = &p["status"]["containerStatuses"][0];
    // WASI 0.2's `exit` carries success or failure only: any failing exit is reported as 1.
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
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
    let events = c.ok(&["get", "events"]);
    for reason in ["Pulled", "Started", "BackOff", "Failed"] {
        assert!(events.contains(reason), "no {reason} event in:\n{events}");
    }

    // Deleting a running pod stops it: it leaves the API and its port closes.
    c.ok(&["delete", "pod", "hello"]);
    assert!(get_json(&c, &["pod", "hello"]).is_none());
    assert!(eventually(Duration::from_secs(10), || http_get(&addr, "/").is_err()), "port still open after delete");
}
