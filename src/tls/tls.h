/*
 * TLS for weir (OpenSSL 3), kept behind this header so nothing else includes OpenSSL: the
 * contexts a config snapshot owns (a listener's server context with its certificates, an
 * upstream group's client context), and the per-connection TLS that a struct weir__stream
 * reads and writes through when st->ssl is set.
 *
 * Contexts are built on the loading thread, never on a worker, and are reference counted by
 * OpenSSL: a connection holds its context for as long as it lives, so a snapshot can be freed
 * (a reload) while connections made under it go on.
 */
#ifndef WEIR_TLS_TLS_H
#define WEIR_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct weir__stream;
struct weir__outq;
struct weir_peer;
struct weir_tls_client;

/* A reason for an error message: what failed and OpenSSL's words for it. */
#define WEIR_TLS_ERRMAX 256

/** Protocol versions (TLS 1.2 and 1.3 only: 1.0 and 1.1 are refused by the config). */
enum weir__tls_version {
    WEIR_TLS_V12 = 0,
    WEIR_TLS_V13,
};

/* ---- certificates (a listener's certificates[] entries) ---- */

/** A certificate chain with its key, loaded and checked, and the names it is valid for. */
struct weir__tls_cert;

/** Which part of a certificate entry an error is about (so the config points at its key). */
enum weir__tls_cert_part {
    WEIR_TLS_PART_CERT = 0,
    WEIR_TLS_PART_KEY,
    WEIR_TLS_PART_OCSP, /* the certificate's ocsp_response */
};

/**
 * Reads a PEM chain (leaf first) and its PEM private key, and checks them: the files can be
 * read and parsed, the key matches the leaf, the leaf is within its validity. On failure
 * *part says which file the error is about and why holds the reason. Blocks on file I/O.
 * 0, WEIR_EINVAL (why and part set), WEIR_ENOMEM.
 */
int weir__tls_cert_load(const char *cert_file, const char *key_file, struct weir__tls_cert **out,
                        enum weir__tls_cert_part *part, char why[WEIR_TLS_ERRMAX]);
void weir__tls_cert_free(struct weir__tls_cert *c);

/**
 * Reads a DER OCSP response to staple for c and checks it: it parses, its status is
 * successful, it answers for c's serial number with "good", and it has not expired. Blocks on
 * file I/O. 0, WEIR_EINVAL (why set), WEIR_ENOMEM.
 */
int weir__tls_cert_ocsp(struct weir__tls_cert *c, const char *file, char why[WEIR_TLS_ERRMAX]);

/* ---- server contexts (listeners[].tls) ---- */

/** A listener's session ticket keys: generated and rotated by the clock, or from files. */
struct weir__tls_tickets;

/**
 * Ticket keys from files (nginx's ssl_session_ticket_key format, 80 or 48 bytes; the first
 * makes tickets, the others are accepted), or with nfiles 0 generated keys that change every
 * period_s seconds (a ticket is accepted for one to two periods). Blocks on file I/O. 0,
 * WEIR_EINVAL (*bad_file is the index of the file and why says what is wrong with it),
 * WEIR_ENOMEM.
 */
int weir__tls_tickets_new(const char *const *files, size_t nfiles, uint32_t period_s,
                          struct weir__tls_tickets **out, size_t *bad_file,
                          char why[WEIR_TLS_ERRMAX]);
void weir__tls_tickets_free(struct weir__tls_tickets *t);

/** listeners[].tls.client_auth.mode, as the config's enum weir_cfg_client_auth_mode. */
enum weir__tls_auth {
    WEIR_TLS_AUTH_OFF = 0,
    WEIR_TLS_AUTH_OPTIONAL,
    WEIR_TLS_AUTH_REQUIRED,
};

struct weir__tls_server_opts {
    enum weir__tls_version min_version, max_version;
    const char *ciphers;      /* TLS 1.2 cipher list; NULL: Mozilla intermediate */
    const char *ciphersuites; /* TLS 1.3; NULL: OpenSSL's (AES-GCM and ChaCha20) */
    const char *curves;       /* groups; NULL: X25519:P-256:P-384 */
    bool session_tickets;     /* stateless resumption */
    uint32_t session_timeout; /* seconds a session may be resumed (and the key period) */
    /* session_tickets: the keys (ownership moves to the server, even on failure); NULL:
       OpenSSL's own, per context, never rotated (for tests) */
    struct weir__tls_tickets *tickets;
    bool reject_unknown_sni;    /* a client naming no configured certificate is refused */
    bool early_data;            /* accept TLS 1.3 0-RTT data (RFC 8470 rules are the caller's) */
    bool prefer_server_ciphers; /* our cipher order over the client's (ChaCha20 first kept) */
    bool alpn_h2;               /* ALPN offers h2 (preferred) */
    bool alpn_http11;           /* ALPN offers http/1.1 */
    size_t default_cert;        /* index of the certificate for no or an unknown SNI */
    enum weir__tls_auth client_auth;
    const char *client_ca;  /* client_auth: PEM bundle the client's certificate must chain to */
    const char *client_crl; /* PEM revocation lists; NULL: none */
    unsigned verify_depth;  /* intermediate CAs allowed (SSL_CTX_set_verify_depth) */
};

