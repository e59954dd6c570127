/*
 * The cache in the request's path (weir_session_cache_enable): the cache phase between
 * request_filter and upstream_peer, serving from storage, the writer's fill, and the waits.
 *
 * - PH_CACHE looks the key up. A fresh stored object (or one still filling) is served: the
 *   session goes to PH_UPSTREAM with the object as its upstream (weir__cache_up, a virtual
 *   stream reading the body), so response_filter, body filters, framing, buffering and
 *   timeouts run as for an origin's response. A miss takes the key's lock: the writer goes on
 *   to upstream_peer; the others wait.
 * - The writer's response head decides cacheability (RFC 9111, the policy,
 *   response_cache_filter). A stored response begins its fill at once and the lock is let
 *   go: the waiters look the key up again, find the fill and read it as it grows. The body is
 *   teed into the fill by the response pipe (weir__cache_tee) before the body filters.
 * - Waiting costs no timer and no polling: a waiter is registered on the key's lock, or on
 *   the object when it has read all there is so far, and woken through its worker's inbox
 *   (one eventfd per worker, a mutex-guarded list) by whichever thread has news. The lock's
 *   deadline is kept in one list per worker, sorted, under one timer.
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cache/cache_int.h"
#include "cache/cc.h"
#include "core/alloc.h"
#include "weir/log.h"

static struct weir_iov trim_ows(struct weir_iov v);

/* A piece of a range response's body: bytes of the object, or literal bytes (multipart). */
struct cseg {
    bool lit;
    struct weir_iov text; /* lit */
    uint64_t off, len;    /* object bytes */
};

/** Variants one key may have (Vary); a response for one more is not stored. */
#define WEIR_CACHE_MAX_VARIANTS 16

enum sc_state {
    SC_LOOKUP = 0, /* look the key up (again) */
    SC_WAIT_LOCK,  /* waiting for another request's fetch */
    SC_HIT,        /* served from storage */
    SC_WRITER,     /* fetching for the key, holding its lock until the head */
    SC_PASS,       /* fetching for itself, nothing stored */
};

struct weir__scache {
    struct weir_session *s;
    struct weir_cache *zone;
    struct weir_cache_policy pol;
    enum sc_state state;
    struct weir_iov key;
    uint64_t hash;
    bool private_req; /* Authorization or Cookie the policy does not ignore */
    bool head_req;
    /* the request's fields as the lookup saw them (a writer's variance: the upstream filters
       and the writer's own edits change s->req after) */
    struct weir_header *look_fields;
    uint32_t look_n;
    /* the lock */
    bool locked;
    uint64_t token;
    uint64_t deadline_ms;
    bool woken;
    int lock_result;
    /* the writer's fill */
    struct weir_cache_obj *fill;
    /* Vary: the key without the variance, and what the key's index said */
    struct weir_iov primary;
    uint64_t primary_hash;
    struct weir_headers *index; /* the index's fields (Vary, one X-Variant per variant) */
    bool varied;                /* sc->key is a variant key */
    struct weir_iov lock_key;   /* the key whose lock this writer holds */
    uint64_t lock_hash;
    /* a stale object found on the way: revalidated by the writer, or served on errors */
    struct weir_cache_obj *stale;
    struct weir__cache_meta stale_meta;
    struct weir_headers *stale_fields;
    bool writer_failed; /* woken because the writer failed: stale-if-error applies */
    bool head_waited;   /* a HEAD waited for a GET of its key once (never twice) */
    bool swr;           /* served stale while a background refresh runs */
    uint32_t stale_by;  /* ... this long past its freshness (Cache-Status ttl=-N) */
    bool accept_stale;  /* woken with a stale object the writer served (stale-if-error) */
    /* the reader's object */
    struct weir_cache_obj *obj;
    struct weir_cache_cursor cur;
    struct weir__cache_meta meta;
    struct weir_headers *fields;
    bool obj_complete;
    bool obj_waiting;
    struct weir__stream vst;
    /* waking: the waiter the lock or the object calls, the worker's inbox list */
    struct weir_cache_waiter waiter;
    struct weir__scache *inext, *iprev;
    bool queued;
    bool registered; /* ever registered to be woken: only then can it be on the inbox */
    /* the worker's deadline list (lock waits) */
    struct weir__scache *dnext, *dprev;
    bool in_deadlines;
    /* what the body is made of when it is not the whole object (ranges): segments */
    struct cseg *segs;
    unsigned nsegs, seg;
    uint64_t seg_done; /* bytes of segs[seg] already read */
    /* Cache-Status */
    const char *fwd;    /* NULL: hit */
    const char *detail; /* or NULL */
    bool stored, collapsed;
    uint32_t ttl_left;
    bool status_added;
    /* the request as it stood when the cache was enabled: what a refresh replays */
    struct weir_iov replay_target;
    struct weir_header *replay_fields;
    uint32_t replay_n;
};

/* The lock a request handed to the background session refreshing its stale object. */
struct weir__refresh {
    struct weir_cache *zone;
    struct weir_iov key; /* in the background session's arena */
    uint64_t hash;
    uint64_t token; /* 0: used, or let go */
};

/* ---- the worker's inbox ---- */

struct weir__cinbox {
    pthread_mutex_t mu;
    struct weir__scache *head, *tail; /* woken, to run on this worker */
    bool signalled;
    struct weir_io io;
    struct weir__proxy_worker *w;
    /* lock waits of this worker's sessions, by deadline */
    struct weir__scache *dhead, *dtail;
    struct weir_timer timer;
};

static void inbox_unlink(struct weir__cinbox *ib, struct weir__scache *sc)
{
    if (sc->iprev != NULL) {
        sc->iprev->inext = sc->inext;
    } else {
        ib->head = sc->inext;
    }
    if (sc->inext != NULL) {
        sc->inext->iprev = sc->iprev;
    } else {
        ib->tail = sc->iprev;
    }
    sc->inext = sc->iprev = NULL;
    sc->queued = false;
}

/* Any thread, with the lock's or the storage's mutex held: queue sc on its worker. */
static void waiter_wake(struct weir_cache_waiter *wt)
{
    struct weir__scache *sc = WEIR_CONTAINER_OF(wt, struct weir__scache, waiter);
    struct weir__cinbox *ib = sc->s->w->cinbox;
    bool signal = false;
    pthread_mutex_lock(&ib->mu);
    if (!sc->queued) {
        sc->queued = true;
        sc->inext = NULL;
        sc->iprev = ib->tail;
        if (ib->tail != NULL) {
            ib->tail->inext = sc;
        } else {
            ib->head = sc;
        }
        ib->tail = sc;
    }
    if (!ib->signalled) {
        ib->signalled = true;
        signal = true;
    }
    pthread_mutex_unlock(&ib->mu);
    if (signal) {
        uint64_t one = 1;
        ssize_t n = write(ib->io.fd, &one, sizeof(one));
        (void)n; /* an eventfd write fails only at a count of 2^64-1: it is signalled then */
    }
}

static void sc_run_woken(struct weir__scache *sc)
{
    struct weir_session *s = sc->s;
    WEIR_SESSION_CHECK(s);
    if (sc->state == SC_WAIT_LOCK) {
        sc->woken = true;
        sc->lock_result = sc->waiter.result;
    } else if (sc->obj_waiting) {
        sc->obj_waiting = false;
        sc->vst.readable = true;
    } else {
        return; /* already moved on */
    }
    if (!s->suspended && (s->phase == PH_CACHE || s->phase == PH_UPSTREAM)) {
        weir__session_run(s);
    }
}

static void inbox_cb(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    (void)loop;
    (void)events;
    struct weir__cinbox *ib = io->data;
    uint64_t v;
    while (read(ib->io.fd, &v, sizeof(v)) > 0) {
    }
    pthread_mutex_lock(&ib->mu);
    ib->signalled = false;
    pthread_mutex_unlock(&ib->mu);
    /* One at a time: running one session may end others on the list. */
    for (;;) {
        pthread_mutex_lock(&ib->mu);
        struct weir__scache *sc = ib->head;
        if (sc != NULL) {
            inbox_unlink(ib, sc);
        }
        pthread_mutex_unlock(&ib->mu);
        if (sc == NULL) {
            return;
        }
        sc_run_woken(sc);
    }
}

static void deadline_unlink(struct weir__cinbox *ib, struct weir__scache *sc)
{
    if (!sc->in_deadlines) {
        return;
    }
    if (sc->dprev != NULL) {
        sc->dprev->dnext = sc->dnext;
    } else {
        ib->dhead = sc->dnext;
    }
    if (sc->dnext != NULL) {
        sc->dnext->dprev = sc->dprev;
    } else {
        ib->dtail = sc->dprev;
    }
    sc->dnext = sc->dprev = NULL;
    sc->in_deadlines = false;
}

static void arm_deadlines(struct weir__cinbox *ib)
{
    struct weir_loop *loop = ib->w->loop;
    if (ib->dhead == NULL) {
        weir_timer_stop(loop, &ib->timer);
        return;
    }
    uint64_t now = weir_loop_now_ms(loop);
    uint64_t at = ib->dhead->deadline_ms;
    uint64_t ms = at > now ? at - now : 0;
    if (!weir_timer_active(&ib->timer) || ib->timer.deadline_ms != weir__loop_deadline(loop, ms)) {
        (void)weir_timer_start(loop, &ib->timer, ms);
    }
}

/* Keeps the list sorted; waits of one lock_timeout arrive in order, so this is O(1). */
static void deadline_insert(struct weir__cinbox *ib, struct weir__scache *sc)
{
    struct weir__scache *after = ib->dtail;
    while (after != NULL && after->deadline_ms > sc->deadline_ms) {
        after = after->dprev;
    }
    sc->dprev = after;
    sc->dnext = after != NULL ? after->dnext : ib->dhead;
    if (sc->dnext != NULL) {
        sc->dnext->dprev = sc;
    } else {
        ib->dtail = sc;
    }
    if (after != NULL) {
        after->dnext = sc;
    } else {
        ib->dhead = sc;
    }
    sc->in_deadlines = true;
    if (ib->dhead == sc) {
        arm_deadlines(ib);
    }
}

