"""Shared harness for weir's integration tests.

Everything here starts real processes on loopback with ephemeral ports: the weir binary
(WEIR_BIN, set by ctest), byte-exact Python origins the test controls, and nginx as an origin.
Every process started is stopped by PID at teardown; weir must exit cleanly and print no
sanitizer report.
"""
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time

import pytest

from origin import Origin, HttpOrigin  # noqa: F401  (re-exported for tests)
import tls_pki

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIR_BIN = os.environ.get("WEIR_BIN", os.path.join(ROOT, "build", "weir"))
EXAMPLES_DIR = os.environ.get("WEIR_EXAMPLES_DIR", os.path.join(ROOT, "build", "examples"))
SANITIZED = os.environ.get("WEIR_SANITIZED", "0") == "1"
# A command that prefixes weir's (e.g. "valgrind --error-exitcode=99 ..."; see `make memcheck`).
WRAPPER = shlex.split(os.environ.get("WEIR_WRAPPER", ""))
# Slow runtimes (valgrind) need longer to start and stop.
SLOW = 4 if WRAPPER else 1

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "assertion failed",
)


def free_port():
    """A port the kernel just handed out on 127.0.0.1 (closed again, so reusable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout):
    """Polls cond every 50 ms until it is true or timeout seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# CI (.ci/run) sets CI=true: there, a test that cannot run here would hide a documented
# behaviour, so it fails instead of skipping.
IN_CI = os.environ.get("CI") == "true"


def skip_unless_ci(reason):
    """Skips the test for reason, or fails it when CI=true (pytest -rs lists the skips)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a skip here would hide a documented behaviour)")
    pytest.skip(reason)

def check_refuses(tmp_path, config_text):
    """Writes config_text to tmp_path/bad.yaml and runs `weir -t -c` on it: asserts that the
    check refuses it (exit 1) and returns (path, stderr)."""
    path = tmp_path / "bad.yaml"
    path.write_text(config_text)
    r = subprocess.run([WEIR_BIN, "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1, r.stderr
    return path, r.stderr


def wait_port(port, timeout=10.0, host="127.0.0.1"):
    """Waits until something accepts connections on port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class Weir:
    """One weir process: started from a config text, a command line, or an example binary."""

    def __init__(self, args, workdir, port=None, env=None, binary=None):
        self.args = list(args)
        self.workdir = workdir
        self.port = port
        self.stderr_path = os.path.join(workdir, f"weir-{id(self)}.stderr")
        self.stdout_path = os.path.join(workdir, f"weir-{id(self)}.stdout")
        self.binary = binary or WEIR_BIN
        self.env = dict(os.environ)
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        self.env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if env:
            self.env.update(env)
        self.proc = None
        self.returncode = None

    def start(self, wait=True):
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(WRAPPER + [self.binary] + self.args, stdout=self._out,
                                     stderr=self._err, stdin=subprocess.DEVNULL,
                                     cwd=self.workdir, env=self.env)
        if wait and self.port:
            try:
                wait_port(self.port, timeout=(20 if SANITIZED else 10) * SLOW)
            except TimeoutError:
                self.stop(signal.SIGKILL)
                raise AssertionError("weir did not start:\n" + self.stderr())
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout(self):
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout=30):
        timeout *= SLOW
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
            raise AssertionError(f"weir did not exit within {timeout}s:\n" + self.stderr())
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stops weir with sig and returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        rc = self.wait(timeout)
        self._err.close()
        self._out.close()
        return rc

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def hwm_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def check_clean(self):
        err = self.stderr()
        for marker in SANITIZER_MARKERS:
            assert marker not in err, f"weir reported '{marker}':\n{err}"
        # valgrind prints its summary when the process exits (not after SIGKILL).
        for n in re.findall(r"ERROR SUMMARY: (\d+) errors", err):
            assert n == "0", f"valgrind reported errors:\n{err}"


