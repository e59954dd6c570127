/*
 * Unit tests for what a request selects of a stored response (src/cache/select.c). Range:
 * single, open and suffix ranges, clamping to the body, several in the order asked, empty
 * list elements and whitespace, the unit's case, unsatisfiable ranges (416) against invalid
 * fields (ignored: the whole object), the cap, digits past 64 bits, an empty body. Vary: one
 * field, a field's values joined, names lowercased and matched in any case, an absent field
 * told apart from an empty one, lengths that keep values from reading alike, a field named
 * twice (it adds nothing, however long its value), the cap on distinct names, and writing
 * into a buffer too small (never past it, the full length returned).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache/cc.h"

/* Appends text to the string in buf (cap bytes), truncating; test text only. */
static void app(char *buf, size_t cap, const char *text)
{
    size_t have = strlen(buf), add = strlen(text);
    if (have + add >= cap) {
        add = cap - have - 1;
    }
    memcpy(buf + have, text, add);
    buf[have + add] = '\0';
}

static struct weir__range rs[WEIR_CACHE_MAX_RANGES];

static int ranges(const char *v, uint64_t len)
{
    memset(rs, 0xa5, sizeof(rs));
    return weir__range_parse(weir_iov_cstr(v), len, rs);
}

static void assert_range(int i, uint64_t first, uint64_t last)
{
    assert_int_equal(rs[i].first, first);
    assert_int_equal(rs[i].last, last);
}

static void test_range_single_open_suffix(void **state)
{
    (void)state;
    assert_int_equal(ranges("bytes=0-9", 100), 1);
    assert_range(0, 0, 9);
    assert_int_equal(ranges("bytes=90-", 100), 1);
    assert_range(0, 90, 99);
    assert_int_equal(ranges("bytes=-10", 100), 1);
    assert_range(0, 90, 99);
    /* clamped to the body */
    assert_int_equal(ranges("bytes=50-1000", 100), 1);
    assert_range(0, 50, 99);
    assert_int_equal(ranges("bytes=-1000", 100), 1);
    assert_range(0, 0, 99);
    assert_int_equal(ranges("bytes=99-99", 100), 1);
    assert_range(0, 99, 99);
}

static void test_range_lists(void **state)
{
    (void)state;
    assert_int_equal(ranges("bytes=0-0, 10-19 ,-5", 100), 3);
    assert_range(0, 0, 0);
    assert_range(1, 10, 19);
    assert_range(2, 95, 99);
    /* empty elements and surrounding whitespace; the unit in any case */
    assert_int_equal(ranges("  BYTES=,,0-1,, ", 100), 1);
    assert_range(0, 0, 1);
    /* overlapping and out-of-order ranges are answered as asked */
    assert_int_equal(ranges("bytes=50-60,0-99", 100), 2);
    assert_range(0, 50, 60);
    assert_range(1, 0, 99);
}

static void test_range_unsatisfiable_and_invalid(void **state)
{
    (void)state;
    /* unsatisfiable: a 416 */
    assert_int_equal(ranges("bytes=100-", 100), 0);
    assert_int_equal(ranges("bytes=200-300", 100), 0);
    assert_int_equal(ranges("bytes=-0", 100), 0);
    assert_int_equal(ranges("bytes=0-5", 0), 0);
    assert_int_equal(ranges("bytes=-5", 0), 0);
    /* a satisfiable one among them is served alone */
    assert_int_equal(ranges("bytes=500-600, 1-2", 100), 1);
    assert_range(0, 1, 2);
    /* invalid: the field is ignored */
    const char *bad[] = {"",
                         "bytes=",
                         "bytes=,",
                         "items=0-1",
                         "bytes 0-1",
                         "bytes=1",
                         "bytes=5-1",
                         "bytes=a-1",
                         "bytes=1-b",
                         "bytes=-",
                         "bytes=--1",
                         "bytes=1--2",
                         "bytes=+1-2",
                         "bytes=0-1,x",
                         "bytes=99999999999999999999-",
                         "bytes=0-99999999999999999999",
                         "bytes=-99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(ranges(bad[i], 100), -1);
    }
    /* 19 digits is the most a length has */
    assert_int_equal(ranges("bytes=0-9999999999999999999", 100), 1);
    assert_range(0, 0, 99);
}

static void test_range_cap(void **state)
{
    (void)state;
    char v[512] = "bytes=";
    for (int i = 0; i < WEIR_CACHE_MAX_RANGES; i++) {
        char one[16];
        snprintf(one, sizeof(one), "%s%d-%d", i ? "," : "", i * 2, i * 2);
        app(v, sizeof(v), one);
    }
    assert_int_equal(ranges(v, 100), WEIR_CACHE_MAX_RANGES);
    assert_range(WEIR_CACHE_MAX_RANGES - 1, 30, 30);
    app(v, sizeof(v), ",40-40");
    assert_int_equal(ranges(v, 100), -1);
    /* unsatisfiable ranges count towards the cap too (a thousand slices of nothing) */
    char w[512] = "bytes=";
    for (int i = 0; i <= WEIR_CACHE_MAX_RANGES; i++) {
        app(w, sizeof(w), "500-600,");
    }
    assert_int_equal(ranges(w, 100), -1);
}

