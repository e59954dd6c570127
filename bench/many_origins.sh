#!/usr/bin/env bash
# Many origins, sparse traffic: how many upstream connections weir, nginx and HAProxy open
# (upstream connection reuse), one after the other in one run. See bench/README.md.
#
#   bash bench/many_origins.sh                 # 3 s warm-up + 20 s measured per proxy (~2 min)
#   BENCH_QUICK=1 bash bench/many_origins.sh   # smoke test: 1 s + 4 s per proxy (~30 s)
#   BENCH_MO_PROTOCOL=h2c bash bench/many_origins.sh   # h2c origins: rows weir-h2c, haproxy-h2c, ...
#
# Each proxy runs 2 workers in front of 200 origins (one Python process, one port each, with
# a 2 s idle keep-alive timeout) and gets the same sparse load: 400 req/s in total over
# 32 client connections, each request to a random origin. Per origin that is a request every
# 0.5 s on average, so a pool both workers share keeps its idle connections warm while a
# pool per worker sees half the traffic and loses more of them to the origin's timeout. The
# origin counts the connections it accepts: the same impartial figure for all three proxies.
# A fourth row, haproxy-unshared, is HAProxy with its pool per thread: a control.
# BENCH_MO_PROTOCOL=h2c runs the same with origins speaking HTTP/2 with prior knowledge (h2c,
# origins.py --h2c; weir protocol: h2c, HAProxy proto h2): rows weir-h2c, haproxy-h2c,
# haproxy-unshared-h2c; nginx cannot proxy to HTTP/2 origins and has no row. both: h1 rows, then h2c.
#
# Everything listens on 127.0.0.1 on free ports picked at run time; every process this
# script starts is killed by PID on exit (including Ctrl-C); every load run is bounded in
# requests and time; files go only to a mktemp directory (removed at exit) and to bench/out/.
#
# Exit status: 0 when the harness worked, whatever the figures (weir missing, failing to start
# or to serve is reported in the table, not as a failure); 1 when nginx or HAProxy (any
# row) could not be measured; 2 when a prerequisite is missing or the origins fail.
# cleanup is reached through trap.
# shellcheck disable=SC2317
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT_DIR=$HERE/out
LIB=$HERE/lib.py
MO=$HERE/many_origins.py

# ------------------------------------------------------------------ settings
# The defaults make the effect visible and keep the run short (see bench/README.md): per
# origin RATE/ORIGINS = 2 req/s, a mean gap of 0.5 s against the origin's 2 s idle timeout.
# If the 32 client connections split evenly, each worker of a per-worker pool sees 1 req/s
# per origin; with gaps close to exponential, a request finds no idle connection (its pool
# saw nothing from that origin for 2 s) about exp(-2 * 2) = 1.8 % of the time when the pool
# is shared, exp(-1 * 2) = 13.5 % when it is per worker: 7x as many connections, with
# 8000 measured requests enough of them to count (~150 vs ~1100). 400 req/s keeps the
# Python origin and load generator far from saturation on 2 CPUs (well under 10 % of a CPU
# each), so the schedule holds; 32 client connections let the kernel spread them over both
# workers. A 2 s idle timeout is short but real (Apache and Node.js default to 5 s).
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  DURATION=4 WARMUP=1
else
  DURATION=${BENCH_SECONDS:-20}
  WARMUP=${BENCH_WARMUP:-3}
