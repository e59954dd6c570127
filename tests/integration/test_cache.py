"""The HTTP cache (routes[].cache, cache.zones): storage, the cache lock, RFC 9111 rules and
Cache-Status, against a real origin that counts what it is asked.

The origin reads what to answer from the query string: delay (seconds before the head),
cc (Cache-Control), len (body bytes), chunked (1: chunked, in pieces), pause (seconds between
pieces), status, setcookie, vary, expires, age, date_offset, drop (1: close without answering),
cut (1: close half-way through the body), etag (answered 304 to a matching If-None-Match, with
cc304 as its Cache-Control if given), xf and xf304 (that many extra fields on a 200, on a 304). Every request it gets is counted by its target;
its attributes force_status and delay change what it does for every target.
"""
import http.client
import http.server
import socket
import socketserver
import threading
import time
import urllib.parse

import pytest

from conftest import SANITIZED, SLOW, free_port


class CountingOrigin:
    def __init__(self):
        self.counts = {}
        self.heads = []
        self.force_status = 0
        self.delay = 0.0  # seconds every request waits (on top of ?delay=)
        self.lock = threading.Lock()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.do_GET()

            def do_PURGE(self):
                self.do_GET()

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(n)
                self.do_GET()

            def do_GET(self):
                with origin.lock:
                    origin.counts[self.path] = origin.counts.get(self.path, 0) + 1
                    origin.heads.append((self.command, self.path, dict(self.headers)))
                q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                time.sleep(float(q.get("delay", "0")) + origin.delay)
                if q.get("drop") == "1":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if origin.force_status:
                    b = b"origin trouble\n"
                    self.send_response(origin.force_status)
                    self.send_header("Content-Length", str(len(b)))
                    self.end_headers()
                    self.wfile.write(b)
                    return
                inm = self.headers.get("If-None-Match")
                if "etag" in q and inm == q["etag"]:
                    self.send_response(304)
                    if "cc304" in q or "cc" in q:
                        self.send_header("Cache-Control", q.get("cc304", q.get("cc")))
                    for i in range(int(q.get("xf304", "0"))):
                        self.send_header(f"X-G{i}", "g")
                    self.send_header("ETag", q["etag"])
                    self.send_header("X-Revalidated", "1")
                    self.end_headers()
                    return
                n = int(q.get("len", "1000"))
                body = bytes((i * 7 + 3) % 251 for i in range(n))
                self.send_response(int(q.get("status", "200")))
                if "cc" in q:
                    self.send_header("Cache-Control", q["cc"])
                if "expires" in q:
                    self.send_header("Expires", q["expires"])
                if "age" in q:
                    self.send_header("Age", q["age"])
                if "vary" in q:
                    self.send_header("Vary", q["vary"])
                if "etag" in q:
                    self.send_header("ETag", q["etag"])
                if "lastmod" in q:
                    self.send_header("Last-Modified", q["lastmod"])
                for i in range(int(q.get("xf", "0"))):
                    self.send_header(f"X-F{i}", "f")
                if q.get("setcookie") == "1":
                    self.send_header("Set-Cookie", "s=1")
                self.send_header("X-Served", str(origin.counts[self.path]))
                if q.get("close") == "1":
                    self.send_header("Connection", "close")
                    self.close_connection = True
                if q.get("chunked") == "1":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    pause = float(q.get("pause", "0"))
                    step = max(1, n // 4)
                    for i in range(0, n, step):
                        if q.get("cut") == "1" and i >= n // 2:
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        piece = body[i:i + step]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        time.sleep(pause)
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(n))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def count(self, target):
        with self.lock:
            return self.counts.get(target, 0)


def body_of(n):
    return bytes((i * 7 + 3) % 251 for i in range(n))


@pytest.fixture
def corigin():
    o = CountingOrigin().start()
    yield o
    o.stop()


def cache_config(port, origin_port, threads=2, route_cache="", zone="{capacity: 16m, max_object: 1m}"):
    return (f"server:\n  threads: {threads}\n  grace_period: 5s\n"
            f"listeners:\n  - 127.0.0.1:{port}\n"
            f"cache:\n  zones:\n    main: {zone}\n"
            f"routes:\n  - upstream: web\n    cache:\n      zone: main\n{route_cache}"
            f"upstreams:\n  web:\n    backends:\n      - 127.0.0.1:{origin_port}\n")


