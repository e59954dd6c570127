/*
 * libFuzzer target for the caching semantics of src/cache/cc.c. The input is split on '\n'
 * into field values (at most MAX_PIECES), and:
 *  - weir__cc_parse over them as Cache-Control fields (with other fields between them, which
 *    it must ignore) equals weir__cc_parse_value over the values joined by commas, whenever no
 *    value holds a '"' (a quoted-string ends with its field; joined, it would run on);
 *  - weir__cc_parse_value of a value equals that of ", " + value + "," (empty list elements);
 *  - the result is sane: a value is non-zero only with its flag and never above 2^31; the
 *    freshness lifetime is never above 2^31 and is 0 when not explicit; nothing with
 *    no-store or private is storable;
 *  - weir__current_age on input-derived times is at least the Age and never decreases as
 *    now grows;
 *  - weir__http_date_parse of the whole input and of each piece: when it parses, the
 *    IMF-fixdate weir__http_date_format writes (29 bytes) parses to the same second and
 *    formats again to the same bytes, and the input with OWS around it parses the same.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cc.h"
#include "http/head.h"
#include "weir/error.h"
#include "weir/mem.h"

#define MAX_PIECES 64

static void trap_if(bool cond)
{
    if (cond) {
        __builtin_trap();
    }
}

static void check_sane(const struct weir__cc *cc)
{
    static const struct {
        uint32_t flag;
        size_t off;
    } vals[] = {
        {WEIR_CC_MAX_AGE, offsetof(struct weir__cc, max_age)},
        {WEIR_CC_S_MAXAGE, offsetof(struct weir__cc, s_maxage)},
        {WEIR_CC_SWR, offsetof(struct weir__cc, stale_while_revalidate)},
        {WEIR_CC_SIE, offsetof(struct weir__cc, stale_if_error)},
        {WEIR_CC_MAX_STALE, offsetof(struct weir__cc, max_stale)},
        {WEIR_CC_MIN_FRESH, offsetof(struct weir__cc, min_fresh)},
    };
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint32_t v;
        memcpy(&v, (const char *)cc + vals[i].off, sizeof(v));
        trap_if(v > WEIR_CC_DELTA_MAX);
        trap_if(v != 0 && !(cc->flags & vals[i].flag));
    }
    trap_if(cc->flags > 0xffffu);
    if (cc->flags & (WEIR_CC_NO_STORE | WEIR_CC_PRIVATE)) {
        trap_if(weir__cc_storable(200, cc, true, false));
    }
}

static bool same_cc(const struct weir__cc *a, const struct weir__cc *b)
{
    return a->flags == b->flags && a->max_age == b->max_age && a->s_maxage == b->s_maxage &&
           a->stale_while_revalidate == b->stale_while_revalidate &&
           a->stale_if_error == b->stale_if_error && a->max_stale == b->max_stale &&
           a->min_fresh == b->min_fresh;
}

static void check_date(struct weir_iov v)
{
    int64_t t = 0;
    if (!weir__http_date_parse(v, &t)) {
        return;
    }
    char buf[32], again[32];
    size_t n = weir__http_date_format(t, buf, sizeof(buf));
    trap_if(n != 29 || buf[29] != '\0');
    int64_t back = 0;
    trap_if(!weir__http_date_parse((struct weir_iov){buf, n}, &back) || back != t);
    trap_if(weir__http_date_format(back, again, sizeof(again)) != 29 || memcmp(buf, again, 30));
    /* the same date with OWS around it */
    char *padded = malloc(v.len + 4);
    if (padded == NULL) {
        abort();
    }
    memcpy(padded, " \t", 2);
    memcpy(padded + 2, v.base, v.len);
    memcpy(padded + 2 + v.len, "\t ", 2);
    back = 0;
    trap_if(!weir__http_date_parse((struct weir_iov){padded, v.len + 4}, &back) || back != t);
    free(padded);
}

