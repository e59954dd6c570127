/*
 * Unit tests for the cache lock (src/cache/lock.c): the first acquire writes and the next
 * wait, every release wakes every waiter with its outcome and removes the lock; hit-for-pass
 * marks and their expiry (at times the tests pass in: no sleeping), their bound, and forget;
 * takeover past the deadline and the stale writer's release ignored; unwait; keys that share
 * a hash kept apart; a try (no waiter) that never waits; and 8 threads racing for one key: one
 * writer, seven woken by one release.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include <cmocka.h>

#include "cache/cache_int.h"
#include "core/assert.h"
#include "weir/error.h"

#define TIMEOUT_MS 5000u

struct tw {
    struct weir_cache_waiter w;
    int woken;
};

static void tw_wake(struct weir_cache_waiter *w)
{
    WEIR_CONTAINER_OF(w, struct tw, w)->woken++;
}

static void tw_init(struct tw *t)
{
    memset(t, 0, sizeof(*t));
    t->w.wake = tw_wake;
    t->w.result = -1;
}

static struct weir__clock *lock_new(void)
{
    struct weir__clock *l = NULL;
    assert_int_equal(weir__clock_new(&l), 0);
    assert_non_null(l);
    return l;
}

static uint64_t hash_of(struct weir_iov k)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < k.len; i++) {
        h ^= (unsigned char)k.base[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 31;
    h *= 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    return h;
}

/* Acquires key (its own hash) at now; the token or deadline in *out, as the verdict says. */
static enum weir__clock_verdict acq(struct weir__clock *l, const char *key, uint64_t now,
                                    struct tw *t, uint64_t *out)
{
    struct weir_iov k = weir_iov_cstr(key);
    uint64_t token = 0, deadline = 0;
    enum weir__clock_verdict v =
        weir__clock_acquire(l, k, hash_of(k), now, TIMEOUT_MS, &t->w, &token, &deadline);
    if (out != NULL) {
        *out = v == WEIR_CLOCK_WRITER ? token : deadline;
    }
    return v;
}

static void rel(struct weir__clock *l, const char *key, uint64_t token,
                enum weir__clock_outcome outcome, uint64_t now)
{
    struct weir_iov k = weir_iov_cstr(key);
    weir__clock_release(l, k, hash_of(k), token, outcome, now, NULL, NULL);
}

/* Whether key is marked pass at now (if not, the lock this takes is let go again). */
static bool is_pass(struct weir__clock *l, struct weir_iov k, uint64_t hash, uint64_t now)
{
    struct tw t;
    tw_init(&t);
    uint64_t token = 0, deadline = 0;
    enum weir__clock_verdict v =
        weir__clock_acquire(l, k, hash, now, TIMEOUT_MS, &t.w, &token, &deadline);
    assert_int_not_equal(v, WEIR_CLOCK_WAIT);
    if (v == WEIR_CLOCK_WRITER) {
        weir__clock_release(l, k, hash, token, WEIR_CLOCK_FAILED, now, NULL, NULL);
    }
    assert_false(t.w.linked);
    return v == WEIR_CLOCK_PASS;
}

static void test_new_and_free(void **state)
{
    (void)state;
    weir__clock_free(NULL);
    struct weir__clock *l = lock_new();
    /* a held lock and a pass mark are freed with the table (ASan checks) */
    struct tw t;
    tw_init(&t);
    uint64_t tok = 0;
    assert_int_equal(acq(l, "held", 1000, &t, &tok), WEIR_CLOCK_WRITER);
    assert_int_equal(acq(l, "pass", 1000, &t, &tok), WEIR_CLOCK_WRITER);
    rel(l, "pass", tok, WEIR_CLOCK_UNCACHEABLE, 1000);
    weir__clock_free(l);
}

/* A try (no waiter) takes a free lock, or says BUSY without registering anything; a lock
   past its deadline is taken over by a try as by anyone; a pass mark says PASS. */
