/*
 * Private structures of the proxy state machine: the per-worker proxy context, client
 * connections and sessions. The phases run in session.c; the upstream exchange and body
 * pumping in exchange.c; client connections (accept, head reading, keep-alive) in conn.c.
 */
#ifndef WEIR_PROXY_INT_H
#define WEIR_PROXY_INT_H

#include <netinet/in.h>
#include <stdatomic.h>

#include "core/assert.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/snapshot.h"
#include "http/head.h"
#include "http1/h1.h"
#include "lb/lb_int.h"
#include "net/stream.h"
#include "pool/pool.h"
#include "weir/limits.h"
#include "weir/proxy.h"

#define WEIR_CONN_MAGIC    0x636f6e6eu
#define WEIR_SESSION_MAGIC 0x73657373u

/* 1xx responses skipped before the final one; an origin sending more is broken or hostile. */
#define WEIR_MAX_INTERIM_RESPONSES 16

#define WEIR_SESSION_CHECK(s) WEIR_ASSERT((s) != NULL && (s)->magic == WEIR_SESSION_MAGIC)

struct weir__proxy_worker;

/**
 * Connections open on one listener across every worker (listeners[].max_connections). The
 * server owns it; a connection admitted under it holds a pointer and gives its count back
 * when it closes.
 */
struct weir__listener_count {
    _Atomic uint32_t n;
    uint32_t max; /* 0: no cap (nothing is counted) */
};

/** Called when a client connection closes (the server resumes accepting below the cap). */
typedef void (*weir__conn_closed_fn)(struct weir__proxy_worker *w, void *arg);

/** The proxy's per-thread context. */
struct weir__proxy_worker {
    struct weir_loop *loop;
    const struct weir_proxy_hooks *hooks;
    void *hooks_data;
    struct weir_snapshot_slot *slot;
    struct weir_snapshot_holder *holder;
    const struct weir_config *cfg; /* the holder's, for settings fixed at start */
    struct weir_bufpool bufs;
    struct weir__pool *pool;
    struct weir_access_buf access;
    enum weir_access_format access_format;
    struct weir_conn *conns;   /* every open client connection */
    struct weir_conn *zombies; /* closed, waiting for a suspended hook to resume */
    uint32_t nconns;
    bool draining;
    weir__conn_closed_fn on_closed;
    void *on_closed_arg;
    struct weir_arena *spare_arena; /* one reset arena kept for the next request */
    uint64_t requests;
    /* abuse limits, shared by the service's workers (NULL when off; owned by the server) */
    struct weir_inflight *ip_conns; /* open connections per client address */
    struct weir_rate *ip_rate;      /* requests per client address, 1 s windows */
    uint64_t refused;               /* connections refused by a cap on this worker */
    uint64_t refused_warn_ms;       /* next time a refusal may be logged as a warning */
};

enum conn_state {
    CONN_IDLE = 0, /* between requests (or before the first): waiting for a head */
    CONN_ACTIVE,   /* a session owns the connection */
    CONN_LINGER,   /* our side is shut down; discarding what the client still sends */
    CONN_CLOSED,
};

/** A client connection. Lives on one worker from accept to close. */
struct weir_conn {
    uint32_t magic;
    enum conn_state state;
    struct weir__proxy_worker *w;
    struct weir__stream st;
    struct weir_timer timer;
    uint64_t deadline_ms; /* when the current client-side wait times out (0: none) */
    bool head_started;    /* bytes of a new head have arrived (header vs keep-alive timeout) */
    struct weir_h1_scan scan;
    struct sockaddr_storage addr;
    char ip[INET6_ADDRSTRLEN];
    uint8_t iplen;
    unsigned nrequests;
    uint8_t ipkey[8]; /* the client's address as a limits key: IPv4, or an IPv6 /64 */
    uint8_t ipkeylen;
    bool ip_counted;                 /* counted in w->ip_conns: give it back at close */
    struct weir__listener_count *lc; /* counted on this listener: give it back at close */
    struct weir_session *s;
    struct weir_conn *prev, *next;
    struct weir_defer reap;
    struct weir_defer kick; /* re-enters the idle state machine after a request */
    struct weir_defer doom; /* closes a connection whose deadline could not be armed */
    bool zombie;            /* closed while a suspended session still points at it */
};

enum weir_phase {
    PH_EARLY = 0,
    PH_REQUEST_FILTER,
    PH_PEER,
    PH_CONNECT,
    PH_PROXY,
    PH_LOCAL_RESPONSE,
    PH_DONE,
};

/** One direction of body transfer: decode from a source buffer, re-frame, write. */
struct weir__pipe {
    enum weir_h1_body in_kind;
    uint64_t in_left; /* LENGTH: bytes still to come */
    struct weir_h1_chunked dec;
    enum weir_h1_body out_kind;
    bool in_done;             /* the source message is complete */
    bool out_done;            /* the destination message is complete (terminator queued) */
    bool end_filtered;        /* the body filter saw end=true */
    uint32_t pending_consume; /* source bytes to consume once the queue drains */
    char sizeline[24];
    struct weir_iov trailers;
    uint64_t bytes; /* body bytes passed */
};

struct weir_session {
    uint32_t magic;
    struct weir_conn *c;
    struct weir__proxy_worker *w;
    struct weir_arena *arena;
    struct weir_snapshot_holder *holder;
    const struct weir_config *cfg;
    void *ctx;
    enum weir_phase phase;

