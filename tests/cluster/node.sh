# shellcheck shell=bash disable=SC2154 # its variables are env.sh's, which sources it
# The cluster's one node, sourced by up.sh and down.sh after env.sh: the host network
# that keeps pod and Service traffic on this machine, containerd and runc, kubelet,
# kube-proxy (iptables mode), kube-scheduler and cluster DNS (CoreDNS). Defines functions
# only. ../../shared/NODE.md (in the workspace) has the facts behind each setting.
# shellcheck shell=bash

# Host sysctls kubelet rewrites at start. containerd and kubelet run in a mount namespace
# of their own where these files are bind-mounted private copies, so the host keeps its
# values; every mount they make (volumes, overlay roots, network namespaces) vanishes with
# that namespace.
kubelet_sysctls=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
# Host paths kubelet, containerd and libcni use whatever their configuration says; in the
# node's mount namespace each is a directory under $node_dir/fs.
node_host_dirs=(/var/lib/kubelet /var/log /run/containerd /var/lib/cni)
# The chains of the guard that keeps pod and Service traffic on this machine.
guard_chain="ROUTEMETER-GUARD"
# The node components, in start order (down.sh stops them in reverse).
node_components=(containerd kubelet kube-proxy kube-scheduler coredns)

# --- Host network ---------------------------------------------------------------------
# The bridge pods attach to (created before the API server binds its address), a route
# that keeps the Service range on the bridge, forwarding on the bridge only (global
# forwarding stays off), and the guard: nothing to the pod or Service range leaves through
# any interface but the bridge and loopback. kube-proxy's DNAT alone is not enough: while
# it rewrites a Service's rules a new connection can be neither rejected nor translated,
# and the default route would send it off the machine (measured: 4 of ~97,000).
net_up() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
  fi
  ip addr replace "$node_ip/24" dev "$bridge"
  ip link set "$bridge" up
  sysctl -qw "net.ipv4.conf.$bridge.forwarding=1"
  ip route replace "$service_cidr" dev "$bridge"

  # mangle POSTROUTING sees the final out interface after DNAT (filter OUTPUT does not:
  # there a rule on the out interface also rejects every translated request).
  iptables -w -t mangle -N "$guard_chain" 2>/dev/null || iptables -w -t mangle -F "$guard_chain"
  iptables -w -t mangle -A "$guard_chain" -o "$bridge" -j RETURN
  iptables -w -t mangle -A "$guard_chain" -o lo -j RETURN
  iptables -w -t mangle -A "$guard_chain" -d "$service_cidr" -j DROP
  iptables -w -t mangle -A "$guard_chain" -d "${pod_cidr%.*}.0/16" -j DROP
  iptables -w -t mangle -C POSTROUTING -j "$guard_chain" 2>/dev/null \
    || iptables -w -t mangle -I POSTROUTING 1 -j "$guard_chain"
  # Pods have no default route; should one ever be added, nothing of theirs is forwarded
  # off the bridge.
  iptables -w -t filter -N "$guard_chain" 2>/dev/null || iptables -w -t filter -F "$guard_chain"
  iptables -w -t filter -A "$guard_chain" -i "$bridge" ! -o "$bridge" -j REJECT
  iptables -w -t filter -C FORWARD -j "$guard_chain" 2>/dev/null \
    || iptables -w -t filter -I FORWARD 1 -j "$guard_chain"

  local via
  via="$(ip route get "$kubernetes_service_ip" 2>&1)"
  if [[ "$via" != *" dev $bridge "* ]]; then
    echo "node.sh: the Service range does not stay on $bridge: ip route get $kubernetes_service_ip says: $via" >&2
    return 1
  fi
}

# Removes the bridge (its route goes with it) and the guard. Run last, after every
# process that used them has stopped: with the bridge gone first, the API server hangs
# for a minute on SIGTERM.
net_down() {
  ip link del "$bridge" 2>/dev/null || true
  local table
  for table in mangle filter; do
    local parent=POSTROUTING
    [[ "$table" == filter ]] && parent=FORWARD
    while iptables -w -t "$table" -D "$parent" -j "$guard_chain" 2>/dev/null; do :; done
    iptables -w -t "$table" -F "$guard_chain" 2>/dev/null || true
    iptables -w -t "$table" -X "$guard_chain" 2>/dev/null || true
  done
}

# --- Certificates and kubeconfigs -----------------------------------------------------

