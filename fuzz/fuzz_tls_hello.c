/*
 * libFuzzer target for the downstream TLS accept path: the bytes a client sends first (its
 * ClientHello) fed to a listener's real server context (src/tls/tls_ctx.c), built from two
 * certificates made at start-up: one for a.test and b.test, one for *.wild.test. OpenSSL parses
 * the hello; weir's SNI callback picks the certificate and its ALPN callback the protocol.
 *
 * The first input byte chooses reject_unknown_sni. Oracle: whenever the server answered (it
 * produced a ServerHello, so both callbacks ran), the context chosen is the one a reference
 * matcher written apart from find_ctx expects for the SNI sent: exact names (any case), a
 * wildcard covering exactly one label, else the default; with reject_unknown_sni an unknown
 * or missing name never gets an answer.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fuzz_pki.h"
#include "tls/tls_int.h"

static struct weir__tls_server *servers[2]; /* [reject_unknown_sni] */

#define trap_if weir_fuzz_trap_if

/* A self-signed P-256 certificate for san, written to two temporary PEM files. */
static void make_cert(const char *san, char *cert_path, char *key_path)
{
    int cfd = mkstemp(cert_path);
    int kfd = mkstemp(key_path);
    trap_if(cfd < 0 || kfd < 0);
    weir_fuzz_write_cert(san, fdopen(cfd, "w"), fdopen(kfd, "w"));
}

static void setup(void)
{
    char c1[] = "/tmp/weir-fuzz-tls-XXXXXX", k1[] = "/tmp/weir-fuzz-tls-XXXXXX";
    char c2[] = "/tmp/weir-fuzz-tls-XXXXXX", k2[] = "/tmp/weir-fuzz-tls-XXXXXX";
    make_cert("DNS:a.test,DNS:b.test", c1, k1);
    make_cert("DNS:*.wild.test", c2, k2);
    for (int r = 0; r < 2; r++) {
        struct weir__tls_cert *certs[2];
        enum weir__tls_cert_part part;
        char why[WEIR_TLS_ERRMAX];
        trap_if(weir__tls_cert_load(c1, k1, &certs[0], &part, why) != 0);
        trap_if(weir__tls_cert_load(c2, k2, &certs[1], &part, why) != 0);
        struct weir__tls_server_opts o = {
            .min_version = WEIR_TLS_V12,
            .max_version = WEIR_TLS_V13,
            .session_tickets = true,
            .reject_unknown_sni = r == 1,
        };
        enum weir__tls_server_part sp;
        trap_if(weir__tls_server_new(certs, 2, &o, &servers[r], &sp, why) != 0);
    }
    unlink(c1);
    unlink(k1);
    unlink(c2);
    unlink(k2);
}

/* The reference: which certificate (0, 1) names sni, or -1 for none. */
static int expected(const char *sni)
{
    if (strcasecmp(sni, "a.test") == 0 || strcasecmp(sni, "b.test") == 0) {
        return 0;
    }
    size_t n = strlen(sni);
    const char *suffix = ".wild.test";
    size_t sl = strlen(suffix);
    if (n > sl && strcasecmp(sni + n - sl, suffix) == 0) {
        size_t label = n - sl;
        if (memchr(sni, '.', label) == NULL) {
            return 1;
        }
    }
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (servers[0] == NULL) {
        setup();
    }
    if (size < 1) {
        return 0;
    }
    struct weir__tls_server *srv = servers[data[0] & 1];
    SSL *ssl = SSL_new(srv->main);
    BIO *in = BIO_new_mem_buf(data + 1, (int)(size - 1));
    BIO *out = BIO_new(BIO_s_mem());
    trap_if(ssl == NULL || in == NULL || out == NULL);
    SSL_set_bio(ssl, in, out);
    SSL_set_accept_state(ssl);
    (void)SSL_do_handshake(ssl);
    if (BIO_ctrl_pending(out) > 0 && SSL_get_state(ssl) != TLS_ST_BEFORE) {
        const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        int want = sni != NULL ? expected(sni) : -1;
        SSL_CTX *got = SSL_get_SSL_CTX(ssl);
        char alert_only = 0;
        /* An answer that is only an alert (a refusal) is not a certificate choice. */
        BIO_read(out, &alert_only, 1);
        if (alert_only == 22) { /* a handshake record: the ServerHello went out */
            trap_if(srv->reject_unknown && want < 0);
            trap_if(want >= 0 && got != srv->ctx[want]);
            trap_if(want < 0 && got != srv->main);
        }
    }
    SSL_free(ssl);
    ERR_clear_error();
    return 0;
}
