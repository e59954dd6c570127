/*
 * Backend sets and selection (see weir/lb.h).
 *
 * A set is immutable once built and published through one RCU pointer; selecting reads it
 * without a lock. The only shared writes per selection are on the chosen backend (its
 * reference and active count) and, for round robin, the tier's cursor. Each tier (primary,
 * backup) holds:
 *   - seq: nginx's smooth weighted round-robin order over one period (sum of weights
 *     entries), which round robin walks and which random and least_conn sample, so weights
 *     hold for all three;
 *   - ring: the ketama points, built exactly as nginx's `hash ... consistent` builds them.
 */
#include "lb/lb_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/fmt.h"
#include "core/rcu.h"
#include "weir/error.h"
#include "weir/log.h"

#define DEFAULT_MAX_FAILS        3
#define DEFAULT_EJECT_MS         10000
#define DEFAULT_EJECT_MAX_MS     300000
#define KETAMA_POINTS_PER_WEIGHT 160
#define KETAMA_TRIES             20 /* points walked past unusable backends, as nginx */

struct kpoint {
    uint32_t hash;
    uint32_t idx; /* into tier.b */
};

struct tier {
    _Atomic uint64_t cursor; /* round robin position in seq */
    struct weir_backend **b;
    uint32_t *weight;
    uint32_t n;
    uint32_t *seq;
    uint32_t seqlen;
    struct kpoint *ring;
    uint32_t nring;
};

struct lbset {
    struct tier tier[2];       /* primary, backup */
    struct weir_backend **all; /* in the order given */
    uint32_t *all_weight;
    bool *all_backup;
    size_t nall;
};

struct weir_lb {
    struct lbset *set; /* RCU-published */
    pthread_mutex_t update_lock;
    struct weir_lb_options opt;
    atomic_uint waiting; /* requests waiting for room (weir__lb_queue_enter) */
};

/* ---- clock, random ---- */

uint64_t weir__lb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t rand64(void)
{
    /* xorshift64*, one state per thread: no shared writes. */
    static _Thread_local uint64_t state;
    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state = ((uint64_t)(uintptr_t)&state * 0x9E3779B97F4A7C15ull) ^
                ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec;
        if (state == 0) {
            state = 0x2545F4914F6CDD1Dull;
        }
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1Dull;
}

/* ---- CRC-32, as nginx's ngx_crc32 ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[i] = c;
    }
}

static uint32_t crc_update(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    }
    return crc;
}

uint32_t weir__crc32(const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    return crc_update(0xffffffffu, data, len) ^ 0xffffffffu;
}

/* ---- backends ---- */

void weir__backend_ref(struct weir_backend *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void weir__backend_unref(struct weir_backend *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        weir__free(b);
    }
}

static bool healthy_now(struct weir_backend *b, uint64_t *now);

/* What a pick is told and tells back. */
struct pickst {
    uint64_t now;       /* 0 until needed */
    bool ignore_health; /* fail open */
    bool capped;        /* a backend was passed over only for being at its max_conns */
};

static bool at_cap(struct weir_backend *b)
{
    unsigned cap = atomic_load_explicit(&b->max_conns, memory_order_relaxed);
    return cap != 0 && atomic_load_explicit(&b->active, memory_order_relaxed) >= cap;
}

static bool usable(struct weir_backend *b, struct pickst *ps)
{
    if (atomic_load_explicit(&b->drain, memory_order_relaxed)) {
        return false;
    }
    if (!ps->ignore_health && !healthy_now(b, &ps->now)) {
        return false;
    }
    if (at_cap(b)) {
        ps->capped = true;
        return false;
    }
    return true;
}

static bool healthy_now(struct weir_backend *b, uint64_t *now)
{
    if (!atomic_load_explicit(&b->healthy, memory_order_relaxed)) {
        return false;
    }
    uint64_t until = atomic_load_explicit(&b->ejected_until_ms, memory_order_relaxed);
    if (until == 0) {
        return true;
    }
    if (*now == 0) {
        *now = weir__lb_now_ms();
    }
    return *now >= until;
}

