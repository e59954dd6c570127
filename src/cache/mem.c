/*
 * The built-in cache storage: objects in memory, bounded in bytes.
 *
 * The key space is split into shards by hash, each with its own mutex, hash index, eviction
 * queues and byte budget (capacity / shards), so no lookup takes a lock every worker shares.
 * The shard count is chosen so that a shard holds at least 8 of the largest objects; a small
 * zone is one shard, which is also what eviction quality asks for.
 *
 * Eviction and admission follow TinyUFO: two FIFO queues per shard, a small one (10 % of the
 * bytes) where new objects start and a main one. Each hit counts a use (capped at 3). When a
 * shard is over budget it evicts from the small queue while that holds more than its share:
 * an object used more than once since it came in moves to main, one used at most once goes.
 * Otherwise from main: an object with uses left is put back at the head with one use less,
 * one without goes. So one pass over cold keys only ever churns the small queue. A TinyLFU
 * count-min estimate of each key's recent admissions guards the door: when admitting a new
 * object would evict exactly one other whose estimate is higher, the other stays and the new
 * one is refused.
 *
 * Objects are reference counted: the index holds one reference, every reader and the writer
 * one each. Eviction and purge only drop the index's; the memory goes when the last reader
 * lets go. A fill is readable while it grows: chunks are linked and the body length
 * published with release stores, so readers on other threads read without the lock, and
 * wait (registered under the shard's mutex) only when they have caught up.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "cache/cache_int.h"
#include "core/alloc.h"
#include "core/assert.h"
#include "weir/error.h"

#define MEM_MAX_SHARDS    16u
#define MEM_SMALL_PERCENT 10u
#define MEM_USES_CAP      3u
#define MEM_CHUNK_MIN     (4u << 10)
#define MEM_CHUNK_MAX     (256u << 10)
#define MEM_BUCKETS_MIN   256u
#define MEM_SKETCH_ROWS   4u
#define MEM_SKETCH_MIN    1024u
#define MEM_SKETCH_MAX    (1u << 22)
/* What an object costs beyond its key, metadata and body (its struct, list links). */
#define MEM_OBJ_OVERHEAD ((uint64_t)sizeof(struct mobj) + 64u)

enum mobj_state { MOBJ_FILLING = 0, MOBJ_COMPLETE, MOBJ_ABORTED };
enum mobj_queue { Q_NONE = 0, Q_SMALL, Q_MAIN };

struct mchunk {
    struct mchunk *_Atomic next;
    size_t cap;
    char data[];
};

struct mshard;

struct mobj {
    struct mobj *hnext;         /* index chain */
    struct mobj *qprev, *qnext; /* queue */
    struct mshard *sh;
    uint64_t hash;
    _Atomic uint32_t refs;
    uint8_t queue;        /* enum mobj_queue, under the shard's mutex */
    uint8_t uses;         /* under the shard's mutex */
    uint8_t freq;         /* its TinyLFU estimate when its fill began */
    bool indexed;         /* in the index (holds a reference) */
    _Atomic int state;    /* enum mobj_state */
    _Atomic uint64_t len; /* body bytes published */
    uint64_t expect;      /* the announced length, or UINT64_MAX */
    uint64_t charge;      /* bytes counted against the shard while indexed */
    uint64_t alloc;       /* bytes allocated (the zone's "held") */
    struct mchunk *head;  /* first chunk (readers start here) */
    struct mchunk *tail;  /* the writer's */
    size_t tail_used;
    char *meta; /* under the shard's mutex (update_meta swaps it) */
    size_t meta_len;
    struct weir_cache_waiter *waiters; /* readers caught up with the fill (shard mutex) */
    _Atomic uint32_t nwaiters;
    size_t key_len;
    char key[];
};

struct mqueue {
    struct mobj *head; /* sentinel (allocated): head->qnext is the newest, ->qprev the oldest */
    uint64_t weight;
};

struct memstore;

struct mshard {
    pthread_mutex_t mu;
    struct memstore *m;
    struct mobj **buckets;
    uint32_t nbuckets; /* a power of two */
    uint64_t nobj;     /* indexed */
    uint64_t limit;    /* byte budget */
    uint64_t weight;   /* bytes of indexed objects, filling ones included */
    struct mqueue small, main;
    /* TinyLFU: rows of 8-bit saturating counters, halved every `window` increments */
    uint8_t *sketch;
    uint32_t smask;
    uint32_t window, incs;
    uint64_t seed;
    struct weir_cache_stats st; /* this shard's counters (capacity, held: zone-wide) */
    char pad[64];
};

