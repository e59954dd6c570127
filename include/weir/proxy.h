/*
 * The programmable proxy: a table of hooks called at each phase of a request, as Pingora's
 * ProxyHttp. Every hook is optional except upstream_peer. Hooks run on the worker thread that
 * owns the connection and must not block: a hook that waits for something returns
 * WEIR_HOOK_PENDING and later calls weir_session_resume() on the same thread (from a timer or
 * an I/O completion on weir_session_loop()).
 */
#ifndef WEIR_PROXY_H
#define WEIR_PROXY_H

#include <sys/socket.h>

#include "weir/buf.h"
#include "weir/cache.h"
#include "weir/config.h"
#include "weir/error.h"
#include "weir/http.h"
#include "weir/lb.h"
#include "weir/loop.h"
#include "weir/mem.h"
#include "weir/peer.h"
#include "weir/tls.h"

WEIR_BEGIN_DECLS

/** One request/response exchange on a client connection. Owned by the library. */
struct weir_session;

/** What a hook tells the proxy to do next. */
enum weir_hook_result {
    WEIR_HOOK_CONTINUE = 0, /**< go on to the next phase */
    WEIR_HOOK_DONE,         /**< the hook answered the client (weir_session_respond*) */
    WEIR_HOOK_PENDING,      /**< suspended: the hook will call weir_session_resume() */
    WEIR_HOOK_ERROR,        /**< fail the request; fail_to_proxy chooses the answer */
};

/**
 * The hooks, in the order they run. Which may return WEIR_HOOK_PENDING: early_request_filter,
 * request_filter and upstream_peer. Which may return WEIR_HOOK_DONE: early_request_filter and
 * request_filter. The ctx argument is what new_ctx returned (NULL without new_ctx).
 */
struct weir_proxy_hooks {
    /** Per-request context, allocated from weir_session_arena(). data is the service's. */
    void *(*new_ctx)(struct weir_session *s, void *data);
    /** First look at the request head, before anything else. */
    enum weir_hook_result (*early_request_filter)(struct weir_session *s, void *ctx);
    /** Inspect or edit the request; may answer it directly. */
    enum weir_hook_result (*request_filter)(struct weir_session *s, void *ctx);
    /**
     * Each piece of request body on its way up; end is true on the last call (body may then be
     * empty). The hook may edit the bytes in place or point *body elsewhere (arena memory);
     * WEIR_HOOK_ERROR aborts the request.
     */
    enum weir_hook_result (*request_body_filter)(struct weir_session *s, void *ctx,
                                                 struct weir_iov *body, bool end);
    /**
     * Whether and how to cache this request: call weir_session_cache_enable here (or in any
     * earlier hook). Runs after request_filter, only when no response was made yet.
     */
    enum weir_hook_result (*request_cache_filter)(struct weir_session *s, void *ctx);
    /**
     * The cache key of a cached request: set *key (arena or static memory). Without this hook
     * (or when it leaves *key empty) the policy's key parts make it.
     */
    enum weir_hook_result (*cache_key)(struct weir_session *s, void *ctx, struct weir_iov *key);
    /**
     * A stored response was found (fresh: within its freshness lifetime). Serve it, or fetch
     * instead (the new response replaces it). The head is the stored one, read only.
     */
    enum weir_cache_hit_action (*cache_hit_filter)(struct weir_session *s, void *ctx,
                                                   const struct weir_resp *stored, bool fresh);
    /** The cached request missed and this request fetches (it is the key's writer or passes). */
    void (*cache_miss)(struct weir_session *s, void *ctx);
    /** Required: choose where the request goes by filling *peer. */
    enum weir_hook_result (*upstream_peer)(struct weir_session *s, void *ctx,
                                           struct weir_peer *peer);
    /** A connection to the peer is ready (reused says whether it came from the pool). */
    enum weir_hook_result (*connected_to_upstream)(struct weir_session *s, void *ctx,
                                                   const struct weir_peer *peer, bool reused);
    /** Edit the request head about to be sent upstream. */
    enum weir_hook_result (*upstream_request_filter)(struct weir_session *s, void *ctx,
                                                     struct weir_req *upstream_req);
    /** The response head as it arrived from upstream (hop-by-hop fields already removed). */
    enum weir_hook_result (*upstream_response_filter)(struct weir_session *s, void *ctx,
                                                      struct weir_resp *resp);
    /**
     * A cached request's response from upstream (after upstream_response_filter): *c comes
     * preset by RFC 9111 and the policy; the hook may change whether it is stored and its
     * times. Not called for requests that pass the cache.
     */
    void (*response_cache_filter)(struct weir_session *s, void *ctx, const struct weir_resp *resp,
                                  struct weir_cacheability *c);
    /**
     * The response head from upstream about to be sent to the client. Removing
     * Content-Length makes the response chunked (HTTP/1.1 clients) or close-delimited, so body
     * filters may change its length. Not called for responses weir makes itself
     * (weir_session_respond*, error pages), as in Pingora: those are final as given.
     */
    enum weir_hook_result (*response_filter)(struct weir_session *s, void *ctx,
                                             struct weir_resp *resp);
    /** Each piece of response body on its way down; same contract as request_body_filter. */
    enum weir_hook_result (*response_body_filter)(struct weir_session *s, void *ctx,
                                                  struct weir_iov *body, bool end);
    /** Called exactly once per request, at its end; err is NULL on success. */
    void (*logging)(struct weir_session *s, void *ctx, const struct weir_error *err);
    /**
     * Connecting to peer failed. err->retry comes preset (true when retries remain for a
     * connect failure); the hook may change it. On retry, upstream_peer runs again.
     */
    void (*fail_to_connect)(struct weir_session *s, void *ctx, const struct weir_peer *peer,
                            struct weir_error *err);
    /**
     * The exchange with the upstream failed after connecting (including a read or write
     * timeout). err->retry comes preset when a reused connection died before any byte of
     * response: the request goes again on a fresh connection to the same peer, outside
     * max_retries. The hook may clear it, or set it for any other failure: the request is then
     * retried (upstream_peer runs again; weir_lb_select avoids this backend) if it can be
     * replayed (no byte of its body consumed, no byte of response seen) and max_retries
     * allows. Set it only for requests that are safe to send twice (idempotent ones).
     */
    void (*error_while_proxy)(struct weir_session *s, void *ctx, const struct weir_peer *peer,
                              struct weir_error *err);
    /**
     * The request failed. Return the status to answer with (0: the default, 502/504/500 by
     * error type); or answer yourself with weir_session_respond* and return 0. Not called when
     * the response has already started: the connection is closed instead.
     */
    int (*fail_to_proxy)(struct weir_session *s, void *ctx, const struct weir_error *err);
};

