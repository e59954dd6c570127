/*
 * Unit tests for the header map, the token helpers, the iov helpers and the head accessors
 * (src/http/headers.c, iov.c, head.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/head.h"
#include "weir/error.h"

struct fx {
    struct weir_arena *a;
    struct weir_headers h;
};

static int setup(void **state)
{
    static struct fx fx;
    if (weir_arena_new(4096, 1 << 20, &fx.a) != 0 || weir__headers_init(&fx.h, fx.a, 2, 64) != 0) {
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

static void assert_iov(struct weir_iov v, const char *s)
{
    assert_int_equal(v.len, strlen(s));
    assert_memory_equal(v.base, s, v.len);
}

static void assert_field(const struct weir_headers *h, size_t i, const char *n, const char *v)
{
    const struct weir_header *f = weir_headers_at(h, i);
    assert_non_null(f);
    assert_iov(f->name, n);
    assert_iov(f->value, v);
}

static void test_iov(void **state)
{
    (void)state;
    assert_int_equal(weir_iov_cstr(NULL).len, 0);
    assert_null(weir_iov_cstr(NULL).base);
    assert_int_equal(weir_iov_cstr("abc").len, 3);
    assert_true(weir_iov_eq(WEIR_IOV_LIT("abc"), weir_iov_cstr("abc")));
    assert_false(weir_iov_eq(WEIR_IOV_LIT("abc"), WEIR_IOV_LIT("abC")));
    assert_false(weir_iov_eq(WEIR_IOV_LIT("abc"), WEIR_IOV_LIT("ab")));
    assert_true(weir_iov_eq(weir_iov_cstr(NULL), WEIR_IOV_LIT("")));
    assert_true(weir_iov_ieq(WEIR_IOV_LIT("Content-Length"), WEIR_IOV_LIT("content-LENGTH")));
    assert_false(weir_iov_ieq(WEIR_IOV_LIT("a"), WEIR_IOV_LIT("b")));
    /* '@' and '`' differ from 'A'/'a' only in bit 0x20 but are not letters. */
    assert_false(weir_iov_ieq(WEIR_IOV_LIT("@"), WEIR_IOV_LIT("`")));
    assert_false(weir_iov_ieq(WEIR_IOV_LIT("["), WEIR_IOV_LIT("{")));
    assert_false(weir_iov_ieq(WEIR_IOV_LIT("\xc1"), WEIR_IOV_LIT("\xe1")));
    assert_true(weir_iov_ieq_cstr(WEIR_IOV_LIT("HOST"), "host"));
    assert_false(weir_iov_ieq_cstr(WEIR_IOV_LIT("HOST"), "hos"));
    assert_true(weir_iov_has_prefix(WEIR_IOV_LIT("/api/x"), WEIR_IOV_LIT("/api")));
    assert_true(weir_iov_has_prefix(WEIR_IOV_LIT("/api/x"), WEIR_IOV_LIT("")));
    assert_false(weir_iov_has_prefix(WEIR_IOV_LIT("/ap"), WEIR_IOV_LIT("/api")));
    assert_false(weir_iov_has_prefix(WEIR_IOV_LIT("/API"), WEIR_IOV_LIT("/api")));
}

static void test_is_token(void **state)
{
    (void)state;
    static const char *const good[] = {"GET", "x-forwarded-for", "!#$%&'*+-.^_`|~09azAZ"};
    static const char *const bad[] = {"",     "a b", "a:b", "a\tb", "a\"", "(x)", "a/b",
                                      "\x80", "a,b", "a;b", "a=b",  "{",   "a@b", "\x7f"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_true(weir__http_is_token(weir_iov_cstr(good[i])));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(weir__http_is_token(weir_iov_cstr(bad[i])));
    }
    assert_false(weir__http_is_token((struct weir_iov){"a\0b", 3}));
}

static void test_is_field_value(void **state)
{
    (void)state;
    assert_true(weir__http_is_field_value(WEIR_IOV_LIT("")));
    assert_true(weir__http_is_field_value(WEIR_IOV_LIT("text/html; q=0.9, */*\t")));
    assert_true(weir__http_is_field_value(WEIR_IOV_LIT("caf\xc3\xa9 \xff")));
    static const char *const bad[] = {"a\rb", "a\nb", "\x01", "a\x7f", "\x1f", "\x0b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(weir__http_is_field_value(weir_iov_cstr(bad[i])));
    }
    assert_false(weir__http_is_field_value((struct weir_iov){"a\0b", 3}));
}