@pytest.fixture
def weir(tmp_path):
    """weir(config_yaml, port=...) starts weir -c on a config text; stopped at teardown.

    weir.cli([...], port=...) starts it with any arguments instead. Each started process must
    exit 0 on SIGTERM at teardown (unless the test stopped it itself) and print no sanitizer
    report.
    """
    started = []

    def start_config(config_text, port=None, env=None, wait=True):
        path = tmp_path / f"weir-{len(started)}.yaml"
        path.write_text(config_text)
        w = Weir(["-c", str(path)], str(tmp_path), port=port, env=env)
        started.append(w)
        return w.start(wait=wait)

    def start_cli(args, port=None, env=None, wait=True, binary=None):
        w = Weir(args, str(tmp_path), port=port, env=env, binary=binary)
        started.append(w)
        return w.start(wait=wait)

    start_config.cli = start_cli
    start_config.tmp_path = tmp_path
    yield start_config
    for w in started:
        if w.proc is not None and w.returncode is None:
            rc = w.stop(signal.SIGTERM)
            assert rc == 0, f"weir exited {rc} on SIGTERM:\n{w.stderr()}"
        w.check_clean()


def proxy_config(listen_port, backends, server_extra="", routes=None, upstreams=None):
    """A config text: one listener, one route to one upstream group of backends."""
    backend_lines = "\n".join(f"      - 127.0.0.1:{p}" for p in backends)
    routes = routes or "  - upstream: backend\n"
    upstreams = upstreams or f"  backend:\n    backends:\n{backend_lines}\n"
    return (f"server:\n  threads: 2\n  grace_period: 10s\n{server_extra}"
            f"listeners:\n  - 127.0.0.1:{listen_port}\n"
            f"routes:\n{routes}"
            f"upstreams:\n{upstreams}")


@pytest.fixture
def origin():
    """An HttpOrigin (see origin.py) started on a free port; stopped at teardown."""
    o = HttpOrigin()
    o.start()
    yield o
    o.stop()


@pytest.fixture
def origins():
    """origins(n, cls=HttpOrigin): n more started origins of that class, stopped at teardown."""
    made = []

    def make(n, cls=HttpOrigin):
        new = [cls() for _ in range(n)]
        for o in new:
            o.start()
        made.extend(new)
        return new

    yield make
    for o in made:
        o.stop()


@pytest.fixture
def raw_origin():
    """Origin(handler): a TCP server whose handler(conn, data_so_far) scripts every byte."""
    made = []

    def make(handler):
        o = Origin(handler)
        o.start()
        made.append(o)
        return o

    yield make
    for o in made:
        o.stop()


NGINX_CONF = """
daemon off;
# As root, nginx's workers would run as nobody and could not read pytest's 0700 temp dirs.
user {user};
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
        location /echo {{
            client_max_body_size 0;
            return 200 "nginx-echo $request_method $request_uri\\n";
        }}
    }}
}}
"""


@pytest.fixture
def nginx_origin(tmp_path):
    """nginx serving files from a temp root: returns an object with .port and .www (a path)."""
    nginx = "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.fail("nginx is not installed (scripts/deps.sh installs nginx-light)")
    prefix = tmp_path / "nginx"
    (prefix / "www").mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    import pwd
    user = pwd.getpwuid(os.getuid()).pw_name
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, user=user))
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    class N:
        pass

    n = N()
    n.port = port
    n.www = prefix / "www"
    n.proc = proc
    try:
        wait_port(port)
    except TimeoutError:
        proc.kill()
        raise AssertionError("nginx did not start: " + proc.stderr.read().decode())
    yield n
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()



@pytest.fixture(scope="session")
def session_pki(tmp_path_factory):
    """The test PKI (tls_pki.build_pki), built once per session: attributes are file paths."""
    return tls_pki.build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def pki(session_pki):
    """session_pki under its short name (a module may define its own `pki`; fixtures here use
    session_pki so such an override does not reach them)."""
    return session_pki