/* Whether some backend of b's group other than b can take requests (ejections, health, drain). */
static bool others_usable(const struct weir_backend *b, uint64_t now)
{
    if (b->lb == NULL) {
        return true;
    }
    const struct lbset *s = weir__rcu_read((void *const *)&b->lb->set);
    for (size_t i = 0; i < s->nall; i++) {
        struct weir_backend *o = s->all[i];
        if (o != b && !atomic_load_explicit(&o->drain, memory_order_relaxed) &&
            healthy_now(o, &now)) {
            return true;
        }
    }
    return false;
}

/*
 * Panic mode (Envoy's panic threshold, nginx's single-server rule): passive ejection never
 * leaves a group with no usable backend, since then every request would fail at once on a
 * backend that may only be slow. The failing backend stays in; the first refusal since its
 * last success is logged, every one is counted (kept_in).
 */
static void keep_in(struct weir_backend *b, unsigned f, enum weir_error_type type,
                    const char *context)
{
    atomic_fetch_add_explicit(&b->kept_in, 1, memory_order_relaxed);
    if (!atomic_exchange_explicit(&b->panic, true, memory_order_relaxed)) {
        weir_log(WEIR_LOG_WARN,
                 "backend %s kept in after %u failure%s in a row (%s%s%s): it is the last "
                 "usable backend of its group (panic mode)",
                 b->ident, f, f == 1 ? "" : "s", weir_error_type_str(type), context ? ", " : "",
                 context ? context : "");
    }
}

void weir__backend_failed(struct weir_backend *b, enum weir_error_type type, const char *context)
{
    if (b == NULL || b->max_fails == UINT32_MAX) {
        return;
    }
    unsigned f = atomic_fetch_add_explicit(&b->fails, 1, memory_order_relaxed) + 1;
    unsigned e = atomic_load_explicit(&b->ejections, memory_order_relaxed);
    /* Back from an ejection and failing again: out at once, for twice as long. */
    if (f < b->max_fails && e == 0) {
        return;
    }
    uint64_t now = weir__lb_now_ms();
    if (atomic_load_explicit(&b->ejected_until_ms, memory_order_relaxed) > now) {
        return; /* already out (requests sent before the ejection failing now) */
    }
    if (!others_usable(b, now)) {
        keep_in(b, f, type, context);
        return;
    }
    uint64_t ms = b->eject_ms;
    for (unsigned i = 0; i < e && ms < b->eject_max_ms; i++) {
        ms *= 2;
    }
    if (ms > b->eject_max_ms) {
        ms = b->eject_max_ms;
    }
    uint64_t until = now + ms;
    atomic_store_explicit(&b->ejected_until_ms, until, memory_order_relaxed);
    if (!others_usable(b, now)) {
        /* Another worker ejected the last other one meanwhile: one of us must stay. */
        uint64_t mine = until;
        if (atomic_compare_exchange_strong_explicit(&b->ejected_until_ms, &mine, 0,
                                                    memory_order_relaxed, memory_order_relaxed)) {
            keep_in(b, f, type, context);
            return;
        }
    }
    atomic_store_explicit(&b->panic, false, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->ejections, 1, memory_order_relaxed);
    atomic_store_explicit(&b->fails, 0, memory_order_relaxed);
    char d[32], n[48];
    if (e == 0) {
        (void)snprintf(n, sizeof(n), "after %u failure%s in a row", f, f == 1 ? "" : "s");
    } else {
        (void)snprintf(n, sizeof(n), "again (%u in a row), failing on its return", e + 1);
    }
    weir_log(WEIR_LOG_WARN, "backend %s ejected for %s %s: %s%s%s%s", b->ident,
             weir__fmt_ms(ms, d, sizeof(d)), n, weir_error_type_str(type), context ? " (" : "",
             context ? context : "", context ? ")" : "");
}

#define H2_CAP_TTL_MS 60000

