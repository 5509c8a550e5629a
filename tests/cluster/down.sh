#!/usr/bin/env bash
# Stops the test cluster started by up.sh and removes what it made: the node's pods,
# containers, processes, mounts (they lived in the node's own mount namespace), iptables
# chains (kube-proxy's, kubelet's and the guard), cgroups, the bridge and its route, the
# node's files, etcd's data, the pid files and the kubeconfig. Idempotent: exits 0 when
# nothing runs. Keeps the build cache, the certificates (target/cluster/pki) and the logs
# of the last run. A second up.sh after it starts from scratch.
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
# kubectl (to delete pods while kubelet runs) and kube-proxy (--cleanup), if built.
eval "$(bash "$root/tests/cluster/build.sh" --if-built)"
if [[ -n "${K8S_BIN:-}" ]]; then kubectl="$K8S_BIN/kubectl"; fi
started=$SECONDS
stop_cluster
echo "cluster down in $((SECONDS - started)) s"
