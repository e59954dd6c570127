#!/usr/bin/env bash
# weir, nginx and HAProxy speaking HTTP/2, in one run. See bench/README.md (h2.sh).
#
#   bash bench/h2.sh                   # 5000 warm-up + 50000 measured requests per row (~1 min)
#   BENCH_QUICK=1 bash bench/h2.sh     # smoke test: 1000 + 10000 per row
#
# Two scenarios, each row a fresh proxy process, one worker/thread, pinned as in tls.sh:
#   tls-h2   h2 over TLS 1.3 (ALPN) to weir, nginx and HAProxy, HTTP/1.1 to tls.sh's origin
#   h2c-h2c  h2c (prior knowledge) to weir and HAProxy, h2c to an nginx origin speaking
#            HTTP/2 only (nginx cannot proxy to an h2 origin: no row)
# Load: h2load -c50 -m10 (500 streams in flight), bounded in count (-n) and time (-N: no
# activity on a connection for BENCH_H2_IDLE_TIMEOUT s ends it; `timeout` around it).
# Measured: the proxy's CPU (utime+stime, /proc/PID/stat) per 100k requests, the origin
# connections it holds (ss, sampled during the run) and opens (the origin's stub_status).
#
# Everything listens on 127.0.0.1 on free ports picked at run time; every process this
# script starts is killed by PID on exit (including Ctrl-C); files go only to a mktemp
# directory (removed at exit) and to bench/out/.
#
# Exit status: 0 when the harness worked, whatever the figures (weir missing, failing to
# start, serve or complete the load is reported in its row); 1 when nginx or HAProxy could not
# be measured; 2 when a setting is wrong, a prerequisite is missing or an origin fails.
# H_* are set with printf -v; cleanup is reached through trap.
# shellcheck disable=SC2154,SC2317
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT_DIR=$HERE/out
LIB=$HERE/lib.py
H2PY=$HERE/h2.py

# ------------------------------------------------------------------ settings
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  REQUESTS=${BENCH_H2_REQUESTS:-10000}
else
  REQUESTS=${BENCH_H2_REQUESTS:-50000}
fi
WARMUP=${BENCH_H2_WARMUP:-$((REQUESTS / 10))}
CONNS=${BENCH_CONNECTIONS:-50}
STREAMS=${BENCH_H2_STREAMS:-10}
IDLE_TIMEOUT=${BENCH_H2_IDLE_TIMEOUT:-5}
SAMPLE_INTERVAL=${BENCH_H2_SAMPLE_INTERVAL:-0.5}
LOAD_NICE=${BENCH_LOAD_NICE:-10}
SCENARIOS=${BENCH_H2_SCENARIOS:-"tls-h2 h2c-h2c"}
PROXIES=${BENCH_PROXIES:-"weir nginx haproxy"}
SUITE=${BENCH_TLS_SUITE:-TLS_AES_256_GCM_SHA384}
WEIR_THREADS=${BENCH_WEIR_THREADS:-1}
# weir's server.http2.initial_window_size in the h2c-h2c row (empty: weir's default). See the
# README: with weir's default, an origin connection stalls after 8 MiB of response data.
WEIR_H2C_WINDOW=${BENCH_H2_WEIR_WINDOW:-}
# weir's server.upstream_keepalive and upstream_pool.shared_per_peer in the tls-h2 row (empty:
# weir's defaults, 128 idle origin connections per backend in the worker's tier and 256 in the
# shared one; 500 requests are in flight).
WEIR_POOL=${BENCH_H2_WEIR_POOL:-}
WEIR_BIN=${WEIR_BIN:-$ROOT/build/weir}
# proxies to profile with perf record during the measured requests, into
# bench/out/h2-perf-SCENARIO-NAME.data (e.g. BENCH_H2_PERF=weir); empty: none
PERF_FOR=${BENCH_H2_PERF:-}
if [[ -n $PERF_FOR ]] && ! command -v perf >/dev/null; then
  echo "[h2] warning: BENCH_H2_PERF set but perf is not installed (apt-get install linux-perf): no profiles" >&2
  PERF_FOR=""
fi
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}
CERT_DESC="ECDSA P-256 (prime256v1), self-signed, SHA-256"

