/*
 * What crosses the proxy, whatever the framing: hop-by-hop fields and the fields Connection
 * names are removed, X-Forwarded-For/-Proto and Via added, the request and response hooks
 * that edit heads run, and the body framing each side gets follows the final head. The wire
 * format itself (serializing, Connection, chunked) is the framing's (h1_framing.c).
 */
#include "proxy/proxy_int.h"

#include <string.h>

/*
 * Header rewriting on the hot path: one compaction pass over the fields removes hop-by-hop
 * ones and notes the fields we care about, instead of one scan per name.
 */

/* Connection fields whose names are stripped; real messages have one. */
#define MAX_CONN_FIELDS 8

/* What the header policy does with a field, by its name. */
enum field_class {
    F_OTHER = 0,
    F_HOP,        /* describes one connection, never crosses the proxy (RFC 9110 7.6.1) */
    F_CONNECTION, /* hop-by-hop, and names more fields that are */
    F_CONTENT_LENGTH,
    F_HOST,
    F_EXPECT, /* requests: we answer 100-continue ourselves */
    F_XFP,    /* requests: X-Forwarded-Proto, which we set */
    F_XFF,    /* requests: X-Forwarded-For, which we extend */
};

#define NAME_IS(n, lit) ((n).len == sizeof(lit) - 1 && weir_iov_ieq((n), WEIR_IOV_LIT(lit)))

/* One switch on the first letter, then one length compare, for almost every field. */
static inline enum field_class classify(struct weir_iov n)
{
    if (n.len < 2) {
        return F_OTHER;
    }
    switch (n.base[0] | 0x20) { /* ASCII letters to lower case; nothing else becomes one */
    case 'c':
        return NAME_IS(n, "Connection")       ? F_CONNECTION
               : NAME_IS(n, "Content-Length") ? F_CONTENT_LENGTH
                                              : F_OTHER;
    case 'e':
        return NAME_IS(n, "Expect") ? F_EXPECT : F_OTHER;
    case 'h':
        return NAME_IS(n, "Host") ? F_HOST : F_OTHER;
    case 'k':
        return NAME_IS(n, "Keep-Alive") ? F_HOP : F_OTHER;
    case 'p':
        return n.len > 6 && weir_iov_ieq((struct weir_iov){n.base, 6}, WEIR_IOV_LIT("Proxy-"))
                   ? F_HOP
                   : F_OTHER;
    case 't':
        return NAME_IS(n, "TE") || NAME_IS(n, "Transfer-Encoding") ? F_HOP : F_OTHER;
    case 'u':
        return NAME_IS(n, "Upgrade") ? F_HOP : F_OTHER;
    case 'x':
        return NAME_IS(n, "X-Forwarded-For")     ? F_XFF
               : NAME_IS(n, "X-Forwarded-Proto") ? F_XFP
                                                 : F_OTHER;
    default:
        return F_OTHER;
    }
}

/* Whether a Connection value lists the token "upgrade". */
static bool lists_upgrade(struct weir_iov v)
{
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (v.base[i] == ' ' || v.base[i] == '\t' || v.base[i] == ',')) {
            i++;
        }
        size_t start = i;
        while (i < v.len && v.base[i] != ',' && v.base[i] != ' ' && v.base[i] != '\t') {
            i++;
        }
        if (weir_iov_ieq((struct weir_iov){v.base + start, i - start}, WEIR_IOV_LIT("upgrade"))) {
            return true;
        }
    }
    return false;
}

static bool is_hop_by_hop(struct weir_iov n)
{
    enum field_class c = classify(n);
    return c == F_HOP || c == F_CONNECTION;
}

struct field_scan {
    int content_length; /* index after compaction, -1 when absent */
    int x_forwarded_for;
    bool host;
    bool te_trailers;  /* the request had TE: trailers */
    bool upgrade_ws;   /* the request had Upgrade: websocket */
    bool conn_upgrade; /* ... and a Connection field listing upgrade (RFC 9110 7.8) */
    /* The Connection fields' values that list names beyond close/keep-alive (any number) */
    struct weir_iov conn_values[MAX_CONN_FIELDS];
    unsigned nconn_values;
};

/* Whether tok is a name a Connection field lists for stripping (not close, keep-alive or a
   field stripped anyway). */
