/*
 * cache_hooks: a caching proxy programmed through the cache hooks, with no configuration file.
 *
 * One cache zone (weir_cache_new, --capacity bytes) in front of one origin. The hooks decide,
 * request by request, what the cache does:
 *   - request_cache_filter: only paths under /static/ and /api/ are cached
 *     (weir_session_cache_enable with the policy of weir_cache_policy_default); every other
 *     path goes to the origin as through a plain proxy, and its response has no Cache-Status;
 *   - cache_key: an /api/ request is keyed by its "X-Tenant" header and its path and query, so
 *     two tenants never share an object; a /static/ request leaves *key empty and keeps the
 *     policy's default key (method, host, path, query);
 *   - response_cache_filter: a /static/ response that is not cacheable only because the origin
 *     gave it no freshness lifetime (no max-age, s-maxage or Expires) is stored for an hour;
 *     a response with "X-No-Cache: 1" is never stored, whatever its path;
 *   - cache_hit_filter: a request with "X-Refresh: 1" treats the stored object as a miss: it
 *     is fetched again and the new response replaces it;
 *   - cache_miss: counts the requests that went to the origin for the cache (misses and
 *     passes), background fetches among them;
 *   - logging: counts client requests, leaving out the background sessions weir runs itself
 *     (weir_session_is_background).
 * The counts go to stderr at exit: "cache_hooks: R requests (C through the cache), M misses
 * (B in background sessions)".
 *
 *   cache_hooks --listen 127.0.0.1:8080 --upstream 127.0.0.1:9001 [--capacity 64m]
 *               [--threads N]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/weir.h>

#define STATIC_TTL_S     3600u         /* for /static/ responses without freshness */
#define DEFAULT_CAPACITY (64ull << 20) /* bytes */

struct app {
    struct weir_peer upstream;
    struct weir_cache *zone;
    struct weir_cache_policy policy; /* copied by each weir_session_cache_enable */
};

enum kind { KIND_OTHER = 0, KIND_STATIC, KIND_API };

struct cache_ctx {
    const struct app *app;
    enum kind kind;
    bool cached; /* weir_session_cache_enable succeeded */
};

/* Relaxed atomics: the counts only need to be exact, not ordered with anything else. */
static atomic_uint_fast64_t requests;
static atomic_uint_fast64_t cached_requests;
static atomic_uint_fast64_t misses;
static atomic_uint_fast64_t background_misses;

static void *new_ctx(struct weir_session *s, void *data)
{
    struct cache_ctx *c = weir_arena_calloc(weir_session_arena(s), sizeof(*c));
    if (c != NULL) {
        c->app = data;
    }
    return c;
}

static enum kind classify(struct weir_iov path)
{
    if (weir_iov_has_prefix(path, WEIR_IOV_LIT("/static/"))) {
        return KIND_STATIC;
    }
    if (weir_iov_has_prefix(path, WEIR_IOV_LIT("/api/"))) {
        return KIND_API;
    }
    return KIND_OTHER;
}

/* Whether h has field name with exactly the value "1". */
static bool flag_set(const struct weir_headers *h, const char *name)
{
    struct weir_iov v;
    return weir_headers_get(h, name, &v) && weir_iov_eq(v, WEIR_IOV_LIT("1"));
}

static enum weir_hook_result request_cache_filter(struct weir_session *s, void *ctx)
{
    struct cache_ctx *c = ctx;
    if (c == NULL) {
        return WEIR_HOOK_ERROR; /* the arena was full */
    }
    c->kind = classify(weir_req_path(weir_session_req(s)));
    if (c->kind == KIND_OTHER) {
        return WEIR_HOOK_CONTINUE; /* not cached: no lookup, no Cache-Status */
    }
    if (weir_session_cache_enable(s, c->app->zone, &c->app->policy) != 0) {
        return WEIR_HOOK_ERROR;
    }
    c->cached = true;
    return WEIR_HOOK_CONTINUE;
}

/*
 * /api/ requests: "api <n>:<tenant> <path>[?<query>]", n the tenant's length, so no two
 * (tenant, target) pairs make the same key, and none of them reads like a default key (which
 * starts with the method). No X-Tenant is the empty tenant, a tenant of its own. Everything
 * else: *key left empty, the default key.
 */
static enum weir_hook_result cache_key(struct weir_session *s, void *ctx, struct weir_iov *key)
{
    const struct cache_ctx *c = ctx;
    if (c == NULL || c->kind != KIND_API) {
        return WEIR_HOOK_CONTINUE;
    }
    const struct weir_req *req = weir_session_req(s);
    struct weir_iov tenant;
    if (!weir_headers_get(weir_req_headers_const(req), "X-Tenant", &tenant)) {
        tenant = (struct weir_iov){"", 0};
    }
    struct weir_iov path = weir_req_path(req), query = weir_req_query(req);
    char prefix[32];
    int n = snprintf(prefix, sizeof(prefix), "api %zu:", tenant.len);
    if (n < 0 || (size_t)n >= sizeof(prefix)) {
        return WEIR_HOOK_ERROR;
    }
    size_t len = (size_t)n + tenant.len + 1 + path.len + (query.len > 0 ? 1 + query.len : 0);
    char *b = weir_arena_alloc(weir_session_arena(s), len);
    if (b == NULL) {
        return WEIR_HOOK_ERROR;
    }
    size_t at = 0;
    memcpy(b + at, prefix, (size_t)n);
    at += (size_t)n;
    memcpy(b + at, tenant.base, tenant.len);
    at += tenant.len;
    b[at++] = ' ';
    memcpy(b + at, path.base, path.len);
    at += path.len;
    if (query.len > 0) {
        b[at++] = '?';
        memcpy(b + at, query.base, query.len);
        at += query.len;
    }
    *key = (struct weir_iov){b, at};
    return WEIR_HOOK_CONTINUE;
}

