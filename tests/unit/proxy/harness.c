/*
 * The proxy test harness (see harness.h): a worker, its loop and snapshot built by hand, a
 * socketpair for the client connection, and scripted AF_UNIX origins on the same loop.
 */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "core/rcu.h"
#include "weir/config.h"

/* ---- framing of what origins receive ---- */

static const char *find(const char *buf, size_t len, size_t from, const char *what, size_t n)
{
    if (from > len) {
        return NULL;
    }
    return memmem(buf + from, len - from, what, n);
}

/* A hex chunk size at p (up to ';' or the end of the line at eol); false when there is none. */
static bool chunk_size(const char *p, const char *eol, uint64_t *out)
{
    uint64_t v = 0;
    size_t digits = 0;
    for (; p < eol && *p != ';'; p++, digits++) {
        int d = *p >= '0' && *p <= '9'   ? *p - '0'
                : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
                : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10
                                         : -1;
        if (d < 0 || digits >= 15) {
            return false;
        }
        v = v * 16 + (uint64_t)d;
    }
    *out = v;
    return digits > 0;
}

/*
 * Walks a chunked body at buf. Returns its length (0: incomplete, -1: malformed); copies the
 * data to out when out is not NULL (-1 past cap) and counts it in *data_len.
 */
static ssize_t walk_chunked(const char *buf, size_t len, char *out, size_t cap, size_t *data_len,
                            const char **trailers, size_t *trailers_len)
{
    size_t pos = 0;
    *data_len = 0;
    for (;;) {
        const char *eol = find(buf, len, pos, "\r\n", 2);
        uint64_t size;
        if (eol == NULL) {
            return 0;
        }
        if (!chunk_size(buf + pos, eol, &size)) {
            return -1;
        }
        pos = (size_t)(eol - buf) + 2;
        if (size == 0) {
            size_t tstart = pos;
            for (;;) {
                eol = find(buf, len, pos, "\r\n", 2);
                if (eol == NULL) {
                    return 0;
                }
                bool empty = eol == buf + pos;
                if (empty && trailers != NULL) {
                    *trailers = buf + tstart;
                    *trailers_len = pos - tstart;
                }
                pos = (size_t)(eol - buf) + 2;
                if (empty) {
                    return (ssize_t)pos;
                }
            }
        }
        if (len - pos < size + 2) {
            return 0;
        }
        if (buf[pos + size] != '\r' || buf[pos + size + 1] != '\n') {
            return -1;
        }
        if (out != NULL) {
            if (*data_len + size > cap) {
                return -1;
            }
            memcpy(out + *data_len, buf + pos, size);
        }
        *data_len += size;
        pos += size + 2;
    }
}

ssize_t harness_message_len(const char *buf, size_t len)
{
    const char *end = find(buf, len, 0, "\r\n\r\n", 4);
    if (end == NULL) {
        return 0;
    }
    size_t head = (size_t)(end - buf) + 4;
    const char *p = memchr(buf, '\n', head) + 1; /* past the request line */
    uint64_t length = 0;
    bool chunked = false;
    while (p < buf + head - 2) {
        const char *eol = find(buf, head, (size_t)(p - buf), "\r\n", 2);
        size_t n = (size_t)(eol - p);
        if (n > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
            const char *v = p + 15;
            while (v < eol && *v == ' ') {
                v++;
            }
            for (length = 0; v < eol && *v >= '0' && *v <= '9'; v++) {
                length = length * 10 + (uint64_t)(*v - '0');
            }
        } else if (n > 18 && strncasecmp(p, "Transfer-Encoding:", 18) == 0 &&
                   memmem(p, n, "chunked", 7) != NULL) {
            chunked = true;
        }
        p = eol + 2;
    }
    if (!chunked) {
        return len - head < length ? 0 : (ssize_t)(head + length);
    }
    size_t data_len;
    ssize_t body = walk_chunked(buf + head, len - head, NULL, 0, &data_len, NULL, NULL);
    return body <= 0 ? body : (ssize_t)head + body;
}

