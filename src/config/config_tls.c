/*
 * listeners[].tls: certificates read and checked when the config is loaded (each error at
 * the key naming the file, with OpenSSL's reason), the protocol and cipher settings checked
 * as OpenSSL would take them, and the listener's server context built into the snapshot,
 * which frees it with everything else.
 */
#include <string.h>

#include "config/config_int.h"
#include "tls/tls.h"
#include "weir/error.h"

/* Certificates loaded by tls_build; they move into the server context. */
struct loaded {
    struct weir__tls_cert **v;
    size_t n;
};

static void free_loaded(void *data)
{
    struct loaded *l = data;
    for (size_t i = 0; i < l->n; i++) {
        weir__tls_cert_free(l->v[i]);
        l->v[i] = NULL;
    }
}

static void free_server(void *data)
{
    weir__tls_server_free(data);
}

/* The value node of key name in mapping m, or NULL. */
static const struct ynode *map_value(const struct ynode *m, const char *name)
{
    m = weir__ynode_deref(m);
    if (m == NULL || m->type != YN_MAP) {
        return NULL;
    }
    for (const struct ynode *k = m->first; k != NULL && k->next != NULL; k = k->next->next) {
        const struct ynode *kd = weir__ynode_deref(k);
        if (kd->type == YN_SCALAR && strcmp(kd->text, name) == 0) {
            return k->next;
        }
    }
    return NULL;
}

#define CRT(f) WEIR__CFG_AT(struct weir_cfg_tls_certificate, f)

static const struct weir__cfg_key cert_keys[] = {
    {"cert", WEIR__CFG_T_STRING, WEIR__CFG_REQUIRED, CRT(cert), .what = "a PEM file path"},
    {"key", WEIR__CFG_T_STRING, WEIR__CFG_REQUIRED, CRT(key), .what = "a PEM file path"},
    WEIR__CFG_STRING("ocsp_response", CRT(ocsp_response), "a DER file path", NULL),
};

static const struct weir__cfg_section cert_section =
    WEIR__CFG_TABLE("a mapping with cert, key and ocsp_response", cert_keys, NULL);

/* certificates: the file names only; tls_build reads the files once every key is known. */
static void certificates_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                               const struct ynode *v)
{
    struct weir_cfg_listener_tls *t = f->obj;
    const struct ynode *seq = weir__cfg_sequence(c, v, "a sequence of certificates");
    if (seq == NULL) {
        return;
    }
    if (seq->n == 0) {
        weir__cfg_err(c, v, "expected at least one certificate");
        return;
    }
    struct weir_cfg_tls_certificate *certs = weir__cfg_keep_array(c, seq->n, sizeof(*certs));
    if (certs == NULL) {
        c->oom = true;
        return;
    }
    size_t i = 0;
    for (const struct ynode *it = seq->first; it != NULL; it = it->next, i++) {
        size_t old = weir__cfg_path_index(c, i);
        weir__cfg_defaults(&cert_section, &certs[i]);
        (void)weir__cfg_walk(c, it, &cert_section, &certs[i]);
        weir__cfg_path_pop(c, old);
    }
    t->certificates = certs;
    t->ncertificates = seq->n;
}

/*
 * Reads and checks every certificate and key, each error at the key naming the file. Returns
 * the loaded ones (all of them, or NULL after reporting).
 */
