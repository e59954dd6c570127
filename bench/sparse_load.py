#!/usr/bin/env python3
"""Fixed-rate, sparse HTTP load spread over many origins, for bench/many_origins.sh.

wrk sends as fast as it can; this client sends at a fixed total rate (wrk2 is not in
Debian), so that each origin sees a request only every so often: the gap between two
requests to one origin is then comparable to the origin's keep-alive timeout, and whether a
proxy's idle upstream connections survive that gap depends on how many of its workers share
them.

    sparse_load.py --port P --origins 200 --rate 400 --seconds 20 --warmup 3 \\
        --connections 32 --control CTL_PORT [--proxy-pid PID] --out result.json

- Keeps --connections keep-alive connections to the proxy (127.0.0.1:P), opened before the
  first request and reopened when one is lost.
- Request j is due at t0 + j/rate ("open" schedule: a slow response does not slow the
  schedule down). It is GET /o/<i>/x for a random origin i (seeded: every proxy gets the same
  sequence) and goes on the next idle connection in rotation, so the requests are spread over
  all the connections, hence over all the proxy's workers; when every connection is busy it
  waits in a queue (counted as "queued"). Latency is measured from the time the request was
  due, so queueing is included (no coordinated omission).
- A response must be 2xx from the right origin (X-Origin: i, the origin's body length);
  anything else is counted: by status, or as an error (closed before a full response, timed
  out after --timeout, malformed, wrong origin).
- The first --warmup seconds fill the proxy's pools and are not reported. At the start and at
  the end of the measured part it reads the origin's counters (GET /stats on the control
  port, see origins.py) and the proxy's CPU time (/proc, --proxy-pid and its descendants):
  the report is made of the differences. At the start it also counts how many of its
  connections each process of the proxy holds (/proc/net/tcp and /proc/PID/fd).

Writes one JSON object to --out; exit 0 when the run completed (whatever the errors), 1 when
no connection to the proxy could be opened or the origin's control port did not answer.
"""
import argparse
import asyncio
import collections
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402  (bench/lib.py: /proc accounting)

MAX_HEAD = 64 * 1024


class Request:
    __slots__ = ("origin", "due", "measured", "timer")

    def __init__(self, origin, due, measured):
        self.origin, self.due, self.measured, self.timer = origin, due, measured, None


