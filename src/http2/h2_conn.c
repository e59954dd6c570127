/*
 * HTTP/2 server connections through nghttp2 (see h2.h). nghttp2 parses and validates frames,
 * HPACK and the stream states (with its HTTP messaging checks on: pseudo-header rules,
 * connection-specific fields, Content-Length against DATA); weir adds the bounds nghttp2
 * leaves to the application: the decoded size and count of a head, the characters a field may
 * hold before it can become HTTP/1.1, per-stream buffers tied to flow control, the rate of
 * client resets and of frames that carry no request, and the total streams of a connection.
 */
#include "http2/h2.h"

#include <errno.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "core/alloc.h"
#include "core/assert.h"
#include "weir/error.h"
#include "weir/log.h"

#define H2S_MAGIC 0x68327374u
/* Mem-send rounds of one io call before it yields the loop to other connections. */
#define H2_IO_ROUNDS 16
/* Request body bytes thrown away after an early response before the stream is reset. */
#define H2_DISCARD_MAX (1u << 20)
/* Frames the per-connection out buffer is filled from before one write. */
#define H2_OBUF_MIN 16384

/** A token bucket in thousandths of a token. */
struct h2_bucket {
    uint64_t milli;
    uint64_t last_ms;
};

struct weir__h2_conn {
    nghttp2_session *ng;
    struct weir_loop *loop;
    struct weir__stream *tr;
    struct weir__bufpool *pool;
    const struct weir__h2_ops *ops;
    void *data;
    struct weir__h2_limits lim;
    struct weir__h2s *streams;
    struct weir__h2s *ready;
    struct weir__buf obuf; /* frames gathered for one write */
    const uint8_t *pend;   /* what nghttp2_session_mem_send gave that obuf did not take */
    size_t pend_len;
    uint32_t owned;           /* streams the owner holds */
    uint32_t nrequests;       /* streams begun */
    struct h2_bucket resets;  /* client RST_STREAM frames */
    struct h2_bucket control; /* PING, SETTINGS, PRIORITY, empty DATA */
    bool client;              /* our side opens the streams (an origin connection) */
    bool goaway;              /* the peer sent GOAWAY: no new streams */
    bool goaway_graceful;     /* ... with NO_ERROR */
    int32_t goaway_last;      /* ... and this last stream id */
    uint32_t opened;          /* client: streams opened */
    uint32_t stream_cap;      /* client: open no more than this many in all; 0: no cap */
    bool ping_out;            /* a PING of ours is unanswered */
    bool calm;                /* terminated with ENHANCE_YOUR_CALM */
    bool fatal;               /* nghttp2 failed: the connection ends */
    struct weir__defer kick;
    /* freed streams kept for the next ones, with their head buffers (H2_SPARE_STREAMS) */
    struct weir__h2s *spare;
    uint32_t nspare;
};

/* Streams a connection keeps for reuse, and the largest head buffers they keep: a stream's
   calloc and its head's two growing reallocs were 4 % of an h2 request's CPU. */
#define H2_SPARE_STREAMS 8
#define H2_SPARE_HEAD    1024
#define H2_SPARE_FIELDS  32

static ssize_t vst_read(struct weir__stream *st, char *buf, size_t len);
static ssize_t vst_flush(struct weir__stream *st, struct weir__outq *q);
static const struct weir__stream_vt VST = {vst_read, vst_flush};

static struct weir__h2s *h2s_of(struct weir__stream *st)
{
    struct weir__h2s *hs = (struct weir__h2s *)(void *)st; /* vst is the first member */
    WEIR_CHECK_OBJ(hs, H2S_MAGIC);
    return hs;
}

/* ---- nghttp2's allocations go through weir's (failmalloc counts them) ---- */

static void *ng_malloc(size_t size, void *ud)
{
    (void)ud;
    return weir__malloc(size);
}

static void ng_free(void *ptr, void *ud)
{
    (void)ud;
    weir__free(ptr);
}

static void *ng_calloc(size_t n, size_t size, void *ud)
{
    (void)ud;
    return weir__calloc(n, size);
}

static void *ng_realloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    return weir__realloc(ptr, size);
}

/* ---- small helpers ---- */

/* Takes a token; false when the bucket is empty (the rate is exceeded). */
static bool bucket_take(struct h2_bucket *b, uint32_t burst, uint32_t rate, uint64_t now)
{
    if (burst == 0) {
        return true; /* unlimited */
    }
    uint64_t cap = (uint64_t)burst * 1000u;
    if (b->last_ms == 0) {
        b->milli = cap;
    } else if (now > b->last_ms) {
        uint64_t add = (now - b->last_ms) * rate;
        b->milli = b->milli + add > cap ? cap : b->milli + add;
    }
    b->last_ms = now;
    if (b->milli < 1000u) {
        return false;
    }
    b->milli -= 1000u;
    return true;
}

static void schedule(struct weir__h2_conn *hc)
{
    weir__loop_defer(hc->loop, &hc->kick);
}

static void mark_ready(struct weir__h2_conn *hc, struct weir__h2s *hs)
{
    if (hs->queued) {
        return;
    }
    hs->queued = true;
    hs->rnext = hc->ready;
    hc->ready = hs;
}

static void unready(struct weir__h2_conn *hc, struct weir__h2s *hs)
{
    if (!hs->queued) {
        return;
    }
    for (struct weir__h2s **p = &hc->ready; *p != NULL; p = &(*p)->rnext) {
        if (*p == hs) {
            *p = hs->rnext;
            break;
        }
    }
    hs->queued = false;
    hs->rnext = NULL;
}

