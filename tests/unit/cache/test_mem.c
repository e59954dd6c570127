/*
 * Unit tests for the built-in memory storage (src/cache/mem.c), through its ops table: fills
 * of known and unknown length read back through the cursor across chunks, metadata copies,
 * purge, replacement under a reader, the byte budget under many inserts (and after a
 * metadata refresh), the memory coming back (stats.held), max_object, abandon, evicted
 * objects still readable while held, key hash collisions; the S3-FIFO queues (a hot set
 * survives a scan, a key used twice outlives one used once) and TinyLFU admission; fills
 * streamed to reader threads that wait and are woken, and a mixed stress for TSan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include <cmocka.h>

#include "cache/cache_int.h"
#include "core/assert.h"
#include "weir/error.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

/* ---- helpers ---- */

static uint64_t hash_of(struct weir_iov k)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < k.len; i++) {
        h ^= (unsigned char)k.base[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* The byte at off of a body made with salt (no short period, so a misplaced read shows). */
static char pat(uint32_t salt, uint64_t off)
{
    uint64_t x = (off + 1u) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)salt * 0xc2b2ae3d27d4eb4full);
    x ^= x >> 29;
    return (char)(x >> 24);
}

static void make_pat(char *buf, uint32_t salt, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        buf[i] = pat(salt, off + i);
    }
}

/* The offset of the first byte of d (at off) that is not salt's, or UINT64_MAX. */
static uint64_t bad_byte(struct weir_iov d, uint32_t salt, uint64_t off)
{
    for (size_t i = 0; i < d.len; i++) {
        if (d.base[i] != pat(salt, off + i)) {
            return off + i;
        }
    }
    return UINT64_MAX;
}

static struct weir_cache_storage *mem_new(uint64_t capacity, uint64_t max_object)
{
    struct weir_cache_storage *st = NULL;
    assert_int_equal(weir__cache_mem_new(capacity, max_object, &st), 0);
    assert_non_null(st);
    return st;
}

static struct weir_cache_stats stats_of(struct weir_cache_storage *st)
{
    struct weir_cache_stats s;
    weir__cache_mem_stats(st, &s);
    return s;
}

/* Metadata copies land here: one lookup's worth (the tests copy it out if they keep it). */
struct scratch {
    char buf[512];
    unsigned calls;
};

static void *scratch_alloc(void *arg, size_t len)
{
    struct scratch *s = arg;
    s->calls++;
    return len <= sizeof(s->buf) ? s->buf : NULL;
}

static void *no_alloc(void *arg, size_t len)
{
    (void)arg;
    (void)len;
    return NULL;
}

static struct weir_cache_obj *get(struct weir_cache_storage *st, const char *key)
{
    struct scratch s;
    struct weir_iov meta;
    struct weir_iov k = weir_iov_cstr(key);
    return st->ops->lookup(st, k, hash_of(k), scratch_alloc, &s, &meta);
}

/* Whether key is stored (a lookup: it counts as a use). */
static bool present(struct weir_cache_storage *st, const char *key)
{
    struct weir_cache_obj *o = get(st, key);
    if (o != NULL) {
        st->ops->release(o);
    }
    return o != NULL;
}

static struct weir_cache_obj *begin(struct weir_cache_storage *st, const char *key,
                                    const char *meta, uint64_t len)
{
    struct weir_cache_obj *o = NULL;
    struct weir_iov k = weir_iov_cstr(key);
    assert_int_equal(st->ops->begin_fill(st, k, hash_of(k), weir_iov_cstr(meta), len, &o), 0);
    assert_non_null(o);
    return o;
}

/* Appends body bytes [from, to) made with salt, piece bytes a call. */
static void append_pat(struct weir_cache_storage *st, struct weir_cache_obj *o, uint32_t salt,
                       uint64_t from, uint64_t to, size_t piece)
{
    static char buf[64 * 1024];
    assert_true(piece <= sizeof(buf));
    while (from < to) {
        size_t n = to - from < piece ? (size_t)(to - from) : piece;
        make_pat(buf, salt, from, n);
        assert_int_equal(st->ops->append(o, (struct weir_iov){buf, n}), 0);
        from += n;
    }
}

/* A complete object for key: len body bytes of salt (announced when known); a reference. */
static struct weir_cache_obj *put_ref(struct weir_cache_storage *st, const char *key,
                                      const char *meta, uint64_t len, bool known, uint32_t salt,
                                      size_t piece)
{
    struct weir_cache_obj *o = begin(st, key, meta, known ? len : UINT64_MAX);
    append_pat(st, o, salt, 0, len, piece);
    assert_int_equal(st->ops->finish(o), 0);
    return o;
}

static void put(struct weir_cache_storage *st, const char *key, uint64_t len, bool known,
                uint32_t salt)
{
    st->ops->release(put_ref(st, key, "m", len, known, salt, 1500));
}

/*
 * Reads o from c to its end, checking salt's bytes and consuming at most `consume` of each
 * piece; the number of DATA results in *pieces. Returns the body's length.
 */
static uint64_t read_rest(struct weir_cache_storage *st, struct weir_cache_obj *o,
                          struct weir_cache_cursor *c, uint32_t salt, size_t consume,
                          unsigned *pieces)
{
    for (;;) {
        struct weir_iov d;
        enum weir_cache_read r = st->ops->read(o, c, &d);
        if (r == WEIR_CACHE_READ_END) {
            return c->off;
        }
        assert_int_equal(r, WEIR_CACHE_READ_DATA);
        assert_true(d.len > 0);
        d.len = d.len < consume ? d.len : consume;
        uint64_t bad = bad_byte(d, salt, c->off);
        if (bad != UINT64_MAX) {
            fail_msg("wrong byte at offset %llu", (unsigned long long)bad);
        }
        c->off += d.len;
        if (pieces != NULL) {
            (*pieces)++;
        }
    }
}

static uint64_t read_all(struct weir_cache_storage *st, struct weir_cache_obj *o, uint32_t salt,
                         unsigned *pieces)
{
    struct weir_cache_cursor c;
    memset(&c, 0, sizeof(c));
    return read_rest(st, o, &c, salt, SIZE_MAX, pieces);
}

/* What an object of this key, metadata and body costs (stats.bytes), in a storage of its own. */
static uint64_t cost_of(const char *key, const char *meta, uint64_t len, bool known)
{
    struct weir_cache_storage *st = mem_new(64 * MIB, 8 * MIB);
    st->ops->release(put_ref(st, key, meta, len, known, 1, 4096));
    uint64_t bytes = stats_of(st).bytes;
    st->ops->free(st);
    return bytes;
}

struct counting_waiter {
    struct weir_cache_waiter w;
    int woken;
};

static void count_wake(struct weir_cache_waiter *w)
{
    WEIR_CONTAINER_OF(w, struct counting_waiter, w)->woken++;
}

static void waiter_init(struct counting_waiter *cw)
{
    memset(cw, 0, sizeof(*cw));
    cw->w.wake = count_wake;
}

static void key_name(char *buf, size_t size, const char *prefix, unsigned i)
{
    int n = snprintf(buf, size, "%s-%06u", prefix, i);
    assert_true(n > 0 && (size_t)n < size);
}

/* ---- construction ---- */

