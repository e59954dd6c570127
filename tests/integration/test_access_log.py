"""Access log: nginx's combined format and JSON lines, buffered per worker and flushed at least
once a second, complete after SIGTERM; 'off' (or no access_log) writes nothing."""
import json
import os
import re
import signal
import time

import pytest

from conftest import SANITIZED, free_port, parse_responses, raw_exchange

FLUSH_LIMIT = 4.0 if SANITIZED else 2.5  # seconds a line may take to reach the file

COMBINED = re.compile(
    r'^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] '
    r'"(?P<method>\S+) (?P<target>\S+) HTTP/1\.(?P<minor>[01])" (?P<status>\d{3}) '
    r'(?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$')

JSON_FIELDS = {
    "time": str, "client": str, "method": str, "target": str, "protocol": str, "status": int,
    "body_bytes_sent": int, "request_body_bytes": int, "host": str, "referer": str,
    "user_agent": str, "upstream": str, "retries": int, "duration_ms": int, "error": str,
    "termination": str,
}


def log_config(port, origin_port, dead_port, access_lines):
    return (
        "server:\n  threads: 2\n  grace_period: 10s\n" + access_lines +
        f"listeners:\n  - 127.0.0.1:{port}\n"
        "routes:\n"
        "  - match: {path_prefix: /path}\n    upstream: backend\n"
        "  - match: {path_prefix: /bytes/}\n    upstream: backend\n"
        "  - match: {path_prefix: /echo}\n    upstream: backend\n"
        "  - match: {path_prefix: /dead}\n    upstream: dead\n"
        "upstreams:\n"
        f"  backend:\n    backends: [127.0.0.1:{origin_port}]\n"
        f"  dead:\n    backends: [127.0.0.1:{dead_port}]\n")


def request(port, target, agent=b"agent", extra=b"", method=b"GET", body=b""):
    """One request on its own connection (Connection: close): (status, body bytes)."""
    head = (method + b" " + target.encode() + b" HTTP/1.1\r\nHost: t\r\n"
            + (b"User-Agent: " + agent + b"\r\n" if agent is not None else b"")
            + extra + b"Connection: close\r\n")
    if body:
        head += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    data = raw_exchange(port, head + b"\r\n" + body, timeout=10)
    (status, _, resp_body), = parse_responses(data)
    return status, resp_body


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), f"a partial line was written: {data[-200:]!r}"
    return data.decode("latin-1").splitlines()


def wait_lines(path, n, limit):
    """Waits until the file holds at least n lines; returns (lines, seconds)."""
    start = time.monotonic()
    while True:
        lines = read_lines(path)
        took = time.monotonic() - start
        if len(lines) >= n or took > limit:
            return lines, took
        time.sleep(0.05)


@pytest.fixture
def dead_port():
    return free_port()  # nothing listens there: requests routed to it get 502


def test_combined_format_to_file(weir, origin, dead_port):
    port = free_port()
    path = str(weir.tmp_path / "access.log")
    w = weir(log_config(port, origin.port, dead_port, f"  access_log: {path}\n"), port=port)

    st, body = request(port, "/path?q")
    assert st == 200
    lines, took = wait_lines(path, 1, FLUSH_LIMIT + 1)
    assert len(lines) == 1, f"no access-log line after {took:.1f}s (flushed at least every 1s)"
    assert took <= FLUSH_LIMIT
    assert re.match(
        r'^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] '
        r'"GET /path\?q HTTP/1\.1" 200 \d+ "-" "agent"$', lines[0]), lines[0]
    assert int(COMBINED.match(lines[0])["bytes"]) == len(body)

    expected = [("/path?q", 200, len(body), "-", "agent")]
    st, body = request(port, "/nowhere", agent=b"a2")
    assert st == 404
    expected.append(("/nowhere", 404, len(body), "-", "a2"))
    st, body = request(port, "/dead/x", agent=b"a3", extra=b"Referer: http://r.example/\r\n")
    assert st == 502
    expected.append(("/dead/x", 502, len(body), "http://r.example/", "a3"))
    st, body = request(port, "/bytes/12345", agent=None)
    assert st == 200 and len(body) == 12345
    expected.append(("/bytes/12345", 200, 12345, "-", "-"))
    st, body = request(port, "/echo", method=b"POST", body=b"hello")
    assert st == 200 and body == b"hello"
    expected.append(("/echo", 200, 5, "-", "agent"))

    assert w.stop(signal.SIGTERM) == 0, w.stderr()
    lines = read_lines(path)
    assert len(lines) == len(expected), "\n".join(lines)
    got = []
    for line in lines:
        m = COMBINED.match(line)
        assert m, f"not nginx combined: {line!r}"
        got.append((m["method"], m["target"], int(m["status"]), int(m["bytes"]), m["referer"],
                    m["agent"]))
    # Each worker buffers its own lines: the order across workers is not the request order.
    want = [("POST" if t == "/echo" else "GET",) + e for e in expected for t in [e[0]]]
    assert sorted(got) == sorted(want)

