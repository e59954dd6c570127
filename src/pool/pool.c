/*
 * The upstream connection pool (see pool.h): per-worker hot tiers and the shared tier. In both,
 * idle connections are hashed by the peer's address, most recently used first, bounded per key
 * and in total, and kept on a list of every idle connection of the tier, oldest last.
 */
#include "pool/pool.h"
#include "tls/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/assert.h"
#include "net/sock.h"
#include "weir/error.h"

#define NBUCKETS 256

struct keylist {
    struct keylist *next; /* bucket chain */
    struct weir__upkey key;
    uint32_t count;
    /* hot tier only: when this worker last looked for a connection to this peer, and the gap
       before that; a small gap means the peer is in demand here, so its connections stay hot */
    uint64_t last_take_ms;
    uint64_t take_gap_ms;
    struct weir__upconn *head; /* most recently parked */
    struct weir__upconn *tail;
};

/* Every idle connection of a tier, most recently parked first. */
struct idlelist {
    struct weir__upconn *head, *tail;
};

struct weir__pool {
    struct weir_loop *loop;
    struct weir__bufpool *bufs;
    uint32_t max_idle_per_key;
    uint32_t max_idle_total;
    uint32_t idle_timeout_ms;
    uint32_t nidle;
    struct keylist *buckets[NBUCKETS];
    struct idlelist all;
    struct weir__pool_shared *sh;
    uint32_t share_after_ms;
    struct weir_timer sweep;
    uint64_t last_tidy_ms; /* when this worker's sweep last tidied the shared tier */
    struct weir__pool_stats stats;
};

struct weir__pool_shared {
    pthread_mutex_t lock;
    int wfd;                /* epoll set watching every connection in this tier */
    atomic_uint nidle_hint; /* nidle, readable without the lock */
    uint32_t max_per_key;
    uint32_t max_total;
    uint32_t idle_timeout_ms;
    uint32_t nidle;
    struct keylist *buckets[NBUCKETS];
    struct idlelist all;
    struct weir__pool_stats stats;
};

static uint64_t fnv(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

void weir__upkey_of(const struct weir_peer *peer, struct weir__upkey *k)
{
    memcpy(&k->addr, &peer->addr, peer->addrlen);
    k->addrlen = peer->addrlen;
    /* FNV-1a over the address bytes that identify the peer, then its TLS identity. */
    uint64_t h = fnv(1469598103934665603ull, &peer->addr, peer->addrlen);
    k->tls = peer->tls;
    if (peer->tls) {
        k->no_verify = peer->tls_no_verify;
        k->ctx = weir__tls_client_ctx(peer);
        size_t n = strnlen(peer->sni, sizeof(k->sni) - 1);
        memcpy(k->sni, peer->sni, n);
        k->sni[n] = '\0';
        size_t m = strnlen(peer->verify_name, sizeof(k->verify_name) - 1);
        memcpy(k->verify_name, peer->verify_name, m);
        k->verify_name[m] = '\0';
        h = fnv(h, &k->ctx, sizeof(k->ctx));
        h = fnv(h, &k->no_verify, 1);
        h = fnv(h, k->sni, n + 1);
        h = fnv(h, k->verify_name, m + 1);
    }
    k->hash = h;
}

static bool key_equal(const struct weir__upkey *a, const struct weir__upkey *b)
{
    if (a->hash != b->hash || a->addrlen != b->addrlen || a->tls != b->tls ||
        !weir__addr_equal((const struct sockaddr *)&a->addr, (const struct sockaddr *)&b->addr)) {
        return false;
    }
    return !a->tls || (a->ctx == b->ctx && a->no_verify == b->no_verify &&
                       strcmp(a->sni, b->sni) == 0 && strcmp(a->verify_name, b->verify_name) == 0);
}

bool weir__upkey_equal(const struct weir__upkey *a, const struct weir__upkey *b)
{
    return key_equal(a, b);
}

static struct keylist *find_key(struct keylist **buckets, const struct weir__upkey *key)
{
    for (struct keylist *k = buckets[key->hash % NBUCKETS]; k; k = k->next) {
        if (key_equal(&k->key, key)) {
            return k;
        }
    }
    return NULL;
}

static struct keylist *get_key(struct keylist **buckets, const struct weir__upkey *key)
{
    struct keylist *k = find_key(buckets, key);
    if (k != NULL) {
        return k;
    }
    k = weir__calloc(1, sizeof(*k));
    if (k == NULL) {
        return NULL;
    }
    k->key = *key;
    k->next = buckets[key->hash % NBUCKETS];
    buckets[key->hash % NBUCKETS] = k;
    return k;
}

static void free_keys(struct keylist **buckets)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct keylist *k = buckets[i];
        while (k) {
            struct keylist *next = k->next;
            weir__free(k);
            k = next;
        }
        buckets[i] = NULL;
    }
}