static void test_bad_arguments(void **state)
{
    (void)state;
    struct weir_cache_storage *st = (struct weir_cache_storage *)(uintptr_t)1;
    assert_int_equal(weir__cache_mem_new(0, 1, &st), WEIR_EINVAL);
    assert_null(st);
    assert_int_equal(weir__cache_mem_new(1000, 0, &st), WEIR_EINVAL);
    assert_int_equal(weir__cache_mem_new(1000, 1001, &st), WEIR_EINVAL);
    assert_null(st);

    struct weir_cache_stats s;
    memset(&s, 0xa5, sizeof(s));
    weir__cache_mem_stats(NULL, &s);
    assert_int_equal(s.capacity, 0);
    assert_int_equal(s.held, 0);
    assert_int_equal(weir__cache_mem_shards(NULL), 0);

    struct weir_cache *c = (struct weir_cache *)(uintptr_t)1;
    struct weir_cache_opts o = {.capacity = 0};
    assert_int_equal(weir_cache_new(&o, &c), WEIR_EINVAL);
    assert_null(c);
    o = (struct weir_cache_opts){.capacity = 1000, .max_object = 2000};
    assert_int_equal(weir_cache_new(&o, &c), WEIR_EINVAL);
    o = (struct weir_cache_opts){.capacity = 7}; /* max_object defaults to 7 / 8 = 0 */
    assert_int_equal(weir_cache_new(&o, &c), WEIR_EINVAL);
    assert_null(c);
    weir_cache_free(NULL);
}

static void test_shards_and_zone(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(1 * MIB, 128 * KIB);
    assert_int_equal(weir__cache_mem_shards(st), 1); /* a shard holds 8 of the largest */
    st->ops->free(st);
    st = mem_new(64 * MIB, 64 * KIB);
    assert_int_equal(weir__cache_mem_shards(st), 16);
    assert_int_equal(stats_of(st).capacity, 64 * MIB);
    st->ops->free(st);

    /* A zone with the built-in storage, max_object defaulting to capacity / 8. */
    struct weir_cache *c = NULL;
    struct weir_cache_opts o = {.capacity = 4 * MIB};
    assert_int_equal(weir_cache_new(&o, &c), 0);
    assert_non_null(c);
    st = weir_cache_storage(c);
    assert_non_null(st);
    assert_string_equal(st->ops->name, "memory");
    assert_int_equal(weir__cache_mem_shards(st), 1);

    struct weir_iov k = WEIR_IOV_LIT("GET http://example.com/");
    struct weir_cache_obj *w = NULL;
    assert_int_equal(
        st->ops->begin_fill(st, k, weir__cache_hash(c, k), WEIR_IOV_LIT("head"), UINT64_MAX, &w),
        0);
    append_pat(st, w, 3, 0, 5000, 1000);
    assert_int_equal(st->ops->finish(w), 0);
    st->ops->release(w);
    struct weir_cache_stats s;
    weir_cache_stats(c, &s);
    assert_int_equal(s.capacity, 4 * MIB);
    assert_int_equal(s.objects, 1);
    assert_int_equal(s.inserts, 1);
    assert_int_equal(weir_cache_purge(c, k), 1);
    assert_int_equal(weir_cache_purge(c, k), 0);
    weir_cache_stats(c, &s);
    assert_int_equal(s.objects, 0);
    assert_int_equal(s.purges, 1);
    assert_int_equal(s.held, 0);
    weir_cache_free(c);
}

/* ---- fills and reads ---- */

static void test_unknown_length_fill(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(4 * MIB, 512 * KIB);
    const char *meta = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n";
    struct weir_cache_obj *w = begin(st, "k1", meta, UINT64_MAX);
    bool complete = true, failed = true;
    assert_int_equal(st->ops->length(w, &complete, &failed), 0);
    assert_false(complete);
    assert_false(failed);
    append_pat(st, w, 7, 0, 10000, 777); /* two chunks: 4 KiB, then 8 KiB */
    assert_int_equal(st->ops->length(w, &complete, &failed), 10000);
    assert_false(complete);
    assert_int_equal(st->ops->finish(w), 0);
    assert_int_equal(st->ops->length(w, &complete, &failed), 10000);
    assert_true(complete);
    assert_false(failed);
    st->ops->release(w);

    struct scratch s = {.calls = 0};
    struct weir_iov m = {NULL, 0};
    struct weir_iov k = WEIR_IOV_LIT("k1");
    struct weir_cache_obj *o = st->ops->lookup(st, k, hash_of(k), scratch_alloc, &s, &m);
    assert_non_null(o);
    assert_int_equal(s.calls, 1);
    assert_ptr_equal(m.base, s.buf); /* a copy, in the caller's memory */
    assert_int_equal(m.len, strlen(meta));
    assert_memory_equal(m.base, meta, m.len);
    unsigned pieces = 0;
    assert_int_equal(read_all(st, o, 7, &pieces), 10000);
    assert_true(pieces >= 2);
    /* a second cursor, consuming a little at a time across the chunk boundary */
    struct weir_cache_cursor c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(read_rest(st, o, &c, 7, 333, NULL), 10000);
    st->ops->release(o);

    /* a miss clears *meta */
    m = (struct weir_iov){"x", 1};
    k = WEIR_IOV_LIT("k2");
    assert_null(st->ops->lookup(st, k, hash_of(k), scratch_alloc, &s, &m));
    assert_null(m.base);
    assert_int_equal(m.len, 0);
    struct weir_cache_stats t = stats_of(st);
    assert_int_equal(t.hits, 1);
    assert_int_equal(t.misses, 1);
    assert_int_equal(t.objects, 1);
    assert_int_equal(t.inserts, 1);
    assert_true(t.bytes > 10000 && t.bytes <= t.capacity);
    assert_int_equal(t.held, t.bytes);
    st->ops->free(st);
}

static void test_known_length_600k(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(8 * MIB, 1 * MIB);
    const uint64_t len = 600 * KIB;
    struct weir_cache_obj *w = begin(st, "big", "meta", len);
    append_pat(st, w, 11, 0, len, 10000); /* pieces that do not line up with the chunks */
    assert_int_equal(st->ops->finish(w), 0);
    st->ops->release(w);

    struct weir_cache_obj *o = get(st, "big");
    assert_non_null(o);
    unsigned pieces = 0;
    assert_int_equal(read_all(st, o, 11, &pieces), len);
    assert_true(pieces >= 3); /* at most 256 KiB a chunk */
    struct weir_cache_cursor c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(read_rest(st, o, &c, 11, 4093, NULL), len);
    /* reading again at the end says so */
    struct weir_iov d = {"x", 1};
    assert_int_equal(st->ops->read(o, &c, &d), WEIR_CACHE_READ_END);
    assert_int_equal(d.len, 0);
    bool complete = false, failed = true;
    assert_int_equal(st->ops->length(o, &complete, &failed), len);
    assert_true(complete);
    assert_false(failed);
    st->ops->release(o);
    st->ops->free(st);
}

