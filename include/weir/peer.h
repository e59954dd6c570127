/* The upstream peer a request goes to, chosen by the upstream_peer hook. */
#ifndef WEIR_PEER_H
#define WEIR_PEER_H

#include <sys/socket.h>

#include "weir/common.h"

WEIR_BEGIN_DECLS

/**
 * Where and how to connect upstream. upstream_peer fills one in the session's storage
 * (already zeroed, timeouts preset to the server's defaults). The address and the options
 * together are the connection pool's key.
 */
struct weir_tls_client;

/** How weir speaks HTTP to a peer (upstreams.NAME.protocol). */
enum weir_peer_protocol {
    WEIR_PEER_HTTP1 = 0, /**< HTTP/1.1 (the default) */
    WEIR_PEER_H2,        /**< HTTP/2 over TLS: ALPN offers only h2 and the peer must take it */
    WEIR_PEER_H2C,       /**< HTTP/2 in cleartext, with prior knowledge */
    WEIR_PEER_AUTO,      /**< TLS: ALPN decides between h2 and http/1.1; cleartext: HTTP/1.1 */
};

struct weir_peer {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t connect_timeout_ms; /**< 0: the server default */
    uint32_t read_timeout_ms;    /**< 0: the server default */
    uint32_t write_timeout_ms;   /**< 0: the server default */
    bool tls;                    /**< TLS to the peer */
    /** HTTP/1.1, or HTTP/2 streams multiplexed over the worker's connections to the peer */
    enum weir_peer_protocol protocol;
    /** TLS: the server name sent as SNI and, unless verify_name says otherwise, the name the
        certificate must be valid for; "" sends no SNI and verifies the address's IP instead */
    char sni[256];
    char verify_name[256]; /**< TLS: the name to verify when it differs from sni; "": sni */
    /** TLS: true accepts any certificate (verification is on unless this is set) */
    bool tls_no_verify;
    /** TLS: the CA store and client certificate (upstreams.NAME.tls builds one); NULL: the
        system's CA store and no client certificate */
    struct weir_tls_client *tls_client;
    char name[64]; /**< "ip:port" text for logs; set by weir_peer_set_address */
    /** The load balancer's backend behind this peer (weir_lb_select sets it), through which
        the proxy reports the request's outcome; NULL for a peer set by hand. */
    struct weir_backend *backend;
};

/**
 * Sets the peer's address from "ip:port", "[ipv6]:port" or "localhost:port" (numeric only: no
 * DNS on the worker thread). 0 or WEIR_EINVAL.
 */
WEIR_EXTERN int weir_peer_set_address(struct weir_peer *peer, const char *hostport);

/** Sets the address from a socket address (copied). 0 or WEIR_EINVAL (unsupported family). */
WEIR_EXTERN int weir_peer_set_sockaddr(struct weir_peer *peer, const struct sockaddr *sa,
                                       socklen_t len);

WEIR_END_DECLS

#endif
