/*
 * The generic half of the config loader: the walker that checks one YAML mapping against a
 * section's key table (unknown keys with did-you-mean, duplicates, required keys, then each
 * key parsed by its type within its row's bounds), the defaults taken from the rows, the key
 * list the tables make, and the helpers every section file uses to build dotted key paths,
 * report errors and keep values in the snapshot.
 */
#include <stdio.h>
#include <string.h>

#include "config/config_int.h"
#include "core/assert.h"
#include "core/fmt.h"

/* --- paths and errors ---------------------------------------------------------------- */

size_t weir__cfg_path_add(struct weir__cfg_ctx *c, const char *sep, const char *s, size_t len)
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

size_t weir__cfg_path_key(struct weir__cfg_ctx *c, const char *key)
{
    return weir__cfg_path_add(c, ".", key, strlen(key));
}

size_t weir__cfg_path_index(struct weir__cfg_ctx *c, size_t i)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "[%zu]", i);
    size_t old = c->plen;
    weir__cfg_path_add(c, "", buf, (size_t)n);
    return old;
}

void weir__cfg_path_pop(struct weir__cfg_ctx *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

void weir__cfg_err(struct weir__cfg_ctx *c, const struct ynode *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (weir__cfgerr_vadd(c->errs, n->line, n->col, c->path, fmt, ap) != 0) {
        c->oom = true;
    }
    va_end(ap);
}

char *weir__cfg_keep(struct weir__cfg_ctx *c, const char *s, size_t len)
{
    char *p = weir_arena_strndup(c->a, s, len);
    if (p == NULL) {
        c->oom = true;
    }
    return p;
}

void *weir__cfg_keep_array(struct weir__cfg_ctx *c, size_t n, size_t size)
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

const char *weir__cfg_join(const char *const *names, size_t n, char *buf, size_t size)
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

static void unknown_key(struct weir__cfg_ctx *c, const struct ynode *k,
                        const struct weir__cfg_section *sec)
{
    const char *names[WEIR__CFG_MAX_KEYS];
    char list[512], shown[WEIR__CFG_DESCRIBE_MAX];
    for (size_t i = 0; i < sec->nkeys; i++) {
        names[i] = sec->keys[i].name;
    }
    size_t old = weir__cfg_path_add(c, ".", k->text, k->len);
    weir__cfg_describe(k, shown, sizeof(shown));
    long s = weir__cfg_suggest(k->text, k->len, names, sec->nkeys);
    if (strcmp(k->text, "<<") == 0) {
        weir__cfg_err(c, k, "merge keys (<<) are not supported; write the keys out");
    } else if (s >= 0) {
        weir__cfg_err(c, k, "unknown key %s; did you mean '%s'?", shown, names[s]);
    } else {
        weir__cfg_err(c, k, "unknown key %s; valid keys here: %s", shown,
                      weir__cfg_join(names, sec->nkeys, list, sizeof(list)));
    }
    weir__cfg_path_pop(c, old);
}

bool weir__cfg_scalar_key(struct weir__cfg_ctx *c, const struct ynode *k)
{
    const struct ynode *d = weir__ynode_deref(k);
    if (d->type == YN_SCALAR) {
        return true;
    }
    weir__cfg_err(c, k, "a key must be a string, got %s",
                  d->type == YN_MAP ? "a mapping" : "a sequence");
    return false;
}

void weir__cfg_duplicate_key(struct weir__cfg_ctx *c, const struct ynode *k,
                             const struct ynode *first)
{
    char shown[WEIR__CFG_DESCRIBE_MAX];
    const struct ynode *d = weir__ynode_deref(k);
    size_t old = weir__cfg_path_add(c, ".", d->text, d->len);
    weir__cfg_err(c, k, "duplicate key %s (first at line %d, column %d)",
                  weir__cfg_describe(k, shown, sizeof(shown)), first->line, first->col);
    weir__cfg_path_pop(c, old);
}

bool weir__cfg_expect_map(struct weir__cfg_ctx *c, const struct ynode *n, const char *what)
{
    const struct ynode *d = weir__ynode_deref(n);
    if (d->type == YN_MAP) {
        return true;
    }
    char shown[WEIR__CFG_DESCRIBE_MAX];
    weir__cfg_err(c, n, "expected %s, got %s", what, weir__cfg_describe(n, shown, sizeof(shown)));
    return false;
}

/*
 * Looks up every key of mapping m in sec's table: vals[i] gets the value of keys[i], or NULL
 * when it is absent or null (YAML's "key:" with nothing is the same as leaving the key out,
 * except for a required or value key, which then gets "got nothing"). Reports unknown,
 * duplicate and non-string keys, and missing required ones at m's position. false when m is
 * not a mapping.
 */
static bool fields(struct weir__cfg_ctx *c, const struct ynode *m,
                   const struct weir__cfg_section *sec, const struct ynode **vals)
{
    const struct ynode *seen[WEIR__CFG_MAX_KEYS] = {0};
    WEIR_ASSERT(sec->nkeys <= WEIR__CFG_MAX_KEYS);
    for (size_t i = 0; i < sec->nkeys; i++) {
        vals[i] = NULL;
    }
    bool is_null = weir__ynode_is_null(m);
    if (!is_null && !weir__cfg_expect_map(c, m, sec->what)) {
        return false;
    }
    const struct ynode *d = weir__ynode_deref(m);
    for (const struct ynode *k = is_null ? NULL : d->first; k != NULL && k->next != NULL;
         k = k->next->next) {
        const struct ynode *v = k->next;
        if (!weir__cfg_scalar_key(c, k)) {
            continue;
        }
        const struct ynode *kd = weir__ynode_deref(k);
        size_t i = 0;
        while (i < sec->nkeys && strcmp(kd->text, sec->keys[i].name) != 0) {
            i++;
        }
        if (i == sec->nkeys || strlen(kd->text) != kd->len) {
            unknown_key(c, kd, sec);
        } else if (seen[i] != NULL) {
            weir__cfg_duplicate_key(c, k, seen[i]);
        } else {
            seen[i] = k;
            bool keep_null = sec->keys[i].flags & (WEIR__CFG_REQUIRED | WEIR__CFG_VALUE);
            vals[i] = keep_null || !weir__ynode_is_null(v) ? v : NULL;
        }
    }
    for (size_t i = 0; i < sec->nkeys; i++) {
        if ((sec->keys[i].flags & WEIR__CFG_REQUIRED) && seen[i] == NULL) {
            weir__cfg_err(c, m, "missing required key '%s'", sec->keys[i].name);
        }
    }
    return true;
}

/* --- values -------------------------------------------------------------------------- */

const struct ynode *weir__cfg_scalar(struct weir__cfg_ctx *c, const struct ynode *n,
                                     const char *what)
{
    const struct ynode *d = weir__ynode_deref(n);
    /* A "\0" escape would cut the C string short and hide the rest from every check. */
    if (d->type == YN_SCALAR && !weir__ynode_is_null(d) && strlen(d->text) == d->len) {
        return d;
    }
    char shown[WEIR__CFG_DESCRIBE_MAX];
    weir__cfg_err(c, n, "expected %s, got %s", what, weir__cfg_describe(n, shown, sizeof(shown)));
    return NULL;
}

const struct ynode *weir__cfg_sequence(struct weir__cfg_ctx *c, const struct ynode *n,
                                       const char *what)
{
    const struct ynode *d = weir__ynode_deref(n);
    if (d->type == YN_SEQ) {
        return d;
    }
    char shown[WEIR__CFG_DESCRIBE_MAX];
    weir__cfg_err(c, n, "expected %s, got %s", what, weir__cfg_describe(n, shown, sizeof(shown)));
    return NULL;
}

bool weir__cfg_parse_u64(const char *s, size_t len, uint64_t *out)
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

const char *weir__cfg_string_value(struct weir__cfg_ctx *c, const struct ynode *n, const char *what)
{
    const struct ynode *s = weir__cfg_scalar(c, n, what);
    if (s == NULL) {
        return NULL;
    }
    if (s->len == 0) {
        weir__cfg_err(c, n, "expected %s, got an empty string", what);
        return NULL;
    }
    for (size_t i = 0; i < s->len; i++) {
        unsigned char ch = (unsigned char)s->text[i];
        if (ch < 0x20 || ch == 0x7f) {
            char shown[WEIR__CFG_DESCRIBE_MAX];
            weir__cfg_err(c, n, "expected %s without control characters, got %s", what,
                          weir__cfg_describe(s, shown, sizeof(shown)));
            return NULL;
        }
    }
    return weir__cfg_keep(c, s->text, s->len);
}

const char *weir__cfg_address_value(struct weir__cfg_ctx *c, const struct ynode *n, bool *dns)
{
    const struct ynode *s = weir__cfg_scalar(c, n, "host:port");
    if (s == NULL) {
        return NULL;
    }
    const char *why = dns != NULL ? weir__cfg_check_backend_address(s->text, s->len, dns)
                                  : weir__cfg_check_address(s->text, s->len, true);
    if (why != NULL) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, n, "expected host:port, got %s (%s)",
                      weir__cfg_describe(s, shown, sizeof(shown)), why);
        return NULL;
    }
    return weir__cfg_keep(c, s->text, s->len);
}

