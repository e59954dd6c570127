"""Faults from clients and origins (issue 10): weir stays up, keeps healthy backends in, and
loses nothing that was not the fault's own request.

Client aborts: a client that goes away while its request is in flight cancels the upstream
exchange at once (the origin sees its connection closed, long before any timeout), the access
log says 499 and who ended it, and the backend is not blamed. A route with
ignore_client_abort lets the origin finish instead.
"""
import json
import os
import socket
import threading
import time

from conftest import fd_count, free_port, stalled_client

LOG_WAIT = 10.0  # seconds: bounds every wait on the access log or on an origin's event


def config(port, backends, access_log, route_extra="", server_extra=""):
    lines = "\n".join(f"      - 127.0.0.1:{p}" for p in backends)
    return (f"server:\n  threads: 2\n  grace_period: 5s\n"
            f"  access_log: {access_log}\n  access_log_format: json\n{server_extra}"
            f"listeners:\n  - 127.0.0.1:{port}\n"
            f"routes:\n  - upstream: backend\n{route_extra}"
            f"upstreams:\n  backend:\n    backends:\n{lines}\n")


def log_entries(path, n, what=None):
    """Waits (bounded) for n JSON lines matching what(entry); returns those seen."""
    deadline = time.monotonic() + LOG_WAIT
    while True:
        entries = []
        if os.path.exists(path):
            with open(path, "rb") as f:
                entries = [json.loads(x) for x in f.read().splitlines() if x.strip()]
        hits = [e for e in entries if what is None or what(e)]
        if len(hits) >= n or time.monotonic() > deadline:
            return hits
        time.sleep(0.05)


class HoldingOrigin:
    """An origin that reads a request, says so, then holds it until released, watching its
    connection: `closed` is set when weir closes it first. Released, it answers `body`."""

    def __init__(self, raw_origin, body=b"done"):
        self.got = threading.Event()
        self.release = threading.Event()
        self.closed = threading.Event()
        self.sent_all = threading.Event()
        self.body = body
        self.targets = []
        self.o = raw_origin(self.handler)
        self.port = self.o.port

    def handler(self, c):
        while True:
            head = c.read_until(b"\r\n\r\n")
            if head is None:
                return
            self.targets.append(head.split(b" ")[1].decode())
            if not head.split(b" ")[1].startswith(b"/hold"):
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            self.got.set()
            c.sock.settimeout(0.05)
            deadline = time.monotonic() + LOG_WAIT
            while not self.release.is_set() and time.monotonic() < deadline:
                try:
                    if c.sock.recv(1) == b"":
                        self.closed.set()
                        return
                except socket.timeout:
                    continue
                except OSError:
                    self.closed.set()
                    return
            c.sock.settimeout(LOG_WAIT)
            try:
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body))
                c.send(self.body)
                self.sent_all.set()
            except OSError:
                self.closed.set()
                return


def get_ok(port, path="/fine"):
    with socket.create_connection(("127.0.0.1", port), timeout=LOG_WAIT) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    return int(data.split(b" ", 2)[1]) if data else 0