void weir__backend_learn_h2_cap(struct weir_backend *b, uint32_t cap)
{
    if (b == NULL || cap == 0) {
        return;
    }
    atomic_store_explicit(&b->h2_cap, cap, memory_order_relaxed);
    atomic_store_explicit(&b->h2_cap_until_ms, weir__lb_now_ms() + H2_CAP_TTL_MS,
                          memory_order_relaxed);
}

uint32_t weir__backend_h2_cap(struct weir_backend *b)
{
    if (b == NULL) {
        return 0;
    }
    uint64_t until = atomic_load_explicit(&b->h2_cap_until_ms, memory_order_relaxed);
    if (until == 0 || weir__lb_now_ms() >= until) {
        return 0;
    }
    return atomic_load_explicit(&b->h2_cap, memory_order_relaxed);
}

void weir__backend_succeeded(struct weir_backend *b)
{
    if (b == NULL) {
        return;
    }
    /* Loads first: a backend that is doing fine costs no shared write. */
    if (atomic_load_explicit(&b->fails, memory_order_relaxed) != 0) {
        atomic_store_explicit(&b->fails, 0, memory_order_relaxed);
    }
    if (atomic_load_explicit(&b->panic, memory_order_relaxed)) {
        atomic_store_explicit(&b->panic, false, memory_order_relaxed);
    }
    if (atomic_load_explicit(&b->ejections, memory_order_relaxed) != 0) {
        /* The exchange decides which of the workers that see the success logs it. */
        unsigned e = atomic_exchange_explicit(&b->ejections, 0, memory_order_relaxed);
        atomic_store_explicit(&b->ejected_until_ms, 0, memory_order_relaxed);
        if (e != 0) {
            weir_log(WEIR_LOG_WARN, "backend %s is back: a request succeeded after %u ejection%s",
                     b->ident, e, e == 1 ? "" : "s");
        }
    }
}

static struct weir_backend *backend_new(struct weir_lb *lb, const struct weir_lb_backend *spec)
{
    const struct weir_lb_options *opt = &lb->opt;
    struct weir_backend *b = weir__calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    struct weir_peer tmp;
    memset(&tmp, 0, sizeof(tmp));
    if (weir_peer_set_address(&tmp, spec->address) != 0) {
        weir__free(b);
        return NULL;
    }
    memcpy(&b->addr, &tmp.addr, tmp.addrlen);
    b->addrlen = tmp.addrlen;
    memcpy(b->name, tmp.name, sizeof(b->name));
    size_t len = strlen(spec->address);
    memcpy(b->ident, spec->address, len + 1); /* checked to fit by the caller */
    atomic_init(&b->refs, 0);
    atomic_init(&b->active, 0);
    atomic_init(&b->fails, 0);
    atomic_init(&b->ejections, 0);
    atomic_init(&b->ejected_until_ms, 0);
    atomic_init(&b->healthy, true);
    atomic_init(&b->drain, spec->drain);
    atomic_init(&b->max_conns, spec->max_conns);
    atomic_init(&b->selected, 0);
    atomic_init(&b->kept_in, 0);
    atomic_init(&b->panic, false);
    b->lb = lb;
    b->max_fails = opt->max_fails;
    b->eject_ms = opt->eject_ms;
    b->eject_max_ms = opt->eject_max_ms;
    return b;
}

/* ---- building a set ---- */

