#!/usr/bin/env bash
# weir, nginx and HAProxy terminating TLS 1.3 in front of the same plain-HTTP origin, in one
# run. See bench/README.md (tls.sh).
#
#   bash bench/tls.sh                  # 10 s keep-alive runs, 10000 handshakes (~2 min in all)
#   BENCH_QUICK=1 bash bench/tls.sh    # smoke test: 2 s runs, 1000 handshakes (~40 s)
#
# Two measures per proxy, each on a fresh proxy process: HTTP/1.1 keep-alive over TLS with
# wrk (proxy CPU per 100k requests), and full handshakes with h2load, one request per
# connection (proxy CPU per 1000 handshakes). Same certificate, TLS 1.3 only, session
# resumption off for all three (checked with `openssl s_client -reconnect` before the load).
#
# Everything listens on 127.0.0.1 on free ports picked at run time; every process this
# script starts is killed by PID on exit (including Ctrl-C); files go only to a mktemp
# directory (removed at exit) and to bench/out/.
#
# Exit status: 0 when the harness worked, whatever the figures (weir missing, failing to
# start, serve or measure is reported in its row); 1 when nginx or HAProxy could not be
# measured; 2 when a setting is wrong, a prerequisite is missing or the origin fails.
# W_* and H_* are set with printf -v; cleanup is reached through trap.
# shellcheck disable=SC2154,SC2317
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT_DIR=$HERE/out
LIB=$HERE/lib.py
TLSPY=$HERE/tls.py

# ------------------------------------------------------------------ settings
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  DURATION=2
  HANDSHAKES=${BENCH_HANDSHAKES:-1000}
else
  DURATION=${BENCH_SECONDS:-10}
  HANDSHAKES=${BENCH_HANDSHAKES:-10000}
fi
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNECTIONS:-50}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
HS_CLIENTS=${BENCH_HANDSHAKE_CLIENTS:-10}
HS_WARMUP=${BENCH_HANDSHAKE_WARMUP:-$((HANDSHAKES / 10))}
SCENARIOS=${BENCH_TLS_SCENARIOS:-"keepalive handshake"}
PROXIES=${BENCH_PROXIES:-"weir nginx haproxy"}
CERT_KIND=${BENCH_TLS_CERT:-ecdsa}
# The one TLS 1.3 suite all three offer: the same record protection whichever side's
# preference applies (wrk's and s_client's first choice too).
SUITE=${BENCH_TLS_SUITE:-TLS_AES_256_GCM_SHA384}
WEIR_THREADS=${BENCH_WEIR_THREADS:-1}
WEIR_BIN=${WEIR_BIN:-$ROOT/build/weir}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}

BENCH_TAG=tls
# shellcheck source=bench/common.sh
source "$HERE/common.sh"

for v in DURATION WARMUP CONNS WRK_THREADS HANDSHAKES HS_CLIENTS HS_WARMUP WEIR_THREADS READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer (got '${!v}')"
done
((HANDSHAKES >= HS_CLIENTS && HS_WARMUP >= HS_CLIENTS)) ||
  die "BENCH_HANDSHAKES and BENCH_HANDSHAKE_WARMUP must be at least BENCH_HANDSHAKE_CLIENTS ($HS_CLIENTS)"
for s in $SCENARIOS; do [[ $s =~ ^(keepalive|handshake)$ ]] || die "BENCH_TLS_SCENARIOS: unknown '$s' (keepalive, handshake)"; done
for p in $PROXIES; do [[ $p =~ ^(weir|nginx|haproxy)$ ]] || die "BENCH_PROXIES: unknown proxy '$p'"; done
[[ $SUITE =~ ^TLS_[A-Z0-9_]+$ ]] || die "BENCH_TLS_SUITE must be one TLS 1.3 suite name (got '$SUITE')"
case $CERT_KIND in
  ecdsa) CERT_DESC="ECDSA P-256 (prime256v1), self-signed, SHA-256" ;;
  rsa) CERT_DESC="RSA 2048, self-signed, SHA-256" ;;
  *) die "BENCH_TLS_CERT must be ecdsa or rsa (got '$CERT_KIND')" ;;
esac

