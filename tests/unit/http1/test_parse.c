/*
 * Unit tests for the strict HTTP/1.1 head parsers (src/http1/parse.c): every acceptance and
 * rejection rule, the limits, and incremental parsing a byte at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http1/h1.h"

#define NHDR 32

static const struct weir__h1_limits lim = {.max_line = 256, .max_head = 1024, .max_headers = 16};

static ssize_t parse_req(const char *raw, size_t len, struct weir__h1_request *out)
{
    static struct weir_header hdrs[NHDR];
    struct weir__h1_scan scan = {0};
    return weir__h1_parse_request(raw, len, &scan, &lim, hdrs, NHDR, out);
}

static ssize_t parse_resp(const char *raw, size_t len, bool head, struct weir__h1_response *out)
{
    static struct weir_header hdrs[NHDR];
    struct weir__h1_scan scan = {0};
    return weir__h1_parse_response(raw, len, &scan, &lim, head, hdrs, NHDR, out);
}

static void assert_iov(struct weir_iov v, const char *s)
{
    if (v.len != strlen(s) || (v.len && memcmp(v.base, s, v.len) != 0)) {
        fail_msg("got \"%.*s\", want \"%s\"", (int)v.len, v.base, s);
    }
}

/* ---- requests that must be accepted ---- */

enum { X = -1 }; /* don't care */

struct req_ok {
    const char *raw;
    const char *method, *target;
    int minor;
    int body; /* enum weir__h1_body or X */
    int64_t cl;
    int keep_alive, expect, upgrade;
    const char *host;
    int nheaders;
};

#define H11 " HTTP/1.1\r\nHost: h\r\n"