static int cmp_points(const void *a, const void *b)
{
    const struct kpoint *x = a, *y = b;
    if (x->hash != y->hash) {
        return x->hash < y->hash ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * nginx's ring: for each server, crc32(HOST "\0" PORT PREV_HASH) chained over 160 points per
 * unit of weight, where HOST and PORT split the address as written at its last ':' followed
 * by digits only; points sorted by hash, duplicates dropped (the first kept).
 */
static int build_ring(struct tier *t)
{
    size_t total = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        total += (size_t)t->weight[i] * KETAMA_POINTS_PER_WEIGHT;
    }
    t->ring = weir__calloc(total ? total : 1, sizeof(*t->ring));
    if (t->ring == NULL) {
        return WEIR_ENOMEM;
    }
    pthread_once(&crc_once, crc_init);
    size_t np = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        const char *s = t->b[i]->ident;
        size_t len = strlen(s);
        size_t host_len = len, port_off = len, port_len = 0;
        for (size_t j = 0; j < len; j++) {
            char c = s[len - j - 1];
            if (c == ':') {
                host_len = len - j - 1;
                port_off = len - j;
                port_len = j;
                break;
            }
            if (c < '0' || c > '9') {
                break;
            }
        }
        uint32_t base = 0xffffffffu;
        base = crc_update(base, s, host_len);
        base = crc_update(base, "", 1);
        base = crc_update(base, s + port_off, port_len);
        uint32_t prev = 0;
        size_t npoints = (size_t)t->weight[i] * KETAMA_POINTS_PER_WEIGHT;
        for (size_t k = 0; k < npoints; k++) {
            unsigned char le[4] = {(unsigned char)prev, (unsigned char)(prev >> 8),
                                   (unsigned char)(prev >> 16), (unsigned char)(prev >> 24)};
            uint32_t h = crc_update(base, le, 4) ^ 0xffffffffu;
            t->ring[np].hash = h;
            t->ring[np].idx = i;
            np++;
            prev = h;
        }
    }
    qsort(t->ring, np, sizeof(*t->ring), cmp_points);
    size_t out = 0;
    for (size_t j = 0; j < np; j++) {
        if (out == 0 || t->ring[out - 1].hash != t->ring[j].hash) {
            t->ring[out++] = t->ring[j];
        }
    }
    t->nring = (uint32_t)out;
    return 0;
}

/* One period of nginx's smooth weighted round robin. */
static int build_seq(struct tier *t)
{
    uint32_t total = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        total += t->weight[i];
    }
    t->seq = weir__calloc(total ? total : 1, sizeof(*t->seq));
    int64_t *cur = weir__calloc(t->n ? t->n : 1, sizeof(*cur));
    if (t->seq == NULL || cur == NULL) {
        weir__free(cur);
        return WEIR_ENOMEM;
    }
    for (uint32_t k = 0; k < total; k++) {
        uint32_t best = 0;
        for (uint32_t i = 0; i < t->n; i++) {
            cur[i] += t->weight[i];
            if (cur[i] > cur[best]) {
                best = i;
            }
        }
        cur[best] -= total;
        t->seq[k] = best;
    }
    weir__free(cur);
    t->seqlen = total;
    return 0;
}

static void set_free(struct lbset *s)
{
    if (s == NULL) {
        return;
    }
    for (int k = 0; k < 2; k++) {
        weir__free(s->tier[k].b);
        weir__free(s->tier[k].weight);
        weir__free(s->tier[k].seq);
        weir__free(s->tier[k].ring);
    }
    for (size_t i = 0; i < s->nall; i++) {
        if (s->all[i] != NULL) {
            weir__backend_unref(s->all[i]);
        }
    }
    weir__free(s->all);
    weir__free(s->all_weight);
    weir__free(s->all_backup);
    weir__free(s);
}

static struct weir_backend *find_in(const struct lbset *s, const char *ident)
{
    for (size_t i = 0; s != NULL && i < s->nall; i++) {
        if (strcmp(s->all[i]->ident, ident) == 0) {
            return s->all[i];
        }
    }
    return NULL;
}

static int check_specs(const struct weir_lb_backend *b, size_t n, const char **why)
{
    if (n > WEIR_LB_MAX_BACKENDS) {
        *why = "too many backends (at most 1024)";
        return WEIR_EINVAL;
    }
    uint64_t total[2] = {0, 0};
    for (size_t i = 0; i < n; i++) {
        struct weir_peer tmp;
        memset(&tmp, 0, sizeof(tmp));
        if (b[i].address == NULL || strlen(b[i].address) >= sizeof(tmp.name) ||
            weir_peer_set_address(&tmp, b[i].address) != 0) {
            *why = "backend address must be ip:port or [ipv6]:port";
            return WEIR_EINVAL;
        }
        if (b[i].weight > WEIR_LB_MAX_WEIGHT) {
            *why = "backend weight must be 1..256";
            return WEIR_EINVAL;
        }
        total[b[i].backup ? 1 : 0] += b[i].weight ? b[i].weight : 1;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(b[i].address, b[j].address) == 0) {
                *why = "the same backend address is listed twice";
                return WEIR_EINVAL;
            }
        }
    }
    if (total[0] > WEIR_LB_MAX_TOTAL_WEIGHT || total[1] > WEIR_LB_MAX_TOTAL_WEIGHT) {
        *why = "sum of backend weights over 16384";
        return WEIR_EINVAL;
    }
    return 0;
}