static void deadlines_cb(struct weir_loop *loop, struct weir_timer *t)
{
    struct weir__cinbox *ib = t->data;
    for (;;) {
        uint64_t now = weir_loop_now_ms(loop);
        struct weir__scache *sc = ib->dhead;
        if (sc == NULL || sc->deadline_ms > now) {
            break;
        }
        deadline_unlink(ib, sc);
        weir__clock_unwait(sc->zone->lock, sc->hash, &sc->waiter);
        pthread_mutex_lock(&ib->mu);
        bool woken = sc->queued; /* by the writer at the same moment: its outcome stands */
        if (woken) {
            inbox_unlink(ib, sc);
        }
        pthread_mutex_unlock(&ib->mu);
        if (sc->state != SC_WAIT_LOCK) {
            continue;
        }
        if (!woken) {
            atomic_fetch_add_explicit(&sc->zone->lock_timeouts, 1, memory_order_relaxed);
            sc->waiter.result = WEIR_CLOCK_TIMEOUT;
        }
        sc_run_woken(sc);
    }
    arm_deadlines(ib);
}

int weir__cache_worker_init(struct weir__proxy_worker *w)
{
    struct weir__cinbox *ib = weir__calloc(1, sizeof(*ib));
    if (ib == NULL) {
        return WEIR_ENOMEM;
    }
    if (pthread_mutex_init(&ib->mu, NULL) != 0) {
        weir__free(ib);
        return WEIR_ENOMEM;
    }
    ib->w = w;
    ib->io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ib->io.cb = inbox_cb;
    ib->io.data = ib;
    weir_timer_init(&ib->timer, deadlines_cb, ib);
    if (ib->io.fd < 0 || weir_loop_io_add(w->loop, &ib->io, WEIR_IO_READ) != 0) {
        int e = ib->io.fd < 0 ? -errno : WEIR_ENOMEM;
        if (ib->io.fd >= 0) {
            (void)close(ib->io.fd);
        }
        pthread_mutex_destroy(&ib->mu);
        weir__free(ib);
        return e;
    }
    w->cinbox = ib;
    return 0;
}

void weir__cache_worker_free(struct weir__proxy_worker *w)
{
    struct weir__cinbox *ib = w->cinbox;
    if (ib == NULL) {
        return;
    }
    WEIR_ASSERT(ib->head == NULL && ib->dhead == NULL);
    weir_timer_stop(w->loop, &ib->timer);
    weir_loop_io_del(w->loop, &ib->io);
    (void)close(ib->io.fd);
    pthread_mutex_destroy(&ib->mu);
    weir__free(ib);
    w->cinbox = NULL;
}

/* ---- enabling, keys ---- */

int weir_session_cache_enable(struct weir_session *s, struct weir_cache *c,
                              const struct weir_cache_policy *p)
{
    WEIR_SESSION_CHECK(s);
    if (c == NULL || p == NULL || s->phase > PH_CACHE || s->resp != NULL) {
        return WEIR_EINVAL;
    }
    if (s->w->cinbox == NULL) {
        int rc = weir__cache_worker_init(s->w); /* the first cached request of this worker */
        if (rc != 0) {
            return rc;
        }
    }
    struct weir__scache *sc = s->cache;
    if (sc != NULL && sc->key.base != NULL) {
        return WEIR_EINVAL; /* looked up already: its lock and storage are the zone's */
    }
    if (sc == NULL) {
        sc = weir_arena_calloc(s->arena, sizeof(*sc));
        if (sc == NULL) {
            return WEIR_ENOMEM;
        }
        sc->s = s;
        sc->waiter.wake = waiter_wake;
        const struct weir_headers *h = &s->req.headers;
        sc->replay_fields = weir_arena_alloc(s->arena, (h->n ? h->n : 1) * sizeof(*h->v));
        if (sc->replay_fields == NULL) {
            return WEIR_ENOMEM;
        }
        memcpy(sc->replay_fields, h->v, h->n * sizeof(*h->v));
        sc->replay_n = h->n;
        sc->replay_target = s->req.target;
        s->cache = sc;
    }
    sc->zone = c;
    sc->pol = *p;
    return 0;
}

static void *arena_alloc(void *arg, size_t len)
{
    return weir_arena_alloc(arg, len);
}

