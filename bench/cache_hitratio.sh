#!/usr/bin/env bash
# The hit ratio of weir's cache storage on TinyUFO's Zipf trace, beside a plain LRU and
# TinyUFO's published figures. See bench/README.md (cache_hitratio.sh).
#
#   bash bench/cache_hitratio.sh                        # builds build/bench/bench_cache_hitratio, ~10 s
#   BUILD_DIR=/work/build-bench bash bench/cache_hitratio.sh
#   bash bench/cache_hitratio.sh -S 7 -b 744            # arguments go to the program (-h: usage)
#
# The program (bench/cache_hitratio.c) uses include/weir/cache.h alone: a zone per cache size,
# lookups through its storage's ops as the proxy makes them. Single-threaded, deterministic
# (seeded trace): the same figures on every machine for the same sources. Nothing listens,
# nothing is started in the background. The table goes to stdout and, as Markdown, to
# bench/out/cache_hitratio.md.
#
# Exit status: 0 when it ran; 2 when the build directory is not configured, the build fails,
# or the program fails (it checks that a zone of N objects holds exactly N).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT_DIR=$HERE/out

die() { printf '[hitratio] error: %s\n' "$*" >&2; exit 2; }

[[ -f $BUILD_DIR/CMakeCache.txt ]] ||
  die "$BUILD_DIR is not a configured build directory (cmake -S $ROOT -B $BUILD_DIR -G Ninja -DCMAKE_BUILD_TYPE=Release)"
grep -q '^CMAKE_BUILD_TYPE:STRING=Rel' "$BUILD_DIR/CMakeCache.txt" ||
  printf '[hitratio] note: %s is not a release build: hit ratios are the same, lookups/s are not\n' "$BUILD_DIR" >&2
# The only build step: this one target (and libweir under it). BENCH_BUILD_JOBS caps ninja.
cmake --build "$BUILD_DIR" --target bench_cache_hitratio ${BENCH_BUILD_JOBS:+-j "$BENCH_BUILD_JOBS"} >&2 ||
  die "cmake --build $BUILD_DIR --target bench_cache_hitratio failed"
BIN=$BUILD_DIR/bench/bench_cache_hitratio
[[ -x $BIN ]] || die "$BIN was not built (is WEIR_BUILD_TESTS off in $BUILD_DIR?)"

mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
MD=$OUT_DIR/cache_hitratio.md
{
  echo "# cache_hitratio.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src include 2>/dev/null || echo ' + uncommitted changes in src/ or include/')"
  echo
  echo '```'
  echo "$BIN $*"
  echo '```'
  echo
} >"$MD"
# timeout: a bound on the run (~10 s on a 2-CPU box), not a measurement.
timeout 600 "$BIN" "$@" | tee -a "$MD"
rc=${PIPESTATUS[0]}
((rc == 0)) || die "bench_cache_hitratio failed (status $rc)"
printf '[hitratio] written: %s\n' "${MD#"$ROOT"/}" >&2