static void test_next_token(void **state)
{
    (void)state;
    static const struct {
        const char *list;
        const char *want[5];
    } cases[] = {
        {"", {NULL}},
        {" , ,\t", {NULL}},
        {"close", {"close", NULL}},
        {"keep-alive, Upgrade", {"keep-alive", "Upgrade", NULL}},
        {" gzip ,\tchunked\t", {"gzip", "chunked", NULL}},
        {",,a,,b ,", {"a", "b", NULL}},
        {"a b, c", {"a b", "c", NULL}},
        {"chunked;q=1", {"chunked;q=1", NULL}},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct weir_iov list = weir_iov_cstr(cases[c].list), tok;
        size_t pos = 0, i = 0;
        while (weir__http_next_token(list, &pos, &tok)) {
            assert_non_null(cases[c].want[i]);
            assert_iov(tok, cases[c].want[i]);
            i++;
        }
        assert_null(cases[c].want[i]);
        assert_false(weir__http_next_token(list, &pos, &tok)); /* stays at the end */
    }
}

static void test_add_get(void **state)
{
    struct fx *fx = *state;
    struct weir_headers *h = &fx->h;
    assert_int_equal(weir_headers_count(h), 0);
    assert_null(weir_headers_at(h, 0));
    assert_false(weir_headers_get(h, "host", NULL));
    assert_int_equal(weir_headers_add(h, "Host", "example.com"), 0);
    assert_int_equal(weir_headers_add(h, "Accept", "*/*"), 0);
    assert_int_equal(weir_headers_add(h, "X-Empty", ""), 0);
    assert_int_equal(weir_headers_add(h, "accept", "text/html"), 0);
    assert_int_equal(weir_headers_count(h), 4);
    assert_field(h, 0, "Host", "example.com");
    assert_field(h, 3, "accept", "text/html");
    struct weir_iov v;
    assert_true(weir_headers_get(h, "HOST", &v));
    assert_iov(v, "example.com");
    assert_true(weir_headers_get(h, "Accept", &v)); /* the first one */
    assert_iov(v, "*/*");
    assert_true(weir_headers_get_iov(h, WEIR_IOV_LIT("x-empty"), &v));
    assert_int_equal(v.len, 0);
    assert_true(weir_headers_get(h, "accept", NULL));
    assert_false(weir_headers_get(h, "Acce", NULL));
    assert_false(weir_headers_get(h, "Accepts", NULL));
}

static void test_add_copies(void **state)
{
    struct fx *fx = *state;
    char name[] = "X-Copy", value[] = "v1";
    assert_int_equal(weir_headers_add(&fx->h, name, value), 0);
    name[0] = 'Y';
    value[0] = 'w';
    assert_field(&fx->h, 0, "X-Copy", "v1");
    const struct weir_header *f = weir_headers_at(&fx->h, 0);
    assert_ptr_not_equal(f->name.base, name);
    assert_int_equal(f->value.base[f->value.len], '\0'); /* arena copies are NUL-terminated */
}

static void test_add_invalid(void **state)
{
    struct fx *fx = *state;
    struct weir_headers *h = &fx->h;
    assert_int_equal(weir_headers_add(h, "", "v"), WEIR_EINVAL);
    assert_int_equal(weir_headers_add(h, "Bad Name", "v"), WEIR_EINVAL);
    assert_int_equal(weir_headers_add(h, "Bad:Name", "v"), WEIR_EINVAL);
    assert_int_equal(weir_headers_add(h, "X", "a\r\nInjected: 1"), WEIR_EINVAL);
    assert_int_equal(weir_headers_add(h, "X", "a\nb"), WEIR_EINVAL);
    assert_int_equal(weir_headers_add(h, "X", "a\x01"), WEIR_EINVAL);
    assert_int_equal(weir_headers_add(h, NULL, "v"), WEIR_EINVAL);
    assert_int_equal(weir_headers_add_iov(h, WEIR_IOV_LIT("X"), (struct weir_iov){"a\0b", 3}),
                     WEIR_EINVAL);
    assert_int_equal(weir_headers_set(h, "X", "a\rb"), WEIR_EINVAL);
    assert_int_equal(weir_headers_count(h), 0);
    assert_int_equal(weir_headers_add(h, "X", NULL), 0); /* NULL value: empty */
    assert_field(h, 0, "X", "");
}

