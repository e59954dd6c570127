/*
 * async_check: a hook that waits without blocking. request_filter stands for a call to an
 * authorization service that takes --delay-ms to answer: it arms a timer on the worker's
 * loop and returns WEIR_HOOK_PENDING. The worker goes on serving other connections; when the
 * timer fires, its callback makes the decision (a path containing "/deny" gets 403, the rest
 * go upstream) and calls weir_session_resume() with what request_filter would have returned.
 *
 * What it shows:
 *   - a struct weir_timer in caller storage, here the per-request ctx in the session arena.
 *     That is safe because the library keeps a suspended session (and its arena) alive until
 *     it is resumed, even when the client hangs up meanwhile, so the callback must always
 *     resume, whatever happens;
 *   - answering from the callback: weir_session_respond_text() then resume with
 *     WEIR_HOOK_DONE;
 *   - how many sessions wait at once: a process-wide count of suspended sessions and its
 *     peak, reported in "X-Suspended-Peak" and at exit. Many requests waiting together on
 *     one thread is the proof that waiting does not block the loop.
 *
 *   async_check --listen 127.0.0.1:8080 --to 127.0.0.1:9001 [--delay-ms 200] [--threads N]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/weir.h>

struct check {
    struct weir_peer backend;
    uint64_t delay_ms;
};

struct check_ctx {
    struct weir_timer timer; /* armed while the session is suspended */
    struct weir_session *s;
    const struct check *check;
};

static atomic_uint suspended_now;
static atomic_uint suspended_peak;

static void *new_ctx(struct weir_session *s, void *data)
{
    struct check_ctx *c = weir_arena_calloc(weir_session_arena(s), sizeof(*c));
    if (c != NULL) {
        c->s = s;
        c->check = data;
    }
    return c;
}

static void note_suspended(void)
{
    unsigned now = atomic_fetch_add(&suspended_now, 1) + 1;
    unsigned peak = atomic_load(&suspended_peak);
    while (now > peak && !atomic_compare_exchange_weak(&suspended_peak, &peak, now)) {
        /* peak was reloaded by the failed exchange */
    }
}

static bool contains(struct weir_iov hay, struct weir_iov needle)
{
    for (size_t i = 0; i + needle.len <= hay.len; i++) {
        if (memcmp(hay.base + i, needle.base, needle.len) == 0) {
            return true;
        }
    }
    return false;
}

/* The "answer" of the slow service. Runs on the session's worker thread. */
static void check_done(struct weir_loop *loop, struct weir_timer *t)
{
    struct check_ctx *c = t->data;
    atomic_fetch_sub(&suspended_now, 1);
    enum weir_hook_result result = WEIR_HOOK_CONTINUE;
    if (contains(weir_req_path(weir_session_req(c->s)), WEIR_IOV_LIT("/deny"))) {
        /* Fails if the client has already gone; the session must be resumed all the same. */
        int rc = weir_session_respond_text(c->s, 403, WEIR_IOV_LIT("Denied by the check\n"));
        result = rc == 0 ? WEIR_HOOK_DONE : WEIR_HOOK_ERROR;
    }
    weir_session_resume(c->s, result);
}

static enum weir_hook_result request_filter(struct weir_session *s, void *ctx)
{
    struct check_ctx *c = ctx;
    if (c == NULL) {
        return WEIR_HOOK_ERROR;
    }
    weir_timer_init(&c->timer, check_done, c);
    if (weir_timer_start(weir_session_loop(s), &c->timer, c->check->delay_ms) != 0) {
        return WEIR_HOOK_ERROR;
    }
    note_suspended(); /* nothing can fail from here on: the timer will resume us */
    return WEIR_HOOK_PENDING;
}

