/*
 * Unit tests for the caching semantics in src/cache/cc.c: every Cache-Control directive,
 * case, quoted values, lists across fields, duplicates (first wins), malformed and huge
 * delta-seconds; the three HTTP-date forms, invalid dates and format/parse round trips
 * (against the C library's gmtime_r as an independent calendar); the freshness lifetime's
 * order of sources; the current age of RFC 9111 4.2.3; which responses a shared cache may
 * store, and the heuristically cacheable statuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cache/cc.h"
#include "http/head.h"
#include "weir/error.h"

static struct weir__cc cc_of(const char *v)
{
    struct weir__cc cc;
    memset(&cc, 0xa5, sizeof(cc)); /* parse must clear everything */
    weir__cc_parse_value(weir_iov_cstr(v), &cc);
    return cc;
}

/* ---- Cache-Control ---- */

static void test_cc_every_directive(void **state)
{
    (void)state;
    struct weir__cc cc = cc_of(
        "no-store, no-cache, private, public, must-revalidate, proxy-revalidate, no-transform, "
        "immutable, only-if-cached, max-age=1, s-maxage=2, stale-while-revalidate=3, "
        "stale-if-error=4, max-stale=5, min-fresh=6");
    assert_int_equal(cc.flags, 0x7fffu); /* every bit but WEIR_CC_INVALID */
    assert_int_equal(cc.max_age, 1);
    assert_int_equal(cc.s_maxage, 2);
    assert_int_equal(cc.stale_while_revalidate, 3);
    assert_int_equal(cc.stale_if_error, 4);
    assert_int_equal(cc.max_stale, 5);
    assert_int_equal(cc.min_fresh, 6);

    static const struct {
        const char *v;
        uint32_t flags;
    } one[] = {
        {"no-store", WEIR_CC_NO_STORE},
        {"no-cache", WEIR_CC_NO_CACHE},
        {"private", WEIR_CC_PRIVATE},
        {"public", WEIR_CC_PUBLIC},
        {"must-revalidate", WEIR_CC_MUST_REVALIDATE},
        {"proxy-revalidate", WEIR_CC_PROXY_REVALIDATE},
        {"no-transform", WEIR_CC_NO_TRANSFORM},
        {"immutable", WEIR_CC_IMMUTABLE},
        {"only-if-cached", WEIR_CC_ONLY_IF_CACHED},
        {"max-age=0", WEIR_CC_MAX_AGE},
        {"s-maxage=0", WEIR_CC_S_MAXAGE},
        {"stale-while-revalidate=0", WEIR_CC_SWR},
        {"stale-if-error=0", WEIR_CC_SIE},
        {"max-stale", WEIR_CC_MAX_STALE},
        {"min-fresh=0", WEIR_CC_MIN_FRESH},
        {"", 0},
        {" , ,, ", 0},
        {"no-storex, xno-store, no_store, nostore, max-agex=1", 0},
    };
    for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
        cc = cc_of(one[i].v);
        assert_int_equal(cc.flags, one[i].flags);
    }
    cc = cc_of("max-stale"); /* no value: any staleness */
    assert_int_equal(cc.max_stale, WEIR_CC_DELTA_MAX);
    cc = cc_of("max-age=0");
    assert_int_equal(cc.max_age, 0);
    assert_int_equal(cc.s_maxage, 0);
}

static void test_cc_case_insensitive(void **state)
{
    (void)state;
    struct weir__cc cc = cc_of("NO-STORE, Max-Age=10, S-MAXAGE=5, Stale-While-Revalidate=7, "
                               "PuBlIc, mUsT-rEvAlIdAtE, MAX-STALE=3, Min-Fresh=2");
    assert_int_equal(cc.flags, WEIR_CC_NO_STORE | WEIR_CC_MAX_AGE | WEIR_CC_S_MAXAGE | WEIR_CC_SWR |
                                   WEIR_CC_PUBLIC | WEIR_CC_MUST_REVALIDATE | WEIR_CC_MAX_STALE |
                                   WEIR_CC_MIN_FRESH);
    assert_int_equal(cc.max_age, 10);
    assert_int_equal(cc.s_maxage, 5);
    assert_int_equal(cc.stale_while_revalidate, 7);
    assert_int_equal(cc.max_stale, 3);
    assert_int_equal(cc.min_fresh, 2);
}