/* Builds a set for specs, reusing the backends of old whose address stays. */
static int set_build(struct weir_lb *lb, const struct lbset *old, const struct weir_lb_backend *b,
                     size_t n, struct lbset **out)
{
    struct lbset *s = weir__calloc(1, sizeof(*s));
    if (s == NULL) {
        return WEIR_ENOMEM;
    }
    size_t cap = n ? n : 1;
    /* Arrays of pointers: sizeof(*x) is a pointer's size on purpose. */
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    s->all = weir__calloc(cap, sizeof(*s->all));
    s->all_weight = weir__calloc(cap, sizeof(*s->all_weight));
    s->all_backup = weir__calloc(cap, sizeof(*s->all_backup));
    for (int k = 0; k < 2; k++) {
        // NOLINTNEXTLINE(bugprone-sizeof-expression)
        s->tier[k].b = weir__calloc(cap, sizeof(*s->tier[k].b));
        s->tier[k].weight = weir__calloc(cap, sizeof(*s->tier[k].weight));
    }
    if (s->all == NULL || s->all_weight == NULL || s->all_backup == NULL || s->tier[0].b == NULL ||
        s->tier[0].weight == NULL || s->tier[1].b == NULL || s->tier[1].weight == NULL) {
        set_free(s);
        return WEIR_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct weir_backend *be = find_in(old, b[i].address);
        if (be == NULL) {
            be = backend_new(lb, &b[i]);
            if (be == NULL) {
                set_free(s);
                return WEIR_ENOMEM;
            }
        } else {
            atomic_store_explicit(&be->drain, b[i].drain, memory_order_relaxed);
            atomic_store_explicit(&be->max_conns, b[i].max_conns, memory_order_relaxed);
        }
        weir__backend_ref(be);
        s->all[i] = be;
        s->nall = i + 1;
        uint32_t w = b[i].weight ? b[i].weight : 1;
        s->all_weight[i] = w;
        s->all_backup[i] = b[i].backup;
        struct tier *t = &s->tier[b[i].backup ? 1 : 0];
        t->b[t->n] = be;
        t->weight[t->n] = w;
        t->n++;
    }
    for (int k = 0; k < 2; k++) {
        atomic_init(&s->tier[k].cursor, 0);
        int rc = build_seq(&s->tier[k]);
        if (rc == 0 && lb->opt.algorithm == WEIR_LB_KETAMA) {
            rc = build_ring(&s->tier[k]);
        }
        if (rc != 0) {
            set_free(s);
            return rc;
        }
    }
    *out = s;
    return 0;
}

/* ---- the public object ---- */

