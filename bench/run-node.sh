#!/usr/bin/env bash
# Node benchmark: pod start, HTTP throughput and memory per idle pod, each beside its peer
# (`wasmtime serve` from wasmtime-cli 48.0.8) measured in the same run. Not part of CI: the
# peer takes about 25 minutes to build on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [[ -z "${WASMTIME:-}" ]]; then
  if ! command -v wasmtime >/dev/null || [[ "$(wasmtime --version)" != *"48.0.8"* ]]; then
    cargo install --locked wasmtime-cli@48.0.8 --root target/peers
    export PATH="$PWD/target/peers/bin:$PATH"
  fi
fi
cargo build --release --target wasm32-wasip2 --manifest-path workloads/Cargo.toml --target-dir workloads/target
cargo build --release --bin wasmorch --example bench-node
ulimit -n 65536 2>/dev/null || true
exec target/release/examples/bench-node
