#!/usr/bin/env bash
# Re-pins the wrapper modules that build.sh builds the control plane from, to other
# releases. Usage: tools/pin.sh [--k8s v1.34.4] [--etcd v3.6.16]
# (list releases with: go list -m -versions k8s.io/kubernetes, or go.etcd.io/etcd/server/v3)
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
while (($#)); do
  case "$1" in
    --k8s) k8s="$2"; shift 2 ;;
    --etcd) etcd="$2"; shift 2 ;;
    *) echo "usage: $0 [--k8s v1.N.P] [--etcd v3.N.P]" >&2; exit 2 ;;
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
