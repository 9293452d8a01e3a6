//! Joining a cluster: tokens, the CA pin, node certificates, their renewal, node rights.

mod common;

use common::{Cluster, Daemon, MultiNode, eventually, get_json, kube_client, raw, workloads};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `wasmorch server` on a free loopback port; returns it, its URL and its data dir.
fn server(dir: &Path, extra: &[&str]) -> (Daemon, String) {
    let sdir = dir.join("server");
    let pods = common::cluster_cidr();
    let mut args =
        vec!["server", "--listen", "127.0.0.1:0", "--data-dir", sdir.to_str().unwrap(), "--cluster-cidr", &pods];
    args.extend_from_slice(extra);
    let s = Daemon::spawn(&args);
    let line = s.wait_line("listening on https://");
    let url = line.split("listening on ").nth(1).unwrap().trim().to_string();
    std::fs::copy(sdir.join("admin.kubeconfig"), dir.join("kubeconfig")).unwrap();
    (s, url)
}

/// Run `wasmorch node` expecting it to fail at once; returns its stderr.
fn failing_join(url: &str, token: &str, name: &str, dir: &Path) -> String {
    let out = std::process::Command::new(common::BIN)
        .args(["node", "--server", url, "--token", token, "--name", name, "--data-dir"])
        .arg(dir.join(name))
        .output()
        .unwrap();
    assert!(!out.status.success(), "joining with {token} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A TLS server with its own self-signed certificate that records every request head it gets
/// and answers `/cacerts` with `ca_pem`.
struct Impostor {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Impostor {
    fn start(ca_pem: String) -> Impostor {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let cfg = Arc::new(cfg);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (cfg, s, ca) = (cfg.clone(), s.clone(), ca_pem.clone());
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                    let Ok(conn) = rustls::ServerConnection::new(cfg) else { return };
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut head = String::new();
                    let mut reader = BufReader::new(&mut tls);
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push_str(&line),
                        }
                    }
                    if head.is_empty() {
                        return; // the client gave up during the handshake
                    }
                    s.lock().unwrap().push(head);
                    let _ = write!(
                        tls,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/x-pem-file\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ca}",
                        ca.len()
                    );
                    let _ = tls.flush();
                });
            }
        });
        Impostor { url, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn joins_only_with_a_live_token_and_the_pinned_server() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_server, url) = server(d, &[]);
    let c = Cluster::attach(d);
    let token = std::fs::read_to_string(d.join("server/join.token")).unwrap().trim().to_string();
    assert!(token.starts_with("K10") && token.contains("::"), "{token}");

    // A token of this cluster with a wrong secret: the server refuses; no Node appears.
    let (pin, _) = token.split_once("::").unwrap();
    let wrong = format!("{pin}::abcdef.0000000000000000");
    let err = failing_join(&url, &wrong, "bad", d);
    assert!(err.contains("the server refused the join token"), "{err}");

    // An expired token (its TTL runs out first; the list shows it), refused the same way.
    let short = c.ok(&["token", "create", "--ttl", "3s", "--description", "short"]).trim().to_string();
    assert!(
        eventually(Duration::from_secs(20), || {
            let list = c.cli(&["token", "list"]);
            let out = String::from_utf8_lossy(&list.stdout);
            // Expired, or already removed by the token cleaner.
            !out.contains(&short) || out.lines().any(|l| l.starts_with(&short) && l.contains("<expired>"))
        }),
        "the short token never expired"
    );
    let err = failing_join(&url, &short, "late", d);
    assert!(err.contains("the server refused the join token"), "{err}");

    // A server with another CA: refused before anything but the CA is asked for.
    let other = Impostor::start(String::from_utf8(rcgen_ca_pem()).unwrap());
    let err = failing_join(&other.url, &token, "fooled", d);
    assert!(err.contains("but the token pins"), "{err}");
    // A man in the middle serving this cluster's real CA, with a certificate of its own: the
    // pin matches, but the TLS check against that CA fails, so the token is never sent.
    let ca = std::fs::read_to_string(d.join("server/pki/ca.crt")).unwrap();
    let mitm = Impostor::start(ca);
    let err = failing_join(&mitm.url, &token, "fooled2", d);
    assert!(err.contains("asking for a node certificate"), "{err}");
    for fake in [&other, &mitm] {
        let reqs = fake.requests();
        assert!(!reqs.is_empty(), "the node asked nothing");
        for r in &reqs {
            assert!(r.starts_with("GET /cacerts "), "the impostor was asked {r:?}");
            assert!(!r.to_ascii_lowercase().contains("authorization"), "credentials reached the impostor: {r}");
            assert!(!r.contains(&token[token.len() - 16..]), "the token's secret reached the impostor: {r}");
        }
    }

    // The real token: the node joins and turns Ready.
    let _n = Daemon::spawn(&[
        "node",
        "--server",
        &url,
        "--token",
        &token,
        "--name",
        "good",
        "--data-dir",
        d.join("good").to_str().unwrap(),
    ]);
    let ready = eventually(Duration::from_secs(30), || {
        c.ok(&["get", "nodes"]).lines().any(|l| l.starts_with("good ") && l.split_whitespace().nth(1) == Some("Ready"))
    });
    assert!(ready, "{}", c.ok(&["get", "nodes"]));
    let nodes = c.ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.trim(), "node/good", "no node was registered by a refused join");
    assert!(Path::new(&d.join("good/pki/node.key")).exists());

    // Tokens are managed from the CLI.
    let list = c.ok(&["token", "list"]);
    assert!(list.starts_with("TOKEN") && list.contains(&token) && list.contains("<forever>"), "{list}");
    let id = &token[token.len() - 23..token.len() - 17];
    assert_eq!(c.ok(&["token", "delete", id]), format!("bootstrap token \"{id}\" deleted\n"));
    assert!(!c.ok(&["token", "list"]).contains(&token));
    let err = failing_join(&url, &token, "after", d);
    assert!(err.contains("the server refused the join token"), "a deleted token still worked: {err}");
}

