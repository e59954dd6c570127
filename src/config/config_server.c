/*
 * The server: section and the sections inside it (limits, timeouts, forwarded_headers,
 * upstream_pool, resolver): their key tables, and the little code the tables cannot say
 * (access_log's "off", the resolver's server list, min_ttl against max_ttl).
 */
#include <string.h>
#include <strings.h>

#include "config/config_int.h"
#include "http/head.h"

/* --- server.forwarded_headers, server.upstream_pool: fields of struct weir_cfg_server --- */

#define SRV(f) WEIR__CFG_AT(struct weir_cfg_server, f)

/* --- server.forwarded_headers.client_cert_headers: header names --- */

/* Fields weir itself writes or that frame the message: never a certificate header. */
static const char *const reserved_names[] = {
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Upgrade",
    "Expect",
    "Via",
    "Cookie",
    "Authorization",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
};

static bool header_name_ok(struct weir__cfg_ctx *c, const struct ynode *v, const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128 || !weir__http_is_token((struct weir_iov){s, n})) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, v, "expected a header name (letters, digits, '-'), got %s",
                      weir__cfg_describe(v, shown, sizeof(shown)));
        return false;
    }
    for (size_t i = 0; i < sizeof(reserved_names) / sizeof(reserved_names[0]); i++) {
        if (strcasecmp(s, reserved_names[i]) == 0 || strncasecmp(s, "Proxy-", 6) == 0) {
            weir__cfg_err(c, v, "%s is not for client certificates (weir or HTTP itself sets it)",
                          s);
            return false;
        }
    }
    return true;
}

#define CCH(f) WEIR__CFG_AT(struct weir_cfg_client_cert_headers, f)
#define CERT_HEADER(key, f)                                                                        \
    {                                                                                              \
        (key), WEIR__CFG_T_STRING, 0, CCH(f), .what = "a header name", .valid = header_name_ok     \
    }

static const struct weir__cfg_key cert_header_keys[] = {
    CERT_HEADER("verify", verify), CERT_HEADER("subject", subject),
    CERT_HEADER("issuer", issuer), CERT_HEADER("sans", sans),
    CERT_HEADER("serial", serial), CERT_HEADER("fingerprint", fingerprint),
    CERT_HEADER("cert", cert),
};

/* The names in use, each once (one header cannot carry two fields). */
static void cert_headers_check(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    struct weir_cfg_client_cert_headers *h = f->obj;
    const char *v[] = {h->verify, h->subject,     h->issuer, h->sans,
                       h->serial, h->fingerprint, h->cert};
    h->n = 0;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        if (v[i] == NULL) {
            continue;
        }
        h->n++;
        for (size_t j = 0; j < i; j++) {
            if (v[j] != NULL && strcasecmp(v[i], v[j]) == 0) {
                const char *key = cert_header_keys[i].name;
                size_t old = weir__cfg_path_key(c, key);
                weir__cfg_err(c, weir__cfg_value(f, key), "%s is already the header of %s", v[i],
                              cert_header_keys[j].name);
                weir__cfg_path_pop(c, old);
            }
        }
    }
}

static const struct weir__cfg_section cert_headers_section = WEIR__CFG_TABLE(
    "a mapping of certificate fields (verify, subject, issuer, sans, serial, fingerprint, cert) "
    "to header names",
    cert_header_keys, cert_headers_check);

static const struct weir__cfg_key forwarded_keys[] = {
    WEIR__CFG_BOOL("x_forwarded_for", SRV(x_forwarded_for), true),
    WEIR__CFG_BOOL("x_forwarded_proto", SRV(x_forwarded_proto), true),
    WEIR__CFG_BOOL("via", SRV(via), true),
    WEIR__CFG_SECTION("client_cert_headers", SRV(client_cert_headers), &cert_headers_section),
};

static const struct weir__cfg_section forwarded_section =
    WEIR__CFG_TABLE("a mapping of x_forwarded_for, x_forwarded_proto, via, client_cert_headers",
                    forwarded_keys, NULL);

