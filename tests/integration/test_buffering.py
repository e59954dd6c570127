"""Response buffering (a route's buffer_responses, issue 10 defect 1): weir reads the origin's
response at the origin's pace into bounded memory, then an unnamed temporary file, so a slow
client never holds an application server's worker. Bounded, cleaned up on every exit path;
when the spill file cannot be written weir falls back to backpressure and loses nothing.
"""
import os
import resource
import socket
import threading
import time

from conftest import fd_count, free_port, recv_response, stalled_client

WAIT = 10.0  # seconds: bounds every wait on an origin or a client


def pattern(n):
    """n bytes no two 251-byte windows of which are alike at the same offset: reordering,
    loss or duplication anywhere shows."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


class PacedOrigin:
    """Answers /big with `size` bytes of pattern() (Content-Length, or chunked with a trailer)
    under an application server's send timeout; records when it finished or gave up."""

    def __init__(self, raw_origin, size, send_timeout=0.5, chunked=False):
        self.size = size
        self.body = pattern(size)
        self.send_timeout = send_timeout
        self.chunked = chunked
        self.finished = []  # monotonic times whole responses were sent
        self.gave_up = []
        self.requests = 0
        self.connections = 0
        self.o = raw_origin(self.handler)
        self.port = self.o.port

    def handler(self, c):
        self.connections += 1
        while True:
            head = c.read_until(b"\r\n\r\n")
            if head is None:
                return
            self.requests += 1
            if b"/big" not in head:
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            c.sock.settimeout(self.send_timeout)
            try:
                if self.chunked:
                    c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                           b"Trailer: X-Sum\r\n\r\n")
                    for i in range(0, self.size, 40000):
                        part = self.body[i:i + 40000]
                        c.send(b"%x\r\n%s\r\n" % (len(part), part))
                    c.send(b"0\r\nX-Sum: %d\r\n\r\n" % self.size)
                else:
                    c.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.size)
                    for i in range(0, self.size, 65536):
                        c.send(self.body[i:i + 65536])
            except OSError:
                self.gave_up.append(time.monotonic())
                return
            self.finished.append(time.monotonic())
            c.sock.settimeout(WAIT)


def route_config(port, backend, buffering, server_extra=""):
    return (f"server:\n  threads: 2\n  grace_period: 5s\n{server_extra}"
            f"listeners:\n  - 127.0.0.1:{port}\n"
            f"routes:\n  - upstream: backend\n    buffer_responses: {buffering}\n"
            f"upstreams:\n  backend:\n    max_fails: 2\n"
            f"    backends:\n      - 127.0.0.1:{backend}\n")


def slow_client(port, path="/big"):
    return stalled_client(port, path, timeout=WAIT)


def read_response(s, timeout):
    """One whole response: (head, body, trailers)."""
    r = recv_response(s, timeout)
    return r.head, r.body, r.trailers


def baseline_fds(pid):
    """weir's descriptor count once its workers are all up (two reads 0.2 s apart agree)."""
    n = fd_count(pid)
    for _ in range(50):
        time.sleep(0.2)
        m = fd_count(pid)
        if m == n:
            return n
        n = m
    return n


def spill_fds(pid, spill):
    """weir's open descriptors on files in the spill directory (O_TMPFILE ones included)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(spill)):
            found.append(target)
    return found


def settle_fds(pid, baseline, spill):
    """Waits (bounded) until weir holds no spill file and at most baseline descriptors."""
    deadline = time.monotonic() + WAIT
    while ((fd_count(pid) > baseline or spill_fds(pid, spill))
           and time.monotonic() < deadline):
        time.sleep(0.05)
    return fd_count(pid), spill_fds(pid, spill)


def get_small(port):
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(b"GET /small HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                return data
            data += b


def test_buffering_frees_the_origin_from_slow_clients(weir, raw_origin, tmp_path):
    """Without buffering these clients would hold the origin past its send timeout (the fault
    suite shows it giving up); with it the origin finishes each response at once, its
    connection goes back to the pool, and each client later gets every byte in order."""
    spill = tmp_path / "spill"
    spill.mkdir()
    size = 6 << 20
    o = PacedOrigin(raw_origin, size)
    port = free_port()
    w = weir(route_config(port, o.port, f"{{memory: 256k, spill: {spill}, max: 64m}}"), port=port)
    base = baseline_fds(w.pid)
    clients = [slow_client(port, f"/big/{i}") for i in range(4)]
    deadline = time.monotonic() + 2 * WAIT
    while len(o.finished) + len(o.gave_up) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert o.gave_up == [] and len(o.finished) == 4, (o.finished, o.gave_up)
    assert list(spill.iterdir()) == [], "a spill file has a name someone could find"
    assert b"200 OK" in get_small(port)  # weir answers others meanwhile
    for s in clients:
        head, body, _ = read_response(s, 2 * WAIT)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert body == o.body
    # The same connections carry the next requests: each went back to the pool early.
    for s in clients:
        s.sendall(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
        head, body, _ = read_response(s, WAIT)
        assert body == b"ok"
        s.close()
    assert o.connections <= 4 + 1, o.connections
    # Nothing left but the pooled upstream connections (at most one per origin connection).
    fds, files = settle_fds(w.pid, base + o.connections, spill)
    assert fds <= base + o.connections and files == [], (base, fds, files)
    w.stop()
    assert "ejected" not in w.stderr()


def test_chunked_response_with_trailers_buffers_intact(weir, raw_origin, tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    o = PacedOrigin(raw_origin, 16 << 20, chunked=True)
    port = free_port()
    w = weir(route_config(port, o.port, f"{{memory: 64k, spill: {spill}}}"), port=port)
    s = slow_client(port)
    deadline = time.monotonic() + WAIT
    while not o.finished and not o.gave_up and time.monotonic() < deadline:
        time.sleep(0.05)
    assert o.finished and not o.gave_up
    head, body, trailers = read_response(s, 2 * WAIT)
    assert b"chunked" in head.lower()
    assert body == o.body
    assert trailers.lower() == b"x-sum: %d" % len(o.body)
    s.close()
    w.stop()


def test_memory_only_buffering_is_bounded(weir, raw_origin, tmp_path):
    """Without a spill directory at most `memory` is held per response: past it weir stops
    reading the origin (backpressure), so an origin with a send timeout still gives up on a
    client that never reads, and that is not the backend's fault."""
    size = 64 << 20
    o = PacedOrigin(raw_origin, size, send_timeout=0.5)
    port = free_port()
    w = weir(route_config(port, o.port, "{memory: 1m}"), port=port)
    rss0 = w.rss_kb()
    clients = [slow_client(port, f"/big/{i}") for i in range(3)]
    deadline = time.monotonic() + 2 * WAIT
    while len(o.gave_up) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(o.gave_up) == 3 and not o.finished, (o.finished, o.gave_up)
    # 3 responses of 64 MiB, 1 MiB each held: far below what buffering them would take.
    assert w.rss_kb() - rss0 < 32 * 1024, (rss0, w.rss_kb())
    for s in clients:
        s.close()
    for _ in range(5):
        assert b"200 OK" in get_small(port)
    w.stop()
    err = w.stderr()
    assert "ejected" not in err and "kept in" not in err, err