static const struct req_ok req_ok[] = {
    {"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "GET", "/", 1, WEIR_H1_BODY_NONE, X, 1, 0, 0,
     "example.com", 1},
    {"GET /a?b=c HTTP/1.0\r\n\r\n", "GET", "/a?b=c", 0, WEIR_H1_BODY_NONE, X, 0, 0, 0, "", 0},
    {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET", "/", 0, WEIR_H1_BODY_NONE, X, 1, 0,
     0, "", 1},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive, close\r\n\r\n", "GET", "/", 0, X, X, 0, X, X, NULL,
     X},
    {"GET /" H11 "Connection: close\r\n\r\n", "GET", "/", 1, X, X, 0, 0, 0, "h", 2},
    {"GET /" H11 "Connection: foo\r\nConnection: CLOSE\r\n\r\n", NULL, NULL, 1, X, X, 0, X, X, NULL,
     3},
    {"POST /up" H11 "Content-Length: 5\r\n\r\n", "POST", "/up", 1, WEIR_H1_BODY_LENGTH, 5, 1, 0, 0,
     "h", 2},
    {"POST /" H11 "Content-Length: 0\r\n\r\n", NULL, NULL, 1, WEIR_H1_BODY_NONE, X, 1, X, X, NULL,
     X},
    {"POST /" H11 "Content-Length: 007\r\n\r\n", NULL, NULL, 1, WEIR_H1_BODY_LENGTH, 7, X, X, X,
     NULL, X},
    {"POST /" H11 "Content-Length: 9223372036854775807\r\n\r\n", NULL, NULL, 1, WEIR_H1_BODY_LENGTH,
     INT64_MAX, X, X, X, NULL, X},
    {"POST /" H11 "Content-Length:  12 \t\r\n\r\n", NULL, NULL, 1, WEIR_H1_BODY_LENGTH, 12, X, X, X,
     NULL, X},
    {"POST /" H11 "Transfer-Encoding: chunked\r\n\r\n", NULL, NULL, 1, WEIR_H1_BODY_CHUNKED, X, X,
     X, X, NULL, X},
    {"POST /" H11 "transfer-encoding: CHUNKED\r\n\r\n", NULL, NULL, 1, WEIR_H1_BODY_CHUNKED, X, X,
     X, X, NULL, X},
    {"POST /" H11 "Transfer-Encoding: chunked, \r\n\r\n", NULL, NULL, 1, WEIR_H1_BODY_CHUNKED, X, X,
     X, X, NULL, X},
    {"POST /" H11 "Expect: 100-continue\r\nContent-Length: 3\r\n\r\n", NULL, NULL, 1,
     WEIR_H1_BODY_LENGTH, 3, 1, 1, 0, NULL, 3},
    {"POST /" H11 "Expect: 100-CONTINUE\r\n\r\n", NULL, NULL, 1, X, X, X, 1, X, NULL, X},
    {"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", NULL, NULL, 0, X, X, X, 0, X, NULL, X},
    {"GET /" H11 "Expect: 200-ok\r\n\r\n", NULL, NULL, 1, X, X, X, 0, X, NULL, X},
    {"GET /ws" H11 "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", NULL, NULL, 1, X, X, 1, 0,
     1, NULL, 3},
    {"GET /ws" H11 "Connection: keep-alive, upgrade\r\nUpgrade: h2c\r\n\r\n", NULL, NULL, 1, X, X,
     1, 0, 1, NULL, 3},
    {"GET /ws" H11 "Connection: upgrade\r\n\r\n", NULL, NULL, 1, X, X, X, X, 0, NULL, X},
    {"GET /ws" H11 "Upgrade: websocket\r\n\r\n", NULL, NULL, 1, X, X, X, X, 0, NULL, X},
    /* Request-target forms. */
    {"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "OPTIONS", "*", 1, X, X, X, X, X, "h", 1},
    {"GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n", "GET",
     "http://example.com/x?y", 1, X, X, X, X, X, NULL, X},
    {"GET HTTPS://e.com HTTP/1.1\r\nHost: e.com\r\n\r\n", NULL, "HTTPS://e.com", 1, X, X, X, X, X,
     NULL, X},
    {"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "CONNECT",
     "example.com:443", 1, X, X, X, X, X, "example.com:443", X},
    {"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n", NULL, "[::1]:8443", 1, X, X, X, X,
     X, "[::1]:8443", X},
    {"GET /%7e!$&'()*+,;=:@[]{}|^`\"<>\\ HTTP/1.1\r\nHost: h\r\n\r\n", NULL,
     "/%7e!$&'()*+,;=:@[]{}|^`\"<>\\", 1, X, X, X, X, X, NULL, X},
    {"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", NULL, "/a#frag", 1, X, X, X, X, X, NULL, X},
    {"M-SEARCH / HTTP/1.1\r\nHost: h\r\n\r\n", "M-SEARCH", NULL, X, X, X, X, X, X, NULL, X},
    {"!#$%&'*+-.^_`|~ / HTTP/1.1\r\nHost: h\r\n\r\n", "!#$%&'*+-.^_`|~", NULL, 1, X, X, X, X, X,
     NULL, X},
    /* Header syntax that is fine. */
    {"GET /" H11 "X-Empty:\r\nX-Spaces:   \t \r\n\r\n", NULL, NULL, 1, X, X, X, X, X, "h", 3},
    {"GET /" H11 "X-Obs: caf\xc3\xa9\xff\r\nX-Tab:\ta\tb\t\r\n\r\n", NULL, NULL, 1, X, X, X, X, X,
     NULL, 3},
    {"GET /" H11 "x_under_score: 1\r\n\r\n", NULL, NULL, 1, X, X, X, X, X, NULL, 2},
    {"GET / HTTP/1.1\r\nHost:\r\n\r\n", NULL, NULL, 1, X, X, X, X, X, "", 1},
    {"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", NULL, NULL, 1, X, X, X, X, X,
     "127.0.0.1:8080", 1},
    /* One leading empty line is ignored (RFC 9112 2.2). */
    {"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "/", 1, X, X, X, X, X, "h", 1},
};

static void check_req_ok(const struct req_ok *c)
{
    struct weir__h1_request r;
    size_t len = strlen(c->raw);
    ssize_t n = parse_req(c->raw, len, &r);
    if (n != (ssize_t)len) {
        fail_msg("rc %zd for %s", n, c->raw);
    }
    if (c->method) {
        assert_iov(r.method, c->method);
    }
    if (c->target) {
        assert_iov(r.target, c->target);
    }
    if (c->minor != X) {
        assert_int_equal(r.minor, c->minor);
    }
    if (c->body != X) {
        assert_int_equal(r.body, c->body);
    }
    if (c->cl != X) {
        assert_int_equal(r.content_length, (uint64_t)c->cl);
    }
    if (c->keep_alive != X) {
        assert_int_equal(r.keep_alive, c->keep_alive);
    }
    if (c->expect != X) {
        assert_int_equal(r.expect_continue, c->expect);
    }
    if (c->upgrade != X) {
        assert_int_equal(r.upgrade, c->upgrade);
    }
    if (c->host) {
        assert_iov(r.host, c->host);
    }
    if (c->nheaders != X) {
        assert_int_equal(r.nheaders, c->nheaders);
    }
    /* Every iov points into the input. */
    assert_true(r.method.base >= c->raw && r.method.base < c->raw + len);
    assert_true(r.target.base >= c->raw && r.target.base < c->raw + len);
}

static void test_request_accept(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(req_ok) / sizeof(req_ok[0]); i++) {
        check_req_ok(&req_ok[i]);
    }
}

