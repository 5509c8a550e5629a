#!/usr/bin/env bash
# The local demo: the control plane (make cluster-up), the operator reconciling the
# trips-api example, the proxy running on the config the operator wrote, in front of a
# sample API, traffic through it, and what a user sees: `kubectl get msvc` and metrics.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$root/tests/cluster/env.sh"
bins
bin="$root/target/debug/routemeter"
work="$root/target/demo"
mkdir -p "$work"
export KUBECONFIG="$kubeconfig"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Installing the CRD"
kctl apply --server-side -f "$root/crds/" >/dev/null
kctl wait --for condition=established crd/monitoredservices.routemeter.io >/dev/null

step "Starting the operator (log: target/demo/operator.log)"
op_port="$(free_port)"
"$bin" --log-format json operator --leader-election=false --metrics-addr "127.0.0.1:$op_port" > "$work/operator.log" 2>&1 &
pids+=($!)

step "Applying the trips-api Service and MonitoredService (manifests/examples/trips-api.yaml)"
kctl apply --server-side -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: { name: trips-api, namespace: default }
spec:
  selector: { app: trips-api }
  ports: [{ name: http, port: 80, targetPort: 8080 }]
YAML
kctl apply --server-side -f "$root/manifests/examples/trips-api.yaml" >/dev/null
for _ in $(seq 1 60); do
  kctl get configmap trips-api-routemeter >/dev/null 2>&1 && break
  sleep 0.5
done
kctl get configmap,deployment,service,hpa,pdb,servicemonitor,prometheusrule -l routemeter.io/monitored-service=trips-api

step "Running the proxy on the config the operator wrote, in front of a sample API"
# No kubelet runs here: the proxy runs as a local process, on the ConfigMap's config with
# the in-cluster addresses swapped for local ones.
up_port="$(free_port)"; px_port="$(free_port)"; admin_port="$(free_port)"
python3 "$root/tests/demo/trips_api.py" "$up_port" &
pids+=($!)
kctl get configmap trips-api-routemeter -o jsonpath='{.data.config\.yaml}' \
  | sed -e "s|^listen: .*|listen: 127.0.0.1:$px_port|" -e "s|^admin: .*|admin: 127.0.0.1:$admin_port|" \
        -e "s|^  - trips-api-routemeter-upstream.*|  - 127.0.0.1:$up_port|" > "$work/config.yaml"
"$bin" --log-format json proxy --config "$work/config.yaml" > "$work/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.2; done

step "Sending traffic for 10 seconds"
end=$((SECONDS + 10)); n=0
while ((SECONDS < end)); do
  batch=()
  for page in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$px_port/api/trips?page=$page&limit=20" & batch+=($!); done
  curl -s -o /dev/null "http://127.0.0.1:$px_port/api/trips/$((RANDOM % 500))" & batch+=($!)
  curl -s -o /dev/null -X POST -d '{"from":"a","to":"b"}' "http://127.0.0.1:$px_port/navigate" & batch+=($!)
  curl -s -o /dev/null "http://127.0.0.1:$px_port/healthz" & batch+=($!)
  curl -s -o /dev/null "http://127.0.0.1:$px_port/orders/$RANDOM" & batch+=($!)
  wait "${batch[@]}"; n=$((n + ${#batch[@]}))
done
echo "sent $n requests"

step "kubectl get msvc"
kctl get msvc -o wide
echo "(Ready is False here: no kubelet runs in the demo cluster, so no proxy pod becomes available.)"
kctl get msvc trips-api -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'

step "Metrics (http://127.0.0.1:$admin_port/metrics), request counts per route"
curl -s "http://127.0.0.1:$admin_port/metrics" | grep '^http_server_request_duration_seconds_count' | sed 's/^http_server_request_duration_seconds_count//' | sort
curl -s "http://127.0.0.1:$admin_port/metrics" | grep -E '^routemeter_proxy_overhead_seconds_(sum|count)|^process_resident_memory_bytes'
echo
echo "The rules and dashboard the operator created: kubectl get prometheusrule,configmap -l routemeter.io/monitored-service=trips-api -o yaml"
