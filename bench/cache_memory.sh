#!/usr/bin/env bash
# Does weir's cache stay within its bound? A zone of capacity C in front of an origin with
# many distinct cacheable 64 KiB objects; a working set of 10 x C streamed through it (every
# key once, then a Zipf mix: hits and evictions both), weir's RSS and PSS sampled every
# second. See bench/README.md (cache_memory.sh).
#
#   bash bench/cache_memory.sh                          # 64m and 16m, 60 s each (~2.5 min)
#   BENCH_SECONDS=20 bash bench/cache_memory.sh         # shorter
#   BENCH_MEM_CAPACITIES="64m 16m 128m" bash bench/cache_memory.sh
#   WEIR_BIN=build-other/weir bash bench/cache_memory.sh
#
# Everything listens on 127.0.0.1 on free ports picked at run time; every process this
# script starts is killed by PID on exit (including Ctrl-C); the load is bounded in time
# (BENCH_SECONDS), in requests (BENCH_MEM_MAX_REQUESTS) and by `timeout`; files go only to a
# mktemp directory (removed at exit) and to bench/out/.
#
# Exit status: 0 when the harness worked, whatever the figures (weir's RSS over its bound is
# reported, with evidence, not a failure of the bench); 1 when a capacity could not be
# measured (weir missing, not serving, or the load failed); 2 when a setting is wrong, a
# prerequisite is missing or the origin does not come up.
# shellcheck disable=SC2317
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT_DIR=$HERE/out
LOG_DIR=$OUT_DIR/cache-memory-logs
LIB=$HERE/lib.py
HELPER=$HERE/cache_memory.py

# ------------------------------------------------------------------ settings
DURATION=${BENCH_SECONDS:-60}
CAPACITIES=${BENCH_MEM_CAPACITIES:-"64m 16m"}
MAX_OBJECT=${BENCH_MEM_MAX_OBJECT:-1m}
WORKSET=${BENCH_MEM_WORKSET:-10}
CONNS=${BENCH_CONNECTIONS:-8}
THREADS=${BENCH_WEIR_THREADS:-2}
ZIPF=${BENCH_MEM_ZIPF:-1.0}
MAX_REQUESTS=${BENCH_MEM_MAX_REQUESTS:-5000000}
SLACK=${BENCH_MEM_SLACK_MIB:-32}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}
WEIR_BIN=${WEIR_BIN:-$ROOT/build/weir}
OBJ=65536

BENCH_TAG=cache-memory
# shellcheck source=bench/common.sh
source "$HERE/common.sh"

