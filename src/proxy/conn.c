/*
 * Client connections: accept, reading and parsing request heads, keep-alive between
 * requests, pipelined requests, client-side timeouts, and closing. A connection holds no
 * buffer while idle between requests.
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/tcp.h>

#include "core/alloc.h"
#include "http2/h2.h"
#include "net/sock.h"
#include "tls/tls.h"
#include "weir/log.h"

static void conn_event(struct weir_loop *loop, struct weir_io *io, uint32_t events);
static void conn_timer(struct weir_loop *loop, struct weir_timer *t);
static void conn_kick(struct weir_loop *loop, struct weir__defer *d);
static void conn_reap(struct weir_loop *loop, struct weir__defer *d);
static void conn_doom(struct weir_loop *loop, struct weir__defer *d);
static void conn_idle_step(struct weir__conn *c);
static void linger_step(struct weir__conn *c);

struct weir__proxy_worker *
weir__proxy_worker_new(struct weir_loop *loop, const struct weir_proxy_hooks *hooks, void *data,
                       struct weir__snapshot_slot *slot, struct weir__access_log *access,
                       struct weir__pool_shared *shared_pool, uint32_t extra_idle)
{
    struct weir__proxy_worker *w = weir__calloc(1, sizeof(*w));
    if (w == NULL) {
        return NULL;
    }
    w->loop = loop;
    w->hooks = hooks;
    w->hooks_data = data;
    w->slot = slot;
    if (weir__snapshot_acquire(slot, &w->holder) == NULL) {
        weir__free(w);
        return NULL;
    }
    w->cfg = w->holder->snap->data;
    const struct weir_cfg_server *sc = &w->cfg->server;
    w->access_format = sc->access_log_format;
    weir__access_buf_init(&w->access, access);
    w->fields = weir__reallocarray(NULL, WEIR_MAX_HEADERS_PARSED, sizeof(*w->fields));
    if (w->fields == NULL) {
        weir__snapshot_holder_retire(&w->holder);
        weir__free(w);
        return NULL;
    }
    if (weir__bufpool_init(&w->bufs, sc->limits.buffer_size, WEIR_BUFPOOL_KEEP) != 0) {
        goto fail;
    }
    /* extra_idle: a worker with no shared tier to hand to keeps that many more itself */
    uint32_t keep = sc->upstream_keepalive + extra_idle;
    keep = keep > 65535 ? 65535 : keep;
    w->pool =
        weir__pool_new(loop, &w->bufs, keep, (keep + 1) * WEIR_POOL_PEERS_PER_WORKER,
                       sc->timeouts.upstream_idle_ms, shared_pool, sc->upstream_share_after_ms);
    if (w->pool == NULL) {
        goto fail;
    }
    return w;
fail:
    weir__bufpool_dispose(&w->bufs);
    weir__snapshot_holder_retire(&w->holder);
    weir__free(w->fields);
    weir__free(w);
    return NULL;
}

void weir__proxy_worker_free(struct weir__proxy_worker *w)
{
    if (w == NULL) {
        return;
    }
    weir__proxy_close_all(w);
    /* The loop will not run again: sessions still waiting for a hook end here. */
    while (w->zombies) {
        struct weir__conn *z = w->zombies;
        weir__session_abandon(z->s != NULL ? z->s : weir__conn_h2_orphan(z));
    }
    weir__bg_abandon_all(w);
    const struct weir__pool_stats *ps = weir__pool_stats(w->pool);
    if (ps->connects != 0) {
        weir_log(WEIR_LOG_INFO,
                 "upstream pool (this worker): %llu connections opened, %llu reuses from this "
                 "worker's tier, %llu from the shared tier, %llu handed to it; evicted: %llu "
                 "closed by the peer, %llu idle too long, %llu over the bounds",
                 (unsigned long long)ps->connects, (unsigned long long)ps->reuses,
                 (unsigned long long)ps->reuses_shared, (unsigned long long)ps->to_shared,
                 (unsigned long long)ps->evict_closed, (unsigned long long)ps->evict_timeout,
                 (unsigned long long)ps->evict_full);
    }
    weir__pool_free(w->pool);
    weir__cache_worker_free(w);
    weir__access_buf_dispose(&w->access);
    while (w->nspare_arenas > 0) {
        weir_arena_free(w->spare_arenas[--w->nspare_arenas]);
    }
    weir__snapshot_holder_retire(&w->holder);
    /* Closed connections are freed by deferred calls; buffers they held return first. */
    w->pool = NULL;
    weir__bufpool_dispose(&w->bufs);
    weir__free(w->fields);
    weir__free(w);
}