def get(port, target, headers=None, method="GET", timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
    c.request(method, target, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, body)
    c.close()
    return out


@pytest.fixture
def cached(weir, corigin):
    """Starts weir with a cached route in front of the counting origin: (port, origin, weir)."""
    def start(threads=2, route_cache="", zone="{capacity: 16m, max_object: 1m}"):
        port = free_port()
        w = weir(cache_config(port, corigin.port, threads, route_cache, zone), port=port)
        return port, corigin, w
    return start


def test_miss_then_hit_with_age_and_cache_status(cached):
    port, o, _ = cached()
    t = "/a?cc=max-age%3D60&len=1500"
    st, h, b = get(port, t)
    assert st == 200 and b == body_of(1500)
    assert h["cache-status"] == "weir; fwd=miss; stored"
    for _ in range(3):
        st, h, b = get(port, t)
        assert st == 200 and b == body_of(1500)
        assert h["cache-status"].startswith("weir; hit; ttl=")
        assert int(h["age"]) >= 0 and h["content-length"] == "1500"
    assert o.count(t) == 1


def test_chunked_response_is_stored_and_served_with_its_length(cached):
    port, o, _ = cached()
    t = "/c?cc=max-age%3D60&len=100000&chunked=1"
    st, h, b = get(port, t)
    assert st == 200 and b == body_of(100000) and h.get("transfer-encoding") == "chunked"
    st, h, b = get(port, t)
    assert b == body_of(100000) and h["content-length"] == "100000"
    assert h["cache-status"].startswith("weir; hit")
    assert o.count(t) == 1


@pytest.mark.parametrize("threads", [1, 4])
def test_stampede_is_one_fetch_streamed_to_every_waiter(cached, threads):
    """40 clients at once on one key: one origin fetch, every client the whole body; the
    waiters (on other workers too) get the head before the fetch has finished."""
    port, o, _ = cached(threads=threads)
    t = "/s?cc=max-age%3D60&len=40000&chunked=1&pause=0.15&delay=0.2"
    n = 40
    results = [None] * n
    first_byte = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30 * SLOW)
        c.connect()
        barrier.wait()
        t0 = time.monotonic()
        c.request("GET", t)
        r = c.getresponse()
        first_byte[i] = time.monotonic() - t0
        results[i] = (r.status, r.getheader("Cache-Status"), r.read())
        c.close()

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    start = time.monotonic()
    for th in ts:
        th.start()
    for th in ts:
        th.join(60 * SLOW)
    total = time.monotonic() - start
    assert o.count(t) == 1
    for st, cs, b in results:
        assert st == 200 and b == body_of(40000)
    statuses = [r[1] for r in results]
    assert statuses.count("weir; fwd=miss; stored") == 1
    assert statuses.count("weir; fwd=miss; collapsed") == n - 1
    # Streaming, not store-then-serve: the slowest head came before the body was complete
    # (the fetch takes delay + 4 pauses; a waiter served only after it would wait as long).
    assert max(first_byte) < total


def test_writer_failure_hands_the_lock_to_a_waiter(cached):
    """The first fetch fails (the origin closes without answering): one waiter fetches next
    (next_writer), and the rest are served from its fetch."""
    port, o, _ = cached(route_cache="      lock_timeout: 10s\n")
    fail_t = "/f?cc=max-age%3D60&delay=0.3&drop=1"
    # The writer gets a 502; meanwhile the key's waiters queue behind it.
    res = []

    def one():
        res.append(get(port, fail_t))

    ts = [threading.Thread(target=one) for _ in range(5)]
    for th in ts:
        th.start()
        time.sleep(0.02)
    for th in ts:
        th.join(30 * SLOW)
    # Every request became the writer in turn (each failed): five fetches, one at a time, five
    # 502s, and no request was served a failure it did not fetch itself.
    assert [r[0] for r in res] == [502] * 5
    assert o.count(fail_t) == 5


def test_on_writer_failure_fetch_each(cached):
    port, o, _ = cached(route_cache="      on_writer_failure: fetch_each\n")
    t = "/fe?cc=max-age%3D60&delay=0.3&drop=1"
    res = []
    ts = [threading.Thread(target=lambda: res.append(get(port, t))) for _ in range(4)]
    for th in ts:
        th.start()
        time.sleep(0.02)
    for th in ts:
        th.join(30 * SLOW)
    assert sorted(r[0] for r in res) == [502] * 4
    assert o.count(t) == 4


def test_uncacheable_response_releases_waiters_and_passes(cached):
    port, o, _ = cached()
    t = "/u?cc=no-store&delay=0.3"
    res = []
    ts = [threading.Thread(target=lambda: res.append(get(port, t))) for _ in range(5)]
    for th in ts:
        th.start()
        time.sleep(0.02)
    for th in ts:
        th.join(30 * SLOW)
    assert [r[0] for r in res] == [200] * 5
    assert o.count(t) == 5  # waiters fetch for themselves once the response proves uncacheable
    details = sorted(r[1]["cache-status"] for r in res)
    assert "weir; fwd=miss; detail=no-store" in details
    assert "weir; fwd=miss; detail=hit-for-pass" in details
    # Within the hit-for-pass window the next burst fetches at once, unserialised.
    st, h, _ = get(port, t)
    assert h["cache-status"] == "weir; fwd=miss; detail=hit-for-pass"


def test_lock_timeout_releases_waiters(cached):
    """A writer slower than lock_timeout: its waiters stop waiting; with next_writer one takes
    the lock over and fetches (the origin sees a second fetch), and nobody waits past it."""
    port, o, _ = cached(route_cache="      lock_timeout: 300ms\n")
    t = "/lt?cc=max-age%3D60&delay=1.5"
    res = []
    t0 = time.monotonic()
    first = threading.Thread(target=lambda: res.append(("w", get(port, t))))
    first.start()
    time.sleep(0.1)
    waiter = threading.Thread(target=lambda: res.append(("x", get(port, t))))
    waiter.start()
    first.join(30 * SLOW)
    waiter.join(30 * SLOW)
    assert all(r[1][0] == 200 for r in res)
    assert o.count(t) == 2