static void calm_down(struct weir__h2_conn *hc, const char *what)
{
    if (hc->calm) {
        return;
    }
    hc->calm = true;
    weir_log(WEIR_LOG_INFO, "HTTP/2 client over the %s limit: GOAWAY (ENHANCE_YOUR_CALM)", what);
    (void)nghttp2_session_terminate_session(hc->ng, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* ---- streams ---- */

static struct weir__h2s *stream_new(struct weir__h2_conn *hc, int32_t id)
{
    struct weir__h2s *hs = hc->spare;
    if (hs != NULL) {
        hc->spare = hs->next;
        hc->nspare--;
        char *hb = hs->hb;
        struct weir__h2_field *fields = hs->fields;
        uint32_t hcap = hs->hcap, fcap = hs->fcap;
        memset(hs, 0, sizeof(*hs));
        hs->hb = hb, hs->hcap = hcap;
        hs->fields = fields, hs->fcap = fcap;
    } else if ((hs = weir__calloc(1, sizeof(*hs))) == NULL) {
        return NULL;
    }
    hs->magic = H2S_MAGIC;
    hs->hc = hc;
    hs->pool = hc->pool;
    hs->id = id;
    hs->vst.io.fd = -1;
    hs->vst.vt = &VST;
    hs->vst.writable = true;
    hs->pm = hs->pp = hs->pa = hs->ps = hs->pr = -1;
    hs->next = hc->streams;
    if (hc->streams != NULL) {
        hc->streams->prev = hs;
    }
    hc->streams = hs;
    return hs;
}

static void spare_free(struct weir__h2s *hs)
{
    weir__free(hs->hb);
    weir__free(hs->fields);
    weir__free(hs);
}

/* Frees hs (or keeps it for the next stream); its unread body is given back to the
   connection's window first. */
static void stream_free(struct weir__h2s *hs)
{
    struct weir__h2_conn *hc = hs->hc;
    if (hc != NULL) {
        unready(hc, hs);
        uint32_t unread = weir__buf_len(&hs->rbuf);
        if (unread > 0) {
            (void)nghttp2_session_consume_connection(hc->ng, unread);
            schedule(hc);
        }
        if (!hs->closed) {
            (void)nghttp2_session_set_stream_user_data(hc->ng, hs->id, NULL);
        }
        if (hs->prev != NULL) {
            hs->prev->next = hs->next;
        } else if (hc->streams == hs) {
            hc->streams = hs->next;
        }
        if (hs->next != NULL) {
            hs->next->prev = hs->prev;
        }
    }
    weir__free(hs->rbuf.data);
    if (hs->sb_pooled) {
        struct weir__buf sb = {hs->sb, hs->scap, 0, 0};
        weir__buf_release(hs->pool, &sb);
    } else {
        weir__free(hs->sb); /* a refusal's, its own size */
    }
    weir__free(hs->tb);
    weir__free(hs->tnv);
    hs->magic = 0;
    if (hc != NULL && hc->nspare < H2_SPARE_STREAMS && hs->hcap <= H2_SPARE_HEAD &&
        hs->fcap <= H2_SPARE_FIELDS) {
        hs->next = hc->spare; /* stream_new resets the rest */
        hc->spare = hs;
        hc->nspare++;
        return;
    }
    spare_free(hs);
}

/* ---- the request head ---- */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/*
 * What may reach the HTTP/1.1 serializer: no CR, LF or NUL in any value, a token for a
 * method, visible ASCII without space for the target and authority (and no userinfo). A field
 * that fails is a stream error, never forwarded (h2 -> h1 downgrade, RFC 9113 8.2.1).
 */
static bool value_ok(const uint8_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i] == 0 || v[i] == '\r' || v[i] == '\n') {
            return false;
        }
    }
    return true;
}

static bool visible_ok(const uint8_t *v, size_t n, bool no_at)
{
    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i] <= 0x20 || v[i] >= 0x7f || (no_at && v[i] == '@')) {
            return false;
        }
    }
    return true;
}

static bool token_ok(const uint8_t *v, size_t n)
{
    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_tchar(v[i])) {
            return false;
        }
    }
    return true;
}

/* Checks a pseudo-header (nghttp2 has checked its name, order and uniqueness). */
static bool pseudo_ok(const uint8_t *name, size_t nlen, const uint8_t *v, size_t vlen)
{
    if (nlen == 7 && memcmp(name, ":method", 7) == 0) {
        return token_ok(v, vlen);
    }
    if (nlen == 5 && memcmp(name, ":path", 5) == 0) {
        return visible_ok(v, vlen, false) && (v[0] == '/' || (vlen == 1 && v[0] == '*'));
    }
    if (nlen == 10 && memcmp(name, ":authority", 10) == 0) {
        return visible_ok(v, vlen, true);
    }
    if (nlen == 7 && memcmp(name, ":scheme", 7) == 0) {
        return token_ok(v, vlen);
    }
    if (nlen == 9 && memcmp(name, ":protocol", 9) == 0) {
        return token_ok(v, vlen);
    }
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
        return vlen == 3 && v[0] >= '1' && v[0] <= '5' && v[1] >= '0' && v[1] <= '9' &&
               v[2] >= '0' && v[2] <= '9';
    }
    return false;
}

static int append_bytes(struct weir__h2s *hs, uint32_t max, const uint8_t *p, size_t n,
                        uint32_t *off)
{
    if (n > max || hs->hlen > max - n) {
        return WEIR_ELIMIT;
    }
    if (hs->hlen + n > hs->hcap) {
        uint32_t cap = hs->hcap ? hs->hcap : 512;
        while (cap < hs->hlen + n) {
            cap *= 2;
        }
        char *nb = weir__realloc(hs->hb, cap);
        if (nb == NULL) {
            return WEIR_ENOMEM;
        }
        hs->hb = nb;
        hs->hcap = cap;
    }
    if (n > 0) {
        memcpy(hs->hb + hs->hlen, p, n);
    }
    *off = hs->hlen;
    hs->hlen += (uint32_t)n;
    return 0;
}

/* Stores one decoded field of hs's request head. 0, or a status to refuse it with. */
static int store_field(struct weir__h2_conn *hc, struct weir__h2s *hs, const uint8_t *name,
                       size_t nlen, const uint8_t *value, size_t vlen)
{
    const struct weir__h2_limits *lim = &hc->lim;
    uint64_t size = (uint64_t)hs->decoded + nlen + vlen + 32;
    if (size > lim->max_header_bytes) {
        return 431; /* RFC 7541 4.1 sizes: an HPACK bomb is refused on its decoded size */
    }
    hs->decoded = (uint32_t)size;
    uint32_t noff, voff;
    uint32_t max = lim->max_header_bytes;
    int rc = append_bytes(hs, max, name, nlen, &noff);
    if (rc == 0) {
        rc = append_bytes(hs, max, value, vlen, &voff);
    }
    if (rc != 0) {
        return rc == WEIR_ENOMEM ? 500 : 431; /* out of memory is ours, not the client's */
    }
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
        hs->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
        return 0;
    }
    if (nlen > 0 && name[0] == ':') {
        int32_t *slot = NULL;
        uint32_t *len = NULL;
        switch (nlen) {
        case 5:
            slot = &hs->pp, len = &hs->lp;
            break;
        case 7:
            slot = name[1] == 'm' ? &hs->pm : &hs->ps;
            len = name[1] == 'm' ? &hs->lm : &hs->ls;
            break;
        case 9:
            slot = &hs->pr, len = &hs->lr;
            break;
        default:
            slot = &hs->pa, len = &hs->la;
            break;
        }
        *slot = (int32_t)voff;
        *len = (uint32_t)vlen;
        return 0;
    }
    if (hs->nfields >= lim->max_headers) {
        return 431;
    }
    if (hs->nfields == hs->fcap) {
        uint32_t cap = hs->fcap ? hs->fcap * 2 : 16;
        struct weir__h2_field *nf = weir__reallocarray(hs->fields, cap, sizeof(*nf));
        if (nf == NULL) {
            return 500;
        }
        hs->fields = nf;
        hs->fcap = cap;
    }
    hs->fields[hs->nfields++] = (struct weir__h2_field){noff, (uint32_t)nlen, voff, (uint32_t)vlen};
    return 0;
}

