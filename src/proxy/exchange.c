/*
 * The upstream exchange of one session: connecting (or reusing a pooled connection), sending
 * the request head and streaming the body up, reading the response head, and streaming the
 * response body down. Both bodies go through the same pipe: decode the source framing, run
 * the body filter, re-frame, write with writev straight from the source buffer (no copy), and
 * consume the source bytes only once written. Backpressure is natural: a pipe blocked on its
 * destination stops reading its source.
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <string.h>

#include "http1/serialize.h"
#include "net/sock.h"
#include "weir/log.h"

enum pipe_status {
    P_DONE = 0,
    P_BLOCKED,
    P_ERR_SRC,   /* read error or premature close of the source */
    P_ERR_PROTO, /* malformed framing from the source */
    P_ERR_DST,   /* write error on the destination */
    P_ERR_HOOK,  /* a body filter failed */
    P_ERR_LIMIT, /* request body over max_body_bytes */
};

static void up_event(struct weir_loop *loop, struct weir_io *io, uint32_t events);

/* ---- body pipes ---- */

typedef enum weir_hook_result (*body_filter_fn)(struct weir_session *, void *, struct weir_iov *,
                                                bool);

struct pipe_io {
    struct weir__stream *src;
    struct weir__stream *dst;
    struct weir__outq *q;
    body_filter_fn filter;
    uint64_t limit; /* max body bytes, 0 = none */
    bool read_progress;
    bool write_progress;
};

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
        return (ssize_t)n;
    }
    case WEIR_H1_BODY_CHUNKED: {
        struct weir_h1_chunk_out out;
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
        return (ssize_t)avail;
    }
    return WEIR_EINVAL;
}

