/*
 * The config-driven proxy of the weir binary: pick the first route whose host and path
 * prefix match, apply its request and response header edits, and send the request to its
 * upstream group through that group's load balancer (weir/lb.h). Written on the public API
 * only.
 *
 * The load balancers are built once per configuration, before the workers start, and shared
 * by every worker; selecting needs no lock.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

/*
 * A route's retry budget, in thousandths of a retry: each request adds retry_budget percent of
 * one, each retry on another backend spends one. Starts full: a reserve of BUDGET_RESERVE.
 */
#define BUDGET_RESERVE 10000

struct weir_app_router {
    const struct weir_config *cfg;
    struct weir_lb **lbs; /* one per cfg->upstreams[i] */
    size_t nlbs;
    struct weir_health *health;       /* NULL when no group has a health_check */
    struct weir_discovery *discovery; /* NULL when no backend is given by DNS name */
    _Atomic int64_t *budget;          /* one per cfg->routes[i] */
    struct weir_cache **caches;       /* one per cfg->cache_zones[i] */
    size_t ncaches;
};

struct route_ctx {
    const struct weir_app_router *router;
    const struct weir_cfg_route *route;
};

void weir_app_router_free(struct weir_app_router *r)
{
    if (r == NULL) {
        return;
    }
    weir_discovery_free(r->discovery);
    weir_health_free(r->health);
    weir_free(r->budget);
    for (size_t i = 0; r->caches != NULL && i < r->ncaches; i++) {
        weir_cache_free(r->caches[i]);
    }
    weir_free(r->caches);
    for (size_t i = 0; r->lbs != NULL && i < r->nlbs; i++) {
        weir_lb_free(r->lbs[i]);
    }
    weir_free(r->lbs);
    weir_free(r);
}

/* The group's TLS settings onto the peer (names are checked to fit when loaded). */
static void set_peer_tls(struct weir_peer *peer, const struct weir_cfg_upstream_tls *t)
{
    peer->tls = true;
    peer->tls_no_verify = !t->verify;
    peer->tls_client = t->client;
    (void)snprintf(peer->sni, sizeof(peer->sni), "%s", t->sni != NULL ? t->sni : "");
    (void)snprintf(peer->verify_name, sizeof(peer->verify_name), "%s",
                   t->verify_name != NULL ? t->verify_name : "");
}

static int add_health_check(struct weir_app_router *r, const struct weir_cfg_upstream *up,
                            struct weir_lb *lb)
{
    const struct weir_cfg_health *h = &up->health;
    if (!h->enabled) {
        return 0;
    }
    if (r->health == NULL) {
        int rc = weir_health_new(&r->health);
        if (rc != 0) {
            return rc;
        }
    }
    struct weir_status_range ranges[16];
    for (size_t i = 0; i < h->nstatus; i++) {
        ranges[i] = (struct weir_status_range){h->status_lo[i], h->status_hi[i]};
    }
    struct weir_health_check hc = {
        .type = h->tcp ? WEIR_HEALTH_TCP : WEIR_HEALTH_HTTP,
        .method = h->method,
        .path = h->path,
        .host = h->host,
        .statuses = h->nstatus ? ranges : NULL,
        .nstatuses = h->nstatus,
        .expect_body = h->expect_body,
        .interval_ms = h->interval_ms,
        .timeout_ms = h->timeout_ms,
        .rise = h->rise,
        .fall = h->fall,
    };
    struct weir_peer tls; /* copied by weir_health_add */
    if (up->tls.enabled) {
        memset(&tls, 0, sizeof(tls));
        set_peer_tls(&tls, &up->tls);
        hc.tls = &tls;
    }
    return weir_health_add(r->health, lb, &hc);
}

/* The discovery service for the whole configuration, made at the first DNS backend. */
static int discovery(struct weir_app_router *r, const struct weir_cfg_resolver *rc,
                     struct weir_discovery **out)
{
    if (r->discovery == NULL) {
        struct weir_resolver_options opt = {
            .servers = rc->servers,
            .nservers = rc->nservers,
            .timeout_ms = rc->timeout_ms,
            .min_ttl_ms = rc->min_ttl_ms,
            .max_ttl_ms = rc->max_ttl_ms,
            .retry_ms = rc->retry_ms,
        };
        const char *why = NULL;
        if (weir_discovery_new(&opt, &r->discovery, &why) != 0) {
            weir_log(WEIR_LOG_ERROR, "resolver: %s", why && *why ? why : "out of memory");
            return WEIR_EINVAL;
        }
    }
    *out = r->discovery;
    return 0;
}

