/*
 * Tests for the YAML config loader: every field read back, defaults, each kind of error with
 * its exact line:col, key path and message, several errors in one pass, did-you-mean, and the
 * duration and size parsers. Runs in tests/unit/config (fixtures full.yaml and bad.yaml).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config_int.h"
#include "weir/config.h"
#include "weir/error.h"

#include "load.h"

/* --- helpers -------------------------------------------------------------------------- */

static struct weir_config_errors *load_bad(const char *yaml)
{
    struct weir_config *cfg = (struct weir_config *)1;
    struct weir_config_errors *errs = NULL;
    int rc = weir_config_load_string("t.yaml", yaml, strlen(yaml), &cfg, &errs);
    assert_int_equal(rc, WEIR_ECONFIG);
    assert_null(cfg);
    assert_non_null(errs);
    return errs;
}

static void check_err(const struct weir_config_errors *errs, size_t i, int line, int col,
                      const char *key, const char *message)
{
    const struct weir_config_error *e = weir_config_errors_at(errs, i);
    assert_non_null(e);
    if (e->line != line || e->col != col || strcmp(e->key, key) != 0 ||
        strcmp(e->message, message) != 0) {
        print_error("got      %d:%d: %s: %s\nexpected %d:%d: %s: %s\n", e->line, e->col, e->key,
                    e->message, line, col, key, message);
        fail();
    }
}

/* yaml must produce exactly one error, this one. */
static void expect_one(const char *yaml, int line, int col, const char *key, const char *message)
{
    struct weir_config_errors *errs = load_bad(yaml);
    if (weir_config_errors_count(errs) != 1) {
        weir_config_errors_print(errs, stderr);
    }
    assert_int_equal(weir_config_errors_count(errs), 1);
    check_err(errs, 0, line, col, key, message);
    weir_config_errors_free(errs);
}

/* --- valid configs -------------------------------------------------------------------- */

