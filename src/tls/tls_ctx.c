/*
 * TLS contexts built when a config is loaded: certificates read and checked, a listener's
 * server context (one OpenSSL context per set of names, chosen by SNI), and the lists
 * (ciphers, suites, groups) checked before a snapshot is accepted.
 */
#include "tls/tls_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "core/alloc.h"
#include "weir/error.h"
#include "weir/peer.h"
#include "weir/tls.h"

#ifdef WEIR_FAILMALLOC
/*
 * Allocation-failure builds route OpenSSL's allocations through weir's counter too, so the
 * failmalloc sweep fails allocations inside handshakes and context builds as well as weir's
 * own (tests/integration/test_failmalloc.py). Set before main, before OpenSSL allocates.
 */
static void *ossl_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return weir__malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    if (n == 0) {
        weir__free(p);
        return NULL;
    }
    return weir__realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    weir__free(p);
}

__attribute__((constructor)) static void ossl_count_allocations(void)
{
    (void)CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free);
}
#endif

/* Mozilla's "intermediate" TLS 1.2 ciphers (forward secret AEAD only). */
static const char DEFAULT_CIPHERS[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";
static const char DEFAULT_SUITES[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
static const char DEFAULT_CURVES[] = "X25519:prime256v1:secp384r1";

void weir__tls_why(char why[WEIR_TLS_ERRMAX], const char *what)
{
    unsigned long e = ERR_peek_last_error();
    if (e != 0) {
        char r[160];
        ERR_error_string_n(e, r, sizeof(r));
        const char *reason = ERR_reason_error_string(e);
        (void)snprintf(why, WEIR_TLS_ERRMAX, "%s: %s", what, reason != NULL ? reason : r);
    } else {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "%s", what);
    }
    ERR_clear_error();
}

/*
 * OpenSSL 3 builds each algorithm implementation the first time something fetches it, and a
 * construction that fails half-way (out of memory) can leave that algorithm unusable for the
 * rest of the process: one transient failure in a first handshake would fail every later one.
 * Fetching what handshakes use once, on the loading thread, when the first context is built,
 * leaves them in OpenSSL's method cache, so handshakes never construct them. Failures here
 * are ignored: they are retried by the handshake that needs the algorithm.
 */
static void warm_fetch(void)
{
    static const char *const ciphers[] = {"AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305",
                                          "AES-256-CBC", "AES-128-CBC"};
    static const char *const digests[] = {"SHA256", "SHA384", "SHA512", "SHA1"};
    static const char *const kdfs[] = {"HKDF", "TLS13-KDF", "TLS1-PRF"};
    static const char *const kems[] = {"X25519", "EC", "RSA", "DH", "RSA-PSS", "X448"};
    for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++) {
        EVP_CIPHER_free(EVP_CIPHER_fetch(NULL, ciphers[i], NULL));
    }
    for (size_t i = 0; i < sizeof(digests) / sizeof(digests[0]); i++) {
        EVP_MD_free(EVP_MD_fetch(NULL, digests[i], NULL));
    }
    for (size_t i = 0; i < sizeof(kdfs) / sizeof(kdfs[0]); i++) {
        EVP_KDF_free(EVP_KDF_fetch(NULL, kdfs[i], NULL));
    }
    EVP_MAC_free(EVP_MAC_fetch(NULL, "HMAC", NULL));
    for (size_t i = 0; i < sizeof(kems) / sizeof(kems[0]); i++) {
        EVP_KEYMGMT_free(EVP_KEYMGMT_fetch(NULL, kems[i], NULL));
        EVP_KEYEXCH_free(EVP_KEYEXCH_fetch(NULL, kems[i], NULL));
        EVP_SIGNATURE_free(EVP_SIGNATURE_fetch(NULL, kems[i], NULL));
    }
    EVP_KEYEXCH_free(EVP_KEYEXCH_fetch(NULL, "ECDH", NULL));
    EVP_SIGNATURE_free(EVP_SIGNATURE_fetch(NULL, "ECDSA", NULL));
    EVP_RAND_free(EVP_RAND_fetch(NULL, "CTR-DRBG", NULL));
    ERR_clear_error();
}

static pthread_once_t warm_once = PTHREAD_ONCE_INIT;

/* ---- certificates ---- */

/*
 * Opens a PEM file for reading: a regular file of at most WEIR_TLS_PEM_MAX bytes (a device
 * or a FIFO named by mistake would block the loader, a huge file would eat its memory).
 */
