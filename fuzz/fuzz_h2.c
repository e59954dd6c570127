/*
 * libFuzzer target: the real proxy on one worker, between an HTTP/2 client (h2c with prior
 * knowledge) and an HTTP/1.1 origin. As in fuzz_proxy.c nothing is re-implemented: conn.c
 * detects the preface on an h2c listener, h2_down.c and src/http2/ (nghttp2) turn each
 * stream into a session, and session.c, upstream.c, pipe.c and forward.c carry it to the
 * origin, on a real event loop, through the unit tests' harness (tests/unit/proxy/harness.c,
 * with h->listener.h2c set): the client is one end of an AF_UNIX socketpair, the origin an
 * AF_UNIX listener on the same loop.
 *
 * The input:
 *
 *   byte 0   flags: bits 0-1 how the origin answers (0: Content-Length, 1: chunked, 2:
 *            close-delimited then close, 3: in turn those, a 20000-byte body and a 204), bit 2
 *            tight limits (see configure), bit 3 request_filter suspends every request
 *            (resumed before the next write), bit 4 the client half-closes after its last
 *            byte, bit 5 weir's end of the client connection has the smallest send buffer,
 *            bits 6-7 a jump of the clock at the end (none, 2.5 s, 61 s, 1 h)
 *   byte 1   the schedule: bits 0-2 the largest write (all at once, 1, 3, 9, 17, 64, 256 or
 *            1024 bytes, more if the input would take over 256 writes), bit 6 the requests
 *            suspended last stay so until the client is gone (zombies), bit 7 the worker
 *            drains (graceful GOAWAY) right after the write that takes the client past half its
 *            bytes, before weir has read them; all 8 bits seed the sizes
 *   then     the client's bytes after the connection preface "PRI * HTTP/2.0...", which the
 *            driver sends itself: SETTINGS, HEADERS with HPACK blocks, CONTINUATION, DATA, ...
 *
 * The origin answers every complete HTTP/1.1 request (a HEAD with the head alone). Between
 * any two writes the loop runs until it is quiescent, so a run depends on its input alone.
 * The oracle:
 *
 *   - every request head the origin receives is strict HTTP/1.1 (token method, an origin-form
 *     target of visible ASCII, "*" for OPTIONS or host:port, the Host, for CONNECT, token field
 * names, no CR, LF, NUL or other control byte in a value, exactly one Host, no hop-by-hop field,
 * Content-Length or chunked but not both, canonical chunked framing) and carries the tag this
 * driver's upstream_request_filter set, no more often than weir connected for it (else it was
 *     smuggled, e.g. out of a body);
 *   - the loop always becomes quiescent within a bounded number of turns;
 *   - what the client receives is well-formed HTTP/2 from a server: a SETTINGS first, whole
 *     frames of known types no larger than 16384, header blocks not interleaved that decode
 *     (HPACK) to a response (a :status first, lowercase names, no connection-specific field,
 *     no CR, LF or NUL), no DATA before the final head or anything after END_STREAM or
 *     RST_STREAM, a body as long as its content-length (none for HEAD, 204, 304), the status
 *     logging saw; no stream weir forwarded is refused or above a GOAWAY's last stream;
 *   - every session is an HTTP/2 stream's and ends with exactly one logging call; a session
 *     without a response has an error; weir_session_request_index is the session's own,
 *     1, 2, ... in the order the sessions began (proxy.h), in every hook;
 *   - when the connections are closed, the worker holds no connection, no zombie and no I/O
 *     buffer (LeakSanitizer checks the heap after every input besides).
 *
 * FUZZ_H2_TRACE=1 prints what each side received and what the hooks saw. FUZZ_H2_IGNORE skips
 * checks that known findings fail, to fuzz past them until they are fixed (see ignoring).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <nghttp2/nghttp2.h>

#include "core/log.h"
#include "harness.h"
#include "http2/h2.h"

#define MAX_INPUT    65536
#define MAX_REQ      256  /* requests recorded per run; more and they are not judged */
#define MAX_TURNS    1000 /* turns one settle may take before it counts as a livelock */
#define MAX_ROUNDS   4096 /* settles in a row in which the origin still had something to do */
#define MAX_STUCK    8    /* client writes in a row that the socket did not take */
#define MAX_WRITES   256  /* the schedule's pieces are larger for longer inputs */
#define MAX_CSTREAMS 1024 /* streams the client side tracks (a power of two) */
#define BIG_BODY     20000
#define FRAME_MAX    16384 /* SETTINGS_MAX_FRAME_SIZE's default: weir never sends more */

static void trace(void);

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        trace();                                                                                   \
        (void)fprintf(stderr, "fuzz_h2: " __VA_ARGS__);                                            \
        (void)fputc('\n', stderr);                                                                 \
        abort();                                                                                   \
    } while (0)

#include "strict_h1.h" /* after FAIL, which it uses */

/* What the hooks saw of one request: F.req[i] is the i-th session begun, its ctx. */
struct req_rec {
    bool started;   /* new_ctx */
    unsigned index; /* weir_session_request_index in new_ctx */
    bool logged;
    bool err;
    bool head_method;
    int32_t stream;
    int status;
    unsigned attempts; /* connected_to_upstream calls: heads weir sent up */
    unsigned seen;     /* heads carrying this request's tag the origin received */
};

