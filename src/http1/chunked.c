/*
 * The chunked transfer coding (RFC 9112 7.1): an incremental decoder that hands out slices of
 * its input as body data, and the size-line writer the encoder side uses. Framing is checked
 * as strictly as the head parsers do: hex sizes only (no sign, space or overflow past 2^63-1),
 * CRLF and nothing else after each size line and each chunk's data, extensions free of
 * control bytes, trailer fields validated like header fields. A size line and the trailer
 * section are consumed only whole, and how far their search got is kept in st->remaining
 * (unused in those states), so a message fed a byte at a time still decodes in linear time.
 */
#include <string.h>

#include "http/head.h"
#include "http1/h1.h"

enum {
    ST_SIZE = 0,  /* expecting a chunk-size line; remaining = bytes searched without LF */
    ST_DATA,      /* in chunk data; remaining = bytes left */
    ST_DATA_CRLF, /* expecting the CRLF that closes a chunk's data */
    ST_TRAILER,   /* after the last chunk; remaining = start of the first unchecked line */
    ST_DONE,
    ST_ERROR,
};

/* Bounds for a state that was zeroed rather than initialised. */
#define DEFAULT_MAX_LINE    4096
#define DEFAULT_MAX_TRAILER 16384

#define MAX_SIZE UINT64_C(0x7fffffffffffffff)

static const signed char hexval[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
}; /* digit value + 1, so 0 means "not a hex digit" */

void weir__h1_chunked_init(struct weir__h1_chunked *st, uint32_t max_line, uint32_t max_trailer)
{
    memset(st, 0, sizeof(*st));
    st->max_line = max_line;
    st->max_trailer = max_trailer;
}

static size_t max_line(const struct weir__h1_chunked *st)
{
    return st->max_line ? st->max_line : DEFAULT_MAX_LINE;
}

static size_t max_trailer(const struct weir__h1_chunked *st)
{
    return st->max_trailer ? st->max_trailer : DEFAULT_MAX_TRAILER;
}

/* Extension bytes after the size: BWS ";" then HTAB, SP, VCHAR or obs-text only. */
static bool valid_ext(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) {
        i++;
    }
    if (i == n || p[i] != ';') {
        return false; /* trailing whitespace or junk after the size */
    }
    return weir__http_is_field_value((struct weir_iov){p + i, n - i});
}

/* Consumes a whole chunk-size line: bytes consumed, 0 when incomplete, or WEIR_EH1_BAD. */
static ssize_t size_line(struct weir__h1_chunked *st, const char *p, size_t n)
{
    size_t bound = max_line(st) + 2;
    size_t lim = n < bound ? n : bound;
    size_t from = st->remaining < lim ? (size_t)st->remaining : lim;
    const char *lf = memchr(p + from, '\n', lim - from);
    if (lf == NULL) {
        if (n >= bound) {
            return WEIR_EH1_BAD;
        }
        st->remaining = lim;
        return 0;
    }
    size_t i = (size_t)(lf - p);
    if (i == 0 || p[i - 1] != '\r') {
        return WEIR_EH1_BAD;
    }
    size_t line = i - 1, j = 0;
    uint64_t size = 0;
    for (; j < line && hexval[(unsigned char)p[j]]; j++) {
        if (size > (MAX_SIZE >> 4)) {
            return WEIR_EH1_BAD;
        }
        size = (size << 4) | (uint64_t)(hexval[(unsigned char)p[j]] - 1);
    }
    if (j == 0 || (j < line && !valid_ext(p + j, line - j))) {
        return WEIR_EH1_BAD;
    }
    st->remaining = size;
    st->state = size ? ST_DATA : ST_TRAILER;
    return (ssize_t)(i + 1);
}

/* One trailer field line (without its CRLF): name ":" OWS value OWS. */
static bool valid_field_line(const char *p, size_t n)
{
    const char *colon = memchr(p, ':', n);
    if (colon == NULL) {
        return false;
    }
    size_t nl = (size_t)(colon - p);
    return weir__http_is_token((struct weir_iov){p, nl}) &&
           weir__http_is_field_value((struct weir_iov){colon + 1, n - nl - 1});
}

/* Consumes the whole trailer section: bytes consumed, 0 when incomplete, or WEIR_EH1_BAD. */
static ssize_t trailer_section(struct weir__h1_chunked *st, const char *p, size_t n,
                               struct weir__h1_chunk_out *out)
{
    size_t limit = max_trailer(st);
    size_t bound = limit + 2;
    size_t ls = st->remaining <= n ? (size_t)st->remaining : 0;
    for (;;) {
        if (ls > limit) {
            return WEIR_EH1_BAD; /* no room left for the final CRLF */
        }
        if (ls < n && p[ls] == '\r') {
            if (n - ls < 2) {
                break;
            }
            if (p[ls + 1] != '\n') {
                return WEIR_EH1_BAD;
            }
            out->trailers = (struct weir_iov){p, ls};
            return (ssize_t)(ls + 2);
        }
        size_t lim = n < bound ? n : bound;
        const char *lf = ls < lim ? memchr(p + ls, '\n', lim - ls) : NULL;
        if (lf == NULL) {
            if (n >= bound) {
                return WEIR_EH1_BAD;
            }
            break;
        }
        size_t i = (size_t)(lf - p);
        if (i == ls || p[i - 1] != '\r' || !valid_field_line(p + ls, i - 1 - ls)) {
            return WEIR_EH1_BAD;
        }
        ls = i + 1;
    }
    st->remaining = ls;
    return 0;
}

/* Takes what is available of the current chunk's data. */
static size_t data(struct weir__h1_chunked *st, const char *p, size_t n,
                   struct weir__h1_chunk_out *out)
{
    size_t take = n < st->remaining ? n : (size_t)st->remaining;
    out->data = (struct weir_iov){p, take};
    st->remaining -= take;
    if (st->remaining == 0) {
        st->state = ST_DATA_CRLF;
    }
    return take;
}

ssize_t weir__h1_chunked_decode(struct weir__h1_chunked *st, const char *in, size_t len,
                                struct weir__h1_chunk_out *out)
{
    size_t pos = 0;
    ssize_t n;
    memset(out, 0, sizeof(*out));
    for (;;) {
        switch (st->state) {
        case ST_SIZE:
            n = size_line(st, in + pos, len - pos);
            if (n <= 0) {
                goto stop;
            }
            pos += (size_t)n;
            break;
        case ST_DATA:
            return (ssize_t)(pos + data(st, in + pos, len - pos, out));
        case ST_DATA_CRLF:
            if (len - pos < 2) {
                n = (len > pos && in[pos] != '\r') ? WEIR_EH1_BAD : 0;
                goto stop;
            }
            if (in[pos] != '\r' || in[pos + 1] != '\n') {
                n = WEIR_EH1_BAD;
                goto stop;
            }
            pos += 2;
            st->state = ST_SIZE;
            st->remaining = 0;
            break;
        case ST_TRAILER:
            n = trailer_section(st, in + pos, len - pos, out);
            if (n <= 0) {
                goto stop;
            }
            st->state = ST_DONE;
            out->done = true;
            return (ssize_t)(pos + (size_t)n);
        case ST_DONE:
            out->done = true;
            return (ssize_t)pos;
        default:
            return WEIR_EH1_BAD;
        }
    }
stop:
    if (n < 0) {
        st->state = ST_ERROR;
        return n;
    }
    return (ssize_t)pos;
}

size_t weir__h1_chunk_size_line(char *out, uint64_t size)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = hex[size & 0xf];
        size >>= 4;
    } while (size != 0);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}
