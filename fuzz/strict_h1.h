/*
 * The strict HTTP/1.1 checks the proxy fuzz targets apply to what weir sends (fuzz_proxy.c,
 * fuzz_h2.c): a request head an origin receives, chunked framing, field lines. Header-only,
 * static inline, for the fuzz drivers alone.
 *
 * The includer defines FAIL(...) first: print the message (printf-style) and abort().
 */
#ifndef WEIR_FUZZ_STRICT_H1_H
#define WEIR_FUZZ_STRICT_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#ifndef FAIL
#error "define FAIL(...) before including strict_h1.h"
#endif

static inline bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static inline bool ieq(const char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(p, lit, n) == 0;
}

static inline const char *find_crlf(const char *p, const char *end)
{
    for (; p + 1 < end; p++) {
        if (p[0] == '\r' && p[1] == '\n') {
            return p;
        }
    }
    return NULL;
}

static inline const char *find_head_end(const char *p, const char *end)
{
    for (; p + 3 < end; p++) {
        if (p[0] == '\r' && p[1] == '\n' && p[2] == '\r' && p[3] == '\n') {
            return p + 4;
        }
    }
    return NULL;
}

/* A field line "name: value" with a token name and a value of VCHAR, SP, HTAB, obs-text. */
static inline bool strict_field(const char *p, const char *eol, const char **name, size_t *nlen,
                                const char **value, size_t *vlen)
{
    const char *c = memchr(p, ':', (size_t)(eol - p));
    if (c == NULL || c == p) {
        return false;
    }
    for (const char *q = p; q < c; q++) {
        if (!tchar((unsigned char)*q)) {
            return false;
        }
    }
    const char *v = c + 1;
    while (v < eol && (*v == ' ' || *v == '\t')) {
        v++;
    }
    const char *ve = eol;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
        ve--;
    }
    for (const char *q = v; q < ve; q++) {
        unsigned char b = (unsigned char)*q;
        if ((b < 0x20 && b != '\t') || b == 0x7f) {
            return false;
        }
    }
    *name = p;
    *nlen = (size_t)(c - p);
    *value = v;
    *vlen = (size_t)(ve - v);
    return true;
}

static inline bool parse_u64(const char *p, size_t n, int base, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 16) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        int d = p[i] >= '0' && p[i] <= '9'                 ? p[i] - '0'
                : base == 16 && p[i] >= 'a' && p[i] <= 'f' ? p[i] - 'a' + 10
                : base == 16 && p[i] >= 'A' && p[i] <= 'F' ? p[i] - 'A' + 10
                                                           : -1;
        if (d < 0) {
            return false;
        }
        v = v * (uint64_t)base + (uint64_t)d;
    }
    *out = v;
    return true;
}

/*
 * A chunked body at [p, end): strict, as weir re-encodes it (hex sizes, CRLF, strict trailer
 * fields). Returns its end, NULL when incomplete; FAILs when malformed.
 */
static inline const char *walk_chunked(const char *p, const char *end, const char *who)
{
    for (;;) {
        const char *eol = find_crlf(p, end);
        uint64_t size;
        if (eol == NULL) {
            return NULL;
        }
        if (!parse_u64(p, (size_t)(eol - p), 16, &size)) {
            FAIL("%s: bad chunk size line \"%.*s\"", who, (int)(eol - p < 40 ? eol - p : 40), p);
        }
        p = eol + 2;
        if (size == 0) {
            for (;;) {
                eol = find_crlf(p, end);
                if (eol == NULL) {
                    return NULL;
                }
                if (eol == p) {
                    return p + 2;
                }
                const char *n, *v;
                size_t nl, vl;
                if (!strict_field(p, eol, &n, &nl, &v, &vl)) {
                    FAIL("%s: bad trailer field \"%.*s\"", who, (int)(eol - p), p);
                }
                p = eol + 2;
            }
        }
        if ((uint64_t)(end - p) < size + 2) {
            return NULL;
        }
        if (p[size] != '\r' || p[size + 1] != '\n') {
            FAIL("%s: chunk data not followed by CRLF", who);
        }
        p += size + 2;
    }
}

/* authority-form (RFC 9112 3.2.3, CONNECT's): uri-host ":" port, no userinfo, no path. */
static inline bool authority_form(const char *p, const char *end)
{
    const char *colon = end;
    while (colon > p && colon[-1] != ':') {
        colon--;
    }
    if (colon - p < 2 || end == colon || end - colon > 5) {
        return false;
    }
    for (const char *q = colon; q < end; q++) {
        if (*q < '0' || *q > '9') {
            return false;
        }
    }
    for (const char *q = p; q < colon - 1; q++) {
        if (strchr("/?#@", *q) != NULL) {
            return false;
        }
    }
    return true;
}

/* Options of strict_request_head. */
#define STRICT_ORIGIN_FORM                                                                         \
    1u                        /* the target is origin-form, "*" for OPTIONS or CONNECT's           \
                                 authority-form (equal to Host), as weir's HTTP/1.1 parser wants */
#define STRICT_TE_TRAILERS 2u /* "TE: trailers" may cross (any other TE is hop-by-hop) */

/* What strict_request_head found in a head it accepted. */
struct strict_head {
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    const char *host; /* the Host field's value */
    size_t host_len;
    bool has_cl; /* Content-Length (cl) */
    uint64_t cl;
    bool chunked; /* Transfer-Encoding: chunked */
};

