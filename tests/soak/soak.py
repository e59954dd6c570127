#!/usr/bin/env python3
"""weir's soak (issue 10): a bounded run under mixed traffic and faults, judged at the end.

Traffic, all through one weir in front of two origins (tests/integration/origin.py):
  - legit clients: keep-alive GETs of varied sizes (checked byte for byte) and POSTs of
    varied sizes (echoed back, checked);
  - aborters: connections that close during the head, during an upload, while waiting;
  - slow readers: a large response read a little at a time, then given up on;
  - faults: origin B restarted every 20 s, origin A killed for 5 s every 45 s; never both at
    once (B's restart waits until A has been back for 10 s, past any ejection of A), since no
    proxy can answer while every backend is down.

Printed at the end: requests, legit failures by cause, backend ejections and their causes,
weir's fds and RSS at start and end. It passes when no legit request failed, no backend was
ejected while it was up, the fds are back to their count at the start, and RSS is flat (within
5 %) over the last half of the run. A request that failed within a second of a backend's stop
or start is reported apart and not judged (a response cut by the kill itself, a pooled
connection to the old process); one that failed while a backend was down, further from those
edges, is judged: the other backend was up.

  SOAK_SECONDS=120 WEIR_BIN=build/weir /usr/bin/python3 tests/soak/soak.py
"""
import collections
import datetime
import http.client
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from origin import HttpOrigin, pattern_bytes  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
WEIR_BIN = os.environ.get("WEIR_BIN", "build/weir")
SANITIZED = os.environ.get("WEIR_SANITIZED") == "1"
LEGIT_CLIENTS = 4
KILL_EVERY, KILL_FOR, RESTART_EVERY = 45.0, 5.0, 20.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"soak: nothing listening on {port}")


class Backend:
    """An origin that can be stopped and started again on the same port."""

    def __init__(self, name):
        self.name = name
        self.origin = HttpOrigin().start()
        self.port = self.origin.port
        self.lock = threading.Lock()
        self.down_since = None  # monotonic time it was stopped, or None when up
        self.windows = []  # (stopped, started) monotonic times
        self.wall_down = None
        self.wall_windows = []  # the same in wall-clock seconds, to match log lines

    def stop(self):
        with self.lock:
            self.origin.stop()
            self.down_since = time.monotonic()
            self.wall_down = time.time()

    def start(self):
        with self.lock:
            for _ in range(50):
                try:
                    self.origin = HttpOrigin(port=self.port).start()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise SystemExit(f"soak: cannot listen on {self.port} again")
            self.windows.append((self.down_since, time.monotonic()))
            self.wall_windows.append((self.wall_down, time.time()))
            self.down_since = None

    def trim(self):
        with self.lock:
            self.origin.requests.clear()  # the origin keeps every request: not for 10 minutes

    def near_edge(self, t, margin=1.0):
        """Whether monotonic time t is within margin of this backend's stop or start."""
        with self.lock:
            edges = [e for w in self.windows for e in w] + \
                ([self.down_since] if self.down_since else [])
        return any(abs(t - e) <= margin for e in edges)

    def down_at(self, t):
        with self.lock:
            wins = list(self.windows) + ([(self.down_since, time.monotonic())]
                                         if self.down_since else [])
        return any(a <= t <= b for a, b in wins)

    def quiet_since(self):
        """Monotonic time since when it has been up (None while down)."""
        with self.lock:
            if self.down_since is not None:
                return None
            return self.windows[-1][1] if self.windows else 0.0


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = collections.Counter()
        self.failures = []  # (monotonic time, kind, cause)

    def ok(self, kind):
        with self.lock:
            self.requests[kind] += 1

    def fail(self, kind, cause):
        with self.lock:
            self.requests[kind] += 1
            self.failures.append((time.monotonic(), kind, cause))


