/*
 * The strict HTTP/1.1 head parsers (RFC 9112) for requests and responses. They sit at the
 * proxy's security boundary, so every ambiguity that could let two parsers disagree about a
 * message's framing (request smuggling) is rejected rather than repaired: bare LF or CR, obs-fold,
 * whitespace before a colon, Content-Length together with Transfer-Encoding, duplicate or
 * malformed lengths, chunked not last.
 *
 * A head is parsed only once it is complete. find_head_end() looks for the blank line with
 * memchr and keeps its progress in struct weir__h1_scan, so a head arriving in many reads is
 * scanned in linear total time; the line parsers then run once over bytes known to end in CRLF
 * and use a class table (eight bytes at a time for values and targets). Nothing allocates.
 */
#include <string.h>

#include "http/head.h"
#include "http1/h1.h"

/* Character classes, one bit each. */
enum {
    C_TCHAR = 1,  /* token characters (RFC 9110 5.6.2) */
    C_VALUE = 2,  /* field-value and reason bytes: HTAB, SP, VCHAR, obs-text */
    C_TARGET = 4, /* request-target bytes: visible ASCII 0x21-0x7e */
    C_HOST = 8,   /* Host / authority bytes: unreserved, sub-delims, ':', '[', ']', '%' */
};

static const unsigned char cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  /* 00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 10 */
    2,  15, 6,  7,  15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,  /* 20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 6,  14, 6,  6,  /* 30 */
    6,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6,  14, 7,  15, /* 50 */
    7,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  7,  6,  15, 0,  /* 70 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 80 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 90 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* a0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* b0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* c0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* d0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* e0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* f0 */
};

/*
 * scan->scanned holds how far the blank-line search got, plus this flag once the first line's
 * CRLF has been seen (heads are bounded by a uint32_t limit, so the top bit is free). Without
 * the flag, telling whether the first line is complete would need a rescan on every call.
 */
#define SCAN_LINE1_DONE ((size_t)1 << (sizeof(size_t) * 8 - 1))
#define SCAN_FLAGS      SCAN_LINE1_DONE

#define ONES  UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t load64(const char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof(x));
    return x;
}

/* Non-zero when some byte of x is below n (n <= 128): Bit Twiddling Hacks' hasless. */
static inline uint64_t has_less(uint64_t x, unsigned n)
{
    return (x - ONES * n) & ~x & HIGHS;
}

/* Non-zero when some byte of x equals b. */
static inline uint64_t has_byte(uint64_t x, unsigned b)
{
    uint64_t y = x ^ (ONES * b);
    return (y - ONES) & ~y & HIGHS;
}

/* Skips field-value bytes; stops at the first byte outside C_VALUE (at the latest, the CR). */
static const char *skip_value(const char *p, const char *end)
{
    /* SP..0x7e and obs-text pass in bulk; a chunk holding HTAB, a CTL or DEL goes bytewise. */
    while (end - p >= 8) {
        uint64_t x = load64(p);
        if (has_less(x, 0x20) | has_byte(x, 0x7f)) {
            break;
        }
        p += 8;
    }
    while (cls[(unsigned char)*p] & C_VALUE) {
        p++;
    }
    return p;
}

/* Skips request-target bytes; stops at the SP that ends it or at any invalid byte. */
static const char *skip_target(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t x = load64(p);
        if (has_less(x, 0x21) | (x & HIGHS) | has_byte(x, 0x7f)) {
            break;
        }
        p += 8;
    }
    while (cls[(unsigned char)*p] & C_TARGET) {
        p++;
    }
    return p;
}

static const char *skip_class(const char *p, unsigned mask)
{
    while (cls[(unsigned char)*p] & mask) {
        p++;
    }
    return p;
}

static inline bool is_digit(char c)
{
    return (unsigned)(c - '0') < 10u;
}

static inline bool ieq_lit(struct weir_iov v, const char *lit, size_t n)
{
    return v.len == n && weir_iov_ieq(v, (struct weir_iov){lit, n});
}
#define IEQ(v, lit) ieq_lit((v), (lit), sizeof(lit) - 1)

/*
 * Finds the end of the head in buf[0..len): returns its length, WEIR_EAGAIN, or an error.
 * *start receives the offset of the first line (after a tolerated leading CRLF).
 */
