/*
 * Background requests: sessions weir starts itself, with no client (stale-while-revalidate's
 * refresh, cache.c). A background session runs every phase like a client's request; its
 * client side is a connection with no socket whose stream has no body to give and takes every
 * byte it is given, so the origin's response is paced by the origin alone. It copies the
 * identity of the request that caused it (client address, TLS or not) for the hooks, the
 * forwarded fields and the cache key; it is not in the access log (it is not a client's
 * request) but the logging hook sees it, and weir_session_is_background tells hooks apart.
 *
 * A worker keeps its background sessions in a list, at most WEIR_MAX_BACKGROUND at once, and
 * ends them when it drains or stops: a refresh is an optimisation, never a reason to wait.
 */
#include "proxy/proxy_int.h"

#include <string.h>

#include "core/alloc.h"
#include "weir/log.h"

struct weir__bg {
    struct weir__conn conn; /* the client side: no socket, no timer */
    struct weir_session *s;
    struct weir__defer start;
    struct weir__bg *prev, *next; /* the worker's background sessions */
    bool started;
};

/* The client stream: nothing to read (a GET has no body), every byte written is dropped. */
static ssize_t sink_read(struct weir__stream *st, char *buf, size_t len)
{
    (void)buf;
    (void)len;
    st->readable = false;
    return 0;
}

static ssize_t sink_flush(struct weir__stream *st, struct weir__outq *q)
{
    size_t n = weir__outq_len(q);
    weir__outq_consume(q, n);
    st->writable = true;
    return (ssize_t)n;
}

static const struct weir__stream_vt sink_vt = {sink_read, sink_flush};

static void bg_start(struct weir_loop *loop, struct weir__defer *d)
{
    (void)loop;
    struct weir__bg *bg = WEIR_CONTAINER_OF(d, struct weir__bg, start);
    struct weir_session *s = bg->s;
    WEIR_SESSION_CHECK(s);
    bg->started = true;
    weir__session_new_ctx(s);
    s->phase = PH_EARLY;
    weir__session_run(s);
}

struct weir_session *weir__bg_new(struct weir_session *from)
{
    struct weir__proxy_worker *w = from->w;
    if (w->nbg >= WEIR_MAX_BACKGROUND || w->draining) {
        return NULL;
    }
    struct weir_session *s = weir__session_alloc(w, from->holder);
    if (s == NULL) {
        return NULL;
    }
    struct weir__bg *bg = weir_arena_calloc(s->arena, sizeof(*bg));
    if (bg == NULL) {
        weir__session_discard(s);
        return NULL;
    }
    const struct weir__conn *fc = from->c;
    struct weir__conn *c = &bg->conn;
    c->magic = WEIR_CONN_MAGIC;
    c->state = CONN_ACTIVE;
    c->w = w;
    memcpy(&c->addr, &fc->addr, sizeof(c->addr));
    memcpy(c->ip, fc->ip, sizeof(c->ip));
    c->iplen = fc->iplen;
    memcpy(c->ipkey, fc->ipkey, sizeof(c->ipkey));
    c->ipkeylen = fc->ipkeylen;
    c->tls = fc->tls;
    c->st.io.fd = -1;
    c->st.vt = &sink_vt;
    c->st.writable = true;
    c->s = s;
    c->nrequests = 1;
    bg->s = s;
    bg->start.fn = bg_start;
    s->c = c;
    s->cst = &c->st;
    s->bg = bg;
    s->index = 1;
    s->client_minor = 1;
    s->client_keep_alive = true;
    s->close_after = true;
    bg->next = w->bgs;
    if (w->bgs != NULL) {
        w->bgs->prev = bg;
    }
    w->bgs = bg;
    w->nbg++;
    return s;
}

void weir__bg_start(struct weir_session *s)
{
    weir__pipe_source(s, &s->reqp, s->req_body, s->req_length);
    weir__loop_defer(s->w->loop, &s->bg->start); /* not inside the caller's own phase */
}

void weir__bg_end(struct weir_session *s)
{
    struct weir__bg *bg = s->bg;
    struct weir__proxy_worker *w = s->w;
    weir__loop_defer_cancel(w->loop, &bg->start);
    if (bg->prev != NULL) {
        bg->prev->next = bg->next;
    } else {
        w->bgs = bg->next;
    }
    if (bg->next != NULL) {
        bg->next->prev = bg->prev;
    }
    bg->prev = bg->next = NULL;
    w->nbg--;
}

void weir__bg_abort_all(struct weir__proxy_worker *w)
{
    struct weir__bg *bg = w->bgs;
    while (bg != NULL) {
        struct weir__bg *next = bg->next; /* an abort frees bg (or leaves it PH_CLOSING) */
        if (bg->started) {
            weir__session_abort(bg->s);
        } else {
            weir__session_abandon(bg->s); /* never ran: nothing but its session to end */
        }
        bg = next;
    }
}

void weir__bg_abandon_all(struct weir__proxy_worker *w)
{
    while (w->bgs != NULL) {
        weir__session_abandon(w->bgs->s);
    }
}

bool weir__bg_started(const struct weir_session *s)
{
    return s->bg->started;
}

bool weir_session_is_background(const struct weir_session *s)
{
    return s->bg != NULL;
}
