#!/usr/bin/env bash
# Authorization cost: GET req/s as an admin and as a user RBAC decides for, same run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin wasmorch --example bench-rbac
exec target/release/examples/bench-rbac
