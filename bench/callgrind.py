#!/usr/bin/env python3
"""Helpers for bench/callgrind.sh: the keep-alive client, callgrind totals, per-request profile.

Subcommands (output on stdout, errors on stderr, exit 0 on success):
  client PORT URLPATH FILE N SECS [PID [WAIT_IDLE]]
        connect to 127.0.0.1:PORT (retrying while it is refused, for at most SECS seconds,
        or until process PID, when given, is gone), then send N sequential
        `GET URLPATH HTTP/1.1` requests on that ONE connection, each after the previous
        response was read in full; every response must be 200 with FILE's exact bytes and
        must not close the connection. After each response it waits until every thread of
        PID and its descendants is asleep (the proxy is idle) before the next request
        (WAIT_IDLE 0: it does not wait).
        Prints the first response's head (HEAD lines), then
        CLIENT requests=N head_bytes=H body_bytes=B threads=T
  totals FILE...
        the instruction count (Ir) of each callgrind out file and their sum:
        lines "FILE IR" then "TOTAL IR"
  top DIR1 DIR2 DN K
        where the extra instructions of run DIR2 over run DIR1 go: callgrind_annotate
        (exclusive cost per function) of every callgrind.out.* in each directory, summed
        per function, the difference divided by DN (the extra requests), the K largest, as
        "IR_PER_REQ  SHARE%  FUNCTION" lines and a last line for all functions
"""
import os
import re
import socket
import subprocess
import sys
import time


# ---------------------------------------------------------------- client

def _connect(port, secs, pid):
    deadline = time.monotonic() + float(secs)
    last = "no attempt"
    while time.monotonic() < deadline:
        if pid is not None and not os.path.exists("/proc/%d" % int(pid)):
            raise SystemExit("client: process %s exited before accepting a connection" % pid)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect(("127.0.0.1", int(port)))
            return s
        except OSError as e:
            s.close()
            last = "%s: %s" % (type(e).__name__, e)
        time.sleep(0.05)
    raise SystemExit("client: cannot connect to 127.0.0.1:%s after %ss: %s" % (port, secs, last))


def _read_response(s, buf):
    """One response (Content-Length framed) from socket s; buf holds bytes already read.
    Returns (status, head bytes, body, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("client: connection closed in a response head (%d bytes)" % len(buf))
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", lines[0] + b" ")
    if not m:
        raise SystemExit("client: bad status line %r" % lines[0][:80])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and b"close" in value.lower():
            raise SystemExit("client: the server closes the connection (%r)" % line)
        elif name == b"transfer-encoding":
            raise SystemExit("client: unexpected %r (want Content-Length)" % line)
    if length is None:
        raise SystemExit("client: response without Content-Length")
    while len(buf) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("client: connection closed in a body")
        buf += chunk
    return int(m.group(1)), head, buf[:length], buf[length:]


def _tasks(pid):
    """/proc/<p>/task/<t>/stat of every thread of PID and its descendants."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import lib  # bench/lib.py: the process tree
    out = []
    for p in lib.tree(pid):
        try:
            out += ["/proc/%d/task/%s/stat" % (p, t) for t in os.listdir("/proc/%d/task" % p)]
        except OSError:
            pass
    return out


def _all_sleeping(stats):
    for path in stats:
        try:
            with open(path) as f:
                stat = f.read()
        except OSError:
            continue                     # a thread that ended
        if stat[stat.rindex(")") + 2] != "S":
            return False
    return True


def _wait_idle(stats, secs):
    """Wait until every thread in stats is asleep (S), seen twice 0.2 ms apart."""
    deadline = time.monotonic() + secs
    seen = 0
    while seen < 2:
        if time.monotonic() > deadline:
            raise SystemExit("client: the proxy did not go idle within %ss after a response" % secs)
        seen = seen + 1 if _all_sleeping(stats) else 0
        time.sleep(0.0002)


