#!/usr/bin/env bash
# What a cache hit costs: CPU-seconds per 100k hits of one 1 KiB object through weir's cache,
# nginx's proxy_cache and Varnish, the same wrk load in one run. See bench/README.md
# (cache_hitpath.sh).
#
#   bash bench/cache_hitpath.sh                    # 2 s warm-up + 10 s measured per row (~1 min)
#   BENCH_SECONDS=30 bash bench/cache_hitpath.sh   # longer runs
#   BENCH_QUICK=1 bash bench/cache_hitpath.sh      # smoke test: 2 s measured
#   WEIR_BIN=build-other/weir bash bench/cache_hitpath.sh
#
# Rows: weir, nginx and Varnish, each a fresh process pinned to its own CPU (the origin and
# wrk share the other, as in run.sh), in front of the same origin nginx. Per proxy: one GET
# stores the object (and a second shows the cache header says hit), wrk warms up, then the
# measured run on that one URL; the proxy's CPU (utime + stime of all its processes, /proc),
# its RSS, and the origin's count of requests for the URL (from its access log: 1 means every
# request of the warm-up and the run was a hit).
#
# Everything listens on 127.0.0.1 on free ports picked at run time; every process this
# script starts is killed by PID on exit (including Ctrl-C); every wrk run is bounded with
# `timeout`; files go only to a mktemp directory (removed at exit) and to bench/out/.
#
# Exit status: 0 when the harness worked, whatever the figures (weir missing, not serving or
# failing is reported in its row); 1 when nginx or Varnish could not be measured;
# 2 when a setting is wrong, a prerequisite is missing or the origin does not come up.
# W_* are set by run_wrk with printf -v; cleanup is reached through trap.
# shellcheck disable=SC2154,SC2317
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT_DIR=$HERE/out
LOG_DIR=$OUT_DIR/cache-hitpath-logs
LIB=$HERE/lib.py
HELPER=$HERE/cache_hitpath.py

# ------------------------------------------------------------------ settings
if [[ ${BENCH_QUICK:-0} == 1 ]]; then DURATION=2; else DURATION=${BENCH_SECONDS:-10}; fi
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNECTIONS:-50}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
PROXIES=${BENCH_PROXIES:-"weir nginx varnish"}
WEIR_THREADS=${BENCH_WEIR_THREADS:-1}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}
WEIR_BIN=${WEIR_BIN:-$ROOT/build/weir}

BENCH_TAG=cache-hitpath
# shellcheck source=bench/common.sh
source "$HERE/common.sh"

for v in DURATION WARMUP CONNS WRK_THREADS WEIR_THREADS READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer (got '${!v}')"
done
for p in $PROXIES; do [[ $p =~ ^(weir|nginx|varnish)$ ]] || die "BENCH_PROXIES: unknown proxy '$p' (weir, nginx, varnish)"; done

# ------------------------------------------------------------------ prerequisites
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(find_bin python3) || die "python3 not found"; fi
NGINX=${NGINX_BIN:-$(find_bin nginx)} || die "nginx not found (apt-get install nginx-light)"
WRK=${WRK_BIN:-$(find_bin wrk)} || die "wrk not found (apt-get install wrk)"
command -v timeout >/dev/null || die "timeout (coreutils) not found"
VARNISHD="" VARNISHSTAT=""
if [[ " $PROXIES " == *" varnish "* ]]; then
  VARNISHD=${VARNISHD_BIN:-$(find_bin varnishd)} || die "varnishd not found (apt-get install varnish)"
  VARNISHSTAT=$(find_bin varnishstat) || VARNISHSTAT=""
fi
NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited || $NOFILE -gt 4096 ]] && NOFILE=4096
ulimit -n "$NOFILE" 2>/dev/null || true

