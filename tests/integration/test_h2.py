"""HTTP/2 towards clients (issue 12): h2 by ALPN on TLS listeners, h2c with prior knowledge on
the same port as HTTP/1.1, every request stream a session like an HTTP/1.1 request, mapped to
HTTP/1.1 towards the origin (Host from :authority, cookies joined, bodies with and without a
length), flow control tied to what each side drains, and the defences: header list size on
decoded bytes, fields HTTP/1.1 cannot carry, rapid reset, control-frame floods, stream and
request caps, idle timeout, a client that never reads. Real clients (curl, nghttp, h2load)
and a frame-level one (h2_client.py, on python3-h2).
"""
import hashlib
import json
import shutil
import socket
import subprocess
import time

import pytest

from conftest import SLOW, free_port, wait_for
from h2_client import (CONTINUATION, END_HEADERS, END_STREAM, HEADERS, H2Client, frame)
from origin import pattern_bytes

import hpack


def h2c_config(port, origin_port, server_extra="", listener_extra=""):
    return (f"server:\n  threads: 2\n  grace_period: 10s\n{server_extra}"
            f"listeners:\n  - address: 127.0.0.1:{port}\n    h2c: true\n{listener_extra}"
            f"routes:\n  - upstream: backend\n"
            f"upstreams:\n  backend:\n    backends: [127.0.0.1:{origin_port}]\n")


def tls_config(port, origin_port, pki, tls_extra="", server_extra=""):
    return (f"server:\n  threads: 2\n  grace_period: 10s\n{server_extra}"
            f"listeners:\n  - address: 127.0.0.1:{port}\n    tls:\n"
            f"      certificates: [{{cert: {pki.server_cert}, key: {pki.server_key}}}]\n"
            f"{tls_extra}"
            f"routes:\n  - upstream: backend\n"
            f"upstreams:\n  backend:\n    backends: [127.0.0.1:{origin_port}]\n")


def curl(*args, timeout=30):
    r = subprocess.run(["curl", "-s", "--max-time", "20", *args], capture_output=True,
                       timeout=timeout)
    return r


@pytest.fixture
def h2c(weir, origin):
    port = free_port()
    w = weir(h2c_config(port, origin.port), port=port)
    return port, w


# ---- the two ways in ----

def test_h2c_prior_knowledge_and_http11_share_the_port(h2c, origin):
    port, _ = h2c
    r = curl("--http2-prior-knowledge", "-D", "-", "-o", "/dev/null",
             f"http://127.0.0.1:{port}/bytes/10")
    assert r.stdout.startswith(b"HTTP/2 200"), r.stdout
    r = curl("-D", "-", "-o", "/dev/null", f"http://127.0.0.1:{port}/bytes/10")
    assert r.stdout.startswith(b"HTTP/1.1 200"), r.stdout
    assert [q.version for q in origin.requests] == ["HTTP/1.1", "HTTP/1.1"]


def test_h2c_is_off_unless_asked(weir, origin):
    port = free_port()
    weir(h2c_config(port, origin.port).replace("    h2c: true\n", ""), port=port)
    r = curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/bytes/10")
    assert r.returncode != 0 or not r.stdout.startswith(b"HTTP/2")
    assert origin.requests == []


def test_alpn_h2_on_tls_and_http11_still_offered(weir, origin, pki):
    port = free_port()
    weir(tls_config(port, origin.port, pki), port=port)
    r = curl("--cacert", pki.ca, "--http2", "-D", "-", "-o", "/dev/null",
             "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/bytes/3")
    assert r.stdout.startswith(b"HTTP/2 200"), r
    r = curl("--cacert", pki.ca, "--http1.1", "-D", "-", "-o", "/dev/null",
             "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/bytes/3")
    assert r.stdout.startswith(b"HTTP/1.1 200"), r
    # X-Forwarded-Proto says https for an h2 stream as for HTTP/1.1 over TLS
    c = H2Client(port, tls=True, ca=pki.ca)
    rec = c.get("/headers")
    c.close()
    hdrs = {k.lower(): v for k, v in json.loads(rec["data"])["headers"]}
    assert hdrs["x-forwarded-proto"] == "https"


