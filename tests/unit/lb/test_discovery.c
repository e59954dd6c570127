/*
 * Unit tests for DNS discovery (src/lb/discovery.c) against a small DNS server run by the test
 * on loopback, whose answers each test sets: option and target checks; a name's A and AAAA
 * answers becoming a set (sorted, v4 first) and following changes at the TTL; the last good
 * answer kept through timeouts, SERVFAIL, NXDOMAIN and an answer with no address; a family
 * with no record emptied while the other has some; SRV ports, weights (scaled to 1..256) and
 * priorities (backups); duplicates merged; the 1024-backend bound and the weight bound; and the
 * set left alone when nothing changed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/loop.h"
#include "lb/dns_msg.h"
#include "weir/error.h"
#include "weir/lb.h"
#include "weir/server.h"

/* ---- a DNS server with a table of answers ---- */

#define MAX_RECORDS 64
#define MAX_ENTRIES 16

enum entry_mode {
    ANSWER = 0, /* the records (none: NODATA) */
    NXDOMAIN,
    SERVFAIL,
    DROP, /* no reply at all: the client times out */
};

struct record {
    uint16_t type;
    unsigned char addr[16]; /* A: 4 bytes, AAAA: 16 */
    uint16_t prio, weight, port;
    char target[64];
};

struct entry {
    char name[64];
    uint16_t type;
    enum entry_mode mode;
    uint32_t ttl;
    struct record r[MAX_RECORDS];
    size_t n;
};

struct fake_dns {
    int fd;
    uint16_t port;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t lock;
    struct entry e[MAX_ENTRIES];
    size_t n;
    atomic_uint queries;
};

static struct fake_dns dns;

/* The entry for (name, type), made empty (NODATA) when new. Under dns.lock. */
static struct entry *entry_for(const char *name, uint16_t type)
{
    for (size_t i = 0; i < dns.n; i++) {
        if (strcmp(dns.e[i].name, name) == 0 && dns.e[i].type == type) {
            return &dns.e[i];
        }
    }
    assert_true(dns.n < MAX_ENTRIES);
    struct entry *e = &dns.e[dns.n++];
    memset(e, 0, sizeof(*e));
    (void)snprintf(e->name, sizeof(e->name), "%s", name);
    e->type = type;
    return e;
}

static void set_mode(const char *name, uint16_t type, enum entry_mode mode, uint32_t ttl)
{
    pthread_mutex_lock(&dns.lock);
    struct entry *e = entry_for(name, type);
    e->mode = mode;
    e->ttl = ttl;
    e->n = 0;
    pthread_mutex_unlock(&dns.lock);
}

/* Sets name's A and AAAA records from a list of addresses ("127.0.0.2", "::1"). */
static void set_addrs(const char *name, uint32_t ttl, const char *const *ips, size_t n)
{
    pthread_mutex_lock(&dns.lock);
    struct entry *a = entry_for(name, 1), *aaaa = entry_for(name, 28);
    a->mode = aaaa->mode = ANSWER;
    a->ttl = aaaa->ttl = ttl;
    a->n = aaaa->n = 0;
    for (size_t i = 0; i < n; i++) {
        struct record r = {0};
        if (inet_pton(AF_INET, ips[i], r.addr) == 1) {
            r.type = 1;
            a->r[a->n++] = r;
        } else {
            assert_int_equal(inet_pton(AF_INET6, ips[i], r.addr), 1);
            r.type = 28;
            aaaa->r[aaaa->n++] = r;
        }
    }
    pthread_mutex_unlock(&dns.lock);
}

static void add_srv(const char *name, uint32_t ttl, uint16_t prio, uint16_t weight, uint16_t port,
                    const char *target)
{
    pthread_mutex_lock(&dns.lock);
    struct entry *e = entry_for(name, 33);
    e->mode = ANSWER;
    e->ttl = ttl;
    struct record *r = &e->r[e->n++];
    memset(r, 0, sizeof(*r));
    r->type = 33;
    r->prio = prio;
    r->weight = weight;
    r->port = port;
    (void)snprintf(r->target, sizeof(r->target), "%s", target);
    pthread_mutex_unlock(&dns.lock);
}

static size_t put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    return 2;
}

static size_t put_name(unsigned char *p, const char *name)
{
    size_t o = 0;
    while (*name && strcmp(name, ".") != 0) {
        const char *dot = strchr(name, '.');
        size_t len = dot ? (size_t)(dot - name) : strlen(name);
        p[o++] = (unsigned char)len;
        memcpy(p + o, name, len);
        o += len;
        name += len + (dot ? 1 : 0);
    }
    p[o++] = 0;
    return o;
}

