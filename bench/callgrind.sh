#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: a
# deterministic figure for the CPU cost of weir's hot path. See bench/README.md (callgrind.sh).
#
#   bash bench/callgrind.sh                    # weir: N1=200 and N2=2200 requests, ~10 s
#   bash bench/callgrind.sh --check 10500      # exit 1 when weir is more than 15 % above 10500
#   bash bench/callgrind.sh --check 10500 2    # ... more than 2 % above
#   BENCH_CALLGRIND_PROXIES="weir nginx haproxy" bash bench/callgrind.sh   # ~30 s
#   BENCH_CALLGRIND_TOP=10 bash bench/callgrind.sh   # and where the instructions go
#
# For each proxy: run it under callgrind in front of an nginx origin (not under valgrind),
# send N1 requests over one keep-alive connection, each when the proxy is idle, stop it
# (SIGTERM) so callgrind writes its totals; again with N2 requests; report
# (Ir(N2) - Ir(N1)) / (N2 - N1): start-up and shutdown cancel out.
#
# Everything listens on 127.0.0.1 on free ports picked at run time; every process this
# script starts is killed by PID on exit (including Ctrl-C); files go only to a mktemp
# directory (removed at exit) and to bench/out/.
#
# Exit status: 0 when every requested proxy was measured (and, with --check, weir's figure is
# within the margin); 1 when --check fails; 2 when a setting is wrong, a prerequisite is
# missing, or the origin or a requested proxy could not be measured.
# cleanup is reached through trap.
# shellcheck disable=SC2317
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT_DIR=$HERE/out
LIB=$HERE/lib.py
CG=$HERE/callgrind.py

usage() {
  sed -n '2,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  echo "Settings (environment): see bench/README.md"
}

# ------------------------------------------------------------------ settings
N1=${BENCH_CALLGRIND_N1:-200}
N2=${BENCH_CALLGRIND_N2:-2200}
PROXIES=${BENCH_CALLGRIND_PROXIES:-weir}
SIZE=${BENCH_CALLGRIND_SIZE:-1k}
TOP=${BENCH_CALLGRIND_TOP:-0}
WAIT_IDLE=${BENCH_CALLGRIND_WAIT_IDLE:-1}
RUN_TIMEOUT=${BENCH_CALLGRIND_TIMEOUT:-300}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}
CHECK=${BENCH_CALLGRIND_CHECK:-}
MARGIN=${BENCH_CALLGRIND_MARGIN:-15}
WEIR_BIN=${WEIR_BIN:-$ROOT/build/weir}

BENCH_TAG=callgrind
# shellcheck source=bench/common.sh
source "$HERE/common.sh"

