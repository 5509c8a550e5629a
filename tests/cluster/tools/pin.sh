#!/usr/bin/env bash
# Re-pins the wrapper modules that build.sh builds the control plane from (and that
# build-monitoring.sh builds Prometheus and the Prometheus Operator from), to other
# releases. Usage:
#   tools/pin.sh [--k8s v1.34.4] [--etcd v3.6.16]
#                [--prometheus v0.316.0] [--prometheus-operator v0.93.0]
# (list releases with: go list -m -versions k8s.io/kubernetes, or go.etcd.io/etcd/server/v3,
# github.com/prometheus/prometheus; run from / with GOFLAGS=-mod=mod)
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at
# v0.0.0 and replaces them with paths inside its own repository, so it cannot be built
# as a dependency as it is. Each Kubernetes release v1.N.P publishes every staging module
# as v0.N.P; this writes one replace line per staging module (the list is read from
# that release's own go.mod, so releases that add modules are covered) and copies the
# release's go and godebug lines, then lets `go mod tidy` fill in the rest and go.sum.
# The binaries are cached by version, so a re-pin builds once, on build.sh's next run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s=""
etcd=""
prometheus=""
operator=""
usage() {
  echo "usage: $0 [--k8s v1.N.P] [--etcd v3.N.P] [--prometheus v0.3MM.P] [--prometheus-operator v0.N.P]" >&2
  exit 2
}
while (($#)); do
  (($# >= 2)) || usage
  case "$1" in
    --k8s) k8s="$2"; shift 2 ;;
    --etcd) etcd="$2"; shift 2 ;;
    --prometheus) prometheus="$2"; shift 2 ;;
    --prometheus-operator) operator="$2"; shift 2 ;;
    *) usage ;;
  esac
done
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  PATH="/usr/local/go/bin:$PATH"
fi