static void test_cc_quoted(void **state)
{
    (void)state;
    struct weir__cc cc = cc_of("max-age=\"60\"");
    assert_int_equal(cc.flags, WEIR_CC_MAX_AGE);
    assert_int_equal(cc.max_age, 60);
    /* qualified forms count as unqualified; the commas inside the quotes split nothing */
    cc = cc_of("no-cache=\"Set-Cookie, X-Foo\", private=\"Authorization\", s-maxage=9");
    assert_int_equal(cc.flags, WEIR_CC_NO_CACHE | WEIR_CC_PRIVATE | WEIR_CC_S_MAXAGE);
    assert_int_equal(cc.s_maxage, 9);
    /* an extension's quoted argument holding directive-like text */
    cc = cc_of("ext=\"a, max-age=9, no-store\", max-age=7");
    assert_int_equal(cc.flags, WEIR_CC_MAX_AGE);
    assert_int_equal(cc.max_age, 7);
    /* quoted-pairs: an escaped quote does not end the string */
    cc = cc_of("ext=\"a\\\", no-store\", public");
    assert_int_equal(cc.flags, WEIR_CC_PUBLIC);
    /* an escape in a number is not a number */
    cc = cc_of("max-age=\"6\\0\"");
    assert_int_equal(cc.flags, WEIR_CC_INVALID);
    /* an unterminated quote swallows the rest of the field */
    cc = cc_of("ext=\"abc, no-store");
    assert_int_equal(cc.flags, 0);
    cc = cc_of("max-age=\"5");
    assert_int_equal(cc.flags, WEIR_CC_INVALID);
    /* a leading quoted junk element hides what it quotes */
    cc = cc_of("\"junk, no-store\", immutable");
    assert_int_equal(cc.flags, WEIR_CC_IMMUTABLE);
    cc = cc_of("max-age=\"\"");
    assert_int_equal(cc.flags, WEIR_CC_INVALID);
}

static int add(struct weir_headers *h, const char *n, const char *v)
{
    return weir_headers_add(h, n, v);
}

static void test_cc_list_across_fields(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(4096, 1 << 20, &a), 0);
    struct weir_headers h;
    assert_int_equal(weir__headers_init(&h, a, 4, 64), 0);
    assert_int_equal(add(&h, "Cache-Control", "max-age=10"), 0);
    assert_int_equal(add(&h, "Pragma", "no-store"), 0); /* not Cache-Control */
    assert_int_equal(add(&h, "cache-control", " , no-cache, s-maxage=3"), 0);
    assert_int_equal(add(&h, "CACHE-CONTROL", ""), 0);
    assert_int_equal(add(&h, "Cache-Control", "max-age=99, ext=\"x"), 0); /* quote ends here */
    assert_int_equal(add(&h, "Cache-Control", "must-revalidate"), 0);
    assert_int_equal(add(&h, "X-Cache-Control", "private"), 0);
    struct weir__cc cc;
    weir__cc_parse(&h, &cc);
    assert_int_equal(cc.flags, WEIR_CC_MAX_AGE | WEIR_CC_NO_CACHE | WEIR_CC_S_MAXAGE |
                                   WEIR_CC_MUST_REVALIDATE);
    assert_int_equal(cc.max_age, 10); /* the first field's */
    assert_int_equal(cc.s_maxage, 3);

    /* no field at all, and no map */
    struct weir_headers empty;
    assert_int_equal(weir__headers_init(&empty, a, 0, 8), 0);
    memset(&cc, 0xff, sizeof(cc));
    weir__cc_parse(&empty, &cc);
    assert_int_equal(cc.flags, 0);
    memset(&cc, 0xff, sizeof(cc));
    weir__cc_parse(NULL, &cc);
    assert_int_equal(cc.flags, 0);
    assert_int_equal(cc.max_age, 0);

    /* a malformed first max-age in one field is not redeemed by a later field */
    struct weir_headers h2;
    assert_int_equal(weir__headers_init(&h2, a, 2, 8), 0);
    assert_int_equal(add(&h2, "Cache-Control", "max-age=x"), 0);
    assert_int_equal(add(&h2, "Cache-Control", "max-age=5"), 0);
    weir__cc_parse(&h2, &cc);
    assert_int_equal(cc.flags, WEIR_CC_INVALID);
    weir_arena_free(a);
}

