/*
 * Active health checks (see weir/lb.h): one background-service thread runs, for every
 * registered set, a round of probes every interval, one probe per backend of the set as it is
 * at that moment. A probe is a non-blocking connect (TCP), then for HTTP one request with
 * Connection: close and a bounded read of the answer, over TLS when the check says so (the
 * handshake and its verification are part of the check, under its timeout). rise passes in a row
 * bring a down backend up, fall failures in a row take an up one down.
 */
#include "lb/lb_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/assert.h"
#include "core/loop.h"
#include "net/sock.h"
#include "net/stream.h"
#include "tls/tls.h"
#include "weir/error.h"
#include "weir/log.h"
#include "weir/server.h"

#define MAX_RANGES 16
#define READ_MAX   8192 /* head and the first part of the body */
#define REQ_MAX    1024

struct probe;

struct entry {
    struct weir_health *h;
    struct weir_lb *lb;
    struct weir_health_check hc;
    struct weir_status_range ranges[MAX_RANGES];
    char *method, *path, *host, *expect_body;
    bool tls;
    struct weir_peer peer; /* tls: the TLS identity (sni, verification, client context) */
    struct weir_timer round;
    struct probe *probes; /* in flight */
    struct entry *next;
};

struct weir_health {
    struct entry *entries;
    struct weir_loop *loop; /* while running */
};

#define PROBE_MAGIC 0x70726f62u

struct probe {
    uint32_t magic;
    struct entry *e;
    struct weir_backend *b;
    struct weir__stream st; /* the socket, and its TLS for a TLS check */
    struct weir_timer timer;
    struct weir__defer reap;
    struct probe *prev, *next;
    bool connected;
    bool secured; /* a TLS check's handshake is done */
    bool done;
    size_t req_len, sent, got;
    char req[REQ_MAX];
    char buf[READ_MAX];
};

/* ---- setup ---- */

int weir_health_new(struct weir_health **out)
{
    *out = weir__calloc(1, sizeof(struct weir_health));
    return *out != NULL ? 0 : WEIR_ENOMEM;
}

static char *dup_or_null(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    size_t n = strlen(s);
    char *d = weir__malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n + 1);
    }
    return d;
}

static bool printable(const char *s)
{
    for (; s && *s; s++) {
        if ((unsigned char)*s <= ' ' || *s == 0x7f) {
            return false;
        }
    }
    return true;
}

static void entry_free(struct entry *e)
{
    weir__free(e->method);
    weir__free(e->path);
    weir__free(e->host);
    weir__free(e->expect_body);
    weir__free(e);
}

int weir_health_add(struct weir_health *h, struct weir_lb *lb, const struct weir_health_check *hc)
{
    if (h == NULL || lb == NULL || hc == NULL || hc->nstatuses > MAX_RANGES ||
        (unsigned)hc->type > WEIR_HEALTH_TCP) {
        return WEIR_EINVAL;
    }
    for (struct entry *o = h->entries; o; o = o->next) {
        if (o->lb == lb) {
            return WEIR_EINVAL;
        }
    }
    struct entry *e = weir__calloc(1, sizeof(*e));
    if (e == NULL) {
        return WEIR_ENOMEM;
    }
    e->h = h;
    e->lb = lb;
    e->hc = *hc;
    struct weir_health_check *c = &e->hc;
    c->interval_ms = c->interval_ms ? c->interval_ms : 5000;
    c->timeout_ms = c->timeout_ms ? c->timeout_ms : 2000;
    c->rise = c->rise ? c->rise : 2;
    c->fall = c->fall ? c->fall : 3;
    if (c->nstatuses == 0) {
        e->ranges[0] = (struct weir_status_range){200, 399};
        c->nstatuses = 1;
    } else {
        memcpy(e->ranges, hc->statuses, hc->nstatuses * sizeof(e->ranges[0]));
    }
    c->statuses = e->ranges;
    e->method = dup_or_null(hc->method ? hc->method : "GET");
    e->path = dup_or_null(hc->path ? hc->path : "/");
    e->host = dup_or_null(hc->host);
    e->expect_body = dup_or_null(hc->expect_body);
    if (hc->tls != NULL && hc->type == WEIR_HEALTH_HTTP) {
        e->tls = true;
        e->peer = *hc->tls;
        e->peer.tls = true;
        e->peer.backend = NULL;
        c->tls = &e->peer;
        if (hc->host == NULL && e->peer.sni[0] != '\0') {
            e->host = dup_or_null(e->peer.sni);
        }
    } else {
        c->tls = NULL;
    }
    bool ok = e->method != NULL && e->path != NULL &&
              (e->host != NULL || (hc->host == NULL && (!e->tls || e->peer.sni[0] == '\0'))) &&
              (hc->expect_body == NULL || e->expect_body != NULL);
    if (!ok) {
        entry_free(e);
        return WEIR_ENOMEM;
    }
    bool valid = c->timeout_ms <= c->interval_ms && printable(e->method) && printable(e->path) &&
                 e->path[0] == '/' && printable(e->host) &&
                 (strcmp(e->method, "GET") == 0 || strcmp(e->method, "HEAD") == 0) &&
                 strlen(e->path) + (e->host ? strlen(e->host) : 0) < REQ_MAX - 128 &&
                 (e->expect_body == NULL || strlen(e->expect_body) <= WEIR_HEALTH_BODY_SCAN);
    for (size_t i = 0; i < c->nstatuses; i++) {
        valid = valid && e->ranges[i].lo >= 100 && e->ranges[i].lo <= e->ranges[i].hi &&
                e->ranges[i].hi <= 599;
    }
    if (!valid) {
        entry_free(e);
        return WEIR_EINVAL;
    }
    e->next = h->entries;
    h->entries = e;
    return 0;
}

