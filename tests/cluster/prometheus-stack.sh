#!/usr/bin/env bash
# Installs the Prometheus Operator on the test cluster the way kube-prometheus-stack users
# have it, with Prometheus 3, from images built here (tests/image/build.sh monitoring):
#   - every CRD of the pinned operator release (server-side apply, as prom-crds.sh);
#   - namespace `monitoring`: the operator (its release's own ServiceAccount, ClusterRole,
#     ClusterRoleBinding, Deployment and Service from example/rbac/prometheus-operator,
#     with our images, imagePullPolicy Never, and no kubelet Service: that one would live
#     in kube-system);
#   - a Prometheus named after the release (default kps) that selects ServiceMonitors,
#     PodMonitors, Probes, ScrapeConfigs and PrometheusRules labelled `release: <release>`
#     in every namespace, scrapes and evaluates every 5 s, keeps 1 h, with a ServiceAccount
#     allowed to discover services, endpoints, endpointslices and pods in all namespaces.
#     The operator makes its StatefulSet prometheus-<release> and Service prometheus-operated.
#
# Usage: prometheus-stack.sh install|uninstall [--release NAME]
#   install: installs (or updates) the operator, then the release's Prometheus; waits
#     until the operator is Available and the Prometheus pod Ready, then prints on stdout
#       PROMETHEUS_POD=prometheus-<release>-0
#       PROMETHEUS_POD_IP=10.244.0.N
#       PROMETHEUS_URL=http://10.244.0.N:9090
#     (pod IPs are reachable from the host; never use the Service's address from there).
#     A second `install --release other` adds a second Prometheus next to the first.
#   uninstall --release NAME: removes that release's Prometheus (and its pod) only.
#   uninstall: removes everything install made: every release, the operator, namespace
#     monitoring, the cluster roles, and the CRDs no one else manages (the three that
#     prom-crds.sh installs stay when it had installed them). Waits until they are gone.
# Progress goes to stderr.
set -euo pipefail
# shellcheck source=tests/cluster/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

ns=monitoring
manager=routemeter-prometheus-stack
part_of="app.kubernetes.io/part-of=$manager"

usage() {
  echo "usage: $0 install|uninstall [--release NAME]" >&2
  exit 2
}
say() { echo "prometheus-stack: $*" >&2; }
die() {
  say "$*"
  exit 1
}