/* Answers one query in q[0..n) into out; 0 when it is not answered. */
static size_t answer(const unsigned char *q, size_t n, unsigned char *out)
{
    char name[256];
    size_t o = 0, i = 12;
    if (n < 12) {
        return 0;
    }
    while (i < n && q[i] != 0 && o + q[i] + 1 < sizeof(name)) {
        size_t len = q[i];
        if (o > 0) {
            name[o++] = '.';
        }
        memcpy(name + o, q + i + 1, len);
        o += len;
        i += len + 1;
    }
    name[o] = '\0';
    if (i + 5 > n) {
        return 0;
    }
    size_t qend = i + 5;
    uint16_t type = (uint16_t)(q[i + 1] << 8 | q[i + 2]);
    atomic_fetch_add(&dns.queries, 1);
    pthread_mutex_lock(&dns.lock);
    struct entry *e = NULL;
    for (size_t k = 0; k < dns.n; k++) {
        if (strcasecmp(dns.e[k].name, name) == 0 && dns.e[k].type == type) {
            e = &dns.e[k];
        }
    }
    bool known = e != NULL;
    for (size_t k = 0; !known && k < dns.n; k++) {
        known = strcasecmp(dns.e[k].name, name) == 0; /* the name exists: NODATA */
    }
    if (e != NULL && e->mode == DROP) {
        pthread_mutex_unlock(&dns.lock);
        return 0;
    }
    unsigned rcode = !known                             ? 3
                     : e != NULL && e->mode == NXDOMAIN ? 3
                     : e != NULL && e->mode == SERVFAIL ? 2
                                                        : 0;
    size_t nans = rcode == 0 && e != NULL ? e->n : 0;
    memcpy(out, q, 2);
    out[2] = 0x81;
    out[3] = (unsigned char)(0x80 | rcode);
    put16(out + 4, 1);
    put16(out + 6, (uint16_t)nans);
    put16(out + 8, 0);
    put16(out + 10, 0);
    memcpy(out + 12, q + 12, qend - 12);
    size_t p = qend;
    for (size_t k = 0; k < nans; k++) {
        const struct record *r = &e->r[k];
        p += put16(out + p, 0xc00c);
        p += put16(out + p, r->type);
        p += put16(out + p, 1);
        p += put16(out + p, (uint16_t)(e->ttl >> 16));
        p += put16(out + p, (uint16_t)e->ttl);
        if (r->type == 33) {
            size_t at = p;
            p += 2;
            p += put16(out + p, r->prio);
            p += put16(out + p, r->weight);
            p += put16(out + p, r->port);
            p += put_name(out + p, r->target);
            put16(out + at, (uint16_t)(p - at - 2));
        } else {
            size_t len = r->type == 1 ? 4 : 16;
            p += put16(out + p, (uint16_t)len);
            memcpy(out + p, r->addr, len);
            p += len;
        }
    }
    pthread_mutex_unlock(&dns.lock);
    return p;
}

static void *dns_main(void *arg)
{
    unsigned char q[2048], out[8192];
    while (!atomic_load(&dns.stop)) {
        struct pollfd p = {.fd = dns.fd, .events = POLLIN};
        if (poll(&p, 1, 50) != 1) {
            continue;
        }
        struct sockaddr_storage from;
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(dns.fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
        if (n <= 0) {
            continue;
        }
        size_t len = answer(q, (size_t)n, out);
        if (len > 0) {
            (void)sendto(dns.fd, out, len, 0, (struct sockaddr *)&from, flen);
        }
    }
    return NULL;
}

static int dns_setup(void **state)
{
    (void)state;
    memset(&dns, 0, sizeof(dns));
    pthread_mutex_init(&dns.lock, NULL);
    dns.fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(dns.fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(dns.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(dns.fd, (struct sockaddr *)&sa, &len), 0);
    dns.port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&dns.thread, NULL, dns_main, NULL), 0);
    return 0;
}

static int dns_teardown(void **state)
{
    (void)state;
    atomic_store(&dns.stop, true);
    pthread_join(dns.thread, NULL);
    close(dns.fd);
    pthread_mutex_destroy(&dns.lock);
    return 0;
}

/* ---- running discovery ---- */

struct world {
    struct weir_loop *loop;
    struct weir_discovery *d;
    struct weir_lb *lb;
    char server[32];
    bool running;
};

