"""Self-tests of the TLS test harness (tls_pki and the nginx_tls_origin fixture), no weir needed:
the certificates say what their names promise, and nginx over TLS reports SNI and client certs.
"""
import os
import socket
import ssl
import subprocess
import time

import tls_pki


def curl(port, path, pki, *extra, name="secure.api.endpoint"):
    """curl over TLS to nginx on port as https://name:port/path, trusting pki.ca: (status,
    headers with lower-case names, body)."""
    r = subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", pki.ca,
                        "--resolve", f"{name}:{port}:127.0.0.1", "-D", "-", *extra,
                        f"https://{name}:{port}{path}"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    head, _, body = r.stdout.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


def handshake_error(port, pki, server_hostname):
    """The verification error a default Python client gets from port (None if it verifies)."""
    ctx = ssl.create_default_context(cafile=pki.ca)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_hostname):
                return None
    except ssl.SSLCertVerificationError as e:
        return e.verify_message


def openssl(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_building_the_pki_is_fast(tmp_path):
    t0 = time.monotonic()
    p = tls_pki.build_pki(tmp_path / "pki")
    assert time.monotonic() - t0 < 5
    for name, path in vars(p).items():
        assert os.path.exists(path), name


def test_every_cert_verifies_strictly_against_its_ca(pki):
    servers = [pki.server_cert, pki.server_ec_cert, pki.other_cert, pki.wild_cert,
               pki.cn_only_cert, pki.wrong_name_cert, pki.upstream_cert]
    openssl("verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", pki.ca, *servers)
    openssl("verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", pki.client_ca,
            pki.client_admin_cert, pki.client_user_cert)
    r = subprocess.run(["openssl", "verify", "-CAfile", pki.other_ca, pki.server_cert],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    openssl("verify", "-CAfile", pki.ca, "-verify_hostname", "a.wild.test", pki.wild_cert)
    openssl("verify", "-CAfile", pki.ca, "-verify_ip", "127.0.0.1", pki.server_cert)


def test_key_types_and_names(pki):
    ec = openssl("x509", "-in", pki.server_ec_cert, "-noout", "-text")
    assert "id-ecPublicKey" in ec and "prime256v1" in ec
    rsa = openssl("x509", "-in", pki.server_cert, "-noout", "-text")
    assert "rsaEncryption" in rsa and "(2048 bit)" in rsa
    san = openssl("x509", "-in", pki.server_cert, "-noout", "-ext", "subjectAltName")
    for name in ("DNS:localhost", "DNS:weir.test", "DNS:alt.weir.test", "IP Address:127.0.0.1"):
        assert name in san
    assert "DNS:*.wild.test" in openssl("x509", "-in", pki.wild_cert, "-noout", "-ext",
                                        "subjectAltName")
    assert "CN=admin" in openssl("x509", "-in", pki.client_admin_cert, "-noout", "-subject",
                                 "-nameopt", "RFC2253")
    assert "TLS Web Client Authentication" in openssl(
        "x509", "-in", pki.client_user_cert, "-noout", "-ext", "extendedKeyUsage")
    with open(pki.server_chain) as f:
        assert f.read().count("BEGIN CERTIFICATE") == 2
    with open(pki.server_cert) as f:
        assert f.read().count("BEGIN CERTIFICATE") == 1


def test_cn_only_has_no_san(pki):
    assert openssl("x509", "-in", pki.cn_only_cert, "-noout", "-ext", "subjectAltName") == ""
    decoded = ssl._ssl._test_decode_cert(pki.cn_only_cert)
    assert "subjectAltName" not in decoded
    assert decoded["subject"] == ((("commonName", "cn-only.test"),),)


def test_mismatched_pair_does_not_match(pki):
    def pub_of_cert(c):
        return openssl("x509", "-in", c, "-noout", "-pubkey")

    def pub_of_key(k):
        return openssl("pkey", "-in", k, "-pubout")

    assert pub_of_cert(pki.server_cert) == pub_of_key(pki.server_key)
    assert pub_of_cert(pki.other_cert) == pub_of_key(pki.other_key)
    assert pub_of_cert(pki.mismatch_cert) != pub_of_key(pki.mismatch_key)


def test_nginx_tls_origin_reports_sni(nginx_tls_origin, pki):
    n = nginx_tls_origin()
    status, headers, body = curl(n.port, "/x?y=1", pki)
    assert status == 200
    assert body == "nginx-tls GET /x?y=1\n"
    assert headers["x-sni"] == "secure.api.endpoint"
    assert headers["x-client-verify"] == "NONE"
    assert headers["x-proto"] == "TLSv1.3"
    # Python's client verifies it too, also with X509_STRICT.
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection(("127.0.0.1", n.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="secure.api.endpoint") as s:
            assert s.version() == "TLSv1.3"


def test_nginx_tls_origin_client_certs(nginx_tls_origin, pki):
    n = nginx_tls_origin(client_ca=pki.client_ca)
    admin = ("--cert", pki.client_admin_cert, "--key", pki.client_admin_key)
    user = ("--cert", pki.client_user_cert, "--key", pki.client_user_key)
    status, headers, body = curl(n.port, "/need_cert", pki, *admin)
    assert (status, headers["x-client-verify"]) == (200, "SUCCESS")
    assert headers["x-client-dn"] == "CN=admin"
    assert curl(n.port, "/secure_admin", pki, *admin)[0] == 200
    status, headers, _ = curl(n.port, "/secure_admin", pki, *user)
    assert (status, headers["x-client-dn"], headers["x-client-verify"]) == (403, "CN=user",
                                                                           "SUCCESS")
    assert curl(n.port, "/need_cert", pki, *user)[0] == 200
    status, headers, _ = curl(n.port, "/need_cert", pki)
    assert (status, headers["x-client-verify"]) == (403, "NONE")
    assert curl(n.port, "/secure_admin", pki)[0] == 403
    # A client cert from another CA: nginx's 400 (495 inside) under `optional`.
    assert curl(n.port, "/x", pki, "--cert", pki.other_cert, "--key", pki.other_key)[0] == 400


def test_expired_and_wrong_name_fail_verification(nginx_tls_origin, pki):
    expired = nginx_tls_origin(cert=pki.expired_cert, key=pki.expired_key)
    assert "certificate has expired" in handshake_error(expired.port, pki, "localhost")
    wrong = nginx_tls_origin(cert=pki.wrong_name_cert, key=pki.wrong_name_key)
    assert "Hostname mismatch" in handshake_error(wrong.port, pki, "localhost")
    assert handshake_error(wrong.port, pki, "wrong.test") is None
