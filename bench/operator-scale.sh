#!/usr/bin/env bash
# The operator at scale: N MonitoredServices (default 1000), each with its target Service,
# created at once in one namespace and reconciled by the chart's operator in its pod, from
# the image the project builds (`make bench-operator`, after `make cluster-up image`).
#
# Prints:
# - the time from the first create until every MonitoredService has a status written for
#   its generation (the operator's work done: children applied, conditions set);
# - the operator's RSS (its own process_resident_memory_bytes) after convergence and at
#   the end;
# - while converging: the CPU seconds of each cluster process (its children's included)
#   and of the operator, the API requests by verb and resource, and the operator's Events
#   by reason; APISERVER_PROFILE=FILE also takes a CPU profile of kube-apiserver over the
#   first APISERVER_PROFILE_SECONDS (60) seconds, for `go tool pprof -top FILE`;
# - at rest, over REST_SECONDS (default 120) after a settling minute: the API requests per
#   MonitoredService per second, from the API server's own apiserver_request_total, by
#   verb and resource; and the operator's reconciles and child writes in that window.
#
# Each proxy asks for 100 CPUs (`spec.proxy.resources`), so its pod is created and stays
# Pending: the 1,000 proxy Deployments, HPAs and pods exist, the operator caches them as it
# would in production, and the node runs none of them (a node running 1,000 proxies is not
# what is measured). The kube-controller-manager's and the scheduler's own calls (the HPA
# controller reads each Deployment's scale and writes its status) are shown apart: the
# operator makes no call of those kinds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/env.sh
source "$root/tests/cluster/env.sh"
bins
count="${1:-1000}"
rest="${REST_SECONDS:-120}"
settle="${SETTLE_SECONDS:-60}"
ns=routemeter-scale
work="$root/target/bench/operator-scale"
mkdir -p "$work"

# A namespace left by an earlier run goes first, before the operator starts: a fresh
# operator would otherwise cache its objects while they are deleted, and the cluster's
# garbage collection of them would run during the creates.
kctl delete namespace "$ns" --ignore-not-found --wait=true --timeout=300s >/dev/null

helm="$(bash "$root/tests/helm.sh")"
echo "== the chart's operator (routemeter-system), installed afresh from the image loaded"
if "$helm" --kubeconfig "$kubeconfig" status routemeter -n routemeter-system >/dev/null 2>&1; then
  "$helm" --kubeconfig "$kubeconfig" uninstall routemeter -n routemeter-system --wait --timeout 180s >/dev/null
fi
# The old operator's ReplicaSets and pods are deleted here, not left to the garbage
# collector: it is slow while an earlier run's namespace of thousands of objects is being
# deleted, and an old operator was seen still running (and reconciling: one replica has no
# leader election) a minute into the next run's creates, doubling the operator's work and
# its counters. (`helm uninstall --cascade foreground` waits on the same collector.)
operator=(-n routemeter-system -l app.kubernetes.io/name=routemeter)
kctl "${operator[@]}" delete replicasets,pods --ignore-not-found --wait=true --timeout=180s >/dev/null 2>&1 || true
"$helm" --kubeconfig "$kubeconfig" upgrade --install routemeter "$root/charts/routemeter" \
  --namespace routemeter-system --create-namespace --wait --timeout 180s >/dev/null
# OPERATOR_ENV="K=V ...": environment for the operator's container, to measure a setting
# (for example an allocator's) without building another image.
if [[ -n "${OPERATOR_ENV:-}" ]]; then
  # shellcheck disable=SC2086
  kctl -n routemeter-system set env deployment/routemeter $OPERATOR_ENV >/dev/null
  kctl -n routemeter-system rollout status deployment/routemeter --timeout 180s >/dev/null
  echo "   operator environment: $OPERATOR_ENV"
fi
# One operator pod, the new one (also after OPERATOR_ENV's rollout): an old one still
# terminating would be measured with it. Its IP, for its /metrics, once it has one.
for _ in $(seq 180); do
  pods="$(kctl "${operator[@]}" get pods -o jsonpath='{range .items[*]}[{.status.podIP}]{end}')"
  if [[ "$pods" =~ ^\[([0-9a-f.:]+)\]$ ]]; then break; fi
  sleep 1
done
ip="${BASH_REMATCH[1]:-}"
if [[ -z "$ip" ]]; then
  echo "not one operator pod with an IP after 180 s:" >&2
  kctl "${operator[@]}" get pods >&2
  exit 1
fi
operator_metrics() { curl -fsS --max-time 5 "http://$ip:8080/metrics"; }
metric() { awk -v m="$1" '$1 == m {s += $2} END {print s + 0}'; }
rss_mb() { echo "$(metric process_resident_memory_bytes) / 1000000" | bc -l; }
# Child writes with this outcome, over every kind.
writes() { grep "^routemeter_operator_child_writes_total{.*outcome=\"$1\"" | awk '{s += $2} END {print s + 0}'; }

