/*
 * Every default of the config loader, field by field, as literal values: the whole
 * weir_config_new_default() snapshot, and the defaults an item gets when its keys are left out
 * (a listener, a route, an upstream group, a backend, a health check). Written before the
 * loader's defaults moved from code into its key tables, so that it proves the move changed
 * nothing; a default that changes on purpose changes here too (and in docs/CONFIG.md).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "weir/config.h"

#include "load.h"

static uint32_t online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (uint32_t)n;
}

static void check_server(const struct weir_cfg_server *s)
{
    assert_int_equal(s->threads, online_cpus());
    assert_false(s->work_stealing);
    assert_null(s->pid_file);
    assert_null(s->error_log);
    assert_int_equal(s->log_level, WEIR_LOG_INFO);
    assert_int_equal(s->grace_period_ms, 30000);
    assert_null(s->access_log);
    assert_int_equal(s->access_log_format, WEIR_ACCESS_COMBINED);
    assert_int_equal(s->upstream_keepalive, 128);
    assert_int_equal(s->upstream_shared_per_peer, 256);
    assert_int_equal(s->upstream_shared_total, 4096);
    assert_int_equal(s->upstream_share_after_ms, 10);
    assert_int_equal(s->max_retries, 1);
    assert_true(s->x_forwarded_for);
    assert_true(s->x_forwarded_proto);
    assert_true(s->via);

    const struct weir_cfg_limits *l = &s->limits;
    assert_int_equal(l->max_request_line, 8192);
    assert_int_equal(l->max_header_bytes, 32768);
    assert_int_equal(l->max_headers, 10000);
    assert_int_equal(l->max_body_bytes, 0);
    assert_int_equal(l->max_connections, 10000);
    assert_int_equal(l->buffer_size, 32768);
    assert_int_equal(l->max_connections_per_ip, 0);
    assert_int_equal(l->requests_per_second_per_ip, 0);
    assert_int_equal(l->max_requests_per_connection, 10000);

    const struct weir_cfg_timeouts *t = &s->timeouts;
    assert_int_equal(t->client_header_ms, 60000);
    assert_int_equal(t->client_body_ms, 60000);
    assert_int_equal(t->client_keepalive_ms, 75000);
    assert_int_equal(t->client_write_ms, 60000);
    assert_int_equal(t->upstream_connect_ms, 5000);
    assert_int_equal(t->upstream_read_ms, 60000);
    assert_int_equal(t->upstream_write_ms, 60000);
    assert_int_equal(t->upstream_idle_ms, 60000);
    assert_int_equal(t->client_min_rate, 0);
    assert_int_equal(t->client_min_rate_window_ms, 10000);
    assert_int_equal(t->linger_ms, 30000);
    assert_int_equal(t->linger_idle_ms, 5000);

    const struct weir_cfg_resolver *r = &s->resolver;
    assert_null(r->servers);
    assert_int_equal(r->nservers, 0);
    assert_int_equal(r->timeout_ms, 2000);
    assert_int_equal(r->min_ttl_ms, 1000);
    assert_int_equal(r->max_ttl_ms, 3600000);
    assert_int_equal(r->retry_ms, 5000);
}

static void test_new_default(void **state)
{
    (void)state;
    struct weir_config *cfg = NULL;
    assert_int_equal(weir_config_new_default(&cfg), 0);
    assert_non_null(cfg);
    assert_string_equal(cfg->source, "(defaults)");
    check_server(&cfg->server);
    assert_null(cfg->listeners);
    assert_int_equal(cfg->nlisteners, 0);
    assert_null(cfg->routes);
    assert_int_equal(cfg->nroutes, 0);
    assert_null(cfg->upstreams);
    assert_int_equal(cfg->nupstreams, 0);
    weir_config_free(cfg);
}

/* A file that sets nothing gets the same server defaults, and nothing else. */
static void test_empty_file(void **state)
{
    (void)state;
    static const char *const empty[] = {
        "",
        "# nothing\n",
        "server:\n",
        "server: {}\n",
        "server:\n  limits:\n  timeouts: ~\n",
        "---\n...\n",
        "server:\n  limits: {}\n  timeouts: {}\n  resolver: {}\n  upstream_pool: {}\n"
        "  forwarded_headers: {}\n",
    };
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        struct weir_config *cfg = load_ok(empty[i]);
        check_server(&cfg->server);
        assert_int_equal(cfg->nlisteners, 0);
        assert_int_equal(cfg->nroutes, 0);
        assert_int_equal(cfg->nupstreams, 0);
        weir_config_free(cfg);
    }
    weir_config_free(NULL);
}

static void check_listener(const struct weir_cfg_listener *l, const char *address)
{
    assert_string_equal(l->address, address);
    assert_string_equal(l->name, "");
    assert_int_equal(l->max_connections, 0);
}

static void check_backend(const struct weir_cfg_backend *b, const char *address)
{
    assert_string_equal(b->address, address);
    assert_null(b->srv);
    assert_false(b->dns);
    assert_int_equal(b->weight, 1);
    assert_false(b->backup);
    assert_false(b->drain);
    assert_int_equal(b->max_conns, 0);
}

