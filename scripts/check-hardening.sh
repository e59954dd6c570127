#!/usr/bin/env bash
# Checks that an ELF executable carries the hardening a weir release build asks for
# (CMakeLists.txt, "Hardened release builds"), using readelf only:
#
#   pie         ELF type DYN (a position-independent executable): ASLR covers the binary too
#   bind-now    BIND_NOW / FLAGS_1 NOW: every symbol resolved at start, so the GOT can be
#               read-only for the whole run (full RELRO, with GNU_RELRO)
#   relro       a GNU_RELRO segment
#   noexecstack a GNU_STACK segment without the execute flag
#   canary      __stack_chk_fail imported (-fstack-protector-strong instrumented something)
#   fortify     at least one __*_chk libc call (_FORTIFY_SOURCE replaced a memcpy/snprintf/...)
#   cet         (with --cet) the x86 feature note lists IBT and SHSTK (-fcf-protection=full),
#               which only survives linking if every object, crt files included, has it; skipped
#               (not failed) when the C library's start files of $CC (default cc) lack it
#
# Usage: scripts/check-hardening.sh [--cet] BINARY
# Prints one line per check; exits 1 if any failed.
set -euo pipefail

cet=0
if [ "${1:-}" = "--cet" ]; then
    cet=1
    shift
fi
if [ $# -ne 1 ] || [ ! -f "$1" ]; then
    echo "usage: $0 [--cet] BINARY" >&2
    exit 2
fi
bin=$1
command -v readelf >/dev/null || { echo "check-hardening: readelf not found (binutils)" >&2; exit 2; }

header=$(readelf -hW "$bin")
segments=$(readelf -lW "$bin")
dynamic=$(readelf -dW "$bin")
dynsyms=$(readelf --dyn-syms -W "$bin")
notes=$(readelf -nW "$bin")

failed=0
check() { # NAME OK(0/1) DETAIL
    if [ "$2" -eq 1 ]; then
        printf 'ok    %-12s %s\n' "$1" "$3"
    else
        printf 'FAIL  %-12s %s\n' "$1" "$3"
        failed=1
    fi
}
has() { grep -Eq "$2" <<<"$1" && echo 1 || echo 0; }

check pie "$(has "$header" 'Type:[[:space:]]+DYN')" "ELF type DYN"
check bind-now "$(has "$dynamic" '\(BIND_NOW\)|\(FLAGS\).*BIND_NOW|\(FLAGS_1\).*[[:space:]]NOW')" \
    "BIND_NOW or FLAGS_1 NOW in the dynamic section"
check relro "$(has "$segments" '^[[:space:]]*GNU_RELRO')" "GNU_RELRO segment"
stack=$(grep -E '^[[:space:]]*GNU_STACK' <<<"$segments" || true)
# "GNU_STACK offset vaddr paddr filesz memsz FLAGS align": FLAGS is RW, or RWE when executable.
flags=$(sed -E 's/^[[:space:]]*GNU_STACK([[:space:]]+0x[0-9a-f]+){5}[[:space:]]+(.*)[[:space:]]+0x[0-9a-f]+$/\2/' <<<"$stack")
ok=0
if [ -n "$stack" ] && [[ $flags != *E* ]]; then
    ok=1
fi
check noexecstack "$ok" "GNU_STACK present, flags '${flags// /}'"
check canary "$(has "$dynsyms" '[[:space:]]__stack_chk_fail(@|$)')" "__stack_chk_fail imported"
nchk=$(grep -Eo '[[:space:]]__[a-z0-9_]+_chk(@|[[:space:]]|$)' <<<"$dynsyms" |
    grep -vc '__stack_chk_fail' || true)
check fortify "$([ "$nchk" -gt 0 ] && echo 1 || echo 0)" "$nchk fortified __*_chk functions imported"
# The linker keeps the CET note only if every input object has it. Where the C library's own
# start files lack it (Debian 12's glibc is built without CET), no program can have the note:
# the code is still compiled with -fcf-protection, but the check is reported as skipped.
startfiles_have_cet() {
    local cc=${CC:-cc} f path
    command -v "$cc" >/dev/null || return 0 # cannot tell: insist on the note
    for f in Scrt1.o crti.o crtn.o; do
        path=$("$cc" -print-file-name="$f")
        [ -f "$path" ] || continue
        readelf -nW "$path" | grep -Eq 'x86 feature:.*IBT.*SHSTK' || { echo "$path"; return 1; }
    done
    return 0
}
if [ "$cet" -eq 1 ]; then
    if grep -Eq 'x86 feature:.*IBT.*SHSTK' <<<"$notes"; then
        check cet 1 "x86 feature note lists IBT and SHSTK"
    elif lacking=$(startfiles_have_cet); then
        check cet 0 "x86 feature note lists IBT and SHSTK (an object or library lacks it: link with -Wl,-z,cet-report=warning)"
    else
        printf 'skip  %-12s %s\n' cet "the C library's $lacking has no CET note, so the linker drops it"
    fi
fi

if [ "$failed" -ne 0 ]; then
    echo "check-hardening: $bin is missing hardening (see FAIL lines)" >&2
    exit 1
fi
echo "check-hardening: $bin: all checks passed"