/* Hands a group with DNS backends to discovery: every backend, static ones included. */
static int add_discovery(struct weir_app_router *r, const struct weir_config *cfg,
                         const struct weir_cfg_upstream *up, struct weir_lb *lb)
{
    struct weir_discovery *d = NULL;
    int rc = discovery(r, &cfg->server.resolver, &d);
    if (rc != 0) {
        return rc;
    }
    struct weir_discovery_target *t = weir_calloc(up->nbackends, sizeof(*t));
    char(*names)[256] = weir_calloc(up->nbackends, sizeof(*names));
    if (t == NULL || names == NULL) {
        weir_free(t);
        weir_free(names);
        return WEIR_ENOMEM;
    }
    for (size_t j = 0; j < up->nbackends; j++) {
        const struct weir_cfg_backend *b = &up->backends[j];
        t[j] = (struct weir_discovery_target){
            WEIR_DISCOVERY_STATIC, b->address, 0, b->weight, b->backup, b->drain, b->max_conns};
        if (b->srv != NULL) {
            t[j].kind = WEIR_DISCOVERY_SRV;
            t[j].name = b->srv;
        } else if (b->dns) {
            /* "name:port": the config checked both; split at the one colon. */
            const char *colon = strrchr(b->address, ':');
            size_t len = colon ? (size_t)(colon - b->address) : 0;
            if (colon == NULL || len >= sizeof(names[j])) {
                rc = WEIR_EINVAL;
                break;
            }
            memcpy(names[j], b->address, len);
            names[j][len] = '\0';
            t[j].kind = WEIR_DISCOVERY_NAME;
            t[j].name = names[j];
            t[j].port = (uint16_t)strtoul(colon + 1, NULL, 10);
        }
    }
    const char *why = NULL;
    if (rc == 0) {
        rc = weir_discovery_add(d, lb, t, up->nbackends, &why);
    }
    if (rc != 0) {
        weir_log(WEIR_LOG_ERROR, "upstream %s: %s", up->name,
                 why && *why ? why : weir_strerror(rc));
    }
    weir_free(t);
    weir_free(names);
    return rc;
}

/* One cache per zone of cache.zones, shared by every worker. */
static int make_caches(struct weir_app_router *r, const struct weir_config *cfg)
{
    // NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers
    r->caches = weir_calloc(cfg->ncache_zones ? cfg->ncache_zones : 1, sizeof(*r->caches));
    if (r->caches == NULL) {
        return WEIR_ENOMEM;
    }
    for (size_t i = 0; i < cfg->ncache_zones; i++) {
        const struct weir_cfg_cache_zone *z = &cfg->cache_zones[i];
        struct weir_cache_opts co = {.capacity = z->capacity, .max_object = z->max_object};
        int rc = weir_cache_new(&co, &r->caches[i]);
        if (rc != 0) {
            weir_log(WEIR_LOG_ERROR, "cache zone %s: %s", z->name, weir_strerror(rc));
            return rc;
        }
        r->ncaches = i + 1;
    }
    return 0;
}

