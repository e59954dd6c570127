/*
 * HTTP/2 towards the client: a connection whose ALPN said h2, or whose first bytes are the
 * HTTP/2 preface on an h2c listener, is handed to an HTTP/2 server session (src/http2/), and
 * each request stream becomes a session like any HTTP/1.1 request: the same phases and hooks,
 * with the stream's virtual struct weir__stream as its client side and weir__h2_down as its
 * framing. The connection lives until its last stream's session has ended.
 */
#include "proxy/proxy_int.h"

#include <string.h>

#include "http2/h2.h"
#include "weir/log.h"

static int h2_request(void *data, struct weir__h2s *hs);
static void h2_event(void *data, struct weir__h2s *hs);
static void h2_over(void *data, int rc);

static const struct weir__h2_ops H2_OPS = {h2_request, h2_event, h2_over};

/* ---- the framing towards an HTTP/2 client ---- */

static int h2_connection_fields(struct weir_session *s, struct weir_resp *r)
{
    (void)s;
    /* HTTP/2 has no connection fields; weir__h2s_respond drops the hop-by-hop ones too. */
    weir_headers_remove(&r->headers, "Connection");
    return 0;
}

static int h2_body_framing(struct weir_session *s, struct weir_resp *r, bool has_length)
{
    bool head_method = weir_iov_eq(s->req.method, WEIR_IOV_LIT("HEAD"));
    bool bodyless = head_method || r->status < 200 || r->status == 204 || r->status == 304;
    if (bodyless || s->respp.in_kind == WEIR_H1_BODY_NONE) {
        s->respp.out_kind = WEIR_H1_BODY_NONE;
    } else if (has_length) {
        s->respp.out_kind = WEIR_H1_BODY_LENGTH;
    } else {
        /* The body's bytes as they are; END_STREAM ends it. */
        weir_headers_remove(&r->headers, "Content-Length");
        s->respp.out_kind = WEIR_H1_BODY_CLOSE;
    }
    return 0;
}

static int h2_queue_head(struct weir_session *s, struct weir_resp *r)
{
    bool body;
    if (s->phase == PH_LOCAL_RESPONSE) {
        body = !weir_iov_eq(s->req.method, WEIR_IOV_LIT("HEAD")) && r->status != 204 &&
               r->status != 304 && s->local_body.len > 0;
    } else {
        body = s->respp.out_kind != WEIR_H1_BODY_NONE;
    }
    int rc = weir__h2s_respond(s->h2, r->status, &r->headers, body);
    if (rc != 0) {
        return rc;
    }
    s->status = r->status;
    s->resp_started = true;
    return 0;
}

static void h2_send_continue(struct weir_session *s)
{
    if (s->expect_continue && !s->sent_continue && !s->resp_started &&
        s->req_body != WEIR_H1_BODY_NONE && weir__buf_len(&s->cst->in) == 0) {
        s->sent_continue = true;
        if (weir__h2s_continue(s->h2) != 0) {
            s->cst->eof = true; /* the request pipe reports the dead client */
        }
    }
}

const struct weir__down_framing weir__h2_down = {
    .name = "HTTP/2",
    .connection_fields = h2_connection_fields,
    .body_framing = h2_body_framing,
    .queue_head = h2_queue_head,
    .send_continue = h2_send_continue,
};

/* ---- a stream's request as a session ---- */

/* RFC 9113 8.2.3: cookie fields may come split; HTTP/1.1 wants one, joined with "; ". */
static int join_cookies(struct weir_session *s)
{
    struct weir_headers *h = &s->req.headers;
    size_t count = 0, total = 0, first = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (weir_iov_ieq(h->v[i].name, WEIR_IOV_LIT("cookie"))) {
            first = count == 0 ? i : first;
            count++;
            total += h->v[i].value.len + 2;
        }
    }
    if (count < 2) {
        return 0;
    }
    char *p = weir_arena_alloc(s->arena, total);
    if (p == NULL) {
        return WEIR_ENOMEM;
    }
    size_t len = 0;
    for (size_t i = first; i < h->n;) {
        if (!weir_iov_ieq(h->v[i].name, WEIR_IOV_LIT("cookie"))) {
            i++;
            continue;
        }
        if (len > 0) {
            p[len++] = ';';
            p[len++] = ' ';
        }
        memcpy(p + len, h->v[i].value.base, h->v[i].value.len);
        len += h->v[i].value.len;
        if (i == first) {
            i++;
        } else {
            weir__headers_remove_at(h, i);
        }
    }
    h->v[first].value = (struct weir_iov){p, len};
    return 0;
}