def client_leaves(port, how, path="/hold", origin=None):
    """Sends a GET, waits until the origin holds it, then leaves: "close", "reset" (SO_LINGER 0)
    or "half" (shutdown of the write side only)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=LOG_WAIT)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    if origin is not None:
        assert origin.got.wait(LOG_WAIT), "the request never reached the origin"
    if how == "half":
        s.shutdown(socket.SHUT_WR)
        return s
    if how == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    return None


def test_client_abort_while_waiting_cancels_the_upstream(weir, raw_origin, tmp_path):
    for how in ("close", "reset", "half"):
        o = HoldingOrigin(raw_origin)
        port = free_port()
        log = str(tmp_path / f"access-{how}.log")
        w = weir(config(port, [o.port], log), port=port)
        left = client_leaves(port, how, origin=o)
        # Before, weir noticed only when it wrote the response: the origin held its
        # connection until it answered or upstream_read (60 s) passed.
        assert o.closed.wait(LOG_WAIT), f"{how}: weir kept the upstream exchange going"
        e, = log_entries(log, 1)
        assert (e["status"], e["termination"]) == (499, "client"), e
        assert e["error"] in ("ConnectionClosed", "WriteError"), e
        assert e["upstream"].endswith(str(o.port))
        assert get_ok(port) == 200  # the backend was not blamed
        if left is not None:
            left.close()
        w.stop()
        assert "ejected" not in w.stderr()


def test_client_abort_during_upload_is_499_not_a_backend_failure(weir, raw_origin, tmp_path):
    def handler(c):
        head = c.read_until(b"\r\n\r\n")
        if head is None:
            return
        while c.recv_some():
            pass

    o = raw_origin(handler)
    port = free_port()
    log = str(tmp_path / "access.log")
    w = weir(config(port, [o.port], log, route_extra="", server_extra="") +
             "", port=port)
    s = socket.create_connection(("127.0.0.1", port), timeout=LOG_WAIT)
    s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 5000)
    time.sleep(0.2)
    s.close()
    e, = log_entries(log, 1)
    assert (e["status"], e["termination"]) == (499, "client"), e
    w.stop()
    assert "ejected" not in w.stderr()


def test_ignore_client_abort_lets_the_origin_finish(weir, raw_origin, tmp_path):
    """With ignore_client_abort the origin's whole response is read (and thrown away) after the
    client is gone, and its connection is then reused."""
    o = HoldingOrigin(raw_origin, body=b"z" * (4 << 20))
    port = free_port()
    log = str(tmp_path / "access.log")
    weir(config(port, [o.port], log, route_extra="    ignore_client_abort: true\n"), port=port)
    client_leaves(port, "close", origin=o)
    time.sleep(0.3)
    assert not o.closed.is_set(), "weir cancelled the exchange despite ignore_client_abort"
    o.release.set()
    assert o.sent_all.wait(LOG_WAIT), "the origin could not send its whole response"
    e, = log_entries(log, 1)
    assert e["status"] == 200 and e["termination"] in ("", "client"), e
    assert get_ok(port) == 200
    assert o.o.connections == 1, "the upstream connection was not reused after the response"


def test_ignore_client_abort_still_answers_a_half_closed_client(weir, raw_origin, tmp_path):
    o = HoldingOrigin(raw_origin, body=b"answer")
    port = free_port()
    log = str(tmp_path / "access.log")
    weir(config(port, [o.port], log, route_extra="    ignore_client_abort: true\n"), port=port)
    s = client_leaves(port, "half", origin=o)
    time.sleep(0.2)
    o.release.set()
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
        if data.endswith(b"answer"):
            break
    s.close()
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"answer")
    e, = log_entries(log, 1)
    assert (e["status"], e["error"]) == (200, ""), e


def test_client_abort_mid_response_closes_the_upstream(weir, raw_origin, tmp_path):
    """A client leaving during a large streamed response: the upstream connection is closed
    (its response is incomplete, it cannot be reused), the status sent is logged with the
    error, and the next request works."""
    sent = []

    def handler(c):
        while True:
            head = c.read_until(b"\r\n\r\n")
            if head is None:
                return
            if b"/big" in head:
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 << 20))
                n = 0
                try:
                    while n < (64 << 20):
                        c.send(b"y" * 65536)
                        n += 65536
                except OSError:
                    sent.append(n)
                    return
                sent.append(n)
            else:
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    o = raw_origin(handler)
    port = free_port()
    log = str(tmp_path / "access.log")
    w = weir(config(port, [o.port], log), port=port)
    s = socket.create_connection(("127.0.0.1", port), timeout=LOG_WAIT)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
    got = 0
    while got < (1 << 20):
        got += len(s.recv(65536))
    s.close()
    e, = log_entries(log, 1, lambda e: e["target"] == "/big")
    assert e["status"] == 200 and e["termination"] == "client", e
    assert get_ok(port) == 200
    deadline = time.monotonic() + LOG_WAIT
    while not sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sent and sent[0] < (64 << 20), "the origin could send the whole body to nobody"
    w.stop()
    assert "ejected" not in w.stderr()


# ---- slow readers in front of an origin with a send timeout (issue 10, defect 1) ----

def test_slow_readers_never_get_a_healthy_backend_ejected(weir, raw_origin, tmp_path):
    """Clients that stop reading make weir stop reading the origin (backpressure); an origin
    with a send timeout then gives up on those responses. That is the clients' doing: no
    backend may be ejected for it, and a well-behaved client keeps getting 200."""
    started, gave_up = [], []
    big = 64 << 20
    nslow = 6

    def handler(c):
        while True:
            head = c.read_until(b"\r\n\r\n")
            if head is None:
                return
            if b"/big" not in head:
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            started.append(1)
            c.sock.settimeout(0.3)  # an application server's send timeout
            try:
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big)
                for _ in range(big // 65536):
                    c.send(b"b" * 65536)
            except OSError:
                gave_up.append(1)
                return  # closes the stalled response
            return

    a, b = raw_origin(handler), raw_origin(handler)
    port = free_port()
    ups = f"[127.0.0.1:{a.port}, 127.0.0.1:{b.port}]"
    w = weir(f"server:\n  threads: 2\n  grace_period: 5s\n"
             f"listeners:\n  - 127.0.0.1:{port}\n"
             f"routes:\n  - upstream: backend\n"
             f"upstreams:\n  backend:\n    max_fails: 2\n    backends: {ups}\n", port=port)
    slow = []
    for i in range(nslow):
        slow.append(stalled_client(port, f"/big/{i}", timeout=LOG_WAIT))
    deadline = time.monotonic() + 2 * LOG_WAIT
    while len(gave_up) < nslow and time.monotonic() < deadline:
        assert get_ok(port) == 200
        time.sleep(0.05)
    assert len(gave_up) == len(started) == nslow, (started, gave_up)
    deadline = time.monotonic() + 2 * LOG_WAIT
    for s in slow:  # the slow readers read at last: their responses end short of the length
        try:
            while time.monotonic() < deadline and s.recv(1 << 20):
                pass
        except OSError:
            pass
        s.close()
    assert time.monotonic() < deadline, "weir did not end the truncated responses"
    for _ in range(20):
        assert get_ok(port) == 200
    w.stop()
    err = w.stderr()
    assert "ejected" not in err and "kept in" not in err, err


# ---- a slow but steady reader (issue 10, defect 3) ----

def big_origin(raw_origin, size, pace=None):
    """An origin answering /big with size bytes (in 64 KiB sends, pace seconds apart)."""
    def handler(c):
        while True:
            head = c.read_until(b"\r\n\r\n")
            if head is None:
                return
            if b"/big" not in head:
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            c.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            block = 16384 if pace else 65536
            for _ in range(size // block):
                c.send(b"m" * block)
                if pace:
                    time.sleep(pace)

    return raw_origin(handler)


def rate_config(port, backend, log):
    return config(port, [backend], log, server_extra="  timeouts:\n    client_min_rate: 200k\n"
                  "    client_min_rate_window: 1s\n")


def test_slow_steady_reader_is_cut_off_by_client_min_rate(weir, raw_origin, tmp_path):
    o = big_origin(raw_origin, 64 << 20)
    port = free_port()
    log = str(tmp_path / "access.log")
    w = weir(rate_config(port, o.port, log), port=port)
    s = stalled_client(port, "/big", timeout=LOG_WAIT)
    stop = threading.Event()

    def read_slowly():  # 2 KiB every 20 ms: ~100 KB/s, steady progress
        try:
            while not stop.is_set() and s.recv(2048):
                time.sleep(0.02)
        except OSError:
            pass

    t = threading.Thread(target=read_slowly, daemon=True)
    t.start()
    # What the kernel already buffered still reaches the client after the close (seconds of
    # it at this pace): the access log says when weir cut it off.
    entries = log_entries(log, 1, lambda e: e["target"] == "/big")
    stop.set()
    t.join(LOG_WAIT)
    s.close()
    assert entries, "a reader at half client_min_rate was never cut off"
    e = entries[0]
    assert (e["error"], e["termination"]) == ("WriteTimeout", "client"), e
    assert e["body_bytes_sent"] < (64 << 20)
    assert get_ok(port) == 200
    w.stop()
    assert "under client_min_rate" in w.stderr()
    assert "ejected" not in w.stderr()


def test_client_min_rate_spares_fast_readers_and_slow_origins(weir, raw_origin, tmp_path):
    """The rate counts only time spent waiting on the client: a client reading at full speed
    from an origin that trickles (16 KiB per 50 ms, ~320 KB/s in bursts) keeps its response."""
    size = 512 << 10
    o = big_origin(raw_origin, size, pace=0.05)
    port = free_port()
    log = str(tmp_path / "access.log")
    weir(rate_config(port, o.port, log), port=port)
    with socket.create_connection(("127.0.0.1", port), timeout=LOG_WAIT) as s:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            data += b
    assert data.endswith(b"m" * 100) and len(data.partition(b"\r\n\r\n")[2]) == size
    e, = log_entries(log, 1, lambda e: e["target"] == "/big")
    assert e["error"] == "", e


# ---- one fault at a time, beside a well-behaved client ----

class GoodClient:
    """Keep-alive GETs to /good in a thread until stopped: counts requests and failures."""

    def __init__(self, port):
        self.port = port
        self.ok = 0
        self.failures = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=LOG_WAIT)
        i = 0
        deadline = time.monotonic() + 120  # a bound even if never stopped
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            try:
                c.request("GET", f"/good/{i}")
                r = c.getresponse()
                body = r.read()
                if r.status != 200 or body != b"ok":
                    self.failures.append((r.status, body[:50]))
                else:
                    self.ok += 1
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(repr(e))
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=LOG_WAIT)
            i += 1
            time.sleep(0.005)
        c.close()

    def stop(self):
        self.stop_ev.set()
        self.t.join(LOG_WAIT)
        return self.ok, self.failures


def raw_get(port, path, timeout=LOG_WAIT):
    """One GET on a new connection: every byte until weir closes (Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        except (ConnectionResetError, socket.timeout):
            pass
    return data


def faulty_handler(kind):
    """An origin misbehaving as kind (see FAULTS)."""
    def handler(c):
        if kind == "reset_on_accept":
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return
        head = c.read_until(b"\r\n\r\n")
        if head is None:
            return
        if kind == "killed_mid_length":
            c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"k" * 30000)
        elif kind == "killed_mid_chunked":
            c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"4000\r\n" + b"k" * 0x4000 + b"\r\n" + b"100\r\n" + b"k" * 50)
        elif kind == "garbage":
            c.send(b"SPDY/9 what\r\n\x00\x01\x02\r\n\r\n")
        elif kind == "hangs":
            c.sock.settimeout(5)
            try:
                c.sock.recv(1)
            except OSError:
                pass

    return handler