static struct loaded *load_certificates(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                                        const struct weir_cfg_listener_tls *t)
{
    struct loaded *l = weir_arena_calloc(c->tmp, sizeof(*l));
    struct weir__tls_cert **cv =
        weir_arena_calloc(c->tmp, (t->ncertificates + 1) * sizeof(struct weir__tls_cert *));
    if (l == NULL || cv == NULL || weir_arena_cleanup_add(c->tmp, free_loaded, l) != 0) {
        c->oom = true;
        return NULL;
    }
    l->v = cv;
    const struct ynode *seq = weir__ynode_deref(weir__cfg_value(f, "certificates"));
    const struct ynode *it = seq != NULL ? seq->first : NULL;
    size_t o1 = weir__cfg_path_key(c, "certificates");
    for (size_t i = 0; i < t->ncertificates && it != NULL; i++, it = it->next) {
        const struct weir_cfg_tls_certificate *e = &t->certificates[i];
        if (e->cert == NULL || e->key == NULL) {
            continue; /* reported by the walk */
        }
        enum weir__tls_cert_part part = WEIR_TLS_PART_CERT;
        char why[WEIR_TLS_ERRMAX];
        int rc = weir__tls_cert_load(e->cert, e->key, &cv[l->n], &part, why);
        if (rc == 0 && e->ocsp_response != NULL) {
            rc = weir__tls_cert_ocsp(cv[l->n], e->ocsp_response, why);
            if (rc != 0) {
                weir__tls_cert_free(cv[l->n]);
                cv[l->n] = NULL;
                part = WEIR_TLS_PART_OCSP;
            }
        }
        if (rc == 0) {
            l->n++;
        } else if (rc == WEIR_ENOMEM) {
            c->oom = true;
        } else {
            const char *key = part == WEIR_TLS_PART_CERT  ? "cert"
                              : part == WEIR_TLS_PART_KEY ? "key"
                                                          : "ocsp_response";
            size_t o2 = weir__cfg_path_index(c, i);
            size_t o3 = weir__cfg_path_key(c, key);
            weir__cfg_err(c, map_value(it, key), "%s", why);
            weir__cfg_path_pop(c, o3);
            weir__cfg_path_pop(c, o2);
        }
    }
    weir__cfg_path_pop(c, o1);
    return l->n == t->ncertificates ? l : NULL;
}

/* --- listeners[].tls.client_auth ---------------------------------------------------- */

static const char *const auth_modes[] = {"off", "optional", "required"};

/* optional and required need a ca; the files themselves are read by tls_build. */
static void client_auth_check(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    const struct weir_cfg_tls_client_auth *a = f->obj;
    if (a->mode != WEIR_CLIENT_AUTH_OFF && a->ca == NULL) {
        weir__cfg_err(c, f->m, "mode %s needs a ca: the CAs client certificates must chain to",
                      auth_modes[a->mode]);
    }
}

#define CA(f) WEIR__CFG_AT(struct weir_cfg_tls_client_auth, f)

static const struct weir__cfg_key client_auth_keys[] = {
    WEIR__CFG_ENUM("mode", CA(mode), auth_modes, WEIR_CLIENT_AUTH_OFF),
    WEIR__CFG_STRING("ca", CA(ca), "a PEM file path", NULL),
    WEIR__CFG_U32("verify_depth", CA(verify_depth), 0, 100, 1),
    WEIR__CFG_STRING("crl", CA(crl), "a PEM file path", NULL),
};

static const struct weir__cfg_section client_auth_section =
    WEIR__CFG_TABLE("a mapping of mode (off, optional, required), ca, verify_depth, crl",
                    client_auth_keys, client_auth_check);

static void ticket_files_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                               const struct ynode *v)
{
    struct weir_cfg_listener_tls *t = f->obj;
    const struct ynode *seq = weir__cfg_sequence(c, v, "a sequence of key file paths");
    if (seq == NULL) {
        return;
    }
    const char **files = weir__cfg_keep_array(c, seq->n ? seq->n : 1, sizeof(char *));
    if (files == NULL) {
        c->oom = true;
        return;
    }
    size_t i = 0;
    for (const struct ynode *it = seq->first; it != NULL; it = it->next, i++) {
        size_t old = weir__cfg_path_index(c, i);
        files[i] = weir__cfg_string_value(c, it, "a key file path");
        weir__cfg_path_pop(c, old);
    }
    t->ticket_key_files = files;
    t->nticket_key_files = seq->n;
}

/* The ticket keys, each file's error at its entry. NULL after reporting (or without tickets). */
static struct weir__tls_tickets *load_tickets(struct weir__cfg_ctx *c,
                                              const struct weir__cfg_frame *f,
                                              const struct weir_cfg_listener_tls *t, bool *ok)
{
    *ok = true;
    const struct ynode *fv = weir__cfg_value(f, "ticket_key_files");
    if (!t->session_tickets) {
        if (t->nticket_key_files > 0) {
            size_t old = weir__cfg_path_key(c, "ticket_key_files");
            weir__cfg_err(c, fv, "session_tickets is false: no ticket is made or accepted");
            weir__cfg_path_pop(c, old);
            *ok = false;
        }
        return NULL;
    }
    for (size_t i = 0; i < t->nticket_key_files; i++) {
        if (t->ticket_key_files[i] == NULL) {
            *ok = false;
            return NULL; /* reported */
        }
    }
    struct weir__tls_tickets *tk = NULL;
    size_t bad = 0;
    char why[WEIR_TLS_ERRMAX];
    uint32_t period = t->session_timeout_ms / 1000;
    int rc =
        weir__tls_tickets_new(t->ticket_key_files, t->nticket_key_files, period, &tk, &bad, why);
    if (rc == WEIR_ENOMEM) {
        c->oom = true;
        *ok = false;
    } else if (rc != 0) {
        const struct ynode *seq = weir__ynode_deref(fv);
        const struct ynode *at = seq != NULL ? seq->first : NULL;
        for (size_t i = 0; at != NULL && i < bad; i++) {
            at = at->next;
        }
        size_t o1 = weir__cfg_path_key(c, "ticket_key_files");
        size_t o2 = weir__cfg_path_index(c, bad);
        weir__cfg_err(c, at != NULL ? at : fv, "%s", why);
        weir__cfg_path_pop(c, o2);
        weir__cfg_path_pop(c, o1);
        *ok = false;
    }
    return tk;
}