@pytest.mark.parametrize("cc,detail", [
    ("private", "private"),
    ("no-cache", "no-cache"),
    ("max-age%3D0", "stale"),
])
def test_responses_not_stored(cached, cc, detail):
    port, o, _ = cached()
    t = f"/n?cc={cc}"
    for _ in range(2):
        st, h, _ = get(port, t)
        assert st == 200
    assert o.count(t) == 2
    assert h["cache-status"] in (f"weir; fwd=miss; detail={detail}",
                                 "weir; fwd=miss; detail=hit-for-pass")


def test_set_cookie_and_cookie_requests(cached):
    port, o, _ = cached()
    t = "/sc?cc=max-age%3D60&setcookie=1"
    get(port, t)
    get(port, t)
    assert o.count(t) == 2
    # A request with Cookie is not served a response that is not public, and not stored.
    t2 = "/ck?cc=max-age%3D60"
    st, h, _ = get(port, t2, headers={"Cookie": "a=1"})
    assert h["cache-status"] == "weir; fwd=request; detail=private request"
    get(port, t2)  # stored now
    st, h, _ = get(port, t2, headers={"Cookie": "a=1"})
    assert h["cache-status"] == "weir; fwd=request; detail=private request"
    assert o.count(t2) == 3  # the stored response is not public: fetched for the cookie
    # public: it may be served to requests with credentials
    t3 = "/pub?cc=public%2C%20max-age%3D60"
    get(port, t3)
    st, h, _ = get(port, t3, headers={"Authorization": "Bearer x"})
    assert h["cache-status"].startswith("weir; hit")
    assert o.count(t3) == 1


def test_expires_and_age_from_the_origin(cached):
    port, o, _ = cached()
    # Age beyond max-age: already stale on arrival, not stored
    t = "/ag?cc=max-age%3D10&age=20"
    get(port, t)
    get(port, t)
    assert o.count(t) == 2
    # Expires in the future, no max-age
    exp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    t2 = "/ex?expires=" + urllib.parse.quote(exp)
    get(port, t2)
    st, h, _ = get(port, t2)
    assert h["cache-status"].startswith("weir; hit")
    assert o.count(t2) == 1


def test_freshness_ends_and_the_object_is_fetched_again(cached):
    port, o, _ = cached()
    t = "/fr?cc=max-age%3D1"
    get(port, t)
    st, h, _ = get(port, t)
    assert h["cache-status"].startswith("weir; hit")
    time.sleep(2.2)
    st, h, _ = get(port, t)
    assert h["cache-status"] == "weir; fwd=stale; stored"
    assert o.count(t) == 2


def test_default_ttl_and_methods(cached):
    port, o, _ = cached(route_cache="      default_ttl: 60s\n")
    t = "/d"
    get(port, t)
    st, h, _ = get(port, t)
    assert h["cache-status"].startswith("weir; hit")
    assert o.count(t) == 1
    # POST goes through, marked
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", t, body=b"x")
    r = c.getresponse()
    r.read()
    assert r.getheader("Cache-Status") == "weir; fwd=method"
    c.close()
    assert o.count(t) == 2
    # HEAD is served from the cached GET
    st, h, b = get(port, t, method="HEAD")
    assert st == 200 and b == b"" and h["content-length"] == "1000"
    assert h["cache-status"].startswith("weir; hit")
    assert o.count(t) == 2


def test_default_ttl_does_not_make_an_error_storable(cached):
    """default_ttl is the freshness of what RFC 9111 lets a cache store without it (200, 404,
    ...), not a licence to store every status: a 503 with no freshness of its own goes up."""
    port, o, _ = cached(route_cache="      default_ttl: 60s\n")
    t = "/dt503?status=503"
    for _ in range(2):
        st, h, _ = get(port, t)
        assert st == 503 and h["cache-status"].startswith("weir; fwd=miss"), h
    assert o.count(t) == 2
    t = "/dt404?status=404"  # heuristically cacheable: stored for default_ttl
    get(port, t)
    st, h, _ = get(port, t)
    assert st == 404 and h["cache-status"].startswith("weir; hit"), h
    assert o.count(t) == 1


