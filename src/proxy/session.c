/*
 * The proxy state machine: one session per request. weir__session_run alone moves a session
 * through its phases (enum weir__phase: early_request_filter, request_filter, upstream_peer,
 * the upstream exchange, a local response) and owns the one retry loop: the exchange
 * (upstream.c) returns an outcome and never calls back here. A hook returning
 * WEIR_HOOK_PENDING suspends the session until weir_session_resume; every session ends with
 * exactly one logging call.
 */
#include "proxy/proxy_int.h"

#include <string.h>

#include "core/alloc.h"
#include "tls/tls.h"
#include "weir/log.h"

/* An arena block; the cap bounds what one request may hold: its head copy, edits and hook
   data (4 x max_header_bytes + WEIR_ARENA_EXTRA). */
#define ARENA_BLOCK      4096
#define WEIR_ARENA_EXTRA (256 * 1024)

static void session_resume_cb(struct weir_loop *loop, struct weir__defer *d);
static void session_end(struct weir_session *s);

static struct weir_arena *take_arena(struct weir__proxy_worker *w, const struct weir_config *cfg)
{
    if (w->nspare_arenas > 0) {
        return w->spare_arenas[--w->nspare_arenas];
    }
    size_t cap = (size_t)cfg->server.limits.max_header_bytes * 4 + WEIR_ARENA_EXTRA;
    struct weir_arena *a;
    return weir_arena_new(ARENA_BLOCK, cap, &a) == 0 ? a : NULL;
}

static void give_arena(struct weir__proxy_worker *w, struct weir_arena *a)
{
    weir_arena_reset(a);
    if (w->nspare_arenas < WEIR_SPARE_ARENAS) {
        w->spare_arenas[w->nspare_arenas++] = a;
    } else {
        weir_arena_free(a);
    }
}

/* Copies the parsed head out of the connection buffer so the buffer can carry the body. */
static int adopt_head(struct weir_session *s, const struct weir__h1_request *hr, const char *head,
                      size_t head_len)
{
    const char *copy =
        weir__head_adopt(s->arena, head, head_len, hr->headers, hr->nheaders,
                         s->cfg->server.limits.max_headers + WEIR_HEADERS_SLACK, &s->req.headers);
    if (copy == NULL) {
        return WEIR_ENOMEM;
    }
    s->req.method = weir__iov_rebase(hr->method, head, copy);
    s->req.target = weir__iov_rebase(hr->target, head, copy);
    s->req.minor = (uint8_t)hr->minor;
    return 0;
}

/*
 * Counts the request against server.limits.requests_per_second_per_ip (every request counts,
 * refused ones too: a client has to slow down to get through) and reports whether it is over.
 */
