/* Streaming base64 (b64.h). */
#include "core/b64.h"

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void encode3(const unsigned char t[3], char *out)
{
    out[0] = B64[t[0] >> 2];
    out[1] = B64[(t[0] & 3) << 4 | t[1] >> 4];
    out[2] = B64[(t[1] & 15) << 2 | t[2] >> 6];
    out[3] = B64[t[2] & 63];
}

size_t weir__b64_encode(struct weir__b64 *st, const char *in, size_t n, bool end, char *out)
{
    size_t o = 0, i = 0;
    while (st->n + (n - i) >= 3) {
        while (st->n < 3) {
            st->carry[st->n++] = (unsigned char)in[i++];
        }
        encode3(st->carry, out + o);
        o += 4;
        st->n = 0;
    }
    while (i < n) {
        st->carry[st->n++] = (unsigned char)in[i++];
    }
    if (end && st->n > 0) {
        unsigned char t[3] = {st->carry[0], st->n > 1 ? st->carry[1] : 0, 0};
        encode3(t, out + o);
        out[o + 3] = '=';
        if (st->n == 1) {
            out[o + 2] = '=';
        }
        o += 4;
        st->n = 0;
    }
    return o;
}

static int value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    return c == '+' ? 62 : c == '/' ? 63 : c == '=' ? 64 : -1;
}

/* One group ("xx==", "xxx=" or "xxxx") into out: bytes written, or -1. */
static int decode4(const unsigned char q[4], char *out)
{
    int a = value(q[0]), b = value(q[1]), c = value(q[2]), d = value(q[3]);
    if (a < 0 || b < 0 || c < 0 || d < 0 || a == 64 || b == 64 || (c == 64 && d != 64)) {
        return -1;
    }
    uint32_t bits = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)(c & 63) << 6 |
                    (uint32_t)(d & 63); /* '=' is 64: no bits */
    out[0] = (char)(bits >> 16);
    if (c == 64) {
        return 1;
    }
    out[1] = (char)(bits >> 8 & 0xff);
    if (d == 64) {
        return 2;
    }
    out[2] = (char)(bits & 0xff);
    return 3;
}

ptrdiff_t weir__b64_decode(struct weir__b64 *st, const char *in, size_t n, bool end, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        st->carry[st->n++] = (unsigned char)in[i];
        if (st->n == 4) {
            int k = decode4(st->carry, out + o);
            if (k < 0) {
                return -1;
            }
            o += (size_t)k;
            st->n = 0;
        }
    }
    if (end && st->n != 0) {
        return -1;
    }
    return (ptrdiff_t)o;
}