static void test_try_never_waits(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    struct weir_iov k = WEIR_IOV_LIT("try");
    uint64_t h = hash_of(k), tok = 0, t2 = 0, d = 0;
    assert_int_equal(weir__clock_acquire(l, k, h, 100, TIMEOUT_MS, NULL, &tok, &d),
                     WEIR_CLOCK_WRITER);
    assert_int_equal(weir__clock_acquire(l, k, h, 101, TIMEOUT_MS, NULL, &t2, &d), WEIR_CLOCK_BUSY);
    struct tw a;
    tw_init(&a);
    assert_int_equal(weir__clock_acquire(l, k, h, 102, TIMEOUT_MS, &a.w, &t2, &d), WEIR_CLOCK_WAIT);
    assert_int_equal(weir__clock_acquire(l, k, h, 103, TIMEOUT_MS, NULL, &t2, &d), WEIR_CLOCK_BUSY);
    /* the release wakes the one registered waiter and nobody else */
    weir__clock_release(l, k, h, tok, WEIR_CLOCK_FAILED, 104, NULL, NULL);
    assert_int_equal(a.woken, 1);
    assert_int_equal(a.w.result, WEIR_CLOCK_FAILED);
    /* taken over by a try once the holder outlives its deadline */
    assert_int_equal(weir__clock_acquire(l, k, h, 200, TIMEOUT_MS, NULL, &tok, &d),
                     WEIR_CLOCK_WRITER);
    assert_int_equal(weir__clock_acquire(l, k, h, 200 + TIMEOUT_MS, TIMEOUT_MS, NULL, &t2, &d),
                     WEIR_CLOCK_WRITER);
    assert_int_not_equal(t2, tok);
    weir__clock_release(l, k, h, t2, WEIR_CLOCK_UNCACHEABLE, 6000, NULL, NULL);
    assert_int_equal(weir__clock_acquire(l, k, h, 6001, TIMEOUT_MS, NULL, &t2, &d),
                     WEIR_CLOCK_PASS);
    weir__clock_free(l);
}

static int refs_taken;

static void count_ref(struct weir_cache_obj *o)
{
    (void)o;
    refs_taken++;
}

/* FILLING hands the writer's fill to each waiter with a reference of its own; the other
   outcomes hand nothing. */
static void test_filling_hands_the_fill_over(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    struct tw a, b, c;
    tw_init(&a);
    tw_init(&b);
    tw_init(&c);
    uint64_t t1 = 0, d = 0;
    struct weir_iov k = WEIR_IOV_LIT("hand");
    uint64_t h = hash_of(k);
    assert_int_equal(weir__clock_acquire(l, k, h, 10, TIMEOUT_MS, &a.w, &t1, &d),
                     WEIR_CLOCK_WRITER);
    assert_int_equal(weir__clock_acquire(l, k, h, 11, TIMEOUT_MS, &b.w, &d, &d), WEIR_CLOCK_WAIT);
    assert_int_equal(weir__clock_acquire(l, k, h, 12, TIMEOUT_MS, &c.w, &d, &d), WEIR_CLOCK_WAIT);
    static char fake[8];
    struct weir_cache_obj *fill = (struct weir_cache_obj *)(void *)fake;
    refs_taken = 0;
    weir__clock_release(l, k, h, t1, WEIR_CLOCK_FILLING, 13, fill, count_ref);
    assert_int_equal(refs_taken, 2);
    assert_ptr_equal(b.w.obj, fill);
    assert_ptr_equal(c.w.obj, fill);
    assert_null(a.w.obj);
    b.w.obj = c.w.obj = NULL;
    /* FAILED with a fill given: nothing handed */
    assert_int_equal(weir__clock_acquire(l, k, h, 20, TIMEOUT_MS, &a.w, &t1, &d),
                     WEIR_CLOCK_WRITER);
    assert_int_equal(weir__clock_acquire(l, k, h, 21, TIMEOUT_MS, &b.w, &d, &d), WEIR_CLOCK_WAIT);
    weir__clock_release(l, k, h, t1, WEIR_CLOCK_FAILED, 22, fill, count_ref);
    assert_int_equal(refs_taken, 2);
    assert_null(b.w.obj);
    weir__clock_free(l);
}