    /* request */
    struct weir_req req;
    struct weir_iov orig_method, orig_target;
    uint8_t client_minor;
    bool client_keep_alive;
    bool expect_continue;
    enum weir_h1_body req_body;
    uint64_t req_length;

    /* hook suspension */
    struct weir_defer resume;
    bool suspended;
    bool have_result;
    enum weir_hook_result result;

    /* upstream */
    struct weir_peer peer;
    struct weir_backend *peer_prev; /* the backend tried before a retry (upstream_peer) */
    bool have_peer;
    enum weir_error_type hook_error; /* weir_session_set_error, for a hook's WEIR_HOOK_ERROR */
    /* weir_session_select_backend waiting for room (max_conns) */
    struct weir_lb *wait_lb; /* non-NULL while counted in its queue */
    struct weir_iov wait_key;
    struct weir_peer *wait_peer;
    uint64_t wait_deadline_ms;
    uint32_t wait_delay_ms;
    struct weir_timer wait_timer;
    struct weir__upconn *up;
    bool up_reused;
    bool up_ready; /* connected and the request head queued */
    unsigned retries;
    unsigned stale_retries;
    struct weir_timer up_timer;
    uint64_t up_progress_ms;
    bool resp_head_done;        /* the upstream response head was parsed */
    bool resp_byte_seen;        /* any response byte arrived on this connection */
    uint32_t interim_responses; /* 1xx heads skipped (bounded) */
    struct weir_h1_scan up_scan;

    /* pipes and output */
    struct weir__pipe reqp;  /* client -> upstream */
    struct weir__pipe respp; /* upstream -> client */
    struct weir__outq out_up;
    struct weir__outq out_client;
    bool req_sent; /* head and whole body written upstream */
    char *up_head; /* the serialized upstream request head (built once) */
    size_t up_head_len;
    bool up_keep_alive; /* the upstream response allows reuse */
    bool sent_continue;
    uint64_t client_progress_ms;

    /* response */
    struct weir_resp *resp;
    bool resp_started; /* bytes of the response head were queued to the client */
    bool close_after;  /* close the client connection after this response */
    bool failed;
    struct weir_iov local_body;
    int status;
    struct weir_error err;
    bool has_err;

    int64_t start_wall;
    uint64_t start_ms;
};

/* conn.c */
struct weir__proxy_worker *weir__proxy_worker_new(struct weir_loop *loop,
                                                  const struct weir_proxy_hooks *hooks, void *data,
                                                  struct weir_snapshot_slot *slot,
                                                  struct weir_access_log *access,
                                                  struct weir__pool_shared *shared_pool);
void weir__proxy_worker_free(struct weir__proxy_worker *w);
/**
 * Takes an accepted socket from a listener counted in lc (NULL: none). 0; WEIR_ELIMIT when a
 * connection cap refused it; or an error. The fd is closed on any failure.
 */
int weir__proxy_accept(struct weir__proxy_worker *w, int fd, const struct sockaddr *sa,
                       socklen_t len, struct weir__listener_count *lc);
/** Graceful: close idle connections, let active ones finish their request then close. */
void weir__proxy_drain(struct weir__proxy_worker *w);
/** Immediate: close every connection. */
void weir__proxy_close_all(struct weir__proxy_worker *w);
/** Per-turn housekeeping: snapshot holder, access-log age flush. */
void weir__proxy_turn(struct weir__proxy_worker *w);

void weir__conn_close(struct weir_conn *c);
/**
 * Closes after a final response: shuts our side down and discards what the client still sends
 * for a short while, so unread request bytes do not turn the close into a reset that destroys
 * the response in flight.
 */
void weir__conn_linger(struct weir_conn *c);
/** The session ended: continue with the next request or close. */
void weir__conn_request_done(struct weir_conn *c, bool close_conn);
/** Sets the client-side deadline ms from now (0 disarms). */
void weir__conn_set_deadline(struct weir_conn *c, uint64_t ms);

/* session.c */
int weir__session_start(struct weir_conn *c, const struct weir_h1_request *hr, size_t head_len);
/** Runs phases until the session blocks or ends. */
void weir__session_run(struct weir_session *s);
/** Ends the request with an error: error response if possible, else close. */
void weir__session_fail(struct weir_session *s, enum weir_error_type type,
                        enum weir_error_source src, int sys_errno, const char *context);
/** The client-side timer fired for an active session. */
void weir__session_client_timeout(struct weir_session *s);
/** The client socket changed readiness. */
void weir__session_client_event(struct weir_session *s);
void weir__session_finish(struct weir_session *s);

/* exchange.c */
void weir__exchange_start(struct weir_session *s);
void weir__exchange_run(struct weir_session *s);
void weir__exchange_connect_failed(struct weir_session *s, int err);
void weir__exchange_release_upstream(struct weir_session *s, bool reusable);
void weir__local_response_run(struct weir_session *s);
/** Queues a response head (resp) plus body framing setup for the client. 0 or error. */
int weir__queue_response_head(struct weir_session *s, struct weir_resp *resp);

/* accesslog.c */
void weir__access_log_request(struct weir_session *s);
/** Logs a request head rejected before it became a session. */
void weir__access_log_reject(struct weir_conn *c, int status, size_t body_bytes);

#endif
