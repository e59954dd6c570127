"""The stock limits accept what stock nginx accepts (issue 10, defect 4).

Each request here is sent twice with default configs on both sides: straight to nginx, and
through weir to the same nginx. Whatever nginx takes out of the box, weir must pass on. The
response cases have no nginx to compare with (nginx as a proxy refuses a response head over
its 4k/8k proxy_buffer_size); they check weir passes a head that fits its byte limit however
many fields it has. docs/CONFIG.md has the comparison table these tests keep true.
"""
import socket

import pytest

from conftest import free_port, proxy_config, recv_response


def one_exchange(port, request, timeout=10.0):
    """Sends request on a fresh connection; returns (status, body, head) of the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        r = recv_response(s, timeout)
        return r.status, r.body, r.head


def many_fields(n, width=4):
    return b"".join(b"X-F-%0*d: v\r\n" % (width, i) for i in range(n))


REQUESTS = [
    # 900 small fields: stock nginx 1.22 takes up to 999 (1000 is "too many header lines").
    ("900-fields", b"GET /echo/a HTTP/1.1\r\nHost: t\r\n" + many_fields(900) + b"\r\n"),
    # 290 fields of 112 bytes, 32 KB of head: nginx's byte bound, four 8k buffers.
    ("290x112-fields", b"GET /echo/d HTTP/1.1\r\nHost: t\r\n" +
     b"".join(b"X-F-%04d: %s\r\n" % (i, b"v" * 100) for i in range(290)) + b"\r\n"),
    # A 7 KB cookie, under nginx's 8k per line.
    ("7k-cookie", b"GET /echo/b HTTP/1.1\r\nHost: t\r\nCookie: " + b"c" * 7000 + b"\r\n\r\n"),
    # A 7 KB request line, under nginx's 8k.
    ("7k-target", b"GET /echo/" + b"p" * 7000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"),
    # Three 7 KB fields: 21 KB of head, within nginx's four 8k buffers.
    ("3x7k-fields", b"GET /echo/c HTTP/1.1\r\nHost: t\r\n" +
     b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 7000) for i in range(3)) + b"\r\n"),
]


@pytest.mark.parametrize("request_bytes", [r[1] for r in REQUESTS], ids=[r[0] for r in REQUESTS])
def test_what_stock_nginx_accepts_passes_stock_weir(weir, nginx_origin, request_bytes):
    direct = one_exchange(nginx_origin.port, request_bytes)
    assert direct[0] == 200, "the case is wrong: stock nginx refuses it"
    port = free_port()
    weir(proxy_config(port, [nginx_origin.port]), port=port)
    assert one_exchange(port, request_bytes)[:2] == direct[:2]


def test_any_head_within_the_byte_limit_passes(weir, origin):
    """2400 fields in 31 KB: more than nginx takes, but within weir's max_header_bytes (32k),
    and the field count is only a guard that the default byte limit reaches first."""
    port = free_port()
    weir(proxy_config(port, [origin.port]), port=port)
    req = b"GET /many HTTP/1.1\r\nHost: t\r\n" + many_fields(2400) + b"\r\n"
    assert len(req) < 32 * 1024
    assert one_exchange(port, req)[0] == 200
    assert len(origin.requests) == 1
    assert sum(1 for k, _ in origin.requests[0].headers if k.startswith("X-F-")) == 2400


@pytest.mark.parametrize("n", [150, 2400])
def test_response_with_many_fields_passes(weir, raw_origin, n):
    fields = many_fields(n)

    def handler(c):
        while c.read_until(b"\r\n\r\n") is not None:
            c.send(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok")

    o = raw_origin(handler)
    port = free_port()
    weir(proxy_config(port, [o.port]), port=port)
    status, body, head = one_exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (status, body) == (200, b"ok")
    assert head.count(b"\r\nX-F-") == n


def test_field_count_guard_still_applies(weir, origin):
    """The count stays a guard: set low, it refuses with 431 as before."""
    port = free_port()
    weir(proxy_config(port, [origin.port], server_extra="  limits:\n    max_headers: 50\n"),
         port=port)
    req = b"GET / HTTP/1.1\r\nHost: t\r\n" + many_fields(60) + b"\r\n"
    assert one_exchange(port, req)[0] == 431
    assert origin.requests == []
