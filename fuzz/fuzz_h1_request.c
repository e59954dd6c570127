/*
 * libFuzzer target for the HTTP/1.1 request head parser. Each input is parsed in one shot and
 * again in pieces whose sizes come from the input itself, under generous and tight limits;
 * the verdict and every parsed field must agree, and every iov must lie inside the head.
 */
#include <stdint.h>
#include <string.h>

#include "http1/h1.h"

#define CAP 64

static const struct weir__h1_limits limits[] = {
    {.max_line = 8192, .max_head = 65536, .max_headers = CAP},
    {.max_line = 24, .max_head = 96, .max_headers = 3},
};

static void check_iov(struct weir_iov v, const char *buf, ssize_t n)
{
    if (v.len && (v.base < buf || v.base + v.len > buf + n)) {
        __builtin_trap();
    }
}

static void same_iov(struct weir_iov a, struct weir_iov b)
{
    if (a.len != b.len || (a.len && a.base != b.base)) {
        __builtin_trap();
    }
}

static void check_result(const char *buf, ssize_t n, const struct weir__h1_request *r,
                         const struct weir__h1_limits *lim)
{
    if (n <= 0) {
        return;
    }
    check_iov(r->method, buf, n);
    check_iov(r->target, buf, n);
    check_iov(r->host, buf, n);
    if (r->method.len == 0 || r->target.len == 0 || (r->minor != 0 && r->minor != 1) ||
        r->nheaders > lim->max_headers || (size_t)n > lim->max_head) {
        __builtin_trap();
    }
    for (size_t i = 0; i < r->nheaders; i++) {
        check_iov(r->headers[i].name, buf, n);
        check_iov(r->headers[i].value, buf, n);
        if (r->headers[i].name.len == 0) {
            __builtin_trap();
        }
    }
    if ((r->body == WEIR_H1_BODY_LENGTH && r->content_length == 0) ||
        r->content_length > INT64_MAX || r->body == WEIR_H1_BODY_CLOSE) {
        __builtin_trap();
    }
}

/* Parses in pieces: sizes are taken from the input bytes, cycling. */
static ssize_t parse_pieces(const uint8_t *data, size_t size, const struct weir__h1_limits *lim,
                            struct weir_header *hdrs, struct weir__h1_request *out)
{
    struct weir__h1_scan scan = {0};
    size_t have = 0, k = 0;
    ssize_t n = WEIR_EAGAIN;
    while (n == WEIR_EAGAIN && have < size) {
        size_t step = size ? (size_t)(data[k++ % size] % 17) + 1 : 1;
        have = have + step > size ? size : have + step;
        n = weir__h1_parse_request((const char *)data, have, &scan, lim, hdrs, CAP, out);
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    for (size_t l = 0; l < sizeof(limits) / sizeof(limits[0]); l++) {
        const struct weir__h1_limits *lim = &limits[l];
        struct weir_header h1[CAP], h2[CAP];
        struct weir__h1_request one, inc;
        struct weir__h1_scan scan = {0};
        ssize_t n = weir__h1_parse_request(buf, size, &scan, lim, h1, CAP, &one);
        check_result(buf, n, &one, lim);
        ssize_t m = parse_pieces(data, size, lim, h2, &inc);
        if (m != n) {
            __builtin_trap();
        }
        if (n <= 0) {
            continue;
        }
        same_iov(one.method, inc.method);
        same_iov(one.target, inc.target);
        same_iov(one.host, inc.host);
        if (one.nheaders != inc.nheaders || one.body != inc.body ||
            one.content_length != inc.content_length || one.keep_alive != inc.keep_alive ||
            one.expect_continue != inc.expect_continue || one.upgrade != inc.upgrade ||
            one.minor != inc.minor) {
            __builtin_trap();
        }
        for (size_t i = 0; i < one.nheaders; i++) {
            same_iov(h1[i].name, h2[i].name);
            same_iov(h1[i].value, h2[i].value);
        }
    }
    return 0;
}
