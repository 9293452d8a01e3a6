#!/usr/bin/env bash
# Wake from zero: a hello-http Deployment put to sleep (scaled to zero as the idler does),
# then one request through its NodePort; time from sending it to the answer, over TRIALS
# (default 50) trials, beside warm requests to the same Service in the same run. The
# component is cached on the node (as the issue asks: waking is pod creation, not compiling).
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${TRIALS:-50}
cargo build --release --quiet --bin wasmorch
bin=$PWD/target/release/wasmorch
dir=$(mktemp -d)
export HOME=$dir KUBECONFIG=$dir/.kube/config
trap 'kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
"$bin" up --data-dir "$dir/data" --listen 127.0.0.1:0 --node-address 127.0.0.1 --metric-resolution 1s >"$dir/up.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do grep -q "is up" "$dir/up.log" && break; sleep 0.5; done
for _ in $(seq 1 120); do "$bin" get nodes --no-headers 2>/dev/null | grep -qw Ready && break; sleep 0.5; done

manifest() { # $1: replicas, $2: extra annotations
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nap
  annotations: {wasmorch.io/scale-to-zero-after: 1h$2}
spec:
  replicas: $1
  selector: {matchLabels: {app: nap}}
  template:
    metadata: {labels: {app: nap}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: main
          image: wasmorch.local/hello-http:1.0
---
apiVersion: v1
kind: Service
metadata: {name: nap}
spec:
  type: NodePort
  selector: {app: nap}
  ports: [{port: 80, targetPort: 8080, nodePort: 30099}]
YAML
}
url=http://127.0.0.1:30099/
manifest 1 "" | "$bin" apply -f - >/dev/null
"$bin" rollout status deployment/nap >/dev/null
for _ in $(seq 1 50); do curl -sf -o /dev/null "$url" && break; sleep 0.1; done

# Warm: the Service has a ready replica.
warm=()
for _ in $(seq 1 "$trials"); do warm+=("$(curl -s -o /dev/null -w '%{time_total}' "$url")"); done

asleep=', wasmorch.io/scaled-to-zero-at: "2026-01-01T00:00:00Z", wasmorch.io/replicas-before-zero: "1"'
cold=()
codes=()
for _ in $(seq 1 "$trials"); do
  manifest 0 "$asleep" | "$bin" apply -f - >/dev/null
  # Asleep: no pod, and no ready endpoint the proxy could use.
  for _ in $(seq 1 200); do
    [[ -z $("$bin" get pods -l app=nap -o name 2>/dev/null) ]] \
      && ! "$bin" get endpointslices -l kubernetes.io/service-name=nap -o json | grep -q '"ready": true' && break
    sleep 0.05
  done
  out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' "$url")
  codes+=("${out%% *}")
  cold+=("${out##* }")
done

pct() { # $1: percentile, rest: seconds
  local p=$1; shift
  printf '%s\n' "$@" | sort -g | awk -v p="$p" '{a[NR]=$1} END {i=int((NR*p+99)/100); if (i<1) i=1; printf "%.1f", a[i]*1000}'
}
ok=$(printf '%s\n' "${codes[@]}" | grep -c '^200$' || true)
echo "wake from zero (hello-http, cached component, $trials trials): p50 $(pct 50 "${cold[@]}") ms, p99 $(pct 99 "${cold[@]}") ms; $ok/$trials answered 200"
echo "warm request, same Service, same run: p50 $(pct 50 "${warm[@]}") ms, p99 $(pct 99 "${warm[@]}") ms"
echo "published peers: Knative cold start: seconds; KEDA HTTP add-on's benchmark threshold: <= 3 s average"