static void world_new(struct world *w, const struct weir_discovery_target *t, size_t n,
                      uint32_t timeout_ms)
{
    memset(w, 0, sizeof(*w));
    (void)snprintf(w->server, sizeof(w->server), "127.0.0.1:%u", (unsigned)dns.port);
    const char *servers[] = {w->server};
    struct weir_resolver_options opt = {
        .servers = servers,
        .nservers = 1,
        .timeout_ms = timeout_ms,
        .min_ttl_ms = 100,
        .max_ttl_ms = 60000,
        .retry_ms = 200,
    };
    const char *why = NULL;
    assert_int_equal(weir_discovery_new(&opt, &w->d, &why), 0);
    assert_non_null(w->d);
    struct weir_lb_options lo = {.algorithm = WEIR_LB_ROUND_ROBIN};
    assert_int_equal(weir_lb_new(&lo, NULL, 0, &w->lb, &why), 0);
    if (weir_discovery_add(w->d, w->lb, t, n, &why) != 0) {
        print_error("weir_discovery_add: %s\n", why);
        fail();
    }
    w->loop = weir__loop_new(64);
    assert_non_null(w->loop);
}

static void world_start(struct world *w)
{
    assert_int_equal(weir_discovery_service.start(w->loop, w->d), 0);
    w->running = true;
}

static void world_free(struct world *w)
{
    if (w->running) {
        weir_discovery_service.stop(w->loop, w->d);
    }
    weir__loop_free(w->loop);
    weir_discovery_free(w->d);
    weir_lb_free(w->lb);
}

/* The set as text: "addr/weight[/b]" joined by spaces. */
static const char *set_text(struct weir_lb *lb, char *buf, size_t size)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < weir_lb_size(lb); i++) {
        struct weir_lb_backend_info info;
        assert_int_equal(weir_lb_backend_info(lb, i, &info), 0);
        int k = snprintf(buf + o, size - o, "%s%s/%u%s", i ? " " : "", info.address, info.weight,
                         info.backup ? "/b" : "");
        assert_true(k > 0 && (size_t)k < size - o);
        o += (size_t)k;
    }
    return buf;
}

struct until {
    struct world *w;
    const char *want;
    uint64_t deadline;
    struct weir_timer timer;
};

static void check_tick(struct weir_loop *loop, struct weir_timer *t)
{
    struct until *u = t->data;
    char buf[8192];
    if ((u->want != NULL && strcmp(set_text(u->w->lb, buf, sizeof(buf)), u->want) == 0) ||
        weir_loop_now_ms(loop) >= u->deadline) {
        weir__loop_stop(loop);
        return;
    }
    assert_int_equal(weir_timer_start(loop, t, 10), 0);
}

/* Runs the loop until the set reads want (NULL: for ms), at most ms. */
static void run_until(struct world *w, const char *want, uint64_t ms)
{
    struct until u = {w, want, weir_loop_now_ms(w->loop) + ms, {0}};
    weir_timer_init(&u.timer, check_tick, &u);
    assert_int_equal(weir_timer_start(w->loop, &u.timer, 0), 0);
    assert_int_equal(weir__loop_run(w->loop), 0);
    weir_timer_stop(w->loop, &u.timer);
    if (want != NULL) {
        char buf[8192];
        assert_string_equal(set_text(w->lb, buf, sizeof(buf)), want);
    }
}

static const char *set_of(struct world *w)
{
    static char buf[8192];
    return set_text(w->lb, buf, sizeof(buf));
}

/* ---- tests ---- */

static void test_options(void **state)
{
    (void)state;
    const char *why = NULL;
    struct weir_discovery *d = NULL;
    const char *bad[] = {"localhost:53"};
    struct weir_resolver_options o = {.servers = bad, .nservers = 1};
    assert_int_equal(weir_discovery_new(&o, &d, &why), WEIR_EINVAL);
    assert_null(d);
    assert_string_equal(why, "a resolver server must be a numeric ip:port or [ipv6]:port");
    const char *noport[] = {"127.0.0.1"};
    o.servers = noport;
    assert_int_equal(weir_discovery_new(&o, &d, &why), WEIR_EINVAL);
    assert_null(d);
    const char *many[17];
    for (int i = 0; i < 17; i++) {
        many[i] = "127.0.0.1:53";
    }
    o.servers = many;
    o.nservers = 17;
    assert_int_equal(weir_discovery_new(&o, &d, &why), WEIR_EINVAL);
    assert_null(d);
    assert_string_equal(why, "more than 16 resolver servers");
    struct weir_resolver_options ttl = {.min_ttl_ms = 2000, .max_ttl_ms = 1000};
    assert_int_equal(weir_discovery_new(&ttl, &d, &why), WEIR_EINVAL);
    assert_null(d);
    assert_string_equal(why, "min_ttl is longer than max_ttl");
    const char *good[] = {"127.0.0.1:53", "[::1]:5353"};
    o.servers = good;
    o.nservers = 2;
    assert_int_equal(weir_discovery_new(&o, &d, &why), 0);
    assert_non_null(d);
    weir_discovery_free(d);
    weir_discovery_free(NULL);
}

