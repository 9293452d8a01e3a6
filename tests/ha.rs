//! A highly available control plane over three machines (network namespaces): an etcd
//! member on each, `wasmorch server` on machines 0 and 1, a node on machine 2 that knows
//! both servers. Needs root, iproute2 and Debian's etcd; built with the `etcd` feature.

#![cfg(feature = "etcd")]

mod common;

use common::netns::{self, Machines};
use common::{BIN, eventually, workloads};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use wasmorch_control::store::etcd::testing::{self, Member};

fn apply(m: &Machines, i: usize, kc: &Path, dir: &Path, name: &str, yaml: &str) -> std::process::Output {
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    std::process::Command::new("ip")
        .args(["netns", "exec", &m.names[i], BIN, "apply", "-f", f.to_str().unwrap()])
        .env("KUBECONFIG", kc)
        .output()
        .unwrap()
}

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: v}}\n")
}

#[test]
fn an_ha_control_plane_survives_losing_an_etcd_member_a_quorum_and_its_leader() {
    if !netns::available() {
        return;
    }
    if !testing::required() {
        return;
    }
    let m = Machines::make("ha", 3);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A three-member etcd cluster, one member per machine.
    let mut members: Vec<Member> =
        (0..3).map(|i| Member::on_machine(&format!("m{i}"), &m.names[i], &m.addrs[i])).collect();
    let initial = members.iter().map(|x| format!("{}={}", x.name, x.peer_url)).collect::<Vec<_>>().join(",");
    for x in &mut members {
        x.spawn(&initial, "new").unwrap();
    }
    for x in &members {
        x.wait_healthy(Duration::from_secs(40)).unwrap();
    }
    let endpoints = members.iter().map(|x| x.client_url.clone()).collect::<Vec<_>>().join(",");

    // Two servers; the second joins the first's cluster with its server token.
    let cidr = common::cluster_cidr();
    let server = |i: usize, extra: &[&str]| {
        let data = d.join(format!("s{i}"));
        let listen = format!("{}:6443", m.addrs[i]);
        let mut args = vec![
            "server",
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-san",
            &m.addrs[i],
            "--datastore-endpoint",
            &endpoints,
            "--leader-elect-lease-duration",
            "3s",
            "--cluster-cidr",
            &cidr,
        ];
        args.extend_from_slice(extra);
        m.daemon(i, &args)
    };
    let mut a = server(0, &[]);
    a.wait_line("leading: ");
    let token = std::fs::read_to_string(d.join("s0/server.token")).unwrap();
    let b = server(1, &["--token", token.trim()]);
    b.wait_line("standby: control plane");
    let (kc_a, kc_b) = (d.join("s0/admin.kubeconfig"), d.join("s1/admin.kubeconfig"));

    // The node knows both servers and uses the first.
    let join = std::fs::read_to_string(d.join("s0/join.token")).unwrap();
    let servers = format!("https://{}:6443,https://{}:6443", m.addrs[0], m.addrs[1]);
    let ndata = d.join("n1");
    let node = m.daemon(
        2,
        &[
            "node",
            "--server",
            &servers,
            "--token",
            join.trim(),
            "--name",
            "n1",
            "--data-dir",
            ndata.to_str().unwrap(),
            "--address",
            &m.addrs[2],
        ],
    );
    let ready = eventually(Duration::from_secs(40), || {
        m.cli(0, &kc_a, &["get", "nodes"]).is_some_and(|t| t.contains(" Ready "))
    });
    assert!(ready, "the node did not become Ready: {:?}", m.cli(0, &kc_a, &["get", "nodes"]));

    // One etcd member lost: writes go on.
    members[2].stop();
    let o = apply(&m, 0, &kc_a, d, "one", &configmap("one"));
    assert!(o.status.success(), "with two of three members: {}", String::from_utf8_lossy(&o.stderr));

    // Two lost: no quorum. A write fails with a 5xx naming etcd, within the request deadline.
    members[1].stop();
    let started = Instant::now();
    let o = apply(&m, 0, &kc_a, d, "two", &configmap("two"));
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "a write without quorum succeeded");
    assert!(err.contains("etcd"), "the error does not say why: {err}");
    assert!(took < Duration::from_secs(30), "the write hung for {took:?}");
    eprintln!("write without quorum failed after {took:?}: {}", err.trim());

    // A member back: writes succeed again, and every acknowledged write is there.
    members[1].spawn(&initial, "existing").unwrap();
    let back =
        eventually(Duration::from_secs(40), || apply(&m, 0, &kc_a, d, "three", &configmap("three")).status.success());
    assert!(back, "writes did not resume with the quorum back");
    let names = m.cli(0, &kc_a, &["get", "configmaps", "-o", "name"]).unwrap_or_default();
    assert!(names.contains("configmap/one") && names.contains("configmap/three"), "{names}");
    members[2].spawn(&initial, "existing").unwrap();

    // The leading server dies without a word: the node moves to the other, which takes the
    // Lease over and runs a new Deployment on the node.
    a.kill();
    b.wait_line("leading: ");
    node.wait_line("API server unreachable: switched");
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: after}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: after}}}}\n  template:\n    metadata: {{labels: {{app: after}}}}\n    spec:\n      containers:\n        - name: main\n          image: file://{}\n",
        workloads().join("hello_http.wasm").display()
    );
    let o = apply(&m, 1, &kc_b, d, "after", &deployment);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let running = eventually(Duration::from_secs(40), || {
        let out = m.cli(1, &kc_b, &["get", "pods", "-l", "app=after", "-o", "json"]).unwrap_or_default();
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let pods = v["items"].as_array().cloned().unwrap_or_default();
        pods.len() == 2
            && pods.iter().all(|p| {
                p["spec"]["nodeName"] == "n1"
                    && p["status"]["phase"] == "Running"
                    && p["status"]["containerStatuses"][0]["ready"] == true
            })
    });
    assert!(running, "{:?}", m.cli(1, &kc_b, &["get", "pods", "-o", "wide"]));
}
