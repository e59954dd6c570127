/*
 * DNS service discovery (see weir/lb.h): one background-service thread runs c-ares on its own
 * event loop. c-ares says which sockets it uses through its socket-state callback; they are
 * watched on the loop, their events go to ares_process_fd, and one timer follows ares_timeout
 * for retransmissions. Each name has its own refresh timer, armed for the TTL of its last
 * answer. When a lookup ends, its set's backend list is rebuilt at the end of the loop turn
 * and handed to weir_lb_update if it differs from the list last given.
 *
 * A round of a target: an SRV target first asks for its SRV records (keeping the last good
 * ones when that fails); then every host name of the target is asked for A and AAAA at once.
 * A family whose query fails keeps its last good addresses; one that has no record while the
 * other has some is emptied; a name with neither keeps its last good answer. So a failing
 * resolver never empties a set.
 */
#include "lb/lb_int.h"

#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/alloc.h"
#include "core/assert.h"
#include "core/loop.h"
#include "core/rcu.h"
#include "lb/dns_msg.h"
#include "weir/error.h"
#include "weir/log.h"
#include "weir/server.h"

#define MAX_SERVERS     16
#define MAX_ADDRS       128  /* per name and address family */
#define MAX_SRV_RECORDS 64   /* per SRV name */
#define TRIES           2    /* per server */
#define EDNS_SIZE       1232 /* UDP payload we ask for (DNS flag day 2020) */
#define DRAIN_CALLS     64   /* ares_process_fd calls per readable edge, at most */
#define WAIT_FDS        64
#define SHOWN           4  /* addresses named in a log line */
#define ADDR_TEXT       64 /* "[v6]:port" fits with room */

#define DNS_CLASS_IN  1
#define DNS_TYPE_A    1
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_SRV  33

#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

struct addr {
    int family; /* AF_INET, AF_INET6 */
    unsigned char b[16];
};

struct addrs {
    struct addr *v;
    size_t n;
};

struct host;
struct target;
struct group;

/* One of a host's two queries: the callback's argument. */
struct hquery {
    struct host *h;
    int fam; /* 0: A, 1: AAAA */
};

/* A name resolved with A and AAAA. */
struct host {
    char *name;
    struct target *t;
    struct addrs a[2]; /* the last good answer of each family */
    struct hquery q[2];
    /* this round */
    bool got[2];    /* a fresh answer with addresses */
    bool nodata[2]; /* the name exists and has no record of that type */
};

/* An SRV record, as kept: its target host, port, scaled weight, tier. */
struct srvrec {
    size_t host;
    const char *hname; /* hosts[host].name, for sorting */
    uint16_t port;
    uint32_t weight;
    bool backup;
};

struct target {
    struct weir_discovery *d;
    struct group *g;
    enum weir_discovery_kind kind;
    char *name; /* the static address, host name or SRV name */
    uint16_t port;
    uint32_t weight;
    bool backup, drain;
    uint32_t max_conns;
    struct host *hosts; /* NAME: one; SRV: one per distinct record target */
    size_t nhosts;
    struct srvrec *recs; /* SRV: the last good records */
    size_t nrecs;
    struct weir_timer timer;
    size_t pending; /* host queries in flight */
    /* this round */
    bool failed;
    const char *why; /* static: ares_strerror's or ours */
    uint64_t ttl_s;  /* least TTL of this round's answers; UINT64_MAX: none */
    /* across rounds */
    bool failing; /* a warning was logged; cleared by a round that fails nothing */
    bool started; /* its first round has ended */
    uint64_t sig; /* hash of the backends it gave, to log changes */
};

/* One backend as last given to the set. */
struct spec {
    char address[ADDR_TEXT];
    uint32_t weight;
    bool backup, drain;
    uint32_t max_conns;
};

struct group {
    struct weir_lb *lb;
    struct target *targets;
    size_t ntargets;
    struct spec *applied;
    size_t napplied;
    bool dirty;
    bool truncated;
    struct group *next;
};

/* A c-ares socket watched on the loop. Freed at the end of the turn it is dropped in. */
#define SOCKW_MAGIC     0x736f636bu
#define DISCOVERY_MAGIC 0x646e7364u

struct sockw {
    uint32_t magic;
    struct weir_io io;
    struct weir_discovery *d;
    struct weir__defer reap;
    bool dead;
    bool want_write;
    struct sockw *next;
};

struct weir_discovery {
    uint32_t magic;
    struct weir_resolver_options opt; /* servers and nservers not kept: the channel has them */
    ares_channel ch;
    bool lib_init;
    struct weir_loop *loop; /* while running */
    struct group *groups;
    struct sockw *socks;
    struct weir_timer ares_timer;
    struct weir__defer apply;
    size_t awaiting; /* targets whose first round has not ended */
    bool started;
    bool stopping;
};

typedef void (*emit_fn)(void *ctx, const char *address, uint32_t weight, bool backup, bool drain);

static void arm_ares_timer(struct weir_discovery *d);

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s);
    char *p = weir__malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n + 1);
    }
    return p;
}

/* ---- sockets ---- */

static void reap_sock(struct weir_loop *loop, struct weir__defer *r)
{
    struct sockw *s = WEIR_CONTAINER_OF(r, struct sockw, reap);
    WEIR_CHECK_OBJ(s, SOCKW_MAGIC);
    s->magic = 0;
    weir__free(s);
}