ssize_t harness_dechunk(const char *buf, size_t len, char *out, size_t cap, const char **trailers,
                        size_t *trailers_len)
{
    size_t data_len;
    ssize_t n = walk_chunked(buf, len, out, cap, &data_len, trailers, trailers_len);
    return n <= 0 ? -1 : (ssize_t)data_len;
}

/* ---- the test's ends of sockets ---- */

static void end_event(struct weir_loop *loop, struct weir_io *io, uint32_t events);
static void end_tick(struct weir_loop *loop, struct weir_timer *t);
static void origin_serve(struct harness_end *e);

static void end_init(struct harness *h, struct harness_end *e, int fd, struct harness_origin *o)
{
    memset(e, 0, sizeof(*e));
    e->h = h;
    e->origin = o;
    e->fd = fd;
    e->io.fd = fd;
    e->io.cb = end_event;
    e->io.data = e;
    weir_timer_init(&e->timer, end_tick, e);
}

/* An origin connection whose next reply resets it must leave the request unread. */
static bool wants_peek(const struct harness_end *e)
{
    const struct harness_origin *o = e->origin;
    return e->peek || (o != NULL && o->on_data == NULL && o->next < o->nreplies &&
                       o->replies[o->next].after == HARNESS_RESET && !e->sending);
}

/* Reads what has arrived into e->in (peeking when asked). */
static void end_read(struct harness_end *e)
{
    while (e->fd >= 0 && !e->eof) {
        bool peek = wants_peek(e);
        size_t at = peek ? e->taken : e->in_len;
        if (at >= sizeof(e->in)) {
            e->err = -ENOBUFS;
            e->eof = true;
            return;
        }
        ssize_t n = recv(e->fd, e->in + at, sizeof(e->in) - at, peek ? MSG_PEEK : 0);
        if (n > 0) {
            e->in_len = at + (size_t)n;
            if (!peek) {
                e->taken = e->in_len;
            } else {
                return; /* peeking again would see the same bytes */
            }
            continue;
        }
        if (n == 0) {
            e->eof = true;
            return;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            e->err = -errno;
            e->eof = true;
        }
        return;
    }
}

static void end_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct harness_end *e = io->data;
    if ((events & (WEIR_IO_READ | WEIR_IO_RDHUP | WEIR_IO_HUP | WEIR_IO_ERROR)) == 0) {
        return;
    }
    end_read(e);
    if (e->on_data != NULL) {
        e->on_data(e);
    } else if (e->origin != NULL) {
        origin_serve(e);
    }
}

