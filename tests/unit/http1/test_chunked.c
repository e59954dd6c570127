/*
 * Unit tests for the chunked transfer-coding decoder and the size-line writer
 * (src/http1/chunked.c): valid and invalid framings, extensions, trailers, bounds, overflow,
 * and the same result whichever way the input is split.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http1/h1.h"

#define MAX_LINE    64
#define MAX_TRAILER 128

enum { R_DONE = 0, R_MORE = 1 };

struct result {
    int rc; /* R_DONE, R_MORE (input ended first) or a WEIR_E* code */
    char data[8192];
    size_t dlen;
    char trailers[1024];
    size_t tlen;
    size_t leftover; /* bytes after the message */
};

/*
 * Decodes in[0..len) delivered in pieces ending at cuts[0..ncuts) and then len, keeping the
 * unconsumed bytes as a real caller would.
 */
static void run(const char *in, size_t len, const size_t *cuts, size_t ncuts, struct result *res)
{
    static char buf[16384];
    struct weir__h1_chunked st;
    weir__h1_chunked_init(&st, MAX_LINE, MAX_TRAILER);
    size_t have = 0, fed = 0;
    memset(res, 0, sizeof(*res));
    res->rc = R_MORE;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t upto = c < ncuts ? cuts[c] : len;
        memcpy(buf + have, in + fed, upto - fed);
        have += upto - fed;
        fed = upto;
        for (;;) {
            struct weir__h1_chunk_out out;
            ssize_t n = weir__h1_chunked_decode(&st, buf, have, &out);
            if (n < 0) {
                res->rc = (int)n;
                return;
            }
            assert_true((size_t)n <= have);
            if (out.data.len) {
                assert_true(out.data.base >= buf && out.data.base + out.data.len <= buf + n);
                assert_true(res->dlen + out.data.len <= sizeof(res->data));
                memcpy(res->data + res->dlen, out.data.base, out.data.len);
                res->dlen += out.data.len;
            }
            if (out.done) {
                assert_int_equal(out.data.len, 0);
                if (out.trailers.len) {
                    memcpy(res->trailers, out.trailers.base, out.trailers.len);
                }
                res->tlen = out.trailers.len;
                res->rc = R_DONE;
                res->leftover = have - (size_t)n + (len - fed);
                return;
            }
            memmove(buf, buf + n, have - (size_t)n);
            have -= (size_t)n;
            if (n == 0 && out.data.len == 0) {
                break;
            }
        }
    }
}

static void assert_same(const struct result *a, const struct result *b, const char *what)
{
    if (a->rc != b->rc || a->dlen != b->dlen || memcmp(a->data, b->data, a->dlen) != 0 ||
        a->tlen != b->tlen || memcmp(a->trailers, b->trailers, a->tlen) != 0 ||
        a->leftover != b->leftover) {
        fail_msg("%s: rc %d/%d dlen %zu/%zu tlen %zu/%zu", what, a->rc, b->rc, a->dlen, b->dlen,
                 a->tlen, b->tlen);
    }
}

/* One shot, every two-piece split and byte at a time must agree. */
static void check_splits(const char *in, size_t len, struct result *one)
{
    run(in, len, NULL, 0, one);
    struct result r;
    for (size_t k = 0; k <= len; k++) {
        run(in, len, &k, 1, &r);
        assert_same(one, &r, "two pieces");
    }
    static size_t cuts[4096];
    for (size_t k = 0; k < len && k < 4096; k++) {
        cuts[k] = k + 1;
    }
    run(in, len, cuts, len < 4096 ? len : 4096, &r);
    assert_same(one, &r, "bytewise");
    /* Three pieces for short inputs. */
    if (len <= 48) {
        for (size_t i = 0; i <= len; i++) {
            for (size_t j = i; j <= len; j++) {
                size_t c3[2] = {i, j};
                run(in, len, c3, 2, &r);
                assert_same(one, &r, "three pieces");
            }
        }
    }
}

struct ok_case {
    const char *in;
    const char *data;
    const char *trailers;
    size_t leftover;
};

