"""Request smuggling: every ambiguous framing a client can send, through weir, to an origin that
parses what it receives with a strict parser of its own (RFC 9110/9112, sharing no code with
weir) and answers each request it parsed with a response naming its sequence number.

For each case the client must get the statuses weir's parser documents (src/http1/h1.h: 400
for ambiguous framing, 501 for an unknown transfer coding, 505 for another HTTP version, 414/431
for oversized lines and heads, 413 over max_body_bytes), and the origin must never see a request
weir did not itself parse as one: the origin's request count equals the number of origin
answers the client got, each answer is for the request the client expects in that position,
the strict parser never fails on what weir forwarded, and bytes marked /smuggled never reach the
origin as a request.
"""
import hashlib
import re
import socket
import threading
import time

import pytest

from conftest import free_port, proxy_config


TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
REQUEST_LINE = re.compile(rb"(" + TCHAR + rb"+) ([\x21-\x7e]+) HTTP/1\.([01])\Z")
FIELD_LINE = re.compile(rb"(" + TCHAR + rb"+):[ \t]*((?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*"
                        rb"[\x21-\x7e\x80-\xff])?)?)[ \t]*\Z")
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?)\Z")


class StrictError(Exception):
    pass


class NeedMore(Exception):
    pass


class ParsedRequest:
    def __init__(self, seq, method, target, minor, headers, body, trailers, raw):
        self.seq = seq
        self.method = method
        self.target = target
        self.minor = minor
        self.headers = headers  # [(name bytes, value bytes)]
        self.body = body
        self.trailers = trailers
        self.raw = raw

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return vals

    def __repr__(self):
        return f"<{self.seq} {self.method!r} {self.target!r} body={len(self.body)}>"


def _line(buf, pos):
    """The line at pos (without CRLF) and the position after it; bare CR or LF is an error."""
    i = buf.find(b"\n", pos)
    if i < 0:
        if b"\r" in bytes(buf[pos:len(buf) - 1]):
            raise StrictError("bare CR")
        raise NeedMore()
    if i == pos or buf[i - 1:i] != b"\r":
        raise StrictError("bare LF")
    line = bytes(buf[pos:i - 1])
    if b"\r" in line:
        raise StrictError("bare CR")
    return line, i + 1


def parse_request(buf, pos=0):
    """Parses one request at buf[pos:]. Returns (method, target, minor, headers, body, trailers,
    end). Raises NeedMore when incomplete, StrictError when the bytes are not a valid request."""
    line, pos = _line(buf, pos)
    m = REQUEST_LINE.match(line)
    if not m:
        raise StrictError(f"request line {line[:80]!r}")
    method, target, minor = m.group(1), m.group(2), int(m.group(3))
    headers = []
    while True:
        line, pos = _line(buf, pos)
        if line == b"":
            break
        f = FIELD_LINE.match(line)
        if not f:
            raise StrictError(f"field line {line[:80]!r}")
        headers.append((f.group(1), f.group(2)))
    lower = [(k.lower(), v) for k, v in headers]
    hosts = [v for k, v in lower if k == b"host"]
    if len(hosts) > 1 or (minor == 1 and not hosts):
        raise StrictError("Host count")
    cls = [v for k, v in lower if k == b"content-length"]
    tes = [v for k, v in lower if k == b"transfer-encoding"]
    if cls and tes:
        raise StrictError("CL and TE")
    body, trailers = b"", []
    if tes:
        if len(tes) != 1 or tes[0].lower() != b"chunked" or minor == 0:
            raise StrictError(f"TE {tes!r}")
        while True:
            line, pos = _line(buf, pos)
            c = CHUNK_LINE.match(line)
            if not c:
                raise StrictError(f"chunk line {line[:80]!r}")
            size = int(c.group(1), 16)
            if size == 0:
                break
            if len(buf) < pos + size + 2:
                raise NeedMore()
            body += bytes(buf[pos:pos + size])
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise StrictError("chunk data not followed by CRLF")
            pos += size + 2
        while True:
            line, pos = _line(buf, pos)
            if line == b"":
                break
            if not FIELD_LINE.match(line):
                raise StrictError(f"trailer {line[:80]!r}")
            trailers.append(line)
    elif cls:
        if len(cls) != 1 or not re.fullmatch(rb"[0-9]{1,18}", cls[0]):
            raise StrictError(f"CL {cls!r}")
        n = int(cls[0])
        if len(buf) < pos + n:
            raise NeedMore()
        body = bytes(buf[pos:pos + n])
        pos += n
    return method, target, minor, headers, body, trailers, pos