static bool over_request_rate(struct weir_session *s)
{
    uint32_t limit = s->cfg->server.limits.requests_per_second_per_ip;
    struct weir__conn *c = s->c;
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

struct weir_session *weir__session_alloc(struct weir__proxy_worker *w,
                                         struct weir__snapshot_holder *h)
{
    const struct weir_config *cfg = h->snap->data;
    struct weir_arena *a = take_arena(w, cfg);
    if (a == NULL) {
        return NULL;
    }
    struct weir_session *s = weir_arena_calloc(a, sizeof(*s));
    if (s == NULL) {
        weir_arena_free(a);
        return NULL;
    }
    s->magic = WEIR_SESSION_MAGIC;
    s->w = w;
    s->arena = a;
    s->holder = h;
    h->local_refs++;
    s->cfg = cfg;
    s->down = &weir__h1_down;
    s->upf = &weir__h1_up;
    s->start_ms = weir_loop_now_ms(w->loop);
    s->start_wall = weir_loop_wall_s(w->loop);
    s->resume.fn = session_resume_cb;
    weir__upstream_init(s);
    w->requests++;
    return s;
}

void weir__session_discard(struct weir_session *s)
{
    struct weir__snapshot_holder *h = s->holder;
    s->magic = 0;
    give_arena(s->w, s->arena);
    weir__snapshot_holder_put(h);
}

struct weir_session *weir__session_new(struct weir__conn *c)
{
    struct weir__proxy_worker *w = c->w;
    struct weir__snapshot_holder *h = weir__snapshot_acquire(w->slot, &w->holder);
    if (h == NULL) {
        return NULL;
    }
    struct weir_session *s = weir__session_alloc(w, h);
    if (s == NULL) {
        return NULL;
    }
    s->c = c;
    s->cst = &c->st;
    c->nrequests++;
    s->index = c->nrequests;
    return s;
}

int weir__session_start(struct weir__conn *c, const struct weir__h1_request *hr, size_t head_len)
{
    struct weir_session *s = weir__session_new(c);
    if (s == NULL) {
        return WEIR_ENOMEM;
    }
    c->s = s;
    c->state = CONN_ACTIVE;
    weir__conn_set_deadline(c, 0);

    if (adopt_head(s, hr, c->st.in.data + c->st.in.rpos, head_len) != 0) {
        weir__buf_consume(&c->st.in, (uint32_t)head_len);
        weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
        weir__session_run(s);
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
    uint32_t max_reqs = s->cfg->server.limits.max_requests_per_connection;
    if (!hr->keep_alive || (max_reqs != 0 && c->nrequests >= max_reqs)) {
        s->close_after = true;
    }
    weir__session_begin(s);
    return 0;
}

void weir__session_new_ctx(struct weir_session *s)
{
    struct weir__proxy_worker *w = s->w;
    if (w->hooks->new_ctx) {
        s->ctx = w->hooks->new_ctx(s, w->hooks_data);
    }
}

void weir__session_begin(struct weir_session *s)
{
    weir__session_new_ctx(s);
    s->phase = PH_EARLY;
    /* Refused before any hook but new_ctx (logging needs its ctx) or the upstream sees it. */
    int early = 0;
    uint64_t max_body = s->cfg->server.limits.max_body_bytes;
    if (over_request_rate(s)) {
        early = respond_too_many(s); /* an unread body closes the connection after */
    } else if (max_body && s->req_body == WEIR_H1_BODY_LENGTH && s->req_length > max_body) {
        /* The body is never read. The same error as a body found too large while read. */
        s->close_after = true;
        early = weir_session_respond_text(s, 413, WEIR_IOV_LIT("Payload Too Large\n"));
        s->has_err = true;
        s->err =
            (struct weir_error){WEIR_ERR_INVALID_HTTP, WEIR_SRC_DOWNSTREAM, false, 0, "body limit"};
    }
    if (early != 0) {
        s->close_after = true;
        s->phase = PH_DONE;
    }
    weir__session_run(s);
}

void weir__session_client_deadline(struct weir_session *s, uint64_t ms)
{
    if (s->bg != NULL) {
        return; /* no client to wait for: the upstream's timeouts bound it */
    }
    if (s->h2 == NULL) {
        weir__conn_set_deadline(s->c, ms);
        return;
    }
    struct weir_loop *loop = s->w->loop;
    if (ms == 0) {
        weir_timer_stop(loop, &s->ctimer);
    } else if (weir_timer_start(loop, &s->ctimer, ms) != 0) {
        /* No timer: the stream could wait forever. End it now rather than hang. */
        s->cst->hangup = true;
    }
}

bool weir__session_client_dead(const struct weir_session *s)
{
    return s->c->state == CONN_CLOSED || (s->h2 != NULL && s->cst->hangup);
}

/* ---- the phases ---- */

/* Runs hook h (may be NULL = continue), honouring a result delivered by resume. */
#define CALL_HOOK(s, hook, ...)                                                                    \
    ((s)->have_result ? ((s)->have_result = false, (s)->result)                                    \
                      : ((hook) ? (hook)(__VA_ARGS__) : WEIR_HOOK_CONTINUE))

/*
 * Moves on after a request hook: to next, to a local response (DONE, when may_done and the
 * hook made one), or to an error response. Returns false when the session suspended.
 */
static bool handle_result(struct weir_session *s, enum weir_hook_result r, enum weir__phase next,
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
            return true;
        }
        break;
    }
    weir__session_fail(s, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "hook");
    return true;
}