static void test_writer_then_waiters_filling(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    struct tw a, b, c;
    tw_init(&a);
    tw_init(&b);
    tw_init(&c);
    uint64_t t1 = 0, d = 0;
    assert_int_equal(acq(l, "k", 1000, &a, &t1), WEIR_CLOCK_WRITER);
    assert_false(a.w.linked); /* the writer is not a waiter */
    assert_int_equal(acq(l, "k", 1200, &b, &d), WEIR_CLOCK_WAIT);
    assert_int_equal(d, 1000 + TIMEOUT_MS); /* the lock's deadline, not the waiter's own */
    assert_true(b.w.linked);
    assert_int_equal(acq(l, "k", 1300, &c, &d), WEIR_CLOCK_WAIT);
    assert_int_equal(d, 1000 + TIMEOUT_MS);
    assert_int_equal(b.woken + c.woken, 0);

    rel(l, "k", t1, WEIR_CLOCK_FILLING, 1400);
    assert_int_equal(b.woken, 1);
    assert_int_equal(c.woken, 1);
    assert_int_equal(b.w.result, WEIR_CLOCK_FILLING);
    assert_int_equal(c.w.result, WEIR_CLOCK_FILLING);
    assert_false(b.w.linked);
    assert_false(c.w.linked);
    assert_int_equal(a.woken, 0);

    /* the lock is gone: the next acquire writes, with a new turn */
    uint64_t t2 = 0;
    assert_int_equal(acq(l, "k", 1500, &a, &t2), WEIR_CLOCK_WRITER);
    assert_int_not_equal(t2, t1);
    rel(l, "k", t1, WEIR_CLOCK_FILLING, 1500); /* the old turn again: ignored */
    assert_int_equal(acq(l, "k", 1500, &b, &d), WEIR_CLOCK_WAIT);
    rel(l, "k", t2, WEIR_CLOCK_FILLING, 1600);
    assert_int_equal(b.woken, 2);
    /* a second release of the same turn finds nothing */
    rel(l, "k", t2, WEIR_CLOCK_UNCACHEABLE, 1600);
    assert_int_equal(acq(l, "k", 1700, &a, &t2), WEIR_CLOCK_WRITER);
    rel(l, "k", t2, WEIR_CLOCK_FAILED, 1700);
    /* other keys never noticed */
    assert_int_equal(acq(l, "other", 1700, &c, &t2), WEIR_CLOCK_WRITER);
    rel(l, "other", t2, WEIR_CLOCK_FILLING, 1700);
    assert_int_equal(c.woken, 1);
    weir__clock_free(l);
}

static void test_failed_wakes_with_failed(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    struct tw a, b;
    tw_init(&a);
    tw_init(&b);
    uint64_t t = 0, d = 0;
    assert_int_equal(acq(l, "k", 10, &a, &t), WEIR_CLOCK_WRITER);
    assert_int_equal(acq(l, "k", 20, &b, &d), WEIR_CLOCK_WAIT);
    rel(l, "k", t, WEIR_CLOCK_FAILED, 30);
    assert_int_equal(b.woken, 1);
    assert_int_equal(b.w.result, WEIR_CLOCK_FAILED);
    /* next_writer: the woken waiter acquires again and writes */
    assert_int_equal(acq(l, "k", 40, &b, &t), WEIR_CLOCK_WRITER);
    rel(l, "k", t, WEIR_CLOCK_FILLING, 50);
    weir__clock_free(l);
}

static void test_uncacheable_marks_pass(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    struct tw a, b, c;
    tw_init(&a);
    tw_init(&b);
    tw_init(&c);
    uint64_t t = 0, d = 0;
    assert_int_equal(acq(l, "k", 1000, &a, &t), WEIR_CLOCK_WRITER);
    assert_int_equal(acq(l, "k", 1001, &b, &d), WEIR_CLOCK_WAIT);
    rel(l, "k", t, WEIR_CLOCK_UNCACHEABLE, 2000);
    assert_int_equal(b.woken, 1);
    assert_int_equal(b.w.result, WEIR_CLOCK_UNCACHEABLE);

    /* fetched without the lock until WEIR_CACHE_PASS_MS after the release */
    assert_int_equal(acq(l, "k", 2000, &c, &d), WEIR_CLOCK_PASS);
    assert_false(c.w.linked);
    assert_int_equal(acq(l, "k", 2000 + WEIR_CACHE_PASS_MS - 1, &c, &d), WEIR_CLOCK_PASS);
    assert_int_equal(acq(l, "k", 2000 + WEIR_CACHE_PASS_MS - 1, &c, &d), WEIR_CLOCK_PASS);
    assert_false(c.w.linked);
    /* a stale release does not touch the mark */
    rel(l, "k", t, WEIR_CLOCK_FILLING, 3000);
    assert_int_equal(acq(l, "k", 3000, &c, &d), WEIR_CLOCK_PASS);
    assert_int_equal(c.woken, 0);

    /* then the mark is gone: a writer again, with waiters again */
    assert_int_equal(acq(l, "k", 2000 + WEIR_CACHE_PASS_MS, &a, &t), WEIR_CLOCK_WRITER);
    assert_int_equal(acq(l, "k", 2000 + WEIR_CACHE_PASS_MS, &c, &d), WEIR_CLOCK_WAIT);
    rel(l, "k", t, WEIR_CLOCK_FILLING, 2000 + WEIR_CACHE_PASS_MS);
    assert_int_equal(c.woken, 1);
    assert_int_equal(c.w.result, WEIR_CLOCK_FILLING);
    assert_int_equal(acq(l, "k", 2000 + WEIR_CACHE_PASS_MS, &a, &t), WEIR_CLOCK_WRITER);
    rel(l, "k", t, WEIR_CLOCK_FILLING, 2000 + WEIR_CACHE_PASS_MS);
    weir__clock_free(l);
}

