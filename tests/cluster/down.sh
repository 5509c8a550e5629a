#!/usr/bin/env bash
# Stops the test control plane started by up.sh and removes its data. Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

for name in kube-controller-manager kube-apiserver etcd; do
  if alive "$name"; then
    pid="$(cat "$state/$name.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$state/$name.pid"
done
rm -rf "$state/etcd" "$kubeconfig"
echo "cluster down"
