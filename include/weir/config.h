/*
 * The configuration snapshot: what a YAML file (or the `weir proxy` flags) describes, loaded
 * and validated whole. A snapshot is immutable once loaded; workers reach the current one
 * through one RCU-protected pointer (see server.h), so a reload only swaps that pointer.
 */
#ifndef WEIR_CONFIG_H
#define WEIR_CONFIG_H

#include <stdio.h>

#include "weir/common.h"

WEIR_BEGIN_DECLS

enum weir_log_level {
    WEIR_LOG_ERROR = 0,
    WEIR_LOG_WARN,
    WEIR_LOG_INFO,
    WEIR_LOG_DEBUG,
};

enum weir_access_format {
    WEIR_ACCESS_COMBINED = 0, /**< nginx's combined format */
    WEIR_ACCESS_JSON,         /**< one JSON object per line */
};

/** upstreams.*.balance; the same algorithms as enum weir_lb_algorithm, in the same order. */
enum weir_balance {
    WEIR_BALANCE_ROUND_ROBIN = 0, /**< nginx's smooth weighted round robin */
    WEIR_BALANCE_RANDOM,          /**< weighted random */
    WEIR_BALANCE_LEAST_CONN,      /**< power of two choices, fewest active requests per weight */
    WEIR_BALANCE_CONSISTENT_HASH, /**< ketama ring on hash_key, as nginx `hash KEY consistent` */
};

/** What consistent_hash hashes (upstreams.*.hash_key). */
enum weir_hash_key {
    WEIR_HASH_URI = 0,   /**< the request target as received (path and query): $request_uri */
    WEIR_HASH_PATH,      /**< the path without the query */
    WEIR_HASH_CLIENT_IP, /**< the client's IP address as text */
    WEIR_HASH_HEADER,    /**< a request header's value (hash_key_name); empty when absent */
    WEIR_HASH_COOKIE,    /**< a cookie's value (hash_key_name); empty when absent */
    WEIR_HASH_ARG,       /**< a query argument's value (hash_key_name); empty when absent */
};

enum weir_header_op {
    WEIR_HDR_ADD = 0, /**< append a field */
    WEIR_HDR_SET,     /**< replace every field of that name by one */
    WEIR_HDR_REMOVE,  /**< remove every field of that name */
};

/** One header edit from a route's request_headers / response_headers. */
struct weir_cfg_header_edit {
    enum weir_header_op op;
    const char *name;
    const char *value; /**< NULL for WEIR_HDR_REMOVE */
};

struct weir_cfg_header_edits {
    const struct weir_cfg_header_edit *v;
    size_t n;
};

/** Size and count bounds on requests (server.limits). */
struct weir_cfg_limits {
    uint32_t max_request_line; /**< bytes; default 8192; over it: 414 */
    uint32_t max_header_bytes; /**< bytes of the whole head; default 32768; over it: 431 */
    uint32_t max_headers;      /**< fields; default 10000; over it: 431 */
    uint64_t max_body_bytes;   /**< request body bytes; 0 = unlimited (default); over it: 413 */
    uint32_t max_connections;  /**< open client connections per worker; default 10000 */
    uint32_t buffer_size;      /**< I/O buffer bytes; default 32768 */
    /** open connections from one client address (IPv6: its /64), all workers; 0 = off (default) */
    uint32_t max_connections_per_ip;
    /** requests per second from one client address; 0 = off (default); over it: 429 */
    uint32_t requests_per_second_per_ip;
    /** requests on one connection, then Connection: close; 0 = unlimited; default 10000 */
    uint32_t max_requests_per_connection;
};

