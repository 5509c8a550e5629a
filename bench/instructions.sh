#!/usr/bin/env bash
# Instructions per request of the proxy's request path, counted by valgrind (callgrind):
# CI's regression check, deterministic where wall-clock benchmarks on a shared machine are
# not (bench/README.md, "Instructions per request").
#
#   bench/instructions.sh            measure and print
#   bench/instructions.sh --check    measure, compare with bench/instructions-baseline.json:
#                                    exit 1 when the figure grew by more than 10 %
#   bench/instructions.sh --update "why"
#                                    measure and rewrite the baseline, with the reason
#
# How: a fixed upstream and a fixed client (bench/instructions.py, both outside valgrind)
# and routemeter, 1 worker, under `valgrind --tool=callgrind`. One measurement is two proxy
# runs, N1 and N2 requests over one keep-alive connection, one at a time, the same request
# sequence (the second run's first N1 requests are the first run's); each proxy is stopped
# by SIGTERM and callgrind's total of instructions (Ir, every thread) read from its output.
# (Ir(N2) − Ir(N1)) / (N2 − N1) is the cost of one request with start-up, the readiness
# polls and shutdown cancelled out. The figure is the median of INSTR_RUNS measurements.
#
# Knobs (environment): ROUTEMETER_BIN (a built binary; default: `cargo build --release`,
# then target/release/routemeter), INSTR_N1 (200), INSTR_N2 (1200), INSTR_RUNS (3),
# INSTR_TOLERANCE (percent, 10), INSTR_BASELINE (bench/instructions-baseline.json),
# INSTR_KEEP=1 keeps the temporary directory (configs, logs, callgrind outputs).
# INSTR_TARGET (routemeter) measures another engine the same way, for comparison only (no
# --check or --update): bare-pingora or lean-pingora, the examples (bench/bare_pingora.rs,
# bench/lean_pingora.rs; `cargo build --release --example ...`, or ROUTEMETER_BIN naming the
# built example), 1 worker, forwarding to the same upstream, polled ready on its own port.
# INSTR_CONFIG (routemeter only, measure only) adds lines to the proxy's config, to price
# one feature: `INSTR_CONFIG='forwarding: {xForwardedFor: false, xForwardedProto: false,
# xForwardedHost: false}'` is routemeter without its forwarding headers (bench/README.md,
# "Where routemeter's instructions go").
set -euo pipefail

