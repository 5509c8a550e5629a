#!/usr/bin/env bash
# What each kind of child costs the API server: the children the operator would write for
# N MonitoredServices (default 1000; `routemeter render`, the same objects as
# bench/operator-scale.sh's), server-side applied kind by kind, ten streams at once, into a
# namespace of their own on the cluster of `make cluster-up`. Prints per kind: the objects,
# the bytes of their apply bodies, and the CPU seconds of kube-apiserver, etcd and
# kube-controller-manager from the first apply until 5 s after the last (less what they
# spent in the 5 s before, over as long), so the controllers' own work for a kind (a Deployment's
# ReplicaSet and pod, a Service's EndpointSlice) is counted with it.
#
# The objects are bench/scale-objects.py's, as bench/operator-scale.sh creates them.
#
# VALIDATE=strict|ignore (default ignore, as the operator applies: `fieldValidation`).
# KINDS="PrometheusRule ConfigMap ..." to measure some kinds only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/env.sh
source "$root/tests/cluster/env.sh"
bins
count="${1:-1000}"
validate="${VALIDATE:-ignore}"
case "$validate" in
  strict) kubectl_validate=strict ;;
  ignore) kubectl_validate=false ;;
  *) echo "VALIDATE is strict or ignore, not $validate" >&2; exit 2 ;;
esac
ns=routemeter-cost
work="$root/target/bench/apiserver-cost"
mkdir -p "$work"
bin="${ROUTEMETER_BIN:-$root/target/release/routemeter}"
[[ -x "$bin" ]] || bin="$root/target/debug/routemeter"
[[ -x "$bin" ]] || { echo "build routemeter first (cargo build)" >&2; exit 1; }

python3 "$root/bench/scale-objects.py" "$count" "$ns" "$work"
"$bin" render --log-format text -f "$work/msvcs.yaml" --targets "$work/targets.yaml" >"$work/children.yaml"

# One JSON document per line and kind, split over ten files: what the operator sends.
rm -f "$work"/kind-*.json
python3 - "$work" <<'EOF'
import json, sys, yaml
work = sys.argv[1]
out = {}
loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
for doc in yaml.load_all(open(f"{work}/children.yaml"), Loader=loader):
    if not doc:
        continue
    kind = doc["kind"]
    if kind == "Service":
        name = doc["metadata"]["name"]
        kind = "Service(metrics)" if name.endswith("-metrics") else "Service(upstream)" if name.endswith("-upstream") else "Service(proxy)"
    if kind == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboard"):
        kind = "ConfigMap(dashboard)"
    out.setdefault(kind, []).append(doc)
for kind, docs in out.items():
    files = [open(f"{work}/kind-{kind}-{k}.json", "w") for k in range(10)]
    for i, d in enumerate(docs):
        files[i % 10].write(json.dumps(d, separators=(",", ":")) + "\n")
print(" ".join(out), file=open(f"{work}/kinds", "w"))
EOF

# shellcheck source=bench/cluster-cpu.sh
source "$root/bench/cluster-cpu.sh"
# The CPU seconds of the three, summed.
cpu() { cluster_cpu kube-apiserver etcd kube-controller-manager | awk '{s += $2} END {printf "%.2f\n", s}'; }

kctl delete namespace "$ns" --ignore-not-found --wait=true --timeout=300s >/dev/null
kctl create namespace "$ns" >/dev/null
# The target Services first: the proxies' upstream Services mirror them.
kctl apply --server-side -f "$work/targets.yaml" >/dev/null
sleep 5
printf '%-22s %7s %9s %9s %12s\n' kind objects "KB sent" seconds "CPU seconds"
# The Deployments and HPAs last: once they exist, the controllers keep working on them.
kinds="${KINDS:-$(tr ' ' '\n' <"$work/kinds" | grep -vx 'Deployment\|HorizontalPodAutoscaler' | tr '\n' ' ') Deployment HorizontalPodAutoscaler}"
for kind in $kinds; do
  files=("$work/kind-$kind"-*.json)
  [[ -s "${files[0]}" ]] || { echo "no $kind rendered" >&2; continue; }
  bytes="$(cat "${files[@]}" | wc -c)"
  objects="$(cat "${files[@]}" | wc -l)"
  # What the three spend meanwhile on what is there already (the HPA controller's
  # rounds once there are HPAs), over 5 s just before.
  c0="$(cpu)"; sleep 5; idle="$(echo "$(cpu) - $c0" | bc -l)"
  start="$(date +%s.%N)"; c0="$(cpu)"
  pids=()
  for f in "${files[@]}"; do
    kctl apply --server-side --force-conflicts --field-manager=routemeter \
      --validate="$kubectl_validate" -f "$f" >/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
  took="$(echo "$(date +%s.%N) - $start" | bc)"
  sleep 5
  c1="$(cpu)"
  window="$(echo "$took + 5" | bc)"
  printf '%-22s %7d %9.0f %9.1f %12.2f\n' "$kind" "$objects" "$(echo "$bytes / 1024" | bc -l)" "$took" \
    "$(echo "$c1 - $c0 - $idle / 5 * $window" | bc -l)"
done
kctl delete namespace "$ns" --wait=false >/dev/null
