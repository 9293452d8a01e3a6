//! The event chain end to end on `wasmorch up`: Deployment → ReplicaSet → pods → scheduler →
//! node, rolling updates, rollbacks, scaling, self-healing and garbage collection.

mod common;

use common::{Cluster, eventually, get_json, http_get, workloads};
use serde_json::Value;
use std::time::Duration;

fn deployment(wasm: &std::path::Path, greeting: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {{app: web}}\n  strategy:\n    type: RollingUpdate\n    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n        - name: web\n          image: file://{}\n          ports: [{{containerPort: 8080}}]\n          env: [{{name: GREETING, value: {greeting}}}]\n          readinessProbe:\n            httpGet: {{path: /, port: 8080}}\n            periodSeconds: 1\n",
        wasm.join("hello_http.wasm").display()
    )
}

/// Pods of the Deployment that are Ready and not terminating.
fn available(c: &Cluster) -> Vec<Value> {
    get_json(c, &["pods", "-l", "app=web"])
        .map(|l| l["items"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
        .collect()
}

fn greeting_of(p: &Value) -> String {
    let ip = p["status"]["podIP"].as_str().unwrap_or("");
    http_get(&format!("{ip}:8080"), "/env/GREETING").map(|(_, b)| b.trim().to_string()).unwrap_or_default()
}

#[test]
fn deployments_roll_out_scale_roll_back_and_heal() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    let f = dir.path().join("web.yaml");
    std::fs::write(&f, deployment(&wasm, "v1")).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert!(out.contains("deployment \"web\" successfully rolled out"), "{out}");
    let pods = available(&c);
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert!(pods.iter().all(|p| p["spec"]["nodeName"] == "n1"));
    assert_eq!(greeting_of(&pods[0]), "v1");
    let d = get_json(&c, &["deployment", "web"]).unwrap();
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");

    // Scale up and down.
    assert!(c.ok(&["scale", "deployment/web", "--replicas", "6"]).contains("deployment.apps/web scaled"));
    assert!(eventually(Duration::from_secs(30), || available(&c).len() == 6), "{}", c.log());
    c.ok(&["scale", "deployment", "web", "--replicas", "3"]);
    assert!(eventually(Duration::from_secs(30), || available(&c).len() == 3
        && get_json(&c, &["pods", "-l", "app=web"]).unwrap()["items"].as_array().unwrap().len() == 3));

    // A new template rolls out while availability never drops below replicas - maxUnavailable.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, kc) = (stop.clone(), c.kubeconfig());
        std::thread::spawn(move || {
            let c = Cluster::attach(kc.parent().unwrap());
            let mut min = usize::MAX;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                min = min.min(available(&c).len());
            }
            min
        })
    };
    std::fs::write(&f, deployment(&wasm, "v2")).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let min = watcher.join().unwrap();
    assert!(min >= 3, "available pods fell to {min} during the rollout");
    assert!(eventually(Duration::from_secs(30), || {
        let p = available(&c);
        p.len() == 3 && p.iter().all(|p| greeting_of(p) == "v2")
    }));
    let sets = get_json(&c, &["replicasets"]).unwrap();
    assert_eq!(sets["items"].as_array().unwrap().len(), 2, "one set per template");
    let hist = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(hist.contains("\n1 ") && hist.contains("\n2 "), "{hist}");

    // Roll back to the first template.
    assert!(c.ok(&["rollout", "undo", "deployment/web"]).contains("rolled back"));
    c.ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert!(eventually(Duration::from_secs(30), || {
        let p = available(&c);
        p.len() == 3 && p.iter().all(|p| greeting_of(p) == "v1")
    }));
    let d = get_json(&c, &["deployment", "web"]).unwrap();
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");

    // A deleted pod is replaced.
    let victim = available(&c)[0]["metadata"]["name"].as_str().unwrap().to_string();
    c.ok(&["delete", "pod", &victim]);
    assert!(eventually(Duration::from_secs(30), || {
        let p = available(&c);
        p.len() == 3 && p.iter().all(|p| p["metadata"]["name"] != victim.as_str())
    }));

    // The chain is in the events.
    common::events_with(&c, &[], &["ScalingReplicaSet", "SuccessfulCreate", "Scheduled", "Started"]);

    // Deleting the Deployment removes its ReplicaSets and pods.
    c.ok(&["delete", "deployment", "web"]);
    assert!(
        eventually(Duration::from_secs(30), || {
            get_json(&c, &["replicasets"]).unwrap()["items"].as_array().unwrap().is_empty()
                && get_json(&c, &["pods", "-l", "app=web"]).unwrap()["items"].as_array().unwrap().is_empty()
        }),
        "dependents left behind"
    );
}

