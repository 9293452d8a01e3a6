//! Ingress: every node's proxy routes the `wasmorch` class's Ingresses by host and path to
//! Services, with Kubernetes' precedence; status, the IngressClass and kubectl's columns.

mod common;

use common::edge::{app, app_of, certificate, curl_tls, request, tls_secret};
use common::{Cluster, apply, eventually, get_json};
use std::time::Duration;

const INGRESSES: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: main}
spec:
  defaultBackend: {service: {name: alpha, port: {number: 80}}}
  rules:
    - host: foo.example.com
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 80}}}}
          - {path: /beta, pathType: Prefix, backend: {service: {name: beta, port: {name: http}}}}
          - {path: /beta, pathType: Exact, backend: {service: {name: gamma, port: {number: 80}}}}
    - host: "*.example.com"
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: gamma, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: later}
spec:
  ingressClassName: wasmorch
  rules:
    - host: bar.example.com
      http:
        paths:
          - {path: /x, pathType: Exact, backend: {service: {name: beta, port: {number: 80}}}}
          - {path: /missing, pathType: Prefix, backend: {service: {name: nothing, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: elsewhere}
spec:
  ingressClassName: nginx
  rules:
    - host: nginx.example.com
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: beta, port: {number: 80}}}}
"#;

#[test]
fn ingresses_route_by_host_and_path_with_kubernetes_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let address = common::node_address();
    // A free port on the node's address (unprivileged: 80 needs root).
    let port = std::net::TcpListener::bind(format!("{address}:0")).unwrap().local_addr().unwrap().port();
    let c = Cluster::start_with(d, &["--node-address", &address, "--ingress-http-port", &port.to_string()]);
    for name in ["alpha", "beta", "gamma"] {
        apply(&c, d, name, &app(name));
    }
    // The class exists and is the default.
    let classes = c.ok(&["get", "ingressclasses"]);
    assert!(classes.contains("CONTROLLER") && classes.contains("wasmorch.io/ingress-controller"), "{classes}");
    apply(&c, d, "ingresses", INGRESSES);
    let front = format!("{address}:{port}");
    // Every app answers through its Service first (then routing, not readiness, is tested).
    let ready = eventually(Duration::from_secs(60), || {
        ["/", "/beta/", "/beta"]
            .iter()
            .zip(["alpha", "beta", "gamma"])
            .all(|(p, want)| request(&front, "foo.example.com", p).is_ok_and(|(s, b)| s == 200 && app_of(&b) == want))
    });
    assert!(ready, "the Ingress never routed to all three apps: {}", c.log());
    // (host, path, backend): precedence as Kubernetes defines it.
    let table = [
        ("foo.example.com", "/", "alpha"),
        ("foo.example.com", "/anything/else", "alpha"),
        ("foo.example.com", "/beta", "gamma"),
        ("foo.example.com", "/beta/", "beta"),
        ("foo.example.com", "/beta/x?q=1", "beta"),
        ("foo.example.com", "/betamax", "alpha"),
        ("FOO.example.com:1234", "/beta", "gamma"),
        ("one.example.com", "/beta", "gamma"),
        ("two.levels.example.com", "/", "alpha"),
        ("bar.example.com", "/x", "beta"),
        ("bar.example.com", "/x/y", "alpha"),
        ("nginx.example.com", "/", "gamma"),
        ("unknown.org", "/", "alpha"),
    ];
    for (host, path, want) in table {
        let (status, body) = request(&front, host, path).unwrap();
        assert_eq!((status, app_of(&body).as_str()), (200, want), "{host}{path}: {body}");
    }
    // A rolling update behind the Ingress under steady load: no failed request.
    if std::process::Command::new("wrk").arg("--version").output().is_ok() {
        let load = std::process::Command::new("wrk")
            .args(["-t2", "-c8", "-d8s", "-H", "Host: foo.example.com", &format!("http://{front}/")])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.ok(&["rollout", "restart", "deployment/alpha"]);
        let out = c.ok(&["rollout", "status", "deployment/alpha", "--timeout", "60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
        let report = String::from_utf8_lossy(&load.wait_with_output().unwrap().stdout).into_owned();
        eprintln!("{report}");
        assert!(!report.contains("Non-2xx") && !report.contains("Socket errors"), "{report}");
        let requests = common::wrk_requests(&report);
        assert!(requests > 500, "{report}");
    } else {
        assert!(std::env::var_os("WASMORCH_REQUIRE_PEERS").is_none(), "wrk is required (apt-get install wrk)");
    }

    // A backend Service that does not exist: 503 saying so.
    let (status, body) = request(&front, "bar.example.com", "/missing").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("default/nothing"), "{body}");

    // Status: the node's address, as kubectl shows it; not for another class's Ingress.
    let addressed = eventually(Duration::from_secs(20), || {
        get_json(&c, &["ingress", "main"]).is_some_and(|i| i["status"]["loadBalancer"]["ingress"][0]["ip"] == address)
    });
    assert!(addressed, "status.loadBalancer was not filled: {:?}", get_json(&c, &["ingress", "main"]));
    let table = c.ok(&["get", "ingress"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"], "{table}");
    let main = table.lines().find(|l| l.starts_with("main ")).unwrap();
    assert!(
        main.contains("<none>") && main.contains("foo.example.com,*.example.com") && main.contains(&address),
        "{table}"
    );
    let nginx = get_json(&c, &["ingress", "elsewhere"]).unwrap();
    assert!(nginx["status"]["loadBalancer"].get("ingress").is_none(), "another class's Ingress: {nginx}");

    // Bad input is refused naming the field; nothing is stored.
    let bad = d.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\nspec:\n  rules:\n    - host: foo.example.com\n      http:\n        paths:\n          - {path: relative, pathType: Prefix, backend: {service: {name: alpha, port: {number: 80}}}}\n",
    )
    .unwrap();
    let o = c.cli(&["apply", "-f", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("spec.rules[0].http.paths[0].path"), "{err}");
    assert!(c.cli(&["get", "ingress", "bad"]).stderr.starts_with(b"Error from server (NotFound)"));

    // The real kubectl: its `create ingress` generator (protobuf), columns and routing.
    if common::kubectl_available() {
        let kubectl = |args: &[&str]| c.kubectl_ok(args);
        let out = kubectl(&["create", "ingress", "made", "--rule=made.example.com/beta*=beta:80"]);
        assert!(out.contains("ingress.networking.k8s.io/made created"), "{out}");
        let routed = eventually(Duration::from_secs(20), || {
            request(&front, "made.example.com", "/beta/1").is_ok_and(|(s, b)| s == 200 && app_of(&b) == "beta")
        });
        assert!(routed, "the Ingress kubectl made was not served");
        let listed = kubectl(&["get", "ingress", "made"]);
        assert!(listed.starts_with("NAME") && listed.contains("made.example.com"), "{listed}");
        kubectl(&["delete", "ingress", "made"]);
    } else {
        assert!(std::env::var_os("WASMORCH_REQUIRE_PEERS").is_none(), "kubectl is required");
    }

    // Deleting every Ingress closes the listener.
    c.ok(&["delete", "ingress", "main", "later", "elsewhere"]);
    let closed = eventually(Duration::from_secs(20), || std::net::TcpStream::connect(&front).is_err());
    assert!(closed, "the ingress listener stayed open without Ingresses");
}

/// `spec.tls`: the certificate is chosen by SNI among two, HTTP/1.1 and HTTP/2 are spoken,
/// and updating a Secret rotates its certificate for new connections.
#[test]
fn ingress_tls_picks_certificates_by_sni_and_follows_secret_updates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let address = common::node_address();
    let free = || std::net::TcpListener::bind(format!("{address}:0")).unwrap().local_addr().unwrap().port();
    let (http, https) = (free(), free());
    let c = Cluster::start_with(
        d,
        &[
            "--node-address",
            &address,
            "--ingress-http-port",
            &http.to_string(),
            "--ingress-https-port",
            &https.to_string(),
        ],
    );
    for name in ["alpha", "beta"] {
        apply(&c, d, name, &app(name));
    }
    let (a, b, a2) = (certificate("a.example.com"), certificate("b.example.com"), certificate("a.example.com"));
    let ca = |name: &str, pem: &str| {
        let p = d.join(format!("{name}.pem"));
        std::fs::write(&p, pem).unwrap();
        p
    };
    let (ca_a, ca_b, ca_a2) = (ca("a", &a.0), ca("b", &b.0), ca("a2", &a2.0));
    apply(&c, d, "secrets", &format!("{}---\n{}", tls_secret("a-tls", &a), tls_secret("b-tls", &b)));
    apply(
        &c,
        d,
        "tls-ingress",
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure}
spec:
  tls:
    - {hosts: [a.example.com], secretName: a-tls}
    - {hosts: [b.example.com], secretName: b-tls}
  rules:
    - host: a.example.com
      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 80}}}}]}
    - host: b.example.com
      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: beta, port: {number: 80}}}}]}