/*
 * The host part of a Host value, without its port: a name of letters, digits, '-', '.' and
 * '_', or a bracketed IPv6 address. false for anything else (nothing odd goes into Location).
 */
static bool redirect_host(struct weir_iov h, struct weir_iov *host)
{
    size_t n = 0;
    if (h.len > 0 && h.base[0] == '[') {
        while (n < h.len && h.base[n] != ']') {
            char ch = h.base[n];
            if (n > 0 && !((ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') ||
                           ch == ':' || ch == '.')) {
                return false;
            }
            n++;
        }
        if (n == h.len || n < 3) {
            return false;
        }
        n++; /* the ']' */
    } else {
        while (n < h.len && h.base[n] != ':') {
            char ch = h.base[n];
            if (!((ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
                  ch == '-' || ch == '.' || ch == '_')) {
                return false;
            }
            n++;
        }
        if (n == 0) {
            return false;
        }
    }
    for (size_t i = n + 1; i < h.len; i++) { /* the port, which the redirect replaces */
        if (h.base[n] != ':' || h.base[i] < '0' || h.base[i] > '9') {
            return false;
        }
    }
    if (n < h.len && (h.base[n] != ':' || n + 1 == h.len)) {
        return false;
    }
    *host = (struct weir_iov){h.base, n};
    return true;
}

/* listeners[].redirect_https: 308 to the same host, path and query over https. */
static void redirect_https(struct weir_session *s)
{
    struct weir_iov host;
    if (!redirect_host(weir_req_host(&s->req), &host)) {
        s->close_after = true;
        if (weir_session_respond_text(s, 400, WEIR_IOV_LIT("Bad Request: no usable Host\n")) != 0) {
            weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
        }
        return;
    }
    struct weir_iov t = s->req.target;
    if (t.len == 0 || t.base[0] != '/') {
        t = WEIR_IOV_LIT("/"); /* "*" (OPTIONS) has no https equivalent but the root */
    }
    uint16_t port = s->c->redirect_https;
    size_t cap = sizeof("https://:65535") + host.len + t.len;
    char *loc = weir_arena_alloc(s->arena, cap);
    struct weir_resp *r = weir_session_response_new(s, 308);
    int n = loc == NULL   ? -1
            : port == 443 ? snprintf(loc, cap, "https://%.*s%.*s", (int)host.len, host.base,
                                     (int)t.len, t.base)
                          : snprintf(loc, cap, "https://%.*s:%u%.*s", (int)host.len, host.base,
                                     (unsigned)port, (int)t.len, t.base);
    if (r == NULL || n < 0 || (size_t)n >= cap ||
        weir_headers_add_iov(&r->headers, WEIR_IOV_LIT("Location"),
                             (struct weir_iov){loc, (size_t)n}) != 0 ||
        weir_headers_add(&r->headers, "Content-Type", "text/plain") != 0 ||
        weir_session_respond(s, r, WEIR_IOV_LIT("Moved to https\n")) != 0) {
        weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
    }
}

/*
 * A request that may have come as TLS 0-RTT data (the handshake is still unfinished, so it
 * could be a replay), RFC 8470: a safe method without a body goes on, marked for the origin
 * with Early-Data: 1; anything else is answered 425 Too Early, which clients retry after the
 * handshake. true to go on.
 */
static bool early_ok(struct weir_session *s)
{
    struct weir_iov m = s->req.method;
    bool safe = weir_iov_eq(m, WEIR_IOV_LIT("GET")) || weir_iov_eq(m, WEIR_IOV_LIT("HEAD")) ||
                weir_iov_eq(m, WEIR_IOV_LIT("OPTIONS"));
    if (safe && s->req_body == WEIR_H1_BODY_NONE) {
        s->early_data = true;
        return true;
    }
    if (weir_session_respond_text(s, 425, WEIR_IOV_LIT("Too Early\n")) != 0) {
        weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
    }
    return false;
}

static bool phase_early(struct weir_session *s)
{
    if (!s->have_result && normalize_absolute_form(s) != 0) {
        s->close_after = true;
        if (weir_session_respond_text(s, 400, WEIR_IOV_LIT("Bad Request\n")) != 0) {
            weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
        }
        return true; /* on to the local response */
    }
    if (!s->have_result && s->c->redirect_https != 0) {
        redirect_https(s);
        return true; /* before any hook, as nginx's return in a server block */
    }
    if (!s->have_result && s->c->tls && weir__tls_early(s->cst) && !early_ok(s)) {
        return true; /* 425, before any hook */
    }
    const struct weir_proxy_hooks *hk = s->w->hooks;
    enum weir_hook_result r = CALL_HOOK(s, hk->early_request_filter, s, s->ctx);
    return handle_result(s, r, PH_REQUEST_FILTER, true);
}

static bool phase_request_filter(struct weir_session *s)
{
    const struct weir_proxy_hooks *hk = s->w->hooks;
    enum weir_hook_result r = CALL_HOOK(s, hk->request_filter, s, s->ctx);
    return handle_result(s, r, PH_CACHE, true);
}

static bool phase_peer(struct weir_session *s)
{
    const struct weir_proxy_hooks *hk = s->w->hooks;
    const struct weir_cfg_timeouts *t = &s->cfg->server.timeouts;
    if (!s->have_result) {
        WEIR_DEBUG_ASSERT(s->ux.conn == NULL && s->ux.state == UP_IDLE);
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
        return true;
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
    return handle_result(s, r, PH_UPSTREAM, false);
}

/* ---- the retry loop ---- */

/* Back to upstream_peer for another choice (weir_lb_select avoids the backend just tried). */
static void retry_peer(struct weir_session *s)
{
    s->retries++;
    s->have_peer = false;
    s->phase = PH_PEER;
}

/* Connecting failed: fail_to_connect may ask for another peer, preset while max_retries allows. */
static void connect_failed(struct weir_session *s, const struct weir__outcome *o)
{
    weir__upstream_release(s, false);
    weir__backend_failed(s->peer.backend, o->err.type, o->err.context);
    struct weir_error e = o->err;
    e.retry = s->retries < s->cfg->server.max_retries;
    if (s->w->hooks->fail_to_connect) {
        s->w->hooks->fail_to_connect(s, s->ctx, &s->peer, &e);
    }
    bool again = e.retry && s->retries < WEIR_MAX_CONNECT_RETRIES;
    weir_log(WEIR_LOG_INFO, "connect to %s failed: %s%s", s->peer.name, weir_strerror(o->code),
             again ? " (retrying)" : "");
    if (again) {
        retry_peer(s);
        return;
    }
    if (s->cache != NULL && weir__cache_serve_stale_on_error(s)) {
        s->phase = PH_UPSTREAM; /* stale-if-error: the stored response answers */
        return;
    }
    weir__session_fail(s, o->err.type, WEIR_SRC_UPSTREAM, e.sys_errno, "connect");
}

/*
 * The exchange failed after connecting. A reused connection that died before answering is
 * retried on a fresh one to the same peer (preset; not a backend failure, not counted in
 * max_retries). Otherwise error_while_proxy may ask for a retry, honoured when the request
 * can be replayed (nothing of its body consumed, no response byte seen) and max_retries
 * allows: upstream_peer then chooses again, away from this backend.
 */
static void upstream_failed(struct weir_session *s, const struct weir__outcome *o)
{
    struct weir_error e = o->err;
    e.retry = o->stale;
    if (s->w->hooks->error_while_proxy) {
        s->w->hooks->error_while_proxy(s, s->ctx, &s->peer, &e);
    }
    if (e.retry && o->stale) {
        s->stale_retries += o->refused ? 0 : 1; /* refusals have their own bound */
        weir__upstream_rewind(s, true);
        return; /* still PH_UPSTREAM: a fresh connection to the same peer */
    }
    if (!o->blameless) {
        weir__backend_failed(s->peer.backend, o->err.type, o->err.context);
    }
    if (e.retry && o->replayable && s->retries < s->cfg->server.max_retries) {
        weir_log(WEIR_LOG_INFO, "upstream %s: %s (%s); retrying", s->peer.name,
                 weir_error_type_str(o->err.type), o->err.context ? o->err.context : "");
        weir__upstream_rewind(s, false);
        retry_peer(s);
        return;
    }
    if (s->cache != NULL && weir__cache_serve_stale_on_error(s)) {
        return; /* still PH_UPSTREAM: stale-if-error, the stored response answers */
    }
    weir__session_fail(s, o->err.type, WEIR_SRC_UPSTREAM, o->err.sys_errno, o->err.context);
}

/* The client's body was malformed or too large: answer it ourselves, then close. */
static void client_body_failed(struct weir_session *s, const struct weir__outcome *o)
{
    s->close_after = true;
    weir__upstream_release(s, false);
    s->resp = NULL;
    struct weir_iov body =
        o->status == 413 ? WEIR_IOV_LIT("Payload Too Large\n") : WEIR_IOV_LIT("Bad Request\n");
    if (s->resp_started || weir_session_respond_text(s, o->status, body) != 0) {
        weir__session_fail(s, o->err.type, o->err.source, 0, o->err.context);
        return;
    }
    /* Answered by us, but the request failed: logging and the access log say why. */
    s->has_err = true;
    s->err = o->err;
}

static bool phase_upstream(struct weir_session *s)
{
    struct weir__outcome o;
    switch (weir__upstream_run(s, &o)) {
    case WEIR_STEP_BLOCKED:
        return false;
    case WEIR_STEP_DONE:
        weir__cache_complete(s);
        s->resp_done = true;
        if (!s->req_sent) {
            s->close_after = true; /* the client's body was not read to its end */
        }
        if (s->respp.out_kind == WEIR_H1_BODY_CLOSE) {
            s->close_after = true;
        }
        s->phase = PH_DONE;
        return true;
    case WEIR_STEP_FAILED:
        break;
    }
    switch (o.kind) {
    case WEIR_FAIL_CONNECT:
        connect_failed(s, &o);
        break;
    case WEIR_FAIL_UPSTREAM:
        upstream_failed(s, &o);
        break;
    case WEIR_FAIL_CLIENT_BODY:
        client_body_failed(s, &o);
        break;
    case WEIR_FAIL_END:
        weir__session_fail(s, o.err.type, o.err.source, o.err.sys_errno, o.err.context);
        break;
    }
    return true;
}

/* ---- responses weir makes itself ---- */

static int start_local_response(struct weir_session *s)
{
    struct weir_resp *r = s->resp;
    weir__upstream_release(s, false);
    if (s->req_body != WEIR_H1_BODY_NONE && !s->reqp.in_done) {
        s->close_after = true; /* we will not read the rest of the body */
    }
    weir__cache_status(s, r);
    int rc = weir__down_connection_fields(s, r);
    if (rc != 0) {
        return rc;
    }
    rc = weir__down_queue_head(s, r);
    if (rc != 0) {
        return rc;
    }
    bool head_method = weir_iov_eq(s->req.method, WEIR_IOV_LIT("HEAD"));
    if (!head_method && r->status != 204 && r->status != 304) {
        weir__outq_push(&s->out_client, s->local_body.base, s->local_body.len);
        s->respp.bytes = s->local_body.len;
    }
    s->client_progress_ms = weir_loop_now_ms(s->w->loop);
    return 0;
}

static bool phase_local_response(struct weir_session *s)
{
    WEIR_DEBUG_ASSERT(s->resp != NULL && s->ux.state == UP_IDLE);
    if (!s->resp_started && start_local_response(s) != 0) {
        s->close_after = true;
        s->phase = PH_DONE;
        return true;
    }
    if (s->cst->writable) {
        ssize_t n = weir__stream_flush(s->cst, &s->out_client);
        if (n < 0) {
            s->close_after = true;
            s->has_err = true;
            s->err = (struct weir_error){WEIR_ERR_WRITE_ERROR, WEIR_SRC_DOWNSTREAM, false, (int)-n,
                                         "client"};
            s->phase = PH_DONE;
            return true;
        }
        if (n > 0) {
            s->client_progress_ms = weir_loop_now_ms(s->w->loop);
        }
    }
    if (weir__outq_empty(&s->out_client)) {
        s->resp_done = true;
        s->phase = PH_DONE;
        return true;
    }
    uint64_t now = weir_loop_now_ms(s->w->loop);
    uint64_t deadline = s->client_progress_ms + s->cfg->server.timeouts.client_write_ms;
    weir__session_client_deadline(s, deadline > now ? deadline - now : 1);
    return false;
}

/* ---- the machine ---- */

/*
 * Before the upstream exchange (a hook resuming after the client left, say): a client that is
 * gone ends the request there, so nothing is sent upstream for nobody. True when it changed
 * the session's course.
 */
static bool client_closed(struct weir_session *s)
{
    const struct weir__stream *st = s->cst;
    if (!(st->rdhup || st->hangup || st->eof) || !weir__client_hung_up(s)) {
        return false;
    }
    if (s->ignore_client_abort) {
        weir__client_abandon(s);
        return false;
    }
    s->client_gone = true;
    s->have_result = false;
    weir__session_fail(s, WEIR_ERR_CONNECTION_CLOSED, WEIR_SRC_DOWNSTREAM, 0, "client closed");
    return true;
}

void weir__session_run(struct weir_session *s)
{
    WEIR_SESSION_CHECK(s);
    for (;;) {
        if (s->suspended) {
            return;
        }
        if (s->phase < PH_UPSTREAM && !s->client_gone && client_closed(s)) {
            continue; /* ended, or carries on for ignore_client_abort */
        }
        bool more = false;
        switch (s->phase) {
        case PH_EARLY:
            more = phase_early(s);
            break;
        case PH_REQUEST_FILTER:
            more = phase_request_filter(s);
            break;
        case PH_CACHE:
            more = weir__cache_phase(s);
            break;
        case PH_PEER:
            more = phase_peer(s);
            break;
        case PH_UPSTREAM:
            more = phase_upstream(s);
            break;
        case PH_LOCAL_RESPONSE:
            more = phase_local_response(s);
            break;
        case PH_CLOSING:
            return; /* waits for the suspended hook, which is gone: see session_resume_cb */
        case PH_DONE:
            session_end(s); /* frees s */
            return;
        }
        if (!more) {
            return;
        }
    }
}

static void session_resume_cb(struct weir_loop *loop, struct weir__defer *d)
{
    struct weir_session *s = WEIR_CONTAINER_OF(d, struct weir_session, resume);
    WEIR_SESSION_CHECK(s);
    if (s->phase == PH_CLOSING || weir__session_client_dead(s)) {
        /* The connection died (or the stream was reset) while the hook waited: end now. */
        s->have_result = false;
        s->phase = PH_DONE;
        if (!s->has_err) {
            s->has_err = true;
            s->err = (struct weir_error){WEIR_ERR_CONNECTION_CLOSED, WEIR_SRC_DOWNSTREAM, false, 0,
                                         "client closed"};
        }
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
    case WEIR_ERR_TLS_HANDSHAKE:
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

/* A gRPC request (Content-Type application/grpc, +proto, +json...). */
static bool is_grpc(const struct weir_session *s)
{
    struct weir_iov ct;
    return weir_headers_get(&s->req.headers, "Content-Type", &ct) && ct.len >= 16 &&
           weir_iov_ieq((struct weir_iov){ct.base, 16}, WEIR_IOV_LIT("application/grpc"));
}

/*
 * gRPC clients read an error from grpc-status, not from an HTML page: a trailers-only
 * response (200, the status in the head, no body), with the HTTP status's gRPC equivalent
 * (gRPC's HTTP-to-status mapping: 502, 503 are UNAVAILABLE; 504 DEADLINE_EXCEEDED).
 */
static int respond_grpc_error(struct weir_session *s, int status)
{
    const char *code = status == 504                    ? "4"
                       : status == 502 || status == 503 ? "14"
                       : status == 429                  ? "8"
                                                        : "13";
    struct weir_resp *r = weir_session_response_new(s, 200);
    if (r == NULL ||
        weir_headers_add_iov(&r->headers, WEIR_IOV_LIT("Content-Type"), weir__grpc_web_type(s)) !=
            0 ||
        weir_headers_add(&r->headers, "grpc-status", code) != 0 ||
        weir_headers_add(&r->headers, "grpc-message", weir_http_reason(status)) != 0) {
        return WEIR_ENOMEM;
    }
    int rc = weir_session_respond(s, r, (struct weir_iov){"", 0});
    weir_headers_remove(&r->headers, "Content-Length");
    return rc;
}

void weir__session_fail(struct weir_session *s, enum weir_error_type type,
                        enum weir_error_source src, int sys_errno, const char *context)
{
    s->failed = true;
    s->has_err = true;
    s->err = (struct weir_error){type, src, false, sys_errno, context};
    weir_log(WEIR_LOG_DEBUG, "request from %s failed: %s (%s)", s->c->ip, weir_error_type_str(type),
             context ? context : "");
    weir__upstream_release(s, false);
    if (s->resp_started || weir__session_client_dead(s) || src == WEIR_SRC_DOWNSTREAM) {
        /* Mid-response or the client is gone: the only honest signal left is a close. */
        s->close_after = true;
        s->phase = PH_DONE;
        return;
    }
    int status = 0;
    if (s->w->hooks->fail_to_proxy) {
        status = s->w->hooks->fail_to_proxy(s, s->ctx, &s->err);
    }
    if (s->resp != NULL && s->phase == PH_LOCAL_RESPONSE) {
        return; /* the hook answered itself */
    }
    if (status < 100 || status > 599) {
        status = default_status(type);
    }
    /* The request body may be half read: the connection cannot be trusted for another. */
    if (!s->reqp.in_done && s->req_body != WEIR_H1_BODY_NONE) {
        s->close_after = true;
    }
    s->resp = NULL;
    int rc = is_grpc(s)
                 ? respond_grpc_error(s, status)
                 : weir_session_respond_text(s, status, weir_iov_cstr(weir_http_reason(status)));
    if (rc != 0) {
        s->close_after = true;
        s->phase = PH_DONE;
    }
}

void weir__session_client_timeout(struct weir_session *s)
{
    WEIR_SESSION_CHECK(s);
    const struct weir_cfg_timeouts *t = &s->cfg->server.timeouts;
    if (s->phase == PH_UPSTREAM && t->client_min_rate != 0 && s->rate_since_ms != 0 &&
        weir_loop_now_ms(s->w->loop) < s->client_progress_ms + t->client_write_ms) {
        weir__session_run(s); /* a client_min_rate window ends: the exchange judges it */
        return;
    }
    if (s->phase == PH_UPSTREAM && !s->resp_started && !s->reqp.in_done) {
        /* The client stopped sending its body. */
        s->close_after = true;
        s->resp = NULL;
        weir__upstream_release(s, false);
        if (weir_session_respond_text(s, 408, WEIR_IOV_LIT("Request Timeout\n")) == 0) {
            s->has_err = true;
            s->err = (struct weir_error){WEIR_ERR_READ_TIMEOUT, WEIR_SRC_DOWNSTREAM, false, 0,
                                         "client body"};
            weir__session_run(s);
            return;
        }
    }
    weir__session_fail(s, WEIR_ERR_WRITE_TIMEOUT, WEIR_SRC_DOWNSTREAM, 0, "client timeout");
    weir__session_run(s);
}

/* The upstream connection's events and the exchange's timer: entries like the client's. */
void weir__session_upstream_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct weir__upconn *u = io->data;
    WEIR_CHECK_OBJ(u, WEIR_UPCONN_MAGIC);
    weir__stream_note_events(&u->st, events);
    struct weir_session *s = u->owner;
    if (s != NULL) {
        WEIR_CHECK_OBJ(s, WEIR_SESSION_MAGIC);
        if (!s->suspended && s->phase == PH_UPSTREAM) {
            weir__session_run(s);
        }
    }
}

void weir__session_upstream_timer(struct weir_loop *loop, struct weir_timer *t)
{
    struct weir_session *s = t->data;
    WEIR_CHECK_OBJ(s, WEIR_SESSION_MAGIC);
    if (!s->suspended && s->phase == PH_UPSTREAM) {
        weir__session_run(s); /* the exchange checks its own deadlines */
    }
}

void weir__session_client_event(struct weir_session *s)
{
    WEIR_SESSION_CHECK(s);
    if (!s->suspended && (s->phase == PH_UPSTREAM || s->phase == PH_LOCAL_RESPONSE)) {
        weir__session_run(s);
    }
}

/* ---- the end ---- */

void weir__session_abort(struct weir_session *s)
{
    WEIR_SESSION_CHECK(s);
    s->close_after = true;
    if (s->phase == PH_DONE || s->phase == PH_CLOSING) {
        return;
    }
    if (!s->has_err) {
        /* Cut short by our side (the worker stops): not a success, whatever was sent. */
        s->has_err = true;
        s->err = (struct weir_error){WEIR_ERR_CONNECTION_CLOSED, WEIR_SRC_INTERNAL, false, 0,
                                     "connection closed"};
    }
    if (s->suspended) {
        /* A hook still owns a timer or I/O pointing at us: end when it resumes. */
        weir__loop_defer_cancel(s->w->loop, &s->resume);
        weir__upstream_release(s, false);
        s->phase = PH_CLOSING;
        return;
    }
    s->phase = PH_DONE;
    weir__session_run(s);
}

void weir__session_abandon(struct weir_session *s)
{
    WEIR_SESSION_CHECK(s);
    s->suspended = false;
    s->have_result = false;
    s->phase = PH_DONE;
    weir__session_run(s);
}

/* Logs, releases the upstream and the peer, frees the session, hands the connection on. */
static void session_end(struct weir_session *s)
{
    WEIR_DEBUG_ASSERT(s->phase == PH_DONE && !s->suspended);
    struct weir__conn *c = s->c;
    struct weir__proxy_worker *w = s->w;
    weir__loop_defer_cancel(w->loop, &s->resume);
    weir__upstream_release(s, !s->failed);
    weir__spool_free(s->spool); /* its chunks and temporary file; the arena has the rest */
    weir__grpc_web_free(s);
    weir__cache_end(s);
    weir__session_wait_end(s); /* only a worker's forced end of a suspended session waits */
    if (s->status == 0 && s->has_err && s->err.source == WEIR_SRC_DOWNSTREAM) {
        s->status = 499; /* nginx's "client closed request": it left before any answer */
    }
    bool bg = s->bg != NULL;
    if (w->hooks->logging && (!bg || weir__bg_started(s))) {
        w->hooks->logging(s, s->ctx, s->has_err ? &s->err : NULL);
    }
    if (!bg) {
        weir__access_log_request(s); /* a background request is not a client's */
    } else {
        weir_log(WEIR_LOG_DEBUG, "background request %.*s ended: %d%s%s", (int)s->req.target.len,
                 s->req.target.base, s->status, s->has_err ? ", " : "",
                 s->has_err ? weir_error_type_str(s->err.type) : "");
        weir__bg_end(s);
    }
    weir_peer_release(&s->peer);
    /* A failure answered with a whole error response (request fully read) keeps the
       connection, as its Connection field said; every other failure set close_after. */
    bool close_conn = s->close_after || !s->client_keep_alive;
    struct weir__h2s *hs = s->h2;
    if (hs != NULL) {
        weir__session_h2_end(s);
    }
    bool complete = s->resp_done;
    struct weir__snapshot_holder *h = s->holder;
    struct weir_arena *a = s->arena;
    s->magic = 0;
    give_arena(w, a); /* s lived in the arena: no access after this */
    weir__snapshot_holder_put(h);
    if (hs != NULL) {
        weir__conn_h2_request_done(c, hs, complete);
    } else if (!bg) {
        weir__conn_request_done(c, close_conn);
    }
}
