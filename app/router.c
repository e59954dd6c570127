/*
 * The config-driven proxy of the weir binary: pick the first route whose host and path
 * prefix match, apply its request and response header edits, and send the request to its
 * upstream group with round robin (weights honoured). Written on the public API only.
 *
 * Backends are parsed once per configuration snapshot and thread into a thread-local table,
 * so the request path neither parses addresses nor touches shared counters.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

struct route_ctx {
    const struct weir_cfg_route *route;
};

struct group_state {
    struct weir_peer *peers; /* each backend repeated weight times, interleaved */
    size_t npeers;
    size_t next;
};

struct thread_state {
    const struct weir_config *cfg;
    struct group_state *groups; /* one per cfg->upstreams[i] */
    size_t ngroups;
};

static _Thread_local struct thread_state tls;

static void free_groups(void)
{
    for (size_t i = 0; i < tls.ngroups; i++) {
        weir_free(tls.groups[i].peers);
    }
    weir_free(tls.groups);
    tls.groups = NULL;
    tls.ngroups = 0;
    tls.cfg = NULL;
}

/* Smooth interleaving of weights: a backend of weight 3 appears at spread positions. */
static int build_group(struct group_state *g, const struct weir_cfg_upstream *up, size_t salt)
{
    size_t total = 0;
    for (size_t i = 0; i < up->nbackends; i++) {
        total += up->backends[i].weight ? up->backends[i].weight : 1;
    }
    g->peers = weir_calloc(total ? total : 1, sizeof(*g->peers));
    if (g->peers == NULL) {
        return WEIR_ENOMEM;
    }
    long *current = weir_calloc(up->nbackends ? up->nbackends : 1, sizeof(*current));
    if (current == NULL) {
        return WEIR_ENOMEM;
    }
    for (size_t k = 0; k < total; k++) {
        size_t best = 0;
        for (size_t i = 0; i < up->nbackends; i++) {
            current[i] += up->backends[i].weight ? up->backends[i].weight : 1;
            if (current[i] > current[best]) {
                best = i;
            }
        }
        current[best] -= (long)total;
        if (weir_peer_set_address(&g->peers[k], up->backends[best].address) != 0) {
            weir_free(current);
            return WEIR_EINVAL;
        }
    }
    weir_free(current);
    g->npeers = total;
    g->next = salt % (total ? total : 1); /* threads start at different backends */
    return 0;
}

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_destroy(void *unused)
{
    (void)unused;
    free_groups();
}

static bool tls_key_ok;

static void tls_key_init(void)
{
    tls_key_ok = pthread_key_create(&tls_key, tls_destroy) == 0;
}

static int refresh(const struct weir_config *cfg)
{
    static _Thread_local size_t thread_salt;
    if (tls.cfg == cfg) {
        return 0;
    }
    free_groups();
    pthread_once(&tls_once, tls_key_init);
    /* The value only has to be non-NULL for the destructor to run at thread exit. */
    if (!tls_key_ok || pthread_setspecific(tls_key, &tls) != 0) {
        return WEIR_ENOMEM;
    }
    if (thread_salt == 0) {
        thread_salt = (size_t)(uintptr_t)&tls / 64;
    }
    tls.groups = weir_calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*tls.groups));
    if (tls.groups == NULL) {
        return WEIR_ENOMEM;
    }
    tls.ngroups = cfg->nupstreams;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        int rc = build_group(&tls.groups[i], &cfg->upstreams[i], thread_salt);
        if (rc != 0) {
            free_groups();
            return rc;
        }
    }
    tls.cfg = cfg;
    return 0;
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

static void *new_ctx(struct weir_session *s, void *data)
{
    return weir_arena_calloc(weir_session_arena(s), sizeof(struct route_ctx));
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
        if (weir_session_respond_text(s, 404, WEIR_IOV_LIT("No route matches this request\n")) != 0) {
            return WEIR_HOOK_ERROR;
        }
        return WEIR_HOOK_DONE;
    }
    return apply_edits(weir_req_headers(req), &rc->route->request_headers) == 0
               ? WEIR_HOOK_CONTINUE
               : WEIR_HOOK_ERROR;
}

static enum weir_hook_result upstream_peer(struct weir_session *s, void *ctx,
                                           struct weir_peer *peer)
{
    struct route_ctx *rc = ctx;
    const struct weir_config *cfg = weir_session_config(s);
    if (refresh(cfg) != 0) {
        return WEIR_HOOK_ERROR;
    }
    size_t idx = (size_t)(rc->route->upstream - cfg->upstreams);
    struct group_state *g = &tls.groups[idx];
    if (g->npeers == 0) {
        return WEIR_HOOK_ERROR;
    }
    uint32_t ct = peer->connect_timeout_ms, rt = peer->read_timeout_ms, wt = peer->write_timeout_ms;
    *peer = g->peers[g->next];
    peer->connect_timeout_ms = ct;
    peer->read_timeout_ms = rt;
    peer->write_timeout_ms = wt;
    g->next = (g->next + 1) % g->npeers;
    return WEIR_HOOK_CONTINUE;
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
};