"#,
    );
    // Both apps answer first (then certificates, not readiness, are tested).
    let served = eventually(Duration::from_secs(60), || {
        curl_tls(&address, https, "a.example.com", &ca_a, false)
            .is_ok_and(|(s, b)| s == "1.1 200" && app_of(&b) == "alpha")
            && curl_tls(&address, https, "b.example.com", &ca_b, false)
                .is_ok_and(|(s, b)| s == "1.1 200" && app_of(&b) == "beta")
    });
    assert!(served, "a.example.com over TLS: {:?}", curl_tls(&address, https, "a.example.com", &ca_a, false));
    // By SNI: b gets b's certificate (a's would not verify), over HTTP/2 too.
    let (status, body) = curl_tls(&address, https, "b.example.com", &ca_b, true).unwrap();
    assert_eq!((status.as_str(), app_of(&body).as_str()), ("2 200", "beta"), "{body}");
    assert!(curl_tls(&address, https, "b.example.com", &ca_a, false).is_err(), "b was served a's certificate");
    // Rotation: a new certificate in the Secret is served to new connections.
    apply(&c, d, "rotated", &tls_secret("a-tls", &a2));
    let rotated = eventually(Duration::from_secs(30), || {
        curl_tls(&address, https, "a.example.com", &ca_a2, false).is_ok_and(|(s, _)| s == "1.1 200")
    });
    assert!(rotated, "the rotated certificate was not served");
    assert!(curl_tls(&address, https, "a.example.com", &ca_a, false).is_err(), "the old certificate is still served");
    // The plain port serves the same rules.
    let (status, body) = request(&format!("{address}:{http}"), "b.example.com", "/").unwrap();
    assert_eq!((status, app_of(&body).as_str()), (200, "beta"));
}
