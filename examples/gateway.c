/*
 * gateway: an API gateway in front of several services. Requests are routed by path prefix
 * (the longest matching prefix wins), must carry "Authorization: Bearer <token>", and reach
 * the services without that credential but with "X-Gateway: weir".
 *
 * What it shows:
 *   - answering in request_filter: weir_session_respond_text() then WEIR_HOOK_DONE, so a
 *     rejected request never opens an upstream connection;
 *   - per-request state (the chosen route) kept in a ctx from the session arena and read
 *     again by upstream_peer;
 *   - editing the head that goes upstream in upstream_request_filter.
 *
 *   gateway --listen 127.0.0.1:8080 --token s3cret \
 *           --route /api=127.0.0.1:9001 --route /static=127.0.0.1:9002 [--threads N]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/weir.h>

#define MAX_ROUTES 32

struct route {
    const char *prefix; /* points into argv */
    size_t prefix_len;
    struct weir_peer peer;
};

struct gateway {
    struct route routes[MAX_ROUTES];
    size_t nroutes;
    struct weir_iov token;
};

struct gw_ctx {
    const struct gateway *gw;
    const struct route *route;
};

static void *new_ctx(struct weir_session *s, void *data)
{
    struct gw_ctx *c = weir_arena_calloc(weir_session_arena(s), sizeof(*c));
    if (c != NULL) {
        c->gw = data;
    }
    return c;
}

/* Compares every byte whatever the first difference, so timing does not leak the token. */
static bool same_secret(struct weir_iov a, struct weir_iov b)
{
    if (a.len != b.len) {
        return false;
    }
    unsigned char diff = 0;
    for (size_t i = 0; i < a.len; i++) {
        diff |= (unsigned char)(a.base[i] ^ b.base[i]);
    }
    return diff == 0;
}

static bool authorized(const struct weir_headers *h, struct weir_iov token)
{
    struct weir_iov auth;
    const struct weir_iov scheme = WEIR_IOV_LIT("Bearer ");
    if (!weir_headers_get(h, "Authorization", &auth) || auth.len < scheme.len ||
        !weir_iov_ieq((struct weir_iov){auth.base, scheme.len}, scheme)) {
        return false;
    }
    return same_secret((struct weir_iov){auth.base + scheme.len, auth.len - scheme.len}, token);
}

/* "/api" matches "/api", "/api/x" and "/api?q", not "/apix": prefixes end at a segment. */
static bool prefix_matches(const struct route *r, struct weir_iov path)
{
    if (!weir_iov_has_prefix(path, (struct weir_iov){r->prefix, r->prefix_len})) {
        return false;
    }
    return path.len == r->prefix_len || r->prefix[r->prefix_len - 1] == '/' ||
           path.base[r->prefix_len] == '/';
}

static const struct route *find_route(const struct gateway *gw, struct weir_iov path)
{
    const struct route *best = NULL;
    for (size_t i = 0; i < gw->nroutes; i++) {
        const struct route *r = &gw->routes[i];
        if (prefix_matches(r, path) && (best == NULL || r->prefix_len > best->prefix_len)) {
            best = r;
        }
    }
    return best;
}

static enum weir_hook_result answer(struct weir_session *s, int status, struct weir_iov body)
{
    return weir_session_respond_text(s, status, body) == 0 ? WEIR_HOOK_DONE : WEIR_HOOK_ERROR;
}

