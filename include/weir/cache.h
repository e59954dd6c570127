/*
 * The HTTP cache: zones (a storage and a cache lock, bounded in bytes), the policy a request
 * is cached under, and the storage interface other storages implement.
 *
 * A request is cached when a hook before upstream_peer (request_cache_filter, or the router's
 * request_filter) calls weir_session_cache_enable. Then the first request that misses a key
 * becomes its writer and fetches; every other request for the key waits, suspended on the key
 * (no polling, no timer per waiter), and is served from the writer's fill while it streams,
 * on whatever worker thread it runs. See docs/ARCHITECTURE.md, "Cache".
 */
#ifndef WEIR_CACHE_H
#define WEIR_CACHE_H

#include "weir/buf.h"
#include "weir/common.h"

WEIR_BEGIN_DECLS

/* ---- the storage interface ---- */

struct weir_cache_storage;
/** A stored (or filling) object: a reference counted handle the storage defines. */
struct weir_cache_obj;

/**
 * Someone waiting for news of an object or of a key's lock. wake runs on any thread, with the
 * storage's or the lock's own mutex held: it must only hand the waiter on to its own thread
 * (a queue and a wake-up), never call back into the cache. The list fields are the
 * registrar's while registered.
 */
struct weir_cache_waiter {
    void (*wake)(struct weir_cache_waiter *w);
    struct weir_cache_waiter *prev, *next; /**< private */
    bool linked;                           /**< private */
    int result;                            /**< private: the lock's verdict on wake */
    struct weir_cache_obj *obj;            /**< private: the fill handed over on wake */
};

/** A reader's position in an object's body. Start zeroed. */
struct weir_cache_cursor {
    uint64_t off;      /**< body bytes read so far */
    void *at;          /**< private: the storage's place */
    uint64_t at_start; /**< private */
};

enum weir_cache_read {
    WEIR_CACHE_READ_DATA = 0, /**< *out holds the next bytes (valid while the handle is) */
    WEIR_CACHE_READ_WAIT,     /**< the fill has not got that far yet */
    WEIR_CACHE_READ_END,      /**< the whole body has been read */
    WEIR_CACHE_READ_ERROR,    /**< the fill was abandoned: the body will not be complete */
};

/**
 * A storage. Keys are byte strings with a 64-bit hash the caller computed; a storage compares
 * the whole key. Every call may come from any worker thread at once. Metadata is an opaque
 * byte string to the storage (the proxy encodes the response head into it).
 */