void harness_end_close(struct harness_end *e)
{
    if (e->fd < 0) {
        return;
    }
    weir_timer_stop(e->h->loop, &e->timer);
    weir_loop_io_del(e->h->loop, &e->io);
    close(e->fd);
    e->fd = -1;
    e->io.fd = -1;
    e->sending = false;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -errno : -EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int harness_end_send(struct harness_end *e, const char *bytes, size_t len)
{
    if (e->fd < 0) {
        return -EBADF;
    }
    return write_all(e->fd, bytes, len ? len : strlen(bytes));
}

int harness_client_send(struct harness *h, const char *bytes, size_t len)
{
    return harness_end_send(&h->client, bytes, len);
}

/* Writes the next piece of e's output; when it is all out, does what comes after. */
static void send_step(struct harness_end *e)
{
    size_t n = e->piece && e->piece < e->out_left ? e->piece : e->out_left;
    if (n > 0 && write_all(e->fd, e->out, n) != 0) {
        e->err = -EPIPE; /* the proxy went away: the test sees it in err */
        e->out_left = 0;
    } else {
        e->out += n;
        e->out_left -= n;
    }
    if (e->out_left > 0) {
        if (weir_timer_start(e->h->loop, &e->timer, 1) != 0) {
            e->err = WEIR_ENOMEM;
            e->sending = false;
        }
        return;
    }
    e->sending = false;
    if (e->after == HARNESS_CLOSE || e->after == HARNESS_RESET) {
        harness_end_close(e); /* a reset leaves the request unread (peeked at only) */
        return;
    }
    if (e->origin != NULL && e->on_data == NULL) {
        origin_serve(e); /* a request that came in while this reply went out */
    }
}

static void end_tick(struct weir_loop *loop, struct weir_timer *t)
{
    struct harness_end *e = t->data;
    if (e->fd >= 0 && e->sending) {
        send_step(e);
    }
}

int harness_end_send_pieces(struct harness_end *e, const char *bytes, size_t len, size_t piece,
                            enum harness_after after)
{
    if (e->sending) {
        return WEIR_EINVAL;
    }
    if (e->fd < 0) {
        return -EBADF;
    }
    e->out = bytes;
    e->out_left = bytes == NULL ? 0 : len ? len : strlen(bytes);
    e->piece = piece;
    e->after = after;
    e->sending = true;
    send_step(e);
    return 0;
}

/* The default origin behaviour: each complete request gets the next scripted reply. */
static void origin_serve(struct harness_end *e)
{
    struct harness_origin *o = e->origin;
    while (e->fd >= 0 && !e->sending) {
        ssize_t n = harness_message_len(e->in + e->served, e->in_len - e->served);
        if (n <= 0) {
            return; /* incomplete (or unreadable: the test sees the bytes) */
        }
        e->served += (size_t)n;
        e->requests++;
        if (o->next >= o->nreplies) {
            return; /* nothing scripted: stay silent */
        }
        const struct harness_reply *r = &o->replies[o->next++];
        (void)harness_end_send_pieces(e, r->bytes, r->len, r->piece, r->after);
    }
}

static void origin_accept(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct harness_origin *o = io->data;
    struct harness *h = o->h;
    for (;;) {
        int fd = accept4(o->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return; /* EAGAIN, or an error the test sees as a connection that never came */
        }
        if (h->nends >= HARNESS_ENDS_MAX || o->accepted >= HARNESS_ENDS_MAX) {
            close(fd);
            continue;
        }
        struct harness_end *e = &h->ends[h->nends++];
        end_init(h, e, fd, o);
        e->index = o->accepted;
        e->on_data = o->on_data;
        o->conns[o->accepted++] = e;
        if (weir_loop_io_add(loop, &e->io, WEIR_IO_READ | WEIR_IO_RDHUP) != 0) {
            harness_end_close(e);
            continue;
        }
        end_event(loop, &e->io, WEIR_IO_READ); /* bytes may be there already */
    }
}

/* ---- addresses ---- */

static int unix_addr(struct sockaddr_storage *ss, socklen_t *len, const char *dir, const char *name)
{
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    int n = snprintf(un.sun_path, sizeof(un.sun_path), "%s/%s", dir, name);
    if (n <= 0 || (size_t)n >= sizeof(un.sun_path)) {
        return WEIR_EINVAL;
    }
    /* Copied as bytes into zeroed storage, as a peer's address is (see weir__addr_equal). */
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, &un, sizeof(un));
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
    return 0;
}

static int fill_peer(struct weir_peer *peer, const struct sockaddr_storage *ss, socklen_t len,
                     const char *name)
{
    if (len > sizeof(peer->addr)) {
        return WEIR_EINVAL;
    }
    memcpy(&peer->addr, ss, len);
    peer->addrlen = len;
    int n = snprintf(peer->name, sizeof(peer->name), "unix:%s", name);
    return n > 0 && (size_t)n < sizeof(peer->name) ? 0 : WEIR_EINVAL;
}

int harness_peer(struct weir_peer *peer, const struct harness_origin *o)
{
    return fill_peer(peer, &o->addr, o->addrlen, o->name);
}

int harness_peer_path(struct harness *h, struct weir_peer *peer, const char *name)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = unix_addr(&ss, &len, h->dir, name);
    return rc != 0 ? rc : fill_peer(peer, &ss, len, name);
}