static void check_group(const struct weir_cfg_upstream *u, const char *name)
{
    assert_string_equal(u->name, name);
    assert_int_equal(u->balance, WEIR_BALANCE_ROUND_ROBIN);
    assert_int_equal(u->hash_key, WEIR_HASH_URI);
    assert_null(u->hash_key_name);
    assert_false(u->fail_open);
    assert_int_equal(u->max_fails, 3);
    assert_int_equal(u->eject_ms, 10000);
    assert_int_equal(u->eject_max_ms, 300000);
    assert_int_equal(u->queue_size, 128);
    assert_int_equal(u->queue_timeout_ms, 5000);
}

static void check_no_health(const struct weir_cfg_health *h)
{
    static const struct weir_cfg_health zero;
    assert_memory_equal(h, &zero, sizeof(zero));
}

static void check_health(const struct weir_cfg_health *h)
{
    assert_true(h->enabled);
    assert_false(h->tcp);
    assert_string_equal(h->method, "GET");
    assert_null(h->path);
    assert_null(h->host);
    assert_int_equal(h->nstatus, 0);
    for (size_t i = 0; i < 16; i++) {
        assert_int_equal(h->status_lo[i], 0);
        assert_int_equal(h->status_hi[i], 0);
    }
    assert_null(h->expect_body);
    assert_int_equal(h->interval_ms, 5000);
    assert_int_equal(h->timeout_ms, 2000);
    assert_int_equal(h->rise, 2);
    assert_int_equal(h->fall, 3);
}

static void check_route(const struct weir_cfg_route *r, const struct weir_cfg_upstream *u)
{
    assert_string_equal(r->name, "");
    assert_null(r->hosts);
    assert_int_equal(r->nhosts, 0);
    assert_string_equal(r->path_prefix, "/");
    assert_ptr_equal(r->upstream, u);
    assert_null(r->request_headers.v);
    assert_int_equal(r->request_headers.n, 0);
    assert_null(r->response_headers.v);
    assert_int_equal(r->response_headers.n, 0);
    assert_false(r->retry_idempotent);
    assert_int_equal(r->retry_budget_percent, 20);
}

/* Items whose keys are left out, in both their short and their mapping forms. */
static void test_item_defaults(void **state)
{
    (void)state;
    struct weir_config *cfg = load_ok("listeners:\n"
                                      "  - 127.0.0.1:1\n"
                                      "  - {address: 127.0.0.1:2}\n"
                                      "routes:\n"
                                      "  - upstream: a\n"
                                      "  - {upstream: b, match: {}, request_headers: {},"
                                      " response_headers: {}}\n"
                                      "upstreams:\n"
                                      "  a:\n"
                                      "    backends: [127.0.0.1:3, {address: 127.0.0.1:4}]\n"
                                      "  b:\n"
                                      "    health_check: {}\n"
                                      "    backends: [127.0.0.1:5]\n"
                                      "  c:\n"
                                      "    health_check: ~\n"
                                      "    backends: [127.0.0.1:6]\n");
    check_server(&cfg->server);
    assert_int_equal(cfg->nlisteners, 2);
    check_listener(&cfg->listeners[0], "127.0.0.1:1");
    check_listener(&cfg->listeners[1], "127.0.0.1:2");

    assert_int_equal(cfg->nupstreams, 3);
    const struct weir_cfg_upstream *a = &cfg->upstreams[0];
    check_group(a, "a");
    check_no_health(&a->health);
    assert_int_equal(a->nbackends, 2);
    check_backend(&a->backends[0], "127.0.0.1:3");
    check_backend(&a->backends[1], "127.0.0.1:4");
    const struct weir_cfg_upstream *b = &cfg->upstreams[1];
    check_group(b, "b");
    check_health(&b->health);
    assert_int_equal(b->nbackends, 1);
    check_backend(&b->backends[0], "127.0.0.1:5");
    const struct weir_cfg_upstream *c = &cfg->upstreams[2];
    check_group(c, "c");
    check_no_health(&c->health);

    assert_int_equal(cfg->nroutes, 2);
    check_route(&cfg->routes[0], a);
    check_route(&cfg->routes[1], b);
    weir_config_free(cfg);
}

/* A health check that only picks tcp keeps every other default. */
static void test_tcp_health_defaults(void **state)
{
    (void)state;
    struct weir_config *cfg = load_ok("upstreams:\n"
                                      "  a:\n"
                                      "    health_check: {type: tcp}\n"
                                      "    backends: [127.0.0.1:3]\n");
    const struct weir_cfg_health *h = &cfg->upstreams[0].health;
    assert_true(h->tcp);
    assert_string_equal(h->method, "GET");
    assert_int_equal(h->interval_ms, 5000);
    assert_int_equal(h->timeout_ms, 2000);
    assert_int_equal(h->rise, 2);
    assert_int_equal(h->fall, 3);
    weir_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_default),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_item_defaults),
        cmocka_unit_test(test_tcp_health_defaults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