/* --- the getters, one per type: each reports and leaves *out alone on a bad value -------- */

static void get_u32(struct weir__cfg_ctx *c, const struct ynode *n, uint64_t min, uint64_t max,
                    uint32_t *out)
{
    char what[80];
    (void)snprintf(what, sizeof(what), "an integer between %u and %u", (unsigned)min,
                   (unsigned)max);
    const struct ynode *s = weir__cfg_scalar(c, n, what);
    uint64_t v;
    if (s == NULL) {
        return;
    }
    if (weir__cfg_parse_u64(s->text, s->len, &v) && v >= min && v <= max) {
        *out = (uint32_t)v;
    } else {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, n, "expected %s, got %s", what,
                      weir__cfg_describe(s, shown, sizeof(shown)));
    }
}

static bool ieq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

static void get_bool(struct weir__cfg_ctx *c, const struct ynode *n, bool *out)
{
    const struct ynode *s = weir__cfg_scalar(c, n, "true or false");
    if (s == NULL) {
        return;
    }
    const char *t = s->text;
    if (ieq(t, "true") || ieq(t, "yes") || ieq(t, "on")) {
        *out = true;
    } else if (ieq(t, "false") || ieq(t, "no") || ieq(t, "off")) {
        *out = false;
    } else {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, n, "expected true or false, got %s",
                      weir__cfg_describe(s, shown, sizeof(shown)));
    }
}