static void test_request_fields(void **state)
{
    (void)state;
    static const char raw[] = "GET /p HTTP/1.1\r\nHost: h\r\nX-A:  a b  \r\nx-b:b\r\n"
                              "X-C: \xff\xfe\r\nX-A: 2\r\n\r\n";
    struct weir__h1_request r;
    assert_int_equal(parse_req(raw, sizeof(raw) - 1, &r), sizeof(raw) - 1);
    assert_int_equal(r.nheaders, 5);
    assert_iov(r.headers[0].name, "Host");
    assert_iov(r.headers[0].value, "h");
    assert_iov(r.headers[1].name, "X-A");
    assert_iov(r.headers[1].value, "a b");
    assert_iov(r.headers[2].name, "x-b");
    assert_iov(r.headers[2].value, "b");
    assert_iov(r.headers[3].value, "\xff\xfe");
    assert_iov(r.headers[4].value, "2");
}

/* ---- requests that must be rejected ---- */

struct req_bad {
    const char *raw;
    size_t len; /* 0: strlen */
    int rc;
};

#define B   WEIR_EH1_BAD
#define NI  WEIR_EH1_NOT_IMPL
#define VER WEIR_EH1_VERSION

static const struct req_bad req_bad[] = {
    /* Line endings. */
    {"GET / HTTP/1.1\nHost: h\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: h\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: h\r\n\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: h\r\n\r\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\r\nHost: h\r\n\r\n", 0, B},
    {"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"\r\n\r\n", 0, B},
    /* Request line. */
    {"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 0, B},
    {" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET /\tHTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n", 30, B},
    {"GET /\r\n\r\n", 0, B}, /* HTTP/0.9 */
    {"GET\r\n\r\n", 0, B},
    {"GET / \r\n\r\n", 0, B},
    {"/ HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET / http/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET / HTTP/1.1x\r\nHost: h\r\n\r\n", 0, B},
    {"GET / HTTP/1\r\nHost: h\r\n\r\n", 0, B},
    {"GET / HTTP/1.\r\nHost: h\r\n\r\n", 0, B},
    {"GET / HTTP/11.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET / HTTP/1,1\r\nHost: h\r\n\r\n", 0, B},
    {"GET / HTTX/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 0, VER},
    {"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 0, VER},
    {"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 0, VER},
    {"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 0, VER},
    {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, VER},
    /* Target forms. */
    {"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"M-SEARCH * HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"options * HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"OPTIONS ** HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET ?x HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET http:/x HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET http:// HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"GET 1http://x HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"CONNECT example.com HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"CONNECT example.com: HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"CONNECT :443 HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"CONNECT user@example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"CONNECT http://example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"CONNECT example.com:4x3 HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    {"CONNECT example.com:123456 HTTP/1.1\r\nHost: h\r\n\r\n", 0, B},
    /* Field syntax. */
    {"GET /" H11 " X: folded\r\n\r\n", 0, B},
    {"GET /" H11 "X: a\r\n\tfolded\r\n\r\n", 0, B},
    {"GET /" H11 "X : a\r\n\r\n", 0, B},
    {"GET /" H11 "X\t: a\r\n\r\n", 0, B},
    {"GET /" H11 ": a\r\n\r\n", 0, B},
    {"GET /" H11 "X a\r\n\r\n", 0, B},
    {"GET /" H11 "X(: a\r\n\r\n", 0, B},
    {"GET /" H11 "X\xc3: a\r\n\r\n", 0, B},
    {"GET /" H11 "X: a\x01\r\n\r\n", 0, B},
    {"GET /" H11 "X: a\x7f\r\n\r\n", 0, B},
    {"GET /" H11 "X: \x1b[0m\r\n\r\n", 0, B},
    {"GET /" H11 "X: a\0b\r\n\r\n", 35, B},
    {"GET /" H11 "X: abcdefgh\x0bijklmnop\r\n\r\n", 0, B},
    {"GET /" H11 "no-colon\r\n\r\n", 0, B},
    /* Transfer-Encoding. */
    {"POST /" H11 "Transfer-Encoding: gzip\r\n\r\n", 0, NI},
    {"POST /" H11 "Transfer-Encoding: identity\r\n\r\n", 0, NI},
    {"POST /" H11 "Transfer-Encoding: gzip, chunked\r\n\r\n", 0, NI},
    {"POST /" H11 "Transfer-Encoding: junk\r\n\r\n", 0, NI},
    {"POST /" H11 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 0, NI},
    {"POST /" H11 "Transfer-Encoding: chunked, gzip\r\n\r\n", 0, B},
    {"POST /" H11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 0, B},
    {"POST /" H11 "Transfer-Encoding: chunked, chunked\r\n\r\n", 0, B},
    {"POST /" H11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 0, B},
    {"POST /" H11 "Transfer-Encoding:\r\n\r\n", 0, B},
    {"POST /" H11 "Transfer-Encoding: ,\r\n\r\n", 0, B},
    {"POST /" H11 "Transfer-Encoding: chunked;q=1\r\n\r\n", 0, B},
    {"POST /" H11 "Transfer-Encoding: \"chunked\"\r\n\r\n", 0, B},
    {"POST /" H11 "Transfer-Encoding: chun ked\r\n\r\n", 0, B},
    {"POST /" H11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n", 0, B},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, B},
    {"POST /" H11 "Transfer_Encoding: chunked\r\nContent-Length: 1\r\n\r\n", 0, X},
    /* Content-Length. */
    {"POST /" H11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 5, 5\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 5,6\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: +5\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: -5\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 5 5\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 0x10\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 1e3\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length:\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 9223372036854775808\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 18446744073709551616\r\n\r\n", 0, B},
    {"POST /" H11 "Content-Length: 99999999999999999999999999\r\n\r\n", 0, B},
    /* Host. */
    {"GET / HTTP/1.1\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 0, B},
    {"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", 0, B},
    {"GET / HTTP/1.1\r\nHost: a\xff\r\n\r\n", 0, B},
};

static void test_request_reject(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(req_bad) / sizeof(req_bad[0]); i++) {
        const struct req_bad *c = &req_bad[i];
        size_t len = c->len ? c->len : strlen(c->raw);
        struct weir__h1_request r;
        ssize_t n = parse_req(c->raw, len, &r);
        int want = c->rc;
        if (want == X) {
            continue; /* documented as accepted: Transfer_Encoding is just another field */
        }
        if (n != want) {
            fail_msg("case %zu: rc %zd want %d for %.*s", i, n, want, (int)len, c->raw);
        }
        assert_true(weir__h1_error_status(want) >= 400);
    }
    /* An underscore name is not Transfer-Encoding: accepted, framed by Content-Length. */
    static const char us[] = "POST /" H11 "Transfer_Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
    struct weir__h1_request r;
    assert_int_equal(parse_req(us, sizeof(us) - 1, &r), sizeof(us) - 1);
    assert_int_equal(r.body, WEIR_H1_BODY_LENGTH);
}

/* ---- incomplete input and limits ---- */

static void test_request_incomplete(void **state)
{
    (void)state;
    static const char *const partial[] = {
        "",
        "G",
        "GET / HTTP/1.1",
        "GET / HTTP/1.1\r",
        "GET / HTTP/1.1\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n\r",
        "\r",
        "\r\n",
        "\r\nGET",
        "GET / HTTP/1.1\r\nHo",
    };
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        struct weir__h1_request r;
        assert_int_equal(parse_req(partial[i], strlen(partial[i]), &r), WEIR_EAGAIN);
    }
}

/* Feeds raw one byte at a time with one scan state: EAGAIN until complete, then one shot's. */
static void feed_bytewise_req(const char *raw, size_t len)
{
    struct weir_header h1[NHDR], h2[NHDR];
    struct weir__h1_request one, inc;
    struct weir__h1_scan scan = {0};
    ssize_t want = weir__h1_parse_request(raw, len, &scan, &lim, h1, NHDR, &one);
    memset(&scan, 0, sizeof(scan));
    ssize_t n = WEIR_EAGAIN;
    size_t i;
    for (i = 1; i <= len; i++) {
        n = weir__h1_parse_request(raw, i, &scan, &lim, h2, NHDR, &inc);
        if (n != WEIR_EAGAIN) {
            break;
        }
    }
    assert_int_equal(n, want);
    if (want > 0) {
        assert_int_equal(i, (size_t)want);
        assert_memory_equal(&one.method, &inc.method, sizeof(one.method));
        assert_memory_equal(&one.target, &inc.target, sizeof(one.target));
        assert_int_equal(one.nheaders, inc.nheaders);
        assert_memory_equal(h1, h2, one.nheaders * sizeof(h1[0]));
        assert_int_equal(one.body, inc.body);
        assert_int_equal(one.content_length, inc.content_length);
        assert_int_equal(one.keep_alive, inc.keep_alive);
        assert_int_equal(one.expect_continue, inc.expect_continue);
        assert_int_equal(one.upgrade, inc.upgrade);
        assert_memory_equal(&one.host, &inc.host, sizeof(one.host));
    }
}

static void test_request_bytewise(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(req_ok) / sizeof(req_ok[0]); i++) {
        feed_bytewise_req(req_ok[i].raw, strlen(req_ok[i].raw));
    }
    for (size_t i = 0; i < sizeof(req_bad) / sizeof(req_bad[0]); i++) {
        const struct req_bad *c = &req_bad[i];
        feed_bytewise_req(c->raw, c->len ? c->len : strlen(c->raw));
    }
    /* Pipelined: the parser stops at the end of the first head. */
    static const char two[] =
        "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    struct weir__h1_request r;
    assert_int_equal(parse_req(two, sizeof(two) - 1, &r), (sizeof(two) - 1) / 2);
    assert_iov(r.target, "/1");
}

/* Builds "GET /aaa... HTTP/1.1\r\n" with a request line of exactly n bytes (no CRLF). */
static size_t make_line(char *buf, size_t n)
{
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', n - 14);
    memcpy(buf + n - 9, " HTTP/1.1\r\n", 11);
    return n + 2;
}

static void test_request_limits(void **state)
{
    (void)state;
    char buf[4096];
    struct weir__h1_request r;
    /* A request line of exactly max_line is fine; one byte more is 414. */
    size_t n = make_line(buf, lim.max_line);
    memcpy(buf + n, "Host: h\r\n\r\n", 11);
    assert_int_equal(parse_req(buf, n + 11, &r), (ssize_t)(n + 11));
    n = make_line(buf, lim.max_line + 1);
    memcpy(buf + n, "Host: h\r\n\r\n", 11);
    assert_int_equal(parse_req(buf, n + 11, &r), WEIR_EH1_URI_TOO_LONG);
    assert_int_equal(weir__h1_error_status(WEIR_EH1_URI_TOO_LONG), 414);
    /* 414 is reported before the line ends once max_line + 2 bytes hold no LF. */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "GET /", 5);
    assert_int_equal(parse_req(buf, lim.max_line + 1, &r), WEIR_EAGAIN);
    assert_int_equal(parse_req(buf, lim.max_line + 2, &r), WEIR_EH1_URI_TOO_LONG);
    /* Same, found incrementally. */
    struct weir__h1_scan scan = {0};
    struct weir_header h[NHDR];
    ssize_t rc = WEIR_EAGAIN;
    size_t i;
    for (i = 1; i < sizeof(buf) && rc == WEIR_EAGAIN; i++) {
        rc = weir__h1_parse_request(buf, i, &scan, &lim, h, NHDR, &r);
    }
    assert_int_equal(rc, WEIR_EH1_URI_TOO_LONG);
    assert_int_equal(i - 1, lim.max_line + 2);

    /* The whole head: max_head bytes is fine, one more is 431. */
    n = make_line(buf, 20);
    memcpy(buf + n, "Host: h\r\nX: ", 12);
    n += 12;
    size_t pad = lim.max_head - n - 4;
    memset(buf + n, 'v', pad);
    memcpy(buf + n + pad, "\r\n\r\n", 4);
    assert_int_equal(parse_req(buf, lim.max_head, &r), (ssize_t)lim.max_head);
    memset(buf + n, 'v', pad + 1);
    memcpy(buf + n + pad + 1, "\r\n\r\n", 4);
    assert_int_equal(parse_req(buf, lim.max_head + 1, &r), WEIR_EH1_HDR_TOO_LARGE);
    assert_int_equal(parse_req(buf, lim.max_head, &r), WEIR_EH1_HDR_TOO_LARGE);
    assert_int_equal(parse_req(buf, lim.max_head - 1, &r), WEIR_EAGAIN);
    assert_int_equal(weir__h1_error_status(WEIR_EH1_HDR_TOO_LARGE), 431);

    /* Field count: max_headers is fine, one more is 431; so is hdr_cap when smaller. */
    n = make_line(buf, 20);
    for (i = 0; i < lim.max_headers; i++) {
        memcpy(buf + n, i == 0 ? "Host: h\r\n" : "X-Nn: v\r\n", 9);
        n += 9;
    }
    memcpy(buf + n, "\r\n", 2);
    assert_int_equal(parse_req(buf, n + 2, &r), (ssize_t)(n + 2));
    assert_int_equal(r.nheaders, lim.max_headers);
    memset(&scan, 0, sizeof(scan));
    assert_int_equal(weir__h1_parse_request(buf, n + 2, &scan, &lim, h, 3, &r),
                     WEIR_EH1_HDR_TOO_LARGE);
    memcpy(buf + n, "X-Nn: v\r\n\r\n", 11);
    assert_int_equal(parse_req(buf, n + 11, &r), WEIR_EH1_HDR_TOO_LARGE);
}

static void test_error_status(void **state)
{
    (void)state;
    assert_int_equal(weir__h1_error_status(WEIR_EH1_BAD), 400);
    assert_int_equal(weir__h1_error_status(WEIR_EH1_TOO_LARGE), 413);
    assert_int_equal(weir__h1_error_status(WEIR_EH1_URI_TOO_LONG), 414);
    assert_int_equal(weir__h1_error_status(WEIR_EH1_HDR_TOO_LARGE), 431);
    assert_int_equal(weir__h1_error_status(WEIR_EH1_NOT_IMPL), 501);
    assert_int_equal(weir__h1_error_status(WEIR_EH1_VERSION), 505);
    assert_int_equal(weir__h1_error_status(WEIR_ENOMEM), 400);
    assert_int_equal(weir__h1_error_status(0), 400);
}

/* ---- responses ---- */

struct resp_case {
    const char *raw;
    bool head;
    int rc; /* 0: complete */
    int status;
    const char *reason;
    int body;
    int64_t cl;
    int keep_alive;
};

#define RBAD(raw, head)                                                                            \
    {                                                                                              \
        raw, head, B, 0, NULL, 0, 0, 0                                                             \
    }

static const struct resp_case resp_cases[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, 0, 200, "OK", WEIR_H1_BODY_LENGTH, 5,
     1},
    {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, 0, 200, "OK", WEIR_H1_BODY_NONE, X, 1},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, 0, 200, "OK", WEIR_H1_BODY_NONE, X, 1},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0, 200, NULL,
     WEIR_H1_BODY_CHUNKED, X, 1},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, 0, 200, NULL,
     WEIR_H1_BODY_CHUNKED, X, 1},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, 0, 200, NULL, WEIR_H1_BODY_NONE,
     X, 1},
    {"HTTP/1.1 200 OK\r\n\r\n", false, 0, 200, "OK", WEIR_H1_BODY_CLOSE, X, 0},
    {"HTTP/1.1 200 OK\r\n\r\n", true, 0, 200, "OK", WEIR_H1_BODY_NONE, X, 1},
    {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false, 0, 200, "OK", WEIR_H1_BODY_LENGTH, 2,
     0},
    {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n", false, 0, 200, NULL,
     WEIR_H1_BODY_LENGTH, 2, 1},
    {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", false, 0, 200, NULL, WEIR_H1_BODY_CLOSE,
     X, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n", false, 0, 200, NULL,
     WEIR_H1_BODY_LENGTH, 2, 0},
    {"HTTP/1.1 204 No Content\r\n\r\n", false, 0, 204, "No Content", WEIR_H1_BODY_NONE, X, 1},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", false, 0, 304, NULL,
     WEIR_H1_BODY_NONE, X, 1},
    {"HTTP/1.1 100 Continue\r\n\r\n", false, 0, 100, "Continue", WEIR_H1_BODY_NONE, X, 1},
    {"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", false,
     0, 101, NULL, WEIR_H1_BODY_NONE, X, 1},
    {"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n", false, 0, 103, NULL, WEIR_H1_BODY_NONE,
     X, X},
    {"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", false, 0, 200, "", WEIR_H1_BODY_LENGTH, 1, 1},
    {"HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n", false, 0, 200, "", WEIR_H1_BODY_LENGTH, 1, 1},
    {"HTTP/1.1 404 Not  Found \xe9\r\nContent-Length: 1\r\n\r\n", false, 0, 404, "Not  Found \xe9",
     X, X, X},
    {"HTTP/1.1 999 Whatever\r\nContent-Length: 1\r\n\r\n", false, 0, 999, NULL, X, X, X},
    {"HTTP/1.1 200 OK\r\nHost: a/b c\r\nContent-Length: 1\r\n\r\n", false, 0, 200, NULL, X, X, X},
    /* Rejected. */
    RBAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
    RBAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false),
    RBAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", false),
    RBAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false),
    RBAD("HTTP/1.1 204 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false),
    RBAD("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", true),
    RBAD("HTTP/1.1 200 OK\nContent-Length: 5\r\n\r\n", false),
    RBAD("HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n", false),
    RBAD("HTTP/1.1 200 OK\r\nX : y\r\n\r\n", false),
    RBAD("HTTP/1.1 200 O\x01K\r\n\r\n", false),
    RBAD("HTTP/1.1 099 Low\r\n\r\n", false),
    RBAD("HTTP/1.1 20 OK\r\n\r\n", false),
    RBAD("HTTP/1.1 2000 OK\r\n\r\n", false),
    RBAD("HTTP/1.1 2x0 OK\r\n\r\n", false),
    RBAD("HTTP/1.1  200 OK\r\n\r\n", false),
    RBAD("HTTP/1.1 200OK\r\n\r\n", false),
    RBAD("HTTP/2.0 200 OK\r\n\r\n", false),
    RBAD("HTTP/1.2 200 OK\r\n\r\n", false),
    RBAD("http/1.1 200 OK\r\n\r\n", false),
    RBAD("HTTP/1.1\r\n\r\n", false),
    RBAD("ICY 200 OK\r\n\r\n", false),
    RBAD("\r\nHTTP/1.1 200 OK\r\n\r\n", false),
};

