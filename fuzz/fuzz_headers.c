/*
 * libFuzzer target for the header map and the RFC 9110 character helpers in src/http/headers.c.
 * The input is a program: each operation takes an opcode byte and length-prefixed operands
 * from the input, and runs against the real map (in an arena) and against a plain model kept
 * here, written independently of the code under test. After every operation the map must equal
 * the model: same fields, same order, same bytes, count within its bound; a get must return
 * the first field of that name; an edit refused as invalid must leave the map untouched.
 * weir__http_next_token, weir__http_is_token and weir__http_is_field_value are checked against
 * reference versions on the operands too, and so are weir_cookie_find and weir_query_arg_find
 * (the cookie and query-argument lookups consistent hashing uses).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/head.h"
#include "weir/error.h"
#include "weir/mem.h"

#define MODEL_MAX 64
#define OPND_MAX  48

struct field {
    char name[OPND_MAX];
    size_t nlen;
    char value[OPND_MAX];
    size_t vlen;
};

struct model {
    struct field f[MODEL_MAX];
    size_t n;
    size_t max;
};

struct input {
    const uint8_t *p;
    size_t left;
};

static uint8_t byte(struct input *in)
{
    if (in->left == 0) {
        return 0;
    }
    in->left--;
    return *in->p++;
}

/* An operand: a length byte then that many bytes (clipped to what is left and OPND_MAX). */
static struct weir_iov operand(struct input *in, char *store)
{
    size_t n = byte(in) % OPND_MAX;
    if (n > in->left) {
        n = in->left;
    }
    memcpy(store, in->p, n);
    in->p += n;
    in->left -= n;
    return (struct weir_iov){store, n};
}

static void trap_if(bool cond)
{
    if (cond) {
        __builtin_trap();
    }
}

/* Reference versions of the RFC 9110 classes. */
static bool ref_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool ref_is_token(struct weir_iov v)
{
    for (size_t i = 0; i < v.len; i++) {
        if (!ref_tchar((unsigned char)v.base[i])) {
            return false;
        }
    }
    return v.len > 0;
}

static bool ref_is_value(struct weir_iov v)
{
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.base[i];
        if (!(c == '\t' || (c >= 0x20 && c != 0x7f))) {
            return false;
        }
    }
    return true;
}

static bool lower_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z') {
            x = (unsigned char)(x + 32);
        }
        if (y >= 'A' && y <= 'Z') {
            y = (unsigned char)(y + 32);
        }
        if (x != y) {
            return false;
        }
    }
    return true;
}

static bool name_is(const struct field *f, struct weir_iov name)
{
    return f->nlen == name.len && lower_eq(f->name, name.base, name.len);
}

/* The list elements a comma-separated list holds: split on ',', trim SP/HTAB, drop empties. */
static void check_tokens(struct weir_iov list)
{
    size_t pos = 0, start = 0, calls = 0;
    struct weir_iov tok;
    for (size_t i = 0; i <= list.len; i++) {
        if (i < list.len && list.base[i] != ',') {
            continue;
        }
        size_t s = start, e = i;
        while (s < e && (list.base[s] == ' ' || list.base[s] == '\t')) {
            s++;
        }
        while (e > s && (list.base[e - 1] == ' ' || list.base[e - 1] == '\t')) {
            e--;
        }
        start = i + 1;
        if (s == e) {
            continue;
        }
        size_t before = pos;
        trap_if(!weir__http_next_token(list, &pos, &tok));
        trap_if(tok.base != list.base + s || tok.len != e - s || pos <= before || pos > list.len);
        calls++;
    }
    trap_if(weir__http_next_token(list, &pos, &tok));
    trap_if(pos != list.len);
    trap_if(weir__http_next_token(list, &pos, &tok)); /* stays finished */
    (void)calls;
}

