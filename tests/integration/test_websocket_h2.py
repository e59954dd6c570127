"""WebSocket over HTTP/2 (RFC 8441) through weir to an HTTP/1.1 origin (issue 12): weir
announces SETTINGS_ENABLE_CONNECT_PROTOCOL, takes an extended CONNECT (:protocol websocket),
upgrades to the origin with a Sec-WebSocket-Key of its own (checking the origin's accept), and
answers 200; then the stream's DATA and the origin's bytes are one tunnel. The client is a
frame-level HTTP/2 client (python3-h2) speaking WebSocket frames with python3-websockets'
sans-I/O protocol; the origin is a real websockets server (test_websocket.WsOrigin).
"""
import json
import os
import socket
import threading
import time

import h2.settings
import pytest
from websockets.connection import Connection, Side, State
from websockets.frames import Frame, Opcode

from conftest import free_port
from h2_client import H2Client
from test_websocket import WsOrigin


@pytest.fixture
def ws_origin():
    o = WsOrigin()
    yield o
    o.stop()


def config(port, origin_port, server_extra="", tls=None, protocol=""):
    lst = f"  - address: 127.0.0.1:{port}\n"
    if tls is None:
        lst += "    h2c: true\n"
    else:
        lst += (f"    tls:\n      certificates: [{{cert: {tls.server_cert}, "
                f"key: {tls.server_key}}}]\n")
    return (f"server:\n  threads: 2\n  grace_period: 5s\n{server_extra}"
            f"listeners:\n{lst}"
            f"routes:\n  - upstream: ws\n"
            f"upstreams:\n  ws:\n    backends: [127.0.0.1:{origin_port}]\n{protocol}")


class WsOverH2:
    """One RFC 8441 WebSocket on an HTTP/2 stream of c."""

    def __init__(self, c, path="/", protocol="websocket", extra=()):
        self.c = c
        assert c.wait(lambda: c.conn.remote_settings.enable_connect_protocol == 1, 10), \
            "no SETTINGS_ENABLE_CONNECT_PROTOCOL from weir"
        self.sid = c.conn.get_next_available_stream_id()
        hdrs = [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"),
                (":path", path), (":authority", "weir.test"),
                ("sec-websocket-version", "13")] + list(extra)
        c.conn.send_headers(self.sid, hdrs, end_stream=False)
        c.flush()
        assert c.wait(lambda: self.rec()["headers"] is not None or self.over(), 10)
        self.headers = self.rec()["headers"]
        self.ws = Connection(Side.CLIENT, state=State.OPEN, max_size=8 << 20)
        self.seen = 0  # bytes of the stream's data given to the WebSocket parser

    def rec(self):
        return self.c._resp(self.sid)

    def over(self):
        r = self.rec()
        return r["ended"] or r["reset"] is not None or self.c.closed

    def push(self):
        """The WebSocket's outgoing frames as DATA on the stream."""
        for chunk in self.ws.data_to_send():
            if chunk:
                self.c.send_body(self.sid, chunk, end=False)
            else:
                self.c.conn.end_stream(self.sid)  # the WebSocket's half-close
                self.c.flush()

    def feed(self):
        data = self.rec()["data"]
        if len(data) > self.seen:
            self.ws.receive_data(data[self.seen:])
            self.seen = len(data)
        if self.over() and self.ws.state != State.CLOSED:
            self.ws.receive_eof()

    def frames(self, n=1, timeout=20):
        """Waits for n frames from the origin (answering its pings and closes)."""
        got = []

        def enough():
            self.feed()
            got.extend(self.ws.events_received())
            self.push()
            return len(got) >= n or self.over()

        self.c.wait(enough, timeout)
        return got

    def send_text(self, text):
        self.ws.send_text(text.encode())
        self.push()

    def send_binary(self, data):
        self.ws.send_binary(data)
        self.push()