def test_every_line_present_after_sigterm(weir, origin, dead_port):
    port = free_port()
    path = str(weir.tmp_path / "access.log")
    w = weir(log_config(port, origin.port, dead_port, f"  access_log: {path}\n"), port=port)
    for i in range(60):
        st, _ = request(port, f"/path/{i}")
        assert st == 200
    # No wait: whatever is still buffered per worker must be written at exit.
    assert w.stop(signal.SIGTERM) == 0, w.stderr()
    lines = read_lines(path)
    targets = sorted(COMBINED.match(l)["target"] for l in lines)
    assert targets == sorted(f"/path/{i}" for i in range(60))


def test_json_format(weir, origin, dead_port):
    port = free_port()
    path = str(weir.tmp_path / "access.json")
    w = weir(log_config(port, origin.port, dead_port,
                        f"  access_log: {path}\n  access_log_format: json\n"), port=port)
    st, body = request(port, "/echo?x=1", method=b"POST", body=b"0123456789",
                       extra=b"Referer: http://ref/\r\n")
    assert st == 200
    lines, took = wait_lines(path, 1, FLUSH_LIMIT + 1)
    assert len(lines) == 1 and took <= FLUSH_LIMIT, f"no JSON line after {took:.1f}s"
    st404, body404 = request(port, "/nowhere")
    st502, body502 = request(port, "/dead")
    assert (st404, st502) == (404, 502)
    assert w.stop(signal.SIGTERM) == 0, w.stderr()

    recs = [json.loads(l) for l in read_lines(path)]
    assert len(recs) == 3
    for r in recs:
        for k, typ in JSON_FIELDS.items():
            assert k in r, f"field {k} missing: {r}"
            assert isinstance(r[k], typ), f"{k} should be {typ.__name__}: {r}"
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", r["time"]), r
        assert r["client"] == "127.0.0.1"
        assert r["protocol"] == "HTTP/1.1"
        assert r["host"] == "t"
        assert r["duration_ms"] >= 0
    by_target = {r["target"]: r for r in recs}  # per-worker buffers: any order
    ok, miss, dead = by_target["/echo?x=1"], by_target["/nowhere"], by_target["/dead"]
    assert (ok["method"], ok["target"], ok["status"]) == ("POST", "/echo?x=1", 200)
    assert ok["body_bytes_sent"] == len(body) == 10
    assert ok["request_body_bytes"] == 10
    assert ok["referer"] == "http://ref/"
    assert ok["user_agent"] == "agent"
    assert ok["upstream"] == f"127.0.0.1:{origin.port}"
    assert ok["error"] == ""
    assert (miss["target"], miss["status"], miss["body_bytes_sent"]) == \
        ("/nowhere", 404, len(body404))
    assert miss["referer"] == ""
    assert (dead["target"], dead["status"], dead["body_bytes_sent"]) == \
        ("/dead", 502, len(body502))
    assert dead["upstream"] == f"127.0.0.1:{dead_port}"
    assert dead["error"] != "", "a 502 must say what failed"