def legit_client(port, stop, stats, seed):
    rnd = random.Random(seed)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        try:
            if rnd.random() < 0.6:
                n = rnd.choice([0, 1, 100, 4096, 65536, 200000])
                c.request("GET", f"/bytes/{n}")
                r = c.getresponse()
                body = r.read()
                if r.status != 200:
                    stats.fail("GET", f"status {r.status}")
                elif body != pattern_bytes(n):
                    stats.fail("GET", "wrong body")
                else:
                    stats.ok("GET")
            else:
                body = os.urandom(rnd.choice([1, 1000, 50000, 131072]))
                c.request("POST", "/echo", body=body)
                r = c.getresponse()
                got = r.read()
                if r.status != 200:
                    stats.fail("POST", f"status {r.status}")
                elif got != body:
                    stats.fail("POST", "wrong echo")
                else:
                    stats.ok("POST")
        except (OSError, http.client.HTTPException) as e:
            stats.fail("conn", type(e).__name__)
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        time.sleep(rnd.random() * 0.01)
    c.close()


def aborter(port, stop, stats, seed):
    rnd = random.Random(seed)
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            phase = rnd.randrange(4)
            if phase == 0:
                s.sendall(b"GET /bytes/100 HTTP/1.1\r\nHo")
            elif phase == 1:
                s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" +
                          b"a" * rnd.randrange(1, 50000))
            elif phase == 2:
                s.sendall(b"GET /slow/200 HTTP/1.1\r\nHost: t\r\n\r\n")
                time.sleep(0.05)
            else:
                s.sendall(b"GET /bytes/1000000 HTTP/1.1\r\nHost: t\r\n\r\n")
                s.recv(1000)
            if rnd.random() < 0.5:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
            stats.ok("abort")
        except OSError:
            stats.ok("abort")
        time.sleep(0.02)


def slow_reader(port, stop, stats):
    while not stop.is_set():
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /bytes/8000000 HTTP/1.1\r\nHost: t\r\n\r\n")
            t_end = time.monotonic() + 2
            while time.monotonic() < t_end and not stop.is_set():
                if not s.recv(4096):
                    break
                time.sleep(0.01)
            s.close()
            stats.ok("slow")
        except OSError:
            stats.ok("slow")


