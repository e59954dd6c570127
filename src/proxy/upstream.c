/*
 * The upstream exchange of one session, as an explicit sub-state machine (enum
 * weir__up_state, one function per state): take a pooled connection or connect, run
 * connected_to_upstream and queue the request head, stream the request body up while reading
 * the response head, then stream the response body down. A step never calls back into the
 * session: it returns how far it got (enum weir__step) and, on failure, an outcome saying what
 * failed and whether a retry is safe; session.c decides what happens next (retries included).
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "http2/h2.h"
#include "net/sock.h"
#include "tls/tls.h"
#include "weir/log.h"

/* The session's HTTP/2 origin connection came up, went, or its stream had news. */
static void h2wake_cb(struct weir_loop *loop, struct weir__defer *d)
{
    (void)loop;
    struct weir_session *s = WEIR_CONTAINER_OF(d, struct weir_session, ux.h2wake);
    WEIR_SESSION_CHECK(s);
    if (!s->suspended && s->phase == PH_UPSTREAM) {
        weir__session_run(s);
    }
}

void weir__upstream_init(struct weir_session *s)
{
    s->ux.state = UP_IDLE;
    weir_timer_init(&s->ux.timer, weir__session_upstream_timer, s);
    s->ux.h2wake.fn = h2wake_cb;
}

/* ---- outcomes ---- */

enum weir__step weir__outcome_end(struct weir__outcome *o, enum weir_error_type type,
                                  enum weir_error_source src, int sys_errno, const char *context)
{
    *o = (struct weir__outcome){.kind = WEIR_FAIL_END,
                                .err = {type, src, false, sys_errno, context}};
    return WEIR_STEP_FAILED;
}

static enum weir__step connect_failed(struct weir__outcome *o, int code)
{
    enum weir_error_type type = code == -ECONNREFUSED    ? WEIR_ERR_CONNECT_REFUSED
                                : code == WEIR_ETIMEDOUT ? WEIR_ERR_CONNECT_TIMEOUT
                                                         : WEIR_ERR_CONNECT_ERROR;
    int sys = code < 0 && code > -4096 ? -code : 0;
    *o = (struct weir__outcome){.kind = WEIR_FAIL_CONNECT,
                                .err = {type, WEIR_SRC_UPSTREAM, false, sys, "connect"},
                                .code = code};
    return WEIR_STEP_FAILED;
}

enum weir__step weir__upstream_error(struct weir_session *s, struct weir__outcome *o,
                                     enum weir_error_type type, int sys_errno, const char *context)
{
    bool timeout = type == WEIR_ERR_READ_TIMEOUT || type == WEIR_ERR_WRITE_TIMEOUT;
    bool untouched = !s->ux.byte_seen && s->reqp.bytes == 0 && s->reqp.pending_consume == 0;
    *o = (struct weir__outcome){
        .kind = WEIR_FAIL_UPSTREAM,
        .err = {type, WEIR_SRC_UPSTREAM, false, sys_errno, context},
        /*
         * The outcome rule (docs/ARCHITECTURE.md): an origin that closes or resets a response
         * weir had stopped reading for a slow client acted on our stall (an application
         * server's send timeout, say), so the backend is not blamed. A timeout is: the timer
         * runs only while weir is ready to read.
         */
        .blameless = s->ux.held && !timeout,
        /* A pooled connection the peer had closed before answering: not the backend's fault. */
        .stale = !timeout && s->ux.reused && untouched && s->stale_retries < WEIR_MAX_STALE_RETRIES,
        .replayable = untouched && !s->resp_started,
    };
    return WEIR_STEP_FAILED;
}

/* ---- the client going away ---- */

bool weir__client_hung_up(const struct weir_session *s)
{
    const struct weir__stream *st = s->cst;
    if (st->hangup) {
        return true; /* a reset: nothing more can reach the client */
    }
    if (st->vt != NULL) {
        return false; /* an HTTP/2 stream's END_STREAM ends the request, not the client */
    }
    if (!st->rdhup && !st->eof) {
        return false;
    }
    if (s->ignore_client_abort) {
        return false; /* a half-closed client may still read: keep answering */
    }
    if (s->req_body != WEIR_H1_BODY_NONE && !s->reqp.in_done) {
        return false; /* the body pipe meets the end of stream itself, after the bytes before it */
    }
    if (weir__buf_len(&st->in) > 0) {
        return false; /* another request follows: the client wants the answers */
    }
    int unread = 0;
    if (ioctl(st->io.fd, FIONREAD, &unread) != 0) {
        return true; /* the socket is broken */
    }
    return unread == 0;
}