class StrictOrigin:
    """Counts and records every request a strict parser finds in what weir sends."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.errors = []  # (connection index, reason, bytes)
        self.seq = 0
        self.conn_index = 0

    def response_for(self, req):
        body = (b"seq=%d %s %s len=%d sha=%s" %
                (req.seq, req.method, req.target, len(req.body),
                 hashlib.sha256(req.body).hexdigest()[:16].encode()))
        return (b"HTTP/1.1 200 OK\r\nX-Origin-Seq: %d\r\nContent-Length: %d\r\n\r\n" %
                (req.seq, len(body)) + body)

    def handler(self, c):
        with self.lock:
            index = self.conn_index
            self.conn_index += 1
        buf = bytearray()
        pos = 0
        while True:
            try:
                method, target, minor, headers, body, trailers, end = parse_request(buf, pos)
            except NeedMore:
                try:
                    b = c.recv_some()
                except (socket.timeout, OSError):
                    b = b""
                if not b:
                    if len(buf) > pos:
                        with self.lock:
                            self.errors.append((index, "closed mid-request",
                                                bytes(buf[pos:pos + 200])))
                    return
                buf += b
                continue
            except StrictError as e:
                with self.lock:
                    self.errors.append((index, str(e), bytes(buf[pos:pos + 200])))
                return
            with self.lock:
                self.seq += 1
                req = ParsedRequest(self.seq, method, target, minor, headers, body, trailers,
                                    bytes(buf[pos:end]))
                self.requests.append(req)
            pos = end
            c.send(self.response_for(req))
            conn = b",".join(req.header(b"connection")).lower()
            if b"close" in conn or minor == 0:
                return

    def targets(self):
        with self.lock:
            return [r.target.decode("latin-1") for r in self.requests]

    def strict_errors(self):
        """Parse errors other than a connection weir closed in the middle of a request (which
        is how weir abandons a request whose body went bad after the head was forwarded)."""
        with self.lock:
            return [e for e in self.errors if e[1] != "closed mid-request"]


def read_responses(sock, want, timeout=8.0, quiet=0.4):
    """Reads from sock until it closes, or until `want` complete responses arrived and nothing
    more came for `quiet` seconds. Returns (responses, leftover bytes, closed)."""
    data = b""
    deadline = time.monotonic() + timeout
    closed = False
    got_all_at = None
    while time.monotonic() < deadline:
        responses, rest = split_responses(data)
        if len(responses) >= want and got_all_at is None:
            got_all_at = time.monotonic()
        wait = quiet if got_all_at is not None else max(0.05, deadline - time.monotonic())
        sock.settimeout(wait)
        try:
            b = sock.recv(65536)
        except socket.timeout:
            if got_all_at is not None:
                break
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not b:
            closed = True
            break
        data += b
    responses, rest = split_responses(data)
    return responses, rest, closed


def split_responses(data):
    """[(status, [(name, value)], body)] of the complete responses in data, and the rest."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1."):
            break
        status = int(lines[0].split()[1])
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers.append((k.strip().lower(), v.strip()))
        hd = dict(headers)
        if status < 200 or status in (204, 304):
            out.append((status, headers, b""))
            data = rest
            continue
        if b"content-length" in hd:
            n = int(hd[b"content-length"])
            if len(rest) < n:
                break
            out.append((status, headers, rest[:n]))
            data = rest[n:]
        elif hd.get(b"transfer-encoding", b"").lower() == b"chunked":
            try:
                _, _, _, _, body, _, end = parse_request(
                    b"X / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + rest)
            except (NeedMore, StrictError):
                break
            out.append((status, headers, body))
            data = rest[end - len(b"X / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"):]
        else:
            break  # close-delimited: incomplete until close
    return out, data


# ---------------------------------------------------------------------------------------------
# the suite

LIMITS = ("  limits:\n"
          "    max_request_line: 1k\n"
          "    max_header_bytes: 4k\n"
          "    max_headers: 20\n"
          "    max_body_bytes: 64k\n"
          "  timeouts:\n"
          "    client_body: 3s\n"
          "    client_header: 3s\n")

H = b"Host: example.test\r\n"
SMUG = b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"  # must never reach the origin as a request
NEXT = b"GET /next HTTP/1.1\r\n" + H + b"\r\n"      # a genuine pipelined request


def post(fields, body=b"", target=b"/a", version=b"HTTP/1.1"):
    return b"POST " + target + b" " + version + b"\r\n" + H + fields + b"\r\n" + body


def te(value):
    return b"Transfer-Encoding: " + value + b"\r\n"


def get(fields=b"", target=b"/a", version=b"HTTP/1.1", host=H):
    return b"GET " + target + b" " + version + b"\r\n" + host + fields + b"\r\n"


CHUNKED_OK = b"5\r\nhello\r\n0\r\n\r\n"

# (id, bytes sent in one write, statuses the client gets, [(target, body) the origin parses])
CASES = [
    # --- Content-Length and Transfer-Encoding together, in both orders
    ("cl-te", post(b"Content-Length: 6\r\n" + te(b"chunked"), b"0\r\n\r\nX") + SMUG, [400], []),
    ("te-cl", post(te(b"chunked") + b"Content-Length: 6\r\n", b"0\r\n\r\nX") + SMUG, [400], []),
    ("cl-te-classic", post(b"Content-Length: 4\r\n" + te(b"chunked"),
                           b"5c\r\n" + SMUG + b"\r\n0\r\n\r\n"), [400], []),
    ("te-cl-zero", post(te(b"chunked") + b"Content-Length: 0\r\n", b"0\r\n\r\n") + SMUG,
     [400], []),
    ("cl-te-http10", post(b"Content-Length: 5\r\n" + te(b"chunked"), b"hello",
                          version=b"HTTP/1.0") + SMUG, [400], []),
    # --- repeated and listed Content-Length (weir refuses even identical repeats: h1.h)
    ("cl-repeated-same", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello") + SMUG,
     [400], []),
    ("cl-repeated-diff", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!") + SMUG,
     [400], []),
    ("cl-list-same", post(b"Content-Length: 5, 5\r\n", b"hello") + SMUG, [400], []),
    ("cl-list-diff", post(b"Content-Length: 5, 50\r\n", b"hello") + SMUG, [400], []),
    ("cl-list-empty-element", post(b"Content-Length: 5,\r\n", b"hello") + SMUG, [400], []),
    ("cl-inner-space", post(b"Content-Length: 5 5\r\n", b"hello") + SMUG, [400], []),
    ("cl-negative", post(b"Content-Length: -5\r\n", b"hello") + SMUG, [400], []),
    ("cl-plus", post(b"Content-Length: +5\r\n", b"hello") + SMUG, [400], []),
    ("cl-hex", post(b"Content-Length: 0x5\r\n", b"hello") + SMUG, [400], []),
    ("cl-2^63", post(b"Content-Length: 9223372036854775808\r\n") + SMUG, [400], []),
    ("cl-over-limit", post(b"Content-Length: 65537\r\n") + SMUG, [413], []),
    ("cl-ows-accepted", post(b"Content-Length: \t5 \r\n", b"hello") + NEXT, [200, 200],
     [("/a", b"hello"), ("/next", b"")]),
    ("cl-leading-zeros", post(b"Content-Length: 005\r\n", b"hello") + NEXT, [200, 200],
     [("/a", b"hello"), ("/next", b"")]),
    # --- Transfer-Encoding spellings: what is chunked is chunked, anything else is refused
    ("te-ows", post(te(b"  chunked  "), CHUNKED_OK) + NEXT, [200, 200],
     [("/a", b"hello"), ("/next", b"")]),
    ("te-tab", post(b"Transfer-Encoding:\tchunked\t\r\n", CHUNKED_OK) + NEXT, [200, 200],
     [("/a", b"hello"), ("/next", b"")]),
    ("te-upper", post(te(b"CHUNKED"), CHUNKED_OK) + NEXT, [200, 200],
     [("/a", b"hello"), ("/next", b"")]),
    ("te-empty-list-elements", post(te(b", ,chunked"), CHUNKED_OK) + NEXT, [200, 200],
     [("/a", b"hello"), ("/next", b"")]),
    ("te-chunked-twice", post(te(b"chunked, chunked"), CHUNKED_OK) + SMUG, [400], []),
    ("te-chunked-param", post(te(b"chunked;q=1"), CHUNKED_OK) + SMUG, [400], []),
    ("te-x-chunked", post(te(b"x-chunked"), CHUNKED_OK) + SMUG, [501], []),
    ("te-chunked-vt", post(te(b"chunked\x0b"), CHUNKED_OK) + SMUG, [400], []),
    ("te-chunked-ff", post(te(b"chunked\x0c"), CHUNKED_OK) + SMUG, [400], []),
    ("te-vt-before", post(te(b"\x0bchunked"), CHUNKED_OK) + SMUG, [400], []),
    ("te-nbsp", post(te(b"chunked\xa0"), CHUNKED_OK) + SMUG, [400], []),
    ("te-split-gzip-then-chunked", post(te(b"gzip") + te(b"chunked"), CHUNKED_OK) + SMUG,
     [501], []),
    ("te-split-chunked-twice", post(te(b"chunked") + te(b"chunked"), CHUNKED_OK) + SMUG,
     [400], []),
    ("te-split-chunked-then-gzip", post(te(b"chunked") + te(b"gzip"), CHUNKED_OK) + SMUG,
     [400], []),
    ("te-split-chunked-then-empty", post(te(b"chunked") + te(b""), CHUNKED_OK) + SMUG,
     [400], []),
    ("te-chunked-not-last", post(te(b"chunked, identity"), CHUNKED_OK) + SMUG, [400], []),
    ("te-identity", post(te(b"identity"), b"hello") + SMUG, [501], []),
    ("te-gzip-chunked", post(te(b"gzip, chunked"), CHUNKED_OK) + SMUG, [501], []),
    ("te-deflate", post(te(b"deflate"), b"hello") + SMUG, [501], []),
    ("te-space-before-colon", post(b"Transfer-Encoding : chunked\r\n", CHUNKED_OK) + SMUG,
     [400], []),
    ("te-tab-before-colon", post(b"Transfer-Encoding\t: chunked\r\n", CHUNKED_OK) + SMUG,
     [400], []),
    ("te-http10", post(te(b"chunked"), CHUNKED_OK, version=b"HTTP/1.0") + SMUG, [400], []),
    ("te-obs-fold", post(b"Transfer-Encoding:\r\n chunked\r\n", CHUNKED_OK) + SMUG, [400], []),
    ("te-folded-continuation", post(b"X-A: 1\r\n Transfer-Encoding: chunked\r\n",
                                    CHUNKED_OK) + SMUG, [400], []),
    # --- chunk sizes
    ("chunk-overflow-2^64", post(te(b"chunked"), b"10000000000000005\r\nhello\r\n0\r\n\r\n")
     + SMUG, [400], []),
    ("chunk-overflow-2^63", post(te(b"chunked"), b"8000000000000000\r\nhello\r\n") + SMUG,
     [400], []),
    ("chunk-overflow-leading-zeros", post(te(b"chunked"),
                                          b"0000000000000000000005\r\nhello\r\n0\r\n\r\n")
     + NEXT, [200, 200], [("/a", b"hello"), ("/next", b"")]),
    ("chunk-negative", post(te(b"chunked"), b"-1\r\nx\r\n0\r\n\r\n") + SMUG, [400], []),
    ("chunk-0x", post(te(b"chunked"), b"0x10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n") + SMUG,
     [400], []),
    ("chunk-inner-space", post(te(b"chunked"), b"1 0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n")
     + SMUG, [400], []),
    ("chunk-plus", post(te(b"chunked"), b"+5\r\nhello\r\n0\r\n\r\n") + SMUG, [400], []),
    ("chunk-leading-space", post(te(b"chunked"), b" 5\r\nhello\r\n0\r\n\r\n") + SMUG,
     [400], []),
    ("chunk-trailing-space", post(te(b"chunked"), b"5 \r\nhello\r\n0\r\n\r\n") + SMUG,
     [400], []),
    ("chunk-empty-size", post(te(b"chunked"), b"\r\nhello\r\n0\r\n\r\n") + SMUG, [400], []),
    ("chunk-junk-hex", post(te(b"chunked"), b"5g\r\nhello\r\n0\r\n\r\n") + SMUG, [400], []),
    ("chunk-data-too-long", post(te(b"chunked"), b"3\r\nhello\r\n0\r\n\r\n") + SMUG,
     [400], []),
    ("chunk-data-too-short", post(te(b"chunked"), b"6\r\nhello\r\n0\r\n\r\n") + SMUG,
     [400], []),
    # --- chunk extensions
    ("chunk-ext-valid", post(te(b"chunked"), b"5;name=value\r\nhello\r\n0;last\r\n\r\n")
     + NEXT, [200, 200], [("/a", b"hello"), ("/next", b"")]),
    ("chunk-ext-quoted-bws", post(te(b"chunked"), b"5 ;a=\"b;c\"\r\nhello\r\n0\r\n\r\n")
     + NEXT, [200, 200], [("/a", b"hello"), ("/next", b"")]),
    ("chunk-ext-nul", post(te(b"chunked"), b"5;a=\x00\r\nhello\r\n0\r\n\r\n") + SMUG,
     [400], []),
    ("chunk-ext-ctl", post(te(b"chunked"), b"5;a\x01b\r\nhello\r\n0\r\n\r\n") + SMUG,
     [400], []),
    ("chunk-ext-bare-cr", post(te(b"chunked"), b"5;a\rb\r\nhello\r\n0\r\n\r\n") + SMUG,
     [400], []),
    ("chunk-ext-del", post(te(b"chunked"), b"5;a\x7f\r\nhello\r\n0\r\n\r\n") + SMUG,
     [400], []),
    ("chunk-ext-too-long", post(te(b"chunked"), b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n")
     + SMUG, [400], []),
    # --- bare LF / CR in chunk lines
    ("chunk-size-bare-lf", post(te(b"chunked"), b"5\nhello\r\n0\r\n\r\n") + SMUG, [400], []),
    ("chunk-data-bare-lf", post(te(b"chunked"), b"5\r\nhello\n0\r\n\r\n") + SMUG, [400], []),
    ("chunk-size-bare-cr", post(te(b"chunked"), b"5\rhello\r\n0\r\n\r\n") + SMUG, [400], []),
    ("chunk-last-bare-lf", post(te(b"chunked"), b"5\r\nhello\r\n0\n\r\n") + SMUG, [400], []),
    ("chunk-end-bare-lf", post(te(b"chunked"), b"5\r\nhello\r\n0\r\n\n") + SMUG, [400], []),
    ("chunk-trailer-bare-lf", post(te(b"chunked"), b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n") + SMUG,
     [400], []),
    ("chunk-trailer-is-request", post(te(b"chunked"), b"0\r\n" + SMUG), [400], []),
    ("chunk-trailer-fold", post(te(b"chunked"), b"0\r\nX-T: 1\r\n 2\r\n\r\n") + SMUG,
     [400], []),
    ("chunk-trailer-ok", post(te(b"chunked"), b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n") + NEXT,
     [200, 200], [("/a", b"hello"), ("/next", b"")]),
    # --- bare LF / CR and obs-fold in the head
    ("head-bare-lf", b"GET /a HTTP/1.1\n" + H + b"\n" + SMUG, [400], []),
    ("head-bare-lf-field", get(b"X-A: 1\nX-B: 2\r\n") + SMUG, [400], []),
    ("head-bare-lf-end", b"GET /a HTTP/1.1\r\n" + H + b"\n" + SMUG, [400], []),
    ("head-bare-cr-field", get(b"X-A: 1\rX-B: 2\r\n") + SMUG, [400], []),
    ("head-bare-cr-line", b"GET /a HTTP/1.1\rX: y\r\n" + H + b"\r\n" + SMUG, [400], []),
    ("head-lf-cr", b"GET /a HTTP/1.1\n\r" + H + b"\r\n" + SMUG, [400], []),
    ("obs-fold-space", get(b"X-A: 1\r\n folded\r\n") + SMUG, [400], []),
    ("obs-fold-tab", get(b"X-A: 1\r\n\tfolded\r\n") + SMUG, [400], []),
    ("obs-fold-first-line", b"GET /a HTTP/1.1\r\n " + H + b"\r\n" + SMUG, [400], []),
    # --- NUL and CTL bytes in names, values and targets
    ("nul-in-name", get(b"X-\x00A: 1\r\n") + SMUG, [400], []),
    ("ctl-in-name", get(b"X-\x01A: 1\r\n") + SMUG, [400], []),
    ("nul-in-value", get(b"X-A: a\x00b\r\n") + SMUG, [400], []),
    ("ctl-in-value", get(b"X-A: a\x1fb\r\n") + SMUG, [400], []),
    ("del-in-value", get(b"X-A: a\x7fb\r\n") + SMUG, [400], []),
    ("nul-in-target", get(target=b"/a\x00b") + SMUG, [400], []),
    ("ctl-in-target", get(target=b"/a\x01b") + SMUG, [400], []),
    ("del-in-target", get(target=b"/a\x7fb") + SMUG, [400], []),
    ("tab-in-target", get(target=b"/a\tb") + SMUG, [400], []),
    ("high-byte-in-target", get(target=b"/a\xffb") + SMUG, [400], []),
    ("nul-in-method", b"G\x00T /a HTTP/1.1\r\n" + H + b"\r\n" + SMUG, [400], []),
    ("nul-in-host", get(host=b"Host: exa\x00mple.test\r\n") + SMUG, [400], []),
    ("obs-text-value-accepted", get(b"X-A: caf\xe9\r\n") + NEXT, [200, 200],
     [("/a", b""), ("/next", b"")]),
    # --- whitespace before the colon
    ("space-before-colon", get(b"X-A : 1\r\n") + SMUG, [400], []),
    ("space-before-colon-cl", post(b"Content-Length : 5\r\n", b"hello") + SMUG, [400], []),
    ("space-before-colon-host", b"GET /a HTTP/1.1\r\nHost : example.test\r\n\r\n" + SMUG,
     [400], []),
    ("tab-before-colon", get(b"X-A\t: 1\r\n") + SMUG, [400], []),
    # --- request-target forms
    ("asterisk-options", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n" + NEXT, [200, 200],
     [("*", b""), ("/next", b"")]),
    ("asterisk-get", b"GET * HTTP/1.1\r\n" + H + b"\r\n" + SMUG, [400], []),
    ("asterisk-post", b"POST * HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n" + SMUG,
     [400], []),
    ("asterisk-path", b"OPTIONS */x HTTP/1.1\r\n" + H + b"\r\n" + SMUG, [400], []),
    ("relative-target", get(target=b"a/b") + SMUG, [400], []),
    ("authority-target-get", get(target=b"example.test:80") + SMUG, [400], []),
    # --- Host
    ("host-missing", b"GET /a HTTP/1.1\r\nX-A: 1\r\n\r\n" + SMUG, [400], []),
    ("host-repeated", get(H) + SMUG, [400], []),
    ("host-repeated-different", get(b"Host: other.test\r\n") + SMUG, [400], []),
    ("host-empty-twice", b"GET /a HTTP/1.1\r\nHost:\r\nHost:\r\n\r\n" + SMUG, [400], []),
    # weir forwards as HTTP/1.1, which must carry a Host (RFC 9112 3.2): the strict origin
    # refuses a forwarded request without one
    ("host-http10-missing", b"GET /a HTTP/1.0\r\n\r\n" + SMUG, [200], [("/a", b"")]),
    # --- versions
    ("http09", b"GET /a\r\n" + SMUG, [400], []),
    ("http09-no-crlf-head", b"GET /a\r\n\r\n" + SMUG, [400], []),
    ("http20", get(version=b"HTTP/2.0") + SMUG, [505], []),
    ("http12", get(version=b"HTTP/1.2") + SMUG, [505], []),
    ("http09-version", get(version=b"HTTP/0.9") + SMUG, [505], []),
    ("http-lower", get(version=b"http/1.1") + SMUG, [400], []),
    ("http-two-digit", get(version=b"HTTP/1.10") + SMUG, [400], []),
    ("http-leading-zero", get(version=b"HTTP/01.1") + SMUG, [400], []),
    ("http-trailing-space", b"GET /a HTTP/1.1 \r\n" + H + b"\r\n" + SMUG, [400], []),
    ("http-junk", get(version=b"HTTP/1.1x") + SMUG, [400], []),
    ("http-missing-minor", get(version=b"HTTP/1") + SMUG, [400], []),
    # --- oversized lines (limits: request line 1k, head 4k, 20 fields)
    ("request-line-too-long", get(target=b"/" + b"a" * 2000) + SMUG, [414], []),
    ("field-too-long", get(b"X-Big: " + b"v" * 5000 + b"\r\n") + SMUG, [431], []),
    ("too-many-fields", get(b"".join(b"X-%d: 1\r\n" % i for i in range(25))) + SMUG,
     [431], []),
    # --- a body followed by a request in the same packet: the next pipelined request
    ("cl-body-then-request", post(b"Content-Length: 5\r\n", b"hello") + NEXT, [200, 200],
     [("/a", b"hello"), ("/next", b"")]),
    ("cl-body-swallows-request", post(b"Content-Length: %d\r\n" % (5 + len(SMUG)),
                                      b"hello" + SMUG), [200],
     [("/a", b"hello" + SMUG)]),
    ("cl-zero-then-request", post(b"Content-Length: 0\r\n") + NEXT, [200, 200],
     [("/a", b""), ("/next", b"")]),
    ("get-with-cl-body", get(b"Content-Length: 5\r\n") + b"hello" + NEXT, [200, 200],
     [("/a", b"hello"), ("/next", b"")]),
    ("chunked-then-request", post(te(b"chunked"), CHUNKED_OK) + NEXT, [200, 200],
     [("/a", b"hello"), ("/next", b"")]),
    ("chunked-then-junk", post(te(b"chunked"), CHUNKED_OK) + b"XYZ\r\n\r\n", [200, 400],
     [("/a", b"hello")]),
    ("chunked-then-two-requests", post(te(b"chunked"), CHUNKED_OK) + NEXT +
     b"GET /third HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", [200, 200, 200],
     [("/a", b"hello"), ("/next", b""), ("/third", b"")]),
    ("chunked-data-looks-like-request", post(te(b"chunked"), b"%x\r\n" % len(SMUG) + SMUG +
                                              b"\r\n0\r\n\r\n"), [200], [("/a", SMUG)]),
    ("connection-close-then-request", get(b"Connection: close\r\n") + SMUG, [200],
     [("/a", b"")]),
    ("http10-then-request", b"GET /a HTTP/1.0\r\n" + H + b"\r\n" + SMUG, [200], [("/a", b"")]),
]


def start(weir, backend_port):
    port = free_port()
    weir(proxy_config(port, [backend_port], server_extra=LIMITS), port=port)
    return port


@pytest.fixture
def strict(raw_origin):
    s = StrictOrigin()
    s.origin = raw_origin(s.handler)
    return s


def origin_seq(resp):
    for k, v in resp[1]:
        if k == b"x-origin-seq":
            return int(v)
    return None


def check(strict, responses, closed, statuses, expected):
    got = [r[0] for r in responses]
    assert got == statuses, f"statuses {got}, want {statuses}: {responses!r:.600}"
    if statuses[-1] >= 400:
        assert closed, "weir kept the connection open after an error response"
    time.sleep(0.1)  # let the origin threads record what arrived
    assert strict.strict_errors() == [], "the origin could not parse what weir forwarded"
    with strict.lock:
        reqs = list(strict.requests)
    # the origin parsed exactly the requests weir accepted, in order, with their bodies
    assert [(r.target.decode("latin-1"), r.body) for r in reqs] == \
        [(t, b) for t, b in expected]
    answered = [origin_seq(r) for r in responses if origin_seq(r) is not None]
    assert answered == [r.seq for r in reqs], "a client got another request's answer"
    for r in responses:
        seq = origin_seq(r)
        if seq is not None:
            assert r[2].startswith(b"seq=%d " % seq)
    raw = b"".join(bytes(x) for x in strict.origin.received)
    if not any(b"/smuggled" in b for _, b in expected):
        assert b"/smuggled" not in raw, "smuggled bytes reached the origin"


@pytest.mark.parametrize("data,statuses,expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_smuggling_one_write(weir, strict, data, statuses, expected):
    port = start(weir, strict.origin.port)
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        responses, rest, closed = read_responses(s, len(statuses))
    assert rest == b"", f"unframed bytes after the responses: {rest[:200]!r}"
    check(strict, responses, closed, statuses, expected)


SPLIT_IDS = ("cl-te", "te-cl", "cl-body-then-request", "chunked-then-request",
             "chunk-overflow-2^64", "te-chunked-vt", "head-bare-cr-field", "chunk-ext-ctl",
             "chunked-then-two-requests", "cl-body-swallows-request", "asterisk-options")


@pytest.mark.parametrize("data,statuses,expected",
                         [c[1:] for c in CASES if c[0] in SPLIT_IDS],
                         ids=[c[0] for c in CASES if c[0] in SPLIT_IDS])
def test_smuggling_byte_at_a_time(weir, strict, data, statuses, expected):
    """The same verdict when the bytes arrive one write at a time."""
    port = start(weir, strict.origin.port)
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for i in range(len(data)):
                s.sendall(data[i:i + 1])
                if i % 7 == 0:
                    time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            pass
        responses, rest, closed = read_responses(s, len(statuses))
    assert rest == b""
    check(strict, responses, closed, statuses, expected)


# --- absolute-form: forwarded sanely


def test_absolute_form_forwarded_consistently(weir, strict):
    """RFC 9112 3.2.2: with an absolute-form target the authority in it is the one that counts.
    Whatever weir forwards, the origin must not be left with a target naming one host and a
    Host field naming another."""
    port = start(weir, strict.origin.port)
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.sendall(b"GET http://example.test/p?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n"
                  b"GET http://example.test/two HTTP/1.1\r\nHost: other.test\r\n"
                  b"Connection: close\r\n\r\n")
        responses, rest, closed = read_responses(s, 2)
    assert strict.strict_errors() == []
    with strict.lock:
        reqs = list(strict.requests)
    for resp, req in zip(responses, reqs):
        if resp[0] != 200:
            continue
        hosts = req.header(b"host")
        assert len(hosts) == 1
        t = req.target
        if t.startswith(b"http://"):
            authority = t[len(b"http://"):].split(b"/", 1)[0]
            assert authority.lower() == hosts[0].lower(), \
                f"forwarded target {t!r} with Host {hosts[0]!r}"
        else:
            assert t.startswith(b"/"), t
        # the authority that counts is the target's, for both requests
        assert hosts[0].lower() == b"example.test", f"{t!r} forwarded with Host {hosts[0]!r}"
    assert responses[0][0] == 200
    assert reqs[0].target in (b"/p?q=1", b"http://example.test/p?q=1")
    # the second request may be refused (400) or forwarded consistently; never smuggled
    assert len(reqs) == len([r for r in responses if origin_seq(r) is not None])