/* ---- the two lists every idle connection is on ---- */

static void key_push(struct keylist *k, struct weir__upconn *u)
{
    u->prev = NULL;
    u->next = k->head;
    if (k->head) {
        k->head->prev = u;
    } else {
        k->tail = u;
    }
    k->head = u;
    k->count++;
}

static void key_unlink(struct keylist *k, struct weir__upconn *u)
{
    if (u->prev) {
        u->prev->next = u->next;
    } else {
        k->head = u->next;
    }
    if (u->next) {
        u->next->prev = u->prev;
    } else {
        k->tail = u->prev;
    }
    u->prev = u->next = NULL;
    k->count--;
}

static void all_push(struct idlelist *l, struct weir__upconn *u)
{
    u->gprev = NULL;
    u->gnext = l->head;
    if (l->head) {
        l->head->gprev = u;
    } else {
        l->tail = u;
    }
    l->head = u;
}

static void all_unlink(struct idlelist *l, struct weir__upconn *u)
{
    if (u->gprev) {
        u->gprev->gnext = u->gnext;
    } else {
        l->head = u->gnext;
    }
    if (u->gnext) {
        u->gnext->gprev = u->gprev;
    } else {
        l->tail = u->gprev;
    }
    u->gprev = u->gnext = NULL;
}

/* ---- the shared tier (every function here runs with sh->lock held) ---- */

static void shared_unlink(struct weir__pool_shared *sh, struct weir__upconn *u)
{
    struct keylist *k = find_key(sh->buckets, &u->key);
    if (k != NULL) {
        key_unlink(k, u);
    }
    all_unlink(&sh->all, u);
    sh->nidle--;
    atomic_store_explicit(&sh->nidle_hint, sh->nidle, memory_order_relaxed);
    (void)epoll_ctl(sh->wfd, EPOLL_CTL_DEL, u->st.io.fd, NULL);
    u->shared = false;
}

static void shared_evict(struct weir__pool_shared *sh, struct weir__upconn *u, uint64_t *counter)
{
    shared_unlink(sh, u);
    (*counter)++;
    weir__tls_free(&u->st);
    close(u->st.io.fd);
    u->magic = 0;
    weir__free(u); /* in no loop: no event can still be queued for it */
}

/* Evicts what closed or sent bytes (the epoll set says so) and what idled too long. */
static void shared_maintain(struct weir__pool_shared *sh, uint64_t now)
{
    struct epoll_event evs[64];
    int n;
    do {
        n = sh->nidle ? epoll_wait(sh->wfd, evs, 64, 0) : 0;
        for (int i = 0; i < n; i++) {
            struct weir__upconn *u = evs[i].data.ptr;
            if (u->shared) {
                shared_evict(sh, u, &sh->stats.evict_closed);
            }
        }
    } while (n == 64);
    while (sh->all.tail && now - sh->all.tail->idle_since_ms >= sh->idle_timeout_ms) {
        shared_evict(sh, sh->all.tail, &sh->stats.evict_timeout);
    }
}

/* Takes ownership of u (idle, in no loop); closes it when it cannot be kept. */
static void shared_insert(struct weir__pool_shared *sh, struct weir__upconn *u)
{
    struct keylist *k = get_key(sh->buckets, &u->key);
    if (k != NULL && k->count >= sh->max_per_key && k->tail != NULL) {
        shared_evict(sh, k->tail, &sh->stats.evict_full); /* keep the most recent */
    }
    if (k != NULL && sh->nidle >= sh->max_total && sh->all.tail != NULL) {
        shared_evict(sh, sh->all.tail, &sh->stats.evict_full);
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = u};
    if (k == NULL || sh->max_per_key == 0 || sh->nidle >= sh->max_total ||
        epoll_ctl(sh->wfd, EPOLL_CTL_ADD, u->st.io.fd, &ev) != 0) {
        sh->stats.evict_full++;
        weir__tls_free(&u->st);
        close(u->st.io.fd);
        u->magic = 0;
        weir__free(u);
        return;
    }
    u->shared = true;
    u->pool = NULL;
    key_push(k, u);
    all_push(&sh->all, u);
    sh->nidle++;
    atomic_store_explicit(&sh->nidle_hint, sh->nidle, memory_order_relaxed);
}

