/*
 * The session's public API (weir/proxy.h): what hooks read and set, the responses they make,
 * and weir_session_select_backend with its bounded wait for a backend under max_conns.
 */
#include "proxy/proxy_int.h"
#include "tls/tls.h"

#include <stdio.h>
#include <string.h>

/* ---- choosing a backend, waiting for room ---- */

void weir__session_wait_end(struct weir_session *s)
{
    if (s->wait_lb != NULL) {
        weir_timer_stop(s->w->loop, &s->wait_timer);
        weir__lb_queue_leave(s->wait_lb);
        s->wait_lb = NULL;
    }
}

/* Retries on a short timer, backing off from 1 ms to 16 ms: the worker needs no notice from
   the thread that frees room, so nothing crosses threads and a session that ends while
   waiting only stops its own timer. */
static void wait_tick(struct weir_loop *loop, struct weir_timer *t)
{
    struct weir_session *s = t->data;
    WEIR_SESSION_CHECK(s);
    int rc = weir_lb_select(s->wait_lb, s->wait_key, s->wait_peer);
    uint64_t now = weir_loop_now_ms(loop);
    if (rc == WEIR_ELIMIT && now < s->wait_deadline_ms) {
        s->wait_delay_ms = s->wait_delay_ms < 16 ? s->wait_delay_ms * 2 : 16;
        uint64_t left = s->wait_deadline_ms - now;
        if (weir_timer_start(loop, &s->wait_timer,
                             left < s->wait_delay_ms ? left : s->wait_delay_ms) == 0) {
            return;
        }
    }
    weir__session_wait_end(s);
    if (rc != 0) {
        s->hook_error = WEIR_ERR_NO_BACKEND;
        weir_session_resume(s, WEIR_HOOK_ERROR);
        return;
    }
    weir_session_resume(s, WEIR_HOOK_CONTINUE);
}

enum weir_hook_result weir_session_select_backend(struct weir_session *s, struct weir_lb *lb,
                                                  struct weir_iov key, struct weir_peer *peer)
{
    int rc = weir_lb_select(lb, key, peer);
    if (rc == 0) {
        return WEIR_HOOK_CONTINUE;
    }
    if (rc == WEIR_ELIMIT && s->wait_lb == NULL && weir__lb_queue_enter(lb)) {
        s->wait_lb = lb;
        s->wait_key = key;
        s->wait_peer = peer;
        s->wait_deadline_ms = weir_loop_now_ms(s->w->loop) + weir__lb_queue_timeout_ms(lb);
        s->wait_delay_ms = 1;
        weir_timer_init(&s->wait_timer, wait_tick, s);
        if (weir_timer_start(s->w->loop, &s->wait_timer, 1) == 0) {
            return WEIR_HOOK_PENDING;
        }
        weir__session_wait_end(s);
    }
    s->hook_error = WEIR_ERR_NO_BACKEND;
    return WEIR_HOOK_ERROR;
}

/* ---- public accessors ---- */

void weir_session_set_error(struct weir_session *s, enum weir_error_type type)
{
    s->hook_error = type;
}

void weir_session_set_ignore_client_abort(struct weir_session *s, bool ignore)
{
    s->ignore_client_abort = ignore;
}

int weir_session_set_response_buffering(struct weir_session *s, const struct weir_cfg_buffering *b)
{
    if (s->ux.state >= UP_BODY) {
        return WEIR_EINVAL; /* the response is under way: its spool, if any, stays */
    }
    /* Nothing is allocated before the response needs it: the spool is a few words in the
       arena, so the one set before is simply dropped. */
    s->spool = NULL;
    if (b == NULL || !b->enabled || b->memory == 0) {
        return 0;
    }
    const char *spill = NULL;
    if (b->spill != NULL && b->spill[0] != '\0') {
        spill = weir_arena_strndup(s->arena, b->spill, strlen(b->spill));
        if (spill == NULL) {
            return WEIR_ENOMEM;
        }
    }
    s->spool = weir__spool_new(s, b->memory, spill, b->max);
    return s->spool != NULL ? 0 : WEIR_ENOMEM;
}

struct weir_req *weir_session_req(struct weir_session *s)
{
    return &s->req;
}