def test_head_miss_is_fetched_as_a_get_that_fills_the_cache(cached):
    port, o, _ = cached(threads=4)
    t = "/headmiss?cc=max-age%3D60&len=1200&delay=0.5"
    # a burst of HEADs on a cold key: one GET goes up, every HEAD is answered from it
    results = []

    def one():
        results.append(get(port, t, method="HEAD"))

    threads = [threading.Thread(target=one) for _ in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 10
    for st, h, b in results:
        assert st == 200 and b == b"", h
        assert h.get("content-length") == "1200" or h.get("transfer-encoding") == "chunked"
        assert "fwd=miss" in h["cache-status"], h["cache-status"]
    assert o.count(t) == 1
    assert [m for m, p, hd in o.heads if p == t] == ["GET"]
    # the GET's response was stored: GETs and HEADs hit it
    st, h, b = get(port, t)
    assert b == body_of(1200) and h["cache-status"].startswith("weir; hit")
    st, h, b = get(port, t, method="HEAD")
    assert h["cache-status"].startswith("weir; hit") and h["content-length"] == "1200"
    assert o.count(t) == 1


def test_head_of_an_uncacheable_key_goes_to_the_origin(cached):
    port, o, _ = cached()
    t = "/headpass?cc=no-store&len=500"
    st, h, b = get(port, t, method="HEAD")
    assert st == 200 and b == b""
    # the GET made for it was not cacheable: the HEAD went up itself, and the next too
    st, h, b = get(port, t, method="HEAD")
    assert st == 200 and "fwd=miss" in h["cache-status"]
    assert [m for m, p, hd in o.heads if p == t] == ["GET", "HEAD", "HEAD"]


def test_conditional_and_range_fields_do_not_go_up_from_the_writer(cached):
    port, o, _ = cached()
    t = "/cond?cc=max-age%3D60"
    st, h, b = get(port, t, headers={"If-None-Match": '"x"', "Range": "bytes=0-1"})
    assert st == 200 and len(b) == 1000
    sent = [hd for m, p, hd in o.heads if p == t][0]
    assert "If-None-Match" not in sent and "Range" not in sent


def test_object_larger_than_max_object_is_passed(cached):
    port, o, _ = cached(zone="{capacity: 1m, max_object: 64k}")
    t = "/big?cc=max-age%3D60&len=200000"
    st, h, b = get(port, t)
    assert b == body_of(200000)
    assert h["cache-status"] == "weir; fwd=miss; detail=too-large"
    t2 = "/bigc?cc=max-age%3D60&len=200000&chunked=1"
    st, h, b = get(port, t2)
    assert b == body_of(200000)
    st, h, b = get(port, t2)
    assert b == body_of(200000) and not h["cache-status"].startswith("weir; hit")
    assert o.count(t2) == 2


def test_memory_stays_bounded_under_a_working_set_larger_than_the_zone(cached):
    """4 MiB of distinct objects through a 1 MiB zone: RSS grows by about the zone, not the
    working set (bounded by the zone plus fixed overhead)."""
    port, o, w = cached(zone="{capacity: 1m, max_object: 128k}")
    for i in range(20):
        get(port, f"/warm{i}?cc=max-age%3D60&len=1000")
    before = w.rss_kb()
    for i in range(64):
        st, _, b = get(port, f"/ws{i}?cc=max-age%3D60&len=65536")
        assert st == 200 and len(b) == 65536
    after = w.rss_kb()
    if not SANITIZED:  # ASan's quarantine keeps freed memory: RSS says nothing there
        assert after - before < 4096, (before, after)


def test_fill_cut_short_is_not_stored(cached):
    port, o, _ = cached()
    t = "/cut?cc=max-age%3D60&len=40000&chunked=1&cut=1"
    with pytest.raises((http.client.IncompleteRead, http.client.RemoteDisconnected,
                        ConnectionError)):
        get(port, t)
    with pytest.raises((http.client.IncompleteRead, http.client.RemoteDisconnected,
                        ConnectionError)):
        get(port, t)
    assert o.count(t) == 2


def test_config_errors(tmp_path, weir):
    from conftest import check_refuses
    base = ("listeners:\n  - 127.0.0.1:1\nupstreams:\n  web:\n    backends: [127.0.0.1:2]\n")
    _, out = check_refuses(tmp_path, base + "routes:\n  - upstream: web\n    cache: {zone: nope}\n")
    assert "routes[0].cache.zone" in out and "no cache zone 'nope'" in out
    _, out = check_refuses(tmp_path, base + "cache:\n  zones:\n    main: {capacity: 1m, max_object: 2m}\n"
                        "routes:\n  - upstream: web\n    cache: {zone: main}\n")
    assert "cache.zones.main.max_object" in out and "larger than the zone's capacity" in out
    _, out = check_refuses(tmp_path, base + "cache:\n  zones:\n    main: {capacity: 1m}\n"
                        "routes:\n  - upstream: web\n    cache: {zone: main, key: [path, colour]}\n")
    assert "routes[0].cache.key[1]" in out and "colour" in out


def test_one_line_caching_proxy(weir, corigin):
    port = free_port()
    weir.cli(["proxy", "--listen", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{corigin.port}",
              "--cache", "8m", "--threads", "2"], port=port)
    t = "/cli?cc=max-age%3D60"
    st, h, _ = get(port, t)
    assert h["cache-status"] == "weir; fwd=miss; stored"
    st, h, _ = get(port, t)
    assert h["cache-status"].startswith("weir; hit")
    assert corigin.count(t) == 1


def purge(port, target):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)
    c.request("PURGE", target)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def test_purge_from_allowed_clients(cached):
    port, o, _ = cached(route_cache="      purge: [10.0.0.0/8, 127.0.0.1, '::1']\n")
    t = "/p?cc=max-age%3D60"
    get(port, t)
    assert get(port, t)[1]["cache-status"].startswith("weir; hit")
    assert purge(port, t) == 200
    assert get(port, t)[1]["cache-status"] == "weir; fwd=miss; stored"
    assert o.count(t) == 2
    assert purge(port, "/never") == 404
    assert o.count("/never") == 0


def test_purge_refused_from_others_and_passed_without_a_list(cached, weir, corigin):
    port, o, _ = cached(route_cache="      purge: [10.0.0.0/8]\n")
    t = "/p2?cc=max-age%3D60"
    get(port, t)
    assert purge(port, t) == 403
    assert get(port, t)[1]["cache-status"].startswith("weir; hit")
    port2 = free_port()
    weir(cache_config(port2, corigin.port), port=port2)
    purge(port2, t)  # no purge list: the origin gets it, as any other method
    assert [m for m, p, _ in corigin.heads if p == t].count("PURGE") == 1


