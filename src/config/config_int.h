/*
 * Private to src/config/: the YAML node tree the loader validates, the error list, the key
 * tables every section is described by and the walker that checks a mapping against one, and
 * the helpers shared by the loader's files (value parsers, did-you-mean, quoting for messages).
 */
#ifndef WEIR_CONFIG_INT_H
#define WEIR_CONFIG_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* --- checking --------------------------------------------------------------------------- */

/*
 * Checking state. Section code returns nothing: an error in one key must not stop the others
 * from being checked, so problems go to errs and an allocation failure sets the sticky oom
 * flag, which the loader turns into WEIR_ENOMEM at the end. path is the dotted key path of
 * the node being checked ("routes[1].match"), which every error carries.
 */
struct weir__cfg_ctx {
    struct weir_config_errors *errs;
    struct weir_arena *a;   /* the snapshot's */
    struct weir_arena *tmp; /* the parse tree's: scratch that dies with the load */
    struct weir_config *cfg;
    char path[256];
    size_t plen;
    bool oom;
};

/* Path steps: each returns the length to give weir__cfg_path_pop to undo it. */
size_t weir__cfg_path_add(struct weir__cfg_ctx *c, const char *sep, const char *s, size_t len);
size_t weir__cfg_path_key(struct weir__cfg_ctx *c, const char *key);
size_t weir__cfg_path_index(struct weir__cfg_ctx *c, size_t i);
void weir__cfg_path_pop(struct weir__cfg_ctx *c, size_t old);