/** Timeouts in milliseconds (server.timeouts). */
struct weir_cfg_timeouts {
    uint32_t client_header_ms;          /**< whole request head; default 60000 */
    uint32_t client_body_ms;            /**< between two reads of a request body; default 60000 */
    uint32_t client_keepalive_ms;       /**< idle between requests; default 75000 */
    uint32_t client_write_ms;           /**< between two writes making progress; default 60000 */
    uint32_t upstream_connect_ms;       /**< default 5000 */
    uint32_t upstream_read_ms;          /**< between two reads from the origin; default 60000 */
    uint32_t upstream_write_ms;         /**< between two writes to the origin; default 60000 */
    uint32_t upstream_idle_ms;          /**< an idle pooled upstream connection; default 60000 */
    uint32_t client_min_rate;           /**< bytes/s a client must read at; 0 (default): off */
    uint32_t client_min_rate_window_ms; /**< the rate is averaged over this; default 10000 */
    uint32_t linger_ms;      /**< a lingering close (after an error response), whole; 30000 */
    uint32_t linger_idle_ms; /**< a lingering close, between two reads; default 5000 */
    uint32_t tunnel_ms;      /**< a WebSocket tunnel with no byte either way; default 3600000 */
};

/** server.resolver: how upstream backends given by DNS name are resolved. */
struct weir_cfg_resolver {
    /** DNS servers, numeric "ip:port" / "[ipv6]:port", tried in order; none (default): the
        nameservers of /etc/resolv.conf */
    const char *const *servers;
    size_t nservers;
    uint32_t timeout_ms; /**< one try of a query; default 2000 */
    uint32_t min_ttl_ms; /**< shortest time an answer is kept; default 1000 */
    uint32_t max_ttl_ms; /**< longest time an answer is kept; default 3600000 */
    uint32_t retry_ms;   /**< a failed lookup is tried again after this; default 5000 */
};

/**
 * server.forwarded_headers.client_cert_headers: which header carries which part of a TLS
 * client's certificate upstream. The names are stripped from every request first, on every
 * listener, so a client cannot forge them; the identity fields are sent only for a
 * certificate that verified.
 */
struct weir_cfg_client_cert_headers {
    const char *verify;      /**< SUCCESS, FAILED:reason or NONE (any TLS connection) */
    const char *subject;     /**< the subject DN, RFC 2253 */
    const char *issuer;      /**< the issuer DN, RFC 2253 */
    const char *sans;        /**< subject alternative names, "DNS:a, URI:b, ..." */
    const char *serial;      /**< the serial number, hex */
    const char *fingerprint; /**< SHA-256 of the DER certificate, hex */
    const char *cert;        /**< the PEM certificate, URL-encoded (nginx's escaped cert) */
    unsigned n;              /**< how many of the above are set */
};

/** server: section. */
/** server.http2: HTTP/2 towards clients (h2 by ALPN, h2c with prior knowledge). */
struct weir_cfg_http2 {
    uint32_t max_concurrent_streams; /**< streams a client may have open at once; 128 */
    uint32_t initial_window_size;    /**< a stream's receive window and buffer; 64k */
    uint32_t max_frame_size;         /**< the largest frame a client may send; 16k */
    uint32_t max_requests;           /**< streams per connection, then GOAWAY; 10000; 0: none */
    uint32_t reset_burst;            /**< client stream resets allowed at once; 200 */
    uint32_t reset_rate;             /**< ... and per second after that, then GOAWAY; 50 */
    uint32_t control_frame_burst;    /**< PING/SETTINGS/PRIORITY/empty frames at once; 1000 */
    uint32_t control_frame_rate;     /**< ... and per second after that, then GOAWAY; 100 */
    bool websocket;                  /**< WebSocket over HTTP/2 (RFC 8441 extended CONNECT); true */
};