/// A CA certificate of no cluster.
fn rcgen_ca_pem() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(&key).unwrap().pem().into_bytes()
}

/// A kube-rs client acting with a node's own credentials from its data dir.
async fn as_node(url: &str, node_dir: &Path) -> kube::Client {
    let read = |f: &str| std::fs::read_to_string(node_dir.join("pki").join(f)).unwrap();
    let b64 = |s: String| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let kc = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "n",
        "clusters": [{"name": "n", "cluster": {"server": url, "certificate-authority-data": b64(read("ca.crt"))}}],
        "users": [{"name": "n", "user": {"client-certificate-data": b64(read("node.crt")), "client-key-data": b64(read("node.key"))}}],
        "contexts": [{"name": "n", "context": {"cluster": "n", "user": "n"}}],
    });
    let path = node_dir.join("as-node.kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    kube_client(&path).await
}

fn pod_with_secret(c: &Cluster, dir: &Path, name: &str, node: &str, secret: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}}}\nstringData: {{k: v}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n    - name: main\n      image: file://{}\n      ports: [{{containerPort: 8080}}]\n      env: [{{name: S, valueFrom: {{secretKeyRef: {{name: {secret}, key: k}}}}}}]\n",
        workloads().join("hello_http.wasm").display()
    );
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_credential_reaches_only_its_own_pods_and_their_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let m = tokio::task::spawn_blocking({
        let d = d.clone();
        move || MultiNode::start(&d, 2)
    })
    .await
    .unwrap();
    let c = &m.cluster;
    pod_with_secret(c, &d, "p1", "n1", "s1");
    pod_with_secret(c, &d, "p2", "n2", "s2");
    let running = |p: &str| get_json(c, &["pod", p]).is_some_and(|v| v["status"]["phase"] == "Running");
    assert!(eventually(Duration::from_secs(60), || running("p1") && running("p2")), "pods did not run");

    let url = server_url(&d);
    let n1 = as_node(&url, &d.join("node1")).await;
    let patch = Some(json!({"status": {"phase": "Failed"}}));
    let (code, out) = raw_patch(&n1, "/api/v1/namespaces/default/pods/p2/status", patch.clone()).await;
    assert_eq!(code, 403, "n1 changed n2's pod: {out}");
    let (code, _) = raw(&n1, "DELETE", "/api/v1/namespaces/default/pods/p2", None).await;
    assert_eq!(code, 403, "n1 deleted n2's pod");
    let (code, out) = raw(&n1, "GET", "/api/v1/namespaces/default/secrets/s2", None).await;
    assert_eq!(code, 403, "n1 read the Secret of n2's pod: {out}");
    let (code, _) = raw(&n1, "GET", "/api/v1/namespaces/default/secrets", None).await;
    assert_eq!(code, 403, "n1 listed Secrets");
    let (code, out) = raw(&n1, "GET", "/api/v1/namespaces/default/secrets/s1", None).await;
    assert_eq!(code, 200, "n1 cannot read the Secret its own pod uses: {out}");
    let (code, _) = raw_patch(&n1, "/api/v1/nodes/n2/status", Some(json!({"status": {"conditions": []}}))).await;
    assert_eq!(code, 403, "n1 changed n2's Node");
    assert!(running("p2"), "n2's pod is untouched");
    // Logs travel over the node's mutual TLS endpoint.
    assert!(eventually(Duration::from_secs(10), || c.cli(&["logs", "p2"]).status.success()));
}