struct weir__pool_shared *weir__pool_shared_new(uint32_t max_per_key, uint32_t max_total,
                                                uint32_t idle_timeout_ms)
{
    struct weir__pool_shared *sh = weir__calloc(1, sizeof(*sh));
    if (sh == NULL) {
        return NULL;
    }
    sh->wfd = epoll_create1(EPOLL_CLOEXEC);
    if (sh->wfd < 0) {
        weir__free(sh);
        return NULL;
    }
    if (pthread_mutex_init(&sh->lock, NULL) != 0) {
        close(sh->wfd);
        weir__free(sh);
        return NULL;
    }
    atomic_init(&sh->nidle_hint, 0);
    sh->max_per_key = max_per_key;
    sh->max_total = max_total;
    sh->idle_timeout_ms = idle_timeout_ms;
    return sh;
}

void weir__pool_shared_free(struct weir__pool_shared *sh)
{
    if (sh == NULL) {
        return;
    }
    while (sh->all.head) {
        shared_evict(sh, sh->all.head, &sh->stats.evict_full);
    }
    free_keys(sh->buckets);
    close(sh->wfd);
    pthread_mutex_destroy(&sh->lock);
    weir__free(sh);
}

void weir__pool_shared_stats(struct weir__pool_shared *sh, struct weir__pool_stats *out)
{
    pthread_mutex_lock(&sh->lock);
    *out = sh->stats;
    pthread_mutex_unlock(&sh->lock);
}

uint32_t weir__pool_shared_idle_count(struct weir__pool_shared *sh)
{
    pthread_mutex_lock(&sh->lock);
    uint32_t n = sh->nidle;
    pthread_mutex_unlock(&sh->lock);
    return n;
}

/* ---- the hot tier ---- */

static void sweep(struct weir_loop *loop, struct weir_timer *t);

struct weir__pool *weir__pool_new(struct weir_loop *loop, struct weir__bufpool *bufs,
                                  uint32_t max_idle_per_key, uint32_t max_idle_total,
                                  uint32_t idle_timeout_ms, struct weir__pool_shared *sh,
                                  uint32_t share_after_ms)
{
    struct weir__pool *p = weir__calloc(1, sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    p->loop = loop;
    p->bufs = bufs;
    p->max_idle_per_key = max_idle_per_key;
    p->max_idle_total = max_idle_total;
    p->idle_timeout_ms = idle_timeout_ms;
    p->sh = sh;
    p->share_after_ms = share_after_ms ? share_after_ms : 1;
    weir_timer_init(&p->sweep, sweep, p);
    return p;
}

static void unlink_idle(struct weir__pool *p, struct keylist *k, struct weir__upconn *u)
{
    key_unlink(k, u);
    all_unlink(&p->all, u);
    p->nidle--;
    weir_timer_stop(p->loop, &u->idle_timer);
}

static void evict(struct weir__pool *p, struct weir__upconn *u, uint64_t *counter)
{
    struct keylist *k = find_key(p->buckets, &u->key);
    if (k != NULL) {
        unlink_idle(p, k, u);
    }
    (*counter)++;
    weir__upconn_close(p, u);
}

static void idle_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct weir__upconn *u = io->data;
    /* Writability means nothing here; anything readable is a close, an error or stray bytes. */
    if ((events & (WEIR_IO_READ | WEIR_IO_RDHUP | WEIR_IO_HUP | WEIR_IO_ERROR)) == 0) {
        return;
    }
    evict(u->pool, u, &u->pool->stats.evict_closed);
}

static void idle_timeout(struct weir_loop *loop, struct weir_timer *t)
{
    struct weir__upconn *u = t->data;
    evict(u->pool, u, &u->pool->stats.evict_timeout);
}

