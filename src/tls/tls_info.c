/*
 * A client connection's TLS parameters and client certificate as text (struct
 * weir_tls_info), for hooks and for the headers that carry a client's identity upstream.
 * Every field is printable ASCII, because the header path sends them as they are: names are
 * printed with RFC 2253 escapes, SAN bytes outside printable ASCII are percent-encoded, and a
 * final pass replaces anything left (never expected) with '?'.
 */
#include "tls/tls_int.h"

#include <arpa/inet.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "core/alloc.h"
#include "net/stream.h"
#include "weir/tls.h"

enum field {
    FL_PROTOCOL = 0,
    FL_CIPHER,
    FL_SNI,
    FL_ALPN,
    FL_VERIFY,
    FL_SUBJECT,
    FL_ISSUER,
    FL_SANS,
    FL_SERIAL,
    FL_FINGERPRINT,
    FL_PEM,
    FL_COUNT,
};

/* The fields' text, each ended by a NUL, in one memory BIO; off[] says where each starts. */
struct text {
    BIO *b;
    size_t off[FL_COUNT];
    bool ok;
};

static size_t text_len(const struct text *t)
{
    return (size_t)BIO_number_written(t->b);
}

static void put(struct text *t, const void *p, size_t n)
{
    if (t->ok && n > 0 && BIO_write(t->b, p, (int)n) != (int)n) {
        t->ok = false;
    }
}

static void put_str(struct text *t, const char *s)
{
    if (s != NULL) {
        put(t, s, strlen(s));
    }
}

static void begin(struct text *t, enum field f)
{
    t->off[f] = text_len(t);
}

static void end(struct text *t)
{
    put(t, "", 1);
}

/* Bytes outside printable ASCII, and the separators ',' and '%', as %XX. */
static void put_escaped(struct text *t, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = p[i];
        if (ch > 0x20 && ch < 0x7f && ch != ',' && ch != '%') {
            put(t, &ch, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            put(t, e, 3);
        }
    }
}

static void put_name(struct text *t, const X509_NAME *name)
{
    if (t->ok && X509_NAME_print_ex(t->b, name, 0, XN_FLAG_RFC2253) < 0) {
        t->ok = false;
    }
}

static void put_sans(struct text *t, X509 *cert)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (gens == NULL) {
        ERR_clear_error();
        return;
    }
    bool first = true;
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        const char *tag = NULL;
        const ASN1_STRING *v = NULL;
        switch (g->type) {
        case GEN_DNS:
            tag = "DNS:";
            v = g->d.dNSName;
            break;
        case GEN_EMAIL:
            tag = "email:";
            v = g->d.rfc822Name;
            break;
        case GEN_URI:
            tag = "URI:";
            v = g->d.uniformResourceIdentifier;
            break;
        case GEN_IPADD:
            tag = "IP:";
            v = g->d.iPAddress;
            break;
        default:
            continue; /* other names (directory, otherName...) are not shown */
        }
        if (!first) {
            put_str(t, ", ");
        }
        put_str(t, tag);
        first = false;
        const unsigned char *d = ASN1_STRING_get0_data(v);
        int len = ASN1_STRING_length(v);
        if (g->type == GEN_IPADD) {
            char ip[INET6_ADDRSTRLEN] = "";
            if ((len == 4 || len == 16) &&
                inet_ntop(len == 4 ? AF_INET : AF_INET6, d, ip, sizeof(ip)) == NULL) {
                ip[0] = '\0';
            }
            put_str(t, ip);
        } else if (len > 0) {
            put_escaped(t, d, (size_t)len);
        }
    }
    GENERAL_NAMES_free(gens);
}

static void put_serial(struct text *t, X509 *cert)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    if (hex == NULL) {
        t->ok = false;
    } else {
        put_str(t, hex);
    }
    OPENSSL_free(hex);
    BN_free(bn);
    ERR_clear_error();
}

static void put_fingerprint(struct text *t, X509 *cert)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (X509_digest(cert, EVP_sha256(), md, &n) != 1) {
        ERR_clear_error();
        t->ok = false;
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        char e[2] = {hex[md[i] >> 4], hex[md[i] & 15]};
        put(t, e, 2);
    }
}

