/*
 * The stored metadata of a cached response (struct weir__cache_meta) as one byte string.
 *
 * Format, version 1 (every integer little-endian, fixed width; times two's complement):
 *
 *   off  size  what
 *     0     1  WEIR_CACHE_META_VERSION
 *     1     2  status (100..999)
 *     3     8  request_time   (i64)
 *    11     8  response_time  (i64)
 *    19     8  date           (i64)
 *    27     4  age
 *    31     4  fresh_s
 *    35     4  swr_s
 *    39     4  sie_s
 *    43     4  flags (WEIR_CACHE_META_*, kept as given)
 *    47     8  body_len (WEIR_CACHE_LEN_UNKNOWN while streaming)
 *    55     2  reason length R (0..65535), then R bytes (no CR, LF, NUL or other CTL but HTAB)
 *           2  field count N (0..65535), then N times:
 *                2  name length (1..META_MAX_NAME), the name (an RFC 9110 token)
 *                4  value length (0..META_MAX_VALUE), the value (as the reason)
 *
 * Nothing else, and nothing after the last field. The encoding is canonical: encode refuses
 * exactly what decode refuses, and the bytes of a decoded string encode back to the same
 * bytes (fuzz/fuzz_cache_meta.c checks it), so a storage can compare metadata bytewise.
 */
#include <string.h>

#include "cache/cc.h"
#include "http/head.h"
#include "weir/error.h"

/* Bytes of the fixed part, up to the reason's length. */
#define META_FIXED 55
/* Bounds of one stored field: its name fits the u16 length, its value is at most 64 KiB. */
#define META_MAX_NAME   65535u
#define META_MAX_VALUE  65536u
#define META_MAX_REASON 65535u
#define META_MAX_FIELDS 65535u
/* The least bytes a field takes: both lengths and a one-byte name. */
#define META_MIN_FIELD 7u

/* ---- writing ---- */

struct wr {
    unsigned char *p;
    size_t cap, off;
    bool bad; /* a write did not fit: nothing more is written */
};

static void put(struct wr *w, const void *src, size_t n)
{
    if (w->bad || n > w->cap - w->off) {
        w->bad = true;
        return;
    }
    if (n > 0) {
        memcpy(w->p + w->off, src, n);
    }
    w->off += n;
}

static void put_le(struct wr *w, uint64_t v, size_t n)
{
    unsigned char b[8];
    for (size_t i = 0; i < n && i < sizeof(b); i++) {
        b[i] = (unsigned char)(v >> (8 * i));
    }
    put(w, b, n <= sizeof(b) ? n : sizeof(b));
}

/* ---- reading ---- */

struct rd {
    const unsigned char *p;
    size_t len, off;
};

/* The next n bytes, or NULL when fewer are left. */
static const unsigned char *take(struct rd *r, size_t n)
{
    if (n > r->len - r->off) {
        return NULL;
    }
    const unsigned char *at = r->p + r->off;
    r->off += n;
    return at;
}

static bool get_le(struct rd *r, size_t n, uint64_t *out)
{
    const unsigned char *b = n <= 8 ? take(r, n) : NULL;
    if (b == NULL) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = n; i > 0; i--) {
        v = (v << 8) | b[i - 1];
    }
    *out = v;
    return true;
}