static ssize_t find_head_end(const char *buf, size_t len, struct weir__h1_scan *scan,
                             const struct weir__h1_limits *lim, bool allow_leading_crlf,
                             int line_too_long, int (*line1_check)(const char *, const char *),
                             size_t *start)
{
    size_t s = 0;
    /* RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line. */
    if (allow_leading_crlf && len > 0 && buf[0] == '\r') {
        if (len < 2) {
            return WEIR_EAGAIN;
        }
        s = 2; /* buf[1] is checked below: a LF there ends an empty line, anything else is bad */
        if (buf[1] != '\n') {
            return WEIR_EH1_BAD;
        }
    }
    *start = s;
    size_t flag = scan->scanned & SCAN_FLAGS;
    size_t pos = scan->scanned & ~SCAN_FLAGS;
    size_t limit = len < lim->max_head ? len : lim->max_head;
    if (pos < s || pos > limit) {
        pos = s;
        flag = 0;
    }
    /*
     * The first line is searched only over the bytes it may occupy (max_line plus CRLF), so
     * the verdict on a given byte stream never depends on how it was split into reads.
     */
    size_t line1_end = s + (size_t)lim->max_line + 2;
    while (pos < limit) {
        size_t stop = !flag && line1_end < limit ? line1_end : limit;
        const char *lf = pos < stop ? memchr(buf + pos, '\n', stop - pos) : NULL;
        if (lf == NULL) {
            pos = stop;
            if (!flag && stop == line1_end) {
                return line_too_long;
            }
            break;
        }
        size_t i = (size_t)(lf - buf);
        if (i == s || buf[i - 1] != '\r') {
            return WEIR_EH1_BAD; /* bare LF */
        }
        if (!flag) {
            if (i - 1 == s) {
                return WEIR_EH1_BAD; /* empty first line: a second leading CRLF */
            }
            flag = SCAN_LINE1_DONE;
            /*
             * Judge the request line as soon as it is whole, in byte order as a one-shot parse
             * would: an HTTP/0.9 client or a bogus version gets its answer now, not after a
             * blank line that never comes.
             */
            if (line1_check != NULL) {
                int rc = line1_check(buf + s, buf + i + 1);
                if (rc != 0) {
                    return rc;
                }
            }
        } else if (buf[i - 2] == '\n') {
            scan->scanned = (i + 1) | flag;
            return (ssize_t)(i + 1);
        }
        pos = i + 1;
    }
    scan->scanned = pos | flag;
    if (len >= lim->max_head) {
        return WEIR_EH1_HDR_TOO_LARGE;
    }
    return WEIR_EAGAIN;
}

/* What the framing-relevant header fields said. */
struct framing {
    bool is_request;
    unsigned te_fields;
    bool te_bad;          /* malformed list, chunked twice or not last */
    bool te_unknown;      /* a coding other than chunked */
    bool te_chunked_last; /* the last coding seen so far is chunked */
    bool te_chunked;
    unsigned cl_fields;
    uint64_t cl;
    unsigned host_fields;
    struct weir_iov host;
    bool conn_close;
    bool conn_keep_alive;
    bool conn_upgrade;
    bool has_upgrade;
    bool expect_continue;
};

static void on_transfer_encoding(struct framing *f, struct weir_iov v)
{
    size_t pos = 0;
    struct weir_iov tok;
    bool any = false;
    f->te_fields++;
    while (weir__http_next_token(v, &pos, &tok)) {
        any = true;
        if (!weir__http_is_token(tok)) {
            f->te_bad = true; /* parameters or junk: nothing we could decode anyway */
        } else if (IEQ(tok, "chunked")) {
            f->te_bad |= f->te_chunked;
            f->te_chunked = true;
            f->te_chunked_last = true;
            continue;
        } else {
            f->te_unknown = true;
        }
        f->te_bad |= f->te_chunked; /* a coding after chunked */
        f->te_chunked_last = false;
    }
    f->te_bad |= !any;
}

/*
 * Content-Length must be one field holding 1*DIGIT no greater than 2^63-1. RFC 9110 8.6 lets
 * a recipient accept repeated identical values as one; we reject them (a second field, or a
 * comma list) instead, because the fields travel on to the origin verbatim and a next hop that
 * reads "5, 5" differently from us would disagree about where the body ends.
 */