static void test_responses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(resp_cases) / sizeof(resp_cases[0]); i++) {
        const struct resp_case *c = &resp_cases[i];
        size_t len = strlen(c->raw);
        struct weir__h1_response r;
        ssize_t n = parse_resp(c->raw, len, c->head, &r);
        ssize_t want = c->rc ? c->rc : (ssize_t)len;
        if (n != want) {
            fail_msg("case %zu: rc %zd want %zd for %s", i, n, want, c->raw);
        }
        /* Byte at a time gives EAGAIN until the same verdict. */
        struct weir_header h[NHDR];
        struct weir__h1_scan scan = {0};
        struct weir__h1_response inc;
        ssize_t m = WEIR_EAGAIN;
        for (size_t k = 1; k <= len && m == WEIR_EAGAIN; k++) {
            m = weir__h1_parse_response(c->raw, k, &scan, &lim, c->head, h, NHDR, &inc);
        }
        assert_int_equal(m, want);
        if (c->rc) {
            continue;
        }
        assert_int_equal(r.status, c->status);
        assert_int_equal(inc.status, c->status);
        if (c->reason) {
            assert_iov(r.reason, c->reason);
        }
        if (c->body != X) {
            assert_int_equal(r.body, c->body);
            assert_int_equal(inc.body, c->body);
        }
        if (c->cl != X) {
            assert_int_equal(r.content_length, (uint64_t)c->cl);
        }
        if (c->keep_alive != X) {
            assert_int_equal(r.keep_alive, c->keep_alive);
        }
    }
}

