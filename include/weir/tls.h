/* What a hook can know about a client's TLS connection (weir_session_tls). */
#ifndef WEIR_TLS_H
#define WEIR_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "weir/common.h"

WEIR_BEGIN_DECLS

/**
 * A TLS client connection's parameters and, with listeners[].tls.client_auth, its client
 * certificate. Every string is NUL-terminated, printable ASCII (bytes outside it in names
 * are escaped, as RFC 2253 and percent-encoding do), and "" when absent. It belongs to the
 * connection: valid until the request's logging hook returns.
 */
struct weir_tls_info {
    const char *protocol; /**< "TLSv1.3", "TLSv1.2" */
    const char *cipher;   /**< "TLS_AES_128_GCM_SHA256" */
    const char *sni;      /**< the server name the client sent */
    const char *alpn;     /**< the protocol agreed by ALPN ("http/1.1") */
    bool resumed;         /**< the session was resumed (a ticket) */
    /** The client presented a certificate (possible only with client_auth optional or
        required) */
    bool client_cert;
    /** ... and it verified against client_auth.ca (and crl). Only then are the identity
        fields below worth trusting. */
    bool client_verified;
    /** nginx's $ssl_client_verify: "SUCCESS", "FAILED:reason" or "NONE" */
    const char *verify;
    const char *subject;     /**< the subject DN, RFC 2253 ("CN=alice,O=Example") */
    const char *issuer;      /**< the issuer DN, RFC 2253 */
    const char *sans;        /**< subject alternative names: "DNS:a.example, IP:10.0.0.1, ..." */
    const char *serial;      /**< the serial number, upper-case hex */
    const char *fingerprint; /**< SHA-256 of the DER certificate, lower-case hex */
    const char *cert_pem;    /**< the certificate, PEM */
};

/** A CA store and client identity for TLS to upstreams (struct weir_peer's tls_client). */
struct weir_tls_client;

/** What weir_tls_client_new builds a context from. */
struct weir_tls_client_options {
    const char *ca;          /**< PEM CA bundle to verify origins with; NULL: the system store */
    const char *client_cert; /**< PEM certificate chain presented to origins (mTLS); NULL: none */
    const char *client_key;  /**< its PEM private key (with client_cert) */
    bool no_session_reuse;   /**< true: no resumption, every connection a full handshake */
};

/**
 * Builds a client context (TLS 1.2 and 1.3) from o for peers to use: set peer->tls_client in
 * upstream_peer, as the weir binary does for upstreams.NAME.tls and routes[].upstream_tls.
 * Peers with different contexts never share a pooled connection, nor a resumed session
 * (sessions are kept per context, address, SNI and verification). Reads files: call it at
 * start-up or from a control thread, never from a hook. Free it with weir_tls_client_free
 * once no peer will name it (after weir_server_free is simplest; connections still open keep
 * what they need). 0; WEIR_EINVAL with err saying which file and why (errlen bytes, may be
 * 0); or WEIR_ENOMEM.
 */
WEIR_EXTERN int weir_tls_client_new(const struct weir_tls_client_options *o,
                                    struct weir_tls_client **out, char *err, size_t errlen);

/** Frees a context from weir_tls_client_new. Accepts NULL. */
WEIR_EXTERN void weir_tls_client_free(struct weir_tls_client *cli);

WEIR_END_DECLS

#endif
