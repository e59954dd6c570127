/*
 * Unit tests for the stored metadata encoding (src/cache/meta.c): a round trip with fields
 * (field bytes pointing into the encoding, not copied), the exact bytes of a small encoding,
 * every truncation of a valid encoding and a trailing byte refused, a wrong version, a field
 * name that is not a token and a value or reason with CR, LF or NUL refused, lengths past the
 * bounds on both sides, more fields than max_fields (WEIR_ELIMIT), an arena too small
 * (WEIR_ENOMEM), and peek reading the fixed part alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache/cc.h"
#include "http/head.h"
#include "weir/error.h"

#define FIXED 55 /* the fixed part's bytes (meta.c's format comment) */

struct fx {
    struct weir_arena *a;
    struct weir_headers h;
    struct weir__cache_meta m;
};

static int setup(void **state)
{
    static struct fx fx;
    memset(&fx, 0, sizeof(fx));
    if (weir_arena_new(4096, 16 << 20, &fx.a) != 0 || weir__headers_init(&fx.h, fx.a, 4, 128)) {
        return -1;
    }
    fx.m = (struct weir__cache_meta){
        .status = 203,
        .times = {-5, 1700000000, 1699999999, 42},
        .fresh_s = 600,
        .swr_s = 30,
        .sie_s = 86400,
        .flags = WEIR_CACHE_META_MUST_REVALIDATE | WEIR_CACHE_META_VARY,
        .body_len = WEIR_CACHE_LEN_UNKNOWN,
        .reason = WEIR_IOV_LIT("Non-Authoritative Information"),
        .headers = &fx.h,
    };
    if (weir_headers_add(&fx.h, "Content-Type", "text/html; charset=utf-8") != 0 ||
        weir_headers_add(&fx.h, "ETag", "\"abc\"") != 0 ||
        weir_headers_add(&fx.h, "X-Empty", "") != 0 ||
        weir_headers_add(&fx.h, "x-tab", "a\tb \x80\xff") != 0 ||
        weir_headers_add(&fx.h, "Vary", "Accept-Encoding") != 0) {
        return -1;
    }
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    weir_arena_free(fx->a);
    fx->a = NULL;
    return 0;
}

/* m encoded into a new heap buffer of exactly its size (*len). */
static char *encode(const struct weir__cache_meta *m, size_t *len)
{
    size_t n = weir__cache_meta_size(m);
    assert_true(n > 0);
    char *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(weir__cache_meta_encode(m, buf, n), n);
    *len = n;
    return buf;
}

static int decode(struct fx *fx, const char *buf, size_t len, uint32_t max,
                  struct weir__cache_meta *out, struct weir_headers **h)
{
    *h = (struct weir_headers *)(uintptr_t)1; /* must be cleared on failure */
    return weir__cache_meta_decode(buf, len, out, fx->a, max, h);
}

static void assert_same_fixed(const struct weir__cache_meta *a, const struct weir__cache_meta *b)
{
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->times.request_time, b->times.request_time);
    assert_int_equal(a->times.response_time, b->times.response_time);
    assert_int_equal(a->times.date, b->times.date);
    assert_int_equal(a->times.age, b->times.age);
    assert_int_equal(a->fresh_s, b->fresh_s);
    assert_int_equal(a->swr_s, b->swr_s);
    assert_int_equal(a->sie_s, b->sie_s);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->body_len, b->body_len);
}