static int64_t to_i64(uint64_t u)
{
    return u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

/* ---- the checks both directions share ---- */

static bool status_ok(uint64_t status)
{
    return status >= 100 && status <= 999;
}

static bool reason_ok(struct weir_iov r)
{
    return r.len <= META_MAX_REASON && weir__http_is_field_value(r);
}

static bool field_ok(struct weir_iov name, struct weir_iov value)
{
    return name.len <= META_MAX_NAME && weir__http_is_token(name) && value.len <= META_MAX_VALUE &&
           weir__http_is_field_value(value);
}

static size_t field_count(const struct weir__cache_meta *m)
{
    return m->headers != NULL ? weir_headers_count(m->headers) : 0;
}

size_t weir__cache_meta_size(const struct weir__cache_meta *m)
{
    if (!status_ok(m->status) || !reason_ok(m->reason)) {
        return 0;
    }
    size_t n = field_count(m);
    if (n > META_MAX_FIELDS) {
        return 0;
    }
    size_t total = META_FIXED + 2 + m->reason.len + 2;
    for (size_t i = 0; i < n; i++) {
        const struct weir_header *f = weir_headers_at(m->headers, i);
        if (f == NULL || !field_ok(f->name, f->value)) {
            return 0;
        }
        size_t one = 2 + f->name.len + 4 + f->value.len; /* at most 131077 */
        if (one > SIZE_MAX - total) {
            return 0;
        }
        total += one;
    }
    return total;
}

size_t weir__cache_meta_encode(const struct weir__cache_meta *m, char *buf, size_t cap)
{
    size_t need = weir__cache_meta_size(m);
    if (need == 0 || buf == NULL || cap < need) {
        return 0;
    }
    struct wr w = {(unsigned char *)buf, cap, 0, false};
    put_le(&w, WEIR_CACHE_META_VERSION, 1);
    put_le(&w, m->status, 2);
    put_le(&w, (uint64_t)m->times.request_time, 8);
    put_le(&w, (uint64_t)m->times.response_time, 8);
    put_le(&w, (uint64_t)m->times.date, 8);
    put_le(&w, m->times.age, 4);
    put_le(&w, m->fresh_s, 4);
    put_le(&w, m->swr_s, 4);
    put_le(&w, m->sie_s, 4);
    put_le(&w, m->flags, 4);
    put_le(&w, m->body_len, 8);
    put_le(&w, m->reason.len, 2);
    put(&w, m->reason.base, m->reason.len);
    size_t n = field_count(m);
    put_le(&w, n, 2);
    for (size_t i = 0; i < n; i++) {
        const struct weir_header *f = weir_headers_at(m->headers, i);
        if (f == NULL) {
            return 0;
        }
        put_le(&w, f->name.len, 2);
        put(&w, f->name.base, f->name.len);
        put_le(&w, f->value.len, 4);
        put(&w, f->value.base, f->value.len);
    }
    return w.bad || w.off != need ? 0 : w.off;
}

/* The fixed part into *m (reason and headers cleared). */
static int decode_fixed(struct rd *r, struct weir__cache_meta *m)
{
    uint64_t v[11];
    static const unsigned char widths[11] = {1, 2, 8, 8, 8, 4, 4, 4, 4, 4, 8};
    for (size_t i = 0; i < 11; i++) {
        if (!get_le(r, widths[i], &v[i])) {
            return WEIR_EINVAL;
        }
    }
    if (v[0] != WEIR_CACHE_META_VERSION || !status_ok(v[1])) {
        return WEIR_EINVAL;
    }
    *m = (struct weir__cache_meta){
        .status = (uint16_t)v[1],
        .times = {to_i64(v[2]), to_i64(v[3]), to_i64(v[4]), (uint32_t)v[5]},
        .fresh_s = (uint32_t)v[6],
        .swr_s = (uint32_t)v[7],
        .sie_s = (uint32_t)v[8],
        .flags = (uint32_t)v[9],
        .body_len = v[10],
        .reason = {NULL, 0},
        .headers = NULL,
    };
    return 0;
}

/* A length-prefixed byte string: a width-byte length, at most max, then the bytes. */
static bool get_bytes(struct rd *r, size_t width, uint64_t max, struct weir_iov *out)
{
    uint64_t n = 0;
    if (!get_le(r, width, &n) || n > max) {
        return false;
    }
    const unsigned char *b = take(r, (size_t)n);
    if (b == NULL) {
        return false;
    }
    *out = (struct weir_iov){(const char *)b, (size_t)n};
    return true;
}

/* The next field, checked. */
static bool get_field(struct rd *r, struct weir_header *f)
{
    return get_bytes(r, 2, META_MAX_NAME, &f->name) && get_bytes(r, 4, META_MAX_VALUE, &f->value) &&
           field_ok(f->name, f->value);
}

int weir__cache_meta_peek(const char *buf, size_t len, struct weir__cache_meta *m)
{
    if (buf == NULL) {
        return WEIR_EINVAL;
    }
    struct rd r = {(const unsigned char *)buf, len, 0};
    struct weir__cache_meta out;
    int rc = decode_fixed(&r, &out);
    if (rc == 0) {
        *m = out;
    }
    return rc;
}

int weir__cache_meta_decode(const char *buf, size_t len, struct weir__cache_meta *m,
                            struct weir_arena *a, uint32_t max_fields, struct weir_headers **h)
{
    *h = NULL;
    if (buf == NULL) {
        return WEIR_EINVAL;
    }
    struct rd r = {(const unsigned char *)buf, len, 0};
    struct weir__cache_meta out;
    int rc = decode_fixed(&r, &out);
    uint64_t n = 0;
    if (rc != 0 || !get_bytes(&r, 2, META_MAX_REASON, &out.reason) || !reason_ok(out.reason) ||
        !get_le(&r, 2, &n) || n * META_MIN_FIELD > r.len - r.off) {
        return WEIR_EINVAL;
    }
    /* Every field checked before anything is allocated; then the map, pointing into buf. */
    size_t fields_at = r.off;
    struct weir_header f;
    for (uint64_t i = 0; i < n; i++) {
        if (!get_field(&r, &f)) {
            return WEIR_EINVAL;
        }
    }
    if (r.off != r.len) {
        return WEIR_EINVAL; /* trailing bytes */
    }
    if (n > max_fields) {
        return WEIR_ELIMIT;
    }
    struct weir_headers *map = weir_arena_alloc(a, sizeof(*map));
    if (map == NULL || weir__headers_init(map, a, (uint32_t)n, max_fields) != 0) {
        return WEIR_ENOMEM;
    }
    r.off = fields_at;
    for (uint64_t i = 0; i < n; i++) {
        if (!get_field(&r, &map->v[i])) {
            return WEIR_EINVAL; /* not reached: checked above */
        }
        map->n++;
    }
    out.headers = map;
    *m = out;
    *h = map;
    return 0;
}
