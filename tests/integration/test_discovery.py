"""DNS service discovery end to end: weir resolves its backends through a real DNS server
(dnsmasq, on loopback, on a free port) while clients keep sending requests, and the test
changes what the server answers.

- A name with two addresses spreads traffic over both.
- Changing the hosts file (dnsmasq re-reads it on SIGHUP) moves traffic to the new set within
  about the TTL, with no client error and no in-flight request dropped.
- Stopping dnsmasq keeps the last good set; started again with other answers, the set follows.
- A group whose names cannot be resolved answers 503 until they are.
- SRV records give ports, weights and backups; AAAA records work when ::1 is usable.
- Bad resolver configuration is refused.

Backends are real HttpOrigins on distinct loopback addresses (127.0.0.2, 127.0.0.3, ...) sharing
one port, so a name's A records are all a backend set needs. Which backend served a request is
read from the origins' own records.
"""
import http.client
import os
import pwd
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import SANITIZED, check_refuses, free_port, skip_unless_ci, wait_for
from origin import HealthOrigin, HttpOrigin

SLOW = 3 if SANITIZED else 1
DNSMASQ = "/usr/sbin/dnsmasq"
DOMAIN = "weir.test"


def free_dns_port():
    """A port free on 127.0.0.1 for both UDP and TCP (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no free port for the DNS server")


def dns_query(port, name, qtype=1, timeout=0.5):
    """Asks 127.0.0.1:port for name; returns (rcode, [addresses as text]) or None on timeout."""
    qid = int(time.monotonic() * 1000) & 0xFFFF
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    msg = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(msg, ("127.0.0.1", port))
            data = s.recv(4096)
        except OSError:
            return None
    rcode = data[3] & 0x0F
    ancount = struct.unpack(">H", data[6:8])[0]
    pos = 12 + len(question) + 4
    out = []
    for _ in range(ancount):
        while data[pos] != 0 and data[pos] & 0xC0 != 0xC0:
            pos += data[pos] + 1
        pos += 2 if data[pos] & 0xC0 == 0xC0 else 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        rdata = data[pos:pos + rdlen]
        pos += rdlen
        if rtype == 1:
            out.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28:
            out.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return rcode, sorted(out)


class Dnsmasq:
    """dnsmasq answering for *.weir.test from a hosts file (TTL 1 s) and --srv-host records."""

    def __init__(self, workdir, port=None):
        self.dir = workdir
        self.port = port or free_dns_port()
        self.hosts = os.path.join(workdir, "dns-hosts")
        self.proc = None
        self.log = None

    def write_hosts(self, entries):
        """entries: {name: [addresses]} (names without the domain)."""
        tmp = self.hosts + ".tmp"
        with open(tmp, "w") as f:
            for name, addrs in entries.items():
                for a in addrs:
                    f.write(f"{a} {name}.{DOMAIN}\n")
        os.replace(tmp, self.hosts)

    def start(self, entries, srv=()):
        if not os.path.exists(DNSMASQ):
            pytest.fail("dnsmasq is not installed (scripts/deps.sh installs dnsmasq-base)")
        self.write_hosts(entries)
        args = [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                f"--addn-hosts={self.hosts}", "--local-ttl=1", f"--local=/{DOMAIN}/",
                f"--pid-file={os.path.join(self.dir, 'dnsmasq.pid')}"]
        if os.getuid() == 0:
            # As root dnsmasq would become nobody, who cannot read pytest's 0700 temp dirs
            # when SIGHUP makes it read the hosts file again.
            args.append("--user=" + pwd.getpwuid(0).pw_name)
        args += [f"--srv-host={s}" for s in srv]
        self.log = open(os.path.join(self.dir, "dnsmasq.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("dnsmasq exited: " + self.log_text())
            if dns_query(self.port, f"nothing.{DOMAIN}", timeout=0.2) is not None:
                return self
            time.sleep(0.05)
        raise AssertionError("dnsmasq did not answer: " + self.log_text())

    def log_text(self):
        with open(os.path.join(self.dir, "dnsmasq.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def change_hosts(self, entries, check_name):
        """Rewrites the hosts file, makes dnsmasq read it (SIGHUP) and waits until it answers
        check_name (without the domain) with the new addresses."""
        self.write_hosts(entries)
        want = sorted(a for a in entries[check_name] if ":" not in a)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(self.proc.pid, signal.SIGHUP)
            time.sleep(0.1)
            got = dns_query(self.port, f"{check_name}.{DOMAIN}")
            if got is not None and got[1] == want:
                return
        raise AssertionError(f"dnsmasq still answers {got} for {check_name}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None


@pytest.fixture
def dns(tmp_path):
    made = []

    def make(port=None):
        d = Dnsmasq(str(tmp_path), port)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def origins():
    """origins(hosts, port=None, cls=HttpOrigin): an origin on each host, all on one port."""
    made = []

    def make(hosts, port=None, cls=HttpOrigin):
        for _ in range(20):
            group = []
            try:
                for h in hosts:
                    o = cls(host=h, port=port or (group[0].port if group else 0))
                    group.append(o)
            except OSError:
                for o in group:
                    o.stop()
                if port:
                    raise
                continue
            for o in group:
                o.start()
            made.extend(group)
            return group
        raise AssertionError("no port free on every host")

    yield make
    for o in made:
        o.stop()


def start_weir(weir, dns_port, backends, upstream_extra="", resolver_extra=""):
    port = free_port()
    lines = "".join(f"      - {b}\n" for b in backends)
    cfg = (f"server:\n  threads: 2\n  grace_period: 5s\n"
           f"  resolver:\n    servers: [127.0.0.1:{dns_port}]\n    timeout: 500ms\n"
           f"    retry: 500ms\n{resolver_extra}"
           f"listeners:\n  - 127.0.0.1:{port}\n"
           f"routes:\n  - upstream: app\n"
           f"upstreams:\n  app:\n{upstream_extra}    backends:\n{lines}")
    return weir(cfg, port=port), port


def get(port, n, path="/x"):
    """n GETs on one keep-alive connection; returns the statuses."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15 * SLOW)
    out = []
    for i in range(n):
        c.request("GET", f"{path}/{i}")
        r = c.getresponse()
        r.read()
        out.append(r.status)
    c.close()
    return out