static void test_takeover_ignores_stale_release(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    struct tw a, b, c, x;
    tw_init(&a);
    tw_init(&b);
    tw_init(&c);
    tw_init(&x);
    struct weir_iov k = WEIR_IOV_LIT("k");
    uint64_t h = hash_of(k);
    uint64_t t1 = 0, t2 = 0, d = 0;
    assert_int_equal(weir__clock_acquire(l, k, h, 1000, 100, &a.w, &t1, &d), WEIR_CLOCK_WRITER);
    assert_int_equal(weir__clock_acquire(l, k, h, 1050, 100, &b.w, &t2, &d), WEIR_CLOCK_WAIT);
    assert_int_equal(d, 1100);
    assert_int_equal(weir__clock_acquire(l, k, h, 1099, 100, &c.w, &t2, &d), WEIR_CLOCK_WAIT);
    /* at the deadline the lock is taken over, with a new turn and a new deadline */
    assert_int_equal(weir__clock_acquire(l, k, h, 1100, 100, &x.w, &t2, &d), WEIR_CLOCK_WRITER);
    assert_int_not_equal(t2, t1);
    assert_false(x.w.linked);

    /* the old writer comes back: ignored, no one is woken, the lock stays */
    weir__clock_release(l, k, h, t1, WEIR_CLOCK_FILLING, 1150, NULL, NULL);
    weir__clock_release(l, k, h, t1, WEIR_CLOCK_UNCACHEABLE, 1150, NULL, NULL);
    assert_int_equal(b.woken + c.woken, 0);
    assert_true(b.w.linked);
    struct tw e;
    tw_init(&e);
    assert_int_equal(weir__clock_acquire(l, k, h, 1150, 100, &e.w, &t1, &d), WEIR_CLOCK_WAIT);
    assert_int_equal(d, 1200);

    /* the waiters that timed out leave; the new writer's release wakes the one left */
    weir__clock_unwait(l, h, &b.w);
    weir__clock_unwait(l, h, &c.w);
    weir__clock_release(l, k, h, t2, WEIR_CLOCK_FILLING, 1160, NULL, NULL);
    assert_int_equal(b.woken + c.woken, 0);
    assert_int_equal(e.woken, 1);
    assert_int_equal(e.w.result, WEIR_CLOCK_FILLING);
    assert_int_equal(weir__clock_acquire(l, k, h, 1170, 100, &a.w, &t1, &d), WEIR_CLOCK_WRITER);
    weir__clock_release(l, k, h, t1, WEIR_CLOCK_FILLING, 1170, NULL, NULL);
    weir__clock_free(l);
}

/* Waiters still registered when the lock is taken over hear the new writer's outcome. */
static void test_takeover_keeps_waiters(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    struct tw a, b, x;
    tw_init(&a);
    tw_init(&b);
    tw_init(&x);
    struct weir_iov k = WEIR_IOV_LIT("k");
    uint64_t h = hash_of(k);
    uint64_t t1 = 0, t2 = 0, d = 0;
    assert_int_equal(weir__clock_acquire(l, k, h, 0, 10, &a.w, &t1, &d), WEIR_CLOCK_WRITER);
    assert_int_equal(weir__clock_acquire(l, k, h, 5, 10, &b.w, &t2, &d), WEIR_CLOCK_WAIT);
    assert_int_equal(weir__clock_acquire(l, k, h, 50, 10, &x.w, &t2, &d), WEIR_CLOCK_WRITER);
    weir__clock_release(l, k, h, t2, WEIR_CLOCK_UNCACHEABLE, 60, NULL, NULL);
    assert_int_equal(b.woken, 1);
    assert_int_equal(b.w.result, WEIR_CLOCK_UNCACHEABLE);
    assert_true(is_pass(l, k, h, 61));
    weir__clock_free(l);
}

