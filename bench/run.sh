#!/usr/bin/env bash
# `make bench`: one run, on this machine, over loopback only.
#
#   1. installs nginx, haproxy and wrk (Debian packages) when missing, prints their versions;
#   2. builds the release binary (cargo skips it when up to date);
#   3. starts one upstream for every target: nginx, 1 worker, `return 200 "ok\n"`;
#   4. starts routemeter (2 workers), nginx as a reverse proxy (2 workers, keepalive pool)
#      and haproxy (2 threads, http-reuse always) in front of it, on free ports, configs in
#      a temporary directory; everything is stopped on exit;
#   5. wrk against direct / routemeter / nginx / haproxy: throughput at 64 connections, then
#      latency at light load (4 connections, each pausing between requests);
#   6. routemeter's RSS: idle, after load, and in a second proxy with 1,000 routes in use;
#   7. prints one markdown report, with the targets from the issue.
#
# Knobs (environment): BENCH_DURATION (s, default 10), BENCH_WARMUP (s, 2),
# BENCH_THREADS (2), BENCH_CONNECTIONS (64), BENCH_LIGHT_CONNECTIONS (4),
# BENCH_LIGHT_PAUSE_MS (1; 0 = plain closed loop), BENCH_PATH (/users/42),
# BENCH_KEEP=1 keeps the temporary directory, BENCH_STRICT=1 exits 1 when a target is missed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin:/sbin"

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-64}
LIGHT_CONNS=${BENCH_LIGHT_CONNECTIONS:-4}
LIGHT_PAUSE_MS=${BENCH_LIGHT_PAUSE_MS:-1}
REQ_PATH=${BENCH_PATH:-/users/42}
ROUTES_BIG=1000

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- 1. packages
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}: run as root, or apt-get install them first"
  log "installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's nginx and haproxy packages start their system service on install; this
  # benchmark runs its own instances, so stop the ones the install just started.
  for p in "${missing[@]}"; do
    case $p in
      nginx | haproxy)
        if command -v service >/dev/null 2>&1; then service "$p" stop >/dev/null 2>&1 || true; fi
        ;;
    esac
  done
fi

pkg_version() { # binary -> "package version"
  local file pkg
  file=$(readlink -f "$(command -v "$1")")
  pkg=$(dpkg -S "$file" 2>/dev/null | head -n1 | cut -d: -f1) || true
  if [[ -n $pkg ]]; then
    printf '%s %s' "$pkg" "$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || echo '?')"
  else
    printf 'not from a Debian package (%s)' "$file"
  fi
}
NGINX_VERSION="$(nginx -v 2>&1 | sed 's/^nginx version: //') ($(pkg_version nginx))"
HAPROXY_VERSION="$(haproxy -v 2>/dev/null | head -n1 | awk '{print $3}') ($(pkg_version haproxy))"
WRK_VERSION="$( (wrk -v 2>&1 || true) | awk 'NR == 1 {print $2}') ($(pkg_version wrk))"
log "nginx $NGINX_VERSION; haproxy $HAPROXY_VERSION; wrk $WRK_VERSION"

# ---------------------------------------------------------------- 2. build
log "cargo build --release --bin routemeter"
cargo build --release --bin routemeter
BIN="${CARGO_TARGET_DIR:-target}/release/routemeter"
[[ -x $BIN ]] || die "$BIN was not built"
RM_VERSION="$("$BIN" --version | awk '{print $2}')"
RM_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then RM_COMMIT+="-dirty"; fi

# ---------------------------------------------------------------- processes and cleanup
W=$(mktemp -d -t routemeter-bench.XXXXXX)
chmod 755 "$W" # nginx workers run as an unprivileged user
PIDS=()        # "pid:signal:name"

alive() { # pid -> running (not gone, not a zombie)
  local s
  s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $s && $s != Z* ]]
}

