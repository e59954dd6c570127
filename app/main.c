/*
 * The weir binary: runs a proxy from a YAML file (weir -c FILE), checks one (weir -t -c FILE),
 * proxies with no file at all (weir proxy --listen ... --to ...), or, with no arguments,
 * starts a built-in default: a proxy on 127.0.0.1:8080 in front of a demo origin on
 * 127.0.0.1:8081 running in the same process.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"

#define DEMO_LISTEN "127.0.0.1:8080"
#define DEMO_ORIGIN "127.0.0.1:8081"

static void usage(FILE *to)
{
    (void)fprintf(
        to,
        "weir %s - a programmable HTTP proxy\n"
        "\n"
        "Usage:\n"
        "  weir                      start the built-in demo: a proxy on " DEMO_LISTEN "\n"
        "                            in front of a demo origin on " DEMO_ORIGIN "\n"
        "  weir -c FILE              run from the YAML configuration FILE\n"
        "  weir -t -c FILE           check FILE: print every error, exit 0 if valid, 1 if not\n"
        "  weir proxy --listen ADDR --to ADDR[,ADDR...] [options]\n"
        "                            proxy with no configuration file\n"
        "  weir -V, --version        print version and build options\n"
        "  weir -h, --help           print this help\n"
        "\n"
        "Options of 'weir proxy':\n"
        "  --listen ADDR             address to listen on, ip:port (repeatable)\n"
        "  --to ADDR[,ADDR...]       backends, ip:port, balanced round robin; https://ip:port\n"
        "                            speaks TLS to them (the certificate is verified)\n"
        "  --tls-cert FILE --tls-key FILE   TLS on every --listen with this certificate\n"
        "  --upstream-sni NAME       https backends: the name sent and verified (SNI)\n"
        "  --upstream-ca FILE        https backends: the CAs to trust (default: the system's)\n"
        "  --threads N               worker threads (default: one per CPU)\n"
        "  --access-log PATH|stdout|off   access log (default: off)\n"
        "  --access-log-format combined|json   (default: combined)\n"
        "  --work-stealing           one shared listening socket instead of one per thread\n"
        "  --cache SIZE              cache responses (RFC 9111) in memory, up to SIZE (256m)\n"
        "\n"
        "Signals: SIGTERM/SIGQUIT finish in-flight requests and exit, SIGINT exits at once.\n"
        "Configuration reference: docs/CONFIG.md\n",
        weir_version());
}

/* rc is the loader's: WEIR_ECONFIG comes with errs; anything else (out of memory) has none. */
static int print_errors(int rc, struct weir_config_errors *errs)
{
    if (rc != WEIR_ECONFIG || errs == NULL) {
        (void)fprintf(stderr, "weir: cannot load the configuration: %s\n", weir_strerror(rc));
        weir_config_errors_free(errs);
        return 1;
    }
    weir_config_errors_print(errs, stderr);
    size_t n = weir_config_errors_count(errs);
    (void)fprintf(stderr, "weir: configuration has %zu error%s\n", n, n == 1 ? "" : "s");
    weir_config_errors_free(errs);
    return 1;
}