int weir_app_router_new(const struct weir_config *cfg, struct weir_app_router **out)
{
    struct weir_app_router *r = weir_calloc(1, sizeof(*r));
    if (r == NULL) {
        return WEIR_ENOMEM;
    }
    r->cfg = cfg;
    r->budget = weir_calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof(*r->budget));
    if (r->budget == NULL) {
        weir_free(r);
        return WEIR_ENOMEM;
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        atomic_init(&r->budget[i], BUDGET_RESERVE);
    }
    /* An array of pointers: sizeof(*r->lbs) is a pointer's size on purpose. */
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    r->lbs = weir_calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*r->lbs));
    if (r->lbs == NULL) {
        weir_app_router_free(r);
        return WEIR_ENOMEM;
    }
    int crc = make_caches(r, cfg);
    if (crc != 0) {
        weir_app_router_free(r);
        return crc;
    }
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const struct weir_cfg_upstream *up = &cfg->upstreams[i];
        struct weir_lb_backend *specs =
            weir_calloc(up->nbackends ? up->nbackends : 1, sizeof(*specs));
        if (specs == NULL) {
            weir_app_router_free(r);
            return WEIR_ENOMEM;
        }
        size_t nstatic = 0;
        for (size_t j = 0; j < up->nbackends; j++) {
            const struct weir_cfg_backend *b = &up->backends[j];
            if (b->srv == NULL && !b->dns) {
                /* DNS backends join when they resolve (add_discovery). */
                specs[nstatic++] = (struct weir_lb_backend){b->address, b->weight, b->backup,
                                                            b->drain, b->max_conns};
            }
        }
        struct weir_lb_options opt = {
            .algorithm = (enum weir_lb_algorithm)up->balance,
            .fail_open = up->fail_open,
            .max_fails = up->max_fails == 0 ? UINT32_MAX : up->max_fails,
            .eject_ms = up->eject_ms,
            .eject_max_ms = up->eject_max_ms,
            .queue_size = up->queue_size == 0 ? UINT32_MAX : up->queue_size,
            .queue_timeout_ms = up->queue_timeout_ms,
        };
        const char *why = NULL;
        int rc = weir_lb_new(&opt, specs, nstatic, &r->lbs[i], &why);
        weir_free(specs);
        if (rc != 0) {
            weir_log(WEIR_LOG_ERROR, "upstream %s: %s", up->name,
                     why && *why ? why : weir_strerror(rc));
            weir_app_router_free(r);
            return rc;
        }
        r->nlbs = i + 1;
        if (nstatic < up->nbackends) {
            rc = add_discovery(r, cfg, up, r->lbs[i]);
            if (rc != 0) {
                weir_app_router_free(r);
                return rc;
            }
        }
        rc = add_health_check(r, up, r->lbs[i]);
        if (rc != 0) {
            weir_log(WEIR_LOG_ERROR, "upstream %s: health_check: %s", up->name, weir_strerror(rc));
            weir_app_router_free(r);
            return rc;
        }
    }
    *out = r;
    return 0;
}

struct weir_health *weir_app_router_health(const struct weir_app_router *r)
{
    return r->health;
}

struct weir_discovery *weir_app_router_discovery(const struct weir_app_router *r)
{
    return r->discovery;
}

struct weir_cache *weir_app_router_cache(const struct weir_app_router *r, const char *zone)
{
    for (size_t i = 0; i < r->ncaches; i++) {
        if (strcmp(r->cfg->cache_zones[i].name, zone) == 0) {
            return r->caches[i];
        }
    }
    return NULL;
}

/* A route's cache: settings onto the session (cache: under the route). */
static int enable_cache(struct weir_session *s, const struct route_ctx *rc)
{
    const struct weir_cfg_route_cache *c = &rc->route->cache;
    const struct weir_config *cfg = rc->router->cfg;
    struct weir_cache *zone = rc->router->caches[c->zone - cfg->cache_zones];
    struct weir_cache_policy p;
    weir_cache_policy_default(&p);
    p.key = c->key;
    p.default_ttl_s = c->default_ttl_ms / 1000u;
    p.lock_timeout_ms = c->lock_timeout_ms;
    p.stale_while_revalidate_s = c->stale_while_revalidate_ms / 1000u;
    p.stale_if_error_s = c->stale_if_error_ms / 1000u;
    p.on_writer_failure = (enum weir_cache_writer_failure)c->on_writer_failure;
    p.cookies = c->cookies;
    p.authorized = c->authorization;
    p.purge_from = c->purge_from;
    p.npurge_from = c->npurge_from;
    return weir_session_cache_enable(s, zone, &p);
}

/* ---- hash keys ---- */

static struct weir_iov hash_key(struct weir_session *s, const struct weir_cfg_upstream *up)
{
    struct weir_req *req = weir_session_req(s);
    struct weir_iov v = {"", 0};
    switch (up->hash_key) {
    case WEIR_HASH_URI:
        return weir_req_target(req);
    case WEIR_HASH_PATH:
        return weir_req_path(req);
    case WEIR_HASH_CLIENT_IP:
        return weir_session_client_ip(s);
    case WEIR_HASH_HEADER:
        (void)weir_headers_get(weir_req_headers(req), up->hash_key_name, &v);
        return v;
    case WEIR_HASH_COOKIE:
        (void)weir_req_cookie(req, up->hash_key_name, &v);
        return v;
    case WEIR_HASH_ARG:
        (void)weir_req_arg(req, up->hash_key_name, &v);
        return v;
    }
    return v;
}