def test_spill_write_failure_falls_back_to_backpressure(weir, raw_origin, tmp_path):
    """The spill file cannot grow (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC): weir says
    so once, stops buffering that response past what it holds, and the client still gets every
    byte in order. The process does not die of SIGXFSZ."""
    spill = tmp_path / "spill"
    spill.mkdir()
    size = 4 << 20
    o = PacedOrigin(raw_origin, size, send_timeout=WAIT)
    port = free_port()
    w = weir(route_config(port, o.port, f"{{memory: 64k, spill: {spill}}}"), port=port)
    resource.prlimit(w.pid, resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))
    s = slow_client(port)
    time.sleep(1.0)  # the file fills to the limit while the client reads nothing
    head, body, _ = read_response(s, 2 * WAIT)
    assert body == o.body
    s.close()
    assert w.alive()
    err = w.stderr()
    assert "cannot write the temporary file" in err, err
    # The directory vanishes under weir: the next response is buffered in memory only.
    spill.rmdir()
    s = slow_client(port)
    head, body, _ = read_response(s, 2 * WAIT)
    assert body == o.body
    s.close()
    w.stop()
    assert "ejected" not in w.stderr()


def test_client_gone_while_spooled_frees_everything(weir, raw_origin, tmp_path):
    """Clients that leave while their responses sit in memory and in spill files: every
    chunk, file and connection is released (fds back to the baseline, RSS back down)."""
    spill = tmp_path / "spill"
    spill.mkdir()
    o = PacedOrigin(raw_origin, 8 << 20)
    port = free_port()
    w = weir(route_config(port, o.port, f"{{memory: 512k, spill: {spill}}}"), port=port)
    assert b"200 OK" in get_small(port)
    base = baseline_fds(w.pid)
    saw_spill = False
    for rnd in range(3):
        clients = [slow_client(port, f"/big/{rnd}/{i}") for i in range(4)]
        deadline = time.monotonic() + 2 * WAIT
        while len(o.finished) < 4 * (rnd + 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(o.finished) == 4 * (rnd + 1) and not o.gave_up
        saw_spill |= len(spill_fds(w.pid, spill)) > 0
        for i, s in enumerate(clients):
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
    assert saw_spill, "the responses never reached their spill files"
    # The origin had finished each response, so its connections went back to the pool: past
    # those, nothing of the clients is left.
    fds, files = settle_fds(w.pid, base + o.connections, spill)
    assert fds <= base + o.connections and files == [], (base, fds, files)
    assert b"200 OK" in get_small(port)
    w.stop()
    assert "ejected" not in w.stderr()


def test_keep_alive_client_gets_every_response_whole(weir, raw_origin, tmp_path):
    """A client that keeps up, many buffered responses in a row on one connection: bytes go
    straight to the client while nothing is held, through the spool when it falls behind,
    and every response arrives whole and in order."""
    spill = tmp_path / "spill"
    spill.mkdir()
    o = PacedOrigin(raw_origin, 1 << 20)
    port = free_port()
    w = weir(route_config(port, o.port, f"{{memory: 64k, spill: {spill}}}"), port=port)
    done = []

    def fetch():
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            for _ in range(10):
                s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
                _, body, _ = read_response(s, WAIT)
                done.append(body == o.body)

    t = threading.Thread(target=fetch)
    t.start()
    t.join(2 * WAIT)
    assert done == [True] * 10
    w.stop()
