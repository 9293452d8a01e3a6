//! Images end to end: components downloaded over HTTP (pinned, verified, cached), pulled from a
//! real OCI registry (Debian's `docker-registry`), and from one that requires credentials
//! (`imagePullSecrets`).

mod common;

use common::{Cluster, apply, eventually, http_get, serve_file, wait_pod, workloads};
use serde_json::Value;
use std::time::Duration;

#[test]
fn images_over_http_are_pinned_verified_and_cached() {
    use sha2::Digest;
    let wasm = workloads();
    let bytes = std::fs::read(wasm.join("hello_http.wasm")).unwrap();
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    let (srv, hits) = serve_file(bytes);
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::with_node(dir.path());
    let image = |name: &str, img: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: n1\n  containers:\n    - name: main\n      image: \"{img}\"\n      ports:\n        - containerPort: 8080\n"
        )
    };
    let good = format!("http://{srv}/hello.wasm@sha256:{digest}");
    apply(&c, dir.path(), "a", &image("a", &good));
    let p = wait_pod(&c, "a", "ran", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    assert_eq!(p["status"]["containerStatuses"][0]["imageID"], format!("sha256:{digest}"));
    assert_eq!(http_get(&format!("{}:8080", p["status"]["podIP"].as_str().unwrap()), "/").unwrap().0, 200);
    // IfNotPresent: a second pod with the same image comes from the node's cache.
    apply(&c, dir.path(), "b", &image("b", &good));
    wait_pod(&c, "b", "ran", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "the image was downloaded again");

    let wrong = format!("http://{srv}/hello.wasm@sha256:{}", "0".repeat(64));
    apply(&c, dir.path(), "bad", &image("bad", &wrong));
    let p = wait_pod(&c, "bad", "refused the digest", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("digest mismatch"))
    });
    assert!(matches!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str(),
        Some("ErrImagePull" | "ImagePullBackOff")
    ));

    apply(&c, dir.path(), "unpinned", &image("unpinned", &format!("http://{srv}/hello.wasm")));
    let p = wait_pod(&c, "unpinned", "refused the reference", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "InvalidImage"
    });
    assert!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap().contains("must be pinned")
    );
}

/// A real OCI registry (Debian's `docker-registry`) on a free loopback port, storing in `dir`.
/// `None` when it is not installed and peers are not required.
fn registry(dir: &std::path::Path) -> Option<(common::Daemon, String)> {
    registry_with(dir, None)
}

/// The same, requiring basic authentication against an htpasswd file when given.
fn registry_with(dir: &std::path::Path, htpasswd: Option<&std::path::Path>) -> Option<(common::Daemon, String)> {
    if std::process::Command::new("docker-registry").arg("--version").output().is_err() {
        assert!(
            std::env::var("WASMORCH_REQUIRE_PEERS").is_err(),
            "docker-registry is required (apt-get install docker-registry)"
        );
        eprintln!("skipping: docker-registry not installed");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: {addr}\n{}",
            dir.join("registry").display(),
            htpasswd.map_or(String::new(), |p| format!(
                "auth:\n  htpasswd:\n    realm: wasmorch-test\n    path: {}\n",
                p.display()
            )),
        ),
    )
    .unwrap();
    let d = common::Daemon::spawn_program("docker-registry", &["serve", cfg.to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(20), || http_get(&addr, "/v2/").is_ok_and(|(c, _)| c == 200 || c == 401)),
        "registry did not start: {:?}",
        d.log.lock().unwrap()
    );
    Some((d, addr))
}