def h2_client(port, pki=None):
    return H2Client(port, tls=pki is not None, settings=None)


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-tls"])
def test_websocket_over_h2_messages_ping_and_close(weir, ws_origin, pki, tmp_path, tls):
    port = free_port()
    log = tmp_path / "access.log"
    weir(config(port, ws_origin.port, f"  access_log: {log}\n  access_log_format: json\n",
                tls=pki if tls else None), port=port)
    c = h2_client(port, pki if tls else None)
    w = WsOverH2(c, "/chat?room=2")
    assert w.headers[":status"] == "200", w.headers
    # the origin's handshake fields stay behind: an HTTP/2 client has no key to check
    assert "sec-websocket-accept" not in w.headers and "upgrade" not in w.headers
    w.send_text("hello")
    [f] = w.frames()
    assert f.opcode == Opcode.TEXT and f.data == b"hello"
    big = os.urandom(1 << 20)  # more than any window: flow control both ways
    w.send_binary(big)
    f = w.frames()[0]
    assert f.opcode == Opcode.BINARY and f.data == big
    w.ws.send_ping(b"p1")
    w.push()
    f = w.frames()[0]
    assert f.opcode == Opcode.PONG and f.data == b"p1"
    for i in range(100):
        w.ws.send_text(f"m{i}".encode())
    w.push()
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 100 and time.monotonic() < deadline:
        got += [f.data.decode() for f in w.frames(100 - len(got))]
    assert got == [f"m{i}" for i in range(100)]
    w.ws.send_close(1000, "client done")
    w.push()
    f = w.frames()[0]
    assert f.opcode == Opcode.CLOSE
    # the origin closes its connection after the handshake: the stream ends, cleanly
    assert c.wait(w.over, 10) and w.rec()["ended"] and w.rec()["reset"] is None
    # the connection goes on serving other streams
    assert c.get("/")["headers"] is not None
    c.close()
    assert ws_origin.paths == ["/chat?room=2"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(log.read_text().splitlines()) < 2:
        time.sleep(0.1)
    rec = [json.loads(line) for line in log.read_text().splitlines()][0]
    assert rec["status"] == 200 and rec["target"] == "/chat?room=2"
    assert rec["protocol"] == "HTTP/2.0"
    assert rec["body_bytes_sent"] > 1 << 20 and rec["request_body_bytes"] > 1 << 20


def test_websocket_over_h2_close_from_origin_and_origin_death(weir, ws_origin):
    port = free_port()
    weir(config(port, ws_origin.port), port=port)
    c = h2_client(port)
    w = WsOverH2(c)
    w.send_text("close-me")
    f = w.frames()[0]
    assert f.opcode == Opcode.CLOSE and f.data[:2] == (4001).to_bytes(2, "big")
    assert c.wait(w.over, 10) and w.rec()["ended"]

    w2 = WsOverH2(c)  # a second WebSocket on the same connection
    w2.send_text("die")
    assert c.wait(w2.over, 10)
    w2.feed()
    assert not any(f.opcode == Opcode.CLOSE for f in w2.ws.events_received())
    assert not c.closed  # only the stream ended
    c.close()


def test_websocket_over_h2_client_reset_closes_the_origin(weir, ws_origin):
    port = free_port()
    weir(config(port, ws_origin.port), port=port)
    c = h2_client(port)
    w = WsOverH2(c)
    w.send_text("x")
    assert w.frames()[0].data == b"x"
    c.conn.reset_stream(w.sid)
    c.flush()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not ws_origin.closed:
        time.sleep(0.05)
    assert ws_origin.closed == [1006]  # the TCP connection went without a close frame
    assert c.get("/")["headers"] is not None
    c.close()


def test_websocket_over_h2_idle_timeout(weir, ws_origin):
    port = free_port()
    weir(config(port, ws_origin.port, "  timeouts:\n    tunnel: 700ms\n"), port=port)
    c = h2_client(port)
    w = WsOverH2(c)
    w.send_text("x")
    assert w.frames()[0].data == b"x"
    t0 = time.monotonic()
    assert c.wait(w.over, 20)
    assert time.monotonic() - t0 < 20
    c.close()


def test_other_extended_connect_protocols_get_501(weir, ws_origin):
    port = free_port()
    weir(config(port, ws_origin.port), port=port)
    c = h2_client(port)
    w = WsOverH2(c, protocol="connect-udp")
    assert w.headers[":status"] == "501"
    assert ws_origin.paths == []
    c.close()


def test_websocket_over_h2_can_be_turned_off(weir, ws_origin):
    port = free_port()
    weir(config(port, ws_origin.port, "  http2:\n    websocket: false\n"), port=port)
    c = H2Client(port, validate=False)
    assert c.get("/")["headers"] is not None
    assert c.conn.remote_settings.enable_connect_protocol == 0
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                              (":scheme", "http"), (":path", "/"), (":authority", "x")])
    c.flush()
    r = c.response(sid)
    # nghttp2 refuses :protocol it did not announce: a stream or connection error
    assert c.closed or (r is not None and r["reset"] is not None)
    assert ws_origin.paths == []
    c.close()


class BadAcceptOrigin:
    """Answers any upgrade with a 101 whose Sec-WebSocket-Accept is not the key's."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.heads = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.heads.append(data.decode("latin-1"))
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                time.sleep(0.5)
            except OSError:
                pass
            conn.close()

    def stop(self):
        self.sock.close()


def test_origin_101_with_wrong_accept_is_502(weir):
    o = BadAcceptOrigin()
    try:
        port = free_port()
        weir(config(port, o.port), port=port)
        c = h2_client(port)
        w = WsOverH2(c, "/ws")
        assert w.headers[":status"] == "502"
        # what went up: an HTTP/1.1 upgrade with weir's own key
        head = o.heads[0].lower()
        assert head.startswith("get /ws http/1.1\r\n")
        assert "upgrade: websocket" in head and "connection: upgrade" in head
        key = [ln for ln in head.split("\r\n") if ln.startswith("sec-websocket-key:")]
        assert len(key) == 1 and len(key[0].split(":", 1)[1].strip()) == 24
        assert "sec-websocket-version: 13" in head
        c.close()
    finally:
        o.stop()
