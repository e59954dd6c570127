/* HTTP request and response heads and their header maps (case and order preserved). */
#ifndef WEIR_HTTP_H
#define WEIR_HTTP_H

#include "weir/buf.h"

WEIR_BEGIN_DECLS

/** One header field. Name and value are borrowed; see the accessor that handed them out. */
struct weir_header {
    struct weir_iov name;
    struct weir_iov value;
};

/**
 * An ordered header map. Names keep the case they arrived in; lookups ignore case. Parsed
 * fields point into the request's arena; edits copy their bytes into the same arena, so every
 * iov handed out stays valid until the request ends. The number of fields is bounded.
 */
struct weir_headers;

/** A request head (method, target, version, headers). Owned by the session. */
struct weir_req;
/** A response head (status, reason, version, headers). Owned by the session. */
struct weir_resp;

/** Number of fields. */
WEIR_EXTERN size_t weir_headers_count(const struct weir_headers *h);

/** The i-th field (0-based), or NULL past the end. */
WEIR_EXTERN const struct weir_header *weir_headers_at(const struct weir_headers *h, size_t i);

/**
 * The value of the first field named name (case-insensitive). Returns true and fills *value
 * when found; false otherwise. value may be NULL to test presence only.
 */
WEIR_EXTERN bool weir_headers_get(const struct weir_headers *h, const char *name,
                                  struct weir_iov *value);

/** Same as weir_headers_get with the name as an iov. */
WEIR_EXTERN bool weir_headers_get_iov(const struct weir_headers *h, struct weir_iov name,
                                      struct weir_iov *value);

/**
 * Appends a field (name and value are copied). Returns 0, WEIR_ENOMEM, WEIR_ELIMIT (too many
 * fields) or WEIR_EINVAL (name not a token, or value holding CR, LF or NUL).
 */
WEIR_EXTERN int weir_headers_add(struct weir_headers *h, const char *name, const char *value);
WEIR_EXTERN int weir_headers_add_iov(struct weir_headers *h, struct weir_iov name,
                                     struct weir_iov value);

/**
 * Replaces every field named name by one field with value (appended if none existed; the
 * first one's position is kept otherwise). Same return codes as weir_headers_add.
 */
WEIR_EXTERN int weir_headers_set(struct weir_headers *h, const char *name, const char *value);
WEIR_EXTERN int weir_headers_set_iov(struct weir_headers *h, struct weir_iov name,
                                     struct weir_iov value);

/** Removes every field named name. Returns how many were removed. */
WEIR_EXTERN size_t weir_headers_remove(struct weir_headers *h, const char *name);
WEIR_EXTERN size_t weir_headers_remove_iov(struct weir_headers *h, struct weir_iov name);

/* Request head accessors. Returned iovs live as long as the request. */
WEIR_EXTERN struct weir_iov weir_req_method(const struct weir_req *req);
/** The request target as received (origin-form path and query, normally). */
WEIR_EXTERN struct weir_iov weir_req_target(const struct weir_req *req);
/** The target's path, without the query string. */
WEIR_EXTERN struct weir_iov weir_req_path(const struct weir_req *req);
/** The target's query string without '?', empty when none. */
WEIR_EXTERN struct weir_iov weir_req_query(const struct weir_req *req);
/** The Host header's value (empty iov when absent). */
WEIR_EXTERN struct weir_iov weir_req_host(const struct weir_req *req);
/**
 * The value of cookie name (case-sensitive) in the request's Cookie field(s), as nginx's
 * $cookie_NAME: true and *value (pointing into the request) when present.
 */
WEIR_EXTERN bool weir_req_cookie(const struct weir_req *req, const char *name,
                                 struct weir_iov *value);
/** The raw value of query argument name (matched case-insensitively), as nginx's $arg_NAME. */
WEIR_EXTERN bool weir_req_arg(const struct weir_req *req, const char *name, struct weir_iov *value);
/** The same lookups in one Cookie field value ("a=1; b=2") and one query string ("a=1&b=2"). */
WEIR_EXTERN bool weir_cookie_find(struct weir_iov field, struct weir_iov name,
                                  struct weir_iov *value);
WEIR_EXTERN bool weir_query_arg_find(struct weir_iov query, struct weir_iov name,
                                     struct weir_iov *value);
/** 0 for HTTP/1.0, 1 for HTTP/1.1. */
WEIR_EXTERN int weir_req_version_minor(const struct weir_req *req);
WEIR_EXTERN struct weir_headers *weir_req_headers(struct weir_req *req);
WEIR_EXTERN const struct weir_headers *weir_req_headers_const(const struct weir_req *req);
/** Replaces the method (copied). 0, WEIR_ENOMEM or WEIR_EINVAL (not a token). */
WEIR_EXTERN int weir_req_set_method(struct weir_req *req, const char *method);
/** Replaces the target (copied). 0, WEIR_ENOMEM or WEIR_EINVAL (empty, or CTL/space bytes). */
WEIR_EXTERN int weir_req_set_target(struct weir_req *req, struct weir_iov target);

/* Response head accessors. */
WEIR_EXTERN int weir_resp_status(const struct weir_resp *resp);
WEIR_EXTERN struct weir_iov weir_resp_reason(const struct weir_resp *resp);
WEIR_EXTERN struct weir_headers *weir_resp_headers(struct weir_resp *resp);
WEIR_EXTERN const struct weir_headers *weir_resp_headers_const(const struct weir_resp *resp);
/** Sets the status (100..999) and resets the reason phrase to the standard one. */
WEIR_EXTERN int weir_resp_set_status(struct weir_resp *resp, int status);

/** The standard reason phrase for a status ("OK", "Not Found"), "Unknown" if none. */
WEIR_EXTERN const char *weir_http_reason(int status);

WEIR_END_DECLS

#endif