static const struct ok_case ok_cases[] = {
    {"0\r\n\r\n", "", "", 0},
    {"5\r\nhello\r\n0\r\n\r\n", "hello", "", 0},
    {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", "", 0},
    {"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij", "", 0},
    {"1\r\nx\r\n1\r\ny\r\n1\r\nz\r\n0\r\n\r\n", "xyz", "", 0},
    {"0005\r\nhello\r\n0000\r\n\r\n", "hello", "", 0},
    {"5;name=value\r\nhello\r\n0;last\r\n\r\n", "hello", "", 0},
    {"5 ;x\r\nhello\r\n0\t; y = \"q;\"\r\n\r\n", "hello", "", 0},
    {"5;x=\"\xc3\xa9\"\r\nhello\r\n0\r\n\r\n", "hello", "", 0},
    {"3\r\n\r\n\r\r\n0\r\n\r\n", "\r\n\r", "", 0},
    {"0\r\nExpires: never\r\n\r\n", "", "Expires: never\r\n", 0},
    {"2\r\nab\r\n0\r\nX-A: 1\r\nx-b:\t2 \r\nEmpty:\r\n\r\n", "ab",
     "X-A: 1\r\nx-b:\t2 \r\nEmpty:\r\n", 0},
    {"0\r\n\r\nGET / HTTP/1.1\r\n", "", "", 16},
    {"1\r\n\xff\r\n0\r\n\r\n\r\n", "\xff", "", 2},
};

static void test_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(ok_cases) / sizeof(ok_cases[0]); i++) {
        const struct ok_case *c = &ok_cases[i];
        struct result r;
        check_splits(c->in, strlen(c->in), &r);
        if (r.rc != R_DONE) {
            fail_msg("case %zu: rc %d", i, r.rc);
        }
        assert_int_equal(r.dlen, strlen(c->data));
        assert_memory_equal(r.data, c->data, r.dlen);
        assert_int_equal(r.tlen, strlen(c->trailers));
        assert_memory_equal(r.trailers, c->trailers, r.tlen);
        assert_int_equal(r.leftover, c->leftover);
    }
}

static const char *const bad_cases[] = {
    "\r\n",                     /* empty size */
    ";x\r\n",                   /* extension without size */
    " 5\r\nhello\r\n0\r\n\r\n", /* leading space */
    "5 \r\nhello\r\n0\r\n\r\n", /* trailing space, no extension */
    "5\t\r\nhello\r\n0\r\n\r\n",
    "x\r\n",
    "5x\r\nhello\r\n0\r\n\r\n",
    "-5\r\n",
    "+5\r\n",
    "0x5\r\n",
    "5\n", /* bare LF */
    "5\r\r\n",
    "5\rhello\r\n",
    "\n",
    "5\r\nhello\n0\r\n\r\n", /* bare LF after data */
    "5\r\nhelloX\r\n",
    "5\r\nhello\r\r\n",
    "5\r\nhello\n",
    "5\r\nhello0\r\n\r\n",
    "5;a\x01\r\nhello\r\n0\r\n\r\n",
    "5;\x7f\r\nhello\r\n0\r\n\r\n",
    "5;a\rb\r\nhello\r\n0\r\n\r\n",
    "5;a\nb\r\nhello\r\n0\r\n\r\n",
    "8000000000000000\r\n",  /* 2^63 */
    "10000000000000000\r\n", /* 2^64 */
    "fffffffffffffffff\r\n",
    "ffffffffffffffffffffffffffffffff5\r\nhello\r\n",
    "0\r\nX: a\nb\r\n\r\n", /* trailers */
    "0\r\n X: folded\r\n\r\n",
    "0\r\nX: a\r\n folded\r\n\r\n",
    "0\r\nBad Name: x\r\n\r\n",
    "0\r\nX : x\r\n\r\n",
    "0\r\n: x\r\n\r\n",
    "0\r\nNoColon\r\n\r\n",
    "0\r\nX: a\x01\r\n\r\n",
    "0\r\nX: a\x7f\r\n\r\n",
    "0\r\n\n",
    "0\r\n\rX",
    "0\r\nX: 1\r\n\n",
    "0\n\r\n",
};