static void test_cc_duplicates_first_wins(void **state)
{
    (void)state;
    struct weir__cc cc = cc_of("max-age=10, max-age=20");
    assert_int_equal(cc.max_age, 10);
    cc = cc_of("s-maxage=1, S-MaxAge=2, stale-if-error=3, stale-if-error=4, min-fresh=5, "
               "min-fresh=6, max-stale=7, max-stale, stale-while-revalidate=8, "
               "stale-while-revalidate=9");
    assert_int_equal(cc.s_maxage, 1);
    assert_int_equal(cc.stale_if_error, 3);
    assert_int_equal(cc.min_fresh, 5);
    assert_int_equal(cc.max_stale, 7);
    assert_int_equal(cc.stale_while_revalidate, 8);
    /* the first occurrence counts even when it is malformed */
    cc = cc_of("max-age=abc, max-age=5");
    assert_int_equal(cc.flags, WEIR_CC_INVALID);
    assert_int_equal(cc.max_age, 0);
    cc = cc_of("max-stale, max-stale=4");
    assert_int_equal(cc.max_stale, WEIR_CC_DELTA_MAX);
    cc = cc_of("stale-if-error=x, stale-if-error=4");
    assert_int_equal(cc.flags, 0);
    /* flags stay set */
    cc = cc_of("no-store, no-store, public, public");
    assert_int_equal(cc.flags, WEIR_CC_NO_STORE | WEIR_CC_PUBLIC);
}

static void test_cc_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "max-age=",       "max-age",     "max-age=-1",      "max-age=1.5",  "max-age=5x",
        "max-age=5 6",    "max-age=5;",  "max-age=0x10",    "max-age=+5",   "max-age==5",
        "max-age=\"5\"x", "max-age=1e3", "max-age=\"\\5\"", "s-maxage=abc", "s-maxage",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct weir__cc cc = cc_of(bad[i]);
        assert_true(cc.flags & WEIR_CC_INVALID);
        assert_false(cc.flags & (WEIR_CC_MAX_AGE | WEIR_CC_S_MAXAGE));
        assert_int_equal(cc.max_age, 0);
        assert_int_equal(cc.s_maxage, 0);
    }
    /* a malformed optional directive is ignored, not invalid */
    struct weir__cc cc =
        cc_of("stale-while-revalidate=x, stale-if-error, min-fresh=-1, max-stale=soon, max-age=3");
    assert_int_equal(cc.flags, WEIR_CC_MAX_AGE);
    assert_int_equal(cc.max_age, 3);
    /* junk elements are skipped; restrictive flags hold even in a malformed element,
     * permissive ones do not */
    cc = cc_of(";;;, no-store; x, public;, immutable=\"a\" b, private , must-revalidate foo");
    assert_int_equal(cc.flags, WEIR_CC_NO_STORE | WEIR_CC_PRIVATE | WEIR_CC_MUST_REVALIDATE);
    cc = cc_of("=5, =, max-age=4");
    assert_int_equal(cc.flags, WEIR_CC_MAX_AGE);
    assert_int_equal(cc.max_age, 4);
    /* whitespace: around elements and "=" is tolerated */
    cc = cc_of("\t max-age = 5 \t,\tpublic\t");
    assert_int_equal(cc.flags, WEIR_CC_MAX_AGE | WEIR_CC_PUBLIC);
    assert_int_equal(cc.max_age, 5);
    /* an argument on a flag is ignored */
    cc = cc_of("public=yes, no-store=1");
    assert_int_equal(cc.flags, WEIR_CC_PUBLIC | WEIR_CC_NO_STORE);
    /* NUL and CTL bytes in the value are junk, not the end */
    static const char nul[] = "no-store\0x, max-age=8";
    weir__cc_parse_value((struct weir_iov){nul, sizeof(nul) - 1}, &cc);
    assert_int_equal(cc.flags, WEIR_CC_NO_STORE | WEIR_CC_MAX_AGE);
    assert_int_equal(cc.max_age, 8);
}