static void test_response_limits(void **state)
{
    (void)state;
    char buf[2048];
    struct weir__h1_response r;
    memset(buf, 'r', sizeof(buf));
    memcpy(buf, "HTTP/1.1 200 ", 13);
    /* An over-long status line is a bad response (502), not 414. */
    assert_int_equal(parse_resp(buf, lim.max_line + 2, false, &r), WEIR_EH1_BAD);
    size_t n = 13 + 50;
    memcpy(buf + n, "\r\nX: ", 5);
    n += 5;
    assert_int_equal(parse_resp(buf, lim.max_head, false, &r), WEIR_EH1_HDR_TOO_LARGE);
    assert_int_equal(parse_resp(buf, lim.max_head - 1, false, &r), WEIR_EAGAIN);
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\n", 17, false, &r), WEIR_EAGAIN);
    assert_int_equal(parse_resp("", 0, false, &r), WEIR_EAGAIN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_accept),   cmocka_unit_test(test_request_fields),
        cmocka_unit_test(test_request_reject),   cmocka_unit_test(test_request_incomplete),
        cmocka_unit_test(test_request_bytewise), cmocka_unit_test(test_request_limits),
        cmocka_unit_test(test_error_status),     cmocka_unit_test(test_responses),
        cmocka_unit_test(test_response_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
