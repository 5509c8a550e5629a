#!/usr/bin/env bash
# Stops the test control plane started by up.sh and removes its data (etcd's data dir,
# the pid files, the kubeconfig). Idempotent: exits 0 when nothing runs. Keeps the build
# cache, the certificates (target/cluster/pki) and the logs of the last run.
set -euo pipefail
# shellcheck source=tests/cluster/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [[ ! -d "$state" ]]; then
  echo "cluster down (never started here)"
  exit 0
fi
# Waits for an up.sh under way, so the two never work on the same files at once.
exec 9>"$state/.lock"
flock 9
stop_cluster
echo "cluster down"