/* ---- Session accessors. All of them: worker thread only, valid until logging returns. ---- */

/** The request head (editable until upstream_request_filter returns). */
WEIR_EXTERN struct weir_req *weir_session_req(struct weir_session *s);
/** The response head once it exists (from upstream_response_filter on), else NULL. */
WEIR_EXTERN struct weir_resp *weir_session_resp(struct weir_session *s);
/** The request's arena: freed when the request ends. */
WEIR_EXTERN struct weir_arena *weir_session_arena(struct weir_session *s);
/** The worker's event loop, for timers and I/O of async hooks. */
WEIR_EXTERN struct weir_loop *weir_session_loop(struct weir_session *s);
/** The configuration snapshot this request runs under (held until the request ends). */
WEIR_EXTERN const struct weir_config *weir_session_config(const struct weir_session *s);
/** The client's socket address. */
WEIR_EXTERN const struct sockaddr *weir_session_client_addr(const struct weir_session *s);
/** The client's IP as text. */
WEIR_EXTERN struct weir_iov weir_session_client_ip(const struct weir_session *s);
/**
 * The client connection's TLS parameters and client certificate (computed on the first call
 * for a connection, then kept with it), or NULL for a connection without TLS. When they
 * cannot be had (out of memory, or the client closed while the request was suspended before
 * any call) the result says so: verify "FAILED:unavailable", no certificate, empty strings.
 */
WEIR_EXTERN const struct weir_tls_info *weir_session_tls(struct weir_session *s);
/** The ctx new_ctx returned. */
WEIR_EXTERN void *weir_session_ctx(const struct weir_session *s);
/** The peer chosen by upstream_peer (NULL before). */
WEIR_EXTERN const struct weir_peer *weir_session_peer(const struct weir_session *s);
/** How many times the request was retried on another connection so far. */
WEIR_EXTERN unsigned weir_session_retries(const struct weir_session *s);
/** 1 for the first request on a client connection, 2 for the next, ... */
WEIR_EXTERN unsigned weir_session_request_index(const struct weir_session *s);
/** Status sent to the client (0 before the response head is sent). */
WEIR_EXTERN int weir_session_status(const struct weir_session *s);
/** Response body bytes sent to the client so far. */
WEIR_EXTERN uint64_t weir_session_body_bytes_sent(const struct weir_session *s);
/** Request body bytes received from the client so far. */
WEIR_EXTERN uint64_t weir_session_body_bytes_received(const struct weir_session *s);
/** Wall-clock time the request started, seconds since the epoch. */
WEIR_EXTERN int64_t weir_session_start_time(const struct weir_session *s);
/** Milliseconds since the request started. */
WEIR_EXTERN uint64_t weir_session_elapsed_ms(const struct weir_session *s);

/**
 * A fresh response head with status and no fields, to fill and pass to weir_session_respond.
 * It lives in the request's arena (freed when the request ends; never free it). NULL on out
 * of memory.
 */
WEIR_EXTERN struct weir_resp *weir_session_response_new(struct weir_session *s, int status);

/**
 * Answers the client with resp and body. Neither is copied: resp (from
 * weir_session_response_new) is the session's from then on, and body must stay valid until
 * the request ends (arena memory or static data). Sets Content-Length. Use from
 * early_request_filter, request_filter or fail_to_proxy, then return WEIR_HOOK_DONE (or resume
 * with it). 0, WEIR_EINVAL (already answered) or WEIR_ENOMEM.
 */
