#!/usr/bin/env bash
# HA control plane benchmark: leader and node failover with two servers on etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v etcd >/dev/null || { apt-get update -qq && apt-get install -y -qq etcd-server; }
cargo build --release --features etcd --bin wasmorch --example bench-ha
exec target/release/examples/bench-ha