static enum pipe_status pipe_step(struct weir_session *s, struct weir__pipe *p, struct pipe_io *io)
{
    /*
     * A head queued alone waits for the first piece of body, so head and body leave in one
     * writev (one segment for small messages instead of two).
     */
    bool coalesce = io->q->n == 1 && io->q->i == 0 && p->pending_consume == 0 && !p->out_done;
    for (;;) {
        if (!weir__outq_empty(io->q) && !coalesce) {
            if (!io->dst->writable) {
                return P_BLOCKED;
            }
            ssize_t n = weir__stream_flush(io->dst, io->q);
            if (n < 0) {
                return P_ERR_DST;
            }
            io->write_progress |= n > 0;
            if (!weir__outq_empty(io->q)) {
                return P_BLOCKED;
            }
            weir__buf_consume(&io->src->in, p->pending_consume);
            p->pending_consume = 0;
        }
        if (p->out_done) {
            return P_DONE;
        }
        if (p->in_done &&
            (io->filter == NULL || p->end_filtered || p->in_kind == WEIR_H1_BODY_NONE)) {
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
            return consumed == WEIR_ENOMEM ? P_ERR_HOOK : P_ERR_PROTO;
        }
        if (data.len > 0 ||
            (p->in_done && io->filter && !p->end_filtered && p->in_kind != WEIR_H1_BODY_NONE)) {
            if (io->limit && p->bytes + data.len > io->limit) {
                return P_ERR_LIMIT;
            }
            if (io->filter) {
                p->end_filtered = p->in_done;
                if (io->filter(s, s->ctx, &data, p->in_done) == WEIR_HOOK_ERROR) {
                    return P_ERR_HOOK;
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
            return P_ERR_SRC;
        }
        if (!io->src->readable) {
            return P_BLOCKED;
        }
        ssize_t r = weir__stream_read(io->src, &s->w->bufs);
        if (r < 0) {
            return P_ERR_SRC;
        }
        if (r > 0) {
            io->read_progress = true;
        } else if (!io->src->eof && io->src->readable) {
            /* The buffer is full and the decoder cannot use it: a chunk line over the bound. */
            return P_ERR_PROTO;
        }
    }
}

/* ---- upstream connection ---- */

/*
 * Header rewriting on the hot path: one compaction pass over the fields removes hop-by-hop
 * ones and notes the fields we care about, instead of one scan per name.
 */

#define MAX_CONN_TOKENS 8

/* Fields that describe one connection and never cross the proxy (RFC 9110 7.6.1). */
static bool is_hop_by_hop(struct weir_iov n)
{
    switch (n.len) {
    case 2:
        return weir_iov_ieq(n, WEIR_IOV_LIT("TE"));
    case 7:
        return weir_iov_ieq(n, WEIR_IOV_LIT("Upgrade"));
    case 10:
        return weir_iov_ieq(n, WEIR_IOV_LIT("Connection")) ||
               weir_iov_ieq(n, WEIR_IOV_LIT("Keep-Alive"));
    case 17:
        return weir_iov_ieq(n, WEIR_IOV_LIT("Transfer-Encoding"));
    default:
        break;
    }
    return n.len > 6 && weir_iov_ieq((struct weir_iov){n.base, 6}, WEIR_IOV_LIT("Proxy-"));
}

struct field_scan {
    int content_length; /* index after compaction, -1 when absent */
    int x_forwarded_for;
    bool host;
    struct weir_iov conn_tokens[MAX_CONN_TOKENS]; /* extra names Connection listed */
    unsigned nconn_tokens;
    bool conn_overflow;
};

/* Notes the names a Connection field lists beyond the usual close/keep-alive. */
static void note_connection_tokens(struct field_scan *fs, struct weir_iov value)
{
    size_t pos = 0;
    struct weir_iov tok;
    while (weir__http_next_token(value, &pos, &tok)) {
        if (weir_iov_ieq(tok, WEIR_IOV_LIT("close")) ||
            weir_iov_ieq(tok, WEIR_IOV_LIT("keep-alive")) || is_hop_by_hop(tok)) {
            continue;
        }
        if (fs->nconn_tokens < MAX_CONN_TOKENS) {
            fs->conn_tokens[fs->nconn_tokens++] = tok;
        } else {
            fs->conn_overflow = true;
        }
    }
}

static bool named_by_connection(const struct field_scan *fs, struct weir_iov name)
{
    for (unsigned i = 0; i < fs->nconn_tokens; i++) {
        if (weir_iov_ieq(name, fs->conn_tokens[i])) {
            return true;
        }
    }
    return false;
}

/*
 * Removes hop-by-hop fields, the fields Connection names, and for requests Expect and
 * X-Forwarded-Proto (we answer 100-continue ourselves and set the protocol). Fills *fs.
 */
static void strip_fields(struct weir_headers *h, bool request, struct field_scan *fs)
{
    memset(fs, 0, sizeof(*fs));
    fs->content_length = fs->x_forwarded_for = -1;
    uint32_t w = 0;
    for (uint32_t r = 0; r < h->n; r++) {
        struct weir_iov name = h->v[r].name;
        if (is_hop_by_hop(name)) {
            if (name.len == 10 && (name.base[0] | 0x20) == 'c') {
                note_connection_tokens(fs, h->v[r].value);
            }
            continue;
        }
        if (request &&
            ((name.len == 6 && weir_iov_ieq(name, WEIR_IOV_LIT("Expect"))) ||
             (name.len == 17 && weir_iov_ieq(name, WEIR_IOV_LIT("X-Forwarded-Proto"))))) {
            continue;
        }
        if (name.len == 14 && weir_iov_ieq(name, WEIR_IOV_LIT("Content-Length"))) {
            fs->content_length = (int)w;
        } else if (request && name.len == 15 &&
                   weir_iov_ieq(name, WEIR_IOV_LIT("X-Forwarded-For"))) {
            fs->x_forwarded_for = (int)w;
        } else if (request && name.len == 4 && weir_iov_ieq(name, WEIR_IOV_LIT("Host"))) {
            fs->host = true;
        }
        h->v[w++] = h->v[r];
    }
    h->n = w;
    if (fs->nconn_tokens > 0) {
        /* Rare: Connection named other fields, which may have come before it. */
        fs->content_length = fs->x_forwarded_for = -1;
        w = 0;
        for (uint32_t r = 0; r < h->n; r++) {
            struct weir_iov name = h->v[r].name;
            if (named_by_connection(fs, name)) {
                continue;
            }
            if (weir_iov_ieq(name, WEIR_IOV_LIT("Content-Length"))) {
                fs->content_length = (int)w;
            } else if (request && weir_iov_ieq(name, WEIR_IOV_LIT("X-Forwarded-For"))) {
                fs->x_forwarded_for = (int)w;
            }
            h->v[w++] = h->v[r];
        }
        h->n = w;
    }
}

/*
 * Appends a field whose bytes outlive the request (static text, or the connection's own
 * buffers) without copying them; falls back to a copying add when the array must grow.
 */
static int push_field(struct weir_headers *h, struct weir_iov name, struct weir_iov value)
{
    if (h->n < h->cap) {
        h->v[h->n++] = (struct weir_header){name, value};
        return 0;
    }
    return weir_headers_add_iov(h, name, value);
}

static int add_forwarded(struct weir_session *s, struct weir_headers *h,
                         const struct field_scan *fs)
{
    const struct weir_cfg_server *sc = &s->cfg->server;
    int rc = 0;
    if (sc->x_forwarded_for) {
        struct weir_iov ip = weir_session_client_ip(s);
        if (fs->x_forwarded_for >= 0 && h->v[fs->x_forwarded_for].value.len > 0) {
            struct weir_iov prev = h->v[fs->x_forwarded_for].value;
            size_t len = prev.len + 2 + ip.len;
            char *v = weir_arena_alloc(s->arena, len);
            if (v == NULL) {
                return WEIR_ENOMEM;
            }
            memcpy(v, prev.base, prev.len);
            /* A length-delimited header value, not a C string: no NUL wanted. */
            // NOLINTNEXTLINE(bugprone-not-null-terminated-result)
            memcpy(v + prev.len, ", ", 2);
            memcpy(v + prev.len + 2, ip.base, ip.len);
            h->v[fs->x_forwarded_for].value = (struct weir_iov){v, len};
        } else if (fs->x_forwarded_for >= 0) {
            h->v[fs->x_forwarded_for].value = ip;
        } else {
            rc = push_field(h, WEIR_IOV_LIT("X-Forwarded-For"), ip);
        }
    }
    if (rc == 0 && sc->x_forwarded_proto) {
        rc = push_field(h, WEIR_IOV_LIT("X-Forwarded-Proto"), WEIR_IOV_LIT("http"));
    }
    if (rc == 0 && sc->via) {
        rc = push_field(h, WEIR_IOV_LIT("Via"),
                        s->client_minor ? WEIR_IOV_LIT("1.1 weir") : WEIR_IOV_LIT("1.0 weir"));
    }
    return rc;
}

static bool parse_length(struct weir_iov v, uint64_t *out)
{
    uint64_t n = 0;
    if (v.len == 0 || v.len > 19) {
        return false;
    }
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9') {
            return false;
        }
        n = n * 10 + (uint64_t)(v.base[i] - '0');
    }
    *out = n;
    return true;
}