kctl create namespace "$ns" >/dev/null
kctl label namespace "$ns" routemeter.io/test-namespace=bench >/dev/null

# Ten files, created by ten kubectl processes at once: one kubectl alone waits for each
# answer in turn, and would measure itself.
python3 "$root/bench/scale-objects.py" "$count" "$ns" "$work"

requests() { kctl get --raw /metrics | grep '^apiserver_request_total{'; }
# shellcheck source=bench/cluster-cpu.sh
source "$root/bench/cluster-cpu.sh"

before="$(operator_metrics)"
cpu0="$(cluster_cpu)"
r_c0="$(requests)"
# APISERVER_PROFILE=FILE: a CPU profile of kube-apiserver over the first
# APISERVER_PROFILE_SECONDS (60) of the creates, for `go tool pprof -top FILE`.
if [[ -n "${APISERVER_PROFILE:-}" ]]; then
  kctl get --raw "/debug/pprof/profile?seconds=${APISERVER_PROFILE_SECONDS:-60}" >"$APISERVER_PROFILE" &
  profile_pid=$!
  trap 'kill "$profile_pid" 2>/dev/null || true' EXIT
fi
echo "== creating $count Services and $count MonitoredServices in $ns"
start=$(date +%s.%N)
printf '%s\n' "$work"/objects-*.yaml | xargs -P 10 -I{} "$kubectl" --kubeconfig "$kubeconfig" -n "$ns" create -f {} >/dev/null
created=$(date +%s.%N)
converged() {
  kctl -n "$ns" get monitoredservices -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
done = sum(1 for m in items
           if (m.get("status") or {}).get("observedGeneration") == m["metadata"].get("generation")
           and (m.get("status") or {}).get("conditions"))
print(done, len(items))'
}
while :; do
  read -r ready total < <(converged)
  now=$(date +%s.%N)
  if [[ "$ready" -ge "$count" ]]; then break; fi
  if (($(echo "$now - $start > 600" | bc))); then
    echo "not converged after 600 s: $ready of $total" >&2
    exit 1
  fi
  sleep 1
done
after="$(operator_metrics)"
cpu1="$(cluster_cpu)"
r_c1="$(requests)"
if [[ -n "${profile_pid:-}" ]]; then
  wait "$profile_pid" || echo "the API server's profile failed" >&2
fi
printf 'created in %.1f s; all %d converged %.1f s after the first create\n' \
  "$(echo "$created - $start" | bc)" "$count" "$(echo "$now - $start" | bc)"
printf 'operator RSS: %.1f MB before, %.1f MB converged\n' \
  "$(rss_mb <<<"$before")" "$(rss_mb <<<"$after")"
operator_cpu="$(echo "$(metric process_cpu_seconds_total <<<"$after") - $(metric process_cpu_seconds_total <<<"$before")" | bc -l)"
printf 'to converge: %d reconciles, %d child applies, %.1f s of the operator'"'"'s CPU\n' \
  "$(($(metric routemeter_operator_reconciliations_total <<<"$after") - $(metric routemeter_operator_reconciliations_total <<<"$before")))" \
  "$(($(writes applied <<<"$after") - $(writes applied <<<"$before")))" "$operator_cpu"

python3 - "$(echo "$now - $start" | bc)" "$operator_cpu" <(printf '%s\n' "$cpu0") <(printf '%s\n' "$cpu1") \
  <(printf '%s\n' "$r_c0") <(printf '%s\n' "$r_c1") <<'EOF'
import os, re, sys
seconds, operator = float(sys.argv[1]), float(sys.argv[2])
def cpu(path):
    return {n: float(v) for n, v in (line.split() for line in open(path) if line.strip())}
a, b = cpu(sys.argv[3]), cpu(sys.argv[4])
used = {n: b[n] - a[n] for n in b if n in a}
used["operator (its pod)"] = operator
cores = os.cpu_count() or 1
print(f"CPU seconds while converging ({seconds:.1f} s, {cores * seconds:.0f} s of {cores} cores):")
for n, v in sorted(used.items(), key=lambda kv: -kv[1]):
    print(f"  {n:26} {v:6.1f}")
def read(path):
    out = {}
    for line in open(path):
        m = re.match(r'apiserver_request_total\{(.*)\} (\S+)', line)
        if m:
            l = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            key = (l.get("verb"), l.get("resource") + ("/" + l["subresource"] if l.get("subresource") else ""))
            out[key] = out.get(key, 0.0) + float(m.group(2))
    return out