static BIO *open_pem(const char *file, char why[WEIR_TLS_ERRMAX])
{
    struct stat stt;
    if (stat(file, &stt) != 0) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "cannot read %s: %s", file, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(stt.st_mode) || stt.st_size > WEIR_TLS_PEM_MAX) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "%s is not a regular file of at most %d MiB", file,
                       WEIR_TLS_PEM_MAX >> 20);
        return NULL;
    }
    BIO *b = BIO_new_file(file, "r");
    if (b == NULL) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "cannot read %s: %s", file, strerror(errno));
        ERR_clear_error();
    }
    return b;
}

static int add_name(struct weir__tls_cert *c, const char *s, size_t len)
{
    if (len == 0 || len > 253 || memchr(s, '\0', len) != NULL || c->nnames >= WEIR_TLS_MAX_NAMES) {
        return 0; /* not a usable host name: never matched */
    }
    char *n = weir__malloc(len + 1);
    if (n == NULL) {
        return WEIR_ENOMEM;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        n[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    n[len] = '\0';
    c->names[c->nnames++] = n;
    return 0;
}

/* The names a leaf is valid for: its SAN DNS names, or its CN when it has no SAN. */
static int collect_names(struct weir__tls_cert *c)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(c->leaf, NID_subject_alt_name, NULL, NULL);
    if (sans != NULL) {
        int rc = 0;
        for (int i = 0; rc == 0 && i < sk_GENERAL_NAME_num(sans); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
            if (g->type == GEN_DNS) {
                const ASN1_IA5STRING *d = g->d.dNSName;
                rc = add_name(c, (const char *)ASN1_STRING_get0_data(d),
                              (size_t)ASN1_STRING_length(d));
            }
        }
        GENERAL_NAMES_free(sans);
        return rc;
    }
    const X509_NAME *subj = X509_get_subject_name(c->leaf);
    int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (idx < 0) {
        return 0;
    }
    const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
    return add_name(c, (const char *)ASN1_STRING_get0_data(cn), (size_t)ASN1_STRING_length(cn));
}

static int read_chain(const char *file, struct weir__tls_cert *c, char why[WEIR_TLS_ERRMAX])
{
    BIO *b = open_pem(file, why);
    if (b == NULL) {
        return WEIR_EINVAL;
    }
    int rc = 0;
    c->leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
    if (c->leaf == NULL) {
        char what[WEIR_TLS_ERRMAX];
        (void)snprintf(what, sizeof(what), "%s holds no PEM certificate", file);
        weir__tls_why(why, what);
        rc = WEIR_EINVAL;
        goto out;
    }
    c->chain = sk_X509_new_null();
    if (c->chain == NULL) {
        rc = WEIR_ENOMEM;
        goto out;
    }
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (sk_X509_push(c->chain, x) <= 0) {
            X509_free(x);
            rc = WEIR_ENOMEM;
            goto out;
        }
    }
    ERR_clear_error(); /* the end of the file */
out:
    BIO_free(b);
    return rc;
}

static int read_key(const char *file, struct weir__tls_cert *c, char why[WEIR_TLS_ERRMAX])
{
    BIO *b = open_pem(file, why);
    if (b == NULL) {
        return WEIR_EINVAL;
    }
    c->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    if (c->key == NULL) {
        char what[WEIR_TLS_ERRMAX];
        (void)snprintf(what, sizeof(what), "%s holds no usable PEM private key", file);
        weir__tls_why(why, what);
        return WEIR_EINVAL;
    }
    return 0;
}

int weir__tls_cert_load(const char *cert_file, const char *key_file, struct weir__tls_cert **out,
                        enum weir__tls_cert_part *part, char why[WEIR_TLS_ERRMAX])
{
    struct weir__tls_cert *c = weir__calloc(1, sizeof(*c));
    if (c == NULL) {
        return WEIR_ENOMEM;
    }
    *part = WEIR_TLS_PART_CERT;
    int rc = read_chain(cert_file, c, why);
    if (rc != 0) {
        goto fail;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(c->leaf)) <= 0) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "the certificate in %s has expired", cert_file);
        rc = WEIR_EINVAL;
        goto fail;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(c->leaf)) >= 0) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "the certificate in %s is not valid yet", cert_file);
        rc = WEIR_EINVAL;
        goto fail;
    }
    *part = WEIR_TLS_PART_KEY;
    rc = read_key(key_file, c, why);
    if (rc != 0) {
        goto fail;
    }
    if (X509_check_private_key(c->leaf, c->key) != 1) {
        char what[WEIR_TLS_ERRMAX];
        (void)snprintf(what, sizeof(what), "the key in %s does not match the certificate in %s",
                       key_file, cert_file);
        weir__tls_why(why, what);
        rc = WEIR_EINVAL;
        goto fail;
    }
    c->key_type = EVP_PKEY_get_base_id(c->key);
    rc = collect_names(c);
    if (rc != 0) {
        goto fail;
    }
    *out = c;
    return 0;