static void test_unwait(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    struct tw wr, a, b, c, d, never;
    tw_init(&wr);
    tw_init(&a);
    tw_init(&b);
    tw_init(&c);
    tw_init(&d);
    tw_init(&never);
    uint64_t t = 0, dl = 0;
    struct weir_iov k = WEIR_IOV_LIT("k");
    uint64_t h = hash_of(k);
    assert_int_equal(acq(l, "k", 0, &wr, &t), WEIR_CLOCK_WRITER);
    assert_int_equal(acq(l, "k", 1, &a, &dl), WEIR_CLOCK_WAIT);
    assert_int_equal(acq(l, "k", 2, &b, &dl), WEIR_CLOCK_WAIT);
    assert_int_equal(acq(l, "k", 3, &c, &dl), WEIR_CLOCK_WAIT);
    assert_int_equal(acq(l, "k", 4, &d, &dl), WEIR_CLOCK_WAIT);
    weir__clock_unwait(l, h, &c.w); /* one in the middle */
    weir__clock_unwait(l, h, &d.w); /* the newest: the list's head */
    weir__clock_unwait(l, h, &a.w); /* the oldest: its tail */
    weir__clock_unwait(l, h, &a.w); /* twice: harmless */
    weir__clock_unwait(l, h, &never.w);
    assert_false(a.w.linked);
    assert_false(c.w.linked);
    assert_false(d.w.linked);
    rel(l, "k", t, WEIR_CLOCK_FILLING, 10);
    assert_int_equal(a.woken + c.woken + d.woken + never.woken, 0);
    assert_int_equal(b.woken, 1);
    weir__clock_unwait(l, h, &b.w); /* after its wake: harmless */
    assert_false(b.w.linked);

    /* unwait of every waiter, then release: no one is woken, the lock is still removed */
    assert_int_equal(acq(l, "k", 20, &wr, &t), WEIR_CLOCK_WRITER);
    assert_int_equal(acq(l, "k", 21, &a, &dl), WEIR_CLOCK_WAIT);
    weir__clock_unwait(l, h, &a.w);
    rel(l, "k", t, WEIR_CLOCK_FILLING, 22);
    assert_int_equal(a.woken, 0);
    assert_int_equal(acq(l, "k", 23, &wr, &t), WEIR_CLOCK_WRITER);
    rel(l, "k", t, WEIR_CLOCK_FILLING, 24);
    weir__clock_free(l);
}

static void test_forget(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    struct tw a, b;
    tw_init(&a);
    tw_init(&b);
    struct weir_iov k = WEIR_IOV_LIT("k");
    uint64_t h = hash_of(k);
    uint64_t t = 0, d = 0;
    weir__clock_forget(l, k, h); /* nothing there: harmless */
    assert_int_equal(acq(l, "k", 100, &a, &t), WEIR_CLOCK_WRITER);
    rel(l, "k", t, WEIR_CLOCK_UNCACHEABLE, 100);
    assert_true(is_pass(l, k, h, 200));
    weir__clock_forget(l, k, h);
    assert_false(is_pass(l, k, h, 200));

    /* forget leaves a lock (not a mark) alone */
    assert_int_equal(acq(l, "k", 300, &a, &t), WEIR_CLOCK_WRITER);
    weir__clock_forget(l, k, h);
    assert_int_equal(acq(l, "k", 301, &b, &d), WEIR_CLOCK_WAIT);
    rel(l, "k", t, WEIR_CLOCK_FILLING, 302);
    assert_int_equal(b.woken, 1);
    weir__clock_free(l);
}

/* A hash whose lock shard is i % WEIR_CACHE_LOCK_SHARDS (bits 59..62) and bucket varies. */
static uint64_t spread_hash(unsigned i)
{
    return ((uint64_t)(i % WEIR_CACHE_LOCK_SHARDS) << 59) |
           (((uint64_t)i * 0x9e3779b97f4a7c15ull >> 8) & ((1ull << 59) - 1u));
}

static void mark_pass(struct weir__clock *l, struct weir_iov k, uint64_t h, uint64_t now)
{
    struct tw t;
    tw_init(&t);
    uint64_t token = 0, d = 0;
    assert_int_equal(weir__clock_acquire(l, k, h, now, TIMEOUT_MS, &t.w, &token, &d),
                     WEIR_CLOCK_WRITER);
    weir__clock_release(l, k, h, token, WEIR_CLOCK_UNCACHEABLE, now, NULL, NULL);
}

