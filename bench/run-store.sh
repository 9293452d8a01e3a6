#!/usr/bin/env bash
# Store benchmark: wasmorch (embedded store, and on etcd) vs etcd 3.4 on this disk, in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v etcd >/dev/null || { apt-get update -qq && apt-get install -y -qq etcd-server; }
cargo build --release --features etcd --bin wasmorch --example bench-store
exec target/release/examples/bench-store