static int on_content_length(struct framing *f, struct weir_iov v)
{
    if (++f->cl_fields > 1 || v.len == 0) {
        return WEIR_EH1_BAD;
    }
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (!is_digit(v.base[i])) {
            return WEIR_EH1_BAD;
        }
        unsigned d = (unsigned)(v.base[i] - '0');
        if (n > (UINT64_C(0x7fffffffffffffff) - d) / 10) {
            return WEIR_EH1_BAD;
        }
        n = n * 10 + d;
    }
    f->cl = n;
    return 0;
}

static void on_connection(struct framing *f, struct weir_iov v)
{
    size_t pos = 0;
    struct weir_iov tok;
    while (weir__http_next_token(v, &pos, &tok)) {
        if (IEQ(tok, "close")) {
            f->conn_close = true;
        } else if (IEQ(tok, "keep-alive")) {
            f->conn_keep_alive = true;
        } else if (IEQ(tok, "upgrade")) {
            f->conn_upgrade = true;
        }
    }
}

static int on_host(struct framing *f, struct weir_iov v)
{
    f->host_fields++;
    f->host = v;
    /* Only authority bytes: a '/', '@', '?' or space here would mislead routing. */
    for (size_t i = 0; i < v.len; i++) {
        if (!(cls[(unsigned char)v.base[i]] & C_HOST)) {
            return WEIR_EH1_BAD;
        }
    }
    return 0;
}

/* Notes a field that matters to framing or connection handling. */
static int inspect_field(struct framing *f, const struct weir_header *h)
{
    switch (h->name.len) {
    case 4:
        return f->is_request && IEQ(h->name, "host") ? on_host(f, h->value) : 0;
    case 6:
        if (IEQ(h->name, "expect") && IEQ(h->value, "100-continue")) {
            f->expect_continue = true;
        }
        return 0;
    case 7:
        if (IEQ(h->name, "upgrade") && h->value.len > 0) {
            f->has_upgrade = true;
        }
        return 0;
    case 10:
        if (IEQ(h->name, "connection")) {
            on_connection(f, h->value);
        }
        return 0;
    case 14:
        return IEQ(h->name, "content-length") ? on_content_length(f, h->value) : 0;
    case 17:
        if (IEQ(h->name, "transfer-encoding")) {
            on_transfer_encoding(f, h->value);
        }
        return 0;
    default:
        return 0;
    }
}

/*
 * Parses the field lines from p up to and including the blank line that ends the head at end.
 * Every LF in [p, end) is known to follow a CR.
 */
static int parse_fields(const char *p, const char *end, struct weir_header *hdrs, size_t cap,
                        size_t *count, struct framing *f)
{
    size_t n = 0;
    for (;;) {
        if (*p == '\r') {
            if (p[1] != '\n') {
                return WEIR_EH1_BAD; /* bare CR */
            }
            break;
        }
        const char *name = p;
        p = skip_class(p, C_TCHAR);
        /* Covers obs-fold (a line starting with SP/HTAB) and whitespace before the colon. */
        if (p == name || *p != ':') {
            return WEIR_EH1_BAD;
        }
        if (n == cap) {
            return WEIR_EH1_HDR_TOO_LARGE;
        }
        const char *name_end = p++;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        const char *value = p;
        p = skip_value(p, end);
        if (p[0] != '\r' || p[1] != '\n') {
            return WEIR_EH1_BAD;
        }
        const char *value_end = p;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t')) {
            value_end--;
        }
        hdrs[n].name = (struct weir_iov){name, (size_t)(name_end - name)};
        hdrs[n].value = (struct weir_iov){value, (size_t)(value_end - value)};
        int rc = inspect_field(f, &hdrs[n]);
        if (rc != 0) {
            return rc;
        }
        n++;
        p += 2;
    }
    *count = n;
    return 0;
}

/* "HTTP/" DIGIT "." DIGIT at p (8 bytes known to be readable): minor 0/1, -2 other, -1 junk. */
static int parse_version(const char *p)
{
    if (memcmp(p, "HTTP/", 5) != 0 || !is_digit(p[5]) || p[6] != '.' || !is_digit(p[7])) {
        return -1;
    }
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1')) {
        return -2;
    }
    return p[7] - '0';
}

