"""Functional timeouts: every server.timeouts key, and the error statuses of a bad upstream.

Timeouts are configured short (hundreds of milliseconds); each test asserts that the timeout
happened, and that it did not happen absurdly early, with generous slack for sanitizer builds.
"""
import select
import socket
import threading
import time

import pytest

from conftest import (SANITIZED, free_port, parse_responses, proxy_config, recv_response,
                      skip_unless_ci)

SLACK = 8.0 if SANITIZED else 4.0  # how late a timeout may fire (seconds past the deadline)


def timeouts_config(port, backends, **timeouts):
    lines = "".join(f"    {k}: {v}\n" for k, v in timeouts.items())
    return proxy_config(port, backends, server_extra="  timeouts:\n" + lines)


def wait_closed(sock, limit):
    """Reads (and returns) everything until the peer closes; returns (data, seconds, closed)."""
    start = time.monotonic()
    deadline = start + limit
    chunks = []
    closed = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            b = sock.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not b:
            closed = True
            break
        chunks.append(b)
    return b"".join(chunks), time.monotonic() - start, closed


def read_one_response(sock, limit=10.0):
    """Reads exactly one response (keep-alive safe): (status, headers, body)."""
    r = recv_response(sock, limit)
    assert r.extra == b"", "unexpected bytes after the response"
    return r.status, r.headers, r.body


def get(path, host="t"):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


# ---- client side ----


