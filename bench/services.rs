//! Service benchmark, each figure beside a peer measured in the same run:
//! - HTTP through a NodePort to 2 hello-http replicas (wasmorch's proxy, replicas answered in
//!   process), vs `wasmtime serve -S cli` serving the same component directly, and vs nginx
//!   reverse-proxying to that `wasmtime serve` (keep-alive upstream); all driven by `wrk` with
//!   the same settings;
//! - service-to-service calls from inside a pod (sdk-demo `/call/SVC/`): the backend on the
//!   caller's node (in process) vs on another node process (a socket hop), p50/p99 over
//!   sequential calls, beside a request to the caller that calls nothing;
//! - memory under load: the resident set of `wasmorch up` (control plane and node in one
//!   process) while it serves the NodePort benchmark and after it, three runs in a row (it
//!   must not grow), beside its idle figure before the first run.
//!
//! Run with `bench/run-services.sh`. Knobs: WRK_SECS (10), WRK_CONNS (32), CALLS (2000).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::*;

struct Cluster {
    _server: Proc,
    _nodes: Vec<Proc>,
    kubeconfig: PathBuf,
    bin: String,
}

impl Cluster {
    fn cli(&self, args: &[&str]) -> String {
        let out =
            Command::new(&self.bin).args(args).env("KUBECONFIG", &self.kubeconfig).output().expect("run wasmorch");
        assert!(out.status.success(), "wasmorch {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, dir: &Path, name: &str, yaml: &str) {
        let f = dir.join(format!("{name}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        self.cli(&["apply", "-f", f.to_str().unwrap()]);
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.cli(&a)).unwrap()
    }

    fn wait_ready_endpoints(&self, svc: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.json(&["endpointslices", "-l", &format!("kubernetes.io/service-name={svc}")]);
            let ips: Vec<String> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .filter(|e| e["conditions"]["ready"] == true)
                .filter_map(|e| e["addresses"][0].as_str().map(String::from))
                .collect();
            if ips.len() == n {
                return ips;
            }
            assert!(Instant::now() < deadline, "service {svc} never had {n} ready endpoints");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn spawn(bin: &str, args: &[&str]) -> (Proc, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = Command::new(bin).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (Proc(child), rx)
}

fn deployment(name: &str, node: &str, image: &Path, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      nodeSelector: {{kubernetes.io/hostname: {node}}}\n      containers:\n        - name: main\n          image: file://{}\n          ports: [{{name: http, containerPort: 8080}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: NodePort\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n",
        image.display()
    )
}

/// Sequential GETs: (p50, p99) in ms.
fn latency(addr: &str, path: &str, n: usize) -> (f64, f64) {
    use std::io::{Read, Write};
    // One keep-alive connection, as a client library would use.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut samples = Vec::with_capacity(n);
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
        // Read the head, then the body by Content-Length.
        let mut got = Vec::new();
        loop {
            let k = s.read(&mut buf).unwrap();
            assert!(k > 0, "connection closed");
            got.extend_from_slice(&buf[..k]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                match head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                {
                    Some(len) => {
                        while got.len() < end + 4 + len {
                            let k = s.read(&mut buf).unwrap();
                            got.extend_from_slice(&buf[..k]);
                        }
                    }
                    // Chunked: up to the last chunk.
                    None => {
                        while !got.ends_with(b"0\r\n\r\n") {
                            let k = s.read(&mut buf).unwrap();
                            assert!(k > 0, "connection closed");
                            got.extend_from_slice(&buf[..k]);
                        }
                    }
                }
                break;
            }
        }
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99))
}

fn main() {
    let bin = std::env::var("WASMORCH_BIN").unwrap_or_else(|_| "target/release/wasmorch".into());
    let wasm =
        PathBuf::from(std::env::var("WORKLOADS").unwrap_or_else(|_| "workloads/target/wasm32-wasip2/release".into()))
            .canonicalize()
            .expect("built workloads");
    let (hello, demo) = (wasm.join("hello_http.wasm"), wasm.join("sdk_demo.wasm"));
    let tmp = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let d = tmp.path();

    // A server and two node processes, each node on an address of its own.
    let sdir = d.join("server");
    let (server, lines) = spawn(&bin, &["server", "--listen", "127.0.0.1:0", "--data-dir", sdir.to_str().unwrap()]);
    let url = loop {
        let l = lines.recv_timeout(Duration::from_secs(30)).expect("server start");
        if let Some(u) = l.split("listening on ").nth(1) {
            break u.trim().to_string();
        }
    };
    let token = std::fs::read_to_string(sdir.join("join.token")).unwrap();
    let ca = sdir.join("pki/ca.crt");
    let nodes: Vec<Proc> = [("n1", "127.71"), ("n2", "127.72")]
        .iter()
        .map(|(name, prefix)| {
            let ndir = d.join(name);
            spawn(
                &bin,
                &[
                    "node",
                    "--server",
                    &url,
                    "--token",
                    token.trim(),
                    "--ca-file",
                    ca.to_str().unwrap(),
                    "--name",
                    name,
                    "--data-dir",
                    ndir.to_str().unwrap(),
                    "--address",
                    &format!("{prefix}.255.254"),
                ],
            )
            .0
        })
        .collect();
    let c = Cluster { _server: server, _nodes: nodes, kubeconfig: sdir.join("admin.kubeconfig"), bin: bin.clone() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.cli(&["get", "nodes"]).matches(" Ready ").count() < 2 {
        assert!(Instant::now() < deadline, "nodes not ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    let conns = env_num("WRK_CONNS", 32);
    println!("== HTTP through a NodePort to 2 hello-http replicas, wrk -t2 -c{conns} ==");
    c.apply(d, "web", &deployment("web", "n1", &hello, 2));
    c.wait_ready_endpoints("web", 2);
    let np = c.json(&["svc", "web"])["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let node_port = format!("127.71.255.254:{np}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_ok(&node_port) {
        assert!(Instant::now() < deadline, "node port never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ours = wrk(&node_port);
    println!(
        "wasmorch   NodePort → 2 replicas      {:>9.0} req/s   p50 {:.2} ms   p99 {:.2} ms",
        ours.rps, ours.p50_ms, ours.p99_ms
    );
    let cwasm = d.join("hello.cwasm");
    let compiled = Command::new(wasmtime_bin()).arg("compile").arg(&hello).arg("-o").arg(&cwasm).status();
    if compiled.is_ok_and(|s| s.success()) {
        let (_w, waddr, _) = wasmtime_start(&["-S", "cli", "--allow-precompiled"], &cwasm);
        let direct = wrk(&waddr);
        println!(
            "wasmtime   serve, direct               {:>9.0} req/s   p50 {:.2} ms   p99 {:.2} ms",
            direct.rps, direct.p50_ms, direct.p99_ms
        );
        println!("           → wasmorch through its proxy = {:.2}× wasmtime serve direct", ours.rps / direct.rps);
        let nport = free_port();
        let conf = d.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 2;\ndaemon off;\npid {}/nginx.pid;\nerror_log stderr error;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {0};\n  proxy_temp_path {0};\n  upstream w {{ server {waddr}; keepalive 64; }}\n  server {{\n    listen 127.0.0.1:{nport};\n    location / {{ proxy_pass http://w; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
                d.display()
            ),
        )
        .unwrap();
        let naddr = format!("127.0.0.1:{nport}");
        match nginx(&conf, d, &naddr) {
            Ok(_n) => {
                let nginx = wrk(&naddr);
                println!(
                    "nginx      → wasmtime serve            {:>9.0} req/s   p50 {:.2} ms   p99 {:.2} ms",
                    nginx.rps, nginx.p50_ms, nginx.p99_ms
                );
            }
            Err(e) => println!("nginx      (not run: {e})"),
        }
    } else {
        println!("wasmtime   (not found: set WASMTIME=/path/to/wasmtime 48 for the peer figures)");
    }

    let calls = env_num("CALLS", 2000);
    println!("== Service-to-service calls from inside a pod, {calls} sequential calls ==");
    c.apply(d, "front", &deployment("front", "n1", &demo, 1));
    c.apply(d, "near", &deployment("near", "n1", &hello, 1));
    c.apply(d, "far", &deployment("far", "n2", &hello, 1));
    let front = c.wait_ready_endpoints("front", 1)[0].clone();
    c.wait_ready_endpoints("near", 1);
    c.wait_ready_endpoints("far", 1);
    let faddr = format!("{front}:8080");
    for path in ["/call/near/", "/call/far/"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get_status(&faddr, path) != 200 {
            assert!(Instant::now() < deadline, "{path} never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (b50, b99) = latency(&faddr, "/config/POD_NAME", calls);
    let (n50, n99) = latency(&faddr, "/call/near/", calls);
    let (f50, f99) = latency(&faddr, "/call/far/", calls);
    println!("caller alone (no call)                 p50 {b50:.3} ms   p99 {b99:.3} ms");
    println!("call, backend on the same node (in process)  p50 {n50:.3} ms   p99 {n99:.3} ms");
    println!("call, backend on another node (socket hop)   p50 {f50:.3} ms   p99 {f99:.3} ms");
    drop(c);
    memory_under_load(&bin, d, &hello, conns);
}

/// `wasmorch up` serving two hello-http replicas through a NodePort under `wrk`, three times:
/// its RSS at the peak of each run and just after it.
fn memory_under_load(bin: &str, d: &Path, hello: &Path, conns: usize) {
    println!("== memory of `wasmorch up` serving hello-http through a NodePort, wrk -t2 -c{conns}, three runs ==");
    let dir = d.join("up");
    let (http, https) = (free_port().to_string(), free_port().to_string());
    let up_proc = up(bin, &dir, &["--node-name", "solo", "--ingress-http-port", &http, "--ingress-https-port", &https]);
    let pid = up_proc.0.id();
    let kc = dir.join("kubeconfig");
    let f = d.join("mem.yaml");
    std::fs::write(&f, deployment("mem", "solo", hello, 2)).unwrap();
    cli(bin, &kc, &["apply", "-f", f.to_str().unwrap()]);
    let svc: serde_json::Value = serde_json::from_str(&cli(bin, &kc, &["get", "svc", "mem", "-o", "json"])).unwrap();
    let addr = format!("127.0.0.1:{}", svc["spec"]["ports"][0]["nodePort"].as_u64().expect("a node port"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_ok(&addr) {
        assert!(Instant::now() < deadline, "up's node port never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!("up, idle with 2 replicas                 RSS {:>7.1} MB", mb(rss_kb(pid)));
    let mut after = Vec::new();
    for run in 1..=3 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(rss_kb(pid));
                    std::thread::sleep(Duration::from_millis(100));
                }
                peak
            })
        };
        let w = wrk(&addr);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().unwrap();
        let now = rss_kb(pid);
        after.push(now);
        println!(
            "up, run {run}: {:>9.0} req/s   RSS while serving (peak) {:>7.1} MB, after {:>7.1} MB",
            w.rps,
            mb(peak),
            mb(now)
        );
    }
    println!("up, RSS after run 3 − after run 1: {:+.1} MB", mb(after[2]) - mb(after[0]));
    drop(up_proc);
}

fn http_get_status(addr: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return 0 };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
        return 0;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}
