#!/usr/bin/env bash
# Builds the test cluster (etcd; kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kube-proxy and a kubectl of the same release; CoreDNS) from the Go modules
# pinned in tools/, into a cache keyed by version:
#   ${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/bin/k8s-<version>/{kube-apiserver,...,kubectl}
#   ${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/bin/etcd-<version>/etcd
#   ${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/bin/coredns-<version>/coredns
# Only the first run pays the build (about 15 minutes on 2 cores from an empty Go build
# cache); later runs find the binaries and return at once. Go's module and build caches
# stay in their defaults so other Go builds on the machine share them.
#
# Prints exactly three lines on stdout, meant for eval (env.sh does that):
#   ETCD_BIN=<path of etcd>
#   K8S_BIN=<directory of the Kubernetes binaries>
#   COREDNS_BIN=<path of coredns>
# With --if-built it prints nothing, and builds nothing, when a binary is missing.
# Progress and errors go to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The versions are the ones the wrapper modules require, so go.mod is the only place to
# change them (with their go.sum).
k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/tools/k8s/go.mod")"
etcd_version="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/tools/etcd/go.mod")"
coredns_version="$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$here/tools/coredns/go.mod")"
if [[ -z "$k8s_version" || -z "$etcd_version" || -z "$coredns_version" ]]; then
  echo "build.sh: cannot read the pinned versions from $here/tools/*/go.mod" >&2
  exit 1
fi
cache="${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/bin"
k8s_dir="$cache/k8s-$k8s_version"
etcd_dir="$cache/etcd-$etcd_version"
coredns_dir="$cache/coredns-$coredns_version"
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

built() {
  [[ -x "$etcd_dir/etcd" ]] || return 1
  [[ -x "$coredns_dir/coredns" ]] || return 1
  local cmd
  for cmd in "${k8s_cmds[@]}"; do [[ -x "$k8s_dir/$cmd" ]] || return 1; done
}

report() {
  echo "ETCD_BIN=$etcd_dir/etcd"
  echo "K8S_BIN=$k8s_dir"
  echo "COREDNS_BIN=$coredns_dir/coredns"
}

# The fast path: no Go toolchain needed once the binaries are cached.
if built; then
  report
  exit 0
fi
# --if-built: report the binaries only if they are there (down.sh: tearing down never
# waits for a build).
if [[ "${1:-}" == --if-built ]]; then
  exit 0
fi

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  PATH="/usr/local/go/bin:$PATH"
fi
# The newest `go` line of the wrapper modules is the oldest Go that can build them (etcd
# 3.6.16 wants 1.26). Say so plainly rather than let an old Go fail on go.mod syntax.
need="$(awk '$1 == "go" {print $2}' "$here"/tools/*/go.mod | sort -V | tail -n 1)"
have="$(go env GOVERSION 2>/dev/null || true)"
have="${have#go}"
if [[ -z "$have" || "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]]; then
  echo "build.sh: Go $need or later is needed to build the control plane; found: ${have:-none}" >&2
  exit 1
fi

# One build at a time per cache: a second caller (another test run, the demo) waits for
# the first one's binaries instead of compiling the same thing again on the same cores.
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9
if built; then
  report
  exit 0
fi

# Static binaries (no cgo): nothing to link against on the machine, and CI's fresh
# machines run them as they are. -mod=readonly: the pinned go.mod and go.sum are the
# truth; a build never rewrites them. -buildvcs=false: these are builds of released
# modules, not of this repository, so its git state must not leak into them.
# GOTOOLCHAIN=local: use the installed Go, never download another one.
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath" GOTOOLCHAIN=local

start=$SECONDS
tmp=""
# An interrupted build leaves no half-written directory behind.
trap '[[ -z "$tmp" ]] || rm -rf "$tmp"' EXIT
if [[ ! -x "$etcd_dir/etcd" ]]; then
  echo "building etcd $etcd_version (tests/cluster/tools/etcd)..." >&2
  mkdir -p "$etcd_dir"
  tmp="$(mktemp -d "$etcd_dir/.build.XXXXXX")"
  (cd "$here/tools/etcd" && go build -ldflags "-s -w" -o "$tmp/etcd" .)
  mv "$tmp/etcd" "$etcd_dir/etcd"
  rmdir "$tmp"
  tmp=""
fi

if [[ ! -x "$coredns_dir/coredns" ]]; then
  echo "building coredns $coredns_version (tests/cluster/tools/coredns)..." >&2
  mkdir -p "$coredns_dir"
  tmp="$(mktemp -d "$coredns_dir/.build.XXXXXX")"
  (cd "$here/tools/coredns" && go build -ldflags "-s -w" -o "$tmp/coredns" .)
  mv "$tmp/coredns" "$coredns_dir/coredns"
  rmdir "$tmp"
  tmp=""
fi

missing=()
for cmd in "${k8s_cmds[@]}"; do
  [[ -x "$k8s_dir/$cmd" ]] || missing+=("$cmd")
done
if ((${#missing[@]})); then
  echo "building ${missing[*]} $k8s_version (tests/cluster/tools/k8s); about 15 minutes on 2 cores from an empty Go build cache..." >&2
  # Without these the binaries report v0.0.0-master, and clients' version checks (and
  # kubectl's skew warning) misbehave. gitMinor is the minor number of the release.
  minor="${k8s_version#v1.}"
  minor="${minor%%.*}"
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$k8s_dir"
  tmp="$(mktemp -d "$k8s_dir/.build.XXXXXX")"
  # One go build for all of them: they share most packages, and one build graph keeps
  # both cores busy. Each binary is moved into place only when complete, so an
  # interrupted build never leaves a binary that a later run would take as built.
  pkgs=()
  for cmd in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  (cd "$here/tools/k8s" && go build -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  for cmd in "${missing[@]}"; do mv "$tmp/$cmd" "$k8s_dir/$cmd"; done
  rmdir "$tmp"
  tmp=""
fi
echo "control plane binaries built in $((SECONDS - start)) s" >&2
report
