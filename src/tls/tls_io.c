/*
 * Per-connection TLS: starting a server or client session on a stream, driving a handshake,
 * and the read and flush that struct weir__stream does through OpenSSL when st->ssl is set.
 * Edge-triggered readiness is kept honest across TLS's crossed wants: a read that needs the
 * socket writable (or a write that needs it readable) is retried on that event
 * (weir__stream_note_events).
 */
#include "tls/tls_int.h"

#include <errno.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "net/stream.h"
#include "weir/error.h"
#include "weir/peer.h"
#include "net/sock.h"

/* Plaintext bytes gathered from small queued ranges into one record. */
#define COALESCE (16u << 10)

int weir__tls_accept(struct weir__tls_server *srv, struct weir__stream *st)
{
    SSL *ssl = SSL_new(srv->main);
    if (ssl == NULL) {
        ERR_clear_error();
        return WEIR_ENOMEM;
    }
    if (SSL_set_fd(ssl, st->io.fd) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        return WEIR_ENOMEM;
    }
    SSL_set_accept_state(ssl);
    atomic_fetch_add_explicit(&srv->refs, 1, memory_order_relaxed);
    st->ssl = ssl;
    st->tls_srv = srv;
    st->tls_early = srv->early_data;
    return 0;
}

/* What the certificate is checked against: verify_name, else the SNI, else the address. */
static int set_verify(SSL *ssl, const struct weir_peer *peer)
{
    if (peer->tls_no_verify) {
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    const char *name = peer->verify_name[0] ? peer->verify_name : peer->sni;
    if (name[0] != '\0') {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        return SSL_set1_host(ssl, name) == 1 ? 0 : WEIR_ENOMEM;
    }
    char ip[64];
    if (weir__addr_format_ip((const struct sockaddr *)&peer->addr, ip, sizeof(ip)) < 0) {
        return WEIR_ETLS;
    }
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    return X509_VERIFY_PARAM_set1_ip_asc(param, ip) == 1 ? 0 : WEIR_ETLS;
}

int weir__tls_connect(const struct weir_peer *peer, struct weir__stream *st)
{
    SSL_CTX *ctx = (SSL_CTX *)weir__tls_client_ctx(peer);
    if (ctx == NULL) {
        return WEIR_ETLS;
    }
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL) {
        ERR_clear_error();
        return WEIR_ENOMEM;
    }
    int rc = SSL_set_fd(ssl, st->io.fd) == 1 ? 0 : WEIR_ENOMEM;
    if (rc == 0 && peer->sni[0] != '\0' && SSL_set_tlsext_host_name(ssl, peer->sni) != 1) {
        rc = WEIR_ENOMEM;
    }
    if (rc == 0) {
        rc = set_verify(ssl, peer);
    }
    if (rc == 0 && (peer->protocol == WEIR_PEER_H2 || peer->protocol == WEIR_PEER_AUTO)) {
        /* HTTP/2 to the origin: h2 alone, or h2 first and http/1.1 (auto). 0 is success. */
        static const unsigned char h2[] = "\x02h2", both[] = "\x02h2\x08http/1.1";
        bool only = peer->protocol == WEIR_PEER_H2;
        rc = SSL_set_alpn_protos(ssl, only ? h2 : both, only ? 3 : 12) == 0 ? 0 : WEIR_ENOMEM;
    }
    if (rc == 0) {
        rc = weir__tls_sessions_attach(ssl, peer);
    }
    if (rc != 0) {
        ERR_clear_error();
        SSL_free(ssl);
        return rc;
    }
    SSL_set_connect_state(ssl);
    st->ssl = ssl;
    return 0;
}

int weir__tls_handshake(struct weir__stream *st, char why[WEIR_TLS_ERRMAX])
{
    ERR_clear_error();
    int rc = SSL_do_handshake(st->ssl);
    if (rc == 1) {
        return 0;
    }
    switch (SSL_get_error(st->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        st->readable = false;
        return WEIR_EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        st->writable = false;
        return WEIR_EAGAIN;
    default:
        break;
    }
    long v = SSL_get_verify_result(st->ssl);
    if (v != X509_V_OK) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "certificate verify failed: %s",
                       X509_verify_cert_error_string(v));
        ERR_clear_error();
    } else if (ERR_peek_last_error() != 0) {
        weir__tls_why(why, "handshake failed");
    } else {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "handshake failed: %s",
                       errno != 0 ? strerror(errno) : "the peer closed the connection");
    }
    return WEIR_ETLS;
}

/* What an SSL_ERROR_SSL says: st->tls_err keeps OpenSSL's static reason for the log. */
static ssize_t ssl_failed(struct weir__stream *st)
{
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        st->eof = true;
        st->readable = false;
        return 0;
    }
    const char *r = ERR_reason_error_string(e);
    long v = st->tls_srv != NULL ? SSL_get_verify_result(st->ssl) : X509_V_OK;
    if (v != X509_V_OK) {
        r = X509_verify_cert_error_string(v); /* a client certificate refused: say why */
    }
    st->tls_err = r != NULL ? r : "TLS protocol error";
    ERR_clear_error();
    return -EPROTO;
}

/* What a failed read (ret: what OpenSSL returned) means: 0 to wait or at the end, < 0. */
static ssize_t read_failed(struct weir__stream *st, int ret)
{
    switch (SSL_get_error(st->ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        st->readable = false;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        st->readable = false;
        st->writable = false;
        st->tls_rwant_w = true;
        return 0;
    case SSL_ERROR_ZERO_RETURN: /* close_notify */
        st->eof = true;
        st->readable = false;
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || errno == EAGAIN) {
            st->eof = true; /* closed without close_notify */
            st->readable = false;
            return 0;
        }
        ERR_clear_error();
        return -errno;
    default:
        return ssl_failed(st);
    }
}