static void test_empty_and_short_bodies(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(1 * MIB, 128 * KIB);
    struct weir_cache_obj *o = NULL;
    put(st, "empty-known", 0, true, 1);
    put(st, "empty-unknown", 0, false, 1);
    st->ops->release(put_ref(st, "no-meta", NULL, 10, true, 1, 10)); /* meta {NULL, 0} */
    struct scratch sc;
    struct weir_iov m = {"x", 1};
    struct weir_iov k = WEIR_IOV_LIT("no-meta");
    o = st->ops->lookup(st, k, hash_of(k), scratch_alloc, &sc, &m);
    assert_non_null(o);
    assert_int_equal(m.len, 0);
    st->ops->release(o);
    o = get(st, "empty-known");
    assert_non_null(o);
    assert_int_equal(read_all(st, o, 1, NULL), 0);
    st->ops->release(o);
    o = get(st, "empty-unknown");
    assert_non_null(o);
    assert_int_equal(read_all(st, o, 1, NULL), 0);
    st->ops->release(o);

    /* more than announced, then short of it: errors, and the caller abandons */
    struct weir_cache_obj *w = begin(st, "short", "m", 100);
    append_pat(st, w, 2, 0, 50, 50);
    char more[51];
    make_pat(more, 2, 50, sizeof(more));
    assert_int_equal(st->ops->append(w, (struct weir_iov){more, sizeof(more)}), WEIR_EINVAL);
    assert_int_equal(st->ops->finish(w), WEIR_EINVAL);
    st->ops->abandon(w);
    st->ops->release(w);
    assert_false(present(st, "short"));
    assert_int_equal(stats_of(st).objects, 3);
    st->ops->free(st);
}

static void test_update_meta(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(1 * MIB, 128 * KIB);
    st->ops->release(put_ref(st, "k", "old head", 3000, true, 5, 1000));
    struct scratch s1, s2;
    struct weir_iov m1, m2;
    struct weir_iov k = WEIR_IOV_LIT("k");
    struct weir_cache_obj *o = st->ops->lookup(st, k, hash_of(k), scratch_alloc, &s1, &m1);
    assert_non_null(o);
    uint64_t before = stats_of(st).bytes;
    assert_int_equal(st->ops->update_meta(st, o, WEIR_IOV_LIT("a new, longer head")), 0);
    assert_int_equal(stats_of(st).bytes, before + 10); /* the charge follows the metadata */
    assert_int_equal(stats_of(st).held, before + 10);  /* and so does the allocation */
    assert_memory_equal(m1.base, "old head", 8);       /* the reader's copy is its own */
    struct weir_cache_obj *o2 = st->ops->lookup(st, k, hash_of(k), scratch_alloc, &s2, &m2);
    assert_ptr_equal(o2, o);
    assert_int_equal(m2.len, 18);
    assert_memory_equal(m2.base, "a new, longer head", 18);
    assert_int_equal(st->ops->update_meta(st, o, (struct weir_iov){NULL, 0}), 0);
    assert_int_equal(stats_of(st).bytes, before - 8);
    assert_int_equal(read_all(st, o2, 5, NULL), 3000);
    st->ops->release(o2);
    st->ops->release(o);
    assert_int_equal(st->ops->purge(st, k, hash_of(k)), 1);
    assert_int_equal(stats_of(st).bytes, 0);
    st->ops->free(st);
}

/* Metadata refreshed to a much larger size must not leave the shard over its budget. */
static void test_update_meta_keeps_budget(void **state)
{
    (void)state;
    uint64_t cost = cost_of("key-000000", "m", 2000, true);
    uint64_t cap = 20 * cost;
    struct weir_cache_storage *st = mem_new(cap, cap / 4);
    char key[32];
    for (unsigned i = 0; i < 20; i++) {
        key_name(key, sizeof(key), "key", i);
        put(st, key, 2000, true, i);
    }
    assert_int_equal(stats_of(st).objects, 20);
    static char head[8000];
    memset(head, 'h', sizeof(head));
    struct weir_cache_obj *o = get(st, "key-000005");
    assert_non_null(o);
    assert_int_equal(st->ops->update_meta(st, o, (struct weir_iov){head, sizeof(head)}), 0);
    struct weir_cache_stats s = stats_of(st);
    assert_true(s.bytes <= s.capacity);
    assert_true(s.evictions > 0);
    assert_int_equal(read_all(st, o, 5, NULL), 2000);
    st->ops->release(o);
    st->ops->free(st);
}

/* A 304's fields may not make an object larger than max_object: refused, the old head kept. */
static void test_update_meta_past_max_object(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(1 * MIB, 16 * KIB);
    st->ops->release(put_ref(st, "k", "head", 15000, true, 3, 1000));
    struct scratch s1, s2;
    struct weir_iov m1, m2;
    struct weir_iov k = WEIR_IOV_LIT("k");
    struct weir_cache_obj *o = st->ops->lookup(st, k, hash_of(k), scratch_alloc, &s1, &m1);
    assert_non_null(o);
    struct weir_cache_stats before = stats_of(st);
    static char head[2000];
    memset(head, 'h', sizeof(head));
    assert_int_equal(st->ops->update_meta(st, o, (struct weir_iov){head, sizeof(head)}),
                     WEIR_ELIMIT);
    struct weir_cache_stats after = stats_of(st);
    assert_int_equal(after.bytes, before.bytes);
    assert_int_equal(after.held, before.held);
    assert_int_equal(after.too_large, before.too_large + 1);
    struct weir_cache_obj *o2 = st->ops->lookup(st, k, hash_of(k), scratch_alloc, &s2, &m2);
    assert_ptr_equal(o2, o);
    assert_int_equal(m2.len, 4);
    assert_memory_equal(m2.base, "head", 4);
    /* a head that still fits is taken */
    assert_int_equal(st->ops->update_meta(st, o, (struct weir_iov){head, 200}), 0);
    assert_int_equal(stats_of(st).held, before.held + 196);
    st->ops->release(o2);
    st->ops->release(o);
    assert_int_equal(st->ops->purge(st, k, hash_of(k)), 1);
    assert_int_equal(stats_of(st).held, 0);
    st->ops->free(st);
}

static void test_lookup_without_memory(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(1 * MIB, 128 * KIB);
    put(st, "k", 100, true, 1);
    struct weir_iov m = {"x", 1};
    struct weir_iov k = WEIR_IOV_LIT("k");
    /* no memory for the metadata's copy: a miss, and no reference taken */
    assert_null(st->ops->lookup(st, k, hash_of(k), no_alloc, NULL, &m));
    assert_null(m.base);
    assert_int_equal(st->ops->purge(st, k, hash_of(k)), 1);
    assert_int_equal(stats_of(st).held, 0);
    st->ops->free(st);
}

/* ---- purge, replacement, eviction, memory ---- */

static void test_purge(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(1 * MIB, 128 * KIB);
    put(st, "a", 9000, false, 1);
    put(st, "b", 100, true, 2);
    struct weir_cache_obj *o = get(st, "a");
    assert_non_null(o);
    struct weir_iov k = WEIR_IOV_LIT("a");
    assert_int_equal(st->ops->purge(st, k, hash_of(k)), 1);
    assert_int_equal(st->ops->purge(st, k, hash_of(k)), 0);
    assert_false(present(st, "a"));
    assert_true(present(st, "b"));
    struct weir_cache_stats s = stats_of(st);
    assert_int_equal(s.purges, 1);
    assert_int_equal(s.objects, 1);
    assert_true(s.held > s.bytes); /* the purged object is still read */
    assert_int_equal(read_all(st, o, 1, NULL), 9000);
    st->ops->release(o);
    s = stats_of(st);
    assert_int_equal(s.held, s.bytes);
    k = WEIR_IOV_LIT("b");
    assert_int_equal(st->ops->purge(st, k, hash_of(k)), 1);
    assert_int_equal(stats_of(st).held, 0);
    assert_int_equal(stats_of(st).bytes, 0);
    st->ops->free(st);
}

