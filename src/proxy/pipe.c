/*
 * Body pipes: one generic pipe moves a body in either direction. Decode the source framing
 * (length, chunked, until close), run the body filter, re-frame for the destination (chunked
 * is re-encoded canonically, trailers forwarded), and write with writev straight from the
 * source buffer (no copy). Source bytes are consumed only once written, so a pipe blocked on
 * its destination stops reading its source: backpressure with one buffer per side.
 *
 * The framings here are HTTP/1.1's (enum weir__h1_body); an HTTP/2 side brings its own body
 * path through its framing (proxy_int.h).
 */
#include "proxy/proxy_int.h"

#include "http1/serialize.h"

static void queue_data(struct weir__pipe *p, struct weir__outq *q, struct weir_iov data)
{
    if (data.len == 0) {
        return;
    }
    if (p->out_kind == WEIR_H1_BODY_CHUNKED) {
        size_t n = weir__h1_chunk_size_line(p->sizeline, data.len);
        weir__outq_push(q, p->sizeline, n);
        weir__outq_push(q, data.base, data.len);
        weir__outq_push(q, "\r\n", 2);
    } else if (p->out_kind != WEIR_H1_BODY_NONE) {
        weir__outq_push(q, data.base, data.len);
    }
}

static void queue_end(struct weir__pipe *p, struct weir__outq *q)
{
    if (p->out_kind == WEIR_H1_BODY_CHUNKED) {
        weir__outq_push(q, "0\r\n", 3);
        weir__outq_push(q, p->trailers.base, p->trailers.len);
        weir__outq_push(q, "\r\n", 2);
    }
    p->out_done = true;
}

/*
 * At the end of a length or until-close body from an HTTP/2 stream: its trailers, copied
 * into the request's arena (the stream may go before they are written).
 */
static int take_trailers(struct weir_session *s, struct weir__pipe *p, struct weir__stream *src)
{
    if (!p->in_done || src->trailers.len == 0 || p->trailers.len > 0) {
        return 0;
    }
    if (!src->eof && p->in_kind == WEIR_H1_BODY_LENGTH) {
        return 0; /* the trailers come after the last DATA: not yet */
    }
    p->trailers = weir_arena_iovdup(s->arena, src->trailers);
    return p->trailers.base != NULL ? 0 : WEIR_ENOMEM;
}

/* Decodes the next piece of body from src. Returns bytes of src consumed or an error. */
static ssize_t pipe_decode(struct weir_session *s, struct weir__pipe *p, struct weir__stream *src,
                           struct weir_iov *data)
{
    const char *base = src->in.data ? src->in.data + src->in.rpos : NULL;
    size_t avail = weir__buf_len(&src->in);
    *data = (struct weir_iov){NULL, 0};
    switch (p->in_kind) {
    case WEIR_H1_BODY_NONE:
        p->in_done = true;
        return 0;
    case WEIR_H1_BODY_LENGTH: {
        size_t n = avail < p->in_left ? avail : (size_t)p->in_left;
        *data = (struct weir_iov){base, n};
        p->in_left -= n;
        p->in_done = p->in_left == 0;
        return take_trailers(s, p, src) == 0 ? (ssize_t)n : WEIR_ENOMEM;
    }
    case WEIR_H1_BODY_CHUNKED: {
        struct weir__h1_chunk_out out;
        if (avail == 0) {
            return 0;
        }
        ssize_t n = weir__h1_chunked_decode(&p->dec, base, avail, &out);
        if (n < 0) {
            return n;
        }
        *data = out.data;
        if (out.done) {
            p->in_done = true;
            p->trailers = weir_arena_iovdup(s->arena, out.trailers);
            if (out.trailers.len > 0 && p->trailers.base == NULL) {
                return WEIR_ENOMEM;
            }
        }
        return n;
    }
    case WEIR_H1_BODY_CLOSE:
        *data = (struct weir_iov){base, avail};
        p->in_done = avail == 0 && src->eof;
        return take_trailers(s, p, src) == 0 ? (ssize_t)avail : WEIR_ENOMEM;
    }
    return WEIR_EINVAL;
}