static void test_round_trip(void **state)
{
    struct fx *fx = *state;
    size_t len = 0;
    char *buf = encode(&fx->m, &len);
    assert_int_equal(buf[0], WEIR_CACHE_META_VERSION);
    struct weir__cache_meta out;
    struct weir_headers *h = NULL;
    assert_int_equal(decode(fx, buf, len, 64, &out, &h), 0);
    assert_non_null(h);
    assert_ptr_equal(out.headers, h);
    assert_same_fixed(&out, &fx->m);
    assert_true(weir_iov_eq(out.reason, fx->m.reason));
    assert_true(out.reason.base > buf && out.reason.base < buf + len);
    assert_int_equal(weir_headers_count(h), weir_headers_count(&fx->h));
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        const struct weir_header *got = weir_headers_at(h, i), *want = weir_headers_at(&fx->h, i);
        assert_true(weir_iov_eq(got->name, want->name));
        assert_true(weir_iov_eq(got->value, want->value));
        /* into buf, not copied */
        assert_true(got->name.base > buf && got->name.base + got->name.len <= buf + len);
        assert_true(got->value.base >= buf && got->value.base + got->value.len <= buf + len);
    }
    struct weir_iov v;
    assert_true(weir_headers_get(h, "etag", &v));
    assert_true(weir_iov_eq(v, WEIR_IOV_LIT("\"abc\"")));
    /* the decoded map takes edits up to max_fields */
    assert_int_equal(weir_headers_add(h, "Age", "3"), 0);
    assert_int_equal(weir_headers_count(h), 6);
    assert_true(h->max == 64);

    /* the decoded metadata encodes back to the same bytes */
    weir_headers_remove(h, "Age");
    size_t len2 = 0;
    char *buf2 = encode(&out, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, buf, len);
    free(buf2);

    /* a bigger buffer: the same bytes, nothing more written */
    char *big = malloc(len + 16);
    assert_non_null(big);
    memset(big, 0x5a, len + 16);
    assert_int_equal(weir__cache_meta_encode(&fx->m, big, len + 16), len);
    assert_memory_equal(big, buf, len);
    for (size_t i = len; i < len + 16; i++) {
        assert_int_equal((unsigned char)big[i], 0x5a);
    }
    /* too small a buffer */
    assert_int_equal(weir__cache_meta_encode(&fx->m, big, len - 1), 0);
    assert_int_equal(weir__cache_meta_encode(&fx->m, NULL, len), 0);
    free(big);
    free(buf);
}

static void test_exact_bytes(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(4096, 1 << 20, &a), 0);
    struct weir_headers h;
    assert_int_equal(weir__headers_init(&h, a, 1, 4), 0);
    assert_int_equal(weir_headers_add(&h, "A", "bc"), 0);
    struct weir__cache_meta m = {
        .status = 564, /* 0x0234 */
        .times = {-2, 0x0102030405060708LL, 1, 0xaabbccdd},
        .fresh_s = 1,
        .swr_s = 2,
        .sie_s = 3,
        .flags = 0x80000001u,
        .body_len = 0x1122334455667788ull,
        .reason = WEIR_IOV_LIT("Hi"),
        .headers = &h,
    };
    static const unsigned char want[] = {
        1,                                                            /* version */
        0x34, 0x02,                                                   /* status 564 */
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,               /* request_time -2 */
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,               /* response_time */
        0x01, 0,    0,    0,    0,    0,    0,    0,                  /* date 1 */
        0xdd, 0xcc, 0xbb, 0xaa,                                       /* age */
        1,    0,    0,    0,    2,    0,    0,    0,    3,   0, 0, 0, /* fresh, swr, sie */
        0x01, 0,    0,    0x80,                                       /* flags */
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,               /* body_len */
        2,    0,    'H',  'i',                                        /* reason */
        1,    0,                                                      /* one field */
        1,    0,    'A',  2,    0,    0,    0,    'b',  'c',          /* A: bc */
    };
    assert_int_equal(weir__cache_meta_size(&m), sizeof(want));
    char buf[sizeof(want)];
    assert_int_equal(weir__cache_meta_encode(&m, buf, sizeof(buf)), sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    struct weir__cache_meta out;
    struct weir_headers *hp = NULL;
    assert_int_equal(weir__cache_meta_decode(buf, sizeof(buf), &out, a, 4, &hp), 0);
    assert_same_fixed(&out, &m);
    /* no fields, no reason, no headers map at all */
    m.headers = NULL;
    m.reason = (struct weir_iov){NULL, 0};
    assert_int_equal(weir__cache_meta_size(&m), FIXED + 4);
    assert_int_equal(weir__cache_meta_encode(&m, buf, sizeof(buf)), FIXED + 4);
    assert_int_equal(weir__cache_meta_decode(buf, FIXED + 4, &out, a, 0, &hp), 0);
    assert_non_null(hp);
    assert_int_equal(weir_headers_count(hp), 0);
    assert_int_equal(out.reason.len, 0);
    weir_arena_free(a);
}