action="${1:-}"
[[ "$action" == install || "$action" == uninstall ]] || usage
shift
release=""
while (($#)); do
  case "$1" in
    --release) (($# >= 2)) || usage; release="$2"; shift 2 ;;
    --release=*) release="${1#--release=}"; shift ;;
    *) usage ;;
  esac
done
# A DNS label short enough for the names made of it (prometheus-<release>-0 and the
# operator's own suffixes).
if [[ -n "$release" && ! "$release" =~ ^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$ ]]; then
  die "--release wants a lower-case DNS label of at most 40 characters, not '$release'"
fi

bins
[[ -f "$kubeconfig" ]] || die "no cluster: $kubeconfig is missing (make cluster-up)"
# One install or uninstall at a time on a cluster (a test may run two releases).
exec 8>"$state/.prometheus-stack.lock"
flock 8

# The operator's manifests from the release's module, namespaced into $ns, with our
# images and without the kubelet Service (--kubelet-service makes and updates a Service
# in kube-system; nothing here scrapes kubelets).
operator_manifests() {
  local dir="$1/example/rbac/prometheus-operator" f out
  for f in service-account cluster-role cluster-role-binding deployment service; do
    [[ -f "$dir/prometheus-operator-$f.yaml" ]] || die "$dir/prometheus-operator-$f.yaml is missing"
    echo "---"
    sed -e "s|^\( *\)namespace: default\$|\1namespace: $ns|" \
      -e "s|^\( *\)image: quay.io/prometheus-operator/prometheus-operator:.*\$|\1image: $prom_operator_image\n\1imagePullPolicy: Never|" \
      -e "s|--prometheus-config-reloader=.*\$|--prometheus-config-reloader=$prom_config_reloader_image|" \
      -e '/--kubelet-service=\|--kubelet-endpoints=\|--kubelet-endpointslice=/d' \
      "$dir/prometheus-operator-$f.yaml"
  done > "$tmp/operator.yaml"
  # The rewrites are checked, not trusted: a later release may spell these differently.
  out="$(<"$tmp/operator.yaml")"
  [[ "$out" != *quay.io* && "$out" != *"namespace: default"* && "$out" != *kubelet-* ]] \
    || die "could not rewrite the operator's manifests of $prom_operator_version (image, namespace or kubelet flags):$(grep -n 'quay.io\|namespace: default\|kubelet-' "$tmp/operator.yaml")"
  [[ "$out" == *"image: $prom_operator_image"* && "$out" == *"--prometheus-config-reloader=$prom_config_reloader_image"* ]] \
    || die "the operator's Deployment of $prom_operator_version does not look as expected ($tmp/operator.yaml)"
}

release_manifests() {
  local r="$1"
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: prometheus-$r
  namespace: $ns
  labels: {app.kubernetes.io/part-of: $manager, release: $r}
---
# What Prometheus' Kubernetes service discovery reads, in every namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: $manager-$r
  labels: {app.kubernetes.io/part-of: $manager, release: $r}
rules:
  - apiGroups: [""]
    resources: [services, endpoints, pods]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
  - nonResourceURLs: [/metrics]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: $manager-$r
  labels: {app.kubernetes.io/part-of: $manager, release: $r}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: $manager-$r}
subjects:
  - {kind: ServiceAccount, name: prometheus-$r, namespace: $ns}
---
# As kube-prometheus-stack's: the release label selects, any namespace.
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata:
  name: $r
  namespace: $ns
  labels: {app.kubernetes.io/part-of: $manager, release: $r}
spec:
  image: $prometheus_image
  version: $prometheus_version
  imagePullPolicy: Never
  replicas: 1
  serviceAccountName: prometheus-$r
  portName: http-web
  serviceMonitorSelector: {matchLabels: {release: $r}}
  serviceMonitorNamespaceSelector: {}
  podMonitorSelector: {matchLabels: {release: $r}}
  podMonitorNamespaceSelector: {}
  probeSelector: {matchLabels: {release: $r}}
  probeNamespaceSelector: {}
  scrapeConfigSelector: {matchLabels: {release: $r}}
  scrapeConfigNamespaceSelector: {}
  ruleSelector: {matchLabels: {release: $r}}
  ruleNamespaceSelector: {}
  scrapeInterval: 5s
  evaluationInterval: 5s
  retention: 1h
  walCompression: true
  # The node is a 2-core machine shared with everything else.
  resources:
    requests: {cpu: 50m, memory: 128Mi}
    limits: {memory: 512Mi}
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    runAsGroup: 2000
    fsGroup: 2000
    seccompProfile: {type: RuntimeDefault}
EOF
}

apply() {
  kctl apply --server-side --force-conflicts --field-manager="$manager" "$@" >/dev/null
}

# The images are built here and imported into the node; build and load them when the
# node lacks one (nothing can be pulled).
ensure_images() {
  local listed img absent=0
  command -v ctr >/dev/null || die "ctr not found (Debian package containerd)"
  listed="$(ctr --address "$containerd_sock" -n k8s.io images ls -q)" \
    || die "cannot list the node's images through $containerd_sock: is the node up?"
  for img in "$prometheus_image" "$prom_operator_image" "$prom_config_reloader_image"; do
    grep -qxF "$img" <<<"$listed" || absent=1
  done
  if ((absent)); then
    say "building and loading the monitoring images (tests/image/build.sh monitoring --load)"
    bash "$root/tests/image/build.sh" monitoring --load >&2
  fi
}

# CRD names (plural.group) of the release's files.
crd_names() {
  local f name
  for f in "$1"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml; do
    name="${f##*/monitoring.coreos.com_}"
    echo "${name%.yaml}.monitoring.coreos.com"
  done
}

diagnose() {
  say "state of namespace $ns:"
  kctl -n "$ns" get deploy,sts,pods,svc -o wide >&2 || true
  kctl -n "$ns" get prometheus -o wide >&2 || true
  kctl -n "$ns" describe pods 2>&1 | tail -n 60 >&2 || true
  kctl -n "$ns" logs deploy/prometheus-operator --tail=40 >&2 || true
}

# Waits (up to $2 s) until pod $1 exists, then until it is Ready (up to $3 s).
wait_pod_ready() {
  local pod="$1" i
  for ((i = 0; i < $2; i++)); do
    kctl -n "$ns" get pod "$pod" >/dev/null 2>&1 && break
    sleep 1
  done
  kctl -n "$ns" get pod "$pod" >/dev/null 2>&1 || { diagnose; die "the operator made no pod $pod in $2 s"; }
  kctl -n "$ns" wait --for=condition=Ready "pod/$pod" --timeout="${3}s" >/dev/null \
    || { diagnose; die "pod $pod not Ready in $3 s"; }
}