/* A trailer field, kept as an HTTP/1.1 line; any invalid one drops them all. */
static void store_trailer(struct weir__h2_conn *hc, struct weir__h2s *hs, const uint8_t *name,
                          size_t nlen, const uint8_t *value, size_t vlen)
{
    if (hs->trailers_bad) {
        return;
    }
    if (nlen == 0 || name[0] == ':' || !token_ok(name, nlen) || !value_ok(value, vlen)) {
        hs->trailers_bad = true;
        return;
    }
    size_t need = nlen + vlen + 4;
    uint32_t max = hc->lim.max_header_bytes;
    if (need > max || hs->tlen > max - need) {
        hs->trailers_bad = true;
        return;
    }
    if (hs->tlen + need > hs->tcap) {
        uint32_t cap = hs->tcap ? hs->tcap : 256;
        while (cap < hs->tlen + need) {
            cap *= 2;
        }
        char *nb = weir__realloc(hs->tb, cap);
        if (nb == NULL) {
            hs->trailers_bad = true;
            return;
        }
        hs->tb = nb;
        hs->tcap = cap;
    }
    char *p = hs->tb + hs->tlen;
    memcpy(p, name, nlen);
    p[nlen] = ':';
    p[nlen + 1] = ' ';
    memcpy(p + nlen + 2, value, vlen);
    p[nlen + 2 + vlen] = '\r';
    p[nlen + 3 + vlen] = '\n';
    hs->tlen += (uint32_t)need;
}

static void reset_head(struct weir__h2s *hs)
{
    hs->hlen = hs->nfields = hs->decoded = 0;
    hs->status = 0;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct weir__h2_conn *hc = ud;
    if (hc->client) {
        struct weir__h2s *hs = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
        if (hs != NULL && frame->hd.type == NGHTTP2_HEADERS && !hs->head_done) {
            reset_head(hs); /* a final response after interim ones: only it is kept */
        }
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    struct weir__h2s *hs = stream_new(hc, frame->hd.stream_id);
    if (hs == NULL || nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, hs) != 0) {
        if (hs != NULL) {
            stream_free(hs);
        }
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    hc->nrequests++;
    if (hc->lim.max_requests != 0 && hc->nrequests > hc->lim.max_requests) {
        /* Past the GOAWAY's last stream, sent in the same batch before nghttp2 knew. */
        hs->reject = -1;
        (void)nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                        NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    if (hc->lim.max_requests != 0 && hc->nrequests == hc->lim.max_requests) {
        /* The cap on a connection's streams: this one is served, later ones go elsewhere. */
        (void)nghttp2_submit_goaway(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR,
                                    NULL, 0);
    }
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)flags;
    struct weir__h2_conn *hc = ud;
    struct weir__h2s *hs = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (hs == NULL || hs->reject != 0) {
        return 0;
    }
    if (hc->client ? hs->head_done : frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        store_trailer(hc, hs, name, nlen, value, vlen);
        return 0;
    }
    bool pseudo = nlen > 0 && name[0] == ':';
    bool ok =
        pseudo ? pseudo_ok(name, nlen, value, vlen) : token_ok(name, nlen) && value_ok(value, vlen);
    if (!ok) {
        /* Not expressible in HTTP/1.1 safely: a stream error, the request never forwarded. */
        hs->reject = -1;
        (void)nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_PROTOCOL_ERROR);
        return 0;
    }
    int st = store_field(hc, hs, name, nlen, value, vlen);
    if (st != 0) {
        hs->reject = st;
    }
    return 0;
}

static int on_invalid_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                             size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags,
                             void *ud)
{
    (void)name, (void)nlen, (void)value, (void)vlen, (void)flags, (void)ud;
    /* nghttp2 would drop the field silently; a field that is not valid fails the stream. */
    (void)nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                    NGHTTP2_PROTOCOL_ERROR);
    struct weir__h2s *hs = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (hs != NULL) {
        hs->reject = -1;
    }
    return 0;
}

/* "host:port" with a port of 1 to 5 digits. */
static bool host_port(const char *a, uint32_t n)
{
    uint32_t i = n;
    while (i > 0 && a[i - 1] >= '0' && a[i - 1] <= '9') {
        i--;
    }
    return i >= 2 && a[i - 1] == ':' && n - i >= 1 && n - i <= 5;
}

static bool has_host(const struct weir__h2s *hs)
{
    for (uint32_t i = 0; i < hs->nfields; i++) {
        struct weir_iov n = weir__h2s_name(hs, i);
        if (n.len == 4 && memcmp(n.base, "host", 4) == 0) {
            return true;
        }
    }
    return false;
}

static void note_frame(struct weir__h2_conn *hc, const nghttp2_frame *frame)
{
    uint64_t now = weir_loop_now_ms(hc->loop);
    const struct weir__h2_limits *l = &hc->lim;
    bool control = false;
    switch (frame->hd.type) {
    case NGHTTP2_RST_STREAM:
        if (!bucket_take(&hc->resets, l->reset_burst, l->reset_rate, now)) {
            calm_down(hc, "stream reset rate"); /* CVE-2023-44487, rapid reset */
        }
        return;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        control = !(frame->hd.flags & NGHTTP2_FLAG_ACK);
        break;
    case NGHTTP2_PRIORITY:
        control = true;
        break;
    case NGHTTP2_DATA:
        control = frame->hd.length == 0 && !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
        break;
    case NGHTTP2_HEADERS:
        control = frame->headers.cat == NGHTTP2_HCAT_HEADERS && frame->headers.nva == NULL &&
                  !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
        break;
    default:
        break;
    }
    if (control && !bucket_take(&hc->control, l->control_burst, l->control_rate, now)) {
        calm_down(hc, "control frame rate");
    }
}