/* Builds the upstream request head once (hooks run once even if the request is retried). */
static int build_upstream_head(struct weir_session *s)
{
    struct weir_headers *h = &s->req.headers;
    struct field_scan fs;
    if (s->up_head != NULL) {
        return 0;
    }
    strip_fields(h, true, &fs);
    int rc = add_forwarded(s, h, &fs);
    if (rc == 0 && !fs.host) {
        /* An HTTP/1.0 client may omit Host; what we send up is HTTP/1.1, which needs one. */
        rc = push_field(h, WEIR_IOV_LIT("Host"), weir_iov_cstr(s->peer.name));
    }
    if (rc != 0) {
        return rc;
    }
    if (s->w->hooks->upstream_request_filter) {
        if (s->w->hooks->upstream_request_filter(s, s->ctx, &s->req) != WEIR_HOOK_CONTINUE) {
            return WEIR_EINVAL;
        }
        fs.content_length = -2; /* the hook may have moved fields: look again */
    }
    /* Framing going up follows the final head: Content-Length if present, else chunked. */
    s->reqp.in_kind = s->req_body;
    s->reqp.in_left = s->req_length;
    weir__h1_chunked_init(&s->reqp.dec, 4096, s->cfg->server.limits.max_header_bytes);
    struct weir_iov cl = {NULL, 0};
    bool has_cl = fs.content_length == -2 ? weir_headers_get(h, "Content-Length", &cl)
                                          : fs.content_length >= 0;
    if (fs.content_length >= 0) {
        cl = h->v[fs.content_length].value;
    }
    uint64_t len;
    if (s->req_body == WEIR_H1_BODY_NONE) {
        s->reqp.out_kind = WEIR_H1_BODY_NONE;
    } else if (s->req_body == WEIR_H1_BODY_LENGTH && has_cl && parse_length(cl, &len) &&
               len == s->req_length) {
        s->reqp.out_kind = WEIR_H1_BODY_LENGTH;
    } else {
        weir_headers_remove(h, "Content-Length");
        rc = weir_headers_set(h, "Transfer-Encoding", "chunked");
        if (rc != 0) {
            return rc;
        }
        s->reqp.out_kind = WEIR_H1_BODY_CHUNKED;
    }
    size_t n = weir__h1_request_size(&s->req);
    s->up_head = weir_arena_alloc(s->arena, n);
    if (s->up_head == NULL) {
        return WEIR_ENOMEM;
    }
    s->up_head_len = weir__h1_write_request(&s->req, s->up_head, n);
    return s->up_head_len ? 0 : WEIR_EINVAL;
}

static void begin_connection(struct weir_session *s)
{
    struct weir__proxy_worker *w = s->w;
    int rc;
    s->up_reused = false;
    s->up = weir__pool_take(w->pool, &s->peer);
    /*
     * A request with a body cannot be retried once the body is under way, so make sure a
     * pooled connection is alive first; bodiless requests are retried if it was not.
     */
    while (s->up != NULL && s->req_body != WEIR_H1_BODY_NONE && !weir__upconn_alive(s->up)) {
        weir__upconn_close(w->pool, s->up);
        s->up = weir__pool_take(w->pool, &s->peer);
    }
    if (s->up != NULL) {
        s->up_reused = true;
    } else {
        rc = weir__upconn_connect(w->pool, &s->peer, &s->up);
        if (rc != 0) {
            s->up = NULL;
            weir__exchange_connect_failed(s, rc);
            return;
        }
    }
    WEIR_ASSERT(s->up != NULL); /* set by weir__upconn_connect when it returns 0 */
    s->up->owner = s;
    s->up->st.io.cb = up_event;
    s->up->st.io.data = s->up;
    s->up_progress_ms = weir_loop_now_ms(w->loop);
    memset(&s->up_scan, 0, sizeof(s->up_scan));
    s->resp_byte_seen = false;
    s->up_ready = false;
    weir__outq_reset(&s->out_up);
    weir__exchange_run(s);
}

void weir__exchange_start(struct weir_session *s)
{
    begin_connection(s);
}

