/*
 * Unit tests for the proxy state machine (src/proxy: session.c's phases and retry loop,
 * upstream.c's exchange, pipe.c, forward.c, h1_framing.c, conn.c), driven through the harness
 * (harness.h): a worker with no server and no network, a socketpair for the client, AF_UNIX
 * origins the test scripts byte for byte. Each test checks what the client received, what the
 * origin received, and what the hooks saw. Nothing here depends on timing: timeouts and
 * resumes only order events, and a safety timer fails a test instead of letting it hang.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

#define RUN_MS 3000 /* the safety timer of every run: reaching it fails the test */

/* ---- what the hooks see ---- */

struct tc {
    struct harness *h;
    /* upstream_peer's i-th call goes to route[i] (the last one repeats); NULL: `nowhere` */
    struct harness_origin *route[4];
    unsigned nroute;
    const char *nowhere; /* a path in the harness directory (nothing listens there) */
    uint32_t read_timeout_ms;
    unsigned peer_calls;
    unsigned connects;
    bool reused[8];
    /* fail_to_connect: set retry to ftc_set (-1: leave what the proxy preset) */
    unsigned ftc_calls;
    bool ftc_preset[20];
    struct weir_error ftc_err;
    int ftc_set;
    /* error_while_proxy: likewise */
    unsigned ewp_calls;
    bool ewp_preset[4];
    struct weir_error ewp_err;
    int ewp_set;
    /* fail_to_proxy: answer with ftp_status, or respond itself */
    unsigned ftp_calls;
    struct weir_error ftp_err;
    int ftp_status;
    bool ftp_respond;
    /* request_filter */
    unsigned rf_calls;
    bool rf_local; /* answer 403 itself */
    bool rf_suspend;
    bool rf_close_client;     /* close the test's client end, then suspend */
    uint32_t resume_ms;       /* the resume timer */
    uint32_t close_all_ms;    /* 0, or close every client connection from a timer first */
    struct weir_timer resume; /* on the session's loop */
    struct weir_timer close_all;
    struct weir_session *waiting;
    unsigned logs_at_close_all;
    /* the request's Host as logging saw it */
    char log_host[64];
    size_t log_host_len;
    /* one letter per event: F request_filter, C close_all, R resume, P upstream_peer,
       U connected_to_upstream, E error_while_proxy, X fail_to_proxy, L logging */
    char order[64];
    size_t norder;
};

static struct tc *tc_of(struct weir_session *s)
{
    return harness_of(s)->data;
}

static void note(struct tc *t, char c)
{
    if (t->norder + 1 < sizeof(t->order)) {
        t->order[t->norder++] = c;
        t->order[t->norder] = '\0';
    }
}