static int run(struct weir_config *cfg, bool demo)
{
    if (cfg->nlisteners == 0) {
        (void)fprintf(stderr, "%s: error: no listeners: add at least one under 'listeners:'\n",
                      cfg->source);
        weir_config_free(cfg);
        return 1;
    }
    struct weir_server *srv = NULL;
    if (weir_server_new(cfg, &srv) != 0) { /* takes cfg, even on failure */
        (void)fprintf(stderr, "weir: out of memory\n");
        return 1;
    }
    const struct weir_config *c = weir_server_config(srv);
    struct weir_app_router *router = NULL;
    int rc = weir_app_router_new(c, &router);
    struct weir_service *svc = NULL;
    /* Before the proxy: its start waits briefly for the first answers, so the proxy starts
       with the names resolved. */
    if (rc == 0 && weir_app_router_discovery(router) != NULL) {
        rc = weir_server_add_background(srv, "discovery", &weir_discovery_service,
                                        weir_app_router_discovery(router), NULL);
    }
    if (rc == 0) {
        rc = weir_server_add_proxy(srv, "proxy", &weir_app_router_hooks, router, &svc);
    }
    for (size_t i = 0; rc == 0 && i < c->nlisteners; i++) {
        rc = weir_service_add_listener_cfg(svc, &c->listeners[i]);
    }
    if (rc == 0 && weir_app_router_health(router) != NULL) {
        rc = weir_server_add_background(srv, "health", &weir_health_service,
                                        weir_app_router_health(router), NULL);
    }
    if (rc == 0 && demo) {
        rc = weir_server_add_background(srv, "demo-origin", &weir_app_demo_origin_ops,
                                        (void *)DEMO_ORIGIN, NULL);
    }
    if (rc == 0 && c->nroutes == 0) {
        weir_log(WEIR_LOG_WARN, "no routes: every request will get 404");
    }
    if (rc == 0) {
        rc = weir_server_run(srv);
    } else {
        (void)fprintf(stderr, "weir: cannot set up the proxy: %s\n", weir_strerror(rc));
    }
    weir_server_free(srv);
    weir_app_router_free(router);
    return rc == 0 ? 0 : 1;
}

static int run_demo(void)
{
    static const char yaml[] = "server:\n"
                               "  access_log: stdout\n"
                               "listeners:\n"
                               "  - " DEMO_LISTEN "\n"
                               "routes:\n"
                               "  - upstream: demo\n"
                               "upstreams:\n"
                               "  demo:\n"
                               "    backends: [" DEMO_ORIGIN "]\n";
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = NULL;
    int rc = weir_config_load_string("<built-in demo>", yaml, sizeof(yaml) - 1, &cfg, &errs);
    if (rc != 0) {
        return print_errors(rc, errs);
    }
    (void)fprintf(stderr,
                  "weir: demo: proxy on http://" DEMO_LISTEN "/ -> demo origin on " DEMO_ORIGIN
                  "\nweir: try: curl -i http://" DEMO_LISTEN "/\n");
    return run(cfg, true);
}

static int run_file(const char *path, bool check_only)
{
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = NULL;
    int rc = weir_config_load_file(path, &cfg, &errs);
    if (rc != 0) {
        return print_errors(rc, errs);
    }
    if (check_only) {
        printf("%s: configuration OK (%zu listener%s, %zu route%s, %zu upstream%s)\n", path,
               cfg->nlisteners, cfg->nlisteners == 1 ? "" : "s", cfg->nroutes,
               cfg->nroutes == 1 ? "" : "s", cfg->nupstreams, cfg->nupstreams == 1 ? "" : "s");
        weir_config_free(cfg);
        return 0;
    }
    return run(cfg, false);
}

/* ---- weir proxy: a configuration written from flags, loaded like a file ---- */

struct text {
    char buf[65536];
    size_t len;
    bool overflow;
};

