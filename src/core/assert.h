/*
 * Two tiers of assertion: always on, and on in debug and sanitizer builds (off in release).
 * Never for peer input: a peer's bytes get an error, not an abort. Plus the checked cast every
 * callback entry uses to get back from an embedded member to its object.
 */
#ifndef WEIR_CORE_ASSERT_H
#define WEIR_CORE_ASSERT_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define WEIR_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            (void)fprintf(stderr, "weir: assertion failed: %s (%s:%d)\n", #cond, __FILE__,         \
                          __LINE__);                                                               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#if !defined(NDEBUG) || defined(WEIR_SANITIZED)
#define WEIR_DEBUG_ASSERT(cond) WEIR_ASSERT(cond)
#else
#define WEIR_DEBUG_ASSERT(cond) ((void)0)
#endif

/** The object of type that holds member at ptr (no check: follow with WEIR_CHECK_OBJ). */
#define WEIR_CONTAINER_OF(ptr, type, member)                                                       \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/**
 * obj is a live object of its kind: not NULL and carrying its magic number (cleared when it
 * is freed), as Varnish's CHECK_OBJ_NOTNULL. Always on: one compare at each callback entry
 * turns a use after free into an abort instead of a corruption.
 */
#define WEIR_CHECK_OBJ(obj, magic_value) WEIR_ASSERT((obj) != NULL && (obj)->magic == (magic_value))

#endif