static void test_full_file(void **state)
{
    (void)state;
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = NULL;
    assert_int_equal(weir_config_load_file("full.yaml", &cfg, &errs), 0);
    assert_null(errs);
    assert_string_equal(cfg->source, "full.yaml");

    const struct weir_cfg_server *s = &cfg->server;
    assert_int_equal(s->threads, 3);
    assert_true(s->work_stealing);
    assert_string_equal(s->pid_file, "/run/weir.pid");
    assert_string_equal(s->error_log, "/var/log/weir/error.log");
    assert_int_equal(s->log_level, WEIR_LOG_DEBUG);
    assert_int_equal(s->grace_period_ms, 120000);
    assert_string_equal(s->access_log, "/var/log/weir/access.log");
    assert_int_equal(s->access_log_format, WEIR_ACCESS_JSON);
    assert_int_equal(s->upstream_keepalive, 7);
    assert_int_equal(s->upstream_shared_per_peer, 9);
    assert_int_equal(s->upstream_shared_total, 99);
    assert_int_equal(s->upstream_share_after_ms, 250);
    assert_int_equal(s->max_retries, 3);
    assert_false(s->x_forwarded_for);
    assert_false(s->x_forwarded_proto);
    assert_false(s->via);
    assert_int_equal(s->limits.max_request_line, 4096);
    assert_int_equal(s->limits.max_header_bytes, 65536);
    assert_int_equal(s->limits.max_headers, 50);
    assert_int_equal(s->limits.max_body_bytes, 10u << 20);
    assert_int_equal(s->limits.max_connections, 2000);
    assert_int_equal(s->limits.buffer_size, 8192);
    assert_int_equal(s->limits.max_connections_per_ip, 64);
    assert_int_equal(s->limits.requests_per_second_per_ip, 500);
    assert_int_equal(s->limits.max_requests_per_connection, 100);
    assert_int_equal(s->timeouts.client_header_ms, 10000);
    assert_int_equal(s->timeouts.client_body_ms, 11000);
    assert_int_equal(s->timeouts.client_keepalive_ms, 12000);
    assert_int_equal(s->timeouts.client_write_ms, 13000);
    assert_int_equal(s->timeouts.upstream_connect_ms, 250);
    assert_int_equal(s->timeouts.upstream_read_ms, 60000);
    assert_int_equal(s->timeouts.upstream_write_ms, 15000);
    assert_int_equal(s->timeouts.upstream_idle_ms, 3600000);

    assert_int_equal(cfg->nlisteners, 3);
    assert_string_equal(cfg->listeners[0].address, "127.0.0.1:8080");
    assert_string_equal(cfg->listeners[0].name, "main");
    assert_string_equal(cfg->listeners[1].address, "[::1]:8443");
    assert_int_equal(cfg->listeners[0].max_connections, 5000);
    assert_string_equal(cfg->listeners[1].name, "");
    assert_int_equal(cfg->listeners[1].max_connections, 0);
    assert_string_equal(cfg->listeners[2].address, "localhost:0");

    assert_int_equal(cfg->nupstreams, 2);
    const struct weir_cfg_upstream *u = &cfg->upstreams[0];
    assert_string_equal(u->name, "backend");
    assert_int_equal(u->balance, WEIR_BALANCE_ROUND_ROBIN);
    assert_int_equal(u->nbackends, 2);
    assert_string_equal(u->backends[0].address, "127.0.0.1:9000");
    assert_int_equal(u->backends[0].weight, 1);
    assert_string_equal(u->backends[1].address, "127.0.0.1:9001");
    assert_int_equal(u->backends[1].weight, 2);
    assert_string_equal(cfg->upstreams[1].name, "other");
    assert_string_equal(cfg->upstreams[1].backends[0].address, "[::1]:9002");
    const struct weir_cfg_upstream *o = &cfg->upstreams[1];
    assert_int_equal(o->balance, WEIR_BALANCE_CONSISTENT_HASH);
    assert_int_equal(o->hash_key, WEIR_HASH_COOKIE);
    assert_string_equal(o->hash_key_name, "sid");
    assert_int_equal(o->max_fails, 5);
    assert_int_equal(o->eject_ms, 2000);
    assert_int_equal(o->eject_max_ms, 60000);
    assert_true(o->fail_open);
    assert_int_equal(o->nbackends, 3);
    assert_int_equal(o->backends[1].weight, 3);
    assert_true(o->backends[1].backup);
    assert_false(o->backends[0].backup);
    assert_true(o->backends[2].drain);
    assert_int_equal(cfg->upstreams[0].balance, WEIR_BALANCE_ROUND_ROBIN);
    assert_int_equal(cfg->upstreams[0].max_fails, 3);
    assert_int_equal(cfg->upstreams[0].eject_ms, 10000);
    assert_false(cfg->upstreams[0].fail_open);

    assert_int_equal(cfg->nroutes, 2);
    const struct weir_cfg_route *r = &cfg->routes[0];
    assert_string_equal(r->name, "api");
    assert_int_equal(r->nhosts, 2);
    assert_string_equal(r->hosts[0], "api.example.com");
    assert_string_equal(r->hosts[1], "*.example.org");
    assert_string_equal(r->path_prefix, "/api");
    assert_ptr_equal(r->upstream, &cfg->upstreams[0]);
    /* remove first, then set, then add, whatever the order in the file */
    const struct weir_cfg_header_edits *h = &r->request_headers;
    assert_int_equal(h->n, 5);
    assert_int_equal(h->v[0].op, WEIR_HDR_REMOVE);
    assert_string_equal(h->v[0].name, "X-C");
    assert_null(h->v[0].value);
    assert_int_equal(h->v[1].op, WEIR_HDR_REMOVE);
    assert_string_equal(h->v[1].name, "X-D");
    assert_int_equal(h->v[2].op, WEIR_HDR_SET);
    assert_string_equal(h->v[2].name, "X-B");
    assert_string_equal(h->v[2].value, "two");
    assert_int_equal(h->v[3].op, WEIR_HDR_ADD);
    assert_string_equal(h->v[3].name, "X-A");
    assert_string_equal(h->v[3].value, "1");
    assert_int_equal(h->v[4].op, WEIR_HDR_ADD);
    assert_string_equal(h->v[4].value, "true");
    assert_int_equal(r->response_headers.n, 1);
    assert_string_equal(r->response_headers.v[0].name, "Server");
    assert_true(r->buffer_responses.enabled);
    assert_int_equal(r->buffer_responses.memory, 256 << 10);
    assert_string_equal(r->buffer_responses.spill, "/tmp");
    assert_int_equal(r->buffer_responses.max, UINT64_C(1) << 30);

    r = &cfg->routes[1];
    assert_string_equal(r->name, "");
    assert_int_equal(r->nhosts, 0);
    assert_string_equal(r->path_prefix, "/");
    assert_ptr_equal(r->upstream, &cfg->upstreams[1]);
    assert_int_equal(r->request_headers.n, 0);
    assert_false(r->buffer_responses.enabled); /* off unless asked for */
    weir_config_free(cfg);
}

static void test_access_log_values(void **state)
{
    (void)state;
    struct weir_config *cfg = load_ok("server:\n  access_log: stdout\n");
    assert_string_equal(cfg->server.access_log, "stdout");
    weir_config_free(cfg);
    cfg = load_ok("server:\n  access_log: off\n");
    assert_null(cfg->server.access_log);
    weir_config_free(cfg);
}

static void test_shorthands_and_aliases(void **state)
{
    (void)state;
    struct weir_config *cfg = load_ok("upstreams:\n"
                                      "  a: &grp\n"
                                      "    backends: [127.0.0.1:1]\n"
                                      "  b: *grp\n"
                                      "routes:\n"
                                      "  - upstream: b\n"
                                      "    match: {host: Example.COM}\n"
                                      "    request_headers: {remove: X-Y}\n");
    assert_int_equal(cfg->nupstreams, 2);
    assert_string_equal(cfg->upstreams[1].backends[0].address, "127.0.0.1:1");
    assert_int_equal(cfg->routes[0].nhosts, 1);
    assert_string_equal(cfg->routes[0].hosts[0], "example.com");
    assert_ptr_equal(cfg->routes[0].upstream, &cfg->upstreams[1]);
    assert_int_equal(cfg->routes[0].request_headers.n, 1);
    weir_config_free(cfg);
}

static void test_unused_upstream_and_no_listener(void **state)
{
    (void)state;
    struct weir_config *cfg = load_ok("upstreams:\n  idle: {backends: [localhost:80]}\n");
    assert_int_equal(cfg->nupstreams, 1);
    assert_int_equal(cfg->nlisteners, 0);
    weir_config_free(cfg);
}

/* --- errors ------------------------------------------------------------------------------ */

