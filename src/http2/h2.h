/*
 * HTTP/2 through nghttp2, kept behind this header so nothing else includes nghttp2. The
 * server side: one struct weir__h2_conn per client connection speaking h2, reading and
 * writing through the connection's struct weir__stream (TLS or not), and one struct
 * weir__h2s per request stream. A stream is seen by the layer above (a proxy session) as a
 * virtual struct weir__stream (vst): its reads give the request body as it arrives, its
 * flushes take the response body, both through bounded per-stream buffers tied to HTTP/2
 * flow control (a window update is sent only as the session drains what arrived; the session
 * can write only as fast as the client's window lets the buffer empty).
 *
 * Nothing above is called from inside nghttp2's callbacks: they mark streams ready, and the
 * server hands the ready streams to its owner (struct weir__h2_ops) after nghttp2 has
 * returned, so an owner may submit, write or end streams freely.
 */
#ifndef WEIR_HTTP2_H2_H
#define WEIR_HTTP2_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"
#include "net/stream.h"
#include "weir/http.h"

/** The client connection preface (RFC 9113 3.4), which h2c with prior knowledge starts with. */
#define WEIR_H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define WEIR_H2_PREFACE_LEN 24

/** Per-connection bounds (server.http2 and the HTTP/1.1 head limits). */
struct weir__h2_limits {
    uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS */
    uint32_t initial_window;         /* a stream's receive window = its receive buffer */
    uint32_t max_frame_size;         /* SETTINGS_MAX_FRAME_SIZE we accept */
    uint32_t max_header_bytes;       /* a decoded head: names + values + 32 per field */
    uint32_t max_headers;            /* fields per head */
    uint32_t max_requests;           /* streams per connection, then GOAWAY; 0: no cap */
    uint32_t send_buffer;            /* response bytes a stream holds for the client */
    uint32_t reset_burst;            /* client stream resets allowed at once ... */
    uint32_t reset_rate;             /* ... and per second after that, then GOAWAY */
    uint32_t control_burst;          /* frames that carry no request or data ... */
    uint32_t control_rate;           /* ... allowed at once and per second, then GOAWAY */
    bool extended_connect;           /* server: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441) */
};

struct weir__h2_conn;

/** A decoded request field (offsets into the stream's head bytes). */
struct weir__h2_field {
    uint32_t name, name_len, value, value_len;
};

/** One stream of a server connection. */
struct weir__h2s {
    struct weir__stream vst; /* the session's client stream (vst.vt set, vst.io.fd -1) */
    uint32_t magic;
    struct weir__h2_conn *hc;   /* NULL once the connection is gone */
    struct weir__bufpool *pool; /* the worker's: sb comes from it and goes back to it */
    int32_t id;
    void *owner;                   /* the layer above's, between on_request and weir__h2s_done */
    struct weir__h2s *prev, *next; /* hc's streams */
    struct weir__h2s *rnext;       /* hc's ready list */
    bool queued;                   /* on the ready list */
    bool started;                  /* handed to on_request */
    /* the request head as decoded */
    char *hb;
    uint32_t hlen, hcap;
    struct weir__h2_field *fields;
    uint32_t nfields, fcap;
    struct weir_iov method, path, authority, scheme, protocol; /* valid after on_request */
    int32_t pm, pp, pa, ps, pr;                                /* their offsets; -1: absent */
    uint32_t lm, lp, la, ls, lr;
    uint32_t decoded; /* RFC 7541 size of the fields so far */
    int reject;       /* a status to answer instead of running the request (431, 400) */
    bool head_done;   /* the request head is complete */
    bool end_in;      /* the client's END_STREAM arrived */
    bool trailers_in; /* the client sent trailers (dropped) */
    /* the request body as it arrives (at most initial_window bytes: the window) */
    struct weir__buf rbuf;
    /* the response body towards the client (a buffer of the worker's pool) */
    char *sb;
    uint32_t scap, soff, slen;
    bool sb_pooled;      /* sb is a buffer of pool's (not a refusal's own) */
    bool submitted;      /* the response head went to nghttp2 */
    bool has_body;       /* ... with a data source */
    bool out_eof;        /* the owner is done: END_STREAM once sb is sent */
    bool closed;         /* nghttp2 closed the stream */
    bool done;           /* the owner let go (weir__h2s_done) */
    bool refused;        /* client: the peer refused the stream (REFUSED_STREAM, above a GOAWAY's
                            last stream): nothing of it was processed, it may go elsewhere */
    uint32_t close_code; /* the RST_STREAM or GOAWAY code the stream closed with */
    int status;          /* client: the response's :status */
    /* trailers that arrived, as HTTP/1.1 lines ("name: value\r\n"); vst.trailers shows them */
    char *tb;
    uint32_t tlen, tcap;
    bool trailers_bad; /* a trailer field was invalid: none are passed on */
    bool discarding;   /* server: answered before the request ended; its DATA is dropped */
    uint32_t discarded;
    /* trailers to send after the body (nghttp2_nv array and its bytes, one allocation) */
    void *tnv;
    size_t ntnv;
};

