/*
 * Private structures of the proxy state machine: the per-worker proxy context, client
 * connections and sessions. The phases and the retry loop run in session.c; the upstream
 * exchange in upstream.c; body pipes in pipe.c; header policy in forward.c; the HTTP/1.1 wire
 * format in h1_framing.c; client connections (accept, head reading, keep-alive) in conn.c.
 */
#ifndef WEIR_PROXY_INT_H
#define WEIR_PROXY_INT_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>

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

#define WEIR_SESSION_CHECK(s) WEIR_CHECK_OBJ(s, WEIR_SESSION_MAGIC)

struct weir__proxy_worker;
struct weir__h2_conn;
struct weir__h2s;
struct weir__h2up;
struct weir__scache;
struct weir__cinbox;
struct weir__bg;
struct weir__refresh;

/**
 * Connections open on one listener across every worker (listeners[].max_connections). The
 * server owns it; a connection admitted under it holds a pointer and gives its count back
 * when it closes.
 */
struct weir__listener_count {
    _Atomic uint32_t n;
    uint32_t max; /* 0: no cap (nothing is counted) */
};

/** What a connection takes from the listener that accepted it (the server owns it). */
struct weir__listener_opts {
    struct weir__listener_count *count; /* listeners[].max_connections; NULL: none */
    struct weir__tls_server *tls;       /* listeners[].tls; NULL: cleartext */
    uint16_t redirect_https;            /* cleartext: 308 every request to https on this
                                           port (listeners[].redirect_https); 0: off */
    bool h2c;                           /* cleartext: HTTP/2 with prior knowledge too */
};

/** Called when a client connection closes (the server resumes accepting below the cap). */
typedef void (*weir__conn_closed_fn)(struct weir__proxy_worker *w, void *arg);

/** The proxy's per-thread context. */
/** Reset session arenas a worker keeps (each one block, 4 KiB). */
#define WEIR_SPARE_ARENAS 32

struct weir__proxy_worker {
    struct weir_loop *loop;
    const struct weir_proxy_hooks *hooks;
    void *hooks_data;
    struct weir__snapshot_slot *slot;
    struct weir__snapshot_holder *holder;
    const struct weir_config *cfg; /* the holder's, for settings fixed at start */
    struct weir__bufpool bufs;
    struct weir__pool *pool;
    struct weir__access_buf access;
    enum weir_access_format access_format;
    struct weir__conn *conns;    /* every open client connection */
    struct weir__conn *zombies;  /* closed, waiting for a suspended hook to resume */
    struct weir__h2up *h2ups;    /* HTTP/2 origin connections (h2_up.c) */
    struct weir__cinbox *cinbox; /* cache wake-ups from other threads, lock deadlines */
    struct weir__bg *bgs;        /* background sessions (background.c) */
    uint32_t nbg;
    uint32_t nconns;
    bool draining;
    weir__conn_closed_fn on_closed;
    void *on_closed_arg;
    /* reset arenas kept for the next requests: HTTP/2 starts and ends many sessions per loop
       turn, and two mallocs and frees each were 3 % of an h2 request's CPU */
    struct weir_arena *spare_arenas[WEIR_SPARE_ARENAS];
    unsigned nspare_arenas;
    uint64_t requests;
    /* abuse limits, shared by the service's workers (NULL when off; owned by the server) */
    struct weir_inflight *ip_conns; /* open connections per client address */
    struct weir_rate *ip_rate;      /* requests per client address, 1 s windows */
    uint64_t refused;               /* connections refused by a cap on this worker */
    uint64_t refused_warn_ms;       /* next time a refusal may be logged as a warning */
    uint64_t spill_warn_ms;         /* next time a spill file failure may be a warning */
    /*
     * Where a head parse puts its fields before weir__head_adopt copies them into the
     * request's arena: WEIR_MAX_HEADERS_PARSED entries on the heap (320 KB of address space,
     * its pages touched only as far as heads reach), not a stack array of max_headers. The
     * request and response parses both use it: each head is adopted before anything else
     * runs, so they never overlap.
     */
    struct weir_header *fields;
};

enum weir__conn_state {
    CONN_IDLE = 0, /* between requests (or before the first): waiting for a head */
    CONN_ACTIVE,   /* a session owns the connection */
    CONN_LINGER,   /* our side is shut down; discarding what the client still sends */
    CONN_H2,       /* speaking HTTP/2 (h2_down.c): each stream is a session */
    CONN_CLOSED,
};

