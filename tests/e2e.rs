//! End to end against the real binary: `wasmorch up`, the CLI, restarts, crashes, backups.

mod common;

use common::{Cluster, eventually, kube_client, manifests_dir, raw};
use futures::{AsyncBufReadExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn apply_get_describe_delete_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    // hello's node port on an address of its own.
    let node = common::node_address();
    let mut c = Cluster::start_with(dir.path(), &["--node-address", &node]);
    let m = manifests_dir();
    let m = m.to_str().unwrap();

    let out = c.ok(&["apply", "-f", m]);
    for line in [
        "deployment.apps/hello created",
        "service/hello created",
        "configmap/hello-config created",
        "secret/hello-secret created",
        "job.batch/pi created",
        "cronjob.batch/nightly created",
        "daemonset.apps/edge-agent created",
        "namespace/team-a created",
        "pod/echo created",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // The workload pod examples are valid (server-side dry run stores nothing).
    let pods = c.ok(&["apply", "--dry-run", "server", "-f", &format!("{m}/pods")]);
    assert_eq!(pods.lines().count(), 9, "{pods}");
    assert!(pods.lines().all(|l| l.ends_with("created (server dry run)")), "{pods}");
    let again = c.ok(&["apply", "-f", m]);
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");

    // A change is "configured"; a field dropped from the file is removed.
    let changed = dir.path().join("hello.yaml");
    let text = std::fs::read_to_string(manifests_dir().join("hello.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 3")
        .replace("    app: hello\nspec:\n  replicas", "    tier: web\nspec:\n  replicas");
    std::fs::write(&changed, text).unwrap();
    let out = c.ok(&["apply", "-f", changed.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/hello configured"), "{out}");
    let d: Value = serde_json::from_str(&c.ok(&["get", "deploy", "hello", "-o", "json"])).unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["labels"], json!({"tier": "web"}), "label dropped from the file is gone");
    assert_eq!(d["metadata"]["generation"], 2);

    let table = c.ok(&["get", "deployments"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{table}");
    // READY is ready/desired; how many are ready yet depends on timing (the image is built in).
    let ready = |l: &str| l.split_whitespace().nth(1).is_some_and(|r| r.ends_with("/3"));
    assert!(table.lines().any(|l| l.starts_with("hello ") && ready(l)), "{table}");
    let wide = c.ok(&["get", "deploy", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[5..], ["CONTAINERS", "IMAGES", "SELECTOR"], "{wide}");
    assert_eq!(c.ok(&["get", "deploy/hello", "svc/hello", "-o", "name"]), "deployment.apps/hello\nservice/hello\n");
    let y = c.ok(&["get", "cm", "hello-config", "-o", "yaml"]);
    assert!(y.contains("GREETING: Hello from wasmorch"), "{y}");
    let all = c.ok(&["get", "pods", "-A"]);
    assert!(all.lines().any(|l| l.split_whitespace().take(2).eq(["team-a", "echo"])), "{all}");
    let nodes_sel = c.ok(&["get", "cm", "-l", "app notin (x)", "-o", "name"]);
    assert!(nodes_sel.contains("configmap/hello-config"));

    let desc = c.ok(&["describe", "deployment", "hello"]);
    assert!(desc.starts_with("Name:         hello\nNamespace:    default\n"), "{desc}");
    assert!(desc.contains("Events:"), "{desc}");

    let o = c.cli(&["get", "cm", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).trim(), "Error from server (NotFound): configmaps \"nope\" not found");
    let o = c.cli(&["get", "pods", "-n", "kube-public"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stderr(&o).trim(), "No resources found in kube-public namespace.");
    let o = c.cli(&["get", "widgets"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("doesn't have a resource type \"widgets\""));

    // Invalid input from a file: a clear error naming the field; nothing stored.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n").unwrap();
    let o = c.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Error from server (Invalid): ConfigMap \"Bad_Name\" is invalid: metadata.name"),
        "{}",
        stderr(&o)
    );

    // State survives a restart.
    c.stop();
    let c = Cluster::start_with(dir.path(), &["--node-address", &node]);
    let d: Value = serde_json::from_str(&c.ok(&["get", "deploy", "hello", "-o", "json"])).unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(c.ok(&["get", "ns"]).contains("team-a"));

    // Delete by file and by name; deleting a namespace removes what it holds.
    let out = c.ok(&["delete", "-f", &format!("{m}/hello.yaml")]);
    assert!(out.contains("deployment.apps \"hello\" deleted from default namespace"), "{out}");
    assert_eq!(c.cli(&["get", "deploy", "hello"]).status.code(), Some(1));
    c.ok(&["delete", "namespace", "team-a"]);
    let o = c.cli(&["get", "pod", "echo", "-n", "team-a"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!c.ok(&["get", "ns"]).contains("team-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_added_modified_deleted_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let client = kube_client(&c.kubeconfig()).await;
    let (_, list) = raw(&client, "GET", "/api/v1/namespaces/default/configmaps", None).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let req = http::Request::builder()
        .uri(format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"))
        .body(Vec::new())
        .unwrap();
    let mut lines = client.request_stream(req).await.unwrap().lines();

    // The CLI's own watch prints rows as they change.
    let mut cli_watch = Command::new(common::BIN)
        .args(["get", "configmaps", "-w"])
        .env("KUBECONFIG", c.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    let out = cli_watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            s2.lock().unwrap().push(l);
        }
    });

    let f = dir.path().join("cm.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n  v: '1'\n").unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n  v: '2'\n  w: '3'\n")
        .unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    c.ok(&["delete", "configmap", "watched"]);

    let mut events = Vec::new();
    while events.len() < 3 {
        let line =
            tokio::time::timeout(Duration::from_secs(10), lines.next()).await.expect("event in time").unwrap().unwrap();
        let e: Value = serde_json::from_str(&line).unwrap();
        // (The namespace's own `kube-root-ca.crt` may appear too.)
        if e["object"]["metadata"]["name"] != "watched" {
            continue;
        }
        events.push((e["type"].as_str().unwrap().to_string(), e["object"]["data"].as_object().map_or(0, |m| m.len())));
    }
    assert_eq!(events, [("ADDED".to_string(), 1), ("MODIFIED".to_string(), 2), ("DELETED".to_string(), 2)]);
    let ok = eventually(Duration::from_secs(10), || {
        seen.lock().unwrap().iter().filter(|l| l.starts_with("watched ")).count() >= 3
    });
    let _ = cli_watch.kill();
    let _ = cli_watch.wait();
    assert!(ok, "CLI watch printed: {:?}", seen.lock().unwrap());
}

/// SIGKILL while clients create objects: every create answered 201 is there after restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    let client = kube_client(&c.kubeconfig()).await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let client = client.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let name = format!("w{w}-{i}");
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"payload": "x".repeat(1000)}});
                let req = http::Request::builder()
                    .method("POST")
                    .uri("/api/v1/namespaces/default/configmaps")
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap();
                match client.send(req).await {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(name),
                    _ => return,
                }
            }
        }));
    }
    let a2 = acked.clone();
    let enough =
        tokio::task::spawn_blocking(move || eventually(Duration::from_secs(60), || a2.lock().unwrap().len() >= 300))
            .await
            .unwrap();
    assert!(enough, "clients made no progress");
    // The newest revision a client has seen (Lease renewals included: they are written
    // softly, so a crash may lose them, but never hand their revisions out again).
    let rv = |list: &Value| list["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap();
    let (_, leases) = raw(&client, "GET", "/apis/coordination.k8s.io/v1/leases", None).await;
    let seen = rv(&leases);
    c.kill();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let acked = acked.lock().unwrap().clone();
    let c = Cluster::start(dir.path());
    let client = kube_client(&c.kubeconfig()).await;
    let (_, list) = raw(&client, "GET", "/api/v1/namespaces/default/configmaps", None).await;
    let stored: std::collections::HashSet<String> =
        list["items"].as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-the-crash"}});
    let (status, created) = raw(&client, "POST", "/api/v1/namespaces/default/configmaps", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    let first = created["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(first > seen, "revision {first} after the crash, but clients had seen {seen}");
}

#[test]
fn backup_while_running_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    let cm = |name: &str| {
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")).unwrap();
        f
    };
    let before = cm("before");
    c.ok(&["apply", "-f", before.to_str().unwrap()]);
    let snap = dir.path().join("snap.redb");
    let out = c.ok(&["backup", snap.to_str().unwrap()]);
    assert!(out.starts_with("backup written to"), "{out}");
    let after = cm("after");
    c.ok(&["apply", "-f", after.to_str().unwrap()]);
    // Killed: "after" is only in the store's write-ahead log, which the restore must not
    // replay onto the snapshot.
    c.kill();

    // A file that is not a snapshot is refused and the state is untouched.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "not a database").unwrap();
    let o = Command::new(common::BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--restore")
        .arg(&junk)
        .env("KUBECONFIG", c.kubeconfig())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not a wasmorch snapshot"), "{}", stderr(&o));

    drop(c);
    let c = Cluster::start_with(dir.path(), &["--restore", snap.to_str().unwrap()]);
    assert!(c.ok(&["get", "cm"]).contains("before"));
    assert_eq!(c.cli(&["get", "cm", "after"]).status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let pki = wasmorch_control::pki::Pki::load_or_create(&dir.path().join("data/pki"), &[]).unwrap();
    let other = wasmorch_control::pki::Pki::load_or_create(&dir.path().join("other-pki"), &[]).unwrap();
    let try_with = |cert: String, key: String| {
        let url = c.url.clone();
        let ca = pki.ca_pem.clone();
        async move {
            use base64::Engine;
            let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            let kc = format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: '{url}', certificate-authority-data: {}}}}}]\nusers: [{{name: u, user: {{client-certificate-data: {}, client-key-data: {}}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n",
                b(&ca),
                b(&cert),
                b(&key)
            );
            let path = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(path.path(), kc).unwrap();
            let client = kube_client(path.path()).await;
            let req =
                http::Request::builder().uri("/api/v1/namespaces").body(kube::client::Body::from(Vec::new())).unwrap();
            match client.send(req).await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        }
    };
    let (cert, key) = pki.issue_client("alice", &["system:masters"]).unwrap();
    assert_eq!(try_with(cert, key).await, 200);
    let (cert, key) = pki.issue_client("bob", &["developers"]).unwrap();
    assert_eq!(try_with(cert, key).await, 403);
    let (cert, key) = other.issue_client("mallory", &["system:masters"]).unwrap();
    assert_eq!(try_with(cert, key).await, 0, "a certificate from another CA is refused at the TLS handshake");
}

/// `--event-ttl`: an Event whose last occurrence is older than the TTL is deleted; a recent
/// one stays.
#[test]
fn events_expire_after_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--no-node", "--event-ttl", "60s"]);
    let ago = |secs: i64| {
        (chrono::Utc::now() - chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let event = |name: &str, last: String| {
        format!(
            "apiVersion: v1\nkind: Event\nmetadata: {{name: {name}, namespace: default}}\n\
             involvedObject: {{kind: Pod, name: p, namespace: default}}\nreason: Tested\nmessage: m\ntype: Normal\n\
             firstTimestamp: \"{last}\"\nlastTimestamp: \"{last}\"\ncount: 1\n"
        )
    };
    let f = dir.path().join("events.yaml");
    std::fs::write(&f, format!("{}---\n{}", event("stale", ago(120)), event("fresh", ago(0)))).unwrap();
    c.ok(&["create", "-f", f.to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(30), || c.cli(&["get", "event", "stale"]).status.code() == Some(1)),
        "the stale event was not expired"
    );
    c.ok(&["get", "event", "fresh"]);
}
