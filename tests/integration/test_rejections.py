"""Malformed and over-limit requests, on raw sockets: each gets the right status, the connection
is then closed, and the origin never sees the request (or, for a bad body, never sees anything
past the point where the body went wrong).
"""
import socket
import threading
import time

import pytest

from conftest import free_port, proxy_config

LIMITS = ("  limits:\n"
          "    max_request_line: 1k\n"
          "    max_header_bytes: 4k\n"
          "    max_headers: 20\n"
          "    max_body_bytes: 64k\n")

H = b"Host: example.test\r\n"


def start(weir, backend_port, extra=""):
    port = free_port()
    weir(proxy_config(port, [backend_port], server_extra=LIMITS + extra), port=port)
    return port


def exchange(port, data, timeout=8.0):
    """Sends data, reads until weir closes. Returns (bytes received, closed by weir)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        deadline = time.monotonic() + timeout
        closed = False
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not b:
                closed = True
                break
            chunks.append(b)
        return b"".join(chunks), closed


def split_responses(data):
    """[(status, headers dict, body)] of the responses in data (Content-Length framing only)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data[:200]!r}"
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1."), lines[0]
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


def assert_rejected(data, closed, status):
    assert data, "no response at all"
    responses = split_responses(data)
    assert [r[0] for r in responses] == [status], f"got {data[:300]!r}"
    assert closed, "weir did not close the connection after the error response"
    conn = responses[0][1].get("connection", "")
    assert "keep-alive" not in conn.lower()


