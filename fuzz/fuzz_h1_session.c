/*
 * libFuzzer target: a differential check of a whole client byte stream, as the proxy reads it.
 * The input is a stream of pipelined requests. It is walked the way src/proxy/conn.c and
 * pipe.c walk a connection's input: a head (weir__h1_parse_request with a scan state kept
 * across reads), then the body by its framing (Content-Length bytes, or
 * weir__h1_chunked_decode consuming from the front of the buffer), then the next head on the
 * bytes left over. The walk is done once with the whole stream in the buffer and again with the
 * stream arriving in pieces of input-derived sizes (the unconsumed bytes moved to the front, as
 * a read buffer would). Both must produce the same sequence of events: each request's method,
 * target, version, framing, keep-alive, body bytes and trailers, then the error or the
 * incomplete state the stream ends in. A mismatch means the verdict on a byte stream depends on
 * how it was split into reads, which is where request smuggling lives.
 */
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "http1/h1.h"

#define CAP        64
#define MAX_EVENTS 64

enum ev_kind {
    EV_REQUEST = 1,  /* a complete request: head and body */
    EV_ERROR,        /* a parse or decode error; the stream stops */
    EV_PARTIAL_HEAD, /* the stream ended inside a head */
    EV_PARTIAL_BODY, /* the stream ended inside a body */
    EV_END,          /* the stream ended between requests */
};

struct event {
    int kind;
    int code;                /* error code */
    uint64_t method, target; /* FNV hashes */
    int minor;
    int body;
    uint64_t content_length;
    bool keep_alive, expect, upgrade;
    uint64_t body_hash, body_len, trailer_hash;
};

struct walk {
    struct event ev[MAX_EVENTS];
    size_t nev;
    /* current message state */
    int phase; /* 0 head, 1 body, 2 stopped */
    struct weir__h1_scan scan;
    struct event cur;
    uint64_t left;
    struct weir__h1_chunked dec;
    uint32_t max_line, max_trailer;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3u;
    }
    return h;
}

#define FNV0 0xcbf29ce484222325u

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void push(struct walk *w, const struct event *e)
{
    if (w->nev < MAX_EVENTS) {
        w->ev[w->nev] = *e;
    }
    w->nev++;
    if (e->kind != EV_REQUEST || !e->keep_alive || e->upgrade || w->nev >= MAX_EVENTS) {
        w->phase = 2; /* the proxy closes (or tunnels) after such a request */
    }
}

static void check_iov(struct weir_iov v, const char *lo, const char *hi)
{
    if (v.len && (v.base < lo || v.base + v.len > hi)) {
        __builtin_trap();
    }
}

/* One head parse attempt at the front of buf. Returns bytes consumed (0: need more). */
static size_t step_head(struct walk *w, const struct weir__h1_limits *lim, const char *buf,
                        size_t len)
{
    struct weir_header hdrs[CAP];
    struct weir__h1_request r;
    if (len == 0) {
        return 0;
    }
    ssize_t n = weir__h1_parse_request(buf, len, &w->scan, lim, hdrs, CAP, &r);
    if (n == WEIR_EAGAIN) {
        return 0;
    }
    if (n <= 0) {
        struct event e = {.kind = EV_ERROR, .code = (int)n};
        push(w, &e);
        return 0;
    }
    if ((size_t)n > len) {
        __builtin_trap();
    }
    check_iov(r.method, buf, buf + n);
    check_iov(r.target, buf, buf + n);
    memset(&w->scan, 0, sizeof(w->scan));
    memset(&w->cur, 0, sizeof(w->cur));
    w->cur.kind = EV_REQUEST;
    w->cur.method = fnv(FNV0, r.method.base, r.method.len);
    w->cur.target = fnv(FNV0, r.target.base, r.target.len);
    w->cur.minor = r.minor;
    w->cur.body = (int)r.body;
    w->cur.content_length = r.content_length;
    w->cur.keep_alive = r.keep_alive;
    w->cur.expect = r.expect_continue;
    w->cur.upgrade = r.upgrade;
    w->cur.body_hash = FNV0;
    w->cur.trailer_hash = FNV0;
    w->left = r.content_length;
    weir__h1_chunked_init(&w->dec, w->max_line, w->max_trailer);
    if (r.body == WEIR_H1_BODY_NONE) {
        push(w, &w->cur);
    } else if (r.body == WEIR_H1_BODY_LENGTH || r.body == WEIR_H1_BODY_CHUNKED) {
        w->phase = 1;
    } else {
        __builtin_trap(); /* a request is never close-delimited */
    }
    return (size_t)n;
}