def test_ranges_served_from_a_cached_object(cached):
    port, o, _ = cached()
    t = "/r?cc=max-age%3D60&len=10000"
    full = body_of(10000)
    get(port, t)
    st, h, b = get(port, t, headers={"Range": "bytes=100-199"})
    assert st == 206 and b == full[100:200]
    assert h["content-range"] == "bytes 100-199/10000" and h["content-length"] == "100"
    st, h, b = get(port, t, headers={"Range": "bytes=-50"})
    assert st == 206 and b == full[-50:]
    st, h, b = get(port, t, headers={"Range": "bytes=9990-"})
    assert st == 206 and b == full[9990:]
    st, h, b = get(port, t, headers={"Range": "bytes=9000-20000"})
    assert st == 206 and b == full[9000:] and h["content-range"] == "bytes 9000-9999/10000"
    st, h, b = get(port, t, headers={"Range": "bytes=20000-"})
    assert st == 416 and h["content-range"] == "bytes */10000" and b == b""
    st, h, b = get(port, t, headers={"Range": "bytes=5-1"})  # invalid: ignored
    assert st == 200 and b == full
    st, h, b = get(port, t, headers={"Range": "items=0-1"})
    assert st == 200 and b == full
    # several ranges: multipart/byteranges, parts in the order asked
    st, h, b = get(port, t, headers={"Range": "bytes=500-509, 0-9"})
    assert st == 206
    ct = h["content-type"]
    assert ct.startswith("multipart/byteranges; boundary=")
    boundary = ct.split("boundary=")[1].encode()
    assert int(h["content-length"]) == len(b)
    parts = [p for p in b.split(b"--" + boundary) if p not in (b"", b"--\r\n")]
    assert len(parts) == 2
    heads_bodies = [p.strip(b"\r\n").split(b"\r\n\r\n", 1) for p in parts]
    assert b"Content-Range: bytes 500-509/10000" in heads_bodies[0][0]
    assert heads_bodies[0][1] == full[500:510]
    assert b"Content-Range: bytes 0-9/10000" in heads_bodies[1][0]
    assert heads_bodies[1][1] == full[0:10]
    # too many ranges: the whole object
    many = ",".join(f"{i}-{i}" for i in range(0, 40, 2))
    st, h, b = get(port, t, headers={"Range": "bytes=" + many})
    assert st == 200 and b == full
    assert o.count(t) == 1


def test_if_range_and_client_conditionals(cached, corigin):
    port, o, _ = cached()
    # the origin's ETag and Last-Modified come through stored fields
    t = "/cond2?cc=max-age%3D60&len=3000"
    st, h, _ = get(port, t)
    # This origin sends neither ETag nor Last-Modified: If-Range never holds, conditionals miss
    st, h, b = get(port, t, headers={"Range": "bytes=0-9", "If-Range": '"abc"'})
    assert st == 200 and len(b) == 3000
    st, h, b = get(port, t, headers={"If-None-Match": '"abc"'})
    assert st == 200 and len(b) == 3000
    assert o.count(t) == 1


def test_client_conditionals_answered_from_the_cache(cached):
    port, o, _ = cached()
    lm = "Tue, 01 Dec 2026 10:00:00 GMT"
    t = "/c304?cc=max-age%3D60&etag=%22v1%22&lastmod=" + urllib.parse.quote(lm)
    get(port, t)
    st, h, b = get(port, t, headers={"If-None-Match": 'W/"v0", "v1"'})
    assert st == 304 and b == b"" and h["etag"] == '"v1"' and "content-length" not in h
    st, h, b = get(port, t, headers={"If-None-Match": '"v2"'})
    assert st == 200 and len(b) == 1000
    st, h, b = get(port, t, headers={"If-Modified-Since": lm})
    assert st == 304
    st, h, b = get(port, t, headers={"If-Modified-Since": "Mon, 30 Nov 2026 10:00:00 GMT"})
    assert st == 200
    # If-Range with the right strong ETag: the range; a date that matches too
    st, h, b = get(port, t, headers={"Range": "bytes=0-9", "If-Range": '"v1"'})
    assert st == 206 and b == body_of(1000)[:10]
    st, h, b = get(port, t, headers={"Range": "bytes=0-9", "If-Range": lm})
    assert st == 206
    st, h, b = get(port, t, headers={"Range": "bytes=0-9", "If-Range": '"v0"'})
    assert st == 200
    assert o.count(t) == 1


def test_stale_object_is_revalidated_with_its_validators(cached):
    port, o, _ = cached()
    t = "/rv?cc=max-age%3D1&etag=%22e1%22&len=2000"
    st, h, b = get(port, t)
    assert h["cache-status"] == "weir; fwd=miss; stored"
    time.sleep(2.2)
    st, h, b = get(port, t)
    # the origin said 304: the stored body, its head refreshed with the 304's fields
    assert st == 200 and b == body_of(2000)
    assert h["cache-status"].startswith("weir; fwd=stale; stored; detail=revalidated"), h
    assert h.get("x-revalidated") == "1"
    sent = [hd for m, p, hd in o.heads if p == t]
    assert sent[1].get("If-None-Match") == '"e1"'
    # fresh again: a hit
    st, h, b = get(port, t)
    assert h["cache-status"].startswith("weir; hit") and b == body_of(2000)
    assert o.count(t) == 2


