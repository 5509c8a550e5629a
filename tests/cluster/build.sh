#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl)
# from the Go modules pinned in tools/, into a cache keyed by version, so only the first
# run pays the build (10-20 minutes on 2 cores). Prints the binary directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/tools/k8s/go.mod")"
etcd_version="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/tools/etcd/go.mod")"
cache="${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/bin"
k8s_dir="$cache/k8s-$k8s_version"
etcd_dir="$cache/etcd-$etcd_version"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

if [[ ! -x "$etcd_dir/etcd" ]]; then
  echo "building etcd $etcd_version..." >&2
  mkdir -p "$etcd_dir"
  (cd "$here/tools/etcd" && go build -trimpath -o "$etcd_dir/etcd.tmp" .)
  mv "$etcd_dir/etcd.tmp" "$etcd_dir/etcd"
fi

minor="${k8s_version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"
for cmd in kube-apiserver kube-controller-manager kubectl; do
  if [[ ! -x "$k8s_dir/$cmd" ]]; then
    echo "building $cmd $k8s_version..." >&2
    mkdir -p "$k8s_dir"
    (cd "$here/tools/k8s" && go build -trimpath -ldflags "$ldflags" -o "$k8s_dir/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$k8s_dir/$cmd.tmp" "$k8s_dir/$cmd"
  fi
done

echo "ETCD_BIN=$etcd_dir/etcd"
echo "K8S_BIN=$k8s_dir"