/* Writes the queue: DONE once it is empty (its source bytes may go), BLOCKED, or ERR_DST. */
static enum weir__pipe_status pipe_flush(struct weir__pipe_io *io)
{
    ssize_t n = 0;
    if (io->discard) {
        weir__outq_reset(io->q); /* nobody to write to: as if written */
    } else if (io->spool != NULL) {
        /* Buffering: what the client cannot take now is held, and the origin read on. */
        n = weir__spool_take(io->spool, io->dst, io->q);
    } else if (!io->dst->writable) {
        return WEIR_PIPE_BLOCKED;
    } else {
        n = weir__stream_flush(io->dst, io->q);
    }
    if (n < 0) {
        return WEIR_PIPE_ERR_DST;
    }
    io->write_progress |= n > 0;
    io->written += (uint64_t)n;
    return weir__outq_empty(io->q) ? WEIR_PIPE_DONE : WEIR_PIPE_BLOCKED;
}

enum weir__pipe_status weir__pipe_step(struct weir_session *s, struct weir__pipe *p,
                                       struct weir__pipe_io *io)
{
    /*
     * A head queued alone waits for the first piece of body, so head and body leave in one
     * writev (one segment for small messages instead of two).
     */
    bool coalesce = io->q->n == 1 && io->q->i == 0 && p->pending_consume == 0 && !p->out_done;
    for (;;) {
        if (!weir__outq_empty(io->q) && !coalesce) {
            enum weir__pipe_status st = pipe_flush(io);
            if (st != WEIR_PIPE_DONE) {
                return st;
            }
            weir__buf_consume(&io->src->in, p->pending_consume);
            p->pending_consume = 0;
        }
        if (p->out_done) {
            return WEIR_PIPE_DONE;
        }
        if (p->in_done &&
            (io->filter == NULL || p->end_filtered || p->in_kind == WEIR_H1_BODY_NONE)) {
            if (p == &s->respp && weir__cache_teeing(s)) {
                weir__cache_complete(s); /* stored whole before the client sees the end */
            }
            queue_end(p, io->q);
            continue;
        }
        bool was_coalescing = coalesce;
        coalesce = false;
        struct weir_iov data;
        ssize_t consumed = p->in_done ? 0 : pipe_decode(s, p, io->src, &data);
        if (p->in_done && consumed == 0) {
            data = (struct weir_iov){NULL, 0};
        }
        if (consumed < 0) {
            return consumed == WEIR_ENOMEM ? WEIR_PIPE_ERR_HOOK : WEIR_PIPE_ERR_PROTO;
        }
        if (data.len > 0 ||
            (p->in_done && io->filter && !p->end_filtered && p->in_kind != WEIR_H1_BODY_NONE)) {
            if (io->limit && p->bytes + data.len > io->limit) {
                return WEIR_PIPE_ERR_LIMIT;
            }
            if (p == &s->respp && weir__cache_teeing(s)) {
                weir__cache_tee(s, data); /* stored as the origin sent it, before filters */
                if (p->in_done) {
                    weir__cache_complete(s); /* complete before its last bytes go out */
                }
            }
            if (io->filter) {
                p->end_filtered = p->in_done;
                if (io->filter(s, s->ctx, &data, p->in_done) == WEIR_HOOK_ERROR) {
                    return WEIR_PIPE_ERR_HOOK;
                }
            }
            p->bytes += data.len;
            queue_data(p, io->q, data);
            p->pending_consume = (uint32_t)consumed;
            if (weir__outq_empty(io->q)) {
                weir__buf_consume(&io->src->in, p->pending_consume);
                p->pending_consume = 0;
            }
            continue;
        }
        if (consumed > 0) {
            weir__buf_consume(&io->src->in, (uint32_t)consumed);
            continue;
        }
        if (p->in_done || was_coalescing) {
            continue; /* write what is queued before waiting for input */
        }
        if (io->src->eof) {
            return WEIR_PIPE_ERR_SRC;
        }
        if (!io->src->readable) {
            return WEIR_PIPE_BLOCKED;
        }
        ssize_t r = weir__stream_read(io->src, &s->w->bufs);
        if (r < 0) {
            return WEIR_PIPE_ERR_SRC;
        }
        if (r > 0) {
            io->read_progress = true;
        } else if (!io->src->eof && io->src->readable) {
            /* The buffer is full and the decoder cannot use it: a chunk line over the bound. */
            return WEIR_PIPE_ERR_PROTO;
        }
    }
}

void weir__pipe_source(struct weir_session *s, struct weir__pipe *p, enum weir__h1_body kind,
                       uint64_t length)
{
    p->in_kind = kind;
    p->in_left = length;
    weir__h1_chunked_init(&p->dec, WEIR_CHUNK_LINE_MAX, s->cfg->server.limits.max_header_bytes);
}