/** A client connection. Lives on one worker from accept to close. */
struct weir__conn {
    uint32_t magic;
    enum weir__conn_state state;
    struct weir__proxy_worker *w;
    struct weir__stream st;
    struct weir_timer timer;
    uint64_t deadline_ms; /* when the current client-side wait times out (0: none) */
    bool head_started;    /* bytes of a new head have arrived (header vs keep-alive timeout) */
    struct weir__h1_scan scan;
    struct sockaddr_storage addr;
    char ip[INET6_ADDRSTRLEN];
    uint8_t iplen;
    unsigned nrequests;
    uint8_t ipkey[8]; /* the client's address as a limits key: IPv4, or an IPv6 /64 */
    uint8_t ipkeylen;
    bool ip_counted;                 /* counted in w->ip_conns: give it back at close */
    struct weir__listener_count *lc; /* counted on this listener: give it back at close */
    struct weir_session *s;
    struct weir__conn *prev, *next;
    struct weir__defer reap;
    struct weir__defer kick; /* re-enters the idle state machine after a request */
    struct weir__defer doom; /* closes a connection whose deadline could not be armed */
    bool zombie;             /* closed while a suspended session still points at it */
    /* Lingering close (CONN_LINGER): the reply still to write before the shutdown, if the
     * socket would not take it at once, and when lingering must end regardless. */
    char *reply;
    uint16_t reply_len, reply_off;
    bool shut;                      /* our write side is shut down */
    uint64_t linger_end_ms;         /* timeouts.linger from the start of lingering */
    bool tls;                       /* accepted on a TLS listener */
    bool tls_check;                 /* TLS: the first byte is still to be checked (plain HTTP?) */
    struct weir_tls_info *tls_info; /* weir_session_tls's answer, made on its first call */
    uint16_t redirect_https;        /* the listener's redirect_https port; 0: off */
    bool h2c;                       /* cleartext: a connection preface starts HTTP/2 */
    struct weir__h2_conn *h2;       /* CONN_H2: the HTTP/2 session */
    uint32_t h2_sessions;           /* sessions on its streams, until each ends */
    struct weir__h2s *h2_orphans;   /* closed: streams whose sessions have not ended yet */
};

/*
 * The session's phases, in request order. session.c alone moves a session from one to the
 * next (weir__session_run); every event (client or upstream readiness, a timer, a hook's
 * resume) enters through it. See docs/ARCHITECTURE.md for the diagram.
 */
enum weir__phase {
    PH_EARLY = 0,      /* absolute-form rewrite, early_request_filter */
    PH_REQUEST_FILTER, /* request_filter (may answer itself) */
    PH_CACHE,          /* request_cache_filter, lookup, the cache lock (cache.c) */
    PH_PEER,           /* upstream_peer chooses the peer; a retry comes back here */
    PH_UPSTREAM,       /* the upstream exchange (its own sub-states, enum weir__up_state) */
    PH_LOCAL_RESPONSE, /* a response weir or a hook made goes out */
    PH_CLOSING,        /* the client is gone while a hook is suspended: end when it resumes */
    PH_DONE,           /* ended: logged, upstream released (the session is freed at once) */
};

/*
 * The upstream exchange's sub-states (upstream.c, one function each). The request body goes
 * up in every state from UP_HEAD on, alongside reading the response, until req_sent.
 */
enum weir__up_state {
    UP_IDLE = 0,   /* no connection: take one from the pool or start a connect */
    UP_CONNECTING, /* a non-blocking connect is in progress */
    UP_CONNECTED,  /* connected: connected_to_upstream, queue the request head */
    UP_HEAD,       /* waiting for the final response head (1xx are dropped) */
    UP_BODY,       /* the response head went to the client; streaming the body */
    UP_DRAIN,      /* the origin is done (its connection released); the spool drains */
    UP_COMPLETE,   /* the response is complete */
};

/** How far an exchange step got (upstream.c to session.c). */
enum weir__step {
    WEIR_STEP_DONE = 0, /* the response is complete */
    WEIR_STEP_BLOCKED,  /* waiting for readiness or a timer */
    WEIR_STEP_FAILED,   /* see the outcome */
};

/** What a failed exchange step asks of the session, which alone decides retries. */
enum weir__fail_kind {
    WEIR_FAIL_CONNECT,     /* connecting failed: fail_to_connect, maybe another peer */
    WEIR_FAIL_UPSTREAM,    /* the exchange failed after connecting: error_while_proxy */
    WEIR_FAIL_CLIENT_BODY, /* the client's body was malformed or too large: answer status */
    WEIR_FAIL_END,         /* end the request (client gone, a hook or weir failed) */
};

struct weir__outcome {
    enum weir__fail_kind kind;
    struct weir_error err; /* err.retry: unused here; see the two flags */
    int status;            /* WEIR_FAIL_CLIENT_BODY: 400 or 413 */
    bool blameless;        /* WEIR_FAIL_UPSTREAM: caused by our stall, not the backend's fault */
    int code;              /* WEIR_FAIL_CONNECT: -errno or WEIR_ETIMEDOUT */
    bool stale;            /* a reused connection died before answering: safe on a fresh one */
    bool replayable;       /* nothing of the request body consumed, no response byte seen */
    bool refused;          /* stale because an HTTP/2 origin refused the stream unprocessed */
};

/*
 * Limits that are not configuration. Each is a bound against a broken or hostile peer, or a
 * hook asking for retries forever; docs/SECURITY.md lists them.
 */
