/*
 * The cache's private side: the zone (a storage and a lock table), the built-in memory
 * storage's constructor, and the cache lock that turns a stampede into one fetch.
 */
#ifndef WEIR_CACHE_INT_H
#define WEIR_CACHE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "weir/cache.h"

/** Marks of uncacheable keys the lock remembers per zone (hit-for-pass), oldest dropped. */
#define WEIR_CACHE_PASS_MAX 4096
/** How long a key whose response was not cacheable is fetched without the lock. */
#define WEIR_CACHE_PASS_MS 10000
/** Lock table shards (a power of two). */
#define WEIR_CACHE_LOCK_SHARDS 16

/**
 * The built-in storage: objects in memory, in shards each with its own mutex, index, and
 * S3-FIFO queues under TinyLFU admission (TinyUFO's scheme). capacity and max_object in bytes.
 */
int weir__cache_mem_new(uint64_t capacity, uint64_t max_object, struct weir_cache_storage **out);
/** The memory storage's counters (zeroes for another storage). */
void weir__cache_mem_stats(struct weir_cache_storage *st, struct weir_cache_stats *out);
/** The memory storage's shard count (tests). */
unsigned weir__cache_mem_shards(struct weir_cache_storage *st);

/* ---- the cache lock ---- */

/** What acquiring a key's lock says. */
enum weir__clock_verdict {
    WEIR_CLOCK_WRITER = 0, /* no one fetches the key: the caller does (*token is its turn) */
    WEIR_CLOCK_WAIT,       /* someone does: the waiter is registered until *deadline_ms */
    WEIR_CLOCK_PASS,       /* the key's last response was not cacheable: fetch, no lock */
    WEIR_CLOCK_BUSY,       /* (a try, w NULL) someone fetches the key: nothing registered */
};

/** How a writer lets go of its lock; each waiter's w->result on wake. */
enum weir__clock_outcome {
    WEIR_CLOCK_FILLING = 0, /* the response is being stored: look it up, read the fill */
    WEIR_CLOCK_FAILED,      /* the writer failed: next_writer or fetch_each */
    WEIR_CLOCK_UNCACHEABLE, /* not cacheable: every waiter fetches for itself (pass) */
    WEIR_CLOCK_TIMEOUT,     /* (waiter only) lock_timeout passed */
    WEIR_CLOCK_STALE,       /* the origin failed: serve the handed stale object (stale-if-error) */
    WEIR_CLOCK_VARIED,      /* the response varies (Vary): look up your own variant */
};

struct weir__clock;

int weir__clock_new(struct weir__clock **out);
void weir__clock_free(struct weir__clock *l);
/**
 * Takes key's lock or waits for it at now_ms (monotonic). A lock older than its timeout_ms is
 * taken over (the old writer's release is then ignored). WAIT registers w; with w NULL the
 * call only tries: BUSY instead of WAIT (a background refresh, which never waits).
 */
enum weir__clock_verdict weir__clock_acquire(struct weir__clock *l, struct weir_iov key,
                                             uint64_t hash, uint64_t now_ms, uint32_t timeout_ms,
                                             struct weir_cache_waiter *w, uint64_t *token,
                                             uint64_t *deadline_ms);
/**
 * The writer of turn token lets go with outcome; every waiter is woken. With FILLING, fill is
 * handed to each waiter (w->obj, a reference taken with ref), so waiters read it even if the
 * storage evicts or refuses it before they look.
 */
void weir__clock_release(struct weir__clock *l, struct weir_iov key, uint64_t hash, uint64_t token,
                         enum weir__clock_outcome outcome, uint64_t now_ms,
                         struct weir_cache_obj *fill, void (*ref)(struct weir_cache_obj *));
/** A waiter leaves (its request ended or timed out); harmless when it was woken. */
void weir__clock_unwait(struct weir__clock *l, uint64_t hash, struct weir_cache_waiter *w);
/** Forgets key's hit-for-pass mark (a purge). */
void weir__clock_forget(struct weir__clock *l, struct weir_iov key, uint64_t hash);

struct weir_cache {
    struct weir_cache_storage *st;
    struct weir__clock *lock;
    uint64_t capacity;
    uint64_t max_object;
    uint64_t seed; /* of the key hash */
    _Atomic uint64_t lock_waits;
    _Atomic uint64_t lock_timeouts;
};

/** The hash of a cache key under zone c. */
uint64_t weir__cache_hash(const struct weir_cache *c, struct weir_iov key);

#endif
