#!/usr/bin/env python3
"""Many small origins in one process, for bench/many_origins.sh.

One asyncio process listens on N loopback ports (port 0 each: the kernel picks free ones)
and serves the same small response on every one of them, HTTP/1.1 with keep-alive, like
a real origin with a short keep-alive timeout: a connection that has been idle (no request
in progress) for --idle seconds is closed by the origin, as nginx's keepalive_timeout does.

It counts, per port, the connections accepted and the requests served. The counts are the
impartial figure the bench compares proxies on: whatever a proxy claims about its pool, the
origin sees every connection it opens.

    origins.py --count 200 --idle 2 --body 256 --ready FILE --body-file FILE

Once every port listens, FILE (--ready) is written atomically as JSON:
    {"pid": PID, "control": CONTROL_PORT, "ports": [P0, P1, ...]}
Port i serves requests for origin i: the response carries "X-Origin: i", so a client can
check that the proxy routed it to the right one. The body is the same on every port and is
written to --body-file, for readiness probes that compare bytes.

The control port answers "GET /stats" with JSON (cumulative since start; the client takes
differences):
    {"time": monotonic seconds, "accepted": total, "requests": total, "open": now,
     "idle_closed": total, "accepted_per_port": [...], "requests_per_port": [...]}

Requests with a body are not supported (the bench sends none): they get 400 and a close.
SIGTERM or SIGINT: exit 0.
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import sys

MAX_HEAD = 64 * 1024  # a request head larger than this is refused (400, close)


class Stats:
    def __init__(self, n):
        self.accepted = [0] * n
        self.requests = [0] * n
        self.open = 0
        self.idle_closed = 0

    def as_dict(self, loop):
        return {"time": loop.time(), "accepted": sum(self.accepted),
                "requests": sum(self.requests), "open": self.open,
                "idle_closed": self.idle_closed,
                "accepted_per_port": self.accepted, "requests_per_port": self.requests}


class Origin(asyncio.Protocol):
    """One client connection to origin `idx` (one of the N ports)."""

    def __init__(self, idx, stats, idle, response, loop):
        self.idx, self.stats, self.idle, self.response, self.loop = idx, stats, idle, response, loop
        self.transport = None
        self.buf = b""
        self.last = 0.0      # loop time of the last response written (or of the accept)
        self.timer = None

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # One write per response, but keep the kernel from holding it back anyway.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats.accepted[self.idx] += 1
        self.stats.open += 1
        self.last = self.loop.time()
        # The idle check runs at most once per --idle seconds per connection: when it fires
        # early (there was activity since), it re-arms for the remaining time instead of
        # every request cancelling and re-creating a timer.
        self.timer = self.loop.call_later(self.idle, self._check_idle)

    def _check_idle(self):
        self.timer = None
        if self.transport is None or self.transport.is_closing():
            return
        due = self.last + self.idle
        now = self.loop.time()
        if now >= due:
            self.stats.idle_closed += 1
            self.transport.close()
        else:
            self.timer = self.loop.call_later(due - now, self._check_idle)

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._fail()
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                self._fail()
                return
            close = parts[2] == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"connection":
                    if b"close" in value:
                        close = True
                    elif b"keep-alive" in value:
                        close = False
                elif (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
                    self._fail()
                    return
            self.stats.requests[self.idx] += 1
            self.last = self.loop.time()
            if close:
                self.transport.write(self.response[1])
                self.transport.close()
                return
            self.transport.write(self.response[0])

    def _fail(self):
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.transport.close()

    def connection_lost(self, exc):
        self.stats.open -= 1
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Control(asyncio.Protocol):
    """The control port: GET /stats answers the counters as JSON, then closes."""

    def __init__(self, stats, loop):
        self.stats, self.loop, self.buf = stats, loop, b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                self.transport.close()
            return
        if self.buf.startswith(b"GET /stats "):
            body = json.dumps(self.stats.as_dict(self.loop)).encode()
            status = b"200 OK"
        else:
            body, status = b"not found\n", b"404 Not Found"
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(body)).encode() +
                             b"\r\nConnection: close\r\n\r\n" + body)
        self.transport.close()


def responses(idx, body):
    """The keep-alive and the closing response of origin `idx`, built once."""
    head = ("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: %d\r\nX-Origin: %d\r\n" % (len(body), idx)).encode()
    return head + b"\r\n" + body, head + b"Connection: close\r\n\r\n" + body


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


async def main(args):
    loop = asyncio.get_running_loop()
    stats = Stats(args.count)
    # A fixed, printable body (no randomness needed: the bench checks routing through the
    # X-Origin header); ends in a newline so it reads well with curl.
    body = ((b"weir bench origin " * (args.body // 18 + 1))[:args.body - 1] + b"\n") if args.body else b""
    servers, ports = [], []
    for i in range(args.count):
        ka_close = responses(i, body)
        srv = await loop.create_server(
            lambda i=i, r=ka_close: Origin(i, stats, args.idle, r, loop),
            "127.0.0.1", 0, backlog=1024, reuse_address=True)
        servers.append(srv)
        ports.append(srv.sockets[0].getsockname()[1])
    ctl = await loop.create_server(lambda: Control(stats, loop), "127.0.0.1", 0)
    servers.append(ctl)
    if args.body_file:
        write_atomic(args.body_file, body)
    write_atomic(args.ready, json.dumps({"pid": os.getpid(), "control": ctl.sockets[0].getsockname()[1],
                                         "ports": ports}).encode())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for srv in servers:
        srv.close()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=200, help="number of origins (ports)")
    p.add_argument("--idle", type=float, default=2.0,
                   help="seconds a keep-alive connection may stay idle before the origin closes it")
    p.add_argument("--body", type=int, default=256, help="response body bytes")
    p.add_argument("--ready", required=True, help="JSON file written once every port listens")
    p.add_argument("--body-file", help="file to write the response body to")
    args = p.parse_args(argv)
    if args.count < 1 or args.idle <= 0 or args.body < 0:
        p.error("--count and --idle must be positive, --body non-negative")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
    sys.exit(0)