/* The end of a HEADERS frame: a request or response head, or trailers. */
static void headers_recv(struct weir__h2_conn *hc, struct weir__h2s *hs, const nghttp2_frame *frame)
{
    bool head = hc->client ? !hs->head_done : frame->headers.cat == NGHTTP2_HCAT_REQUEST;
    if (!head) {
        hs->trailers_in = true;
        if (!hs->trailers_bad && hs->tlen > 0) {
            hs->vst.trailers = (struct weir_iov){hs->tb, hs->tlen};
        }
        return;
    }
    if (hc->client && hs->status >= 100 && hs->status < 200) {
        return; /* interim: the final response follows */
    }
    hs->head_done = true;
    if (!hc->client && hs->reject == 0 && hs->pa < 0 && !has_host(hs)) {
        hs->reject = 400; /* no authority at all: nothing to route or forward on */
    }
    if (!hc->client && hs->reject == 0 && hs->lm == 7 &&
        memcmp(hs->hb + hs->pm, "CONNECT", 7) == 0 && hs->pr < 0 &&
        !(hs->pa >= 0 && host_port(hs->hb + hs->pa, hs->la))) {
        /* CONNECT's target is host:port (RFC 9113 8.5), as in HTTP/1.1. An extended CONNECT
           (RFC 8441, with :protocol, which nghttp2 accepts only as we announced it) has a
           :path and :scheme instead, and its :authority is a Host. */
        hs->reject = 400;
    }
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct weir__h2_conn *hc = ud;
    if (!hc->client) {
        note_frame(hc, frame);
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        hc->goaway = true;
        hc->goaway_graceful = frame->goaway.error_code == NGHTTP2_NO_ERROR;
        hc->goaway_last = frame->goaway.last_stream_id;
        return 0;
    }
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        hc->ping_out = false;
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
        return 0;
    }
    struct weir__h2s *hs = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (hs == NULL) {
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS) {
        headers_recv(hc, hs, frame);
    }
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        hs->end_in = true;
        hs->vst.readable = true;
    }
    if (hs->reject != -1) {
        mark_ready(hc, hs);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    struct weir__h2_conn *hc = ud;
    struct weir__h2s *hs = nghttp2_session_get_stream_user_data(ng, id);
    if (hs == NULL || hs->done || hs->reject != 0) {
        /* Nobody reads it: give the window back at once. */
        (void)nghttp2_session_consume(ng, id, len);
        if (hs != NULL && hs->discarding && !hs->closed) {
            hs->discarded += len;
            if (hs->discarded > H2_DISCARD_MAX) {
                (void)nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
                hs->discarding = false;
            }
        }
        return 0;
    }
    struct weir__buf *b = &hs->rbuf;
    if (b->data == NULL) {
        b->data = weir__malloc(hc->lim.initial_window);
        if (b->data == NULL) {
            (void)nghttp2_session_consume(ng, id, len);
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        b->cap = hc->lim.initial_window;
    }
    if (weir__buf_space(b) < len) {
        weir__buf_compact(b);
    }
    if (weir__buf_space(b) < len) {
        /* More than the window we gave: the peer broke flow control. */
        (void)nghttp2_session_consume(ng, id, len);
        (void)nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_FLOW_CONTROL_ERROR);
        return 0;
    }
    memcpy(b->data + b->wpos, data, len);
    b->wpos += (uint32_t)len;
    hs->vst.readable = true;
    mark_ready(hc, hs);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    struct weir__h2_conn *hc = ud;
    struct weir__h2s *hs = nghttp2_session_get_stream_user_data(ng, id);
    if (hs == NULL) {
        return 0;
    }
    hs->closed = true;
    hs->close_code = code;
    if (hs->owner == NULL && (hs->done || !hs->started)) {
        stream_free(hs);
        return 0;
    }
    if (hc->client && code == NGHTTP2_NO_ERROR && hs->end_in) {
        mark_ready(hc, hs); /* complete: the owner reads what is left */
        return 0;
    }
    hs->refused = hc->client && code == NGHTTP2_REFUSED_STREAM && !hs->head_done;
    /* Reset (or the connection is going): the owner sees a hung-up peer. */
    hs->vst.hangup = true; /* not eof: what arrived before is read first, then an error */
    hs->vst.readable = true;
    hs->vst.writable = true;
    mark_ready(hc, hs);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct weir__h2_conn *hc = ud;
    if (hc->client || (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        return 0;
    }
    struct weir__h2s *hs = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (hs != NULL && !hs->end_in) {
        /*
         * The response is complete before the request (an origin that answered early). The
         * rest of the body is read and thrown away, as a lingering close does for HTTP/1.1:
         * RFC 9113 8.1 allows RST_STREAM(NO_ERROR) at once, but clients (curl) then report
         * the response as failed. Past H2_DISCARD_MAX bytes the stream is reset after all.
         */
        hs->discarding = true;
    }
    return 0;
}

/* ---- the response ---- */

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)id;
    struct weir__h2_conn *hc = ud;
    struct weir__h2s *hs = src->ptr;
    WEIR_CHECK_OBJ(hs, H2S_MAGIC);
    size_t have = hs->slen - hs->soff;
    size_t n = have < length ? have : length;
    if (n > 0) {
        memcpy(buf, hs->sb + hs->soff, n);
        hs->soff += (uint32_t)n;
        if (hs->soff == hs->slen) {
            hs->soff = hs->slen = 0;
        }
        if (!hs->vst.writable && hs->owner != NULL) {
            hs->vst.writable = true;
            mark_ready(hc, hs);
        }
    }
    if (hs->slen == 0 && hs->out_eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (hs->tnv != NULL) {
            /* Trailers end the stream instead (nghttp2 copies them at once). */
            if (nghttp2_submit_trailer(ng, hs->id, hs->tnv, hs->ntnv) == 0) {
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
            weir__free(hs->tnv);
            hs->tnv = NULL;
        }
        return (ssize_t)n;
    }
    return n > 0 ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
}

static bool connection_specific(struct weir_iov n)
{
    return weir_iov_ieq(n, WEIR_IOV_LIT("connection")) ||
           weir_iov_ieq(n, WEIR_IOV_LIT("keep-alive")) ||
           weir_iov_ieq(n, WEIR_IOV_LIT("proxy-connection")) ||
           weir_iov_ieq(n, WEIR_IOV_LIT("transfer-encoding")) ||
           weir_iov_ieq(n, WEIR_IOV_LIT("upgrade"));
}