static bool names_a_field(struct weir_iov tok)
{
    return !weir_iov_ieq(tok, WEIR_IOV_LIT("close")) &&
           !weir_iov_ieq(tok, WEIR_IOV_LIT("keep-alive")) && !is_hop_by_hop(tok);
}

/* Notes a Connection field that lists names beyond the usual close/keep-alive. */
static void note_connection_field(struct field_scan *fs, struct weir_iov value)
{
    size_t pos = 0;
    struct weir_iov tok;
    while (weir__http_next_token(value, &pos, &tok)) {
        if (names_a_field(tok)) {
            if (fs->nconn_values < MAX_CONN_FIELDS) {
                fs->conn_values[fs->nconn_values++] = value;
            }
            /* More Connection fields than that: their names stay (SECURITY.md's bound). */
            return;
        }
    }
}

static bool named_by_connection(const struct field_scan *fs, struct weir_iov name)
{
    for (unsigned i = 0; i < fs->nconn_values; i++) {
        size_t pos = 0;
        struct weir_iov tok;
        while (weir__http_next_token(fs->conn_values[i], &pos, &tok)) {
            if (weir_iov_ieq(name, tok) && names_a_field(tok)) {
                return true;
            }
        }
    }
    return false;
}

/* Whether n is one of the names client_cert_headers gives (which weir alone may send). */
static bool is_cert_header(const struct weir_cfg_client_cert_headers *ch, struct weir_iov n)
{
    const char *names[] = {ch->verify, ch->serial,      ch->subject, ch->issuer,
                           ch->sans,   ch->fingerprint, ch->cert};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (names[i] != NULL && strlen(names[i]) == n.len &&
            weir_iov_ieq(n, weir_iov_cstr(names[i]))) {
            return true;
        }
    }
    return false;
}

/*
 * Removes hop-by-hop fields, the fields Connection names, and for requests Expect,
 * X-Forwarded-Proto (we answer 100-continue ourselves and set the protocol) and the names of
 * ch, the client certificate headers (NULL: none). Fills *fs.
 */
static void strip_fields(struct weir_headers *h, bool request,
                         const struct weir_cfg_client_cert_headers *ch, struct field_scan *fs)
{
    fs->content_length = fs->x_forwarded_for = -1;
    fs->host = false;
    fs->te_trailers = false;
    fs->upgrade_ws = false;
    fs->conn_upgrade = false;
    fs->nconn_values = 0; /* conn_values[] is read only below nconn_values */
    uint32_t w = 0;
    for (uint32_t r = 0; r < h->n; r++) {
        switch (classify(h->v[r].name)) {
        case F_CONNECTION:
            note_connection_field(fs, h->v[r].value);
            fs->conn_upgrade = fs->conn_upgrade || lists_upgrade(h->v[r].value);
            continue;
        case F_HOP:
            /* TE: trailers (gRPC's) is kept as a fact: an HTTP/2 origin gets it again. */
            fs->te_trailers =
                fs->te_trailers || (request && weir_iov_ieq(h->v[r].name, WEIR_IOV_LIT("TE")) &&
                                    weir_iov_ieq(h->v[r].value, WEIR_IOV_LIT("trailers")));
            fs->upgrade_ws =
                fs->upgrade_ws || (request && weir_iov_ieq(h->v[r].name, WEIR_IOV_LIT("Upgrade")) &&
                                   weir_iov_ieq(h->v[r].value, WEIR_IOV_LIT("websocket")));
            continue;
        case F_EXPECT:
        case F_XFP:
            if (request) {
                continue;
            }
            break;
        case F_CONTENT_LENGTH:
            fs->content_length = (int)w;
            break;
        case F_XFF:
            if (request) {
                fs->x_forwarded_for = (int)w;
            }
            break;
        case F_HOST:
            fs->host = fs->host || request;
            break;
        case F_OTHER:
            if (ch != NULL && is_cert_header(ch, h->v[r].name)) {
                continue; /* only weir may say who the client's certificate names */
            }
            break;
        }
        h->v[w++] = h->v[r];
    }
    h->n = w;
    if (fs->nconn_values > 0) {
        /* Rare: Connection named other fields, which may have come before it. */
        fs->content_length = fs->x_forwarded_for = -1;
        w = 0;
        for (uint32_t r = 0; r < h->n; r++) {
            struct weir_iov name = h->v[r].name;
            if (named_by_connection(fs, name)) {
                continue;
            }
            if (weir_iov_ieq(name, WEIR_IOV_LIT("Content-Length"))) {
                fs->content_length = (int)w;
            } else if (request && weir_iov_ieq(name, WEIR_IOV_LIT("X-Forwarded-For"))) {
                fs->x_forwarded_for = (int)w;
            }
            h->v[w++] = h->v[r];
        }
        h->n = w;
    }
}

