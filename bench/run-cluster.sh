#!/usr/bin/env bash
# Cluster benchmark: join → Ready over fresh nodes, and node loss → pods Running elsewhere
# over repeated SIGKILL trials (JOINS, TRIALS to change the counts).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
cargo build --release --target wasm32-wasip2 --manifest-path workloads/Cargo.toml --target-dir workloads/target
cargo build --release --bin wasmorch --example bench-cluster
exec target/release/examples/bench-cluster
