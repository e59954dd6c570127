#!/usr/bin/env bash
# weir, nginx and HAProxy side by side, in one run. See bench/README.md.
#
#   bash bench/run.sh                 # 10 s per measurement (BENCH_SECONDS)
#   BENCH_QUICK=1 bash bench/run.sh   # smoke test: 2 s per measurement, < 90 s in all
#
# Everything listens on 127.0.0.1 on free ports picked at run time; every process this
# script starts is killed by PID on exit (including Ctrl-C); files go only to a mktemp
# directory (removed at exit) and to bench/out/.
#
# Exit status: 0 when the harness worked, whatever the figures (weir failing to build,
# start or serve is reported in the table, not as a failure); 1 when nginx-as-proxy or
# HAProxy could not be measured; 2 when a prerequisite is missing or the origin fails.
# W_* are set by run_wrk with printf -v; cleanup is reached through trap.
# shellcheck disable=SC2154,SC2317
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT_DIR=$HERE/out
LIB=$HERE/lib.py

# ------------------------------------------------------------------ settings
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  DURATION=2
else
  DURATION=${BENCH_SECONDS:-10}
fi
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNECTIONS:-50}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
SIZES=${BENCH_SIZES:-"1k 64k"}
PROXIES=${BENCH_PROXIES:-"weir nginx haproxy"}
WEIR_BIN=${WEIR_BIN:-$ROOT/build/weir}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}

BENCH_TAG=bench
# shellcheck source=bench/common.sh
source "$HERE/common.sh"

for v in DURATION WARMUP CONNS WRK_THREADS READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer (got '${!v}')"
done
for s in $SIZES; do [[ $s == 1k || $s == 64k ]] || die "BENCH_SIZES: unknown size '$s' (1k, 64k)"; done
for p in $PROXIES; do [[ $p =~ ^(weir|nginx|haproxy)$ ]] || die "BENCH_PROXIES: unknown proxy '$p'"; done

# ------------------------------------------------------------------ prerequisites
NGINX=${NGINX_BIN:-$(find_bin nginx)} || die "nginx not found (apt-get install nginx-light)"
HAPROXY=${HAPROXY_BIN:-$(find_bin haproxy)} || die "haproxy not found (apt-get install haproxy)"
WRK=${WRK_BIN:-$(find_bin wrk)} || die "wrk not found (apt-get install wrk)"
PY=$(find_bin python3) || die "python3 not found"
command -v timeout >/dev/null || die "timeout (coreutils) not found"