static enum weir_hook_result peer_hook(struct weir_session *s, void *ctx, struct weir_peer *peer)
{
    struct tc *t = tc_of(s);
    unsigned i = t->peer_calls < t->nroute ? t->peer_calls : t->nroute - 1;
    t->peer_calls++;
    note(t, 'P');
    struct harness_origin *o = t->nroute ? t->route[i] : NULL;
    int rc = o != NULL ? harness_peer(peer, o) : harness_peer_path(t->h, peer, t->nowhere);
    if (rc != 0) {
        return WEIR_HOOK_ERROR;
    }
    if (t->read_timeout_ms) {
        peer->read_timeout_ms = t->read_timeout_ms;
    }
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result connected_hook(struct weir_session *s, void *ctx,
                                            const struct weir_peer *peer, bool reused)
{
    struct tc *t = tc_of(s);
    if (t->connects < 8) {
        t->reused[t->connects] = reused;
    }
    t->connects++;
    note(t, 'U');
    return WEIR_HOOK_CONTINUE;
}

static void ftc_hook(struct weir_session *s, void *ctx, const struct weir_peer *peer,
                     struct weir_error *err)
{
    struct tc *t = tc_of(s);
    if (t->ftc_calls < 20) {
        t->ftc_preset[t->ftc_calls] = err->retry;
    }
    t->ftc_calls++;
    t->ftc_err = *err;
    if (t->ftc_set >= 0) {
        err->retry = t->ftc_set != 0;
    }
}

static void ewp_hook(struct weir_session *s, void *ctx, const struct weir_peer *peer,
                     struct weir_error *err)
{
    struct tc *t = tc_of(s);
    if (t->ewp_calls < 4) {
        t->ewp_preset[t->ewp_calls] = err->retry;
    }
    t->ewp_calls++;
    t->ewp_err = *err;
    note(t, 'E');
    if (t->ewp_set >= 0) {
        err->retry = t->ewp_set != 0;
    }
}

static int ftp_hook(struct weir_session *s, void *ctx, const struct weir_error *err)
{
    struct tc *t = tc_of(s);
    t->ftp_calls++;
    t->ftp_err = *err;
    note(t, 'X');
    if (t->ftp_respond) {
        assert_int_equal(weir_session_respond_text(s, 451, WEIR_IOV_LIT("legal\n")), 0);
        return 0;
    }
    return t->ftp_status;
}

static void logging_hook(struct weir_session *s, void *ctx, const struct weir_error *err)
{
    struct tc *t = tc_of(s);
    note(t, 'L');
    struct weir_iov host = weir_req_host(weir_session_req(s));
    t->log_host_len = host.len < sizeof(t->log_host) ? host.len : sizeof(t->log_host);
    memcpy(t->log_host, host.base, t->log_host_len);
}

static void resume_fired(struct weir_loop *loop, struct weir_timer *timer)
{
    struct tc *t = timer->data;
    note(t, 'R');
    weir_session_resume(t->waiting, WEIR_HOOK_CONTINUE);
}

static void close_all_fired(struct weir_loop *loop, struct weir_timer *timer)
{
    struct tc *t = timer->data;
    note(t, 'C');
    weir__proxy_close_all(t->h->w); /* as a worker told to stop does */
    t->logs_at_close_all = t->h->nlogs;
}

static enum weir_hook_result request_filter_hook(struct weir_session *s, void *ctx)
{
    struct tc *t = tc_of(s);
    t->rf_calls++;
    note(t, 'F');
    if (t->rf_local) {
        if (weir_session_respond_text(s, 403, WEIR_IOV_LIT("denied\n")) != 0) {
            return WEIR_HOOK_ERROR;
        }
        return WEIR_HOOK_DONE;
    }
    struct weir_loop *loop = weir_session_loop(s);
    if (t->close_all_ms) {
        weir_timer_init(&t->close_all, close_all_fired, t);
        assert_int_equal(weir_timer_start(loop, &t->close_all, t->close_all_ms), 0);
    }
    if (!t->rf_suspend) {
        return WEIR_HOOK_CONTINUE;
    }
    if (t->rf_close_client) {
        harness_end_close(&t->h->client); /* the client hangs up while we wait */
    }
    t->waiting = s;
    weir_timer_init(&t->resume, resume_fired, t);
    assert_int_equal(weir_timer_start(loop, &t->resume, t->resume_ms), 0);
    return WEIR_HOOK_PENDING;
}

/*
 * The test's state and harness live outside its stack frame, so a failed assertion (a longjmp
 * out of the test) leaves nothing dangling: teardown frees what the test did not.
 */
static struct tc the_tc;
static struct harness *the_harness;

/* A harness whose hooks record into t; the test adds origins, edits h->cfg, then starts. */
static struct harness *setup(struct tc *t, const char *yaml)
{
    memset(t, 0, sizeof(*t));
    t->ftc_set = -1;
    t->ewp_set = -1;
    t->nowhere = "nobody-listens";
    struct harness *h = harness_new(yaml);
    assert_non_null(h);
    t->h = h;
    the_harness = h;
    h->data = t;
    h->hooks.upstream_peer = peer_hook;
    h->hooks.connected_to_upstream = connected_hook;
    h->hooks.fail_to_connect = ftc_hook;
    h->hooks.error_while_proxy = ewp_hook;
    h->hooks.request_filter = request_filter_hook;
    h->hooks.logging = logging_hook;
    return h;
}

static void finish(struct harness *h)
{
    harness_free(h);
    the_harness = NULL;
}

static int teardown(void **state)
{
    (void)state;
    if (the_harness != NULL) {
        finish(the_harness); /* the test failed before its end */
    }
    return 0;
}

static struct harness_origin *origin(struct harness *h, const char *name,
                                     const struct harness_reply *replies, size_t n)
{
    struct harness_origin *o = harness_origin_add(h, name, replies, n);
    assert_non_null(o);
    return o;
}

static void start(struct harness *h)
{
    assert_int_equal(harness_start(h), 0);
}

/* Sends a request and runs until its logging call. */
static void exchange(struct harness *h, const char *request)
{
    assert_int_equal(harness_client_send(h, request, 0), 0);
    assert_int_equal(harness_run(h, 1, RUN_MS), 0);
}

/* ---- byte comparisons that show both sides on a mismatch ---- */

static void print_escaped(const char *what, const char *p, size_t n)
{
    fprintf(stderr, "%s (%zu bytes): \"", what, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r') {
            fputs("\\r", stderr);
        } else if (c == '\n') {
            fputs("\\n", stderr);
        } else if (c < 0x20 || c >= 0x7f) {
            fprintf(stderr, "\\x%02x", c);
        } else {
            fputc(c, stderr);
        }
    }
    fputs("\"\n", stderr);
}

static void bytes_equal(const char *got, size_t got_len, const char *want, const char *file,
                        int line)
{
    size_t want_len = strlen(want);
    if (got_len != want_len || memcmp(got, want, want_len) != 0) {
        fprintf(stderr, "%s:%d: bytes differ\n", file, line);
        print_escaped("got ", got, got_len);
        print_escaped("want", want, want_len);
        fail();
    }
}

#define assert_bytes(p, n, want)   bytes_equal((p), (n), (want), __FILE__, __LINE__)
#define assert_received(end, want) bytes_equal((end)->in, (end)->in_len, (want), __FILE__, __LINE__)

/* The body of a chunked message whose head is `head`, decoded; the trailers into *tr. */
static void assert_chunked(const struct harness_end *e, const char *head, const char *body,
                           const char *trailers)
{
    size_t hl = strlen(head);
    assert_true(e->in_len >= hl);
    assert_bytes(e->in, hl, head);
    char out[256];
    const char *tr = NULL;
    size_t trlen = 0;
    ssize_t n = harness_dechunk(e->in + hl, e->in_len - hl, out, sizeof(out), &tr, &trlen);
    assert_true(n >= 0);
    assert_bytes(out, (size_t)n, body);
    assert_non_null(tr);
    assert_bytes(tr, trlen, trailers);
    /* nothing after the message */
    assert_int_equal(harness_message_len(e->in, e->in_len), (ssize_t)e->in_len);
}

/* ---- the messages ---- */

#define GET_A "GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"
#define GET_A_UP                                                                                   \
    "GET /a HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 127.0.0.1\r\n"                      \
    "X-Forwarded-Proto: http\r\nVia: 1.1 weir\r\n\r\n"
#define OK_HELLO      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
#define OK_HELLO_DOWN "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: 1.1 weir\r\n\r\nhello"

#define ERROR_PAGE(status, reason, close)                                                          \
    "HTTP/1.1 " status " " reason "\r\nContent-Type: text/plain; charset=utf-8\r\n"                \
    "Content-Length: " close
/* ---- 1. Content-Length, keep-alive, upstream reuse ---- */