def test_client_header_partial_head_is_closed(weir, origin):
    port = free_port()
    weir(timeouts_config(port, [origin.port], client_header="500ms", client_keepalive="30s"),
         port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        data, took, closed = wait_closed(s, 0.5 + SLACK)
    assert closed, "weir kept a connection with a partial head open past client_header"
    assert took >= 0.3, f"closed after {took:.3f}s, before the 500ms client_header timeout"
    assert b" 200 " not in data
    assert origin.requests == []


def test_client_header_is_a_total_deadline_slowloris(weir, origin):
    """One byte every 100ms keeps the socket busy, but the head must be complete in time."""
    port = free_port()
    weir(timeouts_config(port, [origin.port], client_header="1s", client_keepalive="30s"),
         port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 1.0 + SLACK:
            try:
                s.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            r, _, _ = select.select([s], [], [], 0.1)
            if r:
                try:
                    b = s.recv(65536)
                except ConnectionResetError:
                    b = b""
                if not b:
                    closed = True
                    break
                assert b" 200 " not in b
        took = time.monotonic() - start
    assert closed, (f"a client dribbling one byte per 100ms was still connected after "
                    f"{took:.1f}s with client_header: 1s (the header deadline is per read)")
    assert took >= 0.7, f"closed after {took:.3f}s, before the 1s client_header timeout"
    assert origin.requests == []


def test_client_keepalive_idle_connection_is_closed(weir, origin):
    port = free_port()
    weir(timeouts_config(port, [origin.port], client_keepalive="500ms", client_header="30s"),
         port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(get("/first"))
        st, _, _ = read_one_response(s)
        assert st == 200
        # Well within the keep-alive timeout, a second request on the same connection works.
        time.sleep(0.1)
        s.sendall(get("/second"))
        st, _, _ = read_one_response(s)
        assert st == 200
        data, took, closed = wait_closed(s, 0.5 + SLACK)
    assert closed, "an idle keep-alive connection outlived client_keepalive"
    assert data == b""
    assert took >= 0.3, f"closed after {took:.3f}s, before the 500ms client_keepalive timeout"
    assert [r.target for r in origin.requests] == ["/first", "/second"]


def test_client_body_stall_gets_408_and_releases_origin(weir, raw_origin):
    origin_closed = threading.Event()
    origin_got = []

    def handler(c):
        head = c.read_until(b"\r\n\r\n")
        origin_got.append(head)
        while c.recv_some():
            pass
        origin_closed.set()  # weir closed (or reset) its upstream connection

    o = raw_origin(handler)
    port = free_port()
    weir(timeouts_config(port, [o.port], client_body="500ms", upstream_read="30s",
                         upstream_write="30s"), port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
                  + b"0123456789")
        data, took, closed = wait_closed(s, 0.5 + SLACK)
    assert closed, "a client that stopped sending its body was not cut off"
    assert took >= 0.3, f"gave up after {took:.3f}s, before the 500ms client_body timeout"
    if data:
        (st, _, _), = parse_responses(data)
        assert st == 408, data[:200]
    assert origin_closed.wait(SLACK), "the origin connection was not released after the 408"


# ---- upstream side ----


class HangingListener:
    """A loopback listener that never accepts and whose accept queue is full: a connect to it
    hangs (Linux drops SYNs to a full accept queue)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []

    def fill(self):
        """Connects until one connect attempt hangs; True when it did."""
        for _ in range(16):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            self.fillers.append(c)
            c.connect_ex(("127.0.0.1", self.port))
            _, w, _ = select.select([], [c], [], 0.3)
            if not w:
                return True
        return False

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()


@pytest.fixture
def hanging_listener():
    h = HangingListener()
    if not h.fill():
        h.close()
        skip_unless_ci("could not make a loopback connect hang (accept queue never filled)")
    yield h
    h.close()


def test_upstream_connect_timeout_is_504(weir, hanging_listener):
    port = free_port()
    weir(timeouts_config(port, [hanging_listener.port], upstream_connect="500ms")
         .replace("  grace_period: 10s\n", "  grace_period: 10s\n  max_retries: 0\n"),
         port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.monotonic()
        s.sendall(get("/"))
        st, _, _ = read_one_response(s, limit=0.5 + SLACK)
        took = time.monotonic() - start
    assert st == 504
    assert took >= 0.4, f"504 after {took:.3f}s, before the 500ms upstream_connect timeout"


def test_connection_refused_is_502_quickly(weir):
    dead = free_port()  # nothing listens there
    port = free_port()
    weir(timeouts_config(port, [dead], upstream_connect="10s"), port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.monotonic()
        s.sendall(get("/"))
        st, _, _ = read_one_response(s, limit=10)
        took = time.monotonic() - start
    assert st == 502
    assert took < 2.0, f"a refused connect took {took:.2f}s to become a 502"


def test_upstream_read_timeout_is_504(weir, raw_origin):
    def handler(c):
        c.read_until(b"\r\n\r\n")
        while c.recv_some():  # never answers; returns when weir gives up
            pass

    o = raw_origin(handler)
    port = free_port()
    weir(timeouts_config(port, [o.port], upstream_read="500ms"), port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.monotonic()
        s.sendall(get("/"))
        st, _, _ = read_one_response(s, limit=0.5 + SLACK)
        took = time.monotonic() - start
    assert st == 504
    assert took >= 0.4, f"504 after {took:.3f}s, before the 500ms upstream_read timeout"


def test_upstream_stalls_mid_body_client_sees_truncation(weir, raw_origin):
    def handler(c):
        c.read_until(b"\r\n\r\n")
        c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50)
        while c.recv_some():
            pass

    o = raw_origin(handler)
    port = free_port()
    weir(timeouts_config(port, [o.port], upstream_read="500ms"), port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(get("/"))
        data, took, closed = wait_closed(s, 0.5 + SLACK)
    assert closed, "weir kept the client waiting after the origin stalled mid-body"
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"content-length: 100" in head.lower()
    assert len(body) < 100, "the client must see the body cut short (no complete response)"
    assert body == b"x" * len(body)
    assert took >= 0.4, f"cut after {took:.3f}s, before the 500ms upstream_read timeout"


def test_origin_closes_without_answering_is_502(weir, raw_origin):
    def handler(c):
        c.read_until(b"\r\n\r\n")
        c.close()

    o = raw_origin(handler)
    port = free_port()
    weir(timeouts_config(port, [o.port], upstream_read="10s"), port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(get("/"))
        st, _, _ = read_one_response(s, limit=10)
    assert st == 502


def test_origin_sends_garbage_is_502(weir, raw_origin):
    def handler(c):
        c.read_until(b"\r\n\r\n")
        c.send(b"HELLO\r\n\r\n")
        while c.recv_some():  # stays open: weir must give up on the bytes, not on a close
            pass

    o = raw_origin(handler)
    port = free_port()
    weir(timeouts_config(port, [o.port], upstream_read="10s"), port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.monotonic()
        s.sendall(get("/"))
        st, _, _ = read_one_response(s, limit=10)
        took = time.monotonic() - start
    assert st == 502
    assert took < 5.0, f"garbage from the origin took {took:.1f}s to become a 502"


# ---- client_write ----


def server_side_state(weir_port, client_port):
    """The TCP state of weir's end of one client connection, from /proc/net/tcp (or None)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, st = parts[1], parts[2], parts[3]
            if (int(local.split(":")[1], 16) == weir_port
                    and int(remote.split(":")[1], 16) == client_port):
                return int(st, 16)
    return None


TCP_ESTABLISHED = 1


def test_client_write_timeout_closes_a_client_that_never_reads(weir, origin):
    total = 50_000_000
    port = free_port()
    w = weir(timeouts_config(port, [origin.port], client_write="500ms"), port=port)
    rss_before = w.rss_kb()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        s.connect(("127.0.0.1", port))
        cport = s.getsockname()[1]
        s.sendall(get(f"/bytes/{total}"))
        time.sleep(0.2)
        assert server_side_state(port, cport) == TCP_ESTABLISHED, \
            "weir closed a slow client before client_write elapsed"
        deadline = time.monotonic() + 0.5 + SLACK
        state = TCP_ESTABLISHED
        while time.monotonic() < deadline:
            state = server_side_state(port, cport)
            if state != TCP_ESTABLISHED:
                break
            time.sleep(0.05)
        assert state != TCP_ESTABLISHED, \
            "weir kept a client that reads nothing past client_write"
        if not SANITIZED:
            grown = w.hwm_kb() - rss_before
            assert grown < 32 * 1024, f"weir's RSS grew by {grown} KiB for one stalled client"
        # What did reach the client is a truncated response, never the whole body.
        data, _, closed = wait_closed(s, 10)
        assert closed
        assert data.startswith(b"HTTP/1.1 200")
        assert len(data) < total
    finally:
        s.close()
    # weir still serves other clients.
    with socket.create_connection(("127.0.0.1", port)) as s2:
        s2.sendall(get("/after"))
        st, _, _ = read_one_response(s2)
        assert st == 200


# ---- the per-read timeouts measure gaps, not totals ----


def test_client_body_is_per_read_a_slow_steady_upload_passes(weir, origin):
    port = free_port()
    weir(timeouts_config(port, [origin.port], client_body="500ms"), port=port)
    body = b"abcdefghijklmnop"  # 16 bytes, one per 100ms: 1.6s in all, > client_body
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\n\r\n")
        for i in range(len(body)):
            time.sleep(0.1)
            s.sendall(body[i:i + 1])
        st, _, got = read_one_response(s)
    assert (st, got) == (200, body)


def test_client_write_is_per_write_a_slow_steady_reader_passes(weir, origin):
    total = 1 << 20
    port = free_port()
    weir(timeouts_config(port, [origin.port], client_write="500ms"), port=port)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    with s:
        s.connect(("127.0.0.1", port))
        s.sendall(get(f"/bytes/{total}"))
        data = b""
        start = time.monotonic()
        s.settimeout(10)
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and len(body) >= total:
                break
            time.sleep(0.05)  # slow, but never 500ms without progress
        took = time.monotonic() - start
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) == total, f"a steady slow reader was cut after {len(body)} bytes"
    assert took > 0.5, "the read was not slow enough to exercise client_write"


def test_upstream_read_is_per_read_a_slow_steady_origin_passes(weir, raw_origin):
    def handler(c):
        c.read_until(b"\r\n\r\n")
        c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        for i in range(10):  # 2s in all, one byte per 200ms: every gap < upstream_read
            time.sleep(0.2)
            c.send(b"0123456789"[i:i + 1])
        while c.recv_some():
            pass

    o = raw_origin(handler)
    port = free_port()
    weir(timeouts_config(port, [o.port], upstream_read="700ms"), port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(get("/"))
        st, _, body = read_one_response(s, limit=15)
    assert (st, body) == (200, b"0123456789")


def test_upstream_write_timeout_is_504(weir, raw_origin):
    def handler(c):
        c.read_until(b"\r\n\r\n")
        time.sleep(30)  # never reads the body: weir's writes stop making progress

    o = raw_origin(handler)
    port = free_port()
    weir(timeouts_config(port, [o.port], upstream_write="500ms", upstream_read="30s",
                         client_body="30s"), port=port)
    total = 64 << 20
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {total}\r\n\r\n".encode())
        stop = threading.Event()

        def pump():
            chunk = b"x" * 65536
            s.settimeout(0.2)
            while not stop.is_set():
                try:
                    s.send(chunk)
                except socket.timeout:
                    continue
                except OSError:
                    return

        t = threading.Thread(target=pump, daemon=True)
        start = time.monotonic()
        t.start()
        try:
            buf = b""
            deadline = start + 0.5 + SLACK + 2
            while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
                r, _, _ = select.select([s], [], [], 0.1)
                if r:
                    try:
                        b = s.recv(65536)
                    except (ConnectionResetError, socket.timeout):
                        break
                    if not b:
                        break
                    buf += b
            took = time.monotonic() - start
        finally:
            stop.set()
            t.join(5)
    assert buf.startswith(b"HTTP/1.1 504"), \
        f"an origin that stopped reading the body did not give 504 ({took:.1f}s): {buf[:200]!r}"
    assert took >= 0.4


def test_upstream_idle_closes_pooled_connection(weir, raw_origin):
    closed_at = []
    served_at = []

    def handler(c):
        while c.read_until(b"\r\n\r\n") is not None:
            c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            served_at.append(time.monotonic())
        closed_at.append(time.monotonic())

    o = raw_origin(handler)
    port = free_port()
    weir(timeouts_config(port, [o.port], upstream_idle="500ms")
         .replace("threads: 2", "threads: 1"), port=port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(get("/1"))
        assert read_one_response(s)[0] == 200
        # Reused at once: the pool kept the connection.
        s.sendall(get("/2"))
        assert read_one_response(s)[0] == 200
        deadline = time.monotonic() + 0.5 + SLACK
        while not closed_at and time.monotonic() < deadline:
            time.sleep(0.02)
    assert o.connections == 1, "the pooled upstream connection was not reused"
    assert closed_at, "weir kept an idle upstream connection past upstream_idle"
    idle = closed_at[0] - served_at[-1]
    assert idle >= 0.3, f"closed after {idle:.3f}s idle, before the 500ms upstream_idle"