void weir__exchange_connect_failed(struct weir_session *s, int err)
{
    enum weir_error_type type = err == -ECONNREFUSED    ? WEIR_ERR_CONNECT_REFUSED
                                : err == WEIR_ETIMEDOUT ? WEIR_ERR_CONNECT_TIMEOUT
                                                        : WEIR_ERR_CONNECT_ERROR;
    weir__exchange_release_upstream(s, false);
    weir__backend_failed(s->peer.backend);
    unsigned max = s->cfg->server.max_retries;
    struct weir_error e = {type, WEIR_SRC_UPSTREAM, s->retries < max,
                           err < 0 && err > -4096 ? -err : 0, "connect"};
    if (s->w->hooks->fail_to_connect) {
        s->w->hooks->fail_to_connect(s, s->ctx, &s->peer, &e);
    }
    weir_log(WEIR_LOG_INFO, "connect to %s failed: %s%s", s->peer.name, weir_strerror(err),
             e.retry && s->retries < 16 ? " (retrying)" : "");
    if (e.retry && s->retries < 16) {
        s->retries++;
        s->have_peer = false;
        s->phase = PH_PEER;
        weir__session_run(s);
        return;
    }
    weir__session_fail(s, type, WEIR_SRC_UPSTREAM, e.sys_errno, "connect");
}

void weir__exchange_release_upstream(struct weir_session *s, bool reusable)
{
    struct weir__upconn *u = s->up;
    if (u == NULL) {
        return;
    }
    s->up = NULL;
    weir_timer_stop(s->w->loop, &s->up_timer);
    u->owner = NULL;
    if (reusable && s->up_keep_alive && s->req_sent && s->respp.in_done &&
        s->respp.in_kind != WEIR_H1_BODY_CLOSE && weir__outq_empty(&s->out_up)) {
        u->requests++;
        struct weir_backend *b = s->peer.backend;
        u->share_now = b != NULL && atomic_load_explicit(&b->max_conns, memory_order_relaxed) != 0;
        if (weir__pool_put(s->w->pool, u)) {
            return;
        }
    }
    weir__upconn_close(s->w->pool, u);
}

static void up_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct weir__upconn *u = io->data;
    struct weir_session *s = u->owner;
    if (events & (WEIR_IO_READ | WEIR_IO_RDHUP | WEIR_IO_HUP | WEIR_IO_ERROR)) {
        u->st.readable = true;
    }
    if (events & (WEIR_IO_WRITE | WEIR_IO_HUP | WEIR_IO_ERROR)) {
        u->st.writable = true;
    }
    if (s != NULL && !s->suspended && s->phase == PH_PROXY) {
        weir__exchange_run(s);
    }
}

/* ---- connecting ---- */

/* Returns true when the connection is usable now; false when waiting or failed. */
static bool ensure_connected(struct weir_session *s)
{
    struct weir__upconn *u = s->up;
    if (s->up_ready) {
        return true;
    }
    if (!u->connected) {
        if (!u->st.writable) {
            return false;
        }
        int rc = weir__connect_result(u->st.io.fd);
        if (rc != 0) {
            weir__exchange_connect_failed(s, rc);
            return false;
        }
        u->connected = true;
        s->up_progress_ms = weir_loop_now_ms(s->w->loop);
    }
    if (s->w->hooks->connected_to_upstream &&
        s->w->hooks->connected_to_upstream(s, s->ctx, &s->peer, s->up_reused) !=
            WEIR_HOOK_CONTINUE) {
        weir__session_fail(s, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "connected_to_upstream");
        return false;
    }
    if (build_upstream_head(s) != 0) {
        weir__session_fail(s, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "upstream request head");
        return false;
    }
    weir__outq_push(&s->out_up, s->up_head, s->up_head_len);
    s->up_ready = true;
    return true;
}

/* ---- retrying a request whose pooled connection turned out dead ---- */

static bool can_retry_stale(const struct weir_session *s)
{
    return s->up_reused && !s->resp_byte_seen && s->reqp.bytes == 0 &&
           s->reqp.pending_consume == 0 && s->stale_retries < 3;
}

/* Puts the request back to before its first byte went upstream; the head built before is
   reused. Only for a request nothing of whose body was consumed and nothing of whose
   response reached the client. */
static void rewind_request(struct weir_session *s)
{
    weir__exchange_release_upstream(s, false);
    s->reqp.in_left = s->req_length;
    s->reqp.in_done = s->reqp.out_done = s->reqp.end_filtered = false;
    weir__h1_chunked_init(&s->reqp.dec, 4096, s->cfg->server.limits.max_header_bytes);
    s->req_sent = false; /* the head must go out again, or we wait for an answer forever */
    s->resp_head_done = false;
}

/* Nothing of the request body was consumed and no response byte arrived. */
static bool replayable(const struct weir_session *s)
{
    return !s->resp_byte_seen && !s->resp_started && s->reqp.bytes == 0 &&
           s->reqp.pending_consume == 0;
}

static void retry_stale(struct weir_session *s)
{
    s->stale_retries++;
    rewind_request(s);
    struct weir__upconn *u = NULL;
    int rc = weir__upconn_connect(s->w->pool, &s->peer, &u);
    if (rc != 0) {
        weir__exchange_connect_failed(s, rc);
        return;
    }
    s->up = u;
    s->up_reused = false;
    u->owner = s;
    u->st.io.cb = up_event;
    u->st.io.data = u;
    s->up_progress_ms = weir_loop_now_ms(s->w->loop);
    memset(&s->up_scan, 0, sizeof(s->up_scan));
    s->resp_byte_seen = false;
    s->up_ready = false;
    weir__outq_reset(&s->out_up);
    weir__exchange_run(s);
}

