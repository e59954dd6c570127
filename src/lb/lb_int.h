/*
 * Load balancer internals the proxy and the health checker use: a backend's shared state and
 * the calls that report what happened to a request sent to it.
 */
#ifndef WEIR_LB_LB_INT_H
#define WEIR_LB_LB_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include "weir/error.h"
#include "weir/lb.h"

/*
 * One backend. Its address never changes; its state is shared by every worker and survives
 * set updates that keep the address. Freed when the last set and the last peer let go.
 */
struct weir_backend {
    atomic_uint refs;                  /* sets containing it + peers holding it */
    atomic_uint active;                /* peers holding it: requests in flight */
    atomic_uint fails;                 /* consecutive failures */
    atomic_uint ejections;             /* ejections in a row without a success in between */
    _Atomic uint64_t ejected_until_ms; /* monotonic ms; 0 = not ejected */
    atomic_bool healthy;               /* active health checks (true until one says otherwise) */
    atomic_bool drain;
    atomic_uint max_conns; /* 0: no cap (an update may change it) */
    _Atomic uint64_t selected;
    _Atomic uint64_t kept_in; /* ejections refused: it was the group's last usable backend */
    atomic_bool panic;        /* kept in since its last success (logs the first refusal only) */
    atomic_uint h2_cap;       /* weir__backend_learn_h2_cap: streams per HTTP/2 connection */
    _Atomic uint64_t h2_cap_until_ms; /* ... until then (monotonic ms; 0: none learned) */
    /* active health checks: the checker's thread only */
    uint32_t hc_passes, hc_fails;
    /* immutable */
    struct weir_lb *lb; /* the group it belongs to (outlives it: the config owns both) */
    uint32_t max_fails, eject_ms, eject_max_ms;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char ident[64]; /* the address as written: the backend's identity, and ketama's input */
    char name[64];  /* the peer name (numeric "ip:port") */
};

/** Monotonic milliseconds (coarse clock: the granularity of ejection times). */
uint64_t weir__lb_now_ms(void);

/**
 * A request to b failed (connect error, timeout, error before a response): type and context
 * (may be NULL) say how, for the warning an ejection logs.
 */
void weir__backend_failed(struct weir_backend *b, enum weir_error_type type, const char *context);
/** A request to b got a response head (a backend back from an ejection says so, once). */
void weir__backend_succeeded(struct weir_backend *b);
/**
 * HTTP/2: b's origin ended a connection with a GOAWAY that refused streams after cap (0:
 * nothing learned). For the next minute (renewed each time it happens again) its new
 * connections open no more than cap streams, instead of sending streams it will refuse.
 */
void weir__backend_learn_h2_cap(struct weir_backend *b, uint32_t cap);
/** The streams per HTTP/2 connection b's origin allows, as learned; 0: no cap known. */
uint32_t weir__backend_h2_cap(struct weir_backend *b);

void weir__backend_ref(struct weir_backend *b);
void weir__backend_unref(struct weir_backend *b);

/**
 * The current set's backends, each with a reference the caller drops with
 * weir__backend_unref (any thread). *out is weir__calloc'ed; 0 or WEIR_ENOMEM.
 */
int weir__lb_backends(struct weir_lb *lb, struct weir_backend ***out, size_t *n);

/** A request starts waiting for room (max_conns): false when lb's queue is full. */
bool weir__lb_queue_enter(struct weir_lb *lb);
void weir__lb_queue_leave(struct weir_lb *lb);
uint32_t weir__lb_queue_timeout_ms(const struct weir_lb *lb);

/** Body bytes a health check searches for its expected text. */
#define WEIR_HEALTH_BODY_SCAN 4096

/**
 * Judges the first n bytes of a health check's response: 1 passed, 0 failed (*why says why),
 * -1 undecided (more bytes may decide). at_end: no more bytes will come.
 */
int weir__health_judge(const char *buf, size_t n, const struct weir_status_range *ranges,
                       size_t nranges, const char *expect_body, bool at_end, const char **why);

/** CRC-32 as nginx computes it (IEEE 802.3, reflected), for the ketama ring. */
uint32_t weir__crc32(const void *data, size_t len);

#endif