static void put_verify(struct text *t, SSL *ssl, X509 *cert)
{
    if (cert == NULL) {
        put_str(t, "NONE");
        return;
    }
    long v = SSL_get_verify_result(ssl);
    if (v == X509_V_OK) {
        put_str(t, "SUCCESS");
    } else {
        put_str(t, "FAILED:");
        put_str(t, X509_verify_cert_error_string(v));
    }
}

/* Everything but PEM (which keeps its line breaks) is printable ASCII, whatever came in. */
static void sanitize(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\0' && (p[i] < 0x20 || p[i] > 0x7e)) {
            p[i] = '?';
        }
    }
}

/* Every field into t, in enum order; returns where the PEM (not sanitized) starts. */
static size_t write_fields(struct text *t, SSL *ssl, X509 *cert)
{
    begin(t, FL_PROTOCOL);
    put_str(t, SSL_get_version(ssl));
    end(t);
    begin(t, FL_CIPHER);
    put_str(t, SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
    end(t);
    begin(t, FL_SNI);
    put_str(t, SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    end(t);
    begin(t, FL_ALPN);
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn != NULL) {
        put_escaped(t, alpn, alpn_len);
    }
    end(t);
    begin(t, FL_VERIFY);
    put_verify(t, ssl, cert);
    end(t);
    begin(t, FL_SUBJECT);
    if (cert != NULL) {
        put_name(t, X509_get_subject_name(cert));
    }
    end(t);
    begin(t, FL_ISSUER);
    if (cert != NULL) {
        put_name(t, X509_get_issuer_name(cert));
    }
    end(t);
    begin(t, FL_SANS);
    if (cert != NULL) {
        put_sans(t, cert);
    }
    end(t);
    begin(t, FL_SERIAL);
    if (cert != NULL) {
        put_serial(t, cert);
    }
    end(t);
    begin(t, FL_FINGERPRINT);
    if (cert != NULL) {
        put_fingerprint(t, cert);
    }
    end(t);
    size_t pem_at = text_len(t);
    begin(t, FL_PEM);
    if (cert != NULL && t->ok && PEM_write_bio_X509(t->b, cert) != 1) {
        t->ok = false;
    }
    end(t);
    return pem_at;
}

struct weir_tls_info *weir__tls_info_new(const struct weir__stream *st)
{
    SSL *ssl = st->ssl;
    if (ssl == NULL) {
        return NULL;
    }
    struct text t = {.b = BIO_new(BIO_s_mem()), .ok = true};
    if (t.b == NULL) {
        ERR_clear_error();
        return NULL;
    }
    X509 *cert = SSL_get0_peer_certificate(ssl);
    size_t pem_at = write_fields(&t, ssl, cert);

    struct weir_tls_info *info = NULL;
    char *data = NULL;
    long n = BIO_get_mem_data(t.b, &data);
    if (t.ok && n > 0 && (size_t)n == text_len(&t)) {
        info = weir__malloc(sizeof(*info) + (size_t)n);
    }
    if (info != NULL) {
        char *p = (char *)(info + 1);
        memcpy(p, data, (size_t)n);
        sanitize(p, pem_at);
        info->protocol = p + t.off[FL_PROTOCOL];
        info->cipher = p + t.off[FL_CIPHER];
        info->sni = p + t.off[FL_SNI];
        info->alpn = p + t.off[FL_ALPN];
        info->verify = p + t.off[FL_VERIFY];
        info->subject = p + t.off[FL_SUBJECT];
        info->issuer = p + t.off[FL_ISSUER];
        info->sans = p + t.off[FL_SANS];
        info->serial = p + t.off[FL_SERIAL];
        info->fingerprint = p + t.off[FL_FINGERPRINT];
        info->cert_pem = p + t.off[FL_PEM];
        info->resumed = SSL_session_reused(ssl) == 1;
        info->client_cert = cert != NULL;
        info->client_verified = cert != NULL && SSL_get_verify_result(ssl) == X509_V_OK;
    }
    ERR_clear_error();
    BIO_free(t.b);
    return info;
}
