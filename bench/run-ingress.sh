#!/usr/bin/env bash
# Ingress benchmark: HTTP and HTTPS through a node's Ingress beside the NodePort and beside
# nginx terminating TLS with the same certificate in front of the same replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool"; }
done
cargo build --release --bin wasmorch --example bench-ingress
ulimit -n 65536 2>/dev/null || true
exec target/release/examples/bench-ingress
