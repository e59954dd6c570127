"""Signals: SIGTERM/SIGQUIT drain in-flight requests within server.grace_period, SIGINT stops at
once; the pid file lives exactly as long as the process."""
import http.client
import signal
import socket
import time

import pytest

from conftest import SANITIZED, free_port, proxy_config, run_in_thread

SLACK = 6.0 if SANITIZED else 3.0


def config(port, origin_port, pid_file=None, grace="10s", extra=""):
    text = proxy_config(port, [origin_port], server_extra=extra)
    text = text.replace("  grace_period: 10s\n", f"  grace_period: {grace}\n")
    if pid_file:
        text = text.replace("server:\n", f"server:\n  pid_file: {pid_file}\n", 1)
    return text


def get(port, path, timeout=20):
    """One GET on its own connection: (status, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def wait_exit(w, timeout):
    """Waits for weir to exit; returns (exit code, seconds waited)."""
    start = time.monotonic()
    rc = w.wait(timeout)
    return rc, time.monotonic() - start


def probe_new_connection(port, limit):
    """Opens a connection and sends a request: returns (outcome, seconds) where outcome is
    'refused' (connect failed), 'closed' (closed or reset without a 200), 'served' (a 200
    answer) or 'hung' (nothing happened within limit seconds)."""
    start = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=limit)
    except OSError:
        return "refused", time.monotonic() - start
    with s:
        try:
            s.settimeout(limit)
            s.sendall(b"GET /new HTTP/1.1\r\nHost: t\r\n\r\n")
            data = s.recv(65536)
        except socket.timeout:
            return "hung", time.monotonic() - start
        except OSError:
            return "closed", time.monotonic() - start
        took = time.monotonic() - start
        return ("served" if data.startswith(b"HTTP/1.1 200") else "closed"), took


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT], ids=["SIGTERM", "SIGQUIT"])
def test_graceful_signal_finishes_in_flight_request(weir, origin, sig):
    port = free_port()
    pid_file = weir.tmp_path / "weir.pid"
    # One worker: the in-flight request and the new connection meet the same listener.
    text = config(port, origin.port, pid_file=pid_file).replace("threads: 2", "threads: 1")
    w = weir(text, port=port)
    wait_for(pid_file.exists, what="the pid_file")  # written just after the listeners open
    assert pid_file.read_text().strip() == str(w.pid)

    t, res = run_in_thread(get, port, "/slow/1500")
    wait_for(lambda: any(r.target == "/slow/1500" for r in origin.requests),
             what="the slow request to reach the origin")
    sent = time.monotonic()
    w.send_signal(sig)
    time.sleep(0.1)
    assert pid_file.exists(), "pid_file removed while weir still drains"
    # A connection opened after the signal, while the in-flight request is still drained.
    probe = probe_new_connection(port, 1.0)

    t.join(20)
    assert "error" not in res, f"the in-flight request failed: {res.get('error')!r}"
    assert res["value"] == (200, b"slow")
    rc, _ = wait_exit(w, 10 + SLACK)
    took = time.monotonic() - sent
    assert rc == 0, w.stderr()
    assert took < 1.5 + SLACK, f"weir took {took:.1f}s to exit after draining"
    assert not pid_file.exists(), "pid_file was not removed at exit"
    # New connections after the signal are not served: refused, or closed without an answer,
    # promptly -- not left in the accept queue until the drain ends.
    assert not any(r.target == "/new" for r in origin.requests)
    assert probe[0] in ("refused", "closed"), (
        f"a connection opened after the signal was {probe[0]} (after {probe[1]:.2f}s): "
        "new connections must be refused or closed at once while weir drains")


def test_sigterm_with_idle_keepalive_client_exits_promptly(weir, origin):
    port = free_port()
    w = weir(config(port, origin.port, extra="  timeouts:\n    client_keepalive: 60s\n"),
             port=port)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/one")
    r = c.getresponse()
    assert r.status == 200
    r.read()
    # The connection now idles in keep-alive; SIGTERM must not wait for its 60s timeout.
    w.send_signal(signal.SIGTERM)
    rc, took = wait_exit(w, 10 + SLACK)
    assert rc == 0, w.stderr()
    assert took < SLACK, f"weir waited {took:.1f}s on an idle keep-alive connection"
    s = c.sock
    s.settimeout(2)
    try:
        assert s.recv(1) == b"", "the idle connection was not closed"
    except ConnectionResetError:
        pass
    c.close()


def test_grace_period_shorter_than_slow_request(weir, origin):
    port = free_port()
    w = weir(config(port, origin.port, grace="1s"), port=port)
    t, res = run_in_thread(get, port, "/slow/5000")
    wait_for(lambda: any(r.target == "/slow/5000" for r in origin.requests),
             what="the slow request to reach the origin")
    w.send_signal(signal.SIGTERM)
    rc, took = wait_exit(w, 10 + SLACK)
    assert rc == 0, w.stderr()
    assert took >= 0.8, f"weir exited after {took:.2f}s, before the 1s grace period"
    assert took < 1.0 + SLACK, f"weir exited after {took:.1f}s with grace_period: 1s"
    t.join(10)
    assert "value" not in res, f"the request outlived the grace period: {res.get('value')!r}"
    assert isinstance(res.get("error"), (http.client.HTTPException, OSError)), res


def test_sigint_exits_at_once_with_request_in_flight(weir, origin):
    port = free_port()
    pid_file = weir.tmp_path / "weir.pid"
    w = weir(config(port, origin.port, pid_file=pid_file, grace="30s"), port=port)
    wait_for(pid_file.exists, what="the pid_file")
    t, res = run_in_thread(get, port, "/slow/5000")
    wait_for(lambda: any(r.target == "/slow/5000" for r in origin.requests),
             what="the slow request to reach the origin")
    w.send_signal(signal.SIGINT)
    rc, took = wait_exit(w, 10 + SLACK)
    assert rc == 0, w.stderr()
    assert took < 1.0 + SLACK / 2, f"SIGINT took {took:.1f}s"
    t.join(10)
    assert "value" not in res, f"SIGINT let the slow request finish: {res.get('value')!r}"
    assert not pid_file.exists(), "pid_file was not removed at exit"
