#!/usr/bin/env bash
# Pods per node (not in CI): DENSITY_PODS (10000) idle hello-http pods on one node; time to
# all Ready and the node's memory per pod. Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release --test hygiene bench_density -- --ignored --nocapture