def test_alpn_list_can_leave_h2_out(weir, origin, pki):
    port = free_port()
    weir(tls_config(port, origin.port, pki, tls_extra="      alpn: [http/1.1]\n"), port=port)
    r = curl("--cacert", pki.ca, "--http2", "-D", "-", "-o", "/dev/null",
             "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/bytes/3")
    assert r.stdout.startswith(b"HTTP/1.1 200"), r


def test_alpn_config_errors(tmp_path):
    from conftest import check_refuses
    _, err = check_refuses(tmp_path, "listeners:\n  - address: 127.0.0.1:1\n    tls:\n"
                                  "      certificates: [{cert: /x, key: /y}]\n"
                                  "      alpn: [h3]\n")
    assert "alpn[0]: expected h2 or http/1.1, got 'h3'" in err or "expected h2 or http/1.1" in err
    _, err = check_refuses(tmp_path, "listeners:\n  - address: 127.0.0.1:1\n    h2c: yes please\n")
    assert "h2c" in err


# ---- the request and response mapping ----

def test_head_mapping_authority_cookies_and_hop_by_hop(h2c, origin):
    port, _ = h2c
    c = H2Client(port)
    rec = c.get("/headers?x=1", authority="app.example:8443",
                headers=[("cookie", "a=1"), ("cookie", "b=2"), ("x-custom", "v")])
    c.close()
    assert rec["headers"][":status"] == "200"
    got = json.loads(rec["data"])
    assert got["target"] == "/headers?x=1"
    hdrs = [(k.lower(), v) for k, v in got["headers"]]
    assert ("host", "app.example:8443") in hdrs
    assert [v for k, v in hdrs if k == "cookie"] == ["a=1; b=2"]
    assert ("x-custom", "v") in hdrs
    # the response head: lowercase names, no connection-specific field
    assert all(k == k.lower() for k in rec["headers"])
    assert "connection" not in rec["headers"] and "keep-alive" not in rec["headers"]


def test_bodies_both_ways_with_and_without_length(h2c, origin):
    port, _ = h2c
    body = pattern_bytes(300_000)
    c = H2Client(port)
    # with a content-length: the origin gets it as is
    sid = c.request("/echo", method="POST", headers=[("content-length", str(len(body)))],
                    body=body)
    rec = c.response(sid, timeout=30)
    assert rec["headers"][":status"] == "200" and rec["data"] == body
    # without one: chunked towards the HTTP/1.1 origin, ended by END_STREAM
    sid = c.request("/echo", method="POST", body=body)
    rec = c.response(sid, timeout=30)
    assert rec["headers"][":status"] == "200" and rec["data"] == body
    c.close()
    reqs = [r for r in origin.requests if r.target == "/echo"]
    assert reqs[0].header("content-length") == str(len(body))
    assert reqs[1].header("transfer-encoding") == "chunked"


def test_large_and_chunked_responses_stream_intact(h2c, origin):
    port, _ = h2c
    c = H2Client(port)
    a = c.request("/bytes/2000000")
    b = c.request("/chunked/1000000")
    ra, rb = c.response(a, timeout=60), c.response(b, timeout=60)
    c.close()
    assert ra["data"] == pattern_bytes(2_000_000)
    assert ra["headers"]["content-length"] == "2000000"
    assert rb["data"] == pattern_bytes(1_000_000)
    assert "content-length" not in rb["headers"] and "transfer-encoding" not in rb["headers"]
    # the chunked body's trailer arrives as HTTP/2 trailers
    assert rb["trailers"] == {"x-checksum": "done"}


def test_head_and_bodyless_statuses(h2c, origin):
    port, _ = h2c
    c = H2Client(port)
    rec = c.get("/bytes/100", method="HEAD")
    assert rec["headers"][":status"] == "200" and rec["data"] == b"" and rec["ended"]
    rec = c.get("/status/204")
    assert rec["headers"][":status"] == "204" and rec["data"] == b""
    rec = c.get("/status/304")
    assert rec["headers"][":status"] == "304"
    c.close()


