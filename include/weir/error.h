/* Error codes and the proxy error model. */
#ifndef WEIR_ERROR_H
#define WEIR_ERROR_H

#include "weir/common.h"

WEIR_BEGIN_DECLS

/**
 * Return codes. 0 is success; failures are negative. System errors are returned as -errno,
 * which never collides with these (they start far below errno's range).
 */
enum weir_errcode {
    WEIR_OK = 0,
    WEIR_EAGAIN = -10000,       /**< not yet: more input needed or the operation would block */
    WEIR_PENDING = -10001,      /**< a hook suspended the session; it resumes later */
    WEIR_ENOMEM = -10002,       /**< out of memory, or an arena's cap was reached */
    WEIR_EINVAL = -10003,       /**< invalid argument */
    WEIR_ELIMIT = -10004,       /**< a configured bound was reached */
    WEIR_ECLOSED = -10005,      /**< the peer closed the connection */
    WEIR_ETIMEDOUT = -10006,    /**< a timeout fired */
    WEIR_ECONFIG = -10007,      /**< configuration error */
    WEIR_EUNAVAILABLE = -10008, /**< no backend may be used (all down or drained): 503 */
    WEIR_ETLS = -10009,         /**< a TLS handshake failed (verification, protocol) */
    /* HTTP/1 framing and syntax errors, each mapping to one response status. */
    WEIR_EH1_BAD = -10100,           /**< malformed message: 400 */
    WEIR_EH1_URI_TOO_LONG = -10101,  /**< request line over the limit: 414 */
    WEIR_EH1_HDR_TOO_LARGE = -10102, /**< header bytes or count over the limit: 431 */
    WEIR_EH1_NOT_IMPL = -10103,      /**< unknown transfer coding: 501 */
    WEIR_EH1_VERSION = -10104,       /**< unsupported HTTP version: 505 */
    WEIR_EH1_TOO_LARGE = -10105,     /**< body over the limit: 413 */
};

/** A human-readable description of a WEIR_E* code or -errno. Never NULL; thread-safe. */
WEIR_EXTERN const char *weir_strerror(int code);

/** Who a proxy error is blamed on. */
enum weir_error_source {
    WEIR_SRC_UPSTREAM = 1,
    WEIR_SRC_DOWNSTREAM,
    WEIR_SRC_INTERNAL,
};

/** What went wrong while proxying a request. */
enum weir_error_type {
    WEIR_ERR_NONE = 0,
    WEIR_ERR_CONNECT_REFUSED,
    WEIR_ERR_CONNECT_TIMEOUT,
    WEIR_ERR_CONNECT_ERROR,
    WEIR_ERR_READ_TIMEOUT,
    WEIR_ERR_WRITE_TIMEOUT,
    WEIR_ERR_READ_ERROR,
    WEIR_ERR_WRITE_ERROR,
    WEIR_ERR_CONNECTION_CLOSED,
    WEIR_ERR_INVALID_HTTP,  /**< the peer sent a message we refuse */
    WEIR_ERR_NO_PEER,       /**< upstream_peer chose nothing */
    WEIR_ERR_NO_BACKEND,    /**< no healthy backend (weir_lb_select failed): 503 */
    WEIR_ERR_HOOK,          /**< a hook returned an error */
    WEIR_ERR_INTERNAL,      /**< resource exhaustion or a bug */
    WEIR_ERR_TLS_HANDSHAKE, /**< the TLS handshake with the peer failed (verification...) */
};

/** The error a failed request carries into fail_to_proxy and logging (Pingora's model). */
struct weir_error {
    enum weir_error_type type;
    enum weir_error_source source;
    bool retry;          /**< set by fail_to_connect / error_while_proxy to ask for a retry */
    int sys_errno;       /**< errno at the failure, 0 if none */
    const char *context; /**< static or arena string saying where; may be NULL */
};

/** A short static name for an error type ("ConnectTimeout", ...). */
WEIR_EXTERN const char *weir_error_type_str(enum weir_error_type type);

WEIR_END_DECLS

#endif