int weir_lb_new(const struct weir_lb_options *opt, const struct weir_lb_backend *b, size_t n,
                struct weir_lb **out, const char **why)
{
    const char *dummy = NULL;
    why = why ? why : &dummy;
    *why = "";
    if (opt == NULL || (unsigned)opt->algorithm > WEIR_LB_KETAMA) {
        *why = "unknown algorithm";
        return WEIR_EINVAL;
    }
    int rc = check_specs(b, n, why);
    if (rc != 0) {
        return rc;
    }
    struct weir_lb *lb = weir__calloc(1, sizeof(*lb));
    if (lb == NULL) {
        return WEIR_ENOMEM;
    }
    lb->opt = *opt;
    if (lb->opt.max_fails == 0) {
        lb->opt.max_fails = DEFAULT_MAX_FAILS;
    }
    if (lb->opt.eject_ms == 0) {
        lb->opt.eject_ms = DEFAULT_EJECT_MS;
    }
    if (lb->opt.eject_max_ms == 0) {
        lb->opt.eject_max_ms = DEFAULT_EJECT_MAX_MS;
    }
    if (lb->opt.eject_max_ms < lb->opt.eject_ms) {
        lb->opt.eject_max_ms = lb->opt.eject_ms;
    }
    if (lb->opt.queue_size == 0) {
        lb->opt.queue_size = 128;
    } else if (lb->opt.queue_size == UINT32_MAX) {
        lb->opt.queue_size = 0;
    }
    if (lb->opt.queue_timeout_ms == 0) {
        lb->opt.queue_timeout_ms = 5000;
    }
    atomic_init(&lb->waiting, 0);
    if (pthread_mutex_init(&lb->update_lock, NULL) != 0) {
        weir__free(lb);
        return WEIR_ENOMEM;
    }
    struct lbset *s = NULL;
    rc = set_build(lb, NULL, b, n, &s);
    if (rc != 0) {
        pthread_mutex_destroy(&lb->update_lock);
        weir__free(lb);
        return rc;
    }
    lb->set = s;
    *out = lb;
    return 0;
}

int weir_lb_update(struct weir_lb *lb, const struct weir_lb_backend *b, size_t n, const char **why)
{
    const char *dummy = NULL;
    why = why ? why : &dummy;
    *why = "";
    int rc = check_specs(b, n, why);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&lb->update_lock);
    struct lbset *ns = NULL, *old = NULL;
    rc = set_build(lb, lb->set, b, n, &ns);
    if (rc == 0) {
        old = weir__rcu_xchg((void **)&lb->set, ns);
    }
    pthread_mutex_unlock(&lb->update_lock);
    /*
     * The grace period is waited for outside the lock: an RCU reader blocked on the lock (the
     * health checker starting a round) would never pass a quiescent state. Only RCU readers
     * can still see old; whoever takes the lock from now on sees the new set.
     */
    if (old != NULL) {
        weir__rcu_synchronize();
        set_free(old);
    }
    return rc;
}

void weir_lb_free(struct weir_lb *lb)
{
    if (lb == NULL) {
        return;
    }
    set_free(lb->set);
    pthread_mutex_destroy(&lb->update_lock);
    weir__free(lb);
}

size_t weir_lb_size(const struct weir_lb *lb)
{
    struct weir_lb *m = (struct weir_lb *)lb;
    pthread_mutex_lock(&m->update_lock);
    size_t n = m->set->nall;
    pthread_mutex_unlock(&m->update_lock);
    return n;
}

/* ---- selection ---- */

static struct weir_backend *scan(const struct tier *t, uint32_t start, const void *avoid,
                                 struct pickst *ps)
{
    for (uint32_t i = 0; i < t->seqlen; i++) {
        struct weir_backend *b = t->b[t->seq[(start + i) % t->seqlen]];
        if (b != avoid && usable(b, ps)) {
            return b;
        }
    }
    return NULL;
}

/* a has fewer active requests per unit of weight than b. */
static bool less_loaded(const struct tier *t, uint32_t a, uint32_t b)
{
    uint64_t la = atomic_load_explicit(&t->b[a]->active, memory_order_relaxed);
    uint64_t lb = atomic_load_explicit(&t->b[b]->active, memory_order_relaxed);
    return la * t->weight[b] < lb * t->weight[a];
}

