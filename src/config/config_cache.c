/*
 * cache: (zones) and routes[].cache. A zone is a bounded in-memory storage; a route names one
 * and says how its requests are cached. The zones themselves are made by whoever runs the
 * config (the weir binary makes one weir_cache per zone); here they are checked data.
 */
#include <string.h>

#include "config/config_int.h"
#include "weir/cache.h"

/* --- cache.zones.NAME ------------------------------------------------------------------- */

#define ZN(f) WEIR__CFG_AT(struct weir_cfg_cache_zone, f)

static void zone_check(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    struct weir_cfg_cache_zone *z = f->obj;
    const struct ynode *mo = weir__cfg_value(f, "max_object");
    if (z->max_object == 0) {
        z->max_object = z->capacity / 8u;
        if (z->max_object == 0) {
            z->max_object = z->capacity;
        }
    }
    if (mo != NULL && z->capacity != 0 && z->max_object > z->capacity) {
        size_t old = weir__cfg_path_key(c, "max_object");
        weir__cfg_err(c, mo,
                      "max_object (%llu bytes) is larger than the zone's capacity (%llu bytes): "
                      "no object that size could be stored",
                      (unsigned long long)z->max_object, (unsigned long long)z->capacity);
        weir__cfg_path_pop(c, old);
    }
}

static const struct weir__cfg_key zone_keys[] = {
    {"capacity", WEIR__CFG_T_SIZE, WEIR__CFG_REQUIRED, ZN(capacity), .min = 64u << 10,
     .max = UINT64_C(1) << 44, .def = 64u << 10},
    WEIR__CFG_SIZE("max_object", ZN(max_object), 0, UINT64_C(1) << 40, 0),
};

static const struct weir__cfg_section zone_section =
    WEIR__CFG_TABLE("a cache zone (a mapping with capacity and max_object)", zone_keys, zone_check);

static void zones_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                        const struct ynode *v)
{
    (void)f;
    struct weir_config *cfg = c->cfg;
    if (!weir__cfg_expect_map(c, v, "a mapping of zone names to zones")) {
        return;
    }
    const struct ynode *m = weir__ynode_deref(v);
    struct weir_cfg_cache_zone *zs = weir__cfg_keep_array(c, m->n / 2 + 1, sizeof(*zs));
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    const struct ynode **where = weir_arena_calloc(c->tmp, (m->n / 2 + 1) * sizeof(*where));
    if (zs == NULL || where == NULL) {
        c->oom = true;
        return;
    }
    size_t nz = 0;
    for (const struct ynode *k = m->first; k != NULL && k->next != NULL; k = k->next->next) {
        if (!weir__cfg_scalar_key(c, k)) {
            continue;
        }
        const struct ynode *d = weir__ynode_deref(k);
        if (d->len == 0 || !weir__cfg_is_token(d->text, d->len)) {
            size_t old = weir__cfg_path_add(c, ".", d->text, d->len);
            weir__cfg_err(c, k, "a zone name is letters, digits and -_. (a token), got '%.*s'",
                          (int)(d->len > 64 ? 64 : d->len), d->text);
            weir__cfg_path_pop(c, old);
            continue;
        }
        size_t j = 0;
        while (j < nz &&
               (strlen(zs[j].name) != d->len || memcmp(zs[j].name, d->text, d->len) != 0)) {
            j++;
        }
        if (j < nz) {
            weir__cfg_duplicate_key(c, k, where[j]);
            continue;
        }
        const char *name = weir__cfg_keep(c, d->text, d->len);
        if (name == NULL) {
            return;
        }
        where[nz] = k;
        struct weir_cfg_cache_zone *z = &zs[nz++];
        z->name = name;
        weir__cfg_defaults(&zone_section, z);
        size_t old = weir__cfg_path_add(c, ".", name, d->len);
        weir__cfg_walk(c, k->next, &zone_section, z);
        weir__cfg_path_pop(c, old);
    }
    cfg->cache_zones = zs;
    cfg->ncache_zones = nz;
}

static const struct weir__cfg_key cache_keys[] = {
    {"zones", WEIR__CFG_T_CUSTOM, WEIR__CFG_NAMED, .parse = zones_value, .sub = &zone_section},
};

const struct weir__cfg_section weir__cfg_cache =
    WEIR__CFG_TABLE("a mapping with zones", cache_keys, NULL);

/* --- routes[].cache --------------------------------------------------------------------- */

#define RC(f) WEIR__CFG_AT(struct weir_cfg_route_cache, f)

static void route_zone(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                       const struct ynode *v)
{
    struct weir_cfg_route_cache *rc = f->obj;
    const char *name = weir__cfg_string_value(c, v, "the name of a zone of cache.zones");
    if (name == NULL) {
        return;
    }
    for (size_t i = 0; i < c->cfg->ncache_zones; i++) {
        if (strcmp(c->cfg->cache_zones[i].name, name) == 0) {
            rc->zone = &c->cfg->cache_zones[i];
            return;
        }
    }
    if (c->cfg->ncache_zones == 0) {
        weir__cfg_err(c, v, "no cache zone '%s': cache.zones defines none", name);
        return;
    }
    const char *names[64];
    size_t n = c->cfg->ncache_zones < 64 ? c->cfg->ncache_zones : 64;
    for (size_t i = 0; i < n; i++) {
        names[i] = c->cfg->cache_zones[i].name;
    }
    char buf[256];
    weir__cfg_err(c, v, "no cache zone '%s' (cache.zones has: %s)", name,
                  weir__cfg_join(names, n, buf, sizeof(buf)));
}

