# Shared by the cluster scripts and the demo (sourced): paths, the pinned binaries, and
# helpers. Sourcing it defines things only; it starts and builds nothing.
# shellcheck shell=bash
# Its variables are used by the scripts that source it.
# shellcheck disable=SC2034
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# All run-time state lives under target/ so `cargo clean` or `rm -rf target` resets it,
# and nothing of it can be committed (/target is ignored). ROUTEMETER_CLUSTER_DIR puts a
# second, independent cluster elsewhere (its kubeconfig is then in that directory).
state="${ROUTEMETER_CLUSTER_DIR:-$root/target/cluster}"
pki="$state/pki"
kubeconfig="$state/kubeconfig"
# The Go toolchain's usual place when it is not on PATH (a non-login shell, CI).
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  PATH="/usr/local/go/bin:$PATH"
fi
# Pinned Prometheus Operator release: its official CRDs (prom-crds.sh), the operator and
# its config reloader (build-monitoring.sh, prometheus-stack.sh). The one place it is
# written is the wrapper module's go.mod (tools/pin.sh --prometheus-operator changes it).
prom_operator_version="$(awk '$1 == "require" && $2 == "github.com/prometheus-operator/prometheus-operator" {print $3}' \
  "$root/tests/cluster/tools/prometheus-operator/go.mod")"
# Pinned Prometheus 3 release, v3.MM.P: its Go module version is v0.3MM.P
# (tools/prometheus/go.mod; tools/pin.sh --prometheus).
prometheus_version="$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" {print $3}' \
  "$root/tests/cluster/tools/prometheus/go.mod")"
if [[ "$prometheus_version" =~ ^v0\.3([0-9]{2})\.([0-9]+)$ ]]; then
  prometheus_version="v3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]}"
fi
# The images tests/image/build.sh makes of them (`build.sh monitoring`).
prometheus_image="docker.io/routemeter/prometheus:$prometheus_version"
prom_operator_image="docker.io/routemeter/prometheus-operator:$prom_operator_version"
prom_config_reloader_image="docker.io/routemeter/prometheus-config-reloader:$prom_operator_version"

# The node (node.sh): its files, containerd's socket (tests/image/build.sh --load imports
# images through it), and the addresses, all on this machine. Pods live on the bridge,
# the API server and the node listen on the bridge's gateway address, and Services get
# addresses that only kube-proxy's rules (and node.sh's guard) give a meaning.
node_dir="$state/node"
containerd_sock="$node_dir/containerd.sock"
node_name="routemeter-node"
bridge="cni0"
node_ip="10.244.0.1"
pod_cidr="10.244.0.0/24"
service_cidr="10.96.0.0/16"
# The first address of the Service range, the `kubernetes` Service's; in the API server's
# serving certificate so pods can verify it.
kubernetes_service_ip="10.96.0.1"
# Cluster DNS (CoreDNS on the host, on the bridge's address: what kubelet writes into
# every pod's resolv.conf).
cluster_dns="$node_ip"

# Sets ETCD_BIN, K8S_BIN, COREDNS_BIN and kubectl, building the binaries on first use
# (build.sh prints only `NAME=path` lines on stdout; its progress goes to stderr).
bins() {
  eval "$(bash "$root/tests/cluster/build.sh")"
  kubectl="$K8S_BIN/kubectl"
}

# Sets PROMETHEUS_BIN and PROM_OPERATOR_BIN (directories of prometheus and promtool, of
# operator and prometheus-config-reloader), building them on first use.
monitoring_bins() {
  eval "$(bash "$root/tests/cluster/build-monitoring.sh")"
}

# The directory of the pinned Prometheus Operator module (its CRDs and example
# manifests), from the module cache, downloaded if needed. The root module has replace
# directives, so it can only be downloaded, not built or installed as it is. Run outside
# any module (from /), so no go.mod of ours is consulted or changed.
prom_operator_module_dir() {
  local json dir
  json="$(cd / && GO111MODULE=on GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$prom_operator_version")"
  dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
  if [[ -z "$dir" || ! -d "$dir/example/prometheus-operator-crd" ]]; then
    echo "could not download the Prometheus Operator $prom_operator_version module:" >&2
    echo "$json" >&2
    return 1
  fi
  echo "$dir"
}

kctl() {
  "$kubectl" --kubeconfig "$kubeconfig" "$@"
}

# True when the process recorded in $state/NAME.pid is running and is still that
# component (its command's basename is NAME), so a stale pid file whose number was reused
# by an unrelated process after a reboot is never taken for ours, nor signalled.
alive() {
  local pidfile="$state/$1.pid" pid exe
  [[ -f "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  exe="$(tr '\0' '\n' 2>/dev/null < "/proc/$pid/cmdline" | head -n 1)" || return 1
  [[ "${exe##*/}" == "$1" ]]
}

# Stops the node and the control plane recorded in $state/*.pid and removes the cluster's
# data and everything the node made on the host (node.sh: node_down, net_down): etcd's
# data dir, the pid files, the kubeconfig. Keeps the certificates and the logs of the last
# run. The caller holds $state/.lock.
stop_cluster() {
  node_down
  local name
  # Controller-manager first, etcd last: each component outlives its clients, so none
  # spends its shutdown retrying a dependency that is already gone.
  for name in kube-controller-manager kube-apiserver etcd; do
    stop_component "$name"
  done
  # Only now the bridge and the guard: the API server listens on the bridge's address.
  net_down
  # A stale kubeconfig would make tests believe a cluster is up; etcd's data is useless
  # without its apiserver (up.sh starts from an empty store).
  rm -rf "$state/etcd" "$state/controller-manager" "$kubeconfig"
}

# Stops the component recorded in $state/NAME.pid (SIGTERM, up to 10 s, then SIGKILL).
stop_component() {
  local name="$1" pid
  if alive "$name"; then
    pid="$(<"$state/$name.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    # The apiserver drains its requests for a few seconds on SIGTERM.
    for _ in $(seq 1 100); do
      alive "$name" || break
      sleep 0.1
    done
    if alive "$name"; then
      echo "$name (pid $pid) did not stop on SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        alive "$name" || break
        sleep 0.1
      done
    fi
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$state/$name.pid"
}

# shellcheck source=tests/cluster/node.sh
source "$root/tests/cluster/node.sh"