void weir__client_abandon(struct weir_session *s)
{
    if (!s->client_gone) {
        weir_log(WEIR_LOG_DEBUG,
                 "client %s gone: the upstream exchange goes on (ignore_client_abort)", s->c->ip);
    }
    s->client_gone = true;
    s->close_after = true;
    if (!s->has_err) {
        /* Not s->failed: the exchange itself succeeds and its connection may be reused. */
        s->has_err = true;
        s->err = (struct weir_error){WEIR_ERR_CONNECTION_CLOSED, WEIR_SRC_DOWNSTREAM, false, 0,
                                     "client gone"};
    }
}

/* The client went away: the exchange ends at once, the upstream connection is not reused. */
static enum weir__step client_abort(struct weir_session *s, struct weir__outcome *o,
                                    enum weir_error_type type, const char *context)
{
    s->client_gone = true;
    weir_log(WEIR_LOG_DEBUG, "client %s gone (%s): upstream exchange with %s cancelled", s->c->ip,
             context, s->peer.name);
    return weir__outcome_end(o, type, WEIR_SRC_DOWNSTREAM, 0, context);
}

/* ---- UP_IDLE: a connection ---- */

static void attach(struct weir_session *s, struct weir__upconn *u, bool reused)
{
    WEIR_CHECK_OBJ(u, WEIR_UPCONN_MAGIC);
    WEIR_ASSERT(u->owner == NULL);
    s->ux.conn = u;
    s->ux.reused = reused;
    u->owner = s;
    u->st.io.cb = weir__session_upstream_event;
    u->st.io.data = u;
    s->ust = &u->st;
    s->ux.progress_ms = weir_loop_now_ms(s->w->loop);
    memset(&s->ux.scan, 0, sizeof(s->ux.scan));
    s->ux.byte_seen = false;
    s->ux.held = false;
    weir__outq_reset(&s->ux.out);
    s->ux.state = u->connected ? UP_CONNECTED : UP_CONNECTING;
}

/* HTTP/2 peers: a stream on a connection the worker has, or wait for one, or make one. */
static enum weir__step up_idle_h2(struct weir_session *s, struct weir__outcome *o, bool *connect)
{
    bool wanted = weir__h2up_wanted(&s->peer);
    *connect = false;
    switch (weir__h2up_take(s, wanted)) {
    case WEIR_H2UP_READY:
        s->upf = &weir__h2_up;
        s->ux.state = UP_CONNECTED;
        s->ux.progress_ms = weir_loop_now_ms(s->w->loop);
        return WEIR_STEP_DONE;
    case WEIR_H2UP_WAIT:
        return WEIR_STEP_BLOCKED;
    case WEIR_H2UP_NONE:
        break;
    }
    if (!wanted) {
        return WEIR_STEP_DONE; /* auto: an HTTP/1.1 connection may do, or turn out h2 */
    }
    s->upf = &weir__h2_up;
    s->ux.fresh = false;
    struct weir__upconn *u = NULL;
    int rc = weir__upconn_connect(s->w->pool, &s->peer, &u);
    if (rc != 0) {
        weir__h2up_unmake(s);
        return connect_failed(o, rc);
    }
    attach(s, u, false);
    *connect = true;
    return WEIR_STEP_DONE;
}

static enum weir__step up_idle(struct weir_session *s, struct weir__outcome *o)
{
    struct weir__pool *pool = s->w->pool;
    struct weir__upconn *u = NULL;
    s->upf = &weir__h1_up;
    if (s->peer.protocol != WEIR_PEER_HTTP1 && !s->ux.upgrade &&
        (s->peer.protocol != WEIR_PEER_AUTO || s->peer.tls)) {
        bool connected = false;
        enum weir__step st = up_idle_h2(s, o, &connected);
        if (st != WEIR_STEP_DONE || connected || s->ux.state != UP_IDLE) {
            return st;
        }
    }
    if (!s->ux.fresh) {
        u = weir__pool_take(pool, &s->peer);
        /*
         * A request with a body cannot be retried once the body is under way, so make sure a
         * pooled connection is alive first; bodiless requests are retried if it was not.
         */
        while (u != NULL && s->req_body != WEIR_H1_BODY_NONE && !weir__upconn_alive(u)) {
            weir__upconn_close(pool, u);
            u = weir__pool_take(pool, &s->peer);
        }
    }
    if (u != NULL) {
        attach(s, u, true);
        return WEIR_STEP_DONE;
    }
    s->ux.fresh = false;
    int rc = weir__upconn_connect(pool, &s->peer, &u);
    if (rc != 0) {
        return connect_failed(o, rc);
    }
    attach(s, u, false);
    return WEIR_STEP_DONE;
}

