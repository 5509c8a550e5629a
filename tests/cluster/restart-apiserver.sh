#!/usr/bin/env bash
# Kills the test cluster's kube-apiserver (SIGKILL: a crash, no graceful shutdown) and
# starts it again with the same command line, as a supervisor would, then waits until it
# serves /readyz. The fault tests (tests/operator.rs) use it: clients, the operator's
# watches included, see their connections cut and must find their way back.
#
# Usage: restart-apiserver.sh [DOWN_SECONDS]   (how long it stays down; default 2)
set -euo pipefail
# shellcheck source=tests/cluster/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
down="${1:-2}"
bins
pidfile="$state/kube-apiserver.pid"
pid="$(<"$pidfile")"
[[ -r "/proc/$pid/cmdline" ]] || { echo "restart-apiserver.sh: kube-apiserver (pid $pid) is not running" >&2; exit 1; }
mapfile -d '' -t cmd < "/proc/$pid/cmdline"
# The process's own niceness, not the caller's: a restart from inside `nice cargo test` must
# not leave the API server at nice 10 beside an etcd and a controller manager at 0 (it made
# a later benchmark's figures meaningless).
niceness="$(ps -o ni= -p "$pid" | tr -d ' ')"
kill -KILL "$pid"
while kill -0 "$pid" 2> /dev/null; do sleep 0.1; done
sleep "$down"
# `nice` adjusts relative to this shell's niceness, before the exec (so every thread of the
# new process has it; renice after the start would reach only the first thread).
setsid nohup nice -n "$((niceness - $(nice)))" "${cmd[@]}" >> "$state/logs/kube-apiserver.log" 2>&1 < /dev/null &
echo "$!" > "$pidfile"
started=$SECONDS
until "$kubectl" --kubeconfig "$kubeconfig" get --raw /readyz > /dev/null 2>&1; do
  if ! kill -0 "$(<"$pidfile")" 2> /dev/null; then
    echo "restart-apiserver.sh: kube-apiserver exited; see $state/logs/kube-apiserver.log" >&2
    exit 1
  fi
  if ((SECONDS - started > 90)); then
    echo "restart-apiserver.sh: kube-apiserver not ready after 90 s" >&2
    exit 1
  fi
  sleep 0.5
done
echo "kube-apiserver restarted (down ${down} s, ready $((SECONDS - started)) s after its start)"