/*
 * Appends a field whose bytes outlive the request (static text, or the connection's own
 * buffers) without copying them; falls back to a copying add when the array must grow.
 */
int weir__push_field(struct weir_headers *h, struct weir_iov name, struct weir_iov value)
{
    if (h->n < h->cap) {
        h->v[h->n++] = (struct weir_header){name, value};
        return 0;
    }
    return weir_headers_add_iov(h, name, value);
}

/* The PEM certificate as one header value: everything but RFC 3986's unreserved as %XX. */
static struct weir_iov escape_pem(struct weir_arena *a, const char *pem)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(pem);
    char *v = weir_arena_alloc(a, n * 3 + 1);
    if (v == NULL) {
        return (struct weir_iov){NULL, 0};
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)pem[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            v[o++] = (char)ch;
        } else {
            v[o++] = '%';
            v[o++] = hex[ch >> 4];
            v[o++] = hex[ch & 15];
        }
    }
    return (struct weir_iov){v, o};
}

/* One client certificate header, when it is configured and the value is not empty. */
static int push_cert_field(struct weir_headers *h, const char *name, const char *value)
{
    if (name == NULL || value[0] == '\0') {
        return 0;
    }
    return weir__push_field(h, weir_iov_cstr(name), weir_iov_cstr(value));
}

/*
 * client_cert_headers on a TLS connection: the verification result always, the identity
 * only for a certificate that verified. The values live with the connection.
 */
static int add_cert_headers(struct weir_session *s, struct weir_headers *h)
{
    const struct weir_cfg_client_cert_headers *ch = &s->cfg->server.client_cert_headers;
    const struct weir_tls_info *ti = weir_session_tls(s);
    int rc = push_cert_field(h, ch->verify, ti->verify);
    if (rc != 0 || !ti->client_verified) {
        return rc;
    }
    if ((rc = push_cert_field(h, ch->subject, ti->subject)) != 0 ||
        (rc = push_cert_field(h, ch->issuer, ti->issuer)) != 0 ||
        (rc = push_cert_field(h, ch->sans, ti->sans)) != 0 ||
        (rc = push_cert_field(h, ch->serial, ti->serial)) != 0 ||
        (rc = push_cert_field(h, ch->fingerprint, ti->fingerprint)) != 0) {
        return rc;
    }
    if (ch->cert != NULL && ti->cert_pem[0] != '\0') {
        struct weir_iov v = escape_pem(s->arena, ti->cert_pem);
        rc = v.base == NULL ? WEIR_ENOMEM : weir__push_field(h, weir_iov_cstr(ch->cert), v);
    }
    return rc;
}