struct memstore {
    struct weir_cache_storage base;
    uint64_t capacity;
    uint64_t max_object;
    unsigned nshards;
    _Atomic uint64_t held;
    struct mshard *shards;
};

static struct memstore *MS(struct weir_cache_storage *st)
{
    return (struct memstore *)st;
}

static struct mshard *shard_of(struct memstore *m, uint64_t hash)
{
    /* The high bits choose the shard, the low bits the bucket. */
    return &m->shards[(hash >> 56) % m->nshards];
}

/* ---- TinyLFU ---- */

static uint32_t mix32(uint64_t h, unsigned row)
{
    h ^= (uint64_t)(row + 1) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (uint32_t)h;
}

static uint32_t sketch_get(const struct mshard *sh, uint64_t hash)
{
    uint32_t m = 255;
    for (unsigned r = 0; r < MEM_SKETCH_ROWS; r++) {
        uint8_t v =
            sh->sketch[(size_t)r * (sh->smask + 1u) + (mix32(hash ^ sh->seed, r) & sh->smask)];
        m = v < m ? v : m;
    }
    return m;
}

static uint32_t sketch_incr(struct mshard *sh, uint64_t hash)
{
    if (++sh->incs >= sh->window) {
        /* Age every counter: recent admissions weigh more than old ones. */
        size_t n = (size_t)MEM_SKETCH_ROWS * (sh->smask + 1u);
        for (size_t i = 0; i < n; i++) {
            sh->sketch[i] >>= 1;
        }
        sh->incs = 0;
    }
    uint32_t m = 255;
    for (unsigned r = 0; r < MEM_SKETCH_ROWS; r++) {
        uint8_t *c =
            &sh->sketch[(size_t)r * (sh->smask + 1u) + (mix32(hash ^ sh->seed, r) & sh->smask)];
        if (*c < 255) {
            (*c)++;
        }
        m = *c < m ? *c : m;
    }
    return m;
}

/* ---- objects ---- */

static void obj_free(struct mobj *o)
{
    weir__alloc_released((size_t)o->alloc);
    struct mchunk *c = o->head;
    while (c != NULL) {
        struct mchunk *n = atomic_load_explicit(&c->next, memory_order_relaxed);
        weir__free(c);
        c = n;
    }
    weir__free(o->meta);
    weir__free(o);
}

static void obj_unref(struct memstore *m, struct mobj *o)
{
    if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1) {
        atomic_fetch_sub_explicit(&m->held, o->alloc, memory_order_relaxed);
        obj_free(o);
    }
}

static void q_unlink(struct mshard *sh, struct mobj *o)
{
    if (o->queue == Q_NONE) {
        return;
    }
    struct mqueue *q = o->queue == Q_SMALL ? &sh->small : &sh->main;
    o->qprev->qnext = o->qnext;
    o->qnext->qprev = o->qprev;
    o->qprev = o->qnext = NULL;
    q->weight -= o->charge;
    o->queue = Q_NONE;
}

static void q_push(struct mshard *sh, struct mobj *o, enum mobj_queue which)
{
    struct mqueue *q = which == Q_SMALL ? &sh->small : &sh->main;
    o->qnext = q->head->qnext;
    o->qprev = q->head;
    q->head->qnext->qprev = o;
    q->head->qnext = o;
    q->weight += o->charge;
    o->queue = (uint8_t)which;
}

static struct mobj **bucket(struct mshard *sh, uint64_t hash)
{
    return &sh->buckets[hash & (sh->nbuckets - 1u)];
}

static bool key_is(const struct mobj *o, uint64_t hash, struct weir_iov key)
{
    return o->hash == hash && o->key_len == key.len && memcmp(o->key, key.base, key.len) == 0;
}

/* key's object in the shard's index (its mutex held), or NULL. */
static struct mobj *find(struct mshard *sh, struct weir_iov key, uint64_t hash)
{
    for (struct mobj *o = *bucket(sh, hash); o != NULL; o = o->hnext) {
        if (key_is(o, hash, key)) {
            return o;
        }
    }
    return NULL;
}

/* Removes o from the index and its queue; the caller drops the index's reference. */
static void unindex(struct mshard *sh, struct mobj *o)
{
    WEIR_ASSERT(o->indexed);
    for (struct mobj **pp = bucket(sh, o->hash); *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == o) {
            *pp = o->hnext;
            break;
        }
    }
    o->hnext = NULL;
    q_unlink(sh, o);
    o->indexed = false;
    sh->nobj--;
    sh->weight -= o->charge;
    sh->st.objects--;
    sh->st.bytes -= o->charge;
}

