#!/usr/bin/env bash
# Service benchmark: NodePort throughput beside `wasmtime serve` direct and nginx in front of
# it; service-to-service call latency in process vs across nodes. Not part of CI: the
# wasmtime peer takes about 25 minutes to build on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool"; }
done
if [[ -z "${WASMTIME:-}" ]]; then
  if ! command -v wasmtime >/dev/null || [[ "$(wasmtime --version)" != *"48.0.8"* ]]; then
    cargo install --locked wasmtime-cli@48.0.8 --root target/peers
    export PATH="$PWD/target/peers/bin:$PATH"
  fi
fi
cargo build --release --target wasm32-wasip2 --manifest-path workloads/Cargo.toml --target-dir workloads/target
cargo build --release --bin wasmorch --example bench-services
ulimit -n 65536 2>/dev/null || true
exec target/release/examples/bench-services
