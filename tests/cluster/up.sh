#!/usr/bin/env bash
# Starts the project's test cluster: a real etcd, kube-apiserver, kube-controller-manager
# and kube-scheduler of pinned releases (built by build.sh), and one real node (node.sh:
# containerd and runc, the CNI bridge, kubelet, kube-proxy, CoreDNS), all on this machine:
# the API server and the node on the bridge address 10.244.0.1, pods on 10.244.0.0/24,
# Services on 10.96.0.0/16, nothing routed off the machine. Writes an admin kubeconfig
# at target/cluster/kubeconfig, imports the pause image, and installs routemeter's CRD
# (crds/) and the official Prometheus Operator CRDs (ServiceMonitor, PrometheusRule,
# Prometheus). Needs root (network, mounts, cgroups).
#
# Usage: up.sh [--skip-prom-crds]      (or ROUTEMETER_SKIP_PROM_CRDS=1)
#
# Idempotent: a healthy cluster is left as it is (only the CRDs are put back if they
# are missing). The last line printed is `export KUBECONFIG=<path>`.
set -euo pipefail
# shellcheck source=tests/cluster/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

skip_prom_crds="${ROUTEMETER_SKIP_PROM_CRDS:-0}"
for arg in "$@"; do
  case "$arg" in
    --skip-prom-crds) skip_prom_crds=1 ;;
    -h | --help)
      sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "up.sh: unknown argument $arg (usage: up.sh [--skip-prom-crds])" >&2
      exit 2
      ;;
  esac
done

components=(etcd kube-apiserver kube-controller-manager "${node_components[@]}")
logs="$state/logs"
mkdir -p "$state" "$logs"

# One up.sh at a time (two test runs starting together would each start a cluster over
# the other's files). down.sh takes the same lock. Fd 9 is closed for the components
# started below, or they would hold the lock for as long as they run.
exec 9>"$state/.lock"
flock 9

bins

ready() { [[ -f "$kubeconfig" ]] && kctl get --raw /readyz >/dev/null 2>&1; }
healthy() {
  local c
  for c in "${components[@]}"; do alive "$c" || return 1; done
  ready && node_ready
}

if healthy; then
  echo "cluster already up: $(kctl config view -o jsonpath='{.clusters[0].cluster.server}')"
  # A test that removes the Prometheus Operator CRDs and dies before putting them back
  # would otherwise leave the next run without them.
  if [[ "$skip_prom_crds" != 1 ]] && ! kctl get crd servicemonitors.monitoring.coreos.com \
    prometheusrules.monitoring.coreos.com prometheuses.monitoring.coreos.com >/dev/null 2>&1; then
    bash "$root/tests/cluster/prom-crds.sh" install
  fi
  echo "export KUBECONFIG=$kubeconfig"
  exit 0
fi

started=$SECONDS
# Whatever is left of an earlier cluster (a component that died, a stale pid file, an
# etcd data dir whose apiserver is gone) is cleared first: a fresh cluster is quicker to
# reason about than a half-repaired one.
stop_cluster >/dev/null

