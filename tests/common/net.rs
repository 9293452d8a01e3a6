//! A cluster over machines: the control plane on machine 0, node `n<i>` on machine `i`
//! (machines are network namespaces, see [`super::netns`]).

use super::netns::Machines;
use super::{Daemon, eventually};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub struct Net {
    pub m: Machines,
    pub dir: tempfile::TempDir,
    pub kc: PathBuf,
    _server: Daemon,
    pub nodes: Vec<Option<Daemon>>,
    url: String,
    token: String,
}

impl Net {
    /// A control plane on machine 0 and one node on each of machines 1..=n.
    pub fn start(tag: &str, n: usize) -> Net {
        let m = Machines::make(tag, n + 1);
        let dir = tempfile::tempdir().unwrap();
        let sdir = dir.path().join("server");
        let listen = format!("{}:0", m.addrs[0]);
        let cidr = super::cluster_cidr();
        let server = m.daemon(
            0,
            &[
                "server",
                "--listen",
                &listen,
                "--data-dir",
                sdir.to_str().unwrap(),
                "--tls-san",
                &m.addrs[0],
                "--cluster-cidr",
                &cidr,
            ],
        );
        let line = server.wait_line("listening on https://");
        let url = line.split("listening on ").nth(1).unwrap().trim().to_string();
        let token = std::fs::read_to_string(sdir.join("join.token")).unwrap().trim().to_string();
        let mut net = Net { m, kc: sdir.join("admin.kubeconfig"), dir, _server: server, nodes: Vec::new(), url, token };
        net.nodes = (1..=n).map(|i| Some(net.node(i, &format!("n{i}")))).collect();
        let ready = || {
            net.get(&["get", "nodes"])
                .map(|t| t.lines().filter(|l| l.split_whitespace().nth(1) == Some("Ready")).count())
                .unwrap_or(0)
        };
        assert!(eventually(Duration::from_secs(40), || ready() == n), "{:?}", net.get(&["get", "nodes"]));
        net
    }

    /// Node `name` joining from machine `i` (one more node process there, if `i` has one).
    pub fn node(&self, i: usize, name: &str) -> Daemon {
        let data = self.dir.path().join(name);
        let args = ["node", "--server", &self.url, "--token", &self.token, "--name", name, "--data-dir"];
        let mut args: Vec<&str> = args.to_vec();
        args.extend([data.to_str().unwrap(), "--address", &self.m.addrs[i]]);
        self.m.daemon(i, &args)
    }

    pub fn get(&self, args: &[&str]) -> Option<String> {
        self.m.cli(0, &self.kc, args)
    }

    pub fn apply(&self, yaml: &str) {
        let f = self.dir.path().join(format!("m{}.yaml", yaml.len()));
        std::fs::write(&f, yaml).unwrap();
        self.get(&["apply", "-f", f.to_str().unwrap()]).expect("apply");
    }

    /// Pods with a label: name → (node, pod IP, ready).
    pub fn pods(&self, selector: &str) -> BTreeMap<String, (String, String, bool)> {
        let Some(out) = self.get(&["get", "pods", "-l", selector, "-o", "json"]) else { return BTreeMap::new() };
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let ready = p["status"]["phase"] == "Running"
                    && p["status"]["containerStatuses"]
                        .as_array()
                        .is_some_and(|c| c.iter().all(|c| c["ready"] == true));
                let s = |v: &Value| v.as_str().unwrap_or("").to_string();
                (s(&p["metadata"]["name"]), (s(&p["spec"]["nodeName"]), s(&p["status"]["podIP"]), ready))
            })
            .collect()
    }

    pub fn node_json(&self, name: &str) -> Value {
        serde_json::from_str(&self.get(&["get", "node", name, "-o", "json"]).unwrap_or_default()).unwrap_or(Value::Null)
    }

    /// Node `name`'s endpoint (its gateway) as `(ip, port)`.
    pub fn gateway_of(&self, name: &str) -> (String, u16) {
        let n = self.node_json(name);
        let ip = n["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .unwrap()
            .to_string();
        (ip, n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap() as u16)
    }
}