# ------------------------------------------------------------------ prerequisites
NGINX=${NGINX_BIN:-$(find_bin nginx)} || die "nginx not found (apt-get install nginx-light)"
HAPROXY=${HAPROXY_BIN:-$(find_bin haproxy)} || die "haproxy not found (apt-get install haproxy)"
WRK=${WRK_BIN:-$(find_bin wrk)} || die "wrk not found (apt-get install wrk)"
H2LOAD=${H2LOAD_BIN:-$(find_bin h2load)} || die "h2load not found (apt-get install nghttp2-client)"
OPENSSL=${OPENSSL_BIN:-$(find_bin openssl)} || die "openssl not found (apt-get install openssl)"
PY=$(find_bin python3) || die "python3 not found"
command -v timeout >/dev/null || die "timeout (coreutils) not found"

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

# ------------------------------------------------------------------ temp dir, cleanup
mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
bench_tmpdir weir-tls

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
  ps -eo pid,pcpu,comm --sort=-pcpu | sed -n '2,4p' | sed 's/^/[tls]     /' >&2
fi

# ------------------------------------------------------------------ certificate, data, origin
mkdir -p "$TMP/www" "$TMP/origin" "$TMP/logs" "$TMP/pki"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
chmod 755 "$TMP/www" && chmod 644 "$TMP/www/1k.bin"

CERT=$TMP/pki/cert.pem KEY=$TMP/pki/key.pem PEM=$TMP/pki/cert+key.pem
if [[ $CERT_KIND == ecdsa ]]; then keyopt=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
else keyopt=(-newkey rsa:2048); fi
"$OPENSSL" req -x509 "${keyopt[@]}" -sha256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$KEY" -out "$CERT" \
  >"$TMP/logs/openssl-req.log" 2>&1 || { cat "$TMP/logs/openssl-req.log" >&2; die "cannot make the certificate"; }
cat "$CERT" "$KEY" >"$PEM"
log "certificate: $CERT_DESC, for localhost and 127.0.0.1 (the same for all three proxies)"

mapfile -t PORTS < <("$PY" "$LIB" ports 4) || die "cannot pick free ports"
ORIGIN_PORT=${PORTS[0]}
declare -A PORT=([weir]=${PORTS[1]} [nginx]=${PORTS[2]} [haproxy]=${PORTS[3]})

render "$HERE/conf/origin-nginx.conf.in" "$TMP/origin/nginx.conf" \
  DIR="$TMP/origin" PORT="$ORIGIN_PORT" WWW="$TMP/www"
pinned_bg "$TMP/logs/origin.log" 0 "$NGINX" -p "$TMP/origin" -c "$TMP/origin/nginx.conf" -e "$TMP/origin/error.log"
ORIGIN_PID=$LAST_PID
interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$ORIGIN_PORT/1k.bin" "$TMP/www/1k.bin" "$READY_TIMEOUT" "$ORIGIN_PID" ||
  { cat "$TMP/logs/origin.log" "$TMP/origin/error.log" >&2 2>/dev/null; die "origin nginx did not come up"; }
DESC[$ORIGIN_PID]=$("$PY" "$LIB" tree "$ORIGIN_PID")
log "origin nginx pid $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT (plain HTTP)"

# ------------------------------------------------------------------ proxies
# Session resumption, seen from a client. `openssl s_client` makes a full handshake and one
# request (-ign_eof: it reads until the proxy closes, so any NewSessionTicket the proxy sends
# after the handshake arrives) and saves the session it got (-sess_out); when there is one, a
# second connection offers it (-sess_in) and s_client prints "Reused" if the proxy resumed it.
# With TLS 1.3 a client has a session to offer only when it got a ticket. Sets S_tickets,
# S_resumed (yes, no, none: nothing to offer), S_protocol, S_cipher, S_group, S_status.
sclient_check() { # PORT DIR
  local port=$1 dir=$2 kv req='GET /1k.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
  rm -f "$dir/sess.pem" "$dir/s_client-2.txt"
  # shellcheck disable=SC2059
  printf "$req" | timeout -k 2 20 "$OPENSSL" s_client -connect "127.0.0.1:$port" -servername localhost \
    -tls1_3 -ign_eof -sess_out "$dir/sess.pem" >"$dir/s_client-1.txt" 2>&1
  if [[ -s $dir/sess.pem ]]; then
    # shellcheck disable=SC2059
    printf "$req" | timeout -k 2 20 "$OPENSSL" s_client -connect "127.0.0.1:$port" -servername localhost \
      -tls1_3 -ign_eof -sess_in "$dir/sess.pem" >"$dir/s_client-2.txt" 2>&1
  fi
  for kv in $("$PY" "$TLSPY" sclient "$dir/s_client-1.txt" "$dir/s_client-2.txt"); do
    printf -v "S_${kv%%=*}" '%s' "${kv#*=}"
  done
}

