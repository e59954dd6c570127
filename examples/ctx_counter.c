/*
 * ctx_counter: per-request context next to process-wide counters (Pingora's ctx example).
 *
 * Each request gets a small ctx from new_ctx, allocated in the session's arena, so it costs
 * no malloc and goes away with the request. request_filter fills it in: whether the client
 * is a beta user (an "X-Beta-User" header whose value is not "0") and the request's number
 * among every request served, taken from an atomic counter shared by the worker threads.
 * Beta users may go to their own backend (--beta-to). response_filter reports both facts to
 * the client ("X-Request-Count: <n>", "X-Beta: yes|no"), and the logging hook, which runs
 * exactly once per request however it ended, writes one line per request with weir_log
 * (fine for a demo; weir_log is one write(2) per line, so a busy proxy would rather use the
 * library's buffered access log, server.access_log).
 *
 *   ctx_counter --listen 127.0.0.1:8080 --to 127.0.0.1:9001 [--beta-to 127.0.0.1:9002]
 *               [--threads N]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/weir.h>

struct backends {
    struct weir_peer main;
    struct weir_peer beta;
    bool has_beta;
};

struct counter_ctx {
    const struct backends *be;
    uint64_t number; /* 1 for the first request this process served, ... */
    bool beta;
};

/* Relaxed atomics: the counts only need to be exact, not ordered with anything else. */
static atomic_uint_fast64_t requests_served;
static atomic_uint_fast64_t beta_requests;

static void *new_ctx(struct weir_session *s, void *data)
{
    struct counter_ctx *c = weir_arena_calloc(weir_session_arena(s), sizeof(*c));
    if (c != NULL) {
        c->be = data;
    }
    return c;
}

static bool is_beta(const struct weir_headers *h)
{
    struct weir_iov flag;
    return weir_headers_get(h, "X-Beta-User", &flag) && flag.len > 0 &&
           !weir_iov_eq(flag, WEIR_IOV_LIT("0"));
}

static enum weir_hook_result request_filter(struct weir_session *s, void *ctx)
{
    struct counter_ctx *c = ctx;
    if (c == NULL) {
        return WEIR_HOOK_ERROR; /* the arena was full */
    }
    c->beta = is_beta(weir_req_headers_const(weir_session_req(s)));
    c->number = atomic_fetch_add_explicit(&requests_served, 1, memory_order_relaxed) + 1;
    if (c->beta) {
        atomic_fetch_add_explicit(&beta_requests, 1, memory_order_relaxed);
    }
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result upstream_peer(struct weir_session *s, void *ctx,
                                           struct weir_peer *peer)
{
    const struct counter_ctx *c = ctx;
    if (c == NULL) {
        return WEIR_HOOK_ERROR;
    }
    const struct weir_peer *to = c->beta && c->be->has_beta ? &c->be->beta : &c->be->main;
    peer->addr = to->addr;
    peer->addrlen = to->addrlen;
    memcpy(peer->name, to->name, sizeof(peer->name));
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result response_filter(struct weir_session *s, void *ctx,
                                             struct weir_resp *resp)
{
    const struct counter_ctx *c = ctx;
    if (c == NULL || c->number == 0) {
        return WEIR_HOOK_CONTINUE;
    }
    char n[24];
    int len = snprintf(n, sizeof(n), "%" PRIu64, c->number);
    if (len < 0 || (size_t)len >= sizeof(n)) {
        return WEIR_HOOK_ERROR;
    }
    struct weir_headers *h = weir_resp_headers(resp);
    if (weir_headers_set(h, "X-Request-Count", n) != 0 ||
        weir_headers_set(h, "X-Beta", c->beta ? "yes" : "no") != 0) {
        return WEIR_HOOK_ERROR;
    }
    return WEIR_HOOK_CONTINUE;
}

static int clamp_len(struct weir_iov v)
{
    return v.len > 200 ? 200 : (int)v.len;
}

static void logging(struct weir_session *s, void *ctx, const struct weir_error *err)
{
    const struct counter_ctx *c = ctx;
    struct weir_req *req = weir_session_req(s);
    struct weir_iov method = weir_req_method(req), target = weir_req_target(req);
    weir_log(WEIR_LOG_INFO,
             "ctx_counter: #%" PRIu64 " %.*s %.*s -> %d beta=%s (%" PRIu64 " beta so far) "
             "%" PRIu64 "ms %s",
             c ? c->number : 0, clamp_len(method), method.base, clamp_len(target), target.base,
             weir_session_status(s), c && c->beta ? "yes" : "no",
             (uint64_t)atomic_load_explicit(&beta_requests, memory_order_relaxed),
             weir_session_elapsed_ms(s), err ? weir_error_type_str(err->type) : "ok");
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
        to, "Usage: ctx_counter --listen ADDR --to ADDR [--beta-to ADDR] [--threads N]\n"
            "\n"
            "Proxies to --to (beta users, with an 'X-Beta-User' header not '0', to --beta-to\n"
            "when given), adds 'X-Request-Count: N' and 'X-Beta: yes|no' to each response and\n"
            "logs one line per request to stderr.\n");
}

static int run(const char *listen, unsigned threads, struct backends *be)
{
    struct weir_server *srv = NULL;
    if (weir_server_new(NULL, &srv) != 0) { /* every default; log level info */
        (void)fprintf(stderr, "ctx_counter: out of memory\n");
        return 1;
    }
    static const struct weir_proxy_hooks hooks = {
        .new_ctx = new_ctx,
        .request_filter = request_filter,
        .upstream_peer = upstream_peer,
        .response_filter = response_filter,
        .logging = logging,
    };
    struct weir_service *svc = NULL;
    int rc = weir_server_add_proxy(srv, "ctx_counter", &hooks, be, &svc);
    if (rc == 0) {
        rc = weir_service_add_listener(svc, listen);
    }
    if (rc == 0 && threads != 0) {
        rc = weir_service_set_threads(svc, threads);
    }
    if (rc == 0) {
        rc = weir_server_run(srv);
    } else {
        (void)fprintf(stderr, "ctx_counter: cannot set up: %s\n", weir_strerror(rc));
    }
    weir_server_free(srv);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct backends be;
    const char *listen = NULL;
    bool have_main = false;
    unsigned threads = 0;
    for (int i = 1; i < argc; i += 2) { /* every option but --help takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            (void)fprintf(stderr, "ctx_counter: '%s' needs a value (or is unknown)\n", a);
            return 2;
        }
        bool ok = true;
        if (strcmp(a, "--listen") == 0) {
            listen = v;
        } else if (strcmp(a, "--to") == 0) {
            ok = have_main = weir_peer_set_address(&be.main, v) == 0;
        } else if (strcmp(a, "--beta-to") == 0) {
            ok = be.has_beta = weir_peer_set_address(&be.beta, v) == 0;
        } else if (strcmp(a, "--threads") == 0) {
            ok = parse_threads(v, &threads) == 0;
        } else {
            ok = false;
        }
        if (!ok) {
            (void)fprintf(stderr, "ctx_counter: bad argument '%s %s'\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (listen == NULL || !have_main) {
        usage(stderr);
        return 2;
    }
    return run(listen, threads, &be);
}
