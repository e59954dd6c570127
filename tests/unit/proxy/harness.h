/*
 * A proxy worker driven without the server or the network, for unit tests and fuzz drivers.
 *
 * One event loop, one configuration snapshot and one weir__proxy_worker on the calling thread:
 * no weir_server, no threads, no TCP. The client connection is one end of an AF_UNIX
 * socketpair handed to weir__proxy_accept with a made-up 127.0.0.1 address; the test holds the
 * other end (h->client). Origins are AF_UNIX listeners in a temporary directory, watched on
 * the same loop: each complete request that arrives on one of their connections is answered
 * with the next scripted reply (bytes, possibly in pieces, then keep, close or reset). Every
 * run is bounded by a safety timer, and the harness's logging hook stops the loop after the
 * number of requests asked for, so nothing can hang.
 *
 *   struct harness *h = harness_new(NULL);              default config; h->cfg is editable
 *   struct harness_origin *o = harness_origin_add(h, "a", replies, nreplies);
 *   h->hooks.upstream_peer = my_peer;                   which calls harness_peer(peer, o)
 *   harness_start(h);                                   worker and client connection
 *   harness_client_send(h, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0);
 *   harness_run(h, 1, 3000);                            until 1 logging call; 0 or ETIMEDOUT
 *   ... h->client.in, h->logs[0], o->conns[0]->in ...
 *   harness_free(h);
 *
 * Everything runs on the calling thread; nothing blocks (sockets are non-blocking and the
 * scripted bytes are small enough for a socket buffer).
 *
 * fuzz/fuzz_proxy.c drives the same harness without timers: it writes from either end itself
 * and calls harness_settle between writes, so a run depends on its input alone. fuzz/fuzz_h2.c
 * does the same with an HTTP/2 client (h->listener.h2c set).
 */
#ifndef WEIR_TESTS_PROXY_HARNESS_H
#define WEIR_TESTS_PROXY_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "../tmpdir.h"
#include "proxy/proxy_int.h"

#define HARNESS_IN_MAX      65536 /* bytes one end keeps of what it received */
#define HARNESS_ENDS_MAX    8     /* origin-side connections, all origins together */
#define HARNESS_ORIGINS_MAX 4
#define HARNESS_LOGS_MAX    8 /* requests whose logging call is recorded */

struct harness;
struct harness_end;
struct harness_origin;

/** What an origin does once its reply's bytes are written. */
enum harness_after {
    HARNESS_KEEP = 0, /* keep the connection open for the next request */
    HARNESS_CLOSE,    /* close it (ends a close-delimited body) */
    HARNESS_RESET,    /* close it with the request still unread: the proxy reads ECONNRESET */
};

/** The answer to one complete request, in request order across an origin's connections. */
struct harness_reply {
    const char *bytes; /* NULL: say nothing */
    size_t len;        /* 0: strlen(bytes) */
    size_t piece;      /* 0: one write; else this many bytes per write, a loop timer tick apart */
    enum harness_after after;
};

/** Called when bytes or an end of stream arrived at e (after they were added to e->in). */
typedef void (*harness_end_fn)(struct harness_end *e);

/** The test's side of one socket: the client's end, or an origin's accepted connection. */
struct harness_end {
    struct harness *h;
    struct harness_origin *origin; /* NULL for the client end */
    unsigned index;                /* accept order within its origin */
    int fd;                        /* -1 once closed */
    struct weir_io io;
    char in[HARNESS_IN_MAX]; /* everything received, in order */
    size_t in_len;
    size_t taken;           /* bytes of in really read off the socket (the rest only peeked at) */
    bool eof;               /* the proxy closed its side, or a read failed (err) */
    int err;                /* -errno of a failed read; -ENOBUFS when in filled up */
    bool peek;              /* look at bytes without consuming them (to reset with them unread) */
    size_t served;          /* bytes of in belonging to requests already answered (origins) */
    unsigned requests;      /* complete requests seen (origins) */
    harness_end_fn on_data; /* NULL: origins answer with their replies, the client just keeps */
    void *data;             /* the test's */
    /* the bytes going out (a reply or harness_end_send_pieces) */
    const char *out;
    size_t out_left;
    size_t piece;
    enum harness_after after;
    bool sending;
    struct weir_timer timer;
};

/** A fake origin: an AF_UNIX listener answering requests with scripted replies. */
struct harness_origin {
    struct harness *h;
    char name[32];
    struct sockaddr_storage addr; /* a sockaddr_un in zeroed storage */
    socklen_t addrlen;
    int lfd;
    struct weir_io io;
    const struct harness_reply *replies; /* the caller's, valid until harness_free */
    size_t nreplies;
    size_t next;                                 /* the reply the next complete request gets */
    struct harness_end *conns[HARNESS_ENDS_MAX]; /* accepted connections, in order */
    unsigned accepted;
    harness_end_fn on_data; /* given to each accepted connection (NULL: the replies) */
};

/** What the logging hook saw for one request. */
struct harness_log {
    int status; /* weir_session_status */
    unsigned retries;
    unsigned request_index;
    bool has_err;
    struct weir_error err;
    uint64_t body_sent;
    uint64_t body_received;
};