start_proxy() { # NAME [TICKETS]: start it pinned; PID in $PROXY_PID; non-zero with $FAIL_NOTE
  local name=$1 tickets=${2:-false} port=${PORT[$1]} dir=$TMP/$1 logf=$TMP/logs/$1.log
  mkdir -p "$dir"
  PROXY_PID="" FAIL_NOTE="" TLS_DESC=""
  case $name in
    weir)
      if [[ ! -x $WEIR_BIN ]]; then
        FAIL_NOTE="${WEIR_BIN#"$ROOT"/} not found (make build)"
        return 3
      fi
      render "$HERE/conf/weir-tls.yaml.in" "$dir/weir.yaml" PORT="$port" ORIGIN="$ORIGIN_PORT" \
        CERT="$CERT" KEY="$KEY" THREADS="$WEIR_THREADS" TICKETS="$tickets" SUITE="$SUITE"
      pinned_bg "$logf" 1 "$WEIR_BIN" -c "$dir/weir.yaml"
      ;;
    nginx)
      render "$HERE/conf/proxy-nginx-tls.conf.in" "$dir/nginx.conf" DIR="$dir" PORT="$port" \
        ORIGIN="$ORIGIN_PORT" CERT="$CERT" KEY="$KEY" SUITE="$SUITE"
      pinned_bg "$logf" 1 "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
      ;;
    haproxy)
      render "$HERE/conf/haproxy-tls.cfg.in" "$dir/haproxy.cfg" PORT="$port" ORIGIN="$ORIGIN_PORT" PEM="$PEM" SUITE="$SUITE"
      pinned_bg "$logf" 1 "$HAPROXY" -db -f "$dir/haproxy.cfg"
      ;;
  esac
  PROXY_PID=$LAST_PID
  # Listening, speaking TLS 1.3 with our certificate, and serving the file byte for byte.
  if ! interruptible "$PY" "$TLSPY" wait-https "https://127.0.0.1:$port/1k.bin" "$TMP/www/1k.bin" \
      "$READY_TIMEOUT" "$PROXY_PID" "$CERT" >/dev/null 2>"$dir/wait.err"; then
    FAIL_NOTE="not serving /1k.bin correctly over TLS: $(tail -n1 "$dir/wait.err")"
    local tail_log
    tail_log=$(tail -n 3 "$logf" 2>/dev/null | tr '\n' ' ')
    [[ -n $tail_log ]] && FAIL_NOTE+="; log: $tail_log"
    stop_pid "$PROXY_PID"
    return 1
  fi
  sclient_check "$port" "$dir"
  # OpenSSL servers with SSL_OP_NO_TICKET still send TLS 1.3 tickets (stateful ones, naming a
  # session in a cache): with the cache off they cannot be resumed. What counts is resumption.
  if [[ $tickets == false && ($S_resumed == yes || $S_status != 200) ]]; then
    FAIL_NOTE="session resumption is not off (or s_client failed): $S_tickets tickets, resumed: $S_resumed, HTTP status $S_status"
    stop_pid "$PROXY_PID"
    return 1
  fi
  if [[ $S_protocol != TLSv1.3 || $S_cipher != "$SUITE" ]]; then
    FAIL_NOTE="s_client negotiated $S_protocol $S_cipher, not TLSv1.3 $SUITE"
    stop_pid "$PROXY_PID"
    return 1
  fi
  TLS_DESC="$S_protocol $S_cipher $S_group; $S_tickets tickets, resumed: $S_resumed"
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

# h2load: N requests over HS_CLIENTS clients, each request on a new connection (the request
# says Connection: close, so the proxy closes after the response and h2load reconnects).
# The client offers the bench's one suite only (its default list starts with AES-128).
# Bounded: at least 60 s, or 20 ms per request. Parses into H_* vars.
run_h2load() { # URL N OUTFILE
  local url=$1 n=$2 outf=$3 kv
  interruptible timeout -k 5 $((60 + n / 50)) "${LOAD_PIN[@]}" "$H2LOAD" --h1 -H 'Connection: close' \
    --tls13-ciphers="$SUITE" -n "$n" -c "$HS_CLIENTS" -t 1 "$url" </dev/null >"$outf" 2>&1 || return 1
  local parsed
  parsed=$("$PY" "$TLSPY" h2load "$outf") || return 1
  for kv in $parsed; do printf -v "H_${kv%%=*}" '%s' "${kv#*=}"; done
  return 0
}