static void test_bad_file_all_errors(void **state)
{
    (void)state;
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = NULL;
    assert_int_equal(weir_config_load_file("bad.yaml", &cfg, &errs), WEIR_ECONFIG);
    assert_null(cfg);
    assert_int_equal(weir_config_errors_count(errs), 5);
    check_err(errs, 0, 2, 3, "server.thread", "unknown key 'thread'; did you mean 'threads'?");
    check_err(errs, 1, 3, 12, "server.threads",
              "expected an integer between 1 and 256, got 'lots'");
    check_err(errs, 2, 4, 14, "server.log_level",
              "expected one of error, warn, info, debug, got 'verbose'");
    check_err(errs, 3, 6, 14, "listeners[0].address",
              "expected host:port, got 'example.com:80' (the host must be a numeric IP address "
              "or localhost)");
    check_err(errs, 4, 8, 15, "routes[0].upstream",
              "no upstream named 'bakend'; did you mean 'backend'?");
    assert_string_equal(weir_config_errors_at(errs, 0)->file, "bad.yaml");
    assert_null(weir_config_errors_at(errs, 5));

    char out[2048] = {0};
    FILE *f = fmemopen(out, sizeof(out) - 1, "w");
    assert_non_null(f);
    weir_config_errors_print(errs, f);
    fclose(f);
    assert_non_null(strstr(out, "bad.yaml:2:3: error: server.thread: unknown key 'thread'; "
                                "did you mean 'threads'?\n"
                                "bad.yaml:3:12: error: server.threads: expected an integer"));
    weir_config_errors_free(errs);
}

static void test_missing_file(void **state)
{
    (void)state;
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = NULL;
    assert_int_equal(weir_config_load_file("no-such.yaml", &cfg, &errs), WEIR_ECONFIG);
    assert_int_equal(weir_config_errors_count(errs), 1);
    check_err(errs, 0, 0, 0, "", "cannot read the file: No such file or directory");

    char out[2048] = {0};
    FILE *f = fmemopen(out, sizeof(out) - 1, "w");
    assert_non_null(f);
    weir_config_errors_print(errs, f);
    fclose(f);
    assert_string_equal(out, "no-such.yaml: error: cannot read the file: No such file or "
                             "directory\n");
    weir_config_errors_free(errs);

    /* errs may be NULL; a directory is not a config */
    assert_int_equal(weir_config_load_file(".", &cfg, NULL), WEIR_ECONFIG);
    assert_null(cfg);
}

static void test_yaml_syntax_error(void **state)
{
    (void)state;
    expect_one("server:\n  threads: [1, 2\n", 3, 1, "",
               "YAML syntax error: flow sequence without a closing bracket");
    expect_one("server:\n  threads: 4\n work_stealing: true\n", 3, 2, "",
               "YAML syntax error: invalid indentation in mapping");
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_one("server:\n  thread: 4\n", 2, 3, "server.thread",
               "unknown key 'thread'; did you mean 'threads'?");
    expect_one("server:\n  limits:\n    max_header: 10\n", 3, 5, "server.limits.max_header",
               "unknown key 'max_header'; did you mean 'max_headers'?");
    expect_one("server:\n  timeouts:\n    upstream_conect: 1s\n", 3, 5,
               "server.timeouts.upstream_conect",
               "unknown key 'upstream_conect'; did you mean 'upstream_connect'?");
    expect_one("sevrer: {}\n", 1, 1, "sevrer", "unknown key 'sevrer'; did you mean 'server'?");
    expect_one("bogus: 1\n", 1, 1, "bogus",
               "unknown key 'bogus'; valid keys here: server, listeners, routes, upstreams, cache");
    expect_one(
        "routes:\n  - upstream: a\n    macth: {}\nupstreams: {a: {backends: [localhost:1]}}\n", 3,
        5, "routes[0].macth", "unknown key 'macth'; did you mean 'match'?");
    expect_one("server:\n  <<: {threads: 1}\n", 2, 3, "server.<<",
               "merge keys (<<) are not supported; write the keys out");
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_one("server:\n  threads: 0\n", 2, 12, "server.threads",
               "expected an integer between 1 and 256, got '0'");
    expect_one("server:\n  threads: 257\n", 2, 12, "server.threads",
               "expected an integer between 1 and 256, got '257'");
    expect_one("server:\n  threads: -1\n", 2, 12, "server.threads",
               "expected an integer between 1 and 256, got '-1'");
    expect_one("server:\n  threads: [1]\n", 2, 12, "server.threads",
               "expected an integer between 1 and 256, got a sequence");
    expect_one("server:\n  work_stealing: maybe\n", 2, 18, "server.work_stealing",
               "expected true or false, got 'maybe'");
    expect_one("server:\n  grace_period: 5 minutes\n", 2, 17, "server.grace_period",
               "expected a duration like 30s or 250ms, got '5 minutes'");
    expect_one("server:\n  log_level: verbose\n", 2, 14, "server.log_level",
               "expected one of error, warn, info, debug, got 'verbose'");
    expect_one("server:\n  log_level: wran\n", 2, 14, "server.log_level",
               "expected one of error, warn, info, debug, got 'wran'; did you mean 'warn'?");
    expect_one("server:\n  access_log_format: xml\n", 2, 22, "server.access_log_format",
               "expected one of combined, json, got 'xml'");
    expect_one("server:\n  limits:\n    buffer_size: 2m\n", 3, 18, "server.limits.buffer_size",
               "expected a size between 1k and 1m, got '2m'");
    expect_one("server:\n  limits:\n    max_request_line: lots\n", 3, 23,
               "server.limits.max_request_line", "expected a size like 16k or 1m, got 'lots'");
    expect_one("server:\n  timeouts:\n    client_body: 0s\n", 3, 18, "server.timeouts.client_body",
               "expected a duration of at least 1ms, got '0s'");
    expect_one("server:\n  timeouts:\n    client_body: 2000h\n", 3, 18,
               "server.timeouts.client_body",
               "expected a duration of whole milliseconds up to 1193h, got '2000h'");
    expect_one("server: 4\n", 1, 9, "server", "expected a mapping of server settings, got '4'");
    expect_one(
        "- 1\n", 1, 1, "",
        "expected a mapping with server, listeners, routes, upstreams, cache, got a sequence");
    expect_one("listeners: 127.0.0.1:80\n", 1, 12, "listeners",
               "expected a sequence of listeners, got '127.0.0.1:80'");
    expect_one("server:\n  work_stealing: \"true\\0x\"\n", 2, 18, "server.work_stealing",
               "expected true or false, got 'true\\x00x'");
    expect_one("server:\n  pid_file: \"\"\n", 2, 13, "server.pid_file",
               "expected a file path, got an empty string");
}

