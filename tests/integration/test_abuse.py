"""Abuse limits under attack: each test attacks weir (a bounded number of times, for a bounded
time) while a well-behaved client keeps using it, and asserts that every one of the good
client's requests succeeds and that weir's memory stays bounded (RSS checks are skipped under
sanitizers, whose allocators hold on to memory).

Attackers connect from 127.0.0.2 and the good client from 127.0.0.1 (Linux routes all of
127.0.0.0/8 to loopback), so per-address limits can tell them apart.
"""
import socket
import threading
import time

from conftest import (SANITIZED, free_port, parse_responses, proxy_config, recv_response,
                      stalled_client)

ATTACKER = "127.0.0.2"
GOOD = "127.0.0.1"
RSS_GROWTH_KB = 48 * 1024  # what an attack may add to weir's resident memory


def config(port, backend, limits="", timeouts="", listeners=None):
    extra = ""
    if limits:
        extra += "  limits:\n" + "".join(f"    {line}\n" for line in limits.split(";"))
    if timeouts:
        extra += "  timeouts:\n" + "".join(f"    {line}\n" for line in timeouts.split(";"))
    text = proxy_config(port, [backend], server_extra=extra)
    if listeners is not None:
        head, _, rest = text.partition("listeners:\n")
        _, _, rest = rest.partition("routes:\n")
        text = head + "listeners:\n" + listeners + "routes:\n" + rest
    return text


