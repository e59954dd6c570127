"""A throwaway test PKI for weir's TLS tests, built with the openssl CLI (OpenSSL 3.0).

build_pki(directory) writes every certificate and key below directory and returns a Pki whose
attributes are the file paths (str). Keys are unencrypted PEM; certificate files hold the leaf
only (server_chain is leaf + CA). Everything is EC P-256 except the RSA-2048 server cert, so the
whole PKI takes well under a second. Every certificate passes OpenSSL's X509_V_FLAG_X509_STRICT
checks (critical basicConstraints on CAs, SKI/AKI, keyUsage), so clients that verify strictly
accept the good ones.

Names:
  ca, ca_key                 the CA that signs every server cert (ca.pem)
  other_ca, other_ca_key     an unrelated CA (for "unknown CA" cases); it signs nothing
  client_ca, client_ca_key   the CA that signs client certs (client_ca.pem)
  server_cert/_key           RSA-2048, SAN localhost, weir.test, alt.weir.test, IP 127.0.0.1
  server_chain               server_cert + ca.pem
  server_ec_cert/_key        ECDSA P-256, the same names
  other_cert/_key            SAN DNS other.test
  wild_cert/_key             SAN DNS *.wild.test
  cn_only_cert/_key          subject CN=cn-only.test, no subjectAltName extension
  expired_cert/_key          SAN localhost, valid 2020-01-01 .. 2020-02-01 only
  wrong_name_cert/_key       SAN DNS wrong.test
  upstream_cert/_key         SAN DNS secure.api.endpoint (the nginx_tls_origin default)
  upstream_chain             upstream_cert + ca.pem
  client_admin_cert/_key     CN=admin, extendedKeyUsage clientAuth, signed by client_ca
  client_user_cert/_key      CN=user, extendedKeyUsage clientAuth, signed by client_ca
  client_revoked_cert/_key   CN=revoked, signed by client_ca, revoked in client_crl
  client_other_cert/_key     CN=stranger, a client cert signed by other_ca (unknown CA)
  client_san_cert/_key       subject O="Ex, Inc", CN=José (UTF-8), SAN DNS, IPv4, IPv6, email
                             and URI names; signed by client_ca
  client_int_ca/_key         an intermediate CA signed by client_ca
  client_deep_cert/_key      CN=deep, signed by client_int_ca; client_deep_chain = leaf + it
  client_crl                 client_ca's CRL (PEM): client_revoked is revoked, next update in
                             30 days
  client_crl_expired         the same list with its next update in the past (2020-02-01)
  server_ec_ocsp             a DER OCSP response from ca: server_ec_cert is good, for 7 days
  server_ec_ocsp_revoked     the same, saying it is revoked
  mismatch_cert, mismatch_key  server_cert with other_key: a pair that does not match
"""
import os
import subprocess

SERVER_NAMES = "DNS:localhost,DNS:weir.test,DNS:alt.weir.test,IP:127.0.0.1"

# One config for every openssl call: a fixed, prompt-free [req] and one extension section per
# kind of certificate, so nothing depends on /usr/lib/ssl/openssl.cnf.
OPENSSL_CNF = """
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[server_rsa]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = ${ENV::WEIR_PKI_SAN}

[server_ec]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = ${ENV::WEIR_PKI_SAN}

[server_ec_nosan]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer

[client_san]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = ${ENV::WEIR_PKI_SAN}

# `openssl ca`, only for the expired cert (x509 -req in 3.0 has no -not_before/-not_after).
[ca]
default_ca = expired_ca
[expired_ca]
dir = ${ENV::WEIR_PKI_DIR}
database = $dir/ca-db/index.txt
new_certs_dir = $dir/ca-db
serial = $dir/ca-db/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
commonName = supplied

# `openssl ca` for client_ca's revocation lists.
[client_db]
dir = ${ENV::WEIR_PKI_DIR}
database = $dir/client-db/index.txt
serial = $dir/client-db/serial
crlnumber = $dir/client-db/crlnumber
default_md = sha256
default_crl_days = 30
policy = policy_any
unique_subject = no
"""


class Pki:
    """The paths of one built PKI (see the module docstring); dir is its directory."""

    def __init__(self, directory):
        self.dir = str(directory)

    def __repr__(self):
        return f"Pki({self.dir!r})"


