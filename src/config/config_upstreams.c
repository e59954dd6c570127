/*
 * The upstreams: section: a mapping of group names to groups (balance, hash_key, passive and
 * active health, the queue), each with its backends (address or SRV name, weight, backup,
 * drain, max_conns) and an optional health_check.
 */
#include <stdio.h>
#include <string.h>

#include "config/config_int.h"
#include "lb/dns_msg.h"
#include "weir/lb.h"

/* --- upstreams.*.backends ------------------------------------------------------------ */

static const char *srv_value(struct weir__cfg_ctx *c, const struct ynode *n)
{
    static const char what[] = "an SRV name like _http._tcp.example.com";
    const struct ynode *s = weir__cfg_scalar(c, n, what);
    if (s == NULL) {
        return NULL;
    }
    const char *why = weir__dns_name_check(s->text, s->len);
    if (why != NULL) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, n, "expected %s, got %s (%s)", what,
                      weir__cfg_describe(s, shown, sizeof(shown)), why);
        return NULL;
    }
    return weir__cfg_keep(c, s->text, s->len);
}

/* address and srv: one of them, never both (srv says so). */
static void backend_address(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                            const struct ynode *v)
{
    struct weir_cfg_backend *b = f->obj;
    if (weir__cfg_value(f, "srv") == NULL) {
        b->address = weir__cfg_address_value(c, v, &b->dns);
    }
}

static void backend_has_address(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    if (weir__cfg_value(f, "address") == NULL && weir__cfg_value(f, "srv") == NULL) {
        weir__cfg_err(c, f->m, "missing required key 'address' (or 'srv')");
    }
}

static void backend_srv(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                        const struct ynode *v)
{
    struct weir_cfg_backend *b = f->obj;
    if (weir__cfg_value(f, "address") != NULL) {
        weir__cfg_err(c, v, "address and srv are exclusive: give one");
    } else {
        b->srv = srv_value(c, v);
    }
}

static void backend_srv_weight(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    const struct ynode *w = weir__cfg_value(f, "weight");
    if (weir__cfg_value(f, "srv") != NULL && w != NULL) {
        size_t old = weir__cfg_path_key(c, "weight");
        weir__cfg_err(c, w, "the SRV records give the weights: remove weight");
        weir__cfg_path_pop(c, old);
    }
}

#define BE(f) WEIR__CFG_AT(struct weir_cfg_backend, f)

static const struct weir__cfg_key backend_keys[] = {
    {"address", WEIR__CFG_T_CUSTOM, WEIR__CFG_VALUE, .parse = backend_address,
     .check = backend_has_address},
    {"srv", WEIR__CFG_T_CUSTOM, WEIR__CFG_VALUE, .parse = backend_srv, .check = backend_srv_weight},
    WEIR__CFG_U32("weight", BE(weight), 1, WEIR_LB_MAX_WEIGHT, 1),
    WEIR__CFG_BOOL("backup", BE(backup), false),
    WEIR__CFG_BOOL("drain", BE(drain), false),
    WEIR__CFG_U32("max_conns", BE(max_conns), 0, 1000000, 0),
};

static const struct weir__cfg_section backend_section =
    WEIR__CFG_TABLE("host:port or a mapping with address (or srv), weight, backup, drain, "
                    "max_conns",
                    backend_keys, NULL);

static void backend_item(struct weir__cfg_ctx *c, const struct ynode *n, struct weir_cfg_backend *b)
{
    const struct ynode *d = weir__ynode_deref(n);
    weir__cfg_defaults(&backend_section, b);
    if (d->type == YN_SCALAR && !weir__ynode_is_null(d)) {
        b->address = weir__cfg_address_value(c, n, &b->dns);
        return;
    }
    weir__cfg_walk(c, n, &backend_section, b);
}

/* The text naming a backend in its group (address or SRV name); NULL when it has neither. */
static const char *backend_key(const struct weir_cfg_backend *b)
{
    return b->address != NULL ? b->address : b->srv;
}

