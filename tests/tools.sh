#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, when missing: cmake (pingora's
# zlib-ng), openssl (test certificates), prometheus (promtool and the server for the
# rules' end-to-end checks), python3-yaml (tests/chart.sh reads the rendered chart),
# python3-venv (the demo's Locust), shellcheck (make lint), chromium-headless-shell (tests/page.rs renders the admin
# page in it; a full chromium does as well), valgrind (bench/instructions.sh, CI's
# instructions-per-request check), and the node's: containerd (with ctr), runc, the CNI
# plugins, iptables, conntrack (kube-proxy), iproute2. Go-built tools are built by the
# scripts that use them.
set -euo pipefail
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v openssl >/dev/null || missing+=(openssl)
command -v promtool >/dev/null || missing+=(prometheus)
python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || missing+=(chromium-headless-shell)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null || missing+=(iptables)
command -v conntrack >/dev/null || missing+=(conntrack)
command -v ip >/dev/null || missing+=(iproute2)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Go 1.24+ builds the control plane (tests/cluster/build.sh); Debian bookworm's is too old.
command -v go >/dev/null || { echo "Go 1.24 or later is required (the control plane is built from Go modules)" >&2; exit 1; }
# The Debian prometheus package starts a server on :9090 on install; tests start their own.
if systemctl is-active --quiet prometheus 2>/dev/null; then systemctl stop prometheus || true; fi
promtool --version 2>&1 | head -1