fail:
    weir__tls_cert_free(c);
    return rc;
}

/* The largest OCSP response read (real ones are a few KiB). */
#define OCSP_MAX (1 << 20)

/* The response for c's serial in bs: its status checked (good, not expired). */
static int check_ocsp_status(const struct weir__tls_cert *c, OCSP_BASICRESP *bs, const char *file,
                             char why[WEIR_TLS_ERRMAX])
{
    const ASN1_INTEGER *serial = X509_get0_serialNumber(c->leaf);
    for (int i = 0; i < OCSP_resp_count(bs); i++) {
        OCSP_SINGLERESP *one = OCSP_resp_get0(bs, i);
        ASN1_INTEGER *sn = NULL;
        if (OCSP_id_get0_info(NULL, NULL, NULL, &sn, (OCSP_CERTID *)OCSP_SINGLERESP_get0_id(one)) !=
                1 ||
            ASN1_INTEGER_cmp(sn, serial) != 0) {
            continue;
        }
        int reason = 0;
        ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
        int st = OCSP_single_get0_status(one, &reason, &rev, &thisupd, &nextupd);
        if (st != V_OCSP_CERTSTATUS_GOOD) {
            (void)snprintf(why, WEIR_TLS_ERRMAX, "%s says the certificate is %s", file,
                           OCSP_cert_status_str(st));
            return WEIR_EINVAL;
        }
        if (OCSP_check_validity(thisupd, nextupd, 300, -1) != 1) {
            ERR_clear_error();
            (void)snprintf(why, WEIR_TLS_ERRMAX, "%s has expired (or is not valid yet)", file);
            return WEIR_EINVAL;
        }
        return 0;
    }
    (void)snprintf(why, WEIR_TLS_ERRMAX, "%s is not a response about this certificate", file);
    return WEIR_EINVAL;
}

int weir__tls_cert_ocsp(struct weir__tls_cert *c, const char *file, char why[WEIR_TLS_ERRMAX])
{
    struct stat st;
    if (stat(file, &st) != 0) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "cannot read %s: %s", file, strerror(errno));
        return WEIR_EINVAL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > OCSP_MAX) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "%s is not a regular file of at most 1 MiB", file);
        return WEIR_EINVAL;
    }
    unsigned char *der = weir__malloc((size_t)st.st_size);
    if (der == NULL) {
        return WEIR_ENOMEM;
    }
    FILE *f = fopen(file, "rb");
    size_t n = f != NULL ? fread(der, 1, (size_t)st.st_size, f) : 0;
    if (f != NULL) {
        (void)fclose(f);
    }
    if (n != (size_t)st.st_size) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "cannot read %s", file);
        weir__free(der);
        return WEIR_EINVAL;
    }
    const unsigned char *p = der;
    OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)n);
    OCSP_BASICRESP *bs = NULL;
    int rc = WEIR_EINVAL;
    if (resp == NULL) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "%s is not a DER OCSP response", file);
    } else if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "%s: the responder answered %s", file,
                       OCSP_response_status_str(OCSP_response_status(resp)));
    } else if ((bs = OCSP_response_get1_basic(resp)) == NULL) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "%s holds no basic OCSP response", file);
    } else {
        rc = check_ocsp_status(c, bs, file, why);
    }
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    ERR_clear_error();
    if (rc != 0) {
        weir__free(der);
        return rc;
    }
    weir__free(c->ocsp);
    c->ocsp = der;
    c->ocsp_len = n;
    return 0;
}

void weir__tls_cert_free(struct weir__tls_cert *c)
{
    if (c == NULL) {
        return;
    }
    X509_free(c->leaf);
    sk_X509_pop_free(c->chain, X509_free);
    EVP_PKEY_free(c->key);
    for (size_t i = 0; i < c->nnames; i++) {
        weir__free(c->names[i]);
    }
    weir__free(c->ocsp);
    weir__free(c);
}

/* ---- lists ---- */