/* The index of n among names (any case), or -1 after reporting, with a did-you-mean. */
static long get_enum(struct weir__cfg_ctx *c, const struct ynode *n, const char *const *names,
                     size_t count)
{
    char list[256], what[300];
    (void)snprintf(what, sizeof(what), "one of %s",
                   weir__cfg_join(names, count, list, sizeof(list)));
    const struct ynode *s = weir__cfg_scalar(c, n, what);
    if (s == NULL) {
        return -1;
    }
    size_t i = 0;
    while (i < count && !ieq(s->text, names[i])) {
        i++;
    }
    if (i < count && strlen(s->text) == s->len) {
        return (long)i;
    }
    char shown[WEIR__CFG_DESCRIBE_MAX];
    long sug = weir__cfg_suggest(s->text, s->len, names, count);
    weir__cfg_err(c, n, "expected %s, got %s%s%s%s", what,
                  weir__cfg_describe(s, shown, sizeof(shown)), sug >= 0 ? "; did you mean '" : "",
                  sug >= 0 ? names[sug] : "", sug >= 0 ? "'?" : "");
    return -1;
}

/* Whether s looks like a number with a unit, so a parse failure means "out of range". */
static bool number_with_unit(const char *s, const char *units)
{
    size_t i = strspn(s, "0123456789.");
    return i > 0 && s[0] != '.' && strspn(s + i, units) == strlen(s + i);
}

static void get_duration(struct weir__cfg_ctx *c, const struct ynode *n, uint64_t min, uint64_t max,
                         uint32_t *out)
{
    static const char what[] = "a duration like 30s or 250ms";
    const struct ynode *s = weir__cfg_scalar(c, n, what);
    uint32_t ms;
    if (s == NULL) {
        return;
    }
    char shown[WEIR__CFG_DESCRIBE_MAX], bound[32];
    weir__cfg_describe(s, shown, sizeof(shown));
    if (strlen(s->text) == s->len && weir_config_parse_duration(s->text, &ms) == 0) {
        if (ms < min) {
            weir__cfg_err(c, n, "expected a duration of at least %ums, got %s", (unsigned)min,
                          shown);
        } else if (ms > max) {
            weir__cfg_err(c, n, "expected a duration of at most %s",
                          weir__fmt_ms(max, bound, sizeof(bound)));
        } else {
            *out = ms;
        }
    } else if (strlen(s->text) == s->len && number_with_unit(s->text, "mshd")) {
        weir__cfg_err(c, n, "expected a duration of whole milliseconds up to 1193h, got %s", shown);
    } else {
        weir__cfg_err(c, n, "expected %s, got %s", what, shown);
    }
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

static void get_size(struct weir__cfg_ctx *c, const struct ynode *n, uint64_t min, uint64_t max,
                     uint64_t *out)
{
    static const char what[] = "a size like 16k or 1m";
    const struct ynode *s = weir__cfg_scalar(c, n, what);
    uint64_t v;
    if (s == NULL) {
        return;
    }
    char shown[WEIR__CFG_DESCRIBE_MAX], lo[32], hi[32];
    weir__cfg_describe(s, shown, sizeof(shown));
    bool ok = strlen(s->text) == s->len && weir_config_parse_size(s->text, &v) == 0;
    if (ok && v >= min && v <= max) {
        *out = v;
    } else if (ok || (strlen(s->text) == s->len && number_with_unit(s->text, "kKmMgG"))) {
        weir__cfg_err(c, n, "expected a size between %s and %s, got %s",
                      fmt_size(min, lo, sizeof(lo)), fmt_size(max, hi, sizeof(hi)), shown);
    } else {
        weir__cfg_err(c, n, "expected %s, got %s", what, shown);
    }
}

static void get_percent(struct weir__cfg_ctx *c, const struct ynode *n, uint64_t min, uint64_t max,
                        uint32_t *out)
{
    static const char what[] = "a percentage like 20%";
    const struct ynode *s = weir__cfg_scalar(c, n, what);
    uint64_t pct = 0;
    if (s == NULL) {
        return;
    }
    if (s->len >= 2 && s->text[s->len - 1] == '%' &&
        weir__cfg_parse_u64(s->text, s->len - 1, &pct) && pct >= min && pct <= max) {
        *out = (uint32_t)pct;
    } else {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, n, "expected %s (%u%% to %u%%), got %s", what, (unsigned)min,
                      (unsigned)max, weir__cfg_describe(s, shown, sizeof(shown)));
    }
}