NGINX_TLS_CONF = """
daemon off;
user {user};
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name secure.api.endpoint;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
{client_auth}
        # Inherited by every location that sets no add_header of its own; `always` keeps them
        # on the 403s too.
        add_header X-SNI $ssl_server_name always;
        add_header X-Client-DN $ssl_client_s_dn always;
        add_header X-Client-Verify $ssl_client_verify always;
        add_header X-Proto $ssl_protocol always;
        add_header X-Reused $ssl_session_reused always;
        client_max_body_size 0;
        location / {{
            return 200 "nginx-tls $request_method $request_uri\\n";
        }}
{locations}
    }}
}}
"""

NGINX_TLS_CLIENT_AUTH = """
        ssl_client_certificate {client_ca};
        ssl_verify_client {verify_client};
        ssl_verify_depth 2;
        location /secure_admin {{
            if ($ssl_client_s_dn !~ "(^|,)CN=admin(,|$)") {{
                return 403 "nginx-tls forbidden $request_uri\\n";
            }}
            return 200 "nginx-tls admin $request_method $request_uri\\n";
        }}
        location /need_cert {{
            if ($ssl_client_verify != SUCCESS) {{
                return 403 "nginx-tls no client cert $request_uri\\n";
            }}
            return 200 "nginx-tls cert $request_method $request_uri\\n";
        }}
"""


@pytest.fixture
def nginx_tls_origin(tmp_path, session_pki):
    """A factory start(client_ca=None, cert=None, key=None, locations=None,
    verify_client="optional") that launches nginx with `listen 127.0.0.1:PORT ssl` and returns
    an object with .port, .prefix and .error_log(); every nginx started is stopped at teardown.

    The default certificate is upstream_cert/key of session_pki (SAN secure.api.endpoint, signed
    by its ca). Every response is `nginx-tls $request_method $request_uri` with the headers X-SNI
    ($ssl_server_name), X-Client-DN ($ssl_client_s_dn), X-Client-Verify ($ssl_client_verify)
    X-Proto ($ssl_protocol) and X-Reused ($ssl_session_reused: r or .). With client_ca (a CA file): ssl_verify_client verify_client
    (optional: a client may send no cert, but one that fails verification gets nginx's 400 "The
    SSL certificate error"; optional_no_ca lets it through with X-Client-Verify FAILED:...),
    /secure_admin is 403 unless the client DN has CN=admin, /need_cert is 403 unless
    $ssl_client_verify is SUCCESS. locations: extra nginx text inside the server block (more
    location blocks; `location /` is already there).
    """
    nginx = "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.fail("nginx is not installed (scripts/deps.sh installs nginx-light)")
    import pwd
    user = pwd.getpwuid(os.getuid()).pw_name
    pki = session_pki
    started = []

    def start(client_ca=None, cert=None, key=None, locations=None, verify_client="optional"):
        prefix = tmp_path / f"nginx-tls-{len(started)}"
        prefix.mkdir()
        port = free_port()
        client_auth = ""
        if client_ca:
            client_auth = NGINX_TLS_CLIENT_AUTH.format(client_ca=client_ca,
                                                       verify_client=verify_client)
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_TLS_CONF.format(
            prefix=prefix, port=port, user=user, cert=cert or pki.upstream_cert,
            key=key or pki.upstream_key, client_auth=client_auth, locations=locations or ""))
        proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        class N:
            def error_log(self):
                path = prefix / "error.log"
                return path.read_text(errors="replace") if path.exists() else ""

        n = N()
        n.port, n.prefix, n.proc = port, prefix, proc
        started.append(n)

        def listening():
            if proc.poll() is not None:
                return True
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        # Bounded, and a config nginx refuses fails at once instead of after the timeout.
        if not wait_for(listening, 10) or proc.poll() is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise AssertionError("nginx (tls) did not start: " + proc.stderr.read().decode()
                                 + n.error_log())
        return n

    yield start
    for n in started:
        if n.proc.poll() is None:
            n.proc.terminate()
        try:
            n.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait()
        n.proc.stderr.close()