static void test_cc_huge_delta(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        uint32_t want;
    } cases[] = {
        {"max-age=2147483647", 2147483647u},
        {"max-age=2147483648", WEIR_CC_DELTA_MAX},
        {"max-age=2147483649", WEIR_CC_DELTA_MAX},
        {"max-age=4294967296", WEIR_CC_DELTA_MAX},
        {"max-age=99999999999999999999999999999999999999", WEIR_CC_DELTA_MAX},
        {"max-age=00000000000000000000000000000000000042", 42},
        {"max-age=\"18446744073709551617\"", WEIR_CC_DELTA_MAX},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct weir__cc cc = cc_of(cases[i].v);
        assert_int_equal(cc.flags, WEIR_CC_MAX_AGE);
        assert_int_equal(cc.max_age, cases[i].want);
    }
    struct weir__cc cc = cc_of("s-maxage=1000000000000, stale-if-error=1000000000000, "
                               "stale-while-revalidate=3000000000, min-fresh=9999999999, "
                               "max-stale=9999999999");
    assert_int_equal(cc.s_maxage, WEIR_CC_DELTA_MAX);
    assert_int_equal(cc.stale_if_error, WEIR_CC_DELTA_MAX);
    assert_int_equal(cc.stale_while_revalidate, WEIR_CC_DELTA_MAX);
    assert_int_equal(cc.min_fresh, WEIR_CC_DELTA_MAX);
    assert_int_equal(cc.max_stale, WEIR_CC_DELTA_MAX);
}

/* ---- HTTP-date ---- */

static bool date_of(const char *s, int64_t *t)
{
    *t = 12345;
    return weir__http_date_parse(weir_iov_cstr(s), t);
}

static void test_date_forms(void **state)
{
    (void)state;
    int64_t t = 0;
    /* RFC 9110 5.6.7's example in its three forms */
    assert_true(date_of("Sun, 06 Nov 1994 08:49:37 GMT", &t));
    assert_int_equal(t, 784111777);
    assert_true(date_of("Sunday, 06-Nov-94 08:49:37 GMT", &t));
    assert_int_equal(t, 784111777);
    assert_true(date_of("Sun Nov  6 08:49:37 1994", &t));
    assert_int_equal(t, 784111777);
    assert_true(date_of("Sun Nov 06 08:49:37 1994", &t)); /* asctime's 2DIGIT day */
    assert_int_equal(t, 784111777);
    assert_true(date_of(" \tSun, 06 Nov 1994 08:49:37 GMT \t", &t)); /* OWS around */
    assert_int_equal(t, 784111777);

    assert_true(date_of("Thu, 01 Jan 1970 00:00:00 GMT", &t));
    assert_int_equal(t, 0);
    assert_true(date_of("Wed, 31 Dec 1969 23:59:59 GMT", &t));
    assert_int_equal(t, -1);
    assert_true(date_of("Tue, 19 Jan 2038 03:14:08 GMT", &t));
    assert_int_equal(t, 2147483648LL);
    assert_true(date_of("Tue, 29 Feb 2000 00:00:00 GMT", &t)); /* divisible by 400 */
    assert_int_equal(t, 951782400);
    assert_true(date_of("Thu, 29 Feb 2024 12:00:00 GMT", &t));
    assert_int_equal(t, 1709208000);
    assert_true(date_of("Sat, 01 Jan 0000 00:00:00 GMT", &t));
    assert_int_equal(t, -62167219200LL);
    assert_true(date_of("Fri, 31 Dec 9999 23:59:59 GMT", &t));
    assert_int_equal(t, 253402300799LL);
    /* a leap second is the next minute's first */
    assert_true(date_of("Sat, 31 Dec 2016 23:59:60 GMT", &t));
    assert_int_equal(t, 1483228800);
    /* the weekday is not checked against the date */
    assert_true(date_of("Mon, 06 Nov 1994 08:49:37 GMT", &t));
    assert_int_equal(t, 784111777);
    assert_true(date_of("Wednesday, 06-Nov-94 08:49:37 GMT", &t));
    assert_true(date_of("Fri Nov  6 08:49:37 1994", &t));
    /* each day name and month */
    static const char *const days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (size_t m = 0; m < 12; m++) {
        char s[64];
        (void)snprintf(s, sizeof(s), "%s, 01 %s 2001 00:00:00 GMT", days[m % 7], months[m]);
        assert_true(date_of(s, &t));
    }
}