/* A name of names[] or a sequence of them, as the set of their bits (0: none or an error). */
struct name_bit {
    const char *name;
    uint32_t bit;
};

static uint32_t name_set(struct weir__cfg_ctx *c, const struct ynode *v,
                         const struct name_bit *names, const char *what,
                         bool (*refuse)(struct weir__cfg_ctx *, const struct ynode *, const char *))
{
    const struct ynode *d = weir__ynode_deref(v);
    const struct ynode *one = d->type == YN_SEQ ? d->first : v;
    uint32_t set = 0;
    size_t i = 0;
    for (const struct ynode *it = one; it != NULL; it = d->type == YN_SEQ ? it->next : NULL, i++) {
        size_t old = d->type == YN_SEQ ? weir__cfg_path_index(c, i) : c->plen;
        const struct ynode *s = weir__cfg_scalar(c, it, what);
        const struct name_bit *nb = names;
        while (s != NULL && nb->name != NULL && strcmp(s->text, nb->name) != 0) {
            nb++;
        }
        if (s != NULL && nb->name != NULL) {
            set |= nb->bit;
        } else if (s != NULL && (refuse == NULL || !refuse(c, it, s->text))) {
            char shown[WEIR__CFG_DESCRIBE_MAX];
            weir__cfg_err(c, it, "expected %s, got %s", what,
                          weir__cfg_describe(s, shown, sizeof(shown)));
        }
        weir__cfg_path_pop(c, old);
    }
    return set;
}

/* TLS 1.0/1.1 and SSL get a reason of their own. true when it reported an error. */
static bool old_protocol(struct weir__cfg_ctx *c, const struct ynode *it, const char *s)
{
    if (strncmp(s, "TLSv1", 5) == 0 || strncmp(s, "SSLv", 4) == 0) {
        weir__cfg_err(c, it, "%s is not supported (it is broken): use TLSv1.2 or TLSv1.3", s);
        return true;
    }
    return false;
}

static void protocols_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                            const struct ynode *v)
{
    static const struct name_bit names[] = {
        {"TLSv1.2", WEIR_TLS_PROTO_12}, {"TLSv1.3", WEIR_TLS_PROTO_13}, {NULL, 0}};
    struct weir_cfg_listener_tls *t = f->obj;
    uint32_t set = name_set(c, v, names, "TLSv1.2 or TLSv1.3", old_protocol);
    if (set != 0) {
        t->protocols = set;
    }
}

/* alpn: h2 and http/1.1, one or both (h2 is preferred when a client offers both). */
static void alpn_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                       const struct ynode *v)
{
    static const struct name_bit names[] = {
        {"h2", WEIR_ALPN_H2}, {"http/1.1", WEIR_ALPN_HTTP11}, {NULL, 0}};
    struct weir_cfg_listener_tls *t = f->obj;
    uint32_t set = name_set(c, v, names, "h2 or http/1.1", NULL);
    if (set != 0) {
        t->alpn = set;
    }
}

static bool list_ok(struct weir__cfg_ctx *c, const struct ynode *v, const char *kind, const char *s)
{
    char why[WEIR_TLS_ERRMAX];
    if (weir__tls_check_list(kind, s, why)) {
        return true;
    }
    weir__cfg_err(c, v, "%s", why);
    return false;
}

static bool ciphers_ok(struct weir__cfg_ctx *c, const struct ynode *v, const char *s)
{
    return list_ok(c, v, "ciphers", s);
}

static bool suites_ok(struct weir__cfg_ctx *c, const struct ynode *v, const char *s)
{
    return list_ok(c, v, "ciphersuites", s);
}