class Client(asyncio.Protocol):
    """One keep-alive connection to the proxy; at most one request in flight."""

    def __init__(self, gen):
        self.gen = gen
        self.transport = None
        self.req = None          # the request in flight
        self.buf = b""
        self.head = None         # parsed head of the response being read: (status, clen, chunked, close, origin)
        self.alive = False

    # -- connection events
    def connection_made(self, transport):
        self.transport = transport
        self.alive = True

    def connection_lost(self, exc):
        self.alive = False
        self.transport = None
        req, self.req = self.req, None
        if req is not None:
            if self.head is not None and self.head[1] is None and not self.head[2]:
                self._done(req, self.buf, closing=True)   # body delimited by the close
                req = None
            else:
                self.gen.error(req, "closed")
        self.head, self.buf = None, b""
        self.gen.lost(self)

    # -- requests
    def send(self, req):
        self.req = req
        self.head, self.buf = None, b""
        self.transport.write(self.gen.request_bytes[req.origin])
        req.timer = self.gen.loop.call_later(self.gen.timeout, self._timeout)

    def _timeout(self):
        req = self.req
        if req is None:
            return
        req.timer = None
        self.req = None
        self.gen.error(req, "timeout")
        self.transport.abort()

    def data_received(self, data):
        if self.req is None:
            return  # bytes nobody asked for: ignored (the next response parse would fail)
        self.buf += data
        while self.req is not None:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        self._bad()
                    return
                head, self.buf = self.buf[:end], self.buf[end + 4:]
                if not self._parse_head(head):
                    return
                if 100 <= self.head[0] < 200:
                    self.head = None  # interim response: the final one follows
                    continue
            status, clen, chunked, close, origin = self.head
            if clen is not None:
                if len(self.buf) < clen:
                    return
                body, self.buf = self.buf[:clen], self.buf[clen:]
            elif chunked:
                body = self._dechunk()
                if body is None:
                    return
            else:
                return  # until close: finished in connection_lost
            self._done(self.req, body, closing=close)
            return

    def _parse_head(self, head):
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            self._bad()
            return False
        clen, chunked, close, origin = None, False, parts[0] == b"HTTP/1.0", None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                clen = int(value) if value.isdigit() else None
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
            elif name == b"x-origin":
                origin = int(value) if value.isdigit() else -1
        self.head = (int(parts[1]), None if chunked else clen, chunked, close, origin)
        return True

    def _dechunk(self):
        """The whole chunked body once it is all in self.buf, else None (trailers are
        skipped). The origin sends Content-Length, so this only serves proxies that re-frame."""
        out, pos, buf = [], 0, self.buf
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                size = int(buf[pos:eol].split(b";")[0], 16)
            except ValueError:
                self._bad()
                return None
            if size == 0:
                # Last chunk: then either CRLF at once, or trailer fields ending in a blank line.
                end = eol if buf.startswith(b"\r\n", eol + 2) else buf.find(b"\r\n\r\n", eol + 2)
                if end < 0 or len(buf) < end + 4:
                    return None
                self.buf = buf[end + 4:]
                return b"".join(out)
            if len(buf) < eol + 2 + size + 2:
                return None
            out.append(buf[eol + 2:eol + 2 + size])
            pos = eol + 2 + size + 2

    def _bad(self):
        req, self.req = self.req, None
        self.gen.error(req, "malformed")
        self.transport.abort()

    def _done(self, req, body, closing):
        status, _, _, _, origin = self.head
        self.head = None
        self.req = None
        if req.timer is not None:
            req.timer.cancel()
        if 200 <= status < 300 and (origin != req.origin or len(body) != self.gen.body_len):
            self.gen.error(req, "wrong_origin" if origin != req.origin else "wrong_body")
        else:
            self.gen.response(req, status)
        if closing and self.transport is not None:
            self.transport.close()   # connection_lost reopens it
        elif self.transport is not None:
            self.gen.idle(self)


