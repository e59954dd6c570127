"""examples/cache_hooks: a caching proxy programmed through the cache hooks, run as built
(WEIR_EXAMPLES_DIR) in front of an origin of this file that counts what it is asked.

The origin answers every GET with "<path> tenant=<X-Tenant> n=<how many times this target was
asked>" and takes what else to send from the query string: cc (Cache-Control) and nocache=1
(X-No-Cache: 1). Without cc a response has no freshness information at all (no Cache-Control,
Expires or Last-Modified). Each test starts its own proxy (weir.cli(..., binary=...)), so the
fixture checks that it exits 0 on SIGTERM and prints no sanitizer report.
"""
import http.client
import http.server
import os
import re
import signal
import socketserver
import subprocess
import threading
import urllib.parse

import pytest

from conftest import EXAMPLES_DIR, free_port, wait_for

TIMEOUT = 10  # seconds, for every client call


def example(name):
    path = os.path.join(EXAMPLES_DIR, name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"example {name} is not built: {path}")
    return path


class CountingOrigin:
    """A threaded HTTP/1.1 origin on 127.0.0.1 (ephemeral port) counting requests by target."""

    def __init__(self):
        self.counts = {}
        self.methods = []  # (method, target) of every request, in order
        self.lock = threading.Lock()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                with origin.lock:
                    n = origin.counts[self.path] = origin.counts.get(self.path, 0) + 1
                    origin.methods.append((self.command, self.path))
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                tenant = self.headers.get("X-Tenant", "-")
                body = f"{url.path} tenant={tenant} n={n}\n".encode()
                self.send_response(200)
                if "cc" in q:
                    self.send_header("Cache-Control", q["cc"])
                if q.get("nocache") == "1":
                    self.send_header("X-No-Cache", "1")
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT)

    def count(self, target):
        with self.lock:
            return self.counts.get(target, 0)

    def total(self):
        with self.lock:
            return sum(self.counts.values())


@pytest.fixture
def counting_origin():
    o = CountingOrigin().start()
    yield o
    o.stop()


@pytest.fixture
def proxy(weir, counting_origin):
    """Starts cache_hooks in front of counting_origin: (port, origin, the Weir process)."""
    port = free_port()
    w = weir.cli(["--listen", f"127.0.0.1:{port}", "--upstream",
                  f"127.0.0.1:{counting_origin.port}", "--capacity", "4m", "--threads", "2"],
                 port=port, binary=example("cache_hooks"))
    return port, counting_origin, w


def get(port, target, headers=None, method="GET"):
    """One request on a new connection: (status, headers with lower-cased names, body text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        c.request(method, target, headers=headers or {})
        r = c.getresponse()
        body = r.read().decode()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


def cache_status(h):
    return h.get("cache-status", "")


def hit_ttl(h):
    """The ttl of a hit's Cache-Status ("weir; hit; ttl=N"), asserting it is a hit."""
    m = re.match(r"weir; hit; ttl=(\d+)$", cache_status(h))
    assert m, h
    return int(m.group(1))


def test_help_exits_zero_and_bad_arguments_exit_two():
    out = subprocess.run([example("cache_hooks"), "--help"], capture_output=True,
                         timeout=TIMEOUT)
    assert out.returncode == 0 and b"--upstream" in out.stdout
    for args in (["--listen", "127.0.0.1:1"],
                 ["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2", "--capacity", "0"],
                 ["--listen", "127.0.0.1:1", "--upstream", "nowhere"]):
        out = subprocess.run([example("cache_hooks")] + args, capture_output=True,
                             timeout=TIMEOUT)
        assert out.returncode == 2, (args, out.stderr)