/*
 * The exchange with the upstream failed after connecting. A reused connection that died
 * before answering is retried on a fresh one to the same peer (preset; not a backend failure,
 * not counted in max_retries). Otherwise error_while_proxy may ask for a retry, honoured when
 * the request can be replayed (nothing of its body consumed, no response byte seen) and
 * max_retries allows: upstream_peer then chooses again, away from this backend.
 */
static void upstream_error(struct weir_session *s, enum weir_error_type type, int sys_errno,
                           const char *context)
{
    bool timeout = type == WEIR_ERR_READ_TIMEOUT || type == WEIR_ERR_WRITE_TIMEOUT;
    bool stale = !timeout && can_retry_stale(s);
    struct weir_error e = {type, WEIR_SRC_UPSTREAM, stale, sys_errno, context};
    if (s->w->hooks->error_while_proxy) {
        s->w->hooks->error_while_proxy(s, s->ctx, &s->peer, &e);
    }
    if (e.retry && stale) {
        retry_stale(s); /* a pooled connection the peer had closed: not the backend's fault */
        return;
    }
    weir__backend_failed(s->peer.backend);
    if (e.retry && replayable(s) && s->retries < s->cfg->server.max_retries) {
        weir_log(WEIR_LOG_INFO, "upstream %s: %s (%s); retrying", s->peer.name,
                 weir_error_type_str(type), context ? context : "");
        rewind_request(s);
        s->retries++;
        s->have_peer = false;
        s->phase = PH_PEER;
        weir__session_run(s);
        return;
    }
    weir__session_fail(s, type, WEIR_SRC_UPSTREAM, sys_errno, context);
}

/* ---- the response head ---- */

static int adopt_response(struct weir_session *s, const struct weir_h1_response *hr,
                          const char *head, size_t len)
{
    char *copy = weir_arena_alloc(s->arena, len);
    struct weir_resp *r = weir_arena_calloc(s->arena, sizeof(*r));
    if (copy == NULL || r == NULL) {
        return WEIR_ENOMEM;
    }
    memcpy(copy, head, len);
    uint32_t max = s->cfg->server.limits.max_headers + 64;
    if (weir__headers_init(&r->headers, s->arena, (uint32_t)hr->nheaders + 8, max) != 0) {
        return WEIR_ENOMEM;
    }
    for (size_t i = 0; i < hr->nheaders; i++) {
        r->headers.v[i].name.base = copy + (hr->headers[i].name.base - head);
        r->headers.v[i].name.len = hr->headers[i].name.len;
        r->headers.v[i].value.base = copy + (hr->headers[i].value.base - head);
        r->headers.v[i].value.len = hr->headers[i].value.len;
    }
    r->headers.n = (uint32_t)hr->nheaders;
    r->status = (uint16_t)hr->status;
    r->minor = (uint8_t)hr->minor;
    r->reason.base = copy + (hr->reason.base - head);
    r->reason.len = hr->reason.len;
    s->resp = r;
    s->up_keep_alive = hr->keep_alive;
    s->respp.in_kind = hr->body;
    s->respp.in_left = hr->content_length;
    weir__h1_chunked_init(&s->respp.dec, 4096, s->cfg->server.limits.max_header_bytes);
    return 0;
}

/* Returns 1 when the final response head is in s->resp, 0 when waiting, -1 on failure. */
static int read_response_head(struct weir_session *s)
{
    struct weir__upconn *u = s->up;
    const struct weir_cfg_limits *lim = &s->cfg->server.limits;
    uint32_t maxh = lim->max_headers <= 10000 ? lim->max_headers : 10000;
    struct weir_header hdrs[maxh];
    struct weir_h1_limits hl = {lim->max_request_line, lim->max_header_bytes, maxh};
    bool head_method = weir_iov_eq(s->req.method, WEIR_IOV_LIT("HEAD"));
    for (;;) {
        if (weir__buf_len(&u->st.in) > 0) {
            struct weir_h1_response hr;
            s->resp_byte_seen = true;
            ssize_t n =
                weir__h1_parse_response(u->st.in.data + u->st.in.rpos, weir__buf_len(&u->st.in),
                                        &s->up_scan, &hl, head_method, hdrs, maxh, &hr);
            if (n > 0 && hr.status >= 100 && hr.status < 200 && hr.status != 101) {
                /* Interim responses are ours to give (100-continue) or to drop, boundedly. */
                if (++s->interim_responses > WEIR_MAX_INTERIM_RESPONSES) {
                    upstream_error(s, WEIR_ERR_INVALID_HTTP, 0, "too many interim responses");
                    return -1;
                }
                weir__buf_consume(&u->st.in, (uint32_t)n);
                memset(&s->up_scan, 0, sizeof(s->up_scan));
                continue;
            }
            if (n > 0 && hr.status != 101) {
                if (adopt_response(s, &hr, u->st.in.data + u->st.in.rpos, (size_t)n) != 0) {
                    weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "arena");
                    return -1;
                }
                weir__buf_consume(&u->st.in, (uint32_t)n);
                return 1;
            }
            if (n != WEIR_EAGAIN) {
                weir_log(WEIR_LOG_WARN, "invalid response head from %s: %s", s->peer.name,
                         n > 0 ? "unexpected 101" : weir_strerror((int)n));
                upstream_error(s, WEIR_ERR_INVALID_HTTP, 0, "response head");
                return -1;
            }
        }
        if (u->st.eof) {
            upstream_error(s, WEIR_ERR_CONNECTION_CLOSED, 0, "closed before response");
            return -1;
        }
        if (!u->st.readable) {
            return 0;
        }
        int rc = weir__stream_grow_for_head(&u->st, &s->w->bufs,
                                            lim->max_header_bytes + lim->max_request_line);
        if (rc == WEIR_ELIMIT) {
            upstream_error(s, WEIR_ERR_INVALID_HTTP, 0, "response head too large");
            return -1;
        }
        ssize_t r = rc == 0 ? weir__stream_read(&u->st, &s->w->bufs) : rc;
        if (r < 0) {
            upstream_error(s, WEIR_ERR_READ_ERROR, r > -4096 ? (int)-r : 0, "read");
            return -1;
        }
        if (r > 0) {
            s->up_progress_ms = weir_loop_now_ms(s->w->loop);
        }
    }
}