static void test_growth_and_limit(void **state)
{
    struct fx *fx = *state;
    struct weir_headers h;
    assert_int_equal(weir__headers_init(&h, fx->a, 1, 20), 0);
    char name[16];
    for (int i = 0; i < 20; i++) {
        name[0] = 'h';
        name[1] = (char)('a' + i);
        name[2] = '\0';
        assert_int_equal(weir_headers_add(&h, name, name), 0);
        assert_true(h.cap >= h.n);
        assert_true(h.cap <= h.max);
    }
    assert_int_equal(weir_headers_add(&h, "over", "1"), WEIR_ELIMIT);
    assert_int_equal(weir_headers_count(&h), 20);
    for (int i = 0; i < 20; i++) {
        char want[3] = {'h', (char)('a' + i), '\0'};
        assert_field(&h, (size_t)i, want, want);
    }
    /* set on an existing name needs no new slot, so it still works at the bound. */
    assert_int_equal(weir_headers_set(&h, "HA", "x"), 0);
    assert_field(&h, 0, "HA", "x");
    /* cap 0 starts with no array at all. */
    struct weir_headers z;
    assert_int_equal(weir__headers_init(&z, fx->a, 0, 0), 0);
    assert_int_equal(weir_headers_add(&z, "a", "b"), WEIR_ELIMIT);
    assert_int_equal(weir__headers_init(&z, fx->a, 100, 3), 0);
    assert_int_equal(z.cap, 3); /* clamped to max */
}

static void test_set(void **state)
{
    struct fx *fx = *state;
    struct weir_headers *h = &fx->h;
    assert_int_equal(weir_headers_add(h, "A", "1"), 0);
    assert_int_equal(weir_headers_add(h, "Via", "x"), 0);
    assert_int_equal(weir_headers_add(h, "B", "2"), 0);
    assert_int_equal(weir_headers_add(h, "via", "y"), 0);
    assert_int_equal(weir_headers_add(h, "C", "3"), 0);
    assert_int_equal(weir_headers_add(h, "VIA", "z"), 0);
    assert_int_equal(weir_headers_set(h, "Via", "proxy"), 0);
    assert_int_equal(weir_headers_count(h), 4);
    assert_field(h, 0, "A", "1");
    assert_field(h, 1, "Via", "proxy");
    assert_field(h, 2, "B", "2");
    assert_field(h, 3, "C", "3");
    /* Absent: appended. */
    assert_int_equal(weir_headers_set_iov(h, WEIR_IOV_LIT("D"), WEIR_IOV_LIT("4")), 0);
    assert_field(h, 4, "D", "4");
    assert_int_equal(weir_headers_count(h), 5);
}

static void test_remove(void **state)
{
    struct fx *fx = *state;
    struct weir_headers *h = &fx->h;
    const char *names[] = {"A", "x", "B", "X", "C", "x"};
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(weir_headers_add(h, names[i], "v"), 0);
    }
    assert_int_equal(weir_headers_remove(h, "nope"), 0);
    assert_int_equal(weir_headers_remove(h, "X"), 3);
    assert_int_equal(weir_headers_count(h), 3);
    assert_field(h, 0, "A", "v");
    assert_field(h, 1, "B", "v");
    assert_field(h, 2, "C", "v");
    weir__headers_remove_at(h, 1);
    assert_field(h, 0, "A", "v");
    assert_field(h, 1, "C", "v");
    weir__headers_remove_at(h, 5); /* out of range: no-op */
    assert_int_equal(weir_headers_count(h), 2);
    assert_int_equal(weir_headers_remove_iov(h, WEIR_IOV_LIT("a")), 1);
    assert_int_equal(weir_headers_remove(h, "c"), 1);
    assert_int_equal(weir_headers_count(h), 0);
}

static void test_adopt(void **state)
{
    struct fx *fx = *state;
    struct weir_header in[5] = {
        {WEIR_IOV_LIT("Host"), WEIR_IOV_LIT("a")}, {WEIR_IOV_LIT("B"), WEIR_IOV_LIT("b")},
        {WEIR_IOV_LIT("C"), WEIR_IOV_LIT("c")},    {WEIR_IOV_LIT("D"), WEIR_IOV_LIT("d")},
        {WEIR_IOV_LIT("E"), WEIR_IOV_LIT("e")},
    };
    assert_int_equal(weir__headers_adopt(&fx->h, in, 5), 0);
    assert_int_equal(weir_headers_count(&fx->h), 5);
    in[0].value = WEIR_IOV_LIT("changed"); /* the array was copied */
    assert_field(&fx->h, 0, "Host", "a");
    assert_field(&fx->h, 4, "E", "e");
    assert_int_equal(weir_headers_add(&fx->h, "F", "f"), 0);
    assert_field(&fx->h, 5, "F", "f");
    /* Adopting replaces the content. */
    assert_int_equal(weir__headers_adopt(&fx->h, in + 3, 2), 0);
    assert_int_equal(weir_headers_count(&fx->h), 2);
    assert_field(&fx->h, 0, "D", "d");
    struct weir_headers small;
    assert_int_equal(weir__headers_init(&small, fx->a, 2, 4), 0);
    assert_int_equal(weir__headers_adopt(&small, in, 5), WEIR_ELIMIT);
    assert_int_equal(weir__headers_adopt(&small, in, 4), 0);
    assert_int_equal(weir__headers_adopt(&small, in, 0), 0);
    assert_int_equal(weir_headers_count(&small), 0);
}