static int64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return (int64_t)v;
}

static void check_age(const uint8_t *data, size_t size)
{
    if (size < 36) {
        return;
    }
    struct weir__cache_times t = {le64(data), le64(data + 8), le64(data + 16),
                                  (uint32_t)le64(data + 24)};
    int64_t now = le64(data + 28) >> 8;
    uint32_t a = weir__current_age(&t, now);
    trap_if(a < t.age);
    if (now < INT64_MAX) {
        trap_if(weir__current_age(&t, now + 1) < a);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16) {
        return 0;
    }
    const char *in = (const char *)data;
    struct weir_iov pieces[MAX_PIECES];
    size_t n = 0, start = 0;
    bool quotes = memchr(in, '"', size) != NULL;
    for (size_t i = 0; i <= size && n < MAX_PIECES; i++) {
        if (i == size || in[i] == '\n') {
            pieces[n++] = (struct weir_iov){in + start, i - start};
            start = i + 1;
        }
    }
    if (start <= size && n == MAX_PIECES) {
        quotes = true; /* some input was left out of the pieces: no differential */
    }

    struct weir_arena *a = NULL;
    if (weir_arena_new(4096, (size_t)16 << 20, &a) != 0) {
        return 0;
    }
    /* the fields: each piece as Cache-Control, with an Expires and another field between */
    struct weir_header fields[3 * MAX_PIECES];
    size_t nf = 0;
    for (size_t i = 0; i < n; i++) {
        fields[nf++] = (struct weir_header){WEIR_IOV_LIT("Cache-Control"), pieces[i]};
        fields[nf++] = (struct weir_header){WEIR_IOV_LIT("X-Cache-Control"), pieces[i]};
        if (i == 0) {
            fields[nf++] = (struct weir_header){WEIR_IOV_LIT("Expires"), pieces[i]};
        }
    }
    struct weir_headers h;
    if (weir__headers_init(&h, a, 0, (uint32_t)nf) != 0 ||
        weir__headers_adopt(&h, fields, nf) != 0) {
        __builtin_trap();
    }
    struct weir__cc all;
    weir__cc_parse(&h, &all);
    check_sane(&all);
    if (!quotes) {
        char *joined = malloc(size + 1);
        if (joined == NULL) {
            abort();
        }
        size_t j = 0;
        for (size_t i = 0; i < n; i++) {
            if (i > 0) {
                joined[j++] = ',';
            }
            memcpy(joined + j, pieces[i].base, pieces[i].len);
            j += pieces[i].len;
        }
        struct weir__cc one;
        weir__cc_parse_value((struct weir_iov){joined, j}, &one);
        trap_if(!same_cc(&all, &one));
        free(joined);
    }

    /* one value alone, and with empty elements around it */
    struct weir__cc plain, framed;
    weir__cc_parse_value((struct weir_iov){in, size}, &plain);
    check_sane(&plain);
    char *wrapped = malloc(size + 3);
    if (wrapped == NULL) {
        abort();
    }
    memcpy(wrapped, ", ", 2);
    memcpy(wrapped + 2, in, size);
    wrapped[size + 2] = ',';
    weir__cc_parse_value((struct weir_iov){wrapped, size + 3}, &framed);
    trap_if(!same_cc(&plain, &framed));
    free(wrapped);

    /* freshness on what was parsed */
    struct weir__cache_times t = {0, 0, 0, 0};
    if (size >= 8) {
        t.date = le64(data) >> 16; /* within any date's reach and more */
        t.response_time = t.date;
    }
    bool ex = true;
    uint32_t life = weir__freshness_lifetime(&all, &h, &t, &ex);
    trap_if(life > WEIR_CC_DELTA_MAX || (!ex && life != 0));
    check_age(data, size);

    check_date((struct weir_iov){in, size});
    for (size_t i = 0; i < n; i++) {
        check_date(pieces[i]);
    }
    weir_arena_free(a);
    return 0;
}