/*
 * "X-Refresh: 1" fetches the object again (any client may ask here; a real proxy would
 * trust only some). Otherwise a fresh object is served and a stale one fetched: SERVE would
 * serve a stale object as if fresh, since the hook's answer overrides freshness.
 */
static enum weir_cache_hit_action cache_hit_filter(struct weir_session *s, void *ctx,
                                                   const struct weir_resp *stored, bool fresh)
{
    (void)ctx;
    (void)stored;
    if (flag_set(weir_req_headers_const(weir_session_req(s)), "X-Refresh")) {
        return WEIR_CACHE_FETCH;
    }
    return fresh ? WEIR_CACHE_SERVE : WEIR_CACHE_FETCH;
}

static void cache_miss(struct weir_session *s, void *ctx)
{
    (void)ctx;
    atomic_fetch_add_explicit(&misses, 1, memory_order_relaxed);
    if (weir_session_is_background(s)) {
        atomic_fetch_add_explicit(&background_misses, 1, memory_order_relaxed);
    }
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/*
 * Whether a Cache-Control value has a max-age or s-maxage directive. Directives are split at
 * every comma, even inside a quoted string: at worst a quoted "max-age" reads as freshness,
 * and the response is then left as the cache judged it.
 */
static bool cc_has_lifetime(struct weir_iov v)
{
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (is_space(v.base[i]) || v.base[i] == ',')) {
            i++;
        }
        size_t start = i;
        while (i < v.len && v.base[i] != '=' && v.base[i] != ',' && !is_space(v.base[i])) {
            i++;
        }
        struct weir_iov name = {v.base + start, i - start};
        if (weir_iov_ieq_cstr(name, "max-age") || weir_iov_ieq_cstr(name, "s-maxage")) {
            return true;
        }
        while (i < v.len && v.base[i] != ',') {
            i++;
        }
    }
    return false;
}

/* Whether the origin gave the response a freshness lifetime (RFC 9111 4.2.1). */
static bool has_freshness(const struct weir_headers *h)
{
    if (weir_headers_get(h, "Expires", NULL)) {
        return true;
    }
    size_t n = weir_headers_count(h);
    for (size_t i = 0; i < n; i++) {
        const struct weir_header *f = weir_headers_at(h, i);
        if (f != NULL && weir_iov_ieq_cstr(f->name, "Cache-Control") && cc_has_lifetime(f->value)) {
            return true;
        }
    }
    return false;
}

/*
 * *c comes judged by RFC 9111 with the policy's default_ttl_s (0 here). A response that is
 * storable but has no lifetime comes as not cacheable with the reason "stale" and ttl 0; so
 * does one whose lifetime (max-age=0, a past Expires) is over: has_freshness tells them apart.
 * Any other reason (no-store, private, no-cache, Set-Cookie, Vary, a status not cached by
 * default) is kept.
 */
static void response_cache_filter(struct weir_session *s, void *ctx, const struct weir_resp *resp,
                                  struct weir_cacheability *c)
{
    (void)s;
    const struct cache_ctx *cx = ctx;
    const struct weir_headers *h = weir_resp_headers_const(resp);
    if (flag_set(h, "X-No-Cache")) {
        c->cacheable = false;
        c->reason = "x-no-cache"; /* shown as Cache-Status detail */
        return;
    }
    if (cx != NULL && cx->kind == KIND_STATIC && !c->cacheable && c->reason != NULL &&
        strcmp(c->reason, "stale") == 0 && !has_freshness(h)) {
        c->cacheable = true;
        c->ttl_s = STATIC_TTL_S;
        c->reason = NULL;
    }
}

static enum weir_hook_result upstream_peer(struct weir_session *s, void *ctx,
                                           struct weir_peer *peer)
{
    (void)s;
    const struct cache_ctx *c = ctx;
    if (c == NULL) {
        return WEIR_HOOK_ERROR;
    }
    const struct weir_peer *to = &c->app->upstream;
    peer->addr = to->addr;
    peer->addrlen = to->addrlen;
    memcpy(peer->name, to->name, sizeof(peer->name));
    return WEIR_HOOK_CONTINUE;
}