static struct weir_iov num_key(char *buf, size_t size, unsigned i)
{
    int n = snprintf(buf, size, "key-%u", i);
    assert_true(n > 0 && (size_t)n < size);
    return (struct weir_iov){buf, (size_t)n};
}

/* Twice WEIR_CACHE_PASS_MAX marks, spread evenly: the newest PASS_MAX stay, the rest go. */
static void test_pass_marks_bounded(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    enum { N = 2 * WEIR_CACHE_PASS_MAX };
    char buf[32];
    for (unsigned i = 0; i < N; i++) {
        mark_pass(l, num_key(buf, sizeof(buf), i), spread_hash(i), 1000 + i / 64);
    }
    const uint64_t now = 1000 + N / 64; /* every mark still within its time */
    unsigned kept = 0;
    for (unsigned i = N; i-- > 0;) { /* newest first: checking an old one makes a lock */
        bool pass = is_pass(l, num_key(buf, sizeof(buf), i), spread_hash(i), now);
        kept += pass;
        assert_true(pass == (i >= N - WEIR_CACHE_PASS_MAX));
    }
    assert_int_equal(kept, WEIR_CACHE_PASS_MAX);
    weir__clock_free(l);
}

/* However the hashes fall, the marks stay within WEIR_CACHE_PASS_MAX; the newest is kept. */
static void test_pass_marks_bounded_skewed(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    enum { N = WEIR_CACHE_PASS_MAX + 100 };
    char buf[32];
    for (unsigned i = 0; i < N; i++) {
        /* all in one shard (the top bits), a few buckets */
        mark_pass(l, num_key(buf, sizeof(buf), i), (7ull << 59) | (i % 5u), 1000);
    }
    unsigned kept = 0;
    for (unsigned i = N; i-- > 0;) {
        kept += is_pass(l, num_key(buf, sizeof(buf), i), (7ull << 59) | (i % 5u), 1001);
    }
    print_message("one shard keeps %u marks\n", kept);
    assert_true(kept >= 1 && kept <= WEIR_CACHE_PASS_MAX);
    assert_true(is_pass(l, num_key(buf, sizeof(buf), N - 1), (7ull << 59) | ((N - 1) % 5u), 1001));
    weir__clock_free(l);
}

/* Keys that share a hash (so a shard and a bucket) are different locks and marks. */
static void test_same_hash_kept_apart(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    const uint64_t h = 0xfeedfacecafebeefull;
    struct weir_iov ka = WEIR_IOV_LIT("alpha"), kb = WEIR_IOV_LIT("beta"),
                    kc = WEIR_IOV_LIT("alph"), kd = WEIR_IOV_LIT("alpha2");
    struct tw wa, wb, wb2, wc;
    tw_init(&wa);
    tw_init(&wb);
    tw_init(&wb2);
    tw_init(&wc);
    uint64_t ta = 0, tb = 0, tc = 0, d = 0, x = 0;
    assert_int_equal(weir__clock_acquire(l, ka, h, 0, TIMEOUT_MS, &wa.w, &ta, &d),
                     WEIR_CLOCK_WRITER);
    assert_int_equal(weir__clock_acquire(l, kb, h, 0, TIMEOUT_MS, &wb.w, &tb, &d),
                     WEIR_CLOCK_WRITER);
    assert_int_equal(weir__clock_acquire(l, kc, h, 0, TIMEOUT_MS, &wc.w, &tc, &d),
                     WEIR_CLOCK_WRITER);
    assert_int_equal(weir__clock_acquire(l, ka, h, 1, TIMEOUT_MS, &wa.w, &x, &d), WEIR_CLOCK_WAIT);
    assert_int_equal(weir__clock_acquire(l, kb, h, 1, TIMEOUT_MS, &wb.w, &x, &d), WEIR_CLOCK_WAIT);
    assert_int_equal(weir__clock_acquire(l, kb, h, 1, TIMEOUT_MS, &wb2.w, &x, &d), WEIR_CLOCK_WAIT);
    /* wb2 heads beta's list, in a bucket where alpha and alph have lists of their own */
    weir__clock_unwait(l, h, &wb2.w);
    assert_true(wb.w.linked);
    assert_true(wa.w.linked);

    /* releasing alpha wakes alpha's waiter only; beta's turn does not release alpha */
    weir__clock_release(l, kb, h, ta, WEIR_CLOCK_FILLING, 2, NULL, NULL);
    assert_int_equal(wa.woken + wb.woken, 0);
    weir__clock_release(l, ka, h, ta, WEIR_CLOCK_FILLING, 2, NULL, NULL);
    assert_int_equal(wa.woken, 1);
    assert_int_equal(wb.woken + wb2.woken, 0);

    /* beta becomes a pass mark; alpha (and a longer key) still lock */
    weir__clock_release(l, kb, h, tb, WEIR_CLOCK_UNCACHEABLE, 3, NULL, NULL);
    assert_int_equal(wb.woken, 1);
    assert_int_equal(wb.w.result, WEIR_CLOCK_UNCACHEABLE);
    assert_true(is_pass(l, kb, h, 4));
    assert_false(is_pass(l, ka, h, 4));
    assert_false(is_pass(l, kd, h, 4));
    assert_false(is_pass(l, kb, h ^ 1u, 4)); /* another hash: another key */
    weir__clock_forget(l, ka, h);            /* alpha has no mark: beta keeps its */
    assert_true(is_pass(l, kb, h, 5));
    weir__clock_release(l, kc, h, tc, WEIR_CLOCK_FILLING, 5, NULL, NULL);
    assert_true(is_pass(l, kb, h, 6));
    weir__clock_forget(l, kb, h);
    assert_false(is_pass(l, kb, h, 6));
    weir__clock_free(l);
}