def test_static_without_freshness_is_stored_for_an_hour(proxy):
    port, origin, _ = proxy
    status, h1, b1 = get(port, "/static/x")
    assert status == 200 and b1 == "/static/x tenant=- n=1\n"
    assert cache_status(h1) == "weir; fwd=miss; stored", h1
    status, h2, b2 = get(port, "/static/x")
    assert status == 200 and b2 == b1
    assert cache_status(h2).startswith("weir; hit"), h2
    assert 3590 <= hit_ttl(h2) <= 3600  # the hook's hour, not a default
    assert origin.count("/static/x") == 1
    # The same response elsewhere has no lifetime and is not stored (the default policy).
    for _ in range(2):
        status, h, _ = get(port, "/api/x")
        assert status == 200 and not cache_status(h).startswith("weir; hit"), h
    assert origin.count("/api/x") == 2


def test_static_keeps_the_freshness_the_origin_gave(proxy):
    port, origin, _ = proxy
    # An explicit lifetime is the origin's, not an hour.
    get(port, "/static/m?cc=max-age=60")
    _, h, _ = get(port, "/static/m?cc=max-age=60")
    assert 50 <= hit_ttl(h) <= 60
    # max-age=0 (fresh for no time) and no-store are not turned into an hour.
    for target in ("/static/z?cc=max-age=0", "/static/n?cc=no-store"):
        for _ in range(2):
            status, h, _ = get(port, target)
            assert status == 200 and not cache_status(h).startswith("weir; hit"), (target, h)
        assert origin.count(target) == 2, target


def test_api_tenants_never_share_an_object(proxy):
    port, origin, _ = proxy
    target = "/api/x?cc=max-age=60"
    seen = []
    for tenant in ("a", "b", "a", "b"):
        status, h, body = get(port, target, {"X-Tenant": tenant})
        assert status == 200
        seen.append((body, cache_status(h)))
    # The origin counts by target, whoever asks: a's fetch is its first, b's its second.
    # Each tenant's second request is a hit on its own object: its own body again.
    assert [b for b, _ in seen] == ["/api/x tenant=a n=1\n", "/api/x tenant=b n=2\n",
                                    "/api/x tenant=a n=1\n", "/api/x tenant=b n=2\n"], seen
    assert [c.startswith("weir; hit") for _, c in seen] == [False, False, True, True], seen
    assert origin.count(target) == 2
    # No X-Tenant is a tenant of its own, and another query another object.
    status, h, body = get(port, target)
    assert body.startswith("/api/x tenant=- ") and not cache_status(h).startswith("weir; hit")
    status, h, body = get(port, "/api/x?cc=max-age=60&p=2", {"X-Tenant": "a"})
    assert body.startswith("/api/x tenant=a ") and not cache_status(h).startswith("weir; hit")
    assert origin.count(target) == 3


def test_other_paths_are_never_cached(proxy):
    port, origin, _ = proxy
    # Cacheable responses, but not under /static/ or /api/: no lookup, no Cache-Status.
    for target in ("/other?cc=max-age=60", "/static?cc=max-age=60", "/apix/y?cc=max-age=60",
                   "/x/static/y"):
        for i in range(3):
            status, h, body = get(port, target)
            assert status == 200 and body.endswith(f"n={i + 1}\n"), (target, body)
            assert "cache-status" not in h, (target, h)
        assert origin.count(target) == 3, target


def test_x_no_cache_from_the_origin_is_not_stored(proxy):
    port, origin, _ = proxy
    # /static/ without freshness would be stored for an hour; /api/ has max-age=60.
    for target in ("/static/nc?nocache=1", "/api/nc?nocache=1&cc=max-age=60"):
        statuses = []
        for i in range(3):
            status, h, body = get(port, target)
            assert status == 200 and body.endswith(f"n={i + 1}\n"), (target, body)
            statuses.append(cache_status(h))
        assert origin.count(target) == 3, target
        assert statuses[0] == "weir; fwd=miss; detail=x-no-cache", statuses
        assert all(s.startswith("weir; fwd=miss") and "stored" not in s for s in statuses), \
            statuses
    # X-No-Cache: 0 is no such order: stored.
    get(port, "/static/nc0?nocache=0")
    _, h, _ = get(port, "/static/nc0?nocache=0")
    assert cache_status(h).startswith("weir; hit"), h


