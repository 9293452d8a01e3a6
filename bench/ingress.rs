//! Ingress benchmark, each figure beside peers measured in the same run: requests/s and
//! p50/p99 through a node's Ingress over HTTP and HTTPS (and a Gateway API HTTPRoute over
//! HTTP) to 2 hello-http replicas, beside the
//! same replicas through a NodePort and beside nginx terminating TLS with the same certificate
//! in front of the same replicas (keep-alive upstream). All driven by `wrk` with the same
//! settings.
//!
//! Run with `bench/run-ingress.sh`. Knobs: WRK_SECS (10), WRK_CONNS (32).

use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::*;

const NODE: &str = "127.74.255.254";

/// A GET with a Host header answered 200, over plain HTTP.
fn ok_with_host(addr: &str, host: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200"
}

fn print(label: &str, w: &Wrk) {
    println!("{label:<44} {:>9.0} req/s   p50 {:.2} ms   p99 {:.2} ms", w.rps, w.p50_ms, w.p99_ms);
}

fn main() {
    use base64::Engine;
    let bin = std::env::var("WASMORCH_BIN").unwrap_or_else(|_| "target/release/wasmorch".into());
    let tmp = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let d = tmp.path();
    let kc = d.join("kubeconfig");
    let (http, https, gw) = (free_port(), free_port(), free_port());
    let (http_s, https_s) = (http.to_string(), https.to_string());
    let _up = up(&bin, d, &["--node-address", NODE, "--ingress-http-port", &http_s, "--ingress-https-port", &https_s]);
    let k = rcgen::generate_simple_self_signed(vec!["bench.local".to_string()]).unwrap();
    let (cert, key) = (k.cert.pem(), k.signing_key.serialize_pem());
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n        - name: main\n          image: wasmorch.local/hello-http:1.0\n          ports: [{{name: http, containerPort: 8080}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  type: NodePort\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bench-tls}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec:\n  tls: [{{secretName: bench-tls}}]\n  rules:\n    - host: bench.local\n      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: web}}\nspec:\n  gatewayClassName: wasmorch\n  listeners: [{{name: http, port: {gw}, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web}}\nspec:\n  parentRefs: [{{name: web}}]\n  hostnames: [bench.local]\n  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]\n",
        b64(&cert),
        b64(&key)
    );
    let f = d.join("web.yaml");
    std::fs::write(&f, manifest).unwrap();
    cli(&bin, &kc, &["apply", "-f", f.to_str().unwrap()]);
    let svc: serde_json::Value = serde_json::from_str(&cli(&bin, &kc, &["get", "svc", "web", "-o", "json"])).unwrap();
    let node_port = format!("{NODE}:{}", svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap());
    let front = format!("{NODE}:{http}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let gateway = format!("{NODE}:{gw}");
    while !(http_ok(&node_port) && ok_with_host(&front, "bench.local") && ok_with_host(&gateway, "bench.local")) {
        assert!(Instant::now() < deadline, "the NodePort, the Ingress or the Gateway never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pods: serde_json::Value =
        serde_json::from_str(&cli(&bin, &kc, &["get", "pods", "-l", "app=web", "-o", "json"])).unwrap();
    let upstreams: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(|ip| format!("{ip}:8080")))
        .collect();
    assert_eq!(upstreams.len(), 2, "{pods}");

    let conns = env_num("WRK_CONNS", 32);
    println!("== HTTP(S) to 2 hello-http replicas, wrk -t2 -c{conns} ==");
    let host = ["Host: bench.local"];
    print("wasmorch   NodePort", &wrk(&node_port));
    print("wasmorch   Ingress, HTTP", &wrk_url(&format!("http://{front}/"), &host));
    print("wasmorch   Gateway (HTTPRoute), HTTP", &wrk_url(&format!("http://{gateway}/"), &host));
    // wrk sends the URL's host as SNI: an address, so the entry without hosts answers.
    let ours_tls = wrk_url(&format!("https://{NODE}:{https}/"), &host);
    print("wasmorch   Ingress, HTTPS", &ours_tls);

    // nginx terminating TLS with the same certificate, in front of the same two replicas.
    let (crt, keyf) = (d.join("tls.crt"), d.join("tls.key"));
    std::fs::write(&crt, &cert).unwrap();
    std::fs::write(&keyf, &key).unwrap();
    let nport = free_port();
    let servers: String = upstreams.iter().map(|u| format!("server {u}; ")).collect();
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\ndaemon off;\npid {0}/nginx.pid;\nerror_log stderr error;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {0};\n  proxy_temp_path {0};\n  upstream w {{ {servers}keepalive 64; }}\n  server {{\n    listen 127.0.0.1:{nport} ssl;\n    ssl_certificate {1};\n    ssl_certificate_key {2};\n    location / {{ proxy_pass http://w; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
            d.display(),
            crt.display(),
            keyf.display()
        ),
    )
    .unwrap();
    let naddr = format!("127.0.0.1:{nport}");
    match nginx(&conf, d, &naddr) {
        Ok(_n) => {
            let nginx = wrk_url(&format!("https://{naddr}/"), &host);
            print("nginx      HTTPS → the same 2 replicas", &nginx);
            println!("           → wasmorch's HTTPS Ingress = {:.2}× nginx", ours_tls.rps / nginx.rps);
        }
        Err(e) => println!("nginx      (not run: {e})"),
    }
}