RESULTS=$TMP/results.tsv
printf '# %s\n' "scenario proxy status requests duration_s cpu_s origin_cpu_s other_cpu_s rss_peak_kib conns errors err_detail p50_us p99_us tls note" >"$RESULTS"
row() { local IFS=$'\t'; printf '%s\n' "$*" >>"$RESULTS"; }
failrow() { # SCENARIO NAME STATUS NOTE
  row "$1" "$2" "$3" "" "" "" "" "" "" "" "" "" "" "" "" "$4"
}
children_cpu_delta() { # TIMES0 TIMES1: growth of reaped children's user+sys seconds
  awk 'function sec(t,  m) { m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t); return m * 60 + t }
       FNR == 2 { v[FILENAME] = sec($1) + sec($2) }
       END { printf "%.2f", v[ARGV[2]] - v[ARGV[1]] }' "$1" "$2"
}
delta() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
HARNESS_FAIL=0 NOISY=0

# Before the measured part of a row: CPU counters of the proxy, the origin, the whole machine
# and this script's reaped children; after it, the same, and M_* hold the differences.
snap_begin() { # PID
  times >"$TMP/times0"; M_s0=$("$PY" "$LIB" sysbusy)
  M_c0=$("$PY" "$LIB" cpu "$1"); M_o0=$("$PY" "$LIB" cpu "$ORIGIN_PID"); M_t0=$("$PY" "$TLSPY" tcp-opens)
}
snap_end() { # PID
  local c1 o1 s1 t1
  c1=$("$PY" "$LIB" cpu "$1"); o1=$("$PY" "$LIB" cpu "$ORIGIN_PID"); t1=$("$PY" "$TLSPY" tcp-opens)
  s1=$("$PY" "$LIB" sysbusy); times >"$TMP/times1"
  M_cpu=$(delta "$M_c0" "$c1") M_ocpu=$(delta "$M_o0" "$o1") M_conns=$((t1 - M_t0))
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

measure_keepalive() { # NAME PORT PID
  local name=$1 url="https://127.0.0.1:$2/1k.bin" pid=$3 nerr
  if ! run_wrk "$url" "$WARMUP" "$TMP/logs/wrk-$name-warmup.txt"; then
    MEASURE_NOTE="wrk warm-up failed: $(grep -v '^WRKRESULT' "$TMP/logs/wrk-$name-warmup.txt" | tail -n1)"
    return 1
  fi
  snap_begin "$pid"
  if ! run_wrk "$url" "$DURATION" "$TMP/logs/wrk-$name.txt"; then
    MEASURE_NOTE="wrk failed: $(tail -n1 "$TMP/logs/wrk-$name.txt")"
    return 1
  fi
  snap_end "$pid"
  kill -0 "$pid" 2>/dev/null || { MEASURE_NOTE="process exited during the run"; return 1; }
  nerr=$((W_connect + W_read + W_write + W_timeout + W_status))
  row keepalive "$name" ok "$W_requests" "$(awk -v u="$W_duration_us" 'BEGIN{printf "%.3f", u/1e6}')" \
    "$M_cpu" "$M_ocpu" "$M_other" "${M_mem#* }" "$M_conns" "$nerr" \
    "connect $W_connect, read $W_read, write $W_write, timeout $W_timeout, non-2xx $W_status" \
    "$W_p50_us" "$W_p99_us" "$TLS_DESC" ""
  log "$(printf 'keepalive %-8s %8.0f req/s  CPU %5.2f s  %.2f CPU-s/100k  errors %d' "$name" \
    "$(awk -v r="$W_requests" -v u="$W_duration_us" 'BEGIN{print r/(u/1e6)}')" "$M_cpu" \
    "$(awk -v c="$M_cpu" -v r="$W_requests" 'BEGIN{print c/r*1e5}')" "$nerr")"
  check_noise "$DURATION"
  return 0
}

measure_handshake() { # NAME PORT PID
  local name=$1 url="https://127.0.0.1:$2/1k.bin" pid=$3 nerr
  if ! run_h2load "$url" "$HS_WARMUP" "$TMP/logs/h2load-$name-warmup.txt"; then
    MEASURE_NOTE="h2load warm-up failed: $(grep -v progress "$TMP/logs/h2load-$name-warmup.txt" | tail -n1)"
    return 1
  fi
  snap_begin "$pid"
  if ! run_h2load "$url" "$HANDSHAKES" "$TMP/logs/h2load-$name.txt"; then
    MEASURE_NOTE="h2load failed: $(grep -v progress "$TMP/logs/h2load-$name.txt" | tail -n1)"
    return 1
  fi
  snap_end "$pid"
  kill -0 "$pid" 2>/dev/null || { MEASURE_NOTE="process exited during the run"; return 1; }
  nerr=$((H_failed + H_errored + H_timeout + H_s3xx + H_s4xx + H_s5xx))
  if [[ $H_protocol != TLSv1.3 ]]; then
    MEASURE_NOTE="h2load negotiated $H_protocol, not TLSv1.3"
    return 1
  fi
  # One connection per request: the TCP connections accepted on this machine during the run
  # (the proxy's, plus any upstream connection it opened to the origin) should match.
  if (( M_conns < H_done || M_conns > H_done + H_done / 50 + 100 )); then
    log "warning: $name: $M_conns TCP connections accepted for $H_done requests (expected one per request)"
  fi
  row handshake "$name" ok "$H_done" "$H_secs" "$M_cpu" "$M_ocpu" "$M_other" "${M_mem#* }" "$M_conns" "$nerr" \
    "failed $H_failed, errored $H_errored, timeout $H_timeout, non-2xx $((H_s3xx + H_s4xx + H_s5xx))" \
    "" "" "$H_protocol $H_cipher $H_group" ""
  log "$(printf 'handshake %-8s %8.0f handshakes/s  CPU %5.2f s  %.0f CPU-ms/1000  errors %d' "$name" \
    "$(awk -v r="$H_done" -v s="$H_secs" 'BEGIN{print r/s}')" "$M_cpu" \
    "$(awk -v c="$M_cpu" -v r="$H_done" 'BEGIN{print c/r*1e6}')" "$nerr")"
  check_noise "$H_secs"
  return 0
}

# Header for the Markdown report.
weir_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain -- src include app 2>/dev/null) ]] && weir_rev+=" (+ uncommitted changes)"
# A binary from elsewhere was not necessarily built from this checkout: say so, and which one.
if [[ $WEIR_BIN != "$ROOT"/* ]]; then
  weir_rev="? (a binary outside this checkout, which is at $weir_rev; sha256 $(sha256sum "$WEIR_BIN" 2>/dev/null | cut -c1-12))"
fi
cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
cmdline="BENCH_SECONDS=$DURATION BENCH_HANDSHAKES=$HANDSHAKES bash bench/tls.sh"
[[ ${BENCH_QUICK:-0} == 1 ]] && cmdline="BENCH_QUICK=1 $cmdline"
[[ $CERT_KIND != ecdsa ]] && cmdline="BENCH_TLS_CERT=$CERT_KIND $cmdline"
[[ $WEIR_THREADS != 1 ]] && cmdline="BENCH_WEIR_THREADS=$WEIR_THREADS $cmdline"
[[ $SUITE != TLS_AES_256_GCM_SHA384 ]] && cmdline="BENCH_TLS_SUITE=$SUITE $cmdline"
[[ $SCENARIOS != "keepalive handshake" ]] && cmdline="BENCH_TLS_SCENARIOS=\"$SCENARIOS\" $cmdline"
[[ $PROXIES != "weir nginx haproxy" ]] && cmdline="BENCH_PROXIES=\"$PROXIES\" $cmdline"
{
  echo "# weir TLS bench — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r)"
  echo "- weir: ${WEIR_BIN#"$ROOT"/} at $weir_rev; $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); $("$HAPROXY" -v 2>/dev/null | head -n1 | awk '{print "HAProxy " $3}'); $("$OPENSSL" version | awk '{print $1 " " $2}') (the library all three and the clients load); wrk $("$WRK" -v 2>&1 | awk 'NR==1{print $2}'); $("$H2LOAD" --version 2>&1 | head -n1)"
  echo "- TLS: 1.3 only, one suite offered by all three ($SUITE), certificate $CERT_DESC; session resumption off in all three (weir session_tickets: false; nginx ssl_session_tickets off, ssl_session_cache off; HAProxy no-tls-tickets, tune.ssl.cachesize 0), checked before each row with openssl s_client: a second connection offering the session of a first is not resumed@CONTROL@; the TLS column gives the tickets each proxy still sends per handshake (OpenSSL's stateful TLS 1.3 tickets under SSL_OP_NO_TICKET, which cannot be resumed with the session cache off)"
  echo "- keep-alive: wrk -t$WRK_THREADS -c$CONNS, ${WARMUP} s warm-up then ${DURATION} s measured, GET /1k.bin (1 KiB) over https"
  echo "- handshakes: h2load --h1 -H 'Connection: close' --tls13-ciphers=$SUITE -c$HS_CLIENTS -t1, $HS_WARMUP requests warm-up then -n $HANDSHAKES measured: one full handshake per request"
  echo "- placement: $PIN_DESC; each proxy one worker/thread$([[ $WEIR_THREADS != 1 ]] && echo " (weir: $WEIR_THREADS threads)"), fresh process per row; origin: nginx, plain HTTP, keep-alive from the proxies"
  echo "- background CPU load (other processes) just before the run: ${BUSY_BEFORE}% of all CPUs@AFTER@"
  echo "- command: $cmdline"
  echo
} >"$TMP/meta.md"

# ------------------------------------------------------------------ runs
log "settings: keep-alive ${DURATION}s after ${WARMUP}s warm-up, wrk -t$WRK_THREADS -c$CONNS; handshakes: $HS_WARMUP + $HANDSHAKES with h2load -c$HS_CLIENTS; $PIN_DESC"

CONTROL=""
# Control for the resumption check: weir with tickets on must show resumed reconnects, or the
# check could not see resumption at all.
if [[ " $PROXIES " == *" weir "* ]] && [[ -x $WEIR_BIN ]]; then
  if start_proxy weir true; then
    log "control: weir with session_tickets: true: s_client got $S_tickets tickets, resumed: $S_resumed (each row below must show 0 tickets and no resumption)"
    [[ $S_resumed == yes ]] || log "warning: the control saw no resumption: the s_client check may not detect it"
    CONTROL=" (control: weir with session_tickets: true sent $S_tickets tickets, resumed: $S_resumed)"
    stop_pid "$PROXY_PID"
  else
    log "control: weir with tickets did not start: $FAIL_NOTE"
  fi
fi

for sc in $SCENARIOS; do
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
    if ! "measure_$sc" "$name" "${PORT[$name]}" "$PROXY_PID"; then
      failrow "$sc" "$name" failed "$MEASURE_NOTE"
      log "$sc $name: FAILED: $MEASURE_NOTE"
      [[ $name != weir ]] && HARNESS_FAIL=1
    fi
    stop_pid "$PROXY_PID"
  done
done

# ------------------------------------------------------------------ report
BUSY_AFTER=$("$PY" "$LIB" busy 1)
sed -i -e "s|@AFTER@|, just after: ${BUSY_AFTER}%|" -e "s|@CONTROL@|$CONTROL|" "$TMP/meta.md"
(( BUSY_BEFORE >= 15 || BUSY_AFTER >= 15 || NOISY )) &&
  log "warning: other processes were busy (${BUSY_BEFORE}% of all CPUs before, ${BUSY_AFTER}% after; see 'other CPU %'): figures are not trustworthy"
cp "$RESULTS" "$OUT_DIR/tls.tsv"
rm -rf "$OUT_DIR/tls-logs" && cp -r "$TMP/logs" "$OUT_DIR/tls-logs"
for name in weir nginx haproxy; do
  for f in weir.yaml nginx.conf haproxy.cfg s_client-1.txt s_client-2.txt; do
    [[ -f $TMP/$name/$f ]] && cp "$TMP/$name/$f" "$OUT_DIR/tls-logs/$name-$f"
  done
done
echo
echo "Certificate: $CERT_DESC"
"$PY" "$TLSPY" report "$RESULTS" "$OUT_DIR/tls.md" "$TMP/meta.md" || { log "report failed"; exit 2; }
echo
echo "Markdown: ${OUT_DIR#"$ROOT"/}/tls.md   raw: ${OUT_DIR#"$ROOT"/}/tls.tsv, ${OUT_DIR#"$ROOT"/}/tls-logs/"
if [[ $HARNESS_FAIL != 0 ]]; then
  log "harness failure: nginx or HAProxy could not be measured; see above"
  exit 1
fi
exit 0