static void noop_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
}

static void reap_upconn(struct weir_loop *loop, struct weir__defer *d)
{
    struct weir__upconn *u = WEIR_CONTAINER_OF(d, struct weir__upconn, reap);
    WEIR_CHECK_OBJ(u, WEIR_UPCONN_MAGIC);
    u->magic = 0;
    weir__free(u);
}

/* Moves a hot idle connection into the shared tier (sh->lock held). */
static void move_to_shared(struct weir__pool *p, struct keylist *k, struct weir__upconn *u)
{
    unlink_idle(p, k, u);
    weir_loop_io_del(p->loop, &u->st.io);
    p->stats.to_shared++;
    shared_insert(p->sh, u);
}

/*
 * Without a shared tier to spill into, the bounds are soft for connections in use a moment
 * ago: a connection released while the oldest idle one has idled less than
 * POOL_SURPLUS_GRACE_MS is load, not surplus (500 requests in flight over 384 kept would
 * otherwise close and reopen 3 % of their connections, measured under h2load -m10), so it is
 * kept, up to POOL_SURPLUS_FACTOR times the bounds; the sweep closes the surplus once it has
 * idled that long, so what a burst opened is given back a second after it.
 */
#define POOL_SURPLUS_GRACE_MS 1000
#define POOL_SURPLUS_FACTOR   4

static bool over_bounds(const struct weir__pool *p, const struct keylist *k, uint32_t factor)
{
    return k->count >= (uint64_t)p->max_idle_per_key * factor ||
           p->nidle >= (uint64_t)p->max_idle_total * factor;
}

static void arm_sweep(struct weir__pool *p, uint64_t in_ms)
{
    if (!weir_timer_active(&p->sweep) ||
        p->sweep.deadline_ms > weir__loop_deadline(p->loop, in_ms)) {
        weir_timer_stop(p->loop, &p->sweep);
        /* Failing to arm only delays sharing: the next put tries again. */
        (void)weir_timer_start(p->loop, &p->sweep, in_ms);
    }
}

/* Every share_after_ms while this tier holds idle connections: hand the ones idle that long
   to the shared tier, one lock for the batch; and keep the shared tier tidy meanwhile. */
/* No shared tier: closes the connections over the bounds that have idled for the grace. */
static void trim_surplus(struct weir__pool *p, uint64_t now)
{
    struct weir__upconn *u = p->all.tail, *prev;
    bool left = false;
    for (; u != NULL; u = prev) {
        prev = u->gprev;
        struct keylist *k = find_key(p->buckets, &u->key);
        if (k == NULL || (k->count <= p->max_idle_per_key && p->nidle <= p->max_idle_total)) {
            continue;
        }
        if (now - u->idle_since_ms < POOL_SURPLUS_GRACE_MS) {
            left = true; /* the list is oldest last: the rest are younger still */
            break;
        }
        evict(p, u, &p->stats.evict_full);
    }
    if (left) {
        arm_sweep(p, POOL_SURPLUS_GRACE_MS);
    }
}

static void sweep(struct weir_loop *loop, struct weir_timer *t)
{
    struct weir__pool *p = t->data;
    uint64_t now = weir_loop_now_ms(loop);
    if (p->sh == NULL) {
        trim_surplus(p, now);
        return;
    }
    bool move = p->all.tail && now - p->all.tail->idle_since_ms >= p->share_after_ms;
    bool tidy = atomic_load_explicit(&p->sh->nidle_hint, memory_order_relaxed) != 0 &&
                now - p->last_tidy_ms >= 1000;
    if (!move && !tidy) {
        /* Under load nothing idles long enough to move: no lock. */
        if (p->all.tail) {
            arm_sweep(p, p->all.tail->idle_since_ms + p->share_after_ms - now);
        } else if (atomic_load_explicit(&p->sh->nidle_hint, memory_order_relaxed) != 0) {
            arm_sweep(p, 1000 - (now - p->last_tidy_ms));
        }
        return;
    }
    p->last_tidy_ms = now;
    pthread_mutex_lock(&p->sh->lock);
    shared_maintain(p->sh, now);
    while (p->all.tail && now - p->all.tail->idle_since_ms >= p->share_after_ms) {
        struct weir__upconn *u = p->all.tail;
        struct keylist *k = find_key(p->buckets, &u->key);
        if (k == NULL) {
            break; /* cannot happen: every idle connection is on its key's list */
        }
        move_to_shared(p, k, u);
    }
    bool shared_left = p->sh->nidle != 0;
    pthread_mutex_unlock(&p->sh->lock);
    if (p->all.tail) {
        arm_sweep(p, p->all.tail->idle_since_ms + p->share_after_ms - now);
    } else if (shared_left) {
        /* Nothing of ours left, but the shared tier still needs its closes and timeouts
           noticed while traffic is quiet. */
        arm_sweep(p, 1000);
    }
}