void weir__proxy_turn(struct weir__proxy_worker *w)
{
    weir__snapshot_acquire(w->slot, &w->holder);
    weir__access_buf_flush(&w->access, weir_loop_now_ms(w->loop), WEIR_ACCESS_FLUSH_MS);
}

/*
 * The key a client address is limited under: the 4 bytes of an IPv4 address (IPv4-mapped
 * IPv6 included), or the /64 prefix of an IPv6 address (one subscriber's network: a client
 * that owns a /64 must not get 2^64 separate allowances). 0 for other families.
 */
static size_t ip_key(const struct sockaddr *sa, socklen_t len, uint8_t key[8])
{
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            memcpy(key, &a->s6_addr[12], 4);
            return 4;
        }
        memcpy(key, a->s6_addr, 8);
        return 8;
    }
    return 0;
}

/* Logs refusals as a warning at most every 10 s per worker (a flood must not flood the log). */
static void note_refused(struct weir__proxy_worker *w, const char *why, const struct sockaddr *sa)
{
    w->refused++;
    uint64_t now = weir_loop_now_ms(w->loop);
    bool warn = now >= w->refused_warn_ms;
    if (warn) {
        w->refused_warn_ms = now + WEIR_REFUSED_WARN_MS;
    }
    char ip[INET6_ADDRSTRLEN] = "?";
    if (warn || weir__log_enabled(WEIR_LOG_DEBUG)) {
        (void)weir__addr_format_ip(sa, ip, sizeof(ip));
        weir_log(warn ? WEIR_LOG_WARN : WEIR_LOG_DEBUG,
                 "refused a connection from %s: %s (%llu refused by this worker so far)", ip, why,
                 (unsigned long long)w->refused);
    }
}

/*
 * The connection caps checked before anything is allocated for a connection: the listener's
 * max_connections and server.limits.max_connections_per_ip, both across every worker. A
 * refused connection is closed at once, without a response: an answer would cost a write per
 * flood connection and tell the client nothing it can act on, and the ones already open keep
 * working. 0, or WEIR_ELIMIT (nothing counted).
 */
static int admit(struct weir__proxy_worker *w, struct weir__conn *c, const struct sockaddr *sa,
                 struct weir__listener_count *lc)
{
    if (lc != NULL && lc->max != 0) {
        if (atomic_fetch_add_explicit(&lc->n, 1, memory_order_relaxed) >= lc->max) {
            atomic_fetch_sub_explicit(&lc->n, 1, memory_order_relaxed);
            note_refused(w, "the listener's max_connections is reached", sa);
            return WEIR_ELIMIT;
        }
        c->lc = lc;
    }
    uint32_t per_ip = w->cfg->server.limits.max_connections_per_ip;
    if (w->ip_conns != NULL && per_ip != 0 && c->ipkeylen != 0) {
        if (weir_inflight_add(w->ip_conns, c->ipkey, c->ipkeylen, 1) > per_ip) {
            weir_inflight_sub(w->ip_conns, c->ipkey, c->ipkeylen, 1);
            note_refused(w, "max_connections_per_ip is reached", sa);
            goto refuse;
        }
        c->ip_counted = true;
    }
    return 0;
refuse:
    if (c->lc != NULL) {
        atomic_fetch_sub_explicit(&c->lc->n, 1, memory_order_relaxed);
        c->lc = NULL;
    }
    return WEIR_ELIMIT;
}

/* Gives back what admit counted. */
static void release_counts(struct weir__conn *c)
{
    if (c->lc != NULL) {
        atomic_fetch_sub_explicit(&c->lc->n, 1, memory_order_relaxed);
        c->lc = NULL;
    }
    if (c->ip_counted) {
        weir_inflight_sub(c->w->ip_conns, c->ipkey, c->ipkeylen, 1);
        c->ip_counted = false;
    }
}

