#!/usr/bin/env bash
# Removes what a test run leaves on the cluster: the chart install tests/pods.rs makes
# (release `routemeter` in routemeter-system, waiting for its operator pods to be gone),
# the Prometheus Operator and its Prometheus servers (tests/cluster/prometheus-stack.sh)
# and the namespaces tests create. make test runs it before the in-process operator tests
# (an install left by an interrupted run would reconcile their namespaces too) and after
# the pod tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/env.sh
source "$root/tests/cluster/env.sh"
bins
helm="$(bash "$root/tests/helm.sh")"
if "$helm" --kubeconfig "$kubeconfig" status routemeter -n routemeter-system >/dev/null 2>&1; then
  "$helm" --kubeconfig "$kubeconfig" uninstall routemeter -n routemeter-system --wait --timeout 60s
fi
kctl delete namespace routemeter-system --ignore-not-found --wait=true --timeout=60s >/dev/null
if kctl get namespace monitoring >/dev/null 2>&1; then
  bash "$root/tests/cluster/prometheus-stack.sh" uninstall
fi
# Namespaces a failed or interrupted test run left (tests label theirs): their pods would
# hold the node's CPU and leave the next tests' pods Pending.
# A MonitoredService in takeover mode holds a finalizer only a running operator removes;
# the whole namespace goes, so nothing needs restoring.
for ns in $(kctl get namespace -l routemeter.io/test-namespace -o name 2>/dev/null | sed 's|^namespace/||'); do
  for msvc in $(kctl -n "$ns" get monitoredservices -o name 2>/dev/null); do
    kctl -n "$ns" patch "$msvc" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  done
done
kctl delete namespace -l routemeter.io/test-namespace --wait=false >/dev/null
