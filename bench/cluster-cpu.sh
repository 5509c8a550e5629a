# shellcheck shell=bash disable=SC2154 # $state is env.sh's, sourced before this
# Sourced by the operator benchmarks, after tests/cluster/env.sh ($state, alive).

# cluster_cpu [NAME...]: CPU seconds (user + system, with those of its children waited
# for: kube-proxy's iptables-restore runs, the kubelet's mounts) of the cluster's own
# processes (all of them, or the NAMEs given), one "name seconds" line each. Field 2 of
# /proc/PID/stat (the name) can hold spaces, so fields are counted after its ")".
cluster_cpu() {
  local name ticks names=("$@")
  ticks="$(getconf CLK_TCK)"
  ((${#names[@]})) || names=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy containerd coredns)
  for name in "${names[@]}"; do
    alive "$name" || continue
    awk -v n="$name" -v t="$ticks" '{sub(/^.*\) /, ""); print n, ($12 + $13 + $14 + $15) / t}' \
      "/proc/$(<"$state/$name.pid")/stat"
  done
}