FAULTS = ["killed_mid_length", "killed_mid_chunked", "reset_on_accept", "garbage", "hangs"]


def fault_config(port, good_port, bad_port, spare_port):
    return (f"server:\n  threads: 2\n  grace_period: 5s\n"
            f"  timeouts:\n    upstream_read: 1s\n    linger_idle: 500ms\n"
            f"listeners:\n  - 127.0.0.1:{port}\n"
            f"routes:\n  - match: {{path_prefix: /good}}\n    upstream: good\n"
            f"  - upstream: mixed\n"
            f"upstreams:\n  good:\n    backends: [127.0.0.1:{good_port}]\n"
            f"  mixed:\n    max_fails: 1\n    eject: 1s\n"
            f"    backends: [127.0.0.1:{bad_port}, 127.0.0.1:{spare_port}]\n")


def ok_handler(c):
    while c.read_until(b"\r\n\r\n") is not None:
        c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def settle(pid, baseline):
    """Waits (bounded) for weir's fd count to come back to baseline; returns the last count."""
    deadline = time.monotonic() + LOG_WAIT
    n = fd_count(pid)
    while n > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
        n = fd_count(pid)
    return n


def test_one_fault_at_a_time(weir, raw_origin):
    good, spare = raw_origin(ok_handler), raw_origin(ok_handler)
    bad_kind = {"kind": "garbage"}
    bad = raw_origin(lambda c: faulty_handler(bad_kind["kind"])(c))
    port = free_port()
    w = weir(fault_config(port, good.port, bad.port, spare.port), port=port)
    client = GoodClient(port)
    time.sleep(0.2)
    baseline_fds = fd_count(w.pid)
    baseline_rss = w.rss_kb()
    for kind in FAULTS:
        bad_kind["kind"] = kind
        for i in range(6):
            data = raw_get(port, f"/f/{kind}/{i}")
            head, _, body = data.partition(b"\r\n\r\n")
            if kind == "killed_mid_length" and head.startswith(b"HTTP/1.1 200"):
                assert len(body) < 100000, "a cut response reached the client as complete"
            if kind == "killed_mid_chunked" and head.startswith(b"HTTP/1.1 200"):
                assert not body.endswith(b"0\r\n\r\n"), "weir forged the last chunk"
        # Passive ejection took the bad backend out; the spare answers.
        time.sleep(1.1)  # the 1 s ejection ends: the bad one is tried again
        n = settle(w.pid, baseline_fds + 2)
        assert n <= baseline_fds + 2, f"{kind}: {n} fds open, {baseline_fds} before"
    ok, failures = client.stop()
    assert failures == [] and ok > 0, failures[:5]
    # No worker is stuck: fresh connections (spread over both workers) all succeed.
    for i in range(16):
        assert raw_get(port, f"/good/after/{i}").startswith(b"HTTP/1.1 200")
    if not os.environ.get("WEIR_SANITIZED") and not os.environ.get("WEIR_WRAPPER"):
        assert w.rss_kb() < baseline_rss + 16 * 1024, (baseline_rss, w.rss_kb())
    w.stop()
    err = w.stderr()
    assert f"backend 127.0.0.1:{good.port} ejected" not in err
    assert f"backend 127.0.0.1:{spare.port} ejected" not in err


