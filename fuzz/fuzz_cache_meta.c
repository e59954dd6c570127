/*
 * libFuzzer target for the stored metadata encoding (src/cache/meta.c). Arbitrary bytes are
 * decoded; the encoding is canonical, so:
 *  - when decoding succeeds, weir__cache_meta_size of the result is the input's length and
 *    weir__cache_meta_encode writes the input back byte for byte; the reason and every field
 *    point into the input; the map holds the count the input says, within max_fields;
 *  - weir__cache_meta_peek agrees with decode on the fixed part, and never refuses what
 *    decode accepted;
 *  - WEIR_ELIMIT only for a valid encoding with more fields than max_fields (decoding it
 *    with a larger bound succeeds); otherwise a failure is WEIR_EINVAL, never ENOMEM here.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cc.h"
#include "http/head.h"
#include "weir/error.h"
#include "weir/mem.h"

#define MAX_FIELDS 64

static void trap_if(bool cond)
{
    if (cond) {
        __builtin_trap();
    }
}

static bool inside(struct weir_iov v, const char *buf, size_t len)
{
    return v.len == 0 ||
           (v.base >= buf && v.len <= len && v.base - buf <= (ptrdiff_t)(len - v.len));
}

static void check_same_fixed(const struct weir__cache_meta *a, const struct weir__cache_meta *b)
{
    trap_if(a->status != b->status || a->times.request_time != b->times.request_time ||
            a->times.response_time != b->times.response_time || a->times.date != b->times.date ||
            a->times.age != b->times.age || a->fresh_s != b->fresh_s || a->swr_s != b->swr_s ||
            a->sie_s != b->sie_s || a->flags != b->flags || a->body_len != b->body_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    struct weir_arena *a = NULL;
    if (weir_arena_new(4096, (size_t)64 << 20, &a) != 0) {
        return 0;
    }
    struct weir__cache_meta m, p;
    struct weir_headers *h = NULL;
    int rc = weir__cache_meta_decode(in, size, &m, a, MAX_FIELDS, &h);
    int prc = weir__cache_meta_peek(in, size, &p);
    trap_if(prc != 0 && prc != WEIR_EINVAL);
    if (rc == 0) {
        trap_if(h == NULL || m.headers != h || prc != 0);
        check_same_fixed(&m, &p);
        size_t n = weir_headers_count(h);
        trap_if(n > MAX_FIELDS || !inside(m.reason, in, size));
        for (size_t i = 0; i < n; i++) {
            const struct weir_header *f = weir_headers_at(h, i);
            trap_if(f == NULL || !inside(f->name, in, size) || !inside(f->value, in, size));
            trap_if(!weir__http_is_token(f->name) || !weir__http_is_field_value(f->value));
        }
        trap_if(weir__cache_meta_size(&m) != size);
        char *out = malloc(size);
        if (out == NULL) {
            abort();
        }
        trap_if(weir__cache_meta_encode(&m, out, size) != size || memcmp(out, in, size) != 0);
        trap_if(size > 0 && weir__cache_meta_encode(&m, out, size - 1) != 0);
        free(out);
    } else if (rc == WEIR_ELIMIT) {
        trap_if(h != NULL);
        struct weir_headers *h2 = NULL;
        trap_if(weir__cache_meta_decode(in, size, &m, a, UINT32_MAX, &h2) != 0);
        trap_if(weir_headers_count(h2) <= MAX_FIELDS);
    } else {
        trap_if(rc != WEIR_EINVAL || h != NULL);
    }
    weir_arena_free(a);
    return 0;
}