static int add_forwarded(struct weir_session *s, struct weir_headers *h,
                         const struct field_scan *fs)
{
    const struct weir_cfg_server *sc = &s->cfg->server;
    int rc = 0;
    if (sc->x_forwarded_for) {
        struct weir_iov ip = weir_session_client_ip(s);
        if (fs->x_forwarded_for >= 0 && h->v[fs->x_forwarded_for].value.len > 0) {
            struct weir_iov prev = h->v[fs->x_forwarded_for].value;
            size_t len = prev.len + 2 + ip.len;
            char *v = weir_arena_alloc(s->arena, len);
            if (v == NULL) {
                return WEIR_ENOMEM;
            }
            memcpy(v, prev.base, prev.len);
            /* A length-delimited header value, not a C string: no NUL wanted. */
            // NOLINTNEXTLINE(bugprone-not-null-terminated-result)
            memcpy(v + prev.len, ", ", 2);
            memcpy(v + prev.len + 2, ip.base, ip.len);
            h->v[fs->x_forwarded_for].value = (struct weir_iov){v, len};
        } else if (fs->x_forwarded_for >= 0) {
            h->v[fs->x_forwarded_for].value = ip;
        } else {
            rc = weir__push_field(h, WEIR_IOV_LIT("X-Forwarded-For"), ip);
        }
    }
    if (rc == 0 && sc->x_forwarded_proto) {
        rc = weir__push_field(h, WEIR_IOV_LIT("X-Forwarded-Proto"),
                              s->c->tls ? WEIR_IOV_LIT("https") : WEIR_IOV_LIT("http"));
    }
    if (rc == 0 && sc->via) {
        rc =
            weir__push_field(h, WEIR_IOV_LIT("Via"),
                             s->client_minor ? WEIR_IOV_LIT("1.1 weir") : WEIR_IOV_LIT("1.0 weir"));
    }
    if (rc == 0 && s->early_data &&
        !weir_headers_get_iov(h, WEIR_IOV_LIT("Early-Data"), &(struct weir_iov){NULL, 0})) {
        rc = weir__push_field(h, WEIR_IOV_LIT("Early-Data"), WEIR_IOV_LIT("1"));
    }
    if (rc == 0 && sc->client_cert_headers.n > 0 && s->c->tls) {
        rc = add_cert_headers(s, h);
    }
    return rc;
}

bool weir__parse_length(struct weir_iov v, uint64_t *out)
{
    uint64_t n = 0;
    if (v.len == 0 || v.len > 19) {
        return false;
    }
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9') {
            return false;
        }
        n = n * 10 + (uint64_t)(v.base[i] - '0');
    }
    *out = n;
    return true;
}

/* Builds the upstream request head once (hooks run once even if the request is retried). */

int weir__forward_request_head(struct weir_session *s)
{
    struct weir_headers *h = &s->req.headers;
    struct field_scan fs;
    if (s->ux.head_built) {
        return 0;
    }
    const struct weir_cfg_client_cert_headers *ch = &s->cfg->server.client_cert_headers;
    strip_fields(h, true, ch->n > 0 ? ch : NULL, &fs);
    int rc = add_forwarded(s, h, &fs);
    if (rc == 0 && !fs.host) {
        /* An HTTP/1.0 client may omit Host; what we send up is HTTP/1.1, which needs one.
           A copy: s->peer is rewritten when a retry chooses again, the request is not. */
        struct weir_iov name = weir_arena_iovdup(s->arena, weir_iov_cstr(s->peer.name));
        rc = name.base == NULL ? WEIR_ENOMEM : weir__push_field(h, WEIR_IOV_LIT("Host"), name);
    }
    bool h1_ws = fs.upgrade_ws && fs.conn_upgrade && s->h2 == NULL &&
                 s->req_body == WEIR_H1_BODY_NONE &&
                 weir_iov_eq(s->req.method, WEIR_IOV_LIT("GET"));
    if (rc == 0 && s->ws_h2) {
        rc = weir__ws_h2_request(s, h); /* RFC 8441: the key is ours to make */
    }
    if (rc == 0 && (h1_ws || s->ws_h2)) {
        /* WebSocket (RFC 6455): the upgrade goes up; a 101 turns the exchange into a tunnel. */
        s->ux.upgrade = true;
        rc = weir__push_field(h, WEIR_IOV_LIT("Connection"), WEIR_IOV_LIT("Upgrade"));
        if (rc == 0) {
            rc = weir__push_field(h, WEIR_IOV_LIT("Upgrade"), WEIR_IOV_LIT("websocket"));
        }
    }
    if (rc == 0 && s->gw != NULL) {
        rc = weir__grpc_web_request(s, h);
        fs.content_length = -2; /* -text removed it: look again */
    }
    if (rc != 0) {
        return rc;
    }
    if (s->w->hooks->upstream_request_filter) {
        if (s->w->hooks->upstream_request_filter(s, s->ctx, &s->req) != WEIR_HOOK_CONTINUE) {
            return WEIR_EINVAL;
        }
        fs.content_length = -2; /* the hook may have moved fields: look again */
    }
    /* Framing going up follows the final head: Content-Length if it is the body's. */
    weir__pipe_source(s, &s->reqp, s->req_body, s->req_length);
    struct weir_iov cl = {NULL, 0};
    bool has_cl = fs.content_length == -2
                      ? weir_headers_get_iov(h, WEIR_IOV_LIT("Content-Length"), &cl)
                      : fs.content_length >= 0;
    if (fs.content_length >= 0) {
        cl = h->v[fs.content_length].value;
    }
    uint64_t len;
    s->ux.te_trailers = fs.te_trailers || s->gw != NULL; /* gRPC asks for trailers */
    s->ux.length_ok = s->req_body == WEIR_H1_BODY_LENGTH && has_cl &&
                      weir__parse_length(cl, &len) && len == s->req_length;
    s->ux.head_built = true;
    return 0; /* the framing of the connection serializes it (up_connected) */
}