static void test_addresses(void **state)
{
    (void)state;
    expect_one("listeners:\n  - example.com:80\n", 2, 5, "listeners[0]",
               "expected host:port, got 'example.com:80' (the host must be a numeric IP "
               "address or localhost)");
    expect_one("listeners:\n  - 127.0.0.1\n", 2, 5, "listeners[0]",
               "expected host:port, got '127.0.0.1' (the port is missing)");
    expect_one("listeners:\n  - 127.0.0.1:65536\n", 2, 5, "listeners[0]",
               "expected host:port, got '127.0.0.1:65536' (the port must be a number from 0 "
               "to 65535)");
    expect_one("listeners:\n  - \"::1:80\"\n", 2, 5, "listeners[0]",
               "expected host:port, got '::1:80' (write an IPv6 address in brackets, as "
               "[::1]:8080)");
    expect_one("listeners:\n  - \"[::g]:80\"\n", 2, 5, "listeners[0]",
               "expected host:port, got '[::g]:80' (not a valid IPv6 address)");
    expect_one("listeners:\n  - \":80\"\n", 2, 5, "listeners[0]",
               "expected host:port, got ':80' (the host is missing (use 0.0.0.0 or [::] for "
               "every interface))");
    expect_one("listeners:\n  - {name: x}\n", 2, 5, "listeners[0]",
               "missing required key 'address'");
    expect_one("listeners:\n  - 127.0.0.1:80\n  - address: 127.0.0.1:80\n", 3, 5, "listeners[1]",
               "listener address '127.0.0.1:80' is already used by listeners[0] (line 2)");
    expect_one("upstreams:\n  u:\n    backends: [127.0.0.1:0]\n", 3, 16, "upstreams.u.backends[0]",
               "expected host:port, got '127.0.0.1:0' (the port must be a number from 1 to "
               "65535)");
}

static void test_upstreams_and_routes(void **state)
{
    (void)state;
    static const char ups[] = "upstreams:\n  backend: {backends: [127.0.0.1:1]}\n"
                              "  cache: {backends: [127.0.0.1:2]}\n";
    char buf[512];
    snprintf(buf, sizeof(buf), "routes:\n  - upstream: bakend\n%s", ups);
    expect_one(buf, 2, 15, "routes[0].upstream",
               "no upstream named 'bakend'; did you mean 'backend'?");
    snprintf(buf, sizeof(buf), "routes:\n  - upstream: zzz\n%s", ups);
    expect_one(buf, 2, 15, "routes[0].upstream",
               "no upstream named 'zzz'; defined upstreams: backend, cache");
    expect_one("routes:\n  - upstream: x\n", 2, 15, "routes[0].upstream",
               "no upstream named 'x'; define it under upstreams:");
    snprintf(buf, sizeof(buf), "routes:\n  - name: a\n%s", ups);
    expect_one(buf, 2, 5, "routes[0]", "missing required key 'upstream'");
    snprintf(buf, sizeof(buf), "routes:\n  - upstream:\n%s", ups);
    /* an empty value has no place of its own: its key's */
    expect_one(buf, 2, 5, "routes[0].upstream", "expected the name of an upstream, got nothing");
    snprintf(buf, sizeof(buf), "routes:\n  - upstream: cache\n    match: {path_prefix: api}\n%s",
             ups);
    expect_one(buf, 3, 26, "routes[0].match.path_prefix",
               "expected a path starting with / (no spaces, ? or #), got 'api'");
    snprintf(buf, sizeof(buf), "routes:\n  - upstream: cache\n    match: {host: [ok, \"a b\"]}\n%s",
             ups);
    expect_one(buf, 3, 24, "routes[0].match.host[1]",
               "expected a host name or *.suffix, got 'a b'");
    expect_one("upstreams:\n  u:\n    backends: []\n", 3, 15, "upstreams.u.backends",
               "an upstream needs at least one backend");
    expect_one("upstreams:\n  u: {}\n", 2, 6, "upstreams.u", "missing required key 'backends'");
    expect_one("upstreams:\n  u:\n    balance: fastest\n    backends: [localhost:1]\n", 3, 14,
               "upstreams.u.balance",
               "expected one of round_robin, random, least_conn, consistent_hash, got 'fastest'");
    expect_one("upstreams:\n  u:\n    backends:\n      - {address: localhost:1, weight: 257}\n", 4,
               40, "upstreams.u.backends[0].weight",
               "expected an integer between 1 and 256, got '257'");
}