#[test]
fn unschedulable_pods_say_why_and_wait() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    assert!(eventually(Duration::from_secs(30), || c.ok(&["get", "nodes"]).contains("Ready")));
    let f = dir.path().join("p.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: picky\nspec:\n  nodeSelector: {disk: ssd}\n  containers:\n    - name: c\n      image: file:///nonexistent.wasm\n",
    )
    .unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let msg = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.";
    assert!(
        eventually(Duration::from_secs(20), || c.ok(&["get", "events"]).contains(msg)),
        "{}",
        c.ok(&["get", "events"])
    );
    let p = get_json(&c, &["pod", "picky"]).unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    let cond =
        p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "PodScheduled").unwrap().clone();
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some("Unschedulable")));
    // Labelling the node lets it through.
    let node = get_json(&c, &["node", "n1"]).unwrap();
    let mut labels = node["metadata"]["labels"].clone();
    labels["disk"] = "ssd".into();
    let f2 = dir.path().join("n.json");
    let mut n2 = node.clone();
    n2["metadata"]["labels"] = labels;
    n2["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    std::fs::write(&f2, n2.to_string()).unwrap();
    c.ok(&["apply", "-f", f2.to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(20), || get_json(&c, &["pod", "picky"]).unwrap()["spec"]["nodeName"] == "n1"),
        "not scheduled after the node was labelled"
    );
}

#[test]
fn jobs_run_to_completion_or_give_up() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    let job = |name: &str, image: &str, completions: u32, parallelism: u32, backoff: u32| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  completions: {completions}\n  parallelism: {parallelism}\n  backoffLimit: {backoff}\n  ttlSecondsAfterFinished: 600\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: work\n          image: file://{}\n",
            wasm.join(image).display()
        )
    };
    let f = dir.path().join("jobs.yaml");
    std::fs::write(
        &f,
        format!("{}---\n{}", job("primes", "batch-job.wasm", 5, 2, 2), job("doomed", "crasher.wasm", 1, 1, 1)),
    )
    .unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let done = |name: &str, t: &str| {
        get_json(&c, &["job", name]).is_some_and(|j| {
            j["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|x| x["type"] == t && x["status"] == "True"))
        })
    };
    assert!(
        eventually(Duration::from_secs(60), || done("primes", "Complete")),
        "job: {}\npods: {}",
        get_json(&c, &["job", "primes"]).unwrap_or_default()["status"],
        c.ok(&["get", "pods", "-o", "wide"])
    );
    let j = get_json(&c, &["job", "primes"]).unwrap();
    assert_eq!(j["status"]["succeeded"], 5);
    assert_eq!(j["status"]["active"], 0);
    let pods = get_json(&c, &["pods", "-l", "job-name=primes"]).unwrap();
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 5, "exactly `completions` pods ran");
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Succeeded"));
    assert_eq!(c.ok(&["logs", pods[0]["metadata"]["name"].as_str().unwrap()]), "primes below 100000: 9592\n");
    let table = c.ok(&["get", "jobs"]);
    assert!(table.lines().any(|l| l.starts_with("primes") && l.contains("5/5")), "{table}");

    // backoffLimit 1: the second failure fails the job.
    assert!(eventually(Duration::from_secs(60), || done("doomed", "Failed")), "{}", c.log());
    let j = get_json(&c, &["job", "doomed"]).unwrap();
    let cond = j["status"]["conditions"].as_array().unwrap().iter().find(|x| x["type"] == "Failed").unwrap().clone();
    assert_eq!(cond["reason"], "BackoffLimitExceeded");
    assert_eq!(j["status"]["failed"], 2);
    common::events_with(&c, &["--field-selector", "involvedObject.name=doomed"], &["BackoffLimitExceeded"]);

    // Deleting a job removes its pods.
    c.ok(&["delete", "job", "primes"]);
    assert!(eventually(Duration::from_secs(30), || {
        get_json(&c, &["pods", "-l", "job-name=primes"]).unwrap()["items"].as_array().unwrap().is_empty()
    }));
}