static const struct weir__cfg_key pool_keys[] = {
    WEIR__CFG_U32("shared_per_peer", SRV(upstream_shared_per_peer), 0, 65535, 256),
    WEIR__CFG_U32("shared_total", SRV(upstream_shared_total), 1, 1000000, 4096),
    WEIR__CFG_DURATION("share_after", SRV(upstream_share_after_ms), 1, UINT32_MAX, 10),
};

static const struct weir__cfg_section pool_section =
    WEIR__CFG_TABLE("a mapping of shared_per_peer, shared_total, share_after", pool_keys, NULL);

/* --- server.limits ------------------------------------------------------------------- */

#define LIM(f) WEIR__CFG_AT(struct weir_cfg_limits, f)

static const struct weir__cfg_key limits_keys[] = {
    WEIR__CFG_SIZE32("max_request_line", LIM(max_request_line), 64, 1u << 20, 8192),
    WEIR__CFG_SIZE32("max_header_bytes", LIM(max_header_bytes), 256, 16u << 20, 32768),
    WEIR__CFG_U32("max_headers", LIM(max_headers), 1, 10000, 10000),
    WEIR__CFG_SIZE("max_body_bytes", LIM(max_body_bytes), 0, UINT64_MAX, 0),
    WEIR__CFG_U32("max_connections", LIM(max_connections), 1, 10000000, 10000),
    WEIR__CFG_SIZE32("buffer_size", LIM(buffer_size), 1u << 10, 1u << 20, 32768),
    WEIR__CFG_U32("max_connections_per_ip", LIM(max_connections_per_ip), 0, 10000000, 0),
    WEIR__CFG_U32("requests_per_second_per_ip", LIM(requests_per_second_per_ip), 0, 10000000, 0),
    WEIR__CFG_U32("max_requests_per_connection", LIM(max_requests_per_connection), 0, 100000000,
                  10000),
};

static const struct weir__cfg_section limits_section =
    WEIR__CFG_TABLE("a mapping of limits", limits_keys, NULL);

/* --- server.timeouts: a zero timeout would fail every request at once, so at least 1ms --- */

#define TMO(f) WEIR__CFG_AT(struct weir_cfg_timeouts, f)

static const struct weir__cfg_key timeouts_keys[] = {
    WEIR__CFG_DURATION("client_header", TMO(client_header_ms), 1, UINT32_MAX, 60000),
    WEIR__CFG_DURATION("client_body", TMO(client_body_ms), 1, UINT32_MAX, 60000),
    WEIR__CFG_DURATION("client_keepalive", TMO(client_keepalive_ms), 1, UINT32_MAX, 75000),
    WEIR__CFG_DURATION("client_write", TMO(client_write_ms), 1, UINT32_MAX, 60000),
    WEIR__CFG_DURATION("upstream_connect", TMO(upstream_connect_ms), 1, UINT32_MAX, 5000),
    WEIR__CFG_DURATION("upstream_read", TMO(upstream_read_ms), 1, UINT32_MAX, 60000),
    WEIR__CFG_DURATION("upstream_write", TMO(upstream_write_ms), 1, UINT32_MAX, 60000),
    WEIR__CFG_DURATION("upstream_idle", TMO(upstream_idle_ms), 1, UINT32_MAX, 60000),
    WEIR__CFG_SIZE32("client_min_rate", TMO(client_min_rate), 0, 1u << 30, 0),
    WEIR__CFG_DURATION("client_min_rate_window", TMO(client_min_rate_window_ms), 1000, 3600000,
                       10000),
    WEIR__CFG_DURATION("linger", TMO(linger_ms), 1, UINT32_MAX, 30000),
    WEIR__CFG_DURATION("linger_idle", TMO(linger_idle_ms), 1, UINT32_MAX, 5000),
    WEIR__CFG_DURATION("tunnel", TMO(tunnel_ms), 1, UINT32_MAX, 3600000),
};