# The go.mod file of a released module, from the module cache (downloaded if needed).
# Run from / so that no go.mod of ours is consulted.
gomod_of() {
  (cd / && GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "$1") \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

# The exclude and replace directives of go.mod file $1, one a line, as
# `exclude MODULE VERSION` or `replace OLD [VERSION] => NEW [VERSION]`, whether written
# alone or in a block. A release's go.mod applies only when it is the main module, so a
# wrapper that builds its commands must repeat them to build what the release built.
directives_of() {
  awk '
    { sub(/\/\/.*/, "") }
    $1 == "exclude" || $1 == "replace" {
      if ($2 == "(") { block = $1; next }
      $1 = $1; print; next
    }
    block != "" && $1 == ")" { block = ""; next }
    block != "" && NF { $1 = $1; print block " " $0 }
  ' "$1"
}

if [[ -n "$k8s" ]]; then
  [[ "$k8s" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "--k8s wants v1.N.P" >&2; exit 2; }
  staging_version="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
  upstream="$(gomod_of "k8s.io/kubernetes@$k8s")"
  [[ -f "$upstream" ]] || { echo "cannot download k8s.io/kubernetes@$k8s" >&2; exit 1; }
  # The staging modules are the ones replaced by ./staging/src/... paths.
  mapfile -t staging < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$upstream" | sort)
  {
    echo "// Builds kube-apiserver, kube-controller-manager and kubectl at a pinned Kubernetes"
    echo "// release: k8s.io/kubernetes cannot be 'go install'ed (its staging modules are replaced"
    echo "// by paths inside its own repository), so this module pins each staging module instead."
    echo "// Written by tools/pin.sh; change the release with it, not by hand."
    echo "module routemeter.io/tests/cluster/tools/k8s"
    echo
    grep -m1 '^go ' "$upstream"
    echo
    grep '^godebug' "$upstream" || true
    echo
    echo "require k8s.io/kubernetes $k8s"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"; done
    echo ")"
  } > "$here/k8s/go.mod"
  rm -f "$here/k8s/go.sum"
  (cd "$here/k8s" && GOTOOLCHAIN=local go mod tidy)
  echo "tools/k8s pinned to Kubernetes $k8s (${#staging[@]} staging modules at $staging_version)"
fi

if [[ -n "$etcd" ]]; then
  upstream="$(gomod_of "go.etcd.io/etcd/server/v3@$etcd")"
  [[ -f "$upstream" ]] || { echo "cannot download go.etcd.io/etcd/server/v3@$etcd" >&2; exit 1; }
  {
    echo "// Builds etcd at a pinned release: go.etcd.io/etcd/server/v3 cannot be 'go install'ed"
    echo "// (relative replace directives), so this module wraps its entry point."
    echo "// Written by tools/pin.sh; change the release with it, not by hand."
    echo "module routemeter.io/tests/cluster/tools/etcd"
    echo
    grep -m1 '^go ' "$upstream"
    echo
    echo "require go.etcd.io/etcd/server/v3 $etcd"
  } > "$here/etcd/go.mod"
  rm -f "$here/etcd/go.sum"
  (cd "$here/etcd" && GOTOOLCHAIN=local go mod tidy)
  echo "tools/etcd pinned to etcd $etcd"
fi

if [[ -n "$prometheus" ]]; then
  # Prometheus 3.MM.P is published as the Go module version v0.3MM.P.
  [[ "$prometheus" =~ ^v0\.3([0-9]{2})\.([0-9]+)$ ]] \
    || { echo "--prometheus wants v0.3MM.P (the Go module version of Prometheus 3.MM.P)" >&2; exit 2; }
  release="3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]}"
  upstream="$(gomod_of "github.com/prometheus/prometheus@$prometheus")"
  [[ -f "$upstream" ]] || { echo "cannot download github.com/prometheus/prometheus@$prometheus" >&2; exit 1; }
  mapfile -t directives < <(directives_of "$upstream")
  for d in "${directives[@]}"; do
    if [[ "$d" == replace*" => ."* ]]; then
      echo "github.com/prometheus/prometheus@$prometheus has a replace by a path in its own repository: $d" >&2
      echo "(write its published version in tools/prometheus/go.mod by hand, as for the operator)" >&2
      exit 1
    fi
  done
  {
    echo "// Builds prometheus and promtool (tools.go) at a pinned release of Prometheus 3, whose"
    echo "// Go module versions are v0.3MM.P for 3.MM.P. The release's own exclude and replace"
    echo "// directives, if any, are repeated below: they apply only in the main module."
    echo "// Written by tools/pin.sh; change the release with it, not by hand."
    echo "module routemeter.io/tests/cluster/tools/prometheus"
    echo
    grep -m1 '^go ' "$upstream"
    echo
    grep '^godebug' "$upstream" || true
    echo
    echo "require github.com/prometheus/prometheus $prometheus"
    if ((${#directives[@]})); then
      echo
      printf '%s\n' "${directives[@]}"
    fi
  } > "$here/prometheus/go.mod"
  rm -f "$here/prometheus/go.sum"
  (cd "$here/prometheus" && GOTOOLCHAIN=local go mod tidy)
  echo "tools/prometheus pinned to Prometheus $release ($prometheus, ${#directives[@]} exclude/replace lines repeated)"
fi

if [[ -n "$operator" ]]; then
  [[ "$operator" =~ ^v0\.[0-9]+\.[0-9]+$ ]] || { echo "--prometheus-operator wants v0.N.P" >&2; exit 2; }
  mod=github.com/prometheus-operator/prometheus-operator
  upstream="$(gomod_of "$mod@$operator")"
  [[ -f "$upstream" ]] || { echo "cannot download $mod@$operator" >&2; exit 1; }
  # The root module replaces its own submodules (pkg/apis/monitoring, pkg/client) by their
  # directories in the repository; each is published at the same version, so the wrapper
  # replaces them by that. Other directives are repeated as they are.
  mapfile -t upstream_directives < <(directives_of "$upstream")
  directives=()
  submodules=0
  for d in "${upstream_directives[@]}"; do
    if [[ "$d" =~ ^replace\ ([^ ]+)(\ [^ ]+)?\ =\>\ \.\.?/ ]]; then
      sub="${BASH_REMATCH[1]}"
      [[ "$sub" == "$mod"/* ]] || { echo "$mod@$operator replaces $sub by a path outside its own modules: $d" >&2; exit 1; }
      directives+=("replace $sub => $sub $operator")
      submodules=$((submodules + 1))
    else
      directives+=("$d")
    fi
  done
  {
    echo "// Builds the Prometheus Operator (operator, prometheus-config-reloader; tools.go) at a"
    echo "// pinned release. Its root module replaces its submodules by paths inside its own"
    echo "// repository, so it cannot be 'go install'ed; this module replaces them by their"
    echo "// published versions and repeats the release's other exclude/replace lines."
    echo "// Written by tools/pin.sh; change the release with it, not by hand."
    echo "module routemeter.io/tests/cluster/tools/prometheus-operator"
    echo
    grep -m1 '^go ' "$upstream"
    echo
    grep '^godebug' "$upstream" || true
    echo
    echo "require $mod $operator"
    echo
    printf '%s\n' "${directives[@]}"
  } > "$here/prometheus-operator/go.mod"
  rm -f "$here/prometheus-operator/go.sum"
  (cd "$here/prometheus-operator" && GOTOOLCHAIN=local go mod tidy)
  echo "tools/prometheus-operator pinned to $operator ($submodules submodules at $operator, ${#upstream_directives[@]} exclude/replace lines in all)"
fi
