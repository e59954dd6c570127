# Sourced by bench/run.sh, bench/many_origins.sh and bench/callgrind.sh: messages, finding
# programs, and the process bookkeeping that stops every process a bench started, by PID,
# however it ends.
#
# Before sourcing, set BENCH_TAG (the prefix of messages). After it, set PY and LIB (the
# helper bench/lib.py, which walks process trees) and call bench_tmpdir before starting
# anything. Provides: log, die, find_bin, bench_tmpdir (sets TMP), start_bg, interruptible,
# stop_pid, and the PIDS / DESC bookkeeping behind them.
# shellcheck shell=bash disable=SC2317

# Progress goes to the script's own stderr, kept on a spare fd: a trap can fire inside a
# function call whose stderr is redirected to a log file.
exec {LOG_FD}>&2
log() { printf '[%s] %s\n' "$BENCH_TAG" "$*" >&"$LOG_FD"; }
die() { log "error: $*"; exit 2; }

find_bin() { # NAME: on PATH or in the sbin directories (not on a normal user's PATH)
  command -v "$1" 2>/dev/null && return 0
  local d
  for d in /usr/sbin /sbin /usr/local/sbin; do [[ -x $d/$1 ]] && { echo "$d/$1"; return 0; }; done
  return 1
}

PIDS=()          # every long-running process this script started
declare -A DESC  # PID -> its descendants when it came up
stop_pid() {     # PID: TERM it and its descendants, wait up to 5 s, then KILL what is left
  local pid=$1 all p i
  [[ -n $pid ]] || return 0
  # Its live process tree, plus the children seen when it came up (nginx workers), in
  # case the parent is already gone.
  all=$("$PY" "$LIB" tree "$pid" 2>/dev/null)
  all="$pid $all ${DESC[$pid]:-}"
  all=$(tr ' ' '\n' <<<"$all" | sort -un | tr '\n' ' ')
  # shellcheck disable=SC2086
  kill -TERM $all 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    local alive=""
    for p in $all; do kill -0 "$p" 2>/dev/null && alive+=" $p"; done
    [[ -z $alive ]] && break
    sleep 0.1
  done
  for p in $all; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  wait "$pid" 2>/dev/null
  unset 'DESC[$pid]'
  forget_pid "$pid"
}
forget_pid() {
  local i
  for i in "${!PIDS[@]}"; do [[ ${PIDS[$i]} == "$1" ]] && unset 'PIDS[i]'; done
  return 0
}
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM HUP
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  [[ -n ${TMP:-} ]] && rm -rf "$TMP"
  exit "$rc"
}

bench_tmpdir() { # NAME: a fresh mktemp directory in $TMP, removed at exit; traps set
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || die "mktemp failed"
  # nginx workers drop to an unprivileged user when started as root: let them read the files.
  chmod 755 "$TMP"
  trap cleanup EXIT
  trap 'log "interrupted: stopping everything"; exit 130' INT TERM HUP
}

interruptible() { # CMD...: run CMD in the background and wait for it, so that a signal to
  # this script runs the trap at once instead of after CMD ends; returns CMD's status.
  "$@" &
  local p=$! rc
  PIDS+=("$p")
  wait "$p"
  rc=$?
  forget_pid "$p"
  return "$rc"
}

start_bg() { # LOGFILE CMD...: start CMD in the background, PID in $LAST_PID
  local logf=$1
  shift
  "$@" </dev/null >"$logf" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
