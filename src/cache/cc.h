/*
 * HTTP caching semantics (RFC 9111) as pure functions over header bytes: the Cache-Control
 * parser, HTTP-dates, the freshness lifetime and current age of a stored response, and the
 * encoding of a stored response's metadata (status, fields, times) into one byte string that
 * any storage can keep. Nothing here allocates except into a caller's arena, and nothing
 * touches a session: the proxy and the unit tests call these alike.
 */
#ifndef WEIR_CACHE_CC_H
#define WEIR_CACHE_CC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/buf.h"
#include "weir/http.h"
#include "weir/mem.h"

/* Cache-Control directives (RFC 9111 5.2), as bits of weir__cc.flags. */
#define WEIR_CC_NO_STORE         0x0001u
#define WEIR_CC_NO_CACHE         0x0002u /* unqualified no-cache */
#define WEIR_CC_PRIVATE          0x0004u /* unqualified private */
#define WEIR_CC_PUBLIC           0x0008u
#define WEIR_CC_MUST_REVALIDATE  0x0010u
#define WEIR_CC_PROXY_REVALIDATE 0x0020u
#define WEIR_CC_NO_TRANSFORM     0x0040u
#define WEIR_CC_IMMUTABLE        0x0080u
#define WEIR_CC_ONLY_IF_CACHED   0x0100u
#define WEIR_CC_MAX_AGE          0x0200u /* max_age is set */
#define WEIR_CC_S_MAXAGE         0x0400u /* s_maxage is set */
#define WEIR_CC_SWR              0x0800u /* stale_while_revalidate is set */
#define WEIR_CC_SIE              0x1000u /* stale_if_error is set */
#define WEIR_CC_MAX_STALE        0x2000u /* request: max_stale is set (any stale, if no value) */
#define WEIR_CC_MIN_FRESH        0x4000u
#define WEIR_CC_INVALID          0x8000u /* a directive the cache needs was malformed */

/* A delta-seconds value too large to hold is 2^31 (RFC 9111 1.2.2). */
#define WEIR_CC_DELTA_MAX 2147483648u

/**
 * What a Cache-Control field list says. Directive names are case-insensitive; a directive
 * given twice takes its first value; a malformed value of max-age or s-maxage sets
 * WEIR_CC_INVALID (and the response is then treated as stale: RFC 9111 4.2.1). Qualified
 * no-cache="f" and private="f" name fields instead of the whole response: this cache treats
 * them as unqualified (the conservative reading RFC 9111 5.2.2.4 and 5.2.2.7 allow).
 */
struct weir__cc {
    uint32_t flags;
    uint32_t max_age; /* seconds, valid with WEIR_CC_MAX_AGE */
    uint32_t s_maxage;
    uint32_t stale_while_revalidate;
    uint32_t stale_if_error;
    uint32_t max_stale; /* request directive */
    uint32_t min_fresh;
};

/**
 * Parses every Cache-Control field of h (a list across fields, comma separated, quoted
 * values allowed) into *cc. Never fails: unknown directives are skipped.
 */
void weir__cc_parse(const struct weir_headers *h, struct weir__cc *cc);
/** The same for one field value (the fuzz target's entry). */
void weir__cc_parse_value(struct weir_iov v, struct weir__cc *cc);

/**
 * An HTTP-date (RFC 9110 5.6.7): IMF-fixdate, and the obsolete RFC 850 and asctime forms a
 * recipient must accept. Seconds since the epoch into *out; false when v is not a date.
 */
bool weir__http_date_parse(struct weir_iov v, int64_t *out);
/** Formats t as an IMF-fixdate into buf (at least 30 bytes); returns the length (29). */
size_t weir__http_date_format(int64_t t, char *buf, size_t cap);

/**
 * The times a stored response needs to compute its age (RFC 9111 4.2.3), in seconds since the
 * epoch; date and age as the response said them (0 and false when absent or invalid).
 */
struct weir__cache_times {
    int64_t request_time;  /* when the request that fetched it went out */
    int64_t response_time; /* when its head arrived */
    int64_t date;          /* Date; response_time when absent */
    uint32_t age;          /* Age, 0 when absent */
};

/**
 * The freshness lifetime in seconds of a response to a shared cache (RFC 9111 4.2.1):
 * s-maxage, then max-age, then Expires - Date; *explicit false and 0 when none of those is
 * given (the caller may then apply a default or heuristic). A malformed Expires means
 * already expired (lifetime 0, explicit true).
 */
uint32_t weir__freshness_lifetime(const struct weir__cc *cc, const struct weir_headers *h,
                                  const struct weir__cache_times *t, bool *explicit_);

/** The current age in seconds at now (RFC 9111 4.2.3). */
uint32_t weir__current_age(const struct weir__cache_times *t, int64_t now);

