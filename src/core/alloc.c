/*
 * Heap allocation wrappers. With WEIR_FAILMALLOC compiled in, the environment variable
 * WEIR_FAILMALLOC=N makes the Nth allocation (counted process-wide, from 1) return NULL, so tests
 * can sweep N across a request's life and check that out-of-memory never crashes or leaks.
 * WEIR_FAILMALLOC_REPORT=1 prints the number of allocations made at exit, which tells a test
 * where startup ends and a request begins (tests/integration/test_failmalloc.py).
 */
#include "core/alloc.h"
#include "weir/mem.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#ifdef WEIR_FAILMALLOC
#include <execinfo.h>
#include <stdio.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
void __sanitizer_print_stack_trace(void);
#endif

static atomic_long fail_at = -1; /* -1: not read yet; 0: disabled */
static atomic_long alloc_count;

static void report_count(void)
{
    (void)fprintf(stderr, "weir: failmalloc: %ld allocations\n", atomic_load(&alloc_count));
}

/* Reads the settings once; racing first calls read the same environment, so either wins. */
static long read_settings(void)
{
    const char *env = getenv("WEIR_FAILMALLOC");
    char *end = NULL;
    long at = env ? strtol(env, &end, 10) : 0;
    if (at < 0 || (end && *end != '\0')) {
        at = 0;
    }
    long expected = -1;
    if (atomic_compare_exchange_strong(&fail_at, &expected, at)) {
        const char *rep = getenv("WEIR_FAILMALLOC_REPORT");
        if (rep != NULL && rep[0] == '1') {
            (void)atexit(report_count);
        }
    }
    return atomic_load(&fail_at);
}

/*
 * Counts every allocation (for WEIR_FAILMALLOC_REPORT=1, which prints the total at exit) and
 * fails only the Nth: one failure per run, so a test can check that the next request works.
 */
static int should_fail(void)
{
    long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
    if (at < 0) {
        at = read_settings();
    }
    long n = atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed) + 1;
    if (at == 0 || n != at) {
        return 0;
    }
    /* Where it failed, so a test failure names the allocation. */
    (void)fprintf(stderr, "weir: failmalloc: failing allocation %ld\n", n);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_print_stack_trace();
#else
    void *frames[32];
    backtrace_symbols_fd(frames, backtrace(frames, 32), STDERR_FILENO);
#endif
    return 1;
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

static _Atomic size_t released; /* bytes weir__alloc_released noted since the last trim */

void weir__alloc_released(size_t n)
{
    atomic_fetch_add_explicit(&released, n, memory_order_relaxed);
}

void weir__alloc_trim(void)
{
    if (atomic_load_explicit(&released, memory_order_relaxed) < WEIR__TRIM_MIN) {
        return; /* the common case: a check of one counter */
    }
    atomic_store_explicit(&released, 0, memory_order_relaxed);
#if defined(__GLIBC__)
    /* A fill reuses the free chunks of its own thread's arena; the others' stay resident.
       mallinfo2 is cheaper than a trim that finds nothing to give back. */
    struct mallinfo2 mi = mallinfo2();
    if (mi.fordblks >= WEIR__TRIM_MIN) {
        (void)malloc_trim(0);
    }
#endif
}