class Generator:
    def __init__(self, args, loop):
        self.a, self.loop = args, loop
        self.timeout = args.timeout
        self.body_len = args.body
        host = "127.0.0.1:%d" % args.port
        self.request_bytes = [("GET /o/%d/x HTTP/1.1\r\nHost: %s\r\nUser-Agent: weir-bench-sparse\r\n\r\n"
                               % (i, host)).encode() for i in range(args.origins)]
        self.clients = []
        self.rr = 0               # rotation pointer over self.clients
        self.queue = collections.deque()  # requests waiting for an idle connection (FIFO)
        self.inflight = 0
        self.stopping = False
        self.measuring = False    # past the warm-up
        self.reconnects = 0
        self.ph = {k: {"sent": 0, "completed": 0, "status": {}, "errors": {}, "queued": 0, "lat": []}
                   for k in ("warmup", "measured")}

    # -- bookkeeping
    def _phase(self, req):
        return self.ph["measured" if req.measured else "warmup"]

    def response(self, req, status):
        p = self._phase(req)
        p["status"][str(status)] = p["status"].get(str(status), 0) + 1
        if 200 <= status < 300:
            p["completed"] += 1
        p["lat"].append(self.loop.time() - req.due)
        self.inflight -= 1

    def error(self, req, kind):
        if req.timer is not None:
            req.timer.cancel()
            req.timer = None
        p = self._phase(req)
        p["errors"][kind] = p["errors"].get(kind, 0) + 1
        self.inflight -= 1

    # -- connections
    async def connect(self):
        try:
            _, c = await asyncio.wait_for(
                self.loop.create_connection(lambda: Client(self), "127.0.0.1", self.a.port), 5)
            return c
        except (OSError, asyncio.TimeoutError):
            return None

    def lost(self, client):
        if client in self.clients:
            self.clients.remove(client)
        if not self.stopping:
            self.loop.create_task(self._reopen())

    async def _reopen(self):
        # Bounded: at most 100 connects per configured connection over the whole run.
        while not self.stopping and self.reconnects < 100 * self.a.connections:
            self.reconnects += 1
            c = await self.connect()
            if c is not None:
                self.clients.append(c)
                self.idle(c)
                return
            errs = self.ph["measured" if self.measuring else "warmup"]["errors"]
            errs["connect"] = errs.get("connect", 0) + 1
            await asyncio.sleep(0.1)

    def idle(self, client):
        if self.queue and client.alive and client.req is None:
            client.send(self.queue.popleft())

    def dispatch(self, req):
        self._phase(req)["sent"] += 1
        self.inflight += 1
        n = len(self.clients)
        for k in range(n):
            c = self.clients[(self.rr + k) % n]
            if c.alive and c.req is None:
                self.rr = (self.rr + k + 1) % n
                c.send(req)
                return
        self._phase(req)["queued"] += 1
        self.queue.append(req)

    # -- snapshots
    def client_conns_per_process(self):
        """How many of our connections each process of the proxy holds, {pid: count}: the
        kernel's spread over nginx's worker processes (weir's and HAProxy's workers are
        threads of one process, so for them it is one number)."""
        inodes = set()
        want = ":%04X" % self.a.port
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        v = line.split()
                        if v[1].endswith(want) and v[3] == "01":   # local port, ESTABLISHED
                            inodes.add(v[9])
            except OSError:
                pass
        out = {}
        for pid in lib.tree(self.a.proxy_pid):
            n = 0
            try:
                for fd in os.listdir("/proc/%d/fd" % pid):
                    try:
                        link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                    except OSError:
                        continue
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        n += 1
            except OSError:
                continue
            if n:
                out[str(pid)] = n
        return out

    async def snapshot(self):
        """The origin's counters and the proxy's CPU seconds, now."""
        snap = {}
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.a.control), 5)
            w.write(b"GET /stats HTTP/1.1\r\nHost: control\r\nConnection: close\r\n\r\n")
            data = await asyncio.wait_for(r.read(), 5)
            w.close()
            snap["origin"] = json.loads(data.split(b"\r\n\r\n", 1)[1])
        except (OSError, asyncio.TimeoutError, ValueError, IndexError) as e:
            raise SystemExit("sparse_load: origin control port did not answer: %s" % e)
        if self.a.proxy_pid:
            ticks = 0
            for p in lib.tree(self.a.proxy_pid):
                try:
                    ticks += lib.cpu_ticks(p)
                except OSError:
                    pass
            snap["proxy_cpu_s"] = ticks / lib.CLK_TCK
            snap["client_conns"] = self.client_conns_per_process()
        snap["time"] = self.loop.time()
        return snap

    # -- the run
    async def run(self):
        a = self.a
        opened = await asyncio.gather(*(self.connect() for _ in range(a.connections)))
        self.clients = [c for c in opened if c is not None]
        if not self.clients:
            raise SystemExit("sparse_load: no connection to 127.0.0.1:%d could be opened" % a.port)
        rng = random.Random(a.seed)
        n_warm = int(round(a.rate * a.warmup))
        total = n_warm + int(round(a.rate * a.seconds))
        hard_end = self.loop.time() + a.warmup + a.seconds + a.timeout + 30  # safety bound
        snaps = {}
        if n_warm == 0:
            snaps["start"] = await self.snapshot()
            self.measuring = True
        t0 = self.loop.time()
        j = 0
        while j < total and self.loop.time() < hard_end:
            now = self.loop.time()
            due = t0 + j / a.rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            if j == n_warm and n_warm:
                snaps["start"] = await self.snapshot()
                self.measuring = True
            self.dispatch(Request(rng.randrange(a.origins), due, j >= n_warm))
            j += 1
        sched_end = self.loop.time()
        # Let the last requests finish (each is bounded by --timeout; queued ones go out as
        # connections free up).
        while (self.inflight > 0) and self.loop.time() < sched_end + a.timeout + 1:
            await asyncio.sleep(0.01)
        snaps["end"] = await self.snapshot()
        self.stopping = True
        for c in list(self.clients):
            if c.transport is not None:
                c.transport.close()
        return self.result(snaps, sched_end - t0, n_warm, total)

    def result(self, snaps, sched_s, n_warm, total):
        a = self.a
        s, e = snaps["start"], snaps["end"]
        so, eo = s["origin"], e["origin"]
        out = {
            "settings": {"origins": a.origins, "rate": a.rate, "seconds": a.seconds, "warmup": a.warmup,
                         "connections": a.connections, "timeout": a.timeout, "seed": a.seed},
            "scheduled": total, "schedule_seconds": round(sched_s, 3),
            "unfinished": self.inflight, "reconnects": self.reconnects,
            "window_seconds": round(e["time"] - s["time"], 3),
            "origin": {
                "accepted": eo["accepted"] - so["accepted"],
                "requests": eo["requests"] - so["requests"],
                "idle_closed": eo["idle_closed"] - so["idle_closed"],
                "open_start": so["open"], "open_end": eo["open"],
                "origins_used": sum(1 for x, y in zip(so["requests_per_port"], eo["requests_per_port"]) if y > x),
            },
        }
        if "proxy_cpu_s" in s:
            out["proxy_cpu_s"] = round(e["proxy_cpu_s"] - s["proxy_cpu_s"], 3)
            out["client_conns_per_process"] = sorted(s["client_conns"].values(), reverse=True)
        for name, p in self.ph.items():
            lat = sorted(p.pop("lat"))
            q = {}
            for label, f in (("p50_ms", 0.50), ("p90_ms", 0.90), ("p99_ms", 0.99)):
                q[label] = round(lat[min(len(lat) - 1, int(f * len(lat)))] * 1000, 3) if lat else None
            q["max_ms"] = round(lat[-1] * 1000, 3) if lat else None
            p.update(q)
            out[name] = p
        return out