/*
 * With early data on, the first reads go through SSL_read_early_data (OpenSSL rejects early
 * data once SSL_read has run): 0-RTT bytes as they come, then FINISH, then normal reads.
 * Returns > 0 bytes, 0 to wait (readable cleared), < 0 an error; *done when it is over.
 */
static ssize_t read_early(struct weir__stream *st, char *buf, size_t len, bool *done)
{
    size_t got = 0;
    ERR_clear_error();
    switch (SSL_read_early_data(st->ssl, buf, len, &got)) {
    case SSL_READ_EARLY_DATA_SUCCESS:
        *done = false;
        return (ssize_t)got;
    case SSL_READ_EARLY_DATA_FINISH:
        st->tls_early = false;
        *done = got == 0;
        return (ssize_t)got;
    default:
        break;
    }
    *done = false;
    return read_failed(st, 0);
}

ssize_t weir__tls_read(struct weir__stream *st, char *buf, size_t len)
{
    if (st->tls_early) {
        bool done = false;
        ssize_t n = read_early(st, buf, len, &done);
        if (!done) {
            return n;
        }
    }
    ERR_clear_error();
    size_t got = 0;
    int ok = SSL_read_ex(st->ssl, buf, len, &got);
    if (ok == 1) {
        return (ssize_t)got;
    }
    return read_failed(st, ok);
}

/*
 * The bytes to hand SSL_write next: a large first range as it is, else the first COALESCE
 * bytes of the queue copied into tmp. A retry after a blocked write sees the same queue (it only
 * grows at its end), so it hands OpenSSL the same bytes again, as it requires.
 */
static const char *next_bytes(const struct weir__outq *q, char *tmp, size_t *len)
{
    if (q->v[q->i].iov_len >= COALESCE || q->i + 1 == q->n) {
        *len = q->v[q->i].iov_len;
        return q->v[q->i].iov_base;
    }
    size_t n = 0;
    for (int i = q->i; i < q->n && n < COALESCE; i++) {
        size_t take = q->v[i].iov_len < COALESCE - n ? q->v[i].iov_len : COALESCE - n;
        memcpy(tmp + n, q->v[i].iov_base, take);
        n += take;
    }
    *len = n;
    return tmp;
}

ssize_t weir__tls_flush(struct weir__stream *st, struct weir__outq *q)
{
    char tmp[COALESCE];
    size_t total = 0;
    while (q->i < q->n) {
        size_t len;
        const char *p = next_bytes(q, tmp, &len);
        size_t wrote = 0;
        ERR_clear_error();
        /* While 0-RTT data is still being read, a server answers with 0.5-RTT data
           (SSL_write would refuse to run). */
        int ok = st->tls_early ? SSL_write_early_data(st->ssl, p, len, &wrote)
                               : SSL_write_ex(st->ssl, p, len, &wrote);
        if (ok == 1) {
            total += wrote;
            weir__outq_consume(q, wrote);
            continue;
        }
        switch (SSL_get_error(st->ssl, ok)) {
        case SSL_ERROR_WANT_WRITE:
            st->writable = false;
            return (ssize_t)total;
        case SSL_ERROR_WANT_READ:
            st->writable = false;
            st->tls_wwant_r = true;
            return (ssize_t)total;
        case SSL_ERROR_SYSCALL:
            ERR_clear_error();
            return errno != 0 ? -errno : -EPIPE;
        default: {
            ssize_t rc = ssl_failed(st);
            return rc < 0 ? rc : -EPIPE;
        }
        }
    }
    weir__outq_reset(q);
    return (ssize_t)total;
}

bool weir__tls_shutdown(struct weir__stream *st)
{
    if (st->ssl == NULL || !SSL_is_init_finished(st->ssl)) {
        return true;
    }
    ERR_clear_error();
    int rc = SSL_shutdown(st->ssl);
    ERR_clear_error();
    return rc >= 0;
}

void weir__tls_free(struct weir__stream *st)
{
    if (st->ssl != NULL) {
        if (st->tls_srv == NULL && SSL_is_init_finished(st->ssl)) {
            /* An upstream connection we close (idle, done, or after an error that sent no
               fatal alert): its session stays resumable, which SSL_free would otherwise undo
               for a connection closed without close_notify. A fatal alert has already
               invalidated it. */
            SSL_set_shutdown(st->ssl, SSL_SENT_SHUTDOWN);
        }
        SSL_free(st->ssl);
        st->ssl = NULL;
    }
    if (st->tls_srv != NULL) {
        weir__tls_server_free(st->tls_srv);
        st->tls_srv = NULL;
    }
}

const char *weir__tls_protocol(const struct weir__stream *st)
{
    return st->ssl != NULL ? SSL_get_version(st->ssl) : "";
}

bool weir__tls_early(const struct weir__stream *st)
{
    return st->ssl != NULL && st->tls_srv != NULL && st->tls_srv->early_data &&
           SSL_get_early_data_status(st->ssl) == SSL_EARLY_DATA_ACCEPTED &&
           !SSL_is_init_finished(st->ssl);
}

bool weir__tls_alpn_h2(const struct weir__stream *st)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    if (st->ssl == NULL) {
        return false;
    }
    SSL_get0_alpn_selected(st->ssl, &p, &n);
    return n == 2 && p[0] == 'h' && p[1] == '2';
}

const char *weir__tls_sni(const struct weir__stream *st)
{
    return st->ssl != NULL ? SSL_get_servername(st->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}
