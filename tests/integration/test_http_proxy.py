"""weir -c as an HTTP/1.1 reverse proxy, end to end: methods, targets and header handling
(hop-by-hop removal, forwarded headers), body framing in both directions, large transfers with
bounded memory, keep-alive, pipelining, HTTP/1.0 clients, config-driven routing and balancing,
header edits, and upstream errors.

Every test talks to weir over loopback on ephemeral ports; origins are the harness's
HttpOrigin (records every request) or scripted raw origins.
"""
import hashlib
import http.client
import json
import random
import socket
import threading
import time

import pytest

from conftest import SANITIZED, free_port, proxy_config, skip_unless_ci
from origin import PATTERN, pattern_bytes


# ---------------------------------------------------------------------------------------------
# helpers


class Response:
    def __init__(self, version, status, reason, headers, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] as received, order and case kept
        self.raw_head = raw_head
        self.body = b""
        self.trailers = []

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def names(self):
        return [k.lower() for k, _ in self.headers]

    def json(self):
        return json.loads(self.body)


class RawClient:
    """A client socket that reads responses by their framing, so a connection can be reused."""

    def __init__(self, port, timeout=15.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        b = self.sock.recv(1 << 16)
        if not b:
            raise EOFError(f"connection closed by weir; unread: {bytes(self.buf[:200])!r}")
        self.buf += b

    def read_until(self, marker):
        start = 0
        while True:
            i = self.buf.find(marker, start)
            if i >= 0:
                break
            start = max(0, len(self.buf) - len(marker) + 1)
            self._fill()
        i += len(marker)
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_head(self):
        head = self.read_until(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, sep, v = line.decode("latin-1").partition(":")
            assert sep, f"malformed response field line {line!r}"
            headers.append((k, v.strip(" \t")))
        return Response(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers,
                        head)

    def read_chunked(self, resp):
        body = bytearray()
        while True:
            line = self.read_until(b"\r\n")
            size = int(line[:-2].split(b";")[0], 16)
            if size == 0:
                break
            body += self.read_exact(size)
            assert self.read_exact(2) == b"\r\n", "chunk data not followed by CRLF"
        while True:
            line = self.read_until(b"\r\n")
            if line == b"\r\n":
                break
            k, _, v = line[:-2].decode("latin-1").partition(":")
            resp.trailers.append((k, v.strip()))
        return bytes(body)

    def read_to_eof(self):
        while True:
            try:
                self._fill()
            except EOFError:
                break
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_response(self, head_request=False):
        """The next final response (interim 1xx responses are returned too: check .status)."""
        r = self.read_head()
        te = (r.header("transfer-encoding") or "").lower()
        if head_request or r.status < 200 or r.status in (204, 304):
            pass
        elif te:
            assert te == "chunked", f"unexpected Transfer-Encoding {te!r}"
            r.body = self.read_chunked(r)
        elif r.header("content-length") is not None:
            r.body = self.read_exact(int(r.header("content-length")))
        else:
            r.body = self.read_to_eof()
        return r

    def at_eof(self, timeout=5.0):
        """True when weir closes the connection (no further bytes) within timeout."""
        self.sock.settimeout(timeout)
        try:
            b = self.sock.recv(1)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(15.0)
        assert not self.buf and not b, f"unexpected bytes after response: {bytes(self.buf) + b!r}"
        return True


def get(path, host="example.test", extra=b"", method="GET", version="HTTP/1.1"):
    return (f"{method} {path} {version}\r\nHost: {host}\r\n".encode() + extra + b"\r\n")


def start_proxy(weir, backends, server_extra="", routes=None, upstreams=None, threads=None):
    port = free_port()
    cfg = proxy_config(port, backends, server_extra=server_extra, routes=routes,
                       upstreams=upstreams)
    if threads is not None:
        cfg = cfg.replace("  threads: 2\n", f"  threads: {threads}\n", 1)
    w = weir(cfg, port=port)
    w.listen_port = port
    return w


def header_values(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def head_lines(raw_head):
    """[(name, value)] of a raw request head as the origin received it, byte for byte."""
    lines = raw_head[:-4].split(b"\r\n")
    out = []
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        out.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
    return lines[0].decode("latin-1"), out


class RssSampler:
    """Samples weir's RSS in a thread while a transfer runs."""

    def __init__(self, w):
        self.w = w
        self.peak = 0
        self.stop_event = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_event.is_set():
            try:
                self.peak = max(self.peak, self.w.rss_kb())
            except OSError:
                return
            time.sleep(0.01)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.t.join(5)


LARGE = (20 if SANITIZED else 100) * 1024 * 1024
RSS_SLACK_KB = 32 * 1024


# ---------------------------------------------------------------------------------------------
# methods, targets, request headers


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE"])
def test_methods_pass_through(weir, origin, method):
    w = start_proxy(weir, [origin.port])
    c = http.client.HTTPConnection("127.0.0.1", w.listen_port, timeout=10)
    body = b"payload-" + method.encode() if method in ("POST", "PUT") else None
    c.request(method, "/m?x=" + method, body=body)
    r = c.getresponse()
    data = r.read()
    assert r.status == 200
    assert len(origin.requests) == 1
    req = origin.requests[0]
    assert req.method == method
    assert req.target == "/m?x=" + method
    if method == "HEAD":
        assert data == b""
        assert r.getheader("Content-Length") is not None
    else:
        summary = json.loads(data)
        assert summary["method"] == method
        if body:
            assert summary["body_len"] == len(body)
            assert summary["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("target", [
    "/",
    "/order?b=2&a=1",
    "/p%20a/t%2Fh/%7Euser?q=a%2Fb+c&empty=&dup=1&dup=2&semi=1;2",
    "/x?",
    "/a//b/./c/../d?u=%E2%9C%93",
    "/odd!$&'()*+,;=:@-._~?k=!$&'()*+,;=:@/?",
])
def test_target_preserved_byte_exact(weir, origin, target):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get(target))
        r = c.read_response()
    assert r.status == 200
    assert origin.requests[0].raw_head.split(b"\r\n")[0] == f"GET {target} HTTP/1.1".encode()


def test_request_headers_order_case_and_hop_by_hop(weir, origin):
    w = start_proxy(weir, [origin.port])
    req = (b"GET /order HTTP/1.1\r\n"
           b"Host: example.test\r\n"
           b"X-First: 1\r\n"
           b"accept: */*\r\n"
           b"Connection: X-Hop-Named, keep-alive\r\n"
           b"X-MiXeD-CaSe: Value With  Inner   Spaces\r\n"
           b"X-Hop-Named: secret\r\n"
           b"Keep-Alive: timeout=5\r\n"
           b"TE: trailers\r\n"
           b"Upgrade: websocket\r\n"
           b"Proxy-Connection: keep-alive\r\n"
           b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
           b"X-Forwarded-For: 10.1.2.3\r\n"
           b"cookie: a=1\r\n"
           b"Cookie: b=2\r\n"
           b"x-last: z\r\n"
           b"\r\n")
    with RawClient(w.listen_port) as c:
        c.send(req)
        r = c.read_response()
        assert r.status == 200
    line1, got = head_lines(origin.requests[0].raw_head)
    assert line1 == "GET /order HTTP/1.1"
    names = [k for k, _ in got]
    lower = [k.lower() for k in names]
    for hop in ("connection", "x-hop-named", "keep-alive", "te", "upgrade", "proxy-connection",
                "proxy-authorization"):
        assert hop not in lower, f"hop-by-hop field {hop} reached the origin: {got}"
    end_to_end = [(k, v) for k, v in got
                  if k.lower() not in ("x-forwarded-for", "x-forwarded-proto", "via")]
    assert end_to_end == [("Host", "example.test"), ("X-First", "1"), ("accept", "*/*"),
                          ("X-MiXeD-CaSe", "Value With  Inner   Spaces"), ("cookie", "a=1"),
                          ("Cookie", "b=2"), ("x-last", "z")]
    assert b"\r\nX-MiXeD-CaSe: Value With  Inner   Spaces\r\n" in origin.requests[0].raw_head
    assert header_values(got, "X-Forwarded-For") == ["10.1.2.3, 127.0.0.1"]
    assert header_values(got, "X-Forwarded-Proto") == ["http"]
    assert header_values(got, "Via") == ["1.1 weir"]


def test_connection_naming_many_fields_strips_them_all(weir, origin):
    """Connection may list any number of names: every one is hop-by-hop (RFC 9110 7.6.1).
    Only the first 8 were stripped before; the 9th and later reached the origin."""
    w = start_proxy(weir, [origin.port])
    names = [f"X-Hop-{i}" for i in range(20)]
    req = (b"GET /many-hops HTTP/1.1\r\nHost: t\r\n"
           b"Connection: " + ", ".join(names[:12]).encode() + b"\r\n"
           b"Connection: keep-alive, " + ", ".join(names[12:]).encode() + b"\r\n" +
           b"".join(f"{n}: v\r\n".encode() for n in names) + b"X-Kept: 1\r\n\r\n")
    with RawClient(w.listen_port) as c:
        c.send(req)
        assert c.read_response().status == 200
    _, got = head_lines(origin.requests[0].raw_head)
    leaked = [k for k, _ in got if k.lower().startswith("x-hop-")]
    assert leaked == [], f"fields Connection named reached the origin: {leaked}"
    assert header_values(got, "X-Kept") == ["1"]


def test_forwarded_headers_added_without_client_values(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/fwd"))
        assert c.read_response().status == 200
    _, got = head_lines(origin.requests[0].raw_head)
    assert header_values(got, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(got, "X-Forwarded-Proto") == ["http"]
    assert header_values(got, "Via") == ["1.1 weir"]


def test_x_forwarded_for_appended_after_every_field(weir, origin):
    """Two X-Forwarded-For fields form one list; the client's address must end that list."""
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/xff2", extra=b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n"))
        assert c.read_response().status == 200
    _, got = head_lines(origin.requests[0].raw_head)
    joined = ", ".join(header_values(got, "X-Forwarded-For"))
    assert joined == "10.0.0.1, 10.0.0.2, 127.0.0.1"


def test_via_appended_to_existing(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/via", extra=b"Via: 1.0 fred\r\n"))
        assert c.read_response().status == 200
    _, got = head_lines(origin.requests[0].raw_head)
    vias = ", ".join(header_values(got, "Via"))
    assert vias == "1.0 fred, 1.1 weir"


def test_client_x_forwarded_proto_replaced(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/xfp", extra=b"X-Forwarded-Proto: https\r\n"))
        assert c.read_response().status == 200
    _, got = head_lines(origin.requests[0].raw_head)
    assert header_values(got, "X-Forwarded-Proto") == ["http"]


def test_response_headers_hop_by_hop_and_via(weir, raw_origin):
    def handler(c):
        while c.read_until(b"\r\n\r\n") is not None:
            c.send(b"HTTP/1.1 200 OK\r\n"
                   b"X-Before: 1\r\n"
                   b"Connection: X-Resp-Hop\r\n"
                   b"X-Resp-Hop: secret\r\n"
                   b"Keep-Alive: timeout=5, max=100\r\n"
                   b"Proxy-Authenticate: Basic realm=x\r\n"
                   b"Proxy-Foo: bar\r\n"
                   b"Upgrade: h2c\r\n"
                   b"X-CaSe-Kept: Some  Value\r\n"
                   b"Content-Length: 2\r\n"
                   b"Set-Cookie: a=1\r\n"
                   b"Set-Cookie: b=2\r\n"
                   b"\r\nok")

    o = raw_origin(handler)
    w = start_proxy(weir, [o.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/resp"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"ok"
        for hop in ("x-resp-hop", "keep-alive", "proxy-authenticate", "proxy-foo", "upgrade"):
            assert hop not in r.names(), f"hop-by-hop {hop} reached the client: {r.headers}"
        assert r.header("connection") in (None, "keep-alive")
        kept = [(k, v) for k, v in r.headers
                if k.lower() in ("x-before", "x-case-kept", "set-cookie")]
        assert kept == [("X-Before", "1"), ("X-CaSe-Kept", "Some  Value"),
                        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
        assert "weir" in ", ".join(r.all("via"))
        # The connection stays usable: the origin's Connection named no "close".
        c.send(get("/resp2"))
        assert c.read_response().body == b"ok"


@pytest.mark.parametrize("off", ["x_forwarded_for", "x_forwarded_proto", "via", "all"])
def test_forwarded_headers_config_off(weir, origin, off):
    keys = ["x_forwarded_for", "x_forwarded_proto", "via"]
    disabled = keys if off == "all" else [off]
    extra = "  forwarded_headers:\n" + "".join(
        f"    {k}: {'false' if k in disabled else 'true'}\n" for k in keys)
    w = start_proxy(weir, [origin.port], server_extra=extra)
    with RawClient(w.listen_port) as c:
        c.send(get("/fwd-off"))
        r = c.read_response()
        assert r.status == 200
        c.send(get("/fwd-off-2", extra=b"X-Forwarded-For: 10.9.9.9\r\n"))
        assert c.read_response().status == 200
    _, got = head_lines(origin.requests[0].raw_head)
    _, got2 = head_lines(origin.requests[1].raw_head)
    if "x_forwarded_for" in disabled:
        assert header_values(got, "X-Forwarded-For") == []
        assert header_values(got2, "X-Forwarded-For") == ["10.9.9.9"]  # passed on untouched
    else:
        assert header_values(got, "X-Forwarded-For") == ["127.0.0.1"]
        assert header_values(got2, "X-Forwarded-For") == ["10.9.9.9, 127.0.0.1"]
    if "x_forwarded_proto" in disabled:
        assert header_values(got, "X-Forwarded-Proto") == []
    else:
        assert header_values(got, "X-Forwarded-Proto") == ["http"]
    if "via" in disabled:
        assert header_values(got, "Via") == []
        assert r.all("via") == []
    else:
        assert header_values(got, "Via") == ["1.1 weir"]
        assert "weir" in ", ".join(r.all("via"))


# ---------------------------------------------------------------------------------------------
# bodies


def test_content_length_upload(weir, origin):
    w = start_proxy(weir, [origin.port])
    body = random.Random(7).randbytes(3 * 1024 * 1024 + 17)
    c = http.client.HTTPConnection("127.0.0.1", w.listen_port, timeout=20)
    c.request("POST", "/upload", body=body)
    r = c.getresponse()
    summary = json.loads(r.read())
    assert r.status == 200
    assert summary["body_len"] == len(body)
    assert summary["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header_values(summary["headers"], "Content-Length") == [str(len(body))]


def test_chunked_upload_stays_chunked(weir, origin):
    w = start_proxy(weir, [origin.port])
    rnd = random.Random(11)
    sizes = [1, 2, 100, 4096, 16384, 70000, 3, 250000]
    pieces = [rnd.randbytes(n) for n in sizes]
    data = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    with RawClient(w.listen_port) as c:
        c.send(b"POST /upload-chunked HTTP/1.1\r\nHost: example.test\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + data)
        r = c.read_response()
    assert r.status == 200
    summary = r.json()
    whole = b"".join(pieces)
    assert summary["body_len"] == len(whole)
    assert summary["body_sha256"] == hashlib.sha256(whole).hexdigest()
    assert [v.lower() for v in header_values(summary["headers"], "Transfer-Encoding")] == [
        "chunked"]
    assert header_values(summary["headers"], "Content-Length") == []


def test_chunked_upload_with_extensions_and_trailer(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(b"POST /upload-ext HTTP/1.1\r\nHost: example.test\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Up-Trailer: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.json()["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
        # framing ended exactly at the trailer section: the connection is still in sync
        c.send(get("/after"))
        assert c.read_response().json()["target"] == "/after"


def test_chunked_download_with_trailer(weir, origin):
    w = start_proxy(weir, [origin.port])
    n = 100000
    with RawClient(w.listen_port) as c:
        c.send(get(f"/chunked/{n}"))
        r = c.read_response()
        assert r.status == 200
        assert r.header("transfer-encoding").lower() == "chunked"
        assert r.header("content-length") is None
        assert r.body == pattern_bytes(n)
        assert r.trailers == [("X-Checksum", "done")]
        # the raw tail of the message is the last chunk and the trailer section
        c.send(get("/after"))
        assert c.read_response().json()["target"] == "/after"
    # raw bytes, once more, on a fresh connection closed by the client's request
    with RawClient(w.listen_port) as c:
        c.send(get("/chunked/10", extra=b"Connection: close\r\n"))
        raw = c.read_to_eof()
    assert raw.endswith(b"\r\n0\r\nX-Checksum: done\r\n\r\n"), raw[-80:]


def test_close_delimited_to_http11_client_becomes_chunked(weir, origin):
    w = start_proxy(weir, [origin.port])
    n = 70000
    with RawClient(w.listen_port) as c:
        c.send(get(f"/close/{n}"))
        r = c.read_response()
        assert r.status == 200
        assert (r.header("transfer-encoding") or "").lower() == "chunked", r.headers
        assert "close" not in (r.header("connection") or "").lower()
        assert r.body == pattern_bytes(n)
        c.send(get("/bytes/10"))
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == pattern_bytes(10)


def test_close_delimited_to_http10_client(weir, origin):
    w = start_proxy(weir, [origin.port])
    n = 70000
    with RawClient(w.listen_port) as c:
        c.send(get(f"/close/{n}", version="HTTP/1.0"))
        r = c.read_response()
        assert r.status == 200
        assert r.header("transfer-encoding") is None
        assert r.body == pattern_bytes(n)  # read until close


def test_close_delimited_to_http10_keepalive_client_closes(weir, origin):
    w = start_proxy(weir, [origin.port])
    n = 5000
    with RawClient(w.listen_port) as c:
        c.send(get(f"/close/{n}", version="HTTP/1.0", extra=b"Connection: keep-alive\r\n"))
        r = c.read_response()
        assert r.status == 200
        assert r.header("transfer-encoding") is None
        # No way to delimit the body for a 1.0 client but closing: weir must not claim
        # keep-alive.
        assert "keep-alive" not in (r.header("connection") or "").lower()
        assert r.body == pattern_bytes(n)


def test_head_has_no_body_but_keeps_content_length(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/bytes/1000", method="HEAD") + get("/bytes/10"))
        r = c.read_response(head_request=True)
        assert r.status == 200
        assert r.header("content-length") == "1000"
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == pattern_bytes(10)


def test_head_of_chunked_response(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/chunked/1000", method="HEAD") + get("/bytes/10"))
        r = c.read_response(head_request=True)
        assert r.status == 200
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == pattern_bytes(10)


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(weir, origin, status):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get(f"/status/{status}") + get("/bytes/10"))
        r = c.read_response()
        assert r.status == status
        assert r.header("transfer-encoding") is None
        if status == 204:
            assert r.header("content-length") is None
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == pattern_bytes(10), r2.raw_head


def test_interim_100_from_origin_not_forwarded(weir, raw_origin):
    def handler(c):
        while c.read_until(b"\r\n\r\n") is not None:
            c.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")

    o = raw_origin(handler)
    w = start_proxy(weir, [o.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/interim"))
        r = c.read_response()
        assert r.status == 200, f"client got {r.status} first"
        assert r.body == b"final"
        c.send(get("/interim2", extra=b"Connection: close\r\n"))
        rest = c.read_to_eof()
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:100]
    assert b" 100 " not in rest.split(b"\r\n")[0]


def test_expect_100_continue(weir, origin):
    w = start_proxy(weir, [origin.port])
    body = b"0123456789" * 100
    with RawClient(w.listen_port) as c:
        c.send(b"POST /expect HTTP/1.1\r\nHost: example.test\r\n"
               b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
        interim = c.read_head()
        assert interim.version == "HTTP/1.1" and interim.status == 100
        c.send(body)
        r = c.read_response()
        assert r.status == 200
        summary = r.json()
        assert summary["body_len"] == len(body)
        assert summary["body_sha256"] == hashlib.sha256(body).hexdigest()
        # and the connection goes on
        c.send(get("/after"))
        assert c.read_response().json()["target"] == "/after"


# ---------------------------------------------------------------------------------------------
# large bodies


def test_large_download_bounded_memory(weir, origin):
    w = start_proxy(weir, [origin.port])
    n = LARGE
    assert n % len(PATTERN) == 0
    expected = hashlib.sha256()
    for _ in range(n // len(PATTERN)):
        expected.update(PATTERN)
    with RawClient(w.listen_port) as c:  # warm up: buffers, pool, thread state
        c.send(get("/bytes/100000"))
        assert c.read_response().status == 200
    idle = w.rss_kb()
    got = hashlib.sha256()
    count = 0
    with RssSampler(w) as rss, RawClient(w.listen_port, timeout=60) as c:
        c.send(get(f"/bytes/{n}"))
        r = c.read_head()
        assert r.status == 200 and r.header("content-length") == str(n)
        time.sleep(0.3)  # a slow reader at first: weir must push back, not buffer
        if c.buf:
            got.update(c.buf)
            count += len(c.buf)
            c.buf.clear()
        while count < n:
            b = c.sock.recv(1 << 20)
            assert b, f"connection closed after {count} of {n} body bytes"
            got.update(b)
            count += len(b)
    assert count == n
    assert got.hexdigest() == expected.hexdigest()
    if not SANITIZED:
        assert rss.peak - idle < RSS_SLACK_KB, f"weir RSS grew from {idle} kB to {rss.peak} kB"


def test_large_upload_bounded_memory(weir, origin):
    w = start_proxy(weir, [origin.port])
    n = LARGE
    block = random.Random(3).randbytes(256 * 1024)
    assert n % len(block) == 0
    with RawClient(w.listen_port) as c:  # warm up
        c.send(get("/warm"))
        assert c.read_response().status == 200
    idle = w.rss_kb()
    expected = hashlib.sha256()
    with RssSampler(w) as rss, RawClient(w.listen_port, timeout=60) as c:
        c.send(f"PUT /big-upload HTTP/1.1\r\nHost: example.test\r\n"
               f"Content-Length: {n}\r\n\r\n".encode())
        for _ in range(n // len(block)):
            c.send(block)
            expected.update(block)
        r = c.read_response()
    assert r.status == 200
    summary = r.json()
    assert summary["body_len"] == n
    assert summary["body_sha256"] == expected.hexdigest()
    if not SANITIZED:
        assert rss.peak - idle < RSS_SLACK_KB, f"weir RSS grew from {idle} kB to {rss.peak} kB"


def test_large_upload_with_curl(weir, origin, tmp_path):
    import shutil
    import subprocess
    curl = shutil.which("curl")
    if curl is None:
        skip_unless_ci("curl not installed (scripts/deps.sh installs it)")
    w = start_proxy(weir, [origin.port])
    n = LARGE
    path = tmp_path / "upload.bin"
    block = random.Random(5).randbytes(1 << 20)
    expected = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(n // len(block)):
            f.write(block)
            expected.update(block)
    out = subprocess.run([curl, "-sS", "--max-time", "60", "-H", "Expect:", "--data-binary",
                          f"@{path}", f"http://127.0.0.1:{w.listen_port}/curl-upload"],
                         capture_output=True, timeout=90)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["method"] == "POST"
    assert summary["body_len"] == n
    assert summary["body_sha256"] == expected.hexdigest()


# ---------------------------------------------------------------------------------------------
# connections


def test_keepalive_20_requests_one_connection_each_side(weir, origin):
    w = start_proxy(weir, [origin.port], threads=1)
    c = http.client.HTTPConnection("127.0.0.1", w.listen_port, timeout=10)
    sock = None
    for i in range(20):
        c.request("GET", f"/ka/{i}")
        r = c.getresponse()
        assert r.status == 200
        assert json.loads(r.read())["target"] == f"/ka/{i}"
        if sock is None:
            sock = c.sock
        assert c.sock is sock, f"client connection was not reused at request {i}"
    c.close()
    assert len(origin.requests) == 20
    assert origin.connections == 1


def test_keepalive_20_requests_two_workers(weir, origin):
    w = start_proxy(weir, [origin.port])  # threads: 2
    with RawClient(w.listen_port) as c:
        for i in range(20):
            c.send(get(f"/ka2/{i}"))
            r = c.read_response()
            assert r.status == 200 and r.json()["target"] == f"/ka2/{i}"
    assert origin.connections <= 2


def test_pipelined_requests_answered_in_order(weir, origin):
    w = start_proxy(weir, [origin.port])
    reqs = (get("/p1")
            + b"POST /echo HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\n\r\nhello world"
            + get("/bytes/3000")
            + b"PUT /echo/2 HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            + get("/chunked/100"))
    with RawClient(w.listen_port) as c:
        c.send(reqs)
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
        r4 = c.read_response()
        r5 = c.read_response()
    assert r1.status == 200 and r1.json()["target"] == "/p1"
    assert r2.status == 200 and r2.body == b"hello world"
    assert r3.status == 200 and r3.body == pattern_bytes(3000)
    assert r4.status == 200 and r4.body == b"abcde"
    assert r5.status == 200 and r5.body == pattern_bytes(100)
    assert r5.trailers == [("X-Checksum", "done")]
    assert [r.target for r in origin.requests] == ["/p1", "/echo", "/bytes/3000", "/echo/2",
                                                   "/chunked/100"]


def test_pipelined_with_connection_close_last(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/a") + get("/b") + get("/c", extra=b"Connection: close\r\n"))
        targets = [c.read_response().json()["target"] for _ in range(3)]
        assert targets == ["/a", "/b", "/c"]
        assert c.at_eof()


def test_http10_without_keepalive_closes(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/ten", version="HTTP/1.0"))
        r = c.read_response()
        assert r.status == 200
        assert r.version in ("HTTP/1.0", "HTTP/1.1")
        assert json.loads(r.body)["target"] == "/ten"
        assert c.at_eof()


def test_http10_without_host_is_accepted(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(b"GET /nohost HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert json.loads(r.body)["target"] == "/nohost"


def test_http10_keepalive_stays_open(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        for i in range(3):
            c.send(get(f"/ten-ka/{i}", version="HTTP/1.0", extra=b"Connection: keep-alive\r\n"))
            r = c.read_response()
            assert r.status == 200
            assert (r.header("connection") or "").lower() == "keep-alive", r.headers
            assert r.header("content-length") is not None
            assert r.json()["target"] == f"/ten-ka/{i}"
        # and a 1.0 request without keep-alive ends it
        c.send(get("/ten-last", version="HTTP/1.0"))
        assert c.read_response().status == 200
        assert c.at_eof()
    _, got = head_lines(origin.requests[0].raw_head)
    assert header_values(got, "Via") == ["1.0 weir"]


def test_http11_connection_close(weir, origin):
    w = start_proxy(weir, [origin.port])
    with RawClient(w.listen_port) as c:
        c.send(get("/bye", extra=b"Connection: close\r\n"))
        r = c.read_response()
        assert r.status == 200
        assert "close" in (r.header("connection") or "").lower()
        assert c.at_eof()


# ---------------------------------------------------------------------------------------------
# routing, balancing, header edits


def routing_config(a, b, c):
    routes = ("  - match: {host: api.example.com}\n    upstream: a\n"
              "  - match: {host: \"*.example.com\"}\n    upstream: b\n"
              "  - match: {path_prefix: /api}\n    upstream: c\n"
              "  - match: {host: first.test, path_prefix: /x}\n    upstream: a\n"
              "  - match: {host: first.test}\n    upstream: b\n")
    upstreams = (f"  a:\n    backends: [127.0.0.1:{a.port}]\n"
                 f"  b:\n    backends: [127.0.0.1:{b.port}]\n"
                 f"  c:\n    backends: [127.0.0.1:{c.port}]\n")
    return routes, upstreams


ROUTING_CASES = [
    ("api.example.com", "/r1", "a"),
    ("API.Example.COM:8080", "/r2", "a"),  # case-insensitive, port ignored
    ("a.example.com", "/r3", "b"),
    ("deep.a.example.com", "/r4", "b"),
    ("example.com", "/r5", None),  # not matched by *.example.com, no other route
    ("notexample.com", "/r6", None),
    ("example.com", "/api/r7", "c"),
    ("other.test", "/api", "c"),
    ("other.test", "/apix/r9?q=1", "c"),  # a plain prefix
    ("other.test", "/ap/r10", None),
    ("first.test", "/x/r11", "a"),  # first match wins
    ("first.test", "/y/r12", "b"),
    ("b.example.com", "/api/r13", "b"),  # host route listed before the path route
    ("first.test:80", "/x", "a"),
]


def test_routing_host_and_path(weir, origins):
    a, b, c = origins(3)
    routes, upstreams = routing_config(a, b, c)
    w = start_proxy(weir, [a.port], routes=routes, upstreams=upstreams)
    expected = {"a": [], "b": [], "c": []}
    for host, path, up in ROUTING_CASES:
        with RawClient(w.listen_port) as conn:
            conn.send(get(path, host=host))
            r = conn.read_response()
        if up is None:
            assert r.status == 404, f"{host} {path}: expected 404, got {r.status}"
        else:
            assert r.status == 200, f"{host} {path}: expected 200, got {r.status}"
            expected[up].append(path)
    assert [q.target for q in a.requests] == expected["a"]
    assert [q.target for q in b.requests] == expected["b"]
    assert [q.target for q in c.requests] == expected["c"]


def test_routing_on_one_keepalive_connection(weir, origins):
    a, b, c = origins(3)
    routes, upstreams = routing_config(a, b, c)
    w = start_proxy(weir, [a.port], routes=routes, upstreams=upstreams)
    expected = {"a": [], "b": [], "c": []}
    with RawClient(w.listen_port) as conn:
        for host, path, up in ROUTING_CASES:
            conn.send(get(path, host=host))
            r = conn.read_response()
            assert r.status == (404 if up is None else 200), (host, path, r.status)
            if up:
                expected[up].append(path)
    assert [q.target for q in a.requests] == expected["a"]
    assert [q.target for q in b.requests] == expected["b"]
    assert [q.target for q in c.requests] == expected["c"]


def test_round_robin_exact(weir, origins):
    backends = origins(3)
    w = start_proxy(weir, [o.port for o in backends], threads=1)
    c = http.client.HTTPConnection("127.0.0.1", w.listen_port, timeout=10)
    for i in range(30):
        c.request("GET", f"/rr/{i}")
        r = c.getresponse()
        r.read()
        assert r.status == 200
    c.close()
    assert [len(o.requests) for o in backends] == [10, 10, 10]


def test_round_robin_exact_new_connections(weir, origins):
    backends = origins(3)
    w = start_proxy(weir, [o.port for o in backends], threads=1)
    for i in range(30):
        with RawClient(w.listen_port) as c:
            c.send(get(f"/rrc/{i}"))
            assert c.read_response().status == 200
    assert [len(o.requests) for o in backends] == [10, 10, 10]


def test_route_header_edits(weir, origin):
    routes = ("  - upstream: backend\n"
              "    request_headers:\n"
              "      add: {X-Added: a1}\n"
              "      set: {X-Set: s1}\n"
              "      remove: [X-Remove-Me]\n"
              "    response_headers:\n"
              "      add: {X-Resp-Add: r1}\n"
              "      set: {X-Resp-Set: v1}\n"
              "      remove: [Content-Type]\n")
    w = start_proxy(weir, [origin.port], routes=routes)
    with RawClient(w.listen_port) as c:
        c.send(get("/edits", extra=b"X-Set: old1\r\nX-Remove-Me: 1\r\nx-remove-me: 2\r\n"
                                   b"X-Added: orig\r\nX-Set: old2\r\nX-Keep: k\r\n"))
        r = c.read_response()
    assert r.status == 200
    _, got = head_lines(origin.requests[0].raw_head)
    assert header_values(got, "X-Set") == ["s1"]
    assert header_values(got, "X-Remove-Me") == []
    assert header_values(got, "X-Added") == ["orig", "a1"]
    assert header_values(got, "X-Keep") == ["k"]
    assert r.all("X-Resp-Add") == ["r1"]
    assert r.all("X-Resp-Set") == ["v1"]
    assert r.all("Content-Type") == []
    assert r.json()["target"] == "/edits"


# ---------------------------------------------------------------------------------------------
# upstream errors


def test_dead_backend_502(weir):
    dead = free_port()
    w = start_proxy(weir, [dead])
    with RawClient(w.listen_port) as c:
        c.send(get("/dead"))
        r = c.read_response()
        assert r.status == 502
    c = http.client.HTTPConnection("127.0.0.1", w.listen_port, timeout=10)
    c.request("POST", "/dead", body=b"x" * 1000)
    r = c.getresponse()
    r.read()
    assert r.status == 502


def test_dead_backend_retried_on_live_one(weir, origin):
    dead = free_port()
    w = start_proxy(weir, [dead, origin.port], server_extra="  max_retries: 1\n", threads=1)
    for i in range(10):
        with RawClient(w.listen_port) as c:
            c.send(get(f"/retry/{i}"))
            r = c.read_response()
            assert r.status == 200, f"request {i} got {r.status}"
    c = http.client.HTTPConnection("127.0.0.1", w.listen_port, timeout=10)
    for i in range(10):
        c.request("POST", f"/retry-ka/{i}", body=b"body")
        r = c.getresponse()
        assert r.status == 200, f"keep-alive request {i} got {r.status}"
        assert json.loads(r.read())["body_len"] == 4
    assert len(origin.requests) == 20


def test_pooled_connection_closed_after_request_written_is_retried(weir, raw_origin):
    """The origin reads the second request on a pooled connection, then closes without an
    answer: weir resends it on a fresh connection (a retry used to skip resending the head and
    wait for an answer until the upstream read timeout)."""
    seen = []

    def handler(c):
        n = len(seen)
        seen.append(n)
        while c.read_until(b"\r\n\r\n") is not None:
            if n == 0 and c.served:
                return  # the second request on the first connection: close, no answer
            c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            c.served = True

    def wrapped(c):
        c.served = False
        handler(c)

    o = raw_origin(wrapped)
    w = start_proxy(weir, [o.port], threads=1)
    with RawClient(w.listen_port, timeout=5.0) as c:
        for i in range(2):
            c.send(get(f"/stale/{i}"))
            r = c.read_response()
            assert r.status == 200, f"request {i} got {r.status}"
    assert o.connections == 2