cleanup() {
  local entry pid sig name
  trap - EXIT INT TERM
  for entry in "${PIDS[@]}"; do
    IFS=: read -r pid sig name <<<"$entry"
    if alive "$pid"; then kill -"$sig" "$pid" 2>/dev/null || true; fi
  done
  for _ in $(seq 50); do
    local any=0
    for entry in "${PIDS[@]}"; do
      IFS=: read -r pid sig name <<<"$entry"
      if alive "$pid"; then any=1; fi
    done
    ((any)) || break
    sleep 0.1
  done
  for entry in "${PIDS[@]}"; do
    IFS=: read -r pid sig name <<<"$entry"
    if alive "$pid"; then
      log "$name ($pid) did not stop; killing it"
      pkill -KILL -P "$pid" 2>/dev/null || true # its own workers, by parent id
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # name signal log cmd... -> runs cmd in the background, remembered for cleanup
  local name=$1 sig=$2 logfile=$3
  shift 3
  "$@" >"$logfile" 2>&1 &
  PIDS+=("$!:$sig:$name")
  LAST_PID=$!
}

TAKEN=" "
free_port() { # a loopback TCP port nothing uses (in any state) and not handed out yet
  local p
  for _ in $(seq 200); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    [[ $TAKEN == *" $p "* ]] && continue
    if command -v ss >/dev/null 2>&1; then
      ss -Htan "sport = :$p" 2>/dev/null | grep -q . && continue
    elif (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      continue
    fi
    TAKEN+="$p "
    echo "$p"
    return 0
  done
  die "no free port found"
}

wait_http() { # name pid url -> waits (10 s at most) for a 200 answer
  local name=$1 pid=$2 url=$3
  for _ in $(seq 100); do
    alive "$pid" || break
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not answer on $url; its log:"
  cat "$W/$name.log" >&2 || true
  die "$name did not start"
}

check_body() { # name url -> the proxied answer is the upstream's
  local body
  body=$(curl -fsS --max-time 2 "$2") || die "$1: GET $2 failed"
  [[ $body == ok ]] || die "$1: GET $2 answered '$body', not the upstream's 'ok'"
}

rss_bytes() { # admin-address pid -> process_resident_memory_bytes (VmRSS if /metrics fails)
  local v
  v=$(curl -fsS --max-time 2 "http://$1/metrics" 2>/dev/null |
    awk '$1 == "process_resident_memory_bytes" {printf "%.0f", $2}') || true
  if [[ -z $v ]]; then v=$(awk '/^VmRSS:/ {printf "%.0f", $2 * 1024}' "/proc/$2/status"); fi
  echo "$v"
}
mb() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1e6}'; }

# ---------------------------------------------------------------- 3. upstream
P_UP=$(free_port)
P_RM=$(free_port)
P_RM_ADMIN=$(free_port)
P_NGX=$(free_port)
P_HAP=$(free_port)
P_BIG=$(free_port)
P_BIG_ADMIN=$(free_port)

nginx_common() { # dir -> lines every nginx config here shares
  cat <<EOF
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() { # dir
  cat <<EOF
  access_log off;
  keepalive_timeout 120s;
  keepalive_requests 10000000;
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
EOF
}

mkdir -p "$W/upstream/tmp" "$W/nginx/tmp" "$W/haproxy"
{
  echo "worker_processes 1;"
  nginx_common "$W/upstream"
  echo "http {"
  nginx_http_common "$W/upstream"
  cat <<EOF
  server {
    listen 127.0.0.1:$P_UP backlog=4096;
    location / {
      default_type text/plain;
      return 200 "ok\n";
    }
  }
}
EOF
} >"$W/upstream/nginx.conf"
start upstream TERM "$W/upstream.log" \
  nginx -p "$W/upstream/" -c "$W/upstream/nginx.conf" -e "$W/upstream/error.log" -g 'daemon off;'
UP_PID=$LAST_PID
wait_http upstream "$UP_PID" "http://127.0.0.1:$P_UP$REQ_PATH"
check_body upstream "http://127.0.0.1:$P_UP$REQ_PATH"

