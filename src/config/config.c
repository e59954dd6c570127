/*
 * The configuration loader: YAML (parsed by config_yaml.c into a node tree) checked against
 * weir's schema and turned into an immutable struct weir_config. The whole file is checked in
 * one pass: every problem becomes one error with the line:col of the node at fault and the
 * dotted key path leading to it, and checking goes on. A snapshot owns one arena holding
 * itself and every string and array it points to, so weir_config_free is a single free.
 */
#include "weir/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_int.h"
#include "core/alloc.h"
#include "lb/dns_msg.h"
#include "weir/error.h"
#include "weir/lb.h"

struct config_impl {
    struct weir_config pub; /* first: weir_config_free casts back */
    struct weir_arena *arena;
};

/*
 * Checking state. The section functions return nothing: an error in one key must not stop
 * the others from being checked, so problems go to errs and an allocation failure sets the
 * sticky oom flag, which the loader turns into WEIR_ENOMEM at the end.
 */
struct ctx {
    struct weir_config_errors *errs;
    struct weir_arena *a;   /* the snapshot's */
    struct weir_arena *tmp; /* the parse tree's: scratch that dies with the load */
    struct weir_config *cfg;
    char path[256];
    size_t plen;
    bool oom;
};

#define KEY_REQUIRED 1u
#define KEY_VALUE    2u /* not required, but a value when present: "key:" alone is an error */
#define MAX_KEYS     16 /* keys of the widest mapping (server:) */

struct keyspec {
    const char *name;
    unsigned flags;
};

/* --- paths and errors ---------------------------------------------------------------- */

static size_t path_add(struct ctx *c, const char *sep, const char *s, size_t len)
{
    size_t old = c->plen;
    if (c->plen == 0) {
        sep = "";
    }
    int n = snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "%s%.*s", sep,
                     (int)(len > 64 ? 64 : len), s);
    if (n > 0) {
        c->plen += (size_t)n;
        if (c->plen >= sizeof(c->path)) {
            c->plen = sizeof(c->path) - 1;
        }
    }
    /* Keys are user text: keep a control byte from reaching the operator's terminal. */
    for (size_t i = old; i < c->plen; i++) {
        if ((unsigned char)c->path[i] < 0x20 || c->path[i] == 0x7f) {
            c->path[i] = '?';
        }
    }
    return old;
}

static size_t path_key(struct ctx *c, const char *key)
{
    return path_add(c, ".", key, strlen(key));
}

static size_t path_index(struct ctx *c, size_t i)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "[%zu]", i);
    size_t old = c->plen;
    path_add(c, "", buf, (size_t)n);
    return old;
}

static void path_pop(struct ctx *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

__attribute__((format(printf, 3, 4))) static void err(struct ctx *c, const struct ynode *n,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (weir__cfgerr_vadd(c->errs, n->line, n->col, c->path, fmt, ap) != 0) {
        c->oom = true;
    }
    va_end(ap);
}

/* A copy of s in the snapshot's arena; NULL (and oom set) on failure. */
static char *keep(struct ctx *c, const char *s, size_t len)
{
    char *p = weir_arena_strndup(c->a, s, len);
    if (p == NULL) {
        c->oom = true;
    }
    return p;
}

static void *keep_array(struct ctx *c, size_t n, size_t size)
{
    if (n != 0 && size > SIZE_MAX / n) {
        c->oom = true;
        return NULL;
    }
    void *p = weir_arena_calloc(c->a, n * size);
    if (p == NULL) {
        c->oom = true;
    }
    return p;
}

/* "a, b, c" from a list of names, cut to fit. */
static const char *join(const char *const *names, size_t n, char *buf, size_t size)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && o < size; i++) {
        int w = snprintf(buf + o, size - o, "%s%s", i ? ", " : "", names[i]);
        if (w < 0 || (size_t)w >= size - o) {
            (void)snprintf(buf + (size > 4 ? size - 4 : 0), size > 4 ? 4 : size, "...");
            break;
        }
        o += (size_t)w;
    }
    return buf;
}

/* --- mappings with a fixed set of keys ------------------------------------------------ */

static void unknown_key(struct ctx *c, const struct ynode *k, const struct keyspec *keys,
                        size_t nkeys)
{
    const char *names[MAX_KEYS];
    char list[512], shown[WEIR__CFG_DESCRIBE_MAX];
    for (size_t i = 0; i < nkeys; i++) {
        names[i] = keys[i].name;
    }
    size_t old = path_add(c, ".", k->text, k->len);
    weir__cfg_describe(k, shown, sizeof(shown));
    long s = weir__cfg_suggest(k->text, k->len, names, nkeys);
    if (strcmp(k->text, "<<") == 0) {
        err(c, k, "merge keys (<<) are not supported; write the keys out");
    } else if (s >= 0) {
        err(c, k, "unknown key %s; did you mean '%s'?", shown, names[s]);
    } else {
        err(c, k, "unknown key %s; valid keys here: %s", shown,
            join(names, nkeys, list, sizeof(list)));
    }
    path_pop(c, old);
}

/* Reports a key that is not a string; true when k can be used as a key. */
static bool scalar_key(struct ctx *c, const struct ynode *k)
{
    const struct ynode *d = weir__ynode_deref(k);
    if (d->type == YN_SCALAR) {
        return true;
    }
    err(c, k, "a key must be a string, got %s", d->type == YN_MAP ? "a mapping" : "a sequence");
    return false;
}

static void duplicate_key(struct ctx *c, const struct ynode *k, const struct ynode *first)
{
    char shown[WEIR__CFG_DESCRIBE_MAX];
    size_t old = path_add(c, ".", weir__ynode_deref(k)->text, weir__ynode_deref(k)->len);
    err(c, k, "duplicate key %s (first at line %d, column %d)",
        weir__cfg_describe(k, shown, sizeof(shown)), first->line, first->col);
    path_pop(c, old);
}

static bool expect_map(struct ctx *c, const struct ynode *n, const char *what)
{
    const struct ynode *d = weir__ynode_deref(n);
    if (d->type == YN_MAP) {
        return true;
    }
    char shown[WEIR__CFG_DESCRIBE_MAX];
    err(c, n, "expected %s, got %s", what, weir__cfg_describe(n, shown, sizeof(shown)));
    return false;
}

/*
 * Looks up every key of mapping m in keys: vals[i] gets the value of keys[i], or NULL when it
 * is absent or null (YAML's "key:" with nothing is the same as leaving the key out, except for
 * a required key, which then gets "got nothing"). Reports unknown, duplicate and non-string
 * keys, and missing required ones at m's position. false when m is not a mapping.
 */
static bool fields(struct ctx *c, const struct ynode *m, const struct keyspec *keys, size_t nkeys,
                   const struct ynode **vals, const char *what)
{
    const struct ynode *seen[MAX_KEYS] = {0};
    for (size_t i = 0; i < nkeys; i++) {
        vals[i] = NULL;
    }
    bool is_null = weir__ynode_is_null(m);
    if (!is_null && !expect_map(c, m, what)) {
        return false;
    }
    const struct ynode *d = weir__ynode_deref(m);
    for (const struct ynode *k = is_null ? NULL : d->first; k != NULL && k->next != NULL;
         k = k->next->next) {
        const struct ynode *v = k->next;
        if (!scalar_key(c, k)) {
            continue;
        }
        const struct ynode *kd = weir__ynode_deref(k);
        size_t i = 0;
        while (i < nkeys && strcmp(kd->text, keys[i].name) != 0) {
            i++;
        }
        if (i == nkeys || strlen(kd->text) != kd->len) {
            unknown_key(c, kd, keys, nkeys);
        } else if (seen[i] != NULL) {
            duplicate_key(c, k, seen[i]);
        } else {
            seen[i] = k;
            bool keep_null = keys[i].flags & (KEY_REQUIRED | KEY_VALUE);
            vals[i] = keep_null || !weir__ynode_is_null(v) ? v : NULL;
        }
    }
    for (size_t i = 0; i < nkeys; i++) {
        if ((keys[i].flags & KEY_REQUIRED) && seen[i] == NULL) {
            err(c, m, "missing required key '%s'", keys[i].name);
        }
    }
    return true;
}

/* --- scalar values ------------------------------------------------------------------- */

/* The scalar text of n, or NULL after reporting "expected <what>, got a mapping". */
static const struct ynode *scalar(struct ctx *c, const struct ynode *n, const char *what)
{
    const struct ynode *d = weir__ynode_deref(n);
    /* A "\0" escape would cut the C string short and hide the rest from every check. */
    if (d->type == YN_SCALAR && !weir__ynode_is_null(d) && strlen(d->text) == d->len) {
        return d;
    }
    char shown[WEIR__CFG_DESCRIBE_MAX];
    err(c, n, "expected %s, got %s", what, weir__cfg_describe(n, shown, sizeof(shown)));
    return NULL;
}