struct harness {
    struct weir_loop *loop;
    struct weir_config *cfg; /* editable until harness_start; the snapshot owns it from then */
    /** The test's hooks, set before harness_start (upstream_peer is required). The worker
        runs a copy whose logging records into logs[] and stops the loop, then calls this
        logging if set. */
    struct weir_proxy_hooks hooks;
    void *data; /* the test's (harness_of(s)->data from a hook) */
    struct weir__proxy_worker *w;
    struct harness_end client; /* the test's end of the client connection */
    struct harness_origin origins[HARNESS_ORIGINS_MAX];
    unsigned norigins;
    struct harness_end ends[HARNESS_ENDS_MAX];
    unsigned nends;
    struct harness_log logs[HARNESS_LOGS_MAX];
    unsigned nlogs;                  /* logging calls so far (may exceed HARNESS_LOGS_MAX) */
    char dir[WEIR_TEST_DIR_MAX + 1]; /* the temporary directory of the origins' sockets */
    /** SO_SNDBUF of weir's end of the client connection, set before harness_start (0: the
        system's): a small one makes weir's writes to the client block early. */
    int client_sndbuf;
    /** What the listener that accepted the client connection says (weir__proxy_accept's
        options), set before harness_start. Zeroed (harness_new): a plain cleartext HTTP/1.1
        listener; .h2c = true: one that also takes HTTP/2 with prior knowledge. */
    struct weir__listener_opts listener;
    /* private */
    struct weir_proxy_hooks run_hooks;
    struct weir__snapshot_slot slot;
    struct weir__pool_shared *shared;
    unsigned stop_at;
    struct weir_timer safety;
    bool timed_out;
    bool rcu;
};

/**
 * A harness with a loop and a configuration: weir_config_new_default when yaml is NULL,
 * else weir_config_load_string(yaml). NULL on failure (bad YAML, no temporary directory).
 * Ignores SIGPIPE for the process, as the server does.
 */
struct harness *harness_new(const char *yaml);

/** Closes everything, frees the worker, the snapshot and the loop, removes the sockets. */
void harness_free(struct harness *h);

/**
 * An origin listening on <dir>/<name>, answering with replies (kept by pointer). Call before or
 * after harness_start. NULL when full or on a socket error.
 */
struct harness_origin *harness_origin_add(struct harness *h, const char *name,
                                          const struct harness_reply *replies, size_t nreplies);

/**
 * Creates the snapshot, the shared pool tier (when the config has one, as the server does) and
 * the worker, then hands it the client connection. 0 or a negative code.
 */
int harness_start(struct harness *h);

/**
 * Runs the loop until the logging hook has been called `logs` more times (0 or WEIR_ETIMEDOUT
 * when the safety timer of timeout_ms fired first), or with logs == 0 for timeout_ms (0). Then
 * reads what is left on the test's sockets without running any callback.
 */
int harness_run(struct harness *h, unsigned logs, uint32_t timeout_ms);

/**
 * Steps the loop without waiting and without the safety timer, turn by turn, until a turn runs
 * no callback (quiescent: every byte written has been read and acted on), at most max_turns
 * turns. Then reads what is left on the test's sockets. The number of turns run, or
 * WEIR_ETIMEDOUT when the loop was still busy after max_turns (a livelock), or -errno.
 * Deterministic: nothing depends on time passing (see weir__loop_skew_clock for timeouts).
 */
int harness_settle(struct harness *h, unsigned max_turns);

/** The harness a session's hook runs under. */
struct harness *harness_of(struct weir_session *s);

/** Fills peer (from upstream_peer) with origin o's address and its name. 0 or WEIR_EINVAL. */
int harness_peer(struct weir_peer *peer, const struct harness_origin *o);
/** Fills peer with the address <dir>/<name>, where nothing need listen. 0 or WEIR_EINVAL. */
int harness_peer_path(struct harness *h, struct weir_peer *peer, const char *name);

/** Writes bytes (len 0: strlen) to the client connection at once. 0 or -errno. */
int harness_client_send(struct harness *h, const char *bytes, size_t len);
/** Writes bytes (len 0: strlen) from e at once. 0 or -errno (-EAGAIN: the socket is full). */
int harness_end_send(struct harness_end *e, const char *bytes, size_t len);
/**
 * Writes bytes (kept by pointer) from e piece bytes at a time, one loop timer tick apart, then
 * does after. 0, WEIR_EINVAL (e is already sending) or -errno.
 */
int harness_end_send_pieces(struct harness_end *e, const char *bytes, size_t len, size_t piece,
                            enum harness_after after);
/** Closes e's socket (the proxy sees an end of stream). */
void harness_end_close(struct harness_end *e);

/**
 * The length of the complete HTTP/1.1 request at buf (head, then a Content-Length or chunked
 * body with its trailers); 0 when more bytes are needed; -1 when the framing is unreadable.
 */
ssize_t harness_message_len(const char *buf, size_t len);

/**
 * Decodes the chunked body at buf into out (at most cap bytes). Bytes of out, or -1 when it is
 * malformed, incomplete or too long. *trailers / *trailers_len (may be NULL) get the trailer
 * section (the fields between the last chunk and the final CRLF).
 */
ssize_t harness_dechunk(const char *buf, size_t len, char *out, size_t cap, const char **trailers,
                        size_t *trailers_len);

#endif