bool weir__tls_check_list(const char *kind, const char *list, char why[WEIR_TLS_ERRMAX])
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        weir__tls_why(why, "cannot make a TLS context");
        return false;
    }
    int ok;
    if (strcmp(kind, "ciphers") == 0) {
        ok = SSL_CTX_set_cipher_list(ctx, list);
    } else if (strcmp(kind, "ciphersuites") == 0) {
        ok = SSL_CTX_set_ciphersuites(ctx, list);
    } else {
        ok = SSL_CTX_set1_groups_list(ctx, list);
    }
    SSL_CTX_free(ctx);
    if (ok != 1) {
        char what[WEIR_TLS_ERRMAX];
        (void)snprintf(what, sizeof(what), "OpenSSL takes no %s from this list", kind);
        weir__tls_why(why, what);
        return false;
    }
    return true;
}

/* ---- CA bundles and revocation lists ---- */

/* After a PEM read loop: true when it stopped at the end of the file, not at bad bytes. */
static bool pem_end(void)
{
    unsigned long e = ERR_peek_last_error();
    bool end =
        e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
    if (end) {
        ERR_clear_error();
    }
    return end;
}

/* After reading n objects of file: a stop at bad bytes, or nothing read, is an error. */
static int pem_result(int rc, int n, const char *file, const char *what, char why[WEIR_TLS_ERRMAX])
{
    if (rc == 0 && !pem_end()) {
        weir__tls_why(why, file);
        rc = WEIR_EINVAL;
    } else if (rc == 0 && n == 0) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "%s holds no PEM %s", file, what);
        rc = WEIR_EINVAL;
    }
    return rc;
}

/*
 * Reads every certificate of a PEM bundle into store and, when names is not NULL, their
 * subjects into names (the CA list a server sends in its CertificateRequest). A file with
 * no certificate, or with one that does not parse, is an error.
 */
static int load_certs(X509_STORE *store, STACK_OF(X509_NAME) * names, const char *file,
                      char why[WEIR_TLS_ERRMAX])
{
    BIO *b = open_pem(file, why);
    if (b == NULL) {
        return WEIR_EINVAL;
    }
    int n = 0;
    int rc = 0;
    X509 *x;
    while (rc == 0 && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(store, x) != 1) {
            weir__tls_why(why, "cannot add a CA certificate");
            rc = WEIR_EINVAL;
        } else if (names != NULL) {
            X509_NAME *nm = X509_NAME_dup(X509_get_subject_name(x));
            if (nm == NULL || sk_X509_NAME_push(names, nm) <= 0) {
                X509_NAME_free(nm);
                ERR_clear_error();
                rc = WEIR_ENOMEM;
            }
        }
        X509_free(x);
        n++;
    }
    BIO_free(b);
    return pem_result(rc, n, file, "certificate", why);
}

/*
 * Reads the revocation lists of a PEM file into store and turns on checking the client's
 * certificate against them. A list past its nextUpdate would fail every client, so it is
 * refused here, where the operator sees it.
 */
static int load_crls(X509_STORE *store, const char *file, char why[WEIR_TLS_ERRMAX])
{
    BIO *b = open_pem(file, why);
    if (b == NULL) {
        return WEIR_EINVAL;
    }
    int n = 0;
    int rc = 0;
    X509_CRL *crl;
    while (rc == 0 && (crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
        if (next != NULL && X509_cmp_current_time(next) < 0) {
            (void)snprintf(why, WEIR_TLS_ERRMAX,
                           "%s: a revocation list has expired (its next update is past)", file);
            rc = WEIR_EINVAL;
        } else if (X509_STORE_add_crl(store, crl) != 1) {
            weir__tls_why(why, "cannot add a revocation list");
            rc = WEIR_EINVAL;
        }
        X509_CRL_free(crl);
        n++;
    }
    BIO_free(b);
    rc = pem_result(rc, n, file, "revocation list", why);
    if (rc == 0 && X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK) != 1) {
        weir__tls_why(why, "cannot turn on revocation checks");
        rc = WEIR_EINVAL;
    }
    return rc;
}