struct weir_cfg_server {
    uint32_t threads;      /**< workers per proxy service; default = online cores */
    bool work_stealing;    /**< false: SO_REUSEPORT per worker; true: EPOLLEXCLUSIVE */
    const char *pid_file;  /**< NULL: none */
    const char *error_log; /**< path, or NULL for stderr */
    enum weir_log_level log_level;
    uint32_t grace_period_ms; /**< SIGTERM/SIGQUIT: time to finish in-flight requests; 30000 */
    const char *access_log;   /**< path, "stdout", or NULL (off) */
    enum weir_access_format access_log_format;
    uint32_t upstream_keepalive; /**< idle upstream connections kept per peer and worker; 128 */
    /** upstream_pool.shared_per_peer: idle connections per peer in the tier all workers share;
        0 turns sharing off; default 256 */
    uint32_t upstream_shared_per_peer;
    uint32_t upstream_shared_total;   /**< upstream_pool.shared_total: in all; default 4096 */
    uint32_t upstream_share_after_ms; /**< upstream_pool.share_after: idle time in a worker's
                                           own tier before sharing; default 10 */
    uint32_t max_retries;             /**< connect retries on another backend; default 1 */
    bool x_forwarded_for;             /**< add X-Forwarded-For (default true) */
    bool x_forwarded_proto;           /**< add X-Forwarded-Proto (default true) */
    bool via;                         /**< add Via (default true) */
    /** forwarded_headers.client_cert_headers: the header names (NULL: not sent) that carry a
        TLS client's certificate upstream; every one is removed from every incoming request */
    struct weir_cfg_client_cert_headers client_cert_headers;
    struct weir_cfg_limits limits;
    struct weir_cfg_timeouts timeouts;
    struct weir_cfg_resolver resolver;
    struct weir_cfg_http2 http2;
};

/** One of a TLS listener's certificates (listeners[].tls.certificates[]). */
struct weir_cfg_tls_certificate {
    const char *cert;          /**< PEM file: the leaf first, then its intermediates */
    const char *key;           /**< PEM file: its private key */
    const char *ocsp_response; /**< DER OCSP response stapled for it; NULL: none */
};

/** Protocol versions, as a set (listeners[].tls.protocols). */
#define WEIR_TLS_PROTO_12 1u /**< TLSv1.2 */
#define WEIR_TLS_PROTO_13 2u /**< TLSv1.3 */

/** Application protocols, as a set (listeners[].tls.alpn). */
#define WEIR_ALPN_H2     1u /**< h2 */
#define WEIR_ALPN_HTTP11 2u /**< http/1.1 */

struct weir__tls_server;

/** listeners[].tls.client_auth.mode: whether clients are asked for a certificate (mTLS). */
enum weir_cfg_client_auth_mode {
    WEIR_CLIENT_AUTH_OFF = 0,  /**< not asked (the default) */
    WEIR_CLIENT_AUTH_OPTIONAL, /**< asked; a client without one, or with one that fails
                                    verification, is let in and its result recorded */
    WEIR_CLIENT_AUTH_REQUIRED, /**< a verified certificate or no handshake */
};

/** listeners[].tls.client_auth: client certificates (mTLS). */
struct weir_cfg_tls_client_auth {
    enum weir_cfg_client_auth_mode mode;
    const char *ca;        /**< PEM bundle of the CAs client certificates must chain to */
    const char *crl;       /**< PEM file of revocation lists checked for the client's
                                certificate; NULL: none */
    uint32_t verify_depth; /**< intermediate CAs allowed between the client's certificate and
                                a CA of ca (0: signed by one directly); default 1 */
};