static void test_add_checks(void **state)
{
    (void)state;
    const char *why = NULL;
    struct weir_discovery *d = NULL;
    assert_int_equal(weir_discovery_new(NULL, &d, &why), 0);
    assert_non_null(d);
    struct weir_lb_options lo = {0};
    struct weir_lb *lb = NULL;
    assert_int_equal(weir_lb_new(&lo, NULL, 0, &lb, &why), 0);
    struct weir_discovery_target only_static[] = {
        {WEIR_DISCOVERY_STATIC, "127.0.0.1:1", 0, 1, false, false, 0}};
    assert_int_equal(weir_discovery_add(d, lb, only_static, 1, &why), WEIR_EINVAL);
    assert_string_equal(why, "no DNS name among the backends");
    struct weir_discovery_target no_port[] = {
        {WEIR_DISCOVERY_NAME, "app.test", 0, 1, false, false, 0}};
    assert_int_equal(weir_discovery_add(d, lb, no_port, 1, &why), WEIR_EINVAL);
    struct weir_discovery_target bad_name[] = {
        {WEIR_DISCOVERY_NAME, "app..test", 80, 1, false, false, 0}};
    assert_int_equal(weir_discovery_add(d, lb, bad_name, 1, &why), WEIR_EINVAL);
    assert_string_equal(why, "a DNS name has no empty label");
    struct weir_discovery_target digits[] = {
        {WEIR_DISCOVERY_SRV, "10.0.0.300", 0, 0, false, false, 0}};
    assert_int_equal(weir_discovery_add(d, lb, digits, 1, &why), WEIR_EINVAL);
    struct weir_discovery_target heavy[] = {
        {WEIR_DISCOVERY_NAME, "app.test", 80, 257, false, false, 0}};
    assert_int_equal(weir_discovery_add(d, lb, heavy, 1, &why), WEIR_EINVAL);
    /* Static ones go in at once, duplicates merged. */
    struct weir_discovery_target ok[] = {
        {WEIR_DISCOVERY_STATIC, "127.0.0.1:1", 0, 2, false, false, 0},
        {WEIR_DISCOVERY_NAME, "app.test.", 80, 1, false, false, 0},
        {WEIR_DISCOVERY_STATIC, "127.0.0.1:1", 0, 5, false, false, 0},
    };
    assert_int_equal(weir_discovery_add(d, lb, ok, 3, &why), 0);
    char buf[256];
    assert_string_equal(set_text(lb, buf, sizeof(buf)), "127.0.0.1:1/2");
    assert_int_equal(weir_discovery_add(d, lb, ok, 3, &why), WEIR_EINVAL);
    assert_string_equal(why, "the set is already added");
    weir_discovery_free(d);
    weir_lb_free(lb);
}

