/*
 * load_balancer: round robin over a list of backends, with retry on the next backend when one
 * refuses the connection (Pingora's load_balancer example, on weir's public API).
 *
 * What it shows:
 *   - building the server from weir_config_new_default() and adjusting one field of it;
 *   - data shared read-only by every worker (the parsed backends, handed to new_ctx) next to a
 *     per-thread counter (_Thread_local): each worker owns its own cursor, so choosing a
 *     backend takes no lock and touches no shared cache line;
 *   - fail_to_connect setting err->retry so upstream_peer runs again, and upstream_peer using
 *     weir_session_retries() to step to the next backend instead of the same one.
 *
 *   load_balancer --listen 127.0.0.1:8080 --to 127.0.0.1:9001,127.0.0.1:9002 [--threads N]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/weir.h>

#define MAX_BACKENDS 64

struct lb {
    struct weir_peer backends[MAX_BACKENDS]; /* parsed once; read-only once workers start */
    size_t n;
};

struct lb_ctx {
    const struct lb *lb;
    size_t first; /* the backend round robin chose; retry k goes to first + k */
};

/* Each worker thread's own cursor. Threads start at 0, so a few requests on several threads
 * may hit the same backend; over many requests each thread spreads evenly on its own. */
static _Thread_local size_t next_backend;

static void *new_ctx(struct weir_session *s, void *data)
{
    struct lb_ctx *c = weir_arena_calloc(weir_session_arena(s), sizeof(*c));
    if (c != NULL) {
        c->lb = data;
    }
    return c;
}

/* Copies where to connect, keeping the timeouts the library preset in *dst. */
static void use_backend(struct weir_peer *dst, const struct weir_peer *src)
{
    dst->addr = src->addr;
    dst->addrlen = src->addrlen;
    memcpy(dst->name, src->name, sizeof(dst->name));
}

static enum weir_hook_result upstream_peer(struct weir_session *s, void *ctx,
                                           struct weir_peer *peer)
{
    struct lb_ctx *c = ctx;
    if (c == NULL) {
        return WEIR_HOOK_ERROR;
    }
    unsigned retries = weir_session_retries(s);
    if (retries == 0) {
        c->first = next_backend;
        next_backend = (next_backend + 1) % c->lb->n;
    }
    use_backend(peer, &c->lb->backends[(c->first + retries) % c->lb->n]);
    return WEIR_HOOK_CONTINUE;
}

static void fail_to_connect(struct weir_session *s, void *ctx, const struct weir_peer *peer,
                            struct weir_error *err)
{
    const struct lb_ctx *c = ctx;
    /* Try every backend once per request, then give up (the client gets 502). */
    err->retry = c != NULL && weir_session_retries(s) + 1 < c->lb->n;
}

static int parse_backends(struct lb *lb, const char *list)
{
    for (const char *p = list; *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char one[128];
        if (len == 0 || len >= sizeof(one) || lb->n == MAX_BACKENDS) {
            return WEIR_EINVAL;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        if (weir_peer_set_address(&lb->backends[lb->n], one) != 0) {
            (void)fprintf(stderr, "load_balancer: bad backend address '%s'\n", one);
            return WEIR_EINVAL;
        }
        lb->n++;
        p += len + (comma ? 1 : 0);
    }
    return lb->n > 0 ? 0 : WEIR_EINVAL;
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
    (void)fprintf(to,
                  "Usage: load_balancer --listen ADDR --to ADDR[,ADDR...] [--threads N]\n"
                  "\n"
                  "Round robin over the backends (ip:port). A backend that refuses the connection\n"
                  "is retried on the next one; each request tries every backend at most once.\n"
                  "  --threads N   worker threads (default: one per CPU); the round robin\n"
                  "                cursor is per thread\n");
}

static int run(const char *listen, unsigned threads, struct lb *lb)
{
    struct weir_config *cfg = NULL;
    if (weir_config_new_default(&cfg) != 0) {
        (void)fprintf(stderr, "load_balancer: out of memory\n");
        return 1;
    }
    /* A dead host should cost a second, not the default five, before the next backend. */
    cfg->server.timeouts.upstream_connect_ms = 1000;
    struct weir_server *srv = NULL;
    if (weir_server_new(cfg, &srv) != 0) { /* takes cfg, even on failure */
        (void)fprintf(stderr, "load_balancer: out of memory\n");
        return 1;
    }
    static const struct weir_proxy_hooks hooks = {
        .new_ctx = new_ctx,
        .upstream_peer = upstream_peer,
        .fail_to_connect = fail_to_connect,
    };
    struct weir_service *svc = NULL;
    int rc = weir_server_add_proxy(srv, "load_balancer", &hooks, lb, &svc);
    if (rc == 0) {
        rc = weir_service_add_listener(svc, listen);
    }
    if (rc == 0 && threads != 0) {
        rc = weir_service_set_threads(svc, threads);
    }
    if (rc == 0) {
        rc = weir_server_run(srv);
    } else {
        (void)fprintf(stderr, "load_balancer: cannot set up: %s\n", weir_strerror(rc));
    }
    weir_server_free(srv);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct lb lb; /* static: 64 peers are too big for the stack */
    const char *listen = NULL, *to = NULL;
    unsigned threads = 0;
    for (int i = 1; i < argc; i += 2) { /* every option but --help takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            (void)fprintf(stderr, "load_balancer: '%s' needs a value (or is unknown)\n", a);
            return 2;
        }
        bool ok = true;
        if (strcmp(a, "--listen") == 0) {
            listen = v;
        } else if (strcmp(a, "--to") == 0) {
            to = v;
        } else if (strcmp(a, "--threads") == 0) {
            ok = parse_threads(v, &threads) == 0;
        } else {
            ok = false;
        }
        if (!ok) {
            (void)fprintf(stderr, "load_balancer: bad argument '%s %s'\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (listen == NULL || to == NULL) {
        usage(stderr);
        return 2;
    }
    if (parse_backends(&lb, to) != 0) {
        (void)fprintf(stderr,
                      "load_balancer: --to wants 1 to %d ip:port backends, comma-separated\n",
                      MAX_BACKENDS);
        return 2;
    }
    return run(listen, threads, &lb);
}