int weir__proxy_accept(struct weir__proxy_worker *w, int fd, const struct sockaddr *sa,
                       socklen_t len, const struct weir__listener_opts *lo)
{
    static const struct weir__listener_opts plain = {NULL, NULL, 0, false};
    if (lo == NULL) {
        lo = &plain;
    }
    struct weir__tls_server *tls = lo->tls;
    struct weir__conn probe = {.w = w};
    probe.ipkeylen = (uint8_t)ip_key(sa, len, probe.ipkey);
    int rc = admit(w, &probe, sa, lo->count);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    struct weir__conn *c = weir__calloc(1, sizeof(*c));
    if (c == NULL) {
        release_counts(&probe);
        close(fd);
        return WEIR_ENOMEM;
    }
    memcpy(c->ipkey, probe.ipkey, sizeof(c->ipkey));
    c->ipkeylen = probe.ipkeylen;
    c->ip_counted = probe.ip_counted;
    c->lc = probe.lc;
    c->redirect_https = tls == NULL ? lo->redirect_https : 0;
    c->h2c = tls == NULL && lo->h2c;
    int one = 1;
    /* Responses leave in whole writes; Nagle would only add delayed-ACK stalls. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
        weir_log(WEIR_LOG_DEBUG, "TCP_NODELAY: %s", strerror(errno));
    }
    c->magic = WEIR_CONN_MAGIC;
    c->w = w;
    c->st.io.fd = fd;
    c->st.io.cb = conn_event;
    c->st.io.data = c;
    c->st.writable = true;
    c->st.readable = true; /* data may already be there: try a read at once */
    if (len <= sizeof(c->addr)) {
        memcpy(&c->addr, sa, len);
    }
    int n = weir__addr_format_ip(sa, c->ip, sizeof(c->ip));
    c->iplen = n > 0 ? (uint8_t)n : 0;
    if (tls != NULL) {
        if (weir__tls_accept(tls, &c->st) != 0) {
            release_counts(c);
            close(fd);
            weir__free(c);
            return WEIR_ENOMEM;
        }
        c->tls = true;
        c->tls_check = true;
    }
    weir_timer_init(&c->timer, conn_timer, c);
    c->reap.fn = conn_reap;
    c->kick.fn = conn_kick;
    c->doom.fn = conn_doom;
    rc = weir_loop_io_add(w->loop, &c->st.io, WEIR_IO_READ | WEIR_IO_WRITE | WEIR_IO_RDHUP);
    if (rc != 0) {
        weir__tls_free(&c->st);
        release_counts(c);
        close(fd);
        weir__free(c);
        return rc;
    }
    c->next = w->conns;
    if (w->conns) {
        w->conns->prev = c;
    }
    w->conns = c;
    w->nconns++;
    weir__conn_set_deadline(c, w->cfg->server.timeouts.client_header_ms);
    /* Defer the first read so accept loops stay short. */
    weir__loop_defer(w->loop, &c->kick);
    return 0;
}

void weir__conn_set_deadline(struct weir__conn *c, uint64_t ms)
{
    if (ms == 0) {
        c->deadline_ms = 0;
        weir_timer_stop(c->w->loop, &c->timer);
        return;
    }
    uint64_t now = weir_loop_now_ms(c->w->loop);
    c->deadline_ms = now + ms;
    /* Lazy: an armed timer firing earlier re-arms itself for the real deadline. */
    if (!weir_timer_active(&c->timer) ||
        c->timer.deadline_ms > weir__loop_deadline(c->w->loop, ms)) {
        if (weir_timer_start(c->w->loop, &c->timer, ms) != 0) {
            /*
             * Without a timer the connection could hang forever: drop it, at the end of the
             * turn. Closing here would free it under callers that go on using it (the accept
             * path queues its first read right after).
             */
            weir__loop_defer(c->w->loop, &c->doom);
        }
    }
}

