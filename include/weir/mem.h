/* Per-request arenas. */
#ifndef WEIR_MEM_H
#define WEIR_MEM_H

#include "weir/buf.h"

WEIR_BEGIN_DECLS

/**
 * An arena: bump allocation in blocks, freed all at once. Every request owns one; everything
 * it allocates (headers, ctx, strings) goes away when the request ends. An arena has a hard
 * cap; past it allocation fails with NULL. Not thread-safe: an arena belongs to one thread.
 */
struct weir_arena;

typedef void (*weir_cleanup_fn)(void *data);

/**
 * A new arena in *out whose total allocation may not exceed cap bytes; the caller owns it
 * (weir_arena_free). 0, or WEIR_ENOMEM with *out NULL.
 */
WEIR_EXTERN int weir_arena_new(size_t block_size, size_t cap, struct weir_arena **out);

/** Runs the cleanups (last added first) and frees every block. Accepts NULL. */
WEIR_EXTERN void weir_arena_free(struct weir_arena *a);

/**
 * Forgets everything allocated, runs cleanups, and keeps the first block for reuse (a
 * keep-alive connection resets its arena between requests).
 */
WEIR_EXTERN void weir_arena_reset(struct weir_arena *a);

/** n bytes aligned to 16, owned by the arena (never freed alone), or NULL when out of memory or
 * over the cap. */
WEIR_EXTERN void *weir_arena_alloc(struct weir_arena *a, size_t n);

/** Like weir_arena_alloc, zero-filled. */
WEIR_EXTERN void *weir_arena_calloc(struct weir_arena *a, size_t n);

/** A NUL-terminated copy of the bytes of v, or NULL. */
WEIR_EXTERN char *weir_arena_strndup(struct weir_arena *a, const char *s, size_t n);

/** A copy of v's bytes in the arena (NUL-terminated too, not counted in len); base NULL on failure.
 */
WEIR_EXTERN struct weir_iov weir_arena_iovdup(struct weir_arena *a, struct weir_iov v);

/** Registers fn(data) to run when the arena is freed or reset. 0 or WEIR_ENOMEM. */
WEIR_EXTERN int weir_arena_cleanup_add(struct weir_arena *a, weir_cleanup_fn fn, void *data);

/** Bytes handed out since creation or the last reset. */
WEIR_EXTERN size_t weir_arena_used(const struct weir_arena *a);

/**
 * The library's heap allocator, for data that outlives a request (counted by WEIR_FAILMALLOC
 * builds like every internal allocation). NULL on out of memory; weir_free accepts NULL.
 */
WEIR_EXTERN void *weir_malloc(size_t n);
WEIR_EXTERN void *weir_calloc(size_t nmemb, size_t size);
WEIR_EXTERN void weir_free(void *p);

WEIR_END_DECLS

#endif
