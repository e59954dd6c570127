/*
 * Tests for the loader's key tables (config_keys.c): every row is well formed (its field's size
 * fits its type, its default is within its bounds, names are unique in a table), and the keys
 * the tables hold are exactly the keys docs/CONFIG.md documents.
 *
 * How CONFIG.md documents a key: a heading names a section with backticked dotted paths
 * (## `server`, ### `routes[].match`, several paths when sections share keys), which documents
 * the section itself; under it, a table whose first header cell is "Key" lists the section's
 * keys, one `name` per row. Items of a sequence and of a mapping of names are written
 * "routes[]" and "upstreams.*" in headings, and a top-level heading (## `listeners`) may leave
 * the "[]" out; so paths are compared without "[]" and ".*".
 *
 * Runs in tests/unit/config; CONFIG.md is ../../../docs/CONFIG.md from there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config_int.h"
#include "weir/config.h"

#define CONFIG_MD    "../../../docs/CONFIG.md"
#define MAX_PATHS    512
#define PATH_MAX_LEN 160

struct paths {
    char v[MAX_PATHS][PATH_MAX_LEN];
    char shown[MAX_PATHS][PATH_MAX_LEN]; /* as written, for messages */
    int line[MAX_PATHS];                 /* CONFIG.md line, 0 for the loader's */
    size_t n;
};

/* "upstreams.*.backends[].weight" -> "upstreams.backends.weight" */
static void normalize(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; in[i] != '\0' && o + 1 < size; i++) {
        if (in[i] == '[' && in[i + 1] == ']') {
            i++;
        } else if (in[i] == '.' && in[i + 1] == '*') {
            i++;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
}

static bool has(const struct paths *p, const char *norm)
{
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->v[i], norm) == 0) {
            return true;
        }
    }
    return false;
}

static void add(struct paths *p, const char *path, int line)
{
    char norm[PATH_MAX_LEN];
    assert_true(strlen(path) < PATH_MAX_LEN);
    normalize(path, norm, sizeof(norm));
    if (has(p, norm)) {
        return; /* a key documented twice (a row and a heading) counts once */
    }
    assert_true(p->n < MAX_PATHS);
    (void)snprintf(p->v[p->n], PATH_MAX_LEN, "%s", norm);
    (void)snprintf(p->shown[p->n], PATH_MAX_LEN, "%s", path);
    p->line[p->n] = line;
    p->n++;
}

static void on_key(const char *path, const struct weir__cfg_key *key, void *arg)
{
    (void)key;
    add(arg, path, 0);
}

/* --- CONFIG.md ------------------------------------------------------------------------ */

struct doc {
    struct paths *keys;
    char prefix[8][PATH_MAX_LEN]; /* the current heading's paths */
    size_t nprefix;
    bool in_key_table; /* between a "| Key |" header and the table's end */
    int table_line;
    int line;
};

/* The backticked spans of s, each a path (letters, digits, _ . [ ] *), into the prefixes. */
static void heading(struct doc *d, const char *s)
{
    d->nprefix = 0;
    for (const char *p = strchr(s, '`'); p != NULL; p = strchr(p + 1, '`')) {
        const char *end = strchr(p + 1, '`');
        if (end == NULL) {
            break;
        }
        size_t len = (size_t)(end - p - 1);
        bool path = len > 0 && strspn(p + 1, "abcdefghijklmnopqrstuvwxyz0123456789_.[]*") == len;
        if (path) {
            assert_true(d->nprefix < 8 && len < PATH_MAX_LEN);
            memcpy(d->prefix[d->nprefix], p + 1, len);
            d->prefix[d->nprefix][len] = '\0';
            add(d->keys, d->prefix[d->nprefix], d->line);
            d->nprefix++;
        }
        p = end;
    }
}

/* The first cell of a table row, trimmed, into buf. */
static void first_cell(const char *s, char *buf, size_t size)
{
    const char *p = s + 1;
    while (*p == ' ') {
        p++;
    }
    size_t len = strcspn(p, "|");
    while (len > 0 && p[len - 1] == ' ') {
        len--;
    }
    if (len >= size) {
        len = size - 1;
    }
    memcpy(buf, p, len);
    buf[len] = '\0';
}