static void test_replace_under_reader(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(4 * MIB, 512 * KIB);
    put(st, "k", 20000, false, 1);
    struct weir_cache_obj *old = get(st, "k");
    assert_non_null(old);
    struct weir_cache_cursor c;
    memset(&c, 0, sizeof(c));
    struct weir_iov d;
    assert_int_equal(st->ops->read(old, &c, &d), WEIR_CACHE_READ_DATA);
    c.off += d.len < 3000 ? d.len : 3000;

    /* a new fill replaces it at once, before it completes */
    struct weir_cache_obj *w = begin(st, "k", "new", 30000);
    struct weir_cache_obj *o = get(st, "k");
    assert_ptr_equal(o, w);
    assert_ptr_not_equal(o, old);
    st->ops->release(o);
    append_pat(st, w, 2, 0, 30000, 4096);
    assert_int_equal(st->ops->finish(w), 0);
    st->ops->release(w);
    assert_int_equal(stats_of(st).objects, 1);

    /* the old reader reads the old bytes to the end */
    assert_int_equal(read_rest(st, old, &c, 1, SIZE_MAX, NULL), 20000);
    st->ops->release(old);
    o = get(st, "k");
    assert_non_null(o);
    assert_int_equal(read_all(st, o, 2, NULL), 30000);
    st->ops->release(o);
    struct weir_cache_stats s = stats_of(st);
    assert_int_equal(s.held, s.bytes);
    st->ops->free(st);
}

/* A fill replaced while it still fills: its writer finishes it, its readers read it all. */
static void test_replace_while_filling(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(4 * MIB, 512 * KIB);
    struct weir_cache_obj *w1 = begin(st, "k", "one", UINT64_MAX);
    append_pat(st, w1, 1, 0, 5000, 1000);
    struct weir_cache_obj *r1 = get(st, "k");
    assert_ptr_equal(r1, w1);
    struct weir_cache_obj *w2 = begin(st, "k", "two", UINT64_MAX);
    append_pat(st, w1, 1, 5000, 50000, 1000); /* the replaced fill goes on */
    append_pat(st, w2, 2, 0, 7000, 1000);
    assert_int_equal(st->ops->finish(w1), 0);
    assert_int_equal(st->ops->finish(w2), 0);
    st->ops->release(w1);
    st->ops->release(w2);
    assert_int_equal(read_all(st, r1, 1, NULL), 50000);
    st->ops->release(r1);
    struct weir_cache_obj *o = get(st, "k");
    assert_non_null(o);
    assert_int_equal(read_all(st, o, 2, NULL), 7000);
    st->ops->release(o);
    struct weir_cache_stats s = stats_of(st);
    assert_int_equal(s.objects, 1);
    assert_int_equal(s.held, s.bytes);
    st->ops->free(st);
}

static uint32_t next_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

/* 3000 fills of 0..10 KiB into 16 shards of 256 KiB: the budget holds after every one. */
static void test_eviction_keeps_budget(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(4 * MIB, 16 * KIB);
    assert_int_equal(weir__cache_mem_shards(st), 16);
    uint64_t seed = 7;
    char key[32];
    enum { N = 3000 };
    for (unsigned i = 0; i < N; i++) {
        key_name(key, sizeof(key), "key", i);
        uint32_t len = next_rand(&seed) % (10 * KIB);
        struct weir_cache_obj *w = begin(st, key, "meta", i % 2 ? len : UINT64_MAX);
        append_pat(st, w, i, 0, len, 1 + next_rand(&seed) % 3000);
        assert_int_equal(st->ops->finish(w), 0);
        st->ops->release(w);
        struct weir_cache_stats s = stats_of(st);
        assert_true(s.bytes <= s.capacity);
        assert_int_equal(s.held, s.bytes);
    }
    struct weir_cache_stats s = stats_of(st);
    assert_true(s.evictions > 0);
    assert_int_equal(s.inserts + s.rejected, N);
    assert_int_equal(s.objects + s.evictions + s.rejected, N);
    /* the survivors read back whole; then every key is purged and the memory is back */
    unsigned found = 0;
    for (unsigned i = 0; i < N; i++) {
        key_name(key, sizeof(key), "key", i);
        struct weir_cache_obj *o = get(st, key);
        if (o != NULL) {
            found++;
            (void)read_all(st, o, i, NULL);
            st->ops->release(o);
        }
        struct weir_iov k = weir_iov_cstr(key);
        (void)st->ops->purge(st, k, hash_of(k));
    }
    assert_int_equal(found, s.objects);
    s = stats_of(st);
    assert_int_equal(s.objects, 0);
    assert_int_equal(s.bytes, 0);
    assert_int_equal(s.held, 0);
    st->ops->free(st);
}

static void test_evicted_object_stays_readable(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(200 * KIB, 40 * KIB);
    put(st, "victim", 20000, false, 99);
    struct weir_cache_obj *o = get(st, "victim");
    assert_non_null(o);
    char key[32];
    for (unsigned i = 0; i < 60; i++) {
        key_name(key, sizeof(key), "other", i);
        put(st, key, 5000, true, i);
    }
    struct weir_cache_stats s = stats_of(st);
    assert_true(s.evictions > 0);
    assert_true(s.bytes <= s.capacity);
    assert_false(present(st, "victim"));
    assert_true(s.held > s.bytes); /* the evicted object is still held */
    assert_int_equal(read_all(st, o, 99, NULL), 20000);
    st->ops->release(o);
    s = stats_of(st);
    assert_int_equal(s.held, s.bytes);
    st->ops->free(st); /* what remains is freed with the storage (ASan checks) */
}

/* References held on many objects, some evicted, some purged, all released: held is 0. */
static void test_memory_returns(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(256 * KIB, 32 * KIB);
    enum { N = 200 };
    static struct weir_cache_obj *refs[N];
    char key[32];
    for (unsigned i = 0; i < N; i++) {
        key_name(key, sizeof(key), "k", i % 150); /* some replaced */
        refs[i] = put_ref(st, key, "m", 3000 + i * 10, i % 3 == 0, i, 1000);
    }
    assert_true(stats_of(st).held > stats_of(st).bytes);
    for (unsigned i = 0; i < N; i++) {
        assert_int_equal(read_all(st, refs[i], i, NULL), 3000 + i * 10);
        st->ops->release(refs[i]);
    }
    struct weir_cache_stats s = stats_of(st);
    assert_int_equal(s.held, s.bytes);
    for (unsigned i = 0; i < 150; i++) {
        key_name(key, sizeof(key), "k", i);
        struct weir_iov k = weir_iov_cstr(key);
        (void)st->ops->purge(st, k, hash_of(k));
    }
    assert_int_equal(stats_of(st).held, 0);
    st->ops->free(st);
}

/* ---- max_object ---- */