/* Many locks at once, each its own turn. */
static void test_many_keys(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    enum { N = 3000 };
    static uint64_t tokens[N];
    char buf[32];
    struct tw t;
    tw_init(&t);
    for (unsigned i = 0; i < N; i++) {
        struct weir_iov k = num_key(buf, sizeof(buf), i);
        uint64_t d = 0;
        assert_int_equal(weir__clock_acquire(l, k, hash_of(k), 0, TIMEOUT_MS, &t.w, &tokens[i], &d),
                         WEIR_CLOCK_WRITER);
    }
    for (unsigned i = 0; i < N; i++) {
        struct weir_iov k = num_key(buf, sizeof(buf), i);
        uint64_t h = hash_of(k);
        /* still locked: a second acquire waits */
        struct tw w;
        tw_init(&w);
        uint64_t d = 0, x = 0;
        assert_int_equal(weir__clock_acquire(l, k, h, 1, TIMEOUT_MS, &w.w, &x, &d),
                         WEIR_CLOCK_WAIT);
        weir__clock_release(l, k, h, tokens[i], WEIR_CLOCK_FILLING, 2, NULL, NULL);
        assert_int_equal(w.woken, 1);
    }
    weir__clock_free(l);
}

/* ---- threads ---- */

#define NTHREADS     8
#define WAIT_SECONDS 5

struct race {
    struct weir__clock *l;
    pthread_barrier_t start;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned acquired; /* under mu */
};

struct racer {
    pthread_t t;
    struct race *r;
    struct weir_cache_waiter w;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool woken;
    int verdict;
    const char *err;
};

static void racer_wake(struct weir_cache_waiter *w)
{
    struct racer *x = WEIR_CONTAINER_OF(w, struct racer, w);
    pthread_mutex_lock(&x->mu);
    x->woken = true;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    assert_int_equal(pthread_condattr_init(&a), 0);
    assert_int_equal(pthread_condattr_setclock(&a, CLOCK_MONOTONIC), 0);
    assert_int_equal(pthread_cond_init(cv, &a), 0);
    assert_int_equal(pthread_condattr_destroy(&a), 0);
}

static bool deadline(struct timespec *ts)
{
    if (clock_gettime(CLOCK_MONOTONIC, ts) != 0) {
        return false;
    }
    ts->tv_sec += WAIT_SECONDS;
    return true;
}

/* The writer lets go once every racer has acquired (so all the others are waiting). */
static void racer_write(struct racer *x, uint64_t token)
{
    struct race *r = x->r;
    struct timespec ts;
    if (!deadline(&ts)) {
        x->err = "clock";
        return;
    }
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    while (r->acquired < NTHREADS && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    bool all = r->acquired == NTHREADS;
    pthread_mutex_unlock(&r->mu);
    if (!all) {
        x->err = "the others never acquired";
    }
    struct weir_iov k = WEIR_IOV_LIT("the key");
    weir__clock_release(r->l, k, hash_of(k), token, WEIR_CLOCK_FILLING, 1001, NULL, NULL);
}

static void racer_wait(struct racer *x)
{
    struct timespec ts;
    if (!deadline(&ts)) {
        x->err = "clock";
        return;
    }
    int rc = 0;
    pthread_mutex_lock(&x->mu);
    while (!x->woken && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&x->cv, &x->mu, &ts);
    }
    bool woken = x->woken;
    pthread_mutex_unlock(&x->mu);
    if (!woken) {
        x->err = "not woken within the bound";
        struct weir_iov k = WEIR_IOV_LIT("the key");
        weir__clock_unwait(x->r->l, hash_of(k), &x->w);
    }
}