static const struct weir__cfg_section timeouts_section =
    WEIR__CFG_TABLE("a mapping of timeouts", timeouts_keys, NULL);

/* --- server.http2 ------------------------------------------------------------------- */

#define H2(f) WEIR__CFG_AT(struct weir_cfg_http2, f)

static const struct weir__cfg_key http2_keys[] = {
    WEIR__CFG_U32("max_concurrent_streams", H2(max_concurrent_streams), 1, 10000, 128),
    WEIR__CFG_SIZE32("initial_window_size", H2(initial_window_size), 1u << 10, 16u << 20, 65535),
    WEIR__CFG_SIZE32("max_frame_size", H2(max_frame_size), 16384, (16u << 20) - 1, 16384),
    WEIR__CFG_U32("max_requests", H2(max_requests), 0, 100000000, 10000),
    WEIR__CFG_U32("reset_burst", H2(reset_burst), 1, 1000000, 200),
    WEIR__CFG_U32("reset_rate", H2(reset_rate), 0, 1000000, 50),
    WEIR__CFG_U32("control_frame_burst", H2(control_frame_burst), 1, 1000000, 1000),
    WEIR__CFG_U32("control_frame_rate", H2(control_frame_rate), 0, 1000000, 100),
    WEIR__CFG_BOOL("websocket", H2(websocket), true),
};

static const struct weir__cfg_section http2_section =
    WEIR__CFG_TABLE("a mapping of HTTP/2 settings", http2_keys, NULL);

/* --- server.resolver ----------------------------------------------------------------- */

static void resolver_servers(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                             const struct ynode *n)
{
    static const char what[] = "ip:port";
    struct weir_cfg_resolver *r = f->obj;
    const struct ynode *d = weir__ynode_deref(n);
    const struct ynode *first = d->type == YN_SEQ ? d->first : n;
    size_t count = d->type == YN_SEQ ? d->n : 1;
    if (d->type == YN_SEQ && count == 0) {
        weir__cfg_err(c, n,
                      "expected at least one server (leave servers out for /etc/resolv.conf's)");
        return;
    }
    if (count > 16) {
        weir__cfg_err(c, n, "at most 16 servers, got %zu", count);
        return;
    }
    if (d->type == YN_MAP) {
        weir__cfg_err(c, n, "expected %s or a sequence of them, got a mapping", what);
        return;
    }
    const char **v = weir__cfg_keep_array(c, count, sizeof(*v));
    size_t i = 0;
    for (const struct ynode *it = first; v != NULL && i < count; it = it->next, i++) {
        size_t o = d->type == YN_SEQ ? weir__cfg_path_index(c, i) : c->plen;
        const struct ynode *sv = weir__cfg_scalar(c, it, what);
        const char *why = sv ? weir__cfg_check_address(sv->text, sv->len, false) : NULL;
        if (sv != NULL && why == NULL && sv->len > 9 && memcmp(sv->text, "localhost", 9) == 0) {
            why = "the host must be a numeric IP address";
        }
        if (sv != NULL && why != NULL) {
            char shown[WEIR__CFG_DESCRIBE_MAX];
            weir__cfg_err(c, it, "expected %s, got %s (%s)", what,
                          weir__cfg_describe(sv, shown, sizeof(shown)), why);
        } else if (sv != NULL) {
            v[i] = weir__cfg_keep(c, sv->text, sv->len);
        }
        weir__cfg_path_pop(c, o);
    }
    r->servers = v;
    r->nservers = v != NULL ? count : 0;
}

