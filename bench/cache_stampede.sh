#!/usr/bin/env bash
# A cache stampede: N clients ask at once for one URL nobody has cached yet, through weir,
# nginx and Varnish, each caching in front of the same slow origin. See bench/README.md
# (cache_stampede.sh).
#
#   bash bench/cache_stampede.sh                         # N = 500 and 5000, every proxy (~1 min)
#   BENCH_STAMPEDE_NS=500 bash bench/cache_stampede.sh   # one N
#   WEIR_BIN=/work/build-bench/weir bash bench/cache_stampede.sh
#
# The origin (slow_origin.py) answers every request after BENCH_ORIGIN_DELAY (0.2) s with a
# 1 KiB body and Cache-Control: max-age=60, and counts requests per path. Per row (a proxy and
# an N), a fresh proxy process; the client (stampede_client.py) opens N connections, all
# connected and accepted first, then sends one GET for a fresh URL on each, back to back, and
# times each response. Measured: how many requests for that URL reached the origin (a cache
# lock that holds makes it 1), the latency percentiles, statuses and errors.
#
# Rows: weir-tK (weir with server.threads K; BENCH_PROXIES names them: weir-t1 weir-t4),
# nginx (proxy_cache + proxy_cache_lock), varnish (varnishd -b, its default VCL). After each
# stampede, a control row NAME/warm (BENCH_STAMPEDE_WARM=1, the default): the same N requests
# for the URL now cached, on new connections: all hits, so it shows what answering N
# requests at once costs the proxy and the client, without any waiting on the origin.
#
# Everything listens on 127.0.0.1 on free ports picked at run time; every process this
# script starts is killed by PID on exit (including Ctrl-C); every client run is bounded in
# count (N requests) and time (the client's own timeouts, and `timeout` around it); files go
# only to a mktemp directory (removed at exit) and to bench/out/.
#
# Exit status: 0 when the harness worked, whatever the figures (weir missing or failing is
# reported in its row); 1 when nginx or Varnish could not be measured; 2 when a setting is
# wrong, a prerequisite is missing or the origin does not come up.
# shellcheck disable=SC2317
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT_DIR=$HERE/out
LOG_DIR=$OUT_DIR/stampede-logs
LIB=$HERE/lib.py
CLIENT=$HERE/stampede_client.py

# ------------------------------------------------------------------ settings
NS=${BENCH_STAMPEDE_NS:-"500 5000"}
PROXIES=${BENCH_PROXIES:-"weir-t1 weir-t4 nginx varnish"}
DELAY=${BENCH_ORIGIN_DELAY:-0.2}
SIZE=${BENCH_STAMPEDE_SIZE:-1024}
CLIENT_TIMEOUT=${BENCH_STAMPEDE_TIMEOUT:-30}
NGINX_WORKERS=${BENCH_NGINX_WORKERS:-1}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}
WARM=${BENCH_STAMPEDE_WARM:-1}
WEIR_BIN=${WEIR_BIN:-$ROOT/build/weir}

BENCH_TAG=stampede
# shellcheck source=bench/common.sh
source "$HERE/common.sh"