/* Reference lookups: split on the separator, then look at each piece on its own. */
static bool ref_lookup(struct weir_iov text, struct weir_iov name, char sep, bool cookie,
                       struct weir_iov *out)
{
    size_t start = 0;
    while (start <= text.len) {
        size_t end = start;
        while (end < text.len && text.base[end] != sep) {
            end++;
        }
        const char *p = text.base + start;
        size_t n = end - start;
        while (cookie && n > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        bool same =
            n > name.len && name.len > 0 && p[name.len] == '=' &&
            (cookie ? memcmp(p, name.base, name.len) == 0 : lower_eq(p, name.base, name.len));
        if (same) {
            size_t vlen = n - name.len - 1;
            while (cookie && vlen > 0 &&
                   (p[name.len + vlen] == ' ' || p[name.len + vlen] == '\t')) {
                vlen--;
            }
            *out = (struct weir_iov){p + name.len + 1, vlen};
            return true;
        }
        start = end + 1;
    }
    return false;
}

static void check_lookups(struct weir_iov text, struct weir_iov name)
{
    struct weir_iov got = {NULL, 0}, want = {NULL, 0};
    bool g = weir_cookie_find(text, name, &got);
    bool w = ref_lookup(text, name, ';', true, &want);
    trap_if(g != w || (g && (got.base != want.base || got.len != want.len)));
    trap_if(g && (got.base < text.base || got.base + got.len > text.base + text.len));
    g = weir_query_arg_find(text, name, &got);
    w = ref_lookup(text, name, '&', false, &want);
    trap_if(g != w || (g && (got.base != want.base || got.len != want.len)));
}

static void check_same(const struct weir_headers *h, const struct model *m)
{
    trap_if(weir_headers_count(h) != m->n || m->n > m->max);
    for (size_t i = 0; i < m->n; i++) {
        const struct weir_header *f = weir_headers_at(h, i);
        trap_if(f == NULL);
        trap_if(f->name.len != m->f[i].nlen || memcmp(f->name.base, m->f[i].name, f->name.len));
        trap_if(f->value.len != m->f[i].vlen ||
                (f->value.len && memcmp(f->value.base, m->f[i].value, f->value.len)));
    }
    trap_if(weir_headers_at(h, m->n) != NULL);
}

static void model_append(struct model *m, struct weir_iov name, struct weir_iov value)
{
    struct field *f = &m->f[m->n++];
    memcpy(f->name, name.base, name.len);
    f->nlen = name.len;
    memcpy(f->value, value.base, value.len);
    f->vlen = value.len;
}

static void model_remove(struct model *m, struct weir_iov name, size_t from)
{
    size_t w = from;
    for (size_t r = from; r < m->n; r++) {
        if (!name_is(&m->f[r], name)) {
            m->f[w++] = m->f[r];
        }
    }
    m->n = w;
}

static void op_add(struct weir_headers *h, struct model *m, struct weir_iov name,
                   struct weir_iov value)
{
    int rc = weir_headers_add_iov(h, name, value);
    if (!ref_is_token(name) || !ref_is_value(value)) {
        trap_if(rc != WEIR_EINVAL);
    } else if (m->n == m->max) {
        trap_if(rc != WEIR_ELIMIT);
    } else {
        trap_if(rc != 0);
        model_append(m, name, value);
    }
}

static void op_set(struct weir_headers *h, struct model *m, struct weir_iov name,
                   struct weir_iov value)
{
    int rc = weir_headers_set_iov(h, name, value);
    size_t first = m->n;
    for (size_t i = 0; i < m->n; i++) {
        if (name_is(&m->f[i], name)) {
            first = i;
            break;
        }
    }
    if (!ref_is_token(name) || !ref_is_value(value)) {
        trap_if(rc != WEIR_EINVAL);
        return;
    }
    if (first == m->n) {
        if (m->n == m->max) {
            trap_if(rc != WEIR_ELIMIT);
            return;
        }
        trap_if(rc != 0);
        model_append(m, name, value);
        return;
    }
    trap_if(rc != 0);
    struct field *f = &m->f[first];
    memcpy(f->name, name.base, name.len);
    f->nlen = name.len;
    memcpy(f->value, value.base, value.len);
    f->vlen = value.len;
    model_remove(m, name, first + 1);
    /* get after set returns the value just set */
    struct weir_iov got;
    trap_if(!weir_headers_get_iov(h, name, &got));
    trap_if(got.len != value.len || (got.len && memcmp(got.base, value.base, got.len)));
}

static void op_get(const struct weir_headers *h, const struct model *m, struct weir_iov name)
{
    struct weir_iov got = {NULL, 0};
    bool found = weir_headers_get_iov(h, name, &got);
    for (size_t i = 0; i < m->n; i++) {
        if (name_is(&m->f[i], name)) {
            trap_if(!found || got.len != m->f[i].vlen ||
                    (got.len && memcmp(got.base, m->f[i].value, got.len)));
            return;
        }
    }
    trap_if(found);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct model m;
    struct input in = {data, size};
    struct weir_arena *a = NULL;
    if (weir_arena_new(4096, (size_t)64 << 20, &a) != 0) {
        return 0;
    }
    struct weir_headers h;
    uint32_t cap = byte(&in) % 9;
    m.max = 1 + byte(&in) % MODEL_MAX;
    m.n = 0;
    if (weir__headers_init(&h, a, cap, (uint32_t)m.max) != 0) {
        goto out;
    }
    char s1[OPND_MAX], s2[OPND_MAX];
    for (unsigned ops = 0; in.left > 0 && ops < 512; ops++) {
        uint8_t op = byte(&in);
        struct weir_iov x = operand(&in, s1);
        struct weir_iov y = (op & 0x80) ? operand(&in, s2) : (struct weir_iov){s2, 0};
        if (op & 0x40 && m.n > 0 && x.len > 0) {
            /* reuse an existing name with the case of some letters flipped */
            const struct field *f = &m.f[x.base[0] % m.n];
            memcpy(s1, f->name, f->nlen);
            for (size_t i = 0; i < f->nlen; i++) {
                if (((x.base[0] >> (i % 8)) & 1) &&
                    ((s1[i] | 0x20) >= 'a' && (s1[i] | 0x20) <= 'z')) {
                    s1[i] ^= 0x20;
                }
            }
            x.len = f->nlen;
        }
        trap_if(weir__http_is_token(x) != ref_is_token(x));
        trap_if(weir__http_is_field_value(y) != ref_is_value(y));
        switch (op & 7) {
        case 0:
        case 1:
            op_add(&h, &m, x, y);
            break;
        case 2:
            op_set(&h, &m, x, y);
            break;
        case 3: {
            size_t before = m.n;
            model_remove(&m, x, 0);
            trap_if(weir_headers_remove_iov(&h, x) != before - m.n);
            break;
        }
        case 4:
            op_get(&h, &m, x);
            break;
        case 5: {
            size_t i = x.len ? (unsigned char)x.base[0] : 0;
            weir__headers_remove_at(&h, i);
            if (i < m.n) {
                memmove(&m.f[i], &m.f[i + 1], (m.n - i - 1) * sizeof(m.f[0]));
                m.n--;
            }
            break;
        }
        case 6:
            check_tokens(x);
            check_tokens(y);
            check_lookups(y, x);
            break;
        default: {
            /* adopt the current fields in reverse: a parsed head replacing the map */
            struct weir_header tmp[MODEL_MAX];
            size_t n = m.n;
            for (size_t i = 0; i < n; i++) {
                tmp[i] = *weir_headers_at(&h, n - 1 - i);
            }
            trap_if(weir__headers_adopt(&h, tmp, n) != 0);
            for (size_t i = 0; i < n / 2; i++) {
                struct field t = m.f[i];
                m.f[i] = m.f[n - 1 - i];
                m.f[n - 1 - i] = t;
            }
            break;
        }
        }
        check_same(&h, &m);
    }
out:
    weir_arena_free(a);
    return 0;
}