int weir__h2s_respond(struct weir__h2s *hs, int status, const struct weir_headers *h, bool body)
{
    struct weir__h2_conn *hc = hs->hc;
    if (hc == NULL || hs->closed) {
        return WEIR_ECLOSED;
    }
    size_t n = h ? weir_headers_count(h) : 0, names = 0;
    for (size_t i = 0; i < n; i++) {
        names += weir_headers_at(h, i)->name.len;
    }
    nghttp2_nv *nva = weir__malloc((n + 1) * sizeof(*nva) + names + 4);
    if (nva == NULL) {
        return WEIR_ENOMEM;
    }
    char *lower = (char *)(nva + n + 1);
    char *st = lower + names;
    st[0] = (char)('0' + status / 100 % 10);
    st[1] = (char)('0' + status / 10 % 10);
    st[2] = (char)('0' + status % 10);
    size_t k = 0;
    nva[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st, 7, 3, NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < n; i++) {
        const struct weir_header *f = weir_headers_at(h, i);
        if (connection_specific(f->name)) {
            continue;
        }
        for (size_t j = 0; j < f->name.len; j++) {
            char c = f->name.base[j];
            lower[j] = c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
        }
        nva[k++] = (nghttp2_nv){(uint8_t *)lower, (uint8_t *)f->value.base, f->name.len,
                                f->value.len, NGHTTP2_NV_FLAG_NONE};
        lower += f->name.len;
    }
    nghttp2_data_provider prd = {.source.ptr = hs, .read_callback = data_read};
    int rc = nghttp2_submit_response(hc->ng, hs->id, nva, k, body ? &prd : NULL);
    weir__free(nva);
    if (rc != 0) {
        return rc == NGHTTP2_ERR_NOMEM ? WEIR_ENOMEM : WEIR_EINVAL;
    }
    hs->submitted = true;
    hs->has_body = body;
    schedule(hc);
    return 0;
}

int weir__h2s_continue(struct weir__h2s *hs)
{
    struct weir__h2_conn *hc = hs->hc;
    if (hc == NULL || hs->closed) {
        return WEIR_ECLOSED;
    }
    static const nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3,
                                  NGHTTP2_NV_FLAG_NONE};
    if (nghttp2_submit_headers(hc->ng, NGHTTP2_FLAG_NONE, hs->id, NULL, &nv, 1, NULL) < 0) {
        return WEIR_ENOMEM;
    }
    schedule(hc);
    return 0;
}

