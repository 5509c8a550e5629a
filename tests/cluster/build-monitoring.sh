#!/usr/bin/env bash
# Builds Prometheus 3 (prometheus, promtool) and the Prometheus Operator (operator,
# prometheus-config-reloader) from the Go modules pinned in tools/prometheus and
# tools/prometheus-operator, into a cache keyed by version, like build.sh does for the
# control plane:
#   ${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/bin/prometheus-v3.MM.P/{prometheus,promtool}
#   ${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/bin/prometheus-operator-<version>/{operator,prometheus-config-reloader}
# Only the first run pays the build; later runs find the binaries and return at once.
# Go's module and build caches stay in their defaults (or GOMODCACHE/GOCACHE if set).
#
# Prints exactly two lines on stdout, meant for eval:
#   PROMETHEUS_BIN=<directory of prometheus and promtool>
#   PROM_OPERATOR_BIN=<directory of operator and prometheus-config-reloader>
# With --if-built it prints nothing, and builds nothing, when a binary is missing.
# Progress and errors go to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The versions are the ones the wrapper modules require: go.mod is the only place to
# change them (tools/pin.sh --prometheus / --prometheus-operator rewrites it and go.sum).
prom_module_version="$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" {print $3}' "$here/tools/prometheus/go.mod")"
operator_version="$(awk '$1 == "require" && $2 == "github.com/prometheus-operator/prometheus-operator" {print $3}' "$here/tools/prometheus-operator/go.mod")"
# Prometheus 3.MM.P is the Go module version v0.3MM.P.
if [[ ! "$operator_version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] \
  || [[ ! "$prom_module_version" =~ ^v0\.3([0-9]{2})\.([0-9]+)$ ]]; then
  echo "build-monitoring.sh: cannot read the pinned versions from $here/tools/prometheus{,-operator}/go.mod" >&2
  exit 1
fi
prom_version="3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]}"
cache="${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/bin"
prom_dir="$cache/prometheus-v$prom_version"
operator_dir="$cache/prometheus-operator-$operator_version"
prom_cmds=(prometheus promtool)
operator_cmds=(operator prometheus-config-reloader)

missing_in() { # DIR CMD...: prints the commands not built in DIR
  local dir="$1" cmd
  shift
  for cmd in "$@"; do [[ -x "$dir/$cmd" ]] || echo "$cmd"; done
}
built() {
  [[ -z "$(missing_in "$prom_dir" "${prom_cmds[@]}")$(missing_in "$operator_dir" "${operator_cmds[@]}")" ]]
}
report() {
  echo "PROMETHEUS_BIN=$prom_dir"
  echo "PROM_OPERATOR_BIN=$operator_dir"
}

# The fast path: no Go toolchain needed once the binaries are cached.
if built; then
  report
  exit 0
fi
if [[ "${1:-}" == --if-built ]]; then
  exit 0
fi

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  PATH="/usr/local/go/bin:$PATH"
fi
# The newest `go` line of the two wrapper modules is the oldest Go that can build them.
need="$(awk '$1 == "go" {print $2}' "$here/tools/prometheus/go.mod" "$here/tools/prometheus-operator/go.mod" | sort -V | tail -n 1)"
have="$(go env GOVERSION 2>/dev/null || true)"
have="${have#go}"
if [[ -z "$have" || "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]]; then
  echo "build-monitoring.sh: Go $need or later is needed to build Prometheus and its operator; found: ${have:-none}" >&2
  exit 1
fi

# One build at a time per cache (its own lock: build.sh's builds other things, and Go's
# build cache is safe to share between the two).
mkdir -p "$cache"
exec 9>"$cache/.build-monitoring.lock"
flock 9
if built; then
  report
  exit 0
fi

# As build.sh: static, the pinned go.mod and go.sum are the truth, no VCS stamping of
# this repository into a build of released modules, the installed Go only.
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath" GOTOOLCHAIN=local

# What `--version` and /api/v1/status/buildinfo report (github.com/prometheus/common's
# version package, as the upstream Makefiles set it). There is no git checkout of a
# module, so the revision is the module version that was built.
build_date="$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y%m%d-%H:%M:%S)"
version_ldflags() { # VERSION REVISION
  local pkg=github.com/prometheus/common/version
  echo "-s -w -X $pkg.Version=$1 -X $pkg.Revision=$2 -X $pkg.Branch=HEAD -X $pkg.BuildUser=routemeter@build-monitoring.sh -X $pkg.BuildDate=$build_date"
}

start=$SECONDS
tmp=""
trap '[[ -z "$tmp" ]] || rm -rf "$tmp"' EXIT

# build MODULE-DIR BIN-DIR PACKAGE-PREFIX LDFLAGS TAGS CMD...: one go build for the
# missing commands (they share most packages); each binary is moved into place only
# when complete, so an interrupted build never leaves one a later run takes as built.
build() {
  local module="$1" dir="$2" prefix="$3" ldflags="$4" tags="$5" cmd
  shift 5
  local pkgs=()
  for cmd in "$@"; do pkgs+=("$prefix/$cmd"); done
  mkdir -p "$dir"
  tmp="$(mktemp -d "$dir/.build.XXXXXX")"
  (cd "$here/tools/$module" && go build ${tags:+-tags "$tags"} -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  for cmd in "$@"; do mv "$tmp/$cmd" "$dir/$cmd"; done
  rmdir "$tmp"
  tmp=""
}

mapfile -t missing < <(missing_in "$prom_dir" "${prom_cmds[@]}")
if ((${#missing[@]})); then
  # Service discovery: `remove_all_sd` leaves out every optional SD plugin (plugins/*.go)
  # and `enable_kubernetes_sd` puts back the one the operator's generated configuration
  # uses (kubernetes_sd_configs, for ServiceMonitors, PodMonitors, Probes and the
  # Alertmanager endpoints); static_configs, file and http SD are always built in. The
  # cloud SDKs the others pull in are most of the build. No `builtinassets`: a module
  # holds no generated web UI assets; the HTTP API works without them, the UI pages do not.
  # `netgo`, as upstream: the pure-Go resolver (CGO_ENABLED=0 implies it anyway).
  echo "building ${missing[*]} $prom_version ($prom_module_version, tests/cluster/tools/prometheus)..." >&2
  build prometheus "$prom_dir" github.com/prometheus/prometheus/cmd \
    "$(version_ldflags "$prom_version" "$prom_module_version")" \
    "netgo,remove_all_sd,enable_kubernetes_sd" "${missing[@]}"
fi

mapfile -t missing < <(missing_in "$operator_dir" "${operator_cmds[@]}")
if ((${#missing[@]})); then
  # The operator names the config-reloader image it defaults to after its own version
  # (quay.io/.../prometheus-config-reloader:v<Version>) and reports it: its Makefile sets
  # Version from the VERSION file, without the v.
  echo "building ${missing[*]} $operator_version (tests/cluster/tools/prometheus-operator)..." >&2
  build prometheus-operator "$operator_dir" github.com/prometheus-operator/prometheus-operator/cmd \
    "$(version_ldflags "${operator_version#v}" "$operator_version")" "" "${missing[@]}"
fi
echo "Prometheus and Prometheus Operator binaries built in $((SECONDS - start)) s" >&2
report