static void test_name_follows_dns(void **state)
{
    (void)state;
    const char *v1[] = {"127.0.0.3", "::1", "127.0.0.2"};
    set_addrs("app.test", 0, v1, 3);
    struct weir_discovery_target t[] = {
        {WEIR_DISCOVERY_STATIC, "127.0.0.9:81", 0, 1, false, false, 0},
        {WEIR_DISCOVERY_NAME, "app.test", 80, 2, false, false, 0},
    };
    struct world w;
    world_new(&w, t, 2, 500);
    assert_string_equal(set_of(&w), "127.0.0.9:81/1");
    world_start(&w);
    /* The start waits for the first answer: resolved before the loop runs. */
    assert_string_equal(set_of(&w), "127.0.0.9:81/1 127.0.0.2:80/2 127.0.0.3:80/2 [::1]:80/2");
    /* A change is seen at the next refresh (TTL 0: min_ttl, 100 ms). */
    const char *v2[] = {"127.0.0.4"};
    set_addrs("app.test", 0, v2, 1);
    run_until(&w, "127.0.0.9:81/1 127.0.0.4:80/2", 3000);
    /* The resolver failing in every way keeps the last good answer. */
    static const enum entry_mode modes[] = {DROP, SERVFAIL, NXDOMAIN};
    for (size_t i = 0; i < 3; i++) {
        set_mode("app.test", 1, modes[i], 0);
        set_mode("app.test", 28, modes[i], 0);
        unsigned before = atomic_load(&dns.queries);
        run_until(&w, NULL, 1200);
        assert_true(atomic_load(&dns.queries) > before + 2); /* it kept asking */
        assert_string_equal(set_of(&w), "127.0.0.9:81/1 127.0.0.4:80/2");
    }
    /* A name with neither A nor AAAA: kept too. */
    set_mode("app.test", 1, ANSWER, 0);
    set_mode("app.test", 28, ANSWER, 0);
    run_until(&w, NULL, 500);
    assert_string_equal(set_of(&w), "127.0.0.9:81/1 127.0.0.4:80/2");
    /* Back: AAAA only, so the A addresses go (NODATA for A while AAAA has records). */
    const char *v3[] = {"::2"};
    set_addrs("app.test", 0, v3, 1);
    run_until(&w, "127.0.0.9:81/1 [::2]:80/2", 3000);
    world_free(&w);
}

static void test_failing_family_keeps_its_addresses(void **state)
{
    (void)state;
    const char *v[] = {"127.0.0.2", "::1"};
    set_addrs("two.test", 0, v, 2);
    struct weir_discovery_target t[] = {{WEIR_DISCOVERY_NAME, "two.test", 80, 1, false, false, 0}};
    struct world w;
    world_new(&w, t, 1, 300);
    world_start(&w);
    assert_string_equal(set_of(&w), "127.0.0.2:80/1 [::1]:80/1");
    /* AAAA times out while A moves: the AAAA addresses stay, the A ones follow. */
    set_mode("two.test", 28, DROP, 0);
    pthread_mutex_lock(&dns.lock);
    struct entry *a = entry_for("two.test", 1);
    assert_int_equal(inet_pton(AF_INET, "127.0.0.5", a->r[0].addr), 1);
    pthread_mutex_unlock(&dns.lock);
    run_until(&w, "127.0.0.5:80/1 [::1]:80/1", 3000);
    run_until(&w, NULL, 1000);
    assert_string_equal(set_of(&w), "127.0.0.5:80/1 [::1]:80/1");
    world_free(&w);
}

static void test_srv(void **state)
{
    (void)state;
    const char *a[] = {"127.0.0.2"}, *b[] = {"127.0.0.3", "127.0.0.4"};
    set_addrs("a.srv.test", 0, a, 1);
    set_addrs("b.srv.test", 0, b, 1);
    add_srv("_http._tcp.srv.test", 0, 10, 10, 8001, "a.srv.test");
    add_srv("_http._tcp.srv.test", 0, 10, 30, 8002, "b.srv.test");
    add_srv("_http._tcp.srv.test", 0, 20, 0, 8003, "a.srv.test");
    add_srv("_http._tcp.srv.test", 0, 10, 5, 9, "."); /* "no service here": ignored */
    struct weir_discovery_target t[] = {
        {WEIR_DISCOVERY_SRV, "_http._tcp.srv.test", 0, 0, false, false, 0}};
    struct world w;
    world_new(&w, t, 1, 500);
    world_start(&w);
    /* Weights scaled so the largest is 256; the higher priority is a backup. */
    assert_string_equal(set_of(&w), "127.0.0.2:8001/85 127.0.0.3:8002/256 127.0.0.2:8003/1/b");
    /* A host's new address is seen at its TTL; the SRV failing keeps the records. */
    set_addrs("b.srv.test", 0, b + 1, 1);
    run_until(&w, "127.0.0.2:8001/85 127.0.0.4:8002/256 127.0.0.2:8003/1/b", 3000);
    set_mode("_http._tcp.srv.test", 33, SERVFAIL, 0);
    run_until(&w, NULL, 800);
    assert_string_equal(set_of(&w), "127.0.0.2:8001/85 127.0.0.4:8002/256 127.0.0.2:8003/1/b");
    /* New records: one target, its weight alone (256). */
    set_mode("_http._tcp.srv.test", 33, ANSWER, 0);
    add_srv("_http._tcp.srv.test", 0, 1, 7, 8004, "b.srv.test");
    run_until(&w, "127.0.0.4:8004/256", 3000);
    world_free(&w);
}