def test_client_faults_at_every_phase(weir, raw_origin):
    """Clients that give up at every phase, and bursts of connections that close at once: the
    good client sees none of it, and weir's fds come back."""
    good, other, spare = raw_origin(ok_handler), raw_origin(ok_handler), raw_origin(ok_handler)
    port = free_port()
    w = weir(fault_config(port, good.port, other.port, spare.port), port=port)
    client = GoodClient(port)
    time.sleep(0.2)
    baseline = fd_count(w.pid)
    for i in range(100):  # a burst of connections closing at once, some with half a head
        s = socket.create_connection(("127.0.0.1", port), timeout=LOG_WAIT)
        if i % 3 == 1:
            s.sendall(b"GET /good/partial HTTP/1.1\r\nHo")
        if i % 3 == 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    for i in range(10):  # during an upload
        s = socket.create_connection(("127.0.0.1", port), timeout=LOG_WAIT)
        s.sendall(b"POST /good/up HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" +
                  b"u" * 1000)
        s.close()
    for i in range(10):  # right after a small response was asked for, and half-closed
        s = socket.create_connection(("127.0.0.1", port), timeout=LOG_WAIT)
        s.sendall(b"GET /good/small HTTP/1.1\r\nHost: t\r\n\r\n")
        if i % 2:
            s.shutdown(socket.SHUT_WR)
        s.close()
    n = settle(w.pid, baseline)
    ok, failures = client.stop()
    assert failures == [] and ok > 0, failures[:5]
    assert n <= baseline, f"{n} fds open, {baseline} before"
    w.stop()
    assert "ejected" not in w.stderr()