static struct sockw *find_sock(const struct weir_discovery *d, int fd)
{
    for (struct sockw *s = d->socks; s != NULL; s = s->next) {
        if (s->io.fd == fd) {
            return s;
        }
    }
    return NULL;
}

static void drop_sock(struct weir_discovery *d, struct sockw *s)
{
    for (struct sockw **pp = &d->socks; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->dead = true;
    if (d->loop == NULL) {
        weir__free(s); /* no loop: no event can be pending for it */
        return;
    }
    weir_loop_io_del(d->loop, &s->io);
    /* An event for it may still be in this turn's batch. */
    weir__loop_defer(d->loop, &s->reap);
}

static bool readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

static void sock_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct sockw *s = io->data;
    WEIR_CHECK_OBJ(s, SOCKW_MAGIC);
    struct weir_discovery *d = s->d;
    if (s->dead || d->ch == NULL) {
        return;
    }
    int fd = io->fd;
    uint32_t rd = WEIR_IO_READ | WEIR_IO_ERROR | WEIR_IO_HUP | WEIR_IO_RDHUP;
    uint32_t wr = WEIR_IO_WRITE | WEIR_IO_ERROR | WEIR_IO_HUP;
    ares_process_fd(d->ch, (events & rd) ? fd : ARES_SOCKET_BAD,
                    (events & wr) ? fd : ARES_SOCKET_BAD);
    /*
     * Edge-triggered: c-ares reads a TCP socket once per call (UDP until EAGAIN), so whatever
     * is left must be read now; no new edge would come for it.
     */
    for (int i = 0; i < DRAIN_CALLS && !s->dead && readable_now(fd); i++) {
        ares_process_fd(d->ch, fd, ARES_SOCKET_BAD);
    }
    arm_ares_timer(d);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct weir_discovery *d = data;
    struct sockw *s = find_sock(d, fd);
    if (!readable && !writable) {
        if (s != NULL) {
            drop_sock(d, s);
        }
        return;
    }
    if (d->loop == NULL) {
        return; /* no loop to watch it on: its queries end by timeout */
    }
    uint32_t ev = (readable ? WEIR_IO_READ | WEIR_IO_RDHUP : 0) | (writable ? WEIR_IO_WRITE : 0);
    if (s == NULL) {
        s = weir__calloc(1, sizeof(*s));
        if (s == NULL) {
            weir_log(WEIR_LOG_ERROR, "discovery: out of memory watching a resolver socket");
            return;
        }
        s->magic = SOCKW_MAGIC;
        s->d = d;
        s->io.fd = fd;
        s->io.cb = sock_event;
        s->io.data = s;
        s->reap.fn = reap_sock;
        int rc = weir_loop_io_add(d->loop, &s->io, ev);
        if (rc != 0) {
            weir_log(WEIR_LOG_ERROR, "discovery: cannot watch a resolver socket: %s",
                     weir_strerror(rc));
            weir__free(s);
            return;
        }
        s->next = d->socks;
        d->socks = s;
    } else {
        int rc = weir_loop_io_mod(d->loop, &s->io, ev);
        if (rc != 0) {
            weir_log(WEIR_LOG_ERROR, "discovery: cannot watch a resolver socket: %s",
                     weir_strerror(rc));
        }
    }
    s->want_write = writable != 0;
}

static uint64_t tv_ms(const struct timeval *tv)
{
    return (uint64_t)tv->tv_sec * 1000u + ((uint64_t)tv->tv_usec + 999u) / 1000u;
}

static void ares_timer_fired(struct weir_loop *loop, struct weir_timer *t)
{
    struct weir_discovery *d = t->data;
    if (d->ch != NULL) {
        ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
        arm_ares_timer(d);
    }
}

/* Follows c-ares's next timeout; called after every call into c-ares. */
static void arm_ares_timer(struct weir_discovery *d)
{
    struct timeval tv;
    struct timeval *next = d->ch != NULL ? ares_timeout(d->ch, NULL, &tv) : NULL;
    if (next == NULL) {
        weir_timer_stop(d->loop, &d->ares_timer);
        return;
    }
    uint64_t ms = tv_ms(next);
    if (weir_timer_start(d->loop, &d->ares_timer, ms ? ms : 1) != 0) {
        weir_log(WEIR_LOG_ERROR, "discovery: out of memory arming the resolver's timer");
    }
}

/* ---- addresses ---- */

static int cmp_addr(const void *a, const void *b)
{
    const struct addr *x = a, *y = b;
    if (x->family != y->family) {
        return x->family < y->family ? -1 : 1;
    }
    return memcmp(x->b, y->b, sizeof(x->b));
}

static void addr_text(const struct addr *a, uint16_t port, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    if (inet_ntop(a->family, a->b, ip, sizeof(ip)) == NULL) {
        out[0] = '\0';
        return;
    }
    if (a->family == AF_INET6) {
        (void)snprintf(out, size, "[%s]:%u", ip, (unsigned)port);
    } else {
        (void)snprintf(out, size, "%s:%u", ip, (unsigned)port);
    }
}