def test_x_refresh_fetches_and_replaces_the_stored_object(proxy):
    port, origin, _ = proxy
    target = "/static/r"
    assert get(port, target)[2].endswith("n=1\n")
    _, h, body = get(port, target, {"X-Refresh": "0"})  # only "1" refreshes
    assert cache_status(h).startswith("weir; hit") and body.endswith("n=1\n"), (h, body)
    _, h, body = get(port, target, {"X-Refresh": "1"})
    assert body.endswith("n=2\n"), body
    assert cache_status(h) == "weir; fwd=miss; stored", h
    assert origin.count(target) == 2
    _, h, body = get(port, target)  # the new response replaced the old one
    assert cache_status(h).startswith("weir; hit") and body.endswith("n=2\n"), (h, body)
    assert origin.count(target) == 2


def test_a_stale_object_is_fetched_again(proxy):
    """cache_hit_filter answers SERVE only for a fresh object: a stale one is not served as
    if it were fresh (SERVE would make it so)."""
    port, origin, _ = proxy
    target = "/api/s?cc=max-age=1"
    assert get(port, target, {"X-Tenant": "a"})[2].endswith("n=1\n")
    last = {}

    def refetched():
        last["r"] = get(port, target, {"X-Tenant": "a"})
        return origin.count(target) >= 2

    assert wait_for(refetched, 4), last  # fresh for at most a second, then fetched
    assert last["r"][2].endswith("n=2\n"), last


def summary(w):
    """Stops w with SIGTERM (it must exit 0) and returns the counts it printed: [requests,
    requests through the cache, misses, misses in background sessions]."""
    assert w.stop(signal.SIGTERM) == 0, w.stderr()
    m = re.search(r"cache_hooks: (\d+) requests \((\d+) through the cache\), (\d+) misses "
                  r"\((\d+) in background sessions\)", w.stderr())
    assert m, w.stderr()
    return [int(g) for g in m.groups()]


def test_sigterm_exits_zero_and_prints_the_miss_count(proxy):
    port, origin, w = proxy
    steps = [("/static/a", {}),                            # miss
             ("/static/a", {}),                            # hit
             ("/static/a", {"X-Refresh": "1"}),            # miss (forced)
             ("/other", {}),                               # not cached: no miss
             ("/api/t?cc=max-age=60", {"X-Tenant": "a"}),  # miss
             ("/api/t?cc=max-age=60", {"X-Tenant": "a"}),  # hit
             ("/api/t?cc=max-age=60", {"X-Tenant": "b"}),  # miss
             ("/static/nc?nocache=1", {}),                 # miss, not stored
             ("/static/nc?nocache=1", {})]                 # a pass (hit-for-pass): a miss
    fetched = 0
    for target, headers in steps:
        status, h, _ = get(port, target, headers)
        assert status == 200
        fetched += cache_status(h).startswith("weir; fwd=")
    assert fetched == 6
    # Every request through the cache that reached the origin was a miss, /other aside.
    assert origin.total() - origin.count("/other") == fetched
    assert summary(w) == [len(steps), len(steps) - 1, fetched, 0], w.stderr()


def test_a_background_fetch_is_not_counted_as_a_request(proxy):
    """A HEAD that misses is fetched as a GET by a background session and answered from its
    fill: one client request is counted, and the one miss is the background session's."""
    port, origin, w = proxy
    status, h, body = get(port, "/static/h", method="HEAD")
    assert status == 200 and body == "" and cache_status(h).startswith("weir; fwd=miss"), h
    assert wait_for(lambda: origin.total() == 1, 2), origin.methods
    assert origin.methods == [("GET", "/static/h")]
    assert summary(w) == [1, 1, 1, 1], (origin.methods, w.stderr())