for n in $NS; do [[ $n =~ ^[0-9]+$ && $n -ge 1 ]] || die "BENCH_STAMPEDE_NS: '$n' is not a positive integer"; done
for p in $PROXIES; do [[ $p =~ ^(weir-t[0-9]+|nginx|varnish)$ ]] || die "BENCH_PROXIES: unknown proxy '$p' (weir-tK, nginx, varnish)"; done
for v in SIZE CLIENT_TIMEOUT NGINX_WORKERS READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $WARM =~ ^[01]$ ]] || die "BENCH_STAMPEDE_WARM must be 0 or 1"
[[ $DELAY =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_ORIGIN_DELAY must be a number of seconds"

# ------------------------------------------------------------------ prerequisites
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(find_bin python3) || die "python3 not found"; fi
command -v timeout >/dev/null || die "timeout (coreutils) not found"
NGINX="" VARNISHD="" VARNISHSTAT=""
if [[ " $PROXIES " == *" nginx "* ]]; then
  NGINX=${NGINX_BIN:-$(find_bin nginx)} || die "nginx not found (apt-get install nginx-light)"
fi
if [[ " $PROXIES " == *" varnish "* ]]; then
  VARNISHD=${VARNISHD_BIN:-$(find_bin varnishd)} || die "varnishd not found (apt-get install varnish)"
  VARNISHSTAT=$(find_bin varnishstat) || VARNISHSTAT=""
fi

# Open files: the client holds N connections, each proxy N client connections plus its
# upstream ones. Raise the soft limit to the hard one; an N the limit cannot hold is skipped.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] && NOFILE=1048576

# ------------------------------------------------------------------ temp dir, cleanup
mkdir -p "$OUT_DIR" "$LOG_DIR" || die "cannot create $OUT_DIR"
bench_tmpdir weir-stampede
mkdir -p "$TMP/logs"

# A stampede is only one when the N requests leave within a fraction of the origin's delay:
# on a busy machine the client's sends spread out (the send spread column) and later
# requests find the object complete. Say so when other processes are using the CPUs.
busy_check() { # WHEN
  local b
  b=$("$PY" "$LIB" busy 1)
  if ((b >= 15)); then
    log "warning: the machine is ${b}% busy $1 (other processes); send spreads and latencies will be noisy. Top CPU users:"
    ps -eo pid,pcpu,comm --sort=-pcpu | sed -n '2,4p' | sed 's/^/[stampede]     /' >&2
  fi
  echo "$b"
}
BUSY_BEFORE=$(busy_check "before the bench starts")

render() { # TEMPLATE OUT KEY=VALUE...
  local tpl=$1 out=$2 kv args=()
  shift 2
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" >"$out"
}

# ------------------------------------------------------------------ the origin
mapfile -t PORTS < <("$PY" "$LIB" ports 2) || die "cannot pick free ports"
ORIGIN_PORT=${PORTS[0]}
start_bg "$TMP/logs/origin.log" "$PY" "$HERE/slow_origin.py" --port "$ORIGIN_PORT" --delay "$DELAY" \
  --size "$SIZE" --max-age 60 --body-file "$TMP/body.bin" --ready-file "$TMP/origin.ready"
ORIGIN_PID=$LAST_PID
for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
  [[ -s $TMP/origin.ready ]] && break
  kill -0 "$ORIGIN_PID" 2>/dev/null || break
  sleep 0.1
done
[[ -s $TMP/origin.ready ]] || { cat "$TMP/logs/origin.log" >&2; die "the origin did not come up"; }
log "origin: slow_origin.py pid $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT (${DELAY}s per request, $SIZE-byte body, max-age=60)"

origin_count() { # PATH: requests the origin got for PATH
  "$PY" - "$ORIGIN_PORT" "$1" <<'EOF'
import json, sys, urllib.parse, urllib.request
u = "http://127.0.0.1:%s/__count?path=%s" % (sys.argv[1], urllib.parse.quote(sys.argv[2], safe=""))
print(json.load(urllib.request.urlopen(u, timeout=5))["count"])
EOF
}

# ------------------------------------------------------------------ proxies
# start_proxy NAME N: a fresh proxy; PROXY_PID and PROXY_PORT; non-zero with FAIL_NOTE.
start_proxy() {
  local name=$1 n=$2 dir=$TMP/$1-$2 logf=$TMP/logs/$1-$2.log
  mkdir -p "$dir"
  PROXY_PID="" FAIL_NOTE=""
  PROXY_PORT=$("$PY" "$LIB" ports 1) || { FAIL_NOTE="no free port"; return 1; }
  case $name in
    weir-t*)
      if [[ ! -x $WEIR_BIN ]]; then
        FAIL_NOTE="SKIPPED: ${WEIR_BIN#"$ROOT"/} not found"
        return 3
      fi
      render "$HERE/conf/weir-cache.yaml.in" "$dir/weir.yaml" PORT="$PROXY_PORT" ORIGIN="$ORIGIN_PORT" \
        THREADS="${name#weir-t}"
      cp "$dir/weir.yaml" "$LOG_DIR/$name.yaml"
      start_bg "$logf" "$WEIR_BIN" -c "$dir/weir.yaml"
      ;;
    nginx)
      # worker_connections: the N client connections and as many upstream ones, with room.
      render "$HERE/conf/nginx-cache.conf.in" "$dir/nginx.conf" DIR="$dir" PORT="$PROXY_PORT" \
        ORIGIN="$ORIGIN_PORT" WORKERS="$NGINX_WORKERS" NOFILE="$NOFILE" CONNS=$((NOFILE - 64))
      cp "$dir/nginx.conf" "$LOG_DIR/nginx.conf"
      start_bg "$logf" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
      ;;
    varnish)
      # -j none: no privilege separation (it works as root and as any user); -F: foreground.
      start_bg "$logf" "$VARNISHD" -F -j none -n "$dir/varnish" -a "127.0.0.1:$PROXY_PORT" \
        -b "127.0.0.1:$ORIGIN_PORT" -s malloc,64m
      ;;
  esac
  PROXY_PID=$LAST_PID
  if ! interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$PROXY_PORT/__ready/$name-$n" \
      "$TMP/body.bin" "$READY_TIMEOUT" "$PROXY_PID" 2>>"$logf"; then
    FAIL_NOTE="FAILED: did not serve the origin's body within ${READY_TIMEOUT}s"
    return 1
  fi
  DESC[$PROXY_PID]=$("$PY" "$LIB" tree "$PROXY_PID")
  return 0
}

