/*
 * libFuzzer target: the response-side twin of fuzz_h1_session. The input's first byte says
 * which responses answer a HEAD request (bit i for response i); the rest is a stream of
 * responses on one upstream connection, walked as src/proxy/h1_framing.c and pipe.c walk
 * it: interim 1xx heads are consumed and dropped, 101 is an error, then the final head and its
 * body by its framing (Content-Length, chunked, or everything until the stream ends), then the next
 * response if the connection stays reusable. The walk is done with the whole stream in the
 * buffer and again with the stream arriving in pieces of input-derived sizes; both must give the
 * same events (status, framing, keep-alive, body bytes, trailers, interim heads dropped, and
 * the error or incomplete state at the end). A mismatch would let the bytes after a response
 * be read differently depending on how the origin's writes were split: response smuggling.
 */
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "http1/h1.h"

#define CAP        64
#define MAX_EVENTS 64

enum ev_kind {
    EV_RESPONSE = 1, /* a complete response: final head and body */
    EV_ERROR,        /* a parse or decode error, or a 101; the stream stops */
    EV_PARTIAL_HEAD, /* the stream ended inside a head */
    EV_PARTIAL_BODY, /* the stream ended inside a length or chunked body */
    EV_END,          /* the stream ended between responses */
};

struct event {
    int kind;
    int code;
    int status, minor, body;
    unsigned interim;
    uint64_t reason, content_length;
    bool keep_alive;
    uint64_t body_hash, body_len, trailer_hash;
};

struct walk {
    struct event ev[MAX_EVENTS];
    size_t nev;
    int phase;      /* 0 head, 1 body, 2 stopped */
    unsigned index; /* which response of the stream */
    unsigned head_mask;
    unsigned interim;
    struct weir__h1_scan scan;
    struct event cur;
    uint64_t left;
    struct weir__h1_chunked dec;
    uint32_t max_line, max_trailer;
};

#define FNV0 0xcbf29ce484222325u

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3u;
    }
    return h;
}

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
    if (e->kind != EV_RESPONSE || !e->keep_alive || w->nev >= MAX_EVENTS) {
        w->phase = 2; /* the upstream connection is not reused */
    }
}

static void check_iov(struct weir_iov v, const char *lo, const char *hi)
{
    if (v.len && (v.base < lo || v.base + v.len > hi)) {
        __builtin_trap();
    }
}

static void error(struct walk *w, int code)
{
    struct event e = {.kind = EV_ERROR,
                      .code = code,
                      .interim = w->interim,
                      .status = w->cur.status,
                      .body_len = w->cur.body_len,
                      .body_hash = w->cur.body_hash};
    push(w, &e);
}

static size_t step_head(struct walk *w, const struct weir__h1_limits *lim, const char *buf,
                        size_t len)
{
    struct weir_header hdrs[CAP];
    struct weir__h1_response r;
    if (len == 0) {
        return 0;
    }
    bool head = (w->head_mask >> (w->index & 7)) & 1;
    ssize_t n = weir__h1_parse_response(buf, len, &w->scan, lim, head, hdrs, CAP, &r);
    if (n == WEIR_EAGAIN) {
        return 0;
    }
    if (n <= 0 || r.status == 101) {
        memset(&w->cur, 0, sizeof(w->cur));
        error(w, n <= 0 ? (int)n : 101);
        return 0;
    }
    if ((size_t)n > len || r.status < 100 || r.status > 999) {
        __builtin_trap();
    }
    check_iov(r.reason, buf, buf + n);
    memset(&w->scan, 0, sizeof(w->scan));
    if (r.status < 200) {
        w->interim++;
        if (r.body != WEIR_H1_BODY_NONE) {
            __builtin_trap(); /* an interim response never has a body */
        }
        return (size_t)n;
    }
    memset(&w->cur, 0, sizeof(w->cur));
    w->cur.kind = EV_RESPONSE;
    w->cur.status = r.status;
    w->cur.minor = r.minor;
    w->cur.body = (int)r.body;
    w->cur.interim = w->interim;
    w->cur.reason = fnv(FNV0, r.reason.base, r.reason.len);
    w->cur.content_length = r.content_length;
    w->cur.keep_alive = r.keep_alive;
    w->cur.body_hash = FNV0;
    w->cur.trailer_hash = FNV0;
    w->interim = 0;
    w->index++;
    w->left = r.content_length;
    if ((head || r.status == 204 || r.status == 304) && r.body != WEIR_H1_BODY_NONE) {
        __builtin_trap();
    }
    if (r.body == WEIR_H1_BODY_CLOSE && r.keep_alive) {
        __builtin_trap(); /* a close-delimited response cannot leave the connection reusable */
    }
    weir__h1_chunked_init(&w->dec, w->max_line, w->max_trailer);
    if (r.body == WEIR_H1_BODY_NONE) {
        push(w, &w->cur);
    } else {
        w->phase = 1;
    }
    return (size_t)n;
}

static size_t step_body(struct walk *w, const char *buf, size_t len, bool *progress)
{
    *progress = false;
    if (w->cur.body == WEIR_H1_BODY_LENGTH || w->cur.body == WEIR_H1_BODY_CLOSE) {
        bool until_close = w->cur.body == WEIR_H1_BODY_CLOSE;
        size_t take = until_close || len < w->left ? len : (size_t)w->left;
        w->cur.body_hash = fnv(w->cur.body_hash, buf, take);
        w->cur.body_len += take;
        w->left -= until_close ? 0 : take;
        *progress = take > 0;
        if (!until_close && w->left == 0) {
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
        error(w, (int)n);
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
    struct event e = {.kind = EV_END, .interim = w->interim};
    if (w->phase == 1 && w->cur.body == WEIR_H1_BODY_CLOSE) {
        w->cur.kind = EV_RESPONSE; /* the close ends it */
        push(w, &w->cur);
        return;
    }
    if (w->phase == 1) {
        e.kind = EV_PARTIAL_BODY;
        e.status = w->cur.status;
        e.body_hash = w->cur.body_hash;
        e.body_len = w->cur.body_len;
    } else if (have > 0) {
        e.kind = EV_PARTIAL_HEAD;
    }
    push(w, &e);
}

static void run(const uint8_t *in, size_t len, unsigned mask, uint64_t seed, unsigned max,
                const struct weir__h1_limits *lim, char *buf, struct walk *w)
{
    memset(w, 0, sizeof(*w));
    w->head_mask = mask;
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
        if (x->kind != y->kind || x->code != y->code || x->status != y->status ||
            x->minor != y->minor || x->body != y->body || x->interim != y->interim ||
            x->reason != y->reason || x->content_length != y->content_length ||
            x->keep_alive != y->keep_alive || x->body_hash != y->body_hash ||
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
    if (size == 0) {
        return 0;
    }
    unsigned mask = data[0];
    data++;
    size--;
    uint64_t seed = fnv(FNV0, data, size) | 1;
    char *buf = weir__malloc(size + 1);
    if (buf == NULL) {
        return 0;
    }
    for (size_t l = 0; l < sizeof(limits) / sizeof(limits[0]); l++) {
        run(data, size, mask, 0, 0, &limits[l], buf, &one);
        run(data, size, mask, seed, 1 + (unsigned)(seed >> 59), &limits[l], buf, &inc);
        compare(&one, &inc);
        run(data, size, mask, seed + 2, 97, &limits[l], buf, &inc);
        compare(&one, &inc);
    }
    weir__free(buf);
    return 0;
}
