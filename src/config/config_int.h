/*
 * Private to src/config/: the YAML node tree the loader validates, the error list, and the
 * helpers shared by the loader's files (value parsers, did-you-mean, quoting for messages).
 */
#ifndef WEIR_CONFIG_INT_H
#define WEIR_CONFIG_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "weir/config.h"
#include "weir/mem.h"

/* A config file larger than this is refused before parsing (no sane config comes close). */
#define WEIR__CFG_MAX_TEXT (4u << 20)
/* Past this many errors the rest are dropped and one line says so. */
#define WEIR__CFG_MAX_ERRORS 100

enum ynode_type {
    YN_SCALAR = 0,
    YN_SEQ,
    YN_MAP,
    YN_ALIAS, /* target points at the anchored node */
};

/*
 * One YAML node, with 1-based line:col of where it starts. Children form a list; a mapping's
 * children alternate key, value. Everything lives in the parse arena.
 */
struct ynode {
    enum ynode_type type;
    int line;
    int col;
    bool plain;       /* scalar written without quotes or block style */
    const char *text; /* scalar text (NUL-terminated copy; may hold NULs), alias name */
    size_t len;
    struct ynode *target; /* alias: the anchored node, NULL when unknown */
    struct ynode *first;
    struct ynode *last;
    struct ynode *next;
    struct ynode *parent; /* while building */
    const char *anchor;   /* while building: a collection's anchor, registered at its end */
    size_t anchor_len;
    size_t n; /* children */
};

/* The node an alias names (or the node itself). Never returns an alias. */
static inline const struct ynode *weir__ynode_deref(const struct ynode *n)
{
    return n != NULL && n->type == YN_ALIAS ? n->target : n;
}

/* A plain empty, "~" or "null" scalar: YAML's null, treated as "not set". */
bool weir__ynode_is_null(const struct ynode *n);

/*
 * Parses text into a tree in arena a. On a YAML syntax error adds the errors libfyaml reports
 * to errs and stores NULL. *root is NULL for an empty document. 0, WEIR_ECONFIG, WEIR_ENOMEM.
 */
int weir__yaml_parse(const char *text, size_t len, struct weir_arena *a,
                     struct weir_config_errors *errs, struct ynode **root);

/* Errors. */
struct weir_config_errors *weir__cfgerr_new(const char *file);
/* Adds one error; key may be "" and line 0. 0 or WEIR_ENOMEM. */
int weir__cfgerr_add(struct weir_config_errors *errs, int line, int col, const char *key,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int weir__cfgerr_vadd(struct weir_config_errors *errs, int line, int col, const char *key,
                      const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

/* Orders errors by line:col (placeless ones first), keeping the order of equal places. */
void weir__cfgerr_sort(struct weir_config_errors *errs);

/* Damerau-Levenshtein (optimal string alignment) distance, ASCII case-insensitive. */
size_t weir__cfg_edit_distance(const char *a, size_t alen, const char *b, size_t blen);
/* Whether a misspelling at distance d of a candidate is close enough to suggest it. */
bool weir__cfg_is_close(size_t d, size_t typed_len, size_t cand_len);
/* The index of the closest candidate worth suggesting, or -1. */
long weir__cfg_suggest(const char *typed, size_t len, const char *const *cands, size_t n);

/*
 * Writes n for an error message into buf: a scalar as 'text' (control bytes escaped, long
 * text cut with "..."), else "a mapping", "a sequence" or "nothing". Returns buf.
 */
const char *weir__cfg_describe(const struct ynode *n, char *buf, size_t size);
#define WEIR__CFG_DESCRIBE_MAX 96

/*
 * Checks a "host:port" address: a numeric IPv4, [IPv6] or localhost, and a port 1..65535
 * (0 too when allow_port0). NULL when valid, else a short reason for the error message.
 */
const char *weir__cfg_check_address(const char *s, size_t len, bool allow_port0);

/*
 * Checks a backend's "host:port": as weir__cfg_check_address (port 1..65535), or a DNS name
 * for host, which sets *dns. NULL when valid, else a short reason.
 */
const char *weir__cfg_check_backend_address(const char *s, size_t len, bool *dns);

/* Whether s is an HTTP field name (RFC 9110 token). */
bool weir__cfg_is_token(const char *s, size_t len);

#endif
