/*
 * The routes: section: a sequence of routes, each naming an upstream group (so it is checked
 * after upstreams:), with an optional match (hosts, path prefix), header edits for the request
 * and the response, its retry settings and its response buffering.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_int.h"
#include "weir/peer.h"

/* --- routes[].match ------------------------------------------------------------------ */

/* Lower-cases and checks one match.host entry: a host name or "*.suffix". */
static const char *host_value(struct weir__cfg_ctx *c, const struct ynode *n)
{
    const char *h = weir__cfg_string_value(c, n, "a host name or *.suffix");
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
        weir__cfg_err(c, n, "expected a host name or *.suffix, got %s",
                      weir__cfg_describe(n, shown, sizeof(shown)));
        return NULL;
    }
    return l;
}

static void hosts_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                        const struct ynode *n)
{
    struct weir_cfg_route *r = f->obj;
    const struct ynode *d = weir__ynode_deref(n);
    size_t count = d->type == YN_SEQ ? d->n : 1;
    const char **hosts = weir__cfg_keep_array(c, count, sizeof(*hosts));
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
            size_t old = weir__cfg_path_index(c, i++);
            if ((hosts[nh] = host_value(c, it)) != NULL) {
                nh++;
            }
            weir__cfg_path_pop(c, old);
        }
    }
    r->hosts = hosts;
    r->nhosts = nh;
}

static bool path_prefix_ok(struct weir__cfg_ctx *c, const struct ynode *v, const char *p)
{
    if (p[0] == '/' && strpbrk(p, " ?#") == NULL) {
        return true;
    }
    char shown[WEIR__CFG_DESCRIBE_MAX];
    weir__cfg_err(c, v, "expected a path starting with / (no spaces, ? or #), got %s",
                  weir__cfg_describe(v, shown, sizeof(shown)));
    return false;
}

/* Keys of struct weir_cfg_route itself: match: is a mapping, not a struct of its own. */
static const struct weir__cfg_key match_keys[] = {
    WEIR__CFG_CUSTOM("host", 0, hosts_value),
    {"path_prefix", WEIR__CFG_T_STRING, 0, WEIR__CFG_AT(struct weir_cfg_route, path_prefix),
     .what = "a path starting with /", .sdef = "/", .valid = path_prefix_ok},
};

static const struct weir__cfg_section match_section =
    WEIR__CFG_TABLE("a mapping with host and path_prefix", match_keys, NULL);

/* --- routes[].request_headers, routes[].response_headers ----------------------------- */

/* A header name (a token), kept in the snapshot; NULL after an error. */
static const char *header_name(struct weir__cfg_ctx *c, const struct ynode *n)
{
    const struct ynode *s = weir__cfg_scalar(c, n, "a header name");
    if (s == NULL) {
        return NULL;
    }
    if (!weir__cfg_is_token(s->text, s->len)) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, n, "expected a header name (letters, digits and !#$%%&'*+-.^_`|~), got %s",
                      weir__cfg_describe(s, shown, sizeof(shown)));
        return NULL;
    }
    return weir__cfg_keep(c, s->text, s->len);
}

/* A header value: any scalar, as written ("" for an empty one); no CR, LF, NUL or controls. */
static const char *header_value(struct weir__cfg_ctx *c, const struct ynode *n)
{
    const struct ynode *d = weir__ynode_deref(n);
    char shown[WEIR__CFG_DESCRIBE_MAX];
    if (d->type != YN_SCALAR) {
        weir__cfg_err(c, n, "expected a header value, got %s",
                      weir__cfg_describe(n, shown, sizeof(shown)));
        return NULL;
    }
    for (size_t i = 0; i < d->len; i++) {
        unsigned char ch = (unsigned char)d->text[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            weir__cfg_err(c, n,
                          "a header value may not contain CR, LF, NUL or other control "
                          "characters, got %s",
                          weir__cfg_describe(d, shown, sizeof(shown)));
            return NULL;
        }
    }
    return weir__cfg_keep(c, d->text, d->len);
}

static size_t items_in(const struct ynode *n)
{
    const struct ynode *d = weir__ynode_deref(n);
    if (d == NULL) {
        return 0;
    }
    return d->type == YN_MAP ? d->n / 2 : d->type == YN_SEQ ? d->n : 1;
}

static void header_map(struct weir__cfg_ctx *c, const struct ynode *n, enum weir_header_op op,
                       struct weir_cfg_header_edits *out, struct weir_cfg_header_edit *v)
{
    if (n == NULL || !weir__cfg_expect_map(c, n, "a mapping of header names to values")) {
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
            weir__cfg_duplicate_key(c, k, prev);
            continue;
        }
        size_t old = weir__cfg_path_add(c, ".", name, strlen(name));
        const char *value = header_value(c, k->next);
        weir__cfg_path_pop(c, old);
        if (value != NULL) {
            v[out->n++] = (struct weir_cfg_header_edit){.op = op, .name = name, .value = value};
        }
    }
}