# (id, request bytes, expected status)
CASES = [
    ("cl-and-te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", 400),
    ("te-and-cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"Content-Length: 5\r\n\r\n", 400),
    ("two-different-cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Content-Length: 6\r\n\r\nhello", 400),
    ("cl-list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1, 2\r\n\r\nab", 400),
    ("cl-negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("cl-plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("cl-hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x10\r\n\r\n", 400),
    ("cl-empty", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n", 400),
    ("cl-overflow", b"POST / HTTP/1.1\r\n" + H +
     b"Content-Length: 99999999999999999999999\r\n\r\n", 400),
    ("te-gzip-chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
     b"0\r\n\r\n", 501),
    # chunked not last: the length cannot be determined; h1.h documents 400
    ("te-chunked-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
     400),
    ("te-chunked-twice", b"POST / HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked, chunked\r\n\r\n", 400),
    ("te-identity", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", 501),
    ("te-empty", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \r\n\r\n", 400),
    ("te-http10", b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n  continued\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n\tcontinued\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X-A : 1\r\n\r\n", 400),
    ("space-before-colon-host", b"GET / HTTP/1.1\r\nHost : example.test\r\n\r\n", 400),
    ("bare-lf", b"GET / HTTP/1.1\nHost: example.test\n\n", 400),
    ("bare-lf-in-fields", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\nX-B: 2\r\n\r\n", 400),
    ("bare-cr", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\rX-B: 2\r\n\r\n", 400),
    ("bare-cr-request-line", b"GET / HTTP/1.1\r" + H + b"\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400),
    ("bad-name-char", b"GET / HTTP/1.1\r\n" + H + b"X[A]: 1\r\n\r\n", 400),
    ("empty-name", b"GET / HTTP/1.1\r\n" + H + b": 1\r\n\r\n", 400),
    ("no-colon", b"GET / HTTP/1.1\r\n" + H + b"X-A 1\r\n\r\n", 400),
    ("missing-host", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
    ("two-hosts", b"GET / HTTP/1.1\r\n" + H + b"Host: other.test\r\n\r\n", 400),
    ("two-identical-hosts", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    ("host-with-slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("http09", b"GET /\r\n\r\n", 400),
    ("http20", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("http12", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("http30", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505),
    ("lowercase-version", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    ("version-junk", b"GET / HTTP/1.10\r\n" + H + b"\r\n", 400),
    ("double-space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space-in-target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("relative-target", b"GET a/b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("bad-method-char", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("two-leading-crlf", b"\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("request-line-too-long", b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("head-too-large", b"GET / HTTP/1.1\r\n" + H +
     b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(5)) + b"\r\n", 431),
    ("one-huge-field", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 8000 + b"\r\n\r\n", 431),
    ("too-many-fields", b"GET / HTTP/1.1\r\n" + H +
     b"".join(b"X-F-%d: 1\r\n" % i for i in range(30)) + b"\r\n", 431),
    ("cl-over-body-limit", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 100000\r\n\r\n", 413),
]


@pytest.mark.parametrize("request_bytes,status", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rejected_before_origin(weir, origin, request_bytes, status):
    port = start(weir, origin.port)
    data, closed = exchange(port, request_bytes)
    assert_rejected(data, closed, status)
    assert origin.requests == []
    assert origin.connections == 0, "weir connected to the origin for a rejected request"


@pytest.mark.parametrize("request_bytes,status", [c[1:] for c in CASES
                                                   if c[0] in ("cl-and-te", "bare-lf",
                                                               "missing-host", "http20",
                                                               "two-different-cl")],
                         ids=[c[0] for c in CASES if c[0] in ("cl-and-te", "bare-lf",
                                                               "missing-host", "http20",
                                                               "two-different-cl")])
def test_rejected_raw_origin_gets_no_bytes(weir, raw_origin, request_bytes, status):
    def handler(c):
        while c.read_until(b"\r\n\r\n") is not None:
            c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    o = raw_origin(handler)
    port = start(weir, o.port)
    data, closed = exchange(port, request_bytes)
    assert_rejected(data, closed, status)
    time.sleep(0.1)
    assert all(len(r) == 0 for r in o.received)
    assert o.connections == 0


def test_http09_request_line_alone(weir, origin):
    """A real HTTP/0.9 client sends only "GET /" and its CRLF, then waits."""
    port = start(weir, origin.port)
    data, closed = exchange(port, b"GET /\r\n", timeout=6.0)
    assert_rejected(data, closed, 400)
    assert origin.connections == 0


def test_incomplete_head_then_client_close(weir, origin):
    port = start(weir, origin.port)
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: exa")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(8)
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
    assert origin.connections == 0


# ---- bad bodies: the head is fine, so the origin may see the request start, never more ----


def test_chunked_invalid_size_no_smuggling(weir, origin):
    port = start(weir, origin.port)
    req = (b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
           b"zz\r\nhello\r\n0\r\n\r\n"
           b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n")
    data, closed = exchange(port, req)
    assert_rejected(data, closed, 400)
    time.sleep(0.1)
    assert [r.target for r in origin.requests] == []
    assert all(b"smuggled" not in bytes(r) for r in origin.received)
    assert all(b"zz" not in bytes(r) for r in origin.received)


@pytest.mark.parametrize("body", [
    b"ffffffffffffffffff\r\n",
    b"10000000000000000\r\nx\r\n",
    b"-1\r\nx\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",
], ids=["size-overflow-18f", "size-overflow-2^64", "negative", "0x-prefix", "leading-space",
        "bare-lf-size-line", "data-not-crlf"])
def test_chunked_malformed_body(weir, origin, body):
    port = start(weir, origin.port)
    req = (b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + body +
           b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n")
    data, closed = exchange(port, req)
    assert_rejected(data, closed, 400)
    time.sleep(0.1)
    assert origin.requests == []
    assert all(b"smuggled" not in bytes(r) for r in origin.received)


def test_content_length_over_limit_413_without_origin(weir, origin):
    port = start(weir, origin.port)
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.sendall(b"POST /big HTTP/1.1\r\n" + H + b"Content-Length: 65537\r\n\r\n")
        data = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        except ConnectionResetError:
            pass
    assert_rejected(data, True, 413)
    assert origin.connections == 0


def test_content_length_at_limit_passes(weir, origin):
    port = start(weir, origin.port)
    body = b"x" * 65536
    data, closed = exchange(port, b"POST /ok HTTP/1.1\r\n" + H +
                            b"Content-Length: 65536\r\nConnection: close\r\n\r\n" + body)
    responses = split_responses(data)
    assert [r[0] for r in responses] == [200]
    assert origin.requests[0].body_len == 65536


def test_chunked_over_limit(weir, origin):
    port = start(weir, origin.port)
    limit = 64 * 1024
    piece = b"y" * 16384
    chunk = b"4000\r\n" + piece + b"\r\n"
    received = []
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.sendall(b"POST /big-chunked HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n")

        def reader():
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    received.append(b)
            except OSError:
                pass

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            for _ in range(8):  # 128 KiB of data, twice the limit
                s.sendall(chunk)
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        t.join(10)
        assert not t.is_alive(), "weir kept the connection open after the body went over"
    data = b"".join(received)
    if data:
        assert_rejected(data, True, 413)
    time.sleep(0.1)
    assert origin.requests == [], "the origin got a complete request over the limit"
    upstream = b"".join(bytes(r) for r in origin.received)
    body_part = upstream.partition(b"\r\n\r\n")[2]
    assert body_part.count(b"y") <= limit


# ---- a good request, then a bad one, on one connection ----


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_good_then_bad_on_keepalive(weir, origin, pipelined):
    port = start(weir, origin.port)
    good = b"GET /good HTTP/1.1\r\n" + H + b"\r\n"
    bad = b"GET /bad HTTP/1.1\r\n" + H + b"Content-Length: 1, 2\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        if pipelined:
            s.sendall(good + bad)
        else:
            s.sendall(good)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head = buf.partition(b"\r\n\r\n")[0]
            n = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                     if ln.lower().startswith(b"content-length:")][0])
            while len(buf) < len(head) + 4 + n:
                buf += s.recv(65536)
            s.sendall(bad)
        data = b"" if pipelined else buf
        closed = False
        s.settimeout(8)
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    closed = True
                    break
                data += b
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
    responses = split_responses(data)
    assert [r[0] for r in responses] == [200, 400], data[:500]
    assert closed
    assert [r.target for r in origin.requests] == ["/good"]


def test_bad_after_good_nothing_further_processed(weir, origin):
    port = start(weir, origin.port)
    data, closed = exchange(port, b"GET /one HTTP/1.1\r\n" + H + b"\r\n"
                            b"GET /two HTTP/1.1\r\n\r\n"  # no Host
                            b"GET /three HTTP/1.1\r\n" + H + b"\r\n")
    assert [r[0] for r in split_responses(data)] == [200, 400]
    assert closed
    assert [r.target for r in origin.requests] == ["/one"]


# ---- the error reply reaches a client that is still sending (a lingering close) ----

def send_then_read(port, head, more, timeout=20.0):
    """Sends head, then `more` bytes of junk in 64 KiB writes, then reads to the end. Returns
    (bytes read, how the connection ended: "eof" or "reset")."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        block = b"x" * 65536
        for _ in range(more // len(block)):
            s.sendall(block)  # a reset here fails the test: weir closed with bytes unread
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                return b"".join(chunks), "reset"
            if not b:
                return b"".join(chunks), "eof"
            chunks.append(b)


def test_rejected_head_reaches_a_client_still_sending(weir, origin):
    """A head over max_header_bytes gets its 431 even though the client goes on sending 4 MiB
    before it reads: weir drains what arrives (a lingering close) instead of closing with
    unread bytes, which would answer the client with a reset that can destroy the 431."""
    port = start(weir, origin.port)
    head = b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 8000
    data, end = send_then_read(port, head, 4 << 20)
    assert end == "eof"
    assert [r[0] for r in split_responses(data)] == [431]
    assert origin.connections == 0


def test_rejected_body_reaches_a_client_still_sending(weir, origin):
    """The same for a request rejected in the session (a declared body over max_body_bytes):
    the 413 goes out, then weir lingers while the 4 MiB body arrives."""
    port = start(weir, origin.port)
    head = b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4194304\r\n\r\n"
    data, end = send_then_read(port, head, 4 << 20)
    assert end == "eof"
    assert [r[0] for r in split_responses(data)] == [413]
    assert origin.connections == 0


def test_lingering_ends_for_a_client_that_never_stops(weir, origin):
    """Lingering is bounded: a client that keeps sending past timeouts.linger is cut off."""
    port = start(weir, origin.port, "  timeouts:\n    linger: 500ms\n    linger_idle: 200ms\n")
    head = b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 8000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        deadline = time.monotonic() + 20
        cut = False
        while time.monotonic() < deadline and not cut:
            try:
                s.sendall(b"x" * 4096)
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                cut = True
        assert cut, "weir lingered on a client that never stopped sending for 20 s"
