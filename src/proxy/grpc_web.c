/*
 * gRPC-Web (a route's grpc_web; the protocol of grpc/grpc's PROTOCOL-WEB.md), translated to
 * gRPC towards an HTTP/2 upstream and back, so browsers (which cannot read HTTP/2 trailers,
 * and often speak HTTP/1.1) reach gRPC services:
 *
 *   request   application/grpc-web[+fmt]       -> application/grpc[+fmt], TE: trailers
 *             application/grpc-web-text[+fmt]  -> the same, the body base64-decoded
 *   response  application/grpc[+fmt]           -> the client's own type back
 *             trailers                         -> one last body frame: 0x80, a 4-byte length,
 *                                                 "name: value\r\n" lines (names lowercased)
 *             -text                            -> the whole body base64-encoded
 *
 * The message frames themselves (a flag byte, a 4-byte length, the message) are the same in
 * both protocols and pass untouched. A trailers-only response (grpc-status in the head, no
 * body) is already valid gRPC-Web. The body transforms run as built-in body filters around the
 * user's (hooks see the gRPC side); each direction has one output buffer, reused piece after
 * piece (the pipe writes a piece before it asks for the next) and as large as the largest
 * piece, which the source's buffer bounds.
 */
#include "proxy/proxy_int.h"

#include <string.h>

#include "core/alloc.h"
#include "core/b64.h"

enum { GW_OFF = 0, GW_BINARY, GW_TEXT };

struct weir__grpc_web {
    uint8_t mode;              /* GW_BINARY or GW_TEXT */
    bool resp_on;              /* the response is gRPC: translate its body */
    struct weir_iov suffix;    /* "+proto", "+json"..., or empty */
    struct weir_iov resp_type; /* the Content-Type the client gets */
    struct weir__b64 dec, enc; /* -text: the request's decoding, the response's encoding */
    bool bad_body;             /* a -text request body that is not base64 (a 400) */
    char *rbuf, *sbuf;         /* the request's and the response's output */
    size_t rcap, scap;
};

#define CT_WEB  "application/grpc-web"
#define CT_TEXT "application/grpc-web-text"

static bool ct_has(struct weir_iov ct, const char *prefix, struct weir_iov *suffix)
{
    size_t n = strlen(prefix);
    if (ct.len < n || !weir_iov_ieq((struct weir_iov){ct.base, n}, (struct weir_iov){prefix, n})) {
        return false;
    }
    struct weir_iov rest = {ct.base + n, ct.len - n};
    size_t end = 0;
    while (end < rest.len && rest.base[end] != ';' && rest.base[end] != ' ') {
        end++;
    }
    if (end > 0 && rest.base[0] != '+') {
        return false; /* application/grpc-webfoo, or -text seen as grpc-web */
    }
    *suffix = (struct weir_iov){rest.base, end};
    return true;
}

bool weir_session_set_grpc_web(struct weir_session *s)
{
    struct weir_iov ct, suffix;
    if (s->gw != NULL || s->ux.head_built ||
        !weir_headers_get_iov(&s->req.headers, WEIR_IOV_LIT("Content-Type"), &ct)) {
        return s->gw != NULL;
    }
    uint8_t mode = ct_has(ct, CT_TEXT, &suffix)  ? GW_TEXT
                   : ct_has(ct, CT_WEB, &suffix) ? GW_BINARY
                                                 : GW_OFF;
    if (mode == GW_OFF) {
        return false;
    }
    struct weir__grpc_web *gw = weir_arena_calloc(s->arena, sizeof(*gw));
    struct weir_iov base = mode == GW_TEXT ? WEIR_IOV_LIT(CT_TEXT) : WEIR_IOV_LIT(CT_WEB);
    char *rt = weir_arena_alloc(s->arena, base.len + suffix.len);
    if (gw == NULL || rt == NULL) {
        return false; /* out of memory: the request goes as it is */
    }
    memcpy(rt, base.base, base.len);
    memcpy(rt + base.len, suffix.base, suffix.len);
    gw->mode = mode;
    gw->suffix = suffix; /* in the request's head, which the arena keeps */
    gw->resp_type = (struct weir_iov){rt, base.len + suffix.len};
    s->gw = gw;
    return true;
}

struct weir_iov weir__grpc_web_type(const struct weir_session *s)
{
    return s->gw != NULL ? s->gw->resp_type : WEIR_IOV_LIT("application/grpc");
}

int weir__grpc_web_request(struct weir_session *s, struct weir_headers *h)
{
    struct weir__grpc_web *gw = s->gw;
    size_t n = sizeof("application/grpc") - 1;
    char *ct = weir_arena_alloc(s->arena, n + gw->suffix.len);
    if (ct == NULL) {
        return WEIR_ENOMEM;
    }
    memcpy(ct, "application/grpc", n);
    memcpy(ct + n, gw->suffix.base, gw->suffix.len);
    int rc = weir_headers_set_iov(h, WEIR_IOV_LIT("Content-Type"),
                                  (struct weir_iov){ct, n + gw->suffix.len});
    if (rc == 0 && gw->mode == GW_TEXT) {
        weir_headers_remove(h, "Content-Length"); /* decoding changes it: DATA to the end */
    }
    return rc;
}