for v in DURATION WORKSET CONNS THREADS MAX_REQUESTS SLACK READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer (got '${!v}')"
done
for c in $CAPACITIES $MAX_OBJECT; do [[ $c =~ ^[0-9]+[kmg]$ ]] || die "'$c' is not a size (64m, 512k, 1g)"; done
[[ $ZIPF =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_MEM_ZIPF must be a number"

# ------------------------------------------------------------------ prerequisites
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(find_bin python3) || die "python3 not found"; fi
NGINX=${NGINX_BIN:-$(find_bin nginx)} || die "nginx not found (apt-get install nginx-light)"
command -v timeout >/dev/null || die "timeout (coreutils) not found"
[[ -r /proc/self/smaps_rollup ]] || die "/proc/PID/smaps_rollup is not readable (Linux 4.14 or later)"

mkdir -p "$OUT_DIR" "$LOG_DIR" || die "cannot create $OUT_DIR"
rm -f "$LOG_DIR"/*
bench_tmpdir weir-cache-memory

render() { # TEMPLATE OUT KEY=VALUE...
  local tpl=$1 out=$2 kv args=()
  shift 2
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" >"$out"
}
bytes_of() { # SIZE: 64m -> bytes
  local n=${1%[kmg]} u=${1: -1}
  case $u in k) echo $((n << 10)) ;; m) echo $((n << 20)) ;; g) echo $((n << 30)) ;; esac
}
children_cpu_delta() { # TIMES0 TIMES1: growth of reaped children's user+sys seconds
  awk 'function sec(t,  m) { m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t); return m * 60 + t }
       FNR == 2 { v[FILENAME] = sec($1) + sec($2) }
       END { printf "%.2f", v[ARGV[2]] - v[ARGV[1]] }' "$1" "$2"
}

BUSY_BEFORE=$("$PY" "$LIB" busy 1)
if ((BUSY_BEFORE >= 15)); then
  log "warning: the machine is already ${BUSY_BEFORE}% busy before the bench starts (other processes). Top CPU users:"
  ps -eo pid,pcpu,comm --sort=-pcpu | sed -n '2,4p' | sed 's/^/[cache-memory]     /' >&2
fi

# ------------------------------------------------------------------ data + origin
mkdir -p "$TMP/www" "$TMP/origin" "$TMP/logs"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
head -c "$OBJ" /dev/urandom >"$TMP/www/64k.bin"
chmod 755 "$TMP/www" && chmod 644 "$TMP/www"/*.bin
ORIGIN_PORT=$("$PY" "$LIB" ports 1) || die "cannot pick a free port"
render "$HERE/conf/origin-nginx-cache.conf.in" "$TMP/origin/nginx.conf" DIR="$TMP/origin" PORT="$ORIGIN_PORT" WWW="$TMP/www"
start_bg "$TMP/logs/origin.log" "$NGINX" -p "$TMP/origin" -c "$TMP/origin/nginx.conf" -e "$TMP/origin/error.log"
ORIGIN_PID=$LAST_PID
interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$ORIGIN_PORT/obj/64k/probe" "$TMP/www/64k.bin" "$READY_TIMEOUT" "$ORIGIN_PID" ||
  { cat "$TMP/logs/origin.log" "$TMP/origin/error.log" >&2 2>/dev/null; die "the origin nginx did not come up"; }
DESC[$ORIGIN_PID]=$("$PY" "$LIB" tree "$ORIGIN_PID")
log "origin: nginx pid $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT (/obj/64k/* -> a 64 KiB file, max-age=3600)"

# ------------------------------------------------------------------ runs
RC=0
RESULTS=()
OTHER_NOTES=()
log "settings: capacities $CAPACITIES (max_object $MAX_OBJECT), working set ${WORKSET} x C of 64 KiB objects, ${DURATION}s per capacity, $CONNS connections, weir threads $THREADS, Zipf $ZIPF; nothing pinned"
for cap in $CAPACITIES; do
  capb=$(bytes_of "$cap")
  keys=$((WORKSET * capb / OBJ))
  prefix=/obj/64k/c$cap-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')-
  port=$("$PY" "$LIB" ports 1) || die "cannot pick a free port"
  render "$HERE/conf/weir-cache-memory.yaml.in" "$TMP/weir-$cap.yaml" PORT="$port" ORIGIN="$ORIGIN_PORT" \
    THREADS="$THREADS" CAPACITY="$cap" MAX_OBJECT="$MAX_OBJECT"
  cp "$TMP/weir-$cap.yaml" "$LOG_DIR/weir-$cap.yaml"
  if [[ ! -x $WEIR_BIN ]]; then
    log "$cap: SKIPPED: ${WEIR_BIN#"$ROOT"/} not found"
    RC=1
    continue
  fi
  start_bg "$TMP/logs/weir-$cap.log" "$WEIR_BIN" -c "$TMP/weir-$cap.yaml"
  WPID=$LAST_PID
  if ! interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$port${prefix}ready" "$TMP/www/64k.bin" \
      "$READY_TIMEOUT" "$WPID" 2>"$TMP/logs/wait-$cap.err"; then
    log "$cap: FAILED: weir did not serve the object: $(tail -n 1 "$TMP/logs/wait-$cap.err")"
    tail -n 20 "$TMP/logs/weir-$cap.log" >&2
    stop_pid "$WPID"
    RC=1
    continue
  fi
  log "$cap: weir pid $WPID on 127.0.0.1:$port, $keys keys (${WORKSET} x $cap of 64 KiB objects), ${DURATION}s"
  times >"$TMP/times0"; s0=$("$PY" "$LIB" sysbusy)
  c0=$("$PY" "$LIB" cpu "$WPID"); o0=$("$PY" "$LIB" cpu "$ORIGIN_PID"); t0=$(date +%s.%N)
  interruptible timeout -k 5 $((DURATION + 60)) "$PY" "$HELPER" load --port "$port" --pid "$WPID" \
    --prefix "$prefix" --keys "$keys" --size "$OBJ" --body-file "$TMP/www/64k.bin" \
    --seconds "$DURATION" --conns "$CONNS" --zipf "$ZIPF" --max-requests "$MAX_REQUESTS" \
    --capacity "$cap" --out "$LOG_DIR/result-$cap.json" --samples "$LOG_DIR/samples-$cap.tsv" \
    >"$TMP/logs/load-$cap.log" 2>&1
  lrc=$?
  c1=$("$PY" "$LIB" cpu "$WPID"); o1=$("$PY" "$LIB" cpu "$ORIGIN_PID"); t1=$(date +%s.%N)
  s1=$("$PY" "$LIB" sysbusy); times >"$TMP/times1"
  other=$(awk -v s0="$s0" -v s1="$s1" -v c0="$c0" -v c1="$c1" -v o0="$o0" -v o1="$o1" \
    -v k="$(children_cpu_delta "$TMP/times0" "$TMP/times1")" -v t0="$t0" -v t1="$t1" \
    'BEGIN{ x = 100 * ((s1 - s0) - (c1 - c0) - (o1 - o0) - k) / (t1 - t0); printf "%.0f", x < 0 ? 0 : x }')
  cat "$TMP/logs/load-$cap.log" >&2
  log "$cap: weir CPU $(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.1f", b-a}') s, origin $(awk -v a="$o0" -v b="$o1" 'BEGIN{printf "%.1f", b-a}') s, other processes ${other}% of a CPU"
  if ((other > 10)); then
    log "warning: other processes used ${other}% of a CPU during the $cap run: it was disturbed (memory figures hold; rates and the fill time do not)"
  fi
  OTHER_NOTES+=("$cap: other CPU ${other}% of a CPU")
  # Evidence: weir's own view of its memory at the end, whatever the figures.
  { echo "== /proc/$WPID/status"; cat "/proc/$WPID/status"; echo "== /proc/$WPID/smaps_rollup"; cat "/proc/$WPID/smaps_rollup"; } \
    >"$LOG_DIR/proc-$cap.txt" 2>/dev/null
  if ! kill -0 "$WPID" 2>/dev/null; then
    log "$cap: FAILED: weir exited during the run"
    tail -n 20 "$TMP/logs/weir-$cap.log" >&2
    RC=1
  elif [[ $lrc != 0 || ! -s $LOG_DIR/result-$cap.json ]]; then
    log "$cap: FAILED: the load client ended with status $lrc"
    RC=1
  else
    RESULTS+=("$LOG_DIR/result-$cap.json")
  fi
  stop_pid "$WPID"
  cp "$TMP/logs/weir-$cap.log" "$LOG_DIR/" 2>/dev/null
done
sleep 1.5 # the origin's access log is flushed every second
stop_pid "$ORIGIN_PID"
cp "$TMP/origin/access.log" "$LOG_DIR/origin-access.log" 2>/dev/null
BUSY_AFTER=$("$PY" "$LIB" busy 1)

# ------------------------------------------------------------------ report
weir_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain -- src include app 2>/dev/null) ]] && weir_rev+=" (+ uncommitted changes)"
{
  echo "# cache_memory.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- weir: ${WEIR_BIN#"$ROOT"/} (this checkout: $weir_rev), server.threads $THREADS, zone capacity C (max_object $MAX_OBJECT), one cached route"
  echo "- origin: nginx, distinct URLs /obj/64k/<prefix><n> -> one 64 KiB file, Cache-Control: max-age=3600"
  echo "- load: cache_memory.py, $CONNS keep-alive connections, ${DURATION}s per capacity: each of ${WORKSET} x C / 64 KiB keys once, then Zipf($ZIPF) over them"
  echo "- RSS: weir's VmRSS (/proc/PID/status) every second; PSS from smaps_rollup; peak = max(samples, VmHWM); overhead = peak - C - RSS before (after start and a warm-up)"
  echo "- background CPU (other processes): ${BUSY_BEFORE}% of all CPUs before, ${BUSY_AFTER}% after; during: ${OTHER_NOTES[*]:-n/a}"
  echo "- command: BENCH_SECONDS=$DURATION BENCH_MEM_CAPACITIES=\"$CAPACITIES\" BENCH_WEIR_THREADS=$THREADS bash bench/cache_memory.sh"
} >"$TMP/meta.md"
echo
cat "$TMP/meta.md"
echo
if ((${#RESULTS[@]})); then
  "$PY" "$HELPER" report "${RESULTS[@]}" --md "$OUT_DIR/cache_memory.md" --origin-log "$LOG_DIR/origin-access.log" \
    --slack-mib "$SLACK" --meta "$TMP/meta.md" || { log "report failed"; RC=1; }
fi
((BUSY_BEFORE >= 15 || BUSY_AFTER >= 15)) &&
  log "warning: other processes were busy (${BUSY_BEFORE}% of all CPUs before, ${BUSY_AFTER}% after)"
log "written: ${OUT_DIR#"$ROOT"/}/cache_memory.md; samples, results and weir's /proc status in ${LOG_DIR#"$ROOT"/}/"
exit "$RC"
