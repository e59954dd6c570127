/*
 * libFuzzer target for the chunked decoder, with a differential check: decoding the input in
 * one piece and fed in pieces of input-derived sizes (the unconsumed bytes kept and extended,
 * as the proxy does) must give the same body bytes, trailers, leftover and verdict.
 */
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "http1/h1.h"

enum { R_DONE = 0, R_MORE = 1 };

struct result {
    int rc;
    uint8_t *data; /* decoded body, at most the input's size */
    size_t dlen;
    uint8_t *trailers;
    size_t tlen;
    size_t leftover;
};

/* A small PRNG seeded from the input, so piece sizes vary with it. */
static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void take(struct result *res, const struct weir__h1_chunk_out *out, const char *lo,
                 const char *hi)
{
    if (out->data.len) {
        if (out->data.base < lo || out->data.base + out->data.len > hi) {
            __builtin_trap();
        }
        memcpy(res->data + res->dlen, out->data.base, out->data.len);
        res->dlen += out->data.len;
    }
    if (out->done && out->trailers.len) {
        if (out->trailers.base < lo || out->trailers.base + out->trailers.len > hi) {
            __builtin_trap();
        }
        memcpy(res->trailers, out->trailers.base, out->trailers.len);
        res->tlen = out->trailers.len;
    }
}

/* pieces == false: the whole input at once. Else sizes 1..max from the PRNG. */
static void run(const uint8_t *in, size_t len, bool pieces, uint64_t seed, unsigned max,
                const uint32_t bounds[2], char *buf, struct result *res)
{
    struct weir__h1_chunked st;
    weir__h1_chunked_init(&st, bounds[0], bounds[1]);
    size_t have = 0, fed = 0;
    res->rc = R_MORE;
    res->dlen = res->tlen = res->leftover = 0;
    while (fed < len || (fed == len && len == 0)) {
        size_t step = pieces ? (size_t)(next(&seed) % max) + 1 : len;
        if (step > len - fed) {
            step = len - fed;
        }
        memcpy(buf + have, in + fed, step);
        have += step;
        fed += step;
        for (;;) {
            struct weir__h1_chunk_out out;
            ssize_t n = weir__h1_chunked_decode(&st, buf, have, &out);
            if (n < 0) {
                res->rc = (int)n;
                return;
            }
            if ((size_t)n > have) {
                __builtin_trap();
            }
            take(res, &out, buf, buf + n);
            if (out.done) {
                res->rc = R_DONE;
                res->leftover = have - (size_t)n + (len - fed);
                return;
            }
            memmove(buf, buf + n, have - (size_t)n);
            have -= (size_t)n;
            if (n == 0 && out.data.len == 0) {
                break;
            }
        }
        if (len == 0) {
            break;
        }
    }
}

static bool same(const struct result *a, const struct result *b)
{
    return a->rc == b->rc && a->dlen == b->dlen && a->tlen == b->tlen &&
           a->leftover == b->leftover && memcmp(a->data, b->data, a->dlen) == 0 &&
           memcmp(a->trailers, b->trailers, a->tlen) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t bounds[][2] = {{4096, 16384}, {16, 40}};
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < size; i++) {
        seed = (seed ^ data[i]) * 0x100000001b3u;
    }
    seed |= 1;
    /* Heap copies sized to the input, so ASan sees any read past the bytes handed in. */
    char *buf = weir__malloc(size + 1);
    struct result one, inc;
    one.data = weir__malloc(size + 1);
    one.trailers = weir__malloc(size + 1);
    inc.data = weir__malloc(size + 1);
    inc.trailers = weir__malloc(size + 1);
    if (buf == NULL || one.data == NULL || one.trailers == NULL || inc.data == NULL ||
        inc.trailers == NULL) {
        goto out;
    }
    for (size_t b = 0; b < sizeof(bounds) / sizeof(bounds[0]); b++) {
        run(data, size, false, 0, 0, bounds[b], buf, &one);
        run(data, size, true, seed, 1 + (unsigned)(seed >> 59), bounds[b], buf, &inc);
        if (!same(&one, &inc)) {
            __builtin_trap();
        }
        run(data, size, true, seed + 2, 64, bounds[b], buf, &inc);
        if (!same(&one, &inc)) {
            __builtin_trap();
        }
    }
out:
    weir__free(buf);
    weir__free(one.data);
    weir__free(one.trailers);
    weir__free(inc.data);
    weir__free(inc.trailers);
    return 0;
}
