/*
 * The proxy state machine: one session per request, running the phases of the hook table
 * in order (early_request_filter, request_filter, upstream_peer, then the upstream exchange),
 * suspending when a hook returns WEIR_HOOK_PENDING, answering locally or with an error, and
 * ending with exactly one logging call.
 */
#include "proxy/proxy_int.h"

#include <string.h>

#include "core/alloc.h"
#include "weir/log.h"

static void wait_end(struct weir_session *s);

#define ARENA_BLOCK 4096

static void session_resume_cb(struct weir_loop *loop, struct weir_defer *d);
static void up_timer_cb(struct weir_loop *loop, struct weir_timer *t);

static struct weir_arena *take_arena(struct weir__proxy_worker *w, const struct weir_config *cfg)
{
    struct weir_arena *a = w->spare_arena;
    if (a != NULL) {
        w->spare_arena = NULL;
        return a;
    }
    /* The cap bounds what one request may hold: its head copy, edits and hook data. */
    size_t cap = (size_t)cfg->server.limits.max_header_bytes * 4 + 256 * 1024;
    return weir_arena_new(ARENA_BLOCK, cap);
}

static void give_arena(struct weir__proxy_worker *w, struct weir_arena *a)
{
    weir_arena_reset(a);
    if (w->spare_arena == NULL) {
        w->spare_arena = a;
    } else {
        weir_arena_free(a);
    }
}

/* Copies the parsed head out of the connection buffer so the buffer can carry the body. */
static int adopt_head(struct weir_session *s, const struct weir_h1_request *hr, const char *head,
                      size_t head_len)
{
    char *copy = weir_arena_alloc(s->arena, head_len);
    if (copy == NULL) {
        return WEIR_ENOMEM;
    }
    memcpy(copy, head, head_len);
#define REBASE(iov) ((struct weir_iov){copy + ((iov).base - head), (iov).len})
    s->req.method = REBASE(hr->method);
    s->req.target = REBASE(hr->target);
    s->req.minor = (uint8_t)hr->minor;
    uint32_t max = s->cfg->server.limits.max_headers + 64;
    int rc = weir__headers_init(&s->req.headers, s->arena, (uint32_t)hr->nheaders + 8, max);
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < hr->nheaders; i++) {
        s->req.headers.v[i].name = REBASE(hr->headers[i].name);
        s->req.headers.v[i].value = REBASE(hr->headers[i].value);
    }
#undef REBASE
    s->req.headers.n = (uint32_t)hr->nheaders;
    return 0;
}

/*
 * Counts the request against server.limits.requests_per_second_per_ip (every request counts,
 * refused ones too: a client has to slow down to get through) and reports whether it is over.
 */
static bool over_request_rate(struct weir_session *s)
{
    uint32_t limit = s->cfg->server.limits.requests_per_second_per_ip;
    struct weir_conn *c = s->c;
    if (limit == 0 || s->w->ip_rate == NULL || c->ipkeylen == 0) {
        return false;
    }
    return weir_rate_observe(s->w->ip_rate, c->ipkey, c->ipkeylen, 1, s->start_ms) > limit;
}

/* 429 with Retry-After: the estimate covers the last second, so one second is the wait. */
static int respond_too_many(struct weir_session *s)
{
    struct weir_resp *r = weir_session_response_new(s, 429);
    if (r == NULL ||
        weir_headers_add(&r->headers, "Content-Type", "text/plain; charset=utf-8") != 0 ||
        weir_headers_add(&r->headers, "Retry-After", "1") != 0) {
        return WEIR_ENOMEM;
    }
    return weir_session_respond(s, r, WEIR_IOV_LIT("Too Many Requests\n"));
}

/*
 * RFC 9112 3.2.2: with an absolute-form target the authority in it counts, not Host. Rewrite
 * the request to origin-form with that authority as its only Host, so routing, hooks and the
 * origin all see one host. 0, or WEIR_EINVAL (400) for another scheme or a bad authority.
 */