static void test_date_rfc850_century(void **state)
{
    (void)state;
    time_t now = time(NULL);
    struct tm tm;
    assert_non_null(gmtime_r(&now, &tm));
    int cur = tm.tm_year + 1900;
    /* 10 years ahead stays ahead; 60 years ahead is read as 40 years back */
    int64_t t = 0;
    char s[64];
    (void)snprintf(s, sizeof(s), "Monday, 01-Jan-%02d 00:00:00 GMT", (cur + 10) % 100);
    assert_true(date_of(s, &t));
    char out[32];
    assert_int_equal(weir__http_date_format(t, out, sizeof(out)), 29);
    char want[16];
    (void)snprintf(want, sizeof(want), "Jan %04d", cur + 10);
    assert_non_null(strstr(out, want));
    (void)snprintf(s, sizeof(s), "Monday, 01-Jan-%02d 00:00:00 GMT", (cur + 60) % 100);
    assert_true(date_of(s, &t));
    assert_int_equal(weir__http_date_format(t, out, sizeof(out)), 29);
    (void)snprintf(want, sizeof(want), "Jan %04d", cur - 40);
    assert_non_null(strstr(out, want));
}

static void test_date_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "   ",
        "0",
        "-1",
        "Sun, 30 Feb 1994 08:49:37 GMT", /* Feb 30 */
        "Tue, 29 Feb 2023 08:49:37 GMT", /* not a leap year */
        "Thu, 29 Feb 1900 08:49:37 GMT", /* divisible by 100, not 400 */
        "Sun, 31 Apr 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 23:60:00 GMT",
        "Sun, 06 Nov 1994 23:59:61 GMT",
        "Fri, 31 Dec 9999 23:59:60 GMT", /* past the last formattable second */
        "Sun, 06 Foo 1994 08:49:37 GMT", /* bad names */
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "sun, 06 nov 1994 08:49:37 gmt", /* names are case-sensitive */
        "SUN, 06 NOV 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "Sun, 06 Nov 1994 08:49:37 GMTT",
        "Sun, 06 Nov 94 08:49:37 GMT", /* two-digit year in IMF-fixdate */
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun,06 Nov 1994 08:49:37 GMT",
        "Sun, 06  Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Sun, 06 Nov 1994 08-49-37 GMT",
        "Sun, 06 Nov 19x4 08:49:37 GMT",
        "Sunday, 06 Nov 1994 08:49:37 GMT", /* long name in IMF-fixdate */
        "Sun, 06-Nov-94 08:49:37 GMT",      /* short name in RFC 850 */
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sunday, 31-Sep-94 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37",
        "Sun Nov 6 08:49:37 1994", /* asctime: one space before a one-digit day */
        "Sun Nov   6 08:49:37 1994",
        "Sun Nov  6 08:49:37 94",
        "Sun Nov  6 08:49:37 1994 GMT",
        "Sun Nov 31 08:49:37 1994",
        "Sun Nov  0 08:49:37 1994",
        "Sunday Nov  6 08:49:37 1994",
        "Sun, 06 Nov 1994 08:49:37 GMT\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t t = 777;
        if (weir__http_date_parse(weir_iov_cstr(bad[i]), &t)) {
            fail_msg("accepted: \"%s\"", bad[i]);
        }
        assert_int_equal(t, 777); /* untouched */
    }
    static const char nul[] = "Sun, 06 Nov 1994 08:49:37 GMT\0";
    int64_t t = 0;
    assert_false(weir__http_date_parse((struct weir_iov){nul, sizeof(nul)}, &t));
    /* a prefix of a valid date is not a date */
    const char *ok = "Sun, 06 Nov 1994 08:49:37 GMT";
    for (size_t n = 0; n < strlen(ok); n++) {
        assert_false(weir__http_date_parse((struct weir_iov){ok, n}, &t));
    }
}

static void test_date_format(void **state)
{
    (void)state;
    char buf[40];
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(weir__http_date_format(784111777, buf, sizeof(buf)), 29);
    assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_int_equal(weir__http_date_format(0, buf, 30), 29);
    assert_string_equal(buf, "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_int_equal(weir__http_date_format(-1, buf, 30), 29);
    assert_string_equal(buf, "Wed, 31 Dec 1969 23:59:59 GMT");
    assert_int_equal(weir__http_date_format(-62167219200LL, buf, 30), 29);
    assert_string_equal(buf, "Sat, 01 Jan 0000 00:00:00 GMT");
    assert_int_equal(weir__http_date_format(253402300799LL, buf, 30), 29);
    assert_string_equal(buf, "Fri, 31 Dec 9999 23:59:59 GMT");
    /* too small a buffer, or a year four digits cannot hold: 0, nothing past cap written */
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(weir__http_date_format(0, buf, 29), 0);
    assert_int_equal(buf[0], '\0');
    assert_int_equal(buf[1], 'x');
    assert_int_equal(weir__http_date_format(0, buf, 0), 0);
    assert_int_equal(weir__http_date_format(253402300800LL, buf, sizeof(buf)), 0);
    assert_int_equal(weir__http_date_format(-62167219201LL, buf, sizeof(buf)), 0);
    assert_int_equal(weir__http_date_format(INT64_MAX, buf, sizeof(buf)), 0);
    assert_int_equal(weir__http_date_format(INT64_MIN, buf, sizeof(buf)), 0);
}

static uint64_t next_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 11;
}