void weir_health_free(struct weir_health *h)
{
    if (h == NULL) {
        return;
    }
    while (h->entries) {
        struct entry *e = h->entries;
        h->entries = e->next;
        entry_free(e);
    }
    weir__free(h);
}

/* ---- verdicts ---- */

static void verdict(struct entry *e, struct weir_backend *b, bool pass, const char *why)
{
    bool up = atomic_load_explicit(&b->healthy, memory_order_relaxed);
    if (pass) {
        b->hc_fails = 0;
        if (!up && ++b->hc_passes >= e->hc.rise) {
            b->hc_passes = 0;
            atomic_store_explicit(&b->healthy, true, memory_order_relaxed);
            weir_log(WEIR_LOG_WARN, "health: backend %s is up (%u checks passed)", b->ident,
                     e->hc.rise);
        }
        return;
    }
    b->hc_passes = 0;
    if (up && ++b->hc_fails >= e->hc.fall) {
        b->hc_fails = 0;
        atomic_store_explicit(&b->healthy, false, memory_order_relaxed);
        weir_log(WEIR_LOG_WARN, "health: backend %s is down (%u checks failed, last: %s)", b->ident,
                 e->hc.fall, why);
    }
}

static bool status_ok(const struct weir_status_range *r, size_t nr, int status)
{
    for (size_t i = 0; i < nr; i++) {
        if (status >= r[i].lo && status <= r[i].hi) {
            return true;
        }
    }
    return false;
}

int weir__health_judge(const char *buf, size_t n, const struct weir_status_range *ranges,
                       size_t nranges, const char *expect_body, bool at_end, const char **why)
{
    /* "HTTP/1.x SSS" */
    if (n < 12) {
        *why = "no status line";
        return at_end ? 0 : -1;
    }
    if (memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ' ||
        buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' || buf[11] < '0' ||
        buf[11] > '9') {
        *why = "not an HTTP/1 response";
        return 0;
    }
    int status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    const char *end = memmem(buf, n, "\r\n\r\n", 4);
    if (end == NULL) {
        *why = "incomplete response head";
        return at_end ? 0 : -1;
    }
    if (!status_ok(ranges, nranges, status)) {
        *why = "unexpected status";
        return 0;
    }
    if (expect_body == NULL) {
        return 1;
    }
    const char *body = end + 4;
    size_t blen = n - (size_t)(body - buf);
    if (blen > WEIR_HEALTH_BODY_SCAN) {
        blen = WEIR_HEALTH_BODY_SCAN;
    }
    if (memmem(body, blen, expect_body, strlen(expect_body)) != NULL) {
        return 1;
    }
    *why = "expected body text not found";
    return at_end || blen == WEIR_HEALTH_BODY_SCAN ? 0 : -1;
}

static int judge(const struct probe *p, bool at_end, const char **why)
{
    return weir__health_judge(p->buf, p->got, p->e->ranges, p->e->hc.nstatuses, p->e->expect_body,
                              at_end, why);
}

/* ---- probes ---- */

static void reap_probe(struct weir_loop *loop, struct weir__defer *d)
{
    struct probe *p = WEIR_CONTAINER_OF(d, struct probe, reap);
    WEIR_CHECK_OBJ(p, PROBE_MAGIC);
    p->magic = 0;
    weir__free(p);
}

