/*
 * The in-flight counter: one count-min sketch whose counters go up when a key takes something
 * (a connection) and down when it gives it back. Every counter of a key holds at least the
 * key's true count, so the estimate (the smallest) never under-counts: a cap enforced on it
 * may refuse early when keys collide, never admit past the cap.
 */
#include "weir/limits.h"

#include "core/alloc.h"
#include "limits/sketch.h"

struct weir_inflight {
    uint64_t seed;
    struct weir__sketch sk;
};

int weir_inflight_new(unsigned rows, unsigned slots, struct weir_inflight **out)
{
    *out = NULL;
    if (weir__sketch_shape(&rows, &slots) != 0) {
        return WEIR_EINVAL;
    }
    struct weir_inflight *f = weir__calloc(1, sizeof(*f));
    if (f == NULL) {
        return WEIR_ENOMEM;
    }
    f->seed = weir__sketch_seed();
    if (weir__sketch_init(&f->sk, rows, slots) != 0) {
        weir__free(f);
        return WEIR_ENOMEM;
    }
    *out = f;
    return 0;
}

void weir_inflight_free(struct weir_inflight *f)
{
    if (f == NULL) {
        return;
    }
    weir__sketch_dispose(&f->sk);
    weir__free(f);
}

uint64_t weir_inflight_add(struct weir_inflight *f, const void *key, size_t len, uint32_t n)
{
    struct weir__sketch_idx ix;
    weir__sketch_index(&f->sk, weir__sketch_hash(f->seed, key, len), &ix);
    return weir__sketch_add(&f->sk, &ix, n);
}

void weir_inflight_sub(struct weir_inflight *f, const void *key, size_t len, uint32_t n)
{
    struct weir__sketch_idx ix;
    weir__sketch_index(&f->sk, weir__sketch_hash(f->seed, key, len), &ix);
    weir__sketch_sub(&f->sk, &ix, n);
}

uint64_t weir_inflight_estimate(const struct weir_inflight *f, const void *key, size_t len)
{
    struct weir__sketch_idx ix;
    weir__sketch_index(&f->sk, weir__sketch_hash(f->seed, key, len), &ix);
    return weir__sketch_min(&f->sk, &ix);
}
