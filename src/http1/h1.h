/*
 * The strict HTTP/1.1 codec (RFC 9112): request and response head parsers, the chunked
 * transfer-coding decoder and encoder helpers. Pure functions over caller buffers: no I/O, no
 * allocation, so they are easy to test and fuzz.
 */
#ifndef WEIR_HTTP1_H1_H
#define WEIR_HTTP1_H1_H

#include <sys/types.h>

#include "weir/http.h"
#include "weir/error.h"

/** Bounds a head parser enforces. */
struct weir__h1_limits {
    uint32_t max_line;    /* request line (or status line) bytes without CRLF: else 414 */
    uint32_t max_head;    /* whole head bytes including the final CRLF: else 431 */
    uint32_t max_headers; /* header fields: else 431 */
};

/** How a message's body is delimited. */
enum weir__h1_body {
    WEIR_H1_BODY_NONE = 0, /* no body (or Content-Length: 0) */
    WEIR_H1_BODY_LENGTH,   /* content_length bytes */
    WEIR_H1_BODY_CHUNKED,  /* chunked transfer coding */
    WEIR_H1_BODY_CLOSE,    /* until the connection closes (responses only) */
};

/** A parsed request head. Every iov points into the buffer given to the parser. */
struct weir__h1_request {
    struct weir_iov method;
    struct weir_iov target;
    int minor;                   /* 0 or 1 */
    struct weir_header *headers; /* caller's array */
    size_t nheaders;
    enum weir__h1_body body;
    uint64_t content_length; /* valid when body == LENGTH */
    bool keep_alive;         /* version default adjusted by Connection close/keep-alive */
    bool expect_continue;    /* Expect: 100-continue */
    bool upgrade;            /* Connection: upgrade with an Upgrade header */
    struct weir_iov host;    /* the Host value; empty when absent (HTTP/1.0 only) */
};

/** A parsed response head. Every iov points into the buffer given to the parser. */
struct weir__h1_response {
    int minor;
    int status;
    struct weir_iov reason;
    struct weir_header *headers;
    size_t nheaders;
    enum weir__h1_body body;
    uint64_t content_length;
    bool keep_alive;
};

/**
 * Incremental scan state: lets repeated calls on a growing buffer find the end of the head in
 * linear total time. Zero it before the first call for a message.
 */
struct weir__h1_scan {
    size_t scanned;
};

/**
 * Parses a request head from buf[0..len). The head is parsed only once it is complete (the
 * blank line is present), so a head is never half-parsed.
 *
 * Returns the head's length in bytes (> 0) when complete, filling *out and hdrs (hdr_cap
 * slots; lim->max_headers bounds the count). Returns WEIR_EAGAIN when more bytes are needed,
 * or an error: WEIR_EH1_BAD (400), WEIR_EH1_URI_TOO_LONG (414), WEIR_EH1_HDR_TOO_LARGE (431),
 * WEIR_EH1_NOT_IMPL (501), WEIR_EH1_VERSION (505).
 *
 * Rejected as WEIR_EH1_BAD: bare CR or LF line endings, obs-fold, whitespace before a colon,
 * invalid bytes in names, values, method or target, both Content-Length and Transfer-Encoding,
 * differing or malformed Content-Length values, Transfer-Encoding without chunked last or
 * chunked twice, a missing Host in HTTP/1.1 and more than one Host. Transfer-Encoding naming
 * an unknown coding is WEIR_EH1_NOT_IMPL.
 */
ssize_t weir__h1_parse_request(const char *buf, size_t len, struct weir__h1_scan *scan,
                               const struct weir__h1_limits *lim, struct weir_header *hdrs,
                               size_t hdr_cap, struct weir__h1_request *out);

/**
 * Parses a response head; same contract as weir__h1_parse_request. The body kind depends on
 * the request: method_head makes every response bodiless, as do 1xx, 204 and 304. Errors are
 * WEIR_EH1_BAD or WEIR_EH1_HDR_TOO_LARGE (the proxy answers 502 for either).
 */
ssize_t weir__h1_parse_response(const char *buf, size_t len, struct weir__h1_scan *scan,
                                const struct weir__h1_limits *lim, bool method_head,
                                struct weir_header *hdrs, size_t hdr_cap,
                                struct weir__h1_response *out);

/** HTTP status to answer for a parser error code (400, 413, 414, 431, 501, 505), else 400. */
int weir__h1_error_status(int code);

/** Chunked decoder state; zero it (or call weir__h1_chunked_init) per message. */
struct weir__h1_chunked {
    int state;
    uint64_t remaining;   /* data bytes left in the current chunk */
    uint32_t max_line;    /* bound on a chunk-size line with extensions */
    uint32_t max_trailer; /* bound on the trailer section */
};

/** What one decode step produced. */
struct weir__h1_chunk_out {
    struct weir_iov data;     /* body bytes (a slice of the input), possibly empty */
    struct weir_iov trailers; /* when done: raw trailer field lines, each ending in CRLF */
    bool done;                /* the last chunk and the trailer section were consumed */
};

void weir__h1_chunked_init(struct weir__h1_chunked *st, uint32_t max_line, uint32_t max_trailer);

/**
 * Decodes from in[0..len). Returns how many bytes were consumed (>= 0) and sets *out: at most
 * one data slice per call; done when the message is complete. A return of 0 with no data and
 * not done means more input is needed: the caller keeps the unconsumed bytes and calls again
 * with them and more appended. A size line or trailer section is consumed only whole. Errors:
 * WEIR_EH1_BAD (bad size, overflow, bad line ending, line or trailers over their bound).
 */
ssize_t weir__h1_chunked_decode(struct weir__h1_chunked *st, const char *in, size_t len,
                                struct weir__h1_chunk_out *out);

/** Writes "<hex size>\r\n" into out (at least 20 bytes) and returns its length. */
size_t weir__h1_chunk_size_line(char *out, uint64_t size);

#endif