static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static void get_u32(struct ctx *c, const struct ynode *n, const char *key, uint32_t min,
                    uint32_t max, uint32_t *out)
{
    if (n == NULL) {
        return;
    }
    char what[80];
    (void)snprintf(what, sizeof(what), "an integer between %u and %u", min, max);
    size_t old = path_key(c, key);
    const struct ynode *s = scalar(c, n, what);
    uint64_t v;
    if (s != NULL) {
        if (parse_u64(s->text, s->len, &v) && v >= min && v <= max) {
            *out = (uint32_t)v;
        } else {
            char shown[WEIR__CFG_DESCRIBE_MAX];
            err(c, n, "expected %s, got %s", what, weir__cfg_describe(s, shown, sizeof(shown)));
        }
    }
    path_pop(c, old);
}

static bool ieq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

static void get_bool(struct ctx *c, const struct ynode *n, const char *key, bool *out)
{
    if (n == NULL) {
        return;
    }
    size_t old = path_key(c, key);
    const struct ynode *s = scalar(c, n, "true or false");
    if (s != NULL) {
        const char *t = s->text;
        if (ieq(t, "true") || ieq(t, "yes") || ieq(t, "on")) {
            *out = true;
        } else if (ieq(t, "false") || ieq(t, "no") || ieq(t, "off")) {
            *out = false;
        } else {
            char shown[WEIR__CFG_DESCRIBE_MAX];
            err(c, n, "expected true or false, got %s",
                weir__cfg_describe(s, shown, sizeof(shown)));
        }
    }
    path_pop(c, old);
}

/* A non-empty string without NUL or line breaks, kept in the snapshot; NULL after an error. */
static const char *string_value(struct ctx *c, const struct ynode *n, const char *what)
{
    const struct ynode *s = scalar(c, n, what);
    if (s == NULL) {
        return NULL;
    }
    if (s->len == 0) {
        err(c, n, "expected %s, got an empty string", what);
        return NULL;
    }
    for (size_t i = 0; i < s->len; i++) {
        unsigned char ch = (unsigned char)s->text[i];
        if (ch < 0x20 || ch == 0x7f) {
            char shown[WEIR__CFG_DESCRIBE_MAX];
            err(c, n, "expected %s without control characters, got %s", what,
                weir__cfg_describe(s, shown, sizeof(shown)));
            return NULL;
        }
    }
    return keep(c, s->text, s->len);
}

static void get_string(struct ctx *c, const struct ynode *n, const char *key, const char *what,
                       const char **out)
{
    if (n == NULL) {
        return;
    }
    size_t old = path_key(c, key);
    const char *s = string_value(c, n, what);
    if (s != NULL) {
        *out = s;
    }
    path_pop(c, old);
}

static void get_enum(struct ctx *c, const struct ynode *n, const char *key,
                     const char *const *names, size_t count, int *out)
{
    if (n == NULL) {
        return;
    }
    char list[256], what[300];
    (void)snprintf(what, sizeof(what), "one of %s", join(names, count, list, sizeof(list)));
    size_t old = path_key(c, key);
    const struct ynode *s = scalar(c, n, what);
    if (s != NULL) {
        size_t i = 0;
        while (i < count && !ieq(s->text, names[i])) {
            i++;
        }
        if (i < count && strlen(s->text) == s->len) {
            *out = (int)i;
        } else {
            char shown[WEIR__CFG_DESCRIBE_MAX];
            long sug = weir__cfg_suggest(s->text, s->len, names, count);
            err(c, n, "expected %s, got %s%s%s%s", what,
                weir__cfg_describe(s, shown, sizeof(shown)), sug >= 0 ? "; did you mean '" : "",
                sug >= 0 ? names[sug] : "", sug >= 0 ? "'?" : "");
        }
    }
    path_pop(c, old);
}

/* Whether s looks like a number with a unit, so a parse failure means "out of range". */
static bool number_with_unit(const char *s, const char *units)
{
    size_t i = strspn(s, "0123456789.");
    return i > 0 && s[0] != '.' && strspn(s + i, units) == strlen(s + i);
}

static void get_duration(struct ctx *c, const struct ynode *n, const char *key, uint32_t min_ms,
                         uint32_t *out)
{
    if (n == NULL) {
        return;
    }
    static const char what[] = "a duration like 30s or 250ms";
    size_t old = path_key(c, key);
    const struct ynode *s = scalar(c, n, what);
    uint32_t ms;
    if (s != NULL) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_describe(s, shown, sizeof(shown));
        if (strlen(s->text) == s->len && weir_config_parse_duration(s->text, &ms) == 0) {
            if (ms >= min_ms) {
                *out = ms;
            } else {
                err(c, n, "expected a duration of at least %ums, got %s", min_ms, shown);
            }
        } else if (strlen(s->text) == s->len && number_with_unit(s->text, "mshd")) {
            err(c, n, "expected a duration of whole milliseconds up to 1193h, got %s", shown);
        } else {
            err(c, n, "expected %s, got %s", what, shown);
        }
    }
    path_pop(c, old);
}

static const char *fmt_size(uint64_t v, char *buf, size_t size)
{
    static const char units[] = "gmk";
    for (int i = 0; i < 3; i++) {
        uint64_t u = (uint64_t)1 << (10 * (3 - i));
        if (v >= u && v % u == 0) {
            (void)snprintf(buf, size, "%llu%c", (unsigned long long)(v / u), units[i]);
            return buf;
        }
    }
    (void)snprintf(buf, size, "%llu", (unsigned long long)v);
    return buf;
}

static void get_size(struct ctx *c, const struct ynode *n, const char *key, uint64_t min,
                     uint64_t max, uint64_t *out)
{
    if (n == NULL) {
        return;
    }
    static const char what[] = "a size like 16k or 1m";
    size_t old = path_key(c, key);
    const struct ynode *s = scalar(c, n, what);
    uint64_t v;
    if (s != NULL) {
        char shown[WEIR__CFG_DESCRIBE_MAX], lo[32], hi[32];
        weir__cfg_describe(s, shown, sizeof(shown));
        bool ok = strlen(s->text) == s->len && weir_config_parse_size(s->text, &v) == 0;
        if (ok && v >= min && v <= max) {
            *out = v;
        } else if (ok || (strlen(s->text) == s->len && number_with_unit(s->text, "kKmMgG"))) {
            err(c, n, "expected a size between %s and %s, got %s", fmt_size(min, lo, sizeof(lo)),
                fmt_size(max, hi, sizeof(hi)), shown);
        } else {
            err(c, n, "expected %s, got %s", what, shown);
        }
    }
    path_pop(c, old);
}

static void get_size32(struct ctx *c, const struct ynode *n, const char *key, uint32_t min,
                       uint32_t max, uint32_t *out)
{
    uint64_t v = *out;
    get_size(c, n, key, min, max, &v);
    *out = (uint32_t)v;
}

/* A "host:port" string kept in the snapshot, or NULL after reporting why not. With dns NULL
 * (listeners) the host is numeric or localhost and the port may be 0; with dns set (backends)
 * the host may also be a DNS name, and *dns says whether it is one. */
static const char *address_value(struct ctx *c, const struct ynode *n, bool *dns)
{
    const struct ynode *s = scalar(c, n, "host:port");
    if (s == NULL) {
        return NULL;
    }
    const char *why = dns != NULL ? weir__cfg_check_backend_address(s->text, s->len, dns)
                                  : weir__cfg_check_address(s->text, s->len, true);
    if (why != NULL) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        err(c, n, "expected host:port, got %s (%s)", weir__cfg_describe(s, shown, sizeof(shown)),
            why);
        return NULL;
    }
    return keep(c, s->text, s->len);
}

/* --- server: ------------------------------------------------------------------------- */

static void forwarded_section(struct ctx *c, const struct ynode *m, struct weir_cfg_server *s)
{
    enum { K_XFF, K_XFP, K_VIA, K_N };
    static const struct keyspec keys[K_N] = {
        [K_XFF] = {"x_forwarded_for", 0},
        [K_XFP] = {"x_forwarded_proto", 0},
        [K_VIA] = {"via", 0},
    };
    const struct ynode *v[K_N];
    if (!fields(c, m, keys, K_N, v, "a mapping of x_forwarded_for, x_forwarded_proto, via")) {
        return;
    }
    get_bool(c, v[K_XFF], "x_forwarded_for", &s->x_forwarded_for);
    get_bool(c, v[K_XFP], "x_forwarded_proto", &s->x_forwarded_proto);
    get_bool(c, v[K_VIA], "via", &s->via);
}