def test_stale_if_error(cached):
    port, o, _ = cached()
    t = "/sie?cc=max-age%3D1%2C%20stale-if-error%3D60&len=1500"
    get(port, t)
    time.sleep(2.2)
    o.force_status = 503
    st, h, b = get(port, t)
    assert st == 200 and b == body_of(1500)
    assert h["cache-status"] == "weir; fwd=stale; detail=stale-if-error"
    # without stale-if-error the error goes through
    t2 = "/nosie?cc=max-age%3D1&len=1500"
    o.force_status = 0
    get(port, t2)
    time.sleep(2.2)
    o.force_status = 503
    st, h, b = get(port, t2)
    assert st == 503
    o.force_status = 0


def test_stale_if_error_when_the_origin_is_down(weir, tmp_path):
    o = CountingOrigin().start()
    port = free_port()
    weir(cache_config(port, o.port, route_cache="      stale_if_error: 1m\n"), port=port)
    t = "/down?cc=max-age%3D1&len=1200&close=1"  # no pooled connection left behind
    get(port, t)
    o.stop()
    time.sleep(2.2)
    st, h, b = get(port, t)
    assert st == 200 and b == body_of(1200)
    assert h["cache-status"] == "weir; fwd=stale; detail=stale-if-error"


def test_vary_keeps_a_variant_per_request_value(cached):
    port, o, _ = cached()
    t = "/v?cc=max-age%3D60&vary=Accept-Encoding&len=1111"
    h_gz = {"Accept-Encoding": "gzip"}
    h_br = {"Accept-Encoding": "br"}
    assert get(port, t, headers=h_gz)[1]["cache-status"] == "weir; fwd=miss; stored"
    assert get(port, t, headers=h_gz)[1]["cache-status"].startswith("weir; hit")
    assert get(port, t, headers=h_br)[1]["cache-status"] == "weir; fwd=miss; stored"
    assert get(port, t, headers=h_br)[1]["cache-status"].startswith("weir; hit")
    assert get(port, t)[1]["cache-status"] == "weir; fwd=miss; stored"  # identity: a variant too
    assert get(port, t)[1]["cache-status"].startswith("weir; hit")
    assert get(port, t, headers=h_gz)[1]["cache-status"].startswith("weir; hit")
    assert o.count(t) == 3
    # what went up for each variant carried its own value
    sent = [hd.get("Accept-Encoding") for m, p, hd in o.heads if p == t]
    assert sent == ["gzip", "br", "identity"]  # http.client sends identity by default


def test_vary_star_is_not_stored_and_variants_are_capped(cached):
    port, o, _ = cached(route_cache="      purge: [127.0.0.1]\n")
    t = "/vs?cc=max-age%3D60&vary=*"
    get(port, t)
    get(port, t)
    assert o.count(t) == 2
    t2 = "/vc?cc=max-age%3D60&vary=X-V"
    for i in range(20):
        st, h, _ = get(port, t2, headers={"X-V": str(i)})
        assert st == 200
        if i >= 16:
            assert h["cache-status"] == "weir; fwd=miss; detail=vary-limit"
    assert get(port, t2, headers={"X-V": "3"})[1]["cache-status"].startswith("weir; hit")
    # PURGE takes every variant with the key
    assert purge(port, t2) == 200
    assert get(port, t2, headers={"X-V": "3"})[1]["cache-status"] == "weir; fwd=miss; stored"


def test_vary_naming_a_field_many_times(cached):
    """Regression: a Vary listing one field many times with a long request value wrote the
    variance past its buffer (sized for each value once)."""
    port, o, w = cached()
    names = urllib.parse.quote(",".join(["X-Long"] * 64))
    t = f"/vrep?cc=max-age%3D60&vary={names}"
    long_value = "v" * 4000
    for _ in range(2):
        st, h, b = get(port, t, headers={"X-Long": long_value})
        assert st == 200 and b == body_of(1000)
    assert h["cache-status"].startswith("weir; hit")
    st, h, b = get(port, t, headers={"X-Long": "other"})
    assert st == 200 and h["cache-status"] == "weir; fwd=miss; stored"
    assert o.count(t) == 2
    # more than 32 distinct fields: not stored
    many = urllib.parse.quote(",".join(f"X-F{i}" for i in range(33)))
    t2 = f"/vmany?cc=max-age%3D60&vary={many}"
    st, h, b = get(port, t2)
    assert st == 200 and h["cache-status"] == "weir; fwd=miss; detail=vary-fields"
    st, h, b = get(port, t2)
    assert st == 200 and h["cache-status"] == "weir; fwd=miss; detail=hit-for-pass"
    assert o.count(t2) == 2
    assert w.alive()


def test_vary_stampede_of_one_variant_is_one_fetch(cached):
    port, o, _ = cached(threads=2)
    t = "/vst?cc=max-age%3D60&vary=Accept-Encoding&delay=0.3"
    get(port, t, headers={"Accept-Encoding": "gzip"})  # the key's index exists now
    res = []
    ts = [threading.Thread(target=lambda: res.append(get(port, t, headers={"Accept-Encoding": "br"})))
          for _ in range(10)]
    for th in ts:
        th.start()
    for th in ts:
        th.join(30 * SLOW)
    assert [r[0] for r in res] == [200] * 10
    assert o.count(t) == 2