static const char *const key_parts[] = {"method", "host", "path", "query", "scheme"};

static void route_key(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                      const struct ynode *v)
{
    struct weir_cfg_route_cache *rc = f->obj;
    const struct ynode *seq =
        weir__cfg_sequence(c, v, "a list of key parts (method, host, path, query, scheme)");
    if (seq == NULL) {
        return;
    }
    uint32_t bits = 0;
    size_t i = 0;
    for (const struct ynode *it = seq->first; it != NULL; it = it->next, i++) {
        size_t old = weir__cfg_path_index(c, i);
        const struct ynode *s = weir__cfg_scalar(c, it, "a key part");
        if (s != NULL) {
            size_t j = 0;
            while (j < 5 &&
                   (strlen(key_parts[j]) != s->len || memcmp(key_parts[j], s->text, s->len) != 0)) {
                j++;
            }
            if (j == 5) {
                char buf[128];
                weir__cfg_err(c, it, "expected a key part (%s), got '%.*s'",
                              weir__cfg_join(key_parts, 5, buf, sizeof(buf)),
                              (int)(s->len > 64 ? 64 : s->len), s->text);
            } else if (bits & (1u << j)) {
                weir__cfg_err(c, it, "key part '%s' is listed twice", key_parts[j]);
            } else {
                bits |= 1u << j;
            }
        }
        weir__cfg_path_pop(c, old);
    }
    if (bits == 0 && seq->n == 0) {
        weir__cfg_err(c, v, "a cache key needs at least one part");
    }
    /* bit order of key_parts is WEIR_CACHE_KEY_METHOD.. WEIR_CACHE_KEY_SCHEME */
    rc->key = bits;
}

static void route_purge(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                        const struct ynode *v)
{
    struct weir_cfg_route_cache *rc = f->obj;
    const struct ynode *seq =
        weir__cfg_sequence(c, v, "a list of client addresses or blocks (127.0.0.1, 10.0.0.0/8)");
    if (seq == NULL || seq->n == 0) {
        return;
    }
    struct weir_cidr *list = weir__cfg_keep_array(c, seq->n, sizeof(*list));
    if (list == NULL) {
        return;
    }
    size_t i = 0;
    for (const struct ynode *it = seq->first; it != NULL; it = it->next, i++) {
        size_t old = weir__cfg_path_index(c, i);
        const struct ynode *s = weir__cfg_scalar(c, it, "an address or block");
        if (s != NULL && weir_cidr_parse(s->text, &list[i]) != 0) {
            weir__cfg_err(c, it,
                          "expected an IPv4 or IPv6 address, or a block such as 10.0.0.0/8 "
                          "(no bits set past the prefix), got '%.*s'",
                          (int)(s->len > 64 ? 64 : s->len), s->text);
        }
        weir__cfg_path_pop(c, old);
    }
    rc->purge_from = list;
    rc->npurge_from = seq->n;
}

static const char *const writer_failure[] = {"next_writer", "fetch_each"};

static const struct weir__cfg_key route_cache_keys[] = {
    WEIR__CFG_CUSTOM("zone", WEIR__CFG_REQUIRED, route_zone),
    {"key", WEIR__CFG_T_CUSTOM, WEIR__CFG_VALUE, .parse = route_key},
    WEIR__CFG_DURATION("default_ttl", RC(default_ttl_ms), 0, 365u * 86400u * 1000u, 0),
    WEIR__CFG_DURATION("lock_timeout", RC(lock_timeout_ms), 0, 3600u * 1000u, 5000),
    WEIR__CFG_DURATION("stale_while_revalidate", RC(stale_while_revalidate_ms), 0,
                       365u * 86400u * 1000u, 0),
    WEIR__CFG_DURATION("stale_if_error", RC(stale_if_error_ms), 0, 365u * 86400u * 1000u, 0),
    WEIR__CFG_ENUM("on_writer_failure", RC(on_writer_failure), writer_failure, 0),
    WEIR__CFG_BOOL("cookies", RC(cookies), false),
    WEIR__CFG_BOOL("authorization", RC(authorization), false),
    {"purge", WEIR__CFG_T_CUSTOM, WEIR__CFG_VALUE, .parse = route_purge},
};

const struct weir__cfg_section weir__cfg_route_cache = WEIR__CFG_TABLE(
    "a route's cache settings (a mapping with zone, key, default_ttl, lock_timeout, ...)",
    route_cache_keys, NULL);

void weir__cfg_route_cache_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                                 const struct ynode *v)
{
    struct weir_cfg_route_cache *rc = &((struct weir_cfg_route *)f->obj)->cache;
    weir__cfg_defaults(&weir__cfg_route_cache, rc);
    rc->key = WEIR_CACHE_KEY_DEFAULT;
    weir__cfg_walk(c, v, &weir__cfg_route_cache, rc);
}