static void test_truncations_and_trailing(void **state)
{
    struct fx *fx = *state;
    size_t len = 0;
    char *buf = encode(&fx->m, &len);
    for (size_t n = 0; n < len; n++) {
        /* each prefix in a buffer of exactly its size, so a read past it is caught by ASan */
        char *cut = malloc(n ? n : 1);
        assert_non_null(cut);
        memcpy(cut, buf, n);
        struct weir__cache_meta out;
        struct weir_headers *h = NULL;
        assert_int_equal(decode(fx, cut, n, 64, &out, &h), WEIR_EINVAL);
        assert_null(h);
        free(cut);
    }
    char *more = malloc(len + 1);
    assert_non_null(more);
    memcpy(more, buf, len);
    for (int b = 0; b < 256; b += 85) {
        more[len] = (char)b;
        struct weir__cache_meta out;
        struct weir_headers *h = NULL;
        assert_int_equal(decode(fx, more, len + 1, 64, &out, &h), WEIR_EINVAL);
        assert_null(h);
    }
    struct weir__cache_meta out;
    struct weir_headers *h = NULL;
    assert_int_equal(weir__cache_meta_decode(NULL, 0, &out, fx->a, 64, &h), WEIR_EINVAL);
    assert_int_equal(weir__cache_meta_peek(NULL, 0, &out), WEIR_EINVAL);
    free(more);
    free(buf);
}

static void test_version_and_status(void **state)
{
    struct fx *fx = *state;
    size_t len = 0;
    char *buf = encode(&fx->m, &len);
    struct weir__cache_meta out;
    struct weir_headers *h = NULL;
    static const unsigned char versions[] = {0, 2, 0x81, 0xff};
    for (size_t i = 0; i < sizeof(versions); i++) {
        buf[0] = (char)versions[i];
        assert_int_equal(decode(fx, buf, len, 64, &out, &h), WEIR_EINVAL);
        assert_null(h);
        assert_int_equal(weir__cache_meta_peek(buf, len, &out), WEIR_EINVAL);
    }
    buf[0] = WEIR_CACHE_META_VERSION;
    /* status outside 100..999, on both sides */
    static const uint16_t statuses[] = {0, 99, 1000, 0xffff};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        buf[1] = (char)(statuses[i] & 0xff);
        buf[2] = (char)(statuses[i] >> 8);
        assert_int_equal(decode(fx, buf, len, 64, &out, &h), WEIR_EINVAL);
        assert_int_equal(weir__cache_meta_peek(buf, len, &out), WEIR_EINVAL);
        struct weir__cache_meta m = fx->m;
        m.status = statuses[i];
        assert_int_equal(weir__cache_meta_size(&m), 0);
        assert_int_equal(weir__cache_meta_encode(&m, buf + len, 0), 0);
    }
    free(buf);
}

/* Offset of field i's name length in an encoding of fx->m. */
static size_t field_at(const struct fx *fx, size_t i)
{
    size_t off = FIXED + 2 + fx->m.reason.len + 2;
    for (size_t k = 0; k < i; k++) {
        const struct weir_header *f = weir_headers_at(&fx->h, k);
        off += 2 + f->name.len + 4 + f->value.len;
    }
    return off;
}

static void expect_einval(struct fx *fx, const char *buf, size_t len)
{
    struct weir__cache_meta out;
    struct weir_headers *h = NULL;
    assert_int_equal(decode(fx, buf, len, 64, &out, &h), WEIR_EINVAL);
    assert_null(h);
}

