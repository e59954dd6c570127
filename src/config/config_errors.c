/*
 * The loader's error list and the helpers that make its messages useful to an operator:
 * "file:line:col: error: key: message" lines, did-you-mean by edit distance, and values quoted
 * so that a stray control byte in a config cannot garble a terminal.
 */
#include <stdio.h>
#include <string.h>

#include "config/config_int.h"
#include "core/alloc.h"
#include "weir/error.h"

struct weir_config_errors {
    struct weir_arena *arena; /* file name, keys, messages */
    struct weir_config_error *v;
    size_t n;
    size_t cap;
    const char *file;
    bool full; /* WEIR__CFG_MAX_ERRORS reached and said so */
};

struct weir_config_errors *weir__cfgerr_new(const char *file)
{
    struct weir_config_errors *e = weir__calloc(1, sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    if (weir_arena_new(4096, SIZE_MAX, &e->arena) != 0) {
        goto fail;
    }
    e->file = weir_arena_strndup(e->arena, file, strlen(file));
    if (e->file == NULL) {
        goto fail;
    }
    return e;
fail:
    weir_config_errors_free(e);
    return NULL;
}

void weir_config_errors_free(struct weir_config_errors *errs)
{
    if (errs == NULL) {
        return;
    }
    weir_arena_free(errs->arena);
    weir__free(errs->v);
    weir__free(errs);
}

size_t weir_config_errors_count(const struct weir_config_errors *errs)
{
    return errs != NULL ? errs->n : 0;
}

const struct weir_config_error *weir_config_errors_at(const struct weir_config_errors *errs,
                                                      size_t i)
{
    return errs != NULL && i < errs->n ? &errs->v[i] : NULL;
}

__attribute__((format(printf, 2, 0))) static char *vformat(struct weir_arena *a, const char *fmt,
                                                           va_list ap)
{
    char small[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        return NULL;
    }
    char *s = weir_arena_alloc(a, (size_t)n + 1);
    if (s == NULL) {
        return NULL;
    }
    if ((size_t)n < sizeof(small)) {
        memcpy(s, small, (size_t)n + 1);
    } else {
        (void)vsnprintf(s, (size_t)n + 1, fmt, ap);
    }
    return s;
}

static int push(struct weir_config_errors *errs, int line, int col, const char *key,
                const char *msg)
{
    if (errs->n == errs->cap) {
        size_t cap = errs->cap ? errs->cap * 2 : 8;
        struct weir_config_error *v = weir__reallocarray(errs->v, cap, sizeof(*v));
        if (v == NULL) {
            return WEIR_ENOMEM;
        }
        errs->v = v;
        errs->cap = cap;
    }
    char *k = weir_arena_strndup(errs->arena, key, strlen(key));
    if (k == NULL) {
        return WEIR_ENOMEM;
    }
    errs->v[errs->n++] = (struct weir_config_error){
        .file = errs->file, .line = line, .col = col, .key = k, .message = msg};
    return 0;
}

int weir__cfgerr_vadd(struct weir_config_errors *errs, int line, int col, const char *key,
                      const char *fmt, va_list ap)
{
    if (errs->full) {
        return 0;
    }
    if (errs->n == WEIR__CFG_MAX_ERRORS) {
        errs->full = true;
        return push(errs, line, col, "", "too many errors; stopped reporting here");
    }
    char *msg = vformat(errs->arena, fmt, ap);
    if (msg == NULL) {
        return WEIR_ENOMEM;
    }
    return push(errs, line, col, key, msg);
}

int weir__cfgerr_add(struct weir_config_errors *errs, int line, int col, const char *key,
                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = weir__cfgerr_vadd(errs, line, col, key, fmt, ap);
    va_end(ap);
    return rc;
}

static bool before(const struct weir_config_error *a, const struct weir_config_error *b)
{
    return a->line < b->line || (a->line == b->line && a->col < b->col);
}

void weir__cfgerr_sort(struct weir_config_errors *errs)
{
    /* Insertion sort: stable, and n is at most WEIR__CFG_MAX_ERRORS. The "too many errors"
     * line stays last. */
    size_t n = errs->full ? errs->n - 1 : errs->n;
    for (size_t i = 1; i < n; i++) {
        struct weir_config_error e = errs->v[i];
        size_t j = i;
        while (j > 0 && before(&e, &errs->v[j - 1])) {
            errs->v[j] = errs->v[j - 1];
            j--;
        }
        errs->v[j] = e;
    }
}

void weir_config_errors_print(const struct weir_config_errors *errs, FILE *to)
{
    for (size_t i = 0; i < weir_config_errors_count(errs); i++) {
        const struct weir_config_error *e = &errs->v[i];
        const char *sep = e->key[0] != '\0' ? ": " : "";
        if (e->line > 0) {
            (void)fprintf(to, "%s:%d:%d: error: %s%s%s\n", e->file, e->line, e->col, e->key, sep,
                          e->message);
        } else {
            (void)fprintf(to, "%s: error: %s%s%s\n", e->file, e->key, sep, e->message);
        }
    }
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

#define DIST_MAX 64 /* longer strings are never suggested: nobody typos a 65-byte key */

size_t weir__cfg_edit_distance(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen > DIST_MAX || blen > DIST_MAX) {
        return SIZE_MAX;
    }
    size_t d[DIST_MAX + 1][DIST_MAX + 1];
    for (size_t i = 0; i <= alen; i++) {
        d[i][0] = i;
    }
    for (size_t j = 0; j <= blen; j++) {
        d[0][j] = j;
    }
    for (size_t i = 1; i <= alen; i++) {
        for (size_t j = 1; j <= blen; j++) {
            size_t cost = lower((unsigned char)a[i - 1]) != lower((unsigned char)b[j - 1]);
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) {
                best = d[i][j - 1] + 1;
            }
            if (d[i - 1][j - 1] + cost < best) {
                best = d[i - 1][j - 1] + cost;
            }
            if (i > 1 && j > 1 &&
                lower((unsigned char)a[i - 1]) == lower((unsigned char)b[j - 2]) &&
                lower((unsigned char)a[i - 2]) == lower((unsigned char)b[j - 1]) &&
                d[i - 2][j - 2] + 1 < best) {
                best = d[i - 2][j - 2] + 1; /* transposition */
            }
            d[i][j] = best;
        }
    }
    return d[alen][blen];
}

