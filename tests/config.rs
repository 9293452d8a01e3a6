//! Configuration, secrets and storage end to end: the examples in `manifests/storage/` applied
//! to `wasmorch up`, checked through hello-http, which reports its environment and files.

mod common;

use common::{Cluster, eventually, get_json, http_get, http_request, workloads};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// `up` with node n1, a 1 s config refresh and `allowed` as its one hostPath root.
fn cluster(dir: &Path) -> Cluster {
    let allowed = dir.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    Cluster::start_with(
        dir,
        &[
            "--node-name",
            "n1",
            "--backoff-base",
            "1",
            "--cluster-cidr",
            &common::cluster_cidr(),
            "--config-sync-period",
            "1",
            "--allow-host-path",
            allowed.to_str().unwrap(),
        ],
    )
}

/// Apply a manifest from `manifests/storage/`, with `/srv/wasmorch` at the test's allowed
/// directory; `edit` changes the text further.
fn apply_example(c: &Cluster, dir: &Path, file: &str, edit: impl Fn(String) -> String) {
    let text = std::fs::read_to_string(common::manifests_dir().join("storage").join(file)).unwrap();
    let text = text.replace("/srv/wasmorch", dir.join("allowed").to_str().unwrap());
    let f = dir.join(file);
    std::fs::write(&f, edit(text)).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
}

fn apply_text(c: &Cluster, dir: &Path, name: &str, text: &str) -> std::process::Output {
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, text).unwrap();
    c.cli(&["apply", "-f", f.to_str().unwrap()])
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

fn ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["containerStatuses"].as_array().is_some_and(|a| a.iter().all(|s| s["ready"] == true))
}

fn waiting_reason(p: &Value) -> (String, String) {
    let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    (w["reason"].as_str().unwrap_or("").to_string(), w["message"].as_str().unwrap_or("").to_string())
}

fn file(addr: &str, path: &str) -> (u16, String) {
    http_get(addr, &format!("/file?path={path}")).unwrap()
}

fn store_file(dir: &Path) -> std::path::PathBuf {
    dir.join("data/state.redb")
}

