#!/usr/bin/env bash
# Installs or removes the official Prometheus Operator CRDs (ServiceMonitor,
# PrometheusRule, Prometheus) of a pinned release on the test cluster. The operator's
# tests toggle them to check its behaviour with and without the Prometheus Operator.
# Usage: prom-crds.sh install|uninstall
set -euo pipefail
# shellcheck source=tests/cluster/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

crds=(servicemonitors prometheusrules prometheuses)

# The CRDs are read from the release's Go module (env.sh: prom_operator_module_dir): it is
# reachable through the Go module proxy, checked against Go's checksum database, and
# cached in the module cache, so a second install needs no network.
crd_dir() {
  local dir
  dir="$(prom_operator_module_dir)" || exit 1
  echo "$dir/example/prometheus-operator-crd"
}

case "${1:-}" in
  install)
    bins
    dir="$(crd_dir)"
    args=()
    for crd in "${crds[@]}"; do args+=(-f "$dir/monitoring.coreos.com_$crd.yaml"); done
    # Server-side: these CRDs are too large for client-side apply's last-applied
    # annotation. --force-conflicts takes the fields over from any earlier field manager.
    kctl apply --server-side --force-conflicts --field-manager=routemeter-tests "${args[@]}" >/dev/null
    for crd in "${crds[@]}"; do
      kctl wait --for condition=established --timeout=60s "crd/$crd.monitoring.coreos.com" >/dev/null
    done
    echo "Prometheus Operator $prom_operator_version CRDs installed: ${crds[*]}"
    ;;
  uninstall)
    bins
    for crd in "${crds[@]}"; do
      # --wait: returns once the CRD and all its objects are gone, so a test that follows
      # sees the API group absent.
      kctl delete crd "$crd.monitoring.coreos.com" --ignore-not-found --wait=true --timeout=120s >/dev/null
    done
    echo "Prometheus Operator CRDs removed: ${crds[*]}"
    ;;
  *)
    echo "usage: $0 install|uninstall" >&2
    exit 2
    ;;
esac