def test_http2_streams_share_the_cache_and_its_lock(weir, corigin):
    """HTTP/2 clients: 20 streams on one connection for one uncached URL are one origin fetch
    (the streams wait on the lock like any request), each stream gets the whole body, and a
    later stream is a hit."""
    from h2_client import H2Client
    port = free_port()
    cfg = cache_config(port, corigin.port).replace(
        f"listeners:\n  - 127.0.0.1:{port}\n",
        f"listeners:\n  - address: 127.0.0.1:{port}\n    h2c: true\n")
    weir(cfg, port=port)
    t = "/h2?cc=max-age%3D60&len=30000&chunked=1&pause=0.05&delay=0.2"
    c = H2Client(port, timeout=20 * SLOW)
    sids = [c.request(t) for _ in range(20)]
    recs = [c.response(sid, timeout=30 * SLOW) for sid in sids]
    for rec in recs:
        assert rec and rec["ended"] and rec["headers"][":status"] == "200"
        assert bytes(rec["data"]) == body_of(30000)
    statuses = sorted(rec["headers"]["cache-status"] for rec in recs)
    assert statuses.count("weir; fwd=miss; stored") == 1
    assert corigin.count(t) == 1
    rec = c.response(c.request(t), timeout=10 * SLOW)
    assert rec["headers"]["cache-status"].startswith("weir; hit")
    assert rec["headers"]["content-length"] == "30000"
    c.close()


# ---- stale-while-revalidate: served stale at once, one refresh in the background ----

SWR_CC = "max-age%3D1%2C%20stale-while-revalidate%3D60"