/* authority-form (CONNECT): uri-host ":" port, no userinfo. */
static bool is_authority_form(struct weir_iov t)
{
    size_t colon = t.len;
    while (colon > 0 && t.base[colon - 1] != ':') {
        colon--;
    }
    if (colon < 2 || t.len - colon == 0 || t.len - colon > 5) {
        return false;
    }
    for (size_t i = colon; i < t.len; i++) {
        if (!is_digit(t.base[i])) {
            return false;
        }
    }
    for (size_t i = 0; i < colon - 1; i++) {
        if (!(cls[(unsigned char)t.base[i]] & C_HOST)) {
            return false;
        }
    }
    return true;
}

/* absolute-form, narrowed to what HTTP uses: scheme "://" followed by something. */
static bool is_absolute_form(struct weir_iov t)
{
    size_t i = 0;
    while (i < t.len && ((unsigned)((t.base[i] | 0x20) - 'a') < 26u ||
                         (i > 0 && (is_digit(t.base[i]) || t.base[i] == '+' || t.base[i] == '-' ||
                                    t.base[i] == '.')))) {
        i++;
    }
    return i > 0 && t.len - i > 3 && memcmp(t.base + i, "://", 3) == 0;
}

static int check_target_form(struct weir_iov method, struct weir_iov target)
{
    static const struct weir_iov connect = WEIR_IOV_LIT("CONNECT");
    static const struct weir_iov options = WEIR_IOV_LIT("OPTIONS");
    if (weir_iov_eq(method, connect)) {
        return is_authority_form(target) ? 0 : WEIR_EH1_BAD;
    }
    if (target.base[0] == '/') {
        return 0;
    }
    if (target.len == 1 && target.base[0] == '*') {
        return weir_iov_eq(method, options) ? 0 : WEIR_EH1_BAD;
    }
    return is_absolute_form(target) ? 0 : WEIR_EH1_BAD;
}

/* method SP request-target SP HTTP-version CRLF; *p advances past the CRLF. */
static int parse_request_line(const char **pp, const char *end, struct weir__h1_request *out)
{
    const char *p = *pp;
    const char *q = skip_class(p, C_TCHAR);
    if (q == p || *q != ' ') {
        return WEIR_EH1_BAD;
    }
    out->method = (struct weir_iov){p, (size_t)(q - p)};
    p = ++q;
    q = skip_target(p, end);
    if (q == p || *q != ' ') {
        return WEIR_EH1_BAD; /* includes HTTP/0.9: no version */
    }
    out->target = (struct weir_iov){p, (size_t)(q - p)};
    p = q + 1;
    if (end - p < 10 || p[8] != '\r' || p[9] != '\n') {
        return WEIR_EH1_BAD;
    }
    int minor = parse_version(p);
    if (minor < 0) {
        return minor == -2 ? WEIR_EH1_VERSION : WEIR_EH1_BAD;
    }
    out->minor = minor;
    *pp = p + 10;
    return check_target_form(out->method, out->target);
}

static int request_framing(const struct framing *f, struct weir__h1_request *out)
{
    if (f->te_fields) {
        if (out->minor == 0 || f->cl_fields || f->te_bad) {
            return WEIR_EH1_BAD;
        }
        if (f->te_unknown) {
            return WEIR_EH1_NOT_IMPL;
        }
        if (!f->te_chunked_last) {
            return WEIR_EH1_BAD;
        }
        out->body = WEIR_H1_BODY_CHUNKED;
    } else if (f->cl_fields && f->cl > 0) {
        out->body = WEIR_H1_BODY_LENGTH;
        out->content_length = f->cl;
    }
    if (f->host_fields > 1 || (out->minor == 1 && f->host_fields == 0)) {
        return WEIR_EH1_BAD;
    }
    out->host = f->host;
    out->keep_alive = !f->conn_close && (out->minor == 1 || f->conn_keep_alive);
    out->upgrade = f->conn_upgrade && f->has_upgrade;
    out->expect_continue = out->minor == 1 && f->expect_continue;
    return 0;
}

static int request_line_check(const char *line, const char *end)
{
    struct weir__h1_request r;
    memset(&r, 0, sizeof(r));
    return parse_request_line(&line, end, &r);
}