static void header_remove(struct weir__cfg_ctx *c, const struct ynode *n,
                          struct weir_cfg_header_edits *out, struct weir_cfg_header_edit *v)
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
    if (weir__cfg_sequence(c, n, "a sequence of header names") == NULL) {
        return;
    }
    size_t i = 0;
    for (const struct ynode *it = d->first; it != NULL; it = it->next) {
        size_t old = weir__cfg_path_index(c, i++);
        const char *name = header_name(c, it);
        weir__cfg_path_pop(c, old);
        if (name != NULL) {
            v[out->n++] = (struct weir_cfg_header_edit){.op = WEIR_HDR_REMOVE, .name = name};
        }
    }
}

/*
 * add, set and remove go into one array, stored removes first, then sets, then adds,
 * whatever the order in the file: so they are parsed together, once all three are known.
 */
static void header_edits(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    struct weir_cfg_header_edits *out = f->obj;
    const struct ynode *add = weir__cfg_value(f, "add");
    const struct ynode *set = weir__cfg_value(f, "set");
    const struct ynode *remove = weir__cfg_value(f, "remove");
    size_t cap = items_in(add) + items_in(set) + items_in(remove);
    if (cap == 0) {
        return;
    }
    struct weir_cfg_header_edit *edits = weir__cfg_keep_array(c, cap, sizeof(*edits));
    if (edits == NULL) {
        return;
    }
    size_t old = weir__cfg_path_key(c, "remove");
    header_remove(c, remove, out, edits);
    weir__cfg_path_pop(c, old);
    old = weir__cfg_path_key(c, "set");
    header_map(c, set, WEIR_HDR_SET, out, edits);
    weir__cfg_path_pop(c, old);
    old = weir__cfg_path_key(c, "add");
    header_map(c, add, WEIR_HDR_ADD, out, edits);
    weir__cfg_path_pop(c, old);
    out->v = edits;
}

/* No parse callbacks: header_edits, the section's check, parses all three. */
static const struct weir__cfg_key header_keys[] = {
    WEIR__CFG_CUSTOM("add", 0, NULL),
    WEIR__CFG_CUSTOM("set", 0, NULL),
    WEIR__CFG_CUSTOM("remove", 0, NULL),
};

static const struct weir__cfg_section headers_section =
    WEIR__CFG_TABLE("a mapping with add, set and remove", header_keys, header_edits);

/* --- routes[] ------------------------------------------------------------------------ */

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

static void no_such_upstream(struct weir__cfg_ctx *c, const struct ynode *n, const char *name)
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
        weir__cfg_err(c, n, "no upstream named '%s'; did you mean '%s'?", name, names[s]);
    } else if (cfg->nupstreams == 0) {
        weir__cfg_err(c, n, "no upstream named '%s'; define it under upstreams:", name);
    } else {
        weir__cfg_err(c, n, "no upstream named '%s'; defined upstreams: %s", name,
                      weir__cfg_join(names, cfg->nupstreams, list, sizeof(list)));
    }
}

static void route_upstream(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                           const struct ynode *n)
{
    struct weir_cfg_route *r = f->obj;
    const char *name = weir__cfg_string_value(c, n, "the name of an upstream");
    if (name != NULL) {
        r->upstream = find_upstream(c->cfg, name);
        if (r->upstream == NULL) {
            no_such_upstream(c, n, name);
        }
    }
}

/* --- routes[].buffer_responses -------------------------------------------------------- */

/* spill: an absolute path to a directory weir can create files in, checked at load. */
static bool spill_dir_ok(struct weir__cfg_ctx *c, const struct ynode *v, const char *dir)
{
    struct stat st;
    if (dir[0] != '/') {
        weir__cfg_err(c, v, "expected an absolute directory path, got '%s'", dir);
        return false;
    }
    if (strlen(dir) > 3000) {
        weir__cfg_err(c, v, "a spill directory path may be at most 3000 bytes long");
        return false;
    }
    if (stat(dir, &st) != 0) {
        weir__cfg_err(c, v, "cannot use '%s' as a directory: %s", dir, strerror(errno));
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        weir__cfg_err(c, v, "'%s' is not a directory", dir);
        return false;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        weir__cfg_err(c, v, "cannot create files in '%s': %s", dir, strerror(errno));
        return false;
    }
    return true;
}

#define BUF(f) WEIR__CFG_AT(struct weir_cfg_buffering, f)