void weir__grpc_web_response_head(struct weir_session *s, struct weir_resp *r)
{
    struct weir__grpc_web *gw = s->gw;
    struct weir_iov ct, suffix;
    if (!weir_headers_get_iov(&r->headers, WEIR_IOV_LIT("Content-Type"), &ct) ||
        !ct_has(ct, "application/grpc", &suffix)) {
        return; /* not a gRPC response (an error page on the way): it goes as it is */
    }
    gw->resp_on = true;
    (void)weir_headers_set_iov(&r->headers, WEIR_IOV_LIT("Content-Type"), gw->resp_type);
    /* the trailers frame (and base64) change the length: the body goes until its end */
    weir_headers_remove(&r->headers, "Content-Length");
}

bool weir__grpc_web_response_on(const struct weir_session *s)
{
    return s->gw != NULL && s->gw->resp_on;
}

bool weir__grpc_web_request_text(const struct weir_session *s)
{
    return s->gw != NULL && s->gw->mode == GW_TEXT;
}

bool weir__grpc_web_bad_body(const struct weir_session *s)
{
    return s->gw != NULL && s->gw->bad_body;
}

/* Makes *buf at least need bytes; the old contents need not survive. */
static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) {
        return 0;
    }
    size_t c = *cap ? *cap : 4096;
    while (c < need) {
        c *= 2;
    }
    char *p = weir__malloc(c);
    if (p == NULL) {
        return WEIR_ENOMEM;
    }
    weir__free(*buf);
    *buf = p;
    *cap = c;
    return 0;
}

/* A -text request body piece to binary in gw->rbuf (padding may end any group of four: a
   client may encode each message on its own; a piece may end inside a group). */
static int decode_piece(struct weir__grpc_web *gw, struct weir_iov in, bool end,
                        struct weir_iov *out)
{
    if (reserve(&gw->rbuf, &gw->rcap, weir__b64_decode_room(&gw->dec, in.len) + 1) != 0) {
        return WEIR_ENOMEM;
    }
    ptrdiff_t n = weir__b64_decode(&gw->dec, in.base, in.len, end, gw->rbuf);
    if (n < 0) {
        return WEIR_EINVAL;
    }
    *out = (struct weir_iov){gw->rbuf, (size_t)n};
    return 0;
}

/* A response piece as base64 in gw->sbuf, the bytes of an unfinished group kept for the next. */
static int encode_piece(struct weir__grpc_web *gw, struct weir_iov in, bool end,
                        struct weir_iov *out)
{
    if (reserve(&gw->sbuf, &gw->scap, weir__b64_encode_room(&gw->enc, in.len) + 1) != 0) {
        return WEIR_ENOMEM;
    }
    *out = (struct weir_iov){gw->sbuf, weir__b64_encode(&gw->enc, in.base, in.len, end, gw->sbuf)};
    return 0;
}

/* gRPC-Web's trailers frame: flag 0x80, the length, "name: value\r\n" lines. */
static size_t trailers_frame(struct weir_iov lines, char *out)
{
    out[0] = (char)0x80;
    size_t o = 5, i = 0;
    while (i < lines.len) {
        /* lines are "Name: value\r\n", as the pipes keep trailers (h1 form) */
        bool in_name = true;
        for (; i < lines.len; i++) {
            char c = lines.base[i];
            if (in_name && c == ':') {
                in_name = false;
            }
            out[o++] = in_name && c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
            if (c == '\n') {
                i++;
                break;
            }
        }
    }
    uint32_t len = (uint32_t)(o - 5);
    out[1] = (char)(len >> 24);
    out[2] = (char)(len >> 16 & 0xff);
    out[3] = (char)(len >> 8 & 0xff);
    out[4] = (char)(len & 0xff);
    return o;
}

enum weir_hook_result weir__grpc_web_request_filter(struct weir_session *s, void *ctx,
                                                    struct weir_iov *data, bool end)
{
    struct weir__grpc_web *gw = s->gw;
    int rc = decode_piece(gw, *data, end, data);
    if (rc != 0) {
        gw->bad_body = rc == WEIR_EINVAL; /* not base64: the client's fault */
        return WEIR_HOOK_ERROR;
    }
    weir__body_filter_fn user = s->w->hooks->request_body_filter;
    return user != NULL ? user(s, ctx, data, end) : WEIR_HOOK_CONTINUE;
}

enum weir_hook_result weir__grpc_web_response_filter(struct weir_session *s, void *ctx,
                                                     struct weir_iov *data, bool end)
{
    struct weir__grpc_web *gw = s->gw;
    weir__body_filter_fn user = s->w->hooks->response_body_filter;
    if (user != NULL && user(s, ctx, data, end) != WEIR_HOOK_CONTINUE) {
        return WEIR_HOOK_ERROR;
    }
    struct weir_iov in = *data;
    struct weir_iov tr = s->respp.trailers;
    char *frame = NULL;
    if (end && tr.len > 0) {
        /* the last piece and the trailers frame, one after the other */
        frame = weir_arena_alloc(s->arena, in.len + 5 + tr.len);
        if (frame == NULL) {
            return WEIR_HOOK_ERROR;
        }
        if (in.len > 0) {
            memcpy(frame, in.base, in.len);
        }
        in = (struct weir_iov){frame, in.len + trailers_frame(tr, frame + in.len)};
        s->respp.trailers = (struct weir_iov){NULL, 0}; /* carried in the body instead */
    }
    if (gw->mode == GW_TEXT) {
        if (encode_piece(gw, in, end, data) != 0) {
            return WEIR_HOOK_ERROR;
        }
    } else {
        *data = in;
    }
    return WEIR_HOOK_CONTINUE;
}

void weir__grpc_web_free(struct weir_session *s)
{
    if (s->gw != NULL) {
        weir__free(s->gw->rbuf);
        weir__free(s->gw->sbuf);
        s->gw->rbuf = s->gw->sbuf = NULL;
    }
}