#[test]
fn images_from_an_oci_registry() {
    use sha2::Digest;
    let wasm = workloads();
    let dir = tempfile::tempdir().unwrap();
    let Some((mut reg, addr)) = registry(dir.path()) else { return };
    let c = Cluster::with_node(dir.path());
    let file = wasm.join("hello_http.wasm");
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()));
    let reference = format!("{addr}/demo/hello:1.0");
    let out = c.ok(&["push", file.to_str().unwrap(), &reference]);
    assert!(out.contains(&format!("pushed {reference}")), "{out}");

    let image = |name: &str, img: &str, policy: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: n1\n  containers:\n    - name: main\n      image: \"{img}\"\n      imagePullPolicy: {policy}\n      ports:\n        - containerPort: 8080\n"
        )
    };
    apply(&c, dir.path(), "a", &image("a", &reference, "IfNotPresent"));
    let p = wait_pod(&c, "a", "ran", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    assert_eq!(p["status"]["containerStatuses"][0]["imageID"], format!("sha256:{digest}"));
    assert_eq!(http_get(&format!("{}:8080", p["status"]["podIP"].as_str().unwrap()), "/").unwrap().0, 200);

    // A digest the registry does not have: a clear reason, not a hang.
    let missing = format!("{addr}/demo/hello@sha256:{}", "0".repeat(64));
    apply(&c, dir.path(), "missing", &image("missing", &missing, "IfNotPresent"));
    let p = wait_pod(&c, "missing", "explained the missing image", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found"))
    });
    assert!(matches!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str(),
        Some("ErrImagePull" | "ImagePullBackOff")
    ));

    // A blob whose bytes no longer match its digest (tampered storage) is refused.
    let tampered_ref = format!("{addr}/demo/tampered:1");
    let other = wasm.join("batch-job.wasm");
    let other_digest = hex::encode(sha2::Sha256::digest(std::fs::read(&other).unwrap()));
    c.ok(&["push", other.to_str().unwrap(), &tampered_ref]);
    let blob =
        dir.path().join(format!("registry/docker/registry/v2/blobs/sha256/{}/{other_digest}/data", &other_digest[..2]));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    apply(&c, dir.path(), "tampered", &image("tampered", &tampered_ref, "Always"));
    let p = wait_pod(&c, "tampered", "refused the tampered blob", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.to_lowercase().contains("digest"))
    });
    assert!(matches!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str(),
        Some("ErrImagePull" | "ImagePullBackOff")
    ));

    // Once pulled, IfNotPresent needs no registry: stop it and start another pod from the tag.
    reg.kill();
    apply(&c, dir.path(), "b", &image("b", &reference, "IfNotPresent"));
    wait_pod(&c, "b", "ran from the cache", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    // Always must ask the registry, which is gone.
    apply(&c, dir.path(), "always", &image("always", &reference, "Always"));
    wait_pod(&c, "always", "failed to pull", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
    });
}

/// `imagePullSecrets` (kubernetes.io/dockerconfigjson) against a registry that requires basic
/// authentication: without a secret, or with a wrong password, the pod waits in
/// `ErrImagePull` saying why; with the secret it runs. `wasmorch push` authenticates too.
#[test]
fn image_pull_secrets_for_a_registry_that_requires_auth() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash_with_result("s3cret", 4).unwrap().format_for_version(bcrypt::Version::TwoY);
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let Some((_reg, addr)) = registry_with(dir.path(), Some(&htpasswd)) else { return };
    let c = Cluster::with_node(dir.path());
    let file = workloads().join("hello_http.wasm");
    let reference = format!("{addr}/private/hello:1.0");
    let o = c.cli(&["push", file.to_str().unwrap(), &reference]);
    assert!(!o.status.success(), "an anonymous push to the private registry succeeded");
    let o = std::process::Command::new(common::BIN)
        .args(["push", file.to_str().unwrap(), &reference, "--username", "alice"])
        .env("WASMORCH_REGISTRY_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = |name: &str, password: &str| {
        let config = format!(r#"{{"auths":{{"{addr}":{{"auth":"{}"}}}}}}"#, b64(&format!("alice:{password}")));
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
            b64(&config)
        )
    };
    let pod = |name: &str, pull_secret: Option<&str>| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: n1\n{}  containers:\n    - name: main\n      image: \"{reference}\"\n",
            pull_secret.map_or(String::new(), |s| format!("  imagePullSecrets: [{{name: {s}}}]\n"))
        )
    };
    let waiting = |p: &Value| {
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"].as_str().unwrap_or("").to_string(), w["message"].as_str().unwrap_or("").to_string())
    };
    apply(&c, dir.path(), "anonymous", &pod("anonymous", None));
    let p =
        wait_pod(&c, "anonymous", "said it needs credentials", |p| waiting(p).1.contains("requires authentication"));
    assert!(matches!(waiting(&p).0.as_str(), "ErrImagePull" | "ImagePullBackOff"), "{:?}", waiting(&p));

    apply(&c, dir.path(), "wrong-secret", &secret("wrong", "nope"));
    apply(&c, dir.path(), "wrong", &pod("wrong", Some("wrong")));
    let p = wait_pod(&c, "wrong", "said the credentials were refused", |p| {
        let (_, m) = waiting(p);
        m.contains("refused the credentials") || m.contains("requires authentication")
    });
    assert!(matches!(waiting(&p).0.as_str(), "ErrImagePull" | "ImagePullBackOff"), "{:?}", waiting(&p));

    apply(&c, dir.path(), "regcred", &secret("regcred", "s3cret"));
    apply(&c, dir.path(), "private", &pod("private", Some("regcred")));
    let p = wait_pod(&c, "private", "ran from the private registry", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
    });
    assert_eq!(http_get(&format!("{}:8080", p["status"]["podIP"].as_str().unwrap()), "/").unwrap().0, 200);
}