/** What the server asks of its owner, always outside nghttp2's callbacks. */
struct weir__h2_ops {
    /**
     * A request head is complete (hs->reject set: it must be refused with that status). The
     * owner takes hs (hs->owner) and later calls weir__h2s_done, or answers and lets go at
     * once. 0, or an error (the stream is reset).
     */
    int (*request)(void *data, struct weir__h2s *hs);
    /** Something changed for an owned stream: body bytes, room to write, a reset. */
    void (*event)(void *data, struct weir__h2s *hs);
    /**
     * A deferred round of I/O (run at the end of a loop turn, after a session wrote) found
     * the connection over: rc as weir__h2_conn_io's. The owner closes it.
     */
    void (*over)(void *data, int rc);
};

/**
 * A client session on tr (connected, TLS done): requests go out as streams opened with
 * weir__h2_request. NULL when out of memory.
 */
struct weir__h2_conn *weir__h2_client_new(struct weir_loop *loop, struct weir__stream *tr,
                                          struct weir__bufpool *pool,
                                          const struct weir__h2_limits *lim,
                                          const struct weir__h2_ops *ops, void *data);
/** Whether another stream may be opened now (no GOAWAY, under the peer's stream limit). */
bool weir__h2_conn_can_open(const struct weir__h2_conn *hc);
/**
 * Client: the streams the peer served on this connection before a graceful GOAWAY that
 * refused some of ours (a per-connection request cap such as nginx's keepalive_requests), or
 * 0 when no GOAWAY said so.
 */
uint32_t weir__h2_conn_capped_at(const struct weir__h2_conn *hc);
/** Client: opens at most cap streams on this connection in all (0: no cap). */
void weir__h2_conn_set_stream_cap(struct weir__h2_conn *hc, uint32_t cap);
/** The peer's SETTINGS_MAX_CONCURRENT_STREAMS (100 until it says). */
uint32_t weir__h2_conn_max_streams(const struct weir__h2_conn *hc);
/** Sends a PING; its answer comes back as weir__h2_conn_pinged turning true. */
int weir__h2_conn_ping(struct weir__h2_conn *hc);
/** Whether the last PING was answered (true before any). */
bool weir__h2_conn_pinged(const struct weir__h2_conn *hc);
/**
 * Opens a request stream for owner: the pseudo-header fields and h's fields (names
 * lowercased; connection-specific fields and Host left out; te_trailers adds "te: trailers"). body:
 * a body follows through hs->vst flushes, ended by weir__h2s_end_body. NULL with *err set.
 */
struct weir__h2s *weir__h2_request(struct weir__h2_conn *hc, void *owner, struct weir_iov method,
                                   struct weir_iov scheme, struct weir_iov authority,
                                   struct weir_iov path, const struct weir_headers *h,
                                   bool te_trailers, bool body, int *err);
/** The request body is complete: END_STREAM after what hs->vst holds (and the trailers). */
void weir__h2s_end_body(struct weir__h2s *hs);
/**
 * Trailers to send after the body, from HTTP/1.1 lines ("name: value\r\n"...; names
 * lowercased, fields that may not be trailers dropped). 0 or WEIR_ENOMEM.
 */
int weir__h2s_trailers(struct weir__h2s *hs, struct weir_iov lines);

/**
 * A server session on tr (whose connection preface may already be in tr->in). NULL when out
 * of memory. The loop runs the server's deferred flushes.
 */
struct weir__h2_conn *weir__h2_server_new(struct weir_loop *loop, struct weir__stream *tr,
                                          struct weir__bufpool *pool,
                                          const struct weir__h2_limits *lim,
                                          const struct weir__h2_ops *ops, void *data);
/**
 * Frees the server. Streams still owned are marked hung up and detached, and returned as a
 * list linked through next: the caller tells each owner, which still calls weir__h2s_done
 * (that frees it).
 */
struct weir__h2s *weir__h2_conn_free(struct weir__h2_conn *hc);

/**
 * Reads what tr has, processes it, hands ready streams to the owner and writes what there is
 * to write. 0 while the connection goes on; 1 when it is over (closed by the client, GOAWAY
 * exchanged with nothing left, or a protocol error already answered); or -errno.
 */
int weir__h2_conn_io(struct weir__h2_conn *hc);

/** Streams the owner holds (between on_request and weir__h2s_done). */
uint32_t weir__h2_conn_owned(const struct weir__h2_conn *hc);
/** Graceful shutdown: GOAWAY with the last stream processed; streams in progress finish. */
void weir__h2_conn_shutdown(struct weir__h2_conn *hc);

/**
 * Sends a response head: status and fields (names lowercased, connection-specific fields
 * dropped). body: a body follows through hs->vst flushes, ended by weir__h2s_done. 0 or an
 * error.
 */
int weir__h2s_respond(struct weir__h2s *hs, int status, const struct weir_headers *h, bool body);
/** An interim 100 (Continue). */
int weir__h2s_continue(struct weir__h2s *hs);
/**
 * The owner lets go. complete: the response was sent whole (END_STREAM after the buffered
 * bytes); else the stream is reset. hs may be freed at once.
 */
void weir__h2s_done(struct weir__h2s *hs, bool complete);

/** The bytes of field i of hs's head. */
static inline struct weir_iov weir__h2s_name(const struct weir__h2s *hs, uint32_t i)
{
    return (struct weir_iov){hs->hb + hs->fields[i].name, hs->fields[i].name_len};
}

static inline struct weir_iov weir__h2s_value(const struct weir__h2s *hs, uint32_t i)
{
    return (struct weir_iov){hs->hb + hs->fields[i].value, hs->fields[i].value_len};
}

#endif
