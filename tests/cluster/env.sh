# Shared by the cluster scripts: paths and the kubectl of the pinned build.
# shellcheck shell=bash
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="$root/target/cluster"
pki="$state/pki"
kubeconfig="$state/kubeconfig"
# Pinned Prometheus Operator release whose official CRDs are installed.
prom_operator_version="v0.93.0"

bins() {
  eval "$(bash "$root/tests/cluster/build.sh")"
  kubectl="$K8S_BIN/kubectl"
}

kctl() {
  "$kubectl" --kubeconfig "$kubeconfig" "$@"
}

alive() {
  [[ -f "$state/$1.pid" ]] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null
}