/* ---- UP_CONNECTING ---- */

/*
 * The TLS handshake with the peer, under the connect timeout (as nginx's proxy_connect_timeout
 * covers its SSL handshake). A failure is a connect failure: nothing was sent, another backend
 * may be tried, and passive health counts it against this one.
 */
static enum weir__step tls_handshake(struct weir_session *s, struct weir__outcome *o)
{
    struct weir__upconn *u = s->ux.conn;
    char why[WEIR_TLS_ERRMAX];
    if (u->st.ssl == NULL) {
        int rc = weir__tls_connect(&s->peer, &u->st);
        if (rc != 0) {
            (void)snprintf(why, sizeof(why), "%s", weir_strerror(rc));
            goto failed;
        }
    }
    int rc = weir__tls_handshake(&u->st, why);
    if (rc == WEIR_EAGAIN) {
        return WEIR_STEP_BLOCKED;
    }
    if (rc == 0) {
        return WEIR_STEP_DONE;
    }
failed:
    weir_log(WEIR_LOG_WARN, "upstream %s: TLS with %s%s failed: %s", s->peer.name,
             s->peer.sni[0] ? "SNI " : "no SNI", s->peer.sni, why);
    connect_failed(o, WEIR_ETLS);
    o->err.type = WEIR_ERR_TLS_HANDSHAKE;
    o->err.context = "TLS handshake";
    return WEIR_STEP_FAILED;
}

static enum weir__step up_connecting(struct weir_session *s, struct weir__outcome *o)
{
    struct weir__upconn *u = s->ux.conn;
    if (u->st.ssl == NULL) {
        if (!u->st.writable) {
            return WEIR_STEP_BLOCKED;
        }
        int rc = weir__connect_result(u->st.io.fd);
        if (rc != 0) {
            return connect_failed(o, rc);
        }
    }
    if (s->peer.tls) {
        enum weir__step st = tls_handshake(s, o);
        if (st != WEIR_STEP_DONE) {
            return st;
        }
        if (s->peer.protocol == WEIR_PEER_H2 && !weir__h2up_alpn_h2(s)) {
            weir_log(WEIR_LOG_WARN, "upstream %s: the origin did not agree to h2 (ALPN)",
                     s->peer.name);
            connect_failed(o, WEIR_ETLS);
            o->err.type = WEIR_ERR_TLS_HANDSHAKE;
            o->err.context = "ALPN h2";
            return WEIR_STEP_FAILED;
        }
    }
    u->connected = true;
    s->ux.progress_ms = weir_loop_now_ms(s->w->loop);
    s->ux.state = UP_CONNECTED;
    return WEIR_STEP_DONE;
}

/* ---- UP_CONNECTED ---- */

static enum weir__step up_connected(struct weir_session *s, struct weir__outcome *o)
{
    bool h2 =
        s->upf == &weir__h2_up || (s->peer.protocol == WEIR_PEER_AUTO && weir__h2up_alpn_h2(s));
    if (h2 && s->ux.conn != NULL) {
        if (weir__h2up_promote(s) != 0) {
            return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "HTTP/2");
        }
    }
    s->upf = h2 ? &weir__h2_up : &weir__h1_up;
    if (s->w->hooks->connected_to_upstream &&
        s->w->hooks->connected_to_upstream(s, s->ctx, &s->peer, s->ux.reused) !=
            WEIR_HOOK_CONTINUE) {
        return weir__outcome_end(o, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "connected_to_upstream");
    }
    if (weir__forward_request_head(s) != 0) {
        return weir__outcome_end(o, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "upstream request head");
    }
    if (h2 && s->ux.upgrade) {
        /* An upgrade is HTTP/1.1's; an extended CONNECT towards origins is not built. */
        weir_log(WEIR_LOG_WARN,
                 "WebSocket to %s: the origin speaks HTTP/2; WebSocket needs "
                 "protocol: http1 for its upstream",
                 s->peer.name);
        return weir__outcome_end(o, WEIR_ERR_INVALID_HTTP, WEIR_SRC_UPSTREAM, 0,
                                 "WebSocket to an HTTP/2 origin");
    }
    /* The framing of this connection, which a retry may change (auto: h2 or HTTP/1.1). */
    if (weir__up_request_head(s, s->ux.length_ok) != 0) {
        return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "upstream head");
    }
    if (h2) {
        enum weir__step st = weir__h2up_open(s, o);
        if (st != WEIR_STEP_DONE) {
            return st;
        }
    } else {
        weir__outq_push(&s->ux.out, s->ux.head, s->ux.head_len);
    }
    s->ux.state = UP_HEAD;
    return WEIR_STEP_DONE;
}