struct weir_cache_storage_ops {
    const char *name;
    /**
     * The object stored for key (complete, or still filling: readers follow the fill), with a
     * new reference, or NULL. *meta gets a copy of its metadata made with alloc(arg, len)
     * (the caller's arena), so a later update_meta never changes what a reader holds.
     */
    struct weir_cache_obj *(*lookup)(struct weir_cache_storage *st, struct weir_iov key,
                                     uint64_t hash, void *(*alloc)(void *arg, size_t len),
                                     void *arg, struct weir_iov *meta);
    /**
     * Starts storing key with meta (copied), replacing any object stored for it; lookups find
     * the new object at once. len: the body's length if known (else UINT64_MAX). A new
     * reference in *out: 0, WEIR_ELIMIT (over the storage's object size) or WEIR_ENOMEM.
     */
    int (*begin_fill)(struct weir_cache_storage *st, struct weir_iov key, uint64_t hash,
                      struct weir_iov meta, uint64_t len, struct weir_cache_obj **out);
    /** Appends body bytes to a fill. 0, WEIR_ELIMIT (the object grew too large) or ENOMEM. */
    int (*append)(struct weir_cache_obj *o, struct weir_iov data);
    /** The fill is complete: readers see the end; the object competes for its place. */
    int (*finish)(struct weir_cache_obj *o);
    /** The fill failed: readers see an error, the object is removed. */
    void (*abandon)(struct weir_cache_obj *o);
    /** Removes key's object (readers keep their references). 1 when one was there, 0 if not. */
    int (*purge)(struct weir_cache_storage *st, struct weir_iov key, uint64_t hash);
    /** Replaces o's metadata (a 304 refreshed it). 0 or WEIR_ENOMEM. */
    int (*update_meta)(struct weir_cache_storage *st, struct weir_cache_obj *o,
                       struct weir_iov meta);
    /** The next body bytes at *c (advance it with c->off += n: consume). */
    enum weir_cache_read (*read)(struct weir_cache_obj *o, struct weir_cache_cursor *c,
                                 struct weir_iov *out);
    /**
     * Registers w to be woken when o has bytes past off or ends. false when it already has
     * (nothing registered: read again).
     */
    bool (*wait)(struct weir_cache_obj *o, uint64_t off, struct weir_cache_waiter *w);
    /** Unregisters w (harmless when it was woken already). */
    void (*unwait)(struct weir_cache_obj *o, struct weir_cache_waiter *w);
    /** Body bytes so far; *complete once the fill finished, *failed if it was abandoned. */
    uint64_t (*length)(struct weir_cache_obj *o, bool *complete, bool *failed);
    /** A copy of o's metadata (as lookup makes it). 0 or WEIR_ENOMEM. */
    int (*meta)(struct weir_cache_obj *o, void *(*alloc)(void *arg, size_t len), void *arg,
                struct weir_iov *meta);
    /** Takes another reference (any thread). */
    void (*ref)(struct weir_cache_obj *o);
    /** Drops a reference. */
    void (*release)(struct weir_cache_obj *o);
    /** Frees the storage (no reference may remain). */
    void (*free)(struct weir_cache_storage *st);
};

/** The base every storage's struct begins with. */
struct weir_cache_storage {
    const struct weir_cache_storage_ops *ops;
};

/** What a cache zone has done and holds (sums over its shards; a moment's view). */
struct weir_cache_stats {
    uint64_t capacity;      /**< bytes */
    uint64_t bytes;         /**< bytes of objects in the cache (metadata and keys counted) */
    uint64_t held;          /**< bytes still allocated, including objects evicted while read */
    uint64_t objects;       /**< objects in the cache */
    uint64_t hits;          /**< lookups that found an object */
    uint64_t misses;        /**< lookups that found none */
    uint64_t inserts;       /**< fills completed and admitted */
    uint64_t rejected;      /**< fills completed and refused by admission (TinyLFU) */
    uint64_t evictions;     /**< objects evicted for room */
    uint64_t purges;        /**< objects removed by purge */
    uint64_t too_large;     /**< fills abandoned over max_object */
    uint64_t lock_waits;    /**< requests that waited on another request's fetch */
    uint64_t lock_timeouts; /**< waits that ended at lock_timeout */
};

/* ---- zones ---- */

/** A cache zone: a storage and the cache lock over its keys. */
struct weir_cache;

struct weir_cache_opts {
    uint64_t capacity;   /**< bytes, counting keys and metadata; required */
    uint64_t max_object; /**< the largest object stored (bytes); 0: capacity / 8 */
    /** 0: the built-in sharded memory storage; else the caller's (freed with the zone). */
    struct weir_cache_storage *storage;
};

/**
 * A new zone. 0, WEIR_EINVAL (capacity 0, or below max_object) or WEIR_ENOMEM. A storage the
 * caller gave is the zone's once this succeeds (freed with it); on failure it stays the
 * caller's.
 */
WEIR_EXTERN int weir_cache_new(const struct weir_cache_opts *o, struct weir_cache **out);
/** Frees a zone no request uses any more. NULL is fine. */
WEIR_EXTERN void weir_cache_free(struct weir_cache *c);
WEIR_EXTERN void weir_cache_stats(struct weir_cache *c, struct weir_cache_stats *out);
/** Removes key's object. 1 when there was one, else 0. */
WEIR_EXTERN int weir_cache_purge(struct weir_cache *c, struct weir_iov key);
/** The storage under a zone (for direct use and tests). */
WEIR_EXTERN struct weir_cache_storage *weir_cache_storage(struct weir_cache *c);

