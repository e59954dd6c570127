/*
 * libFuzzer target: the real proxy on one worker, between a scripted client and a scripted
 * origin. Nothing of the connection's loop is re-implemented here: conn.c, session.c,
 * upstream.c, pipe.c, forward.c and h1_framing.c run as in the server, on a real event loop,
 * through the unit tests' harness (tests/unit/proxy/harness.c): the client is one end of an
 * AF_UNIX socketpair, the origin an AF_UNIX listener on the same loop.
 *
 * The input is a script:
 *
 *   byte 0   flags: bits 0-1 the configuration (see configure; 3 buffers responses through a
 *            4 KiB spool spilling to /tmp), bit 2 the client half-closes
 *            after its last byte, bit 3 it closes, bits 4-5 a jump of the clock at the end
 *            (none, 2.5 s, 61 s, 1 h: linger, body, header and upstream timeouts fire),
 *            bit 6 request_filter suspends every request (resumed at the next step), bit 7
 *            the origin answers without waiting for a request
 *   byte 1   the seed of the schedule (which side moves next, how many bytes)
 *   byte 2   the largest write, in bytes (0: each side writes all it has at once)
 *   then     the client's byte stream, up to the first marker
 *   then     the origin's responses, each "\xff" K|C|X then its bytes: after it the origin
 *            keeps the connection (K), closes it (C) or closes it with the next request
 *            unread (X, a reset); after C or X the next response goes to the next connection
 *
 * Between any two writes the loop runs until it is quiescent (weir__loop_run_once until a turn
 * runs no callback), so a run depends on the input alone. The oracle, checked after each run:
 *
 *   - the loop always becomes quiescent within a bounded number of turns (no livelock);
 *   - every request head the origin receives is strict HTTP/1.1 (token method and field
 *     names, no CR, LF, NUL or other control byte in a field, one Host, no hop-by-hop field
 *     and none the client's Connection field named, Content-Length or chunked but not both,
 *     canonical chunked framing with strict trailers), and carries the tag this driver's
 *     upstream_request_filter set: a request that reaches the origin without it, or more
 *     often than weir connected for it, was smuggled;
 *   - the client receives exactly one response per request weir logged (interim 100s
 *     aside), in order, with the status logging saw, each well framed; after them at most
 *     one rejection of an unparseable head, and nothing after a Connection: close;
 *   - every session ends with exactly one logging call; a session without a response has
 *     an error;
 *   - when the connections are closed, the worker holds no connection, no zombie and no
 *     I/O buffer (LSan checks the heap after every input besides).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/log.h"
#include "harness.h"

#define MAX_INPUT  16384
#define MAX_RESP   32
#define MAX_REQ    256 /* requests judged per run; more and the client side is not */
#define MAX_TOKENS 4
#define MAX_TURNS  1000 /* turns one settle may take before it counts as a livelock */
#define BUF_BOUND  4    /* I/O buffers one client connection and its upstream may hold */

static void trace(void);

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        trace();                                                                                   \
        (void)fprintf(stderr, "fuzz_proxy: " __VA_ARGS__);                                         \
        (void)fputc('\n', stderr);                                                                 \
        abort();                                                                                   \
    } while (0)

#include "strict_h1.h" /* after FAIL, which it uses */

struct script_resp {
    const uint8_t *p;
    size_t len;
    char after; /* K, C or X */
};

/* What the hooks saw of one request (indexed by weir_session_request_index). */
struct req_rec {
    bool logged;
    bool err;
    bool head_method;
    int status;
    unsigned attempts;           /* connected_to_upstream calls: heads weir sent up */
    unsigned seen;               /* heads carrying this request's tag the origin received */
    char tokens[MAX_TOKENS][24]; /* fields the client's Connection named */
    unsigned ntokens;
};