static void test_bad_bytes(void **state)
{
    struct fx *fx = *state;
    size_t len = 0;
    char *buf = encode(&fx->m, &len);
    char *work = malloc(len);
    assert_non_null(work);
    /* a name byte that is no tchar, in each field */
    static const char not_tchar[] = {' ', ':', '\0', '\r', '\n', '"', '(', '@', '\x7f', '\x80'};
    for (size_t i = 0; i < weir_headers_count(&fx->h); i++) {
        for (size_t k = 0; k < sizeof(not_tchar); k++) {
            memcpy(work, buf, len);
            work[field_at(fx, i) + 2] = not_tchar[k];
            expect_einval(fx, work, len);
        }
    }
    /* CR, LF, NUL and other CTLs in a value (field 0's value starts after its lengths) */
    size_t v0 = field_at(fx, 0) + 2 + strlen("Content-Type") + 4;
    static const char bad_value[] = {'\r', '\n', '\0', '\x01', '\x1f', '\x7f'};
    for (size_t k = 0; k < sizeof(bad_value); k++) {
        memcpy(work, buf, len);
        work[v0 + 3] = bad_value[k];
        expect_einval(fx, work, len);
    }
    /* ... and in the reason */
    for (size_t k = 0; k < sizeof(bad_value); k++) {
        memcpy(work, buf, len);
        work[FIXED + 2 + 4] = bad_value[k];
        expect_einval(fx, work, len);
    }
    /* HTAB, SP and obs-text are fine in a value */
    memcpy(work, buf, len);
    work[v0] = '\t';
    work[v0 + 1] = (char)0xfe;
    struct weir__cache_meta out;
    struct weir_headers *h = NULL;
    assert_int_equal(decode(fx, work, len, 64, &out, &h), 0);
    /* an empty name */
    memcpy(work, buf, len);
    size_t f4 = field_at(fx, 4); /* Vary: Accept-Encoding, the last */
    work[f4] = 0;
    work[f4 + 1] = 0;
    expect_einval(fx, work, len);
    /* lengths that run past the end, or past the bounds */
    memcpy(work, buf, len);
    work[f4] = (char)0xff;
    work[f4 + 1] = (char)0xff;
    expect_einval(fx, work, len);
    memcpy(work, buf, len);
    work[FIXED] = (char)0xff; /* reason length */
    expect_einval(fx, work, len);
    memcpy(work, buf, len);
    size_t count = FIXED + 2 + fx->m.reason.len;
    work[count] = (char)0xff; /* field count 65535 with the bytes of 5 */
    work[count + 1] = (char)0xff;
    expect_einval(fx, work, len);
    work[count] = 4; /* 4 fields and the fifth's bytes trailing */
    work[count + 1] = 0;
    expect_einval(fx, work, len);
    work[count] = 6; /* one field more than there is */
    expect_einval(fx, work, len);
    free(work);
    free(buf);
}

static void test_value_bounds(void **state)
{
    struct fx *fx = *state;
    struct weir_headers h;
    assert_int_equal(weir__headers_init(&h, fx->a, 1, 4), 0);
    char *big = malloc(65537);
    assert_non_null(big);
    memset(big, 'v', 65537);
    /* a value of 64 KiB is stored; one byte more is over the bound */
    assert_int_equal(weir_headers_add_iov(&h, WEIR_IOV_LIT("Big"), (struct weir_iov){big, 65536}),
                     0);
    struct weir__cache_meta m = fx->m;
    m.headers = &h;
    size_t len = 0;
    char *buf = encode(&m, &len);
    struct weir__cache_meta out;
    struct weir_headers *hp = NULL;
    assert_int_equal(decode(fx, buf, len, 4, &out, &hp), 0);
    assert_int_equal(weir_headers_at(hp, 0)->value.len, 65536);
    h.v[0].value.len = 65537;
    assert_int_equal(weir__cache_meta_size(&m), 0);
    assert_int_equal(weir__cache_meta_encode(&m, buf, len), 0);
    /* the decoder refuses a 65537-byte value even when the bytes are there */
    char *over = malloc(len + 1);
    assert_non_null(over);
    memcpy(over, buf, len);
    over[len] = 'v';
    size_t vlen_at = FIXED + 2 + m.reason.len + 2 + 2 + 3;
    assert_int_equal((unsigned char)over[vlen_at + 2], 1); /* 65536 = 0x00010000 */
    over[vlen_at] = 1;
    expect_einval(fx, over, len + 1);
    /* a name that is not a token, a reason with LF, a value with NUL: refused by encode too */
    h.v[0].value.len = 1;
    h.v[0].name = WEIR_IOV_LIT("Bad Name");
    assert_int_equal(weir__cache_meta_size(&m), 0);
    h.v[0].name = (struct weir_iov){NULL, 0};
    assert_int_equal(weir__cache_meta_size(&m), 0);
    h.v[0].name = WEIR_IOV_LIT("Ok");
    h.v[0].value = (struct weir_iov){"a\0b", 3};
    assert_int_equal(weir__cache_meta_size(&m), 0);
    h.v[0].value = WEIR_IOV_LIT("ok");
    assert_true(weir__cache_meta_size(&m) > 0);
    m.reason = WEIR_IOV_LIT("O\nK");
    assert_int_equal(weir__cache_meta_size(&m), 0);
    m.reason = (struct weir_iov){big, 65536};
    assert_int_equal(weir__cache_meta_size(&m), 0);
    m.reason = (struct weir_iov){big, 65535};
    assert_true(weir__cache_meta_size(&m) > 0);
    free(over);
    free(buf);
    free(big);
}