#[test]
fn daemonsets_run_one_pod_per_node_and_spread_deployments() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let m = common::MultiNode::start(dir.path(), 3);
    let c = &m.cluster;
    let ds = |greeting: &str| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels: {{app: agent}}\n  template:\n    metadata:\n      labels: {{app: agent}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: agent\n          image: file://{}\n          ports: [{{containerPort: 8080}}]\n          env: [{{name: GREETING, value: {greeting}}}]\n",
            wasm.join("hello_http.wasm").display()
        )
    };
    let f = dir.path().join("ds.yaml");
    std::fs::write(&f, ds("one")).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let per_node = |want: &str| {
        let pods = get_json(c, &["pods", "-l", "app=agent"]).unwrap()["items"].as_array().cloned().unwrap_or_default();
        let live: Vec<&Value> = pods.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect();
        let mut nodes: Vec<&str> = live.iter().map(|p| p["spec"]["nodeName"].as_str().unwrap_or("")).collect();
        nodes.sort();
        nodes == ["n1", "n2", "n3"] && live.iter().all(|p| greeting_of(p) == want)
    };
    assert!(eventually(Duration::from_secs(30), || per_node("one")), "{}", c.ok(&["get", "pods", "-o", "wide"]));
    let d = get_json(c, &["daemonset", "agent"]).unwrap();
    assert_eq!(d["status"]["desiredNumberScheduled"], 3);
    assert!(eventually(
        Duration::from_secs(10),
        || get_json(c, &["daemonset", "agent"]).unwrap()["status"]["numberReady"] == 3
    ));

    // A template change rolls to every node.
    std::fs::write(&f, ds("two")).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(60), || per_node("two")), "{}", c.ok(&["get", "pods", "-o", "wide"]));

    // The scheduler spreads a Deployment's replicas over the nodes.
    std::fs::write(dir.path().join("web.yaml"), deployment(&wasm, "v1").replace("replicas: 3", "replicas: 6")).unwrap();
    c.ok(&["apply", "-f", dir.path().join("web.yaml").to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(30), || available(c).len() == 6));
    let mut count = std::collections::BTreeMap::new();
    for p in available(c) {
        *count.entry(p["spec"]["nodeName"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(count.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{count:?}");

    // Cordoning a node keeps new pods off it.
    let node = get_json(c, &["node", "n3"]).unwrap();
    let mut n = node.clone();
    n["spec"]["unschedulable"] = true.into();
    n["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    std::fs::write(dir.path().join("n3.json"), n.to_string()).unwrap();
    c.ok(&["apply", "-f", dir.path().join("n3.json").to_str().unwrap()]);
    c.ok(&["scale", "deployment/web", "--replicas", "9"]);
    assert!(eventually(Duration::from_secs(30), || available(c).len() == 9));
    let on_n3 = available(c).iter().filter(|p| p["spec"]["nodeName"] == "n3").count();
    assert_eq!(on_n3, 2, "new replicas went to the cordoned node");
}

#[test]
fn cronjobs_start_jobs_on_schedule() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let f = dir.path().join("cj.yaml");
    std::fs::write(
        &f,
        format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: tick\nspec:\n  schedule: \"* * * * *\"\n  concurrencyPolicy: Forbid\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n            - name: work\n              image: file://{}\n",
            wasm.join("batch-job.wasm").display()
        ),
    )
    .unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    // Pretend the last run was three minutes ago: the missed minutes collapse into one run now,
    // instead of this test waiting for the clock.
    let three_min_ago =
        (chrono::Utc::now() - chrono::Duration::minutes(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let k = common::kube_client(&c.kubeconfig()).await;
        let req = http::Request::builder()
            .method("PATCH")
            .uri("/apis/batch/v1/namespaces/default/cronjobs/tick/status")
            .header("content-type", "application/merge-patch+json")
            .body(kube::client::Body::from(
                serde_json::to_vec(&serde_json::json!({"status": {"lastScheduleTime": three_min_ago}})).unwrap(),
            ))
            .unwrap();
        assert!(k.send(req).await.unwrap().status().is_success());
    });
    let jobs = || get_json(&c, &["jobs"]).unwrap()["items"].as_array().cloned().unwrap_or_default();
    assert!(eventually(Duration::from_secs(30), || jobs().len() == 1), "no job started: {}", c.log());
    let j = &jobs()[0];
    let name = j["metadata"]["name"].as_str().unwrap();
    let minutes: i64 = name.strip_prefix("tick-").unwrap().parse().unwrap();
    assert!((chrono::Utc::now().timestamp() / 60 - minutes).abs() <= 1, "{name} is not this minute's run");
    assert!(eventually(Duration::from_secs(30), || {
        get_json(&c, &["cronjob", "tick"]).unwrap()["status"]["lastSuccessfulTime"].is_string()
    }));
    // One run for the three missed minutes. (A run for a later minute is the schedule going
    // on, if the clock passed a minute boundary meanwhile.)
    let minute_of = |j: &Value| -> i64 {
        j["metadata"]["name"].as_str().and_then(|n| n.strip_prefix("tick-")).and_then(|m| m.parse().ok()).unwrap_or(0)
    };
    let missed = jobs().iter().filter(|j| minute_of(j) <= minutes).count();
    assert_eq!(missed, 1, "the missed runs became one");
    // Deleting the CronJob removes its jobs.
    c.ok(&["delete", "cronjob", "tick"]);
    assert!(eventually(Duration::from_secs(30), || jobs().is_empty()));
}

#[test]
fn orphan_and_foreground_deletion() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let f = dir.path().join("web.yaml");
    std::fs::write(&f, deployment(&wasm, "v1").replace("replicas: 3", "replicas: 2")).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    let pods = || get_json(&c, &["pods", "-l", "app=web"]).unwrap()["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(pods().len(), 2);

    // Orphan: the Deployment goes, its ReplicaSet and pods stay, without the owner reference.
    c.ok(&["delete", "deployment", "web", "--cascade=orphan"]);
    assert!(get_json(&c, &["deployment", "web"]).is_none());
    let sets = get_json(&c, &["replicasets"]).unwrap()["items"].as_array().cloned().unwrap();
    assert_eq!(sets.len(), 1);
    assert!(sets[0]["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty), "{}", sets[0]["metadata"]);
    assert_eq!(pods().len(), 2, "orphaned pods must stay");

    // Foreground: the ReplicaSet is gone only after its pods are.
    let rs = sets[0]["metadata"]["name"].as_str().unwrap().to_string();
    c.ok(&["delete", "replicaset", &rs, "--cascade=foreground"]);
    assert!(get_json(&c, &["replicaset", &rs]).is_none());
    assert!(pods().is_empty(), "the owner went before its dependents: {:?}", pods());
}

/// SIGKILL the whole control plane (and its node) in the middle of creating replicas, then
/// start it again: it converges to exactly the declared state.
#[test]
fn converges_after_being_killed_mid_rollout() {
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let cidr = common::cluster_cidr();
    let args = ["--node-name", "n1", "--backoff-base", "1", "--cluster-cidr", cidr.as_str()];
    let mut c = Cluster::start_with(dir.path(), &args);
    let f = dir.path().join("web.yaml");
    std::fs::write(&f, deployment(&wasm, "v1").replace("replicas: 3", "replicas: 40")).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let count =
        |c: &Cluster| get_json(c, &["pods", "-l", "app=web"]).map_or(0, |l| l["items"].as_array().map_or(0, Vec::len));
    // Kill as soon as the work is under way but not finished.
    assert!(eventually(Duration::from_secs(30), || count(&c) > 0));
    c.kill();
    let c = Cluster::start_with(dir.path(), &args);
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout", "90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    assert!(eventually(Duration::from_secs(30), || available(&c).len() == 40));
    assert_eq!(count(&c), 40, "duplicates after the restart");
    assert_eq!(get_json(&c, &["replicasets"]).unwrap()["items"].as_array().unwrap().len(), 1);
}

/// The classic `nginx-deployment` from manifests/, with its wasm image: three Running pods,
/// and `get events -w` shows the chain as it happens.
#[test]
fn the_classic_nginx_deployment_runs() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let f = common::manifests_dir().join("nginx-deployment.yaml");
    let mut watch = std::process::Command::new(common::BIN)
        .args(["get", "events", "-w"])
        .env("KUBECONFIG", c.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = watch.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(l);
        }
    });
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    c.ok(&["rollout", "status", "deployment/nginx-deployment", "--timeout", "60s"]);
    let table = c.ok(&["get", "pods", "-l", "app=nginx"]);
    assert_eq!(table.lines().filter(|l| l.contains("1/1") && l.contains("Running")).count(), 3, "{table}");
    let chain = ["ScalingReplicaSet", "SuccessfulCreate", "Scheduled", "Pulled", "Started"];
    let seen = eventually(Duration::from_secs(15), || {
        let l = lines.lock().unwrap();
        chain.iter().all(|r| l.iter().any(|x| x.contains(r)))
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen, "get events -w showed: {:?}", lines.lock().unwrap());
}

/// ReplicationController (core/v1), as old manifests and clients still send it: a ReplicaSet
/// with an equality selector. Its selector and labels default from the template; it creates,
/// heals and scales its pods (through `scale`), and deleting it takes its pods.
#[test]
fn replication_controllers_keep_their_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let f = dir.path().join("rc.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: old\nspec:\n  replicas: 2\n  template:\n    metadata:\n      labels: {app: old}\n    spec:\n      containers:\n        - name: web\n          image: wasmorch.local/hello-http:1.0\n",
    )
    .unwrap();
    assert_eq!(c.ok(&["apply", "-f", f.to_str().unwrap()]).trim(), "replicationcontroller/old created");
    let rc = get_json(&c, &["rc", "old"]).unwrap();
    assert_eq!(rc["spec"]["selector"]["app"], "old");
    assert_eq!(rc["metadata"]["labels"]["app"], "old");
    let running = |n: usize| {
        eventually(Duration::from_secs(60), || {
            let pods =
                get_json(&c, &["pods", "-l", "app=old"]).unwrap()["items"].as_array().cloned().unwrap_or_default();
            let live: Vec<&Value> = pods.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect();
            live.len() == n
                && live.iter().all(|p| p["status"]["phase"] == "Running")
                && live.iter().all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController")
                && get_json(&c, &["rc", "old"]).unwrap()["status"]["readyReplicas"] == n
        })
    };
    assert!(running(2), "{}", c.ok(&["get", "pods", "-o", "wide"]));
    // Heals: a deleted pod is replaced.
    let first =
        get_json(&c, &["pods", "-l", "app=old"]).unwrap()["items"][0]["metadata"]["name"].as_str().unwrap().to_string();
    c.ok(&["delete", "pod", &first]);
    assert!(running(2));
    c.ok(&["scale", "rc/old", "--replicas=3"]);
    assert!(running(3), "{}", c.ok(&["get", "pods"]));
    assert!(c.ok(&["get", "rc"]).contains("old    3         3         3"), "{}", c.ok(&["get", "rc"]));
    c.ok(&["delete", "rc", "old"]);
    assert!(eventually(Duration::from_secs(30), || {
        get_json(&c, &["pods", "-l", "app=old"]).unwrap()["items"].as_array().is_none_or(Vec::is_empty)
    }));
}