static int normalize_absolute_form(struct weir_session *s)
{
    struct weir_iov t = s->req.target;
    size_t skip = 0;
    if (t.len == 0 || t.base[0] == '/' || t.base[0] == '*') {
        return 0;
    }
    if (t.len > 7 && weir_iov_ieq((struct weir_iov){t.base, 7}, WEIR_IOV_LIT("http://"))) {
        skip = 7;
    } else if (t.len > 8 && weir_iov_ieq((struct weir_iov){t.base, 8}, WEIR_IOV_LIT("https://"))) {
        skip = 8;
    } else {
        /* authority-form belongs to CONNECT, which has no origin-form to rewrite to */
        return weir_iov_eq(s->req.method, WEIR_IOV_LIT("CONNECT")) ? 0 : WEIR_EINVAL;
    }
    const char *a = t.base + skip;
    size_t rest = t.len - skip, alen = 0;
    while (alen < rest && a[alen] != '/' && a[alen] != '?') {
        if (a[alen] == '@') {
            return WEIR_EINVAL; /* userinfo has no place in a request target */
        }
        alen++;
    }
    if (alen == 0) {
        return WEIR_EINVAL;
    }
    struct weir_iov path = {a + alen, rest - alen};
    if (path.len == 0) {
        path = WEIR_IOV_LIT("/");
    } else if (path.base[0] == '?') {
        char *p = weir_arena_alloc(s->arena, path.len + 1);
        if (p == NULL) {
            return WEIR_ENOMEM;
        }
        p[0] = '/';
        memcpy(p + 1, path.base, path.len);
        path = (struct weir_iov){p, path.len + 1};
    }
    s->req.target = path;
    return weir_headers_set_iov(&s->req.headers, WEIR_IOV_LIT("Host"), (struct weir_iov){a, alen});
}

int weir__session_start(struct weir_conn *c, const struct weir_h1_request *hr, size_t head_len)
{
    struct weir__proxy_worker *w = c->w;
    struct weir_snapshot_holder *h = weir__snapshot_acquire(w->slot, &w->holder);
    if (h == NULL) {
        return WEIR_ENOMEM;
    }
    const struct weir_config *cfg = h->snap->data;
    struct weir_arena *a = take_arena(w, cfg);
    if (a == NULL) {
        return WEIR_ENOMEM;
    }
    struct weir_session *s = weir_arena_calloc(a, sizeof(*s));
    if (s == NULL) {
        weir_arena_free(a);
        return WEIR_ENOMEM;
    }
    s->magic = WEIR_SESSION_MAGIC;
    s->c = c;
    s->w = w;
    s->arena = a;
    s->holder = h;
    h->local_refs++;
    s->cfg = cfg;
    s->start_ms = weir_loop_now_ms(w->loop);
    s->start_wall = weir_loop_wall_s(w->loop);
    s->resume.fn = session_resume_cb;
    weir_timer_init(&s->up_timer, up_timer_cb, s);
    c->s = s;
    c->state = CONN_ACTIVE;
    c->nrequests++;
    w->requests++;
    weir__conn_set_deadline(c, 0);

    if (adopt_head(s, hr, c->st.in.data + c->st.in.rpos, head_len) != 0) {
        weir__buf_consume(&c->st.in, (uint32_t)head_len);
        weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
        return 0;
    }
    weir__buf_consume(&c->st.in, (uint32_t)head_len);
    s->orig_method = s->req.method;
    s->orig_target = s->req.target;
    s->client_minor = (uint8_t)hr->minor;
    s->client_keep_alive = hr->keep_alive;
    s->expect_continue = hr->expect_continue && hr->minor == 1;
    s->req_body = hr->body;
    s->req_length = hr->content_length;
    uint32_t max_reqs = cfg->server.limits.max_requests_per_connection;
    if (!hr->keep_alive || (max_reqs != 0 && c->nrequests >= max_reqs)) {
        s->close_after = true;
    }
    if (w->hooks->new_ctx) {
        s->ctx = w->hooks->new_ctx(s, w->hooks_data);
    }
    s->phase = PH_EARLY;
    /* Refused before any hook but new_ctx (logging needs its ctx) or the upstream sees it. */
    int early = 0;
    uint64_t max_body = cfg->server.limits.max_body_bytes;
    if (over_request_rate(s)) {
        early = respond_too_many(s); /* an unread body closes the connection after */
    } else if (max_body && hr->body == WEIR_H1_BODY_LENGTH && hr->content_length > max_body) {
        /* The body is never read. */
        s->close_after = true;
        early = weir_session_respond_text(s, 413, WEIR_IOV_LIT("Payload Too Large\n"));
    }
    if (early != 0) {
        s->close_after = true;
        weir__session_finish(s);
        return 0;
    }
    weir__session_run(s);
    return 0;
}