/* The whole list: each backend once, not all backups, weights within the balancer's bound. */
static void backends_list(struct weir__cfg_ctx *c, const struct ynode *n, const struct ynode *seq,
                          struct weir_cfg_upstream *u)
{
    struct weir_cfg_backend *bs = weir__cfg_keep_array(c, seq->n, sizeof(*bs));
    size_t i = 0, primaries = 0;
    uint64_t total[2] = {0, 0};
    for (const struct ynode *it = seq->first; bs != NULL && it != NULL; it = it->next) {
        size_t o = weir__cfg_path_index(c, i);
        backend_item(c, it, &bs[i]);
        primaries += !bs[i].backup;
        /* An SRV backend's weights are the records'; weir scales them to fit. */
        total[bs[i].backup ? 1 : 0] += bs[i].srv != NULL ? 0 : bs[i].weight;
        const char *key = backend_key(&bs[i]);
        for (size_t j = 0; key != NULL && j < i; j++) {
            const char *other = backend_key(&bs[j]);
            if (other != NULL && strcmp(key, other) == 0) {
                weir__cfg_err(c, it, "backend '%s' is already listed as backends[%zu]", key, j);
                break;
            }
        }
        weir__cfg_path_pop(c, o);
        i++;
    }
    if (bs != NULL && primaries == 0) {
        weir__cfg_err(c, n, "every backend is a backup: at least one must not be");
    }
    if (total[0] > WEIR_LB_MAX_TOTAL_WEIGHT || total[1] > WEIR_LB_MAX_TOTAL_WEIGHT) {
        weir__cfg_err(c, n, "the weights of an upstream's backends add up to more than %d",
                      WEIR_LB_MAX_TOTAL_WEIGHT);
    }
    u->backends = bs;
    u->nbackends = bs != NULL ? seq->n : 0;
}

static void backends_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                           const struct ynode *n)
{
    const struct ynode *seq = weir__cfg_sequence(c, n, "a sequence of backends");
    if (seq != NULL && seq->n == 0) {
        weir__cfg_err(c, n, "an upstream needs at least one backend");
    } else if (seq != NULL && seq->n > WEIR_LB_MAX_BACKENDS) {
        weir__cfg_err(c, n, "an upstream may have at most %d backends, got %zu",
                      WEIR_LB_MAX_BACKENDS, seq->n);
    } else if (seq != NULL) {
        backends_list(c, n, seq, f->obj);
    }
}

/* --- upstreams.*.health_check -------------------------------------------------------- */

/* A Host header value: name or address, optional port. */
static bool host_header_ok(const char *h)
{
    size_t len = strlen(h);
    if (len == 0 || len > 255) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = h[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == ':' ||
                  ch == '[' || ch == ']';
        if (!ok) {
            return false;
        }
    }
    return true;
}

static bool health_host_ok(struct weir__cfg_ctx *c, const struct ynode *v, const char *host)
{
    if (host_header_ok(host)) {
        return true;
    }
    weir__cfg_err(c, v, "expected a host name (and :port), got '%s'", host);
    return false;
}

static bool health_path_ok(struct weir__cfg_ctx *c, const struct ynode *v, const char *path)
{
    if (path[0] == '/' && strpbrk(path, " \t#") == NULL && strlen(path) <= 512) {
        return true;
    }
    weir__cfg_err(c, v,
                  "expected a path starting with / (no spaces or #, at most 512 bytes), got '%s'",
                  path);
    return false;
}

/* expect_status: a status, "NNN-NNN", or a sequence of them. */
static void status_item(struct weir__cfg_ctx *c, const struct ynode *n, struct weir_cfg_health *h)
{
    static const char what[] = "a status (200) or a range (200-399) between 100 and 599";
    const struct ynode *sv = weir__cfg_scalar(c, n, what);
    if (sv == NULL) {
        return;
    }
    unsigned lo = 0, hi = 0;
    char tail = 0;
    char text[16];
    bool ok = sv->len < sizeof(text);
    if (ok) {
        memcpy(text, sv->text, sv->len);
        text[sv->len] = '\0';
        int k = sscanf(text, "%3u-%3u%c", &lo, &hi, &tail);
        if (k == 1 && strlen(text) == 3) {
            hi = lo;
        }
        ok = ((k == 1 && strlen(text) == 3) || (k == 2 && strlen(text) == 7)) && lo >= 100 &&
             hi <= 599 && lo <= hi;
    }
    if (!ok) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, n, "expected %s, got %s", what,
                      weir__cfg_describe(sv, shown, sizeof(shown)));
        return;
    }
    if (h->nstatus == 16) {
        weir__cfg_err(c, n, "at most 16 status ranges");
        return;
    }
    h->status_lo[h->nstatus] = (uint16_t)lo;
    h->status_hi[h->nstatus] = (uint16_t)hi;
    h->nstatus++;
}