#[test]
fn config_maps_and_secrets_reach_env_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut c = cluster(d);
    let marker = format!("s3cret-{}", std::process::id() as u64 * 7919 + 12345);
    apply_example(&c, d, "config-env-and-files.yaml", |t| t.replace("s3cret-value", &marker));
    let p = wait_pod(&c, "reader", "became ready", ready);
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let (main, side) = (format!("{ip}:8080"), format!("{ip}:8081"));
    let env = |name: &str| http_get(&main, &format!("/env/{name}")).unwrap();

    // Environment: key refs, envFrom with a prefix, optional refs, the downward API, resources.
    assert_eq!(env("GREETING"), (200, "hello\n".into()));
    assert_eq!(env("PASSWORD"), (200, format!("{marker}\n")));
    assert_eq!(env("CFG_greeting"), (200, "hello\n".into()));
    assert_eq!(env("MAYBE").0, 404, "an optional ref to a missing ConfigMap sets nothing");
    assert_eq!(env("MY_NAME").1, "reader\n");
    assert_eq!(env("MY_APP").1, "reader\n");
    assert_eq!(env("MY_NODE").1, "n1\n");
    assert_eq!(env("MY_IP").1, format!("{ip}\n"));
    assert_eq!(env("MEM_MI").1, "64\n");

    // Files: whole objects, picked items, secrets, the downward API, a subPath file.
    assert_eq!(file(&main, "/config/greeting"), (200, "hello".into()));
    assert_eq!(file(&main, "/picked/sub/greet.txt"), (200, "hello".into()));
    assert_eq!(file(&main, "/picked/greeting").0, 404, "items project only what they list");
    assert_eq!(file(&main, "/secret/password"), (200, marker.clone()));
    assert!(file(&main, "/podinfo/labels").1.contains("app=\"reader\""));
    assert_eq!(file(&main, "/podinfo/name").1, "reader");
    assert_eq!(file(&main, "/etc/app/app.yaml"), (200, "color: blue\n".into()));
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let pod_dir = d.join(format!("data/node/pods/default_reader_{uid}"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pod_dir.join("volumes/secret/password")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400, "defaultMode applies on the node");
    }

    // Read-only mounts refuse writes; nothing outside the mounts is reachable, `..` included.
    // (Refusals are the component's own I/O errors, answered as `error: …`.)
    let (code, body) = http_request(&main, "PUT", "/file?path=/config/new", "x").unwrap();
    assert!(code != 200 && body.starts_with("error:"), "wrote into a ConfigMap volume: {code} {body}");
    assert!(!pod_dir.join("volumes/config/new").exists());
    let (code, body) = http_request(&main, "PUT", "/file?path=/secret/password", "x").unwrap();
    assert!(code != 200 && body.starts_with("error:"), "{code} {body}");
    for escape in ["/config/../../../../etc/hostname", "/config/../secret/password", "/etc/hostname", "/scratch/../.."]
    {
        let (code, body) = file(&main, escape);
        assert!(code != 200 && body.starts_with("error:"), "{escape}: {code} {body}");
    }
    let (code, body) = http_get(&main, "/ls?path=/config/..").unwrap();
    assert!(code != 200 && body.starts_with("error:"), "{code} {body}");
    eprintln!("escape refusal, for the record: {code} {}", body.trim());

    // Two containers share the emptyDir.
    assert_eq!(http_request(&main, "PUT", "/file?path=/scratch/note.txt", "from main").unwrap().0, 200);
    assert_eq!(file(&side, "/shared/note.txt"), (200, "from main".into()));

    // An update of the ConfigMap reaches the mounted file while the pod runs; the subPath
    // copy stays as it was (as in Kubernetes).
    let cm = get_json(&c, &["configmap", "app-config"]).unwrap();
    let mut cm2 = cm.clone();
    cm2["data"]["greeting"] = "changed".into();
    cm2["data"]["app.yaml"] = "color: red\n".into();
    std::fs::write(d.join("cm2.json"), serde_json::to_string(&cm2).unwrap()).unwrap();
    c.ok(&["apply", "-f", d.join("cm2.json").to_str().unwrap()]);
    let updated = eventually(Duration::from_secs(20), || file(&main, "/config/greeting").1 == "changed");
    assert!(updated, "the mounted file never changed: {:?}", file(&main, "/config/greeting"));
    assert_eq!(file(&main, "/picked/sub/greet.txt").1, "changed");
    assert_eq!(file(&main, "/etc/app/app.yaml").1, "color: blue\n");

    // `immutable: true` is honoured.
    let frozen = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: frozen\nimmutable: true\ndata:\n  k: v1\n";
    assert!(apply_text(&c, d, "frozen", frozen).status.success());
    let o = apply_text(&c, d, "frozen2", &frozen.replace("k: v1", "k: v2"));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("field is immutable"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The Secret's value is in no event, no node or server log, and not in the store file.
    let events = c.ok(&["get", "events", "-o", "json"]);
    assert!(!events.contains(&marker));
    assert!(!c.log().contains(&marker));
    // The store file and its write-ahead log, where writes since the last checkpoint are.
    let mut raw = std::fs::read(store_file(d)).unwrap();
    let log = wasmorch_control::store::wal_path(&store_file(d));
    raw.extend(std::fs::read(&log).unwrap_or_else(|e| panic!("reading {}: {e}", log.display())));
    let b64 = base64_of(&marker);
    for needle in [marker.as_bytes(), b64.as_bytes()] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle), "the store or its log holds the secret in the clear");
    }
    // The ConfigMap's value is found by the same search: the search is sound.
    assert!(raw.windows(7).any(|w| w == b"changed"));

    // Deleting the pod removes its emptyDir and projected files.
    c.ok(&["delete", "pod", "reader"]);
    assert!(eventually(Duration::from_secs(30), || !pod_dir.join("volumes").exists()), "volumes left behind");

    // Key rotation (server stopped) keeps every Secret readable.
    let key_before = std::fs::read_to_string(d.join("data/state.key")).unwrap();
    // Every Secret is re-sealed: this test's, and the cluster's own (the join token, the
    // node's key record).
    let secrets = get_json(&c, &["secrets", "-A"]).unwrap()["items"].as_array().unwrap().len();
    assert!(secrets >= 3, "{secrets}");
    c.stop();
    let out = c.cli(&["rotate-secrets-key", "--data-dir", d.join("data").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("re-sealed {secrets} secrets")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_ne!(std::fs::read_to_string(d.join("data/state.key")).unwrap(), key_before);
    let c = cluster(d);
    let s = get_json(&c, &["secret", "app-secret"]).unwrap();
    assert_eq!(s["data"]["password"], b64.as_str());
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn missing_references_bad_mounts_claims_and_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = cluster(d);
    let hello = format!("file://{}", workloads().join("hello_http.wasm").display());
    let pod_with = |name: &str, extra_container: &str, volumes: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n    - name: main\n      image: {hello}\n      ports:\n        - containerPort: 8080\n{extra_container}{volumes}"
        )
    };

    // A missing ConfigMap: CreateContainerConfigError naming it, until it is created.
    let env =
        "      env:\n        - name: X\n          valueFrom:\n            configMapKeyRef: {name: later, key: x}\n";
    assert!(apply_text(&c, d, "needs", &pod_with("needs", env, "")).status.success());
    let p = wait_pod(&c, "needs", "waited for its ConfigMap", |p| waiting_reason(p).0 == "CreateContainerConfigError");
    assert_eq!(waiting_reason(&p).1, "configmap \"later\" not found");
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: later\ndata:\n  y: v\n";
    assert!(apply_text(&c, d, "later", cm).status.success());
    let p = wait_pod(&c, "needs", "reported the missing key", |p| waiting_reason(p).1.contains("couldn't find key"));
    assert_eq!(waiting_reason(&p).1, "couldn't find key x in ConfigMap default/later");
    assert!(apply_text(&c, d, "later", &cm.replace("y: v", "x: v")).status.success());
    let p = wait_pod(&c, "needs", "started once its ConfigMap came", ready);
    let ip = p["status"]["podIP"].as_str().unwrap();
    assert_eq!(http_get(&format!("{ip}:8080"), "/env/X").unwrap().1, "v\n");

    // A hostPath outside what the node allows is refused with the reason; a mountPath with
    // `..` too.
    let mounts = "      volumeMounts:\n        - {name: h, mountPath: /h}\n";
    let vols = "  volumes:\n    - name: h\n      hostPath: {path: /etc}\n";
    assert!(apply_text(&c, d, "etc", &pod_with("etc", mounts, vols)).status.success());
    let p = wait_pod(&c, "etc", "was refused", |p| waiting_reason(p).0 == "CreateContainerConfigError");
    assert!(waiting_reason(&p).1.contains("hostPath \"/etc\" is not under a directory this node allows"), "{p}");
    let mounts = "      volumeMounts:\n        - {name: e, mountPath: /a/../b}\n";
    let vols = "  volumes:\n    - name: e\n      emptyDir: {}\n";
    assert!(apply_text(&c, d, "dots", &pod_with("dots", mounts, vols)).status.success());
    let p = wait_pod(&c, "dots", "was refused", |p| waiting_reason(p).0 == "CreateContainerConfigError");
    assert!(waiting_reason(&p).1.contains("must not contain '..'"), "{p}");

    // An allowed hostPath: the pod reads what the node put there.
    std::fs::create_dir_all(d.join("allowed/shared")).unwrap();
    std::fs::write(d.join("allowed/shared/motd"), "from the node").unwrap();
    apply_example(&c, d, "hostpath.yaml", |t| t);
    let p = wait_pod(&c, "host-reader", "became ready", ready);
    let addr = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());
    assert_eq!(file(&addr, "/host/motd"), (200, "from the node".into()));
    let (code, body) = http_request(&addr, "PUT", "/file?path=/host/motd", "x").unwrap();
    assert!(code != 200 && body.starts_with("error:"), "readOnly: true: {code} {body}");
    assert_eq!(std::fs::read_to_string(d.join("allowed/shared/motd")).unwrap(), "from the node");

    // A claim: provisioned on the node of its first pod, bound, and its data outlives the pod.
    apply_example(&c, d, "pvc.yaml", |t| t);
    let p = wait_pod(&c, "keeper", "became ready", ready);
    let addr = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());
    assert_eq!(http_request(&addr, "PUT", "/file?path=/data/kept.txt", "still here").unwrap().0, 200);
    let pvc = get_json(&c, &["pvc", "data"]).unwrap();
    assert_eq!(pvc["status"]["phase"], "Bound");
    let pv = get_json(&c, &["pv", pvc["spec"]["volumeName"].as_str().unwrap()]).unwrap();
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0],
        "n1"
    );
    let table = c.ok(&["get", "pvc"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.split_whitespace().take(2).eq(["data", "Bound"])), "{table}");
    c.ok(&["delete", "pod", "keeper"]);
    assert!(eventually(Duration::from_secs(30), || get_json(&c, &["pod", "keeper"]).is_none()));
    apply_example(&c, d, "pvc.yaml", |t| t);
    let p = wait_pod(&c, "keeper", "came back", ready);
    let addr = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());
    assert_eq!(file(&addr, "/data/kept.txt"), (200, "still here".into()));
    // Once the claim and its pod are gone, the volume and its data go (reclaim policy Delete).
    let pv_name = pvc["spec"]["volumeName"].as_str().unwrap().to_string();
    let data_dir = pv["spec"]["hostPath"]["path"].as_str().unwrap().to_string();
    assert!(Path::new(&data_dir).join("kept.txt").exists());
    c.ok(&["delete", "pod", "keeper"]);
    c.ok(&["delete", "pvc", "data"]);
    let gone = eventually(Duration::from_secs(40), || {
        get_json(&c, &["pv", &pv_name]).is_none() && !Path::new(&data_dir).exists()
    });
    assert!(gone, "the released volume or its data stayed");

    // A claim that does not exist keeps its pod Pending, saying why.
    let mounts = "      volumeMounts:\n        - {name: v, mountPath: /v}\n";
    let vols = "  volumes:\n    - name: v\n      persistentVolumeClaim: {claimName: nope}\n";
    assert!(apply_text(&c, d, "noclaim", &pod_with("noclaim", mounts, vols)).status.success());
    common::events_with(&c, &[], &["FailedScheduling", "persistentvolumeclaim \"nope\" not found"]);

    // An emptyDir over its sizeLimit gets the pod evicted.
    let mounts = "      volumeMounts:\n        - {name: s, mountPath: /s}\n";
    let vols = "  volumes:\n    - name: s\n      emptyDir: {sizeLimit: 1Ki}\n";
    assert!(apply_text(&c, d, "hog", &pod_with("hog", mounts, vols)).status.success());
    let p = wait_pod(&c, "hog", "became ready", ready);
    let addr = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());
    assert_eq!(http_request(&addr, "PUT", "/file?path=/s/big", &"x".repeat(4096)).unwrap().0, 200);
    let p = wait_pod(&c, "hog", "was evicted", |p| p["status"]["phase"] == "Failed");
    assert_eq!(p["status"]["reason"], "Evicted");
    assert!(p["status"]["message"].as_str().unwrap().contains("Usage of EmptyDir volume \"s\" exceeds the limit"));
}

