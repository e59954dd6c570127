/*
 * Unit tests for the I/O buffer pools (src/core/buf.c): reuse from the free list (plain
 * malloc when WEIR_NO_POOLS is defined, as in sanitizer builds), the max_free bound, the
 * outstanding count, and consume/compact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "weir/error.h"

static void test_acquire_release_reuse(void **state)
{
    (void)state;
    struct weir__bufpool p;
    assert_int_equal(weir__bufpool_init(&p, 4096, 4), 0);
    struct weir__buf b = {0};
    assert_int_equal(weir__buf_acquire(&p, &b), 0);
    assert_non_null(b.data);
    assert_int_equal(b.cap, 4096);
    assert_int_equal(b.rpos, 0);
    assert_int_equal(b.wpos, 0);
    assert_int_equal(p.outstanding, 1);
    memset(b.data, 'x', b.cap); /* the whole block is usable */
    char *first = b.data;

    weir__buf_release(&p, &b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.rpos, 0);
    assert_int_equal(b.wpos, 0);
    assert_int_equal(p.outstanding, 0);
#ifndef WEIR_NO_POOLS
    assert_int_equal(p.nfree, 1);
#else
    assert_int_equal(p.nfree, 0);
#endif

    assert_int_equal(weir__buf_acquire(&p, &b), 0);
#ifndef WEIR_NO_POOLS
    assert_ptr_equal(b.data, first);
    assert_int_equal(p.nfree, 0);
#else
    (void)first; /* malloc may or may not hand the same block back */
#endif
    assert_int_equal(b.rpos, 0);
    assert_int_equal(b.wpos, 0);
    assert_int_equal(p.outstanding, 1);

    /* Releasing an empty buffer does nothing, twice over. */
    weir__buf_release(&p, &b);
    weir__buf_release(&p, &b);
    assert_int_equal(p.outstanding, 0);
    weir__bufpool_dispose(&p);
    assert_null(p.free);
    assert_int_equal(p.nfree, 0);
}

static void test_max_free_bound(void **state)
{
    (void)state;
    enum { N = 6 };
    struct weir__bufpool p;
    assert_int_equal(weir__bufpool_init(&p, 1024, 2), 0);
    struct weir__buf b[N];
    memset(b, 0, sizeof(b));
    for (int i = 0; i < N; i++) {
        assert_int_equal(weir__buf_acquire(&p, &b[i]), 0);
        assert_int_equal(p.outstanding, (uint64_t)i + 1);
    }
    for (int i = 0; i < N; i++) {
        weir__buf_release(&p, &b[i]);
        assert_int_equal(p.outstanding, (uint64_t)(N - i - 1));
#ifndef WEIR_NO_POOLS
        assert_int_equal(p.nfree, i + 1 < 2 ? i + 1 : 2);
#else
        assert_int_equal(p.nfree, 0);
#endif
    }
    assert_true(p.nfree <= p.max_free);
    /* Taking everything out again empties the free list before the heap is used. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(weir__buf_acquire(&p, &b[i]), 0);
    }
    assert_int_equal(p.nfree, 0);
    assert_int_equal(p.outstanding, N);
    for (int i = 0; i < N; i++) {
        weir__buf_release(&p, &b[i]);
    }
    assert_int_equal(p.outstanding, 0);
    weir__bufpool_dispose(&p);
}

static void test_no_free_list(void **state)
{
    (void)state;
    struct weir__bufpool p;
    assert_int_equal(weir__bufpool_init(&p, 512, 0), 0);
    struct weir__buf b = {0};
    assert_int_equal(weir__buf_acquire(&p, &b), 0);
    weir__buf_release(&p, &b);
    assert_int_equal(p.nfree, 0);
    assert_int_equal(p.outstanding, 0);
    weir__bufpool_dispose(&p);
}

static void test_foreign_size_not_pooled(void **state)
{
    (void)state;
    struct weir__bufpool p;
    assert_int_equal(weir__bufpool_init(&p, 64, 4), 0);
    struct weir__buf b = {0};
    assert_int_equal(weir__buf_acquire(&p, &b), 0);
    /* A buffer that was swapped for a bigger block (as grow_for_head does) is freed, not
     * pooled, so the pool never hands out a block of the wrong size. */
    struct weir__bufpool big;
    assert_int_equal(weir__bufpool_init(&big, 256, 0), 0);
    struct weir__buf other = {0};
    assert_int_equal(weir__buf_acquire(&big, &other), 0);
    big.outstanding--;
    p.outstanding++;
    weir__buf_release(&p, &other);
    assert_int_equal(p.nfree, 0);
    weir__buf_release(&p, &b);
#ifndef WEIR_NO_POOLS
    assert_int_equal(p.nfree, 1);
#endif
    assert_int_equal(p.outstanding, 0);
    struct weir__buf again = {0};
    assert_int_equal(weir__buf_acquire(&p, &again), 0);
    assert_int_equal(again.cap, 64);
    weir__buf_release(&p, &again);
    weir__bufpool_dispose(&p);
    weir__bufpool_dispose(&big);
}