static void upstream_pool_section(struct ctx *c, const struct ynode *m, struct weir_cfg_server *s)
{
    enum { K_PER_PEER, K_TOTAL, K_AFTER, K_N };
    static const struct keyspec keys[K_N] = {
        [K_PER_PEER] = {"shared_per_peer", 0},
        [K_TOTAL] = {"shared_total", 0},
        [K_AFTER] = {"share_after", 0},
    };
    const struct ynode *v[K_N];
    if (!fields(c, m, keys, K_N, v, "a mapping of shared_per_peer, shared_total, share_after")) {
        return;
    }
    get_u32(c, v[K_PER_PEER], "shared_per_peer", 0, 65535, &s->upstream_shared_per_peer);
    get_u32(c, v[K_TOTAL], "shared_total", 1, 1000000, &s->upstream_shared_total);
    get_duration(c, v[K_AFTER], "share_after", 1, &s->upstream_share_after_ms);
}

static void limits_section(struct ctx *c, const struct ynode *m, struct weir_cfg_limits *l)
{
    enum {
        K_LINE,
        K_HBYTES,
        K_HCOUNT,
        K_BODY,
        K_CONNS,
        K_BUF,
        K_IPCONNS,
        K_IPRPS,
        K_CONNREQS,
        K_N
    };
    static const struct keyspec keys[K_N] = {
        [K_LINE] = {"max_request_line", 0},
        [K_HBYTES] = {"max_header_bytes", 0},
        [K_HCOUNT] = {"max_headers", 0},
        [K_BODY] = {"max_body_bytes", 0},
        [K_CONNS] = {"max_connections", 0},
        [K_BUF] = {"buffer_size", 0},
        [K_IPCONNS] = {"max_connections_per_ip", 0},
        [K_IPRPS] = {"requests_per_second_per_ip", 0},
        [K_CONNREQS] = {"max_requests_per_connection", 0},
    };
    const struct ynode *v[K_N];
    if (!fields(c, m, keys, K_N, v, "a mapping of limits")) {
        return;
    }
    get_size32(c, v[K_LINE], "max_request_line", 64, 1u << 20, &l->max_request_line);
    get_size32(c, v[K_HBYTES], "max_header_bytes", 256, 16u << 20, &l->max_header_bytes);
    get_u32(c, v[K_HCOUNT], "max_headers", 1, 10000, &l->max_headers);
    get_size(c, v[K_BODY], "max_body_bytes", 0, UINT64_MAX, &l->max_body_bytes);
    get_u32(c, v[K_CONNS], "max_connections", 1, 10000000, &l->max_connections);
    get_size32(c, v[K_BUF], "buffer_size", 1u << 10, 1u << 20, &l->buffer_size);
    get_u32(c, v[K_IPCONNS], "max_connections_per_ip", 0, 10000000, &l->max_connections_per_ip);
    get_u32(c, v[K_IPRPS], "requests_per_second_per_ip", 0, 10000000,
            &l->requests_per_second_per_ip);
    get_u32(c, v[K_CONNREQS], "max_requests_per_connection", 0, 100000000,
            &l->max_requests_per_connection);
}

static void timeouts_section(struct ctx *c, const struct ynode *m, struct weir_cfg_timeouts *t)
{
    enum { K_CH, K_CB, K_CK, K_CW, K_UC, K_UR, K_UW, K_UI, K_N };
    static const struct keyspec keys[K_N] = {
        [K_CH] = {"client_header", 0},    [K_CB] = {"client_body", 0},
        [K_CK] = {"client_keepalive", 0}, [K_CW] = {"client_write", 0},
        [K_UC] = {"upstream_connect", 0}, [K_UR] = {"upstream_read", 0},
        [K_UW] = {"upstream_write", 0},   [K_UI] = {"upstream_idle", 0},
    };
    uint32_t *dst[K_N] = {
        [K_CH] = &t->client_header_ms,    [K_CB] = &t->client_body_ms,
        [K_CK] = &t->client_keepalive_ms, [K_CW] = &t->client_write_ms,
        [K_UC] = &t->upstream_connect_ms, [K_UR] = &t->upstream_read_ms,
        [K_UW] = &t->upstream_write_ms,   [K_UI] = &t->upstream_idle_ms,
    };
    const struct ynode *v[K_N];
    if (!fields(c, m, keys, K_N, v, "a mapping of timeouts")) {
        return;
    }
    for (size_t i = 0; i < K_N; i++) {
        /* A zero timeout would fail every request at once; nobody means that. */
        get_duration(c, v[i], keys[i].name, 1, dst[i]);
    }
}

static void resolver_servers(struct ctx *c, const struct ynode *n, struct weir_cfg_resolver *r)
{
    static const char what[] = "ip:port";
    size_t old = path_key(c, "servers");
    const struct ynode *d = weir__ynode_deref(n);
    const struct ynode *first = d->type == YN_SEQ ? d->first : n;
    size_t count = d->type == YN_SEQ ? d->n : 1;
    if (d->type == YN_SEQ && count == 0) {
        err(c, n, "expected at least one server (leave servers out for /etc/resolv.conf's)");
    } else if (count > 16) {
        err(c, n, "at most 16 servers, got %zu", count);
    } else if (d->type == YN_MAP) {
        err(c, n, "expected %s or a sequence of them, got a mapping", what);
    } else {
        const char **v = keep_array(c, count, sizeof(*v));
        size_t i = 0;
        for (const struct ynode *it = first; v != NULL && i < count; it = it->next, i++) {
            size_t o = d->type == YN_SEQ ? path_index(c, i) : c->plen;
            const struct ynode *sv = scalar(c, it, what);
            const char *why = sv ? weir__cfg_check_address(sv->text, sv->len, false) : NULL;
            if (sv != NULL && why == NULL && sv->len > 9 && memcmp(sv->text, "localhost", 9) == 0) {
                why = "the host must be a numeric IP address";
            }
            if (sv != NULL && why != NULL) {
                char shown[WEIR__CFG_DESCRIBE_MAX];
                err(c, it, "expected %s, got %s (%s)", what,
                    weir__cfg_describe(sv, shown, sizeof(shown)), why);
            } else if (sv != NULL) {
                v[i] = keep(c, sv->text, sv->len);
            }
            path_pop(c, o);
        }
        r->servers = v;
        r->nservers = v != NULL ? count : 0;
    }
    path_pop(c, old);
}

static void resolver_section(struct ctx *c, const struct ynode *m, struct weir_cfg_resolver *r)
{
    enum { K_SERVERS, K_TIMEOUT, K_MIN_TTL, K_MAX_TTL, K_RETRY, K_N };
    static const struct keyspec keys[K_N] = {
        [K_SERVERS] = {"servers", 0}, [K_TIMEOUT] = {"timeout", 0}, [K_MIN_TTL] = {"min_ttl", 0},
        [K_MAX_TTL] = {"max_ttl", 0}, [K_RETRY] = {"retry", 0},
    };
    const struct ynode *v[K_N];
    if (!fields(c, m, keys, K_N, v, "a mapping of servers, timeout, min_ttl, max_ttl, retry")) {
        return;
    }
    if (v[K_SERVERS] != NULL) {
        resolver_servers(c, v[K_SERVERS], r);
    }
    get_duration(c, v[K_TIMEOUT], "timeout", 10, &r->timeout_ms);
    if (r->timeout_ms > 60000) {
        size_t old = path_key(c, "timeout");
        err(c, v[K_TIMEOUT], "expected a duration of at most 60s");
        path_pop(c, old);
    }
    get_duration(c, v[K_MIN_TTL], "min_ttl", 100, &r->min_ttl_ms);
    get_duration(c, v[K_MAX_TTL], "max_ttl", 100, &r->max_ttl_ms);
    get_duration(c, v[K_RETRY], "retry", 100, &r->retry_ms);
    if (r->min_ttl_ms > r->max_ttl_ms) {
        int k = v[K_MAX_TTL] != NULL ? K_MAX_TTL : K_MIN_TTL;
        size_t old = path_key(c, keys[k].name);
        err(c, v[k], "min_ttl (%ums) must not be longer than max_ttl (%ums)", r->min_ttl_ms,
            r->max_ttl_ms);
        path_pop(c, old);
    }
}

static void access_log_value(struct ctx *c, const struct ynode *n, struct weir_cfg_server *s)
{
    const char *path = NULL;
    get_string(c, n, "access_log", "a file path, stdout or off", &path);
    if (path != NULL) {
        s->access_log = strcmp(path, "off") == 0 ? NULL : path;
    }
}

