#!/usr/bin/env python3
"""The stampede client of bench/cache_stampede.sh, and its report.

  stampede_client.py run --port P --path /x -n N [--timeout 30] [--size 1024] [--out F]
      Opens N TCP connections to 127.0.0.1:P (HTTP/1.1, each its own connection), all of
      them first; waits until the listener's accept queue is empty (the proxy accepted them
      all: /proc/net/tcp); then sends one `GET PATH` on each, back to back in one loop pass,
      and reads the N responses. Each request's latency runs from its own send to the last
      byte of its response. Prints one JSON line (to --out as well): latencies, statuses,
      the cache headers seen (Cache-Status, X-Cache-Status, X-Varnish hit/miss), errors.
      --dump F: one line per request (send offset, latency, status, cache header).

  stampede_client.py report TSV MD
      The table of a run of cache_stampede.sh from its TSV (one row per proxy and N, the
      client's JSON and the origin's count), printed and written as Markdown to MD.

Standard library only; every wait is bounded (connect phase, accept wait, --timeout).
"""
import argparse
import asyncio
import json
import os
import sys
import time


# ---------------------------------------------------------------- the client

class Conn(asyncio.Protocol):
    def __init__(self, done_cb):
        self.transport = None
        self.buf = bytearray()
        self.t0 = self.t1 = None
        self.status = None
        self.hdrs = None
        self.need = None      # body bytes still expected (Content-Length), or None
        self.chunked = False
        self.body = 0         # body bytes received
        self.err = None
        self.done = done_cb
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.t1 is None and self.err is None and self.t0 is not None:
            if self.hdrs is not None and self.need is None and not self.chunked:
                self.finish()  # read until close
            else:
                self.fail("closed before a complete response")

    def fail(self, why):
        if self.t1 is None and self.err is None:
            self.err = why
            self.done(self)

    def finish(self):
        self.t1 = time.perf_counter()
        self.done(self)

    def data_received(self, data):
        if self.t1 is not None or self.err is not None:
            return
        self.buf += data
        if self.hdrs is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.fail("response head too long")
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[:end + 4]
            try:
                self.status = int(head[0].split(" ")[1])
            except (IndexError, ValueError):
                self.fail("malformed status line")
                return
            self.hdrs = {}
            for ln in head[1:]:
                k, _, v = ln.partition(":")
                self.hdrs[k.strip().lower()] = v.strip()
            if "chunked" in self.hdrs.get("transfer-encoding", "").lower():
                self.chunked = True
            elif "content-length" in self.hdrs:
                self.need = int(self.hdrs["content-length"])
        if self.chunked:
            self.parse_chunks()
        elif self.need is not None:
            self.body += len(self.buf)
            self.buf.clear()
            if self.body >= self.need:
                self.finish()

    def parse_chunks(self):
        # self.need: None before a chunk-size line; > 0 data bytes left in a chunk; 0 the
        # CRLF after a chunk's data; -1 inside the trailer section (ends at an empty line).
        while True:
            if self.need is not None and self.need > 0:
                take = min(self.need, len(self.buf))
                del self.buf[:take]
                self.need -= take
                self.body += take
                if self.need > 0:
                    return
                continue
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                if len(self.buf) > 4096:
                    self.fail("bad chunk framing")
                return
            line = bytes(self.buf[:nl])
            del self.buf[:nl + 2]
            if self.need == 0:
                if line:
                    self.fail("bad chunk framing")
                    return
                self.need = None
            elif self.need == -1:
                if not line:
                    self.finish()
                    return
            else:
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.fail("bad chunk size")
                    return
                self.need = size if size > 0 else -1


def accept_queue(port):
    """Connections waiting in 127.0.0.1:port's accept queue (None: no such listener)."""
    want = ":%04X" % port
    total = None
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for ln in f:
                    p = ln.split()
                    if p[3] == "0A" and p[1].endswith(want):  # LISTEN
                        rx = int(p[4].split(":")[1], 16)
                        total = (total or 0) + rx
        except OSError:
            pass
    return total


