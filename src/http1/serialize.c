/* HTTP/1.1 head serialization: sizes first, then one pass of copies. */
#include "http1/serialize.h"

#include <string.h>

static size_t fields_size(const struct weir_headers *h)
{
    size_t n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        n += h->v[i].name.len + 2 + h->v[i].value.len + 2;
    }
    return n;
}

static char *put(char *p, const void *src, size_t len)
{
    memcpy(p, src, len);
    return p + len;
}

static char *put_fields(char *p, const struct weir_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        p = put(p, h->v[i].name.base, h->v[i].name.len);
        p = put(p, ": ", 2);
        p = put(p, h->v[i].value.base, h->v[i].value.len);
        p = put(p, "\r\n", 2);
    }
    return put(p, "\r\n", 2);
}

size_t weir__h1_request_size(const struct weir_req *req)
{
    return req->method.len + 1 + req->target.len + sizeof(" HTTP/1.1\r\n") - 1 +
           fields_size(&req->headers) + 2;
}

size_t weir__h1_write_request(const struct weir_req *req, char *out, size_t cap)
{
    size_t need = weir__h1_request_size(req);
    if (need > cap) {
        return 0;
    }
    char *p = out;
    p = put(p, req->method.base, req->method.len);
    *p++ = ' ';
    p = put(p, req->target.base, req->target.len);
    p = put(p, " HTTP/1.1\r\n", sizeof(" HTTP/1.1\r\n") - 1);
    p = put_fields(p, &req->headers);
    return (size_t)(p - out);
}

size_t weir__h1_response_size(const struct weir_resp *resp)
{
    return sizeof("HTTP/1.1 000 ") - 1 + resp->reason.len + 2 + fields_size(&resp->headers) + 2;
}

size_t weir__h1_write_response(const struct weir_resp *resp, char *out, size_t cap)
{
    size_t need = weir__h1_response_size(resp);
    if (need > cap || resp->status < 100 || resp->status > 999) {
        return 0;
    }
    char *p = out;
    p = put(p, "HTTP/1.1 ", 9);
    *p++ = (char)('0' + resp->status / 100);
    *p++ = (char)('0' + resp->status / 10 % 10);
    *p++ = (char)('0' + resp->status % 10);
    *p++ = ' ';
    p = put(p, resp->reason.base, resp->reason.len);
    p = put(p, "\r\n", 2);
    p = put_fields(p, &resp->headers);
    return (size_t)(p - out);
}