static void test_invalid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        struct result r;
        check_splits(bad_cases[i], strlen(bad_cases[i]), &r);
        if (r.rc != WEIR_EH1_BAD) {
            fail_msg("case %zu: rc %d for %s", i, r.rc, bad_cases[i]);
        }
    }
    /* NUL in an extension or a trailer. */
    static const char nul_ext[] = "1;\0\r\nx\r\n0\r\n\r\n";
    static const char nul_tr[] = "0\r\nX: \0\r\n\r\n";
    struct result r;
    check_splits(nul_ext, sizeof(nul_ext) - 1, &r);
    assert_int_equal(r.rc, WEIR_EH1_BAD);
    check_splits(nul_tr, sizeof(nul_tr) - 1, &r);
    assert_int_equal(r.rc, WEIR_EH1_BAD);
}

static void test_incomplete(void **state)
{
    (void)state;
    static const char *const partial[] = {
        "",
        "5",
        "5\r",
        "5\r\n",
        "5\r\nhel",
        "5\r\nhello",
        "5\r\nhello\r",
        "5\r\nhello\r\n",
        "5\r\nhello\r\n0",
        "5\r\nhello\r\n0\r\n",
        "5\r\nhello\r\n0\r\n\r",
        "0\r\nX: 1\r\n",
        "0\r\nX: 1",
        "5;ext",
        "7fffffffffffffff\r\n",
    };
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        struct result r;
        check_splits(partial[i], strlen(partial[i]), &r);
        if (r.rc != R_MORE) {
            fail_msg("case %zu: rc %d for %s", i, r.rc, partial[i]);
        }
    }
}

static void test_max_size(void **state)
{
    (void)state;
    struct weir__h1_chunked st;
    struct weir__h1_chunk_out out;
    weir__h1_chunked_init(&st, MAX_LINE, MAX_TRAILER);
    static const char in[] = "7fffffffffffffff\r\nabc";
    assert_int_equal(weir__h1_chunked_decode(&st, in, sizeof(in) - 1, &out), sizeof(in) - 1);
    assert_int_equal(out.data.len, 3);
    assert_int_equal(st.remaining, UINT64_C(0x7fffffffffffffff) - 3);
    assert_false(out.done);
    /* Leading zeros do not count towards overflow. */
    weir__h1_chunked_init(&st, MAX_LINE, MAX_TRAILER);
    static const char z[] = "00000000000000000000000000000001\r\nx";
    assert_int_equal(weir__h1_chunked_decode(&st, z, sizeof(z) - 1, &out), sizeof(z) - 1);
    assert_int_equal(out.data.len, 1);
}

static void test_bounds(void **state)
{
    (void)state;
    char in[1024];
    struct result r;
    /* A size line of exactly MAX_LINE bytes (before CRLF) passes; one more fails. */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = 0;
        memcpy(in, "1;", 2);
        n = 2;
        memset(in + n, 'e', MAX_LINE - 2 + (size_t)extra);
        n += MAX_LINE - 2 + (size_t)extra;
        memcpy(in + n, "\r\nx\r\n0\r\n\r\n", 10);
        n += 10;
        check_splits(in, n, &r);
        assert_int_equal(r.rc, extra ? WEIR_EH1_BAD : R_DONE);
    }
    /* Without any LF, the error comes once MAX_LINE + 2 bytes are in. */
    memset(in, '0', sizeof(in));
    check_splits(in, MAX_LINE + 1, &r);
    assert_int_equal(r.rc, R_MORE);
    check_splits(in, MAX_LINE + 2, &r);
    assert_int_equal(r.rc, WEIR_EH1_BAD);
    /* Trailer section: field lines up to MAX_TRAILER bytes pass; one more fails. */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = 0;
        memcpy(in, "0\r\nX: ", 6);
        n = 6;
        size_t pad = MAX_TRAILER - 5 + (size_t)extra;
        memset(in + n, 'v', pad);
        n += pad;
        memcpy(in + n, "\r\n\r\n", 4);
        n += 4;
        check_splits(in, n, &r);
        assert_int_equal(r.rc, extra ? WEIR_EH1_BAD : R_DONE);
        if (!extra) {
            assert_int_equal(r.tlen, MAX_TRAILER);
        }
    }
    /* Many short trailer lines are bounded too. */
    size_t n = 3;
    memcpy(in, "0\r\n", 3);
    while (n + 6 < sizeof(in)) {
        memcpy(in + n, "A: b\r\n", 6);
        n += 6;
    }
    check_splits(in, n, &r);
    assert_int_equal(r.rc, WEIR_EH1_BAD);
}