static void test_max_fields(void **state)
{
    struct fx *fx = *state;
    size_t len = 0;
    char *buf = encode(&fx->m, &len); /* five fields */
    struct weir__cache_meta out;
    struct weir_headers *h = NULL;
    assert_int_equal(decode(fx, buf, len, 4, &out, &h), WEIR_ELIMIT);
    assert_null(h);
    assert_int_equal(decode(fx, buf, len, 0, &out, &h), WEIR_ELIMIT);
    assert_int_equal(decode(fx, buf, len, 5, &out, &h), 0);
    assert_int_equal(weir_headers_count(h), 5);
    assert_int_equal(weir_headers_add(h, "One", "more"), WEIR_ELIMIT);
    /* malformed beats too many: the verdict is about the bytes first */
    buf[0] = 9;
    assert_int_equal(decode(fx, buf, len, 4, &out, &h), WEIR_EINVAL);
    free(buf);
}

static void test_enomem(void **state)
{
    struct fx *fx = *state;
    size_t len = 0;
    char *buf = encode(&fx->m, &len);
    /* arenas from too small for the map to big enough for map and fields */
    bool failed = false, passed = false;
    for (size_t cap = 0; cap <= 1024; cap += 8) {
        struct weir_arena *a = NULL;
        assert_int_equal(weir_arena_new(256, cap, &a), 0);
        struct weir__cache_meta out;
        struct weir_headers *h = (struct weir_headers *)(uintptr_t)1;
        int rc = weir__cache_meta_decode(buf, len, &out, a, 64, &h);
        if (rc == WEIR_ENOMEM) {
            assert_null(h);
            failed = true;
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(weir_headers_count(h), 5);
            passed = true;
        }
        weir_arena_free(a);
    }
    assert_true(failed && passed);
    free(buf);
}

static void test_peek(void **state)
{
    struct fx *fx = *state;
    size_t len = 0;
    char *buf = encode(&fx->m, &len);
    struct weir__cache_meta out;
    memset(&out, 0x77, sizeof(out));
    assert_int_equal(weir__cache_meta_peek(buf, len, &out), 0);
    assert_same_fixed(&out, &fx->m);
    assert_null(out.headers);
    assert_int_equal(out.reason.len, 0);
    /* the fixed part is enough; less is not */
    assert_int_equal(weir__cache_meta_peek(buf, FIXED, &out), 0);
    assert_same_fixed(&out, &fx->m);
    for (size_t n = 0; n < FIXED; n++) {
        struct weir__cache_meta keep;
        memset(&keep, 0x33, sizeof(keep));
        assert_int_equal(weir__cache_meta_peek(buf, n, &keep), WEIR_EINVAL);
        assert_int_equal(keep.status, 0x3333); /* untouched */
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test_setup_teardown(test_truncations_and_trailing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_value_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enomem, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peek, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