static void table_row(struct doc *d, const char *s)
{
    char cell[PATH_MAX_LEN];
    first_cell(s, cell, sizeof(cell));
    if (!d->in_key_table) {
        d->in_key_table = strcmp(cell, "Key") == 0;
        d->table_line = d->line;
        if (d->in_key_table && d->nprefix == 0) {
            print_error("CONFIG.md:%d: a key table under a heading that names no `section`\n",
                        d->line);
            fail();
        }
        return;
    }
    if (strspn(cell, "-:") == strlen(cell)) {
        return; /* the |---|---| line */
    }
    size_t len = strlen(cell);
    bool name = len > 2 && cell[0] == '`' && cell[len - 1] == '`' &&
                strspn(cell + 1, "abcdefghijklmnopqrstuvwxyz0123456789_") == len - 2;
    if (!name) {
        print_error("CONFIG.md:%d: a key table row must start with one `key_name`, got %s\n",
                    d->line, cell);
        fail();
    }
    cell[len - 1] = '\0';
    for (size_t i = 0; i < d->nprefix; i++) {
        char path[2 * PATH_MAX_LEN + 2];
        int n = snprintf(path, sizeof(path), "%s.%s", d->prefix[i], cell + 1);
        assert_true(n > 0 && n < PATH_MAX_LEN);
        add(d->keys, path, d->line);
    }
}

static void read_doc(const char *file, struct paths *keys)
{
    FILE *f = fopen(file, "r");
    if (f == NULL) {
        print_error("cannot open %s (the test runs in tests/unit/config)\n", file);
        fail();
    }
    struct doc d = {.keys = keys};
    char s[4096];
    bool fence = false;
    while (fgets(s, sizeof(s), f) != NULL) {
        d.line++;
        s[strcspn(s, "\n")] = '\0';
        if (strncmp(s, "```", 3) == 0) {
            fence = !fence;
            continue;
        }
        if (fence) {
            continue; /* examples document nothing: a YAML comment line starts with # too */
        }
        if (s[0] == '#') {
            d.in_key_table = false;
            heading(&d, s);
        } else if (s[0] == '|') {
            table_row(&d, s);
        } else {
            d.in_key_table = false;
        }
    }
    assert_int_equal(fclose(f), 0);
    assert_false(fence);
}

/* Every key in a and not in b, one per line; the count. */
static size_t report_missing(const struct paths *a, const struct paths *b, const char *what)
{
    size_t missing = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (!has(b, a->v[i])) {
            if (a->line[i] > 0) {
                print_error("CONFIG.md:%d: %s: %s\n", a->line[i], a->shown[i], what);
            } else {
                print_error("%s: %s\n", a->shown[i], what);
            }
            missing++;
        }
    }
    return missing;
}

static void test_docs_match_tables(void **state)
{
    (void)state;
    static struct paths loader, docs;
    loader.n = docs.n = 0;
    weir__config_keys_foreach(on_key, &loader);
    read_doc(CONFIG_MD, &docs);
    assert_true(loader.n > 50); /* the walk found the tables */
    size_t bad = report_missing(&loader, &docs, "the loader knows it, docs/CONFIG.md does not");
    bad += report_missing(&docs, &loader, "documented, but no key table has it");
    assert_int_equal(bad, 0);
}

/* --- the rows themselves -------------------------------------------------------------- */

static size_t type_size(const struct weir__cfg_key *k)
{
    switch (k->type) {
    case WEIR__CFG_T_BOOL:
        return sizeof(bool);
    case WEIR__CFG_T_U32:
    case WEIR__CFG_T_SIZE32:
    case WEIR__CFG_T_DURATION:
    case WEIR__CFG_T_PERCENT:
        return sizeof(uint32_t);
    case WEIR__CFG_T_SIZE:
        return sizeof(uint64_t);
    case WEIR__CFG_T_STRING:
    case WEIR__CFG_T_KEYWORD:
        return sizeof(const char *);
    case WEIR__CFG_T_ENUM:
        return k->size == sizeof(bool) && k->nnames == 2 ? sizeof(bool) : sizeof(int);
    case WEIR__CFG_T_SECTION:
    case WEIR__CFG_T_CUSTOM:
        return k->size;
    }
    return 0;
}

