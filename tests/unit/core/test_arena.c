/*
 * Unit tests for per-request arenas (src/core/arena.c): alignment, growth across blocks, the
 * hard cap, string copies, cleanup order, and reuse of the first block across resets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "weir/error.h"
#include "weir/mem.h"

static void assert_aligned(const void *p)
{
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
}

static void test_alignment(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(256, 1 << 20, &a), 0);
    assert_non_null(a);
    static const size_t sizes[] = {1, 3, 7, 15, 16, 17, 31, 33, 100, 255, 256, 257, 1000};
    for (int round = 0; round < 10; round++) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            unsigned char *p = weir_arena_alloc(a, sizes[i]);
            assert_aligned(p);
            memset(p, 0xab, sizes[i]);
        }
    }
    weir_arena_free(a);
}

static void test_many_small_across_blocks(void **state)
{
    (void)state;
    enum { N = 2000, SZ = 24 };
    static unsigned char *ptrs[N];
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(256, 1 << 20, &a), 0);
    assert_non_null(a);
    for (int i = 0; i < N; i++) {
        ptrs[i] = weir_arena_alloc(a, SZ);
        assert_aligned(ptrs[i]);
        memset(ptrs[i], (unsigned char)i, SZ);
    }
    /* Every allocation keeps its own bytes: no two overlap, none moved. */
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < SZ; j++) {
            assert_int_equal(ptrs[i][j], (unsigned char)i);
        }
    }
    assert_int_equal(weir_arena_used(a), (size_t)N * 32);
    weir_arena_free(a);
}

static void test_big_alloc_over_block_size(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(256, 1 << 20, &a), 0);
    assert_non_null(a);
    unsigned char *small = weir_arena_alloc(a, 10);
    assert_non_null(small);
    memset(small, 0x11, 10);
    unsigned char *big = weir_arena_alloc(a, 100000);
    assert_aligned(big);
    memset(big, 0x22, 100000);
    unsigned char *after = weir_arena_alloc(a, 10);
    assert_aligned(after);
    memset(after, 0x33, 10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(small[i], 0x11);
        assert_int_equal(after[i], 0x33);
    }
    for (int i = 0; i < 100000; i++) {
        assert_int_equal(big[i], 0x22);
    }
    weir_arena_free(a);
}

static void test_cap(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(256, 1024, &a), 0);
    assert_non_null(a);
    assert_non_null(weir_arena_alloc(a, 1000)); /* 1008 counted */
    assert_null(weir_arena_alloc(a, 32));       /* 1040 > 1024 */
    assert_int_equal(weir_arena_used(a), 1008);
    /* A failure does not break the arena: what still fits below the cap is served. */
    void *p = weir_arena_alloc(a, 16);
    assert_aligned(p);
    assert_int_equal(weir_arena_used(a), 1024);
    assert_null(weir_arena_alloc(a, 1));
    assert_null(weir_arena_calloc(a, 1));
    assert_null(weir_arena_strndup(a, "x", 1));
    struct weir_iov v = weir_arena_iovdup(a, WEIR_IOV_LIT("abc"));
    assert_null(v.base);
    assert_int_equal(v.len, 0);
    assert_int_equal(weir_arena_cleanup_add(a, (weir_cleanup_fn)NULL, NULL), WEIR_ENOMEM);
    /* Overflowing sizes are refused, not wrapped. */
    assert_null(weir_arena_alloc(a, SIZE_MAX));
    assert_null(weir_arena_alloc(a, SIZE_MAX - 8));
    /* After a reset the whole cap is available again. */
    weir_arena_reset(a);
    assert_int_equal(weir_arena_used(a), 0);
    assert_non_null(weir_arena_alloc(a, 1024));
    weir_arena_free(a);

    /* A single allocation larger than the cap fails even in a fresh arena. */
    assert_int_equal(weir_arena_new(256, 4096, &a), 0);
    assert_non_null(a);
    assert_null(weir_arena_alloc(a, 4097));
    assert_non_null(weir_arena_alloc(a, 4096));
    weir_arena_free(a);
}

static void test_calloc_zeroes(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(256, 1 << 20, &a), 0);
    assert_non_null(a);
    /* Dirty the first block, reset, then calloc over the same bytes. */
    unsigned char *p = weir_arena_alloc(a, 200);
    assert_non_null(p);
    memset(p, 0xff, 200);
    weir_arena_reset(a);
    unsigned char *z = weir_arena_calloc(a, 200);
    assert_non_null(z);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(z[i], 0);
    }
    unsigned char *zb = weir_arena_calloc(a, 5000); /* its own block */
    assert_non_null(zb);
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(zb[i], 0);
    }
    weir_arena_free(a);
}