static void put(struct text *t, const char *s)
{
    size_t n = strlen(s);
    if (t->len + n >= sizeof(t->buf)) {
        t->overflow = true;
        return;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

/* Writes s as a double-quoted YAML scalar. */
static void put_quoted(struct text *t, const char *s)
{
    put(t, "\"");
    for (; *s; s++) {
        char c[3] = {*s, 0, 0};
        if (*s == '"' || *s == '\\') {
            c[0] = '\\';
            c[1] = *s;
        }
        put(t, c);
    }
    put(t, "\"");
}

static int proxy_usage_error(const char *msg, const char *arg)
{
    (void)fprintf(stderr, "weir proxy: %s%s%s\nRun 'weir --help' for usage.\n", msg,
                  arg ? ": " : "", arg ? arg : "");
    return 1;
}

#define MAX_PROXY_LISTEN 64

/* The flags of 'weir proxy'. A 64 KiB text: too big for the stack. */
struct proxy_cmd {
    struct text yaml;
    const char *listen[MAX_PROXY_LISTEN];
    unsigned nlisten;
    const char *to, *threads, *access, *format;
    const char *tls_cert, *tls_key, *upstream_sni, *upstream_ca;
    const char *cache; /* --cache SIZE: one zone of that capacity for the route */
    bool stealing;
};

/* Where the value of a flag that takes one goes; NULL for --listen (repeatable) and unknowns. */
static const char **proxy_slot(struct proxy_cmd *pc, const char *a)
{
    if (strcmp(a, "--to") == 0) {
        return &pc->to;
    }
    if (strcmp(a, "--threads") == 0) {
        return &pc->threads;
    }
    if (strcmp(a, "--access-log") == 0) {
        return &pc->access;
    }
    if (strcmp(a, "--access-log-format") == 0) {
        return &pc->format;
    }
    if (strcmp(a, "--tls-cert") == 0) {
        return &pc->tls_cert;
    }
    if (strcmp(a, "--tls-key") == 0) {
        return &pc->tls_key;
    }
    if (strcmp(a, "--upstream-sni") == 0) {
        return &pc->upstream_sni;
    }
    if (strcmp(a, "--upstream-ca") == 0) {
        return &pc->upstream_ca;
    }
    if (strcmp(a, "--cache") == 0) {
        return &pc->cache;
    }
    return NULL;
}

/* 0, or 1 after printing the usage error. */
static int parse_proxy_args(int argc, char **argv, struct proxy_cmd *pc)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--work-stealing") == 0) {
            pc->stealing = true;
            continue;
        }
        const char **slot = proxy_slot(pc, a);
        bool is_listen = strcmp(a, "--listen") == 0;
        if (slot == NULL && !is_listen) {
            return proxy_usage_error("unknown option", a);
        }
        if (i + 1 >= argc) {
            return proxy_usage_error("missing value after", a);
        }
        const char *next = argv[++i];
        if (slot != NULL) {
            *slot = next;
            continue;
        }
        struct weir_peer check;
        if (weir_peer_set_address(&check, next) != 0) {
            return proxy_usage_error("--listen: expected ip:port (numeric, or localhost), got",
                                     next);
        }
        if (pc->nlisten == MAX_PROXY_LISTEN) {
            return proxy_usage_error("too many --listen", NULL);
        }
        pc->listen[pc->nlisten++] = next;
    }
    if (pc->nlisten == 0 || pc->to == NULL) {
        return proxy_usage_error("--listen and --to are required", NULL);
    }
    if ((pc->tls_cert == NULL) != (pc->tls_key == NULL)) {
        return proxy_usage_error("--tls-cert and --tls-key go together", NULL);
    }
    return 0;
}

/* Writes "  KEY: VALUE" (VALUE quoted) when value is set. */
static void put_setting(struct text *t, const char *key, const char *value)
{
    if (value != NULL) {
        put(t, key);
        put_quoted(t, value);
        put(t, "\n");
    }
}

/* "https://" or "http://" off the front of a backend; *tls says which (neither: http). */
static const char *strip_scheme(const char *p, size_t *n, bool *tls)
{
    *tls = *n > 8 && strncmp(p, "https://", 8) == 0;
    size_t skip = *tls ? 8 : *n > 7 && strncmp(p, "http://", 7) == 0 ? 7 : 0;
    *n -= skip;
    return p + skip;
}

