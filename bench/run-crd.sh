#!/usr/bin/env bash
# Create throughput of a custom resource beside a ConfigMap of the same size, same run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin wasmorch --example bench-crd
exec target/release/examples/bench-crd