class Traffic:
    """A client sending GETs back to back on a keep-alive connection (a new one after a
    failure) until stopped, counting answers and failures."""

    def __init__(self, port, path="/t"):
        self.port = port
        self.path = path
        self.ok = 0
        self.errors = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        c = None
        i = 0
        while not self.stopping.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15 * SLOW)
                c.request("GET", f"{self.path}/{i}")
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    self.ok += 1
                else:
                    self.errors.append(r.status)
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                c = None
            i += 1
        if c is not None:
            c.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=30 * SLOW)
        assert not self.thread.is_alive(), "the client did not stop"


def count(origin_list):
    return [len(o.requests) for o in origin_list]


def clear(origin_list):
    for o in origin_list:
        with o.lock:
            o.requests.clear()


def test_name_with_two_addresses_spreads_traffic(weir, dns, origins):
    a, b = origins(["127.0.0.2", "127.0.0.3"])
    d = dns().start({"app": ["127.0.0.2", "127.0.0.3"]})
    w, port = start_weir(weir, d.port, [f"app.{DOMAIN}:{a.port}"])
    # The proxy starts once the name has resolved: the very first requests are served.
    assert get(port, 40) == [200] * 40
    assert count([a, b]) == [20, 20]
    assert f"discovery: app.{DOMAIN}: 2 backends" in w.stderr()