static const struct weir__cfg_key buffering_keys[] = {
    WEIR__CFG_SIZE("memory", BUF(memory), 4096, UINT64_C(1) << 30, UINT64_C(1) << 20),
    {"spill", WEIR__CFG_T_STRING, 0, BUF(spill), .what = "a directory path", .sdef = NULL,
     .valid = spill_dir_ok},
    WEIR__CFG_SIZE("max", BUF(max), 0, UINT64_C(1) << 50, UINT64_C(1) << 30),
};

static const struct weir__cfg_section buffering_section = WEIR__CFG_TABLE(
    "a mapping of response buffering settings (memory, spill, max)", buffering_keys, NULL);

static void buffering_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                            const struct ynode *v)
{
    struct weir_cfg_buffering *b = &((struct weir_cfg_route *)f->obj)->buffer_responses;
    b->enabled = true;
    weir__cfg_defaults(&buffering_section, b);
    weir__cfg_walk(c, v, &buffering_section, b);
}

#define RT(f) WEIR__CFG_AT(struct weir_cfg_route, f)

/* grpc_web: gRPC goes to the upstream over HTTP/2, so its protocol must allow it. */
static void grpc_web_check(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    const struct weir_cfg_route *r = f->obj;
    const struct ynode *v = weir__cfg_value(f, "grpc_web");
    if (v != NULL && r->grpc_web && r->upstream != NULL &&
        r->upstream->protocol == WEIR_PEER_HTTP1) {
        size_t old = weir__cfg_path_key(c, "grpc_web");
        weir__cfg_err(c, v,
                      "grpc_web sends gRPC, which needs HTTP/2: set upstreams.%s.protocol to h2, "
                      "h2c or auto",
                      r->upstream->name);
        weir__cfg_path_pop(c, old);
    }
}

static const struct weir__cfg_key route_keys[] = {
    WEIR__CFG_STRING("name", RT(name), "a name", ""),
    WEIR__CFG_SECTION("match", WEIR__CFG_SELF(struct weir_cfg_route), &match_section),
    WEIR__CFG_CUSTOM("upstream", WEIR__CFG_REQUIRED, route_upstream),
    WEIR__CFG_SECTION("request_headers", RT(request_headers), &headers_section),
    WEIR__CFG_SECTION("response_headers", RT(response_headers), &headers_section),
    WEIR__CFG_BOOL("retry_idempotent", RT(retry_idempotent), false),
    WEIR__CFG_PERCENT("retry_budget", RT(retry_budget_percent), 0, 100, 20),
    WEIR__CFG_BOOL("ignore_client_abort", RT(ignore_client_abort), false),
    {"buffer_responses", WEIR__CFG_T_CUSTOM, 0, .parse = buffering_value,
     .sub = &buffering_section},
    {"upstream_tls", WEIR__CFG_T_CUSTOM, WEIR__CFG_VALUE | WEIR__CFG_LATE,
     .parse = weir__cfg_route_tls_value, .sub = &weir__cfg_route_tls},
    {"grpc_web", WEIR__CFG_T_BOOL, WEIR__CFG_LATE, RT(grpc_web), .def = false,
     .check = grpc_web_check},
    {"cache", WEIR__CFG_T_CUSTOM, WEIR__CFG_VALUE, .parse = weir__cfg_route_cache_value,
     .sub = &weir__cfg_route_cache},
};

const struct weir__cfg_section weir__cfg_route =
    WEIR__CFG_TABLE("a route (a mapping with upstream and optional match)", route_keys, NULL);

static void route_item(struct weir__cfg_ctx *c, const struct ynode *m, struct weir_cfg_route *r)
{
    weir__cfg_defaults(&weir__cfg_route, r);
    if (weir__ynode_is_null(m)) {
        weir__cfg_err(c, m,
                      "expected a route (a mapping with upstream and optional match), got nothing");
        return;
    }
    weir__cfg_walk(c, m, &weir__cfg_route, r);
}

void weir__cfg_routes(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                      const struct ynode *v)
{
    struct weir_config *cfg = f->obj;
    const struct ynode *seq = weir__cfg_sequence(c, v, "a sequence of routes");
    if (seq == NULL || seq->n == 0) {
        return;
    }
    struct weir_cfg_route *rs = weir__cfg_keep_array(c, seq->n, sizeof(*rs));
    if (rs == NULL) {
        return;
    }
    size_t i = 0;
    for (const struct ynode *it = seq->first; it != NULL; it = it->next, i++) {
        size_t old = weir__cfg_path_index(c, i);
        route_item(c, it, &rs[i]);
        weir__cfg_path_pop(c, old);
    }
    cfg->routes = rs;
    cfg->nroutes = seq->n;
}