/** 1xx responses skipped before the final one; an origin sending more is broken or hostile. */
#define WEIR_MAX_INTERIM_RESPONSES 16
/** Retries a fail_to_connect hook may force past server.max_retries. */
#define WEIR_MAX_CONNECT_RETRIES 16
/** Fresh connections tried for a request whose pooled connections turned out dead. */
#define WEIR_MAX_STALE_RETRIES 3
/** Streams an HTTP/2 origin may refuse unprocessed (GOAWAY, REFUSED_STREAM) per request. */
#define WEIR_MAX_H2_REFUSED 16
/** Chunk-size line bytes the chunked decoder keeps (a longer line is malformed). */
#define WEIR_CHUNK_LINE_MAX 4096
/** Free I/O buffers a worker keeps for reuse (more go back to the heap). */
#define WEIR_BUFPOOL_KEEP 256
/** Peers a worker's hot pool tier is sized for: it keeps (upstream_keepalive + 1) times this
    many idle connections in all; more spill to the shared tier. */
#define WEIR_POOL_PEERS_PER_WORKER 64
/** The oldest an access-log line waits in a worker's buffer before it goes to the writer. */
#define WEIR_ACCESS_FLUSH_MS 1000
/** At most one warning per worker per this long for refused connections (then debug). */
#define WEIR_REFUSED_WARN_MS 10000
/** Background sessions (stale-while-revalidate refreshes) one worker runs at once. */
#define WEIR_MAX_BACKGROUND 64
/** Bytes per memory chunk of a response spool (buffer_responses), or memory if smaller. */
#define WEIR_SPOOL_CHUNK (16u << 10)
/** Bytes of a spool's temporary file read back per read. */
#define WEIR_SPOOL_READ (64u << 10)

/** One direction of body transfer: decode from a source buffer, re-frame, write. */
struct weir__pipe {
    enum weir__h1_body in_kind;
    uint64_t in_left; /* LENGTH: bytes still to come */
    struct weir__h1_chunked dec;
    enum weir__h1_body out_kind;
    bool in_done;             /* the source message is complete */
    bool out_done;            /* the destination message is complete (terminator queued) */
    bool end_filtered;        /* the body filter saw end=true */
    uint32_t pending_consume; /* source bytes to consume once the queue drains */
    char sizeline[24];
    struct weir_iov trailers;
    uint64_t bytes; /* body bytes passed */
};

enum weir__pipe_status {
    WEIR_PIPE_DONE = 0,
    WEIR_PIPE_BLOCKED,
    WEIR_PIPE_ERR_SRC,   /* read error or premature close of the source */
    WEIR_PIPE_ERR_PROTO, /* malformed framing from the source */
    WEIR_PIPE_ERR_DST,   /* write error on the destination */
    WEIR_PIPE_ERR_HOOK,  /* a body filter failed */
    WEIR_PIPE_ERR_LIMIT, /* request body over max_body_bytes */
};

typedef enum weir_hook_result (*weir__body_filter_fn)(struct weir_session *, void *,
                                                      struct weir_iov *, bool);

/** A pipe step's ends: where bytes come from and go to, and what it did. */
struct weir__pipe_io {
    struct weir__stream *src;
    struct weir__stream *dst;
    struct weir__outq *q;
    weir__body_filter_fn filter;
    uint64_t limit; /* max body bytes, 0 = none */
    bool discard;   /* dst is gone: what would be written is dropped (ignore_client_abort) */
    struct weir__spool *spool; /* non-NULL: what dst cannot take now is held there */
    uint64_t written;          /* bytes written to dst in this step */
    bool read_progress;
    bool write_progress;
};

/*
 * The client side's wire format. The phases and the upstream exchange write to the client
 * only through it: HTTP/1.1 today (h1_framing.c, weir__h1_down); an HTTP/2 stream adds one.
 */
struct weir__down_framing {
    const char *name;
    /** Sets r's connection fields (Connection) and decides close_after. 0 or an error. */
    int (*connection_fields)(struct weir_session *s, struct weir_resp *r);
    /**
     * Chooses the body framing towards the client for r (s->respp.out_kind and the fields
     * that say so), given whether r has a usable Content-Length.
     */
    int (*body_framing)(struct weir_session *s, struct weir_resp *r, bool has_length);
    /** Serializes r and queues it in s->out_client; sets s->status, s->resp_started. */
    int (*queue_head)(struct weir_session *s, struct weir_resp *r);
    /** Queues and tries to send an interim 100 (Continue). */
    void (*send_continue)(struct weir_session *s);
};

/*
 * The upstream side's wire format: HTTP/1.1 today (h1_framing.c, weir__h1_up); HTTP/2 to
 * origins adds one.
 */
struct weir__up_framing {
    const char *name;
    /**
     * Chooses the request body framing going up (s->reqp) given whether the final head has
     * a Content-Length equal to the body's, and serializes the head into s->ux.head.
     */
    int (*request_head)(struct weir_session *s, bool length_ok);
    /**
     * Parses the final response head from the connection into s->resp (interim responses
     * dropped). WEIR_STEP_DONE when it is in, BLOCKED when more is needed, FAILED with *o.
     */
    enum weir__step (*response_head)(struct weir_session *s, struct weir__outcome *o);
};

extern const struct weir__down_framing weir__h1_down;
extern const struct weir__down_framing weir__h2_down;
extern const struct weir__up_framing weir__h1_up;
extern const struct weir__up_framing weir__h2_up;
extern const struct weir__up_framing weir__cache_up;

