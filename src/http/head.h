/*
 * Private layout of header maps and request/response heads. The proxy and the HTTP/1 codec
 * see these fields; the public API reaches them through accessors in include/weir/http.h.
 */
#ifndef WEIR_HTTP_HEAD_H
#define WEIR_HTTP_HEAD_H

#include "weir/http.h"
#include "weir/mem.h"

struct weir_headers {
    struct weir_header *v; /* fields; array in the arena */
    uint32_t n;            /* fields in use */
    uint32_t cap;          /* allocated slots in v */
    uint32_t max;          /* hard bound on n */
    struct weir_arena *arena;
};

struct weir_req {
    struct weir_iov method;
    struct weir_iov target;
    uint8_t minor; /* HTTP/1.minor */
    struct weir_headers headers;
};

struct weir_resp {
    uint16_t status;
    uint8_t minor;
    struct weir_iov reason;
    struct weir_headers headers;
};

/**
 * Sets up an empty map in arena a, with room for cap fields before growing, never more than
 * max. 0 or WEIR_ENOMEM.
 */
int weir__headers_init(struct weir_headers *h, struct weir_arena *a, uint32_t cap, uint32_t max);

/**
 * Adopts n parsed fields (their bytes already live in the arena) as the map's content, copying
 * the field array. 0, WEIR_ENOMEM or WEIR_ELIMIT.
 */
int weir__headers_adopt(struct weir_headers *h, const struct weir_header *fields, size_t n);

/** Removes the field at index i, keeping order. */
void weir__headers_remove_at(struct weir_headers *h, size_t i);

/** Optional whitespace (RFC 9110 OWS): space or horizontal tab. */
static inline bool weir__http_is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/** True when v is a valid token (RFC 9110 tchar+), as header names and methods must be. */
bool weir__http_is_token(struct weir_iov v);

/** True when v may be a field value: no CR, LF or NUL (other CTLs but HTAB rejected too). */
bool weir__http_is_field_value(struct weir_iov v);

/**
 * Iterates over a comma-separated token list (Connection, Transfer-Encoding). On each call,
 * stores the next element, trimmed of optional whitespace, in *tok and returns true; returns
 * false at the end. *pos starts at 0. Empty elements are skipped.
 */
bool weir__http_next_token(struct weir_iov list, size_t *pos, struct weir_iov *tok);

#endif
