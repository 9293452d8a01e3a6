#!/usr/bin/env bash
# Limits benchmark (#14): a neighbour's latency idle and beside a hostile pod limited to 500m
# at 1, 4 and 20 busy requests in flight (with the node's CPU use), and a well-behaved pod's
# throughput at a binding concurrency limit beside the same pod without one. Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
rustup target add wasm32-wasip2 >/dev/null
cargo build --quiet --release --target wasm32-wasip2 --manifest-path workloads/Cargo.toml --target-dir workloads/target
cargo build --quiet --release --bin wasmorch
bin=$PWD/target/release/wasmorch
wasm=$PWD/workloads/target/wasm32-wasip2/release
dir=$(mktemp -d)
export KUBECONFIG=$dir/kubeconfig
"$bin" up --listen 127.0.0.1:0 --data-dir "$dir/data" --node-name n1 --cluster-cidr 127.160.0.0/16 >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$dir/log" && break; sleep 0.1; done
pod() { # name image resources annotations
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: %s, annotations: {%s}}\nspec:\n  nodeName: n1\n  containers:\n  - name: main\n    image: file://%s\n    ports: [{containerPort: 8080}]\n    resources: %s\n---\n' "$1" "$4" "$2" "$3"
}
{
  pod hostile "$wasm/hostile.wasm" "{limits: {cpu: 500m}}" ""
  pod hello "$wasm/hello_http.wasm" "{}" ""
  pod capped "$wasm/hello_http.wasm" "{}" 'wasmorch.io/max-concurrency: "8"'
} >"$dir/pods.yaml"
"$bin" apply -f "$dir/pods.yaml" >/dev/null
ip() { "$bin" get pods -o wide | awk -v n="$1" '$1 == n && $2 == "1/1" {print $6}'; }
for _ in $(seq 300); do [[ -n "$(ip hostile)" && -n "$(ip hello)" && -n "$(ip capped)" ]] && break; sleep 0.1; done
hostile=$(ip hostile):8080 hello=$(ip hello):8080 capped=$(ip capped):8080
curl -s "http://$hello/" >/dev/null
curl -s "http://$capped/" >/dev/null
lat() { wrk -t1 -c1 -d5s --latency "http://$1/" | awk '/ 50%/{a=$2} / 99%/{b=$2} END{printf "p50 %s, p99 %s", a, b}'; }
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
echo "neighbour (hello-http, wrk -c1), idle: $(lat "$hello")"
for c in 1 4 20; do
  wrk -t"$(( c < 2 ? 1 : 2 ))" -c"$c" -d9s --timeout 30s "http://$hostile/busy?ms=200" >/dev/null &
  load=$!
  sleep 2
  c0=$(cpu)
  l=$(lat "$hello")
  c1=$(cpu)
  wait $load
  echo "neighbour beside a 500m pod with $c busy requests: $l; node CPU $(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", (b-a)/100/5}') cores (incl. the neighbour's load)"
done
tp() { wrk -t2 -c32 -d10s --latency "http://$1/" | awk '/Requests\/sec/{r=$2} / 50%/{a=$2} / 99%/{b=$2} END{printf "%s req/s, p50 %s, p99 %s", r, a, b}'; }
echo "hello-http, no concurrency limit, wrk -t2 -c32:     $(tp "$hello")"
echo "hello-http, max-concurrency 8 (queueing), -c32:     $(tp "$capped")"
