/*
 * HTTP/2 towards origins (upstreams.*.protocol h2, h2c, auto): requests as streams
 * multiplexed over a worker's connections to the peer, with the HTTP/2 framing of the
 * upstream side (weir__h2_up).
 *
 * Ownership: an HTTP/2 origin connection belongs to one worker and is used only by that
 * worker's sessions; it is never put in the pool's shared tier. Each worker opens its own
 * connections to a peer, a new one only when every one it has is at the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS (or has had a GOAWAY). So an origin sees at most a few
 * connections per worker however many requests are in flight, and no stream ever crosses
 * threads (no lock, no post per frame). While a connection is being made, the sessions that
 * would use it wait for it instead of each making one.
 */
#include "proxy/proxy_int.h"

#include <string.h>

#include "core/alloc.h"
#include "http2/h2.h"
#include "tls/tls.h"
#include "weir/log.h"

#define WEIR_H2UP_MAGIC 0x68327570u

/** An origin connection speaking HTTP/2, on one worker. */
struct weir__h2up {
    uint32_t magic;
    struct weir__proxy_worker *w;
    struct weir__upconn *u;   /* the connection; NULL while the session making it owns it */
    struct weir__upkey key;   /* what it may serve */
    struct weir__h2_conn *hc; /* NULL until connected */
    struct weir__h2up *prev, *next;
    struct weir_session *waiters; /* sessions waiting for it to be connected */
    uint32_t nwaiters;
    struct weir_timer timer; /* idle: PING, then close */
    uint64_t idle_since_ms;
};

static void h2up_stream_event(void *data, struct weir__h2s *hs);
static void h2up_over(void *data, int rc);
static const struct weir__h2_ops H2UP_OPS = {NULL, h2up_stream_event, h2up_over};

bool weir__h2up_wanted(const struct weir_peer *peer)
{
    return peer->protocol == WEIR_PEER_H2C || (peer->protocol == WEIR_PEER_H2 && peer->tls);
}

/* ---- the worker's list ---- */

static void unlink_h2up(struct weir__h2up *h)
{
    struct weir__proxy_worker *w = h->w;
    if (h->prev != NULL) {
        h->prev->next = h->next;
    } else if (w->h2ups == h) {
        w->h2ups = h->next;
    }
    if (h->next != NULL) {
        h->next->prev = h->prev;
    }
    h->prev = h->next = NULL;
}

/* Runs every waiting session again (its connection is up, or gone). */
static void wake_waiters(struct weir__h2up *h)
{
    struct weir_session *s = h->waiters;
    h->waiters = NULL;
    h->nwaiters = 0;
    while (s != NULL) {
        struct weir_session *next = s->ux.h2wnext;
        s->ux.h2wait = NULL;
        s->ux.h2wnext = NULL;
        weir__loop_defer(s->w->loop, &s->ux.h2wake);
        s = next;
    }
}

/* Closes h: its streams' sessions see a reset peer. */
static void h2up_close(struct weir__h2up *h, const char *why)
{
    struct weir__proxy_worker *w = h->w;
    weir_log(WEIR_LOG_DEBUG, "HTTP/2 origin connection closed: %s", why);
    unlink_h2up(h);
    weir_timer_stop(w->loop, &h->timer);
    struct weir__h2s *orphans = weir__h2_conn_free(h->hc);
    h->hc = NULL;
    if (h->u != NULL) {
        weir__upconn_close(w->pool, h->u);
        h->u = NULL;
    }
    wake_waiters(h);
    h->magic = 0;
    /* Each orphan's session learns at once; none refers to h after this. */
    while (orphans != NULL) {
        struct weir__h2s *hs = orphans;
        orphans = hs->next;
        hs->next = NULL;
        struct weir_session *s = hs->owner;
        WEIR_SESSION_CHECK(s);
        s->ux.h2c = NULL;
        weir__loop_defer(w->loop, &s->ux.h2wake);
    }
    weir__free(h);
}

static void h2up_io(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    (void)loop;
    struct weir__upconn *u = io->data;
    WEIR_CHECK_OBJ(u, WEIR_UPCONN_MAGIC);
    struct weir__h2up *h = u->owner;
    WEIR_CHECK_OBJ(h, WEIR_H2UP_MAGIC);
    weir__stream_note_events(&u->st, events);
    int rc = weir__h2_conn_io(h->hc);
    if (rc != 0) {
        h2up_close(h, rc < 0 ? weir_strerror(rc) : "the origin ended it");
    }
}

static void h2up_over(void *data, int rc)
{
    h2up_close(data, rc < 0 ? weir_strerror(rc) : "the origin ended it");
}

