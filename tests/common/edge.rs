//! Helpers for the edge tests (Ingress and Gateway API): requests with a `Host` header,
//! the apps they reach, certificates and TLS Secrets.

use std::io::{Read, Write};
use std::time::Duration;

use super::workloads;

/// One request with a `Host` header: (status, body).
pub fn request(addr: &str, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    exchange(addr, "GET", host, path, &[]).map(|(code, _, body)| (code, body))
}

/// One request with a method, `Host` and more headers: (status, response head, body).
pub fn exchange(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    Ok((code, head.to_string(), body.to_string()))
}

/// The app a response came from (`hello-http` answers `pod=<app>-…`).
pub fn app_of(body: &str) -> String {
    let pod = body.split("pod=").nth(1).unwrap_or("").split_whitespace().next().unwrap_or("");
    pod.split('-').next().unwrap_or("").to_string()
}

pub fn app(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n        - name: main\n          image: file://{}\n          ports: [{{containerPort: 8080}}]\n          env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n",
        workloads().join("hello_http.wasm").display()
    )
}

/// A self-signed certificate for `host`: (certificate PEM, key PEM).
pub fn certificate(host: &str) -> (String, String) {
    let k = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    (k.cert.pem(), k.signing_key.serialize_pem())
}

pub fn tls_secret(name: &str, (cert, key): &(String, String)) -> String {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b(cert),
        b(key)
    )
}

/// curl over TLS to `host` at `addr:port`, trusting only `ca`: (HTTP version, status, body),
/// or curl's error.
pub fn curl_tls(
    addr: &str,
    port: u16,
    host: &str,
    ca: &std::path::Path,
    http2: bool,
) -> Result<(String, String), String> {
    let o = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:{addr}")])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .args(["-w", "\n%{http_version} %{http_code}", &format!("https://{host}:{port}/")])
        .output()
        .expect("run curl");
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", ""));
    Ok((status.to_string(), body.to_string()))
}