/* The fixed cost of key+meta: bytes of an empty fill that has not appended. */
static uint64_t fixed_cost(struct weir_cache_storage *st, const char *key, const char *meta)
{
    uint64_t before = stats_of(st).bytes;
    struct weir_cache_obj *w = begin(st, key, meta, 0);
    uint64_t fixed = stats_of(st).bytes - before;
    st->ops->abandon(w);
    st->ops->release(w);
    return fixed;
}

static void test_max_object_known_length(void **state)
{
    (void)state;
    const uint64_t max = 100 * KIB;
    struct weir_cache_storage *st = mem_new(1 * MIB, max);
    uint64_t fixed = fixed_cost(st, "k", "m");
    assert_true(fixed > 2 && fixed < max);
    struct weir_cache_obj *w = NULL;
    struct weir_iov k = WEIR_IOV_LIT("k");
    assert_int_equal(st->ops->begin_fill(st, k, hash_of(k), WEIR_IOV_LIT("m"), 200 * KIB, &w),
                     WEIR_ELIMIT);
    assert_null(w);
    assert_int_equal(st->ops->begin_fill(st, k, hash_of(k), WEIR_IOV_LIT("m"), max - fixed + 1, &w),
                     WEIR_ELIMIT);
    assert_int_equal(stats_of(st).too_large, 2);
    /* Near the limit: whatever begin_fill accepts must then be storable in full. */
    unsigned accepted = 0;
    for (uint64_t len = max - fixed - 64; len <= max - fixed; len++) {
        int rc = st->ops->begin_fill(st, k, hash_of(k), WEIR_IOV_LIT("m"), len, &w);
        if (rc != 0) {
            assert_int_equal(rc, WEIR_ELIMIT);
            continue;
        }
        accepted++;
        append_pat(st, w, (uint32_t)len, 0, len, 4096);
        assert_int_equal(st->ops->finish(w), 0);
        st->ops->release(w);
        struct weir_cache_obj *o = get(st, "k");
        assert_non_null(o);
        assert_int_equal(read_all(st, o, (uint32_t)len, NULL), len);
        st->ops->release(o);
    }
    assert_true(accepted > 0);
    st->ops->free(st);
}

static void test_max_object_unknown_length(void **state)
{
    (void)state;
    const uint64_t max = 100 * KIB;
    struct weir_cache_storage *st = mem_new(1 * MIB, max);
    uint64_t fixed = fixed_cost(st, "k", "m");
    struct weir_cache_obj *w = begin(st, "k", "m", UINT64_MAX);
    struct weir_cache_obj *r = get(st, "k");
    assert_non_null(r);
    static char buf[KIB];
    uint64_t stored = 0;
    int rc = 0;
    for (unsigned i = 0; i < 200 && rc == 0; i++) {
        make_pat(buf, 4, stored, sizeof(buf));
        rc = st->ops->append(w, (struct weir_iov){buf, sizeof(buf)});
        stored += rc == 0 ? sizeof(buf) : 0;
    }
    assert_int_equal(rc, WEIR_ELIMIT);
    assert_int_equal(stats_of(st).too_large, 1);
    assert_true(stored <= max - fixed);
    /* the limit is on the object's bytes, not on the next chunk's doubling */
    if (stored < (max - fixed) * 9 / 10) {
        fail_msg("refused at %llu body bytes of %llu allowed", (unsigned long long)stored,
                 (unsigned long long)(max - fixed));
    }
    st->ops->abandon(w);
    st->ops->release(w);
    /* the reader gets what was published, then the error */
    struct weir_cache_cursor c;
    memset(&c, 0, sizeof(c));
    struct weir_iov d;
    enum weir_cache_read res;
    while ((res = st->ops->read(r, &c, &d)) == WEIR_CACHE_READ_DATA) {
        assert_int_equal(bad_byte(d, 4, c.off), UINT64_MAX);
        c.off += d.len;
    }
    assert_int_equal(res, WEIR_CACHE_READ_ERROR);
    assert_int_equal(c.off, stored);
    st->ops->release(r);
    assert_false(present(st, "k"));
    assert_int_equal(stats_of(st).held, 0);
    st->ops->free(st);
}

/* ---- abandon and waiting ---- */

static void test_abandon(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(1 * MIB, 128 * KIB);
    struct weir_cache_obj *w = begin(st, "k", "m", 10000);
    append_pat(st, w, 8, 0, 3000, 1000);
    struct weir_cache_obj *r = get(st, "k");
    assert_ptr_equal(r, w);
    struct weir_cache_cursor c;
    memset(&c, 0, sizeof(c));
    struct weir_iov d;
    assert_int_equal(st->ops->read(r, &c, &d), WEIR_CACHE_READ_DATA);
    assert_int_equal(d.len, 3000);
    c.off += d.len;
    assert_int_equal(st->ops->read(r, &c, &d), WEIR_CACHE_READ_WAIT);
    struct counting_waiter cw;
    waiter_init(&cw);
    assert_true(st->ops->wait(r, c.off, &cw.w));
    st->ops->abandon(w);
    assert_int_equal(cw.woken, 1);
    st->ops->unwait(r, &cw.w); /* after the wake: harmless */
    assert_int_equal(st->ops->read(r, &c, &d), WEIR_CACHE_READ_ERROR);
    bool complete = true, failed = false;
    assert_int_equal(st->ops->length(r, &complete, &failed), 3000);
    assert_false(complete);
    assert_true(failed);
    assert_false(st->ops->wait(r, c.off, &cw.w)); /* nothing more will come */
    assert_false(present(st, "k"));
    assert_int_equal(stats_of(st).objects, 0);
    assert_int_equal(stats_of(st).bytes, 0);
    st->ops->release(w);
    st->ops->release(r);
    assert_int_equal(stats_of(st).held, 0);
    st->ops->free(st);
}

static void test_wait_and_unwait(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(1 * MIB, 128 * KIB);
    struct weir_cache_obj *w = begin(st, "k", "m", UINT64_MAX);
    struct counting_waiter a, b, c, d;
    waiter_init(&a);
    waiter_init(&b);
    waiter_init(&c);
    waiter_init(&d);
    assert_true(st->ops->wait(w, 0, &a.w));
    assert_true(st->ops->wait(w, 0, &b.w));
    assert_true(st->ops->wait(w, 0, &c.w));
    assert_true(st->ops->wait(w, 0, &d.w));
    st->ops->unwait(w, &d.w); /* the newest (the list's head) */
    st->ops->unwait(w, &b.w); /* one in the middle */
    st->ops->unwait(w, &b.w); /* twice: harmless */
    append_pat(st, w, 1, 0, 10, 10);
    assert_int_equal(a.woken, 1);
    assert_int_equal(b.woken, 0);
    assert_int_equal(c.woken, 1);
    assert_int_equal(d.woken, 0);
    /* data past off already: not registered */
    assert_false(st->ops->wait(w, 5, &a.w));
    assert_true(st->ops->wait(w, 10, &a.w));
    assert_true(st->ops->wait(w, 10, &b.w));
    append_pat(st, w, 1, 10, 20, 10);
    assert_int_equal(a.woken, 2);
    assert_int_equal(b.woken, 1);
    st->ops->unwait(w, &a.w);
    st->ops->unwait(w, &b.w);
    assert_true(st->ops->wait(w, 20, &a.w));
    assert_int_equal(st->ops->finish(w), 0); /* the end wakes too */
    assert_int_equal(a.woken, 3);
    assert_false(st->ops->wait(w, 20, &a.w)); /* complete */
    st->ops->release(w);
    st->ops->free(st);
}