static void grow_index(struct mshard *sh)
{
    if (sh->nobj < (uint64_t)sh->nbuckets * 2u || sh->nbuckets >= (1u << 30)) {
        return;
    }
    uint32_t n = sh->nbuckets * 2u;
    // NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers
    struct mobj **b = weir__calloc(n, sizeof(*b));
    if (b == NULL) {
        return; /* longer chains, still correct */
    }
    for (uint32_t i = 0; i < sh->nbuckets; i++) {
        struct mobj *o = sh->buckets[i];
        while (o != NULL) {
            struct mobj *next = o->hnext;
            o->hnext = b[o->hash & (n - 1u)];
            b[o->hash & (n - 1u)] = o;
            o = next;
        }
    }
    weir__free(sh->buckets);
    sh->buckets = b;
    sh->nbuckets = n;
}

/* Evicts one object (small queue first while it holds more than its share). */
static struct mobj *evict_one(struct mshard *sh)
{
    for (;;) {
        bool from_small = sh->small.weight > sh->limit * MEM_SMALL_PERCENT / 100u ||
                          sh->main.head->qprev == sh->main.head;
        struct mqueue *q = from_small ? &sh->small : &sh->main;
        struct mobj *o = q->head->qprev;
        if (o == q->head) {
            return NULL; /* both empty: only fills hold the bytes */
        }
        if (from_small) {
            q_unlink(sh, o);
            if (o->uses > 1) {
                o->uses = 0;
                q_push(sh, o, Q_MAIN);
                continue;
            }
            return o;
        }
        if (o->uses > 0) {
            o->uses--;
            q_unlink(sh, o);
            q_push(sh, o, Q_MAIN);
            continue;
        }
        q_unlink(sh, o);
        return o;
    }
}

/*
 * Evicts until the shard is within its budget. With `incoming` (a fill just completed, in the
 * small queue) and exactly one victim, TinyLFU decides which of the two stays. The victims'
 * index references go to *dead (dropped by the caller outside the mutex).
 */
static void evict_to_limit(struct mshard *sh, struct mobj *incoming, uint32_t incoming_freq,
                           struct mobj **dead, bool *refused)
{
    struct mobj *victims = NULL;
    unsigned nvictims = 0;
    uint64_t freed = 0; /* the victims leave sh->weight only when unindexed, below */
    while (sh->weight - freed > sh->limit) {
        struct mobj *v = evict_one(sh);
        if (v == NULL) {
            break;
        }
        freed += v->charge;
        nvictims++;
        v->qnext = victims; /* queue links are free now: a list of victims */
        victims = v;
        if (v == incoming) {
            break;
        }
    }
    if (incoming != NULL && nvictims == 1 && victims != incoming &&
        sketch_get(sh, victims->hash) > incoming_freq) {
        /* The one it would push out is asked for more often: it stays, the new one goes. */
        struct mobj *v = victims;
        v->qnext = NULL;
        v->uses = 0; /* back as a newcomer, as TinyUFO re-admits it */
        q_push(sh, v, Q_SMALL);
        q_unlink(sh, incoming);
        victims = incoming;
        incoming->qnext = NULL;
        *refused = true;
    }
    while (victims != NULL) {
        struct mobj *v = victims;
        victims = v->qnext;
        v->qnext = NULL;
        if (v == incoming) {
            *refused = true;
        } else {
            sh->st.evictions++;
        }
        unindex(sh, v);
        v->hnext = *dead;
        *dead = v;
    }
}

static void drop_dead(struct memstore *m, struct mobj *dead)
{
    while (dead != NULL) {
        struct mobj *n = dead->hnext;
        dead->hnext = NULL;
        obj_unref(m, dead);
        dead = n;
    }
}

/* ---- the interface ---- */

