/*
 * The ordered header map (struct weir_headers) and the character-class helpers of RFC 9110
 * that every HTTP layer shares: tokens, field values and comma-separated token lists. The
 * field array and every edited name or value live in the request's arena, so the map never
 * frees anything; a grown array leaves the old one behind until the request ends.
 */
#include <string.h>
#include <sys/types.h>

#include "http/head.h"
#include "weir/error.h"

/* tchar: "!#$%&'*+-.^_`|~" / DIGIT / ALPHA (RFC 9110 5.6.2). */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* Field-value bytes: HTAB, SP, VCHAR and obs-text; never NUL, CR, LF, other CTLs or DEL. */
static inline bool is_value_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

bool weir__http_is_token(struct weir_iov v)
{
    if (v.len == 0) {
        return false;
    }
    const unsigned char *p = (const unsigned char *)v.base;
    for (size_t i = 0; i < v.len; i++) {
        if (!tchar[p[i]]) {
            return false;
        }
    }
    return true;
}

bool weir__http_is_field_value(struct weir_iov v)
{
    const unsigned char *p = (const unsigned char *)v.base;
    for (size_t i = 0; i < v.len; i++) {
        if (!is_value_byte(p[i])) {
            return false;
        }
    }
    return true;
}

bool weir__http_next_token(struct weir_iov list, size_t *pos, struct weir_iov *tok)
{
    size_t i = *pos;
    while (i < list.len) {
        while (i < list.len && (weir__http_is_ows(list.base[i]) || list.base[i] == ',')) {
            i++;
        }
        if (i == list.len) {
            break;
        }
        size_t start = i;
        const char *comma = memchr(list.base + i, ',', list.len - i);
        size_t end = comma ? (size_t)(comma - list.base) : list.len;
        i = end;
        while (end > start && weir__http_is_ows(list.base[end - 1])) {
            end--;
        }
        *pos = i;
        *tok = (struct weir_iov){list.base + start, end - start};
        return true;
    }
    *pos = list.len;
    return false;
}

int weir__headers_init(struct weir_headers *h, struct weir_arena *a, uint32_t cap, uint32_t max)
{
    h->v = NULL;
    h->n = 0;
    h->cap = 0;
    h->max = max;
    h->arena = a;
    if (cap > max) {
        cap = max;
    }
    if (cap > 0) {
        h->v = weir_arena_alloc(a, (size_t)cap * sizeof(*h->v));
        if (h->v == NULL) {
            return WEIR_ENOMEM;
        }
        h->cap = cap;
    }
    return 0;
}

/* Makes room for `need` fields in total: doubling, never past h->max. */
static int reserve(struct weir_headers *h, size_t need)
{
    if (need <= h->cap) {
        return 0;
    }
    if (need > h->max) {
        return WEIR_ELIMIT;
    }
    size_t cap = h->cap ? (size_t)h->cap * 2 : 8;
    while (cap < need) {
        cap *= 2;
    }
    if (cap > h->max) {
        cap = h->max;
    }
    struct weir_header *v = weir_arena_alloc(h->arena, cap * sizeof(*v));
    if (v == NULL) {
        return WEIR_ENOMEM;
    }
    if (h->n) {
        memcpy(v, h->v, (size_t)h->n * sizeof(*v));
    }
    h->v = v;
    h->cap = (uint32_t)cap;
    return 0;
}

int weir__headers_adopt(struct weir_headers *h, const struct weir_header *fields, size_t n)
{
    uint32_t old = h->n;
    h->n = 0; /* nothing to carry over into a grown array */
    int rc = reserve(h, n);
    if (rc != 0) {
        h->n = old;
        return rc;
    }
    if (n) {
        memcpy(h->v, fields, n * sizeof(*fields));
    }
    h->n = (uint32_t)n;
    return 0;
}