def pct(sorted_v, q):
    if not sorted_v:
        return None
    i = max(0, min(len(sorted_v) - 1, int(-(-q * len(sorted_v) // 100)) - 1))  # nearest rank
    return sorted_v[i]


async def run(args):
    loop = asyncio.get_running_loop()
    pending = set()
    all_done = loop.create_future()

    def done(c):
        pending.discard(c)
        if not pending and not all_done.done():
            all_done.set_result(None)

    # Phase 1: connect them all (at most --connect-concurrency connects in flight).
    conns, connect_errors = [], {}
    sem = asyncio.Semaphore(args.connect_concurrency)

    async def connect_one():
        async with sem:
            try:
                _, c = await asyncio.wait_for(
                    loop.create_connection(lambda: Conn(done), "127.0.0.1", args.port), 10)
                conns.append(c)
            except (OSError, asyncio.TimeoutError) as e:
                k = type(e).__name__ + (": " + e.strerror if getattr(e, "strerror", None) else "")
                connect_errors[k] = connect_errors.get(k, 0) + 1

    t_c0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(connect_one() for _ in range(args.n))),
                           args.connect_timeout)
    t_connect = time.perf_counter() - t_c0
    # The proxy has accepted them all once its listener's accept queue is empty (bounded).
    deadline = time.monotonic() + 10
    q = accept_queue(args.port)
    while q and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        q = accept_queue(args.port)
    await asyncio.sleep(args.settle)
    lost_before = sum(1 for c in conns if c.closed)

    # Phase 2: the stampede.
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: weir-bench-stampede\r\n"
           "Accept: */*\r\n\r\n" % (args.path, args.host)).encode()
    live = [c for c in conns if not c.closed]
    pending.update(live)
    # Straight to each socket (os.write: far cheaper than transport.write, so the N requests
    # leave within a few ms); a short write (never seen with ~100 bytes) goes on through
    # the transport.
    fds = [c.transport.get_extra_info("socket").fileno() for c in live]
    pc, wr = time.perf_counter, os.write
    t_first = pc()
    for c, fd in zip(live, fds):
        c.t0 = pc()
        try:
            k = wr(fd, req)
        except BlockingIOError:
            k = 0
        if k < len(req):
            c.transport.write(req[k:])
    t_last = pc()
    if not live:
        all_done.set_result(None)
    try:
        await asyncio.wait_for(asyncio.shield(all_done), args.timeout)
    except asyncio.TimeoutError:
        pass
    t_end = pc()
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0)

    lat, statuses, errors, cache, sizes = [], {}, {}, {}, {}
    for c in live:
        if c.t1 is not None:
            lat.append((c.t1 - c.t0) * 1000.0)
            statuses[str(c.status)] = statuses.get(str(c.status), 0) + 1
            h = c.hdrs
            tag = None
            if "cache-status" in h:
                tag = "Cache-Status: " + h["cache-status"].split("; ttl=")[0]
            elif "x-cache-status" in h:
                tag = "X-Cache-Status: " + h["x-cache-status"]
            elif "x-varnish" in h:
                tag = "X-Varnish: " + ("hit" if len(h["x-varnish"].split()) > 1 else "miss")
            if tag:
                cache[tag] = cache.get(tag, 0) + 1
            if c.body != args.size:
                sizes[str(c.body)] = sizes.get(str(c.body), 0) + 1
        else:
            why = c.err or "timeout (%gs)" % args.timeout
            errors[why] = errors.get(why, 0) + 1
    if connect_errors:
        for k, v in connect_errors.items():
            errors["connect: " + k] = v
    if lost_before:
        errors["closed by the proxy before the request"] = lost_before
    if args.dump:  # one line per request: send offset, latency (ms), status, cache header
        with open(args.dump, "w") as f:
            f.write("# send_ms\tlatency_ms\tstatus\tcache\n")
            for c in live:
                h = c.hdrs or {}
                tag = h.get("cache-status") or h.get("x-cache-status") or h.get("x-varnish") or "-"
                f.write("%.3f\t%s\t%s\t%s\n" % ((c.t0 - t_first) * 1000.0,
                        "%.3f" % ((c.t1 - c.t0) * 1000.0) if c.t1 is not None else "-",
                        c.status if c.status is not None else (c.err or "timeout"), tag))
    lat.sort()
    out = {
        "n": args.n, "path": args.path, "connected": len(conns), "sent": len(live),
        "completed": len(lat), "connect_s": round(t_connect, 3),
        "send_spread_ms": round((t_last - t_first) * 1000.0, 2),
        "wall_ms": round((t_end - t_first) * 1000.0, 1),
        "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
        "max_ms": lat[-1] if lat else None, "min_ms": lat[0] if lat else None,
        "statuses": statuses, "cache": cache, "errors": errors, "wrong_body_sizes": sizes,
    }
    line = json.dumps(out)
    print(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")
    return 0


# ---------------------------------------------------------------- the report

def fmt(v, nd=1):
    return "-" if v is None else ("%.*f" % (nd, v))


def report(tsv, md):
    rows = []
    with open(tsv) as f:
        for ln in f:
            if not ln.strip() or ln.startswith("#"):
                continue
            proxy, n, fetches, note, js = ln.rstrip("\n").split("\t", 4)
            d = json.loads(js) if js.startswith("{") else {}
            rows.append((proxy, int(n), fetches, note, d))
    by = {(p, n): (f, note, d) for p, n, f, note, d in rows}
    ns = sorted({n for _, n, _, _, _ in rows})
    proxies = []
    for p, _, _, _, _ in rows:
        if p not in proxies:
            proxies.append(p)
    out = []
    head = ("| N | proxy | origin fetches | completed | p50 ms | p90 ms | p99 ms | max ms | statuses "
            "| cache header | errors | send spread ms |")
    out.append(head)
    out.append("|" + "---|" * (head.count("|") - 1))
    for n in ns:
        for p in proxies:
            if (p, n) not in by:
                continue
            f, note, d = by[(p, n)]
            if not d:
                out.append("| %d | %s | %s | - | - | - | - | - | - | - | %s | - |" % (n, p, f, note))
                continue
            st = ", ".join("%s x%d" % (k, v) for k, v in sorted(d["statuses"].items())) or "-"
            ca = ", ".join("%s x%d" % (k, v) for k, v in sorted(d["cache"].items(),
                                                              key=lambda kv: -kv[1])) or "-"
            er = ", ".join("%s x%d" % (k, v) for k, v in d["errors"].items())
            if d.get("wrong_body_sizes"):
                er += (", " if er else "") + "wrong body size: " + json.dumps(d["wrong_body_sizes"])
            if note:
                er += (", " if er else "") + note
            out.append("| %d | %s | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                n, p, f, d["completed"], n, fmt(d["p50_ms"]), fmt(d["p90_ms"]), fmt(d["p99_ms"]),
                fmt(d["max_ms"]), st, ca, er or "0", fmt(d["send_spread_ms"])))
    out.append("")
    # Ratios of weir's p50 and p99 to the others', per N and per weir row: the stampede rows,
    # then the warm control rows (ROW/warm) among themselves.
    for suffix, title in (("", "stampede"), ("/warm", "warm control (all hits)")):
        group = [p for p in proxies if p.endswith(suffix) and (suffix or "/" not in p)]
        weirs = [p for p in group if p.startswith("weir")]
        others = [p for p in group if not p.startswith("weir")]
        if not (weirs and others):
            continue
        out.append("ratios, %s:" % title)
        out.append("")
        head = "| N | weir row | " + " | ".join("p50 / %s p50 | p99 / %s p99" % (o, o) for o in others) + " |"
        out.append(head)
        out.append("|" + "---|" * (head.count("|") - 1))
        for n in ns:
            for w in weirs:
                if (w, n) not in by or not by[(w, n)][2]:
                    continue
                wd = by[(w, n)][2]
                cells = []
                for o in others:
                    od = by.get((o, n), (None, None, {}))[2]
                    for k in ("p50_ms", "p99_ms"):
                        if od and od.get(k) and wd.get(k) is not None:
                            cells.append("%.2fx" % (wd[k] / od[k]))
                        else:
                            cells.append("-")
                out.append("| %d | %s | %s |" % (n, w, " | ".join(cells)))
        out.append("")
    text = "\n".join(out)
    print(text)
    with open(md, "w") as f:
        f.write(text + "\n")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--path", required=True)
    r.add_argument("--host", default="stampede.test")
    r.add_argument("-n", type=int, required=True)
    r.add_argument("--size", type=int, default=1024, help="expected body bytes")
    r.add_argument("--timeout", type=float, default=30.0)
    r.add_argument("--connect-timeout", type=float, default=60.0)
    r.add_argument("--connect-concurrency", type=int, default=256)
    r.add_argument("--settle", type=float, default=0.2,
                   help="seconds to wait after the accept queue is empty")
    r.add_argument("--out")
    r.add_argument("--dump", help="per-request lines (send offset, latency, status, cache header)")
    p = sub.add_parser("report")
    p.add_argument("tsv")
    p.add_argument("md")
    a = ap.parse_args()
    if a.cmd == "run":
        try:
            return asyncio.run(run(a))
        except asyncio.TimeoutError:
            print("stampede_client: connect phase timed out", file=sys.stderr)
            return 1
    return report(a.tsv, a.md)


if __name__ == "__main__":
    sys.exit(main())