/* Ours against gmtime_r: the same calendar, format and parse inverse of each other. */
static void test_date_round_trip(void **state)
{
    (void)state;
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const int64_t lo = -62167219200LL, hi = 253402300799LL;
    uint64_t seed = 7;
    for (unsigned i = 0; i < 200000; i++) {
        int64_t t;
        if (i < 100000) {
            /* every day from 1900 on, at a varying time of day */
            t = -2208988800LL + (int64_t)i * 86400 + (int64_t)(i * 7919u % 86400u);
        } else {
            t = lo + (int64_t)(next_rand(&seed) % (uint64_t)(hi - lo + 1));
        }
        char buf[30];
        assert_int_equal(weir__http_date_format(t, buf, sizeof(buf)), 29);
        int64_t back = 0;
        assert_true(weir__http_date_parse((struct weir_iov){buf, 29}, &back));
        assert_int_equal(back, t);
        time_t tt = (time_t)t;
        struct tm tm;
        assert_non_null(gmtime_r(&tt, &tm));
        char want[64];
        (void)snprintf(want, sizeof(want), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
                       tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                       tm.tm_sec);
        assert_string_equal(buf, want);
        /* the asctime form of the same instant parses to it too */
        (void)snprintf(want, sizeof(want), "%s %s %2d %02d:%02d:%02d %04d", days[tm.tm_wday],
                       months[tm.tm_mon], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                       tm.tm_year + 1900);
        assert_true(date_of(want, &back));
        assert_int_equal(back, t);
    }
}

/* ---- freshness and age ---- */

struct fx {
    struct weir_arena *a;
    struct weir_headers h;
};

static void fx_init(struct fx *fx)
{
    assert_int_equal(weir_arena_new(4096, 1 << 20, &fx->a), 0);
    assert_int_equal(weir__headers_init(&fx->h, fx->a, 4, 64), 0);
}

static uint32_t lifetime(struct fx *fx, bool *explicit_)
{
    struct weir__cc cc;
    weir__cc_parse(&fx->h, &cc);
    struct weir__cache_times t = {1000, 1000, 784111777, 0};
    return weir__freshness_lifetime(&cc, &fx->h, &t, explicit_);
}

static void test_freshness_order(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx);
    bool ex = false;
    /* nothing: no explicit lifetime */
    assert_int_equal(lifetime(&fx, &ex), 0);
    assert_false(ex);
    /* Expires - Date (Date from the times, 784111777) */
    assert_int_equal(add(&fx.h, "Expires", "Sun, 06 Nov 1994 09:49:37 GMT"), 0);
    assert_int_equal(lifetime(&fx, &ex), 3600);
    assert_true(ex);
    /* max-age wins over Expires */
    assert_int_equal(add(&fx.h, "Cache-Control", "max-age=120"), 0);
    assert_int_equal(lifetime(&fx, &ex), 120);
    assert_true(ex);
    /* s-maxage over max-age */
    assert_int_equal(add(&fx.h, "Cache-Control", "s-maxage=30"), 0);
    assert_int_equal(lifetime(&fx, &ex), 30);
    assert_true(ex);
    /* s-maxage=0 is explicit too */
    weir_headers_remove(&fx.h, "Cache-Control");
    assert_int_equal(add(&fx.h, "Cache-Control", "s-maxage=0, max-age=50"), 0);
    assert_int_equal(lifetime(&fx, &ex), 0);
    assert_true(ex);
    /* invalid freshness information: stale, even beside a valid s-maxage */
    weir_headers_remove(&fx.h, "Cache-Control");
    assert_int_equal(add(&fx.h, "Cache-Control", "s-maxage=30, max-age=soon"), 0);
    ex = false;
    assert_int_equal(lifetime(&fx, &ex), 0);
    assert_true(ex);
    weir_arena_free(fx.a);
}