async def amain(a):
    loop = asyncio.get_running_loop()
    res = await Generator(a, loop).run()
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, a.out)
    m, o = res["measured"], res["origin"]
    errs = sum(m["errors"].values()) + sum(v for k, v in m["status"].items() if not k.startswith("2"))
    print("sparse_load: %d requests, %d ok, %d errors, origin: %d connections opened for %d requests"
          % (m["sent"], m["completed"], errs, o["accepted"], o["requests"]))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True, help="the proxy's port on 127.0.0.1")
    p.add_argument("--control", type=int, required=True, help="the origin process's control port")
    p.add_argument("--origins", type=int, default=200, help="requests go to /o/0/ .. /o/N-1/")
    p.add_argument("--rate", type=float, default=400, help="requests per second, in total")
    p.add_argument("--seconds", type=float, default=20, help="measured seconds")
    p.add_argument("--warmup", type=float, default=3, help="seconds before the measured part")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections to the proxy")
    p.add_argument("--timeout", type=float, default=5, help="seconds to wait for a response")
    p.add_argument("--body", type=int, default=256, help="expected response body bytes")
    p.add_argument("--seed", type=int, default=1, help="seed of the origin sequence")
    p.add_argument("--proxy-pid", type=int, help="the proxy's PID, for its CPU time")
    p.add_argument("--out", required=True, help="JSON result file")
    a = p.parse_args(argv)
    if a.origins < 1 or a.rate <= 0 or a.seconds <= 0 or a.warmup < 0 or a.connections < 1 or a.timeout <= 0:
        p.error("--origins, --rate, --seconds, --connections and --timeout must be positive, --warmup >= 0")
    return a


if __name__ == "__main__":
    sys.exit(asyncio.run(amain(parse_args(sys.argv[1:]))) or 0)
