"""The example proxies under examples/, run as built (WEIR_EXAMPLES_DIR) in front of real origins.

Each example is started with weir.cli(..., binary=...), so the fixture checks that it exits 0
on SIGTERM and prints no sanitizer report.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import EXAMPLES_DIR, free_port
from origin import HealthOrigin


def example(name):
    path = os.path.join(EXAMPLES_DIR, name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"example {name} is not built: {path}")
    return path


def get(port, path, headers=None, conn=None):
    """One GET; returns (status, headers as a lower-cased dict, body bytes)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        if conn is None:
            c.close()


def dead_port():
    """A loopback port nothing listens on: connecting to it is refused."""
    return free_port()


# ---- load_balancer ----

def test_load_balancer_help_exits_zero():
    out = subprocess.run([example("load_balancer"), "--help"], capture_output=True, timeout=10)
    assert out.returncode == 0 and b"--to" in out.stdout


def test_load_balancer_round_robin_spreads_evenly(weir, origins):
    os_ = origins(3)
    port = free_port()
    to = ",".join(f"127.0.0.1:{o.port}" for o in os_)
    weir.cli(["--listen", f"127.0.0.1:{port}", "--to", to, "--threads", "1"], port=port,
             binary=example("load_balancer"))
    for i in range(9):
        status, _, _ = get(port, f"/rr/{i}")
        assert status == 200
    assert [len(o.requests) for o in os_] == [3, 3, 3]


def test_load_balancer_retries_a_refusing_backend_on_the_next(weir, origins):
    a, c = origins(2)
    port = free_port()
    to = f"127.0.0.1:{a.port},127.0.0.1:{dead_port()},127.0.0.1:{c.port}"
    weir.cli(["--listen", f"127.0.0.1:{port}", "--to", to, "--threads", "1"], port=port,
             binary=example("load_balancer"))
    for i in range(9):
        status, _, _ = get(port, f"/retry/{i}")
        assert status == 200
    # The dead backend's turns went to the one after it.
    assert (len(a.requests), len(c.requests)) == (3, 6)


def test_load_balancer_all_backends_dead_gives_502(weir):
    port = free_port()
    to = f"127.0.0.1:{dead_port()},127.0.0.1:{dead_port()}"
    weir.cli(["--listen", f"127.0.0.1:{port}", "--to", to, "--threads", "1"], port=port,
             binary=example("load_balancer"))
    status, _, _ = get(port, "/")
    assert status == 502


# ---- gateway ----

TOKEN = "s3cret-token"


@pytest.fixture
def gateway(weir, origins):
    api, static = origins(2)
    port = free_port()
    weir.cli(["--listen", f"127.0.0.1:{port}", "--token", TOKEN,
              "--route", f"/api=127.0.0.1:{api.port}",
              "--route", f"/static=127.0.0.1:{static.port}",
              "--route", f"/api/v2=127.0.0.1:{static.port}",
              "--threads", "2"], port=port, binary=example("gateway"))
    return port, api, static


def test_gateway_rejects_missing_or_wrong_token_with_403(gateway):
    port, api, static = gateway
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        status, _, body = get(port, "/api/users", headers)
        assert status == 403, headers
        assert b"token" in body
    assert api.requests == [] and static.requests == []


def test_gateway_routes_by_longest_prefix_and_strips_credentials(gateway):
    port, api, static = gateway
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Gateway": "forged"}
    status, _, body = get(port, "/api/users?id=1", auth)
    assert status == 200 and json.loads(body)["target"] == "/api/users?id=1"
    status, _, _ = get(port, "/static/logo.png", auth)
    assert status == 200
    status, _, _ = get(port, "/api/v2/items", auth)  # longer prefix: the static origin
    assert status == 200
    assert [r.target for r in api.requests] == ["/api/users?id=1"]
    assert [r.target for r in static.requests] == ["/static/logo.png", "/api/v2/items"]
    for r in api.requests + static.requests:
        assert r.header("authorization") is None
        gw = [v for k, v in r.headers if k.lower() == "x-gateway"]
        assert gw == ["weir"]


def test_gateway_unrouted_path_gets_404(gateway):
    port, api, static = gateway
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/other", "/apix"):  # a prefix ends at a path segment
        status, _, _ = get(port, path, auth)
        assert status == 404, path
    assert api.requests == [] and static.requests == []


# ---- ctx_counter ----