static void conn_timer(struct weir_loop *loop, struct weir_timer *t)
{
    struct weir__conn *c = t->data;
    WEIR_CHECK_OBJ(c, WEIR_CONN_MAGIC);
    uint64_t now = weir_loop_now_ms(loop);
    if (c->deadline_ms == 0 || c->state == CONN_CLOSED) {
        return;
    }
    if (c->deadline_ms > now) {
        if (weir_timer_start(loop, t, c->deadline_ms - now) != 0) {
            weir__conn_close(c);
        }
        return;
    }
    c->deadline_ms = 0;
    if (c->state == CONN_ACTIVE && c->s != NULL) {
        weir__session_client_timeout(c->s);
        return;
    }
    if (c->state == CONN_H2) {
        weir__conn_h2_idle(c); /* no stream for client_keepalive: GOAWAY, close */
        return;
    }
    /* Idle: a keep-alive or header timeout. Silent close, as nginx does for both. */
    weir__conn_close(c);
}

static void unlink_conn(struct weir__conn *c)
{
    struct weir__proxy_worker *w = c->w;
    if (c->prev) {
        c->prev->next = c->next;
    } else if (w->conns == c) {
        w->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
    w->nconns--;
}

void weir__conn_close(struct weir__conn *c)
{
    if (c->state == CONN_CLOSED) {
        return;
    }
    struct weir__proxy_worker *w = c->w;
    if (c->state == CONN_ACTIVE && c->s != NULL) {
        /* The session ends with the connection; it logs and releases its upstream. */
        c->state = CONN_CLOSED;
        weir__session_abort(c->s);
    }
    if (c->state == CONN_H2) {
        c->state = CONN_CLOSED;
        weir__conn_h2_close(c); /* every stream's session is told, as above */
    }
    c->state = CONN_CLOSED;
    weir_timer_stop(w->loop, &c->timer);
    weir__loop_defer_cancel(w->loop, &c->kick);
    weir__loop_defer_cancel(w->loop, &c->doom);
    weir_loop_io_del(w->loop, &c->st.io);
    if (c->st.ssl != NULL) {
        if (!c->st.hangup && !c->shut) {
            (void)weir__tls_shutdown(&c->st); /* close_notify, if the socket takes it now */
        }
        weir__tls_free(&c->st);
    }
    if (c->st.io.fd >= 0) {
        close(c->st.io.fd);
        c->st.io.fd = -1;
    }
    weir__buf_release(&w->bufs, &c->st.in);
    weir__free(c->reply);
    c->reply = NULL;
    release_counts(c);
    unlink_conn(c);
    if ((c->s != NULL && c->s->suspended) || c->h2_sessions > 0) {
        c->zombie = true; /* the session frees us when its hook resumes */
        c->next = w->zombies;
        if (w->zombies) {
            w->zombies->prev = c;
        }
        w->zombies = c;
    } else {
        weir__loop_defer(w->loop, &c->reap);
    }
    if (w->on_closed) {
        w->on_closed(w, w->on_closed_arg);
    }
}

static void conn_doom(struct weir_loop *loop, struct weir__defer *d)
{
    struct weir__conn *c = WEIR_CONTAINER_OF(d, struct weir__conn, doom);
    WEIR_CHECK_OBJ(c, WEIR_CONN_MAGIC);
    weir__conn_close(c);
}

static void conn_reap(struct weir_loop *loop, struct weir__defer *d)
{
    struct weir__conn *c = WEIR_CONTAINER_OF(d, struct weir__conn, reap);
    WEIR_CHECK_OBJ(c, WEIR_CONN_MAGIC);
    WEIR_DEBUG_ASSERT(c->state == CONN_CLOSED && c->s == NULL);
    c->magic = 0;
    weir__free(c->tls_info);
    weir__free(c);
}

static void conn_kick(struct weir_loop *loop, struct weir__defer *d)
{
    struct weir__conn *c = WEIR_CONTAINER_OF(d, struct weir__conn, kick);
    WEIR_CHECK_OBJ(c, WEIR_CONN_MAGIC);
    if (c->state == CONN_IDLE) {
        conn_idle_step(c);
    }
}

static void conn_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct weir__conn *c = io->data;
    WEIR_CHECK_OBJ(c, WEIR_CONN_MAGIC);
    if (c->state == CONN_CLOSED) {
        return;
    }
    weir__stream_note_events(&c->st, events);
    if (c->state == CONN_IDLE) {
        conn_idle_step(c);
    } else if (c->state == CONN_LINGER) {
        linger_step(c);
    } else if (c->state == CONN_H2) {
        weir__conn_h2_event(c);
    } else {
        weir__session_client_event(c->s);
    }
}