def chaos(stop, a, b, events):
    start = time.monotonic()
    next_restart, next_kill = start + RESTART_EVERY, start + KILL_EVERY
    while not stop.wait(0.2):
        now = time.monotonic()
        a_up = a.quiet_since()
        if now >= next_restart and (a_up is None or now - a_up < 10.0):
            next_restart = now + 1.0  # A is down or only just back: B waits
        elif now >= next_restart:
            b.stop()
            time.sleep(0.2)
            b.start()
            events.append((now, "restart B"))
            next_restart = now + RESTART_EVERY
        if now >= next_kill:
            a.stop()
            events.append((now, "kill A"))
            if stop.wait(KILL_FOR):
                a.start()
                return
            a.start()
            events.append((time.monotonic(), "A back"))
            next_kill = time.monotonic() + KILL_EVERY
        a.trim()
        b.trim()


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    a, b = Backend("A"), Backend("B")
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="weir-soak-")
    cfg = os.path.join(tmp, "soak.yaml")
    with open(cfg, "w") as f:
        f.write(f"server:\n  threads: 2\n  grace_period: 5s\n  max_retries: 2\n"
                f"  timeouts:\n    upstream_read: 10s\n    linger_idle: 1s\n"
                f"listeners:\n  - 127.0.0.1:{port}\n"
                f"routes:\n  - upstream: app\n    retry_idempotent: true\n"
                f"upstreams:\n  app:\n    max_fails: 2\n    eject: 2s\n"
                f"    backends: [127.0.0.1:{a.port}, 127.0.0.1:{b.port}]\n")
    errpath = os.path.join(tmp, "weir.stderr")
    err = open(errpath, "wb")
    w = subprocess.Popen([WEIR_BIN, "-c", cfg], stdout=subprocess.DEVNULL, stderr=err,
                         stdin=subprocess.DEVNULL)
    wait_port(port)
    stop = threading.Event()
    stats = Stats()
    events = []
    threads = [threading.Thread(target=legit_client, args=(port, stop, stats, i), daemon=True)
               for i in range(LEGIT_CLIENTS)]
    threads += [threading.Thread(target=aborter, args=(port, stop, stats, 100 + i), daemon=True)
                for i in range(2)]
    threads.append(threading.Thread(target=slow_reader, args=(port, stop, stats), daemon=True))
    threads.append(threading.Thread(target=chaos, args=(stop, a, b, events), daemon=True))
    for t in threads:
        t.start()
    time.sleep(min(5.0, SECONDS / 10))
    fds_start, rss_start = proc_fds(w.pid), proc_rss_kb(w.pid)
    t0 = time.monotonic()
    samples = []  # (seconds since t0, rss kB)
    while time.monotonic() - t0 < SECONDS:
        if w.poll() is not None:
            break
        samples.append((time.monotonic() - t0, proc_rss_kb(w.pid)))
        time.sleep(1)
    stop.set()
    for t in threads:
        t.join(30)
    alive = w.poll() is None
    # Idle keep-alive and lingering connections close by their timeouts: wait for the fds.
    fds_end = proc_fds(w.pid) if alive else -1
    deadline = time.monotonic() + 15
    while alive and fds_end > fds_start and time.monotonic() < deadline:
        time.sleep(0.2)
        fds_end = proc_fds(w.pid)
    rss_end = proc_rss_kb(w.pid) if alive else -1
    if alive:
        w.send_signal(signal.SIGTERM)
        try:
            rc = w.wait(30)
        except subprocess.TimeoutExpired:
            w.kill()
            rc = w.wait()
    else:
        rc = w.returncode
    err.close()
    a.origin.stop()
    b.origin.stop()
    log = open(errpath, "rb").read().decode("utf-8", "replace")

    legit, at_kill, one_down = (collections.Counter(), collections.Counter(),
                                collections.Counter())
    for t, kind, cause in stats.failures:
        if kind in ("GET", "POST", "conn"):
            if a.near_edge(t) or b.near_edge(t):
                at_kill[f"{kind}: {cause}"] += 1
            else:
                legit[f"{kind}: {cause}"] += 1
                if a.down_at(t) or b.down_at(t):
                    one_down[f"{kind}: {cause}"] += 1
    ejections = re.findall(r"^(\S+) \[warn\] backend (\S+) ejected for (\S+) (.*)$", log, re.M)
    wall = {f"127.0.0.1:{a.port}": a.wall_windows, f"127.0.0.1:{b.port}": b.wall_windows}
    unexplained = []
    for stamp, ident, _, cause in ejections:
        t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        # A backend stopped, or started again within the last second (its pooled connections
        # to the old process die on first use): anything else was a healthy backend ejected.
        if not any(down - 1.0 <= t <= up + 1.0 for down, up in wall.get(ident, [])):
            unexplained.append(f"{ident} at {stamp}: {cause}")
    half = [r for s, r in samples if s >= SECONDS / 2]
    rss_flat = (not half or SANITIZED or
                max(half) <= min(half) * 1.05 + 1024)

    print(f"soak: {SECONDS}s, weir exit {rc}")
    print(f"soak: requests: {dict(stats.requests)}")
    print(f"soak: legit failures: {sum(legit.values())} {dict(legit)}")
    print(f"soak: of which while one backend was down (the other up): "
          f"{sum(one_down.values())} {dict(one_down)}")
    print(f"soak: failures within 1 s of a backend's stop or start (not judged): "
          f"{sum(at_kill.values())} {dict(at_kill)}")
    print(f"soak: events: {len(events)} ({', '.join(e for _, e in events[:6])}"
          f"{', ...' if len(events) > 6 else ''})")
    print(f"soak: ejections: {len(ejections)}: " +
          "; ".join(f"{i} for {d}: {c}" for _, i, d, c in ejections[:8]))
    print(f"soak: ejections beyond the backends' down windows: {unexplained or 'none'}")
    print(f"soak: fds start {fds_start} end {fds_end}; RSS kB start {rss_start} end {rss_end}"
          f"; last half min {min(half) if half else 0} max {max(half) if half else 0}"
          f"{' (not judged under sanitizers)' if SANITIZED else ''}")
    ok = (alive and rc == 0 and not legit and not unexplained and fds_end <= fds_start and
          rss_flat and stats.requests["GET"] > 0)
    print("soak: PASS" if ok else "soak: FAIL")
    if not ok:
        sys.stdout.write(log[-4000:])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