static enum weir_hook_result request_filter(struct weir_session *s, void *ctx)
{
    struct gw_ctx *c = ctx;
    if (c == NULL) {
        return WEIR_HOOK_ERROR;
    }
    struct weir_req *req = weir_session_req(s);
    if (!authorized(weir_req_headers_const(req), c->gw->token)) {
        return answer(s, 403, WEIR_IOV_LIT("Forbidden: a valid bearer token is required\n"));
    }
    c->route = find_route(c->gw, weir_req_path(req));
    if (c->route == NULL) {
        return answer(s, 404, WEIR_IOV_LIT("No route for this path\n"));
    }
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result upstream_peer(struct weir_session *s, void *ctx,
                                           struct weir_peer *peer)
{
    const struct gw_ctx *c = ctx;
    if (c == NULL || c->route == NULL) {
        return WEIR_HOOK_ERROR;
    }
    peer->addr = c->route->peer.addr;
    peer->addrlen = c->route->peer.addrlen;
    memcpy(peer->name, c->route->peer.name, sizeof(peer->name));
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result upstream_request_filter(struct weir_session *s, void *ctx,
                                                     struct weir_req *upstream_req)
{
    struct weir_headers *h = weir_req_headers(upstream_req);
    weir_headers_remove(h, "Authorization"); /* the services never see the credential */
    /* set, not add: a client cannot pass a forged X-Gateway through. */
    return weir_headers_set(h, "X-Gateway", "weir") == 0 ? WEIR_HOOK_CONTINUE : WEIR_HOOK_ERROR;
}

/* "--route /prefix=ip:port". The prefix stays in argv; the address is parsed now. */
static int add_route(struct gateway *gw, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (eq == NULL || eq == spec || spec[0] != '/' || gw->nroutes == MAX_ROUTES) {
        return WEIR_EINVAL;
    }
    struct route *r = &gw->routes[gw->nroutes];
    r->prefix = spec;
    r->prefix_len = (size_t)(eq - spec);
    if (weir_peer_set_address(&r->peer, eq + 1) != 0) {
        return WEIR_EINVAL;
    }
    gw->nroutes++;
    return 0;
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

static void usage(FILE *to)
{
    (void)fprintf(
        to, "Usage: gateway --listen ADDR --token TOKEN --route /PREFIX=ADDR [--route ...]\n"
            "               [--threads N]\n"
            "\n"
            "Routes each request to the backend of the longest matching path prefix (404 if\n"
            "none). Requests without 'Authorization: Bearer TOKEN' get 403. The backend sees\n"
            "no Authorization header and an 'X-Gateway: weir' header.\n");
}

static int run(const char *listen, unsigned threads, struct gateway *gw)
{
    struct weir_server *srv = NULL;
    if (weir_server_new(NULL, &srv) != 0) { /* every default */
        (void)fprintf(stderr, "gateway: out of memory\n");
        return 1;
    }
    static const struct weir_proxy_hooks hooks = {
        .new_ctx = new_ctx,
        .request_filter = request_filter,
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    struct weir_service *svc = NULL;
    int rc = weir_server_add_proxy(srv, "gateway", &hooks, gw, &svc);
    if (rc == 0) {
        rc = weir_service_add_listener(svc, listen);
    }
    if (rc == 0 && threads != 0) {
        rc = weir_service_set_threads(svc, threads);
    }
    if (rc == 0) {
        rc = weir_server_run(srv);
    } else {
        (void)fprintf(stderr, "gateway: cannot set up: %s\n", weir_strerror(rc));
    }
    weir_server_free(srv);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct gateway gw; /* static: 32 routes with their peers are big for a stack */
    const char *listen = NULL, *token = NULL;
    unsigned threads = 0;
    for (int i = 1; i < argc; i += 2) { /* every option but --help takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            (void)fprintf(stderr, "gateway: '%s' needs a value (or is unknown)\n", a);
            return 2;
        }
        bool ok = true;
        if (strcmp(a, "--listen") == 0) {
            listen = v;
        } else if (strcmp(a, "--token") == 0) {
            token = v;
        } else if (strcmp(a, "--route") == 0) {
            ok = add_route(&gw, v) == 0;
        } else if (strcmp(a, "--threads") == 0) {
            ok = parse_threads(v, &threads) == 0;
        } else {
            ok = false;
        }
        if (!ok) {
            (void)fprintf(stderr, "gateway: bad argument '%s %s'\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (listen == NULL || token == NULL || token[0] == '\0' || gw.nroutes == 0) {
        usage(stderr);
        return 2;
    }
    gw.token = weir_iov_cstr(token);
    return run(listen, threads, &gw);
}