ssize_t weir__h1_parse_request(const char *buf, size_t len, struct weir__h1_scan *scan,
                               const struct weir__h1_limits *lim, struct weir_header *hdrs,
                               size_t hdr_cap, struct weir__h1_request *out)
{
    size_t start;
    ssize_t end =
        find_head_end(buf, len, scan, lim, true, WEIR_EH1_URI_TOO_LONG, request_line_check, &start);
    if (end < 0) {
        return end;
    }
    memset(out, 0, sizeof(*out));
    out->headers = hdrs;
    const char *p = buf + start;
    const char *e = buf + end;
    int rc = parse_request_line(&p, e, out);
    if (rc != 0) {
        return rc;
    }
    struct framing f = {.is_request = true};
    size_t cap = hdr_cap < lim->max_headers ? hdr_cap : lim->max_headers;
    rc = parse_fields(p, e, hdrs, cap, &out->nheaders, &f);
    if (rc == 0) {
        rc = request_framing(&f, out);
    }
    return rc != 0 ? rc : end;
}

/* HTTP-version SP 3DIGIT [SP reason] CRLF. */
static int parse_status_line(const char **pp, const char *end, struct weir__h1_response *out)
{
    const char *p = *pp;
    if (end - p < 14) {
        return WEIR_EH1_BAD;
    }
    int minor = parse_version(p);
    if (minor < 0 || p[8] != ' ' || !is_digit(p[9]) || !is_digit(p[10]) || !is_digit(p[11]) ||
        p[9] == '0') {
        return WEIR_EH1_BAD;
    }
    out->minor = minor;
    out->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    p += 12;
    if (*p == ' ') {
        const char *r = ++p;
        p = skip_value(p, end);
        out->reason = (struct weir_iov){r, (size_t)(p - r)};
    } else {
        out->reason = (struct weir_iov){p, 0};
    }
    if (p[0] != '\r' || p[1] != '\n') {
        return WEIR_EH1_BAD;
    }
    *pp = p + 2;
    return 0;
}

static int response_framing(const struct framing *f, bool method_head,
                            struct weir__h1_response *out)
{
    /* RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing. */
    if (f->te_fields && (f->cl_fields || f->te_bad || !f->te_chunked_last || out->minor == 0)) {
        return WEIR_EH1_BAD;
    }
    int s = out->status;
    if (method_head || s < 200 || s == 204 || s == 304) {
        out->body = WEIR_H1_BODY_NONE;
    } else if (f->te_fields) {
        out->body = WEIR_H1_BODY_CHUNKED;
    } else if (f->cl_fields) {
        out->body = f->cl > 0 ? WEIR_H1_BODY_LENGTH : WEIR_H1_BODY_NONE;
        out->content_length = f->cl;
    } else {
        out->body = WEIR_H1_BODY_CLOSE;
    }
    out->keep_alive = !f->conn_close && (out->minor == 1 || f->conn_keep_alive) &&
                      out->body != WEIR_H1_BODY_CLOSE;
    return 0;
}

ssize_t weir__h1_parse_response(const char *buf, size_t len, struct weir__h1_scan *scan,
                                const struct weir__h1_limits *lim, bool method_head,
                                struct weir_header *hdrs, size_t hdr_cap,
                                struct weir__h1_response *out)
{
    size_t start;
    ssize_t end = find_head_end(buf, len, scan, lim, false, WEIR_EH1_BAD, NULL, &start);
    if (end < 0) {
        return end;
    }
    memset(out, 0, sizeof(*out));
    out->headers = hdrs;
    const char *p = buf + start;
    const char *e = buf + end;
    int rc = parse_status_line(&p, e, out);
    if (rc != 0) {
        return rc;
    }
    struct framing f = {0};
    size_t cap = hdr_cap < lim->max_headers ? hdr_cap : lim->max_headers;
    rc = parse_fields(p, e, hdrs, cap, &out->nheaders, &f);
    if (rc == 0) {
        rc = response_framing(&f, method_head, out);
    }
    return rc != 0 ? rc : end;
}

int weir__h1_error_status(int code)
{
    switch (code) {
    case WEIR_EH1_TOO_LARGE:
        return 413;
    case WEIR_EH1_URI_TOO_LONG:
        return 414;
    case WEIR_EH1_HDR_TOO_LARGE:
        return 431;
    case WEIR_EH1_NOT_IMPL:
        return 501;
    case WEIR_EH1_VERSION:
        return 505;
    default:
        return 400;
    }
}
