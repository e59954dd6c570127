/*
 * HTTP/1.1 as a session's framing on both sides (struct weir__down_framing and
 * weir__up_framing in proxy_int.h). Towards the client: the Connection field, the body
 * framing (Content-Length, chunked for HTTP/1.1 clients, else until close), the serialized
 * head, 100 Continue. Towards the upstream: the request body framing, the serialized head,
 * and the response head parsed from the connection with 1xx responses dropped.
 */
#include "proxy/proxy_int.h"

#include <string.h>

#include "http1/serialize.h"
#include "weir/log.h"

/* ---- towards the client ---- */

int weir__h1_connection_fields(struct weir_session *s, struct weir_resp *r)
{
    /* Local responses may carry a Connection field a hook set: replace it. */
    weir_headers_remove(&r->headers, "Connection");
    if (s->close_after || !s->client_keep_alive || s->w->draining) {
        s->close_after = true;
        return weir__push_field(&r->headers, WEIR_IOV_LIT("Connection"), WEIR_IOV_LIT("close"));
    }
    if (s->client_minor == 0) {
        return weir__push_field(&r->headers, WEIR_IOV_LIT("Connection"),
                                WEIR_IOV_LIT("keep-alive"));
    }
    return 0;
}

int weir__h1_body_framing(struct weir_session *s, struct weir_resp *r, bool has_length)
{
    bool head_method = weir_iov_eq(s->req.method, WEIR_IOV_LIT("HEAD"));
    bool bodyless = head_method || r->status < 200 || r->status == 204 || r->status == 304;
    if (bodyless || s->respp.in_kind == WEIR_H1_BODY_NONE) {
        s->respp.out_kind = WEIR_H1_BODY_NONE;
        if (!bodyless && !has_length) {
            /* An HTTP/2 origin's body can be nothing at all (END_STREAM on the head, as a
               gRPC trailers-only response): an HTTP/1.1 client needs to be told it is empty,
               or it reads until the connection closes. */
            weir_headers_remove(&r->headers, "Content-Length");
            return weir__push_field(&r->headers, WEIR_IOV_LIT("Content-Length"), WEIR_IOV_LIT("0"));
        }
    } else if (has_length) {
        s->respp.out_kind = WEIR_H1_BODY_LENGTH;
    } else if (s->client_minor == 1) {
        weir_headers_remove(&r->headers, "Content-Length");
        s->respp.out_kind = WEIR_H1_BODY_CHUNKED;
        return weir__push_field(&r->headers, WEIR_IOV_LIT("Transfer-Encoding"),
                                WEIR_IOV_LIT("chunked"));
    } else {
        weir_headers_remove(&r->headers, "Content-Length");
        s->respp.out_kind = WEIR_H1_BODY_CLOSE;
        s->close_after = true;
    }
    return 0;
}

int weir__h1_queue_head(struct weir_session *s, struct weir_resp *r)
{
    size_t n = weir__h1_response_size(r);
    char *buf = weir_arena_alloc(s->arena, n);
    if (buf == NULL || weir__h1_write_response(r, buf, n) != n) {
        return WEIR_ENOMEM;
    }
    weir__outq_push(&s->out_client, buf, n);
    s->status = r->status;
    s->resp_started = true;
    return 0;
}

void weir__h1_send_continue(struct weir_session *s)
{
    if (s->expect_continue && !s->sent_continue && !s->resp_started &&
        s->req_body != WEIR_H1_BODY_NONE && weir__buf_len(&s->cst->in) == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        weir__outq_push(&s->out_client, cont, sizeof(cont) - 1);
        s->sent_continue = true;
        if (s->cst->writable && weir__stream_flush(s->cst, &s->out_client) < 0) {
            s->cst->eof = true; /* the request pipe reports the dead client */
        }
    }
}

const struct weir__down_framing weir__h1_down = {
    .name = "HTTP/1.1",
    .connection_fields = weir__h1_connection_fields,
    .body_framing = weir__h1_body_framing,
    .queue_head = weir__h1_queue_head,
    .send_continue = weir__h1_send_continue,
};

/* ---- towards the upstream ---- */

int weir__h1_request_head(struct weir_session *s, bool length_ok)
{
    struct weir_headers *h = &s->req.headers;
    if (s->ux.head != NULL) {
        /* Serialized for an earlier attempt: the same bytes again, framed as they say. */
        s->reqp.out_kind = s->req_body == WEIR_H1_BODY_NONE ? WEIR_H1_BODY_NONE
                           : length_ok                      ? WEIR_H1_BODY_LENGTH
                                                            : WEIR_H1_BODY_CHUNKED;
        return 0;
    }
    if (s->req_body == WEIR_H1_BODY_NONE) {
        s->reqp.out_kind = WEIR_H1_BODY_NONE;
    } else if (length_ok) {
        s->reqp.out_kind = WEIR_H1_BODY_LENGTH;
    } else {
        weir_headers_remove(h, "Content-Length");
        int rc = weir_headers_set(h, "Transfer-Encoding", "chunked");
        if (rc != 0) {
            return rc;
        }
        s->reqp.out_kind = WEIR_H1_BODY_CHUNKED;
    }
    size_t n = weir__h1_request_size(&s->req);
    s->ux.head = weir_arena_alloc(s->arena, n);
    if (s->ux.head == NULL) {
        return WEIR_ENOMEM;
    }
    s->ux.head_len = weir__h1_write_request(&s->req, s->ux.head, n);
    return s->ux.head_len ? 0 : WEIR_EINVAL;
}

