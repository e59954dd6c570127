/*
 * The listeners: section: a sequence of addresses or mappings (address, name,
 * max_connections, redirect_https, tls), each address used once.
 */
#include <string.h>

#include "config/config_int.h"

static void listener_address(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                             const struct ynode *v)
{
    struct weir_cfg_listener *l = f->obj;
    l->address = weir__cfg_address_value(c, v, NULL);
}

/* redirect_https: true (port 443), false, or the https port to send clients to. */
static void redirect_https_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                                 const struct ynode *v)
{
    struct weir_cfg_listener *l = f->obj;
    const struct ynode *s = weir__cfg_scalar(c, v, "true, false or a port");
    if (s == NULL) {
        return;
    }
    uint64_t port = 0;
    if (strcmp(s->text, "true") == 0 || strcmp(s->text, "yes") == 0 || strcmp(s->text, "on") == 0) {
        l->redirect_https = 443;
    } else if (strcmp(s->text, "false") == 0 || strcmp(s->text, "no") == 0 ||
               strcmp(s->text, "off") == 0) {
        l->redirect_https = 0;
    } else if (weir__cfg_parse_u64(s->text, strlen(s->text), &port) && port >= 1 && port <= 65535) {
        l->redirect_https = (uint16_t)port;
    } else {
        char shown[WEIR__CFG_DESCRIBE_MAX];
        weir__cfg_err(c, v, "expected true, false or a port (1..65535), got %s",
                      weir__cfg_describe(s, shown, sizeof(shown)));
    }
}

/* A TLS listener has nothing to redirect to. */
static void listener_check(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f)
{
    const struct weir_cfg_listener *l = f->obj;
    if (l->h2c && l->tls.enabled) {
        size_t old = weir__cfg_path_key(c, "h2c");
        weir__cfg_err(c, weir__cfg_value(f, "h2c"),
                      "h2c is HTTP/2 in cleartext: a TLS listener offers h2 by ALPN (tls.alpn)");
        weir__cfg_path_pop(c, old);
    }
    if (l->redirect_https != 0 && l->tls.enabled) {
        size_t old = weir__cfg_path_key(c, "redirect_https");
        weir__cfg_err(c, weir__cfg_value(f, "redirect_https"),
                      "a TLS listener already speaks https: redirect_https is for cleartext "
                      "listeners");
        weir__cfg_path_pop(c, old);
    }
}

#define LST(f) WEIR__CFG_AT(struct weir_cfg_listener, f)

static const struct weir__cfg_key listener_keys[] = {
    WEIR__CFG_CUSTOM("address", WEIR__CFG_REQUIRED, listener_address),
    WEIR__CFG_STRING("name", LST(name), "a name", ""),
    WEIR__CFG_U32("max_connections", LST(max_connections), 0, 10000000, 0),
    WEIR__CFG_CUSTOM("redirect_https", WEIR__CFG_VALUE, redirect_https_value),
    WEIR__CFG_BOOL("h2c", LST(h2c), false),
    {"tls", WEIR__CFG_T_CUSTOM, WEIR__CFG_VALUE, .parse = weir__cfg_listener_tls,
     .sub = &weir__cfg_tls},
};

const struct weir__cfg_section weir__cfg_listener =
    WEIR__CFG_TABLE("host:port or a mapping with address, name, max_connections, redirect_https, "
                    "h2c, tls",
                    listener_keys, listener_check);

static void listener_item(struct weir__cfg_ctx *c, const struct ynode *n,
                          struct weir_cfg_listener *l)
{
    const struct ynode *d = weir__ynode_deref(n);
    weir__cfg_defaults(&weir__cfg_listener, l);
    if (d->type == YN_SCALAR && !weir__ynode_is_null(d)) {
        l->address = weir__cfg_address_value(c, n, NULL);
        return;
    }
    weir__cfg_walk(c, n, &weir__cfg_listener, l);
}

void weir__cfg_listeners(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                         const struct ynode *v)
{
    struct weir_config *cfg = f->obj;
    const struct ynode *seq = weir__cfg_sequence(c, v, "a sequence of listeners");
    if (seq == NULL || seq->n == 0) {
        return;
    }
    struct weir_cfg_listener *ls = weir__cfg_keep_array(c, seq->n, sizeof(*ls));
    /* An array of pointers: sizeof(*where) is a pointer's size on purpose. */
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    const struct ynode **where = weir_arena_calloc(c->tmp, seq->n * sizeof(*where));
    if (ls == NULL || where == NULL) {
        c->oom = true;
        return;
    }
    size_t i = 0;
    for (const struct ynode *it = seq->first; it != NULL; it = it->next, i++) {
        size_t old = weir__cfg_path_index(c, i);
        listener_item(c, it, &ls[i]);
        where[i] = it;
        for (size_t j = 0; ls[i].address != NULL && j < i; j++) {
            if (ls[j].address != NULL && strcmp(ls[i].address, ls[j].address) == 0) {
                weir__cfg_err(c, it,
                              "listener address '%s' is already used by listeners[%zu] (line %d)",
                              ls[i].address, j, where[j]->line);
                break;
            }
        }
        weir__cfg_path_pop(c, old);
    }
    cfg->listeners = ls;
    cfg->nlisteners = seq->n;
}