def test_many_streams_with_nghttp_and_h2load(h2c, origin):
    port, _ = h2c
    r = subprocess.run(["nghttp", "-n", "-s", f"http://127.0.0.1:{port}/bytes/1000",
                        f"http://127.0.0.1:{port}/bytes/2000", f"http://127.0.0.1:{port}/json"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "20",
                        f"http://127.0.0.1:{port}/bytes/100"], capture_output=True, text=True,
                       timeout=120)
    assert "2000 succeeded, 0 failed" in r.stdout, r.stdout
    assert "status codes: 2000 2xx" in r.stdout


def test_expect_continue_over_h2(h2c, origin):
    port, _ = h2c
    c = H2Client(port)
    sid = c.request("/echo", method="POST", headers=[("expect", "100-continue"),
                                                    ("content-length", "5")], end=False)
    assert c.wait(lambda: "interim" in c.responses.get(sid, {}))
    assert c.responses[sid]["interim"][0][":status"] == "100"
    c.send_body(sid, b"hello")
    rec = c.response(sid)
    c.close()
    assert rec["data"] == b"hello"


def test_access_log_says_http2(weir, origin, tmp_path):
    port = free_port()
    log = tmp_path / "access.log"
    w = weir(h2c_config(port, origin.port, server_extra=f"  access_log: {log}\n"), port=port)
    c = H2Client(port)
    assert c.get("/bytes/5")["headers"][":status"] == "200"
    c.close()
    w.stop()
    assert '"GET /bytes/5 HTTP/2.0" 200 5' in log.read_text()


# ---- strict downgrade: what HTTP/1.1 cannot carry is refused, never forwarded ----

@pytest.mark.parametrize("bad", [
    [("x-bad", "a\r\nx-injected: 1")],
    [("x-bad", "a\nb")],
    [("x-bad", "a\x00b")],
    [("connection", "keep-alive")],
    [("transfer-encoding", "chunked")],
    [("te", "gzip")],
    [("Upper", "case")],
])
def test_unsafe_fields_are_a_stream_error(h2c, origin, bad):
    port, _ = h2c
    c = H2Client(port, validate=False)
    sid = c.request("/headers", headers=bad)
    ok = c.request("/bytes/1")
    rec = c.response(sid)
    c.response(ok)
    c.close()
    assert rec is not None and rec["reset"] is not None and rec["headers"] is None
    assert c.responses[ok]["headers"][":status"] == "200"  # only the stream failed
    assert [r.target for r in origin.requests] == ["/bytes/1"]


@pytest.mark.parametrize("path", ["/a b", "/a\tb", "no-slash", "/a\x7f"])
def test_unsafe_path_is_a_stream_error(h2c, origin, path):
    port, _ = h2c
    c = H2Client(port, validate=False)
    rec = c.get(path)
    c.close()
    assert rec is not None and rec["reset"] is not None
    assert origin.requests == []


def test_te_trailers_is_kept(h2c, origin):
    port, _ = h2c
    c = H2Client(port)
    rec = c.get("/headers", headers=[("te", "trailers")])
    c.close()
    assert rec["headers"][":status"] == "200"


def test_missing_authority_and_host_is_400(h2c, origin):
    port, _ = h2c
    c = H2Client(port, validate=False)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "http")],
                        end_stream=True)
    c.flush()
    rec = c.response(sid)
    c.close()
    # nghttp2 resets it (RFC 9113 8.3.1 makes it malformed) or weir answers 400 itself
    assert rec is not None and (rec["reset"] is not None or rec["headers"][":status"] == "400")
    assert origin.requests == []


# ---- defences ----

def test_header_list_over_the_limit_is_431(weir, origin):
    port = free_port()
    weir(h2c_config(port, origin.port, server_extra="  limits:\n    max_header_bytes: 4k\n"),
         port=port)
    c = H2Client(port)
    rec = c.get("/headers", headers=[(f"x-h{i}", "v" * 200) for i in range(40)])
    ok = c.get("/bytes/1")
    c.close()
    assert rec["headers"][":status"] == "431"
    assert ok["headers"][":status"] == "200"
    assert [r.target for r in origin.requests] == ["/bytes/1"]


