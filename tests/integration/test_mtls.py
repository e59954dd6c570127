"""Client certificates on listeners (issue 11, mTLS): listeners[].tls.client_auth in its three
modes, verification against the CA bundle, verify_depth and the CRL, the certificate carried
upstream in the headers of server.forwarded_headers.client_cert_headers (and always stripped
from what clients send), resumption keeping the identity, and config errors at the key that
names the file. The PKI is the session's (tls_pki.py); clients are Python's ssl and curl.
"""
import hashlib
import http.client
import json
import socket
import ssl
import subprocess
import urllib.parse

import pytest

from conftest import check_refuses, free_port

WAIT = 10.0

HEADERS = """server:
  threads: 2
  grace_period: 5s
  forwarded_headers:
    client_cert_headers:
      verify: X-Client-Verify
      subject: X-Client-Subject
      issuer: X-Client-Issuer
      sans: X-Client-SANs
      serial: X-Client-Serial
      fingerprint: X-Client-Fingerprint
      cert: X-Client-Cert
"""


def mtls_config(pki, port, backend, auth, plain_port=None, server=HEADERS):
    plain = f"  - 127.0.0.1:{plain_port}\n" if plain_port else ""
    return (f"{server}"
            f"listeners:\n  - address: 127.0.0.1:{port}\n    tls:\n      certificates:\n"
            f"        - {{cert: {pki.server_ec_cert}, key: {pki.server_ec_key}}}\n"
            f"      client_auth: {auth}\n{plain}"
            f"routes:\n  - upstream: b\n"
            f"upstreams:\n  b:\n    backends: [127.0.0.1:{backend}]\n")


@pytest.fixture
def mtls_weir(weir, session_pki, origin):
    def start(auth, plain=False, server=HEADERS):
        port = free_port()
        plain_port = free_port() if plain else None
        w = weir(mtls_config(session_pki, port, origin.port, auth, plain_port, server),
                 port=port)
        w.tls_port, w.plain_port = port, plain_port
        return w
    return start