# --- Certificates -------------------------------------------------------------------
# A CA; the apiserver's serving certificate (the bridge address pods and the host use,
# the `kubernetes` Service address, loopback); an admin client certificate in group
# system:masters (RBAC's superuser group, so the admin needs no bindings); the node's
# identities the default bindings and the Node authorizer know (kubelet as
# system:node:<name>, kube-proxy, kube-scheduler), kubelet's serving certificate, the API
# server's client certificate for kubelet (exec, logs); and the service-account token
# signing key pair. Made once and kept across restarts (down.sh leaves them), in a
# temporary dir first so a failure never leaves a half-made set behind.
make_pki() {
  local d
  d="$(mktemp -d "$state/pki.XXXXXX")"
  cat > "$d/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:NODE_IP, IP:SERVICE_IP, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
authorityKeyIdentifier = keyid
[kubelet]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:NODE_IP, DNS:NODE_NAME
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
CNF
  sed -i -e "s/NODE_IP/$node_ip/g" -e "s/SERVICE_IP/$kubernetes_service_ip/g" \
    -e "s/NODE_NAME/$node_name/g" "$d/openssl.cnf"
  (
    cd "$d"
    local days=3650
    openssl req -x509 -config openssl.cnf -extensions ca -newkey rsa:2048 -nodes -sha256 \
      -days "$days" -subj "/CN=routemeter-test-ca" -keyout ca.key -out ca.crt 2>/dev/null
    # $1: name, $2: subject, $3: extension section.
    sign() {
      openssl req -config openssl.cnf -newkey rsa:2048 -nodes -sha256 -subj "$2" \
        -keyout "$1.key" -out "$1.csr" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -sha256 -days "$days" \
        -set_serial "0x$(openssl rand -hex 16)" -extfile openssl.cnf -extensions "$3" \
        -out "$1.crt" 2>/dev/null
      rm -f "$1.csr"
    }
    sign apiserver "/CN=kube-apiserver" server
    sign admin "/O=system:masters/CN=routemeter-admin" client
    sign kubelet "/O=system:nodes/CN=system:node:$node_name" client
    sign kubelet-serving "/CN=$node_name" kubelet
    sign kube-proxy "/CN=system:kube-proxy" client
    sign kube-scheduler "/CN=system:kube-scheduler" client
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 ./*.key
  )
  rm -rf "$pki"
  mv "$d" "$pki"
}
# Remade when missing, about to expire, or from before the node (no kubelet identity).
if [[ ! -f "$pki/sa.pub" || ! -f "$pki/apiserver-kubelet-client.crt" ]] \
  || ! openssl x509 -checkend 86400 -noout -in "$pki/admin.crt" >/dev/null 2>&1; then
  make_pki
fi

# --- Ports --------------------------------------------------------------------------
# Free loopback ports picked by the kernel, all held at once so they differ, then
# released for the components. Another process could take one in between; start() is
# retried with new ports when a component dies at start.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# --- Components ---------------------------------------------------------------------
# setsid + nohup: each component gets its own session, so it outlives the shell (or the
# test harness) that ran up.sh and ignores its hangup. A non-interactive bash has no job
# control, so the background child is no process-group leader: setsid execs in place,
# and $! is the component's own pid.
start() {
  local name="$1"
  shift
  setsid nohup "$@" > "$logs/$name.log" 2>&1 < /dev/null 9>&- &
  echo "$!" > "$state/$name.pid"
}

# Alive by pid only: just after start() the process may not have exec'd its binary yet,
# which alive() would take for a stranger.
running() { kill -0 "$(<"$state/$1.pid")" 2>/dev/null; }

show_logs() {
  local c
  for c in "${components[@]}"; do
    [[ -f "$logs/$c.log" ]] || continue
    echo "----- last lines of $logs/$c.log" >&2
    tail -n 25 "$logs/$c.log" >&2
  done
}


etcd_healthy() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<> "/dev/tcp/127.0.0.1/$1" \
    && printf "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 \
    && grep -q "\"health\":\"true\"" <&3' _ "$1" 2>/dev/null
}

# Starts the control plane and the node and waits for them; returns 1 (after printing
# why) on failure.
start_cluster() {
  local etcd_port peer_port api_port cm_port
  read -r etcd_port peer_port api_port cm_port < <(free_ports 4) || true
  net_up || return 1
  if [[ -z "${cm_port:-}" ]]; then
    echo "up.sh: could not pick free ports (python3 is needed)" >&2
    return 1
  fi

  # --unsafe-no-fsync: a throwaway store; fsyncs would only slow the tests down.
  start etcd "$ETCD_BIN" --name routemeter-test --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "routemeter-test=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync
  # The apiserver would start without etcd, but then fills its log with connection
  # errors and, if etcd cannot start, fails later with a less telling message. etcd
  # listens a while before it serves, so ask its /health (plain bash: no curl needed).
  local deadline=$((SECONDS + 30))
  until etcd_healthy "$etcd_port"; do
    if ! running etcd || ((SECONDS > deadline)); then
      echo "etcd did not become healthy on 127.0.0.1:$etcd_port"
      return 1
    fi
    sleep 0.2
  done

  # On the bridge's address, so pods reach it through Service `kubernetes` (the
  # default lease reconciler publishes that address as its endpoint). Node,RBAC with
  # NodeRestriction as on a real cluster: kubelet may touch only its node and its pods.
  # The ServiceAccount admission plugin gives pods their tokens. InternalIP first: with
  # the node's name kubectl exec and logs would look it up in the machine's resolver.
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$node_ip" --advertise-address "$node_ip" --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-cluster-ip-range "$service_cidr" --allow-privileged=true \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" \
    --kubelet-preferred-address-types InternalIP
  api_url="https://$node_ip:$api_port"
  write_client_kubeconfig "$kubeconfig" "$api_url" admin

  echo -n "waiting for kube-apiserver on $api_url "
  deadline=$((SECONDS + 90))
  until ready; do
    if ! running etcd || ! running kube-apiserver; then
      echo " a component exited"
      return 1
    fi
    if ((SECONDS > deadline)); then
      echo " not ready after 90 s"
      kctl get --raw '/readyz?verbose' >&2 || true
      return 1
    fi
    echo -n .
    sleep 1
  done
  echo " ready"

  # The CRDs go in before kube-controller-manager starts, as on a real cluster: its
  # garbage collector maps kinds from discovery and learns of a later CRD only on a
  # rescan (30 s or more), failing to collect their objects' children until then.
  # routemeter's own CRD (crds/), and the Prometheus Operator's unless skipped.
  if compgen -G "$root/crds/*.yaml" >/dev/null; then
    kctl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null || return 1
    kctl wait --for condition=established --timeout=60s -f "$root/crds/" >/dev/null || return 1
    echo "routemeter CRDs installed from crds/"
  fi
  if [[ "$skip_prom_crds" != 1 ]]; then
    bash "$root/tests/cluster/prom-crds.sh" install || return 1
  fi

  # The controllers a user's cluster runs for what routemeter and its tests use: garbage
  # collection of owned objects, namespace deletion, Deployments and ReplicaSets,
  # endpoints and EndpointSlices (and their mirroring for selector-less Services), the
  # disruption controller (PDBs, evictions), the HPA, the node lifecycle (without it the
  # node keeps its not-ready taint and every pod stays Pending), pod GC, the default
  # ServiceAccount and its tokens, RBAC role aggregation and the kube-root-ca.crt
  # ConfigMap every namespace has. Its secure port serves only /healthz and the like (no
  # authentication kubeconfig: its three warnings about that at start are expected).
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$cm_port" \
    --leader-elect=false \
    --controllers garbagecollector,namespace,serviceaccount,serviceaccount-token,deployment,replicaset,endpoint,endpointslice,endpointslicemirroring,disruption,horizontalpodautoscaling,nodelifecycle,podgc,statefulset,daemonset,job,clusterrole-aggregation,root-ca-cert-publisher \
    --cert-dir "$state/controller-manager" \
    --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=false

  # The controller-manager is working once the serviceaccount controller has made the
  # default namespace's ServiceAccount.
  echo -n "waiting for kube-controller-manager "
  deadline=$((SECONDS + 60))
  until kctl get serviceaccount default -n default >/dev/null 2>&1; do
    if ! running kube-controller-manager; then
      echo " it exited"
      return 1
    fi
    if ((SECONDS > deadline)); then
      echo " no default ServiceAccount after 60 s"
      return 1
    fi
    echo -n .
    sleep 1
  done
  echo " ready"

  node_up || return 1
}

for attempt in 1 2 3; do
  if start_cluster; then
    break
  fi
  show_logs
  stop_cluster >/dev/null
  # A port taken between picking and binding is worth another try; anything else
  # fails the same way again.
  if ((attempt == 3)) || ! grep -qs 'address already in use' "$logs"/*.log; then
    echo "up.sh: the control plane did not start (logs in $logs)" >&2
    exit 1
  fi
  echo "a port was taken meanwhile; retrying with new ports" >&2
done

if [[ "$skip_prom_crds" == 1 ]]; then
  echo "Prometheus Operator CRDs not installed (ROUTEMETER_SKIP_PROM_CRDS=1 / --skip-prom-crds)"
fi

version="$(kctl get --raw /version | sed -n 's/^ *"gitVersion": "\(.*\)",$/\1/p')"
echo "Kubernetes $version is up in $((SECONDS - started)) s: $(kctl config view -o jsonpath='{.clusters[0].cluster.server}')"
echo "node $node_name Ready; pods on $pod_cidr, Services on $service_cidr, DNS at $cluster_dns"
echo "logs: $logs/<component>.log"
echo "export KUBECONFIG=$kubeconfig"
