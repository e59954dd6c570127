/*
 * libFuzzer target for what a request selects of a stored response (src/cache/select.c). The
 * input's first line is a Range value, its second a Vary list, each further line a request
 * field ("name: value"; at most MAX_FIELDS). Checked:
 *  - weir__range_parse against bodies of 0, 1, 100 and 2^40 bytes: at most
 *    WEIR_CACHE_MAX_RANGES ranges, each inside the body (first <= last < length);
 *  - weir__cache_variance: sized with no buffer, it writes exactly that many bytes into a
 *    buffer of that size (an exact-size heap block, so ASan sees any write past it) and the
 *    same length into every smaller buffer tried (never past it); the same names upper-cased
 *    give the same bytes; SIZE_MAX only when there are more names than the cap.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cc.h"

#define MAX_FIELDS 64

static void trap_if(bool cond)
{
    if (cond) {
        __builtin_trap();
    }
}

static struct weir_iov line(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
    const uint8_t *stop = nl ? nl : end;
    struct weir_iov v = {(const char *)*p, (size_t)(stop - *p)};
    *p = nl ? nl + 1 : end;
    return v;
}

static void check_ranges(struct weir_iov v)
{
    static const uint64_t lens[] = {0, 1, 100, 1ull << 40};
    struct weir__range rs[WEIR_CACHE_MAX_RANGES];
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        int n = weir__range_parse(v, lens[i], rs);
        trap_if(n < -1 || n > WEIR_CACHE_MAX_RANGES);
        for (int j = 0; j < n; j++) {
            trap_if(rs[j].first > rs[j].last || rs[j].last >= lens[i]);
        }
    }
}

static void check_variance(struct weir_iov names, const struct weir_header *f, size_t n)
{
    size_t need = weir__cache_variance(names, f, n, NULL, 0);
    if (need == SIZE_MAX) {
        return;
    }
    char *b = malloc(need ? need : 1);
    if (b == NULL) {
        return;
    }
    trap_if(weir__cache_variance(names, f, n, b, need) != need);
    size_t tries[] = {need / 2, need > 0 ? need - 1 : 0};
    for (size_t i = 0; i < 2; i++) {
        char *s = malloc(tries[i] ? tries[i] : 1);
        if (s != NULL) {
            trap_if(weir__cache_variance(names, f, n, s, tries[i]) != need);
            trap_if(tries[i] > 0 && memcmp(s, b, tries[i]) != 0);
            free(s);
        }
    }
    char *up = malloc(names.len ? names.len : 1);
    if (up != NULL) {
        for (size_t i = 0; i < names.len; i++) {
            char c = names.base[i];
            up[i] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
        }
        char *b2 = malloc(need ? need : 1);
        if (b2 != NULL) {
            struct weir_iov un = {up, names.len};
            trap_if(weir__cache_variance(un, f, n, b2, need) != need);
            trap_if(need > 0 && memcmp(b, b2, need) != 0);
            free(b2);
        }
        free(up);
    }
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    struct weir_iov range = line(&p, end);
    struct weir_iov names = line(&p, end);
    struct weir_header f[MAX_FIELDS];
    size_t n = 0;
    while (p < end && n < MAX_FIELDS) {
        struct weir_iov l = line(&p, end);
        const char *colon = memchr(l.base, ':', l.len);
        size_t nl = colon ? (size_t)(colon - l.base) : l.len;
        f[n].name = (struct weir_iov){l.base, nl};
        f[n].value =
            colon ? (struct weir_iov){colon + 1, l.len - nl - 1} : (struct weir_iov){"", 0};
        n++;
    }
    check_ranges(range);
    check_variance(names, f, n);
    return 0;
}