static struct weir_backend *pick(struct weir_lb *lb, struct tier *t, uint32_t key_hash,
                                 size_t key_len, const void *avoid, struct pickst *ps)
{
    if (t->seqlen == 0) {
        return NULL;
    }
    enum weir_lb_algorithm alg = lb->opt.algorithm;
    if (alg == WEIR_LB_KETAMA && key_len == 0) {
        alg = WEIR_LB_ROUND_ROBIN; /* no key: round robin, as nginx does */
    }
    switch (alg) {
    case WEIR_LB_ROUND_ROBIN: {
        uint64_t c = atomic_fetch_add_explicit(&t->cursor, 1, memory_order_relaxed);
        return scan(t, (uint32_t)(c % t->seqlen), avoid, ps);
    }
    case WEIR_LB_RANDOM:
        return scan(t, (uint32_t)(rand64() % t->seqlen), avoid, ps);
    case WEIR_LB_LEAST_CONN: {
        uint32_t pos = (uint32_t)(rand64() % t->seqlen);
        uint32_t a = t->seq[pos];
        uint32_t b = t->seq[rand64() % t->seqlen];
        /* Two distinct candidates when there are two: the next other one in the sequence. */
        for (uint32_t k = 1; b == a && k < t->seqlen; k++) {
            b = t->seq[(pos + k) % t->seqlen];
        }
        bool ua = t->b[a] != avoid && usable(t->b[a], ps);
        bool ub = t->b[b] != avoid && usable(t->b[b], ps);
        if (ua && ub) {
            return t->b[less_loaded(t, b, a) ? b : a];
        }
        if (ua || ub) {
            return t->b[ua ? a : b];
        }
        /* Both unusable: the least loaded of the usable ones. */
        struct weir_backend *best = NULL;
        uint32_t bi = 0;
        for (uint32_t i = 0; i < t->n; i++) {
            if (t->b[i] != avoid && usable(t->b[i], ps) &&
                (best == NULL || less_loaded(t, i, bi))) {
                best = t->b[i];
                bi = i;
            }
        }
        return best;
    }
    case WEIR_LB_KETAMA: {
        /* nginx's search: the first point at or after the key's hash, wrapping. */
        uint32_t lo = 0, hi = t->nring;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (t->ring[mid].hash < key_hash) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for (uint32_t k = 0; k < KETAMA_TRIES && k < t->nring; k++) {
            struct weir_backend *b = t->b[t->ring[(lo + k) % t->nring].idx];
            if (b != avoid && usable(b, ps)) {
                return b;
            }
        }
        return scan(t, key_hash % t->seqlen, avoid, ps);
    }
    }
    return NULL;
}

void weir_peer_release(struct weir_peer *peer)
{
    struct weir_backend *b = peer->backend;
    if (b != NULL) {
        peer->backend = NULL;
        atomic_fetch_sub_explicit(&b->active, 1, memory_order_relaxed);
        weir__backend_unref(b);
    }
}