/* Registers a connection from the shared tier on this worker's loop. */
static struct weir__upconn *adopt(struct weir__pool *p, struct weir__upconn *u)
{
    u->pool = p;
    u->st.io.cb = noop_event;
    u->st.io.data = u;
    u->st.readable = false;
    u->st.writable = true;
    weir_timer_init(&u->idle_timer, idle_timeout, u);
    if (weir_loop_io_add(p->loop, &u->st.io, WEIR_IO_READ | WEIR_IO_WRITE | WEIR_IO_RDHUP) != 0) {
        weir__tls_free(&u->st);
        close(u->st.io.fd);
        u->magic = 0;
        weir__free(u);
        return NULL;
    }
    p->stats.reuses_shared++;
    return u;
}

struct weir__upconn *weir__pool_take(struct weir__pool *p, const struct weir_peer *peer)
{
    struct weir__upkey key;
    weir__upkey_of(peer, &key);
    uint64_t now = weir_loop_now_ms(p->loop);
    struct keylist *k = get_key(p->buckets, &key);
    if (k != NULL) {
        k->take_gap_ms = k->last_take_ms ? now - k->last_take_ms : UINT64_MAX;
        k->last_take_ms = now;
    }
    if (k != NULL && k->head != NULL) {
        struct weir__upconn *u = k->head;
        unlink_idle(p, k, u);
        u->st.io.cb = noop_event;
        u->st.io.data = u;
        u->st.readable = false;
        u->st.writable = true;
        p->stats.reuses++;
        return u;
    }
    struct weir__pool_shared *sh = p->sh;
    if (sh == NULL || atomic_load_explicit(&sh->nidle_hint, memory_order_relaxed) == 0) {
        return NULL;
    }
    struct weir__upconn *u = NULL;
    pthread_mutex_lock(&sh->lock);
    shared_maintain(sh, now);
    k = find_key(sh->buckets, &key);
    if (k != NULL && k->head != NULL) {
        u = k->head;
        shared_unlink(sh, u);
    }
    pthread_mutex_unlock(&sh->lock);
    return u != NULL ? adopt(p, u) : NULL;
}

