/*
 * The one place weir allocates from the C heap. Everything else calls these, so a build can
 * fail the Nth allocation (WEIR_FAILMALLOC) and a source check can ban raw malloc elsewhere.
 */
#ifndef WEIR_CORE_ALLOC_H
#define WEIR_CORE_ALLOC_H

#include <stddef.h>

void *weir__malloc(size_t n);
void *weir__calloc(size_t nmemb, size_t size);
void *weir__realloc(void *p, size_t n);
/** realloc for arrays: fails (NULL, p untouched) when nmemb * size overflows. */
void *weir__reallocarray(void *p, size_t nmemb, size_t size);
void weir__free(void *p);
/** A heap copy of a NUL-terminated string, or NULL. */
char *weir__strdup(const char *s);
/** A heap copy of n bytes plus a NUL, or NULL. */
char *weir__strndup(const char *s, size_t n);

/**
 * Notes n bytes given back to the heap at once (a cache object's body and metadata). Freed
 * memory stays in the C library's per-thread arenas, where a fill on another thread cannot
 * reuse it: weir__alloc_trim returns it to the system once enough has been released.
 */
void weir__alloc_released(size_t n);
/**
 * The main thread calls this about once a second: when the cache has released at least
 * WEIR__TRIM_MIN bytes since the last trim and the heap holds at least that much free, the
 * free pages of every arena go back to the system (glibc's malloc_trim). Elsewhere: nothing.
 */
void weir__alloc_trim(void);
#define WEIR__TRIM_MIN ((size_t)4 << 20)

#endif