static void server_section(struct ctx *c, const struct ynode *m, struct weir_cfg_server *s)
{
    enum {
        K_THREADS,
        K_STEAL,
        K_PID,
        K_ERRLOG,
        K_LEVEL,
        K_GRACE,
        K_ALOG,
        K_AFMT,
        K_KEEP,
        K_POOL,
        K_RETRIES,
        K_FWD,
        K_LIMITS,
        K_TIMEOUTS,
        K_RESOLVER,
        K_N
    };
    static const struct keyspec keys[K_N] = {
        [K_THREADS] = {"threads", 0},
        [K_STEAL] = {"work_stealing", 0},
        [K_PID] = {"pid_file", 0},
        [K_ERRLOG] = {"error_log", 0},
        [K_LEVEL] = {"log_level", 0},
        [K_GRACE] = {"grace_period", 0},
        [K_ALOG] = {"access_log", 0},
        [K_AFMT] = {"access_log_format", 0},
        [K_KEEP] = {"upstream_keepalive", 0},
        [K_POOL] = {"upstream_pool", 0},
        [K_RETRIES] = {"max_retries", 0},
        [K_FWD] = {"forwarded_headers", 0},
        [K_LIMITS] = {"limits", 0},
        [K_TIMEOUTS] = {"timeouts", 0},
        [K_RESOLVER] = {"resolver", 0},
    };
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    static const char *const formats[] = {"combined", "json"};
    const struct ynode *v[K_N];
    if (!fields(c, m, keys, K_N, v, "a mapping of server settings")) {
        return;
    }
    int e;
    get_u32(c, v[K_THREADS], "threads", 1, 256, &s->threads);
    get_bool(c, v[K_STEAL], "work_stealing", &s->work_stealing);
    get_string(c, v[K_PID], "pid_file", "a file path", &s->pid_file);
    get_string(c, v[K_ERRLOG], "error_log", "a file path", &s->error_log);
    e = (int)s->log_level;
    get_enum(c, v[K_LEVEL], "log_level", levels, 4, &e);
    s->log_level = (enum weir_log_level)e;
    get_duration(c, v[K_GRACE], "grace_period", 0, &s->grace_period_ms);
    access_log_value(c, v[K_ALOG], s);
    e = (int)s->access_log_format;
    get_enum(c, v[K_AFMT], "access_log_format", formats, 2, &e);
    s->access_log_format = (enum weir_access_format)e;
    get_u32(c, v[K_KEEP], "upstream_keepalive", 0, 65535, &s->upstream_keepalive);
    get_u32(c, v[K_RETRIES], "max_retries", 0, 16, &s->max_retries);
    size_t old;
    if (v[K_FWD] != NULL) {
        old = path_key(c, "forwarded_headers");
        forwarded_section(c, v[K_FWD], s);
        path_pop(c, old);
    }
    if (v[K_LIMITS] != NULL) {
        old = path_key(c, "limits");
        limits_section(c, v[K_LIMITS], &s->limits);
        path_pop(c, old);
    }
    if (v[K_TIMEOUTS] != NULL) {
        old = path_key(c, "timeouts");
        timeouts_section(c, v[K_TIMEOUTS], &s->timeouts);
        path_pop(c, old);
    }
    if (v[K_POOL] != NULL) {
        old = path_key(c, "upstream_pool");
        upstream_pool_section(c, v[K_POOL], s);
        path_pop(c, old);
    }
    if (v[K_RESOLVER] != NULL) {
        old = path_key(c, "resolver");
        resolver_section(c, v[K_RESOLVER], &s->resolver);
        path_pop(c, old);
    }
}

/* --- listeners: ---------------------------------------------------------------------- */

/* The items of a sequence, or NULL after reporting that n is something else. */
static const struct ynode *sequence(struct ctx *c, const struct ynode *n, const char *what)
{
    const struct ynode *d = weir__ynode_deref(n);
    if (d->type == YN_SEQ) {
        return d;
    }
    char shown[WEIR__CFG_DESCRIBE_MAX];
    err(c, n, "expected %s, got %s", what, weir__cfg_describe(n, shown, sizeof(shown)));
    return NULL;
}

static void listener_item(struct ctx *c, const struct ynode *n, struct weir_cfg_listener *l)
{
    enum { K_ADDR, K_NAME, K_MAXCONN, K_N };
    static const struct keyspec keys[K_N] = {
        [K_ADDR] = {"address", KEY_REQUIRED},
        [K_NAME] = {"name", 0},
        [K_MAXCONN] = {"max_connections", 0},
    };
    const struct ynode *v[K_N];
    const struct ynode *d = weir__ynode_deref(n);
    if (d->type == YN_SCALAR && !weir__ynode_is_null(d)) {
        l->address = address_value(c, n, NULL);
        return;
    }
    if (!fields(c, n, keys, K_N, v, "host:port or a mapping with address, name, max_connections")) {
        return;
    }
    if (v[K_ADDR] != NULL) {
        size_t old = path_key(c, "address");
        l->address = address_value(c, v[K_ADDR], NULL);
        path_pop(c, old);
    }
    get_string(c, v[K_NAME], "name", "a name", &l->name);
    get_u32(c, v[K_MAXCONN], "max_connections", 0, 10000000, &l->max_connections);
}

static void listeners_section(struct ctx *c, const struct ynode *n, struct weir_config *cfg)
{
    const struct ynode *seq = sequence(c, n, "a sequence of listeners");
    if (seq == NULL || seq->n == 0) {
        return;
    }
    struct weir_cfg_listener *ls = keep_array(c, seq->n, sizeof(*ls));
    /* An array of pointers: sizeof(*where) is a pointer's size on purpose. */
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    const struct ynode **where = weir_arena_calloc(c->tmp, seq->n * sizeof(*where));
    if (ls == NULL || where == NULL) {
        c->oom = true;
        return;
    }
    size_t i = 0;
    for (const struct ynode *it = seq->first; it != NULL; it = it->next, i++) {
        size_t old = path_index(c, i);
        ls[i].name = "";
        listener_item(c, it, &ls[i]);
        where[i] = it;
        for (size_t j = 0; ls[i].address != NULL && j < i; j++) {
            if (ls[j].address != NULL && strcmp(ls[i].address, ls[j].address) == 0) {
                err(c, it, "listener address '%s' is already used by listeners[%zu] (line %d)",
                    ls[i].address, j, where[j]->line);
                break;
            }
        }
        path_pop(c, old);
    }
    cfg->listeners = ls;
    cfg->nlisteners = seq->n;
}

/* --- upstreams: ---------------------------------------------------------------------- */

static const char *srv_value(struct ctx *c, const struct ynode *n)
{
    static const char what[] = "an SRV name like _http._tcp.example.com";
    const struct ynode *s = scalar(c, n, what);
    if (s == NULL) {
        return NULL;
    }
    const char *why = weir__dns_name_check(s->text, s->len);
    if (why != NULL) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        err(c, n, "expected %s, got %s (%s)", what, weir__cfg_describe(s, shown, sizeof(shown)),
            why);
        return NULL;
    }
    return keep(c, s->text, s->len);
}

static void backend_item(struct ctx *c, const struct ynode *n, struct weir_cfg_backend *b)
{
    enum { K_ADDR, K_SRV, K_WEIGHT, K_BACKUP, K_DRAIN, K_MAXCONNS, K_N };
    static const struct keyspec keys[K_N] = {
        [K_ADDR] = {"address", KEY_VALUE}, [K_SRV] = {"srv", KEY_VALUE},
        [K_WEIGHT] = {"weight", 0},        [K_BACKUP] = {"backup", 0},
        [K_DRAIN] = {"drain", 0},          [K_MAXCONNS] = {"max_conns", 0},
    };
    const struct ynode *v[K_N];
    const struct ynode *d = weir__ynode_deref(n);
    b->weight = 1;
    if (d->type == YN_SCALAR && !weir__ynode_is_null(d)) {
        b->address = address_value(c, n, &b->dns);
        return;
    }
    if (!fields(c, n, keys, K_N, v,
                "host:port or a mapping with address (or srv), weight, backup, drain, "
                "max_conns")) {
        return;
    }
    if (v[K_ADDR] == NULL && v[K_SRV] == NULL) {
        err(c, n, "missing required key 'address' (or 'srv')");
    } else if (v[K_ADDR] != NULL && v[K_SRV] != NULL) {
        size_t old = path_key(c, "srv");
        err(c, v[K_SRV], "address and srv are exclusive: give one");
        path_pop(c, old);
    } else if (v[K_ADDR] != NULL) {
        size_t old = path_key(c, "address");
        b->address = address_value(c, v[K_ADDR], &b->dns);
        path_pop(c, old);
    } else {
        size_t old = path_key(c, "srv");
        b->srv = srv_value(c, v[K_SRV]);
        path_pop(c, old);
    }
    if (v[K_SRV] != NULL && v[K_WEIGHT] != NULL) {
        size_t old = path_key(c, "weight");
        err(c, v[K_WEIGHT], "the SRV records give the weights: remove weight");
        path_pop(c, old);
    }
    get_u32(c, v[K_WEIGHT], "weight", 1, WEIR_LB_MAX_WEIGHT, &b->weight);
    get_bool(c, v[K_BACKUP], "backup", &b->backup);
    get_bool(c, v[K_DRAIN], "drain", &b->drain);
    get_u32(c, v[K_MAXCONNS], "max_conns", 0, 1000000, &b->max_conns);
}