/* The Host value without port, for matching. */
static struct weir_iov host_name(struct weir_iov host)
{
    if (host.len > 0 && host.base[0] == '[') {
        const char *rb = memchr(host.base, ']', host.len);
        return rb ? (struct weir_iov){host.base, (size_t)(rb - host.base) + 1} : host;
    }
    const char *colon = memchr(host.base, ':', host.len);
    return colon ? (struct weir_iov){host.base, (size_t)(colon - host.base)} : host;
}

static bool host_matches(const struct weir_cfg_route *r, struct weir_iov host)
{
    if (r->nhosts == 0) {
        return true;
    }
    struct weir_iov name = host_name(host);
    for (size_t i = 0; i < r->nhosts; i++) {
        const char *pat = r->hosts[i];
        size_t plen = strlen(pat);
        if (plen > 2 && pat[0] == '*' && pat[1] == '.') {
            /* "*.example.com" matches any name ending in ".example.com". */
            size_t slen = plen - 1;
            if (name.len > slen &&
                weir_iov_ieq((struct weir_iov){name.base + name.len - slen, slen},
                             (struct weir_iov){pat + 1, slen})) {
                return true;
            }
        } else if (weir_iov_ieq_cstr(name, pat)) {
            return true;
        }
    }
    return false;
}

static const struct weir_cfg_route *find_route(const struct weir_config *cfg, struct weir_req *req)
{
    struct weir_iov host = weir_req_host(req);
    struct weir_iov path = weir_req_path(req);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct weir_cfg_route *r = &cfg->routes[i];
        /* "/" is every path, asterisk-form (OPTIONS *) included. */
        bool any_path = r->path_prefix[0] == '/' && r->path_prefix[1] == '\0';
        if (host_matches(r, host) &&
            (any_path || weir_iov_has_prefix(path, weir_iov_cstr(r->path_prefix)))) {
            return r;
        }
    }
    return NULL;
}