static void h2up_stream_event(void *data, struct weir__h2s *hs)
{
    (void)data;
    struct weir_session *s = hs->owner;
    WEIR_SESSION_CHECK(s);
    if (!s->suspended && s->phase == PH_UPSTREAM) {
        weir__session_run(s);
    }
}

/* Idle: a PING every half upstream_idle; unanswered, or idle for upstream_idle, it closes. */
static void h2up_timer(struct weir_loop *loop, struct weir_timer *t)
{
    struct weir__h2up *h = t->data;
    WEIR_CHECK_OBJ(h, WEIR_H2UP_MAGIC);
    uint32_t idle = h->w->cfg->server.timeouts.upstream_idle_ms;
    if (h->hc == NULL || weir__h2_conn_owned(h->hc) > 0) {
        return; /* busy again: re-armed when it is idle */
    }
    uint64_t now = weir_loop_now_ms(loop);
    if (!weir__h2_conn_pinged(h->hc)) {
        h2up_close(h, "no answer to PING");
        return;
    }
    if (now >= h->idle_since_ms + idle) {
        weir__h2_conn_shutdown(h->hc);
        (void)weir__h2_conn_io(h->hc); /* the GOAWAY, if the socket takes it */
        h2up_close(h, "idle");
        return;
    }
    if (weir__h2_conn_ping(h->hc) != 0 || weir_timer_start(loop, t, idle / 2 + 1) != 0) {
        h2up_close(h, "out of memory");
    }
}

/* ---- a session finding, waiting for or making a connection ---- */

static struct weir__h2up *find(struct weir__proxy_worker *w, const struct weir__upkey *key,
                               struct weir__h2up **connecting)
{
    *connecting = NULL;
    uint32_t limit = 100; /* what a peer allows until its SETTINGS say otherwise */
    struct weir__h2up *wait = NULL;
    for (struct weir__h2up *h = w->h2ups; h != NULL; h = h->next) {
        if (!weir__upkey_equal(&h->key, key)) {
            continue;
        }
        if (h->hc != NULL && weir__h2_conn_can_open(h->hc)) {
            return h;
        }
        if (h->hc != NULL) {
            limit = weir__h2_conn_max_streams(h->hc); /* what this peer said it allows */
        } else if (wait == NULL) {
            wait = h;
        }
    }
    if (wait != NULL && wait->nwaiters + 1 < limit) {
        *connecting = wait; /* +1: the session making it has a stream too */
    }
    return NULL;
}

enum weir__h2up_take weir__h2up_take(struct weir_session *s, bool make)
{
    struct weir__upkey key;
    weir__upkey_of(&s->peer, &key);
    struct weir__h2up *connecting = NULL;
    /* A stream refused for want of room goes to another connection, not a fresh one. */
    bool fresh = s->ux.fresh && !s->ux.h2_refused;
    s->ux.h2_refused = false;
    s->ux.fresh = fresh;
    struct weir__h2up *h = fresh ? NULL : find(s->w, &key, &connecting);
    if (h != NULL) {
        s->ux.h2c = h;
        s->ux.reused = true;
        return WEIR_H2UP_READY;
    }
    if (!make) {
        return WEIR_H2UP_NONE;
    }
    if (!s->ux.fresh && connecting != NULL) {
        s->ux.h2wait = connecting;
        s->ux.h2wnext = connecting->waiters;
        connecting->waiters = s;
        connecting->nwaiters++;
        return WEIR_H2UP_WAIT;
    }
    /* None: this session makes one, and others may wait for it meanwhile. */
    struct weir__h2up *n = weir__calloc(1, sizeof(*n));
    if (n == NULL) {
        return WEIR_H2UP_NONE;
    }
    n->magic = WEIR_H2UP_MAGIC;
    n->w = s->w;
    n->key = key;
    weir_timer_init(&n->timer, h2up_timer, n);
    n->next = s->w->h2ups;
    if (s->w->h2ups != NULL) {
        s->w->h2ups->prev = n;
    }
    s->w->h2ups = n;
    s->ux.h2make = n;
    return WEIR_H2UP_NONE;
}

void weir__h2up_unwait(struct weir_session *s)
{
    struct weir__h2up *h = s->ux.h2wait;
    if (h == NULL) {
        return;
    }
    for (struct weir_session **p = &h->waiters; *p != NULL; p = &(*p)->ux.h2wnext) {
        if (*p == s) {
            *p = s->ux.h2wnext;
            h->nwaiters--;
            break;
        }
    }
    s->ux.h2wait = NULL;
    s->ux.h2wnext = NULL;
}

/* The connection this session was making failed or turned out HTTP/1.1: others stop waiting. */
void weir__h2up_unmake(struct weir_session *s)
{
    struct weir__h2up *h = s->ux.h2make;
    if (h == NULL) {
        return;
    }
    s->ux.h2make = NULL;
    unlink_h2up(h);
    wake_waiters(h);
    h->magic = 0;
    weir__free(h);
}

