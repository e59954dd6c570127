"""gRPC-Web through weir (issue 12): a route with grpc_web: true takes application/grpc-web
and application/grpc-web-text requests from HTTP/1.1 (and HTTP/2) clients, as browsers send
them, and calls a real gRPC server (python3-grpcio) over h2c; the response comes back as
gRPC-Web, trailers in the body's last frame (flag 0x80), base64 for -text. The client here is
a plain HTTP/1.1 client that frames messages as grpc-web's JavaScript client does.
"""
import base64
import http.client
import struct

import pytest

from conftest import check_refuses, free_port
from h2_client import H2Client
from test_grpc import SERVICE, grpc_server


@pytest.fixture(scope="module")
def backend():
    server, port = grpc_server()
    yield port
    server.stop(0)


def config(port, backend_port, protocol="h2c", grpc_web="true"):
    return (f"server:\n  threads: 2\n  grace_period: 5s\n"
            f"listeners:\n  - address: 127.0.0.1:{port}\n    h2c: true\n"
            f"routes:\n  - upstream: grpc\n    grpc_web: {grpc_web}\n"
            f"upstreams:\n  grpc:\n    protocol: {protocol}\n"
            f"    backends: [127.0.0.1:{backend_port}]\n")


def frame(msg, flag=0):
    return struct.pack(">BI", flag, len(msg)) + msg


def parse(body):
    """A gRPC-Web body: ([messages], {trailers}) (trailers None without a trailers frame)."""
    msgs, trailers, i = [], None, 0
    while i < len(body):
        flag, n = struct.unpack(">BI", body[i:i + 5])
        data = body[i + 5:i + 5 + n]
        assert len(data) == n, "a truncated frame"
        i += 5 + n
        if flag & 0x80:
            assert trailers is None and i == len(body), "the trailers frame comes last"
            trailers = {}
            for line in data.decode().split("\r\n"):
                if line:
                    k, v = line.split(":", 1)
                    assert k == k.lower()
                    trailers[k] = v.strip()
        else:
            msgs.append(data)
    return msgs, trailers


def call(conn, method, body, text=False, headers=None):
    ct = "application/grpc-web-text+proto" if text else "application/grpc-web+proto"
    h = {"Content-Type": ct, "X-Grpc-Web": "1", "Accept": ct}
    h.update(headers or {})
    conn.request("POST", f"/{SERVICE}/{method}",
                 body=base64.b64encode(body) if text else body, headers=h)
    r = conn.getresponse()
    data = r.read()
    return r, base64.b64decode(data) if text and data else data