def restart(o, down_for):
    """Stops origin o (an ok_handler Origin) and starts a new one on its port after down_for
    seconds; returns the new one."""
    from origin import Origin
    o.stop()
    time.sleep(down_for)
    for _ in range(50):
        try:
            return Origin(ok_handler, port=o.port).start()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"cannot listen on {o.port} again")


def test_origin_restarted_under_load(weir, raw_origin):
    """One of two origins stopped and started again on its port, three times, while the good
    client keeps going: its pooled connections die (retried on fresh ones, not blamed), its
    refused connects go to the other backend (retry_idempotent), and the good client never
    sees a failure."""
    from origin import Origin
    a = raw_origin(ok_handler)
    b = Origin(ok_handler).start()
    port = free_port()
    w = weir(f"server:\n  threads: 2\n  grace_period: 5s\n  max_retries: 2\n"
             f"listeners:\n  - 127.0.0.1:{port}\n"
             f"routes:\n  - upstream: app\n    retry_idempotent: true\n"
             f"upstreams:\n  app:\n    max_fails: 2\n    eject: 500ms\n"
             f"    backends: [127.0.0.1:{a.port}, 127.0.0.1:{b.port}]\n", port=port)
    client = GoodClient(port)
    try:
        for _ in range(3):
            time.sleep(0.5)
            b = restart(b, 0.3)
        time.sleep(1.0)  # the ejection ends and b serves again
        ok, failures = client.stop()
    finally:
        b.stop()
    assert failures == [] and ok > 0, failures[:5]
    w.stop()
    assert f"backend 127.0.0.1:{a.port} ejected" not in w.stderr()