# ---------------------------------------------------------------- 4. the proxies
cat >"$W/routemeter.yaml" <<EOF
listen: 127.0.0.1:$P_RM
admin: 127.0.0.1:$P_RM_ADMIN
upstream:
  endpoints: ["127.0.0.1:$P_UP"]
routes:
  - path: /users/{id}
    methods: [GET]
  - path: /users/{id}/orders
    methods: [GET]
  - path: /orders/{id}
  - path: /static/*
  - path: /healthz
server:
  workers: 2
  gracePeriod: 1s
EOF
start routemeter INT "$W/routemeter.log" "$BIN" proxy --config "$W/routemeter.yaml"
RM_PID=$LAST_PID
wait_http routemeter "$RM_PID" "http://127.0.0.1:$P_RM_ADMIN/readyz"
sleep 1
RSS_IDLE=$(rss_bytes "127.0.0.1:$P_RM_ADMIN" "$RM_PID") # before any proxied request

{
  echo "worker_processes 2;"
  nginx_common "$W/nginx"
  echo "http {"
  nginx_http_common "$W/nginx"
  cat <<EOF
  upstream backend {
    server 127.0.0.1:$P_UP;
    keepalive 64;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:$P_NGX backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$W/nginx/nginx.conf"
start nginx TERM "$W/nginx.log" \
  nginx -p "$W/nginx/" -c "$W/nginx/nginx.conf" -e "$W/nginx/error.log" -g 'daemon off;'
NGX_PID=$LAST_PID

cat >"$W/haproxy/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4096

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  http-reuse always

frontend bench
  bind 127.0.0.1:$P_HAP
  default_backend upstream

backend upstream
  server up 127.0.0.1:$P_UP
EOF
start haproxy TERM "$W/haproxy.log" haproxy -db -f "$W/haproxy/haproxy.cfg"
HAP_PID=$LAST_PID

# Stopped on exit with TERM (nginx: its master stops its workers; haproxy) or INT
# (routemeter: fast shutdown).
declare -A URL=(
  [direct]="http://127.0.0.1:$P_UP$REQ_PATH"
  [routemeter]="http://127.0.0.1:$P_RM$REQ_PATH"
  [nginx]="http://127.0.0.1:$P_NGX$REQ_PATH"
  [haproxy]="http://127.0.0.1:$P_HAP$REQ_PATH"
)
declare -A PID_OF=([direct]=$UP_PID [routemeter]=$RM_PID [nginx]=$NGX_PID [haproxy]=$HAP_PID)
TARGETS=(direct routemeter nginx haproxy)
for t in "${TARGETS[@]}"; do
  wait_http "$t" "${PID_OF[$t]}" "${URL[$t]}"
  check_body "$t" "${URL[$t]}"
done
log "ports: upstream $P_UP, routemeter $P_RM (admin $P_RM_ADMIN), nginx $P_NGX, haproxy $P_HAP"

# ---------------------------------------------------------------- 5. load
run_wrk() { # out threads conns seconds url [script]
  local out=$1 t=$2 c=$3 d=$4 url=$5 script=${6:-}
  local args=(-t"$t" -c"$c" -d"${d}s" --latency --timeout 2s)
  if [[ -n $script ]]; then args+=(-s "$script"); fi
  if ! timeout $((d + 30)) wrk "${args[@]}" "$url" >"$out" 2>&1; then
    cat "$out" >&2
    die "wrk failed against $url"
  fi
}

parse_wrk() { # wrk output -> "req/s p50-ms p99-ms errors requests"
  awk '
    function ms(v,  n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n / 1000
      if (u == "ms") return n
      if (u == "s") return n * 1000
      if (u == "m") return n * 60000
      return -1
    }
    /Latency Distribution/ { dist = 1; next }
    dist && $1 == "50%" { p50 = ms($2) }
    dist && $1 == "99%" { p99 = ms($2); dist = 0 }
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { requests = $1 }
    /Non-2xx or 3xx responses:/ { errors += $NF }
    /Socket errors:/ { for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) errors += $i + 0 }
    END {
      if (rps == "" || p99 == "") exit 1
      printf "%s %s %s %d %d\n", rps, p50, p99, errors, requests
    }' "$1"
}

cpu_busy_pct() { # share of all CPUs' time not idle during the next second
  local a b
  a=$(head -n1 /proc/stat)
  sleep 1
  b=$(head -n1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    for (i = 2; i <= 9; i++) total += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])
    printf "%.0f", (total > 0 ? 100 * (total - idle) / total : 0)
  }'
}
cpu_ticks() { # pid -> user+system clock ticks of it and its children (nginx's workers)
  local p sum=0 v
  for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
CLK_TCK=$(getconf CLK_TCK)

BUSY_BEFORE=$(cpu_busy_pct)
log "CPU busy before the load (other processes, 1 s sample): $BUSY_BEFORE %"
if ((BUSY_BEFORE > 20)); then log "warning: something else is using the CPU; the numbers will be noisy"; fi

declare -A RPS P50 P99 ERR REQS CPU_US LRPS LP50 LP99 LERR
for t in "${TARGETS[@]}"; do
  log "throughput: $t (${WARMUP}s warm-up, then wrk -t$THREADS -c$CONNS -d${DURATION}s)"
  run_wrk "$W/warm-$t.txt" "$THREADS" "$CONNS" "$WARMUP" "${URL[$t]}"
  ticks0=$(cpu_ticks "${PID_OF[$t]}")
  run_wrk "$W/wrk-$t.txt" "$THREADS" "$CONNS" "$DURATION" "${URL[$t]}"
  ticks1=$(cpu_ticks "${PID_OF[$t]}")
  read -r "RPS[$t]" "P50[$t]" "P99[$t]" "ERR[$t]" "REQS[$t]" < <(parse_wrk "$W/wrk-$t.txt") ||
    die "cannot read wrk's output for $t: $(cat "$W/wrk-$t.txt")"
  CPU_US[$t]=$(awk -v d=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="${REQS[$t]}" \
    'BEGIN {printf "%.1f", (n > 0 ? d / hz * 1e6 / n : 0)}')
done

LIGHT_SCRIPT=""
if ((LIGHT_PAUSE_MS > 0)); then
  LIGHT_SCRIPT="$W/pause.lua"
  # wrk calls delay() after each response: the connection waits that many ms before its
  # next request. wrk starts the latency clock when the request is sent, after the pause.
  printf 'function delay()\n  return %d\nend\n' "$LIGHT_PAUSE_MS" >"$LIGHT_SCRIPT"
fi
for t in "${TARGETS[@]}"; do
  log "light load: $t (1s warm-up, then wrk -t1 -c$LIGHT_CONNS -d${DURATION}s, pause ${LIGHT_PAUSE_MS} ms)"
  run_wrk "$W/lwarm-$t.txt" 1 "$LIGHT_CONNS" 1 "${URL[$t]}" "$LIGHT_SCRIPT"
  run_wrk "$W/light-$t.txt" 1 "$LIGHT_CONNS" "$DURATION" "${URL[$t]}" "$LIGHT_SCRIPT"
  read -r "LRPS[$t]" "LP50[$t]" "LP99[$t]" "LERR[$t]" _ < <(parse_wrk "$W/light-$t.txt") ||
    die "cannot read wrk's output for $t: $(cat "$W/light-$t.txt")"
done

# ---------------------------------------------------------------- 6. memory
RSS_LOADED=$(rss_bytes "127.0.0.1:$P_RM_ADMIN" "$RM_PID")

{
  cat <<EOF
listen: 127.0.0.1:$P_BIG
admin: 127.0.0.1:$P_BIG_ADMIN
upstream:
  endpoints: ["127.0.0.1:$P_UP"]
server:
  workers: 2
  gracePeriod: 1s
routes:
EOF
  for ((i = 0; i < ROUTES_BIG; i++)); do
    printf '  - path: /svc%d/items/{id}\n    methods: [GET]\n' "$i"
  done
} >"$W/routemeter-1000.yaml"
start routemeter-1000 INT "$W/routemeter-1000.log" "$BIN" proxy --config "$W/routemeter-1000.yaml"
BIG_PID=$LAST_PID
wait_http routemeter-1000 "$BIG_PID" "http://127.0.0.1:$P_BIG_ADMIN/readyz"
sleep 1
RSS_BIG_IDLE=$(rss_bytes "127.0.0.1:$P_BIG_ADMIN" "$BIG_PID")
check_body routemeter-1000 "http://127.0.0.1:$P_BIG/svc7/items/1"

cat >"$W/cycle.lua" <<EOF
-- Cycles over the $ROUTES_BIG declared routes: /svc0/items/0, /svc1/items/1, ...
local n = 0
function request()
  local path = "/svc" .. (n % $ROUTES_BIG) .. "/items/" .. n
  n = n + 1
  return wrk.format("GET", path)
end
EOF
BIG_SECONDS=5
log "1,000 routes: wrk -t$THREADS -c16 -d${BIG_SECONDS}s cycling over /svc{0..999}/items/{id}"
run_wrk "$W/wrk-1000.txt" "$THREADS" 16 "$BIG_SECONDS" "http://127.0.0.1:$P_BIG/" "$W/cycle.lua"
read -r BIG_RPS _ _ BIG_ERR _ < <(parse_wrk "$W/wrk-1000.txt") || die "cannot read wrk's output (1,000 routes)"
sleep 1
RSS_BIG=$(rss_bytes "127.0.0.1:$P_BIG_ADMIN" "$BIG_PID")
BIG_SEEN=$(curl -fsS --max-time 5 "http://127.0.0.1:$P_BIG_ADMIN/metrics" |
  grep '^http_server_request_duration_seconds_count{' |
  grep -o 'http_route="/svc[0-9]*/items/{id}"' | sort -u | wc -l) || BIG_SEEN=0