def ctx_for(pki, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=pki.ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def upstream_headers(port, ctx, extra=None, conn=None):
    """The request headers the origin saw (lower-case name -> list of values), the status and
    the connection (for reuse)."""
    c = conn or http.client.HTTPSConnection("localhost", port, context=ctx, timeout=WAIT)
    c.request("GET", "/headers", headers=extra or {})
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, body
    seen = {}
    for k, v in json.loads(body)["headers"]:
        seen.setdefault(k.lower(), []).append(v)
    return seen, c


def handshake_fails(port, ctx):
    """True when the handshake, or the first read after it (TLS 1.3 sends the server's
    refusal of a client certificate after the client's Finished), fails."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                return s.recv(100) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def openssl_field(cert, flag):
    r = subprocess.run(["openssl", "x509", "-in", cert, "-noout", flag], capture_output=True,
                       text=True, check=True, timeout=30)
    return r.stdout.strip().split("=", 1)[1]


def der_of(cert):
    with open(cert) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_required_lets_in_a_verified_client_and_forwards_its_identity(mtls_weir, session_pki):
    pki = session_pki
    w = mtls_weir(f"{{mode: required, ca: {pki.client_ca}}}")
    seen, c = upstream_headers(w.tls_port, ctx_for(pki, pki.client_user_cert,
                                                   pki.client_user_key))
    assert seen["x-client-verify"] == ["SUCCESS"]
    assert seen["x-client-subject"] == ["CN=user"]
    assert seen["x-client-issuer"] == ["CN=weir test client CA"]
    assert seen["x-client-serial"] == [openssl_field(pki.client_user_cert, "-serial")]
    assert seen["x-client-fingerprint"] == [hashlib.sha256(der_of(pki.client_user_cert))
                                            .hexdigest()]
    assert "x-client-sans" not in seen  # the certificate has no subjectAltName
    pem = urllib.parse.unquote(seen["x-client-cert"][0])
    with open(pki.client_user_cert) as f:
        assert pem.strip() == f.read().strip()
    # The next request on the same connection carries the same identity.
    again, _ = upstream_headers(w.tls_port, None, conn=c)
    assert again["x-client-subject"] == ["CN=user"]
    c.close()
    w.check_clean()


def test_required_refuses_clients_without_a_good_certificate(mtls_weir, session_pki):
    pki = session_pki
    w = mtls_weir(f"{{mode: required, ca: {pki.client_ca}}}")
    assert handshake_fails(w.tls_port, ctx_for(pki))  # no certificate
    assert handshake_fails(w.tls_port, ctx_for(pki, pki.client_other_cert,
                                               pki.client_other_key))  # unknown CA
    # curl says so too, and a good client still gets in afterwards.
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "--cacert", pki.ca,
                        f"https://localhost:{w.tls_port}/"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", pki.ca,
                        "--cert", pki.client_admin_cert, "--key", pki.client_admin_key,
                        f"https://localhost:{w.tls_port}/"], capture_output=True, text=True,
                       timeout=30)
    assert r.stdout == "200", r.stderr
    assert w.alive()
    w.check_clean()


def test_optional_records_the_result_and_sends_identity_only_when_verified(mtls_weir,
                                                                            session_pki):
    pki = session_pki
    w = mtls_weir(f"{{mode: optional, ca: {pki.client_ca}}}")
    seen, _ = upstream_headers(w.tls_port, ctx_for(pki))
    assert seen["x-client-verify"] == ["NONE"]
    assert "x-client-subject" not in seen
    seen, _ = upstream_headers(w.tls_port, ctx_for(pki, pki.client_other_cert,
                                                   pki.client_other_key))
    assert seen["x-client-verify"][0].startswith("FAILED:")
    assert "verify" in seen["x-client-verify"][0]  # unable to verify the first certificate
    for name in ("x-client-subject", "x-client-issuer", "x-client-serial",
                 "x-client-fingerprint", "x-client-cert"):
        assert name not in seen, name
    seen, _ = upstream_headers(w.tls_port, ctx_for(pki, pki.client_admin_cert,
                                                   pki.client_admin_key))
    assert seen["x-client-verify"] == ["SUCCESS"]
    assert seen["x-client-subject"] == ["CN=admin"]


def test_forged_certificate_headers_are_stripped_on_every_listener(mtls_weir, session_pki,
                                                                   origin):
    pki = session_pki
    w = mtls_weir(f"{{mode: optional, ca: {pki.client_ca}}}", plain=True)
    forged = {"X-Client-Subject": "CN=admin", "x-client-verify": "SUCCESS",
              "X-CLIENT-FINGERPRINT": "00", "X-Client-Cert": "forged"}
    # TLS without a certificate: only weir's own verify header arrives.
    seen, _ = upstream_headers(w.tls_port, ctx_for(pki), forged)
    assert seen["x-client-verify"] == ["NONE"]
    assert "x-client-subject" not in seen and "x-client-fingerprint" not in seen
    assert "x-client-cert" not in seen
    # TLS as user: the user's identity, never the forged admin.
    seen, _ = upstream_headers(w.tls_port, ctx_for(pki, pki.client_user_cert,
                                                   pki.client_user_key), forged)
    assert seen["x-client-subject"] == ["CN=user"]
    assert seen["x-client-verify"] == ["SUCCESS"]
    # The plain listener strips them too, and adds nothing.
    c = http.client.HTTPConnection("127.0.0.1", w.plain_port, timeout=WAIT)
    c.request("GET", "/headers", headers=forged)
    r = c.getresponse()
    assert r.status == 200
    names = {k.lower() for k, _ in json.loads(r.read())["headers"]}
    assert not names & {"x-client-subject", "x-client-verify", "x-client-fingerprint",
                        "x-client-cert"}


def test_crl_refuses_a_revoked_certificate(mtls_weir, session_pki):
    pki = session_pki
    w = mtls_weir(f"{{mode: required, ca: {pki.client_ca}, crl: {pki.client_crl}}}")
    assert handshake_fails(w.tls_port, ctx_for(pki, pki.client_revoked_cert,
                                               pki.client_revoked_key))
    seen, _ = upstream_headers(w.tls_port, ctx_for(pki, pki.client_user_cert,
                                                   pki.client_user_key))
    assert seen["x-client-verify"] == ["SUCCESS"]
    # optional: the revoked client gets in, marked as such, with no identity.
    w2 = mtls_weir(f"{{mode: optional, ca: {pki.client_ca}, crl: {pki.client_crl}}}")
    seen, _ = upstream_headers(w2.tls_port, ctx_for(pki, pki.client_revoked_cert,
                                                    pki.client_revoked_key))
    assert seen["x-client-verify"] == ["FAILED:certificate revoked"]
    assert "x-client-subject" not in seen


def test_verify_depth_bounds_the_chain(mtls_weir, session_pki):
    pki = session_pki
    deep = ctx_for(pki, pki.client_deep_chain, pki.client_deep_key)
    w0 = mtls_weir(f"{{mode: required, ca: {pki.client_ca}, verify_depth: 0}}")
    assert handshake_fails(w0.tls_port, deep)  # no intermediate allowed
    seen, _ = upstream_headers(w0.tls_port, ctx_for(pki, pki.client_user_cert,
                                                    pki.client_user_key))
    assert seen["x-client-subject"] == ["CN=user"]  # signed by the CA itself: fine
    w1 = mtls_weir(f"{{mode: required, ca: {pki.client_ca}}}")  # default 1: one intermediate
    seen, _ = upstream_headers(w1.tls_port, deep)
    assert seen["x-client-subject"] == ["CN=deep"]
    assert seen["x-client-issuer"] == ["CN=weir test client sub-CA"]


def test_resumed_session_keeps_the_client_identity(mtls_weir, session_pki):
    pki = session_pki
    w = mtls_weir(f"{{mode: required, ca: {pki.client_ca}}}")
    ctx = ctx_for(pki, pki.client_admin_cert, pki.client_admin_key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # a session object right after the handshake
    c1 = http.client.HTTPSConnection("localhost", w.tls_port, context=ctx, timeout=WAIT)
    seen, _ = upstream_headers(w.tls_port, None, conn=c1)
    session = c1.sock.session
    c1.close()
    with socket.create_connection(("127.0.0.1", w.tls_port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            assert s.session_reused
            s.sendall(b"GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    again = {k.lower(): v for k, v in body["headers"]}
    assert again["x-client-verify"] == "SUCCESS"
    assert again["x-client-subject"] == seen["x-client-subject"][0] == "CN=admin"


def test_a_listener_without_client_auth_sends_verify_none(mtls_weir, session_pki):
    pki = session_pki
    w = mtls_weir("{mode: off}")
    seen, _ = upstream_headers(w.tls_port, ctx_for(pki, pki.client_user_cert,
                                                   pki.client_user_key))
    assert seen["x-client-verify"] == ["NONE"]  # a certificate is never asked for
    assert "x-client-subject" not in seen


def refused(tmp_path, pki, auth, server=HEADERS):
    path, err = check_refuses(tmp_path, mtls_config(pki, 1, 2, auth, server=server))
    return err.replace(str(path), "bad.yaml")


def test_config_errors_point_at_the_key(tmp_path, session_pki):
    pki = session_pki
    err = refused(tmp_path, pki, "{mode: required}")
    assert "listeners[0].tls.client_auth: mode required needs a ca" in err
    err = refused(tmp_path, pki, f"{{mode: required, ca: {pki.client_user_key}}}")
    assert "bad.yaml:18:41: error: listeners[0].tls.client_auth.ca:" in err
    assert "holds no PEM certificate" in err
    err = refused(tmp_path, pki, "{mode: optional, ca: /nonexistent/ca.pem}")
    assert "listeners[0].tls.client_auth.ca: cannot read /nonexistent/ca.pem" in err
    err = refused(tmp_path, pki, f"{{mode: required, ca: {pki.client_ca}, "
                                 f"crl: {pki.client_crl_expired}}}")
    assert "listeners[0].tls.client_auth.crl:" in err and "has expired" in err
    err = refused(tmp_path, pki, f"{{mode: required, ca: {pki.client_ca}, crl: {pki.client_ca}}}")
    assert "listeners[0].tls.client_auth.crl:" in err and "no PEM revocation list" in err
    err = refused(tmp_path, pki, f"{{mode: sometimes, ca: {pki.client_ca}}}")
    assert "listeners[0].tls.client_auth.mode:" in err and "optional" in err
    err = refused(tmp_path, pki, f"{{mode: required, ca: {pki.client_ca}, verify_depth: 101}}")
    assert "listeners[0].tls.client_auth.verify_depth:" in err


def test_client_cert_header_names_are_checked(tmp_path, session_pki):
    pki = session_pki
    auth = f"{{mode: optional, ca: {pki.client_ca}}}"

    def server(headers):
        return ("server:\n  forwarded_headers:\n    client_cert_headers:\n" +
                "".join(f"      {k}: {v}\n" for k, v in headers.items()))
    err = refused(tmp_path, pki, auth, server({"subject": '"X Subject"'}))
    assert "bad.yaml:4:16: error: server.forwarded_headers.client_cert_headers.subject:" in err
    assert "expected a header name" in err
    err = refused(tmp_path, pki, auth, server({"verify": "Host"}))
    assert "client_cert_headers.verify: Host is not for client certificates" in err
    err = refused(tmp_path, pki, auth, server({"verify": "X-Cert", "subject": "x-cert"}))
    assert "client_cert_headers.subject: x-cert is already the header of verify" in err
    err = refused(tmp_path, pki, auth, server({"subjekt": "X-S"}))
    assert "client_cert_headers.subjekt" in err and "subject" in err


def test_hooks_see_the_certificate_through_weir_session_tls(weir, session_pki, origin,
                                                            tmp_path):
    """examples/mtls_gate: /admin only for a verified CN=admin; identity sent upstream."""
    from test_examples import example
    pki = session_pki
    port = free_port()
    cfg = tmp_path / "gate.yaml"
    cfg.write_text(f"server:\n  threads: 2\n  grace_period: 5s\n"
                   f"listeners:\n  - address: 127.0.0.1:{port}\n    tls:\n"
                   f"      certificates: [{{cert: {pki.server_cert}, key: {pki.server_key}}}]\n"
                   f"      client_auth: {{mode: optional, ca: {pki.client_ca}}}\n")
    weir.cli(["--config", str(cfg), "--to", f"127.0.0.1:{origin.port}"], port=port,
             binary=example("mtls_gate"))

    def fetch(path, ctx):
        c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=WAIT)
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    admin = ctx_for(pki, pki.client_admin_cert, pki.client_admin_key)
    user = ctx_for(pki, pki.client_user_cert, pki.client_user_key)
    stranger = ctx_for(pki, pki.client_other_cert, pki.client_other_key)
    assert fetch("/admin/x", admin)[0] == 200
    assert fetch("/admin", user)[0] == 403
    assert fetch("/admin?x=1", stranger)[0] == 403  # CN is not checked before verification
    assert fetch("/admin", ctx_for(pki))[0] == 403
    status, body = fetch("/headers", user)
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert seen["x-client-identity"] == "CN=user"
    proto, cipher = seen["x-client-tls"].split(" ")
    assert proto == "TLSv1.3" and cipher.startswith("TLS_")
    status, body = fetch("/headers", stranger)
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert "x-client-identity" not in seen


def test_names_are_sent_escaped_and_every_san_kind_is_listed(mtls_weir, session_pki):
    pki = session_pki
    w = mtls_weir(f"{{mode: required, ca: {pki.client_ca}}}")
    seen, _ = upstream_headers(w.tls_port, ctx_for(pki, pki.client_san_cert,
                                                   pki.client_san_key))
    # RFC 2253: most specific first, ',' escaped, UTF-8 bytes as \XX: printable ASCII only
    assert seen["x-client-subject"] == [r"CN=Jos\C3\A9,O=Ex\, Inc"]
    assert seen["x-client-sans"] == ["DNS:svc.example, IP:10.0.0.1, IP:::1, "
                                     "email:ops@example.com, URI:spiffe://example.org/ns/web"]


def test_ocsp_response_is_stapled_for_its_certificate(weir, session_pki, origin, tmp_path):
    pki = session_pki
    port = free_port()
    weir(f"server:\n  grace_period: 5s\n"
         f"listeners:\n  - address: 127.0.0.1:{port}\n    tls:\n      certificates:\n"
         f"        - {{cert: {pki.server_ec_cert}, key: {pki.server_ec_key}, "
         f"ocsp_response: {pki.server_ec_ocsp}}}\n"
         f"        - {{cert: {pki.other_cert}, key: {pki.other_key}}}\n"
         f"routes:\n  - upstream: b\nupstreams:\n  b:\n    backends: [127.0.0.1:{origin.port}]\n",
         port=port)

    def s_client(sni):
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-status",
                            "-servername", sni, "-CAfile", pki.ca, "-verify_return_error"],
                           input="", capture_output=True, text=True, timeout=30)
        return r.stdout
    out = s_client("localhost")
    assert "OCSP Response Status: successful" in out
    assert "Cert Status: good" in out
    out = s_client("other.test")  # a certificate without a response staples nothing
    assert "OCSP response: no response sent" in out
    # errors at the key: not OCSP at all, revoked, about another certificate
    for resp, words in ((pki.server_ec_cert, "is not a DER OCSP response"),
                        (pki.server_ec_ocsp_revoked, "says the certificate is revoked")):
        path, err = check_refuses(tmp_path, mtls_config(pki, 1, 2, "{mode: off}").replace(
            f"key: {pki.server_ec_key}}}", f"key: {pki.server_ec_key}, ocsp_response: {resp}}}"))
        assert "listeners[0].tls.certificates[0].ocsp_response:" in err and words in err, err
    text = (f"listeners:\n  - address: 127.0.0.1:1\n    tls:\n      certificates:\n"
            f"        - {{cert: {pki.other_cert}, key: {pki.other_key}, "
            f"ocsp_response: {pki.server_ec_ocsp}}}\n")
    err = check_refuses(tmp_path, text)[1]
    assert "is not a response about this certificate" in err
