/*
 * mtls_gate: decisions from the client's certificate. The TLS listeners (certificates,
 * client_auth) come from a weir YAML file; every request must arrive over TLS, paths under
 * /admin need a verified client certificate whose subject is CN=<admin-cn>, and the origin
 * learns who the client is from X-Client-Identity (its verified subject and SANs) and
 * X-Client-TLS (protocol and cipher).
 *
 * What it shows:
 *   - weir_session_tls(): the connection's protocol, cipher and client certificate, with
 *     client_verified saying whether the identity can be trusted (client_auth optional lets
 *     unverified clients in);
 *   - listeners taken from a loaded config (weir_config_load_file,
 *     weir_service_add_listener_cfg), so TLS is set up by the same YAML as the weir binary's.
 *
 *   mtls_gate --config tls.yaml --to 127.0.0.1:9001 [--admin-cn admin]
 */
#include <stdio.h>
#include <string.h>

#include <weir/weir.h>

struct gate {
    struct weir_peer origin;
    char admin_subject[160]; /* "CN=admin" */
};

static enum weir_hook_result answer(struct weir_session *s, int status, struct weir_iov body)
{
    return weir_session_respond_text(s, status, body) == 0 ? WEIR_HOOK_DONE : WEIR_HOOK_ERROR;
}

static bool under_admin(struct weir_iov path)
{
    struct weir_iov admin = WEIR_IOV_LIT("/admin");
    return weir_iov_has_prefix(path, admin) &&
           (path.len == admin.len || path.base[admin.len] == '/' || path.base[admin.len] == '?');
}

static void *new_ctx(struct weir_session *s, void *data)
{
    (void)s;
    return data; /* the gate itself: nothing per request */
}

static enum weir_hook_result request_filter(struct weir_session *s, void *ctx)
{
    const struct gate *g = ctx;
    const struct weir_tls_info *tls = weir_session_tls(s);
    if (tls == NULL) {
        return answer(s, 403, WEIR_IOV_LIT("Forbidden: TLS is required\n"));
    }
    if (under_admin(weir_req_path(weir_session_req(s))) &&
        (!tls->client_verified || strcmp(tls->subject, g->admin_subject) != 0)) {
        return answer(s, 403, WEIR_IOV_LIT("Forbidden: /admin needs the admin's certificate\n"));
    }
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result upstream_peer(struct weir_session *s, void *ctx,
                                           struct weir_peer *peer)
{
    const struct gate *g = ctx;
    (void)s;
    *peer = g->origin;
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result upstream_request_filter(struct weir_session *s, void *ctx,
                                                     struct weir_req *upstream_req)
{
    (void)ctx;
    const struct weir_tls_info *tls = weir_session_tls(s);
    struct weir_headers *h = weir_req_headers(upstream_req);
    /* set, not add: whatever the client sent under these names is replaced */
    weir_headers_remove(h, "X-Client-Identity");
    char line[128];
    (void)snprintf(line, sizeof(line), "%s %s", tls->protocol, tls->cipher);
    if (weir_headers_set(h, "X-Client-TLS", line) != 0) {
        return WEIR_HOOK_ERROR;
    }
    if (!tls->client_verified) {
        return WEIR_HOOK_CONTINUE;
    }
    /* The strings live with the connection; a copy in the arena is what a header value
       longer than a stack buffer needs. */
    struct weir_arena *a = weir_session_arena(s);
    size_t n = strlen(tls->subject) + strlen(tls->sans) + 3;
    char *v = weir_arena_alloc(a, n);
    if (v == NULL) {
        return WEIR_HOOK_ERROR;
    }
    (void)snprintf(v, n, "%s%s%s", tls->subject, tls->sans[0] ? "; " : "", tls->sans);
    return weir_headers_set(h, "X-Client-Identity", v) == 0 ? WEIR_HOOK_CONTINUE : WEIR_HOOK_ERROR;
}

static void usage(FILE *to)
{
    (void)fprintf(to, "Usage: mtls_gate --config FILE --to ADDR [--admin-cn NAME]\n");
}

static int run(struct weir_config *cfg, struct gate *g)
{
    const struct weir_config *view = cfg;
    struct weir_server *srv = NULL;
    if (weir_server_new(cfg, &srv) != 0) {
        (void)fprintf(stderr, "mtls_gate: out of memory\n");
        return 1;
    }
    static const struct weir_proxy_hooks hooks = {
        .new_ctx = new_ctx,
        .request_filter = request_filter,
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    struct weir_service *svc = NULL;
    int rc = weir_server_add_proxy(srv, "mtls_gate", &hooks, g, &svc);
    for (size_t i = 0; rc == 0 && i < view->nlisteners; i++) {
        rc = weir_service_add_listener_cfg(svc, &view->listeners[i]);
    }
    if (rc == 0) {
        rc = weir_server_run(srv);
    } else {
        (void)fprintf(stderr, "mtls_gate: cannot set up: %s\n", weir_strerror(rc));
    }
    weir_server_free(srv);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct gate g;
    const char *config = NULL, *to = NULL, *admin = "admin";
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            (void)fprintf(stderr, "mtls_gate: '%s' needs a value (or is unknown)\n", a);
            return 2;
        }
        if (strcmp(a, "--config") == 0) {
            config = v;
        } else if (strcmp(a, "--to") == 0) {
            to = v;
        } else if (strcmp(a, "--admin-cn") == 0) {
            admin = v;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (config == NULL || to == NULL || weir_peer_set_address(&g.origin, to) != 0 ||
        snprintf(g.admin_subject, sizeof(g.admin_subject), "CN=%s", admin) >=
            (int)sizeof(g.admin_subject)) {
        usage(stderr);
        return 2;
    }
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = NULL;
    if (weir_config_load_file(config, &cfg, &errs) != 0) {
        weir_config_errors_print(errs, stderr);
        weir_config_errors_free(errs);
        return 1;
    }
    if (cfg->nlisteners == 0) {
        (void)fprintf(stderr, "mtls_gate: %s has no listeners\n", config);
        weir_config_free(cfg);
        return 1;
    }
    return run(cfg, &g);
}
