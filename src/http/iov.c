/*
 * Helpers over borrowed byte ranges (struct weir_iov): construction from C strings and the
 * exact and ASCII case-insensitive comparisons header names and tokens need.
 */
#include "weir/buf.h"

#include <string.h>

/* ASCII lower-casing without locale: the HTTP grammar is ASCII-only. */
static inline unsigned char lower(unsigned char c)
{
    return (unsigned char)((unsigned)(c - 'A') < 26u ? c | 0x20 : c);
}

struct weir_iov weir_iov_cstr(const char *s)
{
    if (s == NULL) {
        return (struct weir_iov){NULL, 0};
    }
    return (struct weir_iov){s, strlen(s)};
}

bool weir_iov_eq(struct weir_iov a, struct weir_iov b)
{
    if (a.len != b.len) {
        return false;
    }
    return a.len == 0 || memcmp(a.base, b.base, a.len) == 0;
}

bool weir_iov_ieq(struct weir_iov a, struct weir_iov b)
{
    if (a.len != b.len) {
        return false;
    }
    const unsigned char *p = (const unsigned char *)a.base;
    const unsigned char *q = (const unsigned char *)b.base;
    for (size_t i = 0; i < a.len; i++) {
        if (p[i] != q[i] && lower(p[i]) != lower(q[i])) {
            return false;
        }
    }
    return true;
}

bool weir_iov_ieq_cstr(struct weir_iov a, const char *s)
{
    return weir_iov_ieq(a, weir_iov_cstr(s));
}

bool weir_iov_has_prefix(struct weir_iov a, struct weir_iov prefix)
{
    if (a.len < prefix.len) {
        return false;
    }
    return prefix.len == 0 || memcmp(a.base, prefix.base, prefix.len) == 0;
}