# Writes a kubeconfig for the API server at $2 with the client certificate $pki/$3.{crt,key}.
write_client_kubeconfig() {
  local file="$1" server="$2" cert="$3" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  cat > "$tmp" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: routemeter-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 < "$pki/$cert.crt")
    client-key-data: $(base64 -w0 < "$pki/$cert.key")
contexts:
- name: routemeter-test
  context:
    cluster: routemeter-test
    user: $cert
current-context: routemeter-test
YAML
  chmod 600 "$tmp"
  mv "$tmp" "$file"
}

# --- containerd -----------------------------------------------------------------------

write_containerd_config() {
  mkdir -p "$node_dir/containerd" "$node_dir/cni" "$node_dir/cni-ipam"
  # restrict_oom_score_adj: the machine lacks CAP_SYS_RESOURCE, so runc cannot set the
  # negative oom_score_adj kubelet asks for, and every sandbox would fail to start.
  # The sandbox image is built here (tests/image/build.sh pause): nothing is pulled.
  cat > "$node_dir/containerd/config.toml" <<TOML
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$containerd_sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$node_dir/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/routemeter/pause:3.10"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node_dir/cni"
    max_conf_num = 1
TOML
  # The bridge without gateway mode (with it the plugin turns on forwarding host-wide)
  # and without masquerading; pods get routes to the pod and Service ranges only, no
  # default route, so nothing of theirs can leave the machine.
  cat > "$node_dir/cni/10-routemeter.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "routemeter",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$node_dir/cni-ipam",
        "ranges": [[{ "subnet": "$pod_cidr", "gateway": "$node_ip" }]],
        "routes": [{ "dst": "$service_cidr", "gw": "$node_ip" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
}

# Starts containerd in a new private mount namespace, with the host paths and sysctl
# files bound to copies under $node_dir. Its process is the namespace's anchor: kubelet
# joins it by containerd's pid.
containerd_up() {
  write_containerd_config
  local d f
  mkdir -p "$node_dir/sysctl"
  : > "$node_dir/created-dirs"
  for d in "${node_host_dirs[@]}"; do
    mkdir -p "$node_dir/fs$d"
    if [[ ! -d "$d" ]]; then
      mkdir -p "$d"
      echo "$d" >> "$node_dir/created-dirs"
    fi
  done
  for f in "${kubelet_sysctls[@]}"; do cat "/proc/sys/$f" > "$node_dir/sysctl/${f//\//.}"; done
  # A proxy on a closed port: a mistyped image name fails at once, here, instead of
  # trying a registry.
  # shellcheck disable=SC2016 # expanded by the inner bash
  start containerd env HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 NO_PROXY= \
    unshare --mount --propagation private -- bash -c '
      set -e
      node_dir="$1"; shift
      for d in '"${node_host_dirs[*]}"'; do mount --bind "$node_dir/fs$d" "$d"; done
      for f in '"${kubelet_sysctls[*]}"'; do mount --bind "$node_dir/sysctl/${f//\//.}" "/proc/sys/$f"; done
      exec "$@"' _ "$node_dir" containerd --config "$node_dir/containerd/config.toml"
  local deadline=$((SECONDS + 30))
  until [[ -S "$containerd_sock" ]] && ctr --address "$containerd_sock" version >/dev/null 2>&1; do
    if ! running containerd || ((SECONDS > deadline)); then
      echo "containerd did not start (log: $logs/containerd.log)"
      return 1
    fi
    sleep 0.2
  done
  # The namespace's identity, so teardown finds every process in it (the shims outlive
  # containerd) and never signals anything else.
  readlink "/proc/$(<"$state/containerd.pid")/ns/mnt" > "$node_dir/mntns"
  import_images pause
}

# Imports target/images/<name>.tar for each name, building the archives that are
# missing (tests/image/build.sh). The node pulls nothing: every image comes this way.
import_images() {
  local name missing=()
  for name in "$@"; do [[ -f "$root/target/images/$name.tar" ]] || missing+=("$name"); done
  if ((${#missing[@]})); then
    bash "$root/tests/image/build.sh" "${missing[@]}" >&2 || return 1
  fi
  for name in "$@"; do
    ctr --address "$containerd_sock" -n k8s.io images import \
      "$root/target/images/$name.tar" >/dev/null || return 1
  done
}

# --- kubelet, kube-proxy, kube-scheduler, CoreDNS --------------------------------------

kubelet_up() {
  local port="$1" healthz_port="$2"
  mkdir -p "$node_dir/kubelet"
  write_client_kubeconfig "$node_dir/kubelet/kubeconfig" "$api_url" kubelet
  # oomScoreAdj 0 and failCgroupV1 false: see NODE.md (no CAP_SYS_RESOURCE, hybrid
  # cgroups). resolvConf "": pods inherit no nameserver of the machine. Image garbage
  # collection off: nothing could be pulled back. Eviction thresholds low: a test
  # machine's disk is shared with build caches, and an evicted test pod helps no one.
  cat > "$node_dir/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $port
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
readOnlyPort: 0
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $pki/ca.crt }
authorization: { mode: Webhook }
containerRuntimeEndpoint: unix://$containerd_sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
resolvConf: ""
clusterDNS: [$cluster_dns]
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: { memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1% }
volumePluginDir: /var/lib/kubelet/volume-plugins
serializeImagePulls: false
syncFrequency: 10s
nodeStatusUpdateFrequency: 4s
maxPods: 110
YAML
  start kubelet nsenter -t "$(<"$state/containerd.pid")" -m -- "$K8S_BIN/kubelet" \
    --config "$node_dir/kubelet/config.yaml" \
    --kubeconfig "$node_dir/kubelet/kubeconfig" \
    --hostname-override "$node_name" --node-ip "$node_ip" \
    --root-dir /var/lib/kubelet --cert-dir /var/lib/kubelet/pki
}

kube_proxy_up() {
  local metrics_port="$1" healthz_port="$2"
  mkdir -p "$node_dir/kube-proxy"
  write_client_kubeconfig "$node_dir/kube-proxy/kubeconfig" "$api_url" kube-proxy
  # The zeros keep kube-proxy from changing conntrack sysctls; node ports only on the
  # bridge and never on loopback (that would need route_localnet host-wide).
  start kube-proxy "$K8S_BIN/kube-proxy" \
    --kubeconfig "$node_dir/kube-proxy/kubeconfig" \
    --hostname-override "$node_name" --bind-address "$node_ip" \
    --proxy-mode iptables --cluster-cidr "$pod_cidr" \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 \
    --conntrack-tcp-timeout-close-wait 0 \
    --iptables-localhost-nodeports=false --nodeport-addresses "$pod_cidr" \
    --metrics-bind-address "127.0.0.1:$metrics_port" \
    --healthz-bind-address "127.0.0.1:$healthz_port"
}

kube_scheduler_up() {
  local port="$1"
  mkdir -p "$node_dir/kube-scheduler"
  write_client_kubeconfig "$node_dir/kube-scheduler/kubeconfig" "$api_url" kube-scheduler
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$node_dir/kube-scheduler/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$port" --leader-elect=false
}

# CoreDNS on the host, on the bridge's address: cluster.local and the reverse zones from
# the API server, nothing else. There is no forward plugin, so a name outside the cluster
# is refused here and never reaches the machine's resolver.
coredns_up() {
  local health_port="$1" ready_port="$2"
  mkdir -p "$node_dir/coredns"
  cat > "$node_dir/coredns/Corefile" <<COREFILE
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $cluster_dns
    errors
    health 127.0.0.1:$health_port
    ready 127.0.0.1:$ready_port
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
    loadbalance
}
COREFILE
  echo "$ready_port" > "$node_dir/coredns/ready-port"
  start coredns "$COREDNS_BIN" -conf "$node_dir/coredns/Corefile"
}

# Starts the node's components and waits until the node is Ready, its taint gone, and
# DNS serving. The ports are free loopback ports, the kubelet's on the node address.
node_up() {
  local ports
  read -r -a ports < <(free_ports 7)
  containerd_up || return 1
  kube_scheduler_up "${ports[0]}"
  kubelet_up "${ports[1]}" "${ports[2]}"
  kube_proxy_up "${ports[3]}" "${ports[4]}"
  coredns_up "${ports[5]}" "${ports[6]}"

  echo -n "waiting for node $node_name "
  local deadline=$((SECONDS + 120)) c
  until node_ready; do
    for c in "${node_components[@]}"; do
      if ! running "$c"; then
        echo " $c exited (log: $logs/$c.log)"
        tail -n 20 "$logs/$c.log" >&2
        return 1
      fi
    done
    if ((SECONDS > deadline)); then
      echo " not Ready after 120 s"
      kctl describe node "$node_name" >&2 || true
      return 1
    fi
    echo -n .
    sleep 1
  done
  echo " Ready"
}

# The node is Ready, schedulable (no not-ready taint left), kube-proxy has written its
# rules, and CoreDNS is ready.
node_ready() {
  local status
  status="$(kctl get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.spec.taints[*].key}' 2>/dev/null)" || return 1
  [[ "$status" == "True " || "$status" == "True" ]] || return 1
  iptables -w -t nat -S KUBE-SERVICES >/dev/null 2>&1 || return 1
  timeout 2 bash -c 'exec 3<> "/dev/tcp/127.0.0.1/$1" && printf "GET /ready HTTP/1.0\r\n\r\n" >&3 && grep -q "200 OK" <&3' \
    _ "$(cat "$node_dir/coredns/ready-port" 2>/dev/null)" 2>/dev/null
}

# --- Teardown ---------------------------------------------------------------------------

# Stops the node and removes what it made, in the order NODE.md gives: pods deleted while
# kubelet still runs, the node's processes, leftover containers and shims, kube-proxy's and
# kubelet's iptables chains, the kubepods cgroups. The caller stops the control plane
# next, then calls net_down.
node_down() {
  [[ -d "$node_dir" ]] || return 0
  stop_component kube-scheduler
  if alive kubelet && [[ -f "$kubeconfig" ]] && [[ -n "${kubectl:-}" ]]; then
    # No scheduler any more: Pods recreated by their controllers stay Pending, unstarted.
    kctl delete pods --all --all-namespaces --grace-period=1 --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 20))
    while ((SECONDS < deadline)) && [[ -n "$(node_tasks)" ]]; do sleep 0.5; done
  fi
  local c
  for c in coredns kube-proxy kubelet; do stop_component "$c"; done
  if alive containerd; then
    local id
    for id in $(node_tasks); do
      ctr --address "$containerd_sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in $(ctr --address "$containerd_sock" -n k8s.io containers ls -q 2>/dev/null); do
      ctr --address "$containerd_sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
      ctr --address "$containerd_sock" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_component containerd
  # Whatever still lives in the node's mount namespace (shims, a container's processes):
  # killed by namespace identity, so nothing outside it is touched.
  if [[ -f "$node_dir/mntns" ]]; then
    local ns pid
    ns="$(<"$node_dir/mntns")"
    for pid in /proc/[0-9]*; do
      [[ "$(readlink "$pid/ns/mnt" 2>/dev/null)" == "$ns" ]] && kill -KILL "${pid#/proc/}" 2>/dev/null
    done
    for _ in $(seq 1 50); do
      local left=0
      for pid in /proc/[0-9]*; do
        [[ "$(readlink "$pid/ns/mnt" 2>/dev/null)" == "$ns" ]] && left=1 && break
      done
      ((left)) || break
      sleep 0.1
    done
  fi
  if [[ -n "${K8S_BIN:-}" && -x "$K8S_BIN/kube-proxy" ]]; then
    "$K8S_BIN/kube-proxy" --cleanup --proxy-mode iptables >/dev/null 2>&1 || true
  fi
  delete_kube_chains iptables
  delete_kube_chains ip6tables
  # kubelet's cgroups (cgroupfs driver), deepest first; empty once their processes died.
  local dir
  for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/unified/kubepods; do
    [[ -d "$dir" ]] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  # The host directories made as mount points (empty now that the namespace is gone).
  if [[ -f "$node_dir/created-dirs" ]]; then
    while read -r dir; do rmdir "$dir" 2>/dev/null || true; done < "$node_dir/created-dirs"
  fi
  rm -rf "$node_dir"
}

# The ids of the node's running containers (sandboxes included).
node_tasks() {
  ctr --address "$containerd_sock" -n k8s.io tasks ls -q 2>/dev/null
}

# Removes every KUBE-* chain kubelet and kube-proxy left in any table, with the rules of
# the built-in chains that jump to them; other rules are not touched.
delete_kube_chains() {
  local tool="$1" table rule chain
  command -v "$tool" >/dev/null || return 0
  for table in filter nat mangle raw; do
    "$tool" -w -t "$table" -S >/dev/null 2>&1 || continue
    while read -r rule; do
      # shellcheck disable=SC2086 # the rule's words, as iptables -S printed them
      "$tool" -w -t "$table" ${rule/#-A/-D} 2>/dev/null || true
    done < <("$tool" -w -t "$table" -S | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-')
    for chain in $("$tool" -w -t "$table" -S | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
      "$tool" -w -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $("$tool" -w -t "$table" -S | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
      "$tool" -w -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}