/* Runs hook h (may be NULL = continue), honouring a result delivered by resume. */
#define CALL_HOOK(s, hook, ...)                                                                    \
    ((s)->have_result ? ((s)->have_result = false, (s)->result)                                    \
                      : ((hook) ? (hook)(__VA_ARGS__) : WEIR_HOOK_CONTINUE))

static bool handle_result(struct weir_session *s, enum weir_hook_result r, enum weir_phase next,
                          bool may_done)
{
    switch (r) {
    case WEIR_HOOK_CONTINUE:
        s->phase = next;
        return true;
    case WEIR_HOOK_PENDING:
        s->suspended = true;
        return false;
    case WEIR_HOOK_DONE:
        if (may_done && s->resp != NULL) {
            s->phase = PH_LOCAL_RESPONSE;
            return true;
        }
        weir_log(WEIR_LOG_ERROR, "hook returned DONE without a response; answering 500");
        break;
    case WEIR_HOOK_ERROR:
        if (s->hook_error != WEIR_ERR_NONE) {
            weir__session_fail(s, s->hook_error, WEIR_SRC_INTERNAL, 0, "hook");
            return false;
        }
        break;
    }
    weir__session_fail(s, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "hook");
    return false;
}

static bool run_peer(struct weir_session *s)
{
    const struct weir_proxy_hooks *hk = s->w->hooks;
    const struct weir_cfg_timeouts *t = &s->cfg->server.timeouts;
    if (!s->have_result) {
        /* On a retry the peer keeps the backend just tried, so weir_lb_select avoids it. */
        s->peer_prev = s->peer.backend;
        memset(&s->peer, 0, sizeof(s->peer));
        s->peer.backend = s->peer_prev;
        s->peer.connect_timeout_ms = t->upstream_connect_ms;
        s->peer.read_timeout_ms = t->upstream_read_ms;
        s->peer.write_timeout_ms = t->upstream_write_ms;
    }
    enum weir_hook_result r = CALL_HOOK(s, hk->upstream_peer, s, s->ctx, &s->peer);
    if (r != WEIR_HOOK_PENDING && s->peer_prev != NULL) {
        if (s->peer.backend == s->peer_prev) {
            weir_peer_release(&s->peer); /* the hook chose without weir_lb_select */
        }
        s->peer_prev = NULL;
    }
    if (r == WEIR_HOOK_CONTINUE && s->peer.addrlen == 0) {
        weir__session_fail(s, WEIR_ERR_NO_PEER, WEIR_SRC_INTERNAL, 0, "upstream_peer");
        return false;
    }
    if (r == WEIR_HOOK_CONTINUE) {
        if (s->peer.connect_timeout_ms == 0) {
            s->peer.connect_timeout_ms = t->upstream_connect_ms;
        }
        if (s->peer.read_timeout_ms == 0) {
            s->peer.read_timeout_ms = t->upstream_read_ms;
        }
        if (s->peer.write_timeout_ms == 0) {
            s->peer.write_timeout_ms = t->upstream_write_ms;
        }
        s->have_peer = true;
    }
    return handle_result(s, r, PH_CONNECT, false);
}

