/* Private to src/tls/: the structures behind tls.h's opaque types. */
#ifndef WEIR_TLS_TLS_INT_H
#define WEIR_TLS_TLS_INT_H

#include <stdatomic.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/tls.h"

/* The largest PEM file (certificate chain, key, CA bundle) weir reads. */
#define WEIR_TLS_PEM_MAX (16 << 20)

/* Names kept per certificate (SAN DNS entries past this are ignored for SNI). */
#define WEIR_TLS_MAX_NAMES 256

struct weir__tls_cert {
    X509 *leaf;
    STACK_OF(X509) * chain; /* intermediates, leaf excluded */
    EVP_PKEY *key;
    int key_type;                    /* EVP_PKEY_RSA, EVP_PKEY_EC, ... */
    char *names[WEIR_TLS_MAX_NAMES]; /* lower case; "*.x" for a wildcard */
    size_t nnames;
    unsigned char *ocsp; /* the DER OCSP response stapled for it; NULL: none */
    size_t ocsp_len;
};

/* One SNI name and the context of its certificates. */
struct weir__tls_name {
    const char *name; /* exact, or ".suffix" for a "*.suffix" wildcard */
    bool wild;
    size_t ctx;
};

struct weir__tls_server {
    _Atomic uint32_t refs; /* the snapshot's, plus one per connection in its handshake */
    SSL_CTX *main;         /* the default certificate's: every connection starts on it */
    SSL_CTX **ctx;         /* one per set of names */
    size_t nctx;
    struct weir__tls_name *names;
    size_t nnames;
    bool reject_unknown;
    bool early_data;        /* 0-RTT accepted */
    unsigned char alpn[12]; /* ALPN protocols in preference order (wire format) */
    unsigned alpn_len;
    X509_STORE *client_store;           /* client_auth: CAs and CRLs; NULL: off */
    STACK_OF(X509_NAME) * client_names; /* the CA names sent to the client */
    struct weir__tls_tickets *tickets;  /* session ticket keys; NULL: none or OpenSSL's */
    struct weir__tls_cert **certs;
    size_t ncerts;
};

/* Upstream session reuse on client context ctx (which gets an id for the sessions' keys). */
void weir__tls_sessions_enable(SSL_CTX *ctx);
/* Before a client handshake: the session cached for peer's identity, if any, and the key
   under which the origin's new sessions will be kept. 0 or WEIR_ENOMEM. */
int weir__tls_sessions_attach(SSL *ssl, const struct weir_peer *peer);

/* Makes ctx's session tickets with t's keys. 0 or WEIR_EINVAL. */
int weir__tls_tickets_use(struct weir__tls_tickets *t, SSL_CTX *ctx);

/* why = "what: OpenSSL's reason for its last error" (the error queue is cleared). */
void weir__tls_why(char why[WEIR_TLS_ERRMAX], const char *what);

#endif