WEIR_EXTERN int weir_session_respond(struct weir_session *s, struct weir_resp *resp,
                                     struct weir_iov body);

/** weir_session_respond with a text/plain body. */
WEIR_EXTERN int weir_session_respond_text(struct weir_session *s, int status, struct weir_iov body);

/**
 * For upstream_peer: picks a backend of lb for key into peer (weir_lb_select). While every
 * usable backend is at its max_conns the request waits, suspended, within lb's queue_size and
 * queue_timeout, then tries again. Returns what upstream_peer should return: CONTINUE (peer
 * filled), PENDING (it will resume by itself) or ERROR (503, no backend). key must stay valid
 * until the request ends (request or arena memory).
 */
WEIR_EXTERN enum weir_hook_result weir_session_select_backend(struct weir_session *s,
                                                              struct weir_lb *lb,
                                                              struct weir_iov key,
                                                              struct weir_peer *peer);

/**
 * From a hook about to return WEIR_HOOK_ERROR: the error type the request fails with (default
 * WEIR_ERR_HOOK, answered 500). WEIR_ERR_NO_BACKEND, for weir_lb_select's WEIR_EUNAVAILABLE,
 * is answered 503.
 */
WEIR_EXTERN void weir_session_set_error(struct weir_session *s, enum weir_error_type type);

/**
 * What happens when the client goes away (closes, resets, or shuts its write side) while the
 * request is in flight. false, the default, as nginx's proxy_ignore_client_abort off: the
 * upstream exchange is cancelled at once (its connection closed, not pooled) and the request
 * logged with status 499. true: the exchange goes on to its end, for work the origin must
 * finish; a client that only shut its write side still gets the response, and what a client
 * that is gone cannot take is read from the origin and thrown away. Any hook before
 * upstream_peer may set it (the router sets a route's ignore_client_abort in request_filter).
 */
WEIR_EXTERN void weir_session_set_ignore_client_abort(struct weir_session *s, bool ignore);

/**
 * Buffers this request's response (a route's buffer_responses; nginx's proxy_buffering): weir
 * reads the origin at the origin's pace and holds what the client cannot take yet, in memory
 * up to b->memory and then in an unnamed temporary file in b->spill up to b->max bytes, so a
 * slow client does not hold the origin's worker; the origin's connection goes back to the pool
 * as soon as its response is in. Past those bounds (or when the file cannot be written) weir
 * stops reading the origin until the client catches up, as without buffering. NULL, or
 * b->enabled false, turns it off (the default). Strings are copied. Any hook before the
 * response head arrives may call it (the router does in request_filter); a later call replaces
 * the earlier one. 0, WEIR_ENOMEM, or WEIR_EINVAL once the response is under way.
 */
WEIR_EXTERN int weir_session_set_response_buffering(struct weir_session *s,
                                                    const struct weir_cfg_buffering *b);

/**
 * gRPC-Web for this request (a route's grpc_web; Pingora's grpc_web module): when its
 * Content-Type is application/grpc-web or application/grpc-web-text (with any +suffix), it
 * goes upstream as gRPC (application/grpc, TE: trailers; a -text body base64-decoded, a body
 * that is not base64 answered 400) and the gRPC response comes back as gRPC-Web: the client's
 * Content-Type, the trailers as the body's last frame (flag 0x80), all of it base64 for -text.
 * The upstream must speak HTTP/2 (the peer's protocol h2, h2c or auto). Body hooks see the
 * gRPC side. Any hook before upstream_peer may call it. true when the request is gRPC-Web
 * and will be translated; false, and nothing changes, otherwise.
 */
WEIR_EXTERN bool weir_session_set_grpc_web(struct weir_session *s);

/**
 * Caches this request in zone c under policy p (copied): GET and HEAD requests without a body
 * are looked up and, on a miss, fetched once for every request of the key (the cache lock);
 * the response is stored when RFC 9111 and response_cache_filter allow. Every response of the
 * request carries Cache-Status (RFC 9211). Any hook before upstream_peer may call it (the
 * router does for a route's cache:). 0, WEIR_EINVAL (too late, or c NULL) or WEIR_ENOMEM.
 */
WEIR_EXTERN int weir_session_cache_enable(struct weir_session *s, struct weir_cache *c,
                                          const struct weir_cache_policy *p);

/**
 * Whether s is a request weir makes itself, with no client: a stale-while-revalidate refresh.
 * It runs every hook a client's request does, on the request as it stood when
 * weir_session_cache_enable was first called for the request that caused it (its client
 * address and TLS flag too; as a GET, without the client's conditions and ranges); its
 * response goes nowhere but the cache. A hook that must not run twice for one client
 * request (counting, rewriting before the cache is enabled) checks this.
 */
WEIR_EXTERN bool weir_session_is_background(const struct weir_session *s);

/**
 * Resumes a session whose hook returned WEIR_HOOK_PENDING, with the result that hook would
 * have returned. Worker thread only; the session continues at the end of the current loop
 * turn, never inside this call.
 */
WEIR_EXTERN void weir_session_resume(struct weir_session *s, enum weir_hook_result result);

WEIR_END_DECLS

#endif