/* ---- Vary ---- */

static struct weir_header F(const char *n, const char *v) {
    return (struct weir_header){weir_iov_cstr(n), weir_iov_cstr(v)};
}

static char vbuf[65536];

static const char *variance(const char *names, const struct weir_header *f, size_t n)
{
    size_t need = weir__cache_variance(weir_iov_cstr(names), f, n, NULL, 0);
    assert_true(need < sizeof(vbuf));
    memset(vbuf, 0, sizeof(vbuf));
    assert_int_equal(weir__cache_variance(weir_iov_cstr(names), f, n, vbuf, need), need);
    return vbuf;
}

static void test_vary_basic(void **state)
{
    (void)state;
    struct weir_header f[] = {F("Accept-Encoding", " gzip "), F("Accept", "text/html"),
                              F("accept-encoding", "br")};
    assert_string_equal(variance("Accept-Encoding", f, 3), "accept-encoding=7:gzip,br;");
    assert_string_equal(variance(" ACCEPT , accept-encoding", f, 3),
                        "accept=9:text/html;accept-encoding=7:gzip,br;");
    /* absent and empty are different */
    struct weir_header e[] = {F("X-A", "")};
    assert_string_equal(variance("X-A, X-B", e, 1), "x-a=0:;x-b=0:;");
    assert_string_equal(variance("X-A", NULL, 0), "x-a=0:;");
    /* empty list elements name nothing */
    assert_string_equal(variance(",, X-A ,", e, 1), "x-a=0:;");
    assert_int_equal(weir__cache_variance(WEIR_IOV_LIT(""), f, 3, NULL, 0), 0);
}

static void test_vary_values_do_not_read_alike(void **state)
{
    (void)state;
    /* one field "a;b=1:c" against two fields: the lengths keep them apart */
    struct weir_header one[] = {F("X", "a;y=1:c")};
    struct weir_header two[] = {F("X", "a"), F("Y", "c")};
    char first[128];
    snprintf(first, sizeof(first), "%s", variance("X, Y", one, 1));
    assert_string_not_equal(first, variance("X, Y", two, 2));
}

static void test_vary_field_named_twice(void **state)
{
    (void)state;
    /* Regression: a name listed many times wrote its values each time past a buffer sized for
       them once. Now a name listed again adds nothing. */
    static char longv[4001];
    memset(longv, 'v', sizeof(longv) - 1);
    struct weir_header f[] = {F("X-Long", longv)};
    char names[64 * 8];
    names[0] = '\0';
    for (int i = 0; i < 64; i++) {
        app(names, sizeof(names), i ? ",x-long" : "X-Long");
    }
    size_t need = weir__cache_variance(weir_iov_cstr(names), f, 1, NULL, 0);
    assert_int_equal(need, strlen("x-long=4000:;") + 4000);
    assert_int_equal(need, weir__cache_variance(WEIR_IOV_LIT("X-Long"), f, 1, NULL, 0));
}

static void test_vary_cap_on_names(void **state)
{
    (void)state;
    char names[WEIR_CACHE_MAX_VARY_FIELDS * 8 + 16] = "";
    for (int i = 0; i < WEIR_CACHE_MAX_VARY_FIELDS; i++) {
        char one[12];
        snprintf(one, sizeof(one), "%sx%d", i ? "," : "", i);
        app(names, sizeof(names), one);
    }
    assert_int_not_equal(weir__cache_variance(weir_iov_cstr(names), NULL, 0, NULL, 0), SIZE_MAX);
    app(names, sizeof(names), ",X0,x1");
    assert_int_not_equal(weir__cache_variance(weir_iov_cstr(names), NULL, 0, NULL, 0), SIZE_MAX);
    app(names, sizeof(names), ",one-more");
    assert_int_equal(weir__cache_variance(weir_iov_cstr(names), NULL, 0, NULL, 0), SIZE_MAX);
}

static void test_vary_small_buffer(void **state)
{
    (void)state;
    struct weir_header f[] = {F("Accept", "text/html")};
    size_t need = weir__cache_variance(WEIR_IOV_LIT("Accept"), f, 1, NULL, 0);
    for (size_t cap = 0; cap <= need; cap++) {
        char *b = malloc(cap ? cap : 1); /* ASan catches a write past cap */
        assert_non_null(b);
        assert_int_equal(weir__cache_variance(WEIR_IOV_LIT("Accept"), f, 1, b, cap), need);
        if (cap == need) {
            assert_memory_equal(b, "accept=9:text/html;", need);
        }
        free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_single_open_suffix),
        cmocka_unit_test(test_range_lists),
        cmocka_unit_test(test_range_unsatisfiable_and_invalid),
        cmocka_unit_test(test_range_cap),
        cmocka_unit_test(test_vary_basic),
        cmocka_unit_test(test_vary_values_do_not_read_alike),
        cmocka_unit_test(test_vary_field_named_twice),
        cmocka_unit_test(test_vary_cap_on_names),
        cmocka_unit_test(test_vary_small_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
