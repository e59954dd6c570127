/*
 * The per-worker tier of the upstream connection pool: idle connections hashed by the peer's
 * address, most recently used first, bounded per key and in total, each watched for peer
 * close and idle timeout.
 */
#include "pool/pool.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "net/sock.h"
#include "weir/error.h"

#define NBUCKETS 256

struct keylist {
    struct keylist *next; /* bucket chain */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t hash;
    uint32_t count;
    struct weir__upconn *head; /* most recently parked */
    struct weir__upconn *tail;
};

struct weir__pool {
    struct weir_loop *loop;
    struct weir_bufpool *bufs;
    uint32_t max_idle_per_key;
    uint32_t max_idle_total;
    uint32_t idle_timeout_ms;
    uint32_t nidle;
    struct keylist *buckets[NBUCKETS];
    struct weir__pool_stats stats;
};

static uint64_t addr_hash(const struct sockaddr *sa, socklen_t len)
{
    /* FNV-1a over the address bytes that identify the peer. */
    const unsigned char *p = (const unsigned char *)sa;
    uint64_t h = 1469598103934665603ull;
    for (socklen_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

struct weir__pool *weir__pool_new(struct weir_loop *loop, struct weir_bufpool *bufs,
                                  uint32_t max_idle_per_key, uint32_t max_idle_total,
                                  uint32_t idle_timeout_ms)
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
    return p;
}

static struct keylist *find_key(struct weir__pool *p, const struct sockaddr *sa, socklen_t len,
                                uint64_t hash)
{
    for (struct keylist *k = p->buckets[hash % NBUCKETS]; k; k = k->next) {
        if (k->hash == hash && k->addrlen == len &&
            weir__addr_equal((const struct sockaddr *)&k->addr, sa)) {
            return k;
        }
    }
    return NULL;
}

static struct keylist *get_key(struct weir__pool *p, const struct sockaddr *sa, socklen_t len,
                               uint64_t hash)
{
    struct keylist *k = find_key(p, sa, len, hash);
    if (k != NULL) {
        return k;
    }
    k = weir__calloc(1, sizeof(*k));
    if (k == NULL) {
        return NULL;
    }
    memcpy(&k->addr, sa, len);
    k->addrlen = len;
    k->hash = hash;
    k->next = p->buckets[hash % NBUCKETS];
    p->buckets[hash % NBUCKETS] = k;
    return k;
}

static void unlink_idle(struct weir__pool *p, struct keylist *k, struct weir__upconn *u)
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
    p->nidle--;
    weir_timer_stop(p->loop, &u->idle_timer);
}

static void evict(struct weir__pool *p, struct weir__upconn *u, uint64_t *counter)
{
    struct keylist *k = find_key(p, (struct sockaddr *)&u->addr, u->addrlen, u->key_hash);
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

static void reap_upconn(struct weir_loop *loop, struct weir_defer *d)
{
    struct weir__upconn *u = (struct weir__upconn *)((char *)d - offsetof(struct weir__upconn, reap));
    u->magic = 0;
    weir__free(u);
}

struct weir__upconn *weir__pool_take(struct weir__pool *p, const struct weir_peer *peer)
{
    uint64_t hash = addr_hash((const struct sockaddr *)&peer->addr, peer->addrlen);
    struct keylist *k = find_key(p, (const struct sockaddr *)&peer->addr, peer->addrlen, hash);
    if (k == NULL || k->head == NULL) {
        return NULL;
    }
    struct weir__upconn *u = k->head;
    unlink_idle(p, k, u);
    u->st.io.cb = noop_event;
    u->st.io.data = u;
    u->st.readable = false;
    u->st.writable = true;
    p->stats.reuses++;
    return u;
}

bool weir__pool_put(struct weir__pool *p, struct weir__upconn *u)
{
    if (p->max_idle_per_key == 0 || u->st.eof || weir__buf_len(&u->st.in) != 0) {
        return false;
    }
    struct keylist *k = get_key(p, (struct sockaddr *)&u->addr, u->addrlen, u->key_hash);
    if (k == NULL) {
        return false;
    }
    if (k->count >= p->max_idle_per_key || p->nidle >= p->max_idle_total) {
        if (k->tail == NULL) {
            return false;
        }
        /* Keep the warm one just released; drop this key's oldest. */
        evict(p, k->tail, &p->stats.evict_full);
    }
    weir__buf_release(p->bufs, &u->st.in);
    u->owner = NULL;
    u->st.io.cb = idle_event;
    u->st.io.data = u;
    u->prev = NULL;
    u->next = k->head;
    if (k->head) {
        k->head->prev = u;
    } else {
        k->tail = u;
    }
    k->head = u;
    k->count++;
    p->nidle++;
    u->idle_since_ms = weir_loop_now_ms(p->loop);
    weir_timer_init(&u->idle_timer, idle_timeout, u);
    if (weir_timer_start(p->loop, &u->idle_timer, p->idle_timeout_ms) != 0) {
        unlink_idle(p, k, u);
        return false;
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
    for (size_t i = 0; i < NBUCKETS; i++) {
        for (struct keylist *k = p->buckets[i]; k; k = k->next) {
            while (k->head) {
                struct weir__upconn *u = k->head;
                unlink_idle(p, k, u);
                weir__upconn_close(p, u);
            }
        }
    }
}

void weir__pool_free(struct weir__pool *p)
{
    if (p == NULL) {
        return;
    }
    weir__pool_close_idle(p);
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct keylist *k = p->buckets[i];
        while (k) {
            struct keylist *next = k->next;
            weir__free(k);
            k = next;
        }
    }
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
    memcpy(&u->addr, &peer->addr, peer->addrlen);
    u->addrlen = peer->addrlen;
    u->key_hash = addr_hash((const struct sockaddr *)&peer->addr, peer->addrlen);
    u->pool = p;
    weir_timer_init(&u->idle_timer, idle_timeout, u);
    int rc = weir_loop_io_add(p->loop, &u->st.io,
                              WEIR_IO_READ | WEIR_IO_WRITE | WEIR_IO_RDHUP);
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