/* One step of pipe p from src to dst through q; progress on either side moves its clock. */
static enum weir__pipe_status run_pipe(struct weir_session *s, struct weir__pipe *p,
                                       struct weir__stream *src, uint64_t *src_progress_ms,
                                       struct weir__stream *dst, uint64_t *dst_progress_ms,
                                       struct weir__outq *q, weir__body_filter_fn filter,
                                       uint64_t limit, bool discard, struct weir__spool *spool)
{
    uint64_t now = weir_loop_now_ms(s->w->loop);
    struct weir__pipe_io io = {src, dst, q, filter, limit, discard, spool, 0, false, false};
    enum weir__pipe_status st = weir__pipe_step(s, p, &io);
    if (dst == s->cst) {
        s->rate_bytes += io.written;
    }
    if (io.read_progress) {
        *src_progress_ms = now;
    }
    if (io.write_progress) {
        *dst_progress_ms = now;
    }
    return st;
}

/* ---- the request going up (from UP_HEAD on, until req_sent) ---- */

static enum weir__step send_request(struct weir_session *s, struct weir__outcome *o)
{
    weir__down_send_continue(s);
    enum weir__pipe_status st = run_pipe(
        s, &s->reqp, s->cst, &s->client_progress_ms, s->ust, &s->ux.progress_ms, &s->ux.out,
        weir__grpc_web_request_text(s) ? weir__grpc_web_request_filter
                                       : s->w->hooks->request_body_filter,
        s->ux.tunnel ? 0 : s->cfg->server.limits.max_body_bytes, false, NULL);
    switch (st) {
    case WEIR_PIPE_DONE:
        s->req_sent = true;
        if (s->ux.h2s != NULL) {
            if (s->reqp.trailers.len > 0 && weir__h2s_trailers(s->ux.h2s, s->reqp.trailers) != 0) {
                return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "trailers");
            }
            weir__h2s_end_body(s->ux.h2s);
        }
        return WEIR_STEP_DONE;
    case WEIR_PIPE_BLOCKED:
        return WEIR_STEP_DONE;
    case WEIR_PIPE_ERR_SRC:
        return weir__outcome_end(o, WEIR_ERR_CONNECTION_CLOSED, WEIR_SRC_DOWNSTREAM, 0,
                                 "client body");
    case WEIR_PIPE_ERR_HOOK:
        if (!weir__grpc_web_bad_body(s)) {
            return weir__outcome_end(o, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "request_body_filter");
        }
        /* a gRPC-Web -text body that is not base64 is the client's error */
        weir__outcome_end(o, WEIR_ERR_INVALID_HTTP, WEIR_SRC_DOWNSTREAM, 0, "gRPC-Web body");
        o->kind = WEIR_FAIL_CLIENT_BODY;
        o->status = 400;
        return WEIR_STEP_FAILED;
    case WEIR_PIPE_ERR_PROTO:
    case WEIR_PIPE_ERR_LIMIT: {
        bool proto = st == WEIR_PIPE_ERR_PROTO;
        weir__outcome_end(o, WEIR_ERR_INVALID_HTTP, WEIR_SRC_DOWNSTREAM, 0,
                          proto ? "client body" : "body limit");
        o->kind = WEIR_FAIL_CLIENT_BODY;
        o->status = proto ? 400 : 413;
        return WEIR_STEP_FAILED;
    }
    case WEIR_PIPE_ERR_DST:
        /* The origin may have answered early and closed: read what it said first. */
        if (s->ux.byte_seen || weir__buf_len(&s->ust->in) > 0) {
            return WEIR_STEP_DONE;
        }
        return weir__upstream_error(s, o, WEIR_ERR_WRITE_ERROR, 0, "write");
    }
    return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "request pipe");
}

