#!/usr/bin/env bash
# Installs or removes the official Prometheus Operator CRDs (ServiceMonitor,
# PrometheusRule, Prometheus) of a pinned release, read from its Go module.
# Usage: prom-crds.sh install|uninstall
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bins

crds=(servicemonitors prometheusrules prometheuses)
case "${1:-install}" in
  install)
    dir="$(cd /tmp && go mod download -json "github.com/prometheus-operator/prometheus-operator@$prom_operator_version" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    for crd in "${crds[@]}"; do
      kctl apply --server-side --force-conflicts -f "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml" >/dev/null
    done
    for crd in "${crds[@]}"; do
      kctl wait --for condition=established --timeout=60s "crd/$crd.monitoring.coreos.com" >/dev/null
    done
    echo "Prometheus Operator $prom_operator_version CRDs installed"
    ;;
  uninstall)
    for crd in "${crds[@]}"; do
      kctl delete crd "$crd.monitoring.coreos.com" --ignore-not-found --wait=true >/dev/null
    done
    echo "Prometheus Operator CRDs removed"
    ;;
  *) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
