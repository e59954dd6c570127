/*
 * Upstream connections and the per-worker tier of the connection pool. An idle connection
 * stays registered for readability: a peer close, stray bytes or the idle timeout evicts it.
 * The shared tier (a later issue) slots in behind weir__pool_take / weir__pool_put.
 */
#ifndef WEIR_POOL_POOL_H
#define WEIR_POOL_POOL_H

#include "core/buf.h"
#include "core/loop.h"
#include "net/stream.h"
#include "weir/peer.h"

struct weir__pool;

/** One connection to an upstream peer. */
struct weir__upconn {
    uint32_t magic;
    struct weir__stream st;    /* socket, bytes read from the peer, readiness */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t key_hash;
    uint32_t requests;         /* requests completed on this connection */
    bool connected;
    /* while idle in the pool */
    struct weir__pool *pool;
    struct weir__upconn *prev, *next;
    struct weir_timer idle_timer;
    uint64_t idle_since_ms;
    void *owner;               /* the session using it, NULL when idle */
    struct weir_defer reap;    /* frees it at the end of the loop turn, after all events */
};

#define WEIR_UPCONN_MAGIC 0x75706331u

struct weir__pool_stats {
    uint64_t connects;
    uint64_t reuses;
    uint64_t evict_closed;  /* peer closed or sent stray bytes while idle */
    uint64_t evict_timeout; /* idle timeout */
    uint64_t evict_full;    /* over the idle bounds */
};

struct weir__pool *weir__pool_new(struct weir_loop *loop, struct weir_bufpool *bufs,
                                  uint32_t max_idle_per_key, uint32_t max_idle_total,
                                  uint32_t idle_timeout_ms);
/** Closes every idle connection and frees the pool. */
void weir__pool_free(struct weir__pool *p);

/** An idle connection to peer's address, unregistered from the pool, or NULL. */
struct weir__upconn *weir__pool_take(struct weir__pool *p, const struct weir_peer *peer);

/**
 * Parks u (no unread bytes, response complete) for reuse. Returns false when the pool will
 * not keep it (bounds, or keep-alive disabled): the caller closes it.
 */
bool weir__pool_put(struct weir__pool *p, struct weir__upconn *u);

/** Closes every idle connection (shutdown). */
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