/* Counts one more request on b; false when b has just reached its cap (a race lost). */
static bool reserve(struct weir_backend *b)
{
    unsigned cap = atomic_load_explicit(&b->max_conns, memory_order_relaxed);
    if (cap == 0) {
        atomic_fetch_add_explicit(&b->active, 1, memory_order_relaxed);
        return true;
    }
    unsigned a = atomic_load_explicit(&b->active, memory_order_relaxed);
    do {
        if (a >= cap) {
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&b->active, &a, a + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

static struct weir_backend *choose(struct weir_lb *lb, struct lbset *s, uint32_t h, size_t key_len,
                                   const void *avoid, struct pickst *ps)
{
    struct weir_backend *b = NULL;
    /* Primaries then backups avoiding the backend just tried; then the same without. */
    for (int pass = 0; pass < 4 && b == NULL; pass++) {
        b = pick(lb, &s->tier[pass % 2], h, key_len, pass < 2 ? avoid : NULL, ps);
    }
    if (b == NULL && lb->opt.fail_open) {
        ps->ignore_health = true;
        b = pick(lb, &s->tier[0], h, key_len, NULL, ps);
        if (b == NULL) {
            b = pick(lb, &s->tier[1], h, key_len, NULL, ps);
        }
    }
    return b;
}

int weir_lb_select(struct weir_lb *lb, struct weir_iov key, struct weir_peer *peer)
{
    struct lbset *s = weir__rcu_read((void *const *)&lb->set);
    const void *avoid = peer->backend; /* a retry: another backend if there is one */
    uint32_t h = lb->opt.algorithm == WEIR_LB_KETAMA ? weir__crc32(key.base, key.len) : 0;
    struct pickst ps = {0, false, false};
    struct weir_backend *b = NULL;
    /* A backend with a cap can fill up between the look and the count: look again. */
    for (int tries = 0; tries < 4; tries++) {
        ps.ignore_health = false;
        b = choose(lb, s, h, key.len, avoid, &ps);
        if (b == NULL || reserve(b)) {
            break;
        }
        ps.capped = true;
        b = NULL;
    }
    if (b == NULL) {
        return ps.capped ? WEIR_ELIMIT : WEIR_EUNAVAILABLE;
    }
    /* Safe: s, and so b, cannot be freed before this thread's next quiescent state. */
    weir__backend_ref(b);
    atomic_fetch_add_explicit(&b->selected, 1, memory_order_relaxed);
    weir_peer_release(peer);
    memcpy(&peer->addr, &b->addr, b->addrlen);
    peer->addrlen = b->addrlen;
    memcpy(peer->name, b->name, sizeof(peer->name));
    peer->backend = b;
    return 0;
}

bool weir__lb_queue_enter(struct weir_lb *lb)
{
    unsigned n = atomic_fetch_add_explicit(&lb->waiting, 1, memory_order_relaxed);
    if (n >= lb->opt.queue_size) {
        atomic_fetch_sub_explicit(&lb->waiting, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

void weir__lb_queue_leave(struct weir_lb *lb)
{
    atomic_fetch_sub_explicit(&lb->waiting, 1, memory_order_relaxed);
}

uint32_t weir__lb_queue_timeout_ms(const struct weir_lb *lb)
{
    return lb->opt.queue_timeout_ms;
}

/* ---- state and control ---- */

int weir__lb_backends(struct weir_lb *lb, struct weir_backend ***out, size_t *n)
{
    pthread_mutex_lock(&lb->update_lock);
    struct lbset *s = lb->set;
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    struct weir_backend **v = weir__calloc(s->nall ? s->nall : 1, sizeof(*v));
    if (v == NULL) {
        pthread_mutex_unlock(&lb->update_lock);
        return WEIR_ENOMEM;
    }
    for (size_t i = 0; i < s->nall; i++) {
        weir__backend_ref(s->all[i]);
        v[i] = s->all[i];
    }
    *n = s->nall;
    pthread_mutex_unlock(&lb->update_lock);
    *out = v;
    return 0;
}

int weir_lb_backend_info(const struct weir_lb *lb, size_t i, struct weir_lb_backend_info *info)
{
    struct weir_lb *m = (struct weir_lb *)lb;
    pthread_mutex_lock(&m->update_lock);
    struct lbset *s = m->set;
    if (i >= s->nall) {
        pthread_mutex_unlock(&m->update_lock);
        return WEIR_EINVAL;
    }
    struct weir_backend *b = s->all[i];
    memset(info, 0, sizeof(*info));
    memcpy(info->address, b->ident, sizeof(info->address));
    info->weight = s->all_weight[i];
    info->backup = s->all_backup[i];
    info->drain = atomic_load(&b->drain);
    info->healthy = atomic_load(&b->healthy);
    uint64_t until = atomic_load(&b->ejected_until_ms);
    info->ejected = until != 0 && weir__lb_now_ms() < until;
    info->active = atomic_load(&b->active);
    info->fails = atomic_load(&b->fails);
    info->selected = atomic_load(&b->selected);
    info->kept_in = atomic_load(&b->kept_in);
    pthread_mutex_unlock(&m->update_lock);
    return 0;
}

static int set_flag(struct weir_lb *lb, const char *address, bool healthy_flag, bool v)
{
    pthread_mutex_lock(&lb->update_lock);
    struct weir_backend *b = address ? find_in(lb->set, address) : NULL;
    if (b != NULL) {
        atomic_store(healthy_flag ? &b->healthy : &b->drain, v);
    }
    pthread_mutex_unlock(&lb->update_lock);
    return b != NULL ? 0 : WEIR_EINVAL;
}

int weir_lb_set_healthy(struct weir_lb *lb, const char *address, bool up)
{
    return set_flag(lb, address, true, up);
}

int weir_lb_set_drain(struct weir_lb *lb, const char *address, bool drain)
{
    return set_flag(lb, address, false, drain);
}