static struct weir_cache_obj *mem_lookup(struct weir_cache_storage *st, struct weir_iov key,
                                         uint64_t hash, void *(*alloc)(void *, size_t), void *arg,
                                         struct weir_iov *meta)
{
    struct memstore *m = MS(st);
    struct mshard *sh = shard_of(m, hash);
    *meta = (struct weir_iov){NULL, 0};
    pthread_mutex_lock(&sh->mu);
    struct mobj *found = find(sh, key, hash);
    if (found != NULL) {
        char *copy = alloc(arg, found->meta_len ? found->meta_len : 1);
        if (copy == NULL) {
            found = NULL;
        } else {
            memcpy(copy, found->meta, found->meta_len);
            *meta = (struct weir_iov){copy, found->meta_len};
            atomic_fetch_add_explicit(&found->refs, 1, memory_order_relaxed);
            if (found->uses < MEM_USES_CAP) {
                found->uses++;
            }
        }
    }
    if (found != NULL) {
        sh->st.hits++;
    } else {
        sh->st.misses++;
    }
    pthread_mutex_unlock(&sh->mu);
    return (struct weir_cache_obj *)found;
}

static int mem_begin_fill(struct weir_cache_storage *st, struct weir_iov key, uint64_t hash,
                          struct weir_iov meta, uint64_t len, struct weir_cache_obj **out)
{
    struct memstore *m = MS(st);
    *out = NULL;
    uint64_t fixed = MEM_OBJ_OVERHEAD + key.len + meta.len;
    /* A known length is stored in chunks of up to MEM_CHUNK_MAX, each with its header. */
    if (fixed > m->max_object ||
        (len != UINT64_MAX &&
         (len > m->max_object - fixed ||
          len + (len + MEM_CHUNK_MAX - 1u) / MEM_CHUNK_MAX * sizeof(struct mchunk) >
              m->max_object - fixed))) {
        struct mshard *sh = shard_of(m, hash);
        pthread_mutex_lock(&sh->mu);
        sh->st.too_large++;
        pthread_mutex_unlock(&sh->mu);
        return WEIR_ELIMIT;
    }
    struct mobj *o = weir__calloc(1, sizeof(*o) + key.len);
    if (o == NULL) {
        return WEIR_ENOMEM;
    }
    o->meta = weir__malloc(meta.len ? meta.len : 1);
    if (o->meta == NULL) {
        weir__free(o);
        return WEIR_ENOMEM;
    }
    if (meta.len > 0) { /* an empty iov's base may be NULL */
        memcpy(o->meta, meta.base, meta.len);
    }
    o->meta_len = meta.len;
    memcpy(o->key, key.base, key.len);
    o->key_len = key.len;
    o->hash = hash;
    o->expect = len;
    o->charge = fixed;
    o->alloc = fixed;
    atomic_init(&o->refs, 2); /* the index's and the writer's */
    atomic_init(&o->state, MOBJ_FILLING);
    atomic_init(&o->len, 0);
    struct mshard *sh = shard_of(m, hash);
    o->sh = sh;
    atomic_fetch_add_explicit(&m->held, o->alloc, memory_order_relaxed);
    struct mobj *dead = NULL;
    pthread_mutex_lock(&sh->mu);
    struct mobj *p = find(sh, key, hash);
    if (p != NULL) {
        unindex(sh, p); /* replaced: its readers keep it */
        p->hnext = dead;
        dead = p;
    }
    o->hnext = *bucket(sh, hash);
    *bucket(sh, hash) = o;
    o->indexed = true;
    if (len != UINT64_MAX) {
        /* A known length is charged whole now, so admission weighs the object it will be. */
        uint64_t chunks = (len + MEM_CHUNK_MAX - 1) / MEM_CHUNK_MAX;
        o->charge += len + chunks * sizeof(struct mchunk);
    }
    sh->nobj++;
    sh->weight += o->charge;
    sh->st.objects++;
    sh->st.bytes += o->charge;
    grow_index(sh);
    /* TinyUFO: the newcomer starts in the small queue and, when room must be made, TinyLFU
       decides between it and a lone victim. A fill is evictable like any object: its readers
       keep their references and read it to the end. */
    uint32_t freq = sketch_incr(sh, hash);
    o->freq = (uint8_t)(freq > 255 ? 255 : freq);
    q_push(sh, o, Q_SMALL);
    bool refused = false;
    evict_to_limit(sh, o, freq, &dead, &refused);
    if (refused) {
        sh->st.rejected++;
    }
    pthread_mutex_unlock(&sh->mu);
    drop_dead(m, dead);
    *out = (struct weir_cache_obj *)o;
    return 0;
}

/* Wakes every reader waiting on o (the shard's mutex held). */
static void wake_readers(struct mobj *o)
{
    struct weir_cache_waiter *w = o->waiters;
    o->waiters = NULL;
    atomic_store_explicit(&o->nwaiters, 0, memory_order_relaxed);
    while (w != NULL) {
        struct weir_cache_waiter *n = w->next;
        w->prev = w->next = NULL;
        w->linked = false;
        w->wake(w);
        w = n;
    }
}

