/*
 * Count-min sketch primitives shared by rate.c and inflight.c: shape checks, a keyed hash,
 * and the per-row atomic counters. Relaxed atomics throughout: the counters are estimates and
 * order nothing else.
 */
#include "limits/sketch.h"

#include <string.h>
#include <time.h>
#include <sys/random.h>

#include "core/alloc.h"
#include "weir/error.h"
#include "weir/limits.h"

int weir__sketch_shape(unsigned *rows, unsigned *slots)
{
    unsigned r = *rows ? *rows : WEIR_LIMITS_DEFAULT_ROWS;
    unsigned s = *slots ? *slots : WEIR_LIMITS_DEFAULT_SLOTS;
    if (r > WEIR__SKETCH_MAX_ROWS || s > (1u << 24)) {
        return WEIR_EINVAL;
    }
    unsigned p = 16;
    while (p < s) {
        p <<= 1;
    }
    *rows = r;
    *slots = p;
    return 0;
}

int weir__sketch_init(struct weir__sketch *sk, unsigned rows, unsigned slots)
{
    sk->c = weir__calloc((size_t)rows * slots, sizeof(*sk->c));
    if (sk->c == NULL) {
        return WEIR_ENOMEM;
    }
    sk->rows = rows;
    sk->mask = slots - 1;
    return 0;
}

void weir__sketch_dispose(struct weir__sketch *sk)
{
    weir__free(sk->c);
    sk->c = NULL;
}

uint64_t weir__sketch_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&ts;
    }
    return s;
}

/* A 64-bit finaliser (Stafford's mix13 variant of MurmurHash3's fmix64). */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

uint64_t weir__sketch_hash(uint64_t seed, const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = seed ^ ((uint64_t)len * 0x9e3779b97f4a7c15ull);
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = mix64(h ^ v) + 0x9e3779b97f4a7c15ull;
        p += 8;
        len -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, len);
    return mix64(h ^ v ^ ((uint64_t)len << 59));
}

void weir__sketch_index(const struct weir__sketch *sk, uint64_t h, struct weir__sketch_idx *ix)
{
    /* Double hashing (Kirsch-Mitzenmacher): row i uses h1 + i*h2, h2 odd. */
    uint64_t h1 = h;
    uint64_t h2 = mix64(h ^ 0x5851f42d4c957f2dull) | 1;
    size_t slots = (size_t)sk->mask + 1;
    for (unsigned i = 0; i < sk->rows; i++) {
        ix->at[i] = (uint32_t)(i * slots + ((h1 + i * h2) >> 20 & sk->mask));
    }
}

uint32_t weir__sketch_add(struct weir__sketch *sk, const struct weir__sketch_idx *ix, uint32_t n)
{
    uint32_t min = UINT32_MAX;
    for (unsigned i = 0; i < sk->rows; i++) {
        uint32_t v = atomic_fetch_add_explicit(&sk->c[ix->at[i]], n, memory_order_relaxed) + n;
        min = v < min ? v : min;
    }
    return min;
}

void weir__sketch_sub(struct weir__sketch *sk, const struct weir__sketch_idx *ix, uint32_t n)
{
    for (unsigned i = 0; i < sk->rows; i++) {
        atomic_fetch_sub_explicit(&sk->c[ix->at[i]], n, memory_order_relaxed);
    }
}

uint32_t weir__sketch_min(const struct weir__sketch *sk, const struct weir__sketch_idx *ix)
{
    uint32_t min = UINT32_MAX;
    for (unsigned i = 0; i < sk->rows; i++) {
        uint32_t v = atomic_load_explicit(&sk->c[ix->at[i]], memory_order_relaxed);
        min = v < min ? v : min;
    }
    return min;
}

void weir__sketch_clear(struct weir__sketch *sk)
{
    size_t n = (size_t)sk->rows * ((size_t)sk->mask + 1);
    for (size_t i = 0; i < n; i++) {
        atomic_store_explicit(&sk->c[i], 0, memory_order_relaxed);
    }
}
