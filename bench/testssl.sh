#!/usr/bin/env bash
# testssl.sh against weir's TLS listener with its default policy and against nginx with its
# default TLS settings, both on 127.0.0.1, same RSA-2048 certificate. See bench/README.md
# (testssl.sh).
#
#   bash bench/testssl.sh                     # full testssl run per server, ~1 min each
#   BENCH_TESTSSL_FAST=1 bash bench/testssl.sh   # testssl --fast (fewer cipher checks)
#   BENCH_TESTSSL_WEIR_TLS='protocols: TLSv1.3' bash bench/testssl.sh   # weir with extra tls keys
#
# Prints, per server, the count of testssl's findings by severity and every finding rated
# MEDIUM or above; writes them as Markdown to bench/out/testssl.md, and testssl's JSON and
# text output to bench/out/testssl-<server>.{json,txt}.
#
# Offline: testssl is given the address (--ip 127.0.0.1, --nodns none: no DNS lookups), and
# without --phone-out it fetches no CRL or OCSP response. Each testssl run is bounded with
# timeout (BENCH_TESTSSL_TIMEOUT, 600 s). Every process this script starts is killed by PID
# on exit; files go only to a mktemp directory (removed at exit) and to bench/out/.
#
# Exit status: 0 when both servers were scanned (whatever the findings); 1 when a scan failed
# (a server did not come up, testssl timed out or wrote no JSON); 2 when a prerequisite is
# missing or the origin fails.
# shellcheck disable=SC2317
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT_DIR=$HERE/out
LIB=$HERE/lib.py
TLSPY=$HERE/tls.py

SERVERS=${BENCH_TESTSSL_SERVERS:-"weir nginx"}
TS_TIMEOUT=${BENCH_TESTSSL_TIMEOUT:-600}
WEIR_TLS_EXTRA=${BENCH_TESTSSL_WEIR_TLS:-}
WEIR_BIN=${WEIR_BIN:-$ROOT/build/weir}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-10}

BENCH_TAG=testssl
# shellcheck source=bench/common.sh
source "$HERE/common.sh"

for s in $SERVERS; do [[ $s =~ ^(weir|nginx)$ ]] || die "BENCH_TESTSSL_SERVERS: unknown server '$s' (weir, nginx)"; done
[[ $TS_TIMEOUT =~ ^[0-9]+$ && $TS_TIMEOUT -ge 30 ]] || die "BENCH_TESTSSL_TIMEOUT must be at least 30 (got '$TS_TIMEOUT')"

NGINX=${NGINX_BIN:-$(find_bin nginx)} || die "nginx not found (apt-get install nginx-light)"
TESTSSL=${TESTSSL_BIN:-$(find_bin testssl)} || die "testssl not found (apt-get install testssl.sh)"
OPENSSL=${OPENSSL_BIN:-$(find_bin openssl)} || die "openssl not found (apt-get install openssl)"
PY=$(find_bin python3) || die "python3 not found"
command -v timeout >/dev/null || die "timeout (coreutils) not found"
[[ " $SERVERS " == *" weir "* && ! -x $WEIR_BIN ]] && die "${WEIR_BIN#"$ROOT"/} not found (make build)"

mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
bench_tmpdir weir-testssl

render() { # TEMPLATE OUT KEY=VALUE...
  local tpl=$1 out=$2 kv args=()
  shift 2
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" >"$out"
}

# ------------------------------------------------------------------ certificate
# A local CA (RSA 2048) and a leaf it signs (RSA 2048, SHA-256, a year, SAN localhost and
# 127.0.0.1, serverAuth). testssl trusts the CA (--add-ca). The leaf names a CRL and an OCSP
# responder on 127.0.0.1:9, never contacted (no --phone-out): without them testssl rates the
# certificate HIGH ("neither CRL nor OCSP URI provided"), as it does a self-signed one
# (chain of trust) or one that expires within 30 days: findings about a throwaway test
# certificate, not about the server's TLS settings, which are what is compared here.
PKI=$TMP/pki
mkdir -p "$PKI" "$TMP/logs" "$TMP/www" "$TMP/origin"
cat >"$PKI/leaf.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
crlDistributionPoints=URI:http://127.0.0.1:9/ca.crl
authorityInfoAccess=OCSP;URI:http://127.0.0.1:9/ocsp
EOF
{
  "$OPENSSL" req -x509 -newkey rsa:2048 -sha256 -nodes -days 400 -subj "/CN=weir bench test CA" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "$PKI/ca.key" -out "$PKI/ca.pem" &&
    "$OPENSSL" req -newkey rsa:2048 -sha256 -nodes -subj /CN=localhost -keyout "$PKI/key.pem" -out "$PKI/leaf.csr" &&
    "$OPENSSL" x509 -req -in "$PKI/leaf.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 365 -sha256 -extfile "$PKI/leaf.ext" -out "$PKI/cert.pem"
} >"$TMP/logs/openssl.log" 2>&1 || { cat "$TMP/logs/openssl.log" >&2; die "cannot make the certificates"; }
CERT=$PKI/cert.pem KEY=$PKI/key.pem CA=$PKI/ca.pem
log "certificate: RSA 2048, SHA-256, signed by a local test CA (given to testssl with --add-ca)"