static void expect_status_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                                const struct ynode *v)
{
    const struct ynode *d = weir__ynode_deref(v);
    if (d->type != YN_SEQ) {
        status_item(c, v, f->obj);
        return;
    }
    size_t i = 0;
    for (const struct ynode *it = d->first; it != NULL; it = it->next, i++) {
        size_t o = weir__cfg_path_index(c, i);
        status_item(c, it, f->obj);
        weir__cfg_path_pop(c, o);
    }
}

static void expect_body_length(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    const struct weir_cfg_health *h = f->obj;
    if (h->expect_body != NULL && (h->expect_body[0] == '\0' || strlen(h->expect_body) > 4096)) {
        weir__cfg_err(c, weir__cfg_value(f, "expect_body"), "expect_body must be 1 to 4096 bytes");
    }
}

static void timeout_within_interval(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    const struct weir_cfg_health *h = f->obj;
    const struct ynode *v = weir__cfg_value(f, "timeout");
    if (h->timeout_ms > h->interval_ms) {
        weir__cfg_err(c, v != NULL ? v : f->m, "timeout must not be longer than interval (%ums)",
                      h->interval_ms);
    }
}

static void tcp_only_connects(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    static const char *const http_only[] = {"method", "path", "host", "expect_status",
                                            "expect_body"};
    const struct weir_cfg_health *h = f->obj;
    bool any = false;
    for (size_t i = 0; i < sizeof(http_only) / sizeof(http_only[0]); i++) {
        any = any || weir__cfg_value(f, http_only[i]) != NULL;
    }
    if (h->tcp && any) {
        weir__cfg_err(c, weir__cfg_value(f, "type"),
                      "type: tcp only connects: method, path, host, expect_status and "
                      "expect_body need type: http");
    }
}

static const char *const check_types[] = {"http", "tcp"}; /* stored as bool tcp */
static const char *const check_methods[] = {"GET", "HEAD"};

#define HC(f) WEIR__CFG_AT(struct weir_cfg_health, f)

static const struct weir__cfg_key health_keys[] = {
    WEIR__CFG_ENUM("type", HC(tcp), check_types, 0),
    WEIR__CFG_KEYWORD("method", HC(method), check_methods, 0),
    {"path", WEIR__CFG_T_STRING, 0, HC(path), .what = "a path starting with /",
     .valid = health_path_ok},
    {"host", WEIR__CFG_T_STRING, 0, HC(host), .what = "a host name", .valid = health_host_ok},
    WEIR__CFG_CUSTOM("expect_status", 0, expect_status_value),
    {"expect_body", WEIR__CFG_T_STRING, 0, HC(expect_body), .what = "text to find in the body",
     .check = expect_body_length},
    WEIR__CFG_DURATION("interval", HC(interval_ms), 10, UINT32_MAX, 5000),
    {"timeout", WEIR__CFG_T_DURATION, 0, HC(timeout_ms), .min = 10, .max = UINT32_MAX, .def = 2000,
     .check = timeout_within_interval},
    WEIR__CFG_U32("rise", HC(rise), 1, 100, 2),
    WEIR__CFG_U32("fall", HC(fall), 1, 100, 3),
};

static const struct weir__cfg_section health_section =
    WEIR__CFG_TABLE("a mapping of health check settings", health_keys, tcp_only_connects);

/* Present, even empty: the check is on, with the defaults for what it leaves out. */
static void health_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                         const struct ynode *v)
{
    struct weir_cfg_health *h = &((struct weir_cfg_upstream *)f->obj)->health;
    h->enabled = true;
    weir__cfg_defaults(&health_section, h);
    weir__cfg_walk(c, v, &health_section, h);
}

/* --- upstreams.* --------------------------------------------------------------------- */

