/*
 * Response buffering (a route's buffer_responses, nginx's proxy_buffering): the bytes of a
 * response the client cannot take yet, held so weir reads the origin at the origin's pace.
 *
 * The bytes are held in order: first in memory chunks (up to `memory`), then in a temporary
 * file in the spill directory (up to `max` bytes of file). A byte goes to memory only while
 * the file holds nothing, so the order is always [memory][file]; reading drains memory first,
 * and when the file empties too its offsets start again at 0. The file is opened O_TMPFILE
 * (or created and unlinked at once), so it never has a name another process could find or
 * that a crash could leave behind: closing it is the whole cleanup.
 *
 * When the bounds are reached, or memory or the file cannot be had (an allocation fails, the
 * file cannot be opened or written: ENOSPC, EFBIG), the spool takes no more and the pipe falls
 * back to backpressure, as without buffering: nothing is lost, the response only stops being
 * buffered (the buffer for reading the file back is taken before the file, so it cannot be
 * missing later). A failure to read the file back is the one that loses bytes; the client's
 * connection is then closed short of the message's end.
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "weir/log.h"

struct weir__spool_chunk {
    struct weir__spool_chunk *next;
    uint32_t rpos, wpos, size;
    char data[];
};

struct weir__spool {
    struct weir__proxy_worker *w;
    uint64_t memory; /* most bytes of chunks held */
    uint64_t max;    /* most bytes of file */
    const char *dir; /* NULL: memory only */
    uint32_t chunk;  /* bytes per chunk */
    struct weir__spool_chunk *head, *tail;
    uint64_t mem_held; /* bytes of chunks allocated */
    int fd;            /* -1: no file yet */
    bool no_file;      /* opening or writing the file failed: memory only from now on */
    uint64_t file_w, file_r;
    char *rbuf; /* file bytes read back: rbuf[rpos..rlen) not yet queued */
    uint32_t rlen, rpos;
    struct weir__outq q; /* held bytes on their way to the client */
    uint32_t queued;     /* bytes of q taken from the spool, consumed once written */
    bool queued_file;    /* ... from rbuf (else from the head chunk) */
    uint64_t held;       /* bytes held in all, q's included */
};

struct weir__spool *weir__spool_new(struct weir_session *s, uint64_t memory, const char *dir,
                                    uint64_t max)
{
    struct weir__spool *sp = weir_arena_alloc(s->arena, sizeof(*sp));
    if (sp == NULL) {
        return NULL;
    }
    *sp = (struct weir__spool){.w = s->w, .memory = memory, .max = max, .fd = -1};
    sp->chunk = memory < WEIR_SPOOL_CHUNK ? (uint32_t)memory : WEIR_SPOOL_CHUNK;
    if (dir != NULL && dir[0] != '\0' && max > 0) {
        sp->dir = dir;
    }
    return sp;
}

void weir__spool_free(struct weir__spool *sp)
{
    if (sp == NULL) {
        return;
    }
    while (sp->head != NULL) {
        struct weir__spool_chunk *c = sp->head;
        sp->head = c->next;
        weir__free(c);
    }
    sp->tail = NULL;
    sp->mem_held = 0;
    weir__free(sp->rbuf);
    sp->rbuf = NULL;
    if (sp->fd >= 0) {
        (void)close(sp->fd);
        sp->fd = -1;
    }
    weir__outq_reset(&sp->q);
    sp->held = sp->queued = 0;
}

uint64_t weir__spool_held(const struct weir__spool *sp)
{
    return sp == NULL ? 0 : sp->held;
}

/* At most one warning per worker per WEIR_REFUSED_WARN_MS; the rest at debug level. */
static void spool_warn(struct weir__spool *sp, const char *what, int err)
{
    struct weir__proxy_worker *w = sp->w;
    uint64_t now = weir_loop_now_ms(w->loop);
    enum weir_log_level lvl = WEIR_LOG_DEBUG;
    if (now >= w->spill_warn_ms) {
        w->spill_warn_ms = now + WEIR_REFUSED_WARN_MS;
        lvl = WEIR_LOG_WARN;
    }
    weir_log(lvl, "buffer_responses: %s %s: %s; this response is no longer buffered past memory",
             what, sp->dir, strerror(err));
}

