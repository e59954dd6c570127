"""Origins the integration tests control byte for byte.

Origin: a threaded TCP server whose handler scripts every byte (for misbehaving origins).
HttpOrigin: a strict-enough HTTP/1.1 server with keep-alive that records every request and
answers according to the path:

  /bytes/N        N bytes of a repeating pattern, Content-Length framing
  /chunked/N      N bytes, chunked framing (chunks of up to 16 KiB), with a trailer
  /close/N        N bytes, no length: read until close (HTTP/1.0 style)
  /status/NNN     an empty response with that status (no body for 1xx/204/304)
  /slow/MS        waits MS milliseconds, then answers 200 "slow"
  /echo           answers the request body back (Content-Length)
  /headers        a JSON object of the request head as received
  anything else   200, a JSON summary of the request (method, target, headers, body size, sha256)

Request bodies are streamed and hashed, never stored, so 100 MB uploads cost no memory.
"""
import hashlib
import json
import socket
import threading
import time

PATTERN = bytes(range(256)) * 64  # 16 KiB of a recognisable pattern


def pattern_bytes(n):
    """The first n bytes of the repeating pattern /bytes/N serves."""
    reps = n // len(PATTERN) + 1
    return (PATTERN * reps)[:n]


class Origin:
    """A TCP server on host:port (default 127.0.0.1 and a free port; an IPv6 host such as "::1"
    works too); handler(conn) runs in a thread per connection. Binding fails with OSError when
    the port is taken on that host."""

    def __init__(self, handler, host="127.0.0.1", port=0):
        self.handler = handler
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received = []  # raw bytes per connection, as the handler recorded them
        self.lock = threading.Lock()
        self.stopping = False
        self.threads = []
        self.conns = []

    def start(self):
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def _accept_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            # Responses go out in several sends: without this, Nagle and delayed ACKs add
            # ~40 ms to every keep-alive request.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                record = bytearray()
                self.received.append(record)
                self.conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn, record), daemon=True)
            t.start()

    def _run(self, conn, record):
        try:
            self.handler(Conn(conn, record))
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        try:
            # shutdown first: a close alone leaves the socket listening while the accept
            # thread is blocked on it, so connects would still succeed.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Conn:
    """A connection wrapper that records what it reads."""

    def __init__(self, sock, record):
        self.sock = sock
        self.record = record
        self.buf = b""
        sock.settimeout(30)

    def recv_some(self, n=65536):
        b = self.sock.recv(n)
        self.record.extend(b)
        return b

    def read_until(self, marker, limit=1 << 20):
        while marker not in self.buf:
            b = self.recv_some()
            if not b:
                return None
            self.buf += b
            if len(self.buf) > limit:
                raise ValueError("head too large")
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            b = self.recv_some()
            if not b:
                return None
            self.buf += b
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()


class Request:
    def __init__(self, method, target, version, headers, raw_head):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # list of (name, value) as received
        self.raw_head = raw_head
        self.body_len = 0
        self.body_sha256 = ""
        self.body = None  # kept only for /echo

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class HttpOrigin(Origin):
    def __init__(self, host="127.0.0.1", port=0):
        super().__init__(self._serve, host=host, port=port)
        self.requests = []  # every Request, in arrival order

    def _read_body(self, c, req, keep):
        h = hashlib.sha256()
        te = req.header("transfer-encoding")
        cl = req.header("content-length")
        chunks = [] if keep else None
        if te and te.lower() == "chunked":
            while True:
                line = c.read_until(b"\r\n")
                if line is None:
                    return False
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers up to the blank line
                        t = c.read_until(b"\r\n")
                        if t is None or t == b"\r\n":
                            break
                    break
                left = size
                while left:
                    piece = c.read_exact(min(left, 1 << 16))
                    if piece is None:
                        return False
                    h.update(piece)
                    req.body_len += len(piece)
                    if keep:
                        chunks.append(piece)
                    left -= len(piece)
                if c.read_exact(2) != b"\r\n":
                    return False
        elif cl is not None:
            left = int(cl)
            while left:
                piece = c.read_exact(min(left, 1 << 16))
                if piece is None:
                    return False
                h.update(piece)
                req.body_len += len(piece)
                if keep:
                    chunks.append(piece)
                left -= len(piece)
        req.body_sha256 = h.hexdigest()
        if keep:
            req.body = b"".join(chunks)
        return True

    def _serve(self, c):
        while True:
            head = c.read_until(b"\r\n\r\n")
            if head is None:
                return
            lines = head[:-4].split(b"\r\n")
            method, target, version = lines[0].decode("latin-1").split(" ", 2)
            headers = []
            for line in lines[1:]:
                k, _, v = line.decode("latin-1").partition(":")
                headers.append((k, v.strip()))
            req = Request(method, target, version, headers, head)
            if not self._read_body(c, req, keep=target.startswith("/echo")):
                return
            with self.lock:
                self.requests.append(req)
            if not self._respond(c, req):
                return
            conn_hdr = (req.header("connection") or "").lower()
            if "close" in conn_hdr or version == "HTTP/1.0":
                return

    def _respond(self, c, req):
        path = req.target.split("?")[0]
        parts = path.strip("/").split("/")
        head_only = req.method == "HEAD"
        if parts[0] == "bytes" and len(parts) == 2:
            n = int(parts[1])
            c.send(f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n"
                   "Content-Type: application/octet-stream\r\n\r\n".encode())
            if not head_only:
                sent = 0
                while sent < n:
                    piece = PATTERN[:min(len(PATTERN), n - sent)]
                    c.send(piece)
                    sent += len(piece)
            return True
        if parts[0] == "chunked" and len(parts) == 2:
            n = int(parts[1])
            c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n")
            if not head_only:
                sent = 0
                while sent < n:
                    piece = PATTERN[:min(len(PATTERN), n - sent)]
                    c.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    sent += len(piece)
                c.send(b"0\r\nX-Checksum: done\r\n\r\n")
            return True
        if parts[0] == "close" and len(parts) == 2:
            n = int(parts[1])
            c.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            if not head_only:
                c.send(pattern_bytes(n))
            return False
        if parts[0] == "status" and len(parts) == 2:
            st = int(parts[1])
            if st in (204, 304) or st < 200:
                c.send(f"HTTP/1.1 {st} Status\r\n\r\n".encode())
            else:
                c.send(f"HTTP/1.1 {st} Status\r\nContent-Length: 0\r\n\r\n".encode())
            return True
        if parts[0] == "slow" and len(parts) == 2:
            time.sleep(int(parts[1]) / 1000.0)
            c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
            return True
        if parts[0] == "echo":
            body = req.body or b""
            c.send(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            if not head_only:
                c.send(body)
            return True
        summary = {
            "method": req.method,
            "target": req.target,
            "version": req.version,
            "headers": req.headers,
            "body_len": req.body_len,
            "body_sha256": req.body_sha256,
        }
        body = json.dumps(summary).encode()
        c.send(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n".encode())
        if not head_only:
            c.send(body)
        return True


class HealthOrigin(HttpOrigin):
    """An HttpOrigin whose /health answers `health_status` with body `health_body`. Health
    checks are counted in `checks` and kept out of `requests`."""

    def __init__(self, host="127.0.0.1", port=0):
        super().__init__(host=host, port=port)
        self.health_status = 200
        self.health_body = b"ok\n"
        self.checks = 0

    def _respond(self, c, req):
        if req.target == "/health":
            with self.lock:
                self.checks += 1
                self.requests.remove(req)
            body = self.health_body
            c.send(f"HTTP/1.1 {self.health_status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                   + body)
            return True
        return super()._respond(c, req)