/** Which file a server context failed on, for the config to point at the key naming it. */
enum weir__tls_server_part {
    WEIR_TLS_SPART_TLS = 0, /* the settings, or no file in particular */
    WEIR_TLS_SPART_CA,
    WEIR_TLS_SPART_CRL,
};

/** A listener's TLS: every certificate, chosen per handshake by SNI. */
struct weir__tls_server;

/**
 * Builds a server context from certs (ownership of each moves to it, even on failure) and
 * opts, reading the client CA and CRL files. Certificates whose names are the same (an RSA
 * and an ECDSA one) share a context so OpenSSL picks the one the client supports. Blocks on
 * file I/O. 0, WEIR_EINVAL (part and why set), WEIR_ENOMEM.
 */
int weir__tls_server_new(struct weir__tls_cert **certs, size_t ncerts,
                         const struct weir__tls_server_opts *opts, struct weir__tls_server **out,
                         enum weir__tls_server_part *part, char why[WEIR_TLS_ERRMAX]);
void weir__tls_server_free(struct weir__tls_server *srv);

/**
 * Checks a cipher list, TLS 1.3 suite list or group list as OpenSSL would take it
 * (kind: "ciphers", "ciphersuites", "curves"). true when usable; else why says what is wrong.
 */
bool weir__tls_check_list(const char *kind, const char *list, char why[WEIR_TLS_ERRMAX]);

/**
 * Starts server-side TLS on st (an accepted socket that sent a handshake record). The
 * handshake runs inside the first weir__stream_read. 0 or WEIR_ENOMEM.
 */
int weir__tls_accept(struct weir__tls_server *srv, struct weir__stream *st);

/* ---- client contexts (upstreams.NAME.tls, struct weir_peer) ---- */

struct weir__tls_client_opts {
    const char *ca;          /* PEM bundle; NULL: the system store */
    const char *client_cert; /* NULL: no client certificate */
    const char *client_key;
    bool no_session_reuse; /* true: every connection a full handshake */
};

/** What a client context failed on, for the config to point at the key that names it. */
enum weir__tls_client_part {
    WEIR_TLS_CPART_CA = 0,
    WEIR_TLS_CPART_CERT,
    WEIR_TLS_CPART_KEY,
};

/**
 * Builds a client context (TLS 1.2 and 1.3, ALPN http/1.1). Blocks on file I/O. 0,
 * WEIR_EINVAL (part and why set), WEIR_ENOMEM.
 */
int weir__tls_client_new(const struct weir__tls_client_opts *opts, struct weir_tls_client **out,
                         enum weir__tls_client_part *part, char why[WEIR_TLS_ERRMAX]);
void weir__tls_client_free(struct weir_tls_client *cli);

/** Frees the upstream sessions kept for resumption (at exit, for leak checkers). */
void weir__tls_sessions_clear(void);

/**
 * The OpenSSL context a connection to peer uses (peer->tls_client's, else the process's
 * default with the system store, made on first use): part of the pool key. NULL when the
 * default cannot be made.
 */
const void *weir__tls_client_ctx(const struct weir_peer *peer);

/**
 * Starts client-side TLS on st (connected) to peer: SNI, and the name (or IP) verified unless
 * peer->tls_no_verify. The handshake is driven by weir__tls_handshake. 0, WEIR_ENOMEM, or
 * WEIR_ETLS (no context).
 */
int weir__tls_connect(const struct weir_peer *peer, struct weir__stream *st);

/**
 * Drives st's client handshake. 0 when done, WEIR_EAGAIN while it waits for the socket (st's
 * readable or writable cleared), or WEIR_ETLS with why set (the verification result when the
 * certificate was refused, else OpenSSL's reason).
 */
int weir__tls_handshake(struct weir__stream *st, char why[WEIR_TLS_ERRMAX]);

/* ---- per-connection I/O (net/stream.c calls these when st->ssl is set) ---- */

/** As weir__stream_read, into buf (len > 0). */
ssize_t weir__tls_read(struct weir__stream *st, char *buf, size_t len);
/** As weir__stream_flush. */
ssize_t weir__tls_flush(struct weir__stream *st, struct weir__outq *q);
/**
 * Sends close_notify (best effort, never blocks). Returns true when it was written whole, so
 * the caller may shut the socket's write side.
 */
bool weir__tls_shutdown(struct weir__stream *st);
/** Frees st's TLS state (st->ssl becomes NULL). */
void weir__tls_free(struct weir__stream *st);

/** The protocol name of st's connection ("TLSv1.3"), or "". */
const char *weir__tls_protocol(const struct weir__stream *st);
/**
 * Whether what st's client sent so far may have come as 0-RTT early data: early data was
 * accepted and the handshake has not finished (so the client has not yet proved it is not
 * replaying a recording). Once the handshake finishes, every byte is known to be fresh.
 */
bool weir__tls_early(const struct weir__stream *st);

/** Whether ALPN chose h2 on st's connection. */
bool weir__tls_alpn_h2(const struct weir__stream *st);

/** The SNI the client sent on st, or NULL. */
const char *weir__tls_sni(const struct weir__stream *st);

struct weir_tls_info;

/**
 * st's TLS parameters and client certificate (include/weir/tls.h), in one allocation to
 * free with weir__free. NULL on out of memory.
 */
struct weir_tls_info *weir__tls_info_new(const struct weir__stream *st);

#endif
