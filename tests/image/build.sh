#!/usr/bin/env bash
# Builds the project's images as OCI archives, with no Docker daemon and no base image:
#
#   target/images/routemeter.tar  docker.io/routemeter/routemeter:<Cargo.toml version>
#   target/images/sample-api.tar  docker.io/routemeter/sample-api:dev
#   target/images/pause.tar       docker.io/routemeter/pause:3.10   (the CRI sandbox image)
# and, only when named (`monitoring` names all three), Prometheus 3 and the Prometheus
# Operator at the releases tests/cluster/tools/prometheus{,-operator} pin:
#   target/images/prometheus.tar                  docker.io/routemeter/prometheus:v3.MM.P
#   target/images/prometheus-operator.tar         docker.io/routemeter/prometheus-operator:<version>
#   target/images/prometheus-config-reloader.tar  docker.io/routemeter/prometheus-config-reloader:<version>
#
# Usage: tests/image/build.sh [routemeter|sample-api|pause|prometheus|prometheus-operator|prometheus-config-reloader|monitoring]... [--load | --load-if-up]
#   No names: routemeter, sample-api, pause. --load imports each archive into the node's containerd
#   (namespace k8s.io, where kubelet looks), which `make cluster-up` must have started;
#   --load-if-up loads when the node is up and otherwise only builds, and says so.
#
# The routemeter image is made from target/release/routemeter (`cargo build --release
# --bin routemeter` first); the Go and C programs are built here, each cached under
# target/images/build by a hash of its sources and compiler; Prometheus and the operator
# by tests/cluster/build-monitoring.sh, cached by version. The same inputs give
# byte-identical archives (tests/image/oci.py). See tests/image/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cluster/env.sh
source "$here/../cluster/env.sh" # root, state, and Go on PATH
out="$root/target/images"
work="$out/build"

usage() {
  sed -n 's/^# \{0,1\}//; /^Usage:/,/^$/p' "${BASH_SOURCE[0]}" | sed '/^$/d' >&2
  exit 2
}
die() {
  echo "tests/image/build.sh: $*" >&2
  exit 1
}

load=0
images=()
for arg in "$@"; do
  case "$arg" in
    --load) load=1 ;;
    --load-if-up) load=2 ;;
    routemeter | sample-api | pause) images+=("$arg") ;;
    prometheus | prometheus-operator | prometheus-config-reloader) images+=("$arg") ;;
    monitoring) images+=(prometheus prometheus-operator prometheus-config-reloader) ;;
    -h | --help) usage ;;
    *) echo "tests/image/build.sh: unknown argument '$arg'" >&2; usage ;;
  esac
