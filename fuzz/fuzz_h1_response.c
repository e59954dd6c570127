/*
 * libFuzzer target for the HTTP/1.1 response head parser: each input is parsed as the answer
 * to a GET and to a HEAD, in one shot and in input-derived pieces, under generous and tight
 * limits. Verdicts and fields must agree; every iov must lie inside the head.
 *
 * The same bytes go to the health checks' response judge (weir__health_judge), which must
 * agree with the strict parser on the status of every head the parser accepts, never pass
 * what does not start with a status line, and decide once the input is complete.
 */
#include <stdint.h>
#include <string.h>

#include "http1/h1.h"
#include "lb/lb_int.h"

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

static void check_result(const char *buf, ssize_t n, const struct weir__h1_response *r, bool head,
                         const struct weir__h1_limits *lim)
{
    if (n <= 0) {
        return;
    }
    check_iov(r->reason, buf, n);
    if (r->status < 100 || r->status > 999 || r->nheaders > lim->max_headers ||
        (size_t)n > lim->max_head || (r->minor != 0 && r->minor != 1)) {
        __builtin_trap();
    }
    for (size_t i = 0; i < r->nheaders; i++) {
        check_iov(r->headers[i].name, buf, n);
        check_iov(r->headers[i].value, buf, n);
    }
    bool bodiless = head || r->status < 200 || r->status == 204 || r->status == 304;
    if ((bodiless && r->body != WEIR_H1_BODY_NONE) ||
        (r->body == WEIR_H1_BODY_CLOSE && r->keep_alive) ||
        (r->body == WEIR_H1_BODY_LENGTH && r->content_length == 0)) {
        __builtin_trap();
    }
}

static ssize_t parse_pieces(const uint8_t *data, size_t size, const struct weir__h1_limits *lim,
                            bool head, struct weir_header *hdrs, struct weir__h1_response *out)
{
    struct weir__h1_scan scan = {0};
    size_t have = 0, k = 0;
    ssize_t n = WEIR_EAGAIN;
    while (n == WEIR_EAGAIN && have < size) {
        size_t step = (size_t)(data[k++ % size] % 13) + 1;
        have = have + step > size ? size : have + step;
        n = weir__h1_parse_response((const char *)data, have, &scan, lim, head, hdrs, CAP, out);
    }
    return n;
}

static void check_judge(const char *buf, size_t size)
{
    static const struct weir_status_range all[] = {{100, 599}};
    static const struct weir_status_range some[] = {{200, 204}, {301, 302}};
    const char *why = NULL;
    int any = weir__health_judge(buf, size, all, 1, NULL, true, &why);
    int picky = weir__health_judge(buf, size, some, 2, "ok", true, &why);
    int partial = weir__health_judge(buf, size, some, 2, "ok", false, &why);
    if (any < 0 || picky < 0 || (picky == 1 && any != 1) || (partial >= 0 && partial != picky)) {
        __builtin_trap(); /* at the end it always decides; more bytes never flip a verdict */
    }
    if (any == 1 && (size < 12 || memcmp(buf, "HTTP/1.", 7) != 0)) {
        __builtin_trap();
    }
    struct weir_header h[CAP];
    struct weir__h1_response r;
    struct weir__h1_scan scan = {0};
    ssize_t n = weir__h1_parse_response(buf, size, &scan, &limits[0], false, h, CAP, &r);
    if (n > 0 && r.status >= 100 && r.status <= 599) {
        /* A head the strict parser accepts: the judge reads the same status. */
        struct weir_status_range only = {(uint16_t)r.status, (uint16_t)r.status};
        if (weir__health_judge(buf, size, &only, 1, NULL, true, &why) != 1) {
            __builtin_trap();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    check_judge(buf, size);
    for (size_t l = 0; l < sizeof(limits) / sizeof(limits[0]); l++) {
        for (int head = 0; head <= 1; head++) {
            struct weir_header h1[CAP], h2[CAP];
            struct weir__h1_response one, inc;
            struct weir__h1_scan scan = {0};
            ssize_t n = weir__h1_parse_response(buf, size, &scan, &limits[l], head, h1, CAP, &one);
            check_result(buf, n, &one, head, &limits[l]);
            if (size == 0) {
                continue;
            }
            ssize_t m = parse_pieces(data, size, &limits[l], head, h2, &inc);
            if (m != n) {
                __builtin_trap();
            }
            if (n > 0 && (one.status != inc.status || one.body != inc.body ||
                          one.content_length != inc.content_length ||
                          one.keep_alive != inc.keep_alive || one.nheaders != inc.nheaders ||
                          one.reason.base != inc.reason.base || one.reason.len != inc.reason.len)) {
                __builtin_trap();
            }
        }
    }
    return 0;
}
