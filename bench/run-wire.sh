#!/usr/bin/env bash
# Wire benchmark: pod creates/s and server CPU per create, JSON vs protobuf bodies, one run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin wasmorch --example bench-wire
exec target/release/examples/bench-wire