/* The origin's side of one connection (indexed like h->ends). */
struct origin_conn {
    size_t counted; /* 1 + the offset of the head whose tag was counted; 0: none */
    unsigned last_tag;
    const char *out; /* the response still going out */
    size_t out_left;
    bool close_after;
};

struct fz {
    struct harness *h;
    struct harness_origin *o;
    uint8_t flags, sched;
    uint64_t rng;
    unsigned maxpiece;
    const uint8_t *cli;
    size_t cli_len, cli_off;
    unsigned stuck;
    struct origin_conn oc[HARNESS_ENDS_MAX];
    unsigned answered; /* responses begun, all connections (picks the next kind in turn) */
    struct req_rec req[MAX_REQ + 1];
    unsigned nreq, nlogged; /* records begun (new_ctx) and logged; req[0]: the overflow's */
    struct weir_session *pending[8];
    unsigned npending;
    bool overflow; /* more than MAX_REQ requests: those are not recorded */
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

/* The record behind a hook's ctx (new_ctx's); NULL past MAX_REQ. */
static struct req_rec *rec_of(void *ctx)
{
    struct req_rec *r = ctx;
    return r == NULL || r == &F.req[0] ? NULL : r;
}

/* The number of r (1..MAX_REQ), or one past what is recorded (r NULL). */
static unsigned rec_index(const struct req_rec *r)
{
    return r == NULL ? MAX_REQ + 1 : (unsigned)(r - F.req);
}

/*
 * FUZZ_H2_IGNORE, a list of the checks a run skips, to explore past a finding until it is fixed
 * (each found one, see fuzz/regressions/fuzz_h2/): request-index (weir_session_request_index
 * stays the session's), no-error (a session without a response has an error), connect (a
 * CONNECT the origin receives is judged), goaway (no stream weir forwarded is above a GOAWAY's
 * last stream).
 */
enum { IGN_REQUEST_INDEX = 1, IGN_NO_ERROR = 2, IGN_CONNECT = 4, IGN_GOAWAY = 8 };

static bool ignoring(unsigned what)
{
    static int mask = -1;
    if (mask < 0) {
        const char *env = getenv("FUZZ_H2_IGNORE");
        mask = 0;
        if (env != NULL) {
            mask |= strstr(env, "request-index") != NULL ? IGN_REQUEST_INDEX : 0;
            mask |= strstr(env, "no-error") != NULL ? IGN_NO_ERROR : 0;
            mask |= strstr(env, "connect") != NULL ? IGN_CONNECT : 0;
            mask |= strstr(env, "goaway") != NULL ? IGN_GOAWAY : 0;
        }
    }
    return ((unsigned)mask & what) != 0;
}

static const struct req_rec *rec_of_stream(int32_t id)
{
    for (unsigned i = 1; i <= MAX_REQ; i++) {
        if (F.req[i].started && F.req[i].stream == id) {
            return &F.req[i];
        }
    }
    return NULL;
}

/* ---- the hooks ---- */

/*
 * Every session begins here (session_begin), before any other hook: it gets the next record
 * as its ctx, so the hooks tell sessions apart however many streams run at once.
 */
static void *new_ctx_hook(struct weir_session *s, void *data)
{
    (void)data;
    if (s->h2 == NULL) {
        FAIL("an HTTP/1.1 session on a connection that sent the HTTP/2 preface");
    }
    if (F.nreq >= MAX_REQ) {
        F.overflow = true;
        return &F.req[0];
    }
    struct req_rec *r = &F.req[++F.nreq];
    r->started = true;
    r->index = weir_session_request_index(s);
    if (r->index != F.nreq) {
        FAIL("request %u began with weir_session_request_index %u", F.nreq, r->index);
    }
    r->stream = s->h2->id;
    struct weir_iov m = weir_req_method(weir_session_req(s));
    r->head_method = m.len == 4 && memcmp(m.base, "HEAD", 4) == 0;
    return r;
}

static enum weir_hook_result peer_hook(struct weir_session *s, void *ctx, struct weir_peer *peer)
{
    return harness_peer(peer, F.o) == 0 ? WEIR_HOOK_CONTINUE : WEIR_HOOK_ERROR;
}

static enum weir_hook_result request_filter_hook(struct weir_session *s, void *ctx)
{
    if ((F.flags & 0x08) == 0 || F.npending >= sizeof(F.pending) / sizeof(F.pending[0])) {
        return WEIR_HOOK_CONTINUE;
    }
    F.pending[F.npending++] = s;
    return WEIR_HOOK_PENDING;
}

static enum weir_hook_result connected_hook(struct weir_session *s, void *ctx,
                                            const struct weir_peer *peer, bool reused)
{
    struct req_rec *r = rec_of(ctx);
    if (r != NULL) {
        r->attempts++;
    }
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result upstream_request_hook(struct weir_session *s, void *ctx,
                                                   struct weir_req *req)
{
    char tag[16];
    int n = snprintf(tag, sizeof(tag), "%u", rec_index(rec_of(ctx)));
    if (n <= 0 || (size_t)n >= sizeof(tag)) {
        return WEIR_HOOK_ERROR;
    }
    return weir_headers_set(weir_req_headers(req), "X-Fuzz-Req", tag) == 0 ? WEIR_HOOK_CONTINUE
                                                                           : WEIR_HOOK_ERROR;
}

static void logging_hook(struct weir_session *s, void *ctx, const struct weir_error *err)
{
    for (unsigned i = 0; i < F.npending; i++) {
        if (F.pending[i] == s) {
            FAIL("a suspended session was logged");
        }
    }
    struct req_rec *r = rec_of(ctx);
    if (r == NULL) {
        return;
    }
    unsigned i = rec_index(r);
    if (r->logged) {
        FAIL("request %u logged twice", i);
    }
    r->logged = true;
    r->err = err != NULL;
    r->status = weir_session_status(s);
    F.nlogged++;
    /* proxy.h: "1 for the first request on a client connection, 2 for the next, ..." */
    if (weir_session_request_index(s) != r->index && !ignoring(IGN_REQUEST_INDEX)) {
        FAIL("request %u (stream %d): weir_session_request_index was %u, is %u at logging", i,
             (int)r->stream, r->index, weir_session_request_index(s));
    }
}

static void resume_pending(void)
{
    while (F.npending > 0) {
        struct weir_session *s = F.pending[--F.npending];
        weir_session_resume(s, WEIR_HOOK_CONTINUE);
    }
}

/* ---- the origin ---- */

enum resp_kind { R_LENGTH, R_CHUNKED, R_CLOSE, R_BIG, R_NO_CONTENT };

static const char RESP_LENGTH[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
static const char RESP_CHUNKED[] =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
static const char RESP_CLOSE[] = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok";
static const char RESP_NO_CONTENT[] = "HTTP/1.1 204 No Content\r\n\r\n";
static const char RESP_BIG_HEAD[] = "HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n";
static char resp_big[sizeof(RESP_BIG_HEAD) - 1 + BIG_BODY];

/* What walk of one head's fields found (strict_request_head's callback). */
struct tag_info {
    unsigned tags, tag;
};

static void note_field(void *arg, const char *n, size_t nl, const char *v, size_t vl)
{
    struct tag_info *ti = arg;
    if (ieq(n, nl, "X-Fuzz-Req")) {
        uint64_t x;
        ti->tags++;
        if (!parse_u64(v, vl, 10, &x) || x == 0) {
            FAIL("origin: a request weir did not tag: X-Fuzz-Req \"%.*s\"", (int)vl, v);
        }
        ti->tag = x <= MAX_REQ ? (unsigned)x : 0; /* 0: past what is recorded */
    }
}

/* Starts the answer to one complete request on connection oc. */
static void respond(struct origin_conn *oc, bool head_method)
{
    static const enum resp_kind turn[] = {R_LENGTH, R_CHUNKED, R_BIG, R_CLOSE, R_NO_CONTENT};
    unsigned mode = F.flags & 3;
    enum resp_kind k = mode < 3 ? (enum resp_kind)mode : turn[F.answered % 5];
    F.answered++;
    const char *p;
    size_t len;
    switch (k) {
    case R_CHUNKED:
        p = RESP_CHUNKED, len = sizeof(RESP_CHUNKED) - 1;
        break;
    case R_CLOSE:
        p = RESP_CLOSE, len = sizeof(RESP_CLOSE) - 1;
        break;
    case R_BIG:
        p = resp_big, len = sizeof(resp_big);
        break;
    case R_NO_CONTENT:
        p = RESP_NO_CONTENT, len = sizeof(RESP_NO_CONTENT) - 1;
        break;
    default:
        p = RESP_LENGTH, len = sizeof(RESP_LENGTH) - 1;
        break;
    }
    if (head_method) {
        len = (size_t)(find_head_end(p, p + len) - p); /* the head alone */
    }
    oc->out = p;
    oc->out_left = len;
    oc->close_after = k == R_CLOSE;
}

/* Writes what the socket takes of oc's response. 1: all of it, 0: the rest waits, -1: closed. */
static int origin_write(struct harness_end *e, struct origin_conn *oc)
{
    while (oc->out_left > 0) {
        ssize_t n = send(e->fd, oc->out, oc->out_left, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0; /* weir reads on: a later settle goes on */
        }
        if (n <= 0) {
            harness_end_close(e); /* weir went away */
            return -1;
        }
        oc->out += n;
        oc->out_left -= (size_t)n;
    }
    if (oc->close_after) {
        harness_end_close(e);
        return -1;
    }
    return 1;
}

/* Checks the request head [p, he) strictly, and counts its tag the first time it is seen. */
static void origin_head(const struct harness_end *e, struct origin_conn *oc, const char *p,
                        const char *he, struct strict_head *sh)
{
    struct tag_info ti = {0};
    strict_request_head(p, he, "origin", STRICT_ORIGIN_FORM | STRICT_TE_TRAILERS, note_field, &ti,
                        sh);
    if (ti.tags != 1) {
        FAIL("origin: a request with %u tags", ti.tags);
    }
    if (oc->counted == e->served + 1 || ti.tag == 0) {
        return; /* counted already, or past what is recorded */
    }
    oc->counted = e->served + 1;
    struct req_rec *r = &F.req[ti.tag];
    if (++r->seen > r->attempts) {
        FAIL("origin: request %u arrived %u times, sent %u times (smuggled)", ti.tag, r->seen,
             r->attempts);
    }
    if (ti.tag < oc->last_tag) {
        FAIL("origin: request %u after request %u on one connection", ti.tag, oc->last_tag);
    }
    oc->last_tag = ti.tag;
}

/*
 * Checks each request head that has arrived on origin connection i, answers each complete
 * request and writes what the socket takes. Whether it did anything.
 */
static bool origin_serve(unsigned i)
{
    struct harness_end *e = &F.h->ends[i];
    struct origin_conn *oc = &F.oc[i];
    bool progress = false;
    while (e->fd >= 0) {
        if (oc->out_left > 0) {
            size_t left = oc->out_left;
            int rc = origin_write(e, oc);
            progress |= oc->out_left < left || rc < 0;
            if (rc <= 0) {
                return progress;
            }
        }
        const char *p = e->in + e->served, *end = e->in + e->in_len;
        const char *he = find_head_end(p, end);
        if (he == NULL) {
            break;
        }
        if (he - p > 8 && memcmp(p, "CONNECT ", 8) == 0 && ignoring(IGN_CONNECT)) {
            e->served = (size_t)(he - e->in); /* a bodiless CONNECT, left unanswered */
            progress = true;
            continue;
        }
        struct strict_head sh;
        origin_head(e, oc, p, he, &sh);
        const char *me = he;
        if (sh.chunked) {
            me = walk_chunked(he, end, "origin");
        } else if (sh.has_cl) {
            me = (uint64_t)(end - he) >= sh.cl ? he + sh.cl : NULL;
        }
        if (me == NULL) {
            break; /* the body is still arriving */
        }
        e->served = (size_t)(me - e->in);
        e->requests++;
        respond(oc, ieq(sh.method, sh.method_len, "HEAD"));
        progress = true;
    }
    if (e->fd >= 0 && e->eof) {
        harness_end_close(e); /* weir closed (or more arrived than the end keeps) */
        progress = true;
    }
    return progress;
}

static void origin_data(struct harness_end *e)
{
    (void)origin_serve((unsigned)(e - F.h->ends));
}

/* ---- the driver ---- */

/*
 * Runs the loop until it is quiescent and the origin has nothing left to do (the harness's
 * last reads of a settle run no callback: the origin looks at those bytes here).
 */
static void settle(void)
{
    for (unsigned round = 0;; round++) {
        if (round >= MAX_ROUNDS) {
            FAIL("the origin still had something to do after %u rounds", round);
        }
        int rc = harness_settle(F.h, MAX_TURNS);
        if (rc < 0) {
            FAIL("the loop did not become quiescent in %d turns (%d)", MAX_TURNS, rc);
        }
        bool progress = false;
        for (unsigned i = 0; i < F.h->nends; i++) {
            progress |= origin_serve(i);
        }
        if (!progress) {
            break;
        }
    }
    if (!F.overflow) {
        /* The connection's buffers, and a few for each session in progress and its upstream. */
        unsigned live = F.nreq - F.nlogged;
        uint64_t bound = 4 + 4 * (uint64_t)live;
        if (F.h->w->bufs.outstanding > bound) {
            FAIL("%llu I/O buffers held with %u sessions in progress",
                 (unsigned long long)F.h->w->bufs.outstanding, live);
        }
    }
}

static void client_step(void)
{
    size_t n = piece(F.cli_len - F.cli_off);
    ssize_t w = send(F.h->client.fd, F.cli + F.cli_off, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w > 0) {
        F.cli_off += (size_t)w;
        F.stuck = 0;
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        if (++F.stuck >= MAX_STUCK) {
            F.cli_off = F.cli_len; /* weir reads no more: the rest goes nowhere */
        }
    } else {
        F.cli_off = F.cli_len; /* weir closed: the rest goes nowhere */
    }
}

static void run_client(void)
{
    bool drained = false;
    while (F.cli_off < F.cli_len && F.h->client.fd >= 0) {
        if (F.npending > 0) {
            resume_pending();
            settle();
        }
        client_step();
        if ((F.sched & 0x80) && !drained && F.cli_off >= F.cli_len / 2) {
            /* What SIGTERM does (GOAWAY, streams in progress end), with bytes still unread. */
            drained = true;
            weir__proxy_drain(F.h->w);
        }
        settle();
    }
    if (!(F.sched & 0x40)) {
        resume_pending();
        settle();
    }
}

/* ---- what the client receives ---- */

/* One stream as the client sees it. */
struct cstream {
    int32_t id; /* 0: a free slot */
    bool final; /* the final response head arrived */
    bool ended; /* weir's END_STREAM */
    bool reset; /* weir's RST_STREAM */
    bool refused;
    bool has_cl;
    int status;
    uint64_t cl;
    uint64_t data;
};

struct client_view {
    struct cstream st[MAX_CSTREAMS];
    unsigned nst;
    bool full;                     /* more streams than tracked: those are not judged */
    int64_t goaway_last;           /* the lowest last-stream-id of weir's GOAWAYs; -1: none */
    uint8_t block[HARNESS_IN_MAX]; /* the header block being gathered */
    size_t blen;
    int32_t cont; /* its stream while CONTINUATION frames are due; 0: none */
    bool cont_end_stream;
    nghttp2_hd_inflater *inf;
};

static struct client_view CV;

static struct cstream *cstream(int32_t id)
{
    unsigned h = ((uint32_t)id * 2654435761u) & (MAX_CSTREAMS - 1);
    for (unsigned k = 0; k < MAX_CSTREAMS; k++, h = (h + 1) & (MAX_CSTREAMS - 1)) {
        if (CV.st[h].id == id) {
            return &CV.st[h];
        }
        if (CV.st[h].id == 0) {
            if (CV.nst >= MAX_CSTREAMS / 2) {
                CV.full = true;
                return NULL;
            }
            CV.nst++;
            CV.st[h] = (struct cstream){.id = id};
            return &CV.st[h];
        }
    }
    CV.full = true;
    return NULL;
}

static bool connection_specific(const uint8_t *n, size_t len)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (len == strlen(names[i]) && memcmp(n, names[i], len) == 0) {
            return true;
        }
    }
    return false;
}

/* weir's END_STREAM on st: the response must be whole. */
static void stream_ended(struct cstream *st)
{
    st->ended = true;
    if (!st->final) {
        FAIL("client: stream %d ended without a final response", (int)st->id);
    }
    const struct req_rec *r = rec_of_stream(st->id);
    bool bodyless = (r != NULL && r->head_method) || st->status == 204 || st->status == 304;
    if (bodyless && st->data > 0) {
        FAIL("client: stream %d: %llu body bytes in a %d response%s", (int)st->id,
             (unsigned long long)st->data, st->status, r && r->head_method ? " to HEAD" : "");
    }
    if (!bodyless && st->has_cl && st->data != st->cl) {
        FAIL("client: stream %d: content-length %llu, %llu bytes of DATA", (int)st->id,
             (unsigned long long)st->cl, (unsigned long long)st->data);
    }
}

/* What a header block said. */
struct head_info {
    int status; /* -1: no :status */
    unsigned nfields;
    bool has_cl;
    uint64_t cl;
};

/* One decoded field of a response head (or trailers) on st. */
static void response_field(const struct cstream *st, const nghttp2_nv *nv, struct head_info *hi)
{
    int id = (int)st->id;
    if (nv->namelen == 7 && memcmp(nv->name, ":status", 7) == 0) {
        uint64_t x;
        if (hi->nfields != 0 || nv->valuelen != 3 ||
            !parse_u64((const char *)nv->value, 3, 10, &x) || x < 100 || x > 599) {
            FAIL("client: stream %d: :status \"%.*s\" (field %u)", id, (int)nv->valuelen, nv->value,
                 hi->nfields);
        }
        hi->status = (int)x;
        hi->nfields++;
        return;
    }
    hi->nfields++;
    if (nv->namelen == 0 || nv->name[0] == ':') {
        FAIL("client: stream %d: pseudo-field \"%.*s\" in a response", id, (int)nv->namelen,
             nv->name);
    }
    for (size_t i = 0; i < nv->namelen; i++) {
        if (!tchar(nv->name[i]) || (nv->name[i] >= 'A' && nv->name[i] <= 'Z')) {
            FAIL("client: stream %d: field name \"%.*s\"", id, (int)nv->namelen, nv->name);
        }
    }
    if (connection_specific(nv->name, nv->namelen)) {
        FAIL("client: stream %d: connection-specific field %.*s", id, (int)nv->namelen, nv->name);
    }
    for (size_t i = 0; i < nv->valuelen; i++) {
        if (nv->value[i] == 0 || nv->value[i] == '\r' || nv->value[i] == '\n') {
            FAIL("client: stream %d: CR, LF or NUL in field %.*s", id, (int)nv->namelen, nv->name);
        }
    }
    if (nv->namelen == 14 && memcmp(nv->name, "content-length", 14) == 0) {
        uint64_t x;
        if (!parse_u64((const char *)nv->value, nv->valuelen, 10, &x) ||
            (hi->has_cl && x != hi->cl)) {
            FAIL("client: stream %d: content-length \"%.*s\"", id, (int)nv->valuelen, nv->value);
        }
        hi->has_cl = true;
        hi->cl = x;
    }
}

/* Decodes the header block gathered in CV.block (HPACK state is the connection's). */
static void decode_block(const struct cstream *st, struct head_info *hi)
{
    const uint8_t *b = CV.block;
    size_t n = CV.blen;
    for (;;) {
        nghttp2_nv nv;
        int iflags = 0;
        ssize_t r = nghttp2_hd_inflate_hd2(CV.inf, &nv, &iflags, b, n, 1);
        if (r < 0) {
            FAIL("client: a header block on stream %d does not decode: %s", (int)st->id,
                 nghttp2_strerror((int)r));
        }
        b += r;
        n -= (size_t)r;
        if (iflags & NGHTTP2_HD_INFLATE_EMIT) {
            response_field(st, &nv, hi);
        }
        if (iflags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(CV.inf);
            return;
        }
        if (r == 0 && n == 0) {
            FAIL("client: a header block on stream %d ends mid-field", (int)st->id);
        }
    }
}

/* One header block weir sent on st, decoded and checked as a response head or trailers. */
static void header_block(struct cstream *st, bool end_stream)
{
    struct head_info hi = {.status = -1};
    int id = (int)st->id;
    decode_block(st, &hi);
    if (st->final) {
        if (hi.status >= 0 || !end_stream) {
            FAIL("client: stream %d: a second response head (%d) after %d", id, hi.status,
                 st->status);
        }
    } else if (hi.status < 0) {
        FAIL("client: stream %d: a response head without :status", id);
    } else if (hi.status == 101) {
        FAIL("client: stream %d: 101 over HTTP/2", id);
    } else if (hi.status < 200) {
        if (end_stream) {
            FAIL("client: stream %d: END_STREAM on an interim %d", id, hi.status);
        }
    } else {
        if (CV.goaway_last >= 0 && st->id > CV.goaway_last) {
            FAIL("client: a response on stream %d after a GOAWAY with last stream %lld", id,
                 (long long)CV.goaway_last);
        }
        st->final = true;
        st->status = hi.status;
        st->has_cl = hi.has_cl;
        st->cl = hi.cl;
    }
    if (end_stream) {
        stream_ended(st);
    }
}

/* The frame payload of a HEADERS or DATA frame without its padding (and priority). */
static bool unpad(uint8_t type, uint8_t fl, const uint8_t **pl, uint32_t *len)
{
    uint32_t pad = 0;
    if (fl & NGHTTP2_FLAG_PADDED) {
        if (*len < 1) {
            return false;
        }
        pad = (*pl)[0];
        (*pl)++;
        (*len)--;
    }
    if (type == NGHTTP2_HEADERS && (fl & NGHTTP2_FLAG_PRIORITY)) {
        if (*len < 5) {
            return false;
        }
        *pl += 5;
        *len -= 5;
    }
    if (pad > *len) {
        return false;
    }
    *len -= pad;
    return true;
}

/* A DATA, HEADERS or RST_STREAM frame may go on stream id, which must be a client's. */
static struct cstream *frame_stream(int32_t id, uint8_t type)
{
    if (id == 0 || (id & 1) == 0) {
        FAIL("client: frame type %u on stream %d", type, (int)id);
    }
    struct cstream *st = cstream(id);
    if (st != NULL && type != NGHTTP2_RST_STREAM && (st->ended || st->reset)) {
        FAIL("client: frame type %u on stream %d after its %s", type, (int)id,
             st->ended ? "END_STREAM" : "RST_STREAM");
    }
    return st;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A DATA frame on stream id. */
static void data_frame(int32_t id, uint8_t fl, const uint8_t *pl, uint32_t len)
{
    struct cstream *st = frame_stream(id, NGHTTP2_DATA);
    if (!unpad(NGHTTP2_DATA, fl, &pl, &len)) {
        FAIL("client: bad padding");
    }
    if (st == NULL) {
        return;
    }
    if (!st->final) {
        FAIL("client: DATA on stream %d before its final response head", (int)id);
    }
    st->data += len;
    if (fl & NGHTTP2_FLAG_END_STREAM) {
        stream_ended(st);
    }
}

/* The frames that are not a stream's DATA or header block. */
static void control_frame(uint8_t type, uint8_t fl, int32_t id, const uint8_t *pl, uint32_t len)
{
    struct cstream *st;
    switch (type) {
    case NGHTTP2_RST_STREAM:
        if (len != 4 || id == 0) {
            FAIL("client: bad RST_STREAM (stream %d, %u bytes)", (int)id, len);
        }
        st = cstream(id); /* any stream the client named, even one it may not open */
        if (st != NULL) {
            st->reset = true;
            st->refused |= be32(pl) == NGHTTP2_REFUSED_STREAM;
        }
        break;
    case NGHTTP2_SETTINGS:
        if (id != 0 || ((fl & NGHTTP2_FLAG_ACK) ? len != 0 : len % 6 != 0)) {
            FAIL("client: bad SETTINGS (stream %d, %u bytes, flags %#x)", (int)id, len, fl);
        }
        break;
    case NGHTTP2_PING:
        if (id != 0 || len != 8) {
            FAIL("client: bad PING (stream %d, %u bytes)", (int)id, len);
        }
        break;
    case NGHTTP2_GOAWAY: {
        if (id != 0 || len < 8) {
            FAIL("client: bad GOAWAY (stream %d, %u bytes)", (int)id, len);
        }
        int64_t last = be32(pl) & 0x7fffffffu;
        if (CV.goaway_last >= 0 && last > CV.goaway_last) {
            FAIL("client: a GOAWAY raised the last stream from %lld to %lld",
                 (long long)CV.goaway_last, (long long)last);
        }
        CV.goaway_last = last;
        break;
    }
    case NGHTTP2_WINDOW_UPDATE:
        if (len != 4 || (be32(pl) & 0x7fffffffu) == 0) {
            FAIL("client: bad WINDOW_UPDATE (%u bytes)", len);
        }
        break;
    default:
        FAIL("client: a server sent frame type %u (stream %d)", type, (int)id);
    }
}

/* A HEADERS or CONTINUATION frame: a piece of a header block, decoded once it is whole. */
static bool header_frame(uint8_t type, uint8_t fl, int32_t id, const uint8_t *pl, uint32_t len)
{
    if (type == NGHTTP2_HEADERS) {
        (void)frame_stream(id, type);
        if (!unpad(type, fl, &pl, &len)) {
            FAIL("client: bad padding");
        }
        CV.blen = 0;
        CV.cont_end_stream = (fl & NGHTTP2_FLAG_END_STREAM) != 0;
        CV.cont = id;
    } else if (CV.cont == 0) {
        FAIL("client: CONTINUATION on stream %d outside a header block", (int)id);
    }
    if (len > sizeof(CV.block) - CV.blen) {
        FAIL("client: a header block larger than what the client received");
    }
    memcpy(CV.block + CV.blen, pl, len);
    CV.blen += len;
    if (!(fl & NGHTTP2_FLAG_END_HEADERS)) {
        return true;
    }
    struct cstream *st = cstream(CV.cont);
    if (st == NULL) {
        return false; /* untracked: decode no further */
    }
    header_block(st, CV.cont_end_stream);
    CV.cont = 0;
    return true;
}

/* What the client saw against what the hooks saw, request by request. */
static void check_requests(void)
{
    for (unsigned i = 1; i <= F.nreq; i++) {
        const struct req_rec *r = &F.req[i];
        if (r->seen > 0 && CV.goaway_last >= 0 && r->stream > CV.goaway_last &&
            !ignoring(IGN_GOAWAY)) {
            FAIL("request %u (stream %d) was forwarded, above the GOAWAY's last stream %lld", i,
                 (int)r->stream, (long long)CV.goaway_last);
        }
        struct cstream *st = cstream(r->stream);
        if (st == NULL) {
            return;
        }
        if (r->seen > 0 && st->refused) {
            FAIL("request %u (stream %d) was forwarded, then refused (the client may retry it)", i,
                 (int)r->stream);
        }
        if (r->logged && r->status != 0 && st->final && st->status != r->status) {
            FAIL("request %u (stream %d): the client got %d, logging saw %d", i, (int)r->stream,
                 st->status, r->status);
        }
    }
}

/* Walks what the client received, frame by frame. */
static void check_client(void)
{
    const struct harness_end *c = &F.h->client;
    if (c->err == -ENOBUFS) {
        return; /* more than the end keeps: nothing to judge */
    }
    memset(&CV, 0, sizeof(CV));
    CV.goaway_last = -1;
    if (nghttp2_hd_inflate_new(&CV.inf) != 0) {
        FAIL("nghttp2_hd_inflate_new");
    }
    const uint8_t *p = (const uint8_t *)c->in, *end = p + c->in_len;
    bool tracked = true;
    while (end - p >= 9 && tracked) {
        uint32_t len = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
        uint8_t type = p[3], fl = p[4];
        int32_t id = (int32_t)(be32(p + 5) & 0x7fffffffu);
        if (len > FRAME_MAX) {
            FAIL("client: a frame of %u bytes (type %u)", len, type);
        }
        if ((size_t)(end - p) - 9 < len) {
            break;
        }
        if (p == (const uint8_t *)c->in && (type != NGHTTP2_SETTINGS || (fl & NGHTTP2_FLAG_ACK))) {
            FAIL("client: the first frame is type %u flags %#x, not SETTINGS", type, fl);
        }
        if (CV.cont != 0 && (type != NGHTTP2_CONTINUATION || id != CV.cont)) {
            FAIL("client: frame type %u on stream %d inside stream %d's header block", type,
                 (int)id, (int)CV.cont);
        }
        const uint8_t *pl = p + 9;
        p += 9 + len;
        if (type == NGHTTP2_DATA) {
            data_frame(id, fl, pl, len);
        } else if (type == NGHTTP2_HEADERS || type == NGHTTP2_CONTINUATION) {
            tracked = header_frame(type, fl, id, pl, len);
        } else {
            control_frame(type, fl, id, pl, len);
        }
    }
    nghttp2_hd_inflate_del(CV.inf);
    CV.inf = NULL;
    if (!tracked || CV.full) {
        return;
    }
    if ((p != end || CV.cont != 0) && !c->eof) {
        FAIL("client: %s on a connection weir keeps open and quiet",
             p != end ? "a frame left half-written" : "a header block left unfinished");
    }
    check_requests();
}

/* ---- a run ---- */

/* Bit 2 of the flags: tight limits (heads, bodies, windows, streams, rates). */
static void configure(struct weir_config *cfg, bool tight)
{
    struct weir_cfg_server *sc = &cfg->server;
    if (!tight) {
        return;
    }
    sc->limits.buffer_size = 1024;
    sc->limits.max_header_bytes = 512;
    sc->limits.max_headers = 8;
    sc->limits.max_body_bytes = 100;
    sc->http2.max_concurrent_streams = 2;
    sc->http2.initial_window_size = 1024;
    sc->http2.max_requests = 4;
    sc->http2.reset_burst = 2;
    sc->http2.reset_rate = 1;
    sc->http2.control_frame_burst = 8;
    sc->http2.control_frame_rate = 1;
}

/* FUZZ_H2_TRACE=1: what the origin received and what logging saw, to read a run. */
static bool tracing(void)
{
    static int on = -1;
    if (on < 0) {
        const char *env = getenv("FUZZ_H2_TRACE");
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
    (void)fprintf(stderr, "--- client got %zu bytes:", h->client.in_len);
    const uint8_t *p = (const uint8_t *)h->client.in, *end = p + h->client.in_len;
    for (; end - p >= 9; p += 9 + ((uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2])) {
        (void)fprintf(stderr, " [type %u flags %#x stream %u, %u bytes]", p[3], p[4],
                      (unsigned)(((uint32_t)p[5] & 0x7f) << 24 | (uint32_t)p[6] << 16 |
                                 (uint32_t)p[7] << 8 | p[8]),
                      (unsigned)((uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2]));
    }
    (void)fputc('\n', stderr);
    for (unsigned i = 0; i < h->nends; i++) {
        (void)fprintf(stderr, "--- origin connection %u got %zu bytes:\n%.*s\n", i,
                      h->ends[i].in_len, (int)h->ends[i].in_len, h->ends[i].in);
    }
    for (unsigned i = 1; i <= MAX_REQ; i++) {
        const struct req_rec *r = &F.req[i];
        if (r->started) {
            (void)fprintf(stderr,
                          "--- request %u: stream %d, status %d, error %d, sent up %u times, "
                          "seen %u\n",
                          i, (int)r->stream, r->status, r->err, r->attempts, r->seen);
        }
    }
}

static void finish(void)
{
    struct harness *h = F.h;
    if (!(F.sched & 0x40)) {
        resume_pending();
        settle();
    }
    harness_end_close(&h->client);
    settle();
    resume_pending(); /* zombies: sessions whose client went while their hook waited */
    settle();
    /* Then the origin's connections (a retry may open more meanwhile), then every timeout. */
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
        const struct req_rec *r = &F.req[i];
        if (r->started && !r->logged) {
            FAIL("request %u (stream %d) was never logged", i, (int)r->stream);
        }
        if (r->attempts > 0 && !r->logged) {
            FAIL("request %u went upstream and was never logged", i);
        }
        if (r->logged && r->status == 0 && !r->err && !ignoring(IGN_NO_ERROR)) {
            FAIL("request %u ended without a response and without an error", i);
        }
    }
}

/* The run's state from the input, and a harness whose client has sent the preface. */
static struct harness *start(const uint8_t *data, size_t size)
{
    static const unsigned pieces[8] = {0, 1, 3, 9, 17, 64, 256, 1024};
    memset(&F, 0, sizeof(F));
    F.flags = data[0];
    F.sched = data[1];
    F.maxpiece = pieces[data[1] & 7];
    if (F.maxpiece != 0 && (size - 2) / F.maxpiece > MAX_WRITES) {
        F.maxpiece = (unsigned)((size - 2) / MAX_WRITES); /* a run's cost stays bounded */
    }
    F.rng = 0x9e3779b97f4a7c15u ^ ((uint64_t)data[1] << 32) ^ data[1];
    F.cli = data + 2;
    F.cli_len = size - 2;
    F.h = harness_new(NULL);
    if (F.h == NULL) {
        FAIL("harness_new");
    }
    struct harness *h = F.h;
    configure(h->cfg, (F.flags & 0x04) != 0);
    h->listener.h2c = true;
    if (F.flags & 0x20) {
        h->client_sndbuf = 1; /* the kernel's least: weir's writes to the client block */
    }
    F.o = harness_origin_add(h, "o", NULL, 0);
    if (F.o == NULL) {
        FAIL("harness_origin_add");
    }
    F.o->on_data = origin_data;
    h->hooks.new_ctx = new_ctx_hook;
    h->hooks.upstream_peer = peer_hook;
    h->hooks.request_filter = request_filter_hook;
    h->hooks.connected_to_upstream = connected_hook;
    h->hooks.upstream_request_filter = upstream_request_hook;
    h->hooks.logging = logging_hook;
    h->data = &F;
    if (harness_start(h) != 0) {
        FAIL("harness_start");
    }
    if (harness_client_send(h, WEIR_H2_PREFACE, WEIR_H2_PREFACE_LEN) != 0) {
        FAIL("the preface could not be sent");
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t jumps[] = {0, 2500, 61000, 3600000};
    if (size < 2 || size > MAX_INPUT) {
        return 0;
    }
    (void)tracing();
    if (resp_big[0] == '\0') {
        memcpy(resp_big, RESP_BIG_HEAD, sizeof(RESP_BIG_HEAD) - 1);
        memset(resp_big + sizeof(RESP_BIG_HEAD) - 1, 'x', BIG_BODY);
    }
    struct harness *h = start(data, size);
    run_client();
    if ((F.flags & 0x10) && h->client.fd >= 0 && shutdown(h->client.fd, SHUT_WR) == 0) {
        settle();
    }
    uint64_t jump = jumps[F.flags >> 6];
    for (int i = 0; jump != 0 && i < 2; i++) {
        weir__loop_skew_clock(h->loop, jump);
        if (!(F.sched & 0x40)) {
            resume_pending();
        }
        settle();
    }
    check_client();
    finish();
    trace();
    harness_free(h);
    F.h = NULL;
    return 0;
}
