#!/usr/bin/env bash
# Smoke test of the ARM builds (aarch64, and armv7 where wasm runs on the Pulley interpreter)
# under qemu user-mode emulation, both at once: `wasmorch up`, apply manifests/hello.yaml (a
# Deployment and a NodePort Service), wait for the replicas, curl the Service, delete it and
# see the pods go. Prints apply → Ready per target (emulated: for the record, not a target).
#
# Needs qemu-user-static, gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf and kubectl;
# tests/run.sh installs them. Usage: tests/qemu.sh [--build-only|--no-build] [aarch64|armv7 ...]
# (--build-only builds and stops; --no-build runs what an earlier --build-only built.)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=1 run=1
case "${1:-}" in
  --build-only) run=0; shift ;;
  --no-build) build=0; shift ;;
esac

declare -A triple=([aarch64]=aarch64-unknown-linux-gnu [armv7]=armv7-unknown-linux-gnueabihf)
declare -A emulator=([aarch64]=qemu-aarch64-static [armv7]=qemu-arm-static)
declare -A sysroot=([aarch64]=/usr/aarch64-linux-gnu [armv7]=/usr/arm-linux-gnueabihf)
# Each emulated cluster gets its own node address and address ranges: both run at once here.
declare -A node_ip=([aarch64]=127.0.0.2 [armv7]=127.0.0.3)
declare -A pods=([aarch64]=127.96.0.0/16 [armv7]=127.97.0.0/16)
declare -A services=([aarch64]=127.44.0.0/16 [armv7]=127.45.0.0/16)

arches=("$@")
[[ ${#arches[@]} -gt 0 ]] || arches=(aarch64 armv7)

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
targets=()
for a in "${arches[@]}"; do targets+=(--target "${triple[$a]}"); done
if (( build )); then cargo build --quiet --profile quick --bin wasmorch "${targets[@]}"; fi
(( run )) || exit 0

# Seconds since the epoch, with fractions.
now() { date +%s.%N; }

# Poll `cmd` until it succeeds, at most `secs` seconds.
until_ok() {
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) > deadline )); then echo "$what: not within ${secs}s" >&2; return 1; fi
    sleep 0.2
  done
}

# The steps, each checked (set -e does not reach into a function whose status is tested).
steps() {
  local a=$1 start ready answer
  until_ok 300 "$a: node Ready" bash -c 'kubectl get nodes --no-headers | grep -qw Ready' || return 1
  start=$(now)
  kubectl apply -f manifests/hello.yaml >/dev/null || return 1
  until_ok 300 "$a: replicas Ready" bash -c \
    '[[ $(kubectl get deploy hello -o jsonpath="{.status.readyReplicas}") == $(kubectl get deploy hello -o jsonpath="{.spec.replicas}") ]]' \
    || return 1
  ready=$(now)
  answer=$(curl -sS -m 60 "http://${node_ip[$a]}:30080/") || return 1
  [[ $answer == "Hello from wasmorch!"* ]] || { echo "$a: curl answered: $answer" >&2; return 1; }
  kubectl delete -f manifests/hello.yaml >/dev/null || return 1
  until_ok 300 "$a: pods gone" bash -c '[[ -z $(kubectl get pods -o name) ]]' || return 1
  awk -v a="$a" -v t="${triple[$a]} on $(uname -m)" -v s="$start" -v r="$ready" \
    'BEGIN { printf "qemu %s (%s): up, apply, curl, delete ok; apply → Ready %.2f s (emulated)\n", a, t, r - s }'
}

smoke() {
  local a=$1 dir
  dir=$(mktemp -d)
  local bin="${CARGO_TARGET_DIR:-$root/target}/${triple[$a]}/quick/wasmorch"
  export HOME="$dir" KUBECONFIG="$dir/.kube/config" QEMU_LD_PREFIX="${sysroot[$a]}"
  "${emulator[$a]}" "$bin" up --data-dir "$dir/data" --listen 127.0.0.1:0 --node-address "${node_ip[$a]}" \
    --cluster-cidr "${pods[$a]}" --service-cidr "${services[$a]}" >"$dir/up.log" 2>&1 &
  local pid=$!
  # shellcheck disable=SC2064
  trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf '$dir'" RETURN
  local ok=0
  steps "$a" || ok=1
  if (( ok != 0 )); then
    echo "--- $a: wasmorch up log (last 40 lines)" >&2
    tail -40 "$dir/up.log" >&2
  fi
  return $ok
}

pids=()
for a in "${arches[@]}"; do
  smoke "$a" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
