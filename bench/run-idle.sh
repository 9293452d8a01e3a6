#!/usr/bin/env bash
# What an idle three-node cluster costs an SD card and a small memory: `wasmorch up` (control
# plane, store and node n1) and two `wasmorch node` processes on this machine, idle for
# IDLE_SECONDS (default 360: includes one flush of the soft Lease writes, every 5 min).
# Prints bytes written (/proc/PID/io write_bytes) and fdatasync calls (strace) per hour, the
# store revisions by kind, and each process's RSS. Needs strace and kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${IDLE_SECONDS:-360}
cargo build --release --quiet --bin wasmorch
bin=$PWD/target/release/wasmorch
command -v strace >/dev/null || (apt-get update -qq && apt-get install -y -qq strace >/dev/null)
dir=$(mktemp -d)
export HOME=$dir KUBECONFIG=$dir/.kube/config
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

"$bin" up --data-dir "$dir/data" --listen 127.0.0.1:0 --node-name n1 >"$dir/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do grep -q "is up" "$dir/up.log" && [[ -f $dir/data/join.token ]] && break; sleep 0.5; done
url=$(grep -o 'https://127.0.0.1:[0-9]*' "$dir/up.log" | head -1)
token=$(cat "$dir/data/join.token")
for n in 2 3; do
  "$bin" node --server "$url" --token "$token" --name "n$n" --data-dir "$dir/n$n" --address "127.0.0.1$n" \
    >"$dir/n$n.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 240); do
  [[ $(kubectl get nodes --no-headers 2>/dev/null | grep -cw Ready) == 3 ]] && break
  sleep 0.5
done
sleep 30 # past start-up's own writes

rev() { kubectl get --raw /api/v1/namespaces | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])'; }
written() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
declare -A before
for p in "${pids[@]}"; do before[$p]=$(written "$p"); done
rv0=$(rev)
timeout "$secs" kubectl get --raw "/apis/coordination.k8s.io/v1/leases?watch=1&resourceVersion=$rv0" >"$dir/leases.w" 2>/dev/null &
timeout "$secs" strace -f -c -e trace=fsync,fdatasync -p "${pids[0]}" -o "$dir/strace.txt" 2>/dev/null &
sleep "$secs"
sleep 2
rv1=$(rev)
per_hour() { awk -v v="$1" -v s="$secs" 'BEGIN { printf "%.1f", v * 3600 / s }'; }
syncs=$(awk '$NF == "fdatasync" || $NF == "fsync" {n += $4} END {print n + 0}' "$dir/strace.txt")
echo "idle ${secs}s, three nodes: $((rv1 - rv0)) store revisions ($(wc -l <"$dir/leases.w") Lease renewals)"
names=("up (control plane, store, node n1)" "node n2" "node n3")
for i in 0 1 2; do
  p=${pids[$i]}
  w=$(( $(written "$p") - before[$p] ))
  rss=$(awk '/^VmRSS/ {r = $2} /^RssAnon/ {a = $2} END {printf "RSS %.1f MB (anonymous %.1f MB)", r / 1024, a / 1024}' "/proc/$p/status")
  echo "  ${names[$i]}: $(per_hour $((w / 1024))) KiB written per hour; $rss"
done
echo "  store fsync/fdatasync calls per hour: $(per_hour "$syncs")"
