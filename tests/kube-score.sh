#!/usr/bin/env bash
# kube-score on the objects the operator creates, as `routemeter render` prints them for
# each example in manifests/examples/: fails on any CRITICAL finding that is not in the
# allow-list below, and on an allow-list entry that no longer matches anything (so the
# list cannot rot). Each allowed finding is explained in the README ("kube-score").
#
# Usage: tests/kube-score.sh           PASS/FAIL lines, exit 1 on a FAIL
#        tests/kube-score.sh --build   only build kube-score (into the cache)
#
# kube-score is built from its Go module on first use (about a minute) into
# ${ROUTEMETER_CACHE:-~/.cache/routemeter}/bin/kube-score-<version>/. The operator binary
# is target/debug/routemeter (make build) or $ROUTEMETER_BIN.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version=v1.20.0
dir="${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/bin/kube-score-$version"
kube_score="$dir/kube-score"
bin="${ROUTEMETER_BIN:-$root/target/debug/routemeter}"

if [[ ! -x "$kube_score" ]]; then
  command -v go > /dev/null || PATH="/usr/local/go/bin:$PATH"
  echo "building kube-score $version into $dir" >&2
  mkdir -p "$dir"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$dir" \
    go install -trimpath -ldflags "-s -w" "github.com/zegl/kube-score/cmd/kube-score@$version"
fi
[[ "${1:-}" == --build ]] && exit 0
[[ -x "$bin" ]] || {
  echo "no routemeter binary at $bin: run make build" >&2
  exit 1
}

# Allowed CRITICAL findings, as "Kind|name-suffix|check-id|summary": an object of that kind
# whose name ends with the suffix (every child is named <msvc>-routemeter...), that check,
# with exactly that summary (so a second problem found by the same check still fails).
# Why each one is allowed (the README's "kube-score" section says the same to users):
allowed=(
  # The proxy has CPU requests and a memory limit but no CPU limit: a CFS quota throttles
  # a proxy in bursts, which shows as tail latency on every request it meters.
  "Deployment|-routemeter|container-resources|CPU limit is not set"
  # kube-score wants imagePullPolicy Always. The proxy image is versioned (or pinned by
  # digest) and IfNotPresent lets nodes that had the image loaded, without a registry,
  # run it.
  "Deployment|-routemeter|container-image-pull-policy|ImagePullPolicy is not set to Always"
  # Which clients may reach the proxy is the user's network policy, not the operator's.
  "Deployment|-routemeter|pod-networkpolicy|The pod does not have a matching NetworkPolicy"
  # The headless upstream Service of takeover mode selects the application's pods, which
  # exist in the cluster but not in the rendered output.
  "Service|-routemeter-upstream|service-targets-pod|The services selector does not match any pods"
)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
: > "$work/seen"
for example in manifests/examples/trips-api.yaml manifests/examples/minimal.yaml manifests/examples/takeover.yaml; do
  name="$(basename "$example" .yaml)"
  "$bin" render -f "$example" > "$work/$name.yaml"
  # Exit status 1 means "found something critical": the findings are judged below.
  "$kube_score" score --output-format json "$work/$name.yaml" > "$work/$name.json" || true
  # One line per finding that is not OK: grade (1 CRITICAL, 5 WARNING), kind, name, check.
  if ! python3 - "$work/$name.json" > "$work/$name.findings" << 'PY'; then
import json, sys
objects = json.load(open(sys.argv[1]))
if not objects:
    sys.exit("kube-score scored no object")
for o in objects:
    for c in o["checks"]:
        if c["skipped"] or c["grade"] >= 10:
            continue
        summary = "; ".join(x["summary"] for x in c.get("comments") or [])
        print(c["grade"], o["type_meta"]["kind"], o["object_meta"]["name"], c["check"]["id"], summary, sep="|")
PY
    echo "FAIL: $name: cannot read kube-score's output"
    head -c 2000 "$work/$name.json" | sed 's/^/    /'
    failures=$((failures + 1))
    continue
  fi
  while IFS='|' read -r grade kind object check summary; do
    if ((grade > 1)); then
      echo "warning (not failing): $name: $kind $object $check: $summary"
      continue
    fi
    entry=""
    for a in "${allowed[@]}"; do
      IFS='|' read -r a_kind a_suffix a_check a_summary <<< "$a"
      if [[ "$kind" == "$a_kind" && "$object" == *"$a_suffix" && "$check" == "$a_check" && "$summary" == "$a_summary" ]]; then
        entry="$a"
      fi
    done
    if [[ -n "$entry" ]]; then
      echo "allowed: $name: $kind $object $check: $summary"
      echo "$entry" >> "$work/seen"
    else
      echo "FAIL: $name: CRITICAL $kind $object $check: $summary"
      failures=$((failures + 1))
    fi
  done < "$work/$name.findings"
done
for a in "${allowed[@]}"; do
  if ! grep -qxF "$a" "$work/seen"; then
    echo "FAIL: allow-list entry matched nothing (remove it, and its README line): $a"
    failures=$((failures + 1))
  fi
done
echo "kube-score: $failures failed"
exit $((failures > 0))