/** The upstream exchange of one session (upstream.c owns every field). */
struct weir__exchange {
    enum weir__up_state state;
    struct weir__upconn *conn;
    bool reused;      /* conn came from the pool */
    bool fresh;       /* the next connection must be new (a pooled one died) */
    bool byte_seen;   /* any response byte arrived on this connection */
    bool keep_alive;  /* the upstream response allows reuse */
    bool held;        /* weir stopped reading the response for the client (backpressure) */
    uint32_t interim; /* 1xx heads skipped (bounded) */
    struct weir__h1_scan scan;
    struct weir_timer timer;
    uint64_t progress_ms;  /* last upstream progress (timeouts count from it) */
    struct weir__outq out; /* bytes going up */
    char *head;            /* the serialized upstream request head (built once per request) */
    size_t head_len;
    bool head_built;  /* the hooks and edits of the upstream head have run */
    bool length_ok;   /* ... and the body goes up with the Content-Length it has */
    bool te_trailers; /* ... and the client said TE: trailers (sent to HTTP/2 origins) */
    bool upgrade;     /* an HTTP/1.1 WebSocket upgrade goes up (Upgrade: websocket) */
    bool tunnel;      /* the origin said 101: bytes both ways until either side closes */
    /* HTTP/2 to the origin (h2_up.c) */
    struct weir__h2up *h2c;       /* the connection the stream is on */
    struct weir__h2s *h2s;        /* the request's stream */
    struct weir__h2up *h2make;    /* the connection this session is making, others waiting */
    struct weir__h2up *h2wait;    /* the connection this session waits for */
    struct weir_session *h2wnext; /* the next session waiting for it */
    struct weir__defer h2wake;    /* runs the session again (its connection changed) */
    bool h2_refused;              /* the last stream was refused: retry on any connection */
    uint32_t h2_refusals;         /* streams refused for this request (WEIR_MAX_H2_REFUSED) */
};

struct weir_session {
    uint32_t magic;
    struct weir__conn *c;
    struct weir__stream *cst; /* the client side: &c->st, or an HTTP/2 stream's */
    struct weir__stream *ust; /* the upstream side: &ux.conn->st, an HTTP/2 stream's, or NULL */
    struct weir__h2s *h2;     /* the HTTP/2 stream serving this request; NULL: HTTP/1.1 */
    struct weir_timer ctimer; /* HTTP/2: the client-side deadline of this stream */
    struct weir__proxy_worker *w;
    struct weir_arena *arena;
    struct weir__snapshot_holder *holder;
    const struct weir_config *cfg;
    const struct weir__down_framing *down;
    const struct weir__up_framing *upf;
    void *ctx;
    enum weir__phase phase;
    unsigned index; /* weir_session_request_index: the connection's request count at start */

    /* request */
    struct weir_req req;
    struct weir_iov orig_method, orig_target;
    uint8_t client_minor;
    bool early_data; /* the head may have come as TLS 0-RTT data: Early-Data: 1 goes up */
    bool client_keep_alive;
    bool expect_continue;
    /* RFC 8441: an HTTP/2 extended CONNECT for a WebSocket, which goes up as an HTTP/1.1
       upgrade with a key of ours (ws_key, its Sec-WebSocket-Key), the 101 coming back as 200 */
    bool ws_h2;
    struct weir_iov ws_key;
    struct weir__grpc_web *gw;     /* weir_session_set_grpc_web: translated (grpc_web.c); or NULL */
    struct weir__scache *cache;    /* weir_session_cache_enable (cache.c); or NULL */
    struct weir__bg *bg;           /* a background session's own (background.c); or NULL */
    struct weir__refresh *refresh; /* a refresh's handed lock (cache.c); or NULL */
    enum weir__h1_body req_body;
    uint64_t req_length;

    /* hook suspension */
    struct weir__defer resume;
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
    struct weir__exchange ux;
    unsigned retries;
    unsigned stale_retries;

    /* pipes and output */
    struct weir__pipe reqp;  /* client -> upstream */
    struct weir__pipe respp; /* upstream -> client */
    struct weir__outq out_client;
    bool req_sent; /* head and whole body written upstream */
    bool sent_continue;
    uint64_t client_progress_ms;

    /* response */
    struct weir_resp *resp;
    bool resp_started; /* bytes of the response head were queued to the client */
    bool resp_done;    /* the whole response went to the client side */
    bool close_after;  /* close the client connection after this response */
    bool failed;
    struct weir_iov local_body;
    int status;
    struct weir_error err;
    bool has_err;
    /* The client went away (upstream.c weir__client_gone); ignore_client_abort keeps the
     * exchange going, its response thrown away once the client cannot take it. */
    bool ignore_client_abort;
    bool client_gone;
    /* timeouts.client_min_rate: bytes the client read over the time weir waited on it */
    uint64_t rate_bytes;
    uint64_t rate_waited_ms; /* waiting time of the current window, before rate_since */
    uint64_t rate_since_ms;  /* 0, or since when weir has been waiting on the client */
    /* buffer_responses (weir_session_set_response_buffering, spool.c): NULL = off. It holds
       nothing until the client falls behind; with nothing held the pipe writes straight on. */
    struct weir__spool *spool;