def test_all_faults_together(weir, raw_origin):
    """Every fault above at once, for a few seconds: five misbehaving origins and one that is
    restarted, beside a healthy spare, in one group; clients giving up at every phase; slow
    readers in front of an origin with a send timeout. The good client on its own group sees
    none of it, no healthy backend is ejected, and afterwards weir's fds and RSS come back
    and every worker answers."""
    from origin import Origin
    good, spare = raw_origin(ok_handler), raw_origin(ok_handler)
    bad = [raw_origin(faulty_handler(kind)) for kind in FAULTS]
    restarted = Origin(ok_handler).start()

    def slow_handler(c):
        while True:
            head = c.read_until(b"\r\n\r\n")
            if head is None:
                return
            c.sock.settimeout(0.3)  # an application server's send timeout
            try:
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (32 << 20))
                for _ in range(512):
                    c.send(b"s" * 65536)
            except OSError:
                return

    slow = raw_origin(slow_handler)
    mixed = ", ".join(f"127.0.0.1:{o.port}" for o in bad + [spare])
    port = free_port()
    w = weir(f"server:\n  threads: 2\n  grace_period: 5s\n"
             f"  timeouts:\n    upstream_read: 1s\n    linger_idle: 500ms\n"
             f"listeners:\n  - 127.0.0.1:{port}\n"
             f"routes:\n  - match: {{path_prefix: /good}}\n    upstream: good\n"
             f"  - match: {{path_prefix: /big}}\n    upstream: slow\n"
             f"  - upstream: mixed\n"
             f"upstreams:\n  good:\n    backends: [127.0.0.1:{good.port}]\n"
             f"  slow:\n    max_fails: 2\n    backends: [127.0.0.1:{slow.port}]\n"
             f"  mixed:\n    max_fails: 1\n    eject: 1s\n"
             f"    backends: [{mixed}, 127.0.0.1:{restarted.port}]\n", port=port)
    for i in range(4):
        raw_get(port, f"/good/warm/{i}")
    time.sleep(0.3)
    baseline_fds = fd_count(w.pid)
    baseline_rss = w.rss_kb()
    client = GoodClient(port)
    stop = threading.Event()
    errors = []

    def guarded(fn):
        def run():
            try:
                while not stop.is_set():
                    fn()
            except Exception as e:  # a helper that broke would silently test less
                errors.append(f"{fn.__name__}: {e!r}")
        return threading.Thread(target=run, daemon=True)

    n = {"i": 0}

    def origin_faults():
        n["i"] += 1
        data = raw_get(port, f"/f/{n['i']}")
        head, _, body = data.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200") and b"Content-Length: 100000" in head:
            assert len(body) < 100000, "a cut response reached the client as complete"
        if head.startswith(b"HTTP/1.1 200") and b"chunked" in head:
            assert body == b"ok" or not body.endswith(b"0\r\n\r\n"), "weir forged the last chunk"

    def client_faults():
        for i in range(6):
            s = socket.create_connection(("127.0.0.1", port), timeout=LOG_WAIT)
            if i == 1:
                s.sendall(b"GET /good/partial HTTP/1.1\r\nHo")
            elif i == 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
            elif i == 3:
                s.sendall(b"POST /f/up HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" +
                          b"u" * 1000)
            elif i == 4:
                s.sendall(b"GET /f/wait HTTP/1.1\r\nHost: t\r\n\r\n")
                s.shutdown(socket.SHUT_WR)
            elif i == 5:
                s.sendall(b"GET /big/leave HTTP/1.1\r\nHost: t\r\n\r\n")
                s.recv(1000)
            s.close()
        time.sleep(0.02)

    def slow_readers():
        readers = [stalled_client(port, f"/big/{i}", timeout=LOG_WAIT) for i in range(3)]
        stop.wait(1.0)
        for s in readers:
            s.close()

    def restarts():
        nonlocal restarted
        if not stop.wait(0.7):
            restarted = restart(restarted, 0.2)

    workers = [guarded(f) for f in (origin_faults, client_faults, slow_readers, restarts)]
    for t in workers:
        t.start()
    try:
        time.sleep(4.0)
    finally:
        stop.set()
        for t in workers:
            t.join(2 * LOG_WAIT)
        ok, failures = client.stop()
        restarted.stop()
    assert errors == [], errors
    assert failures == [] and ok > 0, failures[:5]
    for i in range(16):  # no worker is stuck
        assert raw_get(port, f"/good/after/{i}").startswith(b"HTTP/1.1 200")
    # What is left: at most a pooled connection per healthy backend and worker.
    n_fds = settle(w.pid, baseline_fds + 4)
    assert n_fds <= baseline_fds + 4, f"{n_fds} fds open, {baseline_fds} before"
    if not os.environ.get("WEIR_SANITIZED") and not os.environ.get("WEIR_WRAPPER"):
        assert w.rss_kb() < baseline_rss + 16 * 1024, (baseline_rss, w.rss_kb())
    w.stop()
    err = w.stderr()
    for o in (good, spare, slow):
        assert f"backend 127.0.0.1:{o.port} ejected" not in err, err[-3000:]