for t in "${TARGETS[@]}"; do alive "${PID_OF[$t]}" || die "$t exited during the run"; done

# ---------------------------------------------------------------- 7. report
f0() { awk -v x="$1" 'BEGIN {printf "%.0f", x}'; }
f2() { awk -v x="$1" 'BEGIN {printf "%.2f", x}'; }
f3() { awk -v x="$1" 'BEGIN {printf "%.3f", x}'; }
diff3() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.3f", a - b}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", (b > 0 ? 100 * a / b : 0)}'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a + 0 < b + 0)}'; }
ge() { ! lt "$1" "$2"; }
big_ok() { lt "$RSS_BIG" 100e6 && ((BIG_SEEN == ROUTES_BIG)); }
verdict() { if "$@"; then echo PASS; else echo MISS; fi; }

declare -A LABEL=(
  [direct]="direct (upstream nginx, 1 worker, no proxy)"
  [routemeter]="routemeter $RM_VERSION ($RM_COMMIT), 2 workers"
  [nginx]="nginx proxy, 2 workers, keepalive 64"
  [haproxy]="haproxy, nbthread 2, http-reuse always"
)
ADDED_P99=$(diff3 "${LP99[routemeter]}" "${LP99[direct]}")
V_THROUGHPUT=$(verdict ge "${RPS[routemeter]}" "${RPS[nginx]}")
V_LATENCY=$(verdict lt "$ADDED_P99" 1)
V_IDLE=$(verdict lt "$RSS_IDLE" 30e6)
V_BIG=$(verdict big_ok)
MISSED=0
[[ "$V_THROUGHPUT $V_LATENCY $V_IDLE $V_BIG" != *MISS* ]] || MISSED=1
if ((LIGHT_PAUSE_MS > 0)); then
  LIGHT_DESC="wrk -t1 -c$LIGHT_CONNS -d${DURATION}s, each connection pausing ${LIGHT_PAUSE_MS} ms after every response (closed loop; not a constant-rate test)"