/* The text naming a backend in its group (address or SRV name); NULL when it has neither. */
static const char *backend_key(const struct weir_cfg_backend *b)
{
    return b->address != NULL ? b->address : b->srv;
}

static void backends_value(struct ctx *c, const struct ynode *n, struct weir_cfg_upstream *u)
{
    size_t old = path_key(c, "backends");
    const struct ynode *seq = sequence(c, n, "a sequence of backends");
    if (seq != NULL && seq->n == 0) {
        err(c, n, "an upstream needs at least one backend");
    } else if (seq != NULL && seq->n > WEIR_LB_MAX_BACKENDS) {
        err(c, n, "an upstream may have at most %d backends, got %zu", WEIR_LB_MAX_BACKENDS,
            seq->n);
    } else if (seq != NULL) {
        struct weir_cfg_backend *bs = keep_array(c, seq->n, sizeof(*bs));
        size_t i = 0, primaries = 0;
        uint64_t total[2] = {0, 0};
        for (const struct ynode *it = seq->first; bs != NULL && it != NULL; it = it->next) {
            size_t o = path_index(c, i);
            backend_item(c, it, &bs[i]);
            primaries += !bs[i].backup;
            /* An SRV backend's weights are the records'; weir scales them to fit. */
            total[bs[i].backup ? 1 : 0] += bs[i].srv != NULL ? 0 : bs[i].weight;
            const char *key = backend_key(&bs[i]);
            for (size_t j = 0; key != NULL && j < i; j++) {
                const char *other = backend_key(&bs[j]);
                if (other != NULL && strcmp(key, other) == 0) {
                    err(c, it, "backend '%s' is already listed as backends[%zu]", key, j);
                    break;
                }
            }
            path_pop(c, o);
            i++;
        }
        if (bs != NULL && primaries == 0) {
            err(c, n, "every backend is a backup: at least one must not be");
        }
        if (total[0] > WEIR_LB_MAX_TOTAL_WEIGHT || total[1] > WEIR_LB_MAX_TOTAL_WEIGHT) {
            err(c, n, "the weights of an upstream's backends add up to more than %d",
                WEIR_LB_MAX_TOTAL_WEIGHT);
        }
        u->backends = bs;
        u->nbackends = bs != NULL ? seq->n : 0;
    }
    path_pop(c, old);
}

/* hash_key: uri, path, client_ip, header:NAME, cookie:NAME or arg:NAME. */
static void hash_key_value(struct ctx *c, const struct ynode *n, struct weir_cfg_upstream *u)
{
    static const char what[] = "uri, path, client_ip, header:NAME, cookie:NAME or arg:NAME";
    size_t old = path_key(c, "hash_key");
    const struct ynode *sv = scalar(c, n, what);
    if (sv == NULL) {
        path_pop(c, old);
        return;
    }
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
                u->hash_key_name = keep(c, name, nlen);
            }
        }
        if (ok) {
            u->hash_key = kinds[i].kind;
        }
    }
    if (!ok) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        err(c, n, "expected %s (NAME an HTTP token), got %s", what,
            weir__cfg_describe(sv, shown, sizeof(shown)));
    }
    path_pop(c, old);
}

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

/* expect_status: a status, "NNN-NNN", or a sequence of them. */
static void status_item(struct ctx *c, const struct ynode *n, struct weir_cfg_health *h)
{
    static const char what[] = "a status (200) or a range (200-399) between 100 and 599";
    const struct ynode *sv = scalar(c, n, what);
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
        err(c, n, "expected %s, got %s", what, weir__cfg_describe(sv, shown, sizeof(shown)));
        return;
    }
    if (h->nstatus == 16) {
        err(c, n, "at most 16 status ranges");
        return;
    }
    h->status_lo[h->nstatus] = (uint16_t)lo;
    h->status_hi[h->nstatus] = (uint16_t)hi;
    h->nstatus++;
}

static void health_section(struct ctx *c, const struct ynode *m, struct weir_cfg_health *h)
{
    enum {
        K_TYPE,
        K_METHOD,
        K_PATH,
        K_HOST,
        K_STATUS,
        K_BODY,
        K_INTERVAL,
        K_TIMEOUT,
        K_RISE,
        K_FALL,
        K_N
    };
    static const struct keyspec keys[K_N] = {
        [K_TYPE] = {"type", 0},
        [K_METHOD] = {"method", 0},
        [K_PATH] = {"path", 0},
        [K_HOST] = {"host", 0},
        [K_STATUS] = {"expect_status", 0},
        [K_BODY] = {"expect_body", 0},
        [K_INTERVAL] = {"interval", 0},
        [K_TIMEOUT] = {"timeout", 0},
        [K_RISE] = {"rise", 0},
        [K_FALL] = {"fall", 0},
    };
    static const char *const types[] = {"http", "tcp"};
    static const char *const methods[] = {"GET", "HEAD"};
    const struct ynode *v[K_N];
    h->enabled = true;
    h->interval_ms = 5000;
    h->timeout_ms = 2000;
    h->rise = 2;
    h->fall = 3;
    if (!fields(c, m, keys, K_N, v, "a mapping of health check settings")) {
        return;
    }
    int e = 0;
    get_enum(c, v[K_TYPE], "type", types, 2, &e);
    h->tcp = e == 1;
    e = 0;
    get_enum(c, v[K_METHOD], "method", methods, 2, &e);
    h->method = methods[e];
    if (v[K_PATH] != NULL) {
        size_t old = path_key(c, "path");
        const char *pth = string_value(c, v[K_PATH], "a path starting with /");
        if (pth != NULL && (pth[0] != '/' || strpbrk(pth, " \t#") != NULL || strlen(pth) > 512)) {
            err(c, v[K_PATH],
                "expected a path starting with / (no spaces or #, at most 512 "
                "bytes), got '%s'",
                pth);
        } else {
            h->path = pth;
        }
        path_pop(c, old);
    }
    if (v[K_HOST] != NULL) {
        size_t old = path_key(c, "host");
        const char *host = string_value(c, v[K_HOST], "a host name");
        if (host != NULL && !host_header_ok(host)) {
            err(c, v[K_HOST], "expected a host name (and :port), got '%s'", host);
        } else {
            h->host = host;
        }
        path_pop(c, old);
    }
    if (v[K_STATUS] != NULL) {
        size_t old = path_key(c, "expect_status");
        const struct ynode *d = weir__ynode_deref(v[K_STATUS]);
        if (d->type == YN_SEQ) {
            size_t i = 0;
            for (const struct ynode *it = d->first; it != NULL; it = it->next, i++) {
                size_t o = path_index(c, i);
                status_item(c, it, h);
                path_pop(c, o);
            }
        } else {
            status_item(c, v[K_STATUS], h);
        }
        path_pop(c, old);
    }
    get_string(c, v[K_BODY], "expect_body", "text to find in the body", &h->expect_body);
    if (h->expect_body != NULL && (h->expect_body[0] == '\0' || strlen(h->expect_body) > 4096)) {
        err(c, v[K_BODY], "expect_body must be 1 to 4096 bytes");
    }
    get_duration(c, v[K_INTERVAL], "interval", 10, &h->interval_ms);
    get_duration(c, v[K_TIMEOUT], "timeout", 10, &h->timeout_ms);
    if (h->timeout_ms > h->interval_ms) {
        err(c, v[K_TIMEOUT] ? v[K_TIMEOUT] : m, "timeout must not be longer than interval (%ums)",
            h->interval_ms);
    }
    get_u32(c, v[K_RISE], "rise", 1, 100, &h->rise);
    get_u32(c, v[K_FALL], "fall", 1, 100, &h->fall);
    if (h->tcp && (v[K_METHOD] || v[K_PATH] || v[K_HOST] || v[K_STATUS] || v[K_BODY])) {
        err(c, v[K_TYPE],
            "type: tcp only connects: method, path, host, expect_status and "
            "expect_body need type: http");
    }
}