/* The default key: "GET https://host/path?query" with the policy's parts. */
static struct weir_iov default_key(struct weir_session *s, uint32_t parts)
{
    struct weir_iov host = weir_req_host(&s->req);
    struct weir_iov path = weir_req_path(&s->req);
    struct weir_iov query = weir_req_query(&s->req);
    bool has_q = query.base > s->req.target.base && query.base[-1] == '?';
    size_t cap = 16 + host.len + path.len + query.len;
    char *b = weir_arena_alloc(s->arena, cap);
    if (b == NULL) {
        return (struct weir_iov){NULL, 0};
    }
    size_t n = 0;
#define PUT(p, l)                                                                                  \
    do {                                                                                           \
        memcpy(b + n, (p), (l));                                                                   \
        n += (l);                                                                                  \
    } while (0)
    if (parts & WEIR_CACHE_KEY_METHOD) {
        PUT("GET ", 4);
    }
    if (parts & WEIR_CACHE_KEY_SCHEME) {
        if (s->c->tls) {
            PUT("https://", 8);
        } else {
            PUT("http://", 7);
        }
    }
    if (parts & WEIR_CACHE_KEY_HOST) {
        for (size_t i = 0; i < host.len; i++) {
            char ch = host.base[i];
            b[n++] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
    }
    if (parts & WEIR_CACHE_KEY_PATH) {
        PUT(path.base, path.len);
    }
    if ((parts & WEIR_CACHE_KEY_QUERY) && has_q) {
        PUT("?", 1);
        PUT(query.base, query.len);
    }
#undef PUT
    return (struct weir_iov){b, n};
}

/* Fields a writer's request must not carry up: the client's conditions and ranges would get
   a 304 or a 206 where the cache needs the whole response. */
static void strip_conditions(struct weir_session *s)
{
    static const char *const names[] = {"If-None-Match",       "If-Modified-Since", "If-Match",
                                        "If-Unmodified-Since", "If-Range",          "Range"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        (void)weir_headers_remove(&s->req.headers, names[i]);
    }
}

/* ---- the phase ---- */

static void sc_pass(struct weir_session *s, struct weir__scache *sc, const char *fwd,
                    const char *detail)
{
    sc->state = SC_PASS;
    if (s->bg != NULL) {
        s->phase = PH_DONE; /* a refresh that would store nothing is not made */
        return;
    }
    sc->fwd = fwd;
    sc->detail = detail;
    if (s->w->hooks->cache_miss) {
        s->w->hooks->cache_miss(s, s->ctx);
    }
    s->phase = PH_PEER;
}

static const struct weir__stream_vt cache_vt;

/* The session reads obj from here on: the head, then the body, through weir__cache_up. */
static void drop_refresh(struct weir_session *s);

static void serve(struct weir_session *s, struct weir__scache *sc, bool complete)
{
    if (s->bg != NULL) {
        drop_refresh(s); /* nothing to refresh: the lock goes now, not at the end */
    }
    sc->state = SC_HIT;
    sc->obj_complete = complete;
    if (!complete) {
        sc->fwd = "miss";
        sc->collapsed = true;
    }
    memset(&sc->vst, 0, sizeof(sc->vst));
    sc->vst.io.fd = -1;
    sc->vst.readable = true;
    sc->vst.vt = &cache_vt;
    const struct weir_cfg_timeouts *t = &s->cfg->server.timeouts;
    s->peer.read_timeout_ms = t->upstream_read_ms;
    s->peer.write_timeout_ms = t->upstream_write_ms;
    s->peer.connect_timeout_ms = t->upstream_connect_ms;
    s->upf = &weir__cache_up;
    s->ust = &sc->vst;
    /* a writer switching to a stored object may have begun the origin's body pipe */
    s->respp.in_done = s->respp.out_done = s->respp.end_filtered = false;
    s->respp.pending_consume = 0;
    s->respp.bytes = 0;
    s->req_sent = true;
    s->ux.state = UP_HEAD;
    s->ux.progress_ms = weir_loop_now_ms(s->w->loop);
    s->phase = PH_UPSTREAM;
}

/* A stored object's metadata, decoded into the arena; its freshness at now. */
static int decode_meta(struct weir_session *s, struct weir__scache *sc, struct weir_iov meta)
{
    return weir__cache_meta_decode(meta.base, meta.len, &sc->meta, s->arena,
                                   s->cfg->server.limits.max_headers + WEIR_HEADERS_SLACK,
                                   &sc->fields);
}

/* ---- Vary: an index at the key, each variant under key + its variance ---- */

static int variant_key(struct weir_session *s, struct weir__scache *sc, struct weir_iov names,
                       const struct weir_header *fields, uint32_t nfields)
{
    size_t vlen = weir__cache_variance(names, fields, nfields, NULL, 0);
    if (vlen == SIZE_MAX) {
        return WEIR_ELIMIT;
    }
    size_t klen = sc->primary.len + 1 + vlen;
    char *b = weir_arena_alloc(s->arena, klen);
    if (b == NULL) {
        return WEIR_ENOMEM;
    }
    memcpy(b, sc->primary.base, sc->primary.len);
    b[sc->primary.len] = '\x1f';
    if (weir__cache_variance(names, fields, nfields, b + sc->primary.len + 1, vlen) != vlen) {
        return WEIR_EINVAL; /* cannot happen: the same call sized it */
    }
    sc->key = (struct weir_iov){b, klen};
    sc->hash = weir__cache_hash(sc->zone, sc->key);
    sc->varied = true;
    return 0;
}

/* An index at the primary key: the variant key for this request from its Vary names. */
static bool use_index(struct weir_session *s, struct weir__scache *sc, struct weir_cache_obj *o,
                      struct weir_iov meta)
{
    struct weir_cache_storage *st = sc->zone->st;
    struct weir__cache_meta m;
    struct weir_headers *h = NULL;
    bool ok = weir__cache_meta_decode(meta.base, meta.len, &m, s->arena,
                                      WEIR_CACHE_MAX_VARIANTS + 8, &h) == 0 &&
              (m.flags & WEIR_CACHE_META_VARY_INDEX);
    st->ops->release(o);
    struct weir_iov names;
    if (!ok || !weir_headers_get(h, "vary", &names) ||
        variant_key(s, sc, names, s->req.headers.v, s->req.headers.n) != 0) {
        return false;
    }
    sc->index = h;
    return true;
}

/* ---- stale-while-revalidate: the background refresh ---- */

/* The request a refresh replays: the cached request as it stood when the cache was enabled,
   as a GET without conditions or ranges, copied into b's arena. */
static int copy_request(struct weir_session *b, const struct weir__scache *sc)
{
    struct weir_arena *a = b->arena;
    uint32_t max = b->cfg->server.limits.max_headers + WEIR_HEADERS_SLACK;
    if (weir__headers_init(&b->req.headers, a, sc->replay_n + 8, max) != 0) {
        return WEIR_ENOMEM;
    }
    for (uint32_t i = 0; i < sc->replay_n; i++) {
        struct weir_iov n = weir_arena_iovdup(a, sc->replay_fields[i].name);
        struct weir_iov v = weir_arena_iovdup(a, sc->replay_fields[i].value);
        if ((n.base == NULL && sc->replay_fields[i].name.len > 0) ||
            (v.base == NULL && sc->replay_fields[i].value.len > 0) ||
            weir_headers_add_iov(&b->req.headers, n, v) != 0) {
            return WEIR_ENOMEM;
        }
    }
    b->req.method = b->orig_method = WEIR_IOV_LIT("GET");
    b->req.target = b->orig_target = weir_arena_iovdup(a, sc->replay_target);
    if (b->req.target.base == NULL) {
        return WEIR_ENOMEM;
    }
    b->req.minor = 1;
    b->req_body = WEIR_H1_BODY_NONE;
    strip_conditions(b);
    return 0;
}

/* Takes sc's key's lock if no one holds it, without waiting: WRITER (*token), BUSY or PASS. */
static enum weir__clock_verdict try_lock(struct weir_session *s, struct weir__scache *sc,
                                         uint64_t *token)
{
    uint64_t deadline = 0;
    return weir__clock_acquire(sc->zone->lock, sc->key, sc->hash, weir_loop_now_ms(s->w->loop),
                               sc->pol.lock_timeout_ms, NULL, token, &deadline);
}

/*
 * Fetches sc's key in a background session, handing it the lock turn token the caller took
 * (try_lock): it becomes the key's writer with it. false, and the lock let go, when no
 * background session can be started (the worker runs its most, or is out of memory).
 */
static bool start_background(struct weir_session *s, struct weir__scache *sc, uint64_t token,
                             const char *why)
{
    uint64_t now = weir_loop_now_ms(s->w->loop);
    struct weir_session *b = weir__bg_new(s);
    struct weir__refresh *rf = b != NULL ? weir_arena_calloc(b->arena, sizeof(*rf)) : NULL;
    if (rf != NULL) {
        rf->key = weir_arena_iovdup(b->arena, sc->key);
    }
    if (rf == NULL || rf->key.base == NULL || copy_request(b, sc) != 0) {
        if (b != NULL) {
            weir__session_abandon(b);
        }
        weir__clock_release(sc->zone->lock, sc->key, sc->hash, token, WEIR_CLOCK_FAILED, now, NULL,
                            NULL);
        return false;
    }
    rf->zone = sc->zone;
    rf->hash = sc->hash;
    rf->token = token;
    b->refresh = rf;
    weir_log(WEIR_LOG_DEBUG, "cache: %.*s: fetched in the background (%s)",
             (int)(sc->key.len > 200 ? 200 : sc->key.len), sc->key.base, why);
    weir__bg_start(b);
    return true;
}

/*
 * A stale object served within stale-while-revalidate: one background session refreshes it.
 * Someone fetching the key already is the one refresh. Best effort: with no room for a
 * background session the object is only served stale.
 */
static void start_refresh(struct weir_session *s, struct weir__scache *sc)
{
    uint64_t token = 0;
    if (try_lock(s, sc, &token) == WEIR_CLOCK_WRITER) {
        (void)start_background(s, sc, token, "stale-while-revalidate");
    }
}

/* A refresh lets go of the lock it was handed and did not use. */
static void drop_refresh(struct weir_session *s)
{
    struct weir__refresh *rf = s->refresh;
    if (rf != NULL && rf->token != 0) {
        weir__clock_release(rf->zone->lock, rf->key, rf->hash, rf->token, WEIR_CLOCK_FAILED,
                            weir_loop_now_ms(s->w->loop), NULL, NULL);
        rf->token = 0;
    }
}

/* Whether o (stale, its meta decoded in sc) may be served while it is refreshed. */
static bool within_swr(const struct weir__scache *sc, uint32_t age)
{
    const struct weir__cache_meta *m = &sc->meta;
    return m->swr_s > 0 && age < m->fresh_s + (uint64_t)m->swr_s &&
           !(m->flags & (WEIR_CACHE_META_MUST_REVALIDATE | WEIR_CACHE_META_NO_CACHE));
}

/* Serves o (a reference the session owns now) if it is fresh and usable; else lets it go. */
static bool consider(struct weir_session *s, struct weir__scache *sc, struct weir_cache_obj *o,
                     struct weir_iov meta);

static bool cache_lookup(struct weir_session *s, struct weir__scache *sc)
{
    struct weir_cache_storage *st = sc->zone->st;
    struct weir_iov meta;
    struct weir_cache_obj *o = st->ops->lookup(st, sc->key, sc->hash, arena_alloc, s->arena, &meta);
    if (o == NULL) {
        return false;
    }
    if (!sc->varied && meta.len > 0) {
        struct weir__cache_meta peek;
        if (weir__cache_meta_peek(meta.base, meta.len, &peek) == 0 &&
            (peek.flags & WEIR_CACHE_META_VARY_INDEX)) {
            /* the key varies: look for this request's variant */
            if (!use_index(s, sc, o, meta)) {
                return false;
            }
            o = st->ops->lookup(st, sc->key, sc->hash, arena_alloc, s->arena, &meta);
            if (o == NULL) {
                return false;
            }
        }
    }
    return consider(s, sc, o, meta);
}

/* The fill the writer handed over on waking this waiter, if any. */
static bool take_handed_fill(struct weir_session *s, struct weir__scache *sc)
{
    struct weir_cache_obj *o = sc->waiter.obj;
    if (o == NULL) {
        return false;
    }
    sc->waiter.obj = NULL;
    struct weir_cache_storage *st = sc->zone->st;
    struct weir_iov meta;
    if (st->ops->meta(o, arena_alloc, s->arena, &meta) != 0) {
        st->ops->release(o);
        return false;
    }
    return consider(s, sc, o, meta);
}

static bool consider(struct weir_session *s, struct weir__scache *sc, struct weir_cache_obj *o,
                     struct weir_iov meta)
{
    struct weir_cache_storage *st = sc->zone->st;
    if (decode_meta(s, sc, meta) != 0) {
        weir_log(WEIR_LOG_WARN, "cache: stored metadata of %.*s does not decode: purged",
                 (int)(sc->key.len > 200 ? 200 : sc->key.len), sc->key.base);
        st->ops->release(o);
        (void)st->ops->purge(st, sc->key, sc->hash);
        return false;
    }
    bool complete = false, failed = false;
    uint64_t have = st->ops->length(o, &complete, &failed);
    bool filling = !complete;
    if (failed) {
        st->ops->release(o);
        return false;
    }
    if (complete) {
        sc->meta.body_len = have; /* known now, whatever the head said */
    }
    int64_t now = weir_loop_wall_s(s->w->loop);
    uint32_t age = weir__current_age(&sc->meta.times, now);
    bool fresh =
        filling || (age < sc->meta.fresh_s && !(sc->meta.flags & WEIR_CACHE_META_NO_CACHE));
    if (sc->private_req && !(sc->meta.flags & WEIR_CACHE_META_SHARED_AUTH)) {
        st->ops->release(o);
        sc_pass(s, sc, "request", "private request");
        return true;
    }
    if (s->w->hooks->cache_hit_filter) {
        struct weir_resp stored = {.status = sc->meta.status,
                                   .minor = 1,
                                   .reason = sc->meta.reason,
                                   .headers = *sc->fields};
        if (s->w->hooks->cache_hit_filter(s, s->ctx, &stored, fresh) == WEIR_CACHE_FETCH) {
            st->ops->release(o);
            return false;
        }
        fresh = true;
    }
    uint32_t sie = sc->meta.sie_s;
    bool within_sie = !filling && sie > 0 && age < sc->meta.fresh_s + (uint64_t)sie &&
                      !(sc->meta.flags & WEIR_CACHE_META_MUST_REVALIDATE);
    if (!fresh && (sc->accept_stale || (sc->writer_failed && within_sie))) {
        /* stale-if-error: the origin failed for the writer; this one is served stale */
        fresh = true;
        sc->fwd = "stale";
        sc->detail = "stale-if-error";
    }
    if (!fresh && !filling && s->bg == NULL && !sc->private_req && within_swr(sc, age)) {
        /* stale-while-revalidate: served now, refreshed in the background */
        start_refresh(s, sc);
        fresh = true;
        sc->swr = true;
        sc->stale_by = age - sc->meta.fresh_s;
        sc->fwd = NULL;
        sc->detail = "stale-while-revalidate";
    }
    if (!fresh) {
        /* Stale: refreshed under the lock like a miss. The writer revalidates it (its
           validators go up) and may serve it on an error; it stays until replaced. */
        if (sc->stale == NULL && !filling) {
            sc->stale = o;
            sc->stale_meta = sc->meta;
            sc->stale_fields = sc->fields;
        } else {
            st->ops->release(o);
        }
        sc->fwd = "stale";
        return false;
    }
    sc->obj = o;
    sc->ttl_left = sc->meta.fresh_s > age ? sc->meta.fresh_s - age : 0;
    sc->meta.times.age = age; /* what the Age field says when served */
    serve(s, sc, !filling);
    return true;
}

/* Woken (or timed out) while waiting on the lock: true when the session's course is set. */
static bool after_wait(struct weir_session *s, struct weir__scache *sc)
{
    sc->woken = false;
    deadline_unlink(s->w->cinbox, sc);
    sc->state = SC_LOOKUP;
    int res = sc->lock_result;
    sc->writer_failed = res == WEIR_CLOCK_FAILED;
    sc->accept_stale = res == WEIR_CLOCK_STALE;
    if (sc->waiter.obj != NULL) {
        /* FILLING: read the very fill that was made (even if the storage let it go since) */
        sc->collapsed = true;
        if (take_handed_fill(s, sc)) {
            return true;
        }
    }
    if (res == WEIR_CLOCK_UNCACHEABLE) {
        sc_pass(s, sc, "miss", "hit-for-pass");
        return true;
    }
    if ((res == WEIR_CLOCK_FAILED || res == WEIR_CLOCK_TIMEOUT) &&
        sc->pol.on_writer_failure == WEIR_CACHE_FETCH_EACH) {
        sc_pass(s, sc, "miss", res == WEIR_CLOCK_TIMEOUT ? "lock-timeout" : "writer-failed");
        return true;
    }
    sc->collapsed = true;
    return false;
}

/* The request's key: the cache_key hook's, or the policy's parts. false on out of memory. */
static bool make_key(struct weir_session *s, struct weir__scache *sc, bool *hook_failed)
{
    const struct weir_proxy_hooks *hk = s->w->hooks;
    struct weir_iov key = {NULL, 0};
    *hook_failed = false;
    if (hk->cache_key != NULL && hk->cache_key(s, s->ctx, &key) == WEIR_HOOK_ERROR) {
        *hook_failed = true;
        return false;
    }
    if (key.len == 0) {
        key = default_key(s, sc->pol.key);
        if (key.base == NULL) {
            return false;
        }
    }
    sc->key = sc->primary = key;
    sc->hash = sc->primary_hash = weir__cache_hash(sc->zone, key);
    return true;
}

/* Removes the key's object, or its index and every variant it lists. How many went. */
static int purge_all(struct weir_session *s, struct weir__scache *sc)
{
    struct weir_cache_storage *st = sc->zone->st;
    struct weir_iov meta;
    int n = 0;
    struct weir_cache_obj *o =
        st->ops->lookup(st, sc->primary, sc->primary_hash, arena_alloc, s->arena, &meta);
    struct weir__cache_meta m;
    struct weir_headers *h = NULL;
    if (o != NULL) {
        st->ops->release(o);
        if (weir__cache_meta_decode(meta.base, meta.len, &m, s->arena, WEIR_CACHE_MAX_VARIANTS + 8,
                                    &h) == 0 &&
            (m.flags & WEIR_CACHE_META_VARY_INDEX)) {
            for (uint32_t i = 0; i < h->n; i++) {
                if (!weir_iov_ieq_cstr(h->v[i].name, "x-variant")) {
                    continue;
                }
                struct weir_iov v = h->v[i].value;
                char *b = weir_arena_alloc(s->arena, sc->primary.len + 1 + v.len);
                if (b == NULL) {
                    break;
                }
                memcpy(b, sc->primary.base, sc->primary.len);
                b[sc->primary.len] = '\x1f';
                memcpy(b + sc->primary.len + 1, v.base, v.len);
                n += weir_cache_purge(sc->zone, (struct weir_iov){b, sc->primary.len + 1 + v.len});
            }
        }
    }
    return n + weir_cache_purge(sc->zone, sc->primary);
}

/* PURGE from an allowed client: the key goes (200), or was not there (404); others 403. */
static void purge(struct weir_session *s, struct weir__scache *sc)
{
    sc->fwd = "bypass";
    sc->detail = "purge";
    int status;
    struct weir_iov text;
    bool hook_failed = false;
    if (!weir_cidr_match(sc->pol.purge_from, sc->pol.npurge_from, &s->c->addr)) {
        weir_log(WEIR_LOG_INFO, "cache: PURGE from %s refused: not in the route's purge list",
                 s->c->ip);
        status = 403;
        text = WEIR_IOV_LIT("Forbidden\n");
    } else if (!make_key(s, sc, &hook_failed)) {
        weir__session_fail(s, hook_failed ? WEIR_ERR_HOOK : WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0,
                           "cache_key");
        return;
    } else if (purge_all(s, sc) > 0) {
        weir_log(WEIR_LOG_INFO, "cache: %.*s purged by %s",
                 (int)(sc->key.len > 200 ? 200 : sc->key.len), sc->key.base, s->c->ip);
        status = 200;
        text = WEIR_IOV_LIT("Purged\n");
    } else {
        status = 404;
        text = WEIR_IOV_LIT("Not in the cache\n");
    }
    if (weir_session_respond_text(s, status, text) != 0) {
        weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
    }
}

/* The first look: whether the cache may answer this request at all, and its key. True when
   the session's course is set (a pass, or a failure). */
static bool first_look(struct weir_session *s, struct weir__scache *sc)
{
    if (sc->pol.npurge_from > 0 && weir_iov_eq(s->req.method, WEIR_IOV_LIT("PURGE"))) {
        purge(s, sc);
        return true;
    }
    bool get = weir_iov_eq(s->req.method, WEIR_IOV_LIT("GET"));
    sc->head_req = weir_iov_eq(s->req.method, WEIR_IOV_LIT("HEAD"));
    struct weir_iov v;
    if ((!get && !sc->head_req) || s->req_body != WEIR_H1_BODY_NONE || s->ws_h2 || s->gw != NULL ||
        weir_headers_get(&s->req.headers, "upgrade", &v)) {
        sc_pass(s, sc, "method", NULL);
        return true;
    }
    sc->private_req =
        (!sc->pol.authorized && weir_headers_get(&s->req.headers, "authorization", &v)) ||
        (!sc->pol.cookies && weir_headers_get(&s->req.headers, "cookie", &v));
    bool hook_failed = false;
    if (!make_key(s, sc, &hook_failed)) {
        weir__session_fail(s, hook_failed ? WEIR_ERR_HOOK : WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0,
                           "cache_key");
        return true;
    }
    return false;
}

/* A writer refreshing a stale object asks the origin whether it changed (RFC 9111 4.3.1). */
static int add_validators(struct weir_session *s, struct weir__scache *sc)
{
    struct weir_iov v;
    if (sc->stale == NULL) {
        return 0;
    }
    if (weir_headers_get(sc->stale_fields, "etag", &v) &&
        weir_headers_add_iov(&s->req.headers, WEIR_IOV_LIT("If-None-Match"), v) != 0) {
        return WEIR_ENOMEM;
    }
    if (weir_headers_get(sc->stale_fields, "last-modified", &v) &&
        weir_headers_add_iov(&s->req.headers, WEIR_IOV_LIT("If-Modified-Since"), v) != 0) {
        return WEIR_ENOMEM;
    }
    return 0;
}

/* Waits on the key's lock (registered there) until woken or deadline. */
static void wait_lock(struct weir_session *s, struct weir__scache *sc, uint64_t deadline)
{
    atomic_fetch_add_explicit(&sc->zone->lock_waits, 1, memory_order_relaxed);
    sc->state = SC_WAIT_LOCK;
    sc->woken = false;
    sc->deadline_ms = deadline;
    deadline_insert(s->w->cinbox, sc);
    weir__session_client_deadline(s, 0);
}

/* A miss: the key's lock makes this request its writer, or a waiter. */
static bool take_lock(struct weir_session *s, struct weir__scache *sc)
{
    const struct weir_proxy_hooks *hk = s->w->hooks;
    uint64_t now = weir_loop_now_ms(s->w->loop);
    uint64_t deadline = 0;
    enum weir__clock_verdict v;
    struct weir__refresh *rf = s->refresh;
    if (rf != NULL && rf->token != 0 && rf->zone == sc->zone && rf->hash == sc->hash &&
        weir_iov_eq(rf->key, sc->key)) {
        v = WEIR_CLOCK_WRITER; /* the lock the refresh was handed */
        sc->token = rf->token;
        rf->token = 0;
    } else if (s->bg != NULL) {
        drop_refresh(s); /* handed for another key: the route changed since */
        v = weir__clock_acquire(sc->zone->lock, sc->key, sc->hash, now, sc->pol.lock_timeout_ms,
                                NULL, &sc->token, &deadline);
    } else {
        sc->registered = true; /* set before another thread can see the waiter */
        v = weir__clock_acquire(sc->zone->lock, sc->key, sc->hash, now, sc->pol.lock_timeout_ms,
                                &sc->waiter, &sc->token, &deadline);
    }
    switch (v) {
    case WEIR_CLOCK_WRITER:
        sc->locked = true;
        sc->lock_key = sc->key;
        sc->lock_hash = sc->hash;
        sc->state = SC_WRITER;
        if (sc->fwd == NULL) {
            sc->fwd = "miss";
        }
        sc->look_n = s->req.headers.n;
        sc->look_fields =
            weir_arena_alloc(s->arena, (sc->look_n ? sc->look_n : 1) * sizeof(*sc->look_fields));
        if (sc->look_fields == NULL) {
            weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
            return true;
        }
        memcpy(sc->look_fields, s->req.headers.v, sc->look_n * sizeof(*sc->look_fields));
        strip_conditions(s);
        if (add_validators(s, sc) != 0) {
            weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
            return true;
        }
        /* The waiters need this fetch to finish even if its own client leaves. */
        s->ignore_client_abort = true;
        if (hk->cache_miss) {
            hk->cache_miss(s, s->ctx);
        }
        s->phase = PH_PEER;
        return true;
    case WEIR_CLOCK_PASS:
        sc_pass(s, sc, "miss", "hit-for-pass");
        return true;
    case WEIR_CLOCK_BUSY: /* a refresh only tries: someone else fetches it */
        s->phase = PH_DONE;
        return true;
    case WEIR_CLOCK_WAIT:
        break;
    }
    wait_lock(s, sc, deadline);
    return false;
}

/*
 * A HEAD that misses (or finds a stale object): the key is fetched as a GET, which fills the
 * cache, and the HEAD waits for it like any waiter and is answered from the fill. A HEAD is
 * never the writer itself (its response has no body to store): it starts a background GET
 * when no one fetches the key. true when it waits; false when it goes to the origin as it is
 * (hit-for-pass, no room for a background session, or the fetch it waited for failed).
 */
static bool head_fill(struct weir_session *s, struct weir__scache *sc)
{
    if (sc->head_waited || s->bg != NULL) {
        return false;
    }
    uint64_t token = 0, deadline = 0;
    enum weir__clock_verdict v = try_lock(s, sc, &token);
    if (v == WEIR_CLOCK_PASS ||
        (v == WEIR_CLOCK_WRITER && !start_background(s, sc, token, "HEAD"))) {
        return false;
    }
    sc->head_waited = true;
    sc->registered = true; /* set before another thread can see the waiter */
    v = weir__clock_acquire(sc->zone->lock, sc->key, sc->hash, weir_loop_now_ms(s->w->loop),
                            sc->pol.lock_timeout_ms, &sc->waiter, &token, &deadline);
    if (v == WEIR_CLOCK_WRITER) {
        /* the fetch ended already (it failed: a fill would have been found) */
        weir__clock_release(sc->zone->lock, sc->key, sc->hash, token, WEIR_CLOCK_FAILED,
                            weir_loop_now_ms(s->w->loop), NULL, NULL);
        return false;
    }
    if (v != WEIR_CLOCK_WAIT) {
        return false;
    }
    wait_lock(s, sc, deadline);
    return true;
}

bool weir__cache_phase(struct weir_session *s)
{
    const struct weir_proxy_hooks *hk = s->w->hooks;
    if (s->cache == NULL && hk->request_cache_filter != NULL) {
        enum weir_hook_result r = hk->request_cache_filter(s, s->ctx);
        if (r == WEIR_HOOK_ERROR) {
            weir__session_fail(s, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "request_cache_filter");
            return true;
        }
    }
    struct weir__scache *sc = s->cache;
    if (sc == NULL) {
        /* a refresh whose route no longer caches fetches nothing */
        s->phase = s->bg != NULL ? PH_DONE : PH_PEER;
        return true;
    }
    if (sc->state == SC_WAIT_LOCK) {
        if (!sc->woken) {
            return false; /* a client event while waiting: keep waiting */
        }
        if (after_wait(s, sc)) {
            return true;
        }
    } else if (sc->key.base == NULL && first_look(s, sc)) {
        return true;
    }
    if (cache_lookup(s, sc)) {
        return true;
    }
    if (sc->private_req) {
        sc_pass(s, sc, "request", "private request");
        return true;
    }
    if (sc->head_req) {
        if (head_fill(s, sc)) {
            return false; /* waiting for the GET */
        }
        sc_pass(s, sc, sc->fwd != NULL ? sc->fwd : "miss", "HEAD");
        return true;
    }
    return take_lock(s, sc);
}

/* ---- the writer ---- */

static bool has_field(const struct weir_headers *h, const char *name)
{
    struct weir_iov v;
    return weir_headers_get(h, name, &v);
}

/* Fields not stored: framing (set again when served) and Age (recomputed). */
static bool stored_field(struct weir_iov name)
{
    return !weir_iov_ieq_cstr(name, "content-length") &&
           !weir_iov_ieq_cstr(name, "transfer-encoding") && !weir_iov_ieq_cstr(name, "age");
}

static int begin_fill(struct weir_session *s, struct weir__scache *sc, struct weir_resp *r,
                      const struct weir__cc *cc, const struct weir_cacheability *ca,
                      bool authorized)
{
    struct weir_headers *keep = weir_arena_calloc(s->arena, sizeof(*keep));
    if (keep == NULL ||
        weir__headers_init(keep, s->arena, r->headers.n + 1, r->headers.n + 1) != 0) {
        return WEIR_ENOMEM;
    }
    for (uint32_t i = 0; i < r->headers.n; i++) {
        if (stored_field(r->headers.v[i].name)) {
            keep->v[keep->n++] = r->headers.v[i];
        }
    }
    struct weir_iov av;
    uint64_t agev = 0;
    if (weir_headers_get(&r->headers, "age", &av) && !weir__parse_length(av, &agev)) {
        agev = 0;
    }
    int64_t now = weir_loop_wall_s(s->w->loop);
    struct weir__cache_meta m = {
        .status = r->status,
        .times = {.request_time = s->start_wall,
                  .response_time = now,
                  .date = now,
                  .age = agev > UINT32_MAX ? UINT32_MAX : (uint32_t)agev},
        .fresh_s = ca->ttl_s,
        .swr_s = ca->stale_while_revalidate_s,
        .sie_s = ca->stale_if_error_s,
        .reason = r->reason,
        .headers = keep,
        .body_len = WEIR_CACHE_LEN_UNKNOWN,
    };
    struct weir_iov dv;
    int64_t date;
    if (weir_headers_get(&r->headers, "date", &dv) && weir__http_date_parse(dv, &date)) {
        m.times.date = date;
    }
    /* The age at which it was stored is folded in: fresh_s counts from the response's age
       as the cache computes it (RFC 9111 4.2.3), so freshness = lifetime - current age. */
    if (cc->flags & (WEIR_CC_MUST_REVALIDATE | WEIR_CC_PROXY_REVALIDATE)) {
        m.flags |= WEIR_CACHE_META_MUST_REVALIDATE;
    }
    if (authorized || (cc->flags & (WEIR_CC_PUBLIC | WEIR_CC_S_MAXAGE | WEIR_CC_MUST_REVALIDATE))) {
        m.flags |= WEIR_CACHE_META_SHARED_AUTH;
    }
    uint64_t len = WEIR_CACHE_LEN_UNKNOWN;
    struct weir_iov cl;
    if (s->respp.in_kind == WEIR_H1_BODY_NONE) {
        len = 0;
    } else if (s->respp.in_kind == WEIR_H1_BODY_LENGTH &&
               weir_headers_get(&r->headers, "content-length", &cl) &&
               !weir__parse_length(cl, &len)) {
        len = WEIR_CACHE_LEN_UNKNOWN;
    }
    m.body_len = len;
    size_t need = weir__cache_meta_size(&m);
    char *buf = need ? weir_arena_alloc(s->arena, need) : NULL;
    if (buf == NULL || weir__cache_meta_encode(&m, buf, need) == 0) {
        return WEIR_ENOMEM;
    }
    struct weir_cache_storage *st = sc->zone->st;
    return st->ops->begin_fill(st, sc->key, sc->hash, (struct weir_iov){buf, need}, len, &sc->fill);
}

/*
 * How long a response may be served stale (stale-while-revalidate or stale-if-error): its own
 * directive's, else the policy's default, which s-maxage (proxy-revalidate for a shared
 * cache, RFC 9111 5.2.2.10) rules out.
 */
static uint32_t stale_allowance(const struct weir__cc *cc, uint32_t flag, uint32_t own,
                                uint32_t dflt)
{
    if (cc->flags & flag) {
        return own;
    }
    return (cc->flags & WEIR_CC_S_MAXAGE) ? 0 : dflt;
}

/* Lets the writer's lock go with outcome (once). */
static void unlock(struct weir_session *s, struct weir__scache *sc, enum weir__clock_outcome out)
{
    if (!sc->locked) {
        return;
    }
    sc->locked = false;
    weir__clock_release(sc->zone->lock, sc->lock_key, sc->lock_hash, sc->token, out,
                        weir_loop_now_ms(s->w->loop), sc->fill, sc->zone->st->ops->ref);
}

/* The index of a varying key: its Vary names and the variances stored (one X-Variant each). */
static int write_index(struct weir_session *s, struct weir__scache *sc, struct weir_iov names,
                       const struct weir_headers *old, struct weir_iov add)
{
    uint32_t n = old != NULL ? old->n + 2 : 2;
    struct weir_headers *h = weir_arena_calloc(s->arena, sizeof(*h));
    if (h == NULL || weir__headers_init(h, s->arena, n, n) != 0) {
        return WEIR_ENOMEM;
    }
    h->v[h->n++] = (struct weir_header){WEIR_IOV_LIT("Vary"), names};
    for (uint32_t i = 0; old != NULL && i < old->n; i++) {
        if (weir_iov_ieq_cstr(old->v[i].name, "x-variant")) {
            h->v[h->n++] = old->v[i];
        }
    }
    h->v[h->n++] = (struct weir_header){WEIR_IOV_LIT("X-Variant"), add};
    int64_t now = weir_loop_wall_s(s->w->loop);
    struct weir__cache_meta m = {.status = 200,
                                 .times = {now, now, now, 0},
                                 .fresh_s = UINT32_MAX,
                                 .flags = WEIR_CACHE_META_VARY_INDEX,
                                 .body_len = 0,
                                 .reason = WEIR_IOV_LIT("OK"),
                                 .headers = h};
    size_t need = weir__cache_meta_size(&m);
    char *buf = need ? weir_arena_alloc(s->arena, need) : NULL;
    if (buf == NULL || weir__cache_meta_encode(&m, buf, need) == 0) {
        return WEIR_ENOMEM;
    }
    struct weir_cache_storage *st = sc->zone->st;
    struct weir_cache_obj *o = NULL;
    int rc =
        st->ops->begin_fill(st, sc->primary, sc->primary_hash, (struct weir_iov){buf, need}, 0, &o);
    if (rc == 0) {
        rc = st->ops->finish(o);
        st->ops->release(o);
    }
    return rc;
}

/* A response with Vary: where its variant is stored, and the key's index updated. NULL, or
   why it is not stored. */
/* The key's index object as stored now (its fields), or NULL. */
static struct weir_headers *current_index(struct weir_session *s, struct weir__scache *sc)
{
    struct weir_cache_storage *st = sc->zone->st;
    struct weir_iov meta;
    struct weir_cache_obj *o =
        st->ops->lookup(st, sc->primary, sc->primary_hash, arena_alloc, s->arena, &meta);
    if (o == NULL) {
        return NULL;
    }
    st->ops->release(o);
    struct weir__cache_meta m;
    struct weir_headers *h = NULL;
    if (weir__cache_meta_decode(meta.base, meta.len, &m, s->arena, WEIR_CACHE_MAX_VARIANTS + 8,
                                &h) != 0 ||
        !(m.flags & WEIR_CACHE_META_VARY_INDEX)) {
        return NULL;
    }
    return h;
}

static const char *prepare_variant(struct weir_session *s, struct weir__scache *sc,
                                   struct weir_resp *r)
{
    struct weir_iov names;
    (void)weir_headers_get(&r->headers, "vary", &names);
    names = trim_ows(names);
    if (memchr(names.base, '*', names.len) != NULL || names.len == 0) {
        return "vary-star";
    }
    /* The index as it is now, not as this request found it: another variant's writer may
       have added to it since, and writing back an older copy would lose its variant (which
       a PURGE of the key would then miss). */
    sc->index = current_index(s, sc);
    struct weir_iov known;
    if (sc->index != NULL && weir_headers_get(sc->index, "vary", &known) &&
        !weir_iov_ieq(trim_ows(known), names)) {
        /* the origin changed its Vary: the index goes, the next request makes a new one */
        (void)sc->zone->st->ops->purge(sc->zone->st, sc->primary, sc->primary_hash);
        return "vary-changed";
    }
    int vrc = sc->varied ? 0 : variant_key(s, sc, names, sc->look_fields, sc->look_n);
    if (vrc != 0) {
        return vrc == WEIR_ELIMIT ? "vary-fields" : "no-memory";
    }
    struct weir_iov var = {sc->key.base + sc->primary.len + 1, sc->key.len - sc->primary.len - 1};
    unsigned count = 0;
    bool listed = false;
    for (uint32_t i = 0; sc->index != NULL && i < sc->index->n; i++) {
        if (weir_iov_ieq_cstr(sc->index->v[i].name, "x-variant")) {
            count++;
            listed |= weir_iov_eq(sc->index->v[i].value, var);
        }
    }
    if (listed) {
        return NULL;
    }
    if (count >= WEIR_CACHE_MAX_VARIANTS) {
        return "vary-limit";
    }
    if (write_index(s, sc, names, sc->index, var) != 0) {
        return "no-memory";
    }
    return NULL;
}

void weir__cache_response_head(struct weir_session *s, struct weir_resp *r)
{
    struct weir__scache *sc = s->cache;
    if (sc == NULL || sc->state != SC_WRITER) {
        return;
    }
    struct weir__cc cc;
    weir__cc_parse(&r->headers, &cc);
    struct weir__cache_times t = {.request_time = s->start_wall,
                                  .response_time = weir_loop_wall_s(s->w->loop)};
    t.date = t.response_time;
    struct weir_iov v;
    int64_t date;
    if (weir_headers_get(&r->headers, "date", &v) && weir__http_date_parse(v, &date)) {
        t.date = date;
    }
    uint64_t agev;
    if (weir_headers_get(&r->headers, "age", &v) && weir__parse_length(v, &agev)) {
        t.age = agev > UINT32_MAX ? UINT32_MAX : (uint32_t)agev;
    }
    bool explicit_ = false;
    uint32_t life = weir__freshness_lifetime(&cc, &r->headers, &t, &explicit_);
    struct weir_cacheability ca = {
        .cacheable = true,
        .ttl_s = explicit_ ? life : sc->pol.default_ttl_s,
        .stale_while_revalidate_s = stale_allowance(&cc, WEIR_CC_SWR, cc.stale_while_revalidate,
                                                    sc->pol.stale_while_revalidate_s),
        .stale_if_error_s =
            stale_allowance(&cc, WEIR_CC_SIE, cc.stale_if_error, sc->pol.stale_if_error_s),
    };
    if (!weir__cc_storable(r->status, &cc, explicit_, false)) {
        ca.cacheable = false;
        ca.reason = (cc.flags & WEIR_CC_NO_STORE)  ? "no-store"
                    : (cc.flags & WEIR_CC_PRIVATE) ? "private"
                                                   : "not storable";
    } else if (!sc->pol.cookies && has_field(&r->headers, "set-cookie")) {
        ca.cacheable = false;
        ca.reason = "set-cookie";
    } else if (has_field(&r->headers, "vary") && (ca.reason = prepare_variant(s, sc, r)) != NULL) {
        ca.cacheable = false;
    } else if (cc.flags & WEIR_CC_NO_CACHE) {
        ca.cacheable = false;
        ca.reason = "no-cache";
    } else if (ca.ttl_s == 0 || weir__current_age(&t, t.response_time) >= ca.ttl_s) {
        ca.cacheable = false;
        ca.reason = "stale";
    }
    if (s->w->hooks->response_cache_filter) {
        s->w->hooks->response_cache_filter(s, s->ctx, r, &ca);
        if (ca.cacheable && ca.ttl_s == 0) {
            ca.cacheable = false;
            ca.reason = "ttl 0";
        }
    }
    if (ca.cacheable) {
        /* fresh_s is kept relative to the response's age: the stored age grows from it */
        uint32_t age0 = weir__current_age(&t, t.response_time);
        ca.ttl_s = ca.ttl_s > UINT32_MAX - age0 ? UINT32_MAX : ca.ttl_s;
        int rc = begin_fill(s, sc, r, &cc, &ca, false);
        if (rc == 0) {
            sc->stored = true;
            sc->ttl_left = ca.ttl_s > age0 ? ca.ttl_s - age0 : 0;
            /* A varying response fetched under the key's own lock: the waiters may want
               other variants, so each looks its own up (this one's fill among them). */
            bool other_key = sc->lock_hash != sc->hash || !weir_iov_eq(sc->lock_key, sc->key);
            unlock(s, sc, other_key ? WEIR_CLOCK_VARIED : WEIR_CLOCK_FILLING);
            return;
        }
        ca.reason = rc == WEIR_ELIMIT ? "too-large" : "no-memory";
    }
    sc->detail = ca.reason;
    unlock(s, sc, WEIR_CLOCK_UNCACHEABLE);
}

/* 304 fields replace the stored ones of the same name (RFC 9111 4.3.4), framing aside. */
static struct weir_headers *merge_304(struct weir_session *s, const struct weir_headers *stored,
                                      const struct weir_headers *fresh)
{
    struct weir_headers *h = weir_arena_calloc(s->arena, sizeof(*h));
    uint32_t cap = stored->n + fresh->n + 1;
    if (cap > s->cfg->server.limits.max_headers) {
        /* the served head must fit its array (max_headers and the slack for added fields) */
        uint32_t n = 0;
        struct weir_iov v;
        for (uint32_t i = 0; i < stored->n; i++) {
            n += !weir_headers_get_iov(fresh, stored->v[i].name, &v) ||
                 !stored_field(stored->v[i].name);
        }
        for (uint32_t i = 0; i < fresh->n; i++) {
            n += stored_field(fresh->v[i].name);
        }
        if (n > s->cfg->server.limits.max_headers) {
            return NULL;
        }
    }
    if (h == NULL || weir__headers_init(h, s->arena, cap, cap) != 0) {
        return NULL;
    }
    struct weir_iov v;
    for (uint32_t i = 0; i < stored->n; i++) {
        struct weir_iov name = stored->v[i].name;
        if (!weir_headers_get_iov(fresh, name, &v) || !stored_field(name)) {
            h->v[h->n++] = stored->v[i];
        }
    }
    for (uint32_t i = 0; i < fresh->n; i++) {
        if (stored_field(fresh->v[i].name)) {
            h->v[h->n++] = fresh->v[i];
        }
    }
    return h;
}

/* The writer got a 304 for its stale object: the object's head is refreshed and served. */
static int refresh(struct weir_session *s, struct weir__scache *sc, struct weir_resp *r)
{
    struct weir_headers *merged = merge_304(s, sc->stale_fields, &r->headers);
    struct weir_cache_storage *st = sc->zone->st;
    if (merged == NULL) {
        /* Too many fields together (or no memory): the body is still right, so it is served
           once more with its stored head and dropped, not refreshed. */
        (void)st->ops->purge(st, sc->key, sc->hash);
        sc->meta = sc->stale_meta;
        sc->fields = sc->stale_fields;
        sc->ttl_left = 0;
        sc->stored = false;
        return 0;
    }
    struct weir__cc cc;
    weir__cc_parse(merged, &cc);
    int64_t now = weir_loop_wall_s(s->w->loop);
    struct weir__cache_times t = {.request_time = s->start_wall, .response_time = now, .date = now};
    struct weir_iov v;
    int64_t date;
    uint64_t agev;
    if (weir_headers_get(&r->headers, "date", &v) && weir__http_date_parse(v, &date)) {
        t.date = date;
    }
    if (weir_headers_get(&r->headers, "age", &v) && weir__parse_length(v, &agev)) {
        t.age = agev > UINT32_MAX ? UINT32_MAX : (uint32_t)agev;
    }
    bool explicit_ = false;
    uint32_t life = weir__freshness_lifetime(&cc, merged, &t, &explicit_);
    struct weir__cache_meta m = sc->stale_meta;
    m.times = t;
    m.fresh_s = explicit_ ? life : sc->pol.default_ttl_s;
    m.swr_s = stale_allowance(&cc, WEIR_CC_SWR, cc.stale_while_revalidate,
                              sc->pol.stale_while_revalidate_s);
    m.sie_s = stale_allowance(&cc, WEIR_CC_SIE, cc.stale_if_error, sc->pol.stale_if_error_s);
    m.headers = merged;
    if (cc.flags & (WEIR_CC_MUST_REVALIDATE | WEIR_CC_PROXY_REVALIDATE)) {
        m.flags |= WEIR_CACHE_META_MUST_REVALIDATE; /* the 304 may say it now */
    }
    bool complete = false, failed = false;
    m.body_len = sc->zone->st->ops->length(sc->stale, &complete, &failed);
    size_t need = weir__cache_meta_size(&m);
    char *buf = need ? weir_arena_alloc(s->arena, need) : NULL;
    if (buf == NULL || weir__cache_meta_encode(&m, buf, need) == 0) {
        return WEIR_ENOMEM;
    }
    bool keep = weir__cc_storable(200, &cc, explicit_ || sc->pol.default_ttl_s > 0, false) &&
                !(cc.flags & WEIR_CC_NO_CACHE);
    if (keep && st->ops->update_meta(st, sc->stale, (struct weir_iov){buf, need}) != 0) {
        keep = false;
    }
    if (!keep) {
        (void)st->ops->purge(st, sc->key, sc->hash); /* served once more, then gone */
    }
    uint32_t age0 = weir__current_age(&t, now);
    sc->meta = m;
    sc->meta.times.age = age0;
    sc->fields = merged;
    sc->ttl_left = m.fresh_s > age0 ? m.fresh_s - age0 : 0;
    sc->stored = keep;
    return 0;
}

/* Serves the stale object instead of the origin's answer (the upstream is let go). */
static void switch_to_stale(struct weir_session *s, struct weir__scache *sc, bool reusable,
                            enum weir__clock_outcome out)
{
    if (reusable && s->respp.in_kind == WEIR_H1_BODY_NONE) {
        s->respp.in_done = true; /* a 304 has no body: the connection can be pooled */
    }
    weir__upstream_release(s, reusable);
    s->resp = NULL;
    /* the validators were weir's, not the client's (whose conditions never went up) */
    (void)weir_headers_remove(&s->req.headers, "If-None-Match");
    (void)weir_headers_remove(&s->req.headers, "If-Modified-Since");
    sc->obj = sc->stale;
    sc->stale = NULL;
    sc->fwd = "stale";
    if (sc->locked) {
        /* the waiters get the object too: refreshed (FILLING) or stale on an error (STALE) */
        struct weir_cache_obj *keep = sc->fill;
        sc->fill = sc->obj;
        unlock(s, sc, out);
        sc->fill = keep;
    }
    serve(s, sc, true);
}

bool weir__cache_origin_head(struct weir_session *s)
{
    struct weir__scache *sc = s->cache;
    if (sc == NULL || sc->state != SC_WRITER || sc->stale == NULL || s->resp == NULL) {
        return false;
    }
    struct weir_resp *r = s->resp;
    if (r->status == 304) {
        if (refresh(s, sc, r) != 0) {
            return false; /* out of memory: the 304 goes to the client as it is */
        }
        sc->detail = "revalidated";
        switch_to_stale(s, sc, true, WEIR_CLOCK_FILLING);
        return true;
    }
    if (r->status >= 500 && r->status <= 599 && weir__cache_stale_ok(s)) {
        sc->detail = "stale-if-error";
        switch_to_stale(s, sc, false, WEIR_CLOCK_STALE);
        return true;
    }
    return false;
}

bool weir__cache_stale_ok(const struct weir_session *s)
{
    const struct weir__scache *sc = s->cache;
    if (sc == NULL || sc->stale == NULL || s->resp_started) {
        return false;
    }
    uint32_t age = weir__current_age(&sc->stale_meta.times, weir_loop_wall_s(s->w->loop));
    return sc->stale_meta.sie_s > 0 &&
           age < sc->stale_meta.fresh_s + (uint64_t)sc->stale_meta.sie_s &&
           !(sc->stale_meta.flags & WEIR_CACHE_META_MUST_REVALIDATE);
}

bool weir__cache_serve_stale_on_error(struct weir_session *s)
{
    struct weir__scache *sc = s->cache;
    if (sc == NULL || sc->state != SC_WRITER || !weir__cache_stale_ok(s)) {
        return false;
    }
    sc->detail = "stale-if-error";
    switch_to_stale(s, sc, false, WEIR_CLOCK_STALE);
    return true;
}

bool weir__cache_teeing(const struct weir_session *s)
{
    return s->cache != NULL && s->cache->fill != NULL;
}

void weir__cache_tee(struct weir_session *s, struct weir_iov data)
{
    struct weir__scache *sc = s->cache;
    if (sc->fill == NULL || data.len == 0) {
        return;
    }
    struct weir_cache_storage *st = sc->zone->st;
    int rc = st->ops->append(sc->fill, data);
    if (rc != 0) {
        weir_log(WEIR_LOG_INFO, "cache: %.*s not stored: %s",
                 (int)(sc->key.len > 200 ? 200 : sc->key.len), sc->key.base,
                 rc == WEIR_ELIMIT ? "over max_object" : weir_strerror(rc));
        st->ops->abandon(sc->fill);
        st->ops->release(sc->fill);
        sc->fill = NULL;
        sc->stored = false;
        sc->detail = rc == WEIR_ELIMIT ? "too-large" : "no-memory";
    }
}

void weir__cache_complete(struct weir_session *s)
{
    struct weir__scache *sc = s->cache;
    if (sc == NULL || sc->fill == NULL) {
        return;
    }
    struct weir_cache_storage *st = sc->zone->st;
    if (st->ops->finish(sc->fill) != 0) {
        st->ops->abandon(sc->fill);
        sc->stored = false;
    }
    st->ops->release(sc->fill);
    sc->fill = NULL;
}

void weir__cache_end(struct weir_session *s)
{
    drop_refresh(s);
    struct weir__scache *sc = s->cache;
    if (sc == NULL) {
        return;
    }
    struct weir_cache_storage *st = sc->zone->st;
    if (sc->fill != NULL) {
        st->ops->abandon(sc->fill); /* the fill did not complete */
        st->ops->release(sc->fill);
        sc->fill = NULL;
    }
    unlock(s, sc, WEIR_CLOCK_FAILED);
    if (sc->state == SC_WAIT_LOCK) {
        weir__clock_unwait(sc->zone->lock, sc->hash, &sc->waiter);
    }
    if (sc->waiter.obj != NULL) {
        st->ops->release(sc->waiter.obj); /* handed over, never read */
        sc->waiter.obj = NULL;
    }
    if (sc->stale != NULL) {
        st->ops->release(sc->stale);
        sc->stale = NULL;
    }
    if (sc->obj != NULL) {
        if (sc->obj_waiting) {
            st->ops->unwait(sc->obj, &sc->waiter);
        }
        st->ops->release(sc->obj);
        sc->obj = NULL;
    }
    struct weir__cinbox *ib = s->w->cinbox;
    if (sc->registered) {
        /* A hit that never waited was never handed to another thread: no lock to take. */
        if (sc->in_deadlines) {
            deadline_unlink(ib, sc);
            arm_deadlines(ib);
        }
        pthread_mutex_lock(&ib->mu);
        if (sc->queued) {
            inbox_unlink(ib, sc);
        }
        pthread_mutex_unlock(&ib->mu);
    }
    weir__buf_release(&s->w->bufs, &sc->vst.in);
    sc->state = SC_PASS;
}

bool weir__cache_serving(const struct weir_session *s)
{
    return s->cache != NULL && s->cache->state == SC_HIT;
}

/* ---- Cache-Status (RFC 9211) ---- */

void weir__cache_status(struct weir_session *s, struct weir_resp *r)
{
    struct weir__scache *sc = s->cache;
    if (sc == NULL || sc->status_added) {
        return;
    }
    char buf[160];
    int n;
    if (sc->fwd == NULL && sc->swr) {
        n = snprintf(buf, sizeof(buf), "weir; hit; ttl=-%u; detail=stale-while-revalidate",
                     sc->stale_by);
    } else if (sc->fwd == NULL && sc->collapsed) {
        n = snprintf(buf, sizeof(buf), "weir; fwd=miss; collapsed"); /* waited for the fetch */
    } else if (sc->fwd == NULL) {
        n = snprintf(buf, sizeof(buf), "weir; hit; ttl=%u", sc->ttl_left);
    } else {
        n = snprintf(buf, sizeof(buf), "weir; fwd=%s%s%s%s%s", sc->fwd,
                     sc->stored ? "; stored" : "", sc->collapsed ? "; collapsed" : "",
                     sc->detail ? "; detail=" : "", sc->detail ? sc->detail : "");
    }
    if (n <= 0 || (size_t)n >= sizeof(buf)) {
        return;
    }
    struct weir_iov v = weir_arena_iovdup(s->arena, (struct weir_iov){buf, (size_t)n});
    if (v.base != NULL && weir_headers_add_iov(&r->headers, WEIR_IOV_LIT("Cache-Status"), v) == 0) {
        sc->status_added = true;
    }
}

/* ---- reading an object: the virtual upstream stream ---- */

/* A range response's body: its segments in order (the object is complete). */
static ssize_t read_segments(struct weir__scache *sc, char *buf, size_t len)
{
    const struct weir_cache_storage_ops *ops = sc->zone->st->ops;
    size_t got = 0;
    while (got < len && sc->seg < sc->nsegs) {
        struct cseg *g = &sc->segs[sc->seg];
        uint64_t left = (g->lit ? g->text.len : g->len) - sc->seg_done;
        if (left == 0) {
            sc->seg++;
            sc->seg_done = 0;
            continue;
        }
        size_t n = left < len - got ? (size_t)left : len - got;
        if (g->lit) {
            memcpy(buf + got, g->text.base + sc->seg_done, n);
        } else {
            uint64_t want = g->off + sc->seg_done;
            if (sc->cur.off > want) {
                sc->cur = (struct weir_cache_cursor){0}; /* ranges out of order: rewind */
            }
            sc->cur.off = want;
            struct weir_iov d;
            if (ops->read(sc->obj, &sc->cur, &d) != WEIR_CACHE_READ_DATA) {
                return got > 0 ? (ssize_t)got : -EIO; /* complete, so the bytes are there */
            }
            n = n < d.len ? n : d.len;
            memcpy(buf + got, d.base, n);
        }
        got += n;
        sc->seg_done += n;
    }
    if (sc->seg >= sc->nsegs) {
        sc->vst.eof = true;
    }
    return (ssize_t)got;
}

static ssize_t cache_vread(struct weir__stream *st, char *buf, size_t len)
{
    struct weir__scache *sc = WEIR_CONTAINER_OF(st, struct weir__scache, vst);
    const struct weir_cache_storage_ops *ops = sc->zone->st->ops;
    if (sc->segs != NULL) {
        return read_segments(sc, buf, len);
    }
    size_t got = 0;
    while (got < len) {
        struct weir_iov d;
        switch (ops->read(sc->obj, &sc->cur, &d)) {
        case WEIR_CACHE_READ_DATA: {
            size_t n = d.len < len - got ? d.len : len - got;
            memcpy(buf + got, d.base, n);
            got += n;
            sc->cur.off += n;
            continue;
        }
        case WEIR_CACHE_READ_END:
            st->eof = true;
            return (ssize_t)got;
        case WEIR_CACHE_READ_ERROR:
            return got > 0 ? (ssize_t)got : -EIO;
        case WEIR_CACHE_READ_WAIT:
            if (got > 0) {
                return (ssize_t)got;
            }
            sc->registered = true;
            if (ops->wait(sc->obj, sc->cur.off, &sc->waiter)) {
                sc->obj_waiting = true;
                st->readable = false;
                return 0;
            }
            continue; /* it grew meanwhile */
        }
    }
    return (ssize_t)got;
}

static ssize_t cache_vflush(struct weir__stream *st, struct weir__outq *q)
{
    (void)st;
    (void)q;
    return -EPIPE; /* nothing goes up to a stored object */
}

static const struct weir__stream_vt cache_vt = {cache_vread, cache_vflush};

static int cache_request_head(struct weir_session *s, bool length_ok)
{
    (void)s;
    (void)length_ok;
    return WEIR_EINVAL;
}

/* ---- conditional requests and ranges, answered from a stored object ---- */

static struct weir_iov trim_ows(struct weir_iov v)
{
    while (v.len > 0 && (v.base[0] == ' ' || v.base[0] == '\t')) {
        v.base++;
        v.len--;
    }
    while (v.len > 0 && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t')) {
        v.len--;
    }
    return v;
}

static struct weir_iov strip_weak(struct weir_iov v)
{
    if (v.len >= 2 && v.base[0] == 'W' && v.base[1] == '/') {
        v.base += 2;
        v.len -= 2;
    }
    return v;
}

/* If-None-Match's list against the stored ETag, weak comparison (RFC 9110 13.1.2). */
static bool etag_listed(struct weir_iov list, struct weir_iov etag)
{
    list = trim_ows(list);
    if (list.len == 1 && list.base[0] == '*') {
        return true;
    }
    struct weir_iov mine = strip_weak(trim_ows(etag));
    while (list.len > 0) {
        const char *comma = memchr(list.base, ',', list.len);
        size_t n = comma ? (size_t)(comma - list.base) : list.len;
        struct weir_iov one = strip_weak(trim_ows((struct weir_iov){list.base, n}));
        if (one.len > 0 && weir_iov_eq(one, mine)) {
            return true;
        }
        list.base += n + (comma ? 1 : 0);
        list.len -= n + (comma ? 1 : 0);
    }
    return false;
}

/* Whether the client's conditions say it has this response already (304). */
static bool not_modified(struct weir_session *s, const struct weir_headers *stored)
{
    struct weir_iov inm, ims, etag, lm;
    if (weir_headers_get(&s->req.headers, "if-none-match", &inm)) {
        return weir_headers_get(stored, "etag", &etag) && etag_listed(inm, etag);
    }
    int64_t since, modified;
    return weir_headers_get(&s->req.headers, "if-modified-since", &ims) &&
           weir_headers_get(stored, "last-modified", &lm) && weir__http_date_parse(ims, &since) &&
           weir__http_date_parse(lm, &modified) && modified <= since;
}

/* If-Range: the ranges apply only to the representation it names (strong ETag, or date). */
static bool if_range_holds(struct weir_session *s, const struct weir_headers *stored)
{
    struct weir_iov ir, v;
    if (!weir_headers_get(&s->req.headers, "if-range", &ir)) {
        return true;
    }
    ir = trim_ows(ir);
    if (ir.len > 0 && (ir.base[0] == '"' || ir.base[0] == 'W')) {
        return ir.base[0] == '"' && weir_headers_get(stored, "etag", &v) &&
               weir_iov_eq(trim_ows(v), ir);
    }
    int64_t a, b;
    return weir_headers_get(stored, "last-modified", &v) && weir__http_date_parse(ir, &a) &&
           weir__http_date_parse(v, &b) && a == b;
}

static struct weir_iov arena_printf(struct weir_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static struct weir_iov arena_printf(struct weir_arena *a, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf)) {
        return (struct weir_iov){NULL, 0};
    }
    return weir_arena_iovdup(a, (struct weir_iov){buf, (size_t)n});
}