static bool curves_ok(struct weir__cfg_ctx *c, const struct ynode *v, const char *s)
{
    return list_ok(c, v, "curves", s);
}

/* An error about a client_auth file, at its key. */
static void client_auth_err(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                            const char *key, const char *why)
{
    const struct ynode *sec = weir__cfg_value(f, "client_auth");
    const struct ynode *at = map_value(sec, key);
    size_t o1 = weir__cfg_path_key(c, "client_auth");
    size_t o2 = at != NULL ? weir__cfg_path_key(c, key) : c->plen;
    weir__cfg_err(c, at != NULL ? at : sec != NULL ? sec : f->m, "%s", why);
    weir__cfg_path_pop(c, o2);
    weir__cfg_path_pop(c, o1);
}

/* After every key: the default certificate, the files, then the server context. */
static void tls_build(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    struct weir_cfg_listener_tls *t = f->obj;
    const struct weir_cfg_tls_client_auth *ca = &t->client_auth;
    struct weir__tls_server_opts o = {
        .min_version = (t->protocols & WEIR_TLS_PROTO_12) ? WEIR_TLS_V12 : WEIR_TLS_V13,
        .max_version = (t->protocols & WEIR_TLS_PROTO_13) ? WEIR_TLS_V13 : WEIR_TLS_V12,
        .ciphers = t->ciphers,
        .ciphersuites = t->ciphersuites,
        .curves = t->curves,
        .session_tickets = t->session_tickets,
        .session_timeout = t->session_timeout_ms / 1000,
        .reject_unknown_sni = t->reject_unknown_sni,
        .early_data = t->early_data,
        .alpn_h2 = (t->alpn & WEIR_ALPN_H2) != 0,
        .alpn_http11 = (t->alpn & WEIR_ALPN_HTTP11) != 0,
        .prefer_server_ciphers = t->prefer_server_ciphers,
        .client_auth = ca->mode == WEIR_CLIENT_AUTH_REQUIRED   ? WEIR_TLS_AUTH_REQUIRED
                       : ca->mode == WEIR_CLIENT_AUTH_OPTIONAL ? WEIR_TLS_AUTH_OPTIONAL
                                                               : WEIR_TLS_AUTH_OFF,
        .client_ca = ca->ca,
        .client_crl = ca->crl,
        .verify_depth = ca->verify_depth,
    };
    if (t->default_certificate != NULL) {
        size_t i = 0;
        while (i < t->ncertificates && (t->certificates[i].cert == NULL ||
                                        strcmp(t->certificates[i].cert, t->default_certificate))) {
            i++;
        }
        if (i == t->ncertificates) {
            size_t old = weir__cfg_path_key(c, "default_certificate");
            weir__cfg_err(c, weir__cfg_value(f, "default_certificate"),
                          "'%s' is not the cert of any of certificates[]", t->default_certificate);
            weir__cfg_path_pop(c, old);
            return;
        }
        o.default_cert = i;
    }
    if (t->early_data && (!t->session_tickets || !(t->protocols & WEIR_TLS_PROTO_13))) {
        size_t old = weir__cfg_path_key(c, "early_data");
        weir__cfg_err(c, weir__cfg_value(f, "early_data"),
                      "0-RTT needs TLS 1.3 and session_tickets (early data rides on a resumed "
                      "session)");
        weir__cfg_path_pop(c, old);
    }
    if (t->ncertificates == 0 || weir_config_errors_count(c->errs) > 0) {
        return; /* errors were reported; nothing to build */
    }
    bool tickets_ok = true;
    o.tickets = load_tickets(c, f, t, &tickets_ok);
    struct loaded *l = load_certificates(c, f, t);
    if (l == NULL || !tickets_ok) {
        weir__tls_tickets_free(o.tickets);
        return;
    }
    char why[WEIR_TLS_ERRMAX];
    enum weir__tls_server_part part = WEIR_TLS_SPART_TLS;
    int rc = weir__tls_server_new(l->v, l->n, &o, &t->server, &part, why);
    for (size_t i = 0; i < l->n; i++) {
        l->v[i] = NULL; /* the server owns them now, even on failure */
    }
    l->n = 0;
    if (rc == WEIR_ENOMEM) {
        c->oom = true;
    } else if (rc != 0 && part != WEIR_TLS_SPART_TLS) {
        client_auth_err(c, f, part == WEIR_TLS_SPART_CA ? "ca" : "crl", why);
    } else if (rc != 0) {
        weir__cfg_err(c, f->m, "%s", why);
    } else if (weir_arena_cleanup_add(c->a, free_server, t->server) != 0) {
        weir__tls_server_free(t->server);
        t->server = NULL;
        c->oom = true;
    }
}