/* A or AAAA records of an answer into a new sorted, deduplicated list. An ARES_ status. */
static int parse_addrs(int fam, const unsigned char *abuf, int alen, struct addrs *out,
                       uint64_t *ttl_s)
{
    struct addr *v = weir__calloc(MAX_ADDRS, sizeof(*v));
    if (v == NULL) {
        return ARES_ENOMEM;
    }
    int n = MAX_ADDRS;
    int rc;
    uint64_t least = UINT64_MAX;
    if (fam == 0) {
        struct ares_addrttl at[MAX_ADDRS];
        rc = ares_parse_a_reply(abuf, alen, NULL, at, &n);
        for (int i = 0; rc == ARES_SUCCESS && i < n; i++) {
            v[i].family = AF_INET;
            memcpy(v[i].b, &at[i].ipaddr, 4);
            uint64_t t = at[i].ttl > 0 ? (uint64_t)at[i].ttl : 0;
            least = t < least ? t : least;
        }
    } else {
        struct ares_addr6ttl at[MAX_ADDRS];
        rc = ares_parse_aaaa_reply(abuf, alen, NULL, at, &n);
        for (int i = 0; rc == ARES_SUCCESS && i < n; i++) {
            v[i].family = AF_INET6;
            memcpy(v[i].b, &at[i].ip6addr, 16);
            uint64_t t = at[i].ttl > 0 ? (uint64_t)at[i].ttl : 0;
            least = t < least ? t : least;
        }
    }
    if (rc == ARES_SUCCESS && n <= 0) {
        rc = ARES_ENODATA;
    }
    if (rc != ARES_SUCCESS) {
        weir__free(v);
        return rc;
    }
    qsort(v, (size_t)n, sizeof(*v), cmp_addr);
    size_t k = 0;
    for (size_t i = 0; i < (size_t)n; i++) {
        if (k == 0 || cmp_addr(&v[k - 1], &v[i]) != 0) {
            v[k++] = v[i];
        }
    }
    out->v = v;
    out->n = k;
    *ttl_s = least;
    return ARES_SUCCESS;
}

/* ---- the backends a target gives ---- */

static void emit_host(const struct host *h, uint16_t port, uint32_t weight, bool backup, bool drain,
                      emit_fn fn, void *ctx)
{
    char text[ADDR_TEXT];
    for (int f = 0; f < 2; f++) {
        for (size_t i = 0; i < h->a[f].n; i++) {
            addr_text(&h->a[f].v[i], port, text, sizeof(text));
            if (text[0] != '\0') {
                fn(ctx, text, weight, backup, drain);
            }
        }
    }
}

static void expand(const struct target *t, emit_fn fn, void *ctx)
{
    switch (t->kind) {
    case WEIR_DISCOVERY_STATIC:
        fn(ctx, t->name, t->weight, t->backup, t->drain);
        break;
    case WEIR_DISCOVERY_NAME:
        emit_host(&t->hosts[0], t->port, t->weight, t->backup, t->drain, fn, ctx);
        break;
    case WEIR_DISCOVERY_SRV:
        for (size_t i = 0; i < t->nrecs; i++) {
            const struct srvrec *r = &t->recs[i];
            emit_host(&t->hosts[r->host], r->port, r->weight, t->backup || r->backup, t->drain, fn,
                      ctx);
        }
        break;
    }
}

struct builder {
    struct spec *v;
    size_t n;
    bool truncated;
    uint32_t max_conns; /* of the target being expanded */
};

static void put(void *ctx, const char *address, uint32_t weight, bool backup, bool drain)
{
    struct builder *b = ctx;
    size_t len = strlen(address);
    if (len >= ADDR_TEXT) {
        return; /* checked when added; resolved addresses always fit */
    }
    for (size_t i = 0; i < b->n; i++) {
        if (strcmp(b->v[i].address, address) == 0) {
            return; /* the first kept */
        }
    }
    if (b->n == WEIR_LB_MAX_BACKENDS) {
        b->truncated = true;
        return;
    }
    struct spec *s = &b->v[b->n++];
    memcpy(s->address, address, len + 1);
    s->weight = weight ? weight : 1;
    s->backup = backup;
    s->drain = drain;
    s->max_conns = b->max_conns;
}

/* Scales a tier's weights down when their sum passes the set's bound. */
static void fit_weights(struct spec *v, size_t n)
{
    for (int tier = 0; tier < 2; tier++) {
        uint64_t sum = 0, count = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i].backup == (tier == 1)) {
                sum += v[i].weight;
                count++;
            }
        }
        if (sum <= WEIR_LB_MAX_TOTAL_WEIGHT) {
            continue;
        }
        /* sum of max(1, w * budget / sum) <= count + budget = the bound */
        uint64_t budget = WEIR_LB_MAX_TOTAL_WEIGHT - count;
        for (size_t i = 0; i < n; i++) {
            if (v[i].backup == (tier == 1)) {
                uint64_t w = v[i].weight * budget / sum;
                v[i].weight = w < 1 ? 1 : (uint32_t)w;
            }
        }
    }
}

static bool same_specs(const struct spec *a, size_t na, const struct spec *b, size_t nb)
{
    if (na != nb) {
        return false;
    }
    for (size_t i = 0; i < na; i++) {
        if (strcmp(a[i].address, b[i].address) != 0 || a[i].weight != b[i].weight ||
            a[i].backup != b[i].backup || a[i].drain != b[i].drain ||
            a[i].max_conns != b[i].max_conns) {
            return false;
        }
    }
    return true;
}

static const char *group_label(const struct group *g)
{
    for (size_t i = 0; i < g->ntargets; i++) {
        if (g->targets[i].kind != WEIR_DISCOVERY_STATIC) {
            return g->targets[i].name;
        }
    }
    return "?";
}