/* One body step at the front of buf. Returns bytes consumed; *progress tells if it moved. */
static size_t step_body(struct walk *w, const char *buf, size_t len, bool *progress)
{
    *progress = false;
    if (w->cur.body == WEIR_H1_BODY_LENGTH) {
        size_t take = len < w->left ? len : (size_t)w->left;
        w->cur.body_hash = fnv(w->cur.body_hash, buf, take);
        w->cur.body_len += take;
        w->left -= take;
        *progress = take > 0;
        if (w->left == 0) {
            w->phase = 0;
            push(w, &w->cur);
            *progress = true;
        }
        return take;
    }
    if (len == 0) {
        return 0;
    }
    struct weir__h1_chunk_out out;
    ssize_t n = weir__h1_chunked_decode(&w->dec, buf, len, &out);
    if (n < 0) {
        struct event e = {.kind = EV_ERROR,
                          .code = (int)n,
                          .body_len = w->cur.body_len,
                          .body_hash = w->cur.body_hash,
                          .method = w->cur.method};
        push(w, &e);
        return 0;
    }
    if ((size_t)n > len) {
        __builtin_trap();
    }
    check_iov(out.data, buf, buf + n);
    w->cur.body_hash = fnv(w->cur.body_hash, out.data.base, out.data.len);
    w->cur.body_len += out.data.len;
    *progress = n > 0 || out.data.len > 0;
    if (out.done) {
        check_iov(out.trailers, buf, buf + n);
        w->cur.trailer_hash = fnv(w->cur.trailer_hash, out.trailers.base, out.trailers.len);
        w->phase = 0;
        push(w, &w->cur);
        *progress = true;
    }
    return (size_t)n;
}

/* Runs every step possible on buf[0..*have); moves leftovers to the front. */
static void drain(struct walk *w, const struct weir__h1_limits *lim, char *buf, size_t *have)
{
    size_t pos = 0;
    while (w->phase != 2) {
        if (w->phase == 0) {
            size_t n = step_head(w, lim, buf + pos, *have - pos);
            if (n == 0) {
                break;
            }
            pos += n;
        } else {
            bool progress;
            pos += step_body(w, buf + pos, *have - pos, &progress);
            if (!progress) {
                break;
            }
        }
    }
    memmove(buf, buf + pos, *have - pos);
    *have -= pos;
}

static void finish(struct walk *w, size_t have)
{
    if (w->phase == 2) {
        return;
    }
    struct event e = {.kind = EV_END};
    if (w->phase == 1) {
        e.kind = EV_PARTIAL_BODY;
        e.body_hash = w->cur.body_hash;
        e.body_len = w->cur.body_len;
        e.method = w->cur.method;
    } else if (have > 0) {
        e.kind = EV_PARTIAL_HEAD;
    }
    push(w, &e);
}

/* max == 0: the whole stream at once; else pieces of 1..max bytes. */
static void run(const uint8_t *in, size_t len, uint64_t seed, unsigned max,
                const struct weir__h1_limits *lim, char *buf, struct walk *w)
{
    memset(w, 0, sizeof(*w));
    w->max_line = lim->max_line < 4096 ? 16 : 4096;
    w->max_trailer = lim->max_head;
    size_t have = 0, fed = 0;
    while (fed < len && w->phase != 2) {
        size_t step = max ? (size_t)(next(&seed) % max) + 1 : len;
        if (step > len - fed) {
            step = len - fed;
        }
        memcpy(buf + have, in + fed, step);
        have += step;
        fed += step;
        drain(w, lim, buf, &have);
    }
    finish(w, have);
}

static void compare(const struct walk *a, const struct walk *b)
{
    if (a->nev != b->nev) {
        __builtin_trap();
    }
    size_t n = a->nev < MAX_EVENTS ? a->nev : MAX_EVENTS;
    for (size_t i = 0; i < n; i++) {
        const struct event *x = &a->ev[i], *y = &b->ev[i];
        if (x->kind != y->kind || x->code != y->code || x->method != y->method ||
            x->target != y->target || x->minor != y->minor || x->body != y->body ||
            x->content_length != y->content_length || x->keep_alive != y->keep_alive ||
            x->expect != y->expect || x->upgrade != y->upgrade || x->body_hash != y->body_hash ||
            x->body_len != y->body_len || x->trailer_hash != y->trailer_hash) {
            __builtin_trap();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct weir__h1_limits limits[] = {
        {.max_line = 8192, .max_head = 65536, .max_headers = CAP},
        {.max_line = 24, .max_head = 96, .max_headers = 3},
    };
    static struct walk one, inc;
    uint64_t seed = fnv(FNV0, data, size) | 1;
    /* Sized to the input, so ASan sees any read past the bytes handed in. */
    char *buf = weir__malloc(size + 1);
    if (buf == NULL) {
        return 0;
    }
    for (size_t l = 0; l < sizeof(limits) / sizeof(limits[0]); l++) {
        run(data, size, 0, 0, &limits[l], buf, &one);
        run(data, size, seed, 1 + (unsigned)(seed >> 59), &limits[l], buf, &inc);
        compare(&one, &inc);
        run(data, size, seed + 2, 97, &limits[l], buf, &inc);
        compare(&one, &inc);
    }
    weir__free(buf);
    return 0;
}