    int64_t start_wall;
    uint64_t start_ms;
};

/*
 * Calls into a session's framings. HTTP/1.1 is called directly, so LTO inlines it into the
 * request path as if there were no interface (measured: the table's indirect calls cost 2 %
 * of a proxied request's instructions); any other framing goes through its table.
 */
int weir__h1_connection_fields(struct weir_session *s, struct weir_resp *r);
int weir__h1_body_framing(struct weir_session *s, struct weir_resp *r, bool has_length);
int weir__h1_queue_head(struct weir_session *s, struct weir_resp *r);
void weir__h1_send_continue(struct weir_session *s);
int weir__h1_request_head(struct weir_session *s, bool length_ok);
enum weir__step weir__h1_response_head(struct weir_session *s, struct weir__outcome *o);

static inline int weir__down_connection_fields(struct weir_session *s, struct weir_resp *r)
{
    return s->down == &weir__h1_down ? weir__h1_connection_fields(s, r)
                                     : s->down->connection_fields(s, r);
}

static inline int weir__down_body_framing(struct weir_session *s, struct weir_resp *r,
                                          bool has_length)
{
    return s->down == &weir__h1_down ? weir__h1_body_framing(s, r, has_length)
                                     : s->down->body_framing(s, r, has_length);
}

static inline int weir__down_queue_head(struct weir_session *s, struct weir_resp *r)
{
    return s->down == &weir__h1_down ? weir__h1_queue_head(s, r) : s->down->queue_head(s, r);
}

static inline void weir__down_send_continue(struct weir_session *s)
{
    if (s->down == &weir__h1_down) {
        weir__h1_send_continue(s);
    } else {
        s->down->send_continue(s);
    }
}

static inline int weir__up_request_head(struct weir_session *s, bool length_ok)
{
    return s->upf == &weir__h1_up ? weir__h1_request_head(s, length_ok)
                                  : s->upf->request_head(s, length_ok);
}

static inline enum weir__step weir__up_response_head(struct weir_session *s,
                                                     struct weir__outcome *o)
{
    return s->upf == &weir__h1_up ? weir__h1_response_head(s, o) : s->upf->response_head(s, o);
}

/* conn.c */
struct weir__proxy_worker *
weir__proxy_worker_new(struct weir_loop *loop, const struct weir_proxy_hooks *hooks, void *data,
                       struct weir__snapshot_slot *slot, struct weir__access_log *access,
                       struct weir__pool_shared *shared_pool, uint32_t extra_idle);
void weir__proxy_worker_free(struct weir__proxy_worker *w);
/**
 * Takes an accepted socket from the listener lo describes (NULL: a plain one with no cap).
 * 0; WEIR_ELIMIT when a connection cap refused it; or an error. The fd is closed on any
 * failure.
 */
int weir__proxy_accept(struct weir__proxy_worker *w, int fd, const struct sockaddr *sa,
                       socklen_t len, const struct weir__listener_opts *lo);
/** Graceful: close idle connections, let active ones finish their request then close. */
void weir__proxy_drain(struct weir__proxy_worker *w);
/** Immediate: close every connection. */
void weir__proxy_close_all(struct weir__proxy_worker *w);
/** Per-turn housekeeping: snapshot holder, access-log age flush. */
void weir__proxy_turn(struct weir__proxy_worker *w);

void weir__conn_close(struct weir__conn *c);
/**
 * Closes after a final response: shuts our side down and discards what the client still sends
 * for a short while, so unread request bytes do not turn the close into a reset that destroys
 * the response in flight.
 */
void weir__conn_linger(struct weir__conn *c);
/* WEIR_REJECT_MAX: the longest error reply reject_head writes (status line, headers, body). */
#define WEIR_REJECT_MAX 256
/** The session ended: continue with the next request or close. */
void weir__conn_request_done(struct weir__conn *c, bool close_conn);
/** A closed connection's last session ended: it is freed at the end of the turn. */
void weir__conn_unzombie(struct weir__conn *c);
/** Sets the client-side deadline ms from now (0 disarms). */
void weir__conn_set_deadline(struct weir__conn *c, uint64_t ms);

/* h2_down.c: HTTP/2 client connections (each stream a session) */
struct weir__h2_limits;
/** The HTTP/2 bounds of cfg for a client connection, or (origin) an origin connection. */
void weir__h2_limits_of(const struct weir_config *cfg, bool origin, struct weir__h2_limits *l);
/** Turns c (its preface or ALPN said h2) into an HTTP/2 connection. 0 or an error. */
int weir__conn_h2_start(struct weir__conn *c);
/** c's socket changed readiness (CONN_H2). */
void weir__conn_h2_event(struct weir__conn *c);
/** c's timer fired while idle (CONN_H2): GOAWAY and close. */
void weir__conn_h2_idle(struct weir__conn *c);
/** Drain: GOAWAY; the streams in progress finish. */
void weir__conn_h2_drain(struct weir__conn *c);
/** c is closing: every session on its streams is told. */
void weir__conn_h2_close(struct weir__conn *c);
/** A session still waiting on a closed HTTP/2 connection (the worker stops). */
struct weir_session *weir__conn_h2_orphan(struct weir__conn *c);
/** A session on stream hs ended (complete: its response was sent whole). */
void weir__conn_h2_request_done(struct weir__conn *c, struct weir__h2s *hs, bool complete);
/** An HTTP/2 stream's session ends: its timer stops, its response trailers go to the stream. */
void weir__session_h2_end(struct weir_session *s);
/** The client-side deadline of an HTTP/2 stream's session fired. */
void weir__session_h2_timer(struct weir_loop *loop, struct weir_timer *t);