static void resolver_ttls(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    const struct weir_cfg_resolver *r = f->obj;
    if (r->min_ttl_ms <= r->max_ttl_ms) {
        return;
    }
    /* Blame the key the file gave: max_ttl when it is there, else min_ttl. */
    const char *key = weir__cfg_value(f, "max_ttl") != NULL ? "max_ttl" : "min_ttl";
    size_t old = weir__cfg_path_key(c, key);
    weir__cfg_err(c, weir__cfg_value(f, key),
                  "min_ttl (%ums) must not be longer than max_ttl (%ums)", r->min_ttl_ms,
                  r->max_ttl_ms);
    weir__cfg_path_pop(c, old);
}

#define RES(f) WEIR__CFG_AT(struct weir_cfg_resolver, f)

static const struct weir__cfg_key resolver_keys[] = {
    WEIR__CFG_CUSTOM("servers", 0, resolver_servers),
    WEIR__CFG_DURATION("timeout", RES(timeout_ms), 10, 60000, 2000),
    WEIR__CFG_DURATION("min_ttl", RES(min_ttl_ms), 100, UINT32_MAX, 1000),
    WEIR__CFG_DURATION("max_ttl", RES(max_ttl_ms), 100, UINT32_MAX, 3600000),
    WEIR__CFG_DURATION("retry", RES(retry_ms), 100, UINT32_MAX, 5000),
};

static const struct weir__cfg_section resolver_section = WEIR__CFG_TABLE(
    "a mapping of servers, timeout, min_ttl, max_ttl, retry", resolver_keys, resolver_ttls);

/* --- server: ------------------------------------------------------------------------- */

static void access_log_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                             const struct ynode *n)
{
    struct weir_cfg_server *s = f->obj;
    const char *path = weir__cfg_string_value(c, n, "a file path, stdout or off");
    if (path != NULL) {
        s->access_log = strcmp(path, "off") == 0 ? NULL : path;
    }
}

static const char *const log_levels[] = {"error", "warn", "info", "debug"};
static const char *const access_formats[] = {"combined", "json"};

/*
 * upstream_pool and resolver are LATE only to keep the order errors have always been listed
 * in when one anchored mapping is given to several of these sections.
 */
static const struct weir__cfg_key server_keys[] = {
    /* The default is the number of online CPUs, which set_defaults (config.c) puts there */
    WEIR__CFG_U32("threads", SRV(threads), 1, 256, 1),
    WEIR__CFG_BOOL("work_stealing", SRV(work_stealing), false),
    WEIR__CFG_STRING("pid_file", SRV(pid_file), "a file path", NULL),
    WEIR__CFG_STRING("error_log", SRV(error_log), "a file path", NULL),
    WEIR__CFG_ENUM("log_level", SRV(log_level), log_levels, WEIR_LOG_INFO),
    WEIR__CFG_DURATION("grace_period", SRV(grace_period_ms), 0, UINT32_MAX, 30000),
    WEIR__CFG_CUSTOM("access_log", 0, access_log_value),
    WEIR__CFG_ENUM("access_log_format", SRV(access_log_format), access_formats,
                   WEIR_ACCESS_COMBINED),
    WEIR__CFG_U32("upstream_keepalive", SRV(upstream_keepalive), 0, 65535, 128),
    {"upstream_pool", WEIR__CFG_T_SECTION, WEIR__CFG_LATE, WEIR__CFG_SELF(struct weir_cfg_server),
     .sub = &pool_section},
    WEIR__CFG_U32("max_retries", SRV(max_retries), 0, 16, 1),
    WEIR__CFG_SECTION("forwarded_headers", WEIR__CFG_SELF(struct weir_cfg_server),
                      &forwarded_section),
    WEIR__CFG_SECTION("limits", SRV(limits), &limits_section),
    WEIR__CFG_SECTION("timeouts", SRV(timeouts), &timeouts_section),
    {"resolver", WEIR__CFG_T_SECTION, WEIR__CFG_LATE, SRV(resolver), .sub = &resolver_section},
    WEIR__CFG_SECTION("http2", SRV(http2), &http2_section),
};

const struct weir__cfg_section weir__cfg_server =
    WEIR__CFG_TABLE("a mapping of server settings", server_keys, NULL);
