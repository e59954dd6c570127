/*
 * The cache lock: per key, at most one request fetches (the writer) while the others wait on
 * the key, registered in its entry, until the writer lets go. Letting go wakes every waiter at
 * once, with the outcome: the response is being stored (they read the fill), the writer
 * failed (one of them becomes the next writer), or the response was not cacheable (they all
 * fetch for themselves, and the key is marked for WEIR_CACHE_PASS_MS so the next burst does
 * not queue behind a lock: hit-for-pass).
 *
 * A lock has a deadline (taken + lock_timeout). Waiters keep their own copy of it and leave
 * when it passes; whoever acquires a lock past its deadline takes it over with a new turn,
 * and the old writer's release, naming the old turn, is ignored. Entries live in shards by
 * key hash, each with its own mutex; a waiter's wake callback runs under it and only queues.
 */
#include <string.h>

#include "cache/cache_int.h"
#include "core/alloc.h"
#include "core/assert.h"
#include "weir/error.h"

enum lentry_kind { LE_LOCK = 0, LE_PASS };

struct lentry {
    struct lentry *hnext;
    struct lentry *pprev, *pnext; /* LE_PASS: the shard's FIFO of marks (oldest first) */
    uint64_t hash;
    enum lentry_kind kind;
    uint64_t token;       /* LE_LOCK: the current writer's turn */
    uint64_t deadline_ms; /* LE_LOCK: takeover after; LE_PASS: the mark's end */
    struct weir_cache_waiter *waiters;
    size_t key_len;
    char key[];
};

struct lshard {
    pthread_mutex_t mu;
    struct lentry *buckets[64];
    struct lentry *pass_old, *pass_new; /* FIFO of LE_PASS marks */
    unsigned npass;
    uint64_t next_token;
    char pad[64];
};

struct weir__clock {
    struct lshard shards[WEIR_CACHE_LOCK_SHARDS];
};

static struct lshard *lshard_of(struct weir__clock *l, uint64_t hash)
{
    return &l->shards[(hash >> 59) % WEIR_CACHE_LOCK_SHARDS];
}

static struct lentry **lbucket(struct lshard *sh, uint64_t hash)
{
    return &sh->buckets[hash % 64u];
}

int weir__clock_new(struct weir__clock **out)
{
    struct weir__clock *l = weir__calloc(1, sizeof(*l));
    *out = NULL;
    if (l == NULL) {
        return WEIR_ENOMEM;
    }
    for (unsigned i = 0; i < WEIR_CACHE_LOCK_SHARDS; i++) {
        if (pthread_mutex_init(&l->shards[i].mu, NULL) != 0) {
            for (unsigned j = 0; j < i; j++) {
                pthread_mutex_destroy(&l->shards[j].mu);
            }
            weir__free(l);
            return WEIR_ENOMEM;
        }
        l->shards[i].next_token = 1;
    }
    *out = l;
    return 0;
}

void weir__clock_free(struct weir__clock *l)
{
    if (l == NULL) {
        return;
    }
    for (unsigned i = 0; i < WEIR_CACHE_LOCK_SHARDS; i++) {
        struct lshard *sh = &l->shards[i];
        for (unsigned b = 0; b < 64; b++) {
            struct lentry *e = sh->buckets[b];
            while (e != NULL) {
                struct lentry *n = e->hnext;
                WEIR_ASSERT(e->waiters == NULL);
                weir__free(e);
                e = n;
            }
        }
        pthread_mutex_destroy(&sh->mu);
    }
    weir__free(l);
}

static struct lentry *find(struct lshard *sh, struct weir_iov key, uint64_t hash)
{
    for (struct lentry *e = *lbucket(sh, hash); e != NULL; e = e->hnext) {
        if (e->hash == hash && e->key_len == key.len && memcmp(e->key, key.base, key.len) == 0) {
            return e;
        }
    }
    return NULL;
}

static void pass_unlink(struct lshard *sh, struct lentry *e)
{
    if (e->pprev != NULL) {
        e->pprev->pnext = e->pnext;
    } else {
        sh->pass_old = e->pnext;
    }
    if (e->pnext != NULL) {
        e->pnext->pprev = e->pprev;
    } else {
        sh->pass_new = e->pprev;
    }
    e->pprev = e->pnext = NULL;
    sh->npass--;
}

static void remove_entry(struct lshard *sh, struct lentry *e)
{
    for (struct lentry **pp = lbucket(sh, e->hash); *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    }
    if (e->kind == LE_PASS) {
        pass_unlink(sh, e);
    }
    weir__free(e);
}

static void add_waiter(struct lentry *e, struct weir_cache_waiter *w)
{
    w->prev = NULL;
    w->next = e->waiters;
    if (e->waiters != NULL) {
        e->waiters->prev = w;
    }
    e->waiters = w;
    w->linked = true;
}

static void wake_all(struct lentry *e, int result, struct weir_cache_obj *fill,
                     void (*ref)(struct weir_cache_obj *))
{
    struct weir_cache_waiter *w = e->waiters;
    e->waiters = NULL;
    while (w != NULL) {
        struct weir_cache_waiter *n = w->next;
        w->prev = w->next = NULL;
        w->linked = false;
        w->result = result;
        if (fill != NULL && ref != NULL && w->obj == NULL) {
            ref(fill);
            w->obj = fill;
        }
        w->wake(w);
        w = n;
    }
}