def _run(args, env):
    r = subprocess.run(["openssl"] + args, capture_output=True, text=True, env=env,
                       timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")


def build_pki(directory):
    """Builds the whole PKI into directory (created if needed); returns its Pki."""
    d = os.path.abspath(str(directory))
    os.makedirs(os.path.join(d, "ca-db"), exist_ok=True)
    cnf = os.path.join(d, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write(OPENSSL_CNF)
    env = dict(os.environ, OPENSSL_CONF=cnf, WEIR_PKI_DIR=d, WEIR_PKI_SAN="DNS:unused")
    p = Pki(d)
    serial = [1000]

    def path(name):
        return os.path.join(d, name)

    def newkey(name, rsa=False):
        key = path(f"{name}.key")
        if rsa:
            _run(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                  "-out", key], env)
        else:
            _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-out", key], env)
        return key

    def make_ca(name, cn):
        key = newkey(name)
        cert = path(f"{name}.pem")
        _run(["req", "-config", cnf, "-new", "-x509", "-key", key, "-subj", f"/CN={cn}",
              "-days", "3650", "-sha256", "-extensions", "v3_ca", "-out", cert], env)
        setattr(p, name, cert)
        setattr(p, f"{name}_key", key)

    def make_leaf(name, cn, ca, ext, san=None, rsa=False, subj=None):
        key = newkey(name, rsa=rsa)
        csr, cert = path(f"{name}.csr"), path(f"{name}.pem")
        _run(["req", "-config", cnf, "-new", "-utf8", "-key", key, "-subj", subj or f"/CN={cn}",
              "-out", csr], env)
        serial[0] += 1
        leaf_env = dict(env, WEIR_PKI_SAN=san or "DNS:unused")
        _run(["x509", "-req", "-in", csr, "-CA", getattr(p, ca), "-CAkey",
              getattr(p, f"{ca}_key"), "-set_serial", str(serial[0]), "-days", "3650",
              "-sha256", "-extfile", cnf, "-extensions", ext, "-out", cert], leaf_env)
        os.unlink(csr)
        setattr(p, f"{name}_cert", cert)
        setattr(p, f"{name}_key", key)

    make_ca("ca", "weir test CA")
    make_ca("other_ca", "weir unrelated test CA")
    make_ca("client_ca", "weir test client CA")

    make_leaf("server", "localhost", "ca", "server_rsa", SERVER_NAMES, rsa=True)
    make_leaf("server_ec", "localhost", "ca", "server_ec", SERVER_NAMES)
    make_leaf("other", "other.test", "ca", "server_ec", "DNS:other.test")
    make_leaf("wild", "*.wild.test", "ca", "server_ec", "DNS:*.wild.test")
    make_leaf("cn_only", "cn-only.test", "ca", "server_ec_nosan")
    make_leaf("wrong_name", "wrong.test", "ca", "server_ec", "DNS:wrong.test")
    make_leaf("upstream", "secure.api.endpoint", "ca", "server_ec", "DNS:secure.api.endpoint")
    make_leaf("client_admin", "admin", "client_ca", "client")
    make_leaf("client_user", "user", "client_ca", "client")
    make_leaf("client_revoked", "revoked", "client_ca", "client")
    make_leaf("client_other", "stranger", "other_ca", "client")
    make_leaf("client_san", None, "client_ca", "client_san",
              "DNS:svc.example,IP:10.0.0.1,IP:::1,email:ops@example.com,"
              "URI:spiffe://example.org/ns/web", subj="/O=Ex, Inc/CN=Jos\u00e9")

    # An intermediate client CA and a leaf under it (verify_depth 2).
    key = newkey("client_int_ca")
    csr, cert = path("client_int_ca.csr"), path("client_int_ca.pem")
    _run(["req", "-config", cnf, "-new", "-key", key, "-subj", "/CN=weir test client sub-CA",
          "-out", csr], env)
    serial[0] += 1
    _run(["x509", "-req", "-in", csr, "-CA", p.client_ca, "-CAkey", p.client_ca_key,
          "-set_serial", str(serial[0]), "-days", "3650", "-sha256", "-extfile", cnf,
          "-extensions", "v3_ca", "-out", cert], env)
    os.unlink(csr)
    p.client_int_ca, p.client_int_ca_key = cert, key
    make_leaf("client_deep", "deep", "client_int_ca", "client")

    # client_ca's revocation lists: client_revoked revoked; one current, one expired.
    os.makedirs(path("client-db"), exist_ok=True)
    with open(path("client-db/index.txt"), "w"):
        pass
    with open(path("client-db/crlnumber"), "w") as f:
        f.write("01\n")
    ca_args = ["ca", "-config", cnf, "-name", "client_db", "-batch", "-cert", p.client_ca,
               "-keyfile", p.client_ca_key]
    _run(ca_args + ["-revoke", p.client_revoked_cert], env)
    p.client_crl = path("client_crl.pem")
    _run(ca_args + ["-gencrl", "-out", p.client_crl], env)
    p.client_crl_expired = path("client_crl_expired.pem")
    _run(ca_args + ["-gencrl", "-crl_lastupdate", "20200101000000Z", "-crl_nextupdate",
                    "20200201000000Z", "-out", p.client_crl_expired], env)

    # Expired: `openssl ca` takes explicit dates on 3.0.
    key = newkey("expired")
    csr, cert = path("expired.csr"), path("expired.pem")
    _run(["req", "-config", cnf, "-new", "-key", key, "-subj", "/CN=localhost", "-out", csr],
         env)
    with open(path("ca-db/index.txt"), "w"):
        pass
    with open(path("ca-db/serial"), "w") as f:
        f.write("%X\n" % 0x7000)
    _run(["ca", "-config", cnf, "-batch", "-notext", "-in", csr, "-out", cert,
          "-cert", p.ca, "-keyfile", p.ca_key, "-startdate", "20200101000000Z",
          "-enddate", "20200201000000Z", "-extfile", cnf, "-extensions", "server_ec"],
         dict(env, WEIR_PKI_SAN="DNS:localhost"))
    os.unlink(csr)
    p.expired_cert, p.expired_key = cert, key

    def chain(name, leaf):
        out = path(name)
        with open(out, "w") as f:
            for part in (leaf, p.ca):
                with open(part) as src:
                    f.write(src.read())
        return out

    # OCSP responses for server_ec_cert, signed by ca itself (openssl ocsp as the responder).
    sn = subprocess.run(["openssl", "x509", "-in", p.server_ec_cert, "-noout", "-serial"],
                        capture_output=True, text=True, check=True, timeout=30,
                        env=env).stdout.strip().split("=", 1)[1]
    req = path("ocsp-req.der")
    _run(["ocsp", "-issuer", p.ca, "-cert", p.server_ec_cert, "-no_nonce", "-reqout", req], env)
    for name, line in (("server_ec_ocsp", f"V\t301231235959Z\t\t{sn}\tunknown\t/CN=localhost\n"),
                       ("server_ec_ocsp_revoked",
                        f"R\t301231235959Z\t260101000000Z\t{sn}\tunknown\t/CN=localhost\n")):
        index = path(f"{name}.index")
        with open(index, "w") as f:
            f.write(line)
        out = path(f"{name}.der")
        _run(["ocsp", "-index", index, "-CA", p.ca, "-rsigner", p.ca, "-rkey", p.ca_key,
              "-reqin", req, "-respout", out, "-ndays", "7"], env)
        setattr(p, name, out)

    p.server_chain = chain("server_chain.pem", p.server_cert)
    p.upstream_chain = chain("upstream_chain.pem", p.upstream_cert)
    p.client_deep_chain = path("client_deep_chain.pem")
    with open(p.client_deep_chain, "w") as f:
        for part in (p.client_deep_cert, p.client_int_ca):
            with open(part) as src:
                f.write(src.read())
    p.mismatch_cert, p.mismatch_key = p.server_cert, p.other_key
    return p


if __name__ == "__main__":
    import sys
    import time
    t0 = time.monotonic()
    pki = build_pki(sys.argv[1] if len(sys.argv) > 1 else "pki")
    print(f"built {pki.dir} in {time.monotonic() - t0:.2f}s")
    for k, v in sorted(vars(pki).items()):
        print(f"  {k} = {v}")