def test_hpack_bomb_is_refused_on_decoded_size(weir, origin):
    """One 3 KiB field in the dynamic table, then referenced 2000 times by one-byte indexes:
    about 6 MB decoded from 4 KB on the wire. The decoded size is what counts."""
    port = free_port()
    weir(h2c_config(port, origin.port), port=port)
    c = H2Client(port)
    # python's HPACK encoder indexes the field the first time and refers to it after
    sid = c.request("/headers", headers=[("x-bomb", "b" * 3000)] * 2000)
    rec = c.response(sid)
    ok = c.get("/bytes/1")
    c.close()
    assert rec is not None and (rec["reset"] is not None or rec["headers"][":status"] == "431")
    assert ok is not None and ok["headers"][":status"] == "200"
    assert [r.target for r in origin.requests] == ["/bytes/1"]


def test_continuation_flood_is_cut_off(weir, origin):
    port = free_port()
    w = weir(h2c_config(port, origin.port), port=port)
    c = H2Client(port)
    enc = hpack.Encoder()
    block = enc.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                        (":authority", "weir.test")])
    c.send_raw(frame(HEADERS, 0, 1, block))
    try:
        for _ in range(2000):
            c.send_raw(frame(CONTINUATION, 0, 1, b"\x40\x01a\x01b"))
    except OSError:
        pass  # weir closed on us: that is the defence
    assert c.wait_closed(10 * SLOW)
    assert c.goaway is not None or c.closed
    c.close()
    assert w.alive() and origin.requests == []


def test_rapid_reset_gets_goaway(weir, origin):
    port = free_port()
    w = weir(h2c_config(port, origin.port,
                        server_extra="  http2:\n    reset_burst: 50\n    reset_rate: 10\n"),
             port=port)
    c = H2Client(port)
    try:
        for _ in range(400):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "GET"), (":path", "/slow/50"),
                                      (":scheme", "http"), (":authority", "weir.test")])
            c.conn.reset_stream(sid)
            c.flush()
    except (OSError, Exception):
        pass
    c.wait(lambda: c.goaway is not None, 10 * SLOW)
    c.close()
    assert c.goaway is not None and c.goaway.error_code == 11  # ENHANCE_YOUR_CALM
    assert len(origin.requests) < 200
    assert w.alive()


@pytest.mark.parametrize("kind", ["ping", "settings", "empty_data", "priority"])
def test_control_frame_floods_get_goaway(weir, origin, kind):
    port = free_port()
    w = weir(h2c_config(port, origin.port, server_extra=(
        "  http2:\n    control_frame_burst: 100\n    control_frame_rate: 10\n")), port=port)
    c = H2Client(port)
    sid = None
    if kind == "empty_data":
        sid = c.request("/echo", method="POST", end=False, body=None)
    try:
        for i in range(1000):
            if kind == "ping":
                c.conn.ping(i.to_bytes(8, "big"))
            elif kind == "settings":
                c.conn.update_settings({1: 4096})
            elif kind == "priority":
                c.send_raw(frame(2, 0, 3 + 2 * i, b"\x00\x00\x00\x00\x10"))
                continue
            else:
                c.conn.send_data(sid, b"")
            c.flush()
    except Exception:
        pass
    c.wait(lambda: c.goaway is not None, 10 * SLOW)
    c.close()
    assert c.goaway is not None and c.goaway.error_code == 11
    assert w.alive()


def test_max_concurrent_streams_is_advertised_and_enforced(weir, origin):
    port = free_port()
    weir(h2c_config(port, origin.port, server_extra="  http2:\n    max_concurrent_streams: 4\n"),
         port=port)
    c = H2Client(port)
    c.wait(lambda: c.conn.remote_settings.max_concurrent_streams == 4)
    assert c.conn.remote_settings.max_concurrent_streams == 4
    # h2 itself refuses to open a fifth; the raw frames say it anyway
    c.conn.remote_settings.acknowledge()  # nothing to ack; keep the client's view
    enc = hpack.Encoder()
    for i in range(6):
        block = enc.encode([(":method", "GET"), (":path", "/slow/300"), (":scheme", "http"),
                            (":authority", "weir.test")])
        c.send_raw(frame(HEADERS, END_STREAM | END_HEADERS, 101 + 2 * i, block))
    time.sleep(1.5 * SLOW)
    c.pump(0.5)
    c.close()
    assert len(origin.requests) <= 4