#define LT(f) WEIR__CFG_AT(struct weir_cfg_listener_tls, f)

static const struct weir__cfg_key tls_keys[] = {
    {"certificates", WEIR__CFG_T_CUSTOM, WEIR__CFG_REQUIRED, .parse = certificates_value,
     .sub = &cert_section},
    WEIR__CFG_STRING("default_certificate", LT(default_certificate), "a certificates[].cert", NULL),
    WEIR__CFG_BOOL("reject_unknown_sni", LT(reject_unknown_sni), false),
    WEIR__CFG_CUSTOM("protocols", WEIR__CFG_VALUE, protocols_value),
    {"ciphers", WEIR__CFG_T_STRING, 0, LT(ciphers), .what = "an OpenSSL cipher list",
     .valid = ciphers_ok},
    {"ciphersuites", WEIR__CFG_T_STRING, 0, LT(ciphersuites), .what = "TLS 1.3 suites",
     .valid = suites_ok},
    {"curves", WEIR__CFG_T_STRING, 0, LT(curves), .what = "a list of groups", .valid = curves_ok},
    WEIR__CFG_BOOL("prefer_server_ciphers", LT(prefer_server_ciphers), true),
    WEIR__CFG_BOOL("session_tickets", LT(session_tickets), true),
    WEIR__CFG_DURATION("session_timeout", LT(session_timeout_ms), 1000, 7u * 86400 * 1000,
                       3600 * 1000),
    WEIR__CFG_CUSTOM("ticket_key_files", WEIR__CFG_VALUE, ticket_files_value),
    WEIR__CFG_BOOL("early_data", LT(early_data), false),
    WEIR__CFG_CUSTOM("alpn", WEIR__CFG_VALUE, alpn_value),
    WEIR__CFG_SECTION("client_auth", LT(client_auth), &client_auth_section),
};

const struct weir__cfg_section weir__cfg_tls = WEIR__CFG_TABLE(
    "a mapping of TLS settings (certificates, protocols, ciphers...)", tls_keys, tls_build);

/* --- upstreams.*.tls ---------------------------------------------------------------- */

static void free_client(void *data)
{
    weir__tls_client_free(data);
}

/*
 * A client context from o into *out, kept until the snapshot is freed; an error goes to the
 * key of mapping m that names the file (m itself when it has no such key).
 */
static void client_new_at(struct weir__cfg_ctx *c, const struct weir__tls_client_opts *o,
                          const struct ynode *m, struct weir_tls_client **out)
{
    enum weir__tls_client_part part = WEIR_TLS_CPART_CA;
    char why[WEIR_TLS_ERRMAX];
    int rc = weir__tls_client_new(o, out, &part, why);
    if (rc == WEIR_ENOMEM) {
        c->oom = true;
        return;
    }
    if (rc != 0) {
        const char *key = part == WEIR_TLS_CPART_CA     ? "ca"
                          : part == WEIR_TLS_CPART_CERT ? "client_cert"
                                                        : "client_key";
        const struct ynode *at = map_value(m, key);
        size_t old = at != NULL ? weir__cfg_path_key(c, key) : c->plen;
        weir__cfg_err(c, at != NULL ? at : m, "%s", why);
        weir__cfg_path_pop(c, old);
        return;
    }
    if (weir_arena_cleanup_add(c->a, free_client, *out) != 0) {
        weir__tls_client_free(*out);
        *out = NULL;
        c->oom = true;
    }
}

static void client_build(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    struct weir_cfg_upstream_tls *t = f->obj;
    if ((t->client_cert == NULL) != (t->client_key == NULL)) {
        const char *have = t->client_cert != NULL ? "client_cert" : "client_key";
        size_t old = weir__cfg_path_key(c, have);
        weir__cfg_err(c, weir__cfg_value(f, have), "client_cert and client_key go together");
        weir__cfg_path_pop(c, old);
        return;
    }
    struct weir__tls_client_opts o = {
        .ca = t->ca,
        .client_cert = t->client_cert,
        .client_key = t->client_key,
        .no_session_reuse = !t->session_reuse,
    };
    client_new_at(c, &o, f->m, &t->client);
}