/* Adds an error at n's place under the current path. */
void weir__cfg_err(struct weir__cfg_ctx *c, const struct ynode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A copy of s (or a zeroed array) in the snapshot's arena; NULL, and oom set, on failure. */
char *weir__cfg_keep(struct weir__cfg_ctx *c, const char *s, size_t len);
void *weir__cfg_keep_array(struct weir__cfg_ctx *c, size_t n, size_t size);

/* "a, b, c" from a list of names, cut with "..." to fit. Returns buf. */
const char *weir__cfg_join(const char *const *names, size_t n, char *buf, size_t size);

/* Reports a key that is not a string; true when k can be used as a key. */
bool weir__cfg_scalar_key(struct weir__cfg_ctx *c, const struct ynode *k);
/* Reports key k as a duplicate of first, under the path of k. */
void weir__cfg_duplicate_key(struct weir__cfg_ctx *c, const struct ynode *k,
                             const struct ynode *first);
/* true when n is a mapping, else reports "expected <what>, got ...". */
bool weir__cfg_expect_map(struct weir__cfg_ctx *c, const struct ynode *n, const char *what);
/* The sequence n is (aliases followed), or NULL after reporting "expected <what>". */
const struct ynode *weir__cfg_sequence(struct weir__cfg_ctx *c, const struct ynode *n,
                                       const char *what);
/* The scalar n is (aliases followed), or NULL after reporting "expected <what>, got ...". */
const struct ynode *weir__cfg_scalar(struct weir__cfg_ctx *c, const struct ynode *n,
                                     const char *what);
/* A non-empty string without control characters, kept in the snapshot; NULL after an error. */
const char *weir__cfg_string_value(struct weir__cfg_ctx *c, const struct ynode *n,
                                   const char *what);
/*
 * A "host:port" string kept in the snapshot, or NULL after reporting why not. With dns NULL
 * (listeners) the host is numeric or localhost and the port may be 0; with dns set (backends)
 * the host may also be a DNS name, and *dns says whether it is one.
 */
const char *weir__cfg_address_value(struct weir__cfg_ctx *c, const struct ynode *n, bool *dns);
/* Decimal digits only, no sign, no overflow. */
bool weir__cfg_parse_u64(const char *s, size_t len, uint64_t *out);

/* --- key tables ------------------------------------------------------------------------- */

/* What a key's value is, and so how the walker parses it and what its row's fields mean. */
enum weir__cfg_type {
    WEIR__CFG_T_BOOL = 0, /* bool; true/false, yes/no, on/off */
    WEIR__CFG_T_U32,      /* uint32_t, min..max */
    WEIR__CFG_T_SIZE,     /* uint64_t bytes ("16k"), min..max */
    WEIR__CFG_T_SIZE32,   /* uint32_t bytes, min..max */
    WEIR__CFG_T_DURATION, /* uint32_t milliseconds ("30s"), min..max */
    WEIR__CFG_T_PERCENT,  /* uint32_t, written "20%", min..max */
    WEIR__CFG_T_STRING,   /* const char *; `what` names it in errors; `valid` may refuse it */
    WEIR__CFG_T_ENUM,     /* the index of one of `names`, into an enum (or a bool: 2 names) */
    WEIR__CFG_T_KEYWORD,  /* const char *: one of `names`, stored as the table spells it */
    WEIR__CFG_T_SECTION,  /* a mapping checked against `sub`, into the struct at `off` */
    WEIR__CFG_T_CUSTOM,   /* `parse` does it all; the field is zero until it does */
};

#define WEIR__CFG_REQUIRED 1u /* missing is an error, and so is "key:" with nothing */
#define WEIR__CFG_VALUE    2u /* not required, but a value when present: "key:" alone is an error */
#define WEIR__CFG_LATE     4u /* checked after the section's other keys (routes name upstreams) */
#define WEIR__CFG_SEQ      8u /* CUSTOM: a sequence of `sub` items ("listeners[].name") */
#define WEIR__CFG_NAMED    16u /* CUSTOM: a mapping of names to `sub` items ("upstreams.*.") */

/* The widest table (server:). Raise it when a section outgrows it; fields() asserts it. */
#define WEIR__CFG_MAX_KEYS 32

struct weir__cfg_frame;
struct weir__cfg_section;

/*
 * One key of a section: everything the loader knows about it (nginx's ngx_command_t). The
 * walker finds the key, applies `def` before the file is read, and parses a present value by
 * its type into the field at `off`, within min..max. A key that needs code of its own is
 * WEIR__CFG_T_CUSTOM with a `parse` callback; `check` (any type) runs after the key has been
 * parsed or found absent, for rules that involve other keys.
 */
struct weir__cfg_key {
    const char *name;
    enum weir__cfg_type type;
    unsigned flags;
    size_t off;  /* offsetof the field in the section's struct */
    size_t size; /* sizeof that field: checked against the type when stored */
    uint64_t min;
    uint64_t max;
    uint64_t def;             /* numbers and bools; ENUM and KEYWORD: the index in names */
    const char *sdef;         /* STRING: the default (a literal), or NULL */
    const char *what;         /* STRING: what errors say was expected ("a file path") */
    const char *const *names; /* ENUM, KEYWORD */
    size_t nnames;
    /* STRING: called with the parsed string before it is stored; reports and returns false
       to refuse it. */
    bool (*valid)(struct weir__cfg_ctx *c, const struct ynode *v, const char *s);
    /* CUSTOM: parses v, the value (the path already ends in the key's name). */
    void (*parse)(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f, const struct ynode *v);
    /* After the key (present or not), with the path of the section. */
    void (*check)(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f);
    /* SECTION: its keys; CUSTOM: the keys of the items it parses (for the key list). */
    const struct weir__cfg_section *sub;
};

/* A mapping with a fixed set of keys: server:, server.limits, an upstream group... */
struct weir__cfg_section {
    const char *what; /* what an error says was expected: "a mapping of limits" */
    const struct weir__cfg_key *keys;
    size_t nkeys;
    /* After every key, with the path of the section: rules that span several keys. */
    void (*check)(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f);
};

/* A section being checked: what callbacks see. */
struct weir__cfg_frame {
    const struct weir__cfg_section *sec;
    const struct ynode *m;        /* the mapping */
    const struct ynode *const *v; /* v[i]: the value of sec->keys[i]; NULL when absent or null */
    void *obj;                    /* the struct the keys' offsets are in */
};

/* The value of the section's key name (which must be in its table), or NULL when absent. */
const struct ynode *weir__cfg_value(const struct weir__cfg_frame *f, const char *name);

/*
 * Checks mapping m against sec into obj: unknown keys (with did-you-mean), duplicates,
 * required keys, then each key in table order (LATE ones last), then sec->check. A null m is
 * an empty mapping. false (after reporting it) when m is not a mapping.
 */
bool weir__cfg_walk(struct weir__cfg_ctx *c, const struct ynode *m,
                    const struct weir__cfg_section *sec, void *obj);

/* Stores every row's default into obj, into SECTION rows' structs too (not CUSTOM ones'). */
void weir__cfg_defaults(const struct weir__cfg_section *sec, void *obj);

/*
 * Calls cb with the dotted path of every key the loader knows, parents before their keys, in
 * table order: "server", "server.limits", "server.limits.max_headers", "listeners",
 * "listeners[].address", "upstreams.*.health_check.interval"...
 */
typedef void weir__cfg_key_cb(const char *path, const struct weir__cfg_key *key, void *arg);
void weir__config_keys_foreach(weir__cfg_key_cb *cb, void *arg);

/* Rows: the location of a field, and the plain types (rows with flags or hooks are written
   out with designated initializers). */
#define WEIR__CFG_AT(type, field) .off = offsetof(type, field), .size = sizeof(((type *)0)->field)
#define WEIR__CFG_SELF(type)      .off = 0, .size = sizeof(type)
#define WEIR__CFG_NAMES(list)     .names = (list), .nnames = sizeof(list) / sizeof((list)[0])

#define WEIR__CFG_BOOL(key, at, d)                                                                 \
    {                                                                                              \
        (key), WEIR__CFG_T_BOOL, 0, at, .def = (d)                                                 \
    }
#define WEIR__CFG_U32(key, at, lo, hi, d)                                                          \
    {                                                                                              \
        (key), WEIR__CFG_T_U32, 0, at, .min = (lo), .max = (hi), .def = (d)                        \
    }
#define WEIR__CFG_SIZE(key, at, lo, hi, d)                                                         \
    {                                                                                              \
        (key), WEIR__CFG_T_SIZE, 0, at, .min = (lo), .max = (hi), .def = (d)                       \
    }
#define WEIR__CFG_SIZE32(key, at, lo, hi, d)                                                       \
    {                                                                                              \
        (key), WEIR__CFG_T_SIZE32, 0, at, .min = (lo), .max = (hi), .def = (d)                     \
    }
#define WEIR__CFG_DURATION(key, at, lo, hi, d)                                                     \
    {                                                                                              \
        (key), WEIR__CFG_T_DURATION, 0, at, .min = (lo), .max = (hi), .def = (d)                   \
    }
#define WEIR__CFG_PERCENT(key, at, lo, hi, d)                                                      \
    {                                                                                              \
        (key), WEIR__CFG_T_PERCENT, 0, at, .min = (lo), .max = (hi), .def = (d)                    \
    }
#define WEIR__CFG_STRING(key, at, what_, d)                                                        \
    {                                                                                              \
        (key), WEIR__CFG_T_STRING, 0, at, .what = (what_), .sdef = (d)                             \
    }
#define WEIR__CFG_ENUM(key, at, list, d)                                                           \
    {                                                                                              \
        (key), WEIR__CFG_T_ENUM, 0, at, WEIR__CFG_NAMES(list), .def = (d)                          \
    }
#define WEIR__CFG_KEYWORD(key, at, list, d)                                                        \
    {                                                                                              \
        (key), WEIR__CFG_T_KEYWORD, 0, at, WEIR__CFG_NAMES(list), .def = (d)                       \
    }
#define WEIR__CFG_SECTION(key, at, section)                                                        \
    {                                                                                              \
        (key), WEIR__CFG_T_SECTION, 0, at, .sub = (section)                                        \
    }
#define WEIR__CFG_CUSTOM(key, flags_, fn)                                                          \
    {                                                                                              \
        (key), WEIR__CFG_T_CUSTOM, (flags_), .parse = (fn)                                         \
    }
#define WEIR__CFG_TABLE(what_, rows, check_)                                                       \
    {                                                                                              \
        (what_), (rows), sizeof(rows) / sizeof((rows)[0]), (check_)                                \
    }

/* --- the sections (one file each) ------------------------------------------------------- */

/* config_server.c */
extern const struct weir__cfg_section weir__cfg_server;
/* config_listeners.c: listeners: */
extern const struct weir__cfg_section weir__cfg_listener;
/* config_tls.c: listeners[].tls */
extern const struct weir__cfg_section weir__cfg_tls;
extern const struct weir__cfg_section weir__cfg_upstream_tls;
extern const struct weir__cfg_section weir__cfg_route_tls;
void weir__cfg_route_tls_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                               const struct ynode *v);
void weir__cfg_upstream_tls_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                                  const struct ynode *v);
void weir__cfg_listener_tls(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                            const struct ynode *v);
void weir__cfg_listeners(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                         const struct ynode *v);
/* config_routes.c: routes: (after upstreams: a route names its group) */
extern const struct weir__cfg_section weir__cfg_route;
void weir__cfg_routes(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                      const struct ynode *v);
/* config_upstreams.c: upstreams: */
extern const struct weir__cfg_section weir__cfg_upstream;
void weir__cfg_upstreams(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                         const struct ynode *v);
/* config_cache.c: cache: (zones) and routes[].cache (zones come before routes) */
extern const struct weir__cfg_section weir__cfg_cache;
extern const struct weir__cfg_section weir__cfg_route_cache;
void weir__cfg_route_cache_value(struct weir__cfg_ctx *c, const struct weir__cfg_frame *f,
                                 const struct ynode *v);
/* config.c: the top level, whose rows are the sections above */
extern const struct weir__cfg_section weir__cfg_root;

#endif
