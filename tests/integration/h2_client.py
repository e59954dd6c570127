"""A frame-level HTTP/2 client for the tests (Debian's python3-h2), over cleartext (prior
knowledge) or TLS (ALPN h2). It can send what a well-behaved client never would: invalid
fields, floods, resets, raw frames. Every read is bounded in time."""
import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class H2Client:
    def __init__(self, port, tls=False, ca=None, timeout=10.0, settings=None, validate=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context(cafile=ca)
            ctx.check_hostname = False
            if ca is None:
                ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
            assert self.sock.selected_alpn_protocol() == "h2"
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate,
                                        normalize_outbound_headers=validate,
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.events = []
        self.closed = False
        self.write_failed = False
        self.goaway = None  # the ConnectionTerminated event, once received
        self.error = None  # the h2 library's ProtocolError, if weir's frames broke its rules
        self.responses = {}  # stream id -> dict(headers, data, trailers, ended, reset)

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                self.write_failed = True  # weir closed on us: what it sent is still read

    def send_raw(self, data):
        self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), body=None, end=True, authority="weir.test"):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"),
                (":authority", authority)] + list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=end and body is None)
        if body is not None:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        """Sends body in frames as the flow-control windows allow (reading meanwhile)."""
        off = 0
        deadline = time.monotonic() + 30
        while off < len(body):
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.flush()
                if not self.pump(0.5) and time.monotonic() > deadline:
                    raise TimeoutError("no window to send the body")
                continue
            piece = body[off:off + room]
            self.conn.send_data(sid, piece)
            off += len(piece)
            self.flush()
        if end:
            self.conn.end_stream(sid)
        self.flush()

    def pump(self, timeout=1.0):
        """Reads once (waiting at most timeout) and handles the events. False on timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return True
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self.closed = True
            self.error = e
            return True
        for ev in events:
            self._on(ev)
        self.flush()
        return True

    def _resp(self, sid):
        return self.responses.setdefault(sid, {"headers": None, "data": b"", "trailers": None,
                                               "ended": False, "reset": None})

    def _on(self, ev):
        self.events.append(ev)
        if isinstance(ev, h2.events.ResponseReceived):
            self._resp(ev.stream_id)["headers"] = dict(ev.headers)
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self._resp(ev.stream_id).setdefault("interim", []).append(dict(ev.headers))
        elif isinstance(ev, h2.events.DataReceived):
            self._resp(ev.stream_id)["data"] += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            self._resp(ev.stream_id)["trailers"] = dict(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded):
            self._resp(ev.stream_id)["ended"] = True
        elif isinstance(ev, h2.events.StreamReset):
            self._resp(ev.stream_id)["reset"] = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def wait(self, cond, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not cond():
            if self.closed or time.monotonic() > deadline:
                return cond()
            self.pump(min(0.5, max(0.01, deadline - time.monotonic())))
        return True

    def response(self, sid, timeout=10.0):
        """Waits for stream sid to end or be reset; returns its record."""
        self.wait(lambda: sid in self.responses and (self.responses[sid]["ended"] or
                                                     self.responses[sid]["reset"] is not None),
                  timeout)
        return self.responses.get(sid)

    def get(self, path, **kw):
        return self.response(self.request(path, **kw))

    def wait_closed(self, timeout=10.0):
        return self.wait(lambda: self.closed, timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def frame(ftype, flags, sid, payload=b""):
    """One raw HTTP/2 frame."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) \
        + payload


DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = \
    range(10)
END_STREAM, END_HEADERS = 0x1, 0x4