done
((${#images[@]})) || images=(routemeter sample-api pause)

sock=""
not_loaded=""
if ((load)); then
  # containerd_sock: set by tests/cluster/env.sh.
  sock="${containerd_sock:-$state/node/containerd.sock}"
  if [[ ! -S "$sock" ]]; then
    ((load == 2)) || die "the node is not up: no containerd socket at $sock (run \`make cluster-up\`)"
    not_loaded="Built, not loaded: the node is not up (no $sock); \`make cluster-up\` starts it."
    load=0
  fi
fi
if ((load)); then
  command -v ctr >/dev/null || die "ctr not found (Debian package containerd)"
fi
mkdir -p "$work"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)"
[[ -n "$version" ]] || die "no version in Cargo.toml"

# The accounts of the non-root images: the chart and the operator's pods run as 65532.
passwd=$'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n'
group=$'root:x:0:\nnonroot:x:65532:\n'
# The monitoring images run as nobody (65534), as their upstream images do.
passwd_nobody=$'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n'
group_nobody=$'root:x:0:\nnobody:x:65534:\n'
# What the Prometheus image runs with no other configuration (the upstream image's
# default): itself as its only target. The operator's pods mount their own.
prometheus_yml=$'global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ["localhost:9090"]\n'
# glibc without nsswitch.conf asks DNS first and reads /etc/hosts only when DNS is
# unreachable: hostAliases and `localhost` upstreams would not resolve.
nsswitch=$'hosts: files dns\n'

# Sets PROMETHEUS_BIN and PROM_OPERATOR_BIN (env.sh), building the binaries once.
monitoring_bins_once() {
  [[ -n "${PROMETHEUS_BIN:-}" ]] && return 0
  monitoring_bins || die "building Prometheus and the Prometheus Operator failed (tests/cluster/build-monitoring.sh)"
}

# Prints the path of the sample API's static binary, building it when its sources or the
# Go toolchain changed.
build_sample_api() {
  command -v go >/dev/null || die "go not found: install Go to build the sample API"
  local src="$root/tests/sample-api" key bin
  local files=(go.mod go.sum) f
  for f in "$src"/*.go; do
    [[ "$f" == *_test.go ]] || files+=("${f##*/}")
  done
  key="$( (go version; cd "$src" && sha256sum "${files[@]}") | sha256sum | cut -c1-16)"
  bin="$work/sample-api-$key"
  if [[ ! -x "$bin" ]]; then
    echo "building sample-api ($(go version | cut -d' ' -f3))" >&2
    (cd "$src" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOFLAGS="-mod=readonly -buildvcs=false" \
      GOTOOLCHAIN=local go build -trimpath -ldflags '-s -w' -o "$bin.tmp" .)
    mv "$bin.tmp" "$bin"
  fi
  echo "$bin"
}

build_pause() {
  command -v gcc >/dev/null || die "gcc not found (Debian packages gcc and libc6-dev)"
  local src="$here/pause/pause.c" key bin
  key="$( (gcc --version | head -n 1; sha256sum < "$src") | sha256sum | cut -c1-16)"
  bin="$work/pause-$key"
  if [[ ! -x "$bin" ]]; then
    echo "building pause" >&2
    gcc -static -Os -s -Wall -Wextra -Werror -o "$bin.tmp" "$src" \
      || die "static build of pause.c failed (is libc6-dev, with libc.a, installed?)"
    mv "$bin.tmp" "$bin"
  fi
  echo "$bin"
}

# Sets `libs` to the `--add` arguments for the shared libraries and the ELF loader that
# binary $1 needs, at the paths `ldd` gives (symlinks followed: the image holds regular
# files there). None for a static binary.
ldd_libs() {
  local listing line path
  libs=()
  if ! listing="$(ldd "$1" 2>&1)"; then
    [[ "$listing" == *"not a dynamic executable"* ]] && return 0
    die "ldd $1 failed: $listing"
  fi
  while read -r line; do
    case "$line" in
      *"not found"*) die "$1 needs a library that is not on this machine: $line" ;;
      *"=> /"*) path="${line#*=> }" ;;
      /*) path="$line" ;;
      *) continue ;; # linux-vdso.so.1: the kernel's
    esac
    path="${path%% (*}"
    [[ -f "$path" ]] || die "ldd listed $path, which does not exist"
    libs+=(--add "$(readlink -f "$path"):$path")
  done <<<"$listing"
}

# image SHORT NAME OCI-ARGS...: writes target/images/SHORT.tar, prints what it built,
# and loads it when asked.
image() {
  local name="$2" tar="$out/$1.tar" digest size
  shift 2
  digest="$(python3 "$here/oci.py" --name "$name" --out "$tar" "$@")"
  size="$(stat -c %s "$tar")"
  printf '%-40s %-30s %6s KiB  %s\n' "$name" "${tar#"$root"/}" "$((size / 1024))" "$digest"
  if ((load)); then
    ctr --address "$sock" -n k8s.io images import "$tar" >&2 \
      || die "importing $tar into the node's containerd ($sock) failed"
  fi
}

for img in "${images[@]}"; do
  case "$img" in
    routemeter)
      bin="$root/target/release/routemeter"
      [[ -x "$bin" ]] || die "$bin is missing: run \`cargo build --release --bin routemeter\` first"
      ldd_libs "$bin"
      image routemeter "docker.io/routemeter/routemeter:$version" \
        --entrypoint /routemeter --user 65532:65532 \
        --env MIMALLOC_ALLOW_THP=0 \
        --add "$bin:/routemeter:0755" "${libs[@]}" \
        --file "/etc/passwd=$passwd" --file "/etc/group=$group" \
        --file "/etc/nsswitch.conf=$nsswitch" --mkdir /tmp:1777
      ;;
    sample-api)
      bin="$(build_sample_api)"
      image sample-api docker.io/routemeter/sample-api:dev \
        --entrypoint /sample-api --user 65532:65532 \
        --add "$bin:/sample-api:0755"
      ;;
    pause)
      bin="$(build_pause)"
      # 65535: the user the upstream pause image runs as.
      image pause docker.io/routemeter/pause:3.10 \
        --entrypoint /pause --user 65535:65535 \
        --add "$bin:/pause:0755"
      ;;
    prometheus)
      monitoring_bins_once
      # As the upstream image: /bin/prometheus and /bin/promtool, a default configuration,
      # the data in /prometheus (the working directory), user nobody. No owners in these
      # layers (oci.py writes 0:0), so /prometheus is writable by all, as an emptyDir is;
      # the operator's pods mount an emptyDir there anyway, and their configuration under
      # /etc/prometheus. No web UI assets (build-monitoring.sh): the API works.
      image prometheus "$prometheus_image" \
        --entrypoint /bin/prometheus \
        --cmd=--config.file=/etc/prometheus/prometheus.yml --cmd=--storage.tsdb.path=/prometheus \
        --user 65534:65534 --workdir /prometheus \
        --add "$PROMETHEUS_BIN/prometheus:/bin/prometheus:0755" \
        --add "$PROMETHEUS_BIN/promtool:/bin/promtool:0755" \
        --file "/etc/prometheus/prometheus.yml=$prometheus_yml" \
        --file "/etc/passwd=$passwd_nobody" --file "/etc/group=$group_nobody" \
        --mkdir /prometheus:0777
      ;;
    prometheus-operator)
      monitoring_bins_once
      image prometheus-operator "$prom_operator_image" \
        --entrypoint /bin/operator --user 65534:65534 \
        --add "$PROM_OPERATOR_BIN/operator:/bin/operator:0755" \
        --file "/etc/passwd=$passwd_nobody" --file "/etc/group=$group_nobody"
      ;;
    prometheus-config-reloader)
      monitoring_bins_once
      image prometheus-config-reloader "$prom_config_reloader_image" \
        --entrypoint /bin/prometheus-config-reloader --user 65534:65534 \
        --add "$PROM_OPERATOR_BIN/prometheus-config-reloader:/bin/prometheus-config-reloader:0755" \
        --file "/etc/passwd=$passwd_nobody" --file "/etc/group=$group_nobody"
      ;;
  esac
done
[[ -z "$not_loaded" ]] || echo "$not_loaded"