/* Rebuilds g's backend list; updates the set when it changed. 0 or the update's error. */
static int group_apply(struct group *g, const char **why)
{
    g->dirty = false;
    struct builder b = {weir__calloc(WEIR_LB_MAX_BACKENDS, sizeof(struct spec)), 0, false, 0};
    if (b.v == NULL) {
        return WEIR_ENOMEM;
    }
    for (size_t i = 0; i < g->ntargets; i++) {
        b.max_conns = g->targets[i].max_conns;
        expand(&g->targets[i], put, &b);
    }
    fit_weights(b.v, b.n);
    if (b.truncated && !g->truncated) {
        weir_log(WEIR_LOG_WARN,
                 "discovery: the set with %s would have more than %d backends; the rest are "
                 "left out",
                 group_label(g), WEIR_LB_MAX_BACKENDS);
    }
    g->truncated = b.truncated;
    if (same_specs(b.v, b.n, g->applied, g->napplied)) {
        weir__free(b.v);
        return 0;
    }
    struct weir_lb_backend *lbb = weir__calloc(b.n ? b.n : 1, sizeof(*lbb));
    if (lbb == NULL) {
        weir__free(b.v);
        g->dirty = true; /* try again at the next change */
        return WEIR_ENOMEM;
    }
    for (size_t i = 0; i < b.n; i++) {
        lbb[i] = (struct weir_lb_backend){b.v[i].address, b.v[i].weight, b.v[i].backup,
                                          b.v[i].drain, b.v[i].max_conns};
    }
    int rc = weir_lb_update(g->lb, lbb, b.n, why);
    weir__free(lbb);
    if (rc != 0) {
        weir__free(b.v);
        return rc;
    }
    weir__free(g->applied);
    g->applied = b.v;
    g->napplied = b.n;
    return 0;
}

static void apply_groups(struct weir_discovery *d)
{
    for (struct group *g = d->groups; g != NULL; g = g->next) {
        if (!g->dirty) {
            continue;
        }
        const char *why = NULL;
        int rc = group_apply(g, &why);
        if (rc != 0) {
            weir_log(WEIR_LOG_ERROR, "discovery: cannot update the set with %s: %s", group_label(g),
                     why && *why ? why : weir_strerror(rc));
        }
    }
}

static void apply_deferred(struct weir_loop *loop, struct weir__defer *a)
{
    struct weir_discovery *d = WEIR_CONTAINER_OF(a, struct weir_discovery, apply);
    WEIR_CHECK_OBJ(d, DISCOVERY_MAGIC);
    apply_groups(d);
}

/* ---- what a target resolved to, for the log ---- */

struct summary {
    uint64_t sig;
    size_t n;
    char text[256];
    size_t len;
};

static void summarize(void *ctx, const char *address, uint32_t weight, bool backup, bool drain)
{
    struct summary *s = ctx;
    for (const char *p = address; *p; p++) {
        s->sig = (s->sig ^ (unsigned char)*p) * FNV_PRIME;
    }
    s->sig = (s->sig ^ (weight << 1 | (backup ? 1u : 0u))) * FNV_PRIME;
    if (s->n < SHOWN) {
        int w = snprintf(s->text + s->len, sizeof(s->text) - s->len, "%s%s%s", s->n ? ", " : "",
                         address, backup ? " (backup)" : "");
        if (w > 0 && (size_t)w < sizeof(s->text) - s->len) {
            s->len += (size_t)w;
        }
    }
    s->n++;
}

static void log_if_changed(struct target *t)
{
    struct summary s = {.sig = FNV_BASIS};
    expand(t, summarize, &s);
    if (s.sig == t->sig) {
        return;
    }
    t->sig = s.sig;
    weir_log(WEIR_LOG_INFO, "discovery: %s: %zu backend%s%s%s%s", t->name, s.n, s.n == 1 ? "" : "s",
             s.n ? ": " : "", s.text, s.n > SHOWN ? ", ..." : "");
}

static size_t target_count(const struct target *t)
{
    struct summary s = {.sig = FNV_BASIS};
    expand(t, summarize, &s);
    return s.n;
}

/* ---- rounds ---- */

static void round_end(struct target *t)
{
    struct weir_discovery *d = t->d;
    const struct weir_resolver_options *o = &d->opt;
    uint64_t ttl_ms = t->ttl_s == UINT64_MAX ? o->max_ttl_ms : t->ttl_s * 1000u;
    ttl_ms = ttl_ms < o->min_ttl_ms   ? o->min_ttl_ms
             : ttl_ms > o->max_ttl_ms ? o->max_ttl_ms
                                      : ttl_ms;
    uint64_t next = ttl_ms;
    if (t->failed) {
        /* What did answer is kept for its TTL; what failed is asked again sooner. */
        next = t->ttl_s == UINT64_MAX || o->retry_ms < ttl_ms ? o->retry_ms : ttl_ms;
        if (!t->failing) {
            size_t n = target_count(t);
            weir_log(WEIR_LOG_WARN,
                     "discovery: %s: lookup failed (%s); keeping the last answer (%zu "
                     "backend%s); trying again every %ums",
                     t->name, t->why ? t->why : "?", n, n == 1 ? "" : "s", o->retry_ms);
        }
    } else if (t->failing) {
        weir_log(WEIR_LOG_INFO, "discovery: %s: resolves again", t->name);
    }
    t->failing = t->failed;
    log_if_changed(t);
    if (weir_timer_start(d->loop, &t->timer, next) != 0) {
        weir_log(WEIR_LOG_ERROR, "discovery: %s: out of memory; it is not resolved again", t->name);
    }
    if (!t->started) {
        t->started = true;
        d->awaiting--;
    }
    t->g->dirty = true;
    weir__loop_defer(d->loop, &d->apply);
}