struct fz {
    struct harness *h;
    struct harness_origin *o;
    uint8_t flags;
    uint64_t rng;
    unsigned maxpiece;
    const uint8_t *cli;
    size_t cli_len, cli_off;
    bool cli_end_done; /* the client's half-close or close after its bytes was done */
    bool cli_closed;   /* the client end was closed by us: what it had not read is lost */
    struct script_resp resp[MAX_RESP];
    size_t nresp, ri, roff;
    unsigned conn;                       /* the origin connection responses go to */
    unsigned answered[HARNESS_ENDS_MAX]; /* responses completed on each connection */
    struct req_rec req[MAX_REQ + 1];
    unsigned order[MAX_REQ]; /* request indexes in logging order */
    unsigned nlogged;
    struct weir_session *pending[4];
    unsigned npending;
    bool overflow; /* more than MAX_REQ requests: the client side is not judged */
};

static struct fz F;

/* ---- small helpers ---- */

static uint64_t rnd(void)
{
    F.rng ^= F.rng << 13;
    F.rng ^= F.rng >> 7;
    F.rng ^= F.rng << 17;
    return F.rng;
}

static size_t piece(size_t left)
{
    size_t n = F.maxpiece ? (size_t)(rnd() % F.maxpiece) + 1 : left;
    return n < left ? n : left;
}

/* ---- what the origin receives ---- */

/* What walk_upstream collects from one head's fields (strict_request_head's callback). */
struct head_fields {
    const char *names[128];
    size_t nlens[128];
    unsigned nnames;
    unsigned tags, tag;
};

static void note_field(void *arg, const char *n, size_t nl, const char *v, size_t vl)
{
    struct head_fields *hf = arg;
    if (hf->nnames < 128) {
        hf->names[hf->nnames] = n;
        hf->nlens[hf->nnames++] = nl;
    }
    if (ieq(n, nl, "X-Fuzz-Req")) {
        uint64_t x;
        hf->tags++;
        if (!parse_u64(v, vl, 10, &x) || x == 0) {
            FAIL("origin: a request weir did not tag: X-Fuzz-Req \"%.*s\"", (int)vl, v);
        }
        hf->tag = x <= MAX_REQ ? (unsigned)x : 0; /* 0: past what is recorded */
    }
}

/*
 * Walks the requests on one origin connection, checking each head strictly. Returns the
 * number of complete heads; with count_only, records nothing (used to pace the origin).
 */
static unsigned walk_upstream(const struct harness_end *e, bool count_only)
{
    const char *p = e->in, *end = e->in + e->in_len;
    unsigned heads = 0;
    unsigned last_tag = 0;
    while (p < end) {
        const char *he = find_head_end(p, end);
        if (he == NULL) {
            break;
        }
        heads++;
        struct head_fields hf = {0};
        struct strict_head sh;
        strict_request_head(p, he, "origin", 0, note_field, &hf, &sh);
        if (hf.tags != 1) {
            FAIL("origin: request %u with %u tags", heads, hf.tags);
        }
        unsigned tag = hf.tag;
        if (!count_only && tag != 0) {
            struct req_rec *r = &F.req[tag];
            for (unsigned i = 0; i < r->ntokens; i++) {
                for (unsigned j = 0; j < hf.nnames; j++) {
                    /* Upgrade is weir's own upgrade field (strict_request_head checked it) */
                    if (ieq(hf.names[j], hf.nlens[j], r->tokens[i]) &&
                        strcasecmp(r->tokens[i], "upgrade") != 0) {
                        FAIL("origin: field %s named by Connection was forwarded", r->tokens[i]);
                    }
                }
            }
            if (++r->seen > r->attempts) {
                FAIL("origin: request %u arrived %u times, sent %u times (smuggled)", tag, r->seen,
                     r->attempts);
            }
            if (tag < last_tag) {
                FAIL("origin: request %u after request %u on one connection", tag, last_tag);
            }
        }
        last_tag = tag;
        p = he;
        if (sh.chunked) {
            p = walk_chunked(p, end, "origin");
        } else if (sh.has_cl) {
            p = (uint64_t)(end - p) >= sh.cl ? p + sh.cl : NULL;
        }
        if (p == NULL) {
            break; /* the body is still arriving */
        }
    }
    return heads;
}