else
  LIGHT_DESC="wrk -t1 -c$LIGHT_CONNS -d${DURATION}s, no pause (closed loop; not a constant-rate test)"
fi

REPORT=$(
  echo "## routemeter benchmark"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), shared by wrk, the upstream and the proxy under test; loopback only; CPU busy with other processes just before the load: $BUSY_BEFORE %."
  echo "nginx $NGINX_VERSION; haproxy $HAPROXY_VERSION; wrk $WRK_VERSION."
  echo
  echo "Throughput: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, GET $REQ_PATH (2-byte body), after a ${WARMUP} s warm-up; closed loop, so p50/p99 are latencies at saturation. CPU = user+system time of the target's processes (the upstream's for direct, the proxy's alone otherwise) per request."
  echo
  echo "| target | req/s | p50 (ms) | p99 (ms) | errors | CPU (µs/req) |"
  echo "|---|---:|---:|---:|---:|---:|"
  for t in "${TARGETS[@]}"; do
    echo "| ${LABEL[$t]} | $(f0 "${RPS[$t]}") | $(f2 "${P50[$t]}") | $(f2 "${P99[$t]}") | ${ERR[$t]} | ${CPU_US[$t]} |"
  done
  echo
  echo "Latency at light load: $LIGHT_DESC. routemeter's light-load rate is $(pct "${LRPS[routemeter]}" "${RPS[routemeter]}") % of its throughput above."
  echo
  for t in "${TARGETS[@]}"; do
    line="- $t: $(f0 "${LRPS[$t]}") req/s, p50 $(f3 "${LP50[$t]}") ms, p99 $(f3 "${LP99[$t]}") ms"
    if [[ $t != direct ]]; then
      line+="; added over direct: p50 $(diff3 "${LP50[$t]}" "${LP50[direct]}") ms, p99 $(diff3 "${LP99[$t]}" "${LP99[direct]}") ms"
    fi
    [[ ${LERR[$t]} == 0 ]] || line+="; ${LERR[$t]} errors"
    echo "$line"
  done
  echo
  echo "routemeter memory (process_resident_memory_bytes; 1 MB = 10^6 bytes):"
  echo
  echo "- idle, after start, before any request: $(mb "$RSS_IDLE") MB"
  echo "- after the load above: $(mb "$RSS_LOADED") MB"
  echo "- second proxy with $ROUTES_BIG routes: $(mb "$RSS_BIG_IDLE") MB after start; $(mb "$RSS_BIG") MB after ${BIG_SECONDS} s of wrk cycling over all of them ($(f0 "$BIG_RPS") req/s, $BIG_ERR errors; $BIG_SEEN distinct routes in /metrics)"
  echo
  echo "Targets (issue) in this run:"
  echo
  echo "- throughput ≥ nginx's: routemeter $(f0 "${RPS[routemeter]}") vs nginx $(f0 "${RPS[nginx]}") req/s ($(pct "${RPS[routemeter]}" "${RPS[nginx]}") %): $V_THROUGHPUT"
  echo "- p99 added over direct < 1 ms at light load: $ADDED_P99 ms: $V_LATENCY"
  echo "- RSS < 30 MB idle: $(mb "$RSS_IDLE") MB: $V_IDLE"
  echo "- RSS < 100 MB with $ROUTES_BIG routes in use: $(mb "$RSS_BIG") MB ($BIG_SEEN of $ROUTES_BIG routes seen): $V_BIG"
)
echo "$REPORT"

if [[ ${BENCH_STRICT:-0} == 1 ]] && ((MISSED)); then exit 1; fi
