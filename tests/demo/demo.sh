#!/usr/bin/env bash
# The demo: what a user does, on the project's own cluster. `make demo` has already
# started the cluster with its node (make cluster-up) and built and loaded the images
# (make image, make monitoring-images). This script installs routemeter with Helm and the
# Prometheus Operator with a Prometheus 3 as kube-prometheus-stack sets them up (release
# kps), deploys the sample trips API, applies manifests/examples/trips-api.yaml, sends a
# minute of Locust traffic through the proxy Service, and shows what the user gets:
# `kubectl get msvc` with live figures, per-route counts, the live summary, the targets,
# rules and alerts Prometheus loaded, and where to look next.
#
# Environment: DEMO_RUN_TIME (Locust's run time, default 60s), DEMO_USERS (default 20).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=tests/cluster/env.sh
source "$root/tests/cluster/env.sh"
bins
work="$root/target/demo"
mkdir -p "$work"
export KUBECONFIG="$kubeconfig"
run_time="${DEMO_RUN_TIME:-60s}"
users="${DEMO_USERS:-20}"
locust_version=2.47.0
websocket_client_version=1.9.2

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() {
  printf '$ %s\n' "$*"
  "$@"
}
k() { kctl "$@"; }

step "Installing routemeter with Helm (charts/routemeter, image routemeter/routemeter:$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1))"
helm="$(bash "$root/tests/helm.sh")"
show "$helm" --kubeconfig "$kubeconfig" upgrade --install routemeter "$root/charts/routemeter" \
  --namespace routemeter-system --create-namespace --wait --timeout 180s
k -n routemeter-system get pods -o wide

step "The Prometheus Operator $prom_operator_version with a Prometheus 3, as kube-prometheus-stack has them (release kps)"
# tests/cluster/prometheus-stack.sh: the operator and a Prometheus selecting ServiceMonitors
# and PrometheusRules labelled release: kps; it prints the Prometheus pod's address.
eval "$(bash "$root/tests/cluster/prometheus-stack.sh" install --release kps)"
k -n monitoring get deployment,statefulset,pods
echo "Prometheus API: $PROMETHEUS_URL (pod $PROMETHEUS_POD)"

step "Deploying the sample trips API (tests/sample-api/trips-api.yaml)"
show kctl apply -f "$root/tests/sample-api/trips-api.yaml"
k rollout status deployment/trips-api --timeout 120s

step "Monitoring it: kubectl apply -f manifests/examples/trips-api.yaml"
show kctl apply -f "$root/manifests/examples/trips-api.yaml"
k wait --for=condition=Ready msvc/trips-api --timeout 180s
show kctl get msvc trips-api
# No label was written by hand: the operator gave the ServiceMonitor and PrometheusRule
# the labels kps selects (release: kps), and says which Prometheus selects them.
k get msvc trips-api -o jsonpath='selectedBy: {.status.selectedBy}{"\n"}'
k get configmap,deployment,service,hpa,pdb,servicemonitor,prometheusrule \
  -l routemeter.io/monitored-service=trips-api

step "Locust (from PyPI, in target/demo/venv): $users users for $run_time through trips-api-routemeter"
if [[ ! -x "$work/venv/bin/locust" ]] || ! "$work/venv/bin/locust" --version 2>/dev/null | grep -q " $locust_version "; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet --disable-pip-version-check \
    "locust==$locust_version" "websocket-client==$websocket_client_version"
fi
ip="$(k get service trips-api-routemeter -o jsonpath='{.spec.clusterIP}')"
# Bounded: Locust stops itself after run_time; timeout is the backstop.
timeout 300 "$work/venv/bin/locust" -f "$root/tests/demo/locustfile.py" --headless \
  --users "$users" --spawn-rate 10 --run-time "$run_time" --stop-timeout 5 \
  --host "http://$ip" --csv "$work/locust" --only-summary --loglevel WARNING \
  2>&1 | sed -n '/^Type /,$p' || true

step "kubectl get msvc (live figures, read from the proxies)"
# The operator reads the proxies' counters on each reconcile; the figures are a rate
# over the last readings, so they come a few seconds after the traffic.
for _ in $(seq 1 30); do
  [[ -n "$(k get msvc trips-api -o jsonpath='{.status.traffic.requestsPerSecond}')" ]] && break
  sleep 2
done
show kctl get msvc -o wide
k get msvc trips-api -o jsonpath='{range .status.conditions[*]}  {.type}={.status} ({.reason}): {.message}{"\n"}{end}'

step "Requests per route, status and method, as the proxies counted them"
for pod_ip in $(k get pods -l app.kubernetes.io/name=routemeter-proxy,app.kubernetes.io/instance=trips-api \
  -o jsonpath='{.items[*].status.podIP}'); do
  curl -s --max-time 5 "http://$pod_ip:9901/metrics"
done | python3 "$root/tests/demo/counts.py"

step "The live summary, every proxy merged through the API server's pod proxy"
show "$root/target/release/routemeter" top --msvc trips-api --window 5m --once
# GET /api/trips is paginated (manifests/examples/trips-api.yaml): its pages, from the same
# summary's JSON.
"$root/target/release/routemeter" top --msvc trips-api --window 5m --once -o json 2>/dev/null \
  | python3 "$root/tests/demo/pages.py"

step "What Prometheus loaded: targets, rule groups and alerts of the PrometheusRule"
# The ServiceMonitor scrapes every 30 s (the default) and the rules take a sync of the
# config-reloader: wait until both are in.
for _ in $(seq 1 60); do
  python3 "$root/tests/demo/prometheus.py" "$PROMETHEUS_URL" default trips-api 2>/dev/null \
    | grep -q '^rule groups loaded from the PrometheusRule: [1-9]' && break
  sleep 3
done
python3 "$root/tests/demo/prometheus.py" "$PROMETHEUS_URL" default trips-api

cat <<EOF

Where to look next:
  kubectl get msvc trips-api -o yaml                 status: conditions, traffic, selectedBy
  kubectl get prometheusrule trips-api-routemeter -o yaml   recording rules, 5xx/latency/SLO alerts
  kubectl get configmap trips-api-routemeter-dashboard -o yaml   the Grafana dashboard
  curl http://<proxy pod IP>:9901/metrics            the proxies' own metrics (per route)
  curl http://<proxy pod IP>:9901/api/summary?window=5m   live summary: percentiles, score, recommendations
  target/demo/locust_stats.csv                      what Locust measured, per request name
  curl $PROMETHEUS_URL/api/v1/alerts   Prometheus' alerts (the Prometheus Operator's, namespace monitoring)
  make cluster-down                                 removes the cluster, its node and everything it made
EOF