/* Sets the Connection field the client sees and reports whether we close after. */
static int set_connection_header(struct weir_session *s, struct weir_resp *r)
{
    /* Local responses may carry a Connection field a hook set: replace it. */
    weir_headers_remove(&r->headers, "Connection");
    if (s->close_after || !s->client_keep_alive || s->w->draining) {
        s->close_after = true;
        return push_field(&r->headers, WEIR_IOV_LIT("Connection"), WEIR_IOV_LIT("close"));
    }
    if (s->client_minor == 0) {
        return push_field(&r->headers, WEIR_IOV_LIT("Connection"), WEIR_IOV_LIT("keep-alive"));
    }
    return 0;
}

static int queue_head(struct weir_session *s, struct weir_resp *r)
{
    size_t n = weir__h1_response_size(r);
    char *buf = weir_arena_alloc(s->arena, n);
    if (buf == NULL || weir__h1_write_response(r, buf, n) != n) {
        return WEIR_ENOMEM;
    }
    weir__outq_push(&s->out_client, buf, n);
    s->status = r->status;
    s->resp_started = true;
    return 0;
}

/* Runs the response hooks, decides the framing towards the client, queues the head. */
static int start_client_response(struct weir_session *s)
{
    struct weir_resp *r = s->resp;
    const struct weir_proxy_hooks *hk = s->w->hooks;
    struct field_scan fs;
    strip_fields(&r->headers, false, &fs);
    if (hk->upstream_response_filter || hk->response_filter) {
        if ((hk->upstream_response_filter &&
             hk->upstream_response_filter(s, s->ctx, r) != WEIR_HOOK_CONTINUE) ||
            (hk->response_filter && hk->response_filter(s, s->ctx, r) != WEIR_HOOK_CONTINUE)) {
            return WEIR_EINVAL;
        }
        fs.content_length = -2; /* the hooks may have moved fields: look again */
    }
    bool head_method = weir_iov_eq(s->req.method, WEIR_IOV_LIT("HEAD"));
    bool bodyless = head_method || r->status < 200 || r->status == 204 || r->status == 304;
    struct weir_iov cl = {NULL, 0};
    bool has_cl = fs.content_length == -2 ? weir_headers_get(&r->headers, "Content-Length", &cl)
                                          : fs.content_length >= 0;
    if (fs.content_length >= 0) {
        cl = r->headers.v[fs.content_length].value;
    }
    uint64_t len;
    int rc = 0;
    if (bodyless || s->respp.in_kind == WEIR_H1_BODY_NONE) {
        s->respp.out_kind = WEIR_H1_BODY_NONE;
    } else if (has_cl && parse_length(cl, &len)) {
        s->respp.out_kind = WEIR_H1_BODY_LENGTH;
    } else if (s->client_minor == 1) {
        weir_headers_remove(&r->headers, "Content-Length");
        rc = push_field(&r->headers, WEIR_IOV_LIT("Transfer-Encoding"), WEIR_IOV_LIT("chunked"));
        s->respp.out_kind = WEIR_H1_BODY_CHUNKED;
    } else {
        weir_headers_remove(&r->headers, "Content-Length");
        s->respp.out_kind = WEIR_H1_BODY_CLOSE;
        s->close_after = true;
    }
    if (rc == 0 && s->cfg->server.via) {
        rc = push_field(&r->headers, WEIR_IOV_LIT("Via"),
                        r->minor ? WEIR_IOV_LIT("1.1 weir") : WEIR_IOV_LIT("1.0 weir"));
    }
    if (rc == 0) {
        rc = set_connection_header(s, r);
    }
    return rc == 0 ? queue_head(s, r) : rc;
}

/* ---- running the exchange ---- */