/* ---- keys ---- */

static void test_hash_collisions(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(1 * MIB, 128 * KIB);
    static const char *const keys[] = {"alpha", "beta", "alph", "alphaa", ""};
    const uint64_t h = 0x0123456789abcdefull;
    for (unsigned i = 0; i < 5; i++) {
        struct weir_cache_obj *w = NULL;
        struct weir_iov k = weir_iov_cstr(keys[i]);
        assert_int_equal(st->ops->begin_fill(st, k, h, k, 100 + i, &w), 0);
        append_pat(st, w, i, 0, 100 + i, 64);
        assert_int_equal(st->ops->finish(w), 0);
        st->ops->release(w);
    }
    assert_int_equal(stats_of(st).objects, 5);
    struct scratch s;
    struct weir_iov m;
    for (unsigned i = 0; i < 5; i++) {
        struct weir_iov k = weir_iov_cstr(keys[i]);
        struct weir_cache_obj *o = st->ops->lookup(st, k, h, scratch_alloc, &s, &m);
        assert_non_null(o);
        assert_int_equal(m.len, k.len);
        assert_memory_equal(m.base, k.base, k.len);
        assert_int_equal(read_all(st, o, i, NULL), 100 + i);
        st->ops->release(o);
    }
    /* the same key under another hash is another key */
    struct weir_iov k = WEIR_IOV_LIT("alpha");
    assert_null(st->ops->lookup(st, k, h ^ 1u, scratch_alloc, &s, &m));
    assert_int_equal(st->ops->purge(st, k, h ^ 1u), 0);
    assert_int_equal(st->ops->purge(st, k, h), 1);
    assert_null(st->ops->lookup(st, k, h, scratch_alloc, &s, &m));
    k = WEIR_IOV_LIT("alphaa");
    struct weir_cache_obj *o = st->ops->lookup(st, k, h, scratch_alloc, &s, &m);
    assert_non_null(o);
    st->ops->release(o);
    assert_int_equal(stats_of(st).objects, 4);
    st->ops->free(st);
}

/* ---- S3-FIFO and TinyLFU ---- */

static void test_hot_set_survives_scan(void **state)
{
    (void)state;
    const uint64_t len = 1000;
    uint64_t cost = cost_of("hot-000000", "m", len, true);
    struct weir_cache_storage *st = mem_new(100 * cost, 100 * cost / 8);
    assert_int_equal(weir__cache_mem_shards(st), 1);
    char key[32];
    for (unsigned i = 0; i < 50; i++) {
        key_name(key, sizeof(key), "hot", i);
        put(st, key, len, true, i);
    }
    for (unsigned round = 0; round < 5; round++) {
        for (unsigned i = 0; i < 50; i++) {
            key_name(key, sizeof(key), "hot", i);
            assert_true(present(st, key));
        }
    }
    for (unsigned i = 0; i < 10000; i++) {
        key_name(key, sizeof(key), "cld", i);
        put(st, key, len, true, i);
    }
    struct weir_cache_stats s = stats_of(st);
    assert_true(s.evictions + s.rejected >= 10000 - 50); /* evicted, or refused at the door */
    assert_true(s.bytes <= s.capacity);
    unsigned hot = 0, cold = 0;
    for (unsigned i = 0; i < 50; i++) {
        key_name(key, sizeof(key), "hot", i);
        hot += present(st, key);
    }
    for (unsigned i = 0; i < 10000; i++) {
        key_name(key, sizeof(key), "cld", i);
        cold += present(st, key);
    }
    print_message("hot keys left: %u of 50; cold keys left: %u of 10000\n", hot, cold);
    assert_true(hot >= 45);
    assert_true(cold <= 55);
    st->ops->free(st);
}

/* Fills cold keys until the first eviction; returns how many it filled. */
static unsigned fill_until_eviction(struct weir_cache_storage *st, uint64_t len)
{
    uint64_t ev = stats_of(st).evictions;
    char key[32];
    for (unsigned i = 0; i < 1000; i++) {
        key_name(key, sizeof(key), "cold", i);
        put(st, key, len, true, i);
        if (stats_of(st).evictions > ev) {
            return i + 1;
        }
    }
    fail_msg("no eviction");
    return 0;
}

static void test_used_twice_outlives_used_once(void **state)
{
    (void)state;
    const uint64_t len = 1000;
    uint64_t cost = cost_of("once-00000", "m", len, true);
    struct weir_cache_storage *st = mem_new(20 * cost, 20 * cost / 8);
    /* "twice" is older: first out under plain FIFO */
    put(st, "twice-0000", len, true, 1);
    put(st, "once-00000", len, true, 2);
    put(st, "never-0000", len, true, 3);
    struct weir_cache_obj *o = get(st, "twice-0000");
    st->ops->release(o);
    o = get(st, "twice-0000");
    st->ops->release(o);
    o = get(st, "once-00000");
    st->ops->release(o);
    unsigned n = fill_until_eviction(st, len);
    assert_true(n >= 15);
    assert_int_equal(stats_of(st).evictions, 1);
    assert_false(present(st, "once-00000"));
    assert_true(present(st, "twice-0000"));
    assert_true(present(st, "never-0000")); /* not yet: "once" went first */
    /* "twice" is in the main queue now: a long scan of cold keys does not reach it */
    char key[32];
    for (unsigned i = 0; i < 500; i++) {
        key_name(key, sizeof(key), "scan", i);
        put(st, key, len, true, i);
    }
    assert_true(present(st, "twice-0000"));
    assert_false(present(st, "never-0000"));
    st->ops->free(st);
}

/*
 * TinyLFU: four keys fetched three times each fill the shard; a newcomer fetched once would
 * evict exactly one of them, whose estimate (3) is higher than its own (1): it is refused.
 */
static void test_admission_refuses_rare_newcomer(void **state)
{
    (void)state;
    const uint64_t len = 4000;
    uint64_t cost = cost_of("freq-0", "m", len, true);
    struct weir_cache_storage *st = mem_new(4 * cost + cost / 2, cost);
    assert_int_equal(weir__cache_mem_shards(st), 1);
    char key[32];
    for (unsigned round = 0; round < 3; round++) {
        for (unsigned i = 0; i < 4; i++) {
            int n = snprintf(key, sizeof(key), "freq-%u", i);
            assert_true(n > 0);
            put(st, key, len, true, i); /* each fill replaces the last */
        }
    }
    struct weir_cache_stats s = stats_of(st);
    assert_int_equal(s.objects, 4);
    assert_int_equal(s.evictions, 0);
    put(st, "rare-0", len, true, 9);
    s = stats_of(st);
    unsigned frequent = 0;
    for (unsigned i = 0; i < 4; i++) {
        int n = snprintf(key, sizeof(key), "freq-%u", i);
        assert_true(n > 0);
        frequent += present(st, key);
    }
    bool rare = present(st, "rare-0");
    assert_true(s.bytes <= s.capacity);
    assert_int_equal(s.rejected, 1);
    assert_false(rare);
    assert_int_equal(frequent, 4);
    st->ops->free(st);
}

/* ---- streaming across threads ---- */

#define STREAM_LEN     (1u * MIB)
#define STREAM_PIECE   1024u
#define STREAM_READERS 4
#define WAIT_SECONDS   5