static void test_strndup_iovdup(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(256, 1 << 20, &a), 0);
    assert_non_null(a);
    const char src[] = "hello, world";
    char *s = weir_arena_strndup(a, src, 5);
    assert_non_null(s);
    assert_string_equal(s, "hello");
    assert_ptr_not_equal(s, src);

    char *e = weir_arena_strndup(a, NULL, 0);
    assert_non_null(e);
    assert_string_equal(e, "");

    /* Embedded NULs are copied (length-carrying). */
    char *nul = weir_arena_strndup(a, "a\0b", 3);
    assert_non_null(nul);
    assert_memory_equal(nul, "a\0b\0", 4);

    struct weir_iov v = weir_arena_iovdup(a, (struct weir_iov){src + 7, 5});
    assert_non_null(v.base);
    assert_int_equal(v.len, 5);
    assert_memory_equal(v.base, "world", 5);
    assert_int_equal(v.base[5], '\0');
    assert_ptr_not_equal(v.base, src + 7);

    struct weir_iov empty = weir_arena_iovdup(a, (struct weir_iov){NULL, 0});
    assert_non_null(empty.base);
    assert_int_equal(empty.len, 0);
    weir_arena_free(a);
}

static int order[16];
static int norder;

static void record(void *data)
{
    order[norder++] = (int)(intptr_t)data;
}

static void test_cleanups_reverse_order(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(256, 1 << 20, &a), 0);
    assert_non_null(a);

    norder = 0;
    for (intptr_t i = 1; i <= 5; i++) {
        assert_int_equal(weir_arena_cleanup_add(a, record, (void *)i), 0);
        /* Interleave allocations so the records span several blocks. */
        assert_non_null(weir_arena_alloc(a, 200));
    }
    weir_arena_reset(a);
    assert_int_equal(norder, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(order[i], 5 - i);
    }

    /* Cleanups ran once: a second reset runs nothing. */
    weir_arena_reset(a);
    assert_int_equal(norder, 5);

    norder = 0;
    for (intptr_t i = 1; i <= 3; i++) {
        assert_int_equal(weir_arena_cleanup_add(a, record, (void *)(i * 10)), 0);
    }
    weir_arena_free(a);
    assert_int_equal(norder, 3);
    assert_int_equal(order[0], 30);
    assert_int_equal(order[1], 20);
    assert_int_equal(order[2], 10);

    weir_arena_free(NULL);
}

static void test_reset_cycles_no_growth(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(1024, 1 << 20, &a), 0);
    assert_non_null(a);
    void *first = NULL;
    norder = 0;
    for (int cycle = 0; cycle < 1000; cycle++) {
        void *p = weir_arena_alloc(a, 64);
        assert_aligned(p);
        if (first == NULL) {
            first = p;
        }
        /* The first block is kept: each cycle starts at the same address. */
        assert_ptr_equal(p, first);
        for (int i = 0; i < 20; i++) {
            assert_non_null(weir_arena_alloc(a, 100));
        }
        assert_non_null(weir_arena_alloc(a, 8000)); /* an oversize block, freed on reset */
        assert_int_equal(weir_arena_cleanup_add(a, record, NULL), 0);
        assert_true(weir_arena_used(a) > 8000);
        weir_arena_reset(a);
        assert_int_equal(weir_arena_used(a), 0);
        assert_int_equal(norder, 1);
        norder = 0;
    }
    weir_arena_free(a);
}

static void test_used_counts_rounded(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(0, 1 << 20, &a), 0); /* block size raised to the minimum */
    assert_non_null(a);
    assert_int_equal(weir_arena_used(a), 0);
    assert_non_null(weir_arena_alloc(a, 1));
    assert_int_equal(weir_arena_used(a), 16);
    assert_non_null(weir_arena_alloc(a, 17));
    assert_int_equal(weir_arena_used(a), 48);
    assert_non_null(weir_arena_alloc(a, 300)); /* over the 256-byte minimum block */
    assert_int_equal(weir_arena_used(a), 48 + 304);
    weir_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_many_small_across_blocks),
        cmocka_unit_test(test_big_alloc_over_block_size),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_calloc_zeroes),
        cmocka_unit_test(test_strndup_iovdup),
        cmocka_unit_test(test_cleanups_reverse_order),
        cmocka_unit_test(test_reset_cycles_no_growth),
        cmocka_unit_test(test_used_counts_rounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