/* ---- the policy of a cached request ---- */

/** What the waiters do when the writer fails or its lock times out. */
enum weir_cache_writer_failure {
    WEIR_CACHE_NEXT_WRITER = 0, /**< one of them becomes the writer, the others wait on it */
    WEIR_CACHE_FETCH_EACH,      /**< each fetches for itself, without caching */
};

/* Parts of the default cache key (weir_cache_policy.key). */
#define WEIR_CACHE_KEY_METHOD 0x1u /**< GET (a HEAD is keyed as the GET it is served from) */
#define WEIR_CACHE_KEY_HOST   0x2u
#define WEIR_CACHE_KEY_PATH   0x4u
#define WEIR_CACHE_KEY_QUERY  0x8u
#define WEIR_CACHE_KEY_SCHEME 0x10u
#define WEIR_CACHE_KEY_DEFAULT                                                                     \
    (WEIR_CACHE_KEY_METHOD | WEIR_CACHE_KEY_HOST | WEIR_CACHE_KEY_PATH | WEIR_CACHE_KEY_QUERY)

/** An address block: family 4 or 6, the first `bits` bits of addr (network order). */
struct weir_cidr {
    uint8_t family;
    uint8_t bits;
    uint8_t addr[16];
};

/** Whether sa (IPv4, IPv6, or IPv4-mapped IPv6) is in one of the n blocks. */
WEIR_EXTERN bool weir_cidr_match(const struct weir_cidr *list, size_t n, const void *sa);

/**
 * Parses "ADDR" or "ADDR/BITS" (IPv4 or IPv6) into *out. 0 or WEIR_EINVAL (bits past the
 * address, or bits set in the address past them: "10.1.0.0/8" is refused as a likely typo).
 */
WEIR_EXTERN int weir_cidr_parse(const char *s, struct weir_cidr *out);

struct weir_cache_policy {
    uint32_t key;           /**< WEIR_CACHE_KEY_* parts of the default key */
    uint32_t default_ttl_s; /**< for responses without freshness information; 0: not cached */
    uint32_t lock_timeout_ms;
    uint32_t stale_while_revalidate_s; /**< when the response does not say */
    uint32_t stale_if_error_s;         /**< when the response does not say */
    enum weir_cache_writer_failure on_writer_failure;
    /** Serve and store requests with Authorization as if they had none (default: not). */
    bool authorized;
    /** Serve and store requests with Cookie, responses with Set-Cookie (default: not). */
    bool cookies;
    /**
     * Clients that may remove a key with a PURGE request for its URL (answered 200, or 404
     * when it was not stored; 403 from anyone else). None: PURGE is passed like any method.
     */
    const struct weir_cidr *purge_from;
    size_t npurge_from;
};

/**
 * What response_cache_filter gets, preset from RFC 9111 and the policy, and may change: whether
 * the response is stored, and for how long it is fresh and may be served stale.
 */
struct weir_cacheability {
    bool cacheable;
    uint32_t ttl_s; /**< freshness lifetime from now (seconds) */
    uint32_t stale_while_revalidate_s;
    uint32_t stale_if_error_s;
    const char *reason; /**< when not cacheable: why (Cache-Status detail; static text) */
};

/** What cache_hit_filter decides about a stored response. */
enum weir_cache_hit_action {
    WEIR_CACHE_SERVE = 0, /**< serve it */
    WEIR_CACHE_FETCH,     /**< treat it as a miss: fetch (and store the new response) */
};

/** The defaults: the default key, no default TTL, lock_timeout 5 s, next_writer. */
WEIR_EXTERN void weir_cache_policy_default(struct weir_cache_policy *p);

WEIR_END_DECLS

#endif