static void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    assert_int_equal(pthread_condattr_init(&a), 0);
    assert_int_equal(pthread_condattr_setclock(&a, CLOCK_MONOTONIC), 0);
    assert_int_equal(pthread_cond_init(cv, &a), 0);
    assert_int_equal(pthread_condattr_destroy(&a), 0);
}

struct reader;

struct stream {
    struct weir_cache_storage *st;
    struct weir_cache_obj *fill;
    pthread_barrier_t start;
    uint32_t salt;
    int writer_rc;
    bool stalled; /* the readers did not catch up within the bound */
    struct reader *readers;
};

struct reader {
    pthread_t t;
    struct stream *s;
    struct weir_cache_waiter w;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool woken;
    _Atomic uint64_t progress; /* bytes read (UINT64_MAX once done), for the writer */
    /* results, checked by the main thread (cmocka's asserts stay on it) */
    const char *err;
    uint64_t got, bad_off;
    unsigned waits;
};

static void reader_wake(struct weir_cache_waiter *w)
{
    struct reader *r = WEIR_CONTAINER_OF(w, struct reader, w);
    pthread_mutex_lock(&r->mu);
    r->woken = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Blocks until woken; false after WAIT_SECONDS. */
static bool reader_block(struct reader *r)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return false;
    }
    ts.tv_sec += WAIT_SECONDS;
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    while (!r->woken && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    bool woken = r->woken;
    pthread_mutex_unlock(&r->mu);
    return woken;
}

/* One read step: true to go on. */
static bool reader_step(struct reader *r, struct weir_cache_obj *o, struct weir_cache_cursor *c)
{
    const struct weir_cache_storage_ops *ops = r->s->st->ops;
    struct weir_iov d;
    switch (ops->read(o, c, &d)) {
    case WEIR_CACHE_READ_DATA:
        r->bad_off = bad_byte(d, r->s->salt, c->off);
        if (r->bad_off != UINT64_MAX) {
            r->err = "wrong byte";
            return false;
        }
        c->off += d.len;
        atomic_store_explicit(&r->progress, c->off, memory_order_release);
        return true;
    case WEIR_CACHE_READ_END:
        return false;
    case WEIR_CACHE_READ_ERROR:
        r->err = "read error";
        return false;
    case WEIR_CACHE_READ_WAIT:
        break;
    }
    pthread_mutex_lock(&r->mu);
    r->woken = false; /* not registered now: no wake can be on its way */
    pthread_mutex_unlock(&r->mu);
    if (!ops->wait(o, c->off, &r->w)) {
        return true; /* it grew meanwhile */
    }
    r->waits++;
    bool woken = reader_block(r);
    ops->unwait(o, &r->w); /* harmless after the wake; needed after a timeout */
    if (!woken) {
        r->err = "not woken within the bound (lost wakeup?)";
        return false;
    }
    return true;
}

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    struct weir_cache_storage *st = r->s->st;
    struct scratch sc;
    struct weir_iov meta;
    struct weir_iov k = WEIR_IOV_LIT("stream");
    struct weir_cache_obj *o = st->ops->lookup(st, k, hash_of(k), scratch_alloc, &sc, &meta);
    (void)pthread_barrier_wait(&r->s->start);
    if (o == NULL) {
        r->err = "lookup missed the fill";
        return NULL;
    }
    struct weir_cache_cursor c;
    memset(&c, 0, sizeof(c));
    while (reader_step(r, o, &c)) {
    }
    r->got = c.off;
    atomic_store_explicit(&r->progress, UINT64_MAX, memory_order_release);
    st->ops->release(o);
    return NULL;
}

/*
 * Waits (bounded) until every reader has read `upto`. Readers that were caught up are blocked
 * in wait() then, so a lost wakeup shows as a stall here, not only as a late read at the end.
 */
static bool readers_caught_up(struct stream *s, uint64_t upto)
{
    struct timespec start, now;
    if (clock_gettime(CLOCK_MONOTONIC, &start) != 0) {
        return false;
    }
    for (;;) {
        unsigned behind = 0;
        for (unsigned i = 0; i < STREAM_READERS; i++) {
            behind += atomic_load_explicit(&s->readers[i].progress, memory_order_acquire) < upto;
        }
        if (behind == 0) {
            return true;
        }
        if (clock_gettime(CLOCK_MONOTONIC, &now) != 0 || now.tv_sec - start.tv_sec > WAIT_SECONDS) {
            return false;
        }
        struct timespec ts = {0, 50000};
        (void)nanosleep(&ts, NULL);
    }
}

static void *writer_main(void *arg)
{
    struct stream *s = arg;
    char buf[STREAM_PIECE];
    (void)pthread_barrier_wait(&s->start);
    for (uint64_t off = 0; off < STREAM_LEN && s->writer_rc == 0; off += STREAM_PIECE) {
        make_pat(buf, s->salt, off, sizeof(buf));
        s->writer_rc = s->st->ops->append(s->fill, (struct weir_iov){buf, sizeof(buf)});
        if ((off + STREAM_PIECE) % (64u * KIB) == 0 && !readers_caught_up(s, off + STREAM_PIECE)) {
            s->stalled = true;
            s->st->ops->abandon(s->fill); /* lets the stuck readers go */
            return NULL;
        }
        if (off % (4u * STREAM_PIECE) == 0) {
            struct timespec ts = {0, 20000};
            (void)nanosleep(&ts, NULL);
        }
    }
    if (s->writer_rc == 0) {
        s->writer_rc = s->st->ops->finish(s->fill);
    }
    return NULL;
}

static void stream_once(bool known, uint32_t salt)
{
    struct stream s = {.st = mem_new(16 * MIB, 2 * MIB), .salt = salt};
    s.fill = begin(s.st, "stream", "m", known ? STREAM_LEN : UINT64_MAX);
    assert_int_equal(pthread_barrier_init(&s.start, NULL, STREAM_READERS + 1), 0);
    static struct reader rs[STREAM_READERS];
    memset(rs, 0, sizeof(rs));
    s.readers = rs;
    for (unsigned i = 0; i < STREAM_READERS; i++) {
        rs[i].s = &s;
        atomic_init(&rs[i].progress, 0);
        rs[i].w.wake = reader_wake;
        assert_int_equal(pthread_mutex_init(&rs[i].mu, NULL), 0);
        cond_init_monotonic(&rs[i].cv);
        assert_int_equal(pthread_create(&rs[i].t, NULL, reader_main, &rs[i]), 0);
    }
    pthread_t wt;
    assert_int_equal(pthread_create(&wt, NULL, writer_main, &s), 0);
    assert_int_equal(pthread_join(wt, NULL), 0);
    for (unsigned i = 0; i < STREAM_READERS; i++) {
        assert_int_equal(pthread_join(rs[i].t, NULL), 0);
    }
    if (s.stalled) {
        fail_msg("the readers did not catch up within %d s (a lost wakeup?)", WAIT_SECONDS);
    }
    unsigned waits = 0;
    for (unsigned i = 0; i < STREAM_READERS; i++) {
        if (rs[i].err != NULL) {
            fail_msg("reader %u: %s (read %llu bytes; first wrong byte at %lld)", i, rs[i].err,
                     (unsigned long long)rs[i].got, (long long)rs[i].bad_off);
        }
        assert_int_equal(rs[i].got, STREAM_LEN);
        waits += rs[i].waits;
        assert_int_equal(pthread_mutex_destroy(&rs[i].mu), 0);
        assert_int_equal(pthread_cond_destroy(&rs[i].cv), 0);
    }
    assert_int_equal(s.writer_rc, 0);
    print_message("%s length: %u waits\n", known ? "known" : "unknown", waits);
    assert_int_equal(pthread_barrier_destroy(&s.start), 0);
    s.st->ops->release(s.fill);
    struct weir_cache_stats t = stats_of(s.st);
    assert_int_equal(t.held, t.bytes);
    s.st->ops->free(s.st);
}

