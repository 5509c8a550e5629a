#!/usr/bin/env bash
# promtool checks the PrometheusRule of every example, as `routemeter render` writes it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/target/promtool"
mkdir -p "$out"
for example in "$root"/manifests/examples/*.yaml; do
  rules="$out/$(basename "$example" .yaml).rules.yaml"
  "$root/target/debug/routemeter" render -f "$example" --rules-only > "$rules"
  promtool check rules "$rules"
done
# Unit tests: each alert fires when it should and not when it should not.
(cd "$root/tests/rules" && promtool test rules ./*.test.yaml)