static void test_freshness_expires(void **state)
{
    (void)state;
    static const struct {
        const char *expires;
        uint32_t want;
    } cases[] = {
        {"Sun, 06 Nov 1994 08:49:38 GMT", 1},
        {"Sun, 06 Nov 1994 08:49:37 GMT", 0},                 /* = Date */
        {"Sun, 06 Nov 1994 08:00:00 GMT", 0},                 /* before Date */
        {"Thu, 01 Jan 1970 00:00:00 GMT", 0},                 /* long before */
        {"Sunday, 06-Nov-94 10:49:37 GMT", 7200},             /* RFC 850 */
        {"Sun Nov  6 08:50:37 1994", 60},                     /* asctime */
        {"Fri, 31 Dec 9999 23:59:59 GMT", WEIR_CC_DELTA_MAX}, /* clamped */
        {"0", 0},                                             /* invalid: expired */
        {"-1", 0},
        {"", 0},
        {"Sun, 30 Feb 1994 08:49:37 GMT", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fx fx;
        fx_init(&fx);
        assert_int_equal(add(&fx.h, "Expires", cases[i].expires), 0);
        bool ex = false;
        assert_int_equal(lifetime(&fx, &ex), cases[i].want);
        assert_true(ex);
        weir_arena_free(fx.a);
    }
    /* the first Expires counts */
    struct fx fx;
    fx_init(&fx);
    assert_int_equal(add(&fx.h, "expires", "Sun, 06 Nov 1994 08:49:47 GMT"), 0);
    assert_int_equal(add(&fx.h, "Expires", "Sun, 06 Nov 1994 09:49:37 GMT"), 0);
    bool ex = false;
    assert_int_equal(lifetime(&fx, &ex), 10);
    /* no headers map at all, and no explicit_ pointer */
    struct weir__cc cc;
    weir__cc_parse_value(weir_iov_cstr(""), &cc);
    struct weir__cache_times t = {0, 0, 0, 0};
    ex = true;
    assert_int_equal(weir__freshness_lifetime(&cc, NULL, &t, &ex), 0);
    assert_false(ex);
    weir__cc_parse_value(weir_iov_cstr("max-age=9"), &cc);
    assert_int_equal(weir__freshness_lifetime(&cc, NULL, &t, NULL), 9);
    weir_arena_free(fx.a);
}

static void test_current_age(void **state)
{
    (void)state;
    /* request at 100, head at 102 with Date 101, no Age, 8 s in the cache */
    struct weir__cache_times t = {100, 102, 101, 0};
    assert_int_equal(weir__current_age(&t, 110), 10); /* max(1, 0 + 2) + 8 */
    assert_int_equal(weir__current_age(&t, 102), 2);
    /* Age from an upstream cache, plus the response delay */
    t = (struct weir__cache_times){1000, 1003, 1003, 30};
    assert_int_equal(weir__current_age(&t, 1003), 33);
    assert_int_equal(weir__current_age(&t, 1063), 93);
    /* a Date far behind (an origin's slow clock, or a response that sat in a cache without Age) */
    t = (struct weir__cache_times){999, 1000, 0, 5};
    assert_int_equal(weir__current_age(&t, 1000), 1000);
    /* a Date ahead of us: apparent age 0, Age and delay count */
    t = (struct weir__cache_times){990, 1000, 5000, 7};
    assert_int_equal(weir__current_age(&t, 1001), 18);
    /* no Date (date = response_time) and no Age: only the delay and the residence */
    t = (struct weir__cache_times){1000, 1004, 1004, 0};
    assert_int_equal(weir__current_age(&t, 1010), 10);
    /* a clock that went back: never younger than received */
    t = (struct weir__cache_times){1000, 1004, 1004, 20};
    assert_int_equal(weir__current_age(&t, 900), 24);
    t = (struct weir__cache_times){2000, 1000, 1000, 20}; /* response "before" request */
    assert_int_equal(weir__current_age(&t, 1000), 20);
    /* saturation */
    t = (struct weir__cache_times){0, 0, 0, UINT32_MAX};
    assert_int_equal(weir__current_age(&t, 100), UINT32_MAX);
    t = (struct weir__cache_times){INT64_MIN, INT64_MAX, INT64_MIN, UINT32_MAX};
    assert_int_equal(weir__current_age(&t, INT64_MAX), UINT32_MAX);
    t = (struct weir__cache_times){0, INT64_MIN, INT64_MAX, 0};
    assert_int_equal(weir__current_age(&t, INT64_MAX), UINT32_MAX);
    t = (struct weir__cache_times){0, 0, 0, 0};
    assert_int_equal(weir__current_age(&t, (int64_t)UINT32_MAX + 5), UINT32_MAX);
    assert_int_equal(weir__current_age(&t, (int64_t)UINT32_MAX - 1), UINT32_MAX - 1);
}

/* ---- storability ---- */

static bool storable(int status, const char *ccv, bool explicit_fresh, bool authorized)
{
    struct weir__cc cc = cc_of(ccv);
    return weir__cc_storable(status, &cc, explicit_fresh, authorized);
}

static void test_storable_matrix(void **state)
{
    (void)state;
    /* 200: cacheable by default */
    assert_true(storable(200, "", false, false));
    assert_true(storable(200, "no-cache", false, false)); /* stored, revalidated on use */
    assert_false(storable(200, "no-store", true, false));
    assert_false(storable(200, "no-store, public, max-age=60", true, false));
    assert_false(storable(200, "private", true, false));
    assert_false(storable(200, "private=\"Set-Cookie\", max-age=60", true, false));
    assert_false(storable(200, "public, private", true, false));
    /* the request carried Authorization: public, s-maxage or must-revalidate needed */
    assert_false(storable(200, "", false, true));
    assert_false(storable(200, "max-age=60", true, true));
    assert_false(storable(200, "proxy-revalidate, max-age=60", true, true));
    assert_true(storable(200, "public", false, true));
    assert_true(storable(200, "s-maxage=60", true, true));
    assert_true(storable(200, "must-revalidate, max-age=60", true, true));
    assert_true(storable(200, "must-revalidate", false, true)); /* heuristic status */
    assert_false(storable(200, "public, no-store", false, true));
    assert_false(storable(302, "must-revalidate", false, true)); /* nothing makes it fresh */
    /* not cacheable by default: needs explicit freshness or public */
    static const int plain[] = {201, 202, 205, 302, 303, 307, 400, 401, 403, 409, 429, 500, 503};
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        assert_false(storable(plain[i], "", false, false));
        assert_false(storable(plain[i], "no-cache", false, false));
        assert_true(storable(plain[i], "", true, false)); /* Expires, say */
        assert_true(storable(plain[i], "max-age=5", false, false));
        assert_true(storable(plain[i], "s-maxage=5", false, false));
        assert_true(storable(plain[i], "public", false, false));
        assert_false(storable(plain[i], "public, no-store", true, false));
    }
    /* the heuristic statuses need nothing (206: not understood here) */
    static const int heur[] = {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501};
    for (size_t i = 0; i < sizeof(heur) / sizeof(heur[0]); i++) {
        assert_true(storable(heur[i], "", false, false));
        assert_false(storable(heur[i], "private", false, false));
    }
    /* interim, unknown, partial and not-modified statuses: never, whatever the directives */
    static const int never[] = {-1,  0,   99,  100, 101, 103, 199, 206, 209, 299,
                                304, 306, 399, 418, 499, 509, 599, 600, 999, 1200};
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++) {
        assert_false(storable(never[i], "public, max-age=60, s-maxage=60", true, false));
        assert_false(storable(never[i], "", false, false));
    }
}

static void test_status_heuristic(void **state)
{
    (void)state;
    static const int yes[] = {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501};
    for (int s = -5; s < 1100; s++) {
        bool want = false;
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
            want = want || yes[i] == s;
        }
        assert_int_equal(weir__status_heuristic(s), want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cc_every_directive),
        cmocka_unit_test(test_cc_case_insensitive),
        cmocka_unit_test(test_cc_quoted),
        cmocka_unit_test(test_cc_list_across_fields),
        cmocka_unit_test(test_cc_duplicates_first_wins),
        cmocka_unit_test(test_cc_malformed),
        cmocka_unit_test(test_cc_huge_delta),
        cmocka_unit_test(test_date_forms),
        cmocka_unit_test(test_date_rfc850_century),
        cmocka_unit_test(test_date_invalid),
        cmocka_unit_test(test_date_format),
        cmocka_unit_test(test_date_round_trip),
        cmocka_unit_test(test_freshness_order),
        cmocka_unit_test(test_freshness_expires),
        cmocka_unit_test(test_current_age),
        cmocka_unit_test(test_storable_matrix),
        cmocka_unit_test(test_status_heuristic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