# CPU placement as in run.sh: origin + wrk on the first CPU, the proxy alone on the second.
read -r -a CPUS <<<"$("$PY" -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')"
LOAD_PIN=() PROXY_PIN=() PIN_DESC="none"
if [[ ${BENCH_PIN:-1} != 0 ]] && command -v taskset >/dev/null && ((${#CPUS[@]} >= 2)); then
  LOAD_CPU=${BENCH_LOAD_CPU:-${CPUS[0]}}
  PROXY_CPU=${BENCH_PROXY_CPU:-${CPUS[1]}}
  LOAD_PIN=(taskset -c "$LOAD_CPU")
  PROXY_PIN=(taskset -c "$PROXY_CPU")
  PIN_DESC="origin + wrk on CPU $LOAD_CPU, proxy on CPU $PROXY_CPU"
elif [[ ${BENCH_PIN:-1} != 0 ]]; then
  log "warning: not pinning (needs taskset and 2 usable CPUs; have ${#CPUS[@]})"
fi

mkdir -p "$OUT_DIR" "$LOG_DIR" || die "cannot create $OUT_DIR"
rm -f "$LOG_DIR"/*
bench_tmpdir weir-cache-hitpath

pinned_bg() { # LOGFILE PIN(0|1) CMD...
  local logf=$1 pin=$2
  shift 2
  if [[ $pin == 1 ]]; then start_bg "$logf" "${PROXY_PIN[@]}" "$@"; else start_bg "$logf" "${LOAD_PIN[@]}" "$@"; fi
}
render() { # TEMPLATE OUT KEY=VALUE...
  local tpl=$1 out=$2 kv args=()
  shift 2
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" >"$out"
}
children_cpu_delta() { # TIMES0 TIMES1: growth of reaped children's user+sys seconds
  awk 'function sec(t,  m) { m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t); return m * 60 + t }
       FNR == 2 { v[FILENAME] = sec($1) + sec($2) }
       END { printf "%.2f", v[ARGV[2]] - v[ARGV[1]] }' "$1" "$2"
}

BUSY_BEFORE=$("$PY" "$LIB" busy 1)
if ((BUSY_BEFORE >= 15)); then
  log "warning: the machine is already ${BUSY_BEFORE}% busy before the bench starts (other processes); figures will be noisy. Top CPU users:"
  ps -eo pid,pcpu,comm --sort=-pcpu | sed -n '2,4p' | sed 's/^/[cache-hitpath]     /' >&2
fi

# ------------------------------------------------------------------ data + origin
mkdir -p "$TMP/www" "$TMP/origin" "$TMP/logs"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
head -c 65536 /dev/urandom >"$TMP/www/64k.bin"
chmod 755 "$TMP/www" && chmod 644 "$TMP/www"/*.bin
mapfile -t PORTS < <("$PY" "$LIB" ports 4) || die "cannot pick free ports"
ORIGIN_PORT=${PORTS[0]}
declare -A PORT=([weir]=${PORTS[1]} [nginx]=${PORTS[2]} [varnish]=${PORTS[3]})
render "$HERE/conf/origin-nginx-cache.conf.in" "$TMP/origin/nginx.conf" DIR="$TMP/origin" PORT="$ORIGIN_PORT" WWW="$TMP/www"
pinned_bg "$TMP/logs/origin.log" 0 "$NGINX" -p "$TMP/origin" -c "$TMP/origin/nginx.conf" -e "$TMP/origin/error.log"
ORIGIN_PID=$LAST_PID
interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$ORIGIN_PORT/obj/1k/probe" "$TMP/www/1k.bin" "$READY_TIMEOUT" "$ORIGIN_PID" ||
  { cat "$TMP/logs/origin.log" "$TMP/origin/error.log" >&2 2>/dev/null; die "the origin nginx did not come up"; }
DESC[$ORIGIN_PID]=$("$PY" "$LIB" tree "$ORIGIN_PID")
log "origin: nginx pid $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT (/obj/1k/* -> a 1 KiB file, max-age=3600)"

origin_fetches() { # URI: requests the origin logged for URI (its log is flushed every second)
  sleep 1.2
  grep -c -x -F -- "$1" "$TMP/origin/access.log" 2>/dev/null || echo 0
}

# ------------------------------------------------------------------ proxies
start_proxy() { # NAME: PROXY_PID; non-zero with FAIL_NOTE
  local name=$1 port=${PORT[$1]} dir=$TMP/$1 logf=$TMP/logs/$1.log
  mkdir -p "$dir"
  PROXY_PID="" FAIL_NOTE=""
  case $name in
    weir)
      if [[ ! -x $WEIR_BIN ]]; then
        FAIL_NOTE="${WEIR_BIN#"$ROOT"/} not found"
        return 3
      fi
      render "$HERE/conf/weir-cache-hitpath.yaml.in" "$dir/weir.yaml" PORT="$port" ORIGIN="$ORIGIN_PORT" THREADS="$WEIR_THREADS"
      cp "$dir/weir.yaml" "$LOG_DIR/weir.yaml"
      pinned_bg "$logf" 1 "$WEIR_BIN" -c "$dir/weir.yaml"
      ;;
    nginx)
      render "$HERE/conf/nginx-cache.conf.in" "$dir/nginx.conf" DIR="$dir" PORT="$port" ORIGIN="$ORIGIN_PORT" \
        WORKERS=1 NOFILE="$NOFILE" CONNS=$((NOFILE - 64))
      cp "$dir/nginx.conf" "$LOG_DIR/nginx.conf"
      pinned_bg "$logf" 1 "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
      ;;
    varnish)
      # -j none: no privilege separation (works as root and as any user); -F: foreground.
      pinned_bg "$logf" 1 "$VARNISHD" -F -j none -n "$dir/varnish" -a "127.0.0.1:$port" \
        -b "127.0.0.1:$ORIGIN_PORT" -s malloc,64m
      ;;
  esac
  PROXY_PID=$LAST_PID
  if ! interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$port/obj/1k/ready-$name" "$TMP/www/1k.bin" \
      "$READY_TIMEOUT" "$PROXY_PID" 2>"$dir/wait.err"; then
    FAIL_NOTE="not serving the object: $(tail -n 1 "$dir/wait.err"); log: $(tail -n 3 "$logf" 2>/dev/null | tr '\n' ' ')"
    return 1
  fi
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

varnish_stat() { # FIELD: its value now, or empty
  [[ -n $VARNISHSTAT ]] || return 0
  timeout 10 "$VARNISHSTAT" -n "$TMP/varnish/varnish" -1 -f "MAIN.$1" 2>/dev/null | awk -v f="MAIN.$1" '$1 == f {print $2}'
}

TSV=$TMP/results.tsv
printf '# %s\n' "proxy status requests duration_s cpu_s origin_cpu_s other_cpu_s rss_after_kib rss_peak_kib errors bytes p50_us p99_us origin_fetches hit_check note" >"$TSV"
row() { local IFS=$'\t'; printf '%s\n' "$*" >>"$TSV"; }
failrow() { row "$1" "$2" "" "" "" "" "" "" "" "" "" "" "" "" "" "$3"; }
NOISY=0 HARNESS_FAIL=0 WEIR_NOTE=""

measure() { # NAME PORT PID URI: the warm-up and the measured run; the row in the TSV
  local name=$1 port=$2 pid=$3 uri=$4 url c0 c1 o0 o1 s0 s1 other mem fetches check vh0 vh1 vm0 vm1 note=""
  url="http://127.0.0.1:$port$uri"
  if ! run_wrk "$url" "$WARMUP" "$TMP/logs/wrk-$name-warmup.txt"; then
    MEASURE_NOTE="wrk warm-up failed: $(grep -v '^WRKRESULT' "$TMP/logs/wrk-$name-warmup.txt" | tail -n1)"
    return 1
  fi
  [[ $name == varnish ]] && { vh0=$(varnish_stat cache_hit); vm0=$(varnish_stat cache_miss); }
  times >"$TMP/times0"; s0=$("$PY" "$LIB" sysbusy)
  c0=$("$PY" "$LIB" cpu "$pid"); o0=$("$PY" "$LIB" cpu "$ORIGIN_PID")
  if ! run_wrk "$url" "$DURATION" "$TMP/logs/wrk-$name.txt"; then
    MEASURE_NOTE="wrk failed: $(tail -n1 "$TMP/logs/wrk-$name.txt")"
    return 1
  fi
  c1=$("$PY" "$LIB" cpu "$pid"); o1=$("$PY" "$LIB" cpu "$ORIGIN_PID")
  s1=$("$PY" "$LIB" sysbusy); times >"$TMP/times1"
  mem=$("$PY" "$LIB" mem "$pid")
  if ! kill -0 "$pid" 2>/dev/null; then
    MEASURE_NOTE="process exited during the run"
    return 1
  fi
  other=$(awk -v s0="$s0" -v s1="$s1" -v c="$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" \
    -v o="$(awk -v a="$o0" -v b="$o1" 'BEGIN{print b-a}')" \
    -v k="$(children_cpu_delta "$TMP/times0" "$TMP/times1")" -v same="$([[ $pid == "$ORIGIN_PID" ]] && echo 1)" \
    'BEGIN{ if (same) c = 0; printf "%.2f", (s1 - s0) - c - o - k }')
  if [[ $name == varnish ]]; then
    vh1=$(varnish_stat cache_hit); vm1=$(varnish_stat cache_miss)
    [[ -n $vh0 && -n $vh1 ]] && note="varnishstat over the run: cache_hit +$((vh1 - vh0)), cache_miss +$((vm1 - vm0))"
  fi
  fetches=$(origin_fetches "$uri")
  check="n/a"
  if [[ $name != origin ]]; then
    # After the run: one more probe, whose cache header must say hit, and the origin must
    # have seen the URL once (the store before the warm-up).
    "$PY" "$HELPER" probe "$port" "$uri" "$TMP/www/1k.bin" >"$TMP/logs/probe-$name-after.txt" 2>&1
    if [[ $fetches == 1 ]] && probe_hit "$name" "$TMP/logs/probe-$name-after.txt"; then check="yes"; else check="NO"; fi
    [[ $name == weir && $check != yes ]] && WEIR_NOTE="weir's responses were not all hits (origin fetches $fetches; $(tail -n 1 "$TMP/logs/probe-$name-after.txt"))"
  fi
  row "$name" ok "$W_requests" "$(awk -v u="$W_duration_us" 'BEGIN{printf "%.3f", u/1e6}')" \
    "$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b-a}')" \
    "$(awk -v a="$o0" -v b="$o1" 'BEGIN{printf "%.2f", b-a}')" "$other" \
    "${mem% *}" "${mem#* }" $((W_connect + W_read + W_write + W_timeout + W_status)) \
    "$W_bytes" "$W_p50_us" "$W_p99_us" "$fetches" "$check" "$note"
  log "$(printf '%-8s %8.0f req/s  CPU %5.2f s  errors %d  origin fetches of %s: %s  hits: %s %s' "$name" \
    "$(awk -v r="$W_requests" -v u="$W_duration_us" 'BEGIN{print r/(u/1e6)}')" \
    "$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" \
    $((W_connect + W_read + W_write + W_timeout + W_status)) "$uri" "$fetches" "$check" "$note")"
  if awk -v o="$other" -v d="$DURATION" 'BEGIN{exit !(o / d > 0.10)}'; then
    log "warning: other processes used $(awk -v o="$other" -v d="$DURATION" 'BEGIN{printf "%.0f", 100*o/d}')% of a CPU during this run: its figures are disturbed"
    NOISY=1
  fi
  return 0
}

probe_hit() { # NAME FILE: the last probe response's cache header says hit
  local l
  l=$(tail -n 1 "$2")
  case $1 in
    weir) [[ $l == *"Cache-Status: weir; hit"* ]] ;;
    nginx) [[ $l == *"X-Cache-Status: HIT"* ]] ;;
    varnish) [[ $l =~ X-Varnish:\ [0-9]+\ [0-9]+ ]] ;;
  esac
}

weir_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain -- src include app 2>/dev/null) ]] && weir_rev+=" (+ uncommitted changes)"
{
  echo "# cache_hitpath.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), Linux $(uname -r)"
  echo "- weir: ${WEIR_BIN#"$ROOT"/} (this checkout: $weir_rev), server.threads $WEIR_THREADS, zone 64m / max_object 1m"
  echo "- nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker, proxy_cache (files in the temp dir), proxy_cache_valid 200 60s, proxy_cache_lock on"
  [[ -n $VARNISHD ]] && echo "- varnish: $("$VARNISHD" -V 2>&1 | head -n 1 | sed 's/^varnishd (//; s/ revision.*//'), -s malloc,64m -j none, default VCL and thread pools"
  echo "- load: wrk $("$WRK" -v 2>&1 | awk 'NR==1{print $2}') -t$WRK_THREADS -c$CONNS, one URL (a 1 KiB object, max-age=3600), stored by one GET, then ${WARMUP} s warm-up and ${DURATION} s measured"
  echo "- placement: $PIN_DESC; a fresh proxy process per row"
  echo "- background CPU load (other processes) just before the run: ${BUSY_BEFORE}% of all CPUs@AFTER@"
  echo "- command: $([[ ${BENCH_QUICK:-0} == 1 ]] && echo 'BENCH_QUICK=1 ')BENCH_SECONDS=$DURATION bash bench/cache_hitpath.sh"
} >"$TMP/meta.md"

# ------------------------------------------------------------------ runs
log "settings: ${DURATION}s runs after ${WARMUP}s warm-up, wrk -t$WRK_THREADS -c$CONNS; $PIN_DESC"
for name in $PROXIES; do
  start_proxy "$name"
  st=$?
  if ((st != 0)); then
    status=failed
    ((st == 3)) && status=skipped
    failrow "$name" "$status" "$FAIL_NOTE"
    log "$name: ${status^^}: $FAIL_NOTE"
    [[ $name != weir ]] && HARNESS_FAIL=1
    [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
    continue
  fi
  uri=/obj/1k/hit-$name-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # The store, and a second GET that must be a hit.
  if ! "$PY" "$HELPER" probe "${PORT[$name]}" "$uri" "$TMP/www/1k.bin" >"$TMP/logs/probe-$name.txt" 2>&1; then
    failrow "$name" failed "the object was not served right: $(tr '\n' ' ' <"$TMP/logs/probe-$name.txt")"
    [[ $name != weir ]] && HARNESS_FAIL=1
    stop_pid "$PROXY_PID"
    continue
  fi
  log "$name: store + probe: $(tr '\n' '|' <"$TMP/logs/probe-$name.txt")"
  probe_hit "$name" "$TMP/logs/probe-$name.txt" || log "warning: $name: the second GET was not a hit"
  if ! measure "$name" "${PORT[$name]}" "$PROXY_PID" "$uri"; then
    failrow "$name" failed "$MEASURE_NOTE"
    log "$name: FAILED: $MEASURE_NOTE"
    [[ $name != weir ]] && HARNESS_FAIL=1
  fi
  stop_pid "$PROXY_PID"
  cp "$TMP/logs/$name.log" "$LOG_DIR/" 2>/dev/null
  [[ $name == nginx ]] && cp "$TMP/nginx/error.log" "$LOG_DIR/nginx-error.log" 2>/dev/null
done
stop_pid "$ORIGIN_PID"
cp "$TMP/logs"/wrk-*.txt "$TMP/logs"/probe-*.txt "$TMP/origin/access.log" "$LOG_DIR/" 2>/dev/null

# ------------------------------------------------------------------ report
BUSY_AFTER=$("$PY" "$LIB" busy 1)
sed -i "s|@AFTER@|, just after: ${BUSY_AFTER}%|" "$TMP/meta.md"
((BUSY_BEFORE >= 15 || BUSY_AFTER >= 15 || NOISY)) &&
  log "warning: other processes were busy (${BUSY_BEFORE}% of all CPUs before, ${BUSY_AFTER}% after; see 'other CPU %'): figures are not trustworthy"
cp "$TSV" "$OUT_DIR/cache_hitpath.tsv"
echo
cat "$TMP/meta.md"
echo
"$PY" "$HELPER" report "$TSV" "$OUT_DIR/cache_hitpath.md" "$TMP/meta.md" || { log "report failed"; exit 2; }
[[ -n $WEIR_NOTE ]] && echo "$WEIR_NOTE" | tee -a "$OUT_DIR/cache_hitpath.md"
echo
echo "Markdown: ${OUT_DIR#"$ROOT"/}/cache_hitpath.md   raw: ${OUT_DIR#"$ROOT"/}/cache_hitpath.tsv, ${LOG_DIR#"$ROOT"/}/"
if ((HARNESS_FAIL)); then
  log "harness failure: nginx or Varnish could not be measured; see above"
  exit 1
fi
exit 0
