//! kubectl, the Python client and kube-rs read, write, watch and patch: core objects, a
//! Deployment's lifecycle, typed APIs and older API versions.

use super::*;

#[test]
fn kubectl_gets_creates_and_deletes() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = node_cluster(dir.path(), &common::node_address());

    // No version-skew warning: the server claims kubectl's minor version.
    let v = kubectl(&c, &["version"]);
    assert!(v.status.success());
    assert!(!String::from_utf8_lossy(&v.stderr).contains("WARNING"), "{}", String::from_utf8_lossy(&v.stderr));

    let ns = ok(&c, &["get", "ns"]);
    assert!(ns.starts_with("NAME              STATUS   AGE\ndefault           Active"), "{ns}");
    for n in ["kube-system", "kube-node-lease", "kube-public"] {
        assert!(ns.contains(n), "{ns}");
    }

    let m = common::manifests_dir();
    let out = ok(&c, &["create", "-f", m.join("hello.yaml").to_str().unwrap()]);
    assert_eq!(out, "deployment.apps/hello created\nservice/hello created\n");
    let out = ok(&c, &["create", "-f", m.join("namespace.yaml").to_str().unwrap()]);
    assert!(out.contains("pod/echo created"), "{out}");

    let pods = ok(&c, &["get", "pods", "-o", "wide", "-A"]);
    assert!(
        pods.lines().next().unwrap().split_whitespace().collect::<Vec<_>>()
            == [
                "NAMESPACE",
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE",
                "NOMINATED",
                "NODE",
                "READINESS",
                "GATES"
            ],
        "{pods}"
    );
    assert!(pods.contains("echo"), "{pods}");

    let y = ok(&c, &["get", "deploy", "hello", "-o", "yaml"]);
    assert!(y.contains("kind: Deployment") && y.contains("replicas: 2"), "{y}");
    // The image is built in: both replicas become available.
    let mut table = String::new();
    let available = common::eventually(std::time::Duration::from_secs(60), || {
        table = ok(&c, &["get", "deploy"]);
        table.starts_with("NAME    READY   UP-TO-DATE   AVAILABLE   AGE\nhello   2/2     ")
    });
    assert!(available, "{table}");
    let svc = ok(&c, &["get", "svc", "hello", "-o", "jsonpath={.spec.ports[0].port}"]);
    assert_eq!(svc, "80");

    // Strict validation on the server: kubectl create names the unknown field.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\nbogus: 1\n").unwrap();
    let o = kubectl(&c, &["create", "-f", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown field \"bogus\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // kubectl logs reads a pod's output through the pods/log subresource.
    let job = dir.path().join("job.yaml");
    let wasm = common::workloads().join("batch-job.wasm");
    std::fs::write(&job, format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\nspec:\n  nodeName: n1\n  restartPolicy: Never\n  containers:\n    - name: main\n      image: file://{}\n", wasm.display())).unwrap();
    ok(&c, &["create", "-f", job.to_str().unwrap()]);
    let done = common::eventually(std::time::Duration::from_secs(60), || {
        ok(&c, &["get", "pod", "job", "-o", "jsonpath={.status.phase}"]) == "Succeeded"
    });
    assert!(done, "job pod did not succeed");
    assert_eq!(ok(&c, &["logs", "job"]), "primes below 100000: 9592\n");
    assert_eq!(ok(&c, &["logs", "pod/job", "--tail", "1"]), "primes below 100000: 9592\n");
    ok(&c, &["delete", "pod", "job"]);

    let out = ok(&c, &["delete", "deploy", "hello"]);
    assert!(out.starts_with("deployment.apps \"hello\" deleted"), "{out}");
    let o = kubectl(&c, &["get", "deploy", "hello"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "Error from server (NotFound): deployments.apps \"hello\" not found"
    );
    let o = kubectl(&c, &["get", "pods"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "No resources found in default namespace.");
    ok(&c, &["delete", "ns", "team-a"]);
    let o = kubectl(&c, &["get", "pods", "-n", "team-a"]);
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "No resources found in team-a namespace.");
}

/// An application's life with the real kubectl: apply, rollout status, scale, diff, update,
/// history, undo, logs of a deployment, delete — asserting on kubectl's output and exit codes.
#[test]
fn kubectl_drives_a_deployment_lifecycle() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let text = std::fs::read_to_string(common::manifests_dir().join("nginx-deployment.yaml")).unwrap();
    let f = dir.path().join("d.yaml");
    std::fs::write(&f, &text).unwrap();
    let file = f.to_str().unwrap();
    let d = "deployment/nginx-deployment";

    assert_eq!(ok(&c, &["apply", "-f", file]), "deployment.apps/nginx-deployment created\n");
    assert!(ok(&c, &["rollout", "status", d, "--timeout=60s"]).ends_with("successfully rolled out\n"));
    assert_eq!(ok(&c, &["scale", d, "--replicas=5"]), "deployment.apps/nginx-deployment scaled\n");
    assert!(common::eventually(std::time::Duration::from_secs(30), || {
        ok(&c, &["get", d, "-o", "jsonpath={.status.availableReplicas}"]) == "5"
    }));

    // diff: exit 1 with the change shown, nothing changed on the server.
    std::fs::write(
        &f,
        text.replace("replicas: 3", "replicas: 5")
            .replace("containerPort: 8080\n", "containerPort: 8080\n          env: [{name: GREETING, value: v2}]\n"),
    )
    .unwrap();
    let o = kubectl(&c, &["diff", "-f", file]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("+          value: v2"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(ok(&c, &["get", d, "-o", "jsonpath={.metadata.generation}"]), "2", "diff changed the object");

    assert_eq!(ok(&c, &["apply", "-f", file]), "deployment.apps/nginx-deployment configured\n");
    assert!(ok(&c, &["rollout", "status", d, "--timeout=60s"]).ends_with("successfully rolled out\n"));
    assert_eq!(kubectl(&c, &["diff", "-f", file]).status.code(), Some(0));
    assert_eq!(ok(&c, &["apply", "-f", file]), "deployment.apps/nginx-deployment unchanged\n");
    let hist = ok(&c, &["rollout", "history", d]);
    assert!(hist.contains("REVISION  CHANGE-CAUSE\n1         <none>\n2         <none>"), "{hist}");

    assert_eq!(ok(&c, &["rollout", "undo", d]), "deployment.apps/nginx-deployment rolled back\n");
    assert!(ok(&c, &["rollout", "status", d, "--timeout=60s"]).ends_with("successfully rolled out\n"));
    let sets = ok(&c, &["get", "rs", "-o", "jsonpath={range .items[*]}{.spec.replicas} {end}"]);
    assert_eq!(sets.split_whitespace().filter(|n| *n != "0").count(), 1, "undo reuses the first set: {sets}");
    assert_eq!(
        ok(&c, &["get", d, "-o", "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}"]),
        "3"
    );

    let logs = kubectl(&c, &["logs", d, "--tail=1"]);
    assert!(logs.status.success(), "{}", String::from_utf8_lossy(&logs.stderr));
    let desc = ok(&c, &["describe", d]);
    assert!(desc.contains("ScalingReplicaSet"), "{desc}");

    // cordon + drain evicts the pods through pods/eviction; their replacements wait until
    // uncordon.
    assert_eq!(ok(&c, &["cordon", "n1"]), "node/n1 cordoned\n");
    assert!(ok(&c, &["get", "nodes"]).contains("Ready,SchedulingDisabled"));
    let drained = ok(&c, &["drain", "n1", "--ignore-daemonsets", "--timeout=60s"]);
    assert!(drained.contains("evicted") && drained.ends_with("node/n1 drained\n"), "{drained}");
    let pending = ok(&c, &["get", "pods", "-o", "jsonpath={range .items[*]}{.spec.nodeName}|{end}"]);
    assert!(pending.split('|').all(str::is_empty), "replacements were placed on the cordoned node: {pending}");
    assert_eq!(ok(&c, &["uncordon", "n1"]), "node/n1 uncordoned\n");
    assert!(ok(&c, &["rollout", "status", d, "--timeout=60s"]).ends_with("successfully rolled out\n"));

    // Server-side apply: creates, then merges the configuration into the live object.
    let cm = dir.path().join("cm.yaml");
    std::fs::write(&cm, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\n").unwrap();
    let cmf = cm.to_str().unwrap();
    assert_eq!(ok(&c, &["apply", "--server-side", "-f", cmf]), "configmap/ssa serverside-applied\n");
    std::fs::write(&cm, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"2\"\n").unwrap();
    assert_eq!(ok(&c, &["apply", "--server-side", "-f", cmf]), "configmap/ssa serverside-applied\n");
    assert_eq!(ok(&c, &["get", "cm", "ssa", "-o", "jsonpath={.data.a}"]), "2");
    assert!(ok(&c, &["api-resources"]).lines().any(|l| l.starts_with("deployments") && l.contains("apps/v1")));
    assert!(ok(&c, &["events"]).contains("ScalingReplicaSet"));

    assert!(ok(&c, &["delete", "-f", file]).starts_with("deployment.apps \"nginx-deployment\" deleted"));
    assert!(common::eventually(std::time::Duration::from_secs(30), || {
        kubectl(&c, &["get", "pods", "-o", "name"]).stdout.is_empty()
    }));
}

/// The official Python client (PyPI `kubernetes`): typed list, create, patch, scale, delete,
/// and a watch without a resourceVersion (`tests/python/client.py`).
#[test]
fn python_client_lists_watches_and_patches() {
    let have = Command::new("python3").args(["-c", "import kubernetes"]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("WASMORCH_REQUIRE_PEERS").is_err(), "the Python kubernetes client is required");
        eprintln!("SKIPPED: python3 -m pip install kubernetes");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--no-node"]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
    let o = Command::new("python3").arg(script).env("KUBECONFIG", c.kubeconfig()).output().unwrap();
    assert!(
        o.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "python client: ok\n");
}

/// kube-rs, typed: list, create, patch (merge, strategic, server-side apply), delete, and its
/// watcher in streaming-list mode (WatchList: initial events then the `initial-events-end`
/// bookmark), which must see what existed, then live changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_typed_api_and_streaming_list_watcher() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use kube::runtime::watcher::{self, Event};
    use std::collections::BTreeSet;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let client = common::kube_client(&c.kubeconfig()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let cm = |name: &str, v: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"suite": "kube-rs"}},
            "data": {"k": v}
        }))
        .unwrap()
    };
    for n in ["a", "b"] {
        cms.create(&PostParams::default(), &cm(n, "1")).await.unwrap();
    }
    let listed = cms.list(&ListParams::default().labels("suite=kube-rs")).await.unwrap();
    assert_eq!(listed.items.len(), 2);

    // Watch in streaming-list mode: the two objects arrive as InitApply, then InitDone.
    let cfg = watcher::Config::default().labels("suite=kube-rs").streaming_lists();
    let mut stream = watcher::watcher(cms.clone(), cfg).boxed();
    let mut init = BTreeSet::new();
    macro_rules! next {
        () => {
            tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("watcher event within 10s")
                .expect("stream open")
        };
    }
    loop {
        match next!().expect("watch error") {
            Event::Init => {}
            Event::InitApply(o) => {
                init.insert(o.metadata.name.unwrap());
            }
            Event::InitDone => break,
            e => panic!("unexpected event before InitDone: {e:?}"),
        }
    }
    assert_eq!(init, BTreeSet::from(["a".to_string(), "b".to_string()]));

    // Merge patch, strategic merge patch and server-side apply through the typed API.
    let pp = PatchParams::default();
    let merged = cms.patch("a", &pp, &Patch::Merge(serde_json::json!({"data": {"m": "x"}}))).await.unwrap();
    assert_eq!(merged.data.as_ref().unwrap()["m"], "x");
    let smp = cms.patch("a", &pp, &Patch::Strategic(serde_json::json!({"data": {"k": null}}))).await.unwrap();
    assert!(!smp.data.as_ref().unwrap().contains_key("k"), "{smp:?}");
    let applied = cms.patch("c", &PatchParams::apply("kube-rs-test"), &Patch::Apply(cm("c", "applied"))).await.unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["k"], "applied");
    cms.delete("b", &DeleteParams::default()).await.unwrap();

    // The watcher sees each change, in order.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match next!().expect("watch error") {
            Event::Apply(o) => seen.push(format!("apply {}", o.metadata.name.unwrap())),
            Event::Delete(o) => seen.push(format!("delete {}", o.metadata.name.unwrap())),
            e => panic!("unexpected event: {e:?}"),
        }
    }
    assert_eq!(seen, ["apply a", "apply a", "apply c", "delete b"]);

    // A typed error: a conflict on create is a 409 with Kubernetes' reason.
    match cms.create(&PostParams::default(), &cm("a", "again")).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
}