static void fail(struct target *t, int status, const char *why)
{
    t->failed = true;
    t->why = why != NULL ? why : ares_strerror(status);
}

static void hosts_end(struct target *t)
{
    for (size_t i = 0; i < t->nhosts; i++) {
        struct host *h = &t->hosts[i];
        if (h->nodata[0] && h->nodata[1]) {
            fail(t, ARES_ENODATA, "no A or AAAA record");
            continue;
        }
        for (int f = 0; f < 2; f++) {
            if (h->nodata[f] && h->got[!f]) {
                /* The name has records of the other family only: none of this one. */
                weir__free(h->a[f].v);
                h->a[f].v = NULL;
                h->a[f].n = 0;
            }
        }
    }
    round_end(t);
}

static bool destroyed(struct weir_discovery *d, int status)
{
    return status == ARES_EDESTRUCTION || status == ARES_ECANCELLED || d->stopping;
}

static void host_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct hquery *q = arg;
    struct host *h = q->h;
    struct target *t = h->t;
    if (destroyed(t->d, status)) {
        return;
    }
    struct addrs fresh = {NULL, 0};
    uint64_t ttl = UINT64_MAX;
    if (status == ARES_SUCCESS) {
        status = parse_addrs(q->fam, abuf, alen, &fresh, &ttl);
    }
    if (status == ARES_SUCCESS) {
        weir__free(h->a[q->fam].v);
        h->a[q->fam] = fresh;
        h->got[q->fam] = true;
        t->ttl_s = ttl < t->ttl_s ? ttl : t->ttl_s;
    } else if (status == ARES_ENODATA) {
        h->nodata[q->fam] = true;
    } else {
        fail(t, status, NULL);
    }
    if (--t->pending == 0) {
        hosts_end(t);
    }
}

static void hosts_start(struct target *t)
{
    if (t->nhosts == 0) {
        round_end(t);
        return;
    }
    for (size_t i = 0; i < t->nhosts; i++) {
        struct host *h = &t->hosts[i];
        h->got[0] = h->got[1] = false;
        h->nodata[0] = h->nodata[1] = false;
    }
    /* Counted first: an answer may come back inside ares_query (a bad name, no memory). */
    t->pending = 2 * t->nhosts;
    for (size_t i = 0; i < t->nhosts; i++) {
        struct host *h = &t->hosts[i];
        ares_query(t->d->ch, h->name, DNS_CLASS_IN, DNS_TYPE_A, host_answer, &h->q[0]);
        ares_query(t->d->ch, h->name, DNS_CLASS_IN, DNS_TYPE_AAAA, host_answer, &h->q[1]);
    }
}

static void host_init(struct host *h, struct target *t, char *name)
{
    memset(h, 0, sizeof(*h));
    h->name = name;
    h->t = t;
    h->q[0] = (struct hquery){h, 0};
    h->q[1] = (struct hquery){h, 1};
}

static void hosts_free(struct host *hs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        weir__free(hs[i].name);
        weir__free(hs[i].a[0].v);
        weir__free(hs[i].a[1].v);
    }
    weir__free(hs);
}

static int cmp_rec(const void *a, const void *b)
{
    const struct srvrec *x = a, *y = b;
    if (x->backup != y->backup) {
        return x->backup ? 1 : -1;
    }
    int c = strcasecmp(x->hname, y->hname);
    if (c != 0) {
        return c;
    }
    return x->port < y->port ? -1 : x->port > y->port;
}

/* The records worth using: a target other than "." (RFC 2782: no service), a valid name. */
static bool usable_rec(const struct ares_srv_reply *r)
{
    return r->host != NULL && r->host[0] != '\0' && strcmp(r->host, ".") != 0 &&
           weir__dns_name_check(r->host, strlen(r->host)) == NULL;
}

/*
 * Makes new hosts and records from an SRV reply, keeping the addresses of hosts that stay.
 * An ARES_ status; the old ones stay on failure.
 */