/* ---- UP_HEAD ---- */

static enum weir__step up_head(struct weir_session *s, struct weir__outcome *o)
{
    if (!weir__outq_empty(&s->out_client)) {
        /* A 100 Continue still going out. */
        if (s->client_gone) {
            weir__outq_reset(&s->out_client);
        } else if (s->cst->writable && weir__stream_flush(s->cst, &s->out_client) < 0) {
            return client_abort(s, o, WEIR_ERR_WRITE_ERROR, "client write");
        }
        if (!weir__outq_empty(&s->out_client)) {
            return WEIR_STEP_BLOCKED;
        }
    }
    enum weir__step st = weir__up_response_head(s, o);
    if (st != WEIR_STEP_DONE) {
        return st;
    }
    if (s->cache != NULL && weir__cache_origin_head(s)) {
        weir__backend_succeeded(s->peer.backend); /* it answered (a 304, or a 5xx) */
        st = weir__up_response_head(s, o);        /* the stored head, from the cache now */
        if (st != WEIR_STEP_DONE) {
            return st;
        }
    }
    if (s->ux.tunnel && s->ws_h2 && !weir__ws_accept_ok(s->ws_key, &s->resp->headers)) {
        weir_log(WEIR_LOG_WARN,
                 "WebSocket upgrade at %s: a 101 without the Sec-WebSocket-Accept "
                 "of weir's key",
                 s->peer.name);
        return weir__upstream_error(s, o, WEIR_ERR_INVALID_HTTP, 0, "Sec-WebSocket-Accept");
    }
    weir__backend_succeeded(s->peer.backend);
    if (weir__forward_response_head(s) != 0) {
        return weir__outcome_end(o, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "response head");
    }
    if (s->ux.tunnel) {
        /* Bytes both ways now: the client's after its head, the origin's after its 101. */
        weir__pipe_source(s, &s->respp, WEIR_H1_BODY_CLOSE, 0);
        s->req_body = WEIR_H1_BODY_CLOSE;
        weir__pipe_source(s, &s->reqp, WEIR_H1_BODY_CLOSE, 0);
        s->reqp.out_kind = WEIR_H1_BODY_CLOSE;
        s->reqp.in_done = s->reqp.out_done = false;
        s->req_sent = false;
    }
    s->client_progress_ms = weir_loop_now_ms(s->w->loop);
    s->ux.state = UP_BODY;
    return WEIR_STEP_DONE;
}

/* ---- UP_BODY ---- */

/* Writes what the spool holds to the client (buffer_responses). */
static enum weir__pipe_status drain_spool(struct weir_session *s)
{
    uint64_t written = 0;
    enum weir__pipe_status st = weir__spool_drain(s->spool, s->cst, s->client_gone, &written);
    if (written > 0) {
        s->rate_bytes += written;
        s->client_progress_ms = weir_loop_now_ms(s->w->loop);
    }
    return st;
}

static enum weir__step spool_failed(struct weir__outcome *o)
{
    /* The response is cut short: the client sees a close before its end. */
    return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "buffer_responses file");
}