struct weir_resp *weir_session_resp(struct weir_session *s)
{
    return s->resp;
}

struct weir_arena *weir_session_arena(struct weir_session *s)
{
    return s->arena;
}

struct weir_loop *weir_session_loop(struct weir_session *s)
{
    return s->w->loop;
}

const struct weir_config *weir_session_config(const struct weir_session *s)
{
    return s->cfg;
}

const struct sockaddr *weir_session_client_addr(const struct weir_session *s)
{
    return (const struct sockaddr *)&s->c->addr;
}

struct weir_iov weir_session_client_ip(const struct weir_session *s)
{
    return (struct weir_iov){s->c->ip, s->c->iplen};
}

const struct weir_tls_info *weir_session_tls(struct weir_session *s)
{
    /* A connection whose parameters cannot be had (out of memory, or closed while its
       session was suspended): nothing to trust. */
    static const struct weir_tls_info unknown = {
        .protocol = "",
        .cipher = "",
        .sni = "",
        .alpn = "",
        .verify = "FAILED:unavailable",
        .subject = "",
        .issuer = "",
        .sans = "",
        .serial = "",
        .fingerprint = "",
        .cert_pem = "",
    };
    struct weir__conn *c = s->c;
    if (!c->tls) {
        return NULL;
    }
    if (c->tls_info == NULL && c->st.ssl != NULL) {
        c->tls_info = weir__tls_info_new(&c->st);
    }
    return c->tls_info != NULL ? c->tls_info : &unknown;
}

void *weir_session_ctx(const struct weir_session *s)
{
    return s->ctx;
}

const struct weir_peer *weir_session_peer(const struct weir_session *s)
{
    return s->have_peer ? &s->peer : NULL;
}

unsigned weir_session_retries(const struct weir_session *s)
{
    return s->retries;
}

unsigned weir_session_request_index(const struct weir_session *s)
{
    return s->index; /* fixed at its start: HTTP/2 streams of one connection overlap */
}

int weir_session_status(const struct weir_session *s)
{
    return s->status;
}

uint64_t weir_session_body_bytes_sent(const struct weir_session *s)
{
    return s->respp.bytes;
}

uint64_t weir_session_body_bytes_received(const struct weir_session *s)
{
    return s->reqp.bytes;
}

int64_t weir_session_start_time(const struct weir_session *s)
{
    return s->start_wall;
}

uint64_t weir_session_elapsed_ms(const struct weir_session *s)
{
    return weir_loop_now_ms(s->w->loop) - s->start_ms;
}

struct weir_resp *weir_session_response_new(struct weir_session *s, int status)
{
    struct weir_resp *r = weir_arena_calloc(s->arena, sizeof(*r));
    if (r == NULL || weir__headers_init(&r->headers, s->arena, 8, 128) != 0) {
        return NULL;
    }
    r->minor = 1;
    if (weir_resp_set_status(r, status) != 0) {
        return NULL;
    }
    return r;
}

int weir_session_respond(struct weir_session *s, struct weir_resp *resp, struct weir_iov body)
{
    if (s->resp_started || s->phase >= PH_LOCAL_RESPONSE) {
        return WEIR_EINVAL;
    }
    char len[24];
    int n = snprintf(len, sizeof(len), "%zu", body.len);
    int rc = weir_headers_set_iov(&resp->headers, WEIR_IOV_LIT("Content-Length"),
                                  (struct weir_iov){len, (size_t)n});
    if (rc != 0) {
        return rc;
    }
    if (!weir_headers_get(&resp->headers, "Server", NULL)) {
        rc = weir_headers_add(&resp->headers, "Server", "weir");
        if (rc != 0) {
            return rc;
        }
    }
    s->resp = resp;
    s->local_body = body;
    s->phase = PH_LOCAL_RESPONSE;
    return 0;
}

int weir_session_respond_text(struct weir_session *s, int status, struct weir_iov body)
{
    struct weir_resp *r = weir_session_response_new(s, status);
    if (r == NULL) {
        return WEIR_ENOMEM;
    }
    int rc = weir_headers_add(&r->headers, "Content-Type", "text/plain; charset=utf-8");
    if (rc != 0) {
        return rc;
    }
    return weir_session_respond(s, r, body);
}