/** listeners[].tls: TLS termination. */
struct weir_cfg_listener_tls {
    bool enabled; /**< the key is present */
    const struct weir_cfg_tls_certificate *certificates;
    size_t ncertificates;
    const char *default_certificate; /**< a certificates[].cert; NULL: the first */
    bool reject_unknown_sni;         /**< refuse clients naming no certificate; default false */
    uint32_t protocols;              /**< WEIR_TLS_PROTO_* set; default both */
    const char *ciphers;             /**< TLS 1.2 cipher list; NULL: Mozilla intermediate */
    const char *ciphersuites;        /**< TLS 1.3 suites; NULL: OpenSSL's defaults */
    const char *curves;              /**< key exchange groups; NULL: X25519:P-256:P-384 */
    bool prefer_server_ciphers;      /**< the listener's cipher order wins; default true */
    bool session_tickets;            /**< stateless resumption; default true */
    uint32_t session_timeout_ms;     /**< how long a session may be resumed; default 1h */
    /** Ticket keys (48 or 80 bytes each), the first making tickets; none: generated and
        rotated every session_timeout */
    const char *const *ticket_key_files;
    size_t nticket_key_files;
    /** TLS 1.3 0-RTT: requests with safe methods that arrive as early data are forwarded with
        Early-Data: 1, others get 425; default false */
    bool early_data;
    /** ALPN protocols offered, WEIR_ALPN_* set; default both (h2 preferred) */
    uint32_t alpn;
    struct weir_cfg_tls_client_auth client_auth;
    /** The context built from the above when the config was loaded (private to weir). */
    struct weir__tls_server *server;
};

struct weir_cfg_listener {
    const char *address;      /**< "host:port" as written, IPv6 as "[::1]:8080" */
    const char *name;         /**< optional label, "" when absent */
    uint32_t max_connections; /**< open connections on this listener, all workers; 0 = no cap */
    /** cleartext only: every request is answered 308 to https://host[:port]/path?query on
        this port (true: 443); 0: off */
    uint16_t redirect_https;
    /** cleartext only: a connection that starts with the HTTP/2 preface speaks h2c (prior
        knowledge) on the same port as HTTP/1.1; default false */
    bool h2c;
    struct weir_cfg_listener_tls tls;
};

struct weir_cfg_backend {
    /** "host:port"; NULL for an SRV backend. The host is a numeric IP address or localhost,
        or a DNS name when `dns` is set. */
    const char *address;
    /** An SRV name ("_http._tcp.app.internal") whose records give the backends, their ports
        and weights; NULL otherwise */
    const char *srv;
    bool dns;           /**< address's host is a DNS name, resolved with A and AAAA */
    uint32_t weight;    /**< 1..256, default 1 (not used with srv) */
    bool backup;        /**< used only while no primary backend can be */
    bool drain;         /**< out of rotation (nginx's `down`) */
    uint32_t max_conns; /**< requests in flight to it at once; 0 = no cap */
};

/** upstreams.*.health_check: an active check of every backend. */
struct weir_cfg_health {
    bool enabled;           /**< the key is present */
    bool tcp;               /**< type: tcp (connect only) instead of http */
    const char *method;     /**< GET or HEAD; default GET */
    const char *path;       /**< default "/" */
    const char *host;       /**< Host header; NULL: the backend's address */
    uint16_t status_lo[16]; /**< expect_status ranges; default 200-399 */
    uint16_t status_hi[16];
    size_t nstatus;
    const char *expect_body; /**< NULL: none */
    uint32_t interval_ms;    /**< default 5000 */
    uint32_t timeout_ms;     /**< default 2000 */
    uint32_t rise;           /**< default 2 */
    uint32_t fall;           /**< default 3 */
};

struct weir_tls_client;

/** upstreams.*.tls: TLS to the group's backends. */
struct weir_cfg_upstream_tls {
    bool enabled;            /**< the key is present */
    const char *sni;         /**< server name sent and verified; NULL: none (the IP is verified) */
    const char *verify_name; /**< the name the certificate must have, when not the sni */
    bool verify;             /**< verify chain and name; default true */
    const char *ca;          /**< PEM CA bundle; NULL: the system store */
    const char *client_cert; /**< PEM client certificate chain for mTLS; NULL: none */
    const char *client_key;
    bool session_reuse; /**< resume sessions with the origins; default true */
    /** The context built from the above when the config was loaded (private to weir). */
    struct weir_tls_client *client;
};