/*
 * Turns the complete object's 200 into a 206 (one range, or multipart/byteranges) or a 416
 * when the request asks for ranges. *len becomes the body's length. 0, 1 (not a range
 * response: serve it whole) or WEIR_ENOMEM.
 */
static int answer_ranges(struct weir_session *s, struct weir__scache *sc, struct weir_resp *r,
                         uint64_t *len)
{
    struct weir_iov rv;
    if (r->status != 200 || sc->head_req || !weir_headers_get(&s->req.headers, "range", &rv) ||
        !if_range_holds(s, &r->headers)) {
        return 1;
    }
    uint64_t total = *len;
    struct weir__range rs[WEIR_CACHE_MAX_RANGES];
    int n = weir__range_parse(rv, total, rs);
    if (n < 0) {
        return 1;
    }
    struct weir_arena *a = s->arena;
    if (n == 0) {
        r->status = 416;
        r->reason = WEIR_IOV_LIT("Range Not Satisfiable");
        struct weir_iov cr = arena_printf(a, "bytes */%llu", (unsigned long long)total);
        if (cr.base == NULL ||
            weir_headers_add_iov(&r->headers, WEIR_IOV_LIT("Content-Range"), cr) != 0) {
            return WEIR_ENOMEM;
        }
        sc->segs = weir_arena_calloc(a, sizeof(struct cseg));
        if (sc->segs == NULL) {
            return WEIR_ENOMEM;
        }
        sc->nsegs = 0;
        *len = 0;
        return 0;
    }
    r->status = 206;
    r->reason = WEIR_IOV_LIT("Partial Content");
    if (n == 1) {
        sc->segs = weir_arena_calloc(a, sizeof(struct cseg));
        struct weir_iov cr =
            arena_printf(a, "bytes %llu-%llu/%llu", (unsigned long long)rs[0].first,
                         (unsigned long long)rs[0].last, (unsigned long long)total);
        if (sc->segs == NULL || cr.base == NULL ||
            weir_headers_add_iov(&r->headers, WEIR_IOV_LIT("Content-Range"), cr) != 0) {
            return WEIR_ENOMEM;
        }
        sc->segs[0] = (struct cseg){.off = rs[0].first, .len = rs[0].last - rs[0].first + 1};
        sc->nsegs = 1;
        *len = sc->segs[0].len;
        return 0;
    }
    /* multipart/byteranges: each part its Content-Type and Content-Range, then the bytes */
    struct weir_iov ctype = WEIR_IOV_LIT("application/octet-stream");
    (void)weir_headers_get(&r->headers, "content-type", &ctype);
    char boundary[40];
    (void)snprintf(boundary, sizeof(boundary), "weir-%016llx",
                   (unsigned long long)(sc->hash ^ (uint64_t)s->start_ms * 0x9e3779b97f4a7c15ull));
    sc->segs = weir_arena_calloc(a, sizeof(struct cseg) * (size_t)(2 * n + 1));
    if (sc->segs == NULL) {
        return WEIR_ENOMEM;
    }
    uint64_t body = 0;
    unsigned k = 0;
    for (int i = 0; i < n; i++) {
        struct weir_iov part = arena_printf(
            a, "%s--%s\r\nContent-Type: %.*s\r\nContent-Range: bytes %llu-%llu/%llu\r\n\r\n",
            i == 0 ? "" : "\r\n", boundary, (int)(ctype.len > 200 ? 200 : ctype.len), ctype.base,
            (unsigned long long)rs[i].first, (unsigned long long)rs[i].last,
            (unsigned long long)total);
        if (part.base == NULL) {
            return WEIR_ENOMEM;
        }
        sc->segs[k++] = (struct cseg){.lit = true, .text = part};
        sc->segs[k++] = (struct cseg){.off = rs[i].first, .len = rs[i].last - rs[i].first + 1};
        body += part.len + (rs[i].last - rs[i].first + 1);
    }
    struct weir_iov end = arena_printf(a, "\r\n--%s--\r\n", boundary);
    struct weir_iov mct = arena_printf(a, "multipart/byteranges; boundary=%s", boundary);
    if (end.base == NULL || mct.base == NULL) {
        return WEIR_ENOMEM;
    }
    sc->segs[k++] = (struct cseg){.lit = true, .text = end};
    body += end.len;
    sc->nsegs = k;
    (void)weir_headers_remove(&r->headers, "content-type");
    if (weir_headers_add_iov(&r->headers, WEIR_IOV_LIT("Content-Type"), mct) != 0) {
        return WEIR_ENOMEM;
    }
    *len = body;
    return 0;
}