/* Once per request however it ended; a background session is no client's request. */
static void logging(struct weir_session *s, void *ctx, const struct weir_error *err)
{
    (void)err;
    const struct cache_ctx *c = ctx;
    if (weir_session_is_background(s)) {
        return;
    }
    atomic_fetch_add_explicit(&requests, 1, memory_order_relaxed);
    if (c != NULL && c->cached) {
        atomic_fetch_add_explicit(&cached_requests, 1, memory_order_relaxed);
    }
}

static int parse_threads(const char *text, unsigned *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || errno != 0 || *end != '\0' || v < 1 || v > 256) {
        return WEIR_EINVAL;
    }
    *out = (unsigned)v;
    return 0;
}

static int parse_capacity(const char *text, uint64_t *out)
{
    uint64_t v = 0;
    if (weir_config_parse_size(text, &v) != 0 || v == 0) {
        return WEIR_EINVAL;
    }
    *out = v;
    return 0;
}

static void usage(FILE *to)
{
    (void)fprintf(
        to, "Usage: cache_hooks --listen ADDR --upstream ADDR [--capacity SIZE] [--threads N]\n"
            "\n"
            "Proxies to --upstream through one cache zone of SIZE bytes (k, m, g: powers of\n"
            "1024; default 64m). Caches /static/ (an hour when the origin gives no freshness)\n"
            "and /api/ (one object per 'X-Tenant' value); other paths are not cached. A\n"
            "response with 'X-No-Cache: 1' is never stored; a request with 'X-Refresh: 1'\n"
            "fetches again. Prints the requests and misses counted to stderr at exit.\n");
}

static int run(const char *listen, unsigned threads, uint64_t capacity, struct app *app)
{
    const struct weir_cache_opts zopts = {.capacity = capacity};
    int rc = weir_cache_new(&zopts, &app->zone);
    if (rc != 0) {
        (void)fprintf(stderr, "cache_hooks: cannot make the cache zone: %s\n", weir_strerror(rc));
        return 1;
    }
    weir_cache_policy_default(&app->policy);
    struct weir_server *srv = NULL;
    if (weir_server_new(NULL, &srv) != 0) { /* every default; log level info */
        (void)fprintf(stderr, "cache_hooks: out of memory\n");
        weir_cache_free(app->zone);
        return 1;
    }
    static const struct weir_proxy_hooks hooks = {
        .new_ctx = new_ctx,
        .request_cache_filter = request_cache_filter,
        .cache_key = cache_key,
        .cache_hit_filter = cache_hit_filter,
        .cache_miss = cache_miss,
        .upstream_peer = upstream_peer,
        .response_cache_filter = response_cache_filter,
        .logging = logging,
    };
    struct weir_service *svc = NULL;
    rc = weir_server_add_proxy(srv, "cache_hooks", &hooks, app, &svc);
    if (rc == 0) {
        rc = weir_service_add_listener(svc, listen);
    }
    if (rc == 0 && threads != 0) {
        rc = weir_service_set_threads(svc, threads);
    }
    if (rc == 0) {
        rc = weir_server_run(srv);
    } else {
        (void)fprintf(stderr, "cache_hooks: cannot set up: %s\n", weir_strerror(rc));
    }
    weir_server_free(srv); /* every request has ended: the zone is no one's any more */
    if (rc == 0) {
        struct weir_cache_stats st;
        weir_cache_stats(app->zone, &st);
        (void)fprintf(stderr,
                      "cache_hooks: %" PRIu64 " requests (%" PRIu64 " through the cache), %" PRIu64
                      " misses (%" PRIu64 " in background sessions); %" PRIu64 " objects stored\n",
                      (uint64_t)atomic_load_explicit(&requests, memory_order_relaxed),
                      (uint64_t)atomic_load_explicit(&cached_requests, memory_order_relaxed),
                      (uint64_t)atomic_load_explicit(&misses, memory_order_relaxed),
                      (uint64_t)atomic_load_explicit(&background_misses, memory_order_relaxed),
                      st.objects);
    }
    weir_cache_free(app->zone);
    app->zone = NULL;
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct app app;
    const char *listen = NULL;
    bool have_upstream = false;
    unsigned threads = 0;
    uint64_t capacity = DEFAULT_CAPACITY;
    for (int i = 1; i < argc; i += 2) { /* every option but --help takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            (void)fprintf(stderr, "cache_hooks: '%s' needs a value (or is unknown)\n", a);
            return 2;
        }
        bool ok = true;
        if (strcmp(a, "--listen") == 0) {
            listen = v;
        } else if (strcmp(a, "--upstream") == 0) {
            ok = have_upstream = weir_peer_set_address(&app.upstream, v) == 0;
        } else if (strcmp(a, "--capacity") == 0) {
            ok = parse_capacity(v, &capacity) == 0;
        } else if (strcmp(a, "--threads") == 0) {
            ok = parse_threads(v, &threads) == 0;
        } else {
            ok = false;
        }
        if (!ok) {
            (void)fprintf(stderr, "cache_hooks: bad argument '%s %s'\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (listen == NULL || !have_upstream) {
        usage(stderr);
        return 2;
    }
    return run(listen, threads, capacity, &app);
}