/* h2_up.c: HTTP/2 to origins, streams over each worker's own connections */
enum weir__h2up_take {
    WEIR_H2UP_READY = 0, /* s->ux.h2c has room for a stream */
    WEIR_H2UP_WAIT,      /* waiting for a connection another session is making */
    WEIR_H2UP_NONE,      /* make one (s->ux.h2make, if make: others wait for it) */
};
/** Whether s's peer is spoken to in HTTP/2 from the start (h2, h2c; not auto). */
bool weir__h2up_wanted(const struct weir_peer *peer);
/** A connection with room for s's request; make: else the one s will make, for waiters. */
enum weir__h2up_take weir__h2up_take(struct weir_session *s, bool make);
/** Whether ALPN chose h2 on the connection s is making. */
bool weir__h2up_alpn_h2(const struct weir_session *s);
/** Turns the connection s made into an HTTP/2 connection of the worker (s->ux.h2c). */
int weir__h2up_promote(struct weir_session *s);
/** Opens s's stream on s->ux.h2c with the request head (s->ust is its virtual stream). */
enum weir__step weir__h2up_open(struct weir_session *s, struct weir__outcome *o);
/** s lets go of its stream and connection (waiting or making included). */
void weir__h2up_release(struct weir_session *s);
/** Leaves the wait for a connection; gives up the one s was making. */
void weir__h2up_unwait(struct weir_session *s);
void weir__h2up_unmake(struct weir_session *s);
/** Closes the worker's idle HTTP/2 origin connections (all: every one). */
void weir__h2up_close_idle(struct weir__proxy_worker *w, bool all);

/* session.c: the phase machine, the retry loop, errors, the end */
int weir__session_start(struct weir__conn *c, const struct weir__h1_request *hr, size_t head_len);
/**
 * A session for a request on c with its snapshot and arena, before its head is adopted; the
 * caller fills the request, then calls weir__session_begin. NULL when out of memory.
 */
struct weir_session *weir__session_new(struct weir__conn *c);
/** A session of worker w on snapshot h (one more reference to it) in a fresh arena, with no
    client side yet. NULL when out of memory. */
struct weir_session *weir__session_alloc(struct weir__proxy_worker *w,
                                         struct weir__snapshot_holder *h);
/** Frees a session weir__session_alloc made that never ran. */
void weir__session_discard(struct weir_session *s);
/** Calls the new_ctx hook (if any) and keeps its ctx for the session's other hooks. */
void weir__session_new_ctx(struct weir_session *s);
/** Runs new_ctx, the early refusals (rate, size) and the phases of a filled-in session. */
void weir__session_begin(struct weir_session *s);
/** Sets the client-side deadline ms from now (0 disarms): the connection's or the stream's. */
void weir__session_client_deadline(struct weir_session *s, uint64_t ms);
/** Whether the client side can no longer be written to (connection closed, stream reset). */
bool weir__session_client_dead(const struct weir_session *s);
/**
 * Runs the session's phases until it blocks (I/O, a timer, a suspended hook) or ends. Every
 * event enters here; nothing below session.c calls it.
 */
void weir__session_run(struct weir_session *s);
/**
 * Ends the request with an error: an error response when nothing was sent yet, else a close.
 * Moves the phase only; the caller runs or returns to weir__session_run.
 */
void weir__session_fail(struct weir_session *s, enum weir_error_type type,
                        enum weir_error_source src, int sys_errno, const char *context);
/** The client-side timer fired for an active session. */
void weir__session_client_timeout(struct weir_session *s);
/** The client socket changed readiness. */
void weir__session_client_event(struct weir_session *s);
/** The session's upstream connection changed readiness (its io callback while owned). */
void weir__session_upstream_event(struct weir_loop *loop, struct weir_io *io, uint32_t events);
/** The exchange's timer (upstream deadlines) fired. */
void weir__session_upstream_timer(struct weir_loop *loop, struct weir_timer *t);
/**
 * Ends the session from outside the phase machine (the client connection closed, the worker
 * stops). A session whose hook is suspended waits in PH_CLOSING for the resume.
 */
void weir__session_abort(struct weir_session *s);
/** Ends a session that waits for a hook that will never resume (the worker stops). */
void weir__session_abandon(struct weir_session *s);

/* background.c: sessions with no client (a stale-while-revalidate refresh) */
/**
 * A background session of from's worker on from's snapshot, with from's client identity;
 * the caller fills its request (s->req, GET with no body) and calls weir__bg_start. NULL when
 * the worker runs WEIR_MAX_BACKGROUND already, drains, or is out of memory.
 */