static void check_row(const char *path, const struct weir__cfg_key *k, void *arg)
{
    size_t *rows = arg;
    (*rows)++;
    if (k->size != type_size(k)) {
        print_error("%s: the field's size (%zu) does not fit the row's type\n", path, k->size);
        fail();
    }
    bool numeric = k->type == WEIR__CFG_T_U32 || k->type == WEIR__CFG_T_SIZE ||
                   k->type == WEIR__CFG_T_SIZE32 || k->type == WEIR__CFG_T_DURATION ||
                   k->type == WEIR__CFG_T_PERCENT;
    if (numeric && (k->min > k->max || k->def < k->min || k->def > k->max)) {
        print_error("%s: default %llu outside %llu..%llu\n", path, (unsigned long long)k->def,
                    (unsigned long long)k->min, (unsigned long long)k->max);
        fail();
    }
    if (numeric && k->type != WEIR__CFG_T_SIZE && k->max > UINT32_MAX) {
        print_error("%s: a 32-bit field with a bound past UINT32_MAX\n", path);
        fail();
    }
    if ((k->type == WEIR__CFG_T_ENUM || k->type == WEIR__CFG_T_KEYWORD) &&
        (k->nnames == 0 || k->def >= k->nnames)) {
        print_error("%s: default index %llu of %zu names\n", path, (unsigned long long)k->def,
                    k->nnames);
        fail();
    }
    if (k->type == WEIR__CFG_T_STRING && k->what == NULL) {
        print_error("%s: a string row says what it expects\n", path);
        fail();
    }
    if (k->type == WEIR__CFG_T_SECTION && k->sub == NULL) {
        print_error("%s: a section row without its table\n", path);
        fail();
    }
    if ((k->flags & (WEIR__CFG_SEQ | WEIR__CFG_NAMED)) && k->sub == NULL) {
        print_error("%s: items without a table for them\n", path);
        fail();
    }
}

static void test_rows_well_formed(void **state)
{
    (void)state;
    size_t rows = 0;
    weir__config_keys_foreach(check_row, &rows);
    assert_true(rows > 50);
}

/* Names in one table are unique, and the table fits the walker. */
static void check_table(const struct weir__cfg_section *sec)
{
    assert_true(sec->nkeys > 0 && sec->nkeys <= WEIR__CFG_MAX_KEYS);
    assert_non_null(sec->what);
    for (size_t i = 0; i < sec->nkeys; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(sec->keys[i].name, sec->keys[j].name) == 0) {
                print_error("key '%s' twice in the table of %s\n", sec->keys[i].name, sec->what);
                fail();
            }
        }
        if (sec->keys[i].sub != NULL) {
            check_table(sec->keys[i].sub);
        }
    }
}

static void test_tables_unique_names(void **state)
{
    (void)state;
    check_table(&weir__cfg_root);
}

/* Paths as the key list gives them. */
struct find {
    const char *path;
    bool found;
};

static void on_find(const char *path, const struct weir__cfg_key *key, void *arg)
{
    struct find *f = arg;
    (void)key;
    f->found = f->found || strcmp(path, f->path) == 0;
}

static void test_key_paths(void **state)
{
    (void)state;
    static const char *const want[] = {
        "server",
        "server.threads",
        "server.limits.max_headers",
        "server.resolver.servers",
        "listeners",
        "listeners[].address",
        "routes[].match.host",
        "routes[].request_headers.add",
        "upstreams.*.balance",
        "upstreams.*.health_check.interval",
        "upstreams.*.backends[].weight",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        struct find f = {.path = want[i]};
        weir__config_keys_foreach(on_find, &f);
        if (!f.found) {
            print_error("the key list lacks %s\n", want[i]);
            fail();
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docs_match_tables),
        cmocka_unit_test(test_rows_well_formed),
        cmocka_unit_test(test_tables_unique_names),
        cmocka_unit_test(test_key_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
