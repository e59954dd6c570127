/* Borrowed byte ranges. */
#ifndef WEIR_BUF_H
#define WEIR_BUF_H

#include "weir/common.h"

WEIR_BEGIN_DECLS

/**
 * A borrowed, length-carrying byte range. Never NUL-terminated by contract. Whoever hands one
 * out says which buffer it points into and how long it stays valid.
 */
struct weir_iov {
    const char *base;
    size_t len;
};

/** An iov over a string literal. */
#define WEIR_IOV_LIT(s) ((struct weir_iov){(s), sizeof(s) - 1})

/** An iov over a NUL-terminated string (may be NULL: gives an empty iov). */
WEIR_EXTERN struct weir_iov weir_iov_cstr(const char *s);

/** Case-sensitive byte equality. */
WEIR_EXTERN bool weir_iov_eq(struct weir_iov a, struct weir_iov b);

/** ASCII case-insensitive equality (for header names and tokens). */
WEIR_EXTERN bool weir_iov_ieq(struct weir_iov a, struct weir_iov b);

/** ASCII case-insensitive equality against a NUL-terminated string. */
WEIR_EXTERN bool weir_iov_ieq_cstr(struct weir_iov a, const char *s);

/** True when a begins with prefix (case-sensitive). */
WEIR_EXTERN bool weir_iov_has_prefix(struct weir_iov a, struct weir_iov prefix);

WEIR_END_DECLS

#endif
