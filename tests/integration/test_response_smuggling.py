"""Response smuggling: a misbehaving origin tries to make weir hand one request's client the
bytes of another response. Two requests go through weir on one client connection; the origin
poisons its answer to the first (ambiguous framing, bad chunk sizes, a whole extra response after
the body, a body on a bodiless response). The first may be answered or fail (502, or a cut-off
response and a closed connection), but the second response the client reads must be the
origin's genuine answer to the second request or a 502, never the injected bytes. Also: a flood
of interim responses is bounded, an oversized response head is a 502, and an upstream
connection whose response was close-delimited or said Connection: close is never reused.
"""
import json
import socket
import threading
import time

import pytest

from conftest import free_port, proxy_config
from test_smuggling import read_responses

LIMITS = ("  limits:\n"
          "    max_header_bytes: 4k\n"
          "  timeouts:\n"
          "    upstream_read: 2s\n")

INJECTED_BODY = b"INJECTED"
INJECTED = (b"HTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 8\r\n\r\n" + INJECTED_BODY)


def genuine(n):
    body = b"genuine-%d" % n
    return b"HTTP/1.1 200 OK\r\nX-Genuine: %d\r\nContent-Length: %d\r\n\r\n" % (n, len(body)) + body


# what the origin sends for /poison/<id> (the first request: a GET unless the id says HEAD)
POISONS = {
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n" + INJECTED,
    "te-and-cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 66\r\n\r\n"
                 b"0\r\n\r\n" + INJECTED,
    "cl-twice": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok" + INJECTED,
    "cl-list": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 68\r\n\r\nok" + INJECTED,
    "cl-negative": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok" + INJECTED,
    "te-identity": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nok" + INJECTED,
    "te-chunked-vt": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\x0b\r\n\r\n"
                     b"0\r\n\r\n" + INJECTED,
    "te-http10": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n" + INJECTED,
    "bare-lf-head": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok" + INJECTED,
    "obs-fold": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n folded\r\n\r\nok" + INJECTED,
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok" + INJECTED,
    "chunk-size-junk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n"
                       b"0\r\n\r\n" + INJECTED,
    "chunk-size-overflow": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"10000000000000002\r\nok\r\n0\r\n\r\n" + INJECTED,
    "chunk-size-negative": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"-2\r\nok\r\n0\r\n\r\n" + INJECTED,
    "chunk-size-too-small": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"1\r\nok\r\n0\r\n\r\n" + INJECTED,
    "chunk-bare-lf": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"2\nok\r\n0\r\n\r\n" + INJECTED,
    "bytes-after-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + INJECTED,
    "bytes-after-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"2\r\nok\r\n0\r\n\r\n" + INJECTED,
    "bytes-after-204": b"HTTP/1.1 204 No Content\r\n\r\n" + INJECTED,
    "body-on-204": b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" % len(INJECTED)
                   + INJECTED,
    "body-on-304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: %d\r\n\r\n" % len(INJECTED)
                   + INJECTED,
    "HEAD-body": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(INJECTED) + INJECTED,
    "HEAD-chunked-body": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + INJECTED,
    "interim-then-extra": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                          b"\r\nok" + INJECTED,
    "bytes-after-cl-later": None,  # the injected response comes in a later write
}


class PoisonOrigin:
    """Answers /poison/<id> with POISONS[id] and /genuine/<n> with genuine(n); records the
    targets it received per connection."""

    def __init__(self, raw_origin, late_delay=0.3):
        self.lock = threading.Lock()
        self.per_conn = []
        self.late_delay = late_delay
        self.origin = raw_origin(self.handler)

    def handler(self, c):
        with self.lock:
            targets = []
            self.per_conn.append(targets)
        while True:
            head = c.read_until(b"\r\n\r\n")
            if head is None:
                return
            target = head.split(b" ")[1].decode()
            with self.lock:
                targets.append(target)
            if target.startswith("/poison/"):
                pid = target[len("/poison/"):]
                if pid == "bytes-after-cl-later":
                    c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    time.sleep(self.late_delay)
                    c.send(INJECTED)
                else:
                    c.send(POISONS[pid])
            else:
                c.send(genuine(int(target.rsplit("/", 1)[1])))


def start(weir, backend_port, extra=""):
    port = free_port()
    weir(proxy_config(port, [backend_port], server_extra=LIMITS + extra), port=port)
    return port


def request(method, target, extra=b""):
    return (method.encode() + b" " + target.encode() + b" HTTP/1.1\r\nHost: example.test\r\n"
            + extra + b"\r\n")


