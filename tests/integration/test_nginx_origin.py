"""weir in front of a real origin: nginx serving static files and a small /echo location."""
import hashlib
import http.client
import os
import random
import socket
import stat

from conftest import free_port, proxy_config


def share_www(nginx_origin):
    """nginx's worker runs as an unprivileged user when the tests run as root; pytest's temp
    directories are 0700. Let that user reach the served files (only when running as root)."""
    if os.geteuid() != 0:
        return
    path = os.path.abspath(nginx_origin.www)
    while path not in ("/", "/tmp"):
        mode = os.stat(path).st_mode
        os.chmod(path, stat.S_IMODE(mode) | stat.S_IXOTH | stat.S_IROTH)
        path = os.path.dirname(path)


def start(weir, nginx_origin, threads=None):
    share_www(nginx_origin)
    port = free_port()
    cfg = proxy_config(port, [nginx_origin.port])
    if threads is not None:
        cfg = cfg.replace("  threads: 2\n", f"  threads: {threads}\n", 1)
    weir(cfg, port=port)
    return port


def write_file(nginx_origin, name, size, seed=1):
    data = random.Random(seed).randbytes(size)
    (nginx_origin.www / name).write_bytes(data)
    os.chmod(nginx_origin.www / name, 0o644)
    return data


def test_static_file_byte_exact(weir, nginx_origin):
    data = write_file(nginx_origin, "big.bin", 1 << 20)
    port = start(weir, nginx_origin)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request("GET", "/big.bin")
    r = c.getresponse()
    body = r.read()
    assert r.status == 200
    assert r.getheader("Content-Length") == str(len(data))
    assert len(body) == len(data)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert "weir" in (r.getheader("Via") or "")
    assert (r.getheader("Server") or "").startswith("nginx")


def test_static_file_head(weir, nginx_origin):
    data = write_file(nginx_origin, "big.bin", 1 << 20)
    (nginx_origin.www / "small.txt").write_bytes(b"small\n")
    port = start(weir, nginx_origin)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        # HEAD, then a GET on the same connection: the HEAD response must carry no body.
        s.sendall(b"HEAD /big.bin HTTP/1.1\r\nHost: example.test\r\n\r\n"
                  b"GET /small.txt HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
        buf = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            buf += b
    head1, _, rest = buf.partition(b"\r\n\r\n")
    assert head1.startswith(b"HTTP/1.1 200")
    assert f"\r\nContent-Length: {len(data)}".encode().lower() in head1.lower()
    assert rest.startswith(b"HTTP/1.1 "), f"HEAD response had body bytes: {rest[:80]!r}"
    head2, _, body2 = rest.partition(b"\r\n\r\n")
    assert head2.startswith(b"HTTP/1.1 200")
    assert body2 == b"small\n"


def test_keepalive_20_requests(weir, nginx_origin):
    files = {f"f{i}.txt": write_file(nginx_origin, f"f{i}.txt", 1000 + i * 37, seed=i)
             for i in range(20)}
    port = start(weir, nginx_origin, threads=1)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sock = None
    for name, data in files.items():
        c.request("GET", "/" + name)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200
        assert body == data
        if sock is None:
            sock = c.sock
        assert c.sock is sock, "client connection was not kept alive"
    c.close()


def test_404_passed_through(weir, nginx_origin):
    port = start(weir, nginx_origin)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/does-not-exist.html")
    r = c.getresponse()
    body = r.read()
    assert r.status == 404
    assert b"404" in body and b"nginx" in body
    # and the connection goes on
    (nginx_origin.www / "ok.txt").write_bytes(b"ok\n")
    c.request("GET", "/ok.txt")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b"ok\n"


def test_echo_post(weir, nginx_origin):
    port = start(weir, nginx_origin)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    body = random.Random(9).randbytes(300000)
    c.request("POST", "/echo?x=1&y=%20", body=body)
    r = c.getresponse()
    assert r.status == 200
    assert r.read() == b"nginx-echo POST /echo?x=1&y=%20\n"
    # a chunked upload too
    c.request("POST", "/echo/chunked", body=iter([b"abc", b"defg", b"h" * 5000]),
              encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert r.status == 200
    assert r.read() == b"nginx-echo POST /echo/chunked\n"
