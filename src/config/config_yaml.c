/*
 * YAML text to a small node tree, through libfyaml's event parser. We keep our own tree rather
 * than libfyaml's document so that every node carries its line:col, duplicate keys reach the
 * validator (which reports all of them, not only the first), aliases stay references (no
 * expansion, so no billion-laughs), and libfyaml's diagnostics are collected, never printed.
 */
#include <string.h>

#include <libfyaml.h>

#include "config/config_int.h"
#include "weir/error.h"

struct anchor {
    struct anchor *next;
    const char *name;
    size_t len;
    struct ynode *node;
};

struct builder {
    struct weir_arena *a;
    struct weir_config_errors *errs;
    struct ynode *root;
    struct ynode *cur; /* open collection */
    struct anchor *anchors;
    int line; /* last known position, for events without a mark (empty scalars) */
    int col;
    int docs;
    bool ended; /* saw STREAM_END: libfyaml read the whole text */
};

bool weir__ynode_is_null(const struct ynode *n)
{
    n = weir__ynode_deref(n);
    if (n == NULL) {
        return true;
    }
    if (n->type != YN_SCALAR || !n->plain) {
        return false;
    }
    return n->len == 0 || strcmp(n->text, "~") == 0 || strcmp(n->text, "null") == 0 ||
           strcmp(n->text, "Null") == 0 || strcmp(n->text, "NULL") == 0;
}

/*
 * Where n starts, 1-based. libfyaml marks a quoted scalar after its quote and an alias after
 * its '*'; point at the quote or star, where an operator's eye goes. An empty value has no mark
 * and gets the last one seen: its key's.
 */
static void set_pos(struct builder *b, struct ynode *n, struct fy_event *ev, bool lead_char)
{
    const struct fy_mark *m = fy_event_start_mark(ev);
    if (m != NULL) {
        b->line = m->line + 1;
        b->col = m->column + 1;
    }
    n->line = b->line;
    n->col = b->col;
    if (m != NULL && lead_char && n->col > 1) {
        n->col--;
    }
}

static int text_of(struct builder *b, struct fy_token *t, const char **text, size_t *len)
{
    size_t n = 0;
    const char *s = t != NULL ? fy_token_get_text(t, &n) : "";
    if (s == NULL) {
        s = "";
        n = 0;
    }
    char *copy = weir_arena_strndup(b->a, s, n);
    if (copy == NULL) {
        return WEIR_ENOMEM;
    }
    *text = copy;
    *len = n;
    return 0;
}

static int add_anchor(struct builder *b, const char *name, size_t len, struct ynode *n)
{
    struct anchor *an = weir_arena_alloc(b->a, sizeof(*an));
    if (an == NULL) {
        return WEIR_ENOMEM;
    }
    an->name = name;
    an->len = len;
    an->node = n;
    an->next = b->anchors;
    b->anchors = an;
    return 0;
}

static struct ynode *find_anchor(const struct builder *b, const char *name, size_t len)
{
    for (const struct anchor *an = b->anchors; an != NULL; an = an->next) {
        if (an->len == len && memcmp(an->name, name, len) == 0) {
            return an->node; /* newest first: a redefined anchor shadows the old one */
        }
    }
    return NULL;
}

static void attach(struct builder *b, struct ynode *n)
{
    struct ynode *p = b->cur;
    n->parent = p;
    if (p == NULL) {
        if (b->root == NULL) {
            b->root = n;
        }
        return;
    }
    if (p->last != NULL) {
        p->last->next = n;
    } else {
        p->first = n;
    }
    p->last = n;
    p->n++;
}

static int on_scalar(struct builder *b, struct fy_event *ev)
{
    struct ynode *n = weir_arena_calloc(b->a, sizeof(*n));
    if (n == NULL || text_of(b, ev->scalar.value, &n->text, &n->len) != 0) {
        return WEIR_ENOMEM;
    }
    n->type = YN_SCALAR;
    enum fy_scalar_style style = fy_token_scalar_style(ev->scalar.value);
    n->plain = style == FYSS_PLAIN;
    set_pos(b, n, ev, style == FYSS_SINGLE_QUOTED || style == FYSS_DOUBLE_QUOTED);
    attach(b, n);
    if (ev->scalar.anchor == NULL) {
        return 0;
    }
    const char *name;
    size_t len;
    if (text_of(b, ev->scalar.anchor, &name, &len) != 0) {
        return WEIR_ENOMEM;
    }
    return add_anchor(b, name, len, n);
}