static void maybe_send_continue(struct weir_session *s)
{
    if (s->expect_continue && !s->sent_continue && !s->resp_started &&
        s->req_body != WEIR_H1_BODY_NONE && weir__buf_len(&s->c->st.in) == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        weir__outq_push(&s->out_client, cont, sizeof(cont) - 1);
        s->sent_continue = true;
        if (s->c->st.writable && weir__stream_flush(&s->c->st, &s->out_client) < 0) {
            s->c->st.eof = true; /* the request pipe reports the dead client */
        }
    }
}

/* Returns false when the session ended or moved on. */
static bool run_request_pipe(struct weir_session *s)
{
    uint64_t now = weir_loop_now_ms(s->w->loop);
    maybe_send_continue(s);
    struct pipe_io io = {&s->c->st,
                         &s->up->st,
                         &s->out_up,
                         s->w->hooks->request_body_filter,
                         s->cfg->server.limits.max_body_bytes,
                         false,
                         false};
    enum pipe_status st = pipe_step(s, &s->reqp, &io);
    if (io.write_progress) {
        s->up_progress_ms = now;
    }
    if (io.read_progress) {
        s->client_progress_ms = now;
    }
    switch (st) {
    case P_DONE:
        s->req_sent = true;
        return true;
    case P_BLOCKED:
        return true;
    case P_ERR_SRC:
        weir__session_fail(s, WEIR_ERR_CONNECTION_CLOSED, WEIR_SRC_DOWNSTREAM, 0, "client body");
        return false;
    case P_ERR_PROTO:
        s->close_after = true;
        weir__exchange_release_upstream(s, false);
        s->resp = NULL;
        if (!s->resp_started &&
            weir_session_respond_text(s, 400, WEIR_IOV_LIT("Bad Request\n")) == 0) {
            weir__local_response_run(s);
        } else {
            weir__session_fail(s, WEIR_ERR_INVALID_HTTP, WEIR_SRC_DOWNSTREAM, 0, "client body");
        }
        return false;
    case P_ERR_LIMIT:
        s->close_after = true;
        weir__exchange_release_upstream(s, false);
        s->resp = NULL;
        if (!s->resp_started &&
            weir_session_respond_text(s, 413, WEIR_IOV_LIT("Payload Too Large\n")) == 0) {
            weir__local_response_run(s);
        } else {
            weir__session_fail(s, WEIR_ERR_INVALID_HTTP, WEIR_SRC_DOWNSTREAM, 0, "body limit");
        }
        return false;
    case P_ERR_DST:
        /* The origin may have answered early and closed: read what it said first. */
        if (s->resp_byte_seen || weir__buf_len(&s->up->st.in) > 0) {
            s->req_sent = false;
            return true;
        }
        upstream_error(s, WEIR_ERR_WRITE_ERROR, 0, "write");
        return false;
    case P_ERR_HOOK:
        weir__session_fail(s, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "request_body_filter");
        return false;
    }
    return false;
}

static void complete(struct weir_session *s)
{
    if (!s->req_sent) {
        s->close_after = true; /* the client's body was not read to its end */
    }
    if (s->respp.out_kind == WEIR_H1_BODY_CLOSE) {
        s->close_after = true;
    }
    weir__session_finish(s);
}

/* Returns false when the session ended. */
static bool run_response_pipe(struct weir_session *s)
{
    uint64_t now = weir_loop_now_ms(s->w->loop);
    if (!s->resp_head_done) {
        if (!weir__outq_empty(&s->out_client)) {
            /* A 100 Continue still going out. */
            if (s->c->st.writable && weir__stream_flush(&s->c->st, &s->out_client) < 0) {
                weir__session_fail(s, WEIR_ERR_WRITE_ERROR, WEIR_SRC_DOWNSTREAM, 0, "client");
                return false;
            }
            if (!weir__outq_empty(&s->out_client)) {
                return true;
            }
        }
        int r = read_response_head(s);
        if (r <= 0) {
            return r == 0;
        }
        s->resp_head_done = true;
        weir__backend_succeeded(s->peer.backend);
        if (start_client_response(s) != 0) {
            weir__session_fail(s, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "response head");
            return false;
        }
        s->client_progress_ms = now;
    }
    struct pipe_io io = {&s->up->st, &s->c->st, &s->out_client, s->w->hooks->response_body_filter,
                         0,          false,     false};
    enum pipe_status st = pipe_step(s, &s->respp, &io);
    if (io.read_progress) {
        s->up_progress_ms = now;
    }
    if (io.write_progress) {
        s->client_progress_ms = now;
    }
    switch (st) {
    case P_DONE:
        complete(s);
        return false;
    case P_BLOCKED:
        return true;
    case P_ERR_SRC:
        upstream_error(s, WEIR_ERR_CONNECTION_CLOSED, 0, "response body");
        return false;
    case P_ERR_PROTO:
        upstream_error(s, WEIR_ERR_INVALID_HTTP, 0, "response body");
        return false;
    case P_ERR_DST:
        weir__session_fail(s, WEIR_ERR_WRITE_ERROR, WEIR_SRC_DOWNSTREAM, 0, "client");
        return false;
    case P_ERR_HOOK:
    case P_ERR_LIMIT:
        weir__session_fail(s, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "response_body_filter");
        return false;
    }
    return false;
}

