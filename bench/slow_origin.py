#!/usr/bin/env python3
"""A slow origin for bench/cache_stampede.sh: every request is answered after DELAY seconds.

  slow_origin.py --port P [--delay 0.2] [--size 1024] [--max-age 60] [--ready-file F]
                 [--body-file F]

HTTP/1.1 on 127.0.0.1:P (keep-alive; HTTP/1.0 or `Connection: close` closes after the
response). Every GET or HEAD except the control path is counted by path when it arrives and
answered DELAY seconds later with 200, a body of SIZE bytes (the same bytes every time),
`Cache-Control: max-age=MAX_AGE`, `Date`, `Content-Length`, and `X-Origin-Seq: n` (this is the
n-th request for that path). Requests on one connection are answered in order.

Control: `GET /__count` answers at once with JSON {"paths": {path: count}, "connections": N,
"peak_in_flight": N}; `GET /__count?path=/x` with {"path": "/x", "count": n}. Neither is
counted. On SIGTERM or SIGINT the counts are printed to stderr before exiting.

Standard library only.
"""
import argparse
import asyncio
import email.utils
import json
import signal
import sys
import urllib.parse

MAX_HEAD = 64 * 1024


class State:
    def __init__(self, args):
        self.args = args
        self.counts = {}
        self.connections = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.body = bytes((i * 7 + 13) & 0xFF for i in range(args.size))


class Conn(asyncio.Protocol):
    def __init__(self, st):
        self.st = st
        self.buf = b""
        self.queue = []          # responses waiting for their turn: [bytes or None, close?]
        self.transport = None
        self.closing = False

    def connection_made(self, transport):
        self.transport = transport
        self.st.connections += 1

    def connection_lost(self, exc):
        self.transport = None

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()
                return
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
            self.request(head)

    def request(self, head):
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self.transport.close()
            return
        method, target, version = parts
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        conn = hdrs.get("connection", "").lower()
        close = ("close" in conn) or (version == "HTTP/1.0" and "keep-alive" not in conn)
        if int(hdrs.get("content-length", "0") or 0) != 0 or "transfer-encoding" in hdrs:
            # No request bodies here: answer 400 and close.
            slot = [self.response(400, b"no bodies\n", close=True), True]
            self.queue.append(slot)
            self.flush()
            return
        url = urllib.parse.urlsplit(target)
        if url.path == "/__count":
            q = urllib.parse.parse_qs(url.query)
            if "path" in q:
                p = q["path"][0]
                doc = {"path": p, "count": self.st.counts.get(p, 0)}
            else:
                doc = {"paths": self.st.counts, "connections": self.st.connections,
                       "peak_in_flight": self.st.peak_in_flight}
            body = (json.dumps(doc) + "\n").encode()
            self.queue.append([self.response(200, body, close=close, ctype="application/json",
                                             cacheable=False), close])
            self.flush()
            return
        path = url.path + ("?" + url.query if url.query else "")
        n = self.st.counts.get(path, 0) + 1
        self.st.counts[path] = n
        self.st.in_flight += 1
        self.st.peak_in_flight = max(self.st.peak_in_flight, self.st.in_flight)
        slot = [None, close]
        self.queue.append(slot)
        body = self.st.body if method != "HEAD" else None

        def answer():
            self.st.in_flight -= 1
            slot[0] = self.response(200, body, close=close, seq=n, length=len(self.st.body))
            self.flush()

        asyncio.get_running_loop().call_later(self.st.args.delay, answer)

    def response(self, status, body, close, ctype="application/octet-stream", cacheable=True,
                 seq=None, length=None):
        reason = {200: "OK", 400: "Bad Request"}[status]
        h = ["HTTP/1.1 %d %s" % (status, reason),
             "Date: " + email.utils.formatdate(usegmt=True),
             "Content-Type: " + ctype,
             "Content-Length: %d" % (length if length is not None else len(body or b""))]
        if cacheable and status == 200:
            h.append("Cache-Control: max-age=%d" % self.st.args.max_age)
        if seq is not None:
            h.append("X-Origin-Seq: %d" % seq)
        if close:
            h.append("Connection: close")
        return ("\r\n".join(h) + "\r\n\r\n").encode() + (body or b"")

    def flush(self):
        while self.queue and self.queue[0][0] is not None:
            data, close = self.queue.pop(0)
            if self.transport is None:
                self.queue.clear()
                return
            self.transport.write(data)
            if close:
                self.transport.close()
                self.queue.clear()
                return


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--max-age", type=int, default=60)
    ap.add_argument("--ready-file", help="written (the port) once listening")
    ap.add_argument("--body-file", help="the body every response carries is written here")
    args = ap.parse_args()
    st = State(args)
    if args.body_file:
        with open(args.body_file, "wb") as f:
            f.write(st.body)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(st), "127.0.0.1", args.port, backlog=4096,
                                      reuse_address=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write("%d\n" % args.port)
    await stop
    server.close()
    print("slow_origin: requests per path: " + json.dumps(st.counts, sort_keys=True),
          file=sys.stderr)
    print("slow_origin: connections %d, peak in flight %d" % (st.connections, st.peak_in_flight),
          file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