void weir__session_run(struct weir_session *s)
{
    const struct weir_proxy_hooks *hk = s->w->hooks;
    while (!s->suspended) {
        enum weir_hook_result r;
        switch (s->phase) {
        case PH_EARLY:
            if (!s->have_result && normalize_absolute_form(s) != 0) {
                s->close_after = true;
                if (weir_session_respond_text(s, 400, WEIR_IOV_LIT("Bad Request\n")) != 0) {
                    weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
                    return;
                }
                break; /* on to the local response */
            }
            r = CALL_HOOK(s, hk->early_request_filter, s, s->ctx);
            if (!handle_result(s, r, PH_REQUEST_FILTER, true)) {
                return;
            }
            break;
        case PH_REQUEST_FILTER:
            r = CALL_HOOK(s, hk->request_filter, s, s->ctx);
            if (!handle_result(s, r, PH_PEER, true)) {
                return;
            }
            break;
        case PH_PEER:
            if (!run_peer(s)) {
                return;
            }
            break;
        case PH_CONNECT:
            s->phase = PH_PROXY;
            weir__exchange_start(s);
            return;
        case PH_PROXY:
            weir__exchange_run(s);
            return;
        case PH_LOCAL_RESPONSE:
            weir__local_response_run(s);
            return;
        case PH_DONE:
            return;
        }
    }
}

static void session_resume_cb(struct weir_loop *loop, struct weir_defer *d)
{
    struct weir_session *s =
        (struct weir_session *)((char *)d - offsetof(struct weir_session, resume));
    if (s->c->state == CONN_CLOSED) {
        /* The connection died while the hook waited; the session can end now. */
        s->suspended = false;
        weir__session_finish(s);
        return;
    }
    weir__session_run(s);
}

void weir_session_resume(struct weir_session *s, enum weir_hook_result result)
{
    WEIR_SESSION_CHECK(s);
    if (!s->suspended) {
        weir_log(WEIR_LOG_ERROR, "weir_session_resume on a session that is not suspended");
        return;
    }
    s->suspended = false;
    s->have_result = true;
    s->result = result;
    weir__loop_defer(s->w->loop, &s->resume);
}

/* ---- errors ---- */

static int default_status(enum weir_error_type t)
{
    switch (t) {
    case WEIR_ERR_CONNECT_TIMEOUT:
    case WEIR_ERR_READ_TIMEOUT:
    case WEIR_ERR_WRITE_TIMEOUT:
        return 504;
    case WEIR_ERR_CONNECT_REFUSED:
    case WEIR_ERR_CONNECT_ERROR:
    case WEIR_ERR_READ_ERROR:
    case WEIR_ERR_WRITE_ERROR:
    case WEIR_ERR_CONNECTION_CLOSED:
    case WEIR_ERR_INVALID_HTTP:
    case WEIR_ERR_NO_PEER:
        return 502;
    case WEIR_ERR_NO_BACKEND:
        return 503;
    default:
        return 500;
    }
}

void weir__session_fail(struct weir_session *s, enum weir_error_type type,
                        enum weir_error_source src, int sys_errno, const char *context)
{
    s->failed = true;
    s->has_err = true;
    s->err = (struct weir_error){type, src, false, sys_errno, context};
    weir_log(WEIR_LOG_DEBUG, "request from %s failed: %s (%s)", s->c->ip, weir_error_type_str(type),
             context ? context : "");
    weir__exchange_release_upstream(s, false);
    weir_timer_stop(s->w->loop, &s->up_timer);
    if (s->resp_started || s->c->state == CONN_CLOSED || src == WEIR_SRC_DOWNSTREAM) {
        /* Mid-response or the client is gone: the only honest signal left is a close. */
        s->close_after = true;
        weir__session_finish(s);
        return;
    }
    int status = 0;
    if (s->w->hooks->fail_to_proxy) {
        status = s->w->hooks->fail_to_proxy(s, s->ctx, &s->err);
    }
    if (s->resp != NULL && s->phase == PH_LOCAL_RESPONSE) {
        weir__session_run(s); /* the hook answered itself */
        return;
    }
    if (status < 100 || status > 599) {
        status = default_status(type);
    }
    /* The request body may be half read: the connection cannot be trusted for another. */
    if (!s->reqp.in_done && s->req_body != WEIR_H1_BODY_NONE) {
        s->close_after = true;
    }
    s->resp = NULL;
    if (weir_session_respond_text(s, status, weir_iov_cstr(weir_http_reason(status))) != 0) {
        s->close_after = true;
        weir__session_finish(s);
        return;
    }
    weir__session_run(s);
}