/* ---- what the client receives ---- */

struct resp_info {
    int status;
    bool close;
    const char *end; /* NULL: incomplete */
};

/* Parses one response at p (head_method: no body). FAILs when malformed. */
static struct resp_info walk_response(const char *p, const char *end, bool head_method)
{
    struct resp_info ri = {0};
    const char *he = find_head_end(p, end);
    if (he == NULL) {
        return ri;
    }
    const char *eol = find_crlf(p, he);
    if (eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') ||
        p[8] != ' ' || p[12] != ' ') {
        FAIL("client: bad status line \"%.*s\"", (int)(eol - p), p);
    }
    uint64_t st;
    if (!parse_u64(p + 9, 3, 10, &st)) {
        FAIL("client: bad status");
    }
    ri.status = (int)st;
    bool has_cl = false, chunked = false;
    uint64_t cl = 0;
    const char *line = eol + 2;
    while (line < he - 2) {
        eol = find_crlf(line, he);
        const char *n, *v;
        size_t nl, vl;
        if (!strict_field(line, eol, &n, &nl, &v, &vl)) {
            FAIL("client: bad field line \"%.*s\"", (int)(eol - line), line);
        }
        if (ieq(n, nl, "Content-Length")) {
            if (has_cl || !parse_u64(v, vl, 10, &cl)) {
                FAIL("client: bad or repeated Content-Length");
            }
            has_cl = true;
        } else if (ieq(n, nl, "Transfer-Encoding")) {
            if (chunked || !ieq(v, vl, "chunked")) {
                FAIL("client: Transfer-Encoding \"%.*s\"", (int)vl, v);
            }
            chunked = true;
        } else if (ieq(n, nl, "Connection")) {
            ri.close = ri.close || ieq(v, vl, "close");
        } else if (ieq(n, nl, "Keep-Alive") || (ieq(n, nl, "Upgrade") && st != 101) ||
                   (nl > 6 && strncasecmp(n, "Proxy-", 6) == 0)) {
            FAIL("client: hop-by-hop field %.*s forwarded", (int)nl, n);
        }
        line = eol + 2;
    }
    if (has_cl && chunked) {
        FAIL("client: Content-Length and chunked");
    }
    if (st == 101) {
        /* A WebSocket upgrade: what follows is the tunnel's bytes, until close. */
        ri.close = true;
        ri.end = end;
    } else if (head_method || st < 200 || st == 204 || st == 304) {
        ri.end = he;
    } else if (chunked) {
        ri.end = walk_chunked(he, end, "client");
    } else if (has_cl) {
        ri.end = (uint64_t)(end - he) >= cl ? he + cl : NULL;
    } else {
        /* Until close: whatever arrived may be all of it, the client cannot tell. */
        ri.close = true;
        ri.end = end;
    }
    return ri;
}

static void check_client(void)
{
    const struct harness_end *c = &F.h->client;
    if (c->err == -ENOBUFS || F.overflow) {
        return; /* more than the end keeps, or than is recorded: nothing to judge */
    }
    const char *p = c->in, *end = c->in + c->in_len;
    bool closed = false; /* a response said Connection: close (or was close-delimited) */
    for (unsigned k = 0; k < F.nlogged; k++) {
        const struct req_rec *r = &F.req[F.order[k]];
        if (r->status == 0) {
            if (!r->err) {
                FAIL("request %u ended without a response and without an error", F.order[k]);
            }
            struct resp_info ri = walk_response(p, end, false);
            if (ri.end != NULL && ri.status == 100) {
                p = ri.end; /* the 100 Continue it had before it failed */
            }
            continue;
        }
        if (closed) {
            FAIL("request %u answered after a response that closed", F.order[k]);
        }
        struct resp_info ri;
        for (;;) {
            ri = walk_response(p, end, r->head_method);
            if (ri.end == NULL || ri.status != 100) {
                break;
            }
            p = ri.end; /* 100 Continue */
        }
        if (ri.end == NULL) {
            if (!r->err && !F.cli_closed) {
                FAIL("request %u (status %d) logged as a success, its response incomplete (%zu "
                     "bytes left)",
                     F.order[k], r->status, (size_t)(end - p));
            }
            return; /* cut short: nothing can follow */
        }
        if (ri.status != r->status) {
            FAIL("request %u: the client got %d, logging saw %d", F.order[k], ri.status, r->status);
        }
        closed = ri.close;
        p = ri.end;
    }
    if (p < end) {
        /* A rejected head (conn.c answers it without a session), then nothing. */
        struct resp_info ri = walk_response(p, end, false);
        if (closed || ri.end == NULL || !ri.close || ri.status < 400 || ri.end != end) {
            FAIL("client: %zu bytes after the %u responses logged", (size_t)(end - p), F.nlogged);
        }
    }
}