def assert_not_injected(resp):
    names = [k for k, _ in resp[1]]
    assert b"x-injected" not in names and INJECTED_BODY not in resp[2], \
        f"the client got the injected response: {resp!r}"


@pytest.mark.parametrize("pid", list(POISONS))
def test_poisoned_first_response_never_answers_second(weir, raw_origin, pid):
    po = PoisonOrigin(raw_origin)
    port = start(weir, po.origin.port)
    method = "HEAD" if pid.startswith("HEAD") else "GET"
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.sendall(request(method, "/poison/" + pid))
        # a HEAD response has no body whatever its fields say; read it as such
        if method == "HEAD":
            first, rest, closed = read_head_only(s)
        else:
            first, rest, closed = read_responses(s, 1, quiet=0.3)
        for r in first:
            assert_not_injected(r)
        assert len(first) <= 1, f"two responses to one request: {first!r}"
        assert INJECTED_BODY not in rest
        if pid == "bytes-after-cl-later":
            time.sleep(0.6)  # the injected bytes reach weir while the connection is idle
        if closed:
            return  # weir gave up on the client connection: nothing more can be confused
        if first:
            assert first[0][0] in (200, 204, 304, 502), first
        s.sendall(request("GET", "/genuine/2"))
        second, rest, closed = read_responses(s, 1)
    assert second, f"no answer to the second request (closed={closed})"
    assert_not_injected(second[0])
    assert INJECTED_BODY not in rest
    status = second[0][0]
    assert status in (200, 502), second
    if status == 200:
        assert second[0][2] == b"genuine-2", second


def read_head_only(s, timeout=8.0):
    data = b""
    deadline = time.monotonic() + timeout
    closed = False
    s.settimeout(0.3)
    while time.monotonic() < deadline:
        try:
            b = s.recv(65536)
        except socket.timeout:
            if b"\r\n\r\n" in data:
                break
            continue
        except ConnectionResetError:
            closed = True
            break
        if not b:
            closed = True
            break
        data += b
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return [], data, closed
    lines = head.split(b"\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (ln.partition(b":") for ln in lines[1:])]
    return [(int(lines[0].split()[1]), headers, b"")], rest, closed


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_bytes_after_body_pipelined_requests(weir, raw_origin, pipelined):
    """Both requests in one write: weir must still give the second its own answer."""
    po = PoisonOrigin(raw_origin)
    port = start(weir, po.origin.port)
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.sendall(request("GET", "/poison/bytes-after-cl") + request("GET", "/genuine/2"))
        responses, rest, closed = read_responses(s, 2)
    assert INJECTED_BODY not in rest
    for r in responses:
        assert_not_injected(r)
    assert [r[0] for r in responses][:1] == [200]
    if len(responses) > 1:
        assert responses[1][0] == 502 or responses[1][2] == b"genuine-2"


# --- interim responses


def test_interim_flood_bounded(weir, raw_origin):
    """Thousands of 100/103 heads before the final response: weir drops them, never forwards
    them, and answers (the final response or a 502) promptly."""
    def handler(c):
        while c.read_until(b"\r\n\r\n") is not None:
            flood = (b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n") * 2000
            c.send(flood + genuine(1))

    o = raw_origin(handler)
    port = start(weir, o.port)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request("GET", "/x"))
        responses, rest, closed = read_responses(s, 1, timeout=10)
    assert time.monotonic() - t0 < 8
    assert [r[0] for r in responses] in ([200], [502]), responses[:3]
    if responses[0][0] == 200:
        assert responses[0][2] == b"genuine-1"


def test_endless_interim_flood_ends(weir, raw_origin):
    """An origin that sends 1xx heads forever, each within upstream_read of the last: weir must
    not relay or wait forever. It should bound the interim responses (or the total time for the
    head) and answer 502/504 instead of holding the client indefinitely."""
    stop = threading.Event()

    def handler(c):
        if c.read_until(b"\r\n\r\n") is None:
            return
        while not stop.is_set():
            try:
                c.send(b"HTTP/1.1 100 Continue\r\n\r\n" * 50)
            except OSError:
                return
            time.sleep(0.05)

    o = raw_origin(handler)
    port = start(weir, o.port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(request("GET", "/x"))
            responses, rest, closed = read_responses(s, 1, timeout=12)
    finally:
        stop.set()
    assert responses or closed, "weir still had no answer after 12 s of interim responses"
    assert all(r[0] >= 200 for r in responses), "weir relayed an interim response"
    if responses:
        assert responses[0][0] in (502, 504)


INTERIM_BOUND = 16  # WEIR_MAX_INTERIM_RESPONSES, docs/SECURITY.md "Limits"


@pytest.mark.parametrize("interim", [INTERIM_BOUND, INTERIM_BOUND + 1], ids=["at-bound", "over"])
def test_interim_bound_exact(weir, raw_origin, tmp_path, interim):
    """docs/SECURITY.md: at most 16 interim responses per request, past it 502 (`InvalidHTTP`).
    16 (100s and 103s mixed) must pass with the final response and no 1xx relayed; one more
    must be a 502 whose access-log error is InvalidHTTP, not retried (the origin sees one
    request). Catches an off-by-one either way, a bound that is gone, and a 502 for another
    reason."""
    def handler(c):
        while c.read_until(b"\r\n\r\n") is not None:
            heads = [b"HTTP/1.1 100 Continue\r\n\r\n" if i % 2 else
                     b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                     for i in range(interim)]
            c.send(b"".join(heads) + genuine(1))

    o = raw_origin(handler)
    port = free_port()
    log = tmp_path / "access.json"
    extra = LIMITS + f"  access_log: {log}\n  access_log_format: json\n"
    w = weir(proxy_config(port, [o.port], server_extra=extra), port=port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request("GET", "/x"))
        responses, rest, closed = read_responses(s, 1, timeout=10)
    assert w.stop() == 0, w.stderr()  # flushes the access log
    assert len(responses) == 1, (responses, rest, closed)
    status, headers, body = responses[0]
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    if interim <= INTERIM_BOUND:
        assert status == 200 and body == b"genuine-1", responses
        assert entry["error"] == "", entry
    else:
        assert status == 502, responses
        assert entry["error"] == "InvalidHTTP" and entry["status"] == 502, entry
    assert o.connections == 1 and o.received[0].count(b"GET /x ") == 1, o.received

# --- oversized response head


def test_response_head_over_limit_502(weir, raw_origin):
    def handler(c):
        if c.read_until(b"\r\n\r\n") is None:
            return
        c.send(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000)
                                               for i in range(8))
               + b"Content-Length: 2\r\n\r\nok")

    o = raw_origin(handler)
    port = start(weir, o.port)
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.sendall(request("GET", "/x"))
        responses, rest, closed = read_responses(s, 1)
    assert [r[0] for r in responses] == [502]