static void put(struct weir__buf *b, const char *s)
{
    size_t n = strlen(s);
    assert_true(n <= weir__buf_space(b));
    memcpy(b->data + b->wpos, s, n);
    b->wpos += (uint32_t)n;
}

static void test_consume_compact(void **state)
{
    (void)state;
    struct weir__bufpool p;
    assert_int_equal(weir__bufpool_init(&p, 16, 1), 0);
    struct weir__buf b = {0};
    assert_int_equal(weir__buf_acquire(&p, &b), 0);
    assert_int_equal(weir__buf_len(&b), 0);
    assert_int_equal(weir__buf_space(&b), 16);

    put(&b, "0123456789");
    assert_int_equal(weir__buf_len(&b), 10);
    assert_int_equal(weir__buf_space(&b), 6);

    weir__buf_consume(&b, 4);
    assert_int_equal(b.rpos, 4);
    assert_int_equal(b.wpos, 10);
    assert_int_equal(weir__buf_len(&b), 6);
    assert_memory_equal(b.data + b.rpos, "456789", 6);

    /* Compact moves the unread bytes to the front. */
    weir__buf_compact(&b);
    assert_int_equal(b.rpos, 0);
    assert_int_equal(b.wpos, 6);
    assert_memory_equal(b.data, "456789", 6);
    assert_int_equal(weir__buf_space(&b), 10);

    /* Compacting an already compact buffer changes nothing. */
    weir__buf_compact(&b);
    assert_int_equal(b.wpos, 6);
    assert_memory_equal(b.data, "456789", 6);

    /* Consuming everything resets both positions. */
    weir__buf_consume(&b, 6);
    assert_int_equal(b.rpos, 0);
    assert_int_equal(b.wpos, 0);
    assert_int_equal(weir__buf_space(&b), 16);

    /* Consume to the end after a partial read; then compact of an empty buffer. */
    put(&b, "abcdefghijklmnop");
    assert_int_equal(weir__buf_space(&b), 0);
    weir__buf_consume(&b, 16);
    assert_int_equal(b.rpos, 0);
    assert_int_equal(b.wpos, 0);
    weir__buf_compact(&b);
    assert_int_equal(weir__buf_len(&b), 0);

    /* Full buffer with a consumed prefix: compact frees exactly that prefix. */
    put(&b, "abcdefghijklmnop");
    weir__buf_consume(&b, 3);
    weir__buf_compact(&b);
    assert_int_equal(weir__buf_space(&b), 3);
    assert_memory_equal(b.data, "defghijklmnop", 13);

    weir__buf_consume(&b, 0);
    assert_int_equal(weir__buf_len(&b), 13);

    weir__buf_release(&p, &b);
    weir__bufpool_dispose(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_release_reuse),
        cmocka_unit_test(test_max_free_bound),
        cmocka_unit_test(test_no_free_list),
        cmocka_unit_test(test_foreign_size_not_pooled),
        cmocka_unit_test(test_consume_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