fn server_url(d: &Path) -> String {
    let kc = std::fs::read_to_string(d.join("kubeconfig")).unwrap();
    kc.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().trim_matches('\'').trim_matches('"').to_string()
}

async fn raw_patch(client: &kube::Client, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = http::Request::builder()
        .method("PATCH")
        .uri(path)
        .header("content-type", "application/merge-patch+json")
        .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[test]
fn certificates_renew_and_a_node_keeps_its_identity_at_a_new_address() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Certificates live 12 s: the node renews about 8 s in.
    let (_server, url) = server(d, &["--node-cert-ttl", "12s"]);
    let c = Cluster::attach(d);
    let token = std::fs::read_to_string(d.join("server/join.token")).unwrap().trim().to_string();
    let prefix = common::pod_ip_prefix();
    let ndir = d.join("edge");
    let node_args = |address: &str, token: Option<&str>| -> Vec<String> {
        let mut a: Vec<String> = ["node", "--server", &url, "--name", "edge", "--data-dir", ndir.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--address".into(), address.into()]);
        if let Some(t) = token {
            a.extend(["--token".into(), t.into()]);
        }
        a
    };
    let first = format!("{prefix}.255.254");
    let args = node_args(&first, Some(&token));
    let mut node = Daemon::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ready = |addr: &str| {
        get_json(&c, &["node", "edge"]).is_some_and(|n| {
            n["status"]["addresses"][0]["address"] == addr
                && n["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Ready" && x["status"] == "True"))
        })
    };
    assert!(eventually(Duration::from_secs(30), || ready(&first)));
    let cert0 = std::fs::read_to_string(ndir.join("pki/node.crt")).unwrap();
    let expiry0 = not_after(&cert0);

    // Renewed before it runs out, and still a member after the first certificate expired.
    assert!(
        eventually(Duration::from_secs(20), || std::fs::read_to_string(ndir.join("pki/node.crt")).unwrap() != cert0),
        "the certificate was not renewed"
    );
    assert!(not_after(&std::fs::read_to_string(ndir.join("pki/node.crt")).unwrap()) > expiry0);
    let renewed_after_expiry = eventually(Duration::from_secs(30), || {
        let lease = get_json(&c, &["lease", "edge", "-n", "kube-node-lease"]).unwrap();
        let renew = chrono::DateTime::parse_from_rfc3339(lease["spec"]["renewTime"].as_str().unwrap()).unwrap();
        renew.timestamp() > expiry0 + 2
    });
    assert!(renewed_after_expiry, "the node stopped renewing its Lease when its first certificate expired");

    // Stopped and started at another address without a token: the same node, by name and key.
    node.kill();
    let second = format!("{prefix}.255.253");
    let args = node_args(&second, None);
    let _node = Daemon::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(eventually(Duration::from_secs(30), || ready(&second)), "{:?}", get_json(&c, &["node", "edge"]));
    assert_eq!(c.ok(&["get", "nodes", "-o", "name"]).trim(), "node/edge");
}

fn not_after(pem: &str) -> i64 {
    let der: rustls::pki_types::CertificateDer =
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.validity().not_after.timestamp()
}