static void *racer_main(void *arg)
{
    struct racer *x = arg;
    struct race *r = x->r;
    struct weir_iov k = WEIR_IOV_LIT("the key");
    uint64_t token = 0, d = 0;
    (void)pthread_barrier_wait(&r->start);
    x->verdict = weir__clock_acquire(r->l, k, hash_of(k), 1000, TIMEOUT_MS, &x->w, &token, &d);
    pthread_mutex_lock(&r->mu);
    r->acquired++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (x->verdict == WEIR_CLOCK_WRITER) {
        racer_write(x, token);
    } else if (x->verdict == WEIR_CLOCK_WAIT) {
        racer_wait(x);
    }
    return NULL;
}

static void race_once(struct weir__clock *l)
{
    struct race r = {.l = l};
    static struct racer xs[NTHREADS];
    memset(xs, 0, sizeof(xs));
    assert_int_equal(pthread_barrier_init(&r.start, NULL, NTHREADS), 0);
    assert_int_equal(pthread_mutex_init(&r.mu, NULL), 0);
    cond_init_monotonic(&r.cv);
    for (unsigned i = 0; i < NTHREADS; i++) {
        xs[i].r = &r;
        xs[i].w.wake = racer_wake;
        xs[i].w.result = -1;
        assert_int_equal(pthread_mutex_init(&xs[i].mu, NULL), 0);
        cond_init_monotonic(&xs[i].cv);
        assert_int_equal(pthread_create(&xs[i].t, NULL, racer_main, &xs[i]), 0);
    }
    unsigned writers = 0, waiters = 0;
    for (unsigned i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(xs[i].t, NULL), 0);
        if (xs[i].err != NULL) {
            fail_msg("thread %u: %s", i, xs[i].err);
        }
        if (xs[i].verdict == WEIR_CLOCK_WRITER) {
            writers++;
            assert_false(xs[i].woken);
        } else {
            assert_int_equal(xs[i].verdict, WEIR_CLOCK_WAIT);
            waiters++;
            assert_true(xs[i].woken);
            assert_int_equal(xs[i].w.result, WEIR_CLOCK_FILLING);
            assert_false(xs[i].w.linked);
        }
        assert_int_equal(pthread_mutex_destroy(&xs[i].mu), 0);
        assert_int_equal(pthread_cond_destroy(&xs[i].cv), 0);
    }
    assert_int_equal(writers, 1);
    assert_int_equal(waiters, NTHREADS - 1);
    assert_int_equal(pthread_barrier_destroy(&r.start), 0);
    assert_int_equal(pthread_mutex_destroy(&r.mu), 0);
    assert_int_equal(pthread_cond_destroy(&r.cv), 0);
}

static void test_threads_one_writer(void **state)
{
    (void)state;
    struct weir__clock *l = lock_new();
    for (unsigned round = 0; round < 20; round++) {
        race_once(l);
        /* the lock is gone after each round */
        struct tw t;
        tw_init(&t);
        uint64_t tok = 0;
        assert_int_equal(acq(l, "the key", 2000, &t, &tok), WEIR_CLOCK_WRITER);
        rel(l, "the key", tok, WEIR_CLOCK_FAILED, 2000);
    }
    weir__clock_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_and_free),
        cmocka_unit_test(test_try_never_waits),
        cmocka_unit_test(test_writer_then_waiters_filling),
        cmocka_unit_test(test_filling_hands_the_fill_over),
        cmocka_unit_test(test_failed_wakes_with_failed),
        cmocka_unit_test(test_uncacheable_marks_pass),
        cmocka_unit_test(test_takeover_ignores_stale_release),
        cmocka_unit_test(test_takeover_keeps_waiters),
        cmocka_unit_test(test_unwait),
        cmocka_unit_test(test_forget),
        cmocka_unit_test(test_pass_marks_bounded),
        cmocka_unit_test(test_pass_marks_bounded_skewed),
        cmocka_unit_test(test_same_hash_kept_apart),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_threads_one_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