@pytest.fixture
def web(weir, backend):
    port = free_port()
    weir(config(port, backend), port=port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    yield conn
    conn.close()


def test_unary_binary_with_deadline_metadata_and_trailers(web):
    r, body = call(web, "Unary", frame(b"hello"),
                   headers={"grpc-timeout": "5S", "x-md": "v1"})
    assert r.status == 200
    assert r.getheader("content-type") == "application/grpc-web+proto"
    msgs, trailers = parse(body)
    assert len(msgs) == 1 and msgs[0].startswith(b"echo:hello;deadline=")
    left = float(msgs[0].split(b"deadline=")[1].split(b";")[0])
    assert 0 < left <= 5.0  # grpc-timeout went through
    assert msgs[0].endswith(b";md=v1")
    assert trailers["grpc-status"] == "0" and trailers["x-trailer"] == "t1"
    # a 1 MiB message both ways, and the keep-alive connection goes on
    big = bytes(range(256)) * 4096
    r, body = call(web, "Unary", frame(big))
    msgs, trailers = parse(body)
    assert msgs[0].startswith(b"echo:" + big) and trailers["grpc-status"] == "0"


def test_server_streaming_and_client_streaming(web):
    r, body = call(web, "ServerStream", frame(b"50"))
    msgs, trailers = parse(body)
    assert msgs == [b"m%d" % i for i in range(50)] and trailers["grpc-status"] == "0"
    r, body = call(web, "ClientStream", frame(b"a") + frame(b"b") + frame(b"c" * 100000))
    msgs, trailers = parse(body)
    assert msgs == [b"a+b+" + b"c" * 100000] and trailers["grpc-status"] == "0"


def test_text_mode_both_ways(web):
    r, body = call(web, "ServerStream", frame(b"20"), text=True)
    assert r.getheader("content-type") == "application/grpc-web-text+proto"
    msgs, trailers = parse(body)
    assert msgs == [b"m%d" % i for i in range(20)] and trailers["grpc-status"] == "0"
    # each message encoded on its own (padding between them), as some clients send
    enc = b"".join(base64.b64encode(frame(m)) for m in (b"x", b"yy", b"zzz" * 1000))
    web.request("POST", f"/{SERVICE}/ClientStream", body=enc,
                headers={"Content-Type": "application/grpc-web-text"})
    r = web.getresponse()
    assert r.getheader("content-type") == "application/grpc-web-text"
    msgs, trailers = parse(base64.b64decode(r.read()))
    assert msgs == [b"x+yy+" + b"zzz" * 1000] and trailers["grpc-status"] == "0"


def test_error_status_is_a_trailers_only_response_on_a_kept_connection(web):
    """The gRPC server's trailers-only answer (END_STREAM on its head) must reach an
    HTTP/1.1 client as an empty body with a length: without Content-Length: 0 the client
    would read until the connection closes (the regression this test guards)."""
    r, body = call(web, "Unary", frame(b"fail"))
    assert r.status == 200 and body == b""
    assert r.getheader("grpc-status") == "5" and r.getheader("grpc-message") == "no such thing"
    assert r.getheader("content-length") == "0"
    r, body = call(web, "Unary", frame(b"again"))  # the same connection
    assert parse(body)[0][0].startswith(b"echo:again")


def test_not_base64_is_400(web):
    web.request("POST", f"/{SERVICE}/Unary", body=b"!!!!not base64",
                headers={"Content-Type": "application/grpc-web-text"})
    r = web.getresponse()
    r.read()
    assert r.status == 400


def test_upstream_down_is_unavailable_in_the_clients_type(weir):
    port = free_port()
    weir(config(port, free_port()), port=port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    r, body = call(conn, "Unary", frame(b"x"))
    assert r.status == 200 and body == b""
    assert r.getheader("grpc-status") == "14"
    assert r.getheader("content-type") == "application/grpc-web+proto"
    conn.close()


def test_grpc_web_from_an_h2_client(weir, backend):
    port = free_port()
    weir(config(port, backend), port=port)
    c = H2Client(port)
    rec = c.get(f"/{SERVICE}/ServerStream", method="POST", body=frame(b"3"),
                headers=[("content-type", "application/grpc-web"), ("x-grpc-web", "1")])
    assert rec["headers"][":status"] == "200"
    assert rec["headers"]["content-type"] == "application/grpc-web"
    assert rec["trailers"] is None  # they are in the body
    msgs, trailers = parse(rec["data"])
    assert msgs == [b"m0", b"m1", b"m2"] and trailers["grpc-status"] == "0"
    c.close()


def test_plain_grpc_still_passes_on_a_grpc_web_route(weir, backend):
    import grpc
    port = free_port()
    weir(config(port, backend), port=port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        out = ch.unary_unary(f"/{SERVICE}/Unary")(b"plain", timeout=10)
    assert out.startswith(b"echo:plain")


def test_grpc_web_needs_an_h2_upstream(tmp_path):
    path, err = check_refuses(tmp_path, config(1, 2, protocol="http1"))
    # file:line:col of the grpc_web value (line 9, after "    grpc_web: ")
    assert f"{path}:9:15: error: routes[0].grpc_web: grpc_web sends gRPC, which needs " \
        "HTTP/2: set upstreams.grpc.protocol to h2, h2c or auto" in err, err