BENCH_TAG=h2
# shellcheck source=bench/common.sh
source "$HERE/common.sh"

for v in REQUESTS WARMUP CONNS STREAMS IDLE_TIMEOUT WEIR_THREADS READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $LOAD_NICE =~ ^[0-9]+$ && $LOAD_NICE -le 19 ]] || die "BENCH_LOAD_NICE must be 0..19 (got '$LOAD_NICE')"
[[ $SAMPLE_INTERVAL =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_H2_SAMPLE_INTERVAL must be a number of seconds"
((REQUESTS >= CONNS && WARMUP >= CONNS)) ||
  die "BENCH_H2_REQUESTS and BENCH_H2_WARMUP must be at least BENCH_CONNECTIONS ($CONNS)"
for s in $SCENARIOS; do [[ $s =~ ^(tls-h2|h2c-h2c)$ ]] || die "BENCH_H2_SCENARIOS: unknown '$s' (tls-h2, h2c-h2c)"; done
for p in $PROXIES; do [[ $p =~ ^(weir|nginx|haproxy)$ ]] || die "BENCH_PROXIES: unknown proxy '$p'"; done
[[ $SUITE =~ ^TLS_[A-Z0-9_]+$ ]] || die "BENCH_TLS_SUITE must be one TLS 1.3 suite name (got '$SUITE')"
[[ -z $WEIR_H2C_WINDOW || $WEIR_H2C_WINDOW =~ ^[0-9]+[kKmM]?$ ]] || die "BENCH_H2_WEIR_WINDOW must be a size (e.g. 8m)"
[[ -z $WEIR_POOL || $WEIR_POOL =~ ^[0-9]+$ ]] || die "BENCH_H2_WEIR_POOL must be an integer"

# ------------------------------------------------------------------ prerequisites
NGINX=${NGINX_BIN:-$(find_bin nginx)} || die "nginx not found (apt-get install nginx-light)"
HAPROXY=${HAPROXY_BIN:-$(find_bin haproxy)} || die "haproxy not found (apt-get install haproxy)"
H2LOAD=${H2LOAD_BIN:-$(find_bin h2load)} || die "h2load not found (apt-get install nghttp2-client)"
NGHTTP=${NGHTTP_BIN:-$(find_bin nghttp)} || die "nghttp not found (apt-get install nghttp2-client)"
OPENSSL=${OPENSSL_BIN:-$(find_bin openssl)} || die "openssl not found (apt-get install openssl)"
PY=$(find_bin python3) || die "python3 not found"
command -v timeout >/dev/null || die "timeout (coreutils) not found"
command -v ss >/dev/null || die "ss (iproute2) not found"

# CPU placement, as bench/run.sh: origin + load generator on the first CPU, the proxy under
# test on the second.
read -r -a CPUS <<<"$("$PY" -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')"
LOAD_PIN=() PROXY_PIN=() PIN_DESC="none"
if [[ ${BENCH_PIN:-1} != 0 ]] && command -v taskset >/dev/null && (( ${#CPUS[@]} >= 2 )); then
  LOAD_CPU=${BENCH_LOAD_CPU:-${CPUS[0]}}
  PROXY_CPU=${BENCH_PROXY_CPU:-${CPUS[1]}}
  LOAD_PIN=(taskset -c "$LOAD_CPU")
  PROXY_PIN=(taskset -c "$PROXY_CPU")
  PIN_DESC="origin + load generator on CPU $LOAD_CPU, proxy on CPU $PROXY_CPU"
elif [[ ${BENCH_PIN:-1} != 0 ]]; then
  log "warning: not pinning (needs taskset and 2 usable CPUs; have ${#CPUS[@]})"
fi
NICE=()
((LOAD_NICE > 0)) && NICE=(nice -n "$LOAD_NICE")

# ------------------------------------------------------------------ temp dir, cleanup
mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
bench_tmpdir weir-h2

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

BUSY_BEFORE=$("$PY" "$LIB" busy 1)
if (( BUSY_BEFORE >= 15 )); then
  log "warning: the machine is already ${BUSY_BEFORE}% busy before the bench starts (other processes);"
  log "warning: figures will be noisy and low. Top CPU users now:"
  ps -eo pid,pcpu,comm --sort=-pcpu | sed -n '2,4p' | sed 's/^/[h2]     /' >&2
fi

# ------------------------------------------------------------------ certificate, data, origins
mkdir -p "$TMP/www" "$TMP/origin" "$TMP/origin-h2c" "$TMP/logs" "$TMP/pki"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
chmod 755 "$TMP/www" && chmod 644 "$TMP/www/1k.bin"

CERT=$TMP/pki/cert.pem KEY=$TMP/pki/key.pem PEM=$TMP/pki/cert+key.pem
"$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$KEY" -out "$CERT" \
  >"$TMP/logs/openssl-req.log" 2>&1 || { cat "$TMP/logs/openssl-req.log" >&2; die "cannot make the certificate"; }
cat "$CERT" "$KEY" >"$PEM"

mapfile -t PORTS < <("$PY" "$LIB" ports 9) || die "cannot pick free ports"
ORIGIN_H1_PORT=${PORTS[0]} ORIGIN_H2C_PORT=${PORTS[1]}
STATUS_H1_PORT=${PORTS[7]} STATUS_H2C_PORT=${PORTS[8]}
declare -A PORT=([tls-h2:weir]=${PORTS[2]} [tls-h2:nginx]=${PORTS[3]} [tls-h2:haproxy]=${PORTS[4]}
  [h2c-h2c:weir]=${PORTS[5]} [h2c-h2c:haproxy]=${PORTS[6]})

# The HTTP/1.1 origin of tls.sh (and run.sh), and an h2c-only nginx serving the same file.
# Each also answers stub_status on a port of its own (HTTP/1.1): its "accepts" counter tells
# how many origin connections a proxy opened during a run. (run.sh and tls.sh render the same
# origin template without it: the server block is added to the rendered file.)
render "$HERE/conf/origin-nginx.conf.in" "$TMP/origin/nginx.conf" \
  DIR="$TMP/origin" PORT="$ORIGIN_H1_PORT" WWW="$TMP/www"
sed -i '$ d' "$TMP/origin/nginx.conf" # the http block's closing brace
printf '    server {\n        listen 127.0.0.1:%s;\n        location / { stub_status; }\n    }\n}\n' \
  "$STATUS_H1_PORT" >>"$TMP/origin/nginx.conf"
pinned_bg "$TMP/logs/origin.log" 0 "$NGINX" -p "$TMP/origin" -c "$TMP/origin/nginx.conf" -e "$TMP/origin/error.log"
ORIGIN_H1_PID=$LAST_PID
render "$HERE/conf/origin-nginx-h2c.conf.in" "$TMP/origin-h2c/nginx.conf" \
  DIR="$TMP/origin-h2c" PORT="$ORIGIN_H2C_PORT" STATUS="$STATUS_H2C_PORT" WWW="$TMP/www"
pinned_bg "$TMP/logs/origin-h2c.log" 0 "$NGINX" -p "$TMP/origin-h2c" -c "$TMP/origin-h2c/nginx.conf" -e "$TMP/origin-h2c/error.log"
ORIGIN_H2C_PID=$LAST_PID
interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$ORIGIN_H1_PORT/1k.bin" "$TMP/www/1k.bin" "$READY_TIMEOUT" "$ORIGIN_H1_PID" ||
  { cat "$TMP/logs/origin.log" "$TMP/origin/error.log" >&2 2>/dev/null; die "origin nginx did not come up"; }
interruptible "$PY" "$H2PY" wait-h2 "http://127.0.0.1:$ORIGIN_H2C_PORT/1k.bin" "$TMP/www/1k.bin" "$READY_TIMEOUT" "$ORIGIN_H2C_PID" "$NGHTTP" ||
  { cat "$TMP/logs/origin-h2c.log" "$TMP/origin-h2c/error.log" >&2 2>/dev/null; die "h2c origin nginx did not come up"; }
for p in "$STATUS_H1_PORT" "$STATUS_H2C_PORT"; do
  "$PY" "$H2PY" accepts "$p" >/dev/null || die "no origin stub_status on port $p"
done
DESC[$ORIGIN_H1_PID]=$("$PY" "$LIB" tree "$ORIGIN_H1_PID")
DESC[$ORIGIN_H2C_PID]=$("$PY" "$LIB" tree "$ORIGIN_H2C_PID")
log "origins: nginx pid $ORIGIN_H1_PID on 127.0.0.1:$ORIGIN_H1_PORT (HTTP/1.1), nginx pid $ORIGIN_H2C_PID on 127.0.0.1:$ORIGIN_H2C_PORT (h2c only)"

# ------------------------------------------------------------------ proxies
start_proxy() { # SCENARIO NAME: start it pinned; PID in $PROXY_PID; non-zero with $FAIL_NOTE
  local sc=$1 name=$2 port=${PORT[$1:$2]} dir=$TMP/$1-$2 logf=$TMP/logs/$1-$2.log url extra=""
  mkdir -p "$dir"
  PROXY_PID="" FAIL_NOTE=""
  case $sc:$name in
    tls-h2:weir | h2c-h2c:weir)
      if [[ ! -x $WEIR_BIN ]]; then
        FAIL_NOTE="${WEIR_BIN#"$ROOT"/} not found (make build)"
        return 3
      fi
      if [[ $sc == tls-h2 ]]; then
        render "$HERE/conf/weir-h2.yaml.in" "$dir/weir.yaml" PORT="$port" ORIGIN="$ORIGIN_H1_PORT" \
          CERT="$CERT" KEY="$KEY" THREADS="$WEIR_THREADS" SUITE="$SUITE"
        [[ -n $WEIR_POOL ]] && sed -i "s|^  access_log: off|&\\n  upstream_keepalive: $WEIR_POOL\\n  upstream_pool: {shared_per_peer: $WEIR_POOL}|" "$dir/weir.yaml"
      else
        [[ -n $WEIR_H2C_WINDOW ]] && extra="\\n    initial_window_size: $WEIR_H2C_WINDOW"
        render "$HERE/conf/weir-h2c.yaml.in" "$dir/weir.yaml" PORT="$port" ORIGIN="$ORIGIN_H2C_PORT" \
          THREADS="$WEIR_THREADS"
        [[ -n $extra ]] && sed -i "s|^    max_requests: 0|&$extra|" "$dir/weir.yaml"
      fi
      pinned_bg "$logf" 1 "$WEIR_BIN" -c "$dir/weir.yaml"
      ;;
    tls-h2:nginx)
      render "$HERE/conf/proxy-nginx-h2.conf.in" "$dir/nginx.conf" DIR="$dir" PORT="$port" \
        ORIGIN="$ORIGIN_H1_PORT" CERT="$CERT" KEY="$KEY" SUITE="$SUITE"
      pinned_bg "$logf" 1 "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
      ;;
    tls-h2:haproxy)
      render "$HERE/conf/haproxy-h2.cfg.in" "$dir/haproxy.cfg" PORT="$port" ORIGIN="$ORIGIN_H1_PORT" PEM="$PEM" SUITE="$SUITE"
      pinned_bg "$logf" 1 "$HAPROXY" -db -f "$dir/haproxy.cfg"
      ;;
    h2c-h2c:haproxy)
      render "$HERE/conf/haproxy-h2c.cfg.in" "$dir/haproxy.cfg" PORT="$port" ORIGIN="$ORIGIN_H2C_PORT"
      pinned_bg "$logf" 1 "$HAPROXY" -db -f "$dir/haproxy.cfg"
      ;;
    *)
      FAIL_NOTE="no $name row in $sc"
      return 3
      ;;
  esac
  PROXY_PID=$LAST_PID
  url="http://127.0.0.1:$port/1k.bin"
  [[ $sc == tls-h2 ]] && url="https://127.0.0.1:$port/1k.bin"
  # Listening, speaking HTTP/2 (nghttp speaks nothing else) and serving the file byte for byte.
  if ! interruptible "$PY" "$H2PY" wait-h2 "$url" "$TMP/www/1k.bin" "$READY_TIMEOUT" "$PROXY_PID" \
      "$NGHTTP" >/dev/null 2>"$dir/wait.err"; then
    FAIL_NOTE="not serving /1k.bin correctly over HTTP/2: $(tail -n1 "$dir/wait.err")"
    local tail_log
    tail_log=$(tail -n 3 "$logf" 2>/dev/null | tr '\n' ' ')
    [[ -n $tail_log ]] && FAIL_NOTE+="; log: $tail_log"
    stop_pid "$PROXY_PID"
    return 1
  fi
  DESC[$PROXY_PID]=$("$PY" "$LIB" tree "$PROXY_PID")
  return 0
}