/* The request head of hs into s: fields, method, target, Host from :authority, the body. */
static int adopt_stream(struct weir_session *s, struct weir__h2s *hs)
{
    const struct weir_cfg_limits *lim = &s->cfg->server.limits;
    char *copy = weir_arena_alloc(s->arena, hs->hlen ? hs->hlen : 1);
    if (copy == NULL || weir__headers_init(&s->req.headers, s->arena, hs->nfields + 8,
                                           lim->max_headers + WEIR_HEADERS_SLACK) != 0) {
        return WEIR_ENOMEM;
    }
    memcpy(copy, hs->hb, hs->hlen);
    struct weir_headers *h = &s->req.headers;
    bool has_length = false;
    for (uint32_t i = 0; i < hs->nfields; i++) {
        const struct weir__h2_field *f = &hs->fields[i];
        h->v[i].name = (struct weir_iov){copy + f->name, f->name_len};
        h->v[i].value = (struct weir_iov){copy + f->value, f->value_len};
        if (weir_iov_eq(h->v[i].name, WEIR_IOV_LIT("content-length"))) {
            has_length = weir__parse_length(h->v[i].value, &s->req_length); /* nghttp2 checks it */
        } else if (weir_iov_eq(h->v[i].name, WEIR_IOV_LIT("expect"))) {
            s->expect_continue = weir_iov_ieq(h->v[i].value, WEIR_IOV_LIT("100-continue"));
        }
    }
    h->n = hs->nfields;
    s->req.method = weir__iov_rebase(hs->method, hs->hb, copy);
    s->req.target = weir__iov_rebase(hs->path, hs->hb, copy);
    if (hs->pp < 0) {
        /* CONNECT has no :path: its target is the authority, as in HTTP/1.1 (RFC 9113 8.5) */
        s->req.target = weir__iov_rebase(hs->authority, hs->hb, copy);
    }
    s->req.minor = 1;
    if (weir_iov_ieq(hs->protocol, WEIR_IOV_LIT("websocket"))) {
        /* RFC 8441: a GET upgrade for the HTTP/1.1 origin (any other :protocol gets 501) */
        s->ws_h2 = true;
        s->req.method = WEIR_IOV_LIT("GET");
        s->req.target = weir__iov_rebase(hs->path, hs->hb, copy);
    }
    if (hs->authority.len > 0) {
        int rc = weir_headers_set_iov(h, WEIR_IOV_LIT("Host"),
                                      weir__iov_rebase(hs->authority, hs->hb, copy));
        if (rc != 0) {
            return rc;
        }
    }
    if ((hs->end_in && weir__buf_len(&hs->rbuf) == 0) || s->ws_h2) {
        /* a WebSocket's bytes are the tunnel's, after the 101 (upstream.c up_head) */
        s->req_body = WEIR_H1_BODY_NONE;
        s->req_length = 0;
    } else if (has_length) {
        s->req_body = s->req_length > 0 ? WEIR_H1_BODY_LENGTH : WEIR_H1_BODY_NONE;
    } else {
        s->req_body = WEIR_H1_BODY_CLOSE; /* until END_STREAM; chunked towards HTTP/1.1 */
    }
    return join_cookies(s);
}

static int h2_request(void *data, struct weir__h2s *hs)
{
    struct weir__conn *c = data;
    struct weir_session *s = weir__session_new(c);
    if (s == NULL) {
        return WEIR_ENOMEM;
    }
    s->h2 = hs;
    s->cst = &hs->vst;
    s->down = &weir__h2_down;
    weir_timer_init(&s->ctimer, weir__session_h2_timer, s);
    hs->owner = s;
    c->h2_sessions++;
    weir__conn_set_deadline(c, 0); /* a stream is open: the idle timeout waits */
    s->client_minor = 1;
    s->client_keep_alive = true;
    bool other_protocol =
        hs->protocol.len > 0 && !weir_iov_ieq(hs->protocol, WEIR_IOV_LIT("websocket"));
    int rc = adopt_stream(s, hs);
    s->orig_method = s->req.method;
    s->orig_target = s->req.target;
    if (rc != 0 || other_protocol) {
        /* An extended CONNECT for another protocol (connect-udp...): not one weir carries.
           Refused (or failed) before any hook but new_ctx, like every refusal of a whole
           request: logging gets its ctx, and every session the hooks see has begun. */
        weir__session_new_ctx(s);
        s->phase = PH_EARLY;
        if (rc != 0 ||
            weir_session_respond_text(
                s, 501, WEIR_IOV_LIT("Not Implemented: weir carries only :protocol websocket\n")) !=
                0) {
            weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
        }
        weir__session_run(s);
        return 0;
    }
    weir__pipe_source(s, &s->reqp, s->req_body, s->req_length);
    weir__session_begin(s);
    return 0;
}

static void h2_event(void *data, struct weir__h2s *hs)
{
    (void)data;
    struct weir_session *s = hs->owner;
    WEIR_SESSION_CHECK(s);
    if (s->suspended && hs->vst.hangup) {
        weir__session_abort(s); /* reset while a hook waits: as a closed HTTP/1.1 connection */
        return;
    }
    weir__session_client_event(s);
}

void weir__session_h2_end(struct weir_session *s)
{
    weir_timer_stop(s->w->loop, &s->ctimer);
    if (s->resp_done && s->respp.trailers.len > 0 &&
        weir__h2s_trailers(s->h2, s->respp.trailers) != 0) {
        s->resp_done = false; /* the trailers are part of the response: reset rather than lie */
    }
}