static void test_zeroed_state(void **state)
{
    (void)state;
    /* A zeroed state (no init) uses default bounds rather than zero-byte ones. */
    struct weir__h1_chunked st;
    memset(&st, 0, sizeof(st));
    struct weir__h1_chunk_out out;
    static const char in[] = "3;ext\r\nabc\r\n0\r\nT: 1\r\n\r\n";
    assert_int_equal(weir__h1_chunked_decode(&st, in, sizeof(in) - 1, &out), 10);
    assert_int_equal(out.data.len, 3);
    assert_int_equal(weir__h1_chunked_decode(&st, in + 10, sizeof(in) - 11, &out), sizeof(in) - 11);
    assert_true(out.done);
    assert_int_equal(out.trailers.len, 6);
    /* After done, calls consume nothing and keep reporting done. */
    assert_int_equal(weir__h1_chunked_decode(&st, "xyz", 3, &out), 0);
    assert_true(out.done);
}

static void test_error_sticks(void **state)
{
    (void)state;
    struct weir__h1_chunked st;
    struct weir__h1_chunk_out out;
    weir__h1_chunked_init(&st, MAX_LINE, MAX_TRAILER);
    assert_int_equal(weir__h1_chunked_decode(&st, "z\r\n", 3, &out), WEIR_EH1_BAD);
    assert_int_equal(weir__h1_chunked_decode(&st, "0\r\n\r\n", 5, &out), WEIR_EH1_BAD);
}

static void test_large_body(void **state)
{
    (void)state;
    /* Many chunks of assorted sizes, checked at every split. */
    static char in[6000];
    static char want[4096];
    size_t n = 0, w = 0;
    for (size_t sz = 1; w + sz < sizeof(want) && sz < 600; sz = sz * 3 + 1) {
        char line[24];
        size_t l = weir__h1_chunk_size_line(line, sz);
        memcpy(in + n, line, l);
        n += l;
        for (size_t i = 0; i < sz; i++) {
            want[w] = (char)('a' + (w % 26));
            in[n++] = want[w++];
        }
        memcpy(in + n, "\r\n", 2);
        n += 2;
    }
    memcpy(in + n, "0\r\nT: v\r\n\r\n", 11);
    n += 11;
    struct result r;
    check_splits(in, n, &r);
    assert_int_equal(r.rc, R_DONE);
    assert_int_equal(r.dlen, w);
    assert_memory_equal(r.data, want, w);
}

static void test_size_line(void **state)
{
    (void)state;
    static const struct {
        uint64_t size;
        const char *want;
    } cases[] = {
        {0, "0\r\n"},
        {1, "1\r\n"},
        {15, "f\r\n"},
        {16, "10\r\n"},
        {4096, "1000\r\n"},
        {0xdeadbeef, "deadbeef\r\n"},
        {UINT64_MAX, "ffffffffffffffff\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[20];
        size_t n = weir__h1_chunk_size_line(out, cases[i].size);
        assert_int_equal(n, strlen(cases[i].want));
        assert_memory_equal(out, cases[i].want, n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_incomplete),   cmocka_unit_test(test_max_size),
        cmocka_unit_test(test_bounds),       cmocka_unit_test(test_zeroed_state),
        cmocka_unit_test(test_error_sticks), cmocka_unit_test(test_large_body),
        cmocka_unit_test(test_size_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