static int on_alias(struct builder *b, struct fy_event *ev)
{
    struct ynode *n = weir_arena_calloc(b->a, sizeof(*n));
    if (n == NULL || text_of(b, ev->alias.anchor, &n->text, &n->len) != 0) {
        return WEIR_ENOMEM;
    }
    n->type = YN_ALIAS;
    set_pos(b, n, ev, true);
    n->target = find_anchor(b, n->text, n->len);
    if (n->target == NULL) {
        /* Keep the tree whole: the alias stands for a null, and the error says why. */
        struct ynode *null = weir_arena_calloc(b->a, sizeof(*null));
        if (null == NULL) {
            return WEIR_ENOMEM;
        }
        null->type = YN_SCALAR;
        null->plain = true;
        null->text = "";
        null->line = n->line;
        null->col = n->col;
        n->target = null;
        char shown[WEIR__CFG_DESCRIBE_MAX];
        struct ynode name = {.type = YN_SCALAR, .text = n->text, .len = n->len};
        if (weir__cfgerr_add(b->errs, n->line, n->col, "",
                             "no anchor named %s is defined before this alias",
                             weir__cfg_describe(&name, shown, sizeof(shown))) != 0) {
            return WEIR_ENOMEM;
        }
    }
    attach(b, n);
    return 0;
}

static int on_collection_start(struct builder *b, struct fy_event *ev, enum ynode_type type)
{
    struct ynode *n = weir_arena_calloc(b->a, sizeof(*n));
    if (n == NULL) {
        return WEIR_ENOMEM;
    }
    n->type = type;
    n->text = "";
    struct fy_token *anchor = type == YN_MAP ? ev->mapping_start.anchor : ev->sequence_start.anchor;
    if (anchor != NULL && text_of(b, anchor, &n->anchor, &n->anchor_len) != 0) {
        return WEIR_ENOMEM;
    }
    set_pos(b, n, ev, false);
    attach(b, n);
    b->cur = n;
    return 0;
}

static int on_collection_end(struct builder *b)
{
    struct ynode *n = b->cur;
    if (n == NULL) {
        return WEIR_ECONFIG; /* unbalanced events: cannot happen with a working libfyaml */
    }
    b->cur = n->parent;
    /* Registered once complete, so an alias inside its own anchor finds nothing: no cycles. */
    return n->anchor != NULL ? add_anchor(b, n->anchor, n->anchor_len, n) : 0;
}

static int on_event(struct builder *b, struct fy_event *ev)
{
    switch (ev->type) {
    case FYET_STREAM_END:
        b->ended = true;
        return 0;
    case FYET_DOCUMENT_START:
        if (++b->docs == 2) {
            const struct fy_mark *m = fy_event_start_mark(ev);
            int line = m != NULL ? m->line + 1 : b->line;
            int col = m != NULL ? m->column + 1 : b->col;
            return weir__cfgerr_add(b->errs, line, col, "",
                                    "a config file holds one YAML document, found another");
        }
        return 0;
    case FYET_SCALAR:
        return b->docs == 1 ? on_scalar(b, ev) : 0;
    case FYET_ALIAS:
        return b->docs == 1 ? on_alias(b, ev) : 0;
    case FYET_SEQUENCE_START:
        return b->docs == 1 ? on_collection_start(b, ev, YN_SEQ) : 0;
    case FYET_MAPPING_START:
        return b->docs == 1 ? on_collection_start(b, ev, YN_MAP) : 0;
    case FYET_SEQUENCE_END:
    case FYET_MAPPING_END:
        return b->docs == 1 ? on_collection_end(b) : 0;
    default:
        return 0;
    }
}

static int collect_diag(struct builder *b, struct fy_diag *diag)
{
    void *it = NULL;
    struct fy_diag_error *de;
    int found = 0;
    while ((de = fy_diag_errors_iterate(diag, &it)) != NULL) {
        if (de->type < FYET_ERROR) {
            continue;
        }
        found = 1;
        if (weir__cfgerr_add(b->errs, de->line > 0 ? de->line : 1, de->column > 0 ? de->column : 1,
                             "", "YAML syntax error: %s",
                             de->msg != NULL ? de->msg : "unknown") != 0) {
            return WEIR_ENOMEM;
        }
    }
    if (!found && weir__cfgerr_add(b->errs, b->line, b->col, "", "YAML syntax error") != 0) {
        return WEIR_ENOMEM;
    }
    return WEIR_ECONFIG;
}

static void diag_sink(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    /* Collected errors never reach here; anything else libfyaml says is not for operators. */
    (void)diag;
    (void)user;
    (void)buf;
    (void)len;
}

