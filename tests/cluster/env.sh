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
# Pinned Prometheus Operator release whose official CRDs are installed.
prom_operator_version="v0.93.0"

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