/* Checks deadlines on both sides and arms the timers for the next one. */
static void arm_timers(struct weir_session *s)
{
    struct weir_loop *loop = s->w->loop;
    uint64_t now = weir_loop_now_ms(loop);
    struct weir__upconn *u = s->up;
    uint64_t tmo = 0;
    enum weir_error_type type = WEIR_ERR_READ_TIMEOUT;
    if (u != NULL && !u->connected) {
        tmo = s->peer.connect_timeout_ms;
        type = WEIR_ERR_CONNECT_TIMEOUT;
    } else if (u != NULL && !weir__outq_empty(&s->out_up)) {
        tmo = s->peer.write_timeout_ms;
        type = WEIR_ERR_WRITE_TIMEOUT;
    } else if (u != NULL && !s->respp.in_done &&
               (!s->resp_head_done || weir__outq_empty(&s->out_client))) {
        tmo = s->peer.read_timeout_ms;
    }
    if (tmo) {
        uint64_t deadline = s->up_progress_ms + tmo;
        if (now >= deadline) {
            weir_log(WEIR_LOG_INFO, "upstream %s: %s", s->peer.name, weir_error_type_str(type));
            if (type == WEIR_ERR_CONNECT_TIMEOUT) {
                weir__exchange_connect_failed(s, WEIR_ETIMEDOUT);
            } else {
                upstream_error(s, type, 0, "upstream timeout");
            }
            return;
        }
        if (!weir_timer_active(&s->up_timer) || s->up_timer.deadline_ms > deadline) {
            if (weir_timer_start(loop, &s->up_timer, deadline - now) != 0) {
                weir__session_fail(s, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "timer");
                return;
            }
        }
    } else {
        weir_timer_stop(loop, &s->up_timer);
    }
    const struct weir_cfg_timeouts *t = &s->cfg->server.timeouts;
    uint64_t ctmo = 0;
    if (!weir__outq_empty(&s->out_client)) {
        ctmo = t->client_write_ms;
    } else if (!s->req_sent && u != NULL && u->connected && weir__outq_empty(&s->out_up)) {
        ctmo = t->client_body_ms;
    }
    if (ctmo) {
        uint64_t deadline = s->client_progress_ms + ctmo;
        weir__conn_set_deadline(s->c, deadline > now ? deadline - now : 1);
    } else {
        weir__conn_set_deadline(s->c, 0);
    }
}

void weir__exchange_run(struct weir_session *s)
{
    if (s->phase != PH_PROXY || s->suspended || s->up == NULL) {
        return;
    }
    if (s->client_progress_ms == 0) {
        s->client_progress_ms = weir_loop_now_ms(s->w->loop);
    }
    if (!ensure_connected(s)) {
        if (s->phase == PH_PROXY && s->up != NULL) {
            arm_timers(s);
        }
        return;
    }
    if (!s->req_sent && !run_request_pipe(s)) {
        return;
    }
    if (!run_response_pipe(s)) {
        return;
    }
    arm_timers(s);
}

/* ---- responses weir makes itself ---- */

static int start_local_response(struct weir_session *s)
{
    struct weir_resp *r = s->resp;
    weir__exchange_release_upstream(s, false);
    if (s->req_body != WEIR_H1_BODY_NONE && !s->reqp.in_done) {
        s->close_after = true; /* we will not read the rest of the body */
    }
    int rc = set_connection_header(s, r);
    if (rc != 0) {
        return rc;
    }
    rc = queue_head(s, r);
    if (rc != 0) {
        return rc;
    }
    bool head_method = weir_iov_eq(s->req.method, WEIR_IOV_LIT("HEAD"));
    if (!head_method && r->status != 204 && r->status != 304) {
        weir__outq_push(&s->out_client, s->local_body.base, s->local_body.len);
        s->respp.bytes = s->local_body.len;
    }
    s->client_progress_ms = weir_loop_now_ms(s->w->loop);
    return 0;
}

void weir__local_response_run(struct weir_session *s)
{
    if (!s->resp_started && start_local_response(s) != 0) {
        s->close_after = true;
        weir__session_finish(s);
        return;
    }
    if (s->c->st.writable) {
        ssize_t n = weir__stream_flush(&s->c->st, &s->out_client);
        if (n < 0) {
            s->close_after = true;
            s->has_err = true;
            s->err = (struct weir_error){WEIR_ERR_WRITE_ERROR, WEIR_SRC_DOWNSTREAM, false, (int)-n,
                                         "client"};
            weir__session_finish(s);
            return;
        }
        if (n > 0) {
            s->client_progress_ms = weir_loop_now_ms(s->w->loop);
        }
    }
    if (weir__outq_empty(&s->out_client)) {
        weir__session_finish(s);
        return;
    }
    uint64_t now = weir_loop_now_ms(s->w->loop);
    uint64_t deadline = s->client_progress_ms + s->cfg->server.timeouts.client_write_ms;
    weir__conn_set_deadline(s->c, deadline > now ? deadline - now : 1);
}