static int run_parser(struct builder *b, struct fy_parser *p, struct fy_diag *diag)
{
    struct fy_event *ev;
    int rc = 0;
    while (rc == 0 && (ev = fy_parser_parse(p)) != NULL) {
        rc = on_event(b, ev);
        fy_parser_event_free(p, ev);
    }
    if (rc == 0 && (fy_parser_get_stream_error(p) || !b->ended)) {
        rc = collect_diag(b, diag);
    }
    return rc;
}

/* Length of the UTF-8 sequence at s (1..4) when valid, else 0; *cp gets the code point. */
static size_t utf8_seq(const unsigned char *s, size_t left, uint32_t *cp)
{
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t n = s[0] < 0x80             ? 1
               : (s[0] & 0xe0) == 0xc0 ? 2
               : (s[0] & 0xf0) == 0xe0 ? 3
               : (s[0] & 0xf8) == 0xf0 ? 4
                                       : 0;
    if (n == 0 || n > left) {
        return 0;
    }
    uint32_t c = n == 1 ? s[0] : s[0] & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return 0; /* overlong, out of range, or a surrogate */
    }
    *cp = c;
    return n;
}

/* YAML's printable set (YAML 1.2 §5.1): what may appear unescaped in a file. */
static bool printable(uint32_t c)
{
    return c == 0x9 || c == 0xa || c == 0xd || (c >= 0x20 && c <= 0x7e) || c == 0x85 ||
           (c >= 0xa0 && c <= 0xd7ff) || (c >= 0xe000 && c <= 0xfffd) ||
           (c >= 0x10000 && c <= 0x10ffff);
}

/* Whether blanks from s up to a ':' follow: "? a\t: b" crashes libfyaml 0.7.12 (fuzz_config). */
static bool tab_before_colon(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && (s[i] == '\t' || s[i] == ' ')) {
        i++;
    }
    return i < len && s[i] == ':';
}

/*
 * Refuses text that is not UTF-8 made of YAML's printable characters, before libfyaml sees it:
 * a config file never needs anything else, and libfyaml 0.7.12 loops forever on some invalid
 * bytes (a directive line holding one, found by fuzz_config). 0 or WEIR_ECONFIG/WEIR_ENOMEM.
 */
static int check_text(const char *text, size_t len, struct weir_config_errors *errs)
{
    const unsigned char *s = (const unsigned char *)text;
    int line = 1, col = 1;
    for (size_t i = 0; i < len;) {
        uint32_t c = 0;
        size_t n = utf8_seq(s + i, len - i, &c);
        if (n == 0 || !printable(c)) {
            int rc = n == 0 ? weir__cfgerr_add(errs, line, col, "",
                                               "invalid UTF-8 (byte 0x%02x); save the file as "
                                               "UTF-8",
                                               s[i])
                            : weir__cfgerr_add(errs, line, col, "",
                                               "control character U+%04X is not allowed in "
                                               "YAML; write it as an escape in a double-quoted "
                                               "string",
                                               (unsigned)c);
            return rc != 0 ? rc : WEIR_ECONFIG;
        }
        if (c == '\t' && tab_before_colon(text + i, len - i)) {
            int rc = weir__cfgerr_add(errs, line, col, "",
                                      "a tab before ':' is not supported; use spaces");
            return rc != 0 ? rc : WEIR_ECONFIG;
        }
        if (c == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
        i += n;
    }
    return 0;
}

int weir__yaml_parse(const char *text, size_t len, struct weir_arena *a,
                     struct weir_config_errors *errs, struct ynode **root)
{
    struct builder b = {.a = a, .errs = errs, .line = 1, .col = 1};
    struct fy_diag *diag = NULL;
    struct fy_parser *p = NULL;
    int rc = WEIR_ENOMEM;

    *root = NULL;
    rc = check_text(text, len, errs);
    if (rc != 0) {
        return rc;
    }
    rc = WEIR_ENOMEM;
    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = diag_sink;
    dcfg.colorize = false;
    diag = fy_diag_create(&dcfg);
    if (diag == NULL) {
        goto out;
    }
    fy_diag_set_collect_errors(diag, true);
    struct fy_parse_cfg pcfg = {
        .flags = FYPCF_QUIET | FYPCF_COLLECT_DIAG | FYPCF_JSON_NONE,
        .diag = diag,
    };
    p = fy_parser_create(&pcfg);
    if (p == NULL || fy_parser_set_string(p, text, len) != 0) {
        goto out;
    }
    rc = run_parser(&b, p, diag);
    if (rc == 0) {
        *root = b.root;
    }
out:
    if (p != NULL) {
        fy_parser_destroy(p);
    }
    if (diag != NULL) {
        fy_diag_destroy(diag);
    }
    return rc;
}
