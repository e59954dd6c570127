/*
 * What a request selects of a stored response: its byte ranges (Range, RFC 9110 14.1.2) and
 * its variant (Vary, RFC 9111 4.1). Pure functions over field bytes, as cc.c's.
 */
#include <string.h>

#include "cache/cc.h"

static struct weir_iov trim(struct weir_iov v)
{
    while (v.len > 0 && (v.base[0] == ' ' || v.base[0] == '\t')) {
        v.base++;
        v.len--;
    }
    while (v.len > 0 && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t')) {
        v.len--;
    }
    return v;
}

/* The next element of a comma-separated list (OWS trimmed; empty ones included). */
static struct weir_iov next_element(struct weir_iov *list)
{
    const char *comma = memchr(list->base, ',', list->len);
    size_t l = comma ? (size_t)(comma - list->base) : list->len;
    struct weir_iov one = trim((struct weir_iov){list->base, l});
    list->base += l + (comma ? 1 : 0);
    list->len -= l + (comma ? 1 : 0);
    return one;
}

/* 1 to 19 decimal digits, nothing else. */
static bool parse_u64(struct weir_iov v, uint64_t *out)
{
    if (v.len == 0 || v.len > 19) {
        return false;
    }
    uint64_t x = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9') {
            return false;
        }
        x = x * 10 + (uint64_t)(v.base[i] - '0');
    }
    *out = x;
    return true;
}

int weir__range_parse(struct weir_iov v, uint64_t len, struct weir__range *out)
{
    v = trim(v);
    if (v.len < 6 || !weir_iov_ieq((struct weir_iov){v.base, 6}, WEIR_IOV_LIT("bytes="))) {
        return -1;
    }
    v.base += 6;
    v.len -= 6;
    int n = 0, seen = 0;
    while (v.len > 0) {
        struct weir_iov one = next_element(&v);
        if (one.len == 0) {
            continue; /* empty list elements are allowed */
        }
        if (++seen > WEIR_CACHE_MAX_RANGES) {
            return -1;
        }
        const char *dash = memchr(one.base, '-', one.len);
        if (dash == NULL) {
            return -1;
        }
        struct weir_iov a = {one.base, (size_t)(dash - one.base)};
        struct weir_iov b = {dash + 1, one.len - a.len - 1};
        uint64_t x = 0, y = 0;
        if (a.len == 0) {
            if (!parse_u64(b, &y)) {
                return -1;
            }
            if (y == 0 || len == 0) {
                continue; /* unsatisfiable */
            }
            out[n++] = (struct weir__range){len > y ? len - y : 0, len - 1};
            continue;
        }
        if (!parse_u64(a, &x) || (b.len > 0 && !parse_u64(b, &y))) {
            return -1;
        }
        if (b.len > 0 && y < x) {
            return -1; /* an invalid range: the whole field is ignored */
        }
        if (x >= len) {
            continue;
        }
        out[n++] = (struct weir__range){x, b.len == 0 || y >= len ? len - 1 : y};
    }
    return seen == 0 ? -1 : n;
}

/* Appends to out as far as cap allows; counts every byte regardless. */
struct sink {
    char *out;
    size_t cap, n;
};

static void put(struct sink *k, const char *p, size_t l)
{
    if (l > 0 && k->n < k->cap) {
        size_t room = k->cap - k->n;
        memcpy(k->out + k->n, p, l < room ? l : room);
    }
    k->n += l;
}

static void put_lower(struct sink *k, struct weir_iov v)
{
    for (size_t i = 0; i < v.len; i++) {
        char ch = v.base[i];
        ch = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        put(k, &ch, 1);
    }
}

static void put_u64(struct sink *k, uint64_t x)
{
    char d[20];
    size_t i = sizeof(d);
    do {
        d[--i] = (char)('0' + x % 10);
        x /= 10;
    } while (x > 0);
    put(k, d + i, sizeof(d) - i);
}

/* Whether name appears in list before the element starting at stop. */
static bool listed_before(struct weir_iov list, const char *stop, struct weir_iov name)
{
    while (list.len > 0 && list.base < stop) {
        struct weir_iov one = next_element(&list);
        if (one.base < stop && weir_iov_ieq(one, name)) {
            return true;
        }
    }
    return false;
}

size_t weir__cache_variance(struct weir_iov names, const struct weir_header *fields, size_t n,
                            char *out, size_t cap)
{
    struct sink k = {out, cap, 0};
    struct weir_iov all = names;
    unsigned distinct = 0;
    while (names.len > 0) {
        struct weir_iov name = next_element(&names);
        if (name.len == 0 || listed_before(all, name.base, name)) {
            continue; /* a field named twice selects nothing more */
        }
        if (++distinct > WEIR_CACHE_MAX_VARY_FIELDS) {
            return SIZE_MAX;
        }
        uint64_t len = 0;
        bool first = true;
        for (size_t i = 0; i < n; i++) {
            if (weir_iov_ieq(fields[i].name, name)) {
                len += trim(fields[i].value).len + (first ? 0 : 1);
                first = false;
            }
        }
        put_lower(&k, name);
        put(&k, "=", 1);
        put_u64(&k, len);
        put(&k, ":", 1);
        first = true;
        for (size_t i = 0; i < n; i++) {
            if (weir_iov_ieq(fields[i].name, name)) {
                struct weir_iov v = trim(fields[i].value);
                if (!first) {
                    put(&k, ",", 1);
                }
                put(&k, v.base, v.len);
                first = false;
            }
        }
        put(&k, ";", 1);
    }
    return k.n;
}