static enum weir_hook_result upstream_peer(struct weir_session *s, void *ctx,
                                           struct weir_peer *peer)
{
    const struct check_ctx *c = ctx;
    if (c == NULL) {
        return WEIR_HOOK_ERROR;
    }
    peer->addr = c->check->backend.addr;
    peer->addrlen = c->check->backend.addrlen;
    memcpy(peer->name, c->check->backend.name, sizeof(peer->name));
    return WEIR_HOOK_CONTINUE;
}

static enum weir_hook_result response_filter(struct weir_session *s, void *ctx,
                                             struct weir_resp *resp)
{
    char peak[16];
    int len = snprintf(peak, sizeof(peak), "%u", atomic_load(&suspended_peak));
    if (len < 0 || (size_t)len >= sizeof(peak)) {
        return WEIR_HOOK_ERROR;
    }
    return weir_headers_set(weir_resp_headers(resp), "X-Suspended-Peak", peak) == 0
               ? WEIR_HOOK_CONTINUE
               : WEIR_HOOK_ERROR;
}

static int parse_uint(const char *text, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || errno != 0 || *end != '\0' || v < min || v > max) {
        return WEIR_EINVAL;
    }
    *out = v;
    return 0;
}

static void usage(FILE *to)
{
    (void)fprintf(to,
                  "Usage: async_check --listen ADDR --to ADDR [--delay-ms MS] [--threads N]\n"
                  "\n"
                  "Holds every request for MS milliseconds (default 200) on a timer, without\n"
                  "blocking the worker, then answers 403 if its path contains '/deny' and proxies\n"
                  "it to --to otherwise. Responses carry 'X-Suspended-Peak: N', the most requests\n"
                  "seen waiting at once.\n");
}

static int run(const char *listen, unsigned threads, struct check *check)
{
    struct weir_server *srv = NULL;
    if (weir_server_new(NULL, &srv) != 0) { /* every default */
        (void)fprintf(stderr, "async_check: out of memory\n");
        return 1;
    }
    static const struct weir_proxy_hooks hooks = {
        .new_ctx = new_ctx,
        .request_filter = request_filter,
        .upstream_peer = upstream_peer,
        .response_filter = response_filter,
    };
    struct weir_service *svc = NULL;
    int rc = weir_server_add_proxy(srv, "async_check", &hooks, check, &svc);
    if (rc == 0) {
        rc = weir_service_add_listener(svc, listen);
    }
    if (rc == 0 && threads != 0) {
        rc = weir_service_set_threads(svc, threads);
    }
    if (rc == 0) {
        rc = weir_server_run(srv);
        (void)fprintf(stderr, "async_check: at most %u requests were suspended at once\n",
                      atomic_load(&suspended_peak));
    } else {
        (void)fprintf(stderr, "async_check: cannot set up: %s\n", weir_strerror(rc));
    }
    weir_server_free(srv);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct check check = {.delay_ms = 200};
    const char *listen = NULL;
    bool have_backend = false;
    unsigned long threads = 0;
    for (int i = 1; i < argc; i += 2) { /* every option but --help takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            (void)fprintf(stderr, "async_check: '%s' needs a value (or is unknown)\n", a);
            return 2;
        }
        bool ok = true;
        unsigned long delay = 0;
        if (strcmp(a, "--listen") == 0) {
            listen = v;
        } else if (strcmp(a, "--to") == 0) {
            ok = have_backend = weir_peer_set_address(&check.backend, v) == 0;
        } else if (strcmp(a, "--delay-ms") == 0) {
            ok = parse_uint(v, 0, 3600000, &delay) == 0;
            check.delay_ms = ok ? delay : check.delay_ms;
        } else if (strcmp(a, "--threads") == 0) {
            ok = parse_uint(v, 1, 256, &threads) == 0;
        } else {
            ok = false;
        }
        if (!ok) {
            (void)fprintf(stderr, "async_check: bad argument '%s %s'\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (listen == NULL || !have_backend) {
        usage(stderr);
        return 2;
    }
    return run(listen, (unsigned)threads, &check);
}