def connect(port, src=GOOD, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(src, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def request(path, close=False):
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def read_response(sock, limit=10.0):
    """One response: (status, headers dict lower-cased, body)."""
    r = recv_response(sock, limit)
    return r.status, r.headers, r.body


def complete_responses(data):
    """How many whole Content-Length-framed responses data holds."""
    n, pos = 0, 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return n
        length = 0
        for line in data[pos:end].split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        if len(data) < end + 4 + length:
            return n
        pos = end + 4 + length
        n += 1


def read_responses(sock, n, limit=10.0):
    """n pipelined responses, parsed."""
    sock.settimeout(limit)
    data = b""
    while complete_responses(data) < n:
        b = sock.recv(65536)
        if not b:
            raise ConnectionError(f"closed after {complete_responses(data)} of {n} responses")
        data += b
    return parse_responses(data)


def status_of(resp):
    return resp[0] if isinstance(resp, tuple) else resp.status


def header_of(resp, name):
    if isinstance(resp, tuple):
        return resp[1].get(name.lower())
    return resp.headers.get(name.lower())


class GoodClient(threading.Thread):
    """Makes one request every interval on a fresh connection until stopped; records results."""

    def __init__(self, port, path="/bytes/100", interval=0.05, keepalive=False):
        super().__init__(daemon=True)
        self.port, self.path, self.interval, self.keepalive = port, path, interval, keepalive
        self.results = []  # status codes, or exception strings
        self.stop_flag = threading.Event()

    def run(self):
        sock = None
        while not self.stop_flag.is_set():
            try:
                if sock is None:
                    sock = connect(self.port, GOOD)
                sock.sendall(request(self.path, close=not self.keepalive))
                self.results.append(status_of(read_response(sock)))
                if not self.keepalive:
                    sock.close()
                    sock = None
            except Exception as e:  # noqa: BLE001 - recorded and asserted on
                self.results.append(f"{type(e).__name__}: {e}")
                if sock is not None:
                    sock.close()
                sock = None
            self.stop_flag.wait(self.interval)
        if sock is not None:
            sock.close()

    def finish(self):
        self.stop_flag.set()
        self.join(30)
        assert self.results, "the good client made no request"
        bad = [r for r in self.results if r != 200]
        assert not bad, f"good client failures: {bad[:5]} ({len(bad)} of {len(self.results)})"
        return len(self.results)


class RssWatch(threading.Thread):
    """Samples weir's RSS every 50 ms; .check() asserts the peak stayed near the start."""

    def __init__(self, w):
        super().__init__(daemon=True)
        self.w = w
        self.base = w.rss_kb()
        self.peak = self.base
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.wait(0.05):
            try:
                self.peak = max(self.peak, self.w.rss_kb())
            except OSError:
                return

    def check(self):
        self.stop_flag.set()
        self.join(5)
        if not SANITIZED:
            grew = self.peak - self.base
            assert grew < RSS_GROWTH_KB, f"weir RSS grew by {grew} KiB under attack"


def warm_up(port):
    s = connect(port)
    s.sendall(request("/bytes/10", close=True))
    assert status_of(read_response(s)) == 200
    s.close()


def is_closed_by_peer(sock, wait=0.0):
    """True when weir closed sock (EOF or reset), False when it is open and silent."""
    sock.settimeout(wait if wait > 0 else 0.001)
    try:
        b = sock.recv(1)
        return b == b""
    except socket.timeout:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def open_flood(port, n, src, limit_s=10.0):
    """Opens up to n connections from src within limit_s; returns the sockets."""
    socks = []
    deadline = time.monotonic() + limit_s
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        try:
            socks.append(connect(port, src, timeout=2.0))
        except OSError:
            pass
    return socks


def admitted(socks, settle=1.0):
    """The sockets weir kept open, after giving it settle seconds to refuse the others."""
    time.sleep(settle)
    return [s for s in socks if not is_closed_by_peer(s)]


# ---- connection floods ---------------------------------------------------------------------


def test_connection_flood_per_ip_cap(weir, origin):
    port = free_port()
    w = weir(config(port, origin.port, "max_connections_per_ip: 20"), port=port)
    warm_up(port)
    rss = RssWatch(w)
    rss.start()
    good = GoodClient(port)
    good.start()
    socks = open_flood(port, 200, ATTACKER)
    try:
        kept = admitted(socks)
        # Two workers share the count: exactly the cap survives, whichever worker took each.
        assert len(kept) == 20, f"{len(kept)} attacker connections kept open"
        # The admitted connections keep working.
        for s in kept[:3]:
            s.sendall(request("/bytes/10"))
            assert status_of(read_response(s)) == 200
        # More from the attacker are still refused, the good client is not.
        extra = open_flood(port, 20, ATTACKER)
        assert not admitted(extra, settle=0.5)
        for s in extra:
            s.close()
        time.sleep(0.5)
        good_count = good.finish()
        assert good_count >= 5
        rss.check()
        # Closing gives the counts back: the attacker's address may connect again.
        for s in kept:
            s.close()
        time.sleep(0.5)
        again = connect(port, ATTACKER)
        again.sendall(request("/bytes/10", close=True))
        assert status_of(read_response(again)) == 200
        again.close()
    finally:
        good.stop_flag.set()
        for s in socks:
            s.close()
    assert "max_connections_per_ip is reached" in w.stderr()


def test_connection_flood_listener_cap(weir, origin):
    port, other = free_port(), free_port()
    listeners = (f"  - address: 127.0.0.1:{port}\n    max_connections: 10\n"
                 f"  - 127.0.0.1:{other}\n")
    w = weir(config(port, origin.port, listeners=listeners), port=port)
    warm_up(other)
    rss = RssWatch(w)
    rss.start()
    good = GoodClient(other)  # another listener keeps serving
    good.start()
    socks = open_flood(port, 100, ATTACKER)
    try:
        kept = admitted(socks)
        assert len(kept) == 10, f"{len(kept)} connections kept on a listener capped at 10"
        kept[0].sendall(request("/bytes/10"))
        assert status_of(read_response(kept[0])) == 200
        time.sleep(0.3)
        good.finish()
        rss.check()
        for s in kept:
            s.close()
        time.sleep(0.5)
        warm_up(port)  # the listener's count went back down
    finally:
        good.stop_flag.set()
        for s in socks:
            s.close()
    assert "listener's max_connections is reached" in w.stderr()


# ---- request floods ------------------------------------------------------------------------


def test_request_flood_per_ip_rate_gets_429(weir, origin):
    port = free_port()
    rate = 10
    w = weir(config(port, origin.port, f"requests_per_second_per_ip: {rate}"), port=port)
    warm_up(port)
    rss = RssWatch(w)
    rss.start()
    good = GoodClient(port, interval=0.25, keepalive=True)  # 4 requests/s: under the limit
    good.start()
    counts = {200: 0, 429: 0}
    retry_after = set()
    start = time.monotonic()
    conns = [connect(port, ATTACKER) for _ in range(4)]
    try:
        n = 0
        while n < 6000 and time.monotonic() - start < 3.0:
            s = conns[n % len(conns)]
            s.sendall(request("/bytes/10") * 20)  # pipelined: the attacker does not wait
            for r in read_responses(s, 20):
                counts[status_of(r)] = counts.get(status_of(r), 0) + 1
                if status_of(r) == 429:
                    retry_after.add(header_of(r, "retry-after"))
            n += 20
        elapsed = time.monotonic() - start
    finally:
        for s in conns:
            s.close()
    good.finish()
    rss.check()
    assert counts[429] > 0, counts
    assert retry_after == {"1"}, retry_after
    assert set(counts) == {200, 429}, counts
    # A sliding one-second window admits at most about rate * (seconds + 1).
    from_attacker = [r for r in origin.requests if r.header("x-forwarded-for") == ATTACKER]
    assert len(from_attacker) == counts[200]
    assert counts[200] <= rate * (elapsed + 1) + 2, (counts, elapsed)
    # After a quiet second the attacker's address is served again.
    time.sleep(2.1)
    s = connect(port, ATTACKER)
    s.sendall(request("/bytes/10", close=True))
    assert status_of(read_response(s)) == 200
    s.close()


def test_429_with_a_body_closes_the_connection(weir, origin):
    port = free_port()
    weir(config(port, origin.port, "requests_per_second_per_ip: 1"), port=port)
    s = connect(port, ATTACKER)
    s.sendall(request("/bytes/10"))
    assert status_of(read_response(s)) == 200
    body = b"x" * 100
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + body)
    r = read_response(s)
    assert status_of(r) == 429
    assert header_of(r, "connection") == "close"
    assert is_closed_by_peer(s, wait=5.0)
    s.close()


# ---- requests per connection and pipelining ------------------------------------------------


def test_max_requests_per_connection_closes_after_the_last(weir, origin):
    port = free_port()
    weir(config(port, origin.port, "max_requests_per_connection: 5"), port=port)
    s = connect(port)
    for i in range(1, 6):
        s.sendall(request("/bytes/10"))
        r = read_response(s)
        assert status_of(r) == 200
        assert (header_of(r, "connection") == "close") == (i == 5), (i, r)
    assert is_closed_by_peer(s, wait=5.0)
    s.close()
    # Pipelined past the limit: five answers, then the close; the rest is never proxied.
    before = len(origin.requests)
    s = connect(port)
    s.sendall(request("/bytes/10") * 8)
    data = b""
    s.settimeout(5.0)
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    rs = parse_responses(data)
    assert [r[0] for r in rs] == [200] * 5
    assert rs[-1][1].get("connection") == "close"
    assert len(origin.requests) - before == 5


def test_pipelined_flood_is_read_with_backpressure(weir, origin):
    """A client pipelining thousands of requests and reading nothing: weir reads only as far
    as its buffer allows, so the origin sees few of them and memory does not grow."""
    port = free_port()
    w = weir(config(port, origin.port, timeouts="client_write: 3s"), port=port)
    warm_up(port)
    rss = RssWatch(w)
    rss.start()
    good = GoodClient(port)
    good.start()
    total = 20000
    blob = request("/bytes/65536") * total
    attackers = []
    try:
        for _ in range(5):
            s = connect(port, ATTACKER)
            s.setblocking(False)
            attackers.append([s, 0])
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for a in attackers:
                try:
                    a[1] += a[0].send(blob[a[1]:a[1] + 65536])
                except (BlockingIOError, ConnectionError):
                    pass
            time.sleep(0.01)
        time.sleep(0.5)
        from_attacker = [r for r in origin.requests if r.header("x-forwarded-for") == ATTACKER]
        # Unread responses of 64 KiB fill the socket buffers after a few dozen per connection.
        assert len(from_attacker) < total * len(attackers) // 20, len(from_attacker)
        good.finish()
        rss.check()
    finally:
        good.stop_flag.set()
        for a in attackers:
            a[0].close()


# ---- the existing protections, under attack ------------------------------------------------


def test_slowloris_under_attack(weir, origin):
    port = free_port()
    w = weir(config(port, origin.port, timeouts="client_header: 2s"), port=port)
    warm_up(port)
    rss = RssWatch(w)
    rss.start()
    good = GoodClient(port)
    good.start()
    head = request("/bytes/10")
    dribblers = [[connect(port, ATTACKER), 0] for _ in range(50)]
    try:
        start = time.monotonic()
        while time.monotonic() - start < 4.0:  # two header deadlines' worth of dribbling
            for d in dribblers:
                if d[1] < len(head) - 2:  # never the final CRLF
                    try:
                        d[0].sendall(head[d[1]:d[1] + 1])
                        d[1] += 1
                    except OSError:
                        pass
            time.sleep(0.25)
        closed = sum(1 for d in dribblers if is_closed_by_peer(d[0], wait=0.2))
        assert closed == len(dribblers), f"only {closed} of 50 slowloris connections closed"
        good.finish()
        rss.check()
    finally:
        good.stop_flag.set()
        for d in dribblers:
            d[0].close()


def test_slow_readers_under_attack(weir, origin):
    port = free_port()
    w = weir(config(port, origin.port, timeouts="client_write: 2s"), port=port)
    warm_up(port)
    rss = RssWatch(w)
    rss.start()
    good = GoodClient(port)
    good.start()
    readers = []
    try:
        for _ in range(20):
            readers.append(stalled_client(port, "/bytes/8388608", rcvbuf=65536, source=ATTACKER))
        time.sleep(4.0)  # past client_write: each stalled reader is dropped
        good.finish()
        rss.check()
        # Each reader got at most its socket buffers' worth before weir gave up on it.
        for s in readers:
            got = 0
            s.settimeout(5.0)
            try:
                while True:
                    b = s.recv(1 << 20)
                    if not b:
                        break
                    got += len(b)
            except (ConnectionResetError, socket.timeout):
                pass
            assert got < 8388608, "a stalled reader was sent the whole body"
    finally:
        good.stop_flag.set()
        for s in readers:
            s.close()


def test_oversized_requests_under_attack(weir, origin):
    port = free_port()
    w = weir(config(port, origin.port, "max_header_bytes: 4k;max_body_bytes: 64k"), port=port)
    warm_up(port)
    rss = RssWatch(w)
    rss.start()
    good = GoodClient(port)
    good.start()
    seen = {}
    big_header = b"X-Big: " + b"a" * 8000 + b"\r\n"
    start = time.monotonic()
    try:
        for i in range(300):
            if time.monotonic() - start > 8.0:
                break
            s = connect(port, ATTACKER)
            if i % 2 == 0:
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n" + big_header + b"\r\n")
            else:
                s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
            try:
                st = status_of(read_response(s))
            except (ConnectionError, socket.timeout) as e:
                st = type(e).__name__
            seen[st] = seen.get(st, 0) + 1
            s.close()
        assert set(seen) == {431, 413}, seen
        good.finish()
        rss.check()
    finally:
        good.stop_flag.set()
    assert not [r for r in origin.requests if r.header("x-forwarded-for") == ATTACKER]