def cmd_client(port, urlpath, path, n, secs, pid=None, wait_idle="1"):
    with open(path, "rb") as f:
        want = f.read()
    n = int(n)
    s = _connect(port, secs, pid)
    # Under valgrind a response can take a while; bounded all the same.
    s.settimeout(60)
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: weir-callgrind\r\n\r\n" % urlpath).encode()
    heads = set()
    buf = b""
    stats = None
    for i in range(n):
        # Each request reaches an idle proxy: after a response, wait until every thread of
        # the proxy (PID and its children) sleeps, i.e. it finished with the response and
        # went back to waiting for events. Without this the next request sometimes arrives
        # while the proxy is still busy (how often depends on scheduling) and it takes a
        # shorter path (no read that returns EAGAIN, no extra epoll round): the count per
        # request would then vary by ~2 % between runs.
        if stats:
            _wait_idle(stats, 10)
        s.sendall(req)
        status, head, body, buf = _read_response(s, buf)
        if i == 0:
            for line in head.split(b"\r\n"):
                print("HEAD", line.decode("latin-1"))
        if status != 200 or body != want:
            raise SystemExit("client: request %d: status %d, %d body bytes (want 200 and the %d bytes of %s)"
                             % (i + 1, status, len(body), len(want), os.path.basename(path)))
        if buf:
            raise SystemExit("client: request %d: %d bytes after the response" % (i + 1, len(buf)))
        heads.add(len(head) + 4)
        if stats is None and pid is not None and wait_idle == "1":
            stats = _tasks(pid)      # after the first response: nginx's worker exists by now
    s.close()
    print("CLIENT requests=%d head_bytes=%s body_bytes=%d threads=%d"
          % (n, "/".join(str(h) for h in sorted(heads)), len(want), len(stats or [])))
    return 0


# ---------------------------------------------------------------- totals

def ir_of(path):
    """The Ir total of one callgrind out file: its `totals:` line (or `summary:`)."""
    total = summary = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("totals:"):
                total = int(line.split()[1])
            elif line.startswith("summary:"):
                summary = int(line.split()[1])
    if total is None:
        total = summary
    if total is None:
        raise SystemExit("%s: no totals/summary line (did the process exit normally?)" % path)
    return total


def cmd_totals(*paths):
    s = 0
    for p in paths:
        v = ir_of(p)
        print(p, v)
        s += v
    print("TOTAL", s)
    return 0


# ---------------------------------------------------------------- per-request profile

def _per_function(d):
    """Exclusive Ir per function, summed over the callgrind out files in directory d."""
    costs = {}
    for name in sorted(os.listdir(d)):
        if name.startswith("callgrind.out.") and os.path.getsize(os.path.join(d, name)) > 0:
            _annotate(os.path.join(d, name), costs)
    return costs


def _annotate(path, costs):
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    # "  1,234 (12.34%)  file:function [object]" (3.19) or "1,234  file:function [object]"
    pat = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$")
    started = False
    for line in out.splitlines():
        if not started:
            started = line.startswith("Ir") and ("file:function" in line)
            continue
        m = pat.match(line)
        if not m or m.group(2).startswith("PROGRAM TOTALS"):
            continue
        fn = m.group(2)
        costs[fn] = costs.get(fn, 0) + int(m.group(1).replace(",", ""))


def cmd_top(dir1, dir2, dn, k):
    a, b, dn = _per_function(dir1), _per_function(dir2), int(dn)
    diff = {fn: (b.get(fn, 0) - a.get(fn, 0)) / dn for fn in set(a) | set(b)}
    total = sum(diff.values())
    rows = sorted(diff.items(), key=lambda kv: -kv[1])[:int(k)]
    for fn, v in rows:
        share = 100.0 * v / total if total else 0.0
        print("%8.0f  %5.1f%%  %s" % (v, share, fn))
    print("%8.0f  100.0%%  (all functions)" % total)
    return 0


def main(argv):
    cmds = {"client": cmd_client, "totals": cmd_totals, "top": cmd_top}
    if len(argv) < 2 or argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        return 2
    return cmds[argv[1]](*argv[2:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