/**
 * Whether a response may be stored by a shared cache at all (RFC 9111 3): status understood
 * and final, no no-store, no (unqualified) private, and either explicit freshness, a status
 * cacheable by default (RFC 9110 15.1), or public. authorized: the request carried
 * Authorization, which then needs public, s-maxage or must-revalidate (RFC 9111 3.5). The
 * caller checks the method, Set-Cookie and its own policy.
 */
bool weir__cc_storable(int status, const struct weir__cc *cc, bool explicit_fresh, bool authorized);

/** Whether a status is cacheable by default (heuristically): RFC 9110 15.1. */
bool weir__status_heuristic(int status);

/*
 * Stored metadata: what a storage keeps beside a body. One byte string, versioned, with every
 * length checked on decoding (a storage on disk may hand back anything): a fixed part, then
 * the reason phrase and each field as length-prefixed bytes.
 */
struct weir__cache_meta {
    uint16_t status;
    struct weir__cache_times times;
    uint32_t fresh_s;  /* freshness lifetime, seconds (already including any default) */
    uint32_t swr_s;    /* stale-while-revalidate: serve stale while one refresh runs */
    uint32_t sie_s;    /* stale-if-error: serve stale when the origin fails */
    uint32_t flags;    /* WEIR_CACHE_META_* */
    uint64_t body_len; /* the body's length, or WEIR_CACHE_LEN_UNKNOWN while it streams */
    struct weir_iov reason;
    const struct weir_headers *headers; /* encode: the fields to store; decode: see below */
};

#define WEIR_CACHE_LEN_UNKNOWN UINT64_MAX

#define WEIR_CACHE_META_MUST_REVALIDATE 0x01u /* must-revalidate or proxy-revalidate */
#define WEIR_CACHE_META_NO_CACHE        0x02u /* stored, but revalidate before every use */
#define WEIR_CACHE_META_SHARED_AUTH     0x04u /* may answer requests with Authorization */
#define WEIR_CACHE_META_VARY            0x08u /* the response has Vary */
#define WEIR_CACHE_META_VARY_INDEX      0x10u /* not a response: a key's Vary names and variants */

/** Format version of the encoding (its first byte). */
#define WEIR_CACHE_META_VERSION 1

/**
 * Bytes weir__cache_meta_encode needs for m (fields included), or 0 when over the bounds
 * (more than 65535 fields, a field over 64 KiB).
 */
size_t weir__cache_meta_size(const struct weir__cache_meta *m);
/** Encodes m into buf (cap >= weir__cache_meta_size(m)). Bytes written, or 0. */
size_t weir__cache_meta_encode(const struct weir__cache_meta *m, char *buf, size_t cap);
/**
 * Decodes len bytes into *m: reason and field bytes point into buf (not copied); the fields
 * go into a new map in arena a (h, bounded by max_fields). 0, WEIR_EINVAL (malformed,
 * truncated, trailing bytes, wrong version, a field name that is not a token or a value with
 * CR, LF or NUL) or WEIR_ENOMEM / WEIR_ELIMIT.
 */
int weir__cache_meta_decode(const char *buf, size_t len, struct weir__cache_meta *m,
                            struct weir_arena *a, uint32_t max_fields, struct weir_headers **h);
/** Decodes only the fixed part (no fields), for a storage's own bookkeeping. 0 or EINVAL. */
int weir__cache_meta_peek(const char *buf, size_t len, struct weir__cache_meta *m);

/* ---- what a request selects: ranges and variants (select.c) ---- */

/** The most ranges one request may ask for; a request for more gets the whole object. */
#define WEIR_CACHE_MAX_RANGES 16
/** The most distinct fields a Vary may name for its response to be stored. */
#define WEIR_CACHE_MAX_VARY_FIELDS 32

/** A byte range of a body, both ends included. */
struct weir__range {
    uint64_t first, last;
};

/**
 * A Range field value against a body of len bytes (RFC 9110 14.1.2): the satisfiable ranges
 * into out (room for WEIR_CACHE_MAX_RANGES), in the order asked. Their count (0: none is
 * satisfiable, a 416), or -1 when the field is to be ignored (not a bytes range set, an
 * invalid range, more than WEIR_CACHE_MAX_RANGES).
 */
int weir__range_parse(struct weir_iov v, uint64_t len, struct weir__range *out);

/**
 * The variance of a request (its n fields) for a response's Vary names (RFC 9111 4.1): per
 * distinct name, in the order listed, "name=LEN:values;" with the name lowercased and the
 * request's fields of that name joined with "," (OWS trimmed), LEN their length, so no two
 * variances read alike. Writes at most cap bytes to out and returns the whole length (call
 * with cap 0 to size it), or SIZE_MAX when more than WEIR_CACHE_MAX_VARY_FIELDS are named.
 */
size_t weir__cache_variance(struct weir_iov names, const struct weir_header *fields, size_t n,
                            char *out, size_t cap);

#endif