struct weir_session *weir__bg_new(struct weir_session *from);
/** Starts s at the end of the loop turn (never inside the caller's phase). */
void weir__bg_start(struct weir_session *s);
/** s ends (session_end): off the worker's list. */
void weir__bg_end(struct weir_session *s);
/** Whether s ran (new_ctx was called: the logging hook may see it). */
bool weir__bg_started(const struct weir_session *s);
/** The worker drains or stops: every background session ends (or waits in PH_CLOSING). */
void weir__bg_abort_all(struct weir__proxy_worker *w);
/** The worker is freed: those still waiting for a hook end too. */
void weir__bg_abandon_all(struct weir__proxy_worker *w);

/* session_api.c: the backend wait queue behind weir_session_select_backend */
void weir__session_wait_end(struct weir_session *s);

/* upstream.c: the upstream exchange */
/** Arms the exchange for the peer just chosen (UP_IDLE); the session keeps its fields. */
void weir__upstream_init(struct weir_session *s);
/** Runs the exchange's sub-states as far as they go; arms its timers when blocked. */
/**
 * Whether the client is gone while its request is in flight: a reset, or (unless
 * ignore_client_abort) a FIN after the whole request with nothing pipelined behind it.
 */
bool weir__client_hung_up(const struct weir_session *s);
/** ignore_client_abort: stop writing to a client that is gone, and let the exchange finish. */
void weir__client_abandon(struct weir_session *s);
enum weir__step weir__upstream_run(struct weir_session *s, struct weir__outcome *o);
/** Gives the connection back to the pool (reusable and complete) or closes it. */
void weir__upstream_release(struct weir_session *s, bool reusable);
/**
 * Puts the request back to before its first byte went upstream (the head built before is
 * kept) and the exchange to UP_IDLE; fresh: the next connection must be a new one.
 */
void weir__upstream_rewind(struct weir_session *s, bool fresh);

/** Fills o for a failure after connecting (stale and replayable from the exchange's state). */
enum weir__step weir__upstream_error(struct weir_session *s, struct weir__outcome *o,
                                     enum weir_error_type type, int sys_errno, const char *context);
/** Fills o for a failure that ends the request. */
enum weir__step weir__outcome_end(struct weir__outcome *o, enum weir_error_type type,
                                  enum weir_error_source src, int sys_errno, const char *context);

/* pipe.c: body pipes */
enum weir__pipe_status weir__pipe_step(struct weir_session *s, struct weir__pipe *p,
                                       struct weir__pipe_io *io);
/** Sets p up for a source body of kind (and length) with a fresh chunked decoder. */
void weir__pipe_source(struct weir_session *s, struct weir__pipe *p, enum weir__h1_body kind,
                       uint64_t length);

/*
 * spool.c: response buffering. A spool holds, in order, the response bytes the client cannot
 * take yet: in memory up to `memory`, then in an unnamed temporary file in dir up to `max`.
 */
struct weir__spool;
/** A spool in s's arena holding nothing yet (NULL: the arena is out of memory); dir NULL or
    "": memory only. dir must live as long as the session. */
struct weir__spool *weir__spool_new(struct weir_session *s, uint64_t memory, const char *dir,
                                    uint64_t max);
/** Frees what sp holds (chunks, file); sp itself lives in the arena. NULL is fine. */
void weir__spool_free(struct weir__spool *sp);
/** Bytes held (0 for NULL). */
uint64_t weir__spool_held(const struct weir__spool *sp);
/**
 * A pipe's flush through sp: with nothing held, q is written straight to dst; what remains of
 * q is copied into sp as far as it fits (q keeps the rest). Bytes written to dst, or -errno.
 */
ssize_t weir__spool_take(struct weir__spool *sp, struct weir__stream *dst, struct weir__outq *q);
/**
 * Writes held bytes to dst: DONE when none is left, BLOCKED, ERR_DST (a write failed), or
 * ERR_SRC (the file could not be read back). discard: drop them all (the client is gone).
 * Adds the bytes written to *written.
 */
enum weir__pipe_status weir__spool_drain(struct weir__spool *sp, struct weir__stream *dst,
                                         bool discard, uint64_t *written);

/* forward.c: what crosses the proxy (hop-by-hop fields, X-Forwarded-*, Via, framing) */
/** Builds the upstream request head once (hooks run once even if the request is retried). */
int weir__forward_request_head(struct weir_session *s);
/** Runs the response hooks, decides the framing towards the client, queues the head. */
int weir__forward_response_head(struct weir_session *s);
/** A Content-Length value: 1 to 19 decimal digits, nothing else. */
bool weir__parse_length(struct weir_iov v, uint64_t *out);
/** Appends a field whose bytes outlive the request without copying them when there is room. */
int weir__push_field(struct weir_headers *h, struct weir_iov name, struct weir_iov value);