/// Two nodes: a claim's volume is made on the node of its first pod, and a later pod using
/// the claim is placed on that node again, finding the data.
#[test]
fn a_claim_keeps_its_pods_on_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = common::MultiNode::start(d, 2);
    let c = &m.cluster;
    apply_example(c, d, "pvc.yaml", |t| t);
    let p = wait_pod(c, "keeper", "became ready", ready);
    let node = p["spec"]["nodeName"].as_str().unwrap().to_string();
    let addr = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());
    assert_eq!(http_request(&addr, "PUT", "/file?path=/data/n.txt", &node).unwrap().0, 200);
    let pv = get_json(c, &["pv"]).unwrap()["items"][0].clone();
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0],
        node.as_str()
    );
    // The volume's directory is in that node's storage directory.
    let path = pv["spec"]["hostPath"]["path"].as_str().unwrap();
    let node_dir = d.join(format!("node{}", &node[1..])).canonicalize().unwrap();
    assert!(Path::new(path).starts_with(&node_dir), "{path} is not under {}", node_dir.display());
    // Recreated several times, the pod always lands on the claim's node.
    for _ in 0..3 {
        c.ok(&["delete", "pod", "keeper"]);
        assert!(eventually(Duration::from_secs(30), || get_json(c, &["pod", "keeper"]).is_none()));
        apply_example(c, d, "pvc.yaml", |t| t);
        let p = wait_pod(c, "keeper", "came back", ready);
        assert_eq!(p["spec"]["nodeName"], node.as_str());
        let addr = format!("{}:8080", p["status"]["podIP"].as_str().unwrap());
        assert_eq!(file(&addr, "/data/n.txt"), (200, node.clone()));
    }
}

