"""Worker threads: SO_REUSEPORT per worker and the shared EPOLLEXCLUSIVE socket both serve
concurrent keep-alive clients, and /proc shows which of the two is in place;
limits.max_connections makes new connections wait, not fail."""
import http.client
import json
import os
import re
import socket
import threading
import time

import pytest

from conftest import SANITIZED, free_port, proxy_config, recv_response


def config(port, backends, threads, work_stealing, extra=""):
    text = proxy_config(port, backends, server_extra=extra)
    return text.replace("  threads: 2\n",
                        f"  threads: {threads}\n  work_stealing: {str(work_stealing).lower()}\n")


@pytest.mark.parametrize("stealing", [False, True], ids=["reuseport", "work_stealing"])
def test_concurrent_keepalive_clients(weir, origin, stealing):
    port = free_port()
    w = weir(config(port, [origin.port], 2, stealing), port=port)
    clients, per_client = 20, 10
    errors = []
    done = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            start.wait(10)
            for i in range(per_client):
                target = f"/c{n}/r{i}"
                c.request("GET", target)
                r = c.getresponse()
                body = r.read()
                if r.status != 200 or json.loads(body)["target"] != target:
                    raise AssertionError(f"{target}: {r.status} {body[:100]!r}")
                if r.getheader("Connection", "").lower() == "close":
                    raise AssertionError(f"{target}: weir closed a keep-alive connection")
                with lock:
                    done.append(target)
        except Exception as e:  # noqa: BLE001 - reported below
            with lock:
                errors.append(f"client {n}: {e!r}")
        finally:
            c.close()

    ts = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, "\n".join(errors[:10])
    assert len(done) == clients * per_client
    assert sorted(r.target for r in origin.requests) == sorted(done)
    mode = "work stealing" if stealing else "SO_REUSEPORT"
    assert f"(2 threads, {mode})" in w.stderr(), w.stderr()


def raw_get(sock, target):
    """Sends one keep-alive GET and reads its response: (status, body)."""
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    r = recv_response(sock)
    return r.status, r.body


@pytest.mark.parametrize("stealing", [False, True], ids=["reuseport", "work_stealing"])
def test_max_connections_makes_new_connections_wait(weir, origin, stealing):
    port = free_port()
    weir(config(port, [origin.port], 1, stealing, extra="  limits:\n    max_connections: 2\n"),
         port=port)
    # wait_port's probe connection is closed by now; let weir notice before counting.
    time.sleep(0.3)
    a = socket.create_connection(("127.0.0.1", port), timeout=10)
    b = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        assert raw_get(a, "/a1")[0] == 200
        assert raw_get(b, "/b1")[0] == 200
        # Both stay open: a third connection is held back (the kernel completes the handshake
        # and the connection waits in the accept queue), neither served nor dropped.
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            c.sendall(b"GET /c1 HTTP/1.1\r\nHost: t\r\n\r\n")
            c.settimeout(1.0)
            try:
                early = c.recv(65536)
            except socket.timeout:
                early = None
            assert early is None, f"the third connection was not held back: {early!r}"
            assert not any(r.target == "/c1" for r in origin.requests)
            # a and b still work meanwhile.
            assert raw_get(a, "/a2")[0] == 200
            # Closing one lets the waiting connection in.
            a.close()
            c.settimeout(10 if SANITIZED else 5)
            data = b""
            while b"\r\n\r\n" not in data:
                piece = c.recv(65536)
                assert piece, "the waiting connection was dropped instead of served"
                data += piece
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
            head, _, body = data.partition(b"\r\n\r\n")
            length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length:")][0])
            while len(body) < length:
                body += c.recv(65536)
            assert json.loads(body)["target"] == "/c1"
            assert raw_get(b, "/b2")[0] == 200
            assert raw_get(c, "/c2")[0] == 200
        finally:
            c.close()
    finally:
        a.close()
        b.close()
    targets = sorted(r.target for r in origin.requests)
    assert targets == sorted(["/a1", "/a2", "/b1", "/b2", "/c1", "/c2"])


EPOLLEXCLUSIVE = 1 << 28


def listening_inodes(pid, port):
    """Inodes of the TCP sockets listening on 127.0.0.1:port that pid holds open."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            held.add(int(link[8:-1]))
    out = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1] == f"0100007F:{port:04X}" and cols[3] == "0A" and int(cols[9]) in held:
                out.add(int(cols[9]))
    return out


def epoll_watches(pid, inodes):
    """[(epoll fd, watched inode, events mask)] of pid's epoll sets watching those inodes."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        for m in re.finditer(r"tfd:\s+\d+ events:\s+([0-9a-f]+) .*? ino:([0-9a-f]+)", text):
            if int(m.group(2), 16) in inodes:
                out.append((int(fd), int(m.group(2), 16), int(m.group(1), 16)))
    return out


@pytest.mark.parametrize("stealing", [False, True], ids=["reuseport", "work_stealing"])
def test_work_stealing_shares_one_socket(weir, origin, stealing):
    """docs/CONFIG.md work_stealing, seen from outside in /proc: false gives each of the 3
    workers its own listening socket for the port (3 sockets, each in one epoll set, not
    exclusive); true gives one socket, in all 3 workers' epoll sets, each with EPOLLEXCLUSIVE.
    Both serve. Catches the key being ignored, a socket per worker under work_stealing, and a
    shared socket without EPOLLEXCLUSIVE (every worker woken for each connection)."""
    port = free_port()
    w = weir(config(port, [origin.port], 3, stealing), port=port)
    for i in range(6):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert raw_get(s, f"/ws/{i}")[0] == 200
    inodes = listening_inodes(w.pid, port)
    watches = epoll_watches(w.pid, inodes)
    assert len(inodes) == (1 if stealing else 3), (inodes, watches)
    assert len(watches) == 3 and len({ep for ep, _, _ in watches}) == 3, watches
    assert {ino for _, ino, _ in watches} == inodes, watches
    assert all(bool(ev & EPOLLEXCLUSIVE) == stealing for _, _, ev in watches), watches
