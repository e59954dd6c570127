/*
 * libFuzzer target for the streaming base64 codec (core/b64.h, gRPC-Web's -text bodies), with
 * differential checks:
 *  - the input encoded in pieces of input-derived sizes equals OpenSSL's encoding of it whole,
 *    and decoding that in other pieces gives the input back;
 *  - the input decoded as base64 text in pieces gives the same verdict and bytes as decoded
 *    whole, and never writes past the room the codec asks for.
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/b64.h"

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Encodes (enc) or decodes in, fed in pieces of 1..max bytes (max 0: whole); -1: refused. */
static ptrdiff_t run(bool enc, const uint8_t *in, size_t len, uint64_t seed, unsigned max,
                     char *out)
{
    struct weir__b64 st = {{0}, 0};
    size_t fed = 0, o = 0;
    do {
        size_t n = len - fed;
        if (max > 0 && n > 0) {
            size_t k = 1 + (size_t)(next(&seed) % max);
            n = k < n ? k : n;
        }
        bool end = fed + n == len;
        size_t room = enc ? weir__b64_encode_room(&st, n) : weir__b64_decode_room(&st, n);
        char *piece = malloc(room + 1); /* exactly the room: ASan sees any write past it */
        if (piece == NULL) {
            abort();
        }
        ptrdiff_t w = enc ? (ptrdiff_t)weir__b64_encode(&st, (const char *)in + fed, n, end, piece)
                          : weir__b64_decode(&st, (const char *)in + fed, n, end, piece);
        if (w < 0) {
            free(piece);
            return -1;
        }
        if ((size_t)w > room) {
            __builtin_trap();
        }
        memcpy(out + o, piece, (size_t)w);
        free(piece);
        o += (size_t)w;
        fed += n;
    } while (fed < len);
    return (ptrdiff_t)o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16) {
        return 0;
    }
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ size;
    for (size_t i = 0; i < size && i < 8; i++) {
        seed = seed * 31 + data[i];
    }
    seed |= 1;
    char *a = malloc(size / 3 * 4 + 8), *b = malloc(size / 3 * 4 + 8);
    char *c = malloc(size + 8), *d = malloc(size + 8);
    if (a == NULL || b == NULL || c == NULL || d == NULL) {
        abort();
    }
    /* encode in pieces == OpenSSL's whole; decode it back in pieces == the input */
    ptrdiff_t na = run(true, data, size, seed, 7, a);
    int nb = EVP_EncodeBlock((unsigned char *)b, data, (int)size);
    if (na != nb || memcmp(a, b, (size_t)na) != 0) {
        __builtin_trap();
    }
    ptrdiff_t nc = run(false, (const uint8_t *)a, (size_t)na, seed + 1, 11, c);
    if (nc != (ptrdiff_t)size || memcmp(c, data, size) != 0) {
        __builtin_trap();
    }
    /* the input as text: pieces and whole agree */
    ptrdiff_t whole = run(false, data, size, seed, 0, c);
    ptrdiff_t parts = run(false, data, size, seed + 2, 5, d);
    if (whole != parts || (whole > 0 && memcmp(c, d, (size_t)whole) != 0)) {
        __builtin_trap();
    }
    free(a);
    free(b);
    free(c);
    free(d);
    return 0;
}
