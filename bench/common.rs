//! Helpers the benchmarks share (included with `#[path]`; each bench uses a subset).

#![allow(dead_code)]

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client command against the cluster of `kc`; panics unless it succeeds; its stdout.
pub fn cli(bin: &str, kc: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).env("KUBECONFIG", kc).output().expect("run wasmorch");
    assert!(out.status.success(), "wasmorch {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `wasmorch up` with its local node in `dir` (kubeconfig `dir/kubeconfig`), `extra` flags,
/// once its node is Ready.
pub fn up(bin: &str, dir: &Path, extra: &[&str]) -> Proc {
    let kc = dir.join("kubeconfig");
    let p = Proc(
        Command::new(bin)
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(extra)
            .env("KUBECONFIG", &kc)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wasmorch up"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kc.exists() || !cli(bin, &kc, &["get", "nodes"]).contains(" Ready ") {
        assert!(Instant::now() < deadline, "up did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A JSON request through kube-rs: (status, body).
pub async fn raw(client: &kube::Client, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A JSON merge patch through kube-rs; panics unless it succeeds.
pub async fn merge_patch(client: &kube::Client, path: &str, body: &Value) {
    let req = http::Request::builder()
        .method("PATCH")
        .uri(path)
        .header("content-type", "application/merge-patch+json")
        .body(kube::client::Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    assert!(resp.status().is_success(), "PATCH {path}: {}", resp.status());
}

/// A plain HTTP/1.0 GET answered 200.
pub fn http_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") && &buf[9..12] == b"200"
}

pub fn wasmtime_bin() -> String {
    std::env::var("WASMTIME").unwrap_or_else(|_| "wasmtime".into())
}

/// `wasmtime serve` from spawn to its first 200.
pub fn wasmtime_start(args: &[&str], file: &Path) -> (Proc, String, Duration) {
    let addr = format!("127.0.0.1:{}", free_port());
    let t = Instant::now();
    let child = Command::new(wasmtime_bin())
        .arg("serve")
        .args(args)
        .args(["--addr", &addr])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run wasmtime serve (set WASMTIME=path)");
    let p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_ok(&addr) {
        assert!(Instant::now() < deadline, "wasmtime serve did not answer");
        std::thread::sleep(Duration::from_millis(1));
    }
    (p, addr, t.elapsed())
}

pub struct Wrk {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub fn wrk(addr: &str) -> Wrk {
    wrk_url(&format!("http://{addr}/"), &[])
}

/// `wrk` against `url` with extra `headers` (`"Host: x"`).
pub fn wrk_url(url: &str, headers: &[&str]) -> Wrk {
    let secs = env_num("WRK_SECS", 10);
    let conns = env_num("WRK_CONNS", 32);
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", &format!("-c{conns}"), &format!("-d{secs}s"), "--latency"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let ms = |label: &str| -> f64 {
        let v = text.lines().find(|l| l.trim_start().starts_with(label)).and_then(|l| l.split_whitespace().nth(1));
        let v = v.unwrap_or_else(|| panic!("no {label} in wrk output:\n{text}"));
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().unwrap() / 1000.0
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().unwrap()
        } else {
            v.trim_end_matches('s').parse::<f64>().unwrap() * 1000.0
        }
    };
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    assert!(!text.contains("Non-2xx"), "errors in wrk run:\n{text}");
    Wrk { rps, p50_ms: ms("50%"), p99_ms: ms("99%") }
}

/// A `wasmorch server` on a free port with its data in `dir`, and an admin client for it.
pub async fn server(bin: &str, dir: &std::path::Path) -> (Proc, kube::Client, String) {
    let port = free_port();
    let p = Proc(
        Command::new(bin)
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wasmorch server"),
    );
    let kc = dir.join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kc.exists() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cfg =
        kube::Config::from_custom_kubeconfig(kube::config::Kubeconfig::read_from(&kc).unwrap(), &Default::default())
            .await
            .unwrap();
    (p, kube::Client::try_from(cfg).unwrap(), format!("https://127.0.0.1:{port}"))
}

/// An etcd member (Debian's `etcd`) on loopback with its data in `dir`; its client port, once
/// it reports itself healthy.
pub fn start_etcd(dir: &Path) -> (Proc, u16) {
    let (cport, pport) = (free_port(), free_port());
    let etcd = Proc(
        Command::new("etcd")
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{cport}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{cport}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{pport}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{pport}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{pport}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (apt-get install etcd-server)"),
    );
    let healthy = || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", cport)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("\"health\":\"true\"")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthy() {
        assert!(Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (etcd, cport)
}

/// nginx run with configuration `conf` (prefix `dir`); stopped, workers included, when dropped.
pub struct Nginx {
    _master: Proc,
    conf: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Killing the master alone would leave its workers running: ask it to stop them,
        // and wait (a while) for it to have done so before the kill that follows.
        let _ = Command::new("nginx").arg("-c").arg(&self.conf).arg("-p").arg(&self.dir).args(["-s", "stop"]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self._master.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// nginx run with configuration `conf` (prefix `dir`), once it accepts connections on `addr`.
pub fn nginx(conf: &Path, dir: &Path, addr: &str) -> Result<Nginx, String> {
    let child = Command::new("nginx")
        .arg("-c")
        .arg(conf)
        .arg("-p")
        .arg(dir)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let n = Nginx { _master: Proc(child), conf: conf.to_path_buf(), dir: dir.to_path_buf() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err("nginx did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(n)
}
