"""gRPC through weir (issue 12), with Debian's python3-grpcio on both ends: a real gRPC
server behind weir (HTTP/2 to it: h2c, or h2 over TLS) and a real gRPC client in front (h2c, or
h2 over TLS). Unary, server-streaming, client-streaming and bidirectional calls; messages
intact (1 MiB included); the deadline reaches the server (grpc-timeout); status and message in
trailers; weir's own error, when the upstream is down, is a gRPC status (UNAVAILABLE), not an
HTML 502.
"""
from concurrent import futures

import grpc
import pytest

from conftest import free_port

SERVICE = "weir.Test"


def _unary(req, ctx):
    if req == b"fail":
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    left = ctx.time_remaining()
    md = dict(ctx.invocation_metadata())
    ctx.set_trailing_metadata((("x-trailer", "t1"),))
    return b"echo:" + req + b";deadline=" + (b"%.1f" % left if left is not None else b"none") + \
        b";md=" + md.get("x-md", "").encode()


def _server_stream(req, ctx):
    for i in range(int(req)):
        yield b"m%d" % i


def _client_stream(it, ctx):
    return b"+".join(it)


def _bidi(it, ctx):
    for m in it:
        yield m.upper()


def grpc_server(creds=None):
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    if creds is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, port


def read(path):
    with open(path, "rb") as f:
        return f.read()


def config(port, backend_port, protocol="h2c", listener_tls="", upstream_tls=""):
    return (f"server:\n  threads: 2\n  grace_period: 5s\n"
            f"listeners:\n  - address: 127.0.0.1:{port}\n{listener_tls or '    h2c: true'}\n"
            f"routes:\n  - upstream: grpc\n"
            f"upstreams:\n  grpc:\n    protocol: {protocol}\n{upstream_tls}"
            f"    backends: [127.0.0.1:{backend_port}]\n")


def exercise(channel):
    unary = channel.unary_unary(f"/{SERVICE}/Unary")
    out, call = unary.with_call(b"hello", timeout=5, metadata=(("x-md", "v1"),))
    assert out.startswith(b"echo:hello;deadline=")
    left = float(out.split(b"deadline=")[1].split(b";")[0])
    assert 0 < left <= 5.0  # grpc-timeout went through
    assert out.endswith(b";md=v1")
    assert ("x-trailer", "t1") in tuple(call.trailing_metadata())
    big = bytes(range(256)) * 4096  # 1 MiB
    assert unary(big, timeout=20).startswith(b"echo:" + big)
    with pytest.raises(grpc.RpcError) as e:
        unary(b"fail", timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "no such thing"
    stream = channel.unary_stream(f"/{SERVICE}/ServerStream")
    assert list(stream(b"50", timeout=10)) == [b"m%d" % i for i in range(50)]
    cstream = channel.stream_unary(f"/{SERVICE}/ClientStream")
    assert cstream(iter([b"a", b"b", b"c" * 100000]), timeout=10) == b"a+b+" + b"c" * 100000
    bidi = channel.stream_stream(f"/{SERVICE}/Bidi")
    assert list(bidi(iter([b"x%d" % i for i in range(100)]), timeout=10)) == \
        [b"X%d" % i for i in range(100)]


def test_grpc_h2c_both_sides(weir):
    server, gport = grpc_server()
    try:
        port = free_port()
        weir(config(port, gport), port=port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            exercise(ch)
    finally:
        server.stop(0)


def test_grpc_tls_both_sides(weir, pki):
    creds = grpc.ssl_server_credentials([(read(pki.upstream_key), read(pki.upstream_cert))])
    server, gport = grpc_server(creds)
    try:
        port = free_port()
        listener_tls = (f"    tls:\n      certificates: [{{cert: {pki.server_cert}, "
                        f"key: {pki.server_key}}}]")
        upstream_tls = f"    tls: {{sni: secure.api.endpoint, ca: {pki.ca}}}\n"
        weir(config(port, gport, "h2", listener_tls, upstream_tls), port=port)
        cc = grpc.ssl_channel_credentials(root_certificates=read(pki.ca))
        with grpc.secure_channel(f"127.0.0.1:{port}", cc, options=(
                ("grpc.ssl_target_name_override", "localhost"),)) as ch:
            exercise(ch)
    finally:
        server.stop(0)


def test_grpc_upstream_down_is_unavailable(weir):
    port = free_port()
    weir(config(port, free_port()), port=port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        unary = ch.unary_unary(f"/{SERVICE}/Unary")
        with pytest.raises(grpc.RpcError) as e:
            unary(b"x", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Bad Gateway" in e.value.details()
