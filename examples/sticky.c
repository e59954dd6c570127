/*
 * sticky: consistent hashing on a request header, with active health checks, using weir's
 * load balancer (weir/lb.h) from the public API alone.
 *
 * What it shows:
 *   - a weir_lb built once before the workers start and shared by all of them; upstream_peer
 *     only computes the key and calls weir_session_select_backend, which picks the backend
 *     (and waits, suspended, if every backend were at a max_conns);
 *   - the same key always reaching the same backend (the ring nginx's `hash KEY consistent`
 *     builds for the same list), and only the keys of a backend that fails moving;
 *   - weir_health as a background service: a backend whose health endpoint fails leaves the
 *     ring until it recovers; passive ejection and retries need no code at all.
 *
 *   sticky --listen 127.0.0.1:8080 --to 127.0.0.1:9001,127.0.0.1:9002 [--key-header X-User]
 *          [--health /healthz] [--threads N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/weir.h>

#define MAX_BACKENDS 64

struct sticky {
    struct weir_lb *lb;
    const char *key_header;
};

static enum weir_hook_result upstream_peer(struct weir_session *s, void *ctx,
                                           struct weir_peer *peer)
{
    const struct sticky *st = ctx;
    struct weir_iov key = {"", 0}; /* no header: spread round robin, as nginx does */
    (void)weir_headers_get(weir_req_headers(weir_session_req(s)), st->key_header, &key);
    return weir_session_select_backend(s, st->lb, key, peer);
}

static void *new_ctx(struct weir_session *s, void *data)
{
    return data; /* the shared, read-only struct sticky */
}

static int split_backends(char *list, struct weir_lb_backend *out, size_t *n)
{
    *n = 0;
    for (char *p = list; p != NULL && *p != '\0';) {
        char *comma = strchr(p, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        if (*n == MAX_BACKENDS) {
            return WEIR_EINVAL;
        }
        out[(*n)++] = (struct weir_lb_backend){.address = p, .weight = 1};
        p = comma != NULL ? comma + 1 : NULL;
    }
    return *n > 0 ? 0 : WEIR_EINVAL;
}

static void usage(FILE *to)
{
    (void)fprintf(to,
                  "Usage: sticky --listen ADDR --to ADDR[,ADDR...] [--key-header NAME]\n"
                  "              [--health PATH] [--threads N]\n"
                  "\n"
                  "Sends every request with the same key header (default X-User) to the same\n"
                  "backend (consistent hashing, as nginx's hash ... consistent). With --health,\n"
                  "each backend's PATH is checked every second; a failing backend leaves the\n"
                  "ring until it passes again.\n");
}

int main(int argc, char **argv)
{
    const char *listen = NULL, *health = NULL, *threads = NULL;
    char *to = NULL;
    struct sticky st = {.key_header = "X-User"};
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--listen") == 0) {
            listen = v;
        } else if (strcmp(a, "--to") == 0) {
            to = argv[i + 1];
        } else if (strcmp(a, "--key-header") == 0) {
            st.key_header = v;
        } else if (strcmp(a, "--health") == 0) {
            health = v;
        } else if (strcmp(a, "--threads") == 0) {
            threads = v;
        } else {
            usage(stderr);
            return 2;
        }
    }
    static struct weir_lb_backend backends[MAX_BACKENDS];
    size_t n = 0;
    if (listen == NULL || to == NULL || split_backends(to, backends, &n) != 0) {
        usage(stderr);
        return 2;
    }
    const struct weir_lb_options opt = {.algorithm = WEIR_LB_KETAMA};
    const char *why = NULL;
    int rc = weir_lb_new(&opt, backends, n, &st.lb, &why);
    if (rc != 0) {
        (void)fprintf(stderr, "sticky: %s\n", why && *why ? why : weir_strerror(rc));
        return 2;
    }
    struct weir_health *checker = NULL;
    if (health != NULL) {
        const struct weir_health_check hc = {
            .path = health, .interval_ms = 1000, .timeout_ms = 500, .rise = 1, .fall = 1};
        rc = weir_health_new(&checker);
        if (rc == 0) {
            rc = weir_health_add(checker, st.lb, &hc);
        }
    }
    struct weir_server *srv = NULL;
    if (rc == 0) {
        rc = weir_server_new(NULL, &srv);
    }
    static const struct weir_proxy_hooks hooks = {
        .new_ctx = new_ctx,
        .upstream_peer = upstream_peer,
    };
    struct weir_service *svc = NULL;
    if (rc == 0) {
        rc = weir_server_add_proxy(srv, "sticky", &hooks, &st, &svc);
    }
    if (rc == 0) {
        rc = weir_service_add_listener(svc, listen);
    }
    if (rc == 0 && threads != NULL) {
        rc = weir_service_set_threads(svc, (unsigned)strtoul(threads, NULL, 10));
    }
    if (rc == 0 && checker != NULL) {
        rc = weir_server_add_background(srv, "health", &weir_health_service, checker, NULL);
    }
    if (rc == 0) {
        rc = weir_server_run(srv);
    } else {
        (void)fprintf(stderr, "sticky: cannot set up: %s\n", weir_strerror(rc));
    }
    weir_server_free(srv); /* accepts NULL */
    weir_health_free(checker);
    weir_lb_free(st.lb);
    return rc == 0 ? 0 : 1;
}
