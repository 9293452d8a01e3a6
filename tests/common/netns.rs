//! Separate machines for tests: network namespaces, each with its own loopback, linked by
//! veth pairs through a router namespace. Machine `i` is `10.<k>.<i>.2/24`, its router side
//! `10.<k>.<i>.1`; the router forwards between them. Needs root and iproute2 (CI has both).
//! Everything is removed on drop.

use super::{BIN, Daemon};
use std::path::Path;
use std::process::{Command, Stdio};

pub fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

pub struct Machines {
    pub router: String,
    pub names: Vec<String>,
    pub addrs: Vec<String>,
}

/// Namespaces need root; without it (a developer's unprivileged run) the test is skipped,
/// except where peers are required (CI).
pub fn available() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || !ip(&["-V"]) {
        assert!(std::env::var("WASMORCH_REQUIRE_PEERS").is_err(), "network namespaces need root and iproute2");
        eprintln!("skipped: network namespaces need root and iproute2");
        return false;
    }
    true
}

impl Machines {
    /// `n` machines named `<tag>-<i>` (plus the router), unique to this test process.
    pub fn make(tag: &str, n: usize) -> Machines {
        let k = std::process::id() % 200 + 20;
        let router = format!("wo-{tag}-r{k}");
        let names: Vec<String> = (0..n).map(|i| format!("wo-{tag}-{i}-{k}")).collect();
        let addrs: Vec<String> = (0..n).map(|i| format!("10.{k}.{i}.2")).collect();
        for ns in names.iter().chain([&router]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let m = Machines { router: router.clone(), names, addrs };
        assert!(ip(&["netns", "add", &router]), "ip netns add");
        assert!(ip(&["-n", &router, "link", "set", "lo", "up"]));
        assert!(
            Command::new("ip")
                .args(["netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
                .status()
                .is_ok_and(|s| s.success())
        );
        for (i, ns) in m.names.iter().enumerate() {
            let (r_if, m_if) = (format!("r{i}"), format!("eth{i}"));
            let ok = ip(&["netns", "add", ns])
                && ip(&["link", "add", &r_if, "netns", &router, "type", "veth", "peer", "name", &m_if, "netns", ns])
                && ip(&["-n", &router, "addr", "add", &format!("10.{k}.{i}.1/24"), "dev", &r_if])
                && ip(&["-n", ns, "addr", "add", &format!("{}/24", m.addrs[i]), "dev", &m_if])
                && ip(&["-n", &router, "link", "set", &r_if, "up"])
                && ip(&["-n", ns, "link", "set", &m_if, "up"])
                && ip(&["-n", ns, "link", "set", "lo", "up"])
                && ip(&["-n", ns, "route", "add", "default", "via", &format!("10.{k}.{i}.1")]);
            assert!(ok, "making machine {ns}");
        }
        m
    }

    /// Cut (or restore) the path between machines `a` and `b`, both ways; each still
    /// reaches every other machine.
    pub fn cut(&self, a: usize, b: usize, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        for (from, to) in [(a, b), (b, a)] {
            let net = format!("{}/32", self.addrs[to]);
            assert!(ip(&["-n", &self.names[from], "route", verb, "prohibit", &net]), "route {verb} {net}");
        }
    }

    /// A `wasmorch` daemon on machine `i`.
    pub fn daemon(&self, i: usize, args: &[&str]) -> Daemon {
        let mut v: Vec<&str> = vec!["netns", "exec", &self.names[i], BIN];
        v.extend_from_slice(args);
        Daemon::spawn_program("ip", &v)
    }

    /// A `wasmorch` client command on machine `i`; its stdout if it succeeded.
    pub fn cli(&self, i: usize, kubeconfig: &Path, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.names[i], BIN])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// GET each URL from machine `i` (one process for all); per URL its status (0: no
    /// answer) and body.
    pub fn get_all(&self, i: usize, urls: &[String]) -> Vec<(u16, String)> {
        const SCRIPT: &str = r#"
import sys, json, urllib.request, urllib.error
out = []
for u in sys.argv[1:]:
    try:
        with urllib.request.urlopen(u, timeout=10) as r:
            out.append([r.status, r.read().decode(errors="replace")])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.read().decode(errors="replace")])
    except Exception as e:
        out.append([0, str(e)])
print(json.dumps(out))
"#;
        let out = Command::new("ip")
            .args(["netns", "exec", &self.names[i], "python3", "-c", SCRIPT])
            .args(urls)
            .env("no_proxy", "*")
            .output()
            .unwrap();
        let v: Vec<(u16, String)> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        v
    }

    /// Run a program on machine `i`; its output.
    pub fn run(&self, i: usize, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip").args(["netns", "exec", &self.names[i], program]).args(args).output().unwrap()
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        for ns in self.names.iter().chain([&self.router]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