static void test_headers(void **state)
{
    (void)state;
    static const char head[] = "upstreams: {u: {backends: [localhost:1]}}\n"
                               "routes:\n  - upstream: u\n    request_headers:\n";
    char buf[512];
    snprintf(buf, sizeof(buf), "%s      add: {\"X A\": 1}\n", head);
    expect_one(buf, 5, 13, "routes[0].request_headers.add",
               "expected a header name (letters, digits and !#$%&'*+-.^_`|~), got 'X A'");
    snprintf(buf, sizeof(buf), "%s      set: {X-A: \"a\\r\\nb\"}\n", head);
    expect_one(buf, 5, 18, "routes[0].request_headers.set.X-A",
               "a header value may not contain CR, LF, NUL or other control characters, got "
               "'a\\x0d\\nb'");
    snprintf(buf, sizeof(buf), "%s      set: {X-A: \"a\\0b\"}\n", head);
    expect_one(buf, 5, 18, "routes[0].request_headers.set.X-A",
               "a header value may not contain CR, LF, NUL or other control characters, got "
               "'a\\x00b'");
    snprintf(buf, sizeof(buf), "%s      add: {X-A: 1, x-a: 2}\n", head);
    expect_one(buf, 5, 21, "routes[0].request_headers.add.x-a",
               "duplicate key 'x-a' (first at line 5, column 13)");
    snprintf(buf, sizeof(buf), "%s      remove: [[X]]\n", head);
    expect_one(buf, 5, 16, "routes[0].request_headers.remove[0]",
               "expected a header name, got a sequence");
    snprintf(buf, sizeof(buf), "%s      add: [X-A]\n", head);
    expect_one(buf, 5, 12, "routes[0].request_headers.add",
               "expected a mapping of header names to values, got a sequence");
}

static void test_duplicates(void **state)
{
    (void)state;
    expect_one("server:\n  threads: 1\n  threads: 2\n", 3, 3, "server.threads",
               "duplicate key 'threads' (first at line 2, column 3)");
    expect_one("upstreams:\n  u: {backends: [localhost:1]}\n  u: {backends: [localhost:2]}\n", 3, 3,
               "upstreams.u", "duplicate key 'u' (first at line 2, column 3)");
    expect_one("server: {}\nserver: {}\n", 2, 1, "server",
               "duplicate key 'server' (first at line 1, column 1)");
}

static void test_dns_backends(void **state)
{
    (void)state;
    struct weir_config *cfg = load_ok("upstreams:\n"
                                      "  u:\n"
                                      "    backends:\n"
                                      "      - app.internal:8080\n"
                                      "      - {srv: _http._tcp.app.internal, backup: true}\n"
                                      "      - 127.0.0.1:1\n"
                                      "      - {address: \"App-2.internal.:80\", weight: 3}\n"
                                      "      - localhost:2\n"
                                      "      - backend:3\n");
    const struct weir_cfg_upstream *u = &cfg->upstreams[0];
    assert_int_equal(u->nbackends, 6);
    assert_string_equal(u->backends[0].address, "app.internal:8080");
    assert_true(u->backends[0].dns);
    assert_null(u->backends[0].srv);
    assert_null(u->backends[1].address);
    assert_string_equal(u->backends[1].srv, "_http._tcp.app.internal");
    assert_false(u->backends[1].dns);
    assert_true(u->backends[1].backup);
    assert_false(u->backends[2].dns);
    assert_string_equal(u->backends[3].address, "App-2.internal.:80");
    assert_true(u->backends[3].dns);
    assert_int_equal(u->backends[3].weight, 3);
    assert_false(u->backends[4].dns); /* localhost stays the loopback address, unresolved */
    assert_true(u->backends[5].dns);  /* a single-label name */
    weir_config_free(cfg);

    static const char host_msg[] = "the host must be a numeric IP address, localhost or a DNS name";
    char msg[256];
    (void)snprintf(msg, sizeof(msg), "expected host:port, got 'bad host:80' (%s)", host_msg);
    expect_one("upstreams:\n  u:\n    backends: [\"bad host:80\"]\n", 3, 16,
               "upstreams.u.backends[0]", msg);
    (void)snprintf(msg, sizeof(msg), "expected host:port, got '300.1.1.1:80' (%s)", host_msg);
    expect_one("upstreams:\n  u:\n    backends: [300.1.1.1:80]\n", 3, 16, "upstreams.u.backends[0]",
               msg);
    expect_one("upstreams:\n  u:\n    backends: [app.internal:0]\n", 3, 16,
               "upstreams.u.backends[0]",
               "expected host:port, got 'app.internal:0' (the port must be a number from 1 to "
               "65535)");
    expect_one("upstreams:\n  u:\n    backends: [app.internal]\n", 3, 16, "upstreams.u.backends[0]",
               "expected host:port, got 'app.internal' (the port is "
               "missing)");
    expect_one("upstreams:\n  u:\n    backends: [{address: a.b:1, srv: _x._tcp.b}]\n", 3, 38,
               "upstreams.u.backends[0].srv", "address and srv are exclusive: give one");
    expect_one("upstreams:\n  u:\n    backends: [{srv: _x._tcp.b, weight: 2}]\n", 3, 41,
               "upstreams.u.backends[0].weight", "the SRV records give the weights: remove weight");
    expect_one("upstreams:\n  u:\n    backends: [{weight: 2}]\n", 3, 16, "upstreams.u.backends[0]",
               "missing required key 'address' (or 'srv')");
    expect_one("upstreams:\n  u:\n    backends:\n      - address:\n", 4, 9,
               "upstreams.u.backends[0].address", "expected host:port, got nothing");
    expect_one("upstreams:\n  u:\n    backends: [{srv: a..b}]\n", 3, 22,
               "upstreams.u.backends[0].srv",
               "expected an SRV name like _http._tcp.example.com, got 'a..b' (a DNS name has "
               "no empty label)");
    expect_one("upstreams:\n  u:\n    backends: [a.b:1, a.b:1]\n", 3, 23, "upstreams.u.backends[1]",
               "backend 'a.b:1' is already listed as backends[0]");
    expect_one("upstreams:\n  u:\n    backends: [{srv: _x._tcp.b, backup: true}]\n", 3, 15,
               "upstreams.u.backends", "every backend is a backup: at least one must not be");
}

