/*
 * Load balancing: a set of backends and a selection algorithm, shared by every worker thread.
 *
 * weir_lb_select() is what an upstream_peer hook calls: it picks a backend, skipping those that
 * are ejected by passive health (consecutive failures on real traffic), marked down by an
 * active health check, or drained, and fills the peer. The peer then carries a reference to
 * its backend, through which the proxy reports the outcome of the request (connect failures,
 * timeouts, success) and counts the backend's active requests (least_conn uses them). Nothing
 * more is needed from the hook.
 *
 * The backend set can be replaced at any time (DNS discovery, an API call) with
 * weir_lb_update(): requests already on their way keep the backend they were given, and the
 * state of a backend that stays (health, failures, active requests) carries over.
 */
#ifndef WEIR_LB_H
#define WEIR_LB_H

#include "weir/buf.h"
#include "weir/common.h"
#include "weir/peer.h"

WEIR_BEGIN_DECLS

/** Selection algorithms. Each honours weights. */
enum weir_lb_algorithm {
    /** nginx's smooth weighted round robin: equal weights give plain rotation. */
    WEIR_LB_ROUND_ROBIN = 0,
    /** A random backend, with probability proportional to its weight. */
    WEIR_LB_RANDOM,
    /** Power of two random choices: of two weighted-random backends, the one with fewer
        active requests per unit of weight. */
    WEIR_LB_LEAST_CONN,
    /** Consistent hashing on a key (weir_lb_select's key argument): the same ring as nginx's
        `hash KEY consistent` for the same server list, so both send a key to the same backend.
        An empty key is balanced round robin, as nginx does. */
    WEIR_LB_KETAMA,
};

/** Bounds of a backend set (weir_lb_new and weir_lb_update refuse more). */
#define WEIR_LB_MAX_BACKENDS 1024
#define WEIR_LB_MAX_WEIGHT 256
#define WEIR_LB_MAX_TOTAL_WEIGHT 16384 /* per tier (primary, backup) */

/** One backend as given to weir_lb_new / weir_lb_update. */
struct weir_lb_backend {
    /** "ip:port" or "[ipv6]:port"; also the backend's identity (ketama hashes this text). */
    const char *address;
    uint32_t weight; /**< 1..WEIR_LB_MAX_WEIGHT; 0 means 1 */
    bool backup;     /**< used only while no primary backend can be */
    bool drain;      /**< administratively out of rotation (nginx's `down`) */
    /** Requests in flight to it at once, all workers together (with HTTP/1, the upstream
        connections in use); 0 = no cap. A backend at its cap is passed over. */
    uint32_t max_conns;
};

/** Behaviour of a set; zero-initialised options are the defaults described. */
struct weir_lb_options {
    enum weir_lb_algorithm algorithm;
    /**
     * When every backend is down (ejected or failing active checks): true uses them anyway,
     * as if all were up (nginx's behaviour); false (default) fails the selection at once, so
     * the request is answered 503.
     */
    bool fail_open;
    /** Passive health: consecutive failed requests that eject a backend; 0 = default 3;
        UINT32_MAX turns passive ejection off. */
    uint32_t max_fails;
    /** First ejection in ms (0 = default 10000); doubles at each ejection in a row. */
    uint32_t eject_ms;
    /** Longest ejection in ms (0 = default 300000). */
    uint32_t eject_max_ms;
    /** Requests that may wait (weir_session_select_backend) while every usable backend is at
        its max_conns; 0 = default 128; UINT32_MAX: none wait (503 at once). */
    uint32_t queue_size;
    /** How long one may wait, in ms; 0 = default 5000. */
    uint32_t queue_timeout_ms;
};

struct weir_lb;

/**
 * Creates a set. 0; WEIR_EINVAL with a bad address, weight, duplicate address or a bound
 * exceeded (a message goes to *why when why is not NULL: a static string); WEIR_ENOMEM.
 */
WEIR_EXTERN int weir_lb_new(const struct weir_lb_options *opt, const struct weir_lb_backend *b,
                            size_t n, struct weir_lb **out, const char **why);

/**
 * Replaces the backend set atomically (any thread; blocks until every worker has moved on
 * from the old set, a loop turn). Backends whose address stays keep their state. 0,
 * WEIR_EINVAL (the old set stays in force) or WEIR_ENOMEM.
 */
WEIR_EXTERN int weir_lb_update(struct weir_lb *lb, const struct weir_lb_backend *b, size_t n,
                               const char **why);

/** Frees the set; no thread may select from it any more. Peers still holding one of its
    backends keep that backend alive until they release it. Accepts NULL. */
