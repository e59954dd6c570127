/*
 * The Server and its Services (Pingora's model). A Server owns the process: signals, the pid
 * file, logging and the current configuration snapshot. A Service is either a proxy (hooks,
 * listening addresses, worker threads each with its own event loop) or a background task
 * (one thread with its own loop, for periodic work or a helper server).
 */
#ifndef WEIR_SERVER_H
#define WEIR_SERVER_H

#include "weir/config.h"
#include "weir/loop.h"
#include "weir/proxy.h"

WEIR_BEGIN_DECLS

struct weir_server;
struct weir_service;

/**
 * A new server in *out running under cfg (NULL: every default). The server takes cfg in every
 * case: it is freed with the server, or at once when this fails. The caller owns the server
 * (weir_server_free). Does not start anything. 0, or WEIR_ENOMEM with *out NULL.
 */
WEIR_EXTERN int weir_server_new(struct weir_config *cfg, struct weir_server **out);

/** Frees a server that is not running (after weir_server_run returned). Accepts NULL. */
WEIR_EXTERN void weir_server_free(struct weir_server *srv);

/**
 * Adds a proxy service, owned by srv (freed with it). hooks is copied; data stays the
 * caller's and is passed to new_ctx: it must outlive the server. threads and listening
 * addresses come from weir_service_set_threads / weir_service_add_listener (threads default
 * to the config's server.threads). The service goes to *out (out may be NULL). 0;
 * WEIR_EINVAL (hooks->upstream_peer is NULL) or WEIR_ENOMEM, with *out NULL.
 */
WEIR_EXTERN int weir_server_add_proxy(struct weir_server *srv, const char *name,
                                      const struct weir_proxy_hooks *hooks, void *data,
                                      struct weir_service **out);

/** Adds a listening address ("ip:port") to a proxy service. 0, WEIR_EINVAL or WEIR_ENOMEM. */
WEIR_EXTERN int weir_service_add_listener(struct weir_service *svc, const char *address);

/**
 * Adds a listener described by a configuration entry: its address, and its max_connections
 * (open connections on this listener across every worker; 0 = no cap; over it a new
 * connection is closed at once). 0, WEIR_EINVAL or WEIR_ENOMEM.
 */
WEIR_EXTERN int weir_service_add_listener_cfg(struct weir_service *svc,
                                              const struct weir_cfg_listener *l);

/** Sets the number of worker threads of a proxy service (1..256). 0 or WEIR_EINVAL. */
WEIR_EXTERN int weir_service_set_threads(struct weir_service *svc, unsigned threads);

/** Background-service callbacks; both run on the service's own thread. */
struct weir_background_ops {
    /** Sets up timers and I/O on loop. Return 0, or an error to fail the server start. */
    int (*start)(struct weir_loop *loop, void *data);
    /** Tears them down when the server stops. May be NULL. */
    void (*stop)(struct weir_loop *loop, void *data);
};

/**
 * Adds a background service (one thread), owned by srv, to *out (out may be NULL). ops is
 * copied; data stays the caller's (free it after weir_server_free). 0; WEIR_EINVAL (no
 * ops->start) or WEIR_ENOMEM, with *out NULL.
 */
WEIR_EXTERN int weir_server_add_background(struct weir_server *srv, const char *name,
                                           const struct weir_background_ops *ops, void *data,
                                           struct weir_service **out);

/**
 * Binds every listener, writes the pid file, starts every service and runs until a signal:
 * SIGTERM or SIGQUIT stop accepting and let in-flight requests finish within the grace period;
 * SIGINT stops at once. Blocks the calling thread. Returns 0 after a clean stop, or a
 * negative code if the server could not start (an error is logged).
 */
WEIR_EXTERN int weir_server_run(struct weir_server *srv);

/** Asks a running server to stop gracefully (thread- and signal-safe). */
WEIR_EXTERN void weir_server_shutdown(struct weir_server *srv);

/** The current configuration snapshot (control thread; workers use weir_session_config). */
WEIR_EXTERN const struct weir_config *weir_server_config(const struct weir_server *srv);

WEIR_END_DECLS

#endif