/* ---- server contexts ---- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const struct weir__tls_server *srv = arg;
    unsigned char *sel = NULL;
    /* The server's order decides: h2 when the client offers it (tls.alpn). */
    if (SSL_select_next_proto(&sel, outlen, srv->alpn, srv->alpn_len, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    /* RFC 7301: nothing in common is a no_application_protocol alert. */
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* The context of the certificate matching name: exact names first, then *. wildcards. */
static SSL_CTX *find_ctx(const struct weir__tls_server *srv, const char *name)
{
    for (size_t i = 0; i < srv->nnames; i++) {
        if (!srv->names[i].wild && strcasecmp(srv->names[i].name, name) == 0) {
            return srv->ctx[srv->names[i].ctx];
        }
    }
    const char *dot = strchr(name, '.');
    if (dot == NULL || dot == name) {
        return NULL;
    }
    for (size_t i = 0; i < srv->nnames; i++) {
        /* "*.example.com" stored as ".example.com": one label only, as RFC 6125 says */
        if (srv->names[i].wild && strcasecmp(srv->names[i].name, dot) == 0) {
            return srv->ctx[srv->names[i].ctx];
        }
    }
    return NULL;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    struct weir__tls_server *srv = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return srv->reject_unknown ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_OK;
    }
    SSL_CTX *ctx = find_ctx(srv, name);
    if (ctx == NULL) {
        if (srv->reject_unknown) {
            *alert = SSL_AD_UNRECOGNIZED_NAME;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
        return SSL_TLSEXT_ERR_OK; /* the default certificate */
    }
    if (ctx != SSL_get_SSL_CTX(ssl) && SSL_set_SSL_CTX(ssl, ctx) == NULL) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

static const int VERSIONS[] = {TLS1_2_VERSION, TLS1_3_VERSION};

/* OCSP stapling: the response of the certificate the handshake chose, if it has one. */
static int status_cb(SSL *ssl, void *arg)
{
    const struct weir__tls_server *srv = arg;
    const X509 *x = SSL_get_certificate(ssl);
    for (size_t i = 0; x != NULL && i < srv->ncerts; i++) {
        const struct weir__tls_cert *c = srv->certs[i];
        if (c->leaf == x && c->ocsp != NULL) {
            unsigned char *copy = OPENSSL_memdup(c->ocsp, c->ocsp_len); /* OpenSSL frees it */
            if (copy == NULL ||
                SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)c->ocsp_len) != 1) {
                OPENSSL_free(copy);
                return SSL_TLSEXT_ERR_NOACK;
            }
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* client_auth optional: a certificate that fails verification is recorded, not refused. */
static int verify_optional(int ok, X509_STORE_CTX *x)
{
    (void)ok;
    (void)x;
    return 1;
}

/* Asks for a client certificate on ctx: the store to verify it against, the CA names. */
static int set_client_auth(SSL_CTX *ctx, const struct weir__tls_server *srv,
                           const struct weir__tls_server_opts *o)
{
    if (srv->client_store == NULL) {
        return 1;
    }
    STACK_OF(X509_NAME) *names = SSL_dup_CA_list(srv->client_names);
    if (names == NULL || SSL_CTX_set1_verify_cert_store(ctx, srv->client_store) != 1) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        return 0;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    if (o->client_auth == WEIR_TLS_AUTH_REQUIRED) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_optional);
    }
    SSL_CTX_set_verify_depth(ctx, (int)o->verify_depth);
    return 1;
}

static SSL_CTX *server_ctx(struct weir__tls_server *srv, const struct weir__tls_server_opts *o,
                           char why[WEIR_TLS_ERRMAX])
{
    (void)pthread_once(&warm_once, warm_fetch);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        weir__tls_why(why, "cannot make a TLS context");
        return NULL;
    }
    uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
    if (o->prefer_server_ciphers) {
        /* Our order (strongest first), except that a client listing ChaCha20 first (a phone
           without AES instructions) gets it. */
        opts |= SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA;
    }
    if (!o->session_tickets) {
        opts |= SSL_OP_NO_TICKET;
    }
    (void)SSL_CTX_set_options(ctx, opts);
    (void)SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One read() takes all the records the socket has, not a 5-byte header then the rest:
       half the reads per request and per handshake. Bytes OpenSSL holds keep the stream
       readable (nothing waits for an edge), as decrypted ones do. */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* No server-side cache (a lock every worker would take): resumption is by ticket. */
    (void)SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!o->session_tickets && SSL_CTX_set_num_tickets(ctx, 0) != 1) {
        goto fail;
    }
    if (o->session_tickets && srv->tickets != NULL &&
        weir__tls_tickets_use(srv->tickets, ctx) != 0) {
        goto fail;
    }
    if (o->session_timeout > 0) {
        (void)SSL_CTX_set_timeout(ctx, (long)o->session_timeout);
    }
    if (o->early_data && o->session_tickets) {
        /* Stateless tickets cannot be single-use, so OpenSSL's anti-replay (a session cache
           every worker would lock) is off: replays are bounded by RFC 8470 instead (safe
           methods only, Early-Data: 1 to the origin; see weir__tls_early). */
        (void)SSL_CTX_set_options(ctx, SSL_OP_NO_ANTI_REPLAY);
        if (SSL_CTX_set_max_early_data(ctx, 16384) != 1 ||
            SSL_CTX_set_recv_max_early_data(ctx, 16384) != 1) {
            goto fail;
        }
    }
    static const unsigned char sid[] = "weir";
    if (SSL_CTX_set_min_proto_version(ctx, VERSIONS[o->min_version]) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, VERSIONS[o->max_version]) != 1 ||
        SSL_CTX_set_cipher_list(ctx, o->ciphers ? o->ciphers : DEFAULT_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, o->ciphersuites ? o->ciphersuites : DEFAULT_SUITES) != 1 ||
        SSL_CTX_set1_groups_list(ctx, o->curves ? o->curves : DEFAULT_CURVES) != 1 ||
        SSL_CTX_set_dh_auto(ctx, 1) != 1 ||
        SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1) != 1 ||
        set_client_auth(ctx, srv, o) != 1) {
        goto fail;
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, srv);
    if (SSL_CTX_set_tlsext_status_cb(ctx, status_cb) != 1 ||
        SSL_CTX_set_tlsext_status_arg(ctx, srv) != 1) {
        goto fail;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, srv);
    return ctx;
