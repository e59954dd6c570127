/*
 * A non-blocking socket with its read buffer and edge-triggered readiness caches: the common
 * part of a client connection and an upstream connection, so body pumping works the same in
 * both directions.
 */
#ifndef WEIR_NET_STREAM_H
#define WEIR_NET_STREAM_H

#include <sys/uio.h>

#include "core/buf.h"
#include "weir/buf.h"
#include "weir/loop.h"

struct ssl_st;
struct weir__tls_server;
struct weir__stream;
struct weir__outq;

/*
 * A stream whose bytes are not a socket's: an HTTP/2 stream seen by the session as a client
 * stream (src/http2/). read fills buf with what has arrived (0 when nothing has: it clears
 * st->readable, and st->eof says the message ended); flush takes what q's bytes fit (clearing
 * st->writable when full). Both return bytes or -errno, as the socket versions.
 */
struct weir__stream_vt {
    ssize_t (*read)(struct weir__stream *st, char *buf, size_t len);
    ssize_t (*flush)(struct weir__stream *st, struct weir__outq *q);
};

struct weir__stream {
    struct weir_io io;
    struct weir__buf in;
    bool readable; /* the last read did not hit EAGAIN (or an event said so since) */
    bool writable;
    bool eof;    /* the peer half-closed: no more bytes will arrive */
    bool rdhup;  /* an event said the peer shut its write side (EPOLLRDHUP: a FIN arrived) */
    bool hangup; /* an event said the connection is broken (EPOLLHUP or EPOLLERR: a reset) */
    /* TLS (src/tls/): reads and writes go through ssl when it is set */
    struct ssl_st *ssl;
    struct weir__tls_server *tls_srv; /* the listener context a server session holds */
    const char *tls_err;              /* OpenSSL's reason for the last failure (static) */
    bool tls_rwant_w;                 /* a read waits for the socket to be writable */
    bool tls_wwant_r;                 /* a write waits for the socket to be readable */
    bool tls_early;                   /* a server session still reading 0-RTT early data */
    /* Virtual streams (io.fd is -1): reads and writes go through vt when it is set */
    const struct weir__stream_vt *vt;
    /* A virtual stream's trailers as HTTP/1.1 lines ("name: value\r\n"), set before eof;
       the owner keeps the bytes until the stream is freed */
    struct weir_iov trailers;
};

/** Notes what an edge-triggered event says: readable (data, hang-up, error), writable. */
static inline void weir__stream_note_events(struct weir__stream *st, uint32_t events)
{
    if (events & (WEIR_IO_READ | WEIR_IO_RDHUP | WEIR_IO_HUP | WEIR_IO_ERROR)) {
        st->readable = true;
    }
    if (events & (WEIR_IO_WRITE | WEIR_IO_HUP | WEIR_IO_ERROR)) {
        st->writable = true;
    }
    if (events & WEIR_IO_RDHUP) {
        st->rdhup = true;
    }
    if (st->tls_rwant_w && (events & (WEIR_IO_WRITE | WEIR_IO_HUP | WEIR_IO_ERROR))) {
        st->tls_rwant_w = false;
        st->readable = true;
    }
    if (st->tls_wwant_r && (events & (WEIR_IO_READ | WEIR_IO_HUP | WEIR_IO_ERROR))) {
        st->tls_wwant_r = false;
        st->writable = true;
    }
    if (events & (WEIR_IO_HUP | WEIR_IO_ERROR)) {
        st->hangup = true;
    }
}

/** The most ranges one queue holds: head + chunk size line + data + CRLF. */
#define WEIR_OUTQ_MAX 4

/** Pending output: up to WEIR_OUTQ_MAX iovecs written in order. */
struct weir__outq {
    struct iovec v[WEIR_OUTQ_MAX];
    int n; /* iovecs in use */
    int i; /* first not fully written */
};

static inline bool weir__outq_empty(const struct weir__outq *q)
{
    return q->i >= q->n;
}

static inline void weir__outq_reset(struct weir__outq *q)
{
    q->n = q->i = 0;
}

/**
 * Appends a range (ignored when empty). The caller keeps it valid until written. Pushing more
 * than WEIR_OUTQ_MAX ranges is a bug and aborts: bytes are never dropped silently.
 */
void weir__outq_push(struct weir__outq *q, const void *base, size_t len);

/** Marks the first n bytes of q written. */
void weir__outq_consume(struct weir__outq *q, size_t n);

/** Bytes still to write. */
size_t weir__outq_len(const struct weir__outq *q);

/**
 * Reads as much as fits into st->in (acquiring a buffer from pool if st has none). Returns
 * bytes read (> 0), 0 when nothing could be read now (EAGAIN, buffer full, or EOF: check
 * st->eof), or -errno. Clears st->readable on EAGAIN.
 */
ssize_t weir__stream_read(struct weir__stream *st, struct weir__bufpool *pool);

/**
 * Writes q until drained or the socket would block. Returns bytes written (>= 0) or -errno.
 * Clears st->writable when blocked.
 */
ssize_t weir__stream_flush(struct weir__stream *st, struct weir__outq *q);

/**
 * Writes len bytes of buf (or what the socket takes now). Bytes written (>= 0) or -errno.
 */
ssize_t weir__stream_write(struct weir__stream *st, const void *buf, size_t len);

/**
 * Makes room to read more of a message head: compacts st->in and, when it is full and smaller
 * than max, moves its bytes to a heap buffer of max bytes (released by weir__buf_release like
 * any other). 0, WEIR_ELIMIT (full at max) or WEIR_ENOMEM.
 */
int weir__stream_grow_for_head(struct weir__stream *st, struct weir__bufpool *pool, uint32_t max);

#endif