static enum weir__step up_body(struct weir_session *s, struct weir__outcome *o)
{
    enum weir__pipe_status st;
    if (s->ux.tunnel && s->req_sent && weir__outq_empty(&s->out_client)) {
        s->ux.state = UP_COMPLETE; /* the client closed the tunnel */
        return WEIR_STEP_DONE;
    }
    for (;;) {
        st = run_pipe(s, &s->respp, s->ust, &s->ux.progress_ms, s->cst, &s->client_progress_ms,
                      &s->out_client,
                      weir__grpc_web_response_on(s) ? weir__grpc_web_response_filter
                                                    : s->w->hooks->response_body_filter,
                      0, s->client_gone, s->spool);
        if (s->spool == NULL || (st != WEIR_PIPE_DONE && st != WEIR_PIPE_BLOCKED)) {
            break;
        }
        uint64_t held = weir__spool_held(s->spool);
        enum weir__pipe_status d = drain_spool(s);
        if (d == WEIR_PIPE_ERR_SRC) {
            return spool_failed(o);
        }
        if (d == WEIR_PIPE_ERR_DST) {
            st = d;
            break;
        }
        if (st != WEIR_PIPE_BLOCKED || weir__outq_empty(&s->out_client) ||
            weir__spool_held(s->spool) >= held) {
            break;
        }
        /* The spool was full and the client made room in it: the pipe goes on. */
    }
    switch (st) {
    case WEIR_PIPE_DONE:
        if (s->spool != NULL && weir__spool_held(s->spool) > 0) {
            /* The origin is done with: its connection goes back to the pool now, and the
               client takes the rest at its own pace. */
            weir__upstream_release(s, true);
            s->ux.state = UP_DRAIN;
            return WEIR_STEP_DONE;
        }
        s->ux.state = UP_COMPLETE;
        return WEIR_STEP_DONE;
    case WEIR_PIPE_BLOCKED:
        if (!weir__outq_empty(&s->out_client)) {
            /*
             * Waiting for the client, not the origin: the origin's clock does not run while
             * we hold its response, and whatever it does about the stall is ours (below).
             */
            s->ux.held = true;
            s->ux.progress_ms = weir_loop_now_ms(s->w->loop);
        }
        return WEIR_STEP_BLOCKED;
    case WEIR_PIPE_ERR_SRC:
        return weir__upstream_error(s, o, WEIR_ERR_CONNECTION_CLOSED, 0, "response body");
    case WEIR_PIPE_ERR_PROTO:
        return weir__upstream_error(s, o, WEIR_ERR_INVALID_HTTP, 0, "response body");
    case WEIR_PIPE_ERR_DST:
        if (s->ignore_client_abort) {
            /* The origin finishes its work; what it sends goes nowhere. */
            weir__client_abandon(s);
            return up_body(s, o);
        }
        return client_abort(s, o, WEIR_ERR_WRITE_ERROR, "client write");
    case WEIR_PIPE_ERR_HOOK:
    case WEIR_PIPE_ERR_LIMIT:
        break;
    }
    return weir__outcome_end(o, WEIR_ERR_HOOK, WEIR_SRC_INTERNAL, 0, "response_body_filter");
}

/* ---- UP_DRAIN ---- */

static enum weir__step up_drain(struct weir_session *s, struct weir__outcome *o)
{
    switch (drain_spool(s)) {
    case WEIR_PIPE_DONE:
        s->ux.state = UP_COMPLETE;
        return WEIR_STEP_DONE;
    case WEIR_PIPE_BLOCKED:
        return WEIR_STEP_BLOCKED;
    case WEIR_PIPE_ERR_DST:
        if (s->ignore_client_abort) {
            weir__client_abandon(s); /* the origin finished long ago: nothing left to do */
            return up_drain(s, o);
        }
        return client_abort(s, o, WEIR_ERR_WRITE_ERROR, "client write");
    default:
        return spool_failed(o);
    }
}

/* ---- timeouts ---- */

/* Response bytes are waiting for the client: queued, or held by buffer_responses. */
static bool waiting_on_client(const struct weir_session *s)
{
    return !weir__outq_empty(&s->out_client) ||
           (s->spool != NULL && weir__spool_held(s->spool) > 0);
}

/*
 * timeouts.client_min_rate: over each window of time spent waiting on the client (response
 * bytes queued, the socket full), it must have read client_min_rate bytes a second. Time weir
 * spends waiting on the origin does not count, so a slow origin never fails a client. Returns
 * nonzero when the client is too slow; else sets *deadline to when the window ends (0: not
 * waiting on the client).
 */
static int check_min_rate(struct weir_session *s, uint64_t now, uint64_t *deadline)
{
    const struct weir_cfg_timeouts *t = &s->cfg->server.timeouts;
    bool waiting = waiting_on_client(s) && !s->client_gone;
    if (s->rate_since_ms != 0) {
        s->rate_waited_ms += now - s->rate_since_ms;
        s->rate_since_ms = 0;
    }
    if (s->rate_waited_ms >= t->client_min_rate_window_ms) {
        uint64_t need = (uint64_t)t->client_min_rate * s->rate_waited_ms / 1000u;
        if (s->rate_bytes < need) {
            weir_log(WEIR_LOG_INFO,
                     "client %s read %llu bytes in %llu ms, under client_min_rate (%u/s): closed",
                     s->c->ip, (unsigned long long)s->rate_bytes,
                     (unsigned long long)s->rate_waited_ms, t->client_min_rate);
            return -1;
        }
        s->rate_bytes = 0;
        s->rate_waited_ms = 0;
    }
    if (waiting) {
        s->rate_since_ms = now;
        *deadline = now + (t->client_min_rate_window_ms - s->rate_waited_ms);
    }
    return 0;
}