struct weir_cfg_upstream {
    const char *name;
    enum weir_balance balance;
    enum weir_hash_key hash_key; /**< consistent_hash only */
    const char *hash_key_name;   /**< header, cookie or argument name; NULL otherwise */
    bool fail_open;              /**< all backends down: use them anyway (true) or 503 */
    uint32_t max_fails;          /**< passive health: failures in a row that eject; 0 = off */
    uint32_t eject_ms;           /**< first ejection; doubles while failing; default 10000 */
    uint32_t eject_max_ms;       /**< longest ejection; default 300000 */
    struct weir_cfg_health health;
    uint32_t queue_size;       /**< requests that may wait for a backend under max_conns; 128 */
    uint32_t queue_timeout_ms; /**< how long one may wait; default 5000 */
    const struct weir_cfg_backend *backends;
    size_t nbackends;
    struct weir_cfg_upstream_tls tls;
    /** protocol: http1 (default), h2 (TLS, ALPN), h2c (cleartext), auto (ALPN decides) */
    int protocol; /**< an enum weir_peer_protocol */
};

/** A route's buffer_responses (nginx's proxy_buffering, proxy_temp_path, proxy_max_temp_file_size)
 */
struct weir_cfg_buffering {
    bool enabled;      /**< the key is present (and not false); default off */
    uint64_t memory;   /**< bytes held in memory per response; default 1m */
    const char *spill; /**< directory for the temporary file past memory; NULL: memory only */
    uint64_t max;      /**< most bytes of temporary file per response; default 1g */
};

/** routes[].upstream_tls: the client identity this route presents to its upstream. */
struct weir_cfg_route_upstream_tls {
    const char *client_cert; /**< PEM client certificate chain; NULL: the group's */
    const char *client_key;
    /** The group's CA and verification with this certificate, built when the config was
        loaded (private to weir); NULL without upstream_tls */
    struct weir_tls_client *client;
};

/** cache.zones.NAME: one cache zone (a bounded in-memory storage and its cache lock). */
struct weir_cidr;

struct weir_cfg_cache_zone {
    const char *name;
    uint64_t capacity;   /**< bytes, keys and metadata counted; required */
    uint64_t max_object; /**< the largest object stored; default capacity / 8 */
};

/** routes[].cache: how a route's requests are cached (see weir_cache_policy). */
struct weir_cfg_route_cache {
    const struct weir_cfg_cache_zone *zone; /**< NULL: the route is not cached */
    uint32_t key;                           /**< WEIR_CACHE_KEY_* bits; default method, host,
                                                 path, query */
    uint32_t default_ttl_ms;                /**< for responses without freshness; default 0 */
    uint32_t lock_timeout_ms;               /**< default 5 s */
    uint32_t stale_while_revalidate_ms;     /**< default 0 */
    uint32_t stale_if_error_ms;             /**< default 0 */
    uint32_t on_writer_failure;             /**< 0 next_writer (default), 1 fetch_each */
    const struct weir_cidr *purge_from;     /**< clients that may PURGE; none by default */
    size_t npurge_from;
    bool cookies;       /**< serve and store requests with Cookie; default false */
    bool authorization; /**< serve and store requests with Authorization; default false */
};

struct weir_cfg_route {
    const char *name;         /**< "" when absent */
    const char *const *hosts; /**< exact names or "*.suffix"; none = any host */
    size_t nhosts;
    const char *path_prefix; /**< "/" when absent */
    const struct weir_cfg_upstream *upstream;
    struct weir_cfg_header_edits request_headers;
    struct weir_cfg_header_edits response_headers;
    /** Retry idempotent requests (GET, HEAD, OPTIONS, TRACE, PUT, DELETE without a body) whose
        upstream failed before any response byte, on another backend; default false */
    bool retry_idempotent;
    /** Retries on another backend, as a share of the route's requests: percent, 0..100;
        default 20 (plus a reserve of 10); connect retries count too */
    uint32_t retry_budget_percent;
    /** Keep the upstream exchange going when the client goes away (nginx's
        proxy_ignore_client_abort); default false: cancel it, log 499 */
    bool ignore_client_abort;
    /** Read responses at the origin's pace into memory, then a file; default off */
    struct weir_cfg_buffering buffer_responses;
    struct weir_cfg_route_upstream_tls upstream_tls;
    /** Translate gRPC-Web (application/grpc-web[-text]) requests into gRPC to the upstream,
        which speaks HTTP/2, and the responses back; default false */
    bool grpc_web;
    /** Cache the route's GET and HEAD requests in a zone of cache.zones */
    struct weir_cfg_route_cache cache;
};

