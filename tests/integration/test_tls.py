"""TLS on listeners (issue 11): certificates chosen by SNI from their own names (exact,
wildcard, CN without SAN), RSA and ECDSA for the same names, the default certificate and
reject_unknown_sni, protocol versions, session tickets, plain HTTP on a TLS port, bodies over
TLS, and config errors that point at the key naming the file. Certificates are made here with
the openssl command line.
"""
import hashlib
import http.client
import json
import os
import socket
import ssl
import subprocess

import pytest

from conftest import check_refuses, free_port
from origin import pattern_bytes

WAIT = 10.0


def run(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=60)


class Pki:
    """A CA and certificates signed by it, in one directory; attribute paths are str."""

    def __init__(self, d):
        self.d = str(d)
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=weir test CA",
            cwd=self.d)
        self.ca = self.path("ca.pem")
        self.main = self.leaf("main", "DNS:localhost,DNS:weir.test,IP:127.0.0.1")
        self.main_rsa = self.leaf("main_rsa", "DNS:localhost,DNS:weir.test,IP:127.0.0.1", rsa=True)
        self.other = self.leaf("other", "DNS:other.test")
        self.wild = self.leaf("wild", "DNS:*.wild.test")
        self.cn_only = self.leaf("cn_only", None, cn="cn-only.test")
        self.expired = self.leaf("expired", "DNS:localhost", days=-1)
        self.upstream = self.leaf("upstream", "DNS:secure.api.endpoint")
        self.client = self.leaf("client", None, cn="client-admin")

    def path(self, name):
        return os.path.join(self.d, name)

    def leaf(self, name, san, rsa=False, cn=None, days=30):
        key = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt",
                                                     "ec_paramgen_curve:P-256"]
        run("openssl", "req", "-new", *key, "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={cn or name}", cwd=self.d)
        ext = self.path(f"{name}.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
        validity = ["-days", str(days)] if days > 0 else ["-days", "1"]
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-extfile", ext, *validity, cwd=self.d)
        if days <= 0:
            # Re-sign with a validity entirely in the past (openssl ca takes explicit dates).
            run("openssl", "x509", "-in", f"{name}.pem", "-out", f"{name}.pem", "-signkey",
                f"{name}.key", "-days", "1", cwd=self.d)
            self._backdate(name)
        return (self.path(f"{name}.pem"), self.path(f"{name}.key"))

    def _backdate(self, name):
        cnf = self.path("ca.cnf")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\n"
                    "serial=serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\n"
                    "[p]\ncommonName=supplied\n[x]\nsubjectAltName=DNS:localhost\n")
        open(self.path("index.txt"), "w").close()
        with open(self.path("serial"), "w") as f:
            f.write("1000\n")
        run("openssl", "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile",
            "ca.key", "-in", f"{name}.csr", "-out", f"{name}.pem", "-startdate",
            "20200101000000Z", "-enddate", "20200201000000Z", "-extensions", "x", "-notext",
            cwd=self.d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


def der(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def tls_config(port, backend, certs, extra=""):
    items = "".join(f"        - cert: {c}\n          key: {k}\n" for c, k in certs)
    return (f"server:\n  threads: 2\n  grace_period: 5s\n"
            f"listeners:\n  - address: 127.0.0.1:{port}\n    tls:\n      certificates:\n{items}"
            f"{extra}"
            f"routes:\n  - upstream: b\n"
            f"upstreams:\n  b:\n    backends: [127.0.0.1:{backend}]\n")


def client_ctx(pki, verify=True):
    ctx = ssl.create_default_context(cafile=pki.ca)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def handshake(port, ctx, sni):
    """The server's certificate (DER) and the protocol, for a handshake naming sni."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            return s.getpeercert(binary_form=True), s.version()


def get(port, ctx, path="/", host="localhost", conn=None):
    c = conn or http.client.HTTPSConnection(host, port, context=ctx, timeout=WAIT)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read(), c


@pytest.fixture
def tls_weir(weir, pki, origin):
    def start(certs=None, extra=""):
        port = free_port()
        w = weir(tls_config(port, origin.port, certs or [pki.main], extra), port=port)
        w.tls_port = port
        return w
    return start


def test_request_over_tls_is_forwarded_as_https(tls_weir, pki, origin):
    w = tls_weir()
    status, body, c = get(w.tls_port, client_ctx(pki), "/headers")
    assert status == 200
    head = json.loads(body)
    fields = {k.lower(): v for k, v in head["headers"]} if isinstance(head.get("headers"), list) \
        else {k.lower(): v for k, v in head.get("headers", head).items()}
    assert fields.get("x-forwarded-proto") == "https"
    # keep-alive over the same TLS connection, and a 1 MiB body whose bytes arrive intact
    for _ in range(5):
        status, body, c = get(w.tls_port, None, "/bytes/1048576", conn=c)
        assert status == 200 and body == pattern_bytes(1048576)
    c.close()


def test_upload_over_tls(tls_weir, pki):
    w = tls_weir()
    data = os.urandom(3 << 20)
    c = http.client.HTTPSConnection("localhost", w.tls_port, context=client_ctx(pki),
                                    timeout=WAIT)
    c.request("POST", "/upload", body=data)
    r = c.getresponse()
    summary = json.loads(r.read())
    assert r.status == 200
    assert summary["body_len"] == len(data)
    assert summary["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_sni_picks_the_certificate_by_its_names(tls_weir, pki):
    w = tls_weir([pki.main, pki.other, pki.wild, pki.cn_only])
    ctx = client_ctx(pki)
    assert handshake(w.tls_port, ctx, "weir.test")[0] == der(pki.main[0])
    assert handshake(w.tls_port, ctx, "OTHER.test")[0] == der(pki.other[0])
    assert handshake(w.tls_port, ctx, "a.wild.test")[0] == der(pki.wild[0])
    assert handshake(w.tls_port, ctx, "cn-only.test")[0] == der(pki.cn_only[0])
    loose = client_ctx(pki, verify=False)
    # a wildcard covers one label only; unknown names and no SNI get the first certificate
    assert handshake(w.tls_port, loose, "a.b.wild.test")[0] == der(pki.main[0])
    assert handshake(w.tls_port, loose, "unknown.test")[0] == der(pki.main[0])
    assert handshake(w.tls_port, loose, None)[0] == der(pki.main[0])


def test_default_certificate_and_reject_unknown_sni(tls_weir, pki):
    w = tls_weir([pki.main, pki.other], extra=f"      default_certificate: {pki.other[0]}\n")
    loose = client_ctx(pki, verify=False)
    assert handshake(w.tls_port, loose, "unknown.test")[0] == der(pki.other[0])
    assert handshake(w.tls_port, loose, "weir.test")[0] == der(pki.main[0])
    r = tls_weir([pki.main], extra="      reject_unknown_sni: true\n")
    assert handshake(r.tls_port, client_ctx(pki), "weir.test")[0] == der(pki.main[0])
    for name in ("unknown.test", None):
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME|unrecognized name"):
            handshake(r.tls_port, loose, name)


def test_rsa_and_ecdsa_for_the_same_names(tls_weir, pki):
    w = tls_weir([pki.main_rsa, pki.main])
    for cipher, want in (("ECDHE-ECDSA-AES128-GCM-SHA256", pki.main),
                         ("ECDHE-RSA-AES128-GCM-SHA256", pki.main_rsa)):
        ctx = client_ctx(pki)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(cipher)
        assert handshake(w.tls_port, ctx, "weir.test")[0] == der(want[0]), cipher


def test_protocols_and_defaults(tls_weir, pki):
    w = tls_weir()
    ctx = client_ctx(pki)
    assert handshake(w.tls_port, ctx, "weir.test")[1] == "TLSv1.3"
    ctx12 = client_ctx(pki)
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(w.tls_port, ctx12, "weir.test")[1] == "TLSv1.2"
    only13 = tls_weir(extra="      protocols: [TLSv1.3]\n")
    with pytest.raises(ssl.SSLError):
        handshake(only13.tls_port, ctx12, "weir.test")
    # a TLS 1.2 cipher outside the default policy (no forward secrecy) is refused
    weak = client_ctx(pki)
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):
        handshake(w.tls_port, weak, "weir.test")


def test_session_tickets_resume_unless_turned_off(tls_weir, pki):
    for extra, resumed in (("", True), ("      session_tickets: false\n", False)):
        w = tls_weir(extra=extra)
        ctx = client_ctx(pki)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is known right after it
        with socket.create_connection(("127.0.0.1", w.tls_port), timeout=WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname="weir.test") as s:
                session = s.session
        with socket.create_connection(("127.0.0.1", w.tls_port), timeout=WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname="weir.test", session=session) as s:
                assert s.session_reused is resumed, extra


def test_plain_http_on_a_tls_port_gets_a_clear_400(tls_weir, pki):
    w = tls_weir()
    with socket.create_connection(("127.0.0.1", w.tls_port), timeout=WAIT) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            part = s.recv(4096)
            if not part:
                break
            data += part
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"plain HTTP request was sent to HTTPS port" in data
    # and the listener still serves TLS
    assert get(w.tls_port, client_ctx(pki))[0] == 200


def test_a_bad_handshake_closes_only_that_connection(tls_weir, pki):
    w = tls_weir()
    with socket.create_connection(("127.0.0.1", w.tls_port), timeout=WAIT) as s:
        s.sendall(b"\x16\x03\x01\x00\x05garbagegarbage")
        s.settimeout(WAIT)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    assert get(w.tls_port, client_ctx(pki))[0] == 200


def config_error(tmp_path, pki, certs_yaml, extra=""):
    text = ("listeners:\n  - address: 127.0.0.1:1\n    tls:\n      certificates:\n"
            f"{certs_yaml}{extra}"
            "routes:\n  - upstream: b\nupstreams:\n  b:\n    backends: [127.0.0.1:2]\n")
    path, err = check_refuses(tmp_path, text)
    return err.replace(str(path), "bad.yaml")


def test_config_errors_point_at_the_key(tmp_path, pki):
    main_c, main_k = pki.main
    err = config_error(tmp_path, pki, f"        - cert: {pki.expired[0]}\n          key: {pki.expired[1]}\n")
    assert "bad.yaml:5:17: error: listeners[0].tls.certificates[0].cert:" in err
    assert "has expired" in err
    err = config_error(tmp_path, pki, f"        - cert: {main_c}\n          key: {pki.other[1]}\n")
    assert "bad.yaml:6:16: error: listeners[0].tls.certificates[0].key:" in err
    assert "does not match" in err
    err = config_error(tmp_path, pki, f"        - cert: /nonexistent/c.pem\n          key: {main_k}\n")
    assert "listeners[0].tls.certificates[0].cert: cannot read /nonexistent/c.pem" in err
    err = config_error(tmp_path, pki, f"        - cert: {main_k}\n          key: {main_k}\n")
    assert "holds no PEM certificate" in err
    err = config_error(tmp_path, pki, f"        - cert: /dev/zero\n          key: {main_k}\n")
    assert "/dev/zero is not a regular file" in err
    good = f"        - cert: {main_c}\n          key: {main_k}\n"
    err = config_error(tmp_path, pki, good, "      protocols: [TLSv1.1, TLSv1.2]\n")
    assert "bad.yaml:7:19: error: listeners[0].tls.protocols[0]: TLSv1.1 is not supported" in err
    err = config_error(tmp_path, pki, good, "      ciphers: NOSUCHCIPHER\n")
    assert "bad.yaml:7:16: error: listeners[0].tls.ciphers: OpenSSL takes no ciphers" in err
    err = config_error(tmp_path, pki, good, "      curves: P-999\n")
    assert "listeners[0].tls.curves:" in err
    err = config_error(tmp_path, pki, good, "      default_certificate: /x.pem\n")
    assert "listeners[0].tls.default_certificate: '/x.pem' is not the cert of any" in err
    err = config_error(tmp_path, pki, "", "")
    assert "listeners[0].tls.certificates" in err


# ---- upstream TLS ----

class TlsOrigin:
    """An HTTPS origin (Python ssl, one thread per connection, keep-alive): answers every
    request with a JSON object of the SNI it was sent, the client certificate's subject CN
    (when one was presented) and the connection's number, so tests see what weir presented."""

    def __init__(self, cert, key, client_ca=None, require_client=False):
        import threading
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if client_ca:
            self.ctx.load_verify_locations(client_ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
        self.snis = []
        self.ctx.sni_callback = lambda s, name, c: self.snis.append(name)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.handshake_errors = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(WAIT)
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.handshake_errors.append(str(e))
            raw.close()
            return
        self.connections += 1
        n = self.connections
        cert = s.getpeercert()
        cn = ""
        for rdn in (cert or {}).get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    cn = v
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    part = s.recv(65536)
                    if not part:
                        return
                    buf += part
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
                body = json.dumps({"sni": s.server_hostname if hasattr(s, "server_hostname")
                                   else None, "snis": self.snis[-1:], "client_cn": cn,
                                   "conn": n, "target": lines[0].split(" ")[1],
                                   "host": hdrs.get("host")}).encode()
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        except (OSError, ssl.SSLError):
            pass
        finally:
            s.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


@pytest.fixture
def tls_origin(pki):
    started = []

    def start(cert=None, **kw):
        c, k = cert or pki.upstream
        o = TlsOrigin(c, k, **kw)
        started.append(o)
        return o
    yield start
    for o in started:
        o.stop()


def upstream_config(port, origin_port, tls_yaml, routes=None):
    routes = routes or "  - upstream: b\n"
    return (f"server:\n  threads: 2\n  grace_period: 5s\n"
            f"listeners:\n  - 127.0.0.1:{port}\n"
            f"routes:\n{routes}"
            f"upstreams:\n  b:\n    backends: [127.0.0.1:{origin_port}]\n    tls:\n{tls_yaml}")


def plain_get(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read()


def test_upstream_tls_sends_the_sni_independent_of_the_address(weir, pki, tls_origin):
    o = tls_origin()
    port = free_port()
    w = weir(upstream_config(port, o.port, f"      sni: secure.api.endpoint\n      ca: {pki.ca}\n"),
             port=port)
    for _ in range(3):
        status, body = plain_get(port, "/x")
        assert status == 200, body
        got = json.loads(body)
        assert got["snis"] == ["secure.api.endpoint"]
        assert got["target"] == "/x"
    # the TLS connection was pooled and reused
    assert o.connections <= 2
    assert "failed" not in w.stderr()


def test_upstream_verification_failures_are_502s_with_the_reason(weir, pki, tls_origin):
    cases = [
        # the certificate is for secure.api.endpoint, the SNI asks for another name
        (pki.upstream, f"      sni: wrong.test\n      ca: {pki.ca}\n", "hostname mismatch"),
        # a CA that did not sign it
        (pki.upstream, f"      sni: secure.api.endpoint\n      ca: {pki.other[0]}\n",
         "unable to get local issuer certificate"),
        # no SNI: the address itself must be in the certificate
        (pki.upstream, f"      ca: {pki.ca}\n", "IP address mismatch"),
    ]
    for cert, tls_yaml, reason in cases:
        o = tls_origin(cert)
        port = free_port()
        w = weir(upstream_config(port, o.port, tls_yaml), port=port)
        status, _ = plain_get(port)
        assert status == 502, tls_yaml
        assert reason in w.stderr(), w.stderr()
        assert "certificate verify failed" in w.stderr()


def test_upstream_verify_name_and_verify_off(weir, pki, tls_origin):
    o = tls_origin()
    port = free_port()
    weir(upstream_config(port, o.port, f"      sni: other.name\n      verify_name: "
                                       f"secure.api.endpoint\n      ca: {pki.ca}\n"), port=port)
    status, body = plain_get(port)
    assert status == 200 and json.loads(body)["snis"] == ["other.name"]
    port2 = free_port()
    weir(upstream_config(port2, o.port, "      sni: wrong.test\n      verify: false\n"),
         port=port2)
    assert plain_get(port2)[0] == 200


def test_upstream_client_certificate(weir, pki, tls_origin):
    o = tls_origin(client_ca=pki.ca, require_client=True)
    port = free_port()
    weir(upstream_config(port, o.port, f"      sni: secure.api.endpoint\n      ca: {pki.ca}\n"
                                       f"      client_cert: {pki.client[0]}\n"
                                       f"      client_key: {pki.client[1]}\n"), port=port)
    status, body = plain_get(port)
    assert status == 200, body
    assert json.loads(body)["client_cn"] == "client-admin"
    # without it the origin refuses the handshake: 502
    port2 = free_port()
    weir(upstream_config(port2, o.port, f"      sni: secure.api.endpoint\n      ca: {pki.ca}\n"),
         port=port2)
    assert plain_get(port2)[0] == 502


def test_upstream_tls_config_errors(tmp_path, pki):
    def refuse(tls_yaml):
        path, err = check_refuses(tmp_path, upstream_config(1, 2, tls_yaml))
        return err.replace(str(path), "bad.yaml")
    err = refuse("      ca: /nonexistent.pem\n")
    assert "upstreams.b.tls.ca: cannot read /nonexistent.pem" in err
    err = refuse(f"      ca: {pki.upstream[1]}\n")
    assert "upstreams.b.tls.ca:" in err and "holds no PEM certificate" in err
    err = refuse(f"      client_cert: {pki.client[0]}\n")
    assert "upstreams.b.tls.client_cert: client_cert and client_key go together" in err
    err = refuse(f"      client_cert: {pki.client[0]}\n      client_key: {pki.other[1]}\n")
    assert "upstreams.b.tls.client_key:" in err and "does not match" in err
    err = refuse("      sni: 'bad name'\n")
    assert "upstreams.b.tls.sni: expected a host name" in err


def test_upstream_tls_to_nginx_sni_and_client_certificate(weir, session_pki, nginx_tls_origin):
    """nginx as the TLS origin: it sees the SNI weir was told to send (not the address weir
    connects to) and the client certificate weir presents, and enforces both."""
    p = session_pki
    n = nginx_tls_origin(client_ca=p.client_ca)
    port = free_port()
    weir(upstream_config(port, n.port, f"      sni: secure.api.endpoint\n      ca: {p.ca}\n"
                                       f"      client_cert: {p.client_admin_cert}\n"
                                       f"      client_key: {p.client_admin_key}\n"), port=port)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    c.request("GET", "/secure_admin")
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, body
    assert r.getheader("X-SNI") == "secure.api.endpoint"
    assert r.getheader("X-Client-Verify") == "SUCCESS"
    assert "CN=admin" in r.getheader("X-Client-DN")
    # another identity (the user certificate) is refused by nginx's rule, not by weir
    port2 = free_port()
    weir(upstream_config(port2, n.port, f"      sni: secure.api.endpoint\n      ca: {p.ca}\n"
                                        f"      client_cert: {p.client_user_cert}\n"
                                        f"      client_key: {p.client_user_key}\n"), port=port2)
    assert plain_get(port2, "/secure_admin")[0] == 403
    assert plain_get(port2, "/need_cert")[0] == 200


def test_redirect_https_sends_clients_to_the_tls_port(weir, pki, origin, tmp_path):
    plain, tls, plain443 = free_port(), free_port(), free_port()
    c, k = pki.main
    w = weir(f"server:\n  grace_period: 5s\n"
             f"listeners:\n  - {{address: 127.0.0.1:{plain}, redirect_https: {tls}}}\n"
             f"  - {{address: 127.0.0.1:{plain443}, redirect_https: true}}\n"
             f"  - address: 127.0.0.1:{tls}\n    tls:\n"
             f"      certificates: [{{cert: {c}, key: {k}}}]\n"
             f"routes:\n  - upstream: b\nupstreams:\n  b:\n    backends: [127.0.0.1:{origin.port}]\n",
             port=tls)
    conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=WAIT)
    conn.request("POST", "/a/b?x=1&y=%20", body=b"ignored", headers={"Host": "weir.test:8080"})
    r = conn.getresponse()
    r.read()
    assert r.status == 308
    assert r.getheader("Location") == f"https://weir.test:{tls}/a/b?x=1&y=%20"
    # keep-alive survives the redirect; port 443 is left out of the Location
    conn.request("GET", "/", headers={"Host": "[::1]"})
    r = conn.getresponse()
    r.read()
    assert r.getheader("Location") == f"https://[::1]:{tls}/"
    conn2 = http.client.HTTPConnection("127.0.0.1", plain443, timeout=WAIT)
    conn2.request("GET", "/p?q", headers={"Host": "Weir.Test"})
    r = conn2.getresponse()
    r.read()
    assert r.status == 308 and r.getheader("Location") == "https://Weir.Test/p?q"
    # a Host that could not be put in a Location safely is refused
    conn2.request("GET", "/", headers={"Host": "evil.test/x"})
    r = conn2.getresponse()
    assert r.status == 400
    # curl follows it to the TLS listener, where the origin answers
    out = subprocess.run(["curl", "-sS", "-L", "--cacert", pki.ca, "-o", "/dev/null", "-w",
                          "%{http_code} %{url_effective}",
                          "--resolve", f"weir.test:{tls}:127.0.0.1",
                          "--resolve", f"weir.test:{plain}:127.0.0.1",
                          f"http://weir.test:{plain}/headers"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == f"200 https://weir.test:{tls}/headers", out.stderr
    err = check_refuses(tmp_path, f"listeners:\n  - address: 127.0.0.1:1\n    redirect_https: yes\n"
                        f"    tls:\n      certificates: [{{cert: {c}, key: {k}}}]\n")[1]
    assert "listeners[0].redirect_https: a TLS listener already speaks https" in err
    err = check_refuses(tmp_path, "listeners:\n  - {address: 127.0.0.1:1, redirect_https: 70000}\n")[1]
    assert "listeners[0].redirect_https: expected true, false or a port (1..65535)" in err


def test_route_upstream_tls_presents_its_own_client_certificate(weir, session_pki,
                                                                nginx_tls_origin, tmp_path):
    """Only /secure_admin presents the admin certificate (routes[].upstream_tls); the rest of
    the group's traffic presents the user's. nginx enforces CN=admin on /secure_admin."""
    p = session_pki
    n = nginx_tls_origin(client_ca=p.client_ca)
    port = free_port()
    weir(f"server:\n  grace_period: 5s\nlisteners: [127.0.0.1:{port}]\n"
         f"routes:\n"
         f"  - match: {{path_prefix: /secure_admin}}\n    upstream: b\n"
         f"    upstream_tls: {{client_cert: {p.client_admin_cert}, client_key: {p.client_admin_key}}}\n"
         f"  - upstream: b\n"
         f"upstreams:\n  b:\n    backends: [127.0.0.1:{n.port}]\n"
         f"    tls:\n      sni: secure.api.endpoint\n      ca: {p.ca}\n"
         f"      client_cert: {p.client_user_cert}\n      client_key: {p.client_user_key}\n",
         port=port)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    for _ in range(3):  # alternating, over pooled connections: identities never mix
        c.request("GET", "/secure_admin")
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, body
        assert "CN=admin" in r.getheader("X-Client-DN")
        c.request("GET", "/need_cert")
        r = c.getresponse()
        r.read()
        assert r.status == 200
        assert "CN=user" in r.getheader("X-Client-DN")
    # config errors: the pair, the files, and a group without tls
    base = (f"listeners: [127.0.0.1:1]\nroutes:\n  - upstream: {{g}}\n    upstream_tls: {{t}}\n"
            f"upstreams:\n  b:\n    backends: [127.0.0.1:2]\n    tls: {{{{ca: {p.ca}}}}}\n"
            f"  plain:\n    backends: [127.0.0.1:3]\n")

    def refuse(g, t):
        path, err = check_refuses(tmp_path, base.format(g=g, t=t))
        return err.replace(str(path), "bad.yaml")
    err = refuse("b", f"{{client_cert: {p.client_admin_cert}}}")
    assert "bad.yaml:4:19: error: routes[0].upstream_tls: missing required key 'client_key'" in err
    err = refuse("b", f"{{client_cert: {p.client_admin_cert}, client_key: {p.client_user_key}}}")
    assert "bad.yaml:4:" in err and "routes[0].upstream_tls.client_key:" in err
    err = refuse("b", f"{{client_cert: /nonexistent.pem, client_key: {p.client_user_key}}}")
    assert "routes[0].upstream_tls.client_cert: cannot read /nonexistent.pem" in err
    err = refuse("plain", f"{{client_cert: {p.client_admin_cert}, client_key: {p.client_admin_key}}}")
    assert "routes[0].upstream_tls: upstream 'plain' has no tls" in err


def test_one_liner_terminates_and_originates_tls(weir, session_pki, nginx_tls_origin):
    """weir proxy --tls-cert/--tls-key --to https://... --upstream-sni --upstream-ca: TLS on
    both sides from flags alone, to nginx checking the SNI."""
    p = session_pki
    n = nginx_tls_origin()
    port = free_port()
    weir.cli(["proxy", "--listen", f"127.0.0.1:{port}", "--tls-cert", p.server_cert,
              "--tls-key", p.server_key, "--to", f"https://127.0.0.1:{n.port}",
              "--upstream-sni", "secure.api.endpoint", "--upstream-ca", p.ca,
              "--threads", "1"], port=port)
    out = subprocess.run(["curl", "-sS", "-D", "-", "--cacert", p.ca,
                          f"https://localhost:{port}/x?y=1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "nginx-tls GET /x?y=1" in out.stdout
    # curl speaks HTTP/2 to the TLS listener (ALPN h2), whose field names are lowercase
    assert "x-sni: secure.api.endpoint" in out.stdout.lower()
    # without --upstream-ca the origin's private CA is unknown: weir refuses it, 502
    port2 = free_port()
    weir.cli(["proxy", "--listen", f"127.0.0.1:{port2}", "--to", f"https://127.0.0.1:{n.port}",
              "--upstream-sni", "secure.api.endpoint", "--threads", "1"], port=port2)
    assert plain_get(port2, "/")[0] == 502


def resume_from(port, ctx, session):
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname="weir.test", session=session) as s:
            return s.session_reused, s.session


def test_ticket_keys_shared_by_workers_and_by_nodes_through_key_files(tls_weir, pki, tmp_path):
    ctx = client_ctx(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is known right after it
    # Generated keys: every worker of the process opens every other worker's tickets.
    w = tls_weir()
    _, session = resume_from(w.tls_port, ctx, None)
    for _ in range(8):  # new connections land on either worker
        assert resume_from(w.tls_port, ctx, session)[0]
    # Key files: two processes with the same file resume each other's sessions; a node with
    # a new key first and the old one second still accepts the old tickets.
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    old.write_bytes(os.urandom(80))
    new.write_bytes(os.urandom(48))  # the AES-128 format
    a = tls_weir(extra=f"      ticket_key_files: [{old}]\n")
    b = tls_weir(extra=f"      ticket_key_files: [{new}, {old}]\n")
    c = tls_weir(extra=f"      ticket_key_files: [{new}]\n")
    _, from_a = resume_from(a.tls_port, ctx, None)
    reused, from_b = resume_from(b.tls_port, ctx, from_a)
    assert reused  # and b sent a fresh ticket made with its first key
    assert resume_from(c.tls_port, ctx, from_b)[0]
    assert not resume_from(c.tls_port, ctx, from_a)[0]  # c never had the old key
    assert not resume_from(w.tls_port, ctx, from_a)[0]  # generated keys know no file's


def test_sessions_expire_after_session_timeout(tls_weir, pki):
    import time
    ctx = client_ctx(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    w = tls_weir(extra="      session_timeout: 1s\n")
    _, session = resume_from(w.tls_port, ctx, None)
    time.sleep(2.2)  # past the ticket's period and the next: its key is gone
    assert not resume_from(w.tls_port, ctx, session)[0]


def test_ticket_key_file_errors(tmp_path, pki):
    short = tmp_path / "short.key"
    short.write_bytes(os.urandom(47))
    err = config_error(tmp_path, pki, f"        - cert: {pki.main[0]}\n          key: {pki.main[1]}\n"
                       f"      ticket_key_files: [{short}]\n")
    assert "listeners[0].tls.ticket_key_files[0]:" in err and "exactly 80 bytes" in err
    err = config_error(tmp_path, pki, f"        - cert: {pki.main[0]}\n          key: {pki.main[1]}\n"
                       f"      session_tickets: false\n      ticket_key_files: [{short}]\n")
    assert "listeners[0].tls.ticket_key_files: session_tickets is false" in err


def test_upstream_sessions_are_resumed_per_identity(weir, session_pki, nginx_tls_origin):
    """With no idle connection kept, every request opens a new connection to nginx: the
    second and later ones resume the session nginx gave the first (TLS 1.3 tickets are used
    once each), unless session_reuse is off; another identity never resumes it."""
    p = session_pki
    n = nginx_tls_origin(client_ca=p.client_ca)

    def start(tls_extra, protocols=""):
        port = free_port()
        weir(f"server:\n  threads: 1\n  grace_period: 5s\n  upstream_keepalive: 0\n"
             f"  upstream_pool: {{shared_per_peer: 0}}\n"
             f"listeners: [127.0.0.1:{port}]\n"
             f"routes:\n"
             f"  - match: {{path_prefix: /secure_admin}}\n    upstream: b\n"
             f"    upstream_tls: {{client_cert: {p.client_admin_cert}, "
             f"client_key: {p.client_admin_key}}}\n"
             f"  - upstream: b\n"
             f"upstreams:\n  b:\n    backends: [127.0.0.1:{n.port}]\n"
             f"    tls:\n      sni: secure.api.endpoint\n      ca: {p.ca}\n"
             f"      client_cert: {p.client_user_cert}\n      client_key: {p.client_user_key}\n"
             f"{tls_extra}", port=port)
        return port

    def reused(port, path="/"):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        assert r.status == 200
        return r.getheader("X-Reused"), r.getheader("X-Client-DN")
    port = start("")
    seen = [reused(port)[0] for _ in range(5)]
    assert seen[0] == "." and seen[1:] == ["r"] * 4, seen
    # the admin route's identity has sessions of its own: its first connection is a full
    # handshake even though the user identity has one to resume, and it stays admin
    first, dn = reused(port, "/secure_admin")
    assert first == "." and "CN=admin" in dn
    again, dn = reused(port, "/secure_admin")
    assert again == "r" and "CN=admin" in dn
    assert "CN=user" in reused(port)[1]
    port = start("      session_reuse: false\n")
    assert [reused(port)[0] for _ in range(3)] == ["."] * 3


def test_http_health_checks_over_tls(weir, session_pki, nginx_tls_origin):
    """A TLS group's HTTP checks speak TLS with the group's SNI, CA and client certificate:
    the backend whose certificate does not verify is taken out (the reason in the log), the
    good one keeps the traffic."""
    from conftest import wait_for
    p = session_pki
    good = nginx_tls_origin(client_ca=p.client_ca)
    bad = nginx_tls_origin(cert=p.wrong_name_cert, key=p.wrong_name_key)
    port = free_port()
    w = weir(f"server:\n  threads: 2\n  grace_period: 5s\n  log_level: warn\n"
             f"listeners: [127.0.0.1:{port}]\n"
             f"routes:\n  - upstream: b\n"
             f"upstreams:\n  b:\n    backends: [127.0.0.1:{good.port}, 127.0.0.1:{bad.port}]\n"
             f"    health_check: {{path: /need_cert, interval: 100ms, timeout: 100ms, "
             f"rise: 1, fall: 1}}\n"
             f"    tls:\n      sni: secure.api.endpoint\n      ca: {p.ca}\n"
             f"      client_cert: {p.client_user_cert}\n      client_key: {p.client_user_key}\n",
             port=port)
    assert wait_for(lambda: f"backend 127.0.0.1:{bad.port} is down" in w.stderr(), 10)
    assert "certificate verify failed" in w.stderr()
    assert f"backend 127.0.0.1:{good.port} is down" not in w.stderr()
    # /need_cert answers 200 only to a verified client certificate: the check presented it
    for _ in range(10):
        status, body = plain_get(port, "/")
        assert status == 200, body


def test_early_data_only_for_safe_methods_and_marked_for_the_origin(tls_weir, pki, tmp_path):
    """0-RTT (RFC 8470): off by default; with early_data a GET sent as early data reaches the
    origin with Early-Data: 1, a POST is answered 425 Too Early. openssl s_client resumes a
    session saved from a first connection and sends the request as early data."""
    def session_file(port, name):
        sess = tmp_path / f"{name}.sess"
        subprocess.run(["sh", "-c", "(printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'; sleep 0.5) | "
                        f"openssl s_client -connect 127.0.0.1:{port} -servername weir.test "
                        f"-CAfile {pki.ca} -sess_out {sess}"],
                       capture_output=True, timeout=30)
        assert sess.exists() and sess.stat().st_size > 0
        return sess

    def early(port, name, request):
        sess = session_file(port, name)
        req = tmp_path / f"{name}.req"
        req.write_bytes(request)
        r = subprocess.run(["sh", "-c", f"sleep 0.5 | openssl s_client -connect 127.0.0.1:{port} "
                            f"-servername weir.test -CAfile {pki.ca} -sess_in {sess} "
                            f"-early_data {req}"], capture_output=True, timeout=30)
        return r.stdout.decode(errors="replace")
    w = tls_weir(extra="      early_data: true\n")
    out = early(w.tls_port, "get", b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert "Early data was accepted" in out
    assert "HTTP/1.1 200 OK" in out
    assert '"Early-Data", "1"' in out or '"early-data", "1"' in out.lower()
    out = early(w.tls_port, "post", b"POST /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                    b"Connection: close\r\n\r\nhi")
    assert "Early data was accepted" in out
    assert "HTTP/1.1 425 Too Early" in out
    # Off (the default): the tickets allow no early data, so the client sends none
    plain = tls_weir()
    out = early(plain.tls_port, "off", b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n")
    assert "Early data was not sent" in out and "Reused, TLSv1.3" in out
    err = config_error(tmp_path, pki, f"        - cert: {pki.main[0]}\n          key: {pki.main[1]}\n"
                       f"      session_tickets: false\n      early_data: true\n")
    assert "listeners[0].tls.early_data: 0-RTT needs TLS 1.3 and session_tickets" in err


def test_server_cipher_order_wins_unless_turned_off(tls_weir, pki):
    def negotiated(w):
        ctx = client_ctx(pki)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
        with socket.create_connection(("127.0.0.1", w.tls_port), timeout=WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname="weir.test") as s:
                return s.cipher()[0]
    assert negotiated(tls_weir()) == "ECDHE-ECDSA-AES128-GCM-SHA256"  # weir's first choice
    off = tls_weir(extra="      prefer_server_ciphers: false\n")
    assert negotiated(off) == "ECDHE-ECDSA-AES256-GCM-SHA384"  # the client's