static void publish(struct mobj *o)
{
    /* seq_cst pairs with the waiter's registration in mem_wait: one of the two sees the other */
    if (atomic_load_explicit(&o->nwaiters, memory_order_seq_cst) == 0) {
        return;
    }
    pthread_mutex_lock(&o->sh->mu);
    wake_readers(o);
    pthread_mutex_unlock(&o->sh->mu);
}

/* The next chunk's size: the announced length (up to MEM_CHUNK_MAX), else doubling from
   MEM_CHUNK_MIN so small bodies stay small. */
static size_t chunk_cap(const struct mobj *o, uint64_t have, size_t want)
{
    size_t cap;
    if (o->expect != UINT64_MAX) {
        uint64_t left = o->expect - have;
        cap = left > MEM_CHUNK_MAX ? MEM_CHUNK_MAX : (size_t)left;
    } else {
        cap = o->tail == NULL ? MEM_CHUNK_MIN : o->tail->cap * 2u;
        cap = cap > MEM_CHUNK_MAX ? MEM_CHUNK_MAX : cap;
        if (cap < want) {
            cap = want > MEM_CHUNK_MAX ? MEM_CHUNK_MAX : want;
        }
    }
    return cap;
}

static int mem_append(struct weir_cache_obj *h, struct weir_iov data)
{
    struct mobj *o = (struct mobj *)h;
    struct mshard *sh = o->sh;
    struct memstore *m = sh->m;
    WEIR_ASSERT(atomic_load_explicit(&o->state, memory_order_relaxed) == MOBJ_FILLING);
    uint64_t have = atomic_load_explicit(&o->len, memory_order_relaxed);
    if (o->expect != UINT64_MAX && data.len > o->expect - have) {
        return WEIR_EINVAL; /* more than announced */
    }
    while (data.len > 0) {
        if (o->tail == NULL || o->tail_used == o->tail->cap) {
            size_t cap = chunk_cap(o, have, data.len);
            /* The last chunk gets what max_object leaves: doubling must not refuse early. */
            uint64_t room = m->max_object - o->alloc;
            if (room > sizeof(struct mchunk) && cap > room - sizeof(struct mchunk)) {
                cap = (size_t)(room - sizeof(struct mchunk));
            }
            uint64_t add = sizeof(struct mchunk) + cap;
            if (o->alloc + add > m->max_object) {
                pthread_mutex_lock(&sh->mu);
                sh->st.too_large++;
                pthread_mutex_unlock(&sh->mu);
                return WEIR_ELIMIT;
            }
            struct mchunk *c = weir__malloc(add);
            if (c == NULL) {
                return WEIR_ENOMEM;
            }
            atomic_init(&c->next, NULL);
            c->cap = cap;
            atomic_fetch_add_explicit(&m->held, add, memory_order_relaxed);
            struct mobj *dead = NULL;
            pthread_mutex_lock(&sh->mu);
            o->alloc += add;
            if (o->indexed && o->expect == UINT64_MAX) {
                /* unknown length: charged as it grows (a known one was charged whole) */
                o->charge += add;
                sh->weight += add;
                sh->st.bytes += add;
                if (o->queue != Q_NONE) {
                    (o->queue == Q_SMALL ? &sh->small : &sh->main)->weight += add;
                }
                bool refused = false;
                evict_to_limit(sh, o, o->freq, &dead, &refused);
                if (refused) {
                    sh->st.rejected++;
                }
            }
            pthread_mutex_unlock(&sh->mu);
            drop_dead(m, dead);
            o->tail_used = 0;
            if (o->tail == NULL) {
                o->head = c; /* read by readers only once len > 0 (published below) */
            } else {
                atomic_store_explicit(&o->tail->next, c, memory_order_release);
            }
            o->tail = c;
        }
        size_t n = o->tail->cap - o->tail_used;
        n = n < data.len ? n : data.len;
        memcpy(o->tail->data + o->tail_used, data.base, n);
        o->tail_used += n;
        data.base += n;
        data.len -= n;
        have += n;
    }
    /* seq_cst: pairs with a reader's registration (mem_wait) */
    atomic_store_explicit(&o->len, have, memory_order_seq_cst);
    publish(o);
    return 0;
}