void weir__session_h2_timer(struct weir_loop *loop, struct weir_timer *t)
{
    (void)loop;
    struct weir_session *s = t->data;
    WEIR_SESSION_CHECK(s);
    if (!s->suspended) {
        weir__session_client_timeout(s);
    }
}

/* ---- the connection ---- */

void weir__h2_limits_of(const struct weir_config *cfg, bool origin, struct weir__h2_limits *l)
{
    const struct weir_cfg_http2 *h = &cfg->server.http2;
    const struct weir_cfg_limits *lim = &cfg->server.limits;
    *l = (struct weir__h2_limits){
        .max_concurrent_streams = h->max_concurrent_streams,
        .initial_window = h->initial_window_size,
        .max_frame_size = h->max_frame_size,
        .max_header_bytes = lim->max_header_bytes,
        .max_headers =
            lim->max_headers < WEIR_MAX_HEADERS_PARSED ? lim->max_headers : WEIR_MAX_HEADERS_PARSED,
        .max_requests = h->max_requests,
        .send_buffer = lim->buffer_size,
        .reset_burst = h->reset_burst,
        .reset_rate = h->reset_rate,
        .control_burst = h->control_frame_burst,
        .control_rate = h->control_frame_rate,
        .extended_connect = !origin && h->websocket,
    };
    if (origin) {
        /* towards an origin: its frames as large as the default, no abuse rates to apply */
        l->max_frame_size = 16384;
        l->max_requests = l->reset_burst = l->reset_rate = 0;
        l->control_burst = l->control_rate = 0;
    }
}

/* With no stream open, the connection may idle for client_keepalive. */
static void arm_idle(struct weir__conn *c)
{
    if (c->h2 != NULL && weir__h2_conn_owned(c->h2) == 0) {
        weir__conn_set_deadline(c, c->w->cfg->server.timeouts.client_keepalive_ms);
    }
}

int weir__conn_h2_start(struct weir__conn *c)
{
    struct weir__h2_limits lim;
    weir__h2_limits_of(c->w->cfg, false, &lim);
    c->h2 = weir__h2_server_new(c->w->loop, &c->st, &c->w->bufs, &lim, &H2_OPS, c);
    if (c->h2 == NULL) {
        return WEIR_ENOMEM;
    }
    c->state = CONN_H2;
    c->head_started = false;
    if (c->w->draining) {
        weir__h2_conn_shutdown(c->h2);
    }
    arm_idle(c);
    weir__conn_h2_event(c);
    return 0;
}

void weir__conn_h2_event(struct weir__conn *c)
{
    int rc = weir__h2_conn_io(c->h2);
    if (rc != 0) {
        weir_log(WEIR_LOG_DEBUG, "client %s: HTTP/2 connection ends (%d)", c->ip, rc);
        if (rc < 0 && c->st.tls_err != NULL) {
            weir_log(WEIR_LOG_DEBUG, "client %s: TLS: %s", c->ip, c->st.tls_err);
        }
        weir__conn_close(c);
        return;
    }
    arm_idle(c);
}

static void h2_over(void *data, int rc)
{
    (void)rc;
    weir__conn_close(data);
}

void weir__conn_h2_idle(struct weir__conn *c)
{
    weir__h2_conn_shutdown(c->h2);
    (void)weir__h2_conn_io(c->h2); /* the GOAWAY, if the socket takes it */
    weir__conn_close(c);
}

void weir__conn_h2_drain(struct weir__conn *c)
{
    weir__h2_conn_shutdown(c->h2);
    if (weir__h2_conn_owned(c->h2) == 0) {
        weir__conn_h2_idle(c);
    }
}

void weir__conn_h2_close(struct weir__conn *c)
{
    c->h2_orphans = weir__h2_conn_free(c->h2);
    c->h2 = NULL;
    struct weir__h2s *next;
    for (struct weir__h2s *hs = c->h2_orphans; hs != NULL; hs = next) {
        next = hs->next;
        weir__session_abort(hs->owner); /* may end it (and free hs) at once */
    }
}

struct weir_session *weir__conn_h2_orphan(struct weir__conn *c)
{
    WEIR_ASSERT(c->h2_orphans != NULL);
    return c->h2_orphans->owner;
}

void weir__conn_h2_request_done(struct weir__conn *c, struct weir__h2s *hs, bool complete)
{
    WEIR_ASSERT(c->h2_sessions > 0);
    c->h2_sessions--;
    weir__buf_release(&c->w->bufs, &hs->vst.in); /* the request body's buffer, if it had one */
    if (c->state == CONN_CLOSED) {
        for (struct weir__h2s **p = &c->h2_orphans; *p != NULL; p = &(*p)->next) {
            if (*p == hs) {
                *p = hs->next;
                break;
            }
        }
        hs->next = NULL;
        weir__h2s_done(hs, false);
        if (c->h2_sessions == 0) {
            weir__conn_unzombie(c);
        }
        return;
    }
    weir__h2s_done(hs, complete);
    arm_idle(c);
}