static void test_stream_to_reader_threads(void **state)
{
    (void)state;
    for (uint32_t round = 0; round < 3; round++) {
        stream_once(false, 100 + round);
        stream_once(true, 200 + round);
    }
}

/* ---- a mixed stress (for TSan): fills, lookups, reads, purges on shared keys ---- */

#define STRESS_THREADS 4
#define STRESS_KEYS    48
#define STRESS_OPS     1500

struct stress {
    struct weir_cache_storage *st;
    unsigned id;
    const char *err;
};

/* A key's body: its length is in the metadata, its bytes follow the key's salt. */
static uint32_t stress_salt(unsigned key)
{
    return key * 7919u + 1u;
}

static void stress_fill(struct weir_cache_storage *st, unsigned key, uint32_t len, bool known)
{
    char name[32], meta[32];
    (void)snprintf(name, sizeof(name), "s%u", key);
    int ml = snprintf(meta, sizeof(meta), "%u", len);
    struct weir_iov k = weir_iov_cstr(name);
    struct weir_cache_obj *w = NULL;
    if (st->ops->begin_fill(st, k, hash_of(k), (struct weir_iov){meta, (size_t)ml},
                            known ? len : UINT64_MAX, &w) != 0) {
        return;
    }
    char buf[2048];
    int rc = 0;
    for (uint32_t off = 0; off < len && rc == 0; off += sizeof(buf)) {
        size_t n = len - off < sizeof(buf) ? len - off : sizeof(buf);
        make_pat(buf, stress_salt(key), off, n);
        rc = st->ops->append(w, (struct weir_iov){buf, n});
    }
    if (rc != 0 || st->ops->finish(w) != 0) {
        st->ops->abandon(w);
    }
    st->ops->release(w);
}

/* Reads what is there (not waiting on fills); returns an error or NULL. */
static const char *stress_read(struct weir_cache_storage *st, unsigned key)
{
    char name[32];
    (void)snprintf(name, sizeof(name), "s%u", key);
    struct weir_iov k = weir_iov_cstr(name);
    struct scratch sc;
    struct weir_iov meta;
    struct weir_cache_obj *o = st->ops->lookup(st, k, hash_of(k), scratch_alloc, &sc, &meta);
    if (o == NULL) {
        return NULL;
    }
    char lenbuf[32];
    size_t ml = meta.len < sizeof(lenbuf) - 1 ? meta.len : sizeof(lenbuf) - 1;
    memcpy(lenbuf, meta.base, ml);
    lenbuf[ml] = '\0';
    uint64_t len = strtoull(lenbuf, NULL, 10);
    struct weir_cache_cursor c;
    memset(&c, 0, sizeof(c));
    struct weir_iov d;
    enum weir_cache_read r;
    const char *err = NULL;
    while ((r = st->ops->read(o, &c, &d)) == WEIR_CACHE_READ_DATA) {
        if (bad_byte(d, stress_salt(key), c.off) != UINT64_MAX) {
            err = "wrong byte";
            break;
        }
        c.off += d.len;
    }
    if (err == NULL && r == WEIR_CACHE_READ_END && c.off != len) {
        err = "wrong length";
    }
    st->ops->release(o);
    return err;
}

static void *stress_main(void *arg)
{
    struct stress *x = arg;
    uint64_t seed = x->id + 1u;
    for (unsigned i = 0; i < STRESS_OPS && x->err == NULL; i++) {
        uint32_t r = next_rand(&seed);
        unsigned key = r % STRESS_KEYS;
        switch ((r >> 8) % 4) {
        case 0:
            stress_fill(x->st, key, next_rand(&seed) % 20000, (r >> 12) & 1u);
            break;
        case 1: {
            char name[32];
            (void)snprintf(name, sizeof(name), "s%u", key);
            struct weir_iov k = weir_iov_cstr(name);
            (void)x->st->ops->purge(x->st, k, hash_of(k));
            break;
        }
        default:
            x->err = stress_read(x->st, key);
            break;
        }
    }
    return NULL;
}

static void test_threads_mixed(void **state)
{
    (void)state;
    struct weir_cache_storage *st = mem_new(512 * KIB, 32 * KIB);
    struct stress xs[STRESS_THREADS];
    pthread_t ts[STRESS_THREADS];
    for (unsigned i = 0; i < STRESS_THREADS; i++) {
        xs[i] = (struct stress){.st = st, .id = i};
        assert_int_equal(pthread_create(&ts[i], NULL, stress_main, &xs[i]), 0);
    }
    for (unsigned i = 0; i < STRESS_THREADS; i++) {
        assert_int_equal(pthread_join(ts[i], NULL), 0);
        if (xs[i].err != NULL) {
            fail_msg("thread %u: %s", i, xs[i].err);
        }
    }
    struct weir_cache_stats s = stats_of(st);
    assert_true(s.bytes <= s.capacity);
    assert_int_equal(s.held, s.bytes);
    for (unsigned key = 0; key < STRESS_KEYS; key++) {
        char name[32];
        (void)snprintf(name, sizeof(name), "s%u", key);
        struct weir_iov k = weir_iov_cstr(name);
        (void)st->ops->purge(st, k, hash_of(k));
    }
    assert_int_equal(stats_of(st).held, 0);
    st->ops->free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_shards_and_zone),
        cmocka_unit_test(test_unknown_length_fill),
        cmocka_unit_test(test_known_length_600k),
        cmocka_unit_test(test_empty_and_short_bodies),
        cmocka_unit_test(test_update_meta),
        cmocka_unit_test(test_update_meta_keeps_budget),
        cmocka_unit_test(test_update_meta_past_max_object),
        cmocka_unit_test(test_lookup_without_memory),
        cmocka_unit_test(test_purge),
        cmocka_unit_test(test_replace_under_reader),
        cmocka_unit_test(test_replace_while_filling),
        cmocka_unit_test(test_eviction_keeps_budget),
        cmocka_unit_test(test_evicted_object_stays_readable),
        cmocka_unit_test(test_memory_returns),
        cmocka_unit_test(test_max_object_known_length),
        cmocka_unit_test(test_max_object_unknown_length),
        cmocka_unit_test(test_abandon),
        cmocka_unit_test(test_wait_and_unwait),
        cmocka_unit_test(test_hash_collisions),
        cmocka_unit_test(test_hot_set_survives_scan),
        cmocka_unit_test(test_used_twice_outlives_used_once),
        cmocka_unit_test(test_admission_refuses_rare_newcomer),
        cmocka_unit_test(test_stream_to_reader_threads),
        cmocka_unit_test(test_threads_mixed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
