//! etcd members for tests: Debian's `etcd` binary on loopback, in a directory of its own,
//! gone when the test process ends (however it ends).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One etcd member (a cluster of one unless `start_cluster` made it).
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    dir: PathBuf,
    child: Option<Child>,
    /// The network namespace (a test's machine) it runs in, if not this one.
    netns: Option<String>,
}

/// Whether the `etcd` binary is on PATH.
pub fn available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a test that needs etcd can run: with `WASMORCH_REQUIRE_PEERS` set (CI) etcd must
/// be installed; elsewhere a missing etcd skips the test, saying so.
pub fn required() -> bool {
    if available() {
        return true;
    }
    assert!(std::env::var_os("WASMORCH_REQUIRE_PEERS").is_none(), "etcd is required (Debian's etcd-server)");
    eprintln!("skipped: etcd is not installed");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl Member {
    /// Start a single-member cluster on loopback and wait until it answers.
    pub fn start() -> anyhow::Result<Member> {
        let mut m = Member::prepare("default");
        let cluster = format!("{}={}", m.name, m.peer_url);
        m.spawn(&cluster, "new")?;
        m.wait_healthy(Duration::from_secs(20))?;
        Ok(m)
    }

    /// A member's name, ports and directory (not started).
    pub fn prepare(name: &str) -> Member {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wasmorch-etcd-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        Member {
            name: name.to_string(),
            client_url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            dir,
            child: None,
            netns: None,
        }
    }

    /// A member on a test's machine: network namespace `netns`, its address `addr` (etcd's
    /// usual ports). Not started.
    pub fn on_machine(name: &str, netns: &str, addr: &str) -> Member {
        let mut m = Member::prepare(name);
        m.client_url = format!("http://{addr}:2379");
        m.peer_url = format!("http://{addr}:2380");
        m.netns = Some(netns.to_string());
        m
    }

    /// Run the member (`initial_cluster`: `name=peer-url,…`; `state`: `new` or `existing`).
    /// It runs under a shell that stops it when this process's end closes the shell's stdin.
    pub fn spawn(&mut self, initial_cluster: &str, state: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::File::create(self.dir.join("etcd.log"))?;
        let args = [
            "--name",
            &self.name,
            "--data-dir",
            &self.dir.join("data").to_string_lossy(),
            "--listen-client-urls",
            &self.client_url,
            "--advertise-client-urls",
            &self.client_url,
            "--listen-peer-urls",
            &self.peer_url,
            "--initial-advertise-peer-urls",
            &self.peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            state,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ]
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
        let script = format!("etcd {args} & pid=$!; read _; kill $pid 2>/dev/null; wait $pid");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "sh"]);
                c
            }
            None => Command::new("sh"),
        };
        let child = cmd.arg("-c").arg(script).stdin(Stdio::piped()).stdout(log.try_clone()?).stderr(log).spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Poll the member's health endpoint until it reports healthy (it has a leader).
    pub fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let addr = self.client_url.trim_start_matches("http://").to_string();
        loop {
            let body = match &self.netns {
                Some(ns) => health_in(ns, &self.client_url),
                None => http_get(&addr, "/health").unwrap_or_default(),
            };
            if body.contains("\"health\":\"true\"") || body.contains("\"health\": \"true\"") {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                anyhow::bail!("etcd member {} not healthy within {within:?}; its log:\n{log}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the member (kept on disk: `spawn` again with state `existing` brings it back).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Closing stdin makes the shell stop etcd and wait for it.
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }

    /// The log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Some(stdin) = c.stdin.as_mut()
        {
            let _ = stdin.write_all(b"\n");
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start a cluster of `n` members on loopback and wait until each is healthy.
pub fn start_cluster(n: usize) -> anyhow::Result<Vec<Member>> {
    let mut members: Vec<Member> = (0..n).map(|i| Member::prepare(&format!("m{i}"))).collect();
    let cluster = members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
    for m in &mut members {
        m.spawn(&cluster, "new")?;
    }
    for m in &members {
        m.wait_healthy(Duration::from_secs(30))?;
    }
    Ok(members)
}

/// The health document of the member at `url`, read from inside network namespace `ns`.
fn health_in(ns: &str, url: &str) -> String {
    let script = "import sys,urllib.request\ntry:\n print(urllib.request.urlopen(sys.argv[1]+'/health',timeout=2).read().decode())\nexcept Exception as e:\n print(e)";
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script, url])
        .env("no_proxy", "*")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A plain HTTP/1.0 GET on loopback (etcd's health endpoint), body only.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|_| std::io::Error::other("bad address"))?,
        Duration::from_millis(500),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}
