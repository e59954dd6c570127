/* weir_strerror and error-type names. */
#include "weir/error.h"

#include <string.h>

const char *weir_strerror(int code)
{
    switch (code) {
    case WEIR_OK:
        return "success";
    case WEIR_EAGAIN:
        return "try again";
    case WEIR_PENDING:
        return "pending";
    case WEIR_ENOMEM:
        return "out of memory";
    case WEIR_EINVAL:
        return "invalid argument";
    case WEIR_ELIMIT:
        return "limit reached";
    case WEIR_ECLOSED:
        return "connection closed";
    case WEIR_ETIMEDOUT:
        return "timed out";
    case WEIR_ECONFIG:
        return "configuration error";
    case WEIR_EUNAVAILABLE:
        return "no backend available";
    case WEIR_ETLS:
        return "TLS handshake failed";
    case WEIR_EH1_BAD:
        return "malformed HTTP message";
    case WEIR_EH1_URI_TOO_LONG:
        return "request line too long";
    case WEIR_EH1_HDR_TOO_LARGE:
        return "header section too large";
    case WEIR_EH1_NOT_IMPL:
        return "unsupported transfer coding";
    case WEIR_EH1_VERSION:
        return "unsupported HTTP version";
    case WEIR_EH1_TOO_LARGE:
        return "body too large";
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        /* strerror is not thread-safe in general; strerrordesc_np is, and never NULL for known. */
        const char *s = strerrordesc_np(-code);
        return s ? s : "unknown system error";
    }
    return "unknown error";
}

const char *weir_error_type_str(enum weir_error_type type)
{
    static const char *const names[] = {
        [WEIR_ERR_NONE] = "None",
        [WEIR_ERR_CONNECT_REFUSED] = "ConnectRefused",
        [WEIR_ERR_CONNECT_TIMEOUT] = "ConnectTimeout",
        [WEIR_ERR_CONNECT_ERROR] = "ConnectError",
        [WEIR_ERR_READ_TIMEOUT] = "ReadTimeout",
        [WEIR_ERR_WRITE_TIMEOUT] = "WriteTimeout",
        [WEIR_ERR_READ_ERROR] = "ReadError",
        [WEIR_ERR_WRITE_ERROR] = "WriteError",
        [WEIR_ERR_CONNECTION_CLOSED] = "ConnectionClosed",
        [WEIR_ERR_INVALID_HTTP] = "InvalidHTTP",
        [WEIR_ERR_NO_PEER] = "NoPeer",
        [WEIR_ERR_NO_BACKEND] = "NoBackend",
        [WEIR_ERR_HOOK] = "HookError",
        [WEIR_ERR_INTERNAL] = "InternalError",
        [WEIR_ERR_TLS_HANDSHAKE] = "TLSHandshakeFailure",
    };
    if ((size_t)type < sizeof(names) / sizeof(names[0]) && names[type]) {
        return names[type];
    }
    return "Unknown";
}