ra, rb = read(sys.argv[5]), read(sys.argv[6])
rows = sorted(((rb[k] - ra.get(k, 0.0), k) for k in rb if k[0] not in ("WATCH", "CONNECT")), reverse=True)
rows = [(d, k) for d, k in rows if d > 0]
print(f"API requests while converging: {sum(d for d, _ in rows):.0f}, the most frequent:")
for d, (verb, resource) in rows[:12]:
    print(f"  {verb:7} {resource:40} {d:7.0f}")
EOF

# The operator's Events while converging, by reason: NotSelected is expected once per
# object (no Prometheus runs here); any other Warning is something that went wrong.
kctl -n "$ns" get events -o json | python3 -c '
import collections, json, sys
counts = collections.Counter()
for e in json.load(sys.stdin)["items"]:
    if (e.get("reportingComponent") or e.get("source", {}).get("component")) == "routemeter.io/operator":
        counts[(e["type"], e["reason"])] += e.get("count") or 1
print("operator Events while converging:",
      ", ".join(f"{n} {t} {r}" for (t, r), n in sorted(counts.items())) or "none")'

# The cluster's own work goes on after the operator's: the ReplicaSet controller creates
# the 1,000 proxy pods at its own pace. At rest begins once they all exist.
until (($(kctl -n "$ns" get pods --no-headers 2>/dev/null | wc -l) >= count)); do
  if (($(echo "$(date +%s.%N) - $start > 900" | bc))); then
    echo "the proxy pods were not all created after 900 s" >&2
    exit 1
  fi
  sleep 5
done
printf 'every proxy pod created (Pending) %.1f s after the first create\n' "$(echo "$(date +%s.%N) - $start" | bc)"
echo "== at rest: settling ${settle} s, then measuring ${rest} s"
sleep "$settle"
r0="$(requests)"
m0="$(operator_metrics)"
sleep "$rest"
r1="$(requests)"
m1="$(operator_metrics)"
python3 - "$count" "$rest" <(printf '%s\n' "$r0") <(printf '%s\n' "$r1") <<'EOF'
import re, sys
count, seconds = int(sys.argv[1]), float(sys.argv[2])
def read(path):
    out = {}
    for line in open(path):
        m = re.match(r'apiserver_request_total\{(.*)\} (\S+)', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        key = (labels.get("verb"), labels.get("resource"), labels.get("subresource", ""))
        out[key] = out.get(key, 0.0) + float(m.group(2))
    return out
a, b = read(sys.argv[3]), read(sys.argv[4])
ours = {"monitoredservices", "services", "configmaps", "deployments", "pods",
        "horizontalpodautoscalers", "poddisruptionbudgets", "serviceaccounts", "roles",
        "rolebindings", "namespaces", "servicemonitors", "prometheusrules", "prometheuses"}
# What the operator can call: reads, apply/patch, delete (never PUT, never POST, never a
# scale subresource; WATCH requests are long-lived and counted once each).
operator_verbs = {"GET", "LIST", "PATCH", "APPLY", "DELETE"}
rows = []
for key in sorted(set(a) | set(b), key=lambda k: tuple(x or "" for x in k)):
    d = b.get(key, 0.0) - a.get(key, 0.0)
    verb, resource, sub = key
    if d <= 0 or resource not in ours or verb in ("WATCH", "CONNECT"):
        continue
    # The operator writes the status of MonitoredServices only, and only reads pods.
    mine = verb in operator_verbs and (sub == "" or (sub == "status" and resource == "monitoredservices"))
    if resource == "pods" and verb not in ("GET", "LIST"):
        mine = False
    who = "operator?" if mine else "cluster"
    rows.append((verb, resource, sub, d, who))
total = sum(r[3] for r in rows if r[4] == "operator?")
print(f"API requests at rest over {seconds:.0f} s on the operator's resources:")
for verb, resource, sub, d, who in rows:
    print(f"  {verb:7} {resource + ('/' + sub if sub else ''):36} {d:8.0f}  {who}")
print(f"calls the operator could have made: {total:.0f}, "
      f"{total / count / seconds:.4f} per MonitoredService per second (target <= 0.05)")
EOF
printf 'operator at rest: %d reconciles, %d child applies, %d unchanged; RSS %.1f MB\n' \
  "$(($(metric routemeter_operator_reconciliations_total <<<"$m1") - $(metric routemeter_operator_reconciliations_total <<<"$m0")))" \
  "$(($(writes applied <<<"$m1") - $(writes applied <<<"$m0")))" \
  "$(($(writes unchanged <<<"$m1") - $(writes unchanged <<<"$m0")))" "$(rss_mb <<<"$m1")"

if [[ "${KEEP:-0}" != 1 ]]; then
  kctl delete namespace "$ns" --wait=false >/dev/null
fi