fail:
    weir__tls_why(why, "cannot set the TLS settings");
    SSL_CTX_free(ctx);
    return NULL;
}

static bool same_names(const struct weir__tls_cert *a, const struct weir__tls_cert *b)
{
    if (a->nnames != b->nnames) {
        return false;
    }
    for (size_t i = 0; i < a->nnames; i++) {
        bool found = false;
        for (size_t j = 0; !found && j < b->nnames; j++) {
            found = strcmp(a->names[i], b->names[j]) == 0;
        }
        if (!found) {
            return false;
        }
    }
    return true;
}

/* The context certs[i] goes into: one with the same names and no key of its type yet. */
static long group_of(const struct weir__tls_server *srv, size_t i, const long *ctx_of)
{
    for (size_t j = 0; j < i; j++) {
        if (!same_names(srv->certs[j], srv->certs[i])) {
            continue;
        }
        bool taken = false;
        for (size_t k = 0; k < i; k++) {
            taken |= ctx_of[k] == ctx_of[j] && srv->certs[k]->key_type == srv->certs[i]->key_type;
        }
        if (!taken) {
            return ctx_of[j];
        }
    }
    return -1;
}

static int add_names(struct weir__tls_server *srv, const struct weir__tls_cert *c, size_t ctx)
{
    for (size_t i = 0; i < c->nnames; i++) {
        const char *n = c->names[i];
        bool wild = n[0] == '*' && n[1] == '.';
        struct weir__tls_name *e = &srv->names[srv->nnames++];
        e->name = wild ? n + 1 : n;
        e->wild = wild;
        e->ctx = ctx;
    }
    return 0;
}

static int build_contexts(struct weir__tls_server *srv, const struct weir__tls_server_opts *o,
                          char why[WEIR_TLS_ERRMAX])
{
    size_t total = 0;
    for (size_t i = 0; i < srv->ncerts; i++) {
        total += srv->certs[i]->nnames;
    }
    long *ctx_of = weir__calloc(srv->ncerts, sizeof(*ctx_of));
    srv->ctx = weir__calloc(srv->ncerts, sizeof(SSL_CTX *));
    srv->names = weir__calloc(total + 1, sizeof(*srv->names));
    int rc = WEIR_ENOMEM;
    if (ctx_of == NULL || srv->ctx == NULL || srv->names == NULL) {
        goto out;
    }
    rc = WEIR_EINVAL;
    for (size_t i = 0; i < srv->ncerts; i++) {
        struct weir__tls_cert *c = srv->certs[i];
        long g = group_of(srv, i, ctx_of);
        if (g < 0) {
            g = (long)srv->nctx;
            if ((srv->ctx[g] = server_ctx(srv, o, why)) == NULL) {
                goto out;
            }
            srv->nctx++;
            add_names(srv, c, (size_t)g);
        }
        ctx_of[i] = g;
        if (SSL_CTX_use_cert_and_key(srv->ctx[g], c->leaf, c->key, c->chain, 1) != 1) {
            weir__tls_why(why, "cannot use the certificate");
            goto out;
        }
    }
    srv->main = srv->ctx[ctx_of[o->default_cert]];
    rc = 0;
out:
    weir__free(ctx_of);
    return rc;
}

