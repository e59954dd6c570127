/* Reading into stream buffers and writing pending iovecs (see stream.h). */
#include "net/stream.h"

#include <errno.h>
#include <unistd.h>

#include <string.h>

#include "core/alloc.h"
#include "core/assert.h"
#include "tls/tls.h"
#include "weir/error.h"

void weir__outq_push(struct weir__outq *q, const void *base, size_t len)
{
    if (len == 0) {
        return;
    }
    /* Callers push at most WEIR_OUTQ_MAX ranges per message part: more is our bug. */
    WEIR_ASSERT(q->n < WEIR_OUTQ_MAX);
    q->v[q->n].iov_base = (void *)base;
    q->v[q->n].iov_len = len;
    q->n++;
}

void weir__outq_consume(struct weir__outq *q, size_t n)
{
    while (q->i < q->n && n >= q->v[q->i].iov_len) {
        n -= q->v[q->i].iov_len;
        q->i++;
    }
    if (q->i < q->n) {
        q->v[q->i].iov_base = (char *)q->v[q->i].iov_base + n;
        q->v[q->i].iov_len -= n;
    }
}

size_t weir__outq_len(const struct weir__outq *q)
{
    size_t n = 0;
    for (int i = q->i; i < q->n; i++) {
        n += q->v[i].iov_len;
    }
    return n;
}

ssize_t weir__stream_read(struct weir__stream *st, struct weir__bufpool *pool)
{
    if (st->in.data == NULL) {
        int rc = weir__buf_acquire(pool, &st->in);
        if (rc != 0) {
            return rc;
        }
    }
    if (weir__buf_space(&st->in) == 0) {
        weir__buf_compact(&st->in);
        if (weir__buf_space(&st->in) == 0) {
            return 0;
        }
    }
    if (st->vt != NULL) {
        ssize_t n = st->vt->read(st, st->in.data + st->in.wpos, weir__buf_space(&st->in));
        if (n > 0) {
            st->in.wpos += (uint32_t)n;
        }
        return n;
    }
    if (st->ssl != NULL) {
        ssize_t n = weir__tls_read(st, st->in.data + st->in.wpos, weir__buf_space(&st->in));
        if (n > 0) {
            st->in.wpos += (uint32_t)n;
        }
        return n;
    }
    for (;;) {
        ssize_t n = read(st->io.fd, st->in.data + st->in.wpos, weir__buf_space(&st->in));
        if (n > 0) {
            st->in.wpos += (uint32_t)n;
            return n;
        }
        if (n == 0) {
            st->eof = true;
            st->readable = false;
            return 0;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            st->readable = false;
            return 0;
        }
        return -errno;
    }
}

ssize_t weir__stream_flush(struct weir__stream *st, struct weir__outq *q)
{
    if (st->vt != NULL) {
        return st->vt->flush(st, q);
    }
    if (st->ssl != NULL) {
        return weir__tls_flush(st, q);
    }
    size_t total = 0;
    while (q->i < q->n) {
        ssize_t n = writev(st->io.fd, q->v + q->i, q->n - q->i);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                st->writable = false;
                return (ssize_t)total;
            }
            return -errno;
        }
        total += (size_t)n;
        weir__outq_consume(q, (size_t)n);
    }
    weir__outq_reset(q);
    return (ssize_t)total;
}

ssize_t weir__stream_write(struct weir__stream *st, const void *buf, size_t len)
{
    struct weir__outq q = {0};
    weir__outq_push(&q, buf, len);
    return weir__stream_flush(st, &q);
}

int weir__stream_grow_for_head(struct weir__stream *st, struct weir__bufpool *pool, uint32_t max)
{
    if (st->in.data == NULL || weir__buf_space(&st->in) > 0) {
        return 0;
    }
    weir__buf_compact(&st->in);
    if (weir__buf_space(&st->in) > 0) {
        return 0;
    }
    if (st->in.cap >= max) {
        return WEIR_ELIMIT;
    }
    char *big = weir__malloc(max);
    if (big == NULL) {
        return WEIR_ENOMEM;
    }
    memcpy(big, st->in.data, st->in.wpos);
    struct weir__buf nb = {big, max, 0, st->in.wpos};
    weir__buf_release(pool, &st->in);
    pool->outstanding++; /* the big buffer is accounted like a pooled one until released */
    st->in = nb;
    return 0;
}