static void upstream_group(struct ctx *c, const struct ynode *m, struct weir_cfg_upstream *u)
{
    enum {
        K_BALANCE,
        K_HASH_KEY,
        K_FAIL_OPEN,
        K_MAX_FAILS,
        K_EJECT,
        K_EJECT_MAX,
        K_HEALTH,
        K_QUEUE,
        K_QUEUE_TIMEOUT,
        K_BACKENDS,
        K_N
    };
    static const struct keyspec keys[K_N] = {
        [K_BALANCE] = {"balance", 0},
        [K_HASH_KEY] = {"hash_key", 0},
        [K_FAIL_OPEN] = {"fail_open", 0},
        [K_MAX_FAILS] = {"max_fails", 0},
        [K_EJECT] = {"eject", 0},
        [K_EJECT_MAX] = {"eject_max", 0},
        [K_HEALTH] = {"health_check", 0},
        [K_QUEUE] = {"queue_size", 0},
        [K_QUEUE_TIMEOUT] = {"queue_timeout", 0},
        [K_BACKENDS] = {"backends", KEY_REQUIRED},
    };
    static const char *const balances[] = {"round_robin", "random", "least_conn",
                                           "consistent_hash"};
    const struct ynode *v[K_N];
    u->max_fails = 3;
    u->eject_ms = 10000;
    u->eject_max_ms = 300000;
    u->queue_size = 128;
    u->queue_timeout_ms = 5000;
    if (!fields(c, m, keys, K_N, v, "a mapping with balance and backends")) {
        return;
    }
    int e = (int)u->balance;
    get_enum(c, v[K_BALANCE], "balance", balances, 4, &e);
    u->balance = (enum weir_balance)e;
    if (v[K_HASH_KEY] != NULL) {
        if (u->balance == WEIR_BALANCE_CONSISTENT_HASH) {
            hash_key_value(c, v[K_HASH_KEY], u);
        } else {
            err(c, v[K_HASH_KEY], "hash_key needs balance: consistent_hash");
        }
    } else if (u->balance == WEIR_BALANCE_CONSISTENT_HASH && v[K_BALANCE] != NULL) {
        err(c, v[K_BALANCE],
            "balance: consistent_hash needs hash_key (uri, path, client_ip, header:NAME, "
            "cookie:NAME or arg:NAME)");
    }
    get_bool(c, v[K_FAIL_OPEN], "fail_open", &u->fail_open);
    get_u32(c, v[K_MAX_FAILS], "max_fails", 0, 1000, &u->max_fails);
    get_duration(c, v[K_EJECT], "eject", 1, &u->eject_ms);
    get_duration(c, v[K_EJECT_MAX], "eject_max", 1, &u->eject_max_ms);
    if (v[K_EJECT_MAX] != NULL && u->eject_max_ms < u->eject_ms) {
        err(c, v[K_EJECT_MAX], "eject_max must not be shorter than eject");
    }
    get_u32(c, v[K_QUEUE], "queue_size", 0, 1000000, &u->queue_size);
    get_duration(c, v[K_QUEUE_TIMEOUT], "queue_timeout", 1, &u->queue_timeout_ms);
    if (v[K_HEALTH] != NULL) {
        size_t old = path_key(c, "health_check");
        health_section(c, v[K_HEALTH], &u->health);
        path_pop(c, old);
    }
    if (v[K_BACKENDS] != NULL) {
        backends_value(c, v[K_BACKENDS], u);
    }
}

/* A group name: printable, no spaces; NULL after an error. */
static const char *upstream_name(struct ctx *c, const struct ynode *k)
{
    const struct ynode *d = weir__ynode_deref(k);
    for (size_t i = 0; i < d->len; i++) {
        unsigned char ch = (unsigned char)d->text[i];
        if (ch <= 0x20 || ch == 0x7f) {
            char shown[WEIR__CFG_DESCRIBE_MAX];
            size_t old = path_add(c, ".", d->text, d->len);
            err(c, k, "an upstream name may not contain spaces or control characters, got %s",
                weir__cfg_describe(d, shown, sizeof(shown)));
            path_pop(c, old);
            return NULL;
        }
    }
    if (d->len == 0) {
        err(c, k, "an upstream name may not be empty");
        return NULL;
    }
    return keep(c, d->text, d->len);
}

static void upstreams_section(struct ctx *c, const struct ynode *n, struct weir_config *cfg)
{
    if (!expect_map(c, n, "a mapping of upstream names to groups")) {
        return;
    }
    const struct ynode *m = weir__ynode_deref(n);
    struct weir_cfg_upstream *us = keep_array(c, m->n / 2 + 1, sizeof(*us));
    /* An array of pointers: sizeof(*where) is a pointer's size on purpose. */
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    const struct ynode **where = weir_arena_calloc(c->tmp, (m->n / 2 + 1) * sizeof(*where));
    if (us == NULL || where == NULL) {
        c->oom = true;
        return;
    }
    size_t nu = 0;
    for (const struct ynode *k = m->first; k != NULL && k->next != NULL; k = k->next->next) {
        if (!scalar_key(c, k)) {
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
            duplicate_key(c, k, where[j]);
            continue;
        }
        where[nu] = k;
        us[nu].name = name;
        size_t old = path_add(c, ".", name, strlen(name));
        upstream_group(c, k->next, &us[nu++]);
        path_pop(c, old);
    }
    cfg->upstreams = us;
    cfg->nupstreams = nu;
}

/* --- routes: ------------------------------------------------------------------------- */

/* Lower-cases and checks one match.host entry: a host name or "*.suffix". */
static const char *host_value(struct ctx *c, const struct ynode *n)
{
    const char *h = string_value(c, n, "a host name or *.suffix");
    if (h == NULL) {
        return NULL;
    }
    char *l = (char *)h; /* our own copy, not yet shared */
    size_t len = strlen(l);
    bool ok = strcmp(l, "*.") != 0 && l[0] != '.' && l[len - 1] != '.';
    for (size_t i = 0; ok && i < len; i++) {
        char ch = l[i];
        if (ch >= 'A' && ch <= 'Z') {
            l[i] = (char)(ch - 'A' + 'a');
        } else if (ch == '*') {
            ok = i == 0 && l[1] == '.';
        } else if (ch == '.') {
            ok = l[i + 1] != '.';
        } else {
            ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        }
    }
    if (!ok) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        err(c, n, "expected a host name or *.suffix, got %s",
            weir__cfg_describe(n, shown, sizeof(shown)));
        return NULL;
    }
    return l;
}

static void hosts_value(struct ctx *c, const struct ynode *n, struct weir_cfg_route *r)
{
    const struct ynode *d = weir__ynode_deref(n);
    size_t count = d->type == YN_SEQ ? d->n : 1;
    const char **hosts = keep_array(c, count, sizeof(*hosts));
    if (hosts == NULL) {
        return;
    }
    size_t nh = 0;
    if (d->type != YN_SEQ) {
        if ((hosts[0] = host_value(c, n)) != NULL) {
            nh = 1;
        }
    } else {
        size_t i = 0;
        for (const struct ynode *it = d->first; it != NULL; it = it->next) {
            size_t old = path_index(c, i++);
            if ((hosts[nh] = host_value(c, it)) != NULL) {
                nh++;
            }
            path_pop(c, old);
        }
    }
    r->hosts = hosts;
    r->nhosts = nh;
}

static void match_section(struct ctx *c, const struct ynode *m, struct weir_cfg_route *r)
{
    enum { K_HOST, K_PATH, K_N };
    static const struct keyspec keys[K_N] = {
        [K_HOST] = {"host", 0},
        [K_PATH] = {"path_prefix", 0},
    };
    const struct ynode *v[K_N];
    if (!fields(c, m, keys, K_N, v, "a mapping with host and path_prefix")) {
        return;
    }
    if (v[K_HOST] != NULL) {
        size_t old = path_key(c, "host");
        hosts_value(c, v[K_HOST], r);
        path_pop(c, old);
    }
    const char *p = NULL;
    get_string(c, v[K_PATH], "path_prefix", "a path starting with /", &p);
    if (p != NULL && (p[0] != '/' || strpbrk(p, " ?#") != NULL)) {
        size_t old = path_key(c, "path_prefix");
        char shown[WEIR__CFG_DESCRIBE_MAX];
        err(c, v[K_PATH], "expected a path starting with / (no spaces, ? or #), got %s",
            weir__cfg_describe(v[K_PATH], shown, sizeof(shown)));
        path_pop(c, old);
    } else if (p != NULL) {
        r->path_prefix = p;
    }
}

static const struct weir_cfg_upstream *find_upstream(const struct weir_config *cfg,
                                                     const char *name)
{
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        if (strcmp(cfg->upstreams[i].name, name) == 0) {
            return &cfg->upstreams[i];
        }
    }
    return NULL;
}

static void no_such_upstream(struct ctx *c, const struct ynode *n, const char *name)
{
    const struct weir_config *cfg = c->cfg;
    const char **names = weir_arena_alloc(c->tmp, (cfg->nupstreams + 1) * sizeof(*names));
    char list[300];
    if (names == NULL) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        names[i] = cfg->upstreams[i].name;
    }
    long s = weir__cfg_suggest(name, strlen(name), names, cfg->nupstreams);
    if (s >= 0) {
        err(c, n, "no upstream named '%s'; did you mean '%s'?", name, names[s]);
    } else if (cfg->nupstreams == 0) {
        err(c, n, "no upstream named '%s'; define it under upstreams:", name);
    } else {
        err(c, n, "no upstream named '%s'; defined upstreams: %s", name,
            join(names, cfg->nupstreams, list, sizeof(list)));
    }
}

/* --- header edits -------------------------------------------------------------------- */

