#!/usr/bin/env bash
# Smoke test of this machine's own build, as the README's first screen goes: `wasmorch up`
# on a fresh data directory, apply manifests/hello.yaml unedited, wait for the rollout, curl
# the NodePort on 127.0.0.1, delete, and see the pods go. Only the wasmorch binary, bash and
# curl are needed, so it runs on Linux, macOS and Windows (Git Bash) alike; on macOS the
# node picks mapped pod ports by itself (only 127.0.0.1 is local there).
#
# Usage: tests/smoke.sh [extra `wasmorch up` flags, e.g. --pod-addressing mapped]
# WASMORCH_BIN: a binary already built (tests/run.sh passes the test build's), instead of
# building one here.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bin=${WASMORCH_BIN:-}
if [[ -z $bin ]]; then
  cargo build --quiet --bin wasmorch
  bin="$root/target/debug/wasmorch"
  [[ -x "$bin" ]] || bin="$bin.exe"
fi

dir=$(mktemp -d)
# A home of its own: the kubeconfig `up` writes goes there, not into the user's.
export HOME="$dir" USERPROFILE="$dir" KUBECONFIG="$dir/.kube/config"
# The node port of manifests/hello.yaml on 127.0.0.1 must be free.
port=30080
"$bin" up --data-dir "$dir/data" --listen 127.0.0.1:0 "$@" >"$dir/up.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

fail() {
  echo "smoke: $*" >&2
  echo "--- wasmorch up log (last 40 lines)" >&2
  tail -40 "$dir/up.log" >&2
  exit 1
}

# Poll a command until it succeeds, at most `secs` seconds.
until_ok() {
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) <= deadline )) || fail "$what: not within ${secs}s"
    kill -0 "$pid" 2>/dev/null || fail "wasmorch up exited"
    sleep 0.2
  done
}

ready_node() { "$bin" get nodes --no-headers | grep -qw Ready; }
no_pods() { [[ -z $("$bin" get pods -o name) ]]; }

until_ok 120 "node Ready" ready_node
"$bin" apply -f manifests/hello.yaml >/dev/null || fail "apply"
"$bin" rollout status deployment/hello --timeout 120s >/dev/null || fail "rollout"
answer=$(curl -sS -m 30 "http://127.0.0.1:$port/") || fail "curl"
[[ $answer == "Hello from wasmorch!"* ]] || fail "curl answered: $answer"
addressing=$("$bin" get nodes -o yaml | grep -o 'pod-addressing: [a-z]*' | head -1 || true)
"$bin" delete -f manifests/hello.yaml >/dev/null || fail "delete"
until_ok 120 "pods gone" no_pods
echo "smoke ($(uname -s), ${addressing:-pod-addressing: ?}): up, apply, rollout, curl, delete ok"
