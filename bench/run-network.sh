#!/usr/bin/env bash
# Cluster networking benchmark (not in CI; needs root for network namespaces): a NodePort
# with its replicas in process, on another machine through the node gateway, through the
# control plane's relay, beside nginx proxying to the other machine. WRK_SECS (5) per run.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool"; }
done
exec cargo test --release --test network bench_gateway -- --ignored --nocapture