static int apply_edits(struct weir_headers *h, const struct weir_cfg_header_edits *edits)
{
    for (size_t i = 0; i < edits->n; i++) {
        const struct weir_cfg_header_edit *e = &edits->v[i];
        int rc = 0;
        switch (e->op) {
        case WEIR_HDR_ADD:
            rc = weir_headers_add(h, e->name, e->value);
            break;
        case WEIR_HDR_SET:
            rc = weir_headers_set(h, e->name, e->value);
            break;
        case WEIR_HDR_REMOVE:
            weir_headers_remove(h, e->name);
            break;
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* ---- retries ---- */

static _Atomic int64_t *route_budget(const struct route_ctx *rc)
{
    return &rc->router->budget[rc->route - rc->router->cfg->routes];
}

static void earn_budget(const struct route_ctx *rc)
{
    int64_t pct = rc->route->retry_budget_percent;
    if (pct == 0 || rc->router == NULL) {
        return;
    }
    _Atomic int64_t *b = route_budget(rc);
    /* A load first: a full budget (the usual case) costs no shared write. */
    if (atomic_load_explicit(b, memory_order_relaxed) < BUDGET_RESERVE) {
        atomic_fetch_add_explicit(b, pct * 10, memory_order_relaxed);
    }
}

static bool spend_budget(const struct route_ctx *rc)
{
    _Atomic int64_t *b = route_budget(rc);
    if (atomic_fetch_sub_explicit(b, 1000, memory_order_relaxed) >= 1000) {
        return true;
    }
    atomic_fetch_add_explicit(b, 1000, memory_order_relaxed); /* not spent after all */
    return false;
}

static bool idempotent(struct weir_iov m)
{
    static const char *const safe[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++) {
        if (weir_iov_eq(m, weir_iov_cstr(safe[i]))) {
            return true;
        }
    }
    return false;
}

static void fail_to_connect(struct weir_session *s, void *ctx, const struct weir_peer *peer,
                            struct weir_error *err)
{
    struct route_ctx *rc = ctx;
    if (err->retry && rc != NULL && rc->route != NULL && !spend_budget(rc)) {
        weir_log(WEIR_LOG_WARN, "route %s: retry budget spent; not retrying", rc->route->name);
        err->retry = false;
    }
}

static void error_while_proxy(struct weir_session *s, void *ctx, const struct weir_peer *peer,
                              struct weir_error *err)
{
    struct route_ctx *rc = ctx;
    if (err->retry || rc == NULL || rc->route == NULL || !rc->route->retry_idempotent ||
        !idempotent(weir_req_method(weir_session_req(s)))) {
        return; /* preset retries (a dead pooled connection) cost nothing: left as they are */
    }
    if (spend_budget(rc)) {
        err->retry = true;
    } else {
        weir_log(WEIR_LOG_WARN, "route %s: retry budget spent; not retrying", rc->route->name);
    }
}

static void *new_ctx(struct weir_session *s, void *data)
{
    struct route_ctx *rc = weir_arena_calloc(weir_session_arena(s), sizeof(*rc));
    if (rc != NULL) {
        rc->router = data;
    }
    return rc;
}

static enum weir_hook_result request_filter(struct weir_session *s, void *ctx)
{
    struct route_ctx *rc = ctx;
    if (rc == NULL) {
        return WEIR_HOOK_ERROR;
    }
    struct weir_req *req = weir_session_req(s);
    rc->route = find_route(weir_session_config(s), req);
    if (rc->route == NULL) {
        if (weir_session_respond_text(s, 404, WEIR_IOV_LIT("No route matches this request\n")) !=
            0) {
            return WEIR_HOOK_ERROR;
        }
        return WEIR_HOOK_DONE;
    }
    earn_budget(rc);
    weir_session_set_ignore_client_abort(s, rc->route->ignore_client_abort);
    if (rc->route->grpc_web) {
        (void)weir_session_set_grpc_web(s); /* false: not a gRPC-Web request, it goes as is */
    }
    if (rc->route->cache.zone != NULL && rc->router->cfg == weir_session_config(s) &&
        enable_cache(s, rc) != 0) {
        return WEIR_HOOK_ERROR;
    }
    if (rc->route->buffer_responses.enabled &&
        weir_session_set_response_buffering(s, &rc->route->buffer_responses) != 0) {
        return WEIR_HOOK_ERROR;
    }
    return apply_edits(weir_req_headers(req), &rc->route->request_headers) == 0 ? WEIR_HOOK_CONTINUE
                                                                                : WEIR_HOOK_ERROR;
}

static enum weir_hook_result upstream_peer(struct weir_session *s, void *ctx,
                                           struct weir_peer *peer)
{
    struct route_ctx *rc = ctx;
    const struct weir_config *cfg = weir_session_config(s);
    if (rc->router == NULL || rc->router->cfg != cfg) {
        return WEIR_HOOK_ERROR; /* a snapshot this router was not built for */
    }
    size_t idx = (size_t)(rc->route->upstream - cfg->upstreams);
    const struct weir_cfg_upstream *up = &cfg->upstreams[idx];
    struct weir_iov key =
        up->balance == WEIR_BALANCE_CONSISTENT_HASH ? hash_key(s, up) : (struct weir_iov){"", 0};
    peer->protocol = (enum weir_peer_protocol)up->protocol;
    if (up->tls.enabled) {
        set_peer_tls(peer, &up->tls);
        if (rc->route->upstream_tls.client != NULL) {
            peer->tls_client = rc->route->upstream_tls.client; /* the route's own identity */
        }
    }
    return weir_session_select_backend(s, rc->router->lbs[idx], key, peer);
}

static enum weir_hook_result response_filter(struct weir_session *s, void *ctx,
                                             struct weir_resp *resp)
{
    struct route_ctx *rc = ctx;
    if (rc == NULL || rc->route == NULL) {
        return WEIR_HOOK_CONTINUE;
    }
    return apply_edits(weir_resp_headers(resp), &rc->route->response_headers) == 0
               ? WEIR_HOOK_CONTINUE
               : WEIR_HOOK_ERROR;
}

const struct weir_proxy_hooks weir_app_router_hooks = {
    .new_ctx = new_ctx,
    .request_filter = request_filter,
    .upstream_peer = upstream_peer,
    .response_filter = response_filter,
    .fail_to_connect = fail_to_connect,
    .error_while_proxy = error_while_proxy,
};