/*
 * A lingering close, as nginx's lingering_close: the reply written whole, our write side shut
 * down, then what the client still sends read and thrown away until it closes, or until
 * linger_idle passes without a byte or linger in all. Closing with unread bytes would make the
 * kernel send a reset, and a reset can destroy the reply before the client has read it.
 */
static void linger_arm(struct weir__conn *c)
{
    const struct weir_cfg_timeouts *t = &c->w->cfg->server.timeouts;
    uint64_t now = weir_loop_now_ms(c->w->loop);
    if (now >= c->linger_end_ms) {
        weir__conn_close(c);
        return;
    }
    uint64_t left = c->linger_end_ms - now;
    weir__conn_set_deadline(c, left < t->linger_idle_ms ? left : t->linger_idle_ms);
}

/* Writes what is left of the reply; true once all of it is out (or there was none). */
static bool linger_write(struct weir__conn *c)
{
    while (c->reply_off < c->reply_len) {
        ssize_t n =
            weir__stream_write(&c->st, c->reply + c->reply_off, c->reply_len - c->reply_off);
        if (n < 0) {
            weir__conn_close(c); /* the client is gone: nobody to answer */
            return false;
        }
        c->reply_off = (uint16_t)(c->reply_off + n);
        if (c->reply_off < c->reply_len) {
            return false; /* st.writable is cleared */
        }
    }
    weir__free(c->reply);
    c->reply = NULL;
    c->reply_len = c->reply_off = 0;
    return true;
}

static void linger_step(struct weir__conn *c)
{
    bool progress = false;
    if (!c->shut) {
        uint16_t before = c->reply_off;
        bool all_out = linger_write(c);
        if (c->state != CONN_LINGER) {
            return; /* the client is gone */
        }
        progress = c->reply_off != before;
        if (all_out) {
            if (!weir__tls_shutdown(&c->st) || shutdown(c->st.io.fd, SHUT_WR) != 0) {
                weir__conn_close(c);
                return;
            }
            c->shut = true;
        }
    }
    /* Read even while the reply waits: a client may read only once it has sent everything. */
    char sink[4096];
    for (;;) {
        ssize_t n = read(c->st.io.fd, sink, sizeof(sink));
        if (n > 0) {
            progress = true;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        weir__conn_close(c); /* EOF or error: the client is done */
        return;
    }
    if (progress) {
        linger_arm(c);
    }
}

/*
 * Ends the connection with a lingering close. reply (len bytes, at most WEIR_REJECT_MAX) is
 * written first: what the socket takes now, the rest kept and written when it is writable.
 */
static void linger_with(struct weir__conn *c, const char *reply, size_t len)
{
    if (c->state == CONN_CLOSED) {
        return;
    }
    c->s = NULL;
    c->state = CONN_LINGER;
    weir__buf_release(&c->w->bufs, &c->st.in);
    c->shut = false;
    c->linger_end_ms = weir_loop_now_ms(c->w->loop) + c->w->cfg->server.timeouts.linger_ms;
    if (len > 0) {
        ssize_t n = weir__stream_write(&c->st, reply, len);
        if (n < 0) {
            weir__conn_close(c);
            return;
        }
        size_t done = (size_t)n;
        if (done < len) {
            /* A full socket buffer (a pipelining client that does not read): keep the rest. */
            c->reply = weir__malloc(len - done);
            if (c->reply == NULL) {
                weir__conn_close(c);
                return;
            }
            memcpy(c->reply, reply + done, len - done);
            c->reply_len = (uint16_t)(len - done);
            c->reply_off = 0;
            c->st.writable = false;
        }
    }
    linger_arm(c);
    if (c->state == CONN_LINGER) {
        linger_step(c);
    }
}

void weir__conn_linger(struct weir__conn *c)
{
    linger_with(c, NULL, 0);
}

/* Answers a request we could not parse, then closes (the framing is lost). */
static void reject_head(struct weir__conn *c, int code)
{
    int status = weir__h1_error_status(code);
    char buf[WEIR_REJECT_MAX];
    const char *reason = weir_http_reason(status);
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nServer: weir\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
                     status, reason, strlen(reason) + 1, reason);
    weir__access_log_reject(c, status, strlen(reason) + 1);
    weir_log(WEIR_LOG_DEBUG, "client %s: rejected request head: %s (%d)", c->ip,
             weir_strerror(code), status);
    linger_with(c, buf, n > 0 && (size_t)n < sizeof(buf) ? (size_t)n : 0);
}