/* A tunnel's only clock: no byte either way for timeouts.tunnel ends it (not an error). */
static enum weir__step arm_tunnel_timer(struct weir_session *s)
{
    struct weir_loop *loop = s->w->loop;
    uint64_t now = weir_loop_now_ms(loop);
    uint64_t last =
        s->ux.progress_ms > s->client_progress_ms ? s->ux.progress_ms : s->client_progress_ms;
    uint64_t deadline = last + s->cfg->server.timeouts.tunnel_ms;
    if (now >= deadline) {
        weir_log(WEIR_LOG_DEBUG, "tunnel with %s idle for timeouts.tunnel: closed", s->peer.name);
        s->ux.state = UP_COMPLETE;
        return WEIR_STEP_DONE;
    }
    if (!weir_timer_active(&s->ux.timer) ||
        s->ux.timer.deadline_ms > weir__loop_deadline(loop, deadline - now)) {
        (void)weir_timer_start(loop, &s->ux.timer, deadline - now);
    }
    weir__session_client_deadline(s, 0);
    return WEIR_STEP_BLOCKED;
}

/* Checks deadlines on both sides and arms the timers for the next one. */
static enum weir__step arm_timers(struct weir_session *s, struct weir__outcome *o)
{
    if (s->ux.tunnel && s->ux.state == UP_BODY) {
        return arm_tunnel_timer(s);
    }
    struct weir_loop *loop = s->w->loop;
    uint64_t now = weir_loop_now_ms(loop);
    struct weir__upconn *u = s->ux.conn;
    bool up = s->ust != NULL; /* a connection or an HTTP/2 stream */
    uint64_t tmo = 0;
    enum weir_error_type type = WEIR_ERR_READ_TIMEOUT;
    if (u != NULL && !u->connected) {
        tmo = s->peer.connect_timeout_ms;
        type = WEIR_ERR_CONNECT_TIMEOUT;
    } else if (up && !weir__outq_empty(&s->ux.out)) {
        tmo = s->peer.write_timeout_ms;
        type = WEIR_ERR_WRITE_TIMEOUT;
    } else if (up && !s->respp.in_done && s->req_sent &&
               (s->ux.state < UP_BODY || weir__outq_empty(&s->out_client))) {
        /* Not before the request is sent: until then the origin waits on the client
           (client_body runs) or on our writes (upstream_write runs). */
        tmo = s->peer.read_timeout_ms;
    }
    if (tmo) {
        uint64_t deadline = s->ux.progress_ms + tmo;
        if (now >= deadline) {
            weir_log(WEIR_LOG_INFO, "upstream %s: %s", s->peer.name, weir_error_type_str(type));
            if (type == WEIR_ERR_CONNECT_TIMEOUT) {
                return connect_failed(o, WEIR_ETIMEDOUT);
            }
            return weir__upstream_error(s, o, type, 0, "upstream timeout");
        }
        if (!weir_timer_active(&s->ux.timer) ||
            s->ux.timer.deadline_ms > weir__loop_deadline(loop, deadline - now)) {
            if (weir_timer_start(loop, &s->ux.timer, deadline - now) != 0) {
                return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "timer");
            }
        }
    } else {
        weir_timer_stop(loop, &s->ux.timer);
    }
    const struct weir_cfg_timeouts *t = &s->cfg->server.timeouts;
    uint64_t ctmo = 0;
    if (waiting_on_client(s)) {
        ctmo = t->client_write_ms;
    } else if (!s->req_sent && up && (u == NULL || u->connected) && weir__outq_empty(&s->ux.out)) {
        ctmo = t->client_body_ms;
    }
    uint64_t rate_deadline = 0;
    if (t->client_min_rate != 0 && check_min_rate(s, now, &rate_deadline) != 0) {
        return client_abort(s, o, WEIR_ERR_WRITE_TIMEOUT, "client_min_rate");
    }
    if (ctmo) {
        uint64_t deadline = s->client_progress_ms + ctmo;
        if (rate_deadline != 0 && rate_deadline < deadline) {
            deadline = rate_deadline;
        }
        weir__session_client_deadline(s, deadline > now ? deadline - now : 1);
    } else {
        weir__session_client_deadline(s, 0);
    }
    return WEIR_STEP_BLOCKED;
}

