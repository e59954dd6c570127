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
#define WEIR_LB_MAX_BACKENDS     1024
#define WEIR_LB_MAX_WEIGHT       256
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
    bool healthy;      /**< active health checks say up (true without checks) */
    bool ejected;      /**< passive health ejected it, for now */
    uint32_t active;   /**< requests holding it */
    uint32_t fails;    /**< consecutive failures */
    uint64_t selected; /**< times chosen */
    uint64_t kept_in;  /**< ejections refused: it was the last usable backend (panic mode) */
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
    const char *method; /**< "GET" (default) or "HEAD" */
    const char *path;   /**< default "/" */
    const char *host;   /**< Host header; NULL: the backend's address */
    /** Acceptable statuses; none given: 200-399. At most 16 ranges. */
    const struct weir_status_range *statuses;
    size_t nstatuses;
    /** Text the first 4 KiB of the response body (as received) must contain; NULL: none. */
    const char *expect_body;
    uint32_t interval_ms; /**< between the starts of two checks of a backend; default 5000 */
    uint32_t timeout_ms;  /**< a check not done by then failed; default 2000; <= interval */
    uint32_t rise;        /**< passes in a row that bring a down backend up; default 2 */
    uint32_t fall;        /**< failures in a row that take an up backend down; default 3 */
    /** HTTP checks over TLS: the sni, verify_name, tls_no_verify and tls_client of this peer
        (copied; its address is ignored: each backend's is used). NULL: cleartext. Without
        host, the Host header is the sni when there is one. */
    const struct weir_peer *tls;
};

/**
 * A health checker: any number of (set, check) pairs, checked from one background service
 * thread. Backends start up; a backend marked down is skipped by weir_lb_select (backups and
 * fail_open apply as for passive ejection). Transitions are logged.
 */
struct weir_health;

/** A new checker in *out, owned by the caller (weir_health_free). 0 or WEIR_ENOMEM. */
WEIR_EXTERN int weir_health_new(struct weir_health **out);
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
    &weir_health_service, h, NULL). */
extern WEIR_EXTERN const struct weir_background_ops weir_health_service;

/* ---- DNS service discovery ---- */

/** How discovery resolves names; zero fields take the defaults given. */
struct weir_resolver_options {
    /**
     * DNS servers, each "ip:port" or "[ipv6]:port" (numeric), tried in order; none (NULL or
     * nservers 0): the nameservers of /etc/resolv.conf. At most 16.
     */
    const char *const *servers;
    size_t nservers;
    /** How long one try of a query waits for a server; default 2000. Each server is tried
        twice, the second time waiting twice as long. Also the longest the service's start
        waits for the first answers. */
    uint32_t timeout_ms;
    uint32_t min_ttl_ms; /**< answers are kept at least this long; default 1000 */
    uint32_t max_ttl_ms; /**< and at most this long; default 3600000 (1 h) */
    uint32_t retry_ms;   /**< a failed lookup is tried again after this; default 5000 */
};

/** What a discovery target is. */
enum weir_discovery_kind {
    /** A fixed backend: name is its "ip:port" or "[ipv6]:port", as weir_lb_backend's address. */
    WEIR_DISCOVERY_STATIC = 0,
    /** A DNS name resolved with A and AAAA queries; every address is a backend on port. */
    WEIR_DISCOVERY_NAME,
    /**
     * An SRV name ("_http._tcp.app.internal"): each record's target is resolved with A and
     * AAAA and gives backends on the record's port, weighted by the record's weight (scaled
     * so the largest weight is WEIR_LB_MAX_WEIGHT; 0 counts as the smallest, 1). The records
     * of the lowest priority are primaries, the others backups.
     */
    WEIR_DISCOVERY_SRV,
};

/** One entry of a set's backend list for discovery. */
struct weir_discovery_target {
    enum weir_discovery_kind kind;
    /** STATIC: "ip:port"; NAME: a host name ("app.internal"); SRV: an SRV name. A name may
        end with a dot; it is queried as written (no search domains). */
    const char *name;
    uint16_t port;      /**< NAME only: the port of its backends, 1..65535 */
    uint32_t weight;    /**< STATIC, NAME: each backend's weight, 1..256 (0 means 1); SRV: unused */
    bool backup;        /**< every backend it gives is a backup */
    bool drain;         /**< every backend it gives is drained */
    uint32_t max_conns; /**< every backend it gives has this max_conns (0: no cap) */
};

/**
 * Service discovery: keeps load-balancer sets in line with DNS, from one background service
 * thread running c-ares on its own event loop. Each name is resolved again when the TTL of
 * its answer (clamped to min_ttl..max_ttl) runs out. A lookup that fails (a timeout,
 * SERVFAIL, NXDOMAIN, an answer with no address) keeps the last good answer, logs a warning
 * once per run of failures and is retried after retry_ms. A set is updated (weir_lb_update)
 * only when its backend list changes: the static targets and every address resolved, in
 * target order (each name's addresses sorted), an address given twice kept once (the first),
 * at most WEIR_LB_MAX_BACKENDS (the rest dropped with a warning), and weights scaled down
 * when a tier's sum would pass WEIR_LB_MAX_TOTAL_WEIGHT. Resolved backends are named
 * "ip:port" / "[ipv6]:port", so a backend whose address stays keeps its state (health,
 * ejection, requests in flight) across updates, and requests in flight on a backend that
 * goes keep it until they end.
 */
struct weir_discovery;

/**
 * A discovery service in *out with resolver options opt (copied; NULL: every default), owned
 * by the caller (weir_discovery_free). Reads /etc/resolv.conf when no server is given. 0;
 * WEIR_EINVAL on bad options (a server that is not a numeric ip:port, more than 16, min_ttl
 * over max_ttl) or WEIR_ENOMEM, with *out NULL and *why (when not NULL) saying which, as a
 * static string.
 */
WEIR_EXTERN int weir_discovery_new(const struct weir_resolver_options *opt,
                                   struct weir_discovery **out, const char **why);

/**
 * Makes t[0..n) the backend list of lb (t is copied). lb should have been made with the
 * STATIC targets alone, in the same order: this sets lb to them at once (weir_lb_update), so
 * the server starts with them, and the service adds what the names resolve to. Call before
 * the server runs, once per set. 0; WEIR_EINVAL (a bad target, no DNS target at all, more
 * than WEIR_LB_MAX_BACKENDS targets, lb already added; *why says which when not NULL) or
 * WEIR_ENOMEM.
 */
WEIR_EXTERN int weir_discovery_add(struct weir_discovery *d, struct weir_lb *lb,
                                   const struct weir_discovery_target *t, size_t n,
                                   const char **why);

/** After the server has stopped, before the sets it updates are freed. Accepts NULL. */
WEIR_EXTERN void weir_discovery_free(struct weir_discovery *d);

/**
 * The discovery as a background service: weir_server_add_background(srv, "discovery",
 * &weir_discovery_service, d, NULL). Its start sends the first queries and waits up to
 * timeout_ms for their answers, so when it is added before the proxy service the proxy
 * starts with the names resolved; a set whose names are not resolved by then has only its
 * static backends (none: requests get 503) until they are. Sets are updated from its
 * thread, which blocks while weir_lb_update waits for the workers.
 */
extern WEIR_EXTERN const struct weir_background_ops weir_discovery_service;

WEIR_END_DECLS

#endif