static void test_bounds(void **state)
{
    (void)state;
    /* 1023 static backends of weight 16 (16368) and a name giving 2 more of weight 256: the
       set keeps 1024, and the weights are scaled to fit 16384. */
    static struct weir_discovery_target t[1024];
    static char names[1023][32];
    for (int i = 0; i < 1023; i++) {
        (void)snprintf(names[i], sizeof(names[i]), "127.1.%d.%d:80", i / 250, i % 250 + 1);
        t[i] =
            (struct weir_discovery_target){WEIR_DISCOVERY_STATIC, names[i], 0, 16, false, false, 0};
    }
    t[1023] =
        (struct weir_discovery_target){WEIR_DISCOVERY_NAME, "many.test", 80, 256, false, false, 0};
    const char *v[] = {"127.0.0.2", "127.0.0.3"};
    set_addrs("many.test", 0, v, 2);
    struct world w;
    world_new(&w, t, 1024, 500);
    world_start(&w);
    assert_int_equal(weir_lb_size(w.lb), 1024);
    uint64_t sum = 0;
    struct weir_lb_backend_info info;
    for (size_t i = 0; i < 1024; i++) {
        assert_int_equal(weir_lb_backend_info(w.lb, i, &info), 0);
        sum += info.weight;
    }
    assert_true(sum <= WEIR_LB_MAX_TOTAL_WEIGHT);
    assert_string_equal(info.address, "127.0.0.2:80");
    world_free(&w);
}

static void test_unchanged_answer_keeps_the_set(void **state)
{
    (void)state;
    const char *v[] = {"127.0.0.2"};
    set_addrs("same.test", 0, v, 1);
    struct weir_discovery_target t[] = {{WEIR_DISCOVERY_NAME, "same.test", 80, 1, false, false, 0}};
    struct world w;
    world_new(&w, t, 1, 500);
    world_start(&w);
    /* The backend object lives on as long as answers do not change: its counters survive. */
    assert_int_equal(weir_lb_set_drain(w.lb, "127.0.0.2:80", true), 0);
    unsigned before = atomic_load(&dns.queries);
    run_until(&w, NULL, 600);
    assert_true(atomic_load(&dns.queries) >= before + 4);
    struct weir_lb_backend_info info;
    assert_int_equal(weir_lb_backend_info(w.lb, 0, &info), 0);
    assert_true(info.drain);
    world_free(&w);
}

static void test_answer_ttl(void **state)
{
    (void)state;
    /* id, flags, 1 question, 2 answers; "a." A; two A records with TTLs 300 and 7. */
    static const unsigned char msg[] = {
        0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0,  1, 'a', 0,   0, 1,
        0,    1,    0xc0, 12,   0, 1, 0, 1, 0, 0, 1, 44, 0, 4,   127, 0, 0,
        1,    0xc0, 12,   0,    1, 0, 1, 0, 0, 0, 7, 0,  4, 127, 0,   0, 2,
    };
    uint32_t ttl = 0;
    assert_int_equal(weir__dns_answer_ttl(msg, sizeof(msg), &ttl), 2);
    assert_int_equal(ttl, 7);
    for (size_t cut = 0; cut < sizeof(msg); cut++) {
        assert_int_equal(weir__dns_answer_ttl(msg, cut, &ttl), WEIR_EINVAL);
    }
    unsigned char high[sizeof(msg)];
    memcpy(high, msg, sizeof(msg));
    high[25] = 0x80; /* the first TTL's top bit: counts as 0 */
    assert_int_equal(weir__dns_answer_ttl(high, sizeof(high), &ttl), 2);
    assert_int_equal(ttl, 0);
    high[19] = 0x40; /* a reserved label type */
    assert_int_equal(weir__dns_answer_ttl(high, sizeof(high), &ttl), WEIR_EINVAL);
    assert_null(weir__dns_name_check("_http._tcp.app-1.internal.", 26));
    assert_non_null(weir__dns_name_check("a..b", 4));
    assert_non_null(weir__dns_name_check("1.2.3.400", 9));
    assert_non_null(weir__dns_name_check("a b", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer_ttl),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_add_checks),
        cmocka_unit_test(test_name_follows_dns),
        cmocka_unit_test(test_failing_family_keeps_its_addresses),
        cmocka_unit_test(test_srv),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_unchanged_answer_keeps_the_set),
    };
    return cmocka_run_group_tests(tests, dns_setup, dns_teardown);
}
