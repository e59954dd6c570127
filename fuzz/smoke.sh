#!/usr/bin/env bash
# Runs every fuzz_* binary in DIR for $FUZZ_SECONDS seconds (default 20) on a scratch copy of
# its seed corpus (fuzz/corpus/<target>/) with its dictionary (fuzz/<target>.dict), so the
# repository is never modified. Prints one line per target; exits non-zero if any target
# crashed, leaked, timed out or could not run. Crash inputs are kept under $FUZZ_ARTIFACTS
# (default: DIR/artifacts).
#
# usage: fuzz/smoke.sh DIR
set -u

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 DIR   (DIR holds the fuzz_* binaries)" >&2
    exit 2
fi
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
seconds=${FUZZ_SECONDS:-20}
artifacts=${FUZZ_ARTIFACTS:-$dir/artifacts}
mkdir -p "$artifacts"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/weir-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

status=0
found=0
for bin in "$dir"/fuzz_*; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    found=1
    name=$(basename "$bin")
    corpus="$scratch/$name"
    mkdir -p "$corpus"
    if [ -d "$here/corpus/$name" ]; then
        cp -R "$here/corpus/$name/." "$corpus/"
    fi
    args=(-max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048
          -print_final_stats=1 -artifact_prefix="$artifacts/$name-")
    if [ -f "$here/$name.dict" ]; then
        args+=(-dict="$here/$name.dict")
    fi
    log="$scratch/$name.log"
    "$bin" "${args[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    if [ $rc -eq 0 ]; then
        printf '%-24s ok      %s execs in %ss, %s\n' "$name" "${execs:-?}" "$seconds" "${cov:-cov: ?}"
    else
        printf '%-24s FAILED  exit %d; log tail and artifacts in %s:\n' "$name" "$rc" "$artifacts"
        tail -n 30 "$log" | sed 's/^/    /'
        cp "$log" "$artifacts/$name.log"
        status=1
    fi
done

if [ $found -eq 0 ]; then
    echo "no fuzz_* binaries in $dir" >&2
    exit 2
fi
exit $status