/* --- the rows' fields ---------------------------------------------------------------- */

/* The field a row describes in obj; the row's size must be the type's (a table typo). */
static void *field(const struct weir__cfg_key *k, void *obj, size_t size)
{
    WEIR_ASSERT(k->size == size);
    return (char *)obj + k->off;
}

static void store_enum(const struct weir__cfg_key *k, void *obj, uint64_t i)
{
    WEIR_ASSERT(i < k->nnames);
    if (k->size == sizeof(bool)) {
        *(bool *)field(k, obj, sizeof(bool)) = i != 0;
    } else {
        int e = (int)i; /* an enum of small non-negative values: an int's representation */
        memcpy(field(k, obj, sizeof(int)), &e, sizeof(e));
    }
}

static void parse_string(struct weir__cfg_ctx *c, const struct weir__cfg_key *k, void *obj,
                         const struct ynode *v)
{
    const char *s = weir__cfg_string_value(c, v, k->what);
    if (s != NULL && (k->valid == NULL || k->valid(c, v, s))) {
        *(const char **)field(k, obj, sizeof(const char *)) = s;
    }
}

/* Parses v, the present value of row k, into f->obj; the path ends in k's name. */
static void parse_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                        const struct weir__cfg_key *k, const struct ynode *v)
{
    void *obj = f->obj;
    long i;
    switch (k->type) {
    case WEIR__CFG_T_BOOL:
        get_bool(c, v, field(k, obj, sizeof(bool)));
        break;
    case WEIR__CFG_T_U32:
        get_u32(c, v, k->min, k->max, field(k, obj, sizeof(uint32_t)));
        break;
    case WEIR__CFG_T_SIZE:
        get_size(c, v, k->min, k->max, field(k, obj, sizeof(uint64_t)));
        break;
    case WEIR__CFG_T_SIZE32: {
        uint32_t *out = field(k, obj, sizeof(uint32_t));
        uint64_t wide = *out;
        get_size(c, v, k->min, k->max, &wide);
        *out = (uint32_t)wide; /* max is at most UINT32_MAX */
        break;
    }
    case WEIR__CFG_T_DURATION:
        get_duration(c, v, k->min, k->max, field(k, obj, sizeof(uint32_t)));
        break;
    case WEIR__CFG_T_PERCENT:
        get_percent(c, v, k->min, k->max, field(k, obj, sizeof(uint32_t)));
        break;
    case WEIR__CFG_T_STRING:
        parse_string(c, k, obj, v);
        break;
    case WEIR__CFG_T_ENUM:
        if ((i = get_enum(c, v, k->names, k->nnames)) >= 0) {
            store_enum(k, obj, (uint64_t)i);
        }
        break;
    case WEIR__CFG_T_KEYWORD:
        if ((i = get_enum(c, v, k->names, k->nnames)) >= 0) {
            *(const char **)field(k, obj, sizeof(const char *)) = k->names[i];
        }
        break;
    case WEIR__CFG_T_SECTION:
        weir__cfg_walk(c, v, k->sub, (char *)obj + k->off);
        break;
    case WEIR__CFG_T_CUSTOM:
        if (k->parse != NULL) {
            k->parse(c, f, v);
        }
        break;
    }
}

