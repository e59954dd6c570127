/*
 * Upstream connections and the two-tier connection pool.
 *
 * Hot tier (struct weir__pool): one per worker, touched by that worker alone, so it needs no
 * lock. A released connection goes there first; the next request to the same peer on that
 * worker takes it back without any shared write.
 *
 * Shared tier (struct weir__pool_shared): one per proxy service, behind a mutex. A connection
 * idle in a hot tier for share_after_ms moves there (a periodic sweep per worker, one lock per
 * batch), as does the oldest of a full hot list; a worker whose hot tier misses looks there
 * before connecting. So a connection released by one worker is reused by another once the
 * first worker has not needed it for a moment, while a busy peer's connections stay hot.
 *
 * Idle connections are watched wherever they are: in a hot tier by the worker's loop, in the
 * shared tier by an epoll set of its own that every lock holder drains (level-triggered) before
 * handing anything out, so a peer close, stray bytes or the idle timeout evicts them and a dead
 * one is never handed out knowingly.
 */
#ifndef WEIR_POOL_POOL_H
#define WEIR_POOL_POOL_H

#include "core/buf.h"
#include "core/loop.h"
#include "net/stream.h"
#include "weir/peer.h"

struct weir__pool;

/**
 * What a pooled connection can be reused for: the peer's address and, for TLS, the identity
 * the connection was made with (context, SNI, verification). Connections made with different
 * identities are never shared. ctx is the OpenSSL context, which the connection's session
 * keeps alive, so a pointer compare is exact.
 */
struct weir__upkey {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t hash;
    bool tls;
    bool no_verify;
    const void *ctx;
    char sni[256];
    char verify_name[256];
};

/** The key of connections to peer. */
void weir__upkey_of(const struct weir_peer *peer, struct weir__upkey *k);
/** Whether connections made under a may serve b. */
bool weir__upkey_equal(const struct weir__upkey *a, const struct weir__upkey *b);

/** One connection to an upstream peer. */
struct weir__upconn {
    uint32_t magic;
    struct weir__stream st; /* socket, bytes read from the peer, readiness */
    struct weir__upkey key;
    uint32_t requests; /* requests completed on this connection */
    bool connected;
    /* while idle in the pool */
    struct weir__pool *pool;            /* the worker tier that owns it (not while shared) */
    struct weir__upconn *prev, *next;   /* its key's idle list (hot or shared) */
    struct weir__upconn *gprev, *gnext; /* the tier's list of every idle one, oldest last */
    bool shared;                        /* idle in the shared tier */
    bool share_now; /* share at once when released (its backend has a connection cap) */
    struct weir_timer idle_timer;
    uint64_t idle_since_ms;
    void *owner;             /* the session using it, NULL when idle */
    struct weir__defer reap; /* frees it at the end of the loop turn, after all events */
};

#define WEIR_UPCONN_MAGIC 0x75706331u

struct weir__pool_stats {
    uint64_t connects;
    uint64_t reuses;        /* from this worker's hot tier */
    uint64_t reuses_shared; /* from the shared tier */
    uint64_t to_shared;     /* moved to the shared tier */
    uint64_t evict_closed;  /* peer closed or sent stray bytes while idle */
    uint64_t evict_timeout; /* idle timeout */
    uint64_t evict_full;    /* over the idle bounds */
};

struct weir__pool_shared;

/**
 * The shared tier: at most max_per_key idle connections per peer and max_total in all, each
 * evicted after idle_timeout_ms. NULL on failure (errno set).
 */
struct weir__pool_shared *weir__pool_shared_new(uint32_t max_per_key, uint32_t max_total,
                                                uint32_t idle_timeout_ms);
/** Closes every connection in it and frees it; no worker may use it any more. */
void weir__pool_shared_free(struct weir__pool_shared *sh);
/** Its counters (connects and reuses stay 0 here; evictions are the shared tier's). */
void weir__pool_shared_stats(struct weir__pool_shared *sh, struct weir__pool_stats *out);
uint32_t weir__pool_shared_idle_count(struct weir__pool_shared *sh);

/**
 * A worker's hot tier. sh may be NULL (no sharing); share_after_ms is how long a connection
 * stays idle here before it moves to sh.
 */
struct weir__pool *weir__pool_new(struct weir_loop *loop, struct weir__bufpool *bufs,
                                  uint32_t max_idle_per_key, uint32_t max_idle_total,
                                  uint32_t idle_timeout_ms, struct weir__pool_shared *sh,
                                  uint32_t share_after_ms);
/** Closes every idle connection and frees the pool. */
void weir__pool_free(struct weir__pool *p);

/**
 * An idle connection to peer's address taken out of the pool (the hot tier first, then the
 * shared one), registered on this worker's loop; or NULL.
 */
struct weir__upconn *weir__pool_take(struct weir__pool *p, const struct weir_peer *peer);

/**
 * Parks u (no unread bytes, response complete) for reuse. Returns false when the pool will
 * not keep it (bounds, or keep-alive disabled): the caller closes it.
 */
bool weir__pool_put(struct weir__pool *p, struct weir__upconn *u);

/** Closes every idle connection of this worker's hot tier (shutdown). */
void weir__pool_close_idle(struct weir__pool *p);

const struct weir__pool_stats *weir__pool_stats(const struct weir__pool *p);
uint32_t weir__pool_idle_count(const struct weir__pool *p);

/**
 * Starts a non-blocking connect to peer. On success *out is a new connection, not yet
 * connected (wait for writability) or already connected. 0 or -errno / WEIR_ENOMEM.
 */
int weir__upconn_connect(struct weir__pool *p, const struct weir_peer *peer,
                         struct weir__upconn **out);

/**
 * True when u shows no sign of a close or stray bytes (one non-blocking peek). Worth its
 * syscall before sending a request that cannot be retried once its body is under way.
 */
bool weir__upconn_alive(struct weir__upconn *u);

/** Closes the socket, releases the buffer and frees u. */
void weir__upconn_close(struct weir__pool *p, struct weir__upconn *u);

#endif