static void test_get_keepalive_reuses_upstream(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {
        {OK_HELLO, 0, 0, HARNESS_KEEP},
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nX-Origin: a\r\n\r\nnope", 0, 0,
         HARNESS_KEEP},
    };
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 2);
    t->route[0] = a;
    t->nroute = 1;
    start(h);

    exchange(h, GET_A);
    assert_received(&h->client, OK_HELLO_DOWN);
    /* The second request names a field in Connection: both are hop-by-hop, neither goes up. */
    exchange(h, "GET /b HTTP/1.1\r\nHost: example.test\r\nConnection: X-Hop\r\nX-Hop: 1\r\n"
                "User-Agent: t\r\n\r\n");
    assert_received(&h->client, OK_HELLO_DOWN "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n"
                                              "X-Origin: a\r\nVia: 1.1 weir\r\n\r\nnope");
    assert_false(h->client.eof);

    /* One upstream connection carried both requests. */
    assert_int_equal(a->accepted, 1);
    assert_received(a->conns[0], GET_A_UP "GET /b HTTP/1.1\r\nHost: example.test\r\n"
                                          "User-Agent: t\r\nX-Forwarded-For: 127.0.0.1\r\n"
                                          "X-Forwarded-Proto: http\r\nVia: 1.1 weir\r\n\r\n");
    assert_int_equal(t->connects, 2);
    assert_false(t->reused[0]);
    assert_true(t->reused[1]);
    const struct weir__pool_stats *ps = weir__pool_stats(h->w->pool);
    assert_int_equal(ps->connects, 1);
    assert_int_equal(ps->reuses + ps->reuses_shared, 1);

    assert_int_equal(h->nlogs, 2);
    assert_int_equal(h->logs[0].status, 200);
    assert_int_equal(h->logs[0].request_index, 1);
    assert_int_equal(h->logs[0].body_sent, 5);
    assert_false(h->logs[0].has_err);
    assert_int_equal(h->logs[1].status, 404);
    assert_int_equal(h->logs[1].request_index, 2);
    assert_false(h->logs[1].has_err);
    assert_string_equal(t->order, "FPULFPUL");
    finish(h);
}