bool weir__pool_put(struct weir__pool *p, struct weir__upconn *u)
{
    if (p->max_idle_per_key == 0 || u->st.eof || weir__buf_len(&u->st.in) != 0) {
        return false;
    }
    struct keylist *k = get_key(p->buckets, &u->key);
    if (k == NULL) {
        return false;
    }
    uint64_t now = weir_loop_now_ms(p->loop);
    if (p->sh != NULL && (k->take_gap_ms >= p->share_after_ms || u->share_now)) {
        /* This worker wants this peer rarely, or the peer caps its connections: let every
           worker have the connection now rather than open another. */
        weir__buf_release(p->bufs, &u->st.in);
        u->owner = NULL;
        u->idle_since_ms = now;
        weir_timer_stop(p->loop, &u->idle_timer);
        weir_loop_io_del(p->loop, &u->st.io);
        p->stats.to_shared++;
        pthread_mutex_lock(&p->sh->lock);
        shared_maintain(p->sh, now);
        shared_insert(p->sh, u);
        pthread_mutex_unlock(&p->sh->lock);
        arm_sweep(p, p->idle_timeout_ms < 1000 ? p->idle_timeout_ms : 1000);
        return true;
    }
    if (k->count >= p->max_idle_per_key || p->nidle >= p->max_idle_total) {
        struct weir__upconn *old = k->count >= p->max_idle_per_key ? k->tail : p->all.tail;
        if (old == NULL) {
            return false;
        }
        /* Keep the warm one just released; the oldest goes to the shared tier or away. */
        if (p->sh != NULL) {
            struct keylist *ok = old == k->tail ? k : find_key(p->buckets, &old->key);
            pthread_mutex_lock(&p->sh->lock);
            move_to_shared(p, ok, old);
            pthread_mutex_unlock(&p->sh->lock);
        } else if (now - old->idle_since_ms < POOL_SURPLUS_GRACE_MS &&
                   !over_bounds(p, k, POOL_SURPLUS_FACTOR)) {
            arm_sweep(p, POOL_SURPLUS_GRACE_MS); /* in use a moment ago: the sweep decides */
        } else {
            evict(p, old, &p->stats.evict_full);
        }
    }
    weir__buf_release(p->bufs, &u->st.in);
    u->owner = NULL;
    u->st.io.cb = idle_event;
    u->st.io.data = u;
    key_push(k, u);
    all_push(&p->all, u);
    p->nidle++;
    u->idle_since_ms = now;
    weir_timer_init(&u->idle_timer, idle_timeout, u);
    if (weir_timer_start(p->loop, &u->idle_timer, p->idle_timeout_ms) != 0) {
        unlink_idle(p, k, u);
        return false;
    }
    if (p->sh != NULL) {
        arm_sweep(p, p->share_after_ms);
    }
    /*
     * A close or stray bytes that arrive from now on raise an edge and evict it. One that came
     * while the session still owned it raised its edge then; weir__upconn_alive catches that
     * case at reuse, where it matters.
     */
    return true;
}

bool weir__upconn_alive(struct weir__upconn *u)
{
    char c;
    ssize_t n = recv(u->st.io.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

void weir__pool_close_idle(struct weir__pool *p)
{
    weir_timer_stop(p->loop, &p->sweep);
    while (p->all.head) {
        struct weir__upconn *u = p->all.head;
        struct keylist *k = find_key(p->buckets, &u->key);
        if (k == NULL) {
            break; /* cannot happen */
        }
        unlink_idle(p, k, u);
        weir__upconn_close(p, u);
    }
}

void weir__pool_free(struct weir__pool *p)
{
    if (p == NULL) {
        return;
    }
    weir__pool_close_idle(p);
    free_keys(p->buckets);
    weir__free(p);
}

const struct weir__pool_stats *weir__pool_stats(const struct weir__pool *p)
{
    return &p->stats;
}

uint32_t weir__pool_idle_count(const struct weir__pool *p)
{
    return p->nidle;
}

int weir__upconn_connect(struct weir__pool *p, const struct weir_peer *peer,
                         struct weir__upconn **out)
{
    struct weir__upconn *u = weir__calloc(1, sizeof(*u));
    if (u == NULL) {
        return WEIR_ENOMEM;
    }
    int fd = weir__connect((const struct sockaddr *)&peer->addr, peer->addrlen);
    if (fd < 0) {
        weir__free(u);
        return fd;
    }
    u->magic = WEIR_UPCONN_MAGIC;
    u->st.io.fd = fd;
    u->st.io.cb = noop_event;
    u->st.io.data = u;
    weir__upkey_of(peer, &u->key);
    u->pool = p;
    weir_timer_init(&u->idle_timer, idle_timeout, u);
    int rc = weir_loop_io_add(p->loop, &u->st.io, WEIR_IO_READ | WEIR_IO_WRITE | WEIR_IO_RDHUP);
    if (rc != 0) {
        close(fd);
        weir__free(u);
        return rc;
    }
    p->stats.connects++;
    *out = u;
    return 0;
}

void weir__upconn_close(struct weir__pool *p, struct weir__upconn *u)
{
    weir_timer_stop(p->loop, &u->idle_timer);
    weir_loop_io_del(p->loop, &u->st.io);
    weir__tls_free(&u->st);
    if (u->st.io.fd >= 0) {
        close(u->st.io.fd);
        u->st.io.fd = -1;
    }
    weir__buf_release(p->bufs, &u->st.in);
    u->st.io.cb = noop_event;
    u->reap.fn = reap_upconn;
    /* An event for it may still be queued in this turn's batch: free after the batch. */
    weir__loop_defer(p->loop, &u->reap);
}