static int adopt_response(struct weir_session *s, const struct weir__h1_response *hr,
                          const char *head, size_t len)
{
    struct weir_resp *r = weir_arena_calloc(s->arena, sizeof(*r));
    if (r == NULL) {
        return WEIR_ENOMEM;
    }
    const char *copy =
        weir__head_adopt(s->arena, head, len, hr->headers, hr->nheaders,
                         s->cfg->server.limits.max_headers + WEIR_HEADERS_SLACK, &r->headers);
    if (copy == NULL) {
        return WEIR_ENOMEM;
    }
    r->status = (uint16_t)hr->status;
    r->minor = (uint8_t)hr->minor;
    r->reason = weir__iov_rebase(hr->reason, head, copy);
    s->resp = r;
    s->ux.keep_alive = hr->keep_alive;
    weir__pipe_source(s, &s->respp, hr->body, hr->content_length);
    return 0;
}

static enum weir__step parse_response_head(struct weir_session *s, struct weir__outcome *o)
{
    struct weir__upconn *u = s->ux.conn;
    const struct weir_cfg_limits *lim = &s->cfg->server.limits;
    uint32_t maxh =
        lim->max_headers <= WEIR_MAX_HEADERS_PARSED ? lim->max_headers : WEIR_MAX_HEADERS_PARSED;
    struct weir_header *hdrs = s->w->fields;
    struct weir__h1_limits hl = {lim->max_request_line, lim->max_header_bytes, maxh};
    bool head_method = weir_iov_eq(s->req.method, WEIR_IOV_LIT("HEAD"));
    for (;;) {
        if (weir__buf_len(&u->st.in) > 0) {
            struct weir__h1_response hr;
            s->ux.byte_seen = true;
            ssize_t n =
                weir__h1_parse_response(u->st.in.data + u->st.in.rpos, weir__buf_len(&u->st.in),
                                        &s->ux.scan, &hl, head_method, hdrs, maxh, &hr);
            if (n > 0 && hr.status >= 100 && hr.status < 200 && hr.status != 101) {
                /* Interim responses are ours to give (100-continue) or to drop, boundedly. */
                if (++s->ux.interim > WEIR_MAX_INTERIM_RESPONSES) {
                    return weir__upstream_error(s, o, WEIR_ERR_INVALID_HTTP, 0,
                                                "too many interim responses");
                }
                weir__buf_consume(&u->st.in, (uint32_t)n);
                memset(&s->ux.scan, 0, sizeof(s->ux.scan));
                continue;
            }
            if (n > 0 && hr.status == 101 && s->ux.upgrade) {
                if (adopt_response(s, &hr, u->st.in.data + u->st.in.rpos, (size_t)n) != 0) {
                    return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
                }
                weir__buf_consume(&u->st.in, (uint32_t)n);
                s->ux.tunnel = true; /* WebSocket: what follows is not HTTP */
                s->ux.keep_alive = false;
                return WEIR_STEP_DONE;
            }
            if (n > 0 && hr.status != 101) {
                if (adopt_response(s, &hr, u->st.in.data + u->st.in.rpos, (size_t)n) != 0) {
                    return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
                }
                weir__buf_consume(&u->st.in, (uint32_t)n);
                return WEIR_STEP_DONE;
            }
            if (n != WEIR_EAGAIN) {
                weir_log(WEIR_LOG_WARN, "invalid response head from %s: %s", s->peer.name,
                         n > 0 ? "unexpected 101" : weir_strerror((int)n));
                return weir__upstream_error(s, o, WEIR_ERR_INVALID_HTTP, 0, "response head");
            }
        }
        if (u->st.eof) {
            return weir__upstream_error(s, o, WEIR_ERR_CONNECTION_CLOSED, 0,
                                        "closed before response");
        }
        if (!u->st.readable) {
            return WEIR_STEP_BLOCKED;
        }
        int rc = weir__stream_grow_for_head(&u->st, &s->w->bufs,
                                            lim->max_header_bytes + lim->max_request_line);
        if (rc == WEIR_ELIMIT) {
            return weir__upstream_error(s, o, WEIR_ERR_INVALID_HTTP, 0, "response head too large");
        }
        ssize_t r = rc == 0 ? weir__stream_read(&u->st, &s->w->bufs) : rc;
        if (r < 0) {
            return weir__upstream_error(s, o, WEIR_ERR_READ_ERROR, r > -4096 ? (int)-r : 0, "read");
        }
        if (r > 0) {
            s->ux.progress_ms = weir_loop_now_ms(s->w->loop);
        }
    }
}

enum weir__step weir__h1_response_head(struct weir_session *s, struct weir__outcome *o)
{
    const struct weir__stream *st = &s->ux.conn->st;
    if (weir__buf_len(&st->in) == 0 && !st->eof && !st->readable) {
        /* Nothing to parse and nothing to read: skip the parser's setup (its stack array). */
        return WEIR_STEP_BLOCKED;
    }
    return parse_response_head(s, o);
}

const struct weir__up_framing weir__h1_up = {
    .name = "HTTP/1.1",
    .request_head = weir__h1_request_head,
    .response_head = weir__h1_response_head,
};