/// HTTP checks of the cluster registry from a real client library (Python's ssl, urllib and
/// oras-py): prints one JSON line.
const REGISTRY_CLIENT: &str = r#"
import base64, hashlib, json, ssl, sys, urllib.request, urllib.error
authority, ca, token, wasm = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
def call(method, path, auth=None, accept=None):
    req = urllib.request.Request("https://%s%s" % (authority, path), method=method)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(("wasmorch:" + auth).encode()).decode())
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
out = {}
status, headers, _ = call("POST", "/v2/demo/anon/blobs/uploads/")
out["anonymous_push"] = [status, headers.get("WWW-Authenticate", "")]
status, _, _ = call("POST", "/v2/demo/anon/blobs/uploads/", auth="not-the-token")
out["wrong_token_push"] = status
import oras.client
client = oras.client.OrasClient(hostname=authority, tls_verify=ca, auth_backend="basic")
client.login(username="wasmorch", password=token, hostname=authority, tls_verify=ca)
r = client.push(target="%s/demo/oras:2.0" % authority, files=[wasm + ":application/wasm"],
                disable_path_validation=True, do_chunked=True, chunk_size=65536)
out["oras_push"] = r.status_code
status, _, body = call("GET", "/v2/demo/oras/tags/list", auth=token)
out["tags"] = json.loads(body).get("tags") if status == 200 else status
status, headers, body = call("GET", "/v2/demo/hello/manifests/1.0", auth=token,
                             accept="application/vnd.oci.image.manifest.v1+json")
out["manifest"] = [status, headers.get("Docker-Content-Digest"), "sha256:" + hashlib.sha256(body).hexdigest()]
print(json.dumps(out))
"#;

/// The control plane's own registry: `wasmorch push` and oras-py publish to it with the
/// kubeconfig's token (anonymous and wrong credentials are refused), and a second node
/// process pulls by tag and by digest over its mutual TLS, with no pull secret.
#[test]
fn the_cluster_registry_takes_pushes_and_serves_nodes_over_their_mutual_tls() {
    use sha2::Digest;
    if std::process::Command::new("python3")
        .args(["-c", "import oras.client"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        assert!(std::env::var_os("WASMORCH_REQUIRE_PEERS").is_none(), "oras-py is required (pip install oras)");
        eprintln!("skipping: oras-py is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = common::MultiNode::start(dir.path(), 2);
    let c = &m.cluster;
    let url = m.server.wait_line("listening on https://");
    let authority = url.split("https://").nth(1).unwrap().trim().to_string();
    let file = workloads().join("hello_http.wasm");
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()));

    let reference = format!("{authority}/demo/hello:1.0");
    let out = c.ok(&["push", file.to_str().unwrap(), &reference]);
    assert!(out.contains(&format!("pushed {reference}")), "{out}");

    let sdir = dir.path().join("server");
    let token = std::fs::read_to_string(sdir.join("admin.token")).unwrap();
    let ca = sdir.join("pki/ca.crt");
    let py = std::process::Command::new("python3")
        .args(["-c", REGISTRY_CLIENT, &authority, ca.to_str().unwrap(), token.trim(), file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&py.stdout);
    assert!(py.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&py.stderr));
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("registry client: {v}");
    assert_eq!(v["anonymous_push"], serde_json::json!([401, "Basic realm=\"wasmorch\""]), "{v}");
    assert_eq!(v["wrong_token_push"], 401, "{v}");
    assert_eq!(v["oras_push"], 201, "{v}");
    assert_eq!(v["tags"], serde_json::json!(["2.0"]), "{v}");
    let manifest = &v["manifest"];
    assert_eq!(manifest[0], 200, "{v}");
    assert_eq!(manifest[1], manifest[2], "Docker-Content-Digest is the manifest's digest: {v}");
    let by_digest = format!("{authority}/demo/hello@{}", manifest[1].as_str().unwrap());

    // The second node process pulls each, by tag and by digest, with nothing but its certificate.
    let pod = |name: &str, img: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: n2\n  containers:\n    - name: main\n      image: \"{img}\"\n      ports:\n        - containerPort: 8080\n"
        )
    };
    let oras_ref = format!("{authority}/demo/oras:2.0");
    for (name, img) in [("pushed", reference.as_str()), ("oras", oras_ref.as_str()), ("pinned", by_digest.as_str())] {
        apply(c, dir.path(), name, &pod(name, img));
        let p = wait_pod(c, name, "ran", |p| p["status"]["containerStatuses"][0]["ready"] == true);
        assert_eq!(p["status"]["containerStatuses"][0]["imageID"], format!("sha256:{digest}"), "{name}");
        assert_eq!(http_get(&format!("{}:8080", p["status"]["podIP"].as_str().unwrap()), "/").unwrap().0, 200);
    }
    // A tag the registry does not have: the reason says so.
    apply(c, dir.path(), "missing", &pod("missing", &format!("{authority}/demo/hello:9.9")));
    wait_pod(c, "missing", "explained the missing tag", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found in the cluster registry"))
    });
}