struct harness_origin *harness_origin_add(struct harness *h, const char *name,
                                          const struct harness_reply *replies, size_t nreplies)
{
    if (h->norigins >= HARNESS_ORIGINS_MAX || strlen(name) >= sizeof(h->origins[0].name)) {
        return NULL;
    }
    struct harness_origin *o = &h->origins[h->norigins];
    memset(o, 0, sizeof(*o));
    o->h = h;
    memcpy(o->name, name, strlen(name) + 1);
    o->replies = replies;
    o->nreplies = nreplies;
    o->lfd = -1;
    if (unix_addr(&o->addr, &o->addrlen, h->dir, name) != 0) {
        return NULL;
    }
    o->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (o->lfd < 0) {
        return NULL;
    }
    o->io.fd = o->lfd;
    o->io.cb = origin_accept;
    o->io.data = o;
    if (bind(o->lfd, (struct sockaddr *)&o->addr, o->addrlen) != 0 || listen(o->lfd, 16) != 0 ||
        weir_loop_io_add(h->loop, &o->io, WEIR_IO_READ) != 0) {
        close(o->lfd);
        o->lfd = -1;
        return NULL;
    }
    h->norigins++;
    return o;
}

/* ---- the worker ---- */

struct harness *harness_of(struct weir_session *s)
{
    return weir__loop_data(weir_session_loop(s));
}

static void harness_logging(struct weir_session *s, void *ctx, const struct weir_error *err)
{
    struct harness *h = harness_of(s);
    if (h->nlogs < HARNESS_LOGS_MAX) {
        struct harness_log *l = &h->logs[h->nlogs];
        l->status = weir_session_status(s);
        l->retries = weir_session_retries(s);
        l->request_index = weir_session_request_index(s);
        l->has_err = err != NULL;
        if (err != NULL) {
            l->err = *err;
        }
        l->body_sent = weir_session_body_bytes_sent(s);
        l->body_received = weir_session_body_bytes_received(s);
    }
    h->nlogs++;
    if (h->hooks.logging != NULL) {
        h->hooks.logging(s, ctx, err);
    }
    if (h->stop_at != 0 && h->nlogs >= h->stop_at) {
        weir__loop_stop(h->loop);
    }
}

static void safety_fired(struct weir_loop *loop, struct weir_timer *t)
{
    struct harness *h = t->data;
    h->timed_out = true;
    weir__loop_stop(loop);
}

/* What the server's worker does once per loop turn. */
static void harness_turn(struct weir_loop *loop, void *arg)
{
    struct harness *h = arg;
    weir__rcu_quiescent();
    if (h->w != NULL) {
        weir__proxy_turn(h->w);
    }
}

struct harness *harness_new(const char *yaml)
{
    struct harness *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return NULL;
    }
    h->client.fd = -1;
    (void)signal(SIGPIPE, SIG_IGN); /* a write to a closed socket is an error, not a death */
    if (!weir__rcu_registered()) {
        weir__rcu_register();
        h->rcu = true;
    }
    if (weir_test_mkdtemp(h->dir, sizeof(h->dir), "ptest") != 0) {
        h->dir[0] = '\0';
        goto fail;
    }
    h->loop = weir__loop_new(64);
    if (h->loop == NULL) {
        goto fail;
    }
    weir__loop_set_data(h->loop, h);
    weir__loop_set_turn_hook(h->loop, harness_turn, h);
    weir_timer_init(&h->safety, safety_fired, h);
    if (yaml == NULL) {
        if (weir_config_new_default(&h->cfg) != 0) {
            goto fail;
        }
    } else {
        struct weir_config_errors *errs = NULL;
        if (weir_config_load_string("harness", yaml, strlen(yaml), &h->cfg, &errs) != 0) {
            if (errs != NULL) {
                weir_config_errors_print(errs, stderr);
            }
            h->cfg = NULL;
        }
        weir_config_errors_free(errs);
    }
    if (h->cfg == NULL) {
        goto fail;
    }
    return h;
fail:
    harness_free(h);
    return NULL;
}

