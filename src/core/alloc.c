/*
 * Heap allocation wrappers. With WEIR_FAILMALLOC compiled in, the environment variable
 * WEIR_FAILMALLOC=N makes the Nth allocation (counted process-wide) return NULL, so tests can
 * sweep N across a request's life and check that out-of-memory never crashes or leaks.
 */
#include "core/alloc.h"
#include "weir/mem.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef WEIR_FAILMALLOC
static atomic_long fail_at = -1; /* -1: not read yet; 0: disabled */
static atomic_long alloc_count;

static int should_fail(void)
{
    long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
    if (at < 0) {
        const char *env = getenv("WEIR_FAILMALLOC");
        char *end = NULL;
        at = env ? strtol(env, &end, 10) : 0;
        if (at < 0 || (end && *end != '\0')) {
            at = 0;
        }
        atomic_store(&fail_at, at);
    }
    if (at == 0) {
        return 0;
    }
    return atomic_fetch_add(&alloc_count, 1) + 1 == at;
}
#else
static inline int should_fail(void)
{
    return 0;
}
#endif

void *weir__malloc(size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return malloc(n ? n : 1);
}

void *weir__calloc(size_t nmemb, size_t size)
{
    if (should_fail()) {
        return NULL;
    }
    return calloc(nmemb ? nmemb : 1, size ? size : 1);
}

void *weir__realloc(void *p, size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return realloc(p, n ? n : 1);
}

void *weir__reallocarray(void *p, size_t nmemb, size_t size)
{
    if (size != 0 && nmemb > SIZE_MAX / size) {
        return NULL;
    }
    return weir__realloc(p, nmemb * size);
}

void weir__free(void *p)
{
    free(p);
}

char *weir__strndup(const char *s, size_t n)
{
    char *d = weir__malloc(n + 1);
    if (d == NULL) {
        return NULL;
    }
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *weir__strdup(const char *s)
{
    return weir__strndup(s, strlen(s));
}

void *weir_malloc(size_t n)
{
    return weir__malloc(n);
}

void *weir_calloc(size_t nmemb, size_t size)
{
    return weir__calloc(nmemb, size);
}

void weir_free(void *p)
{
    weir__free(p);
}
