#!/usr/bin/env python3
"""Many small origins in one process, for bench/many_origins.sh.

One asyncio process listens on N loopback ports (port 0 each: the kernel picks free ones)
and serves the same small response on every one of them, HTTP/1.1 with keep-alive, like
a real origin with a short keep-alive timeout: a connection that has been idle (no request
in progress) for --idle seconds is closed by the origin, as nginx's keepalive_timeout does.

With --h2c every port speaks HTTP/2 with prior knowledge (h2c) instead, through python3-h2
(sans-I/O): the same response on every request stream (":status 200", content-length,
x-origin, the body), under flow control both ways, and the same idle rule: a connection with
no open stream for --idle seconds gets a GOAWAY (last stream: the highest one it served), its
sending side is shut, and it is closed when the client closes its side (at most 1 s later).
The SETTINGS are h2's defaults (SETTINGS_MAX_CONCURRENT_STREAMS 100).

It counts, per port, the connections accepted and the requests served. The counts are the
impartial figure the bench compares proxies on: whatever a proxy claims about its pool, the
origin sees every connection it opens.

    origins.py --count 200 --idle 2 --body 256 --ready FILE --body-file FILE [--h2c]

Once every port listens, FILE (--ready) is written atomically as JSON:
    {"pid": PID, "control": CONTROL_PORT, "ports": [P0, P1, ...]}
Port i serves requests for origin i: the response carries "X-Origin: i", so a client can
check that the proxy routed it to the right one. The body is the same on every port and is
written to --body-file, for readiness probes that compare bytes.

The control port answers "GET /stats" with JSON (cumulative since start; the client takes
differences):
    {"time": monotonic seconds, "accepted": total, "requests": total, "open": now,
     "idle_closed": total, "accepted_per_port": [...], "requests_per_port": [...]}

HTTP/1.1 requests with a body are not supported (the bench sends none): they get 400 and a
close; over h2c a request body is read (and its flow-control credit given back) and ignored.
The control port always speaks HTTP/1.1.
SIGTERM or SIGINT: exit 0.
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import sys

# For --h2c only: python3-h2 (Debian), sans-I/O HTTP/2. This script's own directory is left
# out of the search while importing it: bench/h2.py (h2.sh's helpers) would shadow it.
_path, _here = sys.path[:], os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
except ImportError:
    h2 = None
finally:
    sys.path[:] = _path

MAX_HEAD = 64 * 1024  # a request head larger than this is refused (400, close)
GOAWAY_GRACE = 1.0    # h2c: seconds after an idle GOAWAY before the connection is closed anyway


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


class H2Origin(asyncio.Protocol):
    """One h2c (HTTP/2, prior knowledge) client connection to origin `idx`."""

    def __init__(self, idx, stats, idle, body, loop):
        self.idx, self.stats, self.idle, self.body, self.loop = idx, stats, idle, body, loop
        self.head = [(b":status", b"200"), (b"content-type", b"application/octet-stream"),
                     (b"content-length", b"%d" % len(body)), (b"x-origin", b"%d" % idx)]
        self.transport = None
        self.conn = None
        # Open streams: stream id -> None while the request is coming in, then the part of the
        # body still to send (a memoryview; the stream leaves the dict once it is all sent).
        self.streams = {}
        self.last = 0.0      # loop time the last stream ended (or of the accept)
        self.timer = None
        self.closing = False  # the idle GOAWAY is sent

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats.accepted[self.idx] += 1
        self.stats.open += 1
        self.last = self.loop.time()
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.conn.initiate_connection()
        self._flush()
        self.timer = self.loop.call_later(self.idle, self._check_idle)

    def _flush(self):
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _check_idle(self):
        # As Origin's: at most one timer per connection, re-armed while there is activity.
        self.timer = None
        if self.transport is None or self.transport.is_closing() or self.closing:
            return
        now = self.loop.time()
        due = self.last + self.idle
        if self.streams:
            self.timer = self.loop.call_later(self.idle, self._check_idle)
        elif now >= due:
            self._goaway()
        else:
            self.timer = self.loop.call_later(due - now, self._check_idle)

    def _goaway(self):
        # Graceful: GOAWAY, then shut the sending side and read (and drop) whatever the client
        # still sends until it closes, so that a request that crossed the GOAWAY is not met by
        # a TCP reset (the client retries streams above the GOAWAY's last stream id).
        self.closing = True
        self.conn.close_connection()
        self._flush()
        try:
            self.transport.write_eof()
        except OSError:
            # ENOTCONN: the client has reset the connection already (HAProxy closes idle server
            # connections with a reset), and the transport has not read that yet.
            self.transport.abort()
            return
        self.stats.idle_closed += 1
        self.timer = self.loop.call_later(min(GOAWAY_GRACE, self.idle), self.transport.close)

    def data_received(self, data):
        if self.closing:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()  # h2 has queued a GOAWAY with the error
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = None
            elif isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                if ev.stream_id in self.streams:
                    self._respond(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                if ev.stream_id in self.streams:
                    del self.streams[ev.stream_id]
                    self.last = self.loop.time()
            elif isinstance(ev, h2.events.WindowUpdated):
                for sid, rest in list(self.streams.items()):
                    if rest is not None:
                        self._send_body(sid)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._flush()
                self.transport.close()
                return
        self._flush()

    def _respond(self, sid):
        self.stats.requests[self.idx] += 1
        self.conn.send_headers(sid, self.head, end_stream=not self.body)
        if self.body:
            self.streams[sid] = memoryview(self.body)
            self._send_body(sid)
        else:
            del self.streams[sid]
            self.last = self.loop.time()

    def _send_body(self, sid):
        """Send what flow control allows of stream `sid`'s body; the rest on a WINDOW_UPDATE."""
        rest = self.streams[sid]
        try:
            while rest:
                n = min(len(rest), self.conn.local_flow_control_window(sid),
                        self.conn.max_outbound_frame_size)
                if n <= 0:
                    break
                self.conn.send_data(sid, rest[:n].tobytes(), end_stream=n == len(rest))
                rest = rest[n:]
        except h2.exceptions.StreamClosedError:
            rest = None
        if rest:
            self.streams[sid] = rest
        else:
            del self.streams[sid]
            self.last = self.loop.time()

    def eof_received(self):
        return False  # the client closed its side: close ours (after what is queued)

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
        if args.h2c:
            factory = lambda i=i: H2Origin(i, stats, args.idle, body, loop)  # noqa: E731
        else:
            ka_close = responses(i, body)
            factory = lambda i=i, r=ka_close: Origin(i, stats, args.idle, r, loop)  # noqa: E731
        srv = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024, reuse_address=True)
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
    p.add_argument("--h2c", action="store_true",
                   help="speak HTTP/2 with prior knowledge (h2c) on every origin port (needs python3-h2)")
    args = p.parse_args(argv)
    if args.count < 1 or args.idle <= 0 or args.body < 0:
        p.error("--count and --idle must be positive, --body non-negative")
    if args.h2c and h2 is None:
        p.error("--h2c needs python3-h2 (apt-get install python3-h2)")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
    sys.exit(0)