def test_ctx_counter_counts_requests_and_beta_users(weir, origins):
    main, beta = origins(2)
    port = free_port()
    weir.cli(["--listen", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{main.port}",
              "--beta-to", f"127.0.0.1:{beta.port}", "--threads", "2"], port=port,
             binary=example("ctx_counter"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    counts = []
    betas = []
    for i in range(6):
        headers = {"X-Beta-User": "1"} if i % 3 == 0 else {}
        status, h, _ = get(port, f"/c/{i}", headers, conn=conn)
        assert status == 200
        counts.append(int(h["x-request-count"]))
        betas.append(h["x-beta"])
    conn.close()
    assert counts == list(range(counts[0], counts[0] + 6))
    assert betas == ["yes", "no", "no", "yes", "no", "no"]
    assert [r.target for r in beta.requests] == ["/c/0", "/c/3"]
    assert len(main.requests) == 4


def test_ctx_counter_logs_one_line_per_request(weir, origin):
    port = free_port()
    w = weir.cli(["--listen", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{origin.port}",
                  "--threads", "1"], port=port, binary=example("ctx_counter"))
    for i in range(3):
        assert get(port, f"/log/{i}")[0] == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and w.stderr().count("ctx_counter: #") < 3:
        time.sleep(0.05)
    lines = [line for line in w.stderr().splitlines() if "ctx_counter: #" in line]
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert f"GET /log/{i} -> 200 beta=no" in line


# ---- async_check ----

def start_async(weir, origin, delay_ms, threads=1):
    port = free_port()
    weir.cli(["--listen", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{origin.port}",
              "--delay-ms", str(delay_ms), "--threads", str(threads)], port=port,
             binary=example("async_check"))
    return port


def test_async_check_waits_then_proxies(weir, origin):
    port = start_async(weir, origin, 300)
    t0 = time.monotonic()
    status, _, _ = get(port, "/allowed")
    elapsed = time.monotonic() - t0
    assert status == 200
    # t0 is before the request reached weir, and a timer never fires before its delay has
    # passed (the loop reads the precise clock and rounds the deadline up), so no allowance.
    assert elapsed >= 0.300
    assert [r.target for r in origin.requests] == ["/allowed"]


def test_async_check_denies_without_reaching_the_origin(weir, origin):
    port = start_async(weir, origin, 100)
    status, _, body = get(port, "/admin/deny/this")
    assert status == 403 and b"Denied" in body
    assert get(port, "/fine")[0] == 200
    assert [r.target for r in origin.requests] == ["/fine"]


def test_async_check_suspended_requests_wait_together(weir, origin):
    delay_ms, n = 500, 20
    port = start_async(weir, origin, delay_ms, threads=1)
    results = [None] * n

    def one(i):
        results[i] = get(port, f"/many/{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    assert all(r is not None and r[0] == 200 for r in results)
    # Serially this would take n * delay; one thread waiting on them all together takes ~1.
    assert elapsed < n * delay_ms / 1000 / 2
    assert max(int(r[1]["x-suspended-peak"]) for r in results) >= 2
    assert len(origin.requests) == n


def test_async_check_client_gone_while_suspended(weir, origin):
    """A client that hangs up during the wait: the timer still resumes the session cleanly."""
    port = start_async(weir, origin, 200)
    for path in ("/gone", "/deny/gone"):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.close()
    time.sleep(0.5)
    assert get(port, "/after")[0] == 200


def test_async_check_sigterm_lets_a_suspended_request_finish(weir, origin):
    port = free_port()
    w = weir.cli(["--listen", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{origin.port}",
                  "--delay-ms", "1500", "--threads", "1"], port=port,
                 binary=example("async_check"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/draining")
    time.sleep(0.5)  # accepted long since, and still waiting on its timer
    w.send_signal(signal.SIGTERM)
    r = conn.getresponse()
    assert r.status == 200 and r.read()
    conn.close()
    assert w.wait() == 0
    assert "at most 1 requests were suspended at once" in w.stderr()
    assert [r.target for r in origin.requests] == ["/draining"]


# ---- sticky (weir/lb.h from the public API) ----

def test_sticky_same_key_same_backend_and_health(weir):
    backends = [HealthOrigin() for _ in range(3)]
    for o in backends:
        o.start()
    try:
        port = free_port()
        to = ",".join(f"127.0.0.1:{o.port}" for o in backends)
        w = weir.cli(["--listen", f"127.0.0.1:{port}", "--to", to, "--health", "/health",
                      "--threads", "2"], port=port, binary=example("sticky"))
        users = [f"user-{i}" for i in range(60)]

        def placement():
            where = {}
            for u in users:
                for _ in range(2):  # twice each: the same backend both times
                    status, _, _ = get(port, f"/u/{u}", {"X-User": u})
                    assert status == 200
            for i, o in enumerate(backends):
                for r in o.requests:
                    where.setdefault(r.target, set()).add(i)
                o.requests.clear()
            assert all(len(v) == 1 for v in where.values())
            return {t: v.pop() for t, v in where.items()}

        before = placement()
        assert set(before.values()) == {0, 1, 2}
        # Backend 1 fails its checks: only its keys move; the others stay where they were.
        backends[1].health_status = 503
        deadline = time.monotonic() + 15
        while "is down" not in w.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "is down" in w.stderr()
        after = placement()
        for t, b in before.items():
            if b != 1:
                assert after[t] == b, t
            else:
                assert after[t] != 1, t
    finally:
        for o in backends:
            o.stop()