static int take_records(struct target *t, const struct ares_srv_reply *list)
{
    size_t n = 0;
    unsigned maxw = 0, minprio = 65535;
    for (const struct ares_srv_reply *r = list; r != NULL && n < MAX_SRV_RECORDS; r = r->next) {
        if (usable_rec(r)) {
            n++;
            maxw = r->weight > maxw ? r->weight : maxw;
            minprio = r->priority < minprio ? r->priority : minprio;
        }
    }
    if (n == 0) {
        return ARES_ENODATA;
    }
    struct host *hs = weir__calloc(n, sizeof(*hs));
    struct srvrec *rs = weir__calloc(n, sizeof(*rs));
    if (hs == NULL || rs == NULL) {
        weir__free(hs);
        weir__free(rs);
        return ARES_ENOMEM;
    }
    size_t nh = 0, nr = 0;
    int rc = ARES_SUCCESS;
    for (const struct ares_srv_reply *r = list; r != NULL && nr < n; r = r->next) {
        if (!usable_rec(r)) {
            continue;
        }
        size_t k = 0;
        while (k < nh && strcasecmp(hs[k].name, r->host) != 0) {
            k++;
        }
        if (k == nh) {
            char *name = dup_str(r->host);
            if (name == NULL) {
                rc = ARES_ENOMEM;
                break;
            }
            host_init(&hs[nh++], t, name);
        }
        /* 0..65535 scaled so the largest is the set's largest weight; 0 counts as 1. */
        uint32_t w = maxw ? (uint32_t)((uint64_t)r->weight * WEIR_LB_MAX_WEIGHT / maxw) : 1;
        rs[nr++] = (struct srvrec){k, NULL, r->port, w ? w : 1, r->priority != minprio};
    }
    if (rc != ARES_SUCCESS) {
        hosts_free(hs, nh);
        weir__free(rs);
        return rc;
    }
    /* Hosts that stay keep their last good addresses. */
    for (size_t i = 0; i < nh; i++) {
        for (size_t j = 0; j < t->nhosts; j++) {
            if (strcasecmp(hs[i].name, t->hosts[j].name) == 0) {
                hs[i].a[0] = t->hosts[j].a[0];
                hs[i].a[1] = t->hosts[j].a[1];
                t->hosts[j].a[0] = (struct addrs){NULL, 0};
                t->hosts[j].a[1] = (struct addrs){NULL, 0};
                break;
            }
        }
    }
    for (size_t i = 0; i < nr; i++) {
        rs[i].hname = hs[rs[i].host].name;
    }
    qsort(rs, nr, sizeof(*rs), cmp_rec);
    hosts_free(t->hosts, t->nhosts);
    weir__free(t->recs);
    t->hosts = hs;
    t->nhosts = nh;
    t->recs = rs;
    t->nrecs = nr;
    return ARES_SUCCESS;
}

static void srv_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct target *t = arg;
    if (destroyed(t->d, status)) {
        return;
    }
    struct ares_srv_reply *list = NULL;
    if (status == ARES_SUCCESS) {
        status = ares_parse_srv_reply(abuf, alen, &list);
    }
    uint32_t ttl = 0;
    if (status == ARES_SUCCESS && weir__dns_answer_ttl(abuf, (size_t)alen, &ttl) < 0) {
        status = ARES_EBADRESP; /* c-ares read it; this cannot happen */
    }
    if (status == ARES_SUCCESS) {
        status = take_records(t, list);
    }
    if (list != NULL) {
        ares_free_data(list);
    }
    if (status != ARES_SUCCESS) {
        /* The last good records and their addresses stay; the hosts are asked next round. */
        fail(t, status, status == ARES_ENODATA ? "no usable SRV record" : NULL);
        round_end(t);
        return;
    }
    t->ttl_s = ttl;
    hosts_start(t);
}

static void round_start(struct target *t)
{
    t->failed = false;
    t->why = NULL;
    t->ttl_s = UINT64_MAX;
    if (t->kind == WEIR_DISCOVERY_SRV) {
        ares_query(t->d->ch, t->name, DNS_CLASS_IN, DNS_TYPE_SRV, srv_answer, t);
    } else {
        hosts_start(t);
    }
}

static void target_timer_fired(struct weir_loop *loop, struct weir_timer *timer)
{
    struct target *t = timer->data;
    if (t->d->ch == NULL) {
        return;
    }
    round_start(t);
    arm_ares_timer(t->d);
}

/* ---- setup ---- */

static bool port_ok(const char *p)
{
    size_t n = strlen(p);
    unsigned v = 0;
    if (n == 0 || n > 5) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

/* A numeric "ip:port" or "[ipv6]:port". */
static bool server_ok(const char *s)
{
    char host[INET6_ADDRSTRLEN];
    unsigned char bin[16];
    const char *port;
    int family;
    size_t hlen;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':') {
            return false;
        }
        hlen = (size_t)(rb - s - 1);
        s++;
        port = rb + 2;
        family = AF_INET6;
    } else {
        const char *colon = strchr(s, ':');
        if (colon == NULL) {
            return false;
        }
        hlen = (size_t)(colon - s);
        port = colon + 1;
        family = AF_INET;
    }
    if (hlen == 0 || hlen >= sizeof(host)) {
        return false;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    return inet_pton(family, host, bin) == 1 && port_ok(port);
}

/* "a,b,c" for ares_set_servers_ports_csv, or NULL (*why set). */
static char *servers_csv(const char *const *servers, size_t n, const char **why)
{
    if (n > MAX_SERVERS) {
        *why = "more than 16 resolver servers";
        return NULL;
    }
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if (servers[i] == NULL || !server_ok(servers[i])) {
            *why = "a resolver server must be a numeric ip:port or [ipv6]:port";
            return NULL;
        }
        total += strlen(servers[i]) + 1;
    }
    char *csv = weir__malloc(total);
    if (csv == NULL) {
        *why = "out of memory";
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(servers[i]);
        if (i > 0) {
            csv[o++] = ',';
        }
        memcpy(csv + o, servers[i], len);
        o += len;
    }
    csv[o] = '\0';
    return csv;
}