static void test_resolver(void **state)
{
    (void)state;
    struct weir_config *cfg = load_ok("server:\n"
                                      "  resolver:\n"
                                      "    servers: [10.0.0.53:53, \"[::1]:5353\"]\n"
                                      "    timeout: 500ms\n"
                                      "    min_ttl: 5s\n"
                                      "    max_ttl: 10m\n"
                                      "    retry: 1s\n");
    const struct weir_cfg_resolver *r = &cfg->server.resolver;
    assert_int_equal(r->nservers, 2);
    assert_string_equal(r->servers[0], "10.0.0.53:53");
    assert_string_equal(r->servers[1], "[::1]:5353");
    assert_int_equal(r->timeout_ms, 500);
    assert_int_equal(r->min_ttl_ms, 5000);
    assert_int_equal(r->max_ttl_ms, 600000);
    assert_int_equal(r->retry_ms, 1000);
    weir_config_free(cfg);
    cfg = load_ok("server:\n  resolver:\n    servers: 127.0.0.1:5353\n");
    assert_int_equal(cfg->server.resolver.nservers, 1);
    assert_string_equal(cfg->server.resolver.servers[0], "127.0.0.1:5353");
    weir_config_free(cfg);

    expect_one("server:\n  resolver:\n    servers: [localhost:53]\n", 3, 15,
               "server.resolver.servers[0]",
               "expected ip:port, got 'localhost:53' (the host must be a numeric IP address)");
    expect_one("server:\n  resolver:\n    servers: [127.0.0.1]\n", 3, 15,
               "server.resolver.servers[0]",
               "expected ip:port, got '127.0.0.1' (the port is missing)");
    expect_one("server:\n  resolver:\n    servers: []\n", 3, 14, "server.resolver.servers",
               "expected at least one server (leave servers out for /etc/resolv.conf's)");
    expect_one("server:\n  resolver:\n    servers: {a: 1}\n", 3, 14, "server.resolver.servers",
               "expected ip:port or a sequence of them, got a mapping");
    expect_one("server:\n  resolver:\n    timeout: 5ms\n", 3, 14, "server.resolver.timeout",
               "expected a duration of at least 10ms, got '5ms'");
    expect_one("server:\n  resolver:\n    timeout: 2m\n", 3, 14, "server.resolver.timeout",
               "expected a duration of at most 60s");
    expect_one("server:\n  resolver:\n    min_ttl: 10s\n    max_ttl: 5s\n", 4, 14,
               "server.resolver.max_ttl",
               "min_ttl (10000ms) must not be longer than max_ttl "
               "(5000ms)");
    expect_one("server:\n  resolver:\n    min_ttl: 2h\n", 3, 14, "server.resolver.min_ttl",
               "min_ttl (7200000ms) must not be longer than max_ttl (3600000ms)");
    expect_one("server:\n  resolver:\n    retry: 0\n", 3, 12, "server.resolver.retry",
               "expected a duration of at least 100ms, got '0'");
    expect_one("server:\n  resolver:\n    server: [127.0.0.1:53]\n", 3, 5, "server.resolver.server",
               "unknown key 'server'; did you mean 'servers'?");
    expect_one("server:\n  resolver: 127.0.0.1:53\n", 2, 13, "server.resolver",
               "expected a mapping of servers, timeout, min_ttl, max_ttl, retry, got "
               "'127.0.0.1:53'");
    /* Listeners stay numeric. */
    expect_one("listeners:\n  - app.internal:80\n", 2, 5, "listeners[0]",
               "expected host:port, got 'app.internal:80' (the host must be a numeric IP "
               "address or localhost)");
}