int weir__h2up_promote(struct weir_session *s)
{
    struct weir__upconn *u = s->ux.conn;
    struct weir__h2up *h = s->ux.h2make;
    if (h == NULL) {
        h = weir__calloc(1, sizeof(*h)); /* auto: ALPN said h2 on a connection made for h1 */
        if (h == NULL) {
            return WEIR_ENOMEM;
        }
        h->magic = WEIR_H2UP_MAGIC;
        h->w = s->w;
        weir__upkey_of(&s->peer, &h->key);
        weir_timer_init(&h->timer, h2up_timer, h);
        h->next = s->w->h2ups;
        if (s->w->h2ups != NULL) {
            s->w->h2ups->prev = h;
        }
        s->w->h2ups = h;
    }
    s->ux.h2make = NULL;
    struct weir__h2_limits lim;
    weir__h2_limits_of(s->cfg, true, &lim);
    h->hc = weir__h2_client_new(s->w->loop, &u->st, &s->w->bufs, &lim, &H2UP_OPS, h);
    if (h->hc == NULL) {
        unlink_h2up(h);
        wake_waiters(h);
        h->magic = 0;
        weir__free(h);
        return WEIR_ENOMEM;
    }
    weir__h2_conn_set_stream_cap(h->hc, weir__backend_h2_cap(s->peer.backend));
    /* The connection is the h2 connection's now, not the session's. */
    s->ux.conn = NULL;
    u->owner = h;
    u->st.io.cb = h2up_io;
    u->st.io.data = u;
    h->u = u;
    s->ux.h2c = h;
    wake_waiters(h);
    return 0;
}

bool weir__h2up_alpn_h2(const struct weir_session *s)
{
    return s->ux.conn != NULL && s->ux.conn->st.ssl != NULL && weir__tls_alpn_h2(&s->ux.conn->st);
}

/* ---- the stream ---- */

enum weir__step weir__h2up_open(struct weir_session *s, struct weir__outcome *o)
{
    struct weir__h2up *h = s->ux.h2c;
    if (h == NULL || h->hc == NULL || !weir__h2_conn_can_open(h->hc)) {
        /* Full or going since it was chosen: another connection (as a stale one would). */
        enum weir__step st =
            weir__upstream_error(s, o, WEIR_ERR_CONNECTION_CLOSED, 0, "HTTP/2 connection full");
        o->stale = s->stale_retries < WEIR_MAX_STALE_RETRIES;
        o->blameless = true;
        return st;
    }
    struct weir_iov host = {NULL, 0};
    (void)weir_headers_get_iov(&s->req.headers, WEIR_IOV_LIT("Host"), &host);
    bool body = s->req_body != WEIR_H1_BODY_NONE;
    int err = 0;
    struct weir__h2s *hs = weir__h2_request(
        h->hc, s, s->req.method, s->peer.tls ? WEIR_IOV_LIT("https") : WEIR_IOV_LIT("http"), host,
        s->req.target, &s->req.headers, s->ux.te_trailers, body, &err);
    if (hs == NULL) {
        return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "HTTP/2 stream");
    }
    weir_timer_stop(s->w->loop, &h->timer);
    s->ux.h2s = hs;
    s->ust = &hs->vst;
    return WEIR_STEP_DONE;
}

void weir__h2up_release(struct weir_session *s)
{
    struct weir__h2s *hs = s->ux.h2s;
    struct weir__h2up *h = s->ux.h2c;
    s->ux.h2s = NULL;
    s->ux.h2c = NULL;
    s->ust = NULL;
    if (hs != NULL) {
        weir__buf_release(&s->w->bufs, &hs->vst.in);
        weir__h2s_done(hs, true); /* a stream still open is cancelled */
    }
    if (h == NULL || h->hc == NULL || weir__h2_conn_owned(h->hc) > 0) {
        return;
    }
    h->idle_since_ms = weir_loop_now_ms(s->w->loop);
    uint32_t idle = s->cfg->server.timeouts.upstream_idle_ms;
    if (s->w->draining || weir_timer_start(s->w->loop, &h->timer, idle / 2 + 1) != 0) {
        weir__h2_conn_shutdown(h->hc);
    }
}

void weir__h2up_close_idle(struct weir__proxy_worker *w, bool all)
{
    struct weir__h2up *h = w->h2ups;
    while (h != NULL) {
        struct weir__h2up *next = h->next;
        if (h->hc != NULL && (all || weir__h2_conn_owned(h->hc) == 0)) {
            weir__h2_conn_shutdown(h->hc);
            (void)weir__h2_conn_io(h->hc);
            h2up_close(h, "worker stopping");
        }
        h = next;
    }
}

/* ---- the upstream framing ---- */