void weir__session_client_timeout(struct weir_session *s)
{
    if (s->phase == PH_PROXY && !s->resp_started && !s->reqp.in_done) {
        /* The client stopped sending its body. */
        s->close_after = true;
        s->resp = NULL;
        weir__exchange_release_upstream(s, false);
        if (weir_session_respond_text(s, 408, WEIR_IOV_LIT("Request Timeout\n")) == 0) {
            s->has_err = true;
            s->err = (struct weir_error){WEIR_ERR_READ_TIMEOUT, WEIR_SRC_DOWNSTREAM, false, 0,
                                         "client body"};
            weir__session_run(s);
            return;
        }
    }
    weir__session_fail(s, WEIR_ERR_WRITE_TIMEOUT, WEIR_SRC_DOWNSTREAM, 0, "client timeout");
}

void weir__session_client_event(struct weir_session *s)
{
    if (s->suspended) {
        return;
    }
    if (s->phase == PH_PROXY) {
        weir__exchange_run(s);
    } else if (s->phase == PH_LOCAL_RESPONSE) {
        weir__local_response_run(s);
    }
}

static void up_timer_cb(struct weir_loop *loop, struct weir_timer *t)
{
    struct weir_session *s = t->data;
    weir__exchange_run(s); /* the exchange checks its own deadlines */
}

/* ---- the end ---- */

void weir__session_finish(struct weir_session *s)
{
    if (s->phase == PH_DONE) {
        return;
    }
    s->phase = PH_DONE;
    struct weir_conn *c = s->c;
    struct weir__proxy_worker *w = s->w;
    weir__loop_defer_cancel(w->loop, &s->resume);
    weir_timer_stop(w->loop, &s->up_timer);
    weir__exchange_release_upstream(s, !s->failed);
    if (s->suspended) {
        /* A hook still owns a timer or I/O pointing at us: finish when it resumes. */
        s->phase = PH_LOCAL_RESPONSE;
        return;
    }
    wait_end(s); /* only a worker's forced end of a suspended session gets here waiting */
    if (w->hooks->logging) {
        w->hooks->logging(s, s->ctx, s->has_err ? &s->err : NULL);
    }
    weir__access_log_request(s);
    weir_peer_release(&s->peer);
    /* A failure answered with a whole error response (request fully read) keeps the
       connection, as its Connection field said; every other failure set close_after. */
    bool close_conn = s->close_after || !s->client_keep_alive;
    struct weir_snapshot_holder *h = s->holder;
    struct weir_arena *a = s->arena;
    s->magic = 0;
    give_arena(w, a); /* s lived in the arena: no access after this */
    weir__snapshot_holder_put(h);
    weir__conn_request_done(c, close_conn);
}

/* ---- choosing a backend, waiting for room ---- */

static void wait_end(struct weir_session *s)
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
    wait_end(s);
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
        wait_end(s);
    }
    s->hook_error = WEIR_ERR_NO_BACKEND;
    return WEIR_HOOK_ERROR;
}

/* ---- public accessors ---- */

void weir_session_set_error(struct weir_session *s, enum weir_error_type type)
{
    s->hook_error = type;
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
    return s->c->nrequests;
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