def test_changed_answers_move_traffic_without_errors(weir, dns, origins):
    a, b, c = origins(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    d = dns().start({"app": ["127.0.0.2", "127.0.0.3"]})
    w, port = start_weir(weir, d.port, [f"app.{DOMAIN}:{a.port}"])
    slow_results = []

    def slow_requests():
        # In flight across the change: each takes 300 ms at the origin.
        slow_results.extend(get(port, 8, "/slow/300"))

    with Traffic(port) as t:
        assert wait_for(lambda: t.ok >= 20, 10 * SLOW)
        slow = threading.Thread(target=slow_requests, daemon=True)
        slow.start()
        time.sleep(0.4)
        changed = time.monotonic()
        d.change_hosts({"app": ["127.0.0.3", "127.0.0.4"]}, "app")
        # TTL 1 s (the min_ttl too): the new address gets traffic within about that.
        assert wait_for(lambda: len(c.requests) > 0, 5 * SLOW), w.stderr()
        moved_after = time.monotonic() - changed
        time.sleep(0.5)  # requests routed before the change have all arrived
        clear([a, b, c])
        ok_before = t.ok
        assert wait_for(lambda: t.ok >= ok_before + 40, 10 * SLOW)
        slow.join(timeout=30 * SLOW)
    assert t.errors == [], t.errors
    assert slow_results == [200] * 8
    assert len(a.requests) == 0
    assert len(b.requests) > 0 and len(c.requests) > 0
    assert moved_after < 4 * SLOW
    assert f"discovery: app.{DOMAIN}: 2 backends: 127.0.0.3:{a.port}, 127.0.0.4:{a.port}" in \
        w.stderr()


def test_dns_down_keeps_the_last_good_set(weir, dns, origins):
    a, b, c = origins(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    d = dns().start({"app": ["127.0.0.2", "127.0.0.3"]})
    w, port = start_weir(weir, d.port, [f"app.{DOMAIN}:{a.port}"])
    with Traffic(port) as t:
        assert wait_for(lambda: t.ok >= 20, 10 * SLOW)
        d.stop()
        assert wait_for(lambda: "lookup failed" in w.stderr(), 5 * SLOW), w.stderr()
        # Several TTLs and retries without a resolver: nothing changes for the clients.
        clear([a, b])
        time.sleep(3)
        assert len(a.requests) > 0 and len(b.requests) > 0
        # The resolver comes back with another answer: the set follows.
        d2 = dns(d.port).start({"app": ["127.0.0.4"]})
        assert wait_for(lambda: len(c.requests) > 0, 10 * SLOW), w.stderr()
        time.sleep(0.5)
        clear([a, b, c])
        ok_before = t.ok
        assert wait_for(lambda: t.ok >= ok_before + 20, 10 * SLOW)
    assert t.errors == [], t.errors
    assert count([a, b]) == [0, 0] and len(c.requests) > 0
    assert "resolves again" in w.stderr()
    d2.stop()


def test_unresolved_group_answers_503_until_resolved(weir, dns, origins):
    (a,) = origins(["127.0.0.2"])
    d = dns()  # not started: nothing answers on its port yet
    w, port = start_weir(weir, d.port, [f"app.{DOMAIN}:{a.port}"])
    assert "not resolved within" in w.stderr() or "lookup failed" in w.stderr()
    assert get(port, 3) == [503] * 3
    d.start({"app": ["127.0.0.2"]})
    assert wait_for(lambda: get(port, 1) == [200], 10 * SLOW), w.stderr()


def test_static_and_dns_backends_together(weir, dns, origins):
    a, b = origins(["127.0.0.2", "127.0.0.3"])
    d = dns().start({"app": ["127.0.0.3"]})
    # The static backend is listed again by the name: it is kept once.
    w, port = start_weir(weir, d.port, [f"127.0.0.2:{a.port}", f"app.{DOMAIN}:{a.port}",
                                        f"127.0.0.3:{a.port}"])
    assert get(port, 20) == [200] * 20
    assert count([a, b]) == [10, 10]


def test_health_checks_follow_the_resolved_set(weir, dns, origins):
    a, b, c = origins(["127.0.0.2", "127.0.0.3", "127.0.0.4"], cls=HealthOrigin)
    b.health_status = 503
    d = dns().start({"app": ["127.0.0.2", "127.0.0.3"]})
    check = ("    health_check:\n      path: /health\n      interval: 100ms\n"
             "      timeout: 100ms\n      rise: 1\n      fall: 1\n")
    w, port = start_weir(weir, d.port, [f"app.{DOMAIN}:{a.port}"], upstream_extra=check)
    assert wait_for(lambda: f"backend 127.0.0.3:{a.port} is down" in w.stderr(), 5 * SLOW)
    time.sleep(0.2)
    clear([a, b])
    assert get(port, 20) == [200] * 20
    assert count([a, b]) == [20, 0]
    # A backend that DNS adds is checked from the next round on, and used.
    with Traffic(port) as t:
        d.change_hosts({"app": ["127.0.0.2", "127.0.0.3", "127.0.0.4"]}, "app")
        assert wait_for(lambda: len(c.requests) > 0, 5 * SLOW), w.stderr()
    assert t.errors == [], t.errors
    assert len(b.requests) == 0
    # b stays down: the set kept its backend object (and health) across the update.
    assert w.stderr().count(f"backend 127.0.0.3:{a.port} is down") == 1


def test_srv_gives_ports_weights_and_backups(weir, dns, origins):
    p1, p2, p3 = origins(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    (p4,) = origins(["127.0.0.2"])  # another port on b1's address: the backup
    srv = f"_http._tcp.svc.{DOMAIN}"
    d = dns().start({"b1": ["127.0.0.2"], "b2": ["127.0.0.3"], "b3": ["127.0.0.4"]}, srv=[
        f"{srv},b1.{DOMAIN},{p1.port},0,10",
        f"{srv},b2.{DOMAIN},{p2.port},0,30",
        f"{srv},b3.{DOMAIN},{p3.port},0,0",
        f"{srv},b1.{DOMAIN},{p4.port},5,10",
    ])
    w, port = start_weir(weir, d.port, [f"{{srv: {srv}}}"],
                         upstream_extra="    max_fails: 1\n")
    # Weights 10, 30, 0 scale to 85, 256, 1 (of 256): one period of the smooth round robin.
    assert get(port, 342) == [200] * 342
    assert count([p1, p2, p3, p4]) == [85, 256, 1, 0]
    assert f"discovery: {srv}: 4 backends" in w.stderr()
    # With every primary gone, the backup serves.
    for o in (p1, p2, p3):
        o.stop()
    statuses = get(port, 10)
    assert statuses[-5:] == [200] * 5, statuses
    assert len(p4.requests) >= 5


def test_aaaa(weir, dns, origins):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        skip_unless_ci("::1 is not usable here")
    (a,) = origins(["::1"])
    d = dns().start({"v6": ["::1"]})
    w, port = start_weir(weir, d.port, [f"v6.{DOMAIN}:{a.port}"])
    assert get(port, 5) == [200] * 5
    assert len(a.requests) == 5
    assert f"[::1]:{a.port}" in w.stderr()


@pytest.mark.parametrize("resolver,msg", [
    ("    servers: [localhost:53]\n", "the host must be a numeric IP address"),
    ("    servers: [127.0.0.1]\n", "the port is missing"),
    ("    servers: []\n", "expected at least one server"),
    ("    timeout: 5ms\n", "at least 10ms"),
    ("    min_ttl: 2h\n", "must not be longer than max_ttl"),
    ("    sevrers: [127.0.0.1:53]\n", "did you mean 'servers'?"),
])
def test_bad_resolver_config_refused(tmp_path, resolver, msg):
    _, err = check_refuses(tmp_path, f"server:\n  resolver:\n{resolver}"
                           "listeners: [127.0.0.1:1]\nroutes: [{upstream: u}]\n"
                           "upstreams:\n  u:\n    backends: [app.weir.test:80]\n")
    assert msg in err, err


@pytest.mark.parametrize("backend,msg", [
    ("\"bad name:80\"", "the host must be a numeric IP address, localhost or a DNS name"),
    ("{srv: _http._tcp.x, address: a.b:1}", "address and srv are exclusive"),
    ("{srv: _http._tcp.x, weight: 2}", "the SRV records give the weights"),
])
def test_bad_dns_backend_refused(tmp_path, backend, msg):
    _, err = check_refuses(tmp_path, "listeners: [127.0.0.1:1]\nroutes: [{upstream: u}]\n"
                           f"upstreams:\n  u:\n    backends: [{backend}]\n")
    assert msg in err, err
