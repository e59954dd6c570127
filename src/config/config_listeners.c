/*
 * The listeners: section: a sequence of addresses or mappings (address, name,
 * max_connections, tls), each address used once.
 */
#include <string.h>

#include "config/config_int.h"

static void listener_address(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                             const struct ynode *v)
{
    struct weir_cfg_listener *l = f->obj;
    l->address = weir__cfg_address_value(c, v, NULL);
}

#define LST(f) WEIR__CFG_AT(struct weir_cfg_listener, f)

static const struct weir__cfg_key listener_keys[] = {
    WEIR__CFG_CUSTOM("address", WEIR__CFG_REQUIRED, listener_address),
    WEIR__CFG_STRING("name", LST(name), "a name", ""),
    WEIR__CFG_U32("max_connections", LST(max_connections), 0, 10000000, 0),
    {"tls", WEIR__CFG_T_CUSTOM, WEIR__CFG_VALUE, .parse = weir__cfg_listener_tls,
     .sub = &weir__cfg_tls},
};

const struct weir__cfg_section weir__cfg_listener = WEIR__CFG_TABLE(
    "host:port or a mapping with address, name, max_connections, tls", listener_keys, NULL);

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