def raw_exchange(port, data, timeout=5.0, read_until_close=True, half_close=False):
    """Sends bytes, returns every byte received until the server closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
            if not read_until_close:
                break
        return b"".join(chunks)


def parse_head(head):
    """A response head (without its blank line): (status, headers dict, lower-case names, the
    first of each name)."""
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers.setdefault(k.strip().lower().decode(), v.strip().decode())
    return int(lines[0].split()[1]), headers


def parse_responses(data):
    """Splits raw bytes into [(status, headers(dict, lower-case keys), body)] using framing."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete response head: {data[:200]!r}")
        status, headers = parse_head(head)
        if status < 200:
            out.append((status, headers, b""))
            data = rest
            continue
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                line, _, rest = rest.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:size]
                rest = rest[size + 2:]
            data = rest
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out


def fd_count(pid):
    """How many file descriptors process pid has open (/proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def stalled_client(port, target, rcvbuf=4096, timeout=10.0, source=None):
    """A client that sends one keep-alive GET for target and then reads nothing: its receive
    window (SO_RCVBUF, set before connecting so the handshake advertises it) fills and stays
    full. source: an address to connect from (another 127.0.0.0/8 address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        if source is not None:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    except OSError:
        s.close()
        raise
    return s


class RawResponse:
    """One response read off a raw socket: status, headers (lower-case names), body (decoded
    from chunked), head (the bytes before the blank line), trailers (raw), extra (bytes read
    past the response: the start of a pipelined one)."""

    def __init__(self, status, headers, body, head, trailers, extra):
        self.status, self.headers, self.body = status, headers, body
        self.head, self.trailers, self.extra = head, trailers, extra


def recv_response(sock, timeout=10.0):
    """Reads exactly one response framed by Content-Length or chunked (no body for 1xx, 204,
    304; not close-delimited), leaving a keep-alive connection usable. Raises ConnectionError
    when the peer closes first; the whole read is bounded by timeout."""
    deadline = time.monotonic() + timeout
    data = bytearray()

    def more(what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"timed out waiting for {what}")
        sock.settimeout(left)
        b = sock.recv(1 << 20)
        if not b:
            raise ConnectionError(f"closed {what}: {bytes(data[:200])!r}")
        data.extend(b)

    while b"\r\n\r\n" not in data:
        more("before a response head")
    end = data.index(b"\r\n\r\n")
    head = bytes(data[:end])
    status, headers = parse_head(head)
    pos = end + 4
    body, trailers = b"", b""
    if status < 200 or status in (204, 304):
        pass
    elif "content-length" in headers:
        n = int(headers["content-length"])
        while len(data) < pos + n:
            more("inside a response body")
        body, pos = bytes(data[pos:pos + n]), pos + n
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            while data.find(b"\r\n", pos) < 0:
                more("inside a chunk size line")
            eol = data.index(b"\r\n", pos)
            size = int(bytes(data[pos:eol]).split(b";")[0], 16)
            pos = eol + 2
            if size == 0:
                while data.find(b"\r\n\r\n", pos - 2) < 0:
                    more("inside the trailers")
                tend = data.index(b"\r\n\r\n", pos - 2)
                trailers = bytes(data[pos:tend]) if tend > pos else b""
                pos = tend + 4
                break
            while len(data) < pos + size + 2:
                more("inside a chunk")
            parts.append(bytes(data[pos:pos + size]))
            pos += size + 2
        body = b"".join(parts)
    else:
        raise AssertionError(f"a response without a length: {head[:200]!r}")
    return RawResponse(status, headers, body, head, trailers, bytes(data[pos:]))


def run_in_thread(fn, *args):
    """Runs fn(*args) in a daemon thread; returns (thread, result holder dict)."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args)
        except Exception as e:  # noqa: BLE001 - reported to the test
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result