/* hash_key: uri, path, client_ip, header:NAME, cookie:NAME or arg:NAME. */
static void hash_key_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                           const struct ynode *n)
{
    static const char what[] = "uri, path, client_ip, header:NAME, cookie:NAME or arg:NAME";
    static const struct {
        const char *prefix;
        enum weir_hash_key kind;
        bool named;
    } kinds[] = {
        {"uri", WEIR_HASH_URI, false},
        {"path", WEIR_HASH_PATH, false},
        {"client_ip", WEIR_HASH_CLIENT_IP, false},
        {"header:", WEIR_HASH_HEADER, true},
        {"cookie:", WEIR_HASH_COOKIE, true},
        {"arg:", WEIR_HASH_ARG, true},
    };
    struct weir_cfg_upstream *u = f->obj;
    if (u->balance != WEIR_BALANCE_CONSISTENT_HASH) {
        return; /* hash_key_needs_balance says so */
    }
    const struct ynode *sv = weir__cfg_scalar(c, n, what);
    if (sv == NULL) {
        return;
    }
    bool ok = false;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]) && !ok; i++) {
        size_t plen = strlen(kinds[i].prefix);
        if (!kinds[i].named) {
            ok = sv->len == plen && memcmp(sv->text, kinds[i].prefix, plen) == 0;
        } else if (sv->len > plen && memcmp(sv->text, kinds[i].prefix, plen) == 0) {
            const char *name = sv->text + plen;
            size_t nlen = sv->len - plen;
            ok = weir__cfg_is_token(name, nlen);
            if (ok) {
                u->hash_key_name = weir__cfg_keep(c, name, nlen);
            }
        }
        if (ok) {
            u->hash_key = kinds[i].kind;
        }
    }
    if (!ok) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, n, "expected %s (NAME an HTTP token), got %s", what,
                      weir__cfg_describe(sv, shown, sizeof(shown)));
    }
}

/* hash_key goes with consistent_hash, both ways. */
static void hash_key_needs_balance(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    const struct weir_cfg_upstream *u = f->obj;
    const struct ynode *key = weir__cfg_value(f, "hash_key");
    const struct ynode *balance = weir__cfg_value(f, "balance");
    bool hashing = u->balance == WEIR_BALANCE_CONSISTENT_HASH;
    if (key != NULL && !hashing) {
        weir__cfg_err(c, key, "hash_key needs balance: consistent_hash");
    } else if (key == NULL && hashing && balance != NULL) {
        weir__cfg_err(c, balance,
                      "balance: consistent_hash needs hash_key (uri, path, client_ip, "
                      "header:NAME, cookie:NAME or arg:NAME)");
    }
}

static void eject_max_not_shorter(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    const struct weir_cfg_upstream *u = f->obj;
    const struct ynode *v = weir__cfg_value(f, "eject_max");
    if (v != NULL && u->eject_max_ms < u->eject_ms) {
        weir__cfg_err(c, v, "eject_max must not be shorter than eject");
    }
}

static const char *const balances[] = {"round_robin", "random", "least_conn", "consistent_hash"};
/* In enum weir_peer_protocol's order. */
static const char *const protocols[] = {"http1", "h2", "h2c", "auto"};

/* h2 is HTTP/2 over TLS and h2c without it: the tls key must agree. */
static void protocol_fits_tls(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    const struct weir_cfg_upstream *u = f->obj;
    const char *why = u->protocol == WEIR_PEER_H2 && !u->tls.enabled
                          ? "h2 is HTTP/2 over TLS: give the group a tls mapping, or use h2c"
                      : u->protocol == WEIR_PEER_H2C && u->tls.enabled
                          ? "h2c is HTTP/2 in cleartext: with tls, use h2 (or auto)"
                          : NULL;
    if (why != NULL) {
        size_t old = weir__cfg_path_key(c, "protocol");
        weir__cfg_err(c, weir__cfg_value(f, "protocol"), "%s", why);
        weir__cfg_path_pop(c, old);
    }
}

#define UPS(f) WEIR__CFG_AT(struct weir_cfg_upstream, f)