static int mem_finish(struct weir_cache_obj *h)
{
    struct mobj *o = (struct mobj *)h;
    struct mshard *sh = o->sh;
    struct memstore *m = sh->m;
    uint64_t have = atomic_load_explicit(&o->len, memory_order_relaxed);
    if (o->expect != UINT64_MAX && have != o->expect) {
        return WEIR_EINVAL; /* short: the caller abandons it */
    }
    struct mobj *dead = NULL;
    pthread_mutex_lock(&sh->mu);
    atomic_store_explicit(&o->state, MOBJ_COMPLETE, memory_order_seq_cst);
    wake_readers(o);
    if (o->indexed) {
        sh->st.inserts++; /* it kept its place through the fill */
    }
    pthread_mutex_unlock(&sh->mu);
    drop_dead(m, dead);
    return 0;
}

static void mem_abandon(struct weir_cache_obj *h)
{
    struct mobj *o = (struct mobj *)h;
    struct mshard *sh = o->sh;
    bool drop = false;
    pthread_mutex_lock(&sh->mu);
    atomic_store_explicit(&o->state, MOBJ_ABORTED, memory_order_seq_cst);
    wake_readers(o);
    if (o->indexed) {
        unindex(sh, o);
        drop = true;
    }
    pthread_mutex_unlock(&sh->mu);
    if (drop) {
        obj_unref(sh->m, o);
    }
}

static int mem_purge(struct weir_cache_storage *st, struct weir_iov key, uint64_t hash)
{
    struct memstore *m = MS(st);
    struct mshard *sh = shard_of(m, hash);
    pthread_mutex_lock(&sh->mu);
    struct mobj *found = find(sh, key, hash);
    if (found != NULL) {
        unindex(sh, found);
        sh->st.purges++;
    }
    pthread_mutex_unlock(&sh->mu);
    if (found != NULL) {
        obj_unref(m, found);
    }
    return found != NULL;
}

static int mem_update_meta(struct weir_cache_storage *st, struct weir_cache_obj *h,
                           struct weir_iov meta)
{
    struct memstore *m = MS(st);
    struct mobj *o = (struct mobj *)h;
    struct mshard *sh = o->sh;
    char *copy = weir__malloc(meta.len ? meta.len : 1);
    if (copy == NULL) {
        return WEIR_ENOMEM;
    }
    if (meta.len > 0) { /* an empty iov's base may be NULL */
        memcpy(copy, meta.base, meta.len);
    }
    struct mobj *dead = NULL;
    pthread_mutex_lock(&sh->mu);
    char *old = o->meta;
    uint64_t was = o->meta_len;
    if (o->alloc - was + meta.len > m->max_object) {
        /* a 304's fields made the object larger than any object may be */
        sh->st.too_large++;
        pthread_mutex_unlock(&sh->mu);
        weir__free(copy);
        return WEIR_ELIMIT;
    }
    o->meta = copy;
    o->meta_len = meta.len;
    /* The charge, the allocation and held follow the metadata's size. */
    o->alloc = o->alloc - was + meta.len;
    if (meta.len >= was) {
        atomic_fetch_add_explicit(&m->held, meta.len - was, memory_order_relaxed);
    } else {
        atomic_fetch_sub_explicit(&m->held, was - meta.len, memory_order_relaxed);
    }
    if (o->indexed) {
        o->charge = o->charge - was + meta.len;
        sh->weight = sh->weight - was + meta.len;
        sh->st.bytes = sh->st.bytes - was + meta.len;
        if (o->queue != Q_NONE) {
            struct mqueue *q = o->queue == Q_SMALL ? &sh->small : &sh->main;
            q->weight = q->weight - was + meta.len;
        }
        evict_to_limit(sh, NULL, 0, &dead, &(bool){false}); /* it may have grown */
    }
    pthread_mutex_unlock(&sh->mu);
    weir__free(old);
    drop_dead(sh->m, dead);
    return 0;
}