/* An SNI or verification name: a host name (letters, digits, '-', '.'), at most 253 bytes. */
static bool server_name_ok(struct weir__cfg_ctx *c, const struct ynode *v, const char *s)
{
    size_t n = strlen(s);
    bool ok = n > 0 && n <= 253 && s[0] != '.' && s[n - 1] != '.';
    for (size_t i = 0; ok && i < n; i++) {
        char ch = s[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '-' || ch == '.' || ch == '_';
    }
    if (!ok) {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, v, "expected a host name, got %s",
                      weir__cfg_describe(v, shown, sizeof(shown)));
    }
    return ok;
}

#define UT(f) WEIR__CFG_AT(struct weir_cfg_upstream_tls, f)

static const struct weir__cfg_key client_keys[] = {
    {"sni", WEIR__CFG_T_STRING, 0, UT(sni), .what = "a host name", .valid = server_name_ok},
    {"verify_name", WEIR__CFG_T_STRING, 0, UT(verify_name), .what = "a host name",
     .valid = server_name_ok},
    WEIR__CFG_BOOL("verify", UT(verify), true),
    WEIR__CFG_STRING("ca", UT(ca), "a PEM file path", NULL),
    WEIR__CFG_STRING("client_cert", UT(client_cert), "a PEM file path", NULL),
    WEIR__CFG_STRING("client_key", UT(client_key), "a PEM file path", NULL),
    WEIR__CFG_BOOL("session_reuse", UT(session_reuse), true),
};

const struct weir__cfg_section weir__cfg_upstream_tls =
    WEIR__CFG_TABLE("a mapping of upstream TLS settings (sni, verify, ca, client_cert...)",
                    client_keys, client_build);

void weir__cfg_upstream_tls_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                                  const struct ynode *v)
{
    struct weir_cfg_upstream_tls *t = &((struct weir_cfg_upstream *)f->obj)->tls;
    weir__cfg_defaults(&weir__cfg_upstream_tls, t);
    t->enabled = true;
    weir__cfg_walk(c, v, &weir__cfg_upstream_tls, t);
}

/* --- routes[].upstream_tls ------------------------------------------------------------ */

#define RUT(f) WEIR__CFG_AT(struct weir_cfg_route_upstream_tls, f)

static const struct weir__cfg_key route_tls_keys[] = {
    {"client_cert", WEIR__CFG_T_STRING, WEIR__CFG_REQUIRED, RUT(client_cert),
     .what = "a PEM file path"},
    {"client_key", WEIR__CFG_T_STRING, WEIR__CFG_REQUIRED, RUT(client_key),
     .what = "a PEM file path"},
};

const struct weir__cfg_section weir__cfg_route_tls = WEIR__CFG_TABLE(
    "a mapping of client_cert and client_key (the route's identity to its upstream)",
    route_tls_keys, NULL);

/*
 * After the route's upstream is known: a client context with the group's CA and
 * verification and this route's certificate, so only this route presents it.
 */
void weir__cfg_route_tls_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                               const struct ynode *v)
{
    struct weir_cfg_route *r = f->obj;
    struct weir_cfg_route_upstream_tls *t = &r->upstream_tls;
    weir__cfg_defaults(&weir__cfg_route_tls, t);
    if (!weir__cfg_walk(c, v, &weir__cfg_route_tls, t) || t->client_cert == NULL ||
        t->client_key == NULL || r->upstream == NULL) {
        return; /* reported */
    }
    if (!r->upstream->tls.enabled) {
        weir__cfg_err(c, v, "upstream '%s' has no tls: add upstreams.%s.tls first",
                      r->upstream->name, r->upstream->name);
        return;
    }
    struct weir__tls_client_opts o = {
        .ca = r->upstream->tls.ca,
        .client_cert = t->client_cert,
        .client_key = t->client_key,
        .no_session_reuse = !r->upstream->tls.session_reuse,
    };
    client_new_at(c, &o, v, &t->client);
}

void weir__cfg_listener_tls(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                            const struct ynode *v)
{
    struct weir_cfg_listener_tls *t = &((struct weir_cfg_listener *)f->obj)->tls;
    weir__cfg_defaults(&weir__cfg_tls, t);
    t->protocols = WEIR_TLS_PROTO_12 | WEIR_TLS_PROTO_13;
    t->alpn = WEIR_ALPN_H2 | WEIR_ALPN_HTTP11;
    t->enabled = true;
    weir__cfg_walk(c, v, &weir__cfg_tls, t);
}