/// The example controller written as a component (`manifests/pod-roster.yaml`): with its
/// service-account token it lists and watches pods and applies a ConfigMap through the API
/// (`wasi:http` to the `kubernetes` Service), following a Deployment as it scales; without
/// its RoleBinding, RBAC refuses it.
#[test]
fn a_controller_component_keeps_its_configmap_in_step_with_pods() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = cluster(d);
    let web = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{name: main, image: wasmorch.local/hello-http:1.0}]\n";
    assert!(apply_text(&c, d, "web", web).status.success());
    let roster = std::fs::read_to_string(common::manifests_dir().join("pod-roster.yaml"))
        .unwrap()
        .replace("app=hello", "app=web")
        .replace("hello-pods", "web-pods");
    let out = apply_text(&c, d, "roster", &roster);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The roster equals the ready pods' names and addresses.
    let in_step = |n: usize| {
        let pods = get_json(&c, &["pods", "-l", "app=web"]).unwrap_or(Value::Null);
        let want: std::collections::BTreeMap<String, String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
            .filter_map(|p| Some((p["metadata"]["name"].as_str()?.into(), p["status"]["podIP"].as_str()?.into())))
            .collect();
        let cm = get_json(&c, &["configmap", "web-pods"]).unwrap_or(Value::Null);
        let have: std::collections::BTreeMap<String, String> =
            serde_json::from_value(cm["data"].clone()).unwrap_or_default();
        want.len() == n && have == want
    };
    let show = || {
        format!(
            "{}\n{}",
            c.ok(&["get", "pods", "-o", "wide"]),
            String::from_utf8_lossy(&c.cli(&["get", "configmap", "web-pods", "-o", "yaml"]).stdout)
        )
    };
    assert!(eventually(Duration::from_secs(60), || in_step(2)), "{}", show());
    c.ok(&["scale", "deployment", "web", "--replicas", "3"]);
    assert!(eventually(Duration::from_secs(60), || in_step(3)), "{}", show());
    c.ok(&["scale", "deployment", "web", "--replicas", "1"]);
    assert!(eventually(Duration::from_secs(60), || in_step(1)), "{}", show());
    let cm = get_json(&c, &["configmap", "web-pods"]).unwrap();
    assert_eq!(cm["metadata"]["labels"]["app.kubernetes.io/managed-by"], "pod-roster", "the component's own apply");

    // Without its binding the same component is refused, by name.
    c.ok(&["delete", "rolebinding", "pod-roster"]);
    c.ok(&["delete", "pod", "-l", "app=pod-roster"]);
    let refused = || {
        let pods = get_json(&c, &["pods", "-l", "app=pod-roster"]).unwrap_or(Value::Null);
        pods["items"].as_array().into_iter().flatten().any(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            let logs = c.cli(&["logs", name]);
            let text = String::from_utf8_lossy(&logs.stdout);
            text.contains("system:serviceaccount:default:pod-roster") && text.contains("cannot list resource")
        })
    };
    assert!(eventually(Duration::from_secs(60), refused), "{}", c.ok(&["get", "pods"]));
}
