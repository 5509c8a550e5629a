#!/usr/bin/env bash
# Starts a real etcd, kube-apiserver and kube-controller-manager on loopback, writes the
# admin kubeconfig to target/cluster/kubeconfig, and installs the Prometheus Operator
# CRDs (unless ROUTEMETER_SKIP_PROM_CRDS=1). Idempotent: a healthy cluster is left as is.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bins

healthy() {
  alive etcd && alive kube-apiserver && alive kube-controller-manager \
    && kctl get --raw /readyz >/dev/null 2>&1
}

if healthy; then
  echo "cluster already up"
  echo "export KUBECONFIG=$kubeconfig"
  exit 0
fi
bash "$root/tests/cluster/down.sh" >/dev/null

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p "$pki" "$state/logs"
if [[ ! -f "$pki/admin.crt" ]]; then
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=routemeter-test-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n' > san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile san.ext 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
fi

etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"; cm_port="$(free_port)"

b64() { base64 -w0 < "$1"; }
cat > "$kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: routemeter-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
contexts:
- name: routemeter-test
  context: { cluster: routemeter-test, user: admin, namespace: default }
current-context: routemeter-test
YAML

start() {
  local name="$1"; shift
  setsid nohup "$@" > "$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/$name.pid"
}

start etcd "$ETCD_BIN" --name routemeter-test --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "routemeter-test=http://127.0.0.1:$peer_port" --unsafe-no-fsync

start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" --cert-dir "$pki" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
  --secure-port "$api_port" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
  --disable-admission-plugins ServiceAccount --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key"

echo -n "waiting for kube-apiserver on 127.0.0.1:$api_port"
for _ in $(seq 1 120); do
  if kctl get --raw /readyz >/dev/null 2>&1; then break; fi
  if ! alive kube-apiserver || ! alive etcd; then break; fi
  echo -n .; sleep 1
done
echo
if ! kctl get --raw /readyz >/dev/null 2>&1; then
  echo "kube-apiserver did not become ready" >&2
  tail -n 30 "$state/logs/etcd.log" "$state/logs/kube-apiserver.log" >&2
  exit 1
fi

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$kubeconfig" --bind-address 127.0.0.1 --secure-port "$cm_port" --leader-elect=false \
  --controllers garbagecollector,namespace,serviceaccount,serviceaccount-token,deployment,replicaset \
  --cert-dir "$state/controller-manager" --service-account-private-key-file "$pki/sa.key" \
  --root-ca-file "$pki/ca.crt" --use-service-account-credentials=false

if [[ "${ROUTEMETER_SKIP_PROM_CRDS:-0}" != 1 ]]; then
  bash "$root/tests/cluster/prom-crds.sh" install
fi
kctl get --raw /version | python3 -c 'import json,sys; print("Kubernetes", json.load(sys.stdin)["gitVersion"], "is up")'
echo "export KUBECONFIG=$kubeconfig"