bool weir__cfg_is_close(size_t d, size_t typed_len, size_t cand_len)
{
    /* Within 2 edits, or a third of the candidate for long keys; but never a suggestion that
     * rewrites as much as was typed ('x' is not a typo of 'via'). */
    return (d <= 2 || d * 3 <= cand_len) && d < typed_len;
}

long weir__cfg_suggest(const char *typed, size_t len, const char *const *cands, size_t n)
{
    long best = -1;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t clen = strlen(cands[i]);
        size_t d = weir__cfg_edit_distance(typed, len, cands[i], clen);
        if (d < best_d && weir__cfg_is_close(d, len, clen)) {
            best = (long)i;
            best_d = d;
        }
    }
    return best;
}

#define SHOW_MAX 60 /* bytes of a value quoted in a message */

const char *weir__cfg_describe(const struct ynode *n, char *buf, size_t size)
{
    if (size < 16) { /* callers pass WEIR__CFG_DESCRIBE_MAX; this only guards misuse */
        if (size > 0) {
            buf[0] = '\0';
        }
        return buf;
    }
    n = weir__ynode_deref(n);
    if (weir__ynode_is_null(n)) {
        (void)snprintf(buf, size, "nothing");
        return buf;
    }
    if (n->type != YN_SCALAR) {
        (void)snprintf(buf, size, "%s", n->type == YN_MAP ? "a mapping" : "a sequence");
        return buf;
    }
    size_t o = 0;
    buf[o++] = '\'';
    for (size_t i = 0; i < n->len; i++) {
        unsigned char c = (unsigned char)n->text[i];
        if (i == SHOW_MAX || o + 9 > size) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '\'';
    buf[o] = '\0';
    return buf;
}