/* --- sections ------------------------------------------------------------------------ */

const struct ynode *weir__cfg_value(const struct weir__cfg_frame *f, const char *name)
{
    for (size_t i = 0; i < f->sec->nkeys; i++) {
        if (strcmp(f->sec->keys[i].name, name) == 0) {
            return f->v[i];
        }
    }
    WEIR_ASSERT(!"weir__cfg_value: no such key in the section's table");
    return NULL;
}

bool weir__cfg_walk(struct weir__cfg_ctx *c, const struct ynode *m,
                    const struct weir__cfg_section *sec, void *obj)
{
    const struct ynode *v[WEIR__CFG_MAX_KEYS];
    if (!fields(c, m, sec, v)) {
        return false;
    }
    const struct weir__cfg_frame f = {.sec = sec, .m = m, .v = v, .obj = obj};
    /* Two passes: LATE keys after the others. */
    for (int late = 0; late < 2; late++) {
        for (size_t i = 0; i < sec->nkeys; i++) {
            const struct weir__cfg_key *k = &sec->keys[i];
            if (((k->flags & WEIR__CFG_LATE) != 0) != (late == 1)) {
                continue;
            }
            if (v[i] != NULL) {
                size_t old = weir__cfg_path_key(c, k->name);
                parse_value(c, &f, k, v[i]);
                weir__cfg_path_pop(c, old);
            }
            if (k->check != NULL) {
                k->check(c, &f);
            }
        }
    }
    if (sec->check != NULL) {
        sec->check(c, &f);
    }
    return true;
}

void weir__cfg_defaults(const struct weir__cfg_section *sec, void *obj)
{
    for (size_t i = 0; i < sec->nkeys; i++) {
        const struct weir__cfg_key *k = &sec->keys[i];
        switch (k->type) {
        case WEIR__CFG_T_BOOL:
            *(bool *)field(k, obj, sizeof(bool)) = k->def != 0;
            break;
        case WEIR__CFG_T_U32:
        case WEIR__CFG_T_SIZE32:
        case WEIR__CFG_T_DURATION:
        case WEIR__CFG_T_PERCENT:
            WEIR_ASSERT(k->def <= UINT32_MAX && k->max <= UINT32_MAX);
            *(uint32_t *)field(k, obj, sizeof(uint32_t)) = (uint32_t)k->def;
            break;
        case WEIR__CFG_T_SIZE:
            *(uint64_t *)field(k, obj, sizeof(uint64_t)) = k->def;
            break;
        case WEIR__CFG_T_STRING:
            *(const char **)field(k, obj, sizeof(const char *)) = k->sdef;
            break;
        case WEIR__CFG_T_ENUM:
            store_enum(k, obj, k->def);
            break;
        case WEIR__CFG_T_KEYWORD:
            WEIR_ASSERT(k->def < k->nnames);
            *(const char **)field(k, obj, sizeof(const char *)) = k->names[k->def];
            break;
        case WEIR__CFG_T_SECTION:
            weir__cfg_defaults(k->sub, (char *)obj + k->off);
            break;
        case WEIR__CFG_T_CUSTOM:
            break;
        }
    }
}

/* --- the key list -------------------------------------------------------------------- */

static void keys_of(const struct weir__cfg_section *sec, char *path, size_t len, size_t cap,
                    weir__cfg_key_cb *cb, void *arg)
{
    for (size_t i = 0; i < sec->nkeys; i++) {
        const struct weir__cfg_key *k = &sec->keys[i];
        int n = snprintf(path + len, cap - len, "%s%s", len > 0 ? "." : "", k->name);
        WEIR_ASSERT(n > 0 && (size_t)n < cap - len);
        cb(path, k, arg);
        if (k->sub != NULL) {
            size_t end = len + (size_t)n;
            const char *items = (k->flags & WEIR__CFG_SEQ)     ? "[]"
                                : (k->flags & WEIR__CFG_NAMED) ? ".*"
                                                               : "";
            int m = snprintf(path + end, cap - end, "%s", items);
            WEIR_ASSERT(m >= 0 && (size_t)m < cap - end);
            keys_of(k->sub, path, end + (size_t)m, cap, cb, arg);
        }
        path[len] = '\0';
    }
}

void weir__config_keys_foreach(weir__cfg_key_cb *cb, void *arg)
{
    char path[256] = "";
    keys_of(&weir__cfg_root, path, 0, sizeof(path), cb, arg);
}