install() {
  local r="${release:-kps}" mod crd i ip
  ensure_images
  mod="$(prom_operator_module_dir)" || exit 1
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT

  say "CRDs of the Prometheus Operator $prom_operator_version"
  # Server-side: these CRDs are too large for client-side apply's annotation.
  apply -f "$mod/example/prometheus-operator-crd/"
  # Polled: `kubectl wait --for condition=established` fails on a CRD with no conditions yet.
  while read -r crd; do
    for ((i = 0; i < 120; i++)); do
      [[ "$(kctl get crd "$crd" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" == True ]] && break
      sleep 0.5
    done
    ((i < 120)) || die "CRD $crd not established in 60 s"
  done < <(crd_names "$mod")

  say "operator $prom_operator_version in namespace $ns ($prom_operator_image)"
  apply -f - <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $ns
  labels: {app.kubernetes.io/part-of: $manager}
EOF
  operator_manifests "$mod"
  apply -f "$tmp/operator.yaml"
  kctl -n "$ns" rollout status deployment/prometheus-operator --timeout=120s >&2 \
    || { diagnose; die "the operator's rollout did not finish in 120 s"; }
  kctl -n "$ns" wait --for=condition=Available deployment/prometheus-operator --timeout=60s >/dev/null \
    || { diagnose; die "the operator is not Available"; }

  say "Prometheus $r ($prometheus_image), selecting release: $r"
  release_manifests "$r" | apply -f -
  wait_pod_ready "prometheus-$r-0" 120 180
  ip="$(kctl -n "$ns" get pod "prometheus-$r-0" -o jsonpath='{.status.podIP}')"
  [[ -n "$ip" ]] || die "pod prometheus-$r-0 has no IP"
  say "Prometheus $r Ready at http://$ip:9090"
  echo "PROMETHEUS_POD=prometheus-$r-0"
  echo "PROMETHEUS_POD_IP=$ip"
  echo "PROMETHEUS_URL=http://$ip:9090"
}

# Removes release $1: the Prometheus first, while the operator still runs to see it go
# (its StatefulSet is the garbage collector's, by owner reference), then its account.
remove_release() {
  local r="$1"
  if kctl get crd prometheuses.monitoring.coreos.com >/dev/null 2>&1; then
    kctl -n "$ns" delete prometheus "$r" --ignore-not-found --wait=true --timeout=120s >/dev/null
  fi
  kctl -n "$ns" delete serviceaccount "prometheus-$r" --ignore-not-found >/dev/null 2>&1 || true
  kctl delete clusterrolebinding,clusterrole "$manager-$r" --ignore-not-found >/dev/null
  kctl -n "$ns" wait --for=delete "pod/prometheus-$r-0" --timeout=120s >/dev/null 2>&1 || true
}

uninstall() {
  local mod r crd managers
  if [[ -n "$release" ]]; then
    remove_release "$release"
    say "Prometheus $release removed"
    return
  fi
  if kctl get crd prometheuses.monitoring.coreos.com >/dev/null 2>&1; then
    for r in $(kctl -n "$ns" get prometheus -l "$part_of" -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do
      remove_release "$r"
    done
  fi
  # Releases whose Prometheus is already gone still leave their cluster roles.
  kctl delete clusterrolebinding,clusterrole -l "$part_of" --ignore-not-found >/dev/null
  kctl delete clusterrolebinding,clusterrole prometheus-operator --ignore-not-found >/dev/null
  # The namespace takes the operator and whatever else is left in it.
  kctl delete namespace "$ns" --ignore-not-found --wait=true --timeout=180s >/dev/null
  # A CRD goes when no one but this script applied it: prom-crds.sh's three stay when it
  # had installed them (field manager routemeter-tests), as up.sh leaves the cluster.
  mod="$(prom_operator_module_dir)" || exit 1
  while read -r crd; do
    managers="$(kctl get crd "$crd" -o jsonpath='{range .metadata.managedFields[*]}{.manager}{"\n"}{end}' 2>/dev/null)" || continue
    if [[ -z "$(grep -vxF -e "$manager" -e kube-apiserver <<<"$managers")" ]]; then
      kctl delete crd "$crd" --ignore-not-found --wait=true --timeout=120s >/dev/null
    fi
  done < <(crd_names "$mod")
  say "Prometheus Operator and its Prometheus removed"
}

"$action"