def wait_for(pred, timeout=20):
    end = time.monotonic() + timeout * SLOW
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_stale_while_revalidate_serves_stale_and_refreshes_once(cached):
    port, o, _ = cached(threads=4)
    t = "/swr?cc=max-age%3D3%2C%20stale-while-revalidate%3D60&len=1500"
    st, h, b = get(port, t)
    assert h["x-served"] == "1" and h["cache-status"] == "weir; fwd=miss; stored"
    time.sleep(3.2)
    # The refresh takes a while (not so long that its answer arrives stale: RFC 9111 counts
    # the response delay into its age): the first stale answers cannot have waited for it.
    o.delay = 1.5
    # the first stale request is a range with a condition: neither goes to the origin
    st, h, b = get(port, t, {"Range": "bytes=0-9", "If-None-Match": '"other"'})
    assert st == 206 and b == body_of(1500)[:10] and h["x-served"] == "1"
    assert h["cache-status"].startswith("weir; hit; ttl=-")
    assert h["cache-status"].endswith("; detail=stale-while-revalidate"), h["cache-status"]
    assert int(h["age"]) >= 3
    results = []

    def one():
        results.append(get(port, t))

    threads = [threading.Thread(target=one) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 20
    for st, h, b in results:
        assert st == 200 and b == body_of(1500)
        if h["x-served"] == "1":
            assert h["cache-status"].endswith("detail=stale-while-revalidate")
        else:  # a slow machine: the refresh was stored before this request came
            assert h["x-served"] == "2" and "-" not in h["cache-status"]
    # exactly one refresh reached the origin, as a plain GET
    assert wait_for(lambda: o.count(t) == 2)
    assert wait_for(lambda: get(port, t)[1]["x-served"] == "2")
    st, h, b = get(port, t)
    assert h["cache-status"].startswith("weir; hit; ttl=") and "-" not in h["cache-status"]
    assert o.count(t) == 2
    sent = [hd for m, p, hd in o.heads if p == t]
    assert len(sent) == 2
    assert "Range" not in sent[1] and "If-None-Match" not in sent[1], sent[1]
    assert [m for m, p, hd in o.heads if p == t] == ["GET", "GET"]


def test_stale_while_revalidate_from_the_route_and_a_304_refresh(cached):
    port, o, _ = cached(route_cache="      stale_while_revalidate: 1m\n")
    # the 304 makes it fresh for an hour, so a slow (sanitized) run cannot see it go stale again
    t = '/swr304?cc=max-age%3D1&cc304=max-age%3D3600&etag=%22v1%22&len=800'
    get(port, t)
    time.sleep(2.2)
    st, h, b = get(port, t)
    assert st == 200 and b == body_of(800)
    assert h["cache-status"].endswith("detail=stale-while-revalidate")
    # the refresh asked with the stored validator and got a 304: fresh again, same body
    assert wait_for(lambda: o.count(t) == 2)
    assert wait_for(lambda: "-" not in get(port, t)[1]["cache-status"])
    st, h, b = get(port, t)
    assert b == body_of(800) and h["cache-status"].startswith("weir; hit; ttl=")
    assert int(h["cache-status"].split("ttl=")[1].split(";")[0]) > 3000  # the 304's max-age
    sent = [hd for m, p, hd in o.heads if p == t]
    assert sent[1].get("If-None-Match") == '"v1"'
    assert o.count(t) == 2


def test_stale_while_revalidate_does_not_override_must_revalidate(cached):
    port, o, _ = cached(route_cache="      stale_while_revalidate: 1m\n")
    t = "/swrmr?cc=max-age%3D1%2C%20must-revalidate&len=600"
    get(port, t)
    time.sleep(2.2)
    st, h, b = get(port, t)
    assert h["x-served"] == "2" and h["cache-status"].startswith("weir; fwd=stale; stored")
    assert o.count(t) == 2


def test_stale_while_revalidate_window_ends(cached):
    port, o, _ = cached()
    t = "/swrend?cc=max-age%3D1%2C%20stale-while-revalidate%3D1&len=600"
    get(port, t)
    time.sleep(3.2)  # past max-age + stale-while-revalidate: refreshed in the request's path
    st, h, b = get(port, t)
    assert h["x-served"] == "2" and h["cache-status"].startswith("weir; fwd=stale; stored")


def test_failed_refresh_keeps_the_stale_object_and_is_tried_again(cached):
    port, o, _ = cached()
    t = f"/swrfail?cc={SWR_CC}&len=700"
    get(port, t)
    time.sleep(2.2)
    o.force_status = 503
    st, h, b = get(port, t)
    assert st == 200 and h["x-served"] == "1"
    assert wait_for(lambda: o.count(t) == 2)
    # the refresh failed: still stale, still served; the next request tries again
    time.sleep(0.3)
    o.force_status = 0
    st, h, b = get(port, t)
    assert st == 200 and h["x-served"] == "1"
    assert h["cache-status"].endswith("detail=stale-while-revalidate")
    assert wait_for(lambda: get(port, t)[1]["x-served"] == "3")
    assert o.count(t) == 3


def test_worker_stops_with_a_refresh_in_flight(cached):
    port, o, w = cached()
    t = f"/swrstop?cc={SWR_CC}&len=700"
    get(port, t)
    time.sleep(2.2)
    o.delay = 4.0
    st, h, b = get(port, t)
    assert st == 200 and h["x-served"] == "1"
    assert wait_for(lambda: o.count(t) == 2)
    # weir stops at once: a refresh is not worth waiting for (the fixture checks exit 0 and
    # that the sanitizers found nothing to report)
    start = time.monotonic()
    assert w.stop() == 0
    assert time.monotonic() - start < 3.5 * SLOW
    w.check_clean()


def test_s_maxage_rules_out_the_routes_stale_defaults(cached):
    """s-maxage means proxy-revalidate for a shared cache (RFC 9111 5.2.2.10): the route's
    stale_while_revalidate and stale_if_error never serve such a response stale; its own
    stale-while-revalidate still does."""
    port, o, _ = cached(route_cache="      stale_while_revalidate: 1m\n      stale_if_error: 1m\n")
    t = "/sm?cc=s-maxage%3D1&len=700"
    get(port, t)
    time.sleep(2.2)
    st, h, b = get(port, t)
    assert st == 200 and h["x-served"] == "2", h
    assert h["cache-status"].startswith("weir; fwd=stale; stored"), h
    time.sleep(2.2)
    o.force_status = 503
    try:
        st, h, _ = get(port, t)
        assert st == 503, h
    finally:
        o.force_status = 0
    t = "/sm2?cc=s-maxage%3D1%2C%20stale-while-revalidate%3D60&len=700"
    get(port, t)
    time.sleep(2.2)
    st, h, b = get(port, t)
    assert b == body_of(700) and h["cache-status"].endswith("detail=stale-while-revalidate"), h


def test_a_304_that_says_must_revalidate_ends_serving_stale(cached):
    """The route serves stale while it revalidates; a 304 carrying must-revalidate refreshes
    the object, which from then on is revalidated before it is served once stale."""
    port, o, _ = cached(route_cache="      stale_while_revalidate: 1m\n")
    t = ("/mr304?cc=max-age%3D1&cc304=max-age%3D1%2C%20must-revalidate&etag=%22m1%22"
         "&len=900")
    get(port, t)
    time.sleep(2.2)
    st, h, b = get(port, t)
    assert b == body_of(900) and h["cache-status"].endswith("detail=stale-while-revalidate"), h
    assert wait_for(lambda: o.count(t) == 2)
    assert wait_for(lambda: get(port, t)[1]["cache-status"].startswith("weir; hit"))
    time.sleep(2.2)
    st, h, b = get(port, t)
    assert st == 200 and b == body_of(900), h
    assert h["cache-status"].startswith("weir; fwd=stale; stored; detail=revalidated"), h
    assert o.count(t) == 3


def test_a_304_whose_fields_overflow_max_headers(weir, corigin):
    """A 304's fields merged into the stored head would make a head of more fields than
    server.limits.max_headers: the stored body is served once with its stored head and the
    object is dropped, not refreshed into a head that overflows what serves it."""
    port = free_port()
    cfg = cache_config(port, corigin.port).replace(
        "  grace_period: 5s\n", "  grace_period: 5s\n  limits:\n    max_headers: 100\n")
    weir(cfg, port=port)
    t = "/many?cc=max-age%3D1&etag=%22x1%22&xf=85&xf304=85&len=1300"
    st, h, b = get(port, t)
    assert st == 200 and h["cache-status"] == "weir; fwd=miss; stored", h
    time.sleep(2.2)
    st, h, b = get(port, t)
    assert st == 200 and b == body_of(1300), h
    assert "x-f84" in h and "x-g0" not in h, h
    st, h, b = get(port, t)  # dropped: fetched again in full
    assert st == 200 and b == body_of(1300) and h["x-served"] == "3", h
    assert corigin.count(t) == 3