# client_row ROW N URL: one client run against PROXY_PORT, its row in the TSV; the JSON's
# path in CLIENT_OUT, the origin's count for URL in FETCHES.
client_row() {
  local row=$1 n=$2 url=$3 tag=${1//\//-} crc note summary
  CLIENT_OUT=$TMP/client-$tag-$n.json
  timeout $((CLIENT_TIMEOUT + 90)) "$PY" "$CLIENT" run --port "$PROXY_PORT" --path "$url" -n "$n" \
    --size "$SIZE" --timeout "$CLIENT_TIMEOUT" --out "$CLIENT_OUT" --dump "$LOG_DIR/requests-$tag-$n.tsv" \
    >/dev/null 2>"$TMP/logs/client-$tag-$n.log" &
  local cpid=$!
  PIDS+=("$cpid")
  wait "$cpid"
  crc=$?
  forget_pid "$cpid"
  FETCHES=$(origin_count "$url" 2>/dev/null) || FETCHES="?"
  if [[ ! -s $CLIENT_OUT ]]; then
    note="FAILED: the client ended with status $crc: $(tail -n 1 "$TMP/logs/client-$tag-$n.log")"
    printf '%s\t%s\t%s\t%s\t-\n' "$row" "$n" "$FETCHES" "$note" >>"$TSV"
  else
    printf '%s\t%s\t%s\t\t%s\n' "$row" "$n" "$FETCHES" "$(cat "$CLIENT_OUT")" >>"$TSV"
    cp "$CLIENT_OUT" "$LOG_DIR/client-$tag-$n.json"
  fi
  cp "$TMP/logs/client-$tag-$n.log" "$LOG_DIR/client-$tag-$n.log" 2>/dev/null
  summary=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("completed %d/%d, p50 %.1f ms, p99 %.1f ms, send spread %.1f ms, errors %s" % (d["completed"], d["n"], d["p50_ms"] or 0, d["p99_ms"] or 0, d["send_spread_ms"], d["errors"] or 0))' "$CLIENT_OUT" 2>/dev/null)
  log "N=$n $row: origin fetches $FETCHES; ${summary:-$note}"
}

# ------------------------------------------------------------------ the runs
TSV=$OUT_DIR/cache_stampede.tsv
MD=$OUT_DIR/cache_stampede.md
: >"$TSV"
: >"$LOG_DIR/varnishstat.txt"
rm -f "$LOG_DIR"/requests-*.tsv
RC=0
WEIR_BAD=()
for n in $NS; do
  if (( n + 256 > NOFILE )); then
    for p in $PROXIES; do
      printf '%s\t%s\t-\tSKIPPED: open-file limit %s < N + 256 (ulimit -Hn)\t-\n' "$p" "$n" "$NOFILE" >>"$TSV"
    done
    log "N=$n: skipped, the open-file limit is $NOFILE"
    continue
  fi
  for p in $PROXIES; do
    url=/stampede/$p-n$n-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
    log "N=$n $p: starting"
    start_proxy "$p" "$n"
    rc=$?
    if (( rc != 0 )); then
      log "N=$n $p: $FAIL_NOTE"
      tail -n 20 "$TMP/logs/$p-$n.log" >&2 2>/dev/null
      printf '%s\t%s\t-\t%s\t-\n' "$p" "$n" "$FAIL_NOTE" >>"$TSV"
      [[ $p == weir-t* ]] || RC=1
      [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
      continue
    fi
    client_row "$p" "$n" "$url"
    out=$CLIENT_OUT
    if [[ $p == varnish && -n $VARNISHSTAT ]]; then
      { echo "== varnishstat after N=$n"; timeout 10 "$VARNISHSTAT" -n "$TMP/$p-$n/varnish" -1 2>&1 |
          grep -E 'MAIN\.(sess_conn|sess_queued|sess_dropped|req_dropped|threads |threads_created|threads_limited|busy_sleep|busy_wakeup|busy_killed|backend_req|cache_hit |cache_miss)'; } \
        >>"$LOG_DIR/varnishstat.txt"
    fi
    if [[ $p == weir-t* ]]; then
      errs=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(d["errors"].values()) + d["n"] - d["completed"])' "$out" 2>/dev/null || echo 1)
      if [[ $FETCHES != 1 || $errs != 0 ]]; then
        WEIR_BAD+=("N=$n $p: origin fetches $FETCHES, errors $errs")
        log "N=$n $p: NOT one fetch without errors; weir's log:"
        tail -n 30 "$TMP/logs/$p-$n.log" >&2
      fi
    fi
    # The control: the same N requests again, now that the URL is cached (all hits, new
    # connections): what serving N responses at once costs this proxy and the client.
    ((WARM)) && client_row "$p/warm" "$n" "$url"
    stop_pid "$PROXY_PID"
    cp "$TMP/logs/$p-$n.log" "$LOG_DIR/$p-$n.log" 2>/dev/null
    [[ $p == nginx ]] && cp "$TMP/$p-$n/error.log" "$LOG_DIR/nginx-$n-error.log" 2>/dev/null
  done
done
stop_pid "$ORIGIN_PID"
BUSY_AFTER=$(busy_check "after the bench")
cp "$TMP/logs/origin.log" "$LOG_DIR/origin.log" 2>/dev/null

# ------------------------------------------------------------------ report
{
  echo "# cache_stampede.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "origin: ${DELAY}s per request, $SIZE-byte body, Cache-Control: max-age=60; $(nproc) CPUs, nothing pinned;"
  echo "weir: $("$WEIR_BIN" -V 2>/dev/null | head -n 1 || echo "${WEIR_BIN#"$ROOT"/}"), zone 64m / max_object 1m, lock_timeout 5s;"
  [[ -n $NGINX ]] && echo "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $NGINX_WORKERS worker(s), proxy_cache_lock on, lock timeout 5s;"
  [[ -n $VARNISHD ]] && echo "varnish: $("$VARNISHD" -V 2>&1 | head -n 1 | sed 's/^varnishd (//; s/ revision.*//'), -s malloc,64m, default VCL and parameters."
  echo "Latency: from each request's send to the last byte of its response, as the client saw it;"
  echo "send spread: from the first request's send to the last's (want well under ${DELAY}s)."
  echo "CPU busy (all CPUs, 1 s): ${BUSY_BEFORE}% before, ${BUSY_AFTER}% after."
  echo
} >"$MD.head"
cat "$MD.head"
"$PY" "$CLIENT" report "$TSV" "$MD.body" || RC=1
cat "$MD.head" "$MD.body" >"$MD" && rm -f "$MD.head" "$MD.body"
if ((${#WEIR_BAD[@]})); then
  echo "weir: NOT exactly one origin fetch without errors in: ${WEIR_BAD[*]} (logs in ${LOG_DIR#"$ROOT"/})" | tee -a "$MD"
else
  echo "weir: exactly one origin fetch, no errors, in every weir row." | tee -a "$MD"
fi
log "written: ${MD#"$ROOT"/}, ${TSV#"$ROOT"/}, logs in ${LOG_DIR#"$ROOT"/}"
exit "$RC"