int harness_start(struct harness *h)
{
    const struct weir_cfg_server *sc = &h->cfg->server;
    struct weir__snapshot *snap = weir__snapshot_new(h->cfg, (void (*)(void *))weir_config_free);
    if (snap == NULL) {
        return WEIR_ENOMEM;
    }
    (void)weir__rcu_xchg((void **)&h->slot.current, snap); /* the snapshot owns cfg now */
    if (sc->upstream_shared_per_peer != 0 && sc->upstream_keepalive != 0) {
        h->shared = weir__pool_shared_new(sc->upstream_shared_per_peer, sc->upstream_shared_total,
                                          sc->timeouts.upstream_idle_ms);
        if (h->shared == NULL) {
            return WEIR_ENOMEM;
        }
    }
    h->run_hooks = h->hooks;
    h->run_hooks.logging = harness_logging;
    h->w = weir__proxy_worker_new(h->loop, &h->run_hooks, h->data, &h->slot, NULL, h->shared, 0);
    if (h->w == NULL) {
        return WEIR_ENOMEM;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        return -errno;
    }
    if (h->client_sndbuf > 0 && setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &h->client_sndbuf,
                                           sizeof(h->client_sndbuf)) != 0) {
        int err = errno;
        close(sv[0]);
        close(sv[1]);
        return -err;
    }
    end_init(h, &h->client, sv[0], NULL);
    if (weir_loop_io_add(h->loop, &h->client.io, WEIR_IO_READ | WEIR_IO_RDHUP) != 0) {
        close(sv[1]);
        harness_end_close(&h->client);
        return WEIR_ENOMEM;
    }
    /* A made-up client address: what a listener would have passed for 127.0.0.1:40000. */
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(40000);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return weir__proxy_accept(h->w, sv[1], (struct sockaddr *)&sin, sizeof(sin), &h->listener);
}

int harness_run(struct harness *h, unsigned logs, uint32_t timeout_ms)
{
    h->stop_at = logs ? h->nlogs + logs : 0;
    h->timed_out = false;
    if (weir_timer_start(h->loop, &h->safety, timeout_ms) != 0) {
        return WEIR_ENOMEM;
    }
    int rc = weir__loop_run(h->loop);
    weir_timer_stop(h->loop, &h->safety);
    h->stop_at = 0;
    end_read(&h->client);
    for (unsigned i = 0; i < h->nends; i++) {
        end_read(&h->ends[i]);
    }
    if (rc != 0) {
        return rc;
    }
    return logs && h->timed_out ? WEIR_ETIMEDOUT : 0;
}

int harness_settle(struct harness *h, unsigned max_turns)
{
    for (unsigned turn = 1; turn <= max_turns; turn++) {
        int ran = weir__loop_run_once(h->loop);
        if (ran < 0) {
            return ran;
        }
        if (ran == 0) {
            end_read(&h->client);
            for (unsigned i = 0; i < h->nends; i++) {
                end_read(&h->ends[i]);
            }
            return (int)turn;
        }
    }
    return WEIR_ETIMEDOUT;
}

void harness_free(struct harness *h)
{
    if (h == NULL) {
        return;
    }
    if (h->loop != NULL) {
        harness_end_close(&h->client);
        for (unsigned i = 0; i < h->nends; i++) {
            harness_end_close(&h->ends[i]);
        }
    }
    /* Closes the client connections; sessions still waiting for a hook end (and log) here. */
    weir__proxy_worker_free(h->w);
    h->w = NULL;
    weir__pool_shared_free(h->shared);
    for (unsigned i = 0; i < h->norigins; i++) {
        struct harness_origin *o = &h->origins[i];
        weir_loop_io_del(h->loop, &o->io);
        close(o->lfd);
        struct sockaddr_un un;
        memcpy(&un, &o->addr, sizeof(un));
        (void)unlink(un.sun_path);
    }
    if (h->slot.current != NULL) {
        weir__snapshot_release(h->slot.current); /* frees cfg */
    } else {
        weir_config_free(h->cfg);
    }
    weir__loop_free(h->loop); /* runs the deferred frees of the last turn */
    if (h->dir[0] != '\0') {
        (void)rmdir(h->dir);
    }
    if (h->rcu) {
        weir__rcu_unregister();
    }
    free(h);
}