/*
 * A TLS listener's first byte: a handshake record (22) goes on to TLS; anything else is most
 * likely plain HTTP sent to the HTTPS port, which gets a clear answer in plain text (nginx
 * answers 400 with its code 497) instead of a TLS alert the client cannot show. true when the
 * connection may go on now.
 */
static bool tls_first_byte(struct weir__conn *c)
{
    unsigned char b;
    ssize_t n = recv(c->st.io.fd, &b, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        c->st.readable = errno == EINTR;
        return false;
    }
    if (n <= 0) {
        weir__conn_close(c);
        return false;
    }
    c->tls_check = false;
    if (b == 22) {
        return true;
    }
    static const char msg[] = "The plain HTTP request was sent to HTTPS port\n";
    char buf[WEIR_REJECT_MAX];
    int len = snprintf(buf, sizeof(buf),
                       "HTTP/1.1 400 Bad Request\r\nServer: weir\r\nContent-Type: text/plain\r\n"
                       "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                       sizeof(msg) - 1, msg);
    weir__tls_free(&c->st);
    weir__access_log_reject(c, 400, sizeof(msg) - 1);
    weir_log(WEIR_LOG_DEBUG, "client %s: plain HTTP on a TLS listener (400)", c->ip);
    linger_with(c, buf, len > 0 && (size_t)len < sizeof(buf) ? (size_t)len : 0);
    return false;
}

/*
 * Whether a new connection speaks HTTP/2: ALPN chose h2, or (h2c listeners) its first bytes
 * are the connection preface. 1: it does (now handed over, or closed); 2: too few bytes to
 * tell; 0: HTTP/1.1.
 */
static int h2_detect(struct weir__conn *c)
{
    bool alpn = c->tls && weir__tls_alpn_h2(&c->st);
    if (!alpn && !c->h2c) {
        return 0;
    }
    if (!alpn) {
        uint32_t have = weir__buf_len(&c->st.in);
        uint32_t n = have < WEIR_H2_PREFACE_LEN ? have : WEIR_H2_PREFACE_LEN;
        if (memcmp(c->st.in.data + c->st.in.rpos, WEIR_H2_PREFACE, n) != 0) {
            return 0;
        }
        if (n < WEIR_H2_PREFACE_LEN) {
            return 2;
        }
    }
    if (weir__conn_h2_start(c) != 0) {
        weir__conn_close(c);
    }
    return 1;
}

static void conn_idle_step(struct weir__conn *c)
{
    struct weir__proxy_worker *w = c->w;
    const struct weir_cfg_limits *lim = &w->cfg->server.limits;
    uint32_t maxh =
        lim->max_headers <= WEIR_MAX_HEADERS_PARSED ? lim->max_headers : WEIR_MAX_HEADERS_PARSED;
    struct weir__h1_limits hl = {lim->max_request_line, lim->max_header_bytes, maxh};
    for (;;) {
        int h2 = c->nrequests == 0 && weir__buf_len(&c->st.in) > 0 ? h2_detect(c) : 0;
        if (h2 == 1) {
            return;
        }
        if (weir__buf_len(&c->st.in) > 0 && h2 == 0) {
            struct weir__h1_request hr;
            ssize_t n =
                weir__h1_parse_request(c->st.in.data + c->st.in.rpos, weir__buf_len(&c->st.in),
                                       &c->scan, &hl, w->fields, maxh, &hr);
            if (n > 0) {
                memset(&c->scan, 0, sizeof(c->scan));
                c->head_started = false;
                if (weir__session_start(c, &hr, (size_t)n) != 0) {
                    weir__conn_close(c);
                }
                return;
            }
            if (n != WEIR_EAGAIN) {
                reject_head(c, (int)n);
                return;
            }
            if (!c->head_started) {
                c->head_started = true;
                weir__conn_set_deadline(c, w->cfg->server.timeouts.client_header_ms);
            }
        }
        if (w->draining && weir__buf_len(&c->st.in) == 0) {
            weir__conn_close(c);
            return;
        }
        if (!c->st.readable) {
            break;
        }
        if (c->tls_check && !tls_first_byte(c)) {
            if (c->state != CONN_IDLE) {
                return; /* closed, or answered as plain HTTP */
            }
            break;
        }
        /* A head bigger than the I/O buffer is allowed up to max_header_bytes. */
        int grow = weir__stream_grow_for_head(&c->st, &w->bufs,
                                              lim->max_header_bytes + lim->max_request_line);
        if (grow != 0) {
            if (grow == WEIR_ELIMIT) {
                reject_head(c, WEIR_EH1_HDR_TOO_LARGE);
            } else {
                weir__conn_close(c);
            }
            return;
        }
        ssize_t r = weir__stream_read(&c->st, &w->bufs);
        if (r < 0) {
            if (c->st.tls_err != NULL) {
                weir_log(WEIR_LOG_DEBUG, "client %s: TLS: %s", c->ip, c->st.tls_err);
            }
            weir__conn_close(c);
            return;
        }
        if (r == 0 && c->st.eof) {
            weir__conn_close(c);
            return;
        }
    }
    /* Waiting for bytes: hold no buffer when nothing is pending. */
    if (weir__buf_len(&c->st.in) == 0) {
        weir__buf_release(&w->bufs, &c->st.in);
    }
}

void weir__conn_unzombie(struct weir__conn *c)
{
    struct weir__proxy_worker *w = c->w;
    if (!c->zombie) {
        return;
    }
    c->zombie = false;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        w->zombies = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
    weir__loop_defer(w->loop, &c->reap);
}

void weir__conn_request_done(struct weir__conn *c, bool close_conn)
{
    struct weir__proxy_worker *w = c->w;
    c->s = NULL;
    if (c->state == CONN_CLOSED) {
        weir__conn_unzombie(c);
        return;
    }
    if (close_conn || w->draining) {
        weir__conn_linger(c);
        return;
    }
    c->state = CONN_IDLE;
    if (c->st.in.data != NULL && c->st.in.cap != w->bufs.size && weir__buf_len(&c->st.in) == 0) {
        /* Drop an oversized head buffer as soon as it is empty. */
        weir__buf_release(&w->bufs, &c->st.in);
    }
    if (weir__buf_len(&c->st.in) > 0) {
        c->head_started = true;
        weir__conn_set_deadline(c, w->cfg->server.timeouts.client_header_ms);
    } else {
        c->head_started = false;
        weir__conn_set_deadline(c, w->cfg->server.timeouts.client_keepalive_ms);
    }
    weir__loop_defer(w->loop, &c->kick);
}

void weir__proxy_drain(struct weir__proxy_worker *w)
{
    w->draining = true;
    weir__bg_abort_all(w); /* refreshes are not worth waiting for */
    struct weir__conn *c = w->conns;
    while (c) {
        struct weir__conn *next = c->next;
        if ((c->state == CONN_IDLE && weir__buf_len(&c->st.in) == 0) || c->state == CONN_LINGER) {
            weir__conn_close(c);
        } else if (c->state == CONN_H2) {
            weir__conn_h2_drain(c);
        }
        c = next;
    }
    weir__pool_close_idle(w->pool);
    weir__h2up_close_idle(w, false);
}

void weir__proxy_close_all(struct weir__proxy_worker *w)
{
    w->draining = true;
    weir__bg_abort_all(w);
    while (w->conns) {
        weir__conn_close(w->conns);
    }
    weir__pool_close_idle(w->pool);
    weir__h2up_close_idle(w, true);
}