/* hash_key needs balance first; health_check and backends come last, as they always have. */
static const struct weir__cfg_key upstream_keys[] = {
    WEIR__CFG_ENUM("balance", UPS(balance), balances, WEIR_BALANCE_ROUND_ROBIN),
    {"hash_key", WEIR__CFG_T_CUSTOM, 0, .parse = hash_key_value, .check = hash_key_needs_balance},
    WEIR__CFG_BOOL("fail_open", UPS(fail_open), false),
    WEIR__CFG_U32("max_fails", UPS(max_fails), 0, 1000, 3),
    WEIR__CFG_DURATION("eject", UPS(eject_ms), 1, UINT32_MAX, 10000),
    {"eject_max", WEIR__CFG_T_DURATION, 0, UPS(eject_max_ms), .min = 1, .max = UINT32_MAX,
     .def = 300000, .check = eject_max_not_shorter},
    {"health_check", WEIR__CFG_T_CUSTOM, WEIR__CFG_LATE, .parse = health_value,
     .sub = &health_section},
    WEIR__CFG_U32("queue_size", UPS(queue_size), 0, 1000000, 128),
    WEIR__CFG_DURATION("queue_timeout", UPS(queue_timeout_ms), 1, UINT32_MAX, 5000),
    {"tls", WEIR__CFG_T_CUSTOM, WEIR__CFG_VALUE, .parse = weir__cfg_upstream_tls_value,
     .sub = &weir__cfg_upstream_tls},
    {"protocol", WEIR__CFG_T_ENUM, WEIR__CFG_LATE, UPS(protocol), .names = protocols, .nnames = 4,
     .def = WEIR_PEER_HTTP1, .check = protocol_fits_tls},
    {"backends", WEIR__CFG_T_CUSTOM, WEIR__CFG_REQUIRED | WEIR__CFG_LATE | WEIR__CFG_SEQ,
     .parse = backends_value, .sub = &backend_section},
};

const struct weir__cfg_section weir__cfg_upstream =
    WEIR__CFG_TABLE("a mapping with balance and backends", upstream_keys, NULL);

/* A group name: printable, no spaces; NULL after an error. */
static const char *upstream_name(struct weir__cfg_ctx *c, const struct ynode *k)
{
    const struct ynode *d = weir__ynode_deref(k);
    for (size_t i = 0; i < d->len; i++) {
        unsigned char ch = (unsigned char)d->text[i];
        if (ch <= 0x20 || ch == 0x7f) {
            char shown[WEIR__CFG_DESCRIBE_MAX];
            size_t old = weir__cfg_path_add(c, ".", d->text, d->len);
            weir__cfg_err(c, k,
                          "an upstream name may not contain spaces or control characters, got %s",
                          weir__cfg_describe(d, shown, sizeof(shown)));
            weir__cfg_path_pop(c, old);
            return NULL;
        }
    }
    if (d->len == 0) {
        weir__cfg_err(c, k, "an upstream name may not be empty");
        return NULL;
    }
    return weir__cfg_keep(c, d->text, d->len);
}

void weir__cfg_upstreams(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                         const struct ynode *v)
{
    struct weir_config *cfg = f->obj;
    if (!weir__cfg_expect_map(c, v, "a mapping of upstream names to groups")) {
        return;
    }
    const struct ynode *m = weir__ynode_deref(v);
    struct weir_cfg_upstream *us = weir__cfg_keep_array(c, m->n / 2 + 1, sizeof(*us));
    /* An array of pointers: sizeof(*where) is a pointer's size on purpose. */
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    const struct ynode **where = weir_arena_calloc(c->tmp, (m->n / 2 + 1) * sizeof(*where));
    if (us == NULL || where == NULL) {
        c->oom = true;
        return;
    }
    size_t nu = 0;
    for (const struct ynode *k = m->first; k != NULL && k->next != NULL; k = k->next->next) {
        if (!weir__cfg_scalar_key(c, k)) {
            continue;
        }
        const char *name = upstream_name(c, k);
        if (name == NULL) {
            continue;
        }
        size_t j = 0;
        while (j < nu && strcmp(us[j].name, name) != 0) {
            j++;
        }
        if (j < nu) {
            weir__cfg_duplicate_key(c, k, where[j]);
            continue;
        }
        where[nu] = k;
        struct weir_cfg_upstream *u = &us[nu++];
        u->name = name;
        weir__cfg_defaults(&weir__cfg_upstream, u);
        size_t old = weir__cfg_path_add(c, ".", name, strlen(name));
        weir__cfg_walk(c, k->next, &weir__cfg_upstream, u);
        weir__cfg_path_pop(c, old);
    }
    cfg->upstreams = us;
    cfg->nupstreams = nu;
}
