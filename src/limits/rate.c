/*
 * The rate estimator (Pingora's pingora-limits Rate): two count-min sketches used in turn for
 * consecutive windows of window_ms. Window e lives in bank e & 1, tagged with e + 1 (0: never
 * used, all zero). The first thread to see a new window claims the bank, clears it and tags
 * it; threads arriving during the clear count into the bank at once rather than wait (so a
 * few of their counts may be wiped: the one place an estimate can fall below the truth, as in
 * Pingora). A thread whose clock lags (each worker's loop caches its own time) counts into the
 * newest window rather than reopening an old one.
 */
#include "weir/limits.h"

#include "core/alloc.h"
#include "limits/sketch.h"

#define BANK_BUSY UINT64_MAX

struct weir_rate {
    uint32_t window_ms;
    uint64_t seed;
    struct weir__sketch bank[2];
    _Atomic uint64_t tag[2]; /* window + 1 held by each bank; 0 fresh; BANK_BUSY clearing */
    _Atomic uint64_t latest; /* the newest window any thread has seen */
};

int weir_rate_new(uint32_t window_ms, unsigned rows, unsigned slots, struct weir_rate **out)
{
    *out = NULL;
    if (window_ms == 0 || weir__sketch_shape(&rows, &slots) != 0) {
        return WEIR_EINVAL;
    }
    struct weir_rate *r = weir__calloc(1, sizeof(*r));
    if (r == NULL) {
        return WEIR_ENOMEM;
    }
    r->window_ms = window_ms;
    r->seed = weir__sketch_seed();
    if (weir__sketch_init(&r->bank[0], rows, slots) != 0 ||
        weir__sketch_init(&r->bank[1], rows, slots) != 0) {
        weir_rate_free(r);
        return WEIR_ENOMEM;
    }
    *out = r;
    return 0;
}

void weir_rate_free(struct weir_rate *r)
{
    if (r == NULL) {
        return;
    }
    weir__sketch_dispose(&r->bank[0]);
    weir__sketch_dispose(&r->bank[1]);
    weir__free(r);
}

/* The window now_ms falls in, never older than the newest one seen. */
static uint64_t current_window(struct weir_rate *r, uint64_t now_ms)
{
    uint64_t e = now_ms / r->window_ms;
    uint64_t seen = atomic_load_explicit(&r->latest, memory_order_relaxed);
    while (e > seen) {
        if (atomic_compare_exchange_weak_explicit(&r->latest, &seen, e, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            return e;
        }
    }
    return e > seen ? e : seen;
}

/* Makes the bank of window e hold window e (clearing it if it held an older one). Returns
 * the window the bank holds: e, or a newer one of the same parity if a thread moved on. */
static uint64_t claim_bank(struct weir_rate *r, uint64_t e)
{
    _Atomic uint64_t *tag = &r->tag[e & 1];
    uint64_t want = e + 1;
    for (;;) {
        uint64_t cur = atomic_load_explicit(tag, memory_order_acquire);
        if (cur == want) {
            return e;
        }
        if (cur == BANK_BUSY) {
            /*
             * Another thread is clearing this bank for window e: count into it now rather than
             * wait (no lock on the request path). Counts landing on counters not cleared yet
             * are lost: an under-count only in the window's first microseconds.
             */
            return e;
        }
        if (cur > want) {
            return cur - 1; /* our clock lags a thread that already opened a later window */
        }
        if (cur == 0) {
            /* Never used: already zero. */
            if (atomic_compare_exchange_weak_explicit(tag, &cur, want, memory_order_acq_rel,
                                                      memory_order_acquire)) {
                return e;
            }
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(tag, &cur, BANK_BUSY, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            weir__sketch_clear(&r->bank[e & 1]);
            atomic_store_explicit(tag, want, memory_order_release);
            return e;
        }
    }
}

/* The key's count in window e, or 0 when the bank no longer (or not yet) holds it. */
static uint64_t window_count(const struct weir_rate *r, uint64_t e,
                             const struct weir__sketch_idx *ix)
{
    uint64_t cur = atomic_load_explicit(&r->tag[e & 1], memory_order_acquire);
    if (cur != e + 1) {
        return 0;
    }
    return weir__sketch_min(&r->bank[e & 1], ix);
}

/* The previous window's count weighted by the share of it still inside the last window. */
static uint64_t weighted_previous(const struct weir_rate *r, uint64_t e, uint64_t now_ms,
                                  const struct weir__sketch_idx *ix)
{
    if (e == 0) {
        return 0;
    }
    uint64_t prev = window_count(r, e - 1, ix);
    if (prev == 0) {
        return 0;
    }
    uint64_t into = now_ms / r->window_ms == e ? now_ms % r->window_ms : 0;
    return prev * (r->window_ms - into) / r->window_ms;
}

uint64_t weir_rate_observe(struct weir_rate *r, const void *key, size_t len, uint32_t n,
                           uint64_t now_ms)
{
    struct weir__sketch_idx ix;
    uint64_t e = claim_bank(r, current_window(r, now_ms));
    weir__sketch_index(&r->bank[0], weir__sketch_hash(r->seed, key, len), &ix);
    uint64_t curr = weir__sketch_add(&r->bank[e & 1], &ix, n);
    return curr + weighted_previous(r, e, now_ms, &ix);
}

uint64_t weir_rate_estimate(const struct weir_rate *r, const void *key, size_t len, uint64_t now_ms)
{
    struct weir__sketch_idx ix;
    uint64_t e = now_ms / r->window_ms;
    uint64_t seen = atomic_load_explicit(&r->latest, memory_order_relaxed);
    e = e > seen ? e : seen;
    weir__sketch_index(&r->bank[0], weir__sketch_hash(r->seed, key, len), &ix);
    return window_count(r, e, &ix) + weighted_previous(r, e, now_ms, &ix);
}

double weir_rate_per_second(const struct weir_rate *r, const void *key, size_t len, uint64_t now_ms)
{
    struct weir__sketch_idx ix;
    uint64_t e = now_ms / r->window_ms;
    if (e == 0) {
        return 0.0;
    }
    weir__sketch_index(&r->bank[0], weir__sketch_hash(r->seed, key, len), &ix);
    return (double)window_count(r, e - 1, &ix) * 1000.0 / (double)r->window_ms;
}
