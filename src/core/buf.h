/*
 * I/O buffers: fixed-size byte buffers with read and write positions, taken from a
 * per-thread free list so the hot path never touches the heap. An idle keep-alive connection
 * gives its buffers back.
 */
#ifndef WEIR_CORE_BUF_H
#define WEIR_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

/** Bytes [rpos, wpos) of data are unread; [wpos, cap) is free space. */
struct weir__buf {
    char *data;
    uint32_t cap;
    uint32_t rpos;
    uint32_t wpos;
};

/** A per-thread free list of equally sized buffers, keeping at most max_free idle ones. */
struct weir__bufpool {
    uint32_t size;
    uint32_t max_free;
    uint32_t nfree;
    void **free;
    uint64_t outstanding; /* handed out and not returned (tests, metrics) */
};

int weir__bufpool_init(struct weir__bufpool *p, uint32_t size, uint32_t max_free);
void weir__bufpool_dispose(struct weir__bufpool *p);

/** Attaches a pooled block to b (which must be empty). 0 or WEIR_ENOMEM. */
int weir__buf_acquire(struct weir__bufpool *p, struct weir__buf *b);
/** Returns b's block to the pool and empties b. Accepts a buffer holding no block. */
void weir__buf_release(struct weir__bufpool *p, struct weir__buf *b);

static inline uint32_t weir__buf_len(const struct weir__buf *b)
{
    return b->wpos - b->rpos;
}

static inline uint32_t weir__buf_space(const struct weir__buf *b)
{
    return b->cap - b->wpos;
}

/** Marks n unread bytes as consumed; resets positions when empty. */
void weir__buf_consume(struct weir__buf *b, uint32_t n);

/** Moves unread bytes to the start so the free space is contiguous at the end. */
void weir__buf_compact(struct weir__buf *b);

#endif