/* A stream refused before it became a request: a short plain-text answer, no owner. */
static void reject_stream(struct weir__h2_conn *hc, struct weir__h2s *hs)
{
    hs->done = true;
    if (hs->reject < 0 || hs->closed) {
        return; /* reset already */
    }
    const char *reason = hs->reject == 431   ? "Request Header Fields Too Large\n"
                         : hs->reject == 400 ? "Bad Request\n"
                                             : "Internal Server Error\n";
    size_t len = strlen(reason);
    hs->sb = weir__malloc(len);
    if (hs->sb == NULL) {
        (void)nghttp2_submit_rst_stream(hc->ng, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    memcpy(hs->sb, reason, len);
    hs->scap = hs->slen = (uint32_t)len;
    hs->out_eof = true;
    weir_log(WEIR_LOG_DEBUG, "HTTP/2 stream %d refused with %d", (int)hs->id, hs->reject);
    /* The fields are given without a map: build a tiny one by hand. */
    char clen[24];
    int cl = snprintf(clen, sizeof(clen), "%zu", len);
    nghttp2_nv nva[3] = {
        {(uint8_t *)":status",
         (uint8_t *)(hs->reject == 431   ? "431"
                     : hs->reject == 400 ? "400"
                                         : "500"),
         7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"text/plain", 12, 10, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-length", (uint8_t *)clen, 14, cl > 0 ? (size_t)cl : 0,
         NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider prd = {.source.ptr = hs, .read_callback = data_read};
    if (nghttp2_submit_response(hc->ng, hs->id, nva, 3, &prd) != 0) {
        (void)nghttp2_submit_rst_stream(hc->ng, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    hs->submitted = hs->has_body = true;
}

void weir__h2s_done(struct weir__h2s *hs, bool complete)
{
    WEIR_CHECK_OBJ(hs, H2S_MAGIC);
    struct weir__h2_conn *hc = hs->hc;
    hs->owner = NULL;
    hs->done = true;
    if (hc != NULL) {
        WEIR_ASSERT(hc->owned > 0);
        hc->owned--;
    }
    if (hc == NULL || hs->closed) {
        stream_free(hs);
        return;
    }
    unready(hc, hs);
    uint32_t unread = weir__buf_len(&hs->rbuf);
    if (unread > 0) {
        /* Nobody will read it: the window it holds goes back (the rest is discarded). */
        (void)nghttp2_session_consume(hc->ng, hs->id, unread);
    }
    weir__free(hs->rbuf.data);
    hs->rbuf = (struct weir__buf){0};
    if (hc->client) {
        /* Still open: the exchange was cut short (client gone, timeout); the origin stops. */
        (void)nghttp2_submit_rst_stream(hc->ng, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_CANCEL);
    } else if (!complete || !hs->submitted) {
        (void)nghttp2_submit_rst_stream(hc->ng, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_INTERNAL_ERROR);
    } else if (hs->has_body) {
        hs->out_eof = true;
        (void)nghttp2_session_resume_data(hc->ng, hs->id);
    }
    schedule(hc);
}

/* ---- the client side: requests to an origin ---- */

static bool request_field_dropped(struct weir_iov n, struct weir_iov v)
{
    if (weir_iov_ieq(n, WEIR_IOV_LIT("host")) || connection_specific(n)) {
        return true; /* :authority carries the host */
    }
    return weir_iov_ieq(n, WEIR_IOV_LIT("te")) && !weir_iov_ieq(v, WEIR_IOV_LIT("trailers"));
}

/* Lowercases n bytes of src into dst. */
static void lower_into(char *dst, const char *src, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        char c = src[j];
        dst[j] = c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
    }
}

struct weir__h2s *weir__h2_request(struct weir__h2_conn *hc, void *owner, struct weir_iov method,
                                   struct weir_iov scheme, struct weir_iov authority,
                                   struct weir_iov path, const struct weir_headers *h,
                                   bool te_trailers, bool body, int *err)
{
    size_t n = h ? weir_headers_count(h) : 0, names = 0;
    for (size_t i = 0; i < n; i++) {
        names += weir_headers_at(h, i)->name.len;
    }
    nghttp2_nv *nva = weir__malloc((n + 5) * sizeof(*nva) + names + 1);
    struct weir__h2s *hs = nva != NULL ? stream_new(hc, 0) : NULL;
    if (hs == NULL) {
        weir__free(nva);
        *err = WEIR_ENOMEM;
        return NULL;
    }
    char *lower = (char *)(nva + n + 5);
    size_t k = 0;
#define NV(nm, v)                                                                                  \
    (nghttp2_nv){(uint8_t *)(nm), (uint8_t *)(v).base, sizeof(nm) - 1, (v).len,                    \
                 NGHTTP2_NV_FLAG_NONE}
    nva[k++] = NV(":method", method);
    nva[k++] = NV(":scheme", scheme);
    nva[k++] = NV(":authority", authority);
    nva[k++] = NV(":path", path);
    if (te_trailers) {
        nva[k++] = NV("te", WEIR_IOV_LIT("trailers"));
    }
#undef NV
    for (size_t i = 0; i < n; i++) {
        const struct weir_header *f = weir_headers_at(h, i);
        if (request_field_dropped(f->name, f->value)) {
            continue;
        }
        lower_into(lower, f->name.base, f->name.len);
        nva[k++] = (nghttp2_nv){(uint8_t *)lower, (uint8_t *)f->value.base, f->name.len,
                                f->value.len, NGHTTP2_NV_FLAG_NONE};
        lower += f->name.len;
    }
    nghttp2_data_provider prd = {.source.ptr = hs, .read_callback = data_read};
    int32_t id = nghttp2_submit_request(hc->ng, NULL, nva, k, body ? &prd : NULL, hs);
    weir__free(nva);
    if (id < 0) {
        stream_free(hs);
        *err = id == NGHTTP2_ERR_NOMEM ? WEIR_ENOMEM : WEIR_ELIMIT;
        return NULL;
    }
    hs->id = id;
    hs->owner = owner;
    hs->started = hs->submitted = true;
    hs->has_body = body;
    hs->end_in = false;
    hc->owned++;
    hc->opened++;
    schedule(hc);
    return hs;
}

void weir__h2s_end_body(struct weir__h2s *hs)
{
    struct weir__h2_conn *hc = hs->hc;
    hs->out_eof = true;
    if (hc != NULL && !hs->closed && hs->has_body) {
        (void)nghttp2_session_resume_data(hc->ng, hs->id);
        schedule(hc);
    }
}

int weir__h2s_trailers(struct weir__h2s *hs, struct weir_iov lines)
{
    size_t count = 0;
    for (size_t i = 0; i < lines.len; i++) {
        count += lines.base[i] == '\n';
    }
    if (count == 0) {
        return 0;
    }
    nghttp2_nv *nva = weir__malloc(count * sizeof(*nva) + lines.len);
    if (nva == NULL) {
        return WEIR_ENOMEM;
    }
    char *bytes = (char *)(nva + count);
    memcpy(bytes, lines.base, lines.len);
    size_t k = 0, i = 0;
    while (i < lines.len && k < count) {
        char *line = bytes + i;
        char *eol = memchr(line, '\n', lines.len - i);
        size_t len = eol != NULL ? (size_t)(eol - line) : lines.len - i;
        i += len + 1;
        char *colon = memchr(line, ':', len);
        if (colon == NULL || colon == line) {
            continue;
        }
        size_t nlen = (size_t)(colon - line);
        char *v = colon + 1;
        char *end = line + len;
        while (v < end && (*v == ' ' || *v == '\t')) {
            v++;
        }
        while (end > v && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }
        struct weir_iov name = {line, nlen};
        if (connection_specific(name) || weir_iov_ieq(name, WEIR_IOV_LIT("content-length")) ||
            weir_iov_ieq(name, WEIR_IOV_LIT("host")) || weir_iov_ieq(name, WEIR_IOV_LIT("te")) ||
            weir_iov_ieq(name, WEIR_IOV_LIT("trailer"))) {
            continue;
        }
        lower_into(line, line, nlen);
        nva[k++] = (nghttp2_nv){(uint8_t *)line, (uint8_t *)v, nlen, (size_t)(end - v),
                                NGHTTP2_NV_FLAG_NONE};
    }
    if (k == 0) {
        weir__free(nva);
        return 0;
    }
    weir__free(hs->tnv);
    hs->tnv = nva;
    hs->ntnv = k;
    return 0;
}

bool weir__h2_conn_can_open(const struct weir__h2_conn *hc)
{
    return !hc->goaway && !hc->fatal && hc->owned < weir__h2_conn_max_streams(hc) &&
           (hc->stream_cap == 0 || hc->opened < hc->stream_cap) &&
           nghttp2_session_get_next_stream_id(hc->ng) < (1u << 31) - 2;
}

uint32_t weir__h2_conn_capped_at(const struct weir__h2_conn *hc)
{
    if (!hc->client || !hc->goaway || !hc->goaway_graceful || hc->goaway_last <= 0) {
        return 0;
    }
    uint32_t served = ((uint32_t)hc->goaway_last + 1) / 2; /* our streams are 1, 3, 5... */
    return served < hc->opened ? served : 0; /* only a GOAWAY that refused streams teaches */
}

void weir__h2_conn_set_stream_cap(struct weir__h2_conn *hc, uint32_t cap)
{
    hc->stream_cap = cap;
}

uint32_t weir__h2_conn_max_streams(const struct weir__h2_conn *hc)
{
    return nghttp2_session_get_remote_settings(hc->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

int weir__h2_conn_ping(struct weir__h2_conn *hc)
{
    if (nghttp2_submit_ping(hc->ng, NGHTTP2_FLAG_NONE, NULL) != 0) {
        return WEIR_ENOMEM;
    }
    hc->ping_out = true;
    schedule(hc);
    return 0;
}

bool weir__h2_conn_pinged(const struct weir__h2_conn *hc)
{
    return !hc->ping_out;
}

/* ---- the virtual stream a session sees ---- */

static ssize_t vst_read(struct weir__stream *st, char *buf, size_t len)
{
    struct weir__h2s *hs = h2s_of(st);
    struct weir__buf *b = &hs->rbuf;
    size_t have = weir__buf_len(b);
    size_t n = have < len ? have : len;
    if (n > 0) {
        memcpy(buf, b->data + b->rpos, n);
        weir__buf_consume(b, (uint32_t)n);
        if (hs->hc != NULL) {
            /* What the session took is room again: only now may the peer send more. A stream
               nghttp2 has closed (a small response read after its END_STREAM) still holds its
               bytes against the connection's window: they go back too. */
            if (!hs->closed) {
                (void)nghttp2_session_consume(hs->hc->ng, hs->id, n);
            } else {
                (void)nghttp2_session_consume_connection(hs->hc->ng, n);
            }
            schedule(hs->hc);
        }
    }
    if (weir__buf_len(b) == 0) {
        if (hs->end_in) {
            st->eof = true;
            weir__free(b->data);
            *b = (struct weir__buf){0};
        }
        if (n == 0 && st->hangup) {
            /* Reset before its end: an error, never an end (a body without a length would
               otherwise look complete). */
            return -ECONNRESET;
        }
        if (n == 0) {
            st->readable = false;
        }
    }
    return (ssize_t)n;
}

static ssize_t vst_flush(struct weir__stream *st, struct weir__outq *q)
{
    struct weir__h2s *hs = h2s_of(st);
    struct weir__h2_conn *hc = hs->hc;
    if (hc == NULL || hs->closed) {
        return -EPIPE;
    }
    if (!hs->has_body) {
        size_t n = weir__outq_len(q); /* a bodyless response: nothing may follow the head */
        weir__outq_reset(q);
        return (ssize_t)n;
    }
    if (hs->sb == NULL) {
        /* the worker's I/O buffers are limits.buffer_size too: one from its free list */
        struct weir__buf b;
        if (weir__buf_acquire(hs->pool, &b) != 0) {
            return -ENOMEM;
        }
        hs->sb = b.data;
        hs->scap = b.cap;
        hs->sb_pooled = true;
    }
    size_t total = 0;
    while (!weir__outq_empty(q)) {
        if (hs->slen == hs->scap && hs->soff > 0) {
            memmove(hs->sb, hs->sb + hs->soff, hs->slen - hs->soff);
            hs->slen -= hs->soff;
            hs->soff = 0;
        }
        size_t room = hs->scap - hs->slen;
        if (room == 0) {
            break;
        }
        const struct iovec *v = &q->v[q->i];
        size_t take = v->iov_len < room ? v->iov_len : room;
        memcpy(hs->sb + hs->slen, v->iov_base, take);
        hs->slen += (uint32_t)take;
        weir__outq_consume(q, take);
        total += take;
    }
    if (weir__outq_empty(q)) {
        weir__outq_reset(q);
    } else {
        st->writable = false;
    }
    if (total > 0) {
        (void)nghttp2_session_resume_data(hc->ng, hs->id);
        schedule(hc);
    }
    return (ssize_t)total;
}

/* ---- the connection ---- */

static void run_ready(struct weir__h2_conn *hc)
{
    while (hc->ready != NULL) {
        struct weir__h2s *hs = hc->ready;
        hc->ready = hs->rnext;
        hs->rnext = NULL;
        hs->queued = false;
        if (hs->started) {
            if (hs->owner != NULL) {
                hc->ops->event(hc->data, hs);
            }
            continue;
        }
        if (!hs->head_done) {
            continue;
        }
        hs->started = true;
        if (hs->reject != 0) {
            reject_stream(hc, hs);
            continue;
        }
        hs->method = (struct weir_iov){hs->hb + hs->pm, hs->lm};
        hs->path = hs->pp >= 0 ? (struct weir_iov){hs->hb + hs->pp, hs->lp} : WEIR_IOV_LIT("");
        hs->authority = hs->pa >= 0 ? (struct weir_iov){hs->hb + hs->pa, hs->la} : WEIR_IOV_LIT("");
        hs->scheme = hs->ps >= 0 ? (struct weir_iov){hs->hb + hs->ps, hs->ls} : WEIR_IOV_LIT("");
        hs->protocol = hs->pr >= 0 ? (struct weir_iov){hs->hb + hs->pr, hs->lr} : WEIR_IOV_LIT("");
        hs->vst.eof = hs->end_in && weir__buf_len(&hs->rbuf) == 0;
        hc->owned++;
        if (hc->ops->request(hc->data, hs) != 0) {
            hc->owned--;
            hs->owner = NULL;
            hs->done = true;
            if (!hs->closed) {
                (void)nghttp2_submit_rst_stream(hc->ng, NGHTTP2_FLAG_NONE, hs->id,
                                                NGHTTP2_INTERNAL_ERROR);
            } else {
                stream_free(hs);
            }
        }
    }
}

/* Gathers frames into obuf and writes them. 0, or -errno. */
static int flush_out(struct weir__h2_conn *hc)
{
    struct weir__buf *o = &hc->obuf;
    for (;;) {
        while (o->data == NULL || weir__buf_space(o) > 0) {
            if (hc->pend_len == 0) {
                const uint8_t *p = NULL;
                ssize_t n = nghttp2_session_mem_send(hc->ng, &p);
                if (n < 0) {
                    hc->fatal = true;
                    return n == NGHTTP2_ERR_NOMEM ? WEIR_ENOMEM : WEIR_EINVAL;
                }
                if (n == 0) {
                    break;
                }
                hc->pend = p;
                hc->pend_len = (size_t)n;
            }
            if (o->data == NULL && weir__buf_acquire(hc->pool, o) != 0) {
                return WEIR_ENOMEM;
            }
            size_t take = hc->pend_len < weir__buf_space(o) ? hc->pend_len : weir__buf_space(o);
            memcpy(o->data + o->wpos, hc->pend, take);
            o->wpos += (uint32_t)take;
            hc->pend += take;
            hc->pend_len -= take;
        }
        if (weir__buf_len(o) == 0) {
            weir__buf_release(hc->pool, o);
            return 0;
        }
        if (!hc->tr->writable) {
            return 0;
        }
        ssize_t n = weir__stream_write(hc->tr, o->data + o->rpos, weir__buf_len(o));
        if (n < 0) {
            return (int)n;
        }
        weir__buf_consume(o, (uint32_t)n);
        if (weir__buf_len(o) > 0) {
            return 0; /* the socket is full (writable cleared) */
        }
    }
}

static bool want_more(const struct weir__h2_conn *hc)
{
    return nghttp2_session_want_read(hc->ng) || nghttp2_session_want_write(hc->ng) ||
           weir__buf_len(&hc->obuf) > 0 || hc->pend_len > 0;
}

int weir__h2_conn_io(struct weir__h2_conn *hc)
{
    struct weir__stream *tr = hc->tr;
    for (int round = 0; round < H2_IO_ROUNDS; round++) {
        if (weir__buf_len(&tr->in) > 0 && !hc->fatal) {
            ssize_t n = nghttp2_session_mem_recv(hc->ng, (const uint8_t *)tr->in.data + tr->in.rpos,
                                                 weir__buf_len(&tr->in));
            weir__buf_consume(&tr->in, weir__buf_len(&tr->in));
            if (n < 0) {
                /* Bad preface, a flood, or a fatal error nghttp2 has answered with GOAWAY. */
                weir_log(WEIR_LOG_DEBUG, "HTTP/2 connection error: %s", nghttp2_strerror((int)n));
                hc->fatal = true;
            }
        }
        run_ready(hc);
        int rc = flush_out(hc);
        if (rc < 0) {
            return rc;
        }
        if (hc->fatal) {
            return 1; /* what could be said (GOAWAY) is written */
        }
        if (hc->ready != NULL) {
            continue;
        }
        if (!tr->readable || tr->eof || !nghttp2_session_want_read(hc->ng)) {
            break;
        }
        ssize_t r = weir__stream_read(tr, hc->pool);
        if (r < 0) {
            return (int)r;
        }
        if (r == 0 && !tr->eof) {
            break;
        }
    }
    if (tr->readable && !tr->eof && nghttp2_session_want_read(hc->ng)) {
        schedule(hc); /* more to read: next turn, after the other connections */
    }
    if (weir__buf_len(&tr->in) == 0) {
        weir__buf_release(hc->pool, &tr->in);
    }
    if (tr->eof || tr->hangup) {
        return 1;
    }
    return want_more(hc) ? 0 : 1;
}

static void kick_cb(struct weir_loop *loop, struct weir__defer *d)
{
    (void)loop;
    struct weir__h2_conn *hc = WEIR_CONTAINER_OF(d, struct weir__h2_conn, kick);
    int rc = weir__h2_conn_io(hc);
    if (rc != 0 && hc->ops->over != NULL) {
        hc->ops->over(hc->data, rc); /* may free hc */
    }
}

static struct weir__h2_conn *conn_new(struct weir_loop *loop, struct weir__stream *tr,
                                      struct weir__bufpool *pool, const struct weir__h2_limits *lim,
                                      const struct weir__h2_ops *ops, void *data, bool client)
{
    struct weir__h2_conn *hc = weir__calloc(1, sizeof(*hc));
    if (hc == NULL) {
        return NULL;
    }
    hc->loop = loop;
    hc->tr = tr;
    hc->pool = pool;
    hc->ops = ops;
    hc->data = data;
    hc->lim = *lim;
    hc->client = client;
    hc->kick.fn = kick_cb;
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_mem mem = {NULL, ng_malloc, ng_free, ng_calloc, ng_realloc};
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
        goto fail;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, on_invalid_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
    if (!client && lim->reset_burst != 0) {
        /* nghttp2's own net behind weir's, twice as wide so weir's GOAWAY comes first */
        nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)lim->reset_burst * 2,
                                                   (uint64_t)lim->reset_rate * 2 + 1);
    }
    int rc = client ? nghttp2_session_client_new3(&hc->ng, cbs, hc, opt, &mem)
                    : nghttp2_session_server_new3(&hc->ng, cbs, hc, opt, &mem);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    cbs = NULL;
    opt = NULL;
    if (rc != 0) {
        goto fail;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, client ? 0 : lim->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, lim->initial_window},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, lim->max_frame_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, lim->max_header_bytes},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* sent only with extended_connect */
    };
    size_t niv = sizeof(iv) / sizeof(iv[0]) - (client || !lim->extended_connect ? 1 : 0);
    uint64_t conn_window = (uint64_t)lim->initial_window * lim->max_concurrent_streams;
    if (conn_window > (1u << 30)) {
        conn_window = 1u << 30;
    }
    if (nghttp2_submit_settings(hc->ng, NGHTTP2_FLAG_NONE, iv, niv) != 0 ||
        (conn_window > 65535 && nghttp2_session_set_local_window_size(hc->ng, NGHTTP2_FLAG_NONE, 0,
                                                                      (int32_t)conn_window) != 0)) {
        goto fail;
    }
    return hc;
fail:
    if (cbs != NULL) {
        nghttp2_session_callbacks_del(cbs);
    }
    if (opt != NULL) {
        nghttp2_option_del(opt);
    }
    if (hc->ng != NULL) {
        nghttp2_session_del(hc->ng);
    }
    weir__free(hc);
    return NULL;
}

struct weir__h2_conn *weir__h2_server_new(struct weir_loop *loop, struct weir__stream *tr,
                                          struct weir__bufpool *pool,
                                          const struct weir__h2_limits *lim,
                                          const struct weir__h2_ops *ops, void *data)
{
    return conn_new(loop, tr, pool, lim, ops, data, false);
}

struct weir__h2_conn *weir__h2_client_new(struct weir_loop *loop, struct weir__stream *tr,
                                          struct weir__bufpool *pool,
                                          const struct weir__h2_limits *lim,
                                          const struct weir__h2_ops *ops, void *data)
{
    struct weir__h2_conn *hc = conn_new(loop, tr, pool, lim, ops, data, true);
    if (hc != NULL) {
        schedule(hc); /* the preface and SETTINGS go out at once */
    }
    return hc;
}

struct weir__h2s *weir__h2_conn_free(struct weir__h2_conn *hc)
{
    struct weir__h2s *orphans = NULL;
    if (hc == NULL) {
        return NULL;
    }
    weir__loop_defer_cancel(hc->loop, &hc->kick);
    while (hc->streams != NULL) {
        struct weir__h2s *hs = hc->streams;
        hc->streams = hs->next;
        if (hs->next != NULL) {
            hs->next->prev = NULL;
        }
        hs->prev = hs->next = NULL;
        hs->queued = false;
        hs->rnext = NULL;
        hs->hc = NULL;
        if (hs->owner == NULL) {
            stream_free(hs);
            continue;
        }
        hs->closed = true;
        hs->vst.hangup = true;
        hs->vst.readable = hs->vst.writable = true;
        hs->next = orphans;
        orphans = hs;
    }
    hc->ready = NULL;
    nghttp2_session_del(hc->ng);
    weir__buf_release(hc->pool, &hc->obuf);
    while (hc->spare != NULL) {
        struct weir__h2s *next = hc->spare->next;
        spare_free(hc->spare);
        hc->spare = next;
    }
    weir__free(hc);
    return orphans;
}

uint32_t weir__h2_conn_owned(const struct weir__h2_conn *hc)
{
    return hc->owned;
}

void weir__h2_conn_shutdown(struct weir__h2_conn *hc)
{
    int32_t last = nghttp2_session_get_last_proc_stream_id(hc->ng);
    (void)nghttp2_submit_goaway(hc->ng, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
    schedule(hc);
}
