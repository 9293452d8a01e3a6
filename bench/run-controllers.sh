#!/usr/bin/env bash
# Control-loop benchmark: scheduler binds/s (10 000 pods, 1 000 nodes), apply → Ready of one
# replica, and a 1 000-replica Deployment on one node.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
cargo build --release --target wasm32-wasip2 --manifest-path workloads/Cargo.toml --target-dir workloads/target
cargo build --release --bin wasmorch --example bench-controllers
exec target/release/examples/bench-controllers
