#!/usr/bin/env bash
# `make lint`: the static gates over src/ app/ examples/ (docs/SECURITY.md).
#   0. clang-format         every tracked .c/.h is formatted as .clang-format says
#                           (`make format` fixes it)
#   1. scripts/checksrc.sh  banned calls, raw allocation, whitespace
#   2. clang-tidy           the checks in .clang-tidy (warnings are errors), using the
#                           compile_commands.json of a Debug configure in $LINT_BUILD_DIR
#   3. cppcheck             warning, performance, portability; every finding fails
# Each file's clang-tidy output is shown only when it fails. All three run; exits 1 if any
# of them found something.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${LINT_BUILD_DIR:-build-lint}
JOBS=${JOBS:-$(nproc)}
TIDY=$(command -v clang-tidy-14 || command -v clang-tidy || true)
[ -n "$TIDY" ] || { echo "lint: clang-tidy not found (scripts/deps.sh installs it)" >&2; exit 2; }
command -v cppcheck >/dev/null || { echo "lint: cppcheck not found" >&2; exit 2; }

mapfile -t sources < <(find src app examples -type f -name '*.c' | sort)

failed=()

FMT=$(command -v clang-format-14 || command -v clang-format || true)
[ -n "$FMT" ] || { echo "lint: clang-format not found (scripts/deps.sh installs it)" >&2; exit 2; }
echo "== lint: clang-format ($(basename "$FMT")) =="
mapfile -t tracked < <(git ls-files '*.c' '*.h' 2>/dev/null || find src app examples include tests fuzz bench -name '*.[ch]')
# The output is captured rather than piped: with pipefail a pipe's status would be grep's.
if fmt_out=$("$FMT" --dry-run --Werror "${tracked[@]}" 2>&1); then
    echo "clang-format: ${#tracked[@]} files formatted"
else
    printf '%s\n' "$fmt_out" | grep 'error:' | head -n 20
    echo "clang-format: the files above differ from .clang-format (run: make format)"
    failed+=(clang-format)
fi

echo "== lint: checksrc =="
scripts/checksrc.sh || failed+=(checksrc)

echo "== lint: clang-tidy ($(basename "$TIDY"), ${#sources[@]} files, $JOBS jobs) =="
# Debug: assertions stay visible to the analyzer. Configuring generates build_info.h and
# compile_commands.json; nothing needs to be built.
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DWEIR_BUILD_TESTS=OFF \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
export TIDY BUILD
printf '%s\n' "${sources[@]}" | xargs -P "$JOBS" -I{} sh -c '
    if ! out=$("$TIDY" -p "$BUILD" --quiet "$1" 2>&1); then
        printf "%s\n" "$out" | grep -v " warnings\? generated\.$"
        exit 1
    fi' sh {} && echo "clang-tidy: ${#sources[@]} files clean" || failed+=(clang-tidy)

echo "== lint: cppcheck =="
# One configuration (the build's): -D_GNU_SOURCE as CMake passes it, and --force so the
# #ifdef variants (WEIR_NO_POOLS, WEIR_FAILMALLOC, NDEBUG) are checked as well.
# Suppressions are inline (// cppcheck-suppress ID) with the reason beside them.
cppcheck --enable=warning,performance,portability --error-exitcode=1 --inline-suppr \
    --std=c11 --library=posix --force -D_GNU_SOURCE -Iinclude -Isrc -I"$BUILD/gen" \
    -j "$JOBS" --quiet --template='{file}:{line}: {severity}: {id}: {message}' \
    src app examples && echo "cppcheck: clean" || failed+=(cppcheck)

if [ ${#failed[@]} -gt 0 ]; then
    echo "lint: FAILED: ${failed[*]} (see above)" >&2
    exit 1
fi
echo "lint: all clean"
