"""Active health checks: a backend whose health endpoint fails is taken out of rotation after
`fall` checks and brought back after `rise`, while a well-behaved client keeps getting 200s;
TCP checks notice a backend that stopped listening; body matching; config errors.
"""
import http.client
import time

import pytest

from conftest import SANITIZED, check_refuses, free_port, wait_for
from origin import HealthOrigin

SLOW = 3 if SANITIZED else 1


def start(weir, backends, check, extra=""):
    port = free_port()
    lines = "".join(f"      - 127.0.0.1:{o.port}\n" for o in backends)
    cfg = (f"server:\n  threads: 2\n  grace_period: 5s\n  log_level: warn\n"
           f"listeners:\n  - 127.0.0.1:{port}\n"
           f"routes:\n  - upstream: backend\n"
           f"upstreams:\n  backend:\n{extra}    health_check:\n{check}    backends:\n{lines}")
    return weir(cfg, port=port), port


def get_ok(port, n, tag):
    """n GETs on one connection; returns how many got 200."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ok = 0
    for i in range(n):
        c.request("GET", f"/{tag}/{i}")
        r = c.getresponse()
        r.read()
        ok += r.status == 200
    c.close()
    return ok


HTTP_CHECK = ("      path: /health\n      interval: 100ms\n      timeout: 100ms\n"
              "      rise: 2\n      fall: 2\n")


def test_failing_backend_out_and_back(weir, origins):
    a, b = origins(2, HealthOrigin)
    w, port = start(weir, [a, b], HTTP_CHECK)
    assert wait_for(lambda: a.checks >= 2 and b.checks >= 2, 5 * SLOW)
    assert get_ok(port, 40, "both") == 40
    assert a.requests and b.requests
    # a starts failing its checks: after `fall` of them it gets no traffic, and no client
    # request fails meanwhile (its real responses are still fine).
    a.health_status = 503
    checks = a.checks
    assert wait_for(lambda: a.checks >= checks + 3, 5 * SLOW)
    time.sleep(0.3 * SLOW)
    a.requests.clear()
    b.requests.clear()
    assert get_ok(port, 40, "b-only") == 40
    assert not a.requests and len(b.requests) == 40
    assert "backend 127.0.0.1:%d is down" % a.port in w.stderr()
    # And back after `rise` passing checks.
    a.health_status = 200
    checks = a.checks
    assert wait_for(lambda: a.checks >= checks + 3, 5 * SLOW)
    time.sleep(0.3 * SLOW)
    assert get_ok(port, 40, "again") == 40
    assert a.requests
    assert "backend 127.0.0.1:%d is up" % a.port in w.stderr()


def test_expect_status_and_body(weir, origins):
    a, b = origins(2, HealthOrigin)
    a.health_body = b"degraded\n"  # status fine, body wrong
    b.health_status = 204
    b.health_body = b""
    check = HTTP_CHECK + "      expect_status: [200, \"204-204\"]\n      expect_body: ok\n"
    w, port = start(weir, [a, b], check)
    # b answers 204 with no body: the status passes, the body check fails it too.
    assert wait_for(lambda: "is down" in w.stderr() and w.stderr().count("is down") >= 2,
                    5 * SLOW), w.stderr()
    b.health_status = 200
    b.health_body = b"all ok\n"
    assert wait_for(lambda: "backend 127.0.0.1:%d is up" % b.port in w.stderr(), 5 * SLOW)
    time.sleep(0.2 * SLOW)
    a.requests.clear()
    assert get_ok(port, 20, "x") == 20
    assert not a.requests and len(b.requests) == 20


def test_all_down_fail_closed_then_open(weir, origins):
    (a,) = origins(1, HealthOrigin)
    a.health_status = 500
    w, port = start(weir, [a], HTTP_CHECK)
    assert wait_for(lambda: "is down" in w.stderr(), 5 * SLOW)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/x")
    r = c.getresponse()
    r.read()
    assert r.status == 503
    c.close()


def test_all_down_fail_open(weir, origins):
    (a,) = origins(1, HealthOrigin)
    a.health_status = 500
    w, port = start(weir, [a], HTTP_CHECK, extra="    fail_open: true\n")
    assert wait_for(lambda: "is down" in w.stderr(), 5 * SLOW)
    assert get_ok(port, 5, "open") == 5



@pytest.mark.parametrize("fail_open", [False, True])
def test_every_backend_failing_checks(weir, origins, fail_open):
    """docs/CONFIG.md fail_open: when no backend is usable because every one fails its active
    checks, false answers 503 at once (no backend sees the request), true still sends requests
    to them, spread over both. Only active health is at play (their real responses are fine,
    so nothing is ejected passively). Catches fail_open ignored either way, and a fail-open
    path that only looks at passive ejection."""
    a, b = origins(2, HealthOrigin)
    a.health_status = b.health_status = 500
    w, port = start(weir, [a, b], HTTP_CHECK,
                    extra=f"    fail_open: {str(fail_open).lower()}\n")
    down = [f"backend 127.0.0.1:{o.port} is down" for o in (a, b)]
    assert wait_for(lambda: all(d in w.stderr() for d in down), 5 * SLOW), w.stderr()
    a.requests.clear()
    b.requests.clear()
    statuses = []
    for i in range(10):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", f"/all-down/{i}")
        r = c.getresponse()
        r.read()
        c.close()
        statuses.append(r.status)
    if fail_open:
        assert statuses == [200] * 10, statuses
        assert len(a.requests) + len(b.requests) == 10 and a.requests and b.requests
    else:
        assert statuses == [503] * 10, statuses
        assert not a.requests and not b.requests
    assert "ejected" not in w.stderr()


def test_tcp_check_notices_stopped_backend(weir, origins):
    a, b = origins(2, HealthOrigin)
    check = "      type: tcp\n      interval: 100ms\n      timeout: 100ms\n      fall: 1\n"
    w, port = start(weir, [a, b], check, extra="    max_fails: 0\n")
    assert get_ok(port, 10, "warm") == 10
    a.stop()  # nothing listens on a's port any more
    assert wait_for(lambda: "backend 127.0.0.1:%d is down" % a.port in w.stderr(), 5 * SLOW)
    # Passive ejection is off (max_fails: 0) and no retries are configured: only the health
    # check keeps clients away from the dead backend.
    assert get_ok(port, 30, "after") == 30


def test_health_checks_are_bounded_in_time(weir, origins):
    """A backend that accepts and never answers fails its checks by timeout."""
    a, b = origins(2, HealthOrigin)
    slow_check = ("      path: /slow/5000\n      interval: 200ms\n      timeout: 100ms\n"
                  "      fall: 1\n")
    w, port = start(weir, [a, b], slow_check)
    assert wait_for(lambda: w.stderr().count("is down") >= 2, 5 * SLOW)
    assert "timed out" in w.stderr()


@pytest.mark.parametrize("bad,msg", [
    ("      interval: 1s\n      timeout: 2s\n", "timeout must not be longer than interval"),
    ("      expect_status: 700\n", "expected a status (200) or a range"),
    ("      expect_status: [200-100]\n", "expected a status (200) or a range"),
    ("      type: tcp\n      path: /x\n", "type: tcp only connects"),
    ("      path: health\n", "expected a path starting with /"),
    ("      method: POST\n", "expected one of GET, HEAD"),
    ("      rise: 0\n", "between 1 and 100"),
])
def test_bad_health_config_refused(tmp_path, bad, msg):
    _, err = check_refuses(tmp_path, "listeners: [127.0.0.1:1]\nroutes: [{upstream: u}]\n"
                           f"upstreams:\n  u:\n    health_check:\n{bad}    backends: [127.0.0.1:2]\n")
    assert msg in err, err