/* The stored head as the response: fields, Age, and the length once it is known. */
static enum weir__step cache_response_head(struct weir_session *s, struct weir__outcome *o)
{
    struct weir__scache *sc = s->cache;
    struct weir_resp *r = weir_arena_calloc(s->arena, sizeof(*r));
    /* room for every stored field (a head a hook grew may hold more than a parse allows) */
    uint32_t max = s->cfg->server.limits.max_headers + WEIR_HEADERS_SLACK;
    max = sc->fields->n + 8 > max ? sc->fields->n + 8 : max;
    if (r == NULL || weir__headers_init(&r->headers, s->arena, sc->fields->n + 8, max) != 0) {
        return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
    }
    memcpy(r->headers.v, sc->fields->v, sc->fields->n * sizeof(r->headers.v[0]));
    r->headers.n = sc->fields->n;
    r->status = sc->meta.status;
    r->minor = 1;
    r->reason = sc->meta.reason;
    char num[24];
    int n = snprintf(num, sizeof(num), "%u", sc->meta.times.age);
    struct weir_iov age = weir_arena_iovdup(s->arena, (struct weir_iov){num, (size_t)n});
    if (age.base == NULL || weir_headers_add_iov(&r->headers, WEIR_IOV_LIT("Age"), age) != 0) {
        return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
    }
    uint64_t len = sc->meta.body_len;
    enum weir__h1_body kind = WEIR_H1_BODY_CLOSE; /* a fill of unknown length: to its end */
    bool conditional = r->status == 200 && not_modified(s, &r->headers);
    if (conditional) {
        /* The client has it: 304 with the stored fields, no body (RFC 9110 15.4.5). */
        r->status = 304;
        r->reason = WEIR_IOV_LIT("Not Modified");
        len = WEIR_CACHE_LEN_UNKNOWN;
        kind = WEIR_H1_BODY_NONE;
    } else if (sc->obj_complete && len != WEIR_CACHE_LEN_UNKNOWN) {
        int rc = answer_ranges(s, sc, r, &len);
        if (rc < 0) {
            return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
        }
    }
    if (len != WEIR_CACHE_LEN_UNKNOWN) {
        n = snprintf(num, sizeof(num), "%llu", (unsigned long long)len);
        struct weir_iov cl = weir_arena_iovdup(s->arena, (struct weir_iov){num, (size_t)n});
        if (cl.base == NULL ||
            weir_headers_add_iov(&r->headers, WEIR_IOV_LIT("Content-Length"), cl) != 0) {
            return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
        }
        kind = len > 0 ? WEIR_H1_BODY_LENGTH : WEIR_H1_BODY_NONE;
    }
    if (sc->head_req || r->status == 204 || r->status == 304 || r->status == 416) {
        kind = WEIR_H1_BODY_NONE;
    }
    s->resp = r;
    s->ux.byte_seen = true;
    weir__pipe_source(s, &s->respp, kind, len);
    return WEIR_STEP_DONE;
}

const struct weir__up_framing weir__cache_up = {
    .name = "cache",
    .request_head = cache_request_head,
    .response_head = cache_response_head,
};