/* Two requests in one write: answered in order, over one upstream connection. */
static void test_pipelined_requests(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {
        {OK_HELLO, 0, 0, HARNESS_KEEP},
        {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo", 0, 0, HARNESS_KEEP},
    };
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 2);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    assert_int_equal(
        harness_client_send(h, GET_A "GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n", 0), 0);
    assert_int_equal(harness_run(h, 2, RUN_MS), 0);
    assert_received(&h->client, OK_HELLO_DOWN
                    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nVia: 1.1 weir\r\n\r\ntwo");
    assert_int_equal(a->accepted, 1);
    assert_received(a->conns[0], GET_A_UP GET_A_UP);
    assert_int_equal(h->logs[1].request_index, 2);
    finish(h);
}

/* ---- 2. response framings ---- */

#define CHUNKED_RESPONSE                                                                           \
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"                                        \
    "5;ext=1\r\nhello\r\n006\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
#define CHUNKED_HEAD_DOWN "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nVia: 1.1 weir\r\n\r\n"

/* Chunk extensions and padded sizes are re-encoded canonically; trailers are forwarded. */
static void test_chunked_response_reencoded(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {{CHUNKED_RESPONSE, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    t->route[0] = origin(h, "a", replies, 1);
    t->nroute = 1;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client,
                    CHUNKED_HEAD_DOWN "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    assert_int_equal(h->logs[0].body_sent, 11);
    finish(h);
}

/* The same response arriving three bytes at a time: the same body and trailers come out. */
static void test_chunked_response_in_pieces(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {{CHUNKED_RESPONSE, 0, 3, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    t->route[0] = origin(h, "a", replies, 1);
    t->nroute = 1;
    start(h);
    exchange(h, GET_A);
    assert_chunked(&h->client, CHUNKED_HEAD_DOWN, "hello world", "X-Trailer: t\r\n");
    assert_int_equal(h->logs[0].status, 200);
    assert_int_equal(h->logs[0].body_sent, 11);
    finish(h);
}

/* An HTTP/1.0 client cannot take chunked: the body is decoded and delimited by the close. */
static void test_http10_client_gets_close_delimited(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {{CHUNKED_RESPONSE, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 1);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    exchange(h, "GET /old HTTP/1.0\r\nHost: example.test\r\n\r\n");
    assert_received(&h->client,
                    "HTTP/1.1 200 OK\r\nVia: 1.1 weir\r\nConnection: close\r\n\r\nhello world");
    assert_true(h->client.eof);
    /* What goes up is HTTP/1.1 whatever the client spoke; Via says what the client spoke. */
    assert_received(a->conns[0], "GET /old HTTP/1.1\r\nHost: example.test\r\n"
                                 "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                                 "Via: 1.0 weir\r\n\r\n");
    finish(h);
}

/* An origin body delimited by its close reaches an HTTP/1.1 client chunked, on a kept
   connection; the upstream connection is not reused. */
static void test_close_delimited_response_to_http11_client(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {
        {"HTTP/1.1 200 OK\r\n\r\nuntil the end", 0, 0, HARNESS_CLOSE},
        {OK_HELLO, 0, 0, HARNESS_KEEP},
    };
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 2);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    exchange(h, GET_A);
    assert_chunked(&h->client, CHUNKED_HEAD_DOWN, "until the end", "");
    assert_false(h->client.eof);
    h->client.in_len = 0;
    exchange(h, GET_A);
    assert_received(&h->client, OK_HELLO_DOWN);
    assert_int_equal(a->accepted, 2);
    assert_false(t->reused[1]);
    finish(h);
}

/* ---- 3. request bodies ---- */

static void test_request_body_content_length(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {
        {"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 1);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    /* The client sends its request seven bytes at a time. */
    static const char req[] =
        "POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\n\r\nhello world";
    assert_int_equal(harness_end_send_pieces(&h->client, req, 0, 7, HARNESS_KEEP), 0);
    assert_int_equal(harness_run(h, 1, RUN_MS), 0);
    assert_received(&h->client,
                    "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nVia: 1.1 weir\r\n\r\n");
    assert_received(a->conns[0], "POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\n"
                                 "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                                 "Via: 1.1 weir\r\n\r\nhello world");
    assert_int_equal(h->logs[0].body_received, 11);
    finish(h);
}

#define CHUNKED_UPLOAD                                                                             \
    "POST /up HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"                \
    "4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nX-Sum: 9\r\n\r\n"
#define CHUNKED_UPLOAD_HEAD_UP                                                                     \
    "POST /up HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 127.0.0.1\r\n"                    \
    "X-Forwarded-Proto: http\r\nVia: 1.1 weir\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_request_body_chunked(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {{OK_HELLO, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 1);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    exchange(h, CHUNKED_UPLOAD);
    assert_received(&h->client, OK_HELLO_DOWN);
    assert_received(a->conns[0],
                    CHUNKED_UPLOAD_HEAD_UP "4\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Sum: 9\r\n\r\n");
    assert_int_equal(h->logs[0].body_received, 9);
    finish(h);
}

/* The same upload two bytes at a time: the origin decodes the same body and trailers. */
static void test_request_body_chunked_in_pieces(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {{OK_HELLO, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 1);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    assert_int_equal(harness_end_send_pieces(&h->client, CHUNKED_UPLOAD, 0, 2, HARNESS_KEEP), 0);
    assert_int_equal(harness_run(h, 1, RUN_MS), 0);
    assert_received(&h->client, OK_HELLO_DOWN);
    assert_chunked(a->conns[0], CHUNKED_UPLOAD_HEAD_UP, "wikipedia", "X-Sum: 9\r\n");
    finish(h);
}

/* ---- 4. Expect: 100-continue ---- */

#define CONTINUE "HTTP/1.1 100 Continue\r\n\r\n"

/* The client sends its body only once it has the 100: without it the run times out. */
static void client_waits_for_continue(struct harness_end *e)
{
    bool *sent = e->data;
    if (!*sent && e->in_len >= strlen(CONTINUE) && memcmp(e->in, CONTINUE, strlen(CONTINUE)) == 0) {
        *sent = true;
        assert_int_equal(harness_end_send(e, "ping", 4), 0);
    }
}

static void test_expect_100_continue(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 1);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    bool sent = false;
    h->client.on_data = client_waits_for_continue;
    h->client.data = &sent;
    exchange(h, "POST /e HTTP/1.1\r\nHost: example.test\r\nContent-Length: 4\r\n"
                "Expect: 100-continue\r\n\r\n");
    assert_true(sent);
    assert_received(&h->client,
                    CONTINUE "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 weir\r\n\r\nok");
    /* Expect is ours to answer: it does not go up. */
    assert_received(a->conns[0], "POST /e HTTP/1.1\r\nHost: example.test\r\nContent-Length: 4\r\n"
                                 "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                                 "Via: 1.1 weir\r\n\r\nping");
    finish(h);
}

/* ---- 5. interim responses ---- */

static void test_interim_responses_dropped(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {
        {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
         0, 9, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    t->route[0] = origin(h, "a", replies, 1);
    t->nroute = 1;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 weir\r\n\r\nok");
    finish(h);
}

/* n interim heads then a 200, in buf; returns its length. */
static size_t interims(char *buf, size_t cap, unsigned n)
{
    static const char one[] = "HTTP/1.1 100 Continue\r\n\r\n";
    static const char last[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    size_t len = 0;
    assert_true(n * (sizeof(one) - 1) + sizeof(last) <= cap);
    for (unsigned i = 0; i < n; i++) {
        memcpy(buf + len, one, sizeof(one) - 1);
        len += sizeof(one) - 1;
    }
    memcpy(buf + len, last, sizeof(last));
    return len + sizeof(last) - 1;
}

/* WEIR_MAX_INTERIM_RESPONSES are dropped; one more is a broken origin: 502. */
static void test_too_many_interim_responses(void **state)
{
    (void)state;
    static char at_cap[1024], over_cap[1024];
    struct harness_reply replies[] = {
        {at_cap, interims(at_cap, sizeof(at_cap), WEIR_MAX_INTERIM_RESPONSES), 0, HARNESS_KEEP},
        {over_cap, interims(over_cap, sizeof(over_cap), WEIR_MAX_INTERIM_RESPONSES + 1), 0,
         HARNESS_KEEP},
    };
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    t->route[0] = origin(h, "a", replies, 2);
    t->nroute = 1;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 weir\r\n\r\nok");
    h->client.in_len = 0;
    exchange(h, GET_A);
    assert_received(&h->client, ERROR_PAGE("502", "Bad Gateway",
                                           "11\r\nServer: weir\r\n\r\n"
                                           "Bad Gateway"));
    assert_false(h->client.eof); /* a whole error response keeps the connection */
    assert_int_equal(h->logs[1].status, 502);
    assert_true(h->logs[1].has_err);
    assert_int_equal(h->logs[1].err.type, WEIR_ERR_INVALID_HTTP);
    assert_int_equal(h->logs[1].err.source, WEIR_SRC_UPSTREAM);
    assert_int_equal(t->ewp_calls, 1);
    finish(h);
}

/* ---- 6. the retry loop: connect failures ---- */

/* fail_to_connect asks for a retry: upstream_peer runs again and the next peer answers. */
static void test_connect_failure_retried_on_next_peer(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {{OK_HELLO, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    t->route[0] = NULL; /* a path nobody listens on */
    t->route[1] = origin(h, "a", replies, 1);
    t->nroute = 2;
    t->ftc_set = 1;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, OK_HELLO_DOWN);
    assert_int_equal(t->peer_calls, 2);
    assert_int_equal(t->ftc_calls, 1);
    assert_true(t->ftc_preset[0]); /* max_retries (1) allows one */
    assert_int_equal(t->ftc_err.type, WEIR_ERR_CONNECT_ERROR);
    assert_int_equal(t->ftc_err.sys_errno, ENOENT);
    assert_int_equal(h->logs[0].retries, 1);
    assert_int_equal(h->logs[0].status, 200);
    assert_false(h->logs[0].has_err);
    assert_string_equal(t->order, "FPPUL");
    finish(h);
}

/* A unix socket bound in the harness directory that does not listen: connects are refused. */
static int refusing_socket(struct harness *h, const char *name)
{
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    int n = snprintf(un.sun_path, sizeof(un.sun_path), "%s/%s", h->dir, name);
    assert_true(n > 0 && (size_t)n < sizeof(un.sun_path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof(un)), 0);
    return fd;
}

static void close_refusing(struct harness *h, int fd, const char *name)
{
    char path[128];
    int n = snprintf(path, sizeof(path), "%s/%s", h->dir, name);
    assert_true(n > 0 && (size_t)n < sizeof(path));
    assert_int_equal(close(fd), 0);
    assert_int_equal(unlink(path), 0);
}

/* Retries as preset: after max_retries the client gets 502 and logging gets the error. */
static void test_connect_retries_exhausted(void **state)
{
    (void)state;
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    int fd = refusing_socket(h, "refuses");
    t->nowhere = "refuses";
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, ERROR_PAGE("502", "Bad Gateway",
                                           "11\r\nServer: weir\r\n\r\n"
                                           "Bad Gateway"));
    assert_int_equal(t->peer_calls, 2);
    assert_int_equal(t->ftc_calls, 2);
    assert_true(t->ftc_preset[0]);
    assert_false(t->ftc_preset[1]);
    assert_int_equal(h->logs[0].status, 502);
    assert_int_equal(h->logs[0].retries, 1);
    assert_true(h->logs[0].has_err);
    assert_int_equal(h->logs[0].err.type, WEIR_ERR_CONNECT_REFUSED);
    assert_int_equal(h->logs[0].err.source, WEIR_SRC_UPSTREAM);
    assert_int_equal(h->logs[0].err.sys_errno, ECONNREFUSED);
    close_refusing(h, fd, "refuses");
    finish(h);
}

/* A fail_to_connect that always asks for a retry is bounded by WEIR_MAX_CONNECT_RETRIES. */
static void test_forced_connect_retries_are_bounded(void **state)
{
    (void)state;
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    t->ftc_set = 1;
    start(h);
    exchange(h, GET_A);
    assert_int_equal(h->logs[0].status, 502);
    assert_int_equal(h->logs[0].retries, WEIR_MAX_CONNECT_RETRIES);
    assert_int_equal(t->peer_calls, WEIR_MAX_CONNECT_RETRIES + 1);
    assert_int_equal(t->ftc_calls, WEIR_MAX_CONNECT_RETRIES + 1);
    finish(h);
}

/* ---- 7. a stale pooled connection ---- */

/* The origin closes the pooled connection on receiving the second request, without a byte of
   answer: the request goes again on a fresh connection, and that is not a retry. */
static void test_stale_pooled_connection_retried_fresh(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {
        {OK_HELLO, 0, 0, HARNESS_KEEP},
        {NULL, 0, 0, HARNESS_CLOSE},
        {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes", 0, 0, HARNESS_KEEP},
    };
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 3);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    exchange(h, GET_A);
    h->client.in_len = 0;
    exchange(h, GET_A);
    assert_received(&h->client, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nVia: 1.1 weir\r\n\r\nyes");
    assert_int_equal(h->logs[1].retries, 0);
    assert_int_equal(h->logs[1].status, 200);
    assert_false(h->logs[1].has_err);
    /* error_while_proxy saw it, with the retry preset */
    assert_int_equal(t->ewp_calls, 1);
    assert_true(t->ewp_preset[0]);
    assert_int_equal(t->ewp_err.type, WEIR_ERR_CONNECTION_CLOSED);
    assert_int_equal(t->peer_calls, 2); /* the same peer, not chosen again */
    assert_int_equal(a->accepted, 2);
    assert_received(a->conns[0], GET_A_UP GET_A_UP);
    assert_received(a->conns[1], GET_A_UP);
    assert_int_equal(t->connects, 3);
    assert_true(t->reused[1]);
    assert_false(t->reused[2]);
    finish(h);
}

/* The same with a request body: once the body is under way the request cannot be replayed. */
static void test_stale_pooled_connection_with_body_not_replayed(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {
        {OK_HELLO, 0, 0, HARNESS_KEEP},
        {NULL, 0, 0, HARNESS_CLOSE},
    };
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 2);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    exchange(h, GET_A);
    h->client.in_len = 0;
    exchange(h, "PUT /p HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nabc");
    assert_received(&h->client, ERROR_PAGE("502", "Bad Gateway",
                                           "11\r\nServer: weir\r\n\r\n"
                                           "Bad Gateway"));
    assert_int_equal(t->ewp_calls, 1);
    assert_false(t->ewp_preset[0]);
    assert_int_equal(h->logs[1].err.type, WEIR_ERR_CONNECTION_CLOSED);
    assert_int_equal(a->accepted, 1);
    finish(h);
}

/* ---- 8. error_while_proxy retries ---- */

#define RESET_REPLY                                                                                \
    {                                                                                              \
        NULL, 0, 0, HARNESS_RESET                                                                  \
    }

static void test_error_while_proxy_retries_on_another_peer(void **state)
{
    (void)state;
    static const struct harness_reply resets[] = {RESET_REPLY};
    static const struct harness_reply ok[] = {{OK_HELLO, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", resets, 1);
    struct harness_origin *b = origin(h, "b", ok, 1);
    t->route[0] = a;
    t->route[1] = b;
    t->nroute = 2;
    t->ewp_set = 1;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, OK_HELLO_DOWN);
    assert_int_equal(t->ewp_calls, 1);
    assert_false(t->ewp_preset[0]); /* a fresh connection: not stale */
    assert_int_equal(t->ewp_err.type, WEIR_ERR_READ_ERROR);
    assert_int_equal(t->ewp_err.sys_errno, ECONNRESET);
    assert_int_equal(t->peer_calls, 2);
    assert_int_equal(h->logs[0].retries, 1);
    assert_false(h->logs[0].has_err);
    assert_int_equal(a->accepted, 1);
    assert_int_equal(b->accepted, 1);
    assert_received(b->conns[0], GET_A_UP);
    assert_string_equal(t->order, "FPUEPUL");
    finish(h);
}

/* Once a byte of response was seen the request is not replayed, whatever the hook asks. */
static void test_error_while_proxy_no_retry_after_response_byte(void **state)
{
    (void)state;
    static const struct harness_reply resets[] = {
        {"HTTP/1.1 200 OK\r\nContent-", 0, 0, HARNESS_RESET}};
    static const struct harness_reply ok[] = {{OK_HELLO, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", resets, 1);
    struct harness_origin *b = origin(h, "b", ok, 1);
    t->route[0] = a;
    t->route[1] = b;
    t->nroute = 2;
    t->ewp_set = 1;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, ERROR_PAGE("502", "Bad Gateway",
                                           "11\r\nServer: weir\r\n\r\n"
                                           "Bad Gateway"));
    assert_int_equal(t->ewp_calls, 1);
    assert_int_equal(t->peer_calls, 1);
    assert_int_equal(b->accepted, 0);
    assert_int_equal(h->logs[0].retries, 0);
    assert_int_equal(h->logs[0].err.type, WEIR_ERR_READ_ERROR);
    finish(h);
}

/* Nor past server.max_retries (0 here, from YAML). */
static void test_error_while_proxy_no_retry_past_max_retries(void **state)
{
    (void)state;
    static const struct harness_reply resets[] = {RESET_REPLY};
    static const struct harness_reply ok[] = {{OK_HELLO, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, "server:\n  max_retries: 0\n");
    assert_int_equal(h->cfg->server.max_retries, 0);
    struct harness_origin *a = origin(h, "a", resets, 1);
    struct harness_origin *b = origin(h, "b", ok, 1);
    t->route[0] = a;
    t->route[1] = b;
    t->nroute = 2;
    t->ewp_set = 1;
    start(h);
    exchange(h, GET_A);
    assert_int_equal(h->logs[0].status, 502);
    assert_int_equal(t->ewp_calls, 1);
    assert_int_equal(t->peer_calls, 1);
    assert_int_equal(b->accepted, 0);
    finish(h);
}

/*
 * An HTTP/1.0 request without Host gets one named after the peer (what goes up is HTTP/1.1).
 * After a retry on another peer, the request head hooks and logging see must still say what
 * was sent.
 */
static void test_retry_keeps_the_host_it_sent(void **state)
{
    (void)state;
    static const struct harness_reply resets[] = {RESET_REPLY};
    static const struct harness_reply ok[] = {{OK_HELLO, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "first-origin", resets, 1);
    struct harness_origin *b = origin(h, "b", ok, 1);
    t->route[0] = a;
    t->route[1] = b;
    t->nroute = 2;
    t->ewp_set = 1;
    start(h);
    exchange(h, "GET /x HTTP/1.0\r\n\r\n");
    assert_int_equal(h->logs[0].retries, 1);
    assert_int_equal(h->logs[0].status, 200);
    /* the Host field b received ... */
    const struct harness_end *e = b->conns[0];
    const char *f = memmem(e->in, e->in_len, "\r\nHost: ", 8);
    assert_non_null(f);
    f += 8;
    const char *eol = memmem(f, e->in_len - (size_t)(f - e->in), "\r\n", 2);
    assert_non_null(eol);
    char sent[64];
    assert_true((size_t)(eol - f) < sizeof(sent));
    memcpy(sent, f, (size_t)(eol - f));
    sent[eol - f] = '\0';
    /* ... is the one the request says it had (today the first peer's: the head is kept) */
    assert_bytes(t->log_host, t->log_host_len, sent);
    finish(h);
}

/* ---- 9. suspended hooks ---- */

static void test_pending_hook_resumes_from_timer(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {{OK_HELLO, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    t->route[0] = origin(h, "a", replies, 1);
    t->nroute = 1;
    t->rf_suspend = true;
    t->resume_ms = 5;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, OK_HELLO_DOWN);
    assert_int_equal(t->rf_calls, 1); /* the resume delivers the result: no second call */
    assert_string_equal(t->order, "FRPUL");
    finish(h);
}

/* The client hangs up while request_filter waits: the session ends (once) only after the hook
   resumes, so the hook's timer never points at freed memory. */
static void test_client_gone_while_hook_suspended(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {{OK_HELLO, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 1);
    t->route[0] = a;
    t->nroute = 1;
    t->rf_suspend = true;
    t->rf_close_client = true;
    t->resume_ms = 20;
    start(h);
    assert_int_equal(harness_client_send(h, GET_A, 0), 0);
    assert_int_equal(harness_run(h, 1, RUN_MS), 0);
    assert_int_equal(t->order[0], 'F');
    assert_int_equal(t->order[1], 'R');
    assert_int_equal(t->order[t->norder - 1], 'L');
    assert_int_equal(h->nlogs, 1);
    /* The hang-up is seen when the hook resumes: the request ends there, 499, and nothing goes
       upstream for a client that is gone. */
    assert_true(h->logs[0].has_err);
    assert_int_equal(h->logs[0].err.type, WEIR_ERR_CONNECTION_CLOSED);
    assert_int_equal(h->logs[0].err.source, WEIR_SRC_DOWNSTREAM);
    assert_int_equal(h->logs[0].status, 499);
    assert_null(memchr(t->order, 'P', t->norder));
    assert_int_equal(a->accepted, 0);
    assert_int_equal(harness_run(h, 0, 30), 0); /* nothing else comes */
    assert_int_equal(h->nlogs, 1);
    assert_int_equal(h->w->nconns, 0);
    finish(h);
}

/* The proxy closes the client connection (the worker stops) while request_filter waits: the
   connection waits as a zombie; the session ends when the hook resumes, and never goes up. */
static void test_connection_closed_while_hook_suspended(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {{OK_HELLO, 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", replies, 1);
    t->route[0] = a;
    t->nroute = 1;
    t->rf_suspend = true;
    t->close_all_ms = 1;
    t->resume_ms = 30;
    start(h);
    exchange(h, GET_A);
    assert_string_equal(t->order, "FCRL");
    assert_int_equal(t->logs_at_close_all, 0);
    assert_int_equal(h->nlogs, 1);
    assert_int_equal(t->peer_calls, 0);
    assert_int_equal(a->accepted, 0);
    assert_int_equal(h->client.in_len, 0);
    assert_true(h->client.eof);
    assert_null(h->w->zombies);
    /* Cut short: logging must not see a success. */
    assert_true(h->logs[0].has_err);
    assert_int_equal(h->logs[0].err.type, WEIR_ERR_CONNECTION_CLOSED);
    assert_int_equal(h->logs[0].err.source, WEIR_SRC_INTERNAL);
    finish(h);
}

/* The same while the session waits for the origin's answer: it ends at once, with an error,
   and its upstream connection is closed. */
static void test_connection_closed_while_waiting_for_upstream(void **state)
{
    (void)state;
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", NULL, 0); /* never answers */
    t->route[0] = a;
    t->nroute = 1;
    t->close_all_ms = 5;
    start(h);
    exchange(h, GET_A);
    assert_string_equal(t->order, "FPUCL");
    assert_int_equal(t->logs_at_close_all, 1);
    assert_int_equal(h->client.in_len, 0);
    assert_true(h->client.eof);
    assert_received(a->conns[0], GET_A_UP);
    assert_true(a->conns[0]->eof);
    assert_true(h->logs[0].has_err);
    assert_int_equal(h->logs[0].err.type, WEIR_ERR_CONNECTION_CLOSED);
    assert_int_equal(h->logs[0].err.source, WEIR_SRC_INTERNAL);
    finish(h);
}

/* ---- 10. local responses and fail_to_proxy ---- */

static void test_request_filter_answers_locally(void **state)
{
    (void)state;
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", NULL, 0);
    t->route[0] = a;
    t->nroute = 1;
    t->rf_local = true;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, ERROR_PAGE("403", "Forbidden",
                                           "7\r\nServer: weir\r\n\r\n"
                                           "denied\n"));
    assert_false(h->client.eof);
    assert_int_equal(t->peer_calls, 0);
    assert_int_equal(a->accepted, 0);
    assert_int_equal(h->logs[0].status, 403);
    assert_false(h->logs[0].has_err);
    assert_string_equal(t->order, "FL");
    finish(h);
}

static void test_fail_to_proxy_chooses_the_answer(void **state)
{
    (void)state;
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    h->hooks.fail_to_proxy = ftp_hook;
    t->ftc_set = 0;
    t->ftp_status = 503;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, ERROR_PAGE("503", "Service Unavailable",
                                           "19\r\nServer: weir\r\n\r\nService Unavailable"));
    assert_int_equal(t->ftp_calls, 1);
    assert_int_equal(t->ftp_err.type, WEIR_ERR_CONNECT_ERROR);
    assert_int_equal(t->ftp_err.source, WEIR_SRC_UPSTREAM);
    assert_int_equal(h->logs[0].status, 503);
    assert_true(h->logs[0].has_err);
    /* Next request on the same connection: the hook answers itself. */
    h->client.in_len = 0;
    t->ftp_respond = true;
    exchange(h, GET_A);
    assert_received(&h->client, ERROR_PAGE("451", "Unavailable For Legal Reasons",
                                           "6\r\nServer: weir\r\n\r\nlegal\n"));
    assert_int_equal(h->logs[1].status, 451);
    assert_int_equal(t->ftp_calls, 2);
    finish(h);
}

/* ---- 11. broken and slow origins ---- */

static void test_invalid_response_head_is_502(void **state)
{
    (void)state;
    static const struct harness_reply replies[] = {
        {"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", 0, 0, HARNESS_KEEP}};
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    t->route[0] = origin(h, "a", replies, 1);
    t->nroute = 1;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, ERROR_PAGE("502", "Bad Gateway",
                                           "11\r\nServer: weir\r\n\r\n"
                                           "Bad Gateway"));
    assert_int_equal(h->logs[0].err.type, WEIR_ERR_INVALID_HTTP);
    assert_int_equal(h->logs[0].err.source, WEIR_SRC_UPSTREAM);
    assert_int_equal(t->ewp_calls, 1);
    finish(h);
}

static void test_upstream_read_timeout_is_504(void **state)
{
    (void)state;
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", NULL, 0); /* never answers */
    t->route[0] = a;
    t->nroute = 1;
    t->read_timeout_ms = 50;
    start(h);
    exchange(h, GET_A);
    assert_received(&h->client, ERROR_PAGE("504", "Gateway Timeout",
                                           "15\r\nServer: weir\r\n\r\n"
                                           "Gateway Timeout"));
    assert_int_equal(h->logs[0].err.type, WEIR_ERR_READ_TIMEOUT);
    assert_int_equal(t->ewp_calls, 1);
    assert_int_equal(t->ewp_err.type, WEIR_ERR_READ_TIMEOUT);
    assert_received(a->conns[0], GET_A_UP);
    finish(h);
}

/* ---- 12. bad request bodies ---- */

static void test_client_body_bad_chunk_size_is_400(void **state)
{
    (void)state;
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    struct harness_origin *a = origin(h, "a", NULL, 0);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    exchange(h, "POST /c HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                "zz\r\nhello\r\n0\r\n\r\n");
    assert_received(&h->client, ERROR_PAGE("400", "Bad Request",
                                           "12\r\nServer: weir\r\n"
                                           "Connection: close\r\n\r\n"
                                           "Bad Request\n"));
    assert_true(h->client.eof);
    assert_int_equal(h->logs[0].status, 400);
    /* Answered by weir, but a failed request: logging (and the access log) must say why. */
    assert_true(h->logs[0].has_err);
    assert_int_equal(h->logs[0].err.type, WEIR_ERR_INVALID_HTTP);
    assert_int_equal(h->logs[0].err.source, WEIR_SRC_DOWNSTREAM);
    assert_int_equal(harness_message_len(a->conns[0]->in, a->conns[0]->in_len), 0);
    finish(h);
}

static void test_client_body_over_limit_while_streaming_is_413(void **state)
{
    (void)state;
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    h->cfg->server.limits.max_body_bytes = 8;
    struct harness_origin *a = origin(h, "a", NULL, 0);
    t->route[0] = a;
    t->nroute = 1;
    start(h);
    exchange(h, "POST /c HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                "6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n");
    assert_received(&h->client, ERROR_PAGE("413", "Content Too Large",
                                           "18\r\nServer: weir\r\n"
                                           "Connection: close\r\n\r\n"
                                           "Payload Too Large\n"));
    assert_true(h->client.eof);
    assert_int_equal(h->logs[0].status, 413);
    assert_true(h->logs[0].has_err);
    assert_int_equal(h->logs[0].err.type, WEIR_ERR_INVALID_HTTP);
    assert_int_equal(h->logs[0].err.source, WEIR_SRC_DOWNSTREAM);
    assert_int_equal(h->logs[0].body_received, 6); /* the first chunk had gone up */
    assert_int_equal(harness_message_len(a->conns[0]->in, a->conns[0]->in_len), 0);
    finish(h);
}

/* A declared Content-Length over the limit is refused before any hook but new_ctx. */
static void test_content_length_over_limit_is_413_at_once(void **state)
{
    (void)state;
    struct tc *t = &the_tc;
    struct harness *h = setup(t, NULL);
    h->cfg->server.limits.max_body_bytes = 8;
    start(h);
    exchange(h, "POST /c HTTP/1.1\r\nHost: example.test\r\nContent-Length: 9\r\n\r\n123456789");
    assert_int_equal(h->logs[0].status, 413);
    assert_true(h->logs[0].has_err);
    assert_int_equal(h->logs[0].err.type, WEIR_ERR_INVALID_HTTP);
    assert_int_equal(h->logs[0].err.source, WEIR_SRC_DOWNSTREAM);
    assert_true(h->client.eof);
    assert_string_equal(t->order, "L");
    finish(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_get_keepalive_reuses_upstream, teardown),
        cmocka_unit_test_teardown(test_pipelined_requests, teardown),
        cmocka_unit_test_teardown(test_chunked_response_reencoded, teardown),
        cmocka_unit_test_teardown(test_chunked_response_in_pieces, teardown),
        cmocka_unit_test_teardown(test_http10_client_gets_close_delimited, teardown),
        cmocka_unit_test_teardown(test_close_delimited_response_to_http11_client, teardown),
        cmocka_unit_test_teardown(test_request_body_content_length, teardown),
        cmocka_unit_test_teardown(test_request_body_chunked, teardown),
        cmocka_unit_test_teardown(test_request_body_chunked_in_pieces, teardown),
        cmocka_unit_test_teardown(test_expect_100_continue, teardown),
        cmocka_unit_test_teardown(test_interim_responses_dropped, teardown),
        cmocka_unit_test_teardown(test_too_many_interim_responses, teardown),
        cmocka_unit_test_teardown(test_connect_failure_retried_on_next_peer, teardown),
        cmocka_unit_test_teardown(test_connect_retries_exhausted, teardown),
        cmocka_unit_test_teardown(test_forced_connect_retries_are_bounded, teardown),
        cmocka_unit_test_teardown(test_stale_pooled_connection_retried_fresh, teardown),
        cmocka_unit_test_teardown(test_stale_pooled_connection_with_body_not_replayed, teardown),
        cmocka_unit_test_teardown(test_error_while_proxy_retries_on_another_peer, teardown),
        cmocka_unit_test_teardown(test_error_while_proxy_no_retry_after_response_byte, teardown),
        cmocka_unit_test_teardown(test_error_while_proxy_no_retry_past_max_retries, teardown),
        cmocka_unit_test_teardown(test_retry_keeps_the_host_it_sent, teardown),
        cmocka_unit_test_teardown(test_pending_hook_resumes_from_timer, teardown),
        cmocka_unit_test_teardown(test_client_gone_while_hook_suspended, teardown),
        cmocka_unit_test_teardown(test_connection_closed_while_hook_suspended, teardown),
        cmocka_unit_test_teardown(test_connection_closed_while_waiting_for_upstream, teardown),
        cmocka_unit_test_teardown(test_request_filter_answers_locally, teardown),
        cmocka_unit_test_teardown(test_fail_to_proxy_chooses_the_answer, teardown),
        cmocka_unit_test_teardown(test_invalid_response_head_is_502, teardown),
        cmocka_unit_test_teardown(test_upstream_read_timeout_is_504, teardown),
        cmocka_unit_test_teardown(test_client_body_bad_chunk_size_is_400, teardown),
        cmocka_unit_test_teardown(test_client_body_over_limit_while_streaming_is_413, teardown),
        cmocka_unit_test_teardown(test_content_length_over_limit_is_413_at_once, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