static void test_several_errors_in_order(void **state)
{
    (void)state;
    struct weir_config_errors *errs = load_bad("routes:\n"
                                               "  - upstream: wbe\n"
                                               "server:\n"
                                               "  threads: x\n"
                                               "  timeouts: {client_header: 1y}\n"
                                               "upstreams:\n"
                                               "  web: {backends: [bad]}\n");
    assert_int_equal(weir_config_errors_count(errs), 4);
    /* sorted by place even though upstreams are checked before routes */
    check_err(errs, 0, 2, 15, "routes[0].upstream", "no upstream named 'wbe'; did you mean 'web'?");
    check_err(errs, 1, 4, 12, "server.threads", "expected an integer between 1 and 256, got 'x'");
    check_err(errs, 2, 5, 29, "server.timeouts.client_header",
              "expected a duration like 30s or 250ms, got '1y'");
    check_err(errs, 3, 7, 20, "upstreams.web.backends[0]",
              "expected host:port, got 'bad' (the port is missing)");
    weir_config_errors_free(errs);
}

static void test_too_many_errors(void **state)
{
    (void)state;
    static char yaml[200 * 32];
    size_t o = 0;
    o += (size_t)snprintf(yaml + o, 32, "listeners:\n");
    for (int i = 0; i < 150; i++) {
        o += (size_t)snprintf(yaml + o, 32, "  - bad%d\n", i);
    }
    struct weir_config_errors *errs = load_bad(yaml);
    assert_int_equal(weir_config_errors_count(errs), WEIR__CFG_MAX_ERRORS + 1);
    check_err(errs, WEIR__CFG_MAX_ERRORS, 102, 5, "", "too many errors; stopped reporting here");
    weir_config_errors_free(errs);
}

static void test_aliases_and_documents(void **state)
{
    (void)state;
    expect_one("server:\n  threads: *n\n", 2, 12, "",
               "no anchor named 'n' is defined before this alias");
    /* an alias inside its own anchor finds nothing: no cycles */
    struct weir_config_errors *errs = load_bad("server: &s\n  threads: 1\n  x: *s\n");
    assert_int_equal(weir_config_errors_count(errs), 2);
    check_err(errs, 0, 3, 3, "server.x",
              "unknown key 'x'; valid keys here: threads, work_stealing, pid_file, error_log, "
              "log_level, grace_period, access_log, access_log_format, upstream_keepalive, "
              "upstream_pool, max_retries, forwarded_headers, limits, timeouts, "
              "resolver, http2");
    check_err(errs, 1, 3, 6, "", "no anchor named 's' is defined before this alias");
    weir_config_errors_free(errs);
    expect_one("server: {}\n---\nserver: {}\n", 2, 1, "",
               "a config file holds one YAML document, found another");
}

/* libfyaml 0.7.12 looped forever on a directive holding an invalid UTF-8 byte (fuzz_config). */
static void test_invalid_utf8_in_directive_does_not_hang(void **state)
{
    (void)state;
    expect_one("r:\n%ex.a *mfo\xbe", 2, 11, "",
               "invalid UTF-8 (byte 0xbe); save the file as UTF-8");
    expect_one("%\xbe", 1, 2, "", "invalid UTF-8 (byte 0xbe); save the file as UTF-8");
}

/* libfyaml 0.7.12 crashed on a tab before ':' after an explicit key (fuzz_config). */
static void test_tab_before_colon_does_not_crash(void **state)
{
    (void)state;
    expect_one("? 1:\t:", 1, 5, "", "a tab before ':' is not supported; use spaces");
    expect_one("server:\n  threads:\t 4\n  via \t: 1\n", 3, 7, "",
               "a tab before ':' is not supported; use spaces");
    /* a tab elsewhere is fine */
    struct weir_config *cfg = load_ok("server:\n  threads:\t4 # \tx\n");
    assert_int_equal(cfg->server.threads, 4);
    weir_config_free(cfg);
}

static void test_text_must_be_printable_utf8(void **state)
{
    (void)state;
    static const char nul[] = "server:\n  pid_file: a\0b\n";
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = NULL;
    assert_int_equal(weir_config_load_string("t.yaml", nul, sizeof(nul) - 1, &cfg, &errs),
                     WEIR_ECONFIG);
    check_err(errs, 0, 2, 14, "",
              "control character U+0000 is not allowed in YAML; write it as an escape in a "
              "double-quoted string");
    weir_config_errors_free(errs);
    expect_one("server:\n  pid_file: \xc3\xa9\x1b\n", 2, 14, "",
               "control character U+001B is not allowed in YAML; write it as an escape in a "
               "double-quoted string");
    expect_one("a: \xc0\x80\n", 1, 4, "", "invalid UTF-8 (byte 0xc0); save the file as UTF-8");
    expect_one("a: \xed\xa0\x80\n", 1, 4, "", "invalid UTF-8 (byte 0xed); save the file as UTF-8");
    /* escapes in double-quoted strings are fine, and a BOM and non-ASCII text too */
    struct weir_config *ok = load_ok("\xef\xbb\xbfserver:\n  pid_file: \"/tmp/\\u00e9\xc3\xa9\"\n");
    assert_string_equal(ok->server.pid_file, "/tmp/\xc3\xa9\xc3\xa9");
    weir_config_free(ok);
}

static void test_string_api_edges(void **state)
{
    (void)state;
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = (struct weir_config_errors *)1;
    assert_int_equal(weir_config_load_string("x", NULL, 1, &cfg, &errs), WEIR_EINVAL);
    assert_null(errs);
    assert_int_equal(weir_config_load_string(NULL, "", 0, NULL, NULL), WEIR_EINVAL);
    assert_int_equal(weir_config_load_string(NULL, NULL, 0, &cfg, NULL), 0);
    assert_string_equal(cfg->source, "(string)");
    weir_config_free(cfg);
    /* a failing load with errs NULL still frees everything */
    assert_int_equal(weir_config_load_string("x", "server: 1", 9, &cfg, NULL), WEIR_ECONFIG);
    assert_null(cfg);
    /* the text need not be NUL-terminated */
    assert_int_equal(weir_config_load_string("x", "server: {threads: 2}XXXX", 20, &cfg, NULL), 0);
    assert_int_equal(cfg->server.threads, 2);
    weir_config_free(cfg);
}