# CPU placement. Two CPUs: origin + wrk share the first, the proxy under test gets the
# second to itself, so the proxy's CPU figures are not muddied by the load generator.
# BENCH_PIN=0 turns this off; BENCH_LOAD_CPU / BENCH_PROXY_CPU pick other CPUs.
read -r -a CPUS <<<"$("$PY" -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')"
LOAD_PIN=() PROXY_PIN=() PIN_DESC="none"
if [[ ${BENCH_PIN:-1} != 0 ]] && command -v taskset >/dev/null && (( ${#CPUS[@]} >= 2 )); then
  LOAD_CPU=${BENCH_LOAD_CPU:-${CPUS[0]}}
  PROXY_CPU=${BENCH_PROXY_CPU:-${CPUS[1]}}
  LOAD_PIN=(taskset -c "$LOAD_CPU")
  PROXY_PIN=(taskset -c "$PROXY_CPU")
  PIN_DESC="origin + wrk on CPU $LOAD_CPU, proxy on CPU $PROXY_CPU"
elif [[ ${BENCH_PIN:-1} != 0 ]]; then
  log "warning: not pinning (needs taskset and 2 usable CPUs; have ${#CPUS[@]})"
fi

# ------------------------------------------------------------------ temp dir, cleanup
mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
bench_tmpdir weir-bench

# start_bg with the CPU placement: PIN 1 for the proxy under test, 0 for the load side.
pinned_bg() { # LOGFILE PIN(0|1) CMD...
  local logf=$1 pin=$2
  shift 2
  if [[ $pin == 1 ]]; then
    start_bg "$logf" "${PROXY_PIN[@]}" "$@"
  else
    start_bg "$logf" "${LOAD_PIN[@]}" "$@"
  fi
}

render() { # TEMPLATE OUT KEY=VALUE...
  local tpl=$1 out=$2 kv args=()
  shift 2
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" >"$out"
}

# Other load on the box makes every figure below noisy: measure it and say so.
BUSY_BEFORE=$("$PY" "$LIB" busy 1)
if (( BUSY_BEFORE >= 15 )); then
  log "warning: the machine is already ${BUSY_BEFORE}% busy before the bench starts (other processes);"
  log "warning: figures will be noisy and low. Top CPU users now:"
  ps -eo pid,pcpu,comm --sort=-pcpu | sed -n '2,4p' | sed 's/^/[bench]     /' >&2
fi

# ------------------------------------------------------------------ data + origin
mkdir -p "$TMP/www" "$TMP/origin" "$TMP/logs"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
head -c 65536 /dev/urandom >"$TMP/www/64k.bin"
chmod 755 "$TMP/www" && chmod 644 "$TMP/www"/*.bin
declare -A FILE=([1k]=1k.bin [64k]=64k.bin)

mapfile -t PORTS < <("$PY" "$LIB" ports 4) || die "cannot pick free ports"
ORIGIN_PORT=${PORTS[0]}
declare -A PORT=([weir]=${PORTS[1]} [nginx]=${PORTS[2]} [haproxy]=${PORTS[3]})

render "$HERE/conf/origin-nginx.conf.in" "$TMP/origin/nginx.conf" \
  DIR="$TMP/origin" PORT="$ORIGIN_PORT" WWW="$TMP/www"
pinned_bg "$TMP/logs/origin.log" 0 "$NGINX" -p "$TMP/origin" -c "$TMP/origin/nginx.conf" -e "$TMP/origin/error.log"
ORIGIN_PID=$LAST_PID
for s in 1k 64k; do
  interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$ORIGIN_PORT/${FILE[$s]}" "$TMP/www/${FILE[$s]}" "$READY_TIMEOUT" "$ORIGIN_PID" ||
    { cat "$TMP/logs/origin.log" "$TMP/origin/error.log" >&2 2>/dev/null; die "origin nginx did not come up"; }
done
DESC[$ORIGIN_PID]=$("$PY" "$LIB" tree "$ORIGIN_PID")
log "origin nginx pid $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT"

# ------------------------------------------------------------------ proxies
start_proxy() { # NAME: start it pinned; PID in $PROXY_PID; non-zero with $FAIL_NOTE on failure
  local name=$1 port=${PORT[$1]} dir=$TMP/$1 logf=$TMP/logs/$1.log s
  mkdir -p "$dir"
  PROXY_PID="" FAIL_NOTE=""
  case $name in
    weir)
      if [[ ! -x $WEIR_BIN ]]; then
        FAIL_NOTE="${WEIR_BIN#"$ROOT"/} not found (make build)"
        return 3
      fi
      # shellcheck disable=SC2086
      pinned_bg "$logf" 1 "$WEIR_BIN" proxy --listen "127.0.0.1:$port" --to "127.0.0.1:$ORIGIN_PORT" \
        --threads 1 --access-log off ${WEIR_EXTRA_ARGS:-}
      ;;
    nginx)
      render "$HERE/conf/proxy-nginx.conf.in" "$dir/nginx.conf" DIR="$dir" PORT="$port" ORIGIN="$ORIGIN_PORT"
      pinned_bg "$logf" 1 "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
      ;;
    haproxy)
      render "$HERE/conf/haproxy.cfg.in" "$dir/haproxy.cfg" DIR="$dir" PORT="$port" ORIGIN="$ORIGIN_PORT"
      pinned_bg "$logf" 1 "$HAPROXY" -db -f "$dir/haproxy.cfg"
      ;;
  esac
  PROXY_PID=$LAST_PID
  # Listening, and serving both files byte for byte, before any load.
  for s in 1k 64k; do
    if ! interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$port/${FILE[$s]}" "$TMP/www/${FILE[$s]}" \
        "$READY_TIMEOUT" "$PROXY_PID" 2>"$dir/wait.err"; then
      FAIL_NOTE="not serving /${FILE[$s]} correctly: $(tail -n1 "$dir/wait.err")"
      local tail_log
      tail_log=$(tail -n 3 "$logf" 2>/dev/null | tr '\n' ' ')
      [[ -n $tail_log ]] && FAIL_NOTE+="; log: $tail_log"
      stop_pid "$PROXY_PID"
      return 1
    fi
  done
  DESC[$PROXY_PID]=$("$PY" "$LIB" tree "$PROXY_PID")
  return 0
}

run_wrk() { # URL SECONDS OUTFILE: wrk bounded in time; parses WRKRESULT into W_* vars
  local url=$1 secs=$2 outf=$3 line kv
  interruptible timeout -k 5 $((secs + 30)) "${LOAD_PIN[@]}" "$WRK" -t"$WRK_THREADS" -c"$CONNS" \
    -d"${secs}s" --timeout 5s -s "$HERE/report.lua" "$url" </dev/null >"$outf" 2>&1
  local rc=$?
  line=$(grep '^WRKRESULT ' "$outf" | tail -n1)
  [[ $rc == 0 && -n $line ]] || return 1
  for kv in ${line#WRKRESULT }; do printf -v "W_${kv%%=*}" '%s' "${kv#*=}"; done
  return 0
}

RESULTS=$TMP/results.tsv
printf '# %s\n' "scenario proxy status requests duration_s cpu_s origin_cpu_s other_cpu_s rss_after_kib rss_peak_kib err_connect err_read err_write err_timeout err_status bytes p50_us p99_us note" >"$RESULTS"
failrow() { # SCENARIO NAME STATUS NOTE: a row with no figures (15 empty fields)
  row "$1" "$2" "$3" "" "" "" "" "" "" "" "" "" "" "" "" "" "" "" "$4"
}
children_cpu_delta() { # TIMES0 TIMES1: growth of reaped children's user+sys seconds
  awk 'function sec(t,  m) { m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t); return m * 60 + t }
       FNR == 2 { v[FILENAME] = sec($1) + sec($2) }
       END { printf "%.2f", v[ARGV[2]] - v[ARGV[1]] }' "$1" "$2"
}
row() { local IFS=$'\t'; printf '%s\n' "$*" >>"$RESULTS"; }
HARNESS_FAIL=0

measure() { # SCENARIO NAME PORT PID
  local sc=$1 name=$2 port=$3 pid=$4 url c0 c1 o0 o1 s0 s1 other mem
  url="http://127.0.0.1:$port/${FILE[$sc]}"
  if ! run_wrk "$url" "$WARMUP" "$TMP/logs/wrk-$sc-$name-warmup.txt"; then
    MEASURE_NOTE="wrk warm-up failed: $(grep -v '^WRKRESULT' "$TMP/logs/wrk-$sc-$name-warmup.txt" | tail -n1)"
    return 1
  fi
  # CPU of everything else on the box during the run: all CPUs' user+system time, less the
  # proxy's, the origin's, and that of this script's reaped children (wrk and the helpers
  # themselves, from bash's `times`, which must not run in a subshell).
  times >"$TMP/times0"; s0=$("$PY" "$LIB" sysbusy)
  c0=$("$PY" "$LIB" cpu "$pid"); o0=$("$PY" "$LIB" cpu "$ORIGIN_PID")
  if ! run_wrk "$url" "$DURATION" "$TMP/logs/wrk-$sc-$name.txt"; then
    MEASURE_NOTE="wrk failed: $(tail -n1 "$TMP/logs/wrk-$sc-$name.txt")"
    return 1
  fi
  c1=$("$PY" "$LIB" cpu "$pid"); o1=$("$PY" "$LIB" cpu "$ORIGIN_PID")
  s1=$("$PY" "$LIB" sysbusy); times >"$TMP/times1"
  other=$(awk -v s0="$s0" -v s1="$s1" -v c="$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" \
    -v o="$(awk -v a="$o0" -v b="$o1" 'BEGIN{print b-a}')" \
    -v k="$(children_cpu_delta "$TMP/times0" "$TMP/times1")" -v same="$([[ $pid == "$ORIGIN_PID" ]] && echo 1)" \
    'BEGIN{ if (same) c = 0; printf "%.2f", (s1 - s0) - c - o - k }')
  mem=$("$PY" "$LIB" mem "$pid")
  if ! kill -0 "$pid" 2>/dev/null; then
    MEASURE_NOTE="process exited during the run"
    return 1
  fi
  row "$sc" "$name" ok "$W_requests" "$(awk -v u="$W_duration_us" 'BEGIN{printf "%.3f", u/1e6}')" \
    "$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b-a}')" \
    "$(awk -v a="$o0" -v b="$o1" 'BEGIN{printf "%.2f", b-a}')" "$other" \
    "${mem% *}" "${mem#* }" "$W_connect" "$W_read" "$W_write" "$W_timeout" "$W_status" \
    "$W_bytes" "$W_p50_us" "$W_p99_us" ""
  log "$(printf '%-4s %-8s %8.0f req/s  %s CPU %5.2f s  errors %d' "$sc" "$name" \
    "$(awk -v r="$W_requests" -v u="$W_duration_us" 'BEGIN{print r/(u/1e6)}')" "$name" \
    "$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" \
    $((W_connect + W_read + W_write + W_timeout + W_status)))"
  if awk -v o="$other" -v d="$DURATION" 'BEGIN{exit !(o / d > 0.10)}'; then
    log "warning: other processes used $(awk -v o="$other" -v d="$DURATION" 'BEGIN{printf "%.0f", 100*o/d}')% of a CPU during this run: its figures are disturbed"
    NOISY=1
  fi
  return 0
}
NOISY=0

# Header for the Markdown report.
weir_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain -- src include app 2>/dev/null) ]] && weir_rev+=" (+ uncommitted changes)"
cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
{
  echo "# weir bench — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r)"
  echo "- weir: ${WEIR_BIN#"$ROOT"/} at $weir_rev; $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); $("$HAPROXY" -v 2>/dev/null | head -n1 | awk '{print "HAProxy " $3}'); wrk $("$WRK" -v 2>&1 | awk 'NR==1{print $2}')"
  echo "- load: wrk -t$WRK_THREADS -c$CONNS, ${WARMUP} s warm-up then ${DURATION} s measured, keep-alive, GET of a static file of 1 KiB / 64 KiB"
  echo "- placement: $PIN_DESC; each proxy one worker/thread, fresh process per row"
  echo "- background CPU load (other processes) just before the run: ${BUSY_BEFORE}% of all CPUs@AFTER@"
  echo "- command: $( [[ ${BENCH_QUICK:-0} == 1 ]] && echo 'BENCH_QUICK=1 ')BENCH_SECONDS=$DURATION bash bench/run.sh"
  echo
} >"$TMP/meta.md"

# ------------------------------------------------------------------ runs
log "settings: ${DURATION}s runs after ${WARMUP}s warm-up, wrk -t$WRK_THREADS -c$CONNS; $PIN_DESC"
for sc in $SIZES; do
  # Baseline: the origin directly, no proxy.
  if measure "$sc" origin "$ORIGIN_PORT" "$ORIGIN_PID"; then :; else
    failrow "$sc" origin failed "$MEASURE_NOTE"
    log "$sc origin: FAILED: $MEASURE_NOTE"
    HARNESS_FAIL=1
  fi
  for name in $PROXIES; do
    start_proxy "$name"
    st=$?
    if [[ $st != 0 ]]; then
      status=failed
      [[ $st == 3 ]] && status=skipped
      failrow "$sc" "$name" "$status" "$FAIL_NOTE"
      log "$sc $name: ${status^^}: $FAIL_NOTE"
      [[ $name != weir ]] && HARNESS_FAIL=1
      continue
    fi
    if ! measure "$sc" "$name" "${PORT[$name]}" "$PROXY_PID"; then
      failrow "$sc" "$name" failed "$MEASURE_NOTE"
      log "$sc $name: FAILED: $MEASURE_NOTE"
      [[ $name != weir ]] && HARNESS_FAIL=1
    fi
    # nginx spills a proxied response to a temp file when its buffers fill up: say so.
    if [[ $name == nginx ]] && grep -q 'buffered to a temporary file' "$TMP/nginx/error.log" 2>/dev/null; then
      log "note: nginx buffered responses to temp files in the $sc run"
      : >"$TMP/nginx/error.log"
    fi
    stop_pid "$PROXY_PID"
  done
done

# ------------------------------------------------------------------ report
# Our own processes are idle now (the origin too): whatever is busy is someone else.
BUSY_AFTER=$("$PY" "$LIB" busy 1)
sed -i "s|@AFTER@|, just after: ${BUSY_AFTER}%|" "$TMP/meta.md"
(( BUSY_BEFORE >= 15 || BUSY_AFTER >= 15 || NOISY )) &&
  log "warning: other processes were busy (${BUSY_BEFORE}% of all CPUs before, ${BUSY_AFTER}% after; see 'other CPU %'): figures are not trustworthy"
cp "$RESULTS" "$OUT_DIR/latest.tsv"
rm -rf "$OUT_DIR/logs" && cp -r "$TMP/logs" "$OUT_DIR/logs"
echo
"$PY" "$LIB" report "$RESULTS" "$OUT_DIR/latest.md" "$TMP/meta.md" || { log "report failed"; exit 2; }
echo
echo "Markdown: ${OUT_DIR#"$ROOT"/}/latest.md   raw: ${OUT_DIR#"$ROOT"/}/latest.tsv, ${OUT_DIR#"$ROOT"/}/logs/"
if [[ $HARNESS_FAIL != 0 ]]; then
  log "harness failure: a reference proxy (or the baseline) could not be measured; see above"
  exit 1
fi
exit 0
