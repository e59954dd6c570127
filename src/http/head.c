/*
 * Accessors for request and response heads (include/weir/http.h) and the table of standard
 * reason phrases. Edits copy their bytes into the head's arena, which is the arena of its
 * header map, so every iov handed out lives as long as the request.
 */
#include <string.h>

#include "http/head.h"
#include "weir/error.h"

struct weir_iov weir_req_method(const struct weir_req *req)
{
    return req->method;
}

struct weir_iov weir_req_target(const struct weir_req *req)
{
    return req->target;
}

struct weir_iov weir_req_path(const struct weir_req *req)
{
    struct weir_iov t = req->target;
    const char *q = t.len ? memchr(t.base, '?', t.len) : NULL;
    if (q != NULL) {
        t.len = (size_t)(q - t.base);
    }
    return t;
}

struct weir_iov weir_req_query(const struct weir_req *req)
{
    struct weir_iov t = req->target;
    const char *q = t.len ? memchr(t.base, '?', t.len) : NULL;
    if (q == NULL) {
        return (struct weir_iov){t.base + t.len, 0};
    }
    size_t skip = (size_t)(q - t.base) + 1;
    return (struct weir_iov){t.base + skip, t.len - skip};
}

bool weir_cookie_find(struct weir_iov field, struct weir_iov name, struct weir_iov *value)
{
    size_t i = 0;
    while (i < field.len) {
        while (i < field.len && (weir__http_is_ows(field.base[i]) || field.base[i] == ';')) {
            i++;
        }
        size_t start = i;
        while (i < field.len && field.base[i] != ';') {
            i++;
        }
        struct weir_iov pair = {field.base + start, i - start};
        if (name.len > 0 && pair.len > name.len && pair.base[name.len] == '=' &&
            memcmp(pair.base, name.base, name.len) == 0) {
            struct weir_iov v = {pair.base + name.len + 1, pair.len - name.len - 1};
            while (v.len > 0 && weir__http_is_ows(v.base[v.len - 1])) {
                v.len--;
            }
            if (value != NULL) {
                *value = v;
            }
            return true;
        }
    }
    return false;
}

bool weir_query_arg_find(struct weir_iov query, struct weir_iov name, struct weir_iov *value)
{
    size_t i = 0;
    while (i < query.len) {
        size_t start = i;
        while (i < query.len && query.base[i] != '&') {
            i++;
        }
        struct weir_iov pair = {query.base + start, i - start};
        if (name.len > 0 && pair.len > name.len && pair.base[name.len] == '=' &&
            weir_iov_ieq((struct weir_iov){pair.base, name.len}, name)) {
            if (value != NULL) {
                *value = (struct weir_iov){pair.base + name.len + 1, pair.len - name.len - 1};
            }
            return true;
        }
        i++; /* past the '&' */
    }
    return false;
}

bool weir_req_cookie(const struct weir_req *req, const char *name, struct weir_iov *value)
{
    const struct weir_headers *h = &req->headers;
    struct weir_iov n = weir_iov_cstr(name);
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        const struct weir_header *f = weir_headers_at(h, i);
        if (weir_iov_ieq_cstr(f->name, "Cookie") && weir_cookie_find(f->value, n, value)) {
            return true;
        }
    }
    return false;
}

bool weir_req_arg(const struct weir_req *req, const char *name, struct weir_iov *value)
{
    return weir_query_arg_find(weir_req_query(req), weir_iov_cstr(name), value);
}

struct weir_iov weir_req_host(const struct weir_req *req)
{
    struct weir_iov v = {NULL, 0};
    if (!weir_headers_get(&req->headers, "host", &v)) {
        v = (struct weir_iov){"", 0};
    }
    return v;
}

int weir_req_version_minor(const struct weir_req *req)
{
    return req->minor;
}

struct weir_headers *weir_req_headers(struct weir_req *req)
{
    return &req->headers;
}

const struct weir_headers *weir_req_headers_const(const struct weir_req *req)
{
    return &req->headers;
}

int weir_req_set_method(struct weir_req *req, const char *method)
{
    struct weir_iov m = weir_iov_cstr(method);
    if (!weir__http_is_token(m)) {
        return WEIR_EINVAL;
    }
    m = weir_arena_iovdup(req->headers.arena, m);
    if (m.base == NULL) {
        return WEIR_ENOMEM;
    }
    req->method = m;
    return 0;
}

int weir_req_set_target(struct weir_req *req, struct weir_iov target)
{
    if (target.len == 0 || target.base == NULL) {
        return WEIR_EINVAL;
    }
    /* Visible ASCII only, as the parser accepts: no CTLs, spaces, DEL or raw 8-bit bytes. */
    for (size_t i = 0; i < target.len; i++) {
        unsigned char c = (unsigned char)target.base[i];
        if (c <= 0x20 || c >= 0x7f) {
            return WEIR_EINVAL;
        }
    }
    struct weir_iov t = weir_arena_iovdup(req->headers.arena, target);
    if (t.base == NULL) {
        return WEIR_ENOMEM;
    }
    req->target = t;
    return 0;
}

int weir_resp_status(const struct weir_resp *resp)
{
    return resp->status;
}

struct weir_iov weir_resp_reason(const struct weir_resp *resp)
{
    return resp->reason;
}

struct weir_headers *weir_resp_headers(struct weir_resp *resp)
{
    return &resp->headers;
}

const struct weir_headers *weir_resp_headers_const(const struct weir_resp *resp)
{
    return &resp->headers;
}

int weir_resp_set_status(struct weir_resp *resp, int status)
{
    if (status < 100 || status > 999) {
        return WEIR_EINVAL;
    }
    resp->status = (uint16_t)status;
    resp->reason = weir_iov_cstr(weir_http_reason(status));
    return 0;
}

/* The IANA HTTP Status Code Registry, less the codes it marks unused (306, 418). */
static const char *reason_1xx(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 102:
        return "Processing";
    case 103:
        return "Early Hints";
    default:
        return NULL;
    }
}

static const char *reason_2xx(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 207:
        return "Multi-Status";
    case 208:
        return "Already Reported";
    case 226:
        return "IM Used";
    default:
        return NULL;
    }
}

static const char *reason_3xx(int status)
{
    switch (status) {
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 305:
        return "Use Proxy";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    default:
        return NULL;
    }
}

static const char *reason_4xx(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 423:
        return "Locked";
    case 424:
        return "Failed Dependency";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    default:
        return NULL;
    }
}

static const char *reason_5xx(int status)
{
    switch (status) {
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    case 506:
        return "Variant Also Negotiates";
    case 507:
        return "Insufficient Storage";
    case 508:
        return "Loop Detected";
    case 510:
        return "Not Extended";
    case 511:
        return "Network Authentication Required";
    default:
        return NULL;
    }
}

const char *weir_http_reason(int status)
{
    const char *r = NULL;
    switch (status / 100) {
    case 1:
        r = reason_1xx(status);
        break;
    case 2:
        r = reason_2xx(status);
        break;
    case 3:
        r = reason_3xx(status);
        break;
    case 4:
        r = reason_4xx(status);
        break;
    case 5:
        r = reason_5xx(status);
        break;
    default:
        break;
    }
    return r ? r : "Unknown";
}