WEIR_EXTERN void weir_lb_free(struct weir_lb *lb);

/**
 * Picks a backend for key (used by WEIR_LB_KETAMA; ignored otherwise) and fills peer's
 * address and name, keeping its timeouts. Worker threads only (an RCU reader). A peer that
 * already holds a backend releases it first. 0; WEIR_ELIMIT when the backends that may be used
 * are all at their max_conns; or WEIR_EUNAVAILABLE when none may be used: the hook then calls
 * weir_session_set_error(s, WEIR_ERR_NO_BACKEND) and returns WEIR_HOOK_ERROR, which answers
 * 503. weir_session_select_backend (weir/proxy.h) does all of that, and waits on WEIR_ELIMIT.
 */
WEIR_EXTERN int weir_lb_select(struct weir_lb *lb, struct weir_iov key, struct weir_peer *peer);

/** Drops the backend reference a peer holds (the proxy does this when the request ends). */
WEIR_EXTERN void weir_peer_release(struct weir_peer *peer);

/** Number of backends in the current set. */
WEIR_EXTERN size_t weir_lb_size(const struct weir_lb *lb);

/** A backend's state, as weir_lb_backend_info reports it. */
struct weir_lb_backend_info {
    char address[64];
    uint32_t weight;
    bool backup;
    bool drain;
    bool healthy;        /**< active health checks say up (true without checks) */
    bool ejected;        /**< passive health ejected it, for now */
    uint32_t active;     /**< requests holding it */
    uint32_t fails;      /**< consecutive failures */
    uint64_t selected;   /**< times chosen */
};

/** State of the i-th backend of the current set. 0 or WEIR_EINVAL (i out of range). */
WEIR_EXTERN int weir_lb_backend_info(const struct weir_lb *lb, size_t i,
                                     struct weir_lb_backend_info *info);

/** Marks a backend (by address) up or down, as an active health check does. 0 or WEIR_EINVAL. */
WEIR_EXTERN int weir_lb_set_healthy(struct weir_lb *lb, const char *address, bool up);

/** Drains (true) or restores (false) a backend by address. 0 or WEIR_EINVAL. */
WEIR_EXTERN int weir_lb_set_drain(struct weir_lb *lb, const char *address, bool drain);

/* ---- active health checks ---- */

/** What an active health check does. */
enum weir_health_type {
    WEIR_HEALTH_HTTP = 0, /**< an HTTP/1.1 request; judged by status (and body) */
    WEIR_HEALTH_TCP,      /**< a TCP connect; up when it completes */
};

/** An inclusive range of acceptable status codes. */
struct weir_status_range {
    uint16_t lo, hi;
};

/** One check, run on every backend of a set; zero fields take the defaults given. */
struct weir_health_check {
    enum weir_health_type type;
    const char *method;      /**< "GET" (default) or "HEAD" */
    const char *path;        /**< default "/" */
    const char *host;        /**< Host header; NULL: the backend's address */
    /** Acceptable statuses; none given: 200-399. At most 16 ranges. */
    const struct weir_status_range *statuses;
    size_t nstatuses;
    /** Text the first 4 KiB of the response body (as received) must contain; NULL: none. */
    const char *expect_body;
    uint32_t interval_ms; /**< between the starts of two checks of a backend; default 5000 */
    uint32_t timeout_ms;  /**< a check not done by then failed; default 2000; <= interval */
    uint32_t rise;        /**< passes in a row that bring a down backend up; default 2 */
    uint32_t fall;        /**< failures in a row that take an up backend down; default 3 */
};

/**
 * A health checker: any number of (set, check) pairs, checked from one background service
 * thread. Backends start up; a backend marked down is skipped by weir_lb_select (backups and
 * fail_open apply as for passive ejection). Transitions are logged.
 */
struct weir_health;

WEIR_EXTERN struct weir_health *weir_health_new(void);
/**
 * Checks lb's backends (the current set at each round) with hc (copied). Before the server
 * runs. 0, WEIR_EINVAL (bad values, or lb already checked) or WEIR_ENOMEM.
 */
WEIR_EXTERN int weir_health_add(struct weir_health *h, struct weir_lb *lb,
                                const struct weir_health_check *hc);
/** After the server has stopped. Accepts NULL. */
WEIR_EXTERN void weir_health_free(struct weir_health *h);

struct weir_background_ops; /* weir/server.h */

/** The checker as a background service: weir_server_add_background(srv, "health",
    &weir_health_service, h). */
extern WEIR_EXTERN const struct weir_background_ops weir_health_service;

WEIR_END_DECLS

#endif