def test_response_single_field_over_limit_502(weir, raw_origin):
    def handler(c):
        if c.read_until(b"\r\n\r\n") is None:
            return
        c.send(b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 20000 + b"\r\nContent-Length: 2\r\n\r\nok")

    o = raw_origin(handler)
    port = start(weir, o.port)
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.sendall(request("GET", "/x"))
        responses, rest, closed = read_responses(s, 1)
    assert [r[0] for r in responses] == [502]


# --- upstream connections that must not be reused


REUSE_CASES = {
    # close-delimited: the origin half-closes after the body but keeps reading
    "close-delimited": (b"HTTP/1.1 200 OK\r\n\r\nbody until close", True),
    "connection-close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                         False),
    "http10-no-keepalive": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    "connection-close-token-list": (b"HTTP/1.1 200 OK\r\nConnection: x-foo, CLOSE\r\n"
                                    b"Content-Length: 2\r\n\r\nok", False),
}


@pytest.mark.parametrize("cid", list(REUSE_CASES))
def test_no_reuse_after_connection_end(weir, raw_origin, cid):
    first, half_close = REUSE_CASES[cid]
    lock = threading.Lock()
    per_conn = []

    def handler(c):
        with lock:
            targets = []
            per_conn.append(targets)
        n = 0
        while True:
            head = c.read_until(b"\r\n\r\n")
            if head is None:
                return
            with lock:
                targets.append(head.split(b" ")[1].decode())
            n += 1
            if n == 1:
                c.send(first)
                if half_close:
                    c.sock.shutdown(socket.SHUT_WR)
            else:
                try:
                    c.send(genuine(n))
                except OSError:
                    return

    o = raw_origin(handler)
    port = start(weir, o.port)
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.sendall(request("GET", "/first"))
        responses, rest, closed = read_responses(s, 1)
        assert responses and responses[0][0] == 200, (responses, rest)
        if not closed:
            time.sleep(0.2)
            s.sendall(request("GET", "/second/2"))
            second, rest, closed = read_responses(s, 1)
            assert second and second[0][0] == 200
    with lock:
        conns = [list(t) for t in per_conn]
    for t in conns:
        assert len(t) <= 1, f"weir reused an upstream connection that had ended: {conns}"
