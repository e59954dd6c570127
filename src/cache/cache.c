/*
 * Cache zones: a storage (the built-in memory one unless the caller brings its own) and the
 * cache lock over its keys, with the key hash's seed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8u, rest = bits % 8u;
    if (memcmp(a, b, whole) != 0) {
        return false;
    }
    if (rest == 0) {
        return true;
    }
    uint8_t mask = (uint8_t)(0xffu << (8u - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

bool weir_cidr_match(const struct weir_cidr *list, size_t n, const void *addr)
{
    const struct sockaddr *sa = addr;
    uint8_t a[16];
    uint8_t fam;
    if (sa->sa_family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)addr)->sin_addr, 4);
        fam = 4;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(in6)) {
            memcpy(a, in6->s6_addr + 12, 4);
            fam = 4;
        } else {
            memcpy(a, in6->s6_addr, 16);
            fam = 6;
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (list[i].family == fam && prefix_eq(list[i].addr, a, list[i].bits)) {
            return true;
        }
    }
    return false;
}

int weir_cidr_parse(const char *s, struct weir_cidr *out)
{
    char buf[64];
    size_t len = strlen(s);
    if (len == 0 || len >= sizeof(buf)) {
        return WEIR_EINVAL;
    }
    memcpy(buf, s, len + 1);
    char *slash = strchr(buf, '/');
    long bits = -1;
    if (slash != NULL) {
        *slash = '\0';
        char *end = NULL;
        if (slash[1] < '0' || slash[1] > '9') {
            return WEIR_EINVAL;
        }
        bits = strtol(slash + 1, &end, 10);
        if (*end != '\0') {
            return WEIR_EINVAL;
        }
    }
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = 4;
        bits = bits < 0 ? 32 : bits;
        if (bits > 32) {
            return WEIR_EINVAL;
        }
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = 6;
        bits = bits < 0 ? 128 : bits;
        if (bits > 128) {
            return WEIR_EINVAL;
        }
    } else {
        return WEIR_EINVAL;
    }
    out->bits = (uint8_t)bits;
    /* No host bits past the prefix: 10.1.0.0/8 is more likely a typo than a wish. */
    unsigned total = out->family == 4 ? 32u : 128u;
    for (unsigned b = (unsigned)bits; b < total; b++) {
        if (out->addr[b / 8u] & (0x80u >> (b % 8u))) {
            return WEIR_EINVAL;
        }
    }
    return 0;
}