/* A header name (a token), kept in the snapshot; NULL after an error. */
static const char *header_name(struct ctx *c, const struct ynode *n)
{
    const struct ynode *s = scalar(c, n, "a header name");
    if (s == NULL) {
        return NULL;
    }
    if (!weir__cfg_is_token(s->text, s->len)) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        err(c, n, "expected a header name (letters, digits and !#$%%&'*+-.^_`|~), got %s",
            weir__cfg_describe(s, shown, sizeof(shown)));
        return NULL;
    }
    return keep(c, s->text, s->len);
}

/* A header value: any scalar, as written ("" for an empty one); no CR, LF, NUL or controls. */
static const char *header_value(struct ctx *c, const struct ynode *n)
{
    const struct ynode *d = weir__ynode_deref(n);
    char shown[WEIR__CFG_DESCRIBE_MAX];
    if (d->type != YN_SCALAR) {
        err(c, n, "expected a header value, got %s", weir__cfg_describe(n, shown, sizeof(shown)));
        return NULL;
    }
    for (size_t i = 0; i < d->len; i++) {
        unsigned char ch = (unsigned char)d->text[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            err(c, n,
                "a header value may not contain CR, LF, NUL or other control characters, "
                "got %s",
                weir__cfg_describe(d, shown, sizeof(shown)));
            return NULL;
        }
    }
    return keep(c, d->text, d->len);
}

static size_t items_in(const struct ynode *n)
{
    const struct ynode *d = weir__ynode_deref(n);
    if (d == NULL) {
        return 0;
    }
    return d->type == YN_MAP ? d->n / 2 : d->type == YN_SEQ ? d->n : 1;
}

static void header_map(struct ctx *c, const struct ynode *n, enum weir_header_op op,
                       struct weir_cfg_header_edits *out, struct weir_cfg_header_edit *v)
{
    if (n == NULL || !expect_map(c, n, "a mapping of header names to values")) {
        return;
    }
    for (const struct ynode *k = weir__ynode_deref(n)->first; k != NULL && k->next != NULL;
         k = k->next->next) {
        const char *name = header_name(c, k);
        if (name == NULL) {
            continue;
        }
        const struct ynode *prev = weir__ynode_deref(n)->first;
        while (prev != k && strcasecmp(weir__ynode_deref(prev)->text, name) != 0) {
            prev = prev->next->next;
        }
        if (prev != k) {
            /* Field names are case-insensitive: X-A and x-a are the same key. */
            duplicate_key(c, k, prev);
            continue;
        }
        size_t old = path_add(c, ".", name, strlen(name));
        const char *value = header_value(c, k->next);
        path_pop(c, old);
        if (value != NULL) {
            v[out->n++] = (struct weir_cfg_header_edit){.op = op, .name = name, .value = value};
        }
    }
}

static void header_remove(struct ctx *c, const struct ynode *n, struct weir_cfg_header_edits *out,
                          struct weir_cfg_header_edit *v)
{
    if (n == NULL) {
        return;
    }
    const struct ynode *d = weir__ynode_deref(n);
    if (d->type == YN_SCALAR) {
        const char *name = header_name(c, n);
        if (name != NULL) {
            v[out->n++] = (struct weir_cfg_header_edit){.op = WEIR_HDR_REMOVE, .name = name};
        }
        return;
    }
    if (sequence(c, n, "a sequence of header names") == NULL) {
        return;
    }
    size_t i = 0;
    for (const struct ynode *it = d->first; it != NULL; it = it->next) {
        size_t old = path_index(c, i++);
        const char *name = header_name(c, it);
        path_pop(c, old);
        if (name != NULL) {
            v[out->n++] = (struct weir_cfg_header_edit){.op = WEIR_HDR_REMOVE, .name = name};
        }
    }
}

/* Edits are stored removes first, then sets, then adds, whatever the order in the file. */
static void header_edits(struct ctx *c, const struct ynode *m, struct weir_cfg_header_edits *out)
{
    enum { K_ADD, K_SET, K_REMOVE, K_N };
    static const struct keyspec keys[K_N] = {
        [K_ADD] = {"add", 0},
        [K_SET] = {"set", 0},
        [K_REMOVE] = {"remove", 0},
    };
    const struct ynode *v[K_N];
    if (!fields(c, m, keys, K_N, v, "a mapping with add, set and remove")) {
        return;
    }
    size_t cap = items_in(v[K_ADD]) + items_in(v[K_SET]) + items_in(v[K_REMOVE]);
    if (cap == 0) {
        return;
    }
    struct weir_cfg_header_edit *edits = keep_array(c, cap, sizeof(*edits));
    if (edits == NULL) {
        return;
    }
    size_t old = path_key(c, "remove");
    header_remove(c, v[K_REMOVE], out, edits);
    path_pop(c, old);
    old = path_key(c, "set");
    header_map(c, v[K_SET], WEIR_HDR_SET, out, edits);
    path_pop(c, old);
    old = path_key(c, "add");
    header_map(c, v[K_ADD], WEIR_HDR_ADD, out, edits);
    path_pop(c, old);
    out->v = edits;
}

/* --- routes: ------------------------------------------------------------------------- */

static void route_upstream(struct ctx *c, const struct ynode *n, struct weir_cfg_route *r)
{
    size_t old = path_key(c, "upstream");
    const char *name = string_value(c, n, "the name of an upstream");
    if (name != NULL) {
        r->upstream = find_upstream(c->cfg, name);
        if (r->upstream == NULL) {
            no_such_upstream(c, n, name);
        }
    }
    path_pop(c, old);
}

static void route_item(struct ctx *c, const struct ynode *m, struct weir_cfg_route *r)
{
    enum { K_NAME, K_MATCH, K_UPSTREAM, K_REQ, K_RESP, K_RETRY_IDEM, K_BUDGET, K_N };
    static const struct keyspec keys[K_N] = {
        [K_NAME] = {"name", 0},
        [K_MATCH] = {"match", 0},
        [K_UPSTREAM] = {"upstream", KEY_REQUIRED},
        [K_REQ] = {"request_headers", 0},
        [K_RESP] = {"response_headers", 0},
        [K_RETRY_IDEM] = {"retry_idempotent", 0},
        [K_BUDGET] = {"retry_budget", 0},
    };
    const struct ynode *v[K_N];
    r->name = "";
    r->path_prefix = "/";
    r->retry_budget_percent = 20;
    if (weir__ynode_is_null(m)) {
        err(c, m, "expected a route (a mapping with upstream and optional match), got nothing");
        return;
    }
    if (!fields(c, m, keys, K_N, v, "a route (a mapping with upstream and optional match)")) {
        return;
    }
    get_string(c, v[K_NAME], "name", "a name", &r->name);
    size_t old;
    if (v[K_MATCH] != NULL) {
        old = path_key(c, "match");
        match_section(c, v[K_MATCH], r);
        path_pop(c, old);
    }
    if (v[K_UPSTREAM] != NULL) {
        route_upstream(c, v[K_UPSTREAM], r);
    }
    if (v[K_REQ] != NULL) {
        old = path_key(c, "request_headers");
        header_edits(c, v[K_REQ], &r->request_headers);
        path_pop(c, old);
    }
    if (v[K_RESP] != NULL) {
        old = path_key(c, "response_headers");
        header_edits(c, v[K_RESP], &r->response_headers);
        path_pop(c, old);
    }
    get_bool(c, v[K_RETRY_IDEM], "retry_idempotent", &r->retry_idempotent);
    if (v[K_BUDGET] != NULL) {
        old = path_key(c, "retry_budget");
        static const char what[] = "a percentage like 20%";
        const struct ynode *sv = scalar(c, v[K_BUDGET], what);
        uint64_t pct = 0;
        if (sv != NULL) {
            if (sv->len >= 2 && sv->text[sv->len - 1] == '%' &&
                parse_u64(sv->text, sv->len - 1, &pct) && pct <= 100) {
                r->retry_budget_percent = (uint32_t)pct;
            } else {
                char shown[WEIR__CFG_DESCRIBE_MAX];
                err(c, v[K_BUDGET], "expected %s (0%% to 100%%), got %s", what,
                    weir__cfg_describe(sv, shown, sizeof(shown)));
            }
        }
        path_pop(c, old);
    }
}

static void routes_section(struct ctx *c, const struct ynode *n, struct weir_config *cfg)
{
    const struct ynode *seq = sequence(c, n, "a sequence of routes");
    if (seq == NULL || seq->n == 0) {
        return;
    }
    struct weir_cfg_route *rs = keep_array(c, seq->n, sizeof(*rs));
    if (rs == NULL) {
        return;
    }
    size_t i = 0;
    for (const struct ynode *it = seq->first; it != NULL; it = it->next, i++) {
        size_t old = path_index(c, i);
        route_item(c, it, &rs[i]);
        path_pop(c, old);
    }
    cfg->routes = rs;
    cfg->nroutes = seq->n;
}

