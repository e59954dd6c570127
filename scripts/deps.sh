#!/usr/bin/env bash
# Installs the Debian packages that weir's build, tests and benchmarks need, when missing.
# Safe to run repeatedly: it only calls apt-get when something is absent.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  libfyaml-dev liburcu-dev libcmocka-dev clang-tidy-14 clang-format-14 cppcheck
  python3 python3-pytest curl nginx-light haproxy wrk procps valgrind nghttp2-client testssl.sh
  libc-ares-dev dnsmasq-base strace libssl-dev openssl libnghttp2-dev python3-h2 python3-grpcio python3-websockets
  libxxhash-dev varnish
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