/// An `autoscaling/v1` manifest through kubectl: client-side apply creates it and patches it
/// (a strategic merge patch against the v1 form); each version reads it in its own shape.
#[test]
fn kubectl_applies_and_reads_autoscaling_v1() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let f = dir.path().join("hpa.yaml");
    let manifest = |pct: u32| {
        format!(
            "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  maxReplicas: 5\n  targetCPUUtilizationPercentage: {pct}\n"
        )
    };
    std::fs::write(&f, manifest(40)).unwrap();
    let file = f.to_str().unwrap();
    assert_eq!(ok(&c, &["apply", "-f", file]).trim(), "horizontalpodautoscaler.autoscaling/web created");
    std::fs::write(&f, manifest(70)).unwrap();
    assert_eq!(ok(&c, &["apply", "-f", file]).trim(), "horizontalpodautoscaler.autoscaling/web configured");
    let v1 = ok(
        &c,
        &[
            "get",
            "horizontalpodautoscalers.v1.autoscaling",
            "web",
            "-o",
            "jsonpath={.apiVersion} {.spec.targetCPUUtilizationPercentage}",
        ],
    );
    assert_eq!(v1, "autoscaling/v1 70");
    let v2 = ok(
        &c,
        &["get", "hpa", "web", "-o", "jsonpath={.apiVersion} {.spec.metrics[0].resource.target.averageUtilization}"],
    );
    assert_eq!(v2, "autoscaling/v2 70");
    let table = ok(&c, &["get", "horizontalpodautoscalers.v1.autoscaling"]);
    assert!(table.starts_with("NAME") && table.contains("Deployment/web"), "{table}");
    let versions = ok(&c, &["api-versions"]);
    assert!(versions.contains("autoscaling/v1\n") && versions.contains("autoscaling/v2\n"), "{versions}");
}