static int open_spill(struct weir__spool *sp)
{
    int fd = open(sp->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        /* A file system without O_TMPFILE: a file unlinked as soon as it exists. */
        char path[4096];
        for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
            uint64_t r = weir_loop_now_ms(sp->w->loop) ^ ((uint64_t)(uintptr_t)sp << 7) ^
                         (uint64_t)attempt * 0x9e3779b97f4a7c15ull;
            int n = snprintf(path, sizeof(path), "%s/weir-spill-%d-%016llx", sp->dir, (int)getpid(),
                             (unsigned long long)r);
            if (n < 0 || (size_t)n >= sizeof(path)) {
                errno = ENAMETOOLONG;
                break;
            }
            fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
            if (fd >= 0) {
                (void)unlink(path);
            } else if (errno != EEXIST) {
                break;
            }
        }
    }
    if (fd < 0) {
        spool_warn(sp, "cannot create a temporary file in", errno);
        sp->no_file = true;
        return -1;
    }
    sp->fd = fd;
    return 0;
}

/* Appends to the file what fits under max; returns bytes taken. */
static size_t put_file(struct weir__spool *sp, const char *p, size_t n)
{
    if (sp->dir == NULL || sp->no_file) {
        return 0;
    }
    if (sp->fd < 0) {
        /* The read-back buffer first: a spool that could not read its file back would lose
           the bytes it took, so without one it takes none (backpressure, as when full). */
        if (sp->rbuf == NULL && (sp->rbuf = weir__malloc(WEIR_SPOOL_READ)) == NULL) {
            sp->no_file = true;
            return 0;
        }
        if (open_spill(sp) != 0) {
            return 0;
        }
    }
    uint64_t room = sp->max > sp->file_w ? sp->max - sp->file_w : 0;
    if (n > room) {
        n = (size_t)room;
    }
    size_t done = 0;
    while (done < n) {
        ssize_t k = pwrite(sp->fd, p + done, n - done, (off_t)(sp->file_w + done));
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            spool_warn(sp, "cannot write the temporary file in", k < 0 ? errno : ENOSPC);
            sp->no_file = true;
            break;
        }
        done += (size_t)k;
    }
    sp->file_w += done;
    return done;
}

/* Appends to memory what fits under memory; returns bytes taken. */
static size_t put_memory(struct weir__spool *sp, const char *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        struct weir__spool_chunk *t = sp->tail;
        if (t == NULL || t->wpos == t->size) {
            if (sp->mem_held + sp->chunk > sp->memory) {
                break;
            }
            struct weir__spool_chunk *c = weir__malloc(sizeof(*c) + sp->chunk);
            if (c == NULL) {
                break; /* no memory now: backpressure, as if full */
            }
            *c = (struct weir__spool_chunk){.size = sp->chunk};
            if (t != NULL) {
                t->next = c;
            } else {
                sp->head = c;
            }
            sp->tail = t = c;
            sp->mem_held += sp->chunk;
        }
        size_t k = t->size - t->wpos;
        if (k > n - done) {
            k = n - done;
        }
        memcpy(t->data + t->wpos, p + done, k);
        t->wpos += (uint32_t)k;
        done += k;
    }
    return done;
}

static bool file_holds(const struct weir__spool *sp)
{
    return sp->file_r < sp->file_w || sp->rpos < sp->rlen;
}

/* Appends what fits of data; returns the bytes taken (fewer when full or failing). */
static size_t spool_put(struct weir__spool *sp, const void *data, size_t n)
{
    const char *p = data;
    size_t done = 0;
    if (!file_holds(sp)) {
        done = put_memory(sp, p, n);
    }
    if (done < n) {
        done += put_file(sp, p + done, n - done);
    }
    sp->held += done;
    return done;
}

