/*
 * Cache zones: a storage (the built-in memory one unless the caller brings its own) and the
 * cache lock over its keys, with the key hash's seed.
 */
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <xxhash.h>

#include "cache/cache_int.h"
#include "core/alloc.h"
#include "weir/error.h"

void weir_cache_policy_default(struct weir_cache_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->key = WEIR_CACHE_KEY_DEFAULT;
    p->lock_timeout_ms = 5000;
    p->on_writer_failure = WEIR_CACHE_NEXT_WRITER;
}

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s)) {
        struct timespec ts;
        (void)clock_gettime(CLOCK_MONOTONIC, &ts);
        s = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)&s;
    }
    return s;
}

int weir_cache_new(const struct weir_cache_opts *o, struct weir_cache **out)
{
    *out = NULL;
    uint64_t max_object = o->max_object != 0 ? o->max_object : o->capacity / 8u;
    if (o->capacity == 0 || max_object == 0 || max_object > o->capacity) {
        return WEIR_EINVAL;
    }
    struct weir_cache *c = weir__calloc(1, sizeof(*c));
    if (c == NULL) {
        return WEIR_ENOMEM;
    }
    c->capacity = o->capacity;
    c->max_object = max_object;
    c->seed = random_seed();
    int rc = weir__clock_new(&c->lock);
    if (rc == 0) {
        c->st = o->storage;
        if (c->st == NULL) {
            rc = weir__cache_mem_new(o->capacity, max_object, &c->st);
        }
    }
    if (rc != 0) {
        weir__clock_free(c->lock);
        weir__free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void weir_cache_free(struct weir_cache *c)
{
    if (c == NULL) {
        return;
    }
    c->st->ops->free(c->st);
    weir__clock_free(c->lock);
    weir__free(c);
}

uint64_t weir__cache_hash(const struct weir_cache *c, struct weir_iov key)
{
    return XXH3_64bits_withSeed(key.base, key.len, c->seed);
}

void weir_cache_stats(struct weir_cache *c, struct weir_cache_stats *out)
{
    weir__cache_mem_stats(c->st, out);
    out->capacity = c->capacity;
    out->lock_waits = atomic_load_explicit(&c->lock_waits, memory_order_relaxed);
    out->lock_timeouts = atomic_load_explicit(&c->lock_timeouts, memory_order_relaxed);
}

int weir_cache_purge(struct weir_cache *c, struct weir_iov key)
{
    uint64_t h = weir__cache_hash(c, key);
    weir__clock_forget(c->lock, key, h);
    return c->st->ops->purge(c->st, key, h);
}

struct weir_cache_storage *weir_cache_storage(struct weir_cache *c)
{
    return c->st;
}