fi
ORIGINS=${BENCH_ORIGINS:-200}
RATE=${BENCH_RATE:-400}
IDLE=${BENCH_ORIGIN_IDLE:-2}
CONNS=${BENCH_CONNECTIONS:-32}
BODY=${BENCH_BODY:-256}
SEED=${BENCH_SEED:-1}
REQ_TIMEOUT=5
# haproxy-unshared: HAProxy again with tune.idle-pool.shared off (one pool per thread), a
# control row: the same proxy with and without a pool its threads share.
PROXIES=${BENCH_PROXIES:-"weir nginx haproxy haproxy-unshared"}
# h1: origins speak HTTP/1.1 (rows named as in PROXIES); h2c: HTTP/2 with prior knowledge
# (rows NAME-h2c, no nginx); both: the h1 rows, then the h2c rows.
PROTOCOL=${BENCH_MO_PROTOCOL:-h1}
WEIR_BIN=${WEIR_BIN:-$ROOT/build/weir}
[[ $WEIR_BIN == /* ]] || WEIR_BIN=$PWD/$WEIR_BIN
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}

BENCH_TAG=many-origins
# shellcheck source=bench/common.sh
source "$HERE/common.sh"

# VARIABLE:SETTING pairs, to name the setting in messages.
for v in DURATION:BENCH_SECONDS CONNS:BENCH_CONNECTIONS BODY:BENCH_BODY SEED:BENCH_SEED \
    READY_TIMEOUT:BENCH_READY_TIMEOUT; do
  n=${v%%:*}
  [[ ${!n} =~ ^[0-9]+$ && ${!n} -ge 1 ]] || die "${v#*:} must be a positive integer (got '${!n}')"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "BENCH_WARMUP must be a non-negative integer (got '$WARMUP')"
if [[ ! $ORIGINS =~ ^[0-9]+$ ]] || (( ORIGINS < 1 || ORIGINS > 2000 )); then
  die "BENCH_ORIGINS must be an integer from 1 to 2000 (got '$ORIGINS')"
fi
for v in RATE:BENCH_RATE IDLE:BENCH_ORIGIN_IDLE; do
  n=${v%%:*}
  if [[ ! ${!n} =~ ^[0-9]+(\.[0-9]+)?$ ]] || ! awk -v x="${!n}" 'BEGIN{exit !(x > 0)}'; then
    die "${v#*:} must be a positive number (got '${!n}')"
  fi
done
for p in $PROXIES; do
  [[ $p =~ ^(weir|nginx|haproxy|haproxy-unshared)$ ]] || die "BENCH_PROXIES: unknown proxy '$p'"
done
[[ $PROTOCOL =~ ^(h1|h2c|both)$ ]] || die "BENCH_MO_PROTOCOL must be h1, h2c or both (got '$PROTOCOL')"
# The rows, in order: NAME (HTTP/1.1 origins) or NAME-h2c (h2c origins).
RUNS=() NGINX_H2C_SKIPPED=0
if [[ $PROTOCOL != h2c ]]; then
  for p in $PROXIES; do RUNS+=("$p"); done
fi
if [[ $PROTOCOL != h1 ]]; then
  for p in $PROXIES; do
    if [[ $p == nginx ]]; then NGINX_H2C_SKIPPED=1; else RUNS+=("$p-h2c"); fi
  done
fi

# ------------------------------------------------------------------ prerequisites
NGINX=${NGINX_BIN:-$(find_bin nginx)} || die "nginx not found (apt-get install nginx-light)"
HAPROXY=${HAPROXY_BIN:-$(find_bin haproxy)} || die "haproxy not found (apt-get install haproxy)"
# The system's python3 when there is one: the origins and the load generator are plain
# stdlib asyncio, and a version manager's shim would only add start-up time.
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(find_bin python3) || die "python3 not found"; fi
# The h2c origins need python3-h2 (imported from outside bench/, where h2.py would shadow it).
if [[ $PROTOCOL != h1 ]] && ! (cd / && "$PY" -c 'import h2.connection' 2>/dev/null); then
  die "BENCH_MO_PROTOCOL=$PROTOCOL: the h2c origins need python3-h2 for $PY (apt-get install python3-h2)"
fi
command -v timeout >/dev/null || die "timeout (coreutils) not found"
# 200 origins: the origin process holds one listening socket per origin, and each proxy up
# to a few connections per origin and worker.
(( $(ulimit -n) >= 4 * ORIGINS + 256 )) || ulimit -n $((4 * ORIGINS + 256)) 2>/dev/null ||
  die "open-file limit $(ulimit -n) is too low for $ORIGINS origins (ulimit -n $((4 * ORIGINS + 256)))"

# ------------------------------------------------------------------ temp dir, cleanup
mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
bench_tmpdir weir-many-origins

BUSY_BEFORE=$("$PY" "$LIB" busy 1)

# ------------------------------------------------------------------ origins
# A fresh origin process per proxy: counters start at zero, and no connection left over from
# the previous proxy is in the way. A row NAME-h2c gets h2c origins (--h2c). Sets ORIGIN_PID,
# CONTROL_PORT; exits 2 if it fails.
start_origins() { # NAME
  local dir=$TMP/$1 i h2c=()
  [[ $1 == *-h2c ]] && h2c=(--h2c)
  start_bg "$TMP/logs/origins-$1.log" "$PY" "$HERE/origins.py" --count "$ORIGINS" --idle "$IDLE" \
    --body "$BODY" --ready "$dir/origins.json" --body-file "$TMP/body" "${h2c[@]}"
  ORIGIN_PID=$LAST_PID
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    [[ -s $dir/origins.json ]] && break
    kill -0 "$ORIGIN_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ ! -s $dir/origins.json ]]; then
    cat "$TMP/logs/origins-$1.log" >&2
    die "the origins did not come up"
  fi
  CONTROL_PORT=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["control"])' "$dir/origins.json")
}

# ------------------------------------------------------------------ proxies
start_proxy() { # NAME PORT: start it; PID in $PROXY_PID; non-zero with $FAIL_NOTE on failure
  local name=$1 port=$2 dir=$TMP/$1 logf=$TMP/logs/$1.log i
  PROXY_PID="" FAIL_NOTE=""
  if [[ $name == weir* && ! -x $WEIR_BIN ]]; then
    FAIL_NOTE="${WEIR_BIN#"$ROOT"/} not found (make build)"
    return 3
  fi
  if ! "$PY" "$MO" config "$name" "$dir/origins.json" "$port" "$dir" "$dir/$name.conf"; then
    FAIL_NOTE="could not write its configuration"
    return 1
  fi
  cp "$dir/$name.conf" "$TMP/logs/$name.conf"
  case $name in
    weir*) start_bg "$logf" "$WEIR_BIN" -c "$dir/$name.conf" ;;
    nginx) start_bg "$logf" "$NGINX" -p "$dir" -c "$dir/$name.conf" -e "$dir/error.log" ;;
    haproxy*) start_bg "$logf" "$HAPROXY" -db -f "$dir/$name.conf" ;;
  esac
  PROXY_PID=$LAST_PID
  # Serving the first and the last origin, byte for byte, before any load.
  for i in 0 $((ORIGINS - 1)); do
    if ! interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$port/o/$i/ready" "$TMP/body" \
        "$READY_TIMEOUT" "$PROXY_PID" 2>"$dir/wait.err"; then
      FAIL_NOTE="not serving /o/$i/ correctly: $(tail -n1 "$dir/wait.err")"
      local tail_log
      tail_log=$(tail -n 3 "$logf" "$dir/error.log" 2>/dev/null | grep -v '^==>' | tr '\n' ' ')
      [[ -n $tail_log ]] && FAIL_NOTE+="; log: $tail_log"
      stop_pid "$PROXY_PID"
      return 1
    fi
  done
  DESC[$PROXY_PID]=$("$PY" "$LIB" tree "$PROXY_PID")
  return 0
}

ROWS=$TMP/rows.tsv
printf '# proxy\tstatus\tresult\tnote\n' >"$ROWS"
row() { local IFS=$'\t'; printf '%s\n' "$*" >>"$ROWS"; }
HARNESS_FAIL=0

measure() { # NAME: origins, proxy, load, figures; one row in $ROWS
  local name=$1 dir=$TMP/$1 port st res outf
  mkdir -p "$dir"
  start_origins "$name"
  port=$("$PY" "$LIB" ports 1) || die "cannot pick a free port"
  start_proxy "$name" "$port"
  st=$?
  if [[ $st != 0 ]]; then
    local status=failed
    [[ $st == 3 ]] && status=skipped
    row "$name" "$status" "" "$FAIL_NOTE"
    log "$name: ${status^^}: $FAIL_NOTE"
    [[ $name != weir* ]] && HARNESS_FAIL=1
    stop_pid "$ORIGIN_PID"
    return
  fi
  log "$name pid $PROXY_PID on 127.0.0.1:$port; ${WARMUP} s warm-up, ${DURATION} s measured"
  res=$dir/result.json outf=$TMP/logs/load-$name.txt
  # Bounded: the load generator stops scheduling after warm-up + duration and waits at most
  # REQ_TIMEOUT + 1 s for the last responses; timeout is the backstop.
  interruptible timeout -k 5 $((WARMUP + DURATION + REQ_TIMEOUT + 60)) "$PY" "$HERE/sparse_load.py" \
    --port "$port" --control "$CONTROL_PORT" --origins "$ORIGINS" --rate "$RATE" \
    --seconds "$DURATION" --warmup "$WARMUP" --connections "$CONNS" --timeout "$REQ_TIMEOUT" \
    --body "$BODY" --seed "$SEED" --proxy-pid "$PROXY_PID" --out "$res" </dev/null >"$outf" 2>&1
  st=$?
  if [[ $st != 0 || ! -s $res ]]; then
    row "$name" failed "" "load generator failed (exit $st): $(tail -n1 "$outf")"
    log "$name: FAILED: load generator exit $st: $(tail -n1 "$outf")"
    [[ $name != weir* ]] && HARNESS_FAIL=1
  elif ! kill -0 "$PROXY_PID" 2>/dev/null; then
    row "$name" failed "" "process exited during the run: $(tail -n 2 "$TMP/logs/$name.log" | tr '\n' ' ')"
    log "$name: FAILED: process exited during the run"
    [[ $name != weir* ]] && HARNESS_FAIL=1
  else
    cp "$res" "$TMP/logs/result-$name.json"
    row "$name" ok "$TMP/logs/result-$name.json" ""
    log "$name: $(tail -n1 "$outf" | sed 's/^sparse_load: //')"
  fi
  stop_pid "$PROXY_PID"
  stop_pid "$ORIGIN_PID"
  [[ -f $dir/error.log ]] && cp "$dir/error.log" "$TMP/logs/$name-error.log"
}

# Header for the Markdown report.
weir_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $WEIR_BIN != "$ROOT"/* ]]; then
  weir_rev="? (a binary outside this checkout, which is at $weir_rev)"
elif [[ -n $(git -C "$ROOT" status --porcelain -- src include app 2>/dev/null) ]]; then
  weir_rev+=" (+ uncommitted changes)"
fi
cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
model=$(awk -v r="$RATE" -v n="$ORIGINS" -v t="$IDLE" \
  'BEGIN{l = r / n; printf "shared by both workers %.1f %%, one pool per worker %.1f %%", 100 * exp(-l * t), 100 * exp(-l / 2 * t)}')
mkdir -p "$TMP/logs"
{
  echo "# weir many-origins bench — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r)"
  echo "- weir: ${WEIR_BIN#"$ROOT"/} at $weir_rev; $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); $("$HAPROXY" -v 2>/dev/null | head -n1 | awk '{print "HAProxy " $3}'); Python $("$PY" -c 'import platform; print(platform.python_version())')"
  echo "- origins: $ORIGINS ports in one Python asyncio process (origins.py), $BODY-byte responses with Content-Length, keep-alive closed by the origin after ${IDLE} s idle; a fresh process per proxy"
  echo "- proxies: 2 workers each (weir threads: 2, defaults otherwise; nginx worker_processes 2, keepalive 16 per upstream, listen reuseport; HAProxy nbthread 2, http-reuse always; haproxy-unshared: the same with tune.idle-pool.shared off), one upstream per origin, routed by path prefix /o/<i>/; unpinned"
  echo "- load: sparse_load.py, $CONNS keep-alive client connections, $RATE req/s in total at fixed intervals, each to a random origin (seed $SEED): $(awk -v r="$RATE" -v n="$ORIGINS" 'BEGIN{printf "%.2g req/s per origin", r / n}'); ${WARMUP} s warm-up then ${DURATION} s measured"
  echo "- expected share of requests that open a connection (Poisson model, client connections split evenly): $model"
  if [[ $PROTOCOL != h1 ]]; then
    echo "- h2c variant (rows *-h2c): the origins speak HTTP/2 with prior knowledge (origins.py --h2c, python3-h2 $(cd / && "$PY" -c 'import h2; print(h2.__version__)'), SETTINGS_MAX_CONCURRENT_STREAMS 100; a connection with no open stream for ${IDLE} s gets a GOAWAY and is closed); weir upstreams \`protocol: h2c\`, HAProxy \`server ... proto h2\` (http-reuse always); clients still speak HTTP/1.1 to the proxies; **nginx cannot proxy to HTTP/2 origins: no nginx row in this variant**"
  fi
  echo "- background CPU load (other processes) just before the run: ${BUSY_BEFORE}% of all CPUs@AFTER@"
  echo "- command: $( [[ ${BENCH_QUICK:-0} == 1 ]] && echo 'BENCH_QUICK=1 ')$( [[ $PROTOCOL != h1 ]] && echo "BENCH_MO_PROTOCOL=$PROTOCOL ")BENCH_SECONDS=$DURATION BENCH_WARMUP=$WARMUP BENCH_ORIGINS=$ORIGINS BENCH_RATE=$RATE BENCH_ORIGIN_IDLE=$IDLE bash bench/many_origins.sh"
  echo
  echo "Upstream connections are counted by the origins (connections accepted during the measured part); requests per connection and the reused share (1 − connections / requests) use the requests the origins served. Latency is from the time each request was due."
  echo
} >"$TMP/meta.md"

# ------------------------------------------------------------------ runs
log "settings: $ORIGINS origins (idle timeout ${IDLE} s), $RATE req/s over $CONNS connections, ${WARMUP} s + ${DURATION} s per proxy"
[[ $PROTOCOL != h1 ]] && log "origins: $([[ $PROTOCOL == both ]] && echo 'HTTP/1.1, then ')h2c; rows: ${RUNS[*]}"
NGINX_H2C_NOTE="nginx: no h2c row: nginx cannot proxy to HTTP/2 origins"
(( NGINX_H2C_SKIPPED )) && log "$NGINX_H2C_NOTE"
(( BUSY_BEFORE >= 15 )) &&
  log "note: the machine is already ${BUSY_BEFORE}% busy (other processes); connection counts barely depend on it, latency does"
for name in "${RUNS[@]}"; do
  measure "$name"
done

# ------------------------------------------------------------------ report
BUSY_AFTER=$("$PY" "$LIB" busy 1)
sed -i "s|@AFTER@|, just after: ${BUSY_AFTER}%|" "$TMP/meta.md"
echo
"$PY" "$MO" report "$ROWS" "$OUT_DIR/many-origins.md" "$TMP/meta.md" || { log "report failed"; exit 2; }
(( NGINX_H2C_SKIPPED )) && { echo; echo "$NGINX_H2C_NOTE"; }
rm -rf "$OUT_DIR/many-origins-logs" && cp -r "$TMP/logs" "$OUT_DIR/many-origins-logs"
sed "s|$TMP/logs/|$OUT_DIR/many-origins-logs/|" "$ROWS" >"$OUT_DIR/many-origins.tsv"
echo
echo "Markdown: ${OUT_DIR#"$ROOT"/}/many-origins.md   raw: ${OUT_DIR#"$ROOT"/}/many-origins-logs/result-*.json, logs and configurations in the same folder"
if [[ $HARNESS_FAIL != 0 ]]; then
  log "harness failure: nginx or HAProxy could not be measured; see above"
  exit 1
fi
exit 0
