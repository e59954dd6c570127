"""WebSocket over HTTP/1.1 through weir (issue 12): the Upgrade goes to the origin, its 101
turns the exchange into a byte tunnel both ways, with its own idle timeout
(timeouts.tunnel) and the bytes of each direction in the access log. Real WebSocket exchanges
with Debian's python3-websockets on both ends: text and binary messages, a 1 MiB message,
ping/pong, a close from either side, an origin that dies.
"""
import asyncio
import json
import os
import threading
import time

import pytest
import websockets

from conftest import free_port, wait_for


class WsOrigin:
    """A websockets server on its own event loop thread: echoes, closes on "close-me" with
    code 4001, dies (closes the socket without a close frame) on "die"."""

    def __init__(self):
        self.port = None
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.paths = []
        self.closed = []  # each connection's close code, as it ends
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    async def _handler(self, ws, path):
        self.paths.append(path)
        try:
            async for msg in ws:
                if msg == "close-me":
                    await ws.close(code=4001, reason="origin says bye")
                    return
                if msg == "die":
                    ws.transport.abort()
                    return
                await ws.send(msg)
        finally:
            self.closed.append(ws.close_code)

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.server = await websockets.serve(self._handler, "127.0.0.1", 0,
                                                 max_size=4 << 20)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()
            await self.server.wait_closed()

        self.loop.run_until_complete(main())

    def stop(self):
        def close():
            self.server.close()
        self.loop.call_soon_threadsafe(close)
        self.thread.join(10)


@pytest.fixture
def ws_origin():
    o = WsOrigin()
    yield o
    o.stop()


def config(port, origin_port, extra=""):
    return (f"server:\n  threads: 2\n  grace_period: 5s\n{extra}"
            f"listeners:\n  - address: 127.0.0.1:{port}\n"
            f"routes:\n  - upstream: ws\n"
            f"upstreams:\n  ws:\n    backends: [127.0.0.1:{origin_port}]\n")


def run(coro):
    return asyncio.new_event_loop().run_until_complete(asyncio.wait_for(coro, 60))


def test_websocket_messages_ping_and_close_from_client(weir, ws_origin, tmp_path):
    port = free_port()
    log = tmp_path / "access.log"
    w = weir(config(port, ws_origin.port, f"  access_log: {log}\n  access_log_format: json\n"),
             port=port)

    async def talk():
        async with websockets.connect(f"ws://127.0.0.1:{port}/chat?room=1",
                                      max_size=4 << 20) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01binary")
            assert await ws.recv() == b"\x00\x01binary"
            big = os.urandom(1 << 20)  # incompressible (permessage-deflate is on)
            await ws.send(big)
            assert await ws.recv() == big
            pong = await ws.ping(b"p1")
            await asyncio.wait_for(pong, 10)
            for i in range(100):
                await ws.send(f"m{i}")
            assert [await ws.recv() for _ in range(100)] == [f"m{i}" for i in range(100)]
            await ws.close(code=1000, reason="client done")
            return ws.close_code

    assert run(talk()) == 1000
    assert ws_origin.paths == ["/chat?room=1"]
    w.stop()
    rec = [json.loads(line) for line in log.read_text().splitlines()][-1]
    assert rec["status"] == 101 and rec["target"] == "/chat?room=1"
    # each direction's tunnel bytes: at least the 1 MiB message each way
    assert rec["body_bytes_sent"] > 1 << 20 and rec["request_body_bytes"] > 1 << 20


def test_websocket_close_from_origin_and_origin_death(weir, ws_origin):
    port = free_port()
    weir(config(port, ws_origin.port), port=port)

    async def closed_by_origin():
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("close-me")
            with pytest.raises(websockets.ConnectionClosed) as e:
                await ws.recv()
            return e.value.rcvd.code, e.value.rcvd.reason

    assert run(closed_by_origin()) == (4001, "origin says bye")

    async def origin_dies():
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("die")
            with pytest.raises(websockets.ConnectionClosed) as e:
                await ws.recv()
            return e.value.rcvd

    assert run(origin_dies()) is None  # no close frame: the tunnel just ended


def test_websocket_tunnel_idle_timeout(weir, ws_origin):
    port = free_port()
    weir(config(port, ws_origin.port, "  timeouts:\n    tunnel: 700ms\n"), port=port)

    async def idle():
        async with websockets.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            t0 = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return time.monotonic() - t0

    assert run(idle()) < 30


def test_plain_request_after_refused_upgrade_is_normal(weir, origin):
    """An origin that does not upgrade (200) answers like any request; nothing is tunnelled."""
    port = free_port()
    weir(config(port, origin.port), port=port)
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /bytes/5 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 5:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 200")
    req = origin.requests[0]
    assert req.header("upgrade") == "websocket" and "upgrade" in req.header("connection").lower()