/* A 101 to a WebSocket upgrade: the upgrade fields again, and after it bytes both ways. */
static int tunnel_head(struct weir_session *s, struct weir_resp *r)
{
    weir_headers_remove(&r->headers, "Content-Length");
    s->respp.out_kind = WEIR_H1_BODY_CLOSE;
    if (s->ws_h2) {
        /* the stream stays open for the tunnel's DATA; its END_STREAM is the close */
        weir__ws_h2_response(r);
        int rc = 0;
        if (s->cfg->server.via) {
            rc = weir__push_field(&r->headers, WEIR_IOV_LIT("Via"), WEIR_IOV_LIT("1.1 weir"));
        }
        return rc == 0 ? weir__down_queue_head(s, r) : rc;
    }
    s->close_after = true; /* the connection ends with the tunnel */
    int rc = weir__push_field(&r->headers, WEIR_IOV_LIT("Connection"), WEIR_IOV_LIT("Upgrade"));
    if (rc == 0) {
        rc = weir__push_field(&r->headers, WEIR_IOV_LIT("Upgrade"), WEIR_IOV_LIT("websocket"));
    }
    if (rc == 0 && s->cfg->server.via) {
        rc = weir__push_field(&r->headers, WEIR_IOV_LIT("Via"), WEIR_IOV_LIT("1.1 weir"));
    }
    return rc == 0 ? weir__down_queue_head(s, r) : rc;
}

int weir__forward_response_head(struct weir_session *s)
{
    struct weir_resp *r = s->resp;
    const struct weir_proxy_hooks *hk = s->w->hooks;
    struct field_scan fs;
    strip_fields(&r->headers, false, NULL, &fs);
    if (s->gw != NULL && !s->ux.tunnel) {
        weir__grpc_web_response_head(s, r);
        fs.content_length = -2; /* removed when the body is translated: look again */
    }
    bool from_cache = weir__cache_serving(s);
    if (hk->upstream_response_filter && !from_cache) {
        if (hk->upstream_response_filter(s, s->ctx, r) != WEIR_HOOK_CONTINUE) {
            return WEIR_EINVAL;
        }
        fs.content_length = -2; /* the hook may have moved fields: look again */
    }
    if (s->cache != NULL) {
        weir__cache_response_head(s, r); /* the writer stores it, or not */
        weir__cache_status(s, r);
    }
    if (hk->response_filter) {
        if (hk->response_filter(s, s->ctx, r) != WEIR_HOOK_CONTINUE) {
            return WEIR_EINVAL;
        }
        fs.content_length = -2;
    }
    struct weir_iov cl = {NULL, 0};
    bool has_cl = fs.content_length == -2
                      ? weir_headers_get_iov(&r->headers, WEIR_IOV_LIT("Content-Length"), &cl)
                      : fs.content_length >= 0;
    if (fs.content_length >= 0) {
        cl = r->headers.v[fs.content_length].value;
    }
    uint64_t len;
    if (s->ux.tunnel) {
        return tunnel_head(s, r);
    }
    int rc = weir__down_body_framing(s, r, has_cl && weir__parse_length(cl, &len));
    if (rc == 0 && s->cfg->server.via) {
        rc = weir__push_field(&r->headers, WEIR_IOV_LIT("Via"),
                              r->minor ? WEIR_IOV_LIT("1.1 weir") : WEIR_IOV_LIT("1.0 weir"));
    }
    if (rc == 0) {
        rc = weir__down_connection_fields(s, r);
    }
    return rc == 0 ? weir__down_queue_head(s, r) : rc;
}