/* grpc_web.c: gRPC-Web <-> gRPC (weir_session_set_grpc_web) */
/** The request head as gRPC: its Content-Type (and Content-Length for -text). */
int weir__grpc_web_request(struct weir_session *s, struct weir_headers *h);
/** A gRPC response head as the client's gRPC-Web one; anything else is left alone. */
void weir__grpc_web_response_head(struct weir_session *s, struct weir_resp *r);
/** The Content-Type of weir's own gRPC errors for s: the client's gRPC-Web type, or gRPC's. */
struct weir_iov weir__grpc_web_type(const struct weir_session *s);
/** Whether the response body is translated (its head was gRPC's). */
bool weir__grpc_web_response_on(const struct weir_session *s);
/** Whether the request body is base64 to decode (-text). */
bool weir__grpc_web_request_text(const struct weir_session *s);
/** Whether the request failed on a -text body that was not base64. */
bool weir__grpc_web_bad_body(const struct weir_session *s);
/** The body filters of the two directions; each runs the user's hook too. */
enum weir_hook_result weir__grpc_web_request_filter(struct weir_session *s, void *ctx,
                                                    struct weir_iov *data, bool end);
enum weir_hook_result weir__grpc_web_response_filter(struct weir_session *s, void *ctx,
                                                     struct weir_iov *data, bool end);
/** Frees the translation's buffers (session end). */
void weir__grpc_web_free(struct weir_session *s);

/* cache.c: the cache in the request's path (weir_session_cache_enable) */
int weir__cache_worker_init(struct weir__proxy_worker *w);
void weir__cache_worker_free(struct weir__proxy_worker *w);
/** PH_CACHE: lookup, serve, or take the lock (writer) or wait. Returns as the phases do. */
bool weir__cache_phase(struct weir_session *s);
/** The writer's response head (after upstream_response_filter): store it or not. */
void weir__cache_response_head(struct weir_session *s, struct weir_resp *r);
/**
 * The origin's response head for a writer refreshing a stale object: a 304 refreshes it, a
 * 5xx within stale-if-error is answered with it. True when the session now serves it (its
 * upstream let go, s->upf the cache's: read the head again).
 */
bool weir__cache_origin_head(struct weir_session *s);
/** Whether a stale object may answer for a failed writer (stale-if-error). */
bool weir__cache_stale_ok(const struct weir_session *s);
/** The writer failed (connect, timeout, error): serve the stale object if allowed. */
bool weir__cache_serve_stale_on_error(struct weir_session *s);
/** Whether the response body is being stored (the pipe tees it: weir__cache_tee). */
bool weir__cache_teeing(const struct weir_session *s);
void weir__cache_tee(struct weir_session *s, struct weir_iov data);
/** The response is complete: the fill finishes. */
void weir__cache_complete(struct weir_session *s);
/** The session ends: locks, waits, fills and objects let go. */
void weir__cache_end(struct weir_session *s);
/** Whether the response comes from storage (upstream hooks do not run). */
bool weir__cache_serving(const struct weir_session *s);
/** Adds Cache-Status to r (once) for a cached request. */
void weir__cache_status(struct weir_session *s, struct weir_resp *r);

/* ws.c: WebSocket over HTTP/2 (RFC 8441) to an HTTP/1.1 origin */
/** The upgrade's own fields for s->ws_h2: a fresh Sec-WebSocket-Key (s->ws_key), a version. */
int weir__ws_h2_request(struct weir_session *s, struct weir_headers *h);
/** Whether h's Sec-WebSocket-Accept answers key (RFC 6455 4.2.2). */
bool weir__ws_accept_ok(struct weir_iov key, const struct weir_headers *h);
/** The origin's 101 (its accept checked: weir__ws_accept_ok) as the HTTP/2 client's 200. */
void weir__ws_h2_response(struct weir_resp *r);

/* h1_framing.c */
/** Extra header slots a parsed head gets beyond max_headers, for the fields hooks add. */
#define WEIR_HEADERS_SLACK 64
/** The most fields one head parse takes (w->fields; server.limits.max_headers' ceiling). */
#define WEIR_MAX_HEADERS_PARSED 10000
static inline struct weir_iov weir__iov_rebase(struct weir_iov v, const char *from, const char *to)
{
    return (struct weir_iov){to + (v.base - from), v.len};
}

/**
 * Copies a parsed head (len bytes at head) into arena a and points h's n fields into the copy
 * (h sized for n + 8, growing to max). Returns the copy (rebase other parts with
 * weir__iov_rebase) or NULL.
 */
static inline const char *weir__head_adopt(struct weir_arena *a, const char *head, size_t len,
                                           const struct weir_header *fields, size_t n, uint32_t max,
                                           struct weir_headers *h)
{
    char *copy = weir_arena_alloc(a, len);
    if (copy == NULL) {
        return NULL;
    }
    memcpy(copy, head, len);
    if (weir__headers_init(h, a, (uint32_t)n + 8, max) != 0) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        h->v[i].name = weir__iov_rebase(fields[i].name, head, copy);
        h->v[i].value = weir__iov_rebase(fields[i].value, head, copy);
    }
    h->n = (uint32_t)n;
    return copy;
}

/* accesslog.c */
void weir__access_log_request(struct weir_session *s);
/** Logs a request head rejected before it became a session. */
void weir__access_log_reject(struct weir__conn *c, int status, size_t body_bytes);

#endif