def test_json_escapes_quotes_and_control_bytes(weir, origin, dead_port):
    port = free_port()
    path = str(weir.tmp_path / "access.json")
    w = weir(log_config(port, origin.port, dead_port,
                        f"  access_log: {path}\n  access_log_format: json\n"), port=port)
    agent = b'q"uote \\back\tslash \xe9 }{"x":1}'
    st, _ = request(port, "/path/a", agent=agent)
    assert st == 200
    assert w.stop(signal.SIGTERM) == 0, w.stderr()
    lines = read_lines(path)
    assert len(lines) == 1
    rec = json.loads(lines[0])  # still one valid JSON object
    assert rec["user_agent"] == agent.decode("latin-1")
    assert "\t" not in lines[0], "a raw control byte in a JSON string"
    assert set(rec) == set(JSON_FIELDS), "the User-Agent leaked fields into the object"


def test_combined_escapes_quotes_and_control_bytes(weir, origin, dead_port):
    port = free_port()
    path = str(weir.tmp_path / "access.log")
    w = weir(log_config(port, origin.port, dead_port, f"  access_log: {path}\n"), port=port)
    st, _ = request(port, "/path/a", agent=b'q"u\\o\tte')
    assert st == 200
    assert w.stop(signal.SIGTERM) == 0, w.stderr()
    lines = read_lines(path)
    assert len(lines) == 1
    m = COMBINED.match(lines[0])
    assert m, lines[0]
    assert m["agent"].lower() == r"q\x22u\x5co\x09te"


def test_stdout_access_log(weir, origin, dead_port):
    port = free_port()
    w = weir(log_config(port, origin.port, dead_port, "  access_log: stdout\n"), port=port)
    st, _ = request(port, "/path/stdout")
    assert st == 200
    assert w.stop(signal.SIGTERM) == 0, w.stderr()
    lines = w.stdout().splitlines()
    assert len(lines) == 1 and COMBINED.match(lines[0])["target"] == "/path/stdout", lines
    assert not os.path.exists(weir.tmp_path / "stdout"), "'stdout' was taken as a file name"


@pytest.mark.parametrize("setting", ["  access_log: off\n", ""], ids=["off", "absent"])
def test_access_log_off_writes_nothing(weir, origin, dead_port, setting):
    port = free_port()
    before = set(os.listdir(weir.tmp_path))
    w = weir(log_config(port, origin.port, dead_port, setting), port=port)
    for target in ("/path/1", "/nowhere", "/dead"):
        request(port, target)
    time.sleep(1.2)  # past one flush interval
    assert w.stop(signal.SIGTERM) == 0, w.stderr()
    assert w.stdout() == ""
    assert "127.0.0.1 - -" not in w.stderr()
    created = set(os.listdir(weir.tmp_path)) - before
    assert all(n.startswith("weir-") for n in created), f"files written: {sorted(created)}"
    assert not os.path.exists(weir.tmp_path / "off"), "'off' was taken as a file name"


def test_rejected_request_is_logged(weir, origin, dead_port):
    """A request weir answers itself with 400 (unparseable head) is a request: nginx logs it,
    and an access log that hides malformed traffic hides probes and client bugs."""
    port = free_port()
    path = str(weir.tmp_path / "access.log")
    w = weir(log_config(port, origin.port, dead_port, f"  access_log: {path}\n"), port=port)
    data = raw_exchange(port, b"GET /path/x HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
                        timeout=10)
    (status, _, body), = parse_responses(data)
    assert status == 400
    assert w.stop(signal.SIGTERM) == 0, w.stderr()
    lines = read_lines(path)
    assert len(lines) == 1, f"the 400 was not logged: {lines}"
    assert re.match(r'^127\.0\.0\.1 - - \[[^]]+\] "[^"]*" 400 ' + str(len(body)) + r' ', lines[0]), \
        lines[0]