enum weir__clock_verdict weir__clock_acquire(struct weir__clock *l, struct weir_iov key,
                                             uint64_t hash, uint64_t now_ms, uint32_t timeout_ms,
                                             struct weir_cache_waiter *w, uint64_t *token,
                                             uint64_t *deadline_ms)
{
    struct lshard *sh = lshard_of(l, hash);
    enum weir__clock_verdict v;
    pthread_mutex_lock(&sh->mu);
    struct lentry *e = find(sh, key, hash);
    if (e != NULL && e->kind == LE_PASS) {
        if (now_ms < e->deadline_ms) {
            pthread_mutex_unlock(&sh->mu);
            return WEIR_CLOCK_PASS;
        }
        remove_entry(sh, e);
        e = NULL;
    }
    if (e != NULL && now_ms < e->deadline_ms && w == NULL) {
        v = WEIR_CLOCK_BUSY; /* a try: nothing registered */
    } else if (e != NULL && now_ms < e->deadline_ms) {
        add_waiter(e, w);
        *deadline_ms = e->deadline_ms;
        v = WEIR_CLOCK_WAIT;
    } else if (e != NULL) {
        /* The writer outlived lock_timeout: the lock is the caller's now. */
        e->token = sh->next_token++;
        e->deadline_ms = now_ms + timeout_ms;
        *token = e->token;
        v = WEIR_CLOCK_WRITER;
    } else {
        e = weir__calloc(1, sizeof(*e) + key.len);
        if (e == NULL) {
            /* No memory for a lock: fetch without one (correct, only not coalesced). */
            pthread_mutex_unlock(&sh->mu);
            return WEIR_CLOCK_PASS;
        }
        e->hash = hash;
        e->kind = LE_LOCK;
        e->key_len = key.len;
        memcpy(e->key, key.base, key.len);
        e->token = sh->next_token++;
        e->deadline_ms = now_ms + timeout_ms;
        e->hnext = *lbucket(sh, hash);
        *lbucket(sh, hash) = e;
        *token = e->token;
        v = WEIR_CLOCK_WRITER;
    }
    pthread_mutex_unlock(&sh->mu);
    return v;
}

void weir__clock_release(struct weir__clock *l, struct weir_iov key, uint64_t hash, uint64_t token,
                         enum weir__clock_outcome outcome, uint64_t now_ms,
                         struct weir_cache_obj *fill, void (*ref)(struct weir_cache_obj *))
{
    struct lshard *sh = lshard_of(l, hash);
    pthread_mutex_lock(&sh->mu);
    struct lentry *e = find(sh, key, hash);
    if (e == NULL || e->kind != LE_LOCK || e->token != token) {
        pthread_mutex_unlock(&sh->mu); /* taken over meanwhile: not ours to release */
        return;
    }
    wake_all(e, (int)outcome,
             outcome == WEIR_CLOCK_FILLING || outcome == WEIR_CLOCK_STALE ? fill : NULL, ref);
    if (outcome != WEIR_CLOCK_UNCACHEABLE) { /* FILLING, FAILED, STALE: the lock goes */
        remove_entry(sh, e);
        pthread_mutex_unlock(&sh->mu);
        return;
    }
    /* The lock becomes a hit-for-pass mark, the oldest mark going when there are too many. */
    e->kind = LE_PASS;
    e->deadline_ms = now_ms + WEIR_CACHE_PASS_MS;
    e->pprev = sh->pass_new;
    e->pnext = NULL;
    if (sh->pass_new != NULL) {
        sh->pass_new->pnext = e;
    } else {
        sh->pass_old = e;
    }
    sh->pass_new = e;
    sh->npass++;
    if (sh->npass > WEIR_CACHE_PASS_MAX / WEIR_CACHE_LOCK_SHARDS) {
        remove_entry(sh, sh->pass_old);
    }
    pthread_mutex_unlock(&sh->mu);
}

void weir__clock_unwait(struct weir__clock *l, uint64_t hash, struct weir_cache_waiter *w)
{
    struct lshard *sh = lshard_of(l, hash);
    pthread_mutex_lock(&sh->mu);
    if (w->linked) {
        if (w->prev != NULL) {
            w->prev->next = w->next;
        } else {
            /* the head of some entry's list: find it among this hash's entries */
            for (struct lentry *e = *lbucket(sh, hash); e != NULL; e = e->hnext) {
                if (e->waiters == w) {
                    e->waiters = w->next;
                    break;
                }
            }
        }
        if (w->next != NULL) {
            w->next->prev = w->prev;
        }
        w->prev = w->next = NULL;
        w->linked = false;
    }
    pthread_mutex_unlock(&sh->mu);
}

void weir__clock_forget(struct weir__clock *l, struct weir_iov key, uint64_t hash)
{
    struct lshard *sh = lshard_of(l, hash);
    pthread_mutex_lock(&sh->mu);
    struct lentry *e = find(sh, key, hash);
    if (e != NULL && e->kind == LE_PASS) {
        remove_entry(sh, e);
    }
    pthread_mutex_unlock(&sh->mu);
}