def test_max_requests_then_goaway(weir, origin):
    """(python-h2 stops at a GOAWAY; nghttp goes on reading the streams it covers.)"""
    port = free_port()
    weir(h2c_config(port, origin.port, server_extra="  http2:\n    max_requests: 3\n"),
         port=port)
    urls = [f"http://127.0.0.1:{port}/bytes/{i + 1}" for i in range(5)]
    r = subprocess.run(["nghttp", "-nv", "--no-dep", *urls], capture_output=True, text=True,
                       timeout=60)
    out = r.stdout
    assert out.count("recv (stream_id=") and out.count(":status: 200") == 3, out
    assert "recv GOAWAY frame" in out and "error_code=NO_ERROR(0x00)" in out, out
    assert len(origin.requests) == 3


def test_idle_connection_gets_goaway_and_close(weir, origin):
    port = free_port()
    weir(h2c_config(port, origin.port, server_extra="  timeouts:\n    client_keepalive: 500ms\n"),
         port=port)
    c = H2Client(port)
    assert c.get("/bytes/1")["headers"][":status"] == "200"
    assert c.wait_closed(10 * SLOW)
    assert c.goaway is not None and c.goaway.error_code == 0
    c.close()


def test_client_that_never_reads_is_bounded_and_reset(weir, origin):
    """The client gives a tiny window and reads nothing: weir holds at most its stream buffer
    (not the 20 MB the origin offers), resets the stream after client_write, and the
    connection's other streams go on."""
    port = free_port()
    w = weir(h2c_config(port, origin.port, server_extra="  timeouts:\n    client_write: 1s\n"),
             port=port)
    c = H2Client(port, settings={4: 1024})  # SETTINGS_INITIAL_WINDOW_SIZE
    rss0 = w.rss_kb()
    sid = c.request("/bytes/20000000")
    # read frames but never open the window beyond the initial 1 KiB
    deadline = time.monotonic() + 10 * SLOW
    while time.monotonic() < deadline and c.responses.get(sid, {}).get("reset") is None:
        c.sock.settimeout(0.3)
        try:
            data = c.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        if not data:
            break
        for ev in c.conn.receive_data(data):
            if not hasattr(ev, "flow_controlled_length"):
                c._on(ev)
            elif ev.stream_id in c.responses:
                c.responses[ev.stream_id]["data"] += ev.data
        c.flush()
    assert c.responses[sid]["reset"] is not None
    assert len(c.responses[sid]["data"]) <= 1024
    assert w.rss_kb() - rss0 < 16 * 1024
    c.conn.increment_flow_control_window(1 << 20)
    c.flush()
    assert c.get("/bytes/10")["data"] == pattern_bytes(10)
    c.close()


def test_client_reset_cancels_the_upstream_exchange(weir, origin, tmp_path):
    port = free_port()
    log = tmp_path / "access.log"
    w = weir(h2c_config(port, origin.port, server_extra=f"  access_log: {log}\n"), port=port)
    c = H2Client(port)
    sid = c.request("/slow/2000")
    assert wait_for(lambda: len(origin.conns) >= 1, 5)
    time.sleep(0.2)
    c.conn.reset_stream(sid, error_code=8)  # CANCEL
    c.flush()
    ok = c.get("/bytes/3")
    c.close()
    assert ok["headers"][":status"] == "200"
    w.stop()
    text = log.read_text()
    assert '"GET /slow/2000 HTTP/2.0" 499' in text, text


def test_requests_over_tls_h2_many_connections(weir, origin, pki):
    port = free_port()
    weir(tls_config(port, origin.port, pki), port=port)
    r = subprocess.run(["h2load", "-n", "1000", "-c", "8", "-m", "8",
                        f"https://127.0.0.1:{port}/bytes/2000"], capture_output=True, text=True,
                       timeout=120)
    assert "1000 succeeded, 0 failed" in r.stdout, r.stdout
    assert "Application protocol: h2" in r.stdout


def test_graceful_stop_finishes_streams(weir, origin):
    port = free_port()
    w = weir(h2c_config(port, origin.port), port=port)
    p = subprocess.Popen(["nghttp", "-nv", f"http://127.0.0.1:{port}/slow/1000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: len(origin.conns) >= 1, 5 * SLOW)
    time.sleep(0.3)
    w.send_signal(15)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    assert ":status: 200" in out and "recv GOAWAY frame" in out, out
    assert w.wait(15) == 0