void weir__headers_remove_at(struct weir_headers *h, size_t i)
{
    if (i >= h->n) {
        return;
    }
    memmove(h->v + i, h->v + i + 1, (size_t)(h->n - i - 1) * sizeof(*h->v));
    h->n--;
}

size_t weir_headers_count(const struct weir_headers *h)
{
    return h->n;
}

const struct weir_header *weir_headers_at(const struct weir_headers *h, size_t i)
{
    return i < h->n ? &h->v[i] : NULL;
}

/* Index of the first field named name, or -1. */
static ssize_t find(const struct weir_headers *h, struct weir_iov name, size_t from)
{
    for (size_t i = from; i < h->n; i++) {
        if (h->v[i].name.len == name.len && weir_iov_ieq(h->v[i].name, name)) {
            return (ssize_t)i;
        }
    }
    return -1;
}

bool weir_headers_get_iov(const struct weir_headers *h, struct weir_iov name,
                          struct weir_iov *value)
{
    ssize_t i = find(h, name, 0);
    if (i < 0) {
        return false;
    }
    if (value != NULL) {
        *value = h->v[i].value;
    }
    return true;
}

bool weir_headers_get(const struct weir_headers *h, const char *name, struct weir_iov *value)
{
    return weir_headers_get_iov(h, weir_iov_cstr(name), value);
}

/* Validates and copies a field into the arena; the map is left untouched on failure. */
static int copy_field(struct weir_headers *h, struct weir_iov name, struct weir_iov value,
                      struct weir_header *out)
{
    if (!weir__http_is_token(name) || (value.len && value.base == NULL) ||
        !weir__http_is_field_value(value)) {
        return WEIR_EINVAL;
    }
    out->name = weir_arena_iovdup(h->arena, name);
    out->value = weir_arena_iovdup(h->arena, value);
    if (out->name.base == NULL || out->value.base == NULL) {
        return WEIR_ENOMEM;
    }
    return 0;
}

int weir_headers_add_iov(struct weir_headers *h, struct weir_iov name, struct weir_iov value)
{
    struct weir_header f;
    int rc = copy_field(h, name, value, &f);
    if (rc == 0) {
        rc = reserve(h, (size_t)h->n + 1);
    }
    if (rc == 0) {
        h->v[h->n++] = f;
    }
    return rc;
}

int weir_headers_add(struct weir_headers *h, const char *name, const char *value)
{
    return weir_headers_add_iov(h, weir_iov_cstr(name), weir_iov_cstr(value));
}

int weir_headers_set_iov(struct weir_headers *h, struct weir_iov name, struct weir_iov value)
{
    ssize_t first = find(h, name, 0);
    if (first < 0) {
        return weir_headers_add_iov(h, name, value);
    }
    struct weir_header f;
    int rc = copy_field(h, name, value, &f);
    if (rc != 0) {
        return rc;
    }
    h->v[first] = f;
    /* Drop the later duplicates in one compaction pass, keeping order. */
    size_t w = (size_t)first + 1;
    for (size_t r = w; r < h->n; r++) {
        if (!weir_iov_ieq(h->v[r].name, name)) {
            h->v[w++] = h->v[r];
        }
    }
    h->n = (uint32_t)w;
    return 0;
}

int weir_headers_set(struct weir_headers *h, const char *name, const char *value)
{
    return weir_headers_set_iov(h, weir_iov_cstr(name), weir_iov_cstr(value));
}

size_t weir_headers_remove_iov(struct weir_headers *h, struct weir_iov name)
{
    size_t w = 0;
    for (size_t r = 0; r < h->n; r++) {
        if (!weir_iov_ieq(h->v[r].name, name)) {
            h->v[w++] = h->v[r];
        }
    }
    size_t removed = h->n - w;
    h->n = (uint32_t)w;
    return removed;
}

size_t weir_headers_remove(struct weir_headers *h, const char *name)
{
    return weir_headers_remove_iov(h, weir_iov_cstr(name));
}