static void test_enomem(void **state)
{
    (void)state;
    struct weir_arena *a = NULL;
    assert_int_equal(weir_arena_new(256, 256, &a), 0);
    struct weir_headers h;
    assert_int_equal(weir__headers_init(&h, a, 2, 1000), 0);
    int rc = 0;
    char v[64];
    memset(v, 'v', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    for (int i = 0; i < 100 && rc == 0; i++) {
        rc = weir_headers_add(&h, "X", v);
    }
    assert_int_equal(rc, WEIR_ENOMEM);
    size_t n = weir_headers_count(&h);
    assert_int_equal(weir_headers_set(&h, "Y", v), WEIR_ENOMEM);
    assert_int_equal(weir_headers_count(&h), n); /* unchanged on failure */
    assert_int_equal(weir__headers_init(&h, a, 1000, 1000), WEIR_ENOMEM);
    weir_arena_free(a);
}

static void test_req_accessors(void **state)
{
    struct fx *fx = *state;
    struct weir_req req = {.method = WEIR_IOV_LIT("GET"),
                           .target = WEIR_IOV_LIT("/a/b?x=1&y=2"),
                           .minor = 1,
                           .headers = fx->h};
    assert_iov(weir_req_method(&req), "GET");
    assert_iov(weir_req_target(&req), "/a/b?x=1&y=2");
    assert_iov(weir_req_path(&req), "/a/b");
    assert_iov(weir_req_query(&req), "x=1&y=2");
    assert_int_equal(weir_req_version_minor(&req), 1);
    assert_int_equal(weir_req_host(&req).len, 0);
    assert_int_equal(weir_headers_add(weir_req_headers(&req), "Host", "h.example:80"), 0);
    assert_iov(weir_req_host(&req), "h.example:80");
    assert_int_equal(weir_headers_count(weir_req_headers_const(&req)), 1);

    static const struct {
        const char *target, *path, *query;
    } split[] = {
        {"/", "/", ""},          {"/p?", "/p", ""}, {"/?a", "/", "a"},
        {"/p?a?b", "/p", "a?b"}, {"*", "*", ""},    {"http://h/p?q", "http://h/p", "q"},
    };
    for (size_t i = 0; i < sizeof(split) / sizeof(split[0]); i++) {
        req.target = weir_iov_cstr(split[i].target);
        assert_iov(weir_req_path(&req), split[i].path);
        assert_iov(weir_req_query(&req), split[i].query);
    }

    assert_int_equal(weir_req_set_method(&req, "PURGE"), 0);
    assert_iov(weir_req_method(&req), "PURGE");
    assert_int_equal(weir_req_set_method(&req, "BAD METHOD"), WEIR_EINVAL);
    assert_int_equal(weir_req_set_method(&req, ""), WEIR_EINVAL);
    assert_int_equal(weir_req_set_method(&req, NULL), WEIR_EINVAL);
    assert_iov(weir_req_method(&req), "PURGE");

    char t[] = "/new?k=v";
    assert_int_equal(weir_req_set_target(&req, weir_iov_cstr(t)), 0);
    t[1] = 'X';
    assert_iov(weir_req_target(&req), "/new?k=v");
    assert_iov(weir_req_query(&req), "k=v");
    assert_int_equal(weir_req_set_target(&req, WEIR_IOV_LIT("")), WEIR_EINVAL);
    assert_int_equal(weir_req_set_target(&req, WEIR_IOV_LIT("/a b")), WEIR_EINVAL);
    assert_int_equal(weir_req_set_target(&req, WEIR_IOV_LIT("/a\r\n")), WEIR_EINVAL);
    assert_int_equal(weir_req_set_target(&req, WEIR_IOV_LIT("/a\x7f")), WEIR_EINVAL);
    assert_int_equal(weir_req_set_target(&req, WEIR_IOV_LIT("/\xc3\xa9")), WEIR_EINVAL);
    assert_iov(weir_req_target(&req), "/new?k=v");
}

static void test_resp_accessors(void **state)
{
    struct fx *fx = *state;
    struct weir_resp resp = {
        .status = 200, .minor = 1, .reason = WEIR_IOV_LIT("Fine"), .headers = fx->h};
    assert_int_equal(weir_resp_status(&resp), 200);
    assert_iov(weir_resp_reason(&resp), "Fine");
    assert_int_equal(weir_resp_set_status(&resp, 404), 0);
    assert_int_equal(weir_resp_status(&resp), 404);
    assert_iov(weir_resp_reason(&resp), "Not Found");
    assert_int_equal(weir_resp_set_status(&resp, 799), 0);
    assert_iov(weir_resp_reason(&resp), "Unknown");
    assert_int_equal(weir_resp_set_status(&resp, 99), WEIR_EINVAL);
    assert_int_equal(weir_resp_set_status(&resp, 1000), WEIR_EINVAL);
    assert_int_equal(weir_resp_set_status(&resp, -1), WEIR_EINVAL);
    assert_int_equal(weir_resp_status(&resp), 799);
    assert_int_equal(weir_headers_add(weir_resp_headers(&resp), "Server", "weir"), 0);
    assert_int_equal(weir_headers_count(weir_resp_headers_const(&resp)), 1);
}

static void test_reason(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *reason;
    } cases[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {102, "Processing"},
        {103, "Early Hints"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {203, "Non-Authoritative Information"},
        {204, "No Content"},
        {205, "Reset Content"},
        {206, "Partial Content"},
        {207, "Multi-Status"},
        {208, "Already Reported"},
        {226, "IM Used"},
        {300, "Multiple Choices"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {305, "Use Proxy"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {402, "Payment Required"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {407, "Proxy Authentication Required"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {415, "Unsupported Media Type"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Content"},
        {423, "Locked"},
        {424, "Failed Dependency"},
        {425, "Too Early"},
        {426, "Upgrade Required"},
        {428, "Precondition Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {451, "Unavailable For Legal Reasons"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
        {506, "Variant Also Negotiates"},
        {507, "Insufficient Storage"},
        {508, "Loop Detected"},
        {510, "Not Extended"},
        {511, "Network Authentication Required"},
        {306, "Unknown"},
        {418, "Unknown"},
        {0, "Unknown"},
        {-200, "Unknown"},
        {600, "Unknown"},
        {999, "Unknown"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_string_equal(weir_http_reason(cases[i].status), cases[i].reason);
    }
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

static void expect_lookup(bool cookie, const char *text, const char *name, const char *want)
{
    struct weir_iov v = {NULL, 0};
    bool found = cookie ? weir_cookie_find(weir_iov_cstr(text), weir_iov_cstr(name), &v)
                        : weir_query_arg_find(weir_iov_cstr(text), weir_iov_cstr(name), &v);
    if (want == NULL) {
        assert_false(found);
        return;
    }
    assert_true(found);
    assert_int_equal(v.len, strlen(want));
    assert_memory_equal(v.base, want, v.len);
}

static void test_cookie_and_arg_lookup(void **state)
{
    (void)state;
    expect_lookup(true, "a=1; sid=abc; b=2", "sid", "abc");
    expect_lookup(true, "sid=first;sid=second", "sid", "first");
    expect_lookup(true, "xsid=1; sid=2", "sid", "2");
    expect_lookup(true, "  sid=v  ;", "sid", "v");
    expect_lookup(true, "sid=", "sid", "");
    expect_lookup(true, "SID=1", "sid", NULL); /* cookie names are case-sensitive */
    expect_lookup(true, "sid", "sid", NULL);
    expect_lookup(true, ";;;", "sid", NULL);
    expect_lookup(true, "a=1", "", NULL);
    expect_lookup(false, "x=1&k=v&y=2", "k", "v");
    expect_lookup(false, "K=upper", "k", "upper"); /* as nginx's $arg_: any case */
    expect_lookup(false, "&k=&k=2", "k", "");
    expect_lookup(false, "kk=1&k", "k", NULL);
    expect_lookup(false, "", "k", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cookie_and_arg_lookup),
        cmocka_unit_test(test_iov),
        cmocka_unit_test(test_is_token),
        cmocka_unit_test(test_is_field_value),
        cmocka_unit_test(test_next_token),
        T(test_add_get),
        T(test_add_copies),
        T(test_add_invalid),
        T(test_growth_and_limit),
        T(test_set),
        T(test_remove),
        T(test_adopt),
        cmocka_unit_test(test_enomem),
        T(test_req_accessors),
        T(test_resp_accessors),
        cmocka_unit_test(test_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
