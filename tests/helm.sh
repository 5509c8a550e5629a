#!/usr/bin/env bash
# Prints the path of the pinned helm, building it from its Go module on first use into
# ${ROUTEMETER_CACHE:-~/.cache/routemeter}/bin/helm-<version>/ (about a minute on 2 cores
# with a warm module cache). Progress goes to stderr; stdout is the path alone, so
# callers write helm="$(bash tests/helm.sh)".
set -euo pipefail
helm_version=v3.21.4
# Kubernetes minor version of the client-go that helm v3.21.4 is built with: helm's own
# release build stamps it (and its version) at link time, and `go install` must too, or
# helm takes the cluster for Kubernetes 1.20 and refuses the chart's kubeVersion.
helm_k8s_minor=36
helm_dir="${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/bin/helm-$helm_version"
if [[ ! -x "$helm_dir/helm" ]]; then
  command -v go > /dev/null || PATH="/usr/local/go/bin:$PATH"
  echo "building helm $helm_version into $helm_dir" >&2
  mkdir -p "$helm_dir"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
  for pkg in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$helm_k8s_minor"
  done
  CGO_ENABLED=0 GOBIN="$helm_dir" GOTOOLCHAIN=local go install -trimpath -ldflags "$ldflags" \
    "helm.sh/helm/v3/cmd/helm@$helm_version" >&2
fi
echo "$helm_dir/helm"