ssize_t weir__spool_take(struct weir__spool *sp, struct weir__stream *dst, struct weir__outq *q)
{
    ssize_t written = 0;
    if (sp->held == 0 && dst->writable) {
        /* Nothing held: straight to the client, as without buffering. */
        written = weir__stream_flush(dst, q);
        if (written < 0) {
            return written;
        }
    }
    while (!weir__outq_empty(q)) {
        struct iovec *v = &q->v[q->i];
        size_t k = spool_put(sp, v->iov_base, v->iov_len);
        v->iov_base = (char *)v->iov_base + k;
        v->iov_len -= k;
        if (v->iov_len > 0) {
            break; /* full: the rest waits, and so does the origin */
        }
        q->i++;
    }
    if (weir__outq_empty(q)) {
        weir__outq_reset(q);
    }
    return written;
}

/* Drops the bytes queued from the front, now written. */
static void consume(struct weir__spool *sp)
{
    uint32_t n = sp->queued;
    if (n == 0) {
        return;
    }
    if (sp->queued_file) {
        sp->rpos += n;
    } else {
        struct weir__spool_chunk *c = sp->head;
        c->rpos += n;
        if (c->rpos == c->wpos && (c != sp->tail || c->wpos == c->size)) {
            sp->head = c->next;
            if (sp->head == NULL) {
                sp->tail = NULL;
            }
            sp->mem_held -= c->size;
            weir__free(c);
        } else if (c->rpos == c->wpos) {
            c->rpos = c->wpos = 0; /* the tail chunk, empty: reuse it */
        }
    }
    sp->held -= n;
    sp->queued = 0;
    if (!file_holds(sp)) {
        sp->file_r = sp->file_w = 0; /* empty: the file's space is used again */
    }
}

/* Queues the next held bytes in sp->q. 0, or -errno when the file cannot be read back (rbuf
   exists whenever the file does: put_file made it first). */
static int queue_next(struct weir__spool *sp)
{
    struct weir__spool_chunk *c = sp->head;
    if (c != NULL && c->rpos < c->wpos) {
        sp->queued = c->wpos - c->rpos;
        sp->queued_file = false;
        weir__outq_push(&sp->q, c->data + c->rpos, sp->queued);
        return 0;
    }
    if (sp->rpos == sp->rlen && sp->file_r < sp->file_w) {
        uint64_t want = sp->file_w - sp->file_r;
        if (want > WEIR_SPOOL_READ) {
            want = WEIR_SPOOL_READ;
        }
        ssize_t k;
        do {
            k = pread(sp->fd, sp->rbuf, (size_t)want, (off_t)sp->file_r);
        } while (k < 0 && errno == EINTR);
        if (k <= 0) {
            int err = k < 0 ? errno : EIO;
            weir_log(WEIR_LOG_ERROR, "buffer_responses: cannot read back the temporary file: %s",
                     strerror(err));
            return -err;
        }
        sp->file_r += (uint64_t)k;
        sp->rpos = 0;
        sp->rlen = (uint32_t)k;
    }
    if (sp->rpos < sp->rlen) {
        sp->queued = sp->rlen - sp->rpos;
        sp->queued_file = true;
        weir__outq_push(&sp->q, sp->rbuf + sp->rpos, sp->queued);
    }
    return 0;
}

enum weir__pipe_status weir__spool_drain(struct weir__spool *sp, struct weir__stream *dst,
                                         bool discard, uint64_t *written)
{
    if (discard) {
        weir__spool_free(sp); /* the client is gone: nothing held is wanted */
        return WEIR_PIPE_DONE;
    }
    for (;;) {
        if (!weir__outq_empty(&sp->q)) {
            if (!dst->writable) {
                return WEIR_PIPE_BLOCKED;
            } else {
                ssize_t n = weir__stream_flush(dst, &sp->q);
                if (n < 0) {
                    return WEIR_PIPE_ERR_DST;
                }
                *written += (uint64_t)n;
                if (!weir__outq_empty(&sp->q)) {
                    return WEIR_PIPE_BLOCKED;
                }
            }
            weir__outq_reset(&sp->q);
            consume(sp);
        }
        if (sp->held == 0) {
            return WEIR_PIPE_DONE;
        }
        if (queue_next(sp) != 0) {
            return WEIR_PIPE_ERR_SRC;
        }
        if (weir__outq_empty(&sp->q)) {
            return WEIR_PIPE_ERR_SRC; /* held bytes that cannot be found: never expected */
        }
    }
}