static enum weir_cache_read mem_read(struct weir_cache_obj *h, struct weir_cache_cursor *c,
                                     struct weir_iov *out)
{
    struct mobj *o = (struct mobj *)h;
    *out = (struct weir_iov){NULL, 0};
    uint64_t len = atomic_load_explicit(&o->len, memory_order_acquire);
    if (c->off >= len) {
        int state = atomic_load_explicit(&o->state, memory_order_acquire);
        /* The state is stored after the last length: read the length again to be sure. */
        len = atomic_load_explicit(&o->len, memory_order_acquire);
        if (c->off < len) {
            return mem_read(h, c, out);
        }
        return state == MOBJ_COMPLETE  ? WEIR_CACHE_READ_END
               : state == MOBJ_ABORTED ? WEIR_CACHE_READ_ERROR
                                       : WEIR_CACHE_READ_WAIT;
    }
    struct mchunk *ch = c->at;
    if (ch == NULL) {
        ch = o->head;
        c->at_start = 0;
    }
    while (c->off >= c->at_start + ch->cap) {
        c->at_start += ch->cap;
        ch = atomic_load_explicit(&ch->next, memory_order_acquire);
        WEIR_ASSERT(ch != NULL);
    }
    c->at = ch;
    uint64_t end = c->at_start + ch->cap;
    end = end < len ? end : len;
    *out = (struct weir_iov){ch->data + (c->off - c->at_start), (size_t)(end - c->off)};
    return WEIR_CACHE_READ_DATA;
}

static bool mem_wait(struct weir_cache_obj *h, uint64_t off, struct weir_cache_waiter *w)
{
    struct mobj *o = (struct mobj *)h;
    struct mshard *sh = o->sh;
    bool registered = false;
    pthread_mutex_lock(&sh->mu);
    atomic_fetch_add_explicit(&o->nwaiters, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&o->len, memory_order_seq_cst) <= off &&
        atomic_load_explicit(&o->state, memory_order_seq_cst) == MOBJ_FILLING) {
        w->prev = NULL;
        w->next = o->waiters;
        if (o->waiters != NULL) {
            o->waiters->prev = w;
        }
        o->waiters = w;
        w->linked = true;
        registered = true;
    } else {
        atomic_fetch_sub_explicit(&o->nwaiters, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&sh->mu);
    return registered;
}