/* Called for every field line of a head, after the checks above it passed. */
typedef void (*strict_field_fn)(void *arg, const char *name, size_t nlen, const char *value,
                                size_t vlen);

/*
 * Checks the request head [p, he) (he: past its blank line) strictly, FAILing with who as the
 * prefix: request line "token SP target SP HTTP/1.1" with a target of visible ASCII, token
 * field names, no CR, LF, NUL or other control byte in a value, exactly one Host, no
 * hop-by-hop field (Connection, Keep-Alive, Upgrade, TE, Expect, Proxy-*; but a GET may carry
 * weir's own WebSocket upgrade, Connection: Upgrade with Upgrade: websocket), Content-Length
 * (equal if repeated) or Transfer-Encoding: chunked (once) but not both; opts add the
 * STRICT_* checks above. field (may be NULL) sees each field line.
 */
static inline void strict_request_head(const char *p, const char *he, const char *who,
                                       unsigned opts, strict_field_fn field, void *arg,
                                       struct strict_head *out)
{
    const char *eol = find_crlf(p, he);
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == p || sp2 == sp1 + 1 ||
        !ieq(sp2 + 1, (size_t)(eol - sp2 - 1), "HTTP/1.1")) {
        FAIL("%s: bad request line \"%.*s\"", who, (int)(eol - p), p);
    }
    for (const char *q = p; q < sp1; q++) {
        if (!tchar((unsigned char)*q)) {
            FAIL("%s: method not a token", who);
        }
    }
    for (const char *q = sp1 + 1; q < sp2; q++) {
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q == 0x7f) {
            FAIL("%s: control byte in the target", who);
        }
    }
    bool asterisk = sp2 == sp1 + 2 && sp1[1] == '*';
    bool connect = ieq(p, (size_t)(sp1 - p), "CONNECT");
    if ((opts & STRICT_ORIGIN_FORM) && (connect    ? !authority_form(sp1 + 1, sp2)
                                        : asterisk ? !ieq(p, (size_t)(sp1 - p), "OPTIONS")
                                                   : sp1[1] != '/')) {
        FAIL("%s: target \"%.*s\" of %.*s not origin-form, OPTIONS * or CONNECT host:port", who,
             (int)(sp2 - sp1 - 1), sp1 + 1, (int)(sp1 - p), p);
    }
    *out = (struct strict_head){.method = p,
                                .method_len = (size_t)(sp1 - p),
                                .target = sp1 + 1,
                                .target_len = (size_t)(sp2 - sp1 - 1)};
    unsigned hosts = 0, up_conn = 0, up_ws = 0;
    bool get = ieq(p, (size_t)(sp1 - p), "GET");
    const char *line = eol + 2;
    while (line < he - 2) {
        eol = find_crlf(line, he);
        const char *n, *v;
        size_t nl, vl;
        if (!strict_field(line, eol, &n, &nl, &v, &vl)) {
            FAIL("%s: bad field line \"%.*s\"", who, (int)(eol - line), line);
        }
        if (ieq(n, nl, "Host")) {
            hosts++;
            out->host = v;
            out->host_len = vl;
        } else if (ieq(n, nl, "Content-Length")) {
            uint64_t x;
            if (!parse_u64(v, vl, 10, &x) || (out->has_cl && x != out->cl)) {
                FAIL("%s: bad or conflicting Content-Length \"%.*s\"", who, (int)vl, v);
            }
            out->has_cl = true;
            out->cl = x;
        } else if (ieq(n, nl, "Transfer-Encoding")) {
            if (!ieq(v, vl, "chunked") || out->chunked) {
                FAIL("%s: Transfer-Encoding \"%.*s\"", who, (int)vl, v);
            }
            out->chunked = true;
        } else if (get && ieq(n, nl, "Connection") && ieq(v, vl, "Upgrade")) {
            up_conn++; /* weir's own WebSocket upgrade fields, exactly these */
        } else if (get && ieq(n, nl, "Upgrade") && ieq(v, vl, "websocket")) {
            up_ws++;
        } else if ((ieq(n, nl, "TE") && !((opts & STRICT_TE_TRAILERS) && ieq(v, vl, "trailers"))) ||
                   ieq(n, nl, "Connection") || ieq(n, nl, "Keep-Alive") || ieq(n, nl, "Upgrade") ||
                   ieq(n, nl, "Expect") || (nl > 6 && strncasecmp(n, "Proxy-", 6) == 0)) {
            FAIL("%s: hop-by-hop field %.*s forwarded", who, (int)nl, n);
        }
        if (field != NULL) {
            field(arg, n, nl, v, vl);
        }
        line = eol + 2;
    }
    if (up_conn != up_ws || up_conn > 1 || (up_conn && (out->has_cl || out->chunked))) {
        FAIL("%s: a WebSocket upgrade with Connection x%u, Upgrade x%u or a body", who, up_conn,
             up_ws);
    }
    if (hosts != 1 || (out->has_cl && out->chunked)) {
        FAIL("%s: request with %u Host, Content-Length %d, chunked %d", who, hosts, out->has_cl,
             out->chunked);
    }
    if ((opts & STRICT_ORIGIN_FORM) && connect &&
        (out->host_len != out->target_len ||
         strncasecmp(out->host, out->target, out->target_len) != 0)) {
        FAIL("%s: CONNECT %.*s with Host %.*s", who, (int)out->target_len, out->target,
             (int)out->host_len, out->host);
    }
}

#endif