static int h2_request_head(struct weir_session *s, bool length_ok)
{
    if (s->req_body == WEIR_H1_BODY_NONE) {
        s->reqp.out_kind = WEIR_H1_BODY_NONE;
    } else if (length_ok) {
        s->reqp.out_kind = WEIR_H1_BODY_LENGTH;
    } else {
        weir_headers_remove(&s->req.headers, "Content-Length");
        s->reqp.out_kind = WEIR_H1_BODY_CLOSE; /* DATA frames, then END_STREAM */
    }
    return 0;
}

/* The response head of the stream into s->resp, with the body's framing. */
static int adopt_response(struct weir_session *s, struct weir__h2s *hs)
{
    struct weir_resp *r = weir_arena_calloc(s->arena, sizeof(*r));
    char *copy = weir_arena_alloc(s->arena, hs->hlen ? hs->hlen : 1);
    if (r == NULL || copy == NULL ||
        weir__headers_init(&r->headers, s->arena, hs->nfields + 8,
                           s->cfg->server.limits.max_headers + WEIR_HEADERS_SLACK) != 0) {
        return WEIR_ENOMEM;
    }
    memcpy(copy, hs->hb, hs->hlen);
    uint64_t len = 0;
    bool has_length = false;
    for (uint32_t i = 0; i < hs->nfields; i++) {
        const struct weir__h2_field *f = &hs->fields[i];
        r->headers.v[i].name = (struct weir_iov){copy + f->name, f->name_len};
        r->headers.v[i].value = (struct weir_iov){copy + f->value, f->value_len};
        if (weir_iov_eq(r->headers.v[i].name, WEIR_IOV_LIT("content-length"))) {
            has_length = weir__parse_length(r->headers.v[i].value, &len);
        }
    }
    r->headers.n = hs->nfields;
    r->status = (uint16_t)hs->status;
    r->minor = 1;
    r->reason = weir_iov_cstr(weir_http_reason(hs->status));
    s->resp = r;
    s->ux.keep_alive = true;
    bool head_method = weir_iov_eq(s->req.method, WEIR_IOV_LIT("HEAD"));
    enum weir__h1_body kind = WEIR_H1_BODY_CLOSE; /* until END_STREAM */
    if (head_method || r->status == 204 || r->status == 304 ||
        (hs->end_in && weir__buf_len(&hs->rbuf) == 0 && hs->vst.in.data == NULL)) {
        kind = WEIR_H1_BODY_NONE;
    } else if (has_length) {
        kind = len > 0 ? WEIR_H1_BODY_LENGTH : WEIR_H1_BODY_NONE;
    }
    weir__pipe_source(s, &s->respp, kind, len);
    return 0;
}

static enum weir__step h2_response_head(struct weir_session *s, struct weir__outcome *o)
{
    struct weir__h2s *hs = s->ux.h2s;
    if (hs->refused) {
        /* Refused (a GOAWAY's, or REFUSED_STREAM): the origin did nothing with it. */
        s->ux.h2_refused = true;
        struct weir__h2up *h = s->ux.h2c;
        if (h != NULL && h->hc != NULL) {
            /* A GOAWAY that cut off streams after N: the origin caps its connections at N
               requests (nginx's keepalive_requests); new ones get no more than that. */
            weir__backend_learn_h2_cap(s->peer.backend, weir__h2_conn_capped_at(h->hc));
        }
        enum weir__step st =
            weir__upstream_error(s, o, WEIR_ERR_CONNECTION_CLOSED, 0, "HTTP/2 stream refused");
        o->stale = ++s->ux.h2_refusals <= WEIR_MAX_H2_REFUSED;
        o->refused = true;
        o->replayable = !s->resp_started;
        o->blameless = true;
        return st;
    }
    if (hs->reject != 0) {
        /* Over the head limits, or a field an HTTP/1.1 client could not be given. */
        weir_log(WEIR_LOG_WARN, "invalid response head from %s: %s", s->peer.name,
                 hs->reject == 431 ? "too large" : "a field that is not valid");
        return weir__upstream_error(s, o, WEIR_ERR_INVALID_HTTP, 0, "response head");
    }
    if (!hs->head_done) {
        if (hs->vst.hangup) {
            return weir__upstream_error(s, o, WEIR_ERR_CONNECTION_CLOSED, 0,
                                        "HTTP/2 stream reset before the response");
        }
        return WEIR_STEP_BLOCKED;
    }
    s->ux.byte_seen = true;
    s->ux.progress_ms = weir_loop_now_ms(s->w->loop);
    if (adopt_response(s, hs) != 0) {
        return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
    }
    return WEIR_STEP_DONE;
}

const struct weir__up_framing weir__h2_up = {
    .name = "HTTP/2",
    .request_head = h2_request_head,
    .response_head = h2_response_head,
};