# h2load, bounded in count (-n) and time: -N ends a connection with no activity for
# IDLE_TIMEOUT s (a stall then shows as timeouts and failures in h2load's report), and
# `timeout` kills it after 30 s + 1 s per 1000 requests. Parses into H_* vars.
run_h2load() { # URL N OUTFILE
  local url=$1 n=$2 outf=$3 kv tlsopt=()
  [[ $url == https://* ]] && tlsopt=(--tls13-ciphers="$SUITE")
  interruptible timeout -k 5 $((30 + n / 1000)) "${LOAD_PIN[@]}" "${NICE[@]}" "$H2LOAD" \
    "${tlsopt[@]}" -c "$CONNS" -m "$STREAMS" -t 1 -n "$n" -N "$IDLE_TIMEOUT" "$url" \
    </dev/null >"$outf" 2>&1 || return 1
  local parsed
  parsed=$("$PY" "$H2PY" h2load "$outf") || return 1
  for kv in $parsed; do printf -v "H_${kv%%=*}" '%s' "${kv#*=}"; done
  H_errors=$((H_total - H_succeeded + H_s3xx + H_s4xx + H_s5xx))
  H_detail="$H_succeeded of $H_total succeeded; failed $H_failed (errored $H_errored), timeout $H_timeout, non-2xx $((H_s3xx + H_s4xx + H_s5xx)); ${H_data_bytes:-?} bytes of response data"
  return 0
}

RESULTS=$TMP/results.tsv
printf '# %s\n' "scenario proxy status requests duration_s cpu_s origin_cpu_s other_cpu_s rss_peak_kib oopened oconns errors err_detail mean_ms max_ms proto note window_s" >"$RESULTS"
row() { local IFS=$'\t'; printf '%s\n' "$*" >>"$RESULTS"; }
failrow() { # SCENARIO NAME STATUS NOTE
  row "$1" "$2" "$3" "" "" "" "" "" "" "" "" "" "" "" "" "" "$4"
}
children_cpu_delta() { # TIMES0 TIMES1: growth of reaped children's user+sys seconds
  awk 'function sec(t,  m) { m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t); return m * 60 + t }
       FNR == 2 { v[FILENAME] = sec($1) + sec($2) }
       END { printf "%.2f", v[ARGV[2]] - v[ARGV[1]] }' "$1" "$2"
}
delta() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
accepts() { "$PY" "$H2PY" accepts "$ORIGIN_STATUS" || echo 0; }
HARNESS_FAIL=0 NOISY=0

# Before the measured part of a row: CPU counters of the proxy, the origin, the whole machine
# and this script's reaped children; after it, the same, and M_* hold the differences. The
# window (M_wall) is a little longer than h2load's run (the sampler's start and stop): the
# machine's other load is a share of it, not of h2load's duration.
snap_begin() { # PID
  times >"$TMP/times0"; M_s0=$("$PY" "$LIB" sysbusy); M_w0=$(date +%s.%N)
  M_c0=$("$PY" "$LIB" cpu "$1"); M_o0=$("$PY" "$LIB" cpu "$ORIGIN_PID"); M_t0=$(accepts)
}
snap_end() { # PID
  local c1 o1 s1 t1
  c1=$("$PY" "$LIB" cpu "$1"); o1=$("$PY" "$LIB" cpu "$ORIGIN_PID"); t1=$(accepts)
  s1=$("$PY" "$LIB" sysbusy); M_wall=$(delta "$M_w0" "$(date +%s.%N)"); times >"$TMP/times1"
  M_cpu=$(delta "$M_c0" "$c1") M_ocpu=$(delta "$M_o0" "$o1") M_conns=$((t1 - M_t0 - 1)) # less the second status request's own
  M_other=$(awk -v s="$(delta "$M_s0" "$s1")" -v c="$M_cpu" -v o="$M_ocpu" \
    -v k="$(children_cpu_delta "$TMP/times0" "$TMP/times1")" 'BEGIN{printf "%.2f", s - c - o - k}')
  M_mem=$("$PY" "$LIB" mem "$1")
}
check_noise() { # SECONDS
  if awk -v o="$M_other" -v d="$1" 'BEGIN{exit !(o / d > 0.10)}'; then
    log "warning: other processes used $(awk -v o="$M_other" -v d="$1" 'BEGIN{printf "%.0f", 100*o/d}')% of a CPU during this run: its figures are disturbed"
    NOISY=1
  fi
}

measure() { # SCENARIO NAME PID
  local sc=$1 name=$2 pid=$3 port=${PORT[$1:$2]} url want_alpn=h2 sampler samples
  url="http://127.0.0.1:$port/1k.bin"
  [[ $sc == tls-h2 ]] && url="https://127.0.0.1:$port/1k.bin"
  [[ $sc == h2c-h2c ]] && want_alpn=h2c
  if ! run_h2load "$url" "$WARMUP" "$TMP/logs/h2load-$sc-$name-warmup.txt"; then
    MEASURE_NOTE="h2load warm-up failed: $(grep -v progress "$TMP/logs/h2load-$sc-$name-warmup.txt" | tail -n1)"
    return 1
  fi
  if ((H_errors > 0)); then
    MEASURE_NOTE="warm-up ($WARMUP requests): $H_detail"
    return 1
  fi
  if [[ $H_alpn != "$want_alpn" ]] || [[ $sc == tls-h2 && ($H_protocol != TLSv1.3 || $H_cipher != "$SUITE") ]]; then
    MEASURE_NOTE="h2load negotiated $H_alpn${H_protocol:+ over $H_protocol $H_cipher}, not $want_alpn"
    return 1
  fi
  rm -f "$TMP/samples"
  snap_begin "$pid"
  # The sampler counts the proxy's established connections to the origin port every
  # SAMPLE_INTERVAL s; it stops itself after the h2load bound, and is stopped (and reaped,
  # so its CPU is not "other") before the counters are read.
  start_bg "$TMP/logs/sampler.log" "${LOAD_PIN[@]}" "$PY" "$H2PY" sample-conns "$ORIGIN_PORT" \
    "$SAMPLE_INTERVAL" $((30 + REQUESTS / 1000)) "$TMP/samples"
  sampler=$LAST_PID
  local profiler=""
  if [[ -n $PERF_FOR && " $PERF_FOR " == *" $name "* ]]; then
    # BENCH_H2_PERF: a profile of the measured requests (perf's CPU shows as "other")
    start_bg "$TMP/logs/perf-$sc-$name.log" perf record -F 2000 -g -p "$pid" \
      -o "$OUT_DIR/h2-perf-$sc-$name.data"
    profiler=$LAST_PID
  fi
  if ! run_h2load "$url" "$REQUESTS" "$TMP/logs/h2load-$sc-$name.txt"; then
    stop_pid "$sampler"
    [[ -n $profiler ]] && stop_pid "$profiler"
    MEASURE_NOTE="h2load failed: $(grep -v progress "$TMP/logs/h2load-$sc-$name.txt" | tail -n1)"
    return 1
  fi
  stop_pid "$sampler"
  [[ -n $profiler ]] && { kill -INT "$profiler" 2>/dev/null; stop_pid "$profiler"; }
  snap_end "$pid"
  samples=$(paste -sd, "$TMP/samples" 2>/dev/null)
  kill -0 "$pid" 2>/dev/null || { MEASURE_NOTE="process exited during the run"; return 1; }
  if ((H_errors > 0)); then
    # Figures of a run that did not complete are not comparable: the row fails, with what
    # h2load saw (a stall shows as timeouts and as requests never started).
    MEASURE_NOTE="$H_detail; origin conns (ss) ${samples:-?}"
    return 1
  fi
  local proto="$H_alpn"
  [[ $sc == tls-h2 ]] && proto="$H_alpn, $H_protocol $H_cipher $H_group"
  row "$sc" "$name" ok "$H_done" "$H_secs" "$M_cpu" "$M_ocpu" "$M_other" "${M_mem#* }" "$M_conns" \
    "$samples" "$H_errors" "$H_detail" "${H_mean_ms:-}" "${H_max_ms:-}" "$proto" "" "$M_wall"
  log "$(printf '%-8s %-8s %8.0f req/s  CPU %5.2f s  %.2f CPU-s/100k  origin conns %s, %d opened' \
    "$sc" "$name" "$(awk -v r="$H_done" -v s="$H_secs" 'BEGIN{print r/s}')" "$M_cpu" \
    "$(awk -v c="$M_cpu" -v r="$H_done" 'BEGIN{print c/r*1e5}')" "${samples:-?}" "$M_conns")"
  check_noise "$M_wall"
  return 0
}

# Header for the Markdown report.
weir_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain -- src include app 2>/dev/null) ]] && weir_rev+=" (+ uncommitted changes)"
if [[ $WEIR_BIN != "$ROOT"/* ]]; then
  weir_rev="? (a binary outside this checkout, which is at $weir_rev; sha256 $(sha256sum "$WEIR_BIN" 2>/dev/null | cut -c1-12))"
fi
cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
cmdline="BENCH_H2_REQUESTS=$REQUESTS bash bench/h2.sh"
[[ ${BENCH_QUICK:-0} == 1 ]] && cmdline="BENCH_QUICK=1 $cmdline"
[[ $WEIR_THREADS != 1 ]] && cmdline="BENCH_WEIR_THREADS=$WEIR_THREADS $cmdline"
[[ -n $WEIR_H2C_WINDOW ]] && cmdline="BENCH_H2_WEIR_WINDOW=$WEIR_H2C_WINDOW $cmdline"
[[ -n $WEIR_POOL ]] && cmdline="BENCH_H2_WEIR_POOL=$WEIR_POOL $cmdline"
[[ $WEIR_BIN != "$ROOT/build/weir" ]] && cmdline="WEIR_BIN=$WEIR_BIN $cmdline"
[[ $SCENARIOS != "tls-h2 h2c-h2c" ]] && cmdline="BENCH_H2_SCENARIOS=\"$SCENARIOS\" $cmdline"
[[ $PROXIES != "weir nginx haproxy" ]] && cmdline="BENCH_PROXIES=\"$PROXIES\" $cmdline"
{
  echo "# weir HTTP/2 bench — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r)"
  echo "- weir: ${WEIR_BIN#"$ROOT"/} at $weir_rev; $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); $("$HAPROXY" -v 2>/dev/null | head -n1 | awk '{print "HAProxy " $3}'); $("$OPENSSL" version | awk '{print $1 " " $2}'); $("$H2LOAD" --version 2>&1 | head -n1)"
  echo "- load: h2load -c$CONNS -m$STREAMS -t1 -N ${IDLE_TIMEOUT}s, $WARMUP requests warm-up then -n $REQUESTS measured, GET /1k.bin (1 KiB); h2load pinned with the origins$([[ -n ${NICE[*]} ]] && echo ", nice -n $LOAD_NICE")"
  echo "- tls-h2: TLS 1.3 only, one suite ($SUITE, h2load --tls13-ciphers), $CERT_DESC, ALPN h2 (checked in h2load's output), tickets off (50 handshakes per h2load run); origin: tls.sh's nginx, HTTP/1.1 keep-alive from the proxies (weir $([[ -n $WEIR_POOL ]] && echo "upstream_keepalive: $WEIR_POOL, upstream_pool.shared_per_peer: $WEIR_POOL" || echo "default pool: upstream_keepalive 128, upstream_pool.shared_per_peer 256"), nginx keepalive 64, HAProxy http-reuse always)"
  echo "- h2c-h2c: h2c with prior knowledge to the proxy (weir h2c: true; HAProxy bind proto h2), h2c to an nginx origin (listen http2, no TLS; weir protocol: h2c$([[ -n $WEIR_H2C_WINDOW ]] && echo " and server.http2.initial_window_size: $WEIR_H2C_WINDOW, the workaround for the connection-window stall"); HAProxy server proto h2, http-reuse always); nginx cannot proxy to h2: no row"
  echo "- origin conns: established TCP connections to the origin's port (the proxy's side), \`ss -Htn state established dport = :PORT\` every ${SAMPLE_INTERVAL} s of the measured run; origin conns opened: the growth of the origin's stub_status \"accepts\" over the measured run"
  echo "- placement: $PIN_DESC; each proxy one worker/thread$([[ $WEIR_THREADS != 1 ]] && echo " (weir: $WEIR_THREADS threads)"), fresh process per row"
  echo "- background CPU load (other processes) just before the run: ${BUSY_BEFORE}% of all CPUs@AFTER@"
  echo "- reference (issue 12, tls-h2): nginx 1.52, HAProxy 1.27 CPU-s/100k; goal weir ≤ 0.8× HAProxy"
  echo "- command: $cmdline"
  echo
} >"$TMP/meta.md"

# ------------------------------------------------------------------ runs
log "settings: h2load -c$CONNS -m$STREAMS, $WARMUP + $REQUESTS requests per row; $PIN_DESC"

for sc in $SCENARIOS; do
  if [[ $sc == tls-h2 ]]; then ORIGIN_PID=$ORIGIN_H1_PID ORIGIN_PORT=$ORIGIN_H1_PORT ORIGIN_STATUS=$STATUS_H1_PORT
  else ORIGIN_PID=$ORIGIN_H2C_PID ORIGIN_PORT=$ORIGIN_H2C_PORT ORIGIN_STATUS=$STATUS_H2C_PORT; fi
  for name in $PROXIES; do
    [[ $sc == h2c-h2c && $name == nginx ]] && continue # nginx does not speak h2 to origins
    start_proxy "$sc" "$name"
    st=$?
    if [[ $st != 0 ]]; then
      status=failed
      [[ $st == 3 ]] && status=skipped
      failrow "$sc" "$name" "$status" "$FAIL_NOTE"
      log "$sc $name: ${status^^}: $FAIL_NOTE"
      [[ $name != weir ]] && HARNESS_FAIL=1
      continue
    fi
    if ! measure "$sc" "$name" "$PROXY_PID"; then
      failrow "$sc" "$name" failed "$MEASURE_NOTE"
      log "$sc $name: FAILED: $MEASURE_NOTE"
      [[ $name != weir ]] && HARNESS_FAIL=1
    fi
    stop_pid "$PROXY_PID"
  done
done

# ------------------------------------------------------------------ report
BUSY_AFTER=$("$PY" "$LIB" busy 1)
sed -i -e "s|@AFTER@|, just after: ${BUSY_AFTER}%|" "$TMP/meta.md"
(( BUSY_BEFORE >= 15 || BUSY_AFTER >= 15 || NOISY )) &&
  log "warning: other processes were busy (${BUSY_BEFORE}% of all CPUs before, ${BUSY_AFTER}% after; see 'other CPU %'): figures are not trustworthy"
cp "$RESULTS" "$OUT_DIR/h2.tsv"
rm -rf "$OUT_DIR/h2-logs" && cp -r "$TMP/logs" "$OUT_DIR/h2-logs"
for d in "$TMP"/tls-h2-* "$TMP"/h2c-h2c-*; do
  [[ -d $d ]] || continue
  for f in weir.yaml nginx.conf haproxy.cfg; do
    [[ -f $d/$f ]] && cp "$d/$f" "$OUT_DIR/h2-logs/$(basename "$d")-$f"
  done
done
cp "$TMP/origin-h2c/nginx.conf" "$OUT_DIR/h2-logs/origin-h2c-nginx.conf"
echo
"$PY" "$H2PY" report "$RESULTS" "$OUT_DIR/h2.md" "$TMP/meta.md" || { log "report failed"; exit 2; }
echo
echo "Markdown: ${OUT_DIR#"$ROOT"/}/h2.md   raw: ${OUT_DIR#"$ROOT"/}/h2.tsv, ${OUT_DIR#"$ROOT"/}/h2-logs/"
if [[ $HARNESS_FAIL != 0 ]]; then
  log "harness failure: nginx or HAProxy could not be measured; see above"
  exit 1
fi
exit 0