/* Ends a probe: result 1 passed, 0 failed, -1 no verdict (our own trouble). */
static void probe_end(struct probe *p, int result, const char *why)
{
    if (p->done) {
        return;
    }
    p->done = true;
    struct weir_loop *loop = p->e->h->loop;
    if (result >= 0) {
        verdict(p->e, p->b, result == 1, why);
    }
    weir_timer_stop(loop, &p->timer);
    if (p->st.io.fd >= 0) {
        weir_loop_io_del(loop, &p->st.io);
        weir__tls_free(&p->st); /* nothing to do for a cleartext check */
        close(p->st.io.fd);
        p->st.io.fd = -1;
    }
    if (p->prev) {
        p->prev->next = p->next;
    } else {
        p->e->probes = p->next;
    }
    if (p->next) {
        p->next->prev = p->prev;
    }
    weir__backend_unref(p->b);
    p->reap.fn = reap_probe;
    weir__loop_defer(loop, &p->reap); /* an event for it may still be in this turn's batch */
}

static void probe_timeout(struct weir_loop *loop, struct weir_timer *t)
{
    struct probe *p = t->data;
    WEIR_CHECK_OBJ(p, PROBE_MAGIC);
    const char *why = "timed out";
    if (p->connected && p->e->hc.type == WEIR_HEALTH_HTTP && p->got > 0 &&
        judge(p, true, &why) == 1) {
        probe_end(p, 1, NULL);
        return;
    }
    probe_end(p, 0, p->connected ? why : "connect timed out");
}

/* TLS checks: the handshake, under the check's timeout. 1 done, 0 waiting, -1 failed. */
static int probe_handshake(struct probe *p)
{
    char why[WEIR_TLS_ERRMAX];
    if (p->st.ssl == NULL) {
        struct weir_peer peer = p->e->peer;
        memcpy(&peer.addr, &p->b->addr, p->b->addrlen);
        peer.addrlen = p->b->addrlen;
        if (weir__tls_connect(&peer, &p->st) != 0) {
            probe_end(p, -1, NULL); /* no context or no memory: not the backend's fault */
            return -1;
        }
    }
    int rc = weir__tls_handshake(&p->st, why);
    if (rc == WEIR_EAGAIN) {
        return 0;
    }
    if (rc != 0) {
        char msg[WEIR_TLS_ERRMAX + 32];
        (void)snprintf(msg, sizeof(msg), "TLS: %s", why);
        probe_end(p, 0, msg);
        return -1;
    }
    return 1;
}

/* Sends what is left of the request: true when all of it is out, false to wait or on error. */
static bool probe_send(struct probe *p)
{
    while (p->sent < p->req_len) {
        ssize_t n;
        if (p->st.ssl != NULL) {
            struct weir__outq q = {0};
            weir__outq_push(&q, p->req + p->sent, p->req_len - p->sent);
            n = weir__tls_flush(&p->st, &q);
            if (n == 0) {
                return false; /* waits for the socket */
            }
        } else {
            n = send(p->st.io.fd, p->req + p->sent, p->req_len - p->sent, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                return false; /* edge-triggered: the next writable edge comes back here */
            }
        }
        if (n < 0) {
            probe_end(p, 0, "write failed");
            return false;
        }
        p->sent += (size_t)n;
    }
    return true;
}

/* One read: > 0 bytes, 0 closed, -1 would block, -2 failed. */
static ssize_t probe_recv(struct probe *p)
{
    char *at = p->buf + p->got;
    size_t room = sizeof(p->buf) - p->got;
    if (p->st.ssl != NULL) {
        ssize_t n = weir__tls_read(&p->st, at, room);
        if (n > 0) {
            return n;
        }
        if (n == 0) {
            return p->st.eof ? 0 : -1;
        }
        return -2;
    }
    ssize_t n = recv(p->st.io.fd, at, room, 0);
    if (n < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2;
    }
    return n;
}

