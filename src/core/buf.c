/* Per-thread pools of fixed-size I/O buffers (see buf.h). */
#include "core/buf.h"

#include <string.h>

#include "core/alloc.h"
#include "weir/error.h"

int weir__bufpool_init(struct weir__bufpool *p, uint32_t size, uint32_t max_free)
{
    p->size = size;
    p->max_free = max_free;
    p->nfree = 0;
    p->outstanding = 0;
    p->free = NULL;
    if (max_free > 0) {
        p->free = weir__calloc(max_free, sizeof(*p->free));
        if (p->free == NULL) {
            return WEIR_ENOMEM;
        }
    }
    return 0;
}

void weir__bufpool_dispose(struct weir__bufpool *p)
{
    for (uint32_t i = 0; i < p->nfree; i++) {
        weir__free(p->free[i]);
    }
    weir__free(p->free);
    p->free = NULL;
    p->nfree = 0;
}

int weir__buf_acquire(struct weir__bufpool *p, struct weir__buf *b)
{
    void *block = NULL;
#ifndef WEIR_NO_POOLS
    if (p->nfree > 0) {
        block = p->free[--p->nfree];
    }
#endif
    if (block == NULL) {
        block = weir__malloc(p->size);
        if (block == NULL) {
            return WEIR_ENOMEM;
        }
    }
    b->data = block;
    b->cap = p->size;
    b->rpos = b->wpos = 0;
    p->outstanding++;
    return 0;
}

void weir__buf_release(struct weir__bufpool *p, struct weir__buf *b)
{
    if (b->data == NULL) {
        return;
    }
#ifndef WEIR_NO_POOLS
    if (p->nfree < p->max_free && b->cap == p->size) {
        p->free[p->nfree++] = b->data;
    } else {
        weir__free(b->data);
    }
#else
    weir__free(b->data);
#endif
    p->outstanding--;
    b->data = NULL;
    b->cap = b->rpos = b->wpos = 0;
}

void weir__buf_consume(struct weir__buf *b, uint32_t n)
{
    b->rpos += n;
    if (b->rpos >= b->wpos) {
        b->rpos = b->wpos = 0;
    }
}

void weir__buf_compact(struct weir__buf *b)
{
    if (b->rpos == 0) {
        return;
    }
    uint32_t len = b->wpos - b->rpos;
    if (len) {
        memmove(b->data, b->data + b->rpos, len);
    }
    b->rpos = 0;
    b->wpos = len;
}