while (($#)); do
  case $1 in
    --check)
      [[ $# -ge 2 ]] || die "--check needs a FIGURE (instructions per request)"
      CHECK=$2
      shift 2
      if [[ $# -ge 1 && $1 =~ ^[0-9]+(\.[0-9]+)?%?$ ]]; then MARGIN=${1%\%}; shift; fi
      ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done

for v in N1 N2 RUN_TIMEOUT READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer (got '${!v}')"
done
((N2 > N1)) || die "N2 ($N2) must be larger than N1 ($N1)"
# weir's max_requests_per_connection defaults to 10000: one connection must carry N2.
((N2 < 10000)) || die "N2 must be below 10000 (weir's default max_requests_per_connection)"
[[ $WAIT_IDLE == 0 || $WAIT_IDLE == 1 ]] || die "BENCH_CALLGRIND_WAIT_IDLE must be 0 or 1 (got '$WAIT_IDLE')"
[[ $TOP =~ ^[0-9]+$ ]] || die "BENCH_CALLGRIND_TOP must be a number of functions (got '$TOP')"
[[ $SIZE == 1k || $SIZE == 64k ]] || die "BENCH_CALLGRIND_SIZE: unknown size '$SIZE' (1k, 64k)"
for p in $PROXIES; do [[ $p =~ ^(weir|nginx|haproxy)$ ]] || die "BENCH_CALLGRIND_PROXIES: unknown proxy '$p'"; done
if [[ -n $CHECK ]]; then
  [[ $CHECK =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--check: FIGURE must be a number (got '$CHECK')"
  [[ $MARGIN =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--check: MARGIN must be a percentage (got '$MARGIN')"
  [[ " $PROXIES " == *" weir "* ]] || die "--check needs weir in BENCH_CALLGRIND_PROXIES"
fi

# ------------------------------------------------------------------ prerequisites
NGINX=${NGINX_BIN:-$(find_bin nginx)} || die "nginx not found (apt-get install nginx-light): it is the origin"
if [[ " $PROXIES " == *" haproxy "* ]]; then
  HAPROXY=${HAPROXY_BIN:-$(find_bin haproxy)} || die "haproxy not found (apt-get install haproxy)"
fi
VALGRIND=${VALGRIND_BIN:-$(find_bin valgrind)} || die "valgrind not found (apt-get install valgrind)"
command -v callgrind_annotate >/dev/null || [[ $TOP == 0 ]] || die "callgrind_annotate not found (valgrind package)"
# The system's python3 when there is one: the helpers are stdlib only.
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(find_bin python3) || die "python3 not found"; fi
command -v timeout >/dev/null || die "timeout (coreutils) not found"
if [[ " $PROXIES " == *" weir "* && ! -x $WEIR_BIN ]]; then
  die "${WEIR_BIN#"$ROOT"/} not found: build it first (cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build)"
fi

# ------------------------------------------------------------------ temp dir, cleanup
mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
bench_tmpdir weir-callgrind

render() { # TEMPLATE OUT KEY=VALUE...
  local tpl=$1 out=$2 kv args=()
  shift 2
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" >"$out"
}

# ------------------------------------------------------------------ data + origin
# The origin is the nginx of bench/run.sh, not under valgrind: its own cost is not counted,
# it only has to send the same bytes every time (fixed file, etag off, a Date and a
# Last-Modified header of fixed length), which it does.
mkdir -p "$TMP/www" "$TMP/origin" "$TMP/logs"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
head -c 65536 /dev/urandom >"$TMP/www/64k.bin"
chmod 755 "$TMP/www" && chmod 644 "$TMP/www"/*.bin
FILE=$TMP/www/$SIZE.bin
URLPATH=/$SIZE.bin

mapfile -t PORTS < <("$PY" "$LIB" ports 2) || die "cannot pick free ports"
ORIGIN_PORT=${PORTS[0]}
PROXY_PORT=${PORTS[1]}

render "$HERE/conf/origin-nginx.conf.in" "$TMP/origin/nginx.conf" \
  DIR="$TMP/origin" PORT="$ORIGIN_PORT" WWW="$TMP/www"
start_bg "$TMP/logs/origin.log" "$NGINX" -p "$TMP/origin" -c "$TMP/origin/nginx.conf" -e "$TMP/origin/error.log"
ORIGIN_PID=$LAST_PID
interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$ORIGIN_PORT$URLPATH" "$FILE" "$READY_TIMEOUT" "$ORIGIN_PID" ||
  { cat "$TMP/logs/origin.log" "$TMP/origin/error.log" >&2 2>/dev/null; die "origin nginx did not come up"; }
DESC[$ORIGIN_PID]=$("$PY" "$LIB" tree "$ORIGIN_PID")
log "origin nginx pid $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT, serving $URLPATH"

# ------------------------------------------------------------------ one measurement
# Every process (nginx: master and worker, which it forks; valgrind follows a fork) writes
# its own callgrind.out.<pid>; each holds all the threads of its process (callgrind's default
# --separate-threads=no). The figure of a run is the sum over all files of the run.
run_once() { # NAME N: one run under callgrind; sets IR (sum of Ir) or returns 1 with $FAIL_NOTE
  local name=$1 n=$2 dir=$TMP/$1-$2 logf pid rc i cmd=()
  logf=$dir/$name.log
  mkdir -p "$dir"
  # nginx started as root runs its worker as an unprivileged user: the worker must be able to
  # write its callgrind.out into the run's directory.
  [[ $name == nginx && $EUID == 0 ]] && chmod 1777 "$dir"
  IR="" FAIL_NOTE=""
  case $name in
    weir)
      cmd=("$WEIR_BIN" proxy --listen "127.0.0.1:$PROXY_PORT" --to "127.0.0.1:$ORIGIN_PORT"
        --threads 1 --access-log off)
      ;;
    nginx)
      render "$HERE/conf/proxy-nginx.conf.in" "$dir/nginx.conf" DIR="$dir" PORT="$PROXY_PORT" ORIGIN="$ORIGIN_PORT"
      cmd=("$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log")
      ;;
    haproxy)
      render "$HERE/conf/haproxy.cfg.in" "$dir/haproxy.cfg" DIR="$dir" PORT="$PROXY_PORT" ORIGIN="$ORIGIN_PORT"
      cmd=("$HAPROXY" -db -f "$dir/haproxy.cfg")
      ;;
  esac
  # shellcheck disable=SC2086
  start_bg "$logf" "$VALGRIND" --tool=callgrind --callgrind-out-file="$dir/callgrind.out.%p" \
    ${VALGRIND_EXTRA_ARGS:-} "${cmd[@]}"
  pid=$LAST_PID
  # The client retries its connect while the port is refused (nothing listening yet), so
  # the proxy sees exactly one connection and N requests, and no probes. It sends each
  # request when every thread of the proxy sleeps: a request that arrives while the proxy
  # is still busy with the previous response takes a shorter path, and how many do depends
  # on scheduling (BENCH_CALLGRIND_WAIT_IDLE=0 shows it: figures vary by ~2 % between runs).
  if ! interruptible timeout -k 5 "$RUN_TIMEOUT" "$PY" "$CG" client "$PROXY_PORT" "$URLPATH" "$FILE" "$n" \
      "$RUN_TIMEOUT" "$pid" "$WAIT_IDLE" >"$dir/client.txt" 2>&1; then
    FAIL_NOTE="$(tail -n1 "$dir/client.txt"); log: $(grep -v '^==' "$logf" | tail -n 2 | tr '\n' ' ')"
    stop_pid "$pid"
    return 1
  fi
  # Graceful stop, so that callgrind writes its totals: weir drains (its only connection is
  # closed by now) and exits 0; nginx's master stops its worker; HAProxy stops at once.
  DESC[$pid]=$("$PY" "$LIB" tree "$pid")
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < RUN_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    FAIL_NOTE="still running ${RUN_TIMEOUT} s after SIGTERM"
    stop_pid "$pid"
    return 1
  fi
  wait "$pid"
  rc=$?
  forget_pid "$pid"
  unset 'DESC[$pid]'
  if [[ $name == weir && $rc != 0 ]]; then
    FAIL_NOTE="exited with status $rc after SIGTERM; log: $(grep -v '^==' "$logf" | tail -n 2 | tr '\n' ' ')"
    return 1
  fi
  # Each process's own callgrind.out.<pid> (with --separate-threads=yes in
  # VALGRIND_EXTRA_ARGS: one .<pid>-<thread> per thread, and an empty .<pid>).
  local outs=() f
  for f in "$dir"/callgrind.out.*; do [[ -s $f ]] && outs+=("$f"); done
  if grep -q 'can not open .*output file' "$logf"; then
    FAIL_NOTE="a process could not write its callgrind output: $(grep -m1 'can not open' "$logf")"
    return 1
  fi
  if ((${#outs[@]} == 0)); then
    FAIL_NOTE="no callgrind output (exit status $rc); log: $(tail -n 2 "$logf" | tr '\n' ' ')"
    return 1
  fi
  "$PY" "$CG" totals "${outs[@]}" >"$dir/totals.txt" 2>&1 ||
    { FAIL_NOTE="$(tail -n1 "$dir/totals.txt")"; return 1; }
  IR=$(awk '$1 == "TOTAL" {print $2}' "$dir/totals.txt")
  log "$(printf '%-7s N=%-5d Ir %12d  (%d file(s): %s; %s)' "$name" "$n" "$IR" "${#outs[@]}" \
    "$(awk '$1 != "TOTAL" {printf "%s%s", sep, $2; sep="+"}' "$dir/totals.txt")" "$(grep '^CLIENT' "$dir/client.txt")")"
  return 0
}

# ------------------------------------------------------------------ runs
rm -rf "$OUT_DIR/callgrind" && mkdir -p "$OUT_DIR/callgrind"
RESULTS=$OUT_DIR/callgrind.tsv
printf '# %s\n' "proxy status size n1 n2 ir_n1 ir_n2 ir_per_request note" >"$RESULTS"
row() { local IFS=$'\t'; printf '%s\n' "$*" >>"$RESULTS"; }
declare -A PER_REQ
FAILED=0
T0=$SECONDS
weir_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain -- src include app 2>/dev/null) ]] && weir_rev+=" (+ uncommitted changes)"
log "$("$VALGRIND" --version), $SIZE responses, N1=$N1 N2=$N2, proxies: $PROXIES; weir ${WEIR_BIN#"$ROOT"/} at $weir_rev"
[[ $WAIT_IDLE == 0 ]] && log "warning: BENCH_CALLGRIND_WAIT_IDLE=0: requests do not wait for an idle proxy; figures depend on scheduling"

for name in $PROXIES; do
  ok=1
  declare -A IRS=()
  for n in "$N1" "$N2"; do
    if run_once "$name" "$n"; then
      IRS[$n]=$IR
    else
      log "$name N=$n: FAILED: $FAIL_NOTE"
      ok=0
      break
    fi
  done
  # Keep the out files and logs for callgrind_annotate.
  for n in "$N1" "$N2"; do
    [[ -d $TMP/$name-$n ]] && cp -r "$TMP/$name-$n" "$OUT_DIR/callgrind/"
  done
  if [[ $ok == 0 ]]; then
    row "$name" failed "$SIZE" "$N1" "$N2" "" "" "" "$FAIL_NOTE"
    FAILED=1
    continue
  fi
  PER_REQ[$name]=$(awk -v a="${IRS[$N1]}" -v b="${IRS[$N2]}" -v n1="$N1" -v n2="$N2" \
    'BEGIN { printf "%.1f", (b - a) / (n2 - n1) }')
  row "$name" ok "$SIZE" "$N1" "$N2" "${IRS[$N1]}" "${IRS[$N2]}" "${PER_REQ[$name]}" ""
  if ((TOP > 0)); then
    log "$name: the $TOP functions with the most instructions per extra request (exclusive cost):"
    "$PY" "$CG" top "$TMP/$name-$N1" "$TMP/$name-$N2" $((N2 - N1)) "$TOP" | sed "s/^/[$BENCH_TAG]   /" >&"$LOG_FD"
  fi
done

# ------------------------------------------------------------------ report
echo
for name in $PROXIES; do
  if [[ -n ${PER_REQ[$name]:-} ]]; then
    printf '%s: %.0f instructions per request (N1=%d, N2=%d)\n' "$name" "${PER_REQ[$name]}" "$N1" "$N2"
  else
    printf '%s: FAILED (see above)\n' "$name"
  fi
done
if [[ -n ${PER_REQ[weir]:-} ]]; then
  for other in nginx haproxy; do
    [[ -n ${PER_REQ[$other]:-} ]] &&
      printf 'weir/%s: %.2fx\n' "$other" "$(awk -v a="${PER_REQ[weir]}" -v b="${PER_REQ[$other]}" 'BEGIN{print a/b}')"
  done
fi
for name in $PROXIES; do
  [[ -n ${PER_REQ[$name]:-} ]] &&
    printf 'CALLGRIND proxy=%s size=%s n1=%d n2=%d ir_per_request=%s\n' "$name" "$SIZE" "$N1" "$N2" "${PER_REQ[$name]}"
done
echo "raw: ${RESULTS#"$ROOT"/}; callgrind out files: ${OUT_DIR#"$ROOT"/}/callgrind/<proxy>-<N>/ ($((SECONDS - T0)) s)"

if [[ -n $CHECK ]]; then
  [[ -n ${PER_REQ[weir]:-} ]] || { log "check: weir could not be measured"; exit 2; }
  limit=$(awk -v f="$CHECK" -v m="$MARGIN" 'BEGIN { printf "%.1f", f * (1 + m / 100) }')
  if awk -v v="${PER_REQ[weir]}" -v l="$limit" 'BEGIN { exit !(v > l) }'; then
    echo "check: FAILED: weir ${PER_REQ[weir]} instructions per request > $limit ($CHECK + $MARGIN %)"
    exit 1
  fi
  echo "check: ok: weir ${PER_REQ[weir]} instructions per request <= $limit ($CHECK + $MARGIN %)"
fi
[[ $FAILED == 0 ]] || exit 2
exit 0