static void probe_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct probe *p = io->data;
    WEIR_CHECK_OBJ(p, PROBE_MAGIC);
    if (p->done) {
        return;
    }
    weir__stream_note_events(&p->st, events);
    if (!p->connected) {
        if ((events & (WEIR_IO_WRITE | WEIR_IO_ERROR | WEIR_IO_HUP)) == 0) {
            return;
        }
        int rc = weir__connect_result(p->st.io.fd);
        if (rc != 0) {
            probe_end(p, 0, "connect failed");
            return;
        }
        p->connected = true;
        if (p->e->hc.type == WEIR_HEALTH_TCP) {
            probe_end(p, 1, NULL);
            return;
        }
    }
    if (p->e->tls && !p->secured) {
        if (probe_handshake(p) != 1) {
            return;
        }
        p->secured = true;
    }
    if (!probe_send(p)) {
        return;
    }
    for (;;) {
        if (p->got == sizeof(p->buf)) {
            const char *why = "response too large to judge";
            probe_end(p, judge(p, true, &why) == 1 ? 1 : 0, why);
            return;
        }
        ssize_t n = probe_recv(p);
        if (n > 0) {
            p->got += (size_t)n;
            const char *why = NULL;
            int v = judge(p, false, &why);
            if (v >= 0) {
                probe_end(p, v, why);
                return;
            }
            continue;
        }
        if (n == -1) {
            return;
        }
        const char *why = n == 0 ? "closed" : "read failed";
        probe_end(p, n == 0 && judge(p, true, &why) == 1 ? 1 : 0, why);
        return;
    }
}

static void probe_start(struct entry *e, struct weir_backend *b)
{
    struct weir_loop *loop = e->h->loop;
    struct probe *p = weir__calloc(1, sizeof(*p));
    if (p == NULL) {
        weir__backend_unref(b);
        return; /* no verdict: out of memory says nothing about the backend */
    }
    p->magic = PROBE_MAGIC;
    p->e = e;
    p->b = b;
    p->st.io.fd = -1;
    p->st.io.cb = probe_event;
    p->st.io.data = p;
    weir_timer_init(&p->timer, probe_timeout, p);
    p->next = e->probes;
    if (e->probes) {
        e->probes->prev = p;
    }
    e->probes = p;
    if (e->hc.type == WEIR_HEALTH_HTTP) {
        int len = snprintf(p->req, sizeof(p->req),
                           "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: weir-health-check\r\n"
                           "Connection: close\r\n\r\n",
                           e->method, e->path, e->host ? e->host : b->ident);
        if (len < 0 || (size_t)len >= sizeof(p->req)) {
            probe_end(p, 0, "request too long");
            return;
        }
        p->req_len = (size_t)len;
    }
    int fd = weir__connect((const struct sockaddr *)&b->addr, b->addrlen);
    if (fd < 0) {
        probe_end(p, 0, "connect failed");
        return;
    }
    p->st.io.fd = fd;
    if (weir_loop_io_add(loop, &p->st.io, WEIR_IO_READ | WEIR_IO_WRITE | WEIR_IO_RDHUP) != 0 ||
        weir_timer_start(loop, &p->timer, e->hc.timeout_ms) != 0) {
        probe_end(p, -1, NULL); /* our own trouble, not the backend's: no verdict */
    }
}

static void round_start(struct weir_loop *loop, struct weir_timer *t)
{
    struct entry *e = t->data;
    /* Next round first: a slow round never delays the schedule. */
    (void)weir_timer_start(loop, &e->round, e->hc.interval_ms);
    struct weir_backend **bs = NULL;
    size_t n = 0;
    if (weir__lb_backends(e->lb, &bs, &n) != 0) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        probe_start(e, bs[i]); /* takes the reference */
    }
    weir__free(bs);
}

static int service_start(struct weir_loop *loop, void *data)
{
    struct weir_health *h = data;
    h->loop = loop;
    for (struct entry *e = h->entries; e; e = e->next) {
        weir_timer_init(&e->round, round_start, e);
        int rc = weir_timer_start(loop, &e->round, 0);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static void service_stop(struct weir_loop *loop, void *data)
{
    struct weir_health *h = data;
    for (struct entry *e = h->entries; e; e = e->next) {
        weir_timer_stop(loop, &e->round);
        while (e->probes) {
            struct probe *p = e->probes;
            /* No verdict at shutdown; the loop has stopped, so no event or defer is left. */
            weir_timer_stop(loop, &p->timer);
            if (p->st.io.fd >= 0) {
                weir_loop_io_del(loop, &p->st.io);
                weir__tls_free(&p->st);
                close(p->st.io.fd);
                p->st.io.fd = -1;
            }
            e->probes = p->next;
            if (e->probes) {
                e->probes->prev = NULL;
            }
            weir__backend_unref(p->b);
            weir__free(p);
        }
    }
    h->loop = NULL;
}

const struct weir_background_ops weir_health_service = {
    .start = service_start,
    .stop = service_stop,
};
