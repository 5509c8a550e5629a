#!/usr/bin/env bash
# promtool checks the PrometheusRule of every example (and of the test-only
# MonitoredServices in tests/rules/*.yaml), as `routemeter render` writes it, and runs the
# rules' unit tests (tests/rules/*.test.yaml), on Prometheus 2 (Debian's promtool) and on
# Prometheus 3 (built by tests/cluster/build-monitoring.sh).
#
# Prometheus 3 stores the `le` of a classic histogram in float form (the proxy's le="2" is
# stored as le="2.0"); promtool's input series are not scraped, so for Prometheus 3 the
# tests run on a copy whose whole-number le values are written that way, as a
# Prometheus 3 scrape would have stored them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/target/promtool"
mkdir -p "$out"

eval "$(bash "$root/tests/cluster/build-monitoring.sh")"
promtool3="$PROMETHEUS_BIN/promtool"
promtool2="$(command -v promtool || true)"
[[ -n "$promtool2" ]] || { echo "promtool (Prometheus 2) not found: run tests/tools.sh" >&2; exit 1; }

manifests=("$root"/manifests/examples/*.yaml)
for f in "$root"/tests/rules/*.yaml; do
  [[ "$f" == *.test.yaml ]] || manifests+=("$f")
done
for example in "${manifests[@]}"; do
  rules="$out/$(basename "$example" .yaml).rules.yaml"
  "$root/target/debug/routemeter" render -f "$example" --rules-only > "$rules"
done

for promtool in "$promtool2" "$promtool3"; do
  echo "== $("$promtool" --version 2>&1 | head -n 1)"
  for example in "${manifests[@]}"; do
    "$promtool" check rules "$out/$(basename "$example" .yaml).rules.yaml"
  done
done

# Unit tests: each alert fires when it should and not when it should not.
echo "== unit tests on Prometheus 2 (le as the proxy writes it)"
(cd "$root/tests/rules" && "$promtool2" test rules ./*.test.yaml)
echo "== unit tests on Prometheus 3 (le as Prometheus 3 stores it)"
v3="$out/prometheus-3"
rm -rf "$v3"
mkdir -p "$v3"
# fuzzy_compare: Prometheus 3 evaluates the same rates with another order of float
# operations (0.06 where 2.42 gives 0.05999999999999999), and its promtool compares
# within float rounding only when asked; 2.42's promtool does not know the field.
for t in "$root"/tests/rules/*.test.yaml; do
  {
    echo "fuzzy_compare: true"
    sed -E -e 's/le="([0-9]+)"/le="\1.0"/g' -e 's#\.\./\.\./target/promtool/#../#' "$t"
  } > "$v3/${t##*/}"
done
# The rewrite must have happened, or Prometheus 3 was not tested as it stores buckets.
grep -q 'le="1\.0"' "$v3"/*.test.yaml || { echo "no le was rewritten for Prometheus 3" >&2; exit 1; }
(cd "$v3" && "$promtool3" test rules ./*.test.yaml)