# ------------------------------------------------------------------ origin
echo "weir testssl bench" >"$TMP/www/index.html"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
chmod 755 "$TMP/www" && chmod 644 "$TMP/www"/*
mapfile -t PORTS < <("$PY" "$LIB" ports 3) || die "cannot pick free ports"
ORIGIN_PORT=${PORTS[0]}
declare -A PORT=([weir]=${PORTS[1]} [nginx]=${PORTS[2]})
render "$HERE/conf/origin-nginx.conf.in" "$TMP/origin/nginx.conf" DIR="$TMP/origin" PORT="$ORIGIN_PORT" WWW="$TMP/www"
start_bg "$TMP/logs/origin.log" "$NGINX" -p "$TMP/origin" -c "$TMP/origin/nginx.conf" -e "$TMP/origin/error.log"
ORIGIN_PID=$LAST_PID
interruptible "$PY" "$LIB" wait-http "http://127.0.0.1:$ORIGIN_PORT/1k.bin" "$TMP/www/1k.bin" "$READY_TIMEOUT" "$ORIGIN_PID" ||
  { cat "$TMP/logs/origin.log" "$TMP/origin/error.log" >&2 2>/dev/null; die "origin nginx did not come up"; }
DESC[$ORIGIN_PID]=$("$PY" "$LIB" tree "$ORIGIN_PID")

# ------------------------------------------------------------------ servers
# weir: a TLS listener with only its certificate (plus BENCH_TESTSSL_WEIR_TLS, if set).
# nginx: an ssl listener with only ssl_certificate and ssl_certificate_key: nginx's built-in
# TLS defaults. Both proxy to the same origin, so the HTTP part testssl looks at (headers at
# "/") is the same response.
start_server() { # NAME: PID in SERVER_PID; non-zero with FAIL_NOTE
  local name=$1 port=${PORT[$1]} dir=$TMP/$1 extra=""
  mkdir -p "$dir"
  case $name in
    weir)
      # shellcheck disable=SC2001
      [[ -n $WEIR_TLS_EXTRA ]] && extra=$(sed 's/^/      /' <<<"$WEIR_TLS_EXTRA")
      cat >"$dir/weir.yaml" <<EOF
server:
  threads: 1
listeners:
  - address: 127.0.0.1:$port
    tls:
      certificates:
        - {cert: $CERT, key: $KEY}
$extra
routes:
  - upstream: origin
upstreams:
  origin:
    backends: [127.0.0.1:$ORIGIN_PORT]
EOF
      start_bg "$TMP/logs/weir.log" "$WEIR_BIN" -c "$dir/weir.yaml"
      ;;
    nginx)
      cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        location / { proxy_pass http://127.0.0.1:$ORIGIN_PORT; }
    }
}
EOF
      start_bg "$TMP/logs/nginx.log" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
      ;;
  esac
  SERVER_PID=$LAST_PID
  FAIL_NOTE=""
  # Up, and serving over TLS with this certificate (any TLS version: nginx's defaults here
  # have no TLS 1.3), checked with s_client against the CA.
  local i
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    if printf 'GET /1k.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
      timeout -k 1 5 "$OPENSSL" s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$CA" \
        -verify_return_error -ign_eof -quiet >"$dir/probe.txt" 2>&1 && grep -aq '^HTTP/1.1 200' "$dir/probe.txt"; then
      DESC[$SERVER_PID]=$("$PY" "$LIB" tree "$SERVER_PID")
      return 0
    fi
    sleep 0.1
  done
  FAIL_NOTE="not serving over TLS: $(tail -n1 "$dir/probe.txt" 2>/dev/null); log: $(tail -n 3 "$TMP/logs/$name.log" 2>/dev/null | tr '\n' ' ')"
  stop_pid "$SERVER_PID"
  return 1
}

TS_ARGS=(--quiet --color 0 --warnings off --nodns none --ip 127.0.0.1 --add-ca "$CA"
  --connect-timeout 10 --openssl-timeout 10)
[[ ${BENCH_TESTSSL_FAST:-0} == 1 ]] && TS_ARGS+=(--fast)
FAILED=0
REPORT_ARGS=()
for name in $SERVERS; do
  rm -f "$OUT_DIR/testssl-$name.json" "$OUT_DIR/testssl-$name.txt"
  if ! start_server "$name"; then
    log "$name: FAILED: $FAIL_NOTE"
    FAILED=1
    continue
  fi
  log "$name: listening on 127.0.0.1:${PORT[$name]}; testssl ${TS_ARGS[*]} (at most ${TS_TIMEOUT}s)"
  start=$SECONDS
  # testssl's exit status is not an error count; a run is judged by its JSON file.
  interruptible timeout -k 10 "$TS_TIMEOUT" "$TESTSSL" "${TS_ARGS[@]}" --jsonfile "$TMP/$name.json" \
    "https://localhost:${PORT[$name]}/" </dev/null >"$TMP/$name.txt" 2>&1
  rc=$?
  cp "$TMP/$name.txt" "$OUT_DIR/testssl-$name.txt"
  if [[ $rc == 124 || $rc == 137 ]]; then
    log "$name: FAILED: testssl did not finish within ${TS_TIMEOUT}s"
    FAILED=1
  elif [[ ! -s $TMP/$name.json ]] || ! grep -q '^ Done ' "$TMP/$name.txt"; then
    log "$name: FAILED: testssl wrote no JSON or did not finish (exit $rc): $(tail -n 2 "$TMP/$name.txt" | tr '\n' ' ')"
    FAILED=1
  else
    cp "$TMP/$name.json" "$OUT_DIR/testssl-$name.json"
    log "$name: testssl done in $((SECONDS - start)) s (exit $rc)"
    REPORT_ARGS+=("$name=$TMP/$name.json")
  fi
  case $name in
    weir) cp "$TMP/weir/weir.yaml" "$OUT_DIR/testssl-weir.yaml" ;;
    nginx) cp "$TMP/nginx/nginx.conf" "$OUT_DIR/testssl-nginx.conf" ;;
  esac
  stop_pid "$SERVER_PID"
done

# ------------------------------------------------------------------ summary
weir_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain -- src include app 2>/dev/null) ]] && weir_rev+=" (+ uncommitted changes)"
# A binary from elsewhere was not necessarily built from this checkout: say so, and which one.
if [[ $WEIR_BIN != "$ROOT"/* ]]; then
  weir_rev="? (a binary outside this checkout, which is at $weir_rev; sha256 $(sha256sum "$WEIR_BIN" 2>/dev/null | cut -c1-12))"
fi
cmdline="bash bench/testssl.sh"
[[ -n $WEIR_TLS_EXTRA ]] && cmdline="BENCH_TESTSSL_WEIR_TLS='$WEIR_TLS_EXTRA' $cmdline"
[[ ${BENCH_TESTSSL_FAST:-0} == 1 ]] && cmdline="BENCH_TESTSSL_FAST=1 $cmdline"
{
  echo "# testssl.sh against weir and nginx — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- weir: ${WEIR_BIN#"$ROOT"/} at $weir_rev, a TLS listener with only \`certificates\`$([[ -n $WEIR_TLS_EXTRA ]] && echo " and \`$WEIR_TLS_EXTRA\`") (weir's default policy)"
  echo "- nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), \`listen ... ssl\` with only \`ssl_certificate\` and \`ssl_certificate_key\` (nginx's built-in TLS defaults)"
  echo "- both: $("$OPENSSL" version | awk '{print $1 " " $2}'), the same RSA-2048 certificate signed by a local test CA, on 127.0.0.1, proxying to the same origin"
  echo "- scanner: $("$TESTSSL" --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | awk '/testssl +[0-9]/{print "testssl " $2; exit}'), \`testssl ${TS_ARGS[*]/#$CA/CA.pem} --jsonfile F https://localhost:PORT/\`"
  echo "- command: $cmdline"
  echo
} >"$TMP/meta.md"
if ((${#REPORT_ARGS[@]})); then
  echo
  "$PY" "$TLSPY" testssl-report "$OUT_DIR/testssl.md" "$TMP/meta.md" "${REPORT_ARGS[@]}" || { log "report failed"; exit 2; }
  echo
  echo "Markdown: ${OUT_DIR#"$ROOT"/}/testssl.md   testssl output: ${OUT_DIR#"$ROOT"/}/testssl-<server>.{txt,json}"
fi
exit "$FAILED"