static int channel_new(struct weir_discovery *d, const char *csv, const char **why)
{
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
        *why = "cannot initialise c-ares";
        return WEIR_ENOMEM;
    }
    d->lib_init = true;
    struct ares_options ao;
    memset(&ao, 0, sizeof(ao));
    ao.flags = ARES_FLAG_EDNS;
    ao.timeout = (int)d->opt.timeout_ms;
    ao.tries = TRIES;
    ao.ednspsz = EDNS_SIZE;
    ao.sock_state_cb = sock_state;
    ao.sock_state_cb_data = d;
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_EDNSPSZ |
               ARES_OPT_SOCK_STATE_CB;
    int rc = ares_init_options(&d->ch, &ao, mask);
    if (rc != ARES_SUCCESS) {
        d->ch = NULL;
        *why = "cannot initialise c-ares";
        return rc == ARES_ENOMEM ? WEIR_ENOMEM : WEIR_EINVAL;
    }
    if (csv != NULL && ares_set_servers_ports_csv(d->ch, csv) != ARES_SUCCESS) {
        *why = "c-ares refused the resolver servers";
        return WEIR_EINVAL;
    }
    return 0;
}

int weir_discovery_new(const struct weir_resolver_options *opt, struct weir_discovery **out,
                       const char **why)
{
    *out = NULL;
    const char *dummy = NULL;
    why = why ? why : &dummy;
    *why = "";
    struct weir_resolver_options o = {0};
    if (opt != NULL) {
        o = *opt;
    }
    o.timeout_ms = o.timeout_ms ? o.timeout_ms : 2000;
    o.min_ttl_ms = o.min_ttl_ms ? o.min_ttl_ms : 1000;
    o.max_ttl_ms = o.max_ttl_ms ? o.max_ttl_ms : 3600000;
    o.retry_ms = o.retry_ms ? o.retry_ms : 5000;
    if (o.min_ttl_ms > o.max_ttl_ms) {
        *why = "min_ttl is longer than max_ttl";
        return WEIR_EINVAL;
    }
    if (o.timeout_ms > 3600000) {
        *why = "the resolver timeout is over an hour";
        return WEIR_EINVAL;
    }
    char *csv = NULL;
    if (o.servers != NULL && o.nservers > 0) {
        csv = servers_csv(o.servers, o.nservers, why);
        if (csv == NULL) {
            return strcmp(*why, "out of memory") == 0 ? WEIR_ENOMEM : WEIR_EINVAL;
        }
    }
    o.servers = NULL;
    o.nservers = 0;
    struct weir_discovery *d = weir__calloc(1, sizeof(*d));
    if (d == NULL) {
        weir__free(csv);
        *why = "out of memory";
        return WEIR_ENOMEM;
    }
    d->magic = DISCOVERY_MAGIC;
    d->opt = o;
    weir_timer_init(&d->ares_timer, ares_timer_fired, d);
    d->apply.fn = apply_deferred;
    int rc = channel_new(d, csv, why);
    weir__free(csv);
    if (rc != 0) {
        weir_discovery_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

/* Checks one target; NULL or why not. */
static const char *target_check(const struct weir_discovery_target *t)
{
    if ((unsigned)t->kind > WEIR_DISCOVERY_SRV || t->name == NULL) {
        return "unknown target kind, or no name";
    }
    if (t->weight > WEIR_LB_MAX_WEIGHT) {
        return "backend weight must be 1..256";
    }
    size_t len = strlen(t->name);
    if (t->kind == WEIR_DISCOVERY_STATIC) {
        struct weir_peer tmp;
        memset(&tmp, 0, sizeof(tmp));
        if (len >= ADDR_TEXT || weir_peer_set_address(&tmp, t->name) != 0) {
            return "backend address must be ip:port or [ipv6]:port";
        }
        return NULL;
    }
    const char *bad = weir__dns_name_check(t->name, len);
    if (bad != NULL) {
        return bad;
    }
    if (t->kind == WEIR_DISCOVERY_NAME && t->port == 0) {
        return "a name needs a port 1..65535";
    }
    return NULL;
}

static void group_free(struct group *g)
{
    for (size_t i = 0; g->targets != NULL && i < g->ntargets; i++) {
        struct target *t = &g->targets[i];
        weir__free(t->name);
        hosts_free(t->hosts, t->nhosts);
        weir__free(t->recs);
    }
    weir__free(g->targets);
    weir__free(g->applied);
    weir__free(g);
}

static int target_init(struct weir_discovery *d, struct group *g, struct target *t,
                       const struct weir_discovery_target *spec)
{
    t->d = d;
    t->g = g;
    t->kind = spec->kind;
    t->port = spec->port;
    t->weight = spec->weight ? spec->weight : 1;
    t->backup = spec->backup;
    t->drain = spec->drain;
    t->max_conns = spec->max_conns;
    t->sig = FNV_BASIS;
    weir_timer_init(&t->timer, target_timer_fired, t);
    t->name = dup_str(spec->name);
    if (t->name == NULL) {
        return WEIR_ENOMEM;
    }
    if (t->kind == WEIR_DISCOVERY_NAME) {
        char *hname = dup_str(spec->name);
        t->hosts = weir__calloc(1, sizeof(*t->hosts));
        if (hname == NULL || t->hosts == NULL) {
            weir__free(hname);
            return WEIR_ENOMEM;
        }
        host_init(&t->hosts[0], t, hname);
        t->nhosts = 1;
    }
    return 0;
}

int weir_discovery_add(struct weir_discovery *d, struct weir_lb *lb,
                       const struct weir_discovery_target *t, size_t n, const char **why)
{
    const char *dummy = NULL;
    why = why ? why : &dummy;
    *why = "";
    if (d == NULL || lb == NULL || t == NULL || d->started || d->ch == NULL) {
        *why = "bad arguments, or the service has started";
        return WEIR_EINVAL;
    }
    if (n > WEIR_LB_MAX_BACKENDS) {
        *why = "too many backends (at most 1024)";
        return WEIR_EINVAL;
    }
    size_t names = 0;
    for (size_t i = 0; i < n; i++) {
        const char *bad = target_check(&t[i]);
        if (bad != NULL) {
            *why = bad;
            return WEIR_EINVAL;
        }
        names += t[i].kind != WEIR_DISCOVERY_STATIC;
    }
    if (names == 0) {
        *why = "no DNS name among the backends";
        return WEIR_EINVAL;
    }
    for (struct group *o = d->groups; o != NULL; o = o->next) {
        if (o->lb == lb) {
            *why = "the set is already added";
            return WEIR_EINVAL;
        }
    }
    struct group *g = weir__calloc(1, sizeof(*g));
    if (g == NULL) {
        return WEIR_ENOMEM;
    }
    g->lb = lb;
    g->targets = weir__calloc(n, sizeof(*g->targets));
    int rc = g->targets != NULL ? 0 : WEIR_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        g->ntargets = i + 1;
        rc = target_init(d, g, &g->targets[i], &t[i]);
    }
    if (rc == 0) {
        rc = group_apply(g, why); /* the static backends, until the names resolve */
    }
    if (rc != 0) {
        group_free(g);
        return rc;
    }
    g->next = d->groups;
    d->groups = g;
    d->awaiting += names;
    return 0;
}

void weir_discovery_free(struct weir_discovery *d)
{
    if (d == NULL) {
        return;
    }
    d->stopping = true;
    if (d->ch != NULL) {
        ares_destroy(d->ch);
        d->ch = NULL;
    }
    while (d->groups != NULL) {
        struct group *g = d->groups;
        d->groups = g->next;
        group_free(g);
    }
    if (d->lib_init) {
        ares_library_cleanup();
    }
    d->magic = 0;
    weir__free(d);
}

/* ---- the service ---- */

/*
 * Runs c-ares until every target's first round has ended or timeout_ms has passed, before
 * the loop runs: a proxy started after this service starts with the names resolved.
 */
static void wait_first_answers(struct weir_discovery *d)
{
    uint64_t deadline = mono_ms() + d->opt.timeout_ms;
    while (d->awaiting > 0 && d->ch != NULL) {
        uint64_t now = mono_ms();
        if (now >= deadline) {
            break;
        }
        struct pollfd pfd[WAIT_FDS];
        nfds_t k = 0;
        for (struct sockw *s = d->socks; s != NULL && k < WAIT_FDS; s = s->next) {
            short ev = (short)(POLLIN | (s->want_write ? POLLOUT : 0));
            pfd[k++] = (struct pollfd){s->io.fd, ev, 0};
        }
        uint64_t wait = deadline - now;
        struct timeval tv;
        const struct timeval *next = ares_timeout(d->ch, NULL, &tv);
        if (next != NULL && tv_ms(next) < wait) {
            wait = tv_ms(next);
        }
        weir__rcu_offline(); /* a blocked reader must not hold up a grace period */
        int rc = poll(pfd, k, (int)wait);
        weir__rcu_online();
        if (rc < 0 && errno != EINTR) {
            break;
        }
        weir__loop_update_time(d->loop);
        if (rc <= 0) {
            ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
            continue;
        }
        for (nfds_t i = 0; i < k; i++) {
            short re = pfd[i].revents;
            if (re == 0) {
                continue;
            }
            int fd = pfd[i].fd;
            ares_process_fd(d->ch, (re & (POLLIN | POLLERR | POLLHUP)) ? fd : ARES_SOCKET_BAD,
                            (re & (POLLOUT | POLLERR | POLLHUP)) ? fd : ARES_SOCKET_BAD);
        }
    }
    if (d->awaiting > 0) {
        weir_log(WEIR_LOG_WARN,
                 "discovery: %zu name%s not resolved within %ums; starting without "
                 "them",
                 d->awaiting, d->awaiting == 1 ? "" : "s", d->opt.timeout_ms);
    }
    apply_groups(d);
}

static int service_start(struct weir_loop *loop, void *data)
{
    struct weir_discovery *d = data;
    if (d->ch == NULL || d->started) {
        return WEIR_EINVAL;
    }
    d->loop = loop;
    d->started = true;
    for (struct group *g = d->groups; g != NULL; g = g->next) {
        for (size_t i = 0; i < g->ntargets; i++) {
            if (g->targets[i].kind != WEIR_DISCOVERY_STATIC) {
                round_start(&g->targets[i]);
            }
        }
    }
    wait_first_answers(d);
    arm_ares_timer(d);
    return 0;
}

static void service_stop(struct weir_loop *loop, void *data)
{
    struct weir_discovery *d = data;
    d->stopping = true;
    for (struct group *g = d->groups; g != NULL; g = g->next) {
        for (size_t i = 0; i < g->ntargets; i++) {
            weir_timer_stop(loop, &g->targets[i].timer);
        }
    }
    weir_timer_stop(loop, &d->ares_timer);
    weir__loop_defer_cancel(loop, &d->apply);
    if (d->ch != NULL) {
        /* Calls back every query (ignored: stopping) and drops every socket (reaped when the
           loop is freed). */
        ares_destroy(d->ch);
        d->ch = NULL;
    }
    d->loop = NULL;
}

const struct weir_background_ops weir_discovery_service = {
    .start = service_start,
    .stop = service_stop,
};