/* upstreams.backends from --to (and its TLS from --upstream-*). 0, or 1 after the error. */
static int write_backends(struct proxy_cmd *pc, struct text *t)
{
    put(t, "upstreams:\n  backends:\n    backends:\n");
    int tls = -1; /* unknown until the first backend */
    for (const char *p = pc->to; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *next = p + n + (comma ? 1 : 0);
        bool this_tls = false;
        p = strip_scheme(p, &n, &this_tls);
        char one[256];
        if (n == 0 || n >= sizeof(one)) {
            return proxy_usage_error("bad backend list", pc->to);
        }
        if (tls >= 0 && tls != (int)this_tls) {
            return proxy_usage_error("--to: backends are all https:// or all not", pc->to);
        }
        tls = this_tls;
        memcpy(one, p, n);
        one[n] = '\0';
        struct weir_peer check;
        if (weir_peer_set_address(&check, one) != 0) {
            return proxy_usage_error("--to: expected ip:port (numeric, or localhost), got", one);
        }
        put(t, "      - ");
        put_quoted(t, one);
        put(t, "\n");
        p = next;
    }
    if (tls == 1) {
        put(t, "    tls:\n");
        put_setting(t, "      sni: ", pc->upstream_sni);
        put_setting(t, "      ca: ", pc->upstream_ca);
        put(t, "      verify: true\n");
    } else if (pc->upstream_sni != NULL || pc->upstream_ca != NULL) {
        return proxy_usage_error("--upstream-sni and --upstream-ca are for https:// backends",
                                 NULL);
    }
    return 0;
}

/* The configuration the flags stand for, in pc->yaml. 0, or 1 after printing the error. */
static int write_proxy_yaml(struct proxy_cmd *pc)
{
    struct text *t = &pc->yaml;
    put(t, "server:\n");
    put_setting(t, "  threads: ", pc->threads);
    if (pc->stealing) {
        put(t, "  work_stealing: true\n");
    }
    put_setting(t, "  access_log: ", pc->access);
    put_setting(t, "  access_log_format: ", pc->format);
    put(t, "listeners:\n");
    for (unsigned i = 0; i < pc->nlisten; i++) {
        put_setting(t, "  - address: ", pc->listen[i]);
        if (pc->tls_cert != NULL) {
            put(t, "    tls:\n      certificates:\n");
            put_setting(t, "        - cert: ", pc->tls_cert);
            put_setting(t, "          key: ", pc->tls_key);
        }
    }
    if (pc->cache != NULL) {
        put(t, "cache:\n  zones:\n    cli:\n");
        put_setting(t, "      capacity: ", pc->cache);
    }
    put(t, "routes:\n  - upstream: backends\n");
    if (pc->cache != NULL) {
        put(t, "    cache: {zone: cli}\n");
    }
    int rc = write_backends(pc, t);
    if (rc == 0 && t->overflow) {
        return proxy_usage_error("arguments too long", NULL);
    }
    return rc;
}

static int run_proxy_command(int argc, char **argv)
{
    struct proxy_cmd *pc = weir_calloc(1, sizeof(*pc));
    if (pc == NULL) {
        return 1;
    }
    int rc = parse_proxy_args(argc, argv, pc);
    if (rc == 0) {
        rc = write_proxy_yaml(pc);
    }
    if (rc != 0) {
        goto out;
    }
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = NULL;
    rc = weir_config_load_string("<command line>", pc->yaml.buf, pc->yaml.len, &cfg, &errs);
    if (rc != 0) {
        rc = print_errors(rc, errs);
        goto out;
    }
    weir_free(pc);
    return run(cfg, false);
out:
    weir_free(pc);
    return rc;
}

int main(int argc, char **argv)
{
    const char *file = NULL;
    bool check = false;
    if (argc >= 2 && strcmp(argv[1], "proxy") == 0) {
        return run_proxy_command(argc, argv);
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("weir %s\nbuild: %s\n", weir_version(), weir_build_options());
            return 0;
        }
        if (strcmp(a, "-t") == 0) {
            check = true;
        } else if (strcmp(a, "-c") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else if (strcmp(a, "-c") == 0) {
            (void)fprintf(stderr, "weir: -c needs a configuration file: weir -c FILE\n");
            return 1;
        } else {
            (void)fprintf(stderr, "weir: unknown argument '%s'\nRun 'weir --help' for usage.\n", a);
            return 1;
        }
    }
    if (file != NULL) {
        return run_file(file, check);
    }
    if (check) {
        (void)fprintf(stderr, "weir: -t needs -c FILE\n");
        return 1;
    }
    return run_demo();
}