/* --- the whole file ------------------------------------------------------------------ */

static void root_section(struct ctx *c, const struct ynode *root)
{
    enum { K_SERVER, K_LISTENERS, K_ROUTES, K_UPSTREAMS, K_N };
    static const struct keyspec keys[K_N] = {
        [K_SERVER] = {"server", 0},
        [K_ROUTES] = {"routes", 0},
        [K_LISTENERS] = {"listeners", 0},
        [K_UPSTREAMS] = {"upstreams", 0},
    };
    const struct ynode *v[K_N];
    if (root == NULL ||
        !fields(c, root, keys, K_N, v, "a mapping with server, listeners, routes, upstreams")) {
        return;
    }
    size_t old;
    if (v[K_SERVER] != NULL) {
        old = path_key(c, "server");
        server_section(c, v[K_SERVER], &c->cfg->server);
        path_pop(c, old);
    }
    if (v[K_LISTENERS] != NULL) {
        old = path_key(c, "listeners");
        listeners_section(c, v[K_LISTENERS], c->cfg);
        path_pop(c, old);
    }
    /* Upstreams before routes, wherever they are in the file: routes name them. */
    if (v[K_UPSTREAMS] != NULL) {
        old = path_key(c, "upstreams");
        upstreams_section(c, v[K_UPSTREAMS], c->cfg);
        path_pop(c, old);
    }
    if (v[K_ROUTES] != NULL) {
        old = path_key(c, "routes");
        routes_section(c, v[K_ROUTES], c->cfg);
        path_pop(c, old);
    }
}

static uint32_t online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (uint32_t)n;
}

static void set_defaults(struct weir_config *cfg)
{
    struct weir_cfg_server *s = &cfg->server;
    s->threads = online_cpus();
    s->work_stealing = false;
    s->log_level = WEIR_LOG_INFO;
    s->grace_period_ms = 30000;
    s->access_log_format = WEIR_ACCESS_COMBINED;
    s->upstream_keepalive = 128;
    s->upstream_shared_per_peer = 256;
    s->upstream_shared_total = 4096;
    s->upstream_share_after_ms = 10;
    s->max_retries = 1;
    s->x_forwarded_for = true;
    s->x_forwarded_proto = true;
    s->via = true;
    s->limits = (struct weir_cfg_limits){
        .max_request_line = 8192,
        .max_header_bytes = 32768,
        .max_headers = 100,
        .max_body_bytes = 0,
        .max_connections = 10000,
        .buffer_size = 32768,
        .max_connections_per_ip = 0,
        .requests_per_second_per_ip = 0,
        .max_requests_per_connection = 10000,
    };
    s->timeouts = (struct weir_cfg_timeouts){
        .client_header_ms = 60000,
        .client_body_ms = 60000,
        .client_keepalive_ms = 75000,
        .client_write_ms = 60000,
        .upstream_connect_ms = 5000,
        .upstream_read_ms = 60000,
        .upstream_write_ms = 60000,
        .upstream_idle_ms = 60000,
    };
    s->resolver = (struct weir_cfg_resolver){
        .timeout_ms = 2000,
        .min_ttl_ms = 1000,
        .max_ttl_ms = 3600000,
        .retry_ms = 5000,
    };
}

/* A snapshot holding only defaults, labelled source. NULL on out of memory. */
static struct config_impl *snapshot_new(const char *source)
{
    struct weir_arena *a = NULL;
    if (weir_arena_new(8192, SIZE_MAX, &a) != 0) {
        return NULL;
    }
    struct config_impl *impl = weir_arena_calloc(a, sizeof(*impl));
    char *src = weir_arena_strndup(a, source, strlen(source));
    if (impl == NULL || src == NULL) {
        weir_arena_free(a);
        return NULL;
    }
    impl->arena = a;
    impl->pub.source = src;
    set_defaults(&impl->pub);
    return impl;
}

struct weir_config *weir_config_new_default(void)
{
    struct config_impl *impl = snapshot_new("(defaults)");
    return impl != NULL ? &impl->pub : NULL;
}

void weir_config_free(struct weir_config *cfg)
{
    if (cfg != NULL) {
        weir_arena_free(((struct config_impl *)cfg)->arena);
    }
}

/* Parses and checks text into a new snapshot. 0, WEIR_ECONFIG (errors in errs), WEIR_ENOMEM. */
static int load(const char *name, const char *text, size_t len, struct weir_config_errors *errs,
                struct weir_config **out)
{
    struct config_impl *impl = NULL;
    struct weir_arena *tmp = NULL;
    struct ynode *root = NULL;
    int rc = WEIR_ENOMEM;

    if (len > WEIR__CFG_MAX_TEXT) {
        rc = weir__cfgerr_add(errs, 0, 0, "", "the file is larger than %u MiB",
                              WEIR__CFG_MAX_TEXT >> 20);
        rc = rc != 0 ? rc : WEIR_ECONFIG;
        goto out;
    }
    impl = snapshot_new(name);
    if (impl == NULL || weir_arena_new(16384, SIZE_MAX, &tmp) != 0) {
        goto out;
    }
    rc = weir__yaml_parse(text, len, tmp, errs, &root);
    if (rc != 0) {
        goto out;
    }
    struct ctx c = {.errs = errs, .a = impl->arena, .tmp = tmp, .cfg = &impl->pub};
    root_section(&c, root);
    rc = c.oom ? WEIR_ENOMEM : weir_config_errors_count(errs) > 0 ? WEIR_ECONFIG : 0;
out:
    weir_arena_free(tmp);
    if (rc == 0) {
        *out = &impl->pub;
    } else if (impl != NULL) {
        weir_arena_free(impl->arena);
    }
    return rc;
}

/* Hands errs to the caller on WEIR_ECONFIG when asked for, else frees it. */
static int finish(int rc, struct weir_config_errors *errs, struct weir_config_errors **errsp)
{
    if (rc == WEIR_ECONFIG && errsp != NULL) {
        weir__cfgerr_sort(errs);
        *errsp = errs;
    } else {
        weir_config_errors_free(errs);
    }
    return rc;
}

int weir_config_load_string(const char *name, const char *text, size_t len,
                            struct weir_config **out, struct weir_config_errors **errs)
{
    if (errs != NULL) {
        *errs = NULL;
    }
    if (out == NULL || (text == NULL && len != 0)) {
        return WEIR_EINVAL;
    }
    *out = NULL;
    struct weir_config_errors *e = weir__cfgerr_new(name != NULL ? name : "(string)");
    if (e == NULL) {
        return WEIR_ENOMEM;
    }
    return finish(load(name != NULL ? name : "(string)", text != NULL ? text : "", len, e, out), e,
                  errs);
}

/* Reads the whole file into a heap buffer. 0 or -errno; EFBIG when over the size limit. */
static int read_file(const char *path, char **textp, size_t *lenp)
{
    char *buf = NULL;
    size_t len = 0;
    struct stat st;
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto out;
    }
    buf = weir__malloc(WEIR__CFG_MAX_TEXT + 1);
    if (buf == NULL) {
        rc = WEIR_ENOMEM;
        goto out;
    }
    /* Read to EOF rather than trust st_size: a pipe or /proc file reports 0. */
    while (len <= WEIR__CFG_MAX_TEXT) {
        ssize_t n = read(fd, buf + len, WEIR__CFG_MAX_TEXT + 1 - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    if (len > WEIR__CFG_MAX_TEXT) {
        rc = -EFBIG;
    }
out:
    close(fd);
    if (rc != 0) {
        weir__free(buf);
        return rc;
    }
    *textp = buf;
    *lenp = len;
    return 0;
}

int weir_config_load_file(const char *path, struct weir_config **out,
                          struct weir_config_errors **errs)
{
    char *text = NULL;
    size_t len = 0;
    if (errs != NULL) {
        *errs = NULL;
    }
    if (path == NULL || out == NULL) {
        return WEIR_EINVAL;
    }
    *out = NULL;
    struct weir_config_errors *e = weir__cfgerr_new(path);
    if (e == NULL) {
        return WEIR_ENOMEM;
    }
    int rc = read_file(path, &text, &len);
    if (rc == -EFBIG) {
        rc = weir__cfgerr_add(e, 0, 0, "", "the file is larger than %u MiB",
                              WEIR__CFG_MAX_TEXT >> 20);
        rc = rc != 0 ? rc : WEIR_ECONFIG;
    } else if (rc < 0 && rc != WEIR_ENOMEM) {
        rc = weir__cfgerr_add(e, 0, 0, "", "cannot read the file: %s", weir_strerror(rc));
        rc = rc != 0 ? rc : WEIR_ECONFIG;
    } else if (rc == 0) {
        rc = load(path, text, len, e, out);
    }
    weir__free(text);
    return finish(rc, e, errs);
}