/* --- value parsers and helpers ------------------------------------------------------- */

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint32_t ms;
    } ok[] = {
        {"0", 0},
        {"30", 30000},
        {"30s", 30000},
        {"250ms", 250},
        {"2m", 120000},
        {"1h", 3600000},
        {"1.5s", 1500},
        {"0.5m", 30000},
        {"0ms", 0},
        {"4294967295ms", UINT32_MAX},
        {"1193h", 4294800000u},
        {"4294967s", 4294967000u},
        {"1.250s", 1250},
        {"007s", 7000},
    };
    static const char *const bad[] = {
        "",
        "s",
        "ms",
        "-1s",
        "+1s",
        "1 s",
        " 1s",
        "1s ",
        "5 minutes",
        "1d",
        "1S",
        "1.s",
        ".5s",
        "1..5s",
        "1.2.3s",
        "0.5ms",
        "1.0001s",
        "4294967296ms",
        "4294968s",
        "1194h",
        "99999999999999999999999h",
        "18446744073709551616",
        "1e3",
        "0x10",
        "1sm",
        "1mss",
    };
    uint32_t ms;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ms = 12345;
        if (weir_config_parse_duration(ok[i].s, &ms) != 0 || ms != ok[i].ms) {
            print_error("duration '%s' -> %u, expected %u\n", ok[i].s, ms, ok[i].ms);
            fail();
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (weir_config_parse_duration(bad[i], &ms) != WEIR_EINVAL) {
            print_error("duration '%s' accepted\n", bad[i]);
            fail();
        }
    }
    assert_int_equal(weir_config_parse_duration(NULL, &ms), WEIR_EINVAL);
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t bytes;
    } ok[] = {
        {"0", 0},
        {"1", 1},
        {"8k", 8192},
        {"8K", 8192},
        {"1m", 1048576},
        {"16M", 16777216},
        {"1g", 1073741824},
        {"1.5k", 1536},
        {"0.5m", 524288},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183g", 17179869183ull << 30},
        {"1.50000000000000000g", 1610612736},
    };
    static const char *const bad[] = {
        "",
        "k",
        "-1",
        "+1",
        "1 k",
        "1kb",
        "1KiB",
        "1t",
        "0.3",
        "1.5",
        "1.0001k",
        "18446744073709551616",
        "17179869184g",
        "99999999999999999999g",
        "1e3",
        "lots",
        " 1",
    };
    uint64_t v;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        v = 12345;
        if (weir_config_parse_size(ok[i].s, &v) != 0 || v != ok[i].bytes) {
            print_error("size '%s' -> %llu, expected %llu\n", ok[i].s, (unsigned long long)v,
                        (unsigned long long)ok[i].bytes);
            fail();
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (weir_config_parse_size(bad[i], &v) != WEIR_EINVAL) {
            print_error("size '%s' accepted\n", bad[i]);
            fail();
        }
    }
    assert_int_equal(weir_config_parse_size(NULL, &v), WEIR_EINVAL);
}

static void test_edit_distance(void **state)
{
    (void)state;
    assert_int_equal(weir__cfg_edit_distance("thread", 6, "threads", 7), 1);
    assert_int_equal(weir__cfg_edit_distance("trheads", 7, "threads", 7), 1); /* transposition */
    assert_int_equal(weir__cfg_edit_distance("THREADS", 7, "threads", 7), 0);
    assert_int_equal(weir__cfg_edit_distance("", 0, "abc", 3), 3);
    assert_int_equal(weir__cfg_edit_distance("kitten", 6, "sitting", 7), 3);
    static const char *const keys[] = {"via", "x_forwarded_for", "x_forwarded_proto"};
    assert_int_equal(weir__cfg_suggest("x", 1, keys, 3), -1); /* not a typo of via */
    assert_int_equal(weir__cfg_suggest("vai", 3, keys, 3), 0);
    assert_int_equal(weir__cfg_suggest("forwarded_proto", 15, keys, 3), 2); /* 2 edits of 17 */
    assert_int_equal(weir__cfg_suggest("x_forwarded_prot", 16, keys, 3), 2);
    assert_int_equal(weir__cfg_suggest("zzzz", 4, keys, 3), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_access_log_values),
        cmocka_unit_test(test_shorthands_and_aliases),
        cmocka_unit_test(test_unused_upstream_and_no_listener),
        cmocka_unit_test(test_bad_file_all_errors),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_yaml_syntax_error),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_upstreams_and_routes),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_dns_backends),
        cmocka_unit_test(test_resolver),
        cmocka_unit_test(test_several_errors_in_order),
        cmocka_unit_test(test_too_many_errors),
        cmocka_unit_test(test_aliases_and_documents),
        cmocka_unit_test(test_invalid_utf8_in_directive_does_not_hang),
        cmocka_unit_test(test_tab_before_colon_does_not_crash),
        cmocka_unit_test(test_text_must_be_printable_utf8),
        cmocka_unit_test(test_string_api_edges),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_edit_distance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