/* ---- the driver ---- */

enum weir__step weir__upstream_run(struct weir_session *s, struct weir__outcome *o)
{
    WEIR_DEBUG_ASSERT(s->phase == PH_UPSTREAM && !s->suspended);
    if (s->client_progress_ms == 0) {
        s->client_progress_ms = weir_loop_now_ms(s->w->loop);
    }
    bool sent = false; /* the request pipe ran in this call */
    for (;;) {
        if ((s->cst->rdhup || s->cst->hangup || s->cst->eof) && !s->client_gone && !s->ux.tunnel &&
            s->ux.state != UP_COMPLETE && weir__client_hung_up(s)) {
            if (!s->ignore_client_abort) {
                return client_abort(s, o, WEIR_ERR_CONNECTION_CLOSED, "client closed");
            }
            weir__client_abandon(s);
        }
        enum weir__up_state was = s->ux.state;
        enum weir__step st;
        switch (was) {
        case UP_IDLE:
            st = up_idle(s, o);
            break;
        case UP_CONNECTING:
            st = up_connecting(s, o);
            break;
        case UP_CONNECTED:
            st = up_connected(s, o);
            break;
        case UP_HEAD:
        case UP_BODY:
            st = WEIR_STEP_DONE;
            if (!s->req_sent && !sent) {
                sent = true;
                st = send_request(s, o);
            }
            if (st == WEIR_STEP_DONE) {
                st = was == UP_HEAD ? up_head(s, o) : up_body(s, o);
            }
            break;
        case UP_DRAIN:
            st = up_drain(s, o);
            break;
        case UP_COMPLETE:
            return WEIR_STEP_DONE;
        default:
            WEIR_ASSERT(!"an upstream state");
            return weir__outcome_end(o, WEIR_ERR_INTERNAL, WEIR_SRC_INTERNAL, 0, "state");
        }
        if (st == WEIR_STEP_FAILED) {
            return st;
        }
        if (st == WEIR_STEP_BLOCKED) {
            WEIR_DEBUG_ASSERT(s->ux.state == was);
            return arm_timers(s, o);
        }
        WEIR_DEBUG_ASSERT(s->ux.state > was); /* a finished step moves forward */
        if (s->ux.state == UP_COMPLETE) {
            return WEIR_STEP_DONE;
        }
    }
}

/* ---- the end of an exchange ---- */

void weir__upstream_release(struct weir_session *s, bool reusable)
{
    struct weir__upconn *u = s->ux.conn;
    s->ux.state = UP_IDLE;
    weir_timer_stop(s->w->loop, &s->ux.timer);
    weir__loop_defer_cancel(s->w->loop, &s->ux.h2wake);
    weir__h2up_unwait(s);
    weir__h2up_unmake(s);
    if (s->ux.h2s != NULL || s->ux.h2c != NULL) {
        weir__h2up_release(s);
    }
    s->ust = NULL;
    if (u == NULL) {
        return;
    }
    WEIR_CHECK_OBJ(u, WEIR_UPCONN_MAGIC);
    WEIR_ASSERT(u->owner == s);
    s->ux.conn = NULL;
    u->owner = NULL;
    if (reusable && s->ux.keep_alive && s->req_sent && s->respp.in_done &&
        s->respp.in_kind != WEIR_H1_BODY_CLOSE && weir__outq_empty(&s->ux.out)) {
        u->requests++;
        struct weir_backend *b = s->peer.backend;
        u->share_now = b != NULL && atomic_load_explicit(&b->max_conns, memory_order_relaxed) != 0;
        if (weir__pool_put(s->w->pool, u)) {
            return;
        }
    }
    weir__upconn_close(s->w->pool, u);
}

void weir__upstream_rewind(struct weir_session *s, bool fresh)
{
    weir__upstream_release(s, false);
    weir__pipe_source(s, &s->reqp, s->req_body, s->req_length);
    s->reqp.in_done = s->reqp.out_done = s->reqp.end_filtered = false;
    s->req_sent = false; /* the head must go out again, or we wait for an answer forever */
    s->ux.fresh = fresh;
}