/* client_auth: the store of CAs (and CRLs) client certificates are verified against. */
static int client_store_new(struct weir__tls_server *srv, const struct weir__tls_server_opts *o,
                            enum weir__tls_server_part *part, char why[WEIR_TLS_ERRMAX])
{
    *part = WEIR_TLS_SPART_CA;
    if (o->client_ca == NULL) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "client_auth needs a ca");
        return WEIR_EINVAL;
    }
    srv->client_store = X509_STORE_new();
    srv->client_names = sk_X509_NAME_new_null();
    if (srv->client_store == NULL || srv->client_names == NULL) {
        ERR_clear_error();
        return WEIR_ENOMEM;
    }
    int rc = load_certs(srv->client_store, srv->client_names, o->client_ca, why);
    if (rc == 0 && o->client_crl != NULL) {
        *part = WEIR_TLS_SPART_CRL;
        rc = load_crls(srv->client_store, o->client_crl, why);
    }
    if (rc == 0) {
        *part = WEIR_TLS_SPART_TLS;
    }
    return rc;
}

int weir__tls_server_new(struct weir__tls_cert **certs, size_t ncerts,
                         const struct weir__tls_server_opts *opts, struct weir__tls_server **out,
                         enum weir__tls_server_part *part, char why[WEIR_TLS_ERRMAX])
{
    *part = WEIR_TLS_SPART_TLS;
    struct weir__tls_server *srv = weir__calloc(1, sizeof(*srv));
    struct weir__tls_cert **mine =
        weir__calloc(ncerts ? ncerts : 1, sizeof(struct weir__tls_cert *));
    if (srv == NULL || mine == NULL) {
        weir__free(srv);
        weir__free(mine);
        weir__tls_tickets_free(opts->tickets);
        for (size_t i = 0; i < ncerts; i++) {
            weir__tls_cert_free(certs[i]);
        }
        return WEIR_ENOMEM;
    }
    memcpy(mine, certs, ncerts * sizeof(struct weir__tls_cert *));
    srv->certs = mine;
    srv->ncerts = ncerts;
    srv->tickets = opts->tickets;
    srv->reject_unknown = opts->reject_unknown_sni;
    srv->early_data = opts->early_data && opts->session_tickets;
    if (opts->alpn_h2) {
        memcpy(srv->alpn + srv->alpn_len, "\x02h2", 3);
        srv->alpn_len += 3;
    }
    if (opts->alpn_http11 || !opts->alpn_h2) {
        memcpy(srv->alpn + srv->alpn_len, "\x08http/1.1", 9);
        srv->alpn_len += 9;
    }
    atomic_init(&srv->refs, 1);
    if (ncerts == 0 || opts->default_cert >= ncerts) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "no certificate");
        weir__tls_server_free(srv);
        return WEIR_EINVAL;
    }
    int rc = 0;
    if (opts->client_auth != WEIR_TLS_AUTH_OFF) {
        rc = client_store_new(srv, opts, part, why);
    }
    if (rc == 0) {
        rc = build_contexts(srv, opts, why);
    }
    if (rc != 0) {
        weir__tls_server_free(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

void weir__tls_server_free(struct weir__tls_server *srv)
{
    if (srv == NULL || atomic_fetch_sub_explicit(&srv->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (size_t i = 0; i < srv->nctx; i++) {
        SSL_CTX_free(srv->ctx[i]);
    }
    for (size_t i = 0; i < srv->ncerts; i++) {
        weir__tls_cert_free(srv->certs[i]);
    }
    weir__tls_tickets_free(srv->tickets);
    X509_STORE_free(srv->client_store);
    sk_X509_NAME_pop_free(srv->client_names, X509_NAME_free);
    weir__free(srv->ctx);
    weir__free(srv->names);
    weir__free(srv->certs);
    weir__free(srv);
}

/* ---- client contexts ---- */

struct weir_tls_client {
    SSL_CTX *ctx;
};

static SSL_CTX *client_ctx_new(bool session_reuse, char why[WEIR_TLS_ERRMAX])
{
    (void)pthread_once(&warm_once, warm_fetch);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        weir__tls_why(why, "cannot make a TLS context");
        return NULL;
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    (void)SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    (void)SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One read() takes all the records the socket has, not a 5-byte header then the rest:
       half the reads per request and per handshake. Bytes OpenSSL holds keep the stream
       readable (nothing waits for an edge), as decrypted ones do. */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) {
        weir__tls_why(why, "cannot set the TLS settings");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (session_reuse) {
        weir__tls_sessions_enable(ctx);
    } else {
        (void)SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    return ctx;
}

/* Loads a CA bundle into ctx's store; a file with no certificate is an error. */
static int load_ca(SSL_CTX *ctx, const char *file, char why[WEIR_TLS_ERRMAX])
{
    return load_certs(SSL_CTX_get_cert_store(ctx), NULL, file, why);
}

int weir__tls_client_new(const struct weir__tls_client_opts *opts, struct weir_tls_client **out,
                         enum weir__tls_client_part *part, char why[WEIR_TLS_ERRMAX])
{
    struct weir_tls_client *cli = weir__calloc(1, sizeof(*cli));
    if (cli == NULL) {
        return WEIR_ENOMEM;
    }
    int rc = WEIR_EINVAL;
    *part = WEIR_TLS_CPART_CA;
    if ((cli->ctx = client_ctx_new(!opts->no_session_reuse, why)) == NULL) {
        goto fail;
    }
    if (opts->ca != NULL) {
        if ((rc = load_ca(cli->ctx, opts->ca, why)) != 0) {
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(cli->ctx) != 1) {
        weir__tls_why(why, "cannot use the system CA store");
        rc = WEIR_EINVAL;
        goto fail;
    }
    if (opts->client_cert != NULL) {
        struct weir__tls_cert *c = NULL;
        enum weir__tls_cert_part cp = WEIR_TLS_PART_CERT;
        rc = weir__tls_cert_load(opts->client_cert, opts->client_key, &c, &cp, why);
        if (rc != 0) {
            *part = cp == WEIR_TLS_PART_CERT ? WEIR_TLS_CPART_CERT : WEIR_TLS_CPART_KEY;
            goto fail;
        }
        int ok = SSL_CTX_use_cert_and_key(cli->ctx, c->leaf, c->key, c->chain, 1);
        weir__tls_cert_free(c);
        if (ok != 1) {
            *part = WEIR_TLS_CPART_CERT;
            weir__tls_why(why, "cannot use the client certificate");
            rc = WEIR_EINVAL;
            goto fail;
        }
    }
    *out = cli;
    return 0;
fail:
    weir__tls_client_free(cli);
    return rc;
}

void weir__tls_client_free(struct weir_tls_client *cli)
{
    if (cli != NULL) {
        SSL_CTX_free(cli->ctx);
        weir__free(cli);
    }
}

int weir_tls_client_new(const struct weir_tls_client_options *o, struct weir_tls_client **out,
                        char *err, size_t errlen)
{
    if (o == NULL || out == NULL || (o->client_cert == NULL) != (o->client_key == NULL)) {
        if (errlen > 0) {
            (void)snprintf(err, errlen, "client_cert and client_key go together");
        }
        return WEIR_EINVAL;
    }
    struct weir__tls_client_opts io = {
        .ca = o->ca,
        .client_cert = o->client_cert,
        .client_key = o->client_key,
        .no_session_reuse = o->no_session_reuse,
    };
    enum weir__tls_client_part part = WEIR_TLS_CPART_CA;
    char why[WEIR_TLS_ERRMAX];
    int rc = weir__tls_client_new(&io, out, &part, why);
    if (rc == WEIR_EINVAL && errlen > 0) {
        static const char *const parts[] = {"ca", "client_cert", "client_key"};
        (void)snprintf(err, errlen, "%s: %s", parts[part], why);
    }
    return rc;
}

void weir_tls_client_free(struct weir_tls_client *cli)
{
    weir__tls_client_free(cli);
}

static SSL_CTX *default_client;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_client_new(void)
{
    char why[WEIR_TLS_ERRMAX];
    SSL_CTX *ctx = client_ctx_new(true, why);
    if (ctx != NULL && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ERR_clear_error();
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    default_client = ctx; /* lives as long as the process */
}

const void *weir__tls_client_ctx(const struct weir_peer *peer)
{
    if (peer->tls_client != NULL) {
        return peer->tls_client->ctx;
    }
    (void)pthread_once(&default_once, default_client_new);
    return default_client;
}