/** A whole loaded configuration. Immutable; free with weir_config_free. */
struct weir_config {
    const char *source; /**< file name, or a label for text configs */
    struct weir_cfg_server server;
    const struct weir_cfg_listener *listeners;
    size_t nlisteners;
    const struct weir_cfg_route *routes; /**< in file order: first match wins */
    size_t nroutes;
    const struct weir_cfg_upstream *upstreams;
    size_t nupstreams;
    const struct weir_cfg_cache_zone *cache_zones; /**< cache.zones, in file order */
    size_t ncache_zones;
};

/** One validation error, pointing into the file. */
struct weir_config_error {
    const char *file;
    int line;            /**< 1-based; 0 when the error has no place (a missing file) */
    int col;             /**< 1-based */
    const char *key;     /**< dotted path of the offending key ("routes[1].upstream"), or "" */
    const char *message; /**< what was expected, and a did-you-mean when one fits */
};

/** Every error of one load attempt. */
struct weir_config_errors;

/**
 * Loads and validates the YAML file at path. On success returns 0 and stores a new snapshot
 * in *out. On failure returns WEIR_ECONFIG (or WEIR_ENOMEM) and, when errs is not NULL, stores
 * every error found (the whole file is checked in one pass) in *errs, which the caller frees
 * with weir_config_errors_free. Blocks on file I/O; call it from a control thread.
 */
WEIR_EXTERN int weir_config_load_file(const char *path, struct weir_config **out,
                                      struct weir_config_errors **errs);

/** Same as weir_config_load_file, from text in memory; name labels it in errors. */
WEIR_EXTERN int weir_config_load_string(const char *name, const char *text, size_t len,
                                        struct weir_config **out, struct weir_config_errors **errs);

/**
 * A snapshot in *out with every default and no listeners, routes or upstreams, owned by the
 * caller (weir_config_free, or hand it to weir_server_new). 0, or WEIR_ENOMEM with *out NULL.
 */
WEIR_EXTERN int weir_config_new_default(struct weir_config **out);

/** Frees a snapshot. Accepts NULL. */
WEIR_EXTERN void weir_config_free(struct weir_config *cfg);

/** How many errors errs holds. */
WEIR_EXTERN size_t weir_config_errors_count(const struct weir_config_errors *errs);
/** Error i (< count), owned by errs: valid until weir_config_errors_free. */
WEIR_EXTERN const struct weir_config_error *
weir_config_errors_at(const struct weir_config_errors *errs, size_t i);

/** Prints every error as "file:line:col: error: key: message" lines (errs is not changed). */
WEIR_EXTERN void weir_config_errors_print(const struct weir_config_errors *errs, FILE *to);

/** Frees an error list from weir_config_load_file/_string. Accepts NULL. */
WEIR_EXTERN void weir_config_errors_free(struct weir_config_errors *errs);

/**
 * Parses a duration: an integer (seconds) or a number with a unit ms, s, m, h ("250ms",
 * "30s"). Stores milliseconds in *ms. 0 or WEIR_EINVAL.
 */
WEIR_EXTERN int weir_config_parse_duration(const char *s, uint32_t *ms);

/** Parses a size: an integer (bytes) or with a unit k, m, g (powers of 1024). 0 or WEIR_EINVAL. */
WEIR_EXTERN int weir_config_parse_size(const char *s, uint64_t *bytes);

WEIR_END_DECLS

#endif
