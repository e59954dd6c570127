/*
 * Per-request arenas: bump allocation in a chain of blocks with a hard cap on the total,
 * cleanups run in reverse order, all freed at once. A reset keeps the first block so a
 * keep-alive connection reuses it without touching the heap.
 */
#include "weir/mem.h"

#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "weir/error.h"

#define ARENA_ALIGN 16

struct block {
    struct block *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

struct cleanup {
    struct cleanup *next;
    weir_cleanup_fn fn;
    void *data;
};

struct weir_arena {
    struct block *head; /* current block (newest) */
    struct block *first;
    size_t block_size;
    size_t cap;
    size_t used; /* bytes handed out */
    struct cleanup *cleanups;
};

static struct block *block_new(size_t size)
{
    struct block *b = weir__malloc(sizeof(*b) + size);
    if (b == NULL) {
        return NULL;
    }
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

int weir_arena_new(size_t block_size, size_t cap, struct weir_arena **out)
{
    *out = NULL;
    if (block_size < 256) {
        block_size = 256;
    }
    struct weir_arena *a = weir__malloc(sizeof(*a));
    if (a == NULL) {
        return WEIR_ENOMEM;
    }
    a->first = block_new(block_size);
    if (a->first == NULL) {
        weir__free(a);
        return WEIR_ENOMEM;
    }
    a->head = a->first;
    a->block_size = block_size;
    a->cap = cap;
    a->used = 0;
    a->cleanups = NULL;
    *out = a;
    return 0;
}

static void run_cleanups(struct weir_arena *a)
{
    /* A cleanup may not allocate from this arena; take the list first. */
    struct cleanup *c = a->cleanups;
    a->cleanups = NULL;
    for (; c != NULL; c = c->next) {
        c->fn(c->data);
    }
}

static void free_blocks_after_first(struct weir_arena *a)
{
    struct block *b = a->head;
    while (b != a->first) {
        struct block *next = b->next;
        weir__free(b);
        b = next;
    }
    a->head = a->first;
    a->first->used = 0;
    a->first->next = NULL;
    a->used = 0;
}

void weir_arena_free(struct weir_arena *a)
{
    if (a == NULL) {
        return;
    }
    run_cleanups(a);
    free_blocks_after_first(a);
    weir__free(a->first);
    weir__free(a);
}

void weir_arena_reset(struct weir_arena *a)
{
    run_cleanups(a);
    free_blocks_after_first(a);
}

void *weir_arena_alloc(struct weir_arena *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < n || a->used + need < a->used || a->used + need > a->cap) {
        return NULL;
    }
    struct block *b = a->head;
    if (b->size - b->used < need) {
        size_t size = need > a->block_size ? need : a->block_size;
        struct block *nb = block_new(size);
        if (nb == NULL) {
            return NULL;
        }
        nb->next = b;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->used += need;
    return p;
}

void *weir_arena_calloc(struct weir_arena *a, size_t n)
{
    void *p = weir_arena_alloc(a, n);
    if (p != NULL) {
        memset(p, 0, n);
    }
    return p;
}

char *weir_arena_strndup(struct weir_arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX) {
        return NULL;
    }
    char *d = weir_arena_alloc(a, n + 1);
    if (d == NULL) {
        return NULL;
    }
    if (n) {
        memcpy(d, s, n);
    }
    d[n] = '\0';
    return d;
}

struct weir_iov weir_arena_iovdup(struct weir_arena *a, struct weir_iov v)
{
    char *d = weir_arena_strndup(a, v.base, v.len);
    return (struct weir_iov){d, d ? v.len : 0};
}

int weir_arena_cleanup_add(struct weir_arena *a, weir_cleanup_fn fn, void *data)
{
    struct cleanup *c = weir_arena_alloc(a, sizeof(*c));
    if (c == NULL) {
        return WEIR_ENOMEM;
    }
    c->fn = fn;
    c->data = data;
    c->next = a->cleanups;
    a->cleanups = c;
    return 0;
}

size_t weir_arena_used(const struct weir_arena *a)
{
    return a->used;
}