/* ---- the hooks ---- */

static enum weir_hook_result peer_hook(struct weir_session *s, void *ctx, struct weir_peer *peer)
{
    return harness_peer(peer, F.o) == 0 ? WEIR_HOOK_CONTINUE : WEIR_HOOK_ERROR;
}

static struct req_rec *rec_of(struct weir_session *s)
{
    unsigned i = weir_session_request_index(s);
    if (i >= 1 && i <= MAX_REQ) {
        return &F.req[i];
    }
    F.overflow = true;
    return NULL;
}

/* Notes the fields the client's Connection fields name (the origin must not see them). */
static enum weir_hook_result early_hook(struct weir_session *s, void *ctx)
{
    struct req_rec *r = rec_of(s);
    const struct weir_headers *hs = weir_req_headers_const(weir_session_req(s));
    unsigned nconn = 0;
    for (size_t i = 0; i < weir_headers_count(hs); i++) {
        const struct weir_header *f = weir_headers_at(hs, i);
        nconn += ieq(f->name.base, f->name.len, "Connection");
    }
    if (nconn > 8) {
        /* Past 8 Connection fields the names of the rest stay (forward.c, SECURITY.md's
           bound): the oracle judges only messages within it. */
        return WEIR_HOOK_CONTINUE;
    }
    for (size_t i = 0; r != NULL && i < weir_headers_count(hs); i++) {
        const struct weir_header *f = weir_headers_at(hs, i);
        if (!ieq(f->name.base, f->name.len, "Connection")) {
            continue;
        }
        const char *v = f->value.base, *ve = v + f->value.len;
        while (v < ve) {
            /* A list element: OWS token OWS; an element that is not a token names nothing. */
            while (v < ve && (*v == ',' || *v == ' ' || *v == '\t')) {
                v++;
            }
            const char *t = v;
            while (v < ve && *v != ',') {
                v++;
            }
            const char *te = v;
            while (te > t && (te[-1] == ' ' || te[-1] == '\t')) {
                te--;
            }
            size_t n = (size_t)(te - t);
            for (const char *q = t; q < te; q++) {
                n = tchar((unsigned char)*q) ? n : 0;
            }
            bool known = ieq(t, n, "close") || ieq(t, n, "keep-alive") || ieq(t, n, "Host") ||
                         ieq(t, n, "Content-Length") || ieq(t, n, "Transfer-Encoding") ||
                         ieq(t, n, "X-Fuzz-Req") || ieq(t, n, "X-Forwarded-For") ||
                         ieq(t, n, "X-Forwarded-Proto") || ieq(t, n, "Via");
            if (n > 0 && n < sizeof(r->tokens[0]) && !known && r->ntokens < MAX_TOKENS) {
                memcpy(r->tokens[r->ntokens], t, n);
                r->tokens[r->ntokens++][n] = '\0';
            }
        }
    }
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result request_filter_hook(struct weir_session *s, void *ctx)
{
    if ((F.flags & 3) == 3) {
        /* Response buffering through a spool of one chunk, spilling into a small file. */
        static const struct weir_cfg_buffering b = {true, 4096, "/tmp", 65536};
        if (weir_session_set_response_buffering(s, &b) != 0) {
            return WEIR_HOOK_ERROR;
        }
    }
    if ((F.flags & 0x40) == 0 || F.npending >= sizeof(F.pending) / sizeof(F.pending[0])) {
        return WEIR_HOOK_CONTINUE;
    }
    F.pending[F.npending++] = s;
    return WEIR_HOOK_PENDING;
}

static enum weir_hook_result connected_hook(struct weir_session *s, void *ctx,
                                            const struct weir_peer *peer, bool reused)
{
    struct req_rec *r = rec_of(s);
    if (r != NULL) {
        r->attempts++;
    }
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result upstream_request_hook(struct weir_session *s, void *ctx,
                                                   struct weir_req *req)
{
    char tag[16];
    (void)snprintf(tag, sizeof(tag), "%u", weir_session_request_index(s));
    return weir_headers_set(weir_req_headers(req), "X-Fuzz-Req", tag) == 0 ? WEIR_HOOK_CONTINUE
                                                                           : WEIR_HOOK_ERROR;
}

static void logging_hook(struct weir_session *s, void *ctx, const struct weir_error *err)
{
    struct req_rec *r = rec_of(s);
    if (r == NULL) {
        return;
    }
    if (r->logged) {
        FAIL("request %u logged twice", weir_session_request_index(s));
    }
    r->logged = true;
    r->err = err != NULL;
    r->status = weir_session_status(s);
    struct weir_iov m = weir_req_method(weir_session_req(s));
    r->head_method = m.len == 4 && memcmp(m.base, "HEAD", 4) == 0;
    F.order[F.nlogged++] = weir_session_request_index(s);
    for (unsigned i = 0; i < F.npending; i++) {
        if (F.pending[i] == s) {
            FAIL("a suspended session was logged");
        }
    }
}

/* ---- the driver ---- */

static void origin_data(struct harness_end *e)
{
    (void)e; /* bytes are in e->in; the script decides when to answer */
}

static void settle(void)
{
    int rc = harness_settle(F.h, MAX_TURNS);
    if (rc < 0) {
        FAIL("the loop did not become quiescent in %d turns (%d)", MAX_TURNS, rc);
    }
    if (F.h->w->bufs.outstanding > BUF_BOUND) {
        FAIL("%llu I/O buffers held", (unsigned long long)F.h->w->bufs.outstanding);
    }
}

static void resume_pending(void)
{
    while (F.npending > 0) {
        struct weir_session *s = F.pending[--F.npending];
        weir_session_resume(s, WEIR_HOOK_CONTINUE);
    }
}

/* The origin connection the current response goes to, once it may go; NULL otherwise. */
static struct harness_end *origin_ready(void)
{
    while (F.ri < F.nresp) {
        if (F.conn >= F.o->accepted || F.conn >= HARNESS_ENDS_MAX) {
            return NULL;
        }
        struct harness_end *e = F.o->conns[F.conn];
        if (e->fd < 0 || e->eof) {
            /* The proxy closed it: what was left of this response goes nowhere. */
            harness_end_close(e);
            if (F.roff > 0) {
                F.ri++;
                F.roff = 0;
            }
            F.conn++;
            continue;
        }
        e->peek = F.resp[F.ri].after == 'X';
        if ((F.flags & 0x80) || F.roff > 0 || walk_upstream(e, true) > F.answered[F.conn]) {
            return e;
        }
        return NULL;
    }
    return NULL;
}

static void origin_step(struct harness_end *e)
{
    const struct script_resp *r = &F.resp[F.ri];
    size_t n = piece(r->len - F.roff);
    if (n > 0 && harness_end_send(e, (const char *)r->p + F.roff, n) != 0) {
        harness_end_close(e); /* the proxy is gone: origin_ready moves on */
        return;
    }
    F.roff += n;
    if (F.roff < r->len) {
        return;
    }
    F.answered[F.conn]++;
    F.ri++;
    F.roff = 0;
    if (r->after != 'K') {
        harness_end_close(e);
        F.conn++;
    }
}

static bool client_can(void)
{
    return F.h->client.fd >= 0 && (F.cli_off < F.cli_len || !F.cli_end_done);
}

static void client_step(void)
{
    struct harness_end *c = &F.h->client;
    if (F.cli_off < F.cli_len) {
        size_t n = piece(F.cli_len - F.cli_off);
        if (harness_client_send(F.h, (const char *)F.cli + F.cli_off, n) != 0) {
            F.cli_off = F.cli_len; /* the proxy closed: the rest goes nowhere */
        } else {
            F.cli_off += n;
        }
        return;
    }
    F.cli_end_done = true;
    if (F.flags & 0x08) {
        harness_end_close(c);
        F.cli_closed = true;
    } else if (F.flags & 0x04) {
        (void)shutdown(c->fd, SHUT_WR);
    }
}

/* Moves whichever side the schedule picks until neither can. */
static void run_script(void)
{
    for (unsigned steps = 0; steps < 2 * MAX_INPUT; steps++) {
        resume_pending();
        settle();
        struct harness_end *e = origin_ready();
        bool cli = client_can();
        if (e == NULL && !cli) {
            return;
        }
        if (e != NULL && (!cli || (rnd() & 1))) {
            origin_step(e);
        } else {
            client_step();
        }
        settle();
    }
    FAIL("the script did not end");
}

static void parse_script(const uint8_t *d, size_t n)
{
    size_t i = 0;
    while (i < n && !(d[i] == 0xff && i + 1 < n && strchr("KCX", d[i + 1]) && d[i + 1])) {
        i++;
    }
    F.cli = d;
    F.cli_len = i;
    while (i < n && F.nresp < MAX_RESP) {
        struct script_resp *r = &F.resp[F.nresp++];
        r->after = (char)d[i + 1];
        i += 2;
        r->p = d + i;
        while (i < n && !(d[i] == 0xff && i + 1 < n && strchr("KCX", d[i + 1]) && d[i + 1])) {
            i++;
        }
        r->len = (size_t)(d + i - r->p);
    }
}

/* Bits 0-1 of the flags: which limits and features the run has. */
static void configure(struct weir_config *cfg, unsigned variant)
{
    struct weir_cfg_server *sc = &cfg->server;
    switch (variant) {
    case 1: /* tight limits: heap head buffers, 414/431/413, bodies through a small buffer */
        sc->limits.buffer_size = 1024;
        sc->limits.max_header_bytes = 256;
        sc->limits.max_request_line = 64;
        sc->limits.max_headers = 6;
        sc->limits.max_body_bytes = 100;
        break;
    case 2: /* no upstream keep-alive, no forwarded fields, no retries */
        sc->upstream_keepalive = 0;
        sc->x_forwarded_for = false;
        sc->x_forwarded_proto = false;
        sc->via = false;
        sc->max_retries = 0;
        break;
    case 3: /* two requests per connection, more retries, responses buffered (the hook) */
        sc->limits.max_requests_per_connection = 2;
        sc->max_retries = 2;
        break;
    default:
        break;
    }
}

/* FUZZ_PROXY_TRACE=1: what each side received and what logging saw, to read a run. */
static bool tracing(void)
{
    static int on = -1;
    if (on < 0) {
        const char *env = getenv("FUZZ_PROXY_TRACE");
        on = env != NULL && env[0] == '1';
        /* Otherwise only errors: an info line per input would cost more than the run. */
        (void)weir__log_open(NULL, on ? WEIR_LOG_DEBUG : WEIR_LOG_ERROR);
    }
    return on;
}

static void trace(void)
{
    if (!tracing() || F.h == NULL) {
        return;
    }
    const struct harness *h = F.h;
    (void)fprintf(stderr, "--- client got %zu bytes:\n%.*s\n", h->client.in_len,
                  (int)h->client.in_len, h->client.in);
    for (unsigned i = 0; i < h->nends; i++) {
        (void)fprintf(stderr, "--- origin connection %u got %zu bytes:\n%.*s\n", i,
                      h->ends[i].in_len, (int)h->ends[i].in_len, h->ends[i].in);
    }
    for (unsigned k = 0; k < F.nlogged; k++) {
        const struct req_rec *r = &F.req[F.order[k]];
        (void)fprintf(stderr, "--- request %u: status %d, error %d, sent up %u times\n", F.order[k],
                      r->status, r->err, r->attempts);
    }
}

static void finish(void)
{
    struct harness *h = F.h;
    resume_pending();
    settle();
    /*
     * The client first: a request still in flight ends as cut short by its client, before the
     * origin's close could complete a close-delimited response the client never saw end.
     */
    harness_end_close(&h->client);
    settle();
    /*
     * Then every origin connection, including those a retry opens meanwhile (a request whose
     * pooled connection closed goes up again on a fresh one), then the clock past every
     * timeout: a request waiting for an origin that will never answer ends by its timeout.
     */
    for (unsigned round = 0; round < 4; round++) {
        unsigned n = h->nends;
        for (unsigned i = 0; i < n; i++) {
            harness_end_close(&h->ends[i]);
        }
        settle();
        resume_pending(); /* zombies: sessions whose client went while their hook waited */
        settle();
        weir__loop_skew_clock(h->loop, 3600000);
        settle();
        if (h->nends == n) {
            break;
        }
    }
    struct weir__proxy_worker *w = h->w;
    if (w->nconns != 0 || w->zombies != NULL || w->bufs.outstanding != 0) {
        FAIL("after every connection closed: %u connections, zombies %d, %llu buffers held",
             w->nconns, w->zombies != NULL, (unsigned long long)w->bufs.outstanding);
    }
    for (unsigned i = 1; i <= MAX_REQ; i++) {
        if (F.req[i].attempts > 0 && !F.req[i].logged) {
            FAIL("request %u went upstream and was never logged", i);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t jumps[] = {0, 2500, 61000, 3600000};
    if (size < 3 || size > MAX_INPUT) {
        return 0;
    }
    (void)tracing();
    memset(&F, 0, sizeof(F));
    F.flags = data[0];
    F.rng = 0x9e3779b97f4a7c15u ^ ((uint64_t)data[1] << 32) ^ data[1];
    F.maxpiece = data[2];
    parse_script(data + 3, size - 3);
    F.h = harness_new(NULL);
    if (F.h == NULL) {
        FAIL("harness_new");
    }
    struct harness *h = F.h;
    configure(h->cfg, F.flags & 3);
    if ((F.flags & 3) == 3) {
        h->client_sndbuf = 1; /* the kernel's least: the spool has something to hold */
    }
    F.o = harness_origin_add(h, "o", NULL, 0);
    if (F.o == NULL) {
        FAIL("harness_origin_add");
    }
    F.o->on_data = origin_data; /* the script answers, not the harness */
    h->hooks.upstream_peer = peer_hook;
    h->hooks.early_request_filter = early_hook;
    h->hooks.request_filter = request_filter_hook;
    h->hooks.connected_to_upstream = connected_hook;
    h->hooks.upstream_request_filter = upstream_request_hook;
    h->hooks.logging = logging_hook;
    h->data = &F;
    if (harness_start(h) != 0) {
        FAIL("harness_start");
    }
    run_script();
    uint64_t jump = jumps[(F.flags >> 4) & 3];
    for (int i = 0; jump != 0 && i < 2; i++) {
        weir__loop_skew_clock(h->loop, jump);
        run_script();
    }
    finish();
    trace();
    check_client();
    for (unsigned i = 0; i < h->nends; i++) {
        walk_upstream(&h->ends[i], false);
    }
    harness_free(h);
    F.h = NULL;
    return 0;
}