# A relative ROUTEMETER_BIN is the caller's, from before the cd.
if [[ -n ${ROUTEMETER_BIN:-} && $ROUTEMETER_BIN != /* ]]; then ROUTEMETER_BIN=$PWD/$ROUTEMETER_BIN; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N1=${INSTR_N1:-200}
N2=${INSTR_N2:-1200}
RUNS=${INSTR_RUNS:-3}
TOLERANCE=${INSTR_TOLERANCE:-10}
BASELINE=${INSTR_BASELINE:-bench/instructions-baseline.json}
TARGET=${INSTR_TARGET:-routemeter}
HELPER=bench/instructions.py
CYCLE=5 # requests in one cycle of the client's sequence (bench/instructions.py)

log() { printf '[instructions %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
  log "error: $*"
  exit 2
}
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

case $TARGET in
  routemeter | bare-pingora | lean-pingora) ;;
  *) die "INSTR_TARGET=$TARGET: routemeter, bare-pingora or lean-pingora" ;;
esac

MODE=measure
REASON=
case ${1:-} in
  "") ;;
  --check) MODE=check ;;
  --update)
    MODE=update
    REASON=${2:-}
    [[ -n $REASON ]] || die "--update needs the reason the figure moved (make bench-baseline REASON='...'); it goes into the baseline, and the commit must say it too"
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac

[[ $N1 =~ ^[0-9]+$ && $N2 =~ ^[0-9]+$ && $RUNS =~ ^[1-9][0-9]*$ ]] || die "INSTR_N1, INSTR_N2 and INSTR_RUNS must be whole numbers"
((N1 > 0 && N2 > N1)) || die "need 0 < INSTR_N1 < INSTR_N2"
((N1 % CYCLE == 0 && N2 % CYCLE == 0)) || die "INSTR_N1 and INSTR_N2 must be multiples of $CYCLE (one cycle of the client's requests)"
[[ $MODE == measure || $TARGET == routemeter ]] || die "--check and --update are routemeter's (INSTR_TARGET=$TARGET only measures)"
[[ -z ${INSTR_CONFIG:-} || ($MODE == measure && $TARGET == routemeter) ]] || die "INSTR_CONFIG only measures, and only routemeter (the baseline is of the config below)"
command -v valgrind >/dev/null || die "valgrind is missing: bash tests/tools.sh (or apt-get install valgrind)"
command -v python3 >/dev/null || die "python3 is missing"

START=$SECONDS
VALGRIND_VERSION=$(valgrind --version)
# The tree's commit; "-dirty" when it has changes (a baseline is recorded before the commit
# that carries it, so its parent is named).
COMMIT=$(git describe --always --dirty --exclude '*' 2>/dev/null || echo unknown)

if [[ -n ${ROUTEMETER_BIN:-} ]]; then
  BIN=$ROUTEMETER_BIN
  BUILT="ROUTEMETER_BIN=$BIN, modified $(date -u -r "$BIN" '+%F %T' 2>/dev/null || echo '?') UTC"
elif [[ $TARGET == routemeter ]]; then
  log "cargo build --release --bin routemeter"
  cargo build --release --bin routemeter
  BIN="${CARGO_TARGET_DIR:-target}/release/routemeter"
  BUILT="cargo build --release"
else
  log "cargo build --release --example $TARGET"
  cargo build --release --example "$TARGET"
  BIN="${CARGO_TARGET_DIR:-target}/release/examples/$TARGET"
  BUILT="cargo build --release --example $TARGET"
fi
[[ -x $BIN ]] || die "$BIN is not an executable"
# The compiler that built the binary (rustc writes it into .comment), else the one on PATH.
RUSTC_VERSION=$(readelf -p .comment "$BIN" 2>/dev/null | sed -n 's/.*rustc version \(.*[^ ]\) *$/rustc \1/p' | head -n1) || true
[[ -n $RUSTC_VERSION ]] || RUSTC_VERSION=$(rustc --version 2>/dev/null || echo unknown)

# The proxy's config. Nothing in it ticks while requests are measured: the config file is
# polled once an hour and the (literal) upstream address re-resolved once an hour, so the
# proxy's own timers cost the same in a short and a long run and cancel out.
CONFIG_TEMPLATE='listen: 127.0.0.1:@LISTEN@
admin: 127.0.0.1:@ADMIN@
upstream: { endpoints: ["127.0.0.1:@UPSTREAM@"], resolveInterval: 1h }
routes:
  - { path: "/users/{id}", methods: [GET] }
  - { path: "/users", methods: [POST] }
  - { path: "/orders", methods: [GET], pagination: {} }
  - { path: "/static/*" }
autoTemplate: { enabled: true, maxRoutes: 100 }
server: { workers: 1, gracePeriod: 1s, reloadInterval: 1h }'
if [[ -n ${INSTR_CONFIG:-} ]]; then CONFIG_TEMPLATE+=$'\n'$INSTR_CONFIG; fi
# What the figure depends on besides routemeter: the config and the client's requests.
WORKLOAD=$({
  printf '%s\n' "$CONFIG_TEMPLATE"
  cat "$HELPER"
} | sha256sum | cut -c1-16)

W=$(mktemp -d -t routemeter-instructions.XXXXXX)
UPSTREAM_PID=
PROXY_PID=

alive() { # pid -> running (not gone, not a zombie)
  local s
  s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $s && $s != Z* ]]
}

cleanup() {
  local pid
  trap - EXIT INT TERM
  for pid in "$PROXY_PID" "$UPSTREAM_PID"; do
    if [[ -n $pid ]] && alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
  if [[ ${INSTR_KEEP:-0} == 1 ]]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the upstream
python3 "$HELPER" upstream "$W/upstream.port" >"$W/upstream.log" 2>&1 &
UPSTREAM_PID=$!
for _ in $(seq 100); do
  [[ -s $W/upstream.port ]] && break
  alive "$UPSTREAM_PID" || break
  sleep 0.1
done
[[ -s $W/upstream.port ]] || {
  cat "$W/upstream.log" >&2
  die "the upstream did not start"
}
UPSTREAM_PORT=$(<"$W/upstream.port")

# ---------------------------------------------------------------- one proxy run
IR=       # set by proxy_run
RUN_TIME= # seconds, set by proxy_run
proxy_run() { # requests tag -> IR = callgrind's total instructions of a proxy that served them
  local n=$1 tag=$2 listen admin status=0 t0
  t0=$(date +%s%N)
  read -r listen admin < <(python3 "$HELPER" ports 2)
  local config="$W/proxy.$tag.yaml" out="$W/callgrind.$tag.out" logfile="$W/proxy.$tag.log"
  local text=${CONFIG_TEMPLATE//@LISTEN@/$listen}
  text=${text//@ADMIN@/$admin}
  printf '%s\n' "${text//@UPSTREAM@/$UPSTREAM_PORT}" >"$config"

  local cmd=("$BIN" --log-format text proxy --config "$config") ready="http://127.0.0.1:$admin/readyz"
  if [[ $TARGET != routemeter ]]; then
    # The examples have no admin port: ready once a request through them is answered (one
    # request more in each run, which cancels out).
    cmd=("$BIN" "127.0.0.1:$listen" "127.0.0.1:$UPSTREAM_PORT" 1) ready="http://127.0.0.1:$listen/ready"
  fi
  env -u RUST_LOG -u ROUTEMETER_CONFIG -u ROUTEMETER_LOG_FORMAT -u KUBECONFIG -u KUBERNETES_SERVICE_HOST \
    valgrind --tool=callgrind --collect-atstart=yes --dump-instr=no --dump-line=no --vgdb=no \
    --callgrind-out-file="$out" \
    "${cmd[@]}" </dev/null >"$logfile" 2>&1 &
  PROXY_PID=$!
  if ! python3 "$HELPER" wait "$PROXY_PID" "$ready" 180; then
    tail -n 30 "$logfile" >&2
    die "run $tag: the proxy under valgrind did not become ready"
  fi
  if ! python3 "$HELPER" client "$listen" "$n"; then
    tail -n 30 "$logfile" >&2
    die "run $tag: the client's requests did not all get the upstream's answer"
  fi
  kill -TERM "$PROXY_PID"
  for _ in $(seq 1200); do
    alive "$PROXY_PID" || break
    sleep 0.1
  done
  if alive "$PROXY_PID"; then
    tail -n 30 "$logfile" >&2
    die "run $tag: the proxy did not exit within 120 s of SIGTERM"
  fi
  wait "$PROXY_PID" || status=$?
  PROXY_PID=
  if ((status != 0)); then
    tail -n 30 "$logfile" >&2
    die "run $tag: the proxy exited with status $status after SIGTERM"
  fi
  RUN_TIME=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  IR=$(awk '$1 == "totals:" {print $2}' "$out")
  [[ $IR =~ ^[0-9]+$ ]] || die "run $tag: no totals line in $out"
}

# ---------------------------------------------------------------- the measurements
if [[ $TARGET == routemeter ]]; then
  log "routemeter $("$BIN" --version | awk '{print $2}') ($BUILT; tree at $COMMIT); $VALGRIND_VERSION; $RUSTC_VERSION"
else
  log "$TARGET ($BUILT; tree at $COMMIT); $VALGRIND_VERSION; $RUSTC_VERSION"
fi
log "$RUNS measurements of (Ir($N2 requests) - Ir($N1 requests)) / $((N2 - N1))"
FIGURES=()
for r in $(seq "$RUNS"); do
  proxy_run "$N1" "$r-$N1"
  ir1=$IR t1=$RUN_TIME
  proxy_run "$N2" "$r-$N2"
  ir2=$IR t2=$RUN_TIME
  figure=$(((ir2 - ir1 + (N2 - N1) / 2) / (N2 - N1)))
  ((ir2 > ir1)) || die "run $r: $N2 requests cost no more than $N1 ($ir2 <= $ir1 instructions)"
  FIGURES+=("$figure")
  log "run $r: $N1 requests $ir1 Ir (${t1} s), $N2 requests $ir2 Ir (${t2} s): $figure instructions/request"
done

# Median, and the spread (max − min) relative to it.
read -r FIGURE LOW HIGH < <(printf '%s\n' "${FIGURES[@]}" | sort -n | awk '
  { v[NR] = $1 }
  END {
    m = (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2 + 0.5)
    print m, v[1], v[NR]
  }')
SPREAD=$(awk -v lo="$LOW" -v hi="$HIGH" -v m="$FIGURE" 'BEGIN { printf "%.2f", (hi - lo) * 100 / m }')
ELAPSED=$((SECONDS - START))
[[ $TARGET == routemeter ]] || echo "target: $TARGET"
echo "instructions per request: $FIGURE (median of $RUNS; min $LOW, max $HIGH, spread $SPREAD %; N1=$N1, N2=$N2; ${ELAPSED} s)"
if awk -v s="$SPREAD" -v t="$TOLERANCE" 'BEGIN { exit !(s > t / 4) }'; then
  log "warning: the runs differ by $SPREAD %, more than a quarter of the $TOLERANCE % tolerance: the figure is not reproducible enough to judge a change by (INSTR_KEEP=1 keeps the callgrind outputs: callgrind_annotate FILE)"
fi

# ---------------------------------------------------------------- baseline
baseline_field() { # name -> value from the baseline file
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$BASELINE" "$1"
}

case $MODE in
  measure) ;;
  check)
    [[ -f $BASELINE ]] || die "no baseline at $BASELINE: make bench-baseline REASON='first baseline'"
    BASE=$(baseline_field instructions_per_request)
    [[ $BASE =~ ^[0-9]+$ ]] || die "$BASELINE has no instructions_per_request"
    [[ $(baseline_field workload) == "$WORKLOAD" ]] ||
      log "note: the config or bench/instructions.py changed since the baseline (workload $WORKLOAD, baseline's $(baseline_field workload)): the two figures are not of the same requests"
    [[ $(baseline_field rustc) == "$RUSTC_VERSION" ]] ||
      log "note: the baseline was measured with $(baseline_field rustc), this with $RUSTC_VERSION"
    [[ $(baseline_field valgrind) == "$VALGRIND_VERSION" ]] ||
      log "note: the baseline was measured with $(baseline_field valgrind), this with $VALGRIND_VERSION"
    RATIO=$(awk -v f="$FIGURE" -v b="$BASE" 'BEGIN { printf "%.3f", f / b }')
    echo "baseline: $BASE instructions per request ($(baseline_field date), commit $(baseline_field commit): $(baseline_field reason))"
    echo "now: $FIGURE; ratio now/baseline: $RATIO (limit $(awk -v t="$TOLERANCE" 'BEGIN { printf "%.3f", 1 + t / 100 }'))"
    if awk -v f="$FIGURE" -v b="$BASE" -v t="$TOLERANCE" 'BEGIN { exit !(f > b * (1 + t / 100)) }'; then
      echo "FAIL: instructions per request grew by more than $TOLERANCE %. Find what the request path does more (INSTR_KEEP=1, callgrind_annotate on the kept outputs), or, if the change is worth it, run make bench-baseline REASON='...' in the same commit and say why in its message."
      exit 1
    fi
    if awk -v f="$FIGURE" -v b="$BASE" -v t="$TOLERANCE" 'BEGIN { exit !(f < b * (1 - t / 100)) }'; then
      echo "ok, and the figure dropped by more than $TOLERANCE %: record it with make bench-baseline REASON='...' so that a later regression is measured from here."
    else
      echo "ok: within $TOLERANCE % of the baseline"
    fi
    ;;
  update)
    python3 -c '
import json, sys
keys = ["instructions_per_request", "runs", "spread_percent", "n1", "n2", "workload",
        "valgrind", "rustc", "binary", "commit", "date", "reason"]
v = dict(zip(keys, sys.argv[2:]))
for k in ["instructions_per_request", "n1", "n2"]:
    v[k] = int(v[k])
v["runs"] = [int(x) for x in v["runs"].split()]
v["spread_percent"] = float(v["spread_percent"])
with open(sys.argv[1], "w") as f:
    json.dump(v, f, indent=2)
    f.write("\n")
' "$BASELINE" "$FIGURE" "${FIGURES[*]}" "$SPREAD" "$N1" "$N2" "$WORKLOAD" \
      "$VALGRIND_VERSION" "$RUSTC_VERSION" "$BUILT" "$COMMIT" "$(date -u +%F)" "$REASON"
    log "wrote $BASELINE"
    ;;
esac