static void mem_unwait(struct weir_cache_obj *h, struct weir_cache_waiter *w)
{
    struct mobj *o = (struct mobj *)h;
    struct mshard *sh = o->sh;
    pthread_mutex_lock(&sh->mu);
    if (w->linked) {
        if (w->prev != NULL) {
            w->prev->next = w->next;
        } else {
            o->waiters = w->next;
        }
        if (w->next != NULL) {
            w->next->prev = w->prev;
        }
        w->prev = w->next = NULL;
        w->linked = false;
        atomic_fetch_sub_explicit(&o->nwaiters, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&sh->mu);
}

static uint64_t mem_length(struct weir_cache_obj *h, bool *complete, bool *failed)
{
    struct mobj *o = (struct mobj *)h;
    int state = atomic_load_explicit(&o->state, memory_order_acquire);
    *complete = state == MOBJ_COMPLETE;
    *failed = state == MOBJ_ABORTED;
    return atomic_load_explicit(&o->len, memory_order_acquire);
}

static int mem_meta(struct weir_cache_obj *h, void *(*alloc)(void *, size_t), void *arg,
                    struct weir_iov *meta)
{
    struct mobj *o = (struct mobj *)h;
    int rc = 0;
    pthread_mutex_lock(&o->sh->mu);
    char *copy = alloc(arg, o->meta_len ? o->meta_len : 1);
    if (copy == NULL) {
        rc = WEIR_ENOMEM;
    } else {
        if (o->meta_len > 0) {
            memcpy(copy, o->meta, o->meta_len);
        }
        *meta = (struct weir_iov){copy, o->meta_len};
    }
    pthread_mutex_unlock(&o->sh->mu);
    return rc;
}

static void mem_ref(struct weir_cache_obj *h)
{
    atomic_fetch_add_explicit(&((struct mobj *)h)->refs, 1, memory_order_relaxed);
}

static void mem_release(struct weir_cache_obj *h)
{
    struct mobj *o = (struct mobj *)h;
    obj_unref(o->sh->m, o);
}

static void mem_free(struct weir_cache_storage *st)
{
    struct memstore *m = MS(st);
    if (m == NULL) {
        return;
    }
    for (unsigned i = 0; i < m->nshards; i++) {
        struct mshard *sh = &m->shards[i];
        for (uint32_t b = 0; b < sh->nbuckets; b++) {
            struct mobj *o = sh->buckets[b];
            while (o != NULL) {
                struct mobj *n = o->hnext;
                o->indexed = false;
                o->hnext = NULL;
                obj_unref(m, o);
                o = n;
            }
        }
        weir__free(sh->buckets);
        weir__free(sh->sketch);
        weir__free(sh->small.head);
        weir__free(sh->main.head);
        pthread_mutex_destroy(&sh->mu);
    }
    weir__free(m->shards);
    weir__free(m);
}

static const struct weir_cache_storage_ops mem_ops = {
    .name = "memory",
    .lookup = mem_lookup,
    .begin_fill = mem_begin_fill,
    .append = mem_append,
    .finish = mem_finish,
    .abandon = mem_abandon,
    .purge = mem_purge,
    .update_meta = mem_update_meta,
    .read = mem_read,
    .wait = mem_wait,
    .unwait = mem_unwait,
    .length = mem_length,
    .meta = mem_meta,
    .ref = mem_ref,
    .release = mem_release,
    .free = mem_free,
};

static uint32_t pow2_at_least(uint64_t n, uint32_t lo, uint32_t hi)
{
    uint32_t p = lo;
    while (p < n && p < hi) {
        p *= 2u;
    }
    return p;
}

int weir__cache_mem_new(uint64_t capacity, uint64_t max_object, struct weir_cache_storage **out)
{
    *out = NULL;
    if (capacity == 0 || max_object == 0 || max_object > capacity) {
        return WEIR_EINVAL;
    }
    struct memstore *m = weir__calloc(1, sizeof(*m));
    if (m == NULL) {
        return WEIR_ENOMEM;
    }
    m->base.ops = &mem_ops;
    m->capacity = capacity;
    m->max_object = max_object;
    unsigned n = 1;
    while (n < MEM_MAX_SHARDS && capacity / (n * 2u) >= max_object * 8u) {
        n *= 2u;
    }
    m->nshards = n;
    atomic_init(&m->held, 0);
    m->shards = weir__calloc(n, sizeof(*m->shards));
    if (m->shards == NULL) {
        weir__free(m);
        return WEIR_ENOMEM;
    }
    /* Four counters per row for each object a shard may hold if they average 1 KiB: fewer
       collisions than that cost hit ratio at 10 % and 25 % of the key space (bench). */
    uint32_t width = pow2_at_least(capacity / n / 256u, MEM_SKETCH_MIN, MEM_SKETCH_MAX);
    for (unsigned i = 0; i < n; i++) {
        struct mshard *sh = &m->shards[i];
        sh->m = m;
        sh->limit = capacity / n;
        sh->small.head = weir__calloc(1, sizeof(struct mobj));
        sh->main.head = weir__calloc(1, sizeof(struct mobj));
        if (sh->small.head != NULL && sh->main.head != NULL) {
            sh->small.head->qnext = sh->small.head->qprev = sh->small.head;
            sh->main.head->qnext = sh->main.head->qprev = sh->main.head;
        }
        sh->nbuckets = MEM_BUCKETS_MIN;
        // NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers
        sh->buckets = weir__calloc(sh->nbuckets, sizeof(*sh->buckets));
        sh->smask = width - 1u;
        sh->window = width * 8u;
        sh->seed = (uint64_t)i * 0x2545f4914f6cdd1dull + 0x1234567u;
        sh->sketch = weir__calloc((size_t)MEM_SKETCH_ROWS * width, 1);
        if (pthread_mutex_init(&sh->mu, NULL) != 0 || sh->buckets == NULL || sh->sketch == NULL ||
            sh->small.head == NULL || sh->main.head == NULL) {
            m->nshards = i + 1u;
            if (sh->buckets == NULL) {
                sh->nbuckets = 0;
            }
            mem_free(&m->base);
            return WEIR_ENOMEM;
        }
    }
    *out = &m->base;
    return 0;
}

void weir__cache_mem_stats(struct weir_cache_storage *st, struct weir_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (st == NULL || st->ops != &mem_ops) {
        return;
    }
    struct memstore *m = MS(st);
    out->capacity = m->capacity;
    out->held = atomic_load_explicit(&m->held, memory_order_relaxed);
    for (unsigned i = 0; i < m->nshards; i++) {
        struct mshard *sh = &m->shards[i];
        pthread_mutex_lock(&sh->mu);
        out->bytes += sh->st.bytes;
        out->objects += sh->st.objects;
        out->hits += sh->st.hits;
        out->misses += sh->st.misses;
        out->inserts += sh->st.inserts;
        out->rejected += sh->st.rejected;
        out->evictions += sh->st.evictions;
        out->purges += sh->st.purges;
        out->too_large += sh->st.too_large;
        pthread_mutex_unlock(&sh->mu);
    }
}

unsigned weir__cache_mem_shards(struct weir_cache_storage *st)
{
    return st != NULL && st->ops == &mem_ops ? MS(st)->nshards : 0;
}
