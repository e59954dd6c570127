#!/usr/bin/env bash
# weir's source checker (curl's checksrc idea): rules a compiler does not enforce.
#
#   banned-call   sprintf strcpy strcat strncpy strtok atoi gets: unbounded writes, hidden
#                 state or silent failure; use snprintf, memcpy with a known length, strtol.
#   raw-alloc     malloc calloc realloc free strdup strndup outside src/core/alloc.c: every
#                 heap allocation goes through the allocator module (weir__malloc inside the
#                 library, weir_malloc/weir_calloc/weir_free in app/ and examples/) so
#                 WEIR_FAILMALLOC builds can fail any of them. tests/ fuzz/ bench/ are exempt.
#   trailing-ws   whitespace at the end of a line.
#   tab           a tab character (clang-format indents with spaces).
#
# The call rules ignore comments and string literals. A line can opt out of one rule with a
# comment naming it and saying why:  /* checksrc-allow raw-alloc: reason */
#
# Usage: scripts/checksrc.sh [FILE...]   (default: every .c/.h under src include app examples)
# Prints FILE:LINE: RULE: text for each violation; exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -eq 0 ]; then
    mapfile -t files < <(find src include app examples -type f \( -name '*.c' -o -name '*.h' \) | sort)
else
    files=("$@")
fi
[ ${#files[@]} -gt 0 ] || { echo "checksrc: no files" >&2; exit 1; }

exec perl -e '
use strict; use warnings;
my $bad = 0;
my $banned = qr/(?<![\w.>])(sprintf|strcpy|strcat|strncpy|strtok|atoi|gets)\s*\(/;
my $rawalloc = qr/(?<![\w.>])(malloc|calloc|realloc|free|strdup|strndup)\s*\(/;

sub report { my ($f, $n, $rule, $text) = @_; print "$f:$n: $rule: $text\n"; $bad++; }

# Blank out comments and the contents of string and character literals, keeping newlines and
# column positions, so the call rules only see code.
sub code_only {
    my ($src) = @_;
    $src =~ s{
        (/\*.*?\*/) | (//[^\n]*) | ("(?:\\.|[^"\\\n])*") | (\x27(?:\\.|[^\x27\\\n])*\x27)
    }{
        my $m = $&;
        if (defined $1 || defined $2) { (my $k = $m) =~ s/[^\n]/ /g; $k }
        else { my $q = substr($m, 0, 1); $q . (" " x (length($m) - 2)) . $q }
    }gsex;
    return $src;
}

for my $f (@ARGV) {
    open(my $fh, "<", $f) or die "checksrc: $f: $!\n";
    local $/; my $src = <$fh>; close $fh;
    my @raw = split /\n/, $src, -1;
    my @code = split /\n/, code_only($src), -1;
    my $alloc_ok = ($f =~ m{(^|/)src/core/alloc\.c$} || $f =~ m{(^|/)(tests|fuzz|bench)/});
    for my $i (0 .. $#raw) {
        my ($line, $c, $n) = ($raw[$i], $code[$i] // "", $i + 1);
        my %allow = map { $_ => 1 } ($line =~ /checksrc-allow ([\w-]+)/g);
        (my $show = $line) =~ s/^\s+//;
        report($f, $n, "trailing-ws", "whitespace at end of line")
            if $line =~ /[ \t\r]+$/ && !$allow{"trailing-ws"};
        report($f, $n, "tab", "tab character") if $line =~ /\t/ && !$allow{"tab"};
        while ($c =~ /$banned/g) {
            report($f, $n, "banned-call", "$1() is banned: $show") unless $allow{"banned-call"};
        }
        next if $alloc_ok;
        while ($c =~ /$rawalloc/g) {
            report($f, $n, "raw-alloc", "$1() outside src/core/alloc.c: $show")
                unless $allow{"raw-alloc"};
        }
    }
}
if ($bad) { print STDERR "checksrc: $bad violation(s)\n"; exit 1; }
printf "checksrc: %d files clean\n", scalar @ARGV;
' -- "${files[@]}"
